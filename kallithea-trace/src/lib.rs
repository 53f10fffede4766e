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

mod layer;
mod panic_hook;
mod transport;
mod watcher;

pub use layer::{filter, layer};
pub use panic_hook::install_panic_hook;
pub use transport::Listener;
pub use watcher::{dropped, listening, start_watching, stop_watching};

#[allow(unused_imports)]
use {layer::*, transport::*, watcher::*};

#[allow(unused_imports)]
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
