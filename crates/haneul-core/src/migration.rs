//! The archive's side of a migration from a legacy PACS: the persisted study
//! list and its states (the work itself is `haneul-migrate`'s), and what the
//! archive holds of a study, for verification.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use haneul_catalog::{
    Discrepancy, MigrationCounts, MigrationState, MigrationStudy, MigrationUpdate, Origin, PlannedStudy,
};
use haneul_dicom::levels::{InformationModel, Level};
use haneul_dicom::matching::Query;
use haneul_dicom::{tags, Dataset, Element, VR};

use crate::{query_event, run_blocking, Archive, ArchiveError};

/// What a migration is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MigrationPhase {
    /// Never started, or not since the server started and nothing is left to do.
    Idle,
    /// Listing the studies at the source.
    Planning,
    /// Fetching and verifying studies.
    Migrating,
    /// Outside its time windows (no association allowed now), or waiting to retry.
    Waiting,
    /// Verifying again every study already fetched.
    Verifying,
    Paused,
    /// Every study is verified, discrepant, or failed with no attempt left.
    Finished,
}

/// A migration's progress, as the status API and the CLI show it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MigrationStatus {
    pub source: String,
    /// How studies are fetched: `c-move`, `c-get`, `folder` or `dicomweb`.
    pub method: String,
    pub phase: MigrationPhase,
    pub counts: MigrationCounts,
    /// Associations (or parallel studies) allowed now by the time windows.
    pub parallel_now: usize,
    /// Instances fetched per second since this run started.
    pub instances_per_second: f64,
    /// Seconds until every expected instance is fetched, at that rate.
    pub eta_seconds: Option<u64>,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub last_error: Option<String>,
}

/// A per-source gauge: name, help and how to read it off a status.
type SourceGauge = (&'static str, &'static str, fn(&MigrationStatus) -> f64);

/// The migrations' figures in Prometheus text, a series per source (and per
/// study state), appended to `out`.
pub fn render_prometheus(statuses: &[MigrationStatus], out: &mut String) {
    use std::fmt::Write;
    if statuses.is_empty() {
        return;
    }
    let mut family = |name: &str, kind: &str, help: &str, values: &mut dyn Iterator<Item = (String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in values {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    };
    let source = |status: &MigrationStatus| format!("source=\"{}\"", status.source);
    family(
        "haneul_migration_studies",
        "gauge",
        "Studies of each migration source by state",
        &mut statuses.iter().flat_map(|status| {
            let c = &status.counts;
            [
                ("pending", c.pending),
                ("running", c.running),
                ("done", c.done),
                ("failed", c.failed),
                ("verified", c.verified),
                ("discrepant", c.discrepant),
            ]
            .into_iter()
            .map(move |(state, count)| (format!("{},state=\"{state}\"", source(status)), count as f64))
        }),
    );
    let per_source: [SourceGauge; 5] = [
        ("haneul_migration_instances_expected", "Instances the source listed", |s| s.counts.expected_instances as f64),
        ("haneul_migration_instances_migrated", "Instances verified here and at the source", |s| {
            s.counts.migrated_instances as f64
        }),
        ("haneul_migration_discrepancies", "Discrepancies the last verification found", |s| {
            s.counts.discrepancies as f64
        }),
        ("haneul_migration_instances_per_second", "Fetch rate of the run under way", |s| s.instances_per_second),
        ("haneul_migration_parallel_allowed", "Associations the time windows allow now", |s| s.parallel_now as f64),
    ];
    for (name, help, value) in per_source {
        family(name, "gauge", help, &mut statuses.iter().map(|status| (source(status), value(status))));
    }
}

/// Everything a migration found: its status, every study and every discrepancy.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MigrationReport {
    pub status: MigrationStatus,
    pub studies: Vec<MigrationStudy>,
    pub discrepancies: Vec<Discrepancy>,
}

/// What a `start` may narrow.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct StartOptions {
    /// Study dates to list at the source (YYYYMMDD, inclusive); default: all.
    pub since: Option<String>,
    pub until: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("no migration source named {0:?} is configured")]
    UnknownSource(String),
    #[error("migrations are not set up on this server")]
    NotConfigured,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

pub type MigrationFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, MigrationError>> + Send + 'a>>;

/// Runs migrations. Implemented by `haneul-migrate` and registered with
/// [`Archive::set_migrations`], so that the HTTP edge can start, pause and
/// follow them without knowing how they work.
pub trait MigrationControl: Send + Sync {
    /// Plan (once), then fetch and verify every study; continues a stopped run.
    fn start<'a>(&'a self, source: &'a str, options: StartOptions) -> MigrationFuture<'a, MigrationStatus>;
    /// Verify again every study already fetched.
    fn verify<'a>(&'a self, source: &'a str) -> MigrationFuture<'a, MigrationStatus>;
    fn pause<'a>(&'a self, source: &'a str) -> MigrationFuture<'a, MigrationStatus>;
    /// One source's status, or every configured source's.
    fn status<'a>(&'a self, source: Option<&'a str>) -> MigrationFuture<'a, Vec<MigrationStatus>>;
    fn report<'a>(&'a self, source: &'a str) -> MigrationFuture<'a, MigrationReport>;
}

impl Archive {
    pub fn set_migrations(&self, control: Arc<dyn MigrationControl>) {
        *self.migrations.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(control);
    }

    /// The migration runner, once `haneul serve` has set it up.
    pub fn migrations(&self) -> Result<Arc<dyn MigrationControl>, MigrationError> {
        self.migrations
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .ok_or(MigrationError::NotConfigured)
    }

    /// Add studies found at `source`; returns how many were new.
    pub async fn migration_plan(&self, source: &str, studies: Vec<PlannedStudy>) -> Result<usize, ArchiveError> {
        let (catalog, source) = (Arc::clone(&self.catalog), source.to_string());
        run_blocking(move || Ok(catalog.migration_plan(&source, &studies)?)).await
    }

    /// Claim studies to fetch for this node (see
    /// [`haneul_catalog::Catalog::migration_claim`]); a running study whose
    /// claim was not renewed for `lease` is taken over.
    pub async fn migration_claim(
        &self,
        source: &str,
        limit: usize,
        now_ms: i64,
        lease: std::time::Duration,
        max_attempts: i64,
    ) -> Result<Vec<MigrationStudy>, ArchiveError> {
        let (catalog, source, node) = (Arc::clone(&self.catalog), source.to_string(), self.node_name().to_string());
        let abandoned_before_ms = now_ms.saturating_sub(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        run_blocking(move || {
            let claimant = haneul_catalog::Claimant { node: &node, now_ms, abandoned_before_ms };
            Ok(catalog.migration_claim(&source, limit, &claimant, max_attempts)?)
        })
        .await
    }

    /// Renew this node's claims on its running studies of `source`.
    pub async fn migration_renew(&self, source: &str, now_ms: i64) -> Result<usize, ArchiveError> {
        let (catalog, source, node) = (Arc::clone(&self.catalog), source.to_string(), self.node_name().to_string());
        run_blocking(move || Ok(catalog.migration_renew(&source, &node, now_ms)?)).await
    }

    /// Put this node's running studies of `source` back to pending (a run starts again).
    pub async fn migration_release(&self, source: &str) -> Result<usize, ArchiveError> {
        let (catalog, source, node) = (Arc::clone(&self.catalog), source.to_string(), self.node_name().to_string());
        run_blocking(move || Ok(catalog.migration_release(&source, &node)?)).await
    }

    pub async fn migration_update(
        &self,
        source: &str,
        study_uid: &str,
        update: MigrationUpdate,
    ) -> Result<(), ArchiveError> {
        let (catalog, source, study_uid) = (Arc::clone(&self.catalog), source.to_string(), study_uid.to_string());
        run_blocking(move || Ok(catalog.migration_update(&source, &study_uid, &update)?)).await
    }

    pub async fn migration_reset(
        &self,
        source: &str,
        from: Vec<MigrationState>,
        to: MigrationState,
    ) -> Result<usize, ArchiveError> {
        let (catalog, source) = (Arc::clone(&self.catalog), source.to_string());
        run_blocking(move || Ok(catalog.migration_reset(&source, &from, to)?)).await
    }

    pub async fn migration_counts(&self, source: &str) -> Result<MigrationCounts, ArchiveError> {
        let (catalog, source) = (Arc::clone(&self.catalog), source.to_string());
        run_blocking(move || Ok(catalog.migration_counts(&source)?)).await
    }

    pub async fn migration_studies(
        &self,
        source: &str,
        states: Option<Vec<MigrationState>>,
        after_uid: &str,
        limit: usize,
    ) -> Result<Vec<MigrationStudy>, ArchiveError> {
        let (catalog, source, after) = (Arc::clone(&self.catalog), source.to_string(), after_uid.to_string());
        run_blocking(move || Ok(catalog.migration_studies(&source, states.as_deref(), &after, limit)?)).await
    }

    pub async fn migration_discrepancies(&self, source: &str) -> Result<Vec<Discrepancy>, ArchiveError> {
        let (catalog, source) = (Arc::clone(&self.catalog), source.to_string());
        run_blocking(move || Ok(catalog.migration_discrepancies(&source)?)).await
    }

    /// SOP Instance UIDs this archive holds in a study, sorted; journaled as a
    /// query by `origin` (the migration that verifies the study).
    pub async fn study_sop_uids(&self, study_uid: &str, origin: &Origin) -> Result<Vec<String>, ArchiveError> {
        let held = self.study_instances_held(study_uid, origin).await?;
        Ok(held.into_keys().collect())
    }

    /// The BLAKE3 digest of each instance this archive holds in a study, by
    /// SOP Instance UID; journaled as a query by `origin`.
    pub async fn study_instances_held(
        &self,
        study_uid: &str,
        origin: &Origin,
    ) -> Result<BTreeMap<String, [u8; 32]>, ArchiveError> {
        let mut identifier = Dataset::new();
        identifier.put(Element::text(tags::QUERY_RETRIEVE_LEVEL, VR::CS, Level::Image.as_str()));
        identifier.put(Element::text(tags::STUDY_INSTANCE_UID, VR::UI, study_uid));
        let query = Query::from_identifier(&identifier, InformationModel::StudyRoot)
            .map_err(|error| ArchiveError::Task(format!("study query: {error}")))?;
        self.journal(query_event("query", &query, origin));
        let catalog = Arc::clone(&self.catalog);
        let found = run_blocking(move || Ok(catalog.find_instances(&query)?)).await?;
        Ok(found.into_iter().map(|instance| (instance.sop_uid, instance.blob.digest)).collect())
    }
}
