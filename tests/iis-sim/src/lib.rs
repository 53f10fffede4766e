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
mod ffi;
mod native;
mod native_ffi;
mod registry;
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

use host_isapi::ffi::{
    ERROR_INVALID_PARAMETER, ERROR_NETNAME_DELETED, ERROR_OPERATION_ABORTED, HSE_STATUS_PENDING,
    HSE_STATUS_SUCCESS_AND_KEEP_CONN, HSE_TERM_MUST_UNLOAD, HSE_UNKNOWN_LENGTH,
};

pub use auth::{basic_credentials, netbios_name, Authenticated, Users, WindowsAuth, WindowsUser};

/// How the simulator is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// The extension DLL.
    pub dll: PathBuf,
    /// The virtual directory the extension is mounted at (`/` or `/portal`);
    /// requests elsewhere get IIS's 404.
    pub vdir: String,
    /// The site's number (`/LM/W3SVC/<n>`).
    pub site_id: u32,
    /// Windows authentication.
    pub auth: WindowsAuth,
    /// How much of a request body is read before `HttpExtensionProc`.
    pub read_ahead: usize,
    /// Threads calling `HttpExtensionProc`: 0 (the default) calls it on the
    /// thread that read the request, as IIS's worker threads do; a number
    /// gives a dedicated pool that small, to show an extension that blocks.
    pub iis_threads: usize,
    /// How long a recycle or shutdown waits for in-flight requests before
    /// calling `TerminateExtension` (IIS's `shutdownTimeLimit`).
    pub shutdown_time_limit: Duration,
}

impl Config {
    /// Defaults: mounted at `/`, site 1, anonymous, 48 KiB read-ahead,
    /// `HttpExtensionProc` on the request's own thread, 30 s shutdown limit.
    pub fn new(dll: impl Into<PathBuf>) -> Self {
        Config {
            dll: dll.into(),
            vdir: "/".into(),
            site_id: 1,
            auth: WindowsAuth::Anonymous,
            read_ahead: 48 * 1024,
            iis_threads: 0,
            shutdown_time_limit: Duration::from_secs(30),
        }
    }
}

/// Faults the simulator injects, for every request that starts after they
/// are set.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// The client "disconnects" once this many body bytes were delivered:
    /// the next read fails with `ERROR_NETNAME_DELETED`.
    pub abort_body_after: Option<u64>,
    /// Writes fail (`ERROR_NETNAME_DELETED`) once this many response bytes
    /// were written.
    pub fail_writes_after: Option<u64>,
    /// Every asynchronous read completes only after this delay.
    pub slow_reads: Option<Duration>,
}

/// What happened so far.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Requests handed to the extension.
    pub requests: u64,
    /// Sessions the extension ended (`HSE_REQ_DONE_WITH_SESSION`, or a
    /// synchronous status from `HttpExtensionProc`).
    pub sessions_ended: u64,
    /// Times the DLL was loaded (`GetExtensionVersion`).
    pub loads: u64,
    /// Times `TerminateExtension` was called.
    pub terminations: u64,
    /// Requests whose session has not ended.
    pub in_flight: usize,
    /// Breaches of the ISAPI contract, in words.
    pub violations: Vec<String>,
    /// The longest `HttpExtensionProc` call (or, for a native module,
    /// `OnExecuteRequestHandler` with the factory's `GetHttpModule`).
    pub slowest_extension_proc: Duration,
    /// Whether the DLL is a native module (else an ISAPI extension).
    pub native_module: bool,
    /// Native modules: `CHttpModule::Dispose` calls (one per request).
    pub disposed: u64,
    /// Synchronous body writes (`WriteClient` with `HSE_IO_SYNC`,
    /// `WriteEntityChunks` with `fAsync` false).
    pub sync_writes: u64,
    /// Asynchronous body writes.
    pub async_writes: u64,
    /// Requests that ended inside the call that started them: a final
    /// status returned by `HttpExtensionProc` (no `DONE_WITH_SESSION`), or
    /// `OnExecuteRequestHandler` returning something other than
    /// `RQ_NOTIFICATION_PENDING`.
    pub ended_in_call: u64,
    /// `GetServerVariable` calls the DLL made (ISAPI, both native forms;
    /// a retry with a larger buffer counts again).
    pub server_variable_calls: u64,
}

/// The simulator could not start or reload the extension.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Loading the DLL or `GetExtensionVersion` failed.
    #[error("{0}")]
    Load(String),
    /// Another simulator in this process has the same DLL loaded.
    #[error(
        "{0} is already loaded by another simulator in this process (IIS loads an extension once \
         per worker process): give each simulator its own copy"
    )]
    InUse(PathBuf),
    /// A socket error.
    #[error(transparent)]
    Io(#[from] io::Error),
}

static DLLS_IN_USE: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

struct Instance {
    lib: Loaded,
    generation: u64,
}

/// What the DLL is, told apart by its exports.
enum Loaded {
    /// An ISAPI extension (`GetExtensionVersion`, `HttpExtensionProc`,
    /// `TerminateExtension`).
    Isapi(ffi::Library),
    /// A native module (`RegisterModule`).
    Native(native_ffi::ModuleLibrary),
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    sessions_ended: AtomicU64,
    loads: AtomicU64,
    terminations: AtomicU64,
    slowest_proc_us: AtomicU64,
    disposed: AtomicU64,
    sync_writes: AtomicU64,
    async_writes: AtomicU64,
    ended_in_call: AtomicU64,
    server_variable_calls: AtomicU64,
}

/// Strings that describe the site and are the same for every request.
struct Site {
    /// The virtual directory (`/` or `/portal`).
    vdir: Arc<str>,
    /// The folder the DLL is in (`APPL_PHYSICAL_PATH`).
    physical_path: Arc<str>,
    /// The DLL's path (`lpszPathTranslated`).
    dll_path: String,
}

pub(crate) struct Shared {
    config: Config,
    site: Site,
    index: OnceLock<usize>,
    next_seq: AtomicUsize,
    requests: RwLock<HashMap<usize, Arc<SimRequest>>>,
    instance: tokio::sync::RwLock<Option<Arc<Instance>>>,
    generation: AtomicU64,
    pool: IisPool,
    faults: Mutex<Faults>,
    counters: Counters,
    violations: Mutex<Vec<String>>,
    rt: tokio::runtime::Handle,
    native_module: AtomicBool,
}

impl Shared {
    /// A registered simulator with nothing loaded yet, on the current runtime.
    fn new(config: Config) -> Arc<Shared> {
        let site = Site {
            vdir: config.vdir.as_str().into(),
            physical_path: config
                .dll
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
                .into(),
            dll_path: config.dll.display().to_string(),
        };
        let shared = Arc::new(Shared {
            pool: IisPool::new(config.iis_threads),
            config,
            site,
            index: OnceLock::new(),
            next_seq: AtomicUsize::new(1),
            requests: RwLock::new(HashMap::new()),
            instance: tokio::sync::RwLock::new(None),
            generation: AtomicU64::new(0),
            faults: Mutex::new(Faults::default()),
            counters: Counters::default(),
            violations: Mutex::new(Vec::new()),
            rt: tokio::runtime::Handle::current(),
            native_module: AtomicBool::new(false),
        });
        let _ = shared.index.set(registry::register_simulator(&shared));
        shared
    }

    pub(crate) fn request(&self, seq: usize) -> Option<Arc<SimRequest>> {
        self.requests
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&seq)
            .cloned()
    }

    pub(crate) fn issued(&self, seq: usize) -> bool {
        seq > 0 && seq < self.next_seq.load(Ordering::Acquire)
    }

    pub(crate) fn violation(&self, what: String) {
        tracing::error!(target: "iis_sim", "IIS contract violation: {what}");
        self.violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(what);
    }

    fn stats(&self) -> Stats {
        Stats {
            requests: self.counters.requests.load(Ordering::Acquire),
            sessions_ended: self.counters.sessions_ended.load(Ordering::Acquire),
            loads: self.counters.loads.load(Ordering::Acquire),
            terminations: self.counters.terminations.load(Ordering::Acquire),
            in_flight: self
                .requests
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .len(),
            violations: self
                .violations
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            slowest_extension_proc: Duration::from_micros(
                self.counters.slowest_proc_us.load(Ordering::Acquire),
            ),
            native_module: self.native_module.load(Ordering::Acquire),
            disposed: self.counters.disposed.load(Ordering::Acquire),
            sync_writes: self.counters.sync_writes.load(Ordering::Acquire),
            async_writes: self.counters.async_writes.load(Ordering::Acquire),
            ended_in_call: self.counters.ended_in_call.load(Ordering::Acquire),
            server_variable_calls: self.counters.server_variable_calls.load(Ordering::Acquire),
        }
    }

    /// Loads the DLL and calls `GetExtensionVersion`, or `RegisterModule`
    /// for a native module (on a blocking thread).
    async fn load(self: &Arc<Self>) -> Result<Arc<Instance>, SimError> {
        let dll = self.config.dll.clone();
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let sim_handle = registry::handle(*self.index.get().expect("registered"), 0);
        let lib = tokio::task::spawn_blocking(move || {
            if native_ffi::is_native_module(&dll)? {
                return Ok(Loaded::Native(native_ffi::ModuleLibrary::load(
                    &dll, sim_handle,
                )?));
            }
            let lib = ffi::Library::load(&dll)?;
            let (version, desc) = lib.get_extension_version()?;
            tracing::info!(target: "iis_sim", dll = %dll.display(), version = format!("{:#x}", version), desc, "extension loaded");
            Ok::<_, String>(Loaded::Isapi(lib))
        })
        .await
        .map_err(|e| SimError::Load(format!("loading the extension panicked: {e}")))?
        .map_err(SimError::Load)?;
        self.counters.loads.fetch_add(1, Ordering::AcqRel);
        self.native_module
            .store(matches!(lib, Loaded::Native(_)), Ordering::Release);
        Ok(Arc::new(Instance { lib, generation }))
    }

    /// Waits for the instance's requests (up to the shutdown time limit),
    /// calls `TerminateExtension`, checks that every session ended, and lets
    /// the library go.
    async fn unload(self: &Arc<Self>, instance: Arc<Instance>) {
        let generation = instance.generation;
        let deadline = Instant::now() + self.config.shutdown_time_limit;
        let outstanding = |s: &Shared| {
            s.requests
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .filter(|r| r.generation == generation)
                .count()
        };
        while outstanding(self) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let this = Arc::clone(self);
        let native = matches!(instance.lib, Loaded::Native(_));
        let ended = tokio::task::spawn_blocking(move || {
            match &instance.lib {
                Loaded::Isapi(lib) => {
                    lib.terminate_extension(HSE_TERM_MUST_UNLOAD);
                }
                Loaded::Native(lib) => lib.terminate(),
            }
            this.counters.terminations.fetch_add(1, Ordering::AcqRel);
            drop(instance);
        })
        .await;
        if ended.is_err() {
            self.violation("TerminateExtension (or the factory's Terminate) panicked".into());
        }
        let left: Vec<usize> = self
            .requests
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|r| r.generation == generation)
            .map(|r| r.seq)
            .collect();
        for seq in left {
            self.violation(if native {
                format!(
                    "request {seq} never completed (no final notification status), though the \
                     factory's Terminate returned"
                )
            } else {
                format!(
                    "request {seq} never got HSE_REQ_DONE_WITH_SESSION, though TerminateExtension returned"
                )
            });
        }
    }
}

/// Waits for `work` on the calling thread, as a synchronous IIS call blocks
/// its caller. The work runs on a thread of its own: the caller may be one of
/// the runtime's own threads (an extension calling back from inside
/// `HttpExtensionProc`), where the runtime cannot be blocked on. `None` if
/// the work panicked.
pub(crate) fn block_here<T: Send>(
    rt: &tokio::runtime::Handle,
    work: impl Future<Output = T> + Send,
) -> Option<T> {
    std::thread::scope(|s| s.spawn(|| rt.block_on(work)).join().ok())
}

type Job = Box<dyn FnOnce() + Send>;

/// The threads IIS calls `HttpExtensionProc` on.
struct IisPool {
    jobs: Option<Mutex<std::sync::mpsc::Sender<Job>>>,
}

impl IisPool {
    fn new(threads: usize) -> Self {
        if threads == 0 {
            return IisPool { jobs: None };
        }
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("iis-sim-pool-{i}"))
                .spawn(move || loop {
                    let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })
                .expect("spawning an IIS pool thread");
        }
        IisPool {
            jobs: Some(Mutex::new(tx)),
        }
    }

    async fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Option<R> {
        let Some(jobs) = &self.jobs else {
            // On this thread, as IIS calls the extension from the thread that
            // read the request.
            return Some(f());
        };
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        jobs.lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .ok()?;
        rx.await.ok()
    }
}

/// The response head the extension sent.
struct Head {
    status: StatusCode,
    headers: http::HeaderMap,
}

type BodyChunk = Result<Bytes, io::Error>;

#[derive(Default)]
struct ReqState {
    ecb: Option<ffi::EcbStorage>,
    ecb_ptr: Option<ffi::EcbPtr>,
    completion: Option<ffi::Completion>,
    pending: Option<&'static str>,
    cancel: Option<oneshot::Sender<()>>,
    head_tx: Option<oneshot::Sender<Head>>,
    /// The status and headers the extension sent, held until the first body
    /// bytes or the end of the session so that they leave together.
    held_head: Option<Head>,
    body_tx: Option<mpsc::Sender<BodyChunk>>,
    headers_sent: bool,
    done: bool,
    keep_conn: bool,
}

impl ReqState {
    /// Lets the held status and headers go to the client.
    fn release_head(&mut self) {
        if let Some(head) = self.held_head.take() {
            if let Some(tx) = self.head_tx.take() {
                let _ = tx.send(head);
            }
        }
    }
}

/// How a body write stands after [`SimRequest::queue_body`].
enum Queued {
    /// Finished (in the response, or failed).
    Done(Result<(), u32>),
    /// The response has no room yet: send this when it has.
    Wait(mpsc::Sender<BodyChunk>, Bytes),
}

/// The request body as the client sends it, with what the last read left.
struct BodySource {
    body: Option<Incoming>,
    leftover: Bytes,
    delivered: u64,
}

impl BodySource {
    /// Up to `max` bytes; empty at the end of the body.
    async fn next(&mut self, max: usize) -> Result<Bytes, ()> {
        loop {
            if !self.leftover.is_empty() {
                let n = self.leftover.len().min(max);
                self.delivered += n as u64;
                return Ok(self.leftover.split_to(n));
            }
            let Some(body) = self.body.as_mut() else {
                return Ok(Bytes::new());
            };
            match body.frame().await {
                None => {
                    self.body = None;
                    return Ok(Bytes::new());
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.leftover = data;
                    }
                }
                Some(Err(_)) => {
                    self.body = None;
                    return Err(());
                }
            }
        }
    }

    fn is_end(&self) -> bool {
        self.leftover.is_empty()
            && self
                .body
                .as_ref()
                .is_none_or(hyper::body::Body::is_end_stream)
    }
}

pub(crate) struct SimRequest {
    seq: usize,
    generation: u64,
    shared: Arc<Shared>,
    info: vars::RequestInfo,
    keep_alive_wanted: bool,
    disconnected: AtomicBool,
    /// The session ended ([`SimRequest::done`]): set before the request
    /// leaves the registry's tables.
    ended: AtomicBool,
    written: AtomicU64,
    faults: Faults,
    state: Mutex<ReqState>,
    body: tokio::sync::Mutex<BodySource>,
    /// Native-module mode: the module's side of the request.
    native: Option<native::Native>,
}

impl SimRequest {
    /// The IIS objects of a native-mode request.
    pub(crate) fn native(&self) -> Option<&native_ffi::NativeObjects> {
        self.native.as_ref().map(|n| &n.objects)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReqState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn violation(&self, what: &str) {
        self.shared
            .violation(format!("request {}: {what}", self.seq));
    }

    /// A server variable the DLL asked for (counted in
    /// [`Stats::server_variable_calls`]).
    pub(crate) fn server_variable(&self, name: &str) -> Result<Vec<u8>, u32> {
        self.count_variable_call();
        self.info.lookup(name)
    }

    /// [`server_variable`](Self::server_variable) into `out`.
    pub(crate) fn server_variable_into(&self, name: &str, out: &mut Vec<u8>) -> Result<(), u32> {
        self.count_variable_call();
        self.info.lookup_into(name, out)
    }

    fn count_variable_call(&self) {
        self.shared
            .counters
            .server_variable_calls
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the session has ended.
    pub(crate) fn has_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    pub(crate) fn wants_keep_alive(&self) -> bool {
        self.keep_alive_wanted
    }

    pub(crate) fn is_connected(&self) -> bool {
        if self.disconnected.load(Ordering::Acquire) {
            return false;
        }
        let gone = self
            .lock()
            .body_tx
            .as_ref()
            .is_some_and(|tx| tx.is_closed());
        if gone {
            self.disconnected.store(true, Ordering::Release);
        }
        !gone
    }

    pub(crate) fn register_completion(&self, completion: ffi::Completion) {
        self.lock().completion = Some(completion);
    }

    pub(crate) fn unsupported(&self, request: u32) {
        tracing::warn!(target: "iis_sim", request, "unsupported ServerSupportFunction request");
    }

    /// Claims the one asynchronous operation slot.
    fn begin_async(&self, what: &'static str) -> Result<(ffi::Completion, ffi::EcbPtr), u32> {
        let mut st = self.lock();
        let Some(completion) = st.completion else {
            drop(st);
            self.violation(&format!(
                "asynchronous {what} without a completion callback (HSE_REQ_IO_COMPLETION)"
            ));
            return Err(ERROR_INVALID_PARAMETER);
        };
        if let Some(other) = st.pending {
            drop(st);
            self.violation(&format!(
                "asynchronous {what} while an asynchronous {other} is outstanding"
            ));
            return Err(ERROR_INVALID_PARAMETER);
        }
        let ecb = st.ecb_ptr.ok_or(ERROR_INVALID_PARAMETER)?;
        st.pending = Some(what);
        Ok((completion, ecb))
    }

    /// Ends the asynchronous operation and calls the extension back (on the
    /// simulator's thread, not the one that started the operation).
    fn complete(&self, completion: ffi::Completion, ecb: ffi::EcbPtr, result: Result<u32, u32>) {
        {
            let mut st = self.lock();
            st.pending = None;
            st.cancel = None;
            if st.done {
                // The session ended with the operation outstanding (already
                // recorded): the ECB must not be handed out again.
                st.ecb = None;
                return;
            }
        }
        let (n, err) = match result {
            Ok(n) => (n, 0),
            Err(e) => (0, e),
        };
        completion.deliver(ecb, n, err);
    }

    pub(crate) fn write_async(self: &Arc<Self>, data: Bytes) -> Result<(), u32> {
        if !self.lock().headers_sent {
            self.violation(
                "WriteClient before the response headers (raw responses are not simulated)",
            );
            return Err(ERROR_INVALID_PARAMETER);
        }
        let (completion, ecb) = self.begin_async("write")?;
        self.shared
            .counters
            .async_writes
            .fetch_add(1, Ordering::AcqRel);
        let len = data.len() as u32;
        let queued = self.queue_body(data);
        let this = Arc::clone(self);
        // The completion comes from the simulator's threads, never from
        // inside the call.
        self.shared.rt.spawn(async move {
            let r = match queued {
                Queued::Done(r) => r,
                Queued::Wait(tx, data) => this.send_body(tx, data).await,
            };
            this.complete(completion, ecb, r.map(|()| len));
        });
        Ok(())
    }

    /// Starts a body write: puts `data` into the response at once when there
    /// is room (with the held status and headers, so that they leave in one
    /// piece), or says what to wait for.
    fn queue_body(&self, data: Bytes) -> Queued {
        let before = self.written.fetch_add(data.len() as u64, Ordering::AcqRel);
        if let Some(limit) = self.faults.fail_writes_after {
            if before + data.len() as u64 > limit {
                self.disconnected.store(true, Ordering::Release);
                return Queued::Done(Err(ERROR_NETNAME_DELETED));
            }
        }
        let mut st = self.lock();
        let Some(tx) = st.body_tx.clone() else {
            return Queued::Done(Err(ERROR_NETNAME_DELETED));
        };
        let queued = if data.is_empty() {
            Queued::Done(Ok(()))
        } else {
            match tx.try_send(Ok(data)) {
                Ok(()) => Queued::Done(Ok(())),
                Err(mpsc::error::TrySendError::Full(Ok(data))) => Queued::Wait(tx, data),
                Err(_) => {
                    self.disconnected.store(true, Ordering::Release);
                    Queued::Done(Err(ERROR_NETNAME_DELETED))
                }
            }
        };
        st.release_head();
        queued
    }

    async fn send_body(&self, tx: mpsc::Sender<BodyChunk>, data: Bytes) -> Result<(), u32> {
        tx.send(Ok(data)).await.map_err(|_| {
            self.disconnected.store(true, Ordering::Release);
            ERROR_NETNAME_DELETED
        })
    }

    pub(crate) fn write_sync(self: &Arc<Self>, data: Bytes) -> Result<(), u32> {
        if !self.lock().headers_sent {
            self.violation(
                "WriteClient before the response headers (raw responses are not simulated)",
            );
            return Err(ERROR_INVALID_PARAMETER);
        }
        self.shared
            .counters
            .sync_writes
            .fetch_add(1, Ordering::AcqRel);
        match self.queue_body(data) {
            Queued::Done(r) => r,
            Queued::Wait(tx, data) => {
                let this = Arc::clone(self);
                block_here(
                    &self.shared.rt,
                    async move { this.send_body(tx, data).await },
                )
                .unwrap_or(Err(ERROR_NETNAME_DELETED))
            }
        }
    }

    async fn read_body(&self, max: usize) -> Result<Bytes, u32> {
        if let Some(d) = self.faults.slow_reads {
            tokio::time::sleep(d).await;
        }
        let mut body = self.body.lock().await;
        if let Some(limit) = self.faults.abort_body_after {
            if body.delivered >= limit {
                self.disconnected.store(true, Ordering::Release);
                return Err(ERROR_NETNAME_DELETED);
            }
        }
        let max = match self.faults.abort_body_after {
            Some(limit) => max.min((limit - body.delivered).max(1) as usize),
            None => max,
        };
        body.next(max).await.map_err(|()| {
            self.disconnected.store(true, Ordering::Release);
            ERROR_NETNAME_DELETED
        })
    }

    pub(crate) fn read_async(self: &Arc<Self>, mut buf: ffi::ReadBuffer) -> Result<(), u32> {
        let (completion, ecb) = self.begin_async("read")?;
        let (cancel_tx, cancel_rx) = oneshot::channel();
        self.lock().cancel = Some(cancel_tx);
        let this = Arc::clone(self);
        self.shared.rt.spawn(async move {
            let r = tokio::select! {
                r = this.read_body(buf.len()) => r,
                _ = cancel_rx => Err(ERROR_OPERATION_ABORTED),
            };
            let r = r.map(|data| buf.fill(&data) as u32);
            this.complete(completion, ecb, r);
        });
        Ok(())
    }

    pub(crate) fn read_sync(self: &Arc<Self>, buf: &mut ffi::ReadBuffer) -> Result<usize, u32> {
        let this = Arc::clone(self);
        let max = buf.len();
        let data = block_here(&self.shared.rt, async move { this.read_body(max).await })
            .unwrap_or(Err(ERROR_NETNAME_DELETED))?;
        Ok(buf.fill(&data))
    }

    pub(crate) fn send_headers(
        &self,
        status: &[u8],
        headers: &[u8],
        keep_conn: bool,
    ) -> Result<(), u32> {
        let parsed = parse_head(status, headers);
        let mut st = self.lock();
        if st.headers_sent {
            drop(st);
            self.violation("the response headers were sent twice");
            return Err(ERROR_INVALID_PARAMETER);
        }
        let head = match parsed {
            Ok(h) => h,
            Err(why) => {
                drop(st);
                self.violation(&format!("unusable response headers: {why}"));
                return Err(ERROR_INVALID_PARAMETER);
            }
        };
        st.headers_sent = true;
        st.keep_conn = keep_conn;
        st.held_head = Some(head);
        Ok(())
    }

    pub(crate) fn cancel_io(&self) {
        if let Some(cancel) = self.lock().cancel.take() {
            let _ = cancel.send(());
        }
    }

    pub(crate) fn close_connection(&self) {
        let tx = {
            let mut st = self.lock();
            st.keep_conn = false;
            st.release_head();
            st.body_tx.take()
        };
        self.disconnected.store(true, Ordering::Release);
        if let Some(tx) = tx {
            self.shared.rt.spawn(async move {
                let _ = tx
                    .send(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the extension closed the connection",
                    )))
                    .await;
            });
        }
    }

    /// `HSE_REQ_DONE_WITH_SESSION` (`status` from its buffer), the end of
    /// a request `HttpExtensionProc` completed synchronously, or a native
    /// module's final status (`what` names the call, for violations).
    pub(crate) fn done(&self, status: Option<u32>, what: &str) -> Result<(), u32> {
        let storage = {
            let mut st = self.lock();
            if st.done {
                drop(st);
                self.violation(&format!("{what} came twice"));
                return Err(ERROR_INVALID_PARAMETER);
            }
            st.done = true;
            self.ended.store(true, Ordering::Release);
            if let Some(s) = status {
                st.keep_conn &= s == HSE_STATUS_SUCCESS_AND_KEEP_CONN;
            }
            st.release_head();
            st.head_tx = None;
            // Dropping the sender ends the response body.
            st.body_tx = None;
            if let Some(op) = st.pending.filter(|_| self.native.is_none()) {
                drop(st);
                self.violation(&format!("{what} with an asynchronous {op} outstanding"));
                None
            } else {
                st.ecb_ptr = None;
                st.ecb.take()
            }
        };
        self.shared
            .requests
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.seq);
        self.shared
            .counters
            .sessions_ended
            .fetch_add(1, Ordering::AcqRel);
        // The ECB is freed here: any later use of its handle is caught by
        // the registry.
        drop(storage);
        Ok(())
    }
}

fn parse_head(status: &[u8], headers: &[u8]) -> Result<Head, String> {
    let status = std::str::from_utf8(status).map_err(|_| "the status is not text")?;
    let code = status
        .split(' ')
        .next()
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| format!("bad status line {status:?}"))?;
    // The values share one copy of the block.
    let block = Bytes::copy_from_slice(headers);
    let mut out = http::HeaderMap::new();
    let mut rest = &block[..];
    loop {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("the header block does not end with an empty line")?;
        let line = &rest[..end];
        rest = &rest[end + 2..];
        if line.is_empty() {
            break;
        }
        let colon = line.iter().position(|&b| b == b':').ok_or_else(|| {
            format!(
                "header line without a colon: {:?}",
                String::from_utf8_lossy(line)
            )
        })?;
        let name = HeaderName::from_bytes(&line[..colon]).map_err(|e| e.to_string())?;
        let value = block.slice_ref(line[colon + 1..].trim_ascii());
        let value = HeaderValue::from_maybe_shared(value).map_err(|e| e.to_string())?;
        out.append(name, value);
    }
    if !rest.is_empty() {
        return Err("bytes after the header block's empty line".into());
    }
    Ok(Head {
        status: code,
        headers: out,
    })
}

/// The response body: what the extension writes.
pub struct SimBody {
    rx: Option<mpsc::Receiver<BodyChunk>>,
    fixed: Option<Bytes>,
}

impl SimBody {
    fn text(s: impl Into<Bytes>) -> Self {
        SimBody {
            rx: None,
            fixed: Some(s.into()),
        }
    }

    /// The body of a response whose writer is gone: what it wrote, in one
    /// piece, unless a write carried an error (then it streams as it is).
    fn settle(mut self) -> Self {
        let Some(rx) = self.rx.as_mut() else {
            return self;
        };
        if !rx.is_closed() {
            // A write is still being delivered.
            return self;
        }
        // Mostly a single write: no list for that.
        let mut first: Option<Bytes> = None;
        let mut chunks = Vec::new();
        loop {
            match rx.try_recv() {
                Ok(Ok(chunk)) if first.is_none() => first = Some(chunk),
                Ok(Ok(chunk)) => chunks.push(chunk),
                Ok(Err(e)) => {
                    // Keep the failure for the client to see: put it back
                    // behind what came before, in a fresh channel.
                    let (tx, rx) = mpsc::channel(chunks.len() + 2);
                    for c in first.into_iter().chain(chunks) {
                        let _ = tx.try_send(Ok(c));
                    }
                    let _ = tx.try_send(Err(e));
                    return SimBody {
                        rx: Some(rx),
                        fixed: None,
                    };
                }
                // No sender is left, so nothing more can come.
                Err(_) => break,
            }
        }
        let fixed = match first {
            Some(first) if !chunks.is_empty() => {
                chunks.insert(0, first);
                Some(chunks.concat().into())
            }
            first => first,
        };
        SimBody { rx: None, fixed }
    }
}

impl http_body::Body for SimBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(b) = self.fixed.take() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        match self.rx.as_mut() {
            None => Poll::Ready(None),
            Some(rx) => rx.poll_recv(cx).map(|c| c.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.fixed.is_none() && self.rx.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match (&self.fixed, &self.rx) {
            (Some(b), None) => http_body::SizeHint::with_exact(b.len() as u64),
            (None, None) => http_body::SizeHint::with_exact(0),
            _ => http_body::SizeHint::default(),
        }
    }
}

fn plain(status: StatusCode, text: &str) -> Response<SimBody> {
    let mut r = Response::new(SimBody::text(format!("{text}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Marks the request's client gone if the service future is dropped before
/// the response head (hyper drops it when the connection closes).
struct DisconnectGuard(Option<Arc<SimRequest>>);

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        if let Some(req) = self.0.take() {
            req.disconnected.store(true, Ordering::Release);
            req.cancel_io();
        }
    }
}

fn under_vdir(path: &str, vdir: &str) -> bool {
    if vdir == "/" {
        return true;
    }
    let (p, v) = (path.as_bytes(), vdir.as_bytes());
    p.len() >= v.len()
        && p[..v.len()].eq_ignore_ascii_case(v)
        && (p.len() == v.len() || p[v.len()] == b'/' || p[v.len()] == b'?')
}

fn keep_alive_wanted(version: Version, headers: &http::HeaderMap) -> bool {
    let says = |w: &str| {
        headers.get_all(CONNECTION).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(w)))
        })
    };
    match version {
        Version::HTTP_10 | Version::HTTP_09 => says("keep-alive"),
        _ => !says("close"),
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    remote: SocketAddr,
    local: SocketAddr,
) -> Result<Response<SimBody>, Infallible> {
    let (parts, body) = req.into_parts();
    if !under_vdir(parts.uri.path(), &shared.config.vdir) {
        return Ok(plain(StatusCode::NOT_FOUND, "HTTP Error 404.0 - Not Found"));
    }
    let authenticated = match shared.config.auth.authenticate(&parts.headers) {
        Ok(a) => a,
        Err(challenge) => {
            let mut r = plain(StatusCode::UNAUTHORIZED, "HTTP Error 401.2 - Unauthorized");
            if let Ok(v) = HeaderValue::from_str(&challenge.0) {
                r.headers_mut().insert(WWW_AUTHENTICATE, v);
            }
            return Ok(r);
        }
    };
    let mut response = serve(&shared, parts, body, remote, local, authenticated.user).await?;
    shared.config.auth.challenge_401(&mut response);
    if let Some(token) = authenticated.mutual {
        response.headers_mut().append(WWW_AUTHENTICATE, token);
    }
    Ok(response)
}

/// Serves an authenticated request through the loaded extension or module.
async fn serve(
    shared: &Arc<Shared>,
    parts: http::request::Parts,
    body: Incoming,
    remote: SocketAddr,
    local: SocketAddr,
    user: Option<WindowsUser>,
) -> Result<Response<SimBody>, Infallible> {
    // The kind of DLL is fixed by its file; the instance itself is taken
    // once, when the request registers.
    if shared.native_module.load(Ordering::Acquire) {
        return Ok(handle_native(shared, parts, body, remote, local, user).await);
    }

    // Read ahead, as IIS does before calling the extension.
    let declared: Option<u64> = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let mut source = BodySource {
        body: Some(body),
        leftover: Bytes::new(),
        delivered: 0,
    };
    let mut preloaded = Vec::new();
    let read_ahead = shared.config.read_ahead;
    let limit = declared.map_or(read_ahead, |d| (d.min(read_ahead as u64)) as usize);
    while preloaded.len() < limit {
        match source.next(limit - preloaded.len()).await {
            Ok(b) if b.is_empty() => break,
            Ok(b) => preloaded.extend_from_slice(&b),
            Err(()) => return Ok(plain(StatusCode::BAD_REQUEST, "the client went away")),
        }
    }
    source.delivered = 0;
    let total = match declared {
        // 4 GiB or more does not fit: IIS says 0xFFFFFFFF ("read until no
        // more data"), as for a body of unknown length.
        Some(n) => u32::try_from(n).unwrap_or(HSE_UNKNOWN_LENGTH),
        None if source.is_end() => preloaded.len() as u32,
        None => HSE_UNKNOWN_LENGTH,
    };

    let version = parts.version;
    let info = request_info(shared, parts, remote, local, user);
    let seq = shared.next_seq.fetch_add(1, Ordering::AcqRel);
    let (head_tx, head_rx) = oneshot::channel();
    let (body_tx, body_rx) = mpsc::channel(1);
    let keep_alive_wanted = keep_alive_wanted(info.version, &info.headers);
    let faults = shared
        .faults
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let content_type = info
        .headers
        .get(http::header::CONTENT_TYPE)
        .map_or(&[][..], |v| v.as_bytes());
    let mut storage = ffi::EcbStorage::new(ffi::EcbFields {
        conn_id: registry::handle(*shared.index.get().expect("registered"), seq),
        method: info.method.as_str(),
        query: info.query(),
        path_info: info.path(),
        path_translated: &shared.site.dll_path,
        content_type,
        total,
        preloaded,
    });
    let ecb = storage.ptr();
    // The request joins the books under the instance's lock: a recycle,
    // which waits for every request of the old instance, must not miss one
    // that holds the old instance but is not registered yet. (During a
    // recycle this waits, and the request goes to the new instance.)
    let slot = shared.instance.read().await;
    let Some(instance) = slot.clone() else {
        return Ok(plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "HTTP Error 503 - the extension is not loaded",
        ));
    };
    let request = Arc::new(SimRequest {
        seq,
        generation: instance.generation,
        shared: Arc::clone(shared),
        info,
        keep_alive_wanted,
        disconnected: AtomicBool::new(false),
        ended: AtomicBool::new(false),
        written: AtomicU64::new(0),
        faults,
        state: Mutex::new(ReqState {
            ecb: Some(storage),
            ecb_ptr: Some(ecb),
            head_tx: Some(head_tx),
            body_tx: Some(body_tx),
            ..ReqState::default()
        }),
        body: tokio::sync::Mutex::new(source),
        native: None,
    });
    shared
        .requests
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(seq, Arc::clone(&request));
    drop(slot);
    shared.counters.requests.fetch_add(1, Ordering::AcqRel);
    let mut guard = DisconnectGuard(Some(Arc::clone(&request)));

    let called = Instant::now();
    let proc_instance = Arc::clone(&instance);
    let status = shared
        .pool
        .run(move || match &proc_instance.lib {
            Loaded::Isapi(lib) => lib.http_extension_proc(ecb),
            Loaded::Native(_) => host_isapi::ffi::HSE_STATUS_ERROR,
        })
        .await;
    let took = called.elapsed().as_micros() as u64;
    shared
        .counters
        .slowest_proc_us
        .fetch_max(took, Ordering::AcqRel);
    drop(instance);
    match status {
        Some(HSE_STATUS_PENDING) => {}
        _ => {
            // Completed synchronously (or failed): the session is over.
            shared.counters.ended_in_call.fetch_add(1, Ordering::AcqRel);
            let _ = request.done(None, "HSE_REQ_DONE_WITH_SESSION");
            if status != Some(host_isapi::ffi::HSE_STATUS_SUCCESS)
                && status != Some(HSE_STATUS_SUCCESS_AND_KEEP_CONN)
                && !request.lock().headers_sent
            {
                guard.0 = None;
                return Ok(plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "HTTP Error 500.0 - the ISAPI extension reported an error",
                ));
            }
        }
    }
    Ok(respond(&request, head_rx, body_rx, version, guard).await)
}

/// The variables' view of a request.
fn request_info(
    shared: &Shared,
    parts: http::request::Parts,
    remote: SocketAddr,
    local: SocketAddr,
    user: Option<WindowsUser>,
) -> vars::RequestInfo {
    let (target, path_end) = match parts.uri.path_and_query() {
        Some(pq) => (pq.as_str().as_bytes().to_vec(), pq.path().len()),
        None => (b"/".to_vec(), 1),
    };
    vars::RequestInfo {
        method: parts.method,
        target,
        path_end,
        version: parts.version,
        headers: parts.headers,
        remote,
        local,
        user,
        vdir: Arc::clone(&shared.site.vdir),
        site_id: shared.config.site_id,
        physical_path: Arc::clone(&shared.site.physical_path),
    }
}

/// The response as the DLL made it: the head when it arrives, then the body
/// as it is written.
async fn respond(
    request: &SimRequest,
    head_rx: oneshot::Receiver<Head>,
    body_rx: mpsc::Receiver<BodyChunk>,
    version: Version,
    mut guard: DisconnectGuard,
) -> Response<SimBody> {
    let head = head_rx.await;
    guard.0 = None;
    let Ok(head) = head else {
        return plain(
            StatusCode::BAD_GATEWAY,
            "the DLL ended the request without sending a response",
        );
    };
    // What the DLL decided (fKeepConn in the header call, or the absence of
    // SetNeedDisconnect).
    let (keep, ended) = {
        let st = request.lock();
        (st.keep_conn, st.done)
    };
    let mut body = SimBody {
        rx: Some(body_rx),
        fixed: None,
    };
    if ended {
        // The whole response is here (the session ended, often inside the
        // call): it leaves as one piece, as IIS sends a completed response.
        body = body.settle();
    }
    let mut response = Response::new(body);
    *response.status_mut() = head.status;
    *response.headers_mut() = head.headers;
    let h = response.headers_mut();
    if !keep && version != Version::HTTP_2 {
        h.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Percent-decodes a path as HTTP.sys cooks it (invalid UTF-8 replaced).
fn cook_path(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A request for a native module: its objects, the module from the
/// factory, `OnExecuteRequestHandler` on an IIS thread, then completions
/// until the final status.
async fn handle_native(
    shared: &Arc<Shared>,
    parts: http::request::Parts,
    body: Incoming,
    remote: SocketAddr,
    local: SocketAddr,
    user: Option<WindowsUser>,
) -> Response<SimBody> {
    let declared: Option<u64> = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    // A body of unknown length: chunked, or HTTP/2 without Content-Length.
    let chunked = parts.headers.contains_key(http::header::TRANSFER_ENCODING)
        || (declared.is_none() && !hyper::body::Body::is_end_stream(&body));
    let seq = shared.next_seq.fetch_add(1, Ordering::AcqRel);
    let handle = registry::handle(*shared.index.get().expect("registered"), seq);
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map_or_else(|| local.to_string(), str::to_owned);
    let raw_url = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .as_bytes()
        .to_vec();
    let cooked_query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let version = match parts.version {
        Version::HTTP_09 => (0, 9),
        Version::HTTP_10 => (1, 0),
        Version::HTTP_2 => (2, 0),
        Version::HTTP_3 => (3, 0),
        _ => (1, 1),
    };
    let raw = native_ffi::RawRequest::new(native_ffi::RawFields {
        method: parts.method.as_str(),
        raw_url: &raw_url,
        origin: &format!("http://{host}"),
        cooked_path: &cook_path(parts.uri.path()),
        cooked_query: &cooked_query,
        version,
        headers: &parts.headers,
        request_id: seq as u64,
        remote,
        local,
    });
    let raw = match raw {
        Ok(r) => r,
        // HTTP.sys refuses what does not fit its USHORT lengths.
        Err(why) => return plain(StatusCode::BAD_REQUEST, &format!("HTTP Error 400 - {why}")),
    };
    let user_strings = user
        .as_ref()
        .filter(|u| !u.name.is_empty())
        .map(|u| native_ffi::UserStrings::new(&u.name, &u.auth_type));
    let version = parts.version;
    let info = request_info(shared, parts, remote, local, user);
    let (head_tx, head_rx) = oneshot::channel();
    let (body_tx, body_rx) = mpsc::channel(1);
    let keep_alive_wanted = keep_alive_wanted(info.version, &info.headers);
    let faults = shared
        .faults
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    // Registered under the instance's lock, as in `serve`.
    let slot = shared.instance.read().await;
    let Some(instance) = slot.clone() else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "HTTP Error 503 - the module is not loaded",
        );
    };
    let generation = instance.generation;
    let request = Arc::new(SimRequest {
        seq,
        generation,
        shared: Arc::clone(shared),
        info,
        keep_alive_wanted,
        disconnected: AtomicBool::new(false),
        ended: AtomicBool::new(false),
        written: AtomicU64::new(0),
        faults,
        state: Mutex::new(ReqState {
            head_tx: Some(head_tx),
            body_tx: Some(body_tx),
            ..ReqState::default()
        }),
        body: tokio::sync::Mutex::new(BodySource {
            body: Some(body),
            leftover: Bytes::new(),
            delivered: 0,
        }),
        native: Some(native::Native::new(
            native_ffi::NativeObjects::new(handle, raw, user_strings),
            Some(instance),
            declared,
            chunked,
        )),
    });
    shared
        .requests
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(seq, Arc::clone(&request));
    drop(slot);
    shared.counters.requests.fetch_add(1, Ordering::AcqRel);
    let guard = DisconnectGuard(Some(Arc::clone(&request)));

    let called = Instant::now();
    let on_pool = Arc::clone(&request);
    let started = shared.pool.run(move || native::execute(&on_pool)).await;
    let took = called.elapsed().as_micros() as u64;
    shared
        .counters
        .slowest_proc_us
        .fetch_max(took, Ordering::AcqRel);
    match started {
        Some(Ok(())) => {}
        Some(Err(why)) => {
            tracing::error!(target: "iis_sim", "{why}");
            let _ = request.done(None, "the module's failure");
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("HTTP Error 500.0 - {why}"),
            );
        }
        None => {
            let _ = request.done(None, "the pool's failure");
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "HTTP Error 503 - the IIS thread pool is gone",
            );
        }
    }
    respond(&request, head_rx, body_rx, version, guard).await
}

/// A running simulator.
pub struct RunningSimulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
    connections: Arc<Mutex<JoinSet<()>>>,
}

/// Starts a simulator on `listener`: loads the DLL, calls
/// `GetExtensionVersion`, and serves.
pub async fn start(
    config: Config,
    listener: tokio::net::TcpListener,
) -> Result<RunningSimulator, SimError> {
    let dll = std::fs::canonicalize(&config.dll)
        .map_err(|e| SimError::Load(format!("{}: {e}", config.dll.display())))?;
    {
        let mut in_use = DLLS_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
        if !in_use.get_or_insert_with(HashSet::new).insert(dll.clone()) {
            return Err(SimError::InUse(dll));
        }
    }
    let release = || {
        if let Some(set) = DLLS_IN_USE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            set.remove(&dll);
        }
    };
    let shared = Shared::new(Config {
        dll: dll.clone(),
        ..config
    });
    let instance = match shared.load().await {
        Ok(i) => i,
        Err(e) => {
            release();
            return Err(e);
        }
    };
    *shared.instance.write().await = Some(instance);
    let addr = listener.local_addr()?;
    let connections = Arc::new(Mutex::new(JoinSet::new()));
    let accept = {
        let shared = Arc::clone(&shared);
        let connections = Arc::clone(&connections);
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            loop {
                let Ok((stream, remote)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let local = stream.local_addr().unwrap_or(addr);
                let shared = Arc::clone(&shared);
                let service = hyper::service::service_fn(move |req| {
                    handle(Arc::clone(&shared), req, remote, local)
                });
                let conn = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned();
                let mut set = connections.lock().unwrap_or_else(|e| e.into_inner());
                while set.try_join_next().is_some() {}
                set.spawn(async move {
                    let _ = conn.await;
                });
            }
        })
    };
    Ok(RunningSimulator {
        addr,
        shared,
        accept,
        connections,
    })
}

impl RunningSimulator {
    /// Where clients connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The counters and violations so far.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Sets the faults for requests that start from now on.
    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
    }

    /// Recycles the extension as IIS recycles an application: new requests
    /// wait, in-flight ones get the shutdown time limit, `TerminateExtension`
    /// is called, the DLL is unloaded and loaded again, and the waiting
    /// requests go to the new instance.
    pub async fn recycle(&self) -> Result<(), SimError> {
        let mut slot = self.shared.instance.write().await;
        if let Some(old) = slot.take() {
            self.shared.unload(old).await;
        }
        *slot = Some(self.shared.load().await?);
        Ok(())
    }

    /// Stops: closes the listener and every connection, drains and
    /// terminates the extension, unloads it, and returns the final stats.
    pub async fn shutdown(self) -> Stats {
        self.accept.abort();
        let _ = self.accept.await;
        let mut set =
            std::mem::take(&mut *self.connections.lock().unwrap_or_else(|e| e.into_inner()));
        set.abort_all();
        while set.join_next().await.is_some() {}
        let old = self.shared.instance.write().await.take();
        if let Some(old) = old {
            self.shared.unload(old).await;
        }
        if let Some(set) = DLLS_IN_USE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            set.remove(&self.shared.config.dll);
        }
        self.shared.stats()
    }
}

/// Builds a workspace `cdylib` package with cargo (the same profile as the
/// calling binary) and returns the library's path. Tests use it so that the
/// DLL they load is always the current one.
pub fn build_cdylib(package: &str) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "--quiet", "--message-format=json", "-p", package]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run cargo to build {package}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build -p {package} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let suffix = std::env::consts::DLL_SUFFIX;
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines() {
        if !line.contains("\"compiler-artifact\"") || !line.contains("cdylib") {
            continue;
        }
        // The artifact's paths are JSON strings ending in the DLL suffix.
        for piece in line.split('"') {
            if piece.ends_with(suffix) && piece.contains(&package.replace('-', "_")) {
                return Ok(PathBuf::from(piece));
            }
        }
    }
    Err(format!(
        "cargo built {package} but reported no {suffix} file"
    ))
}

pub mod proxy;

#[cfg(test)]
mod tests {
    use super::*;

    /// A simulator with no extension loaded, and one request registered.
    type MakeNative = Box<dyn FnOnce(usize) -> native::Native>;
    const RQ_FINISH: i32 = host_iis_native::ffi::RQ_NOTIFICATION_FINISH_REQUEST;
    const RQ_PENDING: i32 = host_iis_native::ffi::RQ_NOTIFICATION_PENDING;

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
            host_isapi::ffi::ERROR_INVALID_INDEX
        );
        assert_eq!(
            req.server_variable("HTTP_X_MISSING").unwrap_err(),
            host_isapi::ffi::ERROR_INVALID_INDEX
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
        assert_eq!(text(&info, "URL"), "/portal/a%20b");
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
