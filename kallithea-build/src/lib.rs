//! Build-script helpers for the DLLs IIS loads.
//!
//! On 32-bit x86 Windows, `extern "system"` functions are stdcall, and their
//! symbols carry the decoration `_Name@N`. IIS looks the entry points up by
//! their plain names, so the DLL must export `HttpExtensionProc`, not
//! `HttpExtensionProc@4`. Call the matching function from the `cdylib`
//! crate's `build.rs`:
//!
//! ```text
//! // build.rs
//! fn main() {
//!     kallithea_build::isapi_exports();
//! }
//! ```
//!
//! Other targets need nothing, and the functions do nothing there.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

use std::path::PathBuf;

/// The ISAPI extension's entry points and their argument sizes on x86.
pub const ISAPI_EXPORTS: &[(&str, u32)] = &[
    ("GetExtensionVersion", 4),
    ("HttpExtensionProc", 4),
    ("TerminateExtension", 4),
];

/// The native module's entry point and its argument size on x86.
pub const NATIVE_MODULE_EXPORTS: &[(&str, u32)] = &[("RegisterModule", 12)];

/// Exports the ISAPI entry points undecorated.
pub fn isapi_exports() {
    undecorated_exports("kallithea-isapi", ISAPI_EXPORTS);
}

/// Exports the native module's entry point undecorated.
pub fn native_module_exports() {
    undecorated_exports("kallithea-iis", NATIVE_MODULE_EXPORTS);
}

/// The module-definition file that maps each plain name to its stdcall
/// symbol.
pub fn def_file(library: &str, exports: &[(&str, u32)]) -> String {
    let mut def = format!("LIBRARY {library}\nEXPORTS\n");
    for (name, bytes) in exports {
        def.push_str(&format!("    {name} = _{name}@{bytes}\n"));
    }
    def
}

fn undecorated_exports(library: &str, exports: &[(&str, u32)]) {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") != "windows" || var("CARGO_CFG_TARGET_ARCH") != "x86" {
        return;
    }
    if var("CARGO_CFG_TARGET_ENV") == "msvc" {
        // link.exe takes a module-definition file.
        let out = PathBuf::from(var("OUT_DIR")).join(format!("{library}.def"));
        std::fs::write(&out, def_file(library, exports))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
        println!("cargo:rustc-cdylib-link-arg=/DEF:{}", out.display());
    } else {
        // GNU ld strips the @N suffix from exported names.
        println!("cargo:rustc-cdylib-link-arg=-Wl,--kill-at");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_def_file_maps_plain_names_to_stdcall_symbols() {
        let def = def_file("portal", ISAPI_EXPORTS);
        assert!(def.starts_with("LIBRARY portal\nEXPORTS\n"));
        assert!(def.contains("    HttpExtensionProc = _HttpExtensionProc@4\n"));
        assert_eq!(def.lines().count(), 5);
    }
}
