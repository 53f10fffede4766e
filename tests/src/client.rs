//! Clients the cases use: hyper's client for ordinary requests, and a raw
//! HTTP/1.1 connection for byte-exact requests and framing checks.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client as LegacyClient};
use hyper_util::rt::TokioExecutor;
use kallithea_core::Body;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one read or one whole small exchange may take before a case fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// A pooled HTTP client for one host.
#[derive(Clone)]
pub struct Client {
    addr: SocketAddr,
    h1: LegacyClient<HttpConnector, Body>,
    h2: LegacyClient<HttpConnector, Body>,
}

/// A response read whole.
#[derive(Debug)]
pub struct Full {
    /// The status.
    pub status: http::StatusCode,
    /// The headers.
    pub headers: http::HeaderMap,
    /// The body.
    pub body: Bytes,
    /// The protocol version.
    pub version: http::Version,
}

impl Full {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Client {
    /// A client for the host at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let h1 = LegacyClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(5))
            .build(connector.clone());
        let h2 = LegacyClient::builder(TokioExecutor::new())
            .http2_only(true)
            .build(connector);
        Client { addr, h1, h2 }
    }

    /// `http://addr{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A request builder for `method` and `path`.
    pub fn request(&self, method: &str, path: &str) -> http::request::Builder {
        Request::builder().method(method).uri(self.url(path))
    }

    /// Sends over HTTP/1.1 and returns the streaming response.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, String> {
        timed(self.h1.request(req), "response head")
            .await?
            .map_err(|e| format!("request failed: {e:?}"))
    }

    /// Sends over HTTP/2 (prior knowledge) and returns the streaming response.
    pub async fn send_h2(&self, req: Request<Body>) -> Result<Response<Incoming>, String> {
        timed(self.h2.request(req), "HTTP/2 response head")
            .await?
            .map_err(|e| format!("HTTP/2 request failed: {e:?}"))
    }

    /// Sends over HTTP/1.1 and reads the whole response.
    pub async fn fetch(&self, req: Request<Body>) -> Result<Full, String> {
        read_full(self.send(req).await?).await
    }

    /// `GET path`, read whole.
    pub async fn get(&self, path: &str) -> Result<Full, String> {
        self.fetch(
            self.request("GET", path)
                .body(Body::empty())
                .map_err(|e| e.to_string())?,
        )
        .await
    }
}

/// Reads a streaming response whole.
pub async fn read_full(resp: Response<Incoming>) -> Result<Full, String> {
    let (parts, body) = resp.into_parts();
    let body = timed(body.collect(), "response body")
        .await?
        .map_err(|e| format!("reading the response body failed: {e}"))?
        .to_bytes();
    Ok(Full {
        status: parts.status,
        headers: parts.headers,
        body,
        version: parts.version,
    })
}

/// Runs `fut` with [`IO_TIMEOUT`], naming `what` on timeout.
pub async fn timed<F: std::future::Future>(fut: F, what: &str) -> Result<F::Output, String> {
    tokio::time::timeout(IO_TIMEOUT, fut)
        .await
        .map_err(|_| format!("timed out after {IO_TIMEOUT:?} waiting for the {what}"))
}

/// A raw HTTP/1.1 connection: the request goes out exactly as written.
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// A response parsed from a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// Header names (lower-cased) and raw values, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The de-chunked body.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The values of header `name`.
    pub fn header_values(&self, name: &str) -> Vec<&[u8]> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
            .collect()
    }
}

impl RawConn {
    /// This end's address (the one the server sees as the client's).
    pub fn local_addr(&self) -> SocketAddr {
        self.stream
            .local_addr()
            .expect("a connected socket has an address")
    }

    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Result<Self, String> {
        let stream = timed(TcpStream::connect(addr), "connection")
            .await?
            .map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        Ok(RawConn {
            stream,
            buf: Vec::new(),
        })
    }

    /// Writes bytes as they are.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        timed(self.stream.write_all(bytes), "write")
            .await?
            .map_err(|e| format!("write: {e}"))
    }

    /// Writes `piece` again and again (at most `limit` bytes in all) until
    /// the response's head arrives, then reads the response. For a body the
    /// server answers without reading whole, however much of it the server
    /// reads before the app runs.
    pub async fn send_until_answered(
        &mut self,
        piece: &[u8],
        limit: usize,
    ) -> Result<RawResponse, String> {
        let RawConn { stream, buf } = self;
        let (mut rd, mut wr) = stream.split();
        let writer = async {
            let mut sent = 0;
            while sent < limit {
                if wr.write_all(piece).await.is_err() {
                    break;
                }
                sent += piece.len();
            }
            // Written all it may: only the reader ends the race.
            std::future::pending::<()>().await
        };
        let reader = async {
            let mut chunk = [0u8; 16 * 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match rd.read(&mut chunk).await {
                    Ok(0) => return Err("connection closed before the response".to_owned()),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) => return Err(format!("read: {e}")),
                }
            }
            Ok(())
        };
        timed(
            async {
                tokio::select! {
                    () = writer => Ok(()),
                    r = reader => r,
                }
            },
            "response head",
        )
        .await??;
        self.read_response(false).await
    }

    /// Splits the connection for concurrent reading and writing.
    pub fn into_inner(self) -> TcpStream {
        self.stream
    }

    async fn fill(&mut self) -> Result<usize, String> {
        let mut chunk = [0u8; 16 * 1024];
        let n = timed(self.stream.read(&mut chunk), "response bytes")
            .await?
            .map_err(|e| format!("read: {e}"))?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    async fn line(&mut self) -> Result<Vec<u8>, String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if self.buf.len() > 1 << 20 {
                return Err("response line longer than 1 MiB".into());
            }
            if self.fill().await? == 0 {
                return Err(format!(
                    "connection closed mid-line (have {:?})",
                    String::from_utf8_lossy(&self.buf)
                ));
            }
        }
    }

    async fn exact(&mut self, n: usize) -> Result<Vec<u8>, String> {
        while self.buf.len() < n {
            if self.fill().await? == 0 {
                return Err(format!(
                    "connection closed after {} of {n} body bytes",
                    self.buf.len()
                ));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Reads one response. `head` says the request was `HEAD` (no body follows).
    pub async fn read_response(&mut self, head: bool) -> Result<RawResponse, String> {
        let status_line = self.line().await?;
        let status_line = String::from_utf8_lossy(&status_line).into_owned();
        let mut words = status_line.split(' ');
        let (proto, code) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        if !proto.starts_with("HTTP/1.") {
            return Err(format!("not an HTTP/1 status line: {status_line:?}"));
        }
        let status: u16 = code
            .parse()
            .map_err(|_| format!("bad status line {status_line:?}"))?;
        let mut headers = Vec::new();
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                break;
            }
            let colon = line
                .iter()
                .position(|&b| b == b':')
                .ok_or("header line without ':'")?;
            let name = String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase();
            let value = line[colon + 1..].trim_ascii().to_vec();
            headers.push((name, value));
        }
        let mut resp = RawResponse {
            status,
            headers,
            body: Vec::new(),
        };
        if head || (100..200).contains(&status) || status == 204 || status == 304 {
            return Ok(resp);
        }
        let chunked = resp
            .header_values("transfer-encoding")
            .iter()
            .any(|v| v.to_ascii_lowercase().windows(7).any(|w| w == b"chunked"));
        if chunked {
            loop {
                let size_line = self.line().await?;
                let size_text = String::from_utf8_lossy(&size_line);
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(|_| format!("bad chunk size line {size_text:?}"))?;
                if size == 0 {
                    while !self.line().await?.is_empty() {}
                    break;
                }
                resp.body.extend(self.exact(size).await?);
                if !self.line().await?.is_empty() {
                    return Err("chunk not followed by CRLF".into());
                }
            }
        } else if let Some(len) = resp.header_values("content-length").first() {
            let len: usize = String::from_utf8_lossy(len)
                .parse()
                .map_err(|_| "bad content-length")?;
            resp.body = self.exact(len).await?;
        } else {
            while self.fill().await? > 0 {}
            resp.body = std::mem::take(&mut self.buf);
        }
        Ok(resp)
    }
}
