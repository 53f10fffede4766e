//! What the IIS simulator's host tests share: the DLLs, private copies of
//! them, simulators under the current profile, and the checks that every
//! session ended once.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use iis_sim::{Config, Profile, RunningSimulator};

/// The conformance app built as `package` (once per test binary).
pub fn dll(package: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = built.iter().find(|(n, _)| n == package) {
        return p.clone();
    }
    let p = iis_sim::build_cdylib(package).unwrap();
    built.push((package.to_owned(), p.clone()));
    p
}

/// A private copy of `package`'s DLL in its own folder, with `config`
/// beside it. The folder goes when this does (declare it before the
/// simulator, so that it outlives it).
pub struct Installed(PathBuf);

impl std::ops::Deref for Installed {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub fn install(package: &str, test: &str, config: &str) -> Installed {
    let profile = PROFILE.try_with(|p| p.name()).unwrap_or("iis");
    let dir = std::env::temp_dir().join(format!(
        "iis-host-{}-{package}-{test}-{profile}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("app.so");
    std::fs::copy(dll(package), &copy).unwrap();
    std::fs::write(dir.join("app.toml"), config).unwrap();
    Installed(copy)
}

tokio::task_local! {
    /// The profile the simulators a case starts take (the matrix sets it).
    pub static PROFILE: Profile;
}

/// A simulator for `dll` under the current [`PROFILE`] (IIS outside the
/// matrix), with `tune` applied on top.
pub async fn start(dll: &Path, tune: impl FnOnce(&mut Config)) -> RunningSimulator {
    let profile = PROFILE.try_with(|p| *p).unwrap_or(Profile::Iis);
    let mut config = Config::new(dll).with_profile(profile);
    tune(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    iis_sim::start(config, listener).await.unwrap()
}

pub async fn finish(sim: RunningSimulator) -> iis_sim::Stats {
    let stats = sim.shutdown().await;
    let problems = stats.problems();
    assert!(problems.is_empty(), "{problems:#?}\n{stats:?}");
    stats
}

/// Ends the test process if it is still alive after a while: for a wait
/// that a deadlock in the DLL could keep from ever returning, on threads
/// the test's own timers need.
pub struct Watchdog(Arc<std::sync::atomic::AtomicBool>);

impl Watchdog {
    pub fn new(limit: Duration, what: &'static str) -> Watchdog {
        let disarmed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&disarmed);
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            while start.elapsed() < limit {
                if flag.load(Ordering::Acquire) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!("watchdog: {what} (no progress in {limit:?})");
            std::process::exit(101);
        });
        Watchdog(disarmed)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Waits until no request is in flight, then checks that all `requests` the
/// simulator saw so far ended their sessions exactly once, without violation.
pub async fn settled(sim: &RunningSimulator, requests: u64) {
    for _ in 0..250 {
        if sim.stats().in_flight == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = sim.stats();
    assert_eq!(stats.in_flight, 0, "{stats:?}\n{:#?}", sim.in_flight());
    assert_eq!(
        (stats.requests, stats.sessions_ended),
        (requests, requests),
        "{stats:?}"
    );
    assert!(stats.violations.is_empty(), "{:?}", stats.violations);
}
