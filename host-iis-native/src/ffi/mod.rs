//! The native-module binding's FFI: the raw interfaces (from `iis-sys`,
//! shared with the simulator), the calls into IIS's per-request objects
//! (`context`), and the objects the module hands IIS — `RegisterModule`, the
//! factory, one `CHttpModule` per request ([`module`]). The only module of
//! the crate with `unsafe` code.
#![allow(unsafe_code)]

pub use iis_sys::native::*;
pub(crate) use iis_sys::{member_defs, vcall};

pub(crate) mod context;
pub mod module;
