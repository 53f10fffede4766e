//! The conformance suite against simulators in another process — the IIS
//! simulator built for Windows and run under Wine, loading a Windows DLL —
//! reached from here over loopback.
//!
//! ```text
//! remote-conformance --sim-exe target/windows/x86_64-pc-windows-gnu/debug/iis-sim.exe \
//!     --dll target/windows/x86_64-pc-windows-gnu/debug/conformance_isapi.dll [--wine wine]
//! ```
//!
//! For each instance the suite asks for, the DLL is copied into a folder of
//! its own with its configuration, and the simulator is started as
//! `wine iis-sim.exe --dll Z:\…\app.dll --listen 127.0.0.1:0 --stdin-stop …`;
//! closing its standard input stops it, and its exit status says whether the
//! DLL broke the IIS contract. Exits with 1 if a case failed or a simulator
//! reported a violation.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use kallithea_conformance::Capabilities;
use kallithea_conformance::{Driver, RunningApp, Setup};
use kallithea_core::{BoxError, BoxFuture};

const PASSWORD: &str = "conformance-password";

struct RemoteDriver {
    wine: String,
    sim_exe: PathBuf,
    dll: PathBuf,
    work: PathBuf,
    next: AtomicUsize,
    /// Problems the simulators reported when they stopped.
    problems: Arc<Mutex<Vec<String>>>,
}

struct Remote {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    addr: SocketAddr,
    stderr: Mutex<mpsc::Receiver<String>>,
    problems: Arc<Mutex<Vec<String>>>,
    name: String,
}

/// `/tmp/x/app.dll` as Wine's `Z:` drive shows it.
fn windows_path(p: &Path) -> String {
    format!("Z:{}", p.display()).replace('/', "\\")
}

impl Driver for RemoteDriver {
    fn name(&self) -> String {
        format!(
            "{} under {}, loading {}",
            self.sim_exe.display(),
            self.wine,
            self.dll.file_name().unwrap_or_default().to_string_lossy()
        )
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
            let dir = self.work.join(n.to_string());
            std::fs::create_dir_all(&dir)?;
            let dll = dir.join("app.dll");
            std::fs::copy(&self.dll, &dll)?;
            let config = setup.dll_config(windows_path);
            std::fs::write(dir.join("app.toml"), config)?;
            let mut child = Command::new(&self.wine)
                .arg(&self.sim_exe)
                .args(["--dll", &windows_path(&dll)])
                .args([
                    "--listen",
                    "127.0.0.1:0",
                    "--vdir",
                    setup.path_base.as_str(),
                ])
                .args(["--domain", "EXAMPLE", "--any-user-password", PASSWORD])
                .args(["--anonymous", "--stdin-stop"])
                .current_dir(&dir)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot run {}: {e}", self.wine))?;
            let stdin = child.stdin.take();
            let stderr = child.stderr.take().ok_or("no stderr")?;
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { return };
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
            let addr = tokio::task::block_in_place(|| {
                let deadline = std::time::Instant::now() + Duration::from_secs(90);
                let mut seen = Vec::new();
                while std::time::Instant::now() < deadline {
                    match rx.recv_timeout(Duration::from_millis(200)) {
                        Ok(line) => {
                            if let Some(a) = line.split("serving on http://").nth(1) {
                                return a.trim().parse::<SocketAddr>().map_err(|e| e.to_string());
                            }
                            seen.push(line);
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(_) => break,
                    }
                }
                Err(format!("the simulator did not start: {}", seen.join("\n")))
            })?;
            Ok(Box::new(Remote {
                child: Some(child),
                stdin,
                addr,
                stderr: Mutex::new(rx),
                problems: Arc::clone(&self.problems),
                name: format!("instance {n}"),
            }) as Box<dyn RunningApp>)
        })
    }
}

impl RunningApp for Remote {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn identity_headers(&self, user: &str) -> Vec<(HeaderName, HeaderValue)> {
        vec![(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&iis_sim::basic_credentials(user, PASSWORD))
                .expect("base64 is a valid header value"),
        )]
    }

    fn resident_memory(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        kallithea_conformance::resident_memory_of(&pid.to_string())
    }

    fn stop(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            // Closing standard input stops the simulator, which terminates
            // the DLL and reports violations in its exit status.
            drop(self.stdin.take());
            let Some(mut child) = self.child.take() else {
                return;
            };
            let status = tokio::task::spawn_blocking(move || {
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                loop {
                    match child.try_wait() {
                        Ok(Some(s)) => return Some(s),
                        Ok(None) if std::time::Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(50))
                        }
                        _ => {
                            let _ = child.kill();
                            let _ = child.wait();
                            return None;
                        }
                    }
                }
            })
            .await
            .ok()
            .flatten();
            let report: Vec<String> = self
                .stderr
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .try_iter()
                .filter(|l| l.contains("violation"))
                .collect();
            if status.is_none_or(|s| !s.success()) || !report.is_empty() {
                self.problems
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!(
                        "{}: exit {status:?}; {}",
                        self.name,
                        report.join("; ")
                    ));
            }
        })
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(sim_exe), Some(dll)) = (arg(&args, "--sim-exe"), arg(&args, "--dll")) else {
        eprintln!(
            "usage: remote-conformance --sim-exe iis-sim.exe --dll app.dll [--wine wine] [--work DIR]"
        );
        return ExitCode::from(2);
    };
    let absolute = |p: String| std::fs::canonicalize(&p).map_err(|e| format!("{p}: {e}"));
    let (sim_exe, dll) = match (absolute(sim_exe), absolute(dll)) {
        (Ok(s), Ok(d)) => (s, d),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("remote-conformance: {e}");
            return ExitCode::from(2);
        }
    };
    let work = arg(&args, "--work").map_or_else(
        || std::env::temp_dir().join(format!("remote-conformance-{}", std::process::id())),
        PathBuf::from,
    );
    let _ = std::fs::remove_dir_all(&work);
    let driver = RemoteDriver {
        wine: arg(&args, "--wine").unwrap_or_else(|| "wine".into()),
        sim_exe,
        dll,
        work: work.clone(),
        next: AtomicUsize::new(0),
        problems: Arc::new(Mutex::new(Vec::new())),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let report = rt.block_on(kallithea_conformance::run(&driver));
    report.print();
    let problems = driver
        .problems
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for p in &problems {
        eprintln!("remote-conformance: {p}");
    }
    let _ = std::fs::remove_dir_all(&work);
    if report.all_passed() && problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
