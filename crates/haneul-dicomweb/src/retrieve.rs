//! WADO-RS: instances (stored bytes, or transcoded), metadata from the
//! catalog without touching any file, frames, bulk data and rendered images.

use std::io::{Read, Seek};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use haneul_core::audit::Action;
use haneul_core::{Archive, StoredInstance};
use haneul_dicom::json::write_object;
use haneul_dicom::levels::{InformationModel, Level};
use haneul_dicom::matching::Query;
use haneul_dicom::meta::{encode_file_meta, NewFileMeta};
use haneul_dicom::transcode::{can_transcode, transcode};
use haneul_dicom::{tags, ts, BulkRef, Dataset, Element, Value, VR};

use crate::error::{ApiError, ApiResult};
use crate::media::{negotiate_dicom, negotiate_octets, new_boundary, require_json, SyntaxChoice, DEFAULT_SYNTAX};
use crate::qido::{bulk_uri, DICOM_JSON};
use crate::{rendered, RequestContext, WebState};

/// The resource a request names, from study down to instance.
#[derive(Debug, Clone)]
pub struct Target {
    pub study: String,
    pub series: Option<String>,
    pub instance: Option<String>,
}

impl Target {
    pub fn level(&self) -> Level {
        match (&self.series, &self.instance) {
            (_, Some(_)) => Level::Image,
            (Some(_), None) => Level::Series,
            _ => Level::Study,
        }
    }

    /// A query at `level` for everything under this target.
    pub fn query(&self, level: Level) -> ApiResult<Query> {
        let mut identifier = Dataset::new();
        identifier.put(Element::text(tags::QUERY_RETRIEVE_LEVEL, VR::CS, level.as_str()));
        identifier.put(Element::text(tags::STUDY_INSTANCE_UID, VR::UI, self.study.clone()));
        if let Some(series) = &self.series {
            identifier.put(Element::text(tags::SERIES_INSTANCE_UID, VR::UI, series.clone()));
        }
        if let Some(instance) = &self.instance {
            identifier.put(Element::text(tags::SOP_INSTANCE_UID, VR::UI, instance.clone()));
        }
        Query::from_identifier(&identifier, InformationModel::PatientRoot)
            .map_err(|error| ApiError::BadRequest(error.to_string()))
    }

    fn describe(&self) -> String {
        match (&self.series, &self.instance) {
            (Some(series), Some(instance)) => format!("instance {instance} of series {series} of study {}", self.study),
            (Some(series), None) => format!("series {series} of study {}", self.study),
            _ => format!("study {}", self.study),
        }
    }
}

/// Every stored instance under a target; 404 when there is none. Recorded
/// in the audit trail as `action` on `what` unless `action` is `None` (the
/// caller records it otherwise).
pub async fn stored_instances(
    state: &WebState,
    ctx: &RequestContext,
    target: &Target,
    action: Option<Action>,
    what: &str,
) -> ApiResult<Vec<StoredInstance>> {
    let query = target.query(target.level())?;
    let found = state.archive().find_instances(query, &ctx.origin).await;
    if let Some(action) = action {
        let audit = ctx.audit_entry(action).detail("resource", what).study(&target.study);
        let audit = match &found {
            Ok(instances) if instances.is_empty() => audit.failed(format!("no {} is stored", target.describe())),
            _ => audit.outcome_of(&found),
        };
        state.archive().audit_instances(audit, found.as_deref().unwrap_or_default());
    }
    let instances = found?;
    if instances.is_empty() {
        return Err(ApiError::NotFound(format!("no {} is stored", target.describe())));
    }
    Ok(instances)
}

/// The catalog views (all levels merged) of every instance under a target.
/// Recorded in the audit trail as a retrieve of `what`.
pub async fn instance_views(
    state: &WebState,
    ctx: &RequestContext,
    target: &Target,
    what: &str,
) -> ApiResult<Vec<Dataset>> {
    let query = target.query(Level::Image)?;
    let views = state.archive().search(query, 0, None, &ctx.origin).await;
    let mut audit = ctx.audit_entry(Action::Retrieve).detail("resource", what).study(&target.study);
    for view in views.iter().flatten() {
        haneul_core::audit_add_view(&mut audit, view);
    }
    let audit = match &views {
        Ok(views) if views.is_empty() => audit.failed(format!("no {} is stored", target.describe())),
        Ok(views) => audit.detail("instances", views.len()),
        Err(error) => audit.failed(error),
    };
    state.archive().audit(audit);
    let views = views?;
    if views.is_empty() {
        return Err(ApiError::NotFound(format!("no {} is stored", target.describe())));
    }
    Ok(views)
}

/// How one instance goes out.
enum Delivery {
    /// The stored Part 10 file, byte for byte.
    Stored,
    /// Re-encoded in another native syntax.
    Transcoded(&'static ts::TransferSyntax),
    /// Compressed pixel data decoded to Explicit VR Little Endian.
    Decompressed,
}

fn plan(instance: &StoredInstance, choice: &SyntaxChoice) -> ApiResult<Delivery> {
    let SyntaxChoice::Syntax(wanted) = choice else {
        return Ok(Delivery::Stored);
    };
    if *wanted == instance.transfer_syntax {
        return Ok(Delivery::Stored);
    }
    let target =
        ts::lookup(wanted).ok_or_else(|| ApiError::NotAcceptable(format!("unknown transfer syntax {wanted}")))?;
    let stored = ts::lookup(&instance.transfer_syntax)
        .ok_or_else(|| ApiError::Internal(format!("stored transfer syntax {} is unknown", instance.transfer_syntax)))?;
    if can_transcode(stored, target) {
        return Ok(Delivery::Transcoded(target));
    }
    if stored.encapsulated && target.uid == ts::EXPLICIT_VR_LITTLE_ENDIAN && rendered::can_decompress(stored) {
        return Ok(Delivery::Decompressed);
    }
    Err(ApiError::NotAcceptable(format!(
        "instance {} is stored in {} and cannot be sent in {wanted}; ask for transfer-syntax=*",
        instance.sop_uid, instance.transfer_syntax
    )))
}

/// A Part 10 file in another transfer syntax, built in memory.
async fn rebuilt_instance(
    archive: &Arc<Archive>,
    instance: &StoredInstance,
    delivery: &Delivery,
) -> ApiResult<(Vec<u8>, String)> {
    let dataset = delivered_bytes(archive, instance, true).await?;
    let (bytes, syntax) = match delivery {
        Delivery::Transcoded(target) => {
            let stored = ts::lookup(&instance.transfer_syntax)
                .ok_or_else(|| ApiError::Internal("unknown stored syntax".into()))?;
            let target = *target;
            let converted = tokio::task::spawn_blocking(move || transcode(&dataset, stored, target))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?
                .map_err(|e| {
                    ApiError::NotAcceptable(format!("instance {} cannot be transcoded: {e}", instance.sop_uid))
                })?;
            (converted, target.uid.to_string())
        }
        Delivery::Decompressed => {
            (rendered::decompress_instance(archive, instance).await?, ts::EXPLICIT_VR_LITTLE_ENDIAN.to_string())
        }
        Delivery::Stored => return Err(ApiError::Internal("stored instances are streamed, not rebuilt".into())),
    };
    let mut file = encode_file_meta(&NewFileMeta {
        sop_class_uid: &instance.sop_class,
        sop_instance_uid: &instance.sop_uid,
        transfer_syntax_uid: &syntax,
        source_ae_title: None,
    });
    file.extend_from_slice(&bytes);
    Ok((file, syntax))
}

/// What a retrieve sends of an instance (its corrected copy, if corrections
/// apply), whole or only its data set, in memory.
async fn delivered_bytes(archive: &Arc<Archive>, instance: &StoredInstance, dataset_only: bool) -> ApiResult<Vec<u8>> {
    let archive = Arc::clone(archive);
    let instance = instance.clone();
    tokio::task::spawn_blocking(move || {
        let delivered = archive.open_delivered_blocking(&instance)?;
        let mut file = delivered.file;
        let start = if dataset_only { delivered.dataset_offset } else { 0 };
        let mut bytes = Vec::with_capacity(delivered.size.saturating_sub(start) as usize);
        file.seek(std::io::SeekFrom::Start(start))
            .and_then(|_| file.read_to_end(&mut bytes))
            .map_err(|error| ApiError::Internal(format!("reading stored instance: {error}")))?;
        Ok(bytes)
    })
    .await
    .map_err(|error| ApiError::Internal(error.to_string()))?
}

/// Send instances as `multipart/related; type="application/dicom"`, streaming
/// stored files from disk with bounded memory.
async fn send_instances(
    state: &WebState,
    instances: Vec<StoredInstance>,
    choice: SyntaxChoice,
    multipart: bool,
) -> ApiResult<Response> {
    // Decide for every instance before the first byte goes out: a 406 cannot follow a 200.
    let plans = instances.iter().map(|instance| plan(instance, &choice)).collect::<ApiResult<Vec<_>>>()?;
    let archive = Arc::clone(state.archive());
    if !multipart {
        let (instance, delivery) =
            instances.into_iter().zip(plans).next().ok_or_else(|| ApiError::NotFound("nothing to send".into()))?;
        let (body, syntax) = match delivery {
            Delivery::Stored => {
                (Body::from(delivered_bytes(&archive, &instance, false).await?), instance.transfer_syntax.clone())
            }
            other => {
                let (bytes, syntax) = rebuilt_instance(&archive, &instance, &other).await?;
                (Body::from(bytes), syntax)
            }
        };
        let content_type = format!("application/dicom; transfer-syntax={syntax}");
        return Ok(([(header::CONTENT_TYPE, content_type)], body).into_response());
    }
    let boundary = new_boundary();
    let content_type = format!("multipart/related; type=\"application/dicom\"; boundary={boundary}");
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        for (instance, delivery) in instances.into_iter().zip(plans) {
            let sent = stream_part(&archive, &instance, delivery, &boundary, &sender).await;
            if let Err(error) = sent {
                // The status line is gone; ending the stream early tells the client.
                tracing::warn!(%error, sop_instance_uid = %instance.sop_uid, "retrieve stopped");
                let _ = sender.send(Err(std::io::Error::other(error.to_string()))).await;
                return;
            }
        }
        let _ = sender.send(Ok(Bytes::from(format!("--{boundary}--\r\n")))).await;
    });
    let body = Body::from_stream(tokio_stream_from(receiver));
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

fn tokio_stream_from(
    mut receiver: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |context| receiver.poll_recv(context))
}

type PartSender = tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>;

async fn stream_part(
    archive: &Arc<Archive>,
    instance: &StoredInstance,
    delivery: Delivery,
    boundary: &str,
    sender: &PartSender,
) -> ApiResult<()> {
    let closed = || ApiError::Internal("client went away".into());
    if let Delivery::Stored = delivery {
        let header = format!(
            "--{boundary}\r\nContent-Type: application/dicom; transfer-syntax={}\r\n\r\n",
            instance.transfer_syntax
        );
        let (archive, instance, sender) = (Arc::clone(archive), instance.clone(), sender.clone());
        return tokio::task::spawn_blocking(move || send_stored(&archive, &instance, header.into_bytes(), &sender))
            .await
            .map_err(|error| ApiError::Internal(error.to_string()))?;
    }
    let (bytes, syntax) = rebuilt_instance(archive, instance, &delivery).await?;
    let header = format!("--{boundary}\r\nContent-Type: application/dicom; transfer-syntax={syntax}\r\n\r\n");
    sender.send(Ok(Bytes::from(header))).await.map_err(|_| closed())?;
    sender.send(Ok(Bytes::from(bytes))).await.map_err(|_| closed())?;
    sender.send(Ok(Bytes::from_static(b"\r\n"))).await.map_err(|_| closed())
}

/// Bytes of a stored file read at once when it is streamed out: with the
/// channel's four messages, what one retrieve holds in memory.
const STREAM_CHUNK: u64 = 1024 * 1024;

/// Stream a stored file as one part, on a blocking thread: each chunk is read
/// straight into the buffer that goes out (no zero-filling, no copy through
/// an async file's buffer, one hand-off per chunk), the part's header rides
/// in the first chunk and its closing CRLF in the last, so an instance of
/// up to a MiB is one message.
fn send_stored(archive: &Archive, instance: &StoredInstance, header: Vec<u8>, sender: &PartSender) -> ApiResult<()> {
    let closed = || ApiError::Internal("client went away".into());
    let delivered = archive.open_delivered_blocking(instance)?;
    let mut file = delivered.file;
    let mut remaining = delivered.size;
    let mut buffer = header;
    loop {
        let wanted = remaining.min(STREAM_CHUNK);
        buffer.reserve_exact(wanted as usize + 2);
        let read = (&mut file)
            .take(wanted)
            .read_to_end(&mut buffer)
            .map_err(|e| ApiError::Internal(format!("reading stored instance: {e}")))?;
        if read as u64 != wanted {
            return Err(ApiError::Internal(format!("stored instance {} is shorter than catalogued", instance.sop_uid)));
        }
        remaining -= wanted;
        if remaining == 0 {
            buffer.extend_from_slice(b"\r\n");
            return sender.blocking_send(Ok(Bytes::from(buffer))).map_err(|_| closed());
        }
        sender.blocking_send(Ok(Bytes::from(std::mem::take(&mut buffer)))).map_err(|_| closed())?;
    }
}

/// WADO-URI's `application/dicom`: one instance, not multipart.
pub async fn send_for_wado(
    state: &WebState,
    ctx: &RequestContext,
    target: Target,
    accept: crate::media::DicomAccept,
) -> ApiResult<Response> {
    let instances = stored_instances(state, ctx, &target, Some(Action::Retrieve), "wado-uri").await?;
    send_instances(state, instances, accept.syntax, false).await
}

async fn retrieve(state: WebState, ctx: RequestContext, headers: HeaderMap, target: Target) -> ApiResult<Response> {
    let accept = negotiate_dicom(&headers, target.instance.is_some())?;
    let instances = stored_instances(&state, &ctx, &target, Some(Action::Retrieve), "instances").await?;
    send_instances(&state, instances, accept.syntax, accept.multipart).await
}

pub async fn study(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    Path(study): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    retrieve(state, ctx, headers, Target { study, series: None, instance: None }).await
}

pub async fn series(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    retrieve(state, ctx, headers, Target { study, series: Some(series), instance: None }).await
}

pub async fn instance(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    Path((study, series, instance)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    retrieve(state, ctx, headers, Target { study, series: Some(series), instance: Some(instance) }).await
}

/// Metadata: the stored headers as DICOM JSON, with BulkDataURIs for large
/// values; built from the catalog, so no instance file is read.
async fn metadata(state: WebState, ctx: RequestContext, headers: HeaderMap, target: Target) -> ApiResult<Response> {
    require_json(&headers)?;
    let views = instance_views(&state, &ctx, &target, "metadata").await?;
    let service = ctx.service_url(&state);
    let mut body = String::with_capacity(views.len() * 4096 + 2);
    body.push('[');
    for (index, view) in views.iter().enumerate() {
        if index > 0 {
            body.push(',');
        }
        let mut instance = view.clone();
        // JSON text is Unicode; the original character set no longer applies.
        instance.remove(tags::SPECIFIC_CHARACTER_SET);
        let bulk = |path: &str, _: &BulkRef| bulk_uri(&service, view, path);
        write_object(&mut body, &instance, &bulk);
    }
    body.push(']');
    let etag = format!("\"{}\"", &blake3::hash(body.as_bytes()).to_hex()[..32]);
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag || tag.trim() == "*"));
    if unchanged {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok(([(header::CONTENT_TYPE, DICOM_JSON.to_string()), (header::ETAG, etag)], body).into_response())
}

pub async fn study_metadata(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    Path(study): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    metadata(state, ctx, headers, Target { study, series: None, instance: None }).await
}

pub async fn series_metadata(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    metadata(state, ctx, headers, Target { study, series: Some(series), instance: None }).await
}

pub async fn instance_metadata(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    Path((study, series, instance)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    metadata(state, ctx, headers, Target { study, series: Some(series), instance: Some(instance) }).await
}

/// Find an element by a BulkDataURI path: tags and item indexes separated by dots.
fn element_at<'a>(dataset: &'a Dataset, path: &str) -> Option<&'a Element> {
    let mut steps = path.split('.');
    let mut current = dataset;
    loop {
        let tag_text = steps.next()?;
        let tag = u32::from_str_radix(tag_text, 16).ok().map(haneul_dicom::model::tag_from_u32)?;
        let element = current.get(tag)?;
        let Some(index_text) = steps.next() else {
            return Some(element);
        };
        let index: usize = index_text.parse().ok()?;
        current = match &element.value {
            Value::Sequence(items) => items.get(index)?,
            _ => return None,
        };
    }
}

/// Parse `Range: bytes=a-b` against a value of `length` bytes.
fn byte_range(headers: &HeaderMap, length: u64) -> ApiResult<Option<(u64, u64)>> {
    let Some(value) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let unsatisfiable = || ApiError::RangeNotSatisfiable(format!("range {value:?} does not fit {length} bytes"));
    let spec = value.trim().strip_prefix("bytes=").ok_or_else(unsatisfiable)?;
    if spec.contains(',') {
        // One range at a time; several would need multipart/byteranges.
        return Ok(None);
    }
    let (start, end) = spec.split_once('-').ok_or_else(unsatisfiable)?;
    let (first, last) = match (start.trim(), end.trim()) {
        ("", suffix) => {
            let suffix: u64 = suffix.parse().map_err(|_| unsatisfiable())?;
            (length.saturating_sub(suffix), length.saturating_sub(1))
        }
        (start, "") => (start.parse().map_err(|_| unsatisfiable())?, length.saturating_sub(1)),
        (start, end) => (
            start.parse().map_err(|_| unsatisfiable())?,
            end.parse::<u64>().map_err(|_| unsatisfiable())?.min(length.saturating_sub(1)),
        ),
    };
    if first > last || first >= length {
        return Err(unsatisfiable());
    }
    Ok(Some((first, last)))
}

/// A binary value read from a big-endian file, in little-endian order: OW,
/// OF/OL and OD/OV in their units; Pixel Data of 32-bit samples in 32-bit ones.
fn to_little_endian(value: &mut [u8], element: &Element, view: &Dataset) {
    if element.tag == tags::PIXEL_DATA {
        let bits = view.int(tags::BITS_ALLOCATED).and_then(|b| u16::try_from(b).ok()).unwrap_or(16);
        haneul_pixel::big_endian_value_to_little_endian(value, bits, element.vr);
        return;
    }
    let unit = match element.vr {
        VR::OW => 2,
        VR::OF | VR::OL => 4,
        VR::OD | VR::OV => 8,
        _ => return,
    };
    value.chunks_exact_mut(unit).for_each(<[u8]>::reverse);
}

/// `length` bytes at `offset` of a deflated instance's inflated data set.
async fn inflated_value(
    archive: &Arc<Archive>,
    stored: &StoredInstance,
    offset: u64,
    length: u64,
) -> ApiResult<Vec<u8>> {
    let deflated = archive.read_range(stored, stored.dataset_offset, stored.blob.size - stored.dataset_offset).await?;
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        // Inflate no further than the value's end: a bound against deflate bombs too.
        let mut inflated = Vec::new();
        flate2::read::DeflateDecoder::new(&deflated[..])
            .take(offset + length)
            .read_to_end(&mut inflated)
            .map_err(|error| ApiError::Internal(format!("inflating stored instance: {error}")))?;
        if (inflated.len() as u64) < offset + length {
            return Err(ApiError::Internal("stored deflated instance ends before its bulk data".into()));
        }
        Ok(inflated.split_off(offset as usize))
    })
    .await
    .map_err(|error| ApiError::Internal(error.to_string()))?
}

pub async fn bulkdata(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    Path((study, series, instance, path)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let accept = negotiate_octets(&headers)?;
    let target = Target { study, series: Some(series), instance: Some(instance) };
    let views = instance_views(&state, &ctx, &target, "bulkdata").await?;
    let stored = stored_instances(&state, &ctx, &target, None, "bulkdata").await?;
    let (Some(view), Some(stored)) = (views.first(), stored.first()) else {
        return Err(ApiError::NotFound(format!("no {} is stored", target.describe())));
    };
    let element = element_at(view, &path).ok_or_else(|| ApiError::NotFound(format!("no bulk data at {path}")))?;
    let whole = match &element.value {
        Value::Bytes(bytes) => bytes.clone(),
        Value::Bulk(BulkRef { offset, length: Some(length) }) => {
            let syntax = ts::lookup(&stored.transfer_syntax)
                .ok_or_else(|| ApiError::Internal("unknown stored syntax".into()))?;
            if syntax.deflated {
                // Offsets count in the inflated data set.
                inflated_value(state.archive(), stored, *offset, *length).await?
            } else if syntax.big_endian {
                // Bulk data goes out little endian, as inline values do; a
                // range is cut from the swapped value.
                let mut value = state.archive().read_range(stored, stored.dataset_offset + offset, *length).await?;
                to_little_endian(&mut value, element, view);
                value
            } else {
                // Ranges read only what is asked.
                if let Some((first, last)) = byte_range(&headers, *length)? {
                    let bytes = state
                        .archive()
                        .read_range(stored, stored.dataset_offset + offset + first, last - first + 1)
                        .await?;
                    let content_range = format!("bytes {first}-{last}/{length}");
                    return Ok((
                        StatusCode::PARTIAL_CONTENT,
                        [
                            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                            (header::CONTENT_RANGE, content_range),
                        ],
                        bytes,
                    )
                        .into_response());
                }
                state.archive().read_range(stored, stored.dataset_offset + offset, *length).await?
            }
        }
        Value::Bulk(BulkRef { length: None, .. }) => {
            // Encapsulated Pixel Data. In the default syntax its value is the
            // decoded frames one after another; asked as stored (or as
            // images), it is the frames as stored, one part each.
            let default_syntax = matches!(&accept.syntax, SyntaxChoice::Syntax(uid) if uid == DEFAULT_SYNTAX);
            if !default_syntax || accept.part_type != "application/octet-stream" {
                let count = view.int(tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1);
                let all = (1..=count).map(|n| n.to_string()).collect::<Vec<_>>().join(",");
                return rendered::frames(&state, &ctx, &headers, target, &all).await;
            }
            rendered::decompressed_pixel_data(state.archive(), stored).await?
        }
        _ => return Err(ApiError::NotFound(format!("{path} is not bulk data"))),
    };
    if let Some((first, last)) = byte_range(&headers, whole.len() as u64)? {
        let content_range = format!("bytes {first}-{last}/{}", whole.len());
        let part = whole[first as usize..=last as usize].to_vec();
        return Ok((
            StatusCode::PARTIAL_CONTENT,
            [(header::CONTENT_TYPE, "application/octet-stream".to_string()), (header::CONTENT_RANGE, content_range)],
            part,
        )
            .into_response());
    }
    if !accept.multipart {
        let mut response = whole.into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        response.headers_mut().insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        return Ok(response);
    }
    let boundary = new_boundary();
    let mut body = format!("--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n").into_bytes();
    body.extend_from_slice(&whole);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let content_type = format!("multipart/related; type=\"application/octet-stream\"; boundary={boundary}");
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

pub async fn frames(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    Path((study, series, instance, frames)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let target = Target { study, series: Some(series), instance: Some(instance) };
    rendered::frames(&state, &ctx, &headers, target, &frames).await
}

macro_rules! rendered_handlers {
    ($name:ident, $thumbnail:ident, $path:ty, $target:expr) => {
        pub async fn $name(
            State(state): State<WebState>,
            Extension(ctx): Extension<RequestContext>,
            Path(path): Path<$path>,
            headers: HeaderMap,
            RawQuery(raw): RawQuery,
        ) -> ApiResult<Response> {
            let (target, frames): (Target, Option<String>) = $target(path);
            rendered::rendered(&state, &ctx, &headers, target, frames.as_deref(), &raw, false).await
        }

        pub async fn $thumbnail(
            State(state): State<WebState>,
            Extension(ctx): Extension<RequestContext>,
            Path(path): Path<$path>,
            headers: HeaderMap,
            RawQuery(raw): RawQuery,
        ) -> ApiResult<Response> {
            let (target, frames): (Target, Option<String>) = $target(path);
            rendered::rendered(&state, &ctx, &headers, target, frames.as_deref(), &raw, true).await
        }
    };
}

rendered_handlers!(study_rendered, study_thumbnail, String, |study| (
    Target { study, series: None, instance: None },
    None
));
rendered_handlers!(series_rendered, series_thumbnail, (String, String), |(study, series)| (
    Target { study, series: Some(series), instance: None },
    None
));
rendered_handlers!(instance_rendered, instance_thumbnail, (String, String, String), |(study, series, instance)| (
    Target { study, series: Some(series), instance: Some(instance) },
    None
));
rendered_handlers!(frames_rendered, frames_thumbnail, (String, String, String, String), |(
    study,
    series,
    instance,
    frames,
)| (
    Target { study, series: Some(series), instance: Some(instance) },
    Some(frames)
));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let mut headers = HeaderMap::new();
        assert_eq!(byte_range(&headers, 100).expect("none"), None);
        headers.insert(header::RANGE, HeaderValue::from_static("bytes=10-19"));
        assert_eq!(byte_range(&headers, 100).expect("some"), Some((10, 19)));
        headers.insert(header::RANGE, HeaderValue::from_static("bytes=90-"));
        assert_eq!(byte_range(&headers, 100).expect("open"), Some((90, 99)));
        headers.insert(header::RANGE, HeaderValue::from_static("bytes=-5"));
        assert_eq!(byte_range(&headers, 100).expect("suffix"), Some((95, 99)));
        headers.insert(header::RANGE, HeaderValue::from_static("bytes=200-300"));
        assert!(byte_range(&headers, 100).is_err());
        headers.insert(header::RANGE, HeaderValue::from_static("items=1-2"));
        assert!(byte_range(&headers, 100).is_err());
    }

    #[test]
    fn big_endian_bulk_values_go_out_little_endian() {
        let mut view = Dataset::new();
        view.put(Element::new(tags::BITS_ALLOCATED, VR::US, Value::U16(vec![8])));
        let element = |tag, vr| Element::new(tag, vr, Value::Empty);
        let mut value = vec![1, 2, 3, 4, 5, 6, 7, 8];
        to_little_endian(&mut value, &element(tags::PIXEL_DATA, VR::OW), &view);
        assert_eq!(value, [2, 1, 4, 3, 6, 5, 8, 7], "8-bit samples in OW are swapped in words");
        to_little_endian(&mut value, &element(tags::PIXEL_DATA, VR::OB), &view);
        assert_eq!(value, [2, 1, 4, 3, 6, 5, 8, 7], "OB is a byte stream");
        to_little_endian(&mut value, &element(haneul_dicom::Tag(0x0028, 0x1201), VR::OF), &view);
        assert_eq!(value, [3, 4, 1, 2, 7, 8, 5, 6]);
    }

    #[test]
    fn bulk_paths_walk_sequences() {
        let mut item = Dataset::new();
        item.put(Element::new(haneul_dicom::Tag(0x0018, 0x1072), VR::OB, Value::Bytes(vec![1, 2])));
        let mut ds = Dataset::new();
        ds.put(Element::new(haneul_dicom::Tag(0x0054, 0x0016), VR::SQ, Value::Sequence(vec![item])));
        assert!(element_at(&ds, "00540016.0.00181072").is_some());
        assert!(element_at(&ds, "00540016.1.00181072").is_none());
        assert!(element_at(&ds, "zz").is_none());
    }
}
