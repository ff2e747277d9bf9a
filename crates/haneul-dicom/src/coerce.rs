//! Coercion of instances imported from a legacy archive, whose data rarely
//! follows the new archive's conventions: Issuer of Patient ID per source,
//! patient IDs mapped or prefixed, a wrong Specific Character Set
//! declaration replaced, private elements dropped — each original value kept
//! in an Original Attributes Sequence item (PS3.3 C.12.1.1.9.2).
//!
//! [`coerce_part10`] rewrites a Part 10 file in one pass, element by element
//! at the top level: what the rules do not touch is copied as raw bytes
//! (large values in chunks), undefined-length sequences are walked only to
//! find their end, and the file meta group is copied unchanged (the transfer
//! syntax stays). Text values are never decoded and re-encoded, except a
//! Patient ID taken from the map or with a non-ASCII prefix: a changed
//! declaration must apply to the very bytes that were received.
//!
//! The Original Attributes Sequence comes at (0400,0561), before the
//! private groups that follow it (Philips 2001, GE 7FE1, ...), so with
//! private elements to remove the output from that point on is held back
//! until the end, at most [`LOOKAHEAD`] bytes. Past that (large pixel data),
//! the sequence is written with what is known, and later private elements
//! are kept and named in [`CoercionOutcome::warnings`]; so are private
//! elements too large to keep as original values ([`MAX_ORIGINALS`]).
//!
//! Deflated Explicit VR Little Endian is inflated, rewritten and deflated
//! again, so its bytes differ from the input even when nothing changed
//! (`changed` is then false and callers keep the input).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{self, BufReader, BufWriter, Cursor, Read, Write};

use dicom_core::{Tag, VR};
use haneul_charset::{SpecificCharacterSet, TextKind};

use crate::dict;
use crate::meta::{read_layout, FileLayout};
use crate::model::{Dataset, Element};
use crate::read::{decode_header, has_long_length, inflate_limited, is_pixel_data, is_text_vr, ReadError};
use crate::tags;
use crate::transcode::transcode;
use crate::ts::{self, TransferSyntax};
use crate::write::{write_dataset, write_header, write_tag_length, Encoding};

/// Output held back, waiting for the Original Attributes Sequence, before it is written with what is known.
pub const LOOKAHEAD: usize = 8 << 20;
/// Most bytes of removed private elements kept as original values.
pub const MAX_ORIGINALS: usize = 64 << 20;
/// Longest file meta information accepted.
const MAX_META: usize = 1 << 20;
/// Most bytes a deflated data set may inflate to, as the reader allows.
const MAX_INFLATED: u64 = 4 << 30;
/// Longest value of an attribute the rules rewrite (they are short text).
const MAX_TEXT_VALUE: u32 = 1 << 16;
const MAX_DEPTH: u32 = 32;
const CHUNK: usize = 64 << 10;
const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_END: Tag = Tag(0xFFFE, 0xE00D);
const SEQUENCE_END: Tag = Tag(0xFFFE, 0xE0DD);
/// Reason for the Attribute Modification (0400,0565) of coerced values.
pub const REASON_COERCE: &str = "COERCE";
/// The reason for corrections made by a person (PS3.3 C.12.1.1.9.2).
pub const REASON_CORRECT: &str = "CORRECT";

/// What to change in instances received from one source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoercionRules {
    /// Issuer of Patient ID (0010,0021) set on every instance (replacing any value).
    pub issuer_of_patient_id: Option<String>,
    /// Patient ID (0010,0020) set on every instance, replacing any value or inserted where absent (a study moved
    /// to another patient). Not together with the map or the prefix.
    pub patient_id: Option<String>,
    /// Remove every other patient-level attribute (see [`crate::levels::level_of`]) that `set` does not give a
    /// value: a study moved to another patient keeps nothing of the one its files name.
    pub remove_other_patient_attributes: bool,
    /// Prefix put in front of Patient ID (0010,0020) (after the map, if the map has the ID).
    pub patient_id_prefix: Option<String>,
    /// Patient ID replacements, old -> new (applied first; an ID not in the map is kept, then prefixed).
    pub patient_id_map: BTreeMap<String, String>,
    /// Replace the Specific Character Set declaration (0008,0005) with this value (multi-valued written with '\'),
    /// only when the declared value equals `character_set_from` if that is given (None: always).
    pub character_set: Option<String>,
    /// The declaration to replace; compared by meaning (`ISO_IR 100` = `ISO-IR 100`), and `""` also
    /// matches a data set that declares nothing.
    pub character_set_from: Option<String>,
    /// Remove every private element (odd group) at the top level of the data set.
    pub remove_private_tags: bool,
    /// Top-level text attributes set to these values (decoded text, written in the data set's character set),
    /// replacing or inserting them. Not for the attributes the other rules change.
    pub set: BTreeMap<Tag, (VR, String)>,
    /// Reason for the Attribute Modification (0400,0565): [`REASON_COERCE`] when empty.
    pub reason: String,
    /// Modifying System (0400,0563) and Source of Previous Values (0400,0564) for the Original Attributes item.
    pub modifying_system: String,
    pub source_of_previous_values: String,
}

impl CoercionRules {
    /// True when no rule would change anything.
    pub fn is_empty(&self) -> bool {
        self.issuer_of_patient_id.is_none()
            && self.patient_id.is_none()
            && !self.remove_other_patient_attributes
            && self.patient_id_prefix.as_deref().is_none_or(str::is_empty)
            && self.patient_id_map.iter().all(|(old, new)| old == new)
            && self.character_set.is_none()
            && !self.remove_private_tags
            && self.set.is_empty()
    }

    /// Check that every value can be written where it goes (run by [`coerce_part10`]; for configuration checks).
    pub fn validate(&self) -> Result<(), CoerceError> {
        let long_string = |what: &str, value: &str| {
            if value.chars().count() > 64 {
                return Err(CoerceError::InvalidRule(format!("{what} is longer than 64 characters")));
            }
            if value.contains('\\') || value.chars().any(char::is_control) {
                return Err(CoerceError::InvalidRule(format!("{what} contains a backslash or a control character")));
            }
            Ok(())
        };
        if let Some(issuer) = &self.issuer_of_patient_id {
            long_string("issuer of patient id", issuer)?;
        }
        if let Some(prefix) = &self.patient_id_prefix {
            long_string("patient id prefix", prefix)?;
        }
        if let Some(patient_id) = &self.patient_id {
            long_string("patient id", patient_id)?;
            if patient_id.is_empty() {
                return Err(CoerceError::InvalidRule("the patient id to set is empty".into()));
            }
            if self.patient_id_prefix.as_deref().is_some_and(|prefix| !prefix.is_empty())
                || !self.patient_id_map.is_empty()
            {
                return Err(CoerceError::InvalidRule("a patient id to set excludes a patient id map or prefix".into()));
            }
        }
        for (old, new) in &self.patient_id_map {
            long_string("a patient id in the map", old)?;
            long_string("a patient id in the map", new)?;
        }
        long_string("modifying system", &self.modifying_system)?;
        long_string("source of previous values", &self.source_of_previous_values)?;
        for (what, value) in
            [("character set", &self.character_set), ("character set to replace", &self.character_set_from)]
        {
            let Some(value) = value else { continue };
            if !value.is_ascii() || value.chars().any(char::is_control) {
                return Err(CoerceError::InvalidRule(format!("{what} {value:?} is not plain ASCII")));
            }
        }
        for (tag, (vr, value)) in &self.set {
            if !settable_position(*tag) {
                return Err(CoerceError::InvalidRule(format!("{tag} cannot be set by a rule")));
            }
            if !is_text_vr(*vr) {
                return Err(CoerceError::InvalidRule(format!("{tag} has VR {vr:?}, not a text VR")));
            }
            let multi_line = matches!(vr, VR::LT | VR::ST | VR::UT);
            if value.chars().any(|c| c.is_control() && !(multi_line && matches!(c, '\r' | '\n' | '\t'))) {
                return Err(CoerceError::InvalidRule(format!("the value for {tag} contains a control character")));
            }
        }
        if let Some(value) = &self.character_set {
            if value.split('\\').any(|term| term.trim().len() > 16) {
                return Err(CoerceError::InvalidRule(format!("character set {value:?} has a term over 16 characters")));
            }
            if let Some(unknown) = SpecificCharacterSet::from_raw(value.as_bytes()).unknown_terms().first() {
                return Err(CoerceError::InvalidRule(format!("character set term {unknown:?} is not a defined term")));
            }
        }
        Ok(())
    }

    fn touches_patient_id(&self) -> bool {
        self.patient_id.is_some()
            || self.patient_id_prefix.as_deref().is_some_and(|prefix| !prefix.is_empty())
            || !self.patient_id_map.is_empty()
    }
}

/// Whether [`CoercionRules::set`] may give this attribute a value: a
/// standard top-level attribute before the Original Attributes Sequence
/// (0400,0561), which is final once written, and not one the other rules
/// change (the character set, Patient ID and its issuer).
pub fn settable_position(tag: Tag) -> bool {
    let taken = [tags::SPECIFIC_CHARACTER_SET, tags::PATIENT_ID, tags::ISSUER_OF_PATIENT_ID];
    let placeable = tag.group() > 0x0002 && tag.group() < 0x0400 && tag.group().is_multiple_of(2) && tag.element() != 0;
    placeable && !taken.contains(&tag)
}

/// A patient-level attribute other than the patient's identity (Patient ID
/// and its issuer) and the de-identification flags of group 0012, which
/// describe the data rather than the patient.
pub fn is_other_patient_attribute(tag: Tag) -> bool {
    tag.element() != 0
        && tag.group() != 0x0012
        && tag != tags::PATIENT_ID
        && tag != tags::ISSUER_OF_PATIENT_ID
        && crate::levels::level_of(tag) == crate::levels::Level::Patient
}

/// Whether [`CoercionRules::set`] may carry this element: a text value (not
/// a UID) in a [`settable_position`].
pub fn settable(element: &Element) -> bool {
    is_text_vr(element.vr) && element.vr != VR::UI && settable_position(element.tag)
}

/// What a coercion did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoercionOutcome {
    /// Whether the output differs from the input.
    pub changed: bool,
    /// Which attributes changed, for logs: `(0010,0020) PatientID`, `(0009,1001) removed`.
    pub modified: Vec<String>,
    /// Rules that could not be applied in full (private elements kept), for logs.
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CoerceError {
    #[error("invalid coercion rule: {0}")]
    InvalidRule(String),
    #[error("not a part 10 file (no file meta information)")]
    NotPart10,
    #[error("unsupported transfer syntax {0}")]
    UnsupportedTransferSyntax(String),
    #[error("unreadable data set: {0}")]
    Read(#[from] ReadError),
    #[error("malformed data set at offset {offset}: {reason}")]
    Malformed { offset: u64, reason: String },
    #[error("{tag}: {reason}")]
    Value { tag: Tag, reason: String },
    #[error("private element {tag} is too large to keep as an original value (over {limit} bytes)")]
    TooLarge { tag: Tag, limit: usize },
    #[error("writing the coerced instance: {0}")]
    Output(io::Error),
}

/// Rewrite a Part 10 file (`input` starts at byte 0 of the file, file meta group included) into `output`, applying `rules`.
///
/// Streaming: elements the rules do not touch are copied as raw bytes (Pixel Data and other large values in chunks,
/// never all in memory); only top-level elements are changed. When nothing changes, output = input byte for byte
/// (deflated data sets excepted, see the module documentation) and `changed` is false. `now` is the Attribute
/// Modification DateTime (DICOM DT, e.g. `20261123101500+0000`). After an error, `output` holds part of a file,
/// to be discarded.
pub fn coerce_part10(
    input: &mut impl Read,
    output: &mut impl Write,
    rules: &CoercionRules,
    now: &str,
) -> Result<CoercionOutcome, CoerceError> {
    rules.validate()?;
    if now.is_empty() || now.len() > 26 || !now.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'+' | b'-')) {
        return Err(CoerceError::InvalidRule(format!("modification time {now:?} is not a DICOM date-time")));
    }
    let mut recording = Recording { inner: &mut *input, recorded: Vec::new() };
    let meta = match read_layout(&mut recording)? {
        FileLayout::Part10(meta) => meta,
        FileLayout::BareDataset { .. } => return Err(CoerceError::NotPart10),
    };
    let syntax = ts::lookup(&meta.transfer_syntax_uid)
        .ok_or_else(|| CoerceError::UnsupportedTransferSyntax(meta.transfer_syntax_uid.clone()))?;
    let recorded = recording.recorded;
    // Without a group length, the meta reader has read into the data set's first header.
    let split = usize::try_from(meta.dataset_offset).ok().filter(|&offset| offset <= recorded.len()).ok_or(
        CoerceError::Malformed { offset: meta.dataset_offset, reason: "file meta group ends beyond its bytes".into() },
    )?;
    output.write_all(&recorded[..split]).map_err(CoerceError::Output)?;
    let rest = Cursor::new(recorded[split..].to_vec()).chain(input);
    let source: Box<dyn Read + '_> =
        if syntax.deflated { Box::new(inflate_limited(rest, MAX_INFLATED)) } else { Box::new(rest) };
    let sink = if syntax.deflated {
        Sink::Deflate(flate2::write::DeflateEncoder::new(output, flate2::Compression::default()))
    } else {
        Sink::Plain(output)
    };
    let encoding = Encoding { explicit_vr: syntax.explicit_vr, big_endian: syntax.big_endian };
    let mut coercer = Coercer {
        input: Input { inner: BufReader::with_capacity(CHUNK, source), position: 0 },
        out: BufWriter::with_capacity(CHUNK, sink),
        rules,
        now,
        encoding,
        queue: VecDeque::new(),
        held: 0,
        chunk: Vec::new(),
        charset: SpecificCharacterSet::default_repertoire(),
        charset_done: false,
        charset_changed: false,
        patient_id_done: false,
        issuer_done: false,
        patient_changed: false,
        set_pending: rules.set.keys().copied().collect(),
        set_changed_groups: BTreeSet::new(),
        oas: Oas::NotReached,
        originals: Vec::new(),
        originals_size: 0,
        outcome: CoercionOutcome::default(),
    };
    coercer.run()?;
    let Coercer { out, outcome, .. } = coercer;
    match out.into_inner().map_err(|error| CoerceError::Output(error.into_error()))? {
        Sink::Plain(plain) => plain.flush().map_err(CoerceError::Output)?,
        Sink::Deflate(encoder) => encoder.finish().and_then(|plain| plain.flush()).map_err(CoerceError::Output)?,
    }
    Ok(outcome)
}

/// Keeps what the file meta reader read, to copy it unchanged.
struct Recording<'r, R: ?Sized> {
    inner: &'r mut R,
    recorded: Vec<u8>,
}

impl<R: Read + ?Sized> Read for Recording<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.recorded.len() >= MAX_META {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "file meta information is longer than 1 MiB"));
        }
        let read = self.inner.read(buf)?;
        self.recorded.extend_from_slice(&buf[..read]);
        Ok(read)
    }
}

enum Sink<'w, W: Write> {
    Plain(&'w mut W),
    Deflate(flate2::write::DeflateEncoder<&'w mut W>),
}

impl<W: Write> Write for Sink<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(plain) => plain.write(buf),
            Sink::Deflate(encoder) => encoder.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(plain) => plain.flush(),
            Sink::Deflate(encoder) => encoder.flush(),
        }
    }
}

/// The data set stream, counting bytes for error offsets.
struct Input<R> {
    inner: R,
    position: u64,
}

impl<R: Read> Input<R> {
    fn read_exact(&mut self, buf: &mut [u8]) -> CoerceResult<()> {
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.position += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Err(ReadError::Truncated { offset: self.position }.into())
            }
            Err(e) => Err(ReadError::Io(e).into()),
        }
    }

    /// Fill `buf`, or report a clean end if nothing at all was left.
    fn read_or_end(&mut self, buf: &mut [u8]) -> CoerceResult<bool> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(0) => return Err(ReadError::Truncated { offset: self.position + filled as u64 }.into()),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ReadError::Io(e).into()),
            }
        }
        self.position += buf.len() as u64;
        Ok(true)
    }
}

/// An element header and its bytes as read.
struct Header {
    tag: Tag,
    vr: VR,
    length: u32,
    raw: [u8; 12],
    size: usize,
    start: u64,
}

impl Header {
    fn raw(&self) -> &[u8] {
        &self.raw[..self.size]
    }
}

/// Where the Original Attributes Sequence stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Oas {
    /// Its position (0400,0561) is still ahead.
    NotReached,
    /// Placed, but private elements further on may still be removed.
    Pending,
    /// Its content is decided: nothing changes any more.
    Final,
}

/// Output waiting for a decision, in order.
enum Piece {
    Bytes(Vec<u8>),
    /// The group length of a group that may change: kept only if it did not.
    GroupLength {
        group: u16,
        raw: Vec<u8>,
        ended: bool,
        forced: bool,
    },
    /// Where a new Original Attributes Sequence goes.
    NewOas,
    /// The header of the instance's own Original Attributes Sequence (made undefined-length to take an item).
    OasOpen {
        raw: Vec<u8>,
        tag: Tag,
        vr: VR,
        extendable: bool,
    },
    /// Its end, where our item goes, encoded as its items are.
    OasClose {
        raw: Vec<u8>,
        inner: Encoding,
    },
}

impl Piece {
    fn size(&self) -> usize {
        match self {
            Piece::Bytes(raw)
            | Piece::GroupLength { raw, .. }
            | Piece::OasOpen { raw, .. }
            | Piece::OasClose { raw, .. } => raw.len(),
            Piece::NewOas => 0,
        }
    }
}

/// Where copied bytes go: the output, or memory (a removed element's original value).
enum To<'m> {
    Output,
    Memory { bytes: &'m mut Vec<u8>, limit: usize, tag: Tag },
}

struct Coercer<'a, R, W> {
    input: Input<R>,
    out: W,
    rules: &'a CoercionRules,
    now: &'a str,
    encoding: Encoding,
    queue: VecDeque<Piece>,
    /// Bytes in `queue`.
    held: usize,
    chunk: Vec<u8>,
    /// The character set the data set's text is in (the new declaration, once replaced).
    charset: SpecificCharacterSet,
    charset_done: bool,
    charset_changed: bool,
    patient_id_done: bool,
    issuer_done: bool,
    /// Patient ID or Issuer of Patient ID changed (group 0010).
    patient_changed: bool,
    /// Attributes of `rules.set` not reached yet, in tag order.
    set_pending: VecDeque<Tag>,
    /// Groups in which an attribute of `rules.set` changed.
    set_changed_groups: BTreeSet<u16>,
    oas: Oas,
    /// Raw elements (header and value) as they were, sorted by tag.
    originals: Vec<(Tag, Vec<u8>)>,
    originals_size: usize,
    outcome: CoercionOutcome,
}

type CoerceResult<T> = std::result::Result<T, CoerceError>;

impl<R: Read, W: Write> Coercer<'_, R, W> {
    fn run(&mut self) -> CoerceResult<()> {
        while let Some(header) = self.read_header(self.encoding)? {
            self.element(header)?;
            self.flush_ready()?;
        }
        self.before(Tag(0xFFFF, 0xFFFF))?;
        for piece in &mut self.queue {
            if let Piece::GroupLength { ended, .. } = piece {
                *ended = true;
            }
        }
        if self.oas == Oas::Pending {
            self.oas = Oas::Final;
        }
        self.flush_ready()?;
        if !self.queue.is_empty() {
            return Err(CoerceError::Malformed { offset: self.input.position, reason: "undecided output left".into() });
        }
        Ok(())
    }

    fn read_header(&mut self, layout: Encoding) -> CoerceResult<Option<Header>> {
        let start = self.input.position;
        let mut tag_bytes = [0u8; 4];
        if !self.input.read_or_end(&mut tag_bytes)? {
            return Ok(None);
        }
        let mut raw = [0u8; 12];
        raw[..4].copy_from_slice(&tag_bytes);
        let mut size = 4;
        let input = &mut self.input;
        let (tag, vr, length) =
            decode_header(tag_bytes, layout.explicit_vr, layout.big_endian, start, |buf: &mut [u8]| {
                input.read_exact(buf)?;
                raw[size..size + buf.len()].copy_from_slice(buf);
                size += buf.len();
                Ok::<(), CoerceError>(())
            })?;
        Ok(Some(Header { tag, vr, length, raw, size, start }))
    }

    /// One top-level element.
    fn element(&mut self, header: Header) -> CoerceResult<()> {
        let tag = header.tag;
        if tag.group() == 0xFFFE {
            return Err(CoerceError::Malformed { offset: header.start, reason: format!("{tag} at the top level") });
        }
        self.before(tag)?;
        let rules = self.rules;
        if tag == tags::SPECIFIC_CHARACTER_SET {
            return self.charset_element(header);
        }
        if tag == tags::PATIENT_ID && rules.touches_patient_id() {
            return self.patient_id_element(header);
        }
        if tag == tags::ISSUER_OF_PATIENT_ID && rules.issuer_of_patient_id.is_some() {
            return self.issuer_element(header);
        }
        if rules.set.contains_key(&tag) {
            return self.set_element(header);
        }
        if rules.remove_other_patient_attributes && is_other_patient_attribute(tag) {
            self.patient_changed |= tag.group() == 0x0010;
            self.set_changed_groups.insert(tag.group());
            return self.remove_element(header);
        }
        if tag == tags::ORIGINAL_ATTRIBUTES_SEQUENCE {
            return self.original_attributes_element(header);
        }
        if tag.group() % 2 == 1 && rules.remove_private_tags {
            if self.oas != Oas::Final {
                return self.remove_element(header);
            }
            self.outcome.warnings.push(format!("{tag} kept: it follows the original attributes, already written"));
        }
        if tag.element() == 0x0000 && header.length <= 64 && self.group_may_change(tag.group()) {
            let mut raw = header.raw().to_vec();
            let mut to = To::Memory { bytes: &mut raw, limit: 64 + 12, tag };
            self.copy_bytes(u64::from(header.length), &mut to)?;
            return self.push(Piece::GroupLength { group: tag.group(), raw, ended: false, forced: false });
        }
        self.copy_element(header)
    }

    /// Everything due before an element with this tag: inserted attributes, ended groups, the Original
    /// Attributes Sequence.
    fn before(&mut self, tag: Tag) -> CoerceResult<()> {
        if !self.charset_done && tag > tags::SPECIFIC_CHARACTER_SET && self.rules.character_set.is_some() {
            self.charset_done = true;
            if let Some(new) = self.new_charset(None) {
                self.replace(tags::SPECIFIC_CHARACTER_SET, VR::CS, None, new.as_bytes())?;
                self.charset = SpecificCharacterSet::from_raw(new.as_bytes());
                self.charset_changed = true;
            }
        }
        // Inserted attributes go out in tag order: set values below each identity attribute first.
        self.insert_set_before(tag.min(tags::PATIENT_ID))?;
        if !self.patient_id_done && tag > tags::PATIENT_ID {
            self.patient_id_done = true;
            if let Some(patient_id) = self.rules.patient_id.as_deref() {
                let bytes = self.encode(tags::PATIENT_ID, patient_id)?;
                self.replace(tags::PATIENT_ID, VR::LO, None, &bytes)?;
                self.patient_changed = true;
            }
        }
        self.insert_set_before(tag.min(tags::ISSUER_OF_PATIENT_ID))?;
        if !self.issuer_done && tag > tags::ISSUER_OF_PATIENT_ID {
            self.issuer_done = true;
            if let Some(issuer) = self.rules.issuer_of_patient_id.as_deref().filter(|issuer| !issuer.is_empty()) {
                let bytes = self.encode(tags::ISSUER_OF_PATIENT_ID, issuer)?;
                self.replace(tags::ISSUER_OF_PATIENT_ID, VR::LO, None, &bytes)?;
                self.patient_changed = true;
            }
        }
        self.insert_set_before(tag)?;
        for piece in &mut self.queue {
            if let Piece::GroupLength { group, ended, .. } = piece {
                *ended |= *group != tag.group();
            }
        }
        if self.oas == Oas::NotReached && tag > tags::ORIGINAL_ATTRIBUTES_SEQUENCE {
            self.reach_original_attributes();
            self.push(Piece::NewOas)?;
        }
        Ok(())
    }

    /// Insert the attributes `rules.set` gives a value that come before `limit` and were not in the data set.
    fn insert_set_before(&mut self, limit: Tag) -> CoerceResult<()> {
        while let Some(&next) = self.set_pending.front() {
            if next >= limit {
                break;
            }
            self.set_pending.pop_front();
            let rules = self.rules;
            let Some((vr, value)) = rules.set.get(&next) else { continue };
            // An absent attribute and an empty one mean the same.
            if !value.is_empty() {
                let bytes = self.encode_as(next, *vr, value)?;
                self.replace(next, *vr, None, &bytes)?;
                self.set_changed_groups.insert(next.group());
            }
        }
        Ok(())
    }

    fn reach_original_attributes(&mut self) {
        // Without private elements to remove, everything that can change comes before (0400,0561).
        self.oas = if self.rules.remove_private_tags { Oas::Pending } else { Oas::Final };
    }

    fn out_of_order(header: &Header) -> CoerceError {
        CoerceError::Malformed { offset: header.start, reason: format!("{} is out of order or repeated", header.tag) }
    }

    /// Specific Character Set: replaced by the rule, and in any case the set the rules' text is read and written in.
    fn charset_element(&mut self, header: Header) -> CoerceResult<()> {
        if self.charset_done && self.rules.character_set.is_some() {
            return Err(Self::out_of_order(&header));
        }
        self.charset_done = true;
        let value = self.read_text_value(&header)?;
        match self.new_charset(Some(&value)) {
            Some(new) => {
                self.replace(header.tag, VR::CS, Some([header.raw(), &value].concat()), new.as_bytes())?;
                self.charset = SpecificCharacterSet::from_raw(new.as_bytes());
                self.charset_changed = true;
            }
            None => {
                self.emit(header.raw())?;
                self.emit(&value)?;
                self.charset = SpecificCharacterSet::from_raw(&value);
            }
        }
        Ok(())
    }

    /// The declaration to write instead of `declared` (`None`: absent), if the rule applies.
    fn new_charset(&self, declared: Option<&[u8]>) -> Option<String> {
        let target = self.rules.character_set.as_deref()?;
        let declared = declared.unwrap_or_default();
        if let Some(from) = &self.rules.character_set_from {
            if !same_character_set(declared, from.as_bytes()) {
                return None;
            }
        }
        (terms_as_written(declared) != terms_as_written(target.as_bytes())).then(|| target.to_string())
    }

    fn patient_id_element(&mut self, header: Header) -> CoerceResult<()> {
        if self.patient_id_done {
            return Err(Self::out_of_order(&header));
        }
        self.patient_id_done = true;
        let value = self.read_text_value(&header)?;
        let trimmed = trim_text(&value);
        let old = self.charset.decode(trimmed, TextKind::MultiValued);
        let prefix = self.rules.patient_id_prefix.as_deref().unwrap_or_default();
        let (base, mapped) = match (&self.rules.patient_id, self.rules.patient_id_map.get(&old)) {
            (Some(new), _) | (None, Some(new)) => (new.as_str(), true),
            (None, None) => (old.as_str(), false),
        };
        // An empty ID stays empty: prefixing it would merge every unidentified patient into one.
        let new = if base.is_empty() { String::new() } else { format!("{prefix}{base}") };
        if new == old {
            self.emit(header.raw())?;
            return self.emit(&value);
        }
        if new.chars().count() > 64 {
            return Err(CoerceError::Value {
                tag: header.tag,
                reason: "the new patient id would be longer than 64 characters".into(),
            });
        }
        // The received bytes stay as they were behind an ASCII prefix (escape sequences included).
        let bytes = if !mapped && prefix.is_ascii() {
            [prefix.as_bytes(), trimmed].concat()
        } else {
            self.encode(header.tag, &new)?
        };
        self.replace(header.tag, VR::LO, Some([header.raw(), &value].concat()), &bytes)?;
        self.patient_changed = true;
        Ok(())
    }

    fn issuer_element(&mut self, header: Header) -> CoerceResult<()> {
        if self.issuer_done {
            return Err(Self::out_of_order(&header));
        }
        self.issuer_done = true;
        let value = self.read_text_value(&header)?;
        let old = self.charset.decode(trim_text(&value), TextKind::MultiValued);
        let new = self.rules.issuer_of_patient_id.as_deref().unwrap_or_default();
        if old == new {
            self.emit(header.raw())?;
            return self.emit(&value);
        }
        let bytes = self.encode(header.tag, new)?;
        self.replace(header.tag, VR::LO, Some([header.raw(), &value].concat()), &bytes)?;
        self.patient_changed = true;
        Ok(())
    }

    /// An attribute `rules.set` gives a value: kept if it has that value already, else replaced.
    fn set_element(&mut self, header: Header) -> CoerceResult<()> {
        if self.set_pending.front() != Some(&header.tag) {
            return Err(Self::out_of_order(&header));
        }
        self.set_pending.pop_front();
        let rules = self.rules;
        let Some((vr, new)) = rules.set.get(&header.tag) else { return Err(Self::out_of_order(&header)) };
        let value = self.read_text_value(&header)?;
        let old = self.charset.decode(trim_text(&value), text_kind(*vr));
        if old == *new {
            self.emit(header.raw())?;
            return self.emit(&value);
        }
        let bytes = self.encode_as(header.tag, *vr, new)?;
        self.replace(header.tag, header.vr, Some([header.raw(), &value].concat()), &bytes)?;
        self.set_changed_groups.insert(header.tag.group());
        Ok(())
    }

    /// The instance's own Original Attributes Sequence: copied, with our item appended if anything changed.
    fn original_attributes_element(&mut self, header: Header) -> CoerceResult<()> {
        if self.oas != Oas::NotReached {
            return Err(Self::out_of_order(&header));
        }
        self.reach_original_attributes();
        let layout = self.encoding;
        // PS3.5 6.2.2: the value of a UN element is in Implicit VR Little Endian.
        let inner = if layout.explicit_vr && header.vr == VR::UN { Encoding::IMPLICIT_LE } else { layout };
        let extendable = !layout.explicit_vr || matches!(header.vr, VR::SQ | VR::UN);
        let open = Piece::OasOpen { raw: header.raw().to_vec(), tag: header.tag, vr: header.vr, extendable };
        self.push(open)?;
        let close = if header.length == UNDEFINED {
            self.copy_items(inner, &mut To::Output, 1, true)?
        } else {
            self.copy_bytes(u64::from(header.length), &mut To::Output)?;
            Vec::new()
        };
        self.push(Piece::OasClose { raw: close, inner })
    }

    /// Leave an element out, its value kept as an original (unless too large to keep: then it stays, with a
    /// warning).
    fn remove_element(&mut self, header: Header) -> CoerceResult<()> {
        let room = MAX_ORIGINALS.saturating_sub(self.originals_size);
        if header.length != UNDEFINED && header.size.saturating_add(header.length as usize) > room {
            self.outcome.warnings.push(format!(
                "{} kept: {} bytes are too many to keep as an original value",
                header.tag, header.length
            ));
            return self.copy_element(header);
        }
        let mut raw = header.raw().to_vec();
        let mut to = To::Memory { bytes: &mut raw, limit: room, tag: header.tag };
        self.copy_value(&header, self.encoding, &mut to, 0)?;
        self.record(header.tag, raw);
        self.outcome.changed = true;
        self.outcome.modified.push(format!("{} removed", header.tag));
        Ok(())
    }

    /// Record `original` (`None`: the attribute was absent) and write the element with `value` in its place.
    fn replace(&mut self, tag: Tag, vr: VR, original: Option<Vec<u8>>, value: &[u8]) -> CoerceResult<()> {
        let original = match original {
            Some(raw) => raw,
            // PS3.3 C.12.1.1.9.2: an attribute added is recorded as present with an empty value.
            None => text_element(tag, vr, b"", self.encoding)?,
        };
        self.record(tag, original);
        let element = text_element(tag, vr, value, self.encoding)?;
        self.emit(&element)?;
        self.outcome.changed = true;
        self.outcome.modified.push(match dict::keyword(tag) {
            Some(keyword) => format!("{tag} {keyword}"),
            None => tag.to_string(),
        });
        Ok(())
    }

    fn record(&mut self, tag: Tag, raw: Vec<u8>) {
        self.originals_size += raw.len();
        let at = self.originals.partition_point(|(recorded, _)| *recorded <= tag);
        self.originals.insert(at, (tag, raw));
    }

    fn encode(&self, tag: Tag, text: &str) -> CoerceResult<Vec<u8>> {
        self.encode_as(tag, VR::LO, text)
    }

    fn encode_as(&self, tag: Tag, vr: VR, text: &str) -> CoerceResult<Vec<u8>> {
        self.charset.encode(text, text_kind(vr)).ok_or_else(|| CoerceError::Value {
            tag,
            reason: format!(
                "the new value cannot be written in the character set {:?}",
                self.charset.terms().join("\\")
            ),
        })
    }

    fn read_text_value(&mut self, header: &Header) -> CoerceResult<Vec<u8>> {
        if header.length == UNDEFINED {
            return Err(CoerceError::Malformed {
                offset: header.start,
                reason: format!("{} has an undefined length", header.tag),
            });
        }
        if header.length > MAX_TEXT_VALUE {
            return Err(CoerceError::Value {
                tag: header.tag,
                reason: format!("value of {} bytes is too long for its attribute", header.length),
            });
        }
        let mut value = vec![0u8; header.length as usize];
        self.input.read_exact(&mut value)?;
        Ok(value)
    }

    /// Whether a group length of this group must wait: the group may change.
    fn group_may_change(&self, group: u16) -> bool {
        let by_other_rules = match group {
            0x0008 => self.rules.character_set.is_some() || self.rules.remove_other_patient_attributes,
            0x0010 => {
                self.rules.touches_patient_id()
                    || self.rules.issuer_of_patient_id.is_some()
                    || self.rules.remove_other_patient_attributes
            }
            0x0400 => !self.rules.is_empty(),
            _ => false,
        };
        by_other_rules || self.rules.set.keys().any(|tag| tag.group() == group)
    }

    /// Whether a held group length's group changed; `None` while undecided.
    fn group_changed(&self, group: u16, ended: bool) -> Option<bool> {
        let changed = match group {
            // The new item goes into group 0400 whenever anything changed.
            0x0400 => return (self.oas == Oas::Final).then_some(self.outcome.changed),
            0x0008 => self.charset_changed,
            0x0010 => self.patient_changed,
            _ => false,
        };
        ended.then_some(changed || self.set_changed_groups.contains(&group))
    }

    fn copy_element(&mut self, header: Header) -> CoerceResult<()> {
        self.emit(header.raw())?;
        self.copy_value(&header, self.encoding, &mut To::Output, 0)
    }

    /// Copy the value of an element whose header was just copied, encoded in `layout`.
    fn copy_value(&mut self, header: &Header, layout: Encoding, to: &mut To<'_>, depth: u32) -> CoerceResult<()> {
        if header.length != UNDEFINED {
            return self.copy_bytes(u64::from(header.length), to);
        }
        // As the reader decides (read.rs): encapsulated pixel data, else a sequence.
        let pixel = is_pixel_data(header.tag);
        let sequence = header.vr == VR::SQ || header.vr == VR::UN || (!layout.explicit_vr && !pixel);
        if pixel && (depth == 0 || !sequence) {
            return self.copy_fragments(to);
        }
        if !sequence {
            return Err(CoerceError::Read(ReadError::UndefinedLength { tag: header.tag, offset: header.start }));
        }
        let inner = if header.vr == VR::UN && layout.explicit_vr { Encoding::IMPLICIT_LE } else { layout };
        self.copy_items(inner, to, depth + 1, false).map(drop)
    }

    /// Copy the items of an undefined-length sequence up to its delimiter; the delimiter's bytes are returned
    /// instead of copied when `hold_delimiter`.
    fn copy_items(
        &mut self,
        layout: Encoding,
        to: &mut To<'_>,
        depth: u32,
        hold_delimiter: bool,
    ) -> CoerceResult<Vec<u8>> {
        if depth > MAX_DEPTH {
            return Err(ReadError::TooDeep(MAX_DEPTH).into());
        }
        loop {
            let header = self.read_header(layout)?.ok_or(ReadError::Truncated { offset: self.input.position })?;
            if header.tag == SEQUENCE_END {
                if hold_delimiter {
                    return Ok(header.raw().to_vec());
                }
                self.put(to, header.raw())?;
                return Ok(Vec::new());
            }
            if header.tag != ITEM {
                return Err(ReadError::Unexpected { tag: header.tag, offset: header.start }.into());
            }
            self.put(to, header.raw())?;
            if header.length != UNDEFINED {
                self.copy_bytes(u64::from(header.length), to)?;
                continue;
            }
            loop {
                let element = self.read_header(layout)?.ok_or(ReadError::Truncated { offset: self.input.position })?;
                self.put(to, element.raw())?;
                if element.tag == ITEM_END {
                    break;
                }
                if element.tag.group() == 0xFFFE {
                    return Err(ReadError::Unexpected { tag: element.tag, offset: element.start }.into());
                }
                self.copy_value(&element, layout, to, depth)?;
            }
        }
    }

    /// Copy encapsulated pixel data items up to the sequence delimiter (item headers are always little endian).
    fn copy_fragments(&mut self, to: &mut To<'_>) -> CoerceResult<()> {
        loop {
            let start = self.input.position;
            let mut header = [0u8; 8];
            self.input.read_exact(&mut header)?;
            self.put(to, &header)?;
            let tag = Tag(u16::from_le_bytes([header[0], header[1]]), u16::from_le_bytes([header[2], header[3]]));
            let length = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            match tag {
                SEQUENCE_END => return Ok(()),
                ITEM if length != UNDEFINED => self.copy_bytes(u64::from(length), to)?,
                other => return Err(ReadError::Unexpected { tag: other, offset: start }.into()),
            }
        }
    }

    fn copy_bytes(&mut self, n: u64, to: &mut To<'_>) -> CoerceResult<()> {
        let mut chunk = std::mem::take(&mut self.chunk);
        let result = self.copy_bytes_with(n, to, &mut chunk);
        self.chunk = chunk;
        result
    }

    fn copy_bytes_with(&mut self, mut n: u64, to: &mut To<'_>, chunk: &mut Vec<u8>) -> CoerceResult<()> {
        while n > 0 {
            let len = usize::try_from(n).unwrap_or(CHUNK).min(CHUNK);
            chunk.resize(len, 0);
            self.input.read_exact(&mut chunk[..len])?;
            self.put(to, &chunk[..len])?;
            n -= len as u64;
        }
        Ok(())
    }

    fn put(&mut self, to: &mut To<'_>, bytes: &[u8]) -> CoerceResult<()> {
        match to {
            To::Output => self.emit(bytes),
            To::Memory { bytes: kept, limit, tag } => {
                if kept.len().saturating_add(bytes.len()) > *limit {
                    return Err(CoerceError::TooLarge { tag: *tag, limit: MAX_ORIGINALS });
                }
                kept.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    /// Output in order: straight out, or held behind a decision still to come.
    fn emit(&mut self, bytes: &[u8]) -> CoerceResult<()> {
        if !self.queue.is_empty() && self.held.saturating_add(bytes.len()) > LOOKAHEAD {
            self.force()?;
        }
        if self.queue.is_empty() {
            return self.out.write_all(bytes).map_err(CoerceError::Output);
        }
        self.held += bytes.len();
        match self.queue.back_mut() {
            Some(Piece::Bytes(last)) => last.extend_from_slice(bytes),
            _ => self.queue.push_back(Piece::Bytes(bytes.to_vec())),
        }
        Ok(())
    }

    fn push(&mut self, piece: Piece) -> CoerceResult<()> {
        self.held += piece.size();
        self.queue.push_back(piece);
        self.flush_ready()
    }

    /// Take every pending decision now, with what is known, and write out what was held.
    fn force(&mut self) -> CoerceResult<()> {
        let oas = self.oas;
        let mut dropped = Vec::new();
        for piece in &mut self.queue {
            if let Piece::GroupLength { group, ended, forced, .. } = piece {
                // Group 0400 is decided with the Original Attributes Sequence, when that is placed.
                let undecided = if *group == 0x0400 { oas == Oas::NotReached } else { !*ended };
                if undecided {
                    *forced = true;
                    dropped.push(*group);
                }
            }
        }
        for group in dropped {
            // Its group may still change, and a stale group length is worse than none.
            self.outcome.changed = true;
            self.outcome.modified.push(format!("({group:04X},0000) removed"));
        }
        if self.oas == Oas::Pending {
            self.oas = Oas::Final;
        }
        self.flush_ready()
    }

    /// Write out the pieces at the front of the queue whose decision is taken.
    fn flush_ready(&mut self) -> CoerceResult<()> {
        while let Some(piece) = self.queue.pop_front() {
            let bytes = match piece {
                Piece::Bytes(bytes) => bytes,
                other => match self.resolve(&other)? {
                    Some(bytes) => bytes,
                    None => {
                        self.queue.push_front(other);
                        break;
                    }
                },
            };
            self.out.write_all(&bytes).map_err(CoerceError::Output)?;
        }
        if self.queue.is_empty() {
            self.held = 0;
        }
        Ok(())
    }

    /// The bytes a held piece stands for, once decided.
    fn resolve(&self, piece: &Piece) -> CoerceResult<Option<Vec<u8>>> {
        let changed = self.outcome.changed;
        let decided = self.oas == Oas::Final;
        Ok(match piece {
            Piece::Bytes(bytes) => Some(bytes.clone()),
            Piece::GroupLength { forced: true, .. } => Some(Vec::new()),
            Piece::GroupLength { group, raw, ended, .. } => {
                self.group_changed(*group, *ended).map(|changed| if changed { Vec::new() } else { raw.clone() })
            }
            _ if !decided => None,
            _ if !changed => match piece {
                Piece::OasOpen { raw, .. } | Piece::OasClose { raw, .. } => Some(raw.clone()),
                _ => Some(Vec::new()),
            },
            Piece::NewOas => {
                let mut bytes = Vec::new();
                write_header(&mut bytes, tags::ORIGINAL_ATTRIBUTES_SEQUENCE, VR::SQ, UNDEFINED, self.encoding);
                bytes.extend(self.our_item(self.encoding)?);
                write_tag_length(&mut bytes, SEQUENCE_END, 0, self.encoding);
                Some(bytes)
            }
            Piece::OasOpen { tag, vr, extendable, .. } => {
                if !extendable {
                    return Err(CoerceError::Malformed {
                        offset: self.input.position,
                        reason: format!("the original attributes sequence {tag} is not encoded as a sequence"),
                    });
                }
                let mut bytes = Vec::new();
                write_header(&mut bytes, *tag, *vr, UNDEFINED, self.encoding);
                Some(bytes)
            }
            Piece::OasClose { inner, .. } => {
                let mut bytes = self.our_item(*inner)?;
                write_tag_length(&mut bytes, SEQUENCE_END, 0, *inner);
                Some(bytes)
            }
        })
    }

    /// The Original Attributes item for this coercion, encoded in `encoding`.
    fn our_item(&self, encoding: Encoding) -> CoerceResult<Vec<u8>> {
        let mut originals = Vec::with_capacity(self.originals_size);
        for (_, raw) in &self.originals {
            originals.extend_from_slice(raw);
        }
        if encoding != self.encoding {
            // Only the items of an Original Attributes Sequence sent as UN are in another encoding.
            originals = transcode(&originals, syntax_of(self.encoding)?, syntax_of(encoding)?).map_err(|error| {
                CoerceError::Malformed {
                    offset: self.input.position,
                    reason: format!("original values cannot be re-encoded: {error}"),
                }
            })?;
        }
        let mut item = Vec::with_capacity(originals.len() + 256);
        write_tag_length(&mut item, ITEM, UNDEFINED, encoding);
        write_header(&mut item, tags::MODIFIED_ATTRIBUTES_SEQUENCE, VR::SQ, UNDEFINED, encoding);
        write_tag_length(&mut item, ITEM, UNDEFINED, encoding);
        item.extend_from_slice(&originals);
        write_tag_length(&mut item, ITEM_END, 0, encoding);
        write_tag_length(&mut item, SEQUENCE_END, 0, encoding);
        let rules = self.rules;
        let described: Dataset = [
            Element::text(tags::ATTRIBUTE_MODIFICATION_DATE_TIME, VR::DT, self.now),
            Element::text(tags::MODIFYING_SYSTEM, VR::LO, rules.modifying_system.as_str()),
            Element::text(tags::SOURCE_OF_PREVIOUS_VALUES, VR::LO, rules.source_of_previous_values.as_str()),
            Element::text(
                tags::REASON_FOR_THE_ATTRIBUTE_MODIFICATION,
                VR::CS,
                if rules.reason.is_empty() { REASON_COERCE } else { rules.reason.as_str() },
            ),
        ]
        .into_iter()
        .collect();
        write_dataset(&mut item, &described, encoding, &self.charset)
            .map_err(|error| CoerceError::InvalidRule(error.to_string()))?;
        write_tag_length(&mut item, ITEM_END, 0, encoding);
        Ok(item)
    }
}

/// The native transfer syntax with this encoding.
fn syntax_of(encoding: Encoding) -> CoerceResult<&'static TransferSyntax> {
    let uid = match (encoding.explicit_vr, encoding.big_endian) {
        (false, _) => ts::IMPLICIT_VR_LITTLE_ENDIAN,
        (true, false) => ts::EXPLICIT_VR_LITTLE_ENDIAN,
        (true, true) => ts::EXPLICIT_VR_BIG_ENDIAN,
    };
    ts::lookup(uid).ok_or_else(|| CoerceError::UnsupportedTransferSyntax(uid.to_string()))
}

/// One element with a text value already in bytes, padded to an even length.
fn text_element(tag: Tag, vr: VR, value: &[u8], encoding: Encoding) -> CoerceResult<Vec<u8>> {
    let mut padded = value.to_vec();
    if padded.len() % 2 == 1 {
        padded.push(b' ');
    }
    let limit = if encoding.explicit_vr && !has_long_length(vr) { 0xFFFF } else { 0xFFFF_FFFE };
    let length = u32::try_from(padded.len()).ok().filter(|&length| length <= limit).ok_or(CoerceError::Value {
        tag,
        reason: format!("value of {} bytes is too long for VR {vr:?}", padded.len()),
    })?;
    let mut element = Vec::with_capacity(padded.len() + 12);
    write_header(&mut element, tag, vr, length, encoding);
    element.extend_from_slice(&padded);
    Ok(element)
}

/// Whether a file declaring this Specific Character Set value (its terms
/// as written, `\`-joined) can carry `value`, of VR `vr`.
pub fn can_encode(declared: &str, vr: VR, value: &str) -> bool {
    SpecificCharacterSet::from_raw(declared.as_bytes()).encode(value, text_kind(vr)).is_some()
}

/// How text of this VR is delimited for the character set's code extensions.
pub fn text_kind(vr: VR) -> TextKind {
    match vr {
        VR::PN => TextKind::PersonName,
        VR::LT | VR::ST | VR::UT => TextKind::Text,
        _ => TextKind::MultiValued,
    }
}

/// A text value without its padding and the leading spaces that carry no meaning (LO, CS).
fn trim_text(value: &[u8]) -> &[u8] {
    let end = value.iter().rposition(|&b| b != b' ' && b != 0).map_or(0, |last| last + 1);
    let start = value[..end].iter().position(|&b| b != b' ').unwrap_or(end);
    &value[start..end]
}

/// The terms of a Specific Character Set value as written, each trimmed.
fn terms_as_written(value: &[u8]) -> Vec<String> {
    let text: String = value.iter().map(|&b| char::from(b)).collect();
    let mut terms: Vec<String> = text.split('\\').map(|term| term.trim_matches([' ', '\0']).to_string()).collect();
    if terms.len() == 1 && terms[0].is_empty() {
        terms.clear();
    }
    terms
}

/// Whether two Specific Character Set values mean the same set (spelling aside).
fn same_character_set(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (SpecificCharacterSet::from_raw(a), SpecificCharacterSet::from_raw(b));
    a.terms() == b.terms()
        && a.unknown_terms().len() == b.unknown_terms().len()
        && a.unknown_terms().iter().zip(b.unknown_terms()).all(|(x, y)| x.eq_ignore_ascii_case(y))
}

#[cfg(test)]
mod tests;
