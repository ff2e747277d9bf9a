//! DICOM Part 10 file meta information (PS3.10 7.1): reading it from files
//! and writing it in front of data sets received over the network.

use std::io::{self, Read};

use crate::read::ReadError;
use crate::ts;

/// Implementation Class UID of Haneul (a UUID-derived UID under 2.25).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.168516935419213578306095718404137463437";
/// Implementation Version Name (at most 16 characters).
pub const IMPLEMENTATION_VERSION_NAME: &str = "HANEUL_0_1";

const PREAMBLE_LENGTH: usize = 128;

/// The file meta information group of a Part 10 file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileMeta {
    pub media_storage_sop_class_uid: String,
    pub media_storage_sop_instance_uid: String,
    pub transfer_syntax_uid: String,
    pub implementation_class_uid: String,
    pub implementation_version_name: Option<String>,
    pub source_application_entity_title: Option<String>,
    /// Offset of the data set (the first byte after the meta group) in the file.
    pub dataset_offset: u64,
}

/// What the start of a file says about its layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileLayout {
    /// A Part 10 file with preamble, `DICM` and meta group.
    Part10(FileMeta),
    /// A bare data set without meta information; the transfer syntax was guessed.
    BareDataset { transfer_syntax_uid: &'static str },
}

/// Identify a file from its first bytes and read its meta group if it has one.
pub fn read_layout<R: Read>(reader: &mut R) -> Result<FileLayout, ReadError> {
    let mut head = [0u8; PREAMBLE_LENGTH + 4];
    let filled = read_up_to(reader, &mut head)?;
    if filled == head.len() && &head[PREAMBLE_LENGTH..] == b"DICM" {
        let meta = read_meta_group(reader, (PREAMBLE_LENGTH + 4) as u64)?;
        return Ok(FileLayout::Part10(meta));
    }
    match guess_bare_syntax(&head[..filled]) {
        Some(transfer_syntax_uid) => Ok(FileLayout::BareDataset { transfer_syntax_uid }),
        None => Err(ReadError::NotDicom("no DICM prefix and no recognisable data set".into())),
    }
}

fn read_up_to<R: Read>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Guess the encoding of a data set that starts without meta information:
/// the first element should be in a low, even group with a plausible header.
fn guess_bare_syntax(head: &[u8]) -> Option<&'static str> {
    if head.len() < 8 {
        return None;
    }
    let group_le = u16::from_le_bytes([head[0], head[1]]);
    let group_be = u16::from_be_bytes([head[0], head[1]]);
    let vr_letters = head[4].is_ascii_uppercase() && head[5].is_ascii_uppercase();
    let plausible = |group: u16| group != 0 && group.is_multiple_of(2) && group <= 0x0100;
    if plausible(group_le) {
        if vr_letters && dicom_core::VR::from_binary([head[4], head[5]]).is_some() {
            return Some(ts::EXPLICIT_VR_LITTLE_ENDIAN);
        }
        return Some(ts::IMPLICIT_VR_LITTLE_ENDIAN);
    }
    if plausible(group_be) && vr_letters {
        return Some(ts::EXPLICIT_VR_BIG_ENDIAN);
    }
    None
}

/// Read the group 0002 elements (always Explicit VR Little Endian), starting at
/// absolute offset `start`. Stops at the first element of another group.
fn read_meta_group<R: Read>(reader: &mut R, start: u64) -> Result<FileMeta, ReadError> {
    let mut meta = FileMeta::default();
    let mut position = start;
    let mut group_end: Option<u64> = None;
    // Without a group length (some old writers omit it) the group ends at the
    // first element of another group; callers seek to `dataset_offset`, so
    // reading that element's header here does no harm.
    loop {
        if let Some(end) = group_end {
            if position >= end {
                break;
            }
        }
        let mut header = [0u8; 8];
        let filled = read_up_to(reader, &mut header)?;
        if filled < 8 {
            return Err(ReadError::Truncated { offset: position + filled as u64 });
        }
        let group = u16::from_le_bytes([header[0], header[1]]);
        let element = u16::from_le_bytes([header[2], header[3]]);
        if group != 0x0002 {
            if group_end.is_some() {
                return Err(ReadError::NotDicom(format!("file meta group length overruns into group {group:04X}")));
            }
            break;
        }
        let vr = [header[4], header[5]];
        let (length, header_len) = if matches!(&vr, b"OB" | b"OW" | b"UN" | b"SQ" | b"UT" | b"UC" | b"UR") {
            let mut long = [0u8; 4];
            if read_up_to(reader, &mut long)? < 4 {
                return Err(ReadError::Truncated { offset: position + 8 });
            }
            (u64::from(u32::from_le_bytes(long)), 12)
        } else {
            (u64::from(u16::from_le_bytes([header[6], header[7]])), 8)
        };
        if length > 1 << 16 {
            return Err(ReadError::NotDicom(format!("file meta element (0002,{element:04X}) is {length} bytes long")));
        }
        let mut value = vec![0u8; length as usize];
        if read_up_to(reader, &mut value)? < value.len() {
            return Err(ReadError::Truncated { offset: position + header_len });
        }
        position += header_len + length;
        let text = || String::from_utf8_lossy(&value).trim_end_matches(['\0', ' ']).trim_start().to_string();
        match element {
            0x0000 if value.len() == 4 => {
                let group_length = u32::from_le_bytes([value[0], value[1], value[2], value[3]]);
                group_end = Some(position + u64::from(group_length));
            }
            0x0002 => meta.media_storage_sop_class_uid = text(),
            0x0003 => meta.media_storage_sop_instance_uid = text(),
            0x0010 => meta.transfer_syntax_uid = text(),
            0x0012 => meta.implementation_class_uid = text(),
            0x0013 => meta.implementation_version_name = Some(text()).filter(|s| !s.is_empty()),
            0x0016 => meta.source_application_entity_title = Some(text()).filter(|s| !s.is_empty()),
            _ => {}
        }
    }
    if meta.transfer_syntax_uid.is_empty() {
        return Err(ReadError::NotDicom("file meta has no transfer syntax UID (0002,0010)".into()));
    }
    meta.dataset_offset = position;
    Ok(meta)
}

/// The fields written into a new file meta group.
#[derive(Debug, Clone)]
pub struct NewFileMeta<'a> {
    pub sop_class_uid: &'a str,
    pub sop_instance_uid: &'a str,
    pub transfer_syntax_uid: &'a str,
    pub source_ae_title: Option<&'a str>,
}

/// Preamble, `DICM` and the meta group, ready to be followed by the data set bytes.
pub fn encode_file_meta(fields: &NewFileMeta<'_>) -> Vec<u8> {
    let mut group = Vec::with_capacity(256);
    push_element(&mut group, 0x0001, b"OB", &[0x00, 0x01]);
    push_element(&mut group, 0x0002, b"UI", &pad_uid(fields.sop_class_uid));
    push_element(&mut group, 0x0003, b"UI", &pad_uid(fields.sop_instance_uid));
    push_element(&mut group, 0x0010, b"UI", &pad_uid(fields.transfer_syntax_uid));
    push_element(&mut group, 0x0012, b"UI", &pad_uid(IMPLEMENTATION_CLASS_UID));
    push_element(&mut group, 0x0013, b"SH", &pad_text(IMPLEMENTATION_VERSION_NAME));
    if let Some(ae) = fields.source_ae_title.map(str::trim).filter(|ae| !ae.is_empty()) {
        push_element(&mut group, 0x0016, b"AE", &pad_text(ae));
    }
    let mut out = vec![0u8; PREAMBLE_LENGTH];
    out.extend_from_slice(b"DICM");
    push_element(&mut out, 0x0000, b"UL", &(group.len() as u32).to_le_bytes());
    out.extend_from_slice(&group);
    out
}

fn push_element(out: &mut Vec<u8>, element: u16, vr: &[u8; 2], value: &[u8]) {
    out.extend_from_slice(&0x0002u16.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(vr);
    if vr == b"OB" {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    } else {
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(value);
}

fn pad_uid(uid: &str) -> Vec<u8> {
    let mut bytes = uid.trim_end_matches(['\0', ' ']).as_bytes().to_vec();
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    bytes
}

fn pad_text(text: &str) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    if bytes.len() % 2 == 1 {
        bytes.push(b' ');
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_meta_reads_back() {
        let bytes = encode_file_meta(&NewFileMeta {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2",
            sop_instance_uid: "1.2.3.4.5",
            transfer_syntax_uid: ts::EXPLICIT_VR_LITTLE_ENDIAN,
            source_ae_title: Some("CT01"),
        });
        let layout = read_layout(&mut io::Cursor::new(&bytes)).expect("reads");
        let FileLayout::Part10(meta) = layout else { panic!("expected a Part 10 layout") };
        assert_eq!(meta.media_storage_sop_instance_uid, "1.2.3.4.5");
        assert_eq!(meta.transfer_syntax_uid, ts::EXPLICIT_VR_LITTLE_ENDIAN);
        assert_eq!(meta.source_application_entity_title.as_deref(), Some("CT01"));
        assert_eq!(meta.dataset_offset, bytes.len() as u64);
    }

    #[test]
    fn bare_data_sets_are_recognised() {
        let explicit = [0x08, 0x00, 0x05, 0x00, b'C', b'S', 0x0A, 0x00];
        assert_eq!(
            read_layout(&mut io::Cursor::new(&explicit)).expect("layout"),
            FileLayout::BareDataset { transfer_syntax_uid: ts::EXPLICIT_VR_LITTLE_ENDIAN }
        );
        let implicit = [0x08, 0x00, 0x05, 0x00, 0x0A, 0x00, 0x00, 0x00];
        assert_eq!(
            read_layout(&mut io::Cursor::new(&implicit)).expect("layout"),
            FileLayout::BareDataset { transfer_syntax_uid: ts::IMPLICIT_VR_LITTLE_ENDIAN }
        );
        assert!(read_layout(&mut io::Cursor::new(b"%PDF-1.4 garbage")).is_err());
    }
}
