//! The portal as an ISAPI extension: IIS authenticates the user (Windows
//! authentication), the extension turns `REMOTE_USER` into a portal user.
//!
//! Configuration: `portal_isapi.toml` beside the DLL (or the file
//! `KALLITHEA_ISAPI_CONFIG` names):
//!
//! ```toml
//! worker_threads = 4
//! drain_timeout = "20s"
//!
//! [app]
//! data_dir = "data"            # relative to this file; holds kallithea.sqlite3
//! admins = ['EXAMPLE\alice']  # as IIS reports them; cleaned like identities
//!
//! [app.auth_container]         # auth-container's settings
//! allowed_domains = ["EXAMPLE"]
//! ```

use std::path::PathBuf;

use auth_container::Settings;
use host_isapi::Startup;
use kallithea_core::{BoxError, Dispatcher};
use kallithea_portal::Portal;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppConfig {
    data_dir: PathBuf,
    #[serde(default)]
    admins: Vec<String>,
    #[serde(default)]
    auth_container: Settings,
}

fn make_app(startup: &Startup<'_>) -> Result<Dispatcher, BoxError> {
    let cfg: AppConfig = startup.app_config()?;
    let data_dir = startup.resolve(&cfg.data_dir);
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| format!("cannot create the data folder {}: {e}", data_dir.display()))?;
    let portal = Portal::open(&data_dir, cfg.auth_container, cfg.admins)
        .map_err(|e| format!("cannot open the user store in {}: {e}", data_dir.display()))?;
    Ok(portal.dispatcher(startup.config().limits.clone()))
}

host_isapi::export!(make_app, "Kallithea portal");
