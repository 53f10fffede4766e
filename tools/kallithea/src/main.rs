//! `kallithea`: deployment tooling for the Kallithea host framework.

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
    let config: host_isapi::config::IsapiConfig =
        kallithea_core::config::load(Some(&args.config), host_isapi::config::ENV_PREFIX)
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

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}
