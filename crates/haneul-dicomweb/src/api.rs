//! The REST API: status, statistics, known AEs, removal, the audit trail, metrics.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use haneul_dicom::levels::Level;

use crate::error::{check_uid, ApiError, ApiResult};
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
        "replication": state.archive().replication().snapshot(),
        "backup": match state.archive().backup_status().await {
            Ok(backups) => backups.to_json(unix_now()),
            Err(error) => serde_json::json!({ "targets": [], "error": error }),
        },
    }))
    .into_response())
}

fn unix_now() -> i64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX)
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
            "timed_out": metrics.associations_timed_out.get(),
        },
    }))
    .into_response())
}

pub async fn aes(State(state): State<WebState>) -> Response {
    Json(serde_json::json!({
        "ae_title": state.config().ae_title,
        "dicom_port": state.config().dicom_port,
        "known": *state.config().known_aes.entries(),
    }))
    .into_response()
}

/// A shared AE as `PUT /api/aes/{title}` takes it.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedAeBody {
    host: String,
    port: u16,
    role: String,
    #[serde(default)]
    site: String,
    #[serde(default)]
    description: String,
}

/// Add or change an AE known to every node of the catalog; this node knows
/// it at once, the others at their next refresh (seconds).
pub async fn put_shared_ae(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    Path(title): Path<String>,
    Json(body): Json<SharedAeBody>,
) -> ApiResult<Response> {
    let role =
        body.role.parse::<haneul_core::Role>().map_err(|error| ApiError::BadRequest(format!("role: {error}")))?;
    let ae = haneul_core::aes::KnownAe { title, host: body.host, port: body.port, role, site: body.site };
    let audit = ctx
        .audit_entry(haneul_core::audit::Action::ConfigChange)
        .detail("change", "shared-ae")
        .detail("ae_title", ae.title.as_str())
        .detail("address", ae.address());
    let (shared, directory, actor, entry) =
        (state.archive().shared_aes(), state.config().known_aes.clone(), ctx.origin.actor.clone(), ae.clone());
    let outcome = tokio::task::spawn_blocking(move || {
        let created = shared.put(&entry, &body.description, &actor)?;
        directory.refresh(&shared)?;
        Ok::<_, haneul_core::ArchiveError>(created)
    })
    .await
    .map_err(|error| ApiError::Internal(error.to_string()))?;
    state.archive().audit(match &outcome {
        Ok(created) => audit.detail("created", *created),
        Err(error) => audit.failed(error),
    });
    let created = outcome?;
    tracing::info!(ae_title = %ae.title, address = %ae.address(), created, "shared AE saved");
    let status = if created { axum::http::StatusCode::CREATED } else { axum::http::StatusCode::OK };
    Ok((status, Json(ae)).into_response())
}

/// Remove an AE known to every node of the catalog.
pub async fn delete_shared_ae(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    Path(title): Path<String>,
) -> ApiResult<Response> {
    let audit = ctx
        .audit_entry(haneul_core::audit::Action::ConfigChange)
        .detail("change", "shared-ae-removed")
        .detail("ae_title", title.as_str());
    let (shared, directory, removing) = (state.archive().shared_aes(), state.config().known_aes.clone(), title.clone());
    let outcome = tokio::task::spawn_blocking(move || {
        let removed = shared.remove(&removing)?;
        directory.refresh(&shared)?;
        Ok::<_, haneul_core::ArchiveError>(removed)
    })
    .await
    .map_err(|error| ApiError::Internal(error.to_string()))?;
    state.archive().audit(match &outcome {
        Ok(true) => audit,
        Ok(false) => audit.failed("no such shared AE"),
        Err(error) => audit.failed(error),
    });
    if !outcome? {
        return Err(ApiError::NotFound(format!(
            "no shared AE {title:?} (AEs of the configuration file are changed there)"
        )));
    }
    tracing::info!(ae_title = %title, "shared AE removed");
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}

/// Options of a removal.
#[derive(Debug, Default, serde::Deserialize)]
pub struct RemoveParams {
    /// Set by a replication peer passing on a removal made there (its AE
    /// title): the journal notes it, so the removal is not sent back to it.
    replicated_from: Option<String>,
}

async fn remove(
    state: WebState,
    ctx: RequestContext,
    level: Level,
    uid: String,
    params: RemoveParams,
) -> ApiResult<Response> {
    check_uid(&uid)?;
    let replicated_from = params.replicated_from.filter(|ae| !ae.is_empty());
    if replicated_from.as_ref().is_some_and(|ae| ae.len() > 16) {
        return Err(ApiError::BadRequest("replicated_from: an AE title has at most 16 characters".into()));
    }
    let removed = state.archive().remove(level, &uid, &ctx.origin, replicated_from.as_deref()).await;
    let audit =
        ctx.audit_entry(haneul_core::audit::Action::Delete).detail("level", level.as_str()).detail("uid", uid.as_str());
    let audit = match &removed {
        Ok(0) => audit.failed("nothing stored"),
        Ok(count) => audit.detail("instances", *count),
        Err(error) => audit.failed(error),
    };
    match level {
        Level::Study => state.archive().audit_instances(audit.study(&uid), &[]),
        _ => state.archive().audit(audit),
    }
    let removed = removed?;
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
    axum::extract::Query(params): axum::extract::Query<RemoveParams>,
) -> ApiResult<Response> {
    remove(state, ctx, Level::Study, uid, params).await
}

pub async fn delete_series(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    Path(uid): Path<String>,
    axum::extract::Query(params): axum::extract::Query<RemoveParams>,
) -> ApiResult<Response> {
    remove(state, ctx, Level::Series, uid, params).await
}

pub async fn delete_instance(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    Path(uid): Path<String>,
    axum::extract::Query(params): axum::extract::Query<RemoveParams>,
) -> ApiResult<Response> {
    remove(state, ctx, Level::Image, uid, params).await
}

/// Conflicts span sites (the two versions came from two of them), so
/// reviewing them is for principals who see every site.
fn require_every_site(ctx: &RequestContext) -> ApiResult<()> {
    if ctx.origin.scope.is_empty() {
        return Ok(());
    }
    Err(ApiError::Forbidden("reviewing replication conflicts needs access to every site".into()))
}

/// The conflicting versions kept for review: an instance that two sites
/// stored with different bytes under one SOP Instance UID.
pub async fn conflicts(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
) -> ApiResult<Response> {
    require_every_site(&ctx)?;
    let conflicts = state.archive().conflicts(None).await;
    let entry = ctx.audit_entry(haneul_core::audit::Action::Query).detail("resource", "replication conflicts");
    let entry = match &conflicts {
        Ok(found) => entry.studies(found.iter().map(|c| c.study_uid.as_str())).detail("matches", found.len()),
        Err(error) => entry.failed(error),
    };
    state.archive().audit_instances(entry, &[]);
    let listed: Vec<serde_json::Value> = conflicts?
        .iter()
        .map(|conflict| {
            serde_json::json!({
                "id": conflict.pk,
                "sop_instance_uid": conflict.sop_uid,
                "study_instance_uid": conflict.study_uid,
                "series_instance_uid": conflict.series_uid,
                "transfer_syntax_uid": conflict.transfer_syntax,
                "size": conflict.blob.size,
                "digest": conflict.digest,
                "current_digest": conflict.current_digest,
                "source_ae": conflict.source_ae,
                "detected_ms": conflict.detected_ms,
            })
        })
        .collect();
    Ok(Json(listed).into_response())
}

/// The exact bytes of one conflicting version (Part 10), to compare with
/// the current one (WADO-RS).
pub async fn conflict_file(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    require_every_site(&ctx)?;
    let id: i64 = id.parse().map_err(|_| ApiError::BadRequest(format!("{id:?} is not a conflict id")))?;
    let conflicts = state.archive().conflicts(None).await?;
    let Some(conflict) = conflicts.into_iter().find(|conflict| conflict.pk == id) else {
        return Err(ApiError::NotFound(format!("no conflicting version {id}")));
    };
    let file = state.archive().open_conflict(&conflict).await;
    let entry = ctx
        .audit_entry(haneul_core::audit::Action::Retrieve)
        .study(&conflict.study_uid)
        .detail("sop_instance_uid", conflict.sop_uid.as_str())
        .detail("conflict_version", conflict.digest.as_str());
    let entry = match &file {
        Ok(_) => entry,
        Err(error) => entry.failed(error),
    };
    state.archive().audit_instances(entry, &[]);
    let file = tokio::fs::File::from_std(file?);
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok(([(header::CONTENT_TYPE, "application/dicom")], body).into_response())
}

pub async fn metrics(State(state): State<WebState>) -> Response {
    let mut text = state.archive().render_metrics();
    let backups = state.archive().backup_status().await;
    if let Ok(backups) = &backups {
        backups.render_prometheus(&mut text);
    }
    let name = "haneul_backup_status_readable";
    text.push_str(&format!(
        "# HELP {name} 0 when the node's backup status file cannot be read\n# TYPE {name} gauge\n{name} {}\n",
        u8::from(backups.is_ok())
    ));
    if let Ok(migrations) = state.archive().migrations() {
        match migrations.status(None).await {
            Ok(statuses) => haneul_core::migration::render_prometheus(&statuses, &mut text),
            Err(error) => tracing::warn!(%error, "migration figures left out of the metrics"),
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// The OpenAPI document of the whole HTTP surface (checked against [`crate::routes`] by tests).
pub const OPENAPI: &str = include_str!("../openapi.json");

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

#[derive(Debug, serde::Deserialize)]
pub struct AuditParams {
    patient: Option<String>,
    study: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
}

/// Search the audit trail (newest first); the search is itself recorded.
pub async fn audit(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    axum::extract::Query(params): axum::extract::Query<AuditParams>,
) -> ApiResult<Response> {
    use haneul_core::audit::{self, Action, Filter};
    let bound = |text: &Option<String>, end| {
        text.as_deref()
            .filter(|t| !t.is_empty())
            .map(|t| audit::parse_bound(t, end))
            .transpose()
            .map_err(ApiError::BadRequest)
    };
    let action = match params.action.as_deref().filter(|a| !a.is_empty()) {
        Some(name) => Some(
            serde_json::from_value::<Action>(serde_json::Value::String(name.to_string()))
                .map_err(|_| ApiError::BadRequest(format!("{name:?} is not an audit action")))?,
        ),
        None => None,
    };
    let nonempty = |text: Option<String>| text.filter(|t| !t.is_empty());
    let filter = Filter {
        patient: nonempty(params.patient),
        study: nonempty(params.study),
        actor: nonempty(params.actor),
        action,
        from: bound(&params.from, false)?,
        to: bound(&params.to, true)?,
    };
    let limit = params.limit.unwrap_or(100).clamp(1, 10_000);
    let Some(dir) = state.archive().auditor().dir().map(std::path::Path::to_path_buf) else {
        return Err(ApiError::NotFound("the audit trail is switched off".into()));
    };
    let mut entry = ctx.audit_entry(Action::Query).detail("resource", "audit trail");
    entry = entry.patients(filter.patient.iter()).studies(filter.study.iter());
    let search_filter = filter.clone();
    let found = tokio::task::spawn_blocking(move || audit::search(&dir, &search_filter, limit))
        .await
        .map_err(|error| ApiError::Internal(error.to_string()))?;
    state.archive().audit(entry.outcome_of(&found).detail("matches", found.as_ref().map_or(0, Vec::len)));
    let records = found.map_err(|error| ApiError::Internal(error.to_string()))?;
    Ok(Json(serde_json::json!({ "count": records.len(), "records": records })).into_response())
}
