//! `[migration]` in the configuration file: the legacy archives `haneul
//! migrate` takes studies from, how fast, and what it corrects on the way.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use haneul_dicom::coerce::CoercionRules;
use haneul_migrate::windows::Window;
use haneul_migrate::{Fetch, Source};
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MigrationConfig {
    #[serde(rename = "source")]
    pub sources: Vec<MigrationSourceConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationSourceConfig {
    /// Name in `haneul migrate`, the status API and the report.
    pub name: String,
    /// "c-move": a DICOM node, listed by C-FIND and moved study by study to
    /// this server's AE title (the node must know it as a move destination);
    /// "c-get": the same node listing, each study fetched by C-GET on our own
    /// association (the node needs no route to us);
    /// "folder": every instance file under `path` (a folder tree or DICOMDIR media);
    /// "dicomweb": a DICOMweb service at `url` (QIDO-RS and WADO-RS).
    #[serde(default = "c_move")]
    pub method: String,
    /// The node's AE title, host and port (c-move).
    #[serde(default)]
    pub ae_title: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    /// The most answers the node gives to one C-FIND or QIDO-RS request (e.g.
    /// Orthanc's LimitFindResults); a listing that reaches it is split. 0: no limit.
    #[serde(default)]
    pub query_limit: usize,
    /// The folder (folder).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Base URL of the DICOMweb service (dicomweb), e.g. "https://pacs.example.org/dicom-web".
    #[serde(default)]
    pub url: Option<String>,
    /// A file holding a Bearer token for the service (dicomweb), read at every use.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// HTTP Basic user name (dicomweb), with `password_file`, a file holding
    /// the password, read at every use.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PEM authorities of an https service's certificate (dicomweb); default: the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Associations to the node at once (a study's move with its listing, or a
    /// verification's query) outside every window.
    #[serde(default = "four")]
    pub parallel: usize,
    /// Times of day (server's local time) with another number of associations,
    /// e.g. `{ time = "07:00-20:00", parallel = 2 }`; the first that holds the time applies.
    #[serde(default)]
    pub windows: Vec<WindowConfig>,
    /// Instances per second at most, over all associations; 0: no limit.
    #[serde(default)]
    pub rate_limit: f64,
    /// Tries per study before it is reported failed.
    #[serde(default = "five")]
    pub max_attempts: i64,
    /// Seconds before a failed study is tried again; doubles with each try (at most an hour).
    #[serde(default = "thirty")]
    pub retry_seconds: u64,
    /// Seconds to wait for an answer of the node.
    #[serde(default = "two_minutes")]
    pub timeout_seconds: u64,
    /// Seconds a node's claim on a running study holds without renewal
    /// (renewed every third of it): where several nodes share a catalog, the
    /// studies of a node that died are taken over after this.
    #[serde(default = "two_minutes")]
    pub claim_lease_seconds: u64,
    /// Corrections applied to what this source sends.
    #[serde(default)]
    pub coerce: Option<CoerceConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// "HH:MM-HH:MM"; a window ending before it starts runs over midnight.
    pub time: String,
    /// Associations inside the window (0: the migration waits).
    pub parallel: usize,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoerceConfig {
    /// Issuer of Patient ID given to every instance (the source hospital).
    pub issuer_of_patient_id: Option<String>,
    /// Put in front of every Patient ID (after `patient_id_map`).
    pub patient_id_prefix: Option<String>,
    /// Patient IDs replaced: `{ "old" = "new" }`.
    pub patient_id_map: BTreeMap<String, String>,
    /// The Specific Character Set the source should have declared, e.g.
    /// "\\ISO 2022 IR 149"; replaces the declared one…
    pub character_set: Option<String>,
    /// …only where the declared one is this (default: always).
    pub character_set_from: Option<String>,
    /// Remove private elements.
    pub remove_private_tags: bool,
}

fn c_move() -> String {
    "c-move".into()
}
fn four() -> usize {
    4
}
fn five() -> i64 {
    5
}
fn thirty() -> u64 {
    30
}
fn two_minutes() -> u64 {
    120
}

impl MigrationConfig {
    pub fn validate(&self, check_ae_title: impl Fn(&str, &str) -> anyhow::Result<()>) -> anyhow::Result<()> {
        for (index, source) in self.sources.iter().enumerate() {
            let key = format!("migration.source[{index}]");
            let valid_name = !source.name.is_empty()
                && source.name.len() <= 64
                && source.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !valid_name {
                bail!("{key}.name: {:?} must be 1 to 64 letters, digits, '-', '_' or '.'", source.name);
            }
            if self.sources[..index].iter().any(|other| other.name == source.name) {
                bail!("{key}.name: {:?} is listed twice", source.name);
            }
            match source.method.as_str() {
                method @ ("c-move" | "c-get") => {
                    let Some(title) = &source.ae_title else { bail!("{key}.ae_title: needed for method = {method:?}") };
                    check_ae_title(&format!("{key}.ae_title"), title)?;
                    if source.host.as_deref().is_none_or(|host| host.trim().is_empty()) {
                        bail!("{key}.host: needed for method = {method:?}");
                    }
                    if source.port.is_none_or(|port| port == 0) {
                        bail!("{key}.port: needed for method = {method:?} (1 to 65535)");
                    }
                    if source.path.is_some() {
                        bail!("{key}.path: only for method = \"folder\"");
                    }
                }
                "folder" => {
                    if source.path.as_ref().is_none_or(|path| path.as_os_str().is_empty()) {
                        bail!("{key}.path: needed for method = \"folder\"");
                    }
                    for (field, given) in [
                        ("ae_title", source.ae_title.is_some()),
                        ("host", source.host.is_some()),
                        ("port", source.port.is_some()),
                    ] {
                        if given {
                            bail!("{key}.{field}: only for method = \"c-move\" or \"c-get\"");
                        }
                    }
                }
                "dicomweb" => {
                    let Some(url) = &source.url else { bail!("{key}.url: needed for method = \"dicomweb\"") };
                    haneul_migrate::dicomweb::check_url(url).map_err(|error| anyhow::anyhow!("{key}.url: {error}"))?;
                    if source.username.is_some() != source.password_file.is_some() {
                        let missing = if source.username.is_some() { "password_file" } else { "username" };
                        bail!("{key}.{missing}: Basic credentials need both username and password_file");
                    }
                    if source.token_file.is_some() && source.username.is_some() {
                        bail!("{key}.token_file: either a token or username and password_file, not both");
                    }
                    if source.ca_file.is_some() && !url.starts_with("https://") {
                        bail!("{key}.ca_file: only for an https:// url");
                    }
                    for (field, given) in [
                        ("ae_title", source.ae_title.is_some()),
                        ("host", source.host.is_some()),
                        ("port", source.port.is_some()),
                        ("path", source.path.is_some()),
                    ] {
                        if given {
                            bail!("{key}.{field}: not for method = \"dicomweb\" (use url)");
                        }
                    }
                }
                other => bail!("{key}.method: {other:?} is not \"c-move\", \"c-get\", \"folder\" or \"dicomweb\""),
            }
            if source.method != "dicomweb" {
                for (field, given) in [
                    ("url", source.url.is_some()),
                    ("token_file", source.token_file.is_some()),
                    ("username", source.username.is_some()),
                    ("password_file", source.password_file.is_some()),
                    ("ca_file", source.ca_file.is_some()),
                ] {
                    if given {
                        bail!("{key}.{field}: only for method = \"dicomweb\"");
                    }
                }
            }
            if source.parallel == 0 || source.parallel > 64 {
                bail!("{key}.parallel: must be 1 to 64");
            }
            for (window_index, window) in source.windows.iter().enumerate() {
                if window.parallel > 64 {
                    bail!("{key}.windows[{window_index}].parallel: must be 0 to 64");
                }
                Window::parse(&window.time, window.parallel)
                    .map_err(|error| anyhow::anyhow!("{key}.windows[{window_index}].time: {error}"))?;
            }
            if !source.rate_limit.is_finite() || source.rate_limit < 0.0 {
                bail!("{key}.rate_limit: must be 0 (no limit) or a positive number of instances per second");
            }
            if source.max_attempts < 1 {
                bail!("{key}.max_attempts: must be at least 1");
            }
            if source.timeout_seconds == 0 {
                bail!("{key}.timeout_seconds: must be at least 1");
            }
            if source.claim_lease_seconds < 3 {
                bail!("{key}.claim_lease_seconds: must be at least 3");
            }
            if let Some(coerce) = &source.coerce {
                if coerce.character_set_from.is_some() && coerce.character_set.is_none() {
                    bail!("{key}.coerce.character_set_from: only with character_set");
                }
                coerce
                    .rules("HANEUL", &source.name)
                    .validate()
                    .map_err(|error| anyhow::anyhow!("{key}.coerce: {error}"))?;
            }
        }
        Ok(())
    }

    /// The sources for the migration runner; `our_ae` is the C-MOVE destination
    /// and the calling AE title.
    pub fn sources(&self, our_ae: &str, max_pdu_length: u32) -> Vec<Source> {
        self.sources
            .iter()
            .map(|source| {
                let fetch = match source.method.as_str() {
                    "folder" => Fetch::Folder {
                        path: source.path.clone().unwrap_or_default(),
                        actor: folder_actor(&source.name),
                    },
                    "dicomweb" => Fetch::DicomWeb { source: source.dicomweb(), actor: folder_actor(&source.name) },
                    method => {
                        let node = haneul_migrate::walk::DicomNode {
                            ae_title: source.ae_title.clone().unwrap_or_default(),
                            host: source.host.clone().unwrap_or_default(),
                            port: source.port.unwrap_or_default(),
                            calling_ae: our_ae.to_string(),
                            max_pdu_length,
                            timeout: Duration::from_secs(source.timeout_seconds),
                        };
                        let cap = (source.query_limit > 0).then_some(source.query_limit);
                        match method {
                            "c-get" => Fetch::DicomGet { node, cap },
                            _ => Fetch::DicomMove { node, destination: our_ae.to_string(), cap },
                        }
                    }
                };
                Source {
                    name: source.name.clone(),
                    fetch,
                    parallel: source.parallel,
                    windows: source
                        .windows
                        .iter()
                        .filter_map(|window| Window::parse(&window.time, window.parallel).ok())
                        .collect(),
                    rate_limit: source.rate_limit,
                    max_attempts: source.max_attempts,
                    retry_delay: Duration::from_secs(source.retry_seconds),
                    claim_lease: Duration::from_secs(source.claim_lease_seconds),
                }
            })
            .collect()
    }
}

impl MigrationSourceConfig {
    fn dicomweb(&self) -> haneul_migrate::dicomweb::DicomWebSource {
        use haneul_migrate::dicomweb::Credentials;
        let credentials = match (&self.token_file, &self.username, &self.password_file) {
            (Some(token_file), _, _) => Credentials::Bearer { token_file: token_file.clone() },
            (None, Some(username), Some(password_file)) => {
                Credentials::Basic { username: username.clone(), password_file: password_file.clone() }
            }
            _ => Credentials::None,
        };
        haneul_migrate::dicomweb::DicomWebSource {
            url: self.url.clone().unwrap_or_default(),
            credentials,
            ca_file: self.ca_file.clone(),
            timeout: Duration::from_secs(self.timeout_seconds),
            cap: (self.query_limit > 0).then_some(self.query_limit),
        }
    }
}

impl CoerceConfig {
    /// The rules as the archive applies them; `our_ae` is named as the modifying system.
    pub fn rules(&self, our_ae: &str, source: &str) -> CoercionRules {
        CoercionRules {
            issuer_of_patient_id: self.issuer_of_patient_id.clone(),
            patient_id_prefix: self.patient_id_prefix.clone(),
            patient_id_map: self.patient_id_map.clone(),
            character_set: self.character_set.clone(),
            character_set_from: self.character_set_from.clone(),
            remove_private_tags: self.remove_private_tags,
            modifying_system: our_ae.to_string(),
            source_of_previous_values: source.to_string(),
            ..CoercionRules::default()
        }
    }
}

impl MigrationConfig {
    /// Coercion rules by the sender they apply to: a DICOM source's AE title
    /// (its C-STORE sub-operations call with it), a folder or DICOMweb source's importer.
    pub fn coercions(&self, our_ae: &str) -> HashMap<String, Arc<CoercionRules>> {
        self.sources
            .iter()
            .filter_map(|source| {
                let coerce = source.coerce.as_ref()?;
                let sender = match source.method.as_str() {
                    "folder" | "dicomweb" => folder_actor(&source.name),
                    _ => source.ae_title.clone()?,
                };
                let name = source.ae_title.clone().unwrap_or_else(|| source.name.clone());
                Some((sender, Arc::new(coerce.rules(our_ae, &name))))
            })
            .collect()
    }
}

/// Who a folder or DICOMweb source's instances are stored as (and whose coercion rules apply).
fn folder_actor(name: &str) -> String {
    format!("migrate:{name}")
}

#[cfg(test)]
mod tests {
    use haneul_migrate::dicomweb::Credentials;

    use crate::config::Config;

    /// The example's commented-out `[[migration.source]]` block whose method is `method`, uncommented.
    fn example_source(method: &str) -> String {
        let example = include_str!("../../../haneul.example.toml");
        example
            .split("# [[migration.source]]")
            .skip(1)
            .map(|block| {
                // The rest of the split line, then the block's lines up to the first that is no comment.
                let keys = (block.lines().skip(1))
                    .take_while(|line| line.starts_with('#'))
                    .filter_map(|line| line.strip_prefix("# "))
                    .filter(|line| line.starts_with('[') || line.contains(" = "));
                keys.fold("[[migration.source]]\n".to_string(), |text, line| format!("{text}{line}\n"))
            })
            .find(|block| block.contains(&format!("method = \"{method}\"")))
            .unwrap_or_else(|| panic!("the example documents a {method} source"))
    }

    #[test]
    fn the_documented_dicomweb_source_is_valid_once_uncommented() {
        let block = example_source("dicomweb");
        let config = Config::parse(&block).unwrap_or_else(|error| panic!("{block}\n{error:#}"));
        let sources = config.migration.sources(&config.dicom.ae_title, 16384);
        let haneul_migrate::Fetch::DicomWeb { source, actor } = &sources[0].fetch else {
            panic!("a DICOMweb source, not {:?}", sources[0].fetch)
        };
        assert_eq!(source.url, "https://old-pacs.hospital.example/dicom-web");
        assert_eq!(source.cap, Some(100));
        assert_eq!(source.timeout, std::time::Duration::from_secs(120));
        assert!(matches!(&source.credentials, Credentials::Basic { username, .. } if username == "haneul-migration"));
        assert!(source.ca_file.is_some());
        assert_eq!(actor, "migrate:old-web-pacs");
        assert_eq!(sources[0].parallel, 2);
    }

    #[test]
    fn dicomweb_sources_are_checked_naming_the_key() {
        let refused = |text: &str| format!("{:#}", Config::parse(text).expect_err(text));
        let base = "[[migration.source]]\nname = \"web\"\nmethod = \"dicomweb\"\n";
        let url = "url = \"http://10.1.2.3:8042/dicom-web\"\n";
        assert!(refused(base).contains("migration.source[0].url"));
        assert!(refused(&format!("{base}url = \"ftp://pacs/dicom-web\"\n")).contains("migration.source[0].url"));
        let with_secret = refused(&format!("{base}url = \"https://user:s3cret@pacs/dicom-web\"\n"));
        assert!(with_secret.contains("migration.source[0].url") && !with_secret.contains("s3cret"), "{with_secret}");
        assert!(refused(&format!("{base}{url}port = 104\n")).contains("migration.source[0].port"));
        assert!(refused(&format!("{base}{url}path = \"/media\"\n")).contains("migration.source[0].path"));
        assert!(refused(&format!("{base}{url}username = \"u\"\n")).contains("migration.source[0].password_file"));
        assert!(refused(&format!("{base}{url}password_file = \"/p\"\n")).contains("migration.source[0].username"));
        let both = format!("{base}{url}token_file = \"/t\"\nusername = \"u\"\npassword_file = \"/p\"\n");
        assert!(refused(&both).contains("migration.source[0].token_file"));
        assert!(refused(&format!("{base}{url}ca_file = \"/ca.pem\"\n")).contains("migration.source[0].ca_file"));
        // The keys of a DICOMweb source are refused on the other methods.
        let c_move = "[[migration.source]]\nname = \"old\"\nae_title = \"OLD\"\nhost = \"h\"\nport = 104\n";
        assert!(refused(&format!("{c_move}{url}")).contains("migration.source[0].url"));
        let folder = "[[migration.source]]\nname = \"cd\"\nmethod = \"folder\"\npath = \"/media\"\n";
        assert!(refused(&format!("{folder}token_file = \"/t\"\n")).contains("migration.source[0].token_file"));
        assert!(refused(&format!("{c_move}method = \"ftp\"\n")).contains("\"dicomweb\""));

        let config = Config::parse(&format!("{base}{url}token_file = \"/etc/haneul/web.token\"\n")).expect("valid");
        let sources = config.migration.sources(&config.dicom.ae_title, 16384);
        let haneul_migrate::Fetch::DicomWeb { source, .. } = &sources[0].fetch else {
            panic!("{:?}", sources[0].fetch)
        };
        assert_eq!(source.credentials, Credentials::Bearer { token_file: "/etc/haneul/web.token".into() });
        assert_eq!(source.cap, None);
        let config = Config::parse(&format!("{base}{url}")).expect("valid without credentials");
        let sources = config.migration.sources(&config.dicom.ae_title, 16384);
        let haneul_migrate::Fetch::DicomWeb { source, .. } = &sources[0].fetch else {
            panic!("{:?}", sources[0].fetch)
        };
        assert_eq!(source.credentials, Credentials::None);
    }

    #[test]
    fn a_dicomweb_sources_coercion_rules_apply_to_what_it_retrieves() {
        let text = "[[migration.source]]\nname = \"web\"\nmethod = \"dicomweb\"\nurl = \"http://h/dicom-web\"\n\
                    [migration.source.coerce]\nissuer_of_patient_id = \"HOSP_B\"\n";
        let config = Config::parse(text).expect("valid");
        let coercions = config.migration.coercions(&config.dicom.ae_title);
        let sources = config.migration.sources(&config.dicom.ae_title, 16384);
        let haneul_migrate::Fetch::DicomWeb { actor, .. } = &sources[0].fetch else { panic!("{:?}", sources[0].fetch) };
        let rules = coercions.get(actor).expect("rules keyed by the source's importer");
        assert_eq!(rules.issuer_of_patient_id.as_deref(), Some("HOSP_B"));
    }
}
