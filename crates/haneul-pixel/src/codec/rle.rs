//! RLE Lossless (PS3.5 Annex G).

use crate::error::{PixelError, Result};

const CODEC: &str = "RLE";

/// Decode one RLE frame to native little-endian, colour-by-pixel bytes.
/// `bytes_per_sample` is Bits Allocated / 8.
pub fn decode(data: &[u8], pixels: usize, samples: usize, bytes_per_sample: usize) -> Result<Vec<u8>> {
    if data.len() < 64 {
        return Err(PixelError::decode(CODEC, "frame shorter than the 64-byte RLE header"));
    }
    let word = |i: usize| u32::from_le_bytes([data[4 * i], data[4 * i + 1], data[4 * i + 2], data[4 * i + 3]]) as usize;
    let segments = word(0);
    let expected = samples * bytes_per_sample;
    if segments != expected {
        return Err(PixelError::decode(CODEC, format!("{segments} segments where {expected} were expected")));
    }
    let offsets: Vec<usize> = (1..=segments).map(word).collect();
    let mut out = vec![0u8; pixels * expected];
    let mut segment = Vec::with_capacity(pixels);
    for (index, &start) in offsets.iter().enumerate() {
        let end = offsets.get(index + 1).copied().unwrap_or(data.len());
        if start < 64 || start > end || end > data.len() {
            return Err(PixelError::decode(CODEC, format!("segment {index} has bad offsets {start}..{end}")));
        }
        segment.clear();
        unpack_bits(&data[start..end], pixels, &mut segment);
        if segment.len() < pixels {
            return Err(PixelError::decode(
                CODEC,
                format!("segment {index} decodes to {} bytes, {pixels} expected", segment.len()),
            ));
        }
        // Segments come sample by sample, most significant byte first.
        let sample = index / bytes_per_sample;
        let byte = bytes_per_sample - 1 - index % bytes_per_sample;
        let stride = expected;
        let base = sample * bytes_per_sample + byte;
        for (pixel, &value) in segment.iter().take(pixels).enumerate() {
            out[pixel * stride + base] = value;
        }
    }
    Ok(out)
}

/// PackBits, stopping once `limit` bytes are produced.
fn unpack_bits(input: &[u8], limit: usize, out: &mut Vec<u8>) {
    let mut i = 0;
    while i < input.len() && out.len() < limit {
        let n = input[i] as i8;
        i += 1;
        if n >= 0 {
            let count = n as usize + 1;
            let end = (i + count).min(input.len());
            out.extend_from_slice(&input[i..end]);
            i = end;
        } else if n != -128 {
            let count = (1 - i32::from(n)) as usize;
            if let Some(&value) = input.get(i) {
                out.extend(std::iter::repeat_n(value, count));
            }
            i += 1;
        }
    }
    out.truncate(limit);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packbits_literal_and_replicate_runs() {
        let mut out = Vec::new();
        unpack_bits(&[2, 1, 2, 3, 0xFE, 9, 0x80, 0, 7], 100, &mut out);
        assert_eq!(out, vec![1, 2, 3, 9, 9, 9, 7]);
    }

    #[test]
    fn sixteen_bit_segments_are_msb_first() {
        let mut data = vec![0u8; 64];
        data[0] = 2;
        data[4] = 64;
        data[8] = 66;
        data.extend_from_slice(&[0, 0x12]); // high bytes: literal run of 1
        data.extend_from_slice(&[0, 0x34]); // low bytes
        assert_eq!(decode(&data, 1, 1, 2).expect("decodes"), vec![0x34, 0x12]);
    }
}
