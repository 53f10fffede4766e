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
                        KALLITHEA_ISAPI_CONFIG)
  --listen ADDR         where to listen (default 127.0.0.1:8080)
  --vdir PATH           the virtual directory (default /)
  --domain NAME         the Windows domain users belong to (default EXAMPLE)
  --user NAME:PASSWORD  a user Basic authentication accepts (repeatable)
  --fixed-user 'D\\u'    report every request as this user (Negotiate)
  --anonymous           also let requests without credentials through
  --any-user-password P accept any user name with password P (tests)
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
    config.auth = match (fixed, any_password) {
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
