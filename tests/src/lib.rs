//! The conformance suite every Kallithea host adapter must pass.
//!
//! A host gets the whole suite by implementing [`Driver`] (start an instance
//! serving [`app`], say how to reach it and how to make it assert an identity)
//! and calling [`run`]:
//!
//! ```no_run
//! # async fn t(driver: &dyn kallithea_conformance::Driver) {
//! let report = kallithea_conformance::run(driver).await;
//! report.print();
//! assert!(report.all_passed());
//! # }
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod app;
pub mod cases;
pub mod client;
mod driver;
pub mod identity;
#[cfg(feature = "iis")]
pub mod iis;
pub mod pattern;

pub use app::{app, REFLECT_PREFIX};
pub use driver::{resident_memory_of, Capabilities, Driver, RunningApp, Setup};

use std::time::{Duration, Instant};

use kallithea_core::{ByteLimit, Limits, PathBase};

/// The path base every suite instance is mounted at.
pub const BASE: &str = "/conformance";

/// The result of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The case passed.
    Pass,
    /// The case failed, with the reason.
    Fail(String),
    /// The host lacks a capability the case needs.
    Skip(&'static str),
}

/// The suite's results for one host.
#[derive(Debug)]
pub struct Report {
    /// The host's name.
    pub host: String,
    /// Case name, outcome and duration, in run order.
    pub results: Vec<(&'static str, Outcome, Duration)>,
}

impl Report {
    /// Whether no case failed.
    pub fn all_passed(&self) -> bool {
        !self
            .results
            .iter()
            .any(|(_, o, _)| matches!(o, Outcome::Fail(_)))
    }

    /// Prints the per-case pass/fail table to standard error, straight to the
    /// stream so that the test harness's output capture does not hide it.
    pub fn print(&self) {
        use std::io::Write;
        let mut out = std::io::stderr().lock();
        let _ = writeln!(out, "\nconformance suite — host: {}", self.host);
        let width = self
            .results
            .iter()
            .map(|(n, _, _)| n.len())
            .max()
            .unwrap_or(10);
        for (name, outcome, took) in &self.results {
            let (word, why) = match outcome {
                Outcome::Pass => ("pass", String::new()),
                Outcome::Fail(why) => ("FAIL", format!("  {why}")),
                Outcome::Skip(why) => ("skip", format!("  {why}")),
            };
            let _ = writeln!(
                out,
                "  {name:<width$}  {word}  {:>7.1} ms{why}",
                took.as_secs_f64() * 1000.0
            );
        }
        let count = |f: fn(&Outcome) -> bool| self.results.iter().filter(|(_, o, _)| f(o)).count();
        let _ = writeln!(
            out,
            "{} of {} cases passed on {} ({} failed, {} skipped)",
            count(|o| *o == Outcome::Pass),
            self.results.len(),
            self.host,
            count(|o| matches!(o, Outcome::Fail(_))),
            count(|o| matches!(o, Outcome::Skip(_))),
        );
    }
}

/// Prints a table of cases (rows) by columns (e.g. host profiles), each
/// cell `pass`, `FAIL` or `skip`, to standard error; the failures' reasons
/// follow the table. `columns` pairs a column's title with its outcomes by
/// case name; a case missing from a column shows `-`.
pub fn print_matrix(title: &str, columns: &[(String, Vec<(String, Outcome)>)]) {
    use std::io::Write;
    let mut rows: Vec<&str> = Vec::new();
    for (_, results) in columns {
        for (name, _) in results {
            if !rows.contains(&name.as_str()) {
                rows.push(name);
            }
        }
    }
    let width = rows.iter().map(|r| r.len()).max().unwrap_or(4).max(4);
    let mut out = std::io::stderr().lock();
    let _ = writeln!(out, "\n{title}");
    let _ = write!(out, "  {:<width$}", "case");
    for (column, _) in columns {
        let _ = write!(out, "  {column:>w$}", w = column.len().max(4));
    }
    let _ = writeln!(out);
    let mut reasons = Vec::new();
    for row in &rows {
        let _ = write!(out, "  {row:<width$}");
        for (column, results) in columns {
            let cell = match results.iter().find(|(n, _)| n == row).map(|(_, o)| o) {
                Some(Outcome::Pass) => "pass",
                Some(Outcome::Fail(why)) => {
                    reasons.push(format!("{row} [{column}]: {why}"));
                    "FAIL"
                }
                Some(Outcome::Skip(_)) => "skip",
                None => "-",
            };
            let _ = write!(out, "  {cell:>w$}", w = column.len().max(4));
        }
        let _ = writeln!(out);
    }
    for reason in reasons {
        let _ = writeln!(out, "  {reason}");
    }
}

impl Report {
    /// The outcomes by case name, for [`print_matrix`].
    pub fn outcomes(&self) -> Vec<(String, Outcome)> {
        self.results
            .iter()
            .map(|(n, o, _)| ((*n).to_owned(), o.clone()))
            .collect()
    }
}

impl Setup {
    /// The main instance: body size unlimited, mounted at [`BASE`].
    pub fn main() -> Self {
        Setup {
            limits: Limits::default().unlimited_body(),
            path_base: PathBase::new(BASE).expect("BASE is a valid path base"),
            container_auth: None,
        }
    }

    /// The instance for the identity cases with auth-container in front, its
    /// store in `store`.
    pub fn container_auth(store: std::path::PathBuf) -> Self {
        Setup {
            container_auth: Some(store),
            ..Setup::main()
        }
    }

    /// The instance for the limit cases: 1 MiB bodies, 32 headers.
    pub fn limited() -> Self {
        Setup {
            limits: Limits {
                max_body_bytes: ByteLimit::Bytes(1024 * 1024),
                max_header_count: 32,
                ..Limits::default()
            },
            ..Setup::main()
        }
    }
}

/// The settings auth-container runs with in the suite: identities of the
/// `EXAMPLE` domain (or realm `EXAMPLE.TEST`) only, anonymous access off,
/// automatic activation.
pub fn container_settings() -> auth_container::Settings {
    auth_container::Settings {
        allowed_domains: vec!["EXAMPLE".into()],
        allowed_realms: vec!["EXAMPLE.TEST".into()],
        ..auth_container::Settings::default()
    }
}

/// The dispatcher every driver serves: [`app`] with the setup's limits and,
/// when asked, auth-container in front.
pub fn dispatcher(setup: &Setup) -> Result<kallithea_core::Dispatcher, kallithea_core::BoxError> {
    let builder = kallithea_core::Dispatcher::builder(app()).limits(setup.limits.clone());
    Ok(match &setup.container_auth {
        None => builder.build(),
        Some(store) => {
            let settings = container_settings();
            let store = auth_container::SqliteDirectory::open(store)?;
            let directory = std::sync::Arc::new(auth_container::CachedDirectory::new(
                store,
                settings.cache_ttl,
            ));
            builder
                .auth(auth_container::AuthContainer::new(settings, directory))
                .build()
        }
    })
}

/// Runs every case against `driver`'s host and returns the report.
pub async fn run(driver: &dyn Driver) -> Report {
    let caps = driver.capabilities();
    let mut report = Report {
        host: driver.name(),
        results: Vec::new(),
    };
    let cases = cases::all();
    let store_dir =
        std::env::temp_dir().join(format!("kallithea-conformance-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&store_dir);
    let store = store_dir.join("users.sqlite3");
    let (main, limited, authed) = match (
        driver.start(Setup::main()).await,
        driver.start(Setup::limited()).await,
        driver.start(Setup::container_auth(store)).await,
    ) {
        (Ok(m), Ok(l), Ok(a)) => (m, l, a),
        (m, l, a) => {
            let why = m
                .err()
                .or(l.err())
                .or(a.err())
                .map(|e| e.to_string())
                .unwrap_or_default();
            for case in cases {
                report.results.push((
                    case.name,
                    Outcome::Fail(format!("host did not start: {why}")),
                    Duration::ZERO,
                ));
            }
            return report;
        }
    };
    let ctx = cases::Ctx {
        host: main.as_ref(),
        limited: limited.as_ref(),
        authed: authed.as_ref(),
        client: client::Client::new(main.addr()),
        base: BASE,
    };
    for case in cases {
        if let Some(needs) = case.needs {
            if !needs(&caps) {
                report.results.push((
                    case.name,
                    Outcome::Skip("host lacks the capability"),
                    Duration::ZERO,
                ));
                continue;
            }
        }
        let started = Instant::now();
        let outcome = match tokio::time::timeout(case.timeout, (case.run)(&ctx)).await {
            Ok(Ok(())) => Outcome::Pass,
            Ok(Err(why)) => Outcome::Fail(why),
            Err(_) => Outcome::Fail(format!("did not finish within {:?}", case.timeout)),
        };
        report.results.push((case.name, outcome, started.elapsed()));
    }
    drop(ctx);
    main.stop().await;
    limited.stop().await;
    authed.stop().await;
    let _ = std::fs::remove_dir_all(&store_dir);
    report
}
