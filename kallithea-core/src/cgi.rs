//! Requests described by CGI-style server variables, as IIS reports them to
//! ISAPI extensions and native modules: the mapping both IIS hosts share.
//!
//! [`request_from_server_variables`] turns the variables into the core
//! request's head and facts; [`parse_header_block`], [`header_block`] and
//! [`status_line`] convert headers and statuses to and from the text forms the
//! IIS interfaces use (`ALL_RAW`, `HSE_SEND_HEADER_EX_INFO`).

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode, Uri, Version};

use crate::{AuthScheme, ConnectionInfo, HostVariables, Identity, PathBase};

/// Where a host reads server variables from.
pub trait ServerVariables {
    /// The value of a plain variable, in the bytes the host gives (IIS: the
    /// system code page), or `None` if the host does not know it.
    fn get(&self, name: &str) -> Option<Vec<u8>>;

    /// The value of a `UNICODE_` variable, decoded from the host's UTF-16, or
    /// `None` if the host does not know it.
    fn get_unicode(&self, name: &str) -> Option<String>;
}

/// The variables kept as [`HostVariables`] for plugins and apps.
pub const KEPT_VARIABLES: &[&str] = &[
    "AUTH_TYPE",
    "REMOTE_USER",
    "LOGON_USER",
    "AUTH_USER",
    "APPL_MD_PATH",
    "APPL_PHYSICAL_PATH",
    "HTTPS",
    "SERVER_NAME",
    "INSTANCE_ID",
];

/// A request head described by server variables was unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MappingError {
    /// A required variable is missing.
    #[error("the host did not report {0}")]
    Missing(&'static str),
    /// A variable's value does not parse.
    #[error("the host reported an invalid {name}: {why}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// What is wrong.
        why: String,
    },
}

/// The request head and host facts built from server variables.
#[derive(Debug)]
pub struct MappedRequest {
    /// Method, URI (path and query exactly as the client sent them), version,
    /// headers, and the facts as extensions: [`ConnectionInfo`], [`PathBase`],
    /// [`HostVariables`] and, when the host authenticated the user,
    /// [`Identity`].
    pub parts: http::request::Parts,
}

fn text(name: &'static str, bytes: Vec<u8>) -> Result<String, MappingError> {
    String::from_utf8(bytes).map_err(|_| MappingError::Invalid {
        name,
        why: "not text".into(),
    })
}

/// The user name from the host: the `UNICODE_` form when there is one (IIS
/// converts it from UTF-16 without loss), else the plain form, which is in the
/// system code page — taken as UTF-8 when it is valid, else as Latin-1.
fn user_name(vars: &dyn ServerVariables, name: &str, unicode_name: &str) -> Option<String> {
    let unicode = vars.get_unicode(unicode_name).filter(|s| !s.is_empty());
    unicode.or_else(|| {
        let raw = vars.get(name).filter(|b| !b.is_empty())?;
        Some(
            String::from_utf8(raw)
                .unwrap_or_else(|e| e.into_bytes().iter().map(|&b| char::from(b)).collect()),
        )
    })
}

/// Parses `APPL_MD_PATH` (`/LM/W3SVC/1/ROOT/portal`) into the application's
/// mount point (`/portal`; the site root for `/LM/W3SVC/1/ROOT`).
pub fn path_base_from_metabase(appl_md_path: &str) -> Option<PathBase> {
    let upper = appl_md_path.to_ascii_uppercase();
    let at = upper.find("/ROOT")?;
    let rest = &appl_md_path[at + 5..];
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    PathBase::new(rest).ok()
}

fn socket(
    vars: &dyn ServerVariables,
    addr: &'static str,
    port: &'static str,
) -> Result<SocketAddr, MappingError> {
    let ip = text(addr, vars.get(addr).ok_or(MappingError::Missing(addr))?)?;
    let ip: IpAddr = ip.trim().parse().map_err(|_| MappingError::Invalid {
        name: addr,
        why: format!("{ip:?} is not an IP address"),
    })?;
    let port = match vars.get(port) {
        None => 0,
        Some(p) => text(port, p)?
            .trim()
            .parse()
            .map_err(|_| MappingError::Invalid {
                name: port,
                why: "not a port number".into(),
            })?,
    };
    Ok(SocketAddr::new(ip, port))
}

/// Builds the request head and facts from server variables; `method` is the
/// ECB's (or `REQUEST_METHOD`).
///
/// The target is `HTTP_URL` — the path and query exactly as the client sent
/// them — falling back to `URL` and `QUERY_STRING`; headers come from
/// `ALL_RAW` byte for byte; `SERVER_PROTOCOL` gives the version;
/// `REMOTE_ADDR`/`REMOTE_PORT`, `LOCAL_ADDR`/`SERVER_PORT` and `HTTPS` the
/// connection; `APPL_MD_PATH` the mount point; `REMOTE_USER` (preferring
/// `UNICODE_REMOTE_USER`) with `AUTH_TYPE` the identity, which exists only
/// when the host authenticated someone.
pub fn request_from_server_variables(
    vars: &dyn ServerVariables,
    method: &str,
) -> Result<MappedRequest, MappingError> {
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| MappingError::Invalid {
        name: "REQUEST_METHOD",
        why: format!("{method:?} is not a method"),
    })?;
    let target = match vars.get("HTTP_URL").filter(|u| !u.is_empty()) {
        Some(url) => url,
        None => {
            let mut url = vars.get("URL").ok_or(MappingError::Missing("HTTP_URL"))?;
            if let Some(q) = vars.get("QUERY_STRING").filter(|q| !q.is_empty()) {
                url.push(b'?');
                url.extend_from_slice(&q);
            }
            url
        }
    };
    let uri = Uri::from_maybe_shared(Bytes::from(target)).map_err(|e| MappingError::Invalid {
        name: "HTTP_URL",
        why: e.to_string(),
    })?;
    let version = match vars.get("SERVER_PROTOCOL").as_deref() {
        Some(b"HTTP/1.0") => Version::HTTP_10,
        Some(b"HTTP/2") | Some(b"HTTP/2.0") => Version::HTTP_2,
        Some(b"HTTP/3") => Version::HTTP_3,
        Some(b"HTTP/0.9") => Version::HTTP_09,
        _ => Version::HTTP_11,
    };
    let headers = match vars.get("ALL_RAW") {
        Some(block) => parse_header_block(&block)?,
        None => HeaderMap::new(),
    };

    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    host_facts(vars)?.apply(&mut parts.extensions);
    Ok(MappedRequest { parts })
}

/// What the server variables say about a request besides its head: the
/// connection, the mount point, the kept variables and the identity.
#[derive(Debug)]
pub struct HostFacts {
    /// `REMOTE_ADDR`/`REMOTE_PORT`, `LOCAL_ADDR`/`SERVER_PORT`, `HTTPS`.
    pub connection: ConnectionInfo,
    /// From `APPL_MD_PATH`; `None` at the site root.
    pub path_base: Option<PathBase>,
    /// The [`KEPT_VARIABLES`] the host reported.
    pub variables: HostVariables,
    /// `REMOTE_USER` (preferring `UNICODE_REMOTE_USER`) with `AUTH_TYPE`;
    /// `None` when the host authenticated nobody.
    pub identity: Option<Identity>,
}

impl HostFacts {
    /// Puts the facts into a request's extensions.
    pub fn apply(self, extensions: &mut http::Extensions) {
        extensions.insert(self.connection);
        if let Some(base) = self.path_base {
            extensions.insert(base);
        }
        if let Some(identity) = self.identity {
            extensions.insert(identity);
        }
        extensions.insert(self.variables);
    }
}

/// Reads the [`HostFacts`] from server variables, asking for each variable
/// once (every call crosses into the host).
pub fn host_facts(vars: &dyn ServerVariables) -> Result<HostFacts, MappingError> {
    let mut kept = HostVariables::new();
    let mut user = None;
    for name in KEPT_VARIABLES {
        let unicode_name = match *name {
            "REMOTE_USER" => Some("UNICODE_REMOTE_USER"),
            "LOGON_USER" => Some("UNICODE_LOGON_USER"),
            "AUTH_USER" => Some("UNICODE_AUTH_USER"),
            _ => None,
        };
        let value = if let Some(unicode_name) = unicode_name {
            let found = user_name(vars, name, unicode_name);
            if *name == "REMOTE_USER" {
                user.clone_from(&found);
            }
            found.map(String::into_bytes)
        } else {
            vars.get(name)
        };
        if let Some(v) = value {
            kept.insert(name, v);
        }
    }
    let connection = ConnectionInfo {
        remote: socket(vars, "REMOTE_ADDR", "REMOTE_PORT")?,
        local: socket(vars, "LOCAL_ADDR", "SERVER_PORT")?,
        secure: kept
            .get("HTTPS")
            .is_some_and(|v| v.eq_ignore_ascii_case(b"on")),
        proxy: None,
    };
    let path_base = kept
        .get_str("APPL_MD_PATH")
        .and_then(path_base_from_metabase)
        .filter(|b| !b.is_root());
    let identity = user.map(|user| {
        let scheme = kept
            .get_str("AUTH_TYPE")
            .filter(|t| !t.trim().is_empty())
            .map_or(
                AuthScheme::Other("unknown".into()),
                AuthScheme::from_host_name,
            );
        Identity::from_host(user, scheme)
    });
    Ok(HostFacts {
        connection,
        path_base,
        variables: kept,
        identity,
    })
}

/// Parses a raw header block (`ALL_RAW`: `Name: value` lines ending in CRLF;
/// bare LF tolerated). Values keep their bytes, obs-text included; folded
/// continuation lines join the previous value with one space.
pub fn parse_header_block(block: &[u8]) -> Result<HeaderMap, MappingError> {
    let bad = |why: String| MappingError::Invalid {
        name: "ALL_RAW",
        why,
    };
    let mut headers = HeaderMap::new();
    let mut last: Option<(HeaderName, Vec<u8>)> = None;
    let flush = |headers: &mut HeaderMap,
                 entry: Option<(HeaderName, Vec<u8>)>|
     -> Result<(), MappingError> {
        if let Some((name, value)) = entry {
            let value = HeaderValue::from_bytes(value.trim_ascii())
                .map_err(|_| bad(format!("header {name} has a value with control characters")))?;
            headers.append(name, value);
        }
        Ok(())
    };
    for line in block.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            let (_, value) = last
                .as_mut()
                .ok_or_else(|| bad("a continuation line comes first".into()))?;
            value.push(b' ');
            value.extend_from_slice(line.trim_ascii());
            continue;
        }
        flush(&mut headers, last.take())?;
        let colon = line.iter().position(|&b| b == b':').ok_or_else(|| {
            bad(format!(
                "line without a colon: {:?}",
                String::from_utf8_lossy(line)
            ))
        })?;
        let name = HeaderName::from_bytes(line[..colon].trim_ascii()).map_err(|_| {
            bad(format!(
                "invalid header name {:?}",
                String::from_utf8_lossy(&line[..colon])
            ))
        })?;
        last = Some((name, line[colon + 1..].to_vec()));
    }
    flush(&mut headers, last)?;
    Ok(headers)
}

/// The header block IIS takes with a response status: `Name: value` lines,
/// each ending in CRLF, and the blank line that ends the head.
pub fn header_block(headers: &HeaderMap) -> Vec<u8> {
    let mut out = Vec::with_capacity(headers.len() * 32 + 2);
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The status as IIS takes it: `200 OK`, or the bare code when there is no
/// standard reason phrase.
pub fn status_line(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RequestExt;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Vars {
        plain: HashMap<&'static str, Vec<u8>>,
        unicode: HashMap<&'static str, String>,
        asked: std::cell::RefCell<Vec<String>>,
    }

    impl Vars {
        fn base() -> Self {
            let mut v = Vars::default();
            for (k, val) in [
                ("HTTP_URL", "/portal/users/caf%C3%A9?x=1&y=%2F"),
                ("SERVER_PROTOCOL", "HTTP/1.1"),
                ("REMOTE_ADDR", "192.0.2.10"),
                ("REMOTE_PORT", "50123"),
                ("LOCAL_ADDR", "192.0.2.1"),
                ("SERVER_PORT", "443"),
                ("HTTPS", "on"),
                ("APPL_MD_PATH", "/LM/W3SVC/1/ROOT/portal"),
                ("ALL_RAW", "Host: example\r\nAccept: */*\r\n"),
            ] {
                v.plain.insert(k, val.as_bytes().to_vec());
            }
            v
        }
    }

    impl ServerVariables for Vars {
        fn get(&self, name: &str) -> Option<Vec<u8>> {
            self.asked.borrow_mut().push(name.to_owned());
            self.plain.get(name).cloned()
        }
        fn get_unicode(&self, name: &str) -> Option<String> {
            self.asked.borrow_mut().push(name.to_owned());
            self.unicode.get(name).cloned()
        }
    }

    #[test]
    fn each_variable_is_asked_for_once() {
        // Every lookup is a call into the host (and, on IIS, a buffer
        // negotiation): asking twice is waste on every request.
        let mut v = Vars::base();
        v.plain.insert("REMOTE_USER", b"EXAMPLE\\alice".to_vec());
        v.unicode
            .insert("UNICODE_REMOTE_USER", "EXAMPLE\\alice".into());
        v.plain.insert("AUTH_TYPE", b"Negotiate".to_vec());
        v.plain.insert("HTTPS", b"on".to_vec());
        let r = request_from_server_variables(&v, "GET").unwrap().parts;
        assert_eq!(r.identity().unwrap().name(), "EXAMPLE\\alice");
        assert!(r.connection_info().unwrap().secure);
        let mut asked = v.asked.borrow().clone();
        let all = asked.len();
        asked.sort();
        asked.dedup();
        assert_eq!(asked.len(), all, "a variable was asked for twice");
    }

    #[test]
    fn the_request_head_and_facts_come_from_the_variables() {
        let r = request_from_server_variables(&Vars::base(), "GET")
            .unwrap()
            .parts;
        assert_eq!(r.method, Method::GET);
        assert_eq!(r.uri.path(), "/portal/users/caf%C3%A9");
        assert_eq!(r.uri.query(), Some("x=1&y=%2F"));
        assert_eq!(r.version, Version::HTTP_11);
        assert_eq!(r.headers["host"], "example");
        let c = r.connection_info().unwrap();
        assert_eq!(
            (c.remote.to_string(), c.local.to_string(), c.secure),
            ("192.0.2.10:50123".into(), "192.0.2.1:443".into(), true)
        );
        assert_eq!(r.path_base().as_str(), "/portal");
        assert!(r.identity().is_none(), "no REMOTE_USER, no identity");
    }

    #[test]
    fn the_identity_prefers_the_unicode_variable() {
        let mut v = Vars::base();
        v.plain.insert("REMOTE_USER", b"EXAMPLE\\j\xf6rg".to_vec()); // code page 1252
        v.plain.insert("AUTH_TYPE", b"Negotiate".to_vec());
        let r = request_from_server_variables(&v, "GET").unwrap().parts;
        assert_eq!(
            r.identity().unwrap().name(),
            "EXAMPLE\\jörg",
            "Latin-1 fallback"
        );
        v.unicode
            .insert("UNICODE_REMOTE_USER", "EXAMPLE\\jörg.ünal".into());
        let r = request_from_server_variables(&v, "GET").unwrap().parts;
        let id = r.identity().unwrap();
        assert_eq!(
            (id.name(), id.scheme()),
            ("EXAMPLE\\jörg.ünal", &AuthScheme::Negotiate)
        );
        assert_eq!(
            r.host_variables().unwrap().get_str("REMOTE_USER"),
            Some("EXAMPLE\\jörg.ünal")
        );
        assert_eq!(
            r.host_variables().unwrap().get_str("AUTH_TYPE"),
            Some("Negotiate")
        );
    }

    #[test]
    fn an_empty_remote_user_is_anonymous() {
        let mut v = Vars::base();
        v.plain.insert("REMOTE_USER", Vec::new());
        v.plain.insert("AUTH_TYPE", Vec::new());
        assert!(request_from_server_variables(&v, "GET")
            .unwrap()
            .parts
            .identity()
            .is_none());
    }

    #[test]
    fn url_and_query_string_stand_in_for_a_missing_http_url() {
        let mut v = Vars::base();
        v.plain.remove("HTTP_URL");
        v.plain.insert("URL", b"/a/b".to_vec());
        v.plain.insert("QUERY_STRING", b"q=1".to_vec());
        let r = request_from_server_variables(&v, "POST").unwrap().parts;
        assert_eq!(r.uri.to_string(), "/a/b?q=1");
        v.plain.remove("URL");
        assert_eq!(
            request_from_server_variables(&v, "GET").unwrap_err(),
            MappingError::Missing("HTTP_URL")
        );
    }

    #[test]
    fn bad_variables_are_reported_by_name() {
        let mut v = Vars::base();
        v.plain.insert("REMOTE_ADDR", b"not-an-ip".to_vec());
        let e = request_from_server_variables(&v, "GET").unwrap_err();
        assert!(e.to_string().contains("REMOTE_ADDR"), "{e}");
        assert!(request_from_server_variables(&Vars::base(), "GE T").is_err());
    }

    #[test]
    fn metabase_paths_give_the_mount_point() {
        assert_eq!(
            path_base_from_metabase("/LM/W3SVC/1/ROOT")
                .unwrap()
                .as_str(),
            ""
        );
        assert_eq!(
            path_base_from_metabase("/LM/W3SVC/2/root/Apps/Portal")
                .unwrap()
                .as_str(),
            "/Apps/Portal"
        );
        assert!(path_base_from_metabase("/LM/W3SVC/1/ROOTS").is_none());
        assert!(path_base_from_metabase("nonsense").is_none());
    }

    #[test]
    fn header_blocks_keep_bytes_order_and_repeats() {
        let raw = b"Host: x\r\nX-Multi: one\r\nX-Latin: caf\xe9\r\nX-Multi: two\r\nX-Folded: a\r\n\tb\r\n\r\n";
        let h = parse_header_block(raw).unwrap();
        let multi: Vec<_> = h.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["one", "two"]);
        assert_eq!(h["x-latin"].as_bytes(), b"caf\xe9");
        assert_eq!(h["x-folded"], "a b");
        assert!(parse_header_block(b"no colon here\r\n").is_err());
        assert!(parse_header_block(b" leading continuation\r\n").is_err());
        assert!(parse_header_block(b"Bad Name: x\r\n").is_err());
        assert_eq!(
            parse_header_block(b"A: 1\nB: 2\n").unwrap().len(),
            2,
            "bare LF tolerated"
        );
    }

    #[test]
    fn response_heads_are_formatted_as_iis_takes_them() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        h.append("set-cookie", HeaderValue::from_static("a=1"));
        h.append("set-cookie", HeaderValue::from_static("b=2"));
        assert_eq!(
            header_block(&h),
            b"content-type: text/plain\r\nset-cookie: a=1\r\nset-cookie: b=2\r\n\r\n".to_vec()
        );
        assert_eq!(header_block(&HeaderMap::new()), b"\r\n".to_vec());
        assert_eq!(status_line(StatusCode::OK), "200 OK");
        assert_eq!(status_line(StatusCode::from_u16(299).unwrap()), "299");
        // Round trip: what we write parses back to the same headers.
        assert_eq!(parse_header_block(&header_block(&h)).unwrap(), h);
    }
}
