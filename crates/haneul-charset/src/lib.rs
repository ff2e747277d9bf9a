//! Decoding and encoding of DICOM text values according to Specific Character Set
//! (0008,0005), per DICOM PS3.5 6.1 and 6.2, PS3.3 C.12.1.1.2 and PS3.5 Annexes H, I, J, K.
//!
//! # Model
//!
//! Apart from UTF-8 (`ISO_IR 192`), `GB18030` and `GBK`, which encode a whole value with one
//! multi-byte code, every character set is handled as an ISO 2022 code with two graphic sets:
//!
//! * **G0**, bytes 0x21..=0x7E: ASCII, JIS X 0201 romaji (treated as ASCII so that 0x5C stays
//!   the DICOM value delimiter), or the double-byte JIS X 0208 / JIS X 0212;
//! * **G1**, bytes 0xA0..=0xFF: the upper half of an ISO 8859 part, TIS 620 or JIS X 0201
//!   katakana, or the double-byte KS X 1001 / GB 2312 (EUC form, 0xA1..=0xFE pairs).
//!
//! The **initial state** comes from the first defined term: an empty first term is
//! ISO 2022 IR 6 (G0 ASCII, G1 empty); `ISO 2022 IR 149` first gives G0 ASCII and G1 KS X 1001;
//! `ISO 2022 IR 13` gives G0 romaji and G1 katakana; `ISO_IR 100` gives G0 ASCII and G1
//! Latin-1, and so on. A single-term set without code extensions is just this initial state
//! that never changes. Escape sequences (`ESC $ ) C`, `ESC $ B`, `ESC ( B`, `ESC - A`, ...)
//! change the designations, and the state returns to the initial one at the delimiters of the
//! value's [`TextKind`] and at CR, LF, FF and TAB (PS3.5 6.1.2.5.3). That is why a Korean
//! name repeats `ESC $ ) C` after every `^` and `=`.
//!
//! Real modalities send text that does not follow its declared character set; see
//! [`SpecificCharacterSet::decode`] for the fallbacks that recover the common cases.
//!
//! ```
//! use haneul_charset::{SpecificCharacterSet, TextKind};
//!
//! let korean = SpecificCharacterSet::from_raw(b"\\ISO 2022 IR 149");
//! let raw = b"Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7=\x1b$)C\xc8\xab^\x1b$)C\xb1\xe6\xb5\xbf";
//! let name = korean.decode(raw, TextKind::PersonName);
//! assert_eq!(name, "Hong^Gildong=洪^吉洞=홍^길동");
//! assert_eq!(korean.encode(&name, TextKind::PersonName).as_deref(), Some(&raw[..]));
//! ```

mod decode;
mod encode;
mod sets;
mod terms;

use encoding_rs::Encoding;

use crate::decode::decode_iso2022;
use crate::encode::encode_iso2022;
use crate::sets::{CodeState, G0Set, G1Set, UpperHalf, ESC};
use crate::terms::{Charset, DefinedTerm};

/// How delimiters reset the ISO 2022 state inside a value (PS3.5 6.1.2.5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextKind {
    /// PN: reset to the initial state before '^', '=', '\\' and control chars (CR, LF, FF, TAB).
    PersonName,
    /// multi-valued strings (SH, LO, UC, CS, AE, ...): reset before '\\' and control chars.
    MultiValued,
    /// ST, LT, UT: reset only at control characters (CR, LF, FF, TAB); backslash is an ordinary char.
    Text,
}

impl TextKind {
    /// Whether `byte` (read while G0 holds a single-byte set) is a delimiter that returns
    /// this kind of value to the initial state. Control characters are handled separately.
    pub(crate) fn resets_at_delimiter(self, byte: u8) -> bool {
        match self {
            TextKind::PersonName => matches!(byte, b'^' | b'=' | b'\\'),
            TextKind::MultiValued => byte == b'\\',
            TextKind::Text => false,
        }
    }
}

/// A parsed Specific Character Set (0008,0005).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecificCharacterSet {
    /// Recognised terms in value order. Empty for the default repertoire.
    terms: Vec<DefinedTerm>,
    /// Terms that were not recognised, as written (trimmed).
    unknown_terms: Vec<String>,
}

impl Default for SpecificCharacterSet {
    fn default() -> Self {
        Self::default_repertoire()
    }
}

/// How a set decodes a value as a whole.
enum Mode {
    /// One multi-byte code for the whole value (UTF-8, GB18030, GBK); no code extensions.
    WholeValue(&'static Encoding),
    /// The G0/G1 state machine.
    Iso2022,
}

impl SpecificCharacterSet {
    /// ISO_IR 6 (the default repertoire, ASCII).
    pub fn default_repertoire() -> Self {
        Self { terms: Vec::new(), unknown_terms: Vec::new() }
    }

    /// UTF-8 (ISO_IR 192).
    pub fn utf8() -> Self {
        Self { terms: vec![DefinedTerm { charset: Charset::Utf8, code_extensions: false }], unknown_terms: Vec::new() }
    }

    /// Parse the raw value of (0008,0005): backslash-separated defined terms, each trimmed of
    /// spaces and NULs.
    ///
    /// Never fails: unknown terms are kept in [`unknown_terms`](Self::unknown_terms) and
    /// treated as the default repertoire (an unknown first term stands for ISO 2022 IR 6, an
    /// unknown later term is ignored).
    pub fn from_raw(value: &[u8]) -> Self {
        // Defined terms are ASCII; mapping bytes one to one keeps anything else visible.
        let text: String = value.iter().map(|&byte| char::from(byte)).collect();
        let terms: Vec<&str> = text.split('\\').collect();
        Self::from_terms(&terms)
    }

    /// Same as [`from_raw`](Self::from_raw), from already-split terms (e.g. `["", "ISO 2022 IR 149"]`).
    ///
    /// Spelling is matched leniently (case, and ' ', '_', '-' are interchangeable). With several
    /// terms, single-byte terms written without code extensions (`ISO_IR 100`) are taken as
    /// their `ISO 2022` form, since only that is valid there. If any term is `ISO_IR 192`,
    /// `GB18030` or `GBK`, the first such term decides how the whole value is decoded.
    pub fn from_terms<S: AsRef<str>>(terms: &[S]) -> Self {
        let several = terms.len() > 1;
        let mut parsed = Vec::with_capacity(terms.len());
        let mut unknown_terms = Vec::new();
        for (position, raw_term) in terms.iter().enumerate() {
            let trimmed = raw_term.as_ref().trim_matches([' ', '\0']);
            match DefinedTerm::parse(trimmed) {
                Some(mut term) => {
                    if several && term.supports_code_extensions() {
                        term.code_extensions = true;
                    }
                    parsed.push(term);
                }
                None => {
                    unknown_terms.push(trimmed.to_owned());
                    // The first term fixes the initial state, so it is replaced rather than dropped.
                    if position == 0 {
                        parsed.push(DefinedTerm { charset: Charset::Ascii, code_extensions: several });
                    }
                }
            }
        }
        // A set of nothing but ASCII is the default repertoire, whatever its spelling.
        if parsed.iter().all(|term| term.charset == Charset::Ascii) {
            parsed.clear();
        }
        Self { terms: parsed, unknown_terms }
    }

    /// The normalized defined terms, as they would be written. Empty for the default repertoire;
    /// ISO 2022 IR 6 as the first of several terms is written as an empty term.
    pub fn terms(&self) -> Vec<String> {
        self.terms.iter().enumerate().map(|(position, term)| term.name(position).to_owned()).collect()
    }

    /// The terms that were not recognised, trimmed, in the order they appeared.
    pub fn unknown_terms(&self) -> &[String] {
        &self.unknown_terms
    }

    /// Whether this is the default repertoire (ASCII only).
    pub fn is_default(&self) -> bool {
        self.terms.is_empty()
    }

    /// Whether values are decoded as UTF-8 (ISO_IR 192).
    pub fn is_utf8(&self) -> bool {
        matches!(self.mode(), Mode::WholeValue(encoding) if encoding == encoding_rs::UTF_8)
    }

    /// The raw value to write into (0008,0005) for this set, e.g. `b"\\ISO 2022 IR 149"`.
    /// Empty for the default repertoire. Even-length padding is not added here.
    pub fn to_raw(&self) -> Vec<u8> {
        self.terms().join("\\").into_bytes()
    }

    /// Whether every character of `text` can be encoded in this set.
    pub fn can_encode(&self, text: &str) -> bool {
        self.encode(text, TextKind::Text).is_some()
    }

    /// Decode one whole element value (all its values, backslashes kept; for
    /// [`TextKind::PersonName`] and [`TextKind::MultiValued`] the caller splits on '\\'
    /// afterwards). Never panics, never fails: undecodable bytes become U+FFFD, except for
    /// these fallbacks, which recover what real modalities send:
    ///
    /// * bytes >= 0x80 while G1 holds nothing are decoded with the first G1 set of the
    ///   declared terms (writers often omit `ESC $ ) C` before raw KS X 1001 text);
    /// * if that guess was needed, or any byte became U+FFFD, and the whole value is valid
    ///   UTF-8, the UTF-8 decoding is returned instead;
    /// * for the default repertoire, a value with bytes >= 0x80 and no G1 designation is
    ///   decoded as UTF-8 if valid, else as EUC-KR if every byte >= 0x80 forms a valid
    ///   KS X 1001 pair, else as Latin-1.
    pub fn decode(&self, bytes: &[u8], kind: TextKind) -> String {
        if let Mode::WholeValue(encoding) = self.mode() {
            return decode_whole_value(encoding, bytes);
        }
        // Common case: nothing but ASCII, which every initial G0 reads the same way.
        if bytes.iter().all(|&byte| byte.is_ascii() && byte != ESC) {
            return bytes.iter().map(|&byte| char::from(byte)).collect();
        }
        let decoded = decode_iso2022(bytes, self.initial_state(), kind, self.implicit_g1());
        if decoded.high_bytes_without_g1 && self.is_default() {
            return decode_unlabelled(bytes, kind);
        }
        if decoded.replaced || decoded.used_implicit_g1 {
            if let Ok(text) = std::str::from_utf8(bytes) {
                return text.to_owned();
            }
        }
        decoded.text
    }

    /// Encode text into this character set. Returns `None` when a character cannot be represented.
    ///
    /// For ISO 2022 sets the output designates G0/G1 as needed (each character goes to the first
    /// term, in term order, whose repertoire has it) and returns to the initial state before each
    /// delimiter that `kind` resets on, before CR, LF, FF and TAB, and at the end of the value,
    /// so that a decoder in the same set gets the text back. ASCII characters are written as
    /// themselves in every set. JIS X 0212 (`ISO 2022 IR 159`) cannot be encoded, and a
    /// literal ESC is refused by ISO 2022 sets (it would read back as an escape sequence).
    pub fn encode(&self, text: &str, kind: TextKind) -> Option<Vec<u8>> {
        match self.mode() {
            Mode::WholeValue(encoding) if encoding == encoding_rs::UTF_8 => Some(text.as_bytes().to_vec()),
            Mode::WholeValue(encoding) => {
                let (bytes, _, had_unmappable) = encoding.encode(text);
                (!had_unmappable).then(|| bytes.into_owned())
            }
            Mode::Iso2022 => encode_iso2022(&self.terms, self.initial_state(), text, kind),
        }
    }

    fn mode(&self) -> Mode {
        let whole_value = self.terms.iter().find_map(|term| match term.charset {
            Charset::Utf8 => Some(encoding_rs::UTF_8),
            Charset::Gb18030 => Some(encoding_rs::GB18030),
            Charset::Gbk => Some(encoding_rs::GBK),
            _ => None,
        });
        whole_value.map_or(Mode::Iso2022, Mode::WholeValue)
    }

    /// The designations in effect at the start of a value and after every reset.
    fn initial_state(&self) -> CodeState {
        let Some(first) = self.terms.first() else {
            return CodeState { g0: G0Set::Ascii, g1: None };
        };
        // A double-byte G0 (IR 87 or IR 159 first) cannot hold delimiters, so start in ASCII.
        let g0 = first.g0().filter(|set| set.is_single_byte()).unwrap_or(G0Set::Ascii);
        CodeState { g0, g1: first.g1() }
    }

    /// The G1 set assumed for bytes >= 0x80 that arrive with nothing designated into G1.
    fn implicit_g1(&self) -> Option<G1Set> {
        self.terms.iter().find_map(|term| term.g1())
    }
}

/// Decode with a code that has no code extensions, preferring UTF-8 when the value is valid
/// UTF-8 but not valid in the declared code.
fn decode_whole_value(encoding: &'static Encoding, bytes: &[u8]) -> String {
    if encoding == encoding_rs::UTF_8 {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let (text, had_errors) = encoding.decode_without_bom_handling(bytes);
    if had_errors {
        if let Ok(utf8) = std::str::from_utf8(bytes) {
            return utf8.to_owned();
        }
    }
    text.into_owned()
}

/// Guess the code of a value that declares the default repertoire but has bytes >= 0x80:
/// UTF-8, then Korean written raw without escapes (strict KS X 1001 pairs only, so that
/// Latin-1 text is not mistaken for UHC), then Latin-1, which decodes anything.
fn decode_unlabelled(bytes: &[u8], kind: TextKind) -> String {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return text.to_owned();
    }
    let as_korean = decode_iso2022(bytes, CodeState { g0: G0Set::Ascii, g1: Some(G1Set::KsX1001) }, kind, None);
    if !as_korean.replaced {
        return as_korean.text;
    }
    let latin1 = CodeState { g0: G0Set::Ascii, g1: Some(G1Set::Upper(UpperHalf::Latin1)) };
    decode_iso2022(bytes, latin1, kind, None).text
}

/// Pick the character set for a response that must carry all `texts`:
/// text the default repertoire can carry (ASCII) -> the default repertoire; else the first of
/// `preferred` that can encode every text (callers pass e.g. the query's own character set);
/// else UTF-8 (ISO_IR 192).
pub fn choose_for_texts<'a>(
    texts: impl IntoIterator<Item = &'a str> + Clone,
    preferred: &[SpecificCharacterSet],
) -> SpecificCharacterSet {
    let carries_all = |set: &SpecificCharacterSet| texts.clone().into_iter().all(|text| set.can_encode(text));
    let default = SpecificCharacterSet::default_repertoire();
    if carries_all(&default) {
        return default;
    }
    preferred.iter().find(|set| carries_all(set)).cloned().unwrap_or_else(SpecificCharacterSet::utf8)
}
