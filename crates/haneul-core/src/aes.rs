//! The remote application entities the archive knows: each node's own
//! (`[[known_ae]]` in its configuration) and those every node of a catalog
//! shares (`haneul ae add`, kept in the catalog). [`AeDirectory`] merges
//! both into the one list the DIMSE and HTTP edges read; the server
//! refreshes its shared part from the catalog, so an AE added once is known
//! on every node within seconds, without a restart.

use std::path::Path;
use std::sync::{Arc, RwLock};

use haneul_catalog::{Catalog, SharedAeRecord};
use serde::Serialize;

use crate::users::{unix_ms_now, Role};
use crate::{ArchiveError, CatalogLocation};

/// A remote application entity Haneul knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KnownAe {
    pub title: String,
    pub host: String,
    pub port: u16,
    /// What its associations may do.
    pub role: Role,
    /// Site of the studies it stores ("": the archive's default).
    pub site: String,
}

impl KnownAe {
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// An AE title: 1 to 16 characters of the default repertoire, no backslash,
/// not only spaces (PS3.5 6.2).
pub fn check_ae_title(title: &str) -> Result<(), String> {
    let valid = !title.trim().is_empty()
        && title.len() <= 16
        && title.chars().all(|c| c.is_ascii() && !c.is_ascii_control() && c != '\\');
    if !valid {
        return Err(format!("{title:?} is not a valid AE title (1 to 16 ASCII characters, no backslash)"));
    }
    Ok(())
}

/// A site name: up to 64 characters, no comma, no surrounding spaces ("": the default site).
pub fn check_site(site: &str) -> Result<(), String> {
    if site.len() > 64 || site.trim() != site || site.chars().any(|c| c.is_control() || c == ',') {
        return Err(format!("{site:?} is not a site name (up to 64 characters, no comma, no surrounding spaces)"));
    }
    Ok(())
}

/// Where an entry of the directory comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AeSource {
    /// This node's configuration file.
    Config,
    /// The catalog, shared by every node.
    Shared,
}

/// One AE of the directory, and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirectoryEntry {
    #[serde(flatten)]
    pub ae: KnownAe,
    pub source: AeSource,
}

/// The AEs this node knows: its configuration's, then the shared ones (a
/// shared AE with the title of a configured one is shadowed by it). Cheap
/// to clone; every clone sees the same list.
#[derive(Debug, Clone, Default)]
pub struct AeDirectory {
    configured: Arc<Vec<KnownAe>>,
    entries: Arc<RwLock<Arc<Vec<DirectoryEntry>>>>,
}

impl AeDirectory {
    /// A directory of the configured AEs, with no shared one yet.
    pub fn new(configured: Vec<KnownAe>) -> AeDirectory {
        let directory = AeDirectory { configured: Arc::new(configured), entries: Arc::default() };
        directory.set_shared(Vec::new());
        directory
    }

    /// The AE with this title.
    pub fn find(&self, title: &str) -> Option<KnownAe> {
        self.entries().iter().find(|entry| entry.ae.title == title).map(|entry| entry.ae.clone())
    }

    /// Every AE, configured ones first, then shared ones by title.
    pub fn entries(&self) -> Arc<Vec<DirectoryEntry>> {
        Arc::clone(&self.entries.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Read the shared part again from the catalog (blocking); returns the
    /// titles shadowed by configured AEs.
    pub fn refresh(&self, shared: &SharedAes) -> Result<Vec<String>, ArchiveError> {
        let list = shared.list()?;
        Ok(self.set_shared(list.into_iter().map(|shared| shared.ae).collect()))
    }

    /// Replace the shared part; returns the titles shadowed by configured AEs.
    pub fn set_shared(&self, shared: Vec<KnownAe>) -> Vec<String> {
        let mut entries: Vec<DirectoryEntry> =
            self.configured.iter().map(|ae| DirectoryEntry { ae: ae.clone(), source: AeSource::Config }).collect();
        let mut shadowed = Vec::new();
        for ae in shared {
            if self.configured.iter().any(|configured| configured.title == ae.title) {
                shadowed.push(ae.title);
                continue;
            }
            entries.push(DirectoryEntry { ae, source: AeSource::Shared });
        }
        *self.entries.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(entries);
        shadowed
    }
}

/// A shared AE as the catalog keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SharedAe {
    #[serde(flatten)]
    pub ae: KnownAe,
    pub description: String,
    /// When it was last changed (Unix ms), and by whom.
    pub updated_ms: i64,
    pub updated_by: String,
}

/// The AEs shared by every node of a catalog (blocking: call from a blocking thread).
#[derive(Clone)]
pub struct SharedAes {
    catalog: Arc<dyn Catalog>,
}

impl SharedAes {
    pub(crate) fn new(catalog: Arc<dyn Catalog>) -> SharedAes {
        SharedAes { catalog }
    }

    /// Open the shared AEs of the archive in `data_dir` without opening the
    /// archive itself (the command-line tools; a running server is fine).
    pub fn open(data_dir: &Path, location: &CatalogLocation) -> Result<SharedAes, ArchiveError> {
        Ok(SharedAes { catalog: location.open(data_dir)? })
    }

    /// Every shared AE, by title. One whose role this build does not know
    /// (written by a newer one) is left out, with a warning.
    pub fn list(&self) -> Result<Vec<SharedAe>, ArchiveError> {
        let records = self.catalog.shared_aes()?;
        Ok(records
            .into_iter()
            .filter_map(|record| match record.role.parse::<Role>() {
                Ok(role) => Some(SharedAe {
                    ae: KnownAe { title: record.title, host: record.host, port: record.port, role, site: record.site },
                    description: record.description,
                    updated_ms: record.updated_ms,
                    updated_by: record.updated_by,
                }),
                Err(error) => {
                    tracing::warn!(ae_title = %record.title, %error, "shared AE left out: unknown role");
                    None
                }
            })
            .collect())
    }

    /// Add an AE for every node, or change the one with its title; whether it was new.
    pub fn put(&self, ae: &KnownAe, description: &str, changed_by: &str) -> Result<bool, ArchiveError> {
        check_ae_title(&ae.title).map_err(ArchiveError::Invalid)?;
        let host_ok = !ae.host.is_empty()
            && ae.host.len() <= 253
            && ae.host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
        if !host_ok {
            return Err(ArchiveError::Invalid(format!("{:?} is not a host name or IP address", ae.host)));
        }
        if ae.port == 0 {
            return Err(ArchiveError::Invalid("port: must be 1 to 65535".into()));
        }
        check_site(&ae.site).map_err(ArchiveError::Invalid)?;
        if description.len() > 256 || description.chars().any(char::is_control) {
            return Err(ArchiveError::Invalid("description: up to 256 characters, on one line".into()));
        }
        let record = SharedAeRecord {
            title: ae.title.clone(),
            host: ae.host.clone(),
            port: ae.port,
            role: ae.role.as_str().into(),
            site: ae.site.clone(),
            description: description.into(),
            updated_ms: unix_ms_now(),
            updated_by: changed_by.into(),
        };
        Ok(self.catalog.put_shared_ae(&record)?)
    }

    /// Remove the shared AE with this title (`false`: there was none).
    pub fn remove(&self, title: &str) -> Result<bool, ArchiveError> {
        Ok(self.catalog.remove_shared_ae(title)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ae(title: &str, port: u16) -> KnownAe {
        KnownAe { title: title.into(), host: "10.0.0.1".into(), port, role: Role::Technologist, site: String::new() }
    }

    #[test]
    fn configured_aes_come_first_and_shadow_shared_ones() {
        let directory = AeDirectory::new(vec![ae("CT1", 104)]);
        let clone = directory.clone();
        let shadowed = directory.set_shared(vec![ae("CT1", 4242), ae("MR1", 11112)]);
        assert_eq!(shadowed, ["CT1"]);
        assert_eq!(clone.find("CT1").map(|ae| ae.port), Some(104), "the configuration wins");
        assert_eq!(clone.find("MR1").map(|ae| ae.port), Some(11112), "every clone sees the refresh");
        let sources: Vec<_> = clone.entries().iter().map(|entry| (entry.ae.title.clone(), entry.source)).collect();
        assert_eq!(sources, [("CT1".into(), AeSource::Config), ("MR1".into(), AeSource::Shared)]);
        directory.set_shared(Vec::new());
        assert_eq!(clone.find("MR1"), None, "a shared AE removed is forgotten");
    }

    #[test]
    fn titles_and_sites_are_checked() {
        assert!(check_ae_title("CT_3F").is_ok());
        for bad in ["", "   ", "A\\B", "SEVENTEEN_CHARS_X", "촬영"] {
            assert!(check_ae_title(bad).is_err(), "{bad:?}");
        }
        assert!(check_site("seoul").is_ok() && check_site("").is_ok());
        assert!(check_site(" seoul").is_err() && check_site("a,b").is_err());
    }
}
