//! The admin pages in Debian's headless Chromium, driven by Playwright
//! (`tests/browser/admin.mjs`). Needs `chromium` and `node`, and the script's
//! package installed (`npm ci --prefix examples/portal/tests/browser`);
//! `scripts/test` sets all of that up.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use auth_container::Settings;
use host_hyper::{ProxyTrust, Server};
use http::{HeaderValue, Request, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use kallithea_core::{service_fn, Body, Dispatcher, Limits};
use kallithea_portal::Portal;

const SECRET: &str = "portal-browser-pairing-secret-01";

/// A front proxy that forwards everything to `backend`, asserting `user` with
/// the pairing secret, as IIS with ARR would.
/// With `unprotected`, the proxy removes the portal's anti-framing headers:
/// the control that shows the framing check can see a framed page.
fn front_proxy(backend: std::net::SocketAddr, user: &'static str, unprotected: bool) -> Dispatcher {
    let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new()).build_http();
    Dispatcher::builder(service_fn(move |req: Request<Body>| {
        let client = client.clone();
        async move {
            let (mut parts, body) = req.into_parts();
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            parts.uri = Uri::try_from(format!("http://{backend}{path}"))?;
            parts.headers.remove("x-kallithea-pairing");
            parts.headers.remove("x-kallithea-user");
            parts
                .headers
                .insert("x-kallithea-pairing", HeaderValue::from_static(SECRET));
            parts
                .headers
                .insert("x-kallithea-user", HeaderValue::from_static(user));
            let mut resp = client.request(Request::from_parts(parts, body)).await?;
            if unprotected {
                resp.headers_mut().remove("content-security-policy");
                resp.headers_mut().remove("x-frame-options");
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(resp)
        }
    }))
    .limits(Limits::default().unlimited_body())
    .build()
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("browser")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_pages_work_in_headless_chromium() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "headless Chromium is needed at {chromium}: apt-get install chromium (scripts/test does it)"
    );
    assert!(
        browser_dir().join("node_modules/playwright-core").exists(),
        "the browser script's package is missing: npm ci --prefix examples/portal/tests/browser (scripts/test does it)"
    );

    let data = std::env::temp_dir().join(format!("portal-browser-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let portal = Portal::open(&data, Settings::default(), vec!["EXAMPLE\\alice".into()]).unwrap();
    let trust = ProxyTrust::new(vec!["127.0.0.1/32".parse().unwrap()], SECRET);
    let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
    let backend = Server::new()
        .trust(trust)
        .start(bind().await.unwrap(), portal.dispatcher(Limits::default()))
        .unwrap();
    let alice = Server::new()
        .start(
            bind().await.unwrap(),
            front_proxy(backend.local_addr(), "EXAMPLE\\alice", false),
        )
        .unwrap();
    let alice_unprotected = Server::new()
        .start(
            bind().await.unwrap(),
            front_proxy(backend.local_addr(), "EXAMPLE\\alice", true),
        )
        .unwrap();
    let bob = Server::new()
        .start(
            bind().await.unwrap(),
            front_proxy(backend.local_addr(), "EXAMPLE\\bob", false),
        )
        .unwrap();

    let mut child = Command::new("node")
        .arg("admin.mjs")
        .arg(format!("http://{}", alice.local_addr()))
        .arg(format!("http://{}", bob.local_addr()))
        .arg(format!("http://{}", alice_unprotected.local_addr()))
        .current_dir(browser_dir())
        .env("CHROMIUM", &chromium)
        .envs(
            std::env::var("PORTAL_SCREENSHOT")
                .ok()
                .map(|p| ("SCREENSHOT", p)),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs the browser script");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        status.is_some_and(|s| s.success()),
        "the browser run failed:\n{text}"
    );

    // What the clicks did is in the store.
    let plugin = portal.plugin();
    use auth_container::UserDirectory;
    let bob_user = plugin
        .directory()
        .inner()
        .find("bob")
        .await
        .unwrap()
        .unwrap();
    assert!(bob_user.active);
    assert_eq!(
        plugin.settings().fallback_header.as_deref(),
        Some("X-Forwarded-User")
    );

    for s in [alice, bob, alice_unprotected, backend] {
        s.shutdown(Duration::from_secs(2)).await;
    }
    let _ = std::fs::remove_dir_all(&data);
}
