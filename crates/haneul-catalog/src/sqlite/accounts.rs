//! User accounts and API tokens in SQLite.

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Row};

use super::now_ms;
use crate::accounts::*;
use crate::{CatalogError, Result};

const USER_COLUMNS: &str =
    "pk, name, role, password_hash, disabled, must_change_password, sites, created_ms, updated_ms";

const TOKEN_SELECT: &str = "SELECT t.id, u.name, t.name, t.secret_hash, t.created_ms, t.expires_ms, t.revoked_ms
     FROM api_tokens t JOIN users u ON u.pk = t.user_pk";

fn user_row(row: &Row<'_>) -> rusqlite::Result<(UserRecord, String)> {
    let sites: String = row.get(6)?;
    Ok((
        UserRecord {
            pk: row.get(0)?,
            name: row.get(1)?,
            role: row.get(2)?,
            password_hash: row.get(3)?,
            disabled: row.get(4)?,
            must_change_password: row.get(5)?,
            sites: Vec::new(),
            created_ms: row.get(7)?,
            updated_ms: row.get(8)?,
        },
        sites,
    ))
}

fn with_sites((mut user, sites): (UserRecord, String)) -> Result<UserRecord> {
    user.sites = serde_json::from_str(&sites)
        .map_err(|error| CatalogError::CorruptRecord(format!("sites of user {:?}: {error}", user.name)))?;
    Ok(user)
}

fn token_row(row: &Row<'_>) -> rusqlite::Result<TokenRecord> {
    let hash: Vec<u8> = row.get(3)?;
    let secret_hash = hash.as_slice().try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Blob, "token hash is not 32 bytes".into())
    })?;
    Ok(TokenRecord {
        id: row.get(0)?,
        user: row.get(1)?,
        name: row.get(2)?,
        secret_hash,
        created_ms: row.get(4)?,
        expires_ms: row.get(5)?,
        revoked_ms: row.get(6)?,
    })
}

fn is_unique_violation(error: &rusqlite::Error) -> bool {
    matches!(error, rusqlite::Error::SqliteFailure(failure, _) if failure.code == ErrorCode::ConstraintViolation)
}

pub(super) fn insert_user(connection: &Connection, user: &NewUserRecord<'_>) -> Result<UserRecord> {
    let at_ms = now_ms();
    let sites = serde_json::to_string(user.sites).unwrap_or_else(|_| "[]".into());
    let inserted = connection
        .prepare_cached(&format!(
            "INSERT INTO users (name, role, password_hash, disabled, must_change_password, sites, created_ms, updated_ms)
             VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6, ?6) RETURNING {USER_COLUMNS}"
        ))?
        .query_row(params![user.name, user.role, user.password_hash, user.must_change_password, sites, at_ms], user_row);
    match inserted {
        Ok(row) => with_sites(row),
        Err(error) if is_unique_violation(&error) => Err(CatalogError::Duplicate(format!("user {:?}", user.name))),
        Err(error) => Err(error.into()),
    }
}

pub(super) fn select_user(connection: &Connection, name: &str) -> Result<Option<UserRecord>> {
    let row = connection
        .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"))?
        .query_row([name], user_row)
        .optional()?;
    row.map(with_sites).transpose()
}

pub(super) fn select_users(connection: &Connection) -> Result<Vec<UserRecord>> {
    let mut statement = connection.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"))?;
    let rows = statement.query_map([], user_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter().map(with_sites).collect()
}

pub(super) fn update_user(connection: &Connection, name: &str, change: UserChange<'_>) -> Result<bool> {
    let at_ms = now_ms();
    let changed = match change {
        UserChange::Password { hash, must_change } => connection
            .prepare_cached(
                "UPDATE users SET password_hash = ?2, must_change_password = ?3, updated_ms = ?4 WHERE name = ?1",
            )?
            .execute(params![name, hash, must_change, at_ms])?,
        UserChange::Disabled(disabled) => connection
            .prepare_cached("UPDATE users SET disabled = ?2, updated_ms = ?3 WHERE name = ?1")?
            .execute(params![name, disabled, at_ms])?,
    };
    Ok(changed > 0)
}

pub(super) fn insert_token(connection: &Connection, token: &TokenRecord) -> Result<bool> {
    let inserted = connection
        .prepare_cached(
            "INSERT INTO api_tokens (id, user_pk, name, secret_hash, created_ms, expires_ms, revoked_ms)
             SELECT ?1, pk, ?3, ?4, ?5, ?6, ?7 FROM users WHERE name = ?2",
        )?
        .execute(params![
            token.id,
            token.user,
            token.name,
            token.secret_hash.as_slice(),
            token.created_ms,
            token.expires_ms,
            token.revoked_ms
        ]);
    match inserted {
        Ok(count) => Ok(count > 0),
        Err(error) if is_unique_violation(&error) => Err(CatalogError::Duplicate(format!("token {:?}", token.id))),
        Err(error) => Err(error.into()),
    }
}

pub(super) fn select_token(connection: &Connection, id: &str) -> Result<Option<TokenRecord>> {
    Ok(connection.prepare_cached(&format!("{TOKEN_SELECT} WHERE t.id = ?1"))?.query_row([id], token_row).optional()?)
}

pub(super) fn select_tokens(connection: &Connection) -> Result<Vec<TokenRecord>> {
    let mut statement = connection.prepare_cached(&format!("{TOKEN_SELECT} ORDER BY t.created_ms, t.id"))?;
    let rows = statement.query_map([], token_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(super) fn revoke_token(connection: &Connection, id: &str, at_ms: i64) -> Result<bool> {
    connection
        .prepare_cached("UPDATE api_tokens SET revoked_ms = COALESCE(revoked_ms, ?2) WHERE id = ?1")?
        .execute(params![id, at_ms])
        .map(|count| count > 0)
        .map_err(Into::into)
}
