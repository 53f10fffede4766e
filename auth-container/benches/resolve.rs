//! How fast the plugin resolves users: a known user from the cache (target
//! < 1 µs), and a first visit that creates the user in SQLite (target < 1 ms).
//!
//! ```text
//! cargo bench -p auth-container --bench resolve
//! ```

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use auth_container::{AuthContainer, CachedDirectory, Settings, SqliteDirectory};
use kallithea_core::{AuthOutcome, AuthPlugin, AuthScheme, ConnectionInfo, Identity};

fn parts_for(name: &str) -> http::request::Parts {
    let mut req = http::Request::new(());
    let addr = SocketAddr::from(([127, 0, 0, 1], 1));
    req.extensions_mut().insert(ConnectionInfo {
        remote: addr,
        local: addr,
        secure: false,
        proxy: None,
    });
    req.extensions_mut()
        .insert(Identity::from_host(name, AuthScheme::Negotiate));
    req.into_parts().0
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("auth-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = SqliteDirectory::open(dir.join("users.sqlite3")).unwrap();
    let settings = Settings::default();
    let directory = Arc::new(CachedDirectory::new(store, settings.cache_ttl));
    let plugin = AuthContainer::new(settings, Arc::clone(&directory));

    rt.block_on(async {
        // First visits: every name new, so each is cleaned, missed in the
        // cache, looked up and created in SQLite (a committed transaction).
        let n = 2_000;
        let names: Vec<_> = (0..n).map(|i| parts_for(&format!("EXAMPLE\\user{i}"))).collect();
        let started = Instant::now();
        for parts in &names {
            let outcome = plugin.authenticate(parts).await;
            assert!(matches!(outcome, AuthOutcome::Authenticated(_)));
        }
        let per = started.elapsed() / n;
        println!("first visit (create in SQLite): {:>9.1} µs per user   (target < 1000 µs; {n} users)", per.as_secs_f64() * 1e6);

        // Known users: resolved from memory.
        let known = parts_for("EXAMPLE\\user7");
        let n = 1_000_000;
        let started = Instant::now();
        for _ in 0..n {
            let outcome = plugin.authenticate(black_box(&known)).await;
            assert!(matches!(outcome, AuthOutcome::Authenticated(_)));
        }
        let per = started.elapsed() / n;
        println!("known user (whole plugin decision): {:>6.0} ns per request (target < 1000 ns; {n} requests)", per.as_secs_f64() * 1e9);

        let started = Instant::now();
        for _ in 0..n {
            black_box(directory.cached(black_box("user7")));
        }
        let per = started.elapsed() / n;
        println!("cache lookup alone:                 {:>6.0} ns", per.as_secs_f64() * 1e9);
    });
    let _ = std::fs::remove_dir_all(&dir);
}
