//! The simulator's settings ([`Config`], [`Faults`]), what it counted
//! ([`Stats`]) and how starting it fails ([`SimError`]).

use super::*;

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
    /// Server variables this host does not report (`GetServerVariable`
    /// fails with `ERROR_INVALID_INDEX`), as hosts other than IIS may not:
    /// `LOCAL_ADDR`, `HTTP_URL`, `UNICODE_REMOTE_USER`… (upper case; a
    /// `UNICODE_` name removes only that form).
    pub absent_variables: Vec<String>,
    /// Whether `HTTP_<NAME>` comes from the request header `<NAME>` for
    /// every name, even where the server has a variable of its own
    /// (`HTTP_URL` from a client's `URL:` header), as some non-IIS hosts do.
    pub header_derived_variables: bool,
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
            absent_variables: Vec::new(),
            header_derived_variables: false,
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
