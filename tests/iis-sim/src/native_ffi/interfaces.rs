//! The small interfaces: `IHttpUser`, `IHttpConnection`,
//! `IHttpCompletionInfo`, `IHttpEventProvider`, `IModuleAllocator`,
//! `IHttpModuleRegistrationInfo`.

use super::*;

pub(crate) unsafe extern "system" fn user_get_user_name(this: *mut Obj) -> PCWSTR {
    guarded(ptr::null(), || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "GetUserName") }) else {
            return ptr::null();
        };
        req.native()
            .and_then(|n| n.user.as_ref())
            .map_or(ptr::null(), |u| u.name.as_ptr())
    })
}

pub(crate) unsafe extern "system" fn user_get_authentication_type(this: *mut Obj) -> PCWSTR {
    guarded(ptr::null(), || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "GetAuthenticationType") }) else {
            return ptr::null();
        };
        req.native()
            .and_then(|n| n.user.as_ref())
            .map_or(ptr::null(), |u| u.auth_type.as_ptr())
    })
}

pub(crate) unsafe extern "system" fn conn_is_connected(this: *mut Obj) -> BOOL {
    guarded(FALSE, || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "IsConnected") }) else {
            return FALSE;
        };
        if req.is_connected() {
            TRUE
        } else {
            FALSE
        }
    })
}

pub(crate) unsafe extern "system" fn completion_get_bytes(this: *mut Obj) -> DWORD {
    guarded(0, || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "GetCompletionBytes") }) else {
            return 0;
        };
        native::current_completion(&req).0
    })
}

pub(crate) unsafe extern "system" fn completion_get_status(this: *mut Obj) -> HRESULT {
    guarded(E_FAIL, || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "GetCompletionStatus") }) else {
            return E_FAIL;
        };
        native::current_completion(&req).1
    })
}

pub(crate) unsafe extern "system" fn provider_set_error_status(this: *mut Obj, hr: HRESULT) {
    guarded((), || {
        // SAFETY: as above.
        if unsafe { request_of(this, "SetErrorStatus") }.is_some() {
            tracing::warn!(target: "iis_sim", hr = format!("{:#010x}", hr as u32), "the module set an error status");
        }
    });
}

pub(crate) unsafe extern "system" fn allocator_allocate_memory(
    this: *mut Obj,
    bytes: DWORD,
) -> *mut c_void {
    guarded(ptr::null_mut(), || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "AllocateMemory") }) else {
            return ptr::null_mut();
        };
        match req.native() {
            Some(n) => n
                .arena
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .alloc(bytes as usize),
            None => ptr::null_mut(),
        }
    })
}

pub(crate) static MODULE_NAME: [u16; 16] = {
    let s = b"KallitheaModule\0";
    let mut out = [0u16; 16];
    let mut i = 0;
    while i < s.len() {
        out[i] = s[i] as u16;
        i += 1;
    }
    out
};

pub(crate) unsafe extern "system" fn registration_get_name(_this: *mut Obj) -> PCWSTR {
    MODULE_NAME.as_ptr()
}

pub(crate) unsafe extern "system" fn registration_get_id(this: *mut Obj) -> *mut c_void {
    // The module's id: any stable pointer-sized value.
    this.cast()
}

pub(crate) unsafe extern "system" fn registration_set_request_notifications(
    this: *mut Obj,
    factory: *mut Object,
    request: DWORD,
    post: DWORD,
) -> HRESULT {
    guarded(E_FAIL, || {
        if this.is_null() || factory.is_null() {
            return E_INVALIDARG;
        }
        // SAFETY: the registration object is the simulator's `Registration`
        // (its `Obj` first), alive during `RegisterModule`.
        let reg = unsafe { &mut *this.cast::<Registration>() };
        reg.factory = factory;
        reg.request_notifications |= request;
        reg.post_notifications |= post;
        S_OK
    })
}
