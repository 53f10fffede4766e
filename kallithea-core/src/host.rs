//! What hosts report when they stop or cannot start.

use std::time::Duration;

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
