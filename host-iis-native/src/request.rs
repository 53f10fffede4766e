//! The request head as IIS parsed it, mapped to the core's request parts.

use std::ops::Range;

use bytes::Bytes;
use host_iis::mapping::{HostFacts, MappingError};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use kallithea_core::Identity;

/// What the module reads from `IHttpRequest` and `HTTP_REQUEST`.
///
/// The method, the raw URL and the headers are copied out of IIS's buffers
/// into one block (one allocation), which the request's URI and header
/// values then share.
#[derive(Debug, Clone, Default)]
pub struct RawHead {
    /// The method, the raw URL, the header values and the unknown headers'
    /// names, one after the other.
    block: Vec<u8>,
    method: Range<usize>,
    raw_url: Range<usize>,
    headers: Vec<(RawName, Range<usize>)>,
    /// The cooked URL's absolute path (decoded by HTTP.sys), read only when
    /// the raw URL is not in origin form (the target then comes from it).
    pub cooked_path: String,
    /// The cooked URL's query, with its `?` (as [`cooked_path`](Self::cooked_path)).
    pub cooked_query: String,
    /// Major and minor protocol version.
    pub version: (u16, u16),
    /// `GetRemainingEntityBytes`.
    pub remaining: u32,
}

/// A header's name: one of the names HTTP.sys knows (static), or the bytes
/// the client sent, in the block.
#[derive(Debug, Clone)]
enum RawName {
    Known(&'static str),
    Unknown(Range<usize>),
}

impl RawHead {
    /// A head with `method` and the raw URL, room for `capacity` more bytes
    /// of headers, and no headers yet.
    pub fn new(method: &[u8], raw_url: &[u8], capacity: usize) -> RawHead {
        let mut block = Vec::with_capacity(method.len() + raw_url.len() + capacity);
        block.extend_from_slice(method);
        block.extend_from_slice(raw_url);
        RawHead {
            method: 0..method.len(),
            raw_url: method.len()..block.len(),
            block,
            ..RawHead::default()
        }
    }

    /// The method as IIS gave it.
    pub fn method(&self) -> &[u8] {
        &self.block[self.method.clone()]
    }

    /// `pRawUrl`: the target exactly as the client sent it.
    pub fn raw_url(&self) -> &[u8] {
        &self.block[self.raw_url.clone()]
    }

    /// Adds a header HTTP.sys knows by name (`name` in lower case, as in
    /// [`REQUEST_HEADER_NAMES`](crate::ffi::REQUEST_HEADER_NAMES)).
    pub fn push_known(&mut self, name: &'static str, value: &[u8]) {
        let at = self.block.len();
        self.block.extend_from_slice(value);
        self.headers
            .push((RawName::Known(name), at..self.block.len()));
    }

    /// Adds a header by the name the client sent.
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        let at = self.block.len();
        self.block.extend_from_slice(name);
        let name = at..self.block.len();
        self.block.extend_from_slice(value);
        self.headers
            .push((RawName::Unknown(name.clone()), name.end..self.block.len()));
    }
}

/// What `IHttpUser` says about the authenticated user.
#[derive(Debug, Clone, Default)]
pub struct RawUser {
    /// `GetUserName` (`DOMAIN\user` for Windows authentication).
    pub name: String,
    /// `GetAuthenticationType` (`Negotiate`, `NTLM`, `Basic`, …).
    pub scheme: String,
}

fn invalid(name: &'static str, why: impl Into<String>) -> MappingError {
    MappingError::Invalid {
        name,
        why: why.into(),
    }
}

/// The request target: the raw URL (sharing `block`) when it is in origin
/// form; otherwise (absolute form, or none) the cooked path and query.
fn target(head: &RawHead, block: &Bytes) -> Result<Uri, MappingError> {
    let raw = &block[head.raw_url.clone()];
    if raw.first() == Some(&b'/') {
        return Uri::from_maybe_shared(block.slice(head.raw_url.clone()))
            .map_err(|e| invalid("pRawUrl", e.to_string()));
    }
    if let Ok(uri) = Uri::try_from(raw) {
        if let Some(pq) = uri.path_and_query() {
            return Uri::try_from(pq.as_str()).map_err(|e| invalid("pRawUrl", e.to_string()));
        }
    }
    // HTTP.sys decoded the path: what a URI may not hold is encoded again
    // (a `%` of the path included; the query is as the client sent it).
    let mut cooked = String::with_capacity(head.cooked_path.len() + head.cooked_query.len());
    encode_into(&mut cooked, &head.cooked_path, b"%");
    encode_into(&mut cooked, &head.cooked_query, b"");
    Uri::try_from(cooked.as_str()).map_err(|e| invalid("CookedUrl", e.to_string()))
}

/// Appends `text` to `out`, percent-encoding the bytes a request target
/// cannot hold as they are, and those in `also`.
fn encode_into(out: &mut String, text: &str, also: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in text.as_bytes() {
        let plain = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b);
        if plain && !also.contains(&b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

/// `range` of `block` without the spaces and tabs around it.
fn trimmed(block: &[u8], range: Range<usize>) -> Range<usize> {
    let value = &block[range.clone()];
    let start = value.len() - value.trim_ascii_start().len();
    let end = value.trim_ascii_end().len().max(start);
    range.start + start..range.start + end
}

/// The request parts for `head`, with the facts from server variables and
/// the identity from `IHttpUser` (which replaces any the variables gave).
pub fn to_parts(
    mut head: RawHead,
    mut facts: HostFacts,
    user: Option<RawUser>,
) -> Result<http::request::Parts, MappingError> {
    let method = Method::from_bytes(head.method()).map_err(|_| {
        invalid(
            "GetHttpMethod",
            format!(
                "{:?} is not a method",
                String::from_utf8_lossy(head.method())
            ),
        )
    })?;
    let version = match head.version {
        (0, 9) => Version::HTTP_09,
        (1, 0) => Version::HTTP_10,
        (2, _) => Version::HTTP_2,
        (3, _) => Version::HTTP_3,
        _ => Version::HTTP_11,
    };
    let block = Bytes::from(std::mem::take(&mut head.block));
    let mut headers = HeaderMap::with_capacity(head.headers.len());
    for (name, value) in &head.headers {
        let name = match name {
            RawName::Known(name) => HeaderName::from_static(name),
            RawName::Unknown(range) => {
                HeaderName::from_bytes(&block[range.clone()]).map_err(|_| {
                    invalid(
                        "HTTP_REQUEST.Headers",
                        format!(
                            "bad header name {:?}",
                            String::from_utf8_lossy(&block[range.clone()])
                        ),
                    )
                })?
            }
        };
        let value = HeaderValue::from_maybe_shared(block.slice(trimmed(&block, value.clone())))
            .map_err(|_| {
                invalid(
                    "HTTP_REQUEST.Headers",
                    format!("header {name} has a value with control characters"),
                )
            })?;
        headers.append(name, value);
    }
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = target(&head, &block)?;
    parts.version = version;
    parts.headers = headers;
    facts.identity = user.and_then(|u| Identity::reported_by_host(u.name, &u.scheme));
    facts.apply(&mut parts.extensions);
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kallithea_core::AuthScheme;
    use kallithea_core::{ConnectionInfo, HostVariables, RequestExt};

    fn facts() -> HostFacts {
        HostFacts {
            connection: ConnectionInfo {
                remote: "127.0.0.1:5000".parse().unwrap(),
                local: "127.0.0.1:80".parse().unwrap(),
                secure: false,
                proxy: None,
            },
            path_base: None,
            variables: HostVariables::new(),
            identity: Some(Identity::from_host(
                String::from("from-variables"),
                AuthScheme::Other("x".into()),
            )),
        }
    }

    fn head_with(method: &[u8], raw_url: &[u8]) -> RawHead {
        let mut h = RawHead::new(method, raw_url, 64);
        h.cooked_path = "/a b".into();
        h.cooked_query = "?x=1".into();
        h.version = (1, 1);
        h.push_known("host", b"example");
        h.push(b"X-Custom", b" v ");
        h
    }

    fn head() -> RawHead {
        head_with(b"GET", b"/a%20b?x=1")
    }

    #[test]
    fn the_raw_url_headers_and_version_are_kept() {
        let p = to_parts(head(), facts(), None).unwrap();
        assert_eq!(p.uri, "/a%20b?x=1");
        assert_eq!(p.method, Method::GET);
        assert_eq!(p.version, Version::HTTP_11);
        assert_eq!(p.headers["x-custom"], "v");
        assert_eq!(p.headers["host"], "example");
        assert_eq!(p.headers.len(), 2);
    }

    #[test]
    fn values_are_trimmed_and_repeats_kept_in_order() {
        let mut h = head();
        h.push(b"x-custom", b"\t w");
        h.push(b"x-blank", b"   ");
        let p = to_parts(h, facts(), None).unwrap();
        let all: Vec<_> = p.headers.get_all("x-custom").iter().collect();
        assert_eq!(all, ["v", "w"]);
        assert_eq!(p.headers["x-blank"], "");
    }

    #[test]
    fn every_known_header_name_is_a_valid_lower_case_name() {
        for name in crate::ffi::REQUEST_HEADER_NAMES {
            // `from_static` panics on anything else.
            assert_eq!(HeaderName::from_static(name).as_str(), name);
        }
    }

    #[test]
    fn an_absolute_raw_url_gives_its_path_and_query() {
        let h = head_with(b"GET", b"http://example/p/q?z");
        assert_eq!(to_parts(h, facts(), None).unwrap().uri, "/p/q?z");
        // No raw URL: the cooked one, encoded again.
        let h = head_with(b"GET", b"");
        assert_eq!(to_parts(h, facts(), None).unwrap().uri, "/a%20b?x=1");
        let mut h = head_with(b"GET", b"");
        h.cooked_path = "/100% jörg".into();
        h.cooked_query = "?q=a%20b".into();
        assert_eq!(
            to_parts(h, facts(), None).unwrap().uri,
            "/100%25%20j%C3%B6rg?q=a%20b"
        );
    }

    #[test]
    fn the_identity_comes_from_the_user_object_only() {
        let p = to_parts(head(), facts(), None).unwrap();
        assert!(p.identity().is_none(), "no IHttpUser: nobody");
        let user = RawUser {
            name: "EXAMPLE\\jörg".into(),
            scheme: "Negotiate".into(),
        };
        let p = to_parts(head(), facts(), Some(user)).unwrap();
        assert_eq!(p.identity().unwrap().name(), "EXAMPLE\\jörg");
        let anonymous = RawUser::default();
        let p = to_parts(head(), facts(), Some(anonymous)).unwrap();
        assert!(p.identity().is_none(), "an empty user name is anonymous");
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(to_parts(head_with(b"GE T", b"/"), facts(), None).is_err());
        let mut h = head();
        h.push(b"bad name", b"v");
        assert!(to_parts(h, facts(), None).is_err());
        let mut h = head();
        h.push(b"x-control", b"a\x01b");
        assert!(to_parts(h, facts(), None).is_err());
    }
}
