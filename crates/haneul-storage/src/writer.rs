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
        let file = self.take_file()?;
        if let Some(store) = self.upload.take() {
            // The upload reads the file by its path; the writer's handle is not needed.
            drop(file);
            let digest = self.digest();
            // On failure the writer's drop deletes the staging file.
            store.upload(&self.abs_path, &self.rel_path, self.size, digest)?;
            if let Err(error) = fs::remove_file(&self.abs_path) {
                tracing::warn!(path = %self.abs_path.display(), %error, "could not remove an uploaded staging file");
            }
        } else if self.durable {
            self.sync_local(&file)?;
        }
        self.written()
    }

    /// Make many local blobs durable with one flush of the file system
    /// instead of one per blob: each file's data is written back first (so a
    /// write error is its own file's), then `syncfs` commits the file
    /// system's journal and flushes the disk once. Should `syncfs` fail, each
    /// file is fsynced on its own, which tells which ones failed. Blobs bound
    /// for a bucket, or not meant to be durable, finish one by one.
    /// Results come in the order of `writers`; a failed blob's file is deleted.
    pub fn finish_together(writers: Vec<BlobWriter>) -> Vec<Result<WrittenBlob>> {
        let mut results: Vec<Option<Result<WrittenBlob>>> = Vec::with_capacity(writers.len());
        let mut local: Vec<(usize, BlobWriter, File)> = Vec::new();
        for (index, mut writer) in writers.into_iter().enumerate() {
            if !cfg!(target_os = "linux") || writer.upload.is_some() || !writer.durable {
                results.push(Some(writer.finish()));
                continue;
            }
            match writer.take_file() {
                Ok(file) => {
                    start_write_back(&file);
                    results.push(None);
                    local.push((index, writer, file));
                }
                Err(error) => results.push(Some(Err(error))),
            }
        }
        let mut to_flush = Vec::with_capacity(local.len());
        for (index, writer, file) in local {
            match wait_for_write_back(&file) {
                Ok(()) => to_flush.push((index, writer, file)),
                Err(error) => results[index] = Some(Err(StorageError::io(&writer.abs_path, error))),
            }
        }
        let flushed = match to_flush.first() {
            Some((_, _, file)) => flush_file_system(file),
            None => Ok(()),
        };
        if let Err(error) = &flushed {
            tracing::warn!(%error, files = to_flush.len(), "syncfs failed; making each file durable on its own");
        }
        for (index, mut writer, file) in to_flush {
            let synced = match flushed {
                Ok(()) => Ok(()),
                Err(_) => writer.sync_local(&file),
            };
            results[index] = Some(synced.and_then(|()| writer.written()));
        }
        results
            .into_iter()
            .map(|result| result.unwrap_or_else(|| Err(StorageError::InvalidPath("blob left unfinished".into()))))
            .collect()
    }

    fn take_file(&mut self) -> Result<File> {
        let buffered =
            self.file.take().ok_or_else(|| StorageError::io(&self.abs_path, io::ErrorKind::BrokenPipe.into()))?;
        buffered.into_inner().map_err(|e| StorageError::io(&self.abs_path, e.into_error()))
    }

    /// fsync the data, then the directory entry unless it was durable already.
    fn sync_local(&self, file: &File) -> Result<()> {
        file.sync_data().map_err(|e| StorageError::io(&self.abs_path, e))?;
        if !self.entry_durable {
            if let Some(dir) = self.abs_path.parent() {
                fsync_dir(dir)?;
            }
        }
        Ok(())
    }

    /// The finished blob; the writer no longer deletes its file when dropped.
    fn written(&mut self) -> Result<WrittenBlob> {
        let digest = self.digest();
        let guard = self.guard.take().ok_or_else(|| StorageError::InvalidPath(self.rel_path.clone()))?;
        Ok(WrittenBlob { rel_path: std::mem::take(&mut self.rel_path), size: self.size, digest, guard })
    }
}

/// Start writing a file's dirty pages to disk, without waiting.
fn start_write_back(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor belongs to `file`, open for the whole call.
        let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
        if rc != 0 {
            // Only a head start: `wait_for_write_back` writes whatever is left.
            tracing::debug!(error = %io::Error::last_os_error(), "sync_file_range failed");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// Write back a file's dirty pages and wait for them, reporting this
/// file's write errors; the disk's cache is not flushed.
fn wait_for_write_back(file: &File) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
        // SAFETY: the descriptor belongs to `file`, open for the whole call.
        if unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, flags) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    file.sync_data()
}

/// Commit the journal of the file system holding `file` and flush the disk's cache.
fn flush_file_system(file: &File) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor belongs to `file`, open for the whole call.
        if unsafe { libc::syncfs(file.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    file.sync_all()
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
