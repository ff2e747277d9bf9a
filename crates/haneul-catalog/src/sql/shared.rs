//! Leases on background jobs and the shared list of remote AEs.

use super::{Db, Row};
use crate::shared::{LeaseRecord, SharedAeRecord};
use crate::{CatalogError, Result};

/// Take the lease `name` for `holder` until `now_ms + ttl_ms` when it is
/// free, expired or already `holder`'s; the lease as it stands afterwards.
pub(super) fn acquire_lease(
    tx: &mut dyn Db,
    name: &str,
    holder: &str,
    now_ms: i64,
    ttl_ms: i64,
) -> Result<LeaseRecord> {
    tx.execute(
        "INSERT INTO leases (name, holder, expires_ms) VALUES (?1, ?2, ?3) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_ms = excluded.expires_ms \
         WHERE leases.holder = excluded.holder OR leases.expires_ms < ?4",
        &[name.into(), holder.into(), now_ms.saturating_add(ttl_ms).into(), now_ms.into()],
    )?;
    tx.query_one("SELECT name, holder, expires_ms FROM leases WHERE name = ?1", &[name.into()], lease_from)
}

/// Give the lease up if `holder` has it; whether it did.
pub(super) fn release_lease(tx: &mut dyn Db, name: &str, holder: &str) -> Result<bool> {
    let released = tx.execute("DELETE FROM leases WHERE name = ?1 AND holder = ?2", &[name.into(), holder.into()])?;
    Ok(released > 0)
}

pub(super) fn select_leases(db: &mut dyn Db) -> Result<Vec<LeaseRecord>> {
    db.query_all("SELECT name, holder, expires_ms FROM leases ORDER BY name", &[], lease_from)
}

fn lease_from(row: &dyn Row) -> Result<LeaseRecord> {
    Ok(LeaseRecord { name: row.text(0)?, holder: row.text(1)?, expires_ms: row.int(2)? })
}

const AE_COLUMNS: &str = "title, host, port, role, site, description, updated_ms, updated_by";

pub(super) fn select_shared_aes(db: &mut dyn Db) -> Result<Vec<SharedAeRecord>> {
    db.query_all(&format!("SELECT {AE_COLUMNS} FROM shared_aes ORDER BY title"), &[], |row| {
        let port = row.int(2)?;
        Ok(SharedAeRecord {
            title: row.text(0)?,
            host: row.text(1)?,
            port: u16::try_from(port).map_err(|_| CatalogError::CorruptRecord(format!("shared AE port {port}")))?,
            role: row.text(3)?,
            site: row.text(4)?,
            description: row.text(5)?,
            updated_ms: row.int(6)?,
            updated_by: row.text(7)?,
        })
    })
}

/// Add the AE or replace the one with its title; whether it was new.
pub(super) fn upsert_shared_ae(tx: &mut dyn Db, ae: &SharedAeRecord) -> Result<bool> {
    let existed = tx.exists("SELECT 1 FROM shared_aes WHERE title = ?1", &[ae.title.as_str().into()])?;
    tx.execute(
        &format!(
            "INSERT INTO shared_aes ({AE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (title) DO UPDATE SET host = excluded.host, port = excluded.port, role = excluded.role, \
             site = excluded.site, description = excluded.description, updated_ms = excluded.updated_ms, \
             updated_by = excluded.updated_by"
        ),
        &[
            ae.title.as_str().into(),
            ae.host.as_str().into(),
            i64::from(ae.port).into(),
            ae.role.as_str().into(),
            ae.site.as_str().into(),
            ae.description.as_str().into(),
            ae.updated_ms.into(),
            ae.updated_by.as_str().into(),
        ],
    )?;
    Ok(!existed)
}

pub(super) fn delete_shared_ae(tx: &mut dyn Db, title: &str) -> Result<bool> {
    Ok(tx.execute("DELETE FROM shared_aes WHERE title = ?1", &[title.into()])? > 0)
}
