//! The migration API: start, verify and pause a migration from a legacy
//! archive, follow its progress, fetch its report (what `haneul migrate`
//! asks for). The work is `haneul-migrate`'s, reached through the core's
//! [`haneul_core::migration::MigrationControl`].

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use haneul_core::audit::Action;
use haneul_core::migration::{MigrationError, StartOptions};

use crate::error::{ApiError, ApiResult};
use crate::{RequestContext, WebState};

fn api_error(error: MigrationError) -> ApiError {
    match error {
        MigrationError::UnknownSource(_) => ApiError::NotFound(error.to_string()),
        MigrationError::Invalid(_) => ApiError::BadRequest(error.to_string()),
        MigrationError::NotConfigured => ApiError::Conflict(error.to_string()),
        MigrationError::Archive(error) => error.into(),
    }
}

/// `GET /api/migrations`: every configured source's progress.
pub async fn list(State(state): State<WebState>) -> ApiResult<Response> {
    let control = state.archive().migrations().map_err(api_error)?;
    let statuses = control.status(None).await.map_err(api_error)?;
    Ok(Json(statuses).into_response())
}

/// `GET /api/migrations/{source}`: one source's progress.
pub async fn status(State(state): State<WebState>, Path(source): Path<String>) -> ApiResult<Response> {
    let control = state.archive().migrations().map_err(api_error)?;
    let mut statuses = control.status(Some(&source)).await.map_err(api_error)?;
    let status = statuses.pop().ok_or_else(|| ApiError::NotFound(format!("no migration source {source:?}")))?;
    Ok(Json(status).into_response())
}

/// `POST /api/migrations/{source}/{start|verify|pause}`.
pub async fn act(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    Path((source, action)): Path<(String, String)>,
    Query(options): Query<StartOptions>,
) -> ApiResult<Response> {
    let control = state.archive().migrations().map_err(api_error)?;
    let result = match action.as_str() {
        "start" => control.start(&source, options.clone()).await,
        "verify" => control.verify(&source).await,
        "pause" => control.pause(&source).await,
        other => return Err(ApiError::NotFound(format!("{other:?} is not start, verify or pause"))),
    };
    // A migration brings patient data in from another archive: who started it is on record.
    let mut audit = ctx
        .audit_entry(Action::ConfigChange)
        .detail("resource", "migration")
        .detail("source", source.as_str())
        .detail("action", action.as_str());
    if let Some(since) = &options.since {
        audit = audit.detail("since", since.as_str());
    }
    if let Some(until) = &options.until {
        audit = audit.detail("until", until.as_str());
    }
    state.archive().audit(audit.outcome_of(&result));
    Ok(Json(result.map_err(api_error)?).into_response())
}

/// `GET /api/migrations/{source}/report`: every study and every discrepancy.
pub async fn report(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    Path(source): Path<String>,
) -> ApiResult<Response> {
    let control = state.archive().migrations().map_err(api_error)?;
    let result = control.report(&source).await;
    // The report names patients.
    let audit = ctx.audit_entry(Action::Query).detail("resource", "migration report").detail("source", source.as_str());
    state.archive().audit(audit.outcome_of(&result));
    Ok(Json(result.map_err(api_error)?).into_response())
}
