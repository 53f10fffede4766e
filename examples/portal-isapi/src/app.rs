//! The portal's start-up for both IIS builds (the ISAPI extension here and
//! the native module in `examples/portal-iis`, which includes this file):
//! the `[app]` section of the configuration, and `make_app`.

use std::path::PathBuf;

use auth_container::Settings;
use host_isapi::Startup;
use kallithea_core::{BoxError, Dispatcher};
use kallithea_portal::{Portal, PortalError};
use serde::Deserialize;

/// The `[app]` section.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppConfig {
    data_dir: PathBuf,
    #[serde(default)]
    admins: Vec<String>,
    #[serde(default)]
    auth_container: Settings,
}

/// Opens the portal's store in `data_dir` and builds its dispatcher.
pub fn make_app(startup: &Startup<'_>) -> Result<Dispatcher, BoxError> {
    let cfg: AppConfig = startup.app_config()?;
    let data_dir = startup.resolve(&cfg.data_dir);
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| format!("cannot create the data folder {}: {e}", data_dir.display()))?;
    let portal = Portal::open(&data_dir, cfg.auth_container, cfg.admins).map_err(|e| match e {
        PortalError::Store(e) => {
            format!("cannot open the user store in {}: {e}", data_dir.display())
        }
        other => other.to_string(),
    })?;
    Ok(portal.dispatcher(startup.config().limits.clone()))
}
