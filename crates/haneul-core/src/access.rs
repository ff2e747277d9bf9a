//! Reading the archive for DICOMweb and the REST API: paged searches,
//! instance headers and byte ranges of stored files, removal, usage figures.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use haneul_catalog::{Event, Origin, RemovalKind, StoredInstance};
use haneul_dicom::header::{read_instance_header, InstanceHeader};
use haneul_dicom::levels::Level;
use haneul_dicom::matching::Query;
use haneul_dicom::read::ReadOptions;
use haneul_dicom::Dataset;
use serde::Serialize;

use crate::{run_blocking, Archive, ArchiveError};

/// How much of the disk the archive uses.
#[derive(Debug, Clone, Serialize)]
pub struct DiskUsage {
    /// Bytes of stored instance files (current versions).
    pub stored_bytes: u64,
    /// Free and total bytes of the file system holding the data directory.
    pub free_bytes: u64,
    pub total_bytes: u64,
}

impl Archive {
    /// The matches of a query in a stable order, skipping `offset` and
    /// returning at most `limit` (QIDO-RS paging).
    pub async fn search(
        &self,
        query: Query,
        offset: usize,
        limit: Option<usize>,
        origin: &Origin,
    ) -> Result<Vec<Dataset>, ArchiveError> {
        if limit == Some(0) {
            return Ok(Vec::new());
        }
        let mut receiver = self.find_skipping(query, offset, origin);
        let mut results = Vec::new();
        while let Some(next) = receiver.recv().await {
            results.push(next?);
            if limit.is_some_and(|limit| results.len() >= limit) {
                break;
            }
        }
        Ok(results)
    }

    /// Read an instance's header again from its file, keeping values up to
    /// `inline_limit` bytes in memory (LUTs and other tables included).
    pub async fn read_header(
        &self,
        instance: &StoredInstance,
        inline_limit: u64,
    ) -> Result<InstanceHeader, ArchiveError> {
        let mut file = self.open_instance(instance).await?;
        run_blocking(move || {
            let options =
                ReadOptions { bulk_threshold: inline_limit, max_inline_value: inline_limit, ..ReadOptions::default() };
            read_instance_header(&mut file, &options)
                .map_err(|error| ArchiveError::Task(format!("stored instance is unreadable: {error}")))
        })
        .await
    }

    /// Read `length` bytes of an instance's file from `offset` (absolute).
    pub async fn read_range(
        &self,
        instance: &StoredInstance,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, ArchiveError> {
        let mut file = self.open_instance(instance).await?;
        let size = instance.blob.size;
        run_blocking(move || {
            if offset.saturating_add(length) > size {
                return Err(ArchiveError::Task(format!("range {offset}+{length} is beyond the {size}-byte file")));
            }
            let mut bytes =
                vec![0u8; usize::try_from(length).map_err(|_| ArchiveError::Task("range too large".into()))?];
            file.seek(SeekFrom::Start(offset))
                .and_then(|_| file.read_exact(&mut bytes))
                .map_err(|source| ArchiveError::DataDir { path: instance_path(), source })?;
            Ok(bytes)
        })
        .await
    }

    /// Remove a study, series or instance and every instance below it;
    /// returns how many instances were removed. Recorded in the journal.
    /// `replicated_from`: the peer (AE title) that removed it first and passes
    /// the removal on; journaled, so that it is not sent back there.
    pub async fn remove(
        self: &Arc<Self>,
        level: Level,
        uid: &str,
        origin: &Origin,
        replicated_from: Option<&str>,
    ) -> Result<usize, ArchiveError> {
        // A blank key would match universally: never remove by one.
        if uid.trim().is_empty() {
            return Ok(0);
        }
        let key = level.unique_key();
        let mut identifier = Dataset::new();
        identifier.put(haneul_dicom::Element::text(
            haneul_dicom::tags::QUERY_RETRIEVE_LEVEL,
            haneul_dicom::VR::CS,
            level.as_str(),
        ));
        identifier.put(haneul_dicom::Element::text(key, haneul_dicom::dict::implicit_vr(key), uid));
        let query = Query::from_identifier(&identifier, haneul_dicom::levels::InformationModel::PatientRoot)
            .map_err(|error| ArchiveError::Task(error.to_string()))?;
        let instances = self.find_instances(query, origin).await?;
        if instances.is_empty() {
            return Ok(0);
        }
        let uids: Vec<String> = instances.iter().map(|instance| instance.sop_uid.clone()).collect();
        let mut event = Event::new("removed", origin).with_detail(serde_json::json!({
            "level": level.as_str(),
            "uid": uid,
            "instances": uids.len(),
        }));
        if let Some(peer) = replicated_from {
            event.detail["replicated_from"] = peer.into();
        }
        match level {
            Level::Study => event.study_uid = Some(uid.to_string()),
            Level::Series => event.series_uid = Some(uid.to_string()),
            Level::Image => event.sop_uid = Some(uid.to_string()),
            Level::Patient => event.patient_id = Some(uid.to_string()),
        }
        let archive = Arc::clone(self);
        run_blocking(move || {
            let removed = archive.catalog().remove_instances(&uids, Some(&event), RemovalKind::Deliberate)?;
            crate::recovery::empty_trash(archive.blobs(), archive.catalog().as_ref(), &removed.trashed_paths)?;
            Ok(removed.instances.len())
        })
        .await
    }

    /// Stored bytes and the space left on the data directory's file system.
    pub async fn disk_usage(&self) -> Result<DiskUsage, ArchiveError> {
        let statistics = self.statistics().await?;
        let (free_bytes, total_bytes) = filesystem_space(self.data_dir());
        Ok(DiskUsage { stored_bytes: statistics.stored_bytes, free_bytes, total_bytes })
    }
}

fn instance_path() -> std::path::PathBuf {
    std::path::PathBuf::from("(stored instance)")
}

#[cfg(unix)]
fn filesystem_space(path: &std::path::Path) -> (u64, u64) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return (0, 0);
    };
    // SAFETY: statvfs fills the zeroed struct it is given; the path is a valid C string.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    if rc != 0 {
        return (0, 0);
    }
    let block = stat.f_frsize as u64;
    (stat.f_bavail as u64 * block, stat.f_blocks as u64 * block)
}

#[cfg(not(unix))]
fn filesystem_space(_path: &std::path::Path) -> (u64, u64) {
    (0, 0)
}
