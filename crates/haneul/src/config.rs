//! The configuration file: one TOML document, every key optional and
//! documented in `haneul.example.toml`; unknown keys and bad values are
//! refused at start with the name of the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use haneul_core::{DuplicatePolicy, Role};
use haneul_dimse::{AeDirectory, CommitmentDelivery, KnownAe, ServerSettings};
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub storage: StorageConfig,
    pub catalog: CatalogConfig,
    pub dicom: DicomConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    pub audit: AuditConfig,
    /// Remote application entities: move destinations, storage commitment
    /// requesters and, from other hosts than loopback, who may associate.
    #[serde(rename = "known_ae")]
    pub known_aes: Vec<KnownAeConfig>,
    /// Nodes every stored instance is replicated to.
    #[serde(rename = "peer")]
    pub peers: Vec<PeerConfig>,
    pub replication: ReplicationConfig,
    /// Legacy archives to migrate from (`haneul migrate`).
    pub migration: crate::migration_config::MigrationConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    /// Minutes between two anti-entropy verifies of each peer with `url` and
    /// `token_file` (with repair); 0: only on request.
    pub verify_interval_minutes: u64,
    /// Nodes sharing a catalog: seconds a node's lease on a peer's
    /// replication lasts unless renewed (every third of it). One node ships
    /// to each peer; when it dies, another takes over after at most this.
    pub lease_seconds: u64,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig { verify_interval_minutes: 60, lease_seconds: 30 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    pub duplicate_policy: DuplicatePolicy,
    /// Site (institution) of new studies when neither the sending AE nor the
    /// uploading user names one; "" for none.
    pub site: String,
    /// Where instance files are kept: "local" (under data_dir) or "s3".
    pub backend: BlobBackendKind,
    /// This node's name where several nodes share a PostgreSQL catalog or a
    /// bucket (default there: the host name); unused otherwise.
    pub node: Option<String>,
    /// The bucket, with backend = "s3".
    pub s3: Option<S3Config>,
    /// Instances up to this many bytes (on local disk) are acknowledged once
    /// the catalog commit carrying a copy of their bytes is durable, their
    /// files made durable later in batches; 0: every store waits for its file's fsync.
    pub write_ahead_max_bytes: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobBackendKind {
    #[default]
    Local,
    S3,
}

/// An S3-compatible bucket holding instance files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// URL of an S3-compatible server (Ceph RGW, MinIO, Garage, SeaweedFS);
    /// leave out for AWS S3.
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    pub bucket: String,
    /// Prefix of every key, so that several archives can share a bucket.
    #[serde(default)]
    pub prefix: String,
    /// Static credentials: the key id here, the secret in a file. Without
    /// them, the AWS_* environment variables or the instance's role are used.
    pub access_key_id: Option<String>,
    pub secret_access_key_file: Option<PathBuf>,
    /// Most bytes of objects read from the bucket kept in <data_dir>/cache
    /// for reading again (0: every read downloads).
    #[serde(default = "default_read_cache_bytes")]
    pub read_cache_bytes: u64,
}

fn default_read_cache_bytes() -> u64 {
    1 << 30
}

/// The secret held by the file `key` names, without its final line break
/// (read at start, never logged).
fn read_secret(key: &str, path: Option<&Path>) -> anyhow::Result<Option<String>> {
    let Some(path) = path else { return Ok(None) };
    let text = std::fs::read_to_string(path).with_context(|| format!("{key}: cannot read {}", path.display()))?;
    Ok(Some(text.trim_end_matches(['\r', '\n']).to_string()))
}

fn default_region() -> String {
    "us-east-1".to_string()
}

impl StorageConfig {
    fn validate(&self) -> anyhow::Result<()> {
        if let Some(node) = &self.node {
            if !haneul_core::valid_node_name(node) {
                bail!("storage.node: {node:?} is not a valid node name: a letter first, then letters, digits, '.', '_' or '-' (64 at most)");
            }
        }
        match (self.backend, &self.s3) {
            (BlobBackendKind::Local, Some(_)) => bail!("storage.s3: only used with storage.backend = \"s3\""),
            (BlobBackendKind::S3, None) => {
                bail!("storage.s3: storage.backend = \"s3\" needs a [storage.s3] table with the bucket")
            }
            (BlobBackendKind::S3, Some(s3)) => s3.validate()?,
            (BlobBackendKind::Local, None) => {}
        }
        Ok(())
    }
}

impl S3Config {
    fn validate(&self) -> anyhow::Result<()> {
        if self.bucket.is_empty() {
            bail!("storage.s3.bucket: name the bucket");
        }
        if let Some(endpoint) = &self.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                bail!("storage.s3.endpoint: {endpoint:?} is not an http:// or https:// URL");
            }
        }
        match (&self.access_key_id, &self.secret_access_key_file) {
            (Some(_), None) => bail!("storage.s3.secret_access_key_file: access_key_id needs the secret, in a file"),
            (None, Some(_)) => bail!("storage.s3.access_key_id: secret_access_key_file needs the key id"),
            _ => Ok(()),
        }
    }

    /// The bucket's settings, with the secret read from its file.
    fn options(&self) -> anyhow::Result<haneul_core::S3Options> {
        let secret_access_key =
            read_secret("storage.s3.secret_access_key_file", self.secret_access_key_file.as_deref())?;
        Ok(haneul_core::S3Options {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            access_key_id: self.access_key_id.clone(),
            secret_access_key,
        })
    }
}

/// Where the catalog lives: SQLite in the data directory (the default) or
/// a PostgreSQL database several nodes share.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    pub engine: CatalogEngine,
    /// PostgreSQL connection URL or libpq key=value string, without the password.
    pub url: Option<String>,
    /// A file holding the PostgreSQL password (read at start, never logged).
    pub password_file: Option<PathBuf>,
    /// CA certificates (PEM) that signed the PostgreSQL server's certificate:
    /// set, the connection is TLS only, the certificate and host verified.
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM) and its private key presented to the
    /// server, for PostgreSQL's `cert` authentication (or `clientcert=verify-full`).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatalogEngine {
    #[default]
    Sqlite,
    Postgres,
}

impl CatalogConfig {
    fn validate(&self) -> anyhow::Result<()> {
        match self.engine {
            CatalogEngine::Sqlite => {
                let keys = [
                    ("url", self.url.is_some()),
                    ("password_file", self.password_file.is_some()),
                    ("ca_file", self.ca_file.is_some()),
                    ("cert_file", self.cert_file.is_some()),
                    ("key_file", self.key_file.is_some()),
                ];
                for (key, set) in keys {
                    if set {
                        bail!("catalog.{key}: only used with engine = \"postgres\"");
                    }
                }
            }
            CatalogEngine::Postgres => {
                let Some(url) = &self.url else {
                    bail!("catalog.url: engine = \"postgres\" needs the database's connection URL");
                };
                let facts = haneul_core::PostgresOptions::check_url(url)
                    .map_err(|error| anyhow::anyhow!("catalog.url: not a PostgreSQL connection string: {error}"))?;
                if facts.has_password {
                    bail!("catalog.url: keep the password out of the configuration; put it in catalog.password_file");
                }
                match (&self.ca_file, facts.requires_tls, facts.forbids_tls) {
                    (None, true, _) => bail!(
                        "catalog.url: sslmode=require needs catalog.ca_file, the CA that signed the server's \
                         certificate (Haneul verifies the server it sends patient data to)"
                    ),
                    (Some(_), _, true) => {
                        bail!("catalog.url: sslmode=disable contradicts catalog.ca_file (which makes TLS required)")
                    }
                    _ => {}
                }
                match (&self.cert_file, &self.key_file, &self.ca_file) {
                    (Some(_), None, _) => bail!("catalog.key_file: cert_file needs the private key that goes with it"),
                    (None, Some(_), _) => bail!("catalog.cert_file: key_file needs the certificate that goes with it"),
                    (Some(_), Some(_), None) => {
                        bail!("catalog.ca_file: a client certificate is presented only over TLS, which needs the server's CA")
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Where the core finds the catalog; reads the password file.
    pub fn location(&self) -> anyhow::Result<haneul_core::CatalogLocation> {
        let (CatalogEngine::Postgres, Some(url)) = (self.engine, &self.url) else {
            return Ok(haneul_core::CatalogLocation::Embedded);
        };
        let password = read_secret("catalog.password_file", self.password_file.as_deref())?;
        let identity = match (&self.cert_file, &self.key_file) {
            (Some(cert_file), Some(key_file)) => {
                Some(haneul_tls::ClientIdentity { cert_file: cert_file.clone(), key_file: key_file.clone() })
            }
            _ => None,
        };
        let tls = match &self.ca_file {
            Some(ca_file) => Some(
                haneul_tls::client_config_with_identity(ca_file, identity.as_ref())
                    .map_err(|error| anyhow::anyhow!("catalog.{error}"))?,
            ),
            None => None,
        };
        Ok(haneul_core::CatalogLocation::Postgres(haneul_core::PostgresOptions { url: url.clone(), password, tls }))
    }

    /// Whether the catalog is reached over the network without TLS (worth a warning).
    pub fn unencrypted_over_network(&self) -> bool {
        let (CatalogEngine::Postgres, Some(url), None) = (self.engine, &self.url, &self.ca_file) else {
            return false;
        };
        haneul_core::PostgresOptions::check_url(url).is_ok_and(|facts| !facts.local_only)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DicomConfig {
    pub ae_title: String,
    pub listen: String,
    pub max_pdu_length: u32,
    pub max_dataset_bytes: u64,
    pub max_identifier_bytes: u64,
    pub idle_timeout_seconds: u64,
    pub max_associations: usize,
    /// Associations one calling AE title may have open at once; 0: no limit.
    pub max_associations_per_ae: usize,
    /// Associations one peer address may have open at once; 0: no limit.
    pub max_associations_per_ip: usize,
    pub allow_any_loopback: bool,
    /// Allow the plain (unencrypted) listener on a non-loopback address.
    pub insecure: bool,
    pub outbound_timeout_seconds: u64,
    /// Most matches one C-FIND answers (then status Cancel); 0: no limit.
    pub max_find_answers: usize,
    pub storage_commitment: CommitmentConfig,
    /// DICOM TLS (PS3.15 B.1): present, a second listener speaks only TLS.
    pub tls: Option<DicomTlsConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DicomTlsConfig {
    /// Address and port of the TLS listener.
    #[serde(default = "dicom_tls_listen")]
    pub listen: String,
    /// PEM certificate chain of the server, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key of the leaf certificate.
    pub key_file: PathBuf,
    /// PEM CA certificates that sign accepted client certificates.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// `none`, `optional` or `required`.
    #[serde(default = "client_auth_none")]
    pub client_auth: ClientAuthConfig,
}

fn dicom_tls_listen() -> String {
    "127.0.0.1:2762".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommitmentConfig {
    pub delivery: CommitmentDeliveryConfig,
    pub verify_digests: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CommitmentDeliveryConfig {
    SameAssociation,
    NewAssociation,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the HTTP endpoint (DICOMweb, REST API, metrics); empty disables it.
    pub listen: String,
    /// Path prefix of the DICOMweb resources.
    pub base_path: String,
    /// Public URL for RetrieveURL and BulkDataURI (behind a proxy); empty: from the request's Host.
    pub public_url: String,
    /// Origins allowed by CORS; ["*"] allows any.
    pub cors_origins: Vec<String>,
    /// Largest STOW-RS request body, in bytes.
    pub max_upload_bytes: u64,
    /// Most matches in one QIDO-RS answer; more are left to further pages.
    pub qido_max_results: usize,
    /// How long an upload may bring no data, and a download's client take none.
    pub idle_timeout_seconds: u64,
    /// HTTPS: present, the HTTP endpoint speaks only TLS.
    pub tls: Option<HttpTlsConfig>,
    /// Allow a non-loopback `listen` without `[http.tls]` (behind a TLS proxy, or a closed network).
    pub insecure: bool,
    /// Role of requests without credentials; "" (the default): they are refused with 401.
    /// Only with a loopback `listen`.
    pub anonymous_role: String,
    pub sessions: SessionsConfig,
    pub login: LoginConfig,
    /// OpenID Connect bearer tokens from the hospital's identity provider.
    pub oidc: Option<OidcTomlConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// A viewer session ends after this many minutes without a request.
    pub idle_timeout_minutes: u64,
    /// A viewer session ends this many hours after sign-in.
    pub lifetime_hours: u64,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig { idle_timeout_minutes: 30, lifetime_hours: 12 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginConfig {
    /// Failed sign-ins in a row that lock an account (0: never).
    pub max_failures: u32,
    /// Minutes a locked account (or address) waits.
    pub lockout_minutes: u64,
}

impl Default for LoginConfig {
    fn default() -> Self {
        LoginConfig { max_failures: 5, lockout_minutes: 15 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcTomlConfig {
    /// Expected `iss` claim.
    pub issuer: String,
    /// Accepted `aud` values.
    pub audiences: Vec<String>,
    /// The issuer's JWKS (http:// or https://).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// A JWKS file instead of `jwks_url`.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// PEM authorities for an https `jwks_url` (default: the system's).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    #[serde(default)]
    pub sites_claim: Option<String>,
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    #[serde(default = "default_jwks_refresh")]
    pub refresh_minutes: u64,
    /// Provider role → Haneul role; empty: the claim holds Haneul role names.
    #[serde(default)]
    pub roles: std::collections::BTreeMap<String, String>,
}

fn default_user_claim() -> String {
    "preferred_username".into()
}

fn default_role_claim() -> String {
    "roles".into()
}

fn default_leeway() -> u64 {
    60
}

fn default_jwks_refresh() -> u64 {
    60
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTlsConfig {
    /// PEM certificate chain of the server, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key of the leaf certificate.
    pub key_file: PathBuf,
    /// PEM CA certificates that sign accepted client certificates.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// `none`, `optional` or `required`.
    #[serde(default = "client_auth_none")]
    pub client_auth: ClientAuthConfig,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuthConfig {
    None,
    Optional,
    Required,
}

fn client_auth_none() -> ClientAuthConfig {
    ClientAuthConfig::None
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `haneul_dimse=debug,info`.
    pub level: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Record every access to patient data in `<data_dir>/audit`. Off only to
    /// measure what the trail costs: accesses then go unrecorded.
    pub enabled: bool,
    /// Forward records to a syslog collector as DICOM audit messages.
    pub syslog: SyslogConfig,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { enabled: true, syslog: SyslogConfig::default() }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyslogConfig {
    /// `udp://host:514`, `tcp://host:6514` or `tls://host:6514`; empty: off.
    pub target: String,
    /// PEM certificate authorities for the collector's certificate (tls:// only).
    pub ca_file: Option<PathBuf>,
}

impl SyslogConfig {
    /// The forwarder's target, when one is configured.
    pub fn target(&self) -> anyhow::Result<Option<haneul_core::audit::syslog::Target>> {
        if self.target.is_empty() {
            return Ok(None);
        }
        let target = haneul_core::audit::syslog::Target::parse(&self.target)
            .map_err(|error| anyhow::anyhow!("audit.syslog.target: {error}"))?;
        let tls = target.transport == haneul_core::audit::syslog::Transport::Tls;
        match (&self.ca_file, tls) {
            (None, true) => bail!("audit.syslog.ca_file: a tls:// target needs the collector's CA certificates"),
            (Some(_), false) => bail!("audit.syslog.ca_file: only for a tls:// target"),
            _ => Ok(Some(target)),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownAeConfig {
    pub title: String,
    pub host: String,
    pub port: u16,
    /// What its associations may do: a role name (`Role::from_str`).
    #[serde(default = "service_role")]
    pub role: String,
    /// Site of the studies this AE stores ("": `storage.site`).
    #[serde(default)]
    pub site: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Name in status and metrics; also keys the peer's journal cursor.
    pub name: String,
    pub ae_title: String,
    pub host: String,
    pub port: u16,
    /// "async": stores are answered here and shipped in the background;
    /// "sync": a store is answered only once the peer holds it too.
    #[serde(default = "async_mode")]
    pub mode: String,
    /// With mode "sync", when the peer cannot confirm: "refuse" the store (the
    /// default; nothing acknowledged is missing there), or "async" (answer,
    /// ship later, count an alarm).
    #[serde(default)]
    pub on_failure: Option<String>,
    /// The peer's HTTP base URL (http:// or https://), for anti-entropy verify.
    #[serde(default)]
    pub url: Option<String>,
    /// A file holding an API token (`hnl_…`) of the peer, with the query and
    /// retrieve permissions, for verify.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// PEM authorities of the peer's certificates, for an https `url` and
    /// for `tls` (default: the system's).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Reach the peer's DICOM port over DICOM TLS (its `[dicom.tls]` listener).
    #[serde(default)]
    pub tls: bool,
    /// The name the peer's certificate carries (default: `host`).
    #[serde(default)]
    pub server_name: Option<String>,
    /// Our client certificate and key (PEM), for a peer that requires client
    /// certificates (DICOM TLS and https).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// A peer's `cert_file` and `key_file`, when given.
fn client_identity(peer: &PeerConfig) -> Option<haneul_tls::ClientIdentity> {
    Some(haneul_tls::ClientIdentity { cert_file: peer.cert_file.clone()?, key_file: peer.key_file.clone()? })
}

fn async_mode() -> String {
    "async".into()
}

fn service_role() -> String {
    Role::Service.as_str().into()
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("./haneul-data"),
            duplicate_policy: DuplicatePolicy::KeepFirst,
            site: String::new(),
            backend: BlobBackendKind::Local,
            node: None,
            s3: None,
            write_ahead_max_bytes: haneul_core::DEFAULT_WRITE_AHEAD_MAX_BYTES,
        }
    }
}

impl Default for DicomConfig {
    fn default() -> Self {
        let server = ServerSettings::default();
        DicomConfig {
            ae_title: server.ae_title,
            // Loopback: plain DICOM reaches the network only when asked for
            // (`insecure`), or through [dicom.tls].
            listen: "127.0.0.1:11112".into(),
            max_pdu_length: server.max_pdu_length,
            max_dataset_bytes: server.max_dataset_size,
            max_identifier_bytes: server.max_identifier_size,
            idle_timeout_seconds: server.idle_timeout.as_secs(),
            max_associations: server.max_associations,
            max_associations_per_ae: server.max_associations_per_ae,
            max_associations_per_ip: server.max_associations_per_ip,
            allow_any_loopback: server.allow_any_loopback,
            insecure: false,
            outbound_timeout_seconds: server.outbound_timeout.as_secs(),
            max_find_answers: server.max_find_answers.unwrap_or(0),
            storage_commitment: CommitmentConfig::default(),
            tls: None,
        }
    }
}

impl Default for CommitmentConfig {
    fn default() -> Self {
        CommitmentConfig { delivery: CommitmentDeliveryConfig::SameAssociation, verify_digests: true }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        let web = haneul_dicomweb::WebConfig::default();
        HttpConfig {
            listen: "127.0.0.1:8080".into(),
            base_path: web.base_path,
            public_url: String::new(),
            cors_origins: web.cors_origins,
            max_upload_bytes: web.max_upload_bytes,
            qido_max_results: web.qido_max_results,
            idle_timeout_seconds: web.idle_timeout.as_secs(),
            tls: None,
            insecure: false,
            anonymous_role: String::new(),
            sessions: SessionsConfig::default(),
            login: LoginConfig::default(),
            oidc: None,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, level: "info".into() }
    }
}

/// Largest `storage.write_ahead_max_bytes`: below the size at which an
/// instance is no longer received whole in memory.
const MAX_WRITE_AHEAD_BYTES: u64 = 1024 * 1024;

/// A site name: empty, or up to 64 printable characters without a comma.
fn check_site(key: &str, site: &str) -> anyhow::Result<()> {
    haneul_core::aes::check_site(site).map_err(|error| anyhow::anyhow!("{key}: {error}"))
}

fn check_ae_title(key: &str, title: &str) -> anyhow::Result<()> {
    haneul_core::aes::check_ae_title(title).map_err(|error| anyhow::anyhow!("{key}: {error}"))
}

/// The settings of a `[*.tls]` table (`table` names it in errors), checked
/// for consistency; the files are read when the server starts.
fn tls_settings(
    table: &str,
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: &Option<PathBuf>,
    client_auth: ClientAuthConfig,
) -> anyhow::Result<haneul_tls::TlsSettings> {
    use haneul_tls::ClientAuth;
    for (key, path) in [("cert_file", cert_file), ("key_file", key_file)] {
        if path.as_os_str().is_empty() {
            bail!("{table}.{key}: must name a PEM file");
        }
    }
    let client_auth = match client_auth {
        ClientAuthConfig::None => ClientAuth::None,
        ClientAuthConfig::Optional => ClientAuth::Optional,
        ClientAuthConfig::Required => ClientAuth::Required,
    };
    match (client_auth, client_ca_file) {
        (ClientAuth::None, Some(_)) => {
            bail!("{table}.client_ca_file: set client_auth = \"optional\" or \"required\" to check client certificates")
        }
        (ClientAuth::Optional | ClientAuth::Required, None) => {
            bail!("{table}.client_auth: client certificates need client_ca_file, the CA that signs them")
        }
        _ => {}
    }
    Ok(haneul_tls::TlsSettings {
        cert_file: cert_file.to_path_buf(),
        key_file: key_file.to_path_buf(),
        client_ca_file: client_ca_file.clone(),
        client_auth,
    })
}

impl Config {
    /// How this node keeps instance files (reads the secret file). A node
    /// that shares its catalog or bucket with others has a name:
    /// storage.node, else its host name.
    pub fn blob_config(&self) -> anyhow::Result<haneul_core::BlobConfig> {
        let shared = self.catalog.engine == CatalogEngine::Postgres || self.storage.backend == BlobBackendKind::S3;
        let node = match (&self.storage.node, shared) {
            (_, false) => None,
            (Some(node), true) => Some(node.clone()),
            (None, true) => {
                let host = haneul_core::audit::syslog::local_hostname();
                let name = host.split('.').next().unwrap_or_default().to_string();
                if !haneul_core::valid_node_name(&name) {
                    bail!("storage.node: the host name {host:?} cannot name this node; set storage.node");
                }
                Some(name)
            }
        };
        let (backend, read_cache_bytes) = match (&self.storage.backend, &self.storage.s3) {
            (BlobBackendKind::S3, Some(s3)) => (haneul_core::BlobBackend::S3(s3.options()?), s3.read_cache_bytes),
            _ => (haneul_core::BlobBackend::Local, 0),
        };
        Ok(haneul_core::BlobConfig { backend, node, read_cache_bytes })
    }

    /// Read and validate a configuration file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read configuration file {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("invalid configuration file {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let config: Config =
            toml::from_str(text).map_err(|error| anyhow::anyhow!("{}", error.to_string().trim_end()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.catalog.validate()?;
        self.storage.validate()?;
        check_ae_title("dicom.ae_title", &self.dicom.ae_title)?;
        let dicom_address = self.dicom_listen()?;
        if !dicom_address.ip().is_loopback() && !self.dicom.insecure {
            bail!(
                "dicom.insecure: dicom.listen = \"{dicom_address}\" is not a loopback address, and plain DICOM \
                 there crosses the network unencrypted; set dicom.insecure = true to allow it, or keep \
                 dicom.listen on loopback and serve the network with [dicom.tls]"
            );
        }
        if let Some(tls) = self.dicom_tls_checked()? {
            if tls.0 == dicom_address {
                bail!("dicom.tls.listen: {} is dicom.listen already; give TLS its own port", tls.0);
            }
        }
        if !self.http.listen.is_empty() {
            self.http.listen.parse::<SocketAddr>().map_err(|_| {
                anyhow::anyhow!("http.listen: {:?} is not an address like 0.0.0.0:8080", self.http.listen)
            })?;
        }
        let base_path = &self.http.base_path;
        if !base_path.starts_with('/')
            || base_path.len() < 2
            || base_path.ends_with('/')
            || base_path.contains(['{', '}', '?', '#'])
        {
            bail!("http.base_path: {base_path:?} must be a path like /dicom-web");
        }
        let public_url = &self.http.public_url;
        let has_scheme = public_url.starts_with("http://") || public_url.starts_with("https://");
        if !public_url.is_empty() && !has_scheme {
            bail!("http.public_url: {:?} must start with http:// or https://", self.http.public_url);
        }
        if self.http.max_upload_bytes < 1024 {
            bail!("http.max_upload_bytes: {} is too small (at least 1024)", self.http.max_upload_bytes);
        }
        if self.http.qido_max_results == 0 {
            bail!("http.qido_max_results: must be at least 1");
        }
        if self.http.idle_timeout_seconds == 0 {
            bail!("http.idle_timeout_seconds: must be at least 1");
        }
        for (index, origin) in self.http.cors_origins.iter().enumerate() {
            let valid = origin == "*"
                || ((origin.starts_with("http://") || origin.starts_with("https://")) && !origin.ends_with('/'));
            if !valid {
                bail!(
                    "http.cors_origins[{index}]: {origin:?} must be \"*\" or an origin like https://viewer.example.org"
                );
            }
        }
        self.http_tls_checked()?;
        self.http_exposure_checked()?;
        self.auth_config()?;
        if !(4096..=16 * 1024 * 1024).contains(&self.dicom.max_pdu_length) {
            bail!("dicom.max_pdu_length: {} is outside 4096..=16777216", self.dicom.max_pdu_length);
        }
        if self.dicom.max_dataset_bytes < 1024 {
            bail!("dicom.max_dataset_bytes: {} is too small (at least 1024)", self.dicom.max_dataset_bytes);
        }
        if self.dicom.max_identifier_bytes < 1024 {
            bail!("dicom.max_identifier_bytes: {} is too small (at least 1024)", self.dicom.max_identifier_bytes);
        }
        if self.dicom.max_associations == 0 {
            bail!("dicom.max_associations: must be at least 1");
        }
        if self.dicom.idle_timeout_seconds == 0 {
            bail!("dicom.idle_timeout_seconds: must be at least 1");
        }
        if self.dicom.outbound_timeout_seconds == 0 {
            bail!("dicom.outbound_timeout_seconds: must be at least 1");
        }
        if self.storage.data_dir.as_os_str().is_empty() {
            bail!("storage.data_dir: must not be empty");
        }
        check_site("storage.site", &self.storage.site)?;
        if self.storage.write_ahead_max_bytes > MAX_WRITE_AHEAD_BYTES {
            anyhow::bail!(
                "storage.write_ahead_max_bytes: {} is more than the largest allowed, {MAX_WRITE_AHEAD_BYTES} (larger instances gain little and swell the catalog's log)",
                self.storage.write_ahead_max_bytes
            );
        }
        if self.audit.syslog.target()?.is_some() && !self.audit.enabled {
            bail!("audit.syslog.target: forwarding needs the audit trail ([audit] enabled = true)");
        }
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            bail!("log.level: {:?} is not a valid filter: {error}", self.log.level);
        }
        for (index, ae) in self.known_aes.iter().enumerate() {
            check_ae_title(&format!("known_ae[{index}].title"), &ae.title)?;
            if ae.host.trim().is_empty() {
                bail!("known_ae[{index}].host: must not be empty");
            }
            if ae.port == 0 {
                bail!("known_ae[{index}].port: must be 1 to 65535");
            }
            if self.known_aes[..index].iter().any(|other| other.title == ae.title) {
                bail!("known_ae[{index}].title: {:?} is listed twice", ae.title);
            }
            ae.role.parse::<Role>().map_err(|error| anyhow::anyhow!("known_ae[{index}].role: {error}"))?;
            check_site(&format!("known_ae[{index}].site"), &ae.site)?;
        }
        for (index, peer) in self.peers.iter().enumerate() {
            let valid_name = !peer.name.is_empty()
                && peer.name.len() <= 64
                && peer.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !valid_name {
                bail!("peer[{index}].name: {:?} must be 1 to 64 letters, digits, '-', '_' or '.'", peer.name);
            }
            if self.peers[..index].iter().any(|other| other.name == peer.name) {
                bail!("peer[{index}].name: {:?} is listed twice", peer.name);
            }
            check_ae_title(&format!("peer[{index}].ae_title"), &peer.ae_title)?;
            if peer.host.trim().is_empty() {
                bail!("peer[{index}].host: must not be empty");
            }
            if peer.port == 0 {
                bail!("peer[{index}].port: must be 1 to 65535");
            }
            match (peer.mode.as_str(), peer.on_failure.as_deref()) {
                ("async", None) | ("sync", None | Some("refuse" | "async")) => {}
                ("async", Some(_)) => bail!("peer[{index}].on_failure: only for mode = \"sync\""),
                ("sync", Some(other)) => {
                    bail!("peer[{index}].on_failure: {other:?} is not \"refuse\" or \"async\"")
                }
                (other, _) => bail!("peer[{index}].mode: {other:?} is not \"async\" or \"sync\""),
            }
            let https = match peer.url.as_deref() {
                None => false,
                Some(url) => {
                    let (https, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
                        (Some(rest), _) => (true, rest),
                        (None, Some(rest)) => (false, rest),
                        (None, None) => bail!("peer[{index}].url: {url:?} must start with http:// or https://"),
                    };
                    if rest.is_empty() || rest.starts_with('/') || rest.contains(['?', '#', ' ']) {
                        bail!("peer[{index}].url: {url:?} must be a base URL like https://pacs-dr.example.org:8443");
                    }
                    https
                }
            };
            if peer.token_file.as_ref().is_some_and(|path| path.as_os_str().is_empty()) {
                bail!("peer[{index}].token_file: must name a file");
            }
            if peer.url.is_some() != peer.token_file.is_some() {
                let missing = if peer.url.is_some() { "token_file" } else { "url" };
                bail!("peer[{index}].{missing}: verify needs both url and token_file");
            }
            if peer.ca_file.is_some() && !https && !peer.tls {
                bail!("peer[{index}].ca_file: only for an https:// url or tls = true");
            }
            if peer.cert_file.is_some() != peer.key_file.is_some() {
                let missing = if peer.cert_file.is_some() { "key_file" } else { "cert_file" };
                bail!("peer[{index}].{missing}: a client certificate needs both cert_file and key_file");
            }
            if peer.cert_file.is_some() && !https && !peer.tls {
                bail!("peer[{index}].cert_file: only for an https:// url or tls = true");
            }
            if peer.server_name.is_some() && !peer.tls {
                bail!("peer[{index}].server_name: only with tls = true");
            }
        }
        if !(3..=3600).contains(&self.replication.lease_seconds) {
            bail!("replication.lease_seconds: must be 3 to 3600");
        }
        self.migration.validate(check_ae_title)?;
        Ok(())
    }

    /// The peers as anti-entropy verify needs them (with their HTTP API,
    /// where configured), and the interval of the periodic verify.
    pub fn verify_peers(&self) -> Vec<haneul_replication::VerifyPeer> {
        self.replication_peers()
            .into_iter()
            .zip(&self.peers)
            .enumerate()
            .map(|(index, ((peer, _), config))| haneul_replication::VerifyPeer {
                peer,
                url: config.url.clone(),
                token_file: config.token_file.clone(),
                ca_file: config.ca_file.clone(),
                identity: client_identity(config),
                config_key: format!("peer[{index}]"),
            })
            .collect()
    }

    /// How often each peer is verified in the background; `None`: never.
    pub fn verify_interval(&self) -> Option<Duration> {
        let minutes = self.replication.verify_interval_minutes;
        (minutes > 0).then(|| Duration::from_secs(minutes * 60))
    }

    /// The replication peers, ready for `haneul_replication::run`, with what
    /// a synchronous peer's failure does (`None`: asynchronous).
    pub fn replication_peers(&self) -> Vec<(haneul_replication::Peer, Option<haneul_core::replication::SyncFailure>)> {
        use haneul_core::replication::SyncFailure;
        self.peers
            .iter()
            .enumerate()
            .map(|(index, peer)| {
                let on_failure = match peer.on_failure.as_deref() {
                    Some("async") => SyncFailure::Async,
                    _ => SyncFailure::Refuse,
                };
                let sync = (peer.mode == "sync").then_some(on_failure);
                let target = haneul_replication::Peer {
                    name: peer.name.clone(),
                    ae_title: peer.ae_title.clone(),
                    host: peer.host.clone(),
                    port: peer.port,
                    calling_ae: self.dicom.ae_title.clone(),
                    max_pdu_length: self.dicom.max_pdu_length,
                    timeout: Duration::from_secs(self.dicom.outbound_timeout_seconds),
                    tls: peer.tls.then(|| {
                        haneul_replication::PeerTls::new(
                            peer.ca_file.clone().unwrap_or_else(|| haneul_replication::http::SYSTEM_CA_BUNDLE.into()),
                            client_identity(peer),
                            peer.server_name.clone().unwrap_or_else(|| peer.host.clone()),
                            format!("peer[{index}]"),
                        )
                    }),
                };
                (target, sync)
            })
            .collect()
    }

    pub fn dicom_listen(&self) -> anyhow::Result<SocketAddr> {
        self.dicom
            .listen
            .parse::<SocketAddr>()
            .map_err(|_| anyhow::anyhow!("dicom.listen: {:?} is not an address like 0.0.0.0:11112", self.dicom.listen))
    }

    /// The `[http.tls]` settings, checked for consistency (the files are read
    /// when the server starts, see [`Config::http_tls`]).
    fn http_tls_checked(&self) -> anyhow::Result<Option<haneul_tls::TlsSettings>> {
        let Some(tls) = &self.http.tls else {
            return Ok(None);
        };
        tls_settings("http.tls", &tls.cert_file, &tls.key_file, &tls.client_ca_file, tls.client_auth).map(Some)
    }

    /// The `[dicom.tls]` listen address and settings, checked for
    /// consistency (the files are read by [`Config::dicom_tls`]).
    fn dicom_tls_checked(&self) -> anyhow::Result<Option<(SocketAddr, haneul_tls::TlsSettings)>> {
        let Some(tls) = &self.dicom.tls else {
            return Ok(None);
        };
        let listen = tls
            .listen
            .parse::<SocketAddr>()
            .map_err(|_| anyhow::anyhow!("dicom.tls.listen: {:?} is not an address like 0.0.0.0:2762", tls.listen))?;
        let settings = tls_settings("dicom.tls", &tls.cert_file, &tls.key_file, &tls.client_ca_file, tls.client_auth)?;
        Ok(Some((listen, settings)))
    }

    /// The DICOM TLS listener from `[dicom.tls]`: its address and the rustls
    /// configuration, files read and checked; `None` without that table.
    /// Errors name the key and the file.
    pub fn dicom_tls(&self) -> anyhow::Result<Option<(SocketAddr, std::sync::Arc<haneul_tls::ServerConfig>)>> {
        let Some((listen, settings)) = self.dicom_tls_checked()? else {
            return Ok(None);
        };
        let config = haneul_tls::server_config(&settings).map_err(|error| anyhow::anyhow!("dicom.tls.{error}"))?;
        Ok(Some((listen, std::sync::Arc::new(config))))
    }

    /// A listener reachable from the network must speak TLS unless the
    /// operator says otherwise; anonymous access only on loopback.
    fn http_exposure_checked(&self) -> anyhow::Result<()> {
        let Ok(address) = self.http.listen.parse::<SocketAddr>() else {
            return Ok(());
        };
        let loopback = address.ip().is_loopback();
        if !loopback && self.http.tls.is_none() && !self.http.insecure {
            bail!(
                "http.listen: {address} is reachable from the network without TLS; configure [http.tls], \
                 or set http.insecure = true behind a TLS proxy"
            );
        }
        if !loopback && !self.http.anonymous_role.is_empty() {
            bail!("http.anonymous_role: lets requests in without credentials, only allowed on a loopback http.listen");
        }
        Ok(())
    }

    /// Whether the HTTP endpoint is exposed without TLS by `http.insecure`.
    pub fn http_insecure_exposure(&self) -> bool {
        let exposed = self.http.listen.parse::<SocketAddr>().is_ok_and(|address| !address.ip().is_loopback());
        exposed && self.http.tls.is_none()
    }

    /// Authentication settings of the HTTP edge from `[http]`, `[http.sessions]`,
    /// `[http.login]` and `[http.oidc]`.
    pub fn auth_config(&self) -> anyhow::Result<haneul_dicomweb::AuthConfig> {
        use haneul_core::Role;
        let parse_role = |key: &str, name: &str| -> anyhow::Result<Role> {
            name.parse::<Role>().map_err(|error| anyhow::anyhow!("{key}: {error}"))
        };
        let anonymous_role = match self.http.anonymous_role.trim() {
            "" => None,
            name => Some(parse_role("http.anonymous_role", name)?),
        };
        let sessions = &self.http.sessions;
        if sessions.idle_timeout_minutes == 0 {
            bail!("http.sessions.idle_timeout_minutes: must be at least 1");
        }
        if sessions.lifetime_hours == 0 {
            bail!("http.sessions.lifetime_hours: must be at least 1");
        }
        let oidc = match &self.http.oidc {
            None => None,
            Some(oidc) => {
                if oidc.issuer.trim().is_empty() {
                    bail!("http.oidc.issuer: must name the identity provider's issuer");
                }
                if oidc.audiences.iter().all(|audience| audience.trim().is_empty()) {
                    bail!("http.oidc.audiences: list at least one accepted audience");
                }
                match (&oidc.jwks_url, &oidc.jwks_file) {
                    (None, None) => bail!("http.oidc.jwks_url: set the issuer's JWKS URL (or jwks_file)"),
                    (Some(_), Some(_)) => bail!("http.oidc.jwks_file: set jwks_url or jwks_file, not both"),
                    (Some(url), None) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                        bail!("http.oidc.jwks_url: {url:?} must start with http:// or https://")
                    }
                    _ => {}
                }
                if oidc.refresh_minutes == 0 {
                    bail!("http.oidc.refresh_minutes: must be at least 1");
                }
                let mut role_map = std::collections::BTreeMap::new();
                for (theirs, ours) in &oidc.roles {
                    role_map.insert(theirs.clone(), parse_role(&format!("http.oidc.roles.{theirs}"), ours)?);
                }
                Some(haneul_dicomweb::OidcConfig {
                    issuer: oidc.issuer.clone(),
                    audiences: oidc.audiences.clone(),
                    jwks_url: oidc.jwks_url.clone(),
                    jwks_file: oidc.jwks_file.clone(),
                    ca_file: oidc.ca_file.clone(),
                    user_claim: oidc.user_claim.clone(),
                    role_claim: oidc.role_claim.clone(),
                    role_map,
                    sites_claim: oidc.sites_claim.clone(),
                    leeway: Duration::from_secs(oidc.leeway_seconds),
                    refresh: Duration::from_secs(oidc.refresh_minutes * 60),
                })
            }
        };
        Ok(haneul_dicomweb::AuthConfig {
            anonymous_role,
            session_idle: Duration::from_secs(sessions.idle_timeout_minutes * 60),
            session_lifetime: Duration::from_secs(sessions.lifetime_hours * 3600),
            max_failed_logins: self.http.login.max_failures,
            lockout: Duration::from_secs(self.http.login.lockout_minutes * 60),
            oidc,
        })
    }

    /// The HTTPS configuration from `[http.tls]`, its files read and checked;
    /// `None` for plain HTTP. Errors name the key and the file.
    pub fn http_tls(&self) -> anyhow::Result<Option<std::sync::Arc<haneul_tls::ServerConfig>>> {
        let Some(settings) = self.http_tls_checked()? else {
            return Ok(None);
        };
        let config =
            haneul_dicomweb::tls::server_config(&settings).map_err(|error| anyhow::anyhow!("http.tls.{error}"))?;
        Ok(Some(config))
    }

    /// The AEs of this configuration, as the directory both edges read
    /// (the server adds the shared ones from the catalog).
    pub fn ae_directory(&self) -> AeDirectory {
        AeDirectory::new(
            self.known_aes
                .iter()
                .map(|ae| KnownAe {
                    title: ae.title.clone(),
                    host: ae.host.clone(),
                    port: ae.port,
                    // Checked by `validate`.
                    role: ae.role.parse().unwrap_or(Role::Service),
                    site: ae.site.clone(),
                })
                .collect(),
        )
    }

    pub fn web_config(&self, known_aes: &AeDirectory) -> anyhow::Result<haneul_dicomweb::WebConfig> {
        Ok(haneul_dicomweb::WebConfig {
            base_path: self.http.base_path.clone(),
            public_url: Some(self.http.public_url.clone()).filter(|url| !url.is_empty()),
            cors_origins: self.http.cors_origins.clone(),
            max_upload_bytes: self.http.max_upload_bytes,
            qido_max_results: self.http.qido_max_results,
            idle_timeout: Duration::from_secs(self.http.idle_timeout_seconds),
            ae_title: self.dicom.ae_title.clone(),
            dicom_port: self.dicom_listen().map(|address| address.port()).unwrap_or(11112),
            known_aes: known_aes.clone(),
            auth: self.auth_config()?,
        })
    }

    /// How long a node's lease on a peer's replication lasts (`replication.lease_seconds`).
    pub fn replication_lease(&self) -> Duration {
        Duration::from_secs(self.replication.lease_seconds)
    }

    pub fn server_settings(&self, known_aes: &AeDirectory) -> ServerSettings {
        ServerSettings {
            ae_title: self.dicom.ae_title.clone(),
            max_pdu_length: self.dicom.max_pdu_length,
            max_dataset_size: self.dicom.max_dataset_bytes,
            max_identifier_size: self.dicom.max_identifier_bytes,
            idle_timeout: Duration::from_secs(self.dicom.idle_timeout_seconds),
            max_associations: self.dicom.max_associations,
            max_associations_per_ae: self.dicom.max_associations_per_ae,
            max_associations_per_ip: self.dicom.max_associations_per_ip,
            allow_any_loopback: self.dicom.allow_any_loopback,
            known_aes: known_aes.clone(),
            permissions: haneul_core::PermissionMatrix::default(),
            commitment_delivery: match self.dicom.storage_commitment.delivery {
                CommitmentDeliveryConfig::SameAssociation => CommitmentDelivery::SameAssociation,
                CommitmentDeliveryConfig::NewAssociation => CommitmentDelivery::NewAssociation,
            },
            commitment_verifies_digests: self.dicom.storage_commitment.verify_digests,
            outbound_timeout: Duration::from_secs(self.dicom.outbound_timeout_seconds),
            max_find_answers: (self.dicom.max_find_answers > 0).then_some(self.dicom.max_find_answers),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_zero_configuration_defaults() {
        let config = Config::parse("").expect("empty config is valid");
        assert_eq!(config.dicom.ae_title, "HANEUL");
        assert_eq!(config.dicom_listen().expect("valid").port(), 11112);
        assert_eq!(config.storage.data_dir, PathBuf::from("./haneul-data"));
    }

    #[test]
    fn the_documented_example_is_valid() {
        let example = include_str!("../../../haneul.example.toml");
        let config = Config::parse(example).expect("example config is valid");
        assert_eq!(config.known_aes.len(), 1);
    }

    #[test]
    fn the_documented_peer_block_is_valid_once_uncommented() {
        let block = example_block("[peer]");
        let config = Config::parse(&block).unwrap_or_else(|error| panic!("{block}\n{error:#}"));
        let peers = config.replication_peers();
        assert_eq!(peers.len(), 1);
        let (peer, sync) = &peers[0];
        assert_eq!((peer.name.as_str(), peer.ae_title.as_str(), peer.port), ("dr-site", "HANEUL_DR", 2762));
        let tls = peer.tls.as_ref().expect("DICOM TLS to the peer");
        assert_eq!(tls.server_name, "pacs-dr.hospital.example", "the host by default");
        assert!(tls.identity.is_some(), "with our client certificate");
        assert_eq!(peer.calling_ae, "HANEUL", "we call the peer with our own AE title");
        assert_eq!(*sync, Some(haneul_core::replication::SyncFailure::Refuse), "sync, refusing by default");
        let verify = &config.verify_peers()[0];
        assert_eq!(verify.url.as_deref(), Some("https://pacs-dr.example.org:8443"));
        assert!(verify.token_file.is_some() && verify.ca_file.is_some() && verify.identity.is_some());
        assert_eq!(verify.config_key, "peer[0]");
        assert_eq!(Config::parse("").unwrap().verify_interval(), Some(Duration::from_secs(3600)), "hourly by default");
        let example = Config::parse(include_str!("../../../haneul.example.toml")).expect("valid");
        assert_eq!(example.verify_interval(), Some(Duration::from_secs(3600)), "the example shows the default");
        assert_eq!(Config::parse("[replication]\nverify_interval_minutes = 0\n").unwrap().verify_interval(), None);
    }

    #[test]
    fn the_documented_oidc_block_is_valid_once_uncommented() {
        let block = example_block("http.oidc");
        let config = Config::parse(&block).unwrap_or_else(|error| panic!("{block}\n{error:#}"));
        let oidc = config.auth_config().expect("valid").oidc.expect("[http.oidc] parsed");
        assert_eq!(oidc.role_map.get("pacs-radiologist"), Some(&haneul_core::Role::Radiologist));
        assert_eq!(oidc.role_claim, "realm_access.roles");
    }

    #[test]
    fn the_documented_s3_block_is_valid_once_uncommented() {
        let block = format!("[storage]\nbackend = \"s3\"\nnode = \"pacs-a\"\n{}", example_block("storage.s3"));
        let config = Config::parse(&block).unwrap_or_else(|error| panic!("{block}\n{error:#}"));
        let s3 = config.storage.s3.as_ref().expect("[storage.s3] parsed");
        assert_eq!((s3.bucket.as_str(), s3.region.as_str()), ("haneul", "us-east-1"));
        let error = format!("{:#}", config.blob_config().expect_err("no such secret file"));
        assert!(error.contains("storage.s3.secret_access_key_file"), "{error}");
        let without_node = Config::parse("[storage]\nnode = \"x\"\n").expect("valid");
        assert_eq!(without_node.blob_config().expect("local").node, None, "a lone node on local disk has no prefix");
    }

    #[test]
    fn the_documented_https_block_is_valid_once_uncommented() {
        let block = example_block("http.tls");
        let config = Config::parse(&block).unwrap_or_else(|error| panic!("{block}\n{error:#}"));
        let tls = config.http.tls.expect("[http.tls] parsed");
        assert_eq!(tls.client_auth, ClientAuthConfig::Required);
        let error = format!("{:#}", config_with_missing_files().http_tls().expect_err("no such files"));
        assert!(error.contains("http.tls.cert_file") && error.contains("/nonexistent/cert.pem"), "{error}");
    }

    /// The commented-out `table` block of the example, uncommented.
    fn example_block(table: &str) -> String {
        let example = include_str!("../../../haneul.example.toml");
        let start = example.find(&format!("# [{table}]")).unwrap_or_else(|| panic!("the example documents [{table}]"));
        example[start..]
            .lines()
            .take_while(|line| line.starts_with('#'))
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| line.starts_with('[') || line.contains(" = "))
            .map(|line| format!("{line}\n"))
            .collect()
    }

    #[test]
    fn the_documented_migration_source_is_valid_once_uncommented() {
        let block = example_block("[migration.source]");
        let config = Config::parse(&block).unwrap_or_else(|error| panic!("{block}\n{error:#}"));
        let sources = config.migration.sources(&config.dicom.ae_title, 16384);
        assert_eq!(sources.len(), 1);
        let source = &sources[0];
        assert_eq!((source.name.as_str(), source.parallel, source.max_attempts), ("old-pacs", 4, 5));
        assert_eq!(source.windows.len(), 2);
        assert_eq!(haneul_migrate::windows::parallel_at(&source.windows, source.parallel, 12 * 60), 1);
        assert_eq!(haneul_migrate::windows::parallel_at(&source.windows, source.parallel, 23 * 60), 8);
        match &source.fetch {
            haneul_migrate::Fetch::DicomMove { node, destination, cap } => {
                assert_eq!((node.ae_title.as_str(), node.port, destination.as_str()), ("OLDPACS", 104, "HANEUL"));
                assert_eq!(*cap, Some(1000));
            }
            other => panic!("a C-MOVE source, not {other:?}"),
        }
        let coerce = config.migration.sources[0].coerce.as_ref().expect("coercion rules");
        assert_eq!(coerce.character_set.as_deref(), Some("\\ISO 2022 IR 149"));
    }

    #[test]
    fn bad_migration_sources_are_refused_naming_the_key() {
        let refused = |text: &str| Config::parse(text).expect_err(text).to_string();
        let base = "[[migration.source]]\nname = \"old\"\nae_title = \"OLD\"\nhost = \"h\"\nport = 104\n";
        assert!(refused("[[migration.source]]\nname = \"old\"\n").contains("migration.source[0].ae_title"));
        assert!(refused(&format!("{base}parallel = 0\n")).contains("migration.source[0].parallel"));
        assert!(refused(&format!("{base}windows = [{{ time = \"7-20\", parallel = 1 }}]\n"))
            .contains("migration.source[0].windows[0].time"));
        assert!(refused(&format!("{base}method = \"ftp\"\n")).contains("migration.source[0].method"));
        assert!(refused(&format!("{base}colour = 1\n")).contains("colour"));
        assert!(refused(&format!("{base}{base}")).contains("listed twice"));
        let folder = "[[migration.source]]\nname = \"cd\"\nmethod = \"folder\"\n";
        assert!(refused(folder).contains("migration.source[0].path"));
        assert!(refused(&format!("{folder}path = \"/media\"\nport = 104\n")).contains("migration.source[0].port"));
        let get = "[[migration.source]]\nname = \"old\"\nmethod = \"c-get\"\n";
        assert!(refused(get).contains("migration.source[0].ae_title"));
        let config = Config::parse(&format!("{get}ae_title = \"OLD\"\nhost = \"h\"\nport = 104\n")).expect("c-get");
        let sources = config.migration.sources("HANEUL", 16384);
        assert!(matches!(&sources[0].fetch, haneul_migrate::Fetch::DicomGet { node, cap: None } if node.port == 104));
    }

    #[test]
    fn the_documented_dicom_tls_block_is_valid_once_uncommented() {
        let block = example_block("dicom.tls");
        let config = Config::parse(&block).unwrap_or_else(|error| panic!("{block}\n{error:#}"));
        let tls = config.dicom.tls.as_ref().expect("[dicom.tls] parsed");
        assert_eq!(tls.client_auth, ClientAuthConfig::Required);
        assert_eq!(tls.listen, "0.0.0.0:2762", "TLS may listen on the network without dicom.insecure");
        let error = format!("{:#}", config.dicom_tls().expect_err("no such files"));
        assert!(error.contains("dicom.tls.cert_file") && error.contains("/etc/haneul/tls/server.pem"), "{error}");
        let defaulted = Config::parse("[dicom.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n").expect("valid");
        assert_eq!(defaulted.dicom.tls.expect("[dicom.tls]").listen, "127.0.0.1:2762");
    }

    #[test]
    fn plain_dicom_leaves_loopback_only_when_insecure() {
        let config = Config::parse("").expect("defaults");
        assert!(config.dicom_listen().expect("valid").ip().is_loopback(), "the default listen is loopback");
        for listen in ["0.0.0.0:11112", "[::]:11112", "192.0.2.10:104"] {
            let text = format!("[dicom]\nlisten = \"{listen}\"\n");
            let error = format!("{:#}", Config::parse(&text).expect_err(listen));
            assert!(error.contains("dicom.insecure") && error.contains(listen), "{error}");
            Config::parse(&format!("{text}insecure = true\n")).unwrap_or_else(|e| panic!("{listen}: {e:#}"));
        }
        Config::parse("[dicom]\nlisten = \"[::1]:11112\"\n").expect("IPv6 loopback");
    }

    #[test]
    fn known_ae_roles_default_to_service_and_reach_the_server() {
        let config = Config::parse(
            "[[known_ae]]\ntitle = \"CT1\"\nhost = \"10.0.0.7\"\nport = 104\n\
             [[known_ae]]\ntitle = \"VIEWER\"\nhost = \"10.0.0.8\"\nport = 104\nrole = \"Clinician\"\n",
        )
        .expect("valid");
        let settings = config.server_settings(&config.ae_directory());
        assert_eq!(settings.known_ae("CT1").map(|ae| ae.role), Some(Role::Service));
        assert_eq!(settings.known_ae("VIEWER").map(|ae| ae.role), Some(Role::Clinician));
        assert_eq!((settings.max_associations_per_ae, settings.max_associations_per_ip), (32, 64));
    }

    fn config_with_missing_files() -> Config {
        Config::parse("[http.tls]\ncert_file = \"/nonexistent/cert.pem\"\nkey_file = \"/nonexistent/key.pem\"\n")
            .expect("valid until the files are read")
    }

    #[test]
    fn syslog_forwarding_is_off_by_default_and_parses() {
        assert!(Config::parse("").unwrap().audit.syslog.target().unwrap().is_none());
        let config =
            Config::parse("[audit.syslog]\ntarget = \"tls://collector:6514\"\nca_file = \"ca.pem\"\n").unwrap();
        let target = config.audit.syslog.target().unwrap().expect("a target");
        assert_eq!((target.host.as_str(), target.port), ("collector", 6514));
        let error = Config::parse("[audit]\nenabled = false\n[audit.syslog]\ntarget = \"udp://h:514\"\n").unwrap_err();
        assert!(format!("{error:#}").contains("audit.syslog.target"), "{error:#}");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let error = Config::parse("[dicom]\nae_tittle = \"X\"\n").expect_err("typo must fail");
        assert!(error.to_string().contains("ae_tittle"), "{error}");
        let error = Config::parse("colour = 1\n").expect_err("unknown top-level key");
        assert!(error.to_string().contains("colour"), "{error}");
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, key) in [
            ("[dicom]\nae_title = \"THIS TITLE IS FAR TOO LONG\"\n", "dicom.ae_title"),
            ("[dicom]\nlisten = \"nowhere\"\n", "dicom.listen"),
            ("[dicom]\nmax_pdu_length = 10\n", "dicom.max_pdu_length"),
            ("[storage]\nduplicate_policy = \"overwrite\"\n", "duplicate_policy"),
            ("[storage]\nwrite_ahead_max_bytes = 2000000\n", "storage.write_ahead_max_bytes"),
            ("[catalog]\ncert_file = \"c.pem\"\n", "catalog.cert_file"),
            ("[catalog]\nengine = \"postgres\"\nurl = \"postgresql://h@db/x\"\nca_file = \"ca.pem\"\ncert_file = \"c.pem\"\n", "catalog.key_file"),
            ("[catalog]\nengine = \"postgres\"\nurl = \"postgresql://h@db/x\"\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n", "catalog.ca_file"),
            ("[[known_ae]]\ntitle = \"A\"\nhost = \"\"\nport = 104\n", "known_ae[0].host"),
            ("[[known_ae]]\ntitle = \"A\"\nhost = \"h\"\nport = 104\n[[known_ae]]\ntitle = \"A\"\nhost = \"h\"\nport = 105\n", "known_ae[1].title"),
            ("[dicom]\nmax_associations = -1\n", "max_associations"),
            ("[dicom]\nmax_associations_per_ae = -1\n", "max_associations_per_ae"),
            ("[dicom]\nmax_associations_per_ip = \"many\"\n", "max_associations_per_ip"),
            ("[dicom]\nlisten = \"0.0.0.0:11112\"\n", "dicom.insecure"),
            ("[[known_ae]]\ntitle = \"A\"\nhost = \"h\"\nport = 104\nrole = \"doctor\"\n", "known_ae[0].role"),
            ("[dicom.tls]\ncert_file = \"c.pem\"\n", "key_file"),
            ("[dicom.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nlisten = \"here\"\n", "dicom.tls.listen"),
            ("[dicom]\nlisten = \"127.0.0.1:2762\"\n[dicom.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n", "dicom.tls.listen"),
            ("[dicom.tls]\ncert_file = \"\"\nkey_file = \"k.pem\"\n", "dicom.tls.cert_file"),
            ("[dicom.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nclient_auth = \"required\"\n", "dicom.tls.client_auth"),
            ("[dicom.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nclient_ca_file = \"ca.pem\"\n", "dicom.tls.client_ca_file"),
            ("[dicom.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nprotocols = \"TLSv1\"\n", "protocols"),
            ("[http]\nbase_path = \"dicom-web\"\n", "http.base_path"),
            ("[http]\ncors_origins = [\"viewer.example.org\"]\n", "http.cors_origins[0]"),
            ("[http]\npublic_url = \"ftp://x\"\n", "http.public_url"),
            ("[http]\nqido_max_results = 0\n", "http.qido_max_results"),
            ("[http]\nidle_timeout_seconds = 0\n", "http.idle_timeout_seconds"),
            ("[http.tls]\ncert_file = \"c.pem\"\n", "key_file"),
            ("[http.tls]\ncert_file = \"\"\nkey_file = \"k.pem\"\n", "http.tls.cert_file"),
            ("[http.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nclient_auth = \"required\"\n", "http.tls.client_auth"),
            ("[http.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nclient_auth = \"maybe\"\n", "client_auth"),
            ("[http.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nclient_ca_file = \"ca.pem\"\n", "http.tls.client_ca_file"),
            ("[http.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nciphers = \"all\"\n", "ciphers"),
            ("[audit.syslog]\ntarget = \"syslog.example.org:514\"\n", "audit.syslog.target"),
            ("[audit.syslog]\ntarget = \"tls://syslog.example.org:6514\"\n", "audit.syslog.ca_file"),
            ("[audit.syslog]\ntarget = \"udp://h:514\"\nca_file = \"ca.pem\"\n", "audit.syslog.ca_file"),
            ("[audit.syslog]\ntarget = \"udp://h:514\"\nport = 514\n", "port"),
            ("[[peer]]\nname = \"b\"\nae_title = \"B\"\nhost = \"h\"\nport = 104\nurl = \"ftp://h\"\ntoken_file = \"t\"\n", "peer[0].url"),
            ("[[peer]]\nname = \"b\"\nae_title = \"B\"\nhost = \"h\"\nport = 104\nurl = \"http://h:8080\"\n", "peer[0].token_file"),
            ("[[peer]]\nname = \"b\"\nae_title = \"B\"\nhost = \"h\"\nport = 104\ntoken_file = \"t\"\n", "peer[0].url"),
            ("[[peer]]\nname = \"b\"\nae_title = \"B\"\nhost = \"h\"\nport = 104\nurl = \"http://h\"\ntoken_file = \"t\"\nca_file = \"ca.pem\"\n", "peer[0].ca_file"),
            ("[replication]\nverify_interval = \"6h\"\n", "verify_interval"),
        ] {
            let error = format!("{:#}", Config::parse(text).expect_err(text));
            assert!(error.contains(key), "{key} not named in: {error}");
        }
    }
}
