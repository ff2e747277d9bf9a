//! JPEG 2000 Part 1 and High-Throughput JPEG 2000, through `jpeg2k` over
//! `openjp2`, a pure-Rust port of OpenJPEG (which includes the HTJ2K block decoder).

use crate::error::{PixelError, Result};

const CODEC: &str = "JPEG 2000";

fn err(detail: impl Into<String>) -> PixelError {
    PixelError::decode(CODEC, detail)
}

/// A decoded image: signed or unsigned samples interleaved by pixel. Any
/// multiple-component transform (RCT/ICT) of the codestream has been undone.
#[derive(Debug, Clone)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub components: usize,
    pub precision: u32,
    pub signed: bool,
    pub samples: Vec<i32>,
}

/// Check the SIZ segment of a raw codestream against the expected size before
/// handing the stream to the decoder, so that a forged header cannot make it allocate.
fn check_siz(data: &[u8], width: usize, height: usize) -> Result<()> {
    if !data.starts_with(&[0xFF, 0x4F, 0xFF, 0x51]) {
        if data.starts_with(&[0, 0, 0, 0x0C, 0x6A, 0x50, 0x20, 0x20]) {
            // A JP2 file: the decoder checks its header itself.
            return Ok(());
        }
        return Err(err("no SOC marker"));
    }
    let siz = data.get(4..42).ok_or_else(|| err("SIZ segment truncated"))?;
    let word = |i: usize| u32::from_be_bytes([siz[i], siz[i + 1], siz[i + 2], siz[i + 3]]) as usize;
    let (xsiz, ysiz, x0, y0) = (word(4), word(8), word(12), word(16));
    let (w, h) = (xsiz.saturating_sub(x0), ysiz.saturating_sub(y0));
    if w != width || h != height {
        return Err(err(format!("codestream is {w}x{h}, the data set says {width}x{height}")));
    }
    let (tile_w, tile_h) = (word(20), word(24));
    if tile_w == 0 || tile_h == 0 {
        return Err(err("zero tile size"));
    }
    let components = usize::from(u16::from_be_bytes([siz[36], siz[37]]));
    if !(1..=4).contains(&components) {
        return Err(err(format!("{components} components")));
    }
    Ok(())
}

/// Decode a JPEG 2000 or HTJ2K codestream (or JP2 file) of `width` × `height`.
pub fn decode(data: &[u8], width: usize, height: usize) -> Result<Image> {
    check_siz(data, width, height)?;
    // The port keeps OpenJPEG's checks, but is not fuzzed as the C library is:
    // a panic inside it must not take the server down.
    let decoded = std::panic::catch_unwind(|| jpeg2k::Image::from_bytes(data))
        .map_err(|_| err("decoder failed on malformed data"))?
        .map_err(|e| err(e.to_string()))?;
    let components = decoded.components();
    if components.is_empty() || components.len() > 4 {
        return Err(err(format!("{} components", components.len())));
    }
    let first = &components[0];
    let precision = first.precision();
    let signed = first.is_signed();
    for component in components {
        if component.width() as usize != width || component.height() as usize != height {
            return Err(PixelError::Unsupported("subsampled JPEG 2000 components".into()));
        }
        if component.precision() != precision || component.is_signed() != signed {
            return Err(PixelError::Unsupported("JPEG 2000 components of different precision".into()));
        }
    }
    if precision == 0 || precision > 16 {
        return Err(PixelError::Unsupported(format!("JPEG 2000 precision {precision}")));
    }
    let count = components.len();
    let mut samples = vec![0i32; width * height * count];
    for (c, component) in components.iter().enumerate() {
        let data = component.data();
        if data.len() != width * height {
            return Err(err("component data size"));
        }
        for (i, &value) in data.iter().enumerate() {
            samples[i * count + c] = value;
        }
    }
    Ok(Image { width, height, components: count, precision, signed, samples })
}

/// Whether the codestream's COD segment asks for a multiple-component transform.
pub fn uses_mct(data: &[u8]) -> bool {
    // Walk the main header markers up to the first SOT.
    let mut position = 2usize;
    while position + 4 <= data.len() {
        if data[position] != 0xFF {
            return false;
        }
        let marker = data[position + 1];
        let length = usize::from(u16::from_be_bytes([data[position + 2], data[position + 3]]));
        if marker == 0x90 {
            return false;
        }
        if marker == 0x52 {
            // COD: Lcod(2) Scod(1) progression(1) layers(2) MCT(1)
            return data.get(position + 4 + 4).is_some_and(|&mct| mct != 0);
        }
        position += 2 + length;
    }
    false
}
