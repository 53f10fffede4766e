//! The portal as an ISAPI extension: IIS authenticates the user (Windows
//! authentication), the extension turns `REMOTE_USER` into a portal user.
//!
//! Configuration: `portal_isapi.toml` beside the DLL (or the file
//! `KALLITHEA_IIS_CONFIG` names):
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

host_isapi::export!(kallithea_portal::iis::make_app, "Kallithea portal");
