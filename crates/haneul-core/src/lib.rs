//! The archive core: everything that makes Haneul an archive rather than a
//! protocol endpoint.
//!
//! - **Ingest** ([`Archive::begin_ingest`], [`Archive::finish_ingest`]):
//!   instance bytes stream into a new blob; the header (up to Pixel Data) is
//!   parsed and validated; the blob is fsynced; a single committer thread
//!   records batches of instances in the catalog (group commit). Only then
//!   does the caller learn the outcome, so a success answer always follows
//!   durability. Instances from senders with coercion rules
//!   ([`ArchiveConfig::coercions`]) are rewritten first.
//! - **Query** ([`Archive::find`]) and **retrieve**
//!   ([`Archive::find_instances`], [`Archive::open_instance`]).
//! - **Journal** ([`Archive::journal`]): every store, query and retrieve is
//!   recorded with who asked.
//! - **Audit** ([`Archive::audit`]): the edges record every access to
//!   patient data in the hash-chained trail of `haneul-audit`, written on a
//!   background thread.
//! - **Recovery** at start-up and **verify** on demand.
//! - **Users** ([`Archive::users`], [`users`]): accounts, Argon2id password
//!   hashes, API tokens, roles and the permission matrix.
//!
//! Protocol edges (DIMSE, DICOMweb, CLI import) call this crate; they never
//! reach the catalog or blob store themselves.

mod access;
pub mod aes;
mod audit_access;
pub mod backup_status;
mod committer;
pub mod corrections;
pub mod digest_tree;
mod ingest;
pub mod lease;
pub mod metrics;
pub mod migration;
mod recovery;
pub mod replication;
mod settler;
pub mod users;
mod verify;

pub use access::DiskUsage;
pub use audit_access::{add_view as audit_add_view, query_keys};
pub use haneul_audit as audit;
pub use haneul_catalog::patient_id_of;
pub use haneul_catalog::PostgresOptions;
pub use haneul_catalog::{
    CommitOutcome, ConflictRecord, CorrectionLevel, CorrectionRecord, Discrepancy, DuplicatePolicy, Event, HeldVersion,
    MigrationCounts, MigrationState, MigrationStudy, MigrationUpdate, Origin, PlannedStudy, Statistics, StoredEvent,
    StoredInstance, StudyCorrections,
};
/// BLAKE3 of a file as the catalog records a blob's, to compare a source file with the copy held.
pub use haneul_storage::{digest_file, valid_node_name, BlobBackend, BlobConfig, S3Options};
pub use ingest::{Ingest, IngestError, IngestFormat, IngestReport, RejectReason};
pub use metrics::Metrics;
pub use recovery::RecoveryReport;
pub use users::{Permission, PermissionMatrix, Permissions, Role, User, Users, UsersError};
pub use verify::{verify_archive, VerifyProblem, VerifyReport};

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use haneul_catalog::{Catalog, PostgresCatalog, SqliteCatalog};
use haneul_dicom::coerce::CoercionRules;
use haneul_dicom::matching::Query;
use haneul_dicom::Dataset;
use haneul_storage::BlobStore;

use committer::Committer;

/// Settings of the archive core.
#[derive(Debug, Clone)]
pub struct ArchiveConfig {
    /// Directory holding the catalog database and the blob tree.
    pub data_dir: PathBuf,
    pub duplicate_policy: DuplicatePolicy,
    /// Largest group-commit batch.
    pub max_commit_batch: usize,
    /// Keep the audit trail in `<data_dir>/audit` (off only for tools and tests).
    pub audit: bool,
    /// Site of new studies whose sender names none ("": no site).
    pub default_site: String,
    /// This node's AE title: the origin of the corrections made here (see
    /// [`corrections`]), as replication peers know it.
    pub ae_title: String,
    /// AE titles of the replication peers: what they send never replaces or
    /// drops a version held here (see [`DuplicatePolicy::KeepBoth`]).
    pub replication_peers: Vec<String>,
    /// Coercion rules by the AE title of the sender (`Origin::actor`): what
    /// such a sender stores is rewritten by them before it is validated.
    pub coercions: HashMap<String, Arc<CoercionRules>>,
    /// Where the catalog lives.
    pub catalog: CatalogLocation,
    /// Where instance files live, and this node's name among several.
    pub blobs: BlobConfig,
    /// Instances up to this many bytes on local disk are acknowledged once
    /// their catalog commit, which carries a copy of their bytes, is durable,
    /// without waiting for their own file's fsync (0: never).
    pub write_ahead_max_bytes: u64,
}

/// Default of [`ArchiveConfig::write_ahead_max_bytes`]: structured reports,
/// key objects and small images, not CT or MR slices. With their files made
/// durable in batches afterwards, such stores wait for one flush of the disk
/// instead of two.
pub const DEFAULT_WRITE_AHEAD_MAX_BYTES: u64 = 64 * 1024;

/// Where the catalog lives.
#[derive(Debug, Clone, Default)]
pub enum CatalogLocation {
    /// SQLite in the data directory ([`CATALOG_FILE`]): the zero-configuration default.
    #[default]
    Embedded,
    /// A PostgreSQL database, which several nodes may share.
    Postgres(PostgresOptions),
}

impl CatalogLocation {
    /// Open (creating or upgrading) the catalog (blocking).
    pub fn open(&self, data_dir: &Path) -> Result<Arc<dyn Catalog>, haneul_catalog::CatalogError> {
        Ok(match self {
            CatalogLocation::Embedded => Arc::new(SqliteCatalog::open(data_dir.join(CATALOG_FILE))?),
            CatalogLocation::Postgres(options) => Arc::new(PostgresCatalog::connect(options)?),
        })
    }

    /// Whether the catalog has been created (always assumed for PostgreSQL,
    /// whose database an administrator creates).
    pub fn exists(&self, data_dir: &Path) -> bool {
        match self {
            CatalogLocation::Embedded => data_dir.join(CATALOG_FILE).is_file(),
            CatalogLocation::Postgres(_) => true,
        }
    }
}

impl ArchiveConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> ArchiveConfig {
        ArchiveConfig {
            data_dir: data_dir.into(),
            duplicate_policy: DuplicatePolicy::KeepFirst,
            max_commit_batch: 256,
            audit: true,
            default_site: String::new(),
            ae_title: "HANEUL".into(),
            replication_peers: Vec::new(),
            coercions: HashMap::new(),
            catalog: CatalogLocation::Embedded,
            blobs: BlobConfig::default(),
            write_ahead_max_bytes: DEFAULT_WRITE_AHEAD_MAX_BYTES,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("data directory {path} is in use by another Haneul process")]
    Locked { path: PathBuf },
    #[error("cannot use data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Catalog(#[from] haneul_catalog::CatalogError),
    #[error(transparent)]
    Storage(#[from] haneul_storage::StorageError),
    #[error("archive is shutting down")]
    ShuttingDown,
    #[error("internal task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Audit(#[from] haneul_audit::AuditError),
    /// A request the archive refuses as it stands (the message says why).
    #[error("{0}")]
    Invalid(String),
    /// What is held cannot be sent as it must be (a moved study's copy that cannot carry its patient).
    #[error("{0}")]
    Undeliverable(String),
}

pub const CATALOG_FILE: &str = "catalog.sqlite";
pub const BLOB_DIR: &str = "blobs";
/// Where instance files wait for their upload when blobs are kept in a bucket.
pub const STAGING_DIR: &str = "staging";
/// Where copies of objects read from a bucket are kept for reading again.
pub const CACHE_DIR: &str = "cache";

/// Open the blob store of the archive in `data_dir` (blocking: a bucket is
/// contacted); `durable` makes a local store fsync what it writes.
pub fn open_blob_store(data_dir: &Path, config: &BlobConfig, durable: bool) -> Result<BlobStore, ArchiveError> {
    Ok(BlobStore::open_configured(data_dir.join(BLOB_DIR), data_dir.join(STAGING_DIR), config, durable)?)
}
const LOCK_FILE: &str = "haneul.lock";

/// Count as settled the instances whose blob this node knows durable
/// (`durable`: taken before the catalog was read) although the catalog
/// does not say so yet.
pub(crate) fn mark_durable_here(found: &mut [StoredInstance], durable: &std::collections::HashSet<String>) {
    for instance in found {
        instance.settled |= durable.contains(&instance.blob.path);
    }
}

/// An open archive. Cheap to share behind an `Arc`.
pub struct Archive {
    config: ArchiveConfig,
    blobs: BlobStore,
    catalog: Arc<dyn Catalog>,
    committer: Committer,
    settler: settler::Settler,
    metrics: Arc<Metrics>,
    recovery: RecoveryReport,
    auditor: haneul_audit::Auditor,
    /// Recently verified API tokens (see [`users::TokenCache`]).
    token_cache: Arc<users::TokenCache>,
    replication: replication::ReplicationStatus,
    sync_replicas: std::sync::RwLock<Vec<Arc<dyn replication::SyncReplica>>>,
    migrations: std::sync::RwLock<Option<Arc<dyn migration::MigrationControl>>>,
    /// The hybrid logical clock of corrections.
    clock: corrections::Clock,
    _lock: File,
}

impl Archive {
    /// Open the archive in `config.data_dir`, creating it if needed, taking
    /// the directory lock and repairing what a crash may have left.
    pub fn open(config: ArchiveConfig) -> Result<Arc<Archive>, ArchiveError> {
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir)
            .map_err(|source| ArchiveError::DataDir { path: data_dir.clone(), source })?;
        let lock = take_lock(&data_dir)?;
        let auditor = if config.audit {
            let (auditor, opened) = haneul_audit::Auditor::open(data_dir.join(haneul_audit::AUDIT_DIR))?;
            tracing::info!(last_seq = opened.last_seq, "audit trail opened");
            auditor
        } else {
            haneul_audit::Auditor::disabled()
        };
        let catalog = config.catalog.open(&data_dir)?;
        let blobs = open_blob_store(&data_dir, &config.blobs, true)?;
        // Only the process holding the data directory's lock keeps the read
        // cache: tools opening the same store beside it must not empty it.
        blobs.enable_read_cache(data_dir.join(CACHE_DIR), config.blobs.read_cache_bytes)?;
        tracing::info!(blobs = %blobs.describe(), node = blobs.node().unwrap_or(""), "blob store opened");
        let staged = blobs.discard_staged()?;
        if staged > 0 {
            tracing::warn!(files = staged, "removed staging files of stores interrupted before their upload");
        }
        let recovery = recovery::recover(&blobs, catalog.as_ref())?;
        blobs.start_pool()?;
        let metrics = Arc::new(Metrics::default());
        let committer = Committer::start(
            Arc::clone(&catalog),
            blobs.clone(),
            config.duplicate_policy,
            config.max_commit_batch,
            Arc::clone(&metrics),
        );
        Ok(Arc::new(Archive {
            config,
            blobs,
            catalog,
            committer,
            settler: settler::Settler::default(),
            metrics,
            recovery,
            auditor,
            token_cache: Arc::default(),
            replication: replication::ReplicationStatus::default(),
            sync_replicas: std::sync::RwLock::default(),
            migrations: std::sync::RwLock::default(),
            clock: corrections::Clock::default(),
            _lock: lock,
        }))
    }

    pub fn config(&self) -> &ArchiveConfig {
        &self.config
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// What the replicators report about each peer.
    pub fn replication(&self) -> &replication::ReplicationStatus {
        &self.replication
    }

    /// From now on, every store waits for `replica` to confirm it too.
    pub fn add_sync_replica(&self, replica: Arc<dyn replication::SyncReplica>) {
        self.sync_replicas.write().unwrap_or_else(|poisoned| poisoned.into_inner()).push(replica);
    }

    pub(crate) fn sync_replicas(&self) -> Vec<Arc<dyn replication::SyncReplica>> {
        self.sync_replicas.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// A value kept in the catalog (replication cursors, recovery watermark).
    pub async fn setting(&self, key: &str) -> Result<Option<String>, ArchiveError> {
        let catalog = Arc::clone(&self.catalog);
        let key = key.to_string();
        run_blocking(move || catalog.setting(&key).map_err(ArchiveError::from)).await
    }

    pub async fn set_setting(&self, key: &str, value: &str) -> Result<(), ArchiveError> {
        let catalog = Arc::clone(&self.catalog);
        let (key, value) = (key.to_string(), value.to_string());
        run_blocking(move || catalog.set_setting(&key, &value).map_err(ArchiveError::from)).await
    }

    /// The outcome of the last backups of this node (see [`backup_status`]),
    /// or why its status file cannot be read (logged too).
    pub async fn backup_status(&self) -> Result<backup_status::BackupStatus, String> {
        let data_dir = self.data_dir().to_path_buf();
        let read = tokio::task::spawn_blocking(move || backup_status::BackupStatus::read(&data_dir)).await;
        let error = match read {
            Ok(Ok(status)) => return Ok(status),
            Ok(Err(error)) => error.to_string(),
            Err(error) => error.to_string(),
        };
        tracing::warn!(%error, "cannot read the backup status");
        Err(format!("cannot read {}: {error}", backup_status::BACKUP_STATUS_FILE))
    }

    /// Every metric in the Prometheus text format: the archive's own and the
    /// audit trail's writer and syslog forwarder.
    pub fn render_metrics(&self) -> String {
        use std::fmt::Write;
        let mut out = self.metrics.render_prometheus();
        let audit = self.auditor.stats();
        let counters = [
            ("haneul_audit_records_written_total", "Audit records appended and synced", audit.written),
            ("haneul_audit_queue_waits_total", "Times recording waited for a full audit queue", audit.waits),
            ("haneul_audit_records_lost_total", "Audit records that could not be written", audit.lost),
            ("haneul_audit_write_errors_total", "Failed appends or syncs of the audit trail", audit.write_errors),
            ("haneul_audit_syslog_sent_total", "Audit messages delivered to syslog", audit.syslog_sent),
            ("haneul_audit_syslog_failed_total", "Audit messages not delivered to syslog", audit.syslog_failed),
            ("haneul_audit_syslog_errors_total", "Failed syslog sends and connections", audit.syslog_errors),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        }
        if self.blobs.is_shared() {
            let cache = self.blobs.read_cache_stats();
            let counters = [
                ("haneul_blob_cache_hits_total", "Bucket objects read from the local read cache", cache.hits),
                ("haneul_blob_cache_misses_total", "Bucket objects downloaded to be read", cache.misses),
            ];
            for (name, help, value) in counters {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
            }
            let name = "haneul_blob_cache_bytes";
            let _ = writeln!(
                out,
                "# HELP {name} Bytes the read cache's copies take\n# TYPE {name} gauge\n{name} {}",
                cache.bytes
            );
        }
        self.replication.render_prometheus(&mut out);
        out
    }

    /// What start-up recovery found and repaired.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Append an event to the journal (batched with the next commit).
    pub fn journal(&self, event: Event) {
        self.committer.append_events(vec![event]);
    }

    /// Record an access in the audit trail (queued; never waits for the disk
    /// unless the writer is far behind).
    pub fn audit(&self, entry: haneul_audit::Entry) {
        self.auditor.record(entry);
    }

    pub fn auditor(&self) -> &haneul_audit::Auditor {
        &self.auditor
    }

    /// Wait until everything handed to the committer so far is committed.
    pub async fn flush_journal(&self) {
        self.committer.flush().await;
    }

    /// Run a query; matches arrive on the returned channel in a stable order.
    /// Dropping the receiver stops the query (C-CANCEL).
    /// Only studies of the requester's sites are seen (`origin.scope`).
    pub fn find(&self, query: Query, origin: &Origin) -> tokio::sync::mpsc::Receiver<Result<Dataset, ArchiveError>> {
        self.find_skipping(query, 0, origin)
    }

    /// [`Archive::find`] without its first `skip` matches.
    pub(crate) fn find_skipping(
        &self,
        mut query: Query,
        skip: usize,
        origin: &Origin,
    ) -> tokio::sync::mpsc::Receiver<Result<Dataset, ArchiveError>> {
        query.sites.clone_from(&origin.scope);
        self.metrics.queries.inc();
        self.journal(query_event("query", &query, origin));
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        let catalog = Arc::clone(&self.catalog);
        tokio::task::spawn_blocking(move || {
            let result = catalog.find(&query, skip, &mut |view| sender.blocking_send(Ok(view)).is_ok());
            if let Err(error) = result {
                let _ = sender.blocking_send(Err(error.into()));
            }
        });
        receiver
    }

    /// The instances a retrieve (C-MOVE, C-GET, WADO) of `query` covers,
    /// within the requester's sites (`origin.scope`).
    pub async fn find_instances(&self, mut query: Query, origin: &Origin) -> Result<Vec<StoredInstance>, ArchiveError> {
        query.sites.clone_from(&origin.scope);
        let catalog = Arc::clone(&self.catalog);
        let event_query = query.clone();
        let found = run_blocking(move || catalog.find_instances(&query).map_err(ArchiveError::from)).await?;
        let mut event = query_event("retrieve", &event_query, origin);
        event.detail["instances"] = found.len().into();
        self.journal(event);
        Ok(found)
    }

    /// Stored instances among these SOP Instance UIDs; `settled` tells
    /// whether each one's bytes are known to be durable.
    pub async fn instances_by_sop_uid(&self, sop_uids: Vec<String>) -> Result<Vec<StoredInstance>, ArchiveError> {
        // Snapshot the in-memory settled set before reading the catalog: a
        // blob settled in between is then seen by one or the other.
        let durable = self.committer.durable_unsettled();
        let catalog = Arc::clone(&self.catalog);
        let mut found =
            run_blocking(move || catalog.instances_by_sop_uid(&sop_uids).map_err(ArchiveError::from)).await?;
        mark_durable_here(&mut found, &durable);
        Ok(found)
    }

    /// Open an instance's file for reading; one kept in a bucket is
    /// downloaded first, off the async threads.
    pub async fn open_instance(&self, instance: &StoredInstance) -> Result<File, ArchiveError> {
        self.open_blob(&instance.blob.path).await
    }

    /// Open an instance's file for reading, from a blocking thread.
    pub fn open_instance_blocking(&self, instance: &StoredInstance) -> Result<File, ArchiveError> {
        Ok(self.blobs.open_blob(&instance.blob.path)?)
    }

    pub(crate) async fn open_blob(&self, path: &str) -> Result<File, ArchiveError> {
        // Opening a local file is quick enough for an async thread; a download is not.
        if !self.blobs.is_shared() {
            return Ok(self.blobs.open_blob(path)?);
        }
        let blobs = self.blobs.clone();
        let path = path.to_string();
        run_blocking(move || Ok(blobs.open_blob(&path)?)).await
    }

    /// Whether an instance's file is present and matches its digest.
    pub async fn check_instance(&self, instance: &StoredInstance) -> bool {
        let blobs = self.blobs.clone();
        let path = instance.blob.path.clone();
        let expected = (instance.blob.size, instance.blob.digest);
        run_blocking(move || {
            Ok(blobs.digest_of(&path).map(|(size, digest)| (size, digest.0) == expected).unwrap_or(false))
        })
        .await
        .unwrap_or(false)
    }

    pub async fn statistics(&self) -> Result<Statistics, ArchiveError> {
        let catalog = Arc::clone(&self.catalog);
        run_blocking(move || catalog.statistics().map_err(ArchiveError::from)).await
    }

    /// Gather the catalog's planner statistics now, as after a bulk load
    /// (`haneul bench fill`), so the next queries get plans that fit its size.
    pub async fn refresh_statistics(&self) -> Result<(), ArchiveError> {
        let catalog = Arc::clone(&self.catalog);
        run_blocking(move || catalog.refresh_statistics().map_err(ArchiveError::from)).await
    }

    /// Versions kept for review because a replication peer holds other bytes
    /// under the same SOP Instance UID (all, or one instance's).
    pub async fn conflicts(&self, sop_uid: Option<String>) -> Result<Vec<ConflictRecord>, ArchiveError> {
        let catalog = Arc::clone(&self.catalog);
        run_blocking(move || catalog.conflicts(sop_uid.as_deref()).map_err(ArchiveError::from)).await
    }

    /// Open the file of a conflicting version for reading.
    pub async fn open_conflict(&self, conflict: &ConflictRecord) -> Result<File, ArchiveError> {
        self.open_blob(&conflict.blob.path).await
    }

    pub async fn events_after(&self, after: i64, limit: usize) -> Result<Vec<StoredEvent>, ArchiveError> {
        let catalog = Arc::clone(&self.catalog);
        run_blocking(move || catalog.events_after(after, limit).map_err(ArchiveError::from)).await
    }

    /// Record a clean shutdown so the next start scans nothing.
    pub async fn shutdown(self: &Arc<Self>) {
        self.blobs.shutdown();
        // Files acknowledged with their bytes in the catalog are made durable
        // and settled now, so the next start has nothing to rewrite.
        let archive = Arc::clone(self);
        let _ = tokio::task::spawn_blocking(move || archive.settle_waiting_now()).await;
        self.committer.flush().await;
        let auditor = self.auditor.clone();
        let _ = tokio::task::spawn_blocking(move || auditor.flush()).await;
        // With nothing in flight, no file can be unreferenced: the next start
        // need not list any shard. Otherwise scan from the oldest in flight.
        let scan_from = if self.blobs.has_inflight() {
            self.blobs.oldest_unsettled_shard()
        } else {
            recovery::NOTHING_TO_SCAN.to_string()
        };
        let catalog = Arc::clone(&self.catalog);
        let key = recovery::scan_from_key(&self.blobs);
        let recorded = run_blocking(move || Ok(catalog.set_setting(&key, &scan_from)?)).await;
        if let Err(error) = recorded {
            tracing::warn!(%error, "could not record clean shutdown");
        }
    }

    /// This node's name among several sharing a catalog ("" for a lone node).
    pub fn node_name(&self) -> &str {
        self.blobs.node().unwrap_or_default()
    }

    /// Whether this node is one of several sharing a bucket, under its own name.
    pub fn is_in_shared_bucket(&self) -> bool {
        self.blobs.is_shared() && !self.node_name().is_empty()
    }

    /// The remote AEs shared by every node of the catalog (blocking calls).
    pub fn shared_aes(&self) -> aes::SharedAes {
        aes::SharedAes::new(Arc::clone(&self.catalog))
    }

    /// Take or renew this node's lease on the background job `name` for
    /// `ttl`; the lease as it stands afterwards (see [`lease::keep`]).
    pub async fn acquire_lease(&self, name: &str, ttl: Duration) -> Result<haneul_catalog::LeaseRecord, ArchiveError> {
        let catalog = Arc::clone(&self.catalog);
        let (name, node) = (name.to_string(), self.node_name().to_string());
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        run_blocking(move || Ok(catalog.lease_acquire(&name, &node, users::unix_ms_now(), ttl_ms)?)).await
    }

    /// Judge the unsettled instances left in the shared bucket by nodes that
    /// died: a node whose liveness lease ([`lease::node_lease_name`]) lapsed
    /// has its instances settled where the bucket holds their bytes, rolled
    /// back (never acknowledged) where it does not. Nodes that never kept a
    /// lease (older versions) are left alone. Returns what each adoption did.
    pub async fn adopt_dead_nodes(&self, term: Duration) -> Result<Vec<(String, RecoveryReport)>, ArchiveError> {
        if !self.is_in_shared_bucket() {
            return Ok(Vec::new());
        }
        let catalog = Arc::clone(&self.catalog);
        let (unsettled, leases) = run_blocking(move || Ok((catalog.unsettled_instances()?, catalog.leases()?))).await?;
        let me = self.node_name().to_string();
        let now_ms = users::unix_ms_now();
        let mut orphaned: Vec<String> = unsettled
            .iter()
            .filter_map(|instance| recovery::writer_of(&instance.blob.path))
            .filter(|node| *node != me)
            .filter(|node| {
                let name = lease::node_lease_name(node);
                leases.iter().any(|lease| lease.name == name && lease.expires_ms < now_ms)
            })
            .map(str::to_string)
            .collect();
        orphaned.sort();
        orphaned.dedup();
        let mut adopted = Vec::new();
        for node in orphaned {
            let name = lease::node_lease_name(&node);
            let lease = self.acquire_lease(&name, term).await?;
            if lease.holder != me {
                continue;
            }
            tracing::warn!(dead_node = %node, "adopting the unsettled instances of a node whose lease lapsed");
            let (blobs, catalog, judged) = (self.blobs.clone(), Arc::clone(&self.catalog), node.clone());
            // On failure the lease is kept to lapse, so that a later round tries again.
            let report = run_blocking(move || recovery::adopt(&blobs, catalog.as_ref(), &judged)).await?;
            if let Err(error) = self.release_lease(&name).await {
                tracing::warn!(lease = %name, %error, "cannot give the dead node's lease back; it lapses on its own");
            }
            tracing::info!(
                dead_node = %node,
                settled = report.settled,
                rolled_back = report.rolled_back.len(),
                "unsettled instances of a dead node judged"
            );
            adopted.push((node, report));
        }
        Ok(adopted)
    }

    /// Give up this node's lease on `name`, if it holds it.
    pub async fn release_lease(&self, name: &str) -> Result<bool, ArchiveError> {
        let catalog = Arc::clone(&self.catalog);
        let (name, node) = (name.to_string(), self.node_name().to_string());
        run_blocking(move || Ok(catalog.lease_release(&name, &node)?)).await
    }

    /// User accounts and API tokens (synchronous: call from blocking threads).
    pub fn users(&self) -> Users {
        Users::new(Arc::clone(&self.catalog), Arc::clone(&self.token_cache))
    }

    pub(crate) fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    pub(crate) fn catalog(&self) -> &Arc<dyn Catalog> {
        &self.catalog
    }

    pub(crate) fn committer(&self) -> &Committer {
        &self.committer
    }

    pub(crate) fn settler(&self) -> &settler::Settler {
        &self.settler
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }
}

fn take_lock(data_dir: &Path) -> Result<File, ArchiveError> {
    let path = data_dir.join(LOCK_FILE);
    let file = File::create(&path).map_err(|source| ArchiveError::DataDir { path: path.clone(), source })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(ArchiveError::Locked { path: data_dir.to_path_buf() }),
        Err(std::fs::TryLockError::Error(source)) => Err(ArchiveError::DataDir { path, source }),
    }
}

fn query_event(kind: &str, query: &Query, origin: &Origin) -> Event {
    let mut event = Event::new(kind, origin).with_detail(query_keys(query));
    let unique = |tag| {
        query.constraint(tag).and_then(|key| key.matcher.hint()).and_then(|hint| match hint {
            haneul_dicom::matching::IndexHint::Equals(value) => Some(value.to_string()),
            _ => None,
        })
    };
    event.patient_id = unique(haneul_dicom::tags::PATIENT_ID);
    event.study_uid = unique(haneul_dicom::tags::STUDY_INSTANCE_UID);
    event.series_uid = unique(haneul_dicom::tags::SERIES_INSTANCE_UID);
    event.sop_uid = unique(haneul_dicom::tags::SOP_INSTANCE_UID);
    event
}

/// Run blocking catalog or disk work off the async threads.
pub(crate) async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ArchiveError> + Send + 'static,
) -> Result<T, ArchiveError> {
    tokio::task::spawn_blocking(work).await.map_err(|error| ArchiveError::Task(error.to_string()))?
}
