//! One ISAPI request, from `HttpExtensionProc` to `HSE_REQ_DONE_WITH_SESSION`.
//!
//! The IIS thread only maps the request (server variables are plain calls)
//! and hands it to the in-process engine ([`host_iis::request`]), which runs
//! everything that waits on the extension's runtime.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use host_iis::head;
use host_iis::mapping;
use host_iis::variables::ServerVariables;
use http::{HeaderMap, StatusCode};

use host_iis::request::{self, BodyStart, IisRequest};
use host_iis::Running;

use crate::ffi::ecb::Connection;
use crate::ffi::{DWORD, HSE_STATUS_SUCCESS};

impl ServerVariables for Connection {
    fn get(&self, name: &str) -> Option<Vec<u8>> {
        self.server_variable(name)
    }

    fn get_unicode(&self, name: &str) -> Option<String> {
        self.unicode_server_variable(name)
    }

    fn append(&self, name: &str, out: &mut Vec<u8>) -> bool {
        self.append_server_variable(name, out)
    }

    fn append_unicode(&self, name: &str, out: &mut String) -> bool {
        self.append_unicode_server_variable(name, out)
    }
}

impl IisRequest for Connection {
    async fn read(&self, max: usize) -> io::Result<Bytes> {
        Connection::read(self, max).await
    }

    async fn write(&self, data: Bytes) -> io::Result<()> {
        Connection::write(self, data).await
    }

    fn write_last_now(&self, data: &[u8]) -> Option<io::Result<()>> {
        // WriteClient with HSE_IO_SYNC.
        Some(Connection::write_sync(self, data))
    }

    fn send_headers(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        content_length: Option<u64>,
        keep_conn: bool,
    ) -> io::Result<()> {
        // Status and header block in one buffer, each NUL-terminated.
        let mut block = Vec::with_capacity(64 + headers.len() * 40);
        head::append_status_line(&mut block, status);
        let status_len = block.len();
        block.push(0);
        head::append_header_lines(&mut block, headers);
        if let Some(n) = content_length {
            block.extend_from_slice(b"Content-Length: ");
            block.extend_from_slice(head::decimal(n, &mut [0; 20]));
            block.extend_from_slice(b"\r\n");
        }
        block.extend_from_slice(b"\r\n");
        block.push(0);
        Connection::send_head(self, &block, status_len, keep_conn)
    }

    fn is_connected(&self) -> bool {
        Connection::is_connected(self)
    }

    fn cancel_io(&self) {
        Connection::cancel_io(self)
    }

    fn close_connection(&self) {
        Connection::close_connection(self)
    }

    fn answer_now(&self, status: StatusCode, message: &str) {
        let body = format!("{message}\n");
        let headers = format!(
            "Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if Connection::send_headers(self, &head::status_line(status), headers.as_bytes(), false)
            .is_ok()
        {
            let _ = self.write_sync(body.as_bytes());
        }
    }

    fn done(&self, keep_conn: bool) {
        Connection::done(self, keep_conn)
    }
}

/// Maps the request and starts it on the runtime; returns what
/// `HttpExtensionProc` returns.
pub(crate) fn serve(running: &Arc<Running>, conn: Connection) -> DWORD {
    conn.hold(running.open_session());
    let Some(method) = conn.method() else {
        conn.answer_now(
            StatusCode::BAD_REQUEST,
            "no request method, or not a method",
        );
        return HSE_STATUS_SUCCESS;
    };
    // The variables few requests need are read from IIS when asked for,
    // while the request runs.
    let parts = match mapping::request_from_live_variables(conn.clone(), method.as_str()) {
        Ok(m) => m.parts,
        Err(e) => {
            tracing::warn!(error = %e, "cannot map the request IIS passed");
            conn.answer_now(e.status(), &e.to_string());
            return HSE_STATUS_SUCCESS;
        }
    };
    let (total, preloaded) = conn.body_start();
    let body = BodyStart {
        total: request::declared_body_length(&parts.headers, total),
        preloaded,
    };
    match request::start(running, conn.clone(), parts, body) {
        // Finished inside the call (its final status), or going on.
        Ok(()) => conn.call_returns(),
        // Answered already; IIS completes it when this returns.
        Err(_) => HSE_STATUS_SUCCESS,
    }
}
