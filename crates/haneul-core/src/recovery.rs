//! Start-up recovery: remove blobs a crash left without a catalog entry.
//!
//! Blobs are written in their final place before the catalog commit, so a
//! crash can leave files nobody references (partial receptions, or complete
//! ones whose commit never happened; neither was acknowledged). Every group
//! commit records the oldest shard that may hold such a file, so recovery
//! lists only the shards from there on instead of the whole archive.
//! A catalog entry without its blob cannot arise this way: the catalog is
//! written only after the blob is durable.

use haneul_catalog::{Catalog, Event, Origin};
use haneul_storage::BlobStore;

use crate::ArchiveError;

pub(crate) const SCAN_FROM_KEY: &str = "recovery_scan_from";

/// What recovery did.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    pub shards_scanned: usize,
    pub files_checked: usize,
    pub unreferenced_removed: Vec<String>,
}

pub(crate) fn recover(blobs: &BlobStore, catalog: &dyn Catalog) -> Result<RecoveryReport, ArchiveError> {
    let scan_from = catalog.setting(SCAN_FROM_KEY)?.unwrap_or_else(|| "0000".to_string());
    let mut report = RecoveryReport::default();
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
        let origin = Origin { actor: "haneul".into(), address: "local".into(), session: "recovery".into() };
        let event = Event::new("recovery-removed-unreferenced", &origin)
            .with_detail(serde_json::json!({ "paths": report.unreferenced_removed }));
        catalog.append_events(&[event])?;
    }
    catalog.set_setting(SCAN_FROM_KEY, &BlobStore::current_shard())?;
    tracing::info!(
        shards = report.shards_scanned,
        files = report.files_checked,
        removed = report.unreferenced_removed.len(),
        "start-up recovery finished"
    );
    Ok(report)
}
