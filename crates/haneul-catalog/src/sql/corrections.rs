//! Correction registers: recording them (a register is replaced only by a
//! later clock) and applying their values to the patient and study rows, so
//! that queries match and answer the corrected values.

use std::collections::{BTreeMap, BTreeSet};

use haneul_dicom::matching::{normalize_temporal, person_name_groups};
use haneul_dicom::{tags, Dataset, Element, VR};

use super::db::{Db, Row};
use super::write::{decode_attrs, encode_attrs, insert_event};
use crate::records::*;
use crate::Result;

const REGISTER_COLUMNS: &str = "level, key, tag, vr, value, hlc, origin, reason";

fn register(row: &dyn Row) -> Result<CorrectionRecord> {
    let level = row.text(0)?;
    Ok(CorrectionRecord {
        level: CorrectionLevel::parse(&level)
            .ok_or_else(|| crate::CatalogError::CorruptRecord(format!("correction level {level:?}")))?,
        key: row.text(1)?,
        tag: u32::try_from(row.int(2)?).map_err(|_| crate::CatalogError::CorruptRecord("correction tag".into()))?,
        vr: row.text(3)?,
        value: row.text(4)?,
        hlc: row.int(5)?,
        origin: row.text(6)?,
        reason: row.text(7)?,
    })
}

fn registers_of(db: &mut dyn Db, level: CorrectionLevel, key: &str) -> Result<Vec<CorrectionRecord>> {
    db.query_all(
        &format!("SELECT {REGISTER_COLUMNS} FROM corrections WHERE level = ?1 AND key = ?2 ORDER BY tag"),
        &[level.as_str().into(), key.into()],
        register,
    )
}

/// Record the registers that supersede what is held, apply them to the rows
/// they concern, and journal `event` with them (`detail.corrections`) if any
/// did. Returns those that did.
pub(super) fn record_corrections(
    tx: &mut dyn Db,
    records: &[CorrectionRecord],
    event: &Event,
    at_ms: i64,
) -> Result<Vec<CorrectionRecord>> {
    let pairs_won = move_pairs_won(tx, records)?;
    let mut applied = Vec::new();
    for record in records {
        let held = tx.query_opt(
            &format!("SELECT {REGISTER_COLUMNS} FROM corrections WHERE level = ?1 AND key = ?2 AND tag = ?3"),
            &[record.level.as_str().into(), (&record.key).into(), i64::from(record.tag).into()],
            register,
        )?;
        let wins = match &held {
            None => true,
            Some(held) if is_move(record) && (held.hlc, &held.origin) == (record.hlc, &record.origin) => {
                pairs_won.get(record.key.as_str()).copied().unwrap_or(false) && held.value != record.value
            }
            Some(held) => record.supersedes(held),
        };
        if !wins {
            continue;
        }
        tx.execute(
            "INSERT INTO corrections (level, key, tag, vr, value, hlc, origin, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (level, key, tag) DO UPDATE SET vr = ?4, value = ?5, hlc = ?6, origin = ?7, reason = ?8",
            &[
                record.level.as_str().into(),
                (&record.key).into(),
                i64::from(record.tag).into(),
                (&record.vr).into(),
                (&record.value).into(),
                record.hlc.into(),
                (&record.origin).into(),
                (&record.reason).into(),
            ],
        )?;
        applied.push(record.clone());
    }
    let targets: BTreeSet<(CorrectionLevel, &str)> =
        applied.iter().map(|record| (record.level, record.key.as_str())).collect();
    for (level, key) in targets {
        let select = match level {
            CorrectionLevel::Patient => "SELECT pk FROM patients WHERE identity = ?1",
            CorrectionLevel::Study => "SELECT pk FROM studies WHERE study_uid = ?1",
            CorrectionLevel::Series => "SELECT pk FROM series WHERE series_uid = ?1",
        };
        if let Some(pk) = tx.query_opt(select, &[key.into()], |row| row.int(0))? {
            apply_registers(tx, level, key, pk)?;
        }
    }
    if !applied.is_empty() {
        let mut event = event.clone();
        event.detail["corrections"] = serde_json::to_value(&applied).unwrap_or_default();
        insert_event(tx, &event, at_ms)?;
    }
    // A merge link recorded (here, or a peer's): what the merged record
    // still holds (studies a peer stored before the link reached it) follows.
    let linked: BTreeSet<&str> = applied
        .iter()
        .filter(|record| record.level == CorrectionLevel::Patient && moves_study(record.tag))
        .map(|record| record.key.as_str())
        .collect();
    for identity in linked {
        follow_merge_of_held(tx, identity, &event.origin, at_ms)?;
    }
    Ok(applied)
}

fn is_move(record: &CorrectionRecord) -> bool {
    record.level == CorrectionLevel::Study && moves_study(record.tag)
}

/// A study's Patient ID and issuer registers move it together. Two nodes
/// that followed merge links knowing different links can make pairs with
/// the same clock and origin naming different records: the pair naming the
/// greater identity wins whole, never the ID of one and the issuer of the
/// other. Per study key of `records`: whether its incoming pair wins such a tie.
fn move_pairs_won<'a>(tx: &mut dyn Db, records: &'a [CorrectionRecord]) -> Result<BTreeMap<&'a str, bool>> {
    let keys: BTreeSet<&str> = records.iter().filter(|record| is_move(record)).map(|r| r.key.as_str()).collect();
    let mut won = BTreeMap::new();
    for key in keys {
        let held: Vec<CorrectionRecord> =
            registers_of(tx, CorrectionLevel::Study, key)?.into_iter().filter(is_move).collect();
        let incoming: Vec<&CorrectionRecord> = records.iter().filter(|r| is_move(r) && r.key == key).collect();
        let value = |registers: &[&CorrectionRecord], tag| {
            registers.iter().find(|register| register.attribute() == tag).map(|register| register.value.clone())
        };
        let held: Vec<&CorrectionRecord> = held.iter().collect();
        let identity = |registers: &[&CorrectionRecord]| {
            let id = value(registers, tags::PATIENT_ID).or_else(|| value(&held, tags::PATIENT_ID)).unwrap_or_default();
            let issuer = value(registers, tags::ISSUER_OF_PATIENT_ID)
                .or_else(|| value(&held, tags::ISSUER_OF_PATIENT_ID))
                .unwrap_or_default();
            identity_of(&id, &issuer)
        };
        won.insert(key, identity(&incoming) > identity(&held));
    }
    Ok(won)
}

/// Most merge links followed from one record (a record merged into one
/// merged later in turn); beyond, the links are not followed.
const MAX_MERGE_LINKS: usize = 16;

/// A merged record's link, as followed to the record that now takes its studies.
#[derive(Debug, Clone)]
pub(super) struct MergeLink {
    /// The identity of the record the studies go to (not merged itself).
    pub target: String,
    /// The latest link register followed: its clock, origin and reason
    /// make the registers that move a study there, the same on every node.
    pub via: CorrectionRecord,
}

/// The record `identity` links to directly: its patient-level Patient ID
/// and issuer registers, with the later of the two. `None` without them,
/// or when they name the record itself (a merge undone).
pub(super) fn merge_link(db: &mut dyn Db, identity: &str) -> Result<Option<(String, CorrectionRecord)>> {
    let links: Vec<CorrectionRecord> = registers_of(db, CorrectionLevel::Patient, identity)?
        .into_iter()
        .filter(|register| moves_study(register.tag))
        .collect();
    let Some(latest) = links.iter().max_by(|a, b| (a.hlc, &a.origin).cmp(&(b.hlc, &b.origin))) else {
        return Ok(None);
    };
    let (id, issuer) = identity_parts(identity);
    let linked =
        |tag| links.iter().find(|register| register.attribute() == tag).map(|register| register.value.as_str());
    let target =
        identity_of(linked(tags::PATIENT_ID).unwrap_or(id), linked(tags::ISSUER_OF_PATIENT_ID).unwrap_or(issuer));
    Ok((target != identity).then(|| (target, latest.clone())))
}

/// Where studies arriving for the record `identity` go: the end of its
/// merge links. `None` when it is not merged, or its links go round (two
/// sites merging each record into the other at once) or run too long: the
/// studies then stay where their files say.
pub(super) fn merged_into(db: &mut dyn Db, identity: &str) -> Result<Option<MergeLink>> {
    let mut visited = vec![identity.to_string()];
    let mut followed: Option<MergeLink> = None;
    // One more round than links: the last sees whether the chain ends there.
    for _ in 0..=MAX_MERGE_LINKS {
        let current = visited.last().map(String::as_str).unwrap_or(identity);
        let Some((target, register)) = merge_link(db, current)? else {
            return Ok(followed);
        };
        if visited.contains(&target) {
            return Ok(None);
        }
        let via = match followed {
            Some(link) if (link.via.hlc, &link.via.origin) >= (register.hlc, &register.origin) => link.via,
            _ => register,
        };
        followed = Some(MergeLink { target: target.clone(), via });
        visited.push(target);
    }
    Ok(None)
}

/// The study registers that move `study_uid` along `link`: the same on
/// every node that follows it, so that nodes agree whichever followed first,
/// and below any deliberate move ([`MERGE_LINK_CLOCK_OFFSET`]).
pub(super) fn follow_registers(study_uid: &str, link: &MergeLink) -> Vec<CorrectionRecord> {
    let (id, issuer) = identity_parts(&link.target);
    [(tags::PATIENT_ID, id), (tags::ISSUER_OF_PATIENT_ID, issuer)]
        .into_iter()
        .map(|(tag, value)| CorrectionRecord {
            level: CorrectionLevel::Study,
            key: study_uid.to_string(),
            tag: haneul_dicom::model::tag_to_u32(tag),
            vr: "LO".into(),
            value: value.to_string(),
            hlc: link.via.hlc - MERGE_LINK_CLOCK_OFFSET,
            ..link.via.clone()
        })
        .collect()
}

/// Whether a study has a Patient ID or issuer register: it was moved, by a
/// person, or also by a merge link unless `by_a_person`. Links do not move
/// a study a person moved; one a link moved follows a later link.
pub(super) fn study_was_moved(tx: &mut dyn Db, study_uid: &str, by_a_person: bool) -> Result<bool> {
    let floor = if by_a_person { 0 } else { -MERGE_LINK_CLOCK_OFFSET };
    tx.exists(
        "SELECT 1 FROM corrections WHERE level = 'STUDY' AND key = ?1 AND tag IN (?2, ?3) AND hlc > ?4",
        &[
            study_uid.into(),
            i64::from(haneul_dicom::model::tag_to_u32(tags::PATIENT_ID)).into(),
            i64::from(haneul_dicom::model::tag_to_u32(tags::ISSUER_OF_PATIENT_ID)).into(),
            floor.into(),
        ],
    )
}

/// Whether files declaring these Specific Character Set values (as
/// written, `\`-joined) can carry the attributes of the record `identity`
/// (held, or made from its registers as a move makes it): a copy of a
/// study filed there is written with them.
pub(super) fn can_carry(db: &mut dyn Db, identity: &str, declared: &[String]) -> Result<bool> {
    let attrs = match patient_attributes(db, identity)? {
        Some(attrs) => attrs,
        None => {
            let mut attrs = Dataset::new();
            for register in registers_of(db, CorrectionLevel::Patient, identity)? {
                if !moves_study(register.tag) {
                    attrs.put(register.element());
                }
            }
            attrs
        }
    };
    let (id, issuer) = identity_parts(identity);
    let mut values: Vec<(VR, String)> = vec![(VR::LO, id.to_string()), (VR::LO, issuer.to_string())];
    values.extend(
        attrs
            .iter()
            .filter(|element| haneul_dicom::coerce::settable(element))
            .map(|element| (element.vr, element.value.to_strings().join("\\"))),
    );
    Ok(declared
        .iter()
        .all(|declared| values.iter().all(|(vr, value)| haneul_dicom::coerce::can_encode(declared, *vr, value))))
}

/// The Specific Character Set an instance's catalog attributes declare, as written.
pub(super) fn declared_character_set(instance_attrs: &Dataset) -> String {
    instance_attrs.strings(tags::SPECIFIC_CHARACTER_SET).join("\\")
}

/// The Specific Character Set each series of a study declares (that of its
/// first instance, from the catalog), by Series Instance UID.
pub(super) fn declared_character_sets(db: &mut dyn Db, study_uid: &str) -> Result<Vec<(String, String)>> {
    let firsts = db.query_all(
        "SELECT se.series_uid, i.attrs FROM instances i JOIN series se ON se.pk = i.series_pk WHERE i.pk IN
           (SELECT MIN(i.pk) FROM instances i JOIN series se ON se.pk = i.series_pk
            JOIN studies s ON s.pk = se.study_pk WHERE s.study_uid = ?1 GROUP BY se.pk)
         ORDER BY se.series_uid",
        &[study_uid.into()],
        |row| Ok((row.text(0)?, row.bytes(1)?)),
    )?;
    firsts
        .into_iter()
        .map(|(series_uid, stored)| {
            let attrs = decode_attrs(&stored, || format!("first instance of series {series_uid}"))?;
            Ok((series_uid, declared_character_set(&attrs)))
        })
        .collect()
}

/// The studies of a patient identity, oldest first: Study Instance UID and site.
pub(super) fn studies_of_patient(db: &mut dyn Db, identity: &str) -> Result<Vec<(String, String)>> {
    db.query_all(
        "SELECT s.study_uid, s.site FROM studies s JOIN patients p ON p.pk = s.patient_pk WHERE p.identity = ?1
         ORDER BY s.pk",
        &[identity.into()],
        |row| Ok((row.text(0)?, row.text(1)?)),
    )
}

/// The journal kind of a study that was not filed under the record its
/// patient was merged into, and why.
const MERGE_NOT_FOLLOWED: (&str, &str) = (
    "merge-not-followed",
    "the patient record was merged into another whose attributes this study's character set cannot carry; \
     the study stays under the record its files name",
);

/// Journal that `study_uid` stays under the merged record `identity`.
pub(super) fn note_merge_not_followed(
    tx: &mut dyn Db,
    identity: &str,
    study_uid: &str,
    origin: &Origin,
    at_ms: i64,
) -> Result<()> {
    let (kind, note) = MERGE_NOT_FOLLOWED;
    let mut event = Event::new(kind, origin).with_detail(serde_json::json!({ "note": note }));
    event.patient_id = patient_id_of(identity).map(str::to_string);
    event.study_uid = Some(study_uid.to_string());
    insert_event(tx, &event, at_ms)
}

/// Move the studies the merged record `identity` holds along its link
/// (those its files name, and those an earlier link filed there), each
/// whose files can carry the record it goes to; not one a person moved.
fn follow_merge_of_held(tx: &mut dyn Db, identity: &str, origin: &Origin, at_ms: i64) -> Result<()> {
    let Some(link) = merged_into(tx, identity)? else {
        return Ok(());
    };
    let mut moves = Vec::new();
    for (study_uid, _) in studies_of_patient(tx, identity)? {
        if study_was_moved(tx, &study_uid, true)? {
            continue;
        }
        let declared: Vec<String> =
            declared_character_sets(tx, &study_uid)?.into_iter().map(|(_, declared)| declared).collect();
        if can_carry(tx, &link.target, &declared)? {
            moves.extend(follow_registers(&study_uid, &link));
        } else {
            note_merge_not_followed(tx, identity, &study_uid, origin, at_ms)?;
        }
    }
    if moves.is_empty() {
        return Ok(());
    }
    let mut event = Event::new(CORRECTED, origin).with_detail(serde_json::json!({
        "reason": link.via.reason,
        "note": "studies of a merged patient record filed under the record it was merged into",
    }));
    event.patient_id = patient_id_of(identity).map(str::to_string);
    record_corrections(tx, &moves, &event, at_ms)?;
    Ok(())
}

/// Put the values of every register of `key` into the row `pk` of its
/// level: its attributes and the columns queries narrow with.
pub(super) fn apply_registers(tx: &mut dyn Db, level: CorrectionLevel, key: &str, pk: i64) -> Result<()> {
    let registers = registers_of(tx, level, key)?;
    if registers.is_empty() {
        return Ok(());
    }
    let table = match level {
        CorrectionLevel::Patient => "patients",
        CorrectionLevel::Study => {
            move_study(tx, pk, &registers)?;
            "studies"
        }
        CorrectionLevel::Series => "series",
    };
    let stored = tx.query_one(&format!("SELECT attrs FROM {table} WHERE pk = ?1"), &[pk.into()], |row| row.bytes(0))?;
    let mut attrs = decode_attrs(&stored, || format!("{table} row {pk}"))?;
    // The patient's identity is the patient row's, not the study's.
    for register in registers.iter().filter(|register| !moves_study(register.tag)) {
        attrs.put(register.element());
    }
    let text = |tag| attrs.string(tag).unwrap_or_default().to_string();
    let encoded = encode_attrs(&attrs);
    match level {
        CorrectionLevel::Patient => {
            let name = text(tags::PATIENT_NAME);
            let [alphabetic, ideographic, phonetic] = person_name_groups(&name);
            let birth_date = normalize_temporal(VR::DA, &text(tags::PATIENT_BIRTH_DATE)).unwrap_or_default();
            tx.execute(
                "UPDATE patients SET name = ?2, name_alphabetic = ?3, name_ideographic = ?4, name_phonetic = ?5,
                                     birth_date = ?6, sex = ?7, attrs = ?8 WHERE pk = ?1",
                &[
                    pk.into(),
                    (&name).into(),
                    (&alphabetic).into(),
                    (&ideographic).into(),
                    (&phonetic).into(),
                    (&birth_date).into(),
                    (&text(tags::PATIENT_SEX)).into(),
                    encoded[..].into(),
                ],
            )?;
        }
        CorrectionLevel::Study => {
            let study_date = normalize_temporal(VR::DA, &text(tags::STUDY_DATE)).unwrap_or_default();
            tx.execute(
                "UPDATE studies SET study_date = ?2, study_time = ?3, accession = ?4, study_id = ?5, description = ?6,
                                    referring_physician = ?7, attrs = ?8 WHERE pk = ?1",
                &[
                    pk.into(),
                    (&study_date).into(),
                    (&text(tags::STUDY_TIME)).into(),
                    (&text(tags::ACCESSION_NUMBER)).into(),
                    (&text(tags::STUDY_ID)).into(),
                    (&text(tags::STUDY_DESCRIPTION)).into(),
                    (&text(tags::REFERRING_PHYSICIAN_NAME)).into(),
                    encoded[..].into(),
                ],
            )?;
        }
        CorrectionLevel::Series => {
            // As ingest reads it (a stored "12.0" is 12).
            let series_number = attrs.int(tags::SERIES_NUMBER);
            tx.execute(
                "UPDATE series SET series_number = ?2, description = ?3, body_part = ?4, attrs = ?5 WHERE pk = ?1",
                &[
                    pk.into(),
                    series_number.into(),
                    (&text(tags::SERIES_DESCRIPTION)).into(),
                    (&text(tags::BODY_PART_EXAMINED)).into(),
                    encoded[..].into(),
                ],
            )?;
        }
    }
    Ok(())
}

/// A study with a Patient ID or issuer register belongs to the patient with
/// that identity: it is moved there (the patient made from its identity and
/// registers if not held here), and the patient it leaves is removed once it
/// has no other study.
fn move_study(tx: &mut dyn Db, study_pk: i64, registers: &[CorrectionRecord]) -> Result<()> {
    let corrected = |tag| registers.iter().find(|register| register.attribute() == tag).map(|register| &register.value);
    let (new_id, new_issuer) = (corrected(tags::PATIENT_ID), corrected(tags::ISSUER_OF_PATIENT_ID));
    if new_id.is_none() && new_issuer.is_none() {
        return Ok(());
    }
    let (from_pk, id, issuer) = tx.query_one(
        "SELECT p.pk, p.patient_id, p.issuer FROM studies s JOIN patients p ON p.pk = s.patient_pk WHERE s.pk = ?1",
        &[study_pk.into()],
        |row| Ok((row.int(0)?, row.text(1)?, row.text(2)?)),
    )?;
    let id = new_id.unwrap_or(&id);
    let issuer = new_issuer.unwrap_or(&issuer);
    // Never keyed by demographics: a move names the patient it goes to.
    if id.is_empty() {
        return Ok(());
    }
    let identity = identity_of(id, issuer);
    let to_pk =
        match tx.query_opt("SELECT pk FROM patients WHERE identity = ?1", &[(&identity).into()], |row| row.int(0))? {
            Some(pk) if pk == from_pk => return Ok(()),
            Some(pk) => pk,
            None => {
                // Made from its identity and its registers only, never from the patient the study leaves (the
                // wrong one): every site that makes it makes the same.
                let mut attrs = Dataset::new();
                attrs.put(Element::text(tags::PATIENT_ID, VR::LO, id.as_str()));
                attrs.put(Element::text(tags::ISSUER_OF_PATIENT_ID, VR::LO, issuer.as_str()));
                let pk = tx.query_one(
                    "INSERT INTO patients (identity, patient_id, issuer, name, name_alphabetic, name_ideographic,
                                           name_phonetic, birth_date, sex, attrs, created_ms)
                     SELECT ?1, ?2, ?3, '', '', '', '', '', '', ?4, created_ms FROM studies WHERE pk = ?5
                     RETURNING pk",
                    &[(&identity).into(), id.into(), issuer.into(), encode_attrs(&attrs)[..].into(), study_pk.into()],
                    |row| row.int(0),
                )?;
                apply_registers(tx, CorrectionLevel::Patient, &identity, pk)?;
                pk
            }
        };
    tx.execute("UPDATE studies SET patient_pk = ?2 WHERE pk = ?1", &[study_pk.into(), to_pk.into()])?;
    if !tx.exists("SELECT 1 FROM studies WHERE patient_pk = ?1 LIMIT 1", &[from_pk.into()])? {
        tx.execute("DELETE FROM patients WHERE pk = ?1", &[from_pk.into()])?;
    }
    Ok(())
}

/// The attributes of the patient a study was moved to, as registers that
/// replace those its files carry: every text attribute the patient row
/// holds, and the demographics it lacks as empty values, so that nothing
/// of the patient the files name is left in a copy.
fn moved_to(db: &mut dyn Db, identity: &str, study_registers: &[CorrectionRecord]) -> Result<Vec<CorrectionRecord>> {
    let Some(move_register) = study_registers.iter().filter(|register| moves_study(register.tag)).max_by_key(|r| r.hlc)
    else {
        return Ok(Vec::new());
    };
    let Some(mut attrs) = patient_attributes(db, identity)? else {
        return Ok(Vec::new());
    };
    for (tag, vr) in PATIENT_DEMOGRAPHICS {
        if !attrs.contains(tag) {
            attrs.put(Element::empty(tag, vr));
        }
    }
    Ok(attrs
        .iter()
        .filter(|element| haneul_dicom::coerce::settable(element))
        .map(|element| CorrectionRecord {
            level: CorrectionLevel::Patient,
            key: identity.to_string(),
            tag: haneul_dicom::model::tag_to_u32(element.tag),
            vr: element.vr.to_string().to_string(),
            value: element.value.to_strings().join("\\"),
            hlc: move_register.hlc,
            origin: move_register.origin.clone(),
            reason: move_register.reason.clone(),
        })
        .collect())
}

/// The registers of a study and of its patient (the study need not be held here).
pub(super) fn study_corrections(db: &mut dyn Db, study_uid: &str) -> Result<StudyCorrections> {
    let patient_identity = db.query_opt(
        "SELECT p.identity FROM studies s JOIN patients p ON p.pk = s.patient_pk WHERE s.study_uid = ?1",
        &[study_uid.into()],
        |row| row.text(0),
    )?;
    // A merge link of the patient names another record: it says nothing
    // about this study's files (those it moved have registers of their own).
    let mut registers = match &patient_identity {
        Some(identity) => registers_of(db, CorrectionLevel::Patient, identity)?
            .into_iter()
            .filter(|register| !moves_study(register.tag))
            .collect(),
        None => Vec::new(),
    };
    let study_registers = registers_of(db, CorrectionLevel::Study, study_uid)?;
    registers.extend(db.query_all(
        &format!(
            "SELECT {REGISTER_COLUMNS} FROM corrections WHERE level = 'SERIES' AND key IN
             (SELECT se.series_uid FROM series se JOIN studies s ON s.pk = se.study_pk WHERE s.study_uid = ?1)
             ORDER BY key, tag"
        ),
        &[study_uid.into()],
        register,
    )?);
    let moved_to = match &patient_identity {
        Some(identity) => moved_to(db, identity, &study_registers)?,
        None => Vec::new(),
    };
    registers.extend(study_registers);
    Ok(StudyCorrections { patient_identity, registers, moved_to })
}

/// The attributes of the patient row with this identity.
pub(super) fn patient_attributes(db: &mut dyn Db, identity: &str) -> Result<Option<Dataset>> {
    let stored =
        db.query_opt("SELECT attrs FROM patients WHERE identity = ?1", &[identity.into()], |row| row.bytes(0))?;
    stored.map(|stored| decode_attrs(&stored, || format!("patient {identity}"))).transpose()
}

/// Every register held, by level, key and attribute.
pub(super) fn all_registers(db: &mut dyn Db) -> Result<Vec<CorrectionRecord>> {
    db.query_all(&format!("SELECT {REGISTER_COLUMNS} FROM corrections ORDER BY level, key, tag"), &[], register)
}

/// The latest clock of any register (0 without any).
pub(super) fn latest_clock(db: &mut dyn Db) -> Result<i64> {
    db.query_one("SELECT CAST(COALESCE(MAX(hlc), 0) AS BIGINT) FROM corrections", &[], |row| row.int(0))
}
