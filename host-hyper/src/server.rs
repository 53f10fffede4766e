//! The server: accept loop, connections, graceful drain.

use std::convert::Infallible;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use kallithea_core::{Dispatcher, HostError, PathBase, ShutdownReport};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use crate::watchdog::{watch_connection, Activity, Drainable, TrackedBody};
use crate::{HyperConfig, NegotiateSetupError, ProxyTrust};

/// How host-hyper serves: protocols, timeouts, mount point and proxy trust.
///
/// ```no_run
/// # async fn run(app: kallithea_core::Dispatcher) -> std::io::Result<()> {
/// use std::time::Duration;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// host_hyper::Server::new()
///     .header_read_timeout(Duration::from_secs(10))
///     .drain_timeout(Duration::from_secs(20))
///     .serve(listener, app)
///     .await;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Server {
    http2: bool,
    header_read_timeout: Duration,
    drain_timeout: Duration,
    path_base: PathBase,
    trust: Option<ProxyTrust>,
    #[cfg(all(feature = "negotiate", unix))]
    negotiate: Option<Arc<crate::Negotiator>>,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            http2: true,
            header_read_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            path_base: PathBase::root(),
            trust: None,
            #[cfg(all(feature = "negotiate", unix))]
            negotiate: None,
        }
    }
}

impl Server {
    /// A server with the defaults: HTTP/1.1 and HTTP/2 (prior knowledge),
    /// a 30 s header read timeout, a 30 s drain on shutdown, mounted at the root,
    /// no proxy trust (no request ever has an identity).
    pub fn new() -> Self {
        Self::default()
    }

    /// A server set up from the `[server]`-style configuration.
    ///
    /// Fails only when `[negotiate]` is configured and its keytab or replay
    /// cache cannot be used, or this build lacks the `negotiate` feature.
    pub fn from_config(config: &HyperConfig) -> Result<Self, NegotiateSetupError> {
        #[cfg_attr(not(all(feature = "negotiate", unix)), allow(unused_mut))]
        let mut server = Server {
            http2: config.http2,
            header_read_timeout: config.header_read_timeout,
            drain_timeout: config.drain_timeout,
            path_base: config.path_base.clone(),
            trust: config.trust.clone(),
            #[cfg(all(feature = "negotiate", unix))]
            negotiate: None,
        };
        if let Some(negotiate) = &config.negotiate {
            #[cfg(all(feature = "negotiate", unix))]
            {
                server = server.negotiate(crate::Negotiator::new(negotiate)?);
            }
            #[cfg(not(all(feature = "negotiate", unix)))]
            {
                let _ = negotiate;
                return Err(NegotiateSetupError::Unavailable);
            }
        }
        Ok(server)
    }

    /// Whether to serve HTTP/2 (prior knowledge, `h2c`) beside HTTP/1.1.
    pub fn http2(mut self, enabled: bool) -> Self {
        self.http2 = enabled;
        self
    }

    /// How long a connection may go without a request in progress before it
    /// delivers a complete request head: slow-header clients (slowloris) and
    /// idle keep-alive connections are closed after that.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// How long in-flight requests may run after shutdown begins.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Mounts the app at `base`; requests outside it get 404.
    pub fn path_base(mut self, base: PathBase) -> Self {
        self.path_base = base;
        self
    }

    /// Believes identity and forwarding headers from these front proxies.
    pub fn trust(mut self, trust: ProxyTrust) -> Self {
        self.trust = Some(trust);
        self
    }

    /// Authenticates every request with HTTP Negotiate (Kerberos): a request
    /// without a valid token gets 401 `WWW-Authenticate: Negotiate` and never
    /// reaches the app; an accepted one carries the principal as a host
    /// [`Identity`](kallithea_core::Identity) and its response the
    /// mutual-authentication token. The `Authorization` header is consumed
    /// (the app never sees the token). A front proxy's identity header is
    /// then never believed.
    #[cfg(all(feature = "negotiate", unix))]
    pub fn negotiate(mut self, negotiator: crate::Negotiator) -> Self {
        self.negotiate = Some(Arc::new(negotiator));
        self
    }

    fn authenticates(&self) -> bool {
        #[cfg(all(feature = "negotiate", unix))]
        if self.negotiate.is_some() {
            return true;
        }
        self.trust.is_some()
    }

    /// Serves until Ctrl-C or SIGTERM (or the signal given to
    /// [`Serve::with_graceful_shutdown`]), then drains. Await the result.
    pub fn serve(self, listener: TcpListener, dispatcher: Dispatcher) -> Serve {
        Serve {
            server: self,
            listener,
            dispatcher,
            signal: Box::pin(crate::shutdown_signal()),
        }
    }

    /// Starts serving in the background on the current tokio runtime and returns
    /// a handle to stop it.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub fn start(
        self,
        listener: TcpListener,
        dispatcher: Dispatcher,
    ) -> Result<RunningServer, HostError> {
        let local_addr = listener.local_addr().map_err(|source| HostError::Io {
            context: "reading the listener's address".into(),
            source,
        })?;
        let (tx, rx) = oneshot::channel::<Duration>();
        let default_drain = self.drain_timeout;
        let task = tokio::spawn(run(self, listener, dispatcher, async move {
            rx.await.unwrap_or(default_drain)
        }));
        Ok(RunningServer {
            local_addr,
            stop: tx,
            task,
        })
    }
}

/// The future of [`Server::serve`] / [`crate::serve`].
pub struct Serve {
    server: Server,
    listener: TcpListener,
    dispatcher: Dispatcher,
    signal: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Serve {
    /// Shuts down when `signal` resolves instead of on Ctrl-C / SIGTERM.
    pub fn with_graceful_shutdown(
        mut self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        self.signal = Box::pin(signal);
        self
    }
}

impl fmt::Debug for Serve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl IntoFuture for Serve {
    type Output = ShutdownReport;
    type IntoFuture = Pin<Box<dyn Future<Output = ShutdownReport> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        let drain = self.server.drain_timeout;
        let signal = self.signal;
        Box::pin(run(
            self.server,
            self.listener,
            self.dispatcher,
            async move {
                signal.await;
                drain
            },
        ))
    }
}

/// A server started with [`Server::start`].
#[derive(Debug)]
pub struct RunningServer {
    local_addr: SocketAddr,
    stop: oneshot::Sender<Duration>,
    task: tokio::task::JoinHandle<ShutdownReport>,
}

impl RunningServer {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, drains in-flight connections for at most `drain`, and
    /// ends the rest.
    pub async fn shutdown(self, drain: Duration) -> ShutdownReport {
        let _ = self.stop.send(drain);
        self.task.await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "server task failed");
            ShutdownReport::default()
        })
    }
}

/// What every connection of one server shares.
pub(crate) struct Shared {
    pub(crate) dispatcher: Dispatcher,
    pub(crate) trust: Option<ProxyTrust>,
    #[cfg(all(feature = "negotiate", unix))]
    pub(crate) negotiate: Option<Arc<crate::Negotiator>>,
    pub(crate) path_base: PathBase,
    pub(crate) local: SocketAddr,
}

/// How many headers hyper parses without a heap allocation.
const HYPER_STACK_HEADERS: usize = 100;

fn connection_builder(server: &Server, dispatcher: &Dispatcher) -> auto::Builder<TokioExecutor> {
    let limits = dispatcher.limits();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    {
        let mut h1 = builder.http1();
        // No hyper timer here: the header read timeout is enforced per
        // connection by `idle::Activity` (hyper's arms a timer per request).
        h1.max_buf_size((limits.max_header_bytes + 64 * 1024).max(400 * 1024));
        // hyper parses up to 100 headers into a stack array and answers 431
        // beyond; asking for more moves that array to the heap for every
        // request, so only do it when the limits call for it.
        if limits.max_header_count > HYPER_STACK_HEADERS {
            h1.max_headers(limits.max_header_count);
        }
    }
    if server.http2 {
        let max_list = limits.max_header_bytes + 32 * limits.max_header_count;
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(max_list).unwrap_or(u32::MAX));
    } else {
        builder = builder.http1_only();
    }
    builder
}

async fn run(
    server: Server,
    listener: TcpListener,
    dispatcher: Dispatcher,
    stop: impl Future<Output = Duration>,
) -> ShutdownReport {
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "listener has no local address");
            return ShutdownReport::default();
        }
    };
    let builder = connection_builder(&server, &dispatcher);
    let authenticates = server.authenticates();
    let shared = Arc::new(Shared {
        dispatcher,
        trust: server.trust,
        #[cfg(all(feature = "negotiate", unix))]
        negotiate: server.negotiate,
        path_base: server.path_base,
        local,
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tracing::info!(%local, http2 = server.http2, trust = shared.trust.is_some(), authenticates, "host-hyper listening");

    let mut stop = std::pin::pin!(stop);
    let drain = loop {
        tokio::select! {
            drain = &mut stop => break drain,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Running out of file descriptors and the like: wait a
                        // little instead of spinning, then carry on.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let activity = Activity::new();
                let service = {
                    let (shared, activity) = (Arc::clone(&shared), Arc::clone(&activity));
                    hyper::service::service_fn(move |req| {
                        let in_flight = activity.begin();
                        let shared = Arc::clone(&shared);
                        async move {
                            let resp = crate::request::handle(&shared, req, peer).await;
                            Ok::<_, Infallible>(resp.map(|body| TrackedBody::new(body, Some(in_flight))))
                        }
                    })
                };
                let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let conn = Drainable::new(conn, Arc::clone(&activity));
                let (closed_tx, closed_rx) = oneshot::channel::<()>();
                let task = connections.spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    drop(closed_tx);
                });
                tokio::spawn(watch_connection(
                    activity,
                    server.header_read_timeout,
                    task,
                    closed_rx,
                    shutdown_rx.clone(),
                    peer,
                ));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    };

    drop(listener);
    let started = Instant::now();
    while connections.try_join_next().is_some() {}
    let in_flight = connections.len();
    tracing::info!(
        in_flight,
        drain_secs = drain.as_secs_f64(),
        "draining connections"
    );
    let _ = shutdown_tx.send(true);
    let drained = tokio::time::timeout(drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    let aborted = match drained {
        Ok(()) => 0,
        Err(_) => {
            while connections.try_join_next().is_some() {}
            let left = connections.len();
            tracing::warn!(
                left,
                "drain deadline passed: ending the remaining connections"
            );
            left
        }
    };
    connections.shutdown().await;
    let report = ShutdownReport {
        in_flight,
        aborted,
        elapsed: started.elapsed(),
    };
    tracing::info!(?report, "host-hyper stopped");
    report
}
