//! The display pipeline and rendering, checked against values computed
//! independently with numpy (tests/reference.py) and against pydicom.

mod common;

use common::*;
use haneul_dicom::{tags, Dataset, Element, Value, VR};
use haneul_pixel::{
    decode_frame, parse_viewport, parse_window, render_decoded, render_frame, ImageFormat, ImageInfo, RenderOptions,
    VoiFunction, Window,
};

fn png(window: Option<Window>) -> RenderOptions {
    RenderOptions { format: ImageFormat::Png, window, ..RenderOptions::default() }
}

fn render_gray(name: &str, frame: u32, options: &RenderOptions) -> (u32, u32, Vec<u8>) {
    let instance = load(name);
    let native = &instance.frames[frame as usize];
    let bytes = render_frame(&instance.info, frame, native, options).expect("render");
    let (w, h, channels, pixels) = decode_png(&bytes);
    assert_eq!(channels, 1, "{name}: gray output");
    (w, h, pixels)
}

fn numpy_window(name: &str, frame: u32, center: f64, width: f64, function: &str) -> Vec<u8> {
    reference(&[
        "render",
        test_file(name).to_str().expect("path"),
        &frame.to_string(),
        &center.to_string(),
        &width.to_string(),
        function,
    ])
}

#[test]
fn explicit_windows_follow_ps3_3_formulas() {
    // CT_small: signed 16-bit, rescale intercept -1024; MR_small: signed, no rescale.
    let cases = [
        ("CT_small.dcm", 40.0, 400.0, VoiFunction::Linear, "LINEAR"),
        ("CT_small.dcm", 40.0, 400.0, VoiFunction::LinearExact, "LINEAR_EXACT"),
        ("CT_small.dcm", 300.0, 1500.0, VoiFunction::Sigmoid, "SIGMOID"),
        ("MR_small.dcm", 1200.0, 2000.0, VoiFunction::Linear, "LINEAR"),
        // Width 1 and fractional centres: the -0.5 offsets of C.11.2.1.2.1 decide these.
        ("MR_small.dcm", 1000.2, 1.0, VoiFunction::Linear, "LINEAR"),
        ("MR_small.dcm", 1000.7, 3.0, VoiFunction::Linear, "LINEAR"),
        ("MR_small.dcm", 1000.2, 3.0, VoiFunction::LinearExact, "LINEAR_EXACT"),
    ];
    for (name, center, width, function, function_name) in cases {
        let (w, h, pixels) = render_gray(name, 0, &png(Some(Window { center, width, function })));
        let instance = load(name);
        assert_eq!((w, h), (instance.info.columns, instance.info.rows));
        let expected = numpy_window(name, 0, center, width, function_name);
        assert_eq!(pixels.len(), expected.len());
        let mismatches = pixels.iter().zip(&expected).filter(|(a, b)| a != b).count();
        assert_eq!(mismatches, 0, "{name} {function_name} c={center} w={width}");
    }
}

#[test]
fn first_window_preset_is_the_default() {
    // MR_small carries Window Center 600 / Width 1600.
    let (_, _, pixels) = render_gray("MR_small.dcm", 0, &png(None));
    assert_eq!(pixels, numpy_window("MR_small.dcm", 0, 600.0, 1600.0, "LINEAR"));
    // An explicit window wins over the preset.
    let (_, _, other) = render_gray("MR_small.dcm", 0, &png(Some(parse_window("100,200").expect("window"))));
    assert_ne!(pixels, other);
}

#[test]
fn without_voi_the_frame_range_is_used() {
    let instance = load("CT_small.dcm");
    let (_, _, pixels) = render_gray("CT_small.dcm", 0, &png(None));
    assert_eq!(pixels.iter().min(), Some(&0));
    assert_eq!(pixels.iter().max(), Some(&255));
    // Monotonic in the stored value.
    let stored: Vec<i16> = instance.frames[0].chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect();
    let mut pairs: Vec<(i16, u8)> = stored.into_iter().zip(pixels).collect();
    pairs.sort();
    assert!(pairs.windows(2).all(|p| p[0].1 <= p[1].1));
}

#[test]
fn monochrome1_is_inverted() {
    let instance = load("MR_small.dcm");
    let mut inverted = instance.info.clone();
    inverted.photometric_interpretation = "MONOCHROME1".into();
    let options = png(Some(Window { center: 1000.0, width: 1500.0, function: VoiFunction::Linear }));
    let normal = decode_png(&render_frame(&instance.info, 0, &instance.frames[0], &options).expect("render")).3;
    let flipped = decode_png(&render_frame(&inverted, 0, &instance.frames[0], &options).expect("render")).3;
    assert!(normal.iter().zip(&flipped).all(|(a, b)| u16::from(*a) + u16::from(*b) == 255));
}

#[test]
fn palette_color_goes_through_the_lookup_tables() {
    let instance = load("examples_palette.dcm");
    let bytes = render_frame(&instance.info, 0, &instance.frames[0], &png(None)).expect("render");
    let (w, h, channels, pixels) = decode_png(&bytes);
    assert_eq!((w, h, channels), (800, 350, 3));
    let expected = reference(&["palette", test_file("examples_palette.dcm").to_str().expect("path")]);
    assert!(pixels == expected, "palette output differs from pydicom's apply_color_lut");
}

#[test]
fn ybr_full_422_native_renders_as_rgb() {
    let instance = load("SC_ybr_full_422_uncompressed.dcm");
    let bytes = render_frame(&instance.info, 0, &instance.frames[0], &png(None)).expect("render");
    let (w, h, channels, pixels) = decode_png(&bytes);
    assert_eq!((w, h, channels), (100, 100, 3));
    let expected = pydicom_pixels("SC_ybr_full_422_uncompressed.dcm", true);
    let max = max_difference(&pixels, &expected, 1, false);
    assert!(max <= 2, "max difference {max} from pydicom's YBR to RGB");
}

#[test]
fn multi_frame_renders_the_requested_frame() {
    let instance = load("examples_ybr_color.dcm");
    let reference = pydicom_pixels("examples_ybr_color.dcm", true);
    let frame_size = 240 * 320 * 3;
    let mut previous: Option<Vec<u8>> = None;
    for frame in [0u32, 10, 29] {
        let decoded =
            decode_frame(&instance.info, &instance.transfer_syntax, &instance.frames[frame as usize]).expect("decode");
        let bytes = render_decoded(&instance.info, frame, &decoded, &png(None)).expect("render");
        let (w, h, channels, pixels) = decode_png(&bytes);
        assert_eq!((w, h, channels), (320, 240, 3));
        let expected = &reference[frame as usize * frame_size..(frame as usize + 1) * frame_size];
        assert!(max_difference(&pixels, expected, 1, false) <= 4, "frame {frame}");
        assert_ne!(previous.as_ref(), Some(&pixels), "frames differ");
        previous = Some(pixels);
    }
    // 16-bit RGB scales to 8 bits.
    let instance = load("SC_rgb_rle_16bit_2frame.dcm");
    let reference = pydicom_pixels("SC_rgb_rle_16bit_2frame.dcm", false);
    let decoded = decode_frame(&instance.info, &instance.transfer_syntax, &instance.frames[1]).expect("decode");
    let (_, _, _, pixels) = decode_png(&render_decoded(&instance.info, 1, &decoded, &png(None)).expect("render"));
    let second: Vec<u8> =
        reference[100 * 100 * 3 * 2..].chunks_exact(2).map(|c| (u16::from_le_bytes([c[0], c[1]]) >> 8) as u8).collect();
    assert!(max_difference(&pixels, &second, 1, false) <= 1);
}

#[test]
fn viewport_scales_and_crops() {
    let instance = load("CT_small.dcm");
    let render = |viewport: &str| {
        let options = RenderOptions {
            format: ImageFormat::Png,
            viewport: Some(parse_viewport(viewport).expect("viewport")),
            ..RenderOptions::default()
        };
        let (w, h, _, pixels) =
            decode_png(&render_frame(&instance.info, 0, &instance.frames[0], &options).expect("render"));
        (w, h, pixels)
    };
    assert_eq!(render("64,32").0, 32, "fits the height, keeping the aspect ratio");
    assert_eq!(render("64,32").1, 32);
    assert_eq!(render("300,256").0, 256);
    let (w, h, _) = render("200,100,10,20,50,40");
    assert_eq!((w, h), (125, 100));
    // The same region at its own size is a plain crop; a negative width mirrors it.
    let (_, _, full) = render("128,128");
    let (w, h, crop) = render("50,40,10,20,50,40");
    assert_eq!((w, h), (50, 40));
    for y in 0..40 {
        assert_eq!(&crop[y * 50..y * 50 + 50], &full[(y + 20) * 128 + 10..(y + 20) * 128 + 60]);
    }
    let (_, _, mirrored) = render("50,40,60,20,-50,40");
    for y in 0..40 {
        let row: Vec<u8> = crop[y * 50..y * 50 + 50].iter().rev().copied().collect();
        assert_eq!(&mirrored[y * 50..y * 50 + 50], row.as_slice());
    }
    assert!(parse_viewport("10,10,500,500,10,10").is_ok());
    let options = RenderOptions {
        viewport: Some(parse_viewport("10,10,500,500,10,10").expect("viewport")),
        ..RenderOptions::default()
    };
    assert!(render_frame(&instance.info, 0, &instance.frames[0], &options).is_err(), "region outside the image");
}

#[test]
fn jpeg_output_decodes_to_the_same_image() {
    let instance = load("CT_small.dcm");
    let window = Some(Window { center: 40.0, width: 400.0, function: VoiFunction::Linear });
    let png_bytes = render_frame(&instance.info, 0, &instance.frames[0], &png(window)).expect("png");
    let (_, _, _, reference) = decode_png(&png_bytes);
    let jpeg =
        render_frame(&instance.info, 0, &instance.frames[0], &RenderOptions { window, ..RenderOptions::default() })
            .expect("jpeg");
    assert!(jpeg.starts_with(&[0xFF, 0xD8]));
    let decoded = haneul_pixel::codec::jpeg::decode(&jpeg, 128, 128).expect("our JPEG decodes");
    assert_eq!(decoded.components, 1);
    let pixels: Vec<u8> = decoded.samples.iter().map(|&s| s as u8).collect();
    let mean = mean_difference(&pixels, &reference, 1, false);
    assert!(mean < 3.0, "mean difference {mean} at quality 90");
    // Lower quality, smaller file.
    let small = render_frame(
        &instance.info,
        0,
        &instance.frames[0],
        &RenderOptions { window, quality: 20, ..RenderOptions::default() },
    )
    .expect("jpeg");
    assert!(small.len() < jpeg.len());
    // Colour JPEG output.
    let rgb = load("SC_rgb_rle.dcm");
    let decoded = decode_frame(&rgb.info, &rgb.transfer_syntax, &rgb.frames[0]).expect("decode");
    let jpeg = render_decoded(&rgb.info, 0, &decoded, &RenderOptions::default()).expect("jpeg");
    let image = haneul_pixel::codec::jpeg::decode(&jpeg, 100, 100).expect("decodes");
    assert_eq!(image.components, 3);
}

/// A small synthetic 8-bit image with the given extra attributes, 2 frames of 4×1.
fn synthetic(extra: Vec<Element>, photometric: &str) -> (ImageInfo, Vec<u8>) {
    let mut ds = Dataset::new();
    let us = |tag, value: u16| Element::new(tag, VR::US, Value::U16(vec![value]));
    ds.put(us(tags::ROWS, 1));
    ds.put(us(tags::COLUMNS, 4));
    ds.put(us(tags::SAMPLES_PER_PIXEL, 1));
    ds.put(us(tags::BITS_ALLOCATED, 8));
    ds.put(us(tags::BITS_STORED, 8));
    ds.put(us(tags::HIGH_BIT, 7));
    ds.put(us(tags::PIXEL_REPRESENTATION, 0));
    ds.put(Element::text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, photometric));
    ds.put(Element::text(tags::NUMBER_OF_FRAMES, VR::IS, "2"));
    for element in extra {
        ds.put(element);
    }
    (ImageInfo::from_dataset(&ds).expect("info"), vec![0, 50, 100, 200, 0, 50, 100, 200])
}

fn item(elements: Vec<Element>) -> Dataset {
    elements.into_iter().collect()
}

fn ds_text(tag: haneul_dicom::Tag, text: &str) -> Element {
    Element::new(tag, VR::DS, Value::Strings(text.split('\\').map(str::to_owned).collect()))
}

fn gray_pixels(info: &ImageInfo, frame: u32, native: &[u8]) -> Vec<u8> {
    let frame_bytes = haneul_pixel::native_frame(info, native, frame).expect("frame");
    decode_png(&render_frame(info, frame, frame_bytes, &png(None)).expect("render")).3
}

#[test]
fn per_frame_functional_groups_choose_each_frames_window() {
    let window = |center: &str, width: &str| {
        item(vec![Element::new(
            tags::FRAME_VOILUT_SEQUENCE,
            VR::SQ,
            Value::Sequence(vec![item(vec![ds_text(tags::WINDOW_CENTER, center), ds_text(tags::WINDOW_WIDTH, width)])]),
        )])
    };
    let shared = item(vec![Element::new(
        tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
        VR::SQ,
        Value::Sequence(vec![item(vec![ds_text(tags::RESCALE_SLOPE, "2"), ds_text(tags::RESCALE_INTERCEPT, "-100")])]),
    )]);
    let (info, native) = synthetic(
        vec![
            Element::new(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, VR::SQ, Value::Sequence(vec![shared])),
            Element::new(
                tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
                VR::SQ,
                Value::Sequence(vec![window("0", "201"), window("300", "2")]),
            ),
        ],
        "MONOCHROME2",
    );
    // Modality values: -100, 0, 100, 300.
    // Frame 0, c=0 w=201 LINEAR: ((x + 0.5) / 200 + 0.5) * 255, so -100 gives 0.64 and 0 gives 127.8.
    assert_eq!(gray_pixels(&info, 0, &native), vec![1, 128, 255, 255]);
    // Frame 1, c=300 w=2: only 300 and above are bright.
    assert_eq!(gray_pixels(&info, 1, &native), vec![0, 0, 0, 255]);
}

#[test]
fn modality_and_voi_lut_sequences_apply() {
    let lut_item = |descriptor: [u16; 3], data: Vec<u16>| {
        item(vec![
            Element::new(tags::LUT_DESCRIPTOR, VR::US, Value::U16(descriptor.to_vec())),
            Element::new(tags::LUT_DATA, VR::US, Value::U16(data)),
        ])
    };
    // Modality LUT: inputs 50.. map to 1000 + 10 * i; VOI LUT (12-bit output): 1000 + k -> k * 16.
    let modality: Vec<u16> = (0..200).map(|i| 1000 + 10 * i).collect();
    let voi: Vec<u16> = (0..256).map(|k| (k * 16).min(4095)).collect();
    let (info, native) = synthetic(
        vec![
            Element::new(tags::MODALITY_LUT_SEQUENCE, VR::SQ, Value::Sequence(vec![lut_item([200, 50, 16], modality)])),
            Element::new(tags::VOILUT_SEQUENCE, VR::SQ, Value::Sequence(vec![lut_item([256, 1000, 12], voi)])),
        ],
        "MONOCHROME2",
    );
    // Stored 0 -> below the LUT: first entry 1000 -> VOI entry 0 -> 0.
    // Stored 50 -> 1000 -> 0; stored 100 -> 1500 -> past the VOI table -> 4080 -> 254;
    // stored 200 -> 2500 -> 4080 -> 254.
    let expected = |k: u32| ((f64::from(k) * 255.0 / 4095.0) + 0.5).floor() as u8;
    assert_eq!(gray_pixels(&info, 0, &native), vec![0, 0, expected(4080), expected(4080)]);
    // Stored 55 -> 1050 -> VOI index 50 -> 800.
    let (info2, _) = synthetic(vec![], "MONOCHROME2");
    assert_eq!(info2.display.modality, None);
    let native55 = vec![55u8, 0, 0, 0, 55, 0, 0, 0];
    assert_eq!(gray_pixels(&info, 0, &native55)[0], expected(800));
}

#[test]
fn one_bit_images_render_black_and_white() {
    let instance = load("liver_1frame.dcm");
    assert_eq!(instance.info.bits_allocated, 1);
    let (w, h, pixels) = render_gray("liver_1frame.dcm", 0, &png(None));
    assert_eq!((w, h), (512, 512));
    let expected: Vec<u8> =
        pydicom_pixels("liver_1frame.dcm", false).iter().map(|&v| if v == 0 { 0 } else { 255 }).collect();
    assert!(pixels == expected, "bits are read least significant first");
}
