//! decode_frame against uncompressed twins and against pydicom with the pylibjpeg plugins.

mod common;

use common::*;
use haneul_pixel::decode_frame;

/// Lossless syntaxes against the uncompressed file pydicom ships with the same pixels.
#[test]
fn lossless_frames_equal_their_uncompressed_twins() {
    let pairs = [
        ("MR_small_RLE.dcm", "MR_small.dcm"),
        ("MR_small_jp2klossless.dcm", "MR_small.dcm"),
        ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),
        ("MR_small_bigendian.dcm", "MR_small.dcm"),
        ("MR_small_expb.dcm", "MR_small.dcm"),
        ("MR_small_implicit.dcm", "MR_small.dcm"),
        ("rtdose_rle.dcm", "rtdose.dcm"),
        ("rtdose_rle_1frame.dcm", "rtdose_1frame.dcm"),
        ("rtdose_expb.dcm", "rtdose.dcm"),
        ("rtdose_expb_1frame.dcm", "rtdose_1frame.dcm"),
        ("SC_rgb_small_odd_big_endian.dcm", "SC_rgb_small_odd.dcm"),
    ];
    for (compressed, uncompressed) in pairs {
        let (decoded, pi) = decode_all(&load(compressed));
        let twin = load(uncompressed);
        assert_eq!(pi, twin.info.photometric_interpretation, "{compressed}");
        assert!(decoded == twin.frames.concat(), "{compressed} differs from {uncompressed}");
    }
}

/// Lossless (and deterministic near-lossless) syntaxes against pydicom, exactly.
#[test]
fn lossless_frames_equal_pydicom() {
    let cases = [
        // RLE, 8/16/32-bit, one and two frames
        "SC_rgb_rle.dcm",
        "SC_rgb_rle_16bit.dcm",
        "SC_rgb_rle_2frame.dcm",
        "SC_rgb_rle_16bit_2frame.dcm",
        "SC_rgb_rle_32bit.dcm",
        "SC_rgb_rle_32bit_2frame.dcm",
        // JPEG lossless, first-order prediction, colour
        "SC_rgb_jpeg_gdcm.dcm",
        // JPEG 2000 lossless with the reversible colour transform, and a signedness mismatch
        "GDCMJ2K_TextGBR.dcm",
        "examples_jpeg2k.dcm",
        "J2K_pixelrep_mismatch.dcm",
        // JPEG-LS near-lossless is deterministic: 8 and 16 bit, line and sample interleaved colour
        "JPEGLSNearLossless_08.dcm",
        "JPEGLSNearLossless_16.dcm",
        "SC_rgb_jls_lossy_line.dcm",
        "SC_rgb_jls_lossy_sample.dcm",
        // Deflated Explicit VR Little Endian: native once the reader inflated it
        "image_dfl.dcm",
    ];
    for name in cases {
        let instance = load(name);
        let (decoded, pi) = decode_all(&instance);
        let reference = pydicom_pixels(name, pi == "RGB");
        assert_eq!(decoded.len(), reference.len(), "{name}: length");
        let bytes = instance.info.bytes_per_sample();
        let signed = instance.info.pixel_representation == 1;
        assert_eq!(max_difference(&decoded, &reference, bytes, signed), 0, "{name} differs from pydicom");
    }
}

/// Lossy JPEG 2000: both decoders are OpenJPEG, so the results agree to rounding.
#[test]
fn lossy_jpeg2000_matches_pydicom() {
    for name in ["JPEG2000.dcm", "693_J2KI.dcm", "SC_rgb_gdcm_KY.dcm"] {
        let instance = load(name);
        let (decoded, pi) = decode_all(&instance);
        let reference = pydicom_pixels(name, pi == "RGB");
        let bytes = instance.info.bytes_per_sample();
        let signed = instance.info.pixel_representation == 1;
        assert!(max_difference(&decoded, &reference, bytes, signed) <= 1, "{name}");
    }
}

/// Lossy JPEG (8-bit baseline in every colour variant, 12-bit extended): IDCT
/// and upsampling differ between decoders by a little, never by much.
#[test]
fn lossy_jpeg_is_close_to_pydicom() {
    let cases = [
        ("JPGExtended.dcm", "MONOCHROME2"),
        ("SC_rgb_jpeg_app14_dcmd.dcm", "RGB"),
        ("SC_rgb_jpeg_dcmtk.dcm", "RGB"),
        ("SC_rgb_jpeg_lossy_gdcm.dcm", "RGB"),
        ("SC_rgb_dcmtk_+eb+cr.dcm", "RGB"),
        ("SC_rgb_dcmtk_+eb+cy+n1.dcm", "RGB"),
        ("SC_rgb_dcmtk_+eb+cy+n2.dcm", "RGB"),
        ("SC_rgb_dcmtk_+eb+cy+np.dcm", "RGB"),
        ("SC_rgb_dcmtk_+eb+cy+s2.dcm", "RGB"),
        ("SC_rgb_dcmtk_+eb+cy+s4.dcm", "RGB"),
        ("SC_jpeg_no_color_transform.dcm", "RGB"),
        ("SC_jpeg_no_color_transform_2.dcm", "RGB"),
        ("SC_rgb_small_odd_jpeg.dcm", "RGB"),
        ("examples_ybr_color.dcm", "RGB"),
    ];
    for (name, expected_pi) in cases {
        let instance = load(name);
        let (decoded, pi) = decode_all(&instance);
        assert_eq!(pi, expected_pi, "{name}: photometric interpretation after decoding");
        let reference = pydicom_pixels(name, true);
        let bytes = instance.info.bytes_per_sample();
        let max = max_difference(&decoded, &reference, bytes, false);
        let mean = mean_difference(&decoded, &reference, bytes, false);
        assert!(max <= 4 && mean < 0.2, "{name}: max difference {max}, mean {mean}");
    }
}

/// JPEG-lossy.dcm has scan parameters libjpeg refuses (Se = 0 in a sequential
/// scan); it holds the same 12-bit image as JPGExtended.dcm, which it must match.
#[test]
fn sequential_jpeg_with_sloppy_scan_header_still_decodes() {
    let (decoded, _) = decode_all(&load("JPEG-lossy.dcm"));
    let reference = pydicom_pixels("JPGExtended.dcm", false);
    let mean = mean_difference(&decoded, &reference, 2, false);
    assert!(mean < 0.1, "mean difference {mean}");
}

/// Big-endian native colour with planar configuration 1 is returned as stored
/// (colour-by-plane); pydicom returns it colour-by-pixel.
#[test]
fn big_endian_planar_colour_keeps_its_planes() {
    let instance = load("ExplVR_BigEnd.dcm");
    assert_eq!(instance.info.planar_configuration, 1);
    let frame = decode_frame(&instance.info, &instance.transfer_syntax, &instance.frames[0]).expect("decode");
    assert_eq!(frame.planar_configuration, 1);
    let reference = pydicom_pixels("ExplVR_BigEnd.dcm", false);
    let pixels = instance.info.pixel_count();
    let interleaved: Vec<u8> = (0..pixels * 3).map(|i| frame.bytes[(i % 3) * pixels + i / 3]).collect();
    assert!(interleaved == reference);
}

#[test]
fn unknown_and_video_syntaxes_are_refused() {
    let instance = load("MR_small.dcm");
    for uid in ["1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.110", "1.2.3.4"] {
        let err = decode_frame(&instance.info, uid, &instance.frames[0]).expect_err(uid);
        assert!(matches!(err, haneul_pixel::PixelError::UnsupportedTransferSyntax(_)), "{uid}: {err}");
    }
}

#[test]
fn frames_must_fit_the_data_set_attributes() {
    // A JPEG-LS frame decoded against attributes of another size is refused, not misread.
    let instance = load("MR_small_jpeg_ls_lossless.dcm");
    let mut info = instance.info.clone();
    info.rows = 32;
    assert!(decode_frame(&info, &instance.transfer_syntax, &instance.frames[0]).is_err());
    // Native data shorter than a frame
    let native = load("MR_small.dcm");
    assert!(matches!(
        decode_frame(&native.info, &native.transfer_syntax, &native.native[..100]),
        Err(haneul_pixel::PixelError::Truncated { .. })
    ));
}

/// High-Throughput JPEG 2000: streams made by OpenJPH (through imagecodecs), signed
/// 16-bit gray and 8-bit colour, decode to exactly the pixels they were made from.
#[test]
fn htj2k_frames_decode_losslessly() {
    for (name, uid) in [("MR_small.dcm", "1.2.840.10008.1.2.4.201"), ("SC_rgb_rle.dcm", "1.2.840.10008.1.2.4.202")] {
        let codestream = reference(&["htj2k", test_file(name).to_str().expect("path")]);
        assert!(codestream.starts_with(&[0xFF, 0x4F, 0xFF, 0x51]), "a raw codestream");
        let instance = load(name);
        let mut info = instance.info.clone();
        info.number_of_frames = 1;
        let frame = decode_frame(&info, uid, &codestream).expect("HTJ2K decodes");
        assert_eq!(frame.photometric_interpretation, instance.info.photometric_interpretation);
        let reference = pydicom_pixels(name, false);
        assert!(frame.bytes == reference[..frame.bytes.len()], "{name} differs after HTJ2K");
    }
}

/// Encode frame 0 of a test file with libjpeg-turbo; returns (codestream, libjpeg-turbo's decoding).
fn libjpeg_turbo(name: &str, kind: &str) -> (Vec<u8>, Vec<u8>) {
    let dir = std::env::temp_dir().join(format!("haneul-pixel-{}-{kind}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (stream, decoded) = (dir.join("stream.jpg"), dir.join("decoded.raw"));
    reference(&[
        "jpeg",
        test_file(name).to_str().expect("path"),
        kind,
        stream.to_str().expect("path"),
        decoded.to_str().expect("path"),
    ]);
    let result = (std::fs::read(&stream).expect("stream"), std::fs::read(&decoded).expect("decoded"));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// 16-bit lossless JPEG with every predictor (pydicom ships no such file; libjpeg-turbo makes them).
#[test]
fn lossless_jpeg_every_predictor_16_bit() {
    let twin = load("MR_small.dcm");
    for predictor in 1..=7 {
        let (stream, _) = libjpeg_turbo("MR_small.dcm", &format!("lossless{predictor}"));
        let uid = if predictor == 1 { "1.2.840.10008.1.2.4.70" } else { "1.2.840.10008.1.2.4.57" };
        let frame = decode_frame(&twin.info, uid, &stream).expect("lossless JPEG decodes");
        assert!(frame.bytes == twin.frames[0], "predictor {predictor}");
    }
}

/// 12-bit extended and 8-bit 4:2:0 colour JPEG against libjpeg-turbo's own decoding.
#[test]
fn lossy_jpeg_matches_libjpeg_turbo() {
    let (stream, expected) = libjpeg_turbo("CT_small.dcm", "extended12");
    let mut info = load("CT_small.dcm").info;
    info.pixel_representation = 0;
    info.bits_stored = 12;
    info.high_bit = 11;
    let frame = decode_frame(&info, "1.2.840.10008.1.2.4.51", &stream).expect("12-bit JPEG decodes");
    let max = max_difference(&frame.bytes, &expected, 2, false);
    assert!(max <= 2, "12-bit: max difference {max}");

    let (stream, expected) = libjpeg_turbo("SC_rgb_rle.dcm", "ycc420");
    let mut info = load("SC_rgb_rle.dcm").info;
    info.photometric_interpretation = "YBR_FULL_422".into();
    let frame = decode_frame(&info, "1.2.840.10008.1.2.4.50", &stream).expect("4:2:0 JPEG decodes");
    assert_eq!(frame.photometric_interpretation, "RGB");
    let (max, mean) =
        (max_difference(&frame.bytes, &expected, 1, false), mean_difference(&frame.bytes, &expected, 1, false));
    assert!(max <= 3 && mean < 0.3, "4:2:0: max difference {max}, mean {mean}");
}
