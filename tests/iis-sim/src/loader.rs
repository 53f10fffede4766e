//! The DLLs a simulator has loaded: which kind each is (an ISAPI extension or
//! a native module, told apart by their exports), and one load of a file per
//! process at a time.

use super::*;

pub(crate) static DLLS_IN_USE: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

pub(crate) struct Instance {
    pub(crate) lib: Loaded,
    pub(crate) generation: u64,
}

/// What the DLL is, told apart by its exports.
pub(crate) enum Loaded {
    /// An ISAPI extension (`GetExtensionVersion`, `HttpExtensionProc`,
    /// `TerminateExtension`).
    Isapi(ffi::Library),
    /// A native module (`RegisterModule`).
    Native(native_ffi::ModuleLibrary),
}
