//! The HTTP endpoint: Prometheus metrics and a JSON status document.

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use haneul_core::Archive;

pub fn router(archive: Arc<Archive>) -> Router {
    Router::new().route("/metrics", get(metrics)).route("/api/status", get(status)).with_state(archive)
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    archive: Arc<Archive>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    if let Err(error) = axum::serve(listener, router(archive)).with_graceful_shutdown(shutdown).await {
        tracing::error!(%error, "HTTP server stopped");
    }
}

async fn metrics(State(archive): State<Arc<Archive>>) -> Response {
    let body = archive.metrics().render_prometheus();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn status(State(archive): State<Arc<Archive>>) -> Response {
    match archive.statistics().await {
        Ok(statistics) => Json(serde_json::json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "statistics": statistics,
        }))
        .into_response(),
        Err(error) => {
            tracing::error!(%error, "status query failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({ "status": "error", "error": error.to_string() })),
            )
                .into_response()
        }
    }
}
