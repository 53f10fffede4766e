//! The ISAPI layouts and constants match mingw-w64's `httpext.h`, for x64 and
//! x86: C static assertions generated from `host_isapi::ffi::layout`, compiled
//! (not run) with the mingw-w64 cross compilers.

use std::path::PathBuf;
use std::process::Command;

use host_isapi::ffi::layout::{CONSTANTS, OFFSETS, SIZES};

#[derive(Clone, Copy)]
enum Arch {
    X64,
    X86,
}

impl Arch {
    fn compiler(self) -> &'static str {
        match self {
            Arch::X64 => "x86_64-w64-mingw32-gcc",
            Arch::X86 => "i686-w64-mingw32-gcc",
        }
    }

    fn pick(self, x64: usize, x86: usize) -> usize {
        match self {
            Arch::X64 => x64,
            Arch::X86 => x86,
        }
    }
}

/// The C source asserting every size, offset and constant for `arch`, plus
/// `extra` lines.
fn source(arch: Arch, extra: &str) -> String {
    let mut c = String::from("#include <windows.h>\n#include <httpext.h>\n#include <stddef.h>\n\n");
    for s in SIZES {
        let n = arch.pick(s.x64, s.x86);
        c += &format!(
            "_Static_assert(sizeof({ty}) == {n}, \"sizeof({ty}) is not {n}\");\n",
            ty = s.ty
        );
    }
    for o in OFFSETS {
        let n = arch.pick(o.x64, o.x86);
        c += &format!(
            "_Static_assert(offsetof({ty}, {f}) == {n}, \"offsetof({ty}, {f}) is not {n}\");\n",
            ty = o.ty,
            f = o.field
        );
    }
    for (name, value) in CONSTANTS {
        c += &format!("_Static_assert((DWORD)({name}) == {value}u, \"{name} is not {value}\");\n");
    }
    c += extra;
    c
}

/// Compiles `source` for `arch`; `Err` carries the compiler's complaints.
fn compile(arch: Arch, tag: &str, source: &str) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("isapi-layout-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file: PathBuf = dir.join(format!("{tag}.c"));
    std::fs::write(&file, source).unwrap();
    let out = Command::new(arch.compiler())
        .args(["-std=c11", "-c", "-o"])
        .arg(dir.join(format!("{tag}.o")))
        .arg(&file)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{} is needed for the layout check ({e}): apt-get install gcc-mingw-w64-x86-64 gcc-mingw-w64-i686 (scripts/test does it)",
                arch.compiler()
            )
        });
    let _ = std::fs::remove_dir_all(&dir);
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn layouts_and_constants_match_httpext_h_on_x64() {
    if let Err(e) = compile(Arch::X64, "x64", &source(Arch::X64, "")) {
        panic!("x64 layout differs from httpext.h:\n{e}");
    }
}

#[test]
fn layouts_and_constants_match_httpext_h_on_x86() {
    if let Err(e) = compile(Arch::X86, "x86", &source(Arch::X86, "")) {
        panic!("x86 layout differs from httpext.h:\n{e}");
    }
}

#[test]
fn a_wrong_expectation_is_caught() {
    // The check itself must be able to fail: one deliberately wrong offset.
    let wrong = "_Static_assert(offsetof(EXTENSION_CONTROL_BLOCK, lpbData) == 121, \"wrong on purpose\");\n";
    let err = compile(Arch::X86, "wrong", &source(Arch::X86, wrong)).unwrap_err();
    assert!(err.contains("wrong on purpose"), "{err}");
}

#[test]
fn the_table_covers_every_field_it_lists_once() {
    let mut seen = std::collections::HashSet::new();
    for o in OFFSETS {
        assert!(
            seen.insert((o.ty, o.field)),
            "{}.{} listed twice",
            o.ty,
            o.field
        );
        assert!(
            SIZES.iter().any(|s| s.ty == o.ty),
            "{} has offsets but no size",
            o.ty
        );
    }
    assert_eq!(
        OFFSETS
            .iter()
            .filter(|o| o.ty == "EXTENSION_CONTROL_BLOCK")
            .count(),
        17
    );
}
