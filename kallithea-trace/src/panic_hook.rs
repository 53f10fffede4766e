//! The panic hook: message, location and backtrace to every listener, then
//! the previous hook.

use super::*;

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
