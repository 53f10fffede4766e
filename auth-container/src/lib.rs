//! Kallithea-style container authentication for the Kallithea host framework.
//!
//! The host (IIS with Windows authentication, a Kerberos-aware server, or a
//! front proxy paired with host-hyper) authenticates the user; [`AuthContainer`]
//! turns that identity into an application [`User`](kallithea_core::User):
//! cleans the name (`EXAMPLE\alice` → `alice`), refuses identities from domains
//! that are not allowed, creates the user in the [`UserDirectory`] on first
//! visit (active or awaiting activation), and never lets an identity take over
//! an account created another way.
//!
//! The rules that turn a host name into a user name are written out, with
//! their reasons, in the crate's `IDENTITY.md`; [`clean_name`] implements
//! them and [`AccountList`] matches configured accounts (an app's `admins`)
//! by them.
//!
//! ```no_run
//! # fn t() -> Result<(), auth_container::DirectoryError> {
//! use std::sync::Arc;
//! use auth_container::{AuthContainer, CachedDirectory, Settings, SqliteDirectory};
//!
//! let settings = Settings::default();
//! let store = SqliteDirectory::open("data/users.sqlite3")?;
//! let directory = Arc::new(CachedDirectory::new(store, settings.cache_ttl));
//! let plugin = AuthContainer::new(settings, directory);
//! # let app = kallithea_core::service_fn(|_| async { Ok::<_, std::convert::Infallible>(http::Response::new(kallithea_core::Body::empty())) });
//! let dispatcher = kallithea_core::Dispatcher::builder(app).auth(plugin).build();
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod accounts;
mod cache;
mod clean;
mod directory;
pub mod import;
mod plugin;
mod settings;
mod source;
mod sqlite;

pub use accounts::{ambiguities, same_account, AccountList, EntryRefused};
pub use cache::CachedDirectory;
pub use clean::{clean_name, clean_username, CleanName, CodePoint, NameRefused};
pub use directory::{
    Attributes, Created, DirectoryError, NewUser, StoredUser, UserDirectory, CONTAINER,
};
pub use plugin::{html_escape, AuthContainer, NAME};
pub use settings::{is_identity_variable, Activation, Settings, IDENTITY_VARIABLES};
pub use sqlite::SqliteDirectory;
