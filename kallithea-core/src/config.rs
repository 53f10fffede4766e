//! Configuration loading: a TOML file, environment overrides, validation.
//!
//! A configuration type is any `serde` struct that implements [`Validate`].
//! [`load`] reads the file, applies environment overrides, deserializes and
//! validates; every error names the key (and the environment variable or file
//! it came from) and says what is wrong.
//!
//! Environment overrides: with the prefix `KALLITHEA`, the variable
//! `KALLITHEA_LIMITS__MAX_BODY_BYTES=1000` sets `limits.max_body_bytes`. A double
//! underscore separates table levels; names are lower-cased. Values are read as
//! TOML values (`1000`, `true`, `["10.0.0.0/8"]`) and otherwise as strings
//! (`127.0.0.1:8080`, `30s`).
//!
//! ```
//! use kallithea_core::config::{self, Issues, Validate};
//!
//! #[derive(serde::Deserialize, Debug)]
//! #[serde(deny_unknown_fields)]
//! struct MyConfig {
//!     listen: String,
//!     #[serde(default)]
//!     limits: kallithea_core::Limits,
//! }
//! impl Validate for MyConfig {
//!     fn validate(&self, issues: &mut Issues) {
//!         issues.nested("limits", &self.limits);
//!     }
//! }
//!
//! let env = [("APP_LIMITS__MAX_HEADER_COUNT".to_string(), "50".to_string())];
//! let cfg: MyConfig = config::from_str("listen = '127.0.0.1:80'", None, "APP", env).unwrap();
//! assert_eq!(cfg.limits.max_header_count, 50);
//!
//! let err = config::from_str::<MyConfig>("listen = 1", None, "APP", []).unwrap_err();
//! assert!(err.to_string().contains("listen"));
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

/// Checks a deserialized configuration for values that parse but make no sense.
pub trait Validate {
    /// Records every problem in `issues`, by key relative to this value.
    fn validate(&self, issues: &mut Issues);
}

/// The problems [`Validate`] found, each under its key.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Issues {
    prefix: String,
    list: Vec<Issue>,
}

/// One validation problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// The dotted key (`trust.proxies`).
    pub key: String,
    /// What is wrong, and what to do about it.
    pub message: String,
}

impl Issues {
    /// Records a problem with `key`.
    pub fn push(&mut self, key: &str, message: impl Into<String>) {
        let key = if self.prefix.is_empty() {
            key.to_owned()
        } else if key.is_empty() {
            self.prefix.clone()
        } else {
            format!("{}.{key}", self.prefix)
        };
        self.list.push(Issue {
            key,
            message: message.into(),
        });
    }

    /// Validates `value`, reporting its problems under `key`.
    pub fn nested(&mut self, key: &str, value: &dyn Validate) {
        let saved = std::mem::take(&mut self.prefix);
        self.prefix = if saved.is_empty() {
            key.to_owned()
        } else {
            format!("{saved}.{key}")
        };
        value.validate(self);
        self.prefix = saved;
    }

    /// The problems found.
    pub fn list(&self) -> &[Issue] {
        &self.list
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.key, self.message)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("configuration file {origin} is not valid TOML: {message}")]
    Syntax {
        /// The file, or `<string>`.
        origin: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// An environment variable does not map onto a key.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// A key has the wrong type or an unknown name.
    #[error("configuration key `{key}` (from {origin}): {message}")]
    Key {
        /// The dotted key.
        key: String,
        /// The file or environment variable the value came from.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// Values parsed but are not acceptable.
    #[error("invalid configuration:\n{}", .0.iter().map(|i| format!("  - {i}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Issue>),
}

/// Loads a configuration from `path` (if given) and the environment variables
/// starting with `{env_prefix}_`.
pub fn load<T: DeserializeOwned + Validate>(
    path: Option<&Path>,
    env_prefix: &str,
) -> Result<T, ConfigError> {
    let text = match path {
        Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
            path: p.to_owned(),
            source,
        })?,
        None => String::new(),
    };
    from_str(&text, path, env_prefix, std::env::vars())
}

/// Like [`load`], from TOML text and an explicit set of environment variables.
pub fn from_str<T: DeserializeOwned + Validate>(
    text: &str,
    path: Option<&Path>,
    env_prefix: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let origin = path.map_or_else(|| "<string>".to_owned(), |p| p.display().to_string());
    let mut table: toml::Table =
        text.parse()
            .map_err(|e: toml::de::Error| ConfigError::Syntax {
                origin: origin.clone(),
                message: e.to_string(),
            })?;

    let prefix = format!("{env_prefix}_");
    let mut overrides = Vec::new();
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix(&prefix) else {
            continue;
        };
        let key: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if key.iter().any(|k| k.is_empty()) {
            return Err(ConfigError::Env {
                var,
                message: "empty key segment: use a double underscore only between table names"
                    .into(),
            });
        }
        let value = parse_env_value(&raw);
        set_path(&mut table, &key, value).map_err(|message| ConfigError::Env {
            var: var.clone(),
            message,
        })?;
        overrides.push((key.join("."), var, raw));
    }

    // A variable whose text happens to parse as a number or boolean may be meant
    // as a string (a secret "1234"): on a type error at such a key, retry it as a
    // string. Bounded by the number of overrides.
    let mut attempts = overrides.len() + 1;
    let value: T = loop {
        let result: Result<T, _> =
            serde_path_to_error::deserialize(toml::Value::Table(table.clone()));
        let err = match result {
            Ok(v) => break v,
            Err(e) => e,
        };
        let key = err.path().to_string();
        let from_env = overrides.iter().find(|(k, _, _)| *k == key);
        attempts -= 1;
        if let Some((_, _, raw)) = from_env {
            let segs: Vec<String> = key.split('.').map(str::to_owned).collect();
            let as_string = toml::Value::String(raw.clone());
            let current = get_path(&table, &segs);
            if attempts > 0 && current.is_some_and(|v| !v.is_str()) {
                set_path(&mut table, &segs, as_string).map_err(|message| ConfigError::Env {
                    var: from_env.map(|(_, v, _)| v.clone()).unwrap_or_default(),
                    message,
                })?;
                continue;
            }
        }
        return Err(ConfigError::Key {
            origin: from_env.map_or_else(
                || origin.clone(),
                |(_, var, _)| format!("environment variable {var}"),
            ),
            key: if key == "." { String::new() } else { key },
            message: err.into_inner().message().to_owned(),
        });
    };

    let mut issues = Issues::default();
    value.validate(&mut issues);
    if issues.is_empty() {
        Ok(value)
    } else {
        Err(ConfigError::Invalid(issues.list))
    }
}

fn parse_env_value(raw: &str) -> toml::Value {
    // Parse `v = <raw>` so arrays, numbers and booleans keep their type.
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

fn set_path(table: &mut toml::Table, key: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = key.split_last().ok_or("empty key")?;
    let mut t = table;
    for (i, seg) in parents.iter().enumerate() {
        let entry = t
            .entry(seg.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = entry.as_table_mut().ok_or_else(|| {
            format!(
                "`{}` is not a table, so it has no key `{}`",
                parents[..=i].join("."),
                key[i + 1]
            )
        })?;
    }
    t.insert(last.clone(), value);
    Ok(())
}

fn get_path<'t>(table: &'t toml::Table, key: &[String]) -> Option<&'t toml::Value> {
    let (last, parents) = key.split_last()?;
    let mut t = table;
    for seg in parents {
        t = t.get(seg)?.as_table()?;
    }
    t.get(last)
}

/// `serde(with)` support for durations written as seconds (`30`) or with a
/// unit (`"500ms"`, `"30s"`, `"2m"`, `"1h"`).
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct S { #[serde(with = "kallithea_core::config::duration")] t: std::time::Duration }
/// let s: S = toml::from_str("t = '250ms'").unwrap();
/// assert_eq!(s.t.as_millis(), 250);
/// ```
pub mod duration {
    use super::*;
    use serde::{Deserialize, Deserializer};

    /// Deserializes a duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        let bad = || {
            serde::de::Error::custom(
                "expected a duration: seconds as a number, or a string such as \"500ms\", \"30s\", \"2m\"",
            )
        };
        match Raw::deserialize(d).map_err(|_| bad())? {
            Raw::N(n) => Ok(Duration::from_secs(n)),
            Raw::S(s) => parse(&s).ok_or_else(bad),
        }
    }

    /// Parses `"500ms"`, `"30s"`, `"2m"`, `"1h"` or a bare number of seconds.
    pub fn parse(s: &str) -> Option<Duration> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().ok()?;
        match unit.trim() {
            "" | "s" => Some(Duration::from_secs(n)),
            "ms" => Some(Duration::from_millis(n)),
            "m" | "min" => n.checked_mul(60).map(Duration::from_secs),
            "h" => n.checked_mul(3600).map(Duration::from_secs),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ByteLimit, Limits};
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        name: String,
        secret: Option<String>,
        #[serde(default)]
        limits: Limits,
        #[serde(default = "default_grace", with = "duration")]
        grace: Duration,
    }

    fn default_grace() -> Duration {
        Duration::from_secs(30)
    }

    impl Validate for Sample {
        fn validate(&self, issues: &mut Issues) {
            if self.name.is_empty() {
                issues.push("name", "must not be empty");
            }
            issues.nested("limits", &self.limits);
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn environment_overrides_file_values_at_nested_keys() {
        let cfg: Sample = from_str(
            "name = 'a'\n[limits]\nmax_header_count = 10\n",
            None,
            "K",
            env(&[
                ("K_LIMITS__MAX_HEADER_COUNT", "20"),
                ("K_LIMITS__MAX_BODY_BYTES", "unlimited"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.limits.max_header_count, 20);
        assert_eq!(cfg.limits.max_body_bytes, ByteLimit::Unlimited);
    }

    #[test]
    fn numeric_looking_env_value_for_a_string_key_stays_a_string() {
        let cfg: Sample =
            from_str("name = 'a'", None, "K", env(&[("K_SECRET", "123456")])).unwrap();
        assert_eq!(cfg.secret.as_deref(), Some("123456"));
    }

    #[test]
    fn type_errors_name_the_key_and_the_variable() {
        let err = from_str::<Sample>(
            "name = 'a'",
            None,
            "K",
            env(&[("K_LIMITS__MAX_HEADER_COUNT", "lots")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("limits.max_header_count"), "{err}");
        assert!(err.contains("K_LIMITS__MAX_HEADER_COUNT"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_path() {
        let err = from_str::<Sample>(
            "name = 'a'\n[limits]\nmax_bodybytes = 1\n",
            Some(Path::new("app.toml")),
            "K",
            [],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("limits"), "{err}");
        assert!(err.contains("max_bodybytes"), "{err}");
        assert!(err.contains("app.toml"), "{err}");
    }

    #[test]
    fn validation_reports_every_problem_by_key() {
        let err = from_str::<Sample>("name = ''\n[limits]\nmax_header_count = 0\n", None, "K", [])
            .unwrap_err();
        let ConfigError::Invalid(issues) = &err else {
            panic!("{err}")
        };
        let keys: Vec<_> = issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["name", "limits.max_header_count"]);
    }

    #[test]
    fn syntax_errors_carry_the_file_name() {
        let err = from_str::<Sample>("name = ", Some(Path::new("x.toml")), "K", []).unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }));
        assert!(err.to_string().contains("x.toml"));
    }

    #[test]
    fn env_key_into_a_non_table_is_refused() {
        let err =
            from_str::<Sample>("name = 'a'", None, "K", env(&[("K_NAME__X", "1")])).unwrap_err();
        assert!(matches!(err, ConfigError::Env { .. }), "{err}");
    }

    #[test]
    fn durations_accept_units() {
        assert_eq!(duration::parse("30"), Some(Duration::from_secs(30)));
        assert_eq!(duration::parse("2m"), Some(Duration::from_secs(120)));
        assert_eq!(duration::parse("15ms"), Some(Duration::from_millis(15)));
        assert_eq!(duration::parse("soon"), None);
        let cfg: Sample = from_str("name='a'\ngrace='5s'", None, "K", []).unwrap();
        assert_eq!(cfg.grace, Duration::from_secs(5));
    }
}
