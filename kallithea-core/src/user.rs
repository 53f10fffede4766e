//! The application user an authentication plugin resolved.

/// The application user, resolved by the authentication plugin chain from the
/// host's [`Identity`](crate::Identity) (or anonymous), and placed in the request
/// extensions before the app runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The application's user name (already cleaned, e.g. `alice`).
    pub username: String,
    /// E-mail address, when known.
    pub email: Option<String>,
    /// First name, when known.
    pub first_name: Option<String>,
    /// Last name, when known.
    pub last_name: Option<String>,
    /// Whether this is the anonymous user (no identity, anonymous access on).
    pub anonymous: bool,
    /// The name of the plugin that resolved the user.
    pub authenticated_by: String,
    /// The name the user was resolved from, exactly as the host (or a paired
    /// proxy) reported it (`EXAMPLE\alice`), when a plugin resolved one; an
    /// app that grants rights per domain or realm reads it from here, as
    /// `username` no longer carries them.
    pub external_name: Option<String>,
}

impl User {
    /// A user named `username`, resolved by the plugin `authenticated_by`.
    pub fn new(username: impl Into<String>, authenticated_by: impl Into<String>) -> Self {
        User {
            username: username.into(),
            email: None,
            first_name: None,
            last_name: None,
            anonymous: false,
            authenticated_by: authenticated_by.into(),
            external_name: None,
        }
    }

    /// The anonymous user, as resolved by `authenticated_by`.
    pub fn anonymous(authenticated_by: impl Into<String>) -> Self {
        User {
            anonymous: true,
            ..User::new("anonymous", authenticated_by)
        }
    }
}
