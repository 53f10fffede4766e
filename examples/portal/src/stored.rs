//! The admin-editable settings, kept in the store's `settings` table.

use auth_container::{Activation, DirectoryError, Settings, SqliteDirectory};
use serde::{Deserialize, Serialize};

/// The key the settings are stored under.
const KEY: &str = "auth_container";

/// What the authentication and permissions pages edit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Whether container authentication is on.
    pub enabled: bool,
    /// The host variable with the user name.
    pub header: String,
    /// The proxy header with the user name, if any.
    pub fallback_header: Option<String>,
    /// Whether domains and realms are stripped.
    pub clean_username: bool,
    /// Whether requests without identity proceed as the anonymous user.
    pub anonymous: bool,
    /// Whether new users start active.
    pub activation: Activation,
}

impl AdminSettings {
    /// The editable part of `settings`.
    pub fn of(settings: &Settings) -> Self {
        AdminSettings {
            enabled: settings.enabled,
            header: settings.header.clone(),
            fallback_header: settings.fallback_header.clone(),
            clean_username: settings.clean_username,
            anonymous: settings.anonymous,
            activation: settings.activation,
        }
    }

    /// `base` with these values.
    pub fn apply(self, base: Settings) -> Settings {
        Settings {
            enabled: self.enabled,
            header: self.header,
            fallback_header: self.fallback_header.filter(|h| !h.trim().is_empty()),
            clean_username: self.clean_username,
            anonymous: self.anonymous,
            activation: self.activation,
            ..base
        }
    }
}

pub(crate) fn load(store: &SqliteDirectory) -> Result<Option<AdminSettings>, DirectoryError> {
    match store.setting(KEY)? {
        None => Ok(None),
        Some(json) => serde_json::from_str(&json)
            .map(Some)
            .map_err(|e| DirectoryError::Store(format!("stored setting {KEY} is unreadable: {e}"))),
    }
}

pub(crate) fn save(
    store: &SqliteDirectory,
    settings: &AdminSettings,
) -> Result<(), DirectoryError> {
    let json = serde_json::to_string(settings).map_err(|e| DirectoryError::Store(e.to_string()))?;
    store.set_setting(KEY, &json)
}

/// The problems of `settings` (stored values applied over the file's), if any.
pub(crate) fn check(settings: &Settings) -> Result<(), String> {
    let mut issues = kallithea_core::config::Issues::default();
    kallithea_core::config::Validate::validate(settings, &mut issues);
    if issues.is_empty() {
        Ok(())
    } else {
        Err(issues
            .list()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "))
    }
}
