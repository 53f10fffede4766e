//! The objects the module hands to IIS — the factory and one `CHttpModule`
//! per request — with their vtables, and `RegisterModule`.
//!
//! Every function IIS calls here catches panics: nothing unwinds into IIS.

use std::ffi::c_void;
use std::sync::{Arc, OnceLock};

use host_iis::guarded;
use host_iis::Lifecycle;

use super::context::Shared;
use super::*;

/// The module's factory (`IHttpModuleFactory`), alive from `RegisterModule`
/// to its `Terminate`.
#[repr(C)]
pub struct Factory {
    vtbl: &'static VTable<FACTORY_SLOTS>,
    ext: &'static Lifecycle,
}

/// One request's module object (`CHttpModule`).
#[repr(C)]
struct Module {
    vtbl: &'static VTable<MODULE_SLOTS>,
    ext: &'static Lifecycle,
    /// Set once the request started on the runtime.
    request: OnceLock<Arc<Shared>>,
}

member_defs! {
    /// Every notification the module does not handle.
    unsafe fn on_other_notification(_this: *mut Module, _ctx: *mut Object, _provider: *mut Object) -> i32 {
        RQ_NOTIFICATION_CONTINUE
    }

    unsafe fn on_execute_request_handler(this: *mut Module, ctx: *mut Object, _provider: *mut Object) -> i32 {
        guarded("OnExecuteRequestHandler", RQ_NOTIFICATION_FINISH_REQUEST, || {
            // SAFETY: IIS passes the module object it got from the factory.
            let module = unsafe { &*this };
            // SAFETY: the context IIS passes for this notification.
            match unsafe { Shared::new(ctx) } {
                Some(shared) => crate::session::execute(module.ext, shared, |shared| {
                    let _ = module.request.set(shared);
                }),
                None => RQ_NOTIFICATION_FINISH_REQUEST,
            }
        })
    }

    unsafe fn on_async_completion(
        this: *mut Module,
        _ctx: *mut Object,
        _notification: DWORD,
        _post: BOOL,
        _provider: *mut Object,
        info: *mut Object,
    ) -> i32 {
        guarded("OnAsyncCompletion", RQ_NOTIFICATION_FINISH_REQUEST, || {
            // SAFETY: the module object IIS got from the factory.
            let module = unsafe { &*this };
            let Some(shared) = module.request.get() else {
                tracing::error!("a completion for a request that never started");
                return RQ_NOTIFICATION_FINISH_REQUEST;
            };
            let (bytes, status) = if info.is_null() {
                (0, S_OK)
            } else {
                // SAFETY: the completion information IIS passes with the
                // notification; both slots take no argument.
                unsafe {
                    (
                        vcall!(info, COMPLETION_GET_BYTES, fn() -> DWORD;),
                        vcall!(info, COMPLETION_GET_STATUS, fn() -> HRESULT;),
                    )
                }
            };
            shared.on_completion(bytes, status)
        })
    }

    unsafe fn dispose(this: *mut Module) {
        guarded("Dispose", (), || {
            // SAFETY: the object `get_http_module` boxed; IIS disposes it
            // once, at the end of the request.
            drop(unsafe { Box::from_raw(this) });
        })
    }

    unsafe fn destructor(this: *mut Module, flags: u32) -> *mut c_void {
        guarded("~CHttpModule", this.cast(), || {
            if flags & 1 != 0 {
                // SAFETY: a scalar deleting destructor with "free": the
                // object is the box `get_http_module` made.
                drop(unsafe { Box::from_raw(this) });
            } else {
                // SAFETY: destroy without freeing, as the flag asks.
                unsafe { std::ptr::drop_in_place(this) };
            }
            this.cast()
        })
    }

    unsafe fn get_http_module(this: *mut Factory, out: *mut *mut Module, _allocator: *mut Object) -> HRESULT {
        guarded("GetHttpModule", E_FAIL, || {
            if out.is_null() {
                return E_INVALIDARG;
            }
            // SAFETY: the factory `register` leaked.
            let factory = unsafe { &*this };
            let module = Box::new(Module {
                vtbl: &MODULE_VTABLE,
                ext: factory.ext,
                request: OnceLock::new(),
            });
            // SAFETY: IIS passes where to put the new module.
            unsafe { *out = Box::into_raw(module) };
            S_OK
        })
    }

    unsafe fn terminate_factory(this: *mut Factory) {
        guarded("IHttpModuleFactory::Terminate", (), || {
            // SAFETY: the factory `register` leaked; IIS terminates it once.
            let factory = unsafe { Box::from_raw(this) };
            factory.ext.terminate();
        })
    }
}

/// `CHttpModule`'s table: every notification continues except the handler
/// and the completion; `Dispose` frees the request's object.
static MODULE_VTABLE: VTable<MODULE_SLOTS> = {
    let mut t = [on_other_notification as *const c_void; MODULE_SLOTS];
    t[MODULE_ON_EXECUTE_REQUEST_HANDLER.index] = on_execute_request_handler as *const c_void;
    t[MODULE_ON_ASYNC_COMPLETION.index] = on_async_completion as *const c_void;
    t[MODULE_DISPOSE.index] = dispose as *const c_void;
    t[MODULE_DESTRUCTOR.index] = destructor as *const c_void;
    VTable(t)
};

static FACTORY_VTABLE: VTable<FACTORY_SLOTS> = {
    let mut t = [std::ptr::null(); FACTORY_SLOTS];
    t[FACTORY_GET_HTTP_MODULE.index] = get_http_module as *const c_void;
    t[FACTORY_TERMINATE.index] = terminate_factory as *const c_void;
    VTable(t)
};

/// `CHttpModule`'s table, for tests that check what sits in each slot.
pub fn module_vtable() -> &'static [*const c_void; MODULE_SLOTS] {
    &MODULE_VTABLE.0
}

/// `RegisterModule`: starts the module and registers its factory for
/// `RQ_EXECUTE_REQUEST_HANDLER`. For the `export!` macro only: the pointers
/// must be what IIS passes.
#[doc(hidden)]
pub fn register(
    ext: &'static Lifecycle,
    _server_version: DWORD,
    info: *mut Object,
    _server: *mut Object,
) -> HRESULT {
    guarded("RegisterModule", E_FAIL, || {
        if info.is_null() {
            return E_INVALIDARG;
        }
        if !ext.start(host_iis::module_path()) {
            return E_FAIL;
        }
        let factory = Box::into_raw(Box::new(Factory {
            vtbl: &FACTORY_VTABLE,
            ext,
        }));
        // SAFETY: the registration object IIS passes; the factory lives
        // until IIS calls its `Terminate`.
        let hr = unsafe {
            vcall!(info, REGISTRATION_SET_REQUEST_NOTIFICATIONS, fn(*mut Factory, DWORD, DWORD) -> HRESULT;
                factory, RQ_EXECUTE_REQUEST_HANDLER, 0)
        };
        if hr < 0 {
            // IIS will not use the factory.
            // SAFETY: the box made above, never handed out.
            drop(unsafe { Box::from_raw(factory) });
            ext.terminate();
        }
        hr
    })
}
