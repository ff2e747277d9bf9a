//! Plain records exchanged with the catalog.

use haneul_dicom::Dataset;
use serde::{Deserialize, Serialize};

/// Who did something: the peer of an association or request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// Calling AE title, user name or tool name.
    pub actor: String,
    /// Network address of the peer, or `local` for command-line tools.
    pub address: String,
    /// Association or request id, to find the matching log lines.
    pub session: String,
    /// Site that data stored by this peer belongs to ("": the archive's default).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub site: String,
    /// Sites whose data this peer may see; empty: every site.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scope: Vec<String>,
}

impl Origin {
    /// Whether this peer may see data of `site`.
    pub fn may_see(&self, site: &str) -> bool {
        self.scope.is_empty() || self.scope.iter().any(|allowed| allowed == site)
    }
}

/// Where an instance's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// Path relative to the blob store root.
    pub path: String,
    pub size: u64,
    /// BLAKE3 digest of the whole file.
    pub digest: [u8; 32],
}

/// Patient-level facts taken from an instance.
#[derive(Debug, Clone, Default)]
pub struct PatientFacts {
    pub patient_id: String,
    pub issuer: String,
    /// Decoded Patient's Name, all component groups.
    pub name: String,
    pub birth_date: String,
    pub sex: String,
    /// Every patient-level attribute of the instance.
    pub attrs: Dataset,
}

#[derive(Debug, Clone, Default)]
pub struct StudyFacts {
    pub study_uid: String,
    /// Normalised to digits (YYYYMMDD) for range queries.
    pub study_date: String,
    pub study_time: String,
    pub accession: String,
    pub study_id: String,
    pub description: String,
    pub referring_physician: String,
    pub attrs: Dataset,
}

#[derive(Debug, Clone, Default)]
pub struct SeriesFacts {
    pub series_uid: String,
    pub modality: String,
    pub series_number: Option<i64>,
    pub description: String,
    pub body_part: String,
    pub attrs: Dataset,
}

#[derive(Debug, Clone)]
pub struct InstanceFacts {
    pub sop_uid: String,
    pub sop_class: String,
    pub instance_number: Option<i64>,
    pub transfer_syntax: String,
    /// Offset of the data set in the blob (after the file meta group).
    pub dataset_offset: u64,
    pub blob: BlobInfo,
    /// BLAKE3 of the data set alone (the file without its meta group, which
    /// names the sender): equal for copies of one instance on two nodes.
    pub content_digest: Option<[u8; 32]>,
    pub received_ms: i64,
    /// Every instance-level attribute (large binary values as references).
    pub attrs: Dataset,
    /// The blob's fsync had finished before this commit. When false, the
    /// blob is recorded as unsettled until a later commit settles it, and
    /// start-up recovery re-checks it.
    pub blob_durable: bool,
    /// The blob's whole bytes, for an unsettled blob whose store is
    /// acknowledged before its own fsync: committed with the entry and kept
    /// until the blob is settled, so that start-up recovery can write the
    /// file again after a power failure. One disk flush (the catalog's) then
    /// makes both durable. Only for small blobs on local disk.
    pub write_ahead: Option<Vec<u8>>,
}

/// One instance to record, split by level.
#[derive(Debug, Clone)]
pub struct NewInstance {
    pub patient: PatientFacts,
    pub study: StudyFacts,
    pub series: SeriesFacts,
    pub instance: InstanceFacts,
    pub origin: Origin,
    /// Overrides the batch's policy for this instance (replicated instances
    /// use [`DuplicatePolicy::KeepBoth`]).
    pub duplicate_policy: Option<DuplicatePolicy>,
}

/// Everything one catalog transaction records.
#[derive(Debug, Clone, Copy)]
pub struct CommitBatch<'a> {
    pub instances: &'a [NewInstance],
    pub policy: DuplicatePolicy,
    pub events: &'a [Event],
    /// Blob paths of earlier commits whose fsync has since finished.
    pub settled: &'a [String],
    /// New start-up recovery watermark (oldest shard with unsettled files), if it moved.
    pub scan_from: Option<Watermark<'a>>,
}

/// A node's start-up recovery watermark: the setting that holds it (one per
/// node where several share the catalog) and its new value.
#[derive(Debug, Clone, Copy)]
pub struct Watermark<'a> {
    pub key: &'a str,
    pub shard: &'a str,
}

impl<'a> CommitBatch<'a> {
    pub fn events(events: &'a [Event]) -> CommitBatch<'a> {
        CommitBatch { instances: &[], policy: DuplicatePolicy::KeepFirst, events, settled: &[], scan_from: None }
    }
}

/// What to do when a SOP Instance UID arrives again with different bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DuplicatePolicy {
    /// Keep the copy already stored; answer with a warning.
    #[default]
    KeepFirst,
    /// Refuse the new copy with a failure status.
    Reject,
    /// Make the new copy current; the old one is kept as a superseded version.
    Replace,
    /// Keep the current copy and record the new one as a conflicting version
    /// for review. Used for what a replication peer sends, never configured:
    /// two sites holding different bytes under one UID both keep both.
    #[serde(skip)]
    KeepBoth,
}

/// What happened to one instance of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    Stored,
    /// Same UID and same bytes: already stored, nothing changed.
    AlreadyStored,
    /// Same UID, different bytes, the first copy was kept.
    DuplicateIgnored,
    /// Same UID, different bytes, refused by policy or because it conflicts
    /// with the stored copy's place in the hierarchy.
    DuplicateRejected {
        reason: String,
    },
    /// Same UID, different bytes, the new copy is current; the old blob is kept.
    Replaced {
        superseded_path: String,
    },
    /// Same UID, different bytes, from a replication peer: the current copy
    /// stays, the new one is kept as a conflicting version (also when it
    /// already was: same version again).
    Conflict {
        current_digest: [u8; 32],
    },
    /// From a replication peer, an instance removed here: not stored again
    /// (the peer had not yet learnt of the removal).
    RemovedHere,
}

impl CommitOutcome {
    /// Whether the new blob is now referenced by the catalog.
    pub fn keeps_new_blob(&self) -> bool {
        matches!(self, CommitOutcome::Stored | CommitOutcome::Replaced { .. } | CommitOutcome::Conflict { .. })
    }
}

/// A stored instance and where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredInstance {
    pub pk: i64,
    pub sop_uid: String,
    pub sop_class: String,
    pub transfer_syntax: String,
    pub study_uid: String,
    pub series_uid: String,
    pub blob: BlobInfo,
    pub dataset_offset: u64,
    /// False while the blob's bytes may not be durable yet: its fsync may
    /// still be running and no copy of them was committed with the entry
    /// (see [`InstanceFacts::blob_durable`] and [`InstanceFacts::write_ahead`]).
    pub settled: bool,
    /// Whether corrections apply to its study or patient ([`CorrectionRecord`]):
    /// a retrieved copy then carries the corrected values.
    pub corrected: bool,
}

/// A version of an instance kept beside the current one because a
/// replication peer holds other bytes under the same UID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConflictRecord {
    pub pk: i64,
    pub sop_uid: String,
    pub study_uid: String,
    pub series_uid: String,
    pub transfer_syntax: String,
    #[serde(skip)]
    pub blob: BlobInfo,
    pub dataset_offset: u64,
    /// The node that sent this version.
    pub source_ae: String,
    pub detected_ms: i64,
    /// BLAKE3 of this version and of the current one, hex.
    pub digest: String,
    pub current_digest: Option<String>,
}

/// What a removal took out of the catalog.
#[derive(Debug, Clone, Default)]
pub struct Removed {
    pub instances: Vec<StoredInstance>,
    /// Every file to delete: the instances' and their superseded versions'.
    pub trashed_paths: Vec<String>,
}

/// Why instances are removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovalKind {
    /// Someone removed them: remembered in `removed_uids`, so that a
    /// replication peer's copy does not bring them back.
    Deliberate,
    /// A store taken back (its file did not become durable) or repaired by
    /// recovery: not remembered, the sender will send it again.
    Undo,
}

/// A journal entry to append.
#[derive(Debug, Clone, Default)]
pub struct Event {
    pub kind: String,
    pub origin: Origin,
    pub patient_id: Option<String>,
    pub study_uid: Option<String>,
    pub series_uid: Option<String>,
    pub sop_uid: Option<String>,
    pub detail: serde_json::Value,
}

impl Event {
    pub fn new(kind: &str, origin: &Origin) -> Event {
        Event { kind: kind.to_string(), origin: origin.clone(), detail: serde_json::Value::Null, ..Event::default() }
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Event {
        self.detail = detail;
        self
    }
}

/// A journal entry as stored.
#[derive(Debug, Clone, Serialize)]
pub struct StoredEvent {
    pub seq: i64,
    pub at_ms: i64,
    pub kind: String,
    pub origin: Origin,
    pub patient_id: Option<String>,
    pub study_uid: Option<String>,
    pub series_uid: Option<String>,
    pub sop_uid: Option<String>,
    pub detail: serde_json::Value,
}

/// Counts of what the catalog holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Statistics {
    pub patients: u64,
    pub studies: u64,
    pub series: u64,
    pub instances: u64,
    pub stored_bytes: u64,
}

/// One version of an instance the archive holds: the current one, or one
/// kept as a conflict (a peer's different bytes under the same UID). What
/// anti-entropy compares between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldVersion {
    pub study_uid: String,
    pub sop_uid: String,
    /// SOP class of the current instance ("" when a conflict outlived it).
    pub sop_class: String,
    pub transfer_syntax: String,
    pub blob: BlobInfo,
    pub dataset_offset: u64,
    /// BLAKE3 of the data set (the file after its meta group): the content
    /// digest, `None` for a version stored before schema version 4 until
    /// anti-entropy computed it from the file.
    pub dataset_digest: Option<[u8; 32]>,
    /// False for a conflict, true for the current instance.
    pub current: bool,
}

/// Which held versions to visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionScope<'a> {
    All,
    Study(&'a str),
    Instance(&'a str),
}

/// The journal kind of a correction: its registers are in
/// `detail.corrections`, and replication passes them on to the peers.
pub const CORRECTED: &str = "attributes-corrected";

/// Which record a correction register belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum CorrectionLevel {
    /// Keyed by the patient's identity (Patient ID and issuer, see [`patient_identity`]).
    /// A Patient ID or issuer register of this level links a merged record
    /// to the one that took its studies (see [`moves_study`]).
    Patient,
    /// Keyed by the Study Instance UID.
    Study,
    /// Keyed by the Series Instance UID.
    Series,
}

impl CorrectionLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            CorrectionLevel::Patient => "PATIENT",
            CorrectionLevel::Study => "STUDY",
            CorrectionLevel::Series => "SERIES",
        }
    }

    pub fn parse(text: &str) -> Option<CorrectionLevel> {
        match text {
            "PATIENT" => Some(CorrectionLevel::Patient),
            "STUDY" => Some(CorrectionLevel::Study),
            "SERIES" => Some(CorrectionLevel::Series),
            _ => None,
        }
    }
}

/// The corrected value of one attribute of one patient or study: a
/// last-writer-wins register ordered by hybrid logical clock, so that every
/// node holding the same registers holds the same values, whatever order
/// they arrived in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorrectionRecord {
    pub level: CorrectionLevel,
    pub key: String,
    /// `(group << 16) | element`.
    pub tag: u32,
    pub vr: String,
    /// The new value as text (several values joined by `\`); empty removes the value.
    pub value: String,
    /// Hybrid logical clock: milliseconds since the epoch << 16 | a counter.
    pub hlc: i64,
    /// The node that made the correction (its AE title): breaks ties between equal clocks.
    pub origin: String,
    pub reason: String,
}

impl CorrectionRecord {
    /// Whether this register replaces `other`: a later clock, or the same
    /// clock from a greater origin. The same correction does not replace itself.
    pub fn supersedes(&self, other: &CorrectionRecord) -> bool {
        (self.hlc, &self.origin, &self.value) > (other.hlc, &other.origin, &other.value)
    }

    /// Wall-clock milliseconds of the clock (of the link's, for a register a merge link made).
    pub fn at_ms(&self) -> i64 {
        if self.made_by_merge_link() {
            return (self.hlc + MERGE_LINK_CLOCK_OFFSET) >> 16;
        }
        self.hlc >> 16
    }

    /// Whether a merge link made this study move register (see
    /// [`MERGE_LINK_CLOCK_OFFSET`]), rather than a person or a peer's person.
    pub fn made_by_merge_link(&self) -> bool {
        self.level == CorrectionLevel::Study
            && moves_study(self.tag)
            && self.hlc < 0
            && self.hlc > -MERGE_LINK_CLOCK_OFFSET
    }

    pub fn attribute(&self) -> haneul_dicom::Tag {
        haneul_dicom::model::tag_from_u32(self.tag)
    }

    /// The VR recorded (LO should it not parse: the register was checked when recorded).
    pub fn value_representation(&self) -> haneul_dicom::VR {
        self.vr.parse().unwrap_or(haneul_dicom::VR::LO)
    }

    /// The corrected value as an element of a data set.
    pub fn element(&self) -> haneul_dicom::Element {
        haneul_dicom::Element::from_written_text(self.attribute(), self.value_representation(), &self.value)
    }
}

/// The registers that apply to a study: its own, its patient's and its series'.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StudyCorrections {
    /// The identity of the study's patient; `None` when the study is not held here.
    pub patient_identity: Option<String>,
    pub registers: Vec<CorrectionRecord>,
    /// For a study moved to another patient (a Patient ID or issuer
    /// register): that patient's attributes as held here, which replace
    /// those of the patient its files name. Derived, not registers.
    #[serde(skip)]
    pub moved_to: Vec<CorrectionRecord>,
}

impl StudyCorrections {
    /// Everything a copy of a file of the study's series `series_uid` needs
    /// changed: the patient it was moved to, then the registers (of that
    /// series only, among the series registers).
    pub fn to_apply(&self, series_uid: &str) -> Vec<CorrectionRecord> {
        let applies =
            |register: &&CorrectionRecord| register.level != CorrectionLevel::Series || register.key == series_uid;
        self.moved_to.iter().chain(self.registers.iter().filter(applies)).cloned().collect()
    }
}

/// The study move registers a merge link makes carry the link's clock less
/// this, below every clock a person's correction has (clocks are positive
/// and far below it): a deliberate move of the study, earlier or later,
/// always wins over the link's, whichever a node learns first, while links
/// still order among themselves by their clocks.
pub const MERGE_LINK_CLOCK_OFFSET: i64 = 1 << 62;

/// Whether a study-level register of this attribute moves the study to
/// another patient (its Patient ID or the ID's issuer). At the patient
/// level such a register says that the record was merged into the one it
/// names: studies arriving for it are filed there; one naming the record
/// itself ends the link.
pub fn moves_study(tag: u32) -> bool {
    let tag = haneul_dicom::model::tag_from_u32(tag);
    tag == haneul_dicom::tags::PATIENT_ID || tag == haneul_dicom::tags::ISSUER_OF_PATIENT_ID
}

/// The identity of a patient with a Patient ID (not empty) and its issuer.
pub fn identity_of(patient_id: &str, issuer: &str) -> String {
    format!("{patient_id}\\{issuer}")
}

/// The Patient ID a [`patient_identity`] was made of; `None` for a patient
/// without one.
pub fn patient_id_of(identity: &str) -> Option<&str> {
    Some(identity_parts(identity).0).filter(|id| !id.is_empty())
}

/// The Patient ID ("" for a patient without one) and issuer a
/// [`patient_identity`] was made of: `ID\issuer`, or `\issuer\name\birth date`.
pub fn identity_parts(identity: &str) -> (&str, &str) {
    let (id, rest) = identity.split_once('\\').unwrap_or((identity, ""));
    let issuer = if id.is_empty() { rest.split('\\').next().unwrap_or_default() } else { rest };
    (id, issuer)
}

/// The demographics a study move records for the patient it goes to, and
/// that a copy of a moved study always replaces (empty where not held).
pub const PATIENT_DEMOGRAPHICS: [(haneul_dicom::Tag, haneul_dicom::VR); 3] = [
    (haneul_dicom::tags::PATIENT_NAME, haneul_dicom::VR::PN),
    (haneul_dicom::tags::PATIENT_BIRTH_DATE, haneul_dicom::VR::DA),
    (haneul_dicom::tags::PATIENT_SEX, haneul_dicom::VR::CS),
];

/// The key of a patient in the catalog: Patient ID with its issuer, or,
/// without a Patient ID, the demographics.
pub fn patient_identity(patient: &PatientFacts) -> String {
    if !patient.patient_id.is_empty() {
        return identity_of(&patient.patient_id, &patient.issuer);
    }
    // Without a Patient ID, only identical demographics are the same patient.
    format!(
        "\\{}\\{}\\{}",
        patient.issuer,
        haneul_dicom::matching::normalize_person_name(&patient.name),
        patient.birth_date
    )
}
