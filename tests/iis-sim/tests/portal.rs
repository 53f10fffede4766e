//! The portal as an ISAPI extension and as a native module, reached with
//! curl through the IIS simulator's Windows authentication (Basic here).

use std::path::Path;
use std::process::Command;

use iis_sim::{Config, RunningSimulator, Users, WindowsAuth};

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--max-time",
            "10",
            "--write-out",
            "\n%{http_code}",
        ])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (body.to_owned(), code.to_owned())
}

/// The simulator with the DLL at `dll`, Basic authentication for
/// `alice:wonderland` (and anonymous authentication beside it when
/// `anonymous`); also its base URL.
async fn start(dll: &Path, anonymous: bool) -> (RunningSimulator, String) {
    let mut config = Config::new(dll);
    config.auth = WindowsAuth::Basic {
        domain: "EXAMPLE".into(),
        users: Users::Listed([("alice".to_owned(), "wonderland".to_owned())].into()),
        anonymous,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = iis_sim::start(config, listener).await.unwrap();
    let base = format!("http://127.0.0.1:{}", sim.local_addr().port());
    (sim, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_reaches_the_portal_isapi_as_a_cleaned_automatically_created_user() {
    curl_reaches_the_portal("portal-isapi", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_reaches_the_portal_native_module_as_a_cleaned_automatically_created_user() {
    curl_reaches_the_portal("portal-iis", true).await;
}

async fn curl_reaches_the_portal(package: &str, native: bool) {
    let dll = iis_sim::build_cdylib(package).unwrap();
    let stem = package.replace('-', "_");
    let dir = std::env::temp_dir().join(format!("{package}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join(format!("{stem}.so"));
    std::fs::copy(&dll, &copy).unwrap();
    std::fs::write(
        dir.join(format!("{stem}.toml")),
        "[app]\ndata_dir = \"data\"\nadmins = ['EXAMPLE\\alice']\n\n[app.auth_container]\nallowed_domains = [\"EXAMPLE\"]\n",
    )
    .unwrap();
    let (sim, base) = start(&copy, false).await;

    let whoami = format!("{base}/api/whoami");
    let (body, code) =
        tokio::task::spawn_blocking(move || curl(&["-u", "alice:wonderland", &whoami]))
            .await
            .unwrap();
    assert_eq!(code, "200", "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["user"], "alice", "{v}");
    assert_eq!(v["identity"], "EXAMPLE\\alice", "{v}");

    // The user now exists in the store, created on that first visit.
    let users = format!("{base}/api/users");
    let (body, code) =
        tokio::task::spawn_blocking(move || curl(&["-u", "alice:wonderland", &users]))
            .await
            .unwrap();
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("\"alice\""), "{body}");
    assert!(dir.join("data").join("kallithea.sqlite3").is_file());

    // Without credentials IIS answers the challenge; the app is not reached.
    let plain = format!("{base}/api/whoami");
    let (_, code) = tokio::task::spawn_blocking(move || curl(&[&plain]))
        .await
        .unwrap();
    assert_eq!(code, "401");

    let stats = sim.shutdown().await;
    assert!(stats.violations.is_empty(), "{:?}", stats.violations);
    assert_eq!(stats.native_module, native, "{stats:?}");

    // Anonymous authentication enabled beside Basic: a request without
    // credentials reaches the app, whose auth-container plugin refuses it
    // with a bare 401; IIS adds its challenge, so that a client that only
    // sends credentials when asked (`--anyauth`) gets in.
    let (sim, base) = start(&copy, true).await;
    let whoami = format!("{base}/api/whoami");
    let (head, code) = tokio::task::spawn_blocking(move || {
        curl(&["--dump-header", "-", "--output", "/dev/null", &whoami])
    })
    .await
    .unwrap();
    assert_eq!(code, "401", "{head}");
    let challenges: Vec<&str> = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| name.eq_ignore_ascii_case("www-authenticate"))
        .map(|(_, v)| v.trim())
        .collect();
    assert_eq!(challenges, ["Basic realm=\"EXAMPLE\""], "{head}");
    let whoami = format!("{base}/api/whoami");
    let (body, code) = tokio::task::spawn_blocking(move || {
        curl(&["--anyauth", "-u", "alice:wonderland", &whoami])
    })
    .await
    .unwrap();
    assert_eq!(code, "200", "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["identity"], "EXAMPLE\\alice", "{v}");
    let stats = sim.shutdown().await;
    assert!(stats.violations.is_empty(), "{:?}", stats.violations);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_attacks_through_the_portal_isapi_get_nowhere() {
    identity_attacks("portal-isapi").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_attacks_through_the_portal_native_module_get_nowhere() {
    identity_attacks("portal-iis").await;
}

/// The identity attack table through IIS's Windows authentication (Basic,
/// any user name with one password, as the outside test ran it): each name
/// with a domain or realm is typed as it is, which IIS reports as typed.
async fn identity_attacks(package: &str) {
    use kallithea_conformance::client::Client;
    use kallithea_conformance::identity::{self, Profile, Tally};
    let dll = iis_sim::build_cdylib(package).unwrap();
    let stem = package.replace('-', "_");
    let mut tally = Tally::default();
    for profile in Profile::ALL {
        let dir = std::env::temp_dir().join(format!(
            "{package}-attacks-{profile:?}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let copy = dir.join(format!("{stem}.so"));
        std::fs::copy(&dll, &copy).unwrap();
        let (admins, lists) = profile.toml();
        std::fs::write(
            dir.join(format!("{stem}.toml")),
            format!("[app]\ndata_dir = \"data\"\n{admins}\n[app.auth_container]\n{lists}"),
        )
        .unwrap();
        let mut config = Config::new(&copy);
        config.auth = WindowsAuth::Basic {
            domain: "EXAMPLE".into(),
            users: Users::AnyWithPassword("pw".into()),
            anonymous: false,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim = iis_sim::start(config, listener).await.unwrap();
        let client = Client::new(sim.local_addr());
        identity::run(profile, &mut tally, |name| {
            let client = &client;
            async move {
                // Basic authentication reports the name as typed when it
                // carries a domain or a realm; a bare one would get the
                // simulator's default domain, and ':' ends a Basic user name.
                if !(name.contains('\\') || name.contains('@')) || name.contains(':') {
                    return None;
                }
                let auth = iis_sim::basic_credentials(name, "pw");
                let get = |path: &'static str| {
                    let req = client
                        .request("GET", path)
                        .header("authorization", auth.as_str())
                        .body(kallithea_core::Body::empty())
                        .unwrap();
                    client.fetch(req)
                };
                let who = get("/api/whoami").await.unwrap();
                let users = get("/api/users").await.unwrap();
                Some(identity::answer(
                    who.status.as_u16(),
                    &who.text(),
                    users.status.as_u16(),
                ))
            }
        })
        .await;
        if profile == Profile::Domains {
            // The fourth reproduction: the name variable set to one the
            // client writes (SERVER_NAME comes from the Host header).
            let body = r#"{"enabled":true,"header":"SERVER_NAME","fallback_header":null,"clean_username":true,"anonymous":true,"activation":"automatic"}"#;
            let req = client
                .request("PUT", "/api/settings")
                .header(
                    "authorization",
                    iis_sim::basic_credentials("EXAMPLE\\alice", "pw"),
                )
                .header("content-type", "application/json")
                .body(kallithea_core::Body::from(body))
                .unwrap();
            let r = client.fetch(req).await.unwrap();
            assert_eq!(r.status, 422, "{}", r.text());
        }
        let stats = sim.shutdown().await;
        assert!(stats.violations.is_empty(), "{:?}", stats.violations);
        let _ = std::fs::remove_dir_all(&dir);
    }
    tally.assert_clean(package);

    // The same in the DLL's configuration file: the portal does not start,
    // and says why.
    let dir = std::env::temp_dir().join(format!("{package}-bad-header-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join(format!("{stem}.so"));
    std::fs::copy(&dll, &copy).unwrap();
    std::fs::write(
        dir.join(format!("{stem}.toml")),
        "[app]\ndata_dir = \"data\"\nadmins = ['EXAMPLE\\alice']\n[app.auth_container]\nheader = 'SERVER_NAME'\n",
    )
    .unwrap();
    let mut config = Config::new(&copy);
    config.auth = WindowsAuth::Anonymous;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = iis_sim::start(config, listener).await.unwrap();
    let client = Client::new(sim.local_addr());
    let req = client
        .request("GET", "/api/whoami")
        .header("host", "EXAMPLE\\alice")
        .body(kallithea_core::Body::empty())
        .unwrap();
    let r = client.fetch(req).await.unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("SERVER_NAME"), "{}", r.text());
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
