//! Connection handles (`HCONN`) and the requests behind them.
//!
//! A handle encodes the simulator's number and the request's sequence number;
//! handles are never reused, so a call with the handle of a finished request
//! is caught and recorded as a violation instead of reaching freed memory.

use std::cell::RefCell;
use std::sync::{Arc, RwLock, Weak};

use crate::{Shared, SimRequest};

const SHIFT: u32 = usize::BITS - 12;
const MASK: usize = (1 << SHIFT) - 1;

static SIMULATORS: RwLock<Vec<Weak<Shared>>> = RwLock::new(Vec::new());

/// Registers a simulator; returns its number (from 1).
pub(crate) fn register_simulator(shared: &Arc<Shared>) -> usize {
    let mut sims = SIMULATORS.write().unwrap_or_else(|e| e.into_inner());
    sims.push(Arc::downgrade(shared));
    let n = sims.len();
    assert!(n < (1 << 12), "too many simulators in one process");
    n
}

/// The handle of request `seq` of simulator `sim`.
pub(crate) fn handle(sim: usize, seq: usize) -> usize {
    (sim << SHIFT) | (seq & MASK)
}

/// The request behind `conn`, recording a violation for a stale or unknown
/// handle (`what` names the call).
pub(crate) fn lookup(conn: usize, what: &str) -> Option<Arc<SimRequest>> {
    lookup_with(conn, || what.to_owned())
}

thread_local! {
    /// The request this thread looked up last: an extension makes its calls
    /// for one request in a row, mostly on one thread (a dozen server
    /// variables, the headers, a write), and the shared tables below are
    /// contended between threads. A request that has ended is never served
    /// from here: its calls go through the tables, which record them.
    static LAST: RefCell<Option<(usize, Weak<SimRequest>)>> = const { RefCell::new(None) };
}

/// [`lookup`], naming the call only when a violation needs the name.
pub(crate) fn lookup_with(conn: usize, what: impl FnOnce() -> String) -> Option<Arc<SimRequest>> {
    let cached = LAST.with(|last| {
        let last = last.borrow();
        let (c, req) = last.as_ref()?;
        (*c == conn).then(|| req.upgrade()).flatten()
    });
    if let Some(req) = cached.filter(|r| !r.has_ended()) {
        return Some(req);
    }
    let found = lookup_in_tables(conn, what);
    if let Some(req) = &found {
        LAST.with(|last| *last.borrow_mut() = Some((conn, Arc::downgrade(req))));
    }
    found
}

fn lookup_in_tables(conn: usize, what: impl FnOnce() -> String) -> Option<Arc<SimRequest>> {
    let (sim, seq) = (conn >> SHIFT, conn & MASK);
    let shared = {
        let sims = SIMULATORS.read().unwrap_or_else(|e| e.into_inner());
        sim.checked_sub(1)
            .and_then(|i| sims.get(i))
            .and_then(Weak::upgrade)
    };
    let Some(shared) = shared else {
        let what = what();
        tracing::error!(conn, what, "a call with a handle no simulator issued");
        return None;
    };
    let found = shared.request(seq);
    if found.is_none() {
        let what = what();
        if shared.issued(seq) {
            shared.violation(format!(
                "{what} was called for request {seq} after its session ended"
            ));
        } else {
            shared.violation(format!(
                "{what} was called with an unknown handle {conn:#x}"
            ));
        }
    }
    found
}

/// The simulator that issued `handle`, if it still runs.
pub(crate) fn simulator(handle: usize) -> Option<Arc<Shared>> {
    let sim = handle >> SHIFT;
    let sims = SIMULATORS.read().unwrap_or_else(|e| e.into_inner());
    sim.checked_sub(1)
        .and_then(|i| sims.get(i))
        .and_then(Weak::upgrade)
}
