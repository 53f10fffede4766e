//! The embedded user store: one SQLite file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kallithea_core::BoxFuture;
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::directory::{Attributes, Created, DirectoryError, NewUser, StoredUser, UserDirectory};

/// The schema, one migration per entry; `PRAGMA user_version` records how many
/// have been applied. Never edit an entry: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: users
    "CREATE TABLE users (
        id          INTEGER PRIMARY KEY,
        username    TEXT NOT NULL UNIQUE,
        email       TEXT,
        first_name  TEXT,
        last_name   TEXT,
        active      INTEGER NOT NULL,
        admin       INTEGER NOT NULL DEFAULT 0,
        extern_type TEXT,
        extern_name TEXT,
        created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    );",
    // 2: settings the portal's admin pages edit, stored beside the users as
    // Kallithea stores its own.
    "CREATE TABLE settings (
        name  TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );",
];

/// The user directory on a SQLite file (SQLite is compiled in: no system
/// library needed). Opening applies pending migrations. Several processes may
/// open the same file (IIS web gardens): SQLite's locking and an
/// insert-or-ignore keep concurrent first visits to exactly one row.
#[derive(Clone)]
pub struct SqliteDirectory {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteDirectory")
            .field("path", &self.path)
            .finish()
    }
}

fn store_err(e: impl std::fmt::Display) -> DirectoryError {
    DirectoryError::Store(e.to_string())
}

const COLUMNS: &str =
    "id, username, email, first_name, last_name, active, admin, extern_type, extern_name";

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<StoredUser> {
    Ok(StoredUser {
        id: row.get(0)?,
        username: row.get(1)?,
        attributes: Attributes {
            email: row.get(2)?,
            first_name: row.get(3)?,
            last_name: row.get(4)?,
        },
        active: row.get(5)?,
        admin: row.get(6)?,
        extern_type: row.get(7)?,
        extern_name: row.get(8)?,
    })
}

fn find(conn: &Connection, username: &str) -> rusqlite::Result<Option<StoredUser>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM users WHERE username = ?1"),
        [username],
        user_from_row,
    )
    .optional()
}

fn found(conn: &Connection, username: &str) -> Result<StoredUser, DirectoryError> {
    find(conn, username)
        .map_err(store_err)?
        .ok_or_else(|| DirectoryError::NotFound(username.to_owned()))
}

impl SqliteDirectory {
    /// Opens (creating if needed) the store at `path` and migrates it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, DirectoryError> {
        let path = path.as_ref().to_owned();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                DirectoryError::Store(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        // The file holds the form-token key and who may administer: create
        // it for its owner only. SQLite gives its -wal and -shm files the
        // database file's permissions.
        match kallithea_core::secret::create_private(&path, b"") {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if kallithea_core::secret::readable_by_others(&path).unwrap_or(false) {
                    tracing::warn!(
                        store = %path.display(),
                        "the user store can be read by other accounts; it holds secrets: chmod 600 it (and its -wal and -shm files)"
                    );
                }
            }
            Err(e) => {
                return Err(DirectoryError::Store(format!(
                    "cannot create {}: {e}",
                    path.display()
                )))
            }
        }
        let mut conn = Connection::open(&path)
            .map_err(|e| DirectoryError::Store(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(store_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(store_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(store_err)?;
        migrate(&mut conn)
            .map_err(|e| DirectoryError::Store(format!("migrating {}: {e}", path.display())))?;
        Ok(SqliteDirectory {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version (number of migrations applied).
    pub fn schema_version(&self) -> Result<usize, DirectoryError> {
        let conn = self.conn.lock().map_err(store_err)?;
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(store_err)?;
        Ok(v as usize)
    }

    /// Reads a stored setting (used by the portal's admin pages).
    pub fn setting(&self, name: &str) -> Result<Option<String>, DirectoryError> {
        let conn = self.conn.lock().map_err(store_err)?;
        conn.query_row("SELECT value FROM settings WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()
        .map_err(store_err)
    }

    /// Stores a setting.
    pub fn set_setting(&self, name: &str, value: &str) -> Result<(), DirectoryError> {
        let conn = self.conn.lock().map_err(store_err)?;
        conn.execute(
            "INSERT INTO settings (name, value) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            params![name, value],
        )
        .map_err(store_err)?;
        Ok(())
    }

    /// The stored setting `name`, storing `value` first if there is none.
    /// Atomic across processes sharing the file: whoever stores first wins and
    /// every caller gets that value.
    pub fn setting_or_insert(&self, name: &str, value: &str) -> Result<String, DirectoryError> {
        let conn = self.conn.lock().map_err(store_err)?;
        conn.execute(
            "INSERT INTO settings (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
            params![name, value],
        )
        .map_err(store_err)?;
        conn.query_row("SELECT value FROM settings WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .map_err(store_err)
    }

    /// Runs `f` with the connection on the blocking thread pool.
    fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, DirectoryError> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, DirectoryError>> {
        let conn = Arc::clone(&self.conn);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut conn = conn.lock().map_err(store_err)?;
                f(&mut conn)
            })
            .await
            .map_err(|e| DirectoryError::Store(format!("store task failed: {e}")))?
        })
    }
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let applied: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let applied = usize::try_from(applied).unwrap_or(0);
    if applied > MIGRATIONS.len() {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "the store has schema version {applied}, newer than this program knows ({}); upgrade the program",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tracing::info!(version = i + 1, "user store migrated");
    }
    tx.commit()
}

impl UserDirectory for SqliteDirectory {
    fn find<'a>(
        &'a self,
        username: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredUser>, DirectoryError>> {
        let name = username.to_owned();
        self.blocking(move |c| find(c, &name).map_err(store_err))
    }

    fn create(&self, user: NewUser) -> BoxFuture<'_, Result<Created, DirectoryError>> {
        self.blocking(move |c| {
            let inserted = c
                .execute(
                    "INSERT INTO users (username, email, first_name, last_name, active, admin, extern_type, extern_name)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (username) DO NOTHING",
                    params![
                        user.username,
                        user.attributes.email,
                        user.attributes.first_name,
                        user.attributes.last_name,
                        user.active,
                        user.admin,
                        user.extern_type,
                        user.extern_name,
                    ],
                )
                .map_err(store_err)?;
            Ok(Created {
                user: found(c, &user.username)?,
                created: inserted == 1,
            })
        })
    }

    fn update_attributes<'a>(
        &'a self,
        username: &'a str,
        attributes: Attributes,
        extern_name: Option<String>,
    ) -> BoxFuture<'a, Result<StoredUser, DirectoryError>> {
        let name = username.to_owned();
        self.blocking(move |c| {
            c.execute(
                "UPDATE users SET email = COALESCE(?2, email), first_name = COALESCE(?3, first_name),
                     last_name = COALESCE(?4, last_name), extern_name = COALESCE(?5, extern_name),
                     updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
                 WHERE username = ?1",
                params![name, attributes.email, attributes.first_name, attributes.last_name, extern_name],
            )
            .map_err(store_err)?;
            found(c, &name)
        })
    }

    fn set_active<'a>(
        &'a self,
        username: &'a str,
        active: bool,
    ) -> BoxFuture<'a, Result<StoredUser, DirectoryError>> {
        let name = username.to_owned();
        self.blocking(move |c| {
            c.execute(
                "UPDATE users SET active = ?2, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE username = ?1",
                params![name, active],
            )
            .map_err(store_err)?;
            found(c, &name)
        })
    }

    fn set_extern_type<'a>(
        &'a self,
        username: &'a str,
        extern_type: Option<String>,
    ) -> BoxFuture<'a, Result<StoredUser, DirectoryError>> {
        let name = username.to_owned();
        self.blocking(move |c| {
            c.execute(
                "UPDATE users SET extern_type = ?2, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE username = ?1",
                params![name, extern_type],
            )
            .map_err(store_err)?;
            found(c, &name)
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<StoredUser>, DirectoryError>> {
        self.blocking(|c| {
            let mut stmt = c
                .prepare(&format!("SELECT {COLUMNS} FROM users ORDER BY username"))
                .map_err(store_err)?;
            let rows = stmt.query_map([], user_from_row).map_err(store_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(store_err)
        })
    }
}
