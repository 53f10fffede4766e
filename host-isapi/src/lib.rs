//! Runs a Kallithea framework app as an IIS ISAPI extension DLL.
//!
//! Status: the binary interface (`ffi`: `EXTENSION_CONTROL_BLOCK` and
//! friends, the `HSE_*` constants), with layouts checked for x64 and x86
//! against mingw-w64's `httpext.h`; the extension's runtime with exactly-once
//! request completion and a bounded drain ([`runtime`]); configuration beside
//! the DLL ([`config`]); start-up failure pages and retry back-off
//! ([`startup`]). The request mapping
//! lives in `kallithea_core::cgi`. The `export!` macro, the ECB adapter and
//! the IIS simulator follow (issue 4).
#![warn(missing_docs)]

pub mod config;
pub mod ffi;
pub mod runtime;
pub mod startup;
