//! The display pipeline (PS3.3 C.11, PS3.4 N.2) and rendering to JPEG or PNG
//! for DICOMweb's rendered resources (PS3.18 8.3.5.1.3).

use crate::decode::DecodedFrame;
use crate::error::{PixelError, Result};
use crate::info::{FrameDisplay, ImageInfo, Lut, ModalityTransform, VoiFunction, Window};

/// The output media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageFormat {
    #[default]
    Jpeg,
    Png,
}

/// A source region of the image, in pixels; a negative width or height flips
/// the region along that axis (PS3.18 viewport `sx,sy,sw,sh`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub x: i64,
    pub y: i64,
    pub width: i64,
    pub height: i64,
}

/// The `viewport` parameter: the size to fit the image (or region) into, keeping its aspect ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewport {
    pub width: u32,
    pub height: u32,
    pub source: Option<Region>,
}

/// Rendering parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderOptions {
    pub format: ImageFormat,
    /// JPEG quality, 1 to 100 (default 90); ignored for PNG.
    pub quality: u8,
    /// Overrides the data set's VOI (window presets and VOI LUT).
    pub window: Option<Window>,
    /// Default: the image (region) at full size.
    pub viewport: Option<Viewport>,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions { format: ImageFormat::Jpeg, quality: 90, window: None, viewport: None }
    }
}

/// An 8-bit raster: gray (1 channel) or RGB (3), row by row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raster {
    pub width: u32,
    pub height: u32,
    pub channels: u8,
    pub pixels: Vec<u8>,
}

/// Largest rendered image, in pixels.
const MAX_OUTPUT_PIXELS: u64 = 1 << 28;

/// Parse the `window` parameter: `center,width[,function]`, the function being
/// `linear` (default), `linear-exact` or `sigmoid` (PS3.18 8.3.5.1.3; underscores accepted).
pub fn parse_window(text: &str) -> Result<Window> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    if parts.len() < 2 || parts.len() > 3 {
        return Err(PixelError::Parameter(format!("window={text}: expected center,width[,function]")));
    }
    let number = |s: &str| s.parse::<f64>().ok().filter(|v| v.is_finite());
    let center = number(parts[0]).ok_or_else(|| PixelError::Parameter(format!("window center {:?}", parts[0])))?;
    let width = number(parts[1])
        .filter(|w| *w > 0.0)
        .ok_or_else(|| PixelError::Parameter(format!("window width {:?}", parts[1])))?;
    let function = match parts.get(2) {
        None | Some(&"") => VoiFunction::Linear,
        Some(name) => VoiFunction::parse(&name.replace('-', "_"))
            .ok_or_else(|| PixelError::Parameter(format!("window function {name:?}")))?,
    };
    Ok(Window { center, width, function })
}

/// Parse the `viewport` parameter: `vw,vh` or `vw,vh,sx,sy,sw,sh` (sx, sy may be
/// empty, meaning 0; sw, sh may be empty, meaning to the image's edge).
pub fn parse_viewport(text: &str) -> Result<Viewport> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let bad = || PixelError::Parameter(format!("viewport={text}: expected vw,vh[,sx,sy,sw,sh]"));
    if parts.len() != 2 && parts.len() != 6 {
        return Err(bad());
    }
    let size = |s: &str| s.parse::<u32>().ok().filter(|v| (1..=65535).contains(v));
    let width = size(parts[0]).ok_or_else(bad)?;
    let height = size(parts[1]).ok_or_else(bad)?;
    let source = if parts.len() == 6 {
        let coordinate = |s: &str, default: i64| -> Result<i64> {
            if s.is_empty() {
                Ok(default)
            } else {
                s.parse::<i64>().ok().filter(|v| v.abs() <= 1 << 20).ok_or_else(bad)
            }
        };
        let x = coordinate(parts[2], 0)?;
        let y = coordinate(parts[3], 0)?;
        // 0 stands for "to the edge" and is resolved against the image.
        let w = coordinate(parts[4], 0)?;
        let h = coordinate(parts[5], 0)?;
        if x < 0 || y < 0 {
            return Err(bad());
        }
        Some(Region { x, y, width: w, height: h })
    } else {
        None
    };
    Ok(Viewport { width, height, source })
}

/// Render frame `frame` (0-based, used for per-frame display attributes) from
/// its native bytes (as [`crate::native_frame`] or [`crate::decode_frame`] give them;
/// after decoding, pass [`ImageInfo::after_decoding`]).
pub fn render_frame(info: &ImageInfo, frame: u32, native: &[u8], options: &RenderOptions) -> Result<Vec<u8>> {
    let raster = render_raster(info, frame, native, options)?;
    encode(&raster, options.format, options.quality)
}

/// [`render_frame`] for a frame that [`crate::decode_frame`] produced.
pub fn render_decoded(
    info: &ImageInfo,
    frame: u32,
    decoded: &DecodedFrame,
    options: &RenderOptions,
) -> Result<Vec<u8>> {
    render_frame(&info.after_decoding(decoded), frame, &decoded.bytes, options)
}

/// The display pipeline and viewport, without encoding.
pub fn render_raster(info: &ImageInfo, frame: u32, native: &[u8], options: &RenderOptions) -> Result<Raster> {
    info.validate()?;
    let needed = info.frame_length();
    // A decoded YBR_FULL_422 frame may already be at full resolution; anything shorter is an error.
    if native.len() < needed {
        return Err(PixelError::Truncated { needed: needed as u64, available: native.len() as u64 });
    }
    let display = info.frame_display(frame);
    let raster = match info.photometric_interpretation.as_str() {
        "MONOCHROME1" | "MONOCHROME2" if info.samples_per_pixel == 1 => gray(info, &display, native, options.window)?,
        "PALETTE COLOR" if info.samples_per_pixel == 1 => palette_color(info, native)?,
        _ if info.samples_per_pixel == 3 => color(info, native)?,
        other => {
            return Err(PixelError::Unsupported(format!(
                "rendering {other} with {} samples per pixel",
                info.samples_per_pixel
            )))
        }
    };
    apply_viewport(raster, options.viewport)
}

/// Stored values of every sample of a frame, masked to Bits Stored and sign-extended.
fn stored_values(info: &ImageInfo, native: &[u8]) -> Vec<i64> {
    let count = info.pixel_count() * usize::from(info.samples_per_pixel);
    let stored = u32::from(info.bits_stored);
    let shift = u32::from(info.high_bit) + 1 - stored;
    let mask: u64 = if stored >= 64 { u64::MAX } else { (1u64 << stored) - 1 };
    let signed = info.pixel_representation == 1;
    let convert = |raw: u64| -> i64 {
        let value = (raw >> shift) & mask;
        if signed && stored < 64 && value & (1 << (stored - 1)) != 0 {
            value as i64 - (1i64 << stored)
        } else {
            value as i64
        }
    };
    match info.bits_allocated {
        1 => (0..count).map(|i| convert(u64::from((native[i / 8] >> (i % 8)) & 1))).collect(),
        8 => native[..count].iter().map(|&b| convert(u64::from(b))).collect(),
        16 => {
            native[..count * 2].chunks_exact(2).map(|c| convert(u64::from(u16::from_le_bytes([c[0], c[1]])))).collect()
        }
        _ => native[..count * 4]
            .chunks_exact(4)
            .map(|c| convert(u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))))
            .collect(),
    }
}

fn modality(transform: &Option<ModalityTransform>, stored: i64) -> f64 {
    match transform {
        None => stored as f64,
        Some(ModalityTransform::Rescale { slope, intercept }) => stored as f64 * slope + intercept,
        Some(ModalityTransform::Lut(lut)) => f64::from(lut.lookup(stored)),
    }
}

/// Apply a window function to a modality value, giving 0.0 ..= 255.0.
pub fn apply_window(window: &Window, x: f64) -> f64 {
    let (c, w) = (window.center, window.width);
    let (y_min, y_max) = (0.0, 255.0);
    match window.function {
        VoiFunction::Linear => {
            let w = w.max(1.0);
            if x <= c - 0.5 - (w - 1.0) / 2.0 {
                y_min
            } else if x > c - 0.5 + (w - 1.0) / 2.0 {
                y_max
            } else {
                ((x - (c - 0.5)) / (w - 1.0) + 0.5) * (y_max - y_min) + y_min
            }
        }
        VoiFunction::LinearExact => {
            if w <= 0.0 {
                if x <= c {
                    y_min
                } else {
                    y_max
                }
            } else if x <= c - w / 2.0 {
                y_min
            } else if x > c + w / 2.0 {
                y_max
            } else {
                ((x - c) / w + 0.5) * (y_max - y_min) + y_min
            }
        }
        VoiFunction::Sigmoid => (y_max - y_min) / (1.0 + (-4.0 * (x - c) / w.max(f64::MIN_POSITIVE)).exp()) + y_min,
    }
}

fn to_u8(value: f64) -> u8 {
    (value + 0.5).floor().clamp(0.0, 255.0) as u8
}

fn voi_lut_output(lut: &Lut, x: f64) -> f64 {
    f64::from(lut.lookup(x.floor() as i64)) * 255.0 / f64::from(lut.max_output())
}

fn gray(info: &ImageInfo, display: &FrameDisplay, native: &[u8], window: Option<Window>) -> Result<Raster> {
    let values = stored_values(info, native);
    let window = window.or_else(|| display.default_window());
    let voi_lut = if window.is_none() { display.voi_luts.first() } else { None };
    let invert = info.photometric_interpretation == "MONOCHROME1";
    // Without any VOI, window the frame's own range of modality values.
    let window = match (window, voi_lut) {
        (Some(window), _) => Some(window),
        (None, Some(_)) => None,
        (None, None) => {
            let (mut low, mut high) = (f64::INFINITY, f64::NEG_INFINITY);
            for &v in &values {
                let m = modality(&display.modality, v);
                low = low.min(m);
                high = high.max(m);
            }
            if !low.is_finite() {
                low = 0.0;
                high = 0.0;
            }
            Some(Window { center: (low + high) / 2.0, width: high - low, function: VoiFunction::LinearExact })
        }
    };
    let map = |stored: i64| -> u8 {
        let x = modality(&display.modality, stored);
        let y = match (&window, voi_lut) {
            (Some(window), _) => apply_window(window, x),
            (None, Some(lut)) => voi_lut_output(lut, x),
            (None, None) => 0.0,
        };
        let y = to_u8(y);
        if invert {
            255 - y
        } else {
            y
        }
    };
    let pixels: Vec<u8> = if info.bits_stored <= 16 {
        // One table over every possible stored value.
        let stored = u32::from(info.bits_stored);
        let (low, count) = if info.pixel_representation == 1 {
            (-(1i64 << (stored - 1)), 1usize << stored)
        } else {
            (0, 1usize << stored)
        };
        let table: Vec<u8> = (0..count).map(|i| map(low + i as i64)).collect();
        values.iter().map(|&v| table[(v - low) as usize]).collect()
    } else {
        values.iter().map(|&v| map(v)).collect()
    };
    Ok(Raster { width: info.columns, height: info.rows, channels: 1, pixels })
}

fn palette_color(info: &ImageInfo, native: &[u8]) -> Result<Raster> {
    let palette = info.palette.as_ref().ok_or_else(|| PixelError::attribute("PaletteColorLookupTable", "missing"))?;
    let values = stored_values(info, native);
    let scale = |lut: &Lut, v: i64| -> u8 {
        let entry = lut.lookup(v);
        if lut.bits > 8 {
            (entry >> 8) as u8
        } else {
            entry.min(255) as u8
        }
    };
    let mut pixels = Vec::with_capacity(values.len() * 3);
    for &v in &values {
        pixels.extend_from_slice(&[scale(&palette.red, v), scale(&palette.green, v), scale(&palette.blue, v)]);
    }
    Ok(Raster { width: info.columns, height: info.rows, channels: 3, pixels })
}

fn color(info: &ImageInfo, native: &[u8]) -> Result<Raster> {
    if info.bits_allocated == 1 {
        return Err(PixelError::Unsupported("1-bit colour".into()));
    }
    let pixels = info.pixel_count();
    let pi = info.photometric_interpretation.as_str();
    let stored = u32::from(info.bits_stored);
    let max = ((1u64 << stored) - 1) as f64;
    let to8 = |v: i64| -> u8 {
        if stored == 8 {
            v.clamp(0, 255) as u8
        } else {
            to_u8(v.max(0) as f64 * 255.0 / max)
        }
    };
    let subsampled = info.is_subsampled() && native.len() < info.full_frame_length();
    // Samples as three interleaved 8-bit channels in the data's own colour space.
    let mut samples = vec![0u8; pixels * 3];
    if subsampled {
        if pi == "YBR_PARTIAL_420" {
            return Err(PixelError::Unsupported("rendering native YBR_PARTIAL_420".into()));
        }
        // 4:2:2: each pair of pixels is stored Y1 Y2 Cb Cr.
        let mut as_info = info.clone();
        as_info.samples_per_pixel = 1;
        as_info.rows = 1;
        as_info.columns = (pixels * 2) as u32;
        let values = stored_values(&as_info, native);
        for pair in 0..pixels / 2 {
            let group = &values[pair * 4..pair * 4 + 4];
            for (k, y) in [group[0], group[1]].into_iter().enumerate() {
                let p = pair * 2 + k;
                samples[p * 3] = to8(y);
                samples[p * 3 + 1] = to8(group[2]);
                samples[p * 3 + 2] = to8(group[3]);
            }
        }
    } else {
        let values = stored_values(info, native);
        for p in 0..pixels {
            for c in 0..3 {
                let v = if info.planar_configuration == 1 { values[c * pixels + p] } else { values[p * 3 + c] };
                samples[p * 3 + c] = to8(v);
            }
        }
    }
    match pi {
        "RGB" => {}
        "YBR_FULL" | "YBR_FULL_422" => samples.chunks_exact_mut(3).for_each(|px| {
            let (y, cb, cr) = (f64::from(px[0]), f64::from(px[1]) - 128.0, f64::from(px[2]) - 128.0);
            px[0] = to_u8(y + 1.402 * cr);
            px[1] = to_u8(y - 0.344_136 * cb - 0.714_136 * cr);
            px[2] = to_u8(y + 1.772 * cb);
        }),
        "YBR_PARTIAL_422" | "YBR_PARTIAL_420" => samples.chunks_exact_mut(3).for_each(|px| {
            let (y, cb, cr) = (f64::from(px[0]) - 16.0, f64::from(px[1]) - 128.0, f64::from(px[2]) - 128.0);
            px[0] = to_u8(1.1644 * y + 1.5960 * cr);
            px[1] = to_u8(1.1644 * y - 0.3918 * cb - 0.8130 * cr);
            px[2] = to_u8(1.1644 * y + 2.0172 * cb);
        }),
        other => return Err(PixelError::Unsupported(format!("rendering {other}"))),
    }
    Ok(Raster { width: info.columns, height: info.rows, channels: 3, pixels: samples })
}

/// Crop (and flip) to the source region, then scale to fit the viewport.
fn apply_viewport(raster: Raster, viewport: Option<Viewport>) -> Result<Raster> {
    let Some(viewport) = viewport else {
        return Ok(raster);
    };
    let raster = match viewport.source {
        Some(region) => crop(raster, region)?,
        None => raster,
    };
    let scale = (f64::from(viewport.width) / f64::from(raster.width))
        .min(f64::from(viewport.height) / f64::from(raster.height));
    let width = ((f64::from(raster.width) * scale).round() as u32).max(1);
    let height = ((f64::from(raster.height) * scale).round() as u32).max(1);
    if u64::from(width) * u64::from(height) > MAX_OUTPUT_PIXELS {
        return Err(PixelError::Parameter(format!("viewport of {width}x{height} pixels is too large")));
    }
    Ok(resize(&raster, width, height))
}

fn crop(raster: Raster, region: Region) -> Result<Raster> {
    let (image_w, image_h) = (i64::from(raster.width), i64::from(raster.height));
    let resolve = |start: i64, extent: i64, size: i64| -> (i64, i64, bool) {
        let extent = if extent == 0 { size - start } else { extent };
        if extent < 0 {
            ((start + extent).max(0), start.min(size), true)
        } else {
            (start, (start + extent).min(size), false)
        }
    };
    let (x0, x1, flip_x) = resolve(region.x, region.width, image_w);
    let (y0, y1, flip_y) = resolve(region.y, region.height, image_h);
    if x0 >= x1 || y0 >= y1 || x0 >= image_w || y0 >= image_h {
        return Err(PixelError::Parameter("viewport source region lies outside the image".into()));
    }
    let channels = usize::from(raster.channels);
    let (w, h) = ((x1 - x0) as usize, (y1 - y0) as usize);
    let mut pixels = Vec::with_capacity(w * h * channels);
    for row in 0..h {
        let sy = if flip_y { y1 as usize - 1 - row } else { y0 as usize + row };
        for col in 0..w {
            let sx = if flip_x { x1 as usize - 1 - col } else { x0 as usize + col };
            let at = (sy * raster.width as usize + sx) * channels;
            pixels.extend_from_slice(&raster.pixels[at..at + channels]);
        }
    }
    Ok(Raster { width: w as u32, height: h as u32, channels: raster.channels, pixels })
}

/// Resampling weights: a triangle filter widened by the reduction factor
/// (area-like when shrinking, bilinear when enlarging).
fn weights(source: usize, target: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = source as f64 / target as f64;
    let support = scale.max(1.0);
    (0..target)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let first = ((center - support).floor().max(0.0)) as usize;
            let last = ((center + support).ceil() as usize).min(source);
            let mut taps: Vec<f32> =
                (first..last).map(|j| (1.0 - ((j as f64 + 0.5 - center) / support).abs()).max(0.0) as f32).collect();
            let sum: f32 = taps.iter().sum();
            if sum > 0.0 {
                taps.iter_mut().for_each(|t| *t /= sum);
                (first, taps)
            } else {
                let nearest = (center.floor() as usize).min(source - 1);
                (nearest, vec![1.0])
            }
        })
        .collect()
}

fn resize(raster: &Raster, width: u32, height: u32) -> Raster {
    if width == raster.width && height == raster.height {
        return raster.clone();
    }
    let channels = usize::from(raster.channels);
    let (sw, sh) = (raster.width as usize, raster.height as usize);
    let (dw, dh) = (width as usize, height as usize);
    let horizontal = weights(sw, dw);
    let vertical = weights(sh, dh);
    let mut temp = vec![0f32; sh * dw * channels];
    for y in 0..sh {
        for (x, (first, taps)) in horizontal.iter().enumerate() {
            for c in 0..channels {
                let mut sum = 0f32;
                for (k, &t) in taps.iter().enumerate() {
                    sum += t * f32::from(raster.pixels[(y * sw + first + k) * channels + c]);
                }
                temp[(y * dw + x) * channels + c] = sum;
            }
        }
    }
    let mut pixels = vec![0u8; dw * dh * channels];
    for (y, (first, taps)) in vertical.iter().enumerate() {
        for x in 0..dw {
            for c in 0..channels {
                let mut sum = 0f32;
                for (k, &t) in taps.iter().enumerate() {
                    sum += t * temp[((first + k) * dw + x) * channels + c];
                }
                pixels[(y * dw + x) * channels + c] = (sum + 0.5).floor().clamp(0.0, 255.0) as u8;
            }
        }
    }
    Raster { width, height, channels: raster.channels, pixels }
}

/// Encode an 8-bit raster as JPEG (quality 1–100) or PNG.
pub fn encode(raster: &Raster, format: ImageFormat, quality: u8) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    match format {
        ImageFormat::Jpeg => {
            let width = u16::try_from(raster.width).map_err(|_| PixelError::Encode("too wide for JPEG".into()))?;
            let height = u16::try_from(raster.height).map_err(|_| PixelError::Encode("too tall for JPEG".into()))?;
            let color = if raster.channels == 1 { jpeg_encoder::ColorType::Luma } else { jpeg_encoder::ColorType::Rgb };
            jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100))
                .encode(&raster.pixels, width, height, color)
                .map_err(|e| PixelError::Encode(e.to_string()))?;
        }
        ImageFormat::Png => {
            let mut encoder = png::Encoder::new(&mut out, raster.width, raster.height);
            encoder.set_color(if raster.channels == 1 { png::ColorType::Grayscale } else { png::ColorType::Rgb });
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder.write_header().map_err(|e| PixelError::Encode(e.to_string()))?;
            writer.write_image_data(&raster.pixels).map_err(|e| PixelError::Encode(e.to_string()))?;
            writer.finish().map_err(|e| PixelError::Encode(e.to_string()))?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_window_follows_ps3_3_formula() {
        let window = Window { center: 40.0, width: 400.0, function: VoiFunction::Linear };
        assert_eq!(apply_window(&window, -160.5), 0.0);
        assert_eq!(apply_window(&window, 240.0), 255.0);
        let mid = apply_window(&window, 39.5);
        assert!((mid - 127.5).abs() < 1e-9, "{mid}");
    }

    #[test]
    fn parameters_parse() {
        let w = parse_window("40,400,SIGMOID").expect("window");
        assert_eq!(w.function, VoiFunction::Sigmoid);
        assert_eq!(parse_window("1,2,linear-exact").expect("window").function, VoiFunction::LinearExact);
        assert!(parse_window("1").is_err());
        assert!(parse_window("1,0").is_err());
        assert!(parse_window("1,2,cubic").is_err());
        let v = parse_viewport("100,50").expect("viewport");
        assert_eq!((v.width, v.height, v.source), (100, 50, None));
        let v = parse_viewport("100,50,,,20,-10").expect("viewport");
        assert_eq!(v.source, Some(Region { x: 0, y: 0, width: 20, height: -10 }));
        assert!(parse_viewport("0,50").is_err());
        assert!(parse_viewport("10,50,1").is_err());
    }

    #[test]
    fn resize_keeps_a_flat_image_flat() {
        let raster = Raster { width: 7, height: 5, channels: 1, pixels: vec![77; 35] };
        let small = resize(&raster, 3, 2);
        assert_eq!(small.pixels, vec![77; 6]);
        let large = resize(&raster, 20, 14);
        assert!(large.pixels.iter().all(|&p| p == 77));
    }
}
