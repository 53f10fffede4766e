//! The simulator's side of the native-module interface (`httpserv.h`): the
//! objects IIS hands a module — `IHttpContext`, `IHttpRequest`,
//! `IHttpResponse`, `IHttpUser`, `IHttpConnection`, `IHttpCompletionInfo`,
//! `IHttpEventProvider`, `IModuleAllocator`, `IHttpModuleRegistrationInfo`,
//! `IHttpServer` — as vtables at the reference slots, and the calls into the
//! module's factory and `CHttpModule` objects. With `ffi`, the only module
//! with `unsafe` code; what the module passes is turned into safe values here
//! and handed to [`crate::native`].
//!
//! Every slot the simulator does not serve is filled with a stub that
//! records a violation naming the interface and slot, so a module that calls
//! an unexpected method fails the run instead of crashing it.
//!
//! Request objects carry the request's handle, not a pointer: a call on an
//! object after its request ended finds no request and is recorded as a
//! violation. The objects' memory outlives the request for a while (a
//! bounded graveyard of recent requests) so that such a late call reads
//! valid memory.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::ffi::{c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::ptr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use host_iis_native::ffi::*;

use crate::native::{self, Item};
use crate::{registry, Shared, SimRequest};

/// The interface an [`Obj`] implements, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Kind {
    Context,
    Request,
    Response,
    User,
    Connection,
    CompletionInfo,
    EventProvider,
    Allocator,
    Registration,
    Server,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Context => "IHttpContext",
            Kind::Request => "IHttpRequest",
            Kind::Response => "IHttpResponse",
            Kind::User => "IHttpUser",
            Kind::Connection => "IHttpConnection",
            Kind::CompletionInfo => "IHttpCompletionInfo",
            Kind::EventProvider => "IHttpEventProvider",
            Kind::Allocator => "IModuleAllocator",
            Kind::Registration => "IHttpModuleRegistrationInfo",
            Kind::Server => "IHttpServer",
        }
    }
}

/// One IIS-side object: its vtable first, as C++ lays it out.
#[repr(C)]
pub(crate) struct Obj {
    vtbl: *const *const c_void,
    /// The request's handle ([`registry::handle`]); sequence 0 for objects
    /// that belong to no request.
    handle: usize,
    kind: Kind,
}

impl Obj {
    fn new<const N: usize>(table: &'static VTable<N>, handle: usize, kind: Kind) -> Obj {
        Obj {
            vtbl: table.0.as_ptr(),
            handle,
            kind,
        }
    }
}

/// A request's objects, allocated together.
#[repr(C)]
pub(crate) struct Objects {
    ctx: Obj,
    request: Obj,
    response: Obj,
    user: Obj,
    connection: Obj,
    provider: Obj,
    completion: Obj,
    allocator: Obj,
}

/// Ended requests' objects, kept so that a late call reads valid memory.
static GRAVEYARD: Mutex<VecDeque<Retired>> = Mutex::new(VecDeque::new());

struct Retired(#[allow(dead_code)] Box<Objects>);

// SAFETY: retired objects are only kept, never used, by the simulator.
unsafe impl Send for Retired {}
const GRAVEYARD_SIZE: usize = 4096;

/// The `HTTP_REQUEST` IIS hands out, with every buffer it points into.
pub(crate) struct RawRequest {
    req: Box<HTTP_REQUEST>,
    method: Vec<u8>,
    /// Known header values then unknown names and values, packed with no
    /// NUL between them (IIS's values are not NUL-terminated).
    _packed: Vec<u8>,
    _unknown: Vec<HTTP_UNKNOWN_HEADER>,
    _raw_url: Vec<u8>,
    _full_url: Vec<u16>,
    /// Name (lower case) → (offset, length) in `_packed`, for `GetHeader`.
    index: Vec<(String, *const u8, u16)>,
    /// The remote and the local address as `SOCKADDR`s in Windows' layout
    /// (an IPv4 one in the first 16 bytes), for `HTTP_REQUEST.Address`,
    /// `GetRemoteAddress` and `GetLocalAddress`.
    addresses: Box<[SOCKADDR_IN6; 2]>,
}

/// `addr` as Windows lays out its `SOCKADDR` (`SOCKADDR_IN` or
/// `SOCKADDR_IN6`, Windows' family numbers, port in network order), in
/// storage that holds either.
fn windows_sockaddr(addr: std::net::SocketAddr, storage: &mut SOCKADDR_IN6) {
    match addr {
        std::net::SocketAddr::V4(a) => {
            let v4 = SOCKADDR_IN {
                sin_family: AF_INET,
                sin_port: a.port().to_be(),
                sin_addr: a.ip().octets(),
                sin_zero: [0; 8],
            };
            *storage = SOCKADDR_IN6::default();
            // SAFETY: a SOCKADDR_IN (16 bytes, 2-aligned) fits at the start
            // of the 28-byte, 4-aligned storage.
            unsafe { ptr::from_mut(storage).cast::<SOCKADDR_IN>().write(v4) };
        }
        std::net::SocketAddr::V6(a) => {
            *storage = SOCKADDR_IN6 {
                sin6_family: AF_INET6,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo().to_be(),
                sin6_addr: a.ip().octets(),
                sin6_scope_id: a.scope_id(),
            };
        }
    }
}

/// What the simulator puts in a request's `HTTP_REQUEST`.
pub(crate) struct RawFields<'a> {
    pub method: &'a str,
    pub raw_url: &'a [u8],
    /// `scheme://host` (UTF-16 in the cooked URL).
    pub origin: &'a str,
    /// The decoded path and the query with its `?`.
    pub cooked_path: &'a str,
    pub cooked_query: &'a str,
    pub version: (u16, u16),
    pub headers: &'a http::HeaderMap,
    pub request_id: u64,
    pub remote: std::net::SocketAddr,
    pub local: std::net::SocketAddr,
}

impl RawRequest {
    /// Builds the request, or says which `USHORT` limit it breaks.
    pub(crate) fn new(f: RawFields<'_>) -> Result<RawRequest, String> {
        let short = |n: usize, what: &str| {
            USHORT::try_from(n).map_err(|_| format!("{what} is longer than {} bytes", u16::MAX))
        };
        let mut method = f.method.as_bytes().to_vec();
        method.push(0);
        let raw_url = f.raw_url.to_vec();
        let raw_len = short(raw_url.len(), "the URL")?;
        let mut full_url: Vec<u16> = f.origin.encode_utf16().collect();
        let host_units = full_url.len();
        full_url.extend(f.cooked_path.encode_utf16());
        let path_units = full_url.len() - host_units;
        full_url.extend(f.cooked_query.encode_utf16());
        let query_units = full_url.len() - host_units - path_units;
        let full_len = short(full_url.len() * 2, "the cooked URL")?;
        full_url.push(0);

        // Known headers by id (repeats joined with commas, as HTTP.sys
        // does); the rest as unknown headers.
        let mut known: Vec<Option<Vec<u8>>> = vec![None; HttpHeaderRequestMaximum];
        let mut unknown_pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for (name, value) in f.headers {
            match REQUEST_HEADER_NAMES
                .iter()
                .position(|n| *n == name.as_str())
            {
                Some(id) => {
                    let slot = known[id].get_or_insert_with(Vec::new);
                    if !slot.is_empty() {
                        slot.push(b',');
                    }
                    slot.extend_from_slice(value.as_bytes());
                }
                None => unknown_pairs.push((
                    canonical_case(name.as_str()).into_bytes(),
                    value.as_bytes().to_vec(),
                )),
            }
        }
        let mut packed = Vec::new();
        let mut spans_known = Vec::new();
        for (id, v) in known.iter().enumerate() {
            if let Some(v) = v {
                short(v.len(), REQUEST_HEADER_NAMES[id])?;
                spans_known.push((id, packed.len(), v.len()));
                packed.extend_from_slice(v);
            }
        }
        let mut spans_unknown = Vec::new();
        for (n, v) in &unknown_pairs {
            short(n.len(), "a header name")?;
            short(v.len(), "a header value")?;
            let at = packed.len();
            packed.extend_from_slice(n);
            packed.extend_from_slice(v);
            spans_unknown.push((at, n.len(), at + n.len(), v.len()));
        }
        let count = short(unknown_pairs.len(), "the header count")?;
        // `packed` does not change from here: pointers into it stay valid.
        let base = packed.as_ptr();
        let mut index = Vec::new();
        // SAFETY: every offset and length below lies within `packed`.
        let at = |off: usize| unsafe { base.add(off) };
        let empty_known = HTTP_KNOWN_HEADER {
            RawValueLength: 0,
            pRawValue: ptr::null(),
        };
        let mut known_headers = [empty_known; HttpHeaderRequestMaximum];
        for (id, off, len) in spans_known {
            known_headers[id] = HTTP_KNOWN_HEADER {
                RawValueLength: len as USHORT,
                pRawValue: at(off),
            };
            index.push((REQUEST_HEADER_NAMES[id].to_owned(), at(off), len as u16));
        }
        let mut unknown = Vec::with_capacity(spans_unknown.len());
        for (noff, nlen, voff, vlen) in spans_unknown {
            unknown.push(HTTP_UNKNOWN_HEADER {
                NameLength: nlen as USHORT,
                RawValueLength: vlen as USHORT,
                pName: at(noff),
                pRawValue: at(voff),
            });
            let name = String::from_utf8_lossy(&packed[noff..noff + nlen]).to_ascii_lowercase();
            index.push((name, at(voff), vlen as u16));
        }
        let mut addresses = Box::new([SOCKADDR_IN6::default(); 2]);
        windows_sockaddr(f.remote, &mut addresses[0]);
        windows_sockaddr(f.local, &mut addresses[1]);
        let full = full_url.as_ptr();
        let units = |from: usize, n: usize| -> PCWSTR {
            if n == 0 {
                ptr::null()
            } else {
                // SAFETY: within `full_url`.
                unsafe { full.add(from) }
            }
        };
        let req = Box::new(HTTP_REQUEST {
            Flags: 0,
            ConnectionId: f.request_id,
            RequestId: f.request_id,
            UrlContext: 0,
            Version: HTTP_VERSION {
                MajorVersion: f.version.0,
                MinorVersion: f.version.1,
            },
            Verb: 0, // HttpVerbUnparsed: GetHttpMethod has the name
            UnknownVerbLength: (method.len() - 1) as USHORT,
            RawUrlLength: raw_len,
            pUnknownVerb: method.as_ptr(),
            pRawUrl: if raw_url.is_empty() {
                ptr::null()
            } else {
                raw_url.as_ptr()
            },
            CookedUrl: HTTP_COOKED_URL {
                FullUrlLength: full_len,
                HostLength: (host_units * 2) as USHORT,
                AbsPathLength: (path_units * 2) as USHORT,
                QueryStringLength: (query_units * 2) as USHORT,
                pFullUrl: full,
                pHost: units(0, host_units),
                pAbsPath: units(host_units, path_units),
                pQueryString: units(host_units + path_units, query_units),
            },
            Address: HTTP_TRANSPORT_ADDRESS {
                pRemoteAddress: (&raw mut addresses[0]).cast(),
                pLocalAddress: (&raw mut addresses[1]).cast(),
            },
            Headers: HTTP_REQUEST_HEADERS {
                UnknownHeaderCount: count,
                pUnknownHeaders: if unknown.is_empty() {
                    ptr::null_mut()
                } else {
                    unknown.as_mut_ptr()
                },
                TrailerCount: 0,
                pTrailers: ptr::null_mut(),
                KnownHeaders: known_headers,
            },
            BytesReceived: 0,
            EntityChunkCount: 0,
            pEntityChunks: ptr::null_mut(),
            RawConnectionId: f.request_id,
            pSslInfo: ptr::null_mut(),
            V1TailPadding: Default::default(),
            RequestInfoCount: 0,
            pRequestInfo: ptr::null_mut(),
        });
        Ok(RawRequest {
            req,
            method,
            _packed: packed,
            _unknown: unknown,
            _raw_url: raw_url,
            _full_url: full_url,
            index,
            addresses,
        })
    }
}

// SAFETY: the pointers inside point into the request's own buffers, which
// move with it and are only read.
unsafe impl Send for RawRequest {}
// SAFETY: as above.
unsafe impl Sync for RawRequest {}

/// `content-type` → `Content-Type`, as clients usually send names.
fn canonical_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut up = true;
    for c in name.chars() {
        out.push(if up { c.to_ascii_uppercase() } else { c });
        up = c == '-';
    }
    out
}

/// The user strings `IHttpUser` returns (UTF-16, NUL-terminated).
pub(crate) struct UserStrings {
    name: Vec<u16>,
    auth_type: Vec<u16>,
}

impl UserStrings {
    pub(crate) fn new(name: &str, auth_type: &str) -> UserStrings {
        let z = |s: &str| s.encode_utf16().chain(std::iter::once(0)).collect();
        UserStrings {
            name: z(name),
            auth_type: z(auth_type),
        }
    }
}

/// Memory handed to the module for the request's life: server-variable
/// copies and allocations.
#[derive(Default)]
pub(crate) struct Arena {
    blocks: Vec<Box<[u64]>>,
}

impl Arena {
    /// `bytes` zeroed bytes, 8-aligned; valid until the arena drops.
    fn alloc(&mut self, bytes: usize) -> *mut c_void {
        let mut block = vec![0u64; bytes.div_ceil(8).max(1)].into_boxed_slice();
        let p = block.as_mut_ptr().cast();
        self.blocks.push(block);
        p
    }

    fn copy<T: Copy>(&mut self, data: &[T]) -> *const T {
        let bytes = std::mem::size_of_val(data);
        let p = self.alloc(bytes).cast::<T>();
        // SAFETY: `p` has room for `data` and is 8-aligned.
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
        p
    }
}

/// What one request in native mode holds on the IIS side.
pub(crate) struct NativeObjects {
    objects: Mutex<Option<Box<Objects>>>,
    /// The objects' address (stable: boxed), for calls into the module.
    ptrs: ObjectPtrs,
    raw: RawRequest,
    user: Option<UserStrings>,
    pub(crate) arena: Mutex<Arena>,
    module: Mutex<ModulePtr>,
}

#[derive(Clone, Copy)]
struct ObjectPtrs {
    ctx: *mut Object,
    provider: *mut Object,
    completion: *mut Object,
    allocator: *mut Object,
}

#[derive(Clone, Copy)]
struct ModulePtr(*mut Object);

// SAFETY: the objects and buffers are owned here and only read by the
// module (on any thread, as IIS allows) while the request lives; mutable
// state is behind mutexes.
unsafe impl Send for NativeObjects {}
// SAFETY: as above.
unsafe impl Sync for NativeObjects {}

impl NativeObjects {
    pub(crate) fn new(handle: usize, raw: RawRequest, user: Option<UserStrings>) -> Self {
        let mut objects = Box::new(Objects {
            ctx: Obj::new(&CONTEXT_VTBL, handle, Kind::Context),
            request: Obj::new(&REQUEST_VTBL, handle, Kind::Request),
            response: Obj::new(&RESPONSE_VTBL, handle, Kind::Response),
            user: Obj::new(&USER_VTBL, handle, Kind::User),
            connection: Obj::new(&CONNECTION_VTBL, handle, Kind::Connection),
            provider: Obj::new(&PROVIDER_VTBL, handle, Kind::EventProvider),
            completion: Obj::new(&COMPLETION_VTBL, handle, Kind::CompletionInfo),
            allocator: Obj::new(&ALLOCATOR_VTBL, handle, Kind::Allocator),
        });
        let ptrs = ObjectPtrs {
            ctx: (&raw mut objects.ctx).cast(),
            provider: (&raw mut objects.provider).cast(),
            completion: (&raw mut objects.completion).cast(),
            allocator: (&raw mut objects.allocator).cast(),
        };
        NativeObjects {
            objects: Mutex::new(Some(objects)),
            ptrs,
            raw,
            user,
            arena: Mutex::new(Arena::default()),
            module: Mutex::new(ModulePtr(ptr::null_mut())),
        }
    }

    /// The request's objects go to the graveyard: later calls still read
    /// valid memory (and are recorded as violations).
    pub(crate) fn retire(&self) {
        let objects = self
            .objects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(o) = objects {
            let mut g = GRAVEYARD.lock().unwrap_or_else(|e| e.into_inner());
            if g.len() >= GRAVEYARD_SIZE {
                g.pop_front();
            }
            g.push_back(Retired(o));
        }
    }

    fn module(&self) -> *mut Object {
        self.module.lock().unwrap_or_else(|e| e.into_inner()).0
    }
}

/// A loaded native module: its factory, from `RegisterModule`.
pub(crate) struct ModuleLibrary {
    factory: *mut Object,
    _registration: Box<Registration>,
    _server: Box<Obj>,
    _lib: libloading::Library,
}

// SAFETY: the factory may be called from any thread (IIS does so).
unsafe impl Send for ModuleLibrary {}
// SAFETY: as above.
unsafe impl Sync for ModuleLibrary {}

/// `IHttpModuleRegistrationInfo`, with what the module registered.
#[repr(C)]
struct Registration {
    obj: Obj,
    factory: *mut Object,
    request_notifications: DWORD,
    post_notifications: DWORD,
}

type RegisterModuleFn = unsafe extern "system" fn(DWORD, *mut Object, *mut Object) -> HRESULT;

/// Whether the library at `path` exports `RegisterModule` (a native module
/// rather than an ISAPI extension).
pub(crate) fn is_native_module(path: &Path) -> Result<bool, String> {
    // SAFETY: loading runs the library's initialisers, as IIS's loading
    // does; the library is the one the simulator was configured with.
    let lib = unsafe { libloading::Library::new(path) }
        .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
    // SAFETY: only the symbol's presence is checked.
    let found = unsafe { lib.get::<*const c_void>(b"RegisterModule\0") }.is_ok();
    Ok(found)
}

impl ModuleLibrary {
    /// Loads the module and calls `RegisterModule` (IIS 10), which must
    /// register a factory for `RQ_EXECUTE_REQUEST_HANDLER`.
    pub(crate) fn load(path: &Path, sim_handle: usize) -> Result<ModuleLibrary, String> {
        // SAFETY: as in `is_native_module`.
        let lib = unsafe { libloading::Library::new(path) }
            .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
        // SAFETY: `RegisterModule` has the PFN_REGISTERMODULE signature.
        let register = unsafe { lib.get::<RegisterModuleFn>(b"RegisterModule\0") }
            .map(|f| *f)
            .map_err(|e| format!("{}: no RegisterModule export: {e}", path.display()))?;
        let mut registration = Box::new(Registration {
            obj: Obj::new(&REGISTRATION_VTBL, sim_handle, Kind::Registration),
            factory: ptr::null_mut(),
            request_notifications: 0,
            post_notifications: 0,
        });
        let mut server = Box::new(Obj::new(&SERVER_VTBL, sim_handle, Kind::Server));
        let info: *mut Object = (&raw mut *registration).cast();
        let server_ptr: *mut Object = (&raw mut *server).cast();
        // SAFETY: both objects live until the library is dropped; the
        // module may keep neither past `RegisterModule` (IIS's are valid
        // only during the call), and the simulator's stay valid anyway.
        let hr = unsafe { register(10, info, server_ptr) };
        if hr < 0 {
            return Err(format!(
                "RegisterModule failed with HRESULT {:#010x}",
                hr as u32
            ));
        }
        if registration.factory.is_null() {
            return Err(
                "RegisterModule succeeded but registered no factory (SetRequestNotifications)"
                    .into(),
            );
        }
        if registration.request_notifications & RQ_EXECUTE_REQUEST_HANDLER == 0 {
            return Err(format!(
                "the module registered for notifications {:#x}, without RQ_EXECUTE_REQUEST_HANDLER",
                registration.request_notifications
            ));
        }
        tracing::info!(
            target: "iis_sim",
            dll = %path.display(),
            notifications = format!("{:#x}", registration.request_notifications),
            post = format!("{:#x}", registration.post_notifications),
            "native module registered"
        );
        Ok(ModuleLibrary {
            factory: registration.factory,
            _registration: registration,
            _server: server,
            _lib: lib,
        })
    }

    /// The factory's `Terminate`.
    pub(crate) fn terminate(&self) {
        // SAFETY: the factory the module registered; `Terminate` takes no
        // argument and is called once, at unload.
        unsafe {
            let f: unsafe extern "system" fn(*mut Object) =
                std::mem::transmute(entry(self.factory, FACTORY_TERMINATE));
            f(self.factory);
        }
    }

    /// A new `CHttpModule` for `objects`' request, from the factory.
    pub(crate) fn create_module(&self, objects: &NativeObjects) -> Result<(), String> {
        let mut module: *mut Object = ptr::null_mut();
        // SAFETY: `GetHttpModule(CHttpModule **, IModuleAllocator *)`; both
        // pointers valid for the call.
        let hr = unsafe {
            let f: unsafe extern "system" fn(
                *mut Object,
                *mut *mut Object,
                *mut Object,
            ) -> HRESULT = std::mem::transmute(entry(self.factory, FACTORY_GET_HTTP_MODULE));
            f(self.factory, &mut module, objects.ptrs.allocator)
        };
        if hr < 0 || module.is_null() {
            return Err(format!(
                "GetHttpModule failed (HRESULT {:#010x}, module {module:p})",
                hr as u32
            ));
        }
        objects.module.lock().unwrap_or_else(|e| e.into_inner()).0 = module;
        Ok(())
    }
}

/// The function at `slot` of `obj`'s vtable.
///
/// # Safety
/// `obj` is a live object whose vtable has the slot.
unsafe fn entry(obj: *mut Object, slot: Slot) -> *const c_void {
    // SAFETY: the caller's promise.
    unsafe { *(*obj).vtbl.add(slot.index) }
}

/// `OnExecuteRequestHandler`.
pub(crate) fn on_execute_request_handler(objects: &NativeObjects) -> i32 {
    let module = objects.module();
    // SAFETY: the module object from `GetHttpModule`, alive until its
    // `Dispose`; the context and provider are this request's.
    unsafe {
        let f: unsafe extern "system" fn(*mut Object, *mut Object, *mut Object) -> i32 =
            std::mem::transmute(entry(module, MODULE_ON_EXECUTE_REQUEST_HANDLER));
        f(module, objects.ptrs.ctx, objects.ptrs.provider)
    }
}

/// `OnAsyncCompletion` (for `RQ_EXECUTE_REQUEST_HANDLER`).
pub(crate) fn on_async_completion(objects: &NativeObjects, posted: bool) -> i32 {
    let module = objects.module();
    // SAFETY: as above; the completion information is this request's.
    unsafe {
        let f: unsafe extern "system" fn(
            *mut Object,
            *mut Object,
            DWORD,
            BOOL,
            *mut Object,
            *mut Object,
        ) -> i32 = std::mem::transmute(entry(module, MODULE_ON_ASYNC_COMPLETION));
        f(
            module,
            objects.ptrs.ctx,
            RQ_EXECUTE_REQUEST_HANDLER,
            if posted { TRUE } else { FALSE },
            objects.ptrs.provider,
            objects.ptrs.completion,
        )
    }
}

/// `Dispose`, once, at the end of the request.
pub(crate) fn dispose(objects: &NativeObjects) {
    let module = std::mem::replace(
        &mut *objects.module.lock().unwrap_or_else(|e| e.into_inner()),
        ModulePtr(ptr::null_mut()),
    );
    if module.0.is_null() {
        return;
    }
    // SAFETY: the module object, disposed exactly once (the pointer was
    // just taken out).
    unsafe {
        let f: unsafe extern "system" fn(*mut Object) =
            std::mem::transmute(entry(module.0, MODULE_DISPOSE));
        f(module.0);
    }
}

// ---------------------------------------------------------------------------
// The IIS side: what the module calls.

/// Runs a callback body: a panic in the simulator must not unwind into the
/// module.
fn guarded<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// The request behind an object (a violation if it ended).
///
/// # Safety
/// `this` is one of the simulator's objects (live or in the graveyard).
unsafe fn request_of(this: *mut Obj, what: &str) -> Option<Arc<SimRequest>> {
    if this.is_null() {
        return None;
    }
    // SAFETY: the caller's promise.
    let (handle, kind) = unsafe { ((*this).handle, (*this).kind) };
    registry::lookup_with(handle, || format!("{}::{what}", kind.name()))
}

/// The simulator behind an object.
///
/// # Safety
/// As for [`request_of`].
unsafe fn simulator_of(this: *mut Obj) -> Option<Arc<Shared>> {
    if this.is_null() {
        return None;
    }
    // SAFETY: the caller's promise.
    registry::simulator(unsafe { (*this).handle })
}

/// The stub in every slot the simulator does not serve.
unsafe extern "system" fn unserved<const SLOT: usize>(this: *mut Obj) -> usize {
    guarded(0, || {
        // SAFETY: IIS objects are the simulator's.
        let kind = if this.is_null() {
            "a null object".to_owned()
        } else {
            // SAFETY: as above.
            unsafe { (*this).kind.name().to_owned() }
        };
        // SAFETY: as above.
        match unsafe { simulator_of(this) } {
            Some(sim) => sim.violation(format!(
                "the module called {kind} slot {SLOT}, which the simulator does not serve"
            )),
            None => tracing::error!("the module called {kind} slot {SLOT} of an unknown object"),
        }
        0
    })
}

macro_rules! unserved_table {
    ($($n:literal)*) => { [$(unserved::<$n> as *const c_void),*] };
}

/// One stub per slot, for the largest interface served.
const UNSERVED: [*const c_void; 39] = unserved_table!(
    0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33
    34 35 36 37 38
);

const fn stubs<const N: usize>() -> [*const c_void; N] {
    let mut t = [ptr::null(); N];
    let mut i = 0;
    while i < N {
        t[i] = UNSERVED[i];
        i += 1;
    }
    t
}

const CONTEXT_N: usize = interface_slots("IHttpContext");
const REQUEST_N: usize = interface_slots("IHttpRequest");
const RESPONSE_N: usize = interface_slots("IHttpResponse");
const USER_N: usize = interface_slots("IHttpUser");
const CONNECTION_N: usize = interface_slots("IHttpConnection");
const COMPLETION_N: usize = interface_slots("IHttpCompletionInfo");
const PROVIDER_N: usize = interface_slots("IHttpEventProvider");
const ALLOCATOR_N: usize = interface_slots("IModuleAllocator");
const REGISTRATION_N: usize = interface_slots("IHttpModuleRegistrationInfo");
const SERVER_N: usize = interface_slots("IHttpServer");

macro_rules! vtable {
    ($name:ident, $n:expr, { $($slot:ident => $f:expr,)* }) => {
        static $name: VTable<{ $n }> = {
            #[allow(unused_mut)]
            let mut t = stubs::<{ $n }>();
            $( t[$slot.index] = $f as *const c_void; )*
            VTable(t)
        };
    };
}

vtable!(CONTEXT_VTBL, CONTEXT_N, {
    CONTEXT_GET_CONNECTION => ctx_get_connection,
    CONTEXT_GET_REQUEST => ctx_get_request,
    CONTEXT_GET_RESPONSE => ctx_get_response,
    CONTEXT_GET_RESPONSE_HEADERS_SENT => ctx_get_response_headers_sent,
    CONTEXT_GET_USER => ctx_get_user,
    CONTEXT_INDICATE_COMPLETION => ctx_indicate_completion,
    CONTEXT_POST_COMPLETION => ctx_post_completion,
    CONTEXT_GET_SERVER_VARIABLE => ctx_get_server_variable,
    CONTEXT_GET_SERVER_VARIABLE_WIDE => ctx_get_server_variable_wide,
    CONTEXT_ALLOCATE_REQUEST_MEMORY => ctx_allocate_request_memory,
    CONTEXT_CANCEL_IO => ctx_cancel_io,
});
vtable!(REQUEST_VTBL, REQUEST_N, {
    REQUEST_GET_RAW_HTTP_REQUEST_CONST => req_get_raw,
    REQUEST_GET_RAW_HTTP_REQUEST => req_get_raw,
    REQUEST_GET_HEADER_BY_NAME => req_get_header,
    REQUEST_GET_HTTP_METHOD => req_get_http_method,
    REQUEST_READ_ENTITY_BODY => req_read_entity_body,
    REQUEST_GET_REMAINING_ENTITY_BYTES => req_get_remaining_entity_bytes,
    REQUEST_GET_HTTP_VERSION => req_get_http_version,
    REQUEST_GET_REMOTE_ADDRESS => req_get_remote_address,
    REQUEST_GET_LOCAL_ADDRESS => req_get_local_address,
});
vtable!(RESPONSE_VTBL, RESPONSE_N, {
    RESPONSE_SET_STATUS => resp_set_status,
    RESPONSE_SET_HEADER => resp_set_header,
    RESPONSE_CLEAR => resp_clear,
    RESPONSE_CLEAR_HEADERS => resp_clear_headers,
    RESPONSE_SET_NEED_DISCONNECT => resp_set_need_disconnect,
    RESPONSE_FLUSH => resp_flush,
    RESPONSE_WRITE_ENTITY_CHUNKS => resp_write_entity_chunks,
    RESPONSE_DISABLE_BUFFERING => resp_disable_buffering,
    RESPONSE_CLOSE_CONNECTION => resp_close_connection,
});
vtable!(USER_VTBL, USER_N, {
    USER_GET_REMOTE_USER_NAME => user_get_user_name,
    USER_GET_USER_NAME => user_get_user_name,
    USER_GET_AUTHENTICATION_TYPE => user_get_authentication_type,
});
vtable!(CONNECTION_VTBL, CONNECTION_N, {
    CONNECTION_IS_CONNECTED => conn_is_connected,
});
vtable!(COMPLETION_VTBL, COMPLETION_N, {
    COMPLETION_GET_BYTES => completion_get_bytes,
    COMPLETION_GET_STATUS => completion_get_status,
});
vtable!(PROVIDER_VTBL, PROVIDER_N, {
    EVENT_PROVIDER_SET_ERROR_STATUS => provider_set_error_status,
});
vtable!(ALLOCATOR_VTBL, ALLOCATOR_N, {
    ALLOCATOR_ALLOCATE_MEMORY => allocator_allocate_memory,
});
vtable!(REGISTRATION_VTBL, REGISTRATION_N, {
    REGISTRATION_GET_NAME => registration_get_name,
    REGISTRATION_GET_ID => registration_get_id,
    REGISTRATION_SET_REQUEST_NOTIFICATIONS => registration_set_request_notifications,
});
vtable!(SERVER_VTBL, SERVER_N, {});

/// The `IHttpContext`'s sibling object `field` of the request's objects.
fn sibling(req: &SimRequest, pick: impl FnOnce(&mut Objects) -> *mut Obj) -> *mut Object {
    let Some(native) = req.native() else {
        return ptr::null_mut();
    };
    let mut objects = native.objects.lock().unwrap_or_else(|e| e.into_inner());
    match objects.as_mut() {
        Some(o) => pick(o).cast(),
        None => ptr::null_mut(),
    }
}

unsafe extern "system" fn ctx_get_connection(this: *mut Obj) -> *mut Object {
    guarded(ptr::null_mut(), || {
        // SAFETY: `this` is the simulator's context object.
        let Some(req) = (unsafe { request_of(this, "GetConnection") }) else {
            return ptr::null_mut();
        };
        sibling(&req, |o| &raw mut o.connection)
    })
}

unsafe extern "system" fn ctx_get_request(this: *mut Obj) -> *mut Object {
    guarded(ptr::null_mut(), || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "GetRequest") }) else {
            return ptr::null_mut();
        };
        sibling(&req, |o| &raw mut o.request)
    })
}

unsafe extern "system" fn ctx_get_response(this: *mut Obj) -> *mut Object {
    guarded(ptr::null_mut(), || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "GetResponse") }) else {
            return ptr::null_mut();
        };
        sibling(&req, |o| &raw mut o.response)
    })
}

unsafe extern "system" fn ctx_get_response_headers_sent(this: *mut Obj) -> BOOL {
    guarded(FALSE, || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "GetResponseHeadersSent") }) else {
            return FALSE;
        };
        if req.lock().headers_sent {
            TRUE
        } else {
            FALSE
        }
    })
}

unsafe extern "system" fn ctx_get_user(this: *mut Obj) -> *mut Object {
    guarded(ptr::null_mut(), || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "GetUser") }) else {
            return ptr::null_mut();
        };
        // Anonymous requests have no user object.
        if req.native().is_none_or(|n| n.user.is_none()) {
            return ptr::null_mut();
        }
        sibling(&req, |o| &raw mut o.user)
    })
}

unsafe extern "system" fn ctx_indicate_completion(this: *mut Obj, status: i32) {
    guarded((), || {
        // SAFETY: as above.
        if let Some(req) = unsafe { request_of(this, "IndicateCompletion") } {
            native::deliver(&req, Item::Indicate(status));
        }
    });
}

unsafe extern "system" fn ctx_post_completion(this: *mut Obj, bytes: DWORD) -> HRESULT {
    guarded(E_FAIL, || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "PostCompletion") }) else {
            return E_FAIL;
        };
        native::post(&req, bytes);
        S_OK
    })
}

unsafe extern "system" fn ctx_get_server_variable(
    this: *mut Obj,
    name: PCSTR,
    value: *mut PCSTR,
    len: *mut DWORD,
) -> HRESULT {
    guarded(E_FAIL, || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "GetServerVariable") }) else {
            return E_FAIL;
        };
        if name.is_null() || value.is_null() || len.is_null() {
            return E_INVALIDARG;
        }
        // SAFETY: a NUL-terminated name from the module.
        let name = unsafe { CStr::from_ptr(name.cast()) }.to_string_lossy();
        let v = match req.server_variable(&name) {
            Ok(v) => v,
            Err(code) => return hresult_from_win32(code),
        };
        let Some(native) = req.native() else {
            return E_FAIL;
        };
        // The value stays with the request (a copy the module does not
        // free); the length excludes the NUL.
        let p = native
            .arena
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .copy(&v);
        // SAFETY: the module's out-parameters.
        unsafe {
            *value = p;
            *len = (v.len() - 1) as DWORD;
        }
        S_OK
    })
}

unsafe extern "system" fn ctx_get_server_variable_wide(
    this: *mut Obj,
    name: PCSTR,
    value: *mut PCWSTR,
    len: *mut DWORD,
) -> HRESULT {
    guarded(E_FAIL, || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "GetServerVariable (wide)") }) else {
            return E_FAIL;
        };
        if name.is_null() || value.is_null() || len.is_null() {
            return E_INVALIDARG;
        }
        // SAFETY: a NUL-terminated name from the module.
        let name = unsafe { CStr::from_ptr(name.cast()) }.to_string_lossy();
        let base = name
            .strip_prefix("UNICODE_")
            .or_else(|| name.strip_prefix("unicode_"))
            .unwrap_or(&name);
        let v = match req.server_variable(&format!("UNICODE_{base}")) {
            Ok(v) => v,
            Err(code) => return hresult_from_win32(code),
        };
        let units: Vec<u16> = v
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let Some(native) = req.native() else {
            return E_FAIL;
        };
        let p = native
            .arena
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .copy(&units);
        // SAFETY: the module's out-parameters.
        unsafe {
            *value = p;
            *len = (units.len() - 1) as DWORD;
        }
        S_OK
    })
}

unsafe extern "system" fn ctx_allocate_request_memory(this: *mut Obj, bytes: DWORD) -> *mut c_void {
    guarded(ptr::null_mut(), || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "AllocateRequestMemory") }) else {
            return ptr::null_mut();
        };
        match req.native() {
            Some(n) => n
                .arena
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .alloc(bytes as usize),
            None => ptr::null_mut(),
        }
    })
}

unsafe extern "system" fn ctx_cancel_io(this: *mut Obj) -> HRESULT {
    guarded(E_FAIL, || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "CancelIo") }) else {
            return E_FAIL;
        };
        req.cancel_io();
        S_OK
    })
}

unsafe extern "system" fn req_get_raw(this: *mut Obj) -> *mut HTTP_REQUEST {
    guarded(ptr::null_mut(), || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "GetRawHttpRequest") }) else {
            return ptr::null_mut();
        };
        match req.native() {
            Some(n) => (&raw const *n.raw.req).cast_mut(),
            None => ptr::null_mut(),
        }
    })
}

unsafe extern "system" fn req_get_header(this: *mut Obj, name: PCSTR, len: *mut USHORT) -> PCSTR {
    guarded(ptr::null(), || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "GetHeader") }) else {
            return ptr::null();
        };
        if name.is_null() {
            return ptr::null();
        }
        // SAFETY: a NUL-terminated name.
        let name = unsafe { CStr::from_ptr(name.cast()) }
            .to_string_lossy()
            .to_ascii_lowercase();
        let found = req.native().and_then(|n| {
            n.raw
                .index
                .iter()
                .find(|(k, _, _)| *k == name)
                .map(|(_, p, n)| (*p, *n))
        });
        let (p, n) = match found {
            Some((p, n)) => (p, n),
            None => (ptr::null(), 0),
        };
        if !len.is_null() {
            // SAFETY: the module's out-parameter.
            unsafe { *len = n };
        }
        p
    })
}

unsafe extern "system" fn req_get_http_method(this: *mut Obj) -> PCSTR {
    guarded(ptr::null(), || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "GetHttpMethod") }) else {
            return ptr::null();
        };
        req.native().map_or(ptr::null(), |n| n.raw.method.as_ptr())
    })
}

unsafe extern "system" fn req_get_http_version(
    this: *mut Obj,
    major: *mut USHORT,
    minor: *mut USHORT,
) {
    guarded((), || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "GetHttpVersion") }) else {
            return;
        };
        if let Some(n) = req.native() {
            let v = n.raw.req.Version;
            // SAFETY: the module's out-parameters (each may be null).
            unsafe {
                if !major.is_null() {
                    *major = v.MajorVersion;
                }
                if !minor.is_null() {
                    *minor = v.MinorVersion;
                }
            }
        }
    });
}

/// `GetRemoteAddress` (`which` 0) and `GetLocalAddress` (1): the request's
/// own `SOCKADDR`, valid while the request lives.
fn request_address(this: *mut Obj, which: usize, what: &str) -> *const c_void {
    guarded(ptr::null(), || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, what) }) else {
            return ptr::null();
        };
        req.native()
            .map_or(ptr::null(), |n| (&raw const n.raw.addresses[which]).cast())
    })
}

unsafe extern "system" fn req_get_remote_address(this: *mut Obj) -> *const c_void {
    request_address(this, 0, "GetRemoteAddress")
}

unsafe extern "system" fn req_get_local_address(this: *mut Obj) -> *const c_void {
    request_address(this, 1, "GetLocalAddress")
}

unsafe extern "system" fn req_get_remaining_entity_bytes(this: *mut Obj) -> DWORD {
    guarded(0, || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "GetRemainingEntityBytes") }) else {
            return 0;
        };
        native::remaining(&req)
    })
}

/// A buffer the module lent for an asynchronous read.
pub(crate) struct ReadTarget {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the module keeps the buffer for the simulator until the
// completion; only the read's task touches it.
unsafe impl Send for ReadTarget {}

impl ReadTarget {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Copies `data` (at most `len` bytes) into the buffer.
    pub(crate) fn fill(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.len);
        // SAFETY: the buffer holds `len` writable bytes until the
        // completion, which has not been delivered yet.
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), self.ptr, n) };
        n
    }
}

unsafe extern "system" fn req_read_entity_body(
    this: *mut Obj,
    buffer: *mut c_void,
    size: DWORD,
    is_async: BOOL,
    read: *mut DWORD,
    pending: *mut BOOL,
) -> HRESULT {
    guarded(E_FAIL, || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "ReadEntityBody") }) else {
            return E_FAIL;
        };
        if buffer.is_null() || size == 0 {
            return E_INVALIDARG;
        }
        let target = ReadTarget {
            ptr: buffer.cast(),
            len: size as usize,
        };
        let outcome = native::read(&req, target, is_async != FALSE);
        let (hr, n, is_pending) = match outcome {
            native::IoStart::Pending => (S_OK, 0, true),
            native::IoStart::Done(Ok(n)) => (S_OK, n, false),
            native::IoStart::Done(Err(hr)) => (hr, 0, false),
        };
        // SAFETY: the module's out-parameters (each may be null).
        unsafe {
            if !read.is_null() {
                *read = n;
            }
            if !pending.is_null() {
                *pending = if is_pending { TRUE } else { FALSE };
            }
        }
        hr
    })
}

unsafe extern "system" fn resp_set_status(
    this: *mut Obj,
    status: USHORT,
    reason: PCSTR,
    _sub_status: USHORT,
    _error: HRESULT,
    _exception: *mut c_void,
    _skip_custom_errors: BOOL,
) -> HRESULT {
    guarded(E_FAIL, || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "SetStatus") }) else {
            return E_FAIL;
        };
        let reason = if reason.is_null() {
            Vec::new()
        } else {
            // SAFETY: a NUL-terminated reason.
            unsafe { CStr::from_ptr(reason.cast()) }.to_bytes().to_vec()
        };
        native::set_status(&req, status, reason)
    })
}

unsafe extern "system" fn resp_set_header(
    this: *mut Obj,
    name: PCSTR,
    value: PCSTR,
    len: USHORT,
    replace: BOOL,
) -> HRESULT {
    guarded(E_FAIL, || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "SetHeader") }) else {
            return E_FAIL;
        };
        if name.is_null() || (value.is_null() && len > 0) {
            return E_INVALIDARG;
        }
        // SAFETY: a NUL-terminated name; `len` bytes of value.
        let (name, value) = unsafe {
            (
                CStr::from_ptr(name.cast()).to_bytes().to_vec(),
                if len == 0 {
                    Vec::new()
                } else {
                    std::slice::from_raw_parts(value, len as usize).to_vec()
                },
            )
        };
        native::set_header(&req, &name, &value, replace != FALSE)
    })
}

macro_rules! response_void {
    ($name:ident, $what:literal, $call:expr) => {
        unsafe extern "system" fn $name(this: *mut Obj) {
            guarded((), || {
                // SAFETY: as above.
                if let Some(req) = unsafe { request_of(this, $what) } {
                    let f: fn(&Arc<SimRequest>) = $call;
                    f(&req);
                }
            });
        }
    };
}

response_void!(resp_clear, "Clear", |_| {});
response_void!(resp_clear_headers, "ClearHeaders", native::clear_headers);
response_void!(
    resp_set_need_disconnect,
    "SetNeedDisconnect",
    native::set_need_disconnect
);
response_void!(resp_disable_buffering, "DisableBuffering", |_| {});
response_void!(resp_close_connection, "CloseConnection", |r| r
    .close_connection());

unsafe extern "system" fn resp_flush(
    this: *mut Obj,
    is_async: BOOL,
    _more: BOOL,
    sent: *mut DWORD,
    expected: *mut BOOL,
) -> HRESULT {
    guarded(E_FAIL, || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "Flush") }) else {
            return E_FAIL;
        };
        let outcome = native::flush(&req, is_async != FALSE);
        finish_write(outcome, sent, expected)
    })
}

fn finish_write(outcome: native::IoStart, sent: *mut DWORD, expected: *mut BOOL) -> HRESULT {
    let (hr, n, pending) = match outcome {
        native::IoStart::Pending => (S_OK, 0, true),
        native::IoStart::Done(Ok(n)) => (S_OK, n, false),
        native::IoStart::Done(Err(hr)) => (hr, 0, false),
    };
    // SAFETY: the module's out-parameters (each may be null).
    unsafe {
        if !sent.is_null() {
            *sent = n;
        }
        if !expected.is_null() {
            *expected = if pending { TRUE } else { FALSE };
        }
    }
    hr
}

unsafe extern "system" fn resp_write_entity_chunks(
    this: *mut Obj,
    chunks: *mut HTTP_DATA_CHUNK,
    count: DWORD,
    is_async: BOOL,
    _more: BOOL,
    sent: *mut DWORD,
    expected: *mut BOOL,
) -> HRESULT {
    guarded(E_FAIL, || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "WriteEntityChunks") }) else {
            return E_FAIL;
        };
        if chunks.is_null() && count > 0 {
            return E_INVALIDARG;
        }
        let mut data = Vec::new();
        for i in 0..count as usize {
            // SAFETY: `count` chunks at `chunks`.
            let chunk = unsafe { &*chunks.add(i) };
            if chunk.DataChunkType != HttpDataChunkFromMemory {
                req.violation(&format!(
                    "WriteEntityChunks with chunk type {} (only FromMemory is simulated)",
                    chunk.DataChunkType
                ));
                return E_INVALIDARG;
            }
            let m = chunk.FromMemory;
            if m.BufferLength > 0 {
                if m.pBuffer.is_null() {
                    return E_INVALIDARG;
                }
                // SAFETY: the chunk's buffer and length; the simulator copies
                // the bytes during the call (the same data IIS would send
                // later from the buffer the module keeps alive).
                data.extend_from_slice(unsafe {
                    std::slice::from_raw_parts(m.pBuffer.cast::<u8>(), m.BufferLength as usize)
                });
            }
        }
        let outcome = native::write(&req, Bytes::from(data), is_async != FALSE);
        finish_write(outcome, sent, expected)
    })
}

unsafe extern "system" fn user_get_user_name(this: *mut Obj) -> PCWSTR {
    guarded(ptr::null(), || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "GetUserName") }) else {
            return ptr::null();
        };
        req.native()
            .and_then(|n| n.user.as_ref())
            .map_or(ptr::null(), |u| u.name.as_ptr())
    })
}

unsafe extern "system" fn user_get_authentication_type(this: *mut Obj) -> PCWSTR {
    guarded(ptr::null(), || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "GetAuthenticationType") }) else {
            return ptr::null();
        };
        req.native()
            .and_then(|n| n.user.as_ref())
            .map_or(ptr::null(), |u| u.auth_type.as_ptr())
    })
}

unsafe extern "system" fn conn_is_connected(this: *mut Obj) -> BOOL {
    guarded(FALSE, || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "IsConnected") }) else {
            return FALSE;
        };
        if req.is_connected() {
            TRUE
        } else {
            FALSE
        }
    })
}

unsafe extern "system" fn completion_get_bytes(this: *mut Obj) -> DWORD {
    guarded(0, || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "GetCompletionBytes") }) else {
            return 0;
        };
        native::current_completion(&req).0
    })
}

unsafe extern "system" fn completion_get_status(this: *mut Obj) -> HRESULT {
    guarded(E_FAIL, || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "GetCompletionStatus") }) else {
            return E_FAIL;
        };
        native::current_completion(&req).1
    })
}

unsafe extern "system" fn provider_set_error_status(this: *mut Obj, hr: HRESULT) {
    guarded((), || {
        // SAFETY: as above.
        if unsafe { request_of(this, "SetErrorStatus") }.is_some() {
            tracing::warn!(target: "iis_sim", hr = format!("{:#010x}", hr as u32), "the module set an error status");
        }
    });
}

unsafe extern "system" fn allocator_allocate_memory(this: *mut Obj, bytes: DWORD) -> *mut c_void {
    guarded(ptr::null_mut(), || {
        // SAFETY: as above.
        let Some(req) = (unsafe { request_of(this, "AllocateMemory") }) else {
            return ptr::null_mut();
        };
        match req.native() {
            Some(n) => n
                .arena
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .alloc(bytes as usize),
            None => ptr::null_mut(),
        }
    })
}

static MODULE_NAME: [u16; 16] = {
    let s = b"KallitheaModule\0";
    let mut out = [0u16; 16];
    let mut i = 0;
    while i < s.len() {
        out[i] = s[i] as u16;
        i += 1;
    }
    out
};

unsafe extern "system" fn registration_get_name(_this: *mut Obj) -> PCWSTR {
    MODULE_NAME.as_ptr()
}

unsafe extern "system" fn registration_get_id(this: *mut Obj) -> *mut c_void {
    // The module's id: any stable pointer-sized value.
    this.cast()
}

unsafe extern "system" fn registration_set_request_notifications(
    this: *mut Obj,
    factory: *mut Object,
    request: DWORD,
    post: DWORD,
) -> HRESULT {
    guarded(E_FAIL, || {
        if this.is_null() || factory.is_null() {
            return E_INVALIDARG;
        }
        // SAFETY: the registration object is the simulator's `Registration`
        // (its `Obj` first), alive during `RegisterModule`.
        let reg = unsafe { &mut *this.cast::<Registration>() };
        reg.factory = factory;
        reg.request_notifications |= request;
        reg.post_notifications |= post;
        S_OK
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(headers: &'a http::HeaderMap, url: &'a [u8]) -> RawFields<'a> {
        RawFields {
            method: "POST",
            raw_url: url,
            origin: "http://localhost",
            cooked_path: "/a b",
            cooked_query: "?q",
            version: (1, 1),
            headers,
            request_id: 7,
            remote: "[2001:db8::7]:50123".parse().unwrap(),
            local: "192.0.2.1:8080".parse().unwrap(),
        }
    }

    #[test]
    fn addresses_are_windows_sockaddrs_in_the_raw_request() {
        let h = http::HeaderMap::new();
        let raw = RawRequest::new(fields(&h, b"/")).unwrap();
        let (remote, local) = (
            raw.req.Address.pRemoteAddress,
            raw.req.Address.pLocalAddress,
        );
        assert_eq!(remote.cast_const(), (&raw const raw.addresses[0]).cast());
        assert_eq!(local.cast_const(), (&raw const raw.addresses[1]).cast());
        let v6 = raw.addresses[0];
        assert_eq!(v6.sin6_family, 23, "Windows' AF_INET6");
        assert_eq!(v6.sin6_port.to_ne_bytes(), 50123u16.to_be_bytes());
        assert_eq!(
            std::net::Ipv6Addr::from(v6.sin6_addr),
            "2001:db8::7".parse::<std::net::Ipv6Addr>().unwrap()
        );
        // SAFETY: the local address was written as a SOCKADDR_IN at the start
        // of its storage.
        let v4 = unsafe { local.cast::<SOCKADDR_IN>().read() };
        assert_eq!(v4.sin_family, 2);
        assert_eq!(v4.sin_port.to_ne_bytes(), 8080u16.to_be_bytes());
        assert_eq!(v4.sin_addr, [192, 0, 2, 1]);
    }

    #[test]
    fn header_values_are_packed_without_terminators() {
        let mut h = http::HeaderMap::new();
        h.insert("host", "ab".parse().unwrap());
        h.insert("user-agent", "ua".parse().unwrap());
        h.insert("x-custom", "v1".parse().unwrap());
        h.append("accept", "x".parse().unwrap());
        h.append("accept", "y".parse().unwrap());
        let raw = RawRequest::new(fields(&h, b"/a%20b?q")).unwrap();
        let known = &raw.req.Headers.KnownHeaders;
        let host = known[28];
        assert_eq!(host.RawValueLength, 2);
        // SAFETY: the value and the byte after it lie within the packed
        // buffer (another header follows).
        let (value, after) = unsafe {
            (
                std::slice::from_raw_parts(host.pRawValue, 2),
                *host.pRawValue.add(2),
            )
        };
        assert_eq!(value, b"ab");
        assert_ne!(after, 0, "no NUL after a header value");
        assert_eq!(known[20].RawValueLength, 3, "accept: x,y");
        assert_eq!(raw.req.Headers.UnknownHeaderCount, 1);
        // SAFETY: one unknown header.
        let u = unsafe { &*raw.req.Headers.pUnknownHeaders };
        // SAFETY: the name with its length.
        let name = unsafe { std::slice::from_raw_parts(u.pName, u.NameLength as usize) };
        assert_eq!(name, b"X-Custom");
        let cooked = raw.req.CookedUrl;
        assert_eq!(cooked.AbsPathLength, 8, "4 UTF-16 units, in bytes");
        assert_eq!(cooked.QueryStringLength, 4);
        assert_eq!(raw.req.RawUrlLength, 8);
    }

    #[test]
    fn lengths_over_ushort_are_refused() {
        let mut h = http::HeaderMap::new();
        h.insert("x-big", "v".repeat(70_000).parse().unwrap());
        let err = RawRequest::new(fields(&h, b"/")).err().unwrap();
        assert!(err.contains("header value"), "{err}");
        let long = vec![b'a'; 70_000];
        let h = http::HeaderMap::new();
        let err = RawRequest::new(fields(&h, &long)).err().unwrap();
        assert!(err.contains("URL"), "{err}");
    }
}
