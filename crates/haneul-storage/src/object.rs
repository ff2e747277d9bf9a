//! Instance files in an S3-compatible bucket (AWS S3, Ceph RGW, MinIO,
//! Garage, SeaweedFS), through the `object_store` crate.
//!
//! A blob is first written to a local staging file, so that its header is
//! parsed and coercion rules applied exactly as on local disk. Finishing it
//! uploads the file (one conditional PUT, or a multipart upload above
//! [`PART_SIZE`]) and deletes the staging file: the bucket's acknowledgement
//! is the durability point. Every request carries a SHA-256 checksum of its
//! body, which the server checks before it acknowledges.
//!
//! The client is asynchronous while the blob store is called from blocking
//! threads (ingest, recovery, verify, the CLI tools), so it runs on a small
//! runtime of its own and callers wait on a channel, from any thread.

use std::future::Future;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, Checksum};
use object_store::path::Path as Key;
use object_store::{
    BackoffConfig, GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
    WriteMultipart,
};
use tokio::io::AsyncReadExt;

use crate::versions::{bucket_url, client_options, VersionLister, VersionListing};
use crate::{Digest, Result, StorageError};

/// Files above this size go up as a multipart upload, in parts of this size.
pub const PART_SIZE: usize = 8 << 20;
/// Parts of one upload sent at once.
const PARTS_IN_FLIGHT: usize = 4;
/// Chunks of a download buffered between the client and the reading thread.
const CHUNKS_AHEAD: usize = 8;

/// Where the bucket is and how to sign in.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    /// URL of an S3-compatible server; `None` for AWS (by region).
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    /// Prefix of every key ("" for none), so that several archives can share a bucket.
    pub prefix: String,
    /// Static credentials; without them the usual AWS sources are used
    /// (`AWS_*` environment variables, web identity, instance metadata).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// A bucket (and key prefix) holding blobs.
pub(crate) struct ObjectBackend {
    store: Arc<AmazonS3>,
    /// Where it is, for messages.
    location: String,
    prefix: String,
    /// Lists the versions a versioned bucket keeps (backups read the version they wrote).
    versions: Arc<VersionLister>,
    /// Taken out only when dropped, to shut down without blocking.
    runtime: Option<tokio::runtime::Runtime>,
}

impl ObjectBackend {
    /// Connect and check that the bucket answers with these credentials.
    pub(crate) fn connect(options: &S3Options) -> Result<ObjectBackend> {
        let location = match &options.endpoint {
            Some(endpoint) => format!("s3 bucket {} at {endpoint}", options.bucket),
            None => format!("s3 bucket {} in {}", options.bucket, options.region),
        };
        let setup = |detail: String| StorageError::ObjectSetup(format!("{location}: {detail}"));
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&options.bucket)
            .with_region(&options.region)
            .with_checksum_algorithm(Checksum::SHA256)
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 5,
                // A store waits at most this long for the bucket before it is refused.
                retry_timeout: std::time::Duration::from_secs(30),
            });
        if let Some(endpoint) = &options.endpoint {
            // S3-compatible servers are addressed by path, and may be plain HTTP on a private network.
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let (Some(key_id), Some(secret)) = (&options.access_key_id, &options.secret_access_key) {
            builder = builder.with_access_key_id(key_id).with_secret_access_key(secret);
        }
        // The endpoint the client will use, wherever it came from (options or environment).
        // (as the client picks it: the S3-specific endpoint first).
        let endpoint = builder
            .get_config_value(&AmazonS3ConfigKey::S3Endpoint)
            .or_else(|| builder.get_config_value(&AmazonS3ConfigKey::Endpoint));
        let virtual_hosted = builder
            .get_config_value(&AmazonS3ConfigKey::VirtualHostedStyleRequest)
            .is_some_and(|value| matches!(value.to_ascii_lowercase().as_str(), "1" | "true" | "on" | "yes" | "y"));
        let http_options = client_options(|key| builder.get_config_value(&AmazonS3ConfigKey::Client(key)));
        let store = Arc::new(builder.build().map_err(|error| setup(error.to_string()))?);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("haneul-s3")
            .enable_all()
            .build()
            .map_err(|error| setup(format!("cannot start its client: {error}")))?;
        let prefix = options.prefix.trim_matches('/').to_string();
        if !prefix.is_empty() {
            Key::parse(&prefix).map_err(|error| setup(format!("invalid key prefix {prefix:?}: {error}")))?;
        }
        let versions = {
            // The HTTP client registers with the runtime it is made in.
            let _entered = runtime.enter();
            let url = bucket_url(endpoint.as_deref(), virtual_hosted, &options.bucket, &options.region);
            Arc::new(VersionLister::new(Arc::clone(&store), url, http_options, &options.region, &prefix)?)
        };
        let backend = ObjectBackend { store, location: location.clone(), prefix, versions, runtime: Some(runtime) };
        backend.probe().map_err(|error| setup(format!("does not answer as expected: {error}")))?;
        Ok(backend)
    }

    /// Ask for one page of keys under the prefix: fails on wrong credentials
    /// or a missing bucket, and stays one request however full the bucket is.
    fn probe(&self) -> Result<()> {
        let prefix = (!self.prefix.is_empty()).then(|| self.key("")).transpose()?;
        let store = Arc::clone(&self.store);
        let object_error = self.object_error("");
        self.wait(async move {
            match store.list(prefix.as_ref()).next().await {
                Some(Err(error)) => Err(object_error(error)),
                Some(Ok(_)) | None => Ok(()),
            }
        })
    }

    /// Where the bucket is, for messages.
    pub(crate) fn location(&self) -> &str {
        &self.location
    }

    fn key(&self, rel_path: &str) -> Result<Key> {
        let full = match (self.prefix.is_empty(), rel_path.is_empty()) {
            (true, _) => rel_path.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{rel_path}", self.prefix),
        };
        Key::parse(&full).map_err(|_| StorageError::InvalidPath(rel_path.to_string()))
    }

    /// The blob path of a key under the prefix.
    fn rel_path_of(&self, key: &Key) -> String {
        let key = key.as_ref();
        match self.prefix.is_empty() {
            true => key.to_string(),
            false => key.strip_prefix(&self.prefix).unwrap_or(key).trim_start_matches('/').to_string(),
        }
    }

    fn object_error(&self, rel_path: &str) -> impl Fn(object_store::Error) -> StorageError + Send + 'static {
        let key = self.key(rel_path).map(|key| key.to_string()).unwrap_or_else(|_| rel_path.to_string());
        move |source| StorageError::Object { key: key.clone(), source: Box::new(source) }
    }

    /// Run `future` on the client's runtime and wait for it (callable from any thread).
    fn wait<T: Send + 'static>(&self, future: impl Future<Output = Result<T>> + Send + 'static) -> Result<T> {
        let Some(runtime) = &self.runtime else {
            return Err(StorageError::ObjectSetup(format!("{}: client stopped", self.location)));
        };
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            let _ = sender.send(future.await);
        });
        receiver
            .recv()
            .unwrap_or_else(|_| Err(StorageError::ObjectSetup(format!("{}: request abandoned", self.location))))
    }

    /// Upload the finished file at `staged` as `rel_path`; returns once the
    /// bucket has acknowledged it. A key already present (a retried request
    /// whose first attempt had landed) is accepted only with the same digest.
    pub(crate) fn upload(&self, staged: &FsPath, rel_path: &str, size: u64, digest: Digest) -> Result<()> {
        let key = self.key(rel_path)?;
        let store = Arc::clone(&self.store);
        let staged = staged.to_path_buf();
        let object_error = self.object_error(rel_path);
        let result = self.wait(async move {
            let read_error = |error| StorageError::io(&staged, error);
            if size <= PART_SIZE as u64 {
                let bytes = tokio::fs::read(&staged).await.map_err(read_error)?;
                let options = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
                store.put_opts(&key, PutPayload::from(bytes), options).await.map_err(&object_error)?;
                return Ok(());
            }
            let mut file = tokio::fs::File::open(&staged).await.map_err(read_error)?;
            let upload = store.put_multipart(&key).await.map_err(&object_error)?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            let mut buffer = vec![0u8; 1 << 20];
            loop {
                let read = match file.read(&mut buffer).await {
                    Ok(read) => read,
                    Err(error) => {
                        let _ = writer.abort().await;
                        return Err(read_error(error));
                    }
                };
                if read == 0 {
                    break;
                }
                if let Err(error) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                    let _ = writer.abort().await;
                    return Err(object_error(error));
                }
                writer.write(&buffer[..read]);
            }
            writer.finish().await.map_err(&object_error)?;
            Ok(())
        });
        match result {
            Err(StorageError::Object { source, .. })
                if matches!(*source, object_store::Error::AlreadyExists { .. }) =>
            {
                let (present_size, present_digest) = self.digest(rel_path)?;
                if (present_size, present_digest) == (size, digest) {
                    return Ok(());
                }
                Err(StorageError::Object { key: self.key(rel_path)?.to_string(), source })
            }
            other => other,
        }
    }

    /// The object's bytes (of `version`, else the current one), chunk by chunk as they arrive.
    fn chunks(&self, rel_path: &str, version: Option<&str>) -> Result<tokio::sync::mpsc::Receiver<Result<Bytes>>> {
        let key = self.key(rel_path)?;
        let store = Arc::clone(&self.store);
        let object_error = self.object_error(rel_path);
        let (sender, receiver) = tokio::sync::mpsc::channel(CHUNKS_AHEAD);
        let Some(runtime) = &self.runtime else {
            return Err(StorageError::ObjectSetup(format!("{}: client stopped", self.location)));
        };
        // Passed as it is, `null` included (what was written before the bucket had versioning).
        let options = GetOptions { version: version.map(str::to_string), ..Default::default() };
        runtime.spawn(async move {
            let mut stream = match store.get_opts(&key, options).await {
                Ok(found) => found.into_stream(),
                Err(error) => {
                    let _ = sender.send(Err(object_error(error))).await;
                    return;
                }
            };
            while let Some(chunk) = stream.next().await {
                let failed = chunk.is_err();
                if sender.send(chunk.map_err(&object_error)).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(receiver)
    }

    /// Feed the object's bytes to `consume` (blocking).
    fn read_into(&self, rel_path: &str, consume: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<u64> {
        let mut receiver = self.chunks(rel_path, None)?;
        let mut size = 0u64;
        while let Some(chunk) = receiver.blocking_recv() {
            let chunk = chunk?;
            consume(&chunk)?;
            size += chunk.len() as u64;
        }
        Ok(size)
    }

    /// The object's size, or `None` when there is none under `rel_path`.
    pub(crate) fn size(&self, rel_path: &str) -> Result<Option<u64>> {
        let key = self.key(rel_path)?;
        let store = Arc::clone(&self.store);
        let object_error = self.object_error(rel_path);
        self.wait(async move {
            match store.head(&key).await {
                Ok(meta) => Ok(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(error) => Err(object_error(error)),
            }
        })
    }

    /// A blocking reader of the object. Waits for its first chunk, so a
    /// missing object is an error here rather than on the first read.
    pub(crate) fn reader(&self, rel_path: &str) -> Result<ObjectReader> {
        self.reader_of_version(rel_path, None)
    }

    /// A blocking reader of one version of the object (`None`: the current one).
    pub(crate) fn reader_of_version(&self, rel_path: &str, version: Option<&str>) -> Result<ObjectReader> {
        let mut chunks = self.chunks(rel_path, version)?;
        let first = match chunks.blocking_recv() {
            Some(chunk) => chunk?,
            None => Bytes::new(),
        };
        Ok(ObjectReader { chunks, current: first })
    }

    /// Size and BLAKE3 digest of a stored object, read back from the bucket.
    pub(crate) fn digest(&self, rel_path: &str) -> Result<(u64, Digest)> {
        let mut hasher = blake3::Hasher::new();
        let size = self.read_into(rel_path, &mut |chunk| {
            hasher.update(chunk);
            Ok(())
        })?;
        Ok((size, Digest(*hasher.finalize().as_bytes())))
    }

    /// Download an object into `file` (an unnamed temporary file) and rewind it.
    pub(crate) fn download(&self, rel_path: &str, mut file: std::fs::File, scratch: &FsPath) -> Result<std::fs::File> {
        let write_error = |error| StorageError::io(scratch, error);
        {
            let mut output = std::io::BufWriter::with_capacity(256 * 1024, &mut file);
            self.read_into(rel_path, &mut |chunk| output.write_all(chunk).map_err(write_error))?;
            output.flush().map_err(write_error)?;
        }
        file.seek(SeekFrom::Start(0)).map_err(write_error)?;
        Ok(file)
    }

    /// Delete an object; a missing one is not an error.
    pub(crate) fn delete(&self, rel_path: &str) -> Result<()> {
        let key = self.key(rel_path)?;
        let store = Arc::clone(&self.store);
        let object_error = self.object_error(rel_path);
        self.wait(async move {
            match store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(error) => Err(object_error(error)),
            }
        })
    }

    /// Names of the "directories" (common prefixes) right under `rel_dir`.
    pub(crate) fn list_children(&self, rel_dir: &str) -> Result<Vec<String>> {
        let listing = self.list(rel_dir)?;
        let mut names: Vec<String> =
            listing.common_prefixes.iter().filter_map(|prefix| prefix.filename().map(str::to_string)).collect();
        names.sort();
        Ok(names)
    }

    /// Blob paths of the objects right under `rel_dir`.
    pub(crate) fn list_files(&self, rel_dir: &str) -> Result<Vec<String>> {
        let listing = self.list(rel_dir)?;
        let inside = format!("{rel_dir}/");
        // Some servers (SeaweedFS) list an emptied "directory" as an object of its own name.
        let mut paths: Vec<String> = listing
            .objects
            .iter()
            .map(|object| self.rel_path_of(&object.location))
            .filter(|path| path.strip_prefix(&inside).is_some_and(|name| !name.is_empty()))
            .collect();
        paths.sort();
        Ok(paths)
    }

    /// Every version the bucket keeps under `rel_prefix` (see [`VersionLister`]).
    pub(crate) fn list_versions(&self, rel_prefix: &str, delimiter: Option<char>) -> Result<VersionListing> {
        let lister = Arc::clone(&self.versions);
        let rel_prefix = rel_prefix.to_string();
        self.wait(async move { lister.list(&rel_prefix, delimiter).await })
    }

    fn list(&self, rel_dir: &str) -> Result<object_store::ListResult> {
        let prefix = match rel_dir.is_empty() && self.prefix.is_empty() {
            true => None,
            false => Some(self.key(rel_dir)?),
        };
        let store = Arc::clone(&self.store);
        let object_error = self.object_error(rel_dir);
        self.wait(async move { store.list_with_delimiter(prefix.as_ref()).await.map_err(object_error) })
    }
}

/// An object's bytes as a blocking [`std::io::Read`]; not for async threads.
pub(crate) struct ObjectReader {
    chunks: tokio::sync::mpsc::Receiver<Result<Bytes>>,
    /// What is left of the chunk being read.
    current: Bytes,
}

impl std::io::Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(error)) => return Err(std::io::Error::other(error.to_string())),
                None => return Ok(0),
            }
        }
        let count = buf.len().min(self.current.len());
        buf[..count].copy_from_slice(&self.current.split_to(count));
        Ok(count)
    }
}

impl Drop for ObjectBackend {
    fn drop(&mut self) {
        // Dropping a runtime waits for its threads, which is not allowed on an async thread.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A staging directory's path for a blob name.
pub(crate) fn staging_path(staging: &FsPath, rel_path: &str) -> PathBuf {
    staging.join(rel_path.rsplit('/').next().unwrap_or(rel_path))
}
