//! The in-process harness of the HTTP edge tests: the real router over a
//! real archive in a temporary directory, and its answers.

#![allow(dead_code)]

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use haneul_core::{Archive, ArchiveConfig};
use haneul_dicomweb::{router, WebConfig, WebState};
use tower::ServiceExt;

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub archive: Arc<Archive>,
    router: Router,
}

impl Harness {
    pub fn with_config(config: WebConfig) -> Harness {
        let dir = tempfile::tempdir().expect("temporary directory");
        let archive = Archive::open(ArchiveConfig::new(dir.path().join("data"))).expect("opening the archive");
        let router = router(WebState::new(Arc::clone(&archive), config));
        Harness { dir, archive, router }
    }

    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.expect("the router answers");
        let status = response.status();
        let headers = response.headers().clone();
        let body = to_bytes(response.into_body(), usize::MAX).await.expect("reading the body").to_vec();
        Reply { status, headers, body }
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: impl header::AsHeaderName) -> &str {
        self.headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or("")
    }
}
