//! The portal behind host-hyper in trusted-proxy mode, over a real SQLite file,
//! reached with a real HTTP client.

use std::path::PathBuf;
use std::time::Duration;

use auth_container::Settings;
use host_hyper::{ProxyTrust, RunningServer, Server};
use kallithea_conformance::client::{Client, Full};
use kallithea_core::{Body, Limits};
use kallithea_portal::Portal;

const SECRET: &str = "portal-test-pairing-secret-0123";

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("portal-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Running {
    server: RunningServer,
    client: Client,
}

async fn start(data: &TempDir) -> Running {
    let portal = Portal::open(&data.0, Settings::default(), vec!["EXAMPLE\\alice".into()]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trust = ProxyTrust::new(vec!["127.0.0.1/32".parse().unwrap()], SECRET);
    let server = Server::new()
        .trust(trust)
        .start(listener, portal.dispatcher(Limits::default()))
        .unwrap();
    let client = Client::new(server.local_addr());
    Running { server, client }
}

impl Running {
    async fn send(
        &self,
        method: &str,
        path: &str,
        user: Option<&str>,
        content_type: Option<&str>,
        body: &str,
    ) -> Full {
        let mut req = self.client.request(method, path);
        if let Some(user) = user {
            req = req
                .header("x-kallithea-pairing", SECRET)
                .header("x-kallithea-user", user);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        self.client
            .fetch(req.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap()
    }

    async fn get(&self, path: &str, user: Option<&str>) -> Full {
        self.send("GET", path, user, None, "").await
    }

    async fn stop(self) {
        self.server.shutdown(Duration::from_secs(2)).await;
    }
}

/// The CSRF token embedded in a page's forms.
fn csrf(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("the page has a form token")
        + 19;
    page[at..at + 32].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_am_i_shows_the_clean_user_and_the_host_identity() {
    let data = TempDir::new("whoami");
    let p = start(&data).await;
    let page = p.get("/", Some("EXAMPLE\\Alice")).await;
    assert_eq!(page.status, 200);
    let text = page.text();
    assert!(text.contains("<strong id=\"who\">alice</strong>"), "{text}");
    assert!(text.contains("EXAMPLE\\Alice"), "{text}");
    assert_eq!(p.get("/", None).await.status, 401);
    let json = p.get("/api/whoami", Some("EXAMPLE\\alice")).await.text();
    assert!(json.contains("\"user\":\"alice\""), "{json}");
    p.stop().await;
}

#[test]
fn form_tokens_are_the_same_in_every_process_serving_the_store() {
    let data = TempDir::new("form-key");
    let other = TempDir::new("form-key-other");
    let open = |dir: &TempDir| Portal::open(&dir.0, Settings::default(), Vec::new()).unwrap();
    let first = open(&data);
    let token = first.csrf_token("alice");
    assert_eq!(token.len(), 32);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
    // Another process (a second worker, the next one after a recycle).
    let second = open(&data);
    assert_eq!(second.csrf_token("alice"), token);
    assert_ne!(second.csrf_token("bob"), token);
    // Another store has its own key.
    assert_ne!(open(&other).csrf_token("alice"), token);
}

#[test]
fn admin_entries_name_users_with_or_without_their_domain() {
    let data = TempDir::new("admin-names");
    let settings = Settings {
        allowed_realms: vec!["EXAMPLE.TEST".into()],
        ..Settings::default()
    };
    let portal = Portal::open(
        &data.0,
        settings,
        vec![
            "Alice".into(),
            "bob@EXAMPLE.TEST".into(),
            "carol@ELSEWHERE.TEST".into(),
            "".into(),
        ],
    )
    .unwrap();
    // A bare name is the user name; a foreign realm and an empty entry name
    // nobody.
    assert_eq!(portal.admins(), ["alice", "bob"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_pages_are_for_admins_only() {
    let data = TempDir::new("admins");
    let p = start(&data).await;
    for path in ["/admin/users", "/admin/auth", "/admin/permissions"] {
        assert_eq!(
            p.get(path, Some("EXAMPLE\\bob")).await.status,
            403,
            "{path}"
        );
        assert_eq!(
            p.get(path, Some("EXAMPLE\\alice")).await.status,
            200,
            "{path}"
        );
    }
    assert_eq!(p.get("/api/users", Some("EXAMPLE\\bob")).await.status, 403);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_activation_flow_through_the_admin_pages() {
    let data = TempDir::new("activation");
    let p = start(&data).await;
    let admin = Some("EXAMPLE\\alice");
    assert_eq!(
        p.get("/", admin).await.status,
        200,
        "alice exists before the switch"
    );

    // Switch to manual activation on the permissions page.
    let page = p.get("/admin/permissions", admin).await.text();
    let form = format!("csrf={}&activation=manual", csrf(&page));
    let saved = p
        .send(
            "POST",
            "/admin/permissions",
            admin,
            Some("application/x-www-form-urlencoded"),
            &form,
        )
        .await;
    assert!(saved.text().contains("Saved."), "{}", saved.text());

    // Bob's first visit creates him inactive.
    let bob = p.get("/", Some("EXAMPLE\\bob")).await;
    assert_eq!(bob.status, 403);
    assert!(bob.text().contains("awaits"), "{}", bob.text());

    // Alice activates him.
    let users = p.get("/admin/users", admin).await.text();
    assert!(users.contains("data-user=\"bob\""), "{users}");
    let form = format!("csrf={}", csrf(&users));
    let done = p
        .send(
            "POST",
            "/admin/users/bob/activate",
            admin,
            Some("application/x-www-form-urlencoded"),
            &form,
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.text());
    assert_eq!(p.get("/", Some("EXAMPLE\\bob")).await.status, 200);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_without_the_token_and_api_changes_without_json_are_refused() {
    let data = TempDir::new("csrf");
    let p = start(&data).await;
    let admin = Some("EXAMPLE\\alice");
    p.get("/", Some("EXAMPLE\\bob")).await;
    let form = "csrf=0000000000000000&activation=manual";
    let r = p
        .send(
            "POST",
            "/admin/permissions",
            admin,
            Some("application/x-www-form-urlencoded"),
            form,
        )
        .await;
    assert_eq!(r.status, 403);
    let r = p
        .send(
            "POST",
            "/admin/users/bob/deactivate",
            admin,
            Some("application/x-www-form-urlencoded"),
            "",
        )
        .await;
    assert_eq!(r.status, 403);
    let r = p
        .send(
            "POST",
            "/api/users/bob/deactivate",
            admin,
            Some("text/plain"),
            "{}",
        )
        .await;
    assert_eq!(r.status, 415);
    let r = p
        .send(
            "POST",
            "/api/users/bob/deactivate",
            admin,
            Some("application/json"),
            "{}",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        p.get("/", Some("EXAMPLE\\bob")).await.status,
        403,
        "bob is deactivated"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_are_stored_and_survive_a_restart() {
    let data = TempDir::new("restart");
    let p = start(&data).await;
    let admin = Some("EXAMPLE\\alice");
    let settings = r#"{"enabled":true,"header":"REMOTE_USER","fallback_header":null,
                       "clean_username":true,"anonymous":true,"activation":"manual"}"#;
    let r = p
        .send(
            "PUT",
            "/api/settings",
            admin,
            Some("application/json"),
            settings,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let bad = settings.replace("REMOTE_USER", " ");
    let r = p
        .send(
            "PUT",
            "/api/settings",
            admin,
            Some("application/json"),
            &bad,
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    p.stop().await;

    let p = start(&data).await;
    assert_eq!(
        p.get("/", None).await.status,
        200,
        "anonymous access was stored"
    );
    let json = p.get("/api/settings", admin).await.text();
    assert!(json.contains("\"activation\":\"manual\""), "{json}");
    assert_eq!(
        p.get("/", Some("EXAMPLE\\carol")).await.status,
        403,
        "manual activation was stored"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_container_authentication_off_closes_the_admin_pages() {
    let data = TempDir::new("off");
    let p = start(&data).await;
    let admin = Some("EXAMPLE\\alice");
    let page = p.get("/admin/auth", admin).await.text();
    let form = format!(
        "csrf={}&header=REMOTE_USER&fallback_header=&clean_username=on",
        csrf(&page)
    );
    let saved = p
        .send(
            "POST",
            "/admin/auth",
            admin,
            Some("application/x-www-form-urlencoded"),
            &form,
        )
        .await;
    assert!(saved.text().contains("Saved."), "{}", saved.text());
    assert_eq!(
        p.get("/admin/users", admin).await.status,
        403,
        "nobody is signed in any more"
    );
    let whoami = p.get("/", admin).await.text();
    assert!(whoami.contains("not signed in"), "{whoami}");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_can_be_imported_from_csv_and_json() {
    let data = TempDir::new("import");
    let p = start(&data).await;
    let admin = Some("EXAMPLE\\alice");
    let csv = "username,email,first_name,last_name,active\nEXAMPLE\\dora,dora@example.test,Dora,Dix,false\n";
    let r = p
        .send("POST", "/api/users/import", admin, Some("text/csv"), csv)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("\"created\":1"), "{}", r.text());
    assert_eq!(
        p.get("/", Some("EXAMPLE\\dora")).await.status,
        403,
        "imported inactive"
    );
    let json = r#"[{"username": "EXAMPLE\\dora", "active": true}]"#;
    let r = p
        .send(
            "POST",
            "/api/users/import",
            admin,
            Some("application/json"),
            json,
        )
        .await;
    assert!(r.text().contains("\"updated\":1"), "{}", r.text());
    assert_eq!(p.get("/", Some("EXAMPLE\\dora")).await.status, 200);
    let r = p
        .send(
            "POST",
            "/api/users/import",
            Some("EXAMPLE\\dora"),
            Some("text/csv"),
            csv,
        )
        .await;
    assert_eq!(r.status, 403, "admins only");
    let r = p
        .send("POST", "/api/users/import", admin, Some("text/plain"), csv)
        .await;
    assert_eq!(r.status, 415);
    let r = p
        .send(
            "POST",
            "/api/users/import",
            admin,
            Some("text/csv"),
            "nousername\nx\n",
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    p.stop().await;
}
