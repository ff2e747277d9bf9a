//! Decompressing a whole instance to Explicit VR Little Endian.

use haneul_dicom::{tags, Dataset, Element, Value, VR};

use crate::decode::{big_endian_value_to_little_endian, decode_frame, is_lossy, Codec, DecodedFrame};

const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";
use crate::error::{PixelError, Result};
use crate::frames::{frames_of_fragment_bytes, native_frame, split_encapsulated};
use crate::info::ImageInfo;

/// The native Pixel Data of a decompressed instance and the attributes that change with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecompressedInstance {
    /// Every frame, native little-endian, padded to an even length.
    pub pixel_data: Vec<u8>,
    /// OB for 8-bit (and 1-bit) samples, OW otherwise.
    pub pixel_data_vr: VR,
    pub photometric_interpretation: String,
    pub planar_configuration: u16,
    pub bits_allocated: u16,
    /// Whether the source transfer syntax was lossy (Lossy Image Compression must say "01").
    pub lossy: bool,
}

impl DecompressedInstance {
    /// Apply to the instance's data set, which is then to be written in
    /// Explicit VR Little Endian: Pixel Data, Photometric Interpretation,
    /// Planar Configuration and Bits Allocated are replaced, the Extended Offset
    /// Table (meaningless for native data) is removed, and Lossy Image
    /// Compression is set to "01" when the source was lossy and did not say so.
    pub fn apply(&self, ds: &mut Dataset) {
        ds.put(Element::text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, self.photometric_interpretation.clone()));
        ds.put(Element::new(tags::BITS_ALLOCATED, VR::US, Value::U16(vec![self.bits_allocated])));
        if ds.int(tags::SAMPLES_PER_PIXEL).unwrap_or(1) > 1 {
            ds.put(Element::new(tags::PLANAR_CONFIGURATION, VR::US, Value::U16(vec![self.planar_configuration])));
        }
        ds.remove(tags::EXTENDED_OFFSET_TABLE);
        ds.remove(tags::EXTENDED_OFFSET_TABLE_LENGTHS);
        if self.lossy && ds.string(tags::LOSSY_IMAGE_COMPRESSION) != Some("01") {
            ds.put(Element::text(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "01"));
        }
        ds.put(Element::new(tags::PIXEL_DATA, self.pixel_data_vr, Value::Bytes(self.pixel_data.clone())));
    }
}

/// Decompress frames given one by one (each frame's fragments concatenated, or
/// native frame bytes), in order.
pub fn decompress_frames<'a>(
    info: &ImageInfo,
    transfer_syntax_uid: &str,
    frames: impl IntoIterator<Item = &'a [u8]>,
) -> Result<DecompressedInstance> {
    let mut pixel_data = Vec::with_capacity(info.full_frame_length().saturating_mul(info.number_of_frames as usize));
    let mut first: Option<DecodedFrame> = None;
    let mut count = 0u32;
    for bytes in frames {
        let mut frame = decode_frame(info, transfer_syntax_uid, bytes)?;
        if let Some(first) = &first {
            if first.photometric_interpretation != frame.photometric_interpretation
                || first.bits_allocated != frame.bits_allocated
                || first.planar_configuration != frame.planar_configuration
            {
                return Err(PixelError::Unsupported("frames that decode to different layouts".into()));
            }
        }
        pixel_data.append(&mut frame.bytes);
        if first.is_none() {
            first = Some(frame);
        }
        count += 1;
    }
    if count != info.number_of_frames {
        return Err(PixelError::Fragments(format!("{count} frames given, {} expected", info.number_of_frames)));
    }
    let first = first.ok_or_else(|| PixelError::Fragments("no frames".into()))?;
    if pixel_data.len() % 2 == 1 {
        pixel_data.push(0);
    }
    Ok(DecompressedInstance {
        pixel_data,
        pixel_data_vr: if first.bits_allocated <= 8 { VR::OB } else { VR::OW },
        photometric_interpretation: first.photometric_interpretation,
        planar_configuration: first.planar_configuration,
        bits_allocated: first.bits_allocated,
        lossy: is_lossy(transfer_syntax_uid),
    })
}

/// Decompress a whole Pixel Data value held in memory: native bytes as stored
/// for native syntaxes (`vr` is the Pixel Data VR, OB or OW, which matters for
/// big endian), or the encapsulated items (from the first item tag on) otherwise.
/// `extended_offset_table` is the value of (7FE0,0001) where present.
pub fn decompress_pixel_data(
    info: &ImageInfo,
    transfer_syntax_uid: &str,
    pixel_data: &[u8],
    vr: VR,
    extended_offset_table: Option<&[u8]>,
) -> Result<DecompressedInstance> {
    let codec = Codec::of(transfer_syntax_uid)
        .ok_or_else(|| PixelError::UnsupportedTransferSyntax(transfer_syntax_uid.to_owned()))?;
    if codec == Codec::NativeBigEndian {
        let mut swapped = pixel_data.to_vec();
        big_endian_value_to_little_endian(&mut swapped, info.bits_allocated, vr);
        let mut result = decompress_pixel_data(info, EXPLICIT_VR_LITTLE_ENDIAN, &swapped, VR::OB, None)?;
        result.pixel_data_vr = if info.bits_allocated <= 8 { VR::OB } else { VR::OW };
        return Ok(result);
    }
    let encapsulated =
        codec.is_compressed() || transfer_syntax_uid.trim_end_matches(['\0', ' ']) == "1.2.840.10008.1.2.1.98";
    if !encapsulated {
        if info.bits_allocated == 1 {
            // Bit-packed frames need not start on byte boundaries: keep the value whole.
            let length =
                (info.pixel_count() * usize::from(info.samples_per_pixel) * info.number_of_frames as usize).div_ceil(8);
            let mut bytes = pixel_data
                .get(..length)
                .ok_or(PixelError::Truncated { needed: length as u64, available: pixel_data.len() as u64 })?
                .to_vec();
            if bytes.len() % 2 == 1 {
                bytes.push(0);
            }
            return Ok(DecompressedInstance {
                pixel_data: bytes,
                pixel_data_vr: VR::OB,
                photometric_interpretation: info.photometric_interpretation.clone(),
                planar_configuration: info.planar_configuration,
                bits_allocated: 1,
                lossy: false,
            });
        }
        let frames: Vec<&[u8]> =
            (0..info.number_of_frames).map(|i| native_frame(info, pixel_data, i)).collect::<Result<_>>()?;
        return decompress_frames(info, transfer_syntax_uid, frames);
    }
    let items = split_encapsulated(pixel_data)?;
    let groups = frames_of_fragment_bytes(info.number_of_frames, &items, extended_offset_table)?;
    let frames: Vec<Vec<u8>> =
        groups.iter().map(|group| group.iter().flat_map(|&i| items.fragments[i].iter().copied()).collect()).collect();
    decompress_frames(info, transfer_syntax_uid, frames.iter().map(Vec::as_slice))
}
