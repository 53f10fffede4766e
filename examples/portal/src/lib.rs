//! The reference app: a small portal over auth-container.
//!
//! Pages: "who am I" (`/`), users (`/admin/users`: list, activate,
//! deactivate), authentication (`/admin/auth`: enable the container plugin,
//! header, fallback header, clean username) and permissions
//! (`/admin/permissions`: anonymous access, activation mode) — the last three
//! for administrators only — and the same as JSON under `/api/`. Settings
//! changed here are stored in the user store's database, as Kallithea keeps its
//! own admin settings, and apply to the next request.
//!
//! [`Portal::dispatcher`] gives the app with the plugin in front, for any host.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod api;
mod config;
#[cfg(feature = "iis")]
pub mod iis;
mod pages;
mod security;
mod stored;

pub use config::PortalConfig;
pub use stored::AdminSettings;

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use auth_container::{
    AccountList, AuthContainer, CachedDirectory, DirectoryError, EntryRefused, Settings,
    SqliteDirectory, StoredUser,
};
use axum::routing::{get, post};
use axum::Router;
use kallithea_core::{Dispatcher, Limits, User};

/// The store's file name inside the data directory.
pub const STORE_FILE: &str = "kallithea.sqlite3";

/// How long a form token stays valid after the page carrying it was served.
pub const FORM_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Why the portal could not start.
#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    /// The user store could not be opened.
    #[error(transparent)]
    Store(#[from] DirectoryError),
    /// The container authentication settings are invalid (each problem named).
    #[error("auth_container: {0}")]
    Settings(String),
    /// Entries of `admins` that cannot stand (each says why and what to write).
    #[error("admins: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Admins(Vec<EntryRefused>),
    /// The operating system's random source failed.
    #[error("cannot make the form key: {0}")]
    Random(std::io::Error),
}

/// The portal: its plugin, store and administrators.
pub struct Portal {
    plugin: Arc<AuthContainer<SqliteDirectory>>,
    store: SqliteDirectory,
    /// The `admins` entries as configured; matched under the settings in
    /// force (see [`AccountList`]).
    admins: Vec<String>,
    /// The key of the form tokens, shared through the store by every process
    /// serving it (IIS worker processes, the next one after a recycle).
    form_key: Vec<u8>,
}

/// The store setting holding the form key.
const FORM_KEY_SETTING: &str = "form_key";

/// `bytes` random bytes as hex, from the operating system's CSPRNG.
pub fn random_hex(bytes: usize) -> std::io::Result<String> {
    kallithea_core::secret::random_hex(bytes)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Compares in time that depends on the lengths only.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

impl Portal {
    /// Opens the portal's store in `data_dir` (created if needed), applies the
    /// settings stored there over `settings`, and sets up the plugin.
    /// `admins` are accounts written as the host reports them
    /// (`EXAMPLE\alice`; see [`AccountList`] for bare names) with admin rights
    /// whatever the store says; an entry that cannot stand stops the start
    /// with the reason.
    pub fn open(
        data_dir: &Path,
        settings: Settings,
        admins: Vec<String>,
    ) -> Result<Arc<Portal>, PortalError> {
        // The file's settings first: an IIS DLL's `[app]` section is read
        // without the host knowing its rules.
        stored::check(&settings).map_err(PortalError::Settings)?;
        let store = SqliteDirectory::open(data_dir.join(STORE_FILE))?;
        let settings = match stored::load(&store)? {
            Some(admin) => {
                let applied = admin.apply(settings.clone());
                match stored::check(&applied) {
                    Ok(()) => applied,
                    Err(why) => {
                        // Stored by an older version that checked less: the
                        // configuration file's (checked) settings stand until
                        // an administrator saves valid ones.
                        tracing::error!(
                            store = %store.path().display(),
                            problems = %why,
                            "the authentication settings stored by the admin pages are invalid and are ignored; the configuration file's apply"
                        );
                        settings
                    }
                }
            }
            None => settings,
        };
        AccountList::new(&admins, &settings).map_err(PortalError::Admins)?;
        for ambiguity in auth_container::ambiguities(&settings) {
            tracing::warn!("{ambiguity}");
        }
        let fresh = random_hex(32).map_err(PortalError::Random)?;
        let form_key = store
            .setting_or_insert(FORM_KEY_SETTING, &fresh)?
            .into_bytes();
        let directory = Arc::new(CachedDirectory::new(store.clone(), settings.cache_ttl));
        let plugin = Arc::new(AuthContainer::new(settings, directory));
        Ok(Arc::new(Portal {
            plugin,
            store,
            admins,
            form_key,
        }))
    }

    /// The app with auth-container in front and `limits`, ready for any host.
    pub fn dispatcher(self: &Arc<Self>, limits: Limits) -> Dispatcher {
        Dispatcher::builder(self.router())
            .limits(limits)
            .auth(Arc::clone(&self.plugin))
            .build()
    }

    /// The portal's routes.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/", get(pages::whoami))
            .route("/admin/users", get(pages::users))
            .route("/admin/users/{name}/{action}", post(pages::user_action))
            .route("/admin/auth", get(pages::auth).post(pages::auth_save))
            .route(
                "/admin/permissions",
                get(pages::permissions).post(pages::permissions_save),
            )
            .route("/api/whoami", get(api::whoami))
            .route("/api/users", get(api::users))
            .route("/api/users/import", post(api::import))
            .route("/api/users/{name}/{action}", post(api::user_action))
            .route("/api/settings", get(api::settings).put(api::settings_save))
            .layer(axum::middleware::map_response(security::protect))
            .with_state(Arc::clone(self))
    }

    /// The plugin (to read or change its settings).
    pub fn plugin(&self) -> &Arc<AuthContainer<SqliteDirectory>> {
        &self.plugin
    }

    /// The configured administrators under the settings in force.
    fn admin_list(&self, settings: &Settings) -> AccountList {
        AccountList::new(&self.admins, settings).unwrap_or_else(|refused| {
            // `save_settings` keeps this from happening; never widen on error.
            for r in refused {
                tracing::error!(error = %r, "admins entry refused under the current settings");
            }
            AccountList::default()
        })
    }

    /// Whether `user` administers the portal: named in `admins` (matched with
    /// the domain or realm the user signed in from), or marked admin in the
    /// store.
    async fn is_admin(&self, user: &User) -> bool {
        if user.anonymous {
            return false;
        }
        let settings = self.plugin.settings();
        if self.admin_list(&settings).matches(
            &user.username,
            user.external_name.as_deref(),
            &settings,
        ) {
            return true;
        }
        // The store's flag belongs to the account that was given it: where
        // domains merge into one user, only that account's identity uses it.
        matches!(self.plugin.directory().resolve(&user.username).await,
        Ok(Some(u)) if u.admin
            && auth_container::same_account(
                user.external_name.as_deref(),
                u.extern_name.as_deref(),
                &settings,
            ))
    }

    /// Whether a stored user is an administrator named in the configuration
    /// (judged by the identity it last signed in with), for many users at
    /// once: the entries are read under the settings in force once.
    pub fn configured_admins(&self) -> impl Fn(&StoredUser) -> bool {
        let settings = self.plugin.settings();
        let list = self.admin_list(&settings);
        move |u| list.matches(&u.username, u.extern_name.as_deref(), &settings)
    }

    /// The user names the `admins` entries clean to.
    pub fn admins(&self) -> Vec<String> {
        let settings = self.plugin.settings();
        self.admin_list(&settings)
            .usernames()
            .map(str::to_owned)
            .collect()
    }

    /// The form token for `user` in the browser session `session`, issued at
    /// `issued` (seconds since the Unix epoch): `issued.mac`, the MAC being
    /// HMAC-SHA256 under the store's form key over all three. Every process
    /// serving the same store makes and accepts the same tokens (forms survive
    /// a recycle and work across IIS worker processes); a token is accepted
    /// for [`FORM_TOKEN_TTL`], from the same user and session only.
    pub fn form_token(&self, user: &str, session: &str, issued: u64) -> String {
        format!("{issued}.{}", self.form_mac(user, session, issued))
    }

    fn form_mac(&self, user: &str, session: &str, issued: u64) -> String {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.form_key)
            .expect("HMAC takes keys of any length");
        mac.update(b"kallithea-portal-form\0");
        mac.update(&(user.len() as u64).to_be_bytes());
        mac.update(user.as_bytes());
        mac.update(&(session.len() as u64).to_be_bytes());
        mac.update(session.as_bytes());
        mac.update(&issued.to_be_bytes());
        kallithea_core::secret::hex(&mac.finalize().into_bytes()[..16])
    }

    /// A token for `user` and `session` issued now.
    fn form_token_now(&self, user: &str, session: &str) -> String {
        self.form_token(user, session, unix_now())
    }

    /// Whether `token` was made by [`form_token`](Self::form_token) for `user`
    /// and `session` and is still valid at `now`.
    pub fn form_token_ok(&self, user: &str, session: &str, token: &str, now: u64) -> bool {
        let Some((issued, mac)) = token.split_once('.') else {
            return false;
        };
        let Ok(issued) = issued.parse::<u64>() else {
            return false;
        };
        // A little clock difference between worker processes is tolerated.
        let fresh = issued <= now + 60 && now.saturating_sub(issued) <= FORM_TOKEN_TTL.as_secs();
        fresh
            && same_secret(
                self.form_mac(user, session, issued).as_bytes(),
                mac.as_bytes(),
            )
    }

    /// Whether `me` may deactivate `target`: anyone but themselves. Whoever
    /// deactivates is an active administrator, so at least one administrator
    /// always remains able to sign in.
    fn may_deactivate(&self, me: &User, target: &str) -> Result<(), String> {
        if me.username == target {
            return Err(
                "you cannot deactivate your own account: you would lock yourself out, and you \
                 may be the last active administrator; ask another administrator"
                    .into(),
            );
        }
        Ok(())
    }

    /// Changes the admin-editable settings: applied to the plugin (refused if
    /// invalid) and stored.
    fn save_settings(&self, admin: AdminSettings) -> Result<(), String> {
        let next = admin.clone().apply((*self.plugin.settings()).clone());
        if let Err(refused) = AccountList::new(&self.admins, &next) {
            return Err(refused
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "));
        }
        self.plugin.set_settings(next).map_err(|issues| {
            issues
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        stored::save(&self.store, &admin).map_err(|e| e.to_string())
    }
}
