//! The IIS simulator as a program: loads an ISAPI extension or a native
//! module (told apart by its exports) and serves it on loopback until Ctrl-C
//! or SIGTERM, then terminates it and prints what happened. Exits with 1 if
//! the DLL broke the IIS contract.
//!
//! ```text
//! iis-sim --dll target/debug/libportal_isapi.so --listen 127.0.0.1:8080 \
//!         --domain EXAMPLE --user alice:wonderland
//! curl -u alice:wonderland http://127.0.0.1:8080/api/whoami
//! ```

use std::collections::HashMap;
use std::process::ExitCode;

use iis_sim::{Config, Users, WindowsAuth};

const HELP: &str = "\
usage: iis-sim --dll FILE [options]

  --dll FILE            the ISAPI extension or native module to load (its
                        configuration is FILE with .toml, or
                        KALLITHEA_IIS_CONFIG)
  --listen ADDR         where to listen (default 127.0.0.1:8080)
  --vdir PATH           the virtual directory (default /)
  --domain NAME         the Windows domain users belong to (default EXAMPLE)
  --user NAME:PASSWORD  a user Basic authentication accepts (repeatable)
  --fixed-user 'D\\u'    report every request as this user (Negotiate)
  --anonymous           also let requests without credentials through
  --any-user-password P accept any user name with password P (tests)
  --negotiate-keytab F  Windows authentication with real Kerberos (Unix):
                        accept Negotiate tokens for the keys in keytab F and
                        report users as NETBIOS\\user (see --netbios)
  --replay-cache DIR    the Negotiate replay cache folder (required with
                        --negotiate-keytab)
  --netbios REALM=NAME  map a Kerberos realm to its NetBIOS domain name
                        (repeatable; required with --negotiate-keytab)
  --stdin-stop          also stop when standard input ends
  --iis-threads N       call HttpExtensionProc (or the module's handler) on
                        a pool of N threads
                        (default: on the thread that read the request)
  --read-ahead BYTES    body bytes read before the extension runs (49152)
";

fn fail(msg: &str) -> ExitCode {
    eprintln!("iis-sim: {msg}\n\n{HELP}");
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut args = std::env::args().skip(1);
    let (mut dll, mut listen, mut vdir) = (None, "127.0.0.1:8080".to_owned(), "/".to_owned());
    let (mut domain, mut users, mut fixed, mut anonymous) =
        ("EXAMPLE".to_owned(), HashMap::new(), None, false);
    let (mut threads, mut read_ahead) = (0usize, 48 * 1024usize);
    let (mut any_password, mut stdin_stop) = (None, false);
    let (mut keytab, mut replay_cache, mut netbios) = (None, None, HashMap::new());
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        let r: Result<(), String> = (|| {
            match a.as_str() {
                "--dll" => dll = Some(value("--dll")?),
                "--listen" => listen = value("--listen")?,
                "--vdir" => vdir = value("--vdir")?,
                "--domain" => domain = value("--domain")?,
                "--user" => {
                    let v = value("--user")?;
                    let (u, p) = v.split_once(':').ok_or("--user takes NAME:PASSWORD")?;
                    users.insert(u.to_owned(), p.to_owned());
                }
                "--fixed-user" => fixed = Some(value("--fixed-user")?),
                "--anonymous" => anonymous = true,
                "--any-user-password" => any_password = Some(value("--any-user-password")?),
                "--stdin-stop" => stdin_stop = true,
                "--negotiate-keytab" => keytab = Some(value("--negotiate-keytab")?),
                "--replay-cache" => replay_cache = Some(value("--replay-cache")?),
                "--netbios" => {
                    let v = value("--netbios")?;
                    let (realm, name) = v
                        .split_once('=')
                        .filter(|(r, n)| !r.is_empty() && !n.is_empty())
                        .ok_or("--netbios takes REALM=NAME, e.g. EXAMPLE.TEST=EXAMPLE")?;
                    netbios.insert(realm.to_ascii_uppercase(), name.to_owned());
                }
                "--iis-threads" => {
                    threads = value("--iis-threads")?
                        .parse()
                        .map_err(|_| "--iis-threads takes a number")?
                }
                "--read-ahead" => {
                    read_ahead = value("--read-ahead")?
                        .parse()
                        .map_err(|_| "--read-ahead takes a number")?
                }
                "--help" | "-h" => return Err(String::new()),
                other => return Err(format!("unknown argument {other:?}")),
            }
            Ok(())
        })();
        match r {
            Ok(()) => {}
            Err(e) if e.is_empty() => {
                print!("{HELP}");
                return ExitCode::SUCCESS;
            }
            Err(e) => return fail(&e),
        }
    }
    let Some(dll) = dll else {
        return fail("--dll is required");
    };
    if !vdir.starts_with('/') {
        return fail("--vdir must start with /");
    }
    let mut config = Config::new(dll);
    config.vdir = vdir;
    config.iis_threads = threads;
    config.read_ahead = read_ahead;
    let negotiate_with_others = fixed.is_some() || any_password.is_some() || !users.is_empty();
    config.auth = match (fixed, any_password) {
        _ if keytab.is_some() => {
            if negotiate_with_others {
                return fail(
                    "--negotiate-keytab excludes --user, --fixed-user and --any-user-password",
                );
            }
            match negotiate(keytab, replay_cache, netbios) {
                Ok(auth) => auth,
                Err(e) => return fail(&e),
            }
        }
        (Some(_), Some(_)) => {
            return fail("--fixed-user and --any-user-password exclude each other")
        }
        (Some(user), None) => WindowsAuth::Fixed { user },
        (None, Some(password)) => WindowsAuth::Basic {
            domain,
            users: Users::AnyWithPassword(password),
            anonymous,
        },
        (None, None) if users.is_empty() && anonymous => WindowsAuth::Anonymous,
        (None, None) if users.is_empty() => {
            return fail("say who may sign in: --user NAME:PASSWORD, --fixed-user, or --anonymous")
        }
        (None, None) => WindowsAuth::Basic {
            domain,
            users: Users::Listed(users),
            anonymous,
        },
    };
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => return fail(&format!("cannot listen on {listen}: {e}")),
    };
    let sim = match iis_sim::start(config, listener).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("iis-sim: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("iis-sim: serving on http://{}", sim.local_addr());
    wait_for_stop(stdin_stop).await;
    eprintln!("iis-sim: stopping");
    let stats = sim.shutdown().await;
    eprintln!(
        "iis-sim: {} requests, {} sessions ended, slowest HttpExtensionProc {:?}",
        stats.requests, stats.sessions_ended, stats.slowest_extension_proc
    );
    if stats.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        for v in &stats.violations {
            eprintln!("iis-sim: violation: {v}");
        }
        ExitCode::FAILURE
    }
}

#[cfg(unix)]
fn negotiate(
    keytab: Option<String>,
    replay_cache: Option<String>,
    netbios: HashMap<String, String>,
) -> Result<WindowsAuth, String> {
    let keytab = keytab.ok_or("--negotiate-keytab needs a value")?;
    let replay_cache = replay_cache.ok_or("--negotiate-keytab needs --replay-cache DIR")?;
    if netbios.is_empty() {
        return Err("--negotiate-keytab needs --netbios REALM=NAME".into());
    }
    let config = host_hyper::NegotiateConfig::new(keytab, replay_cache);
    let negotiator = host_hyper::Negotiator::new(&config).map_err(|e| e.to_string())?;
    Ok(WindowsAuth::Negotiate {
        negotiator: std::sync::Arc::new(negotiator),
        netbios,
    })
}

#[cfg(not(unix))]
fn negotiate(
    _: Option<String>,
    _: Option<String>,
    _: HashMap<String, String>,
) -> Result<WindowsAuth, String> {
    Err("--negotiate-keytab needs a Unix build (GSSAPI)".into())
}

/// Ctrl-C, SIGTERM (Unix), or with `stdin_stop` the end of standard input
/// (how a parent process stops a simulator running under Wine).
async fn wait_for_stop(stdin_stop: bool) {
    let stdin_closed = async {
        if !stdin_stop {
            return std::future::pending::<()>().await;
        }
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        loop {
            match tokio::io::AsyncReadExt::read(&mut stdin, &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut t) => {
                t.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
        () = stdin_closed => {}
    }
}
