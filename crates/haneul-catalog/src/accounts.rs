//! Records of user accounts and API tokens.
//!
//! The catalog stores credentials only in hashed form: an Argon2id PHC string
//! for a password, a BLAKE3 digest for an API token's secret. Hashing and
//! checking happen in the archive core; the catalog never sees a password.

use serde::Serialize;

/// A user account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub pk: i64,
    /// Unique, compared without regard to ASCII case.
    pub name: String,
    /// One of the role names the core knows (`admin`, `clinician`, …).
    pub role: String,
    /// Argon2id hash in PHC string format; never a password.
    pub password_hash: String,
    pub disabled: bool,
    pub must_change_password: bool,
    /// Sites (institutions) the user is limited to; empty means every site.
    pub sites: Vec<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// A user account to create.
#[derive(Debug, Clone)]
pub struct NewUserRecord<'a> {
    pub name: &'a str,
    pub role: &'a str,
    pub password_hash: &'a str,
    pub must_change_password: bool,
    pub sites: &'a [String],
}

/// An API token as stored: the digest of its secret, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    /// Public identifier, part of the token string.
    pub id: String,
    /// Name of the user the token acts as.
    pub user: String,
    /// What the token is for (chosen by whoever created it).
    pub name: String,
    /// BLAKE3 digest of the secret.
    #[serde(skip)]
    pub secret_hash: [u8; 32],
    pub created_ms: i64,
    /// `None`: never expires.
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
}

/// A changed field of a user account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserChange<'a> {
    Password { hash: &'a str, must_change: bool },
    Disabled(bool),
}
