//! Write-once backups of an archive, point-in-time restore into an empty
//! node, and what a restore drill needs.
//!
//! A backup target ([`Target`]) holds:
//!
//! - `objects/<2 hex>/<64 hex>`: instance files by their BLAKE3 digest, so
//!   every run is incremental (an object already there is checked, never
//!   written again) and identical content is kept once;
//! - `snapshots/<UTC time>/catalog.sqlite`: a consistent copy of the catalog
//!   ([`haneul_catalog::Catalog::snapshot_into`]);
//! - `snapshots/<UTC time>/manifest.json`: every blob the catalog references
//!   (path, size, digest), written last, so a snapshot without a manifest is
//!   incomplete and ignored;
//! - `snapshots/<UTC time>/manifest.sig`: where the backup was given a
//!   [`SigningKey`], its signature of the manifest, written just before it.
//!
//! A backup only reads the archive (a catalog snapshot and the blob files), so
//! it runs beside a serving node; every blob is hashed while it is copied and
//! an object is published only when it matches the catalog's digest. Nothing
//! published is ever opened for writing, replaced or deleted: an existing
//! object whose content differs fails the run and stays as it is.
//!
//! This crate sits beside `haneul-core`: it reads through the catalog and
//! storage APIs and writes only to its target and, on restore, into an empty
//! data directory.

mod manifest;
mod signing;
mod target;
mod when;

pub use manifest::{object_key, AuditEntry, BlobEntry, CatalogEntry, Counts, Manifest, MANIFEST_FORMAT};
pub use signing::{verify_key_path, Signature, SigningKey, VerifyKey};
pub use target::{BucketTarget, DirTarget, KeptVersion, NewObject, Target};
pub use when::{is_snapshot_name, parse_at};

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use haneul_catalog::{BlobKind, Catalog, CatalogError, CatalogSnapshot};
use haneul_storage::{BlobStore, StorageError};
use manifest::{is_audit_file_name, is_digest_hex, to_hex};
use signing::{ManifestDigest, MAX_SIGNATURE_BYTES, SIGNATURE_FILE};

/// The catalog's file inside a snapshot.
const SNAPSHOT_CATALOG: &str = "catalog.sqlite";
const MANIFEST_FILE: &str = "manifest.json";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    // `cause`, not `source`: the message already ends with it, and a
    // source would print it twice in an error chain.
    #[error("{what}: {cause}")]
    Io { what: String, cause: io::Error },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("backup failed, no snapshot written: {}", list(.0))]
    Problems(Vec<BackupProblem>),
    #[error(
        "no complete snapshot{} in {target}{}",
        if *.signed { " signed with this key" } else { "" },
        .at.as_ref().map(|at| format!(" at or before {at}")).unwrap_or_default()
    )]
    NoSnapshot { target: String, at: Option<String>, signed: bool },
    #[error("{0:?} is neither a snapshot name (20261123T101500Z) nor an RFC 3339 time (2026-11-23T10:15:00Z)")]
    BadTime(String),
    #[error("snapshot {snapshot} has no readable manifest: {detail}")]
    BadManifest { snapshot: String, detail: String },
    #[error("data directory {0} is not empty; restore only into an empty or new directory")]
    DataDirNotEmpty(PathBuf),
    #[error("the catalog of snapshot {snapshot} ({object}) does not match its manifest")]
    CatalogDamaged { snapshot: String, object: String },
    #[error("snapshot {snapshot} is incomplete: {}", list(.problems))]
    Incomplete { snapshot: String, problems: Vec<RestoreProblem> },
    #[error("cannot find a free snapshot name in {0}")]
    NameTaken(String),
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    let shown: Vec<String> = items.iter().take(20).map(ToString::to_string).collect();
    let more = items.len().saturating_sub(shown.len());
    let mut text = shown.join("; ");
    if more > 0 {
        text.push_str(&format!("; … and {more} more"));
    }
    text
}

fn io_error(what: impl fmt::Display) -> impl FnOnce(io::Error) -> BackupError {
    let what = what.to_string();
    move |source| BackupError::Io { what, cause: source }
}

pub type Result<T> = std::result::Result<T, BackupError>;

/// Something a backup found that keeps it from writing a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupProblem {
    /// A blob the catalog snapshot references is not in the blob store.
    SourceMissing { path: String },
    /// A blob's bytes do not hash to the catalog's digest (or size).
    SourceMismatch { path: String },
    /// An object already in the backup does not hash to its name.
    ObjectDiffers { object: String },
}

impl fmt::Display for BackupProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackupProblem::SourceMissing { path } => {
                write!(f, "archive file {path} is missing (removed since the snapshot, or lost: run haneul verify)")
            }
            BackupProblem::SourceMismatch { path } => {
                write!(f, "archive file {path} does not match its catalog digest; not backed up (run haneul verify)")
            }
            BackupProblem::ObjectDiffers { object } => {
                write!(f, "backup object {object} differs from the archive's copy; refusing to overwrite")
            }
        }
    }
}

/// An object a restore could not use.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum RestoreProblem {
    Missing { object: String, path: String },
    Damaged { object: String, path: String },
}

impl RestoreProblem {
    /// The blob path (or audit trail file) the object holds.
    pub fn path(&self) -> &str {
        match self {
            RestoreProblem::Missing { path, .. } | RestoreProblem::Damaged { path, .. } => path,
        }
    }
}

impl fmt::Display for RestoreProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreProblem::Missing { object, path } => write!(f, "backup object {object} (for {path}) is missing"),
            RestoreProblem::Damaged { object, path } => {
                write!(f, "backup object {object} (for {path}) does not match its digest")
            }
        }
    }
}

/// An object a restore read from the version Haneul wrote, because the
/// object as served now is missing or holds other bytes: someone else
/// wrote to the backup since (a delete marker, an overwrite).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaced {
    pub object: String,
    /// The blob path it holds, or `catalog`.
    pub path: String,
}

impl fmt::Display for Replaced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "backup object {} (for {}) was replaced or deleted after it was written; the first version matching its digest was used",
            self.object, self.path
        )
    }
}

/// The archive a backup reads.
pub struct Source<'a> {
    pub catalog: &'a dyn Catalog,
    pub blobs: &'a BlobStore,
    /// The node's audit trail directory, if it is backed up too.
    pub audit_dir: Option<&'a Path>,
    /// The key that signs the snapshot's manifest, if any.
    pub signing_key: Option<&'a SigningKey>,
}

#[derive(Debug, Clone)]
pub struct BackupReport {
    pub snapshot: String,
    /// Objects copied by this run.
    pub objects_written: u64,
    pub bytes_written: u64,
    /// Objects a previous run had written, checked and kept.
    pub objects_present: u64,
    pub counts: Counts,
    /// Files of the audit trail in the snapshot, and how many of them
    /// this run copied (the others an earlier run had stored whole).
    pub audit_files: u64,
    pub audit_written: u64,
    /// Trail files this run read and hashed: the others had not changed
    /// since an earlier run hashed them (see `TrailDigests`).
    pub audit_read: u64,
    /// Objects someone replaced in the target since a run wrote them, whose
    /// version as written is still kept there (restores read that one).
    pub replaced: Vec<Replaced>,
}

/// Back up `source` into `target`: a catalog snapshot, every referenced blob
/// not yet in the target, and the manifest last. `scratch` is a directory
/// for the catalog copy before it is stored. `progress` gets the blob bytes
/// handled so far and their total.
pub fn backup(
    source: &Source<'_>,
    target: &dyn Target,
    scratch: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<BackupReport> {
    let scratch = tempfile::Builder::new()
        .prefix(".haneul-snapshot-")
        .tempdir_in(scratch)
        .map_err(io_error(format_args!("cannot make a scratch directory in {}", scratch.display())))?;
    let (name, created) = claim_snapshot_name(target)?;
    let catalog_copy = scratch.path().join(SNAPSHOT_CATALOG);
    source.catalog.snapshot_into(&catalog_copy)?;
    let snapshot = CatalogSnapshot::open(&catalog_copy)?;
    let catalog_counts = snapshot.counts()?;
    let referenced = snapshot.blobs()?;
    drop(snapshot);

    let total: u64 = referenced.iter().map(|blob| blob.size).sum();
    let mut report = BackupReport {
        snapshot: name.clone(),
        objects_written: 0,
        bytes_written: 0,
        objects_present: 0,
        counts: Counts::default(),
        audit_files: 0,
        audit_written: 0,
        audit_read: 0,
        replaced: Vec::new(),
    };
    let mut problems = Vec::new();
    let mut handled = HashSet::new();
    let mut entries = Vec::with_capacity(referenced.len());
    let mut done = 0;
    progress(done, total);
    for blob in &referenced {
        let digest = to_hex(&blob.digest);
        entries.push(BlobEntry {
            path: blob.path.clone(),
            size: blob.size,
            digest: digest.clone(),
            kind: kind_name(blob.kind).into(),
        });
        // Blobs with the same content share one object.
        if handled.insert(digest.clone()) {
            let stored = store_object(target, &digest, &blob.path, (blob.size, blob.digest), || {
                match source.blobs.open_blob(&blob.path) {
                    Ok(file) => Ok(Some(file)),
                    Err(StorageError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
                    Err(error) => Err(error.into()),
                }
            })?;
            match stored {
                Stored::Written => {
                    report.objects_written += 1;
                    report.bytes_written += blob.size;
                }
                Stored::Present => report.objects_present += 1,
                Stored::InEarlierVersion => {
                    report.objects_present += 1;
                    report
                        .replaced
                        .push(Replaced { object: target.locate(&object_key(&digest)), path: blob.path.clone() });
                }
                Stored::Problem(problem) => problems.push(problem),
            }
        }
        done += blob.size;
        progress(done, total);
    }
    let audit = match source.audit_dir {
        Some(dir) => backup_audit(dir, target, scratch.path(), &mut report, &mut problems)?,
        None => Vec::new(),
    };
    if !problems.is_empty() {
        for problem in &problems {
            tracing::error!(%problem, "backup problem");
        }
        return Err(BackupError::Problems(problems));
    }

    let catalog_key = format!("snapshots/{name}/{SNAPSHOT_CATALOG}");
    let mut catalog_file =
        File::open(&catalog_copy).map_err(io_error(format_args!("cannot read {}", catalog_copy.display())))?;
    let mut object = target.create(&catalog_key).map_err(io_error(target.locate(&catalog_key)))?;
    let (catalog_size, catalog_digest) =
        copy_hashing(&mut catalog_file, &mut object, &catalog_copy.display().to_string(), target)?;
    object.publish().map_err(io_error(target.locate(&catalog_key)))?;

    report.counts = Counts {
        patients: catalog_counts.patients,
        studies: catalog_counts.studies,
        series: catalog_counts.series,
        instances: catalog_counts.instances,
        superseded: catalog_counts.superseded,
        conflicts: catalog_counts.conflicts,
        blobs: entries.len() as u64,
        objects: handled.len() as u64,
        bytes: total,
    };
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        haneul_version: env!("CARGO_PKG_VERSION").into(),
        snapshot: name.clone(),
        created,
        catalog: CatalogEntry {
            file: SNAPSHOT_CATALOG.into(),
            size: catalog_size,
            digest: to_hex(&catalog_digest),
            schema_version: catalog_counts.schema_version,
        },
        counts: report.counts.clone(),
        blobs: entries,
        audit,
    };
    let manifest_key = format!("snapshots/{name}/{MANIFEST_FILE}");
    let bytes = serde_json::to_vec_pretty(&manifest).map_err(|error| BackupError::Io {
        what: format!("cannot encode the manifest of {name}"),
        cause: io::Error::other(error),
    })?;
    // The signature goes first: the manifest's arrival completes the snapshot.
    if let Some(key) = source.signing_key {
        let signature_key = format!("snapshots/{name}/{SIGNATURE_FILE}");
        write_small_object(target, &signature_key, &key.signature_for(&bytes))?;
    }
    write_small_object(target, &manifest_key, &bytes)?;
    Ok(report)
}

fn write_small_object(target: &dyn Target, key: &str, bytes: &[u8]) -> Result<()> {
    let mut object = target.create(key).map_err(io_error(target.locate(key)))?;
    object.write_all(bytes).map_err(io_error(target.locate(key)))?;
    object.publish().map_err(io_error(target.locate(key)))
}

fn kind_name(kind: BlobKind) -> &'static str {
    match kind {
        BlobKind::Instance => "instance",
        BlobKind::Superseded => "superseded",
        BlobKind::Conflict => "conflict",
    }
}

/// A fresh snapshot name (the current UTC second) and the time as RFC 3339.
/// Two runs in the same second: the later one waits for the next second.
fn claim_snapshot_name(target: &dyn Target) -> Result<(String, String)> {
    for _ in 0..5 {
        let now = time::OffsetDateTime::now_utc();
        let name = when::snapshot_name(now);
        if target.claim_snapshot(&name).map_err(io_error(format_args!("cannot create snapshot {name}")))? {
            return Ok((name, when::rfc3339(now)));
        }
        let rest_of_second = 1_000u64.saturating_sub(u64::from(now.millisecond())) + 1;
        std::thread::sleep(std::time::Duration::from_millis(rest_of_second));
    }
    Err(BackupError::NameTaken(target.describe()))
}

enum Stored {
    Written,
    Present,
    /// Present only in a version the target keeps: the current one was
    /// replaced by someone else.
    InEarlierVersion,
    Problem(BackupProblem),
}

/// Open the embedded catalog file `catalog` for a backup: for reading only
/// (beside a running server, and without the start-up recovery of a node).
pub fn open_embedded_catalog(catalog: &Path) -> Result<std::sync::Arc<dyn Catalog>> {
    if !catalog.is_file() {
        return Err(BackupError::Io {
            what: format!("no archive at {}", catalog.parent().unwrap_or(catalog).display()),
            cause: io::Error::new(io::ErrorKind::NotFound, "no catalog"),
        });
    }
    Ok(std::sync::Arc::new(haneul_catalog::SqliteCatalog::open_read_only(catalog)?))
}

/// Make sure the target holds the content `expected` (size, digest; `digest`
/// in hex) of the archive file `what` under its digest. `open` gives the
/// file, or `None` when it is missing; it is called only if the target
/// lacks the object.
fn store_object(
    target: &dyn Target,
    digest: &str,
    what: &str,
    expected: (u64, [u8; 32]),
    open: impl FnOnce() -> Result<Option<File>>,
) -> Result<Stored> {
    let key = object_key(digest);
    if let Some(size) = target.object_size(&key).map_err(io_error(target.locate(&key)))? {
        return check_existing(target, &key, expected, Presence::Found { size });
    }
    let Some(mut file) = open()? else {
        return Ok(Stored::Problem(BackupProblem::SourceMissing { path: what.to_string() }));
    };
    let mut object = target.create(&key).map_err(io_error(target.locate(&key)))?;
    let copied = copy_hashing(&mut file, &mut object, what, target)?;
    if copied != expected {
        // Dropping the unpublished object discards the copy.
        return Ok(Stored::Problem(BackupProblem::SourceMismatch { path: what.to_string() }));
    }
    match object.publish() {
        Ok(()) => Ok(Stored::Written),
        // Another run published the same content meanwhile: check theirs.
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            check_existing(target, &key, expected, Presence::RefusedOurs)
        }
        Err(error) => Err(io_error(target.locate(&key))(error)),
    }
}

/// Store each file of the audit trail in `dir` as far as its last complete
/// record (the server may be appending to the newest), through a copy in
/// `scratch`. Files already stored whole by an earlier run are found by
/// their digest and not written again; a file unchanged since an earlier
/// run (same length and modification time, see [`TrailDigests`]) is not
/// even read again unless the target lacks it.
fn backup_audit(
    dir: &Path,
    target: &dyn Target,
    scratch: &Path,
    report: &mut BackupReport,
    problems: &mut Vec<BackupProblem>,
) -> Result<Vec<AuditEntry>> {
    let files = haneul_audit::trail_files(dir).map_err(|error| BackupError::Io {
        what: format!("cannot list the audit trail in {}", dir.display()),
        cause: io::Error::other(error.to_string()),
    })?;
    let staged = scratch.join("audit-file");
    let known = TrailDigests::read(dir);
    let mut seen = TrailDigests::default();
    let mut entries = Vec::with_capacity(files.len());
    for path in files {
        let Some(name) = path.file_name().and_then(|name| name.to_str()).map(str::to_string) else { continue };
        // A restore makes only files named as the trail names them.
        if !is_audit_file_name(&name) {
            tracing::warn!(file = %path.display(), "not an audit trail file name; left out of the backup");
            continue;
        }
        let stamp = FileStamp::of(&path);
        // Trusted only for an object the target holds: a file it lacks is read whole.
        let cached = known.files.get(&name).filter(|cached| {
            Some(cached.stamp) == stamp
                && target.object_size(&object_key(&to_hex(&cached.digest))).ok().flatten() == Some(cached.size)
        });
        let (size, digest) = match cached {
            Some(cached) => (cached.size, cached.digest),
            None => {
                report.audit_read += 1;
                copy_complete_lines(&path, &staged)?
            }
        };
        if let Some(stamp) = stamp {
            seen.files.insert(name.clone(), CachedDigest { stamp, size, digest });
        }
        if size == 0 {
            continue;
        }
        let digest_hex = to_hex(&digest);
        let stored = match cached {
            // Its object was just found with its size: checked as any present object is.
            Some(_) => check_existing(target, &object_key(&digest_hex), (size, digest), Presence::Found { size })?,
            None => store_object(target, &digest_hex, &path.display().to_string(), (size, digest), || {
                File::open(&staged).map(Some).map_err(io_error(format_args!("cannot read {}", staged.display())))
            })?,
        };
        match stored {
            Stored::Written => report.audit_written += 1,
            Stored::Present => {}
            Stored::InEarlierVersion => report.replaced.push(Replaced {
                object: target.locate(&object_key(&digest_hex)),
                path: format!("audit trail {name}"),
            }),
            Stored::Problem(problem) => problems.push(problem),
        }
        entries.push(AuditEntry { file: name, size, digest: digest_hex });
    }
    let _ = fs::remove_file(&staged);
    if seen != known {
        seen.write(dir);
    }
    report.audit_files = entries.len() as u64;
    Ok(entries)
}

/// What a backup learnt of each trail file, kept in the trail's directory
/// (`.backup-digests.json`, a name the trail never uses) so that the next
/// run hashes only files that changed: past days' files never change, and a
/// year of a busy trail is gigabytes. A file whose length, modification
/// time, change time or inode changed, or whose object the target lacks, is
/// read again; an unreadable cache only costs that. The change time is what
/// notices a file rewritten in place with its modification time put back:
/// setting the modification time sets the change time to now, and no
/// unprivileged call sets it back (the trail's hash chain, checked by
/// `haneul audit verify` and every drill, notices such a rewrite too).
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct TrailDigests {
    files: std::collections::BTreeMap<String, CachedDigest>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct CachedDigest {
    stamp: FileStamp,
    /// The size and digest of the file as far as its last complete record.
    size: u64,
    #[serde(with = "digest_hex")]
    digest: [u8; 32],
}

/// A file's length, modification and change times (nanoseconds since the
/// epoch) and inode. Stamps kept by a build without the last two never match,
/// so their files are read once more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct FileStamp {
    len: u64,
    modified_ns: i128,
    #[serde(default)]
    changed_ns: i128,
    #[serde(default)]
    inode: u64,
}

impl FileStamp {
    /// `None` where the file system keeps no modification time: no cache then.
    fn of(path: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let metadata = fs::metadata(path).ok()?;
        let modified = metadata.modified().ok()?;
        let modified_ns = match modified.duration_since(std::time::UNIX_EPOCH) {
            Ok(after) => i128::try_from(after.as_nanos()).ok()?,
            Err(before) => -i128::try_from(before.duration().as_nanos()).ok()?,
        };
        let changed_ns = i128::from(metadata.ctime()) * 1_000_000_000 + i128::from(metadata.ctime_nsec());
        Some(FileStamp { len: metadata.len(), modified_ns, changed_ns, inode: metadata.ino() })
    }
}

const TRAIL_DIGESTS: &str = ".backup-digests.json";

impl TrailDigests {
    fn read(dir: &Path) -> TrailDigests {
        let Ok(bytes) = fs::read(dir.join(TRAIL_DIGESTS)) else { return TrailDigests::default() };
        serde_json::from_slice(&bytes).unwrap_or_else(|error| {
            tracing::warn!(%error, "unreadable digests of an earlier backup; the trail is read whole");
            TrailDigests::default()
        })
    }

    /// Replace the cache whole; a backup user that may not write there only
    /// reads the trail again next time.
    fn write(&self, dir: &Path) {
        let written = serde_json::to_vec(self).map_err(io::Error::other).and_then(|bytes| {
            let mut file = tempfile::Builder::new().prefix(".backup-digests-").tempfile_in(dir)?;
            file.write_all(&bytes)?;
            file.persist(dir.join(TRAIL_DIGESTS)).map_err(|error| error.error)?;
            Ok(())
        });
        if let Err(error) = written {
            tracing::warn!(dir = %dir.display(), %error, "cannot keep the trail's digests for the next backup");
        }
    }
}

mod digest_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(digest: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::to_hex(digest))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(deserializer)?;
        blake3::Hash::from_hex(&text).map(|hash| *hash.as_bytes()).map_err(serde::de::Error::custom)
    }
}

/// Copy `source` into `staged` up to and including its last newline,
/// hashing what is copied; the size and digest of the copy.
fn copy_complete_lines(source: &Path, staged: &Path) -> Result<(u64, [u8; 32])> {
    let mut input = File::open(source).map_err(io_error(format_args!("cannot read {}", source.display())))?;
    let mut output = File::create(staged).map_err(io_error(format_args!("cannot create {}", staged.display())))?;
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 1 << 20];
    // What was read after the last newline so far: a record not yet complete.
    let mut pending = Vec::new();
    let mut size = 0u64;
    loop {
        let n = match read_some(&mut input, &mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) => return Err(io_error(format_args!("cannot read {}", source.display()))(error)),
        };
        let chunk = &buffer[..n];
        let Some(last) = chunk.iter().rposition(|byte| *byte == b'\n') else {
            pending.extend_from_slice(chunk);
            continue;
        };
        for complete in [&pending[..], &chunk[..=last]] {
            hasher.update(complete);
            output.write_all(complete).map_err(io_error(format_args!("cannot write {}", staged.display())))?;
            size += complete.len() as u64;
        }
        pending.clear();
        pending.extend_from_slice(&chunk[last + 1..]);
    }
    Ok((size, *hasher.finalize().as_bytes()))
}

/// How an object already in the target came to light.
enum Presence {
    /// Listed before writing, with its size.
    Found { size: u64 },
    /// Our publish was refused because the key is taken.
    RefusedOurs,
}

/// An object already in the target must hold exactly `blob`'s bytes. One
/// found before writing, in a target that does not reread, is judged by its
/// size; one that refused our publish is always read back, since a bucket
/// refuses only other content. One that differs may still be kept as
/// written in an earlier version (a versioned bucket under Object Lock after
/// someone overwrote it): then the backup goes on, naming it, as restores
/// read that version.
fn check_existing(target: &dyn Target, key: &str, expected: (u64, [u8; 32]), presence: Presence) -> Result<Stored> {
    let current_matches = match presence {
        Presence::Found { size } if !target.rereads_present_objects() => size == expected.0,
        _ => {
            let mut object = target.open(key).map_err(io_error(target.locate(key)))?;
            hash_reader(&mut object).map_err(io_error(target.locate(key)))? == expected
        }
    };
    if current_matches {
        return Ok(Stored::Present);
    }
    let judge_by_size = matches!(presence, Presence::Found { .. }) && !target.rereads_present_objects();
    if kept_version_matches(target, key, expected, judge_by_size)? {
        tracing::warn!(
            object = %target.locate(key),
            "backup object replaced since it was written; its version as written is kept and used"
        );
        return Ok(Stored::InEarlierVersion);
    }
    Ok(Stored::Problem(BackupProblem::ObjectDiffers { object: target.locate(key) }))
}

/// Whether the target keeps a version of `key` holding `expected` (size,
/// digest): judged by its listed size where the current version was
/// (`judge_by_size`), else read back and hashed.
fn kept_version_matches(
    target: &dyn Target,
    key: &str,
    expected: (u64, [u8; 32]),
    judge_by_size: bool,
) -> Result<bool> {
    for KeptVersion { id: version, size } in kept_versions(target, key)? {
        if let Some(size) = size.filter(|_| judge_by_size) {
            if size == expected.0 {
                return Ok(true);
            }
            continue;
        }
        let mut reader = match target.open_version(key, &version) {
            Ok(reader) => reader,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) if target::versions_unavailable(&error) => {
                warn_versions_unreadable(target, key, &error);
                return Ok(false);
            }
            Err(error) => return Err(io_error(format_args!("{} (version {version})", target.locate(key)))(error)),
        };
        let found = hash_reader(reader.as_mut())
            .map_err(io_error(format_args!("{} (version {version})", target.locate(key))))?;
        if found == expected {
            return Ok(true);
        }
    }
    Ok(false)
}

fn hash_reader(reader: &mut dyn Read) -> io::Result<(u64, [u8; 32])> {
    copy_and_hash(reader, &mut io::sink()).map_err(|(_, error)| error)
}

/// One `read` into `buffer`, tried again when interrupted by a signal.
fn read_some(reader: &mut dyn Read, buffer: &mut [u8]) -> io::Result<usize> {
    loop {
        match reader.read(buffer) {
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}

/// Which side of a copy failed.
enum Side {
    Read,
    Write,
}

fn copy_and_hash(
    reader: &mut dyn Read,
    writer: &mut dyn Write,
) -> std::result::Result<(u64, [u8; 32]), (Side, io::Error)> {
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = match read_some(reader, &mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) => return Err((Side::Read, error)),
        };
        hasher.update(&buffer[..n]);
        writer.write_all(&buffer[..n]).map_err(|error| (Side::Write, error))?;
        size += n as u64;
    }
    Ok((size, *hasher.finalize().as_bytes()))
}

/// Copy an archive file (`what`) into a new object, hashing it.
fn copy_hashing(
    reader: &mut dyn Read,
    object: &mut Box<dyn NewObject>,
    what: &str,
    target: &dyn Target,
) -> Result<(u64, [u8; 32])> {
    copy_and_hash(reader, object.as_mut()).map_err(|(side, source)| match side {
        Side::Read => BackupError::Io { what: format!("cannot read {what}"), cause: source },
        Side::Write => BackupError::Io { what: format!("cannot write to {}", target.describe()), cause: source },
    })
}

/// A snapshot in a target, as a restore sees it.
#[derive(Debug, Clone)]
pub struct SnapshotListing {
    pub name: String,
    pub state: SnapshotState,
}

#[derive(Debug, Clone)]
pub enum SnapshotState {
    /// A restore would take it (with a key: it is signed with it).
    Complete(Box<Manifest>),
    /// No manifest (and no signature): a run that stopped before its end.
    Incomplete,
    /// Something that is not a snapshot a restore may take, and why: a
    /// malformed or unreadable manifest, or with a key anything not signed
    /// with it. A restore that meets it names it and exits 3.
    PassedOver(String),
}

/// Every snapshot in the target, oldest first, as [`choose_snapshot`]
/// judges it with `key`.
pub fn list_snapshots(target: &dyn Target, key: Option<&VerifyKey>) -> Result<Vec<SnapshotListing>> {
    let names = snapshot_names(target)?;
    Ok(names.into_iter().map(|name| SnapshotListing { state: examine(target, &name, key), name }).collect())
}

/// The snapshot names in the target, oldest first.
fn snapshot_names(target: &dyn Target) -> Result<Vec<String>> {
    let mut names = target.list("snapshots/").map_err(io_error(format_args!("cannot list {}", target.describe())))?;
    names.retain(|name| is_snapshot_name(name));
    names.sort();
    Ok(names)
}

/// The manifest of a snapshot, checked for form (not against the objects).
pub fn read_manifest(target: &dyn Target, snapshot: &str) -> Result<Manifest> {
    match read_manifest_bytes(target, snapshot).map_err(io_error(format_args!("the manifest of {snapshot}")))? {
        Some(bytes) => parse_manifest(snapshot, &bytes),
        None => {
            Err(BackupError::BadManifest { snapshot: snapshot.to_string(), detail: "no manifest (incomplete)".into() })
        }
    }
}

/// A snapshot's manifest as Haneul wrote it; `None` without one.
fn read_manifest_bytes(target: &dyn Target, snapshot: &str) -> io::Result<Option<Vec<u8>>> {
    let key = format!("snapshots/{snapshot}/{MANIFEST_FILE}");
    let mut reader = match open_as_written(target, &key) {
        Ok(reader) => reader,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

fn parse_manifest(snapshot: &str, bytes: &[u8]) -> Result<Manifest> {
    let bad = |detail: String| BackupError::BadManifest { snapshot: snapshot.to_string(), detail };
    let manifest: Manifest = serde_json::from_slice(bytes).map_err(|error| bad(error.to_string()))?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(bad(format!("format {} is not {MANIFEST_FORMAT}", manifest.format)));
    }
    // The name inside is signed with the rest: a signed manifest copied
    // under a newer name is refused here.
    if manifest.snapshot != snapshot {
        return Err(bad(format!("it names snapshot {:?}", manifest.snapshot)));
    }
    if !is_digest_hex(&manifest.catalog.digest) || manifest.catalog.file.contains('/') {
        return Err(bad("its catalog entry is malformed".into()));
    }
    if let Some(entry) = manifest.blobs.iter().find(|entry| !is_digest_hex(&entry.digest)) {
        return Err(bad(format!("blob {:?} has a malformed digest", entry.path)));
    }
    if let Some(entry) =
        manifest.audit.iter().find(|entry| !is_digest_hex(&entry.digest) || !is_audit_file_name(&entry.file))
    {
        return Err(bad(format!("audit file {:?} is malformed", entry.file)));
    }
    Ok(manifest)
}

/// A snapshot's signature object as first written, if it has one.
fn read_signature(target: &dyn Target, snapshot: &str) -> io::Result<Option<Vec<u8>>> {
    let key = format!("snapshots/{snapshot}/{SIGNATURE_FILE}");
    let reader = match open_as_written(target, &key) {
        Ok(reader) => reader,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let mut signature = Vec::new();
    // Capped: the object is untrusted, and ours is a few hundred bytes.
    reader.take(MAX_SIGNATURE_BYTES + 1).read_to_end(&mut signature)?;
    if signature.len() as u64 > MAX_SIGNATURE_BYTES {
        return Ok(Some(Vec::new()));
    }
    Ok(Some(signature))
}

/// Open the object `key` as it was first written, where the target keeps
/// versions: a manifest has no digest to check it by, and Haneul writes
/// each once, so a later version (or a delete marker) is someone else's.
fn open_as_written(target: &dyn Target, key: &str) -> io::Result<Box<dyn Read + Send>> {
    let unavailable = |error: io::Error| {
        tracing::warn!(
            object = %target.locate(key),
            %error,
            "cannot read the version Haneul wrote; reading the object as it is now \
             (the keys need s3:ListBucketVersions and s3:GetObjectVersion)"
        );
        target.open(key)
    };
    let first = match target.versions(key) {
        Ok(versions) => versions.into_iter().next(),
        Err(error) if target::versions_unavailable(&error) => return unavailable(error),
        Err(error) => return Err(error),
    };
    let Some(first) = first else { return target.open(key) };
    match target.open_version(key, &first.id) {
        Err(error) if target::versions_unavailable(&error) => unavailable(error),
        result => result,
    }
}

/// The snapshot a restore takes, and what it passed over.
#[derive(Debug, Clone)]
pub struct Chosen {
    pub manifest: Manifest,
    /// Snapshots newer than the chosen one (at or before the time asked
    /// for) that it did not take although they are not merely incomplete:
    /// malformed or unreadable, or with a key not signed with it.
    pub passed_over: Vec<PassedOver>,
}

/// A snapshot a restore did not take, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassedOver {
    pub snapshot: String,
    pub reason: String,
}

impl fmt::Display for PassedOver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.snapshot, printable(&self.reason))
    }
}

/// Text read from a backup, made safe for a terminal: control characters escaped.
pub fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// The newest complete snapshot at or before `at` (a snapshot name or RFC
/// 3339 time; `None`: the newest of all), and with a key the newest signed
/// with it. Snapshots are read newest first, and only as far as the one
/// taken, so nothing after `at` or older than the one taken is even read.
pub fn choose_snapshot(target: &dyn Target, at: Option<&str>, key: Option<&VerifyKey>) -> Result<Chosen> {
    let limit = match at {
        Some(at) => Some(parse_at(at).ok_or_else(|| BackupError::BadTime(at.to_string()))?),
        None => None,
    };
    let mut names = snapshot_names(target)?;
    names.retain(|name| limit.as_ref().is_none_or(|limit| name.as_str() <= limit.as_str()));
    let mut passed_over = Vec::new();
    for name in names.into_iter().rev() {
        match examine(target, &name, key) {
            SnapshotState::Complete(manifest) => return Ok(Chosen { manifest: *manifest, passed_over }),
            SnapshotState::Incomplete => {}
            SnapshotState::PassedOver(reason) => {
                tracing::warn!(snapshot = %name, reason = %printable(&reason), "snapshot passed over");
                passed_over.push(PassedOver { snapshot: name, reason });
            }
        }
    }
    Err(BackupError::NoSnapshot { target: target.describe(), at: limit, signed: key.is_some() })
}

/// A manifest is held whole while its signature is unchecked up to this
/// size; a larger one is hashed on and read again once its signature holds,
/// so a huge forged manifest costs a read, not the memory.
const MANIFEST_BUFFER_LIMIT: u64 = 256 << 20;

/// How a restore judges one snapshot, with or without a key. With a key
/// the signature is read first (capped), so a manifest not claimed by the
/// key pair is never read, and a claimed one is checked as it streams in.
fn examine(target: &dyn Target, name: &str, key: Option<&VerifyKey>) -> SnapshotState {
    let manifest_hidden = "a signature without a manifest: a backup that failed at its last step, \
                           or a manifest these keys cannot see";
    let Some(key) = key else {
        return match read_manifest_bytes(target, name) {
            Ok(Some(bytes)) => parsed(name, &bytes),
            Ok(None) => SnapshotState::Incomplete,
            Err(error) => SnapshotState::PassedOver(format!("manifest unreadable: {error}")),
        };
    };
    let signature = match read_signature(target, name) {
        Ok(signature) => signature,
        Err(error) => return SnapshotState::PassedOver(format!("signature unreadable: {error}")),
    };
    let claim = match key.claims(signature.as_deref()) {
        Ok(claim) => claim,
        Err(verdict) => {
            return match manifest_present(target, name) {
                Ok(true) => SnapshotState::PassedOver(verdict.to_string()),
                Ok(false) if verdict == Signature::Unsigned => SnapshotState::Incomplete,
                Ok(false) => SnapshotState::PassedOver(format!("{manifest_hidden} ({verdict})")),
                Err(error) => SnapshotState::PassedOver(format!("manifest unreadable: {error}")),
            };
        }
    };
    let (digest, held) = match hash_manifest(target, name) {
        Ok(Some(hashed)) => hashed,
        Ok(None) => return SnapshotState::PassedOver(manifest_hidden.into()),
        Err(error) => return SnapshotState::PassedOver(format!("manifest unreadable: {error}")),
    };
    let verdict = key.verify(&claim, &digest);
    if verdict != Signature::Valid {
        return SnapshotState::PassedOver(verdict.to_string());
    }
    let bytes = match held {
        Some(bytes) => bytes,
        // Too large to hold unchecked: read again, and it must be what was signed.
        None => match read_manifest_bytes(target, name) {
            Ok(Some(bytes)) if ManifestDigest::of(&bytes) == digest => bytes,
            Ok(_) => return SnapshotState::PassedOver("the manifest changed while it was read".into()),
            Err(error) => return SnapshotState::PassedOver(format!("manifest unreadable: {error}")),
        },
    };
    parsed(name, &bytes)
}

fn parsed(name: &str, bytes: &[u8]) -> SnapshotState {
    match parse_manifest(name, bytes) {
        Ok(manifest) => SnapshotState::Complete(Box::new(manifest)),
        Err(BackupError::BadManifest { detail, .. }) => {
            SnapshotState::PassedOver(format!("malformed manifest: {detail}"))
        }
        Err(error) => SnapshotState::PassedOver(error.to_string()),
    }
}

/// Whether a snapshot has a manifest (as first written).
fn manifest_present(target: &dyn Target, snapshot: &str) -> io::Result<bool> {
    match open_as_written(target, &format!("snapshots/{snapshot}/{MANIFEST_FILE}")) {
        Ok(_) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error),
    }
}

/// A snapshot's manifest (as first written) hashed as it streams in, and
/// its bytes when they fit [`MANIFEST_BUFFER_LIMIT`]; `None` without one.
fn hash_manifest(target: &dyn Target, snapshot: &str) -> io::Result<Option<(ManifestDigest, Option<Vec<u8>>)>> {
    let mut reader = match open_as_written(target, &format!("snapshots/{snapshot}/{MANIFEST_FILE}")) {
        Ok(reader) => reader,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let mut hasher = blake3::Hasher::new();
    let mut held = Some(Vec::new());
    let mut len = 0u64;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = read_some(reader.as_mut(), &mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        len += n as u64;
        if len > MANIFEST_BUFFER_LIMIT {
            held = None;
        }
        if let Some(held) = &mut held {
            held.extend_from_slice(&buffer[..n]);
        }
    }
    Ok(Some((ManifestDigest { len, hash: *hasher.finalize().as_bytes() }, held)))
}

/// Where a restore puts the catalog and the blobs.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The new node's data directory: absent or empty.
    pub data_dir: PathBuf,
    /// The catalog file's name in it.
    pub catalog_file: String,
    /// The blob store's directory in it.
    pub blob_dir: String,
    /// The audit trail's directory in it.
    pub audit_dir: String,
}

#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub snapshot: String,
    /// Blobs written and verified against their digests.
    pub blobs_restored: u64,
    pub bytes: u64,
    pub manifest: Manifest,
    /// Objects restored from an earlier version.
    pub replaced: Vec<Replaced>,
    /// Files of the audit trail restored and verified.
    pub audit_files: u64,
}

impl RestoreReport {
    fn new(manifest: &Manifest, catalog_replaced: Option<Replaced>) -> RestoreReport {
        RestoreReport {
            snapshot: manifest.snapshot.clone(),
            blobs_restored: 0,
            bytes: 0,
            manifest: manifest.clone(),
            replaced: catalog_replaced.into_iter().collect(),
            audit_files: 0,
        }
    }

    /// One blob restored and verified.
    fn count(&mut self, target: &dyn Target, entry: &manifest::BlobEntry, size: u64, from_earlier_version: bool) {
        self.blobs_restored += 1;
        self.bytes += size;
        if from_earlier_version {
            let object = target.locate(&object_key(&entry.digest));
            self.replaced.push(Replaced { object, path: entry.path.clone() });
        }
    }
}

/// Restore snapshot `manifest` from `target` into the empty data directory
/// of `layout`: every blob to its catalog path (each verified against its
/// digest, fsynced), then the catalog, last, so a directory whose restore
/// failed holds no catalog. Missing or damaged objects are all reported in
/// [`BackupError::Incomplete`].
pub fn restore(
    target: &dyn Target,
    manifest: &Manifest,
    layout: &Layout,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<RestoreReport> {
    let snapshot = manifest.snapshot.as_str();
    prepare_empty_dir(&layout.data_dir)?;
    let staged_catalog = layout.data_dir.join(format!(".{}.restoring", layout.catalog_file));
    let catalog_replaced = restore_catalog(target, manifest, &staged_catalog)?;
    check_catalog_against_manifest(&staged_catalog, manifest)?;

    let blobs = BlobStore::open(layout.data_dir.join(&layout.blob_dir), false)?;
    let mut new_entries: BTreeSet<PathBuf> = BTreeSet::new();
    new_entries.insert(layout.data_dir.clone());
    let mut problems = Vec::new();
    let mut report = RestoreReport::new(manifest, catalog_replaced);
    let total = manifest.counts.bytes;
    progress(0, total);
    for entry in &manifest.blobs {
        let destination = blobs.path_of(&entry.path)?;
        if let Some(dir) = destination.parent() {
            create_dirs(dir, &mut new_entries)?;
            new_entries.insert(dir.to_path_buf());
        }
        let create = || OpenOptions::new().write(true).create_new(true).open(&destination);
        let Copied { file, size, from_earlier_version, .. } = match copy_verified(target, entry, &destination, create)?
        {
            Ok(copied) => copied,
            Err(problem) => {
                if matches!(problem, RestoreProblem::Damaged { .. }) {
                    // Our own new file, with bytes that are not the instance's.
                    let _ = fs::remove_file(&destination);
                }
                problems.push(problem);
                continue;
            }
        };
        file.sync_all().map_err(io_error(format_args!("cannot sync {}", destination.display())))?;
        report.count(target, entry, size, from_earlier_version);
        progress(report.bytes, total);
    }
    let audit_dir = layout.data_dir.join(&layout.audit_dir);
    restore_audit(target, manifest, &audit_dir, &mut new_entries, &mut problems, &mut report, &mut Vec::new())?;
    for dir in &new_entries {
        fsync_dir(dir)?;
    }
    if !problems.is_empty() {
        let _ = fs::remove_file(&staged_catalog);
        return Err(BackupError::Incomplete { snapshot: snapshot.to_string(), problems });
    }
    let catalog_path = layout.data_dir.join(&layout.catalog_file);
    fs::rename(&staged_catalog, &catalog_path)
        .map_err(io_error(format_args!("cannot move the catalog to {}", catalog_path.display())))?;
    fsync_dir(&layout.data_dir)?;
    Ok(report)
}

/// Restore snapshot `manifest` from `target` into nodes sharing a bucket
/// and a PostgreSQL catalog: every blob into `blobs`' bucket under its
/// catalog path (each verified against its digest before it is put there,
/// never over other bytes), then the catalog into the database `catalog`
/// names, which must be empty, last and in one transaction, so that a
/// failed restore leaves no catalog. `scratch` holds the catalog file and
/// one blob at a time.
pub fn restore_shared(
    target: &dyn Target,
    manifest: &Manifest,
    catalog: &haneul_catalog::PostgresOptions,
    blobs: &BlobStore,
    audit_dir: &Path,
    scratch: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<RestoreReport> {
    // Checked before anything is uploaded, and again as the rows go in.
    let catalog = haneul_catalog::PostgresCatalog::connect(catalog)?;
    catalog.check_empty()?;
    if !manifest.audit.is_empty() {
        prepare_empty_dir(audit_dir)?;
    }
    let snapshot = manifest.snapshot.as_str();
    fs::create_dir_all(scratch).map_err(io_error(format_args!("cannot create {}", scratch.display())))?;
    let staged_catalog = scratch.join(format!("{snapshot}.catalog.restoring"));
    let staged_blob = scratch.join(format!("{snapshot}.blob.restoring"));
    let _ = fs::remove_file(&staged_catalog);
    let catalog_replaced = restore_catalog(target, manifest, &staged_catalog)?;
    let mut trail_files = Vec::new();
    let result = (|| {
        check_catalog_against_manifest(&staged_catalog, manifest)?;
        let mut problems = Vec::new();
        let mut report = RestoreReport::new(manifest, catalog_replaced);
        let total = manifest.counts.bytes;
        progress(0, total);
        for entry in &manifest.blobs {
            let Copied { file, size, digest, from_earlier_version } =
                match copy_verified(target, entry, &staged_blob, || File::create(&staged_blob))? {
                    Ok(copied) => copied,
                    Err(problem) => {
                        problems.push(problem);
                        continue;
                    }
                };
            drop(file);
            blobs.put_file(&entry.path, &staged_blob, size, haneul_storage::Digest(digest))?;
            report.count(target, entry, size, from_earlier_version);
            progress(report.bytes, total);
        }
        let mut new_entries = BTreeSet::from([audit_dir.to_path_buf()]);
        restore_audit(target, manifest, audit_dir, &mut new_entries, &mut problems, &mut report, &mut trail_files)?;
        for dir in new_entries.iter().filter(|dir| dir.is_dir()) {
            fsync_dir(dir)?;
        }
        if !problems.is_empty() {
            return Err(BackupError::Incomplete { snapshot: snapshot.to_string(), problems });
        }
        catalog.load_snapshot(&staged_catalog)?;
        Ok(report)
    })();
    if result.is_err() {
        // The trail restored so far goes, so that the restore can be run again.
        for file in &trail_files {
            let _ = fs::remove_file(file);
        }
    }
    let _ = fs::remove_file(&staged_blob);
    let _ = fs::remove_file(&staged_catalog);
    result
}

/// A blob copied out of a backup, its bytes checked.
struct Copied {
    file: File,
    size: u64,
    digest: [u8; 32],
    /// Read from an earlier version: the object as served now is missing
    /// or holds other bytes.
    from_earlier_version: bool,
}

/// What copying one object out of a backup came to.
enum Copy {
    Verified(Copied),
    /// Neither the object nor any version of it is there.
    Missing,
    /// No version holds the expected bytes (the file, if made, holds wrong ones).
    Damaged,
}

/// Copy the object `key` into the file `create` makes at `destination`
/// (made once, when there is something to copy) and keep it only if it is
/// `size` bytes hashing to `digest` (hex): first as the target serves it
/// now, then, when that is missing or other bytes, each version the target
/// keeps, oldest first. So a backup whose objects someone replaced or hid
/// under a delete marker still restores from the versions Haneul wrote.
fn copy_object(
    target: &dyn Target,
    key: &str,
    (size, digest): (u64, &str),
    destination: &Path,
    create: impl FnOnce() -> io::Result<File>,
) -> Result<Copy> {
    let mut create = Some(create);
    let mut file: Option<File> = None;
    let mut found = false;
    // The digest when the bytes are the expected ones.
    let mut copy = |reader: &mut dyn Read, file: &mut Option<File>| -> Result<Option<[u8; 32]>> {
        let output = match file {
            Some(output) => {
                output.set_len(0).and_then(|()| output.rewind()).map_err(io_error(destination.display()))?;
                output
            }
            None => {
                let create = create.take().ok_or_else(|| BackupError::Io {
                    what: format!("cannot create {}", destination.display()),
                    cause: io::Error::other("created twice"),
                })?;
                file.insert(create().map_err(io_error(format_args!("cannot create {}", destination.display())))?)
            }
        };
        let copied = copy_and_hash(reader, output).map_err(|(side, source)| match side {
            Side::Read => BackupError::Io { what: format!("cannot read {}", target.locate(key)), cause: source },
            Side::Write => BackupError::Io { what: format!("cannot write {}", destination.display()), cause: source },
        })?;
        Ok((copied.0 == size && to_hex(&copied.1) == digest).then_some(copied.1))
    };
    let verified = |file: Option<File>, digest: [u8; 32], from_earlier_version: bool| {
        let file = file.ok_or_else(|| BackupError::Io {
            what: format!("cannot write {}", destination.display()),
            cause: io::Error::other("no file made"),
        })?;
        Ok(Copy::Verified(Copied { file, size, digest, from_earlier_version }))
    };
    match target.open(key) {
        Ok(mut reader) => {
            found = true;
            if let Some(digest) = copy(reader.as_mut(), &mut file)? {
                return verified(file, digest, false);
            }
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(io_error(target.locate(key))(error)),
    }
    for KeptVersion { id: version, .. } in kept_versions(target, key)? {
        let mut reader = match target.open_version(key, &version) {
            Ok(reader) => reader,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) if target::versions_unavailable(&error) => {
                warn_versions_unreadable(target, key, &error);
                break;
            }
            Err(error) => return Err(io_error(format_args!("{} (version {version})", target.locate(key)))(error)),
        };
        found = true;
        if let Some(digest) = copy(reader.as_mut(), &mut file)? {
            tracing::warn!(
                object = %target.locate(key),
                version = %version,
                "backup object missing or replaced since it was written; using the version written first"
            );
            return verified(file, digest, true);
        }
    }
    Ok(if found { Copy::Damaged } else { Copy::Missing })
}

fn warn_versions_unreadable(target: &dyn Target, key: &str, error: &io::Error) {
    tracing::warn!(
        object = %target.locate(key),
        %error,
        "cannot read earlier versions of a missing or damaged backup object (the keys need s3:GetObjectVersion)"
    );
}

/// The versions the target keeps of `key`, oldest first; none where they
/// cannot be seen (said in the log, as the object is in trouble already).
fn kept_versions(target: &dyn Target, key: &str) -> Result<Vec<KeptVersion>> {
    match target.versions(key) {
        Ok(versions) => Ok(versions),
        Err(error) if target::versions_unavailable(&error) => {
            tracing::warn!(
                object = %target.locate(key),
                error = %error,
                "cannot look for earlier versions of a missing or damaged backup object \
                 (the keys need s3:ListBucketVersions and s3:GetObjectVersion)"
            );
            Ok(Vec::new())
        }
        Err(error) => Err(io_error(format_args!("cannot list the versions of {}", target.locate(key)))(error)),
    }
}

/// Copy the backup object holding `entry` to `destination`, verified.
fn copy_verified(
    target: &dyn Target,
    entry: &manifest::BlobEntry,
    destination: &Path,
    create: impl FnOnce() -> io::Result<File>,
) -> Result<std::result::Result<Copied, RestoreProblem>> {
    let key = object_key(&entry.digest);
    let object = target.locate(&key);
    let path = entry.path.clone();
    Ok(match copy_object(target, &key, (entry.size, &entry.digest), destination, create)? {
        Copy::Verified(copied) => Ok(copied),
        Copy::Missing => Err(RestoreProblem::Missing { object, path }),
        Copy::Damaged => Err(RestoreProblem::Damaged { object, path }),
    })
}

/// Restore the snapshot's audit trail files into `dir`, each verified and
/// fsynced; what is missing or damaged goes to `problems`.
fn restore_audit(
    target: &dyn Target,
    manifest: &Manifest,
    dir: &Path,
    new_entries: &mut BTreeSet<PathBuf>,
    problems: &mut Vec<RestoreProblem>,
    report: &mut RestoreReport,
    created: &mut Vec<PathBuf>,
) -> Result<()> {
    if manifest.audit.is_empty() {
        return Ok(());
    }
    create_dirs(dir, new_entries)?;
    new_entries.insert(dir.to_path_buf());
    for entry in &manifest.audit {
        let destination = dir.join(&entry.file);
        let key = object_key(&entry.digest);
        let object = target.locate(&key);
        let path = format!("audit trail {}", entry.file);
        let create = || {
            let file = OpenOptions::new().write(true).create_new(true).open(&destination)?;
            created.push(destination.clone());
            Ok(file)
        };
        match copy_object(target, &key, (entry.size, &entry.digest), &destination, create)? {
            Copy::Verified(Copied { file, from_earlier_version, .. }) => {
                file.sync_all().map_err(io_error(format_args!("cannot sync {}", destination.display())))?;
                report.audit_files += 1;
                if from_earlier_version {
                    report.replaced.push(Replaced { object, path });
                }
            }
            Copy::Missing => problems.push(RestoreProblem::Missing { object, path }),
            Copy::Damaged => {
                let _ = fs::remove_file(&destination);
                problems.push(RestoreProblem::Damaged { object, path });
            }
        }
    }
    Ok(())
}

/// An absent directory is created; an existing one must be empty.
fn prepare_empty_dir(dir: &Path) -> Result<()> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError::DataDirNotEmpty(dir.to_path_buf()));
            }
            Ok(())
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(io_error(format_args!("cannot create {}", dir.display())))?;
            if let Some(parent) = dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
                fsync_dir(parent)?;
            }
            Ok(())
        }
        Err(error) => Err(io_error(format_args!("cannot read {}", dir.display()))(error)),
    }
}

/// Copy the snapshot's catalog to `staged`, checking it against the
/// manifest; its object when it came from an earlier version.
fn restore_catalog(target: &dyn Target, manifest: &Manifest, staged: &Path) -> Result<Option<Replaced>> {
    let key = format!("snapshots/{}/{}", manifest.snapshot, manifest.catalog.file);
    let create = || OpenOptions::new().write(true).create_new(true).open(staged);
    let expected = (manifest.catalog.size, manifest.catalog.digest.as_str());
    match copy_object(target, &key, expected, staged, create)? {
        Copy::Verified(Copied { file, from_earlier_version, .. }) => {
            file.sync_all().map_err(io_error(format_args!("cannot sync {}", staged.display())))?;
            Ok(from_earlier_version.then(|| Replaced { object: target.locate(&key), path: "catalog".into() }))
        }
        Copy::Missing => Err(BackupError::Io {
            what: format!("cannot read {}", target.locate(&key)),
            cause: io::Error::new(io::ErrorKind::NotFound, "no such object"),
        }),
        Copy::Damaged => {
            let _ = fs::remove_file(staged);
            Err(BackupError::CatalogDamaged { snapshot: manifest.snapshot.clone(), object: target.locate(&key) })
        }
    }
}

/// The restored catalog must reference exactly the manifest's blobs: the
/// manifest is what the restore copies and the drill checks.
fn check_catalog_against_manifest(catalog: &Path, manifest: &Manifest) -> Result<()> {
    let referenced: BTreeSet<(String, u64, String)> = CatalogSnapshot::open(catalog)?
        .blobs()?
        .into_iter()
        .map(|blob| (blob.path, blob.size, to_hex(&blob.digest)))
        .collect();
    let listed: BTreeSet<(String, u64, String)> =
        manifest.blobs.iter().map(|entry| (entry.path.clone(), entry.size, entry.digest.clone())).collect();
    if referenced != listed {
        return Err(BackupError::BadManifest {
            snapshot: manifest.snapshot.clone(),
            detail: format!(
                "{} of its blobs are not in its catalog, and {} blobs of its catalog are not in it",
                listed.difference(&referenced).count(),
                referenced.difference(&listed).count()
            ),
        });
    }
    Ok(())
}

/// Create `dir` and its missing parents, remembering each parent that gained
/// an entry (to fsync once at the end).
fn create_dirs(dir: &Path, new_entries: &mut BTreeSet<PathBuf>) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs(parent, new_entries)?;
        new_entries.insert(parent.to_path_buf());
    }
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(io_error(format_args!("cannot create {}", dir.display()))(error)),
    }
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|dir| dir.sync_all()).map_err(io_error(format_args!("cannot sync {}", dir.display())))
}

#[cfg(test)]
mod tests;
