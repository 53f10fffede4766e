//! The portal behind host-hyper in trusted-proxy mode, over a real SQLite file,
//! reached with a real HTTP client.
//!
//! Longer than ~600 lines: one test per rule of the portal's behaviour over
//! HTTP, sharing one fixture; split, the fixture would be copied.

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
    portal: std::sync::Arc<Portal>,
}

async fn start(data: &TempDir) -> Running {
    start_with(data, Settings::default(), vec!["EXAMPLE\\alice".into()]).await
}

async fn start_with(data: &TempDir, settings: Settings, admins: Vec<String>) -> Running {
    let portal = Portal::open(&data.0, settings, admins).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trust = ProxyTrust::new(vec!["127.0.0.1/32".parse().unwrap()], SECRET);
    let server = Server::new()
        .trust(trust)
        .start(listener, portal.dispatcher(Limits::default()))
        .unwrap();
    let client = Client::new(server.local_addr());
    Running {
        server,
        client,
        portal,
    }
}

impl Running {
    async fn send_with(
        &self,
        method: &str,
        path: &str,
        user: Option<&str>,
        content_type: Option<&str>,
        cookie: Option<&str>,
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
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        self.client
            .fetch(req.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap()
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        user: Option<&str>,
        content_type: Option<&str>,
        body: &str,
    ) -> Full {
        self.send_with(method, path, user, content_type, None, body)
            .await
    }

    async fn get(&self, path: &str, user: Option<&str>) -> Full {
        self.send("GET", path, user, None, "").await
    }

    /// Opens the page at `path` as `user` and posts its form to `action`
    /// with `fields` added, as a browser would (the session cookie the page
    /// set, the form token it carried).
    async fn submit(&self, path: &str, action: &str, user: &str, fields: &str) -> Full {
        let page = self.get(path, Some(user)).await;
        assert_eq!(page.status, 200, "{}", page.text());
        let form = FormOf::page(&page);
        self.post_form(
            action,
            user,
            &form.cookie,
            &format!("csrf={}&{fields}", form.token),
        )
        .await
    }

    async fn post_form(&self, action: &str, user: &str, cookie: &str, body: &str) -> Full {
        self.send_with(
            "POST",
            action,
            Some(user),
            Some("application/x-www-form-urlencoded"),
            Some(cookie),
            body,
        )
        .await
    }

    async fn stop(self) {
        self.server.shutdown(Duration::from_secs(2)).await;
    }
}

/// What a page gives a browser to post its forms with.
struct FormOf {
    /// The form token embedded in the page.
    token: String,
    /// The `Cookie` header value for the session the page set.
    cookie: String,
}

impl FormOf {
    fn page(page: &Full) -> FormOf {
        let text = page.text();
        let at = text
            .find("name=\"csrf\" value=\"")
            .expect("the page has a form token")
            + 19;
        let end = text[at..].find('"').unwrap();
        let set = page
            .headers
            .get("set-cookie")
            .expect("the page sets the form session")
            .to_str()
            .unwrap();
        FormOf {
            token: text[at..at + end].to_owned(),
            cookie: set.split(';').next().unwrap().to_owned(),
        }
    }
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
fn form_tokens_are_bound_to_user_session_and_time_and_shared_by_every_process() {
    let data = TempDir::new("form-key");
    let other = TempDir::new("form-key-other");
    let open = |dir: &TempDir| Portal::open(&dir.0, Settings::default(), Vec::new()).unwrap();
    let first = open(&data);
    let now = 1_800_000_000;
    let session = "0123456789abcdef0123456789abcdef";
    let token = first.form_token("alice", session, now);
    assert!(first.form_token_ok("alice", session, &token, now));
    assert!(first.form_token_ok("alice", session, &token, now + 3599));
    // Expired, from another user or session, tampered with.
    assert!(!first.form_token_ok("alice", session, &token, now + 3601));
    assert!(!first.form_token_ok("bob", session, &token, now));
    let other_session = "fedcba9876543210fedcba9876543210";
    assert!(!first.form_token_ok("alice", other_session, &token, now));
    let moved = token.replacen(&now.to_string(), &(now + 1000).to_string(), 1);
    assert!(!first.form_token_ok("alice", session, &moved, now + 1000));
    assert!(!first.form_token_ok("alice", session, "", now));
    // Issued in the future (beyond a minute's clock difference).
    let future = first.form_token("alice", session, now + 600);
    assert!(!first.form_token_ok("alice", session, &future, now));
    // Another process (a second worker, the next one after a recycle).
    let second = open(&data);
    assert!(second.form_token_ok("alice", session, &token, now));
    // Another store has its own key.
    assert!(!open(&other).form_token_ok("alice", session, &token, now));
}

#[test]
fn admin_entries_are_matched_with_their_domain_and_refused_when_ambiguous() {
    let data = TempDir::new("admin-names");
    // With an allowed realm, a bare entry names that realm's user.
    let realm = Settings {
        allowed_realms: vec!["EXAMPLE.TEST".into()],
        ..Settings::default()
    };
    let portal = Portal::open(
        &data.0,
        realm.clone(),
        vec!["Alice".into(), "bob@EXAMPLE.TEST".into()],
    )
    .unwrap();
    assert_eq!(portal.admins(), ["alice", "bob"]);
    drop(portal);
    // An entry no identity can match, or one that breaks the rules, stops
    // the start with the reason.
    for bad in [
        "carol@ELSEWHERE.TEST",
        "",
        "EXAMPLE\\al\u{a0}ice@EXAMPLE.TEST",
    ] {
        let err = Portal::open(&data.0, realm.clone(), vec![bad.into()])
            .err()
            .unwrap_or_else(|| panic!("{bad:?} was accepted"));
        assert!(err.to_string().contains("admins"), "{err}");
    }
    // Without allowed lists, a bare entry would name every domain's alice.
    let err = Portal::open(&data.0, Settings::default(), vec!["alice".into()])
        .err()
        .expect("a bare entry without allowed lists is refused");
    assert!(err.to_string().contains("EXAMPLE\\alice"), "{err}");
}

/// Every admin page and API route, as each kind of caller that is not an
/// administrator: refused, and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_route_refuses_everyone_but_administrators() {
    let data = TempDir::new("admins");
    let p = start(&data).await;
    let admin = Some("EXAMPLE\\alice");
    assert_eq!(p.get("/", Some("EXAMPLE\\bob")).await.status, 200);
    let settings_before = p.get("/api/settings", admin).await.text();
    // bob; alice of another domain (the same user name, not the admin); alice
    // through a realm; nobody.
    let callers: [(Option<&str>, u16); 4] = [
        (Some("EXAMPLE\\bob"), 403),
        (Some("PARTNER\\alice"), 403),
        (Some("alice@ANY.REALM"), 403),
        (None, 401),
    ];
    let routes: &[(&str, &str, Option<&str>, &str)] = &[
        ("GET", "/admin/users", None, ""),
        ("GET", "/admin/auth", None, ""),
        ("GET", "/admin/permissions", None, ""),
        (
            "POST",
            "/admin/users/bob/deactivate",
            Some("application/x-www-form-urlencoded"),
            "csrf=x",
        ),
        (
            "POST",
            "/admin/users/alice/deactivate",
            Some("application/x-www-form-urlencoded"),
            "csrf=x",
        ),
        (
            "POST",
            "/admin/auth",
            Some("application/x-www-form-urlencoded"),
            "csrf=x&header=REMOTE_USER",
        ),
        (
            "POST",
            "/admin/permissions",
            Some("application/x-www-form-urlencoded"),
            "csrf=x&activation=manual&anonymous=on",
        ),
        ("GET", "/api/users", None, ""),
        ("GET", "/api/settings", None, ""),
        (
            "PUT",
            "/api/settings",
            Some("application/json"),
            r#"{"enabled":true,"header":"REMOTE_USER","fallback_header":null,"clean_username":true,"anonymous":true,"activation":"manual"}"#,
        ),
        (
            "POST",
            "/api/users/bob/deactivate",
            Some("application/json"),
            "{}",
        ),
        (
            "POST",
            "/api/users/import",
            Some("text/csv"),
            "username,admin\nEXAMPLE\\eve,true\n",
        ),
        (
            "POST",
            "/api/users/import",
            Some("application/json"),
            r#"[{"username":"EXAMPLE\\eve"}]"#,
        ),
    ];
    for (user, status) in callers {
        for (method, path, ct, body) in routes {
            let r = p.send(method, path, user, *ct, body).await;
            assert_eq!(
                r.status,
                status,
                "{method} {path} as {user:?}: {}",
                r.text()
            );
        }
    }
    // Nothing changed.
    assert_eq!(p.get("/api/settings", admin).await.text(), settings_before);
    assert_eq!(
        p.get("/", Some("EXAMPLE\\bob")).await.status,
        200,
        "bob is still active"
    );
    let users = p.get("/api/users", admin).await.text();
    assert!(!users.contains("eve"), "{users}");
    // The admin gets every page.
    for path in ["/admin/users", "/admin/auth", "/admin/permissions"] {
        assert_eq!(p.get(path, admin).await.status, 200, "{path}");
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_activation_flow_through_the_admin_pages() {
    let data = TempDir::new("activation");
    let p = start(&data).await;
    let admin = "EXAMPLE\\alice";
    assert_eq!(
        p.get("/", Some(admin)).await.status,
        200,
        "alice exists before the switch"
    );

    // Switch to manual activation on the permissions page.
    let saved = p
        .submit(
            "/admin/permissions",
            "/admin/permissions",
            admin,
            "activation=manual",
        )
        .await;
    assert!(saved.text().contains("Saved."), "{}", saved.text());

    // Bob's first visit creates him inactive.
    let bob = p.get("/", Some("EXAMPLE\\bob")).await;
    assert_eq!(bob.status, 403);
    assert!(bob.text().contains("awaits"), "{}", bob.text());

    // Alice activates him.
    let users = p.get("/admin/users", Some(admin)).await.text();
    assert!(users.contains("data-user=\"bob\""), "{users}");
    let done = p
        .submit("/admin/users", "/admin/users/bob/activate", admin, "")
        .await;
    assert_eq!(done.status, 303, "{}", done.text());
    assert_eq!(p.get("/", Some("EXAMPLE\\bob")).await.status, 200);
    p.stop().await;
}

/// Every form, posted by the administrator without a token, with a made-up
/// one, with a token of another session, another user's, or one whose
/// session cookie is missing: refused, nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_form_needs_a_fresh_token_of_the_same_session_and_user() {
    let data = TempDir::new("csrf");
    let p = start(&data).await;
    let admin = "EXAMPLE\\alice";
    assert_eq!(p.get("/", Some("EXAMPLE\\bob")).await.status, 200);
    let page = p.get("/admin/users", Some(admin)).await;
    let mine = FormOf::page(&page);
    let other = FormOf::page(&p.get("/admin/users", Some(admin)).await);
    assert_ne!(
        mine.cookie, other.cookie,
        "every browser gets its own session"
    );
    let forms: &[(&str, &str)] = &[
        ("/admin/users/bob/deactivate", ""),
        (
            "/admin/auth",
            "header=LOGON_USER&clean_username=on&enabled=on",
        ),
        ("/admin/permissions", "activation=manual&anonymous=on"),
    ];
    let bad_tokens = [
        (String::new(), mine.cookie.clone()),
        (
            "1800000000.00000000000000000000000000000000".to_owned(),
            mine.cookie.clone(),
        ),
        (other.token.clone(), mine.cookie.clone()),
        (mine.token.clone(), other.cookie.clone()),
        (mine.token.clone(), String::new()),
    ];
    for (action, fields) in forms {
        for (token, cookie) in &bad_tokens {
            let r = p
                .post_form(action, admin, cookie, &format!("csrf={token}&{fields}"))
                .await;
            assert_eq!(
                r.status,
                403,
                "{action} with {token:?} / {cookie:?}: {}",
                r.text()
            );
        }
    }
    // A token made for bob (were he an admin) is not alice's.
    let bobs = p.portal.form_token("bob", &mine.cookie[15..], now());
    let r = p
        .post_form(
            "/admin/permissions",
            admin,
            &mine.cookie,
            &format!("csrf={bobs}&activation=manual"),
        )
        .await;
    assert_eq!(r.status, 403);
    // An expired token of the right session.
    let old = p.portal.form_token(
        "alice",
        &mine.cookie[15..],
        now() - kallithea_portal::FORM_TOKEN_TTL.as_secs() - 5,
    );
    let r = p
        .post_form(
            "/admin/permissions",
            admin,
            &mine.cookie,
            &format!("csrf={old}&activation=manual"),
        )
        .await;
    assert_eq!(r.status, 403);
    assert!(r.text().contains("expired"), "{}", r.text());
    // Nothing changed.
    let settings = p.get("/api/settings", Some(admin)).await.text();
    assert!(
        settings.contains("\"header\":\"REMOTE_USER\""),
        "{settings}"
    );
    assert!(settings.contains("\"anonymous\":false"), "{settings}");
    assert!(
        settings.contains("\"activation\":\"automatic\""),
        "{settings}"
    );
    assert_eq!(p.get("/", Some("EXAMPLE\\bob")).await.status, 200);
    // The right token works.
    let r = p
        .post_form(
            "/admin/users/bob/deactivate",
            admin,
            &mine.cookie,
            &format!("csrf={}", mine.token),
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(p.get("/", Some("EXAMPLE\\bob")).await.status, 403);

    // The API takes changes only as JSON (no cross-site form can send that
    // without a preflight the portal never answers).
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ] {
        let r = p
            .send(
                "POST",
                "/api/users/bob/activate",
                Some(admin),
                Some(ct),
                "{}",
            )
            .await;
        assert_eq!(r.status, 415, "{ct}");
        let r = p
            .send("PUT", "/api/settings", Some(admin), Some(ct), "{}")
            .await;
        assert_eq!(r.status, 415, "{ct}");
    }
    let r = p
        .send(
            "POST",
            "/api/users/bob/activate",
            Some(admin),
            Some("application/json"),
            "{}",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    p.stop().await;
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Every page carries the headers that keep it out of other sites' frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_refuse_to_be_framed_or_cached() {
    let data = TempDir::new("frames");
    let p = start(&data).await;
    for (path, user) in [
        ("/admin/users", Some("EXAMPLE\\alice")),
        ("/admin/auth", Some("EXAMPLE\\alice")),
        ("/admin/permissions", Some("EXAMPLE\\alice")),
        ("/admin/users", Some("EXAMPLE\\bob")),
        ("/", Some("EXAMPLE\\bob")),
        ("/api/users", Some("EXAMPLE\\alice")),
    ] {
        let r = p.get(path, user).await;
        let h = |n: &str| {
            r.headers
                .get(n)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        assert!(
            h("content-security-policy").contains("frame-ancestors 'none'"),
            "{path}"
        );
        assert_eq!(h("x-frame-options"), "DENY", "{path}");
        assert_eq!(h("cache-control"), "no-store", "{path}");
        assert_eq!(h("x-content-type-options"), "nosniff", "{path}");
    }
    let page = p.get("/admin/users", Some("EXAMPLE\\alice")).await;
    let cookie = page.headers.get("set-cookie").unwrap().to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    p.stop().await;
}

/// Nobody deactivates themselves, and the last administrator who can sign
/// in stays active, through the pages and the API alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_active_administrator_cannot_be_deactivated() {
    let data = TempDir::new("last-admin");
    let p = start(&data).await;
    let admin = "EXAMPLE\\alice";
    assert_eq!(p.get("/", Some(admin)).await.status, 200);
    let r = p
        .submit("/admin/users", "/admin/users/alice/deactivate", admin, "")
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("your own account"), "{}", r.text());
    let r = p
        .send(
            "POST",
            "/api/users/alice/deactivate",
            Some(admin),
            Some("application/json"),
            "{}",
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(
        p.get("/admin/users", Some(admin)).await.status,
        200,
        "alice is still in"
    );

    p.stop().await;

    // A second administrator (marked in the store) may be deactivated while
    // alice, who does it, remains.
    {
        use auth_container::UserDirectory;
        let store =
            auth_container::SqliteDirectory::open(data.0.join(kallithea_portal::STORE_FILE))
                .unwrap();
        store
            .create(auth_container::NewUser {
                username: "carol".into(),
                attributes: Default::default(),
                active: true,
                admin: true,
                extern_type: Some(auth_container::CONTAINER.into()),
                extern_name: Some("EXAMPLE\\carol".into()),
            })
            .await
            .unwrap();
    }
    let p = start(&data).await;
    assert_eq!(
        p.get("/api/users", Some("EXAMPLE\\carol")).await.status,
        200
    );
    let r = p
        .send(
            "POST",
            "/api/users/carol/deactivate",
            Some(admin),
            Some("application/json"),
            "{}",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        p.get("/api/users", Some("EXAMPLE\\carol")).await.status,
        403
    );
    p.stop().await;
}

/// The users page and the API show who administers, the configured
/// administrators included, and tell look-alike names apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_administrators_are_shown_as_such() {
    let data = TempDir::new("shown");
    let p = start(&data).await;
    let admin = Some("EXAMPLE\\alice");
    p.get("/", admin).await;
    p.get("/", Some("EXAMPLE\\\u{430}lice")).await;
    let page = p.get("/admin/users", admin).await.text();
    let row = |name: &str| {
        let at = page.find(&format!("data-user=\"{name}\"")).unwrap();
        page[at..at + page[at..].find("</tr>").unwrap()].to_owned()
    };
    assert!(row("alice").contains("yes (configuration)"), "{page}");
    let lookalike = row("\u{430}lice");
    assert!(!lookalike.contains("yes"), "{lookalike}");
    assert!(lookalike.contains("U+0430"), "{lookalike}");
    let json: serde_json::Value =
        serde_json::from_str(&p.get("/api/users", admin).await.text()).unwrap();
    let alice = json
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "alice")
        .unwrap();
    assert_eq!(alice["admin"], true, "{alice}");
    assert_eq!(alice["admin_by_configuration"], true, "{alice}");
    p.stop().await;
}

/// The name variable setting takes only variables the host authenticates,
/// through the API and the page; the outside test's `SERVER_NAME` is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_name_variable_must_be_one_the_host_authenticates() {
    let data = TempDir::new("header");
    let p = start(&data).await;
    let admin = "EXAMPLE\\alice";
    for bad in [
        "SERVER_NAME",
        "HTTP_HOST",
        "HTTP_X_KALLITHEA_USER",
        "QUERY_STRING",
    ] {
        let body = format!(
            r#"{{"enabled":true,"header":"{bad}","fallback_header":null,"clean_username":true,"anonymous":true,"activation":"automatic"}}"#
        );
        let r = p
            .send(
                "PUT",
                "/api/settings",
                Some(admin),
                Some("application/json"),
                &body,
            )
            .await;
        assert_eq!(r.status, 422, "{bad}: {}", r.text());
        assert!(r.text().contains("REMOTE_USER"), "{}", r.text());
        let r = p
            .submit(
                "/admin/auth",
                "/admin/auth",
                admin,
                &format!("enabled=on&clean_username=on&header={bad}"),
            )
            .await;
        assert!(r.text().contains("Not saved"), "{bad}: {}", r.text());
    }
    let settings = p.get("/api/settings", Some(admin)).await.text();
    assert!(
        settings.contains("\"header\":\"REMOTE_USER\""),
        "{settings}"
    );
    // Anonymous with a forged Host header is nobody.
    let r = p
        .send_with("GET", "/api/whoami", None, None, None, "")
        .await;
    assert_eq!(r.status, 401);
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

/// Settings stored by an older version that checked less (a client-written
/// variable as the name source) are ignored at start, not obeyed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_stored_settings_are_ignored_at_start() {
    let data = TempDir::new("stored-bad");
    {
        let store =
            auth_container::SqliteDirectory::open(data.0.join(kallithea_portal::STORE_FILE))
                .unwrap();
        store
            .set_setting(
                "auth_container",
                r#"{"enabled":true,"header":"SERVER_NAME","fallback_header":null,"clean_username":true,"anonymous":false,"activation":"automatic"}"#,
            )
            .unwrap();
    }
    let p = start(&data).await;
    let json = p.get("/api/settings", Some("EXAMPLE\\alice")).await.text();
    assert!(json.contains("\"header\":\"REMOTE_USER\""), "{json}");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_container_authentication_off_closes_the_admin_pages() {
    let data = TempDir::new("off");
    let p = start(&data).await;
    let admin = "EXAMPLE\\alice";
    let saved = p
        .submit(
            "/admin/auth",
            "/admin/auth",
            admin,
            "header=REMOTE_USER&fallback_header=&clean_username=on",
        )
        .await;
    assert!(saved.text().contains("Saved."), "{}", saved.text());
    assert_eq!(
        p.get("/admin/users", Some(admin)).await.status,
        403,
        "nobody is signed in any more"
    );
    let whoami = p.get("/", Some(admin)).await.text();
    assert!(whoami.contains("not signed in"), "{whoami}");
    p.stop().await;
}

/// The outside test's identity attempts, through a paired proxy to the
/// portal on host-hyper, under each configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_attacks_through_a_paired_proxy_get_nowhere() {
    use kallithea_conformance::identity::{self, Profile, Tally};
    let mut tally = Tally::default();
    for profile in Profile::ALL {
        let data = TempDir::new("attacks");
        let p = start_with(&data, profile.settings(), profile.admins()).await;
        identity::run(profile, &mut tally, |name| {
            let p = &p;
            async move {
                // A header value cannot carry control characters.
                http::HeaderValue::from_bytes(name.as_bytes()).ok()?;
                let who = p.get("/api/whoami", Some(name)).await;
                let users = p.get("/api/users", Some(name)).await;
                Some(identity::answer(
                    who.status.as_u16(),
                    &who.text(),
                    users.status.as_u16(),
                ))
            }
        })
        .await;
        p.stop().await;
    }
    tally.assert_clean("host-hyper (paired proxy)");
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

/// A settings change that would make an `admins` entry ambiguous is refused:
/// with cleaning off a bare entry is exact; turning cleaning on would make it
/// match every domain's account of that name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_would_make_an_admin_entry_ambiguous_is_refused() {
    let data = TempDir::new("ambiguous-change");
    let exact = Settings {
        clean_username: false,
        ..Settings::default()
    };
    let p = start_with(&data, exact, vec!["EXAMPLE\\alice".into(), "bob".into()]).await;
    let admin = Some("EXAMPLE\\alice");
    let body = r#"{"enabled":true,"header":"REMOTE_USER","fallback_header":null,"clean_username":true,"anonymous":false,"activation":"automatic"}"#;
    let r = p
        .send(
            "PUT",
            "/api/settings",
            admin,
            Some("application/json"),
            body,
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        r.text().contains("\\\"bob\\\" names no domain"),
        "{}",
        r.text()
    );
    let settings = p.get("/api/settings", admin).await.text();
    assert!(settings.contains("\"clean_username\":false"), "{settings}");
    p.stop().await;
}

/// Without allowed lists every domain's `carol` is the user `carol`; the
/// store's admin flag, given to `EXAMPLE\carol`'s account, stays with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_admin_flag_stays_with_the_account_that_was_given_it() {
    use auth_container::UserDirectory;
    let data = TempDir::new("store-admin");
    {
        let store =
            auth_container::SqliteDirectory::open(data.0.join(kallithea_portal::STORE_FILE))
                .unwrap();
        store
            .create(auth_container::NewUser {
                username: "carol".into(),
                attributes: Default::default(),
                active: true,
                admin: true,
                extern_type: Some(auth_container::CONTAINER.into()),
                extern_name: Some("EXAMPLE\\carol".into()),
            })
            .await
            .unwrap();
    }
    let p = start(&data).await;
    assert_eq!(
        p.get("/api/users", Some("EXAMPLE\\Carol")).await.status,
        200
    );
    for other in ["PARTNER\\carol", "carol@ANY.REALM", "carol"] {
        assert_eq!(
            p.get("/", Some(other)).await.status,
            200,
            "{other} is carol"
        );
        assert_eq!(
            p.get("/api/users", Some(other)).await.status,
            403,
            "{other} is not the administrator"
        );
    }
    p.stop().await;
}
