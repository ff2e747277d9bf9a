//! Malformed input never panics: random bytes and corrupted real frames into
//! every decoder, random encapsulated values into the fragment helpers.

mod common;

use std::io::Write;

use common::*;
use haneul_pixel::{decode_frame, frames_of_fragment_bytes, render_frame, split_encapsulated, RenderOptions};

/// xorshift64*: a tiny deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Corrupt a valid frame: flip bytes, truncate, or splice random bytes after its header.
fn mutate(rng: &mut Rng, valid: &[u8]) -> Vec<u8> {
    let mut data = valid.to_vec();
    match rng.below(4) {
        0 => {
            for _ in 0..1 + rng.below(8) {
                let at = rng.below(data.len());
                data[at] = rng.next() as u8;
            }
        }
        1 => data.truncate(rng.below(data.len())),
        2 => {
            let keep = rng.below(data.len().min(400));
            data.truncate(keep);
            let tail = rng.below(2000);
            data.extend(rng.bytes(tail));
        }
        _ => {
            // Corrupt the header area, where lengths and sizes live.
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(data.len().min(200));
                data[at] = rng.next() as u8;
            }
        }
    }
    data
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("deflate");
    encoder.finish().expect("deflate")
}

#[test]
fn decoders_return_errors_instead_of_panicking() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mr = load("MR_small.dcm");
    let cases: Vec<(&str, usize)> = vec![
        ("MR_small_RLE.dcm", 300),
        ("SC_rgb_rle_16bit.dcm", 200),
        ("SC_rgb_jpeg_gdcm.dcm", 200),
        ("SC_rgb_dcmtk_+eb+cy+np.dcm", 200),
        ("SC_rgb_small_odd_jpeg.dcm", 300),
        ("JPGExtended.dcm", 20),
        ("MR_small_jpeg_ls_lossless.dcm", 200),
        ("JPEGLSNearLossless_08.dcm", 300),
        ("SC_rgb_jls_lossy_sample.dcm", 200),
        ("SC_rgb_jls_lossy_line.dcm", 200),
        ("MR_small_jp2klossless.dcm", 60),
        ("SC_rgb_gdcm_KY.dcm", 40),
    ];
    // HANEUL_FUZZ_ROUNDS multiplies the rounds for a longer local run.
    let scale: usize = std::env::var("HANEUL_FUZZ_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    for (name, rounds) in cases {
        let rounds = rounds * scale;
        let instance = load(name);
        let valid = &instance.frames[0];
        for _ in 0..rounds {
            let data = mutate(&mut rng, valid);
            if let Ok(frame) = decode_frame(&instance.info, &instance.transfer_syntax, &data) {
                assert_eq!(
                    frame.bytes.len(),
                    instance.info.full_frame_length(),
                    "{name}: a decoded frame has its size"
                );
            }
            let length = rng.below(3000);
            let random = rng.bytes(length);
            let _ = decode_frame(&instance.info, &instance.transfer_syntax, &random);
        }
    }
    // Deflated Image Frame Compression, and the native syntaxes with short data.
    let deflated = deflate(&mr.frames[0]);
    let decoded = decode_frame(&mr.info, "1.2.840.10008.1.2.8.1", &deflated).expect("deflated frame");
    assert_eq!(decoded.bytes, mr.frames[0]);
    for _ in 0..200 {
        let data = mutate(&mut rng, &deflated);
        let _ = decode_frame(&mr.info, "1.2.840.10008.1.2.8.1", &data);
        let length = rng.below(10000);
        let random = rng.bytes(length);
        for uid in ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.98"] {
            let _ = decode_frame(&mr.info, uid, &random);
        }
    }
}

#[test]
fn random_bytes_under_every_syntax_and_shape_never_panic() {
    let mut rng = Rng(42);
    let syntaxes = [
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.8.1",
    ];
    let mut info = load("MR_small.dcm").info;
    for round in 0..400 {
        info.rows = 1 + rng.below(40) as u32;
        info.columns = 1 + rng.below(40) as u32;
        info.samples_per_pixel = [1, 3][rng.below(2)];
        info.bits_allocated = [8, 16][rng.below(2)];
        info.bits_stored = info.bits_allocated - rng.below(4) as u16;
        info.high_bit = info.bits_stored - 1;
        info.photometric_interpretation =
            if info.samples_per_pixel == 1 { "MONOCHROME2" } else { "YBR_FULL_422" }.into();
        let uid = syntaxes[round % syntaxes.len()];
        // Random data behind a plausible marker, so parsers get past the first check.
        let prefix: &[u8] = match uid {
            "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.201" => &[0xFF, 0x4F, 0xFF, 0x51],
            "1.2.840.10008.1.2.5" => &[3, 0, 0, 0, 64, 0, 0, 0],
            "1.2.840.10008.1.2.8.1" => &[],
            _ => &[0xFF, 0xD8, 0xFF],
        };
        let mut data = prefix.to_vec();
        let length = rng.below(600);
        data.extend(rng.bytes(length));
        if let Ok(frame) = decode_frame(&info, uid, &data) {
            let rendered = info.after_decoding(&frame);
            let _ = render_frame(&rendered, 0, &frame.bytes, &RenderOptions::default());
        }
    }
}

#[test]
fn random_encapsulated_values_never_panic() {
    let mut rng = Rng(7);
    for _ in 0..2000 {
        let mut value = Vec::new();
        for _ in 0..rng.below(6) {
            value.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
            let length = rng.below(40);
            let declared = if rng.below(4) == 0 { rng.next() as u32 } else { length as u32 };
            value.extend_from_slice(&declared.to_le_bytes());
            value.extend(rng.bytes(length));
        }
        if let Ok(split) = split_encapsulated(&value) {
            let frames = 1 + rng.below(4) as u32;
            let entries = rng.below(3);
            let eot = rng.bytes(8 * entries);
            let _ = frames_of_fragment_bytes(frames, &split, Some(&eot));
        }
    }
}

#[test]
fn rendering_random_native_frames_never_panics() {
    let mut rng = Rng(99);
    for name in ["CT_small.dcm", "examples_palette.dcm", "SC_ybr_full_422_uncompressed.dcm", "rtdose.dcm"] {
        let instance = load(name);
        for _ in 0..5 {
            let length = instance.info.frame_length();
            let native = rng.bytes(length);
            let options = RenderOptions {
                window: Some(haneul_pixel::Window {
                    center: (rng.next() % 4000) as f64 - 2000.0,
                    width: 1.0 + (rng.next() % 4000) as f64,
                    function: haneul_pixel::VoiFunction::Sigmoid,
                }),
                ..RenderOptions::default()
            };
            render_frame(&instance.info, 0, &native, &options).expect("any native frame renders");
            // Short data is an error, not a panic.
            assert!(render_frame(&instance.info, 0, &native[..length / 2], &options).is_err());
        }
    }
}
