//! STOW-RS request parsing without an archive behind it, for the `multipart`
//! fuzz target in `fuzz/`. Not an API: hidden from the docs, and free to
//! change with the fuzz crate.
//!
//! [`stow_multipart`] walks a body the way [`crate::stow`] does, with the
//! same media type parsing, multipart reader, size limits and part readers;
//! where `stow` hands bytes to the archive core, it keeps what the core would
//! get so that the fuzz target can check it.

use std::collections::HashMap;

use bytes::Bytes;
use haneul_dicom::json::read_array;
use haneul_dicom::meta::{encode_file_meta, read_layout, FileLayout, NewFileMeta};
use haneul_dicom::write::{write_dataset, Encoding};
use haneul_dicom::{tags, ts, Dataset, Element, Value, VR};

use crate::error::ApiError;
use crate::media::parse_media_type;
use crate::qido::DICOM_JSON;
use crate::stow::{multipart_error, read_bytes, read_text, PART_HEAD_BYTES};

/// What a STOW-RS body held.
#[derive(Debug, Default)]
pub struct StowParts {
    /// `application/dicom` parts: their SOP Instance UID when the start of
    /// the part has a readable file meta group (what a refusal is named by).
    pub part10: Vec<Option<String>>,
    /// Part 10 files built from the JSON metadata parts, as `stow` would
    /// store them; `None` for an instance `stow` refuses before storing.
    pub from_json: Vec<Option<Vec<u8>>>,
}

/// Parse a STOW-RS request: `content_type` is the request's Content-Type,
/// `body` its bytes in the chunks they arrived in, `limit` the largest body
/// accepted (`WebConfig::max_upload_bytes`). The error is the one `stow`
/// would answer with.
pub async fn stow_multipart(content_type: &str, body: Vec<Bytes>, limit: u64) -> Result<StowParts, ApiError> {
    // The request checks of `stow`, in the same order.
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
    let constraints = multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(limit));
    let stream = futures_util::stream::iter(body.into_iter().map(Ok::<_, std::io::Error>));
    let mut multipart = multer::Multipart::with_constraints(stream, boundary, constraints);

    let mut parts = StowParts::default();
    let mut metadata: Vec<String> = Vec::new();
    let mut bulk: HashMap<String, Vec<u8>> = HashMap::new();
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        let field_type = field
            .content_type()
            .map(|mime| mime.essence_str().to_ascii_lowercase())
            .unwrap_or_else(|| part_type.clone());
        let location = field.headers().get("content-location").and_then(|v| v.to_str().ok()).map(str::to_string);
        match field_type.as_str() {
            "application/dicom" => {
                // `store_part` streams the part into ingest and keeps its
                // start to name the instance if it is refused.
                let mut head = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    if head.len() < PART_HEAD_BYTES {
                        head.extend_from_slice(&chunk[..chunk.len().min(PART_HEAD_BYTES - head.len())]);
                    }
                }
                let named = match read_layout(&mut &head[..]) {
                    Ok(FileLayout::Part10(meta)) => Some(meta.media_storage_sop_instance_uid),
                    _ => None,
                };
                parts.part10.push(named);
            }
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
        parts.from_json.extend(datasets.into_iter().map(json_instance_file));
    }
    if parts.part10.is_empty() && parts.from_json.is_empty() {
        return Err(ApiError::BadRequest("no instance in the request".into()));
    }
    Ok(parts)
}

/// The Part 10 file `store_json_instance` builds from a JSON data set before
/// handing it to ingest; `None` where it refuses the instance instead.
fn json_instance_file(mut dataset: Dataset) -> Option<Vec<u8>> {
    let uid = |dataset: &Dataset, tag| dataset.string(tag).unwrap_or_default().to_string();
    let sop_class = uid(&dataset, tags::SOP_CLASS_UID);
    let sop_instance = uid(&dataset, tags::SOP_INSTANCE_UID);
    let syntax = dataset
        .string(tags::TRANSFER_SYNTAX_UID)
        .map(str::to_string)
        .unwrap_or_else(|| ts::EXPLICIT_VR_LITTLE_ENDIAN.to_string());
    dataset.remove(tags::TRANSFER_SYNTAX_UID);
    if syntax != ts::EXPLICIT_VR_LITTLE_ENDIAN {
        return None;
    }
    dataset.put(Element::new(tags::SPECIFIC_CHARACTER_SET, VR::CS, Value::Strings(vec!["ISO_IR 192".into()])));
    let charset = haneul_dicom::charset::SpecificCharacterSet::utf8();
    let mut file = encode_file_meta(&NewFileMeta {
        sop_class_uid: &sop_class,
        sop_instance_uid: &sop_instance,
        transfer_syntax_uid: &syntax,
        source_ae_title: None,
    });
    write_dataset(&mut file, &dataset, Encoding::EXPLICIT_LE, &charset).ok()?;
    Some(file)
}
