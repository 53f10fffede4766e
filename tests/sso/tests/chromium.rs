//! Headless Chromium signs in to the portal (host-hyper with Negotiate) with
//! Kerberos single sign-on, as a browser on a domain-joined desktop would.
#![cfg(unix)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kallithea_sso_tests::{build_bin, temp_dir, write, Realm, Server};

fn start_portal(realm: &Realm, dir: &Path) -> Server {
    let portal = build_bin("kallithea-portal", "portal", &["negotiate"]);
    let config = dir.join("portal.toml");
    write(
        &config,
        &format!(
            "data_dir = {data:?}\n\n[server]\nlisten = \"127.0.0.1:0\"\n\n\
             [server.negotiate]\nkeytab = {keytab:?}\nreplay_cache_dir = {rcache:?}\n\n\
             [auth_container]\nallowed_realms = [\"EXAMPLE.TEST\"]\n",
            data = dir.join("data"),
            keytab = realm.keytab(),
            rcache = dir.join("rcache"),
        ),
    );
    let mut cmd = Command::new(portal);
    cmd.arg("--config").arg(&config);
    realm.server(&mut cmd);
    Server::start(cmd, dir.join("portal.log"), "portal: serving on")
}

/// The page Chromium shows for `url` (its DOM after loading), with the
/// Kerberos environment `env` prepares and a fresh profile.
fn chromium_page(env: impl FnOnce(&mut Command), profile: &Path, url: &str) -> String {
    std::fs::create_dir_all(profile).expect("profile folder");
    // A new profile must have seen a Negotiate header before, or Chromium's
    // first attempt fails.
    write(
        &profile.join("Local State"),
        r#"{"net":{"received_http_auth_negotiate_headers":true}}"#,
    );
    let out_file = profile.join("dom.html");
    let mut cmd = Command::new("chromium");
    env(&mut cmd);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--auth-server-allowlist=localhost",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg("--dump-dom")
    .arg(url)
    .stdout(std::fs::File::create(&out_file).expect("output file"))
    .stderr(Stdio::null());
    let mut child = cmd
        .spawn()
        .expect("start chromium (apt-get install chromium)");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::read_to_string(out_file).unwrap_or_default()
}

#[test]
fn headless_chromium_signs_in_with_kerberos() {
    let realm = Realm::start("chromium");
    let dir = temp_dir("chromium");
    let portal = start_portal(&realm, &dir);
    let url = format!("{}/", portal.base);

    let page = chromium_page(|c| realm.alice(c), &dir.join("profile-alice"), &url);
    assert!(
        page.contains(r#"signed in as <strong id="who">alice</strong>"#),
        "{page}\n{}",
        portal.log()
    );
    assert!(page.contains("alice@EXAMPLE.TEST"), "{page}");
    assert!(page.contains("<td>Negotiate</td>"), "{page}");

    // Without a ticket the browser cannot sign in and gets the refusal.
    let page = chromium_page(|c| realm.nobody(c), &dir.join("profile-nobody"), &url);
    assert!(page.contains("Unauthorized"), "{page}");
    assert!(!page.contains("signed in as"), "{page}");
}
