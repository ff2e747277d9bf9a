//! Re-encoding a data set between the native transfer syntaxes (Implicit VR
//! Little Endian, Explicit VR Little/Big Endian, Deflated Explicit VR Little
//! Endian) for peers that do not accept the stored one.
//!
//! Works element by element on the raw bytes: text values are copied as is
//! (never decoded and re-encoded, so nothing a character set cannot carry is
//! lost), binary numbers are byte-swapped when the byte order changes, and
//! sequences and items are written with undefined lengths so no length has
//! to be recomputed. Encapsulated (compressed) pixel data cannot be made
//! native without a codec and is refused.

use std::io::{Read, Write};

use dicom_core::{Tag, VR};

use crate::dict;
use crate::read::has_long_length;
use crate::ts::TransferSyntax;

const UNDEFINED: u32 = 0xFFFF_FFFF;
const MAX_DEPTH: u32 = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TranscodeError {
    #[error("cannot transcode from {from} to {to}: only native transfer syntaxes are supported")]
    Unsupported { from: &'static str, to: &'static str },
    #[error("data set truncated at offset {0}")]
    Truncated(usize),
    #[error("malformed data set at offset {offset}: {reason}")]
    Malformed { offset: usize, reason: &'static str },
    #[error("{tag} value of {length} bytes does not fit VR {vr:?}'s 16-bit length")]
    TooLong { tag: Tag, vr: VR, length: usize },
    #[error("deflate stream error: {0}")]
    Deflate(String),
    #[error("{tag} is stored as {vr:?} but the dictionary makes it a sequence, which Implicit VR cannot express")]
    VrConflict { tag: Tag, vr: VR },
}

/// Largest inflated data set accepted, against deflate bombs.
const MAX_INFLATED: u64 = 2 << 30;

#[derive(Clone, Copy)]
struct Layout {
    explicit: bool,
    big_endian: bool,
}

impl Layout {
    fn of(ts: &TransferSyntax) -> Layout {
        Layout { explicit: ts.explicit_vr, big_endian: ts.big_endian }
    }

    const IMPLICIT_LE: Layout = Layout { explicit: false, big_endian: false };
}

/// Whether `transcode` can convert between these syntaxes.
pub fn can_transcode(from: &TransferSyntax, to: &TransferSyntax) -> bool {
    !from.encapsulated && !to.encapsulated
}

/// Re-encode the data set `input` (bytes after the file meta group) from `from` to `to`.
pub fn transcode(input: &[u8], from: &TransferSyntax, to: &TransferSyntax) -> Result<Vec<u8>, TranscodeError> {
    if !can_transcode(from, to) {
        return Err(TranscodeError::Unsupported { from: from.uid, to: to.uid });
    }
    if from.uid == to.uid {
        return Ok(input.to_vec());
    }
    let inflated;
    let source = if from.deflated {
        let mut decoder = flate2::read::DeflateDecoder::new(input).take(MAX_INFLATED + 1);
        let mut buffer = Vec::with_capacity(input.len() * 3);
        decoder.read_to_end(&mut buffer).map_err(|e| TranscodeError::Deflate(e.to_string()))?;
        if buffer.len() as u64 > MAX_INFLATED {
            return Err(TranscodeError::Deflate(format!("inflates beyond {MAX_INFLATED} bytes")));
        }
        inflated = buffer;
        &inflated[..]
    } else {
        input
    };
    let mut output = Vec::with_capacity(source.len() + source.len() / 16);
    let mut reader = Reader { bytes: source, position: 0 };
    copy_dataset(&mut reader, Layout::of(from), Layout::of(to), &mut output, None, 0)?;
    if to.deflated {
        let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&output).map_err(|e| TranscodeError::Deflate(e.to_string()))?;
        return encoder.finish().map_err(|e| TranscodeError::Deflate(e.to_string()));
    }
    Ok(output)
}

struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], TranscodeError> {
        if n > self.remaining() {
            return Err(TranscodeError::Truncated(self.position));
        }
        let slice = &self.bytes[self.position..self.position + n];
        self.position += n;
        Ok(slice)
    }

    fn u16(&mut self, big: bool) -> Result<u16, TranscodeError> {
        let b = self.take(2)?;
        Ok(if big { u16::from_be_bytes([b[0], b[1]]) } else { u16::from_le_bytes([b[0], b[1]]) })
    }

    fn u32(&mut self, big: bool) -> Result<u32, TranscodeError> {
        let b = self.take(4)?;
        Ok(if big {
            u32::from_be_bytes([b[0], b[1], b[2], b[3]])
        } else {
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        })
    }
}

struct Header {
    tag: Tag,
    vr: VR,
    length: u32,
}

fn read_header(reader: &mut Reader<'_>, layout: Layout) -> Result<Header, TranscodeError> {
    let offset = reader.position;
    let group = reader.u16(layout.big_endian)?;
    let element = reader.u16(layout.big_endian)?;
    let tag = Tag(group, element);
    if group == 0xFFFE || !layout.explicit {
        let length = reader.u32(layout.big_endian)?;
        let vr = if group == 0xFFFE { VR::UN } else { dict::implicit_vr(tag) };
        return Ok(Header { tag, vr, length });
    }
    let vr_bytes = reader.take(2)?;
    let vr = VR::from_binary([vr_bytes[0], vr_bytes[1]]);
    let vr = match vr {
        Some(vr) => vr,
        None if vr_bytes.iter().all(u8::is_ascii_uppercase) => VR::UN,
        None => return Err(TranscodeError::Malformed { offset, reason: "invalid VR" }),
    };
    let long = VR::from_binary([vr_bytes[0], vr_bytes[1]]).is_none() || has_long_length(vr);
    let length = if long {
        reader.take(2)?;
        reader.u32(layout.big_endian)?
    } else {
        u32::from(reader.u16(layout.big_endian)?)
    };
    Ok(Header { tag, vr, length })
}

fn put_u16(out: &mut Vec<u8>, value: u16, big: bool) {
    out.extend_from_slice(&if big { value.to_be_bytes() } else { value.to_le_bytes() });
}

fn put_u32(out: &mut Vec<u8>, value: u32, big: bool) {
    out.extend_from_slice(&if big { value.to_be_bytes() } else { value.to_le_bytes() });
}

fn write_header(out: &mut Vec<u8>, tag: Tag, vr: VR, length: usize, layout: Layout) -> Result<(), TranscodeError> {
    put_u16(out, tag.group(), layout.big_endian);
    put_u16(out, tag.element(), layout.big_endian);
    let length32 = u32::try_from(length).map_err(|_| TranscodeError::TooLong { tag, vr, length })?;
    if !layout.explicit || tag.group() == 0xFFFE {
        put_u32(out, length32, layout.big_endian);
        return Ok(());
    }
    out.extend_from_slice(&vr.to_bytes());
    if has_long_length(vr) {
        out.extend_from_slice(&[0, 0]);
        put_u32(out, length32, layout.big_endian);
    } else {
        let length16 = u16::try_from(length).map_err(|_| TranscodeError::TooLong { tag, vr, length })?;
        put_u16(out, length16, layout.big_endian);
    }
    Ok(())
}

/// Width of the numbers inside a value, for byte swapping (1 = bytes, never swapped).
fn swap_unit(vr: VR) -> usize {
    match vr {
        VR::US | VR::SS | VR::OW | VR::AT => 2,
        VR::UL | VR::SL | VR::FL | VR::OF | VR::OL => 4,
        VR::FD | VR::OD | VR::UV | VR::SV | VR::OV => 8,
        _ => 1,
    }
}

fn copy_dataset(
    reader: &mut Reader<'_>,
    from: Layout,
    to: Layout,
    out: &mut Vec<u8>,
    end: Option<usize>,
    depth: u32,
) -> Result<(), TranscodeError> {
    if depth > MAX_DEPTH {
        return Err(TranscodeError::Malformed { offset: reader.position, reason: "sequences nested too deeply" });
    }
    loop {
        match end {
            Some(end) if reader.position >= end => return Ok(()),
            None if reader.remaining() == 0 => return Ok(()),
            _ => {}
        }
        let offset = reader.position;
        let header = read_header(reader, from)?;
        if header.tag == Tag(0xFFFE, 0xE00D) {
            // End of an undefined-length item: the caller writes the delimiter.
            return Ok(());
        }
        if header.tag.group() == 0xFFFE {
            return Err(TranscodeError::Malformed { offset, reason: "unexpected item tag" });
        }
        let undefined = header.length == UNDEFINED;
        let is_sequence = header.vr == VR::SQ || (undefined && header.vr == VR::UN);
        if is_sequence {
            // An undefined-length UN holds an Implicit VR Little Endian sequence (PS3.5 6.2.2).
            let inner = if header.vr == VR::UN { Layout::IMPLICIT_LE } else { from };
            let out_vr = VR::SQ;
            write_header(out, header.tag, out_vr, UNDEFINED as usize, to)?;
            copy_sequence(reader, inner, to, out, header.length, depth)?;
            continue;
        }
        if undefined {
            return Err(TranscodeError::Malformed { offset, reason: "undefined length outside a sequence" });
        }
        let value = reader.take(header.length as usize)?;
        if header.tag.element() == 0x0000 {
            continue; // group lengths would be wrong after re-encoding
        }
        // In Implicit VR a reader takes the dictionary's word for the VR; a
        // value the dictionary calls a sequence would be misread as items.
        if !to.explicit && header.vr != VR::UN && dict::implicit_vr(header.tag) == VR::SQ {
            return Err(TranscodeError::VrConflict { tag: header.tag, vr: header.vr });
        }
        write_header(out, header.tag, header.vr, value.len(), to)?;
        let unit = swap_unit(header.vr);
        if from.big_endian == to.big_endian || unit == 1 {
            out.extend_from_slice(value);
        } else {
            let start = out.len();
            out.extend_from_slice(value);
            // AT values are two 16-bit numbers, swapped one by one.
            for chunk in out[start..].chunks_exact_mut(unit) {
                chunk.reverse();
            }
        }
    }
}

fn copy_sequence(
    reader: &mut Reader<'_>,
    from: Layout,
    to: Layout,
    out: &mut Vec<u8>,
    length: u32,
    depth: u32,
) -> Result<(), TranscodeError> {
    let end = (length != UNDEFINED).then(|| reader.position.saturating_add(length as usize));
    if end.is_some_and(|end| end > reader.bytes.len()) {
        return Err(TranscodeError::Truncated(reader.position));
    }
    loop {
        if let Some(end) = end {
            if reader.position >= end {
                break;
            }
        }
        let offset = reader.position;
        let header = read_header(reader, from)?;
        match header.tag {
            Tag(0xFFFE, 0xE0DD) => break,
            Tag(0xFFFE, 0xE000) => {
                write_header(out, Tag(0xFFFE, 0xE000), VR::UN, UNDEFINED as usize, to)?;
                let item_end =
                    (header.length != UNDEFINED).then(|| reader.position.saturating_add(header.length as usize));
                if item_end.is_some_and(|item_end| item_end > reader.bytes.len()) {
                    return Err(TranscodeError::Truncated(reader.position));
                }
                copy_dataset(reader, from, to, out, item_end, depth + 1)?;
                write_header(out, Tag(0xFFFE, 0xE00D), VR::UN, 0, to)?;
            }
            _ => return Err(TranscodeError::Malformed { offset, reason: "sequence holds a non-item element" }),
        }
    }
    write_header(out, Tag(0xFFFE, 0xE0DD), VR::UN, 0, to)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Dataset, Element, Value};
    use crate::read::read_dataset_bytes;
    use crate::ts::{self, lookup};
    use crate::write::{write_dataset, Encoding};
    use haneul_charset::SpecificCharacterSet;

    fn sample() -> Dataset {
        let mut item = Dataset::new();
        item.put(Element::text(Tag(0x0008, 0x1150), VR::UI, "1.2.840.10008.5.1.4.1.1.2"));
        item.put(Element::new(Tag(0x0018, 0x9087), VR::FD, Value::F64(vec![1000.5])));
        let mut ds = Dataset::new();
        ds.put(Element::new(
            Tag(0x0008, 0x0005),
            VR::CS,
            Value::Strings(vec![String::new(), "ISO 2022 IR 149".into()]),
        ));
        ds.put(Element::text(Tag(0x0010, 0x0010), VR::PN, "Hong^Gildong=洪^吉洞=홍^길동"));
        ds.put(Element::new(Tag(0x0008, 0x1115), VR::SQ, Value::Sequence(vec![item.clone(), item])));
        ds.put(Element::new(Tag(0x0020, 0x5000), VR::AT, Value::Tags(vec![0x0010_0010])));
        ds.put(Element::new(Tag(0x0028, 0x0010), VR::US, Value::U16(vec![2])));
        ds.put(Element::new(Tag(0x0028, 0x0011), VR::US, Value::U16(vec![2])));
        ds.put(Element::new(Tag(0x0018, 0x6020), VR::SL, Value::I32(vec![-7])));
        ds.put(Element::new(Tag(0x0028, 0x1201), VR::OW, Value::Bytes(vec![1, 2, 3, 4, 5, 6, 7, 8])));
        ds
    }

    fn encode(ts_uid: &str) -> Vec<u8> {
        let syntax = lookup(ts_uid).expect("known");
        let charset = SpecificCharacterSet::from_terms(&["", "ISO 2022 IR 149"]);
        let mut out = Vec::new();
        write_dataset(&mut out, &sample(), Encoding::of(syntax).expect("native"), &charset).expect("encodes");
        out
    }

    #[test]
    fn every_pair_of_native_syntaxes_preserves_the_data_set() {
        let native = [ts::IMPLICIT_VR_LITTLE_ENDIAN, ts::EXPLICIT_VR_LITTLE_ENDIAN, ts::EXPLICIT_VR_BIG_ENDIAN];
        for from in native {
            for to in native.iter().chain([&ts::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN]) {
                let source = lookup(from).expect("known");
                let target = lookup(to).expect("known");
                let converted = transcode(&encode(from), source, target).expect("transcodes");
                let back = read_dataset_bytes(&converted, target).expect("reads");
                assert_eq!(back, sample(), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn text_bytes_are_copied_not_re_encoded() {
        let implicit = encode(ts::IMPLICIT_VR_LITTLE_ENDIAN);
        let explicit = transcode(
            &implicit,
            lookup(ts::IMPLICIT_VR_LITTLE_ENDIAN).expect("known"),
            lookup(ts::EXPLICIT_VR_LITTLE_ENDIAN).expect("known"),
        )
        .expect("transcodes");
        let escape_sequence = b"\x1b$)C";
        let count = |bytes: &[u8]| bytes.windows(4).filter(|w| *w == escape_sequence).count();
        assert_eq!(count(&implicit), count(&explicit));
        assert!(count(&explicit) > 0);
    }

    #[test]
    fn a_vr_that_implicit_readers_would_take_for_a_sequence_is_refused() {
        // (0008,103F) is a sequence in the dictionary; here it was stored as PN.
        let explicit = [0x08, 0x00, 0x3f, 0x10, b'P', b'N', 0x02, 0x00, b'A', b' '];
        let result = transcode(
            &explicit,
            lookup(ts::EXPLICIT_VR_LITTLE_ENDIAN).expect("known"),
            lookup(ts::IMPLICIT_VR_LITTLE_ENDIAN).expect("known"),
        );
        assert!(matches!(result, Err(TranscodeError::VrConflict { .. })), "{result:?}");
    }

    #[test]
    fn compressed_syntaxes_and_garbage_are_refused_cleanly() {
        let jpeg = lookup("1.2.840.10008.1.2.4.50").expect("known");
        let explicit = lookup(ts::EXPLICIT_VR_LITTLE_ENDIAN).expect("known");
        assert!(matches!(transcode(&[], jpeg, explicit), Err(TranscodeError::Unsupported { .. })));
        let implicit = lookup(ts::IMPLICIT_VR_LITTLE_ENDIAN).expect("known");
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for length in 0..400usize {
            let bytes: Vec<u8> = (0..length % 80)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let _ = transcode(&bytes, implicit, explicit);
            let _ = transcode(&bytes, explicit, implicit);
        }
    }
}
