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

mod api;
mod config;
mod pages;
mod stored;

pub use config::PortalConfig;
pub use stored::AdminSettings;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::sync::Arc;

use auth_container::{AuthContainer, CachedDirectory, DirectoryError, Settings, SqliteDirectory};
use axum::routing::{get, post};
use axum::Router;
use kallithea_core::{Dispatcher, Limits, User};

/// The store's file name inside the data directory.
pub const STORE_FILE: &str = "kallithea.sqlite3";

/// An `admins` entry as the application user name: a host name
/// (`EXAMPLE\\alice`, `alice@EXAMPLE.TEST`) is cleaned like an identity; a
/// bare name (`alice`) already is a user name, and only case folding and the
/// length and character rules apply (the allowed domains and realms were
/// checked when that user signed in). Entries that cannot name a user are
/// logged and skipped.
fn admin_name(entry: &str, settings: &Settings) -> Option<String> {
    use auth_container::{clean_username, NameRefused};
    let cleaned = match clean_username(entry, settings) {
        Err(NameRefused::NoDomain) => {
            let bare = Settings {
                allowed_domains: Vec::new(),
                allowed_realms: Vec::new(),
                ..settings.clone()
            };
            clean_username(entry, &bare)
        }
        other => other,
    };
    match cleaned {
        Ok(name) => Some(name),
        Err(e) => {
            tracing::warn!(admin = entry, error = %e, "ignoring an `admins` entry: it cannot name a user");
            None
        }
    }
}

/// The portal: its plugin, store and administrators.
pub struct Portal {
    plugin: Arc<AuthContainer<SqliteDirectory>>,
    store: SqliteDirectory,
    admins: Vec<String>,
    csrf_key: RandomState,
}

impl Portal {
    /// Opens the portal's store in `data_dir` (created if needed), applies the
    /// settings stored there over `settings`, and sets up the plugin.
    /// `admins` are user names (as the plugin cleans them) with admin rights
    /// whatever the store says.
    pub fn open(
        data_dir: &Path,
        settings: Settings,
        admins: Vec<String>,
    ) -> Result<Arc<Portal>, DirectoryError> {
        let store = SqliteDirectory::open(data_dir.join(STORE_FILE))?;
        let settings = match stored::load(&store)? {
            Some(admin) => admin.apply(settings),
            None => settings,
        };
        let admins = admins
            .into_iter()
            .filter_map(|a| admin_name(&a, &settings))
            .collect();
        let directory = Arc::new(CachedDirectory::new(store.clone(), settings.cache_ttl));
        let plugin = Arc::new(AuthContainer::new(settings, directory));
        Ok(Arc::new(Portal {
            plugin,
            store,
            admins,
            csrf_key: RandomState::new(),
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
            .with_state(Arc::clone(self))
    }

    /// The plugin (to read or change its settings).
    pub fn plugin(&self) -> &Arc<AuthContainer<SqliteDirectory>> {
        &self.plugin
    }

    /// Whether `user` administers the portal.
    async fn is_admin(&self, user: &User) -> bool {
        if user.anonymous {
            return false;
        }
        if self.admins.contains(&user.username) {
            return true;
        }
        matches!(self.plugin.directory().resolve(&user.username).await, Ok(Some(u)) if u.admin)
    }

    /// The cleaned administrator names.
    pub fn admins(&self) -> &[String] {
        &self.admins
    }

    /// The form token for `user`: a keyed hash only this process can make, so a
    /// page of another site cannot post the portal's forms with the browser's
    /// ambient Windows credentials.
    fn csrf_token(&self, user: &str) -> String {
        let mut h = self.csrf_key.build_hasher();
        h.write(b"kallithea-portal-form");
        h.write(user.as_bytes());
        format!("{:016x}", h.finish())
    }

    fn csrf_ok(&self, user: &str, token: &str) -> bool {
        let want = self.csrf_token(user);
        want.len() == token.len()
            && want
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |d, (a, b)| d | (a ^ b))
                == 0
    }

    /// Changes the admin-editable settings: applied to the plugin (refused if
    /// invalid) and stored.
    fn save_settings(&self, admin: AdminSettings) -> Result<(), String> {
        let next = admin.clone().apply((*self.plugin.settings()).clone());
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
