//! A bucket as a plain store of named objects, for other crates (the backup
//! target): the same client, retries and checksums as the blob store, with
//! `std::io` errors so that callers can tell a missing or taken key apart.
//! Calls block; they must not run on an async thread.

use std::io::{self, Read};
use std::path::Path;

use crate::object::ObjectBackend;
use crate::{Digest, ObjectVersion, S3Options, StorageError};

/// A bucket (and key prefix) whose objects are written once.
pub struct Bucket {
    backend: ObjectBackend,
}

/// A storage error as `std::io`, keeping "not found" and "already exists".
fn to_io(error: StorageError) -> io::Error {
    let kind = match &error {
        StorageError::Object { source, .. } => match **source {
            object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
            object_store::Error::AlreadyExists { .. } => io::ErrorKind::AlreadyExists,
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
                io::ErrorKind::PermissionDenied
            }
            _ => io::ErrorKind::Other,
        },
        StorageError::Io { source, .. } => source.kind(),
        StorageError::InvalidPath(_) => io::ErrorKind::InvalidInput,
        StorageError::Versions { status: Some(403), .. } => io::ErrorKind::PermissionDenied,
        // Servers that do not list versions answer 501 Not Implemented (or 400, 405).
        StorageError::Versions { status: Some(400 | 405 | 501), .. } => io::ErrorKind::Unsupported,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, error.to_string())
}

impl Bucket {
    /// Connect and check that the bucket answers with these credentials.
    pub fn connect(options: &S3Options) -> io::Result<Bucket> {
        Ok(Bucket { backend: ObjectBackend::connect(options).map_err(to_io)? })
    }

    /// Where the bucket is, for messages.
    pub fn location(&self) -> &str {
        self.backend.location()
    }

    /// The size of the object `key`, or `None` when there is none.
    pub fn size(&self, key: &str) -> io::Result<Option<u64>> {
        self.backend.size(key).map_err(to_io)
    }

    /// Read the object `key` ([`io::ErrorKind::NotFound`] when there is none).
    pub fn open(&self, key: &str) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(self.backend.reader(key).map_err(to_io)?))
    }

    /// Upload the file `staged` as `key` with a conditional PUT, which never
    /// replaces an object: [`io::ErrorKind::AlreadyExists`] when `key` holds
    /// other content. The same content already there (a retried request whose
    /// first attempt landed) is success. `size` and `digest` are the file's.
    pub fn put_new(&self, staged: &Path, key: &str, size: u64, digest: [u8; 32]) -> io::Result<()> {
        self.backend.upload(staged, key, size, Digest(digest)).map_err(to_io)
    }

    /// The names of the "directories" right under `dir`, sorted.
    pub fn list_children(&self, dir: &str) -> io::Result<Vec<String>> {
        self.backend.list_children(dir).map_err(to_io)
    }

    /// The versions the bucket keeps of the object `key`, oldest first
    /// (delete markers left out): one, `null`, in a bucket without
    /// versioning. Needs `s3:ListBucketVersions`
    /// ([`io::ErrorKind::PermissionDenied`] without it).
    pub fn versions(&self, key: &str) -> io::Result<Vec<ObjectVersion>> {
        let listing = self.backend.list_versions(key, None).map_err(to_io)?;
        // Newest first per key, as S3 lists them; a prefix also lists longer keys.
        let mut versions: Vec<ObjectVersion> =
            listing.versions.into_iter().filter(|version| version.key == key).collect();
        versions.reverse();
        Ok(versions)
    }

    /// Read one version of the object `key` (needs `s3:GetObjectVersion`).
    pub fn open_version(&self, key: &str, version_id: &str) -> io::Result<Box<dyn Read + Send>> {
        let error = match self.backend.reader_of_version(key, Some(version_id)) {
            Ok(reader) => return Ok(Box::new(reader)),
            Err(error) => to_io(error),
        };
        // A server that does not take `versionId=null`: when the bucket keeps
        // no other version of the key, the object written without one is the
        // current object.
        if version_id == "null" && error.kind() != io::ErrorKind::PermissionDenied {
            let others = self.versions(key)?;
            if others.iter().all(|version| version.version_id == "null") {
                return self.open(key);
            }
        }
        Err(error)
    }

    /// Like [`Bucket::list_children`], but also the names whose every key
    /// is hidden under a delete marker (needs `s3:ListBucketVersions`).
    pub fn list_children_of_all_versions(&self, dir: &str) -> io::Result<Vec<String>> {
        let prefix = match dir.is_empty() {
            true => String::new(),
            false => format!("{}/", dir.trim_end_matches('/')),
        };
        Ok(self.backend.list_versions(&prefix, Some('/')).map_err(to_io)?.children)
    }
}
