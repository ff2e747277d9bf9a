//! Attribute corrections: a PACS team fixes a misspelt name, a wrong birth
//! date or study description after the images arrived.
//!
//! Stored files are never rewritten (they stay as received, with their
//! digests). A correction is a set of registers in the catalog, one per
//! patient or study and attribute ([`CorrectionRecord`]), whose values go
//! into the catalog rows at once (so C-FIND, QIDO-RS and WADO-RS metadata
//! answer with them) and into every copy a retrieve sends
//! ([`Archive::open_delivered`]: the file rewritten on the way out by
//! `haneul_dicom::coerce`, the previous values kept in an Original
//! Attributes Sequence item with reason CORRECT).
//!
//! Each register carries a hybrid logical clock: wall-clock milliseconds
//! and a counter, never behind any clock this node has seen. A register
//! replaces another only with a later clock (ties: the greater origin), so
//! nodes that exchange corrections in any order, with links cut and healed,
//! end up holding the same values.

use std::fs::File;
use std::io::{BufReader, BufWriter, Seek, SeekFrom, Write};
use std::sync::{Arc, Mutex};

use haneul_catalog::{
    identity_of, identity_parts, moves_study, patient_id_of, CorrectionLevel, CorrectionRecord, Event, Origin,
    StoredInstance, StudyCorrections, MERGE_LINK_CLOCK_OFFSET, PATIENT_DEMOGRAPHICS,
};
use haneul_dicom::coerce::{can_encode, coerce_part10, CoercionRules, REASON_CORRECT};
use haneul_dicom::levels::{level_of, Level};
use haneul_dicom::model::tag_to_u32;
use haneul_dicom::read::is_text_vr;
use haneul_dicom::{dict, tags, Dataset, Element, Tag, VR};

use crate::{run_blocking, Archive, ArchiveError};

pub use haneul_catalog::CORRECTED;
/// Most attributes one correction changes.
const MAX_CHANGES: usize = 64;

/// A register to record: its level, key, attribute, VR and value.
type NewValue = (CorrectionLevel, String, Tag, VR, String);

/// One attribute to correct and its new value (empty: no value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeChange {
    pub tag: Tag,
    pub value: String,
}

/// This node's hybrid logical clock, started lazily above every register the catalog holds.
#[derive(Default)]
pub(crate) struct Clock {
    last: Mutex<Option<i64>>,
}

impl Clock {
    /// A clock value later than any this node issued or saw (`held`: the
    /// catalog's latest, read when the clock starts).
    fn tick(&self, held: impl FnOnce() -> Result<i64, ArchiveError>) -> Result<i64, ArchiveError> {
        let mut last = self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let previous = match *last {
            Some(previous) => previous,
            None => held()?,
        };
        let next = (crate::ingest::now_ms() << 16).max(previous + 1);
        *last = Some(next);
        Ok(next)
    }

    /// A peer's clock: later local clocks come after it.
    fn observe(&self, seen: i64) {
        let mut last = self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(previous) = *last {
            *last = Some(previous.max(seen));
        }
        // Not started yet: it will start above the catalog, which then holds `seen`.
    }
}

/// Whether an attribute may be corrected, and its VR: a standard text
/// attribute of the patient or study level, not the Study Instance UID
/// (which identifies the record) nor the character set. Patient ID and its
/// issuer are corrected per study: the study moves to that patient.
pub fn correctable(tag: Tag) -> Result<VR, String> {
    let name = dict::keyword(tag).map_or_else(|| tag.to_string(), |keyword| format!("{keyword} {tag}"));
    if tag.group() % 2 == 1 || dict::keyword(tag).is_none() {
        return Err(format!("{name} is not a standard attribute"));
    }
    if [tags::STUDY_INSTANCE_UID, tags::SPECIFIC_CHARACTER_SET].contains(&tag) {
        return Err(format!("{name} identifies the record and cannot be corrected"));
    }
    if !matches!(level_of(tag), Level::Patient | Level::Study | Level::Series) || tag.group() >= 0x0400 {
        return Err(format!("{name} is not a patient, study or series attribute"));
    }
    if tag == tags::MODALITY {
        return Err(format!("{name} says what kind of images the series holds and cannot be corrected"));
    }
    let vr = dict::implicit_vr(tag);
    if !is_text_vr(vr) || vr == VR::UI {
        return Err(format!("{name} has VR {vr:?}; only text attributes can be corrected"));
    }
    Ok(vr)
}

/// The register a correction of this (correctable) attribute goes to:
/// patient attributes to the patient's, series attributes to the series',
/// the rest, Patient ID and its issuer included, to the study's.
pub fn register_level(tag: Tag) -> CorrectionLevel {
    match level_of(tag) {
        Level::Patient if !moves_study(tag_to_u32(tag)) => CorrectionLevel::Patient,
        Level::Series => CorrectionLevel::Series,
        _ => CorrectionLevel::Study,
    }
}

/// The identity a correction moves its study to, if it changes the Patient
/// ID or its issuer; both are then among `checked`, the one not given with
/// its current value, so that the study's registers alone name its patient.
fn moved_identity(current: &str, checked: &mut Vec<(Tag, VR, String)>) -> Result<Option<String>, ArchiveError> {
    let given =
        |checked: &[(Tag, VR, String)], tag| checked.iter().find(|(held, _, _)| *held == tag).map(|c| c.2.clone());
    let (new_id, new_issuer) = (given(checked, tags::PATIENT_ID), given(checked, tags::ISSUER_OF_PATIENT_ID));
    if new_id.is_none() && new_issuer.is_none() {
        return Ok(None);
    }
    let (current_id, current_issuer) = identity_parts(current);
    let id = new_id.unwrap_or_else(|| current_id.to_string());
    let issuer = new_issuer.unwrap_or_else(|| current_issuer.to_string());
    if id.is_empty() {
        return Err(ArchiveError::Invalid("PatientID: the study's patient has none; give the ID to move it to".into()));
    }
    let target = identity_of(&id, &issuer);
    if target == current {
        // Already that patient: nothing moves, and nothing is recorded for it.
        checked.retain(|(tag, _, _)| !moves_study(tag_to_u32(*tag)));
        return Ok(None);
    }
    for (tag, value) in [(tags::PATIENT_ID, id), (tags::ISSUER_OF_PATIENT_ID, issuer)] {
        if !checked.iter().any(|(held, _, _)| *held == tag) {
            // The current value, from a file: peers check it as they would a new one.
            check_value(tag, VR::LO, &value).map_err(ArchiveError::Invalid)?;
            checked.push((tag, VR::LO, value));
        }
    }
    Ok(Some(target))
}

/// A correction's reason: at most 64 characters, on one line.
fn check_reason(reason: &str) -> Result<(), ArchiveError> {
    if reason.chars().count() > 64 || reason.chars().any(char::is_control) {
        return Err(ArchiveError::Invalid("reason: at most 64 characters, no control characters".into()));
    }
    Ok(())
}

/// Check a new value against its VR (length, characters, dates).
pub fn check_value(tag: Tag, vr: VR, value: &str) -> Result<(), String> {
    let name = dict::keyword(tag).unwrap_or("attribute");
    if moves_study(tag_to_u32(tag)) && value.contains('\\') {
        return Err(format!("{name}: one value, without a backslash"));
    }
    if tag == tags::PATIENT_ID && value.trim().is_empty() {
        return Err(format!("{name}: a study is moved to a patient with an ID"));
    }
    let multi_line = matches!(vr, VR::LT | VR::ST | VR::UT);
    if value.chars().any(|c| c.is_control() && !(multi_line && matches!(c, '\r' | '\n' | '\t' | '\x0c'))) {
        return Err(format!("{name}: control characters are not allowed"));
    }
    let limit = match vr {
        VR::AE | VR::CS | VR::SH | VR::DS => 16,
        VR::AS => 4,
        VR::DA => 8,
        VR::DT => 26,
        VR::IS => 12,
        VR::TM => 16,
        VR::LO | VR::PN => 64,
        VR::ST => 1024,
        VR::LT => 10240,
        _ => 65534,
    };
    let values: Vec<&str> = if multi_line { vec![value] } else { value.split('\\').collect() };
    for single in values {
        let pieces: Vec<&str> = if vr == VR::PN { single.split('=').collect() } else { vec![single] };
        if pieces.iter().any(|piece| piece.chars().count() > limit) {
            return Err(format!("{name}: a value of VR {vr:?} has at most {limit} characters"));
        }
        if vr == VR::PN && pieces.len() > 3 {
            return Err(format!("{name}: a person name has at most three component groups"));
        }
        let valid = match vr {
            VR::DA => single.is_empty() || is_date(single),
            VR::TM => single.chars().all(|c| c.is_ascii_digit() || c == '.'),
            VR::CS => single.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == ' ' || c == '_'),
            VR::AS => single.is_empty() || (single.len() == 4 && single[..3].chars().all(|c| c.is_ascii_digit())),
            VR::IS => single.is_empty() || single.trim().parse::<i32>().is_ok(),
            _ => true,
        };
        if !valid {
            return Err(format!("{name}: {single:?} is not a valid {vr:?} value"));
        }
    }
    Ok(())
}

fn is_date(text: &str) -> bool {
    if text.len() != 8 || !text.chars().all(|c| c.is_ascii_digit()) {
        return false;
    }
    let (Ok(year), Ok(month), Ok(day)) = (text[..4].parse::<i32>(), text[4..6].parse::<u8>(), text[6..].parse::<u8>())
    else {
        return false;
    };
    time::Month::try_from(month).is_ok_and(|month| time::Date::from_calendar_date(year, month, day).is_ok())
}

/// The rewrite rules that put a study's registers into one of its files.
pub(crate) fn rules_for(registers: &[CorrectionRecord]) -> CoercionRules {
    let latest = registers.iter().max_by(|a, b| (a.hlc, &a.origin).cmp(&(b.hlc, &b.origin)));
    let identity = |tag| registers.iter().rev().find(|register| register.attribute() == tag).map(|r| r.value.clone());
    CoercionRules {
        patient_id: identity(tags::PATIENT_ID),
        issuer_of_patient_id: identity(tags::ISSUER_OF_PATIENT_ID),
        remove_other_patient_attributes: identity(tags::PATIENT_ID).is_some(),
        set: registers
            .iter()
            .filter(|register| !moves_study(register.tag))
            .map(|register| (register.attribute(), (register.value_representation(), register.value.clone())))
            .collect(),
        reason: REASON_CORRECT.into(),
        modifying_system: latest.map(|register| register.origin.clone()).unwrap_or_default(),
        ..CoercionRules::default()
    }
}

/// The Attribute Modification DateTime of a correction: its clock's time, in UTC.
fn modification_time(registers: &[CorrectionRecord]) -> String {
    let at_ms = registers.iter().map(CorrectionRecord::at_ms).max().unwrap_or(0);
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}.{:03}+0000",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

/// Put the registers' values into a data set read from a stored file, as
/// [`rules_for`] puts them into a copy: for a moved study, nothing else of
/// the patient the file names stays.
pub fn apply_to_dataset(dataset: &mut Dataset, registers: &[CorrectionRecord]) {
    if registers.iter().any(|register| register.attribute() == tags::PATIENT_ID) {
        let set: std::collections::HashSet<u32> = registers.iter().map(|register| register.tag).collect();
        dataset.retain(|element| {
            !haneul_dicom::coerce::is_other_patient_attribute(element.tag) || set.contains(&tag_to_u32(element.tag))
        });
    }
    for register in registers {
        dataset.put(register.element());
    }
}

/// What a patient merge did.
#[derive(Debug, Default)]
pub struct PatientMerge {
    /// Studies moved, by Study Instance UID.
    pub moved: Vec<String>,
    /// Studies left where they were, and why (a value their files cannot carry, a failure).
    pub refused: Vec<(String, String)>,
    /// Studies of the patient in sites the caller may not see, left as they were.
    pub not_visible: usize,
    /// Whether every study moved, so that the record now links to the one
    /// it was merged into: studies arriving for it later are filed there.
    pub linked: bool,
}

/// What a retrieve sends of an instance: its stored file, or a corrected copy.
pub struct DeliveredFile {
    pub file: File,
    pub size: u64,
    pub dataset_offset: u64,
}

impl Archive {
    /// Correct attributes of a study or of its patient (each attribute goes
    /// to its level). `None` when the study is not held here. Returns the
    /// registers recorded, journaled as [`CORRECTED`] for the peers.
    pub async fn correct_study(
        self: &Arc<Self>,
        study_uid: &str,
        changes: Vec<AttributeChange>,
        reason: &str,
        origin: &Origin,
    ) -> Result<Option<Vec<CorrectionRecord>>, ArchiveError> {
        self.correct(study_uid, None, changes, reason, origin).await
    }

    /// Correct attributes of one series of a study (series attributes only).
    /// `None` when the study does not hold that series here.
    pub async fn correct_series(
        self: &Arc<Self>,
        study_uid: &str,
        series_uid: &str,
        changes: Vec<AttributeChange>,
        reason: &str,
        origin: &Origin,
    ) -> Result<Option<Vec<CorrectionRecord>>, ArchiveError> {
        self.correct(study_uid, Some(series_uid), changes, reason, origin).await
    }

    async fn correct(
        self: &Arc<Self>,
        study_uid: &str,
        series_uid: Option<&str>,
        changes: Vec<AttributeChange>,
        reason: &str,
        origin: &Origin,
    ) -> Result<Option<Vec<CorrectionRecord>>, ArchiveError> {
        if changes.is_empty() || changes.len() > MAX_CHANGES {
            return Err(ArchiveError::Invalid(format!("a correction changes 1 to {MAX_CHANGES} attributes")));
        }
        check_reason(reason)?;
        let mut checked = Vec::with_capacity(changes.len());
        for change in &changes {
            let vr = correctable(change.tag).map_err(ArchiveError::Invalid)?;
            let value = if moves_study(tag_to_u32(change.tag)) { change.value.trim() } else { change.value.as_str() };
            check_value(change.tag, vr, value).map_err(ArchiveError::Invalid)?;
            let name = dict::keyword(change.tag).unwrap_or("attribute");
            match (series_uid, register_level(change.tag)) {
                (None, CorrectionLevel::Series) => {
                    return Err(ArchiveError::Invalid(format!(
                        "{name} is a series attribute: correct it at /api/studies/{study_uid}/series/{{series}}/corrections"
                    )));
                }
                (Some(_), CorrectionLevel::Patient | CorrectionLevel::Study) => {
                    return Err(ArchiveError::Invalid(format!(
                        "{name} is not a series attribute: correct it at /api/studies/{study_uid}/corrections"
                    )));
                }
                _ => {}
            }
            if checked.iter().any(|(tag, _, _): &(Tag, VR, String)| *tag == change.tag) {
                return Err(ArchiveError::Invalid(format!("{} is given twice", change.tag)));
            }
            checked.push((change.tag, vr, value.to_string()));
        }
        let held = self.study_corrections(study_uid).await?;
        let Some(identity) = held.patient_identity else { return Ok(None) };
        // Whether `origin` may see the study comes before anything about its patient.
        if !self.check_encodable(study_uid, series_uid, &checked, origin).await? {
            return Ok(None);
        }
        // A new Patient ID or issuer moves the study: its patient attributes
        // then go to the patient it moves to.
        let identity = match moved_identity(&identity, &mut checked)? {
            Some(target) => {
                self.refuse_merged(&target, "PatientID").await?;
                self.check_move_target(study_uid, &target, &mut checked, origin).await?;
                target
            }
            None => identity,
        };
        self.check_other_studies_of_patient(study_uid, &identity, &checked).await?;
        let archive = Arc::clone(self);
        let values: Vec<NewValue> = checked
            .into_iter()
            .map(|(tag, vr, value)| {
                let key = match register_level(tag) {
                    CorrectionLevel::Patient => identity.clone(),
                    CorrectionLevel::Study => study_uid.to_string(),
                    // Only a series correction has series attributes (checked above).
                    CorrectionLevel::Series => series_uid.unwrap_or_default().to_string(),
                };
                (register_level(tag), key, tag, vr, value)
            })
            .collect();
        let mut event = Event::new(CORRECTED, origin).with_detail(serde_json::json!({ "reason": reason }));
        event.study_uid = Some(study_uid.to_string());
        Ok(Some(archive.record_now(values, reason, event).await?))
    }

    /// Record new values as registers of this node, stamped with one tick
    /// of its clock, journaling `event` with those that took effect.
    async fn record_now(
        self: Arc<Self>,
        values: Vec<NewValue>,
        reason: &str,
        event: Event,
    ) -> Result<Vec<CorrectionRecord>, ArchiveError> {
        let archive = Arc::clone(&self);
        let (node, reason) = (self.config().ae_title.clone(), reason.to_string());
        let applied = run_blocking(move || {
            let hlc = archive.clock.tick(|| Ok(archive.catalog().latest_correction_clock()?))?;
            let records: Vec<CorrectionRecord> = values
                .into_iter()
                .map(|(level, key, tag, vr, value)| CorrectionRecord {
                    level,
                    key,
                    tag: tag_to_u32(tag),
                    vr: vr.to_string().to_string(),
                    value,
                    hlc,
                    origin: node.clone(),
                    reason: reason.clone(),
                })
                .collect();
            Ok(archive.catalog().correct(&records, &event)?)
        })
        .await?;
        self.metrics().corrections.add(applied.len() as u64);
        Ok(applied)
    }

    /// Merge two records of one patient: every study of `from` (a Patient
    /// ID and its issuer) that `origin` may see is moved to `into`, each as a
    /// correction of its own (see [`Archive::correct_study`]). `None` when no
    /// study of `from` is held. A study whose copies could not carry the
    /// patient it moves to is left where it is and listed with why. When
    /// every study moved, `from` links to `into`: studies that arrive for it
    /// later are filed under `into` (see [`Archive::unmerge_patient`]).
    pub async fn merge_patient(
        self: &Arc<Self>,
        from: (&str, &str),
        into: (&str, &str),
        reason: &str,
        origin: &Origin,
    ) -> Result<Option<PatientMerge>, ArchiveError> {
        for (what, (id, issuer)) in [("from", from), ("into", into)] {
            check_value(tags::PATIENT_ID, VR::LO, id)
                .map_err(|error| ArchiveError::Invalid(format!("{what}: {error}")))?;
            check_value(tags::ISSUER_OF_PATIENT_ID, VR::LO, issuer)
                .map_err(|error| ArchiveError::Invalid(format!("{what}: {error}")))?;
        }
        let (from_identity, into_identity) = (identity_of(from.0, from.1), identity_of(into.0, into.1));
        if from_identity == into_identity {
            return Err(ArchiveError::Invalid("a patient cannot be merged into itself".into()));
        }
        self.refuse_merged(&into_identity, "into").await?;
        let catalog = Arc::clone(self.catalog());
        let from_key = from_identity.clone();
        let (studies, from_attributes, into_held) = run_blocking(move || {
            Ok((
                catalog.studies_of_patient(&from_key)?,
                catalog.patient_attributes(&from_key)?,
                catalog.patient_attributes(&into_identity)?.is_some(),
            ))
        })
        .await?;
        let mut merge = PatientMerge::default();
        let visible: Vec<String> = studies
            .into_iter()
            .filter_map(|(study, site)| {
                let seen = origin.may_see(&site);
                merge.not_visible += usize::from(!seen);
                seen.then_some(study)
            })
            .collect();
        if visible.is_empty() {
            return Ok(None);
        }
        // Both records are the same person: a patient `into` not held yet
        // takes the demographics of `from` with the first study moved.
        // A value that would not pass as a correction (a legacy birth date)
        // is left out; the name always goes, empty if need be, since a move
        // to a patient not held needs one.
        let carried: Vec<AttributeChange> = if into_held {
            Vec::new()
        } else {
            PATIENT_DEMOGRAPHICS
                .into_iter()
                .filter_map(|(tag, vr)| {
                    let held = from_attributes.as_ref().and_then(|attributes| attributes.get(tag));
                    let value = held.map(|element| element.value.to_strings().join("\\")).unwrap_or_default();
                    let value = if check_value(tag, vr, &value).is_ok() { value } else { String::new() };
                    (tag == tags::PATIENT_NAME || !value.is_empty()).then_some(AttributeChange { tag, value })
                })
                .collect()
        };
        for study in visible {
            let mut changes = vec![
                AttributeChange { tag: tags::PATIENT_ID, value: into.0.to_string() },
                AttributeChange { tag: tags::ISSUER_OF_PATIENT_ID, value: into.1.to_string() },
            ];
            if merge.moved.is_empty() {
                changes.extend(carried.iter().cloned());
            }
            match self.correct_study(&study, changes, reason, origin).await {
                Ok(Some(_)) => merge.moved.push(study),
                Ok(None) => merge.not_visible += 1,
                // Each study on its own: what was moved stays moved and is reported.
                Err(error) => merge.refused.push((study, error.to_string())),
            }
        }
        if merge.moved.is_empty() && merge.refused.is_empty() {
            return Ok(None);
        }
        // Every study moved: the record is gone, and studies that still
        // arrive for it (a modality's worklist not updated yet) follow, at
        // every site and from every site: only for someone who may see all.
        if merge.refused.is_empty() && merge.not_visible == 0 && origin.scope.is_empty() {
            self.record_merge_link(&from_identity, into, reason, origin).await?;
            merge.linked = true;
        }
        Ok(Some(merge))
    }

    /// Undo the merge link of the record `patient` (a Patient ID and its
    /// issuer): studies arriving for it are filed under it again. Studies
    /// the merge moved stay where they are (move them back one by one).
    /// `None` when the record is not merged.
    pub async fn unmerge_patient(
        self: &Arc<Self>,
        patient: (&str, &str),
        reason: &str,
        origin: &Origin,
    ) -> Result<Option<()>, ArchiveError> {
        let identity = identity_of(patient.0, patient.1);
        let catalog = Arc::clone(self.catalog());
        let key = identity.clone();
        if run_blocking(move || Ok(catalog.merge_link(&key)?)).await?.is_none() {
            return Ok(None);
        }
        // As for the merge: where studies of every site go is for someone who may see every site.
        if !origin.scope.is_empty() {
            return Err(ArchiveError::Invalid(
                "a merge applies to studies of every site; someone who may see every site can undo it".into(),
            ));
        }
        check_reason(reason)?;
        self.record_merge_link(&identity, patient, reason, origin).await?;
        Ok(Some(()))
    }

    /// Refuse a record that was merged into another as the place to move
    /// studies to (`what`: the field that named it): they would be filed
    /// under a record that no longer exists.
    async fn refuse_merged(&self, identity: &str, what: &str) -> Result<(), ArchiveError> {
        let catalog = Arc::clone(self.catalog());
        let key = identity.to_string();
        if run_blocking(move || Ok(catalog.merge_link(&key)?)).await?.is_none() {
            return Ok(());
        }
        Err(ArchiveError::Invalid(format!(
            "{what}: that patient record was merged into another; use the record it was merged into, or undo the \
             merge first (POST /api/patients/unmerge)"
        )))
    }

    /// Record the merge link of `from_identity` to `into` (to itself: no link).
    async fn record_merge_link(
        self: &Arc<Self>,
        from_identity: &str,
        into: (&str, &str),
        reason: &str,
        origin: &Origin,
    ) -> Result<(), ArchiveError> {
        let values: Vec<NewValue> = [(tags::PATIENT_ID, into.0), (tags::ISSUER_OF_PATIENT_ID, into.1)]
            .into_iter()
            .map(|(tag, value)| (CorrectionLevel::Patient, from_identity.to_string(), tag, VR::LO, value.to_string()))
            .collect();
        let mut event = Event::new(CORRECTED, origin).with_detail(serde_json::json!({ "reason": reason }));
        event.patient_id = patient_id_of(from_identity).map(str::to_string);
        Arc::clone(self).record_now(values, reason, event).await?;
        Ok(())
    }

    /// Record registers a peer sent (its corrections, or what anti-entropy
    /// found it holds): each replaces the one held only if it is later.
    /// `peer` is journaled, so that they are not sent back there.
    pub async fn merge_corrections(
        self: &Arc<Self>,
        records: Vec<CorrectionRecord>,
        peer: &str,
        origin: &Origin,
    ) -> Result<Vec<CorrectionRecord>, ArchiveError> {
        for record in &records {
            let vr = correctable(record.attribute()).map_err(ArchiveError::Invalid)?;
            // A patient-level Patient ID or issuer register is a merge link.
            let link = record.level == CorrectionLevel::Patient && moves_study(record.tag);
            let malformed = record.vr != vr.to_string()
                || (record.level != register_level(record.attribute()) && !link)
                || record.key.is_empty()
                || record.origin.is_empty()
                || (record.hlc <= 0 && !record.made_by_merge_link())
                // Beyond it, this node's clock would rank people's moves below links' for good.
                || record.hlc >= MERGE_LINK_CLOCK_OFFSET;
            if malformed {
                return Err(ArchiveError::Invalid(format!("register of {} is malformed", record.attribute())));
            }
            check_value(record.attribute(), vr, &record.value).map_err(ArchiveError::Invalid)?;
        }
        let event = Event::new(CORRECTED, origin).with_detail(serde_json::json!({ "replicated_from": peer }));
        let archive = Arc::clone(self);
        let applied = run_blocking(move || {
            for record in &records {
                archive.clock.observe(record.hlc);
            }
            Ok(archive.catalog().correct(&records, &event)?)
        })
        .await?;
        self.metrics().corrections.add(applied.len() as u64);
        Ok(applied)
    }

    /// The registers of a study and of its patient.
    pub async fn study_corrections(&self, study_uid: &str) -> Result<StudyCorrections, ArchiveError> {
        let catalog = Arc::clone(self.catalog());
        let study_uid = study_uid.to_string();
        run_blocking(move || Ok(catalog.study_corrections(&study_uid)?)).await
    }

    /// Every register held here (anti-entropy compares them with a peer's).
    pub async fn correction_registers(&self) -> Result<Vec<CorrectionRecord>, ArchiveError> {
        let catalog = Arc::clone(self.catalog());
        run_blocking(move || Ok(catalog.all_corrections()?)).await
    }

    /// Refuse a move to a patient with studies in sites `origin` may not see
    /// (the moved study would show that patient's attributes), to a patient
    /// not held here without its name, and to one whose attributes the
    /// study's files cannot carry. A patient held here has its name, birth
    /// date and sex recorded with the move (unless given), so that a site
    /// that does not hold it yet makes the same patient.
    async fn check_move_target(
        &self,
        study_uid: &str,
        target: &str,
        checked: &mut Vec<(Tag, VR, String)>,
        origin: &Origin,
    ) -> Result<(), ArchiveError> {
        let catalog = Arc::clone(self.catalog());
        let key = target.to_string();
        let (attributes, studies) =
            run_blocking(move || Ok((catalog.patient_attributes(&key)?, catalog.studies_of_patient(&key)?))).await?;
        if studies.iter().any(|(_, site)| !origin.may_see(site)) {
            return Err(ArchiveError::Invalid(
                "PatientID: that patient has studies in sites you may not see; someone who may see them can move it"
                    .into(),
            ));
        }
        let Some(attributes) = attributes else {
            if checked.iter().any(|(tag, _, _)| *tag == tags::PATIENT_NAME) {
                return Ok(());
            }
            return Err(ArchiveError::Invalid(format!(
                "PatientName: patient {:?} is not held here; give the name (and birth date and sex) of the patient \
                 the study moves to",
                patient_id_of(target).unwrap_or_default()
            )));
        };
        let mut carried = Vec::new();
        for element in attributes.iter().filter(|element| haneul_dicom::coerce::settable(element)) {
            if !checked.iter().any(|(tag, _, _)| *tag == element.tag) {
                carried.push((element.tag, element.vr, element.value.to_strings().join("\\")));
            }
        }
        self.check_encodable(study_uid, None, &carried, origin).await?;
        for (tag, vr) in PATIENT_DEMOGRAPHICS {
            if checked.iter().any(|(given, _, _)| *given == tag) {
                continue;
            }
            let held = attributes.get(tag).map(|element| element.value.to_strings().join("\\")).unwrap_or_default();
            // A value that would not pass as a correction is left to the files (a legacy birth date).
            if check_value(tag, vr, &held).is_ok() {
                checked.push((tag, vr, held));
            }
        }
        Ok(())
    }

    /// Refuse patient values that the files of another study of the patient
    /// cannot carry (one moved there in another character set would become
    /// unretrievable). Every study is checked, whoever asks: the refusal
    /// names none of them.
    async fn check_other_studies_of_patient(
        &self,
        study_uid: &str,
        identity: &str,
        checked: &[(Tag, VR, String)],
    ) -> Result<(), ArchiveError> {
        let patient_values: Vec<(Tag, VR, String)> =
            checked.iter().filter(|(tag, _, _)| register_level(*tag) == CorrectionLevel::Patient).cloned().collect();
        if patient_values.is_empty() {
            return Ok(());
        }
        let catalog = Arc::clone(self.catalog());
        let key = identity.to_string();
        let studies = run_blocking(move || Ok(catalog.studies_of_patient(&key)?)).await?;
        for (other, _) in studies.iter().filter(|(other, _)| other != study_uid) {
            if let Err(ArchiveError::Invalid(_)) =
                self.check_encodable(other, None, &patient_values, &Origin::default()).await
            {
                return Err(ArchiveError::Invalid(
                    "a new patient value cannot be written in the character set of another study of this patient"
                        .into(),
                ));
            }
        }
        Ok(())
    }

    /// Refuse a value the character set of one of the study's series cannot
    /// carry (a Korean name in a file declaring Latin-1): its copies could
    /// not be corrected. The character sets come from the catalog (each
    /// series' first instance). `false`: the study is not held here, or not
    /// in the sites `origin` may see.
    async fn check_encodable(
        &self,
        study_uid: &str,
        series_uid: Option<&str>,
        changes: &[(Tag, VR, String)],
        origin: &Origin,
    ) -> Result<bool, ArchiveError> {
        let mut identifier = Dataset::new();
        identifier.put(Element::text(tags::QUERY_RETRIEVE_LEVEL, VR::CS, "IMAGE"));
        identifier.put(Element::text(tags::STUDY_INSTANCE_UID, VR::UI, study_uid));
        if let Some(series_uid) = series_uid {
            identifier.put(Element::text(tags::SERIES_INSTANCE_UID, VR::UI, series_uid));
        }
        let mut query = haneul_dicom::matching::Query::from_identifier(
            &identifier,
            haneul_dicom::levels::InformationModel::StudyRoot,
        )
        .map_err(|error| ArchiveError::Task(error.to_string()))?;
        query.sites.clone_from(&origin.scope);
        let catalog = Arc::clone(self.catalog());
        let instances = run_blocking(move || Ok(catalog.find_instances(&query)?)).await?;
        if instances.is_empty() {
            return Ok(false);
        }
        let visible_series: std::collections::HashSet<String> =
            instances.into_iter().map(|instance| instance.series_uid).collect();
        let catalog = Arc::clone(self.catalog());
        let study_uid = study_uid.to_string();
        let declared = run_blocking(move || Ok(catalog.declared_character_sets(&study_uid)?)).await?;
        for (series_uid, declared) in declared.iter().filter(|(series_uid, _)| visible_series.contains(series_uid)) {
            for (tag, vr, value) in changes {
                if !can_encode(declared, *vr, value) {
                    // The value is not repeated: it may be another patient's.
                    return Err(ArchiveError::Invalid(format!(
                        "{}: the new value cannot be written in the character set {declared:?} of series {series_uid}",
                        dict::keyword(*tag).unwrap_or("value"),
                    )));
                }
            }
        }
        Ok(true)
    }

    /// Open what a retrieve sends of `instance`: the stored file, or, when
    /// corrections apply to its study or patient, a copy carrying them (an
    /// unnamed temporary file, gone when closed). A copy that cannot be made
    /// (a value its character set cannot carry) is logged and counted, and
    /// the stored file is sent.
    pub async fn open_delivered(self: &Arc<Self>, instance: &StoredInstance) -> Result<DeliveredFile, ArchiveError> {
        let file = self.open_instance(instance).await?;
        if !instance.corrected {
            return Ok(DeliveredFile { file, size: instance.blob.size, dataset_offset: instance.dataset_offset });
        }
        let corrections = self.study_corrections(&instance.study_uid).await?;
        let archive = Arc::clone(self);
        let instance = instance.clone();
        run_blocking(move || archive.corrected_copy(file, &instance, &corrections.to_apply(&instance.series_uid))).await
    }

    /// [`Archive::open_delivered`] from a blocking thread.
    pub fn open_delivered_blocking(&self, instance: &StoredInstance) -> Result<DeliveredFile, ArchiveError> {
        let file = self.open_instance_blocking(instance)?;
        if !instance.corrected {
            return Ok(DeliveredFile { file, size: instance.blob.size, dataset_offset: instance.dataset_offset });
        }
        let corrections = self.catalog().study_corrections(&instance.study_uid)?;
        self.corrected_copy(file, instance, &corrections.to_apply(&instance.series_uid))
    }

    fn corrected_copy(
        &self,
        stored: File,
        instance: &StoredInstance,
        registers: &[CorrectionRecord],
    ) -> Result<DeliveredFile, ArchiveError> {
        let as_stored =
            |file: File| DeliveredFile { file, size: instance.blob.size, dataset_offset: instance.dataset_offset };
        if registers.is_empty() {
            return Ok(as_stored(stored));
        }
        let rules = rules_for(registers);
        let now = modification_time(registers);
        let copy = (|| -> Result<DeliveredFile, String> {
            let mut input = BufReader::new(&stored);
            let mut copy = tempfile::tempfile_in(self.data_dir()).map_err(|error| error.to_string())?;
            let mut output = BufWriter::new(&mut copy);
            coerce_part10(&mut input, &mut output, &rules, &now).map_err(|error| error.to_string())?;
            output.flush().map_err(|error| error.to_string())?;
            drop(output);
            let size = copy.stream_position().map_err(|error| error.to_string())?;
            copy.seek(SeekFrom::Start(0)).map_err(|error| error.to_string())?;
            // The file meta group is copied unchanged, so the data set starts where it did.
            Ok(DeliveredFile { file: copy, size, dataset_offset: instance.dataset_offset })
        })();
        match copy {
            Ok(delivered) => {
                self.metrics().corrected_deliveries.inc();
                Ok(delivered)
            }
            // Sent as stored, a moved study's file would name the patient it was taken from.
            Err(error) if rules.patient_id.is_some() => {
                self.metrics().corrections_not_applied.inc();
                tracing::error!(sop_instance_uid = %instance.sop_uid, %error, "a moved instance cannot carry its patient; not sent");
                Err(ArchiveError::Undeliverable(format!(
                    "instance {} was moved to another patient and cannot be written with that patient: {error}",
                    instance.sop_uid
                )))
            }
            Err(error) => {
                self.metrics().corrections_not_applied.inc();
                tracing::error!(sop_instance_uid = %instance.sop_uid, %error, "corrections not applied to a retrieved instance; sent as stored");
                let mut stored = stored;
                let _ = stored.seek(SeekFrom::Start(0));
                Ok(as_stored(stored))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_patient_study_and_series_text_attributes_are_correctable() {
        assert_eq!(correctable(tags::PATIENT_NAME), Ok(VR::PN));
        assert_eq!(correctable(tags::STUDY_DESCRIPTION), Ok(VR::LO));
        assert_eq!(correctable(tags::PATIENT_BIRTH_DATE), Ok(VR::DA));
        assert_eq!(correctable(tags::PATIENT_ID), Ok(VR::LO));
        assert_eq!(register_level(tags::PATIENT_NAME), CorrectionLevel::Patient);
        assert_eq!(register_level(tags::PATIENT_ID), CorrectionLevel::Study, "a move is the study's");
        assert_eq!(register_level(tags::ISSUER_OF_PATIENT_ID), CorrectionLevel::Study);
        assert_eq!(register_level(tags::STUDY_DESCRIPTION), CorrectionLevel::Study);
        assert_eq!(correctable(tags::SERIES_DESCRIPTION), Ok(VR::LO));
        assert_eq!(register_level(tags::SERIES_DESCRIPTION), CorrectionLevel::Series);
        assert_eq!(register_level(tags::BODY_PART_EXAMINED), CorrectionLevel::Series);
        for refused in [
            tags::SPECIFIC_CHARACTER_SET,
            tags::STUDY_INSTANCE_UID,
            tags::MODALITY,
            tags::SERIES_INSTANCE_UID,
            tags::SOP_INSTANCE_UID,
            tags::PIXEL_DATA,
            Tag(0x0009, 0x1001),
        ] {
            assert!(correctable(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn values_are_checked_against_their_vr() {
        assert!(check_value(tags::PATIENT_NAME, VR::PN, "Hong^Gildong=洪^吉洞=홍^길동").is_ok());
        assert!(check_value(tags::PATIENT_NAME, VR::PN, "a=b=c=d").is_err());
        assert!(check_value(tags::PATIENT_NAME, VR::PN, &"x".repeat(65)).is_err());
        assert!(check_value(tags::PATIENT_BIRTH_DATE, VR::DA, "19700229").is_err());
        assert!(check_value(tags::PATIENT_BIRTH_DATE, VR::DA, "19720229").is_ok());
        assert!(check_value(tags::PATIENT_SEX, VR::CS, "f").is_err());
        assert!(check_value(tags::STUDY_DESCRIPTION, VR::LO, "line\nbreak").is_err());
        assert!(check_value(tags::PATIENT_COMMENTS, VR::LT, "line\nbreak").is_ok());
        assert!(check_value(tags::PATIENT_BIRTH_DATE, VR::DA, "").is_ok());
        assert!(check_value(tags::SERIES_NUMBER, VR::IS, "-12").is_ok());
        for not_an_integer in ["abc", "1.5", "99999999999"] {
            assert!(check_value(tags::SERIES_NUMBER, VR::IS, not_an_integer).is_err(), "{not_an_integer}");
        }
    }

    #[test]
    fn a_new_patient_id_or_issuer_names_the_whole_identity_moved_to() {
        let given = |changes: &[(Tag, &str)]| -> Vec<(Tag, VR, String)> {
            changes.iter().map(|(tag, value)| (*tag, VR::LO, value.to_string())).collect()
        };
        let mut checked = given(&[(tags::PATIENT_ID, "P2"), (tags::PATIENT_NAME, "Kim")]);
        assert_eq!(moved_identity("P1\\HOSP", &mut checked).expect("moves"), Some("P2\\HOSP".into()));
        assert!(checked.contains(&(tags::ISSUER_OF_PATIENT_ID, VR::LO, "HOSP".into())), "the issuer kept is recorded");
        let mut checked = given(&[(tags::ISSUER_OF_PATIENT_ID, "OTHER")]);
        assert_eq!(moved_identity("P1\\HOSP", &mut checked).expect("moves"), Some("P1\\OTHER".into()));
        assert!(checked.contains(&(tags::PATIENT_ID, VR::LO, "P1".into())));
        // Where it is already: nothing about the identity is recorded.
        let mut checked = given(&[(tags::PATIENT_ID, "P1"), (tags::PATIENT_NAME, "Kim")]);
        assert_eq!(moved_identity("P1\\HOSP", &mut checked).expect("no move"), None);
        assert_eq!(checked, given(&[(tags::PATIENT_NAME, "Kim")]));
        // No change of identity asked: nothing added.
        let mut checked = given(&[(tags::PATIENT_NAME, "Kim")]);
        assert_eq!(moved_identity("P1\\", &mut checked).expect("no move"), None);
        assert_eq!(checked.len(), 1);
        // A patient known by demographics only needs an ID to move to.
        let mut checked = given(&[(tags::ISSUER_OF_PATIENT_ID, "HOSP")]);
        assert!(moved_identity("\\\\HONG^GILDONG\\19700101", &mut checked).is_err());
        let mut checked = given(&[(tags::PATIENT_ID, "P9")]);
        assert_eq!(
            moved_identity("\\HOSP\\HONG^GILDONG\\19700101", &mut checked).expect("moves"),
            Some("P9\\HOSP".into())
        );
    }

    /// A register of this node's, of the level the attribute goes to.
    fn register(tag: Tag, vr: &str, value: &str) -> CorrectionRecord {
        CorrectionRecord {
            level: register_level(tag),
            key: "k".into(),
            tag: tag_to_u32(tag),
            vr: vr.into(),
            value: value.into(),
            hlc: 1,
            origin: "SITEA".into(),
            reason: "r".into(),
        }
    }

    #[test]
    fn a_moved_study_is_written_with_the_new_identity() {
        let rules = rules_for(&[
            register(tags::PATIENT_ID, "LO", "P2"),
            register(tags::ISSUER_OF_PATIENT_ID, "LO", ""),
            register(tags::PATIENT_NAME, "PN", "Kim^Minsu"),
        ]);
        assert_eq!(rules.patient_id.as_deref(), Some("P2"));
        assert_eq!(rules.issuer_of_patient_id.as_deref(), Some(""));
        assert_eq!(rules.set.keys().copied().collect::<Vec<_>>(), [tags::PATIENT_NAME]);
        assert!(rules.remove_other_patient_attributes, "nothing else of the patient left behind");
        assert!(!rules_for(&[register(tags::PATIENT_NAME, "PN", "Kim")]).remove_other_patient_attributes);
        assert!(rules.validate().is_ok());
    }

    #[test]
    fn a_decoded_moved_instance_keeps_nothing_else_of_the_patient_it_names() {
        let file = || -> Dataset {
            [
                Element::text(tags::PATIENT_NAME, VR::PN, "Hong^Gildong"),
                Element::text(tags::PATIENT_ID, VR::LO, "P1"),
                Element::text(tags::PATIENT_COMMENTS, VR::LT, "allergic to contrast"),
                Element::text(Tag(0x0012, 0x0062), VR::CS, "YES"),
                Element::text(tags::STUDY_DESCRIPTION, VR::LO, "CT"),
            ]
            .into_iter()
            .collect()
        };
        let mut moved = file();
        apply_to_dataset(
            &mut moved,
            &[register(tags::PATIENT_ID, "LO", "P2"), register(tags::PATIENT_NAME, "PN", "Kim")],
        );
        assert_eq!(moved.string(tags::PATIENT_ID), Some("P2"));
        assert_eq!(moved.string(tags::PATIENT_NAME), Some("Kim"));
        assert!(!moved.contains(tags::PATIENT_COMMENTS), "the old patient's comments stayed");
        assert_eq!(moved.string(Tag(0x0012, 0x0062)), Some("YES"), "de-identification flags describe the data");
        assert_eq!(moved.string(tags::STUDY_DESCRIPTION), Some("CT"));
        let mut renamed = file();
        apply_to_dataset(&mut renamed, &[register(tags::PATIENT_NAME, "PN", "Kim")]);
        assert!(renamed.contains(tags::PATIENT_COMMENTS), "not moved: the rest stays");
    }

    #[test]
    fn the_clock_moves_past_what_it_has_seen() {
        let clock = Clock::default();
        let first = clock.tick(|| Ok(0)).expect("ticks");
        let far_ahead = first + (3_600_000 << 16);
        clock.observe(far_ahead);
        assert!(clock.tick(|| Ok(0)).expect("ticks") > far_ahead);
        let restarted = Clock::default();
        assert!(restarted.tick(|| Ok(far_ahead)).expect("ticks") > far_ahead, "starts above the catalog");
    }
}
