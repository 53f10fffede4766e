//! The user directory: where application users live.

use kallithea_core::BoxFuture;
use serde::{Deserialize, Serialize};

/// The `extern_type` of users created by, or linked to, container
/// authentication. Only such users can be logged in by a container identity.
pub const CONTAINER: &str = "container";

/// A user as the directory stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StoredUser {
    /// The directory's key.
    pub id: i64,
    /// The normalized user name (cleaned and, by default, lower-cased).
    pub username: String,
    /// Profile attributes.
    #[serde(flatten)]
    pub attributes: Attributes,
    /// Whether the user may log in.
    pub active: bool,
    /// Whether the user administers the portal.
    pub admin: bool,
    /// How the user authenticates: [`CONTAINER`] for container
    /// authentication; anything else (`internal`, `None`) is not matched by a
    /// container identity unless linked.
    pub extern_type: Option<String>,
    /// The identity exactly as the host last reported it (`EXAMPLE\alice`).
    pub extern_name: Option<String>,
}

/// Profile attributes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributes {
    /// E-mail address.
    pub email: Option<String>,
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
}

impl Attributes {
    /// Whether `self` carries a value that `stored` lacks or differs from
    /// (absent values never erase stored ones).
    pub fn changes(&self, stored: &Attributes) -> bool {
        let differs = |new: &Option<String>, old: &Option<String>| new.is_some() && new != old;
        differs(&self.email, &stored.email)
            || differs(&self.first_name, &stored.first_name)
            || differs(&self.last_name, &stored.last_name)
    }
}

/// A user to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewUser {
    /// The normalized user name.
    pub username: String,
    /// Profile attributes.
    pub attributes: Attributes,
    /// Whether the user starts active.
    pub active: bool,
    /// Whether the user administers the portal.
    pub admin: bool,
    /// See [`StoredUser::extern_type`].
    pub extern_type: Option<String>,
    /// See [`StoredUser::extern_name`].
    pub extern_name: Option<String>,
}

/// The result of [`UserDirectory::create`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Created {
    /// The user with that name, new or already there.
    pub user: StoredUser,
    /// Whether this call created it (false: someone else did first).
    pub created: bool,
}

/// Why a directory operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// No user of that name.
    #[error("no user named {0:?}")]
    NotFound(String),
    /// The store failed (I/O, corruption, locking).
    #[error("user store failed: {0}")]
    Store(String),
}

/// Where application users live. Implementations must be safe under
/// concurrent use from several threads and, for shared stores, processes:
/// concurrent [`create`](UserDirectory::create)s of one name leave exactly one
/// user.
pub trait UserDirectory: Send + Sync + 'static {
    /// The user with this normalized name.
    fn find<'a>(
        &'a self,
        username: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredUser>, DirectoryError>>;

    /// Creates the user, or returns the existing one of that name.
    fn create(&self, user: NewUser) -> BoxFuture<'_, Result<Created, DirectoryError>>;

    /// Stores the attributes that are set (absent ones are kept) and the
    /// identity last seen.
    fn update_attributes<'a>(
        &'a self,
        username: &'a str,
        attributes: Attributes,
        extern_name: Option<String>,
    ) -> BoxFuture<'a, Result<StoredUser, DirectoryError>>;

    /// Activates or deactivates the user.
    fn set_active<'a>(
        &'a self,
        username: &'a str,
        active: bool,
    ) -> BoxFuture<'a, Result<StoredUser, DirectoryError>>;

    /// Sets how the user authenticates; linking an existing account to
    /// container authentication is `set_extern_type(name, Some(CONTAINER))`.
    fn set_extern_type<'a>(
        &'a self,
        username: &'a str,
        extern_type: Option<String>,
    ) -> BoxFuture<'a, Result<StoredUser, DirectoryError>>;

    /// Every user, by name.
    fn list(&self) -> BoxFuture<'_, Result<Vec<StoredUser>, DirectoryError>>;
}
