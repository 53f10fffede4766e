//! The vtables the simulator hands a module, one per IIS interface, at the
//! reference slots; every slot it does not serve records a violation.

use super::*;

// ---------------------------------------------------------------------------
// The IIS side: what the module calls.

/// Runs a callback body: a panic in the simulator must not unwind into the
/// module.
pub(crate) fn guarded<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// The request behind an object (a violation if it ended).
///
/// # Safety
/// `this` is one of the simulator's objects (live or in the graveyard).
pub(crate) unsafe fn request_of(this: *mut Obj, what: &str) -> Option<Arc<SimRequest>> {
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
pub(crate) unsafe fn simulator_of(this: *mut Obj) -> Option<Arc<Shared>> {
    if this.is_null() {
        return None;
    }
    // SAFETY: the caller's promise.
    registry::simulator(unsafe { (*this).handle })
}

/// The stub in every slot the simulator does not serve.
pub(crate) unsafe extern "system" fn unserved<const SLOT: usize>(this: *mut Obj) -> usize {
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
pub(crate) const UNSERVED: [*const c_void; 39] = unserved_table!(
    0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33
    34 35 36 37 38
);

pub(crate) const fn stubs<const N: usize>() -> [*const c_void; N] {
    let mut t = [ptr::null(); N];
    let mut i = 0;
    while i < N {
        t[i] = UNSERVED[i];
        i += 1;
    }
    t
}

pub(crate) const CONTEXT_N: usize = interface_slots("IHttpContext");
pub(crate) const REQUEST_N: usize = interface_slots("IHttpRequest");
pub(crate) const RESPONSE_N: usize = interface_slots("IHttpResponse");
pub(crate) const USER_N: usize = interface_slots("IHttpUser");
pub(crate) const CONNECTION_N: usize = interface_slots("IHttpConnection");
pub(crate) const COMPLETION_N: usize = interface_slots("IHttpCompletionInfo");
pub(crate) const PROVIDER_N: usize = interface_slots("IHttpEventProvider");
pub(crate) const ALLOCATOR_N: usize = interface_slots("IModuleAllocator");
pub(crate) const REGISTRATION_N: usize = interface_slots("IHttpModuleRegistrationInfo");
pub(crate) const SERVER_N: usize = interface_slots("IHttpServer");

macro_rules! vtable {
    ($name:ident, $n:expr, { $($slot:ident => $f:expr,)* }) => {
        pub(crate) static $name: VTable<{ $n }> = {
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
pub(crate) fn sibling(
    req: &SimRequest,
    pick: impl FnOnce(&mut Objects) -> *mut Obj,
) -> *mut Object {
    let Some(native) = req.native() else {
        return ptr::null_mut();
    };
    let mut objects = native.objects.lock().unwrap_or_else(|e| e.into_inner());
    match objects.as_mut() {
        Some(o) => pick(o).cast(),
        None => ptr::null_mut(),
    }
}
