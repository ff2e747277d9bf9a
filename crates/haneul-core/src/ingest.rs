//! Ingest: from a byte stream to a durable, catalogued instance.
//!
//! Bytes are buffered up to [`FLUSH_THRESHOLD`] and written to a new blob off
//! the async threads, so memory per ingest stays bounded whatever the
//! instance size. [`Archive::finish_ingest`] parses the header, validates it,
//! fsyncs the blob and waits for the group commit; only its `Ok` means the
//! instance is durable.

use std::io::{BufReader, Cursor, Seek, SeekFrom};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use haneul_catalog::{
    BlobInfo, CommitOutcome, DuplicatePolicy, Event, InstanceFacts, NewInstance, Origin, PatientFacts, RemovalKind,
    SeriesFacts, StoredInstance, StudyFacts,
};
use haneul_dicom::coerce::{coerce_part10, CoerceError, CoercionOutcome, CoercionRules};
use haneul_dicom::header::{read_instance_header, InstanceHeader};
use haneul_dicom::levels::{level_of, Level};
use haneul_dicom::matching::normalize_temporal;
use haneul_dicom::meta::{encode_file_meta, read_layout, FileLayout, NewFileMeta};
use haneul_dicom::read::{read_dataset, ReadError, ReadOptions, SeekSource};
use haneul_dicom::{tags, ts, BulkRef, Dataset, Element, Tag, Value, VR};
use haneul_storage::{BlobWriter, WrittenBlob};

use crate::metrics::Metrics;
use crate::{Archive, ArchiveError};

/// Bytes buffered in memory before they are written to the blob.
pub const FLUSH_THRESHOLD: usize = 1 << 20;

/// How long a duplicate waits for the first copy to become durable.
const FIRST_COPY_WAIT: Duration = Duration::from_secs(5);
const FIRST_COPY_POLL: Duration = Duration::from_millis(20);

/// What the incoming bytes are.
#[derive(Debug, Clone)]
pub enum IngestFormat {
    /// A bare data set (DIMSE C-STORE): Haneul writes the file meta group
    /// from these values, then the bytes exactly as received.
    Dataset { transfer_syntax_uid: String, sop_class_uid: String, sop_instance_uid: String },
    /// A complete Part 10 file (import, STOW-RS), stored byte for byte;
    /// refused if it does not belong to `expected_study_uid` when given.
    Part10 { expected_study_uid: Option<String> },
}

/// Why an instance was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectReason {
    /// The bytes are not a readable data set (truncated, malformed).
    Unreadable,
    UnsupportedTransferSyntax,
    MissingAttribute(&'static str),
    /// The data set contradicts the command or file meta (UIDs, SOP class).
    Inconsistent,
    /// Same SOP Instance UID, different bytes, refused by policy.
    Duplicate,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("instance refused: {detail}")]
    Rejected { reason: RejectReason, detail: String },
    #[error("storage failure: {0}")]
    Storage(String),
    /// Stored here, but a synchronous replica did not confirm it (refused so
    /// that the sender retries).
    #[error("not confirmed by replica {peer}: {detail}")]
    Replication { peer: String, detail: String },
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

impl IngestError {
    fn rejected(reason: RejectReason, detail: impl Into<String>) -> IngestError {
        IngestError::Rejected { reason, detail: detail.into() }
    }
}

impl From<haneul_storage::StorageError> for IngestError {
    fn from(error: haneul_storage::StorageError) -> Self {
        IngestError::Storage(error.to_string())
    }
}

/// The result of a successful ingest.
#[derive(Debug, Clone)]
pub struct IngestReport {
    pub outcome: CommitOutcome,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub transfer_syntax_uid: String,
    pub size: u64,
    /// Patient ID of the instance (for the audit trail).
    pub patient_id: String,
}

/// What `finish_ingest` hands to its blocking task.
struct Pending {
    writer: BlobWriter,
    buffer: Vec<u8>,
    whole_in_memory: bool,
    format: IngestFormat,
    origin: Origin,
    /// Where to hand the validated instance at once, for synchronous
    /// replicas to start on while the local fsync and commit run.
    early: Option<tokio::sync::oneshot::Sender<StoredInstance>>,
}

/// An instance being received.
pub struct Ingest {
    writer: Option<BlobWriter>,
    buffer: Vec<u8>,
    /// Bytes already handed to the blob writer.
    flushed: u64,
    format: IngestFormat,
    origin: Origin,
}

impl Ingest {
    /// Bytes received so far, file meta group included.
    pub fn len(&self) -> u64 {
        self.flushed + self.buffer.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append received bytes; writes to disk off the async threads when the buffer fills.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), IngestError> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= FLUSH_THRESHOLD {
            self.flush_buffer().await?;
        }
        Ok(())
    }

    async fn flush_buffer(&mut self) -> Result<(), IngestError> {
        let Some(mut writer) = self.writer.take() else {
            return Err(IngestError::Storage("ingest writer already closed".into()));
        };
        if self.flushed == 0 {
            hash_content_of_part10(&mut writer, &self.format, &self.buffer);
        }
        let mut buffer = std::mem::take(&mut self.buffer);
        let (writer, buffer, result) = tokio::task::spawn_blocking(move || {
            // Start writing back to disk now, so the final fsync of a large
            // instance waits only for its tail.
            let result = writer.write_all(&buffer).and_then(|()| writer.start_writeback());
            buffer.clear();
            (writer, buffer, result)
        })
        .await
        .map_err(|error| IngestError::Storage(error.to_string()))?;
        self.flushed = writer.size();
        self.writer = Some(writer);
        self.buffer = buffer;
        result.map_err(IngestError::from)
    }
}

/// Start the content digest of a Part 10 file at its data set, found in its
/// first bytes (the file meta group is small and comes first). A file whose
/// meta cannot be read gets none; it is refused further on anyway.
fn hash_content_of_part10(writer: &mut BlobWriter, format: &IngestFormat, first_bytes: &[u8]) {
    if !matches!(format, IngestFormat::Part10 { .. }) {
        return;
    }
    if let Ok(FileLayout::Part10(meta)) = read_layout(&mut std::io::Cursor::new(first_bytes)) {
        writer.hash_content_from(meta.dataset_offset);
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Archive {
    /// Start receiving one instance.
    pub fn begin_ingest(&self, format: IngestFormat, mut origin: Origin) -> Result<Ingest, IngestError> {
        if origin.site.is_empty() {
            origin.site.clone_from(&self.config().default_site);
        }
        let mut writer = self.blobs().create()?;
        let mut buffer = Vec::with_capacity(64 * 1024);
        if let IngestFormat::Dataset { transfer_syntax_uid, sop_class_uid, sop_instance_uid } = &format {
            buffer = encode_file_meta(&NewFileMeta {
                sop_class_uid,
                sop_instance_uid,
                transfer_syntax_uid,
                source_ae_title: Some(&origin.actor),
            });
            writer.hash_content_from(buffer.len() as u64);
        }
        Ok(Ingest { writer: Some(writer), buffer, flushed: 0, format, origin })
    }

    /// Validate, make durable and catalogue a received instance.
    pub async fn finish_ingest(self: &Arc<Self>, mut ingest: Ingest) -> Result<IngestReport, IngestError> {
        let Some(writer) = ingest.writer.take() else {
            return Err(IngestError::Storage("ingest writer already closed".into()));
        };
        let replicas = self.sync_replicas();
        let (early, early_instance) = match replicas.is_empty() {
            true => (None, None),
            false => {
                let (sender, receiver) = tokio::sync::oneshot::channel();
                (Some(sender), Some(receiver))
            }
        };
        let pending = Pending {
            writer,
            buffer: std::mem::take(&mut ingest.buffer),
            whole_in_memory: ingest.flushed == 0,
            format: ingest.format.clone(),
            origin: ingest.origin.clone(),
            early,
        };
        // One blocking task does everything from here to the durable commit,
        // so an instance crosses threads once, not at every step.
        let archive = Arc::clone(self);
        let local = tokio::task::spawn_blocking(move || archive.finish_blocking(pending));
        // Synchronous replicas get a new instance while it becomes durable
        // here, so the two waits overlap instead of adding up.
        let remote = async {
            let receiver = early_instance?;
            let instance = receiver.await.ok()?;
            let known = self.instances_by_sop_uid(vec![instance.sop_uid.clone()]).await.ok()?;
            if !known.is_empty() {
                // A duplicate: what the peer must hold is decided by the commit.
                return None;
            }
            Some(self.confirm_on_replicas(&replicas, instance).await)
        };
        let (local, remote) = tokio::join!(local, remote);
        let report = local.map_err(|error| IngestError::Storage(error.to_string()))??;
        match remote {
            Some(confirmed) if report.outcome.keeps_new_blob() => confirmed?,
            _ => self.replicate_synchronously(&report).await?,
        }
        Ok(report)
    }

    /// Wait until every synchronous replica holds the instance (the one now
    /// current here, also after an identical or ignored duplicate, so that a
    /// sender retrying a refused store gets it confirmed).
    async fn replicate_synchronously(&self, report: &IngestReport) -> Result<(), IngestError> {
        let replicas = self.sync_replicas();
        if replicas.is_empty() {
            return Ok(());
        }
        let found = self.instances_by_sop_uid(vec![report.sop_instance_uid.clone()]).await?;
        let Some(instance) = found.into_iter().next() else {
            return Ok(());
        };
        self.confirm_on_replicas(&replicas, instance).await
    }

    /// Have every synchronous replica confirm `instance`; a failure refuses
    /// the store or is counted as a fallback, as each replica is configured.
    async fn confirm_on_replicas(
        &self,
        replicas: &[Arc<dyn crate::replication::SyncReplica>],
        instance: StoredInstance,
    ) -> Result<(), IngestError> {
        for replica in replicas {
            let Err(detail) = replica.confirm(self, instance.clone()).await else { continue };
            let peer = replica.name().to_string();
            match replica.on_failure() {
                crate::replication::SyncFailure::Refuse => {
                    tracing::warn!(%peer, sop_instance_uid = %instance.sop_uid, %detail, "store refused: the synchronous replica did not confirm it");
                    return Err(IngestError::Replication { peer, detail });
                }
                crate::replication::SyncFailure::Async => {
                    tracing::error!(%peer, sop_instance_uid = %instance.sop_uid, %detail, "synchronous replica unreachable; acknowledged without it, shipped later");
                    self.replication().update(&peer, |status| {
                        status.sync_fallbacks += 1;
                        status.last_error = Some(detail);
                    });
                }
            }
        }
        Ok(())
    }

    fn finish_blocking(self: &Arc<Self>, pending: Pending) -> Result<IngestReport, IngestError> {
        let Pending { mut writer, mut buffer, whole_in_memory, format, origin, early } = pending;
        let started = Instant::now();
        if whole_in_memory {
            hash_content_of_part10(&mut writer, &format, &buffer);
        }
        let rules = self.config().coercions.get(&origin.actor).filter(|rules| !rules.is_empty());
        if let Some(rules) = rules {
            match self.coerce(writer, buffer, whole_in_memory, rules, &origin) {
                Ok(coerced) => (writer, buffer) = coerced,
                Err(error) => {
                    if matches!(error, IngestError::Rejected { .. }) {
                        self.metrics().ingest_rejected.inc();
                        self.journal_rejection(&origin, &error);
                    }
                    return Err(error);
                }
            }
        }
        writer.write_all(&buffer)?;
        writer.flush()?;
        let content_digest = writer.content_digest().map(|digest| digest.0);
        let blob = BlobInfo { path: writer.rel_path().to_string(), size: writer.size(), digest: writer.digest().0 };
        let blob_path = blob.path.clone();
        // Opened before the blob is finished: a bucket store deletes the
        // local file once it is uploaded.
        let received = match whole_in_memory {
            true => None,
            false => Some(open_received(&writer)?),
        };
        // The row may be committed before the fsync has finished: it is then
        // recorded as "unsettled" and settled once the fsync is done, and
        // start-up recovery re-checks unsettled blobs, so a crash in between
        // cannot leave an entry without its bytes. Replacing an instance
        // moves its old row aside, which cannot be undone that way, so that
        // policy waits for durability before committing.
        // A replication peer's instance may become a conflicting version,
        // which is recorded only once durable, like a replacement.
        let from_peer = self.config().replication_peers.contains(&origin.actor);
        let duplicate_policy = from_peer.then_some(DuplicatePolicy::KeepBoth);
        let overlap = self.config().duplicate_policy != DuplicatePolicy::Replace && !from_peer;
        // A small new instance needs no wait for its file's fsync at all: its
        // bytes ride in the catalog commit (one disk flush for both) and stay
        // there until the file, made durable later with others, is settled;
        // recovery rewrites the file from them.
        let write_ahead = overlap
            && whole_in_memory
            && self.blobs().fsyncs_locally()
            && blob.size <= self.config().write_ahead_max_bytes
            && self.settler().has_room();
        // Otherwise the fsync (or upload) starts at once, so parsing,
        // validation, the duplicate check and the catalog commit all overlap the wait for it.
        let finishing = match write_ahead {
            true => Finishing::Deferred(Box::new(writer)),
            false => Finishing::Started(spawn_finish(writer, Arc::clone(self.metrics()))),
        };

        let prepared = match received {
            None => read_header_from_memory(&buffer),
            Some(mut file) => read_instance_header(&mut file, &header_options()).map_err(unreadable),
        }
        .and_then(|header| validate(&header, &format));
        let prepared = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                self.metrics().ingest_rejected.inc();
                self.journal_rejection(&origin, &error);
                self.abandon(finishing, &blob_path);
                return Err(error);
            }
        };
        self.metrics().ingest_prepare_seconds.observe(started.elapsed());
        if let Some(early) = early {
            let _ = early.send(StoredInstance {
                pk: 0,
                sop_uid: prepared.sop_instance_uid.clone(),
                sop_class: prepared.sop_class_uid.clone(),
                transfer_syntax: prepared.transfer_syntax_uid.clone(),
                study_uid: prepared.study_instance_uid.clone(),
                series_uid: prepared.series_instance_uid.clone(),
                blob: blob.clone(),
                dataset_offset: prepared.dataset_offset,
                settled: false,
                // Peers get the instance as stored; corrections travel as registers.
                corrected: false,
            });
        }
        let report_base = prepared.report(&blob);
        let sop_instance_uid = prepared.sop_instance_uid.clone();
        let commit = |item: NewInstance| {
            let commit_started = Instant::now();
            let outcome = self.committer().commit_blocking(item);
            self.metrics().catalog_commit_seconds.observe(commit_started.elapsed());
            outcome
        };
        let (written, outcome) = if overlap {
            let mut item =
                prepared.into_new_instance(blob.clone(), content_digest, origin.clone(), false, duplicate_policy);
            match finishing {
                Finishing::Deferred(writer) => {
                    item.instance.write_ahead = Some(std::mem::take(&mut buffer));
                    let outcome = commit(item);
                    let report = self.after_write_ahead_commit(*writer, blob, &sop_instance_uid, outcome, &origin)?;
                    self.metrics().ingest_seconds.observe(started.elapsed());
                    return Ok(IngestReport { outcome: report, ..report_base });
                }
                Finishing::Started(fsync) => {
                    let outcome = commit(item);
                    (wait_for(fsync), outcome)
                }
            }
        } else {
            let written = finishing.wait();
            let outcome = match &written {
                Ok(_) => {
                    commit(prepared.into_new_instance(blob, content_digest, origin.clone(), true, duplicate_policy))
                }
                Err(error) => Err(error.to_string()),
            };
            (written, outcome)
        };
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(message) => {
                self.discard_blob(&blob_path);
                return Err(IngestError::Archive(ArchiveError::Catalog(haneul_catalog::CatalogError::Busy(message))));
            }
        };
        let written = match written {
            Ok(written) => written,
            Err(error) if outcome.keeps_new_blob() => {
                // The catalog already references a blob that did not become durable: take it back.
                tracing::error!(%error, sop_instance_uid = %sop_instance_uid, "blob fsync failed after commit; rolling back");
                let event = Event::new("ingest-rolled-back", &origin)
                    .with_detail(serde_json::json!({ "reason": error.to_string() }));
                let rolled_back = self
                    .catalog()
                    .remove_instances(std::slice::from_ref(&sop_instance_uid), Some(&event), RemovalKind::Undo)
                    .map_err(ArchiveError::from)
                    .and_then(|removed| {
                        crate::recovery::empty_trash(self.blobs(), self.catalog().as_ref(), &removed.trashed_paths)
                    });
                if let Err(rollback) = rolled_back {
                    tracing::error!(%rollback, "rollback failed; start-up recovery will repair it");
                }
                return Err(error);
            }
            Err(error) => {
                tracing::warn!(%error, "fsync failed on a blob the catalog did not keep");
                self.metrics().duplicates.inc();
                return Ok(IngestReport { outcome, ..report_base });
            }
        };
        if !outcome.keeps_new_blob() {
            self.discard_blob(&written.rel_path);
        } else if overlap {
            self.committer().settle(written.rel_path.clone());
        }
        drop(written.guard);
        if matches!(outcome, CommitOutcome::AlreadyStored | CommitOutcome::DuplicateIgnored) {
            self.wait_until_first_copy_durable(&sop_instance_uid)?;
        }
        self.metrics().ingest_seconds.observe(started.elapsed());
        self.record_outcome(&outcome, written.size, &sop_instance_uid, &origin)?;
        Ok(IngestReport { outcome, ..report_base })
    }

    /// A duplicate is acknowledged only once the copy the catalog keeps is
    /// durable. That copy may still be on its way (its fsync or upload
    /// running here or on another node sharing the catalog); should its
    /// store fail, or its node die first, the acknowledgement would stand
    /// for bytes nobody has. So wait a little for it to settle, and else ask
    /// the sender to try again (a retryable failure), by which time the
    /// first copy is settled or rolled back.
    fn wait_until_first_copy_durable(&self, sop_instance_uid: &str) -> Result<(), IngestError> {
        let deadline = Instant::now() + FIRST_COPY_WAIT;
        let uids = [sop_instance_uid.to_string()];
        loop {
            // The in-memory settled set first, as in `instances_by_sop_uid`.
            let durable_here = self.committer().durable_unsettled();
            let mut found = self.catalog().instances_by_sop_uid(&uids).map_err(ArchiveError::from)?;
            crate::mark_durable_here(&mut found, &durable_here);
            let Some(first) = found.first() else {
                return Err(IngestError::Storage(format!(
                    "the first copy of {sop_instance_uid} was not kept after all; send the instance again"
                )));
            };
            if first.settled {
                return Ok(());
            }
            if Instant::now() >= deadline {
                tracing::warn!(%sop_instance_uid, path = %first.blob.path, "duplicate refused for now: the first copy is not yet durable");
                return Err(IngestError::Storage(format!(
                    "the first copy of {sop_instance_uid} is still being stored; send the instance again later"
                )));
            }
            // Another node's upload has no signal reaching this one: poll the catalog.
            std::thread::sleep(FIRST_COPY_POLL);
        }
    }

    /// Count and log what a commit decided; a refused duplicate becomes the error.
    fn record_outcome(
        &self,
        outcome: &CommitOutcome,
        size: u64,
        sop_instance_uid: &str,
        origin: &Origin,
    ) -> Result<(), IngestError> {
        match outcome {
            CommitOutcome::Stored => {
                self.metrics().instances_stored.inc();
                self.metrics().bytes_stored.add(size);
            }
            CommitOutcome::Conflict { current_digest } => {
                self.metrics().replication_conflicts.inc();
                tracing::warn!(
                    sop_instance_uid = %sop_instance_uid,
                    peer = %origin.actor,
                    current_digest = %blake3::Hash::from(*current_digest).to_hex(),
                    "replication conflict: the peer holds other bytes under this UID; both versions kept for review"
                );
            }
            CommitOutcome::RemovedHere => {
                tracing::info!(
                    sop_instance_uid = %sop_instance_uid,
                    peer = %origin.actor,
                    "replication peer sent an instance removed here; it stays removed"
                );
            }
            CommitOutcome::DuplicateRejected { reason } => {
                self.metrics().duplicates.inc();
                return Err(IngestError::rejected(RejectReason::Duplicate, reason.clone()));
            }
            _ => self.metrics().duplicates.inc(),
        }
        Ok(())
    }

    /// Finish a write-ahead store once its catalog commit is done: a kept
    /// instance is acknowledged now and its file queued to be made durable
    /// with others; a duplicate's file is dropped, as on the ordinary path.
    fn after_write_ahead_commit(
        self: &Arc<Self>,
        writer: BlobWriter,
        blob: BlobInfo,
        sop_instance_uid: &str,
        outcome: Result<CommitOutcome, String>,
        origin: &Origin,
    ) -> Result<CommitOutcome, IngestError> {
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(message) => {
                // Dropping the writer deletes its file.
                drop(writer);
                return Err(IngestError::Archive(ArchiveError::Catalog(haneul_catalog::CatalogError::Busy(message))));
            }
        };
        let size = blob.size;
        if outcome.keeps_new_blob() {
            self.metrics().ingest_write_ahead.inc();
            let sop_instance_uid = sop_instance_uid.to_string();
            self.settle_later(crate::settler::Unsettled { writer, blob, sop_instance_uid });
        } else {
            drop(writer);
            if matches!(outcome, CommitOutcome::AlreadyStored | CommitOutcome::DuplicateIgnored) {
                self.wait_until_first_copy_durable(sop_instance_uid)?;
            }
        }
        self.record_outcome(&outcome, size, sop_instance_uid, origin)?;
        Ok(outcome)
    }

    /// Apply the sender's coercion rules before anything is parsed. An
    /// instance still all in `buffer` (its blob still empty) is rewritten in
    /// memory; otherwise its blob is completed, read back into a new blob,
    /// and dropped (which deletes it) if the new one differs. Returns the
    /// writer and the bytes still to write to it.
    fn coerce(
        &self,
        writer: BlobWriter,
        buffer: Vec<u8>,
        whole_in_memory: bool,
        rules: &CoercionRules,
        origin: &Origin,
    ) -> Result<(BlobWriter, Vec<u8>), IngestError> {
        let now = dicom_now();
        if whole_in_memory {
            let mut coerced = Vec::with_capacity(buffer.len() + 4096);
            let outcome = coerce_part10(&mut buffer.as_slice(), &mut coerced, rules, &now)
                .map_err(|error| coercion_failed(error, origin))?;
            self.coerced(&outcome, origin);
            // Same file meta group, so the content digest offset set on `writer` still holds.
            return Ok((writer, if outcome.changed { coerced } else { buffer }));
        }
        let mut original = writer;
        original.write_all(&buffer)?;
        original.flush()?;
        let path = original.abs_path().to_path_buf();
        let reading = |error: std::io::Error| IngestError::Storage(format!("reading back {}: {error}", path.display()));
        let mut file = std::fs::File::open(&path).map_err(reading)?;
        let dataset_offset = match read_layout(&mut BufReader::new(&mut file)) {
            Ok(FileLayout::Part10(meta)) => meta.dataset_offset,
            Ok(FileLayout::BareDataset { .. }) => {
                return Err(IngestError::rejected(RejectReason::Unreadable, "file has no DICOM file meta information"))
            }
            Err(error) => return Err(unreadable(error)),
        };
        file.seek(SeekFrom::Start(0)).map_err(reading)?;
        let mut coerced = self.blobs().create()?;
        coerced.hash_content_from(dataset_offset);
        let outcome =
            coerce_part10(&mut BufReader::with_capacity(256 * 1024, file), &mut BlobOutput(&mut coerced), rules, &now)
                .map_err(|error| coercion_failed(error, origin))?;
        self.coerced(&outcome, origin);
        if !outcome.changed {
            return Ok((original, Vec::new()));
        }
        coerced.start_writeback()?;
        Ok((coerced, Vec::new()))
    }

    fn coerced(&self, outcome: &CoercionOutcome, origin: &Origin) {
        for warning in &outcome.warnings {
            tracing::warn!(actor = %origin.actor, %warning, "coercion rule not applied in full");
        }
        if outcome.changed {
            self.metrics().ingest_coerced.inc();
            tracing::debug!(actor = %origin.actor, modified = ?outcome.modified, "instance coerced");
        }
    }

    /// Import one file from disk (Part 10, or a bare data set whose encoding is guessed).
    pub async fn ingest_file(
        self: &Arc<Self>,
        path: &std::path::Path,
        origin: Origin,
    ) -> Result<IngestReport, IngestError> {
        let path = path.to_path_buf();
        let header_path = path.clone();
        let format = tokio::task::spawn_blocking(move || -> Result<_, IngestError> {
            let path = header_path;
            let mut file =
                std::fs::File::open(&path).map_err(|e| IngestError::Storage(format!("{}: {e}", path.display())))?;
            let layout = read_layout(&mut std::io::BufReader::new(&mut file)).map_err(unreadable)?;
            match layout {
                FileLayout::Part10(_) => Ok(IngestFormat::Part10 { expected_study_uid: None }),
                FileLayout::BareDataset { transfer_syntax_uid } => {
                    // A bare data set needs its UIDs for the meta group we write in front of it.
                    let header = read_instance_header(&mut file, &header_options()).map_err(unreadable)?;
                    let uid = |tag| header.parsed.dataset.string(tag).unwrap_or_default().to_string();
                    Ok(IngestFormat::Dataset {
                        transfer_syntax_uid: transfer_syntax_uid.to_string(),
                        sop_class_uid: uid(tags::SOP_CLASS_UID),
                        sop_instance_uid: uid(tags::SOP_INSTANCE_UID),
                    })
                }
            }
        })
        .await
        .map_err(|error| IngestError::Storage(error.to_string()))??;
        // Streamed in chunks: an instance is never held whole in memory.
        let read_error = |e: std::io::Error| IngestError::Storage(format!("{}: {e}", path.display()));
        let mut file = tokio::fs::File::open(&path).await.map_err(read_error)?;
        let mut ingest = self.begin_ingest(format, origin)?;
        let mut buffer = vec![0u8; FLUSH_THRESHOLD];
        loop {
            let read = tokio::io::AsyncReadExt::read(&mut file, &mut buffer).await.map_err(read_error)?;
            if read == 0 {
                break;
            }
            ingest.write(&buffer[..read]).await?;
        }
        self.finish_ingest(ingest).await
    }

    /// Drop a blob whose fsync was started: wait for it to let go of the file, then delete.
    fn abandon(&self, finishing: Finishing, path: &str) {
        match finishing {
            Finishing::Started(fsync) => {
                let _ = wait_for(fsync);
                self.discard_blob(path);
            }
            // Dropping the writer deletes its file.
            Finishing::Deferred(writer) => drop(writer),
        }
    }

    fn discard_blob(&self, path: &str) {
        if let Err(error) = self.blobs().delete(path) {
            tracing::warn!(%path, %error, "could not remove discarded blob");
        }
    }

    fn journal_rejection(&self, origin: &Origin, error: &IngestError) {
        let event =
            Event::new("instance-rejected", origin).with_detail(serde_json::json!({ "reason": error.to_string() }));
        self.journal(event);
    }
}

/// Open a received instance's file again, to read its header.
fn open_received(writer: &BlobWriter) -> Result<std::fs::File, IngestError> {
    let path = writer.abs_path();
    std::fs::File::open(path)
        .map_err(|e| IngestError::Storage(format!("reopening received instance {}: {e}", path.display())))
}

/// A blob writer as an `io::Write`, for the coercer.
struct BlobOutput<'a>(&'a mut BlobWriter);

impl std::io::Write for BlobOutput<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(buf).map_err(std::io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // The blob is flushed before it is read back, and made durable by `finish`.
        Ok(())
    }
}

/// A coercion that failed: a refusal of the instance, unless writing failed.
fn coercion_failed(error: CoerceError, origin: &Origin) -> IngestError {
    if let CoerceError::Output(error) = error {
        return IngestError::Storage(format!("writing the coerced instance: {error}"));
    }
    tracing::warn!(actor = %origin.actor, %error, "coercion failed; instance refused");
    IngestError::rejected(RejectReason::Unreadable, format!("coercion failed: {error}"))
}

/// The current UTC time as a DICOM DT value.
fn dicom_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}+0000",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

type FsyncReceiver = std::sync::mpsc::Receiver<Result<WrittenBlob, IngestError>>;

/// How a received blob is being made durable.
enum Finishing {
    /// Its fsync (or upload) runs on another thread.
    Started(FsyncReceiver),
    /// Not yet: a write-ahead instance's file, made durable with others after its commit.
    Deferred(Box<BlobWriter>),
}

impl Finishing {
    fn wait(self) -> Result<WrittenBlob, IngestError> {
        match self {
            Finishing::Started(fsync) => wait_for(fsync),
            Finishing::Deferred(writer) => writer.finish().map_err(IngestError::from),
        }
    }
}

/// Make a blob durable on another blocking thread; the receiver yields the result.
fn spawn_finish(writer: BlobWriter, metrics: Arc<Metrics>) -> FsyncReceiver {
    let (sender, receiver) = std::sync::mpsc::sync_channel(1);
    // Blocking-pool threads run inside the runtime, so they can spawn more blocking work.
    tokio::runtime::Handle::current().spawn_blocking(move || {
        let started = Instant::now();
        let result = writer.finish().map_err(IngestError::from);
        metrics.blob_fsync_seconds.observe(started.elapsed());
        let _ = sender.send(result);
    });
    receiver
}

fn wait_for(fsync: FsyncReceiver) -> Result<WrittenBlob, IngestError> {
    fsync.recv().unwrap_or_else(|_| Err(IngestError::Storage("blob fsync task vanished".into())))
}

fn header_options() -> ReadOptions {
    ReadOptions::default()
}

fn unreadable(error: ReadError) -> IngestError {
    match error {
        ReadError::UnsupportedTransferSyntax(uid) => {
            IngestError::rejected(RejectReason::UnsupportedTransferSyntax, format!("unsupported transfer syntax {uid}"))
        }
        other => IngestError::rejected(RejectReason::Unreadable, format!("unreadable data set: {other}")),
    }
}

fn read_header_from_memory(bytes: &[u8]) -> Result<InstanceHeader, IngestError> {
    let layout = read_layout(&mut Cursor::new(bytes)).map_err(unreadable)?;
    let FileLayout::Part10(meta) = layout else {
        return Err(IngestError::rejected(RejectReason::Unreadable, "file has no DICOM file meta information"));
    };
    let transfer_syntax = ts::lookup(&meta.transfer_syntax_uid)
        .ok_or_else(|| unreadable(ReadError::UnsupportedTransferSyntax(meta.transfer_syntax_uid.clone())))?;
    let start = usize::try_from(meta.dataset_offset).unwrap_or(usize::MAX).min(bytes.len());
    let dataset = &bytes[start..];
    let source = SeekSource::new(Cursor::new(dataset), 0, dataset.len() as u64);
    let parsed = read_dataset(source, transfer_syntax, &header_options()).map_err(unreadable)?;
    let dataset_offset = meta.dataset_offset;
    Ok(InstanceHeader { meta: Some(meta), transfer_syntax, dataset_offset, parsed })
}

/// A validated header, split by level, waiting for its blob to become durable.
struct Prepared {
    sop_class_uid: String,
    sop_instance_uid: String,
    study_instance_uid: String,
    series_instance_uid: String,
    transfer_syntax_uid: String,
    dataset_offset: u64,
    patient: PatientFacts,
    study: StudyFacts,
    series: SeriesFacts,
    instance_attrs: Dataset,
    instance_number: Option<i64>,
}

fn required(dataset: &Dataset, tag: Tag, name: &'static str) -> Result<String, IngestError> {
    dataset.string(tag).map(str::to_string).ok_or_else(|| {
        IngestError::rejected(RejectReason::MissingAttribute(name), format!("data set has no {name} {tag}"))
    })
}

fn validate(header: &InstanceHeader, format: &IngestFormat) -> Result<Prepared, IngestError> {
    let dataset = &header.parsed.dataset;
    let sop_class_uid = required(dataset, tags::SOP_CLASS_UID, "SOP Class UID")?;
    let sop_instance_uid = required(dataset, tags::SOP_INSTANCE_UID, "SOP Instance UID")?;
    let study_instance_uid = required(dataset, tags::STUDY_INSTANCE_UID, "Study Instance UID")?;
    let series_instance_uid = required(dataset, tags::SERIES_INSTANCE_UID, "Series Instance UID")?;
    for (name, uid) in [
        ("SOP Class UID", &sop_class_uid),
        ("SOP Instance UID", &sop_instance_uid),
        ("Study Instance UID", &study_instance_uid),
        ("Series Instance UID", &series_instance_uid),
    ] {
        if !haneul_dicom::uid::is_acceptable(uid) {
            return Err(IngestError::rejected(RejectReason::Inconsistent, format!("{name} {uid:?} is not a UID")));
        }
    }
    let (declared_class, declared_instance) = match (format, &header.meta) {
        (IngestFormat::Dataset { sop_class_uid, sop_instance_uid, .. }, _) => {
            (sop_class_uid.as_str(), sop_instance_uid.as_str())
        }
        (IngestFormat::Part10 { .. }, Some(meta)) => {
            (meta.media_storage_sop_class_uid.as_str(), meta.media_storage_sop_instance_uid.as_str())
        }
        (IngestFormat::Part10 { .. }, None) => ("", ""),
    };
    if !declared_instance.is_empty() && declared_instance != sop_instance_uid {
        return Err(IngestError::rejected(
            RejectReason::Inconsistent,
            format!("SOP Instance UID {sop_instance_uid} in the data set differs from {declared_instance} announced"),
        ));
    }
    if let IngestFormat::Part10 { expected_study_uid: Some(expected) } = format {
        if *expected != study_instance_uid {
            return Err(IngestError::rejected(
                RejectReason::Inconsistent,
                format!("instance belongs to study {study_instance_uid}, not {expected}"),
            ));
        }
    }
    if haneul_dicom::dict::uid_name(&sop_class_uid).is_some()
        && !haneul_dicom::dict::is_storage_sop_class(&sop_class_uid)
    {
        return Err(IngestError::rejected(
            RejectReason::Inconsistent,
            format!("{sop_class_uid} is not a storage SOP class"),
        ));
    }
    if !declared_class.is_empty() && declared_class != sop_class_uid {
        return Err(IngestError::rejected(
            RejectReason::Inconsistent,
            format!("SOP Class UID {sop_class_uid} in the data set differs from {declared_class} announced"),
        ));
    }

    let mut patient = PatientFacts::default();
    let mut study = StudyFacts { study_uid: study_instance_uid.clone(), ..StudyFacts::default() };
    let mut series = SeriesFacts { series_uid: series_instance_uid.clone(), ..SeriesFacts::default() };
    let mut instance_attrs = Dataset::new();
    for element in dataset.iter() {
        let target = match level_of(element.tag) {
            Level::Patient => &mut patient.attrs,
            Level::Study => &mut study.attrs,
            Level::Series => &mut series.attrs,
            Level::Image => &mut instance_attrs,
        };
        target.put(element.clone());
    }
    // The unique keys of the upper levels also belong on their own level records.
    study.attrs.put(Element::text(tags::STUDY_INSTANCE_UID, VR::UI, study_instance_uid.clone()));
    series.attrs.put(Element::text(tags::SERIES_INSTANCE_UID, VR::UI, series_instance_uid.clone()));
    if let Some(pixel) = &header.parsed.pixel_data {
        let bulk = BulkRef { offset: pixel.offset, length: pixel.length };
        instance_attrs.put(Element::new(pixel.tag, pixel.vr, Value::Bulk(bulk)));
    }

    let text = |tag| dataset.string(tag).unwrap_or_default().to_string();
    patient.patient_id = text(tags::PATIENT_ID);
    patient.issuer = text(tags::ISSUER_OF_PATIENT_ID);
    patient.name = text(tags::PATIENT_NAME);
    patient.birth_date = normalize_temporal(VR::DA, &text(tags::PATIENT_BIRTH_DATE)).unwrap_or_default();
    patient.sex = text(tags::PATIENT_SEX);
    study.study_date = normalize_temporal(VR::DA, &text(tags::STUDY_DATE)).unwrap_or_default();
    study.study_time = text(tags::STUDY_TIME);
    study.accession = text(tags::ACCESSION_NUMBER);
    study.study_id = text(tags::STUDY_ID);
    study.description = text(tags::STUDY_DESCRIPTION);
    study.referring_physician = text(tags::REFERRING_PHYSICIAN_NAME);
    series.modality = text(tags::MODALITY);
    series.series_number = dataset.int(tags::SERIES_NUMBER);
    series.description = text(tags::SERIES_DESCRIPTION);
    series.body_part = text(tags::BODY_PART_EXAMINED);

    Ok(Prepared {
        sop_class_uid,
        sop_instance_uid,
        study_instance_uid,
        series_instance_uid,
        transfer_syntax_uid: header.transfer_syntax.uid.to_string(),
        dataset_offset: header.dataset_offset,
        patient,
        study,
        series,
        instance_number: dataset.int(tags::INSTANCE_NUMBER),
        instance_attrs,
    })
}

impl Prepared {
    fn report(&self, blob: &BlobInfo) -> IngestReport {
        IngestReport {
            outcome: CommitOutcome::Stored,
            sop_class_uid: self.sop_class_uid.clone(),
            sop_instance_uid: self.sop_instance_uid.clone(),
            study_instance_uid: self.study_instance_uid.clone(),
            series_instance_uid: self.series_instance_uid.clone(),
            transfer_syntax_uid: self.transfer_syntax_uid.clone(),
            size: blob.size,
            patient_id: self.patient.patient_id.clone(),
        }
    }

    fn into_new_instance(
        self,
        blob: BlobInfo,
        content_digest: Option<[u8; 32]>,
        origin: Origin,
        blob_durable: bool,
        duplicate_policy: Option<DuplicatePolicy>,
    ) -> NewInstance {
        NewInstance {
            patient: self.patient,
            study: self.study,
            series: self.series,
            instance: InstanceFacts {
                sop_uid: self.sop_instance_uid,
                sop_class: self.sop_class_uid,
                instance_number: self.instance_number,
                transfer_syntax: self.transfer_syntax_uid,
                dataset_offset: self.dataset_offset,
                blob,
                content_digest,
                received_ms: now_ms(),
                attrs: self.instance_attrs,
                blob_durable,
                write_ahead: None,
            },
            origin,
            duplicate_policy,
        }
    }
}
