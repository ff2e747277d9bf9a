//! Writing one blob: streamed, hashed, then made durable.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::{fsync_dir, lock, BlobStore, Digest, Result, StorageError};

/// The shards of blobs not yet referenced by the catalog, by tracking id.
pub(crate) type InflightMap = Arc<Mutex<BTreeMap<u64, String>>>;

/// Keeps a blob's shard in the in-flight set until dropped.
pub struct InflightGuard {
    pub(crate) inflight: InflightMap,
    pub(crate) id: u64,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        lock(&self.inflight).remove(&self.id);
    }
}

/// A blob being written. Dropped without [`finish`](BlobWriter::finish), it deletes its file.
pub struct BlobWriter {
    file: Option<BufWriter<File>>,
    rel_path: String,
    abs_path: PathBuf,
    hasher: blake3::Hasher,
    /// A second digest, of the bytes from an offset on: the data set without
    /// the file meta group, which names the sender and so differs between
    /// copies of one instance on two nodes.
    content: Option<(u64, blake3::Hasher)>,
    size: u64,
    guard: Option<InflightGuard>,
    durable: bool,
    /// The directory entry was made durable when the file was created ahead of use.
    entry_durable: bool,
    /// The bucket store to upload the finished file to; the file is then only staged.
    upload: Option<BlobStore>,
}

/// A blob that is durably on disk but not yet referenced by the catalog.
pub struct WrittenBlob {
    pub rel_path: String,
    pub size: u64,
    pub digest: Digest,
    /// Drop once the catalog references the blob or the blob is deleted.
    pub guard: InflightGuard,
}

impl BlobWriter {
    pub(crate) fn new(
        file: File,
        rel_path: String,
        abs_path: PathBuf,
        guard: InflightGuard,
        durable: bool,
        entry_durable: bool,
    ) -> Self {
        BlobWriter {
            file: Some(BufWriter::with_capacity(256 * 1024, file)),
            rel_path,
            abs_path,
            hasher: blake3::Hasher::new(),
            content: None,
            size: 0,
            guard: Some(guard),
            durable,
            entry_durable,
            upload: None,
        }
    }

    /// Upload the file to `store`'s bucket when finished, then delete it.
    pub(crate) fn upload_to(&mut self, store: BlobStore) {
        self.upload = Some(store);
    }

    /// Whether the file's directory entry was already durable when writing began.
    pub fn entry_durable(&self) -> bool {
        self.entry_durable
    }

    pub fn rel_path(&self) -> &str {
        &self.rel_path
    }

    pub fn abs_path(&self) -> &Path {
        &self.abs_path
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Digest of everything written so far.
    pub fn digest(&self) -> Digest {
        Digest(*self.hasher.finalize().as_bytes())
    }

    /// Also digest the bytes from `offset` on (see [`content_digest`](Self::content_digest)).
    /// False when more than `offset` bytes were already written.
    pub fn hash_content_from(&mut self, offset: u64) -> bool {
        if offset < self.size {
            return false;
        }
        self.content = Some((offset, blake3::Hasher::new()));
        true
    }

    /// Digest of the bytes written from the offset given to
    /// [`hash_content_from`](Self::hash_content_from), if it was called.
    pub fn content_digest(&self) -> Option<Digest> {
        self.content.as_ref().map(|(_, hasher)| Digest(*hasher.finalize().as_bytes()))
    }

    pub fn write_all(&mut self, data: &[u8]) -> Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Err(StorageError::io(&self.abs_path, io::ErrorKind::BrokenPipe.into()));
        };
        file.write_all(data).map_err(|e| StorageError::io(&self.abs_path, e))?;
        self.hasher.update(data);
        if let Some((offset, content)) = self.content.as_mut() {
            let before_offset = usize::try_from(offset.saturating_sub(self.size)).unwrap_or(usize::MAX);
            if before_offset < data.len() {
                content.update(&data[before_offset..]);
            }
        }
        self.size += data.len() as u64;
        Ok(())
    }

    /// Flush what was written to the page cache without making it durable,
    /// so the file can be re-read (to parse its header) before deciding to keep it.
    pub fn flush(&mut self) -> Result<()> {
        if let Some(file) = self.file.as_mut() {
            file.flush().map_err(|e| StorageError::io(&self.abs_path, e))?;
        }
        Ok(())
    }

    /// Ask the kernel to start writing what was written so far, without
    /// waiting; the final fsync then has less left to do.
    pub fn start_writeback(&mut self) -> Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        file.flush().map_err(|e| StorageError::io(&self.abs_path, e))?;
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let fd = file.get_ref().as_raw_fd();
            // SAFETY: `fd` is an open file descriptor owned by `file` for the duration of the call.
            let rc = unsafe { libc::sync_file_range(fd, 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
            if rc != 0 {
                // Only a hint: the fsync in `finish` still makes the data durable.
                tracing::debug!(error = %io::Error::last_os_error(), "sync_file_range failed");
            }
        }
        Ok(())
    }

    /// Make the blob durable: data fsynced, then its directory entry; or,
    /// for a bucket, uploaded and acknowledged (the staging file is then deleted).
    pub fn finish(mut self) -> Result<WrittenBlob> {
        let buffered =
            self.file.take().ok_or_else(|| StorageError::io(&self.abs_path, io::ErrorKind::BrokenPipe.into()))?;
        let file = buffered.into_inner().map_err(|e| StorageError::io(&self.abs_path, e.into_error()))?;
        let digest = Digest(*self.hasher.finalize().as_bytes());
        if let Some(store) = self.upload.take() {
            // The upload reads the file by its path; the writer's handle is not needed.
            drop(file);
            // On failure the writer's drop deletes the staging file.
            store.upload(&self.abs_path, &self.rel_path, self.size, digest)?;
            if let Err(error) = fs::remove_file(&self.abs_path) {
                tracing::warn!(path = %self.abs_path.display(), %error, "could not remove an uploaded staging file");
            }
        } else if self.durable {
            file.sync_data().map_err(|e| StorageError::io(&self.abs_path, e))?;
            if !self.entry_durable {
                if let Some(dir) = self.abs_path.parent() {
                    fsync_dir(dir)?;
                }
            }
        }
        let guard = self.guard.take().ok_or_else(|| StorageError::InvalidPath(self.rel_path.clone()))?;
        Ok(WrittenBlob { rel_path: std::mem::take(&mut self.rel_path), size: self.size, digest, guard })
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.guard.is_some() {
            drop(self.file.take());
            if let Err(error) = fs::remove_file(&self.abs_path) {
                if error.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.abs_path.display(), %error, "could not remove abandoned blob");
                }
            }
        }
    }
}
