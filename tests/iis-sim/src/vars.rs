//! Server variables, as IIS reports them to an extension.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, Version};
use iis_sys::httpext::ERROR_INVALID_INDEX;

use crate::auth::WindowsUser;

/// What the variables describe.
pub(crate) struct RequestInfo {
    pub method: http::Method,
    /// Path and query as the client sent them.
    pub target: Vec<u8>,
    /// Where the path ends in `target` (a `?` and the query may follow).
    pub path_end: usize,
    pub version: Version,
    pub headers: HeaderMap,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    pub user: Option<WindowsUser>,
    /// `/` or `/portal`.
    pub vdir: Arc<str>,
    pub site_id: u32,
    pub physical_path: Arc<str>,
    /// Variables this host does not report ([`Config::absent_variables`](crate::Config::absent_variables)).
    pub absent: Arc<[String]>,
    /// [`Config::header_derived_variables`](crate::Config::header_derived_variables).
    pub header_derived: bool,
}

/// Appends `s` in the system code page: Windows-1252's Latin-1 part as is,
/// everything else as `?` (what `WideCharToMultiByte` does with a default
/// character).
fn push_code_page(out: &mut Vec<u8>, s: &str) {
    out.extend(s.chars().map(|c| {
        if (c as u32) < 0x100 {
            c as u32 as u8
        } else {
            b'?'
        }
    }));
}

/// Whether header `name` (lower case, as `http` stores it) is the one a
/// CGI-style name (`CONTENT_TYPE`, `X_CUSTOM`) stands for.
fn header_matches(name: &str, cgi: &str) -> bool {
    name.len() == cgi.len()
        && name.bytes().zip(cgi.bytes()).all(|(h, c)| match c {
            b'_' => h == b'-',
            c => h == c.to_ascii_lowercase(),
        })
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// Appends `value` as text.
fn shown(out: &mut Vec<u8>, value: impl std::fmt::Display) -> Kind {
    use std::io::Write as _;
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{value}");
    Kind::Text
}

/// Appends `n` in decimal (as [`shown`] would, without the formatting
/// machinery: a request asks for a few numbers).
fn decimal(out: &mut Vec<u8>, n: u32) -> Kind {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    Kind::Text
}

/// Appends an address as text: dotted decimal for IPv4, the standard form
/// for IPv6.
fn address(out: &mut Vec<u8>, ip: std::net::IpAddr) -> Kind {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                decimal(out, u32::from(octet));
            }
            Kind::Text
        }
        v6 => shown(out, v6),
    }
}

/// What a variable's value is before `GetServerVariable` encodes it.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// UTF-8 text: the plain form is in the code page.
    Text,
    /// Bytes as the client sent them: the plain form is as is.
    Bytes,
}

thread_local! {
    /// A variable's value before it is encoded (`UNICODE_` forms).
    static RAW: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl RequestInfo {
    /// The path as the client sent it.
    pub(crate) fn path(&self) -> &[u8] {
        &self.target[..self.path_end]
    }

    /// The query, without its `?`; empty when there is none.
    pub(crate) fn query(&self) -> &[u8] {
        self.target.get(self.path_end + 1..).unwrap_or_default()
    }

    #[cfg(test)]
    pub(crate) fn clone_for_test(&self) -> RequestInfo {
        RequestInfo {
            method: self.method.clone(),
            target: self.target.clone(),
            path_end: self.path_end,
            version: self.version,
            headers: self.headers.clone(),
            remote: self.remote,
            local: self.local,
            user: self.user.clone(),
            vdir: self.vdir.clone(),
            site_id: self.site_id,
            physical_path: self.physical_path.clone(),
            absent: self.absent.clone(),
            header_derived: self.header_derived,
        }
    }

    /// Appends the values of the header a CGI-style name stands for,
    /// joined by commas; `false` if the request has none.
    fn header(&self, cgi: &str, out: &mut Vec<u8>) -> bool {
        let mut found = false;
        for (name, value) in &self.headers {
            if header_matches(name.as_str(), cgi) {
                if found {
                    out.push(b',');
                }
                out.extend_from_slice(value.as_bytes());
                found = true;
            }
        }
        found
    }

    /// Appends the value of variable `name` (upper case, no `UNICODE_`
    /// prefix) to `out`; `None` for a name IIS does not know.
    fn value(&self, name: &str, out: &mut Vec<u8>) -> Option<Kind> {
        use std::io::Write as _;
        if self.header_derived {
            if let Some(header) = name.strip_prefix("HTTP_") {
                if self.header(header, out) {
                    return Some(Kind::Bytes);
                }
            }
        }

        let mut text = |s: &str| {
            out.extend_from_slice(s.as_bytes());
            Kind::Text
        };
        Some(match name {
            "REQUEST_METHOD" => text(self.method.as_str()),
            "HTTP_URL" => {
                out.extend_from_slice(&self.target);
                Kind::Bytes
            }
            // Decoded, as IIS reports them (HTTP_URL is the raw form).
            "URL" | "SCRIPT_NAME" | "PATH_INFO" => {
                out.extend_from_slice(
                    crate::server::cook_path(&String::from_utf8_lossy(self.path())).as_bytes(),
                );
                Kind::Text
            }
            "QUERY_STRING" => {
                out.extend_from_slice(self.query());
                Kind::Bytes
            }
            "SERVER_PROTOCOL" => text(protocol(self.version)),
            "HTTPS" => text("off"),
            "SERVER_PORT_SECURE" => text("0"),
            "GATEWAY_INTERFACE" => text("CGI/1.1"),
            "SERVER_SOFTWARE" => text("Microsoft-IIS/10.0 (kallithea iis-sim)"),
            "AUTH_TYPE" => text(self.user.as_ref().map_or("", |u| &u.auth_type)),
            "REMOTE_USER" | "LOGON_USER" => text(self.user.as_ref().map_or("", |u| &u.name)),
            "AUTH_USER" => text(self.user.as_ref().map_or("", |u| &u.name)),
            "APPL_PHYSICAL_PATH" => text(&self.physical_path),
            "REMOTE_ADDR" | "REMOTE_HOST" => address(out, self.remote.ip()),
            "REMOTE_PORT" => decimal(out, self.remote.port().into()),
            "LOCAL_ADDR" => address(out, self.local.ip()),
            "SERVER_PORT" => decimal(out, self.local.port().into()),
            "INSTANCE_ID" => decimal(out, self.site_id),
            "APPL_MD_PATH" => {
                let vdir = if &*self.vdir == "/" { "" } else { &self.vdir };
                let _ = write!(out, "/LM/W3SVC/{}/ROOT{vdir}", self.site_id);
                Kind::Text
            }
            "SERVER_NAME" => {
                let start = out.len();
                if self.header("HOST", out) {
                    // Without the port.
                    if let Some(colon) = out[start..].iter().rposition(|&b| b == b':') {
                        if out[start + colon + 1..].iter().all(u8::is_ascii_digit) {
                            out.truncate(start + colon);
                        }
                    }
                    Kind::Bytes
                } else {
                    address(out, self.local.ip())
                }
            }
            "CONTENT_LENGTH" => {
                if !self.header("CONTENT_LENGTH", out) {
                    out.push(b'0');
                }
                Kind::Bytes
            }
            "CONTENT_TYPE" => {
                self.header("CONTENT_TYPE", out);
                Kind::Bytes
            }
            "ALL_RAW" => {
                for (n, v) in &self.headers {
                    out.extend_from_slice(n.as_str().as_bytes());
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(v.as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                Kind::Bytes
            }
            "ALL_HTTP" => {
                for (n, v) in &self.headers {
                    out.extend_from_slice(b"HTTP_");
                    out.extend(n.as_str().bytes().map(|b| match b {
                        b'-' => b'_',
                        b => b.to_ascii_uppercase(),
                    }));
                    out.push(b':');
                    out.extend_from_slice(v.as_bytes());
                    out.push(b'\n');
                }
                Kind::Bytes
            }
            other => {
                if !self.header(other.strip_prefix("HTTP_")?, out) {
                    return None;
                }
                Kind::Bytes
            }
        })
    }

    /// The variable's value as `GetServerVariable` copies it: the plain form
    /// in the code page with one NUL, the `UNICODE_` form in UTF-16LE with a
    /// two-byte NUL; `ERROR_INVALID_INDEX` for a name IIS does not know.
    pub(crate) fn lookup(&self, name: &str) -> Result<Vec<u8>, u32> {
        let mut out = Vec::new();
        self.lookup_into(name, &mut out)?;
        Ok(out)
    }

    /// [`lookup`](Self::lookup) into `out` (cleared first), reusing its
    /// room.
    pub(crate) fn lookup_into(&self, name: &str, out: &mut Vec<u8>) -> Result<(), u32> {
        out.clear();
        let upper = if name.bytes().any(|b| b.is_ascii_lowercase()) {
            Cow::Owned(name.to_ascii_uppercase())
        } else {
            Cow::Borrowed(name)
        };
        if self.header_derived {
            // Such a host has `HTTP_<NAME>` for every header, its own
            // variables or not.
            if let Some(header) = upper.strip_prefix("HTTP_") {
                if self.header(header, out) {
                    return Ok(());
                }
            }
        }
        if self.absent.iter().any(|a| *a == *upper) {
            return Err(ERROR_INVALID_INDEX);
        }
        match upper.strip_prefix("UNICODE_") {
            Some(base) => RAW.with(|raw| {
                let mut own = Vec::new();
                let mut borrowed = raw.try_borrow_mut();
                let raw = match &mut borrowed {
                    Ok(raw) => &mut **raw,
                    Err(_) => &mut own,
                };
                raw.clear();
                self.value(base, raw).ok_or(ERROR_INVALID_INDEX)?;
                let text = String::from_utf8_lossy(raw);
                out.reserve(2 * text.len() + 2);
                for unit in text.encode_utf16() {
                    out.extend_from_slice(&unit.to_le_bytes());
                }
                out.extend_from_slice(&[0, 0]);
                Ok(())
            }),
            None => {
                let kind = self.value(&upper, out).ok_or(ERROR_INVALID_INDEX)?;
                if kind == Kind::Text && !out.is_ascii() {
                    let text = String::from_utf8_lossy(out).into_owned();
                    out.clear();
                    push_code_page(out, &text);
                }
                out.push(0);
                Ok(())
            }
        }
    }
}
