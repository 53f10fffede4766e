//! `doctor`: reads a deployment's configuration and reports mistakes in
//! plain words, each with its fix.
//!
//! Two kinds of configuration are understood: an IIS DLL's (the ISAPI
//! extension's or native module's `.toml`: `worker_threads`, `limits`,
//! `[app]` with the app's own settings, `[app.auth_container]`) and a
//! host-hyper app's (the portal's: `data_dir`, `[server]` with
//! `[server.trust]`, `[auth_container]`). The file is read loosely, so that
//! every mistake is reported at once, then strictly, so that nothing the
//! app would refuse passes.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::pe::{self, PeInfo};

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Works, but not as intended or not safely.
    Warning,
    /// Will not work, or is insecure.
    Error,
}

/// One mistake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// How bad.
    pub severity: Severity,
    /// Where: `file:line` when the key's line is known.
    pub place: String,
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(
            f,
            "{}: {sev}: {}\n  fix: {}",
            self.place, self.problem, self.fix
        )
    }
}

/// Which configuration a file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ConfigKind {
    /// An IIS DLL's configuration (ISAPI extension or native module).
    Iis,
    /// A host-hyper app's configuration (the portal's).
    Hyper,
}

/// What to check.
pub struct Inputs<'a> {
    /// The configuration file.
    pub path: &'a Path,
    /// Its text.
    pub text: &'a str,
    /// The kind, if known (otherwise guessed from the keys).
    pub kind: Option<ConfigKind>,
    /// The DLL, when given: its PE facts (or why they could not be read).
    pub dll: Option<(&'a Path, Result<PeInfo, String>)>,
    /// Whether the application pool has 32-bit applications enabled, when
    /// given.
    pub pool_32_bit: Option<bool>,
}

/// The shortest secret doctor accepts without a warning.
pub const GOOD_SECRET_LEN: usize = 32;

struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
    found: Vec<Finding>,
}

impl Ctx<'_> {
    /// `file:line` of the first line assigning `key` (within `table` when
    /// given), or just the file.
    fn place(&self, table: Option<&str>, key: &str) -> String {
        let want = table.unwrap_or("");
        // The table the current line is in ("" before any header).
        let mut current = String::new();
        for (i, line) in self.text.lines().enumerate() {
            let t = line.trim();
            if let Some(h) = t.strip_prefix('[') {
                current = h.trim_end_matches(']').trim().to_owned();
                continue;
            }
            let assigned = t
                .split_once('=')
                .map(|(k, _)| k.trim().trim_matches('"'))
                .is_some_and(|k| k == key);
            if current == want && assigned {
                return format!("{}:{}", self.path.display(), i + 1);
            }
        }
        self.path.display().to_string()
    }

    fn push(&mut self, severity: Severity, place: String, problem: String, fix: String) {
        self.found.push(Finding {
            severity,
            place,
            problem,
            fix,
        });
    }
}

fn table<'a>(t: &'a toml::Table, path: &[&str]) -> Option<&'a toml::Table> {
    let mut cur = t;
    for p in path {
        cur = cur.get(*p)?.as_table()?;
    }
    Some(cur)
}

/// Checks the configuration (and the DLL against the pool); the findings,
/// worst first.
pub fn check(inputs: &Inputs<'_>) -> Vec<Finding> {
    let mut cx = Ctx {
        path: inputs.path,
        text: inputs.text,
        found: Vec::new(),
    };
    let doc: toml::Table = match toml::from_str(inputs.text) {
        Ok(d) => d,
        Err(e) => {
            let line = e.span().map(|s| {
                inputs.text[..s.start.min(inputs.text.len())]
                    .lines()
                    .count()
                    .max(1)
            });
            let place = match line {
                Some(l) => format!("{}:{l}", inputs.path.display()),
                None => inputs.path.display().to_string(),
            };
            cx.push(
                Severity::Error,
                place,
                format!("not valid TOML: {}", e.message()),
                "correct the syntax at that line".into(),
            );
            return cx.found;
        }
    };
    let kind = inputs.kind.unwrap_or(
        if doc.contains_key("server") || doc.contains_key("auth_container") {
            ConfigKind::Hyper
        } else {
            ConfigKind::Iis
        },
    );
    let (auth_path, auth_table): (&[&str], &str) = match kind {
        ConfigKind::Iis => (&["app", "auth_container"], "app.auth_container"),
        ConfigKind::Hyper => (&["auth_container"], "auth_container"),
    };
    let auth = table(&doc, auth_path);
    let enabled = auth
        .and_then(|a| a.get("enabled"))
        .and_then(|v| v.as_bool())
        .unwrap_or(true);
    let anonymous = auth
        .and_then(|a| a.get("anonymous"))
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    if enabled && anonymous {
        let place = cx.place(Some(auth_table), "anonymous");
        cx.push(
            Severity::Warning,
            place,
            "container authentication is on while anonymous access is allowed: a request that \
             reaches the app without an identity (IIS with anonymous authentication on, a proxy \
             that did not authenticate) is served as the anonymous user instead of being refused"
                .into(),
            match kind {
                ConfigKind::Iis => format!(
                    "set {auth_table}.anonymous = false, and turn anonymous authentication off \
                     in IIS (the web.config from kallithea install-iis does)"
                ),
                ConfigKind::Hyper => format!(
                    "set {auth_table}.anonymous = false unless anonymous visitors are intended"
                ),
            },
        );
    }

    let fallback = auth
        .and_then(|a| a.get("fallback_header"))
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty());
    let trust = table(&doc, &["server", "trust"]);
    if let Some(header) = fallback {
        let place = cx.place(Some(auth_table), "fallback_header");
        match kind {
            ConfigKind::Iis => cx.push(
                Severity::Error,
                place,
                format!(
                    "fallback_header = {header:?} but an IIS deployment has no paired front \
                     proxy: the header could only come from clients, and it is never believed"
                ),
                format!("remove {auth_table}.fallback_header; IIS reports the user itself"),
            ),
            ConfigKind::Hyper if trust.is_none() => cx.push(
                Severity::Error,
                place,
                format!(
                    "fallback_header = {header:?} but no front proxy is trusted ([server.trust] \
                     is missing): the header is never believed, so nobody is authenticated by it"
                ),
                "add [server.trust] with the proxy's addresses and a pairing secret, or remove \
                 the fallback header"
                    .into(),
            ),
            ConfigKind::Hyper => {}
        }
    }

    identity_rules(&mut cx, kind, &doc, auth, auth_table);

    if let Some(trust) = trust {
        let secret = trust.get("secret").and_then(|v| v.as_str()).unwrap_or("");
        let place = cx.place(Some("server.trust"), "secret");
        if secret.trim().is_empty() {
            cx.push(
                Severity::Error,
                place,
                "the pairing secret is empty: any client that reaches the server directly \
                 could claim any identity"
                    .into(),
                "set server.trust.secret to a random string of 32 characters or more (for \
                 example: openssl rand -hex 32), the same in the proxy's configuration"
                    .into(),
            );
        } else if secret.chars().count() < GOOD_SECRET_LEN {
            cx.push(
                if secret.chars().count() < 16 {
                    Severity::Error
                } else {
                    Severity::Warning
                },
                place,
                format!(
                    "the pairing secret has only {} characters: it can be guessed",
                    secret.chars().count()
                ),
                "use a random string of 32 characters or more (openssl rand -hex 32)".into(),
            );
        }
        let proxies = trust
            .get("proxies")
            .and_then(|v| v.as_array())
            .map_or(0, Vec::len);
        if proxies == 0 {
            let place = cx.place(Some("server.trust"), "proxies");
            cx.push(
                Severity::Error,
                place,
                "no proxy addresses: no request can come from a trusted proxy".into(),
                "list the proxy's addresses in server.trust.proxies (\"127.0.0.1/32\")".into(),
            );
        }
    }

    // The data folder (where the SQLite store lives).
    let data_dir = match kind {
        ConfigKind::Iis => table(&doc, &["app"]).and_then(|a| a.get("data_dir")),
        ConfigKind::Hyper => doc.get("data_dir"),
    }
    .and_then(|v| v.as_str())
    .map(PathBuf::from);
    let data_table = match kind {
        ConfigKind::Iis => Some("app"),
        ConfigKind::Hyper => None,
    };
    if let Some(dir) = data_dir {
        let resolved = if dir.is_absolute() {
            dir.clone()
        } else {
            inputs.path.parent().unwrap_or(Path::new(".")).join(&dir)
        };
        secret_files(&mut cx, &resolved, data_table);
        if let Err(why) = writable(&resolved) {
            let place = cx.place(data_table, "data_dir");
            cx.push(
                Severity::Error,
                place,
                format!(
                    "the database folder {} is not writable: {why}",
                    resolved.display()
                ),
                "create the folder and give the account the app runs as (the application \
                 pool's identity under IIS) permission to modify it"
                    .into(),
            );
        }
    }

    // The DLL against the pool.
    if let Some((dll, info)) = &inputs.dll {
        match info {
            Err(why) => cx.push(
                Severity::Error,
                dll.display().to_string(),
                why.clone(),
                "build the crate as a cdylib for the Windows target".into(),
            ),
            Ok(info) => {
                if let Err(e) = pe::kind(info) {
                    cx.push(
                        Severity::Error,
                        dll.display().to_string(),
                        e.to_string(),
                        "see the README's \"Building for IIS\"".into(),
                    );
                }
                if let Some(pool32) = inputs.pool_32_bit {
                    let dll32 = info.machine.is_32_bit();
                    if dll32 != pool32 {
                        cx.push(
                            Severity::Error,
                            dll.display().to_string(),
                            format!(
                                "the DLL is {} but the application pool has 32-bit applications \
                                 {}: IIS will not load it (HTTP 503, the pool stops)",
                                info.machine,
                                if pool32 { "enabled" } else { "disabled" }
                            ),
                            if dll32 {
                                "set enable32BitAppOnWin64 = true on the pool, or build for \
                                 x86_64-pc-windows-msvc"
                                    .into()
                            } else {
                                "set enable32BitAppOnWin64 = false on the pool, or build for \
                                 i686-pc-windows-msvc"
                                    .into()
                            },
                        );
                    }
                }
            }
        }
    }

    // What the app itself would refuse.
    let strict = match kind {
        ConfigKind::Iis => kallithea_core::config::from_str::<host_iis::config::IisConfig>(
            inputs.text,
            Some(inputs.path),
            "KALLITHEA_DOCTOR_NONE",
            std::iter::empty::<(String, String)>(),
        )
        .err(),
        ConfigKind::Hyper => None,
    };
    if let Some(e) = strict {
        cx.push(
            Severity::Error,
            inputs.path.display().to_string(),
            format!("the DLL would refuse this configuration: {e}"),
            "correct the keys named".into(),
        );
    }
    if kind == ConfigKind::Iis {
        if let Some(a) = auth {
            if let Err(e) = toml::Value::Table(a.clone()).try_into::<auth_container::Settings>() {
                let place = cx.place(Some(auth_table), "");
                cx.push(
                    Severity::Error,
                    place,
                    format!("[{auth_table}]: {}", e.message()),
                    "correct the setting named".into(),
                );
            }
        }
    }
    cx.found.sort_by_key(|f| std::cmp::Reverse(f.severity));
    cx.found
}

/// The identity rules: the name variable, names that several domains or
/// realms would share, and `admins` entries that cannot stand. Only for a
/// configuration that uses auth-container (an auth table or `admins`).
fn identity_rules(
    cx: &mut Ctx<'_>,
    kind: ConfigKind,
    doc: &toml::Table,
    auth: Option<&toml::Table>,
    auth_table: &str,
) {
    let (admins_value, admins_table) = match kind {
        ConfigKind::Iis => (
            table(doc, &["app"]).and_then(|a| a.get("admins")),
            Some("app"),
        ),
        ConfigKind::Hyper => (doc.get("admins"), None),
    };
    if auth.is_none() && admins_value.is_none() {
        return;
    }
    // Unreadable settings are reported by the strict pass.
    let Ok(settings) = toml::Value::Table(auth.cloned().unwrap_or_default())
        .try_into::<auth_container::Settings>()
    else {
        return;
    };
    if !auth_container::is_identity_variable(&settings.header) {
        let place = cx.place(Some(auth_table), "header");
        cx.push(
            Severity::Error,
            place,
            format!(
                "header = {:?} is not a variable the host authenticates: a client could write \
                 it and sign in as anyone",
                settings.header
            ),
            format!(
                "use one of {} (REMOTE_USER unless the host documents otherwise)",
                auth_container::IDENTITY_VARIABLES.join(", ")
            ),
        );
    }
    for ambiguity in auth_container::ambiguities(&settings) {
        let key = if settings.allowed_domains.len() > 1 {
            "allowed_domains"
        } else if settings.allowed_realms.len() > 1 {
            "allowed_realms"
        } else {
            "clean_username"
        };
        let place = cx.place(Some(auth_table), key);
        cx.push(
            Severity::Warning,
            place,
            ambiguity,
            format!(
                "set {auth_table}.allowed_domains / allowed_realms to the one domain (and its \
                 realm) whose accounts may sign in, or clean_username = false to keep the \
                 domain in user names"
            ),
        );
    }
    let admins: Vec<String> = admins_value
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if let Err(refused) = auth_container::AccountList::new(&admins, &settings) {
        for r in refused {
            let place = cx.place(admins_table, "admins");
            cx.push(
                Severity::Error,
                place,
                format!("{r}; the app refuses to start"),
                "write each administrator as the host reports the account (EXAMPLE\\alice, \
                 alice@EXAMPLE.TEST), from an allowed domain or realm"
                    .into(),
            );
        }
    }
}

/// Files in the data folder that hold secrets (the user store with the form
/// key, the generated pairing secret) must be for their owner only.
fn secret_files(cx: &mut Ctx<'_>, dir: &Path, data_table: Option<&str>) {
    let store = dir.join("kallithea.sqlite3");
    let mut files = vec![dir.join("pairing-secret")];
    for suffix in ["", "-wal", "-shm"] {
        files.push(PathBuf::from(format!("{}{suffix}", store.display())));
    }
    for file in files {
        if kallithea_core::secret::readable_by_others(&file).unwrap_or(false) {
            let place = cx.place(data_table, "data_dir");
            cx.push(
                Severity::Warning,
                place,
                format!(
                    "{} holds secrets and other accounts on this machine can read it",
                    file.display()
                ),
                format!(
                    "chmod 600 {} (and keep the folder the app's own)",
                    file.display()
                ),
            );
        }
    }
}

/// Whether files can be created in `dir` (or, if it does not exist yet, in
/// the nearest folder above it that does).
fn writable(dir: &Path) -> Result<(), String> {
    let mut at = dir.to_path_buf();
    while !at.exists() {
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p.to_path_buf(),
            _ => return Err("no part of the path exists".into()),
        }
    }
    if !at.is_dir() {
        return Err(format!("{} is a file, not a folder", at.display()));
    }
    let probe = at.join(format!(".kallithea-doctor-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(format!("{}: {e}", at.display())),
    }
}
