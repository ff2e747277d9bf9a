//! HTTPS for the HTTP edge: the rustls server configuration shared with
//! DICOM TLS (`haneul-tls`: BCP 195, TLS 1.2 and 1.3 only, AEAD suites with
//! forward secrecy) plus ALPN, and an accept loop that serves the router over
//! TLS with HTTP/1.1 or HTTP/2 (ALPN `h2`, `http/1.1`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue};
use axum::Router;
pub use haneul_tls::{ClientAuth, ServerConfig, TlsError, TlsSettings};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::ServiceExt;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::{router_with, ListenPort, WebState};

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `Strict-Transport-Security` sent on every response over TLS (one year).
pub const HSTS: &str = "max-age=31536000";

/// The HTTPS configuration: the shared profile and files of
/// [`haneul_tls::server_config`], with ALPN `h2` and `http/1.1`.
pub fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = haneul_tls::server_config(settings)?;
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
