//! `IHttpRequest`: the raw request, headers, method, version, addresses, and
//! the asynchronous body reads.

use super::*;

pub(crate) unsafe extern "system" fn req_get_raw(this: *mut Obj) -> *mut HTTP_REQUEST {
    guarded(ptr::null_mut(), || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "GetRawHttpRequest") }) else {
            return ptr::null_mut();
        };
        match req.native() {
            Some(n) => (&raw const *n.raw.req).cast_mut(),
            None => ptr::null_mut(),
        }
    })
}

pub(crate) unsafe extern "system" fn req_get_header(
    this: *mut Obj,
    name: PCSTR,
    len: *mut USHORT,
) -> PCSTR {
    guarded(ptr::null(), || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "GetHeader") }) else {
            return ptr::null();
        };
        if name.is_null() {
            return ptr::null();
        }
        // SAFETY: a NUL-terminated name.
        let name = unsafe { CStr::from_ptr(name.cast()) }
            .to_string_lossy()
            .to_ascii_lowercase();
        let found = req.native().and_then(|n| {
            n.raw
                .index
                .iter()
                .find(|(k, _, _)| *k == name)
                .map(|(_, p, n)| (*p, *n))
        });
        let (p, n) = match found {
            Some((p, n)) => (p, n),
            None => (ptr::null(), 0),
        };
        if !len.is_null() {
            // SAFETY: the module's out-parameter.
            unsafe { *len = n };
        }
        p
    })
}

pub(crate) unsafe extern "system" fn req_get_http_method(this: *mut Obj) -> PCSTR {
    guarded(ptr::null(), || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "GetHttpMethod") }) else {
            return ptr::null();
        };
        req.native().map_or(ptr::null(), |n| n.raw.method.as_ptr())
    })
}

pub(crate) unsafe extern "system" fn req_get_http_version(
    this: *mut Obj,
    major: *mut USHORT,
    minor: *mut USHORT,
) {
    guarded((), || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "GetHttpVersion") }) else {
            return;
        };
        if let Some(n) = req.native() {
            let v = n.raw.req.Version;
            // SAFETY: the module's out-parameters (each may be null).
            unsafe {
                if !major.is_null() {
                    *major = v.MajorVersion;
                }
                if !minor.is_null() {
                    *minor = v.MinorVersion;
                }
            }
        }
    });
}

/// `GetRemoteAddress` (`which` 0) and `GetLocalAddress` (1): the request's
/// own `SOCKADDR`, valid while the request lives.
pub(crate) fn request_address(this: *mut Obj, which: usize, what: &str) -> *const c_void {
    guarded(ptr::null(), || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, what) }) else {
            return ptr::null();
        };
        req.native()
            .map_or(ptr::null(), |n| (&raw const n.raw.addresses[which]).cast())
    })
}

pub(crate) unsafe extern "system" fn req_get_remote_address(this: *mut Obj) -> *const c_void {
    request_address(this, 0, "GetRemoteAddress")
}

pub(crate) unsafe extern "system" fn req_get_local_address(this: *mut Obj) -> *const c_void {
    request_address(this, 1, "GetLocalAddress")
}

pub(crate) unsafe extern "system" fn req_get_remaining_entity_bytes(this: *mut Obj) -> DWORD {
    guarded(0, || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "GetRemainingEntityBytes") }) else {
            return 0;
        };
        native::remaining(&req)
    })
}

/// A buffer the module lent for an asynchronous read.
pub(crate) struct ReadTarget {
    pub(crate) ptr: *mut u8,
    pub(crate) len: usize,
}

// SAFETY: the module keeps the buffer for the simulator until the
// completion; only the read's task touches it.
unsafe impl Send for ReadTarget {}

impl ReadTarget {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Copies `data` (at most `len` bytes) into the buffer.
    pub(crate) fn fill(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.len);
        // SAFETY: the buffer holds `len` writable bytes until the
        // completion, which has not been delivered yet.
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), self.ptr, n) };
        n
    }
}

pub(crate) unsafe extern "system" fn req_read_entity_body(
    this: *mut Obj,
    buffer: *mut c_void,
    size: DWORD,
    is_async: BOOL,
    read: *mut DWORD,
    pending: *mut BOOL,
) -> HRESULT {
    guarded(E_FAIL, || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "ReadEntityBody") }) else {
            return E_FAIL;
        };
        if buffer.is_null() || size == 0 {
            return E_INVALIDARG;
        }
        let target = ReadTarget {
            ptr: buffer.cast(),
            len: size as usize,
        };
        let outcome = native::read(&req, target, is_async != FALSE);
        let (hr, n, is_pending) = match outcome {
            native::IoStart::Pending => (S_OK, 0, true),
            native::IoStart::Done(Ok(n)) => (S_OK, n, false),
            native::IoStart::Done(Err(hr)) => (hr, 0, false),
        };
        // SAFETY: the module's out-parameters (each may be null).
        unsafe {
            if !read.is_null() {
                *read = n;
            }
            if !pending.is_null() {
                *pending = if is_pending { TRUE } else { FALSE };
            }
        }
        hr
    })
}
