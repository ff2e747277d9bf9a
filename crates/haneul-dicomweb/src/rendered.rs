//! Pixel resources: frames (as stored, or decompressed), rendered images and
//! thumbnails, and whole-instance decompression; decoding and the display
//! pipeline are haneul-pixel's.

use std::sync::Arc;

use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use haneul_core::{Archive, StoredInstance};
use haneul_dicom::header::InstanceHeader;
use haneul_dicom::read::PixelDataInfo;
use haneul_dicom::write::{write_dataset, Encoding};
use haneul_dicom::{tags, ts, Dataset, Element, Value, VR};
use haneul_pixel::{ImageFormat, ImageInfo, RenderOptions};

use crate::error::{ApiError, ApiResult};
use crate::media::{negotiate_octets, negotiate_rendered, new_boundary, ImageKind, SyntaxChoice};
use crate::qido::query_pairs;
use haneul_core::audit::Action;

use crate::retrieve::{stored_instances, Target};
use crate::{RequestContext, WebState};

/// Values up to this size are read into memory with the header (LUTs,
/// overlays); Pixel Data itself is never part of the header.
const HEADER_INLINE_LIMIT: u64 = 64 << 20;

pub fn can_decompress(stored: &ts::TransferSyntax) -> bool {
    haneul_pixel::can_decode(stored.uid)
}

fn pixel_error(error: haneul_pixel::PixelError) -> ApiError {
    ApiError::NotAcceptable(format!("pixel data cannot be served this way: {error}"))
}

/// An image instance ready to hand out frames.
struct Image {
    instance: StoredInstance,
    header: InstanceHeader,
    info: ImageInfo,
    pixel: PixelDataInfo,
}

async fn open_image(archive: &Arc<Archive>, instance: StoredInstance) -> ApiResult<Image> {
    let header = archive.read_header(&instance, HEADER_INLINE_LIMIT).await?;
    let pixel = header
        .parsed
        .pixel_data
        .clone()
        .ok_or_else(|| ApiError::NotFound(format!("instance {} has no pixel data", instance.sop_uid)))?;
    let info = ImageInfo::from_dataset(&header.parsed.dataset)
        .map_err(|error| ApiError::NotFound(format!("instance {} is not an image: {error}", instance.sop_uid)))?;
    Ok(Image { instance, header, info, pixel })
}

impl Image {
    fn syntax(&self) -> &'static ts::TransferSyntax {
        self.header.transfer_syntax
    }

    /// Absolute file offset of a data-set-relative offset.
    fn at(&self, offset: u64) -> u64 {
        self.header.dataset_offset + offset
    }

    /// The stored bytes of frame `index` (0-based): native samples as stored,
    /// or the frame's fragments concatenated.
    async fn stored_frame(&self, archive: &Arc<Archive>, index: u32) -> ApiResult<Vec<u8>> {
        if index >= self.info.number_of_frames {
            return Err(ApiError::NotFound(format!(
                "frame {} does not exist (the instance has {})",
                index + 1,
                self.info.number_of_frames
            )));
        }
        if self.syntax().deflated {
            return Err(ApiError::NotAcceptable(
                "frames of deflated instances are not served; retrieve the instance".into(),
            ));
        }
        if self.pixel.length.is_some() {
            let length = self.info.frame_length() as u64;
            let offset = self.at(self.pixel.offset) + length * u64::from(index);
            return Ok(archive.read_range(&self.instance, offset, length).await?);
        }
        let lengths: Vec<u64> = self.pixel.fragments.iter().map(|(_, length)| *length).collect();
        let offset_table = match self.pixel.offset_table {
            Some((offset, length)) if length > 0 => archive.read_range(&self.instance, self.at(offset), length).await?,
            _ => Vec::new(),
        };
        let extended = match self.header.parsed.dataset.get(tags::EXTENDED_OFFSET_TABLE).map(|e| &e.value) {
            Some(Value::Bytes(bytes)) => Some(bytes.clone()),
            _ => None,
        };
        // Frame boundaries may need a look at fragment heads (markers); read them ahead.
        let mut heads = Vec::with_capacity(self.pixel.fragments.len());
        let needs_heads =
            offset_table.is_empty() && extended.is_none() && lengths.len() != self.info.number_of_frames as usize;
        if needs_heads {
            for (offset, length) in &self.pixel.fragments {
                heads.push(archive.read_range(&self.instance, self.at(*offset), (*length).min(16)).await?);
            }
        }
        let mut head = |i: usize| heads.get(i).cloned().unwrap_or_default();
        let head_fn: Option<&mut dyn FnMut(usize) -> Vec<u8>> = if needs_heads { Some(&mut head) } else { None };
        let groups = haneul_pixel::frames_of_fragments(
            self.info.number_of_frames,
            &lengths,
            &offset_table,
            extended.as_deref(),
            head_fn,
        )
        .map_err(pixel_error)?;
        let group = groups
            .get(index as usize)
            .ok_or_else(|| ApiError::NotFound(format!("frame {} does not exist", index + 1)))?;
        let mut bytes = Vec::new();
        for &fragment in group {
            let (offset, length) = self.pixel.fragments[fragment];
            bytes.extend(archive.read_range(&self.instance, self.at(offset), length).await?);
        }
        Ok(bytes)
    }

    /// Frame `index` of a big-endian OW value of 8- or 1-bit samples: the value
    /// is swapped in 16-bit words as a whole, so the word-aligned span that
    /// holds the frame is read and swapped before the frame is cut out.
    async fn big_endian_word_frame(&self, archive: &Arc<Archive>, index: u32) -> ApiResult<Vec<u8>> {
        if index >= self.info.number_of_frames {
            return Err(ApiError::NotFound(format!(
                "frame {} does not exist (the instance has {})",
                index + 1,
                self.info.number_of_frames
            )));
        }
        let length = self.info.frame_length() as u64;
        let value_length = self.pixel.length.unwrap_or(0);
        let start = length * u64::from(index);
        let aligned = start & !1;
        let end = ((start + length + 1) & !1).min(value_length);
        let short = || ApiError::NotFound(format!("frame {} lies beyond the pixel data", index + 1));
        let span = end.checked_sub(aligned).ok_or_else(short)?;
        let mut words = archive.read_range(&self.instance, self.at(self.pixel.offset) + aligned, span).await?;
        haneul_pixel::big_endian_value_to_little_endian(&mut words, self.info.bits_allocated, VR::OW);
        let skip = (start - aligned) as usize;
        words.get(skip..skip + length as usize).map(<[u8]>::to_vec).ok_or_else(short)
    }

    /// Frame `index` as native little-endian samples, decoding if stored compressed.
    async fn native_frame(&self, archive: &Arc<Archive>, index: u32) -> ApiResult<(ImageInfo, Vec<u8>)> {
        if self.syntax().big_endian && self.pixel.vr == VR::OW && self.info.bits_allocated < 16 {
            return Ok((self.info.clone(), self.big_endian_word_frame(archive, index).await?));
        }
        let mut bytes = self.stored_frame(archive, index).await?;
        let syntax = self.syntax().uid;
        if !self.syntax().encapsulated {
            if self.syntax().big_endian {
                haneul_pixel::swap_to_little_endian(&mut bytes, self.info.bits_allocated);
            }
            return Ok((self.info.clone(), bytes));
        }
        let info = self.info.clone();
        tokio::task::spawn_blocking(move || {
            let decoded = haneul_pixel::decode_frame(&info, syntax, &bytes).map_err(pixel_error)?;
            Ok((info.after_decoding(&decoded), decoded.bytes))
        })
        .await
        .map_err(|error| ApiError::Internal(error.to_string()))?
    }
}

/// Parse a frame list (`1,3,5`, 1-based) into 0-based indexes.
fn frame_numbers(text: &str) -> ApiResult<Vec<u32>> {
    let numbers: Vec<u32> = text
        .split(',')
        .map(|n| n.trim().parse::<u32>().ok().filter(|n| *n >= 1).map(|n| n - 1))
        .collect::<Option<_>>()
        .ok_or_else(|| ApiError::BadRequest(format!("{text:?} is not a list of frame numbers")))?;
    if numbers.is_empty() || numbers.len() > 10_000 {
        return Err(ApiError::BadRequest(format!("{text:?} is not a list of frame numbers")));
    }
    Ok(numbers)
}

/// The media type of a compressed syntax's frames (PS3.18 Table 8.7.3-2).
fn frame_media_type(syntax: &str) -> Option<&'static str> {
    Some(match syntax {
        "1.2.840.10008.1.2.4.50" | "1.2.840.10008.1.2.4.51" | "1.2.840.10008.1.2.4.57" | "1.2.840.10008.1.2.4.70" => {
            "image/jpeg"
        }
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => "image/jls",
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => "image/jp2",
        "1.2.840.10008.1.2.4.92" | "1.2.840.10008.1.2.4.93" => "image/jpx",
        "1.2.840.10008.1.2.4.201" | "1.2.840.10008.1.2.4.202" | "1.2.840.10008.1.2.4.203" => "image/jphc",
        _ => return None,
    })
}

pub async fn frames(
    state: &WebState,
    ctx: &RequestContext,
    headers: &HeaderMap,
    target: Target,
    list: &str,
) -> ApiResult<Response> {
    let accept = negotiate_octets(headers)?;
    let numbers = frame_numbers(list)?;
    let instance = stored_instances(state, ctx, &target, Some(Action::Retrieve), "frames")
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::NotFound("no such instance".into()))?;
    let archive = state.archive();
    let image = open_image(archive, instance).await?;
    let stored = image.syntax();
    // Decide how frames go out, once for all of them.
    let as_stored = match &accept.syntax {
        SyntaxChoice::AsStored => true,
        SyntaxChoice::Syntax(uid) if *uid == stored.uid && stored.encapsulated => true,
        SyntaxChoice::Syntax(uid) => {
            let target =
                ts::lookup(uid).ok_or_else(|| ApiError::NotAcceptable(format!("unknown transfer syntax {uid}")))?;
            if target.encapsulated {
                return Err(ApiError::NotAcceptable(format!(
                    "frames are stored in {} and cannot be sent in {uid}",
                    stored.uid
                )));
            }
            false
        }
    };
    let wants_image = accept.part_type.starts_with("image/") || accept.part_type.starts_with("video/");
    if wants_image && !(stored.encapsulated && frame_media_type(stored.uid) == Some(accept.part_type.as_str())) {
        return Err(ApiError::NotAcceptable(format!(
            "frames are stored in {}, not as {}",
            stored.uid, accept.part_type
        )));
    }
    let mut parts = Vec::with_capacity(numbers.len());
    for &index in &numbers {
        let (bytes, syntax) = if as_stored && stored.encapsulated {
            (image.stored_frame(archive, index).await?, stored.uid)
        } else {
            (image.native_frame(archive, index).await?.1, ts::EXPLICIT_VR_LITTLE_ENDIAN)
        };
        parts.push((bytes, syntax));
    }
    let part_type = |syntax: &str| {
        if wants_image {
            format!("{}; transfer-syntax={syntax}", accept.part_type)
        } else {
            format!("application/octet-stream; transfer-syntax={syntax}")
        }
    };
    if !accept.multipart && parts.len() == 1 {
        let (bytes, syntax) = parts.remove(0);
        return Ok(([(header::CONTENT_TYPE, part_type(syntax))], bytes).into_response());
    }
    let boundary = new_boundary();
    let mut body = Vec::with_capacity(parts.iter().map(|(b, _)| b.len() + 128).sum());
    for (bytes, syntax) in &parts {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Type: {}\r\n\r\n", part_type(syntax)).as_bytes());
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let outer = if wants_image { accept.part_type.clone() } else { "application/octet-stream".into() };
    let content_type = format!("multipart/related; type=\"{outer}\"; boundary={boundary}");
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// Rendering parameters from the query string (PS3.18 8.3.5.1.3).
fn render_options(raw: &Option<String>, kind: ImageKind, thumbnail: bool) -> ApiResult<RenderOptions> {
    let mut options = RenderOptions {
        format: match kind {
            ImageKind::Jpeg => ImageFormat::Jpeg,
            ImageKind::Png => ImageFormat::Png,
        },
        quality: if thumbnail { 75 } else { 90 },
        window: None,
        viewport: None,
    };
    for (name, value) in query_pairs(raw) {
        match name.as_str() {
            "window" => {
                options.window =
                    Some(haneul_pixel::parse_window(&value).map_err(|e| ApiError::BadRequest(format!("window: {e}")))?)
            }
            "viewport" => {
                options.viewport = Some(
                    haneul_pixel::parse_viewport(&value).map_err(|e| ApiError::BadRequest(format!("viewport: {e}")))?,
                )
            }
            "quality" => {
                options.quality = value
                    .trim()
                    .parse::<u8>()
                    .ok()
                    .filter(|q| (1..=100).contains(q))
                    .ok_or_else(|| ApiError::BadRequest(format!("quality {value:?} is not 1 to 100")))?
            }
            // Annotations, ICC profiles and charset are not applied; the image is unaffected.
            "annotation" | "iccprofile" | "charset" | "accept" => {}
            other => return Err(ApiError::BadRequest(format!("unknown rendering parameter {other:?}"))),
        }
    }
    if thumbnail && options.viewport.is_none() {
        options.viewport = Some(haneul_pixel::Viewport { width: 128, height: 128, source: None });
    }
    Ok(options)
}

async fn render_one(
    archive: &Arc<Archive>,
    instance: StoredInstance,
    frame: u32,
    options: &RenderOptions,
) -> ApiResult<Vec<u8>> {
    let image = open_image(archive, instance).await?;
    let (info, native) = image.native_frame(archive, frame).await?;
    let options = options.clone();
    tokio::task::spawn_blocking(move || {
        haneul_pixel::render_frame(&info, frame, &native, &options).map_err(pixel_error)
    })
    .await
    .map_err(|error| ApiError::Internal(error.to_string()))?
}

/// The instance that represents a study or series in a thumbnail: the
/// middle image of the first series.
fn representative(instances: &[StoredInstance]) -> Option<StoredInstance> {
    let first_series = &instances.first()?.series_uid;
    let of_series: Vec<&StoredInstance> = instances.iter().filter(|i| &i.series_uid == first_series).collect();
    of_series.get(of_series.len() / 2).map(|i| (*i).clone())
}

#[allow(clippy::too_many_arguments)]
pub async fn rendered(
    state: &WebState,
    ctx: &RequestContext,
    headers: &HeaderMap,
    target: Target,
    frames: Option<&str>,
    raw: &Option<String>,
    thumbnail: bool,
) -> ApiResult<Response> {
    let kind = negotiate_rendered(headers)?;
    let options = render_options(raw, kind, thumbnail)?;
    let media_type = match kind {
        ImageKind::Jpeg => "image/jpeg",
        ImageKind::Png => "image/png",
    };
    let archive = state.archive();
    let what = if thumbnail { "thumbnail" } else { "rendered" };
    let instances = stored_instances(state, ctx, &target, Some(Action::View), what).await?;
    let single = |bytes: Vec<u8>| ([(header::CONTENT_TYPE, media_type)], bytes).into_response();
    if thumbnail || target.instance.is_some() {
        let instance =
            if target.instance.is_some() { instances.into_iter().next() } else { representative(&instances) }
                .ok_or_else(|| ApiError::NotFound("nothing to render".into()))?;
        let numbers = match frames {
            Some(list) => frame_numbers(list)?,
            None => vec![0],
        };
        if numbers.len() == 1 || thumbnail {
            return Ok(single(render_one(archive, instance, numbers[0], &options).await?));
        }
        let mut images = Vec::with_capacity(numbers.len());
        for frame in numbers {
            images.push(render_one(archive, instance.clone(), frame, &options).await?);
        }
        return Ok(multipart_images(images, media_type));
    }
    // A rendered study or series: the first frame of each of its images.
    let mut images = Vec::with_capacity(instances.len());
    for instance in instances {
        match render_one(archive, instance, 0, &options).await {
            Ok(image) => images.push(image),
            // Non-image instances (reports, documents) in a study are skipped.
            Err(ApiError::NotFound(_)) => continue,
            Err(error) => return Err(error),
        }
    }
    if images.is_empty() {
        return Err(ApiError::NotFound("no image in this resource can be rendered".into()));
    }
    Ok(multipart_images(images, media_type))
}

fn multipart_images(images: Vec<Vec<u8>>, media_type: &str) -> Response {
    let boundary = new_boundary();
    let mut body = Vec::with_capacity(images.iter().map(|i| i.len() + 96).sum());
    for image in &images {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Type: {media_type}\r\n\r\n").as_bytes());
        body.extend_from_slice(image);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let content_type = format!("multipart/related; type=\"{media_type}\"; boundary={boundary}");
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Render one instance for WADO-URI.
pub async fn render_instance(
    archive: &Arc<Archive>,
    instance: StoredInstance,
    frame: u32,
    options: &RenderOptions,
) -> ApiResult<Vec<u8>> {
    render_one(archive, instance, frame, options).await
}

/// The data set of a compressed instance decompressed to Explicit VR Little
/// Endian (without file meta information).
pub async fn decompress_instance(archive: &Arc<Archive>, instance: &StoredInstance) -> ApiResult<Vec<u8>> {
    let (mut dataset, decompressed) = decompress(archive, instance).await?;
    if instance.corrected {
        let corrections = archive.study_corrections(&instance.study_uid).await?;
        haneul_core::corrections::apply_to_dataset(&mut dataset, &corrections.to_apply(&instance.series_uid));
    }
    tokio::task::spawn_blocking(move || {
        decompressed.apply(&mut dataset);
        encode_dataset(&dataset)
    })
    .await
    .map_err(|error| ApiError::Internal(error.to_string()))?
}

/// Encapsulated Pixel Data as its value reads in Explicit VR Little Endian,
/// the default syntax of bulk data: every frame decoded, one after another.
pub async fn decompressed_pixel_data(archive: &Arc<Archive>, instance: &StoredInstance) -> ApiResult<Vec<u8>> {
    Ok(decompress(archive, instance).await?.1.pixel_data)
}

/// The header data set of a compressed instance and its decoded pixel data.
async fn decompress(
    archive: &Arc<Archive>,
    instance: &StoredInstance,
) -> ApiResult<(Dataset, haneul_pixel::DecompressedInstance)> {
    let image = open_image(archive, instance.clone()).await?;
    let last = image.pixel.fragments.last().map(|(offset, length)| offset + length).unwrap_or(image.pixel.offset);
    // Items start 8 bytes before their data; the whole value runs from the
    // Basic Offset Table item to the sequence delimiter.
    let start = image.pixel.offset_table.map(|(offset, _)| offset.saturating_sub(8)).unwrap_or(image.pixel.offset);
    let value = archive.read_range(instance, image.at(start), last + 8 - start).await?;
    let syntax = image.syntax().uid;
    let info = image.info.clone();
    let dataset = image.header.parsed.dataset.clone();
    tokio::task::spawn_blocking(move || {
        let extended = match dataset.get(tags::EXTENDED_OFFSET_TABLE).map(|e| &e.value) {
            Some(Value::Bytes(bytes)) => Some(bytes.clone()),
            _ => None,
        };
        let decompressed = haneul_pixel::decompress_pixel_data(&info, syntax, &value, VR::OB, extended.as_deref())
            .map_err(pixel_error)?;
        Ok((dataset, decompressed))
    })
    .await
    .map_err(|error| ApiError::Internal(error.to_string()))?
}

/// Encode in Explicit VR Little Endian, in the data set's own character set
/// when it can carry every value, else in UTF-8.
fn encode_dataset(dataset: &Dataset) -> ApiResult<Vec<u8>> {
    let terms = dataset.strings(tags::SPECIFIC_CHARACTER_SET).to_vec();
    let own = haneul_dicom::charset::SpecificCharacterSet::from_terms(&terms);
    let mut out = Vec::new();
    if write_dataset(&mut out, dataset, Encoding::EXPLICIT_LE, &own).is_ok() {
        return Ok(out);
    }
    let mut utf8 = dataset.clone();
    utf8.put(Element::new(tags::SPECIFIC_CHARACTER_SET, VR::CS, Value::Strings(vec!["ISO_IR 192".into()])));
    out.clear();
    write_dataset(&mut out, &utf8, Encoding::EXPLICIT_LE, &haneul_dicom::charset::SpecificCharacterSet::utf8())
        .map_err(|error| ApiError::Internal(format!("decompressed instance cannot be encoded: {error}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_lists() {
        assert_eq!(frame_numbers("1").expect("one"), vec![0]);
        assert_eq!(frame_numbers("1, 3,5").expect("list"), vec![0, 2, 4]);
        assert!(frame_numbers("0").is_err());
        assert!(frame_numbers("a").is_err());
        assert!(frame_numbers("").is_err());
    }

    #[test]
    fn rendering_parameters() {
        let options = render_options(&Some("window=40,400&viewport=256,256&quality=50".into()), ImageKind::Jpeg, false)
            .expect("valid");
        assert_eq!(options.quality, 50);
        assert!(options.window.is_some() && options.viewport.is_some());
        assert!(render_options(&Some("quality=0".into()), ImageKind::Jpeg, false).is_err());
        assert!(render_options(&Some("window=abc".into()), ImageKind::Jpeg, false).is_err());
        assert!(render_options(&Some("zoom=2".into()), ImageKind::Jpeg, false).is_err());
        assert!(render_options(&None, ImageKind::Png, true).expect("thumbnail").viewport.is_some());
    }
}
