//! HTTPS for the HTTP edge: the rustls server configuration shared with
//! DICOM TLS (`haneul-tls`: BCP 195, TLS 1.2 and 1.3 only, AEAD suites with
//! forward secrecy) plus ALPN, and an accept loop that serves the router over
//! TLS with HTTP/1.1 or HTTP/2 (ALPN `h2`, `http/1.1`).

use std::sync::Arc;

use axum::http::{header, HeaderValue};
use axum::Router;
pub use haneul_tls::{ClientAuth, ServerConfig, TlsError, TlsSettings};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::{router_with, ListenPort, WebState};

/// `Strict-Transport-Security` sent on every response over TLS (one year).
pub const HSTS: &str = "max-age=31536000";

/// The HTTPS configuration: the shared profile and files of
/// [`haneul_tls::server_config`], with ALPN `h2` and `http/1.1`.
pub fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = haneul_tls::server_config(settings)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// [`crate::serve_with`] over TLS: every connection is handshaken with `tls`
/// (within 10 s), then served with HTTP/1.1 or HTTP/2 under the same time
/// limits as plain HTTP (`connections`); responses carry HSTS. A failed
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
    let idle_timeout = state.config().idle_timeout;
    let mut router = router_with(state, extra)
        .layer(SetResponseHeaderLayer::overriding(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS)));
    if let Ok(local) = listener.local_addr() {
        router = router.layer(axum::Extension(ListenPort { port: local.port(), https: true }));
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    crate::connections::serve_connections(listener, router, Some(acceptor), idle_timeout, shutdown).await;
}
