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
