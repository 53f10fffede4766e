//! The contract of a host adapter.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use crate::Dispatcher;

/// What a host can do, so binaries and the conformance suite can tell hosts apart
/// without knowing them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Request and response bodies stream in both directions.
    pub streaming: bool,
    /// The host can report an authenticated [`Identity`](crate::Identity).
    pub identity: bool,
    /// HTTP/2 over cleartext TCP (prior knowledge) is served.
    pub http2_cleartext: bool,
}

impl Capabilities {
    /// No capability.
    pub const fn none() -> Self {
        Capabilities {
            streaming: false,
            identity: false,
            http2_cleartext: false,
        }
    }

    /// With streaming bodies.
    pub const fn streaming(mut self, yes: bool) -> Self {
        self.streaming = yes;
        self
    }

    /// With identity reporting.
    pub const fn identity(mut self, yes: bool) -> Self {
        self.identity = yes;
        self
    }

    /// With HTTP/2 over cleartext.
    pub const fn http2_cleartext(mut self, yes: bool) -> Self {
        self.http2_cleartext = yes;
        self
    }
}

/// A host adapter: something that receives HTTP requests from somewhere (a TCP
/// listener, IIS) and runs them through a [`Dispatcher`].
pub trait Host: Send + 'static {
    /// The handle of a started host.
    type Running: RunningHost;

    /// A short name (`hyper`, `isapi`, `iis-native`).
    fn name(&self) -> &'static str;

    /// What this host can do.
    fn capabilities(&self) -> Capabilities;

    /// Starts serving `dispatcher`; resolves once the host accepts requests.
    fn start(
        self,
        dispatcher: Dispatcher,
    ) -> impl Future<Output = Result<Self::Running, HostError>> + Send;
}

/// A host that is serving requests.
pub trait RunningHost: Send + 'static {
    /// Where clients reach the host, when it listens itself.
    fn local_addr(&self) -> Option<SocketAddr>;

    /// Stops accepting new requests, lets in-flight ones finish for at most
    /// `drain`, then ends the rest; reports what happened.
    fn shutdown(self, drain: Duration) -> impl Future<Output = ShutdownReport> + Send;
}

/// The outcome of a graceful shutdown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections (or requests, for hosts without connections) still open when
    /// shutdown began.
    pub in_flight: usize,
    /// Those ended forcibly when the drain deadline passed.
    pub aborted: usize,
    /// How long the drain took.
    pub elapsed: Duration,
}

/// A host could not start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Binding or another I/O step failed.
    #[error("{context}: {source}")]
    Io {
        /// What the host was doing.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// The host's configuration is unusable.
    #[error("invalid host configuration: {0}")]
    Config(String),
}
