//! The conformance suite's app as an ISAPI extension. Its configuration file
//! gives the limits (`[limits]`) and, in `[app]`, the auth-container store
//! when the suite wants auth-container in front:
//!
//! ```toml
//! [app]
//! container_auth = "users.sqlite3"
//! fail_start = "database unreachable"   # make start-up fail, for tests
//! ```

host_isapi::export!(
    kallithea_conformance::iis::make_app,
    "Kallithea conformance app"
);
