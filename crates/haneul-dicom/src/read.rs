//! A streaming data set reader that never holds pixel data in memory.
//!
//! It reads element by element from any byte source, decodes text with the
//! data set's own Specific Character Set (ISO 2022 included, through
//! `haneul-charset`), turns large binary values into [`BulkRef`]s, and — in
//! header mode — stops after scanning Pixel Data, whose extent it checks so
//! that a truncated instance is refused at ingest instead of discovered years later.

use std::io::{self, Read, Seek, SeekFrom};

use dicom_core::{Tag, VR};
use haneul_charset::{SpecificCharacterSet, TextKind};

use crate::dict;
use crate::model::{BulkRef, Dataset, Element, Value};
use crate::tags;
use crate::ts::TransferSyntax;

const UNDEFINED_LENGTH: u32 = 0xFFFF_FFFF;
const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_DELIMITATION: Tag = Tag(0xFFFE, 0xE00D);
const SEQUENCE_DELIMITATION: Tag = Tag(0xFFFE, 0xE0DD);

/// Why a data set could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("data set truncated at offset {offset}")]
    Truncated { offset: u64 },
    #[error("invalid VR bytes {bytes:02X?} for element {tag} at offset {offset}")]
    InvalidVr { tag: Tag, bytes: [u8; 2], offset: u64 },
    #[error("element {tag} at offset {offset} overruns its enclosing item or sequence")]
    Overrun { tag: Tag, offset: u64 },
    #[error("unexpected {tag} at offset {offset}")]
    Unexpected { tag: Tag, offset: u64 },
    #[error("sequences nested deeper than {0} levels")]
    TooDeep(u32),
    #[error("element {tag} at offset {offset} has an undefined length but is not a sequence")]
    UndefinedLength { tag: Tag, offset: u64 },
    #[error("encapsulated pixel data has more than {0} fragments")]
    TooManyFragments(usize),
    #[error("not a DICOM file: {0}")]
    NotDicom(String),
    #[error("unsupported transfer syntax {0}")]
    UnsupportedTransferSyntax(String),
}

pub type Result<T> = std::result::Result<T, ReadError>;

/// Limits and mode of a read.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Binary values longer than this stay in the file as [`Value::Bulk`].
    pub bulk_threshold: u64,
    /// Any value longer than this (text included) stays in the file.
    pub max_inline_value: u64,
    /// Stop once top-level Pixel Data has been scanned (header mode).
    pub stop_after_pixel_data: bool,
    pub max_depth: u32,
    pub max_fragments: usize,
    /// Most bytes a deflated data set may inflate to (a deflate bomb ends
    /// the read instead of keeping a thread busy for ever).
    pub max_inflated: u64,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            bulk_threshold: 1024,
            max_inline_value: 1 << 20,
            stop_after_pixel_data: true,
            max_depth: 32,
            max_fragments: 4_000_000,
            max_inflated: 4 << 30,
        }
    }
}

/// Where the pixel data of an instance lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PixelDataInfo {
    pub tag: Tag,
    pub vr: VR,
    /// Offset of the value (native) or of the first item (encapsulated), in the data set stream.
    pub offset: u64,
    /// Value length for native pixel data; `None` when encapsulated.
    pub length: Option<u64>,
    /// Encapsulated only: every item after the Basic Offset Table, as (offset of data, length).
    pub fragments: Vec<(u64, u64)>,
    /// Encapsulated only: the Basic Offset Table item's (offset, length).
    pub offset_table: Option<(u64, u64)>,
}

/// The result of reading a data set.
#[derive(Debug, Clone)]
pub struct ParsedDataset {
    pub dataset: Dataset,
    pub pixel_data: Option<PixelDataInfo>,
    /// Number of data set bytes consumed.
    pub consumed: u64,
}

/// A byte source that can also skip ahead, failing when it runs short.
pub trait Source: Read {
    fn skip(&mut self, n: u64) -> io::Result<()>;
    /// Bytes left, when the source knows; lets the reader refuse absurd
    /// lengths before allocating for them.
    fn remaining(&self) -> Option<u64> {
        None
    }
}

/// A source over a plain reader: skipping reads and discards.
pub struct StreamSource<R>(pub R);

impl<R: Read> Read for StreamSource<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Read> Source for StreamSource<R> {
    fn skip(&mut self, n: u64) -> io::Result<()> {
        let copied = io::copy(&mut (&mut self.0).take(n), &mut io::sink())?;
        if copied < n {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }
}

/// A source over a seekable reader of known length: skipping seeks.
pub struct SeekSource<R> {
    inner: R,
    position: u64,
    end: u64,
}

impl<R: Read + Seek> SeekSource<R> {
    /// `position` is the reader's current absolute position, `end` its length.
    pub fn new(inner: R, position: u64, end: u64) -> Self {
        SeekSource { inner, position, end }
    }
}

impl<R: Read + Seek> Read for SeekSource<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.position += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> Source for SeekSource<R> {
    fn skip(&mut self, n: u64) -> io::Result<()> {
        if self.position.saturating_add(n) > self.end {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let delta = i64::try_from(n).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        self.inner.seek(SeekFrom::Current(delta))?;
        self.position += n;
        Ok(())
    }

    fn remaining(&self) -> Option<u64> {
        Some(self.end.saturating_sub(self.position))
    }
}

/// Read a data set from `source`, encoded in `ts` (deflate is undone here).
pub fn read_dataset<S: Source>(source: S, ts: &TransferSyntax, options: &ReadOptions) -> Result<ParsedDataset> {
    if ts.deflated {
        let inflated = StreamSource(inflate_limited(source, options.max_inflated));
        return Parser::new(inflated, ts, options).run();
    }
    Parser::new(source, ts, options).run()
}

/// A reader that fails once more than `limit` bytes came out of it.
struct InflateLimit<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Read for InflateLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // Anything more is beyond the limit; the end of the stream is not.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("deflated data set inflates to more than {} bytes", self.limit),
                )),
            };
        }
        let wanted = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let read = self.inner.read(&mut buf[..wanted])?;
        self.left -= read as u64;
        Ok(read)
    }
}

/// Tag, VR and value length of an element header whose four tag bytes were
/// read at stream offset `start`; `more` supplies the rest of the header.
/// Shared with the coercer, which copies headers as they were read.
pub(crate) fn decode_header<E: From<ReadError>>(
    tag_bytes: [u8; 4],
    explicit_vr: bool,
    big_endian: bool,
    start: u64,
    mut more: impl FnMut(&mut [u8]) -> std::result::Result<(), E>,
) -> std::result::Result<(Tag, VR, u32), E> {
    let u16_from = |b: [u8; 2]| if big_endian { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) };
    let u32_from = |b: [u8; 4]| if big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) };
    let tag = Tag(u16_from([tag_bytes[0], tag_bytes[1]]), u16_from([tag_bytes[2], tag_bytes[3]]));
    // Items and delimiters never carry a VR, whatever the syntax.
    if tag.group() == 0xFFFE || !explicit_vr {
        let mut len = [0u8; 4];
        more(&mut len)?;
        let vr = if tag.group() == 0xFFFE { VR::UN } else { dict::implicit_vr(tag) };
        return Ok((tag, vr, u32_from(len)));
    }
    let mut vr_bytes = [0u8; 2];
    more(&mut vr_bytes)?;
    let vr = match VR::from_binary(vr_bytes) {
        Some(vr) => vr,
        // A future VR: PS3.5 7.1.2 says to read it with the long form, as UN.
        None if vr_bytes.iter().all(u8::is_ascii_uppercase) => VR::UN,
        None => return Err(ReadError::InvalidVr { tag, bytes: vr_bytes, offset: start }.into()),
    };
    let long_form = VR::from_binary(vr_bytes).is_none() || has_long_length(vr);
    let length = if long_form {
        let mut rest = [0u8; 6];
        more(&mut rest)?;
        u32_from([rest[2], rest[3], rest[4], rest[5]])
    } else {
        let mut len = [0u8; 2];
        more(&mut len)?;
        u32::from(u16_from(len))
    };
    Ok((tag, vr, length))
}

/// A deflated data set inflated, at most `limit` bytes of it.
pub(crate) fn inflate_limited<R: Read>(source: R, limit: u64) -> impl Read {
    InflateLimit { inner: flate2::read::DeflateDecoder::new(source), left: limit, limit }
}

/// Read a small data set held in memory (C-FIND identifiers, command payloads).
pub fn read_dataset_bytes(bytes: &[u8], ts: &TransferSyntax) -> Result<Dataset> {
    let options = ReadOptions {
        stop_after_pixel_data: false,
        // Identifiers are small; the cap only bounds what a deflate bomb could allocate.
        bulk_threshold: 64 << 20,
        max_inline_value: 64 << 20,
        max_inflated: 64 << 20,
        ..ReadOptions::default()
    };
    let source = SeekSource::new(io::Cursor::new(bytes), 0, bytes.len() as u64);
    read_dataset(source, ts, &options).map(|parsed| parsed.dataset)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// Until the stream ends.
    Stream,
    /// Until this stream position (defined-length item).
    At(u64),
    /// Until an Item Delimitation element.
    Delimiter,
}

struct Header {
    tag: Tag,
    vr: VR,
    length: u32,
    /// Stream offset where the element began.
    start: u64,
}

struct Parser<'o, S> {
    source: S,
    position: u64,
    explicit_vr: bool,
    big_endian: bool,
    options: &'o ReadOptions,
    pixel_data: Option<PixelDataInfo>,
}

impl<'o, S: Source> Parser<'o, S> {
    fn new(source: S, ts: &TransferSyntax, options: &'o ReadOptions) -> Self {
        Parser {
            source,
            position: 0,
            explicit_vr: ts.explicit_vr,
            big_endian: ts.big_endian,
            options,
            pixel_data: None,
        }
    }

    fn run(mut self) -> Result<ParsedDataset> {
        let dataset = self.read_dataset(End::Stream, SpecificCharacterSet::default_repertoire(), 0)?;
        Ok(ParsedDataset { dataset, pixel_data: self.pixel_data, consumed: self.position })
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        match self.source.read_exact(buf) {
            Ok(()) => {
                self.position += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(ReadError::Truncated { offset: self.position }),
            Err(e) => Err(e.into()),
        }
    }

    /// Fill `buf`, or report a clean end of stream if nothing at all was left.
    fn read_exact_or_end(&mut self, buf: &mut [u8]) -> Result<bool> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.source.read(&mut buf[filled..]) {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(0) => return Err(ReadError::Truncated { offset: self.position + filled as u64 }),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        self.position += buf.len() as u64;
        Ok(true)
    }

    fn skip(&mut self, n: u64) -> Result<()> {
        match self.source.skip(n) {
            Ok(()) => {
                self.position += n;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(ReadError::Truncated { offset: self.position }),
            Err(e) => Err(e.into()),
        }
    }

    fn read_header(&mut self) -> Result<Option<Header>> {
        let start = self.position;
        let mut tag_bytes = [0u8; 4];
        if !self.read_exact_or_end(&mut tag_bytes)? {
            return Ok(None);
        }
        let (explicit_vr, big_endian) = (self.explicit_vr, self.big_endian);
        let (tag, vr, length) = decode_header(tag_bytes, explicit_vr, big_endian, start, |buf| self.read_exact(buf))?;
        Ok(Some(Header { tag, vr, length, start }))
    }

    fn read_dataset(&mut self, end: End, inherited: SpecificCharacterSet, depth: u32) -> Result<Dataset> {
        if depth > self.options.max_depth {
            return Err(ReadError::TooDeep(self.options.max_depth));
        }
        let mut charset = inherited;
        let mut dataset = Dataset::new();
        loop {
            if let End::At(limit) = end {
                if self.position >= limit {
                    break;
                }
            }
            let Some(header) = self.read_header()? else {
                if end == End::Stream {
                    break;
                }
                return Err(ReadError::Truncated { offset: self.position });
            };
            if header.tag == ITEM_DELIMITATION {
                if end == End::Delimiter {
                    break;
                }
                return Err(ReadError::Unexpected { tag: header.tag, offset: header.start });
            }
            if header.tag.group() == 0xFFFE {
                return Err(ReadError::Unexpected { tag: header.tag, offset: header.start });
            }
            if let End::At(limit) = end {
                let value_end = self.position.saturating_add(u64::from(header.length));
                if header.length != UNDEFINED_LENGTH && value_end > limit {
                    return Err(ReadError::Overrun { tag: header.tag, offset: header.start });
                }
            }
            if depth == 0 && is_pixel_data(header.tag) {
                self.read_top_level_pixel_data(&header)?;
                if self.options.stop_after_pixel_data {
                    break;
                }
                continue;
            }
            let element = self.read_element(header, &charset, depth)?;
            if let Some(element) = element {
                if element.tag == tags::SPECIFIC_CHARACTER_SET {
                    charset = SpecificCharacterSet::from_terms(element.value.to_strings().as_slice());
                }
                dataset.push_read(element);
            }
            if let End::At(limit) = end {
                if self.position > limit {
                    return Err(ReadError::Overrun { tag: Tag(0xFFFE, 0xE000), offset: self.position });
                }
            }
        }
        Ok(dataset)
    }

    /// Read one element's value; group lengths are dropped (`None`).
    fn read_element(&mut self, header: Header, charset: &SpecificCharacterSet, depth: u32) -> Result<Option<Element>> {
        let Header { tag, vr, length, start } = header;
        // PS3.5 6.2.2: a receiver that knows an attribute sent as UN may read
        // its value as Implicit VR Little Endian with the dictionary's VR.
        // Writers that lost the VR (de-identifiers, old converters) do this to
        // key attributes such as the SOP Instance UID.
        let dictionary_vr = if vr == VR::UN && self.explicit_vr { dict::implicit_vr(tag) } else { VR::UN };
        if dictionary_vr != VR::UN && length != UNDEFINED_LENGTH {
            return self.read_element_sent_as_un(tag, dictionary_vr, length, charset, depth);
        }
        let undefined = length == UNDEFINED_LENGTH;
        // Implicit VR names no VR: an undefined length there (other than
        // encapsulated pixel data) can only be a sequence, whatever the
        // dictionary says of the tag (a sequence written on a tag the
        // dictionary knows as something else, as transcoding one does).
        let implicit_sequence = undefined && !self.explicit_vr && !is_pixel_data(tag);
        let is_sequence = vr == VR::SQ || (undefined && vr == VR::UN) || implicit_sequence;
        if is_sequence {
            let items = if vr == VR::UN {
                // PS3.5 6.2.2: an undefined-length UN is a sequence in Implicit VR Little Endian.
                let saved = (self.explicit_vr, self.big_endian);
                self.explicit_vr = false;
                self.big_endian = false;
                let items = self.read_sequence(length, charset, depth);
                (self.explicit_vr, self.big_endian) = saved;
                items?
            } else {
                self.read_sequence(length, charset, depth)?
            };
            return Ok(Some(Element::new(tag, VR::SQ, Value::Sequence(items))));
        }
        if undefined {
            if is_pixel_data(tag) {
                // Encapsulated pixel data below the top level (icon images).
                let offset = self.position;
                self.scan_fragments()?;
                return Ok(Some(Element::new(tag, vr, Value::Bulk(BulkRef { offset, length: None }))));
            }
            return Err(ReadError::UndefinedLength { tag, offset: start });
        }
        let length = u64::from(length);
        if tag.element() == 0x0000 {
            self.skip(length)?;
            return Ok(None);
        }
        let limit = if is_binary_vr(vr) { self.options.bulk_threshold } else { self.options.max_inline_value };
        if length > limit.min(self.options.max_inline_value) {
            let offset = self.position;
            self.skip(length)?;
            return Ok(Some(Element::new(tag, vr, Value::Bulk(BulkRef { offset, length: Some(length) }))));
        }
        if self.source.remaining().is_some_and(|left| length > left) {
            return Err(ReadError::Truncated { offset: self.position });
        }
        let mut raw = vec![0u8; length as usize];
        self.read_exact(&mut raw)?;
        let value = self.decode_value(vr, raw, charset);
        Ok(Some(Element::new(tag, vr, value)))
    }

    /// A known attribute encoded as UN: its value is in Implicit VR Little Endian.
    fn read_element_sent_as_un(
        &mut self,
        tag: Tag,
        vr: VR,
        length: u32,
        charset: &SpecificCharacterSet,
        depth: u32,
    ) -> Result<Option<Element>> {
        let saved = (self.explicit_vr, self.big_endian);
        self.explicit_vr = false;
        self.big_endian = false;
        let element = if vr == VR::SQ {
            self.read_sequence(length, charset, depth)
                .map(|items| Some(Element::new(tag, VR::SQ, Value::Sequence(items))))
        } else {
            let header = Header { tag, vr, length, start: self.position };
            self.read_element(header, charset, depth)
        };
        (self.explicit_vr, self.big_endian) = saved;
        element
    }

    fn read_sequence(&mut self, length: u32, charset: &SpecificCharacterSet, depth: u32) -> Result<Vec<Dataset>> {
        let end = (length != UNDEFINED_LENGTH).then(|| self.position + u64::from(length));
        let mut items = Vec::new();
        loop {
            if let Some(end) = end {
                if self.position == end {
                    break;
                }
                if self.position > end {
                    return Err(ReadError::Overrun { tag: ITEM, offset: self.position });
                }
            }
            let Some(header) = self.read_header()? else {
                return Err(ReadError::Truncated { offset: self.position });
            };
            match header.tag {
                SEQUENCE_DELIMITATION if end.is_none() => break,
                ITEM => {
                    let item_end = if header.length == UNDEFINED_LENGTH {
                        End::Delimiter
                    } else {
                        End::At(self.position + u64::from(header.length))
                    };
                    if let (End::At(item_end), Some(seq_end)) = (item_end, end) {
                        if item_end > seq_end {
                            return Err(ReadError::Overrun { tag: ITEM, offset: header.start });
                        }
                    }
                    items.push(self.read_dataset(item_end, charset.clone(), depth + 1)?);
                }
                other => return Err(ReadError::Unexpected { tag: other, offset: header.start }),
            }
        }
        Ok(items)
    }

    fn read_top_level_pixel_data(&mut self, header: &Header) -> Result<()> {
        let offset = self.position;
        if header.length == UNDEFINED_LENGTH {
            let (offset_table, fragments) = self.scan_fragments()?;
            self.pixel_data =
                Some(PixelDataInfo { tag: header.tag, vr: header.vr, offset, length: None, fragments, offset_table });
            return Ok(());
        }
        let length = u64::from(header.length);
        self.skip(length)?;
        self.pixel_data = Some(PixelDataInfo {
            tag: header.tag,
            vr: header.vr,
            offset,
            length: Some(length),
            fragments: Vec::new(),
            offset_table: None,
        });
        Ok(())
    }

    /// Walk encapsulated pixel data items up to the sequence delimiter,
    /// returning the Basic Offset Table and the fragments.
    #[allow(clippy::type_complexity)]
    fn scan_fragments(&mut self) -> Result<(Option<(u64, u64)>, Vec<(u64, u64)>)> {
        let mut offset_table = None;
        let mut fragments = Vec::new();
        loop {
            let Some(header) = self.read_item_header()? else {
                return Err(ReadError::Truncated { offset: self.position });
            };
            match header.tag {
                SEQUENCE_DELIMITATION => break,
                ITEM if header.length != UNDEFINED_LENGTH => {
                    let item = (self.position, u64::from(header.length));
                    self.skip(item.1)?;
                    if offset_table.is_none() && fragments.is_empty() {
                        offset_table = Some(item);
                    } else {
                        if fragments.len() >= self.options.max_fragments {
                            return Err(ReadError::TooManyFragments(self.options.max_fragments));
                        }
                        fragments.push(item);
                    }
                }
                other => return Err(ReadError::Unexpected { tag: other, offset: header.start }),
            }
        }
        Ok((offset_table, fragments))
    }

    /// Item headers inside encapsulated pixel data are always little endian.
    fn read_item_header(&mut self) -> Result<Option<Header>> {
        let start = self.position;
        let mut bytes = [0u8; 8];
        if !self.read_exact_or_end(&mut bytes)? {
            return Ok(None);
        }
        let tag = Tag(u16::from_le_bytes([bytes[0], bytes[1]]), u16::from_le_bytes([bytes[2], bytes[3]]));
        let length = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        Ok(Some(Header { tag, vr: VR::UN, length, start }))
    }

    fn decode_value(&self, vr: VR, raw: Vec<u8>, charset: &SpecificCharacterSet) -> Value {
        if raw.is_empty() {
            return Value::Empty;
        }
        let big = self.big_endian;
        match vr {
            VR::US => {
                Value::U16(chunks(&raw, |b: [u8; 2]| if big { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) }))
            }
            VR::SS => {
                Value::I16(chunks(&raw, |b: [u8; 2]| if big { i16::from_be_bytes(b) } else { i16::from_le_bytes(b) }))
            }
            VR::UL => {
                Value::U32(chunks(&raw, |b: [u8; 4]| if big { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) }))
            }
            VR::SL => {
                Value::I32(chunks(&raw, |b: [u8; 4]| if big { i32::from_be_bytes(b) } else { i32::from_le_bytes(b) }))
            }
            VR::UV => {
                Value::U64(chunks(&raw, |b: [u8; 8]| if big { u64::from_be_bytes(b) } else { u64::from_le_bytes(b) }))
            }
            VR::SV => {
                Value::I64(chunks(&raw, |b: [u8; 8]| if big { i64::from_be_bytes(b) } else { i64::from_le_bytes(b) }))
            }
            VR::FL => {
                Value::F32(chunks(&raw, |b: [u8; 4]| if big { f32::from_be_bytes(b) } else { f32::from_le_bytes(b) }))
            }
            VR::FD => {
                Value::F64(chunks(&raw, |b: [u8; 8]| if big { f64::from_be_bytes(b) } else { f64::from_le_bytes(b) }))
            }
            VR::AT => Value::Tags(chunks(&raw, |b: [u8; 4]| {
                let (group, element) = if big {
                    (u16::from_be_bytes([b[0], b[1]]), u16::from_be_bytes([b[2], b[3]]))
                } else {
                    (u16::from_le_bytes([b[0], b[1]]), u16::from_le_bytes([b[2], b[3]]))
                };
                (u32::from(group) << 16) | u32::from(element)
            })),
            VR::OW => Value::Bytes(to_little_endian(raw, 2, big)),
            VR::OF | VR::OL => Value::Bytes(to_little_endian(raw, 4, big)),
            VR::OD | VR::OV => Value::Bytes(to_little_endian(raw, 8, big)),
            VR::OB | VR::UN | VR::SQ => Value::Bytes(raw),
            _ => decode_text(vr, &raw, charset),
        }
    }
}

/// Decode a text VR value into trimmed values.
pub fn decode_text(vr: VR, raw: &[u8], charset: &SpecificCharacterSet) -> Value {
    let text = if is_charset_affected(vr) {
        charset.decode(raw, text_kind(vr))
    } else {
        // Default-repertoire VRs: bytes outside ASCII are invalid; keep them visible as Latin-1.
        raw.iter().map(|&b| char::from(b)).collect()
    };
    let values: Vec<String> = if is_single_valued_text(vr) {
        vec![trim_value(vr, &text).to_owned()]
    } else {
        text.split('\\').map(|v| trim_value(vr, v).to_owned()).collect()
    };
    if values.len() == 1 && values[0].is_empty() {
        return Value::Empty;
    }
    Value::Strings(values)
}

fn trim_value(vr: VR, value: &str) -> &str {
    let trailing = value.trim_end_matches([' ', '\0']);
    match vr {
        VR::UI => trailing.trim_start_matches([' ', '\0']),
        VR::ST | VR::LT | VR::UT | VR::UC | VR::PN | VR::UR => trailing,
        _ => trailing.trim_start_matches(' '),
    }
}

fn chunks<const N: usize, T>(raw: &[u8], convert: impl Fn([u8; N]) -> T) -> Vec<T> {
    raw.chunks_exact(N)
        .map(|chunk| {
            let mut bytes = [0u8; N];
            bytes.copy_from_slice(chunk);
            convert(bytes)
        })
        .collect()
}

fn to_little_endian(mut raw: Vec<u8>, unit: usize, big_endian: bool) -> Vec<u8> {
    if big_endian {
        for chunk in raw.chunks_exact_mut(unit) {
            chunk.reverse();
        }
    }
    raw
}

pub(crate) fn is_pixel_data(tag: Tag) -> bool {
    tag.group() == 0x7FE0 && matches!(tag.element(), 0x0008..=0x0010)
}

/// VRs whose explicit form uses a 4-byte length.
pub fn has_long_length(vr: VR) -> bool {
    matches!(
        vr,
        VR::OB
            | VR::OD
            | VR::OF
            | VR::OL
            | VR::OV
            | VR::OW
            | VR::SQ
            | VR::SV
            | VR::UC
            | VR::UN
            | VR::UR
            | VR::UT
            | VR::UV
    )
}

pub fn is_binary_vr(vr: VR) -> bool {
    matches!(vr, VR::OB | VR::OD | VR::OF | VR::OL | VR::OV | VR::OW | VR::UN)
}

/// VRs whose text is subject to Specific Character Set.
pub fn is_charset_affected(vr: VR) -> bool {
    matches!(vr, VR::SH | VR::LO | VR::UC | VR::ST | VR::LT | VR::UT | VR::PN)
}

pub fn is_text_vr(vr: VR) -> bool {
    matches!(
        vr,
        VR::AE
            | VR::AS
            | VR::CS
            | VR::DA
            | VR::DS
            | VR::DT
            | VR::IS
            | VR::LO
            | VR::LT
            | VR::PN
            | VR::SH
            | VR::ST
            | VR::TM
            | VR::UC
            | VR::UI
            | VR::UR
            | VR::UT
    )
}

pub fn is_single_valued_text(vr: VR) -> bool {
    matches!(vr, VR::ST | VR::LT | VR::UT | VR::UR)
}

pub fn text_kind(vr: VR) -> TextKind {
    match vr {
        VR::PN => TextKind::PersonName,
        VR::ST | VR::LT | VR::UT => TextKind::Text,
        _ => TextKind::MultiValued,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ts;

    fn explicit_le(tag: Tag, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&tag.group().to_le_bytes());
        out.extend_from_slice(&tag.element().to_le_bytes());
        out.extend_from_slice(vr);
        if has_long_length(VR::from_binary(*vr).expect("vr")) {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        }
        out.extend_from_slice(value);
        out
    }

    fn explicit() -> &'static TransferSyntax {
        ts::lookup(ts::EXPLICIT_VR_LITTLE_ENDIAN).expect("known")
    }

    #[test]
    fn decodes_korean_names_with_the_data_sets_character_set() {
        let mut bytes = explicit_le(Tag(0x0008, 0x0005), b"CS", b"\\ISO 2022 IR 149 ");
        bytes.extend(explicit_le(
            Tag(0x0010, 0x0010),
            b"PN",
            b"Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7=\x1b$)C\xc8\xab^\x1b$)C\xb1\xe6\xb5\xbf",
        ));
        let ds = read_dataset_bytes(&bytes, explicit()).expect("parses");
        assert_eq!(ds.string(Tag(0x0010, 0x0010)), Some("Hong^Gildong=洪^吉洞=홍^길동"));
    }

    #[test]
    fn a_deflate_bomb_ends_at_the_inflation_limit() {
        use std::io::Write;
        // 8 MiB of one OB value compress to a few KiB.
        let mut plain = explicit_le(Tag(0x0009, 0x1010), b"OB", &vec![0u8; 8 << 20]);
        plain.extend(explicit_le(Tag(0x0010, 0x0020), b"LO", b"P1"));
        let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&plain).unwrap();
        let compressed = encoder.finish().unwrap();
        assert!(compressed.len() < 64 << 10, "{} bytes", compressed.len());
        let deflated = ts::lookup(ts::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN).expect("known");
        let read = |max_inflated| {
            let options = ReadOptions { stop_after_pixel_data: false, max_inflated, ..ReadOptions::default() };
            let source = StreamSource(io::Cursor::new(compressed.clone()));
            read_dataset(source, deflated, &options)
        };
        let error = read(1 << 20).expect_err("beyond the limit");
        assert!(error.to_string().contains("inflates to more than 1048576 bytes"), "{error}");
        let parsed = read(plain.len() as u64).expect("exactly at the limit");
        assert_eq!(parsed.dataset.string(Tag(0x0010, 0x0020)), Some("P1"));
    }

    #[test]
    fn an_undefined_length_in_implicit_vr_is_a_sequence_whatever_the_dictionary_says() {
        // (0008,0001) is UL in the dictionary; here it holds an empty sequence.
        let bytes = [0x08, 0x00, 0x01, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0];
        let implicit = ts::lookup(ts::IMPLICIT_VR_LITTLE_ENDIAN).expect("known");
        let ds = read_dataset_bytes(&bytes, implicit).expect("parses");
        assert!(
            matches!(ds.get(Tag(0x0008, 0x0001)).map(|e| &e.value), Some(Value::Sequence(items)) if items.is_empty())
        );
    }

    #[test]
    fn splits_multi_values_and_trims_padding() {
        let bytes = explicit_le(Tag(0x0008, 0x0008), b"CS", b"ORIGINAL\\PRIMARY\\AXIAL ");
        let ds = read_dataset_bytes(&bytes, explicit()).expect("parses");
        assert_eq!(ds.strings(Tag(0x0008, 0x0008)), ["ORIGINAL", "PRIMARY", "AXIAL"]);
    }

    #[test]
    fn header_mode_stops_at_pixel_data_and_checks_its_extent() {
        let mut bytes = explicit_le(Tag(0x0028, 0x0010), b"US", &512u16.to_le_bytes());
        bytes.extend(explicit_le(Tag(0x7FE0, 0x0010), b"OW", &[0u8; 16]));
        let source = SeekSource::new(io::Cursor::new(bytes.clone()), 0, bytes.len() as u64);
        let parsed = read_dataset(source, explicit(), &ReadOptions::default()).expect("parses");
        let pixel = parsed.pixel_data.expect("pixel data found");
        assert_eq!(pixel.length, Some(16));
        assert_eq!(parsed.dataset.int(Tag(0x0028, 0x0010)), Some(512));

        let truncated = &bytes[..bytes.len() - 4];
        let source = SeekSource::new(io::Cursor::new(truncated), 0, truncated.len() as u64);
        let error = read_dataset(source, explicit(), &ReadOptions::default()).expect_err("truncated pixel data");
        assert!(matches!(error, ReadError::Truncated { .. }), "{error}");
    }

    #[test]
    fn nested_sequences_with_undefined_lengths() {
        let mut item = explicit_le(Tag(0x0008, 0x1150), b"UI", b"1.2.3\0");
        item.extend(explicit_le(Tag(0x0008, 0x1155), b"UI", b"1.2.3.4\0"));
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&[0x08, 0x00, 0x40, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        bytes.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        bytes.extend(&item);
        bytes.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        bytes.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        bytes.extend(explicit_le(Tag(0x0010, 0x0020), b"LO", b"P1"));
        let ds = read_dataset_bytes(&bytes, explicit()).expect("parses");
        let items = ds.items(Tag(0x0008, 0x1140));
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].string(Tag(0x0008, 0x1155)), Some("1.2.3.4"));
        assert_eq!(ds.string(Tag(0x0010, 0x0020)), Some("P1"));
    }

    #[test]
    fn defined_length_item_overrun_is_an_error() {
        let inner = explicit_le(Tag(0x0008, 0x1150), b"UI", b"1.2.3\0");
        let mut bytes = Vec::new();
        let seq_len = 8 + 4u32; // item header + a too-short item length
        bytes.extend_from_slice(&[0x08, 0x00, 0x40, 0x11, b'S', b'Q', 0, 0]);
        bytes.extend_from_slice(&seq_len.to_le_bytes());
        bytes.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
        bytes.extend_from_slice(&4u32.to_le_bytes());
        bytes.extend(&inner);
        assert!(read_dataset_bytes(&bytes, explicit()).is_err());
    }

    #[test]
    fn big_endian_numbers_and_words() {
        let ts = ts::lookup(ts::EXPLICIT_VR_BIG_ENDIAN).expect("known");
        let mut bytes = vec![0x00, 0x28, 0x00, 0x10, b'U', b'S', 0x00, 0x02, 0x02, 0x00];
        bytes.extend_from_slice(&[0x00, 0x28, 0x12, 0x01, b'O', b'W', 0, 0, 0, 0, 0, 4, 0x12, 0x34, 0x56, 0x78]);
        let ds = read_dataset_bytes(&bytes, ts).expect("parses");
        assert_eq!(ds.int(Tag(0x0028, 0x0010)), Some(512));
        assert_eq!(
            ds.get(Tag(0x0028, 0x1201)).map(|e| e.value.clone()),
            Some(Value::Bytes(vec![0x34, 0x12, 0x78, 0x56]))
        );
    }

    #[test]
    fn known_attributes_sent_as_un_are_read_with_their_dictionary_vr() {
        let mut bytes = explicit_le(Tag(0x0008, 0x0018), b"UN", b"1.2.3.4\0");
        bytes.extend(explicit_le(Tag(0x0028, 0x0010), b"UN", &512u16.to_le_bytes()));
        bytes.extend(explicit_le(Tag(0x0009, 0x1001), b"UN", b"\x01\x02"));
        let ds = read_dataset_bytes(&bytes, explicit()).expect("parses");
        assert_eq!(ds.string(Tag(0x0008, 0x0018)), Some("1.2.3.4"));
        assert_eq!(ds.get(Tag(0x0008, 0x0018)).map(|e| e.vr), Some(VR::UI));
        assert_eq!(ds.int(Tag(0x0028, 0x0010)), Some(512));
        assert_eq!(ds.get(Tag(0x0009, 0x1001)).map(|e| e.vr), Some(VR::UN), "private attributes stay UN");
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x2545F4914F6CDD1Du64;
        for round in 0..2000 {
            let len = (round % 97) + 1;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state & 0xFF) as u8
                })
                .collect();
            for uid in [ts::IMPLICIT_VR_LITTLE_ENDIAN, ts::EXPLICIT_VR_LITTLE_ENDIAN, ts::EXPLICIT_VR_BIG_ENDIAN] {
                let _ = read_dataset_bytes(&bytes, ts::lookup(uid).expect("known"));
            }
        }
    }
}
