//! The smallest app served by host-hyper: an axum router that greets whoever the
//! host says the user is.
//!
//! ```text
//! cargo run -p kallithea-examples --bin hello-hyper [-- --config hello.toml]
//! ```
//! Settings come from the optional TOML file (see `host_hyper::HyperConfig`) and
//! `KALLITHEA_*` environment variables (`KALLITHEA_LISTEN=127.0.0.1:9000`).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use axum::extract::Request;
use axum::routing::get;
use axum::Router;
use host_hyper::{HyperConfig, Server};
use kallithea_core::{config, Dispatcher, RequestExt};

/// The hello app: `/` greets the user, `/whoami` shows what the host reported.
fn app() -> Router {
    Router::new()
        .route("/", get(|| async { "Hello, world!\n" }))
        .route(
            "/whoami",
            get(|req: Request| async move {
                let identity = req
                    .identity()
                    .map_or("none".to_owned(), ToString::to_string);
                let conn = req.connection_info().map_or("unknown".to_owned(), |c| {
                    format!("{} (secure: {})", c.remote, c.secure)
                });
                format!(
                    "identity: {identity}\nclient: {conn}\npath base: {}\n",
                    req.path_base()
                )
            }),
        )
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let mut args = std::env::args().skip(1);
    let mut path: Option<PathBuf> = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => match args.next() {
                Some(p) => path = Some(p.into()),
                None => return usage("--config needs a file"),
            },
            "--help" | "-h" => return usage(""),
            other => return usage(&format!("unknown argument {other:?}")),
        }
    }

    let cfg: HyperConfig = match config::load(path.as_deref(), "KALLITHEA") {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hello-hyper: {e}");
            return ExitCode::from(2);
        }
    };
    let server = match Server::from_config(&cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hello-hyper: {e}");
            return ExitCode::from(1);
        }
    };
    let listener = match tokio::net::TcpListener::bind(cfg.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hello-hyper: cannot listen on {}: {e}", cfg.listen);
            return ExitCode::from(1);
        }
    };
    let dispatcher = Dispatcher::builder(app())
        .limits(cfg.limits.clone())
        .build();
    let addr = listener.local_addr().map_or(cfg.listen, |a| a);
    println!("hello-hyper: serving on http://{addr} (Ctrl-C to stop)");
    let report = server.serve(listener, dispatcher).await;
    println!(
        "hello-hyper: stopped ({} connections open at shutdown, {} ended at the drain deadline)",
        report.in_flight, report.aborted
    );
    ExitCode::SUCCESS
}

fn usage(problem: &str) -> ExitCode {
    if !problem.is_empty() {
        eprintln!("hello-hyper: {problem}");
    }
    eprintln!("usage: hello-hyper [--config FILE.toml]\n  environment: KALLITHEA_LISTEN, KALLITHEA_LIMITS__MAX_BODY_BYTES, ...");
    ExitCode::from(if problem.is_empty() { 0 } else { 2 })
}
