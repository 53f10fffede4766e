//! The three functions IIS calls, as the `export!` macro forwards them.
//!
//! Each one catches panics (nothing unwinds into IIS) and turns the raw
//! pointers IIS passes into safe values before the crate's logic sees them.

use std::ffi::c_char;

use host_iis::{guarded, module_path, Lifecycle};

use super::ecb::Connection;
use super::*;

/// `GetExtensionVersion`: reports the ISAPI version and the description, and
/// starts the extension. For the `export!` macro only: `version` must be what
/// IIS passes.
#[doc(hidden)]
#[allow(clippy::not_unsafe_ptr_arg_deref)]
pub fn get_extension_version(ext: &'static Lifecycle, version: *mut HSE_VERSION_INFO) -> BOOL {
    guarded("GetExtensionVersion", FALSE, || {
        if version.is_null() {
            return FALSE;
        }
        // SAFETY: IIS passes a writable HSE_VERSION_INFO for the call.
        let info = unsafe { &mut *version };
        info.dwExtensionVersion = HSE_VERSION;
        let desc = ext.description().as_bytes();
        let n = desc.len().min(HSE_MAX_EXT_DLL_NAME_LEN - 1);
        for (dst, &src) in info.lpszExtensionDesc.iter_mut().zip(&desc[..n]) {
            *dst = src as c_char;
        }
        info.lpszExtensionDesc[n] = 0;
        if ext.start(module_path()) {
            TRUE
        } else {
            FALSE
        }
    })
}

/// `HttpExtensionProc`: hands the request to the extension's runtime. For the
/// `export!` macro only: `ecb` must be what IIS passes.
#[doc(hidden)]
#[allow(clippy::not_unsafe_ptr_arg_deref)]
pub fn http_extension_proc(ext: &'static Lifecycle, ecb: *mut EXTENSION_CONTROL_BLOCK) -> DWORD {
    guarded("HttpExtensionProc", HSE_STATUS_ERROR, || {
        // SAFETY: IIS passes the request's ECB, valid until the session ends.
        let Some(conn) = (unsafe { Connection::new(ecb) }) else {
            return HSE_STATUS_ERROR;
        };
        match ext.running() {
            Some(running) => crate::session::serve(&running, conn),
            // Not started, or terminated: IIS reports the failure itself.
            None => HSE_STATUS_ERROR,
        }
    })
}

/// `TerminateExtension`: drains and stops the extension. For the `export!`
/// macro only.
#[doc(hidden)]
pub fn terminate_extension(ext: &'static Lifecycle, flags: DWORD) -> BOOL {
    guarded("TerminateExtension", TRUE, || {
        // The flag (HSE_TERM_MUST_UNLOAD or ADVISORY_UNLOAD) changes
        // nothing: the extension always drains and agrees to unload.
        let _ = flags;
        ext.terminate();
        TRUE
    })
}
