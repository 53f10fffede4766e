//! The ISAPI binding's FFI: the raw declarations of `httpext.h` (from
//! `iis-sys`, shared with the native-module binding's neighbour crates and
//! the simulator), the calls through the ECB ([`ecb`](self)), and the three
//! exported entry points ([`entry`]). The only module of the crate with
//! `unsafe` code.
#![allow(unsafe_code)]

pub use iis_sys::httpext::*;

pub(crate) mod ecb;
pub mod entry;
