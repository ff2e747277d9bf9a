//! A bounded cache on local disk of objects read from the bucket.
//!
//! A viewer reads the same instances again and again (every frame of a
//! series, the series again when it is reopened), and each read of a
//! bucket object is a download. Objects are never overwritten, so a copy
//! downloaded once stays right for as long as the object exists: the cache
//! needs no invalidation, only eviction (least recently used, by total
//! size) and forgetting deleted objects. It is emptied at start, so a copy
//! never outlives the process that made and accounted for it.

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::{lock, Result, StorageError};

pub(crate) struct ReadCache {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Default)]
struct State {
    /// rel_path -> (size, last use).
    entries: HashMap<String, (u64, u64)>,
    total: u64,
    clock: u64,
}

/// How often reads were served from the cache and from the bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Bytes the cached copies take now.
    pub bytes: u64,
}

impl ReadCache {
    /// A cache in `dir` (emptied now) holding at most `max_bytes`.
    pub(crate) fn open(dir: PathBuf, max_bytes: u64) -> Result<ReadCache> {
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(StorageError::io(&dir, error)),
        }
        fs::create_dir_all(&dir).map_err(|e| StorageError::io(&dir, e))?;
        Ok(ReadCache {
            dir,
            max_bytes,
            state: Mutex::new(State::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// Where the copy of `rel_path` lives: one flat directory, named by a
    /// digest of the path (object keys may be deeper than is handy here).
    fn path_of(&self, rel_path: &str) -> PathBuf {
        self.dir.join(blake3::hash(rel_path.as_bytes()).to_hex().as_str())
    }

    /// The cached copy of `rel_path`, opened, if there is one.
    pub(crate) fn get(&self, rel_path: &str) -> Option<File> {
        let mut state = lock(&self.state);
        let tick = state.tick();
        let (_, last_used) = state.entries.get_mut(rel_path)?;
        *last_used = tick;
        drop(state);
        match File::open(self.path_of(rel_path)) {
            Ok(file) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(file)
            }
            // Evicted meanwhile: read it from the bucket again.
            Err(_) => None,
        }
    }

    /// Download `rel_path` with `fill` into the cache and open the copy.
    /// Objects larger than the whole cache are not kept.
    pub(crate) fn fill(&self, rel_path: &str, fill: impl FnOnce(File) -> Result<File>) -> Result<File> {
        self.misses.fetch_add(1, Ordering::Relaxed);
        // Made again should someone have removed it under the running server.
        fs::create_dir_all(&self.dir).map_err(|e| StorageError::io(&self.dir, e))?;
        let scratch = tempfile::NamedTempFile::new_in(&self.dir).map_err(|e| StorageError::io(&self.dir, e))?;
        let (scratch_file, scratch_path) = scratch.into_parts();
        let file = fill(scratch_file)?;
        let size = file.metadata().map_err(|e| StorageError::io(&self.dir, e))?.len();
        if size > self.max_bytes {
            // Read from the unnamed copy; it goes when closed.
            drop(scratch_path);
            return Ok(file);
        }
        let path = self.path_of(rel_path);
        scratch_path.persist(&path).map_err(|e| StorageError::io(&path, e.error))?;
        let evicted = {
            let mut state = lock(&self.state);
            let tick = state.tick();
            if let Some((old_size, _)) = state.entries.insert(rel_path.to_string(), (size, tick)) {
                state.total -= old_size;
            }
            state.total += size;
            state.evict_beyond(self.max_bytes)
        };
        for gone in evicted {
            let _ = fs::remove_file(self.path_of(&gone));
        }
        Ok(file)
    }

    /// Forget a deleted object's copy.
    pub(crate) fn remove(&self, rel_path: &str) {
        let mut state = lock(&self.state);
        if let Some((size, _)) = state.entries.remove(rel_path) {
            state.total -= size;
        }
        drop(state);
        let _ = fs::remove_file(self.path_of(rel_path));
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bytes: lock(&self.state).total,
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

impl State {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Drop least recently used entries until the total fits; their paths.
    fn evict_beyond(&mut self, max_bytes: u64) -> Vec<String> {
        let mut evicted = Vec::new();
        while self.total > max_bytes {
            let Some(oldest) = self.entries.iter().min_by_key(|(_, (_, used))| *used).map(|(path, _)| path.clone())
            else {
                break;
            };
            if let Some((size, _)) = self.entries.remove(&oldest) {
                self.total -= size;
            }
            evicted.push(oldest);
        }
        evicted
    }
}
