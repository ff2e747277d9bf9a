//! Anti-entropy digests: what two nodes compare to find out, in few round
//! trips, whether they hold the same instances, and where they differ.
//!
//! - A **version** is one stored file of an instance: the current one, or one
//!   kept as a conflict. It is identified by its content digest, the BLAKE3
//!   of its data set (the bytes after the file meta group), not of the whole
//!   file: a node writes its own meta group (with the sender's AE title) in
//!   front of a data set it receives over DIMSE, so the same instance is
//!   stored in files that differ only there. Versions stored before content
//!   digests were recorded (schema version 4) get theirs computed from the
//!   file at the next tree computation, and recorded.
//! - **Instance** (leaf): BLAKE3 over the sorted, distinct digests of its versions.
//! - **Study**: BLAKE3 over its sorted (SOP Instance UID, leaf) pairs.
//! - **Bucket** (256, by the first byte of BLAKE3 of the Study Instance UID):
//!   BLAKE3 over its sorted (Study Instance UID, study digest) pairs.
//! - **Root**: BLAKE3 over the 256 bucket digests.
//!
//! - **Registers**: beside the root, BLAKE3 over every attribute correction
//!   register (see [`crate::corrections`]), sorted by level, key and
//!   attribute. Corrections are made by people, so there are few: when this
//!   digest differs, the two nodes exchange their registers whole.
//!
//! Equal archives compare with one request (the root); otherwise the
//! differing buckets, then their differing studies, narrow the search.
//! UIDs are sorted bytewise (as SQLite's BINARY collation), and every UID
//! enters a digest with its length in front, so no two sets of pairs can
//! hash alike by shifting bytes between a UID and its neighbour.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use haneul_catalog::{Catalog, CorrectionRecord, HeldVersion, VersionScope};
use haneul_storage::BlobStore;
use serde::{Deserialize, Serialize};

use crate::{run_blocking, Archive, ArchiveError};

/// A BLAKE3 digest.
pub type Digest = [u8; 32];

/// Buckets of the tree.
pub const BUCKETS: usize = 256;

/// The digest of a version whose file cannot be read here: it matches no
/// real data set, so the instance shows up as a difference (and is logged).
pub const UNREADABLE: Digest = [0; 32];

/// Data set digests computed and recorded per catalog write.
const DIGEST_BATCH: usize = 256;

/// The bucket a study belongs to.
pub fn bucket_of(study_uid: &str) -> u8 {
    blake3::hash(study_uid.as_bytes()).as_bytes()[0]
}

/// The leaf of an instance: its versions' data set digests, in any order
/// and with repeats, taken as a set.
pub fn instance_digest(versions: &[Digest]) -> Digest {
    let mut sorted = versions.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut hasher = blake3::Hasher::new();
    for digest in &sorted {
        hasher.update(digest);
    }
    *hasher.finalize().as_bytes()
}

/// The digest of (UID, digest) pairs in any order: of a study (its
/// instances) or of a bucket (its studies).
pub fn keyed_digest<'a>(entries: impl IntoIterator<Item = (&'a str, Digest)>) -> Digest {
    let mut sorted: Vec<(&str, Digest)> = entries.into_iter().collect();
    sorted.sort_unstable();
    let mut hasher = blake3::Hasher::new();
    for (uid, digest) in sorted {
        hash_entry(&mut hasher, uid, &digest);
    }
    *hasher.finalize().as_bytes()
}

fn hash_entry(hasher: &mut blake3::Hasher, uid: &str, digest: &Digest) {
    hasher.update(&(uid.len() as u32).to_le_bytes());
    hasher.update(uid.as_bytes());
    hasher.update(digest);
}

/// The root over the bucket digests, in bucket order.
pub fn root_digest(buckets: &[Digest]) -> Digest {
    let mut hasher = blake3::Hasher::new();
    for digest in buckets {
        hasher.update(digest);
    }
    *hasher.finalize().as_bytes()
}

/// The digest of correction registers in any order: every field of each,
/// length-prefixed, in (level, key, attribute) order.
pub fn registers_digest(registers: &[CorrectionRecord]) -> Digest {
    let mut sorted: Vec<&CorrectionRecord> = registers.iter().collect();
    sorted.sort_unstable_by(|a, b| (a.level, &a.key, a.tag).cmp(&(b.level, &b.key, b.tag)));
    let mut hasher = blake3::Hasher::new();
    for register in sorted {
        for text in
            [register.level.as_str(), &register.key, &register.vr, &register.value, &register.origin, &register.reason]
        {
            hasher.update(&(text.len() as u32).to_le_bytes());
            hasher.update(text.as_bytes());
        }
        hasher.update(&register.tag.to_le_bytes());
        hasher.update(&register.hlc.to_le_bytes());
    }
    *hasher.finalize().as_bytes()
}

/// A digest as lowercase hex in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hex(pub Digest);

impl Hex {
    pub fn parse(text: &str) -> Option<Hex> {
        if text.len() != 64 {
            return None;
        }
        let mut digest = [0u8; 32];
        for (index, byte) in digest.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(index * 2..index * 2 + 2)?, 16).ok()?;
        }
        Some(Hex(digest))
    }
}

impl std::fmt::Display for Hex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl Serialize for Hex {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Hex {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Hex, D::Error> {
        let text = String::deserialize(deserializer)?;
        Hex::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not a 64-digit hex digest")))
    }
}

/// The top of the tree: what one node answers first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestTree {
    pub root: Hex,
    pub studies: u64,
    pub instances: u64,
    /// Versions held (instances plus kept conflicts).
    pub versions: u64,
    /// The [`BUCKETS`] bucket digests, in bucket order.
    pub buckets: Vec<Hex>,
    /// The digest of the correction registers held ([`registers_digest`]),
    /// and how many; absent from nodes older than corrections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registers: Option<Hex>,
    #[serde(default)]
    pub register_count: u64,
}

/// A study in a bucket listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StudyDigest {
    pub study_uid: String,
    pub digest: Hex,
    pub instances: u64,
}

/// The studies of one bucket, by UID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketListing {
    pub bucket: u8,
    pub digest: Hex,
    pub studies: Vec<StudyDigest>,
}

/// The versions of every instance of a study.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StudyVersions {
    pub study_uid: String,
    pub digest: Hex,
    /// SOP Instance UID → its versions' data set digests (sorted, distinct).
    pub instances: BTreeMap<String, Vec<Hex>>,
}

impl StudyVersions {
    fn from_versions(study_uid: &str, versions: &[HeldVersion]) -> StudyVersions {
        let mut instances: BTreeMap<String, Vec<Hex>> = BTreeMap::new();
        for version in versions {
            instances
                .entry(version.sop_uid.clone())
                .or_default()
                .push(Hex(version.dataset_digest.unwrap_or(UNREADABLE)));
        }
        for digests in instances.values_mut() {
            digests.sort_unstable();
            digests.dedup();
        }
        let leaves: Vec<(&str, Digest)> = instances
            .iter()
            .map(|(sop, digests)| (sop.as_str(), instance_digest(&digests.iter().map(|hex| hex.0).collect::<Vec<_>>())))
            .collect();
        StudyVersions { study_uid: study_uid.to_string(), digest: Hex(keyed_digest(leaves)), instances }
    }
}

/// Builds the tree from versions arriving in (study, SOP Instance UID) order,
/// one study in memory at a time; keeps the study listings of chosen buckets.
pub struct TreeBuilder {
    buckets: Vec<blake3::Hasher>,
    keep: [bool; BUCKETS],
    kept: BTreeMap<u8, Vec<StudyDigest>>,
    study: Option<(String, Vec<(String, Digest)>)>,
    last_study: Option<String>,
    studies: u64,
    instances: u64,
    versions: u64,
}

impl TreeBuilder {
    /// A builder that keeps the study listings of the buckets in `keep`.
    pub fn new(keep: &[u8]) -> TreeBuilder {
        let mut kept = [false; BUCKETS];
        for bucket in keep {
            kept[usize::from(*bucket)] = true;
        }
        TreeBuilder {
            buckets: vec![blake3::Hasher::new(); BUCKETS],
            keep: kept,
            kept: BTreeMap::new(),
            study: None,
            last_study: None,
            studies: 0,
            instances: 0,
            versions: 0,
        }
    }

    /// Add a version; studies must arrive in ascending UID order, each whole.
    pub fn push(&mut self, study_uid: &str, sop_uid: &str, digest: Digest) -> Result<(), String> {
        self.versions += 1;
        match &mut self.study {
            Some((current, versions)) if current == study_uid => {
                versions.push((sop_uid.to_string(), digest));
                return Ok(());
            }
            _ => {}
        }
        self.close_study()?;
        self.study = Some((study_uid.to_string(), vec![(sop_uid.to_string(), digest)]));
        Ok(())
    }

    fn close_study(&mut self) -> Result<(), String> {
        let Some((study_uid, mut versions)) = self.study.take() else { return Ok(()) };
        if self.last_study.as_deref().is_some_and(|last| last.as_bytes() >= study_uid.as_bytes()) {
            return Err(format!("studies arrived out of order at {study_uid}"));
        }
        versions.sort_unstable();
        let mut leaves: Vec<(&str, Digest)> = Vec::new();
        for group in versions.chunk_by(|a, b| a.0 == b.0) {
            let digests: Vec<Digest> = group.iter().map(|(_, digest)| *digest).collect();
            leaves.push((group[0].0.as_str(), instance_digest(&digests)));
        }
        let instances = leaves.len() as u64;
        let digest = keyed_digest(leaves);
        let bucket = bucket_of(&study_uid);
        // Studies come in ascending order, so each bucket's hasher sees its
        // studies sorted, as `keyed_digest` would order them.
        hash_entry(&mut self.buckets[usize::from(bucket)], &study_uid, &digest);
        if self.keep[usize::from(bucket)] {
            self.kept.entry(bucket).or_default().push(StudyDigest {
                study_uid: study_uid.clone(),
                digest: Hex(digest),
                instances,
            });
        }
        self.studies += 1;
        self.instances += instances;
        self.last_study = Some(study_uid);
        Ok(())
    }

    /// The tree, and the listings of the kept buckets.
    pub fn finish(mut self) -> Result<(DigestTree, Vec<BucketListing>), String> {
        self.close_study()?;
        let buckets: Vec<Digest> = self.buckets.iter().map(|hasher| *hasher.finalize().as_bytes()).collect();
        let listings = (0..BUCKETS)
            .filter(|bucket| self.keep[*bucket])
            .map(|bucket| BucketListing {
                bucket: bucket as u8,
                digest: Hex(buckets[bucket]),
                studies: self.kept.remove(&(bucket as u8)).unwrap_or_default(),
            })
            .collect();
        let tree = DigestTree {
            root: Hex(root_digest(&buckets)),
            studies: self.studies,
            instances: self.instances,
            versions: self.versions,
            buckets: buckets.into_iter().map(Hex).collect(),
            registers: None,
            register_count: 0,
        };
        Ok((tree, listings))
    }
}

/// BLAKE3 of a file's bytes from `offset` on.
fn dataset_digest(blobs: &BlobStore, version: &HeldVersion) -> Result<Digest, String> {
    let mut file = blobs.open_blob(&version.blob.path).map_err(|error| error.to_string())?;
    file.seek(SeekFrom::Start(version.dataset_offset)).map_err(|error| error.to_string())?;
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer).map_err(|error| error.to_string())?;
        if read == 0 {
            return Ok(*hasher.finalize().as_bytes());
        }
        hasher.update(&buffer[..read]);
    }
}

/// Compute the missing data set digests of `versions` and record them.
fn fill_digests(catalog: &dyn Catalog, blobs: &BlobStore, versions: &mut [HeldVersion]) -> Result<(), ArchiveError> {
    let mut computed = Vec::new();
    for version in versions.iter_mut().filter(|version| version.dataset_digest.is_none()) {
        match dataset_digest(blobs, version) {
            Ok(digest) => {
                version.dataset_digest = Some(digest);
                computed.push((version.blob.path.clone(), digest));
            }
            Err(error) => {
                tracing::warn!(sop = %version.sop_uid, path = %version.blob.path, %error, "cannot read a stored version for its digest");
            }
        }
    }
    if !computed.is_empty() {
        catalog.record_dataset_digests(&computed)?;
    }
    Ok(())
}

/// Compute and record the content digest of every version stored without one.
fn digest_backlog(catalog: &dyn Catalog, blobs: &BlobStore) -> Result<(), ArchiveError> {
    let mut after = String::new();
    loop {
        let mut page = catalog.undigested_versions(&after, DIGEST_BATCH)?;
        let Some(last) = page.last() else { return Ok(()) };
        after.clone_from(&last.blob.path);
        fill_digests(catalog, blobs, &mut page)?;
    }
}

fn versions_in(catalog: &dyn Catalog, scope: VersionScope<'_>) -> Result<Vec<HeldVersion>, ArchiveError> {
    let mut found = Vec::new();
    catalog.held_versions(scope, &mut |version| {
        found.push(version);
        true
    })?;
    Ok(found)
}

impl Archive {
    /// The digest tree of everything held, with the study listings of the
    /// buckets in `keep`. Reads every version's entry in the catalog, and the
    /// files of versions without a content digest (once).
    pub async fn digest_tree(&self, keep: Vec<u8>) -> Result<(DigestTree, Vec<BucketListing>), ArchiveError> {
        let catalog = Arc::clone(self.catalog());
        let blobs = self.blobs().clone();
        run_blocking(move || {
            digest_backlog(catalog.as_ref(), &blobs)?;
            let mut builder = TreeBuilder::new(&keep);
            let mut failure = None;
            catalog.held_versions(VersionScope::All, &mut |version| {
                // Unreadable when the backlog was digested (logged there).
                let digest = version.dataset_digest.unwrap_or(UNREADABLE);
                match builder.push(&version.study_uid, &version.sop_uid, digest) {
                    Ok(()) => true,
                    Err(error) => {
                        failure = Some(error);
                        false
                    }
                }
            })?;
            if let Some(error) = failure {
                return Err(ArchiveError::Task(error));
            }
            let (mut tree, listings) = builder.finish().map_err(ArchiveError::Task)?;
            let registers = catalog.all_corrections()?;
            tree.registers = Some(Hex(registers_digest(&registers)));
            tree.register_count = registers.len() as u64;
            Ok((tree, listings))
        })
        .await
    }

    /// Every version of every instance of a study; `None` when none is held.
    pub async fn study_versions(&self, study_uid: &str) -> Result<Option<StudyVersions>, ArchiveError> {
        let catalog = Arc::clone(self.catalog());
        let blobs = self.blobs().clone();
        let study_uid = study_uid.to_string();
        run_blocking(move || {
            let mut versions = versions_in(catalog.as_ref(), VersionScope::Study(&study_uid))?;
            if versions.is_empty() {
                return Ok(None);
            }
            fill_digests(catalog.as_ref(), &blobs, &mut versions)?;
            Ok(Some(StudyVersions::from_versions(&study_uid, &versions)))
        })
        .await
    }

    /// The version of an instance whose data set has this digest.
    pub async fn held_version(&self, sop_uid: &str, digest: Digest) -> Result<Option<HeldVersion>, ArchiveError> {
        let catalog = Arc::clone(self.catalog());
        let blobs = self.blobs().clone();
        let sop_uid = sop_uid.to_string();
        run_blocking(move || {
            let mut versions = versions_in(catalog.as_ref(), VersionScope::Instance(&sop_uid))?;
            fill_digests(catalog.as_ref(), &blobs, &mut versions)?;
            Ok(versions.into_iter().find(|version| version.dataset_digest == Some(digest)))
        })
        .await
    }

    /// Open a held version's file (the whole file, meta group included).
    pub async fn open_version(&self, version: &HeldVersion) -> Result<File, ArchiveError> {
        self.open_blob(&version.blob.path).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(byte: u8) -> Digest {
        [byte; 32]
    }

    /// (study, sop, version digest) triples of a small archive.
    fn archive() -> Vec<(String, String, Digest)> {
        let mut versions = Vec::new();
        for study in 0..40u8 {
            for sop in 0..3u8 {
                versions.push((format!("1.2.{study}"), format!("1.2.{study}.{sop}"), digest(study ^ sop)));
            }
        }
        // A conflict: a second version of one instance.
        versions.push(("1.2.7".into(), "1.2.7.1".into(), digest(200)));
        versions
    }

    fn build(versions: &[(String, String, Digest)]) -> DigestTree {
        let mut sorted = versions.to_vec();
        sorted.sort();
        let mut builder = TreeBuilder::new(&[]);
        for (study, sop, digest) in &sorted {
            builder.push(study, sop, *digest).expect("in order");
        }
        builder.finish().expect("finished").0
    }

    #[test]
    fn the_tree_is_the_same_whatever_the_order_of_versions_and_entries() {
        assert_eq!(instance_digest(&[digest(1), digest(2)]), instance_digest(&[digest(2), digest(1), digest(2)]));
        assert_eq!(
            keyed_digest([("a", digest(1)), ("b", digest(2))]),
            keyed_digest([("b", digest(2)), ("a", digest(1))])
        );
        let versions = archive();
        let mut reversed = versions.clone();
        reversed.reverse();
        let tree = build(&versions);
        assert_eq!(tree, build(&reversed));
        assert_eq!((tree.studies, tree.instances, tree.versions), (40, 120, 121));
        assert_eq!(tree.buckets.len(), BUCKETS);
        // The builder's incremental bucket digests are the sorted definition.
        let mut by_bucket: BTreeMap<u8, Vec<(String, Digest)>> = BTreeMap::new();
        for study in 0..40u8 {
            let uid = format!("1.2.{study}");
            let leaves: Vec<(String, Digest)> = versions
                .iter()
                .filter(|(s, _, _)| *s == uid)
                .fold(BTreeMap::<String, Vec<Digest>>::new(), |mut map, (_, sop, d)| {
                    map.entry(sop.clone()).or_default().push(*d);
                    map
                })
                .into_iter()
                .map(|(sop, digests)| (sop, instance_digest(&digests)))
                .collect();
            let study_digest = keyed_digest(leaves.iter().map(|(sop, d)| (sop.as_str(), *d)));
            by_bucket.entry(bucket_of(&uid)).or_default().push((uid, study_digest));
        }
        for (bucket, studies) in by_bucket {
            let expected = keyed_digest(studies.iter().map(|(uid, d)| (uid.as_str(), *d)));
            assert_eq!(tree.buckets[usize::from(bucket)], Hex(expected), "bucket {bucket}");
        }
    }

    #[test]
    fn one_changed_version_changes_the_root_and_exactly_one_bucket() {
        let versions = archive();
        let mut changed = versions.clone();
        changed[17].2 = digest(250);
        let (before, after) = (build(&versions), build(&changed));
        assert_ne!(before.root, after.root);
        let differing: Vec<usize> = (0..BUCKETS).filter(|b| before.buckets[*b] != after.buckets[*b]).collect();
        assert_eq!(differing, vec![usize::from(bucket_of(&changed[17].0))]);
        // An added instance, too.
        let mut added = versions.clone();
        added.push(("1.2.3".into(), "1.2.3.9".into(), digest(9)));
        let grown = build(&added);
        assert_ne!(before.root, grown.root);
        assert_eq!((0..BUCKETS).filter(|b| before.buckets[*b] != grown.buckets[*b]).count(), 1);
        assert_eq!(grown.instances, before.instances + 1);
    }

    #[test]
    fn studies_out_of_order_are_refused_and_kept_buckets_list_their_studies() {
        let mut builder = TreeBuilder::new(&[]);
        builder.push("1.3", "1.3.1", digest(1)).unwrap();
        builder.push("1.2", "1.2.1", digest(1)).unwrap();
        assert!(builder.finish().is_err());
        let bucket = bucket_of("1.2.5");
        let mut builder = TreeBuilder::new(&[bucket]);
        for (study, sop, digest) in {
            let mut sorted = archive();
            sorted.sort();
            sorted
        } {
            builder.push(&study, &sop, digest).unwrap();
        }
        let (tree, listings) = builder.finish().unwrap();
        assert_eq!(listings.len(), 1);
        assert_eq!(listings[0].digest, tree.buckets[usize::from(bucket)]);
        assert!(listings[0].studies.iter().any(|study| study.study_uid == "1.2.5" && study.instances == 3));
        assert!(listings[0].studies.iter().all(|study| bucket_of(&study.study_uid) == bucket));
    }

    #[test]
    fn the_registers_digest_ignores_order_and_sees_every_field() {
        let register = |key: &str, value: &str, hlc: i64| CorrectionRecord {
            level: haneul_catalog::CorrectionLevel::Study,
            key: key.into(),
            tag: 0x0008_1030,
            vr: "LO".into(),
            value: value.into(),
            hlc,
            origin: "SITEA".into(),
            reason: "CORRECT".into(),
        };
        let held = [register("1.2", "CT CHEST", 5), register("1.3", "MR HEAD", 6)];
        let digest = registers_digest(&held);
        assert_eq!(digest, registers_digest(&[held[1].clone(), held[0].clone()]));
        assert_ne!(digest, registers_digest(&held[..1]));
        assert_ne!(digest, registers_digest(&[register("1.2", "CT CHEST", 7), held[1].clone()]));
        assert_ne!(digest, registers_digest(&[register("1.2", "CT CHES", 5), held[1].clone()]));
        // A byte moved from one field to the next is a different register.
        assert_ne!(digest, registers_digest(&[register("1.2C", "T CHEST", 5), held[1].clone()]));
    }

    #[test]
    fn digests_read_back_from_hex() {
        let hex = Hex(digest(0xab));
        assert_eq!(Hex::parse(&hex.to_string()), Some(hex));
        assert_eq!(serde_json::from_value::<Hex>(serde_json::to_value(hex).unwrap()).unwrap(), hex);
        assert!(Hex::parse("xyz").is_none());
    }
}
