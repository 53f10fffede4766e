//! `IHttpContext`: the request's other objects, server variables, request
//! memory, completion and cancellation.

use super::*;

pub(crate) unsafe extern "system" fn ctx_get_connection(this: *mut Obj) -> *mut Object {
    guarded(ptr::null_mut(), || {
        // SAFETY: `this` is the simulator's context object.
        let Some(req) = (unsafe { request_of(this, "GetConnection") }) else {
            return ptr::null_mut();
        };
        sibling(&req, |o| &raw mut o.connection)
    })
}

pub(crate) unsafe extern "system" fn ctx_get_request(this: *mut Obj) -> *mut Object {
    guarded(ptr::null_mut(), || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "GetRequest") }) else {
            return ptr::null_mut();
        };
        sibling(&req, |o| &raw mut o.request)
    })
}

pub(crate) unsafe extern "system" fn ctx_get_response(this: *mut Obj) -> *mut Object {
    guarded(ptr::null_mut(), || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "GetResponse") }) else {
            return ptr::null_mut();
        };
        sibling(&req, |o| &raw mut o.response)
    })
}

pub(crate) unsafe extern "system" fn ctx_get_response_headers_sent(this: *mut Obj) -> BOOL {
    guarded(FALSE, || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "GetResponseHeadersSent") }) else {
            return FALSE;
        };
        if req.lock().headers_sent {
            TRUE
        } else {
            FALSE
        }
    })
}

pub(crate) unsafe extern "system" fn ctx_get_user(this: *mut Obj) -> *mut Object {
    guarded(ptr::null_mut(), || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "GetUser") }) else {
            return ptr::null_mut();
        };
        // No user object: a host that gives anonymous requests none.
        if req.native().is_none_or(|n| n.user.is_none()) {
            return ptr::null_mut();
        }
        sibling(&req, |o| &raw mut o.user)
    })
}

pub(crate) unsafe extern "system" fn ctx_indicate_completion(this: *mut Obj, status: i32) {
    guarded((), || {
        // SAFETY: as above.
        if let Some(req) = unsafe { request_of(this, "IndicateCompletion") } {
            native::deliver(&req, Item::Indicate(status));
        }
    });
}

pub(crate) unsafe extern "system" fn ctx_post_completion(this: *mut Obj, bytes: DWORD) -> HRESULT {
    guarded(E_FAIL, || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "PostCompletion") }) else {
            return E_FAIL;
        };
        native::post(&req, bytes);
        S_OK
    })
}

pub(crate) unsafe extern "system" fn ctx_get_server_variable(
    this: *mut Obj,
    name: PCSTR,
    value: *mut PCSTR,
    len: *mut DWORD,
) -> HRESULT {
    guarded(E_FAIL, || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "GetServerVariable") }) else {
            return E_FAIL;
        };
        if name.is_null() || value.is_null() || len.is_null() {
            return E_INVALIDARG;
        }
        // SAFETY: a NUL-terminated name from the module.
        let name = unsafe { CStr::from_ptr(name.cast()) }.to_string_lossy();
        let v = match req.server_variable(&name) {
            Ok(v) => v,
            Err(code) => return hresult_from_win32(code),
        };
        let Some(native) = req.native() else {
            return E_FAIL;
        };
        // The value stays with the request (a copy the module does not
        // free); the length excludes the NUL.
        let p = native
            .arena
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .copy(&v);
        // SAFETY: the module's out-parameters.
        unsafe {
            *value = p;
            *len = (v.len() - 1) as DWORD;
        }
        S_OK
    })
}

pub(crate) unsafe extern "system" fn ctx_get_server_variable_wide(
    this: *mut Obj,
    name: PCSTR,
    value: *mut PCWSTR,
    len: *mut DWORD,
) -> HRESULT {
    guarded(E_FAIL, || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "GetServerVariable (wide)") }) else {
            return E_FAIL;
        };
        if name.is_null() || value.is_null() || len.is_null() {
            return E_INVALIDARG;
        }
        // SAFETY: a NUL-terminated name from the module.
        let name = unsafe { CStr::from_ptr(name.cast()) }.to_string_lossy();
        let base = name
            .strip_prefix("UNICODE_")
            .or_else(|| name.strip_prefix("unicode_"))
            .unwrap_or(&name);
        let v = match req.server_variable(&format!("UNICODE_{base}")) {
            Ok(v) => v,
            Err(code) => return hresult_from_win32(code),
        };
        let units: Vec<u16> = v
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let Some(native) = req.native() else {
            return E_FAIL;
        };
        let p = native
            .arena
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .copy(&units);
        // SAFETY: the module's out-parameters.
        unsafe {
            *value = p;
            *len = (units.len() - 1) as DWORD;
        }
        S_OK
    })
}

pub(crate) unsafe extern "system" fn ctx_allocate_request_memory(
    this: *mut Obj,
    bytes: DWORD,
) -> *mut c_void {
    guarded(ptr::null_mut(), || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "AllocateRequestMemory") }) else {
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

pub(crate) unsafe extern "system" fn ctx_cancel_io(this: *mut Obj) -> HRESULT {
    guarded(E_FAIL, || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "CancelIo") }) else {
            return E_FAIL;
        };
        if req.shared.config.variation.no_cancel_io {
            return E_NOTIMPL;
        }
        req.abort_read();
        S_OK
    })
}
