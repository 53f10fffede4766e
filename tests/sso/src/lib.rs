//! Helpers for the single sign-on tests: a throw-away Kerberos realm
//! (`scripts/test-kdc`), programs built and started as child processes with
//! exactly the Kerberos environment they should see, and their logs.
//!
//! Nothing here touches Kerberos in the test process itself: the GSSAPI
//! library reads its configuration from process-wide environment variables,
//! so every party (server, client) is a child process given its own.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh, empty folder for one test, removed when the test passes (kept
/// with its logs when it fails).
pub fn temp_dir(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("kallithea-sso-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the test folder");
    Scratch(dir)
}

/// See [`temp_dir`].
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for Scratch {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The Kerberos variables every child gets: the realm's `krb5.conf`, never
/// the system's, and nothing inherited from the test's own environment.
const KRB5_VARS: &[&str] = &[
    "KRB5_CONFIG",
    "KRB5_KDC_PROFILE",
    "KRB5CCNAME",
    "KRB5_KTNAME",
    "KRB5_CLIENT_KTNAME",
    "KRB5RCACHEDIR",
    "KRB5RCACHENAME",
    "KRB5_TRACE",
];

/// A throw-away realm `EXAMPLE.TEST` with its KDC on loopback, user `alice`
/// (with tickets) and the service `HTTP/localhost` in a keytab. Stopped and
/// removed on drop.
pub struct Realm {
    dir: PathBuf,
}

impl Realm {
    /// Creates the realm in a fresh folder named after the test.
    pub fn start(name: &str) -> Realm {
        let dir =
            std::env::temp_dir().join(format!("kallithea-sso-{name}-kdc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = Command::new(repo_root().join("scripts/test-kdc"))
            .arg("start")
            .arg(&dir)
            .output()
            .expect("run scripts/test-kdc");
        assert!(
            out.status.success(),
            "scripts/test-kdc start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Realm { dir }
    }

    /// The realm's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The keytab with `HTTP/localhost`.
    pub fn keytab(&self) -> PathBuf {
        self.dir.join("http.keytab")
    }

    /// The realm's `krb5.conf`.
    pub fn krb5_conf(&self) -> PathBuf {
        self.dir.join("krb5.conf")
    }

    /// A server's environment: the realm's configuration only (the keytab and
    /// replay cache come from the server's own configuration).
    pub fn server(&self, cmd: &mut Command) {
        for var in KRB5_VARS {
            cmd.env_remove(var);
        }
        cmd.env("KRB5_CONFIG", self.krb5_conf());
    }

    /// A client's environment: the realm's configuration and alice's tickets.
    pub fn alice(&self, cmd: &mut Command) {
        self.server(cmd);
        cmd.env(
            "KRB5CCNAME",
            format!("FILE:{}", self.dir.join("alice.ccache").display()),
        );
    }

    /// A client's environment without any ticket (an empty cache).
    pub fn nobody(&self, cmd: &mut Command) {
        self.server(cmd);
        cmd.env(
            "KRB5CCNAME",
            format!("FILE:{}", self.dir.join("nobody.ccache").display()),
        );
    }

    /// Runs `kadmin.local -q query` on the realm's database.
    pub fn kadmin(&self, query: &str) {
        let mut cmd = Command::new("/usr/sbin/kadmin.local");
        self.server(&mut cmd);
        let out = cmd
            .env("KRB5_KDC_PROFILE", self.dir.join("kdc.conf"))
            .args(["-q", query])
            .output()
            .expect("run kadmin.local");
        assert!(
            out.status.success(),
            "kadmin.local -q {query:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Gives `HTTP/localhost` new keys in the KDC without updating the
    /// keytab, and fetches alice a new ticket.
    pub fn rekey(&self) {
        let out = Command::new(repo_root().join("scripts/test-kdc"))
            .arg("rekey")
            .arg(&self.dir)
            .output()
            .expect("run scripts/test-kdc rekey");
        assert!(
            out.status.success(),
            "scripts/test-kdc rekey failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Realm {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/test-kdc"))
            .arg("stop")
            .arg(&self.dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Builds `bin` of `package` with `features` (same profile as the tests) and
/// returns the executable.
pub fn build_bin(package: &str, bin: &str, features: &[&str]) -> PathBuf {
    build(package, &["--bin", bin], features, |line| {
        line.get("target")
            .and_then(|t| t.get("name"))
            .and_then(|n| n.as_str())
            == Some(bin)
    })
    .and_then(|line| line.get("executable")?.as_str().map(PathBuf::from))
    .unwrap_or_else(|| panic!("cargo built {package} but reported no {bin} executable"))
}

/// Builds the `cdylib` of `package` and returns the shared library.
pub fn build_cdylib(package: &str) -> PathBuf {
    let suffix = std::env::consts::DLL_SUFFIX;
    build(package, &["--lib"], &[], |line| {
        line.get("target")
            .and_then(|t| t.get("kind"))
            .and_then(|k| k.as_array())
            .is_some_and(|k| k.iter().any(|k| k == "cdylib"))
    })
    .and_then(|line| {
        line.get("filenames")?
            .as_array()?
            .iter()
            .filter_map(|f| f.as_str())
            .find(|f| f.ends_with(suffix))
            .map(PathBuf::from)
    })
    .unwrap_or_else(|| panic!("cargo built {package} but reported no {suffix} file"))
}

fn build(
    package: &str,
    what: &[&str],
    features: &[&str],
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> Option<serde_json::Value> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--message-format=json", "-p", package])
        .args(what);
    if !features.is_empty() {
        cmd.arg("--features").arg(features.join(","));
    }
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("run cargo build");
    assert!(
        out.status.success(),
        "cargo build -p {package} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l.get("reason").and_then(|r| r.as_str()) == Some("compiler-artifact"))
        .find(|l| wanted(l))
}

/// A server running as a child process, its output in a log file. Killed on
/// drop unless [`Server::stop`] ended it.
pub struct Server {
    child: Option<Child>,
    log: PathBuf,
    /// `http://localhost:PORT`.
    pub base: String,
}

impl Server {
    /// Starts `cmd` with its output going to `log`, and waits (at most 60 s)
    /// for the line `<marker> http://ADDR`.
    pub fn start(mut cmd: Command, log: PathBuf, marker: &str) -> Server {
        let file = std::fs::File::create(&log).expect("create the log");
        cmd.stdin(Stdio::piped())
            .stdout(file.try_clone().expect("log handle"))
            .stderr(file);
        let child = cmd.spawn().expect("start the server");
        let mut server = Server {
            child: Some(child),
            log,
            base: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = server.log();
            if let Some(rest) = text.split(marker).nth(1) {
                if let Some(addr) = rest.trim_start().strip_prefix("http://") {
                    let addr: String = addr
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || ".:[]".contains(*c))
                        .collect();
                    let port = addr.rsplit(':').next().unwrap_or_default();
                    server.base = format!("http://localhost:{port}");
                    return server;
                }
            }
            if let Some(status) = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("the server exited ({status}) before serving:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "the server did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's output so far, without terminal colours.
    pub fn log(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// Closes the server's standard input (how the IIS simulator is told to
    /// stop with `--stdin-stop`) and waits for it to exit; kills it after
    /// 30 s. Returns whether it exited successfully.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        drop(child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The environment that runs a program with its clock moved by `offset`
/// (`"+10m"`): libfaketime preloaded into the program itself. (The
/// `faketime` command would run it as a child of its own, which outlives a
/// kill of the command.)
pub fn faketime(offset: &str) -> [(&'static str, String); 2] {
    let lib = std::fs::read_dir("/usr/lib")
        .expect("/usr/lib")
        .flatten()
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.is_file())
        .expect("libfaketime (Debian package faketime) is installed");
    [
        ("LD_PRELOAD", lib.display().to_string()),
        ("FAKETIME", offset.to_owned()),
    ]
}

/// Removes terminal colour sequences (`ESC [ … m`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// What curl got: status, headers (lower-case names) and body.
#[derive(Debug)]
pub struct Reply {
    /// The final status.
    pub status: u16,
    /// The final response's headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Reply {
    /// The values of header `name`.
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// Runs curl with `args` in the environment `env` prepared (e.g.
/// [`Realm::alice`]) and returns the final response.
pub fn curl(env: impl FnOnce(&mut Command), args: &[&str]) -> Reply {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let headers_file =
        std::env::temp_dir().join(format!("kallithea-sso-curl-{}-{n}.txt", std::process::id()));
    let mut cmd = Command::new("curl");
    env(&mut cmd);
    let out = cmd
        .args(["--silent", "--show-error", "--max-time", "20"])
        .arg("--dump-header")
        .arg(&headers_file)
        .args(args)
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let raw = std::fs::read_to_string(&headers_file).unwrap_or_default();
    let _ = std::fs::remove_file(&headers_file);
    // With --negotiate curl may show a 401 first; the last block is final.
    let block = raw
        .split("\r\n\r\n")
        .filter(|b| b.starts_with("HTTP/"))
        .last()
        .unwrap_or_default();
    let mut lines = block.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}

/// curl as alice with Kerberos (`--negotiate -u :`) and `args`.
pub fn as_alice(realm: &Realm, args: &[&str]) -> Reply {
    let mut all = vec!["--negotiate", "-u", ":"];
    all.extend_from_slice(args);
    curl(|c| realm.alice(c), &all)
}

/// Writes `text` to `path`.
pub fn write(path: &Path, text: &str) {
    let mut f = std::fs::File::create(path).expect("create file");
    f.write_all(text.as_bytes()).expect("write file");
}

/// An `OsString` of `path`, for command lines.
pub fn os(path: &Path) -> OsString {
    path.as_os_str().to_owned()
}
