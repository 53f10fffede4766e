//! The conformance suite's app as an ISAPI extension. Its configuration file
//! gives the limits (`[limits]`) and, in `[app]`, the auth-container store
//! when the suite wants auth-container in front:
//!
//! ```toml
//! [app]
//! container_auth = "users.sqlite3"
//! fail_start = "database unreachable"   # make start-up fail, for tests
//! ```

mod app;

host_isapi::export!(app::make_app, "Kallithea conformance app");
