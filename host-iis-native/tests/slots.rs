//! The module's own `CHttpModule` table: every one of its 31 slots filled,
//! the handlers the module serves distinct from the do-nothing one. (The
//! slot numbers themselves are checked against the ABI reference in
//! `iis-sys`.)

use host_iis_native::ffi::module;

#[test]
fn the_module_table_fills_all_31_slots_with_distinct_handlers_where_it_matters() {
    let t = module::module_vtable();
    assert_eq!(t.len(), 31);
    assert!(t.iter().all(|p| !p.is_null()), "a null CHttpModule slot");
    use host_iis_native::ffi::{
        MODULE_DESTRUCTOR, MODULE_DISPOSE, MODULE_ON_ASYNC_COMPLETION, MODULE_ON_BEGIN_REQUEST,
        MODULE_ON_EXECUTE_REQUEST_HANDLER,
    };
    let other = t[MODULE_ON_BEGIN_REQUEST.index];
    for s in [
        MODULE_ON_EXECUTE_REQUEST_HANDLER,
        MODULE_ON_ASYNC_COMPLETION,
        MODULE_DISPOSE,
        MODULE_DESTRUCTOR,
    ] {
        assert_ne!(t[s.index], other, "{} has the do-nothing handler", s.method);
    }
    // Every other notification shares the do-nothing handler.
    let distinct: std::collections::HashSet<_> = t.iter().collect();
    assert_eq!(distinct.len(), 5);
}
