//! Building a workspace `cdylib` for the tests (`cargo build`, once per
//! package).

use super::*;

/// Builds a workspace `cdylib` package with cargo (the same profile as the
/// calling binary) and returns the library's path. Tests use it so that the
/// DLL they load is always the current one.
pub fn build_cdylib(package: &str) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "--quiet", "--message-format=json", "-p", package]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run cargo to build {package}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build -p {package} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let suffix = std::env::consts::DLL_SUFFIX;
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines() {
        if !line.contains("\"compiler-artifact\"") || !line.contains("cdylib") {
            continue;
        }
        // The artifact's paths are JSON strings ending in the DLL suffix.
        for piece in line.split('"') {
            if piece.ends_with(suffix) && piece.contains(&package.replace('-', "_")) {
                return Ok(PathBuf::from(piece));
            }
        }
    }
    Err(format!(
        "cargo built {package} but reported no {suffix} file"
    ))
}
