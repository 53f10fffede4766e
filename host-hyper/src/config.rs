//! Configuration of a hyper-hosted app.

use std::net::SocketAddr;
use std::time::Duration;

use kallithea_core::config::{duration, Issues, Validate};
use kallithea_core::{Limits, PathBase};
use serde::Deserialize;

use crate::{NegotiateConfig, ProxyTrust};

/// Everything host-hyper reads from a configuration file.
///
/// ```toml
/// listen = "127.0.0.1:8080"
/// http2 = true
/// header_read_timeout = "30s"
/// drain_timeout = "30s"
/// path_base = "/"
///
/// [limits]
/// max_body_bytes = 30000000
///
/// [trust]                      # only behind IIS/Apache/nginx
/// proxies = ["127.0.0.1/32"]
/// secret = "a long random string shared with the proxy"
///
/// [negotiate]                  # Kerberos SSO, with the `negotiate` feature
/// keytab = "/etc/kallithea/http.keytab"
/// replay_cache_dir = "/var/lib/kallithea/rcache"
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HyperConfig {
    /// The address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Serve HTTP/2 over cleartext (prior knowledge) beside HTTP/1.1.
    #[serde(default = "yes")]
    pub http2: bool,
    /// How long a client may take to send its request headers.
    #[serde(default = "thirty_seconds", with = "duration")]
    pub header_read_timeout: Duration,
    /// How long in-flight requests may finish after a shutdown signal.
    #[serde(default = "thirty_seconds", with = "duration")]
    pub drain_timeout: Duration,
    /// The path the app is mounted at.
    #[serde(default)]
    pub path_base: PathBase,
    /// Request limits.
    #[serde(default)]
    pub limits: Limits,
    /// Front-proxy trust; absent means no request ever carries an identity.
    #[serde(default)]
    pub trust: Option<ProxyTrust>,
    /// host-hyper authenticates users itself with HTTP Negotiate (Kerberos).
    /// Every request must then carry a valid token; a front proxy's identity
    /// header is never believed, though its forwarding headers still are when
    /// `trust` is set.
    #[serde(default)]
    pub negotiate: Option<NegotiateConfig>,
}

impl Default for HyperConfig {
    fn default() -> Self {
        HyperConfig {
            listen: default_listen(),
            http2: true,
            header_read_timeout: thirty_seconds(),
            drain_timeout: thirty_seconds(),
            path_base: PathBase::root(),
            limits: Limits::default(),
            trust: None,
            negotiate: None,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn yes() -> bool {
    true
}

fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}

impl Validate for HyperConfig {
    fn validate(&self, issues: &mut Issues) {
        if self.header_read_timeout.is_zero() {
            issues.push("header_read_timeout", "must be longer than zero");
        }
        issues.nested("limits", &self.limits);
        if let Some(trust) = &self.trust {
            issues.nested("trust", trust);
        }
        if let Some(negotiate) = &self.negotiate {
            issues.nested("negotiate", negotiate);
        }
    }
}
