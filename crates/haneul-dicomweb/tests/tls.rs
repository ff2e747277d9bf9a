//! HTTPS in process: `tls::server_config` from PEM files made with the
//! `openssl` CLI, `tls::serve_tls` against a rustls client (ALPN h2, HSTS),
//! failed handshakes that leave other connections alone, graceful shutdown.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Request, StatusCode, Version};
use haneul_core::{Archive, ArchiveConfig};
use haneul_dicomweb::tls::{serve_tls, server_config, ClientAuth, TlsSettings, HSTS};
use haneul_dicomweb::{WebConfig, WebState};
use haneul_tls::test_pki::Pki;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The server certificate of a test PKI as HTTPS settings.
fn settings(pki: &Pki) -> TlsSettings {
    TlsSettings {
        cert_file: pki.path("server.pem"),
        key_file: pki.path("server.key"),
        client_ca_file: None,
        client_auth: ClientAuth::None,
    }
}

fn client(ca_file: &Path) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca_file).expect("CA file") {
        roots.add(certificate.expect("CA certificate")).expect("usable CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn serves_http2_over_tls_despite_failed_handshakes_and_shuts_down_gracefully() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let pki = Pki::new();
    let tls = server_config(&settings(&pki)).expect("server configuration");
    let archive = Archive::open(ArchiveConfig::new(dir.path().join("data"))).expect("opening the archive");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = WebState::new(Arc::clone(&archive), WebConfig::default().with_anonymous_role(haneul_core::Role::Admin));
    let server = tokio::spawn(serve_tls(listener, tls, state, axum::Router::new(), async move {
        let _ = stopped.await;
    }));

    // One client never says hello; another speaks plain HTTP and is dropped.
    let _silent = tokio::net::TcpStream::connect(address).await.expect("connecting");
    let mut plain = tokio::net::TcpStream::connect(address).await.expect("connecting");
    plain.write_all(b"GET /api/status HTTP/1.1\r\nHost: localhost\r\n\r\n").await.expect("writing");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer)).await;
    assert!(!String::from_utf8_lossy(&answer).contains("HTTP/1.1"), "plain HTTP was answered");

    let stream = tokio::net::TcpStream::connect(address).await.expect("connecting");
    let name = ServerName::try_from("localhost").expect("server name");
    let stream = client(&pki.path("ca.pem")).connect(name, stream).await.expect("TLS handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.expect("h2 handshake");
    let connection = tokio::spawn(connection);
    let request = Request::get("/api/status").header("host", "localhost").body(Empty::<Bytes>::new()).expect("request");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers().get("strict-transport-security").and_then(|v| v.to_str().ok()), Some(HSTS));
    response.into_body().collect().await.expect("body");

    // Shutdown: the open HTTP/2 connection is told to go away, the handshake
    // of the silent client is abandoned, the server ends at once.
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(3), server).await.expect("serve_tls ends").expect("no panic");
    tokio::time::timeout(Duration::from_secs(10), connection).await.expect("the connection closes").ok();
}

#[test]
fn bad_files_are_named_with_their_setting() {
    let pki = Pki::new();
    let settings = settings(&pki);
    let error = |settings: &TlsSettings| server_config(settings).expect_err("must fail").to_string();
    let missing = PathBuf::from("/nonexistent/server.pem");

    let message = error(&TlsSettings { cert_file: missing.clone(), ..settings.clone() });
    assert!(message.starts_with("cert_file: /nonexistent/server.pem: cannot read"), "{message}");

    let message = error(&TlsSettings { cert_file: pki.path("server.ext"), ..settings.clone() });
    assert!(message.starts_with("cert_file: ") && message.contains("no PEM certificate"), "{message}");

    let message = error(&TlsSettings { key_file: pki.path("server.pem"), ..settings.clone() });
    assert!(message.starts_with("key_file: "), "{message}");

    let message = error(&TlsSettings { key_file: pki.path("ca.key"), ..settings.clone() });
    assert!(message.starts_with("key_file: ") && message.contains("does not go with cert_file"), "{message}");

    let message = error(&TlsSettings { client_auth: ClientAuth::Required, ..settings.clone() });
    assert!(message.starts_with("client_ca_file: "), "{message}");

    let with_ca =
        TlsSettings { client_auth: ClientAuth::Optional, client_ca_file: Some(pki.path("ca.pem")), ..settings.clone() };
    server_config(&with_ca).expect("optional client certificates with a CA");
    let config = server_config(&settings).expect("valid files");
    assert_eq!(config.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
}
