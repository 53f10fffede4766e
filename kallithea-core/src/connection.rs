//! Facts about the client connection.

use std::net::{IpAddr, SocketAddr};

/// The connection a request arrived on, as the host saw it.
///
/// Behind a trusted front proxy, `remote` is the client the proxy reported
/// (`X-Forwarded-For`) and `secure` what it reported for the client's leg
/// (`X-Forwarded-Proto`); otherwise they are the socket's own facts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The client's address.
    pub remote: SocketAddr,
    /// The server address the client connected to.
    pub local: SocketAddr,
    /// Whether the client's connection is encrypted (HTTPS).
    pub secure: bool,
    /// The paired front proxy the request came through, when the host verified
    /// one (host-hyper's trust mode: a listed address *and* the pairing
    /// secret). Plugins believe proxy-supplied headers only when this is set.
    pub proxy: Option<IpAddr>,
}
