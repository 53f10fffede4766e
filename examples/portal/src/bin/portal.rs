//! The portal on host-hyper: `cargo run --release -p kallithea-portal`.
//!
//! Settings: an optional TOML file (`--config portal.toml`, see
//! `PortalConfig`) and `KALLITHEA_*` environment variables
//! (`KALLITHEA_ADMINS='["EXAMPLE\\alice"]'`, `KALLITHEA_SERVER__LISTEN=127.0.0.1:9000`).
//!
//! Without a `[server.trust]` section the portal trusts a front proxy on
//! loopback only, with a pairing secret it generates into the data directory;
//! with `[server.negotiate]` (the `negotiate` feature) it authenticates
//! browsers itself with Kerberos and trusts no proxy unless configured.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use host_hyper::{ProxyTrust, Server};
use kallithea_core::config;
use kallithea_portal::{Portal, PortalConfig};

#[tokio::main]
async fn main() -> ExitCode {
    {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        use tracing_subscriber::Layer;
        let filter =
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
        tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_filter(filter))
            // `kallithea trace` listeners see events and panics live.
            .with(kallithea_trace::layer().with_filter(kallithea_trace::filter()))
            .init();
        kallithea_trace::install_panic_hook();
    }
    let mut args = std::env::args().skip(1);
    let mut path: Option<PathBuf> = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => match args.next() {
                Some(p) => path = Some(p.into()),
                None => return fail(2, "--config needs a file"),
            },
            "--help" | "-h" => {
                println!("usage: portal [--config FILE.toml]   (environment: KALLITHEA_*)");
                return ExitCode::SUCCESS;
            }
            other => return fail(2, &format!("unknown argument {other:?}; see --help")),
        }
    }
    let mut cfg: PortalConfig = match config::load(path.as_deref(), "KALLITHEA") {
        Ok(c) => c,
        Err(e) => return fail(2, &e.to_string()),
    };
    if cfg.server.trust.is_none() && cfg.server.negotiate.is_none() {
        let file = cfg.data_dir.join("pairing-secret");
        let secret = match pairing_secret(&file) {
            Ok(s) => s,
            Err(e) => {
                return fail(
                    1,
                    &format!("cannot prepare the pairing secret {}: {e}", file.display()),
                )
            }
        };
        let loopback = vec![
            "127.0.0.1/32".parse().expect("valid"),
            "::1/128".parse().expect("valid"),
        ];
        cfg.server.trust = Some(ProxyTrust::new(loopback, secret));
        tracing::warn!(
            secret_file = %file.display(),
            "no [server.trust] configured: trusting a front proxy on loopback only, with the pairing secret in the data directory"
        );
    }
    if cfg.admins.is_empty() {
        tracing::warn!("no admins configured: the admin pages are closed (set admins = [\"name\"] or KALLITHEA_ADMINS)");
    }
    let portal = match Portal::open(
        &cfg.data_dir,
        cfg.auth_container.clone(),
        cfg.admins.clone(),
    ) {
        Ok(p) => p,
        Err(e) => return fail(1, &e.to_string()),
    };
    let server = match Server::from_config(&cfg.server) {
        Ok(s) => s,
        Err(e) => return fail(1, &format!("[server.negotiate]: {e}")),
    };
    let listener = match tokio::net::TcpListener::bind(cfg.server.listen).await {
        Ok(l) => l,
        Err(e) => return fail(1, &format!("cannot listen on {}: {e}", cfg.server.listen)),
    };
    let addr = listener.local_addr().map_or(cfg.server.listen, |a| a);
    println!(
        "portal: serving on http://{addr} (store {})",
        cfg.data_dir.join(kallithea_portal::STORE_FILE).display()
    );
    let report = server
        .serve(listener, portal.dispatcher(cfg.server.limits.clone()))
        .await;
    println!(
        "portal: stopped ({} connections open at shutdown, {} ended at the deadline)",
        report.in_flight, report.aborted
    );
    ExitCode::SUCCESS
}

/// Reads the pairing secret, generating it (64 hex digits, owner-only file) on
/// first start.
fn pairing_secret(file: &Path) -> std::io::Result<String> {
    if let Ok(s) = std::fs::read_to_string(file) {
        if kallithea_core::secret::readable_by_others(file).unwrap_or(false) {
            tracing::warn!(
                secret_file = %file.display(),
                "the pairing secret can be read by other accounts: chmod 600 it, or delete it to have a new one generated"
            );
        }
        let s = s.trim().to_owned();
        if s.len() >= host_hyper::MIN_SECRET_LEN {
            return Ok(s);
        }
        return Err(std::io::Error::other(format!(
            "it holds fewer than {} characters; delete it to have a new one generated",
            host_hyper::MIN_SECRET_LEN
        )));
    }
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let secret = kallithea_portal::random_hex(32)?;
    kallithea_core::secret::create_private(file, secret.as_bytes())?;
    Ok(secret)
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("portal: {message}");
    ExitCode::from(code)
}
