//! The `http.h` layouts and constants the native module uses match
//! mingw-w64's `http.h` (with `windows.h`, for Vista and later, where
//! `HTTP_REQUEST` is `HTTP_REQUEST_V2`), for x64 and x86: C static
//! assertions generated from `iis_sys::native::layout`, compiled (not
//! run) with the mingw-w64 cross compilers.

use iis_sys::layout::mingw;

use iis_sys::native::layout::{CONSTANTS, OFFSETS, SIZES};
use mingw::Arch;

/// The C source asserting every size, offset and constant for `arch`, plus
/// `extra` lines.
fn source(arch: Arch, extra: &str) -> String {
    let mut c = String::from(
        "#define _WIN32_WINNT 0x0600\n#include <windows.h>\n#include <http.h>\n#include <stddef.h>\n\n",
    );
    // The crate's HTTP_REQUEST is the V2 struct that IIS 7+ hands out.
    c += "_Static_assert(sizeof(HTTP_REQUEST) == sizeof(HTTP_REQUEST_V2), \"HTTP_REQUEST is V2\");\n";
    c += &mingw::layout_assertions(arch, SIZES, OFFSETS);
    for (name, value) in CONSTANTS {
        c += &format!(
            "_Static_assert((long long)({name}) == {value}LL, \"{name} is not {value}\");\n"
        );
    }
    c += extra;
    c
}

fn compile(arch: Arch, tag: &str, source: &str) -> Result<(), String> {
    mingw::compile(arch, "native", tag, source)
}

#[test]
fn layouts_and_constants_match_http_h_on_x64() {
    if let Err(e) = compile(Arch::X64, "x64", &source(Arch::X64, "")) {
        panic!("x64 layout differs from http.h:\n{e}");
    }
}

#[test]
fn layouts_and_constants_match_http_h_on_x86() {
    if let Err(e) = compile(Arch::X86, "x86", &source(Arch::X86, "")) {
        panic!("x86 layout differs from http.h:\n{e}");
    }
}

#[test]
fn a_wrong_expectation_is_caught() {
    // The check itself must be able to fail: one deliberately wrong offset.
    let wrong = "_Static_assert(offsetof(HTTP_REQUEST, pRawUrl) == 52, \"wrong on purpose\");\n";
    let err = compile(Arch::X64, "wrong", &source(Arch::X64, wrong)).unwrap_err();
    assert!(err.contains("wrong on purpose"), "{err}");
}

#[test]
fn the_table_matches_the_reference_layouts() {
    // reference/http_h_layouts.tsv lists the same facts,
    // computed from the same header: every size and offset the crate
    // states must agree with it where the reference has the row.
    let text = common::reference("http_h_layouts.tsv");
    let rows: std::collections::HashMap<String, (usize, usize)> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split('\t');
            // "sizeof HTTP_REQUEST_V2 [HTTP_REQUEST]", "… (V2)",
            // "KnownHeaders[41]": the bare name is the key.
            let item = f.next()?;
            let item = item.split([' ', '[']).take(2).collect::<Vec<_>>();
            let item = match item.as_slice() {
                ["sizeof", ty] => format!("sizeof {ty}"),
                [first, ..] => (*first).to_owned(),
                [] => return None,
            };
            let x64 = f.next()?.trim().parse().ok()?;
            let x86 = f.next()?.trim().parse().ok()?;
            Some((item, (x64, x86)))
        })
        .collect();
    let reference_name = |ty: &str| {
        if ty == "HTTP_REQUEST" {
            "HTTP_REQUEST_V2".to_owned()
        } else {
            ty.to_owned()
        }
    };
    let mut matched = 0;
    for s in SIZES {
        if let Some(&(x64, x86)) = rows.get(format!("sizeof {}", reference_name(s.ty)).as_str()) {
            assert_eq!((s.x64, s.x86), (x64, x86), "sizeof {}", s.ty);
            matched += 1;
        }
    }
    for o in OFFSETS {
        let key = format!("{}.{}", o.ty, o.field);
        if let Some(&(x64, x86)) = rows.get(key.as_str()) {
            assert_eq!((o.x64, o.x86), (x64, x86), "{key}");
            matched += 1;
        }
    }
    assert!(
        matched >= 45,
        "only {matched} sizes and offsets found in the reference table"
    );
}

mod common;
