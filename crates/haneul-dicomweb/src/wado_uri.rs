//! WADO-URI (PS3.18 9): `GET /wado?requestType=WADO&studyUID=…&seriesUID=…&objectUID=…`
//! for older viewers and hospital information systems.

use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use haneul_pixel::{ImageFormat, RenderOptions, Viewport, VoiFunction, Window};

use crate::error::{ApiError, ApiResult};
use crate::media::{DicomAccept, SyntaxChoice};
use crate::qido::query_pairs;
use haneul_core::audit::Action;

use crate::retrieve::{stored_instances, Target};
use crate::{rendered, RequestContext, WebState};

pub async fn wado(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let params = query_pairs(&raw);
    let get = |name: &str| params.iter().find(|(key, _)| key == name).map(|(_, value)| value.trim().to_string());
    match get("requestType").as_deref() {
        Some("WADO") => {}
        Some(other) => return Err(ApiError::BadRequest(format!("requestType {other:?} is not WADO"))),
        None => return Err(ApiError::BadRequest("requestType=WADO is required".into())),
    }
    let object = get("objectUID")
        .filter(|uid| !uid.is_empty())
        .ok_or_else(|| ApiError::BadRequest("objectUID is required".into()))?;
    let study = get("studyUID")
        .filter(|uid| !uid.is_empty())
        .ok_or_else(|| ApiError::BadRequest("studyUID is required".into()))?;
    let series = get("seriesUID")
        .filter(|uid| !uid.is_empty())
        .ok_or_else(|| ApiError::BadRequest("seriesUID is required".into()))?;
    let target = Target { study, series: Some(series), instance: Some(object) };
    let content_type = get("contentType").unwrap_or_else(|| "image/jpeg".into());
    let first_type = content_type.split(',').next().unwrap_or("image/jpeg").trim().to_ascii_lowercase();
    match first_type.as_str() {
        "application/dicom" => {
            let syntax = match get("transferSyntax") {
                Some(uid) if !uid.is_empty() => SyntaxChoice::Syntax(uid),
                _ => SyntaxChoice::Syntax(crate::media::DEFAULT_SYNTAX.into()),
            };
            let accept = DicomAccept { syntax, multipart: false };
            crate::retrieve::send_for_wado(&state, &ctx, target, accept).await
        }
        "image/jpeg" | "image/png" | "*/*" | "image/*" => {
            let format = if first_type == "image/png" { ImageFormat::Png } else { ImageFormat::Jpeg };
            let options = options(&get, format)?;
            let frame = match get("frameNumber") {
                Some(number) => number
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .map(|n| n - 1)
                    .ok_or_else(|| ApiError::BadRequest(format!("frameNumber {number:?} is not a frame number")))?,
                None => 0,
            };
            let instance = stored_instances(&state, &ctx, &target, Some(Action::View), "wado-uri rendered")
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| ApiError::NotFound("no such instance".into()))?;
            let image = rendered::render_instance(state.archive(), instance, frame, &options).await?;
            let media = if format == ImageFormat::Png { "image/png" } else { "image/jpeg" };
            Ok(([(header::CONTENT_TYPE, media)], image).into_response())
        }
        other => Err(ApiError::NotAcceptable(format!(
            "contentType {other} is not served; use application/dicom, image/jpeg or image/png"
        ))),
    }
}

fn options(get: &dyn Fn(&str) -> Option<String>, format: ImageFormat) -> ApiResult<RenderOptions> {
    let number = |name: &str| -> ApiResult<Option<f64>> {
        get(name)
            .map(|value| {
                value.parse::<f64>().map_err(|_| ApiError::BadRequest(format!("{name} {value:?} is not a number")))
            })
            .transpose()
    };
    let window = match (number("windowCenter")?, number("windowWidth")?) {
        (Some(center), Some(width)) if width > 0.0 => Some(Window { center, width, function: VoiFunction::Linear }),
        (None, None) => None,
        _ => {
            return Err(ApiError::BadRequest("windowCenter and windowWidth go together, with a positive width".into()))
        }
    };
    let size = |name: &str| -> ApiResult<Option<u32>> {
        get(name)
            .map(|value| {
                value
                    .parse::<u32>()
                    .ok()
                    .filter(|v| *v > 0)
                    .ok_or_else(|| ApiError::BadRequest(format!("{name} {value:?} is not a size")))
            })
            .transpose()
    };
    let viewport = match (size("columns")?, size("rows")?) {
        (None, None) => None,
        (columns, rows) => {
            Some(Viewport { width: columns.unwrap_or(u32::MAX), height: rows.unwrap_or(u32::MAX), source: None })
        }
    };
    let quality = match get("imageQuality") {
        Some(value) => value
            .parse::<u8>()
            .ok()
            .filter(|q| (1..=100).contains(q))
            .ok_or_else(|| ApiError::BadRequest(format!("imageQuality {value:?} is not 1 to 100")))?,
        None => 90,
    };
    Ok(RenderOptions { format, quality, window, viewport })
}
