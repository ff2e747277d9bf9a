//! Shared test helpers: pydicom's test files read with Haneul's reader, and
//! reference pixels from pydicom (with the pylibjpeg plugins) in the venv.
#![allow(dead_code)]

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use haneul_dicom::header::read_instance_header;
use haneul_dicom::read::ReadOptions;
use haneul_dicom::Dataset;
use haneul_pixel::{frames_of_fragments, native_frame, ImageInfo};

/// Repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// The Python with pydicom, numpy and the pylibjpeg plugins: $HANEUL_PYTHON, else .venv/bin/python.
pub fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("HANEUL_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = repo_root().join(".venv/bin/python");
    assert!(venv.is_file(), "no Python venv at {}; run scripts/test.sh, which creates it", venv.display());
    venv
}

/// pydicom's bundled test files.
pub fn test_files() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let output = Command::new(python())
            .args([
                "-c",
                "import os, pydicom; print(os.path.join(os.path.dirname(pydicom.__file__), 'data', 'test_files'))",
            ])
            .output()
            .expect("running python");
        assert!(output.status.success(), "pydicom is not importable: {}", String::from_utf8_lossy(&output.stderr));
        PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
    })
}

pub fn test_file(name: &str) -> PathBuf {
    let path = test_files().join(name);
    assert!(path.is_file(), "missing pydicom test file {}", path.display());
    path
}

/// An instance read with Haneul's reader.
pub struct Instance {
    pub name: String,
    pub dataset: Dataset,
    pub info: ImageInfo,
    pub transfer_syntax: String,
    /// Native: the whole Pixel Data value. Encapsulated: empty.
    pub native: Vec<u8>,
    /// Encapsulated: each frame's fragments concatenated. Native: each frame's bytes.
    pub frames: Vec<Vec<u8>>,
    /// Encapsulated: the whole Pixel Data value from the first item tag on. Native: empty.
    pub encapsulated: Vec<u8>,
}

pub fn load(name: &str) -> Instance {
    let path = test_file(name);
    let mut file = File::open(&path).expect("open test file");
    let options = ReadOptions {
        bulk_threshold: u64::MAX,
        max_inline_value: 64 << 20,
        stop_after_pixel_data: true,
        ..Default::default()
    };
    let header = read_instance_header(&mut file, &options).unwrap_or_else(|e| panic!("reading {name}: {e}"));
    let mut whole = Vec::new();
    File::open(&path).and_then(|mut f| f.read_to_end(&mut whole)).expect("read test file");
    let start = header.dataset_offset as usize;
    // Offsets count from the start of the data set stream (inflated for deflated syntaxes).
    let stream: Vec<u8> = if header.transfer_syntax.deflated {
        let mut inflated = Vec::new();
        flate2::read::DeflateDecoder::new(&whole[start..]).read_to_end(&mut inflated).expect("inflate data set");
        inflated
    } else {
        whole[start..].to_vec()
    };
    let dataset = header.parsed.dataset;
    let info = ImageInfo::from_dataset(&dataset).unwrap_or_else(|e| panic!("image attributes of {name}: {e}"));
    let pixel = header.parsed.pixel_data.expect("pixel data");
    let ts = header.transfer_syntax.uid.to_owned();
    if let Some(length) = pixel.length {
        let mut native = stream[pixel.offset as usize..(pixel.offset + length) as usize].to_vec();
        let mut ts = ts;
        if header.transfer_syntax.big_endian && info.bits_allocated < 16 {
            // OW words hold 8-bit samples in pairs: swap the whole value, then it is little endian.
            haneul_pixel::big_endian_value_to_little_endian(&mut native, info.bits_allocated, pixel.vr);
            ts = "1.2.840.10008.1.2.1".to_owned();
        }
        let frames = (0..info.number_of_frames)
            .map(|i| native_frame(&info, &native, i).expect("native frame").to_vec())
            .collect();
        return Instance {
            name: name.into(),
            dataset,
            info,
            transfer_syntax: ts,
            native,
            frames,
            encapsulated: Vec::new(),
        };
    }
    let fragments: Vec<&[u8]> =
        pixel.fragments.iter().map(|&(offset, len)| &stream[offset as usize..(offset + len) as usize]).collect();
    let bot: &[u8] = match pixel.offset_table {
        Some((offset, len)) => &stream[offset as usize..(offset + len) as usize],
        None => &[],
    };
    let lengths: Vec<u64> = fragments.iter().map(|f| f.len() as u64).collect();
    let mut head = |i: usize| fragments[i][..fragments[i].len().min(16)].to_vec();
    let groups = frames_of_fragments(info.number_of_frames, &lengths, bot, None, Some(&mut head))
        .unwrap_or_else(|e| panic!("frames of {name}: {e}"));
    let frames = groups.iter().map(|g| g.iter().flat_map(|&i| fragments[i].iter().copied()).collect()).collect();
    let end = pixel.fragments.last().map(|&(offset, len)| offset + len).unwrap_or(pixel.offset) as usize;
    let encapsulated = stream[pixel.offset as usize..end].to_vec();
    Instance { name: name.into(), dataset, info, transfer_syntax: ts, native: Vec::new(), frames, encapsulated }
}

/// Decode every frame of an instance with `decode_frame`, concatenated; also
/// returns the photometric interpretation the decoder reported.
pub fn decode_all(instance: &Instance) -> (Vec<u8>, String) {
    let mut out = Vec::new();
    let mut pi = String::new();
    for (i, frame) in instance.frames.iter().enumerate() {
        let decoded = haneul_pixel::decode_frame(&instance.info, &instance.transfer_syntax, frame)
            .unwrap_or_else(|e| panic!("decoding frame {i} of {}: {e}", instance.name));
        assert_eq!(decoded.planar_configuration, 0, "{}: decoded frames are colour-by-pixel", instance.name);
        pi = decoded.photometric_interpretation;
        out.extend_from_slice(&decoded.bytes);
    }
    (out, pi)
}

/// Reference pixels from pydicom: every frame, samples interleaved, little endian,
/// in pydicom's own dtype. `as_rgb` converts YBR to RGB as pydicom does by default.
pub fn pydicom_pixels(name: &str, as_rgb: bool) -> Vec<u8> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference.py");
    let output = Command::new(python())
        .arg(script)
        .arg("pixels")
        .arg(test_file(name))
        .arg(if as_rgb { "rgb" } else { "raw" })
        .output()
        .expect("running python");
    assert!(
        output.status.success(),
        "pydicom could not decode {name} (are the pylibjpeg plugins installed? see scripts/test-requirements.txt): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Run the reference script with arguments; returns stdout.
pub fn reference(args: &[&str]) -> Vec<u8> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference.py");
    let output = Command::new(python()).arg(script).args(args).output().expect("running python");
    assert!(output.status.success(), "reference.py {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    output.stdout
}

/// Largest absolute difference between two sample buffers of `bytes`-byte little-endian samples.
pub fn max_difference(a: &[u8], b: &[u8], bytes: usize, signed: bool) -> i64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.chunks_exact(bytes)
        .zip(b.chunks_exact(bytes))
        .map(|(x, y)| (sample(x, signed) - sample(y, signed)).abs())
        .max()
        .unwrap_or(0)
}

/// Mean absolute difference.
pub fn mean_difference(a: &[u8], b: &[u8], bytes: usize, signed: bool) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let total: i64 = a
        .chunks_exact(bytes)
        .zip(b.chunks_exact(bytes))
        .map(|(x, y)| (sample(x, signed) - sample(y, signed)).abs())
        .sum();
    total as f64 / (a.len() / bytes).max(1) as f64
}

fn sample(bytes: &[u8], signed: bool) -> i64 {
    match (bytes.len(), signed) {
        (1, false) => i64::from(bytes[0]),
        (1, true) => i64::from(bytes[0] as i8),
        (2, false) => i64::from(u16::from_le_bytes([bytes[0], bytes[1]])),
        (2, true) => i64::from(i16::from_le_bytes([bytes[0], bytes[1]])),
        (4, false) => i64::from(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])),
        _ => i64::from(i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])),
    }
}

/// Decode a PNG into (width, height, channels, pixels).
pub fn decode_png(bytes: &[u8]) -> (u32, u32, usize, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().expect("PNG header");
    let mut pixels = vec![0; reader.output_buffer_size().expect("PNG size")];
    let frame = reader.next_frame(&mut pixels).expect("PNG data");
    pixels.truncate(frame.buffer_size());
    let channels = match frame.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::Rgb => 3,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    (frame.width, frame.height, channels, pixels)
}
