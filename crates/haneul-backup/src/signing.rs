//! Signed snapshots: a key kept by the PACS team (not in the backup) signs
//! each manifest, so that whoever holds the backup's write keys cannot
//! pass off a snapshot of their own as Haneul's.
//!
//! Object Lock keeps what Haneul wrote, but the same keys that write
//! backups can add a complete-looking snapshot, newer than the real ones,
//! and a restore takes the newest. With a key, restores and drills take
//! only snapshots signed with it and name the others they passed over.
//!
//! The signature is a keyed BLAKE3 hash of the manifest's exact bytes,
//! stored beside it as `manifest.sig` before the manifest itself is
//! written. The manifest holds the digests of the catalog copy, of every
//! blob and of the audit trail, so the signature covers the whole snapshot.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::manifest::to_hex;

/// Signature object of a snapshot, beside its manifest.
pub(crate) const SIGNATURE_FILE: &str = "manifest.sig";
/// Keeps these hashes apart from any other keyed BLAKE3 use of a key.
const SIGNING_CONTEXT: &[u8] = b"haneul backup manifest signature v1\0";
const KEY_ID_CONTEXT: &str = "haneul backup signing key id v1";

/// A secret key that signs snapshots (32 random bytes, kept as 64 hex digits in a file).
pub struct SigningKey {
    key: [u8; 32],
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.id())
    }
}

impl SigningKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> SigningKey {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        SigningKey { key }
    }

    /// Write a new key to `path`, which must not exist, readable by its owner only.
    pub fn create_file(path: &Path) -> io::Result<SigningKey> {
        let key = SigningKey::generate();
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o400).open(path)?;
        writeln!(file, "{}", to_hex(&key.key))?;
        file.sync_all()?;
        Ok(key)
    }

    /// Read a key file: 64 hexadecimal digits (surrounding white space ignored).
    pub fn read_file(path: &Path) -> io::Result<SigningKey> {
        let text = std::fs::read_to_string(path)?;
        SigningKey::parse(text.trim())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "a backup signing key is 64 hexadecimal digits"))
    }

    fn parse(hex: &str) -> Option<SigningKey> {
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut key = [0u8; 32];
        for (index, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * index..2 * index + 2], 16).ok()?;
        }
        Some(SigningKey { key })
    }

    /// A public name of the key (16 hex digits), recorded with each
    /// signature so that a snapshot signed with another key says so.
    pub fn id(&self) -> String {
        to_hex(&blake3::derive_key(KEY_ID_CONTEXT, &self.key)[..8])
    }

    fn sign(&self, manifest: &[u8]) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(SIGNING_CONTEXT);
        hasher.update(manifest);
        hasher.finalize()
    }

    /// The signature object for these manifest bytes.
    pub(crate) fn signature_for(&self, manifest: &[u8]) -> Vec<u8> {
        let signature = SignatureFile { key_id: self.id(), signature: self.sign(manifest).to_hex().to_string() };
        // Two strings cannot fail to encode.
        serde_json::to_vec(&signature).unwrap_or_default()
    }

    /// Check a signature object (`None`: the snapshot has none) against the manifest bytes.
    pub(crate) fn check(&self, manifest: &[u8], signature: Option<&[u8]>) -> Signature {
        let Some(signature) = signature else { return Signature::Unsigned };
        let Ok(signature) = serde_json::from_slice::<SignatureFile>(signature) else { return Signature::Invalid };
        if signature.key_id != self.id() {
            return Signature::OtherKey(signature.key_id);
        }
        match blake3::Hash::from_hex(&signature.signature) {
            // `Hash` compares in constant time.
            Ok(given) if given == self.sign(manifest) => Signature::Valid,
            _ => Signature::Invalid,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct SignatureFile {
    key_id: String,
    /// Keyed BLAKE3 of the manifest's bytes, hex.
    signature: String,
}

/// How a snapshot's manifest stands against a signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// Signed with the key.
    Valid,
    /// No signature.
    Unsigned,
    /// Signed with another key (its id).
    OtherKey(String),
    /// A signature that does not match the manifest: the manifest or the
    /// signature was written by someone without the key.
    Invalid,
}

impl Signature {
    /// A short name for JSON: `valid`, `unsigned`, `other-key` or `invalid`.
    pub fn code(&self) -> &'static str {
        match self {
            Signature::Valid => "valid",
            Signature::Unsigned => "unsigned",
            Signature::OtherKey(_) => "other-key",
            Signature::Invalid => "invalid",
        }
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signature::Valid => write!(f, "signed with this key"),
            Signature::Unsigned => write!(f, "not signed"),
            Signature::OtherKey(id) => write!(f, "signed with another key ({id})"),
            Signature::Invalid => write!(f, "signature does not match (forged or damaged)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_holds_only_for_the_same_bytes_and_key() {
        let key = SigningKey::generate();
        let manifest = br#"{"snapshot": "20261124T101500Z"}"#;
        let signature = key.signature_for(manifest);
        assert_eq!(key.check(manifest, Some(&signature)), Signature::Valid);
        assert_eq!(key.check(br#"{"snapshot": "20261124T101501Z"}"#, Some(&signature)), Signature::Invalid);
        assert_eq!(key.check(manifest, None), Signature::Unsigned);
        assert_eq!(key.check(manifest, Some(b"not json")), Signature::Invalid);

        let other = SigningKey::generate();
        assert_eq!(other.check(manifest, Some(&signature)), Signature::OtherKey(key.id()));
        // A signature that claims the right key id but was made without the key.
        let forged = serde_json::json!({ "key_id": key.id(), "signature": blake3::hash(manifest).to_hex().as_str() });
        assert_eq!(key.check(manifest, Some(forged.to_string().as_bytes())), Signature::Invalid);
    }

    #[test]
    fn key_files_are_made_once_private_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("backup.key");
        let key = SigningKey::create_file(&path).expect("new key");
        let mode = std::fs::metadata(&path).expect("metadata").permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o400);
        assert_eq!(SigningKey::read_file(&path).expect("read").id(), key.id());
        assert!(SigningKey::create_file(&path).is_err(), "an existing key is never replaced");

        let short = dir.path().join("short.key");
        std::fs::write(&short, "abcd\n").expect("write");
        assert_eq!(SigningKey::read_file(&short).err().map(|error| error.kind()), Some(io::ErrorKind::InvalidData));
        std::fs::write(&short, format!("{}\n", "zz".repeat(32))).expect("write");
        assert!(SigningKey::read_file(&short).is_err());
    }
}
