//! `kallithea`: deployment tooling for the Kallithea host framework.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kallithea_cli::install_iis::Install;
use kallithea_cli::pe;

#[derive(Parser)]
#[command(
    name = "kallithea",
    version,
    about = "Deployment tooling for apps built with the Kallithea host framework"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes web.config, install.ps1 and uninstall.ps1 for putting an
    /// ISAPI extension or native module behind IIS.
    #[command(after_help = "\
Examples:
  kallithea install-iis target/release/portal.dll -c portal.toml
  kallithea install-iis portal.dll -c portal.toml --virtualdir /portal \\
      --site 'Default Web Site' --pool Portal --physical-path 'D:\\apps\\portal' --out deploy

The DLL's exports tell an ISAPI extension (GetExtensionVersion,
HttpExtensionProc, TerminateExtension) from a native module (RegisterModule);
its PE header tells 32-bit from 64-bit. Copy the DLL, its .toml and the
generated files to the physical path on the server, then run install.ps1 from
an elevated PowerShell.")]
    InstallIis(InstallIisArgs),
    /// Imports, lists, activates and deactivates users in the user store.
    #[command(after_help = "\
Examples:
  kallithea users --store data/kallithea.sqlite3 import staff.csv -c portal.toml
  kallithea users --store data/kallithea.sqlite3 list
  kallithea users --store data/kallithea.sqlite3 deactivate 'EXAMPLE\\bob'

CSV files have a header row: username,email,first_name,last_name,active
(only username is required); JSON files an array of objects with those
fields. Names are cleaned with the auth_container settings of -c (its
[auth_container] or [app.auth_container] table), as the app cleans the names
IIS reports.")]
    Users(UsersArgs),
    /// Prints the tracing events and panics (with backtraces) of every
    /// worker process live, until Ctrl-C.
    #[command(after_help = "\
Examples:
  kallithea trace
  kallithea trace --grep kallithea::panic
  KALLITHEA_TRACE_DIR=/run/kallithea-trace kallithea trace

Workers (the ISAPI extension, the native module, host-hyper apps that add
kallithea_trace::layer()) send to every listener in the trace folder:
KALLITHEA_TRACE_DIR, or kallithea-trace in the temporary folder. A worker
with no listener pays next to nothing; a listener that falls behind loses
events, the worker never waits.")]
    Trace(TraceArgs),
    /// Checks a deployment's configuration and reports mistakes with their
    /// fixes; the exit status is 1 when anything is wrong.
    #[command(after_help = "\
Examples:
  kallithea doctor portal.toml
  kallithea doctor portal.toml --dll portal.dll --pool-32bit false

Checks: container authentication on while anonymous access is allowed; a
fallback header without a trusted proxy; an empty or short pairing secret; a
database folder that is not writable; a DLL whose bitness does not match the
application pool (--dll with --pool-32bit); and whatever the app itself would
refuse in the file.")]
    Doctor(DoctorArgs),
}

#[derive(clap::Args)]
struct DoctorArgs {
    /// The configuration file (an IIS DLL's .toml, or a host-hyper app's).
    config: PathBuf,
    /// Which kind of configuration [default: guessed from its keys].
    #[arg(long, value_enum)]
    kind: Option<kallithea_cli::doctor::ConfigKind>,
    /// The DLL the configuration belongs to.
    #[arg(long)]
    dll: Option<PathBuf>,
    /// Whether the application pool has 32-bit applications enabled.
    #[arg(long = "pool-32bit", value_name = "true|false")]
    pool_32_bit: Option<bool>,
}

#[derive(clap::Args)]
struct TraceArgs {
    /// The trace folder [default: KALLITHEA_TRACE_DIR, or kallithea-trace in
    /// the temporary folder].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print only events containing this text.
    #[arg(long)]
    grep: Option<String>,
}

#[derive(clap::Args)]
struct UsersArgs {
    /// The SQLite user store (the app's data folder's kallithea.sqlite3).
    #[arg(long, global = true)]
    store: Option<PathBuf>,
    /// The app's configuration, for its auth_container settings.
    #[arg(short = 'c', long = "config", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    action: UsersAction,
}

#[derive(Subcommand)]
enum UsersAction {
    /// Creates or updates users from a CSV or JSON file.
    Import {
        /// The file.
        file: PathBuf,
        /// Its format [default: from the extension].
        #[arg(long, value_enum)]
        format: Option<kallithea_cli::users::Format>,
    },
    /// Lists every user.
    List {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Lets a user sign in.
    Activate {
        /// The user (as stored, or as IIS reports it).
        name: String,
    },
    /// Stops a user from signing in.
    Deactivate {
        /// The user (as stored, or as IIS reports it).
        name: String,
    },
}

#[derive(clap::Args)]
struct InstallIisArgs {
    /// The built DLL (ISAPI extension or native module).
    dll: PathBuf,
    /// The DLL's configuration file (its limits go into web.config).
    #[arg(short = 'c', long = "config")]
    config: PathBuf,
    /// The virtual directory (/ for the site's root).
    #[arg(long = "virtualdir", default_value = "/")]
    virtual_dir: String,
    /// The IIS site.
    #[arg(long, default_value = "Default Web Site")]
    site: String,
    /// The application pool (created if missing).
    #[arg(long, default_value = "Kallithea")]
    pool: String,
    /// The folder on the server that will hold the DLL and its files
    /// [default: C:\inetpub\kallithea\<DLL name>].
    #[arg(long)]
    physical_path: Option<String>,
    /// Where to write the files.
    #[arg(long, default_value = "iis")]
    out: PathBuf,
    /// Replace files in --out that differ from what would be written.
    #[arg(long)]
    force: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::InstallIis(args) => install_iis(args),
        Command::Users(args) => users(args),
        Command::Trace(args) => trace(args),
        Command::Doctor(args) => doctor(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kallithea: {e}");
            ExitCode::FAILURE
        }
    }
}

fn install_iis(args: InstallIisArgs) -> Result<(), String> {
    let bytes = std::fs::read(&args.dll).map_err(|e| format!("{}: {e}", args.dll.display()))?;
    let info = pe::read(&bytes).map_err(|e| format!("{}: {e}", args.dll.display()))?;
    let kind = pe::kind(&info).map_err(|e| format!("{}: {e}", args.dll.display()))?;
    let config: host_iis::config::IisConfig =
        kallithea_core::config::load(Some(&args.config), host_iis::config::ENV_PREFIX)
            .map_err(|e| e.to_string())?;
    let dll_name = args
        .dll
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("{}: not a file name", args.dll.display()))?;
    let stem = dll_name
        .rsplit_once('.')
        .map_or(dll_name.as_str(), |(s, _)| s)
        .to_owned();
    let install = Install {
        dll_name,
        kind,
        machine: info.machine,
        virtual_dir: args.virtual_dir,
        site: args.site,
        pool: args.pool,
        physical_path: args
            .physical_path
            .unwrap_or_else(|| format!("C:\\inetpub\\kallithea\\{stem}")),
        max_body_bytes: match config.limits.max_body_bytes {
            kallithea_core::ByteLimit::Bytes(n) => Some(n),
            kallithea_core::ByteLimit::Unlimited => None,
        },
    };
    install.validate().map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let files = [
        ("web.config", install.web_config()),
        ("install.ps1", install.install_ps1()),
        ("uninstall.ps1", install.uninstall_ps1()),
    ];
    // Nothing is written if any file would clobber a different one.
    for (name, text) in &files {
        let path = args.out.join(name);
        if let Ok(old) = std::fs::read_to_string(&path) {
            if old != *text && !args.force {
                return Err(format!(
                    "{} exists and differs from what would be written (edited by hand?): \
                     move it away or pass --force",
                    path.display()
                ));
            }
        }
    }
    for (name, text) in &files {
        write(&args.out.join(name), text)?;
    }
    println!(
        "{} is a {} ({}): wrote web.config, install.ps1 and uninstall.ps1 to {}",
        args.dll.display(),
        install.kind,
        install.machine,
        args.out.display()
    );
    println!(
        "next: copy the DLL, {} and these files to {} on the server, then run install.ps1 as an administrator",
        args.config.display(),
        install.physical_path
    );
    Ok(())
}

fn users(args: UsersArgs) -> Result<(), String> {
    use kallithea_cli::users;
    let store = args
        .store
        .ok_or("--store FILE is required: the app's kallithea.sqlite3")?;
    let settings = users::settings(args.config.as_deref()).map_err(|e| e.to_string())?;
    let directory = users::open(&store).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| format!("cannot start: {e}"))?;
    let out = rt.block_on(async {
        match args.action {
            UsersAction::Import { file, format } => {
                users::import_file(&file, format, &directory, &settings).await
            }
            UsersAction::List { json } => users::list(&directory, json).await.map(|t| (t, true)),
            UsersAction::Activate { name } => users::set_active(&directory, &settings, &name, true)
                .await
                .map(|t| (t, true)),
            UsersAction::Deactivate { name } => {
                users::set_active(&directory, &settings, &name, false)
                    .await
                    .map(|t| (t, true))
            }
        }
    });
    match out {
        Ok((text, true)) => {
            print!("{text}");
            Ok(())
        }
        Ok((text, false)) => {
            print!("{text}");
            Err("some records were not imported (listed above)".into())
        }
        Err(e) => Err(e.to_string()),
    }
}

fn doctor(args: DoctorArgs) -> Result<(), String> {
    use kallithea_cli::doctor;
    let text = std::fs::read_to_string(&args.config)
        .map_err(|e| format!("{}: {e}", args.config.display()))?;
    let dll = args.dll.as_ref().map(|p| {
        let info = std::fs::read(p)
            .map_err(|e| e.to_string())
            .and_then(|b| pe::read(&b).map_err(|e| e.to_string()));
        (p.as_path(), info)
    });
    if args.pool_32_bit.is_some() && dll.is_none() {
        return Err(
            "--pool-32bit needs --dll: the DLL's bitness is what it is checked against".into(),
        );
    }
    let findings = doctor::check(&doctor::Inputs {
        path: &args.config,
        text: &text,
        kind: args.kind,
        dll,
        pool_32_bit: args.pool_32_bit,
    });
    if findings.is_empty() {
        println!("{}: no problems found", args.config.display());
        return Ok(());
    }
    for f in &findings {
        println!("{f}");
    }
    Err(format!(
        "{} problem{} in {}",
        findings.len(),
        if findings.len() == 1 { "" } else { "s" },
        args.config.display()
    ))
}

fn trace(args: TraceArgs) -> Result<(), String> {
    use std::io::Write as _;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    let dir = args.dir.unwrap_or_else(kallithea_trace::dir);
    let listener = kallithea_trace::Listener::bind(&dir)
        .map_err(|e| format!("cannot listen in {}: {e}", dir.display()))?;
    eprintln!(
        "kallithea trace: listening in {} (Ctrl-C stops)",
        dir.display()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| format!("cannot start: {e}"))?;
    {
        let stop = Arc::clone(&stop);
        rt.spawn(async move {
            wait_for_stop().await;
            stop.store(true, Ordering::Relaxed);
        });
    }
    let mut out = std::io::stdout().lock();
    while !stop.load(Ordering::Relaxed) {
        // Let the signal task run, then wait for an event a little while.
        rt.block_on(tokio::task::yield_now());
        match listener.recv(Duration::from_millis(200)) {
            Ok(Some(event)) => {
                if args.grep.as_deref().is_none_or(|g| event.contains(g)) {
                    let _ = writeln!(out, "{event}");
                    let _ = out.flush();
                }
            }
            Ok(None) => {}
            Err(e) => return Err(format!("receiving: {e}")),
        }
    }
    // Dropping the listener removes its socket.
    drop(listener);
    Ok(())
}

/// Ctrl-C, or SIGTERM on Unix.
async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}
