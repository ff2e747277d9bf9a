//! The blob store on a real S3-compatible server (SeaweedFS, started by
//! scripts/test.sh; see `haneul_storage::testing`).

use std::io::Read;

use haneul_storage::testing::TestBucket;
use haneul_storage::{BlobBackend, BlobConfig, BlobStore, S3Options, StorageError, PART_SIZE};

fn open(options: &S3Options, node: Option<&str>, staging: &std::path::Path) -> Result<BlobStore, StorageError> {
    let config =
        BlobConfig { backend: BlobBackend::S3(options.clone()), node: node.map(str::to_string), read_cache_bytes: 0 };
    BlobStore::open_configured(staging.join("unused-local"), staging.to_path_buf(), &config, true)
}

fn write_blob(store: &BlobStore, content: &[u8]) -> haneul_storage::WrittenBlob {
    let mut writer = store.create().expect("create");
    for chunk in content.chunks(300_000) {
        writer.write_all(chunk).expect("write");
    }
    writer.finish().expect("upload")
}

fn read_back(store: &BlobStore, rel_path: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    store.open_blob(rel_path).expect("open").read_to_end(&mut bytes).expect("read");
    bytes
}

/// Bytes that differ at every offset, so a misplaced part would show.
fn patterned(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) ^ (i >> 11)) as u8).collect()
}

#[test]
fn a_blob_is_uploaded_read_back_listed_and_deleted() {
    let bucket = TestBucket::create();
    let staging = tempfile::tempdir().expect("tempdir");
    let store = open(&bucket.options, Some("node-a"), staging.path()).expect("open");
    let content = patterned(700_000);
    let blob = write_blob(&store, &content);
    assert!(blob.rel_path.starts_with("node-a/"), "{}", blob.rel_path);
    assert_eq!(blob.size, content.len() as u64);
    assert_eq!(blob.digest.0, *blake3::hash(&content).as_bytes());
    assert_eq!(std::fs::read_dir(staging.path()).expect("staging").count(), 0, "staging file removed after upload");

    assert_eq!(read_back(&store, &blob.rel_path), content);
    assert_eq!(store.digest_of(&blob.rel_path).expect("digest"), (blob.size, blob.digest));
    let shard = store.current_shard();
    assert_eq!(store.shards_since("0000").expect("shards"), vec![shard.clone()]);
    assert_eq!(store.shards_since(&shard).expect("shards"), vec![shard.clone()]);
    assert!(store.shards_since("9999").expect("shards").is_empty());
    assert_eq!(store.files_in_shard(&shard).expect("files"), vec![blob.rel_path.clone()]);

    store.delete(&blob.rel_path).expect("delete");
    let missing = store.digest_of(&blob.rel_path).expect_err("deleted");
    assert!(missing.is_not_found(), "{missing}");
    assert!(store.open_blob(&blob.rel_path).expect_err("deleted").is_not_found());
    store.delete(&blob.rel_path).expect("deleting a missing object is not an error");
    let left = store.files_in_shard(&shard).expect("files");
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_large_blob_goes_up_in_parts_and_comes_back_whole() {
    let bucket = TestBucket::create();
    let staging = tempfile::tempdir().expect("tempdir");
    let store = open(&bucket.options, None, staging.path()).expect("open");
    let content = patterned(2 * PART_SIZE + 123_457);
    let blob = write_blob(&store, &content);
    assert_eq!(store.digest_of(&blob.rel_path).expect("digest"), (blob.size, blob.digest));
    assert!(read_back(&store, &blob.rel_path) == content, "multipart upload reassembled in order");
}

#[test]
fn a_blob_being_uploaded_is_read_from_its_staging_file() {
    let bucket = TestBucket::create();
    let staging = tempfile::tempdir().expect("tempdir");
    let store = open(&bucket.options, Some("n"), staging.path()).expect("open");
    let mut writer = store.create().expect("create");
    writer.write_all(b"on its way").expect("write");
    writer.flush().expect("flush");
    let rel_path = writer.rel_path().to_string();
    assert!(store.digest_of(&rel_path).expect_err("not uploaded yet").is_not_found());
    assert_eq!(read_back(&store, &rel_path), b"on its way", "read before the bucket has it");
    let blob = writer.finish().expect("upload");
    assert_eq!(read_back(&store, &blob.rel_path), b"on its way", "and from the bucket after");
}

#[test]
fn an_abandoned_blob_leaves_nothing_behind() {
    let bucket = TestBucket::create();
    let staging = tempfile::tempdir().expect("tempdir");
    let store = open(&bucket.options, None, staging.path()).expect("open");
    let mut writer = store.create().expect("create");
    writer.write_all(b"never acknowledged").expect("write");
    let rel_path = writer.rel_path().to_string();
    drop(writer);
    assert_eq!(std::fs::read_dir(staging.path()).expect("staging").count(), 0);
    assert!(store.digest_of(&rel_path).expect_err("never uploaded").is_not_found());
    assert!(!store.has_inflight());
}

#[test]
fn nodes_sharing_a_bucket_read_each_other_but_list_only_their_own() {
    let bucket = TestBucket::create();
    let (staging_a, staging_b) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let a = open(&bucket.options, Some("a"), staging_a.path()).expect("open a");
    let b = open(&bucket.options, Some("b"), staging_b.path()).expect("open b");
    let from_a = write_blob(&a, b"written by a");
    let from_b = write_blob(&b, b"written by b");
    assert_eq!(read_back(&b, &from_a.rel_path), b"written by a", "any node reads any blob");
    assert_eq!(read_back(&a, &from_b.rel_path), b"written by b");
    assert!(a.owns(&from_a.rel_path) && !a.owns(&from_b.rel_path));
    assert!(a.is_shared());
    let shards_a = a.shards_since("0000").expect("shards");
    assert_eq!(shards_a, vec![a.current_shard()]);
    assert_eq!(a.files_in_shard(&shards_a[0]).expect("files"), vec![from_a.rel_path.clone()]);
}

#[test]
fn staging_leftovers_of_a_crash_are_discarded() {
    let bucket = TestBucket::create();
    let staging = tempfile::tempdir().expect("tempdir");
    std::fs::write(staging.path().join("leftover.dcm"), b"partial").expect("leftover");
    let store = open(&bucket.options, None, staging.path()).expect("open");
    assert_eq!(std::fs::read_dir(staging.path()).expect("staging").count(), 1, "opening alone keeps them");
    assert_eq!(store.discard_staged().expect("discard"), 1);
    assert_eq!(std::fs::read_dir(staging.path()).expect("staging").count(), 0);
}

#[test]
fn wrong_credentials_and_unknown_buckets_are_refused_at_open() {
    let bucket = TestBucket::create();
    let staging = tempfile::tempdir().expect("tempdir");
    let wrong_secret = S3Options { secret_access_key: Some("not-the-secret".into()), ..bucket.options.clone() };
    let error = open(&wrong_secret, None, staging.path()).err().expect("wrong secret refused");
    assert!(error.to_string().contains(&format!("s3 bucket {}", bucket.options.bucket)), "{error}");
    let no_bucket = S3Options { bucket: "no-such-bucket-here".into(), ..bucket.options.clone() };
    let error = open(&no_bucket, None, staging.path()).err().expect("unknown bucket refused");
    assert!(error.to_string().contains("no-such-bucket-here"), "{error}");
    let bad_node = BlobConfig {
        backend: BlobBackend::S3(bucket.options.clone()),
        node: Some("../up".into()),
        read_cache_bytes: 0,
    };
    let error = BlobStore::open_configured(staging.path().join("l"), staging.path().join("s"), &bad_node, true)
        .err()
        .expect("bad node name refused");
    assert!(matches!(error, StorageError::InvalidNode(_)), "{error}");
}

/// Objects read again come from the read cache on local disk, whose copies
/// stay within its bound (least recently read first out); a deleted object
/// is not served from it, and one larger than the whole cache is not kept.
#[test]
fn objects_read_again_come_from_the_read_cache_within_its_bound() {
    let bucket = TestBucket::create();
    let staging = tempfile::tempdir().expect("tempdir");
    let store = open(&bucket.options, Some("node-c"), staging.path()).expect("open");
    let cache_dir = staging.path().join("cache");
    store.enable_read_cache(cache_dir.clone(), 250_000).expect("cache");
    let contents: Vec<Vec<u8>> = (0..3).map(|i| patterned(100_000 + i)).collect();
    let blobs: Vec<_> = contents.iter().map(|content| write_blob(&store, content)).collect();
    let counts = |store: &BlobStore| {
        let stats = store.read_cache_stats();
        (stats.hits, stats.misses)
    };

    assert_eq!(read_back(&store, &blobs[0].rel_path), contents[0]);
    assert_eq!(counts(&store), (0, 1), "the first read downloads");
    assert_eq!(read_back(&store, &blobs[0].rel_path), contents[0]);
    assert_eq!(counts(&store), (1, 1), "the second is a copy");

    // A third object of 100 kB pushes the least recently read one out.
    assert_eq!(read_back(&store, &blobs[1].rel_path), contents[1]);
    assert_eq!(read_back(&store, &blobs[2].rel_path), contents[2]);
    assert_eq!(read_back(&store, &blobs[2].rel_path), contents[2]);
    assert_eq!(counts(&store), (2, 3));
    assert_eq!(read_back(&store, &blobs[0].rel_path), contents[0]);
    assert_eq!(counts(&store), (2, 4), "the first object had been evicted");
    let on_disk: u64 = std::fs::read_dir(&cache_dir)
        .expect("cache directory")
        .map(|entry| entry.expect("entry").metadata().expect("metadata").len())
        .sum();
    assert!(on_disk <= 250_000, "{on_disk} bytes of copies");
    assert_eq!(store.read_cache_stats().bytes, on_disk);

    store.delete(&blobs[2].rel_path).expect("delete");
    assert!(store.open_blob(&blobs[2].rel_path).expect_err("deleted").is_not_found());

    let large = patterned(300_000);
    let blob = write_blob(&store, &large);
    assert_eq!(read_back(&store, &blob.rel_path), large);
    assert!(store.read_cache_stats().bytes <= 250_000, "larger than the cache: read, not kept");
}
