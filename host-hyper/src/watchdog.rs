//! Per-connection supervision: the header read timeout and graceful drain.
//!
//! A connection with no request in progress must deliver a complete request
//! head within the header read timeout, or it is closed. That stops clients
//! that trickle headers (slowloris) and reclaims idle keep-alive connections.
//! On shutdown, every connection is told to finish its requests and close.
//!
//! Both run in one watchdog task per connection, woken only when its timer
//! fires, the connection closes, or shutdown begins. The connection itself pays
//! two atomic updates per request and an atomic load per poll — where a timer
//! per request (hyper's header timeout) or a channel polled on every wake-up
//! (hyper-util's graceful watcher) each cost several percent of throughput.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::AbortHandle;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use kallithea_core::{BoxError, ResponseBody};

/// Activity of one connection: requests started and finished, and the drain
/// request.
#[derive(Debug)]
pub(crate) struct Activity {
    /// High 32 bits: requests started; low 32 bits: requests finished (both
    /// wrapping). Equal halves mean no request is in progress.
    requests: AtomicU64,
    /// Shutdown began: the connection should finish and close.
    drain: AtomicBool,
    /// The connection task's waker, to deliver `drain`.
    waker: Mutex<Option<Waker>>,
}

const STARTED: u64 = 1 << 32;
const FINISHED: u64 = 1;

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Activity {
            requests: AtomicU64::new(0),
            drain: AtomicBool::new(false),
            waker: Mutex::new(None),
        })
    }

    /// A request head arrived; the returned guard ends the request when dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(STARTED, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// Resolves once the connection has had no request in progress, and no new
    /// one, for a whole `timeout` period: between one and two timeouts after it
    /// went idle, and one timeout after it opened if it never sends a complete
    /// request head. The clock is read only when the timer fires, never per
    /// request.
    pub(crate) async fn expired(&self, timeout: Duration) {
        let mut before = self.requests.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(timeout).await;
            let now = self.requests.load(Ordering::Relaxed);
            let idle = (now >> 32) as u32 == now as u32;
            if idle && now == before {
                return;
            }
            before = now;
        }
    }
}

impl Activity {
    /// Asks the connection to finish its requests and close.
    fn request_drain(&self) {
        self.drain.store(true, Ordering::SeqCst);
        let waker = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// What a connection future must offer to be drained.
pub(crate) trait GracefulConnection: Future {
    /// Stop taking new requests; finish the current ones, then complete.
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, E> GracefulConnection for hyper_util::server::conn::auto::Connection<'static, I, S, E>
where
    Self: Future,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: http_body::Body + Send + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper_util::server::conn::auto::Connection::graceful_shutdown(self);
    }
}

pin_project_lite::pin_project! {
    /// A connection that starts a graceful shutdown when its watchdog says so.
    pub(crate) struct Drainable<C> {
        #[pin]
        conn: C,
        activity: Arc<Activity>,
        last_waker: Option<Waker>,
        draining: bool,
    }
}

impl<C> Drainable<C> {
    pub(crate) fn new(conn: C, activity: Arc<Activity>) -> Self {
        Drainable {
            conn,
            activity,
            last_waker: None,
            draining: false,
        }
    }
}

impl<C: GracefulConnection> Future for Drainable<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        if !*this.draining {
            // Publish the waker only when it changed (a pointer comparison per
            // poll), then look at the flag: the watchdog sets the flag first
            // and wakes second, so no drain request is missed.
            if !this
                .last_waker
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                let w = cx.waker().clone();
                *this
                    .activity
                    .waker
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(w.clone());
                *this.last_waker = Some(w);
            }
            if this.activity.drain.load(Ordering::SeqCst) {
                *this.draining = true;
                this.conn.as_mut().graceful_shutdown();
            }
        }
        this.conn.poll(cx)
    }
}

/// Watches one connection until it closes: closes it once it has been without
/// a request for `header_read_timeout`, and asks it to drain when `shutdown`
/// turns true.
pub(crate) async fn watch_connection(
    activity: Arc<Activity>,
    header_read_timeout: Duration,
    task: AbortHandle,
    mut closed: oneshot::Receiver<()>,
    mut shutdown: watch::Receiver<bool>,
    peer: std::net::SocketAddr,
) {
    tokio::select! {
        () = activity.expired(header_read_timeout) => {
            tracing::debug!(%peer, "closing connection: no complete request head within the header read timeout");
            task.abort();
        }
        _ = &mut closed => {}
        true = async { shutdown.wait_for(|s| *s).await.is_ok() } => {
            activity.request_drain();
            let _ = closed.await;
        }
    }
}

/// A request in progress; dropping it (when hyper is done with its response
/// body) ends the request.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.requests.fetch_add(FINISHED, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// The response body, holding its request's [`InFlight`] until hyper is done
    /// with it.
    pub(crate) struct TrackedBody {
        #[pin]
        inner: ResponseBody,
        _in_flight: Option<InFlight>,
    }
}

impl TrackedBody {
    pub(crate) fn new(inner: ResponseBody, in_flight: Option<InFlight>) -> Self {
        TrackedBody {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn a_connection_that_never_sends_a_request_expires_after_one_timeout() {
        let a = Activity::new();
        let t = Duration::from_millis(50);
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(2), a.expired(t))
            .await
            .expect("expires");
        let took = started.elapsed();
        assert!(took >= t && took < 2 * t, "{took:?}");
    }

    #[tokio::test]
    async fn drain_request_reaches_the_connection() {
        struct Conn {
            shut: bool,
        }
        impl Future for Conn {
            type Output = ();
            fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
                if self.shut {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }
        }
        impl GracefulConnection for Conn {
            fn graceful_shutdown(mut self: Pin<&mut Self>) {
                self.shut = true;
            }
        }
        let a = Activity::new();
        let conn = tokio::spawn(Drainable::new(Conn { shut: false }, Arc::clone(&a)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!conn.is_finished());
        a.request_drain();
        tokio::time::timeout(Duration::from_secs(2), conn)
            .await
            .expect("drained")
            .unwrap();
    }

    #[tokio::test]
    async fn expiry_waits_while_a_request_is_in_progress_or_requests_keep_coming() {
        let a = Activity::new();
        let t = Duration::from_millis(40);
        let guard = a.begin();
        let wait = tokio::time::timeout(Duration::from_millis(200), a.expired(t)).await;
        assert!(
            wait.is_err(),
            "must not expire while a request is in progress"
        );
        drop(guard);

        // Short requests every 10 ms keep the connection alive.
        let busy = async {
            for _ in 0..20 {
                drop(a.begin());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::select! {
            () = a.expired(t) => panic!("expired while requests kept coming"),
            () = busy => {}
        }

        let idle_from = Instant::now();
        tokio::time::timeout(Duration::from_secs(2), a.expired(t))
            .await
            .expect("expires once idle");
        let took = idle_from.elapsed();
        assert!(took >= t && took < 3 * t, "{took:?}");
    }
}
