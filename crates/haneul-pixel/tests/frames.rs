//! Frame extraction: native slices, fragment grouping, whole-instance decompression.

mod common;

use common::*;
use haneul_dicom::{tags, VR};
use haneul_pixel::{
    decompress_pixel_data, frames_of_fragment_bytes, frames_of_fragments, native_frame, split_encapsulated,
    Encapsulated, PixelError,
};

fn items(offset_table: &[u8], fragments: &[&[u8]]) -> Vec<u8> {
    let mut value = Vec::new();
    for item in std::iter::once(offset_table).chain(fragments.iter().copied()) {
        value.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
        value.extend_from_slice(&(item.len() as u32).to_le_bytes());
        value.extend_from_slice(item);
    }
    value.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    value
}

#[test]
fn native_frames_are_sliced_and_bounded() {
    let instance = load("rtdose.dcm");
    let info = &instance.info;
    assert_eq!(info.number_of_frames, 15);
    assert_eq!(info.frame_length(), 10 * 10 * 4);
    let third = native_frame(info, &instance.native, 2).expect("frame 2");
    assert_eq!(third, &instance.native[800..1200]);
    assert!(matches!(native_frame(info, &instance.native, 15), Err(PixelError::FrameOutOfRange { .. })));
    assert!(matches!(native_frame(info, &instance.native[..1000], 3), Err(PixelError::Truncated { .. })));
    // YBR_FULL_422 native frames hold two samples per pixel.
    let ybr = load("SC_ybr_full_422_uncompressed.dcm");
    assert_eq!(ybr.info.frame_length(), 100 * 100 * 2);
}

#[test]
fn encapsulated_values_split_into_offset_table_and_fragments() {
    let value = items(&[], &[b"ab", b"cdef"]);
    let split = split_encapsulated(&value).expect("split");
    assert_eq!(split, Encapsulated { offset_table: &[], fragments: vec![b"ab".as_slice(), b"cdef".as_slice()] });
    assert!(split_encapsulated(&value[..28]).is_err(), "an item overrunning the value");
    assert!(split_encapsulated(&value[..20]).is_err(), "a truncated item header");
    assert_eq!(split_encapsulated(&value[..30]).expect("no delimiter").fragments.len(), 2);
    assert!(split_encapsulated(&[1, 2, 3, 4, 5, 6, 7, 8]).is_err(), "not an item");
}

#[test]
fn fragments_group_by_basic_offset_table() {
    // Frame 0: fragments 0 and 1; frame 1: fragment 2. Offsets count item headers.
    let lengths = [10u64, 6, 4];
    let mut bot = Vec::new();
    bot.extend_from_slice(&0u32.to_le_bytes());
    bot.extend_from_slice(&(8 + 10 + 8 + 6u32).to_le_bytes());
    let frames = frames_of_fragments(2, &lengths, &bot, None, None).expect("grouped");
    assert_eq!(frames, vec![vec![0, 1], vec![2]]);
}

#[test]
fn fragments_group_by_extended_offset_table_first() {
    let lengths = [10u64, 6, 4];
    let mut eot = Vec::new();
    eot.extend_from_slice(&0u64.to_le_bytes());
    eot.extend_from_slice(&18u64.to_le_bytes());
    // A Basic Offset Table that disagrees is ignored when the extended one is valid.
    let mut bot = Vec::new();
    bot.extend_from_slice(&0u32.to_le_bytes());
    bot.extend_from_slice(&(8 + 10 + 8 + 6u32).to_le_bytes());
    let frames = frames_of_fragments(2, &lengths, &bot, Some(&eot), None).expect("grouped");
    assert_eq!(frames, vec![vec![0], vec![1, 2]]);
}

#[test]
fn fragments_without_table_map_one_to_one_or_by_markers() {
    assert_eq!(frames_of_fragments(3, &[5, 5, 5], &[], None, None).expect("1:1"), vec![vec![0], vec![1], vec![2]]);
    assert_eq!(frames_of_fragments(1, &[5, 5, 5], &[], None, None).expect("all"), vec![vec![0, 1, 2]]);
    // 2 frames in 3 fragments: the JPEG SOI / J2K SOC markers tell where frames start.
    let jpeg: &[u8] = &[0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3, 4];
    let rest: &[u8] = &[9, 9, 9, 9, 9, 9, 9, 9];
    let j2k: &[u8] = &[0xFF, 0x4F, 0xFF, 0x51, 0, 0, 0, 0];
    let value = items(&[], &[jpeg, rest, j2k]);
    let split = split_encapsulated(&value).expect("split");
    assert_eq!(frames_of_fragment_bytes(2, &split, None).expect("markers"), vec![vec![0, 1], vec![2]]);
    // Without markers or table it cannot be told, and says so.
    let value = items(&[], &[rest, rest, rest]);
    let split = split_encapsulated(&value).expect("split");
    assert!(matches!(frames_of_fragment_bytes(2, &split, None), Err(PixelError::Fragments(_))));
    assert!(frames_of_fragments(4, &[1, 2, 3], &[], None, None).is_err(), "more frames than fragments");
}

#[test]
fn multi_frame_files_group_into_their_frames() {
    let instance = load("examples_ybr_color.dcm");
    assert_eq!(instance.frames.len(), 30);
    assert!(instance.frames.iter().all(|f| f.starts_with(&[0xFF, 0xD8])));
    let rle = load("SC_rgb_rle_2frame.dcm");
    assert_eq!(rle.frames.len(), 2);
}

#[test]
fn whole_instance_decompresses_to_explicit_little_endian() {
    let instance = load("SC_rgb_rle_2frame.dcm");
    let result = decompress_pixel_data(&instance.info, &instance.transfer_syntax, &instance.encapsulated, VR::OB, None)
        .expect("decompress");
    let (frames, _) = decode_all(&instance);
    assert_eq!(result.pixel_data, frames);
    assert_eq!(result.pixel_data_vr, VR::OB);
    assert!(!result.lossy);
    assert_eq!(result.pixel_data, pydicom_pixels("SC_rgb_rle_2frame.dcm", false));

    // A lossy YBR_FULL_422 JPEG becomes RGB, colour-by-pixel, marked lossy.
    let instance = load("examples_ybr_color.dcm");
    let result = decompress_pixel_data(&instance.info, &instance.transfer_syntax, &instance.encapsulated, VR::OB, None)
        .expect("decompress");
    assert_eq!(result.pixel_data.len(), 30 * 240 * 320 * 3);
    assert_eq!(result.photometric_interpretation, "RGB");
    assert!(result.lossy);
    let mut ds = instance.dataset.clone();
    result.apply(&mut ds);
    assert_eq!(ds.string(tags::PHOTOMETRIC_INTERPRETATION), Some("RGB"));
    assert_eq!(ds.int(tags::PLANAR_CONFIGURATION), Some(0));
    assert_eq!(ds.string(tags::LOSSY_IMAGE_COMPRESSION), Some("01"));
    assert!(
        matches!(ds.get(tags::PIXEL_DATA).map(|e| &e.value), Some(haneul_dicom::Value::Bytes(b)) if b.len() == result.pixel_data.len())
    );

    // 16-bit data becomes OW; native big endian becomes little endian.
    let instance = load("MR_small_bigendian.dcm");
    let twin = load("MR_small.dcm");
    let result =
        decompress_pixel_data(&instance.info, &instance.transfer_syntax, &instance.native, VR::OW, None).expect("swap");
    assert_eq!(result.pixel_data_vr, VR::OW);
    assert_eq!(result.pixel_data, twin.native);
}

#[test]
fn encapsulated_uncompressed_frames_are_native() {
    let instance = load("SC_rgb_rle_2frame.dcm");
    let (native, _) = decode_all(&instance);
    let frame_length = instance.info.full_frame_length();
    let value = items(&[], &[&native[..frame_length], &native[frame_length..]]);
    let result =
        decompress_pixel_data(&instance.info, "1.2.840.10008.1.2.1.98", &value, VR::OB, None).expect("decompress");
    assert_eq!(result.pixel_data, native);
    assert!(!result.lossy);
}
