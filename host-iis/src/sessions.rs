//! Requests the server still counts as open.
//!
//! The engine's task for a request can finish before the server hears the
//! request's end: a binding that ends a session while an asynchronous
//! operation is outstanding cancels the operation and ends the session
//! from its completion, which the server delivers later, into the DLL's
//! code. Termination must wait for those completions too, or the server
//! could unload the code they run in. Each binding holds a
//! [`SessionGuard`] per request until the server has been told the request
//! ended.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The open sessions of one started app.
#[derive(Default)]
pub(crate) struct Sessions {
    open: Mutex<usize>,
    closed: Condvar,
}

/// One open session; dropping it (once the server has been told the
/// request ended) closes it.
pub struct SessionGuard(Arc<Sessions>);

impl std::fmt::Debug for SessionGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionGuard")
    }
}

impl Sessions {
    pub(crate) fn open(self: &Arc<Self>) -> SessionGuard {
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        SessionGuard(Arc::clone(self))
    }

    /// Sessions open now.
    pub(crate) fn count(&self) -> usize {
        *self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks until no session is open or `limit` has passed; the number
    /// still open.
    pub(crate) fn wait_closed(&self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        while *open > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            open = self
                .closed
                .wait_timeout(open, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *open
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut open = self.0.open.lock().unwrap_or_else(|e| e.into_inner());
        *open = open.saturating_sub(1);
        if *open == 0 {
            self.0.closed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_ends_when_the_last_session_closes_or_the_limit_passes() {
        let sessions = Arc::new(Sessions::default());
        assert_eq!(sessions.wait_closed(Duration::from_secs(5)), 0);
        let (a, b) = (sessions.open(), sessions.open());
        assert_eq!(sessions.count(), 2);
        drop(a);
        let started = Instant::now();
        assert_eq!(sessions.wait_closed(Duration::from_millis(50)), 1);
        assert!(started.elapsed() >= Duration::from_millis(50));
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(b);
        });
        assert_eq!(sessions.wait_closed(Duration::from_secs(10)), 0);
        closer.join().unwrap();
    }
}
