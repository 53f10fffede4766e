//! Requests described by CGI-style server variables, as IIS reports them to
//! ISAPI extensions and native modules: the mapping both IIS hosts share.
//!
//! [`request_from_server_variables`] turns the variables into the core
//! request's head and facts; [`parse_header_block`], [`header_block`] and
//! [`status_line`] convert headers and statuses to and from the text forms the
//! IIS interfaces use (`ALL_RAW`, `HSE_SEND_HEADER_EX_INFO`).

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode, Uri, Version};

use crate::{ConnectionInfo, HostVariables, Identity, PathBase};

/// Where a host reads server variables from.
///
/// The mapping reads variables through [`append`](Self::append) and
/// [`append_unicode`](Self::append_unicode) into a few buffers it reuses
/// for the whole request, so a host that can copy a value straight from its
/// own buffer should override those two; their defaults go through
/// [`get`](Self::get) and [`get_unicode`](Self::get_unicode).
pub trait ServerVariables {
    /// The value of a plain variable, in the bytes the host gives (IIS: the
    /// system code page), or `None` if the host does not know it.
    fn get(&self, name: &str) -> Option<Vec<u8>>;

    /// The value of a `UNICODE_` variable, decoded from the host's UTF-16, or
    /// `None` if the host does not know it.
    fn get_unicode(&self, name: &str) -> Option<String>;

    /// Appends the value of a plain variable to `out` and returns `true`, or
    /// returns `false` with `out` unchanged if the host does not know it.
    fn append(&self, name: &str, out: &mut Vec<u8>) -> bool {
        match self.get(name) {
            Some(value) => {
                out.extend_from_slice(&value);
                true
            }
            None => false,
        }
    }

    /// Appends the decoded value of a `UNICODE_` variable to `out` and
    /// returns `true`, or returns `false` with `out` unchanged if the host
    /// does not know it.
    fn append_unicode(&self, name: &str, out: &mut String) -> bool {
        match self.get_unicode(name) {
            Some(value) => {
                out.push_str(&value);
                true
            }
            None => false,
        }
    }
}

/// Runs `f` with `name` NUL-terminated, as the IIS interfaces take variable
/// names — on the stack when it is short, as names are; `None` (and `f` not
/// run) when `name` itself holds a NUL.
pub fn with_nul_terminated<R>(name: &str, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
    if name.bytes().any(|b| b == 0) {
        return None;
    }
    let mut short = [0u8; 64];
    if name.len() < short.len() {
        short[..name.len()].copy_from_slice(name.as_bytes());
        return Some(f(&mut short[..=name.len()]));
    }
    let mut long = Vec::with_capacity(name.len() + 1);
    long.extend_from_slice(name.as_bytes());
    long.push(0);
    Some(f(&mut long))
}

/// Appends UTF-16 `units` (a `UNICODE_` variable as IIS returns it) to
/// `out`, replacing invalid sequences with U+FFFD as
/// [`String::from_utf16_lossy`] does.
pub fn push_utf16_lossy(out: &mut String, units: &[u16]) {
    out.extend(
        char::decode_utf16(units.iter().copied()).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)),
    );
}

/// The variables kept as [`HostVariables`] for plugins and apps.
/// ([`request_from_live_variables`] reads the ones the mapping does not
/// need only when they are asked for.)
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

/// The [`KEPT_VARIABLES`] the mapping itself does not use: a host whose
/// variables stay readable while the request runs leaves them to be read on
/// first use (every read is a call into IIS, and few requests need them).
const ON_DEMAND: [&str; 5] = [
    "LOGON_USER",
    "AUTH_USER",
    "APPL_PHYSICAL_PATH",
    "SERVER_NAME",
    "INSTANCE_ID",
];

/// The unicode form of a kept variable that has one (the user names).
fn unicode_form(name: &str) -> Option<&'static str> {
    match name {
        "REMOTE_USER" => Some("UNICODE_REMOTE_USER"),
        "LOGON_USER" => Some("UNICODE_LOGON_USER"),
        "AUTH_USER" => Some("UNICODE_AUTH_USER"),
        _ => None,
    }
}

/// Appends kept variable `name` to `out` as [`HostVariables`] holds it (the
/// user names as UTF-8, from their `UNICODE_` form when there is one);
/// `false` and `out` unchanged when the host reports none.
fn read_kept(vars: &dyn ServerVariables, name: &str, out: &mut Vec<u8>, text: &mut String) -> bool {
    match unicode_form(name) {
        Some(unicode_name) => user_name(vars, name, unicode_name, out, text),
        None => vars.append(name, out),
    }
}

/// The variables of one request left to be read when first asked for,
/// with the host's view of the request they are read from (`V`, a host's
/// own type, then unsized to [`LiveVariables`]: one allocation for both).
pub(crate) struct OnDemand<V: ?Sized> {
    values: [std::sync::OnceLock<Option<Bytes>>; ON_DEMAND.len()],
    source: V,
}

/// [`OnDemand`] whatever the host.
pub(crate) type LiveVariables = OnDemand<dyn ServerVariables + Send + Sync>;

impl LiveVariables {
    fn new<V: ServerVariables + Send + Sync + 'static>(source: V) -> std::sync::Arc<Self> {
        std::sync::Arc::new(OnDemand {
            values: Default::default(),
            source,
        })
    }

    /// The value of `name` if it is one of these, read from the host the
    /// first time.
    pub(crate) fn get(&self, name: &str) -> Option<&Bytes> {
        let i = ON_DEMAND
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))?;
        self.value(i)
    }

    fn value(&self, i: usize) -> Option<&Bytes> {
        self.values[i]
            .get_or_init(|| {
                let mut out = Vec::new();
                read_kept(&self.source, ON_DEMAND[i], &mut out, &mut String::new())
                    .then(|| Bytes::from(out))
            })
            .as_ref()
    }

    /// Every one with a value, reading those not read yet.
    pub(crate) fn read_all(&self) -> impl Iterator<Item = (&str, &Bytes)> {
        (0..ON_DEMAND.len()).filter_map(|i| Some((ON_DEMAND[i], self.value(i)?)))
    }

    /// Those read so far that have a value.
    pub(crate) fn read_so_far(&self) -> impl Iterator<Item = (&str, &Bytes)> {
        ON_DEMAND
            .iter()
            .zip(&self.values)
            .filter_map(|(n, v)| Some((*n, v.get()?.as_ref()?)))
    }

    /// The names not read yet.
    pub(crate) fn unread(&self) -> impl Iterator<Item = &'static str> + '_ {
        ON_DEMAND
            .iter()
            .zip(&self.values)
            .filter(|(_, v)| v.get().is_none())
            .map(|(n, _)| *n)
    }
}

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

fn text<'a>(name: &'static str, bytes: &'a [u8]) -> Result<&'a str, MappingError> {
    std::str::from_utf8(bytes).map_err(|_| MappingError::Invalid {
        name,
        why: "not text".into(),
    })
}

/// Appends the user name from the host to `out` as UTF-8: the `UNICODE_`
/// form when there is one (IIS converts it from UTF-16 without loss), else
/// the plain form, which is in the system code page — taken as UTF-8 when
/// it is valid, else as Latin-1. `false` (and `out` unchanged) when the host
/// reports no name or an empty one.
fn user_name(
    vars: &dyn ServerVariables,
    name: &str,
    unicode_name: &str,
    out: &mut Vec<u8>,
    text: &mut String,
) -> bool {
    text.clear();
    if vars.append_unicode(unicode_name, text) && !text.is_empty() {
        out.extend_from_slice(text.as_bytes());
        return true;
    }
    let start = out.len();
    if !vars.append(name, out) || out.len() == start {
        out.truncate(start);
        return false;
    }
    if std::str::from_utf8(&out[start..]).is_err() {
        text.clear();
        text.extend(out[start..].iter().map(|&b| char::from(b)));
        out.truncate(start);
        out.extend_from_slice(text.as_bytes());
    }
    true
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
        kept.set_on_demand(LiveVariables::new(vars));
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
    if !vars.append("HTTP_URL", &mut arena) || arena.is_empty() {
        arena.clear();
        if !vars.append("URL", &mut arena) {
            return Err(MappingError::Missing("HTTP_URL"));
        }
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
        vars.append("ALL_RAW", &mut arena);
        arena.len()
    };
    let facts = RawFacts::read(vars, &mut arena, live, None)?;
    let arena = Bytes::from(arena);
    let headers = parse_header_bytes(&arena.slice(raw_headers))?;
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
    facts.variables.set_on_demand(LiveVariables::new(vars));
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
            if read_kept(vars, name, arena, &mut text) {
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
                socket(vars, "LOCAL_ADDR", "SERVER_PORT", arena)?,
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

/// Parses a raw header block (`ALL_RAW`: `Name: value` lines ending in CRLF;
/// bare LF tolerated). Values keep their bytes, obs-text included; folded
/// continuation lines join the previous value with one space.
pub fn parse_header_block(block: &[u8]) -> Result<HeaderMap, MappingError> {
    parse_headers(block, |value| HeaderValue::from_bytes(value).ok())
}

/// [`parse_header_block`] on a shared buffer: the values are slices of
/// `block` rather than copies (except folded ones).
pub fn parse_header_bytes(block: &Bytes) -> Result<HeaderMap, MappingError> {
    parse_headers(block, |value| {
        HeaderValue::from_maybe_shared(block.slice_ref(value)).ok()
    })
}

/// The header parser; `value` makes a value from a part of `block` (`None`
/// if it holds control characters).
fn parse_headers(
    block: &[u8],
    value: impl Fn(&[u8]) -> Option<HeaderValue>,
) -> Result<HeaderMap, MappingError> {
    let bad = |why: String| MappingError::Invalid {
        name: "ALL_RAW",
        why,
    };
    let mut headers = HeaderMap::new();
    // A value is copied only when a continuation line extends it.
    let mut last: Option<(HeaderName, Cow<'_, [u8]>)> = None;
    let flush = |headers: &mut HeaderMap,
                 entry: Option<(HeaderName, Cow<'_, [u8]>)>|
     -> Result<(), MappingError> {
        if let Some((name, raw)) = entry {
            let made = match raw {
                Cow::Borrowed(raw) => value(raw.trim_ascii()),
                Cow::Owned(raw) => HeaderValue::from_bytes(raw.trim_ascii()).ok(),
            };
            let made = made
                .ok_or_else(|| bad(format!("header {name} has a value with control characters")))?;
            headers.append(name, made);
        }
        Ok(())
    };
    for line in block.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            let (_, folded) = last
                .as_mut()
                .ok_or_else(|| bad("a continuation line comes first".into()))?;
            let folded = folded.to_mut();
            folded.push(b' ');
            folded.extend_from_slice(line.trim_ascii());
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
        last = Some((name, Cow::Borrowed(&line[colon + 1..])));
    }
    flush(&mut headers, last)?;
    Ok(headers)
}

/// The header block IIS takes with a response status: `Name: value` lines,
/// each ending in CRLF, and the blank line that ends the head.
pub fn header_block(headers: &HeaderMap) -> Vec<u8> {
    let mut out = Vec::with_capacity(headers.len() * 32 + 2);
    append_header_block(&mut out, headers);
    out
}

/// [`header_block`], appended to `out`.
pub fn append_header_block(out: &mut Vec<u8>, headers: &HeaderMap) {
    append_header_lines(out, headers);
    out.extend_from_slice(b"\r\n");
}

/// [`append_header_block`] without the empty line that ends the block, for
/// a caller that adds headers of its own after these.
pub fn append_header_lines(out: &mut Vec<u8>, headers: &HeaderMap) {
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// `n` in decimal, written into the end of `buf` (a `u64` has at most 20
/// digits): for a header value without formatting machinery or allocation.
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// The status as IIS takes it: `200 OK`, or the bare code when there is no
/// standard reason phrase.
pub fn status_line(status: StatusCode) -> String {
    let mut out = Vec::with_capacity(32);
    append_status_line(&mut out, status);
    // Digits and a standard reason phrase: ASCII.
    String::from_utf8_lossy(&out).into_owned()
}

/// [`status_line`], appended to `out`.
pub fn append_status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(status.as_str().as_bytes());
    if let Some(reason) = status.canonical_reason() {
        out.push(b' ');
        out.extend_from_slice(reason.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuthScheme, RequestExt};
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
            kept.get("AUTH_USER").map(|v| v.to_vec()),
            Some("EXAMPLE\\jörg".as_bytes().to_vec()),
            "a plain name in the code page comes out as UTF-8"
        );
        // Every kept variable, whichever way it was read.
        assert_eq!(sorted(kept), sorted(eager.host_variables().unwrap()));
        assert_eq!(kept.len(), KEPT_VARIABLES.len());
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
            ("LOGON_USER", "EXAMPLE\\jörg"),
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
    fn names_are_nul_terminated_short_or_long() {
        for name in ["", "HTTP_URL", &"X".repeat(63), &"Y".repeat(200)] {
            let got = with_nul_terminated(name, |z| z.to_vec()).unwrap();
            assert_eq!(got, [name.as_bytes(), b"\0"].concat());
        }
        assert_eq!(with_nul_terminated("A\0B", |_| unreachable!()), None::<()>);
    }

    #[test]
    fn utf16_is_appended_with_bad_units_replaced() {
        let mut out = String::from("EXAMPLE\\");
        let units: Vec<u16> = "jörg 張".encode_utf16().chain([0xD800, 0x41]).collect();
        push_utf16_lossy(&mut out, &units);
        assert_eq!(out, "EXAMPLE\\jörg 張\u{FFFD}A");
        assert_eq!(out[8..], String::from_utf16_lossy(&units));
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
        // The same from a shared buffer, whose unfolded values are not
        // copied.
        let shared = Bytes::from_static(raw);
        let from_bytes = parse_header_bytes(&shared).unwrap();
        assert_eq!(from_bytes, h);
        let inside = |v: &HeaderValue| shared.as_ptr_range().contains(&v.as_bytes().as_ptr());
        assert!(inside(&from_bytes["x-latin"]));
        assert!(!inside(&from_bytes["x-folded"]), "a folded value is new");
        assert!(parse_header_bytes(&Bytes::from_static(b"A: x\x01y\r\n")).is_err());
    }

    #[test]
    fn decimals_are_written_whole() {
        for n in [0, 7, 10, 99, 4096, u64::from(u32::MAX), u64::MAX] {
            assert_eq!(decimal(n, &mut [0; 20]), n.to_string().as_bytes());
        }
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
