//! Signed snapshots: a key kept on the archive node signs each manifest,
//! so that whoever holds only the backup's write keys cannot pass off a
//! snapshot of their own as Haneul's.
//!
//! Object Lock keeps what Haneul wrote, but the same keys that write
//! backups can add a complete-looking snapshot, newer than the real ones,
//! and a restore takes the newest. Given the verify key, restores and drills
//! take only snapshots signed with its signing key and name the newer ones
//! they passed over.
//!
//! Signatures are Ed25519 over the length and BLAKE3 digest of the
//! manifest's exact bytes (so a manifest is checked as it streams in, and
//! only a genuine one is held whole), stored beside it as `manifest.sig`
//! before the manifest itself is written. The manifest
//! holds the digests of the catalog copy, of every blob and of the audit
//! trail, and its own snapshot name, so the signature covers the whole
//! snapshot and cannot be moved to another name. Checking needs only the
//! public half (the verify key), so a drill host or a restore runbook holds
//! nothing that signs.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

use crate::manifest::to_hex;

/// Signature object of a snapshot, beside its manifest.
pub(crate) const SIGNATURE_FILE: &str = "manifest.sig";
/// A signature object is a few hundred bytes; more is not ours.
pub(crate) const MAX_SIGNATURE_BYTES: u64 = 4096;
/// Signed before the manifest's length and digest: these signatures mean nothing else.
const SIGNING_CONTEXT: &[u8] = b"haneul backup manifest signature v1\0";
const SIGNING_KEY_LABEL: &str = "haneul-backup-signing-key-v1";
const VERIFY_KEY_LABEL: &str = "haneul-backup-verify-key-v1";

/// The secret half: signs snapshots (`haneul backup --key`).
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.verify_key().id())
    }
}

/// The public half: checks signatures (restores, drills, listings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyKey {
    public: [u8; 32],
}

impl SigningKey {
    /// Make a new key pair: the signing key at `path` (readable by its
    /// owner only) and the verify key beside it (`<path>.pub`). Neither
    /// may exist; a failed run leaves neither.
    pub fn create_files(path: &Path) -> io::Result<SigningKey> {
        let random = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&random)
            .map_err(|_| io::Error::other("the system's random source failed"))?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|error| io::Error::other(error.to_string()))?;
        let key = SigningKey { pair };
        let public_path = verify_key_path(path);
        write_new(path, 0o400, &format!("{SIGNING_KEY_LABEL} {}\n", to_hex(pkcs8.as_ref())))?;
        if let Err(error) = write_new(&public_path, 0o444, &key.verify_key().file_text()) {
            let _ = fs::remove_file(path);
            return Err(io::Error::new(error.kind(), format!("{}: {error}", public_path.display())));
        }
        // The files are complete; a directory that cannot be synced is only said.
        let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if let Err(error) = fs::File::open(dir).and_then(|dir| dir.sync_all()) {
            tracing::warn!(dir = %dir.display(), %error, "cannot sync the directory of the new key files");
        }
        Ok(key)
    }

    /// Read a signing key file (as [`SigningKey::create_files`] writes it).
    pub fn read_file(path: &Path) -> io::Result<SigningKey> {
        let text = fs::read_to_string(path)?;
        let pkcs8 = text
            .trim()
            .strip_prefix(SIGNING_KEY_LABEL)
            .and_then(|rest| from_hex(rest.trim()))
            .ok_or_else(|| invalid(format!("not a backup signing key (a line starting {SIGNING_KEY_LABEL})")))?;
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|error| invalid(format!("a damaged key: {error}")))?;
        if fs::metadata(path)?.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %path.display(), "the backup signing key is readable by others than its owner");
        }
        Ok(SigningKey { pair })
    }

    pub fn verify_key(&self) -> VerifyKey {
        let mut public = [0u8; 32];
        public.copy_from_slice(self.pair.public_key().as_ref());
        VerifyKey { public }
    }

    /// The signature object for these manifest bytes.
    pub(crate) fn signature_for(&self, manifest: &[u8]) -> Vec<u8> {
        let signature = self.pair.sign(&signed_message(&ManifestDigest::of(manifest)));
        // Both values are hex: nothing to escape.
        format!(r#"{{"key_id":"{}","signature":"{}"}}"#, self.verify_key().id(), to_hex(signature.as_ref()))
            .into_bytes()
    }
}

impl VerifyKey {
    /// Read a verify key file (`<key>.pub`); a signing key file gives its
    /// public half, with a warning: only the archive node needs it.
    pub fn read_file(path: &Path) -> io::Result<VerifyKey> {
        let text = fs::read_to_string(path)?;
        let text = text.trim();
        if text.starts_with(SIGNING_KEY_LABEL) {
            tracing::warn!(
                file = %path.display(),
                "this is the signing key; checking needs only its verify key ({}), keep the signing key on the archive node",
                verify_key_path(path).display()
            );
            return Ok(SigningKey::read_file(path)?.verify_key());
        }
        let public = text
            .strip_prefix(VERIFY_KEY_LABEL)
            .and_then(|rest| from_hex(rest.trim()))
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| invalid(format!("not a backup verify key (a line starting {VERIFY_KEY_LABEL})")))?;
        Ok(VerifyKey { public })
    }

    /// The verify key with these 32 public bytes.
    pub fn from_public(public: [u8; 32]) -> VerifyKey {
        VerifyKey { public }
    }

    fn file_text(&self) -> String {
        format!("{VERIFY_KEY_LABEL} {}\n", to_hex(&self.public))
    }

    /// A short public name of the key pair (16 hex digits), recorded with
    /// each signature so that a snapshot signed with another key says so.
    pub fn id(&self) -> String {
        to_hex(&blake3::hash(&self.public).as_bytes()[..8])
    }

    /// What a signature object says before the manifest is read: whether
    /// it is by this key pair at all (else why not).
    pub(crate) fn claims(&self, signature: Option<&[u8]>) -> Result<Claim, Signature> {
        let Some(signature) = signature else { return Err(Signature::Unsigned) };
        let Ok(signature) = serde_json::from_slice::<SignatureFile>(signature) else { return Err(Signature::Invalid) };
        // Shown to the operator: only what a key id can be.
        if signature.key_id.len() != 16 || !signature.key_id.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(Signature::Invalid);
        }
        if signature.key_id != self.id() {
            return Err(Signature::OtherKey(signature.key_id));
        }
        from_hex(&signature.signature).map(|bytes| Claim { signature: bytes }).ok_or(Signature::Invalid)
    }

    /// Whether a claimed signature holds for the manifest's length and digest.
    pub(crate) fn verify(&self, claim: &Claim, manifest: &ManifestDigest) -> Signature {
        match UnparsedPublicKey::new(&ED25519, &self.public).verify(&signed_message(manifest), &claim.signature) {
            Ok(()) => Signature::Valid,
            Err(_) => Signature::Invalid,
        }
    }

    /// Check a signature object (`None`: the snapshot has none) against whole manifest bytes.
    #[cfg(test)]
    pub(crate) fn check(&self, manifest: &[u8], signature: Option<&[u8]>) -> Signature {
        match self.claims(signature) {
            Ok(claim) => self.verify(&claim, &ManifestDigest::of(manifest)),
            Err(signature) => signature,
        }
    }
}

/// Where [`SigningKey::create_files`] puts the verify key of `path`.
pub fn verify_key_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// A signature by this key pair, not yet checked against a manifest.
pub(crate) struct Claim {
    signature: Vec<u8>,
}

/// What a signature covers of a manifest: its length and BLAKE3 digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ManifestDigest {
    pub len: u64,
    pub hash: [u8; 32],
}

impl ManifestDigest {
    pub(crate) fn of(manifest: &[u8]) -> ManifestDigest {
        ManifestDigest { len: manifest.len() as u64, hash: *blake3::hash(manifest).as_bytes() }
    }
}

fn signed_message(manifest: &ManifestDigest) -> Vec<u8> {
    [SIGNING_CONTEXT, &manifest.len.to_le_bytes(), &manifest.hash].concat()
}

fn write_new(path: &Path, mode: u32, text: &str) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(path)?;
    let written = file.write_all(text.as_bytes()).and_then(|()| file.sync_all());
    if written.is_err() {
        let _ = fs::remove_file(path);
    }
    written
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len()).step_by(2).map(|at| u8::from_str_radix(&text[at..at + 2], 16).ok()).collect()
}

#[derive(serde::Deserialize)]
struct SignatureFile {
    key_id: String,
    /// Ed25519 over the context and the manifest's bytes, hex.
    signature: String,
}

/// How a snapshot's manifest stands against a verify key.
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

    fn new_key(dir: &Path) -> SigningKey {
        SigningKey::create_files(&dir.join("backup.key")).expect("new key")
    }

    #[test]
    fn a_signature_holds_only_for_the_same_bytes_and_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = new_key(dir.path());
        let verify = key.verify_key();
        let manifest = br#"{"snapshot": "20261124T101500Z"}"#;
        let signature = key.signature_for(manifest);
        assert_eq!(verify.check(manifest, Some(&signature)), Signature::Valid);
        assert_eq!(verify.check(br#"{"snapshot": "20261124T101501Z"}"#, Some(&signature)), Signature::Invalid);
        assert_eq!(verify.check(manifest, None), Signature::Unsigned);
        assert_eq!(verify.check(manifest, Some(b"not json")), Signature::Invalid);

        let other = SigningKey::create_files(&dir.path().join("other.key")).expect("other key");
        assert_eq!(other.verify_key().check(manifest, Some(&signature)), Signature::OtherKey(verify.id()));
        // A signature that claims the right key id but was made without the key.
        let forged = serde_json::json!({ "key_id": verify.id(), "signature": to_hex(&[7u8; 64]) });
        assert_eq!(verify.check(manifest, Some(forged.to_string().as_bytes())), Signature::Invalid);
        let forged = serde_json::json!({ "key_id": verify.id(), "signature": "+f" });
        assert_eq!(verify.check(manifest, Some(forged.to_string().as_bytes())), Signature::Invalid);
        // A key id is 16 hex digits, nothing else (it is shown to the operator).
        let forged = serde_json::json!({ "key_id": "\u{1b}[2J", "signature": to_hex(&[7u8; 64]) });
        assert_eq!(verify.check(manifest, Some(forged.to_string().as_bytes())), Signature::Invalid);
    }

    #[test]
    fn key_files_are_made_once_the_secret_one_private_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("backup.key");
        let key = new_key(dir.path());
        let mode = |path: &Path| fs::metadata(path).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o400);
        assert_eq!(mode(&verify_key_path(&path)) & 0o222, 0, "the verify key is read-only");
        assert_eq!(SigningKey::read_file(&path).expect("read").verify_key(), key.verify_key());
        assert_eq!(VerifyKey::read_file(&verify_key_path(&path)).expect("read"), key.verify_key());
        // The secret file gives its public half too.
        assert_eq!(VerifyKey::read_file(&path).expect("read"), key.verify_key());
        assert!(SigningKey::create_files(&path).is_err(), "an existing key is never replaced");
        assert!(SigningKey::read_file(&verify_key_path(&path)).is_err(), "the public half does not sign");

        let bad = dir.path().join("bad.key");
        for text in ["abcd\n".to_string(), format!("{VERIFY_KEY_LABEL} {}\n", "+f".repeat(32))] {
            fs::write(&bad, text).expect("write");
            assert_eq!(VerifyKey::read_file(&bad).err().map(|error| error.kind()), Some(io::ErrorKind::InvalidData));
        }
    }
}
