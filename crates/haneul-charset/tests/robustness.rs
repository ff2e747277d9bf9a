//! Property-style checks over random input: decoding never panics, whatever the bytes,
//! and text drawn from a set's repertoire survives encode/decode.

use haneul_charset::{SpecificCharacterSet, TextKind};

/// xorshift64*: deterministic, dependency-free pseudo-random numbers.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: usize) -> usize {
        // Bounds here are tiny, so the modulo bias does not matter.
        (self.next() % bound as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

const KINDS: [TextKind; 3] = [TextKind::PersonName, TextKind::MultiValued, TextKind::Text];

fn all_sets() -> Vec<SpecificCharacterSet> {
    let raw_values: &[&[u8]] = &[
        b"",
        b"ISO_IR 6",
        b"ISO_IR 100",
        b"ISO_IR 101",
        b"ISO_IR 109",
        b"ISO_IR 110",
        b"ISO_IR 144",
        b"ISO_IR 127",
        b"ISO_IR 126",
        b"ISO_IR 138",
        b"ISO_IR 148",
        b"ISO_IR 203",
        b"ISO_IR 166",
        b"ISO_IR 13",
        b"ISO_IR 192",
        b"GB18030",
        b"GBK",
        b"ISO 2022 IR 100",
        b"ISO 2022 IR 149",
        b"ISO 2022 IR 13",
        b"\\ISO 2022 IR 149",
        b"\\ISO 2022 IR 87",
        b"\\ISO 2022 IR 159",
        b"\\ISO 2022 IR 58",
        b"ISO 2022 IR 13\\ISO 2022 IR 87",
        b"\\ISO 2022 IR 87\\ISO 2022 IR 159",
        b"ISO 2022 IR 100\\ISO 2022 IR 149\\ISO 2022 IR 87",
        b"ISO 2022 IR 166\\ISO 2022 IR 126",
        b"ISO 2022 IR 87",
        b"ISO_IR 999\\ISO 2022 IR 58",
        b"\xff\xfe\\\x1b$)C",
    ];
    raw_values.iter().map(|raw| SpecificCharacterSet::from_raw(raw)).collect()
}

/// Bytes weighted towards what exercises the state machine: ESC, escape intermediates and
/// finals, delimiters, controls and both halves.
fn random_bytes(rng: &mut XorShift) -> Vec<u8> {
    let interesting = [
        0x1B, b'$', b'(', b')', b'-', b'B', b'C', b'J', b'I', b'A', b'D', b'^', b'=', b'\\', b'\r', b'\n', 0x8F, 0xA1,
        0xFE, 0xFF, 0x80, 0x5C, 0x20, 0x00,
    ];
    let length = rng.below(48);
    (0..length)
        .map(|_| match rng.below(3) {
            0 => rng.pick(&interesting),
            _ => (rng.next() >> 32) as u8,
        })
        .collect()
}

#[test]
fn decode_never_panics_on_random_bytes() {
    let sets = all_sets();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for _ in 0..3000 {
        let bytes = random_bytes(&mut rng);
        for set in &sets {
            for kind in KINDS {
                let text = set.decode(&bytes, kind);
                // Whatever came out must be encodable somewhere without panicking either.
                let _ = set.encode(&text, kind);
            }
        }
    }
}

#[test]
fn random_text_round_trips_in_iso_2022_sets() {
    let cases: &[(&[&str], &[char])] = &[
        (&["", "ISO 2022 IR 149"], &['홍', '길', '동', '洪', '吉', 'Ω', 'a', 'Z', ' ', '^', '=', '\\', '\r', '\n']),
        (&["", "ISO 2022 IR 87"], &['山', '田', 'や', 'ま', 'A', '1', ' ', '^', '=', '\\', '\t']),
        (&["ISO 2022 IR 13", "ISO 2022 IR 87"], &['ﾔ', 'ﾏ', 'ﾀ', '山', 'た', 'x', ' ', '^', '=', '\\']),
        (&["ISO 2022 IR 100", "ISO 2022 IR 149"], &['é', 'Ä', '홍', 'q', '^', '=', '\\', '\n']),
        (&["", "ISO 2022 IR 58"], &['王', '小', '东', 'w', '^', '=', '\\']),
        (&["ISO 2022 IR 166", "ISO 2022 IR 126"], &['ก', 'ข', 'Δ', 'ι', 'p', '^', '\\']),
    ];
    let mut rng = XorShift(0x0123_4567_89AB_CDEF);
    for (terms, alphabet) in cases {
        let set = SpecificCharacterSet::from_terms(terms);
        for _ in 0..500 {
            let length = rng.below(16);
            let text: String = (0..length).map(|_| rng.pick(alphabet)).collect();
            for kind in KINDS {
                let encoded = set.encode(&text, kind).unwrap_or_else(|| panic!("{text:?} in {terms:?}"));
                assert_eq!(set.decode(&encoded, kind), text, "{terms:?} {kind:?} {encoded:x?}");
            }
        }
    }
}
