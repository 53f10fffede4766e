//! The portal binary's configuration file.

use std::path::PathBuf;

use auth_container::Settings;
use host_hyper::HyperConfig;
use kallithea_core::config::{Issues, Validate};
use serde::Deserialize;

/// `portal.toml`: where the data lives, who administers, how to serve, and the
/// plugin's starting settings (the admin pages' stored values override them).
///
/// ```toml
/// data_dir = "data"
/// admins = ["alice"]
///
/// [server]
/// listen = "127.0.0.1:8080"
///
/// [auth_container]
/// allowed_domains = ["EXAMPLE"]
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalConfig {
    /// The folder with the user store (and the generated pairing secret).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// User names with admin rights (cleaned like identities).
    #[serde(default)]
    pub admins: Vec<String>,
    /// How host-hyper serves.
    #[serde(default)]
    pub server: HyperConfig,
    /// The container plugin's settings.
    #[serde(default)]
    pub auth_container: Settings,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}

impl Validate for PortalConfig {
    fn validate(&self, issues: &mut Issues) {
        if self.data_dir.as_os_str().is_empty() {
            issues.push("data_dir", "must name a folder");
        }
        issues.nested("server", &self.server);
        issues.nested("auth_container", &self.auth_container);
    }
}
