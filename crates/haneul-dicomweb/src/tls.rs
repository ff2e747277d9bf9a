//! HTTPS for the HTTP edge: a rustls server configuration after the BCP 195
//! profile (TLS 1.2 and 1.3 only, rustls' safe default cipher suites, all
//! AEAD with forward secrecy) and an accept loop that serves the router over
//! TLS with HTTP/1.1 or HTTP/2 (ALPN `h2`, `http/1.1`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
pub use rustls::ServerConfig;
use tower::ServiceExt;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::{router_with, ListenPort, WebState};

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `Strict-Transport-Security` sent on every response over TLS (one year).
pub const HSTS: &str = "max-age=31536000";

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

/// Certificate files of the HTTPS endpoint (PEM).
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

/// A certificate file that could not be used: which setting, which file, why.
#[derive(Debug)]
pub struct TlsError {
    /// The setting naming the file (`cert_file`, `key_file`, `client_ca_file`).
    pub key: &'static str,
    pub path: PathBuf,
    pub reason: String,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.key, self.path.display(), self.reason)
    }
}

impl std::error::Error for TlsError {}

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

/// Build the rustls configuration from the certificate files, checking them.
pub fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let certificates = read_certificates("cert_file", &settings.cert_file)?;
    let key_pem = read_pem("key_file", &settings.key_file)?;
    let key_error = |reason: String| TlsError { key: "key_file", path: settings.key_file.clone(), reason };
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|error| key_error(format!("no PEM private key (PKCS#8, PKCS#1 or SEC1): {error}")))?;

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
    let mut config = builder.with_single_cert(certificates, private_key).map_err(|error| TlsError {
        key: "key_file",
        path: settings.key_file.clone(),
        reason: format!("does not go with cert_file {}: {error}", settings.cert_file.display()),
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// [`crate::serve_with`] over TLS: every connection is handshaken with `tls`,
/// then served with HTTP/1.1 or HTTP/2; responses carry HSTS. A failed
/// handshake is logged at debug and touches no other connection. When
/// `shutdown` resolves, no new connection is accepted and open ones finish
/// their requests.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    tls: Arc<ServerConfig>,
    state: WebState,
    extra: Router<WebState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let mut router = router_with(state, extra)
        .layer(SetResponseHeaderLayer::overriding(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS)));
    if let Ok(local) = listener.local_addr() {
        router = router.layer(axum::Extension(ListenPort { port: local.port(), https: true }));
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // Handshakes still under way at shutdown are abandoned, not waited for.
    let stopping = tokio_util::sync::CancellationToken::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!(%error, "HTTPS accept failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let watcher = graceful.watcher();
        let stopping = stopping.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            let handshaken = tokio::select! {
                handshaken = handshake => handshaken,
                () = stopping.cancelled() => return,
            };
            let stream = match handshaken {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                router.clone().oneshot(request)
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(error) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, %error, "HTTPS connection ended with an error");
            }
        });
    }
    drop(listener);
    stopping.cancel();
    graceful.shutdown().await;
}
