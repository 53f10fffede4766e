//! The in-process IIS engine: what an app needs inside an IIS worker process,
//! whichever binding loaded it.
//!
//! `host-isapi` (an ISAPI extension) and `host-iis-native` (a native module)
//! are thin bindings beside each other on this crate: each turns its
//! server's calls into this engine's terms and nothing else. Users write one
//! line, `host_isapi::export!(make_app)` or `host_iis_native::export!(make_app)`,
//! with a [`MakeApp`] that reads its settings through [`Startup`].
//!
//! - [`Lifecycle`]: the app's life in the process — start-up (the
//!   [`config`] file beside the DLL, the log, the [`runtime`], `make_app`),
//!   start-up failures answered with a page and retried ([`startup`]), and
//!   termination with a drain.
//! - [`request`]: one request as a binding drives it through IIS — the
//!   [`IisRequest`](request::IisRequest) trait a binding implements, and the
//!   engine that runs the app's future for it, streams both bodies and ends
//!   the request with the server exactly once.
//! - [`mapping`], [`variables`], [`head`]: the request as IIS describes it
//!   (server variables, the raw header block) turned into the core's
//!   request and facts, and the response's status and headers in IIS's
//!   text forms.
//! - [`guarded`]: the panic guard around every entry point and callback.
//!
//! The raw declarations both bindings use, and their layout tables, are in
//! `iis-sys`.
//!
//! The crate's only `unsafe` code is in `ffi` (asking the loader which file
//! the DLL is).
#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod config;
mod ffi;
mod guard;
pub mod head;
mod lifecycle;
pub mod mapping;
pub mod request;
pub mod runtime;
mod sessions;
pub mod startup;
pub mod variables;

pub use ffi::module_path;
pub use guard::guarded;
pub use lifecycle::{Lifecycle, MakeApp, Running, Startup, DEFAULT_LOG_FILTER};
pub use sessions::SessionGuard;
