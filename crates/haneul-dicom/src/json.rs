//! The DICOM JSON model (PS3.18 F.2): writing data sets with `BulkDataURI`
//! for large binary values, and reading them back (STOW-RS metadata).
//!
//! Written for speed: metadata of a whole series is rendered by appending
//! to one `String`, without building an intermediate JSON tree.

use std::fmt::Write as _;

use dicom_core::{Tag, VR};

use crate::model::{tag_from_u32, BulkRef, Dataset, Element, Value};

/// How to name bulk data in `BulkDataURI`: given the tag path of the
/// element (e.g. `7FE00010`, or `00540016.0.00181072` inside a sequence)
/// and its location, return the URI.
pub trait BulkUri {
    fn uri(&self, path: &str, bulk: &BulkRef) -> String;
}

impl<F: Fn(&str, &BulkRef) -> String> BulkUri for F {
    fn uri(&self, path: &str, bulk: &BulkRef) -> String {
        self(path, bulk)
    }
}

/// Write `dataset` as a DICOM JSON object.
pub fn write_object(out: &mut String, dataset: &Dataset, bulk: &dyn BulkUri) {
    write_dataset(out, dataset, bulk, "");
}

/// Write several data sets as a JSON array (a QIDO or metadata response).
pub fn write_array<'a>(out: &mut String, datasets: impl IntoIterator<Item = &'a Dataset>, bulk: &dyn BulkUri) {
    out.push('[');
    for (index, dataset) in datasets.into_iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        write_object(out, dataset, bulk);
    }
    out.push(']');
}

fn write_dataset(out: &mut String, dataset: &Dataset, bulk: &dyn BulkUri, path_prefix: &str) {
    out.push('{');
    let mut first = true;
    for element in dataset.iter() {
        // Group lengths do not belong in the JSON model.
        if element.tag.element() == 0x0000 {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        let key = format!("{:04X}{:04X}", element.tag.group(), element.tag.element());
        let _ = write!(out, "\"{key}\":");
        let path = if path_prefix.is_empty() { key } else { format!("{path_prefix}.{key}") };
        write_element(out, element, bulk, &path);
    }
    out.push('}');
}

fn write_element(out: &mut String, element: &Element, bulk: &dyn BulkUri, path: &str) {
    let vr = element.vr;
    let _ = write!(out, "{{\"vr\":\"{}\"", vr_str(vr));
    match &element.value {
        Value::Empty => {}
        Value::Sequence(items) => {
            out.push_str(",\"Value\":[");
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_dataset(out, item, bulk, &format!("{path}.{index}"));
            }
            out.push(']');
        }
        Value::Bulk(reference) => {
            out.push_str(",\"BulkDataURI\":");
            write_json_string(out, &bulk.uri(path, reference));
        }
        Value::Bytes(bytes) => {
            out.push_str(",\"InlineBinary\":\"");
            base64_encode(out, bytes);
            out.push('"');
        }
        Value::Strings(values) if vr == VR::PN => {
            out.push_str(",\"Value\":[");
            for (index, name) in values.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_person_name(out, name);
            }
            out.push(']');
        }
        Value::Strings(values) if matches!(vr, VR::DS | VR::IS) => {
            out.push_str(",\"Value\":[");
            for (index, value) in values.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_decimal(out, value);
            }
            out.push(']');
        }
        Value::Strings(values) => {
            out.push_str(",\"Value\":[");
            for (index, value) in values.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                if value.is_empty() {
                    out.push_str("null");
                } else {
                    write_json_string(out, value);
                }
            }
            out.push(']');
        }
        Value::Tags(tags) => {
            out.push_str(",\"Value\":[");
            for (index, tag) in tags.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                let _ = write!(out, "\"{tag:08X}\"");
            }
            out.push(']');
        }
        Value::U16(v) => write_numbers(out, v),
        Value::I16(v) => write_numbers(out, v),
        Value::U32(v) => write_numbers(out, v),
        Value::I32(v) => write_numbers(out, v),
        Value::U64(v) => write_numbers(out, v),
        Value::I64(v) => write_numbers(out, v),
        Value::F32(v) => write_floats(out, v.iter().map(|&x| f64::from(x))),
        Value::F64(v) => write_floats(out, v.iter().copied()),
    }
    out.push('}');
}

fn write_numbers<T: std::fmt::Display>(out: &mut String, values: &[T]) {
    out.push_str(",\"Value\":[");
    for (index, value) in values.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        let _ = write!(out, "{value}");
    }
    out.push(']');
}

fn write_floats(out: &mut String, values: impl Iterator<Item = f64>) {
    out.push_str(",\"Value\":[");
    for (index, value) in values.enumerate() {
        if index > 0 {
            out.push(',');
        }
        // JSON has no NaN or infinities; PS3.18 leaves them unrepresentable.
        if value.is_finite() {
            let _ = write!(out, "{value}");
        } else {
            out.push_str("null");
        }
    }
    out.push(']');
}

/// DS and IS are JSON numbers; a value that is not a number stays a string
/// rather than being lost.
fn write_decimal(out: &mut String, value: &str) {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        out.push_str("null");
    } else if trimmed.parse::<f64>().is_ok_and(f64::is_finite) && !trimmed.starts_with('+') && !trimmed.starts_with('.')
    {
        // Normalise forms JSON rejects, such as a trailing dot or leading zeros.
        match trimmed.parse::<i64>() {
            Ok(integer) => {
                let _ = write!(out, "{integer}");
            }
            Err(_) => {
                let number: f64 = trimmed.parse().unwrap_or(0.0);
                let _ = write!(out, "{number}");
            }
        }
    } else {
        write_json_string(out, trimmed);
    }
}

fn write_person_name(out: &mut String, name: &str) {
    if name.is_empty() {
        out.push_str("null");
        return;
    }
    out.push('{');
    let mut first = true;
    for (group, label) in name.split('=').zip(["Alphabetic", "Ideographic", "Phonetic"]) {
        if group.is_empty() {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        let _ = write!(out, "\"{label}\":");
        write_json_string(out, group);
    }
    out.push('}');
}

pub fn write_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn vr_str(vr: VR) -> &'static str {
    // VR::to_string allocates; the two letters are all we need.
    let bytes = vr.to_bytes();
    VR_NAMES.iter().find(|name| name.as_bytes() == bytes).copied().unwrap_or("UN")
}

const VR_NAMES: [&str; 34] = [
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT", "OB", "OD", "OF", "OL", "OV", "OW", "PN",
    "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV",
];

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(out: &mut String, bytes: &[u8]) {
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let symbols = [(n >> 18) & 63, (n >> 12) & 63, (n >> 6) & 63, n & 63];
        for (index, symbol) in symbols.iter().enumerate() {
            if index <= chunk.len() {
                out.push(char::from(BASE64[*symbol as usize]));
            } else {
                out.push('=');
            }
        }
    }
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0u32;
    for byte in text.bytes().filter(|b| !b.is_ascii_whitespace()) {
        if byte == b'=' {
            break;
        }
        let value = BASE64.iter().position(|&c| c == byte)? as u32;
        buffer = (buffer << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

/// Why DICOM JSON could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JsonError {
    #[error("invalid JSON: {0}")]
    Syntax(String),
    #[error("{0} is not an 8-digit hexadecimal tag")]
    BadTag(String),
    #[error("attribute {tag} has an unknown VR {vr:?}")]
    BadVr { tag: String, vr: String },
    #[error("attribute {tag}: {reason}")]
    BadValue { tag: String, reason: String },
}

/// Read a DICOM JSON object. `bulk` resolves a `BulkDataURI` to its bytes
/// (STOW-RS bulk data parts); `None` leaves the element empty.
pub fn read_object(text: &str, bulk: &dyn Fn(&str) -> Option<Vec<u8>>) -> Result<Dataset, JsonError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| JsonError::Syntax(e.to_string()))?;
    from_json_value(&value, bulk, 0)
}

/// Read a DICOM JSON array of objects (STOW-RS metadata).
pub fn read_array(text: &str, bulk: &dyn Fn(&str) -> Option<Vec<u8>>) -> Result<Vec<Dataset>, JsonError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| JsonError::Syntax(e.to_string()))?;
    match value {
        serde_json::Value::Array(items) => items.iter().map(|item| from_json_value(item, bulk, 0)).collect(),
        other => Ok(vec![from_json_value(&other, bulk, 0)?]),
    }
}

fn from_json_value(
    value: &serde_json::Value,
    bulk: &dyn Fn(&str) -> Option<Vec<u8>>,
    depth: u32,
) -> Result<Dataset, JsonError> {
    let serde_json::Value::Object(map) = value else {
        return Err(JsonError::Syntax("a data set must be a JSON object".into()));
    };
    if depth > 32 {
        return Err(JsonError::Syntax("sequences nested too deeply".into()));
    }
    let mut dataset = Dataset::new();
    for (key, attribute) in map {
        let tag = parse_key(key)?;
        let bad = |reason: &str| JsonError::BadValue { tag: key.clone(), reason: reason.to_string() };
        let vr_text = attribute.get("vr").and_then(|v| v.as_str()).ok_or_else(|| bad("missing vr"))?;
        let vr = <VR as std::str::FromStr>::from_str(vr_text)
            .map_err(|_| JsonError::BadVr { tag: key.clone(), vr: vr_text.to_string() })?;
        let value = if let Some(uri) = attribute.get("BulkDataURI").and_then(|v| v.as_str()) {
            bulk(uri).map(Value::Bytes).unwrap_or(Value::Empty)
        } else if let Some(inline) = attribute.get("InlineBinary").and_then(|v| v.as_str()) {
            Value::Bytes(base64_decode(inline).ok_or_else(|| bad("InlineBinary is not base64"))?)
        } else if let Some(values) = attribute.get("Value") {
            let serde_json::Value::Array(values) = values else {
                return Err(bad("Value must be an array"));
            };
            convert_values(vr, values, bulk, depth).map_err(|reason| bad(&reason))?
        } else {
            Value::Empty
        };
        dataset.put(Element::new(tag, vr, value));
    }
    Ok(dataset)
}

fn parse_key(key: &str) -> Result<Tag, JsonError> {
    if key.len() != 8 {
        return Err(JsonError::BadTag(key.to_string()));
    }
    u32::from_str_radix(key, 16).map(tag_from_u32).map_err(|_| JsonError::BadTag(key.to_string()))
}

fn convert_values(
    vr: VR,
    values: &[serde_json::Value],
    bulk: &dyn Fn(&str) -> Option<Vec<u8>>,
    depth: u32,
) -> Result<Value, String> {
    use serde_json::Value as J;
    let numbers = || -> Result<Vec<f64>, String> {
        values.iter().map(|v| v.as_f64().ok_or_else(|| format!("{v} is not a number"))).collect()
    };
    Ok(match vr {
        VR::SQ => Value::Sequence(
            values
                .iter()
                .map(|item| from_json_value(item, bulk, depth + 1).map_err(|e| e.to_string()))
                .collect::<Result<_, _>>()?,
        ),
        VR::PN => Value::Strings(
            values
                .iter()
                .map(|v| match v {
                    J::Null => Ok(String::new()),
                    J::Object(groups) => {
                        let group = |name: &str| groups.get(name).and_then(J::as_str).unwrap_or("").to_string();
                        let mut joined = [group("Alphabetic"), group("Ideographic"), group("Phonetic")].join("=");
                        while joined.ends_with('=') {
                            joined.pop();
                        }
                        Ok(joined)
                    }
                    other => Err(format!("{other} is not a person name object")),
                })
                .collect::<Result<_, _>>()?,
        ),
        VR::US => Value::U16(numbers()?.into_iter().map(|x| x as u16).collect()),
        VR::SS => Value::I16(numbers()?.into_iter().map(|x| x as i16).collect()),
        VR::UL => Value::U32(numbers()?.into_iter().map(|x| x as u32).collect()),
        VR::SL => Value::I32(numbers()?.into_iter().map(|x| x as i32).collect()),
        VR::UV => Value::U64(
            values.iter().map(|v| v.as_u64().ok_or_else(|| format!("{v} is not a UV"))).collect::<Result<_, _>>()?,
        ),
        VR::SV => Value::I64(
            values.iter().map(|v| v.as_i64().ok_or_else(|| format!("{v} is not an SV"))).collect::<Result<_, _>>()?,
        ),
        VR::FL => Value::F32(numbers()?.into_iter().map(|x| x as f32).collect()),
        VR::FD => Value::F64(numbers()?),
        VR::AT => Value::Tags(
            values
                .iter()
                .map(|v| {
                    v.as_str().and_then(|s| u32::from_str_radix(s, 16).ok()).ok_or_else(|| format!("{v} is not a tag"))
                })
                .collect::<Result<_, _>>()?,
        ),
        _ => Value::Strings(
            values
                .iter()
                .map(|v| match v {
                    J::Null => String::new(),
                    J::String(s) => s.clone(),
                    J::Number(n) => n.to_string(),
                    other => other.to_string(),
                })
                .collect(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Dataset {
        let mut item = Dataset::new();
        item.put(Element::text(Tag(0x0008, 0x1150), VR::UI, "1.2.840.10008.5.1.4.1.1.2"));
        item.put(Element::new(Tag(0x0018, 0x1072), VR::OB, Value::Bulk(BulkRef { offset: 10, length: Some(4000) })));
        let mut ds = Dataset::new();
        ds.put(Element::text(Tag(0x0010, 0x0010), VR::PN, "Hong^Gildong=洪^吉洞=홍^길동"));
        ds.put(Element::new(
            Tag(0x0008, 0x0008),
            VR::CS,
            Value::Strings(vec!["ORIGINAL".into(), "".into(), "AXIAL".into()]),
        ));
        ds.put(Element::new(Tag(0x0028, 0x1050), VR::DS, Value::Strings(vec!["40".into(), "-600.5".into()])));
        ds.put(Element::new(Tag(0x0020, 0x0013), VR::IS, Value::Strings(vec!["7".into()])));
        ds.put(Element::new(Tag(0x0028, 0x0010), VR::US, Value::U16(vec![512])));
        ds.put(Element::new(Tag(0x0018, 0x9087), VR::FD, Value::F64(vec![1000.5])));
        ds.put(Element::new(Tag(0x0020, 0x5000), VR::AT, Value::Tags(vec![0x0010_0010])));
        ds.put(Element::new(Tag(0x0028, 0x1201), VR::OW, Value::Bytes(vec![1, 2, 3, 4, 5])));
        ds.put(Element::text(Tag(0x0008, 0x1030), VR::LO, "quote \" backslash \\ newline \n"));
        ds.put(Element::empty(Tag(0x0008, 0x0050), VR::SH));
        ds.put(Element::new(Tag(0x0054, 0x0016), VR::SQ, Value::Sequence(vec![item])));
        ds.put(Element::new(Tag(0x7FE0, 0x0010), VR::OW, Value::Bulk(BulkRef { offset: 300, length: Some(524_288) })));
        ds
    }

    fn uri(path: &str, _: &BulkRef) -> String {
        format!("http://x/bulk/{path}")
    }

    #[test]
    fn writes_the_ps3_18_shapes() {
        let mut out = String::new();
        write_object(&mut out, &sample(), &uri);
        let parsed: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(parsed["00100010"]["Value"][0]["Ideographic"], "洪^吉洞");
        assert_eq!(parsed["00100010"]["Value"][0]["Phonetic"], "홍^길동");
        assert_eq!(parsed["00080008"]["Value"][1], serde_json::Value::Null);
        assert_eq!(parsed["00281050"]["Value"][1], -600.5);
        assert_eq!(parsed["00200013"]["Value"][0], 7);
        assert_eq!(parsed["00205000"]["Value"][0], "00100010");
        assert_eq!(parsed["00281201"]["InlineBinary"], "AQIDBAU=");
        assert_eq!(parsed["7FE00010"]["BulkDataURI"], "http://x/bulk/7FE00010");
        assert_eq!(parsed["00540016"]["Value"][0]["00181072"]["BulkDataURI"], "http://x/bulk/00540016.0.00181072");
        assert!(parsed["00080050"].get("Value").is_none());
    }

    #[test]
    fn round_trips_through_the_reader() {
        let mut out = String::new();
        write_object(&mut out, &sample(), &uri);
        let back = read_object(&out, &|uri: &str| Some(uri.as_bytes().to_vec())).expect("reads");
        assert_eq!(back.string(Tag(0x0010, 0x0010)), Some("Hong^Gildong=洪^吉洞=홍^길동"));
        assert_eq!(back.int(Tag(0x0028, 0x0010)), Some(512));
        assert_eq!(back.get(Tag(0x0028, 0x1201)).map(|e| e.value.clone()), Some(Value::Bytes(vec![1, 2, 3, 4, 5])));
        assert_eq!(back.strings(Tag(0x0008, 0x0008)), ["ORIGINAL", "", "AXIAL"]);
        assert_eq!(back.strings(Tag(0x0028, 0x1050)), ["40", "-600.5"]);
        assert_eq!(back.string(Tag(0x0008, 0x1030)), Some("quote \" backslash \\ newline \n"));
        assert_eq!(
            back.get(Tag(0x7FE0, 0x0010)).map(|e| e.value.clone()),
            Some(Value::Bytes(b"http://x/bulk/7FE00010".to_vec()))
        );
    }

    #[test]
    fn base64_matches_known_vectors() {
        for (plain, encoded) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")] {
            let mut out = String::new();
            base64_encode(&mut out, plain.as_bytes());
            assert_eq!(out, encoded);
            assert_eq!(base64_decode(encoded).expect("decodes"), plain.as_bytes());
        }
    }

    #[test]
    fn malformed_json_is_an_error() {
        let none = |_: &str| None;
        assert!(read_object("{", &none).is_err());
        assert!(matches!(read_object(r#"{"0010": {"vr": "PN"}}"#, &none), Err(JsonError::BadTag(_))));
        assert!(matches!(read_object(r#"{"00100010": {"vr": "XX"}}"#, &none), Err(JsonError::BadVr { .. })));
        assert!(read_object(r#"{"00280010": {"vr": "US", "Value": ["a"]}}"#, &none).is_err());
    }
}
