//! Patient's Name values from pydicom's charset test files (`chrH31.dcm`, `chrX1.dcm`, ...)
//! and the behaviour around them: parsing, round trips, choice of set, fallbacks.

use haneul_charset::{choose_for_texts, SpecificCharacterSet, TextKind};

const KOREAN_NAME: &[u8] =
    b"Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7=\x1b$)C\xc8\xab^\x1b$)C\xb1\xe6\xb5\xbf";
const KOREAN_NAME_TEXT: &str = "Hong^Gildong=洪^吉洞=홍^길동";
const KOREAN_SHORT: &[u8] = b"\x1b$)C\xb1\xe8\xc8\xf1\xc1\xdf";
const JAPANESE_NAME: &[u8] = b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B";
const JAPANESE_NAME_TEXT: &str = "Yamada^Tarou=山田^太郎=やまだ^たろう";
const KATAKANA_NAME: &[u8] =
    b"\xd4\xcf\xc0\xde^\xc0\xdb\xb3=\x1b$B;3ED\x1b(J^\x1b$BB@O:\x1b(J=\x1b$B$d$^$@\x1b(J^\x1b$B$?$m$&\x1b(J";
const KATAKANA_NAME_TEXT: &str = "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう";

fn set(terms: &[&str]) -> SpecificCharacterSet {
    SpecificCharacterSet::from_terms(terms)
}

fn korean() -> SpecificCharacterSet {
    set(&["", "ISO 2022 IR 149"])
}

fn japanese() -> SpecificCharacterSet {
    set(&["", "ISO 2022 IR 87"])
}

fn katakana_and_kanji() -> SpecificCharacterSet {
    set(&["ISO 2022 IR 13", "ISO 2022 IR 87"])
}

fn pn(set: &SpecificCharacterSet, bytes: &[u8]) -> String {
    set.decode(bytes, TextKind::PersonName)
}

#[test]
fn decodes_korean_iso_2022_ir_149() {
    assert_eq!(pn(&korean(), KOREAN_NAME), KOREAN_NAME_TEXT);
    assert_eq!(pn(&korean(), KOREAN_SHORT), "김희중");
}

#[test]
fn decodes_japanese_iso_2022_ir_87() {
    assert_eq!(pn(&japanese(), JAPANESE_NAME), JAPANESE_NAME_TEXT);
}

#[test]
fn decodes_japanese_katakana_with_kanji() {
    assert_eq!(pn(&katakana_and_kanji(), KATAKANA_NAME), KATAKANA_NAME_TEXT);
}

#[test]
fn decodes_single_byte_sets() {
    let latin1 = set(&["ISO_IR 100"]);
    assert_eq!(pn(&latin1, b"Buc^J\xe9r\xf4me"), "Buc^Jérôme");
    assert_eq!(pn(&latin1, b"\xc4neas^R\xfcdiger"), "Äneas^Rüdiger");
    assert_eq!(pn(&set(&["ISO_IR 126"]), b"\xc4\xe9\xef\xed\xf5\xf3\xe9\xef\xf2"), "Διονυσιος");
    assert_eq!(pn(&set(&["ISO_IR 127"]), b"\xe2\xc8\xc7\xe6\xea^\xe4\xe6\xd2\xc7\xd1"), "قباني^لنزار");
    assert_eq!(pn(&set(&["ISO_IR 138"]), b"\xf9\xf8\xe5\xef^\xe3\xe1\xe5\xf8\xe4"), "שרון^דבורה");
    assert_eq!(pn(&set(&["ISO_IR 144"]), b"\xbb\xee\xdace\xdc\xd1yp\xd3"), "Люкceмбypг");
}

#[test]
fn latin1_is_not_windows_1252() {
    // 0x80 is EURO SIGN in windows-1252 but a C1 control in ISO 8859-1.
    assert_eq!(pn(&set(&["ISO_IR 100"]), b"A\x80"), "A\u{80}");
}

#[test]
fn decodes_multi_byte_sets_without_code_extensions() {
    let utf8 = b"Wang^XiaoDong=\xe7\x8e\x8b^\xe5\xb0\x8f\xe6\x9d\xb1=";
    assert_eq!(pn(&set(&["ISO_IR 192"]), utf8), "Wang^XiaoDong=王^小東=");
    let gb18030 = b"Wang^XiaoDong=\xcd\xf5^\xd0\xa1\xb6\xab=";
    assert_eq!(pn(&set(&["GB18030"]), gb18030), "Wang^XiaoDong=王^小东=");
}

#[test]
fn gbk_trail_byte_0x5c_is_not_a_delimiter() {
    // U+4E57 (乗) is 0x81 0x5C in GBK: the 0x5C must not be taken for a backslash.
    let gbk = set(&["GBK"]);
    let bytes = gbk.encode("乗\\乗", TextKind::MultiValued).expect("GBK has 乗");
    assert_eq!(bytes, b"\x81\x5c\\\x81\x5c");
    assert_eq!(gbk.decode(&bytes, TextKind::MultiValued), "乗\\乗");
}

#[test]
fn parses_raw_values() {
    let korean = SpecificCharacterSet::from_raw(b"\\ISO 2022 IR 149");
    assert_eq!(korean.terms(), vec!["".to_owned(), "ISO 2022 IR 149".to_owned()]);
    assert_eq!(korean, self::korean());
    assert_eq!(korean.to_raw(), b"\\ISO 2022 IR 149");

    let latin1 = SpecificCharacterSet::from_raw(b"ISO_IR 100 ");
    assert_eq!(latin1.terms(), vec!["ISO_IR 100".to_owned()]);
    assert_eq!(latin1, set(&["ISO_IR 100"]));
    assert_eq!(pn(&latin1, b"J\xe9r\xf4me"), "Jérôme");

    let padded = SpecificCharacterSet::from_raw(b"ISO_IR 192\0");
    assert!(padded.is_utf8());

    let unknown = SpecificCharacterSet::from_raw(b"ISO_IR 999");
    assert_eq!(unknown.unknown_terms(), ["ISO_IR 999".to_owned()]);
    assert!(unknown.is_default());

    assert!(SpecificCharacterSet::from_raw(b"").is_default());
    assert!(SpecificCharacterSet::from_raw(b"ISO_IR 6").is_default());
    assert!(SpecificCharacterSet::default_repertoire().to_raw().is_empty());
    assert_eq!(SpecificCharacterSet::utf8().to_raw(), b"ISO_IR 192");
}

#[test]
fn unknown_first_term_stands_for_ascii() {
    let odd = SpecificCharacterSet::from_raw(b"ISO_IR 999\\ISO 2022 IR 149");
    assert_eq!(odd.unknown_terms(), ["ISO_IR 999".to_owned()]);
    assert_eq!(odd, korean_with_unknown_first());
    assert_eq!(pn(&odd, KOREAN_SHORT), "김희중");
}

fn korean_with_unknown_first() -> SpecificCharacterSet {
    SpecificCharacterSet::from_terms(&["ISO_IR 999", "ISO 2022 IR 149"])
}

#[test]
fn encodes_the_pydicom_bytes_exactly() {
    assert_eq!(korean().encode(KOREAN_NAME_TEXT, TextKind::PersonName).as_deref(), Some(KOREAN_NAME));
    assert_eq!(korean().encode("김희중", TextKind::PersonName).as_deref(), Some(KOREAN_SHORT));
    assert_eq!(japanese().encode(JAPANESE_NAME_TEXT, TextKind::PersonName).as_deref(), Some(JAPANESE_NAME));
    assert_eq!(katakana_and_kanji().encode(KATAKANA_NAME_TEXT, TextKind::PersonName).as_deref(), Some(KATAKANA_NAME));
}

#[test]
fn round_trips_every_sample() {
    let samples: Vec<(SpecificCharacterSet, &[u8])> = vec![
        (korean(), KOREAN_NAME),
        (korean(), KOREAN_SHORT),
        (japanese(), JAPANESE_NAME),
        (katakana_and_kanji(), KATAKANA_NAME),
        (set(&["ISO_IR 192"]), b"Wang^XiaoDong=\xe7\x8e\x8b^\xe5\xb0\x8f\xe6\x9d\xb1="),
        (set(&["GB18030"]), b"Wang^XiaoDong=\xcd\xf5^\xd0\xa1\xb6\xab="),
        (set(&["ISO_IR 100"]), b"Buc^J\xe9r\xf4me"),
        (set(&["ISO_IR 100"]), b"\xc4neas^R\xfcdiger"),
        (set(&["ISO_IR 126"]), b"\xc4\xe9\xef\xed\xf5\xf3\xe9\xef\xf2"),
        (set(&["ISO_IR 127"]), b"\xe2\xc8\xc7\xe6\xea^\xe4\xe6\xd2\xc7\xd1"),
        (set(&["ISO_IR 138"]), b"\xf9\xf8\xe5\xef^\xe3\xe1\xe5\xf8\xe4"),
        (set(&["ISO_IR 144"]), b"\xbb\xee\xdace\xdc\xd1yp\xd3"),
    ];
    for (charset, bytes) in samples {
        let text = pn(&charset, bytes);
        let encoded = charset
            .encode(&text, TextKind::PersonName)
            .unwrap_or_else(|| panic!("{text} should encode in {:?}", charset.terms()));
        assert_eq!(pn(&charset, &encoded), text, "round trip in {:?}", charset.terms());
    }
}

#[test]
fn multi_valued_and_text_kinds_reset_at_their_own_delimiters() {
    let korean = korean();
    // Multi-valued: reset at '\\' but not at '^'.
    let values = korean.encode("홍^길동\\김", TextKind::MultiValued).expect("encodes");
    assert_eq!(values, b"\x1b$)C\xc8\xab^\xb1\xe6\xb5\xbf\\\x1b$)C\xb1\xe8");
    assert_eq!(korean.decode(&values, TextKind::MultiValued), "홍^길동\\김");
    // Text: a backslash is an ordinary character; only CR/LF/FF/TAB reset.
    let text = korean.encode("홍\\길\r\n동", TextKind::Text).expect("encodes");
    assert_eq!(text, b"\x1b$)C\xc8\xab\\\xb1\xe6\r\n\x1b$)C\xb5\xbf");
    assert_eq!(korean.decode(&text, TextKind::Text), "홍\\길\r\n동");
    // Japanese in G0 must switch back to ASCII before a delimiter and at the end.
    let japanese = japanese().encode("山\\田", TextKind::MultiValued).expect("encodes");
    assert_eq!(japanese, b"\x1b$B;3\x1b(B\\\x1b$BED\x1b(B");
}

#[test]
fn decoding_resets_state_at_delimiters() {
    // Initial G1 is Latin-1; KS X 1001 designated into G1 lasts until the next delimiter.
    let mixed = set(&["ISO 2022 IR 100", "ISO 2022 IR 149"]);
    assert_eq!(pn(&mixed, b"\x1b$)C\xc8\xab^\xe9"), "홍^é");
    // In text values '^' is no delimiter, so 0xE9 is still (half of) KS X 1001.
    assert_eq!(mixed.decode(b"\x1b$)C\xc8\xab^\xe9", TextKind::Text), "홍^\u{FFFD}");
    // Control characters reset every kind.
    assert_eq!(mixed.decode(b"\x1b$)C\xc8\xab\r\n\xe9", TextKind::Text), "홍\r\né");
    // With JIS X 0208 in G0 the '^' byte is part of a pair, not a delimiter.
    assert_eq!(pn(&japanese(), b"\x1b$B$d$^$@\x1b(B"), "やまだ");
}

#[test]
fn unknown_escape_sequences_are_skipped() {
    // ESC $ ) Z designates nothing known; ESC C is a complete (unknown) two-byte sequence.
    assert_eq!(pn(&korean(), b"A\x1b$)ZB\x1bCD"), "ABD");
    // Truncated sequences drop the ESC and its intermediates only.
    assert_eq!(pn(&korean(), b"A\x1b$"), "A");
    assert_eq!(pn(&korean(), b"A\x1b$)\x1b$)C\xc8\xab"), "A홍");
}

#[test]
fn encode_refuses_what_the_set_cannot_carry() {
    assert_eq!(set(&["ISO_IR 100"]).encode("홍길동", TextKind::PersonName), None);
    assert_eq!(SpecificCharacterSet::default_repertoire().encode("Jérôme", TextKind::PersonName), None);
    assert_eq!(korean().encode("Ω", TextKind::PersonName).map(|_| ()), Some(()), "KS X 1001 has Greek");
    assert_eq!(korean().encode("é", TextKind::PersonName), None);
    assert_eq!(set(&["", "ISO 2022 IR 159"]).encode("山", TextKind::PersonName), None);
    assert_eq!(korean().encode("a\u{1b}b", TextKind::Text), None);
    assert_eq!(SpecificCharacterSet::utf8().encode("홍", TextKind::Text).as_deref(), Some("홍".as_bytes()));
}

#[test]
fn encodes_with_the_first_term_that_has_the_character() {
    // Latin-1 then Korean: 'é' goes to Latin-1 in G1, '홍' needs KS X 1001 designated.
    let mixed = set(&["ISO 2022 IR 100", "ISO 2022 IR 149"]);
    let bytes = mixed.encode("é홍", TextKind::Text).expect("encodes");
    assert_eq!(bytes, b"\xe9\x1b$)C\xc8\xab\x1b-A");
    assert_eq!(mixed.decode(&bytes, TextKind::Text), "é홍");
}

#[test]
fn chooses_a_character_set_for_responses() {
    let korean = korean();
    let latin1 = set(&["ISO_IR 100"]);
    assert!(choose_for_texts(["Hong^Gildong", "CT"], std::slice::from_ref(&korean)).is_default());
    assert_eq!(choose_for_texts(["홍^길동", "CT"], std::slice::from_ref(&korean)), korean);
    assert!(choose_for_texts(["홍^길동"], std::slice::from_ref(&latin1)).is_utf8());
    assert_eq!(choose_for_texts(["Jérôme"], &[korean.clone(), latin1.clone()]), latin1);
    assert!(choose_for_texts(["홍", "é"], &[korean, latin1]).is_utf8());
}

#[test]
fn default_repertoire_recovers_raw_euc_kr() {
    let default = SpecificCharacterSet::default_repertoire();
    assert_eq!(pn(&default, b"\xb1\xe8\xc8\xf1\xc1\xdf"), "김희중");
}

#[test]
fn default_repertoire_recovers_utf8() {
    let default = SpecificCharacterSet::default_repertoire();
    assert_eq!(pn(&default, "홍^길동".as_bytes()), "홍^길동");
    assert_eq!(pn(&default, "Jérôme".as_bytes()), "Jérôme");
}

#[test]
fn default_repertoire_falls_back_to_latin1() {
    let default = SpecificCharacterSet::default_repertoire();
    // 0xE9 0x72 would be a valid UHC pair; strict KS X 1001 rejects it.
    assert_eq!(pn(&default, b"J\xe9r\xf4me"), "Jérôme");
}

#[test]
fn declared_korean_recovers_raw_euc_kr_and_utf8() {
    // Escape sequences omitted by the writer.
    assert_eq!(pn(&korean(), b"\xb1\xe8\xc8\xf1\xc1\xdf"), "김희중");
    // UTF-8 sent under an ISO 2022 label.
    assert_eq!(pn(&korean(), "홍^길동".as_bytes()), "홍^길동");
    // 0xC3 (lead byte of 'é' in UTF-8) is unassigned in ISO 8859-8.
    assert_eq!(pn(&set(&["ISO_IR 138"]), "Jérôme".as_bytes()), "Jérôme");
}

#[test]
fn undecodable_bytes_become_replacement_characters() {
    // 0xA1 is unassigned in ISO 8859-8 and the value is not UTF-8.
    assert_eq!(pn(&set(&["ISO_IR 138"]), b"a\xa1"), "a\u{FFFD}");
    // Lone lead byte of a KS X 1001 pair.
    assert_eq!(pn(&korean(), b"\x1b$)C\xb1"), "\u{FFFD}");
}
