//! Requests described by CGI-style server variables, as IIS reports them to
//! ISAPI extensions and native modules: the mapping both bindings share.
//!
//! [`request_from_server_variables`] turns the variables into the core
//! request's head and facts ([`HostFacts`]: connection, mount point, kept
//! variables, identity).
//!
//! What the mapping needs, and what it does without the optional ones (a
//! missing optional fact never fails a request; a value a host does report
//! must parse):
//!
//! | variable | needed | without it |
//! |---|---|---|
//! | the method (`lpszMethod`) | required | 400 |
//! | `HTTP_URL` | optional | the decoded `UNICODE_URL` (else `URL` if ASCII) encoded again, plus `QUERY_STRING`; a non-ASCII path only in the code page is refused (400) |
//! | | | when the request carries a `URL` header (which a host deriving `HTTP_<NAME>` from headers would turn into `HTTP_URL`), its path must match the host's decoded `UNICODE_URL`/`URL`, else 400 — the only variable the mapping reads whose name a client header can produce |
//! | `URL` / `UNICODE_URL` | only without `HTTP_URL` | 400 |
//! | `QUERY_STRING` | optional | no query |
//! | `ALL_RAW` | required | 400: the headers are the request |
//! | `SERVER_PROTOCOL` | optional | HTTP/1.1 |
//! | `REMOTE_ADDR` | required | 400 |
//! | `REMOTE_PORT`, `SERVER_PORT` | optional | port 0 |
//! | `LOCAL_ADDR` | optional | `SERVER_ADDR`, else unknown (`0.0.0.0`) |
//! | `HTTPS` | optional | not secure |
//! | `APPL_MD_PATH` | optional | the configured `path_base`, else mounted at the site root |
//! | `UNICODE_REMOTE_USER` | optional | `REMOTE_USER` (code page; see the identity rules) |
//! | `REMOTE_USER`, `AUTH_TYPE` | optional | no identity; scheme `unknown` |
//! | `LOGON_USER`, `AUTH_USER`, `APPL_PHYSICAL_PATH`, `SERVER_NAME`, `INSTANCE_ID` | optional | missing from `HostVariables` |
//!
//! The native module reads the method, target, headers and addresses from
//! `HTTP_REQUEST` and the request object, so of this table only the kept
//! variables and the identity concern it.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::{Method, Uri, Version};
use kallithea_core::{ConnectionInfo, HostVariables, Identity, PathBase};

use crate::head::parse_header_bytes;
use crate::variables::{read_kept, OnDemand, ServerVariables, KEPT_VARIABLES, ON_DEMAND};

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
    /// The host reports the user's name only in a form that may not be the
    /// name (see the identity rules): the request is refused, not run
    /// with a guess.
    #[error("{why}")]
    Untrustworthy {
        /// The variable.
        name: &'static str,
        /// Why it cannot be believed.
        why: String,
    },
}

impl MappingError {
    /// The status a refused request is answered with: 400 for what the
    /// request itself made unusable, 500 when the server's report cannot be
    /// trusted (nothing the client can fix).
    pub fn status(&self) -> http::StatusCode {
        match self {
            MappingError::Untrustworthy { .. } => http::StatusCode::INTERNAL_SERVER_ERROR,
            _ => http::StatusCode::BAD_REQUEST,
        }
    }
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

fn text<'a>(name: &'static str, bytes: &'a [u8]) -> Result<&'a str, MappingError> {
    std::str::from_utf8(bytes).map_err(|_| MappingError::Invalid {
        name,
        why: "not text".into(),
    })
}

/// Parses `APPL_MD_PATH` (`/LM/W3SVC/1/ROOT/portal`) into the application's
/// mount point (`/portal`; the site root for `/LM/W3SVC/1/ROOT`).
pub fn path_base_from_metabase(appl_md_path: &str) -> Option<PathBase> {
    let at = appl_md_path
        .as_bytes()
        .windows(5)
        .position(|w| w.eq_ignore_ascii_case(b"/ROOT"))?;
    let rest = &appl_md_path[at + 5..];
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    PathBase::new(rest).ok()
}

/// Reads variable `name` onto the end of `buf` for `parse`, then takes it
/// off again: `buf` is left as it was. `None` when the host has no value.
fn parse_at_end<T>(
    vars: &dyn ServerVariables,
    name: &str,
    buf: &mut Vec<u8>,
    parse: impl FnOnce(&[u8]) -> T,
) -> Option<T> {
    let start = buf.len();
    let found = vars.append(name, buf);
    let parsed = found.then(|| parse(&buf[start..]));
    buf.truncate(start);
    parsed
}

/// `addr` and `port` as a socket address, each read onto the end of `buf`
/// and taken off again.
fn socket(
    vars: &dyn ServerVariables,
    addr: &'static str,
    port: &'static str,
    buf: &mut Vec<u8>,
) -> Result<SocketAddr, MappingError> {
    let ip = parse_at_end(vars, addr, buf, |v| {
        let ip = text(addr, v)?;
        ip.trim()
            .parse::<IpAddr>()
            .map_err(|_| MappingError::Invalid {
                name: addr,
                why: format!("{ip:?} is not an IP address"),
            })
    })
    .ok_or(MappingError::Missing(addr))??;
    let port = parse_at_end(vars, port, buf, |v| {
        text(port, v)?
            .trim()
            .parse::<u16>()
            .map_err(|_| MappingError::Invalid {
                name: port,
                why: "not a port number".into(),
            })
    })
    .transpose()?
    .unwrap_or(0);
    Ok(SocketAddr::new(ip, port))
}

/// Appends the decoded path `path` with every byte a path may not hold as
/// it is (controls, space, non-ASCII, `%`, `?`, `#` and the like)
/// percent-encoded.
fn encode_path(path: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in path {
        let keep = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b);
        if keep {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

/// Checks that the path of `raw` (the `HTTP_URL` target) is the path the
/// host itself decoded (`UNICODE_URL`, else an ASCII `URL`), compared after
/// decoding and the normalisation a server applies (dot segments, `\`,
/// repeated `/`, trailing dots and spaces of a segment, ASCII case). A host
/// that reports no decoded path cannot vouch for the raw one.
fn check_raw_path(vars: &dyn ServerVariables, raw: &[u8]) -> Result<(), MappingError> {
    let refuse = |why: &str| {
        tracing::warn!(
            raw = %String::from_utf8_lossy(raw),
            "{why}; refusing the request"
        );
        Err(MappingError::Invalid {
            name: "HTTP_URL",
            why: why.to_owned(),
        })
    };
    let mut unicode = String::new();
    let decoded = if vars.append_unicode("UNICODE_URL", &mut unicode) && !unicode.is_empty() {
        unicode.into_bytes()
    } else {
        let mut plain = Vec::new();
        if !vars.append("URL", &mut plain) || plain.is_empty() || !plain.is_ascii() {
            return refuse(
                "the request has a URL header, which some hosts turn into HTTP_URL, and the \
                 host reports no decoded URL to check the path against",
            );
        }
        plain
    };
    let path = raw.split(|&b| b == b'?').next().unwrap_or_default();
    if normalized_path(&percent_decoded(path)) != normalized_path(&decoded) {
        return refuse(
            "HTTP_URL's path is not the host's own URL: a client's URL header may have \
             replaced it",
        );
    }
    Ok(())
}

/// `bytes` with every `%XX` decoded (other `%`s kept).
fn percent_decoded(bytes: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// A decoded path as a server compares it: `\` as `/`, empty and `.`
/// segments dropped, `..` taking the previous one, trailing dots and spaces
/// of each segment dropped, ASCII lower case.
fn normalized_path(path: &[u8]) -> Vec<Vec<u8>> {
    let mut segments: Vec<Vec<u8>> = Vec::new();
    for segment in path.split(|&b| b == b'/' || b == b'\\') {
        let mut s = segment.to_ascii_lowercase();
        while s.last().is_some_and(|&b| b == b'.' || b == b' ') && s != b"." && s != b".." {
            s.pop();
        }
        match s.as_slice() {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            _ => segments.push(s),
        }
    }
    segments
}

/// The local address: `LOCAL_ADDR`, else `SERVER_ADDR` (a host's other
/// name for it), else unknown (the unspecified address), with
/// `SERVER_PORT`. An invalid value is still an error: a host that reports
/// something must report it right.
fn local_socket(vars: &dyn ServerVariables, buf: &mut Vec<u8>) -> Result<SocketAddr, MappingError> {
    match socket(vars, "LOCAL_ADDR", "SERVER_PORT", buf) {
        Err(MappingError::Missing(_)) => match socket(vars, "SERVER_ADDR", "SERVER_PORT", buf) {
            Err(MappingError::Missing(_)) => {
                let port = socket_port(vars, buf)?;
                Ok(SocketAddr::new(
                    IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                    port,
                ))
            }
            other => other,
        },
        other => other,
    }
}

/// `SERVER_PORT`, or 0 when the host has none.
fn socket_port(vars: &dyn ServerVariables, buf: &mut Vec<u8>) -> Result<u16, MappingError> {
    Ok(parse_at_end(vars, "SERVER_PORT", buf, |v| {
        text("SERVER_PORT", v)?
            .trim()
            .parse::<u16>()
            .map_err(|_| MappingError::Invalid {
                name: "SERVER_PORT",
                why: "not a port number".into(),
            })
    })
    .transpose()?
    .unwrap_or(0))
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
    map_request(vars, method, false)
}

/// [`request_from_server_variables`] for a host whose variables can still be
/// read while the request runs, as IIS's can until the request ends: the
/// kept variables the mapping does not use (`LOGON_USER`, `AUTH_USER`,
/// `APPL_PHYSICAL_PATH`, `SERVER_NAME`, `INSTANCE_ID`) are read from `vars`
/// when the app first asks for them, not for every request. `vars` must
/// report nothing once the request has ended.
pub fn request_from_live_variables<V>(vars: V, method: &str) -> Result<MappedRequest, MappingError>
where
    V: ServerVariables + Send + Sync + 'static,
{
    let mut parts = map_request(&vars, method, true)?.parts;
    if let Some(kept) = parts.extensions.get_mut::<HostVariables>() {
        kept.set_deferred(OnDemand::shared(vars));
    }
    Ok(MappedRequest { parts })
}

/// The mapping; with `live`, the [`ON_DEMAND`] variables are not read.
fn map_request(
    vars: &dyn ServerVariables,
    method: &str,
    live: bool,
) -> Result<MappedRequest, MappingError> {
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| MappingError::Invalid {
        name: "REQUEST_METHOD",
        why: format!("{method:?} is not a method"),
    })?;
    // The target, the header block and the kept variables go into one
    // buffer that the URI, the header values and the `HostVariables` share
    // once it is frozen; the variables that are only parsed are read onto
    // its end and taken off again. (A dozen variables per request, each its
    // own allocation or two, were a measurable part of an in-process
    // request.)
    let mut arena = Vec::with_capacity(512);
    let raw_url = vars.append("HTTP_URL", &mut arena) && !arena.is_empty();
    if !raw_url {
        // No raw URL: the decoded path (`UNICODE_URL` when the host has it,
        // as the plain form may have lost characters to the code page),
        // encoded again, and the query as it came.
        arena.clear();
        let mut decoded = String::new();
        let path = if vars.append_unicode("UNICODE_URL", &mut decoded) && !decoded.is_empty() {
            decoded.into_bytes()
        } else {
            let mut plain = Vec::new();
            if !vars.append("URL", &mut plain) || plain.is_empty() {
                return Err(MappingError::Missing("HTTP_URL"));
            }
            if !plain.is_ascii() {
                // In the host's code page, which may have replaced what it
                // cannot hold: not the path the client asked for.
                return Err(MappingError::Invalid {
                    name: "URL",
                    why: "the path is not ASCII and the host reports neither HTTP_URL nor \
                          UNICODE_URL, so its code-page form cannot be trusted"
                        .into(),
                });
            }
            plain
        };
        encode_path(&path, &mut arena);
        let path_end = arena.len();
        arena.push(b'?');
        if !vars.append("QUERY_STRING", &mut arena) || arena.len() == path_end + 1 {
            arena.truncate(path_end);
        }
    }
    let target = arena.len();
    let version = parse_at_end(vars, "SERVER_PROTOCOL", &mut arena, |v| match v {
        b"HTTP/1.0" => Version::HTTP_10,
        b"HTTP/2" | b"HTTP/2.0" => Version::HTTP_2,
        b"HTTP/3" => Version::HTTP_3,
        b"HTTP/0.9" => Version::HTTP_09,
        _ => Version::HTTP_11,
    })
    .unwrap_or(Version::HTTP_11);
    let raw_headers = arena.len()..{
        // The request's headers: without them the app would run on a
        // different request than the client sent.
        if !vars.append("ALL_RAW", &mut arena) {
            return Err(MappingError::Missing("ALL_RAW"));
        }
        arena.len()
    };
    let facts = RawFacts::read(vars, &mut arena, live, None)?;
    let arena = Bytes::from(arena);
    let headers = parse_header_bytes(&arena.slice(raw_headers))?;
    if raw_url && headers.contains_key("url") {
        // A host that derives `HTTP_<NAME>` from every request header lets
        // this client header stand in for the raw URL: the app would run
        // another path than the host authorised and routed.
        check_raw_path(vars, &arena[..target])?;
    }
    let uri = Uri::from_maybe_shared(arena.slice(..target)).map_err(|e| MappingError::Invalid {
        name: "HTTP_URL",
        why: e.to_string(),
    })?;

    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    facts.finish(&arena).apply(&mut parts.extensions);
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
    let mut arena = Vec::with_capacity(256);
    let facts = RawFacts::read(vars, &mut arena, false, None)?;
    Ok(facts.finish(&Bytes::from(arena)))
}

/// [`host_facts`] for a host whose variables can still be read while the
/// request runs (as [`request_from_live_variables`] is to
/// [`request_from_server_variables`]): the kept variables the facts do not
/// need (`LOGON_USER`, `AUTH_USER`, `APPL_PHYSICAL_PATH`, `SERVER_NAME`,
/// `INSTANCE_ID`) are read from `vars` when the app first asks for them.
/// `vars` must report nothing once the request has ended. `addresses`, the
/// remote and the local address when the host gives them without server
/// variables (IIS's `GetRemoteAddress`/`GetLocalAddress`), spare reading
/// `REMOTE_ADDR`, `REMOTE_PORT`, `LOCAL_ADDR` and `SERVER_PORT`.
pub fn host_facts_from_live_variables<V>(
    vars: V,
    addresses: Option<(SocketAddr, SocketAddr)>,
) -> Result<HostFacts, MappingError>
where
    V: ServerVariables + Send + Sync + 'static,
{
    let mut arena = Vec::with_capacity(256);
    let facts = RawFacts::read(&vars, &mut arena, true, addresses)?;
    let mut facts = facts.finish(&Bytes::from(arena));
    facts.variables.set_deferred(OnDemand::shared(vars));
    Ok(facts)
}

/// [`HostFacts`] whose kept variables are still ranges of a buffer being
/// filled.
struct RawFacts {
    kept: [Option<std::ops::Range<usize>>; KEPT_VARIABLES.len()],
    user: Option<String>,
    remote: SocketAddr,
    local: SocketAddr,
}

impl RawFacts {
    /// Appends the kept variables to `arena` (without the [`ON_DEMAND`]
    /// ones when `live`); the rest are read onto its end and taken off —
    /// the addresses only when the host did not give them.
    fn read(
        vars: &dyn ServerVariables,
        arena: &mut Vec<u8>,
        live: bool,
        addresses: Option<(SocketAddr, SocketAddr)>,
    ) -> Result<RawFacts, MappingError> {
        let mut kept: [Option<std::ops::Range<usize>>; KEPT_VARIABLES.len()] = Default::default();
        let mut user = None;
        let mut text = String::new();
        for (slot, name) in kept.iter_mut().zip(KEPT_VARIABLES) {
            if live && ON_DEMAND.contains(name) {
                continue;
            }
            let start = arena.len();
            let found = match read_kept(vars, name, arena, &mut text) {
                Ok(found) => found,
                // The identity must be exact: the request is refused.
                Err(why) if *name == "REMOTE_USER" => {
                    return Err(MappingError::Untrustworthy {
                        name: "REMOTE_USER",
                        why,
                    })
                }
                Err(why) => {
                    tracing::warn!(variable = *name, "{why}: left out");
                    false
                }
            };
            if found {
                if *name == "REMOTE_USER" {
                    // Checked UTF-8 by `user_name`; read from the UNICODE_
                    // form, the name is in `text` already.
                    user = if text.as_bytes() == &arena[start..] {
                        Some(std::mem::take(&mut text))
                    } else {
                        std::str::from_utf8(&arena[start..]).ok().map(str::to_owned)
                    };
                }
                *slot = Some(start..arena.len());
            }
        }
        let (remote, local) = match addresses {
            Some(given) => given,
            None => (
                socket(vars, "REMOTE_ADDR", "REMOTE_PORT", arena)?,
                local_socket(vars, arena)?,
            ),
        };
        Ok(RawFacts {
            kept,
            user,
            remote,
            local,
        })
    }

    /// The facts, the kept variables sharing `arena`.
    fn finish(self, arena: &Bytes) -> HostFacts {
        let mut kept = HostVariables::with_capacity(KEPT_VARIABLES.len());
        for (range, name) in self.kept.into_iter().zip(KEPT_VARIABLES) {
            if let Some(range) = range {
                kept.push_unique(name, arena.slice(range));
            }
        }
        let connection = ConnectionInfo {
            remote: self.remote,
            local: self.local,
            secure: kept
                .get("HTTPS")
                .is_some_and(|v| v.eq_ignore_ascii_case(b"on")),
            proxy: None,
        };
        let path_base = kept
            .get_str("APPL_MD_PATH")
            .and_then(path_base_from_metabase)
            .filter(|b| !b.is_root());
        let identity = self.user.and_then(|user| {
            Identity::reported_by_host(user, kept.get_str("AUTH_TYPE").unwrap_or(""))
        });
        HostFacts {
            connection,
            path_base,
            variables: kept,
            identity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kallithea_core::{AuthScheme, RequestExt};
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

    /// A host that copies values into the mapping's buffers and has no
    /// `get`: the mapping must read everything through `append`.
    struct Appending(Vars);

    impl ServerVariables for Appending {
        fn get(&self, name: &str) -> Option<Vec<u8>> {
            panic!("get({name}) instead of append")
        }
        fn get_unicode(&self, name: &str) -> Option<String> {
            panic!("get_unicode({name}) instead of append_unicode")
        }
        fn append(&self, name: &str, out: &mut Vec<u8>) -> bool {
            self.0
                .plain
                .get(name)
                .map(|v| out.extend_from_slice(v))
                .is_some()
        }
        fn append_unicode(&self, name: &str, out: &mut String) -> bool {
            self.0.unicode.get(name).map(|v| out.push_str(v)).is_some()
        }
    }

    /// A host whose variables can be read while the request runs, and
    /// report nothing once `ended`.
    struct Live {
        vars: std::sync::Arc<std::sync::Mutex<Vars>>,
        ended: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }

    impl ServerVariables for Live {
        fn get(&self, name: &str) -> Option<Vec<u8>> {
            let ended = self.ended.load(std::sync::atomic::Ordering::SeqCst);
            let vars = self.vars.lock().unwrap();
            vars.asked.borrow_mut().push(name.to_owned());
            vars.plain.get(name).filter(|_| !ended).cloned()
        }
        fn get_unicode(&self, name: &str) -> Option<String> {
            let ended = self.ended.load(std::sync::atomic::Ordering::SeqCst);
            let vars = self.vars.lock().unwrap();
            vars.asked.borrow_mut().push(name.to_owned());
            vars.unicode.get(name).filter(|_| !ended).cloned()
        }
    }

    fn all_kept() -> Vars {
        let mut v = Vars::base();
        v.plain.insert("AUTH_TYPE", b"Negotiate".to_vec());
        v.plain.insert("REMOTE_USER", b"EXAMPLE\\j\xf6rg".to_vec());
        v.unicode
            .insert("UNICODE_REMOTE_USER", "EXAMPLE\\jörg".into());
        v.plain.insert("LOGON_USER", b"EXAMPLE\\j\xf6rg".to_vec());
        v.unicode
            .insert("UNICODE_LOGON_USER", "EXAMPLE\\jörg".into());
        v.plain.insert("AUTH_USER", b"EXAMPLE\\j\xf6rg".to_vec());
        v.plain
            .insert("APPL_PHYSICAL_PATH", b"C:\\inetpub\\portal\\".to_vec());
        v.plain.insert("SERVER_NAME", b"example".to_vec());
        v.plain.insert("INSTANCE_ID", b"7".to_vec());
        v
    }

    fn live(v: Vars) -> (Live, std::sync::Arc<std::sync::Mutex<Vars>>) {
        let vars = std::sync::Arc::new(std::sync::Mutex::new(v));
        let host = Live {
            vars: vars.clone(),
            ended: Default::default(),
        };
        (host, vars)
    }

    fn asked(vars: &std::sync::Mutex<Vars>) -> Vec<String> {
        std::mem::take(&mut *vars.lock().unwrap().asked.borrow_mut())
    }

    /// None of the [`ON_DEMAND`] variables was asked for since `asked` last
    /// took the list.
    fn assert_no_on_demand_read(vars: &std::sync::Mutex<Vars>, when: &str) {
        let asked = asked(vars);
        for name in ON_DEMAND {
            assert!(
                !asked.iter().any(|a| a.ends_with(name)),
                "{name} read {when}: {asked:?}"
            );
        }
    }

    fn sorted(vars: &HostVariables) -> Vec<(String, Vec<u8>)> {
        let mut all: Vec<_> = vars
            .iter()
            .map(|(n, v)| (n.to_owned(), v.to_vec()))
            .collect();
        all.sort();
        all
    }

    #[test]
    fn live_variables_the_mapping_does_not_use_are_read_once_when_asked_for() {
        let eager = request_from_server_variables(&all_kept(), "GET")
            .unwrap()
            .parts;
        let (host, vars) = live(all_kept());
        let r = request_from_live_variables(host, "GET").unwrap().parts;
        assert_no_on_demand_read(&vars, "while mapping");
        // The rest of the mapping is the same.
        assert_eq!(r.uri, eager.uri);
        assert_eq!(r.headers, eager.headers);
        assert_eq!(r.identity(), eager.identity());
        assert_eq!(r.connection_info(), eager.connection_info());
        assert_eq!(r.path_base(), eager.path_base());

        let kept = r.host_variables().unwrap();
        assert_eq!(kept.get_str("server_name"), Some("example"));
        assert_eq!(asked(&vars), ["SERVER_NAME"]);
        // Read once, whoever asks again (a clone included).
        assert_eq!(kept.get_str("SERVER_NAME"), Some("example"));
        assert_eq!(kept.clone().get_str("SERVER_NAME"), Some("example"));
        assert!(asked(&vars).is_empty());
        // The user names come from their UNICODE_ form, as eagerly.
        assert_eq!(kept.get_str("LOGON_USER"), Some("EXAMPLE\\jörg"));
        assert_eq!(asked(&vars), ["UNICODE_LOGON_USER"]);
        assert_eq!(
            kept.get("AUTH_USER"),
            None,
            "a name only in the code page is not believed: left out"
        );
        // Every kept variable, whichever way it was read.
        assert_eq!(sorted(kept), sorted(eager.host_variables().unwrap()));
        assert_eq!(kept.len(), KEPT_VARIABLES.len() - 1, "all but AUTH_USER");
        assert!(asked(&vars).iter().all(|a| !a.contains("SERVER_NAME")));
    }

    #[test]
    fn live_host_facts_leave_the_variables_they_do_not_need_for_later() {
        let eager = host_facts(&all_kept()).unwrap();
        let (host, vars) = live(all_kept());
        let facts = host_facts_from_live_variables(host, None).unwrap();
        assert_no_on_demand_read(&vars, "with the facts");
        assert_eq!(facts.connection, eager.connection);
        assert_eq!(facts.path_base, eager.path_base);
        assert_eq!(facts.identity, eager.identity);
        assert_eq!(facts.variables.get_str("INSTANCE_ID"), Some("7"));
        assert_eq!(asked(&vars), ["INSTANCE_ID"]);
        assert_eq!(sorted(&facts.variables), sorted(&eager.variables));
    }

    #[test]
    fn addresses_the_host_gives_spare_their_variables() {
        let remote: SocketAddr = "[2001:db8::7]:50123".parse().unwrap();
        let local: SocketAddr = "192.0.2.1:443".parse().unwrap();
        let (host, vars) = live(all_kept());
        let facts = host_facts_from_live_variables(host, Some((remote, local))).unwrap();
        assert_eq!(
            (facts.connection.remote, facts.connection.local),
            (remote, local)
        );
        let asked = asked(&vars);
        for name in ["REMOTE_ADDR", "REMOTE_PORT", "LOCAL_ADDR", "SERVER_PORT"] {
            assert!(!asked.iter().any(|a| a == name), "{name} read: {asked:?}");
        }
        assert!(facts.connection.secure, "HTTPS is still read");
    }

    #[test]
    fn live_variables_not_read_before_the_request_ended_are_missing() {
        let (host, vars) = live(all_kept());
        let ended = host.ended.clone();
        let mut r = request_from_live_variables(host, "GET").unwrap().parts;
        let kept = r.extensions.get_mut::<HostVariables>().unwrap();
        assert_eq!(kept.get_str("INSTANCE_ID"), Some("7"));
        kept.insert("SERVER_NAME", "set by a plugin");
        let before = format!("{kept:?}");
        assert!(before.contains("APPL_PHYSICAL_PATH"), "{before}");
        assert!(asked(&vars).iter().all(|a| a != "APPL_PHYSICAL_PATH"));

        ended.store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(kept.get_str("INSTANCE_ID"), Some("7"), "read before: kept");
        assert_eq!(kept.get("APPL_PHYSICAL_PATH"), None);
        assert_eq!(kept.get_str("SERVER_NAME"), Some("set by a plugin"));
        assert_eq!(
            kept.get_str("APPL_MD_PATH"),
            Some("/LM/W3SVC/1/ROOT/portal")
        );
        let names: Vec<_> = kept.iter().map(|(n, _)| n.to_owned()).collect();
        assert_eq!(names.iter().filter(|n| *n == "SERVER_NAME").count(), 1);
        assert!(!names.contains(&"APPL_PHYSICAL_PATH".to_owned()));
    }

    #[test]
    fn values_read_into_shared_buffers_come_out_whole_and_in_place() {
        let mut v = Vars::base();
        v.plain.insert("AUTH_TYPE", b"Negotiate".to_vec());
        v.plain.insert("LOGON_USER", b"EXAMPLE\\j\xf6rg".to_vec());
        v.unicode
            .insert("UNICODE_REMOTE_USER", "EXAMPLE\\jörg.ünal".into());
        v.plain.insert("INSTANCE_ID", b"7".to_vec());
        let via_get = request_from_server_variables(&v, "GET").unwrap().parts;
        let r = request_from_server_variables(&Appending(v), "GET")
            .unwrap()
            .parts;
        assert_eq!(r.uri, via_get.uri);
        assert_eq!(r.uri.query(), Some("x=1&y=%2F"));
        assert_eq!(r.headers, via_get.headers);
        assert_eq!(r.identity().unwrap().name(), "EXAMPLE\\jörg.ünal");
        let vars: Vec<(String, Vec<u8>)> = r
            .host_variables()
            .unwrap()
            .iter()
            .map(|(n, v)| (n.to_owned(), v.to_vec()))
            .collect();
        let expected: Vec<(String, Vec<u8>)> = [
            ("AUTH_TYPE", "Negotiate"),
            ("REMOTE_USER", "EXAMPLE\\jörg.ünal"),
            ("APPL_MD_PATH", "/LM/W3SVC/1/ROOT/portal"),
            ("HTTPS", "on"),
            ("INSTANCE_ID", "7"),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v.as_bytes().to_vec()))
        .collect();
        assert_eq!(vars, expected);
        let same: Vec<(String, Vec<u8>)> = via_get
            .host_variables()
            .unwrap()
            .iter()
            .map(|(n, v)| (n.to_owned(), v.to_vec()))
            .collect();
        assert_eq!(vars, same);
        assert_eq!(r.path_base().as_str(), "/portal");
        assert!(r.connection_info().unwrap().secure);
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
        // Only the code-page form: refused (500), never guessed.
        let e = request_from_server_variables(&v, "GET").unwrap_err();
        assert!(
            matches!(
                e,
                MappingError::Untrustworthy {
                    name: "REMOTE_USER",
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
        // A '?' is what a code page leaves for what it lacks.
        v.plain.insert("REMOTE_USER", b"EXAMPLE\\?ukasz".to_vec());
        assert!(request_from_server_variables(&v, "GET").is_err());
        // UTF-8 (a host whose own form it is) and ASCII are believed.
        for name in ["EXAMPLE\\jörg", "EXAMPLE\\alice"] {
            v.plain.insert("REMOTE_USER", name.as_bytes().to_vec());
            let r = request_from_server_variables(&v, "GET").unwrap().parts;
            assert_eq!(r.identity().unwrap().name(), name);
        }
        v.plain.insert("REMOTE_USER", b"EXAMPLE\\j\xf6rg".to_vec());
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
        v.plain.insert("QUERY_STRING", b"q?".to_vec());
        let r = request_from_server_variables(&v, "GET").unwrap().parts;
        assert_eq!(
            r.uri.to_string(),
            "/a/b?q?",
            "a query ending in ? is kept whole"
        );
        v.plain.insert("QUERY_STRING", Vec::new());
        let r = request_from_server_variables(&v, "GET").unwrap().parts;
        assert_eq!(r.uri.to_string(), "/a/b", "no ? for an empty query");
        v.plain.remove("QUERY_STRING");
        let r = request_from_server_variables(&v, "GET").unwrap().parts;
        assert_eq!(r.uri.to_string(), "/a/b");
        v.plain.remove("URL");
        assert_eq!(
            request_from_server_variables(&v, "GET").unwrap_err(),
            MappingError::Missing("HTTP_URL")
        );
    }

    #[test]
    fn a_decoded_url_is_encoded_again_and_a_code_page_one_refused() {
        let mut v = Vars::base();
        v.plain.remove("HTTP_URL");
        v.unicode
            .insert("UNICODE_URL", "/portal/caf\u{e9} x%/?#".into());
        v.plain.insert("QUERY_STRING", b"q=1%2F2".to_vec());
        let r = request_from_server_variables(&v, "GET").unwrap().parts;
        assert_eq!(r.uri.path(), "/portal/caf%C3%A9%20x%25/%3F%23");
        assert_eq!(r.uri.query(), Some("q=1%2F2"));
        // Only the plain form, in the code page: ASCII is taken, the rest
        // refused.
        v.unicode.remove("UNICODE_URL");
        v.plain.insert("URL", b"/portal/a b".to_vec());
        let r = request_from_server_variables(&v, "GET").unwrap().parts;
        assert_eq!(r.uri.path(), "/portal/a%20b");
        v.plain.insert("URL", b"/portal/caf\xe9".to_vec());
        assert!(matches!(
            request_from_server_variables(&v, "GET").unwrap_err(),
            MappingError::Invalid { name: "URL", .. }
        ));
    }

    #[test]
    fn a_missing_local_address_falls_back_or_stays_unknown() {
        let mut v = Vars::base();
        v.plain.remove("LOCAL_ADDR");
        v.plain.insert("SERVER_ADDR", b"192.0.2.9".to_vec());
        let r = request_from_server_variables(&v, "GET").unwrap().parts;
        let c = r.extensions.get::<ConnectionInfo>().unwrap();
        assert_eq!(c.local, "192.0.2.9:443".parse().unwrap());
        v.plain.remove("SERVER_ADDR");
        let r = request_from_server_variables(&v, "GET").unwrap().parts;
        let c = r.extensions.get::<ConnectionInfo>().unwrap();
        assert_eq!(c.local, "0.0.0.0:443".parse().unwrap());
        v.plain.insert("LOCAL_ADDR", b"not an address".to_vec());
        assert!(matches!(
            request_from_server_variables(&v, "GET").unwrap_err(),
            MappingError::Invalid {
                name: "LOCAL_ADDR",
                ..
            }
        ));
        v.plain.remove("LOCAL_ADDR");
        let all_raw = v.plain.remove("ALL_RAW").unwrap();
        assert_eq!(
            request_from_server_variables(&v, "GET").unwrap_err(),
            MappingError::Missing("ALL_RAW"),
            "no headers is not an empty request"
        );
        v.plain.insert("ALL_RAW", all_raw);
        v.plain.remove("REMOTE_ADDR");
        assert_eq!(
            request_from_server_variables(&v, "GET").unwrap_err(),
            MappingError::Missing("REMOTE_ADDR"),
            "the client's address is required"
        );
    }

    #[test]
    fn a_url_header_cannot_choose_the_path() {
        let mut v = Vars::base();
        // The host's own decoded URL for the raw target of `Vars::base`.
        v.plain.insert("URL", b"/portal/users/caf\xc3\xa9".to_vec());
        v.unicode
            .insert("UNICODE_URL", "/portal/users/caf\u{e9}".into());
        v.plain.insert(
            "ALL_RAW",
            b"Host: example\r\nURL: /portal/admin\r\n".to_vec(),
        );
        // HTTP_URL as IIS reports it: the raw target matches URL.
        assert!(request_from_server_variables(&v, "GET").is_ok());
        // A host that let the header replace it.
        v.plain.insert("HTTP_URL", b"/portal/admin".to_vec());
        assert!(matches!(
            request_from_server_variables(&v, "GET").unwrap_err(),
            MappingError::Invalid {
                name: "HTTP_URL",
                ..
            }
        ));
        // No decoded URL to check against: refused too.
        v.unicode.remove("UNICODE_URL");
        v.plain.remove("URL");
        assert!(request_from_server_variables(&v, "GET").is_err());
        // Without a URL header nothing can have replaced HTTP_URL.
        v.plain.insert("ALL_RAW", b"Host: example\r\n".to_vec());
        assert!(request_from_server_variables(&v, "GET").is_ok());
    }

    #[test]
    fn paths_compare_as_a_server_normalises_them() {
        let same = |a: &str, b: &str| {
            normalized_path(&percent_decoded(a.as_bytes())) == normalized_path(b.as_bytes())
        };
        assert!(same("/a/./b//c", "/a/b/c"));
        assert!(same("/a/x/%2e%2e/b", "/a/b"));
        assert!(same("/A/B.", "/a/b"));
        assert!(same("/a%5cb", "/a/b"));
        assert!(same("/caf%C3%A9%20x", "/caf\u{e9} x"));
        assert!(!same("/public", "/admin"));
        assert!(!same("/a/b", "/a/c"));
        assert!(!same("/a/..%2fadmin", "/a/public"));
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
}
