//! The one trait a host implements to run the suite.

use std::net::SocketAddr;

use http::{HeaderName, HeaderValue};
use kallithea_core::{BoxError, BoxFuture, Limits, PathBase};

/// What a host can do, so that the suite skips the cases a host cannot
/// serve (and says so) instead of failing them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Request and response bodies stream in both directions.
    pub streaming: bool,
    /// The host can report an authenticated [`Identity`](kallithea_core::Identity).
    pub identity: bool,
    /// HTTP/2 over cleartext TCP (prior knowledge) is served.
    pub http2_cleartext: bool,
    /// The host reports the request target only percent-decoded (an ISAPI
    /// host without `HTTP_URL`): a path that decoding changes cannot be
    /// preserved byte for byte, and the IIS hosts refuse a non-ASCII one
    /// (documented in `host_iis::mapping`). Cases that need the raw target
    /// are skipped.
    pub decoded_target_only: bool,
    /// The host learns that a client left only when a write to it fails
    /// (an ISAPI host whose `HSE_REQ_IS_CONNECTED` always says yes): an app
    /// that is not writing is cancelled at its next write, not at once.
    /// The case that needs the notice is skipped.
    pub silent_disconnects: bool,
    /// The host reports user names only in its code page (no `UNICODE_`
    /// forms): the IIS hosts refuse a non-ASCII name there (500), as the
    /// identity rules say. The case with a non-ASCII name is skipped.
    pub code_page_names_only: bool,
}

impl Capabilities {
    /// No capability.
    pub const fn none() -> Self {
        Capabilities {
            streaming: false,
            identity: false,
            http2_cleartext: false,
            decoded_target_only: false,
            silent_disconnects: false,
            code_page_names_only: false,
        }
    }

    /// With user names only in the code page (see the field).
    pub const fn code_page_names_only(mut self, yes: bool) -> Self {
        self.code_page_names_only = yes;
        self
    }

    /// With disconnects noticed only at a write (see the field).
    pub const fn silent_disconnects(mut self, yes: bool) -> Self {
        self.silent_disconnects = yes;
        self
    }

    /// With the target only decoded (see the field).
    pub const fn decoded_target_only(mut self, yes: bool) -> Self {
        self.decoded_target_only = yes;
        self
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

/// How the suite wants a host instance set up.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The limits the host's dispatcher must enforce.
    pub limits: Limits,
    /// Where the app is mounted (an IIS virtual directory, host-hyper's path base).
    pub path_base: PathBase,
    /// Put auth-container in front of the app, with its SQLite store at this
    /// path (see [`crate::dispatcher`]).
    pub container_auth: Option<std::path::PathBuf>,
}

impl Setup {
    /// The configuration file of the conformance app built as an IIS DLL
    /// (`tests/isapi-app`, `tests/native-app`) for this setup: two workers,
    /// the limits, and the auth-container store with its path as `path`
    /// writes it (as is, or as a Windows path for a DLL under Wine).
    pub fn dll_config(&self, path: impl Fn(&std::path::Path) -> String) -> String {
        let l = &self.limits;
        let body = match l.max_body_bytes {
            kallithea_core::ByteLimit::Unlimited => "\"unlimited\"".to_owned(),
            kallithea_core::ByteLimit::Bytes(n) => n.to_string(),
        };
        let mut config = format!(
            "worker_threads = 2\n[limits]\nmax_body_bytes = {body}\nmax_header_count = {}\nmax_header_bytes = {}\n",
            l.max_header_count, l.max_header_bytes
        );
        if let Some(store) = &self.container_auth {
            config.push_str(&format!("[app]\ncontainer_auth = {:?}\n", path(store)));
        }
        config
    }
}

/// Starts instances of one host serving the conformance app through
/// [`crate::dispatcher`], and tells the suite how to reach and probe them.
pub trait Driver: Send + Sync {
    /// The host's name in the report.
    fn name(&self) -> String;

    /// What the host can do; cases needing a missing capability are skipped.
    fn capabilities(&self) -> Capabilities;

    /// Starts a host instance serving [`crate::app`] with `setup`.
    fn start(&self, setup: Setup) -> BoxFuture<'_, Result<Box<dyn RunningApp>, BoxError>>;
}

/// One running host instance.
pub trait RunningApp: Send + Sync {
    /// Where clients connect (loopback).
    fn addr(&self) -> SocketAddr;

    /// The headers a client adds so that the host asserts `user` as the
    /// request's identity (the pairing secret and identity header for a trusted
    /// proxy; the simulated Windows authentication's header for the IIS
    /// simulator). Empty if the host cannot assert identities.
    fn identity_headers(&self, user: &str) -> Vec<(HeaderName, HeaderValue)>;

    /// The resident memory, in bytes, of the process that runs the app, for
    /// the flat-memory checks; `None` skips them.
    fn resident_memory(&self) -> Option<u64>;

    /// Stops the instance.
    fn stop(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// The resident set size of process `pid` (`self` for this one), from `/proc`.
pub fn resident_memory_of(pid: &str) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
