//! Server variables, as IIS reports them to an extension.

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

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

enum Value {
    Bytes(Vec<u8>),
    Text(String),
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

    fn value(&self, name: &str) -> Option<Value> {
        use Value::{Bytes, Text};
        let user = |auth_user: bool| match &self.user {
            Some(u) if !auth_user || !u.name.is_empty() => Text(u.name.clone()),
            _ => Text(String::new()),
        };
        Some(match name {
            "REQUEST_METHOD" => Text(self.method.clone()),
            "HTTP_URL" => Bytes(self.target.clone()),
            "URL" | "SCRIPT_NAME" | "PATH_INFO" => Bytes(self.path.clone()),
            "QUERY_STRING" => Bytes(self.query.clone()),
            "SERVER_PROTOCOL" => Text(protocol(self.version).into()),
            "REMOTE_ADDR" | "REMOTE_HOST" => Text(self.remote.ip().to_string()),
            "REMOTE_PORT" => Text(self.remote.port().to_string()),
            "LOCAL_ADDR" => Text(self.local.ip().to_string()),
            "SERVER_PORT" => Text(self.local.port().to_string()),
            "SERVER_NAME" => {
                let host = self
                    .header("HOST")
                    .map(|h| String::from_utf8_lossy(&h).into_owned())
                    .unwrap_or_else(|| self.local.ip().to_string());
                let name = match host.rsplit_once(':') {
                    Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h.to_owned(),
                    _ => host,
                };
                Text(name)
            }
            "HTTPS" => Text("off".into()),
            "SERVER_PORT_SECURE" => Text("0".into()),
            "GATEWAY_INTERFACE" => Text("CGI/1.1".into()),
            "SERVER_SOFTWARE" => Text("Microsoft-IIS/10.0 (kallithea iis-sim)".into()),
            "AUTH_TYPE" => Text(
                self.user
                    .as_ref()
                    .map_or(String::new(), |u| u.auth_type.clone()),
            ),
            "REMOTE_USER" | "LOGON_USER" => user(false),
            "AUTH_USER" => user(true),
            "APPL_MD_PATH" => Text(format!(
                "/LM/W3SVC/{}/ROOT{}",
                self.site_id,
                if self.vdir == "/" { "" } else { &self.vdir }
            )),
            "APPL_PHYSICAL_PATH" => Text(self.physical_path.clone()),
            "INSTANCE_ID" => Text(self.site_id.to_string()),
            "CONTENT_LENGTH" => Bytes(
                self.header("CONTENT_LENGTH")
                    .unwrap_or_else(|| b"0".to_vec()),
            ),
            "CONTENT_TYPE" => Bytes(self.header("CONTENT_TYPE").unwrap_or_default()),
            "ALL_RAW" => {
                let mut out = Vec::new();
                for (n, v) in &self.headers {
                    out.extend_from_slice(n.as_str().as_bytes());
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(v.as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                Bytes(out)
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
                Bytes(out)
            }
            other => Bytes(self.header(other.strip_prefix("HTTP_")?)?),
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
                let text = match self.value(base).ok_or(ERROR_INVALID_INDEX)? {
                    Value::Text(t) => t,
                    Value::Bytes(b) => String::from_utf8_lossy(&b).into_owned(),
                };
                let mut out: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
                out.extend_from_slice(&[0, 0]);
                Ok(out)
            }
            None => {
                let mut out = match self.value(&upper).ok_or(ERROR_INVALID_INDEX)? {
                    Value::Text(t) if t.is_ascii() => t.into_bytes(),
                    Value::Text(t) => code_page(&t),
                    Value::Bytes(b) => b,
                };
                out.push(0);
                Ok(out)
            }
        }
    }
}
