//! The portal's start-up inside IIS, for both bindings (the ISAPI extension
//! `examples/portal-isapi` and the native module `examples/portal-iis`, each
//! one `export!` line): the `[app]` section of the configuration beside the
//! DLL, and `make_app`. Behind the `iis` feature.

use std::path::PathBuf;

use crate::{Portal, PortalError};
use auth_container::Settings;
use host_iis::Startup;
use kallithea_core::{BoxError, Dispatcher};
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
