//! The trace channel: the equivalent of `win32traceutil` for apps on the
//! Kallithea host framework.
//!
//! Every worker process (an IIS worker with the ISAPI extension or native
//! module loaded, a host-hyper server) adds [`layer`], filtered by
//! [`filter`], to its tracing subscriber and calls [`install_panic_hook`]. Listeners (`kallithea
//! trace`, or [`Listener`]) each bind a datagram socket in the trace folder
//! ([`dir`]); workers send every event, one datagram per event, to every
//! socket there.
//!
//! - No listener: with [`filter`], nothing — tracing's per-call-site
//!   cache leaves INFO events and spans disabled (unless another layer wants
//!   them; the layer itself then costs one atomic load per event). A
//!   background thread looks for listeners every [`SCAN_INTERVAL`] and has
//!   the cache rebuilt when the first arrives or the last leaves.
//! - Never blocks: sends are non-blocking; when a listener falls behind,
//!   its events are dropped (and counted), never queued in the worker.
//! - Panics: the hook sends the message, the location and a backtrace
//!   (captured whatever `RUST_BACKTRACE` says), then runs the previous hook.
//!
//! The folder is `KALLITHEA_TRACE_DIR`, or `kallithea-trace` in the
//! temporary folder, created private to its owner (mode 0700). For a
//! listener running under another account than the workers (an
//! administrator watching an application pool's identity), point both at a
//! folder they share through a group.
//!
//! Transport: on Unix, datagram sockets (`*.sock`) in the folder, whose
//! file permissions say who may send; on Windows, loopback UDP: each
//! listener binds `127.0.0.1:0` and writes its port into a `*.port` file in
//! the folder (whose permissions say who may register). Both are datagrams:
//! one event is one message, never split, never blocking the sender.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, RwLock};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// How often workers look for listeners.
pub const SCAN_INTERVAL: Duration = Duration::from_millis(250);

/// The largest event sent (longer ones are cut, marked `…[cut]`).
pub const MAX_EVENT_BYTES: usize = 60 * 1024;

/// The environment variable naming the trace folder.
pub const DIR_ENV: &str = "KALLITHEA_TRACE_DIR";

/// The trace folder: `KALLITHEA_TRACE_DIR`, or `kallithea-trace` in the
/// temporary folder.
pub fn dir() -> PathBuf {
    match std::env::var_os(DIR_ENV).filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir().join("kallithea-trace"),
    }
}

static ACTIVE: AtomicBool = AtomicBool::new(false);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static LISTENERS: RwLock<Vec<PathBuf>> = RwLock::new(Vec::new());
/// The watcher thread and its stop flag, while it runs.
static WATCHER: Mutex<Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>> = Mutex::new(None);

/// Events dropped because a listener fell behind or went away.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Whether a listener is attached (as of the last scan).
pub fn listening() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// Starts the thread that looks for listeners, unless it runs.
fn watch() {
    let mut w = WATCHER.lock().unwrap_or_else(|e| e.into_inner());
    if w.is_some() {
        return;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let spawned = std::thread::Builder::new()
        .name("kallithea-trace-watch".into())
        .spawn(move || {
            while !flag.load(Ordering::Acquire) {
                scan();
                std::thread::park_timeout(SCAN_INTERVAL);
            }
        });
    match spawned {
        Ok(handle) => *w = Some((stop, handle)),
        Err(e) => eprintln!("kallithea-trace: cannot start the listener watch: {e}"),
    }
}

/// (Re)starts the listener watch: after [`stop_watching`], when a DLL
/// starts again.
pub fn start_watching() {
    watch();
}

/// Stops the listener watch and joins its thread: a DLL calls it before it
/// is unloaded (no thread may outlive the code it runs). Events are not
/// sent until [`layer`] (or [`install_panic_hook`]) starts the watch again.
pub fn stop_watching() {
    let taken = WATCHER.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some((stop, handle)) = taken {
        stop.store(true, Ordering::Release);
        handle.thread().unpark();
        let _ = handle.join();
    }
    LISTENERS.write().unwrap_or_else(|e| e.into_inner()).clear();
    set_active(false);
}

/// Looks for listener sockets now.
fn scan() {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir()) {
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == imp::LISTENER_EXTENSION) {
                found.push(p);
            }
        }
    }
    found.sort();
    let active = !found.is_empty();
    *LISTENERS.write().unwrap_or_else(|e| e.into_inner()) = found;
    set_active(active);
}

/// Records whether anyone listens; on a change, tracing's per-call-site
/// interest cache is rebuilt, so that [`filter`] is asked again.
fn set_active(active: bool) {
    if ACTIVE.swap(active, Ordering::AcqRel) != active {
        tracing::callsite::rebuild_interest_cache();
    }
}

/// What [`layer`] should see: events at INFO and above, while a listener
/// is there. Tracing caches this per call site, and the cache is rebuilt
/// when the first listener arrives or the last one leaves: without a
/// listener (and with the other layers quieter than INFO) a request costs
/// no span and no event at all, not even a check. Spans are never asked
/// for (the channel sends events only).
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt;
/// use tracing_subscriber::Layer;
/// let subscriber = tracing_subscriber::registry()
///     .with(kallithea_trace::layer().with_filter(kallithea_trace::filter()));
/// # drop(subscriber);
/// ```
pub fn filter<S: Subscriber>() -> impl tracing_subscriber::layer::Filter<S> + Send + Sync + 'static
{
    fn wanted(meta: &tracing::Metadata<'_>) -> bool {
        !meta.is_span() && *meta.level() <= tracing::Level::INFO && listening()
    }
    tracing_subscriber::filter::dynamic_filter_fn(|meta, _| wanted(meta)).with_callsite_filter(
        |meta| {
            if wanted(meta) {
                tracing::subscriber::Interest::always()
            } else {
                tracing::subscriber::Interest::never()
            }
        },
    )
}

/// The tracing layer that sends every event to the listeners (pair it with
/// [`filter`]).
pub fn layer<S: Subscriber>() -> impl Layer<S> + Send + Sync + 'static {
    watch();
    TraceLayer
}

struct TraceLayer;

impl<S: Subscriber> Layer<S> for TraceLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if !ACTIVE.load(Ordering::Relaxed) {
            return;
        }
        let meta = event.metadata();
        let mut line = header(meta.level().as_str(), meta.target());
        let mut v = Fields {
            message: String::new(),
            rest: String::new(),
        };
        event.record(&mut v);
        line.push_str(&v.message);
        line.push_str(&v.rest);
        send(&line);
    }
}

/// `time pid process LEVEL target: `
fn header(level: &str, target: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut s = String::with_capacity(256);
    let _ = write!(
        s,
        "{}.{:03} {} {} {level} {target}: ",
        now.as_secs(),
        now.subsec_millis(),
        std::process::id(),
        process_name()
    );
    s
}

fn process_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "?".into())
    })
}

struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else if value.contains('\n') {
            let _ = write!(self.rest, "\n  {}:\n{}", field.name(), value);
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let text = format!("{value:?}");
            if text.contains('\n') {
                let _ = write!(self.rest, "\n  {}:\n{}", field.name(), text);
            } else {
                let _ = write!(self.rest, " {}={text}", field.name());
            }
        }
    }
}

/// Sends one event to every listener, without blocking.
fn send(line: &str) {
    imp::send(line);
}

/// Reports panics (message, location, backtrace) to the listeners and as a
/// `kallithea::panic` tracing event, then runs the previous hook. Installed
/// once per process (per DLL: each Rust DLL has its own hook).
pub fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        watch();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if ACTIVE.load(Ordering::Relaxed) {
                let message = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic with a non-string payload".into());
                let location = info
                    .location()
                    .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                    .unwrap_or_default();
                let thread = std::thread::current();
                let backtrace = std::backtrace::Backtrace::force_capture();
                let mut line = header("ERROR", "kallithea::panic");
                let _ = write!(
                    line,
                    "thread '{}' panicked at {location}: {message}\n  backtrace:\n{backtrace}",
                    thread.name().unwrap_or("<unnamed>")
                );
                send(&line);
            }
            previous(info);
        }));
    });
}

#[cfg(unix)]
mod imp {
    use std::io::ErrorKind;
    use std::os::unix::net::UnixDatagram;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::Ordering;
    use std::sync::OnceLock;

    use super::{DROPPED, LISTENERS};

    pub(super) const LISTENER_EXTENSION: &str = "sock";

    fn socket() -> Option<&'static UnixDatagram> {
        static SOCKET: OnceLock<Option<UnixDatagram>> = OnceLock::new();
        SOCKET
            .get_or_init(|| {
                let s = UnixDatagram::unbound().ok()?;
                s.set_nonblocking(true).ok()?;
                Some(s)
            })
            .as_ref()
    }

    pub(super) fn send(line: &str) {
        let Some(socket) = socket() else {
            return;
        };
        let cut = super::cut(line);
        let bytes = cut.as_bytes();
        let listeners = LISTENERS.read().unwrap_or_else(|e| e.into_inner()).clone();
        for l in &listeners {
            match socket.send_to(bytes, l) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    DROPPED.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    // Gone (a stale socket file): until the next scan.
                    DROPPED.fetch_add(1, Ordering::Relaxed);
                    forget(l);
                }
            }
        }
    }

    fn forget(listener: &Path) {
        let mut l = LISTENERS.write().unwrap_or_else(|e| e.into_inner());
        l.retain(|p| p != listener);
        // The watch's next scan settles `ACTIVE` (and tracing's interest
        // cache, which must not be rebuilt from inside an event).
    }

    /// A bound listener socket.
    pub(super) struct Bound {
        pub socket: UnixDatagram,
        pub path: PathBuf,
    }

    pub(super) fn bind(dir: &Path) -> std::io::Result<Bound> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        // Sockets of listeners that died without cleaning up.
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "sock")
                    && UnixDatagram::unbound().and_then(|s| s.connect(&p)).is_err()
                {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
        let mut n = 0;
        loop {
            let path = dir.join(format!("listener-{}-{n}.sock", std::process::id()));
            match UnixDatagram::bind(&path) {
                Ok(socket) => {
                    // Workers of the same group may send.
                    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o770));
                    return Ok(Bound { socket, path });
                }
                Err(e) if e.kind() == ErrorKind::AddrInUse && n < 100 => n += 1,
                Err(e) => return Err(e),
            }
        }
    }
}

/// `line`, cut to [`MAX_EVENT_BYTES`] at a character boundary.
fn cut(line: &str) -> std::borrow::Cow<'_, str> {
    if line.len() <= MAX_EVENT_BYTES {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut end = MAX_EVENT_BYTES - 8;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}…[cut]", &line[..end]))
}

#[cfg(not(unix))]
mod imp {
    use std::io::ErrorKind;
    use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
    use std::path::{Path, PathBuf};
    use std::sync::atomic::Ordering;
    use std::sync::OnceLock;

    use super::{DROPPED, LISTENERS};

    pub(super) const LISTENER_EXTENSION: &str = "port";

    fn socket() -> Option<&'static UdpSocket> {
        static SOCKET: OnceLock<Option<UdpSocket>> = OnceLock::new();
        SOCKET
            .get_or_init(|| {
                let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).ok()?;
                s.set_nonblocking(true).ok()?;
                Some(s)
            })
            .as_ref()
    }

    /// The port a listener's file names (read at each send: files are tiny
    /// and sends happen only while someone listens).
    fn port_of(file: &Path) -> Option<u16> {
        std::fs::read_to_string(file).ok()?.trim().parse().ok()
    }

    pub(super) fn send(line: &str) {
        let Some(socket) = socket() else {
            return;
        };
        let cut = super::cut(line);
        let listeners = LISTENERS.read().unwrap_or_else(|e| e.into_inner()).clone();
        for l in &listeners {
            let Some(port) = port_of(l) else {
                continue;
            };
            let to = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            if socket.send_to(cut.as_bytes(), to).is_err() {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A bound listener socket and its port file.
    pub(super) struct Bound {
        pub socket: UdpSocket,
        pub path: PathBuf,
    }

    pub(super) fn bind(dir: &Path) -> std::io::Result<Bound> {
        std::fs::create_dir_all(dir)?;
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = socket.local_addr()?.port();
        let mut n = 0;
        loop {
            let path = dir.join(format!("listener-{}-{n}.port", std::process::id()));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    std::io::Write::write_all(&mut f, port.to_string().as_bytes())?;
                    return Ok(Bound { socket, path });
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists && n < 100 => n += 1,
                Err(e) => return Err(e),
            }
        }
    }
}

/// A listener: receives every worker's events until dropped (which removes
/// its socket).
pub struct Listener {
    bound: imp::Bound,
}

impl Listener {
    /// Binds a listener socket in `dir` (created, private, if missing).
    pub fn bind(dir: &std::path::Path) -> std::io::Result<Listener> {
        Ok(Listener {
            bound: imp::bind(dir)?,
        })
    }

    /// The listener's socket file.
    pub fn path(&self) -> &std::path::Path {
        &self.bound.path
    }

    /// The next event, waiting at most `timeout` (`None` on timeout or when
    /// a signal interrupted the wait).
    pub fn recv(&self, timeout: Duration) -> std::io::Result<Option<String>> {
        let s = &self.bound.socket;
        s.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        let mut buf = vec![0u8; MAX_EVENT_BYTES + 64];
        match s.recv(&mut buf) {
            Ok(n) => Ok(Some(String::from_utf8_lossy(&buf[..n]).into_owned())),
            Err(e) if nothing_received(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A receive that ended without an event: a timeout or an interrupted wait,
/// and on Windows (UDP) a send to a closed port elsewhere, reported on this socket.
fn nothing_received(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    ) || (cfg!(not(unix)) && e.kind() == ErrorKind::ConnectionReset)
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.bound.path);
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn events_and_panics_reach_a_listener_and_nothing_is_sent_without_one() {
        let dir = std::env::temp_dir().join(format!("kallithea-trace-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::env::set_var(DIR_ENV, &dir);
        let subscriber = tracing_subscriber::registry()
            .with(layer().with_filter(filter()))
            .with(
                tracing_subscriber::fmt::layer()
                    .with_filter(tracing::level_filters::LevelFilter::WARN),
            );
        let _guard = tracing::subscriber::set_default(subscriber);
        install_panic_hook();

        scan();
        assert!(!listening(), "no listener yet");
        assert!(
            !tracing::enabled!(tracing::Level::INFO),
            "without a listener the layer asks for nothing"
        );
        assert!(tracing::info_span!("request").is_disabled());
        tracing::info!(target: "t", "unheard");
        assert_eq!(dropped(), 0, "nothing is even tried without a listener");

        let listener = Listener::bind(&dir).unwrap();
        scan();
        assert!(listening());
        assert!(tracing::enabled!(tracing::Level::INFO));
        assert!(!tracing::enabled!(tracing::Level::DEBUG));
        assert!(
            tracing::info_span!("request").is_disabled(),
            "spans are never recorded for the trace channel"
        );
        tracing::info!(target: "kallithea::test", answer = 42, "hello {}", "trace");
        let got = listener.recv(Duration::from_secs(2)).unwrap().unwrap();
        assert!(
            got.contains("INFO kallithea::test: hello trace answer=42"),
            "{got}"
        );
        assert!(got.contains(&std::process::id().to_string()), "{got}");

        let r = std::panic::catch_unwind(|| panic!("on purpose"));
        assert!(r.is_err());
        let got = listener.recv(Duration::from_secs(2)).unwrap().unwrap();
        assert!(
            got.contains("panicked at") && got.contains("on purpose"),
            "{got}"
        );
        assert!(got.contains("backtrace:"), "{got}");
        assert!(
            got.contains("events_and_panics_reach_a_listener"),
            "the backtrace names this test: {got}"
        );

        // A listener that stops reading loses events; the worker never waits.
        let start = std::time::Instant::now();
        for i in 0..20_000 {
            tracing::info!(target: "flood", i, "{}", "x".repeat(200));
        }
        assert!(start.elapsed() < Duration::from_secs(10));
        assert!(dropped() > 0, "a full listener drops events");

        // The watch stops (for a DLL about to be unloaded) and restarts.
        stop_watching();
        assert!(!listening());
        let _again = layer::<tracing_subscriber::Registry>();
        for _ in 0..100 {
            if listening() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(listening(), "the watch found the listener again");

        let path = listener.path().to_path_buf();
        drop(listener);
        assert!(!path.exists(), "the socket goes with the listener");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
