//! The catalog written once for every SQL engine: [`SqlCatalog`] implements
//! [`Catalog`] over an [`Engine`], which supplies connections and
//! transactions and speaks one [`Dialect`]. Statements are shared; only the
//! schema, connection handling and snapshots belong to an engine.

mod accounts;
mod corrections;
pub(crate) mod db;
mod migration;
mod query;
mod shared;
mod write;

use std::collections::HashSet;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use haneul_dicom::levels::Level;
use haneul_dicom::matching::Query;
use haneul_dicom::Dataset;

use crate::accounts::{NewUserRecord, TokenRecord, UserChange, UserRecord};
use crate::migration::{
    Claimant, Discrepancy, MigrationCounts, MigrationState, MigrationStudy, MigrationUpdate, PlannedStudy,
};
use crate::records::*;
use crate::shared::{LeaseRecord, SharedAeRecord};
use crate::{Catalog, Result};
pub(crate) use db::{row_limit, Db, Dialect, Row};
use query::{
    digest_array, narrowing_for, row_to_view, select_for, stored_instance, view_columns, AttrCache, CountNeeds,
    Narrowing, INSTANCE_COLUMNS, INSTANCE_COLUMN_COUNT,
};
use write::{commit_one, forget_settled, hex, insert_event, remove_one};

/// What the shared catalog needs from a database engine.
pub trait Engine: Send + Sync + 'static {
    #[doc(hidden)]
    fn dialect(&self) -> Dialect;

    /// Run `work` in a write transaction, committed durably if it returns
    /// `Ok`. Write transactions are serialised (one at a time for the whole
    /// catalog, across processes where several share it), as the journal's
    /// sequence numbers must grow in commit order.
    #[doc(hidden)]
    fn write<T>(&self, work: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T>;

    /// Run `work` on a connection for reading.
    #[doc(hidden)]
    fn read<T>(&self, work: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T>;

    /// See [`Catalog::snapshot_into`].
    #[doc(hidden)]
    fn snapshot_into(&self, path: &Path) -> Result<()>;
}

/// The catalog on an SQL engine.
pub struct SqlCatalog<E: Engine> {
    pub(crate) engine: E,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Tables a snapshot copies, in an order that respects foreign keys.
const TABLES: &[&str] = &[
    "settings",
    "patients",
    "studies",
    "series",
    "instances",
    "superseded",
    "conflicts",
    "unsettled",
    "removed_uids",
    "migration_studies",
    "migration_discrepancies",
    "trash",
    "events",
    "users",
    "api_tokens",
    "shared_aes",
    "corrections",
];

/// Copy every row of the catalog tables from one database to another (a
/// snapshot of another engine into SQLite, or back). Columns go by name, as
/// the source names them, so none is left behind; one the target lacks fails
/// the copy. A table `source_has` denies is skipped: a snapshot made by an
/// older version lacks the tables added since.
pub(crate) fn copy_tables(from: &mut dyn Db, to: &mut dyn Db, source_has: &dyn Fn(&str) -> bool) -> Result<()> {
    for table in TABLES.iter().filter(|table| source_has(table)) {
        let mut insert = None;
        let mut failure = None;
        from.query_each(&format!("SELECT * FROM {table}"), &[], &mut |row| {
            let insert = match &insert {
                Some(sql) => sql,
                None => insert.insert(insert_statement(table, row)?),
            };
            let values = (0..row.len()).map(|index| row.value(index)).collect::<Result<Vec<_>>>()?;
            let params: Vec<_> = values.iter().map(|value| value.as_param()).collect();
            if let Err(error) = to.execute(insert, &params) {
                failure = Some(error);
                return Ok(false);
            }
            Ok(true)
        })?;
        if let Some(error) = failure {
            return Err(error);
        }
    }
    Ok(())
}

/// `INSERT INTO table (the row's columns) VALUES (?1, …)`.
fn insert_statement(table: &str, row: &dyn Row) -> Result<String> {
    let columns = (0..row.len()).map(|index| row.column_name(index)).collect::<Result<Vec<_>>>()?;
    let placeholders: Vec<String> = (1..=columns.len()).map(|n| format!("?{n}")).collect();
    Ok(format!("INSERT INTO {table} ({}) VALUES ({})", columns.join(", "), placeholders.join(", ")))
}

impl<E: Engine> SqlCatalog<E> {
    /// The statement [`Catalog::find`] runs for `query` (and
    /// [`Catalog::query_plan`] explains), with its narrowing's parameters.
    fn find_statement(&self, query: &Query) -> (Narrowing, String) {
        let narrowing = narrowing_for(self.engine.dialect(), query, query.level);
        let sql = select_for(query.level, &view_columns(query.level, CountNeeds::of(query)), &narrowing);
        (narrowing, sql)
    }
}

impl<E: Engine> Catalog for SqlCatalog<E> {
    fn commit(&self, batch: &CommitBatch<'_>) -> Result<Vec<CommitOutcome>> {
        self.engine.write(|tx| {
            let at_ms = now_ms();
            let mut outcomes = Vec::with_capacity(batch.instances.len());
            for item in batch.instances {
                outcomes.push(commit_one(tx, item, batch.policy, at_ms)?);
            }
            for event in batch.events {
                insert_event(tx, event, at_ms)?;
            }
            forget_settled(tx, batch.settled)?;
            if let Some(watermark) = batch.scan_from {
                tx.execute(
                    "INSERT INTO settings (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET value = ?2",
                    &[watermark.key.into(), watermark.shard.into()],
                )?;
            }
            Ok(outcomes)
        })
    }

    fn remove_instances(&self, sop_uids: &[String], event: Option<&Event>, kind: RemovalKind) -> Result<Removed> {
        self.engine.write(|tx| {
            let at_ms = now_ms();
            let mut removed = Removed::default();
            for uid in sop_uids {
                let Some(instance) = remove_one(tx, uid)? else {
                    continue;
                };
                if kind == RemovalKind::Deliberate {
                    tx.execute(
                        "INSERT INTO removed_uids (sop_uid, removed_ms) VALUES (?1, ?2)
                         ON CONFLICT (sop_uid) DO UPDATE SET removed_ms = ?2",
                        &[uid.into(), at_ms.into()],
                    )?;
                }
                removed.trashed_paths.push(instance.blob.path.clone());
                removed.instances.push(instance);
                for table in ["superseded", "conflicts"] {
                    let versions = tx.query_all(
                        &format!("DELETE FROM {table} WHERE sop_uid = ?1 RETURNING blob_path"),
                        &[uid.into()],
                        |row| row.text(0),
                    )?;
                    removed.trashed_paths.extend(versions);
                }
            }
            for path in &removed.trashed_paths {
                tx.execute("INSERT INTO trash (blob_path) VALUES (?1) ON CONFLICT DO NOTHING", &[path.into()])?;
            }
            if let Some(event) = event {
                insert_event(tx, event, at_ms)?;
            }
            Ok(removed)
        })
    }

    fn trash(&self) -> Result<Vec<String>> {
        self.engine.read(|db| db.query_all("SELECT blob_path FROM trash", &[], |row| row.text(0)))
    }

    fn empty_trash(&self, paths: &[String]) -> Result<()> {
        self.engine.write(|tx| {
            for path in paths {
                tx.execute("DELETE FROM trash WHERE blob_path = ?1", &[path.into()])?;
            }
            Ok(())
        })
    }

    fn unsettled_instances(&self) -> Result<Vec<StoredInstance>> {
        self.engine.read(|db| {
            db.query_all(
                &format!(
                    "SELECT {INSTANCE_COLUMNS} FROM unsettled u JOIN instances i ON i.blob_path = u.blob_path
                     JOIN series se ON se.pk = i.series_pk JOIN studies s ON s.pk = se.study_pk ORDER BY i.pk"
                ),
                &[],
                stored_instance,
            )
        })
    }

    fn write_ahead(&self, blob_path: &str) -> Result<Option<Vec<u8>>> {
        let found = self.engine.read(|db| {
            db.query_all("SELECT write_ahead FROM unsettled WHERE blob_path = ?1", &[blob_path.into()], |row| {
                row.opt_bytes(0)
            })
        })?;
        Ok(found.into_iter().next().flatten())
    }

    fn find(&self, query: &Query, skip: usize, visit: &mut dyn FnMut(Dataset) -> bool) -> Result<()> {
        let (narrowing, mut sql) = self.find_statement(query);
        let mut params = narrowing.params();
        let mut left_to_skip = skip;
        // With no key to match, every row is a match: the database skips the
        // rows, where otherwise each would be read and matched first (a deep
        // page of every instance would cost as much as all pages before it).
        // A parameter, so that every page runs one prepared statement.
        if skip > 0 && query.constraints.is_empty() {
            params.push(i64::try_from(skip).unwrap_or(i64::MAX).into());
            let offset = match self.engine.dialect() {
                Dialect::Sqlite => " LIMIT -1 OFFSET ?",
                Dialect::Postgres => " OFFSET ?",
            };
            sql.push_str(&format!("{offset}{}", params.len()));
            left_to_skip = 0;
        }
        self.engine.read(|db| {
            let mut cache = AttrCache::default();
            db.query_each(&sql, &params, &mut |row| {
                let view = row_to_view(row, 0, query.level, &mut cache)?;
                if !query.matches(&view) {
                    return Ok(true);
                }
                if left_to_skip > 0 {
                    left_to_skip -= 1;
                    return Ok(true);
                }
                Ok(visit(view))
            })
        })
    }

    fn query_plan(&self, query: &Query) -> Result<String> {
        let (narrowing, sql) = self.find_statement(query);
        let explain = match self.engine.dialect() {
            Dialect::Sqlite => "EXPLAIN QUERY PLAN",
            Dialect::Postgres => "EXPLAIN",
        };
        self.engine.read(|db| {
            let mut lines = Vec::new();
            db.query_each(&format!("{explain} {sql}"), &narrowing.params(), &mut |row| {
                // The plan text is the last column (SQLite's `detail`, PostgreSQL's `QUERY PLAN`).
                lines.push(row.opt_text(row.len() - 1)?.unwrap_or_default());
                Ok(true)
            })?;
            Ok(lines.join("\n"))
        })
    }

    fn refresh_statistics(&self) -> Result<()> {
        match self.engine.dialect() {
            // Writes sqlite_stat1, which a reader connection may not.
            Dialect::Sqlite => self.engine.write(|tx| tx.execute("ANALYZE", &[]).map(|_| ())),
            // Outside a transaction, so the write lock is not held meanwhile.
            Dialect::Postgres => self.engine.read(|db| db.execute("ANALYZE", &[]).map(|_| ())),
        }
    }

    fn find_instances(&self, query: &Query) -> Result<Vec<StoredInstance>> {
        // Candidates are instances, so every level's columns can narrow;
        // each candidate is then matched on its view at the query's level.
        let narrowing = narrowing_for(self.engine.dialect(), query, Level::Image);
        let columns = format!("{INSTANCE_COLUMNS}, {}", view_columns(query.level, CountNeeds::of(query)));
        let sql = select_for(Level::Image, &columns, &narrowing);
        self.engine.read(|db| {
            let mut cache = AttrCache::default();
            let mut found = Vec::new();
            db.query_each(&sql, &narrowing.params(), &mut |row| {
                let view = row_to_view(row, INSTANCE_COLUMN_COUNT, query.level, &mut cache)?;
                if query.matches(&view) {
                    found.push(stored_instance(row)?);
                }
                Ok(true)
            })?;
            Ok(found)
        })
    }

    fn instances_by_sop_uid(&self, sop_uids: &[String]) -> Result<Vec<StoredInstance>> {
        let sql = format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances i JOIN series se ON se.pk = i.series_pk
             JOIN studies s ON s.pk = se.study_pk WHERE i.sop_uid = ?1"
        );
        self.engine.read(|db| {
            let mut found = Vec::new();
            for uid in sop_uids {
                if let Some(instance) = db.query_opt(&sql, &[uid.into()], stored_instance)? {
                    found.push(instance);
                }
            }
            Ok(found)
        })
    }

    fn instance_page(&self, after: i64, limit: usize) -> Result<Vec<StoredInstance>> {
        self.engine.read(|db| {
            db.query_all(
                &format!(
                    "SELECT {INSTANCE_COLUMNS} FROM instances i JOIN series se ON se.pk = i.series_pk
                     JOIN studies s ON s.pk = se.study_pk WHERE i.pk > ?1 ORDER BY i.pk LIMIT ?2"
                ),
                &[after.into(), row_limit(limit).into()],
                stored_instance,
            )
        })
    }

    fn referenced_paths(&self, prefix: &str) -> Result<HashSet<String>> {
        // Prefixes are shard paths made of digits and slashes; the range
        // below is the index-friendly form of `LIKE 'prefix%'` (text
        // compares bytewise in both engines' catalogs).
        let upper = format!("{prefix}\u{10FFFF}");
        self.engine.read(|db| {
            let mut paths = HashSet::new();
            for table in ["instances", "superseded", "conflicts"] {
                db.query_each(
                    &format!("SELECT blob_path FROM {table} WHERE blob_path >= ?1 AND blob_path < ?2"),
                    &[prefix.into(), upper.as_str().into()],
                    &mut |row| {
                        paths.insert(row.text(0)?);
                        Ok(true)
                    },
                )?;
            }
            Ok(paths)
        })
    }

    fn setting(&self, key: &str) -> Result<Option<String>> {
        self.engine
            .read(|db| db.query_opt("SELECT value FROM settings WHERE key = ?1", &[key.into()], |row| row.text(0)))
    }

    fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.engine.write(|tx| {
            tx.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
                &[key.into(), value.into()],
            )?;
            Ok(())
        })
    }

    fn statistics(&self) -> Result<Statistics> {
        self.engine.read(|db| {
            let mut count = |sql: &str| -> Result<u64> { Ok(db.query_one(sql, &[], |row| row.int(0))?.max(0) as u64) };
            Ok(Statistics {
                patients: count("SELECT COUNT(*) FROM patients")?,
                studies: count("SELECT COUNT(*) FROM studies")?,
                series: count("SELECT COUNT(*) FROM series")?,
                instances: count("SELECT COUNT(*) FROM instances")?,
                stored_bytes: count("SELECT CAST(COALESCE(SUM(blob_size), 0) AS BIGINT) FROM instances")?,
            })
        })
    }

    fn snapshot_into(&self, path: &Path) -> Result<()> {
        self.engine.snapshot_into(path)
    }

    fn conflicts(&self, sop_uid: Option<&str>) -> Result<Vec<ConflictRecord>> {
        self.engine.read(|db| {
            db.query_all(
                "SELECT c.pk, c.sop_uid, c.study_uid, c.series_uid, c.transfer_syntax, c.blob_path, c.blob_size,
                        c.blob_digest, c.dataset_offset, c.source_ae, c.detected_ms, i.blob_digest
                 FROM conflicts c LEFT JOIN instances i ON i.sop_uid = c.sop_uid
                 WHERE CAST(?1 AS TEXT) IS NULL OR c.sop_uid = ?1 ORDER BY c.pk",
                &[sop_uid.into()],
                |row| {
                    let digest = digest_array(&row.bytes(7)?);
                    Ok(ConflictRecord {
                        pk: row.int(0)?,
                        sop_uid: row.text(1)?,
                        study_uid: row.text(2)?,
                        series_uid: row.text(3)?,
                        transfer_syntax: row.text(4)?,
                        blob: BlobInfo { path: row.text(5)?, size: row.int(6)?.max(0) as u64, digest },
                        dataset_offset: row.int(8)?.max(0) as u64,
                        source_ae: row.text(9)?,
                        detected_ms: row.int(10)?,
                        digest: hex(&digest),
                        current_digest: row.opt_bytes(11)?.map(|bytes| hex(&bytes)),
                    })
                },
            )
        })
    }

    fn correct(&self, records: &[CorrectionRecord], event: &Event) -> Result<Vec<CorrectionRecord>> {
        self.engine.write(|tx| corrections::record_corrections(tx, records, event, now_ms()))
    }

    fn study_corrections(&self, study_uid: &str) -> Result<StudyCorrections> {
        self.engine.read(|db| corrections::study_corrections(db, study_uid))
    }

    fn patient_attributes(&self, identity: &str) -> Result<Option<Dataset>> {
        self.engine.read(|db| corrections::patient_attributes(db, identity))
    }

    fn merge_link(&self, identity: &str) -> Result<Option<String>> {
        self.engine.read(|db| Ok(corrections::merge_link(db, identity)?.map(|(target, _)| target)))
    }

    fn merged_into(&self, identity: &str) -> Result<Option<String>> {
        self.engine.read(|db| Ok(corrections::merged_into(db, identity)?.map(|link| link.target)))
    }

    fn studies_of_patient(&self, identity: &str) -> Result<Vec<(String, String)>> {
        self.engine.read(|db| corrections::studies_of_patient(db, identity))
    }

    fn declared_character_sets(&self, study_uid: &str) -> Result<Vec<(String, String)>> {
        self.engine.read(|db| corrections::declared_character_sets(db, study_uid))
    }

    fn all_corrections(&self) -> Result<Vec<CorrectionRecord>> {
        self.engine.read(corrections::all_registers)
    }

    fn latest_correction_clock(&self) -> Result<i64> {
        self.engine.read(corrections::latest_clock)
    }

    fn events_after(&self, after: i64, limit: usize) -> Result<Vec<StoredEvent>> {
        self.engine.read(|db| {
            db.query_all(
                "SELECT seq, at_ms, kind, actor, address, session, patient_id, study_uid, series_uid, sop_uid, detail
                 FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                &[after.into(), row_limit(limit).into()],
                |row| {
                    Ok(StoredEvent {
                        seq: row.int(0)?,
                        at_ms: row.int(1)?,
                        kind: row.text(2)?,
                        origin: Origin {
                            actor: row.text(3)?,
                            address: row.text(4)?,
                            session: row.text(5)?,
                            ..Origin::default()
                        },
                        patient_id: row.opt_text(6)?,
                        study_uid: row.opt_text(7)?,
                        series_uid: row.opt_text(8)?,
                        sop_uid: row.opt_text(9)?,
                        detail: serde_json::from_str(&row.text(10)?).unwrap_or(serde_json::Value::Null),
                    })
                },
            )
        })
    }

    fn create_user(&self, user: &NewUserRecord<'_>) -> Result<UserRecord> {
        self.engine.write(|tx| accounts::insert_user(tx, user))
    }

    fn create_first_user(&self, user: &NewUserRecord<'_>) -> Result<Option<UserRecord>> {
        self.engine.write(|tx| {
            if accounts::count_users(tx)? > 0 {
                return Ok(None);
            }
            accounts::insert_user(tx, user).map(Some)
        })
    }

    fn user(&self, name: &str) -> Result<Option<UserRecord>> {
        self.engine.read(|db| accounts::select_user(db, name))
    }

    fn users(&self) -> Result<Vec<UserRecord>> {
        self.engine.read(accounts::select_users)
    }

    fn update_user(&self, name: &str, change: UserChange<'_>) -> Result<bool> {
        self.engine.write(|tx| accounts::update_user(tx, name, change))
    }

    fn create_token(&self, token: &TokenRecord) -> Result<bool> {
        self.engine.write(|tx| accounts::insert_token(tx, token))
    }

    fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        self.engine.read(|db| accounts::select_token(db, id))
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>> {
        self.engine.read(accounts::select_tokens)
    }

    fn revoke_token(&self, id: &str, at_ms: i64) -> Result<bool> {
        self.engine.write(|tx| accounts::revoke_token(tx, id, at_ms))
    }

    fn migration_plan(&self, source: &str, studies: &[PlannedStudy]) -> Result<usize> {
        self.engine.write(|tx| migration::plan(tx, source, studies))
    }

    fn migration_claim(
        &self,
        source: &str,
        limit: usize,
        claimant: &Claimant<'_>,
        max_attempts: i64,
    ) -> Result<Vec<MigrationStudy>> {
        self.engine.write(|tx| migration::claim(tx, source, limit, claimant, max_attempts))
    }

    fn lease_acquire(&self, name: &str, holder: &str, now_ms: i64, ttl_ms: i64) -> Result<LeaseRecord> {
        self.engine.write(|tx| shared::acquire_lease(tx, name, holder, now_ms, ttl_ms))
    }

    fn lease_release(&self, name: &str, holder: &str) -> Result<bool> {
        self.engine.write(|tx| shared::release_lease(tx, name, holder))
    }

    fn leases(&self) -> Result<Vec<LeaseRecord>> {
        self.engine.read(shared::select_leases)
    }

    fn shared_aes(&self) -> Result<Vec<SharedAeRecord>> {
        self.engine.read(shared::select_shared_aes)
    }

    fn put_shared_ae(&self, ae: &SharedAeRecord) -> Result<bool> {
        self.engine.write(|tx| shared::upsert_shared_ae(tx, ae))
    }

    fn remove_shared_ae(&self, title: &str) -> Result<bool> {
        self.engine.write(|tx| shared::delete_shared_ae(tx, title))
    }

    fn migration_renew(&self, source: &str, node: &str, now_ms: i64) -> Result<usize> {
        self.engine.write(|tx| migration::renew(tx, source, node, now_ms))
    }

    fn migration_release(&self, source: &str, node: &str) -> Result<usize> {
        self.engine.write(|tx| migration::release(tx, source, node))
    }

    fn migration_update(&self, source: &str, study_uid: &str, update: &MigrationUpdate) -> Result<()> {
        self.engine.write(|tx| migration::update(tx, source, study_uid, update))
    }

    fn migration_reset(&self, source: &str, from: &[MigrationState], to: MigrationState) -> Result<usize> {
        self.engine.write(|tx| migration::reset(tx, source, from, to))
    }

    fn migration_counts(&self, source: &str) -> Result<MigrationCounts> {
        self.engine.read(|db| migration::counts(db, source))
    }

    fn migration_studies(
        &self,
        source: &str,
        states: Option<&[MigrationState]>,
        after_uid: &str,
        limit: usize,
    ) -> Result<Vec<MigrationStudy>> {
        self.engine.read(|db| migration::studies(db, source, states, after_uid, limit))
    }

    fn migration_discrepancies(&self, source: &str) -> Result<Vec<Discrepancy>> {
        self.engine.read(|db| migration::discrepancies(db, source))
    }

    fn held_versions(&self, scope: VersionScope<'_>, visit: &mut dyn FnMut(HeldVersion) -> bool) -> Result<()> {
        let (current_filter, conflict_filter, uid) = match scope {
            VersionScope::All => ("TRUE", "TRUE", None),
            VersionScope::Study(uid) => ("s.study_uid = ?1", "c.study_uid = ?1", Some(uid)),
            VersionScope::Instance(uid) => ("i.sop_uid = ?1", "c.sop_uid = ?1", Some(uid)),
        };
        let sql = format!(
            "SELECT {CURRENT_VERSION_COLUMNS} WHERE {current_filter}
             UNION ALL
             SELECT {CONFLICT_VERSION_COLUMNS} WHERE {conflict_filter}
             ORDER BY 1, 2, 10 DESC"
        );
        let params: Vec<db::Param<'_>> = uid.into_iter().map(Into::into).collect();
        self.engine.read(|db| db.query_each(&sql, &params, &mut |row| Ok(visit(held_version(row)?))))
    }

    fn undigested_versions(&self, after: &str, limit: usize) -> Result<Vec<HeldVersion>> {
        // One keyset query per table (each walks its blob_path index), merged
        // here: a UNION in SQL would be sorted whole for every page.
        self.engine.read(|db| {
            let mut found = Vec::new();
            for (columns, table) in [(CURRENT_VERSION_COLUMNS, "i"), (CONFLICT_VERSION_COLUMNS, "c")] {
                let rows = db.query_all(
                    &format!(
                        "SELECT {columns} WHERE {table}.blob_path > ?1 AND {table}.content_digest IS NULL
                         ORDER BY {table}.blob_path LIMIT ?2"
                    ),
                    &[after.into(), row_limit(limit).into()],
                    held_version,
                )?;
                found.extend(rows);
            }
            found.sort_by(|a, b| a.blob.path.cmp(&b.blob.path));
            found.truncate(limit);
            Ok(found)
        })
    }

    fn record_dataset_digests(&self, digests: &[(String, [u8; 32])]) -> Result<()> {
        self.engine.write(|tx| {
            for (path, digest) in digests {
                for table in ["instances", "conflicts"] {
                    tx.execute(
                        &format!(
                            "UPDATE {table} SET content_digest = ?2 WHERE blob_path = ?1 AND content_digest IS NULL"
                        ),
                        &[path.into(), digest[..].into()],
                    )?;
                }
            }
            Ok(())
        })
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

fn digest_column(row: &dyn Row, index: usize) -> Result<Option<[u8; 32]>> {
    let bytes = row.opt_bytes(index)?;
    Ok(bytes.and_then(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).ok()))
}

fn held_version(row: &dyn Row) -> Result<HeldVersion> {
    Ok(HeldVersion {
        study_uid: row.text(0)?,
        sop_uid: row.text(1)?,
        sop_class: row.text(2)?,
        transfer_syntax: row.text(3)?,
        blob: BlobInfo {
            path: row.text(4)?,
            size: row.int(5)?.max(0) as u64,
            digest: digest_column(row, 6)?.unwrap_or([0; 32]),
        },
        dataset_offset: row.int(7)?.max(0) as u64,
        dataset_digest: digest_column(row, 8)?,
        current: row.flag(9)?,
    })
}
