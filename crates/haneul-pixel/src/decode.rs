//! Decoding one frame of any supported transfer syntax to native pixel bytes.

use std::io::Read;

use crate::codec::{j2k, jpeg, jpegls, rle};
use crate::error::{PixelError, Result};
use crate::info::ImageInfo;

/// One frame as Explicit VR Little Endian holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedFrame {
    /// Native little-endian samples; colour-by-pixel unless `planar_configuration` is 1.
    pub bytes: Vec<u8>,
    /// The photometric interpretation of `bytes` (a lossy JPEG in YBR_FULL_422 decodes to RGB).
    pub photometric_interpretation: String,
    pub planar_configuration: u16,
    pub bits_allocated: u16,
}

/// The kinds of transfer syntax this crate decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Implicit / Explicit VR Little Endian, Deflated Explicit VR Little Endian
    /// (whose pixel data the reader has already inflated), Encapsulated Uncompressed.
    Native,
    /// Explicit VR Big Endian (retired): 16- and 32-bit samples are byte-swapped
    /// (8-bit samples in an OW value need [`big_endian_value_to_little_endian`] on the whole value).
    NativeBigEndian,
    /// Deflated Image Frame Compression.
    DeflatedFrame,
    Rle,
    Jpeg,
    JpegLs,
    Jpeg2000,
}

impl Codec {
    /// The codec of a transfer syntax UID; `None` when it cannot be decoded here.
    pub fn of(transfer_syntax_uid: &str) -> Option<Codec> {
        let uid = transfer_syntax_uid.trim_end_matches(['\0', ' ']);
        Some(match uid {
            "1.2.840.10008.1.2" | "1.2.840.10008.1.2.1" | "1.2.840.10008.1.2.1.99" | "1.2.840.10008.1.2.1.98" => {
                Codec::Native
            }
            "1.2.840.10008.1.2.2" => Codec::NativeBigEndian,
            "1.2.840.10008.1.2.8.1" => Codec::DeflatedFrame,
            "1.2.840.10008.1.2.5" => Codec::Rle,
            // Baseline, extended (8/12-bit) and lossless; the retired processes are
            // tried as well and refused by the decoder when progressive or arithmetic-coded.
            "1.2.840.10008.1.2.4.50"
            | "1.2.840.10008.1.2.4.51"
            | "1.2.840.10008.1.2.4.57"
            | "1.2.840.10008.1.2.4.70"
            | "1.2.840.10008.1.2.4.53"
            | "1.2.840.10008.1.2.4.55"
            | "1.2.840.10008.1.2.4.58" => Codec::Jpeg,
            "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => Codec::JpegLs,
            "1.2.840.10008.1.2.4.90"
            | "1.2.840.10008.1.2.4.91"
            | "1.2.840.10008.1.2.4.92"
            | "1.2.840.10008.1.2.4.93"
            | "1.2.840.10008.1.2.4.201"
            | "1.2.840.10008.1.2.4.202"
            | "1.2.840.10008.1.2.4.203" => Codec::Jpeg2000,
            _ => return None,
        })
    }

    /// Whether frames of this syntax are encapsulated compressed data to decode.
    pub fn is_compressed(self) -> bool {
        !matches!(self, Codec::Native | Codec::NativeBigEndian)
    }
}

/// Whether `decode_frame` can decode this transfer syntax.
pub fn can_decode(transfer_syntax_uid: &str) -> bool {
    Codec::of(transfer_syntax_uid).is_some()
}

/// Whether a transfer syntax loses information (so that decoded pixels differ from the original).
pub fn is_lossy(transfer_syntax_uid: &str) -> bool {
    matches!(
        transfer_syntax_uid.trim_end_matches(['\0', ' ']),
        "1.2.840.10008.1.2.4.50"
            | "1.2.840.10008.1.2.4.51"
            | "1.2.840.10008.1.2.4.52"
            | "1.2.840.10008.1.2.4.53"
            | "1.2.840.10008.1.2.4.54"
            | "1.2.840.10008.1.2.4.55"
            | "1.2.840.10008.1.2.4.56"
            | "1.2.840.10008.1.2.4.59"
            | "1.2.840.10008.1.2.4.60"
            | "1.2.840.10008.1.2.4.61"
            | "1.2.840.10008.1.2.4.62"
            | "1.2.840.10008.1.2.4.63"
            | "1.2.840.10008.1.2.4.64"
            | "1.2.840.10008.1.2.4.81"
            | "1.2.840.10008.1.2.4.91"
            | "1.2.840.10008.1.2.4.93"
            | "1.2.840.10008.1.2.4.203"
    )
}

/// Largest frame this crate will produce (1 GiB), a bound on what a forged header can allocate.
const MAX_FRAME_BYTES: usize = 1 << 30;

/// Decode one frame: `compressed` is the frame's fragments concatenated (or,
/// for native syntaxes, the frame's bytes as stored). The result is the frame
/// as Explicit VR Little Endian would hold it.
pub fn decode_frame(info: &ImageInfo, transfer_syntax_uid: &str, compressed: &[u8]) -> Result<DecodedFrame> {
    info.validate()?;
    let codec = Codec::of(transfer_syntax_uid)
        .ok_or_else(|| PixelError::UnsupportedTransferSyntax(transfer_syntax_uid.trim_end_matches('\0').to_owned()))?;
    if info.full_frame_length() > MAX_FRAME_BYTES {
        return Err(PixelError::Unsupported(format!("frames of {} bytes", info.full_frame_length())));
    }
    let same = |bytes: Vec<u8>| DecodedFrame {
        bytes,
        photometric_interpretation: info.photometric_interpretation.clone(),
        planar_configuration: info.planar_configuration,
        bits_allocated: info.bits_allocated,
    };
    match codec {
        Codec::Native => Ok(same(native_bytes(info, compressed)?.to_vec())),
        Codec::NativeBigEndian => {
            let mut bytes = native_bytes(info, compressed)?.to_vec();
            swap_to_little_endian(&mut bytes, info.bits_allocated);
            Ok(same(bytes))
        }
        Codec::DeflatedFrame => {
            let length = info.frame_length();
            let bytes = inflate(compressed, length)?;
            if bytes.len() < length {
                return Err(PixelError::Truncated { needed: length as u64, available: bytes.len() as u64 });
            }
            Ok(same(bytes))
        }
        Codec::Rle => {
            if info.bits_allocated == 1 {
                return Err(PixelError::Unsupported("RLE with 1-bit samples".into()));
            }
            let bytes = rle::decode(
                compressed,
                info.pixel_count(),
                usize::from(info.samples_per_pixel),
                info.bytes_per_sample(),
            )?;
            let mut frame = same(bytes);
            frame.planar_configuration = 0;
            frame.photometric_interpretation = full_resolution_pi(&info.photometric_interpretation);
            normalize_signed(info, &mut frame);
            Ok(frame)
        }
        Codec::Jpeg => decode_jpeg(info, compressed),
        Codec::JpegLs => {
            let image = jpegls::decode(compressed, info.columns as usize, info.rows as usize)?;
            check_components(info, image.components)?;
            let bits_allocated = output_bits(info, u32::from(image.precision))?;
            let bytes = pack(image.samples.iter().map(|&s| u32::from(s)), bits_allocated);
            let mut frame = DecodedFrame {
                bytes,
                photometric_interpretation: full_resolution_pi(&info.photometric_interpretation),
                planar_configuration: 0,
                bits_allocated,
            };
            normalize_signed(info, &mut frame);
            Ok(frame)
        }
        Codec::Jpeg2000 => {
            let image = j2k::decode(compressed, info.columns as usize, info.rows as usize)?;
            check_components(info, image.components)?;
            let bits_allocated = output_bits(info, image.precision)?;
            let bytes = pack(image.samples.iter().map(|&s| s as u32), bits_allocated);
            let photometric_interpretation = match info.photometric_interpretation.as_str() {
                "YBR_ICT" | "YBR_RCT" => "RGB".to_owned(),
                other => full_resolution_pi(other),
            };
            let mut frame = DecodedFrame { bytes, photometric_interpretation, planar_configuration: 0, bits_allocated };
            normalize_signed(info, &mut frame);
            Ok(frame)
        }
    }
}

fn native_bytes<'a>(info: &ImageInfo, data: &'a [u8]) -> Result<&'a [u8]> {
    let length = info.frame_length();
    data.get(..length).ok_or(PixelError::Truncated { needed: length as u64, available: data.len() as u64 })
}

/// Swap 16- and 32-bit samples from big to little endian in place (8-bit samples stay).
pub fn swap_to_little_endian(bytes: &mut [u8], bits_allocated: u16) {
    match bits_allocated {
        16 => bytes.chunks_exact_mut(2).for_each(|c| c.swap(0, 1)),
        32 => bytes.chunks_exact_mut(4).for_each(|c| c.reverse()),
        _ => {}
    }
}

/// Turn a whole native Pixel Data value read from an Explicit VR Big Endian
/// file into its little-endian form, in place. OW values are 16-bit words even
/// when samples are 8 (or 1) bits, so such values must be swapped whole,
/// before frames are cut out of them; OB values are left as they are.
pub fn big_endian_value_to_little_endian(value: &mut [u8], bits_allocated: u16, vr: haneul_dicom::VR) {
    if vr != haneul_dicom::VR::OW {
        return;
    }
    swap_to_little_endian(value, bits_allocated.max(16));
}

/// Inflate a raw deflate stream (or, leniently, a zlib one), at most `limit` + 1 bytes.
fn inflate(data: &[u8], limit: usize) -> Result<Vec<u8>> {
    let cap = limit as u64 + 1;
    let mut out = Vec::with_capacity(limit);
    let raw = flate2::read::DeflateDecoder::new(data).take(cap).read_to_end(&mut out);
    if raw.is_ok() && out.len() >= limit {
        return Ok(out);
    }
    let mut zlib_out = Vec::with_capacity(limit);
    match flate2::read::ZlibDecoder::new(data).take(cap).read_to_end(&mut zlib_out) {
        Ok(_) if zlib_out.len() >= limit => Ok(zlib_out),
        _ => match raw {
            Ok(_) => Ok(out),
            Err(e) => Err(PixelError::decode("deflate", e.to_string())),
        },
    }
}

/// Decoders produce every sample at full resolution.
fn full_resolution_pi(pi: &str) -> String {
    match pi {
        "YBR_FULL_422" => "YBR_FULL".to_owned(),
        other => other.to_owned(),
    }
}

fn check_components(info: &ImageInfo, components: usize) -> Result<()> {
    if components != usize::from(info.samples_per_pixel) {
        return Err(PixelError::decode(
            "compressed frame",
            format!("{components} components, the data set says {} samples per pixel", info.samples_per_pixel),
        ));
    }
    Ok(())
}

/// Bits Allocated of the output: the data set's, which must hold the codestream's precision.
fn output_bits(info: &ImageInfo, precision: u32) -> Result<u16> {
    match info.bits_allocated {
        8 if precision <= 8 => Ok(8),
        16 if precision <= 16 => Ok(16),
        32 => Ok(32),
        other => Err(PixelError::decode(
            "compressed frame",
            format!("{precision}-bit samples do not fit Bits Allocated {other}"),
        )),
    }
}

fn pack(samples: impl Iterator<Item = u32>, bits_allocated: u16) -> Vec<u8> {
    let mut out = Vec::new();
    match bits_allocated {
        8 => out.extend(samples.map(|s| s as u8)),
        16 => samples.for_each(|s| out.extend_from_slice(&(s as u16).to_le_bytes())),
        _ => samples.for_each(|s| out.extend_from_slice(&s.to_le_bytes())),
    }
    out
}

/// For signed images, sign-extend each sample from Bits Stored to Bits Allocated
/// (codecs carry only the stored bits), so that every decoder yields the same bytes.
fn normalize_signed(info: &ImageInfo, frame: &mut DecodedFrame) {
    if info.pixel_representation != 1
        || info.bits_stored >= frame.bits_allocated
        || info.high_bit + 1 != info.bits_stored
    {
        return;
    }
    let shift = 32 - u32::from(info.bits_stored);
    match frame.bits_allocated {
        8 => frame.bytes.iter_mut().for_each(|b| *b = ((i32::from(*b) << shift) >> shift) as u8),
        16 => frame.bytes.chunks_exact_mut(2).for_each(|c| {
            let value = ((i32::from(u16::from_le_bytes([c[0], c[1]])) << shift) >> shift) as u16;
            c.copy_from_slice(&value.to_le_bytes());
        }),
        32 => frame.bytes.chunks_exact_mut(4).for_each(|c| {
            let value = (u32::from_le_bytes([c[0], c[1], c[2], c[3]]) << shift) as i32 >> shift;
            c.copy_from_slice(&value.to_le_bytes());
        }),
        _ => {}
    }
}

fn decode_jpeg(info: &ImageInfo, compressed: &[u8]) -> Result<DecodedFrame> {
    let image = jpeg::decode(compressed, info.columns as usize, info.rows as usize)?;
    check_components(info, image.components)?;
    let bits_allocated = output_bits(info, u32::from(image.precision))?;
    let pi = info.photometric_interpretation.as_str();
    let mut photometric_interpretation = full_resolution_pi(pi);
    let mut samples = image.samples;
    if image.components == 3 && !image.lossless {
        let ycbcr = image.hints.is_ycbcr(pi);
        if ycbcr {
            ycbcr_to_rgb(&mut samples, image.precision);
        }
        if ycbcr || pi == "RGB" || matches!(image.hints.component_ids.as_slice(), b"RGB" | b"rgb") {
            photometric_interpretation = "RGB".to_owned();
        }
    }
    let bytes = pack(samples.iter().map(|&s| u32::from(s)), bits_allocated);
    let mut frame = DecodedFrame { bytes, photometric_interpretation, planar_configuration: 0, bits_allocated };
    normalize_signed(info, &mut frame);
    Ok(frame)
}

/// YCbCr (JFIF / PS3.3 C.7.6.3.1.2 full range) to RGB, in place on interleaved samples.
pub(crate) fn ycbcr_to_rgb(samples: &mut [u16], precision: u8) {
    let center = f32::from(1u16 << (precision - 1));
    let max = ((1u32 << precision) - 1) as f32;
    for pixel in samples.chunks_exact_mut(3) {
        let y = f32::from(pixel[0]);
        let cb = f32::from(pixel[1]) - center;
        let cr = f32::from(pixel[2]) - center;
        let r = y + 1.402 * cr;
        let g = y - 0.344_136 * cb - 0.714_136 * cr;
        let b = y + 1.772 * cb;
        pixel[0] = r.round().clamp(0.0, max) as u16;
        pixel[1] = g.round().clamp(0.0, max) as u16;
        pixel[2] = b.round().clamp(0.0, max) as u16;
    }
}
