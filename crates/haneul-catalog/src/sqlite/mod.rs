//! The SQLite engine: one writer connection, a small pool of readers (WAL
//! mode lets them run beside the writer), commits durable at return
//! (`synchronous = FULL`).

mod accounts;
mod migration;
mod query;
mod schema;
mod write;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use haneul_dicom::levels::Level;
use haneul_dicom::matching::Query;
use haneul_dicom::Dataset;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::accounts::{NewUserRecord, TokenRecord, UserChange, UserRecord};
use crate::migration::{Discrepancy, MigrationCounts, MigrationState, MigrationStudy, MigrationUpdate, PlannedStudy};
use crate::records::*;
use crate::{Catalog, CatalogError, Result};
use query::{
    digest_array, narrowing_for, row_to_view, select_for, stored_instance, view_columns, AttrCache, CountNeeds,
    INSTANCE_COLUMNS,
};
use schema::{ADDED_COLUMNS, SCHEMA, SCHEMA_VERSION};
use write::{commit_one, hex, insert_event, remove_one};

/// Idle reader connections kept for reuse.
const MAX_IDLE_READERS: usize = 8;

/// The SQLite catalog.
pub struct SqliteCatalog {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    stop_checkpoints: Arc<AtomicBool>,
}

impl Drop for SqliteCatalog {
    fn drop(&mut self) {
        self.stop_checkpoints.store(true, Ordering::Relaxed);
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
        std::thread::sleep(std::time::Duration::from_millis(250));
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

pub(super) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded connections stay usable after a panic elsewhere: SQLite
    // rolls back any open transaction when the statement fails.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SqliteCatalog {
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
        std::thread::Builder::new()
            .name("haneul-checkpoint".into())
            .spawn(move || checkpoint_forever(checkpointer, stop_flag))
            .map_err(|e| CatalogError::Busy(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(SqliteCatalog { path, writer: Mutex::new(writer), readers: Mutex::new(Vec::new()), stop_checkpoints: stop })
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
        Ok(SqliteCatalog {
            path,
            writer: Mutex::new(connection),
            readers: Mutex::new(Vec::new()),
            stop_checkpoints: Arc::new(AtomicBool::new(true)),
        })
    }

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

impl Catalog for SqliteCatalog {
    fn commit(&self, batch: &CommitBatch<'_>) -> Result<Vec<CommitOutcome>> {
        let mut connection = lock(&self.writer);
        let tx = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let at_ms = now_ms();
        let mut outcomes = Vec::with_capacity(batch.instances.len());
        for item in batch.instances {
            outcomes.push(commit_one(&tx, item, batch.policy, at_ms)?);
        }
        for event in batch.events {
            insert_event(&tx, event, at_ms)?;
        }
        for path in batch.settled {
            tx.prepare_cached("DELETE FROM unsettled WHERE blob_path = ?1")?.execute([path])?;
        }
        if let Some(scan_from) = batch.scan_from {
            tx.prepare_cached(
                "INSERT INTO settings (key, value) VALUES ('recovery_scan_from', ?1) ON CONFLICT(key) DO UPDATE SET value = ?1",
            )?
            .execute([scan_from])?;
        }
        tx.commit()?;
        Ok(outcomes)
    }

    fn remove_instances(&self, sop_uids: &[String], event: Option<&Event>, kind: RemovalKind) -> Result<Removed> {
        let mut connection = lock(&self.writer);
        let tx = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let at_ms = now_ms();
        let mut removed = Removed::default();
        for uid in sop_uids {
            if let Some(instance) = remove_one(&tx, uid)? {
                if kind == RemovalKind::Deliberate {
                    tx.prepare_cached(
                        "INSERT INTO removed_uids (sop_uid, removed_ms) VALUES (?1, ?2)
                         ON CONFLICT (sop_uid) DO UPDATE SET removed_ms = ?2",
                    )?
                    .execute(params![uid, at_ms])?;
                }
                removed.trashed_paths.push(instance.blob.path.clone());
                removed.instances.push(instance);
                for table in ["superseded", "conflicts"] {
                    let versions: Vec<String> = tx
                        .prepare_cached(&format!("DELETE FROM {table} WHERE sop_uid = ?1 RETURNING blob_path"))?
                        .query_map([uid], |row| row.get(0))?
                        .collect::<rusqlite::Result<_>>()?;
                    removed.trashed_paths.extend(versions);
                }
            }
        }
        for path in &removed.trashed_paths {
            tx.prepare_cached("INSERT OR IGNORE INTO trash (blob_path) VALUES (?1)")?.execute([path])?;
        }
        if let Some(event) = event {
            insert_event(&tx, event, at_ms)?;
        }
        tx.commit()?;
        Ok(removed)
    }

    fn trash(&self) -> Result<Vec<String>> {
        self.with_reader(|connection| {
            let mut statement = connection.prepare_cached("SELECT blob_path FROM trash")?;
            let rows = statement.query_map([], |row| row.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
    }

    fn empty_trash(&self, paths: &[String]) -> Result<()> {
        let mut connection = lock(&self.writer);
        let tx = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for path in paths {
            tx.prepare_cached("DELETE FROM trash WHERE blob_path = ?1")?.execute([path])?;
        }
        tx.commit()?;
        Ok(())
    }

    fn unsettled_instances(&self) -> Result<Vec<StoredInstance>> {
        self.with_reader(|connection| {
            let mut statement = connection.prepare_cached(&format!(
                "SELECT {INSTANCE_COLUMNS} FROM unsettled u JOIN instances i ON i.blob_path = u.blob_path
                 JOIN series se ON se.pk = i.series_pk JOIN studies s ON s.pk = se.study_pk ORDER BY i.pk"
            ))?;
            let rows = statement.query_map([], stored_instance)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn find(&self, query: &Query, visit: &mut dyn FnMut(Dataset) -> bool) -> Result<()> {
        let narrowing = narrowing_for(query, query.level);
        let sql = select_for(query.level, &view_columns(query.level, CountNeeds::of(query)), &narrowing);
        self.with_reader(|connection| {
            let mut statement = connection.prepare_cached(&sql)?;
            let mut rows = statement.query(rusqlite::params_from_iter(narrowing.params.iter()))?;
            let mut cache = AttrCache::default();
            while let Some(row) = rows.next()? {
                let view = row_to_view(row, 0, query.level, &mut cache)?;
                if query.matches(&view) && !visit(view) {
                    break;
                }
            }
            Ok(())
        })
    }

    fn find_instances(&self, query: &Query) -> Result<Vec<StoredInstance>> {
        // Candidates are instances, so every level's columns can narrow;
        // each candidate is then matched on its view at the query's level.
        let narrowing = narrowing_for(query, Level::Image);
        let columns = format!("{INSTANCE_COLUMNS}, {}", view_columns(query.level, CountNeeds::of(query)));
        let sql = select_for(Level::Image, &columns, &narrowing);
        let params = &narrowing.params;
        self.with_reader(|connection| {
            let mut statement = connection.prepare_cached(&sql)?;
            let mut rows = statement.query(rusqlite::params_from_iter(params.iter()))?;
            let mut cache = AttrCache::default();
            let mut found = Vec::new();
            while let Some(row) = rows.next()? {
                let view = row_to_view(row, 11, query.level, &mut cache)?;
                if query.matches(&view) {
                    found.push(stored_instance(row)?);
                }
            }
            Ok(found)
        })
    }

    fn instances_by_sop_uid(&self, sop_uids: &[String]) -> Result<Vec<StoredInstance>> {
        self.with_reader(|connection| {
            let mut statement = connection.prepare_cached(&format!(
                "SELECT {INSTANCE_COLUMNS} FROM instances i JOIN series se ON se.pk = i.series_pk
                 JOIN studies s ON s.pk = se.study_pk WHERE i.sop_uid = ?1"
            ))?;
            let mut found = Vec::new();
            for uid in sop_uids {
                if let Some(instance) = statement.query_row([uid], stored_instance).optional()? {
                    found.push(instance);
                }
            }
            Ok(found)
        })
    }

    fn instance_page(&self, after: i64, limit: usize) -> Result<Vec<StoredInstance>> {
        self.with_reader(|connection| {
            let mut statement = connection.prepare_cached(&format!(
                "SELECT {INSTANCE_COLUMNS} FROM instances i JOIN series se ON se.pk = i.series_pk
                 JOIN studies s ON s.pk = se.study_pk WHERE i.pk > ?1 ORDER BY i.pk LIMIT ?2"
            ))?;
            let rows = statement.query_map(params![after, limit as i64], stored_instance)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn referenced_paths(&self, prefix: &str) -> Result<HashSet<String>> {
        // Prefixes are shard paths made of digits and slashes; the range
        // below is the index-friendly form of `LIKE 'prefix%'`.
        let upper = format!("{prefix}\u{10FFFF}");
        self.with_reader(|connection| {
            let mut paths = HashSet::new();
            for table in ["instances", "superseded", "conflicts"] {
                let mut statement = connection.prepare_cached(&format!(
                    "SELECT blob_path FROM {table} WHERE blob_path >= ?1 AND blob_path < ?2"
                ))?;
                let rows = statement.query_map([prefix, upper.as_str()], |row| row.get::<_, String>(0))?;
                for path in rows {
                    paths.insert(path?);
                }
            }
            Ok(paths)
        })
    }

    fn setting(&self, key: &str) -> Result<Option<String>> {
        self.with_reader(|connection| {
            Ok(connection
                .prepare_cached("SELECT value FROM settings WHERE key = ?1")?
                .query_row([key], |row| row.get(0))
                .optional()?)
        })
    }

    fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        let connection = lock(&self.writer);
        connection
            .prepare_cached(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
            )?
            .execute([key, value])?;
        Ok(())
    }

    fn statistics(&self) -> Result<Statistics> {
        self.with_reader(|connection| {
            let count =
                |sql: &str| -> Result<u64> { Ok(connection.query_row(sql, [], |row| row.get::<_, i64>(0))? as u64) };
            Ok(Statistics {
                patients: count("SELECT COUNT(*) FROM patients")?,
                studies: count("SELECT COUNT(*) FROM studies")?,
                series: count("SELECT COUNT(*) FROM series")?,
                instances: count("SELECT COUNT(*) FROM instances")?,
                stored_bytes: count("SELECT COALESCE(SUM(blob_size), 0) FROM instances")?,
            })
        })
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

    fn conflicts(&self, sop_uid: Option<&str>) -> Result<Vec<ConflictRecord>> {
        self.with_reader(|connection| {
            let mut statement = connection.prepare_cached(
                "SELECT c.pk, c.sop_uid, c.study_uid, c.series_uid, c.transfer_syntax, c.blob_path, c.blob_size,
                        c.blob_digest, c.dataset_offset, c.source_ae, c.detected_ms, i.blob_digest
                 FROM conflicts c LEFT JOIN instances i ON i.sop_uid = c.sop_uid
                 WHERE ?1 IS NULL OR c.sop_uid = ?1 ORDER BY c.pk",
            )?;
            let rows = statement.query_map([sop_uid], |row| {
                let digest = digest_array(&row.get::<_, Vec<u8>>(7)?);
                let current: Option<Vec<u8>> = row.get(11)?;
                Ok(ConflictRecord {
                    pk: row.get(0)?,
                    sop_uid: row.get(1)?,
                    study_uid: row.get(2)?,
                    series_uid: row.get(3)?,
                    transfer_syntax: row.get(4)?,
                    blob: BlobInfo { path: row.get(5)?, size: row.get::<_, i64>(6)? as u64, digest },
                    dataset_offset: row.get::<_, i64>(8)? as u64,
                    source_ae: row.get(9)?,
                    detected_ms: row.get(10)?,
                    digest: hex(&digest),
                    current_digest: current.map(|bytes| hex(&bytes)),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn events_after(&self, after: i64, limit: usize) -> Result<Vec<StoredEvent>> {
        self.with_reader(|connection| {
            let mut statement = connection.prepare_cached(
                "SELECT seq, at_ms, kind, actor, address, session, patient_id, study_uid, series_uid, sop_uid, detail
                 FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = statement.query_map(params![after, limit as i64], |row| {
                let detail: String = row.get(10)?;
                Ok(StoredEvent {
                    seq: row.get(0)?,
                    at_ms: row.get(1)?,
                    kind: row.get(2)?,
                    origin: Origin {
                        actor: row.get(3)?,
                        address: row.get(4)?,
                        session: row.get(5)?,
                        ..Origin::default()
                    },
                    patient_id: row.get(6)?,
                    study_uid: row.get(7)?,
                    series_uid: row.get(8)?,
                    sop_uid: row.get(9)?,
                    detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn create_user(&self, user: &NewUserRecord<'_>) -> Result<UserRecord> {
        accounts::insert_user(&lock(&self.writer), user)
    }

    fn create_first_user(&self, user: &NewUserRecord<'_>) -> Result<Option<UserRecord>> {
        let mut connection = lock(&self.writer);
        let tx = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let existing: i64 = tx.query_row("SELECT COUNT(*) FROM users", [], |row| row.get(0))?;
        if existing > 0 {
            return Ok(None);
        }
        let created = accounts::insert_user(&tx, user)?;
        tx.commit()?;
        Ok(Some(created))
    }

    fn user(&self, name: &str) -> Result<Option<UserRecord>> {
        self.with_reader(|connection| accounts::select_user(connection, name))
    }

    fn users(&self) -> Result<Vec<UserRecord>> {
        self.with_reader(accounts::select_users)
    }

    fn update_user(&self, name: &str, change: UserChange<'_>) -> Result<bool> {
        accounts::update_user(&lock(&self.writer), name, change)
    }

    fn create_token(&self, token: &TokenRecord) -> Result<bool> {
        accounts::insert_token(&lock(&self.writer), token)
    }

    fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        self.with_reader(|connection| accounts::select_token(connection, id))
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>> {
        self.with_reader(accounts::select_tokens)
    }

    fn revoke_token(&self, id: &str, at_ms: i64) -> Result<bool> {
        accounts::revoke_token(&lock(&self.writer), id, at_ms)
    }

    fn migration_plan(&self, source: &str, studies: &[PlannedStudy]) -> Result<usize> {
        migration::plan(&mut lock(&self.writer), source, studies)
    }

    fn migration_claim(
        &self,
        source: &str,
        limit: usize,
        now_ms: i64,
        max_attempts: i64,
    ) -> Result<Vec<MigrationStudy>> {
        migration::claim(&mut lock(&self.writer), source, limit, now_ms, max_attempts)
    }

    fn migration_update(&self, source: &str, study_uid: &str, update: &MigrationUpdate) -> Result<()> {
        migration::update(&mut lock(&self.writer), source, study_uid, update)
    }

    fn migration_reset(&self, source: &str, from: &[MigrationState], to: MigrationState) -> Result<usize> {
        migration::reset(&mut lock(&self.writer), source, from, to)
    }

    fn migration_counts(&self, source: &str) -> Result<MigrationCounts> {
        self.with_reader(|connection| migration::counts(connection, source))
    }

    fn migration_studies(
        &self,
        source: &str,
        states: Option<&[MigrationState]>,
        after_uid: &str,
        limit: usize,
    ) -> Result<Vec<MigrationStudy>> {
        self.with_reader(|connection| migration::studies(connection, source, states, after_uid, limit))
    }

    fn migration_discrepancies(&self, source: &str) -> Result<Vec<Discrepancy>> {
        self.with_reader(|connection| migration::discrepancies(connection, source))
    }

    fn held_versions(&self, scope: VersionScope<'_>, visit: &mut dyn FnMut(HeldVersion) -> bool) -> Result<()> {
        let (current_filter, conflict_filter, uid) = match scope {
            VersionScope::All => ("1", "1", None),
            VersionScope::Study(uid) => ("s.study_uid = ?1", "c.study_uid = ?1", Some(uid)),
            VersionScope::Instance(uid) => ("i.sop_uid = ?1", "c.sop_uid = ?1", Some(uid)),
        };
        let sql = format!(
            "SELECT {CURRENT_VERSION_COLUMNS} WHERE {current_filter}
             UNION ALL
             SELECT {CONFLICT_VERSION_COLUMNS} WHERE {conflict_filter}
             ORDER BY 1, 2, 10 DESC"
        );
        self.with_reader(|connection| {
            let mut statement = connection.prepare_cached(&sql)?;
            let mut rows = match uid {
                Some(uid) => statement.query([uid])?,
                None => statement.query([])?,
            };
            while let Some(row) = rows.next()? {
                if !visit(held_version(row)?) {
                    break;
                }
            }
            Ok(())
        })
    }

    fn undigested_versions(&self, after: &str, limit: usize) -> Result<Vec<HeldVersion>> {
        // One keyset query per table (each walks its blob_path index), merged
        // here: a UNION in SQL would be sorted whole for every page.
        self.with_reader(|connection| {
            let mut found = Vec::new();
            for (columns, table) in [(CURRENT_VERSION_COLUMNS, "i"), (CONFLICT_VERSION_COLUMNS, "c")] {
                let mut statement = connection.prepare_cached(&format!(
                    "SELECT {columns} WHERE {table}.blob_path > ?1 AND {table}.content_digest IS NULL
                     ORDER BY {table}.blob_path LIMIT ?2"
                ))?;
                let rows = statement.query_map(params![after, limit as i64], held_version)?;
                for row in rows {
                    found.push(row?);
                }
            }
            found.sort_by(|a, b| a.blob.path.cmp(&b.blob.path));
            found.truncate(limit);
            Ok(found)
        })
    }

    fn record_dataset_digests(&self, digests: &[(String, [u8; 32])]) -> Result<()> {
        let mut connection = lock(&self.writer);
        let tx = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for (path, digest) in digests {
            for table in ["instances", "conflicts"] {
                tx.prepare_cached(&format!(
                    "UPDATE {table} SET content_digest = ?2 WHERE blob_path = ?1 AND content_digest IS NULL"
                ))?
                .execute(params![path, &digest[..]])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// The columns of [`held_version`] for current instances, and their tables.
const CURRENT_VERSION_COLUMNS: &str = "s.study_uid, i.sop_uid, i.sop_class, i.transfer_syntax, i.blob_path, \
     i.blob_size, i.blob_digest, i.dataset_offset, i.content_digest, 1
     FROM instances i JOIN series se ON se.pk = i.series_pk JOIN studies s ON s.pk = se.study_pk";

/// The columns of [`held_version`] for kept conflicts, and their tables.
const CONFLICT_VERSION_COLUMNS: &str = "c.study_uid, c.sop_uid, \
     COALESCE((SELECT sop_class FROM instances WHERE sop_uid = c.sop_uid), ''), c.transfer_syntax, c.blob_path, \
     c.blob_size, c.blob_digest, c.dataset_offset, c.content_digest, 0
     FROM conflicts c";

fn digest_column(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Option<[u8; 32]>> {
    let bytes: Option<Vec<u8>> = row.get(index)?;
    Ok(bytes.and_then(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).ok()))
}

fn held_version(row: &rusqlite::Row<'_>) -> rusqlite::Result<HeldVersion> {
    Ok(HeldVersion {
        study_uid: row.get(0)?,
        sop_uid: row.get(1)?,
        sop_class: row.get(2)?,
        transfer_syntax: row.get(3)?,
        blob: BlobInfo {
            path: row.get(4)?,
            size: row.get::<_, i64>(5)?.max(0) as u64,
            digest: digest_column(row, 6)?.unwrap_or([0; 32]),
        },
        dataset_offset: row.get::<_, i64>(7)?.max(0) as u64,
        dataset_digest: digest_column(row, 8)?,
        current: row.get(9)?,
    })
}
