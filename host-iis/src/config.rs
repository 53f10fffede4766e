//! The configuration of an app in IIS: a TOML file beside the DLL, the same
//! for the ISAPI extension and the native module.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kallithea_core::config::{self, duration, ConfigError, Issues, Validate};
use kallithea_core::Limits;
use serde::Deserialize;

/// The environment variable naming the configuration file, when it is not the
/// one beside the DLL.
pub const CONFIG_ENV: &str = "KALLITHEA_IIS_CONFIG";

/// The name [`CONFIG_ENV`] had before the engine served both bindings; still
/// read when the new one is not set.
pub const OLD_CONFIG_ENV: &str = "KALLITHEA_ISAPI_CONFIG";

/// The prefix of environment overrides (`KALLITHEA_IIS_WORKER_THREADS=8`).
pub const ENV_PREFIX: &str = "KALLITHEA_IIS";

/// The prefix overrides had before (`KALLITHEA_ISAPI_…`); still read, the new
/// prefix winning where both set a key.
pub const OLD_ENV_PREFIX: &str = "KALLITHEA_ISAPI";

/// What an IIS binding reads at start-up.
///
/// ```toml
/// worker_threads = 8        # the runtime's threads (default: the CPU count)
/// drain_timeout = "30s"     # TerminateExtension waits this long for requests
/// first_step_on_iis_thread = true  # see below
///
/// [limits]
/// max_body_bytes = 30000000
///
/// [app]                     # the app's own settings, handed to make_app
/// data_dir = 'C:\inetpub\portal\data'
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IisConfig {
    /// Threads of the engine's runtime.
    #[serde(default = "default_workers")]
    pub worker_threads: usize,
    /// How long `TerminateExtension` lets in-flight requests run.
    #[serde(default = "default_drain", with = "duration")]
    pub drain_timeout: Duration,
    /// Whether a request's first step (up to its first wait) runs on the
    /// IIS thread that delivered it (default), or every request goes
    /// straight to the runtime. The first step is usually the whole request
    /// — map, route, answer from memory — and taking it on the IIS thread
    /// spares two thread hand-offs; a request that waits continues on the
    /// runtime and the IIS thread returns to IIS at that point. Turn it off
    /// for an app that computes for long before its first `.await` (such
    /// work would hold an IIS thread).
    #[serde(default = "default_true")]
    pub first_step_on_iis_thread: bool,
    /// The application's mount point (`"/portal"`), for a server that does
    /// not report `APPL_MD_PATH` (IIS always does, and then that wins).
    /// Without either, the app is taken to be mounted at the site root.
    #[serde(default)]
    pub path_base: Option<String>,
    /// Request limits.
    #[serde(default)]
    pub limits: Limits,
    /// The log file; by default the DLL's path with `.log`.
    #[serde(default)]
    pub log_file: Option<PathBuf>,
    /// What goes to the log file (tracing's filter syntax; `"off"` installs
    /// no logger, for apps that set up their own).
    #[serde(default = "default_filter")]
    pub log_filter: String,
    /// The app's own section, passed to `make_app` as it is.
    #[serde(default)]
    pub app: toml::Table,
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn default_true() -> bool {
    true
}

fn default_filter() -> String {
    crate::DEFAULT_LOG_FILTER.to_owned()
}

fn default_drain() -> Duration {
    Duration::from_secs(30)
}

impl Validate for IisConfig {
    fn validate(&self, issues: &mut Issues) {
        if !(1..=256).contains(&self.worker_threads) {
            issues.push("worker_threads", "must be between 1 and 256");
        }
        if self.drain_timeout > Duration::from_secs(3600) {
            issues.push(
                "drain_timeout",
                "must be at most an hour (IIS's shutdown time limit is far shorter)",
            );
        }
        if let Some(base) = &self.path_base {
            if let Err(e) = kallithea_core::PathBase::new(base) {
                issues.push("path_base", e.to_string());
            }
        }
        issues.nested("limits", &self.limits);
    }
}

/// The configuration file for the DLL at `dll`: the file `env` names when set
/// (the value of [`CONFIG_ENV`]), else the DLL's path with `.toml`
/// (`portal.dll` → `portal.toml`).
pub fn config_path(dll: &Path, env: Option<&OsStr>) -> PathBuf {
    match env.filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => dll.with_extension("toml"),
    }
}

/// The log file for the DLL at `dll`, unless the configuration names one.
pub fn default_log_path(dll: &Path) -> PathBuf {
    dll.with_extension("log")
}

/// Loads the configuration for the DLL at `dll` (see [`config_path`]), with
/// `KALLITHEA_IIS_*` environment overrides (and the older `KALLITHEA_ISAPI_*`
/// ones). A missing file is an error that names where it was looked for: an
/// app must not start on guesses.
pub fn load(dll: &Path) -> Result<(PathBuf, IisConfig), ConfigError> {
    let named = std::env::var_os(CONFIG_ENV)
        .filter(|v| !v.is_empty())
        .or_else(|| std::env::var_os(OLD_CONFIG_ENV));
    let path = config_path(dll, named.as_deref());
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let cfg = config::from_str(&text, Some(&path), ENV_PREFIX, overrides(std::env::vars()))?;
    Ok((path, cfg))
}

/// The environment overrides under [`ENV_PREFIX`]: the old prefix's renamed
/// to the new one unless the new one sets the same key; the variables naming
/// the file are not overrides.
fn overrides(env: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    let old = format!("{OLD_ENV_PREFIX}_");
    let new = format!("{ENV_PREFIX}_");
    let vars: Vec<(String, String)> = env
        .filter(|(k, _)| k != CONFIG_ENV && k != OLD_CONFIG_ENV)
        .collect();
    let mut out: Vec<(String, String)> = vars
        .iter()
        .filter(|(k, _)| k.starts_with(&new))
        .cloned()
        .collect();
    for (k, v) in &vars {
        if let Some(rest) = k.strip_prefix(&old) {
            let renamed = format!("{new}{rest}");
            if !out.iter().any(|(n, _)| *n == renamed) {
                out.push((renamed, v.clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_beside_the_dll_unless_the_environment_names_one() {
        let dll = Path::new("/inetpub/portal/bin/portal.dll");
        assert_eq!(
            config_path(dll, None),
            Path::new("/inetpub/portal/bin/portal.toml")
        );
        assert_eq!(
            config_path(dll, Some(OsStr::new(""))),
            Path::new("/inetpub/portal/bin/portal.toml")
        );
        assert_eq!(
            config_path(dll, Some(OsStr::new("/etc/p.toml"))),
            Path::new("/etc/p.toml")
        );
        assert_eq!(
            default_log_path(dll),
            Path::new("/inetpub/portal/bin/portal.log")
        );
    }

    #[test]
    fn defaults_and_the_app_section_pass_through() {
        let cfg: IisConfig =
            config::from_str("[app]\ndata_dir = 'd'\nadmins = ['a']\n", None, "T", []).unwrap();
        assert!(cfg.worker_threads >= 1);
        assert_eq!(cfg.drain_timeout, Duration::from_secs(30));
        assert!(cfg.first_step_on_iis_thread);
        assert_eq!(cfg.app["data_dir"].as_str(), Some("d"));
    }

    #[test]
    fn bad_values_and_a_missing_file_are_reported() {
        let err = config::from_str::<IisConfig>(
            "worker_threads = 0\ndrain_timeout = '2h'\n",
            None,
            "T",
            [],
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("worker_threads") && text.contains("drain_timeout"),
            "{text}"
        );
        let dir = std::env::temp_dir().join(format!("isapi-config-{}", std::process::id()));
        let err = config::load::<IisConfig>(Some(&dir.join("absent.toml")), "T").unwrap_err();
        assert!(err.to_string().contains("absent.toml"), "{err}");
    }

    #[test]
    fn old_and_new_override_prefixes_both_work_the_new_one_winning() {
        let env = [
            ("KALLITHEA_ISAPI_WORKER_THREADS", "3"),
            ("KALLITHEA_IIS_DRAIN_TIMEOUT", "5s"),
            ("KALLITHEA_ISAPI_DRAIN_TIMEOUT", "9s"),
            ("KALLITHEA_ISAPI_CONFIG", "/etc/x.toml"),
            ("KALLITHEA_IIS_CONFIG", "/etc/y.toml"),
            ("PATH", "/bin"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let cfg: IisConfig =
            config::from_str("", None, ENV_PREFIX, overrides(env.into_iter())).unwrap();
        assert_eq!(cfg.worker_threads, 3);
        assert_eq!(cfg.drain_timeout, Duration::from_secs(5));
    }
}
