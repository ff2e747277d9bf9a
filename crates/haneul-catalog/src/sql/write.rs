//! Writing to the catalog: recording instances (with the duplicate policy),
//! journal events, and removals.

use haneul_dicom::matching::person_name_groups;
use haneul_dicom::Dataset;

use super::corrections::{
    apply_registers, can_carry, declared_character_set, follow_registers, merged_into, note_merge_not_followed,
    record_corrections, study_was_moved,
};
use super::db::{Db, Param};
use super::query::{stored_instance, INSTANCE_COLUMNS, INSTANCE_COLUMN_COUNT};
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

fn add_to_set(joined: &str, value: &str) -> Option<String> {
    if value.is_empty() || joined.split('\\').any(|existing| existing == value) {
        return None;
    }
    Some(if joined.is_empty() { value.to_string() } else { format!("{joined}\\{value}") })
}

pub(super) fn insert_event(tx: &mut dyn Db, event: &Event, at_ms: i64) -> Result<()> {
    let detail = event.detail.to_string();
    tx.execute(
        "INSERT INTO events (at_ms, kind, actor, address, session, patient_id, study_uid, series_uid, sop_uid, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        &[
            at_ms.into(),
            (&event.kind).into(),
            (&event.origin.actor).into(),
            (&event.origin.address).into(),
            (&event.origin.session).into(),
            event.patient_id.as_ref().into(),
            event.study_uid.as_ref().into(),
            event.series_uid.as_ref().into(),
            event.sop_uid.as_ref().into(),
            (&detail).into(),
        ],
    )?;
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

/// What committing a new instance needs to know of the rows it joins, read
/// in one statement: on PostgreSQL each statement is a round trip, which
/// costs more than the lookups themselves.
struct Known {
    /// An instance with this SOP Instance UID is held.
    instance_held: bool,
    /// This SOP Instance UID was deliberately removed here.
    removed_here: bool,
    patient_pk: Option<i64>,
    study: Option<Parented>,
    series: Option<Parented>,
}

/// A study or series row held: its key, its parent's, and for a study its SOP classes.
struct Parented {
    pk: i64,
    parent_pk: i64,
    sop_classes: String,
}

impl Known {
    fn look_up(tx: &mut dyn Db, item: &NewInstance) -> Result<Known> {
        let identity = patient_identity(&item.patient);
        tx.query_one(
            "SELECT EXISTS (SELECT 1 FROM instances WHERE sop_uid = ?1),
                    EXISTS (SELECT 1 FROM removed_uids WHERE sop_uid = ?1),
                    (SELECT pk FROM patients WHERE identity = ?2),
                    (SELECT pk FROM studies WHERE study_uid = ?3),
                    (SELECT patient_pk FROM studies WHERE study_uid = ?3),
                    (SELECT sop_classes FROM studies WHERE study_uid = ?3),
                    (SELECT pk FROM series WHERE series_uid = ?4),
                    (SELECT study_pk FROM series WHERE series_uid = ?4)",
            &[
                (&item.instance.sop_uid).into(),
                (&identity).into(),
                (&item.study.study_uid).into(),
                (&item.series.series_uid).into(),
            ],
            |row| {
                let parented = |pk: Option<i64>, parent: Option<i64>, sop_classes: Option<String>| {
                    Some(Parented { pk: pk?, parent_pk: parent?, sop_classes: sop_classes.unwrap_or_default() })
                };
                Ok(Known {
                    instance_held: row.flag(0)?,
                    removed_here: row.flag(1)?,
                    patient_pk: row.opt_int(2)?,
                    study: parented(row.opt_int(3)?, row.opt_int(4)?, row.opt_text(5)?),
                    series: parented(row.opt_int(6)?, row.opt_int(7)?, None),
                })
            },
        )
    }
}

fn existing_instance(tx: &mut dyn Db, sop_uid: &str) -> Result<Option<ExistingInstance>> {
    tx.query_opt(
        "SELECT i.pk, se.series_uid, i.blob_digest, i.blob_path, i.blob_size, i.transfer_syntax, i.dataset_offset,
                i.received_ms, i.content_digest
         FROM instances i JOIN series se ON se.pk = i.series_pk WHERE i.sop_uid = ?1",
        &[sop_uid.into()],
        |row| {
            Ok(ExistingInstance {
                pk: row.int(0)?,
                series_uid: row.text(1)?,
                digest: row.bytes(2)?,
                path: row.text(3)?,
                size: row.int(4)?,
                transfer_syntax: row.text(5)?,
                dataset_offset: row.int(6)?,
                received_ms: row.int(7)?,
                content_digest: row.opt_bytes(8)?,
            })
        },
    )
}

/// Blobs forgotten per statement by [`forget_settled`].
const SETTLED_PER_STATEMENT: usize = 100;

/// Forget unsettled blobs now durable, many per statement (one round trip
/// each on PostgreSQL).
pub(super) fn forget_settled(tx: &mut dyn Db, paths: &[String]) -> Result<()> {
    for chunk in paths.chunks(SETTLED_PER_STATEMENT) {
        let placeholders: Vec<String> = (1..=chunk.len()).map(|number| format!("?{number}")).collect();
        let params: Vec<Param<'_>> = chunk.iter().map(|path| path.into()).collect();
        tx.execute(&format!("DELETE FROM unsettled WHERE blob_path IN ({})", placeholders.join(", ")), &params)?;
    }
    Ok(())
}

pub(super) fn commit_one(
    tx: &mut dyn Db,
    item: &NewInstance,
    policy: DuplicatePolicy,
    at_ms: i64,
) -> Result<CommitOutcome> {
    let policy = item.duplicate_policy.unwrap_or(policy);
    let known = Known::look_up(tx, item)?;
    if known.instance_held {
        if let Some(existing) = existing_instance(tx, &item.instance.sop_uid)? {
            return commit_duplicate(tx, item, existing, policy, at_ms);
        }
    }
    // A peer's copy of an instance removed here stays removed; a store from
    // anyone else is new and ends that.
    if known.removed_here {
        if policy == DuplicatePolicy::KeepBoth {
            insert_event(tx, &instance_event("replicated-after-removal", item), at_ms)?;
            return Ok(CommitOutcome::RemovedHere);
        }
        tx.execute("DELETE FROM removed_uids WHERE sop_uid = ?1", &[(&item.instance.sop_uid).into()])?;
    }

    // A study held stays with its patient (a study moved to another patient
    // included): no patient row is made for what a later instance names.
    let (study_pk, sop_classes) = match known.study {
        Some(study) => {
            // The files of a study moved to another patient name the one it left, which is gone: expected,
            // not noted. A patient held that is not the study's is.
            let differs = match known.patient_pk {
                Some(pk) => pk != study.parent_pk,
                None => !study_was_moved(tx, &item.study.study_uid, false)?,
            };
            note_other_parent(tx, item, differs, STUDY_OF_ANOTHER_PATIENT, at_ms)?;
            (study.pk, study.sop_classes)
        }
        None => (insert_study_following_merges(tx, item, known.patient_pk, at_ms)?, String::new()),
    };
    let series_pk = match known.series {
        Some(series) => {
            note_other_parent(tx, item, series.parent_pk != study_pk, SERIES_OF_ANOTHER_STUDY, at_ms)?;
            series.pk
        }
        None => insert_series(tx, item, study_pk, at_ms)?,
    };
    let instance = &item.instance;
    let attrs = encode_attrs(&instance.attrs);
    tx.execute(
        "INSERT INTO instances (series_pk, sop_uid, sop_class, instance_number, transfer_syntax, blob_path, blob_size,
                                blob_digest, dataset_offset, received_ms, source_ae, attrs, content_digest)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        &[
            series_pk.into(),
            (&instance.sop_uid).into(),
            (&instance.sop_class).into(),
            instance.instance_number.into(),
            (&instance.transfer_syntax).into(),
            (&instance.blob.path).into(),
            (instance.blob.size as i64).into(),
            instance.blob.digest[..].into(),
            (instance.dataset_offset as i64).into(),
            instance.received_ms.into(),
            (&item.origin.actor).into(),
            attrs[..].into(),
            instance.content_digest.as_ref().map(|digest| &digest[..]).into(),
        ],
    )?;
    if !instance.blob_durable {
        tx.execute(
            "INSERT INTO unsettled (blob_path, write_ahead) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            &[(&instance.blob.path).into(), instance.write_ahead.as_deref().into()],
        )?;
    }
    // The study's SOP class set changes rarely; write it only then.
    if let Some(classes) = add_to_set(&sop_classes, &instance.sop_class) {
        tx.execute("UPDATE studies SET sop_classes = ?2 WHERE pk = ?1", &[study_pk.into(), (&classes).into()])?;
    }
    insert_event(tx, &instance_event("instance-stored", item), at_ms)?;
    Ok(CommitOutcome::Stored)
}

fn commit_duplicate(
    tx: &mut dyn Db,
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
            let known = tx.exists(
                "SELECT 1 FROM conflicts WHERE sop_uid = ?1 AND (blob_digest = ?2 OR content_digest = ?3) LIMIT 1",
                &[(&item.instance.sop_uid).into(), item.instance.blob.digest[..].into(), content_digest.into()],
            )?;
            let inserted = if known {
                0
            } else {
                tx.execute(
                    "INSERT INTO conflicts (sop_uid, study_uid, series_uid, transfer_syntax, blob_path, blob_size,
                                            blob_digest, dataset_offset, received_ms, source_ae, detected_ms,
                                            content_digest)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                    &[
                        (&item.instance.sop_uid).into(),
                        (&item.study.study_uid).into(),
                        (&item.series.series_uid).into(),
                        (&item.instance.transfer_syntax).into(),
                        (&item.instance.blob.path).into(),
                        (item.instance.blob.size as i64).into(),
                        item.instance.blob.digest[..].into(),
                        (item.instance.dataset_offset as i64).into(),
                        item.instance.received_ms.into(),
                        (&item.origin.actor).into(),
                        at_ms.into(),
                        content_digest.into(),
                    ],
                )?
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
            tx.execute(
                "INSERT INTO superseded (sop_uid, transfer_syntax, blob_path, blob_size, blob_digest, dataset_offset,
                                         received_ms, superseded_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                &[
                    (&item.instance.sop_uid).into(),
                    (&existing.transfer_syntax).into(),
                    (&existing.path).into(),
                    existing.size.into(),
                    existing.digest[..].into(),
                    existing.dataset_offset.into(),
                    existing.received_ms.into(),
                    at_ms.into(),
                ],
            )?;
            let instance = &item.instance;
            let attrs = encode_attrs(&instance.attrs);
            tx.execute(
                "UPDATE instances SET sop_class = ?2, instance_number = ?3, transfer_syntax = ?4, blob_path = ?5,
                        blob_size = ?6, blob_digest = ?7, dataset_offset = ?8, received_ms = ?9, source_ae = ?10, attrs = ?11
                 WHERE pk = ?1",
                &[
                    existing.pk.into(),
                    (&instance.sop_class).into(),
                    instance.instance_number.into(),
                    (&instance.transfer_syntax).into(),
                    (&instance.blob.path).into(),
                    (instance.blob.size as i64).into(),
                    instance.blob.digest[..].into(),
                    (instance.dataset_offset as i64).into(),
                    instance.received_ms.into(),
                    (&item.origin.actor).into(),
                    attrs[..].into(),
                ],
            )?;
            event.kind = "instance-replaced".into();
            CommitOutcome::Replaced { superseded_path: existing.path }
        }
    };
    insert_event(tx, &event, at_ms)?;
    Ok(outcome)
}

/// A new study, filed under its patient, or, when that patient record was
/// merged into another, under that one: moved there at once by the study
/// registers the merge link makes (the same on every node). A study whose
/// character set cannot carry the other record stays where its files say,
/// noted in the journal; one a person moved already (a peer's registers,
/// arrived first) goes where they say.
fn insert_study_following_merges(
    tx: &mut dyn Db,
    item: &NewInstance,
    patient_pk: Option<i64>,
    at_ms: i64,
) -> Result<i64> {
    let identity = patient_identity(&item.patient);
    let study_uid = &item.study.study_uid;
    // Not merged (nearly every study): one lookup of the identity's registers, nothing more.
    let link = match merged_into(tx, &identity)? {
        None => None,
        Some(_) if study_was_moved(tx, study_uid, true)? => None,
        Some(link) if can_carry(tx, &link.target, &[declared_character_set(&item.instance.attrs)])? => Some(link),
        Some(_) => {
            note_merge_not_followed(tx, &identity, study_uid, &item.origin, at_ms)?;
            None
        }
    };
    let target_pk = match &link {
        Some(link) => {
            tx.query_opt("SELECT pk FROM patients WHERE identity = ?1", &[(&link.target).into()], |row| row.int(0))?
        }
        None => None,
    };
    let patient_pk = match target_pk.or(patient_pk) {
        Some(pk) => pk,
        None => insert_patient(tx, &item.patient, at_ms)?,
    };
    let study_pk = insert_study(tx, item, patient_pk, at_ms)?;
    if let Some(link) = link {
        let mut event = Event::new(CORRECTED, &item.origin).with_detail(serde_json::json!({
            "reason": link.via.reason,
            "note": "a study of a merged patient record filed under the record it was merged into",
        }));
        event.patient_id = Some(item.patient.patient_id.clone());
        event.study_uid = Some(study_uid.clone());
        record_corrections(tx, &follow_registers(study_uid, &link), &event, at_ms)?;
    }
    Ok(study_pk)
}

fn insert_patient(tx: &mut dyn Db, patient: &PatientFacts, at_ms: i64) -> Result<i64> {
    let identity = patient_identity(patient);
    let [alphabetic, ideographic, phonetic] = person_name_groups(&patient.name);
    let attrs = encode_attrs(&patient.attrs);
    let pk = tx.query_one(
        "INSERT INTO patients (identity, patient_id, issuer, name, name_alphabetic, name_ideographic, name_phonetic,
                               birth_date, sex, attrs, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) RETURNING pk",
        &[
            (&identity).into(),
            (&patient.patient_id).into(),
            (&patient.issuer).into(),
            (&patient.name).into(),
            (&alphabetic).into(),
            (&ideographic).into(),
            (&phonetic).into(),
            (&patient.birth_date).into(),
            (&patient.sex).into(),
            attrs[..].into(),
            at_ms.into(),
        ],
        |row| row.int(0),
    )?;
    // Corrections made before the patient was stored here (a peer's, or made before a removal) apply at once.
    apply_registers(tx, CorrectionLevel::Patient, &identity, pk)?;
    Ok(pk)
}

/// The journal event and its note when a study or series held belongs to
/// another parent than the new instance says.
const STUDY_OF_ANOTHER_PATIENT: (&str, &str) =
    ("patient-mismatch", "study already belongs to another patient; instance filed under it");
const SERIES_OF_ANOTHER_STUDY: (&str, &str) =
    ("study-mismatch", "series already belongs to another study; instance filed under it");

/// A study or series stays with its first parent; a different one is
/// journaled for the PACS team.
fn note_other_parent(
    tx: &mut dyn Db,
    item: &NewInstance,
    differs: bool,
    (kind, note): (&str, &str),
    at_ms: i64,
) -> Result<()> {
    if !differs {
        return Ok(());
    }
    let mut event = instance_event(kind, item);
    event.detail["note"] = note.into();
    insert_event(tx, &event, at_ms)
}

fn insert_study(tx: &mut dyn Db, item: &NewInstance, patient_pk: i64, at_ms: i64) -> Result<i64> {
    let study = &item.study;
    let attrs = encode_attrs(&study.attrs);
    let pk = tx.query_one(
        "INSERT INTO studies (patient_pk, study_uid, study_date, study_time, accession, study_id, description,
                              referring_physician, attrs, created_ms, site)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) RETURNING pk",
        &[
            patient_pk.into(),
            (&study.study_uid).into(),
            (&study.study_date).into(),
            (&study.study_time).into(),
            (&study.accession).into(),
            (&study.study_id).into(),
            (&study.description).into(),
            (&study.referring_physician).into(),
            attrs[..].into(),
            at_ms.into(),
            (&item.origin.site).into(),
        ],
        |row| row.int(0),
    )?;
    apply_registers(tx, CorrectionLevel::Study, &study.study_uid, pk)?;
    Ok(pk)
}

fn insert_series(tx: &mut dyn Db, item: &NewInstance, study_pk: i64, at_ms: i64) -> Result<i64> {
    let series = &item.series;
    let attrs = encode_attrs(&series.attrs);
    let series_pk = tx.query_one(
        "INSERT INTO series (study_pk, series_uid, modality, series_number, description, body_part, attrs, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING pk",
        &[
            study_pk.into(),
            (&series.series_uid).into(),
            (&series.modality).into(),
            series.series_number.into(),
            (&series.description).into(),
            (&series.body_part).into(),
            attrs[..].into(),
            at_ms.into(),
        ],
        |row| row.int(0),
    )?;
    let modalities =
        tx.query_one("SELECT modalities FROM studies WHERE pk = ?1", &[study_pk.into()], |row| row.text(0))?;
    if let Some(modalities) = add_to_set(&modalities, &series.modality) {
        tx.execute("UPDATE studies SET modalities = ?2 WHERE pk = ?1", &[study_pk.into(), (&modalities).into()])?;
    }
    apply_registers(tx, CorrectionLevel::Series, &series.series_uid, series_pk)?;
    Ok(series_pk)
}

/// Remove one instance, then the series, study and patient it leaves empty,
/// and recompute the study's summary sets.
pub(super) fn remove_one(tx: &mut dyn Db, sop_uid: &str) -> Result<Option<StoredInstance>> {
    let found = tx.query_opt(
        &format!(
            "SELECT {INSTANCE_COLUMNS}, i.series_pk, se.study_pk, s.patient_pk FROM instances i
             JOIN series se ON se.pk = i.series_pk JOIN studies s ON s.pk = se.study_pk WHERE i.sop_uid = ?1"
        ),
        &[sop_uid.into()],
        |row| {
            let at = INSTANCE_COLUMN_COUNT;
            Ok((stored_instance(row)?, row.int(at)?, row.int(at + 1)?, row.int(at + 2)?))
        },
    )?;
    let Some((instance, series_pk, study_pk, patient_pk)) = found else {
        return Ok(None);
    };
    tx.execute("DELETE FROM instances WHERE pk = ?1", &[instance.pk.into()])?;
    tx.execute("DELETE FROM unsettled WHERE blob_path = ?1", &[(&instance.blob.path).into()])?;
    if !tx.exists("SELECT 1 FROM instances WHERE series_pk = ?1 LIMIT 1", &[series_pk.into()])? {
        tx.execute("DELETE FROM series WHERE pk = ?1", &[series_pk.into()])?;
    }
    if !tx.exists("SELECT 1 FROM series WHERE study_pk = ?1 LIMIT 1", &[study_pk.into()])? {
        tx.execute("DELETE FROM studies WHERE pk = ?1", &[study_pk.into()])?;
    } else {
        // In order of first appearance, as ingest builds them.
        let modalities = joined(
            tx,
            "SELECT modality FROM series WHERE study_pk = ?1 AND modality != '' GROUP BY modality ORDER BY MIN(pk)",
            study_pk,
        )?;
        let classes = joined(
            tx,
            "SELECT i.sop_class FROM instances i JOIN series se ON se.pk = i.series_pk WHERE se.study_pk = ?1
             GROUP BY i.sop_class ORDER BY MIN(i.pk)",
            study_pk,
        )?;
        tx.execute(
            "UPDATE studies SET modalities = ?2, sop_classes = ?3 WHERE pk = ?1",
            &[study_pk.into(), (&modalities).into(), (&classes).into()],
        )?;
    }
    if !tx.exists("SELECT 1 FROM studies WHERE patient_pk = ?1 LIMIT 1", &[patient_pk.into()])? {
        tx.execute("DELETE FROM patients WHERE pk = ?1", &[patient_pk.into()])?;
    }
    Ok(Some(instance))
}

fn joined(tx: &mut dyn Db, sql: &str, pk: i64) -> Result<String> {
    Ok(tx.query_all(sql, &[pk.into()], |row| row.text(0))?.join("\\"))
}
