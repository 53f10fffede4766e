//! The three functions IIS calls, as the `export!` macro forwards them.
//!
//! Each one catches panics (nothing unwinds into IIS) and turns the raw
//! pointers IIS passes into safe values before the crate's logic sees them.

use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use super::ecb::Connection;
use super::*;
use crate::Extension;

/// Runs an entry point's body, turning a panic into `fallback` and a
/// `kallithea::panic` event naming `what`: nothing unwinds into IIS. Shared
/// with the native module's entry points.
pub fn guarded<T>(what: &str, fallback: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(p) => {
            tracing::error!(
                target: "kallithea::panic",
                panic = %kallithea_core::panic_message(p.as_ref()),
                "{what} panicked; IIS is told it failed"
            );
            fallback
        }
    }
}

/// `GetExtensionVersion`: reports the ISAPI version and the description, and
/// starts the extension. For the `export!` macro only: `version` must be what
/// IIS passes.
#[doc(hidden)]
#[allow(clippy::not_unsafe_ptr_arg_deref)]
pub fn get_extension_version(ext: &'static Extension, version: *mut HSE_VERSION_INFO) -> BOOL {
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
pub fn http_extension_proc(ext: &'static Extension, ecb: *mut EXTENSION_CONTROL_BLOCK) -> DWORD {
    guarded("HttpExtensionProc", HSE_STATUS_ERROR, || {
        // SAFETY: IIS passes the request's ECB, valid until the session ends.
        match unsafe { Connection::new(ecb) } {
            Some(conn) => ext.serve(conn),
            None => HSE_STATUS_ERROR,
        }
    })
}

/// `TerminateExtension`: drains and stops the extension. For the `export!`
/// macro only.
#[doc(hidden)]
pub fn terminate_extension(ext: &'static Extension, flags: DWORD) -> BOOL {
    guarded("TerminateExtension", TRUE, || {
        // The flag (HSE_TERM_MUST_UNLOAD or ADVISORY_UNLOAD) changes
        // nothing: the extension always drains and agrees to unload.
        let _ = flags;
        ext.terminate();
        TRUE
    })
}

/// The file this code was loaded from (the extension DLL), if the loader says.
pub fn module_path() -> Option<PathBuf> {
    module_path_impl()
}

#[cfg(unix)]
fn module_path_impl() -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: Dl_info is plain data; all-zero is a valid value to overwrite.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let here = module_path_impl as *const c_void;
    // SAFETY: dladdr only reads the address and fills `info`.
    let found = unsafe { libc::dladdr(here, &mut info) };
    if found == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dladdr returns a NUL-terminated path owned by the loader.
    let name = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) };
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(name.to_bytes())))
}

#[cfg(windows)]
fn module_path_impl() -> Option<PathBuf> {
    use std::os::windows::ffi::OsStringExt;
    const FROM_ADDRESS: u32 = 0x4;
    const UNCHANGED_REFCOUNT: u32 = 0x2;
    #[link(name = "kernel32")]
    extern "system" {
        fn GetModuleHandleExW(flags: u32, name: *const u16, module: *mut *mut c_void) -> i32;
        fn GetModuleFileNameW(module: *mut c_void, name: *mut u16, size: u32) -> u32;
    }
    let mut module = std::ptr::null_mut();
    let here = module_path_impl as *const u16;
    // SAFETY: with FROM_ADDRESS the name is an address inside the module;
    // UNCHANGED_REFCOUNT leaves nothing to release.
    if unsafe { GetModuleHandleExW(FROM_ADDRESS | UNCHANGED_REFCOUNT, here, &mut module) } == 0 {
        return None;
    }
    let mut buf = vec![0u16; 512];
    loop {
        // SAFETY: the buffer holds `buf.len()` UTF-16 units.
        let n = unsafe { GetModuleFileNameW(module, buf.as_mut_ptr(), buf.len() as u32) } as usize;
        if n == 0 {
            return None;
        }
        if n < buf.len() {
            buf.truncate(n);
            return Some(PathBuf::from(std::ffi::OsString::from_wide(&buf)));
        }
        if buf.len() >= 32_768 {
            return None;
        }
        buf.resize(buf.len() * 2, 0);
    }
}

#[cfg(not(any(unix, windows)))]
fn module_path_impl() -> Option<PathBuf> {
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_module_path_is_this_binary_outside_a_dll() {
        let path = super::module_path().expect("the loader knows this file");
        assert!(path.is_file(), "{path:?}");
    }
}
