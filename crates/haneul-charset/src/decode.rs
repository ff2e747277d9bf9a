//! The ISO 2022 decoding state machine (PS3.5 6.1.2.5), also used for the plain
//! single-byte sets and the default repertoire, where it simply never sees an escape.

use std::borrow::Cow;

use encoding_rs::Encoding;

use crate::sets::{designation_for, is_gr94, CodeState, Designation, G0Set, G1Set, ESC};
use crate::TextKind;

/// Result of one pass of the state machine, with what the fallbacks need to know.
pub(crate) struct Decoded {
    pub(crate) text: String,
    /// Some bytes could not be decoded and became U+FFFD.
    pub(crate) replaced: bool,
    /// Bytes >= 0x80 appeared while nothing was designated into G1 and no implicit G1 was given.
    pub(crate) high_bytes_without_g1: bool,
    /// Bytes >= 0x80 appeared without a G1 designation and were decoded with the implicit G1.
    pub(crate) used_implicit_g1: bool,
}

/// Decode `bytes` starting from `initial`.
///
/// `implicit_g1` is used for bytes >= 0x80 when G1 holds nothing: writers often omit the
/// `ESC $ ) C` before raw KS X 1001 text, so the set's own G1 repertoire is the best guess.
pub(crate) fn decode_iso2022(bytes: &[u8], initial: CodeState, kind: TextKind, implicit_g1: Option<G1Set>) -> Decoded {
    let mut decoder = Decoder {
        out: String::with_capacity(bytes.len()),
        pending: PendingRun { encoding: None, bytes: Vec::new() },
        replaced: false,
        high_bytes_without_g1: false,
        used_implicit_g1: false,
    };
    let mut state = initial;
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        match byte {
            ESC => {
                decoder.flush();
                let (designation, next) = read_escape(bytes, index);
                match designation {
                    Some(Designation::G0(set)) => state.g0 = set,
                    Some(Designation::G1(set)) => state.g1 = Some(set),
                    // Unknown or malformed escape: drop it and keep going.
                    None => {}
                }
                index = next;
            }
            _ if is_reset_control(byte) => {
                state = initial;
                decoder.push_char(char::from(byte));
                index += 1;
            }
            // Other controls, SPACE and DEL mean the same in every G0 set.
            0x00..=0x20 | 0x7F => {
                decoder.push_char(char::from(byte));
                index += 1;
            }
            0x21..=0x7E if state.g0.is_single_byte() => {
                if kind.resets_at_delimiter(byte) {
                    state = initial;
                }
                decoder.push_char(char::from(byte));
                index += 1;
            }
            0x21..=0x7E => {
                index += decoder.push_g0_double_byte(state.g0, byte, bytes.get(index + 1).copied());
            }
            0x80..=0xFF => {
                let g1 = match (state.g1, implicit_g1) {
                    (Some(designated), _) => designated,
                    (None, Some(implicit)) => {
                        decoder.used_implicit_g1 = true;
                        implicit
                    }
                    (None, None) => {
                        decoder.high_bytes_without_g1 = true;
                        decoder.push_replacement();
                        index += 1;
                        continue;
                    }
                };
                index += decoder.push_g1(g1, byte, bytes.get(index + 1).copied());
            }
        }
    }
    decoder.flush();
    Decoded {
        text: decoder.out,
        replaced: decoder.replaced,
        high_bytes_without_g1: decoder.high_bytes_without_g1,
        used_implicit_g1: decoder.used_implicit_g1,
    }
}

/// CR, LF, FF and TAB return every kind of value to the initial state.
pub(crate) fn is_reset_control(byte: u8) -> bool {
    matches!(byte, b'\r' | b'\n' | 0x0C | b'\t')
}

/// Parse the escape sequence starting at `esc_index`: intermediate bytes 0x20..=0x2F, then a
/// final byte 0x30..=0x7E. Returns the designation (if recognised) and the index after it.
/// A malformed sequence (no final byte) drops the ESC and its intermediates only.
fn read_escape(bytes: &[u8], esc_index: usize) -> (Option<Designation>, usize) {
    let mut cursor = esc_index + 1;
    while bytes.get(cursor).is_some_and(|byte| (0x20..=0x2F).contains(byte)) {
        cursor += 1;
    }
    match bytes.get(cursor) {
        Some(final_byte) if (0x30..=0x7E).contains(final_byte) => {
            let designation = bytes.get(esc_index + 1..=cursor).and_then(designation_for);
            (designation, cursor + 1)
        }
        _ => (None, cursor),
    }
}

/// Double-byte text waiting to be decoded in one go by `encoding_rs`.
struct PendingRun {
    encoding: Option<&'static Encoding>,
    bytes: Vec<u8>,
}

struct Decoder {
    out: String,
    pending: PendingRun,
    replaced: bool,
    high_bytes_without_g1: bool,
    used_implicit_g1: bool,
}

impl Decoder {
    /// Decode the pending double-byte run into `out`.
    fn flush(&mut self) {
        let Some(encoding) = self.pending.encoding.take() else {
            return;
        };
        let (text, had_errors): (Cow<'_, str>, bool) = encoding.decode_without_bom_handling(&self.pending.bytes);
        self.out.push_str(&text);
        self.replaced |= had_errors;
        self.pending.bytes.clear();
    }

    fn push_char(&mut self, ch: char) {
        self.flush();
        self.out.push(ch);
    }

    fn push_replacement(&mut self) {
        self.push_char(char::REPLACEMENT_CHARACTER);
        self.replaced = true;
    }

    /// Queue EUC bytes for `encoding`, flushing a run of another encoding first.
    fn push_encoded(&mut self, encoding: &'static Encoding, bytes: &[u8]) {
        if self.pending.encoding != Some(encoding) {
            self.flush();
            self.pending.encoding = Some(encoding);
        }
        self.pending.bytes.extend_from_slice(bytes);
    }

    /// A byte 0x21..=0x7E while G0 holds a double-byte set. Returns the bytes consumed.
    fn push_g0_double_byte(&mut self, set: G0Set, first: u8, second: Option<u8>) -> usize {
        let Some(second) = second.filter(|byte| (0x21..=0x7E).contains(byte)) else {
            self.push_replacement();
            return 1;
        };
        // JIS X 0208 is EUC-JP code set 1; JIS X 0212 is code set 3 (prefixed by SS3 0x8F).
        match set {
            G0Set::JisX0212 => self.push_encoded(encoding_rs::EUC_JP, &[0x8F, first | 0x80, second | 0x80]),
            _ => self.push_encoded(encoding_rs::EUC_JP, &[first | 0x80, second | 0x80]),
        }
        2
    }

    /// A byte >= 0x80 decoded with the G1 set `set`. Returns the bytes consumed.
    fn push_g1(&mut self, set: G1Set, first: u8, second: Option<u8>) -> usize {
        let encoding = match set {
            G1Set::Upper(half) => {
                match half.decode_byte(first) {
                    Some(ch) => self.push_char(ch),
                    None => self.push_replacement(),
                }
                return 1;
            }
            G1Set::KsX1001 => encoding_rs::EUC_KR,
            // GB 2312 in EUC form is a subset of GBK.
            G1Set::Gb2312 => encoding_rs::GBK,
        };
        match second {
            Some(second) if is_gr94(first) && is_gr94(second) => {
                self.push_encoded(encoding, &[first, second]);
                2
            }
            _ => {
                self.push_replacement();
                1
            }
        }
    }
}
