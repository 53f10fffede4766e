//! The conformance suite's app as an IIS native module. Its configuration
//! file is the ISAPI app's (`tests/isapi-app`): `[limits]`, and in `[app]`
//! the auth-container store and a start-up failure switch:
//!
//! ```toml
//! [app]
//! container_auth = "users.sqlite3"
//! fail_start = "database unreachable"   # make start-up fail, for tests
//! ```

use std::path::PathBuf;

use host_isapi::Startup;
use kallithea_conformance::Setup;
use kallithea_core::{BoxError, Dispatcher, PathBase};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppConfig {
    #[serde(default)]
    container_auth: Option<PathBuf>,
    #[serde(default)]
    fail_start: Option<String>,
}

fn make_app(startup: &Startup<'_>) -> Result<Dispatcher, BoxError> {
    let app: AppConfig = startup.app_config()?;
    if let Some(why) = app.fail_start {
        return Err(why.into());
    }
    let setup = Setup {
        limits: startup.config().limits.clone(),
        // The mount point comes from IIS (APPL_MD_PATH) with each request.
        path_base: PathBase::root(),
        container_auth: app.container_auth.map(|p| startup.resolve(p)),
    };
    kallithea_conformance::dispatcher(&setup)
}

host_iis_native::export!(make_app);
