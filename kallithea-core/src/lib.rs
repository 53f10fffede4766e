//! The host-independent core of the Kallithea host framework.
//!
//! A host adapter (`host-hyper`, `host-isapi`, `host-iis-native`) turns its
//! native request into an `http::Request<`[`Body`]`>` carrying the host's facts as
//! typed extensions — [`Identity`], [`ConnectionInfo`], [`PathBase`],
//! [`HostVariables`] — and hands it to the [`Dispatcher`], which applies
//! [`Limits`], runs the [`AuthChain`] of [`AuthPlugin`]s (which may attach a
//! [`User`]), isolates panics and calls the app: any `tower` service, such as an
//! axum `Router`. Apps and plugins read those facts through [`RequestExt`].
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod auth;
mod body;
mod connection;
mod dispatcher;
mod ext;
mod guard;
mod host;
mod host_vars;
mod identity;
mod limits;
mod path_base;
mod request_id;
mod service;
mod user;

pub mod config;
pub mod secret;

pub use auth::{AuthChain, AuthOutcome, AuthPlugin, BoxFuture, Rejection};
pub use body::{Body, BodyClosed, BodySender, IncompleteBody};
pub use connection::ConnectionInfo;
pub use dispatcher::{BodyPanicked, Dispatcher, DispatcherBuilder, ResponseBody, X_REQUEST_ID};
pub use ext::RequestExt;
pub use guard::{catch_unwind_future, panic_message};
pub use host::{HostError, ShutdownReport};
pub use host_vars::{DeferredVariables, HostVariables};
pub use identity::{AuthScheme, Identity, IdentitySource};
pub use limits::{ByteLimit, Limits};
pub use path_base::{InvalidPathBase, PathBase};
pub use request_id::RequestId;
pub use service::{service_fn, App, ServiceFn};
pub use user::User;

/// The boxed error type of bodies and apps.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
