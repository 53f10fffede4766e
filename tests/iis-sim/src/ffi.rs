//! The simulator's side of the binary interface: loading the extension, the
//! ECB it hands over, and the callbacks IIS implements. The only module with
//! `unsafe` code; everything it receives from the extension is turned into
//! safe values before the rest of the simulator sees it.
#![allow(unsafe_code)]

use std::ffi::{c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use iis_sys::httpext::*;

use crate::registry;

type GetExtensionVersionFn = unsafe extern "system" fn(*mut HSE_VERSION_INFO) -> BOOL;
type HttpExtensionProcFn = unsafe extern "system" fn(*mut EXTENSION_CONTROL_BLOCK) -> DWORD;
type TerminateExtensionFn = unsafe extern "system" fn(DWORD) -> BOOL;

/// A loaded extension DLL and its three entry points.
pub(crate) struct Library {
    get_version: GetExtensionVersionFn,
    proc_: HttpExtensionProcFn,
    terminate: TerminateExtensionFn,
    // Last: the entry points above point into it.
    _lib: libloading::Library,
}

impl Library {
    /// Loads the DLL and looks up its exports.
    pub(crate) fn load(path: &Path) -> Result<Library, String> {
        // SAFETY: loading runs the library's initialisers; the extension is a
        // Rust cdylib built for this purpose (or the user's own choice of
        // DLL, as with IIS).
        let lib = unsafe { libloading::Library::new(path) }
            .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
        // SAFETY: the symbols have the signatures httpext.h gives them.
        unsafe {
            let get_version = *lib
                .get::<GetExtensionVersionFn>(b"GetExtensionVersion\0")
                .map_err(|e| format!("{}: no GetExtensionVersion export: {e}", path.display()))?;
            let proc_ = *lib
                .get::<HttpExtensionProcFn>(b"HttpExtensionProc\0")
                .map_err(|e| format!("{}: no HttpExtensionProc export: {e}", path.display()))?;
            let terminate = *lib
                .get::<TerminateExtensionFn>(b"TerminateExtension\0")
                .map_err(|e| format!("{}: no TerminateExtension export: {e}", path.display()))?;
            Ok(Library {
                get_version,
                proc_,
                terminate,
                _lib: lib,
            })
        }
    }

    /// Calls `GetExtensionVersion`; returns the extension's description.
    pub(crate) fn get_extension_version(&self) -> Result<(u32, String), String> {
        let mut info = HSE_VERSION_INFO {
            dwExtensionVersion: 0,
            lpszExtensionDesc: [0; HSE_MAX_EXT_DLL_NAME_LEN],
        };
        // SAFETY: a valid, writable HSE_VERSION_INFO for the call.
        let ok = unsafe { (self.get_version)(&mut info) };
        let end = info
            .lpszExtensionDesc
            .iter()
            .position(|&c| c == 0)
            .ok_or("the extension's description is not NUL-terminated")?;
        let desc: Vec<u8> = info.lpszExtensionDesc[..end]
            .iter()
            .map(|&c| c as u8)
            .collect();
        if ok == FALSE {
            return Err("GetExtensionVersion returned FALSE".into());
        }
        Ok((
            info.dwExtensionVersion,
            String::from_utf8_lossy(&desc).into_owned(),
        ))
    }

    /// Calls `HttpExtensionProc` with the request's ECB.
    pub(crate) fn http_extension_proc(&self, ecb: EcbPtr) -> DWORD {
        // SAFETY: the ECB is alive until the session ends (owned by the
        // request's record).
        unsafe { (self.proc_)(ecb.0) }
    }

    /// Calls `TerminateExtension`.
    pub(crate) fn terminate_extension(&self, flags: DWORD) -> BOOL {
        // SAFETY: a plain call with no pointers.
        unsafe { (self.terminate)(flags) }
    }
}

/// A pointer to a request's ECB, sendable to the thread that calls the
/// extension.
#[derive(Clone, Copy)]
pub(crate) struct EcbPtr(*mut EXTENSION_CONTROL_BLOCK);
// SAFETY: the ECB is owned by the request's record, which outlives every use.
unsafe impl Send for EcbPtr {}
// SAFETY: as above.
unsafe impl Sync for EcbPtr {}

/// The ECB and everything it points to, owned together.
pub(crate) struct EcbStorage {
    ecb: Box<EXTENSION_CONTROL_BLOCK>,
    _strings: Vec<u8>,
    _preloaded: Vec<u8>,
}

// SAFETY: the raw pointers inside point into the storage itself.
unsafe impl Send for EcbStorage {}

/// What the simulator puts in a new ECB.
pub(crate) struct EcbFields<'a> {
    pub conn_id: usize,
    pub method: &'a str,
    pub query: &'a [u8],
    pub path_info: &'a [u8],
    pub path_translated: &'a str,
    pub content_type: &'a [u8],
    pub total: u32,
    pub preloaded: Vec<u8>,
}

impl EcbStorage {
    pub(crate) fn new(f: EcbFields<'_>) -> EcbStorage {
        // The ECB's strings, NUL-terminated one after the other in one
        // buffer (any NUL inside a value dropped).
        let fields: [&[u8]; 5] = [
            f.method.as_bytes(),
            f.query,
            f.path_info,
            f.path_translated.as_bytes(),
            f.content_type,
        ];
        let mut strings = Vec::with_capacity(fields.iter().map(|s| s.len() + 1).sum());
        let mut starts = [0usize; 5];
        for (start, field) in starts.iter_mut().zip(fields) {
            *start = strings.len();
            strings.extend(field.iter().copied().filter(|&b| b != 0));
            strings.push(0);
        }
        let at = |i: usize| strings[starts[i]..].as_ptr() as LPSTR;
        let mut preloaded = f.preloaded;
        let ecb = Box::new(EXTENSION_CONTROL_BLOCK {
            cbSize: std::mem::size_of::<EXTENSION_CONTROL_BLOCK>() as DWORD,
            dwVersion: HSE_VERSION,
            ConnID: f.conn_id as HCONN,
            dwHttpStatusCode: 200,
            lpszLogData: [0; HSE_LOG_BUFFER_LEN],
            lpszMethod: at(0),
            lpszQueryString: at(1),
            lpszPathInfo: at(2),
            lpszPathTranslated: at(3),
            cbTotalBytes: f.total,
            cbAvailable: preloaded.len() as DWORD,
            lpbData: if preloaded.is_empty() {
                std::ptr::null_mut()
            } else {
                preloaded.as_mut_ptr()
            },
            lpszContentType: at(4),
            GetServerVariable: Some(get_server_variable),
            WriteClient: Some(write_client),
            ReadClient: Some(read_client),
            ServerSupportFunction: Some(server_support_function),
        });
        EcbStorage {
            ecb,
            _strings: strings,
            _preloaded: preloaded,
        }
    }

    pub(crate) fn ptr(&mut self) -> EcbPtr {
        EcbPtr(&mut *self.ecb)
    }
}

/// The completion callback the extension registered, and its context.
#[derive(Clone, Copy)]
pub(crate) struct Completion {
    callback: PFN_HSE_IO_COMPLETION,
    context: usize,
}

impl Completion {
    /// Calls the extension back: `transferred` bytes, or `error`.
    pub(crate) fn deliver(self, ecb: EcbPtr, transferred: u32, error: u32) {
        // SAFETY: the callback is the extension's, registered for this
        // request, whose ECB is alive until the session ends — which the
        // extension may not do before this completion.
        unsafe { (self.callback)(ecb.0, self.context as *mut c_void, transferred, error) }
    }
}

/// An extension's buffer that an asynchronous read fills later.
pub(crate) struct ReadBuffer {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the extension keeps the buffer for the simulator until the
// completion; only the read's task touches it.
unsafe impl Send for ReadBuffer {}

impl ReadBuffer {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Copies `data` (at most `len` bytes) into the buffer.
    pub(crate) fn fill(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.len);
        // SAFETY: the buffer holds `len` writable bytes until the completion,
        // which has not been delivered yet.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr, n) };
        n
    }
}

/// Sets the error the extension reads with GetLastError (errno here).
fn set_last_error(code: u32) {
    #[cfg(target_os = "linux")]
    // SAFETY: errno is this thread's; writing it is what the C library does.
    unsafe {
        *libc::__errno_location() = code as i32
    };
    #[cfg(windows)]
    {
        #[link(name = "kernel32")]
        extern "system" {
            fn SetLastError(code: u32);
        }
        // SAFETY: sets the calling thread's last-error value, nothing else.
        unsafe { SetLastError(code) };
    }
    #[cfg(not(any(target_os = "linux", windows)))]
    let _ = code;
}

fn fail(code: u32) -> BOOL {
    set_last_error(code);
    FALSE
}

fn result(r: Result<(), u32>) -> BOOL {
    match r {
        Ok(()) => TRUE,
        Err(code) => fail(code),
    }
}

/// Runs a callback body: a panic in the simulator must not unwind into the
/// extension either.
fn guarded(f: impl FnOnce() -> BOOL) -> BOOL {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| fail(ERROR_INVALID_PARAMETER))
}

thread_local! {
    /// `GetServerVariable`'s value before it is copied out.
    static VALUE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

unsafe extern "system" fn get_server_variable(
    conn: HCONN,
    name: LPSTR,
    buffer: *mut c_void,
    size: *mut DWORD,
) -> BOOL {
    guarded(|| {
        let Some(req) = registry::lookup(conn as usize, "GetServerVariable") else {
            return fail(ERROR_INVALID_PARAMETER);
        };
        if name.is_null() || size.is_null() {
            return fail(ERROR_INVALID_PARAMETER);
        }
        // SAFETY: the extension passes a NUL-terminated name.
        let name = unsafe { CStr::from_ptr(name) }.to_string_lossy();
        VALUE.with(|value| {
            // A value is built in this thread's buffer (a request asks for a
            // dozen); a fresh one only if the extension's code somehow
            // called back in while it is in use.
            let mut own = Vec::new();
            let mut borrowed = value.try_borrow_mut();
            let value = match &mut borrowed {
                Ok(value) => &mut **value,
                Err(_) => &mut own,
            };
            if let Err(code) = req.server_variable_into(&name, value) {
                return fail(code);
            }
            // SAFETY: `size` points to the buffer's size, readable and
            // writable.
            let room = unsafe { *size } as usize;
            // SAFETY: as above.
            unsafe { *size = value.len() as DWORD };
            if room < value.len() || buffer.is_null() {
                return fail(ERROR_INSUFFICIENT_BUFFER);
            }
            // SAFETY: the buffer holds `room` >= value.len() writable bytes.
            unsafe { std::ptr::copy_nonoverlapping(value.as_ptr(), buffer.cast(), value.len()) };
            TRUE
        })
    })
}

unsafe extern "system" fn write_client(
    conn: HCONN,
    buffer: *mut c_void,
    bytes: *mut DWORD,
    flags: DWORD,
) -> BOOL {
    guarded(|| {
        let Some(req) = registry::lookup(conn as usize, "WriteClient") else {
            return fail(ERROR_INVALID_PARAMETER);
        };
        if bytes.is_null() {
            return fail(ERROR_INVALID_PARAMETER);
        }
        // SAFETY: `bytes` points to the length.
        let len = unsafe { *bytes } as usize;
        if len > 0 && buffer.is_null() {
            return fail(ERROR_INVALID_PARAMETER);
        }
        let data = if len == 0 {
            bytes::Bytes::new()
        } else {
            // SAFETY: the buffer holds `len` readable bytes during the call;
            // the simulator copies them (IIS may read them later; a copy
            // made now is the same data).
            bytes::Bytes::copy_from_slice(unsafe {
                std::slice::from_raw_parts(buffer as *const u8, len)
            })
        };
        if flags & HSE_IO_ASYNC != 0 {
            result(req.write_async(data))
        } else {
            result(req.write_sync(data))
        }
    })
}

unsafe extern "system" fn read_client(conn: HCONN, buffer: *mut c_void, size: *mut DWORD) -> BOOL {
    guarded(|| {
        let Some(req) = registry::lookup(conn as usize, "ReadClient") else {
            return fail(ERROR_INVALID_PARAMETER);
        };
        if buffer.is_null() || size.is_null() {
            return fail(ERROR_INVALID_PARAMETER);
        }
        let mut buf = ReadBuffer {
            ptr: buffer.cast(),
            // SAFETY: `size` points to the buffer's size.
            len: unsafe { *size } as usize,
        };
        match req.read_sync(&mut buf) {
            Ok(n) => {
                // SAFETY: as above.
                unsafe { *size = n as DWORD };
                TRUE
            }
            Err(code) => fail(code),
        }
    })
}

unsafe extern "system" fn server_support_function(
    conn: HCONN,
    request: DWORD,
    buffer: *mut c_void,
    size: *mut DWORD,
    data_type: *mut DWORD,
) -> BOOL {
    guarded(|| {
        let what = match request {
            HSE_REQ_DONE_WITH_SESSION => "HSE_REQ_DONE_WITH_SESSION",
            HSE_REQ_IO_COMPLETION => "HSE_REQ_IO_COMPLETION",
            HSE_REQ_ASYNC_READ_CLIENT => "HSE_REQ_ASYNC_READ_CLIENT",
            HSE_REQ_SEND_RESPONSE_HEADER_EX => "HSE_REQ_SEND_RESPONSE_HEADER_EX",
            HSE_REQ_IS_CONNECTED => "HSE_REQ_IS_CONNECTED",
            _ => "ServerSupportFunction",
        };
        let Some(req) = registry::lookup(conn as usize, what) else {
            return fail(ERROR_INVALID_PARAMETER);
        };
        match request {
            HSE_REQ_DONE_WITH_SESSION => {
                let status = if buffer.is_null() {
                    None
                } else {
                    // SAFETY: DONE_WITH_SESSION's buffer, when given, is a DWORD.
                    Some(unsafe { *(buffer as *const DWORD) })
                };
                result(req.done(status, "HSE_REQ_DONE_WITH_SESSION"))
            }
            HSE_REQ_IO_COMPLETION => {
                if buffer.is_null() {
                    return fail(ERROR_INVALID_PARAMETER);
                }
                // SAFETY: the buffer is the extension's completion function,
                // with the PFN_HSE_IO_COMPLETION signature.
                let callback: PFN_HSE_IO_COMPLETION = unsafe { std::mem::transmute(buffer) };
                req.register_completion(Completion {
                    callback,
                    context: data_type as usize,
                });
                TRUE
            }
            HSE_REQ_ASYNC_READ_CLIENT => {
                if buffer.is_null() || size.is_null() {
                    return fail(ERROR_INVALID_PARAMETER);
                }
                let buf = ReadBuffer {
                    ptr: buffer.cast(),
                    // SAFETY: `size` points to the buffer's size.
                    len: unsafe { *size } as usize,
                };
                result(req.read_async(buf))
            }
            HSE_REQ_SEND_RESPONSE_HEADER_EX => {
                if buffer.is_null() {
                    return fail(ERROR_INVALID_PARAMETER);
                }
                // SAFETY: the buffer is an HSE_SEND_HEADER_EX_INFO.
                let info = unsafe { &*(buffer as *const HSE_SEND_HEADER_EX_INFO) };
                let text = |p: LPCSTR, n: DWORD| -> Vec<u8> {
                    if p.is_null() {
                        Vec::new()
                    } else {
                        // SAFETY: the info gives each string's length.
                        unsafe { std::slice::from_raw_parts(p as *const u8, n as usize) }.to_vec()
                    }
                };
                let status = text(info.pszStatus, info.cchStatus);
                let headers = text(info.pszHeader, info.cchHeader);
                result(req.send_headers(&status, &headers, info.fKeepConn != FALSE))
            }
            HSE_REQ_IS_CONNECTED => {
                if buffer.is_null() {
                    return fail(ERROR_INVALID_PARAMETER);
                }
                // SAFETY: the buffer is a BOOL.
                unsafe { *(buffer as *mut BOOL) = if req.is_connected() { TRUE } else { FALSE } };
                TRUE
            }
            HSE_REQ_IS_KEEP_CONN => {
                if buffer.is_null() {
                    return fail(ERROR_INVALID_PARAMETER);
                }
                // SAFETY: the buffer is a BOOL.
                unsafe {
                    *(buffer as *mut BOOL) = if req.wants_keep_alive() { TRUE } else { FALSE }
                };
                TRUE
            }
            HSE_REQ_CANCEL_IO => {
                if req.cancel_io() {
                    TRUE
                } else {
                    fail(ERROR_INVALID_PARAMETER)
                }
            }
            HSE_REQ_CLOSE_CONNECTION | HSE_REQ_ABORTIVE_CLOSE => {
                if req.close_connection() {
                    TRUE
                } else {
                    fail(ERROR_INVALID_PARAMETER)
                }
            }
            HSE_REQ_IS_IN_PROCESS => {
                if buffer.is_null() {
                    return fail(ERROR_INVALID_PARAMETER);
                }
                // SAFETY: the buffer is a DWORD.
                unsafe {
                    *(buffer as *mut DWORD) = 0 /* HSE_APP_FLAG_IN_PROCESS */
                };
                TRUE
            }
            other => {
                req.unsupported(other);
                fail(ERROR_INVALID_PARAMETER)
            }
        }
    })
}
