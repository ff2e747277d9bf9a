//! Backups and restores of a small archive made with the real catalog and
//! blob store.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use haneul_catalog::{
    BlobInfo, CommitBatch, DuplicatePolicy, InstanceFacts, NewInstance, Origin, PatientFacts, SeriesFacts,
    SqliteCatalog, StudyFacts,
};

use super::*;

struct Archive {
    dir: tempfile::TempDir,
    catalog: SqliteCatalog,
    blobs: BlobStore,
}

impl Archive {
    fn new() -> Archive {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = SqliteCatalog::open(dir.path().join("catalog.sqlite")).expect("catalog");
        let blobs = BlobStore::open(dir.path().join("blobs"), false).expect("blob store");
        Archive { dir, catalog, blobs }
    }

    /// Store `content` as instance `sop` (a new version of it under `Replace`).
    fn store(&self, sop: &str, content: &[u8]) -> String {
        self.store_with(sop, content, DuplicatePolicy::Replace)
    }

    fn store_with(&self, sop: &str, content: &[u8], policy: DuplicatePolicy) -> String {
        let mut writer = self.blobs.create().expect("create blob");
        writer.write_all(content).expect("write blob");
        let written = writer.finish().expect("finish blob");
        let instance = NewInstance {
            patient: PatientFacts { patient_id: "P1".into(), ..PatientFacts::default() },
            study: StudyFacts { study_uid: "1.2.3".into(), ..StudyFacts::default() },
            series: SeriesFacts { series_uid: "1.2.3.4".into(), modality: "CT".into(), ..SeriesFacts::default() },
            instance: InstanceFacts {
                sop_uid: sop.into(),
                sop_class: "1.2.840.10008.5.1.4.1.1.7".into(),
                instance_number: None,
                transfer_syntax: "1.2.840.10008.1.2.1".into(),
                dataset_offset: 0,
                blob: BlobInfo { path: written.rel_path.clone(), size: written.size, digest: written.digest.0 },
                content_digest: None,
                received_ms: 0,
                attrs: Default::default(),
                blob_durable: true,
                write_ahead: None,
            },
            origin: Origin::default(),
            duplicate_policy: None,
        };
        let batch = CommitBatch { instances: &[instance], policy, events: &[], settled: &[], scan_from: None };
        self.catalog.commit(&batch).expect("commit");
        written.rel_path
    }

    fn backup(&self, target: &dyn Target) -> Result<BackupReport> {
        let source = Source { catalog: &self.catalog, blobs: &self.blobs, audit_dir: None, signing_key: None };
        let scratch = tempfile::tempdir().expect("scratch");
        backup(&source, target, scratch.path(), &mut |_, _| {})
    }
}

fn layout(dir: &Path) -> Layout {
    Layout {
        data_dir: dir.to_path_buf(),
        catalog_file: "catalog.sqlite".into(),
        blob_dir: "blobs".into(),
        audit_dir: "audit".into(),
    }
}

/// An empty backup directory and the target on it.
fn dir_target() -> (tempfile::TempDir, DirTarget) {
    let backup_dir = tempfile::tempdir().expect("tempdir");
    let target = DirTarget::open(backup_dir.path()).expect("target");
    (backup_dir, target)
}

/// An archive holding one instance, with an empty audit trail directory.
fn archive_with_trail_dir() -> (Archive, PathBuf) {
    let archive = Archive::new();
    archive.store("1.1", b"an instance");
    let audit_dir = archive.dir.path().join("audit");
    fs::create_dir(&audit_dir).expect("audit dir");
    (archive, audit_dir)
}

fn object_path(target: &DirTarget, content: &[u8]) -> PathBuf {
    target.path_of(&object_key(&to_hex(blake3::hash(content).as_bytes()))).expect("object path")
}

#[test]
fn backup_and_restore_give_the_same_blobs_and_catalog_references() {
    let archive = Archive::new();
    let first = archive.store("1.1", b"first instance");
    let old = archive.store("1.2", b"second instance, old version");
    let new = archive.store("1.2", b"second instance, new version");
    archive.store("1.3", b"first instance"); // same bytes as 1.1: one object
    let conflict = archive.store_with("1.3", b"a peer's other version", DuplicatePolicy::KeepBoth);
    let (_backup_dir, target) = dir_target();
    let report = archive.backup(&target).expect("backup");
    assert_eq!(report.objects_written, 4);
    assert_eq!(report.objects_present, 0);
    let counts = &report.counts;
    assert_eq!((counts.instances, counts.superseded, counts.conflicts, counts.blobs), (3, 1, 1, 5));

    let manifest = choose_snapshot(&target, None, None).expect("a snapshot").manifest;
    assert_eq!(manifest.snapshot, report.snapshot);
    let kinds: Vec<&str> = manifest.blobs.iter().map(|entry| entry.kind.as_str()).collect();
    assert_eq!(kinds.iter().filter(|kind| **kind == "superseded").count(), 1);
    assert_eq!(kinds.iter().filter(|kind| **kind == "conflict").count(), 1);
    let restored = tempfile::tempdir().expect("tempdir");
    let data_dir = restored.path().join("data");
    let restore_report = restore(&target, &manifest, &layout(&data_dir), &mut |_, _| {}).expect("restore");
    assert_eq!(restore_report.blobs_restored, 5);
    for path in [&first, &old, &new, &conflict] {
        assert_eq!(
            fs::read(data_dir.join("blobs").join(path)).expect("restored blob"),
            fs::read(archive.blobs.path_of(path).expect("path")).expect("original blob"),
            "{path}"
        );
    }
    let restored_catalog = CatalogSnapshot::open(&data_dir.join("catalog.sqlite")).expect("restored catalog");
    let original = CatalogSnapshot::open(&archive.dir.path().join("catalog.sqlite")).expect("original catalog");
    assert_eq!(restored_catalog.blobs().expect("blobs"), original.blobs().expect("blobs"));
    assert_eq!(restored_catalog.counts().expect("counts"), original.counts().expect("counts"));
}

#[test]
fn second_backup_writes_only_new_objects_and_leaves_old_ones_untouched() {
    let archive = Archive::new();
    archive.store("1.1", b"one");
    let (_backup_dir, target) = dir_target();
    let first = archive.backup(&target).expect("first backup");
    let object = object_path(&target, b"one");
    let before = fs::metadata(&object).expect("object");
    archive.store("1.2", b"two");
    let second = archive.backup(&target).expect("second backup");
    assert_ne!(first.snapshot, second.snapshot, "each run is its own snapshot");
    assert_eq!((second.objects_written, second.objects_present), (1, 1));
    let after = fs::metadata(&object).expect("object");
    assert_eq!(
        (before.ino(), before.mtime_nsec(), before.ctime_nsec()),
        (after.ino(), after.mtime_nsec(), after.ctime_nsec())
    );

    // Point in time: the first snapshot holds only the first instance.
    let at_first = choose_snapshot(&target, Some(&first.snapshot), None).expect("first snapshot").manifest;
    assert_eq!(at_first.counts.instances, 1);
    assert_eq!(choose_snapshot(&target, None, None).expect("newest").manifest.counts.instances, 2);
    assert!(matches!(
        choose_snapshot(&target, Some("2000-01-01T00:00:00Z"), None),
        Err(BackupError::NoSnapshot { .. })
    ));
}

#[test]
fn an_object_that_differs_is_refused_and_stays_as_it_is() {
    let archive = Archive::new();
    archive.store("1.1", b"original bytes");
    let (_backup_dir, target) = dir_target();
    archive.backup(&target).expect("first backup");
    let object = object_path(&target, b"original bytes");
    fs::set_permissions(&object, fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::write(&object, b"tampered").expect("tamper");
    let snapshots_before = target.list("snapshots/").expect("list");

    let error = archive.backup(&target).expect_err("a differing object must fail the run");
    let BackupError::Problems(problems) = &error else { panic!("unexpected error {error}") };
    assert_eq!(problems, &[BackupProblem::ObjectDiffers { object: object.display().to_string() }]);
    assert!(error.to_string().contains("refusing to overwrite"), "{error}");
    assert_eq!(fs::read(&object).expect("object"), b"tampered", "never overwritten");
    let complete: Vec<_> = list_snapshots(&target, None)
        .expect("list")
        .into_iter()
        .filter(|listing| matches!(listing.state, SnapshotState::Complete(_)))
        .map(|listing| listing.name)
        .collect();
    assert_eq!(complete, snapshots_before, "the failed run left no complete snapshot");
}

#[test]
fn an_archive_file_that_fails_its_digest_is_not_backed_up() {
    let archive = Archive::new();
    let path = archive.store("1.1", b"good bytes");
    fs::write(archive.blobs.path_of(&path).expect("path"), b"rotten byte").expect("corrupt");
    let (_backup_dir, target) = dir_target();
    let error = archive.backup(&target).expect_err("a corrupt archive file must fail the run");
    let BackupError::Problems(problems) = &error else { panic!("unexpected error {error}") };
    assert_eq!(problems, &[BackupProblem::SourceMismatch { path }]);
    assert!(target
        .list("objects/")
        .expect("list")
        .iter()
        .all(|dir| target.list(&format!("objects/{dir}/")).expect("list").is_empty()));
    assert!(matches!(choose_snapshot(&target, None, None), Err(BackupError::NoSnapshot { .. })));
}

#[test]
fn restore_refuses_a_non_empty_directory_and_reports_every_bad_object() {
    let archive = Archive::new();
    let kept = archive.store("1.1", b"kept");
    let lost = archive.store("1.2", b"lost");
    let damaged = archive.store("1.3", b"damaged");
    let (_backup_dir, target) = dir_target();
    archive.backup(&target).expect("backup");
    let manifest = choose_snapshot(&target, None, None).expect("snapshot").manifest;

    let busy = tempfile::tempdir().expect("tempdir");
    fs::write(busy.path().join("something"), b"x").expect("file");
    let error = restore(&target, &manifest, &layout(busy.path()), &mut |_, _| {}).expect_err("non-empty");
    assert!(matches!(error, BackupError::DataDirNotEmpty(_)), "{error}");

    let lost_object = object_path(&target, b"lost");
    let damaged_object = object_path(&target, b"damaged");
    fs::remove_file(&lost_object).expect("remove");
    fs::set_permissions(&damaged_object, fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::write(&damaged_object, b"DAMAGED").expect("damage");
    let into = tempfile::tempdir().expect("tempdir");
    let error = restore(&target, &manifest, &layout(into.path()), &mut |_, _| {}).expect_err("incomplete");
    let BackupError::Incomplete { problems, .. } = error else { panic!("unexpected error {error}") };
    assert_eq!(
        problems.into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([
            RestoreProblem::Missing { object: lost_object.display().to_string(), path: lost },
            RestoreProblem::Damaged { object: damaged_object.display().to_string(), path: damaged.clone() },
        ])
    );
    assert!(!into.path().join("catalog.sqlite").exists(), "no catalog after a failed restore");
    assert!(into.path().join("blobs").join(&kept).is_file());
    assert!(!into.path().join("blobs").join(&damaged).exists(), "no damaged copy left behind");
}

/// Bytes that differ at every offset, so a misplaced multipart part would show.
fn patterned(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) ^ (i >> 11)) as u8).collect()
}

fn read_object(target: &dyn Target, key: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    target.open(key).expect("open").read_to_end(&mut bytes).expect("read");
    bytes
}

#[test]
fn a_bucket_target_backs_up_restores_and_never_replaces_an_object() {
    let bucket = haneul_storage::testing::TestBucket::create();
    let staging = tempfile::tempdir().expect("staging");
    let target = BucketTarget::connect(&bucket.options, staging.path()).expect("bucket target");
    let archive = Archive::new();
    // One object above the multipart threshold, whose upload is not conditional.
    let large = patterned(haneul_storage::PART_SIZE + 300_000);
    let paths = [archive.store("1.1", b"first instance"), archive.store("1.2", &large)];
    let first = archive.backup(&target).expect("first backup");
    assert_eq!((first.objects_written, first.objects_present), (2, 0));
    let third = archive.store("1.3", b"third instance");
    let second = archive.backup(&target).expect("second backup");
    assert_eq!((second.objects_written, second.objects_present), (1, 2), "only the new instance is written");

    let listed = list_snapshots(&target, None).expect("list");
    let names: Vec<&str> = listed.iter().map(|snapshot| snapshot.name.as_str()).collect();
    assert_eq!(names, [first.snapshot.as_str(), second.snapshot.as_str()]);
    assert!(listed.iter().all(|snapshot| matches!(snapshot.state, SnapshotState::Complete(_))), "both complete");

    let manifest = choose_snapshot(&target, None, None).expect("newest").manifest;
    let restored = tempfile::tempdir().expect("tempdir");
    let data_dir = restored.path().join("data");
    let report = restore(&target, &manifest, &layout(&data_dir), &mut |_, _| {}).expect("restore");
    assert_eq!(report.blobs_restored, 3);
    for path in paths.iter().chain([&third]) {
        assert_eq!(
            fs::read(data_dir.join("blobs").join(path)).expect("restored blob"),
            fs::read(archive.blobs.path_of(path).expect("path")).expect("original blob"),
            "{path}"
        );
    }

    // Nothing written is replaced through Haneul, small or multipart.
    let large_ransom = vec![0x5a; large.len()];
    for (content, ransom) in [(&b"first instance"[..], &b"ransom note"[..]), (&large, &large_ransom)] {
        let key = object_key(&to_hex(blake3::hash(content).as_bytes()));
        let mut object = target.create(&key).expect("create");
        object.write_all(ransom).expect("write");
        let error = object.publish().expect_err("an existing object must not be replaced");
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists, "{error}");
        assert_eq!(read_object(&target, &key), content, "{key} is as it was");
    }
    assert!(target.claim_snapshot("20200101T000000Z").expect("claim"));
    assert!(!target.claim_snapshot("20200101T000000Z").expect("claim again"), "a name is claimed once");
    let missing = object_key(&"0".repeat(64));
    assert_eq!(target.object_size(&missing).expect("size"), None);
    assert_eq!(target.open(&missing).err().map(|error| error.kind()), Some(io::ErrorKind::NotFound));
    assert!(target.create("objects/../escape").is_err(), "keys stay under the prefix");
    assert_eq!(fs::read_dir(staging.path()).expect("staging").count(), 0, "no temporary file is left");
}

/// A directory target that also keeps earlier versions of some keys, as a
/// versioned bucket does (the real one is tested against SeaweedFS in the
/// `haneul` crate's backup tests).
struct KeepingVersions {
    current: DirTarget,
    /// key → versions, oldest first.
    kept: BTreeMap<String, Vec<Vec<u8>>>,
    /// Whether present objects and kept versions are read back, or judged
    /// by size as a bucket's are.
    rereads: bool,
    /// Versions opened.
    versions_read: std::sync::atomic::AtomicUsize,
}

impl Target for KeepingVersions {
    fn describe(&self) -> String {
        self.current.describe()
    }
    fn locate(&self, key: &str) -> String {
        self.current.locate(key)
    }
    fn object_size(&self, key: &str) -> io::Result<Option<u64>> {
        self.current.object_size(key)
    }
    fn open(&self, key: &str) -> io::Result<Box<dyn Read + Send>> {
        self.current.open(key)
    }
    fn create(&self, key: &str) -> io::Result<Box<dyn NewObject>> {
        self.current.create(key)
    }
    fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        self.current.list(prefix)
    }
    fn claim_snapshot(&self, name: &str) -> io::Result<bool> {
        self.current.claim_snapshot(name)
    }
    fn versions(&self, key: &str) -> io::Result<Vec<KeptVersion>> {
        let kept = self.kept.get(key).map(Vec::as_slice).unwrap_or_default();
        Ok(kept
            .iter()
            .enumerate()
            .map(|(index, bytes)| KeptVersion { id: index.to_string(), size: Some(bytes.len() as u64) })
            .collect())
    }
    fn rereads_present_objects(&self) -> bool {
        self.rereads
    }
    fn open_version(&self, key: &str, version: &str) -> io::Result<Box<dyn Read + Send>> {
        self.versions_read.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let bytes = version.parse::<usize>().ok().and_then(|index| self.kept.get(key)?.get(index).cloned());
        let bytes = bytes.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{key} {version}")))?;
        Ok(Box::new(io::Cursor::new(bytes)))
    }
}

#[test]
fn a_restore_reads_the_first_good_version_of_an_object_changed_since() {
    let archive = Archive::new();
    let replaced = archive.store("1.1", b"replaced later");
    let hidden = archive.store("1.2", b"hidden later");
    let lost = archive.store("1.3", b"lost for good");
    let (_backup_dir, current) = dir_target();
    archive.backup(&current).expect("backup");
    let manifest = choose_snapshot(&current, None, None).expect("snapshot").manifest;
    let catalog_key = format!("snapshots/{}/catalog.sqlite", manifest.snapshot);
    let catalog_bytes = read_object(&current, &catalog_key);

    // What someone with the keys did: replace two objects, hide one, and
    // replace the last with nothing of the original left.
    let tamper = |path: &Path, bytes: Option<&[u8]>| {
        fs::set_permissions(path, fs::Permissions::from_mode(0o644)).expect("chmod");
        match bytes {
            Some(bytes) => fs::write(path, bytes).expect("overwrite"),
            None => fs::remove_file(path).expect("remove"),
        }
    };
    let key_of = |content: &[u8]| object_key(&to_hex(blake3::hash(content).as_bytes()));
    tamper(&current.path_of(&catalog_key).expect("path"), Some(b"ransom"));
    tamper(&object_path(&current, b"replaced later"), Some(b"ransom"));
    tamper(&object_path(&current, b"hidden later"), None);
    tamper(&object_path(&current, b"lost for good"), Some(b"ransom"));
    let kept: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::from([
        (catalog_key.clone(), vec![catalog_bytes, b"ransom".to_vec()]),
        // A first version that is not the object's own is passed over.
        (key_of(b"replaced later"), vec![b"junk".to_vec(), b"replaced later".to_vec(), b"ransom".to_vec()]),
        (key_of(b"hidden later"), vec![b"hidden later".to_vec()]),
        (key_of(b"lost for good"), vec![b"ransom".to_vec()]),
    ]);
    let target = KeepingVersions { current, kept, rereads: true, versions_read: Default::default() };

    let into = tempfile::tempdir().expect("tempdir");
    let error = restore(&target, &manifest, &layout(into.path()), &mut |_, _| {}).expect_err("one object is lost");
    let BackupError::Incomplete { problems, .. } = error else { panic!("unexpected error {error}") };
    let lost_object = target.locate(&key_of(b"lost for good"));
    assert_eq!(problems, [RestoreProblem::Damaged { object: lost_object, path: lost.clone() }]);

    // With that instance's object back, everything restores, and the report
    // names what came from earlier versions.
    let mut target = target;
    target.kept.insert(key_of(b"lost for good"), vec![b"lost for good".to_vec()]);
    let into = tempfile::tempdir().expect("tempdir");
    let data_dir = into.path().join("data");
    let report = restore(&target, &manifest, &layout(&data_dir), &mut |_, _| {}).expect("restore");
    for (path, content) in [(&replaced, &b"replaced later"[..]), (&hidden, b"hidden later"), (&lost, b"lost for good")]
    {
        assert_eq!(fs::read(data_dir.join("blobs").join(path)).expect("restored"), content, "{path}");
    }
    let mut named: Vec<&str> = report.replaced.iter().map(|replaced| replaced.path.as_str()).collect();
    named.sort();
    let mut expected = vec!["catalog", replaced.as_str(), hidden.as_str(), lost.as_str()];
    expected.sort();
    assert_eq!(named, expected);
    let restored_catalog = CatalogSnapshot::open(&data_dir.join("catalog.sqlite")).expect("restored catalog");
    assert_eq!(restored_catalog.counts().expect("counts").instances, 3);
}

#[test]
fn a_backup_goes_on_past_an_object_replaced_when_its_version_as_written_is_kept() {
    // Kept versions read back (a directory-like target) and judged by their
    // listed size (a bucket), as present objects are.
    for rereads in [true, false] {
        backup_past_a_replaced_object(rereads);
    }
}

fn backup_past_a_replaced_object(rereads: bool) {
    let archive = Archive::new();
    let path = archive.store("1.1", b"written by haneul");
    let (_backup_dir, current) = dir_target();
    archive.backup(&current).expect("first backup");
    let object = object_path(&current, b"written by haneul");
    fs::set_permissions(&object, fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::write(&object, b"ransom").expect("overwrite");
    let key = object_key(&to_hex(blake3::hash(b"written by haneul").as_bytes()));

    // Only a version with the content counts (here none has).
    let mut target = KeepingVersions {
        current,
        kept: BTreeMap::from([(key.clone(), vec![b"ransom".to_vec(), b"written by haneul!".to_vec()])]),
        rereads,
        versions_read: Default::default(),
    };
    let error = archive.backup(&target).expect_err("no version as written");
    let BackupError::Problems(problems) = &error else { panic!("unexpected error {error}") };
    assert_eq!(problems, &[BackupProblem::ObjectDiffers { object: object.display().to_string() }]);

    target.kept.insert(key.clone(), vec![b"written by haneul".to_vec(), b"ransom".to_vec()]);
    let report = archive.backup(&target).expect("a kept version as written");
    assert_eq!(report.replaced, [Replaced { object: object.display().to_string(), path: path.clone() }]);
    assert_eq!((report.objects_written, report.objects_present), (0, 1));
    assert_eq!(fs::read(&object).expect("object"), b"ransom", "never overwritten");
    let read = target.versions_read.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(read > 0, rereads, "kept versions are read back only where present objects are");
    let manifest = choose_snapshot(&target, None, None).expect("newest snapshot").manifest;
    assert_eq!(manifest.snapshot, report.snapshot);
    let into = tempfile::tempdir().expect("tempdir");
    let data_dir = into.path().join("data");
    let restored = restore(&target, &manifest, &layout(&data_dir), &mut |_, _| {}).expect("restore");
    assert_eq!(restored.replaced.len(), 1);
    assert_eq!(fs::read(data_dir.join("blobs").join(&path)).expect("restored"), b"written by haneul");
}

/// What someone with write access to a backup leaves in it as a newer snapshot.
enum Forged {
    Unsigned,
    SignedWithAnotherKey,
    /// The genuine snapshot's signature beside a manifest that names the new snapshot.
    CopiedSignature(Vec<u8>),
    /// A manifest that is not one, with the genuine signature.
    JunkManifest(Vec<u8>),
}

#[test]
fn with_a_key_restores_take_only_snapshots_signed_with_it() {
    let archive = Archive::new();
    archive.store("1.1", b"the hospital's instance");
    let (_backup_dir, target) = dir_target();
    let keys = tempfile::tempdir().expect("keys");
    let key = SigningKey::create_files(&keys.path().join("backup.key")).expect("key");
    let verify = key.verify_key();
    let scratch = tempfile::tempdir().expect("scratch");
    let source = Source { catalog: &archive.catalog, blobs: &archive.blobs, audit_dir: None, signing_key: Some(&key) };
    let signed = backup(&source, &target, scratch.path(), &mut |_, _| {}).expect("signed backup");

    let genuine = read_object(&target, &format!("snapshots/{}/manifest.json", signed.snapshot));
    let genuine_signature = read_object(&target, &format!("snapshots/{}/manifest.sig", signed.snapshot));
    let another_key = SigningKey::create_files(&keys.path().join("another.key")).expect("another key");
    let forge = |year: u32, forged: Forged| -> String {
        let name = format!("{year}1124T101500Z");
        assert!(target.claim_snapshot(&name).expect("claim"));
        let mut manifest: Manifest = serde_json::from_slice(&genuine).expect("manifest");
        manifest.snapshot = name.clone();
        let bytes = serde_json::to_vec(&manifest).expect("encode");
        let (manifest, signature) = match forged {
            Forged::Unsigned => (bytes, None),
            Forged::SignedWithAnotherKey => (bytes.clone(), Some(another_key.signature_for(&bytes))),
            Forged::CopiedSignature(signature) => (bytes, Some(signature)),
            Forged::JunkManifest(signature) => (b"{}".to_vec(), Some(signature)),
        };
        for (file, content) in [("manifest.sig", signature), ("manifest.json", Some(manifest))] {
            if let Some(content) = content {
                let mut object = target.create(&format!("snapshots/{name}/{file}")).expect("create");
                object.write_all(&content).expect("write");
                object.publish().expect("publish");
            }
        }
        name
    };
    let unsigned = forge(2095, Forged::Unsigned);
    let other_key = forge(2096, Forged::SignedWithAnotherKey);
    let copied_signature = forge(2097, Forged::CopiedSignature(genuine_signature.clone()));
    let junk = forge(2098, Forged::JunkManifest(genuine_signature.clone()));
    // A signature alone (a run that failed at its last step, or a hidden
    // manifest) and one far larger than any signature.
    let signature_only = "20991124T101500Z".to_string();
    assert!(target.claim_snapshot(&signature_only).expect("claim"));
    let write = |key: String, content: &[u8]| {
        let mut object = target.create(&key).expect("create");
        object.write_all(content).expect("write");
        object.publish().expect("publish");
    };
    write(format!("snapshots/{signature_only}/manifest.sig"), &genuine_signature);
    let oversized = "21001124T101500Z".to_string();
    assert!(target.claim_snapshot(&oversized).expect("claim"));
    let mut padded = genuine_signature.clone();
    padded.resize(8192, b' ');
    write(format!("snapshots/{oversized}/manifest.sig"), &padded);
    write(format!("snapshots/{oversized}/manifest.json"), &genuine);
    // A run that stopped before writing anything is only incomplete.
    assert!(target.claim_snapshot("21011124T101500Z").expect("claim"));

    // Without the key the newest complete snapshot wins, forged or not; a
    // malformed one is passed over and named.
    let chosen = choose_snapshot(&target, None, None).expect("newest");
    assert_eq!(chosen.manifest.snapshot, copied_signature);
    let passed: Vec<&str> = chosen.passed_over.iter().map(|passed| passed.snapshot.as_str()).collect();
    // The oversized one names another snapshot inside; the junk one is no manifest at all.
    assert_eq!(passed, [oversized.as_str(), junk.as_str()]);

    let chosen = choose_snapshot(&target, None, Some(&verify)).expect("signed");
    assert_eq!(chosen.manifest.snapshot, signed.snapshot);
    let passed: Vec<&str> = chosen.passed_over.iter().map(|passed| passed.snapshot.as_str()).collect();
    assert_eq!(
        passed,
        [
            oversized.as_str(),
            signature_only.as_str(),
            junk.as_str(),
            copied_signature.as_str(),
            other_key.as_str(),
            unsigned.as_str()
        ]
    );
    let reasons: Vec<&str> = chosen.passed_over.iter().map(|passed| passed.reason.as_str()).collect();
    assert_eq!(reasons[0], Signature::Invalid.to_string(), "a signature past the cap is not one");
    assert!(reasons[1].starts_with("a signature without a manifest"), "{reasons:?}");
    // Checked against its signature before it is parsed.
    assert_eq!(reasons[2], Signature::Invalid.to_string());
    assert_eq!(reasons[3], Signature::Invalid.to_string());
    assert_eq!(reasons[4], Signature::OtherKey(another_key.verify_key().id()).to_string());
    assert_eq!(reasons[5], Signature::Unsigned.to_string());
    let listed: Vec<String> = list_snapshots(&target, Some(&verify))
        .expect("list")
        .into_iter()
        .filter(|listing| matches!(listing.state, SnapshotState::Complete(_)))
        .map(|listing| listing.name)
        .collect();
    assert_eq!(listed, std::slice::from_ref(&signed.snapshot));
    // Nothing signed at or before a time: no snapshot, whatever is unsigned there.
    let error = choose_snapshot(&target, Some("2000-01-01T00:00:00Z"), Some(&verify)).expect_err("none");
    assert!(error.to_string().contains("signed with this key"), "{error}");
    // Only what is not newer than the time asked for is looked at.
    let chosen = choose_snapshot(&target, Some(&other_key), Some(&verify)).expect("signed");
    assert_eq!(chosen.passed_over.len(), 2);
}

#[test]
fn the_audit_trail_is_backed_up_to_its_last_complete_record_and_restored() {
    let (archive, audit_dir) = archive_with_trail_dir();
    let past_day = b"{\"seq\":1}\n{\"seq\":2}\n".to_vec();
    fs::write(audit_dir.join("audit-2026-11-22.jsonl"), &past_day).expect("past day");
    // Today's file, with a record half written as the backup reads it.
    let today = audit_dir.join("audit-2026-11-23.jsonl");
    fs::write(&today, b"{\"seq\":3}\n{\"seq\":4,\"act").expect("today");
    fs::write(audit_dir.join(".writer.lock"), b"").expect("lock file");
    let (_backup_dir, target) = dir_target();
    let scratch = tempfile::tempdir().expect("scratch");
    let source =
        Source { catalog: &archive.catalog, blobs: &archive.blobs, audit_dir: Some(&audit_dir), signing_key: None };
    let first = backup(&source, &target, scratch.path(), &mut |_, _| {}).expect("first backup");
    assert_eq!((first.audit_files, first.audit_written, first.objects_written), (2, 2, 1));
    let manifest = read_manifest(&target, &first.snapshot).expect("manifest");
    let files: Vec<(&str, u64)> = manifest.audit.iter().map(|entry| (entry.file.as_str(), entry.size)).collect();
    assert_eq!(files, [("audit-2026-11-22.jsonl", past_day.len() as u64), ("audit-2026-11-23.jsonl", 10)]);

    // The record completed and one more: only today's file is copied again.
    fs::write(&today, b"{\"seq\":3}\n{\"seq\":4,\"action\":\"store\"}\n{\"seq\":5}\n").expect("today");
    let second = backup(&source, &target, scratch.path(), &mut |_, _| {}).expect("second backup");
    assert_eq!((second.audit_files, second.audit_written, second.objects_present), (2, 1, 1));

    let at_first_dir = tempfile::tempdir().expect("tempdir");
    let at_first = at_first_dir.path().join("data");
    restore(&target, &manifest, &layout(&at_first), &mut |_, _| {}).expect("restore the first");
    assert_eq!(fs::read(at_first.join("audit/audit-2026-11-22.jsonl")).expect("past"), past_day);
    assert_eq!(fs::read(at_first.join("audit/audit-2026-11-23.jsonl")).expect("today"), b"{\"seq\":3}\n");
    let latest = choose_snapshot(&target, None, None).expect("latest").manifest;
    let into = tempfile::tempdir().expect("tempdir");
    let report = restore(&target, &latest, &layout(into.path()), &mut |_, _| {}).expect("restore the latest");
    assert_eq!(report.audit_files, 2);
    assert_eq!(
        fs::read(into.path().join("audit/audit-2026-11-23.jsonl")).expect("today"),
        fs::read(&today).expect("today")
    );
    assert!(!into.path().join("audit/.writer.lock").exists(), "only trail files are backed up");

    // A trail object lost from the backup makes the restore incomplete.
    let today_key = object_key(&latest.audit[1].digest);
    let lost = target.path_of(&today_key).expect("path");
    fs::set_permissions(&lost, fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::remove_file(&lost).expect("remove");
    let into = tempfile::tempdir().expect("tempdir");
    let error = restore(&target, &latest, &layout(into.path()), &mut |_, _| {}).expect_err("incomplete");
    let BackupError::Incomplete { problems, .. } = error else { panic!("unexpected error {error}") };
    assert_eq!(
        problems,
        [RestoreProblem::Missing {
            object: target.locate(&today_key),
            path: "audit trail audit-2026-11-23.jsonl".into()
        }]
    );
}

#[test]
fn trail_files_unchanged_since_the_last_backup_are_not_read_again_and_a_rewrite_with_its_mtime_put_back_is() {
    let (archive, audit_dir) = archive_with_trail_dir();
    let past = audit_dir.join("audit-2026-11-22.jsonl");
    fs::write(&past, b"{\"seq\":1}\n").expect("past day");
    let (_backup_dir, target) = dir_target();
    let scratch = tempfile::tempdir().expect("scratch");
    let source =
        Source { catalog: &archive.catalog, blobs: &archive.blobs, audit_dir: Some(&audit_dir), signing_key: None };
    let digest_of =
        |report: &BackupReport| read_manifest(&target, &report.snapshot).expect("manifest").audit[0].digest.clone();
    let first = backup(&source, &target, scratch.path(), &mut |_, _| {}).expect("first backup");
    assert_eq!(digest_of(&first), to_hex(blake3::hash(b"{\"seq\":1}\n").as_bytes()));

    assert_eq!(first.audit_read, 1);
    // Nothing changed: the next run trusts what it learnt and does not read the file.
    let second = backup(&source, &target, scratch.path(), &mut |_, _| {}).expect("second backup");
    assert_eq!((second.audit_read, second.audit_files), (0, 1), "the unchanged file was not read again");
    assert_eq!(digest_of(&second), digest_of(&first));
    // A target without its object gets the file read whole.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let other = DirTarget::open(elsewhere.path()).expect("target");
    let copied = backup(&source, &other, scratch.path(), &mut |_, _| {}).expect("backup elsewhere");
    assert_eq!(copied.audit_read, 1, "read for the target that lacks it");

    // Other bytes of the same length with the modification time put back:
    // the change time tells, and the file is read again.
    let modified = fs::metadata(&past).and_then(|metadata| metadata.modified()).expect("mtime");
    // File times come from a coarse clock: wait until it has moved past the cached change time.
    let changed =
        |path: &Path| fs::metadata(path).map(|metadata| (metadata.ctime(), metadata.ctime_nsec())).expect("ctime");
    let probe = scratch.path().join("clock-probe");
    while {
        fs::write(&probe, b"").expect("probe");
        changed(&probe) <= changed(&past)
    } {
        std::thread::yield_now();
    }
    fs::write(&past, b"{\"seq\":9}\n").expect("rewrite");
    File::options().write(true).open(&past).and_then(|file| file.set_modified(modified)).expect("set mtime");
    assert_eq!(fs::metadata(&past).and_then(|metadata| metadata.modified()).expect("mtime"), modified);
    let third = backup(&source, &target, scratch.path(), &mut |_, _| {}).expect("third backup");
    assert_eq!(third.audit_read, 1, "the rewritten file was read again");
    assert_eq!(digest_of(&third), to_hex(blake3::hash(b"{\"seq\":9}\n").as_bytes()));
    assert!(audit_dir.join(".backup-digests.json").is_file());
    let manifest = read_manifest(&target, &third.snapshot).expect("manifest");
    let files: Vec<&str> = manifest.audit.iter().map(|entry| entry.file.as_str()).collect();
    assert_eq!(files, ["audit-2026-11-22.jsonl"], "the cache is not part of the trail backed up");
}

#[test]
fn trail_digests_kept_by_an_older_build_still_read() {
    let older = format!(
        r#"{{"files":{{"audit-2026-11-22.jsonl":{{"stamp":{{"len":10,"modified_ns":5}},"size":10,"digest":"{}"}}}}}}"#,
        "ab".repeat(32)
    );
    let digests: TrailDigests = serde_json::from_str(&older).expect("an older cache reads");
    let cached = digests.files["audit-2026-11-22.jsonl"];
    assert_eq!((cached.stamp.changed_ns, cached.stamp.inode), (0, 0), "never matches a real file's stamp");
}
