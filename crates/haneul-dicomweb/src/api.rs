//! The REST API: status, statistics, known AEs, removal, metrics.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use haneul_dicom::levels::Level;

use crate::error::{ApiError, ApiResult};
use crate::{RequestContext, WebState};

pub async fn status(State(state): State<WebState>) -> ApiResult<Response> {
    let statistics = state.archive().statistics().await?;
    Ok(Json(serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.uptime().as_secs(),
        "ae_title": state.config().ae_title,
        "dicom_port": state.config().dicom_port,
        "statistics": statistics,
    }))
    .into_response())
}

pub async fn statistics(State(state): State<WebState>) -> ApiResult<Response> {
    let archive = state.archive();
    let statistics = archive.statistics().await?;
    let disk = archive.disk_usage().await?;
    let metrics = archive.metrics();
    let uptime = state.uptime().as_secs_f64().max(1.0);
    let stored_since_start = metrics.instances_stored.get();
    Ok(Json(serde_json::json!({
        "patients": statistics.patients,
        "studies": statistics.studies,
        "series": statistics.series,
        "instances": statistics.instances,
        "disk": disk,
        "ingest": {
            "instances_since_start": stored_since_start,
            "bytes_since_start": metrics.bytes_stored.get(),
            "instances_per_second_since_start": stored_since_start as f64 / uptime,
            "recent_instances_per_second": state.recent_ingest_rate(),
            "duplicates": metrics.duplicates.get(),
            "rejected": metrics.ingest_rejected.get(),
        },
        "associations": {
            "active": metrics.active_associations.get(),
            "total": metrics.associations.get(),
            "rejected": metrics.associations_rejected.get(),
        },
    }))
    .into_response())
}

pub async fn aes(State(state): State<WebState>) -> Response {
    Json(serde_json::json!({
        "ae_title": state.config().ae_title,
        "dicom_port": state.config().dicom_port,
        "known": state.config().known_aes,
    }))
    .into_response()
}

async fn remove(state: WebState, ctx: RequestContext, level: Level, uid: String) -> ApiResult<Response> {
    if uid.is_empty() || uid.len() > 64 {
        return Err(ApiError::BadRequest(format!("{uid:?} is not a UID")));
    }
    let removed = state.archive().remove(level, &uid, &ctx.origin).await?;
    if removed == 0 {
        return Err(ApiError::NotFound(format!("no {} {uid} is stored", level.as_str().to_lowercase())));
    }
    tracing::info!(level = level.as_str(), %uid, removed, "removed");
    Ok(Json(serde_json::json!({ "removed_instances": removed })).into_response())
}

pub async fn delete_study(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    Path(uid): Path<String>,
) -> ApiResult<Response> {
    remove(state, ctx, Level::Study, uid).await
}

pub async fn delete_series(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    Path(uid): Path<String>,
) -> ApiResult<Response> {
    remove(state, ctx, Level::Series, uid).await
}

pub async fn delete_instance(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    Path(uid): Path<String>,
) -> ApiResult<Response> {
    remove(state, ctx, Level::Image, uid).await
}

pub async fn metrics(State(state): State<WebState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.archive().metrics().render_prometheus())
        .into_response()
}

/// The OpenAPI document of the whole HTTP surface (checked against [`crate::routes`] by tests).
pub const OPENAPI: &str = include_str!("../openapi.json");

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
