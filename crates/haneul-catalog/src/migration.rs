//! Records of a migration from a legacy PACS: the study list of each source,
//! each study's state, and the discrepancies its verification found.

use serde::{Deserialize, Serialize};

/// Where one study of a migration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MigrationState {
    /// Listed at the source, not fetched yet.
    Pending,
    /// Being fetched now (or when the node stopped: set back to pending at start).
    Running,
    /// Fetched; not verified yet.
    Done,
    /// Fetching failed (the reason is in `detail`); retried until the attempts run out.
    Failed,
    /// Both sides hold the same instances.
    Verified,
    /// Verification found differences (listed as discrepancies).
    Discrepant,
}

impl MigrationState {
    pub const ALL: [MigrationState; 6] = [
        MigrationState::Pending,
        MigrationState::Running,
        MigrationState::Done,
        MigrationState::Failed,
        MigrationState::Verified,
        MigrationState::Discrepant,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MigrationState::Pending => "pending",
            MigrationState::Running => "running",
            MigrationState::Done => "done",
            MigrationState::Failed => "failed",
            MigrationState::Verified => "verified",
            MigrationState::Discrepant => "discrepant",
        }
    }

    pub fn parse(text: &str) -> Option<MigrationState> {
        MigrationState::ALL.into_iter().find(|state| state.as_str() == text)
    }
}

/// A study found at the source while planning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedStudy {
    pub study_uid: String,
    pub patient_id: String,
    pub patient_name: String,
    pub study_date: String,
    /// The source's count of the study's instances, when it gives one.
    pub expected_instances: Option<i64>,
}

/// One study of a migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationStudy {
    pub source: String,
    pub study_uid: String,
    pub patient_id: String,
    pub patient_name: String,
    pub study_date: String,
    pub expected_instances: Option<i64>,
    pub state: MigrationState,
    pub attempts: i64,
    /// Instances the last fetch brought over.
    pub migrated_instances: i64,
    /// The failure reason or a summary of the discrepancies.
    pub detail: String,
    pub updated_ms: i64,
    /// A failed study is not retried before this time.
    pub next_attempt_ms: i64,
}

/// A change to one study's record.
#[derive(Debug, Clone, Default)]
pub struct MigrationUpdate {
    pub state: Option<MigrationState>,
    pub detail: Option<String>,
    pub migrated_instances: Option<i64>,
    pub next_attempt_ms: Option<i64>,
    /// Replace the study's discrepancies with these.
    pub discrepancies: Option<Vec<Discrepancy>>,
}

/// A difference between the source and the archive in one study.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discrepancy {
    pub study_uid: String,
    /// Empty when the difference concerns the whole study.
    pub sop_uid: String,
    /// `missing-here`, `missing-at-source`, `digest-mismatch`, …
    pub kind: String,
    pub detail: String,
}

/// How many studies of a migration are in each state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationCounts {
    pub total: i64,
    pub pending: i64,
    pub running: i64,
    pub done: i64,
    pub failed: i64,
    pub verified: i64,
    pub discrepant: i64,
    /// Sum of the source's instance counts (studies without one count as 0).
    pub expected_instances: i64,
    pub migrated_instances: i64,
    pub discrepancies: i64,
}

/// A node claiming migration studies.
#[derive(Debug, Clone, Copy)]
pub struct Claimant<'a> {
    /// The node's name ("" for a lone node).
    pub node: &'a str,
    pub now_ms: i64,
    /// A running study whose claim was last renewed before this was claimed
    /// by a node that stopped: it may be claimed again.
    pub abandoned_before_ms: i64,
}
