//! Runs a Kallithea framework app as an IIS ISAPI extension DLL.
//!
//! A `cdylib` crate exports the three functions IIS looks up with one macro:
//!
//! ```no_run
//! use std::convert::Infallible;
//!
//! use host_isapi::Startup;
//! use kallithea_core::{service_fn, Body, BoxError, Dispatcher};
//!
//! #[derive(serde::Deserialize)]
//! struct MySettings {
//!     greeting: String,
//! }
//!
//! fn make_app(startup: &Startup<'_>) -> Result<Dispatcher, BoxError> {
//!     // The `[app]` section of the configuration file beside the DLL.
//!     let settings: MySettings = startup.app_config()?;
//!     let greeting = settings.greeting;
//!     let app = service_fn(move |_req: http::Request<Body>| {
//!         let body = Body::from(greeting.clone());
//!         async move { Ok::<_, Infallible>(http::Response::new(body)) }
//!     });
//!     Ok(Dispatcher::builder(app)
//!         .limits(startup.config().limits.clone())
//!         .build())
//! }
//!
//! host_isapi::export!(make_app);
//! ```
//!
//! The crate is a binding on the in-process engine, `host-iis`, which it
//! shares with the native module (`host-iis-native`):
//!
//! - `GetExtensionVersion` reads the configuration beside the DLL
//!   ([`config`]), opens the log file, starts the engine's tokio runtime
//!   ([`runtime`]) and calls `make_app`. If the configuration or the app
//!   fails, the extension still loads: every request gets a page naming the
//!   failure (details only to clients on the server itself), the failure is
//!   logged, and start-up is retried with a growing back-off ([`startup`]).
//! - `HttpExtensionProc` maps the request from server variables
//!   (`host_iis::mapping`) and hands it to the engine (`host_iis::request`),
//!   which runs the app in the runtime's context: its
//!   first step (up to its first wait) on the IIS thread, the rest on the
//!   runtime's threads, with the call returning `HSE_STATUS_PENDING` as soon
//!   as the app waits ([`runtime`]; `first_step_on_iis_thread = false` hands
//!   every request to the runtime at once). The body is read with
//!   asynchronous reads as the app consumes it, the response goes out with
//!   `HSE_REQ_SEND_RESPONSE_HEADER_EX` and `WriteClient`s (asynchronous, but
//!   a short last piece synchronously). Every request ends exactly once: a
//!   request that finished inside the call by the call's return value,
//!   every other by `HSE_REQ_DONE_WITH_SESSION`. A client that leaves
//!   cancels the app's future.
//! - `TerminateExtension` drains in-flight requests for the configured time,
//!   cancels the rest, and stops the runtime.
//!
//! On 32-bit x86 the exported names must not carry stdcall decoration
//! (`_HttpExtensionProc@4`): call `kallithea_build::isapi_exports()` from the
//! crate's build script.
//!
//! The binary interface lives in [`ffi`]; it is the only module with
//! `unsafe` code. The request's way: `ffi::entry` (the exported functions,
//! each inside the engine's panic guard) → `session` (maps the ECB's
//! server variables, implements the engine's `IisRequest` over the ECB) →
//! `host_iis::request` (runs the app, streams the bodies, ends the session).
#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod ffi;
mod session;

pub use host_iis::{config, runtime, startup};
pub use host_iis::{Lifecycle, MakeApp, Startup, DEFAULT_LOG_FILTER};

/// The engine's lifecycle under its former name here (before the engine
/// served both bindings).
#[deprecated(note = "use `host_iis::Lifecycle` (re-exported as `host_isapi::Lifecycle`)")]
pub type Extension = Lifecycle;

/// Exports `GetExtensionVersion`, `HttpExtensionProc` and
/// `TerminateExtension` from the crate (a `cdylib`), serving the app that
/// `make_app` (a [`MakeApp`]) builds. An optional second argument is the
/// description IIS records (default: the crate's name).
#[macro_export]
macro_rules! export {
    ($make_app:expr) => {
        $crate::export!($make_app, ::core::env!("CARGO_PKG_NAME"));
    };
    ($make_app:expr, $description:expr) => {
        static __KALLITHEA_ISAPI_EXTENSION: $crate::Lifecycle =
            $crate::Lifecycle::new($make_app, $description);

        /// Called by IIS when it loads the extension.
        #[no_mangle]
        pub extern "system" fn GetExtensionVersion(
            version: *mut $crate::ffi::HSE_VERSION_INFO,
        ) -> $crate::ffi::BOOL {
            $crate::ffi::entry::get_extension_version(&__KALLITHEA_ISAPI_EXTENSION, version)
        }

        /// Called by IIS for every request.
        #[no_mangle]
        pub extern "system" fn HttpExtensionProc(
            ecb: *mut $crate::ffi::EXTENSION_CONTROL_BLOCK,
        ) -> $crate::ffi::DWORD {
            $crate::ffi::entry::http_extension_proc(&__KALLITHEA_ISAPI_EXTENSION, ecb)
        }

        /// Called by IIS before it unloads the extension.
        #[no_mangle]
        pub extern "system" fn TerminateExtension(flags: $crate::ffi::DWORD) -> $crate::ffi::BOOL {
            $crate::ffi::entry::terminate_extension(&__KALLITHEA_ISAPI_EXTENSION, flags)
        }
    };
}
