//! The request head as IIS parsed it, mapped to the core's request parts.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use kallithea_core::cgi::{HostFacts, MappingError};
use kallithea_core::{AuthScheme, Identity};

/// What the module reads from `IHttpRequest` and `HTTP_REQUEST`.
#[derive(Debug, Clone, Default)]
pub struct RawHead {
    /// `GetHttpMethod`.
    pub method: Vec<u8>,
    /// `pRawUrl`: the target exactly as the client sent it.
    pub raw_url: Vec<u8>,
    /// The cooked URL's absolute path (decoded by HTTP.sys).
    pub cooked_path: String,
    /// The cooked URL's query, with its `?`.
    pub cooked_query: String,
    /// Major and minor protocol version.
    pub version: (u16, u16),
    /// Known headers (by their names) then unknown ones, values as sent.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// `GetRemainingEntityBytes`.
    pub remaining: u32,
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

/// The request target: the raw URL when it is in origin form; otherwise
/// (absolute form, or none) the cooked path and query.
fn target(head: &RawHead) -> Result<Uri, MappingError> {
    if head.raw_url.first() == Some(&b'/') {
        return Uri::from_maybe_shared(Bytes::from(head.raw_url.clone()))
            .map_err(|e| invalid("pRawUrl", e.to_string()));
    }
    if let Ok(uri) = Uri::try_from(head.raw_url.as_slice()) {
        if let Some(pq) = uri.path_and_query() {
            return Uri::try_from(pq.as_str()).map_err(|e| invalid("pRawUrl", e.to_string()));
        }
    }
    let cooked = format!("{}{}", head.cooked_path, head.cooked_query);
    Uri::try_from(cooked.as_str()).map_err(|e| invalid("CookedUrl", e.to_string()))
}

/// The request parts for `head`, with the facts from server variables and
/// the identity from `IHttpUser` (which replaces any the variables gave).
pub fn to_parts(
    head: &RawHead,
    mut facts: HostFacts,
    user: Option<RawUser>,
) -> Result<http::request::Parts, MappingError> {
    let method = Method::from_bytes(&head.method).map_err(|_| {
        invalid(
            "GetHttpMethod",
            format!(
                "{:?} is not a method",
                String::from_utf8_lossy(&head.method)
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
    let mut headers = HeaderMap::with_capacity(head.headers.len());
    for (name, value) in &head.headers {
        let name = HeaderName::from_bytes(name).map_err(|_| {
            invalid(
                "HTTP_REQUEST.Headers",
                format!("bad header name {:?}", String::from_utf8_lossy(name)),
            )
        })?;
        let value = HeaderValue::from_bytes(value.trim_ascii()).map_err(|_| {
            invalid(
                "HTTP_REQUEST.Headers",
                format!("header {name} has a value with control characters"),
            )
        })?;
        headers.append(name, value);
    }
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = target(head)?;
    parts.version = version;
    parts.headers = headers;
    facts.identity = user.filter(|u| !u.name.is_empty()).map(|u| {
        let scheme = if u.scheme.trim().is_empty() {
            AuthScheme::Other("unknown".into())
        } else {
            AuthScheme::from_host_name(&u.scheme)
        };
        Identity::from_host(u.name, scheme)
    });
    facts.apply(&mut parts.extensions);
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
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

    fn head() -> RawHead {
        RawHead {
            method: b"GET".to_vec(),
            raw_url: b"/a%20b?x=1".to_vec(),
            cooked_path: "/a b".into(),
            cooked_query: "?x=1".into(),
            version: (1, 1),
            headers: vec![
                (b"host".to_vec(), b"example".to_vec()),
                (b"X-Custom".to_vec(), b" v ".to_vec()),
            ],
            remaining: 0,
        }
    }

    #[test]
    fn the_raw_url_headers_and_version_are_kept() {
        let p = to_parts(&head(), facts(), None).unwrap();
        assert_eq!(p.uri, "/a%20b?x=1");
        assert_eq!(p.version, Version::HTTP_11);
        assert_eq!(p.headers["x-custom"], "v");
        assert_eq!(p.headers["host"], "example");
    }

    #[test]
    fn an_absolute_raw_url_gives_its_path_and_query() {
        let mut h = head();
        h.raw_url = b"http://example/p/q?z".to_vec();
        assert_eq!(to_parts(&h, facts(), None).unwrap().uri, "/p/q?z");
    }

    #[test]
    fn the_identity_comes_from_the_user_object_only() {
        let p = to_parts(&head(), facts(), None).unwrap();
        assert!(p.identity().is_none(), "no IHttpUser: nobody");
        let user = RawUser {
            name: "EXAMPLE\\jörg".into(),
            scheme: "Negotiate".into(),
        };
        let p = to_parts(&head(), facts(), Some(user)).unwrap();
        assert_eq!(p.identity().unwrap().name(), "EXAMPLE\\jörg");
        let anonymous = RawUser::default();
        let p = to_parts(&head(), facts(), Some(anonymous)).unwrap();
        assert!(p.identity().is_none(), "an empty user name is anonymous");
    }

    #[test]
    fn bad_input_is_refused() {
        let mut h = head();
        h.method = b"GE T".to_vec();
        assert!(to_parts(&h, facts(), None).is_err());
        let mut h = head();
        h.headers.push((b"bad name".to_vec(), b"v".to_vec()));
        assert!(to_parts(&h, facts(), None).is_err());
    }
}
