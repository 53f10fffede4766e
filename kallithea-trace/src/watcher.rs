//! Whether anyone listens: the listener scan every [`SCAN_INTERVAL`](crate::SCAN_INTERVAL)
//! on a background thread, and tracing's interest cache rebuilt when the
//! first listener arrives or the last leaves.

use super::*;

pub(crate) static ACTIVE: AtomicBool = AtomicBool::new(false);
pub(crate) static DROPPED: AtomicU64 = AtomicU64::new(0);
pub(crate) static LISTENERS: RwLock<Vec<PathBuf>> = RwLock::new(Vec::new());
/// The watcher thread and its stop flag, while it runs.
pub(crate) static WATCHER: Mutex<Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>> =
    Mutex::new(None);

/// Events dropped because a listener fell behind or went away.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Whether a listener is attached (as of the last scan).
pub fn listening() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// Starts the thread that looks for listeners, unless it runs.
pub(crate) fn watch() {
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
pub(crate) fn scan() {
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
pub(crate) fn set_active(active: bool) {
    if ACTIVE.swap(active, Ordering::AcqRel) != active {
        tracing::callsite::rebuild_interest_cache();
    }
}
