//! The life of an app inside an IIS worker process, whichever binding loaded
//! it: start-up (configuration, log, runtime, the app), start-up failures
//! with retries, and termination with a drain.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use http::Response;
use kallithea_core::{Body, BoxError, Dispatcher};
use serde::de::DeserializeOwned;

use crate::config::{self, IisConfig};
use crate::runtime::HostRuntime;
use crate::startup::StartupFailure;

/// Builds the app when the DLL starts (and again after a failed start,
/// on the back-off schedule). Returning an error, or panicking, leaves the
/// DLL answering every request with a page naming the failure.
pub type MakeApp = fn(&Startup<'_>) -> Result<Dispatcher, BoxError>;

/// What `make_app` gets: the configuration beside the DLL and where it lives.
pub struct Startup<'a> {
    config: &'a IisConfig,
    config_path: &'a Path,
    module_path: &'a Path,
    runtime: &'a tokio::runtime::Handle,
}

impl Startup<'_> {
    /// The whole configuration file.
    pub fn config(&self) -> &IisConfig {
        self.config
    }

    /// The configuration file's path.
    pub fn config_path(&self) -> &Path {
        self.config_path
    }

    /// The DLL's path (the extension or module).
    pub fn module_path(&self) -> &Path {
        self.module_path
    }

    /// The configuration's `[app]` section as the app's own settings type;
    /// errors name the file and the key.
    pub fn app_config<T: DeserializeOwned>(&self) -> Result<T, BoxError> {
        let value = toml::Value::Table(self.config.app.clone());
        T::deserialize(value)
            .map_err(|e| format!("{}: [app]: {e}", self.config_path.display()).into())
    }

    /// `path` resolved against the configuration file's folder (an IIS worker
    /// process runs in the system folder, so relative paths mean nothing
    /// there).
    pub fn resolve(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        match self.config_path.parent() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        }
    }

    /// The engine's runtime, for asynchronous set-up
    /// (`startup.runtime().block_on(…)`).
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        self.runtime
    }
}

enum AppState {
    Ready(Arc<Dispatcher>),
    Failed(StartupFailure),
    Retrying(StartupFailure),
}

/// A started app in an extension or module: its runtime and its app (or the start-up
/// failure standing in for it). Requests go to it through
/// [`request::start`](crate::request::start).
pub struct Running {
    pub(crate) runtime: HostRuntime,
    make_app: MakeApp,
    module: PathBuf,
    drain: Duration,
    log: PathBuf,
    app: RwLock<AppState>,
    sessions: Arc<crate::sessions::Sessions>,
    /// The configured mount point, for a server without `APPL_MD_PATH`.
    pub(crate) path_base: Option<kallithea_core::PathBase>,
}

/// The app's life in the worker process, as a `static` in the DLL (each
/// binding's `export!` macro creates it): started by the binding's load
/// entry point (`GetExtensionVersion`, `RegisterModule`), asked for the
/// running state by each request, terminated by the unload entry point
/// (`TerminateExtension`, the module's `Terminate`). It survives a
/// termination followed by a new start in the same process.
pub struct Lifecycle {
    make_app: MakeApp,
    description: &'static str,
    state: RwLock<Option<Arc<Running>>>,
}

/// The tracing filter of the log file beside the DLL unless configured.
pub const DEFAULT_LOG_FILTER: &str = "info,kallithea::access=warn";

static LOG_FILE: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Writes tracing events to the log file beside the DLL.
struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let path = LOG_FILE.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(path) = path {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?
                .write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn install_log(path: &Path, filter: &str) {
    *LOG_FILE.lock().unwrap_or_else(|e| e.into_inner()) = Some(path.to_path_buf());
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    // Fails when the process (or an earlier load of this DLL) already has a
    // subscriber: events then go there, and failures are still appended to
    // the file below.
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let file = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(|| LogWriter)
        .with_filter(filter);
    // Listeners (`kallithea trace`) see every event at INFO and above, and
    // panics with their backtraces.
    let trace = kallithea_trace::layer().with_filter(kallithea_trace::filter());
    let _ = tracing_subscriber::registry()
        .with(file)
        .with(trace)
        .try_init();
    kallithea_trace::install_panic_hook();
}

/// Appends one line to the log file directly, whatever tracing does.
fn append_log(path: &Path, line: &str) {
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| writeln!(f, "{line}"));
    if let Err(e) = written {
        tracing::error!(log = %path.display(), error = %e, "cannot write the log file");
    }
}

fn now_stamp() -> String {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("[unix {}.{:03}]", since.as_secs(), since.subsec_millis())
}

impl Lifecycle {
    /// An app built with `make_app`; `description` is what the binding reports
    /// (`GetExtensionVersion`'s description).
    pub const fn new(make_app: MakeApp, description: &'static str) -> Self {
        Lifecycle {
            make_app,
            description,
            state: RwLock::new(None),
        }
    }

    /// What the binding reports to IIS about itself.
    pub fn description(&self) -> &'static str {
        self.description
    }

    /// The started state, unless not started or terminated.
    pub fn running(&self) -> Option<Arc<Running>> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Starts: configuration, log, runtime, the app. Returns
    /// `false` only if not even the runtime starts; a failing configuration
    /// or app leaves the DLL serving error pages and retrying.
    ///
    /// `module` is the DLL's path (the configuration is found beside it). A
    /// second call while started does nothing.
    pub fn start(&self, module: Option<PathBuf>) -> bool {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if state.is_some() {
            return true;
        }
        let module = module.unwrap_or_else(|| PathBuf::from(self.description));
        let loaded = config::load(&module);
        let path_base = loaded
            .as_ref()
            .ok()
            .and_then(|(_, cfg)| cfg.path_base.as_deref())
            .and_then(|b| kallithea_core::PathBase::new(b).ok());
        let (log, filter, workers, drain, inline) = match &loaded {
            Ok((_, cfg)) => (
                cfg.log_file
                    .clone()
                    .unwrap_or_else(|| config::default_log_path(&module)),
                cfg.log_filter.clone(),
                cfg.worker_threads,
                cfg.drain_timeout,
                cfg.first_step_on_iis_thread,
            ),
            // Requests only get the failure page until the configuration
            // loads: nothing of the app runs on IIS threads meanwhile.
            Err(_) => (
                config::default_log_path(&module),
                DEFAULT_LOG_FILTER.to_owned(),
                2,
                Duration::from_secs(30),
                false,
            ),
        };
        if filter != "off" {
            install_log(&log, &filter);
        }
        // Panics reach `kallithea trace` listeners whatever the log filter;
        // the watch restarts after a termination.
        kallithea_trace::install_panic_hook();
        kallithea_trace::start_watching();
        let runtime = HostRuntime::start(workers).map(|rt| rt.first_step_on_caller(inline));
        let runtime = match runtime {
            Ok(rt) => rt,
            Err(e) => {
                append_log(
                    &log,
                    &format!("{} cannot start the runtime: {e}", now_stamp()),
                );
                return false;
            }
        };
        let running = Arc::new(Running {
            runtime,
            make_app: self.make_app,
            module,
            drain,
            log,
            app: RwLock::new(AppState::Failed(StartupFailure::new(
                "starting",
                Instant::now(),
            ))),
            sessions: Arc::default(),
            path_base,
        });
        let first = running.build_app(loaded);
        running.settle(first);
        *state = Some(running);
        true
    }

    /// Drains and stops: new requests are refused at once, running ones get
    /// the configured drain time, then are cancelled; every one of them
    /// completes with IIS before this returns.
    pub fn terminate(&self) {
        let running = self.state.write().unwrap_or_else(|e| e.into_inner()).take();
        let Some(running) = running else { return };
        let report = running.runtime.terminate(running.drain);
        // A cancelled request may still wait for the server's completion
        // of the operation it had outstanding: that completion runs this
        // DLL's code, so the server must not unload it before.
        let open = running.sessions.wait_closed(SESSION_END_LIMIT);
        if open > 0 {
            tracing::error!(
                open,
                "sessions still open after termination: the server has not completed their \
                 cancelled operations"
            );
        }
        tracing::info!(
            in_flight = report.in_flight,
            cancelled = report.cancelled,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "terminated"
        );
        // The last reference: dropping it stops the runtime's threads before
        // IIS unloads the code they run. Requests hold the runtime only
        // through tasks, all finished above.
        match Arc::try_unwrap(running) {
            Ok(running) => drop(running),
            Err(still) => {
                tracing::error!(
                    "the engine is still referenced after termination; its runtime stops when \
                     the last request lets go"
                );
                drop(still);
            }
        }
        // No thread of this DLL may outlive TerminateExtension: IIS may
        // unload the code next. (The next start restarts the watch.)
        kallithea_trace::stop_watching();
    }
}

/// How long termination waits for the server to complete the operations
/// of cancelled requests.
const SESSION_END_LIMIT: Duration = Duration::from_secs(10);

impl Running {
    /// Opens a session for a request the server handed over; the binding
    /// drops the guard once it has told the server the request ended.
    /// Termination waits for every guard.
    pub fn open_session(&self) -> crate::SessionGuard {
        self.sessions.open()
    }

    /// Sessions open now (requests the server has not been told ended).
    pub fn open_sessions(&self) -> usize {
        self.sessions.count()
    }

    /// Loads the configuration (or uses `loaded`) and builds the app.
    fn build_app(
        &self,
        loaded: Result<(PathBuf, IisConfig), kallithea_core::config::ConfigError>,
    ) -> Result<Dispatcher, String> {
        let (path, cfg) = loaded.map_err(|e| format!("configuration: {e}"))?;
        let startup = Startup {
            config: &cfg,
            config_path: &path,
            module_path: &self.module,
            runtime: self.runtime.handle(),
        };
        let _enter = self.runtime.handle().enter();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.make_app)(&startup))) {
            Ok(Ok(d)) => Ok(d),
            Ok(Err(e)) => Err(format!("the application failed to start: {e}")),
            Err(p) => Err(format!(
                "the application panicked while starting: {}",
                kallithea_core::panic_message(p.as_ref())
            )),
        }
    }

    /// Records the outcome of a start-up attempt.
    fn settle(&self, outcome: Result<Dispatcher, String>) {
        let mut app = self.app.write().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let previous = match &*app {
            AppState::Failed(f) | AppState::Retrying(f) if f.error != "starting" => Some(f.clone()),
            _ => None,
        };
        *app = match outcome {
            Ok(d) => {
                tracing::info!(target: "kallithea::startup", module = %self.module.display(), "application started");
                if previous.is_some() {
                    append_log(&self.log, &format!("{} application started", now_stamp()));
                }
                AppState::Ready(Arc::new(d))
            }
            Err(error) => {
                let failure = match previous {
                    Some(mut f) => {
                        f.failed_again(error, now);
                        f
                    }
                    None => StartupFailure::new(error, now),
                };
                tracing::error!(
                    target: "kallithea::startup",
                    error = %failure.error,
                    attempt = failure.failures,
                    retry_in_s = failure.retry_in(now).as_secs(),
                    "start-up failed"
                );
                append_log(
                    &self.log,
                    &format!(
                        "{} start-up failed (attempt {}, next in {} s): {}",
                        now_stamp(),
                        failure.failures,
                        failure.retry_in(now).as_secs(),
                        failure.error
                    ),
                );
                AppState::Failed(failure)
            }
        };
    }

    /// The app, or the failure page this request gets instead. A request
    /// arriving when a retry is due runs the retry (off the runtime's worker
    /// threads) and waits for it.
    pub(crate) async fn app(
        self: &Arc<Self>,
        client_is_local: bool,
    ) -> Result<Arc<Dispatcher>, Response<Body>> {
        let now = Instant::now();
        {
            let mut app = self.app.write().unwrap_or_else(|e| e.into_inner());
            match &*app {
                AppState::Ready(d) => return Ok(Arc::clone(d)),
                AppState::Retrying(f) => return Err(f.response(client_is_local, now)),
                AppState::Failed(f) if !f.retry_due(now) => {
                    return Err(f.response(client_is_local, now))
                }
                AppState::Failed(f) => *app = AppState::Retrying(f.clone()),
            }
        }
        let this = Arc::clone(self);
        let attempt = tokio::task::spawn_blocking(move || {
            let loaded = config::load(&this.module);
            let outcome = this.build_app(loaded);
            this.settle(outcome);
        })
        .await;
        if attempt.is_err() {
            self.settle(Err("the start-up attempt was cancelled".into()));
        }
        let app = self.app.read().unwrap_or_else(|e| e.into_inner());
        match &*app {
            AppState::Ready(d) => Ok(Arc::clone(d)),
            AppState::Failed(f) | AppState::Retrying(f) => {
                Err(f.response(client_is_local, Instant::now()))
            }
        }
    }

    /// Fast path for the common case: the app, when it is running.
    pub(crate) fn ready(&self) -> Option<Arc<Dispatcher>> {
        match &*self.app.read().unwrap_or_else(|e| e.into_inner()) {
            AppState::Ready(d) => Some(Arc::clone(d)),
            _ => None,
        }
    }
}
