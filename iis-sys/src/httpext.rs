//! The raw ISAPI interface of `httpext.h`, under its Windows names.
//!
//! Every struct's size and field offsets are asserted at compile time for the
//! target being built (x86-64 or 32-bit x86), against [`layout`]'s table; the
//! tests of this crate check that same table, and every constant here, against
//! mingw-w64's `httpext.h` with both cross compilers.
#![allow(non_camel_case_types, non_snake_case, missing_docs)]

use std::ffi::{c_char, c_void};

pub type DWORD = u32;
pub type BOOL = i32;
pub type HCONN = *mut c_void;
pub type LPSTR = *mut c_char;
pub type LPCSTR = *const c_char;
pub type LPBYTE = *mut u8;

pub const TRUE: BOOL = 1;
pub const FALSE: BOOL = 0;

/// `ECB::GetServerVariable`.
pub type PFN_GETSERVERVARIABLE = unsafe extern "system" fn(
    hConn: HCONN,
    lpszVariableName: LPSTR,
    lpvBuffer: *mut c_void,
    lpdwSize: *mut DWORD,
) -> BOOL;
/// `ECB::WriteClient`.
pub type PFN_WRITECLIENT = unsafe extern "system" fn(
    ConnID: HCONN,
    Buffer: *mut c_void,
    lpdwBytes: *mut DWORD,
    dwReserved: DWORD,
) -> BOOL;
/// `ECB::ReadClient`.
pub type PFN_READCLIENT =
    unsafe extern "system" fn(ConnID: HCONN, lpvBuffer: *mut c_void, lpdwSize: *mut DWORD) -> BOOL;
/// `ECB::ServerSupportFunction`.
pub type PFN_SERVERSUPPORTFUNCTION = unsafe extern "system" fn(
    hConn: HCONN,
    dwHSERequest: DWORD,
    lpvBuffer: *mut c_void,
    lpdwSize: *mut DWORD,
    lpdwDataType: *mut DWORD,
) -> BOOL;
/// The completion callback registered with `HSE_REQ_IO_COMPLETION`.
pub type PFN_HSE_IO_COMPLETION = unsafe extern "system" fn(
    pECB: *mut EXTENSION_CONTROL_BLOCK,
    pContext: *mut c_void,
    cbIO: DWORD,
    dwError: DWORD,
);

pub const HSE_VERSION_MAJOR: DWORD = 6;
pub const HSE_VERSION_MINOR: DWORD = 0;
/// `MAKELONG(HSE_VERSION_MINOR, HSE_VERSION_MAJOR)`.
pub const HSE_VERSION: DWORD = HSE_VERSION_MINOR | (HSE_VERSION_MAJOR << 16);
pub const HSE_LOG_BUFFER_LEN: usize = 80;
pub const HSE_MAX_EXT_DLL_NAME_LEN: usize = 256;

pub const HSE_STATUS_SUCCESS: DWORD = 1;
pub const HSE_STATUS_SUCCESS_AND_KEEP_CONN: DWORD = 2;
pub const HSE_STATUS_PENDING: DWORD = 3;
pub const HSE_STATUS_ERROR: DWORD = 4;

pub const HSE_REQ_SEND_RESPONSE_HEADER: DWORD = 3;
pub const HSE_REQ_DONE_WITH_SESSION: DWORD = 4;
pub const HSE_REQ_IO_COMPLETION: DWORD = 1005;
pub const HSE_REQ_IS_KEEP_CONN: DWORD = 1008;
pub const HSE_REQ_ASYNC_READ_CLIENT: DWORD = 1010;
pub const HSE_REQ_ABORTIVE_CLOSE: DWORD = 1014;
pub const HSE_REQ_SEND_RESPONSE_HEADER_EX: DWORD = 1016;
pub const HSE_REQ_CLOSE_CONNECTION: DWORD = 1017;
pub const HSE_REQ_IS_CONNECTED: DWORD = 1018;
pub const HSE_REQ_SEND_CUSTOM_ERROR: DWORD = 1028;
pub const HSE_REQ_IS_IN_PROCESS: DWORD = 1030;
pub const HSE_REQ_CANCEL_IO: DWORD = 1049;

pub const HSE_TERM_ADVISORY_UNLOAD: DWORD = 1;
pub const HSE_TERM_MUST_UNLOAD: DWORD = 2;

pub const HSE_IO_SYNC: DWORD = 0x0001;
pub const HSE_IO_ASYNC: DWORD = 0x0002;
pub const HSE_IO_DISCONNECT_AFTER_SEND: DWORD = 0x0004;
pub const HSE_IO_SEND_HEADERS: DWORD = 0x0008;
pub const HSE_IO_FINAL_SEND: DWORD = 0x0010;
pub const HSE_IO_NODELAY: DWORD = 0x1000;

/// `cbTotalBytes` of a request body of unknown length (chunked).
pub const HSE_UNKNOWN_LENGTH: DWORD = 0xFFFF_FFFF;

pub const ERROR_HANDLE_EOF: DWORD = 38;
pub const ERROR_NETNAME_DELETED: DWORD = 64;
pub const ERROR_INVALID_PARAMETER: DWORD = 87;
pub const ERROR_INSUFFICIENT_BUFFER: DWORD = 122;
pub const ERROR_NO_DATA: DWORD = 232;
pub const ERROR_OPERATION_ABORTED: DWORD = 995;
pub const ERROR_INVALID_INDEX: DWORD = 1413;

#[repr(C)]
pub struct HSE_VERSION_INFO {
    pub dwExtensionVersion: DWORD,
    pub lpszExtensionDesc: [c_char; HSE_MAX_EXT_DLL_NAME_LEN],
}

/// The request as IIS hands it to `HttpExtensionProc`. The function pointers
/// are `Option` (same layout) so that a null one is caught, not called.
#[repr(C)]
pub struct EXTENSION_CONTROL_BLOCK {
    pub cbSize: DWORD,
    pub dwVersion: DWORD,
    pub ConnID: HCONN,
    pub dwHttpStatusCode: DWORD,
    pub lpszLogData: [c_char; HSE_LOG_BUFFER_LEN],
    pub lpszMethod: LPSTR,
    pub lpszQueryString: LPSTR,
    pub lpszPathInfo: LPSTR,
    pub lpszPathTranslated: LPSTR,
    pub cbTotalBytes: DWORD,
    pub cbAvailable: DWORD,
    pub lpbData: LPBYTE,
    pub lpszContentType: LPSTR,
    pub GetServerVariable: Option<PFN_GETSERVERVARIABLE>,
    pub WriteClient: Option<PFN_WRITECLIENT>,
    pub ReadClient: Option<PFN_READCLIENT>,
    pub ServerSupportFunction: Option<PFN_SERVERSUPPORTFUNCTION>,
}

#[repr(C)]
pub struct HSE_SEND_HEADER_EX_INFO {
    pub pszStatus: LPCSTR,
    pub pszHeader: LPCSTR,
    pub cchStatus: DWORD,
    pub cchHeader: DWORD,
    pub fKeepConn: BOOL,
}

/// The expected layouts, per architecture, as `httpext.h` defines them.
pub mod layout {
    pub use crate::layout::{for_target, Offset, Size};

    crate::layout_table! {
        HSE_VERSION_INFO (260, 260) {
            dwExtensionVersion: 0, 0;
            lpszExtensionDesc: 4, 4;
        }
        EXTENSION_CONTROL_BLOCK (192, 144) {
            cbSize: 0, 0;
            dwVersion: 4, 4;
            ConnID: 8, 8;
            dwHttpStatusCode: 16, 12;
            lpszLogData: 20, 16;
            lpszMethod: 104, 96;
            lpszQueryString: 112, 100;
            lpszPathInfo: 120, 104;
            lpszPathTranslated: 128, 108;
            cbTotalBytes: 136, 112;
            cbAvailable: 140, 116;
            lpbData: 144, 120;
            lpszContentType: 152, 124;
            GetServerVariable: 160, 128;
            WriteClient: 168, 132;
            ReadClient: 176, 136;
            ServerSupportFunction: 184, 140;
        }
        HSE_SEND_HEADER_EX_INFO (32, 20) {
            pszStatus: 0, 0;
            pszHeader: 8, 4;
            cchStatus: 16, 8;
            cchHeader: 20, 12;
            fKeepConn: 24, 16;
        }
    }

    /// Every constant with its C name, for the header check.
    pub const CONSTANTS: &[(&str, u32)] = {
        use super::*;
        &[
            ("HSE_VERSION_MAJOR", HSE_VERSION_MAJOR),
            ("HSE_VERSION_MINOR", HSE_VERSION_MINOR),
            ("HSE_VERSION", HSE_VERSION),
            ("HSE_LOG_BUFFER_LEN", HSE_LOG_BUFFER_LEN as u32),
            ("HSE_MAX_EXT_DLL_NAME_LEN", HSE_MAX_EXT_DLL_NAME_LEN as u32),
            ("HSE_STATUS_SUCCESS", HSE_STATUS_SUCCESS),
            (
                "HSE_STATUS_SUCCESS_AND_KEEP_CONN",
                HSE_STATUS_SUCCESS_AND_KEEP_CONN,
            ),
            ("HSE_STATUS_PENDING", HSE_STATUS_PENDING),
            ("HSE_STATUS_ERROR", HSE_STATUS_ERROR),
            ("HSE_REQ_SEND_RESPONSE_HEADER", HSE_REQ_SEND_RESPONSE_HEADER),
            ("HSE_REQ_DONE_WITH_SESSION", HSE_REQ_DONE_WITH_SESSION),
            ("HSE_REQ_IO_COMPLETION", HSE_REQ_IO_COMPLETION),
            ("HSE_REQ_IS_KEEP_CONN", HSE_REQ_IS_KEEP_CONN),
            ("HSE_REQ_ASYNC_READ_CLIENT", HSE_REQ_ASYNC_READ_CLIENT),
            ("HSE_REQ_ABORTIVE_CLOSE", HSE_REQ_ABORTIVE_CLOSE),
            (
                "HSE_REQ_SEND_RESPONSE_HEADER_EX",
                HSE_REQ_SEND_RESPONSE_HEADER_EX,
            ),
            ("HSE_REQ_CLOSE_CONNECTION", HSE_REQ_CLOSE_CONNECTION),
            ("HSE_REQ_IS_CONNECTED", HSE_REQ_IS_CONNECTED),
            ("HSE_REQ_SEND_CUSTOM_ERROR", HSE_REQ_SEND_CUSTOM_ERROR),
            ("HSE_REQ_IS_IN_PROCESS", HSE_REQ_IS_IN_PROCESS),
            ("HSE_REQ_CANCEL_IO", HSE_REQ_CANCEL_IO),
            ("HSE_TERM_ADVISORY_UNLOAD", HSE_TERM_ADVISORY_UNLOAD),
            ("HSE_TERM_MUST_UNLOAD", HSE_TERM_MUST_UNLOAD),
            ("HSE_IO_SYNC", HSE_IO_SYNC),
            ("HSE_IO_ASYNC", HSE_IO_ASYNC),
            ("HSE_IO_DISCONNECT_AFTER_SEND", HSE_IO_DISCONNECT_AFTER_SEND),
            ("HSE_IO_SEND_HEADERS", HSE_IO_SEND_HEADERS),
            ("HSE_IO_FINAL_SEND", HSE_IO_FINAL_SEND),
            ("HSE_IO_NODELAY", HSE_IO_NODELAY),
            ("ERROR_HANDLE_EOF", ERROR_HANDLE_EOF),
            ("ERROR_NETNAME_DELETED", ERROR_NETNAME_DELETED),
            ("ERROR_INVALID_PARAMETER", ERROR_INVALID_PARAMETER),
            ("ERROR_INSUFFICIENT_BUFFER", ERROR_INSUFFICIENT_BUFFER),
            ("ERROR_NO_DATA", ERROR_NO_DATA),
            ("ERROR_OPERATION_ABORTED", ERROR_OPERATION_ABORTED),
            ("ERROR_INVALID_INDEX", ERROR_INVALID_INDEX),
        ]
    };
}
