//! Listing what a DICOM node holds through C-FIND (Study Root).

use std::time::Duration;

/// A DICOM node to query: its AE title and address, and ours as it knows us.
#[derive(Debug, Clone)]
pub struct DicomNode {
    pub ae_title: String,
    pub host: String,
    pub port: u16,
    /// Our AE title as the node knows us.
    pub calling_ae: String,
    pub max_pdu_length: u32,
    pub timeout: Duration,
}

/// Study dates to list, inclusive, as DICOM dates (YYYYMMDD).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateRange {
    pub from: String,
    pub to: String,
}

/// One study as the node describes it at STUDY level.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StudySummary {
    pub study_uid: String,
    pub patient_id: String,
    pub patient_name: String,
    pub study_date: String,
    /// Number of Study Related Instances, when the node gives it.
    pub instances: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("{node}: {detail}")]
    Node { node: String, detail: String },
}

/// Every study of `node` dated within `range`, plus studies without a date
/// when the range is open. A query whose answers reach `cap` (the node's
/// limit on C-FIND answers; `None`: no limit) is split into smaller date
/// ranges, down to single days and then times of day.
pub async fn list_studies(
    _node: &DicomNode,
    _range: &DateRange,
    _cap: Option<usize>,
) -> Result<Vec<StudySummary>, WalkError> {
    todo!("helper: walk")
}

/// SOP Instance UIDs of one study at `node` (C-FIND at IMAGE level).
pub async fn study_instances(_node: &DicomNode, _study_uid: &str) -> Result<Vec<String>, WalkError> {
    todo!("helper: walk")
}
