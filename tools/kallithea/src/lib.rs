//! The `kallithea` command's library: what its subcommands do, testable
//! without a process.
//!
//! - [`pe`]: reads a Windows DLL's machine type and exports, and tells an
//!   ISAPI extension from an IIS native module.
//! - [`install_iis`]: the `web.config` and the install and uninstall
//!   scripts for IIS.
//! - [`doctor`]: configuration mistakes in plain words, with fixes.
//! - [`users`]: import, list, activate and deactivate users in the store.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod doctor;
pub mod install_iis;
pub mod pe;
pub mod users;
