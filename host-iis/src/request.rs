//! The part of an in-process IIS host that does not depend on how IIS is
//! called: one request from the moment the host has mapped it to the moment
//! it tells IIS it is done. The ISAPI extension (this crate) and the native
//! module (`host-iis-native`) each implement [`IisRequest`] over their own
//! binary interface and hand requests to [`start`].
//!
//! The app runs on the runtime; the body is read as the app consumes it, one
//! asynchronous operation at a time; the response streams out as the app
//! yields it. The request's future races a watch on the client; a failed
//! read or write, or a client found gone, drops the app's future. Whatever
//! happens, [`IisRequest::done`] is called exactly once.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use kallithea_core::{Body, BodySender, BoxError, ConnectionInfo};
use tokio::sync::Mutex as AsyncMutex;

use crate::lifecycle::Running;
use crate::runtime::{Outcome, Rejected};

/// The most one asynchronous read asks IIS for.
pub const READ_CHUNK: usize = 64 * 1024;

/// The largest last piece of a response body written synchronously
/// ([`IisRequest::write_last_now`]): well under any send buffer, so the call
/// does not wait for the client.
pub const LAST_WRITE_NOW_MAX: usize = 16 * 1024;

/// How often a request that has run for a while checks that its client is
/// still there.
const CONNECTED_CHECK: Duration = Duration::from_millis(500);

/// One request as an in-process host drives it through IIS. Implementations
/// wrap the server's per-request object (the ECB, or `IHttpContext`); every
/// method must be safe to call from any thread, and every method after
/// [`done`](IisRequest::done) must do nothing (or fail).
pub trait IisRequest: Send + Sync + 'static {
    /// Reads up to `max` bytes of the request body asynchronously; empty at
    /// the end of the body. One operation (read or write) at a time: the
    /// engine never starts another before this one completes.
    fn read(&self, max: usize) -> impl Future<Output = io::Result<Bytes>> + Send;

    /// Writes `data` to the client asynchronously, keeping it alive until
    /// the server reports completion.
    fn write(&self, data: Bytes) -> impl Future<Output = io::Result<()>> + Send;

    /// Writes the short last piece of a response body synchronously, when
    /// the server supports that: a small write only lands in the server's
    /// send buffer, and doing it in the call saves the round trip of an
    /// asynchronous completion (a wake-up of another thread and back).
    /// `None` means "not supported here": the engine then uses
    /// [`write`](IisRequest::write).
    fn write_last_now(&self, data: &[u8]) -> Option<io::Result<()>> {
        let _ = data;
        None
    }

    /// Sends what is buffered of the response (its status and headers) to
    /// the client now, for a response whose body may be slow to come. A
    /// server that sends the headers at once needs nothing more (the
    /// default).
    fn flush(&self) -> impl Future<Output = io::Result<()>> + Send {
        async { Ok(()) }
    }

    /// Sets the response status and headers, and a `Content-Length` of
    /// `content_length` besides them (`headers` then has none: the engine
    /// gives the length it knows from the body this way, without adding it
    /// to the app's header map); `keep_conn` says whether the connection may
    /// serve another request afterwards.
    fn send_headers(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        content_length: Option<u64>,
        keep_conn: bool,
    ) -> io::Result<()>;

    /// Whether the client is still connected.
    fn is_connected(&self) -> bool;

    /// Cancels the outstanding asynchronous operation, if any; its
    /// completion still arrives, with an error.
    fn cancel_io(&self);

    /// Closes the client's connection: for a response that cannot be
    /// finished properly.
    fn close_connection(&self);

    /// Answers with a short plain-text page synchronously (a request that
    /// cannot run at all, or a failure in the host itself before any header
    /// went out).
    fn answer_now(&self, status: StatusCode, message: &str);

    /// Ends the request with the server, keeping the connection open for the
    /// next request when `keep_conn`. The engine calls it exactly once.
    fn done(&self, keep_conn: bool);
}

/// Where the request body starts.
#[derive(Debug, Default)]
pub struct BodyStart {
    /// The body's length if the client declared it (`None`: chunked).
    pub total: Option<u64>,
    /// What the server already read ahead, delivered before any read.
    pub preloaded: Bytes,
}

/// The request body's length, from its headers and what the server says:
/// unknown (`None`) for a chunked body; the `Content-Length` value when
/// there is one — IIS's counts are 32-bit, and `0xFFFFFFFF` stands for
/// "unknown, or 4 GiB or more" (`cbTotalBytes`, `GetRemainingEntityBytes`),
/// so only the header gives a larger body its exact length; otherwise the
/// server's count, unless it is that marker.
///
/// With a length, a body that ends early is an error for the app, never a
/// short body taken for a whole one.
pub fn declared_body_length(headers: &HeaderMap, server_count: u32) -> Option<u64> {
    if headers.contains_key(TRANSFER_ENCODING) {
        return None;
    }
    match headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
    {
        Some(n) => Some(n),
        None if server_count == u32::MAX => None,
        None => Some(u64::from(server_count)),
    }
}

/// The client went away (a read or write failed, or the server says it is
/// gone).
#[derive(Debug)]
struct ClientGone;

/// Shared by the parts of one request.
struct Exchange<C> {
    conn: C,
    /// One asynchronous operation at a time: reads and writes take turns.
    io: AsyncMutex<()>,
    /// The connection may serve another request afterwards.
    keep_conn: AtomicBool,
    /// The request body was read to its end (or there was none).
    body_complete: AtomicBool,
    /// The status line and headers went out.
    headers_sent: AtomicBool,
}

/// Runs a mapped request on the host's runtime; `conn` hears about its end
/// exactly once ([`IisRequest::done`]). When the host is shutting down the
/// request does not start: it is answered at once with a 503
/// ([`IisRequest::answer_now`]), `done` is not called, and the caller
/// completes it with the server synchronously.
pub fn start<C: IisRequest>(
    running: &Arc<Running>,
    conn: C,
    mut parts: http::request::Parts,
    body: BodyStart,
) -> Result<(), Rejected> {
    if let Some(base) = &running.path_base {
        // The server did not say where the app is mounted: configured.
        if parts.extensions.get::<kallithea_core::PathBase>().is_none() {
            parts.extensions.insert(base.clone());
        }
    }
    let exchange = Arc::new(Exchange {
        conn,
        io: AsyncMutex::new(()),
        keep_conn: AtomicBool::new(false),
        body_complete: AtomicBool::new(false),
        headers_sent: AtomicBool::new(false),
    });
    let done = {
        let exchange = Arc::clone(&exchange);
        move |outcome: Outcome| finish(&exchange, outcome)
    };
    let request = run(Arc::clone(running), Arc::clone(&exchange), parts, body);
    match running.runtime.spawn(request, done) {
        Ok(_) => Ok(()),
        Err(rejected) => {
            exchange.conn.answer_now(
                StatusCode::SERVICE_UNAVAILABLE,
                "the application is shutting down",
            );
            Err(rejected)
        }
    }
}

/// The runtime's completion: ends the session exactly once.
fn finish<C: IisRequest>(exchange: &Exchange<C>, outcome: Outcome) {
    let keep = match &outcome {
        Outcome::Completed => {
            exchange.keep_conn.load(Ordering::Acquire)
                && exchange.body_complete.load(Ordering::Acquire)
        }
        Outcome::Panicked(_) => {
            // A bug in this crate (the app's panics are caught by the
            // dispatcher): answer if nothing went out yet.
            if !exchange.headers_sent.load(Ordering::Acquire) {
                exchange.conn.answer_now(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error in the IIS host",
                );
            }
            false
        }
        Outcome::Cancelled => false,
    };
    exchange.conn.done(keep);
}

/// Whether a `Connection` header lists `token`.
fn connection_says(headers: &http::HeaderMap, token: &str) -> bool {
    headers.get_all(CONNECTION).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

fn wants_keep_alive(req: &http::request::Parts) -> bool {
    match req.version {
        Version::HTTP_10 | Version::HTTP_09 => connection_says(&req.headers, "keep-alive"),
        _ => !connection_says(&req.headers, "close"),
    }
}

async fn run<C: IisRequest>(
    running: Arc<Running>,
    exchange: Arc<Exchange<C>>,
    parts: http::request::Parts,
    start: BodyStart,
) {
    let BodyStart {
        total: known,
        preloaded,
    } = start;
    let keep_alive = wants_keep_alive(&parts);
    let head = parts.method == Method::HEAD;
    let (body, reader) = match known {
        Some(0) => (Body::empty(), None),
        Some(n) if preloaded.len() as u64 >= n => (Body::full(preloaded), None),
        _ => {
            let (tx, body) = Body::channel_with_length(1, known);
            (body, Some((tx, preloaded)))
        }
    };
    if reader.is_none() {
        exchange.body_complete.store(true, Ordering::Release);
    }
    let local = parts
        .extensions
        .get::<ConnectionInfo>()
        .is_some_and(|c| crate::startup::is_local(c.remote.ip(), c.local.ip()));
    let req = Request::from_parts(parts, body);

    let work = async {
        let dispatcher = match running.ready() {
            Some(d) => d,
            None => match running.app(local).await {
                Ok(d) => d,
                Err(page) => return write_response(&exchange, page, head, keep_alive).await,
            },
        };
        let respond = async {
            let response = dispatcher.dispatch(req).await;
            write_response(&exchange, response, head, keep_alive).await
        };
        match reader {
            None => respond.await,
            Some((tx, pre)) => {
                // A body that fails (cut short, malformed, a read error)
                // reaches the app as a body error; the app still answers,
                // and a client still connected gets that answer. Only the
                // answer's own failure means the client is gone.
                let read = read_body(&exchange, tx, pre, known);
                let (read, answered) = tokio::join!(read, respond);
                if read.is_err() {
                    exchange.keep_conn.store(false, Ordering::Release);
                }
                answered
            }
        }
    };
    let watch = async {
        loop {
            tokio::time::sleep(CONNECTED_CHECK).await;
            if !exchange.conn.is_connected() {
                return;
            }
        }
    };
    tokio::select! {
        biased;
        r = work => {
            if r.is_err() {
                exchange.keep_conn.store(false, Ordering::Release);
            }
        }
        () = watch => {
            tracing::debug!("client disconnected: the request is cancelled");
            exchange.keep_conn.store(false, Ordering::Release);
        }
    }
}

/// Feeds the request body to the app: the read-ahead part first, then
/// asynchronous reads, each only when the app has room for more.
async fn read_body<C: IisRequest>(
    exchange: &Exchange<C>,
    mut tx: BodySender,
    preloaded: Bytes,
    total: Option<u64>,
) -> Result<(), ClientGone> {
    let mut got = preloaded.len() as u64;
    if tx.send(preloaded).await.is_err() {
        return Ok(());
    }
    loop {
        let want = match total {
            Some(t) if got >= t => break,
            Some(t) => (t - got).min(READ_CHUNK as u64) as usize,
            None => READ_CHUNK,
        };
        if tx.ready().await.is_err() {
            // The app is done with the body.
            return Ok(());
        }
        let read = {
            let _turn = exchange.io.lock().await;
            let read = exchange.conn.read(want);
            tokio::pin!(read);
            tokio::select! {
                r = &mut read => r,
                () = tx.closed() => {
                    // Nobody will read what arrives: cancel, and wait for the
                    // cancelled read to complete before giving up the turn.
                    exchange.conn.cancel_io();
                    let _ = read.await;
                    return Ok(());
                }
            }
        };
        match read {
            Ok(chunk) if chunk.is_empty() => {
                if let Some(t) = total {
                    tracing::warn!(
                        received = got,
                        declared = t,
                        "the request body ended before its declared length"
                    );
                    tx.abort("the request body ended before its declared length")
                        .await;
                    return Err(ClientGone);
                }
                break;
            }
            Ok(chunk) => {
                got += chunk.len() as u64;
                if tx.send(chunk).await.is_err() {
                    return Ok(());
                }
            }
            Err(e) => {
                tracing::warn!(received = got, error = %e, "reading the request body failed");
                tx.abort(e).await;
                return Err(ClientGone);
            }
        }
    }
    exchange.body_complete.store(true, Ordering::Release);
    Ok(())
}

fn may_have_body(status: StatusCode) -> bool {
    !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

/// Sends the status and headers, then the body chunk by chunk as the app
/// yields them, one asynchronous write at a time.
async fn write_response<C: IisRequest, B>(
    exchange: &Exchange<C>,
    response: Response<B>,
    head: bool,
    keep_alive: bool,
) -> Result<(), ClientGone>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (parts, body) = response.into_parts();
    let declared = parts.headers.contains_key(CONTENT_LENGTH);
    let content_length = if !head
        && may_have_body(parts.status)
        && !declared
        && !parts.headers.contains_key(TRANSFER_ENCODING)
    {
        body.size_hint().exact()
    } else {
        None
    };
    // A response that starts before the request body was read to its end
    // (an early answer, a refusal, a full-duplex stream) closes the
    // connection: what is left of the body must not be taken for the next
    // request, and the client may still be sending it.
    let keep = keep_alive
        && exchange.body_complete.load(Ordering::Acquire)
        && !connection_says(&parts.headers, "close");
    exchange
        .conn
        .send_headers(parts.status, &parts.headers, content_length, keep)
        .map_err(|_| ClientGone)?;
    exchange.headers_sent.store(true, Ordering::Release);
    let mut body = std::pin::pin!(body);
    if !head
        && !body.is_end_stream()
        && !declared
        && content_length.is_none()
        && may_have_body(parts.status)
    {
        // A body of unknown length may stream slowly (events, long polls):
        // the client gets the head now, not with the first chunk.
        let _turn = exchange.io.lock().await;
        exchange.conn.flush().await.map_err(|_| ClientGone)?;
    }
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let _turn = exchange.io.lock().await;
                if data.len() <= LAST_WRITE_NOW_MAX && body.is_end_stream() {
                    if let Some(written) = exchange.conn.write_last_now(&data) {
                        written.map_err(|_| ClientGone)?;
                        continue;
                    }
                }
                exchange.conn.write(data).await.map_err(|_| ClientGone)?;
            }
            Err(e) => {
                // The response cannot be finished: the client must not take
                // a truncated body for a whole one.
                tracing::warn!(error = %e.into(), "response body failed: closing the connection");
                exchange.conn.close_connection();
                return Ok(());
            }
        }
    }
    exchange.keep_conn.store(keep, Ordering::Release);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(list: &[(&'static str, &'static str)]) -> HeaderMap {
        list.iter()
            .map(|(n, v)| {
                (
                    http::HeaderName::from_static(n),
                    http::HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    /// Records what the engine asks of the server.
    #[derive(Default)]
    struct Recorder {
        calls: std::sync::Mutex<Vec<String>>,
    }

    impl Recorder {
        fn note(&self, call: String) {
            self.calls.lock().unwrap().push(call);
        }
    }

    impl IisRequest for Recorder {
        async fn read(&self, _max: usize) -> io::Result<Bytes> {
            Ok(Bytes::new())
        }
        async fn write(&self, _data: Bytes) -> io::Result<()> {
            Ok(())
        }
        fn send_headers(
            &self,
            status: StatusCode,
            _headers: &HeaderMap,
            _content_length: Option<u64>,
            _keep_conn: bool,
        ) -> io::Result<()> {
            self.note(format!("headers {}", status.as_u16()));
            Ok(())
        }
        fn is_connected(&self) -> bool {
            true
        }
        fn cancel_io(&self) {}
        fn close_connection(&self) {
            self.note("close".into());
        }
        fn answer_now(&self, status: StatusCode, _message: &str) {
            self.note(format!("answer {}", status.as_u16()));
        }
        fn done(&self, keep_conn: bool) {
            self.note(format!("done keep={keep_conn}"));
        }
    }

    fn exchange(headers_sent: bool) -> Exchange<Recorder> {
        Exchange {
            conn: Recorder::default(),
            io: AsyncMutex::new(()),
            keep_conn: AtomicBool::new(true),
            body_complete: AtomicBool::new(true),
            headers_sent: AtomicBool::new(headers_sent),
        }
    }

    fn calls(e: &Exchange<Recorder>) -> Vec<String> {
        e.conn.calls.lock().unwrap().clone()
    }

    /// A panic in the host's own request code (the app's are caught by the
    /// dispatcher): the client gets the host's 500 if nothing went out yet,
    /// and the session ends once, closing the connection.
    #[test]
    fn a_host_side_panic_is_answered_500_and_ends_the_session_once() {
        let e = exchange(false);
        finish(&e, Outcome::Panicked("boom".into()));
        assert_eq!(calls(&e), ["answer 500", "done keep=false"]);
        // The headers already went out: no second answer, the connection
        // closes so that the cut response is not taken for a whole one.
        let e = exchange(true);
        finish(&e, Outcome::Panicked("boom".into()));
        assert_eq!(calls(&e), ["done keep=false"]);
    }

    #[test]
    fn completed_and_cancelled_requests_end_once_keeping_the_connection_only_when_whole() {
        let e = exchange(true);
        finish(&e, Outcome::Completed);
        assert_eq!(calls(&e), ["done keep=true"]);
        let e = exchange(true);
        e.body_complete.store(false, Ordering::Release);
        finish(&e, Outcome::Completed);
        assert_eq!(calls(&e), ["done keep=false"]);
        let e = exchange(false);
        finish(&e, Outcome::Cancelled);
        assert_eq!(calls(&e), ["done keep=false"]);
    }

    #[test]
    fn a_body_of_4_gib_or_more_keeps_its_declared_length() {
        // IIS's count saturates; the header has the whole number.
        let big = headers(&[("content-length", "5000000000")]);
        assert_eq!(declared_body_length(&big, u32::MAX), Some(5_000_000_000));
        let edge = headers(&[("content-length", "4294967295")]);
        assert_eq!(declared_body_length(&edge, u32::MAX), Some(4_294_967_295));
    }

    #[test]
    fn a_chunked_body_has_no_length_whatever_else_is_said() {
        let chunked = headers(&[("transfer-encoding", "chunked"), ("content-length", "10")]);
        assert_eq!(declared_body_length(&chunked, u32::MAX), None);
        assert_eq!(declared_body_length(&chunked, 10), None);
    }

    #[test]
    fn without_a_usable_header_the_servers_count_decides() {
        assert_eq!(declared_body_length(&HeaderMap::new(), 0), Some(0));
        assert_eq!(declared_body_length(&HeaderMap::new(), 1234), Some(1234));
        // 0xFFFFFFFF: unknown (an HTTP/2 body without a declared length).
        assert_eq!(declared_body_length(&HeaderMap::new(), u32::MAX), None);
        let bad = headers(&[("content-length", "12, 12")]);
        assert_eq!(declared_body_length(&bad, 12), Some(12));
    }

    #[test]
    fn the_header_counts_the_whole_body_where_the_server_counts_what_is_left() {
        // A native module's GetRemainingEntityBytes counts what is left to
        // read; the header, the whole body.
        let declared = headers(&[("content-length", " 65536 ")]);
        assert_eq!(declared_body_length(&declared, 16384), Some(65536));
    }
}
