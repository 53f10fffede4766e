//! The container authentication plugin, driven through the dispatcher with the
//! facts a host would attach, over a real SQLite file.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use auth_container::{
    Activation, AuthContainer, CachedDirectory, NewUser, Settings, SqliteDirectory, UserDirectory,
    CONTAINER,
};
use http::{Request, Response};
use http_body_util::BodyExt;
use kallithea_core::{
    service_fn, AuthScheme, Body, ConnectionInfo, Dispatcher, HostVariables, Identity, RequestExt,
};

/// A SQLite file in a fresh temporary folder, removed on drop.
struct TempStore(PathBuf);

impl TempStore {
    fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("auth-container-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempStore(dir)
    }
    fn file(&self) -> PathBuf {
        self.0.join("users.sqlite3")
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Fixture {
    dispatcher: Dispatcher,
    plugin: Arc<AuthContainer<SqliteDirectory>>,
    directory: Arc<CachedDirectory<SqliteDirectory>>,
    _store: TempStore,
}

fn fixture(settings: Settings) -> Fixture {
    let store = TempStore::new("plugin");
    let sqlite = SqliteDirectory::open(store.file()).unwrap();
    let directory = Arc::new(CachedDirectory::new(sqlite, settings.cache_ttl));
    let plugin = AuthContainer::new(settings, Arc::clone(&directory));
    let app = service_fn(|req: Request<Body>| async move {
        let text = match req.user() {
            Some(u) => format!(
                "user={} anonymous={} email={}",
                u.username,
                u.anonymous,
                u.email.as_deref().unwrap_or("-")
            ),
            None => "user=none".to_owned(),
        };
        Ok::<_, Infallible>(Response::new(Body::from(text)))
    });
    let plugin = Arc::new(plugin);
    let shared = Arc::clone(&plugin);
    Fixture {
        dispatcher: Dispatcher::builder(app).auth(shared).build(),
        plugin,
        directory,
        _store: store,
    }
}

/// A request as a host would hand it over.
#[derive(Default)]
struct Req {
    identity: Option<&'static str>,
    host_vars: Vec<(&'static str, &'static str)>,
    via_proxy: bool,
    headers: Vec<(&'static str, &'static str)>,
}

impl Fixture {
    async fn send(&self, r: Req) -> (u16, String) {
        let mut b = Request::builder().uri("/");
        for (n, v) in &r.headers {
            b = b.header(*n, *v);
        }
        let mut req = b.body(Body::empty()).unwrap();
        let ext = req.extensions_mut();
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        ext.insert(ConnectionInfo {
            remote: addr,
            local: addr,
            secure: false,
            proxy: r.via_proxy.then_some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        });
        if let Some(name) = r.identity {
            ext.insert(Identity::from_host(name, AuthScheme::Negotiate));
        }
        if !r.host_vars.is_empty() {
            ext.insert(r.host_vars.iter().copied().collect::<HostVariables>());
        }
        let resp = self.dispatcher.dispatch(req).await;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    async fn as_user(&self, identity: &'static str) -> (u16, String) {
        self.send(Req {
            identity: Some(identity),
            ..Req::default()
        })
        .await
    }
}

#[tokio::test]
async fn first_visit_creates_a_clean_active_container_user() {
    let f = fixture(Settings::default());
    let (status, body) = f.as_user("EXAMPLE\\Alice").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "user=alice anonymous=false email=-")
    );
    let users = f.directory.list().await.unwrap();
    assert_eq!(users.len(), 1);
    let u = &users[0];
    assert_eq!(
        (
            u.username.as_str(),
            u.active,
            u.extern_type.as_deref(),
            u.extern_name.as_deref()
        ),
        ("alice", true, Some(CONTAINER), Some("EXAMPLE\\Alice"))
    );
    // The Kerberos form of the same account is the same user.
    assert_eq!(f.as_user("alice@EXAMPLE.TEST").await.0, 200);
    assert_eq!(f.directory.list().await.unwrap().len(), 1);
}

#[tokio::test]
async fn manual_activation_holds_the_user_until_an_administrator_acts() {
    let f = fixture(Settings {
        activation: Activation::Manual,
        ..Settings::default()
    });
    let (status, page) = f.as_user("EXAMPLE\\bob").await;
    assert_eq!(status, 403);
    assert!(
        page.contains("awaits") && page.contains("<strong>bob</strong>"),
        "{page}"
    );
    assert!(!f.directory.list().await.unwrap()[0].active);

    f.directory.set_active("bob", true).await.unwrap();
    assert_eq!(
        f.as_user("EXAMPLE\\bob").await.0,
        200,
        "activation takes effect at once"
    );
    f.directory.set_active("bob", false).await.unwrap();
    assert_eq!(
        f.as_user("EXAMPLE\\bob").await.0,
        403,
        "deactivation takes effect at once"
    );
}

#[tokio::test]
async fn without_identity_anonymous_off_gives_401_and_on_gives_the_anonymous_user() {
    let f = fixture(Settings::default());
    assert_eq!(f.send(Req::default()).await.0, 401);

    let f = fixture(Settings {
        anonymous: true,
        ..Settings::default()
    });
    let (status, body) = f.send(Req::default()).await;
    assert_eq!(
        (status, body.contains("anonymous=true")),
        (200, true),
        "{body}"
    );
    let (status, body) = f.as_user("EXAMPLE\\carol").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "user=carol anonymous=false email=-"),
        "an identity wins over anonymous access"
    );
}

#[tokio::test]
async fn every_request_is_checked_again() {
    let f = fixture(Settings::default());
    assert_eq!(f.as_user("EXAMPLE\\dave").await.0, 200);
    assert_eq!(
        f.send(Req::default()).await.0,
        401,
        "no session outlives the identity"
    );
}

#[tokio::test]
async fn the_identity_is_the_source_and_another_named_variable_comes_first() {
    // REMOTE_USER is what the host turned into the identity: the identity
    // is read, not the variable a second time.
    let f = fixture(Settings::default());
    let (_, body) = f
        .send(Req {
            identity: Some("EXAMPLE\\alice"),
            host_vars: vec![("REMOTE_USER", "EXAMPLE\\erin")],
            ..Req::default()
        })
        .await;
    assert!(body.starts_with("user=alice "), "{body}");

    // Another variable the host authenticates, when configured, comes first.
    let f = fixture(Settings {
        header: "LOGON_USER".into(),
        ..Settings::default()
    });
    let (_, body) = f
        .send(Req {
            identity: Some("EXAMPLE\\alice"),
            host_vars: vec![("LOGON_USER", "EXAMPLE\\erin")],
            ..Req::default()
        })
        .await;
    assert!(body.starts_with("user=erin "), "{body}");
    let (_, body) = f
        .send(Req {
            identity: Some("EXAMPLE\\alice"),
            host_vars: vec![("REMOTE_USER", "EXAMPLE\\erin")],
            ..Req::default()
        })
        .await;
    assert!(
        body.starts_with("user=alice "),
        "without LOGON_USER the identity counts: {body}"
    );
}

fn proxy_settings() -> Settings {
    Settings {
        fallback_header: Some("X-Forwarded-User".into()),
        email_header: Some("X-Forwarded-Email".into()),
        firstname_header: Some("X-Forwarded-First".into()),
        lastname_header: Some("X-Forwarded-Last".into()),
        ..Settings::default()
    }
}

#[tokio::test]
async fn fallback_and_attribute_headers_count_only_from_a_paired_proxy() {
    let f = fixture(proxy_settings());
    let headers = vec![
        ("x-forwarded-user", "frank"),
        ("x-forwarded-email", "frank@example.test"),
    ];
    let (status, _) = f
        .send(Req {
            headers: headers.clone(),
            ..Req::default()
        })
        .await;
    assert_eq!(status, 401, "a client's header is no identity");
    let (status, body) = f
        .send(Req {
            headers,
            via_proxy: true,
            ..Req::default()
        })
        .await;
    assert_eq!(
        (status, body.as_str()),
        (200, "user=frank anonymous=false email=frank@example.test")
    );
}

#[tokio::test]
async fn header_spellings_that_cgi_merges_are_refused() {
    let f = fixture(proxy_settings());
    for headers in [
        vec![("x-forwarded-user", "frank"), ("x_forwarded_user", "admin")],
        vec![("x_forwarded_user", "admin"), ("x-forwarded-user", "frank")],
    ] {
        let (status, body) = f
            .send(Req {
                headers,
                via_proxy: true,
                ..Req::default()
            })
            .await;
        assert_eq!(status, 400, "{body}");
    }
    // The underscore spelling alone is refused too: only a client puts it there.
    let (status, _) = f
        .send(Req {
            headers: vec![("x_forwarded_user", "admin")],
            via_proxy: true,
            ..Req::default()
        })
        .await;
    assert_eq!(status, 400);
    assert!(f.directory.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn attributes_are_stored_on_creation_and_refreshed_later() {
    let f = fixture(proxy_settings());
    let visit = |email: &'static str| Req {
        headers: vec![("x-forwarded-user", "grace"), ("x-forwarded-email", email)],
        via_proxy: true,
        ..Req::default()
    };
    assert_eq!(f.send(visit("old@example.test")).await.0, 200);
    let (_, body) = f.send(visit("new@example.test")).await;
    assert!(body.ends_with("email=new@example.test"), "{body}");
    let stored = f.directory.inner().find("grace").await.unwrap().unwrap();
    assert_eq!(stored.attributes.email.as_deref(), Some("new@example.test"));

    // First and last names arrive the same way, and a visit without them
    // keeps what is stored.
    let named = Req {
        headers: vec![
            ("x-forwarded-user", "grace"),
            ("x-forwarded-first", "Grace"),
            ("x-forwarded-last", "Hopper"),
        ],
        via_proxy: true,
        ..Req::default()
    };
    assert_eq!(f.send(named).await.0, 200);
    let stored = f.directory.inner().find("grace").await.unwrap().unwrap();
    assert_eq!(
        (
            stored.attributes.first_name.as_deref(),
            stored.attributes.last_name.as_deref(),
            stored.attributes.email.as_deref()
        ),
        (Some("Grace"), Some("Hopper"), Some("new@example.test"))
    );
}

#[tokio::test]
async fn an_identity_cannot_take_over_an_account_created_another_way() {
    let f = fixture(Settings::default());
    f.directory
        .create(NewUser {
            username: "admin".into(),
            attributes: Default::default(),
            active: true,
            admin: true,
            extern_type: Some("internal".into()),
            extern_name: None,
        })
        .await
        .unwrap();
    let (status, body) = f.as_user("EXAMPLE\\Admin").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not set up for single sign-on"), "{body}");

    f.directory
        .set_extern_type("admin", Some(CONTAINER.into()))
        .await
        .unwrap();
    assert_eq!(
        f.as_user("EXAMPLE\\Admin").await.0,
        200,
        "an explicit link lets it in"
    );
}

#[tokio::test]
async fn foreign_domains_bad_names_are_refused_with_403() {
    let f = fixture(Settings {
        allowed_domains: vec!["CORP".into()],
        ..Settings::default()
    });
    assert_eq!(f.as_user("CORP\\jdoe").await.0, 200);
    assert_eq!(f.as_user("PARTNER\\jdoe").await.0, 403);
    assert_eq!(f.as_user("jdoe").await.0, 403);

    let f = fixture(Settings::default());
    let (status, body) = f.as_user("EXAMPLE\\bad\u{7}name").await;
    assert_eq!(status, 403, "{body}");
    let long: &'static str = Box::leak("x".repeat(500).into_boxed_str());
    assert_eq!(f.as_user(long).await.0, 403);
    assert_eq!(f.as_user("EXAMPLE\\").await.0, 403);
    assert!(
        f.directory.list().await.unwrap().is_empty(),
        "refused names create nobody"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_visits_create_exactly_one_user() {
    let f = Arc::new(fixture(Settings::default()));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let f = Arc::clone(&f);
        tasks.spawn(async move { f.as_user("EXAMPLE\\heidi").await.0 });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    let users = f.directory.inner().list().await.unwrap();
    assert_eq!(users.len(), 1, "{users:?}");
}

#[tokio::test]
async fn cache_entries_expire_so_other_processes_changes_are_seen() {
    let f = fixture(Settings {
        cache_ttl: Duration::from_millis(50),
        ..Settings::default()
    });
    assert_eq!(f.as_user("EXAMPLE\\ivan").await.0, 200);
    // Another worker process deactivates ivan through its own handle.
    let other = SqliteDirectory::open(f.directory.inner().path()).unwrap();
    other.set_active("ivan", false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(f.as_user("EXAMPLE\\ivan").await.0, 403);
}

#[tokio::test]
async fn settings_changed_at_run_time_apply_to_the_next_request() {
    let f = fixture(Settings::default());
    assert_eq!(f.send(Req::default()).await.0, 401);
    let mut s = (*f.plugin.settings()).clone();
    s.anonymous = true;
    f.plugin.set_settings(s.clone()).unwrap();
    assert_eq!(
        f.send(Req::default()).await.0,
        200,
        "anonymous access now on"
    );

    s.max_username_length = 0;
    assert!(
        f.plugin.set_settings(s).is_err(),
        "invalid settings are refused"
    );
    assert!(
        f.plugin.settings().max_username_length > 0,
        "the old settings stay"
    );

    let mut off = (*f.plugin.settings()).clone();
    off.enabled = false;
    f.plugin.set_settings(off).unwrap();
    let (status, body) = f.as_user("EXAMPLE\\kim").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "user=none"),
        "a disabled plugin decides nothing"
    );
    assert!(f.directory.list().await.unwrap().is_empty());
}

/// A paired proxy's attribute headers update container users only: an
/// account made another way keeps its e-mail and names, and is refused.
#[tokio::test]
async fn proxy_attributes_never_overwrite_an_account_made_another_way() {
    let f = fixture(proxy_settings());
    f.directory
        .create(NewUser {
            username: "root".into(),
            attributes: auth_container::Attributes {
                email: Some("root@example.test".into()),
                first_name: Some("Root".into()),
                last_name: None,
            },
            active: true,
            admin: true,
            extern_type: Some("internal".into()),
            extern_name: None,
        })
        .await
        .unwrap();
    let (status, body) = f
        .send(Req {
            headers: vec![
                ("x-forwarded-user", "EXAMPLE\\root"),
                ("x-forwarded-email", "mallory@evil.test"),
                ("x-forwarded-first", "Mallory"),
            ],
            via_proxy: true,
            ..Req::default()
        })
        .await;
    assert_eq!(status, 403, "{body}");
    let stored = f.directory.inner().find("root").await.unwrap().unwrap();
    assert_eq!(
        stored.attributes.email.as_deref(),
        Some("root@example.test")
    );
    assert_eq!(stored.attributes.first_name.as_deref(), Some("Root"));
    assert_eq!(stored.extern_name, None);
}

/// The user the app sees carries the name exactly as the host reported it,
/// so that rights can depend on the domain.
#[tokio::test]
async fn the_user_carries_the_host_s_name() {
    let store = TempStore::new("external");
    let sqlite = SqliteDirectory::open(store.file()).unwrap();
    let directory = Arc::new(CachedDirectory::new(sqlite, Duration::from_secs(10)));
    let plugin = Arc::new(AuthContainer::new(Settings::default(), directory));
    let app = service_fn(|req: Request<Body>| async move {
        let u = req.user().expect("signed in");
        Ok::<_, Infallible>(Response::new(Body::from(format!(
            "{}|{}",
            u.username,
            u.external_name.as_deref().unwrap_or("-")
        ))))
    });
    let dispatcher = Dispatcher::builder(app).auth(plugin).build();
    let mut req = Request::builder().uri("/").body(Body::empty()).unwrap();
    req.extensions_mut()
        .insert(Identity::from_host("PARTNER\\Alice", AuthScheme::Negotiate));
    let resp = dispatcher.dispatch(req).await;
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"alice|PARTNER\\Alice");
}

/// A host variable of spaces only is a name (and refused), not an absent
/// one that would let the identity or a proxy header decide instead.
#[tokio::test]
async fn a_blank_host_variable_is_refused_not_skipped() {
    let f = fixture(Settings {
        header: "LOGON_USER".into(),
        ..Settings::default()
    });
    let (status, body) = f
        .send(Req {
            identity: Some("EXAMPLE\\alice"),
            host_vars: vec![("LOGON_USER", "  ")],
            ..Req::default()
        })
        .await;
    assert_eq!(status, 403, "{body}");
}

/// Settings built by hand skip validation; a client-written variable named
/// as the source is still never read.
#[tokio::test]
async fn a_client_written_variable_is_never_read_as_the_name() {
    let f = fixture(Settings {
        header: "HTTP_X_USER".into(),
        ..Settings::default()
    });
    let (status, body) = f
        .send(Req {
            host_vars: vec![("HTTP_X_USER", "EXAMPLE\\alice")],
            ..Req::default()
        })
        .await;
    assert_eq!(status, 401, "{body}");
}
