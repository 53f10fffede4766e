//! A stand-in for IIS on Linux, for testing ISAPI extensions with real HTTP
//! clients.
//!
//! The simulator listens on loopback with hyper, loads the extension DLL with
//! `dlopen` and, for each request under its virtual directory, builds an
//! `EXTENSION_CONTROL_BLOCK` and serves the extension's callbacks as IIS
//! documents them:
//!
//! - `HttpExtensionProc` is called on a small pool of "IIS threads"; an
//!   extension that blocks there starves the pool, as it would in IIS;
//! - the body's first part is read ahead (`lpbData`/`cbAvailable`, 48 KiB by
//!   default, as IIS's `uploadReadAheadSize`), the rest is read with
//!   `HSE_REQ_ASYNC_READ_CLIENT`; chunked bodies report `cbTotalBytes` =
//!   `0xFFFFFFFF`;
//! - server variables, their `UNICODE_` forms (UTF-16, sizes in bytes),
//!   `ALL_RAW` and `ALL_HTTP`, with the buffer-size protocol (too small:
//!   `FALSE`, `ERROR_INSUFFICIENT_BUFFER` and the size needed, NUL included;
//!   unknown: `ERROR_INVALID_INDEX`) and errors reported through the calling
//!   thread's last-error value (errno here);
//! - asynchronous reads and writes completed on other threads through the
//!   callback registered with `HSE_REQ_IO_COMPLETION`, one at a time;
//! - the status and headers from `HSE_REQ_SEND_RESPONSE_HEADER_EX` go out
//!   with the first body bytes (or at the end of the session), the way a
//!   buffered response leaves a server: one write on the wire, not two;
//! - bookkeeping: a second asynchronous operation while one is outstanding,
//!   a missing or second `HSE_REQ_DONE_WITH_SESSION`, and any call for a
//!   request after its session ended are recorded as violations
//!   ([`Stats::violations`]);
//! - simulated Windows authentication ([`WindowsAuth`]), reported as
//!   `DOMAIN\user` in `REMOTE_USER`/`LOGON_USER` with `AUTH_TYPE`; as IIS's
//!   authentication modules do, it adds its scheme's challenge to every 401
//!   response, the extension's too;
//! - recycling ([`RunningSimulator::recycle`]) and fault injection
//!   ([`Faults`]).
#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod auth;
mod build;
mod ffi;
mod isapi;
mod loader;
mod native;
mod native_ffi;
mod pool;
pub mod proxy;
mod registry;
mod response;
mod server;
mod settings;
mod state;
mod vars;

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, WWW_AUTHENTICATE};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Version};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use iis_sys::httpext::{
    ERROR_INVALID_PARAMETER, ERROR_NETNAME_DELETED, ERROR_OPERATION_ABORTED, HSE_STATUS_PENDING,
    HSE_STATUS_SUCCESS_AND_KEEP_CONN, HSE_TERM_MUST_UNLOAD, HSE_UNKNOWN_LENGTH,
};

pub use auth::{basic_credentials, netbios_name, Authenticated, Users, WindowsAuth, WindowsUser};

pub use build::build_cdylib;
pub use response::SimBody;
pub use server::{start, RunningSimulator};
pub use settings::{splitmix, Completions, Config, Faults, Profile, SimError, Stats, Variation};

// Every module sees its siblings' items through `use super::*`.
#[allow(unused_imports)]
use {isapi::*, loader::*, pool::*, response::*, server::*, state::*};

#[cfg(test)]
mod tests {
    use super::*;

    /// A simulator with no extension loaded, and one request registered.
    type MakeNative = Box<dyn FnOnce(usize) -> native::Native>;
    const RQ_FINISH: i32 = iis_sys::native::RQ_NOTIFICATION_FINISH_REQUEST;
    const RQ_PENDING: i32 = iis_sys::native::RQ_NOTIFICATION_PENDING;

    fn make_request(
        shared_rt: &tokio::runtime::Runtime,
        native_state: Option<MakeNative>,
    ) -> (Arc<Shared>, Arc<SimRequest>) {
        let shared = {
            let _enter = shared_rt.enter();
            Shared::new(Config::new("/nonexistent.so"))
        };
        let seq = shared.next_seq.fetch_add(1, Ordering::AcqRel);
        let info = vars::RequestInfo {
            method: http::Method::GET,
            target: b"/".to_vec(),
            path_end: 1,
            version: Version::HTTP_11,
            headers: http::HeaderMap::new(),
            remote: "127.0.0.1:1".parse().unwrap(),
            local: "127.0.0.1:2".parse().unwrap(),
            user: None,
            vdir: "/".into(),
            site_id: 1,
            physical_path: "".into(),
            absent: Arc::from(Vec::new()),
            header_derived: false,
        };
        let req = Arc::new(SimRequest {
            seq,
            generation: 0,
            shared: Arc::clone(&shared),
            info,
            keep_alive_wanted: true,
            disconnected: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            written: AtomicU64::new(0),
            faults: Faults::default(),
            state: Mutex::new(ReqState::default()),
            body: tokio::sync::Mutex::new(BodySource {
                body: None,
                leftover: Bytes::new(),
                delivered: 0,
            }),
            native: native_state
                .map(|make| make(registry::handle(*shared.index.get().unwrap(), seq))),
        });
        shared
            .requests
            .write()
            .unwrap()
            .insert(seq, Arc::clone(&req));
        (shared, req)
    }

    fn request(shared_rt: &tokio::runtime::Runtime) -> (Arc<Shared>, Arc<SimRequest>) {
        make_request(shared_rt, None)
    }

    /// A native-mode request with no module behind it (nothing calls into
    /// a module on the paths these tests take).
    fn native_request(shared_rt: &tokio::runtime::Runtime) -> (Arc<Shared>, Arc<SimRequest>) {
        let headers = http::HeaderMap::new();
        make_request(
            shared_rt,
            Some(Box::new(move |handle| {
                let raw = native_ffi::RawRequest::new(native_ffi::RawFields {
                    method: "GET",
                    raw_url: b"/",
                    origin: "http://localhost",
                    cooked_path: "/",
                    cooked_query: "",
                    version: (1, 1),
                    headers: &headers,
                    request_id: 1,
                    remote: "127.0.0.1:50000".parse().unwrap(),
                    local: "127.0.0.1:80".parse().unwrap(),
                })
                .unwrap();
                native::Native::new(
                    native_ffi::NativeObjects::new(handle, raw, None),
                    None,
                    None,
                    false,
                )
            })),
        )
    }

    #[test]
    fn native_completions_wait_for_the_running_notification() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (shared, req) = native_request(&rt);
        // The handler is running: an IndicateCompletion waits for it.
        native::deliver(&req, native::Item::Indicate(RQ_FINISH));
        assert_eq!(shared.stats().in_flight, 1, "nothing ends mid-notification");
        // The handler returns PENDING: the queued completion ends the request.
        native::after_notification(&req, RQ_PENDING);
        let stats = shared.stats();
        assert_eq!(stats.in_flight, 0, "{stats:?}");
        assert_eq!(stats.disposed, 1, "{stats:?}");
        assert!(stats.violations.is_empty(), "{stats:?}");
    }

    #[test]
    fn native_second_completions_and_late_calls_are_violations() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (shared, req) = native_request(&rt);
        let handle = registry::handle(*shared.index.get().unwrap(), req.seq);
        native::after_notification(&req, RQ_FINISH);
        assert!(shared.stats().violations.is_empty());
        // A completion for the finished request, and a call on its objects.
        native::deliver(&req, native::Item::Indicate(RQ_FINISH));
        assert!(registry::lookup(handle, "IHttpResponse::SetHeader").is_none());
        let v = shared.stats().violations;
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].contains("already finished"), "{v:?}");
        assert!(
            v[1].contains("SetHeader") && v[1].contains("after"),
            "{v:?}"
        );
    }

    #[test]
    fn native_finish_with_an_operation_outstanding_is_a_violation() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (shared, req) = native_request(&rt);
        req.lock().pending = Some("read");
        native::after_notification(&req, RQ_FINISH);
        let v = shared.stats().violations;
        assert!(v.iter().any(|v| v.contains("read outstanding")), "{v:?}");
    }

    #[test]
    fn a_second_done_and_any_use_after_done_are_violations() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (shared, req) = request(&rt);
        let handle = registry::handle(*shared.index.get().unwrap(), req.seq);
        assert!(registry::lookup(handle, "GetServerVariable").is_some());
        assert!(shared.stats().violations.is_empty());

        req.done(Some(HSE_STATUS_SUCCESS_AND_KEEP_CONN), "DONE")
            .unwrap();
        assert_eq!(shared.stats().in_flight, 0);
        assert!(req.done(None, "DONE").is_err());
        assert!(registry::lookup(handle, "WriteClient").is_none());
        let v = shared.stats().violations;
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].contains("came twice"), "{v:?}");
        assert!(
            v[1].contains("WriteClient") && v[1].contains("after its session ended"),
            "{v:?}"
        );
    }

    #[test]
    fn asynchronous_io_needs_a_callback_and_one_operation_at_a_time() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (shared, req) = request(&rt);
        assert!(
            req.begin_async("read").is_err(),
            "no completion callback registered"
        );
        assert!(shared.stats().violations[0].contains("HSE_REQ_IO_COMPLETION"));
    }

    #[test]
    fn server_variables_follow_the_size_and_encoding_rules() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (_shared, req) = request(&rt);
        assert_eq!(req.server_variable("REQUEST_METHOD").unwrap(), b"GET\0");
        assert_eq!(
            req.server_variable("unicode_request_method").unwrap(),
            [b'G', 0, b'E', 0, b'T', 0, 0, 0]
        );
        assert_eq!(req.server_variable("AUTH_TYPE").unwrap(), b"\0");
        assert_eq!(
            req.server_variable("NO_SUCH_VARIABLE").unwrap_err(),
            iis_sys::httpext::ERROR_INVALID_INDEX
        );
        assert_eq!(
            req.server_variable("HTTP_X_MISSING").unwrap_err(),
            iis_sys::httpext::ERROR_INVALID_INDEX
        );
    }

    #[test]
    fn computed_variables_describe_the_request() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (_shared, req) = request(&rt);
        let mut info = req.info.clone_for_test();
        for (n, v) in [
            ("host", "example.test:8080"),
            ("x-multi", "one"),
            ("x-multi", "two"),
            ("content-type", "text/plain"),
        ] {
            info.headers.append(n, v.parse().unwrap());
        }
        info.remote = "[2001:db8::7]:50123".parse().unwrap();
        info.vdir = "/portal".into();
        info.site_id = 3;
        fn text(info: &vars::RequestInfo, name: &str) -> String {
            let mut v = info.lookup(name).unwrap();
            assert_eq!(v.pop(), Some(0), "{name} ends in one NUL");
            String::from_utf8(v).unwrap()
        }
        assert_eq!(text(&info, "SERVER_NAME"), "example.test");
        assert_eq!(text(&info, "REMOTE_ADDR"), "2001:db8::7");
        assert_eq!(text(&info, "REMOTE_PORT"), "50123");
        assert_eq!(text(&info, "SERVER_PORT"), "2");
        assert_eq!(text(&info, "APPL_MD_PATH"), "/LM/W3SVC/3/ROOT/portal");
        assert_eq!(text(&info, "INSTANCE_ID"), "3");
        assert_eq!(text(&info, "HTTP_X_MULTI"), "one,two");
        assert_eq!(text(&info, "CONTENT_TYPE"), "text/plain");
        assert_eq!(text(&info, "CONTENT_LENGTH"), "0");
        assert_eq!(
            text(&info, "ALL_HTTP"),
            "HTTP_HOST:example.test:8080\nHTTP_X_MULTI:one\nHTTP_X_MULTI:two\nHTTP_CONTENT_TYPE:text/plain\n"
        );
        assert_eq!(
            text(&info, "ALL_RAW"),
            "host: example.test:8080\r\nx-multi: one\r\nx-multi: two\r\ncontent-type: text/plain\r\n"
        );
        info.target = b"/portal/a%20b?x=1&y".to_vec();
        info.path_end = "/portal/a%20b".len();
        // URL is decoded, as IIS reports it; HTTP_URL is the raw form.
        assert_eq!(text(&info, "URL"), "/portal/a b");
        assert_eq!(text(&info, "QUERY_STRING"), "x=1&y");
        assert_eq!(text(&info, "HTTP_URL"), "/portal/a%20b?x=1&y");
        info.target = b"/p".to_vec();
        info.path_end = 2;
        assert_eq!(text(&info, "QUERY_STRING"), "");
        // A bracketed IPv6 host without a port keeps its colons.
        info.headers
            .insert("host", "[2001:db8::1]".parse().unwrap());
        assert_eq!(text(&info, "SERVER_NAME"), "[2001:db8::1]");
        // The scratch buffer is cleared between lookups.
        let mut out = b"left over".to_vec();
        info.lookup_into("INSTANCE_ID", &mut out).unwrap();
        assert_eq!(out, b"3\0");
        // Numbers and IPv4 addresses at their edges.
        info.local = "10.0.255.0:65535".parse().unwrap();
        info.remote = "0.0.0.0:0".parse().unwrap();
        info.site_id = u32::MAX;
        assert_eq!(text(&info, "LOCAL_ADDR"), "10.0.255.0");
        assert_eq!(text(&info, "SERVER_PORT"), "65535");
        assert_eq!(text(&info, "REMOTE_ADDR"), "0.0.0.0");
        assert_eq!(text(&info, "REMOTE_PORT"), "0");
        assert_eq!(text(&info, "INSTANCE_ID"), "4294967295");
        info.headers.remove("host");
        assert_eq!(text(&info, "SERVER_NAME"), "10.0.255.0");
    }

    #[test]
    fn plain_user_variables_are_in_the_code_page_and_unicode_ones_are_whole() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (_shared, req) = request(&rt);
        let mut info = vars::RequestInfo {
            ..req.info.clone_for_test()
        };
        info.user = Some(WindowsUser {
            name: "EXAMPLE\\張三".into(),
            auth_type: "Negotiate".into(),
        });
        assert_eq!(info.lookup("REMOTE_USER").unwrap(), b"EXAMPLE\\??\0");
        let wide = info.lookup("UNICODE_REMOTE_USER").unwrap();
        let units: Vec<u16> = wide
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(String::from_utf16(&units).unwrap(), "EXAMPLE\\張三\0");
        assert_eq!(info.lookup("AUTH_TYPE").unwrap(), b"Negotiate\0");
    }
}
