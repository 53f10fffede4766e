//! `IHttpResponse`: status, headers, the written chunks and flushes.

use super::*;

pub(crate) unsafe extern "system" fn resp_set_status(
    this: *mut Obj,
    status: USHORT,
    reason: PCSTR,
    _sub_status: USHORT,
    _error: HRESULT,
    _exception: *mut c_void,
    _skip_custom_errors: BOOL,
) -> HRESULT {
    guarded(E_FAIL, || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "SetStatus") }) else {
            return E_FAIL;
        };
        let reason = if reason.is_null() {
            Vec::new()
        } else {
            // SAFETY: a NUL-terminated reason.
            unsafe { CStr::from_ptr(reason.cast()) }.to_bytes().to_vec()
        };
        native::set_status(&req, status, reason)
    })
}

pub(crate) unsafe extern "system" fn resp_set_header(
    this: *mut Obj,
    name: PCSTR,
    value: PCSTR,
    len: USHORT,
    replace: BOOL,
) -> HRESULT {
    guarded(E_FAIL, || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "SetHeader") }) else {
            return E_FAIL;
        };
        if name.is_null() || (value.is_null() && len > 0) {
            return E_INVALIDARG;
        }
        // SAFETY: a NUL-terminated name; `len` bytes of value.
        let (name, value) = unsafe {
            (
                CStr::from_ptr(name.cast()).to_bytes().to_vec(),
                if len == 0 {
                    Vec::new()
                } else {
                    std::slice::from_raw_parts(value, len as usize).to_vec()
                },
            )
        };
        native::set_header(&req, &name, &value, replace != FALSE)
    })
}

macro_rules! response_void {
    ($name:ident, $what:literal, $call:expr) => {
        pub(crate) unsafe extern "system" fn $name(this: *mut Obj) {
            guarded((), || {
                // SAFETY: as above.
                if let Some(req) = unsafe { request_of(this, $what) } {
                    let f: fn(&Arc<SimRequest>) = $call;
                    f(&req);
                }
            });
        }
    };
}

response_void!(resp_clear, "Clear", |_| {});
response_void!(resp_clear_headers, "ClearHeaders", native::clear_headers);
response_void!(
    resp_set_need_disconnect,
    "SetNeedDisconnect",
    native::set_need_disconnect
);
response_void!(resp_disable_buffering, "DisableBuffering", |_| {});
response_void!(resp_close_connection, "CloseConnection", |r| {
    if !r.shared.config.variation.no_close_connection {
        r.force_close();
    }
});

pub(crate) unsafe extern "system" fn resp_flush(
    this: *mut Obj,
    is_async: BOOL,
    _more: BOOL,
    sent: *mut DWORD,
    expected: *mut BOOL,
) -> HRESULT {
    guarded(E_FAIL, || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "Flush") }) else {
            return E_FAIL;
        };
        let outcome = native::flush(&req, is_async != FALSE);
        finish_write(outcome, sent, expected)
    })
}

pub(crate) fn finish_write(
    outcome: native::IoStart,
    sent: *mut DWORD,
    expected: *mut BOOL,
) -> HRESULT {
    let (hr, n, pending) = match outcome {
        native::IoStart::Pending => (S_OK, 0, true),
        native::IoStart::Done(Ok(n)) => (S_OK, n, false),
        native::IoStart::Done(Err(hr)) => (hr, 0, false),
    };
    // SAFETY: the module's out-parameters (each may be null).
    unsafe {
        if !sent.is_null() {
            *sent = n;
        }
        if !expected.is_null() {
            *expected = if pending { TRUE } else { FALSE };
        }
    }
    hr
}

pub(crate) unsafe extern "system" fn resp_write_entity_chunks(
    this: *mut Obj,
    chunks: *mut HTTP_DATA_CHUNK,
    count: DWORD,
    is_async: BOOL,
    _more: BOOL,
    sent: *mut DWORD,
    expected: *mut BOOL,
) -> HRESULT {
    guarded(E_FAIL, || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "WriteEntityChunks") }) else {
            return E_FAIL;
        };
        if chunks.is_null() && count > 0 {
            return E_INVALIDARG;
        }
        let mut data = Vec::new();
        for i in 0..count as usize {
            // SAFETY: `count` chunks at `chunks`.
            let chunk = unsafe { &*chunks.add(i) };
            if chunk.DataChunkType != HttpDataChunkFromMemory {
                req.violation(&format!(
                    "WriteEntityChunks with chunk type {} (only FromMemory is simulated)",
                    chunk.DataChunkType
                ));
                return E_INVALIDARG;
            }
            let m = chunk.FromMemory;
            if m.BufferLength > 0 {
                if m.pBuffer.is_null() {
                    return E_INVALIDARG;
                }
                // SAFETY: the chunk's buffer and length; the simulator copies
                // the bytes during the call (the same data IIS would send
                // later from the buffer the module keeps alive).
                data.extend_from_slice(unsafe {
                    std::slice::from_raw_parts(m.pBuffer.cast::<u8>(), m.BufferLength as usize)
                });
            }
        }
        let outcome = native::write(&req, Bytes::from(data), is_async != FALSE);
        finish_write(outcome, sent, expected)
    })
}
