//! The extension's own runtime: where requests run, so IIS threads never wait
//! on application work.
//!
//! `GetExtensionVersion` starts an [`HostRuntime`]; `HttpExtensionProc`
//! hands each request to [`HostRuntime::spawn`], which takes the
//! request's first step on the calling (IIS) thread and moves it to the
//! runtime at its first wait; `TerminateExtension` calls
//! [`HostRuntime::terminate`].
//!
//! That first step is what most requests consist of — map, route, answer
//! from memory, write a short response — and taking it where the request
//! arrived spares two thread hand-offs (to a runtime thread and back to
//! IIS), which cost more than the request itself. A request that waits
//! (a body still arriving, a database, a timer, a long response) continues
//! on the runtime, and the IIS thread returns at that point: it never waits
//! on application I/O. An app that computes for long without awaiting
//! holds an IIS thread for that time, as it would hold a runtime thread;
//! such an app turns this off (`first_step_on_iis_thread = false`).
//! Every spawned request's completion
//! callback runs exactly once — when it finishes, panics, or is cancelled
//! (client gone, or still running when the drain deadline passes) — which is
//! where the host reports `HSE_REQ_DONE_WITH_SESSION`.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// How a request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The request's future finished.
    Completed,
    /// The request's future panicked (the message); the runtime carries on.
    Panicked(String),
    /// The request was dropped before finishing: cancelled by the host or at
    /// the drain deadline.
    Cancelled,
}

/// The runtime no longer takes requests (it is terminating).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the extension is shutting down and takes no new requests")]
pub struct Rejected;

/// What [`HostRuntime::terminate`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TerminateReport {
    /// Requests running when termination began.
    pub in_flight: usize,
    /// Of those, the ones cancelled at the deadline.
    pub cancelled: usize,
    /// How long termination took.
    pub elapsed: Duration,
}

struct Tracker {
    running: AtomicUsize,
    idle: Notify,
    tasks: Mutex<Vec<AbortHandle>>,
}

/// A tokio runtime sized for the extension, with request accounting.
pub struct HostRuntime {
    runtime: tokio::runtime::Runtime,
    /// [`spawn`](Self::spawn) polls a request once on the caller's thread.
    first_step_on_caller: bool,
    accepting: AtomicBool,
    tracker: Arc<Tracker>,
}

/// Runs the completion callback exactly once: on `finish`, or on drop.
struct Completion<F: FnOnce(Outcome)> {
    done: Option<F>,
    tracker: Arc<Tracker>,
}

impl<F: FnOnce(Outcome)> Completion<F> {
    fn finish(&mut self, outcome: Outcome) {
        if let Some(done) = self.done.take() {
            // The callback is host code; a panic in it must not take the
            // worker down or skip the accounting below.
            if let Err(p) = std::panic::catch_unwind(AssertUnwindSafe(|| done(outcome))) {
                tracing::error!(panic = %kallithea_core::panic_message(p.as_ref()), "request completion callback panicked");
            }
            if self.tracker.running.fetch_sub(1, Ordering::AcqRel) == 1 {
                self.tracker.idle.notify_waiters();
            }
        }
    }
}

impl<F: FnOnce(Outcome)> Drop for Completion<F> {
    fn drop(&mut self) {
        self.finish(Outcome::Cancelled);
    }
}

fn outcome_of(r: Result<(), String>) -> Outcome {
    match r {
        Ok(()) => Outcome::Completed,
        Err(message) => {
            tracing::error!(target: "kallithea::panic", panic = %message, "request task panicked");
            Outcome::Panicked(message)
        }
    }
}

impl HostRuntime {
    /// Starts a runtime with `workers` threads (at least one), named
    /// `kallithea-isapi`.
    pub fn start(workers: usize) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .thread_name("kallithea-isapi")
            .enable_all()
            .build()?;
        Ok(HostRuntime {
            runtime,
            first_step_on_caller: true,
            accepting: AtomicBool::new(true),
            tracker: Arc::new(Tracker {
                running: AtomicUsize::new(0),
                idle: Notify::new(),
                tasks: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Whether [`spawn`](Self::spawn) takes a request's first step on the
    /// calling thread (the default) or hands every request to the runtime
    /// at once.
    pub fn first_step_on_caller(mut self, yes: bool) -> Self {
        self.first_step_on_caller = yes;
        self
    }

    /// A handle to the runtime, for work that is not a request.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime.handle()
    }

    /// Requests running now.
    pub fn in_flight(&self) -> usize {
        self.tracker.running.load(Ordering::Acquire)
    }

    /// Runs `request`: polled once on the calling thread (inside the
    /// runtime's context), then, if it is not finished, on the runtime — or
    /// all of it on the runtime, when [`first_step_on_caller`] is off.
    /// `done` runs exactly once with how it ended — before this returns when
    /// the first poll finished it (no task handle then). After termination
    /// began, returns [`Rejected`] without running either.
    ///
    /// [`first_step_on_caller`]: Self::first_step_on_caller
    pub fn spawn<F, D>(&self, request: F, done: D) -> Result<Option<AbortHandle>, Rejected>
    where
        F: Future<Output = ()> + Send + 'static,
        D: FnOnce(Outcome) + Send + 'static,
    {
        if !self.accepting.load(Ordering::Acquire) {
            return Err(Rejected);
        }
        self.tracker.running.fetch_add(1, Ordering::AcqRel);
        let mut completion = Completion {
            done: Some(done),
            tracker: Arc::clone(&self.tracker),
        };
        let mut request = Box::pin(kallithea_core::catch_unwind_future(request));
        if self.first_step_on_caller {
            let _runtime = self.runtime.enter();
            // Whatever the first poll registers for wake-ups is registered
            // again by the task's first poll, with the task's waker.
            let mut cx = Context::from_waker(Waker::noop());
            if let Poll::Ready(r) = request.as_mut().poll(&mut cx) {
                completion.finish(outcome_of(r));
                return Ok(None);
            }
        }
        let task = self.runtime.spawn(async move {
            let r = request.await;
            completion.finish(outcome_of(r));
        });
        let handle = task.abort_handle();
        let mut tasks = self.tracker.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle.clone());
        Ok(Some(handle))
    }

    /// Stops taking requests (later [`spawn`](Self::spawn)s get
    /// [`Rejected`]), lets running ones finish for at most `grace`, then
    /// cancels the rest — their callbacks report [`Outcome::Cancelled`] — and
    /// waits for those callbacks. The runtime's threads stop when it is
    /// dropped. Blocks the calling thread (IIS's, in `TerminateExtension`), so
    /// it must not be called from the runtime itself.
    pub fn terminate(&self, grace: Duration) -> TerminateReport {
        let started = Instant::now();
        self.accepting.store(false, Ordering::Release);
        let in_flight = self.in_flight();
        let tracker = Arc::clone(&self.tracker);
        let until_idle = |limit: Duration| {
            let tracker = Arc::clone(&tracker);
            self.runtime.block_on(async move {
                tokio::time::timeout(limit, async {
                    loop {
                        let idle = tracker.idle.notified();
                        if tracker.running.load(Ordering::Acquire) == 0 {
                            return;
                        }
                        idle.await;
                    }
                })
                .await
                .is_ok()
            })
        };
        let mut cancelled = 0;
        if !until_idle(grace) {
            cancelled = self.in_flight();
            tracing::warn!(
                cancelled,
                grace_secs = grace.as_secs_f64(),
                "drain deadline passed: cancelling the remaining requests"
            );
            for t in self
                .tracker
                .tasks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain(..)
            {
                t.abort();
            }
            if !until_idle(Duration::from_secs(5)) {
                tracing::error!(
                    left = self.in_flight(),
                    "cancelled requests did not end within 5 s"
                );
            }
        }
        TerminateReport {
            in_flight,
            cancelled,
            elapsed: started.elapsed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::sync::mpsc;

    #[test]
    fn every_request_completes_exactly_once_whatever_happens_to_it() {
        let rt = HostRuntime::start(2).unwrap();
        let n = 600;
        let calls: Arc<Vec<AtomicU32>> = Arc::new((0..n).map(|_| AtomicU32::new(0)).collect());
        let (tx, rx) = mpsc::channel();
        let mut stuck = Vec::new();
        for i in 0..n {
            let (calls, tx) = (Arc::clone(&calls), tx.clone());
            let request = async move {
                match i % 3 {
                    0 => {}
                    1 => panic!("request {i} fails"),
                    _ => std::future::pending::<()>().await,
                }
            };
            let handle = rt
                .spawn(request, move |outcome| {
                    calls[i].fetch_add(1, Ordering::SeqCst);
                    tx.send((i, outcome)).unwrap();
                })
                .unwrap();
            match i % 3 {
                2 => stuck.push(handle.expect("a waiting request becomes a task")),
                _ => assert!(handle.is_none(), "request {i} finished in its first poll"),
            }
        }
        // The host cancels half of the stuck ones (clients gone)…
        for h in stuck.iter().step_by(2) {
            h.abort();
        }
        // Let the others finish (panics print backtraces: slow under load),
        // so that only the stuck ones are left for the deadline…
        for _ in 0..1000 {
            if rt.in_flight() == n / 3 / 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(rt.in_flight(), n / 3 / 2);
        // …which cancels them.
        let report = rt.terminate(Duration::from_millis(200));
        assert_eq!(report.cancelled, n / 3 / 2);
        drop(rt);
        let outcomes: Vec<_> = rx.try_iter().collect();
        assert_eq!(outcomes.len(), n);
        assert!(
            calls.iter().all(|c| c.load(Ordering::SeqCst) == 1),
            "each callback exactly once"
        );
        for (i, outcome) in outcomes {
            let expected = match i % 3 {
                0 => Outcome::Completed,
                1 => Outcome::Panicked(format!("request {i} fails")),
                _ => Outcome::Cancelled,
            };
            assert_eq!(outcome, expected, "request {i}");
        }
    }

    #[test]
    fn a_request_runs_on_the_calling_thread_until_it_waits_then_on_the_runtime() {
        let rt = HostRuntime::start(1).unwrap();
        let caller = std::thread::current().id();
        let where_ = |tx: mpsc::Sender<_>| {
            move |o: Outcome| {
                tx.send((
                    o,
                    std::thread::current().id(),
                    std::thread::current().name().map(str::to_owned),
                ))
                .unwrap()
            }
        };

        // Nothing to wait for: done before `spawn` returns, on this thread.
        let (tx, rx) = mpsc::channel();
        let handle = rt.spawn(async {}, where_(tx)).unwrap();
        assert!(handle.is_none());
        let (outcome, thread, _) = rx.try_recv().expect("completed inside spawn");
        assert_eq!((outcome, thread), (Outcome::Completed, caller));

        // A wait (a timer: the first poll sees the runtime's context) moves
        // the rest to the runtime's thread; the caller is not held.
        let (tx, rx) = mpsc::channel();
        let first_step = Arc::new(Mutex::new(None));
        let seen = Arc::clone(&first_step);
        let started = Instant::now();
        let handle = rt
            .spawn(
                async move {
                    *seen.lock().unwrap() = Some(std::thread::current().id());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                },
                where_(tx),
            )
            .unwrap();
        assert!(handle.is_some());
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "spawn waited"
        );
        assert!(rx.try_recv().is_err(), "finished before its timer");
        assert_eq!(*first_step.lock().unwrap(), Some(caller));
        let (outcome, thread, name) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(outcome, Outcome::Completed);
        assert_ne!(thread, caller);
        assert_eq!(name.as_deref(), Some("kallithea-isapi"));

        // A panic in the first step is caught there.
        let (tx, rx) = mpsc::channel();
        rt.spawn(async { panic!("at once") }, where_(tx)).unwrap();
        assert_eq!(
            rx.try_recv().unwrap().0,
            Outcome::Panicked("at once".into())
        );
        // Nothing is left in flight. (The timer's request counts until just
        // after its callback ran — on the runtime's thread, so allow it a
        // moment.)
        for _ in 0..500 {
            if rt.in_flight() == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(rt.in_flight(), 0);

        // Switched off, even a request with nothing to wait for runs on the
        // runtime.
        let rt = rt.first_step_on_caller(false);
        let (tx, rx) = mpsc::channel();
        assert!(rt.spawn(async {}, where_(tx)).unwrap().is_some());
        let (outcome, thread, name) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(outcome, Outcome::Completed);
        assert_ne!(thread, caller);
        assert_eq!(name.as_deref(), Some("kallithea-isapi"));
    }

    #[test]
    fn termination_lets_running_requests_finish_within_the_grace_period() {
        let rt = HostRuntime::start(1).unwrap();
        let (tx, rx) = mpsc::channel();
        rt.spawn(
            async { tokio::time::sleep(Duration::from_millis(150)).await },
            move |o| tx.send(o).unwrap(),
        )
        .unwrap();
        let report = rt.terminate(Duration::from_secs(5));
        assert_eq!((report.in_flight, report.cancelled), (1, 0));
        assert!(report.elapsed >= Duration::from_millis(100), "{report:?}");
        assert_eq!(rx.recv().unwrap(), Outcome::Completed);
    }

    #[test]
    fn requests_arriving_during_termination_are_rejected() {
        let rt = Arc::new(HostRuntime::start(1).unwrap());
        rt.spawn(std::future::pending(), |_| {}).unwrap();
        let terminating = {
            let rt = Arc::clone(&rt);
            std::thread::spawn(move || rt.terminate(Duration::from_millis(300)))
        };
        std::thread::sleep(Duration::from_millis(50));
        let late = rt.spawn(async {}, |_| panic!("a rejected request must not complete"));
        assert_eq!(late.unwrap_err(), Rejected);
        let report = terminating.join().unwrap();
        assert_eq!((report.in_flight, report.cancelled), (1, 1));
        assert_eq!(rt.in_flight(), 0);
    }

    #[test]
    fn a_panicking_completion_callback_does_not_break_the_accounting() {
        let rt = HostRuntime::start(1).unwrap();
        rt.spawn(async {}, |_| panic!("host bug")).unwrap();
        let report = rt.terminate(Duration::from_secs(2));
        assert_eq!(report.cancelled, 0);
        assert_eq!(rt.in_flight(), 0);
    }
}
