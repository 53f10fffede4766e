//! One ISAPI request as the simulator serves it: the ECB's callbacks (server
//! variables, reads with read-ahead, writes, the send-header protocol,
//! `DONE_WITH_SESSION`) and their bookkeeping.

use super::*;

/// The response head the extension sent.
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    pub(crate) headers: http::HeaderMap,
}

pub(crate) type BodyChunk = Result<Bytes, io::Error>;
/// Where the DLL's writes go: unbounded, with [`Backlog`] for the
/// back-pressure asynchronous writes feel.
pub(crate) type BodyTx = mpsc::UnboundedSender<BodyChunk>;

/// The written chunks the client has not taken yet. An asynchronous write
/// completes only once the one before it was taken (a slow client slows the
/// DLL down); a synchronous write is handed over at once, as IIS hands it
/// to http.sys's buffers — so the DLL may block in one on any thread,
/// `HttpExtensionProc`'s included, without waiting for the response it is
/// itself holding up.
#[derive(Default)]
pub(crate) struct Backlog {
    pub(crate) chunks: AtomicUsize,
    pub(crate) taken: tokio::sync::Notify,
}

impl Backlog {
    /// One chunk more in the response.
    pub(crate) fn added(&self) {
        self.chunks.fetch_add(1, Ordering::AcqRel);
    }

    /// The client took a chunk.
    pub(crate) fn took(&self) {
        self.chunks.fetch_sub(1, Ordering::AcqRel);
        self.taken.notify_waiters();
    }

    /// Waits until the client has taken every chunk.
    pub(crate) async fn drained(&self) {
        loop {
            let taken = self.taken.notified();
            if self.chunks.load(Ordering::Acquire) == 0 {
                return;
            }
            taken.await;
        }
    }
}

#[derive(Default)]
pub(crate) struct ReqState {
    pub(crate) ecb: Option<ffi::EcbStorage>,
    pub(crate) ecb_ptr: Option<ffi::EcbPtr>,
    pub(crate) completion: Option<ffi::Completion>,
    pub(crate) pending: Option<&'static str>,
    /// The number of the outstanding operation (counted per request): its
    /// completion is delivered once, by whoever claims it first.
    pub(crate) op: u64,
    /// A write to the client failed.
    pub(crate) write_failed: bool,
    pub(crate) cancel: Option<oneshot::Sender<()>>,
    pub(crate) head_tx: Option<oneshot::Sender<Head>>,
    /// The status and headers the extension sent, held until the first body
    /// bytes or the end of the session so that they leave together.
    pub(crate) held_head: Option<Head>,
    pub(crate) body_tx: Option<BodyTx>,
    pub(crate) backlog: Arc<Backlog>,
    pub(crate) headers_sent: bool,
    pub(crate) done: bool,
    pub(crate) keep_conn: bool,
}

impl ReqState {
    /// Lets the held status and headers go to the client.
    pub(crate) fn release_head(&mut self) {
        if let Some(head) = self.held_head.take() {
            if let Some(tx) = self.head_tx.take() {
                let _ = tx.send(head);
            }
        }
    }
}

/// How a body write stands after [`SimRequest::queue_body`].
pub(crate) enum Queued {
    /// Finished (in the response, or failed).
    Done(Result<(), u32>),
    /// The response has no room yet: send this when it has.
    Wait(BodyTx, Bytes),
}

/// The request body as the client sends it, with what the last read left.
pub(crate) struct BodySource {
    pub(crate) body: Option<Incoming>,
    pub(crate) leftover: Bytes,
    pub(crate) delivered: u64,
}

impl BodySource {
    /// Up to `max` bytes; empty at the end of the body.
    pub(crate) async fn next(&mut self, max: usize) -> Result<Bytes, ()> {
        loop {
            if !self.leftover.is_empty() {
                let n = self.leftover.len().min(max);
                self.delivered += n as u64;
                return Ok(self.leftover.split_to(n));
            }
            let Some(body) = self.body.as_mut() else {
                return Ok(Bytes::new());
            };
            match body.frame().await {
                None => {
                    self.body = None;
                    return Ok(Bytes::new());
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.leftover = data;
                    }
                }
                Some(Err(_)) => {
                    self.body = None;
                    return Err(());
                }
            }
        }
    }

    pub(crate) fn is_end(&self) -> bool {
        self.leftover.is_empty()
            && self
                .body
                .as_ref()
                .is_none_or(hyper::body::Body::is_end_stream)
    }
}

pub(crate) struct SimRequest {
    pub(crate) seq: usize,
    pub(crate) generation: u64,
    pub(crate) shared: Arc<Shared>,
    pub(crate) info: vars::RequestInfo,
    pub(crate) keep_alive_wanted: bool,
    pub(crate) disconnected: AtomicBool,
    /// The session ended ([`SimRequest::done`]): set before the request
    /// leaves the registry's tables.
    pub(crate) ended: AtomicBool,
    pub(crate) written: AtomicU64,
    pub(crate) faults: Faults,
    pub(crate) state: Mutex<ReqState>,
    pub(crate) body: tokio::sync::Mutex<BodySource>,
    /// Native-module mode: the module's side of the request.
    pub(crate) native: Option<native::Native>,
}

impl SimRequest {
    /// The IIS objects of a native-mode request.
    pub(crate) fn native(&self) -> Option<&native_ffi::NativeObjects> {
        self.native.as_ref().map(|n| &n.objects)
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, ReqState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn violation(&self, what: &str) {
        self.shared
            .violation(format!("request {}: {what}", self.seq));
    }

    /// A server variable the DLL asked for (counted in
    /// [`Stats::server_variable_calls`]).
    pub(crate) fn server_variable(&self, name: &str) -> Result<Vec<u8>, u32> {
        self.count_variable_call();
        self.info.lookup(name)
    }

    /// [`server_variable`](Self::server_variable) into `out`.
    pub(crate) fn server_variable_into(&self, name: &str, out: &mut Vec<u8>) -> Result<(), u32> {
        self.count_variable_call();
        self.info.lookup_into(name, out)
    }

    pub(crate) fn count_variable_call(&self) {
        self.shared
            .counters
            .server_variable_calls
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the session has ended.
    pub(crate) fn has_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    pub(crate) fn wants_keep_alive(&self) -> bool {
        self.keep_alive_wanted
    }

    pub(crate) fn is_connected(&self) -> bool {
        if self.shared.config.variation.connected_until_write_fails {
            return !self.lock().write_failed;
        }
        if self.disconnected.load(Ordering::Acquire) {
            return false;
        }
        let gone = self
            .lock()
            .body_tx
            .as_ref()
            .is_some_and(|tx| tx.is_closed());
        if gone {
            self.disconnected.store(true, Ordering::Release);
        }
        !gone
    }

    pub(crate) fn register_completion(&self, completion: ffi::Completion) {
        self.lock().completion = Some(completion);
    }

    pub(crate) fn unsupported(&self, request: u32) {
        tracing::warn!(target: "iis_sim", request, "unsupported ServerSupportFunction request");
    }

    /// Claims the one asynchronous operation slot; returns the completion
    /// to call, the ECB to pass and the operation's number.
    pub(crate) fn begin_async(
        &self,
        what: &'static str,
    ) -> Result<(ffi::Completion, ffi::EcbPtr, u64), u32> {
        let mut st = self.lock();
        let Some(completion) = st.completion else {
            drop(st);
            self.violation(&format!(
                "asynchronous {what} without a completion callback (HSE_REQ_IO_COMPLETION)"
            ));
            return Err(ERROR_INVALID_PARAMETER);
        };
        if let Some(other) = st.pending {
            drop(st);
            self.violation(&format!(
                "asynchronous {what} while an asynchronous {other} is outstanding"
            ));
            return Err(ERROR_INVALID_PARAMETER);
        }
        let ecb = st.ecb_ptr.ok_or(ERROR_INVALID_PARAMETER)?;
        st.pending = Some(what);
        st.op += 1;
        Ok((completion, ecb, st.op))
    }

    /// Claims operation `op`'s completion: `true` once, for the first
    /// caller, and only while the session lasts (after that the ECB must
    /// not be handed out again).
    pub(crate) fn claim(&self, op: u64) -> bool {
        let mut st = self.lock();
        if st.op != op || st.pending.is_none() {
            return false;
        }
        st.pending = None;
        st.cancel = None;
        if st.done {
            // The session ended with the operation outstanding (already
            // recorded).
            st.ecb = None;
            return false;
        }
        true
    }

    /// Ends operation `op` and calls the extension back — on whichever
    /// thread calls this: a simulator thread, or, for an inline
    /// completion, the thread that started the operation, inside its call.
    pub(crate) fn complete(
        &self,
        completion: ffi::Completion,
        ecb: ffi::EcbPtr,
        op: u64,
        result: Result<u32, u32>,
    ) {
        if self.claim(op) {
            deliver(completion, ecb, result);
        }
    }

    pub(crate) fn write_async(self: &Arc<Self>, data: Bytes) -> Result<(), u32> {
        if !self.lock().headers_sent {
            self.violation(
                "WriteClient before the response headers (raw responses are not simulated)",
            );
            return Err(ERROR_INVALID_PARAMETER);
        }
        let (completion, ecb, op) = self.begin_async("write")?;
        self.shared
            .counters
            .async_writes
            .fetch_add(1, Ordering::AcqRel);
        let len = data.len() as u32;
        let queued = self.queue_body(data);
        if let Queued::Done(r) = &queued {
            if self.shared.complete_inline() {
                // Finished at once: completed inside `WriteClient`.
                self.complete(completion, ecb, op, r.map(|()| len));
                return Ok(());
            }
        }
        let this = Arc::clone(self);
        self.shared.rt.spawn(async move {
            let r = match queued {
                Queued::Done(r) => r,
                Queued::Wait(tx, data) => this.send_body(tx, data).await,
            };
            this.complete(completion, ecb, op, r.map(|()| len));
        });
        Ok(())
    }

    /// Starts an asynchronous body write: puts `data` into the response at
    /// once when the client took what came before (with the held status and
    /// headers, so that they leave in one piece), or says what to wait for.
    pub(crate) fn queue_body(&self, data: Bytes) -> Queued {
        self.queue(data, true)
    }

    /// A synchronous body write: into the response at once.
    pub(crate) fn write_now(&self, data: Bytes) -> Result<(), u32> {
        match self.queue(data, false) {
            Queued::Done(r) => r,
            Queued::Wait(..) => unreachable!("a write that may not wait was told to"),
        }
    }

    fn queue(&self, data: Bytes, may_wait: bool) -> Queued {
        let before = self.written.fetch_add(data.len() as u64, Ordering::AcqRel);
        if let Some(limit) = self.faults.fail_writes_after {
            if before + data.len() as u64 > limit {
                self.disconnected.store(true, Ordering::Release);
                self.lock().write_failed = true;
                return Queued::Done(Err(ERROR_NETNAME_DELETED));
            }
        }
        let mut st = self.lock();
        let Some(tx) = st.body_tx.clone() else {
            st.write_failed = true;
            return Queued::Done(Err(ERROR_NETNAME_DELETED));
        };
        let queued = if data.is_empty() {
            Queued::Done(Ok(()))
        } else if may_wait && st.backlog.chunks.load(Ordering::Acquire) > 0 {
            Queued::Wait(tx, data)
        } else {
            st.backlog.added();
            match tx.send(Ok(data)) {
                Ok(()) => Queued::Done(Ok(())),
                Err(_) => {
                    st.backlog.took();
                    self.disconnected.store(true, Ordering::Release);
                    st.write_failed = true;
                    Queued::Done(Err(ERROR_NETNAME_DELETED))
                }
            }
        };
        st.release_head();
        queued
    }

    /// An asynchronous write that had to wait: sent once the client took
    /// what came before.
    pub(crate) async fn send_body(&self, tx: BodyTx, data: Bytes) -> Result<(), u32> {
        let backlog = Arc::clone(&self.lock().backlog);
        tokio::select! {
            () = backlog.drained() => {}
            () = tx.closed() => {}
        }
        backlog.added();
        tx.send(Ok(data)).map_err(|_| {
            backlog.took();
            self.disconnected.store(true, Ordering::Release);
            self.lock().write_failed = true;
            ERROR_NETNAME_DELETED
        })
    }

    pub(crate) fn write_sync(self: &Arc<Self>, data: Bytes) -> Result<(), u32> {
        if !self.lock().headers_sent {
            self.violation(
                "WriteClient before the response headers (raw responses are not simulated)",
            );
            return Err(ERROR_INVALID_PARAMETER);
        }
        self.shared
            .counters
            .sync_writes
            .fetch_add(1, Ordering::AcqRel);
        self.write_now(data)
    }

    pub(crate) async fn read_body(&self, max: usize) -> Result<Bytes, u32> {
        if let Some(d) = self.faults.slow_reads {
            tokio::time::sleep(d).await;
        }
        let mut body = self.body.lock().await;
        let max = self.limit_read(&body, max)?;
        if max == 0 {
            return Ok(Bytes::new());
        }
        body.next(max).await.map_err(|()| {
            self.disconnected.store(true, Ordering::Release);
            ERROR_NETNAME_DELETED
        })
    }

    /// How much of the body a read of `max` bytes may hand over now, with
    /// the faults and [`Variation::short_reads`]: 0 is the (early) end of the
    /// body; an error, the client gone.
    pub(crate) fn limit_read(&self, body: &BodySource, max: usize) -> Result<usize, u32> {
        let mut max = self.shared.read_size(max);
        if let Some(limit) = self.faults.abort_body_after {
            if body.delivered >= limit {
                self.disconnected.store(true, Ordering::Release);
                return Err(ERROR_NETNAME_DELETED);
            }
            max = max.min((limit - body.delivered).max(1) as usize);
        }
        if let Some(end) = self.faults.end_body_after {
            max = max.min(end.saturating_sub(body.delivered) as usize);
        }
        Ok(max)
    }

    /// A read that can finish now, without waiting for the client: what
    /// the body holds already, or its end. `None` when it would wait.
    pub(crate) fn read_now(&self, max: usize) -> Option<Result<Bytes, u32>> {
        if self.faults.slow_reads.is_some() {
            return None;
        }
        let mut body = self.body.try_lock().ok()?;
        let max = match self.limit_read(&body, max) {
            Ok(max) => max,
            Err(code) => return Some(Err(code)),
        };
        if max == 0 || (body.leftover.is_empty() && body.body.is_none()) {
            return Some(Ok(Bytes::new()));
        }
        if body.leftover.is_empty() {
            return None;
        }
        let n = body.leftover.len().min(max);
        body.delivered += n as u64;
        Some(Ok(body.leftover.split_to(n)))
    }

    pub(crate) fn read_async(self: &Arc<Self>, mut buf: ffi::ReadBuffer) -> Result<(), u32> {
        let (completion, ecb, op) = self.begin_async("read")?;
        if self.shared.complete_inline() {
            if let Some(r) = self.read_now(buf.len()) {
                // Finished at once: completed inside the call.
                if self.claim(op) {
                    let r = r.map(|data| buf.fill(&data) as u32);
                    deliver(completion, ecb, r);
                }
                return Ok(());
            }
        }
        let (cancel_tx, cancel_rx) = oneshot::channel();
        self.lock().cancel = Some(cancel_tx);
        let this = Arc::clone(self);
        self.shared.rt.spawn(async move {
            let r = tokio::select! {
                r = this.read_body(buf.len()) => r,
                _ = cancel_rx => Err(ERROR_OPERATION_ABORTED),
            };
            // The buffer is filled only by the one who claims the
            // completion: after a cancellation completed inline, the
            // extension may have freed it.
            if this.claim(op) {
                let r = r.map(|data| buf.fill(&data) as u32);
                deliver(completion, ecb, r);
            }
        });
        Ok(())
    }

    pub(crate) fn read_sync(self: &Arc<Self>, buf: &mut ffi::ReadBuffer) -> Result<usize, u32> {
        let this = Arc::clone(self);
        let max = buf.len();
        let data = block_here(&self.shared.rt, async move { this.read_body(max).await })
            .unwrap_or(Err(ERROR_NETNAME_DELETED))?;
        Ok(buf.fill(&data))
    }

    pub(crate) fn send_headers(
        &self,
        status: &[u8],
        headers: &[u8],
        keep_conn: bool,
    ) -> Result<(), u32> {
        let parsed = parse_head(status, headers);
        let mut st = self.lock();
        if st.headers_sent {
            drop(st);
            self.violation("the response headers were sent twice");
            return Err(ERROR_INVALID_PARAMETER);
        }
        let head = match parsed {
            Ok(h) => h,
            Err(why) => {
                drop(st);
                self.violation(&format!("unusable response headers: {why}"));
                return Err(ERROR_INVALID_PARAMETER);
            }
        };
        st.headers_sent = true;
        st.keep_conn = keep_conn;
        st.held_head = Some(head);
        Ok(())
    }

    /// Ends an outstanding read with `ERROR_OPERATION_ABORTED` (on a
    /// simulator thread), as IIS does when the client goes away.
    pub(crate) fn abort_read(&self) {
        if let Some(cancel) = self.lock().cancel.take() {
            let _ = cancel.send(());
        }
    }

    /// `HSE_REQ_CANCEL_IO`; `false` when the host does not support it. An
    /// outstanding read ends with `ERROR_OPERATION_ABORTED` — inside this
    /// call when completions are inline.
    pub(crate) fn cancel_io(&self) -> bool {
        if self.shared.config.variation.no_cancel_io {
            self.unsupported(iis_sys::httpext::HSE_REQ_CANCEL_IO);
            return false;
        }
        let (cancel, op, completion, ecb) = {
            let mut st = self.lock();
            (st.cancel.take(), st.op, st.completion, st.ecb_ptr)
        };
        let Some(cancel) = cancel else {
            return true;
        };
        if self.shared.complete_inline() {
            if let (Some(completion), Some(ecb)) = (completion, ecb) {
                if self.claim(op) {
                    let _ = cancel.send(());
                    deliver(completion, ecb, Err(ERROR_OPERATION_ABORTED));
                    return true;
                }
            }
        }
        let _ = cancel.send(());
        true
    }

    /// `HSE_REQ_CLOSE_CONNECTION`; `false` when the host does not support
    /// it.
    pub(crate) fn close_connection(&self) -> bool {
        if self.shared.config.variation.no_close_connection {
            self.unsupported(iis_sys::httpext::HSE_REQ_CLOSE_CONNECTION);
            return false;
        }
        self.force_close();
        true
    }

    /// Closes the client's connection (the response ends unfinished).
    pub(crate) fn force_close(&self) {
        let tx = {
            let mut st = self.lock();
            st.keep_conn = false;
            st.release_head();
            st.body_tx.take()
        };
        self.disconnected.store(true, Ordering::Release);
        if let Some(tx) = tx {
            let _ = tx.send(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the extension closed the connection",
            )));
        }
    }

    /// `HSE_REQ_DONE_WITH_SESSION` (`status` from its buffer), the end of
    /// a request `HttpExtensionProc` completed synchronously, or a native
    /// module's final status (`what` names the call, for violations).
    pub(crate) fn done(&self, status: Option<u32>, what: &str) -> Result<(), u32> {
        let storage = {
            let mut st = self.lock();
            if st.done {
                drop(st);
                self.violation(&format!("{what} came twice"));
                return Err(ERROR_INVALID_PARAMETER);
            }
            st.done = true;
            self.ended.store(true, Ordering::Release);
            if let Some(s) = status {
                st.keep_conn &= s == HSE_STATUS_SUCCESS_AND_KEEP_CONN;
            }
            st.release_head();
            st.head_tx = None;
            // Dropping the sender ends the response body.
            st.body_tx = None;
            if let Some(op) = st.pending.filter(|_| self.native.is_none()) {
                drop(st);
                self.violation(&format!("{what} with an asynchronous {op} outstanding"));
                None
            } else {
                st.ecb_ptr = None;
                st.ecb.take()
            }
        };
        self.shared
            .requests
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.seq);
        self.shared
            .counters
            .sessions_ended
            .fetch_add(1, Ordering::AcqRel);
        // The ECB is freed here: any later use of its handle is caught by
        // the registry.
        drop(storage);
        Ok(())
    }
}

/// Calls the extension's completion routine: `transferred` bytes, or the
/// error.
fn deliver(completion: ffi::Completion, ecb: ffi::EcbPtr, result: Result<u32, u32>) {
    let (n, err) = match result {
        Ok(n) => (n, 0),
        Err(e) => (0, e),
    };
    completion.deliver(ecb, n, err);
}

pub(crate) fn parse_head(status: &[u8], headers: &[u8]) -> Result<Head, String> {
    let status = std::str::from_utf8(status).map_err(|_| "the status is not text")?;
    let code = status
        .split(' ')
        .next()
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| format!("bad status line {status:?}"))?;
    // The values share one copy of the block.
    let block = Bytes::copy_from_slice(headers);
    let mut out = http::HeaderMap::new();
    let mut rest = &block[..];
    loop {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("the header block does not end with an empty line")?;
        let line = &rest[..end];
        rest = &rest[end + 2..];
        if line.is_empty() {
            break;
        }
        let colon = line.iter().position(|&b| b == b':').ok_or_else(|| {
            format!(
                "header line without a colon: {:?}",
                String::from_utf8_lossy(line)
            )
        })?;
        let name = HeaderName::from_bytes(&line[..colon]).map_err(|e| e.to_string())?;
        let value = block.slice_ref(line[colon + 1..].trim_ascii());
        let value = HeaderValue::from_maybe_shared(value).map_err(|e| e.to_string())?;
        out.append(name, value);
    }
    if !rest.is_empty() {
        return Err("bytes after the header block's empty line".into());
    }
    Ok(Head {
        status: code,
        headers: out,
    })
}
