//! The conformance suite against the in-process IIS hosts: the conformance
//! app built as an ISAPI extension DLL and as a native module, each loaded
//! by the IIS simulator and reached over loopback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{HeaderName, HeaderValue};
use iis_sim::{Config, RunningSimulator, Users, WindowsAuth};
use kallithea_conformance::Capabilities;
use kallithea_conformance::{Driver, RunningApp, Setup};
use kallithea_core::{BoxError, BoxFuture};

const PASSWORD: &str = "conformance-password";

struct SimDriver {
    name: &'static str,
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

impl Driver for SimDriver {
    fn name(&self) -> String {
        self.name.into()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .streaming(true)
            .identity(true)
            .http2_cleartext(true)
    }

    fn start(&self, setup: Setup) -> BoxFuture<'_, Result<Box<dyn RunningApp>, BoxError>> {
        Box::pin(async move {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let config = setup.dll_config(|p| p.display().to_string());
            let dll = install(&self.dll, &self.dir.join(n.to_string()), &config);
            let mut sim = Config::new(dll);
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
                assert!(
                    stats.violations.is_empty(),
                    "IIS contract violations: {:#?}",
                    stats.violations
                );
                assert_eq!(stats.in_flight, 0, "{stats:?}");
                if stats.native_module {
                    assert_eq!(
                        stats.disposed, stats.requests,
                        "every module object is disposed once: {stats:?}"
                    );
                }
            }
        })
    }
}

async fn run_suite(name: &'static str, package: &str) {
    let dll = iis_sim::build_cdylib(package).unwrap();
    let dir = std::env::temp_dir().join(format!("{package}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let driver = SimDriver {
        name,
        dll,
        dir: dir.clone(),
        next: AtomicUsize::new(0),
    };
    let report = kallithea_conformance::run(&driver).await;
    report.print();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        report.all_passed(),
        "failed conformance cases (table above)"
    );
}

// One test, the two hosts one after the other: the memory cases measure
// this whole process, so two suites must not stream 256 MiB side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_isapi_extension_and_the_native_module_pass_the_conformance_suite() {
    run_suite("host-isapi in the IIS simulator", "conformance-isapi").await;
    run_suite("host-iis-native in the IIS simulator", "conformance-native").await;
}
