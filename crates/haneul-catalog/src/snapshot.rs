//! Reading a catalog snapshot (a file [`crate::Catalog::snapshot_into`] wrote)
//! without changing it: the blobs it references and what it holds, for
//! backups and restores.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::{CatalogError, Result};

/// Tables whose rows reference blobs: (table, what the blob is). `conflicts`
/// (schema version 4) is read only where the snapshot has it, so backups of
/// catalogs from before and after it list every blob.
const BLOB_TABLES: &[(&str, BlobKind)] =
    &[("instances", BlobKind::Instance), ("superseded", BlobKind::Superseded), ("conflicts", BlobKind::Conflict)];

/// Why the catalog references a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobKind {
    /// The current version of a stored instance.
    Instance,
    /// An older version kept after a replacement.
    Superseded,
    /// A differing copy kept for review.
    Conflict,
}

/// A blob the catalog references, as the catalog records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferencedBlob {
    /// Path relative to the blob store root.
    pub path: String,
    pub size: u64,
    /// BLAKE3 digest of the whole file.
    pub digest: [u8; 32],
    pub kind: BlobKind,
}

/// How much a snapshot holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotCounts {
    pub patients: u64,
    pub studies: u64,
    pub series: u64,
    pub instances: u64,
    pub superseded: u64,
    pub conflicts: u64,
    /// Schema version of the snapshot (`PRAGMA user_version`).
    pub schema_version: i64,
}

/// A catalog snapshot opened read-only.
pub struct CatalogSnapshot {
    connection: Connection,
}

impl CatalogSnapshot {
    /// Open the snapshot at `path` for reading only; it is never written.
    pub fn open(path: &Path) -> Result<CatalogSnapshot> {
        let connection =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        Ok(CatalogSnapshot { connection })
    }

    fn has_table(&self, table: &str) -> Result<bool> {
        let found: i64 = self.connection.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [table],
            |row| row.get(0),
        )?;
        Ok(found > 0)
    }

    fn count(&self, table: &str) -> Result<u64> {
        if !self.has_table(table)? {
            return Ok(0);
        }
        let count: i64 = self.connection.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| row.get(0))?;
        Ok(count as u64)
    }

    pub fn counts(&self) -> Result<SnapshotCounts> {
        Ok(SnapshotCounts {
            patients: self.count("patients")?,
            studies: self.count("studies")?,
            series: self.count("series")?,
            instances: self.count("instances")?,
            superseded: self.count("superseded")?,
            conflicts: self.count("conflicts")?,
            schema_version: self.connection.pragma_query_value(None, "user_version", |row| row.get(0))?,
        })
    }

    /// Every blob the snapshot references (instances, superseded versions and
    /// kept conflicts), by path.
    pub fn blobs(&self) -> Result<Vec<ReferencedBlob>> {
        let mut blobs = Vec::new();
        for (table, kind) in BLOB_TABLES {
            if !self.has_table(table)? {
                continue;
            }
            let mut statement = self
                .connection
                .prepare(&format!("SELECT blob_path, blob_size, blob_digest FROM {table} ORDER BY blob_path"))?;
            let mut rows = statement.query([])?;
            while let Some(row) = rows.next()? {
                let path: String = row.get(0)?;
                let size: i64 = row.get(1)?;
                let digest: Vec<u8> = row.get(2)?;
                let digest = <[u8; 32]>::try_from(digest.as_slice()).map_err(|_| {
                    CatalogError::CorruptRecord(format!(
                        "blob {path} in {table} has a digest of {} bytes",
                        digest.len()
                    ))
                })?;
                let size = u64::try_from(size)
                    .map_err(|_| CatalogError::CorruptRecord(format!("blob {path} in {table} has size {size}")))?;
                blobs.push(ReferencedBlob { path, size, digest, kind: *kind });
            }
        }
        blobs.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(blobs)
    }
}
