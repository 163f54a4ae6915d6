//! The SQLite file behind the store: created private to the user, opened in WAL mode with a busy
//! timeout, and migrated forward by `PRAGMA user_version`.
//!
//! The file holds no secret: client tokens are stored as SHA-256 hashes only and the audit log
//! strips query values before anything is written. It is still made `0600` in a `0700` directory
//! because client names, services and request paths say what the user works on.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tracing::{debug, warn};

use crate::error::StoreError;

/// How long a statement waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema migrations, applied in order. Entry `i` moves the schema from version `i` to `i + 1`.
/// Never edit an entry that has shipped; append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: clients, their services and token hashes; the audit log.
    "CREATE TABLE clients (
        id           INTEGER PRIMARY KEY,
        name         TEXT    NOT NULL UNIQUE,
        created_at   INTEGER NOT NULL,
        last_used_at INTEGER
     ) STRICT;
     CREATE TABLE client_services (
        client_id INTEGER NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
        service   TEXT    NOT NULL,
        PRIMARY KEY (client_id, service)
     ) STRICT, WITHOUT ROWID;
     CREATE TABLE client_tokens (
        token_hash BLOB    NOT NULL PRIMARY KEY CHECK (length(token_hash) = 32),
        client_id  INTEGER NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
        label      TEXT    NOT NULL,
        created_at INTEGER NOT NULL
     ) STRICT, WITHOUT ROWID;
     CREATE INDEX client_tokens_by_client ON client_tokens(client_id);
     CREATE TABLE audit (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        time        INTEGER NOT NULL,
        client      TEXT,
        service     TEXT,
        method      TEXT    NOT NULL,
        path        TEXT    NOT NULL,
        status      INTEGER NOT NULL,
        bytes_in    INTEGER NOT NULL,
        bytes_out   INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        error_code  TEXT
     ) STRICT;
     CREATE INDEX audit_by_client  ON audit(client, id);
     CREATE INDEX audit_by_service ON audit(service, id);
     CREATE INDEX audit_by_time    ON audit(time);",
    // 2: the audit log tells client traffic from the `latchkey` command's control calls.
    "ALTER TABLE audit ADD COLUMN kind TEXT NOT NULL DEFAULT 'client'
        CHECK (kind IN ('client', 'control'));
     CREATE INDEX audit_by_kind ON audit(kind, id);",
    // 3: a client may be given the right to read raw credentials (off by default).
    "ALTER TABLE clients ADD COLUMN raw_credentials INTEGER NOT NULL DEFAULT 0
        CHECK (raw_credentials IN (0, 1));",
    // 4: a stored token may expire and records its own last use; one token per client and
    // label (an older token of a label that piled up before is revoked, the newest kept).
    "ALTER TABLE client_tokens ADD COLUMN expires_at INTEGER;
     ALTER TABLE client_tokens ADD COLUMN last_used_at INTEGER;
     DELETE FROM client_tokens AS old WHERE EXISTS (
        SELECT 1 FROM client_tokens AS newer
        WHERE newer.client_id = old.client_id AND newer.label = old.label
          AND (newer.created_at > old.created_at
               OR (newer.created_at = old.created_at AND newer.token_hash > old.token_hash)));
     CREATE UNIQUE INDEX client_tokens_by_label ON client_tokens(client_id, label);",
    // 5: every audit row is a B-tree insert (and, once retention is reached, a delete) in the
    // table and in each index, on every proxied request. Only `audit_by_time` earns its cost
    // (retention by age, the activity chart). The page queries always filter on `kind`, so the
    // planner walked `audit_by_kind` and looked each row up, which is slower than scanning the
    // table newest first (45 ms against 15 ms for a rare service in 100,000 rows), and
    // `audit_by_client` / `audit_by_service` were never chosen then. BENCHMARKS.md, 2026-12-07.
    "DROP INDEX audit_by_client;
     DROP INDEX audit_by_service;
     DROP INDEX audit_by_kind;",
];

/// The schema version this build migrates to.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// An open store database. Cheap to clone; clones share the connections.
///
/// A file database has two connections: one that writes (client changes, the audit writer) and
/// one that only reads (audit queries), so a long page query never delays the audit writer. An
/// in-memory database has one connection serving both.
#[derive(Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Mutex<Connection>,
    reader: Option<Mutex<Connection>>,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Opens (creating if needed) the database at `path`: the file is made `0600`, a missing
    /// parent directory is created `0700`, WAL mode and a busy timeout are set, and pending
    /// migrations are applied.
    #[tracing::instrument(skip_all, fields(path = %path.display()), err)]
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        prepare_file(path)?;
        let open_err = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let mut writer = Connection::open(path).map_err(open_err)?;
        configure(&writer).map_err(open_err)?;
        migrate(&mut writer)?;
        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        configure(&reader).map_err(open_err)?;
        reader
            .pragma_update(None, "query_only", true)
            .map_err(open_err)?;
        debug!(schema = SCHEMA_VERSION, "database open");
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                reader: Some(Mutex::new(reader)),
                path: Some(path.to_owned()),
            }),
        })
    }

    /// A private, empty, fully migrated database in memory (tests, and a fallback when the data
    /// directory is unusable).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            path: PathBuf::from(":memory:"),
            source,
        };
        let mut conn = Connection::open_in_memory().map_err(open_err)?;
        configure(&conn).map_err(open_err)?;
        migrate(&mut conn)?;
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Mutex::new(conn),
                reader: None,
                path: None,
            }),
        })
    }

    /// The file behind this database; `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.read(|c| c.pragma_query_value(None, "user_version", |r| r.get(0)))
            .map_err(StoreError::db("read the schema version"))
    }

    /// Runs `f` on the writing connection. Blocks while another writer holds it.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        f(&mut self.writer())
    }

    /// Runs `f` on the reading connection (the writer for an in-memory database).
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        match &self.inner.reader {
            Some(reader) => f(&reader.lock().unwrap_or_else(PoisonError::into_inner)),
            None => f(&self.writer()),
        }
    }

    /// The writer connection. A poisoned lock is taken over: a panic inside a transaction rolls
    /// the transaction back when it unwinds, so the connection is consistent.
    pub(crate) fn writer(&self) -> MutexGuard<'_, Connection> {
        self.inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Pragmas every connection needs.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // In memory this answers "memory", which is fine.
    let _mode: String = conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))?;
    // WAL + NORMAL is durable against application crashes; a power cut may lose the last
    // transaction, which for last-used times and audit rows is acceptable.
    conn.pragma_update(None, "synchronous", "normal")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // The audit writer alone keeps six `INSERT`s (one per chunk size) beside the clients'
    // statements; rusqlite's default of 16 would leave little room before they evict each other.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// Brings the schema to [`SCHEMA_VERSION`] in one transaction.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(StoreError::db("start the schema migration"))?;
    let found: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(StoreError::db("read the schema version"))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let start = usize::try_from(found).unwrap_or(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(start) {
        tx.execute_batch(sql)
            .map_err(StoreError::db("migrate the schema"))?;
        debug!(to = i + 1, "schema migrated");
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(StoreError::db("record the schema version"))?;
    tx.commit()
        .map_err(StoreError::db("commit the schema migration"))
}

/// Creates the parent directory (`0700`) and the file (`0600`) before SQLite does, so there is
/// no moment where either exists with the default umask. SQLite gives the `-wal` and `-shm`
/// files the same mode as the database file.
fn prepare_file(path: &Path) -> Result<(), StoreError> {
    let file_err = |source| StoreError::PrepareFile {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            create_private_dir(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        } else {
            warn_if_shared(dir);
        }
    }
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(path).map_err(file_err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata().map_err(file_err)?.permissions().mode();
        if mode & 0o077 != 0 {
            file.set_permissions(fs::Permissions::from_mode(0o600))
                .map_err(file_err)?;
            debug!(
                old_mode = format_args!("{:o}", mode & 0o777),
                "database file made private"
            );
        }
    }
    drop(file);
    Ok(())
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// An existing directory is not ours to change (it may be shared, like `/tmp`); say so instead.
fn warn_if_shared(dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(dir) {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                warn!(
                    dir = %dir.display(),
                    mode = format_args!("{:o}", mode & 0o777),
                    "database directory is readable by other users"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrating_twice_is_a_no_op() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        let first = Database::open(&path).expect("first open");
        assert_eq!(first.schema_version().expect("version"), SCHEMA_VERSION);
        drop(first);
        let again = Database::open(&path).expect("reopen must not re-run migrations");
        assert_eq!(again.schema_version().expect("version"), SCHEMA_VERSION);
    }

    #[test]
    fn tokens_piled_up_under_one_label_keep_only_the_newest_after_migration() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        {
            let c = Connection::open(&path).expect("raw open");
            for m in &MIGRATIONS[..3] {
                c.execute_batch(m).expect("schema 3");
            }
            c.pragma_update(None, "user_version", 3).expect("version");
            c.execute_batch(
                "INSERT INTO clients (id, name, created_at) VALUES (1, 'claude', 1);
                 INSERT INTO client_tokens VALUES (zeroblob(32), 1, 'mcp-config:code', 10);
                 INSERT INTO client_tokens VALUES (randomblob(32), 1, 'mcp-config:code', 20);
                 INSERT INTO client_tokens VALUES (randomblob(32), 1, 'default', 5);",
            )
            .expect("a pile of tokens");
        }
        let db = Database::open(&path).expect("migrate");
        let kept: Vec<(String, i64)> = db
            .writer()
            .prepare("SELECT label, created_at FROM client_tokens ORDER BY label")
            .expect("query")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(
            kept,
            vec![
                ("default".to_owned(), 5),
                ("mcp-config:code".to_owned(), 20)
            ],
            "the newest token of each label is kept"
        );
    }

    #[test]
    fn the_audit_table_keeps_only_the_time_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        {
            // A database as schema 4 left it: every index the audit table ever had.
            let c = Connection::open(&path).expect("raw open");
            for m in &MIGRATIONS[..4] {
                c.execute_batch(m).expect("schema 4");
            }
            c.pragma_update(None, "user_version", 4).expect("version");
        }
        let db = Database::open(&path).expect("migrate");
        let indexes: Vec<String> = db
            .read(|c| {
                c.prepare(
                    "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit' \
                     AND name NOT LIKE 'sqlite_%' ORDER BY name",
                )?
                .query_map([], |r| r.get(0))?
                .collect()
            })
            .expect("indexes");
        assert_eq!(
            indexes,
            vec!["audit_by_time".to_owned()],
            "each audit index is a B-tree write on every proxied request; only retention by age and the chart need one"
        );
    }

    #[test]
    fn a_newer_schema_is_refused_with_its_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        {
            let c = Connection::open(&path).expect("raw open");
            c.pragma_update(None, "user_version", SCHEMA_VERSION + 7)
                .expect("set version");
        }
        let err = Database::open(&path).expect_err("a newer schema must be refused");
        assert_eq!(err.code(), latchkey_core::Code::StoreNewerSchema);
        assert!(err.to_string().contains("update Latchkey"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        fs::write(&path, vec![0x42u8; 8192]).expect("write junk");
        let err = Database::open(&path).expect_err("junk must be refused");
        assert!(
            matches!(
                err.code(),
                latchkey_core::Code::StoreOpen | latchkey_core::Code::StoreDatabase
            ),
            "{err}"
        );
    }

    #[test]
    fn file_databases_use_wal_and_foreign_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open(&dir.path().join("s.db")).expect("open");
        let mode: String = db
            .read(|c| c.pragma_query_value(None, "journal_mode", |r| r.get(0)))
            .expect("journal mode");
        assert_eq!(mode, "wal");
        let fk: i64 = db
            .write(|c| c.pragma_query_value(None, "foreign_keys", |r| r.get(0)))
            .expect("foreign keys");
        assert_eq!(fk, 1, "revoking a client relies on ON DELETE CASCADE");
    }

    #[test]
    fn the_reader_connection_cannot_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open(&dir.path().join("s.db")).expect("open");
        let res = db.read(|c| c.execute("DELETE FROM audit", []));
        assert!(res.is_err(), "the reading connection is query-only");
    }
}
