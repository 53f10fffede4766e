//! Serves a Kallithea framework app with hyper: HTTP/1.1 and HTTP/2 (prior
//! knowledge), keep-alive, streaming bodies both ways, graceful shutdown on
//! SIGTERM / Ctrl-C, a header read timeout against slow clients, and the core's
//! limits.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! # let app = kallithea_core::service_fn(|_| async { Ok::<_, std::convert::Infallible>(http::Response::new(kallithea_core::Body::from("hi"))) });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! host_hyper::serve(listener, app).await;
//! # Ok(()) }
//! ```
//!
//! By default no request carries an [`Identity`](kallithea_core::Identity):
//! hyper faces clients directly and cannot authenticate them. Behind IIS,
//! Apache or nginx, [`ProxyTrust`] believes the proxy's identity and
//! `X-Forwarded-*` headers when the connection comes from a listed address *and*
//! carries the pairing secret; in every other case those headers are removed.
//!
//! With the `negotiate` feature (Unix, MIT Kerberos), host-hyper authenticates
//! browsers itself with HTTP Negotiate / Kerberos single sign-on: see
//! [`NegotiateConfig`] and [`Server::negotiate`].
#![warn(missing_docs)]
#![deny(unsafe_code)]

mod cidr;
mod config;
pub mod negotiate;
mod request;
mod server;
mod signal;
mod trust;
mod watchdog;

pub use cidr::{Cidr, InvalidCidr};
pub use config::HyperConfig;
#[cfg(all(feature = "negotiate", unix))]
pub use negotiate::Negotiator;
pub use negotiate::{NegotiateConfig, NegotiateSetupError};
pub use server::{RunningServer, Serve, Server};
pub use signal::shutdown_signal;
pub use trust::{ProxyTrust, DEFAULT_IDENTITY_HEADER, DEFAULT_SECRET_HEADER, MIN_SECRET_LEN};

use kallithea_core::{App, Dispatcher};
use tokio::net::TcpListener;

/// Serves `app` on `listener` with the default [`Server`] settings and a default
/// [`Dispatcher`] until Ctrl-C or SIGTERM, then drains in-flight requests.
pub fn serve(listener: TcpListener, app: impl App) -> Serve {
    Server::new().serve(listener, Dispatcher::new(app))
}
