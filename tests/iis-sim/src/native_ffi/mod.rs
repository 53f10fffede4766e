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
use iis_sys::native::*;

use crate::native::{self, Item};
use crate::{registry, Shared, SimRequest};

mod context;
mod interfaces;
mod library;
mod request;
mod response;
mod vtables;

pub(crate) use library::*;
pub(crate) use request::ReadTarget;
#[allow(unused_imports)]
use {context::*, interfaces::*, request::*, response::*, vtables::*};

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
    pub(crate) fn name(self) -> &'static str {
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
    pub(crate) vtbl: *const *const c_void,
    /// The request's handle ([`registry::handle`]); sequence 0 for objects
    /// that belong to no request.
    pub(crate) handle: usize,
    pub(crate) kind: Kind,
}

impl Obj {
    pub(crate) fn new<const N: usize>(table: &'static VTable<N>, handle: usize, kind: Kind) -> Obj {
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
    pub(crate) ctx: Obj,
    pub(crate) request: Obj,
    pub(crate) response: Obj,
    pub(crate) user: Obj,
    pub(crate) connection: Obj,
    pub(crate) provider: Obj,
    pub(crate) completion: Obj,
    pub(crate) allocator: Obj,
}

/// Ended requests' objects, kept so that a late call reads valid memory.
pub(crate) static GRAVEYARD: Mutex<VecDeque<Retired>> = Mutex::new(VecDeque::new());

pub(crate) struct Retired(#[allow(dead_code)] Box<Objects>);

// SAFETY: retired objects are only kept, never used, by the simulator.
unsafe impl Send for Retired {}
pub(crate) const GRAVEYARD_SIZE: usize = 4096;

/// The `HTTP_REQUEST` IIS hands out, with every buffer it points into.
pub(crate) struct RawRequest {
    pub(crate) req: Box<HTTP_REQUEST>,
    pub(crate) method: Vec<u8>,
    /// Known header values then unknown names and values, packed with no
    /// NUL between them (IIS's values are not NUL-terminated).
    pub(crate) _packed: Vec<u8>,
    pub(crate) _unknown: Vec<HTTP_UNKNOWN_HEADER>,
    pub(crate) _raw_url: Vec<u8>,
    pub(crate) _full_url: Vec<u16>,
    /// Name (lower case) → (offset, length) in `_packed`, for `GetHeader`.
    pub(crate) index: Vec<(String, *const u8, u16)>,
    /// The remote and the local address as `SOCKADDR`s in Windows' layout
    /// (an IPv4 one in the first 16 bytes), for `HTTP_REQUEST.Address`,
    /// `GetRemoteAddress` and `GetLocalAddress`.
    pub(crate) addresses: Box<[SOCKADDR_IN6; 2]>,
}

/// `addr` as Windows lays out its `SOCKADDR` (`SOCKADDR_IN` or
/// `SOCKADDR_IN6`, Windows' family numbers, port in network order), in
/// storage that holds either.
pub(crate) fn windows_sockaddr(addr: std::net::SocketAddr, storage: &mut SOCKADDR_IN6) {
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
pub(crate) fn canonical_case(name: &str) -> String {
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
    pub(crate) name: Vec<u16>,
    pub(crate) auth_type: Vec<u16>,
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
    pub(crate) blocks: Vec<Box<[u64]>>,
}

impl Arena {
    /// `bytes` zeroed bytes, 8-aligned; valid until the arena drops.
    pub(crate) fn alloc(&mut self, bytes: usize) -> *mut c_void {
        let mut block = vec![0u64; bytes.div_ceil(8).max(1)].into_boxed_slice();
        let p = block.as_mut_ptr().cast();
        self.blocks.push(block);
        p
    }

    pub(crate) fn copy<T: Copy>(&mut self, data: &[T]) -> *const T {
        let bytes = std::mem::size_of_val(data);
        let p = self.alloc(bytes).cast::<T>();
        // SAFETY: `p` has room for `data` and is 8-aligned.
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
        p
    }
}

/// What one request in native mode holds on the IIS side.
pub(crate) struct NativeObjects {
    pub(crate) objects: Mutex<Option<Box<Objects>>>,
    /// The objects' address (stable: boxed), for calls into the module.
    pub(crate) ptrs: ObjectPtrs,
    pub(crate) raw: RawRequest,
    pub(crate) user: Option<UserStrings>,
    pub(crate) arena: Mutex<Arena>,
    pub(crate) module: Mutex<ModulePtr>,
}

#[derive(Clone, Copy)]
pub(crate) struct ObjectPtrs {
    pub(crate) ctx: *mut Object,
    pub(crate) provider: *mut Object,
    pub(crate) completion: *mut Object,
    pub(crate) allocator: *mut Object,
}

#[derive(Clone, Copy)]
pub(crate) struct ModulePtr(*mut Object);

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

    pub(crate) fn module(&self) -> *mut Object {
        self.module.lock().unwrap_or_else(|e| e.into_inner()).0
    }
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
