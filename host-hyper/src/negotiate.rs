//! Windows-style single sign-on for host-hyper: HTTP Negotiate (SPNEGO,
//! RFC 4559) with Kerberos inside, accepted through the system's GSSAPI
//! library (MIT Kerberos) when the `negotiate` feature is on.
//!
//! Every request authenticates by itself: no identity is remembered per
//! connection, since a front proxy that pools connections would otherwise hand
//! one user's identity to the next. Only single-round exchanges are accepted
//! (Kerberos); a mechanism that needs a second round trip on the same
//! connection (NTLM) is refused with a log line.

use std::path::PathBuf;

use http::HeaderValue;
use kallithea_core::config::{Issues, Validate};
use serde::Deserialize;

#[cfg(all(feature = "negotiate", unix))]
mod gss;

/// The `[negotiate]` section: where the service's keys and replay cache live.
///
/// ```toml
/// [negotiate]
/// keytab = "/etc/kallithea/http.keytab"    # HTTP/host@REALM keys
/// replay_cache_dir = "/var/lib/kallithea/rcache"
/// ```
///
/// Without `principal`, every service key in the keytab is accepted: give the
/// server a keytab holding only its own `HTTP/` principal, or name it with
/// `principal = "HTTP@www.example.com"`. The Kerberos library's own settings
/// (realms, KDCs, clock skew) come from `krb5.conf` (`KRB5_CONFIG`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NegotiateConfig {
    /// The keytab with the service's keys.
    pub keytab: PathBuf,
    /// The folder for the replay cache (created if missing). Each accepted
    /// authenticator is recorded there so that a captured token cannot be
    /// used again.
    pub replay_cache_dir: PathBuf,
    /// Accept tickets for this service only: `HTTP@www.example.com` or
    /// `HTTP/www.example.com@EXAMPLE.COM`. Without it every key in the keytab
    /// is accepted, so a shared keytab (with `host/` keys, say) would let
    /// tickets for those services in too.
    #[serde(default)]
    pub principal: Option<String>,
}

impl NegotiateConfig {
    /// A configuration with these paths.
    pub fn new(keytab: impl Into<PathBuf>, replay_cache_dir: impl Into<PathBuf>) -> Self {
        NegotiateConfig {
            keytab: keytab.into(),
            replay_cache_dir: replay_cache_dir.into(),
            principal: None,
        }
    }

    /// Accepts tickets for `principal` only (see the field).
    pub fn principal(mut self, principal: impl Into<String>) -> Self {
        self.principal = Some(principal.into());
        self
    }
}

impl Validate for NegotiateConfig {
    fn validate(&self, issues: &mut Issues) {
        if !cfg!(all(feature = "negotiate", unix)) {
            issues.push("", NegotiateSetupError::Unavailable.to_string());
        }
        if self.keytab.as_os_str().is_empty() {
            issues.push("keytab", "must name the service's keytab file");
        }
        if self.replay_cache_dir.as_os_str().is_empty() {
            issues.push(
                "replay_cache_dir",
                "must name a folder for the replay cache",
            );
        }
        if let Some(p) = &self.principal {
            let (service, rest) = p.split_once(['@', '/']).unwrap_or((p, ""));
            if service.is_empty() || rest.is_empty() || p.contains(char::is_whitespace) {
                issues.push(
                    "principal",
                    format!("{p:?} is not a service name: write HTTP@host or HTTP/host@REALM"),
                );
            }
        }
    }
}

/// Why Negotiate could not be set up at start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NegotiateSetupError {
    /// This build has no GSSAPI support.
    #[error("Negotiate is configured but this build of host-hyper lacks it: build with the `negotiate` feature (Unix, MIT Kerberos: apt-get install libkrb5-dev libclang-dev pkg-config)")]
    Unavailable,
    /// The keytab cannot be read.
    #[error("cannot read the keytab {path}: {source}")]
    Keytab {
        /// The configured keytab.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The replay cache folder cannot be created or written.
    #[error("cannot use the replay cache folder {path}: {source}")]
    ReplayCache {
        /// The configured folder.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// GSSAPI refused to create acceptor credentials (no keys in the keytab,
    /// an unreadable `krb5.conf`…).
    #[error("no acceptor credentials from the keytab {path}: {message}")]
    Credentials {
        /// The configured keytab.
        path: PathBuf,
        /// GSSAPI's explanation.
        message: String,
    },
}

/// What a request's `Authorization` header amounted to.
#[derive(Debug)]
pub enum Negotiation {
    /// No Negotiate credentials: answer 401 with `WWW-Authenticate: Negotiate`.
    Challenge,
    /// The client proved who it is.
    Authenticated {
        /// The full Kerberos principal, e.g. `alice@EXAMPLE.TEST`.
        principal: String,
        /// The mutual-authentication token for the response's
        /// `WWW-Authenticate` header (`Negotiate <base64>`), when GSSAPI
        /// produced one.
        mutual: Option<HeaderValue>,
    },
    /// Credentials were presented and refused.
    Failed(NegotiateFailure),
}

/// A refused Negotiate token and why.
#[derive(Clone, Debug)]
pub struct NegotiateFailure {
    /// The kind of failure, for logs and metrics.
    pub kind: FailureKind,
    /// GSSAPI's explanation.
    pub message: String,
}

/// Why a Negotiate token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// The header is not `Negotiate <base64>`, or the token is not one.
    Malformed,
    /// The authenticator was seen before (a replayed token).
    Replay,
    /// The ticket is encrypted with a key version the keytab lacks (the
    /// service was re-keyed and the keytab not updated).
    KeyVersion,
    /// The keytab has no key for the ticket's service or encryption type.
    NoKey,
    /// The client's clock is too far from the server's.
    ClockSkew,
    /// The ticket has expired.
    Expired,
    /// The token failed its integrity check (wrong key, tampering).
    Integrity,
    /// The mechanism wanted another round trip (NTLM); not supported.
    MultiRound,
    /// An anonymous principal; never an application user.
    Anonymous,
    /// Anything else GSSAPI reported.
    Other,
}

impl FailureKind {
    /// A short stable name: `replay`, `key-version`…
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Malformed => "malformed",
            FailureKind::Replay => "replay",
            FailureKind::KeyVersion => "key-version",
            FailureKind::NoKey => "no-key",
            FailureKind::ClockSkew => "clock-skew",
            FailureKind::Expired => "expired",
            FailureKind::Integrity => "integrity",
            FailureKind::MultiRound => "multi-round",
            FailureKind::Anonymous => "anonymous",
            FailureKind::Other => "other",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The bare challenge, `WWW-Authenticate: Negotiate`.
pub fn challenge() -> HeaderValue {
    HeaderValue::from_static("Negotiate")
}

/// The Negotiate token of a request: `None` when it has none (no
/// `Authorization` header, or another scheme), `Some(Err)` when it is not
/// valid base64.
#[cfg(feature = "negotiate")]
pub fn negotiate_token(headers: &http::HeaderMap) -> Option<Result<Vec<u8>, NegotiateFailure>> {
    use base64::Engine;
    for value in headers.get_all(http::header::AUTHORIZATION) {
        let bytes = value.as_bytes();
        let Some(space) = bytes.iter().position(|&b| b == b' ') else {
            continue;
        };
        if !bytes[..space].eq_ignore_ascii_case(b"negotiate") {
            continue;
        }
        let token = bytes[space..].trim_ascii();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token)
            .ok()
            .filter(|t| !t.is_empty());
        return Some(decoded.ok_or_else(|| NegotiateFailure {
            kind: FailureKind::Malformed,
            message: "the Negotiate token is not base64".into(),
        }));
    }
    None
}

#[cfg(all(feature = "negotiate", unix))]
pub use acceptor::Negotiator;

#[cfg(all(feature = "negotiate", unix))]
mod acceptor {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::path::{Path, PathBuf};

    use base64::Engine;
    use http::{HeaderMap, HeaderValue};
    use libgssapi::context::{CtxFlags, SecurityContext, ServerCtx};
    use libgssapi::credential::Cred;

    use super::{
        negotiate_token, FailureKind, NegotiateConfig, NegotiateFailure, NegotiateSetupError,
        Negotiation,
    };

    /// The replay cache's file inside the configured folder.
    const RCACHE_FILE: &str = "kallithea-http.rcache2";

    /// Accepts Negotiate tokens with credentials acquired once at start.
    ///
    /// Cheap to share (`Arc`); [`Negotiator::accept`] may be called from many
    /// threads at once. It blocks on file I/O (keytab, replay cache): call it
    /// from `spawn_blocking`, as host-hyper does.
    #[derive(Clone)]
    pub struct Negotiator {
        cred: Cred,
        keytab: PathBuf,
    }

    impl std::fmt::Debug for Negotiator {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Negotiator")
                .field("keytab", &self.keytab)
                .finish_non_exhaustive()
        }
    }

    fn c_string(prefix: &str, path: &Path) -> Result<CString, std::io::Error> {
        let mut bytes = prefix.as_bytes().to_vec();
        bytes.extend_from_slice(path.as_os_str().as_bytes());
        CString::new(bytes).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the path contains a NUL character",
            )
        })
    }

    impl Negotiator {
        /// Reads the keytab and acquires acceptor credentials for Kerberos and
        /// SPNEGO, with the replay cache in the configured folder.
        pub fn new(config: &NegotiateConfig) -> Result<Self, NegotiateSetupError> {
            let keytab = std::path::absolute(&config.keytab).unwrap_or(config.keytab.clone());
            let file =
                std::fs::File::open(&keytab).map_err(|source| NegotiateSetupError::Keytab {
                    path: keytab.clone(),
                    source,
                })?;
            if let Ok(meta) = file.metadata() {
                use std::os::unix::fs::PermissionsExt;
                let mode = meta.permissions().mode();
                if mode & 0o077 != 0 {
                    // The keytab is the service's password.
                    tracing::warn!(keytab = %keytab.display(), mode = format_args!("{:o}", mode & 0o777), "the keytab can be read by other users: make it readable by the server's account only (chmod 600)");
                }
            }
            let dir = &config.replay_cache_dir;
            let replay_error = |source| NegotiateSetupError::ReplayCache {
                path: dir.clone(),
                source,
            };
            // Created for the server's account only.
            std::os::unix::fs::DirBuilderExt::mode(
                std::fs::DirBuilder::new().recursive(true),
                0o700,
            )
            .create(dir)
            .map_err(replay_error)?;
            let dir = std::path::absolute(dir).map_err(replay_error)?;
            let rcache_path = dir.join(RCACHE_FILE);
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&rcache_path)
                .map_err(replay_error)?;
            let keytab_c =
                c_string("FILE:", &keytab).map_err(|source| NegotiateSetupError::Keytab {
                    path: keytab.clone(),
                    source,
                })?;
            let rcache_c = c_string("file2:", &rcache_path).map_err(replay_error)?;
            let principal = config.principal.as_deref();
            let cred =
                super::gss::acquire_acceptor(&keytab_c, &rcache_c, principal).map_err(|e| {
                    NegotiateSetupError::Credentials {
                        path: keytab.clone(),
                        message: match principal {
                            Some(p) => format!("{e} (for the principal {p})"),
                            None => e.to_string(),
                        },
                    }
                })?;
            tracing::info!(keytab = %keytab.display(), replay_cache = %rcache_path.display(), principal = principal.unwrap_or("any in the keytab"), "Negotiate acceptor credentials acquired");
            Ok(Negotiator { cred, keytab })
        }

        /// The keytab the credentials came from.
        pub fn keytab(&self) -> &Path {
            &self.keytab
        }

        /// Authenticates one request from its headers.
        pub fn accept(&self, headers: &HeaderMap) -> Negotiation {
            let token = match negotiate_token(headers) {
                None => return Negotiation::Challenge,
                Some(Err(failure)) => return Negotiation::Failed(failure),
                Some(Ok(token)) => token,
            };
            let mut ctx = ServerCtx::new(Some(self.cred.clone()));
            let out = match ctx.step(&token, None) {
                Ok(out) => out,
                Err(e) => return Negotiation::Failed(failure(&e)),
            };
            if !ctx.open().unwrap_or(false) {
                return Negotiation::Failed(NegotiateFailure {
                    kind: FailureKind::MultiRound,
                    message: "the client's mechanism needs another round trip (NTLM?); only Kerberos is accepted".into(),
                });
            }
            if ctx
                .flags()
                .is_ok_and(|f| f.contains(CtxFlags::GSS_C_ANON_FLAG))
            {
                return Negotiation::Failed(NegotiateFailure {
                    kind: FailureKind::Anonymous,
                    message: "the client authenticated anonymously".into(),
                });
            }
            let principal = match ctx.source_name().and_then(|n| n.display_name()) {
                Ok(buf) => String::from_utf8_lossy(&buf).into_owned(),
                Err(e) => return Negotiation::Failed(failure(&e)),
            };
            let mutual = out.filter(|b| !b.is_empty()).and_then(|b| {
                let encoded = base64::engine::general_purpose::STANDARD.encode(&*b);
                HeaderValue::try_from(format!("Negotiate {encoded}")).ok()
            });
            Negotiation::Authenticated { principal, mutual }
        }
    }

    /// How MIT Kerberos words the failures that deserve their own name. The
    /// minor status codes cannot be compared instead: the GSSAPI mechanism
    /// glue remaps each mechanism's codes to process-local numbers, and only
    /// their text (com_err messages, plus the extended message the library
    /// attaches) survives. Checked in order; the first match wins.
    const KRB5_MESSAGES: &[(&str, FailureKind)] = &[
        ("request is a replay", FailureKind::Replay),
        ("clock skew too great", FailureKind::ClockSkew),
        ("keytab is likely out of date", FailureKind::KeyVersion),
        (
            "key version number for principal in key table is incorrect",
            FailureKind::KeyVersion,
        ),
        ("key version is not available", FailureKind::KeyVersion),
        ("ticket is likely out of date", FailureKind::KeyVersion),
        ("not found in keytab", FailureKind::NoKey),
        ("no key table entry found", FailureKind::NoKey),
        ("cannot find key of appropriate type", FailureKind::NoKey),
        ("ticket expired", FailureKind::Expired),
        ("integrity check failed", FailureKind::Integrity),
    ];

    fn failure(e: &libgssapi::error::Error) -> NegotiateFailure {
        let message = e.to_string();
        let lower = message.to_ascii_lowercase();
        let kind = KRB5_MESSAGES
            .iter()
            .find(|(text, _)| lower.contains(text))
            .map_or_else(
                || {
                    // GSS_S_DEFECTIVE_TOKEN: not a token GSSAPI can parse.
                    if e.major.bits() & 0x00ff_0000 == 0x0009_0000 {
                        FailureKind::Malformed
                    } else {
                        FailureKind::Other
                    }
                },
                |(_, kind)| *kind,
            );
        NegotiateFailure { kind, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_names_both_paths() {
        let cfg: NegotiateConfig =
            toml::from_str("keytab = \"/k/http.keytab\"\nreplay_cache_dir = \"/r\"\n").unwrap();
        assert_eq!(cfg.keytab, PathBuf::from("/k/http.keytab"));
        assert_eq!(cfg.replay_cache_dir, PathBuf::from("/r"));
        assert!(toml::from_str::<NegotiateConfig>("keytab = \"/k\"\n").is_err());
        assert!(toml::from_str::<NegotiateConfig>(
            "keytab = \"/k\"\nreplay_cache_dir = \"/r\"\nrealm = \"x\"\n"
        )
        .is_err());
        for (principal, ok) in [
            ("HTTP@www.example.com", true),
            ("HTTP/www.example.com@EXAMPLE.COM", true),
            ("HTTP", false),
            ("@host", false),
            ("HTTP@", false),
            ("HTTP @host", false),
        ] {
            let mut issues = Issues::default();
            NegotiateConfig::new("/k", "/r")
                .principal(principal)
                .validate(&mut issues);
            let flagged = issues.list().iter().any(|i| i.key == "principal");
            assert_eq!(flagged, !ok, "{principal}: {issues:?}");
        }

        let mut issues = Issues::default();
        NegotiateConfig::new("", "").validate(&mut issues);
        let text = format!("{:?}", issues.list());
        assert!(text.contains("keytab"), "{text}");
        assert!(text.contains("replay_cache_dir"), "{text}");
        let mut issues = Issues::default();
        NegotiateConfig::new("/k", "/r").validate(&mut issues);
        assert_eq!(
            issues.is_empty(),
            cfg!(all(feature = "negotiate", unix)),
            "{issues:?}"
        );
    }

    #[cfg(feature = "negotiate")]
    #[test]
    fn tokens_are_read_from_negotiate_authorization_headers_only() {
        let headers = |values: &[&str]| {
            let mut h = http::HeaderMap::new();
            for v in values {
                h.append(http::header::AUTHORIZATION, v.parse().unwrap());
            }
            h
        };
        assert!(negotiate_token(&headers(&[])).is_none());
        assert!(negotiate_token(&headers(&["Basic YTpi"])).is_none());
        assert!(negotiate_token(&headers(&["Negotiate"])).is_none());
        assert_eq!(
            negotiate_token(&headers(&["Negotiate YWJj"]))
                .unwrap()
                .unwrap(),
            b"abc"
        );
        assert_eq!(
            negotiate_token(&headers(&["Basic YTpi", "negotiate  YWJj "]))
                .unwrap()
                .unwrap(),
            b"abc"
        );
        for bad in ["Negotiate %%%", "Negotiate YW=Jj", "Negotiate  "] {
            let failure = negotiate_token(&headers(&[bad])).unwrap().unwrap_err();
            assert_eq!(failure.kind, FailureKind::Malformed, "{bad}");
        }
    }
}
