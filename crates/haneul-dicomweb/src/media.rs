//! Content negotiation: parsing `Accept` the way real clients send it
//! (quoted or unquoted `type=`, `*/*`, q-values) and picking what to answer.

use axum::http::HeaderMap;

use crate::error::ApiError;

/// One media range from an `Accept` header.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaRange {
    /// Lower-cased `type/subtype`.
    pub essence: String,
    /// Lower-cased parameter names with unquoted values.
    pub params: Vec<(String, String)>,
    pub quality: f32,
}

impl MediaRange {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// `type` of a multipart range, e.g. `application/dicom`.
    pub fn part_type(&self) -> Option<String> {
        self.param("type").map(|t| t.to_ascii_lowercase())
    }

    pub fn transfer_syntax(&self) -> Option<&str> {
        self.param("transfer-syntax")
    }

    fn matches(&self, essence: &str) -> bool {
        if self.essence == "*/*" || self.essence == essence {
            return true;
        }
        let (kind, _) = essence.split_once('/').unwrap_or((essence, ""));
        self.essence.strip_suffix("/*") == Some(kind)
    }
}

/// Parse one media type with parameters (also used for `Content-Type`).
pub fn parse_media_type(text: &str) -> MediaRange {
    let mut parts = split_outside_quotes(text, ';').into_iter();
    let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let mut params = Vec::new();
    let mut quality = 1.0;
    for part in parts {
        let Some((name, value)) = part.split_once('=') else { continue };
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim().trim_matches('"').to_string();
        if name == "q" {
            quality = value.parse().unwrap_or(1.0);
        } else {
            params.push((name, value));
        }
    }
    MediaRange { essence, params, quality }
}

/// Split on a separator that is not inside double quotes.
fn split_outside_quotes(text: &str, separator: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            c if c == separator && !quoted => parts.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    parts.push(current);
    parts
}

/// The ranges of every `Accept` header, best first; `*/*` when absent.
pub fn accepted(headers: &HeaderMap) -> Vec<MediaRange> {
    let mut ranges: Vec<MediaRange> = headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| split_outside_quotes(value, ','))
        .filter(|range| !range.trim().is_empty())
        .map(|range| parse_media_type(&range))
        .filter(|range| range.quality > 0.0)
        .collect();
    if ranges.is_empty() {
        ranges.push(parse_media_type("*/*"));
    }
    ranges.sort_by(|a, b| b.quality.partial_cmp(&a.quality).unwrap_or(std::cmp::Ordering::Equal));
    ranges
}

/// What to send for a transfer syntax request: the stored form, or a given syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyntaxChoice {
    AsStored,
    Syntax(String),
}

impl SyntaxChoice {
    /// The choice a `transfer-syntax` parameter makes; `default` (a UID, or
    /// `*` for as stored) when it is absent.
    fn from_param(value: Option<&str>, default: &str) -> SyntaxChoice {
        match value.map(str::trim).filter(|uid| !uid.is_empty()).unwrap_or(default) {
            "*" => SyntaxChoice::AsStored,
            uid => SyntaxChoice::Syntax(uid.to_string()),
        }
    }
}

/// Explicit VR Little Endian: the default for `application/dicom` and
/// `application/octet-stream` without a transfer-syntax parameter (PS3.18 8.7.3).
pub const DEFAULT_SYNTAX: &str = "1.2.840.10008.1.2.1";

/// How instances are to be sent in a retrieve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DicomAccept {
    pub syntax: SyntaxChoice,
    /// `multipart/related` (else a single `application/dicom` body).
    pub multipart: bool,
}

/// Negotiate a retrieve of instances (`application/dicom`).
pub fn negotiate_dicom(headers: &HeaderMap, allow_single: bool) -> Result<DicomAccept, ApiError> {
    for range in accepted(headers) {
        if range.essence == "multipart/related" {
            match range.part_type().as_deref() {
                None | Some("application/dicom") => {
                    return Ok(DicomAccept {
                        syntax: SyntaxChoice::from_param(range.transfer_syntax(), DEFAULT_SYNTAX),
                        multipart: true,
                    })
                }
                _ => continue,
            }
        }
        if range.matches("multipart/related") && range.essence == "*/*" {
            return Ok(DicomAccept { syntax: SyntaxChoice::Syntax(DEFAULT_SYNTAX.into()), multipart: true });
        }
        if allow_single && range.essence == "application/dicom" {
            return Ok(DicomAccept {
                syntax: SyntaxChoice::from_param(range.transfer_syntax(), DEFAULT_SYNTAX),
                multipart: false,
            });
        }
    }
    Err(ApiError::NotAcceptable("this resource is available as multipart/related; type=\"application/dicom\"".into()))
}

/// Whether a JSON answer (`application/dicom+json` or `application/json`) is acceptable.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let acceptable = accepted(headers)
        .iter()
        .any(|range| range.matches("application/dicom+json") || range.matches("application/json"));
    if acceptable {
        Ok(())
    } else {
        Err(ApiError::NotAcceptable("this resource is available as application/dicom+json".into()))
    }
}

/// How frames or bulk data are to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameAccept {
    pub syntax: SyntaxChoice,
    pub multipart: bool,
    /// Media type asked for each part (e.g. `application/octet-stream`, `image/jpeg`).
    pub part_type: String,
}

/// Negotiate frames or bulk data.
pub fn negotiate_octets(headers: &HeaderMap) -> Result<FrameAccept, ApiError> {
    for range in accepted(headers) {
        if range.essence == "multipart/related" {
            let part_type = range.part_type().unwrap_or_else(|| "application/octet-stream".into());
            let default = if part_type == "application/octet-stream" { DEFAULT_SYNTAX } else { "*" };
            return Ok(FrameAccept {
                syntax: SyntaxChoice::from_param(range.transfer_syntax(), default),
                multipart: true,
                part_type,
            });
        }
        if range.essence == "*/*" {
            return Ok(FrameAccept {
                syntax: SyntaxChoice::Syntax(DEFAULT_SYNTAX.into()),
                multipart: true,
                part_type: "application/octet-stream".into(),
            });
        }
        if range.essence == "application/octet-stream" {
            return Ok(FrameAccept {
                syntax: SyntaxChoice::from_param(range.transfer_syntax(), DEFAULT_SYNTAX),
                multipart: false,
                part_type: range.essence.clone(),
            });
        }
        if range.essence.starts_with("image/") || range.essence.starts_with("video/") {
            return Ok(FrameAccept {
                syntax: SyntaxChoice::from_param(range.transfer_syntax(), "*"),
                multipart: false,
                part_type: range.essence.clone(),
            });
        }
    }
    Err(ApiError::NotAcceptable("frames are available as multipart/related or application/octet-stream".into()))
}

/// The image format a rendered resource is asked in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    Jpeg,
    Png,
}

pub fn negotiate_rendered(headers: &HeaderMap) -> Result<ImageKind, ApiError> {
    for range in accepted(headers) {
        if range.matches("image/jpeg") && range.essence != "image/png" {
            return Ok(ImageKind::Jpeg);
        }
        if range.matches("image/png") {
            return Ok(ImageKind::Png);
        }
    }
    Err(ApiError::NotAcceptable("rendered images are available as image/jpeg or image/png".into()))
}

/// A boundary for a multipart response.
pub fn new_boundary() -> String {
    format!("haneul-{}", uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(accept: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(axum::http::header::ACCEPT, HeaderValue::from_str(accept).expect("header"));
        map
    }

    #[test]
    fn quoted_and_unquoted_type_parameters() {
        for accept in [
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
            "multipart/related; type=application/dicom; transfer-syntax=*",
            "multipart/related;type=\"application/dicom\";transfer-syntax=\"*\"",
        ] {
            let choice = negotiate_dicom(&headers(accept), false).expect(accept);
            assert_eq!(choice.syntax, SyntaxChoice::AsStored, "{accept}");
        }
    }

    #[test]
    fn defaults_and_wildcards() {
        let choice = negotiate_dicom(&headers("*/*"), false).expect("any");
        assert_eq!(choice.syntax, SyntaxChoice::Syntax(DEFAULT_SYNTAX.into()));
        assert!(require_json(&headers("*/*")).is_ok());
        assert!(require_json(&headers("application/dicom+json")).is_ok());
        assert!(require_json(&headers("image/png")).is_err());
        let frames = negotiate_octets(&headers("multipart/related; type=application/octet-stream; transfer-syntax=*"))
            .expect("frames");
        assert_eq!(frames.syntax, SyntaxChoice::AsStored);
        // dicomweb-client's default for frames, and image types without a syntax: as stored.
        for accept in ["multipart/related; type=\"*/*\"", "multipart/related; type=\"image/jpeg\"", "image/jp2"] {
            assert_eq!(negotiate_octets(&headers(accept)).expect(accept).syntax, SyntaxChoice::AsStored, "{accept}");
        }
        assert_eq!(negotiate_rendered(&headers("image/*")).expect("image"), ImageKind::Jpeg);
        assert_eq!(negotiate_rendered(&headers("image/png")).expect("png"), ImageKind::Png);
    }

    #[test]
    fn q_values_order_the_choices() {
        let ranges = accepted(&headers("image/png;q=0.5, image/jpeg"));
        assert_eq!(ranges[0].essence, "image/jpeg");
        assert_eq!(negotiate_rendered(&headers("image/png, image/jpeg;q=0")).expect("png"), ImageKind::Png);
    }
}
