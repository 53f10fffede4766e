//! One request's `EXTENSION_CONTROL_BLOCK`, behind a safe handle.
//!
//! [`Connection`] is the only way the rest of the crate reaches IIS for a
//! request. It keeps the rules IIS sets:
//!
//! - at most one asynchronous operation at a time (one completion callback per
//!   request), with its buffer owned here until the completion arrives — even
//!   when the future that started it has been dropped;
//! - the request ends exactly once: by `HttpExtensionProc`'s return value
//!   when it finished inside the call without starting asynchronous I/O,
//!   otherwise by `HSE_REQ_DONE_WITH_SESSION` — only when no operation is
//!   outstanding (if one is, it is cancelled and the session ends from its
//!   completion);
//! - after that, no call reaches IIS again: the ECB may be gone.
//!
//! Longer than ~600 lines on purpose: every call through the ECB, and so
//! every `unsafe` block of a request's path, sits in this one file, to be
//! reviewed together.

use std::cell::{Cell, RefCell};
use std::ffi::{c_void, CStr};
use std::io;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::LocalKey;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::*;

/// How an asynchronous operation ended: bytes transferred, or the Win32 error.
pub(crate) type IoResult = Result<u32, u32>;

enum Pending {
    Read {
        buf: Vec<u8>,
        tx: oneshot::Sender<Result<Bytes, u32>>,
    },
    Write {
        // Owned until the completion: IIS reads from it until then.
        _buf: Bytes,
        len: u32,
        tx: oneshot::Sender<IoResult>,
    },
}

#[derive(Default)]
struct Slot {
    pending: Option<Pending>,
    /// While an operation is outstanding, the context IIS hands back to the
    /// completion callback must stay alive: this is that reference.
    keep: Option<Arc<Inner>>,
    /// The session's end, waiting for the outstanding operation.
    deferred_done: Option<bool>,
    completion_registered: bool,
}

struct Inner {
    ecb: NonNull<EXTENSION_CONTROL_BLOCK>,
    /// Where the request stands against its `HttpExtensionProc` call
    /// ([`IN_CALL`] and the rest).
    call: AtomicU8,
    /// `true` once `DONE_WITH_SESSION` was sent. Calls into IIS hold the read
    /// side, so the session cannot end in the middle of one.
    done: RwLock<bool>,
    /// The session's end, asked for on a thread that is itself inside a
    /// call into IIS for this request (a completion IIS delivered inline):
    /// [`NO_END`], or the end ([`END_KEEP`], [`END_CLOSE`]) that thread sends
    /// once its call returns.
    end_after_call: AtomicU8,
    slot: Mutex<Slot>,
    /// Counts the request as open for termination until its session ends.
    session: Mutex<Option<host_iis::SessionGuard>>,
}

const NO_END: u8 = 0;
const END_KEEP: u8 = 1;
const END_CLOSE: u8 = 2;

// SAFETY: IIS lets an extension use a request's ECB and its callbacks from any
// thread until DONE_WITH_SESSION; `Inner` guards that end with `done`.
unsafe impl Send for Inner {}
// SAFETY: as above; every mutable state is behind a lock.
unsafe impl Sync for Inner {}

/// The per-thread buffers server variables are first read into.
const SCRATCH_BYTES: usize = 4096;

thread_local! {
    /// The request ([`Inner`]'s address) this thread is calling IIS for,
    /// holding `done`'s read side; 0 when none. IIS may deliver a completion
    /// on the calling thread before the call returns, and that completion
    /// must not wait for the lock its own thread holds.
    static IN_IIS: Cell<usize> = const { Cell::new(0) };
    static BYTES: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_BYTES]);
    static WIDE: RefCell<Vec<u16>> = RefCell::new(vec![0; SCRATCH_BYTES / 2]);
}

/// `HttpExtensionProc` has not returned and nothing asynchronous was started:
/// the request may still end by the call's return value.
const IN_CALL: u8 = 0;
/// The call returns (or returned) `HSE_STATUS_PENDING`: the session ends
/// with `HSE_REQ_DONE_WITH_SESSION`.
const PENDING: u8 = 1;
/// The request ended inside the call, keeping the connection: the call
/// returns `HSE_STATUS_SUCCESS_AND_KEEP_CONN`.
const ENDED_KEEP: u8 = 2;
/// The request ended inside the call, closing the connection: the call
/// returns `HSE_STATUS_SUCCESS`.
const ENDED_CLOSE: u8 = 3;

/// A request's connection to IIS. Cheap to clone; every clone is the same
/// request.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

fn last_error() -> u32 {
    // GetLastError on Windows, errno elsewhere (where the simulator sets it).
    io::Error::last_os_error()
        .raw_os_error()
        .map_or(ERROR_INVALID_PARAMETER, |e| e as u32)
}

/// An IIS error code as an `io::Error`.
pub fn win32_error(code: u32) -> io::Error {
    let kind = match code {
        ERROR_NETNAME_DELETED | ERROR_OPERATION_ABORTED | ERROR_NO_DATA => {
            io::ErrorKind::ConnectionAborted
        }
        ERROR_HANDLE_EOF => io::ErrorKind::UnexpectedEof,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("IIS reported Win32 error {code}"))
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the session with IIS has ended",
    )
}

impl Connection {
    /// Wraps the ECB IIS passed to `HttpExtensionProc`; `None` for a null one.
    ///
    /// # Safety
    /// `ecb` must be the block IIS passed to `HttpExtensionProc`, valid until
    /// `HSE_REQ_DONE_WITH_SESSION` is sent for it, which only
    /// [`Connection::done`] does.
    pub(crate) unsafe fn new(ecb: *mut EXTENSION_CONTROL_BLOCK) -> Option<Connection> {
        let ecb = NonNull::new(ecb)?;
        Some(Connection {
            inner: Arc::new(Inner {
                ecb,
                call: AtomicU8::new(IN_CALL),
                done: RwLock::new(false),
                end_after_call: AtomicU8::new(NO_END),
                slot: Mutex::new(Slot::default()),
                session: Mutex::new(None),
            }),
        })
    }

    /// Runs `f` with the ECB, unless the session has ended. If a completion
    /// IIS delivers inline during `f` ends the session, it ends here, once
    /// `f` has returned.
    fn with_ecb<T>(&self, f: impl FnOnce(&EXTENSION_CONTROL_BLOCK) -> T) -> Option<T> {
        let me = Arc::as_ptr(&self.inner) as usize;
        let outer = IN_IIS.replace(me);
        let r = {
            let done = self.inner.done.read().unwrap_or_else(|e| e.into_inner());
            if *done {
                None
            } else {
                // SAFETY: the session has not ended (checked under the lock
                // that ending it takes), so IIS keeps the ECB valid.
                let ecb = unsafe { self.inner.ecb.as_ref() };
                Some(f(ecb))
            }
        };
        IN_IIS.set(outer);
        if outer != me {
            match self.inner.end_after_call.swap(NO_END, Ordering::AcqRel) {
                END_KEEP => end_session(&self.inner, true),
                END_CLOSE => end_session(&self.inner, false),
                _ => {}
            }
        }
        r
    }

    /// Keeps `guard` until the session ends.
    pub(crate) fn hold(&self, guard: host_iis::SessionGuard) {
        *self.inner.session.lock().unwrap_or_else(|e| e.into_inner()) = Some(guard);
    }

    fn lock_slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.inner.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The request method (`lpszMethod`); `None` if it is not one.
    pub fn method(&self) -> Option<http::Method> {
        self.with_ecb(|ecb| {
            if ecb.lpszMethod.is_null() {
                return None;
            }
            // SAFETY: IIS passes a NUL-terminated method string that lives as
            // long as the ECB.
            let m = unsafe { CStr::from_ptr(ecb.lpszMethod) };
            http::Method::from_bytes(m.to_bytes()).ok()
        })
        .flatten()
    }

    /// The body's declared length (`cbTotalBytes`; [`HSE_UNKNOWN_LENGTH`]
    /// when chunked, or for 4 GiB or more) and a copy of the part IIS read
    /// ahead (`lpbData`, `cbAvailable`).
    pub fn body_start(&self) -> (u32, Bytes) {
        self.with_ecb(|ecb| {
            let n = ecb.cbAvailable.min(ecb.cbTotalBytes) as usize;
            let pre = if n == 0 || ecb.lpbData.is_null() {
                Bytes::new()
            } else {
                // SAFETY: IIS guarantees `cbAvailable` readable bytes at
                // `lpbData` while the ECB is valid.
                Bytes::copy_from_slice(unsafe { std::slice::from_raw_parts(ecb.lpbData, n) })
            };
            (ecb.cbTotalBytes, pre)
        })
        .unwrap_or((0, Bytes::new()))
    }

    /// A server variable's raw value (without its terminating NUL), growing
    /// the buffer as `ERROR_INSUFFICIENT_BUFFER` asks; `None` when IIS does
    /// not know the variable or has no value for it.
    pub fn server_variable(&self, name: &str) -> Option<Vec<u8>> {
        self.negotiate(name, &BYTES, <[u8]>::to_vec)
    }

    /// Appends a server variable's raw value to `out`; `false` (and `out`
    /// unchanged) when IIS has none. Copies from the thread's scratch buffer:
    /// no allocation unless `out` must grow or the value is larger than the
    /// scratch buffer.
    pub fn append_server_variable(&self, name: &str, out: &mut Vec<u8>) -> bool {
        self.negotiate(name, &BYTES, |v| out.extend_from_slice(v))
            .is_some()
    }

    /// A `UNICODE_` server variable (IIS returns UTF-16; sizes are in bytes),
    /// decoded; invalid UTF-16 is replaced, not dropped.
    pub fn unicode_server_variable(&self, name: &str) -> Option<String> {
        self.negotiate(name, &WIDE, String::from_utf16_lossy)
    }

    /// Appends a decoded `UNICODE_` server variable to `out`, as
    /// [`unicode_server_variable`](Self::unicode_server_variable) decodes it;
    /// `false` (and `out` unchanged) when IIS has none.
    pub fn append_unicode_server_variable(&self, name: &str, out: &mut String) -> bool {
        self.negotiate(name, &WIDE, |v: &[u16]| {
            host_iis::variables::push_utf16_lossy(out, v)
        })
        .is_some()
    }

    /// `GetServerVariable` into a buffer of `T` units (bytes, or UTF-16 for
    /// `UNICODE_` names; IIS counts sizes in bytes either way), the value
    /// (without its NUL) handed to `take`: first into the thread's scratch
    /// buffer (most values fit; a request asks for a dozen variables, so it
    /// is reused rather than allocated and cleared each time), then into
    /// the size IIS asks for.
    fn negotiate<T: Copy + Default + PartialEq, R>(
        &self,
        name: &str,
        scratch: &'static LocalKey<RefCell<Vec<T>>>,
        take: impl FnOnce(&[T]) -> R,
    ) -> Option<R> {
        host_iis::variables::with_nul_terminated(name, |name| self.negotiate_z(name, scratch, take))
            .flatten()
    }

    /// [`negotiate`](Self::negotiate) with the name NUL-terminated.
    fn negotiate_z<T: Copy + Default + PartialEq, R>(
        &self,
        name: &mut [u8],
        scratch: &'static LocalKey<RefCell<Vec<T>>>,
        take: impl FnOnce(&[T]) -> R,
    ) -> Option<R> {
        let mut take = Some(take);
        let first = scratch.with(|buf| match buf.try_borrow_mut() {
            Ok(mut buf) => self
                .get_variable(name, &mut buf)
                .map(|n| take.take().map(|take| take(&buf[..n]))),
            // Only if IIS called back into the extension from inside
            // GetServerVariable: a fresh buffer then.
            Err(_) => Err(Some(SCRATCH_BYTES / std::mem::size_of::<T>())),
        });
        let needed = match first {
            Ok(v) => return v,
            Err(needed) => needed?,
        };
        let take = take?;
        let mut buf = vec![T::default(); needed];
        // The value may grow between calls (it does not in practice): a few
        // more tries, each with the size IIS asked for.
        for _ in 0..3 {
            match self.get_variable(name, &mut buf) {
                Ok(n) => return Some(take(&buf[..n])),
                Err(Some(needed)) if needed > buf.len() => buf = vec![T::default(); needed],
                Err(_) => return None,
            }
        }
        None
    }

    /// One `GetServerVariable` call: the value's length in units (without
    /// its terminating NUL) at the start of `buf`, or `Err(Some(units))` when
    /// IIS needs a larger buffer, `Err(None)` when there is no value.
    fn get_variable<T: Copy + Default + PartialEq>(
        &self,
        name: &mut [u8],
        buf: &mut [T],
    ) -> Result<usize, Option<usize>> {
        let unit = std::mem::size_of::<T>();
        let mut size = std::mem::size_of_val(buf) as DWORD;
        let (ok, err) = self
            .with_ecb(|ecb| {
                let get = ecb.GetServerVariable?;
                // SAFETY: the name is NUL-terminated; `size` is the buffer's
                // true length in bytes; both outlive the call.
                let ok = unsafe {
                    get(
                        ecb.ConnID,
                        name.as_mut_ptr().cast(),
                        buf.as_mut_ptr().cast(),
                        &mut size,
                    )
                };
                // The error code matters (and is read) only on failure.
                Some((ok, if ok == FALSE { last_error() } else { 0 }))
            })
            .flatten()
            .ok_or(None)?;
        if ok != FALSE {
            let n = (size as usize / unit).min(buf.len());
            let nul = n > 0 && buf[n - 1] == T::default();
            return Ok(n - usize::from(nul));
        }
        // Values are bounded by IIS's own request limits; refuse anything
        // absurd rather than allocate it.
        if err == ERROR_INSUFFICIENT_BUFFER && size <= 16 * 1024 * 1024 {
            Err(Some((size as usize).div_ceil(unit)))
        } else {
            Err(None)
        }
    }

    fn support(
        &self,
        request: DWORD,
        buffer: *mut c_void,
        size: *mut DWORD,
        data_type: *mut DWORD,
    ) -> io::Result<()> {
        let r = self.with_ecb(|ecb| {
            let Some(ssf) = ecb.ServerSupportFunction else {
                return Err(ERROR_INVALID_PARAMETER);
            };
            // SAFETY: the caller passes the pointers `request` documents,
            // valid for the call (or, for asynchronous requests, owned by
            // the slot until the completion).
            let ok = unsafe { ssf(ecb.ConnID, request, buffer, size, data_type) };
            if ok == FALSE {
                Err(last_error())
            } else {
                Ok(())
            }
        });
        match r {
            None => Err(closed()),
            Some(r) => r.map_err(win32_error),
        }
    }

    /// Registers the completion callback for asynchronous I/O
    /// (`HSE_REQ_IO_COMPLETION`); done once per request, before the first
    /// asynchronous operation.
    fn register_completion(&self) -> io::Result<()> {
        let context = Arc::as_ptr(&self.inner) as *mut DWORD;
        let callback: PFN_HSE_IO_COMPLETION = io_completed;
        self.support(
            HSE_REQ_IO_COMPLETION,
            callback as *mut c_void,
            ptr::null_mut(),
            context,
        )
    }

    /// Starts an asynchronous operation with `pending` in the slot, by `start`.
    /// On failure to start, the slot is cleared and the error returned.
    fn start(&self, pending: Pending, start: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        {
            let mut slot = self.lock_slot();
            if slot.deferred_done.is_some() {
                return Err(closed());
            }
            if slot.pending.is_some() {
                return Err(io::Error::other(
                    "an asynchronous operation is already outstanding",
                ));
            }
            if !slot.completion_registered {
                drop(slot);
                self.register_completion()?;
                slot = self.lock_slot();
                slot.completion_registered = true;
            }
            slot.pending = Some(pending);
            slot.keep = Some(Arc::clone(&self.inner));
        }
        // Asynchronous I/O commits `HttpExtensionProc` to HSE_STATUS_PENDING.
        self.leave_call();
        // The slot's lock is not held: IIS may complete on another thread
        // before the call returns.
        if let Err(e) = start() {
            let mut slot = self.lock_slot();
            slot.pending = None;
            slot.keep = None;
            return Err(e);
        }
        Ok(())
    }

    /// Reads up to `max` bytes of the body asynchronously
    /// (`HSE_REQ_ASYNC_READ_CLIENT`). An empty result is the end of the body.
    /// Dropping the future does not free the buffer before IIS is done.
    pub async fn read(&self, max: usize) -> io::Result<Bytes> {
        let rx = self.start_read(max)?;
        match rx.await {
            Ok(r) => r.map_err(win32_error),
            Err(_) => Err(closed()),
        }
    }

    fn start_read(&self, max: usize) -> io::Result<oneshot::Receiver<Result<Bytes, u32>>> {
        let mut buf = vec![0u8; max.max(1)];
        let ptr = buf.as_mut_ptr();
        let mut size = buf.len() as DWORD;
        let (tx, rx) = oneshot::channel();
        let mut flags: DWORD = HSE_IO_ASYNC;
        self.start(Pending::Read { buf, tx }, || {
            self.support(HSE_REQ_ASYNC_READ_CLIENT, ptr.cast(), &mut size, &mut flags)
        })?;
        Ok(rx)
    }

    /// Writes `data` asynchronously (`WriteClient` with `HSE_IO_ASYNC`).
    pub async fn write(&self, data: Bytes) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let len = u32::try_from(data.len())
            .map_err(|_| io::Error::other("a single write is limited to 4 GiB"))?;
        let rx = self.start_write(data, len)?;
        match rx.await {
            Ok(Ok(n)) if n == len => Ok(()),
            Ok(Ok(n)) => Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("IIS wrote {n} of {len} bytes"),
            )),
            Ok(Err(code)) => Err(win32_error(code)),
            Err(_) => Err(closed()),
        }
    }

    fn start_write(&self, data: Bytes, len: u32) -> io::Result<oneshot::Receiver<IoResult>> {
        let ptr = data.as_ptr();
        let (tx, rx) = oneshot::channel();
        let pending = Pending::Write {
            _buf: data,
            len,
            tx,
        };
        self.start(pending, || {
            let mut n = len;
            let r = self.with_ecb(|ecb| {
                let Some(write) = ecb.WriteClient else {
                    return Err(ERROR_INVALID_PARAMETER);
                };
                // SAFETY: the buffer is owned by the slot until the
                // completion arrives; `n` is its length.
                let ok = unsafe { write(ecb.ConnID, ptr as *mut c_void, &mut n, HSE_IO_ASYNC) };
                if ok == FALSE {
                    Err(last_error())
                } else {
                    Ok(())
                }
            });
            match r {
                None => Err(closed()),
                Some(r) => r.map_err(win32_error),
            }
        })?;
        Ok(rx)
    }

    /// Writes `data` synchronously; for the short error pages sent when the
    /// request could not run at all.
    pub fn write_sync(&self, data: &[u8]) -> io::Result<()> {
        let mut n = u32::try_from(data.len()).map_err(io::Error::other)?;
        let r = self.with_ecb(|ecb| {
            let write = ecb.WriteClient?;
            // SAFETY: `data` outlives the synchronous call.
            let ok = unsafe {
                write(
                    ecb.ConnID,
                    data.as_ptr() as *mut c_void,
                    &mut n,
                    HSE_IO_SYNC,
                )
            };
            Some(if ok == FALSE {
                Err(last_error())
            } else {
                Ok(())
            })
        });
        match r.flatten() {
            None => Err(closed()),
            Some(r) => r.map_err(win32_error),
        }
    }

    /// Sends the status line (`"200 OK"`) and the header block (each header
    /// ending in CRLF, the block in an empty line), and whether IIS may keep
    /// the connection open (`HSE_REQ_SEND_RESPONSE_HEADER_EX`).
    pub fn send_headers(&self, status: &str, headers: &[u8], keep_conn: bool) -> io::Result<()> {
        let mut head = Vec::with_capacity(status.len() + headers.len() + 2);
        head.extend_from_slice(status.as_bytes());
        head.push(0);
        head.extend_from_slice(headers);
        head.push(0);
        self.send_head(&head, status.len(), keep_conn)
    }

    /// [`send_headers`](Self::send_headers) with the status and the header
    /// block already in one buffer: `status\0headers\0`, the status
    /// `status_len` bytes long.
    pub(crate) fn send_head(
        &self,
        head: &[u8],
        status_len: usize,
        keep_conn: bool,
    ) -> io::Result<()> {
        let well_formed = head.len() >= status_len + 2
            && head[status_len] == 0
            && head.last() == Some(&0)
            && !head[..status_len].contains(&0);
        if !well_formed {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a response head is the status and the headers, each NUL-terminated",
            ));
        }
        let headers = &head[status_len + 1..];
        let mut info = HSE_SEND_HEADER_EX_INFO {
            pszStatus: head.as_ptr().cast(),
            pszHeader: headers.as_ptr().cast(),
            cchStatus: status_len as DWORD,
            cchHeader: (headers.len() - 1) as DWORD,
            fKeepConn: if keep_conn { TRUE } else { FALSE },
        };
        self.support(
            HSE_REQ_SEND_RESPONSE_HEADER_EX,
            (&mut info as *mut HSE_SEND_HEADER_EX_INFO).cast(),
            ptr::null_mut(),
            ptr::null_mut(),
        )
    }

    /// Whether the client is still connected (`HSE_REQ_IS_CONNECTED`); an
    /// ended session or a failed call counts as gone.
    pub fn is_connected(&self) -> bool {
        let mut connected: BOOL = FALSE;
        self.support(
            HSE_REQ_IS_CONNECTED,
            (&mut connected as *mut BOOL).cast(),
            ptr::null_mut(),
            ptr::null_mut(),
        )
        .is_ok()
            && connected != FALSE
    }

    /// Cancels the outstanding asynchronous operation, if any
    /// (`HSE_REQ_CANCEL_IO`); its completion still arrives, with an error.
    pub fn cancel_io(&self) {
        if self.lock_slot().pending.is_some() {
            let _ = self.support(
                HSE_REQ_CANCEL_IO,
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
            );
        }
    }

    /// Closes the client's connection (`HSE_REQ_CLOSE_CONNECTION`): for a
    /// response that cannot be finished properly.
    pub fn close_connection(&self) {
        let _ = self.support(
            HSE_REQ_CLOSE_CONNECTION,
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
        );
    }

    /// Settles how `HttpExtensionProc` ends, for the call itself to return:
    /// `HSE_STATUS_PENDING` when the request goes on (or already ended with
    /// `HSE_REQ_DONE_WITH_SESSION`), or the final status when it ended inside
    /// the call — then no `DONE_WITH_SESSION` is sent, and none may be.
    pub(crate) fn call_returns(&self) -> DWORD {
        match self.leave_call() {
            ENDED_KEEP => HSE_STATUS_SUCCESS_AND_KEEP_CONN,
            ENDED_CLOSE => HSE_STATUS_SUCCESS,
            _ => HSE_STATUS_PENDING,
        }
    }

    /// Moves the request out of [`IN_CALL`] to [`PENDING`] unless it ended
    /// already; returns the state it ends up in.
    fn leave_call(&self) -> u8 {
        match self.inner.call.compare_exchange(
            IN_CALL,
            PENDING,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => PENDING,
            Err(now) => now,
        }
    }

    /// Ends the session (`HSE_REQ_DONE_WITH_SESSION`), keeping the connection
    /// open for the next request when `keep_conn`. Exactly once: later calls,
    /// and every other method afterwards, do nothing. If an operation is
    /// outstanding, it is cancelled and the session ends when it completes.
    pub fn done(&self, keep_conn: bool) {
        {
            let mut slot = self.lock_slot();
            if slot.deferred_done.is_some() {
                return;
            }
            if slot.pending.is_some() {
                slot.deferred_done = Some(false);
                drop(slot);
                let cancelled = self.support(
                    HSE_REQ_CANCEL_IO,
                    ptr::null_mut(),
                    ptr::null_mut(),
                    ptr::null_mut(),
                );
                if let Err(e) = cancelled {
                    // A host without HSE_REQ_CANCEL_IO: closing the
                    // connection fails the operation instead (the request
                    // is being abandoned, its connection is not reused).
                    let closed = self.support(
                        HSE_REQ_CLOSE_CONNECTION,
                        ptr::null_mut(),
                        ptr::null_mut(),
                        ptr::null_mut(),
                    );
                    if closed.is_err() {
                        tracing::warn!(
                            error = %e,
                            "IIS supports neither HSE_REQ_CANCEL_IO nor HSE_REQ_CLOSE_CONNECTION: \
                             the session ends when the host completes the outstanding operation"
                        );
                    }
                }
                return;
            }
            slot.deferred_done = Some(keep_conn);
        }
        end_session(&self.inner, keep_conn);
    }
}

fn end_session(inner: &Inner, keep_conn: bool) {
    if IN_IIS.get() == inner as *const Inner as usize {
        // A completion delivered inline, inside this thread's own call for
        // the request: the call still holds the ECB; the session ends as it
        // returns (`with_ecb`).
        let end = if keep_conn { END_KEEP } else { END_CLOSE };
        inner.end_after_call.store(end, Ordering::Release);
        return;
    }
    let mut done = inner.done.write().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    *done = true;
    // Released when this returns, after the server heard the end.
    let _session = inner
        .session
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    // Still inside `HttpExtensionProc` with nothing asynchronous started: its
    // return value ends the request, not DONE_WITH_SESSION.
    let ended = if keep_conn { ENDED_KEEP } else { ENDED_CLOSE };
    if inner
        .call
        .compare_exchange(IN_CALL, ended, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        return;
    }
    // SAFETY: the session has not ended yet (checked under the write lock,
    // so no other call is in progress); this is its last use of the ECB.
    let ecb = unsafe { inner.ecb.as_ref() };
    if let Some(ssf) = ecb.ServerSupportFunction {
        let mut status: DWORD = if keep_conn {
            HSE_STATUS_SUCCESS_AND_KEEP_CONN
        } else {
            HSE_STATUS_SUCCESS
        };
        // SAFETY: DONE_WITH_SESSION takes an optional pointer to the final
        // status, valid for the call.
        unsafe {
            ssf(
                ecb.ConnID,
                HSE_REQ_DONE_WITH_SESSION,
                (&mut status as *mut DWORD).cast(),
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
    }
}

/// The completion callback registered with `HSE_REQ_IO_COMPLETION`.
unsafe extern "system" fn io_completed(
    _ecb: *mut EXTENSION_CONTROL_BLOCK,
    context: *mut c_void,
    transferred: DWORD,
    error: DWORD,
) {
    // Nothing may unwind into IIS.
    let _ = std::panic::catch_unwind(|| {
        if context.is_null() {
            return;
        }
        // SAFETY: the context is the `Inner` registered by
        // `register_completion`; the slot's `keep` holds a reference to it
        // while an operation is outstanding, which is the only time IIS calls
        // back.
        let inner: &Inner = unsafe { &*(context as *const Inner) };
        let (pending, keep, deferred) = {
            let mut slot = inner.slot.lock().unwrap_or_else(|e| e.into_inner());
            let pending = slot.pending.take();
            let keep = slot.keep.take();
            let deferred = if pending.is_some() {
                slot.deferred_done
            } else {
                None
            };
            (pending, keep, deferred)
        };
        match pending {
            Some(Pending::Read { mut buf, tx }) => {
                let r = if error != 0 {
                    Err(error)
                } else {
                    buf.truncate((transferred as usize).min(buf.len()));
                    Ok(Bytes::from(buf))
                };
                let _ = tx.send(r);
            }
            Some(Pending::Write { len, tx, .. }) => {
                let _ = tx.send(if error != 0 {
                    Err(error)
                } else {
                    Ok(transferred.min(len))
                });
            }
            None => {
                tracing::error!(
                    error,
                    "IIS delivered an I/O completion with no operation outstanding"
                );
            }
        }
        if let Some(keep_conn) = deferred {
            end_session(inner, keep_conn);
        }
        // `keep` may be the last reference: dropped last, after every use.
        drop(keep);
    });
}
