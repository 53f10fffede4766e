//! `users`: pre-populating and managing the user directory (the SQLite
//! store auth-container uses) from the command line.

use std::fmt::Write as _;
use std::path::Path;

use auth_container::import::{self, ImportRecord};
use auth_container::{clean_username, Settings, SqliteDirectory, StoredUser, UserDirectory};

/// A failure, naming the file (and line) it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsersError(pub String);

fn err(msg: impl Into<String>) -> UsersError {
    UsersError(msg.into())
}

/// The auth-container settings that clean imported names: the table at
/// `auth_container` or `app.auth_container` of `config` (an app's or an IIS
/// DLL's configuration), or the defaults without a file.
pub fn settings(config: Option<&Path>) -> Result<Settings, UsersError> {
    let Some(path) = config else {
        return Ok(Settings::default());
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| err(format!("{}: {e}", path.display())))?;
    let found = table.get("auth_container").or_else(|| {
        table
            .get("app")
            .and_then(|a| a.as_table())
            .and_then(|a| a.get("auth_container"))
    });
    match found {
        None => Ok(Settings::default()),
        Some(v) => v.clone().try_into().map_err(|e: toml::de::Error| {
            err(format!("{}: [auth_container]: {e}", path.display()))
        }),
    }
}

/// Opens the store (which must exist: a typo must not create an empty one).
pub fn open(store: &Path) -> Result<SqliteDirectory, UsersError> {
    if !store.is_file() {
        return Err(err(format!(
            "{}: no such user store (the app creates it on its first start)",
            store.display()
        )));
    }
    SqliteDirectory::open(store).map_err(|e| err(format!("{}: {e}", store.display())))
}

/// The input's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A header row `username,email,first_name,last_name,active`, then one
    /// user per line.
    Csv,
    /// An array of objects with the same fields.
    Json,
}

impl Format {
    /// From the file's extension.
    pub fn of(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// Imports `file` into `directory`; returns the report as text, one line
/// per skipped record naming the file and line (CSV) or record (JSON), and
/// whether every record was imported.
pub async fn import_file(
    file: &Path,
    format: Option<Format>,
    directory: &SqliteDirectory,
    settings: &Settings,
) -> Result<(String, bool), UsersError> {
    let format = format.or_else(|| Format::of(file)).ok_or_else(|| {
        err(format!(
            "{}: cannot tell the format from the extension: pass --format csv or --format json",
            file.display()
        ))
    })?;
    let input = std::fs::File::open(file).map_err(|e| err(format!("{}: {e}", file.display())))?;
    let records: Vec<ImportRecord> = match format {
        Format::Csv => import::read_csv(input),
        Format::Json => import::read_json(input),
    }
    .map_err(|e| err(format!("{}: {e}", file.display())))?;
    let total = records.len();
    let report = import::import(records, directory, settings)
        .await
        .map_err(|e| err(format!("the store: {e}")))?;
    let mut out = String::new();
    for (n, why) in &report.skipped {
        let place = match format {
            // The header is line 1.
            Format::Csv => format!("line {}", n + 1),
            Format::Json => format!("record {n}"),
        };
        let _ = writeln!(out, "{}:{place}: skipped: {why}", file.display());
    }
    let _ = writeln!(
        out,
        "{}: {total} records, {} users created, {} updated, {} skipped",
        file.display(),
        report.created,
        report.updated,
        report.skipped.len()
    );
    Ok((out, report.skipped.is_empty()))
}

/// Every user, as a table or as JSON lines.
pub async fn list(directory: &SqliteDirectory, json: bool) -> Result<String, UsersError> {
    let users = directory
        .list()
        .await
        .map_err(|e| err(format!("the store: {e}")))?;
    let mut out = String::new();
    if json {
        for u in &users {
            let _ = writeln!(out, "{}", user_json(u));
        }
        return Ok(out);
    }
    let width = users
        .iter()
        .map(|u| u.username.chars().count())
        .max()
        .unwrap_or(0)
        .max("username".len());
    let _ = writeln!(
        out,
        "{:width$}  active  admin  type       email",
        "username"
    );
    for u in &users {
        let _ = writeln!(
            out,
            "{:width$}  {:6}  {:5}  {:9}  {}",
            u.username,
            if u.active { "yes" } else { "no" },
            if u.admin { "yes" } else { "no" },
            u.extern_type.as_deref().unwrap_or("-"),
            u.attributes.email.as_deref().unwrap_or("")
        );
    }
    let _ = writeln!(out, "{} users", users.len());
    Ok(out)
}

fn user_json(u: &StoredUser) -> String {
    let s = |v: &Option<String>| v.as_ref().map_or("null".to_owned(), |t| json_string(t));
    format!(
        "{{\"username\":{},\"active\":{},\"admin\":{},\"type\":{},\"email\":{},\"first_name\":{},\"last_name\":{}}}",
        json_string(&u.username),
        u.active,
        u.admin,
        s(&u.extern_type),
        s(&u.attributes.email),
        s(&u.attributes.first_name),
        s(&u.attributes.last_name)
    )
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Activates or deactivates `name` (as stored, or as the settings clean
/// it: `EXAMPLE\alice` finds `alice`).
pub async fn set_active(
    directory: &SqliteDirectory,
    settings: &Settings,
    name: &str,
    active: bool,
) -> Result<String, UsersError> {
    let mut candidates = vec![name.to_owned()];
    if let Ok(clean) = clean_username(name, settings) {
        if clean != name {
            candidates.push(clean);
        }
    }
    for candidate in &candidates {
        let found = directory
            .find(candidate)
            .await
            .map_err(|e| err(format!("the store: {e}")))?;
        if found.is_some() {
            directory
                .set_active(candidate, active)
                .await
                .map_err(|e| err(format!("the store: {e}")))?;
            return Ok(format!(
                "{candidate}: {}\n",
                if active { "activated" } else { "deactivated" }
            ));
        }
    }
    Err(err(format!(
        "no user {} in the store (kallithea users list shows them)",
        candidates.join(" or ")
    )))
}
