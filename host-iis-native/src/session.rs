//! One request of the native module, from the handler IIS calls to
//! `IndicateCompletion`: maps it (the request head from `HTTP_REQUEST`, the
//! user from `IHttpUser`, the addresses from the request object, the kept
//! variables on demand) and hands it to the in-process engine
//! ([`host_iis::request`]); implements the engine's [`IisRequest`] over the
//! safe wrappers of `ffi::context`.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use host_iis::head;
use host_iis::mapping;
use host_iis::request::{self as engine, BodyStart, IisRequest};
use host_iis::variables::{push_utf16_lossy, ServerVariables};
use host_iis::Lifecycle;
use http::{HeaderMap, StatusCode};

use crate::ffi::context::{ended, failed};
use crate::ffi::context::{NativeRequest, Shared};
use crate::ffi::RQ_NOTIFICATION_FINISH_REQUEST;
use crate::request;

/// Maps the request and starts it on the engine; the notification status
/// for IIS. `remember` gives the module the request's shared state before
/// the request can complete (IIS may then answer it on another thread).
pub(crate) fn execute(
    lifecycle: &Lifecycle,
    shared: Arc<Shared>,
    remember: impl FnOnce(Arc<Shared>),
) -> i32 {
    let native = NativeRequest {
        shared: Arc::clone(&shared),
    };
    let Some(running) = lifecycle.running() else {
        native.answer_now(
            StatusCode::SERVICE_UNAVAILABLE,
            "the application is not running",
        );
        return RQ_NOTIFICATION_FINISH_REQUEST;
    };
    shared.hold(running.open_session());
    let Some(head) = shared.raw_head() else {
        native.answer_now(StatusCode::BAD_REQUEST, "IIS gave no request");
        return RQ_NOTIFICATION_FINISH_REQUEST;
    };
    let remaining = head.remaining;
    // The kept variables the facts do not need are read when the app asks
    // for them, while the request runs (IIS keeps them readable until it
    // ends; `NativeRequest` reports nothing after that).
    let variables = native.clone();
    // The addresses from the request object, as native modules read them
    // (their server variables are the fallback).
    let mapped = mapping::host_facts_from_live_variables(variables, shared.addresses())
        .and_then(|facts| request::to_parts(head, facts, shared.user()));
    let parts = match mapped {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot map the request IIS passed");
            native.answer_now(e.status(), &e.to_string());
            return RQ_NOTIFICATION_FINISH_REQUEST;
        }
    };
    let body = BodyStart {
        total: engine::declared_body_length(&parts.headers, remaining),
        preloaded: Bytes::new(),
    };
    remember(Arc::clone(&shared));
    match engine::start(&running, native, parts, body) {
        Ok(()) => shared.handler_returns(),
        // Answered already.
        Err(_) => RQ_NOTIFICATION_FINISH_REQUEST,
    }
}

impl ServerVariables for NativeRequest {
    fn get(&self, name: &str) -> Option<Vec<u8>> {
        self.variable8(name, <[u8]>::to_vec)
    }

    fn get_unicode(&self, name: &str) -> Option<String> {
        self.variable16(name, String::from_utf16_lossy)
    }

    fn append(&self, name: &str, out: &mut Vec<u8>) -> bool {
        self.variable8(name, |v| out.extend_from_slice(v)).is_some()
    }

    fn append_unicode(&self, name: &str, out: &mut String) -> bool {
        self.variable16(name, |v| push_utf16_lossy(out, v))
            .is_some()
    }
}

/// Hop-by-hop headers IIS manages itself.
fn managed_by_iis(name: &http::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "transfer-encoding" | "upgrade"
    )
}

impl IisRequest for NativeRequest {
    async fn read(&self, max: usize) -> io::Result<Bytes> {
        let rx = self.read_start(max)?;
        match rx.await {
            Ok(r) => r.map_err(failed),
            Err(_) => Err(ended()),
        }
    }

    async fn write(&self, data: Bytes) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let rx = self.write_start(data)?;
        match rx.await {
            Ok(r) => r.map(|_| ()).map_err(failed),
            Err(_) => Err(ended()),
        }
    }

    fn write_last_now(&self, data: &[u8]) -> Option<io::Result<()>> {
        // WriteEntityChunks with fAsync = FALSE.
        Some(self.write_sync(data))
    }

    async fn flush(&self) -> io::Result<()> {
        let rx = self.flush_start()?;
        match rx.await {
            Ok(r) => r.map(|_| ()).map_err(failed),
            Err(_) => Err(ended()),
        }
    }

    fn send_headers(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        content_length: Option<u64>,
        keep_conn: bool,
    ) -> io::Result<()> {
        let hr = self.set_status(status);
        if hr < 0 {
            return Err(failed(hr));
        }
        // Each name and value NUL-terminated, in one buffer reused for
        // every header (IIS copies what it is given).
        let room = headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 2)
            .max()
            .unwrap_or(0);
        let mut buf = Vec::with_capacity(room);
        let mut previous: Option<&http::HeaderName> = None;
        for (name, value) in headers {
            if managed_by_iis(name) {
                continue;
            }
            buf.clear();
            buf.extend_from_slice(name.as_str().as_bytes());
            buf.push(0);
            let value_at = buf.len();
            buf.extend_from_slice(value.as_bytes());
            buf.push(0);
            // The first value replaces what IIS may have set; more values of
            // the same name are added.
            let (name_z, value_z) = buf.split_at(value_at);
            let hr = self.set_header_z(name_z, value_z, previous != Some(name));
            if hr < 0 {
                return Err(failed(hr));
            }
            previous = Some(name);
        }
        if let Some(n) = content_length {
            let mut buf = [0; 20];
            let digits = head::decimal(n, &mut buf);
            let mut value_z = [0; 21];
            value_z[..digits.len()].copy_from_slice(digits);
            let hr = self.set_header_z(b"Content-Length\0", &value_z[..=digits.len()], true);
            if hr < 0 {
                return Err(failed(hr));
            }
        }
        if !keep_conn {
            self.set_need_disconnect();
        }
        // The body streams: each write goes out as it is made.
        self.disable_buffering();
        Ok(())
    }

    fn is_connected(&self) -> bool {
        self.connected()
    }

    fn cancel_io(&self) {
        self.cancel()
    }

    fn close_connection(&self) {
        self.close()
    }

    fn answer_now(&self, status: StatusCode, message: &str) {
        self.clear();
        let body = format!("{message}\n");
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(http::header::CONTENT_LENGTH, body.len().into());
        if IisRequest::send_headers(self, status, &headers, None, false).is_ok() {
            let _ = self.write_sync(body.as_bytes());
        }
    }

    fn done(&self, keep_conn: bool) {
        self.end(keep_conn)
    }
}
