//! The portal as an IIS native module: IIS authenticates the user (Windows
//! authentication), the module takes the user from `IHttpUser` and the
//! portal turns it into a portal user.
//!
//! Configuration: `portal_iis.toml` beside the DLL (or the file
//! `KALLITHEA_IIS_CONFIG` names), the same format as the ISAPI
//! extension's:
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

host_iis_native::export!(kallithea_portal::iis::make_app);
