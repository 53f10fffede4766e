//! Pre-populating the directory from an external list (CSV or JSON).

use std::io::Read;

use serde::Deserialize;

use crate::directory::{Attributes, NewUser, UserDirectory, CONTAINER};
use crate::{clean_username, Activation, Settings};

/// One user to import. CSV columns (with a header row) and JSON fields share
/// these names; only `username` is required.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImportRecord {
    /// The user name as the host will report it (`EXAMPLE\alice`) or already
    /// clean (`alice`); it is cleaned with the plugin's settings.
    pub username: String,
    /// E-mail address.
    #[serde(default)]
    pub email: Option<String>,
    /// First name.
    #[serde(default, alias = "firstname")]
    pub first_name: Option<String>,
    /// Last name.
    #[serde(default, alias = "lastname")]
    pub last_name: Option<String>,
    /// Whether the user is active; defaults to the activation setting.
    #[serde(default)]
    pub active: Option<bool>,
}

/// What an import did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Users created.
    pub created: usize,
    /// Existing container users whose attributes or activation were updated.
    pub updated: usize,
    /// Records not imported, each with its record number (1-based) and why.
    pub skipped: Vec<(usize, String)>,
}

/// The input could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A CSV syntax error or a bad field.
    #[error("CSV input: {0}")]
    Csv(#[from] csv::Error),
    /// A JSON syntax error or a bad field.
    #[error("JSON input: {0}")]
    Json(#[from] serde_json::Error),
}

/// Reads CSV records (header row: `username,email,first_name,last_name,active`).
pub fn read_csv(input: impl Read) -> Result<Vec<ImportRecord>, ImportError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(input);
    let records = reader
        .deserialize::<ImportRecord>()
        .collect::<Result<Vec<_>, _>>()?;
    Ok(records
        .into_iter()
        .map(|mut r| {
            // Empty CSV cells mean "not given".
            for field in [&mut r.email, &mut r.first_name, &mut r.last_name] {
                if field.as_deref() == Some("") {
                    *field = None;
                }
            }
            r
        })
        .collect())
}

/// Reads a JSON array of records.
pub fn read_json(input: impl Read) -> Result<Vec<ImportRecord>, ImportError> {
    Ok(serde_json::from_reader(input)?)
}

/// Imports `records`: new names become container users; existing container
/// users get the given attributes and activation; other accounts of the same
/// name are left alone (and reported), as linking is an explicit decision.
pub async fn import(
    records: Vec<ImportRecord>,
    directory: &dyn UserDirectory,
    settings: &Settings,
) -> Result<ImportReport, crate::DirectoryError> {
    let mut report = ImportReport::default();
    for (i, record) in records.into_iter().enumerate() {
        let n = i + 1;
        let username = match clean_username(&record.username, settings) {
            Ok(u) => u,
            Err(why) => {
                report
                    .skipped
                    .push((n, format!("{:?}: {why}", record.username)));
                continue;
            }
        };
        let attributes = Attributes {
            email: record.email,
            first_name: record.first_name,
            last_name: record.last_name,
        };
        let active = record
            .active
            .unwrap_or(settings.activation == Activation::Automatic);
        let created = directory
            .create(NewUser {
                username: username.clone(),
                attributes: attributes.clone(),
                active,
                admin: false,
                extern_type: Some(CONTAINER.to_owned()),
                extern_name: None,
            })
            .await?;
        if created.created {
            report.created += 1;
            continue;
        }
        if created.user.extern_type.as_deref() != Some(CONTAINER) {
            report.skipped.push((
                n,
                format!("{username:?} exists and is not a container-authentication account"),
            ));
            continue;
        }
        let mut changed = false;
        if attributes.changes(&created.user.attributes) {
            directory
                .update_attributes(&username, attributes, None)
                .await?;
            changed = true;
        }
        if record.active.is_some_and(|a| a != created.user.active) {
            directory.set_active(&username, active).await?;
            changed = true;
        }
        if changed {
            report.updated += 1;
        }
    }
    Ok(report)
}
