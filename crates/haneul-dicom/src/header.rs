//! Reading the header of a stored or imported instance file.

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};

use crate::meta::{read_layout, FileLayout, FileMeta};
use crate::read::{read_dataset, ParsedDataset, ReadError, ReadOptions, SeekSource};
use crate::ts::{self, TransferSyntax};

/// The file meta information and parsed header of one instance file.
#[derive(Debug, Clone)]
pub struct InstanceHeader {
    /// `None` for a bare data set without meta information.
    pub meta: Option<FileMeta>,
    pub transfer_syntax: &'static TransferSyntax,
    /// Offset of the data set in the file.
    pub dataset_offset: u64,
    pub parsed: ParsedDataset,
}

/// Read a file's meta group and its data set up to and including the extent
/// of Pixel Data; the pixel data itself is skipped, not read.
pub fn read_instance_header(file: &mut File, options: &ReadOptions) -> Result<InstanceHeader, ReadError> {
    let length = file.metadata()?.len();
    file.seek(SeekFrom::Start(0))?;
    let mut buffered = BufReader::with_capacity(64 * 1024, &mut *file);
    let layout = read_layout(&mut buffered)?;
    drop(buffered);
    let (meta, ts_uid, dataset_offset) = match layout {
        FileLayout::Part10(meta) => {
            let uid = meta.transfer_syntax_uid.clone();
            let offset = meta.dataset_offset;
            (Some(meta), uid, offset)
        }
        FileLayout::BareDataset { transfer_syntax_uid } => (None, transfer_syntax_uid.to_string(), 0),
    };
    let transfer_syntax = ts::lookup(&ts_uid).ok_or(ReadError::UnsupportedTransferSyntax(ts_uid))?;
    file.seek(SeekFrom::Start(dataset_offset))?;
    let source = SeekSource::new(BufReader::with_capacity(64 * 1024, &mut *file), dataset_offset, length);
    let parsed = read_dataset(source, transfer_syntax, options)?;
    Ok(InstanceHeader { meta, transfer_syntax, dataset_offset, parsed })
}
