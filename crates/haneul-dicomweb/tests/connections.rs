//! Connection handling over a real socket: HTTP/1.1 keep-alive and HTTP/2
//! (cleartext, prior knowledge), as viewers and DICOMweb clients use them.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{Request, StatusCode, Version};
use haneul_core::{Archive, ArchiveConfig};
use haneul_dicomweb::{serve, WebConfig, WebState};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};

struct Running {
    _dir: tempfile::TempDir,
    address: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start() -> Running {
    let dir = tempfile::tempdir().expect("temporary directory");
    let archive = Archive::open(ArchiveConfig::new(dir.path().join("data"))).expect("opening the archive");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = WebState::new(Arc::clone(&archive), WebConfig::default().with_anonymous_role(haneul_core::Role::Admin));
    tokio::spawn(serve(listener, state, async move {
        let _ = stopped.await;
    }));
    Running { _dir: dir, address, stop: Some(stop) }
}

fn status_request() -> Request<Empty<Bytes>> {
    Request::get("/api/status").header("host", "localhost").body(Empty::new()).expect("request")
}

#[tokio::test]
async fn http2_with_prior_knowledge_serves_several_requests_on_one_connection() {
    let server = start().await;
    let stream = tokio::net::TcpStream::connect(server.address).await.expect("connecting");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.expect("h2 handshake");
    tokio::spawn(connection);
    for _ in 0..3 {
        let response = sender.send_request(status_request()).await.expect("HTTP/2 response");
        assert_eq!(response.version(), Version::HTTP_2);
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.expect("body").to_bytes();
        let status: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(status["status"], "ok");
    }
}

#[tokio::test]
async fn http1_connections_are_kept_alive() {
    let server = start().await;
    let stream = tokio::net::TcpStream::connect(server.address).await.expect("connecting");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    let connection = tokio::spawn(connection);
    for _ in 0..3 {
        sender.ready().await.expect("the connection stays open for the next request");
        let response = sender.send_request(status_request()).await.expect("HTTP/1.1 response");
        assert_eq!(response.status(), StatusCode::OK);
        assert_ne!(response.headers().get("connection").and_then(|v| v.to_str().ok()), Some("close"));
        response.into_body().collect().await.expect("body");
    }
    assert!(!connection.is_finished(), "the server closed a keep-alive connection");
}
