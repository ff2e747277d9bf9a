//! The graphic character sets that can be designated into G0 and G1, their ISO 2022
//! escape sequences (PS3.3 C.12.1.1.2, tables C.12-3 and C.12-4) and per-character
//! conversion in both directions.

use std::sync::OnceLock;

use encoding_rs::Encoding;

/// The ESC control character that starts every designation sequence.
pub(crate) const ESC: u8 = 0x1B;

/// A single-byte code whose upper half (0xA0..=0xFF, in G1) carries the non-ASCII characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum UpperHalf {
    /// ISO 8859-1 (ISO-IR 100).
    Latin1,
    /// ISO 8859-2 (ISO-IR 101).
    Latin2,
    /// ISO 8859-3 (ISO-IR 109).
    Latin3,
    /// ISO 8859-4 (ISO-IR 110).
    Latin4,
    /// ISO 8859-5 (ISO-IR 144).
    Cyrillic,
    /// ISO 8859-6 (ISO-IR 127).
    Arabic,
    /// ISO 8859-7 (ISO-IR 126).
    Greek,
    /// ISO 8859-8 (ISO-IR 138).
    Hebrew,
    /// ISO 8859-9 (ISO-IR 148).
    Latin5,
    /// ISO 8859-15 (ISO-IR 203).
    Latin9,
    /// TIS 620-2533 (ISO-IR 166).
    Thai,
    /// JIS X 0201 half-width katakana (ISO-IR 13).
    Katakana,
}

/// Number of [`UpperHalf`] variants; sizes the lazily built decoding tables.
const UPPER_HALF_COUNT: usize = 12;

/// Decoding table for bytes 0x80..=0xFF of one upper half.
type UpperTable = [Option<char>; 128];

impl UpperHalf {
    /// The `encoding_rs` encoding whose upper half matches this set, where one exists.
    fn encoding(self) -> Option<&'static Encoding> {
        match self {
            UpperHalf::Latin1 | UpperHalf::Katakana => None,
            UpperHalf::Latin2 => Some(encoding_rs::ISO_8859_2),
            UpperHalf::Latin3 => Some(encoding_rs::ISO_8859_3),
            UpperHalf::Latin4 => Some(encoding_rs::ISO_8859_4),
            UpperHalf::Cyrillic => Some(encoding_rs::ISO_8859_5),
            UpperHalf::Arabic => Some(encoding_rs::ISO_8859_6),
            UpperHalf::Greek => Some(encoding_rs::ISO_8859_7),
            UpperHalf::Hebrew => Some(encoding_rs::ISO_8859_8),
            // WHATWG has no ISO 8859-9 of its own; windows-1254 matches it from 0xA0 up.
            UpperHalf::Latin5 => Some(encoding_rs::WINDOWS_1254),
            UpperHalf::Latin9 => Some(encoding_rs::ISO_8859_15),
            // windows-874 is a superset of TIS-620.
            UpperHalf::Thai => Some(encoding_rs::WINDOWS_874),
        }
    }

    /// Map one byte >= 0x80 without the table (used to build it).
    fn map_byte_uncached(self, byte: u8) -> Option<char> {
        match self {
            // The true ISO 8859-1 mapping: byte value == code point (not windows-1252).
            UpperHalf::Latin1 => Some(char::from(byte)),
            UpperHalf::Katakana => {
                if !(0xA1..=0xDF).contains(&byte) {
                    return None;
                }
                char::from_u32(0xFF61 + u32::from(byte - 0xA1))
            }
            // Keep the C1 range as C1 controls, as ISO 8859-9 does (windows-1254 differs there).
            UpperHalf::Latin5 if byte < 0xA0 => Some(char::from(byte)),
            _ => {
                let encoding = self.encoding()?;
                let single = [byte];
                let decoded = encoding.decode_without_bom_handling_and_without_replacement(&single)?;
                let mut chars = decoded.chars();
                let first = chars.next()?;
                chars.next().is_none().then_some(first)
            }
        }
    }

    /// The lazily built table for bytes 0x80..=0xFF.
    fn table(self) -> &'static UpperTable {
        static TABLES: [OnceLock<UpperTable>; UPPER_HALF_COUNT] = [const { OnceLock::new() }; UPPER_HALF_COUNT];
        TABLES[self as usize].get_or_init(|| {
            let mut table = [None; 128];
            for (byte, slot) in (0x80..=0xFFu8).zip(table.iter_mut()) {
                *slot = self.map_byte_uncached(byte);
            }
            table
        })
    }

    /// Decode one byte of the upper half; `None` for bytes below 0x80 or unassigned positions.
    pub(crate) fn decode_byte(self, byte: u8) -> Option<char> {
        let offset = usize::from(byte.checked_sub(0x80)?);
        self.table().get(offset).copied().flatten()
    }

    /// Encode one character into a graphic byte 0xA0..=0xFF of the upper half.
    ///
    /// C1 controls (0x80..=0x9F) are never produced: they are not DICOM text.
    pub(crate) fn encode_char(self, ch: char) -> Option<u8> {
        if ch.is_ascii() {
            return None;
        }
        (0xA0..=0xFFu8).find(|&byte| self.decode_byte(byte) == Some(ch))
    }

    /// Final byte of the G1 designation escape sequence.
    fn g1_final_byte(self) -> &'static [u8] {
        match self {
            UpperHalf::Latin1 => b"\x1b-A",
            UpperHalf::Latin2 => b"\x1b-B",
            UpperHalf::Latin3 => b"\x1b-C",
            UpperHalf::Latin4 => b"\x1b-D",
            UpperHalf::Cyrillic => b"\x1b-L",
            UpperHalf::Arabic => b"\x1b-G",
            UpperHalf::Greek => b"\x1b-F",
            UpperHalf::Hebrew => b"\x1b-H",
            UpperHalf::Latin5 => b"\x1b-M",
            UpperHalf::Latin9 => b"\x1b-b",
            UpperHalf::Thai => b"\x1b-T",
            UpperHalf::Katakana => b"\x1b)I",
        }
    }

    /// Every upper half, for escape sequence lookup.
    const ALL: [UpperHalf; UPPER_HALF_COUNT] = [
        UpperHalf::Latin1,
        UpperHalf::Latin2,
        UpperHalf::Latin3,
        UpperHalf::Latin4,
        UpperHalf::Cyrillic,
        UpperHalf::Arabic,
        UpperHalf::Greek,
        UpperHalf::Hebrew,
        UpperHalf::Latin5,
        UpperHalf::Latin9,
        UpperHalf::Thai,
        UpperHalf::Katakana,
    ];
}

/// A set designated into G0 (bytes 0x21..=0x7E).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum G0Set {
    /// ISO-IR 6 (ASCII), `ESC ( B`.
    Ascii,
    /// JIS X 0201 romaji, `ESC ( J`; treated as ASCII so that 0x5C stays the DICOM delimiter.
    JisRoman,
    /// JIS X 0208 (ISO-IR 87), double-byte, `ESC $ B`.
    JisX0208,
    /// JIS X 0212 (ISO-IR 159), double-byte, `ESC $ ( D`.
    JisX0212,
}

impl G0Set {
    const ALL: [G0Set; 4] = [G0Set::Ascii, G0Set::JisRoman, G0Set::JisX0208, G0Set::JisX0212];

    /// The escape sequence that designates this set into G0.
    pub(crate) fn escape(self) -> &'static [u8] {
        match self {
            G0Set::Ascii => b"\x1b(B",
            G0Set::JisRoman => b"\x1b(J",
            G0Set::JisX0208 => b"\x1b$B",
            G0Set::JisX0212 => b"\x1b$(D",
        }
    }

    /// Single-byte G0 sets carry ASCII; only while one is designated are delimiters recognised.
    pub(crate) fn is_single_byte(self) -> bool {
        matches!(self, G0Set::Ascii | G0Set::JisRoman)
    }

    /// Encode a non-ASCII character as a 7-bit pair of this (double-byte) set.
    ///
    /// JIS X 0212 encoding is not supported (`encoding_rs` has no JIS X 0212 encoder).
    pub(crate) fn encode_char(self, ch: char) -> Option<[u8; 2]> {
        if self != G0Set::JisX0208 {
            return None;
        }
        // EUC-JP code set 1 is JIS X 0208 with the high bit set on both bytes.
        let [lead, trail] = encode_pair(encoding_rs::EUC_JP, ch)?;
        if !is_gr94(lead) || !is_gr94(trail) {
            return None;
        }
        Some([lead & 0x7F, trail & 0x7F])
    }
}

/// A set designated into G1 (bytes 0xA0..=0xFF).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum G1Set {
    /// The upper half of a single-byte code (ISO 8859 part, TIS 620, JIS X 0201 katakana).
    Upper(UpperHalf),
    /// KS X 1001 (ISO-IR 149), double-byte, `ESC $ ) C`.
    KsX1001,
    /// GB 2312 (ISO-IR 58), double-byte, `ESC $ ) A`.
    Gb2312,
}

impl G1Set {
    /// The escape sequence that designates this set into G1.
    pub(crate) fn escape(self) -> &'static [u8] {
        match self {
            G1Set::Upper(half) => half.g1_final_byte(),
            G1Set::KsX1001 => b"\x1b$)C",
            G1Set::Gb2312 => b"\x1b$)A",
        }
    }

    /// Encode a non-ASCII character into this set's G1 bytes.
    pub(crate) fn encode_char(self, ch: char) -> Option<EncodedChar> {
        match self {
            G1Set::Upper(half) => half.encode_char(ch).map(EncodedChar::Single),
            G1Set::KsX1001 => {
                // encoding_rs EUC-KR is UHC; only the 0xA1..=0xFE square is KS X 1001.
                let pair = encode_pair(encoding_rs::EUC_KR, ch)?;
                pair.iter().all(|&byte| is_gr94(byte)).then_some(EncodedChar::Double(pair))
            }
            G1Set::Gb2312 => {
                // encoding_rs GBK is a superset; GB 2312 uses rows 0xA1..=0xA9 and 0xB0..=0xF7.
                let [lead, trail] = encode_pair(encoding_rs::GBK, ch)?;
                let lead_in_gb2312 = (0xA1..=0xA9).contains(&lead) || (0xB0..=0xF7).contains(&lead);
                (lead_in_gb2312 && is_gr94(trail)).then_some(EncodedChar::Double([lead, trail]))
            }
        }
    }
}

/// The bytes of one encoded character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EncodedChar {
    Single(u8),
    Double([u8; 2]),
}

impl EncodedChar {
    pub(crate) fn write_to(self, out: &mut Vec<u8>) {
        match self {
            EncodedChar::Single(byte) => out.push(byte),
            EncodedChar::Double(pair) => out.extend_from_slice(&pair),
        }
    }
}

/// The designations in effect: what G0 and G1 currently hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CodeState {
    pub(crate) g0: G0Set,
    pub(crate) g1: Option<G1Set>,
}

/// What a recognised escape sequence does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Designation {
    G0(G0Set),
    G1(G1Set),
}

/// Look up the designation for the bytes of an escape sequence after ESC
/// (intermediate bytes and final byte).
pub(crate) fn designation_for(sequence: &[u8]) -> Option<Designation> {
    // JIS C 6226-1978 (`ESC $ @`) is the older edition of JIS X 0208; some writers still use it.
    if sequence == b"$@" {
        return Some(Designation::G0(G0Set::JisX0208));
    }
    let matches_sequence = |escape: &[u8]| escape.get(1..) == Some(sequence);
    if let Some(set) = G0Set::ALL.into_iter().find(|set| matches_sequence(set.escape())) {
        return Some(Designation::G0(set));
    }
    let g1_sets = UpperHalf::ALL.into_iter().map(G1Set::Upper).chain([G1Set::KsX1001, G1Set::Gb2312]);
    for set in g1_sets {
        if matches_sequence(set.escape()) {
            return Some(Designation::G1(set));
        }
    }
    None
}

/// A byte of the 94-character right-hand square (0xA1..=0xFE), used by the double-byte G1 sets.
pub(crate) fn is_gr94(byte: u8) -> bool {
    (0xA1..=0xFE).contains(&byte)
}

/// Encode one character with `encoding`, accepting only a clean two-byte result that
/// decodes back to the same character: the WHATWG encoders map a few characters onto
/// others first (EUC-JP writes U+2212 MINUS SIGN as the pair that decodes to U+FF0D),
/// and the decoder would then read a different character than was written.
fn encode_pair(encoding: &'static Encoding, ch: char) -> Option<[u8; 2]> {
    let mut buffer = [0u8; 4];
    let (bytes, _, had_unmappable) = encoding.encode(ch.encode_utf8(&mut buffer));
    if had_unmappable {
        return None;
    }
    let pair = match *bytes {
        [lead, trail] => [lead, trail],
        _ => return None,
    };
    let decoded = encoding.decode_without_bom_handling_and_without_replacement(&pair)?;
    decoded.chars().eq([ch]).then_some(pair)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin1_is_the_identity_mapping_not_windows_1252() {
        assert_eq!(UpperHalf::Latin1.decode_byte(0x80), Some('\u{80}'));
        assert_eq!(UpperHalf::Latin1.decode_byte(0xE9), Some('é'));
        assert_eq!(UpperHalf::Latin1.encode_char('é'), Some(0xE9));
        assert_eq!(UpperHalf::Latin1.encode_char('€'), None);
    }

    #[test]
    fn latin5_keeps_c1_controls() {
        assert_eq!(UpperHalf::Latin5.decode_byte(0x80), Some('\u{80}'));
        assert_eq!(UpperHalf::Latin5.decode_byte(0xF0), Some('ğ'));
    }

    #[test]
    fn katakana_covers_a1_to_df() {
        assert_eq!(UpperHalf::Katakana.decode_byte(0xA1), Some('\u{FF61}'));
        assert_eq!(UpperHalf::Katakana.decode_byte(0xDF), Some('\u{FF9F}'));
        assert_eq!(UpperHalf::Katakana.decode_byte(0xE0), None);
        assert_eq!(UpperHalf::Katakana.encode_char('ﾔ'), Some(0xD4));
    }

    #[test]
    fn every_escape_sequence_is_recognised() {
        for set in G0Set::ALL {
            let escape = set.escape();
            assert_eq!(designation_for(&escape[1..]), Some(Designation::G0(set)));
        }
        for half in UpperHalf::ALL {
            let set = G1Set::Upper(half);
            assert_eq!(designation_for(&set.escape()[1..]), Some(Designation::G1(set)));
        }
        assert_eq!(designation_for(b"$)C"), Some(Designation::G1(G1Set::KsX1001)));
        assert_eq!(designation_for(b"$)A"), Some(Designation::G1(G1Set::Gb2312)));
        assert_eq!(designation_for(b"$)Z"), None);
    }

    #[test]
    fn double_byte_sets_reject_characters_outside_their_square() {
        assert_eq!(G1Set::KsX1001.encode_char('홍'), Some(EncodedChar::Double([0xC8, 0xAB])));
        // U+B620 is in UHC but not in KS X 1001.
        assert_eq!(G1Set::KsX1001.encode_char('\u{B620}'), None);
        assert_eq!(G0Set::JisX0208.encode_char('山'), Some([0x3B, 0x33]));
        assert_eq!(G0Set::JisX0208.encode_char('ｱ'), None);
        // EUC-JP's encoder writes MINUS SIGN as FULLWIDTH HYPHEN-MINUS, which reads back as such.
        assert_eq!(G0Set::JisX0208.encode_char('\u{2212}'), None);
        assert_eq!(G0Set::JisX0208.encode_char('\u{FF0D}'), Some([0x21, 0x5D]));
        assert_eq!(G1Set::Gb2312.encode_char('王'), Some(EncodedChar::Double([0xCD, 0xF5])));
    }
}
