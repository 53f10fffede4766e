//! `kallithea trace`: a listener process sees a panic raised by the app
//! inside the ISAPI DLL (and the native module) served through the IIS
//! simulator, with its backtrace; it stops cleanly on SIGINT.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use iis_sim::Config;
use kallithea_conformance::client::Client;

/// The listener's stdout, line by line, on a channel.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

async fn panic_through_simulator(package: &str, dir: &std::path::Path) -> iis_sim::Stats {
    let dll = iis_sim::build_cdylib(package).unwrap();
    let install = dir.join(package);
    std::fs::create_dir_all(&install).unwrap();
    let copy = install.join("app.so");
    std::fs::copy(&dll, &copy).unwrap();
    std::fs::write(install.join("app.toml"), "worker_threads = 1\n").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = iis_sim::start(Config::new(&copy), listener).await.unwrap();
    let client = Client::new(sim.local_addr());
    let r = client.get("/panic").await.unwrap();
    assert_eq!(r.status, http::StatusCode::INTERNAL_SERVER_ERROR);
    // The worker keeps serving.
    assert_eq!(
        client.get("/echo").await.unwrap().status,
        http::StatusCode::OK
    );
    sim.shutdown().await
}

#[test]
fn a_listener_sees_panics_in_the_dlls_with_their_backtraces() {
    let dir = std::env::temp_dir().join(format!("kallithea-trace-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let trace_dir = dir.join("trace");
    // Workers (the DLLs this process loads) find listeners here; set before
    // any other thread runs.
    std::env::set_var(kallithea_trace::DIR_ENV, &trace_dir);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(listen_and_panic(dir, trace_dir));
}

async fn listen_and_panic(dir: std::path::PathBuf, trace_dir: std::path::PathBuf) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kallithea"))
        .args(["trace", "--dir"])
        .arg(&trace_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = lines(&mut child);
    let deadline = Instant::now() + Duration::from_secs(10);
    let socket = loop {
        let found = std::fs::read_dir(&trace_dir).ok().and_then(|d| {
            d.flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "sock"))
        });
        if let Some(s) = found {
            break s;
        }
        assert!(Instant::now() < deadline, "the listener never bound");
        std::thread::sleep(Duration::from_millis(20));
    };
    // Let the workers' scan (every 250 ms) find it once they start.

    for package in ["conformance-isapi", "conformance-native"] {
        let stats = panic_through_simulator(package, &dir).await;
        assert!(stats.violations.is_empty(), "{:?}", stats.violations);
        // The panic event: message, location, then the backtrace's lines.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        let mut panic_at = None;
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    if panic_at.is_none()
                        && line.contains("kallithea::panic")
                        && line.contains("conformance app panics on purpose")
                        && line.contains("panicked at")
                    {
                        panic_at = Some(seen.len());
                    }
                    seen.push(line);
                    if let Some(at) = panic_at {
                        if seen[at..]
                            .iter()
                            .any(|l| l.contains("kallithea_conformance"))
                        {
                            break;
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(e) => panic!("the listener's output ended: {e}"),
            }
        }
        let at = panic_at.unwrap_or_else(|| panic!("{package}: no panic event in {seen:#?}"));
        let rest = &seen[at..];
        assert!(rest.iter().any(|l| l.contains("backtrace:")), "{rest:#?}");
        assert!(
            rest.iter().any(|l| l.contains("kallithea_conformance")),
            "{package}: the backtrace names the app's frames: {rest:#?}"
        );
    }

    // SIGINT: the listener stops and removes its socket.
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the listener did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");
    assert!(!socket.exists(), "the socket file is removed");
    let _ = std::fs::remove_dir_all(&dir);
}
