//! `kallithea users`: import, list, activate and deactivate against a real
//! SQLite store, through the command.

use std::path::{Path, PathBuf};
use std::process::Command;

fn temp(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kallithea-users-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(store: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kallithea"))
        .arg("users")
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn new_store(dir: &Path) -> PathBuf {
    let store = dir.join("kallithea.sqlite3");
    auth_container::SqliteDirectory::open(&store).unwrap();
    store
}

#[test]
fn import_list_and_activation_round_trip() {
    let dir = temp("roundtrip");
    let store = new_store(&dir);
    let config = dir.join("portal.toml");
    std::fs::write(
        &config,
        "[app.auth_container]\nallowed_domains = [\"EXAMPLE\"]\n",
    )
    .unwrap();
    let csv = dir.join("staff.csv");
    std::fs::write(
        &csv,
        "username,email,first_name,last_name,active\n\
         EXAMPLE\\alice,alice@example.test,Alice,A,true\n\
         OTHER\\mallory,,,,\n\
         EXAMPLE\\bob,bob@example.test,,,\n",
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let (ok, out, err) = run(&store, &["-c", c, "import", csv.to_str().unwrap()]);
    assert!(!ok, "a skipped record makes the exit status fail: {out}");
    assert!(
        out.contains("staff.csv:line 3: skipped") && out.contains("mallory"),
        "{out}"
    );
    assert!(
        out.contains("3 records, 2 users created, 0 updated, 1 skipped"),
        "{out}"
    );
    assert!(err.contains("not imported"), "{err}");

    let (ok, out, _) = run(&store, &["list"]);
    assert!(ok);
    assert!(out.contains("alice") && out.contains("bob"), "{out}");
    assert!(!out.contains("mallory"), "{out}");
    assert!(out.contains("2 users"), "{out}");

    // Deactivate by the name IIS reports.
    let (ok, out, err) = run(&store, &["-c", c, "deactivate", "EXAMPLE\\bob"]);
    assert!(ok, "{err}");
    assert_eq!(out, "bob: deactivated\n");
    let (_, json, _) = run(&store, &["list", "--json"]);
    let bob: serde_json::Value = json
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["username"] == "bob")
        .unwrap();
    assert_eq!(bob["active"], false);
    assert_eq!(bob["email"], "bob@example.test");
    let (ok, _, _) = run(&store, &["activate", "bob"]);
    assert!(ok);

    // The same file again updates nothing new.
    let json_file = dir.join("more.json");
    std::fs::write(
        &json_file,
        r#"[{"username": "EXAMPLE\\carol", "email": "carol@example.test"}]"#,
    )
    .unwrap();
    let (ok, out, err) = run(&store, &["-c", c, "import", json_file.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("1 users created"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn errors_name_the_file_and_line() {
    let dir = temp("errors");
    let store = new_store(&dir);
    let csv = dir.join("bad.csv");
    std::fs::write(&csv, "username,email\nalice,a@x\nbob,b@x,extra\n").unwrap();
    let (ok, _, err) = run(&store, &["import", csv.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("bad.csv") && err.contains("line: 3"), "{err}");

    let json = dir.join("bad.json");
    std::fs::write(
        &json,
        "[\n  {\"username\": \"a\"},\n  {\"name\": \"b\"}\n]\n",
    )
    .unwrap();
    let (ok, _, err) = run(&store, &["import", json.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("bad.json") && err.contains("line 3"), "{err}");

    let txt = dir.join("users.txt");
    std::fs::write(&txt, "alice\n").unwrap();
    let (ok, _, err) = run(&store, &["import", txt.to_str().unwrap()]);
    assert!(!ok && err.contains("--format"), "{err}");

    let (ok, _, err) = run(&dir.join("missing.sqlite3"), &["list"]);
    assert!(!ok && err.contains("no such user store"), "{err}");
    let (ok, _, err) = run(&store, &["deactivate", "nobody"]);
    assert!(!ok && err.contains("no user nobody"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
