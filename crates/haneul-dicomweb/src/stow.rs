//! STOW-RS: `multipart/related` uploads of Part 10 instances, or of DICOM
//! JSON metadata with bulk data parts. Instances stream into the archive
//! core part by part (bounded memory) and are durable before the answer, as
//! with C-STORE.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use haneul_core::{CommitOutcome, IngestError, IngestFormat, IngestReport, RejectReason};
use haneul_dicom::json::{read_array, write_object};
use haneul_dicom::meta::{encode_file_meta, read_layout, FileLayout, NewFileMeta};
use haneul_dicom::write::{write_dataset, Encoding};
use haneul_dicom::{tags, ts, Dataset, Element, Tag, Value, VR};

use crate::error::{ApiError, ApiResult};
use crate::media::parse_media_type;
use crate::qido::DICOM_JSON;
use crate::{RequestContext, WebState};

const FAILURE_REASON: Tag = Tag(0x0008, 0x1197);
const WARNING_REASON: Tag = Tag(0x0008, 0x1196);
const FAILED_SOP_SEQUENCE: Tag = Tag(0x0008, 0x1198);
const REFERENCED_SOP_SEQUENCE: Tag = Tag(0x0008, 0x1199);

/// Largest metadata or bulk data part kept in memory (JSON uploads).
const MAX_BUFFERED_PART: u64 = 1 << 30;

pub async fn store(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(stow(state, ctx, headers, body, None).await)
}

pub async fn store_in_study(
    State(state): State<WebState>,
    Extension(ctx): Extension<RequestContext>,
    Path(study): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(stow(state, ctx, headers, body, Some(study)).await)
}

/// A STOW-RS answer. After a body too large to read to its end, the client
/// is told not to reuse the connection: the server closes it, and a client
/// that sent its next request on it would see it dropped without an answer.
fn answer(result: ApiResult<Response>) -> Response {
    match result {
        Ok(response) => response,
        Err(error @ ApiError::PayloadTooLarge(_)) => {
            let mut response = error.into_response();
            response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
            response
        }
        Err(error) => error.into_response(),
    }
}

/// The outcome of one part or instance.
struct Outcome {
    sop_class: String,
    sop_instance: String,
    study: String,
    series: String,
    /// Failure reason (a C-STORE status), if refused.
    failure: Option<u16>,
    /// Warning reason, if stored with a warning.
    warning: Option<u16>,
}

/// Record a stored (or refused) instance in the audit trail, then answer for it.
fn audited(state: &WebState, ctx: &RequestContext, result: Result<IngestReport, IngestError>) -> Outcome {
    let audit = ctx.audit_entry(haneul_core::audit::Action::Store);
    state.archive().audit(match &result {
        Ok(report) => audit
            .patient(&report.patient_id)
            .study(&report.study_instance_uid)
            .detail("sop_instance_uid", report.sop_instance_uid.as_str()),
        Err(error) => audit.failed(error),
    });
    outcome_of(result)
}

fn outcome_of(result: Result<IngestReport, IngestError>) -> Outcome {
    match result {
        Ok(report) => {
            let warning = matches!(report.outcome, CommitOutcome::DuplicateIgnored).then_some(0xB006);
            let failure = matches!(report.outcome, CommitOutcome::DuplicateRejected { .. }).then_some(0x0111);
            Outcome {
                sop_class: report.sop_class_uid,
                sop_instance: report.sop_instance_uid,
                study: report.study_instance_uid,
                series: report.series_instance_uid,
                failure,
                warning,
            }
        }
        Err(error) => {
            let reason = match &error {
                IngestError::Rejected {
                    reason: RejectReason::Unreadable | RejectReason::UnsupportedTransferSyntax,
                    ..
                } => 0xC000,
                IngestError::Rejected {
                    reason: RejectReason::MissingAttribute(_) | RejectReason::Inconsistent,
                    ..
                } => 0xA900,
                IngestError::Rejected { reason: RejectReason::Duplicate, .. } => 0x0111,
                _ => 0xA700,
            };
            tracing::warn!(%error, "STOW-RS part refused");
            Outcome {
                sop_class: String::new(),
                sop_instance: String::new(),
                study: String::new(),
                series: String::new(),
                failure: Some(reason),
                warning: None,
            }
        }
    }
}

async fn stow(
    state: WebState,
    ctx: RequestContext,
    headers: HeaderMap,
    body: Body,
    study: Option<String>,
) -> ApiResult<Response> {
    // Read by a task of its own from here on, so that whatever the answer,
    // the body is read to its end and the connection stays usable.
    let body = drained_on_early_answer(body);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::UnsupportedMediaType("STOW-RS needs Content-Type: multipart/related".into()))?;
    let request = StowRequest::parse(content_type)?;
    let limit = state.config().max_upload_bytes;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(ApiError::PayloadTooLarge(format!(
            "request of {} bytes exceeds the limit of {limit}",
            declared.unwrap_or(0)
        )));
    }
    let mut sink = Store { state: &state, ctx: &ctx, study: study.clone(), outcomes: Vec::new() };
    request.walk(body, limit, &mut sink).await?;
    Ok(respond(&state, &ctx, study.as_deref(), sink.outcomes))
}

/// A checked STOW-RS request: the type of parts without their own Content-Type, and the boundary.
pub(crate) struct StowRequest {
    part_type: String,
    boundary: String,
}

/// Where [`StowRequest::walk`] hands what the body holds, in order.
pub(crate) trait StowSink {
    /// An `application/dicom` part, to be read to its end.
    async fn part10(&mut self, field: multer::Field<'_>) -> ApiResult<()>;
    /// An instance of the DICOM JSON metadata parts, its bulk data resolved.
    async fn json_instance(&mut self, dataset: Dataset);
    /// Whether the request held no instance at all.
    fn is_empty(&self) -> bool;
}

impl StowRequest {
    /// The checks of the request's Content-Type (PS3.18 10.5.1).
    pub(crate) fn parse(content_type: &str) -> ApiResult<StowRequest> {
        let media = parse_media_type(content_type);
        if media.essence != "multipart/related" {
            return Err(ApiError::UnsupportedMediaType(format!("{} is not multipart/related", media.essence)));
        }
        let part_type = media.part_type().unwrap_or_else(|| "application/dicom".into());
        if part_type != "application/dicom" && part_type != DICOM_JSON {
            return Err(ApiError::UnsupportedMediaType(format!("parts of type {part_type} are not accepted")));
        }
        let boundary = media
            .param("boundary")
            .map(str::to_string)
            .ok_or_else(|| ApiError::BadRequest("multipart/related without a boundary".into()))?;
        Ok(StowRequest { part_type, boundary })
    }

    /// Read the body part by part (at most `limit` bytes in all): Part 10
    /// parts go to the sink as they come; metadata and bulk data parts are
    /// kept until the end, then each JSON instance goes to the sink.
    pub(crate) async fn walk<S, E>(self, body: S, limit: u64, sink: &mut impl StowSink) -> ApiResult<()>
    where
        S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let constraints = multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(limit));
        let mut multipart = multer::Multipart::with_constraints(body, self.boundary, constraints);
        let mut metadata: Vec<String> = Vec::new();
        let mut bulk: HashMap<String, Vec<u8>> = HashMap::new();
        while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
            let field_type = field
                .content_type()
                .map(|mime| mime.essence_str().to_ascii_lowercase())
                .unwrap_or_else(|| self.part_type.clone());
            let location = field.headers().get("content-location").and_then(|v| v.to_str().ok()).map(str::to_string);
            match field_type.as_str() {
                "application/dicom" => sink.part10(field).await?,
                t if t == DICOM_JSON || t == "application/json" => metadata.push(read_text(field).await?),
                _ => {
                    let bytes = read_bytes(field).await?;
                    if let Some(location) = location {
                        bulk.insert(location, bytes);
                    }
                }
            }
        }
        for text in &metadata {
            let resolve = |uri: &str| bulk.get(uri).cloned();
            let datasets =
                read_array(text, &resolve).map_err(|error| ApiError::BadRequest(format!("metadata part: {error}")))?;
            for dataset in datasets {
                sink.json_instance(dataset).await;
            }
        }
        if sink.is_empty() {
            return Err(ApiError::BadRequest("no instance in the request".into()));
        }
        Ok(())
    }
}

/// The handler's sink: every instance into the archive, one outcome each.
struct Store<'a> {
    state: &'a WebState,
    ctx: &'a RequestContext,
    study: Option<String>,
    outcomes: Vec<Outcome>,
}

impl StowSink for Store<'_> {
    async fn part10(&mut self, field: multer::Field<'_>) -> ApiResult<()> {
        let outcome = store_part(self.state, self.ctx, field, self.study.clone()).await?;
        self.outcomes.push(outcome);
        Ok(())
    }

    async fn json_instance(&mut self, dataset: Dataset) {
        let outcome = store_json_instance(self.state, self.ctx, dataset, self.study.clone()).await;
        self.outcomes.push(outcome);
    }

    fn is_empty(&self) -> bool {
        self.outcomes.is_empty()
    }
}

/// Most of a request body read and thrown away after an early answer.
const MAX_DRAINED_BYTES: u64 = 16 << 20;

/// The request body as a stream read by a task of its own. When the handler
/// answers before the end of the body (too large, malformed), the task goes on
/// reading and discarding what the client still sends, up to
/// [`MAX_DRAINED_BYTES`]: closing a socket with unread data makes the kernel
/// reset the connection, and the client may then never see the 413 or 400.
fn drained_on_early_answer(
    body: Body,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let mut data = body.into_data_stream();
    tokio::spawn(async move {
        let mut drained = 0u64;
        while let Some(chunk) = futures_util::StreamExt::next(&mut data).await {
            let chunk = chunk.map_err(|error| std::io::Error::other(error.to_string()));
            if sender.is_closed() {
                // A failed body (the client stalled, or went) has nothing more to drain.
                if chunk.is_err() {
                    return;
                }
                drained += chunk.as_ref().map_or(0, |bytes| bytes.len() as u64);
                if drained > MAX_DRAINED_BYTES {
                    return;
                }
                continue;
            }
            let failed = chunk.is_err();
            if let Err(tokio::sync::mpsc::error::SendError(Ok(unsent))) = sender.send(chunk).await {
                drained += unsent.len() as u64;
            }
            if failed {
                return;
            }
        }
    });
    futures_util::stream::unfold(
        receiver,
        |mut receiver| async move { receiver.recv().await.map(|item| (item, receiver)) },
    )
}

pub(crate) fn multipart_error(error: multer::Error) -> ApiError {
    match error {
        multer::Error::StreamSizeExceeded { limit } | multer::Error::FieldSizeExceeded { limit, .. } => {
            ApiError::PayloadTooLarge(format!("request exceeds the limit of {limit} bytes"))
        }
        other => ApiError::BadRequest(format!("malformed multipart body: {other}")),
    }
}

async fn store_part(
    state: &WebState,
    ctx: &RequestContext,
    mut field: multer::Field<'_>,
    study: Option<String>,
) -> ApiResult<Outcome> {
    let archive = state.archive();
    let format = IngestFormat::Part10 { expected_study_uid: study };
    let mut ingest = match archive.begin_ingest(format, ctx.origin.clone()) {
        Ok(ingest) => ingest,
        Err(error) => return Ok(audited(state, ctx, Err(error))),
    };
    let mut write_error = None;
    // The start of the part, to name the instance if it is refused.
    let mut head = Vec::new();
    loop {
        match field.chunk().await {
            Ok(Some(chunk)) => {
                keep_head(&mut head, &chunk);
                if write_error.is_none() {
                    if let Err(error) = ingest.write(&chunk).await {
                        write_error = Some(error);
                    }
                }
            }
            Ok(None) => break,
            Err(error) => return Err(multipart_error(error)),
        }
    }
    let result = match write_error {
        Some(error) => Err(error),
        None => archive.finish_ingest(ingest).await,
    };
    let mut outcome = audited(state, ctx, result);
    if outcome.failure.is_some() && outcome.sop_instance.is_empty() {
        name_refused_part(&mut outcome, &head);
    }
    Ok(outcome)
}

/// How much of a part is kept to name it when refused: enough for any
/// realistic file meta group.
const PART_HEAD_BYTES: usize = 16 * 1024;

/// Add what is still wanted of the part's first [`PART_HEAD_BYTES`].
pub(crate) fn keep_head(head: &mut Vec<u8>, chunk: &[u8]) {
    if head.len() < PART_HEAD_BYTES {
        head.extend_from_slice(&chunk[..chunk.len().min(PART_HEAD_BYTES - head.len())]);
    }
}

/// A part's SOP Class and Instance UIDs from the file meta group at its start.
pub(crate) fn part_uids(head: &[u8]) -> Option<(String, String)> {
    match read_layout(&mut &head[..]) {
        Ok(FileLayout::Part10(meta)) => Some((meta.media_storage_sop_class_uid, meta.media_storage_sop_instance_uid)),
        _ => None,
    }
}

/// A refused part's UIDs, so that the Failed SOP Sequence says which
/// instance failed (PS3.18 10.5.3.1).
fn name_refused_part(outcome: &mut Outcome, head: &[u8]) {
    if let Some((sop_class, sop_instance)) = part_uids(head) {
        outcome.sop_class = sop_class;
        outcome.sop_instance = sop_instance;
    }
}

async fn read_bytes(mut field: multer::Field<'_>) -> ApiResult<Vec<u8>> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if (bytes.len() + chunk.len()) as u64 > MAX_BUFFERED_PART {
            return Err(ApiError::PayloadTooLarge(format!("a part exceeds {MAX_BUFFERED_PART} bytes")));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

async fn read_text(field: multer::Field<'_>) -> ApiResult<String> {
    String::from_utf8(read_bytes(field).await?).map_err(|_| ApiError::BadRequest("metadata part is not UTF-8".into()))
}

/// A Part 10 file built from DICOM JSON metadata, and the UIDs that name it.
pub(crate) struct JsonInstance {
    pub sop_class: String,
    pub sop_instance: String,
    pub study: String,
    pub series: String,
    /// The file, or why it cannot be stored (a failure reason of PS3.18).
    pub file: Result<Vec<u8>, u16>,
}

impl JsonInstance {
    /// Build the file from a data set whose bulk data is resolved.
    pub(crate) fn build(mut dataset: Dataset) -> JsonInstance {
        let uid = |dataset: &Dataset, tag| dataset.string(tag).unwrap_or_default().to_string();
        let sop_class = uid(&dataset, tags::SOP_CLASS_UID);
        let sop_instance = uid(&dataset, tags::SOP_INSTANCE_UID);
        let study = uid(&dataset, tags::STUDY_INSTANCE_UID);
        let series = uid(&dataset, tags::SERIES_INSTANCE_UID);
        let syntax = dataset
            .string(tags::TRANSFER_SYNTAX_UID)
            .map(str::to_string)
            .unwrap_or_else(|| ts::EXPLICIT_VR_LITTLE_ENDIAN.to_string());
        dataset.remove(tags::TRANSFER_SYNTAX_UID);
        let file = Self::encode(dataset, &sop_class, &sop_instance, &syntax);
        JsonInstance { sop_class, sop_instance, study, series, file }
    }

    fn encode(mut dataset: Dataset, sop_class: &str, sop_instance: &str, syntax: &str) -> Result<Vec<u8>, u16> {
        // Compressed bulk data would need encapsulation from its part's type;
        // JSON uploads are taken in Explicit VR Little Endian.
        if syntax != ts::EXPLICIT_VR_LITTLE_ENDIAN {
            tracing::warn!(%syntax, "STOW-RS JSON upload in a transfer syntax other than Explicit VR Little Endian");
            return Err(0xC000);
        }
        // Text from JSON is Unicode; write it as UTF-8.
        dataset.put(Element::new(tags::SPECIFIC_CHARACTER_SET, VR::CS, Value::Strings(vec!["ISO_IR 192".into()])));
        let charset = haneul_dicom::charset::SpecificCharacterSet::utf8();
        let mut file = encode_file_meta(&NewFileMeta {
            sop_class_uid: sop_class,
            sop_instance_uid: sop_instance,
            transfer_syntax_uid: syntax,
            source_ae_title: None,
        });
        if let Err(error) = write_dataset(&mut file, &dataset, Encoding::EXPLICIT_LE, &charset) {
            tracing::warn!(%error, "STOW-RS JSON instance cannot be encoded");
            return Err(0xC000);
        }
        Ok(file)
    }
}

/// Build a Part 10 file from DICOM JSON metadata (bulk data already
/// resolved) and store it.
async fn store_json_instance(
    state: &WebState,
    ctx: &RequestContext,
    dataset: Dataset,
    study: Option<String>,
) -> Outcome {
    let instance = JsonInstance::build(dataset);
    let file = match instance.file {
        Ok(file) => file,
        Err(reason) => {
            return Outcome {
                sop_class: instance.sop_class,
                sop_instance: instance.sop_instance,
                study: instance.study,
                series: instance.series,
                failure: Some(reason),
                warning: None,
            }
        }
    };
    let archive = state.archive();
    let format = IngestFormat::Part10 { expected_study_uid: study };
    let mut ingest = match archive.begin_ingest(format, ctx.origin.clone()) {
        Ok(ingest) => ingest,
        Err(error) => return audited(state, ctx, Err(error)),
    };
    if let Err(error) = ingest.write(&file).await {
        return audited(state, ctx, Err(error));
    }
    audited(state, ctx, archive.finish_ingest(ingest).await)
}

fn respond(state: &WebState, ctx: &RequestContext, study: Option<&str>, outcomes: Vec<Outcome>) -> Response {
    let service = ctx.service_url(state);
    let mut referenced = Vec::new();
    let mut failed = Vec::new();
    let mut warnings = false;
    for outcome in &outcomes {
        let mut item = Dataset::new();
        item.put(Element::text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, outcome.sop_class.clone()));
        item.put(Element::text(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, outcome.sop_instance.clone()));
        if let Some(reason) = outcome.failure {
            item.put(Element::new(FAILURE_REASON, VR::US, Value::U16(vec![reason])));
            failed.push(item);
            continue;
        }
        if let Some(reason) = outcome.warning {
            warnings = true;
            item.put(Element::new(WARNING_REASON, VR::US, Value::U16(vec![reason])));
        }
        // The Retrieve Instance resource (PS3.18 10.5.3.1): study, series and instance.
        let url =
            format!("{service}/studies/{}/series/{}/instances/{}", outcome.study, outcome.series, outcome.sop_instance);
        item.put(Element::text(tags::RETRIEVE_URL, VR::UR, url));
        referenced.push(item);
    }
    let mut response = Dataset::new();
    let study_uid =
        study.map(str::to_string).or_else(|| outcomes.iter().find(|o| o.failure.is_none()).map(|o| o.study.clone()));
    if let Some(study_uid) = study_uid.filter(|uid| !uid.is_empty()) {
        response.put(Element::text(tags::RETRIEVE_URL, VR::UR, format!("{service}/studies/{study_uid}")));
    }
    let status = if referenced.is_empty() {
        StatusCode::CONFLICT
    } else if !failed.is_empty() || warnings {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    if !referenced.is_empty() {
        response.put(Element::new(REFERENCED_SOP_SEQUENCE, VR::SQ, Value::Sequence(referenced)));
    }
    if !failed.is_empty() {
        response.put(Element::new(FAILED_SOP_SEQUENCE, VR::SQ, Value::Sequence(failed)));
    }
    let mut body = String::new();
    write_object(&mut body, &response, &|_: &str, _: &haneul_dicom::BulkRef| String::new());
    (status, [(header::CONTENT_TYPE, DICOM_JSON)], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> Outcome {
        Outcome {
            sop_class: String::new(),
            sop_instance: String::new(),
            study: String::new(),
            series: String::new(),
            failure: Some(0xC000),
            warning: None,
        }
    }

    #[test]
    fn refused_parts_are_named_from_their_file_meta() {
        let mut file = encode_file_meta(&NewFileMeta {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.7",
            sop_instance_uid: "1.2.3.4",
            transfer_syntax_uid: ts::EXPLICIT_VR_LITTLE_ENDIAN,
            source_ae_title: None,
        });
        file.extend_from_slice(b"\x08\x00\x20\x00DA\xff\xff truncated");
        let mut outcome = refused();
        name_refused_part(&mut outcome, &file);
        assert_eq!(
            (outcome.sop_class.as_str(), outcome.sop_instance.as_str()),
            ("1.2.840.10008.5.1.4.1.1.7", "1.2.3.4")
        );
        let mut garbage = refused();
        name_refused_part(&mut garbage, b"not dicom at all");
        assert!(garbage.sop_instance.is_empty());
    }
}
