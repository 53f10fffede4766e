//! Server variables, as IIS reports them to an extension.

use std::borrow::Cow;
use std::net::SocketAddr;

use host_isapi::ffi::ERROR_INVALID_INDEX;
use http::{HeaderMap, Version};

use crate::auth::WindowsUser;

/// What the variables describe.
pub(crate) struct RequestInfo {
    pub method: String,
    /// Path and query as the client sent them.
    pub target: Vec<u8>,
    pub path: Vec<u8>,
    pub query: Vec<u8>,
    pub version: Version,
    pub headers: HeaderMap,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    pub user: Option<WindowsUser>,
    /// `/` or `/portal`.
    pub vdir: String,
    pub site_id: u32,
    pub physical_path: String,
}

/// A string in the system code page: Windows-1252's Latin-1 part as is,
/// everything else as `?` (what `WideCharToMultiByte` does with a default
/// character).
fn code_page(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| {
            if (c as u32) < 0x100 {
                c as u32 as u8
            } else {
                b'?'
            }
        })
        .collect()
}

/// `bytes` and a terminating NUL, in one allocation.
fn with_nul(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 1);
    out.extend_from_slice(bytes);
    out.push(0);
    out
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

/// A variable's value: borrowed from the request where it is stored as is.
enum Value<'a> {
    Bytes(Cow<'a, [u8]>),
    Text(Cow<'a, str>),
}

impl RequestInfo {
    #[cfg(test)]
    pub(crate) fn clone_for_test(&self) -> RequestInfo {
        RequestInfo {
            method: self.method.clone(),
            target: self.target.clone(),
            path: self.path.clone(),
            query: self.query.clone(),
            version: self.version,
            headers: self.headers.clone(),
            remote: self.remote,
            local: self.local,
            user: self.user.clone(),
            vdir: self.vdir.clone(),
            site_id: self.site_id,
            physical_path: self.physical_path.clone(),
        }
    }

    fn header(&self, name: &str) -> Option<Vec<u8>> {
        let name = name.to_ascii_lowercase().replace('_', "-");
        let name = http::HeaderName::from_bytes(name.as_bytes()).ok()?;
        let mut values = self.headers.get_all(name).iter();
        let first = values.next()?;
        let mut out = first.as_bytes().to_vec();
        for v in values {
            out.extend_from_slice(b",");
            out.extend_from_slice(v.as_bytes());
        }
        Some(out)
    }

    fn value(&self, name: &str) -> Option<Value<'_>> {
        let text = |s: &'static str| Value::Text(Cow::Borrowed(s));
        let owned = |s: String| Value::Text(Cow::Owned(s));
        let bytes = |b: &[u8]| Value::Bytes(Cow::Owned(b.to_vec()));
        let user = |auth_user: bool| match &self.user {
            Some(u) if !auth_user || !u.name.is_empty() => Value::Text(Cow::Borrowed(&u.name)),
            _ => text(""),
        };
        Some(match name {
            "REQUEST_METHOD" => Value::Text(Cow::Borrowed(&self.method)),
            "HTTP_URL" => Value::Bytes(Cow::Borrowed(&self.target)),
            "URL" | "SCRIPT_NAME" | "PATH_INFO" => Value::Bytes(Cow::Borrowed(&self.path)),
            "QUERY_STRING" => Value::Bytes(Cow::Borrowed(&self.query)),
            "SERVER_PROTOCOL" => text(protocol(self.version)),
            "REMOTE_ADDR" | "REMOTE_HOST" => owned(self.remote.ip().to_string()),
            "REMOTE_PORT" => owned(self.remote.port().to_string()),
            "LOCAL_ADDR" => owned(self.local.ip().to_string()),
            "SERVER_PORT" => owned(self.local.port().to_string()),
            "SERVER_NAME" => {
                let host = self
                    .header("HOST")
                    .map(|h| String::from_utf8_lossy(&h).into_owned())
                    .unwrap_or_else(|| self.local.ip().to_string());
                let name = match host.rsplit_once(':') {
                    Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h.to_owned(),
                    _ => host,
                };
                owned(name)
            }
            "HTTPS" => text("off"),
            "SERVER_PORT_SECURE" => text("0"),
            "GATEWAY_INTERFACE" => text("CGI/1.1"),
            "SERVER_SOFTWARE" => text("Microsoft-IIS/10.0 (kallithea iis-sim)"),
            "AUTH_TYPE" => match &self.user {
                Some(u) => Value::Text(Cow::Borrowed(&u.auth_type)),
                None => text(""),
            },
            "REMOTE_USER" | "LOGON_USER" => user(false),
            "AUTH_USER" => user(true),
            "APPL_MD_PATH" => owned(format!(
                "/LM/W3SVC/{}/ROOT{}",
                self.site_id,
                if self.vdir == "/" { "" } else { &self.vdir }
            )),
            "APPL_PHYSICAL_PATH" => Value::Text(Cow::Borrowed(&self.physical_path)),
            "INSTANCE_ID" => owned(self.site_id.to_string()),
            "CONTENT_LENGTH" => match self.header("CONTENT_LENGTH") {
                Some(v) => Value::Bytes(Cow::Owned(v)),
                None => bytes(b"0"),
            },
            "CONTENT_TYPE" => {
                Value::Bytes(Cow::Owned(self.header("CONTENT_TYPE").unwrap_or_default()))
            }
            "ALL_RAW" => {
                let mut out = Vec::new();
                for (n, v) in &self.headers {
                    out.extend_from_slice(n.as_str().as_bytes());
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(v.as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                Value::Bytes(Cow::Owned(out))
            }
            "ALL_HTTP" => {
                let mut out = Vec::new();
                for (n, v) in &self.headers {
                    out.extend_from_slice(b"HTTP_");
                    out.extend_from_slice(
                        n.as_str().to_ascii_uppercase().replace('-', "_").as_bytes(),
                    );
                    out.push(b':');
                    out.extend_from_slice(v.as_bytes());
                    out.push(b'\n');
                }
                Value::Bytes(Cow::Owned(out))
            }
            other => Value::Bytes(Cow::Owned(self.header(other.strip_prefix("HTTP_")?)?)),
        })
    }

    /// The variable's value as `GetServerVariable` copies it: the plain form
    /// in the code page with one NUL, the `UNICODE_` form in UTF-16LE with a
    /// two-byte NUL; `ERROR_INVALID_INDEX` for a name IIS does not know.
    pub(crate) fn lookup(&self, name: &str) -> Result<Vec<u8>, u32> {
        let upper = if name.bytes().any(|b| b.is_ascii_lowercase()) {
            std::borrow::Cow::Owned(name.to_ascii_uppercase())
        } else {
            std::borrow::Cow::Borrowed(name)
        };
        match upper.strip_prefix("UNICODE_") {
            Some(base) => {
                let value = self.value(base).ok_or(ERROR_INVALID_INDEX)?;
                let text = match &value {
                    Value::Text(t) => Cow::Borrowed(t.as_ref()),
                    Value::Bytes(b) => String::from_utf8_lossy(b),
                };
                let mut out = Vec::with_capacity(2 * text.len() + 2);
                for unit in text.encode_utf16() {
                    out.extend_from_slice(&unit.to_le_bytes());
                }
                out.extend_from_slice(&[0, 0]);
                Ok(out)
            }
            None => {
                let value = self.value(&upper).ok_or(ERROR_INVALID_INDEX)?;
                Ok(match value {
                    Value::Text(t) if t.is_ascii() => with_nul(t.as_bytes()),
                    Value::Text(t) => with_nul(&code_page(&t)),
                    Value::Bytes(b) => with_nul(&b),
                })
            }
        }
    }
}
