//! QIDO-RS: searches, answered from the catalog by the same matcher as C-FIND.

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use haneul_dicom::json::write_object;
use haneul_dicom::levels::{computed, Level};
use haneul_dicom::{qido, tags, BulkRef, Dataset, Element, Tag, VR};

use haneul_core::audit::Action;

use crate::error::{ApiError, ApiResult};
use crate::media::require_json;
use crate::{RequestContext, WebState};

pub const DICOM_JSON: &str = "application/dicom+json";

/// PS3.18's warning for an answer the server's maximum cut short.
const RESULTS_CUT_WARNING: &str = "299 haneul \"The number of results exceeded the maximum supported by the server. \
     Additional results can be requested.\"";

/// Decode a query string into name/value pairs (percent-encoded UTF-8).
pub fn query_pairs(raw: &Option<String>) -> Vec<(String, String)> {
    raw.as_deref()
        .map(|raw| {
            raw.split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (percent_decode(name), percent_decode(value))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => out.push(b' '),
            b'%' => {
                let digits = bytes.get(index + 1..index + 3).filter(|pair| pair.iter().all(u8::is_ascii_hexdigit));
                match digits
                    .and_then(|pair| std::str::from_utf8(pair).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                {
                    Some(byte) => {
                        out.push(byte);
                        index += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn search(
    state: &WebState,
    ctx: &RequestContext,
    headers: &HeaderMap,
    level: Level,
    scope: &[(Tag, &str)],
    raw: &Option<String>,
) -> ApiResult<Response> {
    require_json(headers)?;
    let params = query_pairs(raw);
    let request = qido::parse(level, scope, &params).map_err(|error| ApiError::BadRequest(error.to_string()))?;
    // One more than the server's maximum is fetched to tell whether it cut the answer.
    let max_results = state.config().qido_max_results.max(1);
    let (server_limits, fetch) = match request.limit {
        Some(asked) if asked <= max_results => (false, asked),
        _ => (true, max_results + 1),
    };
    let mut matches = state.archive().search(request.query.clone(), request.offset, Some(fetch), &ctx.origin).await;
    let cut = server_limits && matches.as_ref().is_ok_and(|views| views.len() > max_results);
    if let (true, Ok(views)) = (cut, matches.as_mut()) {
        views.truncate(max_results);
    }
    let mut audit = ctx.audit_entry(Action::Query).detail("query", haneul_core::query_keys(&request.query));
    for view in matches.iter().flatten() {
        haneul_core::audit_add_view(&mut audit, view);
    }
    let count = matches.as_ref().map_or(0, Vec::len);
    state.archive().audit(audit.detail("matches", count).detail("cut", cut).outcome_of(&matches));
    let matches = matches?;
    let service = ctx.service_url(state);
    let responses: Vec<Dataset> = matches
        .iter()
        .map(|view| {
            let mut response = if request.include_all { view.clone() } else { request.query.response(view) };
            response.remove(tags::QUERY_RETRIEVE_LEVEL);
            response.remove(tags::SPECIFIC_CHARACTER_SET);
            if response.contains(computed::INSTANCE_AVAILABILITY) {
                response.put(Element::text(computed::INSTANCE_AVAILABILITY, VR::CS, "ONLINE"));
            }
            if let Some(url) = retrieve_url(&service, level, view) {
                response.put(Element::text(tags::RETRIEVE_URL, VR::UR, url));
            }
            response
        })
        .collect();
    let mut body = String::with_capacity(responses.len() * 1024 + 2);
    body.push('[');
    for (index, response) in responses.iter().enumerate() {
        if index > 0 {
            body.push(',');
        }
        // Bulk data appears only with includefield=all at instance level,
        // where each response is one instance and names its own URIs.
        let bulk = |path: &str, _: &BulkRef| bulk_uri(&service, response, path);
        write_object(&mut body, response, &bulk);
    }
    body.push(']');
    let mut response = ([(header::CONTENT_TYPE, DICOM_JSON)], body).into_response();
    if cut {
        response.headers_mut().insert(header::WARNING, HeaderValue::from_static(RESULTS_CUT_WARNING));
    }
    Ok(response)
}

/// The BulkDataURI of an element of an instance.
pub fn bulk_uri(service: &str, instance: &Dataset, path: &str) -> String {
    let uid = |tag| instance.string(tag).unwrap_or_default();
    format!(
        "{service}/studies/{}/series/{}/instances/{}/bulkdata/{path}",
        uid(tags::STUDY_INSTANCE_UID),
        uid(tags::SERIES_INSTANCE_UID),
        uid(tags::SOP_INSTANCE_UID)
    )
}

/// RetrieveURL (0008,1190) of a match.
pub fn retrieve_url(service: &str, level: Level, view: &Dataset) -> Option<String> {
    let study = view.string(tags::STUDY_INSTANCE_UID)?;
    let mut url = format!("{service}/studies/{study}");
    if level >= Level::Series {
        url.push_str(&format!("/series/{}", view.string(tags::SERIES_INSTANCE_UID)?));
    }
    if level == Level::Image {
        url.push_str(&format!("/instances/{}", view.string(tags::SOP_INSTANCE_UID)?));
    }
    (level != Level::Patient).then_some(url)
}

pub async fn studies(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    search(&state, &ctx, &headers, Level::Study, &[], &raw).await
}

pub async fn study_series(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    Path(study): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    search(&state, &ctx, &headers, Level::Series, &[(tags::STUDY_INSTANCE_UID, &study)], &raw).await
}

pub async fn study_instances(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    Path(study): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    search(&state, &ctx, &headers, Level::Image, &[(tags::STUDY_INSTANCE_UID, &study)], &raw).await
}

pub async fn series_instances(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let scope = [(tags::STUDY_INSTANCE_UID, study.as_str()), (tags::SERIES_INSTANCE_UID, series.as_str())];
    search(&state, &ctx, &headers, Level::Image, &scope, &raw).await
}

pub async fn all_series(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    search(&state, &ctx, &headers, Level::Series, &[], &raw).await
}

pub async fn all_instances(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    search(&state, &ctx, &headers, Level::Image, &[], &raw).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode_percent_encoded_utf8() {
        let pairs = query_pairs(&Some("PatientName=%EA%B9%80*&limit=10&x=a+b&bad=%ZZ&tail=%4".into()));
        assert_eq!(pairs[0], ("PatientName".into(), "김*".into()));
        assert_eq!(pairs[1], ("limit".into(), "10".into()));
        assert_eq!(pairs[2], ("x".into(), "a b".into()));
        assert_eq!(pairs[3], ("bad".into(), "%ZZ".into()));
        assert_eq!(pairs[4], ("tail".into(), "%4".into()));
    }
}
