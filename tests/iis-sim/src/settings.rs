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
    /// How far this host departs from IIS where the documentation leaves
    /// room ([`Variation`]; none by default). [`Profile`]s set it.
    pub variation: Variation,
    /// How long a client may take to send a request's headers before the
    /// connection is closed (http.sys's `HeaderWaitTimeout`, 2 minutes by
    /// default); `None` waits forever.
    pub header_read_timeout: Option<Duration>,
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
            variation: Variation::default(),
            header_read_timeout: Some(Duration::from_secs(120)),
        }
    }

    /// These settings with `profile` applied on top.
    pub fn with_profile(mut self, profile: Profile) -> Self {
        profile.apply(&mut self);
        self
    }
}

/// Where an asynchronous operation's completion reaches the DLL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Completions {
    /// Always later, on one of the simulator's threads (the default).
    #[default]
    Elsewhere,
    /// Whenever the operation can finish at once, before the call that
    /// started it returns. ISAPI: the completion routine runs on the calling
    /// thread, inside `WriteClient`, `HSE_REQ_ASYNC_READ_CLIENT` or
    /// `HSE_REQ_CANCEL_IO`. Native module: the call returns with
    /// `pfCompletionExpected` FALSE and no `OnAsyncCompletion` follows.
    Inline,
    /// Each operation picks one of the two, from this seed.
    Mixed(u64),
}

/// Behaviours a host may show within what Microsoft documents for ISAPI
/// extensions and native modules, and that other ISAPI hosts do show. Each
/// switch defaults to what the simulator does as IIS.
#[derive(Clone, Debug, Default)]
pub struct Variation {
    /// Where completions are delivered.
    pub completions: Completions,
    /// `HSE_REQ_CANCEL_IO` (ISAPI) and `IHttpContext::CancelIo` (native)
    /// are not supported: FALSE with `ERROR_INVALID_PARAMETER`, or
    /// `E_NOTIMPL`; nothing is cancelled.
    pub no_cancel_io: bool,
    /// `HSE_REQ_CLOSE_CONNECTION` / `HSE_REQ_ABORTIVE_CLOSE` are not
    /// supported (FALSE, `ERROR_INVALID_PARAMETER`); the native module's
    /// `CloseConnection` does nothing.
    pub no_close_connection: bool,
    /// `HSE_REQ_IS_CONNECTED` / `IHttpConnection::IsConnected` say the
    /// client is connected until a write to it has failed, whatever the
    /// client did.
    pub connected_until_write_fails: bool,
    /// Reads return at most a third of the bytes asked for (at least one),
    /// as a host may: `ReadEntityBody` and ISAPI reads promise no minimum.
    pub short_reads: bool,
    /// Native module: `IHttpContext::GetUser` returns null for an anonymous
    /// request (IIS gives an anonymous user object; the documentation
    /// allows null).
    pub no_anonymous_user: bool,
}

/// Named sets of host behaviours the adapters must tolerate, each within
/// what the ISAPI and native-module documentation allows. The conformance
/// suite and the host tests run under every one of [`Profile::ALL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// IIS as Microsoft documents it: completions on IIS's threads, every
    /// server variable, 48 KiB read-ahead.
    Iis,
    /// Completions inline on the calling thread whenever an operation can
    /// finish at once. Microsoft's `HSE_REQ_IO_COMPLETION` documentation
    /// does not promise a thread, and the ASP.NET Core Module handles an
    /// asynchronous operation that finished synchronously; the native
    /// module's `ReadEntityBody`/`WriteEntityChunks`/`Flush` report one
    /// with `pfCompletionExpected` FALSE.
    Inline,
    /// A seeded random mix of inline and deferred completions, reads that
    /// return less than asked, and no read-ahead.
    Mixed(u64),
    /// A lean ISAPI host of the kind Apache's `mod_isapi` is: no
    /// `LOCAL_ADDR`, `HTTP_URL`, `APPL_MD_PATH`, `APPL_PHYSICAL_PATH`,
    /// `INSTANCE_ID` or `UNICODE_` variables (`URL` decoded, plus
    /// `QUERY_STRING`); `HTTP_<NAME>` taken from every request header;
    /// no `HSE_REQ_CANCEL_IO` or `HSE_REQ_CLOSE_CONNECTION`;
    /// `HSE_REQ_IS_CONNECTED` that only learns of a disconnect from a
    /// failed write; no read-ahead; short reads. For the native module: the
    /// same variables failing in `GetServerVariable`, no user object for
    /// anonymous requests, `CancelIo` unsupported.
    Lean,
    /// A large read-ahead (1 MiB; IIS's `uploadReadAheadSize` goes up to
    /// 2 GiB): most bodies arrive with the request.
    LargeReadAhead,
}

impl Profile {
    /// Every profile, the random one with a fixed seed.
    pub const ALL: [Profile; 5] = [
        Profile::Iis,
        Profile::Inline,
        Profile::Mixed(0x5eed_1115),
        Profile::Lean,
        Profile::LargeReadAhead,
    ];

    /// A short name for tables and logs.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Iis => "iis",
            Profile::Inline => "inline",
            Profile::Mixed(_) => "mixed",
            Profile::Lean => "lean",
            Profile::LargeReadAhead => "read-ahead-1m",
        }
    }

    /// The variables [`Profile::Lean`] leaves out.
    pub const LEAN_ABSENT: [&'static str; 9] = [
        "LOCAL_ADDR",
        "HTTP_URL",
        "APPL_MD_PATH",
        "APPL_PHYSICAL_PATH",
        "INSTANCE_ID",
        "UNICODE_URL",
        "UNICODE_REMOTE_USER",
        "UNICODE_LOGON_USER",
        "UNICODE_AUTH_USER",
    ];

    /// Sets `config` up as this profile says (over the defaults).
    pub fn apply(self, config: &mut Config) {
        match self {
            Profile::Iis => {}
            Profile::Inline => config.variation.completions = Completions::Inline,
            Profile::Mixed(seed) => {
                config.variation.completions = Completions::Mixed(seed);
                config.variation.short_reads = true;
                config.read_ahead = 0;
            }
            Profile::Lean => {
                config.absent_variables = Self::LEAN_ABSENT.iter().map(|s| s.to_string()).collect();
                config.header_derived_variables = true;
                config.read_ahead = 0;
                config.variation = Variation {
                    completions: Completions::Elsewhere,
                    no_cancel_io: true,
                    no_close_connection: true,
                    connected_until_write_fails: true,
                    short_reads: true,
                    no_anonymous_user: true,
                };
            }
            Profile::LargeReadAhead => config.read_ahead = 1024 * 1024,
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
    /// The host reports the end of the body once this many body bytes were
    /// delivered, whatever the request declared (a read completes with 0
    /// bytes), as a host that lost the rest of the body may.
    pub end_body_after: Option<u64>,
    /// Each request draws its own faults from this seed: a client that
    /// goes away while sending the body or reading the response, slow
    /// reads, an early end of the body — or none (about half of them).
    pub random: Option<u64>,
}

impl Faults {
    /// The faults for request number `seq`: these, or, with
    /// [`random`](Self::random), the ones drawn for it.
    pub(crate) fn for_request(&self, seq: usize) -> Faults {
        let Some(seed) = self.random else {
            return self.clone();
        };
        let draw = splitmix(seed ^ (seq as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let amount = (draw >> 8) % (96 * 1024);
        let mut faults = Faults::default();
        match draw % 8 {
            0 => faults.abort_body_after = Some(amount),
            1 => faults.fail_writes_after = Some(amount),
            2 => faults.slow_reads = Some(Duration::from_micros(200 + (draw >> 40) % 2000)),
            3 => faults.end_body_after = Some(amount),
            _ => {}
        }
        faults
    }
}

/// A step of SplitMix64: a well-spread 64-bit value from any input (the
/// simulator's seeded draws; tests draw their own mixes with it).
pub fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
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

impl Stats {
    /// What breaks the server's contract so far, in words: violations,
    /// sessions not ended, native module objects not disposed once per
    /// request. Empty for a clean run.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = self.violations.clone();
        if self.in_flight > 0 {
            problems.push(format!("{} sessions not ended", self.in_flight));
        }
        if self.native_module && self.disposed != self.requests {
            problems.push(format!(
                "{} module objects disposed for {} requests",
                self.disposed, self.requests
            ));
        }
        problems
    }
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
