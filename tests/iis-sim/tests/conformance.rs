//! The conformance suite against the in-process IIS hosts: the conformance
//! app built as an ISAPI extension DLL and as a native module, each loaded
//! by the IIS simulator and reached over loopback — under every host profile
//! the simulator has ([`Profile::ALL`]), with a table of profile × case.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{HeaderName, HeaderValue};
use iis_sim::{Config, Profile, RunningSimulator, Users, WindowsAuth};
use kallithea_conformance::Capabilities;
use kallithea_conformance::{Driver, RunningApp, Setup};
use kallithea_core::{BoxError, BoxFuture};

const PASSWORD: &str = "conformance-password";

struct SimDriver {
    name: String,
    profile: Profile,
    dll: PathBuf,
    dir: PathBuf,
    next: AtomicUsize,
}

struct Running {
    sim: Option<RunningSimulator>,
    addr: SocketAddr,
}

/// A private copy of the DLL with its configuration beside it: every
/// simulator in a process needs its own.
fn install(dll: &Path, dir: &Path, config: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let copy = dir.join("conformance.so");
    std::fs::copy(dll, &copy).unwrap();
    std::fs::write(dir.join("conformance.toml"), config).unwrap();
    copy
}

impl SimDriver {
    /// Whether the profile leaves out the optional variables.
    fn lean(&self) -> bool {
        self.profile == Profile::Lean
    }
}

impl Driver for SimDriver {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .streaming(true)
            .identity(true)
            .http2_cleartext(true)
            .decoded_target_only(self.lean())
            .silent_disconnects(self.lean())
            .code_page_names_only(self.lean())
    }

    fn start(&self, setup: Setup) -> BoxFuture<'_, Result<Box<dyn RunningApp>, BoxError>> {
        Box::pin(async move {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let mut config = setup.dll_config(|p| p.display().to_string());
            if self.lean() {
                // No APPL_MD_PATH from this host: the mount point is
                // configured.
                config = format!("path_base = \"{}\"\n{config}", setup.path_base.as_str());
            }
            let dll = install(&self.dll, &self.dir.join(n.to_string()), &config);
            let mut sim = Config::new(dll).with_profile(self.profile);
            sim.vdir = setup.path_base.as_str().to_owned();
            sim.auth = WindowsAuth::Basic {
                domain: "EXAMPLE".into(),
                users: Users::AnyWithPassword(PASSWORD.into()),
                anonymous: true,
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let sim = iis_sim::start(sim, listener).await?;
            let addr = sim.local_addr();
            Ok(Box::new(Running {
                sim: Some(sim),
                addr,
            }) as Box<dyn RunningApp>)
        })
    }
}

impl RunningApp for Running {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn identity_headers(&self, user: &str) -> Vec<(HeaderName, HeaderValue)> {
        vec![(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&iis_sim::basic_credentials(user, PASSWORD)).unwrap(),
        )]
    }

    fn resident_memory(&self) -> Option<u64> {
        kallithea_conformance::resident_memory_of("self")
    }

    fn stop(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        let sim = self.sim.take();
        Box::pin(async move {
            if let Some(sim) = sim {
                let stats = sim.shutdown().await;
                let problems = stats.problems();
                assert!(problems.is_empty(), "{problems:#?}\n{stats:?}");
            }
        })
    }
}

/// The suite for one DLL under every profile; the outcomes by profile.
async fn run_profiles(
    host: &str,
    package: &str,
) -> Vec<(String, Vec<(String, kallithea_conformance::Outcome)>)> {
    let dll = iis_sim::build_cdylib(package).unwrap();
    let mut columns = Vec::new();
    // `IIS_SIM_PROFILES=lean,inline` runs only those (while working on one).
    let only = std::env::var("IIS_SIM_PROFILES").ok();
    let chosen = Profile::ALL.into_iter().filter(|p| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|n| n == p.name()))
    });
    for profile in chosen {
        let dir = std::env::temp_dir().join(format!(
            "{package}-{}-{}",
            profile.name(),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let driver = SimDriver {
            name: format!("{host} in the IIS simulator, profile {}", profile.name()),
            profile,
            dll: dll.clone(),
            dir: dir.clone(),
            next: AtomicUsize::new(0),
        };
        let report = kallithea_conformance::run(&driver).await;
        report.print();
        let _ = std::fs::remove_dir_all(&dir);
        columns.push((profile.name().to_owned(), report.outcomes()));
    }
    columns
}

// One test, the two hosts one after the other: the memory cases measure
// this whole process, so two suites must not stream 256 MiB side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_isapi_extension_and_the_native_module_pass_the_conformance_suite_under_every_profile()
{
    let mut failed = Vec::new();
    for (host, package) in [
        ("host-isapi", "conformance-isapi"),
        ("host-iis-native", "conformance-native"),
    ] {
        let columns = run_profiles(host, package).await;
        kallithea_conformance::print_matrix(
            &format!("conformance suite × host profile — {host} in the IIS simulator"),
            &columns,
        );
        for (profile, outcomes) in &columns {
            for (case, outcome) in outcomes {
                if matches!(outcome, kallithea_conformance::Outcome::Fail(_)) {
                    failed.push(format!("{host} [{profile}] {case}"));
                }
            }
        }
    }
    assert!(failed.is_empty(), "failed (tables above): {failed:#?}");
}
