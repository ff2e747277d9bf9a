//! Durable storage of instance files, on local disk or in an S3-compatible
//! bucket (see `object`).
//!
//! Each instance is one file, written once and never modified, under an
//! hourly shard directory: `blobs/YYYY/MM/DD/HH/<time-ordered name>.dcm`
//! (UTC). A node that shares its catalog or bucket with others has a name,
//! and its shards are `<node>/YYYY/MM/DD/HH`. A file is created in its final place and streamed to;
//! [`BlobWriter::finish`] makes it durable (file data and the directory
//! entry are fsynced) and returns its size and BLAKE3 digest. Files are
//! normally created ahead of use in batches (see `pool`), so the directory
//! entry is already durable when a store begins.
//!
//! A blob only becomes part of the archive once the catalog references it.
//! Until then it is *in flight*: the store remembers the shard of every
//! in-flight blob so the archive can record the oldest shard that may hold an
//! unreferenced file after a crash ([`BlobStore::oldest_unsettled_shard`]).
//! Start-up recovery lists only the shards from there on.

mod bucket;
mod cache;
mod object;
mod pool;
#[doc(hidden)]
pub mod testing;
mod versions;
mod writer;

pub use bucket::Bucket;
pub use cache::CacheStats;
pub use object::{S3Options, PART_SIZE};
pub use versions::ObjectVersion;
pub use writer::{BlobWriter, InflightGuard, WrittenBlob};

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use object::ObjectBackend;
use pool::Pool;
use writer::InflightMap;

/// Where instance files are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum BlobBackend {
    /// Files under the data directory (the zero-configuration default).
    #[default]
    Local,
    /// Objects in an S3-compatible bucket, which several nodes may share.
    S3(S3Options),
}

/// How a node keeps its instance files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobConfig {
    pub backend: BlobBackend,
    /// This node's name where several nodes share a catalog or a bucket: its
    /// new blobs go under `<node>/`, and its start-up recovery looks only
    /// there, so that it never takes another node's blob in flight for a
    /// leftover. A letter first, then letters, digits, `.`, `_` or `-`.
    pub node: Option<String>,
    /// With a bucket: most bytes of downloaded objects kept on local disk
    /// for reading again (see [`BlobStore::enable_read_cache`]); 0: none.
    pub read_cache_bytes: u64,
}

/// Whether `name` can name a node (and so a key or directory prefix).
pub fn valid_node_name(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A BLAKE3 content digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Digest> {
        <[u8; 32]>::try_from(bytes).ok().map(Digest)
    }
}

/// Size and BLAKE3 digest of a file, as the catalog records a blob's (blocking).
pub fn digest_file(path: &Path) -> io::Result<(u64, Digest)> {
    let mut file = File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    Ok((size, Digest(*hasher.finalize().as_bytes())))
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "blake3:{}", self.to_hex())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("i/o error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("invalid blob path {0:?}")]
    InvalidPath(String),
    #[error("object {key}: {source}")]
    Object { key: String, source: Box<object_store::Error> },
    #[error("{0}")]
    ObjectSetup(String),
    #[error("cannot list the versions under {what}: {detail}")]
    Versions { what: String, status: Option<u16>, detail: String },
    #[error("blob {0} is in an object store, not on local disk")]
    NotLocal(String),
    #[error("invalid node name {0:?}: a letter first, then letters, digits, '.', '_' or '-' (64 at most)")]
    InvalidNode(String),
}

impl StorageError {
    /// Whether the blob does not exist (a missing file or object).
    pub fn is_not_found(&self) -> bool {
        match self {
            StorageError::Io { source, .. } => source.kind() == io::ErrorKind::NotFound,
            StorageError::Object { source, .. } => matches!(**source, object_store::Error::NotFound { .. }),
            _ => false,
        }
    }
}

impl StorageError {
    pub(crate) fn io(path: &Path, source: io::Error) -> StorageError {
        StorageError::Io { path: path.to_path_buf(), source }
    }
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// A node's blob store: a directory, or a bucket with a local staging directory.
#[derive(Clone)]
pub struct BlobStore {
    shared: Arc<Shared>,
}

struct Shared {
    /// The blob tree on local disk, or the staging directory of a bucket.
    root: PathBuf,
    /// The bucket, when blobs are kept in one.
    remote: Option<ObjectBackend>,
    /// Prefix of this node's shards (see [`BlobConfig::node`]).
    node: Option<String>,
    /// fsync files and directories; off only for tests of non-durability paths.
    durable: bool,
    next_id: AtomicU64,
    inflight: InflightMap,
    existing_shards: Mutex<HashSet<String>>,
    /// Files created ahead of use (durable stores only).
    pool: Option<Arc<Pool>>,
    /// The thread filling the pool, joined at shutdown.
    pool_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Copies of objects read from the bucket (bucket stores only).
    read_cache: std::sync::OnceLock<cache::ReadCache>,
}

impl BlobStore {
    /// Open (creating if needed) a blob store under `root`. A durable store
    /// fsyncs what it writes; see [`BlobStore::start_pool`].
    pub fn open(root: impl Into<PathBuf>, durable: bool) -> Result<BlobStore> {
        Self::open_with(root.into(), None, None, durable)
    }

    /// Open the blob store `config` describes: under `local_root` on local
    /// disk, or in a bucket, staging files in `staging`.
    pub fn open_configured(
        local_root: PathBuf,
        staging: PathBuf,
        config: &BlobConfig,
        durable: bool,
    ) -> Result<BlobStore> {
        if let Some(node) = config.node.as_deref().filter(|node| !valid_node_name(node)) {
            return Err(StorageError::InvalidNode(node.to_string()));
        }
        match &config.backend {
            BlobBackend::Local => Self::open_with(local_root, None, config.node.clone(), durable),
            BlobBackend::S3(options) => {
                let remote = ObjectBackend::connect(options)?;
                // The bucket's acknowledgement makes a blob durable, not a local fsync.
                Self::open_with(staging, Some(remote), config.node.clone(), false)
            }
        }
    }

    fn open_with(
        root: PathBuf,
        remote: Option<ObjectBackend>,
        node: Option<String>,
        durable: bool,
    ) -> Result<BlobStore> {
        fs::create_dir_all(&root).map_err(|e| StorageError::io(&root, e))?;
        let pool = durable.then(|| Arc::new(Pool::default()));
        let store = BlobStore {
            shared: Arc::new(Shared {
                root,
                remote,
                node,
                durable,
                next_id: AtomicU64::new(0),
                inflight: InflightMap::default(),
                existing_shards: Mutex::new(HashSet::new()),
                pool: pool.clone(),
                pool_thread: Mutex::new(None),
                read_cache: std::sync::OnceLock::new(),
            }),
        };
        Ok(store)
    }

    /// Keep up to `max_bytes` of the objects this node reads from its bucket
    /// in `dir` (emptied now), so that reading them again needs no download.
    /// Nothing to do for a store on local disk, or when already enabled.
    pub fn enable_read_cache(&self, dir: PathBuf, max_bytes: u64) -> Result<()> {
        if self.shared.remote.is_none() || max_bytes == 0 || self.shared.read_cache.get().is_some() {
            return Ok(());
        }
        let _ = self.shared.read_cache.set(cache::ReadCache::open(dir, max_bytes)?);
        Ok(())
    }

    /// Reads served by the read cache and by the bucket (zero without a cache).
    pub fn read_cache_stats(&self) -> CacheStats {
        self.shared.read_cache.get().map(cache::ReadCache::stats).unwrap_or_default()
    }

    /// Start creating files ahead of use (durable stores only). Call it after
    /// start-up recovery, which would otherwise see them as leftovers.
    pub fn start_pool(&self) -> Result<()> {
        let Some(pool) = self.shared.pool.clone() else {
            return Ok(());
        };
        let filler = self.clone();
        let thread = std::thread::Builder::new()
            .name("haneul-blob-pool".into())
            .spawn(move || pool::run(filler, pool))
            .map_err(|e| StorageError::io(&self.shared.root, e))?;
        *lock(&self.shared.pool_thread) = Some(thread);
        Ok(())
    }

    /// Stop creating files ahead of use and delete the unused ones.
    pub fn shutdown(&self) {
        let Some(pool) = &self.shared.pool else {
            return;
        };
        pool.stop();
        // Wait for a batch being created to be discarded before emptying the pool.
        if let Some(thread) = lock(&self.shared.pool_thread).take() {
            let _ = thread.join();
        }
        pool.drain();
    }

    /// Delete the staging files a crash left (bucket stores only): none was
    /// acknowledged. Only for the node that owns the staging directory, at start.
    pub fn discard_staged(&self) -> Result<usize> {
        if self.shared.remote.is_none() {
            return Ok(0);
        }
        let names = list_dir_names(&self.shared.root)?;
        for name in &names {
            let path = self.shared.root.join(name);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io(&path, e)),
            }
        }
        Ok(names.len())
    }

    /// The blob tree on local disk, or the staging directory of a bucket.
    pub fn root(&self) -> &Path {
        &self.shared.root
    }

    /// This node's name, when it has one (see [`BlobConfig::node`]).
    pub fn node(&self) -> Option<&str> {
        self.shared.node.as_deref()
    }

    /// Whether blobs are in a bucket that every node reads.
    pub fn is_shared(&self) -> bool {
        self.shared.remote.is_some()
    }

    /// Whether a blob becomes durable by this node's own fsync (local disk,
    /// durable store), rather than by a bucket's acknowledgement.
    pub fn fsyncs_locally(&self) -> bool {
        self.shared.durable && self.shared.remote.is_none()
    }

    /// Where blobs are kept, for messages.
    pub fn describe(&self) -> String {
        match &self.shared.remote {
            Some(remote) => remote.location().to_string(),
            None => self.shared.root.display().to_string(),
        }
    }

    /// Whether this node wrote the blob at `rel_path`: under its prefix, or
    /// with no node prefix at all on local disk (written before it had a name).
    pub fn owns(&self, rel_path: &str) -> bool {
        match &self.shared.node {
            None => true,
            Some(node) => {
                rel_path.strip_prefix(node.as_str()).is_some_and(|rest| rest.starts_with('/'))
                    || (self.shared.remote.is_none() && rel_path.starts_with(|c: char| c.is_ascii_digit()))
            }
        }
    }

    /// The shard that new blobs go to now: the hour, under the node's prefix.
    pub fn current_shard(&self) -> String {
        match &self.shared.node {
            Some(node) => format!("{node}/{}", current_hour()),
            None => current_hour(),
        }
    }

    /// Start a new blob in the current shard.
    pub fn create(&self) -> Result<BlobWriter> {
        let shard = self.current_shard();
        let durable = self.shared.durable;
        if let Some(ready) = self.shared.pool.as_ref().and_then(|pool| pool.take(&shard)) {
            return Ok(BlobWriter::new(ready.file, ready.rel_path, ready.abs_path, ready.guard, durable, true));
        }
        if self.shared.remote.is_none() {
            self.ensure_shard_dir(&shard)?;
        }
        let (rel_path, abs_path) = self.new_blob_path(&shard);
        let guard = self.track_inflight(shard);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&abs_path)
            .map_err(|e| StorageError::io(&abs_path, e))?;
        let mut writer = BlobWriter::new(file, rel_path, abs_path, guard, durable, false);
        if self.shared.remote.is_some() {
            writer.upload_to(self.clone());
        }
        Ok(writer)
    }

    /// A fresh, time-ordered blob path in `shard` and where it is written;
    /// time order keeps catalog index inserts at the end of the index.
    pub(crate) fn new_blob_path(&self, shard: &str) -> (String, PathBuf) {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let sequence = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let rel_path = format!("{shard}/{nanos:020x}{:06x}{:04x}.dcm", sequence & 0xFF_FFFF, process_salt());
        let abs_path = match self.shared.remote {
            Some(_) => object::staging_path(&self.shared.root, &rel_path),
            None => self.shared.root.join(&rel_path),
        };
        (rel_path, abs_path)
    }

    pub(crate) fn track_inflight(&self, shard: String) -> InflightGuard {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.shared.inflight).insert(id, shard);
        InflightGuard { inflight: Arc::clone(&self.shared.inflight), id }
    }

    /// Whether any blob is in flight (written or being written, not yet settled).
    pub fn has_inflight(&self) -> bool {
        !lock(&self.shared.inflight).is_empty()
    }

    /// The oldest shard that may contain a blob the catalog does not yet
    /// reference: the shard of the oldest in-flight blob, else the current one.
    pub fn oldest_unsettled_shard(&self) -> String {
        let inflight = lock(&self.shared.inflight);
        inflight.values().min().cloned().unwrap_or_else(|| self.current_shard())
    }

    /// Create the directories of a shard, fsyncing each parent whose entries changed.
    pub(crate) fn ensure_shard_dir(&self, shard: &str) -> Result<()> {
        if lock(&self.shared.existing_shards).contains(shard) {
            return Ok(());
        }
        let mut dir = self.shared.root.clone();
        for part in shard.split('/') {
            let parent = dir.clone();
            dir.push(part);
            match fs::create_dir(&dir) {
                Ok(()) => {
                    if self.shared.durable {
                        fsync_dir(&parent)?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(StorageError::io(&dir, e)),
            }
        }
        lock(&self.shared.existing_shards).insert(shard.to_string());
        Ok(())
    }

    /// Absolute path of a blob on local disk, refusing anything that is not
    /// a plain relative path, and blobs kept in a bucket.
    pub fn path_of(&self, rel_path: &str) -> Result<PathBuf> {
        let relative = Path::new(rel_path);
        let plain = relative.components().all(|c| matches!(c, Component::Normal(_)));
        if rel_path.is_empty() || !plain {
            return Err(StorageError::InvalidPath(rel_path.to_string()));
        }
        if self.shared.remote.is_some() {
            return Err(StorageError::NotLocal(rel_path.to_string()));
        }
        Ok(self.shared.root.join(relative))
    }

    /// Open a stored blob for reading; one kept in a bucket is downloaded
    /// first into an unnamed temporary file.
    pub fn open_blob(&self, rel_path: &str) -> Result<File> {
        if let Some(remote) = &self.shared.remote {
            // A blob this node is still uploading (committed while its upload
            // runs, or handed to a synchronous replica at once) is read from
            // its staging file, complete by then; the bucket may not have it yet.
            if let Ok(staged) = File::open(object::staging_path(&self.shared.root, rel_path)) {
                return Ok(staged);
            }
            if let Some(cache) = self.shared.read_cache.get() {
                if let Some(copy) = cache.get(rel_path) {
                    return Ok(copy);
                }
                return cache.fill(rel_path, |file| remote.download(rel_path, file, cache.dir()));
            }
            let scratch = &self.shared.root;
            let file = tempfile::tempfile_in(scratch).map_err(|e| StorageError::io(scratch, e))?;
            return remote.download(rel_path, file, scratch);
        }
        let path = self.path_of(rel_path)?;
        File::open(&path).map_err(|e| StorageError::io(&path, e))
    }

    /// Remove a blob; a missing one is not an error.
    pub fn delete(&self, rel_path: &str) -> Result<()> {
        if let Some(remote) = &self.shared.remote {
            if let Some(cache) = self.shared.read_cache.get() {
                cache.remove(rel_path);
            }
            return remote.delete(rel_path);
        }
        let path = self.path_of(rel_path)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io(&path, e)),
        }
    }

    /// Make a stored blob durable: fsync it and its directory on local disk;
    /// nothing to do in a bucket, whose acknowledgement already did.
    pub fn sync_blob(&self, rel_path: &str) -> Result<()> {
        if self.shared.remote.is_some() {
            return Ok(());
        }
        let path = self.path_of(rel_path)?;
        File::open(&path).and_then(|file| file.sync_all()).map_err(|e| StorageError::io(&path, e))?;
        match path.parent() {
            Some(dir) => fsync_dir(dir),
            None => Ok(()),
        }
    }

    /// Put a complete file, whose size and digest the caller checked, into
    /// the bucket under `rel_path` (a restore: the path comes from the
    /// catalog being restored). A key already there with other bytes is an
    /// error; the same bytes again are accepted.
    pub fn put_file(&self, rel_path: &str, file: &Path, size: u64, digest: Digest) -> Result<()> {
        let Some(remote) = &self.shared.remote else {
            return Err(StorageError::NotLocal(rel_path.to_string()));
        };
        remote.upload(file, rel_path, size, digest)
    }

    /// Write a blob on local disk again from its whole bytes (a copy kept
    /// elsewhere), durably: into a new file that replaces the old one, then
    /// fsynced with its directory.
    pub fn restore(&self, rel_path: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path_of(rel_path)?;
        let dir = path.parent().ok_or_else(|| StorageError::InvalidPath(rel_path.to_string()))?;
        fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        let mut file = tempfile::NamedTempFile::new_in(dir).map_err(|e| StorageError::io(dir, e))?;
        file.write_all(bytes).and_then(|()| file.as_file().sync_data()).map_err(|e| StorageError::io(&path, e))?;
        file.persist(&path).map_err(|e| StorageError::io(&path, e.error))?;
        fsync_dir(dir)
    }

    /// Re-read a blob and compute its size and digest.
    pub fn digest_of(&self, rel_path: &str) -> Result<(u64, Digest)> {
        if let Some(remote) = &self.shared.remote {
            return remote.digest(rel_path);
        }
        let path = self.path_of(rel_path)?;
        digest_file(&path).map_err(|e| StorageError::io(&path, e))
    }

    /// This node's shards (`[node/]YYYY/MM/DD/HH`) whose hour sorts at or
    /// after the hour of `from` (a shard, or a bare hour prefix such as "0000").
    pub fn shards_since(&self, from: &str) -> Result<Vec<String>> {
        let base = self.shared.node.clone().unwrap_or_default();
        let from_hour = match &self.shared.node {
            Some(node) => from.strip_prefix(node.as_str()).and_then(|rest| rest.strip_prefix('/')).unwrap_or(from),
            None => from,
        };
        let prefix = |depth: usize| from_hour.split('/').take(depth).collect::<Vec<_>>().join("/");
        let mut level: Vec<String> = vec![String::new()];
        for depth in 1..=4 {
            let mut next = Vec::new();
            for parent in &level {
                let dir = join_rel(&base, parent);
                for name in self.list_children(&dir)? {
                    if !name.bytes().all(|b| b.is_ascii_digit()) {
                        continue;
                    }
                    let candidate = if parent.is_empty() { name } else { format!("{parent}/{name}") };
                    // Prune whole subtrees that end before `from`.
                    if candidate.as_str() >= prefix(depth).as_str() {
                        next.push(candidate);
                    }
                }
            }
            next.sort();
            level = next;
        }
        Ok(level.iter().map(|hour| join_rel(&base, hour)).collect())
    }

    /// Relative paths of every blob in a shard.
    pub fn files_in_shard(&self, shard: &str) -> Result<Vec<String>> {
        if let Some(remote) = &self.shared.remote {
            return remote.list_files(shard);
        }
        let dir = self.path_of(shard)?;
        Ok(list_dir_names(&dir)?.into_iter().map(|name| format!("{shard}/{name}")).collect())
    }

    /// Names right under a blob directory (`""`: the top).
    fn list_children(&self, rel_dir: &str) -> Result<Vec<String>> {
        if let Some(remote) = &self.shared.remote {
            return remote.list_children(rel_dir);
        }
        let dir = if rel_dir.is_empty() { self.shared.root.clone() } else { self.path_of(rel_dir)? };
        list_dir_names(&dir)
    }

    /// Upload a finished staging file (bucket stores only).
    pub(crate) fn upload(&self, staged: &Path, rel_path: &str, size: u64, digest: Digest) -> Result<()> {
        match &self.shared.remote {
            Some(remote) => remote.upload(staged, rel_path, size, digest),
            None => Err(StorageError::InvalidPath(rel_path.to_string())),
        }
    }
}

/// The hour shard of now (UTC).
fn current_hour() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!("{:04}/{:02}/{:02}/{:02}", now.year(), u8::from(now.month()), now.day(), now.hour())
}

fn join_rel(parent: &str, name: &str) -> String {
    match (parent.is_empty(), name.is_empty()) {
        (true, _) => name.to_string(),
        (false, true) => parent.to_string(),
        (false, false) => format!("{parent}/{name}"),
    }
}

/// Per-process randomness so names stay unique across processes sharing a
/// store, drawn once rather than per name.
fn process_salt() -> u16 {
    static SALT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    *SALT.get_or_init(|| (uuid::Uuid::new_v4().as_u128() & 0xFFFF) as u16)
}

fn list_dir_names(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StorageError::io(dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io(dir, e))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| StorageError::io(dir, e))
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the maps inconsistent.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_blob_has_digest_and_is_listed_in_its_shard() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlobStore::open(dir.path().join("blobs"), true).expect("open");
        let mut writer = store.create().expect("create");
        writer.write_all(b"hello ").expect("write");
        writer.write_all(b"world").expect("write");
        let blob = writer.finish().expect("finish");
        assert_eq!(blob.size, 11);
        assert_eq!(blob.digest.0, *blake3::hash(b"hello world").as_bytes());
        let (size, digest) = store.digest_of(&blob.rel_path).expect("re-read");
        assert_eq!((size, digest), (11, blob.digest));
        let shard = store.current_shard();
        assert!(store.files_in_shard(&shard).expect("list").contains(&blob.rel_path));
        assert_eq!(store.shards_since(&shard).expect("shards"), vec![shard.clone()]);
        assert!(store.shards_since("9999/01/01/00").expect("shards").is_empty());
        assert_eq!(store.shards_since("0000/00/00/00").expect("shards"), vec![shard]);
    }

    #[test]
    fn the_content_digest_covers_the_bytes_from_its_offset_across_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlobStore::open(dir.path(), false).expect("open");
        let mut writer = store.create().expect("create");
        assert!(writer.content_digest().is_none());
        writer.write_all(b"me").expect("write");
        assert!(!writer.hash_content_from(1), "too late: a byte past the offset was written");
        assert!(writer.hash_content_from(4));
        writer.write_all(b"ta").expect("write");
        writer.write_all(b"data").expect("write");
        writer.write_all(b" set").expect("write");
        assert_eq!(writer.content_digest().expect("a content digest").0, *blake3::hash(b"data set").as_bytes());
        assert_eq!(writer.digest().0, *blake3::hash(b"metadata set").as_bytes());
    }

    #[test]
    fn abandoned_writer_removes_its_file_and_leaves_flight() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlobStore::open(dir.path(), false).expect("open");
        let writer = store.create().expect("create");
        let path = writer.abs_path().to_path_buf();
        assert!(path.exists());
        drop(writer);
        assert!(!path.exists());
        assert_eq!(store.oldest_unsettled_shard(), store.current_shard());
    }

    #[test]
    fn inflight_blobs_hold_back_the_recovery_watermark() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlobStore::open(dir.path(), false).expect("open");
        let guard = store.track_inflight("2001/01/01/00".into());
        assert_eq!(store.oldest_unsettled_shard(), "2001/01/01/00");
        drop(guard);
        assert_ne!(store.oldest_unsettled_shard(), "2001/01/01/00");
    }

    #[test]
    fn durable_store_hands_out_precreated_files_and_cleans_up_unused_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlobStore::open(dir.path(), true).expect("open");
        store.start_pool().expect("pool");
        let shard = store.current_shard();
        // The pool fills in the background; the first creates may not find it ready.
        let mut precreated = None;
        for _ in 0..200 {
            let writer = store.create().expect("create");
            if writer.entry_durable() {
                precreated = Some(writer);
                break;
            }
            drop(writer);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let mut writer = precreated.expect("a pre-created file within two seconds");
        writer.write_all(b"data").expect("write");
        let blob = writer.finish().expect("finish");
        let before = store.files_in_shard(&shard).expect("list");
        assert!(before.len() > 1, "unused pre-created files wait in the shard");
        assert_eq!(store.oldest_unsettled_shard(), shard, "unused files count as unsettled");
        store.shutdown();
        let after = store.files_in_shard(&shard).expect("list");
        assert_eq!(after, vec![blob.rel_path.clone()], "shutdown removes unused files only");
    }

    #[test]
    fn blobs_finished_together_are_each_complete_and_released() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlobStore::open(dir.path(), true).expect("open");
        let contents: Vec<Vec<u8>> = (0..5u8).map(|n| vec![n; 1000 + usize::from(n) * 4096]).collect();
        let mut writers = Vec::new();
        for content in &contents {
            let mut writer = store.create().expect("create");
            writer.write_all(content).expect("write");
            writers.push(writer);
        }
        let paths: Vec<String> = writers.iter().map(|writer| writer.rel_path().to_string()).collect();
        assert!(store.has_inflight());
        let results = BlobWriter::finish_together(writers);
        assert_eq!(results.len(), contents.len());
        for ((result, content), path) in results.into_iter().zip(&contents).zip(&paths) {
            let blob = result.expect("finished");
            assert_eq!(&blob.rel_path, path, "results come in the order of the writers");
            assert_eq!(blob.size, content.len() as u64);
            assert_eq!(blob.digest.0, *blake3::hash(content).as_bytes());
            assert_eq!(store.digest_of(path).expect("re-read"), (blob.size, blob.digest));
        }
        assert!(!store.has_inflight(), "the guards went with the results");
        assert!(BlobWriter::finish_together(Vec::new()).is_empty());
    }

    #[test]
    fn paths_outside_the_store_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlobStore::open(dir.path(), false).expect("open");
        assert!(store.path_of("../etc/passwd").is_err());
        assert!(store.path_of("/etc/passwd").is_err());
        assert!(store.path_of("2024/01/01/00/x.dcm").is_ok());
    }
}
