//! The SQLite engine: one writer connection, a small pool of readers (WAL
//! mode lets them run beside the writer), commits durable at return
//! (`synchronous = FULL`).

pub(crate) mod schema;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags};

use crate::sql::db::{Param, Value};
use crate::sql::{Db, Dialect, Engine, Row, SqlCatalog};
use crate::{CatalogError, Result};
use schema::{ADDED_COLUMNS, SCHEMA, SCHEMA_VERSION};

/// Idle reader connections kept for reuse.
const MAX_IDLE_READERS: usize = 8;

/// The SQLite catalog, the embedded default.
pub type SqliteCatalog = SqlCatalog<SqliteEngine>;

/// SQLite connections for [`SqlCatalog`].
pub struct SqliteEngine {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    stop_checkpoints: Arc<AtomicBool>,
    /// Joined when the catalog closes, so that no connection outlives it
    /// (its last checkpoint would make the WAL files again, in a directory
    /// that may be on its way out: a restore drill's).
    checkpointer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for SqliteEngine {
    fn drop(&mut self) {
        self.stop_checkpoints.store(true, Ordering::Relaxed);
        if let Some(thread) = self.checkpointer.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// WAL frames (pages) above which a RESTART checkpoint bounds the WAL: about 64 MiB.
const WAL_RESTART_FRAMES: i64 = 16_384;

/// Bring tables made by an earlier version up to date (see [`ADDED_COLUMNS`]).
fn add_missing_columns(connection: &Connection, version: i64) -> Result<()> {
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    for (table, column, definition) in ADDED_COLUMNS {
        let mut statement = connection.prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?;
        let columns: Vec<String> = statement.query_map([], |row| row.get(0))?.collect::<rusqlite::Result<_>>()?;
        // No table yet: SCHEMA creates it whole.
        if !columns.is_empty() && !columns.iter().any(|name| name == column) {
            connection.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {definition}"))?;
            tracing::info!(table, column, from_version = version, "catalog schema upgraded");
        }
    }
    Ok(())
}

/// Copy the WAL into the database file every so often, off the commit path.
/// PASSIVE checkpoints never block the writer, but under continuous writes
/// they never catch up, and the WAL only restarts once one has; so when the
/// WAL passes [`WAL_RESTART_FRAMES`] a RESTART checkpoint briefly holds new
/// writers back until the WAL can start over.
fn checkpoint_forever(connection: Connection, stop: Arc<AtomicBool>) {
    let checkpoint = |mode: &str| -> rusqlite::Result<(i64, i64, i64)> {
        connection
            .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
    };
    // Planner statistics: gathered soon after start and then every ten minutes,
    // sampled (analysis_limit) so it takes milliseconds even on large catalogs.
    let mut next_analyze = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !stop.load(Ordering::Relaxed) {
        // Unparked early when the catalog closes.
        std::thread::park_timeout(std::time::Duration::from_millis(250));
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if std::time::Instant::now() >= next_analyze {
            next_analyze = std::time::Instant::now() + std::time::Duration::from_secs(600);
            if let Err(error) = connection.execute_batch("PRAGMA analysis_limit = 1000; ANALYZE;") {
                tracing::warn!(%error, "gathering catalog statistics failed");
            }
        }
        match checkpoint("PASSIVE") {
            Ok((_, frames, _)) if frames > WAL_RESTART_FRAMES => {
                if let Err(error) = checkpoint("RESTART") {
                    tracing::warn!(%error, frames, "WAL restart checkpoint failed; will retry");
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "WAL checkpoint failed"),
        }
    }
    // A last full checkpoint keeps the WAL small across restarts.
    let _ = checkpoint("TRUNCATE");
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded connections stay usable after a panic elsewhere: SQLite
    // rolls back any open transaction when the statement fails.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SqlCatalog<SqliteEngine> {
    /// Open or create the catalog database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteCatalog> {
        let path = path.as_ref().to_path_buf();
        let writer = Connection::open(&path)?;
        writer.busy_timeout(std::time::Duration::from_secs(30))?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        // FULL makes each WAL commit fsync before returning: a commit that
        // returned is durable, which the C-STORE success status relies on.
        writer.pragma_update(None, "synchronous", "FULL")?;
        writer.pragma_update(None, "foreign_keys", "ON")?;
        writer.pragma_update(None, "cache_size", -64_000)?;
        // Checkpoints run on a background thread (see `checkpoint_forever`),
        // not inside a commit that a C-STORE is waiting for.
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        let version: i64 = writer.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(CatalogError::SchemaTooNew { found: version, supported: SCHEMA_VERSION });
        }
        add_missing_columns(&writer, version)?;
        writer.execute_batch(SCHEMA)?;
        writer.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        let checkpointer = Connection::open(&path)?;
        checkpointer.busy_timeout(std::time::Duration::from_secs(5))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let checkpointer = std::thread::Builder::new()
            .name("haneul-checkpoint".into())
            .spawn(move || checkpoint_forever(checkpointer, stop_flag))
            .map_err(|e| CatalogError::Busy(format!("cannot start the checkpoint thread: {e}")))?;
        let engine = SqliteEngine {
            path,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            stop_checkpoints: stop,
            checkpointer: Some(checkpointer),
        };
        Ok(SqlCatalog { engine })
    }

    /// Open an existing catalog for reading only, beside a running server
    /// (backups): no schema change, no checkpoint thread, and every write
    /// fails, so the live database is never altered.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<SqliteCatalog> {
        let path = path.as_ref().to_path_buf();
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = Connection::open_with_flags(&path, flags)?;
        connection.busy_timeout(std::time::Duration::from_secs(30))?;
        let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(CatalogError::SchemaTooNew { found: version, supported: SCHEMA_VERSION });
        }
        let engine = SqliteEngine {
            path,
            writer: Mutex::new(connection),
            readers: Mutex::new(Vec::new()),
            stop_checkpoints: Arc::new(AtomicBool::new(true)),
            checkpointer: None,
        };
        Ok(SqlCatalog { engine })
    }

    /// A new, empty catalog at `path` (which must not exist) without the
    /// background checkpoints: the target of another engine's snapshot.
    pub(crate) fn create_for_snapshot(path: &Path) -> Result<Connection> {
        let connection = Connection::open(path)?;
        connection.pragma_update(None, "journal_mode", "DELETE")?;
        connection.execute_batch(SCHEMA)?;
        connection.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(connection)
    }
}

impl SqliteEngine {
    fn with_reader<T>(&self, work: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let pooled = lock(&self.readers).pop();
        let connection = match pooled {
            Some(connection) => connection,
            None => {
                let connection = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                connection.busy_timeout(std::time::Duration::from_secs(30))?;
                connection.pragma_update(None, "cache_size", -32_000)?;
                connection
            }
        };
        let result = work(&connection);
        let mut idle = lock(&self.readers);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(connection);
        }
        result
    }
}

impl Engine for SqliteEngine {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn write<T>(&self, work: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        let mut connection = lock(&self.writer);
        let tx = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let result = work(&mut SqliteDb(&tx))?;
        tx.commit()?;
        Ok(result)
    }

    fn read<T>(&self, work: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        self.with_reader(|connection| work(&mut SqliteDb(connection)))
    }

    fn snapshot_into(&self, path: &Path) -> Result<()> {
        let target = path.to_str().ok_or_else(|| CatalogError::SnapshotPath(path.to_path_buf()))?;
        // VACUUM INTO runs in one read transaction: in WAL mode it sees one
        // commit's state and holds back neither the writer nor checkpoints.
        self.with_reader(|connection| {
            connection.execute("VACUUM INTO ?1", [target])?;
            Ok(())
        })
    }
}

/// A SQLite connection (or a transaction, through `Deref`) as a [`Db`].
pub(crate) struct SqliteDb<'a>(pub(crate) &'a Connection);

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Param::Null => ValueRef::Null,
            Param::Int(value) => ValueRef::Integer(value),
            Param::Text(value) => ValueRef::Text(value.as_bytes()),
            Param::Bytes(value) => ValueRef::Blob(value),
        }))
    }
}

impl Db for SqliteDb<'_> {
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        let changed = self.0.prepare_cached(sql)?.execute(rusqlite::params_from_iter(params.iter()))?;
        Ok(changed as u64)
    }

    fn query_each(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        visit: &mut dyn FnMut(&dyn Row) -> Result<bool>,
    ) -> Result<()> {
        let mut statement = self.0.prepare_cached(sql)?;
        let mut rows = statement.query(rusqlite::params_from_iter(params.iter()))?;
        while let Some(row) = rows.next()? {
            if !visit(row)? {
                break;
            }
        }
        Ok(())
    }
}

impl Row for rusqlite::Row<'_> {
    fn opt_int(&self, index: usize) -> Result<Option<i64>> {
        Ok(self.get(index)?)
    }

    fn opt_text(&self, index: usize) -> Result<Option<String>> {
        Ok(self.get(index)?)
    }

    fn opt_bytes(&self, index: usize) -> Result<Option<Vec<u8>>> {
        Ok(self.get(index)?)
    }

    fn flag(&self, index: usize) -> Result<bool> {
        Ok(self.get(index)?)
    }

    fn value(&self, index: usize) -> Result<Value> {
        Ok(match self.get_ref(index)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(value) => Value::Int(value),
            // The catalog stores no floating-point columns.
            ValueRef::Real(value) => Value::Int(value as i64),
            ValueRef::Text(bytes) => Value::Text(String::from_utf8_lossy(bytes).into_owned()),
            ValueRef::Blob(bytes) => Value::Bytes(bytes.to_vec()),
        })
    }

    fn column_name(&self, index: usize) -> Result<String> {
        Ok(self.as_ref().column_name(index)?.to_string())
    }

    fn len(&self) -> usize {
        self.as_ref().column_count()
    }
}
