//! The SQLite engine: one writer connection, a small pool of readers (WAL
//! mode lets them run beside the writer), commits durable at return
//! (`synchronous = FULL`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use haneul_dicom::levels::{computed, Level};
use haneul_dicom::matching::{normalize_person_name, person_name_groups, IndexHint, KeyMatch, Query};
use haneul_dicom::{tags, Dataset, Element, Tag, Value, VR};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};

use crate::records::*;
use crate::{Catalog, CatalogError, Result};

const SCHEMA_VERSION: i64 = 1;
const MAX_IDLE_READERS: usize = 8;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS patients (
    pk INTEGER PRIMARY KEY,
    identity TEXT NOT NULL UNIQUE,
    patient_id TEXT NOT NULL,
    issuer TEXT NOT NULL,
    name TEXT NOT NULL,
    name_alphabetic TEXT NOT NULL,
    name_ideographic TEXT NOT NULL,
    name_phonetic TEXT NOT NULL,
    birth_date TEXT NOT NULL,
    sex TEXT NOT NULL,
    num_studies INTEGER NOT NULL DEFAULT 0,
    num_series INTEGER NOT NULL DEFAULT 0,
    num_instances INTEGER NOT NULL DEFAULT 0,
    attrs BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS patients_patient_id ON patients(patient_id);
CREATE INDEX IF NOT EXISTS patients_name_alphabetic ON patients(name_alphabetic);
CREATE INDEX IF NOT EXISTS patients_name_ideographic ON patients(name_ideographic);
CREATE INDEX IF NOT EXISTS patients_name_phonetic ON patients(name_phonetic);
CREATE TABLE IF NOT EXISTS studies (
    pk INTEGER PRIMARY KEY,
    patient_pk INTEGER NOT NULL REFERENCES patients(pk),
    study_uid TEXT NOT NULL UNIQUE,
    study_date TEXT NOT NULL,
    study_time TEXT NOT NULL,
    accession TEXT NOT NULL,
    study_id TEXT NOT NULL,
    description TEXT NOT NULL,
    referring_physician TEXT NOT NULL,
    modalities TEXT NOT NULL DEFAULT '',
    sop_classes TEXT NOT NULL DEFAULT '',
    num_series INTEGER NOT NULL DEFAULT 0,
    num_instances INTEGER NOT NULL DEFAULT 0,
    attrs BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS studies_patient ON studies(patient_pk);
CREATE INDEX IF NOT EXISTS studies_date ON studies(study_date);
CREATE INDEX IF NOT EXISTS studies_accession ON studies(accession);
CREATE TABLE IF NOT EXISTS series (
    pk INTEGER PRIMARY KEY,
    study_pk INTEGER NOT NULL REFERENCES studies(pk),
    series_uid TEXT NOT NULL UNIQUE,
    modality TEXT NOT NULL,
    series_number INTEGER,
    description TEXT NOT NULL,
    body_part TEXT NOT NULL,
    num_instances INTEGER NOT NULL DEFAULT 0,
    attrs BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS series_study ON series(study_pk);
CREATE INDEX IF NOT EXISTS series_modality ON series(modality);
CREATE TABLE IF NOT EXISTS instances (
    pk INTEGER PRIMARY KEY,
    series_pk INTEGER NOT NULL REFERENCES series(pk),
    sop_uid TEXT NOT NULL UNIQUE,
    sop_class TEXT NOT NULL,
    instance_number INTEGER,
    transfer_syntax TEXT NOT NULL,
    blob_path TEXT NOT NULL UNIQUE,
    blob_size INTEGER NOT NULL,
    blob_digest BLOB NOT NULL,
    dataset_offset INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    source_ae TEXT NOT NULL,
    attrs BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_series ON instances(series_pk);
CREATE TABLE IF NOT EXISTS superseded (
    pk INTEGER PRIMARY KEY,
    sop_uid TEXT NOT NULL,
    transfer_syntax TEXT NOT NULL,
    blob_path TEXT NOT NULL UNIQUE,
    blob_size INTEGER NOT NULL,
    blob_digest BLOB NOT NULL,
    dataset_offset INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    superseded_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS superseded_sop ON superseded(sop_uid);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    address TEXT NOT NULL,
    session TEXT NOT NULL,
    patient_id TEXT,
    study_uid TEXT,
    series_uid TEXT,
    sop_uid TEXT,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_sop ON events(sop_uid);
CREATE INDEX IF NOT EXISTS events_study ON events(study_uid);
"#;

/// The SQLite catalog.
pub struct SqliteCatalog {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

fn now_ms() -> i64 {
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
        let version: i64 = writer.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(CatalogError::SchemaTooNew { found: version, supported: SCHEMA_VERSION });
        }
        writer.execute_batch(SCHEMA)?;
        writer.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(SqliteCatalog { path, writer: Mutex::new(writer), readers: Mutex::new(Vec::new()) })
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

fn encode_attrs(attrs: &Dataset) -> Vec<u8> {
    // Serialising an in-memory data set cannot fail; an empty blob would
    // decode as an empty data set, which is the safest fallback anyway.
    postcard::to_allocvec(attrs).unwrap_or_default()
}

fn decode_attrs(bytes: &[u8], what: impl FnOnce() -> String) -> Result<Dataset> {
    postcard::from_bytes(bytes).map_err(|source| CatalogError::CorruptAttributes { what: what(), source })
}

fn patient_identity(patient: &PatientFacts) -> String {
    if !patient.patient_id.is_empty() {
        return format!("{}\\{}", patient.patient_id, patient.issuer);
    }
    // Without a Patient ID, only identical demographics are the same patient.
    format!("\\{}\\{}\\{}", patient.issuer, normalize_person_name(&patient.name), patient.birth_date)
}

fn add_to_set(joined: &str, value: &str) -> Option<String> {
    if value.is_empty() || joined.split('\\').any(|existing| existing == value) {
        return None;
    }
    Some(if joined.is_empty() { value.to_string() } else { format!("{joined}\\{value}") })
}

fn event_params(event: &Event, at_ms: i64) -> [SqlValue; 10] {
    let text = |value: &Option<String>| value.clone().map(SqlValue::Text).unwrap_or(SqlValue::Null);
    [
        SqlValue::Integer(at_ms),
        SqlValue::Text(event.kind.clone()),
        SqlValue::Text(event.origin.actor.clone()),
        SqlValue::Text(event.origin.address.clone()),
        SqlValue::Text(event.origin.session.clone()),
        text(&event.patient_id),
        text(&event.study_uid),
        text(&event.series_uid),
        text(&event.sop_uid),
        SqlValue::Text(event.detail.to_string()),
    ]
}

fn insert_event(tx: &Transaction<'_>, event: &Event, at_ms: i64) -> Result<()> {
    let params = event_params(event, at_ms);
    tx.prepare_cached(
        "INSERT INTO events (at_ms, kind, actor, address, session, patient_id, study_uid, series_uid, sop_uid, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(rusqlite::params_from_iter(params.iter()))?;
    Ok(())
}

fn instance_event(kind: &str, item: &NewInstance) -> Event {
    Event {
        kind: kind.to_string(),
        origin: item.origin.clone(),
        patient_id: Some(item.patient.patient_id.clone()),
        study_uid: Some(item.study.study_uid.clone()),
        series_uid: Some(item.series.series_uid.clone()),
        sop_uid: Some(item.instance.sop_uid.clone()),
        detail: serde_json::json!({
            "path": item.instance.blob.path,
            "size": item.instance.blob.size,
            "digest": hex(&item.instance.blob.digest),
            "transfer_syntax": item.instance.transfer_syntax,
        }),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct ExistingInstance {
    pk: i64,
    series_uid: String,
    digest: Vec<u8>,
    path: String,
    size: i64,
    transfer_syntax: String,
    dataset_offset: i64,
    received_ms: i64,
}

fn commit_one(tx: &Transaction<'_>, item: &NewInstance, policy: DuplicatePolicy, at_ms: i64) -> Result<CommitOutcome> {
    let existing = tx
        .prepare_cached(
            "SELECT i.pk, se.series_uid, i.blob_digest, i.blob_path, i.blob_size, i.transfer_syntax, i.dataset_offset, i.received_ms
             FROM instances i JOIN series se ON se.pk = i.series_pk WHERE i.sop_uid = ?1",
        )?
        .query_row([&item.instance.sop_uid], |row| {
            Ok(ExistingInstance {
                pk: row.get(0)?,
                series_uid: row.get(1)?,
                digest: row.get(2)?,
                path: row.get(3)?,
                size: row.get(4)?,
                transfer_syntax: row.get(5)?,
                dataset_offset: row.get(6)?,
                received_ms: row.get(7)?,
            })
        })
        .optional()?;
    if let Some(existing) = existing {
        return commit_duplicate(tx, item, existing, policy, at_ms);
    }

    let patient_pk = upsert_patient(tx, &item.patient, at_ms)?;
    let (study_pk, study_created) = upsert_study(tx, item, patient_pk, at_ms)?;
    let (series_pk, series_created) = upsert_series(tx, item, study_pk, at_ms)?;
    let instance = &item.instance;
    tx.prepare_cached(
        "INSERT INTO instances (series_pk, sop_uid, sop_class, instance_number, transfer_syntax, blob_path, blob_size,
                                blob_digest, dataset_offset, received_ms, source_ae, attrs)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        series_pk,
        instance.sop_uid,
        instance.sop_class,
        instance.instance_number,
        instance.transfer_syntax,
        instance.blob.path,
        instance.blob.size as i64,
        &instance.blob.digest[..],
        instance.dataset_offset as i64,
        instance.received_ms,
        item.origin.actor,
        encode_attrs(&instance.attrs),
    ])?;
    // Keep the hierarchy's counters and study summaries current in the same transaction.
    let (study_owner, sop_classes): (i64, String) = tx
        .prepare_cached("SELECT patient_pk, sop_classes FROM studies WHERE pk = ?1")?
        .query_row([study_pk], |row| Ok((row.get(0)?, row.get(1)?)))?;
    tx.prepare_cached("UPDATE series SET num_instances = num_instances + 1 WHERE pk = ?1")?.execute([series_pk])?;
    tx.prepare_cached(
        "UPDATE studies SET num_instances = num_instances + 1, num_series = num_series + ?2, updated_ms = ?3 WHERE pk = ?1",
    )?
    .execute(params![study_pk, i64::from(series_created), at_ms])?;
    if let Some(classes) = add_to_set(&sop_classes, &instance.sop_class) {
        tx.prepare_cached("UPDATE studies SET sop_classes = ?2 WHERE pk = ?1")?.execute(params![study_pk, classes])?;
    }
    tx.prepare_cached(
        "UPDATE patients SET num_instances = num_instances + 1, num_series = num_series + ?2, num_studies = num_studies + ?3
         WHERE pk = ?1",
    )?
    .execute(params![study_owner, i64::from(series_created), i64::from(study_created)])?;
    insert_event(tx, &instance_event("instance-stored", item), at_ms)?;
    Ok(CommitOutcome::Stored)
}

fn commit_duplicate(
    tx: &Transaction<'_>,
    item: &NewInstance,
    existing: ExistingInstance,
    policy: DuplicatePolicy,
    at_ms: i64,
) -> Result<CommitOutcome> {
    let mut event = instance_event("duplicate", item);
    let existing_digest = hex(&existing.digest);
    if existing.digest.as_slice() == item.instance.blob.digest.as_slice() {
        event.kind = "duplicate-identical".into();
        insert_event(tx, &event, at_ms)?;
        return Ok(CommitOutcome::AlreadyStored);
    }
    event.detail["existing_digest"] = existing_digest.into();
    event.detail["existing_path"] = existing.path.clone().into();
    let outcome = match policy {
        DuplicatePolicy::KeepFirst => {
            event.kind = "duplicate-kept-first".into();
            CommitOutcome::DuplicateIgnored
        }
        DuplicatePolicy::Reject => {
            event.kind = "duplicate-rejected".into();
            CommitOutcome::DuplicateRejected {
                reason: "an instance with this SOP Instance UID is already stored".into(),
            }
        }
        DuplicatePolicy::Replace if existing.series_uid != item.series.series_uid => {
            event.kind = "duplicate-rejected".into();
            CommitOutcome::DuplicateRejected {
                reason: format!(
                    "stored copy belongs to series {}, not {}",
                    existing.series_uid, item.series.series_uid
                ),
            }
        }
        DuplicatePolicy::Replace => {
            tx.prepare_cached(
                "INSERT INTO superseded (sop_uid, transfer_syntax, blob_path, blob_size, blob_digest, dataset_offset,
                                         received_ms, superseded_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                item.instance.sop_uid,
                existing.transfer_syntax,
                existing.path,
                existing.size,
                existing.digest,
                existing.dataset_offset,
                existing.received_ms,
                at_ms,
            ])?;
            let instance = &item.instance;
            tx.prepare_cached(
                "UPDATE instances SET sop_class = ?2, instance_number = ?3, transfer_syntax = ?4, blob_path = ?5,
                        blob_size = ?6, blob_digest = ?7, dataset_offset = ?8, received_ms = ?9, source_ae = ?10, attrs = ?11
                 WHERE pk = ?1",
            )?
            .execute(params![
                existing.pk,
                instance.sop_class,
                instance.instance_number,
                instance.transfer_syntax,
                instance.blob.path,
                instance.blob.size as i64,
                &instance.blob.digest[..],
                instance.dataset_offset as i64,
                instance.received_ms,
                item.origin.actor,
                encode_attrs(&instance.attrs),
            ])?;
            event.kind = "instance-replaced".into();
            CommitOutcome::Replaced { superseded_path: existing.path }
        }
    };
    insert_event(tx, &event, at_ms)?;
    Ok(outcome)
}

fn upsert_patient(tx: &Transaction<'_>, patient: &PatientFacts, at_ms: i64) -> Result<i64> {
    let identity = patient_identity(patient);
    let found: Option<i64> = tx
        .prepare_cached("SELECT pk FROM patients WHERE identity = ?1")?
        .query_row([&identity], |row| row.get(0))
        .optional()?;
    if let Some(pk) = found {
        return Ok(pk);
    }
    let [alphabetic, ideographic, phonetic] = person_name_groups(&patient.name);
    tx.prepare_cached(
        "INSERT INTO patients (identity, patient_id, issuer, name, name_alphabetic, name_ideographic, name_phonetic,
                               birth_date, sex, attrs, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        identity,
        patient.patient_id,
        patient.issuer,
        patient.name,
        alphabetic,
        ideographic,
        phonetic,
        patient.birth_date,
        patient.sex,
        encode_attrs(&patient.attrs),
        at_ms,
    ])?;
    Ok(tx.last_insert_rowid())
}

fn upsert_study(tx: &Transaction<'_>, item: &NewInstance, patient_pk: i64, at_ms: i64) -> Result<(i64, bool)> {
    let study = &item.study;
    let found: Option<(i64, i64)> = tx
        .prepare_cached("SELECT pk, patient_pk FROM studies WHERE study_uid = ?1")?
        .query_row([&study.study_uid], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    if let Some((pk, owner)) = found {
        if owner != patient_pk {
            // The study stays with its first patient; the mismatch is journaled for the PACS team.
            let mut event = instance_event("patient-mismatch", item);
            event.detail["note"] = "study already belongs to another patient; instance filed under it".into();
            insert_event(tx, &event, at_ms)?;
        }
        return Ok((pk, false));
    }
    tx.prepare_cached(
        "INSERT INTO studies (patient_pk, study_uid, study_date, study_time, accession, study_id, description,
                              referring_physician, attrs, created_ms, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
    )?
    .execute(params![
        patient_pk,
        study.study_uid,
        study.study_date,
        study.study_time,
        study.accession,
        study.study_id,
        study.description,
        study.referring_physician,
        encode_attrs(&study.attrs),
        at_ms,
    ])?;
    Ok((tx.last_insert_rowid(), true))
}

fn upsert_series(tx: &Transaction<'_>, item: &NewInstance, study_pk: i64, at_ms: i64) -> Result<(i64, bool)> {
    let series = &item.series;
    let found: Option<(i64, i64)> = tx
        .prepare_cached("SELECT pk, study_pk FROM series WHERE series_uid = ?1")?
        .query_row([&series.series_uid], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    if let Some((pk, owner)) = found {
        if owner != study_pk {
            let mut event = instance_event("study-mismatch", item);
            event.detail["note"] = "series already belongs to another study; instance filed under it".into();
            insert_event(tx, &event, at_ms)?;
        }
        return Ok((pk, false));
    }
    tx.prepare_cached(
        "INSERT INTO series (study_pk, series_uid, modality, series_number, description, body_part, attrs, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        study_pk,
        series.series_uid,
        series.modality,
        series.series_number,
        series.description,
        series.body_part,
        encode_attrs(&series.attrs),
        at_ms,
    ])?;
    let modalities: String =
        tx.prepare_cached("SELECT modalities FROM studies WHERE pk = ?1")?.query_row([study_pk], |row| row.get(0))?;
    if let Some(modalities) = add_to_set(&modalities, &series.modality) {
        tx.prepare_cached("UPDATE studies SET modalities = ?2 WHERE pk = ?1")?
            .execute(params![study_pk, modalities])?;
    }
    Ok((tx.last_insert_rowid(), true))
}

/// SQL conditions derived from a query's constraints. They may only narrow
/// to a superset of the true matches; the shared matcher decides.
#[derive(Default)]
struct Narrowing {
    clauses: Vec<String>,
    params: Vec<SqlValue>,
}

impl Narrowing {
    fn param(&mut self, value: impl Into<String>) -> String {
        self.params.push(SqlValue::Text(value.into()));
        format!("?{}", self.params.len())
    }

    /// A condition on a text column for a key compared as plain text.
    fn text_column(&mut self, column: &str, key: &KeyMatch) {
        let clause = match key.matcher.hint() {
            Some(IndexHint::Equals(value)) => format!("{column} = {}", self.param(value)),
            Some(IndexHint::Pattern(pattern)) => format!("{column} GLOB {}", self.param(glob_escape(pattern))),
            Some(IndexHint::AnyOf(values)) => {
                let placeholders: Vec<String> = values.iter().map(|v| self.param(v.as_str())).collect();
                format!("{column} IN ({})", placeholders.join(", "))
            }
            Some(IndexHint::Between { lower, upper }) => {
                let mut parts = Vec::new();
                if let Some(lower) = lower {
                    parts.push(format!("{column} >= {}", self.param(lower)));
                }
                if let Some(upper) = upper {
                    parts.push(format!("{column} <= {}", self.param(upper)));
                }
                if parts.is_empty() {
                    return;
                }
                parts.join(" AND ")
            }
            None => return,
        };
        self.clauses.push(clause);
    }

    /// Person names: normalised component-group columns, as the matcher compares them.
    fn person_name(&mut self, alias: &str, key: &KeyMatch) {
        let pattern = match key.matcher.hint() {
            Some(IndexHint::Equals(value) | IndexHint::Pattern(value)) => normalize_person_name(value),
            _ => return,
        };
        let columns =
            [format!("{alias}.name_alphabetic"), format!("{alias}.name_ideographic"), format!("{alias}.name_phonetic")];
        if !pattern.contains('=') {
            let param = self.param(glob_escape(&pattern));
            let any: Vec<String> = columns.iter().map(|column| format!("{column} GLOB {param}")).collect();
            self.clauses.push(format!("({})", any.join(" OR ")));
            return;
        }
        for (column, group) in columns.iter().zip(pattern.split('=')) {
            if !group.is_empty() {
                let clause = format!("{column} GLOB {}", self.param(glob_escape(group)));
                self.clauses.push(clause);
            }
        }
    }

    fn where_clause(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.clauses.join(" AND "))
        }
    }
}

/// Escape GLOB's character classes; `*` and `?` mean in GLOB what they mean in DICOM.
fn glob_escape(pattern: &str) -> String {
    pattern.replace('[', "[[]")
}

/// `available` is the deepest level joined in the SQL, so whose columns exist.
fn narrowing_for(query: &Query, available: Level) -> Narrowing {
    let mut narrowing = Narrowing::default();
    for key in &query.constraints {
        let tag = key.tag;
        match tag {
            t if t == tags::PATIENT_NAME => narrowing.person_name("p", key),
            t if t == tags::PATIENT_ID => narrowing.text_column("p.patient_id", key),
            t if t == tags::PATIENT_BIRTH_DATE => narrowing.text_column("p.birth_date", key),
            t if t == tags::PATIENT_SEX => narrowing.text_column("p.sex", key),
            t if t == tags::STUDY_INSTANCE_UID && available >= Level::Study => {
                narrowing.text_column("s.study_uid", key)
            }
            t if t == tags::STUDY_DATE && available >= Level::Study => narrowing.text_column("s.study_date", key),
            t if t == tags::ACCESSION_NUMBER && available >= Level::Study => narrowing.text_column("s.accession", key),
            t if t == tags::STUDY_ID && available >= Level::Study => narrowing.text_column("s.study_id", key),
            t if t == computed::MODALITIES_IN_STUDY && available >= Level::Study => {
                let mut inner = Narrowing { clauses: Vec::new(), params: std::mem::take(&mut narrowing.params) };
                inner.text_column("m.modality", key);
                narrowing.params = inner.params;
                if let Some(clause) = inner.clauses.pop() {
                    narrowing
                        .clauses
                        .push(format!("EXISTS (SELECT 1 FROM series m WHERE m.study_pk = s.pk AND {clause})"));
                }
            }
            t if t == tags::SERIES_INSTANCE_UID && available >= Level::Series => {
                narrowing.text_column("se.series_uid", key)
            }
            t if t == tags::MODALITY && available >= Level::Series => narrowing.text_column("se.modality", key),
            t if t == tags::SOP_INSTANCE_UID && available == Level::Image => narrowing.text_column("i.sop_uid", key),
            t if t == tags::SOP_CLASS_UID && available == Level::Image => narrowing.text_column("i.sop_class", key),
            _ => {}
        }
    }
    narrowing
}

const PATIENT_COLUMNS: &str = "p.pk, p.attrs, p.num_studies, p.num_series, p.num_instances";
const STUDY_COLUMNS: &str = "s.pk, s.attrs, s.num_series, s.num_instances, s.modalities, s.sop_classes";
const SERIES_COLUMNS: &str = "se.pk, se.attrs, se.num_instances";
const INSTANCE_COLUMNS: &str =
    "i.pk, i.sop_uid, i.sop_class, i.transfer_syntax, i.blob_path, i.blob_size, i.blob_digest, i.dataset_offset, s.study_uid, se.series_uid";

fn select_for(level: Level, columns: &str, narrowing: &Narrowing) -> String {
    let from = match level {
        Level::Patient => "patients p",
        Level::Study => "studies s JOIN patients p ON p.pk = s.patient_pk",
        Level::Series => "series se JOIN studies s ON s.pk = se.study_pk JOIN patients p ON p.pk = s.patient_pk",
        Level::Image => {
            "instances i JOIN series se ON se.pk = i.series_pk JOIN studies s ON s.pk = se.study_pk \
             JOIN patients p ON p.pk = s.patient_pk"
        }
    };
    let order = match level {
        Level::Patient => "p.pk",
        Level::Study => "s.pk",
        Level::Series => "se.pk",
        Level::Image => "i.pk",
    };
    format!("SELECT {columns} FROM {from} {} ORDER BY {order}", narrowing.where_clause())
}

fn count_element(tag: Tag, count: i64) -> Element {
    Element::new(tag, VR::IS, Value::Strings(vec![count.to_string()]))
}

fn set_element(tag: Tag, vr: VR, joined: &str) -> Element {
    if joined.is_empty() {
        return Element::empty(tag, vr);
    }
    Element::new(tag, vr, Value::Strings(joined.split('\\').map(str::to_string).collect()))
}

fn merge_into(target: &mut Dataset, source: &Dataset) {
    for element in source.iter() {
        target.put(element.clone());
    }
}

/// Decoded level attributes, cached per query since many rows share parents.
#[derive(Default)]
struct AttrCache {
    by_level_pk: HashMap<(u8, i64), Dataset>,
}

impl AttrCache {
    fn get(&mut self, level: u8, pk: i64, bytes: &[u8]) -> Result<&Dataset> {
        if !self.by_level_pk.contains_key(&(level, pk)) {
            let decoded = decode_attrs(bytes, || format!("level {level} row {pk}"))?;
            if self.by_level_pk.len() > 10_000 {
                self.by_level_pk.clear();
            }
            self.by_level_pk.insert((level, pk), decoded);
        }
        Ok(&self.by_level_pk[&(level, pk)])
    }
}

/// Build the merged view of one result row. The view columns start at
/// `offset` and follow [`view_columns`]: patient, then study, series, instance.
fn row_to_view(row: &rusqlite::Row<'_>, offset: usize, level: Level, cache: &mut AttrCache) -> Result<Dataset> {
    let get_i64 = |index: usize| row.get::<_, i64>(index + offset);
    let get_bytes = |index: usize| row.get::<_, Vec<u8>>(index + offset);
    let get_text = |index: usize| row.get::<_, String>(index + offset);
    let mut view = Dataset::new();
    let patient_pk = get_i64(0)?;
    merge_into(&mut view, cache.get(0, patient_pk, &get_bytes(1)?)?);
    view.put(count_element(computed::NUMBER_OF_PATIENT_RELATED_STUDIES, get_i64(2)?));
    view.put(count_element(computed::NUMBER_OF_PATIENT_RELATED_SERIES, get_i64(3)?));
    view.put(count_element(computed::NUMBER_OF_PATIENT_RELATED_INSTANCES, get_i64(4)?));
    if level == Level::Patient {
        return Ok(view);
    }
    let study_pk = get_i64(5)?;
    merge_into(&mut view, cache.get(1, study_pk, &get_bytes(6)?)?);
    view.put(count_element(computed::NUMBER_OF_STUDY_RELATED_SERIES, get_i64(7)?));
    view.put(count_element(computed::NUMBER_OF_STUDY_RELATED_INSTANCES, get_i64(8)?));
    view.put(set_element(computed::MODALITIES_IN_STUDY, VR::CS, &get_text(9)?));
    view.put(set_element(computed::SOP_CLASSES_IN_STUDY, VR::UI, &get_text(10)?));
    if level == Level::Study {
        return Ok(view);
    }
    let series_pk = get_i64(11)?;
    merge_into(&mut view, cache.get(2, series_pk, &get_bytes(12)?)?);
    view.put(count_element(computed::NUMBER_OF_SERIES_RELATED_INSTANCES, get_i64(13)?));
    if level == Level::Series {
        return Ok(view);
    }
    let instance_pk = get_i64(14)?;
    let instance = decode_attrs(&get_bytes(15)?, || format!("instance row {instance_pk}"))?;
    merge_into(&mut view, &instance);
    Ok(view)
}

fn view_columns(level: Level) -> String {
    let mut columns = vec![PATIENT_COLUMNS];
    if level >= Level::Study {
        columns.push(STUDY_COLUMNS);
    }
    if level >= Level::Series {
        columns.push(SERIES_COLUMNS);
    }
    if level == Level::Image {
        columns.push("i.pk, i.attrs");
    }
    columns.join(", ")
}

fn stored_instance(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredInstance> {
    let digest: Vec<u8> = row.get(6)?;
    let mut digest_array = [0u8; 32];
    if digest.len() == 32 {
        digest_array.copy_from_slice(&digest);
    }
    Ok(StoredInstance {
        pk: row.get(0)?,
        sop_uid: row.get(1)?,
        sop_class: row.get(2)?,
        transfer_syntax: row.get(3)?,
        blob: BlobInfo { path: row.get(4)?, size: row.get::<_, i64>(5)? as u64, digest: digest_array },
        dataset_offset: row.get::<_, i64>(7)? as u64,
        study_uid: row.get(8)?,
        series_uid: row.get(9)?,
    })
}

impl Catalog for SqliteCatalog {
    fn commit_instances(
        &self,
        batch: &[NewInstance],
        policy: DuplicatePolicy,
        events: &[Event],
        scan_from: &str,
    ) -> Result<Vec<CommitOutcome>> {
        let mut connection = lock(&self.writer);
        let tx = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let at_ms = now_ms();
        let mut outcomes = Vec::with_capacity(batch.len());
        for item in batch {
            outcomes.push(commit_one(&tx, item, policy, at_ms)?);
        }
        for event in events {
            insert_event(&tx, event, at_ms)?;
        }
        tx.prepare_cached("INSERT INTO settings (key, value) VALUES ('recovery_scan_from', ?1) ON CONFLICT(key) DO UPDATE SET value = ?1")?
            .execute([scan_from])?;
        tx.commit()?;
        Ok(outcomes)
    }

    fn append_events(&self, events: &[Event]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut connection = lock(&self.writer);
        let tx = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let at_ms = now_ms();
        for event in events {
            insert_event(&tx, event, at_ms)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn find(&self, query: &Query, visit: &mut dyn FnMut(Dataset) -> bool) -> Result<()> {
        let narrowing = narrowing_for(query, query.level);
        let sql = select_for(query.level, &view_columns(query.level), &narrowing);
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
        let columns = format!("{INSTANCE_COLUMNS}, {}", view_columns(query.level));
        let sql = select_for(Level::Image, &columns, &narrowing);
        let params = &narrowing.params;
        self.with_reader(|connection| {
            let mut statement = connection.prepare_cached(&sql)?;
            let mut rows = statement.query(rusqlite::params_from_iter(params.iter()))?;
            let mut cache = AttrCache::default();
            let mut found = Vec::new();
            while let Some(row) = rows.next()? {
                let view = row_to_view(row, 10, query.level, &mut cache)?;
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
            for table in ["instances", "superseded"] {
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
                    origin: Origin { actor: row.get(3)?, address: row.get(4)?, session: row.get(5)? },
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
}
