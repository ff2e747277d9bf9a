//! Attribute corrections over REST: a PACS administrator corrects a study's
//! or its patient's attributes, anyone who may query reads the registers,
//! and replication peers pass on theirs (see `haneul_core::corrections`).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use haneul_core::audit::Action;
use haneul_core::corrections::AttributeChange;
use haneul_core::{CorrectionLevel, CorrectionRecord};

use crate::error::{check_uid, ApiError, ApiResult};
use crate::{RequestContext, WebState};

/// Most registers one request from a peer carries.
const MAX_REGISTERS: usize = 10_000;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrectionRequest {
    /// New values by keyword (`PatientName`) or tag (`00100010`); "" removes a value.
    attributes: serde_json::Map<String, serde_json::Value>,
    /// Why (kept with each register and in the audit trail).
    reason: String,
}

fn registers_json(registers: &[CorrectionRecord]) -> serde_json::Value {
    registers
        .iter()
        .map(|register| {
            serde_json::json!({
                "level": register.level,
                "key": register.key,
                "tag": format!("{:08X}", register.tag),
                "keyword": haneul_dicom::dict::keyword(register.attribute()),
                "vr": register.vr,
                "value": register.value,
                "hlc": register.hlc,
                "at_ms": register.at_ms(),
                "origin": register.origin,
                "reason": register.reason,
            })
        })
        .collect()
}

impl CorrectionRequest {
    /// The attributes to change, with a reason given.
    fn changes(&self) -> ApiResult<Vec<AttributeChange>> {
        if self.reason.trim().is_empty() {
            return Err(ApiError::BadRequest("reason: say why the values are corrected".into()));
        }
        let mut changes = Vec::with_capacity(self.attributes.len());
        for (name, value) in &self.attributes {
            let tag = haneul_dicom::dict::parse_tag(name)
                .ok_or_else(|| ApiError::BadRequest(format!("{name:?} is neither a keyword nor a tag")))?;
            let value = match value {
                serde_json::Value::String(text) => text.clone(),
                serde_json::Value::Null => String::new(),
                _ => return Err(ApiError::BadRequest(format!("{name}: the new value must be a string"))),
            };
            changes.push(AttributeChange { tag, value });
        }
        Ok(changes)
    }
}

/// `POST /api/studies/{study}/series/{series}/corrections`.
pub async fn correct_series(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    Path((study, series)): Path<(String, String)>,
    Json(request): Json<CorrectionRequest>,
) -> ApiResult<Response> {
    check_uid(&study)?;
    check_uid(&series)?;
    let changes = request.changes()?;
    let outcome = state.archive().correct_series(&study, &series, changes, request.reason.trim(), &ctx.origin).await;
    let audit = ctx.audit_entry(Action::Correct).study(&study).detail("series", series.as_str());
    let audit = match &outcome {
        Ok(Some(recorded)) => audit.detail("attributes", recorded.len()),
        Ok(None) => audit.failed("no such series"),
        Err(error) => audit.failed(error),
    };
    state.archive().audit_instances(audit.detail("reason", request.reason.trim()), &[]);
    let Some(recorded) = outcome? else {
        return Err(ApiError::NotFound(format!("no series {series} of study {study} is stored")));
    };
    tracing::info!(study_instance_uid = %study, series_instance_uid = %series, attributes = recorded.len(), "series corrected");
    Ok(Json(serde_json::json!({ "recorded": registers_json(&recorded) })).into_response())
}

/// `POST /api/studies/{study}/corrections`.
pub async fn correct_study(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    Path(study): Path<String>,
    Json(request): Json<CorrectionRequest>,
) -> ApiResult<Response> {
    check_uid(&study)?;
    let changes = request.changes()?;
    // The patient before: a move is attributed to both patients.
    let before = state.archive().study_corrections(&study).await.ok().and_then(|held| held.patient_identity);
    let outcome = state.archive().correct_study(&study, changes, request.reason.trim(), &ctx.origin).await;
    let audit = ctx.audit_entry(Action::Correct).study(&study).detail("reason", request.reason.trim());
    let audit = match &outcome {
        Ok(Some(recorded)) => {
            let value = |tag| recorded.iter().find(|register| register.attribute() == tag).map(|r| r.value.as_str());
            match value(haneul_dicom::tags::PATIENT_ID) {
                Some(moved_to) => {
                    let moved_from = before.as_deref().and_then(haneul_core::patient_id_of).unwrap_or_default();
                    audit
                        .patients([moved_from, moved_to].into_iter().filter(|id| !id.is_empty()))
                        .detail("moved_from_patient_id", moved_from)
                        .detail("moved_to_patient_id", moved_to)
                        .detail("moved_to_issuer", value(haneul_dicom::tags::ISSUER_OF_PATIENT_ID).unwrap_or_default())
                }
                None => audit,
            }
            .detail("attributes", recorded.len())
        }
        Ok(None) => audit.failed("no such study"),
        Err(error) => audit.failed(error),
    };
    state.archive().audit_instances(audit, &[]);
    let Some(recorded) = outcome? else {
        return Err(ApiError::NotFound(format!("no study {study} is stored")));
    };
    tracing::info!(study_instance_uid = %study, attributes = recorded.len(), "study corrected");
    Ok(Json(serde_json::json!({ "recorded": registers_json(&recorded) })).into_response())
}

/// A patient as a merge names it.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientKey {
    #[serde(rename = "PatientID")]
    patient_id: String,
    #[serde(rename = "IssuerOfPatientID", default)]
    issuer: String,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeRequest {
    /// The patient record that goes away (a temporary ID, a duplicate registration).
    from: PatientKey,
    /// The patient record that stays.
    into: PatientKey,
    reason: String,
}

/// `POST /api/patients/merge`: every study of one patient record moved to another.
pub async fn merge_patient(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    Json(request): Json<MergeRequest>,
) -> ApiResult<Response> {
    if request.reason.trim().is_empty() {
        return Err(ApiError::BadRequest("reason: say why the patients are merged".into()));
    }
    let from = (request.from.patient_id.trim(), request.from.issuer.trim());
    let into = (request.into.patient_id.trim(), request.into.issuer.trim());
    let outcome = state.archive().merge_patient(from, into, request.reason.trim(), &ctx.origin).await;
    let audit = ctx
        .audit_entry(Action::Correct)
        .patients([from.0, into.0])
        .detail("merged_patient_id", from.0)
        .detail("into_patient_id", into.0)
        .detail("reason", request.reason.trim());
    let audit = match &outcome {
        Ok(Some(merge)) => audit
            .studies(merge.moved.iter())
            .detail("studies_refused", merge.refused.len())
            .detail("studies_not_visible", merge.not_visible)
            .detail("linked", merge.linked),
        Ok(None) => audit.failed("no such patient"),
        Err(error) => audit.failed(error),
    };
    state.archive().audit(audit);
    let Some(merge) = outcome? else {
        return Err(ApiError::NotFound(format!("no study of patient {:?} is stored", from.0)));
    };
    tracing::info!(
        moved = merge.moved.len(),
        refused = merge.refused.len(),
        not_visible = merge.not_visible,
        linked = merge.linked,
        "patient merged"
    );
    let refused: Vec<serde_json::Value> =
        merge.refused.iter().map(|(study, error)| serde_json::json!({ "study": study, "error": error })).collect();
    Ok(Json(serde_json::json!({ "moved": merge.moved, "refused": refused, "linked": merge.linked })).into_response())
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnmergeRequest {
    /// The merged patient record whose link ends.
    patient: PatientKey,
    reason: String,
}

/// `POST /api/patients/unmerge`: studies arriving for a merged patient record are filed under it again.
pub async fn unmerge_patient(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    Json(request): Json<UnmergeRequest>,
) -> ApiResult<Response> {
    if request.reason.trim().is_empty() {
        return Err(ApiError::BadRequest("reason: say why the merge is undone".into()));
    }
    let patient = (request.patient.patient_id.trim(), request.patient.issuer.trim());
    let outcome = state.archive().unmerge_patient(patient, request.reason.trim(), &ctx.origin).await;
    let audit = ctx
        .audit_entry(Action::Correct)
        .patients([patient.0])
        .detail("unmerged_patient_id", patient.0)
        .detail("reason", request.reason.trim());
    let audit = match &outcome {
        Ok(Some(())) => audit,
        Ok(None) => audit.failed("not merged"),
        Err(error) => audit.failed(error),
    };
    state.archive().audit(audit);
    if outcome?.is_none() {
        return Err(ApiError::NotFound(format!("patient record {:?} is not merged into another", patient.0)));
    }
    tracing::info!("patient merge undone");
    Ok(Json(serde_json::json!({ "unmerged": true })).into_response())
}

/// `GET /api/studies/{study}/corrections`: the registers of the study and of its patient.
pub async fn study_corrections(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    Path(study): Path<String>,
) -> ApiResult<Response> {
    let held = state.archive().study_corrections(&study).await;
    let audit = ctx.audit_entry(Action::Query).study(&study).detail("resource", "corrections");
    state.archive().audit_instances(
        match &held {
            Ok(_) => audit,
            Err(error) => audit.failed(error),
        },
        &[],
    );
    let held = held?;
    Ok(Json(serde_json::json!({
        "patient_identity": held.patient_identity,
        "registers": registers_json(&held.registers),
    }))
    .into_response())
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerCorrections {
    /// The AE title of the peer passing them on: they are not sent back there.
    replicated_from: String,
    registers: Vec<CorrectionRecord>,
}

/// `POST /api/corrections`: registers a replication peer passes on; each
/// replaces the one held only if its clock is later.
pub async fn merge(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    Json(request): Json<PeerCorrections>,
) -> ApiResult<Response> {
    let peer = request.replicated_from.trim();
    if peer.is_empty() || peer.len() > 16 {
        return Err(ApiError::BadRequest("replicated_from: the AE title of the peer".into()));
    }
    if request.registers.len() > MAX_REGISTERS {
        return Err(ApiError::BadRequest(format!("at most {MAX_REGISTERS} registers at once")));
    }
    let keys_of = |level| -> Vec<String> {
        request
            .registers
            .iter()
            .filter(|register| register.level == level)
            .map(|register| register.key.clone())
            .collect()
    };
    let (studies, series) = (keys_of(CorrectionLevel::Study), keys_of(CorrectionLevel::Series));
    let patients: Vec<String> = keys_of(CorrectionLevel::Patient)
        .iter()
        .filter_map(|identity| haneul_core::patient_id_of(identity).map(str::to_string))
        .collect();
    let outcome = state.archive().merge_corrections(request.registers, peer, &ctx.origin).await;
    let audit = ctx.audit_entry(Action::Correct).detail("replicated_from", peer);
    let audit = match &outcome {
        Ok(recorded) => {
            audit.studies(&studies).patients(&patients).detail("series", series).detail("attributes", recorded.len())
        }
        Err(error) => audit.failed(error),
    };
    state.archive().audit(audit);
    let recorded = outcome?;
    Ok(Json(serde_json::json!({ "recorded": recorded.len() })).into_response())
}
