//! Defined terms of Specific Character Set (0008,0005) (PS3.3 C.12.1.1.2) and what each
//! one designates into G0 and G1.

use crate::sets::{G0Set, G1Set, UpperHalf};

/// The character repertoire a defined term names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Charset {
    /// ISO-IR 6, the default repertoire.
    Ascii,
    /// ASCII (or JIS X 0201 romaji) in G0 plus a single-byte upper half in G1.
    SingleByte(UpperHalf),
    /// JIS X 0208 in G0.
    JisX0208,
    /// JIS X 0212 in G0.
    JisX0212,
    /// KS X 1001 in G1.
    KsX1001,
    /// GB 2312 in G1.
    Gb2312,
    /// ISO_IR 192: the whole value is UTF-8, no code extensions.
    Utf8,
    /// GB18030: the whole value is GB18030, no code extensions.
    Gb18030,
    /// GBK: the whole value is GBK, no code extensions.
    Gbk,
}

/// One parsed defined term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct DefinedTerm {
    pub(crate) charset: Charset,
    /// Whether the term is the "ISO 2022 ..." form (code extensions allowed).
    pub(crate) code_extensions: bool,
}

/// A row of the defined-term tables: the canonical spelling and its meaning.
struct TermEntry {
    name: &'static str,
    charset: Charset,
    code_extensions: bool,
}

const fn entry(name: &'static str, charset: Charset, code_extensions: bool) -> TermEntry {
    TermEntry { name, charset, code_extensions }
}

/// Every supported defined term, in the spelling DICOM uses.
const DEFINED_TERMS: &[TermEntry] = &[
    entry("ISO_IR 6", Charset::Ascii, false),
    entry("ISO 2022 IR 6", Charset::Ascii, true),
    entry("ISO_IR 100", Charset::SingleByte(UpperHalf::Latin1), false),
    entry("ISO 2022 IR 100", Charset::SingleByte(UpperHalf::Latin1), true),
    entry("ISO_IR 101", Charset::SingleByte(UpperHalf::Latin2), false),
    entry("ISO 2022 IR 101", Charset::SingleByte(UpperHalf::Latin2), true),
    entry("ISO_IR 109", Charset::SingleByte(UpperHalf::Latin3), false),
    entry("ISO 2022 IR 109", Charset::SingleByte(UpperHalf::Latin3), true),
    entry("ISO_IR 110", Charset::SingleByte(UpperHalf::Latin4), false),
    entry("ISO 2022 IR 110", Charset::SingleByte(UpperHalf::Latin4), true),
    entry("ISO_IR 144", Charset::SingleByte(UpperHalf::Cyrillic), false),
    entry("ISO 2022 IR 144", Charset::SingleByte(UpperHalf::Cyrillic), true),
    entry("ISO_IR 127", Charset::SingleByte(UpperHalf::Arabic), false),
    entry("ISO 2022 IR 127", Charset::SingleByte(UpperHalf::Arabic), true),
    entry("ISO_IR 126", Charset::SingleByte(UpperHalf::Greek), false),
    entry("ISO 2022 IR 126", Charset::SingleByte(UpperHalf::Greek), true),
    entry("ISO_IR 138", Charset::SingleByte(UpperHalf::Hebrew), false),
    entry("ISO 2022 IR 138", Charset::SingleByte(UpperHalf::Hebrew), true),
    entry("ISO_IR 148", Charset::SingleByte(UpperHalf::Latin5), false),
    entry("ISO 2022 IR 148", Charset::SingleByte(UpperHalf::Latin5), true),
    entry("ISO_IR 203", Charset::SingleByte(UpperHalf::Latin9), false),
    entry("ISO 2022 IR 203", Charset::SingleByte(UpperHalf::Latin9), true),
    entry("ISO_IR 166", Charset::SingleByte(UpperHalf::Thai), false),
    entry("ISO 2022 IR 166", Charset::SingleByte(UpperHalf::Thai), true),
    entry("ISO_IR 13", Charset::SingleByte(UpperHalf::Katakana), false),
    entry("ISO 2022 IR 13", Charset::SingleByte(UpperHalf::Katakana), true),
    entry("ISO 2022 IR 87", Charset::JisX0208, true),
    entry("ISO 2022 IR 159", Charset::JisX0212, true),
    entry("ISO 2022 IR 149", Charset::KsX1001, true),
    entry("ISO 2022 IR 58", Charset::Gb2312, true),
    entry("ISO_IR 192", Charset::Utf8, false),
    entry("GB18030", Charset::Gb18030, false),
    entry("GBK", Charset::Gbk, false),
];

/// Comparison key that tolerates common misspellings: case, and spaces, '_' or '-'
/// used interchangeably ("ISO-IR 100", "iso_ir_100"). Distinct terms stay distinct.
fn lookup_key(term: &str) -> String {
    term.chars().filter(|ch| !matches!(ch, ' ' | '_' | '-')).map(|ch| ch.to_ascii_uppercase()).collect()
}

impl DefinedTerm {
    /// Parse one already-trimmed term. The empty term is ISO-IR 6.
    pub(crate) fn parse(term: &str) -> Option<DefinedTerm> {
        if term.is_empty() {
            return Some(DefinedTerm { charset: Charset::Ascii, code_extensions: false });
        }
        let key = lookup_key(term);
        DEFINED_TERMS
            .iter()
            .find(|entry| lookup_key(entry.name) == key)
            .map(|entry| DefinedTerm { charset: entry.charset, code_extensions: entry.code_extensions })
    }

    /// The canonical spelling of this term at `position` in the value.
    ///
    /// ISO 2022 IR 6 as the first of several terms is written empty, as PS3.3 C.12.1.1.2 shows.
    pub(crate) fn name(self, position: usize) -> &'static str {
        if self.charset == Charset::Ascii && (position == 0 || !self.code_extensions) {
            return "";
        }
        DEFINED_TERMS
            .iter()
            .find(|entry| entry.charset == self.charset && entry.code_extensions == self.code_extensions)
            .map_or("", |entry| entry.name)
    }

    /// Whether this term can take part in ISO 2022 code extension (all but UTF-8, GB18030, GBK).
    pub(crate) fn supports_code_extensions(self) -> bool {
        !matches!(self.charset, Charset::Utf8 | Charset::Gb18030 | Charset::Gbk)
    }

    /// What this term designates into G0, if anything.
    pub(crate) fn g0(self) -> Option<G0Set> {
        match self.charset {
            Charset::Ascii => Some(G0Set::Ascii),
            Charset::SingleByte(UpperHalf::Katakana) => Some(G0Set::JisRoman),
            Charset::SingleByte(_) => Some(G0Set::Ascii),
            Charset::JisX0208 => Some(G0Set::JisX0208),
            Charset::JisX0212 => Some(G0Set::JisX0212),
            Charset::KsX1001 | Charset::Gb2312 | Charset::Utf8 | Charset::Gb18030 | Charset::Gbk => None,
        }
    }

    /// What this term designates into G1, if anything.
    pub(crate) fn g1(self) -> Option<G1Set> {
        match self.charset {
            Charset::SingleByte(half) => Some(G1Set::Upper(half)),
            Charset::KsX1001 => Some(G1Set::KsX1001),
            Charset::Gb2312 => Some(G1Set::Gb2312),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_defined_term_parses_to_a_known_set() {
        let names = [
            "ISO_IR 6",
            "ISO_IR 100",
            "ISO_IR 101",
            "ISO_IR 109",
            "ISO_IR 110",
            "ISO_IR 144",
            "ISO_IR 127",
            "ISO_IR 126",
            "ISO_IR 138",
            "ISO_IR 148",
            "ISO_IR 203",
            "ISO_IR 166",
            "ISO_IR 13",
            "ISO_IR 192",
            "GB18030",
            "GBK",
            "ISO 2022 IR 6",
            "ISO 2022 IR 100",
            "ISO 2022 IR 101",
            "ISO 2022 IR 109",
            "ISO 2022 IR 110",
            "ISO 2022 IR 144",
            "ISO 2022 IR 127",
            "ISO 2022 IR 126",
            "ISO 2022 IR 138",
            "ISO 2022 IR 148",
            "ISO 2022 IR 203",
            "ISO 2022 IR 166",
            "ISO 2022 IR 13",
            "ISO 2022 IR 87",
            "ISO 2022 IR 159",
            "ISO 2022 IR 149",
            "ISO 2022 IR 58",
        ];
        for name in names {
            let term = DefinedTerm::parse(name).unwrap_or_else(|| panic!("{name} should parse"));
            assert_eq!(term.code_extensions, name.starts_with("ISO 2022"), "{name}");
            if term.charset != Charset::Ascii {
                assert_eq!(term.name(1), name, "canonical spelling of {name}");
            }
            // Every term must designate something or be a whole-value encoding.
            assert!(term.g0().is_some() || term.g1().is_some() || !term.supports_code_extensions(), "{name}");
        }
        assert_eq!(names.len(), DEFINED_TERMS.len());
    }

    #[test]
    fn lenient_spellings_parse_and_unknown_terms_do_not() {
        assert_eq!(DefinedTerm::parse("iso-ir 100"), DefinedTerm::parse("ISO_IR 100"));
        assert_eq!(DefinedTerm::parse("ISO_IR_192").map(|t| t.charset), Some(Charset::Utf8));
        assert_eq!(DefinedTerm::parse("ISO_IR 999"), None);
        assert_eq!(DefinedTerm::parse("ISO 2022 IR 100").map(|t| t.code_extensions), Some(true));
    }

    #[test]
    fn iso_ir_6_is_written_empty_in_first_position() {
        let ir6 = DefinedTerm { charset: Charset::Ascii, code_extensions: true };
        assert_eq!(ir6.name(0), "");
        assert_eq!(ir6.name(2), "ISO 2022 IR 6");
    }
}
