//! Front-proxy trust: when to believe identity and forwarding headers.
//!
//! A request's identity and forwarding headers are believed only when the
//! connection comes from a configured proxy address *and* carries the pairing
//! secret. Otherwise they, and every spelling of their names with `_` instead
//! of `-` (CGI-style servers map both to one variable), are removed before the
//! app sees the request.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderName, HeaderValue};
use kallithea_core::config::{Issues, Validate};
use kallithea_core::Identity;
use serde::Deserialize;

use crate::Cidr;

/// The header carrying the pairing secret, unless configured otherwise.
pub const DEFAULT_SECRET_HEADER: &str = "x-kallithea-pairing";
/// The header carrying the user name the proxy authenticated, unless configured
/// otherwise.
pub const DEFAULT_IDENTITY_HEADER: &str = "x-kallithea-user";

/// Headers that assert an identity or forwarding facts. They are removed from
/// every request that is not from a paired proxy, so that an app (or a naive
/// plugin) can never be fooled by a client sending them.
const POLICED: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-remote-user",
    "remote-user",
    "forwarded",
];

/// The framework's own identity and pairing headers: removed from every
/// request in every mode (no trust configured, or other names configured),
/// except the exact spellings a paired proxy sends under the configured names.
const DEFAULTS: &[&str] = &[DEFAULT_SECRET_HEADER, DEFAULT_IDENTITY_HEADER];

/// How host-hyper decides whether to believe a front proxy.
///
/// Both must hold: the peer address is in `proxies`, and the request carries
/// `secret_header` equal to `secret` (compared in constant time). A request
/// carrying a *wrong* secret is answered 400 and never reaches the app.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyTrust {
    /// Addresses of the front proxies (CIDR ranges).
    pub proxies: Vec<Cidr>,
    /// The shared pairing secret the proxy adds to every request (at least 16
    /// characters; generate a random one per deployment).
    pub secret: String,
    /// The header the secret arrives in.
    #[serde(default = "default_secret_header", with = "header_name")]
    pub secret_header: HeaderName,
    /// The header carrying the authenticated user name.
    #[serde(default = "default_identity_header", with = "header_name")]
    pub identity_header: HeaderName,
}

fn default_secret_header() -> HeaderName {
    HeaderName::from_static(DEFAULT_SECRET_HEADER)
}

fn default_identity_header() -> HeaderName {
    HeaderName::from_static(DEFAULT_IDENTITY_HEADER)
}

mod header_name {
    use http::HeaderName;
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HeaderName, D::Error> {
        let s = String::deserialize(d)?;
        HeaderName::from_bytes(s.as_bytes())
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a valid header name")))
    }
}

impl ProxyTrust {
    /// Trust `proxies` when they present `secret`, with the default header names.
    pub fn new(proxies: Vec<Cidr>, secret: impl Into<String>) -> Self {
        ProxyTrust {
            proxies,
            secret: secret.into(),
            secret_header: default_secret_header(),
            identity_header: default_identity_header(),
        }
    }

    /// Uses another header for the user name.
    pub fn identity_header(mut self, name: HeaderName) -> Self {
        self.identity_header = name;
        self
    }

    /// Uses another header for the pairing secret.
    pub fn secret_header(mut self, name: HeaderName) -> Self {
        self.secret_header = name;
        self
    }
}

impl fmt::Debug for ProxyTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyTrust")
            .field("proxies", &self.proxies)
            .field("secret", &"<redacted>")
            .field("secret_header", &self.secret_header)
            .field("identity_header", &self.identity_header)
            .finish()
    }
}

/// The shortest pairing secret accepted.
pub const MIN_SECRET_LEN: usize = 16;

impl Validate for ProxyTrust {
    fn validate(&self, issues: &mut Issues) {
        if self.proxies.is_empty() {
            issues.push(
                "proxies",
                "list at least one proxy address, e.g. [\"127.0.0.1/32\"]",
            );
        }
        if self.secret.trim().is_empty() {
            issues.push(
                "secret",
                "is empty: set a random pairing secret shared with the proxy",
            );
        } else if self.secret.len() < MIN_SECRET_LEN {
            issues.push(
                "secret",
                format!(
                    "is {} characters long; use at least {MIN_SECRET_LEN} random characters",
                    self.secret.len()
                ),
            );
        }
        if HeaderValue::from_str(&self.secret).is_err() {
            issues.push(
                "secret",
                "contains characters that cannot travel in an HTTP header",
            );
        }
        if same_cgi_name(self.secret_header.as_str(), self.identity_header.as_str()) {
            issues.push("identity_header", "must differ from secret_header");
        }
    }
}

/// What the trust check established about a request.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Forwarded {
    /// The identity the paired proxy asserted.
    pub identity: Option<Identity>,
    /// The client address the paired proxy reported.
    pub client: Option<SocketAddr>,
    /// Whether the paired proxy reported HTTPS on the client's leg.
    pub secure: Option<bool>,
    /// The paired proxy, when the request passed the trust check.
    pub proxy: Option<IpAddr>,
}

/// Applies the trust rule to a request's headers: removes what must not be
/// believed, and returns what can. `Err` carries the reason for a 400.
pub(crate) fn evaluate(
    trust: Option<&ProxyTrust>,
    headers: &mut HeaderMap,
    peer: IpAddr,
) -> Result<Forwarded, String> {
    let Some(trust) = trust else {
        strip(headers, DEFAULTS, None);
        return Ok(Forwarded::default());
    };
    let secret_header = trust.secret_header.as_str();
    let identity_header = trust.identity_header.as_str();
    let configured = [secret_header, identity_header];
    // The default names go too when others are configured: an app written
    // for the defaults must never see a client's copy.
    let framework = [
        secret_header,
        identity_header,
        DEFAULT_SECRET_HEADER,
        DEFAULT_IDENTITY_HEADER,
    ];

    // Every spelling of the secret header must carry the right secret.
    let mut presented = false;
    let mut wrong = false;
    for (name, value) in headers.iter() {
        if same_cgi_name(name.as_str(), secret_header) {
            presented = true;
            wrong |= !constant_time_eq(value.as_bytes(), trust.secret.as_bytes());
        }
    }
    let from_proxy = trust.proxies.iter().any(|net| net.contains(peer));
    if wrong {
        return Err("wrong pairing secret".to_owned());
    }
    if !(presented && from_proxy) {
        if presented {
            tracing::warn!(%peer, "pairing secret presented by an address that is not a trusted proxy; check trust.proxies, and rotate the secret if this peer should not know it");
        }
        strip(headers, &framework, None);
        return Ok(Forwarded::default());
    }

    // A paired proxy: believe the exact spellings it sends, drop the variants a
    // client might have smuggled through it, and never show the secret to the app.
    strip(headers, &framework, Some(&configured));
    headers.remove(&trust.secret_header);

    let mut forwarded = Forwarded {
        proxy: Some(peer),
        ..Forwarded::default()
    };
    let mut names = headers.get_all(&trust.identity_header).iter();
    if let Some(value) = names.next() {
        if names.next().is_some() {
            return Err(format!("more than one {identity_header} header"));
        }
        // HTTP's optional whitespace (space, tab) only: any other Unicode
        // space is part of the name, for the app's name rules to refuse.
        let name = std::str::from_utf8(value.as_bytes())
            .map_err(|_| format!("{identity_header} is not UTF-8"))?
            .trim_matches([' ', '\t']);
        if !name.is_empty() {
            forwarded.identity = Some(Identity::from_trusted_proxy(name, peer));
        }
    }
    if let Some(last) = last_list_item(headers, "x-forwarded-for") {
        match parse_forwarded_for(last) {
            Some(addr) => forwarded.client = Some(addr),
            None => {
                tracing::warn!(%peer, value = last, "ignoring unparseable X-Forwarded-For from the trusted proxy")
            }
        }
    }
    if let Some(last) = last_list_item(headers, "x-forwarded-proto") {
        forwarded.secure = Some(last.eq_ignore_ascii_case("https"));
    }
    Ok(forwarded)
}

/// Removes every spelling (`-` or `_`, any case) of the policed headers and
/// of `extra`. With `keep_exact`, a header spelled exactly as a policed name
/// or as one of `keep_exact` stays (a paired proxy's own headers).
fn strip(headers: &mut HeaderMap, extra: &[&str], keep_exact: Option<&[&str]>) {
    let doomed = |name: &HeaderName| {
        let name = name.as_str();
        let kept = keep_exact.is_some_and(|k| POLICED.contains(&name) || k.contains(&name));
        !kept && POLICED.iter().chain(extra).any(|p| same_cgi_name(name, p))
    };
    // Most requests carry none of these: look before allocating.
    if !headers.keys().any(doomed) {
        return;
    }
    let doomed: Vec<HeaderName> = headers.keys().filter(|n| doomed(n)).cloned().collect();
    for name in doomed {
        headers.remove(&name);
    }
}

/// Whether two lower-case header names become the same CGI variable (`-` and `_`
/// both map to `_`).
fn same_cgi_name(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes().zip(b.bytes()).all(|(x, y)| {
            x.eq_ignore_ascii_case(&y) || (matches!(x, b'-' | b'_') && matches!(y, b'-' | b'_'))
        })
}

/// Compares in time that depends on the lengths only, not on where the inputs
/// differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// The last comma-separated item over all values of `name` (the hop the trusted
/// proxy appended).
fn last_list_item<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .rfind(|s| !s.is_empty())
}

fn parse_forwarded_for(item: &str) -> Option<SocketAddr> {
    if let Ok(addr) = item.parse::<SocketAddr>() {
        return Some(addr);
    }
    let ip = item.trim_start_matches('[').trim_end_matches(']');
    ip.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef-secret";

    fn trust() -> ProxyTrust {
        ProxyTrust::new(vec!["127.0.0.1/32".parse().unwrap()], SECRET)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| {
                (
                    HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    const PROXY: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const STRANGER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    #[test]
    fn paired_proxy_identity_and_forwarding_are_believed() {
        let mut h = headers(&[
            ("x-kallithea-pairing", SECRET),
            ("x-kallithea-user", "EXAMPLE\\alice"),
            ("x-forwarded-for", "203.0.113.9, 198.51.100.2:4431"),
            ("x-forwarded-proto", "https"),
        ]);
        let f = evaluate(Some(&trust()), &mut h, PROXY).unwrap();
        assert_eq!(
            f.identity,
            Some(Identity::from_trusted_proxy("EXAMPLE\\alice", PROXY))
        );
        assert_eq!(f.client, Some("198.51.100.2:4431".parse().unwrap()));
        assert_eq!(f.secure, Some(true));
        assert_eq!(f.proxy, Some(PROXY));
        assert!(
            !h.contains_key("x-kallithea-pairing"),
            "the secret must not reach the app"
        );
        assert!(h.contains_key("x-kallithea-user"));
    }

    #[test]
    fn right_secret_from_a_stranger_is_not_believed() {
        let mut h = headers(&[
            ("x-kallithea-pairing", SECRET),
            ("x-kallithea-user", "alice"),
            ("x-forwarded-for", "1.2.3.4"),
        ]);
        let f = evaluate(Some(&trust()), &mut h, STRANGER).unwrap();
        assert_eq!(f, Forwarded::default());
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn proxy_address_without_secret_is_not_believed() {
        let mut h = headers(&[
            ("x-kallithea-user", "alice"),
            ("x_kallithea_user", "alice"),
            ("remote-user", "alice"),
        ]);
        let f = evaluate(Some(&trust()), &mut h, PROXY).unwrap();
        assert_eq!(f, Forwarded::default());
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn wrong_secret_is_refused_from_anywhere() {
        for peer in [PROXY, STRANGER] {
            let mut h = headers(&[("x-kallithea-pairing", "0123456789abcdef-secreT")]);
            assert!(evaluate(Some(&trust()), &mut h, peer).is_err());
            let mut h = headers(&[
                ("x-kallithea-pairing", SECRET),
                ("x_kallithea_pairing", "guess"),
            ]);
            assert!(evaluate(Some(&trust()), &mut h, peer).is_err());
        }
    }

    #[test]
    fn underscore_spellings_are_dropped_even_from_a_paired_proxy() {
        let mut h = headers(&[
            ("x-kallithea-pairing", SECRET),
            ("x_kallithea_user", "mallory"),
            ("x_forwarded_for", "6.6.6.6"),
        ]);
        let f = evaluate(Some(&trust()), &mut h, PROXY).unwrap();
        assert_eq!(f.identity, None);
        assert_eq!(f.client, None);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn without_trust_every_policed_header_goes() {
        let mut h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("X_Forwarded_Proto", "https"),
            ("remote_user", "mallory"),
            ("forwarded", "for=1.2.3.4"),
            ("accept", "*/*"),
        ]);
        assert_eq!(evaluate(None, &mut h, PROXY).unwrap(), Forwarded::default());
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn without_trust_the_framework_s_own_headers_go_too() {
        let mut h = headers(&[
            ("x-kallithea-user", "EXAMPLE\\alice"),
            ("x_kallithea_user", "EXAMPLE\\alice"),
            ("x-kallithea-pairing", "guess"),
            ("accept", "*/*"),
        ]);
        assert_eq!(evaluate(None, &mut h, PROXY).unwrap(), Forwarded::default());
        assert_eq!(h.len(), 1, "{h:?}");
    }

    #[test]
    fn with_other_header_names_the_default_ones_are_dropped() {
        let trust = trust()
            .identity_header(HeaderName::from_static("x-remote-ident"))
            .secret_header(HeaderName::from_static("x-proxy-key"));
        let mut h = headers(&[
            ("x-proxy-key", SECRET),
            ("x-remote-ident", "EXAMPLE\\alice"),
            ("x-kallithea-user", "EXAMPLE\\mallory"),
            ("x-kallithea-pairing", "guess"),
            ("x-forwarded-for", "203.0.113.1"),
        ]);
        let f = evaluate(Some(&trust), &mut h, PROXY).unwrap();
        assert_eq!(f.client, Some("203.0.113.1:0".parse().unwrap()));
        assert_eq!(
            f.identity,
            Some(Identity::from_trusted_proxy("EXAMPLE\\alice", PROXY))
        );
        assert!(!h.contains_key("x-kallithea-user"), "{h:?}");
        assert!(!h.contains_key("x-kallithea-pairing"), "{h:?}");
    }

    #[test]
    fn only_http_whitespace_is_trimmed_from_the_identity() {
        for (sent, kept) in [
            ("  EXAMPLE\\alice\t", "EXAMPLE\\alice"),
            ("EXAMPLE\\alice\u{a0}", "EXAMPLE\\alice\u{a0}"),
            ("\u{3000}EXAMPLE\\alice", "\u{3000}EXAMPLE\\alice"),
        ] {
            let mut h = HeaderMap::new();
            h.insert("x-kallithea-pairing", HeaderValue::from_static(SECRET));
            h.insert(
                "x-kallithea-user",
                HeaderValue::from_bytes(sent.as_bytes()).unwrap(),
            );
            let f = evaluate(Some(&trust()), &mut h, PROXY).unwrap();
            assert_eq!(f.identity, Some(Identity::from_trusted_proxy(kept, PROXY)));
        }
    }

    #[test]
    fn two_identity_headers_are_refused() {
        let mut h = headers(&[("x-kallithea-pairing", SECRET), ("x-kallithea-user", "a")]);
        h.append("x-kallithea-user", HeaderValue::from_static("b"));
        assert!(evaluate(Some(&trust()), &mut h, PROXY).is_err());
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn short_secrets_and_empty_proxy_lists_fail_validation() {
        let mut issues = Issues::default();
        ProxyTrust::new(vec![], "short").validate(&mut issues);
        let keys: Vec<_> = issues.list().iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["proxies", "secret"]);
    }
}
