//! User accounts, passwords and API tokens.
//!
//! Passwords are hashed with Argon2id ([`ARGON2_MEMORY_KIB`], [`ARGON2_ITERATIONS`],
//! [`ARGON2_PARALLELISM`]) and only the PHC string is stored; an API token's
//! secret is shown once, when it is created, and only its BLAKE3 digest is
//! stored. Every function here is synchronous and some take tens of
//! milliseconds of CPU (hashing): async callers run them with
//! `tokio::task::spawn_blocking`.
//!
//! Verification answers the same way, in about the same time, whether a user
//! is unknown, disabled or gave a wrong password ([`UsersError::Unauthenticated`]
//! carries the reason for the audit trail, its message does not).

pub mod roles;

pub use roles::{Permission, PermissionMatrix, Permissions, Role, UnknownRole};

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use haneul_catalog::{Catalog, CatalogError, NewUserRecord, TokenRecord, UserChange, UserRecord};
use serde::Serialize;

/// Argon2id memory cost in KiB (19 MiB, the OWASP recommendation for Argon2id).
pub const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
/// Argon2id passes over the memory.
pub const ARGON2_ITERATIONS: u32 = 2;
/// Argon2id lanes.
pub const ARGON2_PARALLELISM: u32 = 1;
/// Shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Every API token starts with this.
pub const TOKEN_PREFIX: &str = "hnl_";
/// The account created on first start.
pub const INITIAL_ADMIN: &str = "admin";
/// Environment variable with the first-start admin password (else one is generated).
pub const ADMIN_PASSWORD_ENV: &str = "HANEUL_ADMIN_PASSWORD";

const TOKEN_ID_BYTES: usize = 8;
const TOKEN_SECRET_BYTES: usize = 32;
const GENERATED_PASSWORD_CHARS: usize = 20;
/// Letters and digits without the look-alikes 0/O, 1/l/I.
const PASSWORD_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";

/// A user account, without its password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub name: String,
    pub role: Role,
    pub disabled: bool,
    pub must_change_password: bool,
    /// Sites the user is limited to; empty: every site.
    pub sites: Vec<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// An account to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub name: String,
    pub role: Role,
    pub password: String,
    pub sites: Vec<String>,
    pub must_change_password: bool,
}

/// An API token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiToken {
    pub id: String,
    pub user: String,
    pub name: String,
    pub created_ms: i64,
    /// `None`: never expires.
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenState {
    Active,
    Expired,
    Revoked,
}

impl TokenState {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Active => "active",
            TokenState::Expired => "expired",
            TokenState::Revoked => "revoked",
        }
    }
}

impl ApiToken {
    pub fn state_at(&self, now_ms: i64) -> TokenState {
        if self.revoked_ms.is_some() {
            TokenState::Revoked
        } else if self.expires_ms.is_some_and(|expires| expires <= now_ms) {
            TokenState::Expired
        } else {
            TokenState::Active
        }
    }
}

/// A token just created: `secret` is the whole token string
/// (`hnl_<id>_<secret>`), shown once and never stored.
#[derive(Debug, Clone)]
pub struct CreatedToken {
    pub token: ApiToken,
    pub secret: String,
}

/// The account made on first start, with the password if it was generated.
#[derive(Debug, Clone)]
pub struct InitialAdmin {
    pub user: User,
    pub generated_password: Option<String>,
}

/// Why credentials were refused; for the audit trail, never for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    UnknownUser,
    WrongPassword,
    Disabled,
    MalformedToken,
    UnknownToken,
    WrongSecret,
    ExpiredToken,
    RevokedToken,
}

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    #[error("user {0:?} already exists")]
    DuplicateUser(String),
    #[error("unknown token {0:?}")]
    UnknownToken(String),
    #[error(transparent)]
    UnknownRole(#[from] UnknownRole),
    #[error("{0}")]
    Invalid(String),
    /// Wrong, unknown, disabled, expired or revoked: one message for all.
    #[error("invalid credentials")]
    Unauthenticated(AuthFailure),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

type Result<T> = std::result::Result<T, UsersError>;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(ARGON2_MEMORY_KIB, ARGON2_ITERATIONS, ARGON2_PARALLELISM, None)
        .expect("the Argon2 parameters are within range");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hash a password into an Argon2id PHC string with a random salt.
pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| UsersError::Hashing(error.to_string()))
}

/// Check a password against a PHC string, in constant time (the argon2
/// crate compares the outputs so). The parameters are the hash's own.
pub fn password_matches(phc: &str, password: &str) -> bool {
    #[cfg(test)]
    tests::VERIFICATIONS.with(|count| count.set(count.get() + 1));
    match PasswordHash::new(phc) {
        Ok(hash) => argon2().verify_password(password.as_bytes(), &hash).is_ok(),
        Err(_) => false,
    }
}

/// A hash to verify against when the user does not exist, so that an
/// unknown name costs the same time as a wrong password.
pub(crate) fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&generate_password()).unwrap_or_default())
}

/// A random password of 20 letters and digits (about 117 bits).
pub fn generate_password() -> String {
    let mut random = [0u8; GENERATED_PASSWORD_CHARS * 2];
    let mut password = String::with_capacity(GENERATED_PASSWORD_CHARS);
    // Rejection sampling keeps the choice uniform over the alphabet.
    let limit = 256 - 256 % PASSWORD_ALPHABET.len();
    while password.len() < GENERATED_PASSWORD_CHARS {
        OsRng.fill_bytes(&mut random);
        for byte in random {
            if (byte as usize) < limit && password.len() < GENERATED_PASSWORD_CHARS {
                password.push(PASSWORD_ALPHABET[byte as usize % PASSWORD_ALPHABET.len()] as char);
            }
        }
    }
    password
}

fn check_password(password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(UsersError::Invalid(format!(
            "password is too short: use at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(UsersError::Invalid(format!("password is too long: use at most {MAX_PASSWORD_BYTES} bytes")));
    }
    Ok(())
}

/// User names: 1 to 64 ASCII letters, digits, `.`, `_`, `-` or `@`,
/// starting with a letter or digit.
pub fn check_user_name(name: &str) -> Result<()> {
    let valid = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if valid {
        Ok(())
    } else {
        Err(UsersError::Invalid(format!(
            "invalid user name {name:?}: use 1 to 64 letters, digits, '.', '_', '-' or '@', starting with a letter or digit"
        )))
    }
}

fn clean_sites(sites: &[String]) -> Result<Vec<String>> {
    let mut cleaned: Vec<String> = Vec::new();
    for site in sites {
        let site = site.trim();
        if site.is_empty() || site.len() > 64 || site.chars().any(char::is_control) {
            return Err(UsersError::Invalid(format!("invalid site name {site:?}: use 1 to 64 printable characters")));
        }
        if !cleaned.iter().any(|known| known == site) {
            cleaned.push(site.to_string());
        }
    }
    Ok(cleaned)
}

fn user_from(record: UserRecord) -> Result<User> {
    Ok(User {
        role: record.role.parse().map_err(|_| {
            CatalogError::CorruptRecord(format!("user {:?} has unknown role {:?}", record.name, record.role))
        })?,
        name: record.name,
        disabled: record.disabled,
        must_change_password: record.must_change_password,
        sites: record.sites,
        created_ms: record.created_ms,
        updated_ms: record.updated_ms,
    })
}

fn token_from(record: TokenRecord) -> ApiToken {
    ApiToken {
        id: record.id,
        user: record.user,
        name: record.name,
        created_ms: record.created_ms,
        expires_ms: record.expires_ms,
        revoked_ms: record.revoked_ms,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Split `hnl_<id>_<secret>` into the id and the secret's bytes.
fn parse_token(presented: &str) -> Option<(&str, [u8; TOKEN_SECRET_BYTES])> {
    let (id, secret) = presented.trim().strip_prefix(TOKEN_PREFIX)?.split_once('_')?;
    if id.len() != TOKEN_ID_BYTES * 2 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    // 32 bytes are 43 characters of unpadded base64url.
    if secret.len() != 43 {
        return None;
    }
    URL_SAFE_NO_PAD.decode(secret).ok()?.try_into().ok().map(|secret| (id, secret))
}

/// How long a verified API token is taken on trust before the catalog is
/// asked again. Revocations and disabled accounts through this process take
/// effect at once; through another one (the command line beside a running
/// server) within this time.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(2);
const TOKEN_CACHE_ENTRIES: usize = 10_000;

/// Tokens verified in the last [`TOKEN_CACHE_TTL`], by the digest of the
/// whole presented token: each request with a token would otherwise cost two
/// catalog reads on a blocking thread.
#[derive(Default)]
pub struct TokenCache {
    entries: std::sync::Mutex<std::collections::HashMap<[u8; 32], (User, ApiToken, std::time::Instant)>>,
}

impl TokenCache {
    fn entries(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<[u8; 32], (User, ApiToken, std::time::Instant)>> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn forget(&self, keep: impl Fn(&User, &ApiToken) -> bool) {
        self.entries().retain(|_, (user, token, _)| keep(user, token));
    }
}

/// Accounts and tokens of one archive. Cheap to clone.
#[derive(Clone)]
pub struct Users {
    catalog: Arc<dyn Catalog>,
    token_cache: Arc<TokenCache>,
}

impl Users {
    pub(crate) fn new(catalog: Arc<dyn Catalog>, token_cache: Arc<TokenCache>) -> Users {
        Users { catalog, token_cache }
    }

    /// Open the accounts of the archive in `data_dir` without opening the
    /// archive itself (the command-line tools; a running server is fine,
    /// the database arbitrates).
    pub fn open(data_dir: &Path, location: &crate::CatalogLocation) -> Result<Users> {
        let catalog = location.open(data_dir)?;
        Ok(Users { catalog, token_cache: Arc::default() })
    }

    pub fn create_user(&self, new: &NewUser) -> Result<User> {
        check_user_name(&new.name)?;
        check_password(&new.password)?;
        let sites = clean_sites(&new.sites)?;
        let hash = hash_password(&new.password)?;
        let record = NewUserRecord {
            name: &new.name,
            role: new.role.as_str(),
            password_hash: &hash,
            must_change_password: new.must_change_password,
            sites: &sites,
        };
        match self.catalog.create_user(&record) {
            Ok(created) => user_from(created),
            Err(CatalogError::Duplicate(_)) => Err(UsersError::DuplicateUser(new.name.clone())),
            Err(error) => Err(error.into()),
        }
    }

    /// On first start: with no account at all, create [`INITIAL_ADMIN`] with
    /// `password` or a generated one, to be changed at first login. `None`
    /// when accounts exist.
    ///
    /// Called at every server start, it also prepares the hash that unknown
    /// names are verified against, so the first one is not slower than the rest.
    pub fn ensure_initial_admin(&self, password: Option<String>) -> Result<Option<InitialAdmin>> {
        dummy_hash();
        if !self.catalog.users()?.is_empty() {
            return Ok(None);
        }
        let (password, generated) = match password {
            Some(password) => (password, false),
            None => (generate_password(), true),
        };
        check_password(&password)?;
        let hash = hash_password(&password)?;
        let record = NewUserRecord {
            name: INITIAL_ADMIN,
            role: Role::Admin.as_str(),
            password_hash: &hash,
            must_change_password: true,
            sites: &[],
        };
        let Some(created) = self.catalog.create_first_user(&record)? else {
            return Ok(None);
        };
        Ok(Some(InitialAdmin { user: user_from(created)?, generated_password: generated.then_some(password) }))
    }

    /// The enabled account `name` if `password` is its password.
    pub fn verify_password(&self, name: &str, password: &str) -> Result<User> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(UsersError::Unauthenticated(AuthFailure::WrongPassword));
        }
        let Some(record) = self.catalog.user(name)? else {
            let _ = password_matches(dummy_hash(), password);
            return Err(UsersError::Unauthenticated(AuthFailure::UnknownUser));
        };
        // Hash even for a disabled account so that the time tells nothing.
        let matches = password_matches(&record.password_hash, password);
        if record.disabled {
            return Err(UsersError::Unauthenticated(AuthFailure::Disabled));
        }
        if !matches {
            return Err(UsersError::Unauthenticated(AuthFailure::WrongPassword));
        }
        user_from(record)
    }

    /// Set a new password (an administrator's reset; `must_change` asks the
    /// user to choose another at the next login).
    pub fn change_password(&self, name: &str, new_password: &str, must_change: bool) -> Result<()> {
        check_password(new_password)?;
        let hash = hash_password(new_password)?;
        if self.catalog.update_user(name, UserChange::Password { hash: &hash, must_change })? {
            Ok(())
        } else {
            Err(UsersError::UnknownUser(name.to_string()))
        }
    }

    /// A user changing their own password, proving the current one.
    pub fn change_own_password(&self, name: &str, current: &str, new_password: &str) -> Result<()> {
        self.verify_password(name, current)?;
        if current == new_password {
            return Err(UsersError::Invalid("the new password must differ from the current one".into()));
        }
        self.change_password(name, new_password, false)
    }

    pub fn set_disabled(&self, name: &str, disabled: bool) -> Result<()> {
        self.token_cache.forget(|user, _| !user.name.eq_ignore_ascii_case(name));
        if self.catalog.update_user(name, UserChange::Disabled(disabled))? {
            Ok(())
        } else {
            Err(UsersError::UnknownUser(name.to_string()))
        }
    }

    pub fn user(&self, name: &str) -> Result<Option<User>> {
        self.catalog.user(name)?.map(user_from).transpose()
    }

    /// Every account, by name.
    pub fn list(&self) -> Result<Vec<User>> {
        self.catalog.users()?.into_iter().map(user_from).collect()
    }

    /// A new API token acting as `user`, expiring after `valid_for` (never with `None`).
    pub fn create_token(&self, user: &str, name: &str, valid_for: Option<Duration>) -> Result<CreatedToken> {
        let name = name.trim();
        if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
            return Err(UsersError::Invalid(format!("invalid token name {name:?}: use 1 to 100 printable characters")));
        }
        let mut id = [0u8; TOKEN_ID_BYTES];
        let mut secret = [0u8; TOKEN_SECRET_BYTES];
        OsRng.fill_bytes(&mut id);
        OsRng.fill_bytes(&mut secret);
        let created_ms = now_ms();
        let expires_ms =
            valid_for.map(|valid| created_ms.saturating_add(valid.as_millis().min(i64::MAX as u128) as i64));
        let record = TokenRecord {
            id: hex(&id),
            user: user.to_string(),
            name: name.to_string(),
            secret_hash: *blake3::hash(&secret).as_bytes(),
            created_ms,
            expires_ms,
            revoked_ms: None,
        };
        if !self.catalog.create_token(&record)? {
            return Err(UsersError::UnknownUser(user.to_string()));
        }
        // The stored record names the user as spelled in the catalog.
        let token = self.catalog.token(&record.id)?.map(token_from).unwrap_or_else(|| token_from(record));
        let secret = format!("{TOKEN_PREFIX}{}_{}", token.id, URL_SAFE_NO_PAD.encode(secret));
        Ok(CreatedToken { token, secret })
    }

    /// A token verified within [`TOKEN_CACHE_TTL`] and not expired since:
    /// no catalog read, cheap enough for async code.
    pub fn cached_token(&self, presented: &str) -> Option<(User, ApiToken)> {
        let key = *blake3::hash(presented.as_bytes()).as_bytes();
        let mut entries = self.token_cache.entries();
        let (user, token, verified) = entries.get(&key)?;
        if verified.elapsed() >= TOKEN_CACHE_TTL || token.state_at(now_ms()) != TokenState::Active {
            entries.remove(&key);
            return None;
        }
        Some((user.clone(), token.clone()))
    }

    /// The enabled user a presented token acts as, with the token.
    pub fn verify_token(&self, presented: &str) -> Result<(User, ApiToken)> {
        let verified = self.verify_token_in_catalog(presented)?;
        let mut entries = self.token_cache.entries();
        if entries.len() >= TOKEN_CACHE_ENTRIES {
            entries.retain(|_, (_, _, at)| at.elapsed() < TOKEN_CACHE_TTL);
        }
        if entries.len() < TOKEN_CACHE_ENTRIES {
            let key = *blake3::hash(presented.as_bytes()).as_bytes();
            entries.insert(key, (verified.0.clone(), verified.1.clone(), std::time::Instant::now()));
        }
        Ok(verified)
    }

    fn verify_token_in_catalog(&self, presented: &str) -> Result<(User, ApiToken)> {
        let (id, secret) = parse_token(presented).ok_or(UsersError::Unauthenticated(AuthFailure::MalformedToken))?;
        let record = self.catalog.token(id)?.ok_or(UsersError::Unauthenticated(AuthFailure::UnknownToken))?;
        // blake3::Hash compares in constant time. The secret is checked
        // before anything else, so a guessed id learns nothing.
        if blake3::hash(&secret) != blake3::Hash::from(record.secret_hash) {
            return Err(UsersError::Unauthenticated(AuthFailure::WrongSecret));
        }
        let token = token_from(record);
        match token.state_at(now_ms()) {
            TokenState::Revoked => return Err(UsersError::Unauthenticated(AuthFailure::RevokedToken)),
            TokenState::Expired => return Err(UsersError::Unauthenticated(AuthFailure::ExpiredToken)),
            TokenState::Active => {}
        }
        let user = self.catalog.user(&token.user)?.ok_or(UsersError::Unauthenticated(AuthFailure::UnknownUser))?;
        if user.disabled {
            return Err(UsersError::Unauthenticated(AuthFailure::Disabled));
        }
        Ok((user_from(user)?, token))
    }

    pub fn revoke_token(&self, id: &str) -> Result<()> {
        self.token_cache.forget(|_, token| token.id != id.trim());
        if self.catalog.revoke_token(id.trim(), now_ms())? {
            Ok(())
        } else {
            Err(UsersError::UnknownToken(id.to_string()))
        }
    }

    /// Every token, oldest first (revoked and expired ones too).
    pub fn tokens(&self) -> Result<Vec<ApiToken>> {
        Ok(self.catalog.tokens()?.into_iter().map(token_from).collect())
    }
}

/// Milliseconds since the Unix epoch, as stored in the records here.
pub fn unix_ms_now() -> i64 {
    now_ms()
}

#[cfg(test)]
mod tests;
