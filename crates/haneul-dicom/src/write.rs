//! Encoding of in-memory data sets (C-FIND responses, identifiers, synthetic instances).

use dicom_core::{Tag, VR};
use haneul_charset::SpecificCharacterSet;

use crate::model::{Dataset, Value};
use crate::read::{has_long_length, is_charset_affected, is_single_valued_text, text_kind};

/// The byte layout to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    pub explicit_vr: bool,
    pub big_endian: bool,
}

impl Encoding {
    pub const IMPLICIT_LE: Encoding = Encoding { explicit_vr: false, big_endian: false };
    pub const EXPLICIT_LE: Encoding = Encoding { explicit_vr: true, big_endian: false };
    pub const EXPLICIT_BE: Encoding = Encoding { explicit_vr: true, big_endian: true };

    /// The encoding of a native transfer syntax; `None` for encapsulated or deflated ones.
    pub fn of(ts: &crate::ts::TransferSyntax) -> Option<Encoding> {
        if ts.deflated {
            return None;
        }
        Some(Encoding { explicit_vr: ts.explicit_vr, big_endian: ts.big_endian })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{tag} cannot be encoded in the character set {charset}")]
    Unencodable { tag: Tag, charset: String },
    #[error("{tag} refers to bulk data that is not in memory")]
    BulkValue { tag: Tag },
    #[error("{tag} value of {length} bytes is too long for VR {vr:?}")]
    TooLong { tag: Tag, vr: VR, length: usize },
}

/// Encode `dataset` with text in `charset`. Sequences and items are written
/// with undefined lengths, which every transfer syntax allows.
pub fn write_dataset(
    out: &mut Vec<u8>,
    dataset: &Dataset,
    encoding: Encoding,
    charset: &SpecificCharacterSet,
) -> Result<(), WriteError> {
    for element in dataset.iter() {
        if element.tag.element() == 0x0000 {
            continue;
        }
        if let Value::Sequence(items) = &element.value {
            write_header(out, element.tag, VR::SQ, 0xFFFF_FFFF, encoding);
            for item in items {
                write_tag_length(out, Tag(0xFFFE, 0xE000), 0xFFFF_FFFF, encoding);
                write_dataset(out, item, encoding, charset)?;
                write_tag_length(out, Tag(0xFFFE, 0xE00D), 0, encoding);
            }
            write_tag_length(out, Tag(0xFFFE, 0xE0DD), 0, encoding);
            continue;
        }
        let bytes = encode_value(element.tag, element.vr, &element.value, encoding, charset)?;
        if encoding.explicit_vr && !has_long_length(element.vr) && bytes.len() > 0xFFFF {
            return Err(WriteError::TooLong { tag: element.tag, vr: element.vr, length: bytes.len() });
        }
        write_header(out, element.tag, element.vr, bytes.len() as u32, encoding);
        out.extend_from_slice(&bytes);
    }
    Ok(())
}

fn put_u16(out: &mut Vec<u8>, value: u16, big_endian: bool) {
    out.extend_from_slice(&if big_endian { value.to_be_bytes() } else { value.to_le_bytes() });
}

fn put_u32(out: &mut Vec<u8>, value: u32, big_endian: bool) {
    out.extend_from_slice(&if big_endian { value.to_be_bytes() } else { value.to_le_bytes() });
}

pub(crate) fn write_tag_length(out: &mut Vec<u8>, tag: Tag, length: u32, encoding: Encoding) {
    put_u16(out, tag.group(), encoding.big_endian);
    put_u16(out, tag.element(), encoding.big_endian);
    put_u32(out, length, encoding.big_endian);
}

pub(crate) fn write_header(out: &mut Vec<u8>, tag: Tag, vr: VR, length: u32, encoding: Encoding) {
    if !encoding.explicit_vr {
        write_tag_length(out, tag, length, encoding);
        return;
    }
    put_u16(out, tag.group(), encoding.big_endian);
    put_u16(out, tag.element(), encoding.big_endian);
    out.extend_from_slice(&vr.to_bytes());
    if has_long_length(vr) {
        out.extend_from_slice(&[0, 0]);
        put_u32(out, length, encoding.big_endian);
    } else {
        put_u16(out, length as u16, encoding.big_endian);
    }
}

/// Encode one value to its padded, even-length byte form.
pub fn encode_value(
    tag: Tag,
    vr: VR,
    value: &Value,
    encoding: Encoding,
    charset: &SpecificCharacterSet,
) -> Result<Vec<u8>, WriteError> {
    let big = encoding.big_endian;
    let mut bytes = match value {
        Value::Empty => Vec::new(),
        Value::Strings(values) => encode_text(tag, vr, values, charset)?,
        Value::U16(v) => v.iter().flat_map(|x| if big { x.to_be_bytes() } else { x.to_le_bytes() }).collect(),
        Value::I16(v) => v.iter().flat_map(|x| if big { x.to_be_bytes() } else { x.to_le_bytes() }).collect(),
        Value::U32(v) => v.iter().flat_map(|x| if big { x.to_be_bytes() } else { x.to_le_bytes() }).collect(),
        Value::I32(v) => v.iter().flat_map(|x| if big { x.to_be_bytes() } else { x.to_le_bytes() }).collect(),
        Value::U64(v) => v.iter().flat_map(|x| if big { x.to_be_bytes() } else { x.to_le_bytes() }).collect(),
        Value::I64(v) => v.iter().flat_map(|x| if big { x.to_be_bytes() } else { x.to_le_bytes() }).collect(),
        Value::F32(v) => v.iter().flat_map(|x| if big { x.to_be_bytes() } else { x.to_le_bytes() }).collect(),
        Value::F64(v) => v.iter().flat_map(|x| if big { x.to_be_bytes() } else { x.to_le_bytes() }).collect(),
        Value::Tags(v) => {
            let mut out = Vec::with_capacity(v.len() * 4);
            for t in v {
                put_u16(&mut out, (t >> 16) as u16, big);
                put_u16(&mut out, (t & 0xFFFF) as u16, big);
            }
            out
        }
        Value::Bytes(raw) => {
            let mut raw = raw.clone();
            let unit = match vr {
                VR::OW => 2,
                VR::OF | VR::OL => 4,
                VR::OD | VR::OV => 8,
                _ => 1,
            };
            if big && unit > 1 {
                for chunk in raw.chunks_exact_mut(unit) {
                    chunk.reverse();
                }
            }
            raw
        }
        Value::Bulk(_) => return Err(WriteError::BulkValue { tag }),
        Value::Sequence(_) => Vec::new(),
    };
    if bytes.len() % 2 == 1 {
        bytes.push(padding_byte(vr));
    }
    Ok(bytes)
}

fn padding_byte(vr: VR) -> u8 {
    match vr {
        VR::UI | VR::OB | VR::UN => 0,
        _ => b' ',
    }
}

fn encode_text(tag: Tag, vr: VR, values: &[String], charset: &SpecificCharacterSet) -> Result<Vec<u8>, WriteError> {
    let joined =
        if is_single_valued_text(vr) { values.first().cloned().unwrap_or_default() } else { values.join("\\") };
    if is_charset_affected(vr) {
        return charset
            .encode(&joined, text_kind(vr))
            .ok_or_else(|| WriteError::Unencodable { tag, charset: charset.terms().join("\\") });
    }
    // Default-repertoire VRs: anything outside ASCII is not representable.
    if !joined.is_ascii() {
        return Err(WriteError::Unencodable { tag, charset: "ISO_IR 6".into() });
    }
    Ok(joined.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Element;
    use crate::read::read_dataset_bytes;
    use crate::ts;

    fn sample() -> Dataset {
        let mut item = Dataset::new();
        item.put(Element::text(Tag(0x0008, 0x1150), VR::UI, "1.2.840.10008.5.1.4.1.1.2"));
        let mut ds = Dataset::new();
        ds.put(Element::new(
            Tag(0x0008, 0x0005),
            VR::CS,
            Value::Strings(vec![String::new(), "ISO 2022 IR 149".into()]),
        ));
        ds.put(Element::text(Tag(0x0010, 0x0010), VR::PN, "Hong^Gildong=洪^吉洞=홍^길동"));
        ds.put(Element::new(Tag(0x0008, 0x0061), VR::CS, Value::Strings(vec!["CT".into(), "MR".into()])));
        ds.put(Element::new(Tag(0x0008, 0x1110), VR::SQ, Value::Sequence(vec![item])));
        ds.put(Element::new(Tag(0x0028, 0x0010), VR::US, Value::U16(vec![512])));
        ds.put(Element::new(Tag(0x0028, 0x1052), VR::DS, Value::Strings(vec!["-1024".into()])));
        ds.put(Element::new(Tag(0x0028, 0x1201), VR::OW, Value::Bytes(vec![1, 2, 3, 4])));
        ds
    }

    #[test]
    fn round_trips_through_every_native_encoding() {
        let charset = SpecificCharacterSet::from_terms(&["", "ISO 2022 IR 149"]);
        for uid in [ts::IMPLICIT_VR_LITTLE_ENDIAN, ts::EXPLICIT_VR_LITTLE_ENDIAN, ts::EXPLICIT_VR_BIG_ENDIAN] {
            let syntax = ts::lookup(uid).expect("known");
            let encoding = Encoding::of(syntax).expect("native");
            let mut bytes = Vec::new();
            write_dataset(&mut bytes, &sample(), encoding, &charset).expect("encodes");
            assert_eq!(bytes.len() % 2, 0);
            let back = read_dataset_bytes(&bytes, syntax).expect("reads back");
            assert_eq!(back, sample(), "round trip in {uid}");
        }
    }

    #[test]
    fn refuses_text_the_character_set_cannot_carry() {
        let mut ds = Dataset::new();
        ds.put(Element::text(Tag(0x0010, 0x0010), VR::PN, "홍^길동"));
        let latin1 = SpecificCharacterSet::from_terms(&["ISO_IR 100"]);
        let mut out = Vec::new();
        assert!(matches!(
            write_dataset(&mut out, &ds, Encoding::EXPLICIT_LE, &latin1),
            Err(WriteError::Unencodable { .. })
        ));
    }
}
