//! Blob files created ahead of use.
//!
//! A new file's directory entry must be durable before its instance is
//! acknowledged. Creating files in batches in the background, with one
//! directory fsync per batch, takes that fsync off every store's critical
//! path: a store takes a ready file and only has to fsync its data.
//! Unused files are deleted at shutdown; after a crash they are unreferenced
//! files in a recent shard, which start-up recovery removes.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::writer::InflightGuard;
use crate::{fsync_dir, BlobStore};

/// Refill below this many ready files.
const LOW_WATER: usize = 48;
/// Refill up to this many.
const HIGH_WATER: usize = 64;

pub(crate) struct ReadyFile {
    pub file: File,
    pub rel_path: String,
    pub abs_path: PathBuf,
    pub shard: String,
    pub guard: InflightGuard,
}

#[derive(Default)]
pub(crate) struct Pool {
    ready: Mutex<VecDeque<ReadyFile>>,
    wanted: Condvar,
    stopped: AtomicBool,
}

fn lock(pool: &Pool) -> std::sync::MutexGuard<'_, VecDeque<ReadyFile>> {
    pool.ready.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Pool {
    /// A ready file in `shard`, if one is waiting.
    pub fn take(&self, shard: &str) -> Option<ReadyFile> {
        let mut ready = lock(self);
        let taken = match ready.front() {
            Some(front) if front.shard == shard => ready.pop_front(),
            _ => None,
        };
        if ready.len() < LOW_WATER {
            self.wanted.notify_one();
        }
        taken
    }

    /// Stop refilling; the filler thread exits after its current batch.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.wanted.notify_all();
    }

    /// Stop refilling and delete every ready file.
    pub fn drain(&self) {
        self.stop();
        let mut ready = lock(self);
        for file in ready.drain(..) {
            discard(file);
        }
    }
}

fn discard(file: ReadyFile) {
    drop(file.file);
    if let Err(error) = std::fs::remove_file(&file.abs_path) {
        if error.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %file.abs_path.display(), %error, "could not remove an unused pre-created blob file");
        }
    }
}

/// Keep the pool filled until it is drained.
pub(crate) fn run(store: BlobStore, pool: Arc<Pool>) {
    loop {
        if pool.stopped.load(Ordering::SeqCst) {
            return;
        }
        let shard = store.current_shard();
        let missing = {
            let mut ready = lock(&pool);
            // Files of an hour gone by would hold back the recovery watermark; replace them.
            while ready.front().is_some_and(|file| file.shard != shard) {
                if let Some(stale) = ready.pop_front() {
                    discard(stale);
                }
            }
            if ready.len() >= LOW_WATER {
                let (guard, _) = pool
                    .wanted
                    .wait_timeout(ready, Duration::from_millis(500))
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                drop(guard);
                continue;
            }
            HIGH_WATER - ready.len()
        };
        match create_batch(&store, &shard, missing) {
            Ok(files) => {
                let mut ready = lock(&pool);
                if pool.stopped.load(Ordering::SeqCst) {
                    files.into_iter().for_each(discard);
                    return;
                }
                ready.extend(files);
            }
            Err(error) => {
                tracing::warn!(%error, "could not pre-create blob files; stores create their own meanwhile");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

fn create_batch(store: &BlobStore, shard: &str, count: usize) -> crate::Result<Vec<ReadyFile>> {
    store.ensure_shard_dir(shard)?;
    let mut files = Vec::with_capacity(count);
    for _ in 0..count {
        let (rel_path, abs_path) = store.new_blob_path(shard);
        let guard = store.track_inflight(shard.to_string());
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&abs_path)
            .map_err(|e| crate::StorageError::io(&abs_path, e))?;
        files.push(ReadyFile { file, rel_path, abs_path, shard: shard.to_string(), guard });
    }
    let directory = store.root().join(shard);
    if let Err(error) = fsync_dir(&directory) {
        files.into_iter().for_each(discard);
        return Err(error);
    }
    Ok(files)
}
