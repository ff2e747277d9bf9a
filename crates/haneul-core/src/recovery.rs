//! Start-up recovery: remove blobs a crash left without a catalog entry.
//!
//! Blobs are written in their final place before the catalog commit, so a
//! crash can leave files nobody references (partial receptions, or complete
//! ones whose commit never happened; neither was acknowledged). Every group
//! commit records the oldest shard that may hold such a file, so recovery
//! lists only the shards from there on instead of the whole archive.
//!
//! To overlap the blob's fsync with the catalog commit, an instance may be
//! committed while its blob is still being made durable; such blobs are
//! listed as *unsettled* until a later commit settles them. After a crash,
//! each unsettled blob is re-hashed: if it is intact it is fsynced and
//! settled, otherwise its instance (never acknowledged) is rolled back. So
//! no catalog entry is left without its blob either. A small blob may have
//! been acknowledged before its fsync, its bytes committed with its entry
//! (`InstanceFacts::write_ahead`): one that did not survive is written again
//! from those bytes, never rolled back.
//!
//! Where several nodes share a catalog (and perhaps a bucket), each has a
//! name, writes under `<node>/`, and recovers only what it wrote itself at
//! start-up. A node that dies and does not come back would leave its
//! unsettled instances unjudged for good; with a shared bucket, where every
//! node can read what it uploaded, another node adopts them once the dead
//! node's liveness lease has lapsed (see [`adopt`]).

use haneul_catalog::BlobInfo;
use haneul_catalog::{Catalog, CommitBatch, Event, Origin, RemovalKind};
use haneul_storage::BlobStore;

use crate::ArchiveError;

const SCAN_FROM_KEY: &str = "recovery_scan_from";

/// The setting holding this node's recovery watermark: one per node where
/// several share the catalog, as each lists only its own shards.
pub(crate) fn scan_from_key(blobs: &BlobStore) -> String {
    match blobs.node() {
        Some(node) => format!("{SCAN_FROM_KEY}/{node}"),
        None => SCAN_FROM_KEY.to_string(),
    }
}
/// Watermark of a clean shutdown: sorts after every shard, so nothing is listed.
pub(crate) const NOTHING_TO_SCAN: &str = "~clean";

/// What recovery did.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    pub shards_scanned: usize,
    pub files_checked: usize,
    pub unreferenced_removed: Vec<String>,
    /// Unsettled blobs found intact and settled.
    pub settled: usize,
    /// Unsettled blobs written again from the bytes committed with them.
    pub restored: Vec<String>,
    /// Instances rolled back because their blob did not survive.
    pub rolled_back: Vec<String>,
    /// Files of earlier removals deleted now.
    pub trash_emptied: usize,
}

/// Delete the files of removed instances, then forget them.
pub(crate) fn empty_trash(blobs: &BlobStore, catalog: &dyn Catalog, paths: &[String]) -> Result<(), ArchiveError> {
    if paths.is_empty() {
        return Ok(());
    }
    for path in paths {
        blobs.delete(path)?;
    }
    catalog.empty_trash(paths)?;
    Ok(())
}

pub(crate) fn recover(blobs: &BlobStore, catalog: &dyn Catalog) -> Result<RecoveryReport, ArchiveError> {
    let origin =
        Origin { actor: "haneul".into(), address: "local".into(), session: "recovery".into(), ..Origin::default() };
    let mut report = RecoveryReport::default();
    // Files of removals that were committed but not yet deleted: in a shared
    // bucket any node can delete them, on local disk only the node that has them.
    let leftover: Vec<String> =
        catalog.trash()?.into_iter().filter(|path| blobs.is_shared() || blobs.owns(path)).collect();
    report.trash_emptied = leftover.len();
    empty_trash(blobs, catalog, &leftover)?;
    settle_or_roll_back(blobs, catalog, &origin, &mut report, &|path| blobs.owns(path))?;
    let scan_key = scan_from_key(blobs);
    let scan_from = catalog.setting(&scan_key)?.unwrap_or_else(|| "0000".to_string());
    for shard in blobs.shards_since(&scan_from)? {
        report.shards_scanned += 1;
        let files = blobs.files_in_shard(&shard)?;
        if files.is_empty() {
            continue;
        }
        let referenced = catalog.referenced_paths(&format!("{shard}/"))?;
        for path in files {
            report.files_checked += 1;
            if referenced.contains(&path) {
                continue;
            }
            tracing::warn!(%path, "removing blob left without a catalog entry by an interrupted store");
            blobs.delete(&path)?;
            report.unreferenced_removed.push(path);
        }
    }
    if !report.unreferenced_removed.is_empty() {
        let event = Event::new("recovery-removed-unreferenced", &origin)
            .with_detail(serde_json::json!({ "paths": report.unreferenced_removed }));
        catalog.commit(&CommitBatch::events(&[event]))?;
    }
    catalog.set_setting(&scan_key, &blobs.current_shard())?;
    tracing::info!(
        shards = report.shards_scanned,
        files = report.files_checked,
        removed = report.unreferenced_removed.len(),
        settled = report.settled,
        restored = report.restored.len(),
        rolled_back = report.rolled_back.len(),
        "start-up recovery finished"
    );
    Ok(report)
}

/// The node that wrote a blob in a shared bucket: its path's first segment.
pub(crate) fn writer_of(path: &str) -> Option<&str> {
    path.split_once('/').map(|(node, _)| node).filter(|node| !node.is_empty())
}

/// Settle or roll back the unsettled instances another node wrote into the
/// shared bucket, as that node's own start-up recovery would have. The
/// caller holds the node's liveness lease, taken after it lapsed, so the
/// node is not running (were it to start meanwhile, both would judge the
/// same bytes the same way: the work is idempotent).
pub(crate) fn adopt(blobs: &BlobStore, catalog: &dyn Catalog, node: &str) -> Result<RecoveryReport, ArchiveError> {
    let origin = Origin {
        actor: "haneul".into(),
        address: "local".into(),
        session: format!("recovery of node {node}"),
        ..Origin::default()
    };
    let mut report = RecoveryReport::default();
    settle_or_roll_back(blobs, catalog, &origin, &mut report, &|path| writer_of(path) == Some(node))?;
    Ok(report)
}

/// Check every blob committed before its fsync had finished, of the blobs
/// `judged` selects.
fn settle_or_roll_back(
    blobs: &BlobStore,
    catalog: &dyn Catalog,
    origin: &Origin,
    report: &mut RecoveryReport,
    judged: &dyn Fn(&str) -> bool,
) -> Result<(), ArchiveError> {
    let mut settled = Vec::new();
    let mut lost = Vec::new();
    // Another node's unsettled blobs may still be on their way: not ours to judge.
    let ours = catalog.unsettled_instances()?.into_iter().filter(|instance| judged(&instance.blob.path));
    for instance in ours {
        let intact = blobs
            .digest_of(&instance.blob.path)
            .map(|(size, digest)| size == instance.blob.size && digest.0 == instance.blob.digest)
            .unwrap_or(false);
        // A crash of the process alone leaves the bytes in the page cache, so
        // an intact blob is made durable before it is settled.
        if intact && blobs.sync_blob(&instance.blob.path).is_ok() {
            settled.push(instance.blob.path);
        } else if restore_from_write_ahead(blobs, catalog, &instance.blob, &instance.sop_uid)? {
            tracing::warn!(sop_instance_uid = %instance.sop_uid, path = %instance.blob.path, "file of an acknowledged instance written again from the bytes committed with it");
            report.restored.push(instance.blob.path.clone());
            settled.push(instance.blob.path);
        } else {
            tracing::warn!(sop_instance_uid = %instance.sop_uid, path = %instance.blob.path, "rolling back an unacknowledged instance whose file did not survive");
            lost.push(instance);
        }
    }
    if !lost.is_empty() {
        let uids: Vec<String> = lost.iter().map(|instance| instance.sop_uid.clone()).collect();
        let event =
            Event::new("recovery-rolled-back", origin).with_detail(serde_json::json!({ "sop_instance_uids": uids }));
        let removed = catalog.remove_instances(&uids, Some(&event), RemovalKind::Undo)?;
        empty_trash(blobs, catalog, &removed.trashed_paths)?;
        report.rolled_back = uids;
    }
    if !settled.is_empty() {
        report.settled = settled.len();
        catalog.commit(&CommitBatch { settled: &settled, ..CommitBatch::events(&[]) })?;
    }
    Ok(())
}

/// Write an unsettled blob again from the bytes committed with it, if it has
/// them and they are what the catalog says it holds. Returns whether it did.
pub(crate) fn restore_from_write_ahead(
    blobs: &BlobStore,
    catalog: &dyn Catalog,
    blob: &BlobInfo,
    sop_instance_uid: &str,
) -> Result<bool, ArchiveError> {
    let Some(bytes) = catalog.write_ahead(&blob.path)? else {
        return Ok(false);
    };
    if bytes.len() as u64 != blob.size || blake3::hash(&bytes).as_bytes() != &blob.digest {
        tracing::error!(%sop_instance_uid, path = %blob.path, "the bytes committed with a blob do not match its entry");
        return Ok(false);
    }
    blobs.restore(&blob.path, &bytes)?;
    Ok(true)
}
