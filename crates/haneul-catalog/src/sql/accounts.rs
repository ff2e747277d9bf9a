//! User accounts and API tokens.

use super::db::{Db, Row};
use super::now_ms;
use crate::accounts::*;
use crate::{CatalogError, Result};

const USER_COLUMNS: &str =
    "pk, name, role, password_hash, disabled, must_change_password, sites, created_ms, updated_ms";

const TOKEN_SELECT: &str = "SELECT t.id, u.name, t.name, t.secret_hash, t.created_ms, t.expires_ms, t.revoked_ms
     FROM api_tokens t JOIN users u ON u.pk = t.user_pk";

/// Names are unique and looked up regardless of ASCII case (SQLite's NOCASE).
const BY_NAME: &str = "lower(name) = lower(?1)";

fn user_row(row: &dyn Row) -> Result<UserRecord> {
    let name = row.text(1)?;
    let sites = serde_json::from_str(&row.text(6)?)
        .map_err(|error| CatalogError::CorruptRecord(format!("sites of user {name:?}: {error}")))?;
    Ok(UserRecord {
        pk: row.int(0)?,
        name,
        role: row.text(2)?,
        password_hash: row.text(3)?,
        disabled: row.flag(4)?,
        must_change_password: row.flag(5)?,
        sites,
        created_ms: row.int(7)?,
        updated_ms: row.int(8)?,
    })
}

fn token_row(row: &dyn Row) -> Result<TokenRecord> {
    let hash = row.bytes(3)?;
    let secret_hash =
        hash.as_slice().try_into().map_err(|_| CatalogError::CorruptRecord("token hash is not 32 bytes".into()))?;
    Ok(TokenRecord {
        id: row.text(0)?,
        user: row.text(1)?,
        name: row.text(2)?,
        secret_hash,
        created_ms: row.int(4)?,
        expires_ms: row.opt_int(5)?,
        revoked_ms: row.opt_int(6)?,
    })
}

pub(super) fn count_users(db: &mut dyn Db) -> Result<i64> {
    db.query_one("SELECT COUNT(*) FROM users", &[], |row| row.int(0))
}

pub(super) fn insert_user(db: &mut dyn Db, user: &NewUserRecord<'_>) -> Result<UserRecord> {
    let at_ms = now_ms();
    let sites = serde_json::to_string(user.sites).unwrap_or_else(|_| "[]".into());
    // Checked first (write transactions are serialised, so the check
    // decides), as PostgreSQL aborts a transaction on a violated constraint.
    if db.exists(&format!("SELECT 1 FROM users WHERE {BY_NAME}"), &[user.name.into()])? {
        return Err(CatalogError::Duplicate(format!("user {:?}", user.name)));
    }
    db.query_one(
        &format!(
            "INSERT INTO users (name, role, password_hash, disabled, must_change_password, sites, created_ms, updated_ms)
             VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6, ?6) RETURNING {USER_COLUMNS}"
        ),
        &[
            user.name.into(),
            user.role.into(),
            user.password_hash.into(),
            user.must_change_password.into(),
            (&sites).into(),
            at_ms.into(),
        ],
        user_row,
    )
}

pub(super) fn select_user(db: &mut dyn Db, name: &str) -> Result<Option<UserRecord>> {
    db.query_opt(&format!("SELECT {USER_COLUMNS} FROM users WHERE {BY_NAME}"), &[name.into()], user_row)
}

pub(super) fn select_users(db: &mut dyn Db) -> Result<Vec<UserRecord>> {
    db.query_all(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY lower(name), name"), &[], user_row)
}

pub(super) fn update_user(db: &mut dyn Db, name: &str, change: UserChange<'_>) -> Result<bool> {
    let at_ms = now_ms();
    let changed = match change {
        UserChange::Password { hash, must_change } => db.execute(
            &format!("UPDATE users SET password_hash = ?2, must_change_password = ?3, updated_ms = ?4 WHERE {BY_NAME}"),
            &[name.into(), hash.into(), must_change.into(), at_ms.into()],
        )?,
        UserChange::Disabled(disabled) => db.execute(
            &format!("UPDATE users SET disabled = ?2, updated_ms = ?3 WHERE {BY_NAME}"),
            &[name.into(), disabled.into(), at_ms.into()],
        )?,
    };
    Ok(changed > 0)
}

pub(super) fn insert_token(db: &mut dyn Db, token: &TokenRecord) -> Result<bool> {
    if db.exists("SELECT 1 FROM api_tokens WHERE id = ?1", &[(&token.id).into()])? {
        return Err(CatalogError::Duplicate(format!("token {:?}", token.id)));
    }
    let inserted = db.execute(
        &format!(
            "INSERT INTO api_tokens (id, user_pk, name, secret_hash, created_ms, expires_ms, revoked_ms)
             SELECT ?1, pk, ?3, ?4, ?5, ?6, ?7 FROM users WHERE {}",
            BY_NAME.replace("?1", "?2")
        ),
        &[
            (&token.id).into(),
            (&token.user).into(),
            (&token.name).into(),
            token.secret_hash[..].into(),
            token.created_ms.into(),
            token.expires_ms.into(),
            token.revoked_ms.into(),
        ],
    )?;
    Ok(inserted > 0)
}

pub(super) fn select_token(db: &mut dyn Db, id: &str) -> Result<Option<TokenRecord>> {
    db.query_opt(&format!("{TOKEN_SELECT} WHERE t.id = ?1"), &[id.into()], token_row)
}

pub(super) fn select_tokens(db: &mut dyn Db) -> Result<Vec<TokenRecord>> {
    db.query_all(&format!("{TOKEN_SELECT} ORDER BY t.created_ms, t.id"), &[], token_row)
}

pub(super) fn revoke_token(db: &mut dyn Db, id: &str, at_ms: i64) -> Result<bool> {
    let changed = db.execute(
        "UPDATE api_tokens SET revoked_ms = COALESCE(revoked_ms, ?2) WHERE id = ?1",
        &[id.into(), at_ms.into()],
    )?;
    Ok(changed > 0)
}
