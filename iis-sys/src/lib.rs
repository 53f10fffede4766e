//! The raw IIS interfaces, under their Windows names, in one place for both
//! IIS bindings and the IIS simulator: ISAPI's `httpext.h` ([`httpext`]),
//! the native-module interfaces of `httpserv.h` as vtable slots with the
//! `http.h` structures they use ([`native`]), and the layout tables every
//! struct is checked against ([`layout`]).
//!
//! Declarations only: nothing here calls IIS. Every struct's size and field
//! offsets are asserted at compile time for the target being built; the
//! tests check the same tables against mingw-w64's headers for x64 and x86
//! (`tests/httpext_layout.rs`, `tests/http_layout.rs`), and every vtable
//! slot against the ABI reference in `reference/` (`tests/slots.rs`).
//!
//! Unsafe code: none but `VTable`'s `Sync` (an immutable table of function
//! addresses); the `vcall!` and `member_defs!` macros expand to unsafe
//! operations in the binding that uses them.
#![deny(unsafe_code)]

pub mod httpext;
pub mod layout;
pub mod native;
