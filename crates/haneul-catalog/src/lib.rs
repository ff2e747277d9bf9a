//! The catalog: what the archive holds (patients, studies, series, instances
//! and where each instance's bytes are) and the journal of what happened.
//!
//! [`Catalog`] is the one database abstraction, implemented once in SQL by
//! [`SqlCatalog`] over an engine: [`SqliteCatalog`] is the embedded engine
//! behind the zero-configuration default, [`PostgresCatalog`] the one for
//! several nodes sharing a catalog. The catalog narrows
//! query candidates with its indexes and then applies the shared matcher of
//! `haneul-dicom` ([`haneul_dicom::matching::Query::matches`]), so C-FIND and
//! QIDO-RS answer from the same rules.
//!
//! Invariant: the catalog never touches instance files; it stores only their
//! relative paths, sizes and digests.

mod accounts;
mod migration;
mod postgres;
mod records;
mod shared;
mod snapshot;
mod sql;
mod sqlite;
#[doc(hidden)]
pub mod testing;

pub use accounts::*;
pub use migration::*;
pub use postgres::{PostgresCatalog, PostgresEngine, PostgresOptions, UrlFacts};
pub use records::*;
pub use shared::{LeaseRecord, SharedAeRecord};
pub use snapshot::{BlobKind, CatalogSnapshot, ReferencedBlob, SnapshotCounts};
pub use sql::{Engine, SqlCatalog};
pub use sqlite::{SqliteCatalog, SqliteEngine};

use std::collections::HashSet;
use std::path::Path;

use haneul_dicom::matching::Query;
use haneul_dicom::Dataset;

/// The server's message and SQLSTATE where there is one: the client's own
/// display says only "db error".
fn postgres_detail(error: &::postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("postgresql error: {}", postgres_detail(.0))]
    Postgres(#[from] ::postgres::Error),
    #[error("postgresql catalog: {0}")]
    PostgresSetup(String),
    #[error("stored attributes of {what} are unreadable: {source}")]
    CorruptAttributes { what: String, source: postcard::Error },
    #[error("catalog schema version {found} is newer than this build understands ({supported})")]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("catalog is busy: {0}")]
    Busy(String),
    #[error("{0} already exists")]
    Duplicate(String),
    #[error("stored record is invalid: {0}")]
    CorruptRecord(String),
    #[error("catalog snapshot path {0} is not valid UTF-8")]
    SnapshotPath(std::path::PathBuf),
}

pub type Result<T> = std::result::Result<T, CatalogError>;

/// The operations the archive core needs from a catalog engine.
pub trait Catalog: Send + Sync {
    /// Record a batch in one durable transaction: new instances, journal
    /// events, settled blobs and the recovery watermark. Outcomes come back
    /// in the order of `batch.instances`.
    fn commit(&self, batch: &CommitBatch<'_>) -> Result<Vec<CommitOutcome>>;

    /// Remove instances with their superseded versions, and the series,
    /// studies and patients left empty, in one transaction with `event`.
    /// The files of everything removed are put in the trash in the same
    /// transaction: the caller deletes them, then calls [`Catalog::empty_trash`].
    /// A deliberate removal is remembered (see [`RemovalKind`]).
    fn remove_instances(&self, sop_uids: &[String], event: Option<&Event>, kind: RemovalKind) -> Result<Removed>;

    /// Blob paths removed from the catalog whose files may still exist.
    fn trash(&self) -> Result<Vec<String>>;

    /// Forget trashed paths once their files are gone.
    fn empty_trash(&self, paths: &[String]) -> Result<()>;

    /// Instances whose blob was not yet known to be durable when they were
    /// committed and has not been settled since.
    fn unsettled_instances(&self) -> Result<Vec<StoredInstance>>;

    /// The bytes committed with an unsettled blob (`InstanceFacts::write_ahead`), if any.
    fn write_ahead(&self, blob_path: &str) -> Result<Option<Vec<u8>>>;

    /// Visit the matches of `query` in a stable order; each visit gets the
    /// merged attributes of the entity and of the levels above it, with the
    /// computed attributes (counts, modalities and SOP classes in study).
    /// The first `skip` matches are left out (QIDO-RS `offset`). The visitor
    /// returns `false` to stop early.
    fn find(&self, query: &Query, skip: usize, visit: &mut dyn FnMut(Dataset) -> bool) -> Result<()>;

    /// How the database would run the statement [`Catalog::find`] issues
    /// for `query` (PostgreSQL's `EXPLAIN`, SQLite's `EXPLAIN QUERY PLAN`),
    /// one line per plan row: to find out why a query is slow, and for the
    /// tests that keep every narrowing on an index.
    fn query_plan(&self, query: &Query) -> Result<String>;

    /// Gather the planner's statistics now (`ANALYZE`), as after a bulk
    /// load; otherwise SQLite gathers them every ten minutes and
    /// PostgreSQL's autovacuum when it sees fit.
    fn refresh_statistics(&self) -> Result<()>;

    /// All instances under the entities that match `query` (a retrieve).
    fn find_instances(&self, query: &Query) -> Result<Vec<StoredInstance>>;

    /// The stored instances among these SOP Instance UIDs.
    fn instances_by_sop_uid(&self, sop_uids: &[String]) -> Result<Vec<StoredInstance>>;

    /// Instances with a primary key above `after`, in key order (for verify).
    fn instance_page(&self, after: i64, limit: usize) -> Result<Vec<StoredInstance>>;

    /// Paths of blobs referenced by instances or superseded versions, under a prefix.
    fn referenced_paths(&self, prefix: &str) -> Result<HashSet<String>>;

    fn setting(&self, key: &str) -> Result<Option<String>>;
    fn set_setting(&self, key: &str, value: &str) -> Result<()>;

    fn statistics(&self) -> Result<Statistics>;

    /// Write a consistent copy of the whole catalog to `path`, which must not
    /// exist yet: a self-contained SQLite database that [`SqliteCatalog::open`]
    /// opens and [`CatalogSnapshot`] reads. It only reads the catalog, so it
    /// is safe beside a running server (backups).
    fn snapshot_into(&self, path: &Path) -> Result<()>;

    /// Conflicting versions kept for review (all, or those of one SOP
    /// Instance UID), oldest first, with the current version's digest.
    fn conflicts(&self, sop_uid: Option<&str>) -> Result<Vec<ConflictRecord>>;

    /// Record correction registers (see [`CorrectionRecord`]): each replaces
    /// the held register of its level, key and attribute only if it
    /// supersedes it, and its value goes into the patient or study row at
    /// once (or when that row is created). `event` is journaled with the
    /// registers that were recorded, if any; those are returned.
    fn correct(&self, records: &[CorrectionRecord], event: &Event) -> Result<Vec<CorrectionRecord>>;

    /// The registers that apply to a study: its patient's and its own.
    fn study_corrections(&self, study_uid: &str) -> Result<StudyCorrections>;

    /// The patient-level attributes held for a patient identity (see [`patient_identity`]).
    fn patient_attributes(&self, identity: &str) -> Result<Option<Dataset>>;

    /// The record a merged patient record `identity` links to directly (see
    /// [`moves_study`]); `None` when it is not merged, or the merge was undone.
    fn merge_link(&self, identity: &str) -> Result<Option<String>>;

    /// The record studies arriving for `identity` are filed under: the end
    /// of its merge links; `None` when it is not merged (or its links go round).
    fn merged_into(&self, identity: &str) -> Result<Option<String>>;

    /// The Specific Character Set each series of a study declares (its
    /// first instance's, as written), by Series Instance UID.
    fn declared_character_sets(&self, study_uid: &str) -> Result<Vec<(String, String)>>;

    /// The studies of a patient identity, oldest first: Study Instance UID and site.
    fn studies_of_patient(&self, identity: &str) -> Result<Vec<(String, String)>>;

    /// Every register held (anti-entropy compares them with a peer's), by
    /// level, key and attribute. Corrections are made by people, so there
    /// are few enough to list at once.
    fn all_corrections(&self) -> Result<Vec<CorrectionRecord>>;

    /// The latest clock of any register (0 without any): a restarted node's
    /// clock starts above it.
    fn latest_correction_clock(&self) -> Result<i64>;

    /// Journal events with a sequence number above `after`.
    fn events_after(&self, after: i64, limit: usize) -> Result<Vec<StoredEvent>>;

    /// Add a user account; a taken name (in any ASCII case) is [`CatalogError::Duplicate`].
    fn create_user(&self, user: &NewUserRecord<'_>) -> Result<UserRecord>;

    /// Add a user account only if there is none at all (first start).
    /// `None` when accounts already exist.
    fn create_first_user(&self, user: &NewUserRecord<'_>) -> Result<Option<UserRecord>>;

    /// The account with this name (ASCII case ignored).
    fn user(&self, name: &str) -> Result<Option<UserRecord>>;

    /// Every account, by name.
    fn users(&self) -> Result<Vec<UserRecord>>;

    /// Change an account; `false` when there is no account with this name.
    fn update_user(&self, name: &str, change: UserChange<'_>) -> Result<bool>;

    /// Store a new API token of the user named `token.user`; `false` when
    /// there is no such user.
    fn create_token(&self, token: &TokenRecord) -> Result<bool>;

    /// The token with this id, with its user's current name.
    fn token(&self, id: &str) -> Result<Option<TokenRecord>>;

    /// Every token (revoked and expired ones included), oldest first.
    fn tokens(&self) -> Result<Vec<TokenRecord>>;

    /// Visit the versions held (current instances and kept conflicts) in
    /// `scope`, ordered by study UID, then SOP Instance UID (bytewise); the
    /// visitor returns `false` to stop early.
    fn held_versions(&self, scope: VersionScope<'_>, visit: &mut dyn FnMut(HeldVersion) -> bool) -> Result<()>;

    /// Up to `limit` versions without a content digest (stored before
    /// schema version 4), with a blob path above `after`, by blob path.
    fn undigested_versions(&self, after: &str, limit: usize) -> Result<Vec<HeldVersion>>;

    /// Record the content digests of older versions by blob path, computed
    /// from their files (see [`HeldVersion::dataset_digest`]).
    fn record_dataset_digests(&self, digests: &[(String, [u8; 32])]) -> Result<()>;

    /// Mark a token revoked at `at_ms` unless it already is; `false` when
    /// there is no token with this id.
    fn revoke_token(&self, id: &str, at_ms: i64) -> Result<bool>;

    /// Take or renew the lease on the background job `name` for `holder`
    /// until `now_ms + ttl_ms`, when it is free, expired, or `holder`'s
    /// already. Returns the lease as it stands: `holder` has it if its
    /// holder is `holder`.
    fn lease_acquire(&self, name: &str, holder: &str, now_ms: i64, ttl_ms: i64) -> Result<LeaseRecord>;
    /// Give up `holder`'s lease on `name` (`false`: it did not hold it).
    fn lease_release(&self, name: &str, holder: &str) -> Result<bool>;
    /// Every lease recorded (expired ones included), by name.
    fn leases(&self) -> Result<Vec<LeaseRecord>>;

    /// The remote AEs shared by every node of this catalog, by title.
    fn shared_aes(&self) -> Result<Vec<SharedAeRecord>>;
    /// Add a shared AE, or replace the one with its title (returns whether it was new).
    fn put_shared_ae(&self, ae: &SharedAeRecord) -> Result<bool>;
    /// Remove the shared AE with this title (`false`: there was none).
    fn remove_shared_ae(&self, title: &str) -> Result<bool>;

    /// Add studies found at a migration source; those already listed stay as
    /// they are. Returns how many were new.
    fn migration_plan(&self, source: &str, studies: &[PlannedStudy]) -> Result<usize>;
    /// Mark up to `limit` studies of `source` running for `claimant` and
    /// return them: pending ones, failed ones with attempts left whose retry
    /// time has come, and running ones whose claim was abandoned (not renewed
    /// in time: their node stopped). Newest studies first, as the most recent
    /// ones matter most to a clinic.
    fn migration_claim(
        &self,
        source: &str,
        limit: usize,
        claimant: &Claimant<'_>,
        max_attempts: i64,
    ) -> Result<Vec<MigrationStudy>>;
    /// Renew `node`'s claims on its running studies of `source` (returns how many).
    fn migration_renew(&self, source: &str, node: &str, now_ms: i64) -> Result<usize>;
    /// Put `node`'s running studies of `source` back to pending: a run of
    /// that node starts again (returns how many).
    fn migration_release(&self, source: &str, node: &str) -> Result<usize>;
    fn migration_update(&self, source: &str, study_uid: &str, update: &MigrationUpdate) -> Result<()>;
    /// Move every study of `source` in one of `from` to `to` (returns how many).
    fn migration_reset(&self, source: &str, from: &[MigrationState], to: MigrationState) -> Result<usize>;
    fn migration_counts(&self, source: &str) -> Result<MigrationCounts>;
    /// Studies of `source` (in `states`, if given), ordered by UID, after `after_uid`.
    fn migration_studies(
        &self,
        source: &str,
        states: Option<&[MigrationState]>,
        after_uid: &str,
        limit: usize,
    ) -> Result<Vec<MigrationStudy>>;
    fn migration_discrepancies(&self, source: &str) -> Result<Vec<Discrepancy>>;
}
