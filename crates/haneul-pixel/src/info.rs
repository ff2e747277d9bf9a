//! The image attributes that decoding and rendering need, read once from a data set.

use haneul_dicom::{tags, Dataset, Tag, Value};

use crate::error::{PixelError, Result};

/// The VOI LUT Function (0028,1056): how a window maps values to output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VoiFunction {
    /// PS3.3 C.11.2.1.2.1, with its `-0.5` and `-1` offsets.
    #[default]
    Linear,
    /// PS3.3 C.11.2.1.3.2: the window maps exactly onto the output range.
    LinearExact,
    /// PS3.3 C.11.2.1.3.1.
    Sigmoid,
}

impl VoiFunction {
    /// Parse a defined term (`LINEAR`, `LINEAR_EXACT`, `SIGMOID`, any case).
    pub fn parse(text: &str) -> Option<VoiFunction> {
        match text.trim().to_ascii_uppercase().as_str() {
            "LINEAR" => Some(VoiFunction::Linear),
            "LINEAR_EXACT" => Some(VoiFunction::LinearExact),
            "SIGMOID" => Some(VoiFunction::Sigmoid),
            _ => None,
        }
    }
}

/// A window (center and width) in modality units, with its function.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub center: f64,
    pub width: f64,
    pub function: VoiFunction,
}

/// One window preset of the data set (Window Center / Width / Explanation).
#[derive(Debug, Clone, PartialEq)]
pub struct WindowPreset {
    pub center: f64,
    pub width: f64,
    pub explanation: Option<String>,
}

/// A lookup table: LUT Descriptor (entries, first mapped value, bits) and LUT Data.
#[derive(Debug, Clone, PartialEq)]
pub struct Lut {
    /// The input value mapped to the first entry.
    pub first_mapped: i64,
    /// Bits per entry (third value of the descriptor), 8 or 16 in practice.
    pub bits: u16,
    /// The entries; never empty.
    pub data: Vec<u16>,
}

impl Lut {
    /// The entry for `input`: inputs below the first mapped value take the first
    /// entry, inputs past the end the last one (PS3.3 C.11.1.1).
    pub fn lookup(&self, input: i64) -> u16 {
        let last = self.data.len().saturating_sub(1);
        let index = input.saturating_sub(self.first_mapped).clamp(0, last as i64) as usize;
        self.data.get(index).copied().unwrap_or(0)
    }

    /// The largest value an entry can hold, from the descriptor's bit depth.
    pub fn max_output(&self) -> u32 {
        let bits = u32::from(self.bits.clamp(1, 16));
        (1u32 << bits) - 1
    }
}

/// The Modality LUT stage.
#[derive(Debug, Clone, PartialEq)]
pub enum ModalityTransform {
    /// Rescale Slope and Intercept: `output = stored * slope + intercept`.
    Rescale { slope: f64, intercept: f64 },
    /// Modality LUT Sequence.
    Lut(Lut),
}

/// The display attributes that may differ per frame: top-level attributes, the
/// Shared Functional Groups, and each frame's Per-Frame Functional Groups.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FrameDisplay {
    pub modality: Option<ModalityTransform>,
    pub windows: Vec<WindowPreset>,
    pub voi_function: Option<VoiFunction>,
    pub voi_luts: Vec<Lut>,
}

impl FrameDisplay {
    /// `self` with every attribute that `over` sets replaced.
    fn overridden_by(&self, over: &FrameDisplay) -> FrameDisplay {
        FrameDisplay {
            modality: over.modality.clone().or_else(|| self.modality.clone()),
            windows: if over.windows.is_empty() { self.windows.clone() } else { over.windows.clone() },
            voi_function: over.voi_function.or(self.voi_function),
            voi_luts: if over.voi_luts.is_empty() { self.voi_luts.clone() } else { over.voi_luts.clone() },
        }
    }

    /// The window to apply by default: the first preset, with the VOI LUT Function.
    pub fn default_window(&self) -> Option<Window> {
        self.windows.first().map(|preset| Window {
            center: preset.center,
            width: preset.width,
            function: self.voi_function.unwrap_or_default(),
        })
    }
}

/// The Red, Green and Blue Palette Color Lookup Tables.
#[derive(Debug, Clone, PartialEq)]
pub struct Palette {
    pub red: Lut,
    pub green: Lut,
    pub blue: Lut,
}

/// The image pixel attributes of an instance (PS3.3 C.7.6.3) and its display attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInfo {
    pub rows: u32,
    pub columns: u32,
    pub samples_per_pixel: u16,
    pub bits_allocated: u16,
    pub bits_stored: u16,
    pub high_bit: u16,
    /// 0 unsigned, 1 two's complement.
    pub pixel_representation: u16,
    /// Photometric Interpretation, trimmed, e.g. `MONOCHROME2`, `RGB`, `YBR_FULL_422`.
    pub photometric_interpretation: String,
    /// 0 colour-by-pixel, 1 colour-by-plane (only meaningful when samples per pixel > 1).
    pub planar_configuration: u16,
    pub number_of_frames: u32,
    /// Top-level display attributes merged with the Shared Functional Groups.
    pub display: FrameDisplay,
    /// Per-Frame Functional Groups display attributes, one per frame (empty when absent).
    pub per_frame: Vec<FrameDisplay>,
    pub palette: Option<Palette>,
}

const MAX_DIMENSION: u32 = 65535;

impl ImageInfo {
    /// Read the attributes from a data set (values inline, as Haneul's reader gives them).
    pub fn from_dataset(ds: &Dataset) -> Result<ImageInfo> {
        let rows = required_u32(ds, tags::ROWS, "Rows")?;
        let columns = required_u32(ds, tags::COLUMNS, "Columns")?;
        let samples_per_pixel = optional_u16(ds, tags::SAMPLES_PER_PIXEL, "SamplesPerPixel")?.unwrap_or(1);
        let bits_allocated = required_u32(ds, tags::BITS_ALLOCATED, "BitsAllocated")? as u16;
        let bits_stored = optional_u16(ds, tags::BITS_STORED, "BitsStored")?.unwrap_or(bits_allocated);
        let high_bit = optional_u16(ds, tags::HIGH_BIT, "HighBit")?.unwrap_or(bits_stored.saturating_sub(1));
        let pixel_representation = optional_u16(ds, tags::PIXEL_REPRESENTATION, "PixelRepresentation")?.unwrap_or(0);
        let photometric_interpretation = match ds.string(tags::PHOTOMETRIC_INTERPRETATION) {
            Some(pi) => pi.trim().to_ascii_uppercase(),
            None if samples_per_pixel == 1 => "MONOCHROME2".to_owned(),
            None => "RGB".to_owned(),
        };
        let planar_configuration = optional_u16(ds, tags::PLANAR_CONFIGURATION, "PlanarConfiguration")?.unwrap_or(0);
        let number_of_frames = match ds.int(tags::NUMBER_OF_FRAMES) {
            Some(n) if n >= 1 => {
                u32::try_from(n).map_err(|_| PixelError::attribute("NumberOfFrames", n.to_string()))?
            }
            _ => 1,
        };
        let signed = pixel_representation == 1;
        let mut display = display_attributes(ds, signed);
        if let Some(shared) = ds.items(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE).first() {
            display = display.overridden_by(&functional_group_display(shared, signed));
        }
        let per_frame = ds
            .items(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
            .iter()
            .map(|item| functional_group_display(item, signed))
            .collect();
        let palette = if photometric_interpretation == "PALETTE COLOR" { Some(palette(ds)?) } else { None };
        let info = ImageInfo {
            rows,
            columns,
            samples_per_pixel,
            bits_allocated,
            bits_stored,
            high_bit,
            pixel_representation,
            photometric_interpretation,
            planar_configuration,
            number_of_frames,
            display,
            per_frame,
            palette,
        };
        info.validate()?;
        Ok(info)
    }

    /// Check that the attributes describe an image this crate can address.
    pub fn validate(&self) -> Result<()> {
        if self.rows == 0 || self.rows > MAX_DIMENSION {
            return Err(PixelError::attribute("Rows", self.rows.to_string()));
        }
        if self.columns == 0 || self.columns > MAX_DIMENSION {
            return Err(PixelError::attribute("Columns", self.columns.to_string()));
        }
        if !(1..=4).contains(&self.samples_per_pixel) {
            return Err(PixelError::attribute("SamplesPerPixel", self.samples_per_pixel.to_string()));
        }
        if !matches!(self.bits_allocated, 1 | 8 | 16 | 32) {
            return Err(PixelError::attribute("BitsAllocated", self.bits_allocated.to_string()));
        }
        if self.bits_stored == 0 || self.bits_stored > self.bits_allocated {
            return Err(PixelError::attribute("BitsStored", self.bits_stored.to_string()));
        }
        if self.high_bit >= self.bits_allocated || self.high_bit + 1 < self.bits_stored {
            return Err(PixelError::attribute("HighBit", self.high_bit.to_string()));
        }
        if self.pixel_representation > 1 {
            return Err(PixelError::attribute("PixelRepresentation", self.pixel_representation.to_string()));
        }
        if self.planar_configuration > 1 {
            return Err(PixelError::attribute("PlanarConfiguration", self.planar_configuration.to_string()));
        }
        Ok(())
    }

    /// Pixels in one frame.
    pub fn pixel_count(&self) -> usize {
        self.rows as usize * self.columns as usize
    }

    /// Bytes of one sample (1, 2 or 4; 1-bit data counts as 1 here).
    pub fn bytes_per_sample(&self) -> usize {
        usize::from(self.bits_allocated.div_ceil(8))
    }

    /// Whether native frames are stored with 4:2:2 or 4:2:0 chroma subsampling.
    pub fn is_subsampled(&self) -> bool {
        self.samples_per_pixel == 3
            && matches!(
                self.photometric_interpretation.as_str(),
                "YBR_FULL_422" | "YBR_PARTIAL_422" | "YBR_PARTIAL_420"
            )
    }

    /// Bytes of one frame of native pixel data as stored (bit-packed for 1-bit
    /// data; subsampled for YBR_FULL_422 / YBR_PARTIAL_422 / YBR_PARTIAL_420).
    pub fn frame_length(&self) -> usize {
        let pixels = self.pixel_count();
        if self.bits_allocated == 1 {
            return (pixels * usize::from(self.samples_per_pixel)).div_ceil(8);
        }
        let bytes = self.bytes_per_sample();
        match self.photometric_interpretation.as_str() {
            "YBR_FULL_422" | "YBR_PARTIAL_422" if self.samples_per_pixel == 3 => pixels * 2 * bytes,
            "YBR_PARTIAL_420" if self.samples_per_pixel == 3 => pixels * 3 / 2 * bytes,
            _ => pixels * usize::from(self.samples_per_pixel) * bytes,
        }
    }

    /// Bytes of one frame with every sample present (no chroma subsampling),
    /// as a decoder produces it.
    pub fn full_frame_length(&self) -> usize {
        if self.bits_allocated == 1 {
            return (self.pixel_count() * usize::from(self.samples_per_pixel)).div_ceil(8);
        }
        self.pixel_count() * usize::from(self.samples_per_pixel) * self.bytes_per_sample()
    }

    /// The display attributes of frame `frame` (0-based): per-frame functional
    /// groups override shared ones, which override top-level attributes.
    pub fn frame_display(&self, frame: u32) -> FrameDisplay {
        match self.per_frame.get(frame as usize) {
            Some(over) => self.display.overridden_by(over),
            None => self.display.clone(),
        }
    }

    /// The attributes after a frame was decoded (photometric interpretation,
    /// planar configuration and bits allocated as the decoder reports them).
    pub fn after_decoding(&self, frame: &crate::DecodedFrame) -> ImageInfo {
        let mut info = self.clone();
        info.photometric_interpretation = frame.photometric_interpretation.clone();
        info.planar_configuration = frame.planar_configuration;
        info.bits_allocated = frame.bits_allocated;
        info
    }
}

fn required_u32(ds: &Dataset, tag: Tag, name: &'static str) -> Result<u32> {
    let value = ds.int(tag).ok_or_else(|| PixelError::attribute(name, "missing"))?;
    u32::try_from(value).map_err(|_| PixelError::attribute(name, value.to_string()))
}

fn optional_u16(ds: &Dataset, tag: Tag, name: &'static str) -> Result<Option<u16>> {
    match ds.int(tag) {
        None => Ok(None),
        Some(value) => u16::try_from(value).map(Some).map_err(|_| PixelError::attribute(name, value.to_string())),
    }
}

/// All values of a numeric element, text (DS, IS) or binary.
fn floats(ds: &Dataset, tag: Tag) -> Vec<f64> {
    let Some(element) = ds.get(tag) else {
        return Vec::new();
    };
    match &element.value {
        Value::Strings(values) => values.iter().filter_map(|s| s.trim().parse::<f64>().ok()).collect(),
        Value::F64(v) => v.clone(),
        Value::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        Value::U16(v) => v.iter().map(|&x| f64::from(x)).collect(),
        Value::I16(v) => v.iter().map(|&x| f64::from(x)).collect(),
        Value::U32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        Value::I32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        _ => Vec::new(),
    }
}

fn first_float(ds: &Dataset, tag: Tag) -> Option<f64> {
    floats(ds, tag).first().copied().filter(|v| v.is_finite())
}

fn rescale(ds: &Dataset) -> Option<ModalityTransform> {
    let slope = first_float(ds, tags::RESCALE_SLOPE);
    let intercept = first_float(ds, tags::RESCALE_INTERCEPT);
    if slope.is_none() && intercept.is_none() {
        return None;
    }
    let slope = slope.filter(|s| *s != 0.0).unwrap_or(1.0);
    Some(ModalityTransform::Rescale { slope, intercept: intercept.unwrap_or(0.0) })
}

fn windows(ds: &Dataset) -> Vec<WindowPreset> {
    let centers = floats(ds, tags::WINDOW_CENTER);
    let widths = floats(ds, tags::WINDOW_WIDTH);
    let explanations = ds.strings(tags::WINDOW_CENTER_WIDTH_EXPLANATION);
    centers
        .iter()
        .zip(widths.iter())
        .enumerate()
        .filter(|(_, (c, w))| c.is_finite() && w.is_finite() && **w > 0.0)
        .map(|(i, (&center, &width))| WindowPreset {
            center,
            width,
            explanation: explanations.get(i).filter(|s| !s.is_empty()).cloned(),
        })
        .collect()
}

fn voi_function(ds: &Dataset) -> Option<VoiFunction> {
    ds.string(tags::VOILUT_FUNCTION).and_then(VoiFunction::parse)
}

/// The three values of a LUT descriptor, the second one signed where `signed`.
fn lut_descriptor(ds: &Dataset, tag: Tag, signed: bool) -> Option<(usize, i64, u16)> {
    let values: Vec<i64> = match &ds.get(tag)?.value {
        Value::U16(v) => v
            .iter()
            .enumerate()
            .map(|(i, &x)| if i == 1 && signed { i64::from(x as i16) } else { i64::from(x) })
            .collect(),
        Value::I16(v) => {
            v.iter().enumerate().map(|(i, &x)| if i == 1 { i64::from(x) } else { i64::from(x as u16) }).collect()
        }
        Value::Bytes(b) => b
            .chunks_exact(2)
            .enumerate()
            .map(|(i, c)| {
                let x = u16::from_le_bytes([c[0], c[1]]);
                if i == 1 && signed {
                    i64::from(x as i16)
                } else {
                    i64::from(x)
                }
            })
            .collect(),
        Value::Strings(v) => v.iter().filter_map(|s| s.trim().parse::<i64>().ok()).collect(),
        _ => return None,
    };
    if values.len() < 3 {
        return None;
    }
    let entries = if values[0] == 0 { 65536 } else { usize::try_from(values[0]).ok()? };
    let bits = u16::try_from(values[2]).ok()?;
    Some((entries, values[1], bits))
}

/// LUT Data as entries: US values, or OW bytes (one byte per entry when an
/// 8-bit table is packed that way, else 16-bit little-endian words).
fn lut_entries(value: &Value, entries: usize, bits: u16) -> Option<Vec<u16>> {
    let mut data: Vec<u16> = match value {
        Value::U16(v) => v.clone(),
        Value::I16(v) => v.iter().map(|&x| x as u16).collect(),
        Value::Bytes(b) if bits <= 8 && (b.len() == entries || b.len() == entries + 1) => {
            b.iter().take(entries).map(|&x| u16::from(x)).collect()
        }
        Value::Bytes(b) => b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect(),
        _ => return None,
    };
    data.truncate(entries);
    if data.is_empty() {
        return None;
    }
    Some(data)
}

fn lut(item: &Dataset, signed: bool) -> Option<Lut> {
    let (entries, first_mapped, bits) = lut_descriptor(item, tags::LUT_DESCRIPTOR, signed)?;
    let data = lut_entries(&item.get(tags::LUT_DATA)?.value, entries, bits)?;
    Some(Lut { first_mapped, bits, data })
}

fn display_attributes(ds: &Dataset, signed: bool) -> FrameDisplay {
    let modality = match ds.items(tags::MODALITY_LUT_SEQUENCE).first().and_then(|item| lut(item, signed)) {
        Some(table) => Some(ModalityTransform::Lut(table)),
        None => rescale(ds),
    };
    // The VOI LUT input is the modality output, which is signed when the stored values are.
    let voi_luts = ds.items(tags::VOILUT_SEQUENCE).iter().filter_map(|item| lut(item, signed)).collect();
    FrameDisplay { modality, windows: windows(ds), voi_function: voi_function(ds), voi_luts }
}

fn functional_group_display(group: &Dataset, signed: bool) -> FrameDisplay {
    let mut display = FrameDisplay::default();
    if let Some(item) = group.items(tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE).first() {
        display.modality = rescale(item);
    }
    if let Some(item) = group.items(tags::FRAME_VOILUT_SEQUENCE).first() {
        display.windows = windows(item);
        display.voi_function = voi_function(item);
        display.voi_luts =
            item.items(tags::VOILUT_SEQUENCE).iter().filter_map(|lut_item| lut(lut_item, signed)).collect();
    }
    display
}

const PALETTE_TAGS: [(Tag, Tag, Tag, &str); 3] = [
    (
        tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
        tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        tags::SEGMENTED_RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        "RedPaletteColorLookupTable",
    ),
    (
        tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
        tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        tags::SEGMENTED_GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        "GreenPaletteColorLookupTable",
    ),
    (
        tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
        tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        tags::SEGMENTED_BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        "BluePaletteColorLookupTable",
    ),
];

fn palette(ds: &Dataset) -> Result<Palette> {
    let mut tables = Vec::with_capacity(3);
    for (descriptor_tag, data_tag, segmented_tag, name) in PALETTE_TAGS {
        // Palette descriptors are US, or SS with the first mapped value read as unsigned.
        let (entries, first_mapped, bits) =
            lut_descriptor(ds, descriptor_tag, false).ok_or_else(|| PixelError::attribute(name, "no descriptor"))?;
        let first_mapped = first_mapped & 0xFFFF;
        let data = if let Some(element) = ds.get(data_tag) {
            lut_entries(&element.value, entries, bits)
        } else if let Some(element) = ds.get(segmented_tag) {
            let words: Vec<u16> = match &element.value {
                Value::U16(v) => v.clone(),
                Value::Bytes(b) => b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect(),
                _ => Vec::new(),
            };
            Some(expand_segmented(&words, entries).map_err(|detail| PixelError::attribute(name, detail))?)
        } else {
            None
        };
        let data = data.filter(|d| !d.is_empty()).ok_or_else(|| PixelError::attribute(name, "no LUT data"))?;
        tables.push(Lut { first_mapped, bits, data });
    }
    let blue = tables.pop();
    let green = tables.pop();
    let red = tables.pop();
    match (red, green, blue) {
        (Some(red), Some(green), Some(blue)) => Ok(Palette { red, green, blue }),
        _ => Err(PixelError::attribute("PaletteColorLookupTable", "incomplete")),
    }
}

/// Expand Segmented Palette Color LUT Data (PS3.3 C.7.9.2) into `entries` values.
pub fn expand_segmented(words: &[u16], entries: usize) -> std::result::Result<Vec<u16>, String> {
    let mut out: Vec<u16> = Vec::with_capacity(entries);
    expand_segments(words, entries, &mut out, 0)?;
    out.truncate(entries);
    Ok(out)
}

fn expand_segments(words: &[u16], entries: usize, out: &mut Vec<u16>, depth: u32) -> std::result::Result<(), String> {
    if depth > 2 {
        return Err("indirect segments nested too deeply".into());
    }
    let mut i = 0usize;
    while i + 1 < words.len() && out.len() < entries {
        let opcode = words[i];
        let length = usize::from(words[i + 1]);
        match opcode {
            0 => {
                let values = words.get(i + 2..i + 2 + length).ok_or("discrete segment overruns the data")?;
                out.extend_from_slice(values);
                i += 2 + length;
            }
            1 => {
                let end = f64::from(*words.get(i + 2).ok_or("linear segment without end value")?);
                let start = f64::from(*out.last().ok_or("linear segment without a previous value")?);
                for step in 1..=length {
                    let value = start + (end - start) * step as f64 / length as f64;
                    out.push(value.round().clamp(0.0, 65535.0) as u16);
                }
                i += 3;
            }
            2 => {
                let low = u32::from(*words.get(i + 2).ok_or("indirect segment truncated")?);
                let high = u32::from(*words.get(i + 3).ok_or("indirect segment truncated")?);
                let offset = ((high << 16) | low) as usize;
                // The offset is in bytes from the start of the segmented data; copy `length` segments.
                let mut position = offset / 2;
                for _ in 0..length {
                    let segment_end = segment_length(words, position).ok_or("indirect reference to a bad segment")?;
                    let segment = words.get(position..position + segment_end).ok_or("indirect segment overruns")?;
                    expand_segments(segment, entries, out, depth + 1)?;
                    position += segment_end;
                }
                i += 4;
            }
            other => return Err(format!("unknown segment opcode {other}")),
        }
        if out.len() > entries + 65536 {
            return Err("segments expand past the table".into());
        }
    }
    Ok(())
}

/// Words used by the segment starting at `position`.
fn segment_length(words: &[u16], position: usize) -> Option<usize> {
    let opcode = *words.get(position)?;
    let length = usize::from(*words.get(position + 1)?);
    match opcode {
        0 => Some(2 + length),
        1 => Some(3),
        2 => Some(4),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segmented_palette_expands_discrete_linear_and_indirect_segments() {
        // discrete [0, 10], linear to 50 over 4 steps, then copy the first (discrete) segment.
        let words = [0, 2, 0, 10, 1, 4, 50, 2, 1, 0, 0];
        let table = expand_segmented(&words, 100).expect("expands");
        assert_eq!(table, vec![0, 10, 20, 30, 40, 50, 0, 10]);
        assert_eq!(expand_segmented(&words, 4).expect("truncated"), vec![0, 10, 20, 30]);
        assert!(expand_segmented(&[7, 1, 0], 10).is_err(), "unknown opcode");
        assert!(expand_segmented(&[1, 3, 9], 10).is_err(), "linear segment first");
        assert!(expand_segmented(&[0, 9, 1], 10).is_err(), "overrun");
    }

    #[test]
    fn lut_lookup_clamps_to_the_table() {
        let lut = Lut { first_mapped: -2, bits: 8, data: vec![5, 6, 7] };
        assert_eq!((lut.lookup(-10), lut.lookup(-1), lut.lookup(100)), (5, 6, 7));
        assert_eq!(lut.max_output(), 255);
    }
}
