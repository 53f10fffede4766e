//! The ISAPI layouts and constants match mingw-w64's `httpext.h`, for x64 and
//! x86: C static assertions generated from `iis_sys::httpext::layout`, compiled
//! (not run) with the mingw-w64 cross compilers.

use iis_sys::layout::mingw;

use iis_sys::httpext::layout::{CONSTANTS, OFFSETS, SIZES};
use mingw::Arch;

/// The C source asserting every size, offset and constant for `arch`, plus
/// `extra` lines.
fn source(arch: Arch, extra: &str) -> String {
    let mut c = String::from("#include <windows.h>\n#include <httpext.h>\n#include <stddef.h>\n\n");
    c += &mingw::layout_assertions(arch, SIZES, OFFSETS);
    for (name, value) in CONSTANTS {
        c += &format!("_Static_assert((DWORD)({name}) == {value}u, \"{name} is not {value}\");\n");
    }
    c += extra;
    c
}

fn compile(arch: Arch, tag: &str, source: &str) -> Result<(), String> {
    mingw::compile(arch, "isapi", tag, source)
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
