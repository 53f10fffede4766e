//! Runs a Kallithea framework app as an IIS native module — the in-process
//! model IIS uses for its own modules and the ASP.NET Core Module uses for
//! in-process hosting.
//!
//! A `cdylib` crate exports `RegisterModule` with one macro, from the same
//! `make_app` an ISAPI extension uses:
//!
//! ```no_run
//! use std::convert::Infallible;
//!
//! use host_iis_native::Startup;
//! use kallithea_core::{service_fn, Body, BoxError, Dispatcher};
//!
//! fn make_app(startup: &Startup<'_>) -> Result<Dispatcher, BoxError> {
//!     let app = service_fn(|_req: http::Request<Body>| async {
//!         Ok::<_, Infallible>(http::Response::new(Body::from("hello")))
//!     });
//!     Ok(Dispatcher::builder(app)
//!         .limits(startup.config().limits.clone())
//!         .build())
//! }
//!
//! host_iis_native::export!(make_app);
//! ```
//!
//! - `RegisterModule` reads the configuration beside the DLL (the same file
//!   and format as the ISAPI extension: `host_iis::config`), starts the
//!   runtime and the app (a failed start serves error pages and retries, as
//!   the extension does), and registers a factory for
//!   `RQ_EXECUTE_REQUEST_HANDLER`.
//! - For each request IIS asks the factory for a `CHttpModule` and calls its
//!   `OnExecuteRequestHandler`, which maps the request (method, raw URL,
//!   headers and version from `HTTP_REQUEST`; connection facts and the
//!   mount point from server variables; the user from `IHttpUser`), runs its
//!   first step on the IIS thread and the rest on the runtime (as the ISAPI
//!   extension does, `first_step_on_iis_thread`), returning
//!   `RQ_NOTIFICATION_PENDING` when the app waits. The body is
//!   read with asynchronous `ReadEntityBody`, the response written with
//!   `SetStatus`, `SetHeader` and asynchronous `WriteEntityChunks`, each
//!   completion arriving through `OnAsyncCompletion`. The request ends with
//!   `RQ_NOTIFICATION_FINISH_REQUEST`: returned by the handler when the app
//!   finished before it returned, by `OnAsyncCompletion` when an operation
//!   was outstanding, and otherwise through `IndicateCompletion` from the
//!   runtime. IIS then calls `Dispose`.
//! - The factory's `Terminate` drains in-flight requests for the configured
//!   time, cancels the rest, and stops the runtime.
//!
//! On 32-bit x86 the export must not carry stdcall decoration
//! (`_RegisterModule@12`): call `kallithea_build::native_module_exports()`
//! from the crate's build script. The binary interface lives in [`ffi`],
//! the only module with `unsafe` code.
#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod ffi;
pub mod request;
mod session;

pub use host_iis::{Lifecycle, MakeApp, Startup};

/// The engine's lifecycle under the name this crate used before the engine
/// became its own crate.
#[deprecated(note = "use `host_iis::Lifecycle` (re-exported as `host_iis_native::Lifecycle`)")]
pub type Extension = Lifecycle;

/// Exports `RegisterModule` from the crate (a `cdylib`), serving the app
/// that `make_app` (a [`MakeApp`]) builds.
#[macro_export]
macro_rules! export {
    ($make_app:expr) => {
        static __KALLITHEA_IIS_MODULE: $crate::Lifecycle =
            $crate::Lifecycle::new($make_app, ::core::env!("CARGO_PKG_NAME"));

        /// Called by IIS when it loads the module.
        #[no_mangle]
        pub extern "system" fn RegisterModule(
            server_version: u32,
            info: *mut $crate::ffi::Object,
            server: *mut $crate::ffi::Object,
        ) -> i32 {
            $crate::ffi::module::register(&__KALLITHEA_IIS_MODULE, server_version, info, server)
        }
    };
}
