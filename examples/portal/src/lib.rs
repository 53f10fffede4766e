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
    /// The key of the form tokens, shared through the store by every process
    /// serving it (IIS worker processes, the next one after a recycle).
    form_key: Vec<u8>,
}

/// The store setting holding the form key.
const FORM_KEY_SETTING: &str = "form_key";

/// `bytes` random bytes as hex, from the operating system's random source
/// (the keys of a new `RandomState`; hashes under them are unpredictable).
pub fn random_hex(bytes: usize) -> String {
    let keys = RandomState::new();
    (0..bytes.div_ceil(8) as u64)
        .map(|i| {
            let mut h = keys.build_hasher();
            h.write_u64(i);
            format!("{:016x}", h.finish())
        })
        .collect::<String>()[..bytes * 2]
        .to_owned()
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
        let form_key = store
            .setting_or_insert(FORM_KEY_SETTING, &random_hex(32))?
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

    /// The form token for `user`: HMAC-SHA256 under the store's form key, so a
    /// page of another site cannot post the portal's forms with the browser's
    /// ambient Windows credentials. Every process serving the same store makes
    /// the same token, so forms survive a recycle and work across IIS worker
    /// processes.
    pub fn csrf_token(&self, user: &str) -> String {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.form_key)
            .expect("HMAC takes keys of any length");
        mac.update(b"kallithea-portal-form\0");
        mac.update(user.as_bytes());
        mac.finalize().into_bytes()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
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
