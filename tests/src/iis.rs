//! The conformance app's start-up inside IIS, for both bindings (the ISAPI
//! build `tests/isapi-app` and the native-module build `tests/native-app`,
//! each one `export!` line). Behind the `iis` feature.

use std::path::PathBuf;

use host_iis::Startup;
use kallithea_core::{BoxError, Dispatcher, PathBase};
use serde::Deserialize;

/// The `[app]` section.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppConfig {
    #[serde(default)]
    container_auth: Option<PathBuf>,
    #[serde(default)]
    fail_start: Option<String>,
}

/// Builds the conformance app for the suite's setup.
pub fn make_app(startup: &Startup<'_>) -> Result<Dispatcher, BoxError> {
    let app: AppConfig = startup.app_config()?;
    if let Some(why) = app.fail_start {
        return Err(why.into());
    }
    let setup = crate::Setup {
        limits: startup.config().limits.clone(),
        // The mount point comes from IIS (APPL_MD_PATH) with each request.
        path_base: PathBase::root(),
        container_auth: app.container_auth.map(|p| startup.resolve(p)),
    };
    crate::dispatcher(&setup)
}
