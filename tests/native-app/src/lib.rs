//! The conformance suite's app as an IIS native module. Its configuration
//! file is the ISAPI app's (`tests/isapi-app`): `[limits]`, and in `[app]`
//! the auth-container store and a start-up failure switch:
//!
//! ```toml
//! [app]
//! container_auth = "users.sqlite3"
//! fail_start = "database unreachable"   # make start-up fail, for tests
//! ```

host_iis_native::export!(kallithea_conformance::iis::make_app);
