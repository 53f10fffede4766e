//! Start-up failures: the worker lives on, every request gets a page saying
//! what failed, and start-up is tried again after a back-off.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use http::{header, HeaderValue, Response, StatusCode};
use kallithea_core::Body;

/// The longest wait between start-up attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The wait after `failures` consecutive failed attempts: 1 s, 2 s, 4 s… up to
/// [`MAX_BACKOFF`].
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exp).min(MAX_BACKOFF)
}

/// Why the extension is not serving, and when it tries again.
#[derive(Clone, Debug)]
pub struct StartupFailure {
    /// What failed, in words an administrator can act on.
    pub error: String,
    /// Failed attempts in a row.
    pub failures: u32,
    retry_at: Instant,
}

impl StartupFailure {
    /// The first failure, at `now`.
    pub fn new(error: impl Into<String>, now: Instant) -> Self {
        StartupFailure {
            error: error.into(),
            failures: 1,
            retry_at: now + backoff(1),
        }
    }

    /// Another failed attempt at `now`; the wait grows.
    pub fn failed_again(&mut self, error: impl Into<String>, now: Instant) {
        self.error = error.into();
        self.failures = self.failures.saturating_add(1);
        self.retry_at = now + backoff(self.failures);
    }

    /// Whether start-up should be tried again at `now`.
    pub fn retry_due(&self, now: Instant) -> bool {
        now >= self.retry_at
    }

    /// How long until the next attempt.
    pub fn retry_in(&self, now: Instant) -> Duration {
        self.retry_at.saturating_duration_since(now)
    }

    /// The page every request gets meanwhile: 503 with `Retry-After`. The
    /// failure's details go only to local clients (the server itself), as
    /// IIS's detailed errors do; others learn only that the application is
    /// starting or failed to, and where the details are.
    pub fn response(&self, client_is_local: bool, now: Instant) -> Response<Body> {
        let retry = self.retry_in(now).as_secs().max(1);
        let details = if client_is_local {
            format!(
                "<p>Start-up failed ({} attempt{}):</p>\n<pre>{}</pre>\n<p>Next attempt in {retry} s.</p>",
                self.failures,
                if self.failures == 1 { "" } else { "s" },
                escape(&self.error)
            )
        } else {
            "<p>The details are in the log file beside the DLL and trace channel, and on this page when \
             it is opened on the server itself.</p>"
                .to_owned()
        };
        let page = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Application unavailable</title></head>\n\
             <body><h1>Application unavailable</h1>\n<p>The application could not start. It is tried again \
             automatically.</p>\n{details}</body></html>\n"
        );
        let mut resp = Response::new(Body::from(page));
        *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        h.insert(header::RETRY_AFTER, HeaderValue::from(retry));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}

/// Whether a client at `remote` is on the server itself (loopback, or the
/// address it connected to).
pub fn is_local(remote: IpAddr, local: IpAddr) -> bool {
    remote.to_canonical().is_loopback() || remote.to_canonical() == local.to_canonical()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let waits: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn retries_come_due_after_the_growing_wait() {
        let t0 = Instant::now();
        let mut f = StartupFailure::new("database unreachable", t0);
        assert!(!f.retry_due(t0));
        assert!(f.retry_due(t0 + Duration::from_secs(1)));
        f.failed_again("still unreachable", t0 + Duration::from_secs(1));
        assert_eq!(f.failures, 2);
        assert!(!f.retry_due(t0 + Duration::from_secs(2)));
        assert!(f.retry_due(t0 + Duration::from_secs(3)));
    }

    async fn page(f: &StartupFailure, local: bool) -> (Response<()>, String) {
        let (parts, body) = f.response(local, Instant::now()).into_parts();
        let text = String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap();
        (Response::from_parts(parts, ()), text)
    }

    #[tokio::test]
    async fn details_go_to_local_clients_only() {
        let f = StartupFailure::new(
            "cannot open C:\\data\\users.sqlite3: <access denied>",
            Instant::now(),
        );
        let (resp, local) = page(&f, true).await;
        assert_eq!(resp.status(), 503);
        assert!(resp.headers().contains_key(header::RETRY_AFTER));
        assert!(
            local.contains("users.sqlite3: &lt;access denied&gt;"),
            "{local}"
        );
        let (_, remote) = page(&f, false).await;
        assert!(
            !remote.contains("sqlite3") && remote.contains("could not start"),
            "{remote}"
        );
    }

    #[test]
    fn local_means_the_server_itself() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(is_local(ip("127.0.0.1"), ip("10.0.0.5")));
        assert!(is_local(ip("::1"), ip("10.0.0.5")));
        assert!(is_local(ip("10.0.0.5"), ip("10.0.0.5")));
        assert!(is_local(ip("::ffff:10.0.0.5"), ip("10.0.0.5")));
        assert!(!is_local(ip("10.0.0.6"), ip("10.0.0.5")));
    }
}
