//! Request limits applied the same way on every host.

use std::fmt;

use serde::{Deserialize, Deserializer};

use crate::config::{Issues, Validate};

/// Limits the dispatcher enforces on every request, whatever the host.
///
/// * a request whose headers exceed `max_header_count` or `max_header_bytes`
///   (names plus values) is answered `431 Request Header Fields Too Large`;
/// * a request whose `Content-Length` exceeds `max_body_bytes` is answered
///   `413 Content Too Large` without running the app; a body of unknown length
///   that grows past it ends with an [`http_body_util::LengthLimitError`] the app
///   sees when reading (axum answers 413 for it).
///
/// The defaults: a 30 000 000-byte body (IIS's `maxAllowedContentLength`), 100
/// header fields, and 64 KiB of header bytes (room for large Kerberos tickets).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// The largest request body, in bytes, or unlimited.
    pub max_body_bytes: ByteLimit,
    /// The most header fields a request may carry.
    pub max_header_count: usize,
    /// The most bytes of header names and values a request may carry.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: ByteLimit::Bytes(30_000_000),
            max_header_count: 100,
            max_header_bytes: 64 * 1024,
        }
    }
}

impl Limits {
    /// Limits with no cap on the body size.
    pub fn unlimited_body(self) -> Self {
        Limits {
            max_body_bytes: ByteLimit::Unlimited,
            ..self
        }
    }
}

impl Validate for Limits {
    fn validate(&self, issues: &mut Issues) {
        if self.max_header_count == 0 {
            issues.push("max_header_count", "must be at least 1");
        }
        if self.max_header_bytes < 1024 {
            issues.push(
                "max_header_bytes",
                "must be at least 1024: smaller values refuse ordinary browsers",
            );
        }
    }
}

/// A size limit: a number of bytes, or `"unlimited"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteLimit {
    /// At most this many bytes.
    Bytes(u64),
    /// No limit.
    Unlimited,
}

impl ByteLimit {
    /// The limit as a number, `None` when unlimited.
    pub fn get(self) -> Option<u64> {
        match self {
            ByteLimit::Bytes(n) => Some(n),
            ByteLimit::Unlimited => None,
        }
    }
}

impl fmt::Display for ByteLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ByteLimit::Bytes(n) => write!(f, "{n} bytes"),
            ByteLimit::Unlimited => f.write_str("unlimited"),
        }
    }
}

impl<'de> Deserialize<'de> for ByteLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)
            .map_err(|_| serde::de::Error::custom("expected a number of bytes or \"unlimited\""))?
        {
            Raw::N(n) => Ok(ByteLimit::Bytes(n)),
            Raw::S(s) if s.eq_ignore_ascii_case("unlimited") => Ok(ByteLimit::Unlimited),
            Raw::S(s) => Err(serde::de::Error::custom(format!(
                "expected a number of bytes or \"unlimited\", found {s:?}"
            ))),
        }
    }
}
