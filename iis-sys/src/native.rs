//! The raw native-module interface of `httpserv.h` and the `http.h` structs
//! it uses, under their Windows names.
//!
//! IIS objects are C++ interfaces: a pointer to a table of function pointers
//! first. [`Slot`] names every table entry the native-module binding calls
//! or fills and the simulator serves, with the method and signature it must
//! be; this crate's tests check each one against `reference/vtables.tsv`.
//! Struct layouts are
//! asserted at compile time for the target being built against
//! [`layout`]'s table, which the tests check against mingw-w64's `http.h`
//! for x64 and x86.
//!
//! Calling convention: member functions are `thiscall` on 32-bit x86 and the
//! platform's `system` convention elsewhere (`member_fn!`).
#![allow(non_camel_case_types, non_snake_case, missing_docs)]

use std::ffi::c_void;

pub type DWORD = u32;
pub type BOOL = i32;
pub type USHORT = u16;
pub type ULONG = u32;
pub type HRESULT = i32;
pub type PCSTR = *const u8;
pub type PCWSTR = *const u16;

pub const TRUE: BOOL = 1;
pub const FALSE: BOOL = 0;

/// The type of a C++ member function taking `this` first: `thiscall` on
/// 32-bit x86, `system` elsewhere.
#[cfg(target_arch = "x86")]
#[macro_export]
#[doc(hidden)]
macro_rules! member_fn {
    (fn($($arg:ty),*) $(-> $ret:ty)?) => { unsafe extern "thiscall" fn($($arg),*) $(-> $ret)? };
}
/// The type of a C++ member function taking `this` first: `thiscall` on
/// 32-bit x86, `system` elsewhere.
#[cfg(not(target_arch = "x86"))]
#[macro_export]
#[doc(hidden)]
macro_rules! member_fn {
    (fn($($arg:ty),*) $(-> $ret:ty)?) => { unsafe extern "system" fn($($arg),*) $(-> $ret)? };
}

/// Defines functions with the member-function convention ([`member_fn!`]).
#[cfg(target_arch = "x86")]
#[macro_export]
#[doc(hidden)]
macro_rules! member_defs {
    ($( $(#[$m:meta])* $v:vis unsafe fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block )*) => {
        $( $(#[$m])* $v unsafe extern "thiscall" fn $name($($arg: $ty),*) $(-> $ret)? $body )*
    };
}
/// Defines functions with the member-function convention ([`member_fn!`]).
#[cfg(not(target_arch = "x86"))]
#[macro_export]
#[doc(hidden)]
macro_rules! member_defs {
    ($( $(#[$m:meta])* $v:vis unsafe fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block )*) => {
        $( $(#[$m])* $v unsafe extern "system" fn $name($($arg: $ty),*) $(-> $ret)? $body )*
    };
}

/// Any IIS interface object: its vtable pointer first.
#[repr(C)]
pub struct Object {
    pub vtbl: *const *const c_void,
}

/// One vtable entry: the interface, the absolute slot index, and the
/// method and signature (as `httpserv.h` declares it, `this` omitted) that
/// must sit there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub interface: &'static str,
    pub index: usize,
    pub method: &'static str,
    pub signature: &'static str,
}

macro_rules! slots {
    ($( $name:ident = $iface:ident [$index:literal] $method:literal $sig:literal; )*) => {
        $(
            #[doc = concat!("`", stringify!($iface), "::", $method, "`: `", $sig, "`.")]
            pub const $name: Slot = Slot {
                interface: stringify!($iface),
                index: $index,
                method: $method,
                signature: $sig,
            };
        )*
        /// Every slot this crate calls or fills.
        pub const SLOTS: &[Slot] = &[$($name),*];
    };
}

slots! {
    // What the module builds.
    MODULE_ON_BEGIN_REQUEST = CHttpModule[0] "OnBeginRequest" "REQUEST_NOTIFICATION_STATUS (IHttpContext *, IHttpEventProvider *)";
    MODULE_ON_EXECUTE_REQUEST_HANDLER = CHttpModule[14] "OnExecuteRequestHandler" "REQUEST_NOTIFICATION_STATUS (IHttpContext *, IHttpEventProvider *)";
    MODULE_ON_CUSTOM_REQUEST_NOTIFICATION = CHttpModule[27] "OnCustomRequestNotification" "REQUEST_NOTIFICATION_STATUS (IHttpContext *, ICustomNotificationProvider *)";
    MODULE_ON_ASYNC_COMPLETION = CHttpModule[28] "OnAsyncCompletion" "REQUEST_NOTIFICATION_STATUS (IHttpContext *, DWORD, BOOL, IHttpEventProvider *, IHttpCompletionInfo *)";
    MODULE_DISPOSE = CHttpModule[29] "Dispose" "void ()";
    MODULE_DESTRUCTOR = CHttpModule[30] "~CHttpModule" "void () noexcept";
    FACTORY_GET_HTTP_MODULE = IHttpModuleFactory[0] "GetHttpModule" "HRESULT (CHttpModule **, IModuleAllocator *)";
    FACTORY_TERMINATE = IHttpModuleFactory[1] "Terminate" "void ()";
    // What the module calls.
    REGISTRATION_SET_REQUEST_NOTIFICATIONS = IHttpModuleRegistrationInfo[2] "SetRequestNotifications" "HRESULT (IHttpModuleFactory *, DWORD, DWORD)";
    CONTEXT_GET_CONNECTION = IHttpContext[2] "GetConnection" "IHttpConnection *()";
    CONTEXT_INDICATE_COMPLETION = IHttpContext[8] "IndicateCompletion" "void (REQUEST_NOTIFICATION_STATUS)";
    CONTEXT_GET_REQUEST = IHttpContext[3] "GetRequest" "IHttpRequest *()";
    CONTEXT_GET_RESPONSE = IHttpContext[4] "GetResponse" "IHttpResponse *()";
    CONTEXT_GET_USER = IHttpContext[6] "GetUser" "IHttpUser *() const";
    CONTEXT_POST_COMPLETION = IHttpContext[9] "PostCompletion" "HRESULT (DWORD)";
    CONTEXT_GET_SERVER_VARIABLE = IHttpContext[15] "GetServerVariable" "HRESULT (PCSTR, PCSTR *, DWORD *)";
    CONTEXT_GET_SERVER_VARIABLE_WIDE = IHttpContext[16] "GetServerVariable" "HRESULT (PCSTR, PCWSTR *, DWORD *)";
    CONTEXT_CANCEL_IO = IHttpContext[36] "CancelIo" "HRESULT ()";
    CONNECTION_IS_CONNECTED = IHttpConnection[0] "IsConnected" "BOOL () const";
    REQUEST_GET_RAW_HTTP_REQUEST = IHttpRequest[1] "GetRawHttpRequest" "HTTP_REQUEST *()";
    REQUEST_GET_HTTP_METHOD = IHttpRequest[8] "GetHttpMethod" "PCSTR () const";
    REQUEST_READ_ENTITY_BODY = IHttpRequest[16] "ReadEntityBody" "HRESULT (void *, DWORD, BOOL, DWORD *, BOOL *)";
    REQUEST_GET_REMAINING_ENTITY_BYTES = IHttpRequest[18] "GetRemainingEntityBytes" "DWORD ()";
    REQUEST_GET_LOCAL_ADDRESS = IHttpRequest[14] "GetLocalAddress" "PSOCKADDR () const";
    REQUEST_GET_REMOTE_ADDRESS = IHttpRequest[15] "GetRemoteAddress" "PSOCKADDR () const";
    RESPONSE_SET_STATUS = IHttpResponse[3] "SetStatus" "HRESULT (USHORT, PCSTR, USHORT, HRESULT, IAppHostConfigException *, BOOL)";
    RESPONSE_SET_HEADER = IHttpResponse[5] "SetHeader" "HRESULT (PCSTR, PCSTR, USHORT, BOOL)";
    RESPONSE_CLEAR = IHttpResponse[10] "Clear" "void ()";
    RESPONSE_SET_NEED_DISCONNECT = IHttpResponse[12] "SetNeedDisconnect" "void ()";
    RESPONSE_WRITE_ENTITY_CHUNKS = IHttpResponse[21] "WriteEntityChunks" "HRESULT (HTTP_DATA_CHUNK *, DWORD, BOOL, BOOL, DWORD *, BOOL *)";
    RESPONSE_FLUSH = IHttpResponse[18] "Flush" "HRESULT (BOOL, BOOL, DWORD *, BOOL *)";
    RESPONSE_DISABLE_BUFFERING = IHttpResponse[22] "DisableBuffering" "void ()";
    RESPONSE_CLOSE_CONNECTION = IHttpResponse[27] "CloseConnection" "void ()";
    USER_GET_USER_NAME = IHttpUser[1] "GetUserName" "PCWSTR ()";
    USER_GET_AUTHENTICATION_TYPE = IHttpUser[2] "GetAuthenticationType" "PCWSTR ()";
    COMPLETION_GET_BYTES = IHttpCompletionInfo[0] "GetCompletionBytes" "DWORD () const";
    COMPLETION_GET_STATUS = IHttpCompletionInfo[1] "GetCompletionStatus" "HRESULT () const";
    // Served by the IIS simulator, not called by this crate.
    REGISTRATION_GET_NAME = IHttpModuleRegistrationInfo[0] "GetName" "PCWSTR () const";
    REGISTRATION_GET_ID = IHttpModuleRegistrationInfo[1] "GetId" "HTTP_MODULE_ID () const";
    ALLOCATOR_ALLOCATE_MEMORY = IModuleAllocator[0] "AllocateMemory" "void *(DWORD)";
    EVENT_PROVIDER_SET_ERROR_STATUS = IHttpEventProvider[0] "SetErrorStatus" "void (HRESULT)";
    CONTEXT_GET_RESPONSE_HEADERS_SENT = IHttpContext[5] "GetResponseHeadersSent" "BOOL () const";
    CONTEXT_ALLOCATE_REQUEST_MEMORY = IHttpContext[18] "AllocateRequestMemory" "void *(DWORD)";
    REQUEST_GET_RAW_HTTP_REQUEST_CONST = IHttpRequest[0] "GetRawHttpRequest (const)" "const HTTP_REQUEST *() const";
    REQUEST_GET_HEADER_BY_NAME = IHttpRequest[3] "GetHeader" "PCSTR (PCSTR, USHORT *) const";
    REQUEST_GET_HTTP_VERSION = IHttpRequest[19] "GetHttpVersion" "void (USHORT *, USHORT *) const";
    RESPONSE_CLEAR_HEADERS = IHttpResponse[11] "ClearHeaders" "void ()";
    USER_GET_REMOTE_USER_NAME = IHttpUser[0] "GetRemoteUserName" "PCWSTR ()";
}

/// Slots in `CHttpModule`'s table: 29 notifications, `Dispose`, and the
/// (one-slot, scalar deleting) destructor.
pub const MODULE_SLOTS: usize = 31;
/// Slots in `IHttpModuleFactory`'s table.
pub const FACTORY_SLOTS: usize = 2;

/// The number of slots of each interface IIS implements (the base
/// interfaces, without the `…2`/`…3` extensions), for a host that builds
/// them (the IIS simulator) and for the tests.
pub const IIS_INTERFACE_SLOTS: &[(&str, usize)] = &[
    ("IHttpContext", 39),
    ("IHttpRequest", 24),
    ("IHttpResponse", 28),
    ("IHttpUser", 11),
    ("IHttpConnection", 3),
    ("IHttpCompletionInfo", 2),
    ("IHttpEventProvider", 1),
    ("IHttpModuleRegistrationInfo", 6),
    ("IModuleAllocator", 1),
    ("IHttpServer", 26),
];

/// The number of slots of IIS interface `name` (0 if not listed).
pub const fn interface_slots(name: &str) -> usize {
    let mut i = 0;
    while i < IIS_INTERFACE_SLOTS.len() {
        if const_str_eq(IIS_INTERFACE_SLOTS[i].0, name) {
            return IIS_INTERFACE_SLOTS[i].1;
        }
        i += 1;
    }
    0
}

const fn const_str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

// REQUEST_NOTIFICATION_STATUS
pub const RQ_NOTIFICATION_CONTINUE: i32 = 0;
pub const RQ_NOTIFICATION_PENDING: i32 = 1;
pub const RQ_NOTIFICATION_FINISH_REQUEST: i32 = 2;

// Request notifications.
pub const RQ_EXECUTE_REQUEST_HANDLER: DWORD = 0x0000_0080;

// HRESULTs.
pub const S_OK: HRESULT = 0;
pub const E_FAIL: HRESULT = 0x8000_4005_u32 as HRESULT;
pub const E_NOTIMPL: HRESULT = 0x8000_4001_u32 as HRESULT;
pub const E_INVALIDARG: HRESULT = 0x8007_0057_u32 as HRESULT;
pub const E_OUTOFMEMORY: HRESULT = 0x8007_000E_u32 as HRESULT;

/// `HRESULT_FROM_WIN32`.
pub const fn hresult_from_win32(code: u32) -> HRESULT {
    if code == 0 {
        S_OK
    } else {
        (0x8007_0000 | (code & 0xFFFF)) as HRESULT
    }
}

pub const ERROR_HANDLE_EOF: u32 = 38;
pub const ERROR_INSUFFICIENT_BUFFER: u32 = 122;
pub const ERROR_INVALID_INDEX: u32 = 1413;
pub const ERROR_NOT_FOUND: u32 = 1168;
pub const ERROR_CONNECTION_ABORTED: u32 = 1236;
pub const ERROR_OPERATION_ABORTED: u32 = 995;
pub const ERROR_NETNAME_DELETED: u32 = 64;
pub const ERROR_INVALID_PARAMETER: u32 = 87;

// HTTP_DATA_CHUNK_TYPE
#[allow(non_upper_case_globals)]
pub const HttpDataChunkFromMemory: i32 = 0;

/// `HttpHeaderRequestMaximum`: the number of known request headers.
#[allow(non_upper_case_globals)]
pub const HttpHeaderRequestMaximum: usize = 41;

/// The request header names by `HTTP_HEADER_ID` (request ids 0–40).
pub const REQUEST_HEADER_NAMES: [&str; HttpHeaderRequestMaximum] = [
    "cache-control",
    "connection",
    "date",
    "keep-alive",
    "pragma",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "via",
    "warning",
    "allow",
    "content-length",
    "content-type",
    "content-encoding",
    "content-language",
    "content-location",
    "content-md5",
    "content-range",
    "expires",
    "last-modified",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "authorization",
    "cookie",
    "expect",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "max-forwards",
    "proxy-authorization",
    "referer",
    "range",
    "te",
    "translate",
    "user-agent",
];

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct HTTP_VERSION {
    pub MajorVersion: USHORT,
    pub MinorVersion: USHORT,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HTTP_KNOWN_HEADER {
    pub RawValueLength: USHORT,
    pub pRawValue: PCSTR,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HTTP_UNKNOWN_HEADER {
    pub NameLength: USHORT,
    pub RawValueLength: USHORT,
    pub pName: PCSTR,
    pub pRawValue: PCSTR,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HTTP_COOKED_URL {
    pub FullUrlLength: USHORT,
    pub HostLength: USHORT,
    pub AbsPathLength: USHORT,
    pub QueryStringLength: USHORT,
    pub pFullUrl: PCWSTR,
    pub pHost: PCWSTR,
    pub pAbsPath: PCWSTR,
    pub pQueryString: PCWSTR,
}

/// `AF_INET` in Windows' numbering.
pub const AF_INET: USHORT = 2;
/// `AF_INET6` in Windows' numbering (not Linux's 10).
pub const AF_INET6: USHORT = 23;

/// An IPv4 socket address as Windows lays it out (port and address in
/// network byte order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SOCKADDR_IN {
    pub sin_family: USHORT,
    pub sin_port: USHORT,
    pub sin_addr: [u8; 4],
    pub sin_zero: [u8; 8],
}

/// An IPv6 socket address as Windows lays it out (port and address in
/// network byte order, scope id in host order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SOCKADDR_IN6 {
    pub sin6_family: USHORT,
    pub sin6_port: USHORT,
    pub sin6_flowinfo: u32,
    pub sin6_addr: [u8; 16],
    pub sin6_scope_id: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HTTP_TRANSPORT_ADDRESS {
    pub pRemoteAddress: *mut c_void,
    pub pLocalAddress: *mut c_void,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HTTP_REQUEST_HEADERS {
    pub UnknownHeaderCount: USHORT,
    pub pUnknownHeaders: *mut HTTP_UNKNOWN_HEADER,
    pub TrailerCount: USHORT,
    pub pTrailers: *mut HTTP_UNKNOWN_HEADER,
    pub KnownHeaders: [HTTP_KNOWN_HEADER; HttpHeaderRequestMaximum],
}

/// `HTTP_REQUEST` (= `HTTP_REQUEST_V2` for IIS 7 and later).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HTTP_REQUEST {
    pub Flags: ULONG,
    pub ConnectionId: u64,
    pub RequestId: u64,
    pub UrlContext: u64,
    pub Version: HTTP_VERSION,
    pub Verb: i32,
    pub UnknownVerbLength: USHORT,
    pub RawUrlLength: USHORT,
    pub pUnknownVerb: PCSTR,
    pub pRawUrl: PCSTR,
    pub CookedUrl: HTTP_COOKED_URL,
    pub Address: HTTP_TRANSPORT_ADDRESS,
    pub Headers: HTTP_REQUEST_HEADERS,
    pub BytesReceived: u64,
    pub EntityChunkCount: USHORT,
    pub pEntityChunks: *mut HTTP_DATA_CHUNK,
    pub RawConnectionId: u64,
    pub pSslInfo: *mut c_void,
    /// The tail padding of the `HTTP_REQUEST_V1` base on x86 (its size is
    /// rounded up to 8 there; C++ does not reuse a base's tail padding):
    /// the V2 fields start after it. Empty on x64.
    pub V1TailPadding: [u8; layout::for_target(0, 4)],
    pub RequestInfoCount: USHORT,
    pub pRequestInfo: *mut c_void,
}

/// `HTTP_DATA_CHUNK` with its `FromMemory` member (the only one used); the
/// union's other members are 8-aligned, hence the padding.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HTTP_DATA_CHUNK {
    pub DataChunkType: i32,
    pub FromMemory: FROM_MEMORY,
}

/// The `FromMemory` member of `HTTP_DATA_CHUNK`'s union, padded to the
/// union's size and alignment.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug)]
pub struct FROM_MEMORY {
    pub pBuffer: *mut c_void,
    pub BufferLength: ULONG,
    _union: [u8; layout::for_target(8, 16)],
}

impl HTTP_DATA_CHUNK {
    /// A chunk of `len` bytes at `buffer`.
    pub fn from_memory(buffer: *mut c_void, len: ULONG) -> Self {
        HTTP_DATA_CHUNK {
            DataChunkType: HttpDataChunkFromMemory,
            FromMemory: FROM_MEMORY {
                pBuffer: buffer,
                BufferLength: len,
                _union: [0; layout::for_target(8, 16)],
            },
        }
    }
}

/// The expected layouts, per architecture, as `http.h` defines them.
pub mod layout {
    pub use crate::layout::{for_target, Offset, Size};

    crate::layout_table! {
        HTTP_VERSION (4, 4) {
            MajorVersion: 0, 0;
            MinorVersion: 2, 2;
        }
        HTTP_KNOWN_HEADER (16, 8) {
            RawValueLength: 0, 0;
            pRawValue: 8, 4;
        }
        HTTP_UNKNOWN_HEADER (24, 12) {
            NameLength: 0, 0;
            RawValueLength: 2, 2;
            pName: 8, 4;
            pRawValue: 16, 8;
        }
        HTTP_COOKED_URL (40, 24) {
            FullUrlLength: 0, 0;
            HostLength: 2, 2;
            AbsPathLength: 4, 4;
            QueryStringLength: 6, 6;
            pFullUrl: 8, 8;
            pHost: 16, 12;
            pAbsPath: 24, 16;
            pQueryString: 32, 20;
        }
        SOCKADDR_IN (16, 16) {
            sin_family: 0, 0;
            sin_port: 2, 2;
            sin_addr: 4, 4;
            sin_zero: 8, 8;
        }
        SOCKADDR_IN6 (28, 28) {
            sin6_family: 0, 0;
            sin6_port: 2, 2;
            sin6_flowinfo: 4, 4;
            sin6_addr: 8, 8;
            sin6_scope_id: 24, 24;
        }
        HTTP_TRANSPORT_ADDRESS (16, 8) {
            pRemoteAddress: 0, 0;
            pLocalAddress: 8, 4;
        }
        HTTP_REQUEST_HEADERS (688, 344) {
            UnknownHeaderCount: 0, 0;
            pUnknownHeaders: 8, 4;
            TrailerCount: 16, 8;
            pTrailers: 24, 12;
            KnownHeaders: 32, 16;
        }
        HTTP_REQUEST (864, 472) {
            Flags: 0, 0;
            ConnectionId: 8, 8;
            RequestId: 16, 16;
            UrlContext: 24, 24;
            Version: 32, 32;
            Verb: 36, 36;
            UnknownVerbLength: 40, 40;
            RawUrlLength: 42, 42;
            pUnknownVerb: 48, 44;
            pRawUrl: 56, 48;
            CookedUrl: 64, 52;
            Address: 104, 76;
            Headers: 120, 84;
            BytesReceived: 808, 432;
            EntityChunkCount: 816, 440;
            pEntityChunks: 824, 444;
            RawConnectionId: 832, 448;
            pSslInfo: 840, 456;
            RequestInfoCount: 848, 464;
            pRequestInfo: 856, 468;
        }
        HTTP_DATA_CHUNK (32, 32) {
            DataChunkType: 0, 0;
            FromMemory.pBuffer: 8, 8;
            FromMemory.BufferLength: 16, 12;
        }
    }

    /// Every constant with its C name, for the header check.
    pub const CONSTANTS: &[(&str, i64)] = {
        use super::*;
        &[
            ("HttpHeaderRequestMaximum", HttpHeaderRequestMaximum as i64),
            ("AF_INET", AF_INET as i64),
            ("AF_INET6", AF_INET6 as i64),
            ("HttpDataChunkFromMemory", HttpDataChunkFromMemory as i64),
            ("HttpHeaderContentLength", 11),
            ("HttpHeaderHost", 28),
            ("HttpHeaderUserAgent", 40),
            ("ERROR_HANDLE_EOF", ERROR_HANDLE_EOF as i64),
            (
                "ERROR_INSUFFICIENT_BUFFER",
                ERROR_INSUFFICIENT_BUFFER as i64,
            ),
            ("ERROR_INVALID_INDEX", ERROR_INVALID_INDEX as i64),
            ("ERROR_NOT_FOUND", ERROR_NOT_FOUND as i64),
            ("ERROR_CONNECTION_ABORTED", ERROR_CONNECTION_ABORTED as i64),
            ("ERROR_OPERATION_ABORTED", ERROR_OPERATION_ABORTED as i64),
            ("ERROR_NETNAME_DELETED", ERROR_NETNAME_DELETED as i64),
            ("ERROR_INVALID_PARAMETER", ERROR_INVALID_PARAMETER as i64),
            ("E_FAIL", E_FAIL as i64),
            ("E_INVALIDARG", E_INVALIDARG as i64),
            ("E_OUTOFMEMORY", E_OUTOFMEMORY as i64),
        ]
    };
}

/// Calls slot `$slot` of the IIS object `$obj` with the member-function
/// convention: `vcall!(obj, SLOT, fn(ArgTypes…) -> Ret; args…)`. Expands to
/// unsafe operations: the caller vouches that `obj` is a live object of the
/// slot's interface and that the types are the slot's signature.
#[macro_export]
#[doc(hidden)]
macro_rules! vcall {
    ($obj:expr, $slot:expr, fn($($t:ty),*) $(-> $r:ty)?; $($arg:expr),*) => {{
        let obj: *mut $crate::native::Object = $obj;
        let entry: *const ::std::ffi::c_void = *(*obj).vtbl.add($slot.index);
        let f: $crate::member_fn!(fn(*mut $crate::native::Object $(, $t)*) $(-> $r)?) =
            ::std::mem::transmute::<*const ::std::ffi::c_void, _>(entry);
        f(obj $(, $arg)*)
    }};
}

/// A vtable this crate builds: function pointers, immutable, shared.
#[repr(transparent)]
pub struct VTable<const N: usize>(pub [*const c_void; N]);

// SAFETY: the table is immutable and holds only function addresses.
#[allow(unsafe_code)]
unsafe impl<const N: usize> Sync for VTable<N> {}
