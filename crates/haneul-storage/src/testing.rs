//! Fresh key prefixes in a real S3-compatible bucket for tests, named by
//! the `HANEUL_TEST_S3` environment variable as
//! `http://ACCESS_KEY:SECRET@HOST:PORT/BUCKET` (`scripts/test.sh` starts a
//! SeaweedFS server, creates the bucket and sets it).

use std::sync::atomic::{AtomicU32, Ordering};

use crate::S3Options;

/// The environment variable naming the test bucket.
pub const BUCKET_VARIABLE: &str = "HANEUL_TEST_S3";

/// Where a test keeps its objects: the bucket, under a prefix of its own.
pub struct TestBucket {
    pub options: S3Options,
    /// The secret key, in a file, as `storage.s3.secret_access_key_file` names one.
    pub secret_file: std::path::PathBuf,
}

impl TestBucket {
    /// A prefix no other test (or run) uses.
    pub fn create() -> TestBucket {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let url = std::env::var(BUCKET_VARIABLE).unwrap_or_else(|_| {
            panic!(
                "{BUCKET_VARIABLE} is not set: these tests need an S3-compatible server \
                 (scripts/test.sh starts one and sets it, e.g. http://key:secret@127.0.0.1:8333/haneul-test)"
            )
        });
        let mut options = parse(&url)
            .unwrap_or_else(|| panic!("{BUCKET_VARIABLE}: expected {url:?} as http://key:secret@host:port/bucket"));
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        options.prefix = format!("test-{}-{nanos}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let secret_file = std::env::temp_dir().join(format!("{}.secret", options.prefix));
        std::fs::write(&secret_file, options.secret_access_key.as_deref().unwrap_or_default())
            .expect("write the secret file");
        TestBucket { options, secret_file }
    }

    /// The server's URL, as `storage.s3.endpoint` names it.
    pub fn endpoint(&self) -> &str {
        self.options.endpoint.as_deref().unwrap_or_default()
    }
}

impl Drop for TestBucket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.secret_file);
    }
}

fn parse(url: &str) -> Option<S3Options> {
    let (scheme, rest) = url.split_once("://")?;
    let (credentials, rest) = rest.rsplit_once('@')?;
    let (access_key, secret) = credentials.split_once(':')?;
    let (host, bucket) = rest.split_once('/')?;
    Some(S3Options {
        endpoint: Some(format!("{scheme}://{host}")),
        region: "us-east-1".into(),
        bucket: bucket.trim_end_matches('/').to_string(),
        prefix: String::new(),
        access_key_id: Some(access_key.to_string()),
        secret_access_key: Some(secret.to_string()),
    })
}
