//! Native-module mode: one request through a module's `CHttpModule`, with
//! IIS's rules for notifications and completions.
//!
//! - The handler runs once (`OnExecuteRequestHandler`) on an IIS thread.
//!   While a notification runs, completions wait: IIS never calls a module
//!   for a request while it is already in one of its notifications.
//! - Completions of asynchronous reads, writes and flushes, and posted
//!   completions (`PostCompletion`), reach the module through
//!   `OnAsyncCompletion` on a simulator thread, never inside the call that
//!   started them; `IndicateCompletion` resumes the request on the caller's
//!   thread.
//! - The request ends at the first status other than
//!   `RQ_NOTIFICATION_PENDING`; then `Dispose` is called once. A completion
//!   posted for an ended request, a second final status, an operation still
//!   outstanding at the end, a second operation while one is outstanding,
//!   and any call on the request's objects after its end are violations.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use iis_sys::native::{
    hresult_from_win32, ERROR_HANDLE_EOF, ERROR_NOT_FOUND, E_INVALIDARG, HRESULT,
    RQ_NOTIFICATION_CONTINUE, RQ_NOTIFICATION_FINISH_REQUEST, RQ_NOTIFICATION_PENDING, S_OK,
};
use tokio::sync::oneshot;

use crate::native_ffi::{self, NativeObjects, ReadTarget};
use crate::{Head, Instance, Queued, SimRequest};

/// `HRESULT_FROM_WIN32(ERROR_NOT_SUPPORTED)`: the headers went out already.
const HEADERS_SENT: HRESULT = hresult_from_win32(50);

/// Something for the request's notification loop.
#[derive(Debug)]
pub(crate) enum Item {
    /// An asynchronous read, write or flush completed.
    Io { bytes: u32, status: HRESULT },
    /// `PostCompletion`.
    Posted { bytes: u32 },
    /// `IndicateCompletion` with this status.
    Indicate(i32),
}

#[derive(Default)]
struct Gate {
    /// A notification is running (or about to): items wait in `queue`.
    running: bool,
    queue: VecDeque<Item>,
    /// The final status went back to IIS.
    ended: bool,
    /// What `IHttpCompletionInfo` reports during `OnAsyncCompletion`.
    current: (u32, HRESULT),
}

struct ResponseState {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The status and headers are fixed (the first write or flush).
    frozen: bool,
    need_disconnect: bool,
}

/// The native-mode part of a request.
pub(crate) struct Native {
    pub(crate) objects: NativeObjects,
    gate: Mutex<Gate>,
    response: Mutex<ResponseState>,
    /// The module's library, loaded while the request lives (`None` only
    /// in the simulator's own tests).
    pub(crate) instance: Option<Arc<Instance>>,
    /// `Content-Length`, if declared.
    declared: Option<u64>,
    chunked: bool,
    /// Body bytes handed to the module so far.
    read: AtomicU64,
}

impl Native {
    pub(crate) fn new(
        objects: NativeObjects,
        instance: Option<Arc<Instance>>,
        declared: Option<u64>,
        chunked: bool,
    ) -> Native {
        Native {
            objects,
            gate: Mutex::new(Gate {
                running: true,
                ..Gate::default()
            }),
            response: Mutex::new(ResponseState {
                status: StatusCode::OK,
                headers: Vec::new(),
                frozen: false,
                need_disconnect: false,
            }),
            instance,
            declared,
            chunked,
            read: AtomicU64::new(0),
        }
    }

    fn gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn response(&self) -> std::sync::MutexGuard<'_, ResponseState> {
        self.response.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn native(req: &SimRequest) -> &Native {
    req.native
        .as_ref()
        .expect("native-mode calls come only for native-mode requests")
}

/// How a read, write or flush started.
pub(crate) enum IoStart {
    /// A completion will come through `OnAsyncCompletion`.
    Pending,
    /// Finished in the call: bytes transferred, or the failure.
    Done(Result<u32, HRESULT>),
}

/// Runs the request's handler: a module from the factory, then
/// `OnExecuteRequestHandler`, then the notification loop. Called on an IIS
/// thread.
pub(crate) fn execute(req: &Arc<SimRequest>) -> Result<(), String> {
    let n = native(req);
    let Some(crate::Loaded::Native(lib)) = n.instance.as_deref().map(|i| &i.lib) else {
        return Err("not a native module".into());
    };
    lib.create_module(&n.objects)?;
    let status = native_ffi::on_execute_request_handler(&n.objects);
    if status != RQ_NOTIFICATION_PENDING {
        req.shared
            .counters
            .ended_in_call
            .fetch_add(1, Ordering::AcqRel);
    }
    after_notification(req, status);
    Ok(())
}

/// What follows a notification's return: the end of the request, or the
/// queued completions.
pub(crate) fn after_notification(req: &Arc<SimRequest>, status: i32) {
    if status == RQ_NOTIFICATION_PENDING {
        pump(req);
    } else {
        end(req, status);
    }
}

/// Delivers queued items one at a time until the queue is empty (then
/// notifications may come from elsewhere) or the request ends.
fn pump(req: &Arc<SimRequest>) {
    let n = native(req);
    loop {
        let item = {
            let mut g = n.gate();
            if g.ended {
                g.running = false;
                return;
            }
            match g.queue.pop_front() {
                Some(item) => {
                    g.current = match item {
                        Item::Io { bytes, status } => (bytes, status),
                        Item::Posted { bytes } => (bytes, S_OK),
                        Item::Indicate(_) => (0, S_OK),
                    };
                    item
                }
                None => {
                    g.running = false;
                    return;
                }
            }
        };
        let status = match item {
            Item::Io { .. } => {
                {
                    let mut st = req.lock();
                    st.pending = None;
                    st.cancel = None;
                }
                native_ffi::on_async_completion(&n.objects, false)
            }
            Item::Posted { .. } => native_ffi::on_async_completion(&n.objects, true),
            Item::Indicate(status) => {
                if status == RQ_NOTIFICATION_PENDING {
                    req.violation("IndicateCompletion(RQ_NOTIFICATION_PENDING)");
                    continue;
                }
                status
            }
        };
        if status != RQ_NOTIFICATION_PENDING {
            end(req, status);
            return;
        }
    }
}

/// Hands `item` to the request's notification loop (running it here if no
/// notification is running).
pub(crate) fn deliver(req: &Arc<SimRequest>, item: Item) {
    let n = native(req);
    {
        let mut g = n.gate();
        if g.ended {
            drop(g);
            match item {
                // An operation cancelled by the end (already recorded).
                Item::Io { .. } => {}
                other => req.violation(&format!(
                    "{other:?} for a request that already finished (a second completion)"
                )),
            }
            return;
        }
        g.queue.push_back(item);
        if g.running {
            return;
        }
        g.running = true;
    }
    pump(req);
}

/// `PostCompletion`: the completion arrives on another thread.
pub(crate) fn post(req: &Arc<SimRequest>, bytes: u32) {
    let this = Arc::clone(req);
    req.shared.rt.spawn(async move {
        deliver(&this, Item::Posted { bytes });
    });
}

/// Ends the request with the module's final status.
fn end(req: &Arc<SimRequest>, status: i32) {
    let n = native(req);
    let leftover = {
        let mut g = n.gate();
        if g.ended {
            drop(g);
            req.violation("a second final notification status");
            return;
        }
        g.ended = true;
        g.running = false;
        std::mem::take(&mut g.queue)
    };
    if !matches!(
        status,
        RQ_NOTIFICATION_CONTINUE | RQ_NOTIFICATION_FINISH_REQUEST
    ) {
        req.violation(&format!("unknown notification status {status}"));
    }
    for item in leftover {
        if !matches!(item, Item::Io { .. }) {
            req.violation(&format!(
                "{item:?} queued when the request finished (completed twice)"
            ));
        }
    }
    if let Some(what) = req.lock().pending {
        req.violation(&format!(
            "the request finished with an asynchronous {what} outstanding"
        ));
    }
    freeze(req);
    {
        let keep = req.keep_alive_wanted && !n.response().need_disconnect;
        req.lock().keep_conn = keep;
    }
    let _ = req.done(None, "the final notification status");
    native_ffi::dispose(&n.objects);
    req.shared.counters.disposed.fetch_add(1, Ordering::AcqRel);
    n.objects.retire();
}

/// Fixes the status and headers (at the first write or flush, or the end)
/// and hands them to the response.
fn freeze(req: &SimRequest) {
    let n = native(req);
    let head = {
        let mut r = n.response();
        if r.frozen {
            return;
        }
        r.frozen = true;
        Head {
            status: r.status,
            headers: std::mem::take(&mut r.headers).into_iter().collect(),
        }
    };
    let keep = req.keep_alive_wanted && !n.response().need_disconnect;
    let mut st = req.lock();
    st.headers_sent = true;
    st.keep_conn = keep;
    st.held_head = Some(head);
}

/// Claims the one asynchronous operation slot.
fn begin(req: &SimRequest, what: &'static str) -> Result<(), HRESULT> {
    let mut st = req.lock();
    if let Some(other) = st.pending {
        drop(st);
        req.violation(&format!(
            "asynchronous {what} while an asynchronous {other} is outstanding"
        ));
        return Err(E_INVALIDARG);
    }
    st.pending = Some(what);
    Ok(())
}

fn release(req: &SimRequest) {
    let mut st = req.lock();
    st.pending = None;
    st.cancel = None;
}

/// `GetRemainingEntityBytes`: what is left of a declared body; for a
/// chunked one, `0xFFFFFFFF` until its end.
pub(crate) fn remaining(req: &SimRequest) -> u32 {
    let n = native(req);
    let read = n.read.load(Ordering::Acquire);
    match n.declared {
        Some(d) => u32::try_from(d.saturating_sub(read)).unwrap_or(u32::MAX - 1),
        None if n.chunked => u32::MAX,
        None => 0,
    }
}

/// `ReadEntityBody`. Bytes already buffered complete in the call (IIS does
/// so for data it holds); otherwise the read completes later.
pub(crate) fn read(req: &Arc<SimRequest>, mut target: ReadTarget, is_async: bool) -> IoStart {
    let n = native(req);
    let eof = hresult_from_win32(ERROR_HANDLE_EOF);
    if !is_async {
        // A synchronous read blocks the calling thread, as in IIS.
        let this = Arc::clone(req);
        let max = target.len();
        let r = crate::block_here(&req.shared.rt, async move { this.read_body(max).await });
        return IoStart::Done(match r {
            Some(Ok(data)) if data.is_empty() => Err(eof),
            Some(Ok(data)) => {
                let got = target.fill(&data) as u32;
                n.read.fetch_add(u64::from(got), Ordering::AcqRel);
                Ok(got)
            }
            Some(Err(code)) => Err(hresult_from_win32(code)),
            None => Err(hresult_from_win32(ERROR_NOT_FOUND)),
        });
    }
    if let Err(hr) = begin(req, "read") {
        return IoStart::Done(Err(hr));
    }
    // Data already here (or the body's end): IIS completes in the call.
    // With mixed completions, only some such reads do.
    let now = match req.shared.config.variation.completions {
        crate::Completions::Mixed(_) => req.shared.complete_inline(),
        _ => true,
    };
    if let Some(r) = now.then(|| req.read_now(target.len())).flatten() {
        release(req);
        return IoStart::Done(match r {
            Ok(data) if data.is_empty() => Err(eof),
            Ok(data) => {
                let got = target.fill(&data) as u32;
                n.read.fetch_add(u64::from(got), Ordering::AcqRel);
                Ok(got)
            }
            Err(code) => Err(hresult_from_win32(code)),
        });
    }
    let (cancel_tx, cancel_rx) = oneshot::channel();
    req.lock().cancel = Some(cancel_tx);
    let this = Arc::clone(req);
    req.shared.rt.spawn(async move {
        let r = tokio::select! {
            r = this.read_body(target.len()) => r,
            _ = cancel_rx => Err(iis_sys::native::ERROR_OPERATION_ABORTED),
        };
        let item = match r {
            Ok(data) if data.is_empty() => Item::Io {
                bytes: 0,
                status: eof,
            },
            // The request ended meanwhile: the buffer may be gone.
            Ok(_) if native(&this).gate().ended => return,
            Ok(data) => {
                let got = target.fill(&data) as u32;
                native(&this)
                    .read
                    .fetch_add(u64::from(got), Ordering::AcqRel);
                Item::Io {
                    bytes: got,
                    status: S_OK,
                }
            }
            Err(code) => Item::Io {
                bytes: 0,
                status: hresult_from_win32(code),
            },
        };
        deliver(&this, item);
    });
    IoStart::Pending
}

/// `WriteEntityChunks`: the status and headers go with the first bytes.
pub(crate) fn write(req: &Arc<SimRequest>, data: Bytes, is_async: bool) -> IoStart {
    freeze(req);
    let len = data.len() as u32;
    let counter = if is_async {
        &req.shared.counters.async_writes
    } else {
        &req.shared.counters.sync_writes
    };
    counter.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    if !is_async {
        let r = req.write_now(data);
        return IoStart::Done(r.map(|()| len).map_err(hresult_from_win32));
    }
    if let Err(hr) = begin(req, "write") {
        return IoStart::Done(Err(hr));
    }
    let queued = req.queue_body(data);
    if let Queued::Done(r) = &queued {
        if req.shared.complete_inline() {
            // Finished at once: `pfCompletionExpected` FALSE.
            release(req);
            return IoStart::Done(r.map(|()| len).map_err(hresult_from_win32));
        }
    }
    let this = Arc::clone(req);
    req.shared.rt.spawn(async move {
        let r = match queued {
            Queued::Done(r) => r,
            Queued::Wait(tx, data) => this.send_body(tx, data).await,
        };
        let item = match r {
            Ok(()) => Item::Io {
                bytes: len,
                status: S_OK,
            },
            Err(code) => Item::Io {
                bytes: 0,
                status: hresult_from_win32(code),
            },
        };
        deliver(&this, item);
    });
    IoStart::Pending
}

/// `Flush`: sends the status and headers now.
pub(crate) fn flush(req: &Arc<SimRequest>, is_async: bool) -> IoStart {
    freeze(req);
    req.lock().release_head();
    if !is_async {
        return IoStart::Done(Ok(0));
    }
    if req.shared.complete_inline() {
        return IoStart::Done(Ok(0));
    }
    if let Err(hr) = begin(req, "flush") {
        return IoStart::Done(Err(hr));
    }
    let this = Arc::clone(req);
    req.shared.rt.spawn(async move {
        deliver(
            &this,
            Item::Io {
                bytes: 0,
                status: S_OK,
            },
        );
    });
    IoStart::Pending
}

/// `SetStatus`.
pub(crate) fn set_status(req: &SimRequest, status: u16, _reason: Vec<u8>) -> HRESULT {
    let Ok(code) = StatusCode::from_u16(status) else {
        return E_INVALIDARG;
    };
    let mut r = native(req).response();
    if r.frozen {
        return HEADERS_SENT;
    }
    r.status = code;
    S_OK
}

/// `SetHeader` by name: replaces the header's values, or adds one.
pub(crate) fn set_header(req: &SimRequest, name: &[u8], value: &[u8], replace: bool) -> HRESULT {
    let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
    else {
        req.violation(&format!(
            "SetHeader with an invalid header {:?}: {:?}",
            String::from_utf8_lossy(name),
            String::from_utf8_lossy(value)
        ));
        return E_INVALIDARG;
    };
    let mut r = native(req).response();
    if r.frozen {
        return HEADERS_SENT;
    }
    if replace {
        r.headers.retain(|(n, _)| *n != name);
    }
    r.headers.push((name, value));
    S_OK
}

/// `ClearHeaders`.
pub(crate) fn clear_headers(req: &Arc<SimRequest>) {
    let mut r = native(req).response();
    if !r.frozen {
        r.headers.clear();
    }
}

/// `SetNeedDisconnect`.
pub(crate) fn set_need_disconnect(req: &Arc<SimRequest>) {
    native(req).response().need_disconnect = true;
}

/// What `IHttpCompletionInfo` reports now.
pub(crate) fn current_completion(req: &SimRequest) -> (u32, HRESULT) {
    native(req).gate().current
}
