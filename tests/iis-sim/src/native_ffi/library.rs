//! The module DLL: loading it, `RegisterModule`, its factory and the
//! notifications the simulator sends its `CHttpModule` objects.

use super::*;

/// A loaded native module: its factory, from `RegisterModule`.
pub(crate) struct ModuleLibrary {
    pub(crate) factory: *mut Object,
    pub(crate) _registration: Box<Registration>,
    pub(crate) _server: Box<Obj>,
    pub(crate) _lib: libloading::Library,
}

// SAFETY: the factory may be called from any thread (IIS does so).
unsafe impl Send for ModuleLibrary {}
// SAFETY: as above.
unsafe impl Sync for ModuleLibrary {}

/// `IHttpModuleRegistrationInfo`, with what the module registered.
#[repr(C)]
pub(crate) struct Registration {
    pub(crate) obj: Obj,
    pub(crate) factory: *mut Object,
    pub(crate) request_notifications: DWORD,
    pub(crate) post_notifications: DWORD,
}

pub(crate) type RegisterModuleFn =
    unsafe extern "system" fn(DWORD, *mut Object, *mut Object) -> HRESULT;

/// Whether the library at `path` exports `RegisterModule` (a native module
/// rather than an ISAPI extension).
pub(crate) fn is_native_module(path: &Path) -> Result<bool, String> {
    // SAFETY: loading runs the library's initialisers, as IIS's loading
    // does; the library is the one the simulator was configured with.
    let lib = unsafe { libloading::Library::new(path) }
        .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
    // SAFETY: only the symbol's presence is checked.
    let found = unsafe { lib.get::<*const c_void>(b"RegisterModule\0") }.is_ok();
    Ok(found)
}

impl ModuleLibrary {
    /// Loads the module and calls `RegisterModule` (IIS 10), which must
    /// register a factory for `RQ_EXECUTE_REQUEST_HANDLER`.
    pub(crate) fn load(path: &Path, sim_handle: usize) -> Result<ModuleLibrary, String> {
        // SAFETY: as in `is_native_module`.
        let lib = unsafe { libloading::Library::new(path) }
            .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
        // SAFETY: `RegisterModule` has the PFN_REGISTERMODULE signature.
        let register = unsafe { lib.get::<RegisterModuleFn>(b"RegisterModule\0") }
            .map(|f| *f)
            .map_err(|e| format!("{}: no RegisterModule export: {e}", path.display()))?;
        let mut registration = Box::new(Registration {
            obj: Obj::new(&REGISTRATION_VTBL, sim_handle, Kind::Registration),
            factory: ptr::null_mut(),
            request_notifications: 0,
            post_notifications: 0,
        });
        let mut server = Box::new(Obj::new(&SERVER_VTBL, sim_handle, Kind::Server));
        let info: *mut Object = (&raw mut *registration).cast();
        let server_ptr: *mut Object = (&raw mut *server).cast();
        // SAFETY: both objects live until the library is dropped; the
        // module may keep neither past `RegisterModule` (IIS's are valid
        // only during the call), and the simulator's stay valid anyway.
        let hr = unsafe { register(10, info, server_ptr) };
        if hr < 0 {
            return Err(format!(
                "RegisterModule failed with HRESULT {:#010x}",
                hr as u32
            ));
        }
        if registration.factory.is_null() {
            return Err(
                "RegisterModule succeeded but registered no factory (SetRequestNotifications)"
                    .into(),
            );
        }
        if registration.request_notifications & RQ_EXECUTE_REQUEST_HANDLER == 0 {
            return Err(format!(
                "the module registered for notifications {:#x}, without RQ_EXECUTE_REQUEST_HANDLER",
                registration.request_notifications
            ));
        }
        tracing::info!(
            target: "iis_sim",
            dll = %path.display(),
            notifications = format!("{:#x}", registration.request_notifications),
            post = format!("{:#x}", registration.post_notifications),
            "native module registered"
        );
        Ok(ModuleLibrary {
            factory: registration.factory,
            _registration: registration,
            _server: server,
            _lib: lib,
        })
    }

    /// The factory's `Terminate`.
    pub(crate) fn terminate(&self) {
        // SAFETY: the factory the module registered; `Terminate` takes no
        // argument and is called once, at unload.
        unsafe {
            let f: unsafe extern "system" fn(*mut Object) =
                std::mem::transmute(entry(self.factory, FACTORY_TERMINATE));
            f(self.factory);
        }
    }

    /// A new `CHttpModule` for `objects`' request, from the factory.
    pub(crate) fn create_module(&self, objects: &NativeObjects) -> Result<(), String> {
        let mut module: *mut Object = ptr::null_mut();
        // SAFETY: `GetHttpModule(CHttpModule **, IModuleAllocator *)`; both
        // pointers valid for the call.
        let hr = unsafe {
            let f: unsafe extern "system" fn(
                *mut Object,
                *mut *mut Object,
                *mut Object,
            ) -> HRESULT = std::mem::transmute(entry(self.factory, FACTORY_GET_HTTP_MODULE));
            f(self.factory, &mut module, objects.ptrs.allocator)
        };
        if hr < 0 || module.is_null() {
            return Err(format!(
                "GetHttpModule failed (HRESULT {:#010x}, module {module:p})",
                hr as u32
            ));
        }
        objects.module.lock().unwrap_or_else(|e| e.into_inner()).0 = module;
        Ok(())
    }
}

/// The function at `slot` of `obj`'s vtable.
///
/// # Safety
/// `obj` is a live object whose vtable has the slot.
pub(crate) unsafe fn entry(obj: *mut Object, slot: Slot) -> *const c_void {
    // SAFETY: the caller's promise.
    unsafe { *(*obj).vtbl.add(slot.index) }
}

/// `OnExecuteRequestHandler`.
pub(crate) fn on_execute_request_handler(objects: &NativeObjects) -> i32 {
    let module = objects.module();
    // SAFETY: the module object from `GetHttpModule`, alive until its
    // `Dispose`; the context and provider are this request's.
    unsafe {
        let f: unsafe extern "system" fn(*mut Object, *mut Object, *mut Object) -> i32 =
            std::mem::transmute(entry(module, MODULE_ON_EXECUTE_REQUEST_HANDLER));
        f(module, objects.ptrs.ctx, objects.ptrs.provider)
    }
}

/// `OnAsyncCompletion` (for `RQ_EXECUTE_REQUEST_HANDLER`).
pub(crate) fn on_async_completion(objects: &NativeObjects, posted: bool) -> i32 {
    let module = objects.module();
    // SAFETY: as above; the completion information is this request's.
    unsafe {
        let f: unsafe extern "system" fn(
            *mut Object,
            *mut Object,
            DWORD,
            BOOL,
            *mut Object,
            *mut Object,
        ) -> i32 = std::mem::transmute(entry(module, MODULE_ON_ASYNC_COMPLETION));
        f(
            module,
            objects.ptrs.ctx,
            RQ_EXECUTE_REQUEST_HANDLER,
            if posted { TRUE } else { FALSE },
            objects.ptrs.provider,
            objects.ptrs.completion,
        )
    }
}

/// `Dispose`, once, at the end of the request.
pub(crate) fn dispose(objects: &NativeObjects) {
    let module = std::mem::replace(
        &mut *objects.module.lock().unwrap_or_else(|e| e.into_inner()),
        ModulePtr(ptr::null_mut()),
    );
    if module.0.is_null() {
        return;
    }
    // SAFETY: the module object, disposed exactly once (the pointer was
    // just taken out).
    unsafe {
        let f: unsafe extern "system" fn(*mut Object) =
            std::mem::transmute(entry(module.0, MODULE_DISPOSE));
        f(module.0);
    }
}
