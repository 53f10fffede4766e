//! The SQLite user store and import, on real files.

use std::path::PathBuf;
use std::sync::Arc;

use auth_container::import::{import, read_csv, read_json};
use auth_container::{Activation, NewUser, Settings, SqliteDirectory, UserDirectory, CONTAINER};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("auth-store-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn new_user(name: &str) -> NewUser {
    NewUser {
        username: name.into(),
        attributes: Default::default(),
        active: true,
        admin: false,
        extern_type: Some(CONTAINER.into()),
        extern_name: None,
    }
}

#[tokio::test]
async fn users_survive_a_restart_and_migrations_run_once() {
    let dir = TempDir::new("restart");
    let file = dir.0.join("nested").join("users.sqlite3");
    {
        let store = SqliteDirectory::open(&file).unwrap();
        assert_eq!(store.schema_version().unwrap(), 2);
        store.create(new_user("alice")).await.unwrap();
        store.set_setting("anonymous", "false").unwrap();
    }
    let store = SqliteDirectory::open(&file).unwrap();
    assert_eq!(store.schema_version().unwrap(), 2);
    let alice = store.find("alice").await.unwrap().expect("alice persisted");
    assert!(alice.active);
    assert_eq!(
        store.setting("anonymous").unwrap().as_deref(),
        Some("false")
    );
}

#[tokio::test]
async fn a_store_from_a_newer_program_is_refused() {
    let dir = TempDir::new("newer");
    let file = dir.0.join("users.sqlite3");
    drop(SqliteDirectory::open(&file).unwrap());
    bump_schema_version(&file, 99);
    let err = SqliteDirectory::open(&file).unwrap_err().to_string();
    assert!(err.contains("newer than this program"), "{err}");
}

/// Writes `version` into the database header's user-version field (offset 60,
/// big-endian, per the SQLite file format), as a newer program would leave it.
fn bump_schema_version(file: &std::path::Path, version: u32) {
    let mut bytes = std::fs::read(file).unwrap();
    bytes[60..64].copy_from_slice(&version.to_be_bytes());
    std::fs::write(file, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_creating_the_same_user_at_once_leave_one_row() {
    let dir = TempDir::new("race");
    let file = dir.0.join("users.sqlite3");
    // Two handles on one file, as two IIS worker processes would have.
    let a = Arc::new(SqliteDirectory::open(&file).unwrap());
    let b = Arc::new(SqliteDirectory::open(&file).unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let store = if i % 2 == 0 {
            Arc::clone(&a)
        } else {
            Arc::clone(&b)
        };
        tasks.spawn(async move { store.create(new_user("judy")).await.unwrap() });
    }
    let mut created = 0;
    let mut ids = std::collections::HashSet::new();
    while let Some(r) = tasks.join_next().await {
        let r = r.unwrap();
        created += usize::from(r.created);
        ids.insert(r.user.id);
    }
    assert_eq!((created, ids.len()), (1, 1));
    assert_eq!(a.list().await.unwrap().len(), 1);
}

#[tokio::test]
async fn missing_users_are_reported_not_invented() {
    let dir = TempDir::new("missing");
    let store = SqliteDirectory::open(dir.0.join("u.sqlite3")).unwrap();
    let err = store.set_active("nobody", true).await.unwrap_err();
    assert!(err.to_string().contains("nobody"), "{err}");
    assert!(store.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn csv_import_cleans_names_creates_updates_and_protects_other_accounts() {
    let dir = TempDir::new("csv");
    let store = SqliteDirectory::open(dir.0.join("u.sqlite3")).unwrap();
    store
        .create(NewUser {
            extern_type: Some("internal".into()),
            ..new_user("root")
        })
        .await
        .unwrap();
    store.create(new_user("bob")).await.unwrap();
    let csv = "username,email,first_name,last_name,active\n\
               EXAMPLE\\Alice,alice@example.test,Alice,Liddell,\n\
               bob@EXAMPLE.TEST,bob@example.test,,,false\n\
               EXAMPLE\\root,,,,\n\
               \"EXAMPLE\\\",,,,\n";
    let records = read_csv(csv.as_bytes()).unwrap();
    assert_eq!(records.len(), 4);
    let settings = Settings {
        activation: Activation::Manual,
        ..Settings::default()
    };
    let report = import(records, &store, &settings).await.unwrap();
    assert_eq!((report.created, report.updated), (1, 1), "{report:?}");
    assert_eq!(
        report.skipped.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        [3, 4]
    );

    let alice = store.find("alice").await.unwrap().unwrap();
    assert_eq!(alice.attributes.last_name.as_deref(), Some("Liddell"));
    assert!(
        !alice.active,
        "manual activation applies when the record says nothing"
    );
    let bob = store.find("bob").await.unwrap().unwrap();
    assert_eq!(
        (bob.attributes.email.as_deref(), bob.active),
        (Some("bob@example.test"), false)
    );
    let root = store.find("root").await.unwrap().unwrap();
    assert_eq!(
        root.extern_type.as_deref(),
        Some("internal"),
        "import never links accounts"
    );
}

#[tokio::test]
async fn json_import_and_bad_input_errors() {
    let dir = TempDir::new("json");
    let store = SqliteDirectory::open(dir.0.join("u.sqlite3")).unwrap();
    let json = r#"[{"username": "CORP\\carol", "email": "carol@corp.test", "active": true},
                   {"username": "dave", "firstname": "Dave"}]"#;
    let report = import(
        read_json(json.as_bytes()).unwrap(),
        &store,
        &Settings::default(),
    )
    .await
    .unwrap();
    assert_eq!(report.created, 2);
    assert_eq!(
        store
            .find("dave")
            .await
            .unwrap()
            .unwrap()
            .attributes
            .first_name
            .as_deref(),
        Some("Dave")
    );

    assert!(
        read_json(&b"[{\"user\": \"x\"}]"[..]).is_err(),
        "unknown fields are refused"
    );
    assert!(
        read_csv(&b"email\nx@y\n"[..]).is_err(),
        "a CSV without a username column is refused"
    );
}

#[test]
fn the_first_stored_value_wins_for_every_connection() {
    let dir = TempDir::new("first-wins");
    let file = dir.0.join("users.sqlite3");
    let a = SqliteDirectory::open(&file).unwrap();
    let b = SqliteDirectory::open(&file).unwrap();
    assert_eq!(a.setting_or_insert("key", "from-a").unwrap(), "from-a");
    // Another connection (another process) offering its own value gets a's.
    assert_eq!(b.setting_or_insert("key", "from-b").unwrap(), "from-a");
    assert_eq!(b.setting("key").unwrap().as_deref(), Some("from-a"));
}

/// The store holds the portal's form key: it and SQLite's companion files are
/// for their owner only.
#[cfg(unix)]
#[tokio::test]
async fn the_store_and_its_wal_files_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("mode");
    let file = dir.0.join("users.sqlite3");
    let store = SqliteDirectory::open(&file).unwrap();
    store.create(new_user("alice")).await.unwrap();
    store.set_setting("form_key", "secret").unwrap();
    let mut seen = 0;
    for suffix in ["", "-wal", "-shm"] {
        let path = PathBuf::from(format!("{}{suffix}", file.display()));
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        seen += 1;
    }
    assert_eq!(seen, 3);
}
