//! One request, from `HttpExtensionProc` to `HSE_REQ_DONE_WITH_SESSION`.
//!
//! The IIS thread only maps the request (server variables are plain calls)
//! and hands it to the runtime; everything that waits — the app, the body
//! reads, the writes — runs there, asynchronously. The request's future races
//! a watch on the client (`HSE_REQ_IS_CONNECTED`); a failed read or write, or
//! a client found gone, drops the app's future. Whatever happens, the runtime
//! calls the completion exactly once, which ends the session with IIS.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use kallithea_core::cgi::{self, ServerVariables};
use kallithea_core::{Body, BodySender, BoxError, ConnectionInfo};
use tokio::sync::Mutex as AsyncMutex;

use crate::extension::Running;
use crate::ffi::ecb::Connection;
use crate::ffi::{DWORD, HSE_STATUS_PENDING, HSE_STATUS_SUCCESS, HSE_UNKNOWN_LENGTH};
use crate::runtime::Outcome;

/// The most one asynchronous read asks IIS for.
const READ_CHUNK: usize = 64 * 1024;

/// How often a request that has run for a while checks that its client is
/// still there.
const CONNECTED_CHECK: Duration = Duration::from_millis(500);

impl ServerVariables for Connection {
    fn get(&self, name: &str) -> Option<Vec<u8>> {
        self.server_variable(name)
    }

    fn get_unicode(&self, name: &str) -> Option<String> {
        self.unicode_server_variable(name)
    }
}

/// The client went away (a read or write failed, or IIS says it is gone).
#[derive(Debug)]
struct ClientGone;

/// Shared by the parts of one request.
struct Exchange {
    conn: Connection,
    /// One asynchronous operation at a time: reads and writes take turns.
    io: AsyncMutex<()>,
    /// The connection may serve another request afterwards.
    keep_conn: AtomicBool,
    /// The request body was read to its end (or there was none).
    body_complete: AtomicBool,
    /// The status line and headers went out.
    headers_sent: AtomicBool,
}

/// Maps the request and starts it on the runtime; returns what
/// `HttpExtensionProc` returns.
pub(crate) fn serve(running: &Arc<Running>, conn: Connection) -> DWORD {
    let Some(method) = conn.method() else {
        return answer_now(&conn, StatusCode::BAD_REQUEST, "no request method");
    };
    let parts = match cgi::request_from_server_variables(&conn, &method) {
        Ok(m) => m.parts,
        Err(e) => {
            tracing::warn!(error = %e, "cannot map the request IIS passed");
            return answer_now(&conn, StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    let (total, preloaded) = conn.body_start();
    let exchange = Arc::new(Exchange {
        conn: conn.clone(),
        io: AsyncMutex::new(()),
        keep_conn: AtomicBool::new(false),
        body_complete: AtomicBool::new(false),
        headers_sent: AtomicBool::new(false),
    });
    let done = {
        let exchange = Arc::clone(&exchange);
        move |outcome: Outcome| finish(&exchange, outcome)
    };
    let request = run(
        Arc::clone(running),
        Arc::clone(&exchange),
        parts,
        total,
        preloaded,
    );
    match running.runtime.spawn(request, done) {
        Ok(_) => HSE_STATUS_PENDING,
        Err(_) => answer_now(
            &conn,
            StatusCode::SERVICE_UNAVAILABLE,
            "the application is shutting down",
        ),
    }
}

/// Answers on the IIS thread without going pending (a request that cannot
/// run at all); IIS completes it when `HttpExtensionProc` returns.
fn answer_now(conn: &Connection, status: StatusCode, message: &str) -> DWORD {
    let body = format!("{message}\n");
    let headers = format!(
        "Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    if conn
        .send_headers(&cgi::status_line(status), headers.as_bytes(), false)
        .is_ok()
    {
        let _ = conn.write_sync(body.as_bytes());
    }
    HSE_STATUS_SUCCESS
}

/// The runtime's completion: ends the session exactly once.
fn finish(exchange: &Exchange, outcome: Outcome) {
    let keep = match &outcome {
        Outcome::Completed => {
            exchange.keep_conn.load(Ordering::Acquire)
                && exchange.body_complete.load(Ordering::Acquire)
        }
        Outcome::Panicked(_) => {
            // A bug in this crate (the app's panics are caught by the
            // dispatcher): answer if nothing went out yet.
            if !exchange.headers_sent.load(Ordering::Acquire) {
                let _ = answer_now(
                    &exchange.conn,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error in the ISAPI host",
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

async fn run(
    running: Arc<Running>,
    exchange: Arc<Exchange>,
    parts: http::request::Parts,
    total: u32,
    preloaded: Bytes,
) {
    let keep_alive = wants_keep_alive(&parts);
    let head = parts.method == Method::HEAD;
    let known = (total != HSE_UNKNOWN_LENGTH).then_some(u64::from(total));
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
                let read = read_body(&exchange, tx, pre, known);
                tokio::try_join!(read, respond).map(|_| ())
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
async fn read_body(
    exchange: &Exchange,
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
                if total.is_some() {
                    tx.abort("the client closed the connection before sending the whole body")
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
async fn write_response<B>(
    exchange: &Exchange,
    response: Response<B>,
    head: bool,
    keep_alive: bool,
) -> Result<(), ClientGone>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = response.into_parts();
    if !head
        && may_have_body(parts.status)
        && !parts.headers.contains_key(CONTENT_LENGTH)
        && !parts.headers.contains_key(TRANSFER_ENCODING)
    {
        if let Some(n) = body.size_hint().exact() {
            parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
        }
    }
    // A response that starts before the request body was read to its end
    // (an early answer, a refusal, a full-duplex stream) closes the
    // connection: what is left of the body must not be taken for the next
    // request, and the client may still be sending it.
    let keep = keep_alive
        && exchange.body_complete.load(Ordering::Acquire)
        && !connection_says(&parts.headers, "close");
    exchange
        .conn
        .send_headers(
            &cgi::status_line(parts.status),
            &cgi::header_block(&parts.headers),
            keep,
        )
        .map_err(|_| ClientGone)?;
    exchange.headers_sent.store(true, Ordering::Release);
    let mut body = std::pin::pin!(body);
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let _turn = exchange.io.lock().await;
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
