//! The bodies of Haneul's fuzz targets, shared by the libFuzzer binaries in
//! `fuzz_targets/` and by `tests/regressions.rs`, which replays saved inputs
//! on the stable toolchain.
//!
//! Every function must return normally for any input: an error result is
//! fine, a panic, an abort, a hang or an unbounded allocation is a bug.

use std::io::Cursor;

use haneul_dicom::meta::{read_layout as read_file_layout, FileLayout};
use haneul_dicom::read::{read_dataset as read_stream, read_dataset_bytes, ReadOptions, SeekSource, StreamSource};
use haneul_dicom::ts::{self, TransferSyntax};
use haneul_dimse::command::Command;
use haneul_dimse::message::{DimseReader, Received};
use haneul_dimse::pdu::PduReader;

/// The transfer syntaxes whose data sets Haneul parses itself: the native
/// ones, deflate, and one encapsulated syntax (pixel data fragments).
const SYNTAXES: [&str; 5] = [
    ts::IMPLICIT_VR_LITTLE_ENDIAN,
    ts::EXPLICIT_VR_LITTLE_ENDIAN,
    ts::EXPLICIT_VR_BIG_ENDIAN,
    ts::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    "1.2.840.10008.1.2.4.50",
];

/// The four syntaxes `transcode` converts between.
const NATIVE: [&str; 4] = [
    ts::IMPLICIT_VR_LITTLE_ENDIAN,
    ts::EXPLICIT_VR_LITTLE_ENDIAN,
    ts::EXPLICIT_VR_BIG_ENDIAN,
    ts::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
];

fn syntax(uid: &str) -> &'static TransferSyntax {
    ts::lookup(uid).expect("known transfer syntax")
}

/// Split off a selector byte.
fn split(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((first, rest)) => (*first, rest),
        None => (0, data),
    }
}

/// `read_dataset_bytes` (identifiers, C-FIND responses) and `read_dataset` in
/// header mode over a seekable and a streaming source (ingest), in the
/// syntax picked by the first byte.
pub fn read_dataset(data: &[u8]) {
    let (selector, bytes) = split(data);
    let syntax = syntax(SYNTAXES[selector as usize % SYNTAXES.len()]);
    let _ = read_dataset_bytes(bytes, syntax);
    let header = ReadOptions::default();
    let _ = read_stream(SeekSource::new(Cursor::new(bytes), 0, bytes.len() as u64), syntax, &header);
    let _ = read_stream(StreamSource(bytes), syntax, &header);
}

/// `read_layout` on a whole file, then the data set the way ingest reads a
/// Part 10 file held in memory.
pub fn read_layout(data: &[u8]) {
    let Ok(layout) = read_file_layout(&mut Cursor::new(data)) else {
        return;
    };
    let (syntax, start) = match &layout {
        FileLayout::Part10(meta) => match ts::lookup(&meta.transfer_syntax_uid) {
            Some(syntax) => (syntax, usize::try_from(meta.dataset_offset).unwrap_or(usize::MAX).min(data.len())),
            None => return,
        },
        FileLayout::BareDataset { transfer_syntax_uid } => (syntax(transfer_syntax_uid), 0),
    };
    let dataset = &data[start..];
    let source = SeekSource::new(Cursor::new(dataset), 0, dataset.len() as u64);
    let _ = read_stream(source, syntax, &ReadOptions::default());
}

/// `Command::decode`; what decodes must encode and decode again.
pub fn command_decode(data: &[u8]) {
    if let Ok(command) = Command::decode(data) {
        let encoded = command.encode();
        if let Err(error) = Command::decode(&encoded) {
            panic!("a decoded command does not decode after encoding: {error}");
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().expect("tokio runtime")
}

const MAX_PDU: [u32; 4] = [4096, 16_384, 262_144, 16 << 20];

/// `PduReader` over an in-memory stream, reading PDUs until an error.
pub fn pdu_reader(data: &[u8]) {
    let (selector, bytes) = split(data);
    runtime().block_on(async {
        let mut reader = PduReader::new(bytes, MAX_PDU[selector as usize % MAX_PDU.len()]);
        while reader.read().await.is_ok() {}
    });
}

/// `DimseReader` as the server drives it: commands, and the data set after
/// each command that announces one, until an error.
pub fn dimse_reader(data: &[u8]) {
    let (selector, bytes) = split(data);
    runtime().block_on(async {
        let pdus = PduReader::new(bytes, MAX_PDU[selector as usize % MAX_PDU.len()]);
        let mut reader = DimseReader::new(pdus);
        loop {
            match reader.next_command().await {
                Ok(Received::Command { context_id, command }) => {
                    if command.has_data_set() {
                        let limit = 1 << 20;
                        let result = if selector & 0x80 == 0 {
                            reader.read_data_set(context_id, limit).await.map(drop)
                        } else {
                            reader.skip_data_set(context_id, limit).await
                        };
                        if result.is_err() {
                            return;
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
}

/// `transcode` between two native syntaxes picked by the first byte; what it
/// produces must be readable in the target syntax whenever the input was
/// readable in the source one.
pub fn transcode(data: &[u8]) {
    let (selector, bytes) = split(data);
    let from = syntax(NATIVE[selector as usize % NATIVE.len()]);
    let to = syntax(NATIVE[(selector as usize / NATIVE.len()) % NATIVE.len()]);
    let Ok(output) = haneul_dicom::transcode::transcode(bytes, from, to) else {
        return;
    };
    if read_dataset_bytes(bytes, from).is_ok() {
        if let Err(error) = read_dataset_bytes(&output, to) {
            panic!("transcoding {} -> {} produced an unreadable data set: {error}", from.name, to.name);
        }
    }
}

/// Rules `coerce` picks from with the low bits of its first byte.
fn coercion_rules(selector: u8) -> haneul_dicom::coerce::CoercionRules {
    use haneul_dicom::coerce::CoercionRules;
    use haneul_dicom::{tags, VR};
    // Bits 0-3 all set: a study moved to another patient (a corrected copy) instead of the ID rules.
    if selector & 0x0F == 0x0F {
        return CoercionRules {
            issuer_of_patient_id: Some("HOSP_B".into()),
            patient_id: Some("P-2".into()),
            remove_other_patient_attributes: true,
            set: [
                (tags::PATIENT_NAME, (VR::PN, "Kim^Minsu".to_string())),
                (tags::PATIENT_BIRTH_DATE, (VR::DA, String::new())),
                (tags::STUDY_DESCRIPTION, (VR::LO, "CT CHEST".to_string())),
            ]
            .into(),
            character_set: Some("ISO_IR 192".to_string()),
            remove_private_tags: true,
            reason: "CORRECT".into(),
            modifying_system: "HANEUL".into(),
            ..CoercionRules::default()
        };
    }
    CoercionRules {
        issuer_of_patient_id: (selector & 1 != 0).then(|| "HOSP_A".to_string()),
        patient_id_prefix: (selector & 2 != 0).then(|| "A-".to_string()),
        patient_id_map: if selector & 2 != 0 {
            [("12345".to_string(), "P77".to_string()), (String::new(), "UNKNOWN".to_string())].into()
        } else {
            Default::default()
        },
        character_set: (selector & 4 != 0).then(|| "ISO_IR 192".to_string()),
        remove_private_tags: selector & 8 != 0,
        modifying_system: "HANEUL".into(),
        source_of_previous_values: "FUZZ".into(),
        ..CoercionRules::default()
    }
}

/// `coerce_part10` (import coercion rules, corrected copies) with the rules
/// picked by bits 0-3 of the first byte. The rest is a whole file or, with bit 7 set, a data set put
/// behind a file meta group in the syntax picked by bits 4-6 (one of
/// [`SYNTAXES`]). Whenever the input's data set reads, the output's must read
/// too, and an unchanged non-deflated output must equal the input.
pub fn coerce(data: &[u8]) {
    use haneul_dicom::meta::{encode_file_meta, NewFileMeta};
    let (selector, rest) = split(data);
    let file = if selector & 0x80 != 0 {
        let uid = SYNTAXES[usize::from((selector >> 4) & 0x07) % SYNTAXES.len()];
        let mut file = encode_file_meta(&NewFileMeta {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2",
            sop_instance_uid: "1.2.3.4",
            transfer_syntax_uid: uid,
            source_ae_title: Some("FUZZ"),
        });
        file.extend_from_slice(rest);
        file
    } else {
        rest.to_vec()
    };
    let rules = coercion_rules(selector);
    let mut output = Vec::new();
    let Ok(outcome) =
        haneul_dicom::coerce::coerce_part10(&mut Cursor::new(&file), &mut output, &rules, "20261123101500+0000")
    else {
        return;
    };
    let Ok(FileLayout::Part10(meta)) = read_file_layout(&mut Cursor::new(file.as_slice())) else {
        panic!("coerced a file without file meta information");
    };
    let Some(syntax) = ts::lookup(&meta.transfer_syntax_uid) else {
        panic!("coerced a file in an unknown transfer syntax");
    };
    if !outcome.changed && !syntax.deflated {
        assert!(output == file, "nothing changed, yet the output differs from the input");
    }
    let start = usize::try_from(meta.dataset_offset).unwrap_or(usize::MAX).min(file.len());
    if read_dataset_bytes(&file[start..], syntax).is_ok() {
        let out_start = usize::try_from(meta.dataset_offset).unwrap_or(usize::MAX).min(output.len());
        if let Err(error) = read_dataset_bytes(&output[out_start..], syntax) {
            panic!("coercion made a readable data set unreadable: {error}");
        }
    }
}

/// Levels a QIDO-RS search can be at.
const QIDO_LEVELS: [haneul_dicom::levels::Level; 3] =
    [haneul_dicom::levels::Level::Study, haneul_dicom::levels::Level::Series, haneul_dicom::levels::Level::Image];

/// QIDO-RS parameters as the HTTP edge hands them over (already
/// percent-decoded name/value pairs) into the shared C-FIND query model; a
/// query that parses must also answer and match a data set.
pub fn qido_params(data: &[u8]) {
    let (selector, bytes) = split(data);
    let level = QIDO_LEVELS[selector as usize % QIDO_LEVELS.len()];
    let text = String::from_utf8_lossy(bytes);
    let params: Vec<(String, String)> = text
        .split('&')
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (name.to_string(), value.to_string())
        })
        .collect();
    let Ok(request) = haneul_dicom::qido::parse(level, &[], &params) else {
        return;
    };
    let mut candidate = haneul_dicom::Dataset::new();
    for (tag, vr, value) in [
        (haneul_dicom::tags::PATIENT_NAME, haneul_dicom::VR::PN, "김^민지=金^珉志=김^민지"),
        (haneul_dicom::tags::STUDY_DATE, haneul_dicom::VR::DA, "20261120"),
        (haneul_dicom::tags::STUDY_TIME, haneul_dicom::VR::TM, "101500.25"),
        (haneul_dicom::tags::MODALITY, haneul_dicom::VR::CS, "CT"),
        (haneul_dicom::tags::STUDY_INSTANCE_UID, haneul_dicom::VR::UI, "1.2.3.4"),
    ] {
        candidate.put(haneul_dicom::Element::text(tag, vr, value));
    }
    let _ = request.query.matches(&candidate);
    let _ = request.query.response(&candidate);
}

/// DICOM JSON (STOW-RS metadata parts): what reads must write and read again
/// to the same data set.
pub fn dicom_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let no_bulk = |_: &str| None;
    let Ok(datasets) = haneul_dicom::json::read_array(text, &no_bulk) else {
        return;
    };
    let mut written = String::new();
    let bulk = |_: &str, _: &haneul_dicom::BulkRef| String::new();
    haneul_dicom::json::write_array(&mut written, &datasets, &bulk);
    match haneul_dicom::json::read_array(&written, &no_bulk) {
        Ok(again) => assert_eq!(again.len(), datasets.len(), "round trip changed the number of data sets"),
        Err(error) => panic!("DICOM JSON written from a parsed document does not read back: {error}"),
    }
}

/// Transfer syntaxes `pixel_frame` decodes in.
const PIXEL_SYNTAXES: [&str; 9] = [
    ts::EXPLICIT_VR_LITTLE_ENDIAN,
    "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90",
];

/// A frame of pixel data as WADO-RS frames and rendered resources decode it:
/// the image attributes come from the first bytes, the frame from the rest.
/// Encapsulated values are split into frames; what decodes is rendered.
pub fn pixel_frame(data: &[u8]) {
    use haneul_dicom::{tags, Dataset, Element, Value, VR};
    if data.len() < 4 {
        return;
    }
    let (head, frame) = data.split_at(4);
    let syntax = PIXEL_SYNTAXES[head[0] as usize % PIXEL_SYNTAXES.len()];
    let rows = u16::from(head[1] % 64) + 1;
    let columns = u16::from(head[2] % 64) + 1;
    let (bits, samples, photometric) = match head[3] % 6 {
        0 => (8, 1, "MONOCHROME2"),
        1 => (16, 1, "MONOCHROME1"),
        2 => (8, 3, "RGB"),
        3 => (8, 3, "YBR_FULL_422"),
        4 => (16, 1, "MONOCHROME2"),
        _ => (8, 1, "PALETTE COLOR"),
    };
    let mut ds = Dataset::new();
    for (tag, value) in [
        (tags::ROWS, rows),
        (tags::COLUMNS, columns),
        (tags::BITS_ALLOCATED, bits),
        (tags::BITS_STORED, bits),
        (tags::HIGH_BIT, bits - 1),
        (tags::SAMPLES_PER_PIXEL, samples),
        (tags::PIXEL_REPRESENTATION, u16::from(head[3] & 0x80 != 0)),
    ] {
        ds.put(Element::new(tag, VR::US, Value::U16(vec![value])));
    }
    ds.put(Element::text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, photometric));
    let Ok(info) = haneul_pixel::ImageInfo::from_dataset(&ds) else {
        return;
    };
    if let Ok(encapsulated) = haneul_pixel::split_encapsulated(frame) {
        let _ = haneul_pixel::frames_of_fragment_bytes(1 + u32::from(head[1] % 4), &encapsulated, None);
    }
    let Ok(decoded) = haneul_pixel::decode_frame(&info, syntax, frame) else {
        return;
    };
    let options = haneul_pixel::RenderOptions {
        format: haneul_pixel::ImageFormat::Png,
        quality: 90,
        window: None,
        viewport: Some(haneul_pixel::Viewport { width: 32, height: 32, source: None }),
    };
    let _ = haneul_pixel::render_decoded(&info, 0, &decoded, &options);
}

/// Specific Character Set values `charset_decode` picks from: every kind of
/// code the decoder has (default repertoire, single-byte parts, whole-value
/// codes, ISO 2022 with one or several double-byte sets) plus odd spellings.
const CHARSETS: [&str; 24] = [
    "",
    "ISO_IR 100",
    "ISO_IR 101",
    "ISO_IR 126",
    "ISO_IR 127",
    "ISO_IR 138",
    "ISO_IR 144",
    "ISO_IR 148",
    "ISO_IR 166",
    "ISO_IR 13",
    "ISO_IR 203",
    "ISO_IR 192",
    "GB18030",
    "GBK",
    "\\ISO 2022 IR 149",
    "ISO 2022 IR 6\\ISO 2022 IR 87",
    "\\ISO 2022 IR 87\\ISO 2022 IR 159",
    "ISO 2022 IR 13\\ISO 2022 IR 87",
    "\\ISO 2022 IR 58",
    "ISO 2022 IR 149",
    "ISO 2022 IR 100\\ISO 2022 IR 149\\ISO 2022 IR 126",
    "ISO 2022 IR 166\\ISO 2022 IR 13\\ISO 2022 IR 87",
    "ISO_IR 192\\ISO 2022 IR 149",
    "iso-ir 100\\ bogus \\ISO 2022 IR 144",
];

/// The three ways a value's delimiters reset the ISO 2022 state.
const TEXT_KINDS: [haneul_dicom::charset::TextKind; 3] = [
    haneul_dicom::charset::TextKind::PersonName,
    haneul_dicom::charset::TextKind::MultiValued,
    haneul_dicom::charset::TextKind::Text,
];

/// `haneul_charset` decoding and encoding. The first byte picks the value's
/// kind (PN, multi-valued such as LO, or ST/LT/UT) and the Specific Character
/// Set: one of [`CHARSETS`], or, for the last selector, the raw (0008,0005)
/// value taken from the input up to its first newline. The rest is the value.
///
/// Decoding never fails. Whatever the set can encode, the same set must
/// decode back to the same text, as `SpecificCharacterSet::encode` promises:
/// checked for the decoded text and for the value read as UTF-8 text. A set
/// written out by `to_raw` must parse back to the same terms, and
/// `choose_for_texts` must pick a set that can carry the text.
pub fn charset_decode(data: &[u8]) {
    use haneul_dicom::charset::{choose_for_texts, SpecificCharacterSet};
    let (selector, rest) = split(data);
    let kind = TEXT_KINDS[selector as usize % TEXT_KINDS.len()];
    let choice = selector as usize / TEXT_KINDS.len() % (CHARSETS.len() + 1);
    let (set, value) = match CHARSETS.get(choice) {
        Some(name) => (SpecificCharacterSet::from_raw(name.as_bytes()), rest),
        None => {
            let (raw, value) = rest.split_at(rest.iter().position(|&byte| byte == b'\n').unwrap_or(rest.len()));
            (SpecificCharacterSet::from_raw(raw), value.get(1..).unwrap_or_default())
        }
    };
    let reparsed = SpecificCharacterSet::from_raw(&set.to_raw());
    assert_eq!(reparsed.terms(), set.terms(), "to_raw does not parse back to the same terms");

    let decoded = set.decode(value, kind);
    let texts = [decoded.as_str(), &String::from_utf8_lossy(value)];
    for text in texts {
        let encoded = set.encode(text, kind);
        if let Some(bytes) = &encoded {
            let again = set.decode(bytes, kind);
            assert_eq!(
                again,
                text,
                "{:?} ({kind:?}) encodes {text:?} as {bytes:?}, which decodes otherwise",
                set.terms()
            );
        }
        // The kind only decides where escapes go back to the initial state,
        // never whether a character can be written.
        assert_eq!(set.can_encode(text), encoded.is_some(), "can_encode disagrees with encode for {kind:?}");
        let chosen = choose_for_texts([text], std::slice::from_ref(&set));
        assert!(chosen.can_encode(text), "choose_for_texts picked {:?}, which cannot carry {text:?}", chosen.terms());
    }
}

/// Chunk sizes the `multipart` body arrives in (0: all at once), so that
/// boundaries and headers also straddle chunks as they do on a socket.
const BODY_CHUNKS: [usize; 4] = [0, 1, 7, 100];

/// STOW-RS request parsing as the server runs it
/// (`haneul_dicomweb::fuzzing::stow_multipart`: Content-Type, boundary,
/// multipart reader, part types and size limits, DICOM JSON metadata with
/// bulk data parts). The first byte picks the chunk size of the body and the
/// upload limit (bit 2: 256 bytes instead of the default 8 GiB); the
/// Content-Type follows up to the first newline, then the body.
///
/// Errors are answers; every Part 10 file built from JSON metadata must read
/// back, as ingest reads it.
pub fn multipart(data: &[u8]) {
    let (selector, rest) = split(data);
    let (content_type, body) = rest.split_at(rest.iter().position(|&byte| byte == b'\n').unwrap_or(rest.len()));
    let body = body.get(1..).unwrap_or_default();
    // A header value the server can read as text: visible ASCII, space and tab.
    let Some(content_type) = std::str::from_utf8(content_type)
        .ok()
        .filter(|text| text.bytes().all(|byte| byte == b'\t' || (0x20..0x7F).contains(&byte)))
    else {
        return;
    };
    let chunk = BODY_CHUNKS[selector as usize % BODY_CHUNKS.len()];
    let chunks: Vec<bytes::Bytes> = if chunk == 0 {
        vec![bytes::Bytes::copy_from_slice(body)]
    } else {
        body.chunks(chunk).map(bytes::Bytes::copy_from_slice).collect()
    };
    let limit = if selector & 4 == 0 { 8 << 30 } else { 256 };
    let parsed = runtime().block_on(haneul_dicomweb::fuzzing::stow_multipart(content_type, chunks, limit));
    let Ok(parts) = parsed else {
        return;
    };
    for file in parts.from_json.iter().flatten() {
        let layout = read_file_layout(&mut Cursor::new(file.as_slice()));
        let Ok(FileLayout::Part10(meta)) = layout else {
            panic!("a file built from DICOM JSON has no readable file meta: {layout:?}");
        };
        let start = usize::try_from(meta.dataset_offset).unwrap_or(usize::MAX).min(file.len());
        if let Err(error) = read_dataset_bytes(&file[start..], syntax(ts::EXPLICIT_VR_LITTLE_ENDIAN)) {
            panic!("a file built from DICOM JSON does not read back: {error}");
        }
    }
}

/// Chunk sizes a WADO-RS answer arrives in for `wado_multipart`.
const WADO_CHUNKS: [usize; 4] = [1, 2, 7, 64];

/// The reader of WADO-RS answers of a migration's DICOMweb source
/// (`haneul_migrate::multipart`): the first byte picks a chunk size, the
/// Content-Type follows up to the first newline, then the body. The reader
/// must emit its events in order (`read_all` checks), read the same parts
/// (or fail the same way) whether the body comes whole or in chunks, and
/// hold no more than a part's headers and a boundary between two chunks.
pub fn wado_multipart(data: &[u8]) {
    use haneul_migrate::multipart::{boundary_of, read_all, MultipartReader, MAX_HEADERS};
    let (selector, rest) = split(data);
    let (content_type, body) = rest.split_at(rest.iter().position(|&byte| byte == b'\n').unwrap_or(rest.len()));
    let body = body.get(1..).unwrap_or_default();
    let Ok(boundary) = std::str::from_utf8(content_type).map_err(drop).and_then(|text| boundary_of(text).map_err(drop))
    else {
        return;
    };
    let chunk = WADO_CHUNKS[selector as usize % WADO_CHUNKS.len()];
    let whole = read_all(&boundary, [body]);
    let chunked = read_all(&boundary, body.chunks(chunk));
    if whole != chunked {
        panic!("read whole: {whole:?}\nread in chunks of {chunk}: {chunked:?}");
    }
    let Ok(mut reader) = MultipartReader::new(&boundary) else {
        panic!("boundary_of gave a boundary the reader refuses: {boundary:?}");
    };
    let most = MAX_HEADERS + boundary.len() + 8;
    for piece in body.chunks(chunk) {
        reader.push(piece);
        loop {
            match reader.next_event() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
        if reader.buffered() > most {
            panic!("{} bytes held between chunks (at most {most} expected)", reader.buffered());
        }
    }
}

/// The public half of the key pair that signed the `backup_snapshot` seed
/// (its signing half was thrown away), so the fuzzer starts from a snapshot
/// that verifies.
const BACKUP_SEED_VERIFY_KEY: &str = "fbe4dfbc3c4bc17876ed115d64edf1061df591f2a76bf0b0c9a89dc4a5a6f66f";
const BACKUP_SNAPSHOT: &str = "20261124T101500Z";

/// A backup target in memory holding one snapshot's manifest and signature.
struct MemoryTarget(std::collections::BTreeMap<String, Vec<u8>>);

impl haneul_backup::Target for MemoryTarget {
    fn describe(&self) -> String {
        "memory".into()
    }
    fn locate(&self, key: &str) -> String {
        key.into()
    }
    fn object_size(&self, key: &str) -> std::io::Result<Option<u64>> {
        Ok(self.0.get(key).map(|bytes| bytes.len() as u64))
    }
    fn open(&self, key: &str) -> std::io::Result<Box<dyn std::io::Read + Send>> {
        let bytes = self.0.get(key).cloned().ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
        Ok(Box::new(Cursor::new(bytes)))
    }
    fn create(&self, _key: &str) -> std::io::Result<Box<dyn haneul_backup::NewObject>> {
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }
    fn list(&self, _prefix: &str) -> std::io::Result<Vec<String>> {
        Ok(vec![BACKUP_SNAPSHOT.into()])
    }
    fn claim_snapshot(&self, _name: &str) -> std::io::Result<bool> {
        Ok(false)
    }
}

/// How a restore judges a snapshot read from a backup, whose manifest and
/// signature are untrusted: the first byte says which of the two exist, two
/// more the signature's length, then the signature and the manifest. With
/// or without the key it must not panic, and a snapshot the key accepts is
/// one a restore without a key takes too, with the same manifest.
pub fn backup_snapshot(data: &[u8]) {
    use haneul_backup::{list_snapshots, SnapshotState, VerifyKey};
    let (present, rest) = split(data);
    let (length, rest) = match rest {
        [low, high, rest @ ..] => (usize::from(u16::from_le_bytes([*low, *high])), rest),
        _ => (0, rest),
    };
    let (signature, manifest) = rest.split_at(length.min(rest.len()));
    let mut objects = std::collections::BTreeMap::new();
    if present & 1 != 0 {
        objects.insert(format!("snapshots/{BACKUP_SNAPSHOT}/manifest.json"), manifest.to_vec());
    }
    if present & 2 != 0 {
        objects.insert(format!("snapshots/{BACKUP_SNAPSHOT}/manifest.sig"), signature.to_vec());
    }
    let target = MemoryTarget(objects);
    let mut public = [0u8; 32];
    for (index, byte) in public.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&BACKUP_SEED_VERIFY_KEY[2 * index..2 * index + 2], 16).expect("hex");
    }
    let key = VerifyKey::from_public(public);
    let signed = list_snapshots(&target, Some(&key)).expect("a listing in memory");
    let unsigned = list_snapshots(&target, None).expect("a listing in memory");
    if let SnapshotState::Complete(manifest) = &signed[0].state {
        match &unsigned[0].state {
            SnapshotState::Complete(same) if same == manifest => {}
            other => panic!("signed and complete, but without the key: {other:?}"),
        }
    }
}
