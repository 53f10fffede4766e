//! The guard every entry point of an IIS binding runs its body in.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs an entry point's body, turning a panic into `fallback` and a
/// `kallithea::panic` event naming `what`: nothing unwinds into IIS. Every
/// entry point and callback of both bindings runs inside it.
pub fn guarded<T>(what: &str, fallback: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(p) => {
            tracing::error!(
                target: "kallithea::panic",
                panic = %kallithea_core::panic_message(p.as_ref()),
                "{what} panicked; IIS is told it failed"
            );
            fallback
        }
    }
}
