//! The ISO 2022 encoder (PS3.5 6.1.2.5), also used for the plain single-byte sets and the
//! default repertoire, where the initial state already holds everything they can write.

use crate::decode::is_reset_control;
use crate::sets::{CodeState, Designation, EncodedChar, G0Set, ESC};
use crate::terms::DefinedTerm;
use crate::TextKind;

/// Encode `text` with the repertoires of `terms`, starting from and returning to `initial`.
/// `None` when a character is in none of the repertoires.
pub(crate) fn encode_iso2022(terms: &[DefinedTerm], initial: CodeState, text: &str, kind: TextKind) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() + 8);
    let mut state = initial;
    for ch in text.chars() {
        let Some(byte) = u8::try_from(ch).ok().filter(u8::is_ascii) else {
            encode_non_ascii(terms, ch, &mut state, &mut out)?;
            continue;
        };
        // A literal ESC would be read back as the start of an escape sequence.
        if byte == ESC {
            return None;
        }
        if is_reset_control(byte) || kind.resets_at_delimiter(byte) {
            return_to_initial(&mut state, initial, &mut out);
        } else if !state.g0.is_single_byte() {
            // ASCII needs a single-byte G0 again; the initial one always is.
            designate_g0(&mut state, initial.g0, &mut out);
        }
        out.push(byte);
    }
    return_to_initial(&mut state, initial, &mut out);
    Some(out)
}

/// Write one non-ASCII character with the first term whose repertoire contains it,
/// designating that term's set first when it is not the one in effect.
fn encode_non_ascii(terms: &[DefinedTerm], ch: char, state: &mut CodeState, out: &mut Vec<u8>) -> Option<()> {
    let (designation, encoded) = find_in_terms(terms, ch)?;
    match designation {
        Designation::G0(set) => designate_g0(state, set, out),
        Designation::G1(set) => {
            if state.g1 != Some(set) {
                out.extend_from_slice(set.escape());
                state.g1 = Some(set);
            }
        }
    }
    encoded.write_to(out);
    Some(())
}

fn find_in_terms(terms: &[DefinedTerm], ch: char) -> Option<(Designation, EncodedChar)> {
    terms.iter().find_map(|term| {
        if let Some(encoded) = term.g1().and_then(|set| set.encode_char(ch)) {
            return term.g1().map(|set| (Designation::G1(set), encoded));
        }
        let set = term.g0()?;
        let pair = set.encode_char(ch)?;
        Some((Designation::G0(set), EncodedChar::Double(pair)))
    })
}

fn designate_g0(state: &mut CodeState, set: G0Set, out: &mut Vec<u8>) {
    if state.g0 != set {
        out.extend_from_slice(set.escape());
        state.g0 = set;
    }
}

/// Return to the initial designations, as required before delimiters and at the end of a value.
/// A G1 that starts empty needs no escape: bytes >= 0x80 simply stop appearing, and the decoder
/// forgets the designation at the same point, so it must be designated again before reuse.
fn return_to_initial(state: &mut CodeState, initial: CodeState, out: &mut Vec<u8>) {
    designate_g0(state, initial.g0, out);
    if let Some(initial_g1) = initial.g1 {
        if state.g1 != Some(initial_g1) {
            out.extend_from_slice(initial_g1.escape());
        }
    }
    *state = initial;
}
