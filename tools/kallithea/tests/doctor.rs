//! `kallithea doctor`: each mistake it knows, found in a real file, with
//! the file and line and a fix; a clean configuration passes; the exit
//! status tells a script.

use std::path::{Path, PathBuf};
use std::process::Command;

fn temp(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kallithea-doctor-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn doctor(args: &[&std::ffi::OsStr]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kallithea"))
        .arg("doctor")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check(file: &Path) -> (Option<i32>, String, String) {
    doctor(&[file.as_os_str()])
}

#[test]
fn a_clean_iis_configuration_passes() {
    let dir = temp("clean");
    let f = dir.join("portal.toml");
    std::fs::write(
        &f,
        "worker_threads = 2\n[app]\ndata_dir = \"data\"\n[app.auth_container]\nallowed_domains = [\"EXAMPLE\"]\n",
    )
    .unwrap();
    let (code, out, err) = check(&f);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("no problems found"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn iis_mistakes_are_named_with_line_and_fix() {
    let dir = temp("iis");
    let f = dir.join("portal.toml");
    std::fs::write(
        &f,
        "worker_threads = 0\n\
         [app]\n\
         data_dir = \"/proc/no-such/data\"\n\
         [app.auth_container]\n\
         anonymous = true\n\
         fallback_header = \"X-Remote-User\"\n",
    )
    .unwrap();
    let (code, out, _) = check(&f);
    assert_eq!(code, Some(1), "{out}");
    let file = f.display().to_string();
    assert!(
        out.contains(&format!(
            "{file}:5: warning: container authentication is on while anonymous access is allowed"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("{file}:6: error: fallback_header")),
        "{out}"
    );
    assert!(out.contains("no paired front proxy"), "{out}");
    assert!(
        out.contains(&format!("{file}:3: error: the database folder")),
        "{out}"
    );
    assert!(
        out.contains("worker_threads"),
        "what the DLL refuses: {out}"
    );
    assert!(
        out.matches("  fix: ").count() >= 4,
        "each finding has a fix: {out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hyper_trust_mistakes() {
    let dir = temp("hyper");
    let f = dir.join("portal.toml");
    std::fs::write(
        &f,
        "data_dir = \"data\"\n[auth_container]\nfallback_header = \"X-Remote-User\"\n",
    )
    .unwrap();
    let (code, out, _) = check(&f);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no front proxy is trusted"), "{out}");

    std::fs::write(
        &f,
        "data_dir = \"data\"\n[server.trust]\nproxies = [\"127.0.0.1/32\"]\nsecret = \"short\"\n",
    )
    .unwrap();
    let (code, out, _) = check(&f);
    assert_eq!(code, Some(1));
    assert!(
        out.contains(":4: error: the pairing secret has only 5 characters"),
        "{out}"
    );
    std::fs::write(&f, "[server.trust]\nproxies = []\nsecret = \"\"\n").unwrap();
    let (_, out, _) = check(&f);
    assert!(out.contains("the pairing secret is empty"), "{out}");
    assert!(out.contains("no proxy addresses"), "{out}");

    std::fs::write(&f, "[server\nlisten = 1\n").unwrap();
    let (code, out, _) = check(&f);
    assert_eq!(code, Some(1));
    assert!(out.contains(":1: error: not valid TOML"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_dll_and_pool_of_different_bitness_are_caught() {
    let dir = temp("bitness");
    let src = dir.join("m.c");
    std::fs::write(
        &src,
        "#include <windows.h>\n__declspec(dllexport) HRESULT WINAPI RegisterModule(DWORD a, void *b, void *c) { return 0; }\n",
    )
    .unwrap();
    let dll = dir.join("m.dll");
    let ok = Command::new("i686-w64-mingw32-gcc")
        .args(["-shared", "-Wl,--kill-at", "-o"])
        .arg(&dll)
        .arg(&src)
        .status()
        .expect("i686-w64-mingw32-gcc (apt-get install gcc-mingw-w64-i686)")
        .success();
    assert!(ok);
    let f = dir.join("m.toml");
    std::fs::write(&f, "worker_threads = 2\n").unwrap();
    let (code, out, _) = doctor(&[
        f.as_os_str(),
        "--dll".as_ref(),
        dll.as_os_str(),
        "--pool-32bit".as_ref(),
        "false".as_ref(),
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(
            "the DLL is 32-bit x86 but the application pool has 32-bit applications disabled"
        ),
        "{out}"
    );
    let (code, out, err) = doctor(&[
        f.as_os_str(),
        "--dll".as_ref(),
        dll.as_os_str(),
        "--pool-32bit".as_ref(),
        "true".as_ref(),
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn names_that_domains_would_share_and_unsafe_admins_are_reported() {
    let dir = temp("identity");
    let f = dir.join("portal.toml");
    // The README's IIS example before the identity rules: a bare admin and
    // no allowed lists.
    std::fs::write(
        &f,
        "[app]\ndata_dir = \"data\"\nadmins = ['alice', 'EXAMPLE\\alice']\n",
    )
    .unwrap();
    let (code, out, _) = check(&f);
    assert_eq!(code, Some(1), "{out}");
    let file = f.display().to_string();
    assert!(
        out.contains(&format!(
            "{file}:3: error: \"alice\" names no domain or realm"
        )),
        "{out}"
    );
    assert!(!out.contains("\"EXAMPLE\\\\alice\" cannot"), "{out}");

    std::fs::write(
        &f,
        "admins = ['PARTNER\\bob']\n[auth_container]\nallowed_domains = ['CORP', 'PARTNER']\nheader = 'SERVER_NAME'\n",
    )
    .unwrap();
    let (code, out, _) = check(&f);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "{file}:3: warning: allowed_domains lists 2 domains (CORP, PARTNER)"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("{file}:4: error: header = \"SERVER_NAME\"")),
        "{out}"
    );

    std::fs::write(&f, "[auth_container]\nclean_username = true\n").unwrap();
    let (code, out, _) = check(&f);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("become one user"), "{out}");

    std::fs::write(
        &f,
        "admins = ['alice@EXAMPLE.TEST', 'PARTNER\\eve']\n[auth_container]\nallowed_realms = ['EXAMPLE.TEST']\n",
    )
    .unwrap();
    let (code, out, _) = check(&f);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("\"PARTNER\\\\eve\" cannot name a user"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(unix)]
#[test]
fn secret_files_others_can_read_are_reported() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp("secrets");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let f = dir.join("portal.toml");
    std::fs::write(
        &f,
        "data_dir = \"data\"\n[auth_container]\nallowed_domains = ['EXAMPLE']\n",
    )
    .unwrap();
    let store = data.join("kallithea.sqlite3");
    std::fs::write(&store, b"").unwrap();
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, out, err) = check(&f);
    assert_eq!(code, Some(0), "{out}{err}");
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o644)).unwrap();
    let secret = data.join("pairing-secret");
    std::fs::write(&secret, b"x").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (code, out, _) = check(&f);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("kallithea.sqlite3 holds secrets"), "{out}");
    assert!(out.contains("pairing-secret holds secrets"), "{out}");
    assert!(out.contains("chmod 600"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
