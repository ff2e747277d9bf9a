//! Where backups go: a [`Target`] stores named objects that, once published,
//! Haneul never alters. [`DirTarget`] is a write-once directory;
//! [`BucketTarget`] an S3 bucket, written with conditional PUTs, whose
//! Object Lock (default retention in compliance mode, set by whoever owns
//! the bucket) keeps anyone, Haneul included, from deleting or replacing
//! what was written.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use haneul_storage::{Bucket, S3Options, PART_SIZE};

/// A store of write-once objects named by `/`-separated keys.
pub trait Target: Send + Sync {
    /// Where the target is, for messages.
    fn describe(&self) -> String;

    /// Where an object is, for messages (a file path, a URL).
    fn locate(&self, key: &str) -> String;

    /// The size of an object, or `None` when there is none with this key.
    fn object_size(&self, key: &str) -> io::Result<Option<u64>>;

    /// Read a published object (as the target serves it now).
    fn open(&self, key: &str) -> io::Result<Box<dyn Read + Send>>;

    /// The versions the target keeps of an object, oldest first, for
    /// reading what Haneul published after someone replaced or hid it: a
    /// versioned bucket keeps them all (Object Lock keeps them from
    /// deletion), and since Haneul writes a key once the oldest is its own.
    /// Empty where the target keeps no versions (a directory) or the key has
    /// none. Failing with [`io::ErrorKind::PermissionDenied`] or
    /// [`io::ErrorKind::Unsupported`] means the versions cannot be seen
    /// (keys without `s3:ListBucketVersions`, a server without versioning).
    fn versions(&self, _key: &str) -> io::Result<Vec<KeptVersion>> {
        Ok(Vec::new())
    }

    /// Read one of [`Target::versions`].
    fn open_version(&self, key: &str, _version: &str) -> io::Result<Box<dyn Read + Send>> {
        Err(io::Error::new(io::ErrorKind::Unsupported, format!("{} keeps no versions", self.locate(key))))
    }

    /// Start a new object. Nothing is visible under `key` until
    /// [`NewObject::publish`]; dropping the writer discards what was written.
    fn create(&self, key: &str) -> io::Result<Box<dyn NewObject>>;

    /// The names directly under a prefix (`snapshots/`), sorted.
    fn list(&self, prefix: &str) -> io::Result<Vec<String>>;

    /// Reserve a snapshot's name; `false` when another run already has it.
    fn claim_snapshot(&self, name: &str) -> io::Result<bool>;

    /// Whether an object found already present is read back and hashed
    /// before a backup counts on it. A bucket answers `false`: reading back
    /// petabytes on every run is not affordable, an object is published
    /// only after its digest matched, and Object Lock keeps it as it was;
    /// its size is still compared, and a drill reads everything.
    fn rereads_present_objects(&self) -> bool {
        true
    }
}

/// A version a target keeps of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptVersion {
    pub id: String,
    /// Its size, where the target's listing says.
    pub size: Option<u64>,
}

/// An object being written.
pub trait NewObject: Write + Send {
    /// Make the object durable and visible under its key. Fails with
    /// [`io::ErrorKind::AlreadyExists`] when the key is taken, which is never
    /// replaced (a bucket accepts the identical content already there: a
    /// retried upload whose first attempt landed).
    fn publish(self: Box<Self>) -> io::Result<()>;
}

/// Whether an error from [`Target::versions`] only says that versions cannot
/// be seen here, so that reading goes on with the current objects.
pub fn versions_unavailable(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::PermissionDenied | io::ErrorKind::Unsupported)
}

/// Refuse a key that is not a plain relative name (`objects/ab/abc`): no
/// empty, `.` or `..` segment, nor a leading `/`, so no key leaves its target.
fn check_key(key: &str) -> io::Result<()> {
    let plain = key.split('/').all(|part| !part.is_empty() && part != "." && part != "..");
    if !plain {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid backup key {key:?}")));
    }
    Ok(())
}

/// A write-once directory.
///
/// Every file is written to a temporary name in its final directory (created
/// with `O_EXCL`), fsynced, made read-only (0444), and then hard-linked to its
/// final name, which fails if that name exists, so nothing is ever replaced;
/// the temporary name is removed and the directory fsynced. No published file
/// is ever opened for writing, truncated or deleted.
pub struct DirTarget {
    root: PathBuf,
}

impl DirTarget {
    /// Use (creating if needed) the directory `root`.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<DirTarget> {
        let root = root.into();
        fs::create_dir_all(&root)?;
        Ok(DirTarget { root })
    }

    /// An existing backup directory (restores, drills, listings).
    pub fn existing(root: impl Into<PathBuf>) -> io::Result<DirTarget> {
        let root = root.into();
        if !root.is_dir() {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no backup directory at {}", root.display())));
        }
        Ok(DirTarget { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of a key, refusing anything but plain relative names.
    pub fn path_of(&self, key: &str) -> io::Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    /// Create the directories of `dir` under the root, fsyncing each parent
    /// that gained an entry.
    fn ensure_dir(&self, dir: &Path) -> io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        if let Some(parent) = dir.parent() {
            self.ensure_dir(parent)?;
        }
        match fs::create_dir(dir) {
            Ok(()) => fsync_parent(dir),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(error) => Err(error),
        }
    }
}

impl Target for DirTarget {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn locate(&self, key: &str) -> String {
        self.root.join(key).display().to_string()
    }

    fn object_size(&self, key: &str) -> io::Result<Option<u64>> {
        match fs::symlink_metadata(self.path_of(key)?) {
            Ok(metadata) if metadata.is_file() => Ok(Some(metadata.len())),
            Ok(_) => Err(io::Error::other(format!("{} is not a plain file", self.locate(key)))),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn open(&self, key: &str) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(File::open(self.path_of(key)?)?))
    }

    fn create(&self, key: &str) -> io::Result<Box<dyn NewObject>> {
        let path = self.path_of(key)?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_else(|| self.root.clone());
        self.ensure_dir(&dir)?;
        let name = path.file_name().and_then(|name| name.to_str()).unwrap_or("object");
        // Unique per process and call; O_EXCL catches any other writer's leftover.
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let temp =
            dir.join(format!(".{name}.{}-{}.partial", std::process::id(), SEQUENCE.fetch_add(1, Ordering::Relaxed)));
        let file = OpenOptions::new().write(true).create_new(true).open(&temp)?;
        Ok(Box::new(DirObject { file: Some(file), temp, path, dir }))
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        let dir = if prefix.trim_end_matches('/').is_empty() {
            self.root.clone()
        } else {
            self.path_of(prefix.trim_end_matches('/'))?
        };
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(error),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry?;
            // Temporary names of unfinished writes start with a dot.
            if let Some(name) = entry.file_name().to_str().filter(|name| !name.starts_with('.')) {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    fn claim_snapshot(&self, name: &str) -> io::Result<bool> {
        let dir = self.path_of(&format!("snapshots/{name}"))?;
        if let Some(parent) = dir.parent() {
            self.ensure_dir(parent)?;
        }
        match fs::create_dir(&dir) {
            Ok(()) => {
                fsync_parent(&dir)?;
                Ok(true)
            }
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(error) => Err(error),
        }
    }
}

struct DirObject {
    /// `None` once published.
    file: Option<File>,
    temp: PathBuf,
    path: PathBuf,
    dir: PathBuf,
}

impl Write for DirObject {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(file) => file.write(buf),
            None => Err(io::Error::other("object already published")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

impl NewObject for DirObject {
    fn publish(mut self: Box<Self>) -> io::Result<()> {
        let Some(file) = self.file.take() else {
            return Err(io::Error::other("object already published"));
        };
        file.sync_all()?;
        file.set_permissions(Permissions::from_mode(0o444))?;
        drop(file);
        // A hard link, unlike rename, never replaces an existing name: a
        // published object cannot be overwritten, not even by a race.
        let linked = fs::hard_link(&self.temp, &self.path);
        let removed = fs::remove_file(&self.temp);
        linked?;
        removed?;
        fsync_dir(&self.dir)
    }
}

impl Drop for DirObject {
    fn drop(&mut self) {
        // Not published (an error, or a copy that failed its digest): the
        // temporary file is ours and never was an object.
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// A bucket (and key prefix) as a backup target.
///
/// An object is written to a temporary file under the staging directory
/// while it is hashed, then uploaded with a conditional PUT (`If-None-Match:
/// *`), which the server refuses when the key exists; larger objects go up
/// as multipart uploads, whose completion the `object_store` client cannot
/// make conditional, so the key is checked just before. A snapshot's name is
/// claimed with a conditional PUT of a marker object. Immutability against
/// everyone else, an attacker with Haneul's credentials included, is the
/// bucket's Object Lock: Haneul never deletes, and cannot check the lock
/// configuration through the S3 API it uses, so the operator sets it (see
/// README, "Backups in an S3 bucket with Object Lock").
pub struct BucketTarget {
    bucket: Arc<Bucket>,
    /// `s3://bucket/prefix`, for messages.
    url: String,
    staging: PathBuf,
}

impl BucketTarget {
    /// Connect to the bucket; temporary files go under `staging`.
    pub fn connect(options: &S3Options, staging: impl Into<PathBuf>) -> io::Result<BucketTarget> {
        let staging = staging.into();
        fs::create_dir_all(&staging)?;
        let bucket = Arc::new(Bucket::connect(options)?);
        let prefix = options.prefix.trim_matches('/');
        let url = match prefix.is_empty() {
            true => format!("s3://{}", options.bucket),
            false => format!("s3://{}/{prefix}", options.bucket),
        };
        Ok(BucketTarget { bucket, url, staging })
    }
}

impl Target for BucketTarget {
    fn describe(&self) -> String {
        format!("{} ({})", self.url, self.bucket.location())
    }

    fn locate(&self, key: &str) -> String {
        format!("{}/{key}", self.url)
    }

    fn object_size(&self, key: &str) -> io::Result<Option<u64>> {
        check_key(key)?;
        self.bucket.size(key)
    }

    fn open(&self, key: &str) -> io::Result<Box<dyn Read + Send>> {
        check_key(key)?;
        self.bucket.open(key)
    }

    fn create(&self, key: &str) -> io::Result<Box<dyn NewObject>> {
        check_key(key)?;
        let file = tempfile::Builder::new().prefix(".backup-object-").tempfile_in(&self.staging)?;
        Ok(Box::new(BucketObject {
            bucket: Arc::clone(&self.bucket),
            key: key.to_string(),
            file,
            hasher: blake3::Hasher::new(),
            size: 0,
        }))
    }

    fn versions(&self, key: &str) -> io::Result<Vec<KeptVersion>> {
        check_key(key)?;
        let versions = self.bucket.versions(key)?.into_iter();
        Ok(versions.map(|version| KeptVersion { id: version.version_id, size: version.size }).collect())
    }

    fn open_version(&self, key: &str, version: &str) -> io::Result<Box<dyn Read + Send>> {
        check_key(key)?;
        self.bucket.open_version(key, version)
    }

    /// Names hidden under delete markers are listed too (a snapshot someone
    /// "deleted" is still there to restore), where the keys may list versions.
    fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        let dir = prefix.trim_end_matches('/');
        match self.bucket.list_children_of_all_versions(dir) {
            Ok(names) => Ok(names),
            Err(error) if versions_unavailable(&error) => {
                tracing::warn!(
                    bucket = %self.url,
                    %error,
                    "cannot list versions; names hidden under delete markers are not listed \
                     (the keys need s3:ListBucketVersions)"
                );
                self.bucket.list_children(dir)
            }
            Err(error) => Err(error),
        }
    }

    fn claim_snapshot(&self, name: &str) -> io::Result<bool> {
        // Unique content: the same content already there counts as an
        // upload that landed, so only different content proves a claim taken.
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let claimant = format!("{}-{nanos}-{}\n", std::process::id(), SEQUENCE.fetch_add(1, Ordering::Relaxed));
        let mut marker = self.create(&format!("snapshots/{name}/claim"))?;
        marker.write_all(claimant.as_bytes())?;
        match marker.publish() {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(error) => Err(error),
        }
    }

    fn rereads_present_objects(&self) -> bool {
        false
    }
}

/// An object on its way to a bucket: a temporary file, removed when dropped.
struct BucketObject {
    bucket: Arc<Bucket>,
    key: String,
    file: tempfile::NamedTempFile,
    hasher: blake3::Hasher,
    size: u64,
}

impl Write for BucketObject {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.file.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.size += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl NewObject for BucketObject {
    fn publish(mut self: Box<Self>) -> io::Result<()> {
        self.file.flush()?;
        // The client's multipart completion is not conditional: look first.
        if self.size > PART_SIZE as u64 && self.bucket.size(&self.key)?.is_some() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} exists", self.key)));
        }
        let digest = *self.hasher.finalize().as_bytes();
        self.bucket.put_new(self.file.path(), &self.key, self.size, digest)
    }
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn fsync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) => fsync_dir(parent),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_object(target: &DirTarget, key: &str, content: &[u8]) -> io::Result<()> {
        let mut object = target.create(key)?;
        object.write_all(content)?;
        object.publish()
    }

    #[test]
    fn published_objects_are_read_only_and_never_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = DirTarget::open(dir.path()).expect("target");
        write_object(&target, "objects/ab/abc", b"first").expect("first write");
        let path = target.path_of("objects/ab/abc").expect("path");
        assert_eq!(fs::metadata(&path).expect("metadata").permissions().mode() & 0o777, 0o444);
        let error = write_object(&target, "objects/ab/abc", b"second").expect_err("a second write must fail");
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).expect("read"), b"first");
        assert_eq!(target.list("objects/ab/").expect("list"), vec!["abc".to_string()], "no temporary file is left");
        assert_eq!(target.object_size("objects/ab/abc").expect("size"), Some(5));
        assert_eq!(target.object_size("objects/ab/none").expect("size"), None);
    }

    #[test]
    fn unpublished_objects_leave_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = DirTarget::open(dir.path()).expect("target");
        let mut object = target.create("objects/cd/cde").expect("create");
        object.write_all(b"abandoned").expect("write");
        drop(object);
        assert_eq!(target.object_size("objects/cd/cde").expect("size"), None);
        assert!(fs::read_dir(dir.path().join("objects/cd")).expect("dir").next().is_none(), "temporary file removed");
    }

    #[test]
    fn keys_outside_the_target_and_taken_snapshot_names_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = DirTarget::open(dir.path()).expect("target");
        assert!(target.create("../escape").is_err());
        assert!(target.create("/etc/passwd").is_err());
        assert!(target.claim_snapshot("20260101T000000Z").expect("claim"));
        assert!(!target.claim_snapshot("20260101T000000Z").expect("claim again"));
        assert_eq!(target.list("snapshots/").expect("list"), vec!["20260101T000000Z".to_string()]);
    }
}
