//! Writing to the catalog: recording instances (with the duplicate policy),
//! journal events, and removals.

use haneul_dicom::matching::{normalize_person_name, person_name_groups};
use haneul_dicom::Dataset;
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, OptionalExtension, Transaction};

use super::query::{stored_instance, INSTANCE_COLUMNS};
use crate::records::*;
use crate::{CatalogError, Result};

pub(super) fn encode_attrs(attrs: &Dataset) -> Vec<u8> {
    // Serialising an in-memory data set cannot fail; an empty blob would
    // decode as an empty data set, which is the safest fallback anyway.
    postcard::to_allocvec(attrs).unwrap_or_default()
}

pub(super) fn decode_attrs(bytes: &[u8], what: impl FnOnce() -> String) -> Result<Dataset> {
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

pub(super) fn insert_event(tx: &Transaction<'_>, event: &Event, at_ms: i64) -> Result<()> {
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

pub(super) fn hex(bytes: &[u8]) -> String {
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
    content_digest: Option<Vec<u8>>,
}

pub(super) fn commit_one(
    tx: &Transaction<'_>,
    item: &NewInstance,
    policy: DuplicatePolicy,
    at_ms: i64,
) -> Result<CommitOutcome> {
    let policy = item.duplicate_policy.unwrap_or(policy);
    let existing = tx
        .prepare_cached(
            "SELECT i.pk, se.series_uid, i.blob_digest, i.blob_path, i.blob_size, i.transfer_syntax, i.dataset_offset, i.received_ms,
                    i.content_digest
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
                content_digest: row.get(8)?,
            })
        })
        .optional()?;
    if let Some(existing) = existing {
        return commit_duplicate(tx, item, existing, policy, at_ms);
    }
    // A peer's copy of an instance removed here stays removed; a store from
    // anyone else is new and ends that.
    if policy == DuplicatePolicy::KeepBoth {
        let removed_here =
            tx.prepare_cached("SELECT 1 FROM removed_uids WHERE sop_uid = ?1")?.exists([&item.instance.sop_uid])?;
        if removed_here {
            insert_event(tx, &instance_event("replicated-after-removal", item), at_ms)?;
            return Ok(CommitOutcome::RemovedHere);
        }
    } else {
        tx.prepare_cached("DELETE FROM removed_uids WHERE sop_uid = ?1")?.execute([&item.instance.sop_uid])?;
    }

    let patient_pk = upsert_patient(tx, &item.patient, at_ms)?;
    let study_pk = upsert_study(tx, item, patient_pk, at_ms)?;
    let series_pk = upsert_series(tx, item, study_pk, at_ms)?;
    let instance = &item.instance;
    tx.prepare_cached(
        "INSERT INTO instances (series_pk, sop_uid, sop_class, instance_number, transfer_syntax, blob_path, blob_size,
                                blob_digest, dataset_offset, received_ms, source_ae, attrs, content_digest)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
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
        instance.content_digest.as_ref().map(|digest| &digest[..]),
    ])?;
    if !instance.blob_durable {
        tx.prepare_cached("INSERT OR IGNORE INTO unsettled (blob_path) VALUES (?1)")?.execute([&instance.blob.path])?;
    }
    // The study's SOP class set changes rarely; write it only then.
    let sop_classes: String =
        tx.prepare_cached("SELECT sop_classes FROM studies WHERE pk = ?1")?.query_row([study_pk], |row| row.get(0))?;
    if let Some(classes) = add_to_set(&sop_classes, &instance.sop_class) {
        tx.prepare_cached("UPDATE studies SET sop_classes = ?2 WHERE pk = ?1")?.execute(params![study_pk, classes])?;
    }
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
    // The same data set under another file meta group (sent by another
    // node, or by a modality to two nodes) is the same instance.
    let same_content = match (&existing.content_digest, &item.instance.content_digest) {
        (Some(existing), Some(new)) => existing.as_slice() == new.as_slice(),
        _ => false,
    };
    if same_content || existing.digest.as_slice() == item.instance.blob.digest.as_slice() {
        event.kind = "duplicate-identical".into();
        insert_event(tx, &event, at_ms)?;
        return Ok(CommitOutcome::AlreadyStored);
    }
    event.detail["existing_digest"] = existing_digest.into();
    event.detail["existing_path"] = existing.path.clone().into();
    let outcome = match policy {
        DuplicatePolicy::KeepBoth => {
            let content_digest = item.instance.content_digest.as_ref().map(|digest| &digest[..]);
            let known = tx
                .prepare_cached(
                    "SELECT 1 FROM conflicts WHERE sop_uid = ?1 AND (blob_digest = ?2 OR content_digest = ?3) LIMIT 1",
                )?
                .exists(params![item.instance.sop_uid, &item.instance.blob.digest[..], content_digest])?;
            let inserted = if known {
                0
            } else {
                tx.prepare_cached(
                    "INSERT INTO conflicts (sop_uid, study_uid, series_uid, transfer_syntax, blob_path, blob_size,
                                            blob_digest, dataset_offset, received_ms, source_ae, detected_ms,
                                            content_digest)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )?
                .execute(params![
                    item.instance.sop_uid,
                    item.study.study_uid,
                    item.series.series_uid,
                    item.instance.transfer_syntax,
                    item.instance.blob.path,
                    item.instance.blob.size as i64,
                    &item.instance.blob.digest[..],
                    item.instance.dataset_offset as i64,
                    item.instance.received_ms,
                    item.origin.actor,
                    at_ms,
                    content_digest,
                ])?
            };
            if inserted == 0 {
                event.kind = "conflict-known".into();
                insert_event(tx, &event, at_ms)?;
                return Ok(CommitOutcome::AlreadyStored);
            }
            // Ingest commits a conflicting version only once its blob is
            // durable, so it is never unsettled.
            event.kind = "replication-conflict".into();
            event.detail["digest"] = hex(&item.instance.blob.digest).into();
            let mut current_digest = [0u8; 32];
            if existing.digest.len() == 32 {
                current_digest.copy_from_slice(&existing.digest);
            }
            CommitOutcome::Conflict { current_digest }
        }
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

fn upsert_study(tx: &Transaction<'_>, item: &NewInstance, patient_pk: i64, at_ms: i64) -> Result<i64> {
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
        return Ok(pk);
    }
    tx.prepare_cached(
        "INSERT INTO studies (patient_pk, study_uid, study_date, study_time, accession, study_id, description,
                              referring_physician, attrs, created_ms, site)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
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
        item.origin.site,
    ])?;
    Ok(tx.last_insert_rowid())
}

fn upsert_series(tx: &Transaction<'_>, item: &NewInstance, study_pk: i64, at_ms: i64) -> Result<i64> {
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
        return Ok(pk);
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
    let series_pk = tx.last_insert_rowid();
    let modalities: String =
        tx.prepare_cached("SELECT modalities FROM studies WHERE pk = ?1")?.query_row([study_pk], |row| row.get(0))?;
    if let Some(modalities) = add_to_set(&modalities, &series.modality) {
        tx.prepare_cached("UPDATE studies SET modalities = ?2 WHERE pk = ?1")?
            .execute(params![study_pk, modalities])?;
    }
    Ok(series_pk)
}

/// Remove one instance, then the series, study and patient it leaves empty,
/// and recompute the study's summary sets.
pub(super) fn remove_one(tx: &Transaction<'_>, sop_uid: &str) -> Result<Option<StoredInstance>> {
    let found = tx
        .prepare_cached(&format!(
            "SELECT {INSTANCE_COLUMNS}, i.series_pk, se.study_pk, s.patient_pk FROM instances i
             JOIN series se ON se.pk = i.series_pk JOIN studies s ON s.pk = se.study_pk WHERE i.sop_uid = ?1"
        ))?
        .query_row([sop_uid], |row| {
            Ok((stored_instance(row)?, row.get::<_, i64>(11)?, row.get::<_, i64>(12)?, row.get::<_, i64>(13)?))
        })
        .optional()?;
    let Some((instance, series_pk, study_pk, patient_pk)) = found else {
        return Ok(None);
    };
    tx.prepare_cached("DELETE FROM instances WHERE pk = ?1")?.execute([instance.pk])?;
    tx.prepare_cached("DELETE FROM unsettled WHERE blob_path = ?1")?.execute([&instance.blob.path])?;
    let exists =
        |sql: &str, pk: i64| -> Result<bool> { Ok(tx.prepare_cached(sql)?.query_row([pk], |row| row.get(0))?) };
    if !exists("SELECT EXISTS (SELECT 1 FROM instances WHERE series_pk = ?1)", series_pk)? {
        tx.prepare_cached("DELETE FROM series WHERE pk = ?1")?.execute([series_pk])?;
    }
    if !exists("SELECT EXISTS (SELECT 1 FROM series WHERE study_pk = ?1)", study_pk)? {
        tx.prepare_cached("DELETE FROM studies WHERE pk = ?1")?.execute([study_pk])?;
    } else {
        let modalities = joined_distinct(
            tx,
            "SELECT DISTINCT modality FROM series WHERE study_pk = ?1 AND modality != '' ORDER BY pk",
            study_pk,
        )?;
        let classes = joined_distinct(
            tx,
            "SELECT DISTINCT i.sop_class FROM instances i JOIN series se ON se.pk = i.series_pk WHERE se.study_pk = ?1",
            study_pk,
        )?;
        tx.prepare_cached("UPDATE studies SET modalities = ?2, sop_classes = ?3 WHERE pk = ?1")?
            .execute(params![study_pk, modalities, classes])?;
    }
    if !exists("SELECT EXISTS (SELECT 1 FROM studies WHERE patient_pk = ?1)", patient_pk)? {
        tx.prepare_cached("DELETE FROM patients WHERE pk = ?1")?.execute([patient_pk])?;
    }
    Ok(Some(instance))
}

fn joined_distinct(tx: &Transaction<'_>, sql: &str, pk: i64) -> Result<String> {
    let mut statement = tx.prepare_cached(sql)?;
    let values = statement.query_map([pk], |row| row.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(values.join("\\"))
}
