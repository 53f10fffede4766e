//! One request through `IHttpContext`: the calls into IIS, the one
//! outstanding asynchronous operation and its buffers, and the end of the
//! request.
//!
//! The module's `OnExecuteRequestHandler` returns `RQ_NOTIFICATION_PENDING`;
//! from then on IIS reports every asynchronous completion through
//! `OnAsyncCompletion` on one of its threads ([`Shared::on_completion`]).
//! The request ends when the engine calls [`IisRequest::done`], in one of
//! three ways: if the handler has not returned yet, it returns
//! `RQ_NOTIFICATION_FINISH_REQUEST` itself ([`Shared::handler_returns`]);
//! if an operation is outstanding, its `OnAsyncCompletion` answers
//! `RQ_NOTIFICATION_FINISH_REQUEST`; otherwise the module calls
//! `IndicateCompletion(RQ_NOTIFICATION_FINISH_REQUEST)`, which resumes IIS's
//! pipeline on the calling thread (as the ISAPI host's
//! `HSE_REQ_DONE_WITH_SESSION` does). After that nothing here touches the
//! context again.
//!
//! Longer than ~600 lines on purpose: every call into IIS's per-request
//! objects, and so every `unsafe` block of a request's path, sits in this
//! one file, to be reviewed together.

use std::ffi::{c_void, CStr};
use std::io;
use std::ptr::{self, NonNull};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use http::StatusCode;
use tokio::sync::oneshot;

use super::*;
use crate::request::{RawHead, RawUser};

type Done<T> = oneshot::Sender<Result<T, HRESULT>>;

/// The asynchronous operation IIS is working on, with what it must keep
/// alive until the completion arrives.
enum Pending {
    Read {
        buf: Vec<u8>,
        tx: Done<Bytes>,
    },
    Flush {
        tx: Done<u32>,
    },
    Write {
        _data: Bytes,
        _chunk: Box<HTTP_DATA_CHUNK>,
        len: u32,
        tx: Done<u32>,
    },
}

#[derive(Default)]
struct IoSlot {
    pending: Option<Pending>,
    /// The engine asked to end the request (with keep-alive or not).
    done: Option<bool>,
    /// `OnExecuteRequestHandler` returned `RQ_NOTIFICATION_PENDING`: from
    /// then on the request may be completed with `IndicateCompletion`.
    handler_returned: bool,
}

/// What a request's module object and its [`NativeRequest`] share.
pub(crate) struct Shared {
    ctx: NonNull<Object>,
    request: NonNull<Object>,
    response: NonNull<Object>,
    /// Set once the final status went back to IIS: the context is gone.
    ended: RwLock<bool>,
    slot: Mutex<IoSlot>,
    /// Counts the request as open for termination until IIS has its final
    /// status.
    session: Mutex<Option<host_iis::SessionGuard>>,
}

// SAFETY: IIS's request objects may be called from any thread while the
// request is pending; `ended` guards the end of their life and `slot` every
// mutable state.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

pub(crate) fn failed(hr: HRESULT) -> io::Error {
    let code = hr as u32;
    let kind = match code & 0xFFFF {
        ERROR_CONNECTION_ABORTED | ERROR_NETNAME_DELETED | ERROR_OPERATION_ABORTED
            if code & 0xFFFF_0000 == 0x8007_0000 =>
        {
            io::ErrorKind::ConnectionAborted
        }
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("IIS reported HRESULT {code:#010x}"))
}

pub(crate) fn ended() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the request with IIS has ended",
    )
}

/// A NUL-terminated UTF-16 string from IIS, or `None` for a null pointer.
///
/// # Safety
/// `p` is null or points to a NUL-terminated UTF-16 string.
unsafe fn wide(p: PCWSTR) -> Option<String> {
    if p.is_null() {
        return None;
    }
    let mut n = 0;
    // SAFETY: the string is NUL-terminated (the caller's promise).
    while unsafe { *p.add(n) } != 0 {
        n += 1;
    }
    // SAFETY: `n` units were just read.
    Some(String::from_utf16_lossy(unsafe {
        std::slice::from_raw_parts(p, n)
    }))
}

/// The IPv4 or IPv6 address at `p`; `None` for null or another family.
///
/// # Safety
/// `p` is null or points to a `SOCKADDR` whose `sa_family` says how long it
/// is: a whole `SOCKADDR_IN` for `AF_INET`, `SOCKADDR_IN6` for `AF_INET6`.
unsafe fn socket_addr(p: *const c_void) -> Option<std::net::SocketAddr> {
    if p.is_null() {
        return None;
    }
    // SAFETY: every SOCKADDR starts with its family.
    match unsafe { p.cast::<USHORT>().read_unaligned() } {
        AF_INET => {
            // SAFETY: the family says a SOCKADDR_IN is there.
            let a = unsafe { p.cast::<SOCKADDR_IN>().read_unaligned() };
            Some((a.sin_addr, u16::from_be(a.sin_port)).into())
        }
        AF_INET6 => {
            // SAFETY: the family says a SOCKADDR_IN6 is there.
            let a = unsafe { p.cast::<SOCKADDR_IN6>().read_unaligned() };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr);
            let port = u16::from_be(a.sin6_port);
            // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d;
            // REMOTE_ADDR gives them as IPv4, and so does this.
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => (v4, port).into(),
                None => std::net::SocketAddrV6::new(ip, port, 0, a.sin6_scope_id).into(),
            })
        }
        _ => None,
    }
}

/// `len` bytes at `p` (not NUL-terminated), empty for a null pointer.
///
/// # Safety
/// `p` is null or points to `len` readable bytes that stay valid and
/// unchanged for `'a`.
unsafe fn bytes_at<'a>(p: PCSTR, len: usize) -> &'a [u8] {
    if p.is_null() || len == 0 {
        return &[];
    }
    // SAFETY: the caller's promise.
    unsafe { std::slice::from_raw_parts(p, len) }
}

impl Shared {
    /// The request's objects, taken from its context.
    ///
    /// # Safety
    /// `ctx` is the `IHttpContext` IIS passed to the running notification.
    pub(crate) unsafe fn new(ctx: *mut Object) -> Option<Arc<Shared>> {
        let ctx = NonNull::new(ctx)?;
        // SAFETY: a live context (the caller's promise); both slots take no
        // argument and return the context's own objects.
        let (request, response) = unsafe {
            (
                vcall!(ctx.as_ptr(), CONTEXT_GET_REQUEST, fn() -> *mut Object;),
                vcall!(ctx.as_ptr(), CONTEXT_GET_RESPONSE, fn() -> *mut Object;),
            )
        };
        Some(Arc::new(Shared {
            ctx,
            request: NonNull::new(request)?,
            response: NonNull::new(response)?,
            ended: RwLock::new(false),
            slot: Mutex::new(IoSlot::default()),
            session: Mutex::new(None),
        }))
    }

    /// Keeps `guard` until the request's final status goes back to IIS.
    pub(crate) fn hold(&self, guard: host_iis::SessionGuard) {
        *self.session.lock().unwrap_or_else(|e| e.into_inner()) = Some(guard);
    }

    fn lock_slot(&self) -> std::sync::MutexGuard<'_, IoSlot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` unless the request has ended (checked under the lock that
    /// ending takes, so the objects stay valid during `f`).
    fn live<T>(&self, f: impl FnOnce() -> T) -> Option<T> {
        let ended = self.ended.read().unwrap_or_else(|e| e.into_inner());
        if *ended {
            return None;
        }
        Some(f())
    }

    /// The request head as IIS parsed it (read on the IIS thread, in the
    /// notification), copied into one block. `None` if IIS gives no request.
    pub(crate) fn raw_head(&self) -> Option<RawHead> {
        let req = self.request.as_ptr();
        // SAFETY: the request object is live during the notification; the
        // method is a NUL-terminated string IIS owns.
        let method = unsafe {
            let m = vcall!(req, REQUEST_GET_HTTP_METHOD, fn() -> PCSTR;);
            if m.is_null() {
                return None;
            }
            CStr::from_ptr(m.cast()).to_bytes()
        };
        // SAFETY: as above; the raw request lives as long as the request.
        let raw = unsafe { vcall!(req, REQUEST_GET_RAW_HTTP_REQUEST, fn() -> *mut HTTP_REQUEST;) };
        if raw.is_null() {
            return None;
        }
        // SAFETY: non-null, IIS's own HTTP_REQUEST for this request.
        let raw = unsafe { &*raw };
        let known = || {
            raw.Headers
                .KnownHeaders
                .iter()
                .enumerate()
                .filter(|(_, h)| h.RawValueLength > 0 && !h.pRawValue.is_null())
        };
        let unknown: &[HTTP_UNKNOWN_HEADER] = if raw.Headers.pUnknownHeaders.is_null() {
            &[]
        } else {
            // SAFETY: `UnknownHeaderCount` entries at `pUnknownHeaders`.
            unsafe {
                std::slice::from_raw_parts(
                    raw.Headers.pUnknownHeaders,
                    raw.Headers.UnknownHeaderCount as usize,
                )
            }
        };
        let room = known()
            .map(|(_, h)| usize::from(h.RawValueLength))
            .sum::<usize>()
            + unknown
                .iter()
                .map(|h| usize::from(h.NameLength) + usize::from(h.RawValueLength))
                .sum::<usize>();
        // SAFETY: the raw URL with its length.
        let raw_url = unsafe { bytes_at(raw.pRawUrl, raw.RawUrlLength as usize) };
        let mut head = RawHead::new(method, raw_url, room);
        for (id, h) in known() {
            // SAFETY: IIS gives the value's length; values are not
            // NUL-terminated.
            let value = unsafe { bytes_at(h.pRawValue, h.RawValueLength as usize) };
            head.push_known(REQUEST_HEADER_NAMES[id], value);
        }
        for h in unknown {
            // SAFETY: names and values with their lengths.
            let (name, value) = unsafe {
                (
                    bytes_at(h.pName, h.NameLength as usize),
                    bytes_at(h.pRawValue, h.RawValueLength as usize),
                )
            };
            head.push(name, value);
        }
        if raw_url.first() != Some(&b'/') {
            // The target comes from the cooked URL (UTF-16, byte lengths,
            // pointing into the full URL).
            let cooked = &raw.CookedUrl;
            // SAFETY: `bytes` bytes of UTF-16 at `p`, when not null.
            let units = |p: PCWSTR, bytes: USHORT| unsafe {
                if p.is_null() {
                    String::new()
                } else {
                    String::from_utf16_lossy(std::slice::from_raw_parts(p, bytes as usize / 2))
                }
            };
            head.cooked_path = units(cooked.pAbsPath, cooked.AbsPathLength);
            head.cooked_query = units(cooked.pQueryString, cooked.QueryStringLength);
        }
        head.version = (raw.Version.MajorVersion, raw.Version.MinorVersion);
        // SAFETY: a request object method without arguments.
        head.remaining = unsafe { vcall!(req, REQUEST_GET_REMAINING_ENTITY_BYTES, fn() -> DWORD;) };
        Some(head)
    }

    /// The remote and the local address (`GetRemoteAddress`,
    /// `GetLocalAddress`), when IIS gives both as IPv4 or IPv6 addresses.
    pub(crate) fn addresses(&self) -> Option<(std::net::SocketAddr, std::net::SocketAddr)> {
        let req = self.request.as_ptr();
        // SAFETY: request methods without arguments; each returns null or
        // a SOCKADDR IIS owns for the request's life.
        let (remote, local) = unsafe {
            (
                vcall!(req, REQUEST_GET_REMOTE_ADDRESS, fn() -> *const c_void;),
                vcall!(req, REQUEST_GET_LOCAL_ADDRESS, fn() -> *const c_void;),
            )
        };
        // SAFETY: as above: null, or a SOCKADDR whose family says its type.
        unsafe { Some((socket_addr(remote)?, socket_addr(local)?)) }
    }

    /// The user IIS authenticated (`IHttpUser`), if any.
    pub(crate) fn user(&self) -> Option<RawUser> {
        // SAFETY: a context method without arguments; the user (possibly
        // null) lives as long as the request.
        let user = unsafe { vcall!(self.ctx.as_ptr(), CONTEXT_GET_USER, fn() -> *mut Object;) };
        if user.is_null() {
            return None;
        }
        // SAFETY: a live user object; both return IIS-owned NUL-terminated
        // UTF-16 strings (or null).
        let (name, scheme) = unsafe {
            (
                wide(vcall!(user, USER_GET_USER_NAME, fn() -> PCWSTR;)),
                wide(vcall!(user, USER_GET_AUTHENTICATION_TYPE, fn() -> PCWSTR;)),
            )
        };
        Some(RawUser {
            name: name.unwrap_or_default(),
            scheme: scheme.unwrap_or_default(),
        })
    }

    /// A server variable through the narrow or wide `GetServerVariable`,
    /// handed to `take` without its terminating NUL while IIS's copy is
    /// borrowed.
    fn variable<T: Copy + Default + PartialEq, R>(
        &self,
        name: &str,
        slot: Slot,
        take: impl FnOnce(&[T]) -> R,
    ) -> Option<R> {
        host_iis::variables::with_nul_terminated(name, |name_z| self.variable_z(name_z, slot, take))
            .flatten()
    }

    /// [`variable`](Self::variable) with the name NUL-terminated.
    fn variable_z<T: Copy + Default + PartialEq, R>(
        &self,
        name_z: &[u8],
        slot: Slot,
        take: impl FnOnce(&[T]) -> R,
    ) -> Option<R> {
        self.live(|| {
            let mut value: *const T = ptr::null();
            let mut len: DWORD = 0;
            // SAFETY: a NUL-terminated name; IIS writes a pointer to its own
            // copy of the value and the value's length in characters.
            let hr = unsafe {
                vcall!(self.ctx.as_ptr(), slot, fn(PCSTR, *mut *const T, *mut DWORD) -> HRESULT;
                    name_z.as_ptr(), &mut value, &mut len)
            };
            if hr < 0 || value.is_null() {
                return None;
            }
            // SAFETY: `len` characters at `value`, owned by IIS for the
            // request's life.
            let v = unsafe { std::slice::from_raw_parts(value, len as usize) };
            let v = v.strip_suffix(&[T::default()]).unwrap_or(v);
            Some(take(v))
        })
        .flatten()
    }

    /// Starts an asynchronous operation with `pending` in the slot, by
    /// `start` (which returns the HRESULT and whether a completion will
    /// come). A synchronous completion is taken back out of the slot and
    /// returned as `Ok(Some(pending))` with the count IIS reported.
    fn start(
        &self,
        pending: Pending,
        start: impl FnOnce() -> (HRESULT, u32, bool),
    ) -> io::Result<Option<(Pending, u32, HRESULT)>> {
        {
            let mut slot = self.lock_slot();
            if slot.done.is_some() {
                return Err(ended());
            }
            if slot.pending.is_some() {
                return Err(io::Error::other(
                    "an asynchronous operation is already outstanding",
                ));
            }
            slot.pending = Some(pending);
        }
        // The slot's lock is not held: the completion may arrive on an IIS
        // thread before the call returns.
        let Some((hr, n, expected)) = self.live(start) else {
            self.lock_slot().pending = None;
            return Err(ended());
        };
        if hr < 0 || !expected {
            // Finished (or failed) in the call: no completion will come.
            let pending = self.lock_slot().pending.take();
            return match pending {
                Some(p) => Ok(Some((p, n, hr))),
                None => Err(io::Error::other("IIS completed an operation twice")),
            };
        }
        Ok(None)
    }

    /// What `OnExecuteRequestHandler` returns once the request started: the
    /// end, if the engine finished the request before the handler returned
    /// (and no operation is outstanding), otherwise `PENDING`.
    pub(crate) fn handler_returns(&self) -> i32 {
        let mut slot = self.lock_slot();
        match slot.done {
            Some(keep) if slot.pending.is_none() => {
                drop(slot);
                let status = self.finish(keep);
                self.release_session();
                status
            }
            _ => {
                slot.handler_returned = true;
                RQ_NOTIFICATION_PENDING
            }
        }
    }

    /// `OnAsyncCompletion`: an I/O completion. Returns the notification
    /// status for IIS.
    pub(crate) fn on_completion(&self, bytes: u32, status: HRESULT) -> i32 {
        let (pending, done) = {
            let mut slot = self.lock_slot();
            (slot.pending.take(), slot.done)
        };
        match pending {
            Some(p) => {
                deliver(p, bytes, status);
                match done {
                    // The end was asked for while this was outstanding.
                    Some(keep) => {
                        let status = self.finish(keep);
                        self.release_session();
                        status
                    }
                    None => RQ_NOTIFICATION_PENDING,
                }
            }
            None => {
                tracing::error!(
                    bytes,
                    status,
                    "IIS delivered a completion with nothing outstanding"
                );
                RQ_NOTIFICATION_PENDING
            }
        }
    }

    /// The last word: marks the request ended and tells IIS to finish it.
    fn finish(&self, keep: bool) -> i32 {
        let mut ended = self.ended.write().unwrap_or_else(|e| e.into_inner());
        if !*ended && !keep {
            // SAFETY: still live (checked under the write lock).
            unsafe {
                vcall!(self.response.as_ptr(), RESPONSE_SET_NEED_DISCONNECT, fn(););
            }
        }
        *ended = true;
        RQ_NOTIFICATION_FINISH_REQUEST
    }

    /// The request no longer counts as open: its final status is on its way
    /// back to IIS (the caller returns it, or has passed it on).
    fn release_session(&self) {
        drop(
            self.session
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
    }
}

/// Hands a completed operation's result to the waiting future.
fn deliver(pending: Pending, bytes: u32, status: HRESULT) {
    match pending {
        Pending::Read { mut buf, tx } => {
            let r = if status == hresult_from_win32(ERROR_HANDLE_EOF) {
                Ok(Bytes::new())
            } else if status < 0 {
                Err(status)
            } else {
                buf.truncate((bytes as usize).min(buf.len()));
                Ok(Bytes::from(buf))
            };
            let _ = tx.send(r);
        }
        Pending::Flush { tx } => {
            let _ = tx.send(if status < 0 { Err(status) } else { Ok(0) });
        }
        Pending::Write { len, tx, .. } => {
            let _ = tx.send(if status < 0 {
                Err(status)
            } else {
                Ok(bytes.min(len))
            });
        }
    }
}

/// A request as the in-process engine drives it.
#[derive(Clone)]
pub(crate) struct NativeRequest {
    pub(crate) shared: Arc<Shared>,
}

impl NativeRequest {
    pub(crate) fn read_start(
        &self,
        max: usize,
    ) -> io::Result<oneshot::Receiver<Result<Bytes, HRESULT>>> {
        let (tx, rx) = oneshot::channel();
        let mut buf = vec![0u8; max.max(1)];
        let ptr = buf.as_mut_ptr();
        let len = buf.len() as DWORD;
        let req = self.shared.request.as_ptr();
        let sync = self.shared.start(Pending::Read { buf, tx }, || {
            let mut got: DWORD = 0;
            let mut pending: BOOL = FALSE;
            // SAFETY: the buffer lives in the slot until the completion (or
            // is taken back right after a synchronous one).
            let hr = unsafe {
                vcall!(req, REQUEST_READ_ENTITY_BODY, fn(*mut c_void, DWORD, BOOL, *mut DWORD, *mut BOOL) -> HRESULT;
                    ptr.cast(), len, TRUE, &mut got, &mut pending)
            };
            (hr, got, pending != FALSE)
        })?;
        if let Some((p, n, hr)) = sync {
            deliver(p, n, hr);
        }
        Ok(rx)
    }

    pub(crate) fn write_start(
        &self,
        data: Bytes,
    ) -> io::Result<oneshot::Receiver<Result<u32, HRESULT>>> {
        let (tx, rx) = oneshot::channel();
        let len = u32::try_from(data.len()).map_err(io::Error::other)?;
        let mut chunk = Box::new(HTTP_DATA_CHUNK::from_memory(
            data.as_ptr() as *mut c_void,
            len,
        ));
        let chunk_ptr: *mut HTTP_DATA_CHUNK = &mut *chunk;
        let resp = self.shared.response.as_ptr();
        let pending = Pending::Write {
            _data: data,
            _chunk: chunk,
            len,
            tx,
        };
        let sync = self.shared.start(pending, || {
            let mut sent: DWORD = 0;
            let mut expected: BOOL = FALSE;
            // SAFETY: the chunk and the bytes it points to live in the slot
            // until the completion (or are taken back right after a
            // synchronous one).
            let hr = unsafe {
                vcall!(resp, RESPONSE_WRITE_ENTITY_CHUNKS, fn(*mut HTTP_DATA_CHUNK, DWORD, BOOL, BOOL, *mut DWORD, *mut BOOL) -> HRESULT;
                    chunk_ptr, 1, TRUE, TRUE, &mut sent, &mut expected)
            };
            (hr, sent, expected != FALSE)
        })?;
        if let Some((p, n, hr)) = sync {
            deliver(p, n, hr);
        }
        Ok(rx)
    }

    pub(crate) fn flush_start(&self) -> io::Result<oneshot::Receiver<Result<u32, HRESULT>>> {
        let (tx, rx) = oneshot::channel();
        let resp = self.shared.response.as_ptr();
        let sync = self.shared.start(Pending::Flush { tx }, || {
            let mut sent: DWORD = 0;
            let mut expected: BOOL = FALSE;
            // SAFETY: a response method taking flags and two out-values.
            let hr = unsafe {
                vcall!(resp, RESPONSE_FLUSH, fn(BOOL, BOOL, *mut DWORD, *mut BOOL) -> HRESULT;
                    TRUE, TRUE, &mut sent, &mut expected)
            };
            (hr, sent, expected != FALSE)
        })?;
        if let Some((p, n, hr)) = sync {
            deliver(p, n, hr);
        }
        Ok(rx)
    }

    /// A synchronous write: short error pages, and a response's short last
    /// piece.
    pub(crate) fn write_sync(&self, data: &[u8]) -> io::Result<()> {
        let len = u32::try_from(data.len()).map_err(io::Error::other)?;
        let mut chunk = HTTP_DATA_CHUNK::from_memory(data.as_ptr() as *mut c_void, len);
        let resp = self.shared.response.as_ptr();
        let hr = self
            .shared
            .live(|| {
                let mut sent: DWORD = 0;
                // SAFETY: the chunk and the data outlive the synchronous call.
                unsafe {
                    vcall!(resp, RESPONSE_WRITE_ENTITY_CHUNKS, fn(*mut HTTP_DATA_CHUNK, DWORD, BOOL, BOOL, *mut DWORD, *mut BOOL) -> HRESULT;
                        &mut chunk, 1, FALSE, FALSE, &mut sent, ptr::null_mut())
                }
            })
            .ok_or_else(ended)?;
        if hr < 0 {
            Err(failed(hr))
        } else {
            Ok(())
        }
    }

    pub(crate) fn set_status(&self, status: StatusCode) -> HRESULT {
        let reason = status.canonical_reason().unwrap_or("");
        let mut reason_z = Vec::with_capacity(reason.len() + 1);
        reason_z.extend_from_slice(reason.as_bytes());
        reason_z.push(0);
        let resp = self.shared.response.as_ptr();
        self.shared
            .live(|| {
                // SAFETY: every argument given (C++ defaults do not exist in
                // the ABI); the reason is NUL-terminated and outlives the call.
                unsafe {
                    vcall!(resp, RESPONSE_SET_STATUS, fn(USHORT, PCSTR, USHORT, HRESULT, *mut c_void, BOOL) -> HRESULT;
                        status.as_u16(), reason_z.as_ptr(), 0, S_OK, ptr::null_mut(), FALSE)
                }
            })
            .unwrap_or(E_FAIL)
    }

    /// `SetHeader` with the name and the value each NUL-terminated
    /// (`value_z` is the value's `len` bytes and its NUL).
    pub(crate) fn set_header_z(&self, name_z: &[u8], value_z: &[u8], replace: bool) -> HRESULT {
        debug_assert!(name_z.last() == Some(&0) && value_z.last() == Some(&0));
        let Ok(len) = USHORT::try_from(value_z.len() - 1) else {
            return E_INVALIDARG;
        };
        let resp = self.shared.response.as_ptr();
        self.shared
            .live(|| {
                // SAFETY: NUL-terminated name, value with its length (and a
                // NUL after it), both outliving the call.
                unsafe {
                    vcall!(resp, RESPONSE_SET_HEADER, fn(PCSTR, PCSTR, USHORT, BOOL) -> HRESULT;
                        name_z.as_ptr(), value_z.as_ptr(), len, if replace { TRUE } else { FALSE })
                }
            })
            .unwrap_or(E_FAIL)
    }

    fn call_void(&self, obj: NonNull<Object>, slot: Slot) {
        self.shared.live(|| {
            // SAFETY: a live object; the slot takes no argument and returns
            // nothing (callers pass only such slots).
            unsafe { vcall!(obj.as_ptr(), slot, fn();) }
        });
    }

    /// `SetNeedDisconnect`: the connection closes after this response.
    pub(crate) fn set_need_disconnect(&self) {
        self.call_void(self.shared.response, RESPONSE_SET_NEED_DISCONNECT);
    }

    /// `DisableBuffering`: each write goes out as it is made.
    pub(crate) fn disable_buffering(&self) {
        self.call_void(self.shared.response, RESPONSE_DISABLE_BUFFERING);
    }

    /// `CloseConnection`.
    pub(crate) fn close(&self) {
        self.call_void(self.shared.response, RESPONSE_CLOSE_CONNECTION);
    }

    /// `Clear`: drops what the response holds so far.
    pub(crate) fn clear(&self) {
        self.call_void(self.shared.response, RESPONSE_CLEAR);
    }

    /// Whether IIS says the client is still connected.
    pub(crate) fn connected(&self) -> bool {
        let ctx = self.shared.ctx.as_ptr();
        self.shared
            .live(|| {
                // SAFETY: a context method without arguments; the connection
                // lives as long as the request.
                let conn = unsafe { vcall!(ctx, CONTEXT_GET_CONNECTION, fn() -> *mut Object;) };
                // SAFETY: a live connection object.
                !conn.is_null()
                    && unsafe { vcall!(conn, CONNECTION_IS_CONNECTED, fn() -> BOOL;) } != FALSE
            })
            .unwrap_or(false)
    }

    /// `CancelIo`, when an operation is outstanding.
    pub(crate) fn cancel(&self) {
        if self.shared.lock_slot().pending.is_some() {
            let ctx = self.shared.ctx.as_ptr();
            self.shared.live(|| {
                // SAFETY: a context method without arguments.
                unsafe { vcall!(ctx, CONTEXT_CANCEL_IO, fn() -> HRESULT;) }
            });
        }
    }

    /// Ends the request with IIS exactly once: now through
    /// `IndicateCompletion` when nothing is outstanding and the handler has
    /// returned; otherwise when the outstanding operation completes, or as
    /// the handler's return value.
    pub(crate) fn end(&self, keep_conn: bool) {
        {
            let mut slot = self.shared.lock_slot();
            if slot.done.is_some() {
                return;
            }
            slot.done = Some(keep_conn);
            if slot.pending.is_some() {
                // The request ends when the outstanding operation completes.
                drop(slot);
                self.cancel();
                return;
            }
            if !slot.handler_returned {
                // The handler has not returned: it ends the request itself
                // (`handler_returns`).
                return;
            }
        }
        let ctx = self.shared.ctx.as_ptr();
        let status = self.shared.finish(keep_conn);
        // SAFETY: the context is valid for this one call: IIS has not been
        // told the request ended, and no notification for it is running
        // (the handler returned PENDING, nothing is outstanding).
        unsafe { vcall!(ctx, CONTEXT_INDICATE_COMPLETION, fn(i32); status) };
        self.shared.release_session();
    }

    /// A server variable through `GetServerVariable` (8-bit) or its wide
    /// form, handed to `take` while IIS's buffer is valid.
    pub(crate) fn variable8<R>(&self, name: &str, take: impl FnOnce(&[u8]) -> R) -> Option<R> {
        self.shared
            .variable(name, CONTEXT_GET_SERVER_VARIABLE, take)
    }

    /// The wide form of [`variable8`](Self::variable8).
    pub(crate) fn variable16<R>(&self, name: &str, take: impl FnOnce(&[u16]) -> R) -> Option<R> {
        self.shared
            .variable(name, CONTEXT_GET_SERVER_VARIABLE_WIDE, take)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(p: *const c_void) -> Option<std::net::SocketAddr> {
        // SAFETY: the tests pass null or a whole address of the family it
        // names.
        unsafe { socket_addr(p) }
    }

    #[test]
    fn windows_socket_addresses_are_read_in_network_order() {
        let v4 = SOCKADDR_IN {
            sin_family: AF_INET,
            sin_port: 50123u16.to_be(),
            sin_addr: [192, 0, 2, 1],
            ..Default::default()
        };
        assert_eq!(
            read((&raw const v4).cast()),
            Some("192.0.2.1:50123".parse().unwrap())
        );
        let v6 = SOCKADDR_IN6 {
            sin6_family: AF_INET6,
            sin6_port: 443u16.to_be(),
            sin6_addr: "2001:db8::7"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
            sin6_scope_id: 3,
            ..Default::default()
        };
        let read_v6 = read((&raw const v6).cast()).unwrap();
        assert_eq!(read_v6, "[2001:db8::7%3]:443".parse().unwrap());
        let mapped = SOCKADDR_IN6 {
            sin6_addr: "::ffff:198.51.100.9"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
            ..v6
        };
        assert_eq!(
            read((&raw const mapped).cast()),
            Some("198.51.100.9:443".parse().unwrap()),
            "an IPv4 client of a dual-stack listener is an IPv4 address"
        );
        // Linux's AF_INET6 (10) is not Windows': an unknown family.
        let linux = SOCKADDR_IN6 {
            sin6_family: 10,
            ..v6
        };
        assert_eq!(read((&raw const linux).cast()), None);
        assert_eq!(read(ptr::null()), None);
    }
}
