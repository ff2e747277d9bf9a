//! The manifest of a snapshot (`snapshots/<name>/manifest.json`), written
//! last: a snapshot without one is incomplete and never restored.

use serde::{Deserialize, Serialize};

/// The manifest format this build writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The Haneul version that wrote the snapshot.
    pub haneul_version: String,
    /// The snapshot's name, its UTC time (`20261123T101500Z`).
    pub snapshot: String,
    /// When the catalog was copied (RFC 3339, UTC).
    pub created: String,
    pub catalog: CatalogEntry,
    pub counts: Counts,
    /// Every blob the catalog references, by path.
    pub blobs: Vec<BlobEntry>,
    /// The node's audit trail, file by file, oldest first (none in
    /// snapshots written before trails were backed up).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audit: Vec<AuditEntry>,
}

/// The catalog copy of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// Its key under the snapshot (`catalog.sqlite`).
    pub file: String,
    pub size: u64,
    /// BLAKE3, hex.
    pub digest: String,
    pub schema_version: i64,
}

/// What the snapshot holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub patients: u64,
    pub studies: u64,
    pub series: u64,
    pub instances: u64,
    pub superseded: u64,
    pub conflicts: u64,
    /// Blob paths (one per catalog reference).
    pub blobs: u64,
    /// Distinct objects (blobs with the same content share one).
    pub objects: u64,
    /// Bytes of all blobs.
    pub bytes: u64,
}

/// One blob: where the catalog expects it and what it must hash to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobEntry {
    /// Path relative to the blob store root, as the catalog records it.
    pub path: String,
    pub size: u64,
    /// BLAKE3, hex; also the name of its object.
    pub digest: String,
    /// `instance`, `superseded` or `conflict`.
    pub kind: String,
}

/// One file of the audit trail, as far as its last complete record when it
/// was copied; stored as an object like a blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Its name in the trail's directory (`audit-2026-11-23.jsonl`).
    pub file: String,
    pub size: u64,
    /// BLAKE3, hex; also the name of its object.
    pub digest: String,
}

/// Whether `name` is the name of an audit trail file (`audit-2026-11-23.jsonl`),
/// the only files a restore makes in the trail's directory.
pub fn is_audit_file_name(name: &str) -> bool {
    let Some(day) = name.strip_prefix("audit-").and_then(|rest| rest.strip_suffix(".jsonl")) else {
        return false;
    };
    let bytes = day.as_bytes();
    bytes.len() == 10
        && bytes.iter().enumerate().all(|(index, byte)| match index {
            4 | 7 => *byte == b'-',
            _ => byte.is_ascii_digit(),
        })
}

/// The key of the object holding content with this digest (hex).
pub fn object_key(digest_hex: &str) -> String {
    format!("objects/{}/{digest_hex}", &digest_hex[..2.min(digest_hex.len())])
}

/// Whether `text` is a digest as this crate writes it: 64 lowercase hex digits.
pub fn is_digest_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_trail_file_names_are_restored_into_the_trail_directory() {
        assert!(is_audit_file_name("audit-2026-11-23.jsonl"));
        for name in ["../audit-2026-11-23.jsonl", "audit-2026-11-2x.jsonl", "audit-20261123.jsonl", ".writer.lock", ""]
        {
            assert!(!is_audit_file_name(name), "{name}");
        }
    }
}
