//! The engine's one call into the operating system: which file the running
//! code was loaded from (the DLL, whose folder holds its configuration).
//! The only module of the crate with `unsafe` code.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::path::PathBuf;

/// The file this code was loaded from (the extension or module DLL), if the loader says.
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
