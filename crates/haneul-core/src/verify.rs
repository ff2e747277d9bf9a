//! `haneul verify`: re-read every blob and compare it with the catalog.
//!
//! Runs beside a live server (it only reads), so blobs of the current hour
//! that are not yet catalogued are not reported: they may be in flight.

use std::collections::HashSet;
use std::path::Path;

use haneul_storage::BlobConfig;
use serde::Serialize;

use crate::{open_blob_store, ArchiveError, CatalogLocation, CATALOG_FILE};

/// One problem found by verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "kebab-case")]
pub enum VerifyProblem {
    /// The blob's bytes no longer hash to the recorded digest (or size).
    DigestMismatch { sop_instance_uid: String, path: String },
    /// The catalog references a blob that is not on disk.
    MissingBlob { sop_instance_uid: String, path: String },
    /// A blob that no catalog entry references.
    Unreferenced { path: String },
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub instances_checked: u64,
    pub bytes_checked: u64,
    pub problems: Vec<VerifyProblem>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verify the archive in `data_dir`. `progress` is called with the bytes
/// checked so far and the total to check.
pub fn verify_archive(
    data_dir: &Path,
    location: &CatalogLocation,
    blob_config: &BlobConfig,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<VerifyReport, ArchiveError> {
    if !location.exists(data_dir) {
        return Err(ArchiveError::DataDir {
            path: data_dir.join(CATALOG_FILE),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no catalog here"),
        });
    }
    let catalog = location.open(data_dir)?;
    let blobs = open_blob_store(data_dir, blob_config, false)?;
    let total_bytes = catalog.statistics()?.stored_bytes;
    let mut report = VerifyReport::default();
    let mut after = 0;
    loop {
        let page = catalog.instance_page(after, 500)?;
        let Some(last) = page.last() else { break };
        after = last.pk;
        for instance in page {
            report.instances_checked += 1;
            match blobs.digest_of(&instance.blob.path) {
                Ok((size, digest)) => {
                    report.bytes_checked += size;
                    if size != instance.blob.size || digest.0 != instance.blob.digest {
                        report.problems.push(VerifyProblem::DigestMismatch {
                            sop_instance_uid: instance.sop_uid.clone(),
                            path: instance.blob.path.clone(),
                        });
                    }
                }
                Err(error) if error.is_not_found() => {
                    report.problems.push(VerifyProblem::MissingBlob {
                        sop_instance_uid: instance.sop_uid.clone(),
                        path: instance.blob.path.clone(),
                    });
                }
                Err(error) => return Err(error.into()),
            }
            progress(report.bytes_checked, total_bytes);
        }
    }
    // Unreferenced blobs: this node's own (where several nodes share the catalog).
    let current_shard = blobs.current_shard();
    for shard in blobs.shards_since("0000")? {
        if shard >= current_shard {
            continue;
        }
        let referenced: HashSet<String> = catalog.referenced_paths(&format!("{shard}/"))?;
        for path in blobs.files_in_shard(&shard)? {
            if !referenced.contains(&path) {
                report.problems.push(VerifyProblem::Unreferenced { path });
            }
        }
    }
    Ok(report)
}
