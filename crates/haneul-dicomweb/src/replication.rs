//! The anti-entropy API between replication peers: the digest tree of what
//! this node holds (root and buckets, a bucket's studies, a study's
//! instances), the stored bytes of one version, and starting a verify of a
//! configured peer (what `haneul replication verify` asks the server for).
//! The digests come from the core; the verify from the replication layer,
//! through the core's [`haneul_core::replication::PeerVerifier`].

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use haneul_core::digest_tree::Hex;
use haneul_core::replication::VerifyError;

use crate::error::{check_uid, ApiError, ApiResult};
use crate::{RequestContext, WebState};

/// `GET /api/replication/tree`: the root, the 256 bucket digests and counts.
pub async fn tree(State(state): State<WebState>) -> ApiResult<Response> {
    let (tree, _) = state.archive().digest_tree(Vec::new()).await?;
    Ok(Json(tree).into_response())
}

/// `GET /api/replication/tree/{bucket}`: the studies of a bucket (0 to 255) and their digests.
pub async fn bucket(State(state): State<WebState>, Path(bucket): Path<String>) -> ApiResult<Response> {
    let index: u8 =
        bucket.parse().map_err(|_| ApiError::BadRequest(format!("{bucket:?} is not a bucket number (0 to 255)")))?;
    let (_, listings) = state.archive().digest_tree(vec![index]).await?;
    let listing = listings.into_iter().next().ok_or_else(|| ApiError::Internal("bucket listing missing".into()))?;
    Ok(Json(listing).into_response())
}

/// `GET /api/replication/studies/{study}/digests`: each instance's version digests.
pub async fn study_digests(State(state): State<WebState>, Path(study): Path<String>) -> ApiResult<Response> {
    check_uid(&study)?;
    match state.archive().study_versions(&study).await? {
        Some(versions) => Ok(Json(versions).into_response()),
        None => Err(ApiError::NotFound(format!("no study {study} is stored"))),
    }
}

/// `GET /api/replication/corrections`: every correction register held, in
/// the form `POST /api/corrections` takes; what a peer fetches when the
/// registers digest of its tree differs from ours.
pub async fn corrections(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
) -> ApiResult<Response> {
    use haneul_core::audit::Action;
    use haneul_core::{patient_id_of, CorrectionLevel};
    let held = state.archive().correction_registers().await;
    let audit = ctx.audit_entry(Action::Query).detail("resource", "correction registers");
    let audit = match &held {
        Ok(registers) => {
            let of_level = |level| registers.iter().filter(move |register| register.level == level);
            let patients = of_level(CorrectionLevel::Patient).filter_map(|register| patient_id_of(&register.key));
            let series: Vec<&str> = of_level(CorrectionLevel::Series).map(|register| register.key.as_str()).collect();
            audit
                .studies(of_level(CorrectionLevel::Study).map(|register| register.key.as_str()))
                .patients(patients)
                .detail("series", series)
        }
        Err(error) => audit.failed(error),
    };
    state.archive().audit(audit);
    Ok(Json(serde_json::json!({ "registers": held? })).into_response())
}

/// `GET /api/replication/instances/{sop}/versions/{digest}`: the stored file
/// of the version whose data set has this digest, byte for byte.
pub async fn version(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    Path((sop, digest)): Path<(String, String)>,
) -> ApiResult<Response> {
    use haneul_core::audit::Action;
    check_uid(&sop)?;
    let digest = Hex::parse(&digest)
        .ok_or_else(|| ApiError::BadRequest(format!("{digest:?} is not a digest (64 hex digits)")))?;
    let archive = state.archive();
    let Some(held) = archive.held_version(&sop, digest.0).await? else {
        return Err(ApiError::NotFound(format!("no version {digest} of instance {sop} is stored")));
    };
    let file = archive.open_version(&held).await?;
    let audit = ctx
        .audit_entry(Action::Retrieve)
        .detail("resource", "replication version")
        .detail("sop_instance_uid", sop.as_str())
        .study(&held.study_uid);
    archive.audit_instances(audit, &[]);
    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
    Ok((
        [(header::CONTENT_TYPE, "application/dicom".to_string()), (header::CONTENT_LENGTH, held.blob.size.to_string())],
        Body::from_stream(stream),
    )
        .into_response())
}

#[derive(Debug, serde::Deserialize)]
pub struct VerifyParams {
    repair: Option<String>,
}

/// `POST /api/replication/peers/{name}/verify?repair=true|false`: compare
/// with a configured peer (and repair, by default); answers the report.
pub async fn verify(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    Path(name): Path<String>,
    Query(params): Query<VerifyParams>,
) -> ApiResult<Response> {
    use haneul_core::audit::Action;
    let repair = match params.repair.as_deref() {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => return Err(ApiError::BadRequest(format!("repair={other:?}: use true or false"))),
    };
    let result = state.archive().replication().verify(&name, repair).await;
    // Repair sends instances to the peer and takes others from it.
    let mut audit = ctx
        .audit_entry(Action::Export)
        .detail("resource", "replication verify")
        .detail("peer", name.as_str())
        .detail("repair", repair);
    if let Ok(report) = &result {
        audit = audit.detail("pushed", report.pushed).detail("pulled", report.pulled).detail("equal", report.equal);
    }
    state.archive().audit(audit.outcome_of(&result));
    match result {
        Ok(report) => Ok(Json(report).into_response()),
        Err(error @ VerifyError::UnknownPeer(_)) => Err(ApiError::NotFound(error.to_string())),
        Err(error @ VerifyError::NotConfigured { .. }) => Err(ApiError::Conflict(error.to_string())),
        Err(error @ VerifyError::Failed { .. }) => Err(ApiError::BadGateway(error.to_string())),
    }
}
