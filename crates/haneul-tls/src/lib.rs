//! The rustls server configuration shared by Haneul's TLS edges: HTTPS
//! (`haneul-dicomweb`) and DICOM TLS (`haneul-dimse`). One place decides the
//! profile — BCP 195 as PS3.15 B.1 asks: TLS 1.2 and 1.3 only, rustls' default
//! cipher suites of the ring provider, all ECDHE with AEAD — reads the PEM
//! files, and verifies client certificates against a CA.
//!
//! Pure configuration: no sockets, no async. The edges add what is theirs
//! (ALPN for HTTP) and run the handshakes.

mod subject;
#[cfg(feature = "test-pki")]
pub mod test_pki;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use rustls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
pub use rustls::ServerConfig;
pub use subject::subject_name;

/// Whether clients must present a certificate signed by the client CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    None,
    /// A client certificate is asked for; one that is sent must verify.
    Optional,
    /// The handshake fails without a verified client certificate.
    Required,
}

/// Certificate files of a TLS endpoint (PEM).
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

/// A certificate file that could not be used: which setting, which file, why.
/// The configuration layer prefixes the table (`http.tls.`, `dicom.tls.`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{key}: {}: {reason}", path.display())]
pub struct TlsError {
    /// The setting naming the file (`cert_file`, `key_file`, `client_ca_file`).
    pub key: &'static str,
    pub path: PathBuf,
    pub reason: String,
}

fn read_pem(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError {
        key,
        path: path.to_path_buf(),
        reason: format!("cannot read: {error}"),
    })
}

fn read_certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(key, path)?;
    let failed = |reason: String| TlsError { key, path: path.to_path_buf(), reason };
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| failed(format!("not a PEM certificate file: {error}")))?;
    if certificates.is_empty() {
        return Err(failed("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into()));
    }
    Ok(certificates)
}

/// Build the rustls server configuration from the certificate files,
/// checking them: the chain and key must go together, and a client CA is
/// needed (and must be usable) whenever client certificates are asked for.
/// No ALPN protocols are set; an edge that negotiates one adds it.
pub fn server_config(settings: &TlsSettings) -> Result<ServerConfig, TlsError> {
    let certificates = read_certificates("cert_file", &settings.cert_file)?;
    let private_key = read_private_key(&settings.key_file)?;
    let key_error = |reason: String| TlsError { key: "key_file", path: settings.key_file.clone(), reason };

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| key_error(format!("TLS setup failed: {error}")))?;
    let builder = match (settings.client_auth, &settings.client_ca_file) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (mode, ca_file) => {
            let ca_key = "client_ca_file";
            let ca_path = ca_file.clone().unwrap_or_default();
            let ca_error = |reason: String| TlsError { key: ca_key, path: ca_path.clone(), reason };
            if ca_file.is_none() {
                return Err(ca_error("client_auth needs client_ca_file, the CA that signs client certificates".into()));
            }
            let mut roots = RootCertStore::empty();
            for certificate in read_certificates(ca_key, &ca_path)? {
                roots.add(certificate).map_err(|error| ca_error(format!("not a usable CA certificate: {error}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            let verifier = if mode == ClientAuth::Optional { verifier.allow_unauthenticated() } else { verifier };
            let verifier = verifier.build().map_err(|error| ca_error(format!("client CA unusable: {error}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder.with_single_cert(certificates, private_key).map_err(|error| TlsError {
        key: "key_file",
        path: settings.key_file.clone(),
        reason: format!("does not go with cert_file {}: {error}", settings.cert_file.display()),
    })
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let key_pem = read_pem("key_file", path)?;
    PrivateKeyDer::from_pem_slice(&key_pem).map_err(|error| TlsError {
        key: "key_file",
        path: path.to_path_buf(),
        reason: format!("no PEM private key (PKCS#8, PKCS#1 or SEC1): {error}"),
    })
}

/// A client certificate and its key (PEM files), for mutual TLS.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// A client configuration trusting the CA certificates of `ca_file` (PEM),
/// with the same protocol versions as the servers, for the connections
/// Haneul opens itself (syslog over TLS, an OIDC issuer's keys).
pub fn client_config(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    client_config_with_identity(ca_file, None)
}

/// [`client_config`] presenting `identity` when the server asks for a
/// client certificate (replication peers over DICOM TLS or HTTPS).
pub fn client_config_with_identity(
    ca_file: &Path,
    identity: Option<&ClientIdentity>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let key = "ca_file";
    let failed = |reason: String| TlsError { key, path: ca_file.to_path_buf(), reason };
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(key, ca_file)? {
        roots.add(certificate).map_err(|error| failed(format!("not a usable CA certificate: {error}")))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| failed(format!("TLS setup failed: {error}")))?
        .with_root_certificates(roots);
    let config = match identity {
        None => config.with_no_client_auth(),
        Some(identity) => {
            let certificates = read_certificates("cert_file", &identity.cert_file)?;
            let private_key = read_private_key(&identity.key_file)?;
            config.with_client_auth_cert(certificates, private_key).map_err(|error| TlsError {
                key: "key_file",
                path: identity.key_file.clone(),
                reason: format!("does not go with cert_file {}: {error}", identity.cert_file.display()),
            })?
        }
    };
    Ok(Arc::new(config))
}

/// The subject of the certificate a client presented and the server
/// verified (the first of the chain), in RFC 4514 form; `None` when the
/// client sent none or its subject cannot be read.
pub fn peer_subject(connection: &rustls::ServerConnection) -> Option<String> {
    let leaf = connection.peer_certificates()?.first()?;
    subject_name(leaf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_setting_and_the_file() {
        let settings = TlsSettings {
            cert_file: PathBuf::from("/nonexistent/server.pem"),
            key_file: PathBuf::from("/nonexistent/server.key"),
            client_ca_file: None,
            client_auth: ClientAuth::None,
        };
        let message = server_config(&settings).expect_err("no such file").to_string();
        assert!(message.starts_with("cert_file: /nonexistent/server.pem: cannot read"), "{message}");
    }
}
