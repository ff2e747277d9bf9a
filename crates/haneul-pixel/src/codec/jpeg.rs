//! JPEG (ITU-T T.81) as DICOM uses it: baseline and extended sequential DCT
//! with Huffman coding at 8 and 12 bits (processes 1, 2 and 4), and lossless
//! with Huffman coding (processes 14 and 14 SV1), any predictor and point transform.
//!
//! Progressive, hierarchical and arithmetic-coded streams are refused.

use crate::error::{PixelError, Result};

const CODEC: &str = "JPEG";

fn err(detail: impl Into<String>) -> PixelError {
    PixelError::decode(CODEC, detail)
}

/// Natural (row-major) index of the k-th coefficient in zig-zag order.
const ZIGZAG: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21,
    28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54,
    47, 55, 62, 63,
];

/// What the stream says about its colour space.
#[derive(Debug, Clone, Default)]
pub struct ColorHints {
    /// The APP14 "Adobe" transform flag (0: none, 1: YCbCr, 2: YCCK).
    pub adobe_transform: Option<u8>,
    /// A JFIF APP0 segment is present (which implies YCbCr for 3 components).
    pub jfif: bool,
    /// The component identifiers of the frame header.
    pub component_ids: Vec<u8>,
}

impl ColorHints {
    /// Whether a 3-component lossy stream holds YCbCr, given the data set's
    /// Photometric Interpretation. The codestream wins where it is explicit
    /// ('R','G','B' component ids; a JFIF or Adobe segment under an RGB
    /// interpretation), otherwise the data set is trusted (as pydicom and GDCM do).
    pub fn is_ycbcr(&self, photometric_interpretation: &str) -> bool {
        if matches!(self.component_ids.as_slice(), b"RGB" | b"rgb") {
            return false;
        }
        if photometric_interpretation.starts_with("YBR") {
            return true;
        }
        if self.jfif {
            return true;
        }
        self.adobe_transform.is_some_and(|transform| transform != 0)
    }
}

/// A decoded JPEG image: samples interleaved by pixel, every component at full
/// resolution, exactly as coded (no colour conversion).
#[derive(Debug, Clone)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub components: usize,
    pub precision: u8,
    pub lossless: bool,
    /// Whether some component was stored subsampled (and has been upsampled).
    pub subsampled: bool,
    pub samples: Vec<u16>,
    pub hints: ColorHints,
}

#[derive(Clone)]
struct Huffman {
    /// 9-bit lookahead: (code length, value); length 0 means "longer code".
    fast: Vec<(u8, u8)>,
    maxcode: [i32; 18],
    valptr: [i32; 17],
    mincode: [i32; 17],
    values: Vec<u8>,
}

const FAST_BITS: u32 = 9;

impl Huffman {
    fn new(counts: &[u8; 16], values: Vec<u8>) -> Result<Huffman> {
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        if total != values.len() || total > 256 {
            return Err(err("bad Huffman table"));
        }
        let mut maxcode = [-1i32; 18];
        let mut valptr = [0i32; 17];
        let mut mincode = [0i32; 17];
        let mut fast = vec![(0u8, 0u8); 1 << FAST_BITS];
        let mut code = 0i32;
        let mut k = 0usize;
        for length in 1..=16usize {
            let count = usize::from(counts[length - 1]);
            valptr[length] = k as i32;
            mincode[length] = code;
            for _ in 0..count {
                if length as u32 <= FAST_BITS {
                    let shift = FAST_BITS - length as u32;
                    let first = (code as usize) << shift;
                    for entry in fast.iter_mut().skip(first).take(1 << shift) {
                        *entry = (length as u8, values[k]);
                    }
                }
                code += 1;
                k += 1;
            }
            if count > 0 {
                maxcode[length] = code - 1;
            }
            if code > (1 << length) {
                return Err(err("Huffman table codes overflow"));
            }
            code <<= 1;
        }
        maxcode[17] = i32::MAX;
        Ok(Huffman { fast, maxcode, valptr, mincode, values })
    }
}

/// Reads entropy-coded data: removes stuffed zero bytes and stops at markers,
/// after which it supplies zero bits.
struct BitReader<'a> {
    data: &'a [u8],
    position: usize,
    accumulator: u64,
    bits: u32,
    at_marker: bool,
    padding: usize,
}

const MAX_PADDING_BYTES: usize = 1 << 16;

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8], position: usize) -> Self {
        BitReader { data, position, accumulator: 0, bits: 0, at_marker: false, padding: 0 }
    }

    fn fill(&mut self) -> Result<()> {
        while self.bits <= 56 {
            let mut byte = 0u8;
            if !self.at_marker && self.position < self.data.len() {
                let b = self.data[self.position];
                if b == 0xFF {
                    match self.data.get(self.position + 1) {
                        Some(0) => {
                            byte = 0xFF;
                            self.position += 2;
                        }
                        _ => self.at_marker = true,
                    }
                } else {
                    byte = b;
                    self.position += 1;
                }
            } else {
                self.at_marker = true;
                self.padding += 1;
                if self.padding > MAX_PADDING_BYTES {
                    return Err(err("entropy-coded data ends early"));
                }
            }
            self.accumulator |= u64::from(byte) << (56 - self.bits);
            self.bits += 8;
        }
        Ok(())
    }

    fn peek(&mut self, n: u32) -> Result<u32> {
        if self.bits < n {
            self.fill()?;
        }
        Ok((self.accumulator >> (64 - n)) as u32)
    }

    fn consume(&mut self, n: u32) {
        self.accumulator <<= n;
        self.bits -= n;
    }

    fn bits(&mut self, n: u32) -> Result<u32> {
        if n == 0 {
            return Ok(0);
        }
        let value = self.peek(n)?;
        self.consume(n);
        Ok(value)
    }

    fn bit(&mut self) -> Result<u32> {
        self.bits(1)
    }

    fn decode(&mut self, table: &Huffman) -> Result<u8> {
        let look = self.peek(FAST_BITS)? as usize;
        let (length, value) = table.fast[look];
        if length > 0 {
            self.consume(u32::from(length));
            return Ok(value);
        }
        let mut code = self.bit()? as i32;
        let mut length = 1usize;
        while code > table.maxcode[length] {
            code = (code << 1) | self.bit()? as i32;
            length += 1;
            if length > 16 {
                return Err(err("invalid Huffman code"));
            }
        }
        let index = table.valptr[length] + code - table.mincode[length];
        table.values.get(index as usize).copied().ok_or_else(|| err("invalid Huffman code"))
    }

    /// A `size`-bit magnitude category value, sign-extended (F.2.2.1 EXTEND).
    fn receive_extend(&mut self, size: u8) -> Result<i32> {
        if size == 0 {
            return Ok(0);
        }
        if size > 16 {
            return Err(err("coefficient category too large"));
        }
        let value = self.bits(u32::from(size))? as i32;
        Ok(if value < (1 << (size - 1)) { value - (1 << size) + 1 } else { value })
    }

    /// Skip to after the next RSTn marker, resetting the bit buffer.
    fn restart(&mut self) -> Result<()> {
        self.accumulator = 0;
        self.bits = 0;
        self.at_marker = false;
        let mut position = self.position;
        while position + 1 < self.data.len() {
            if self.data[position] == 0xFF && (0xD0..=0xD7).contains(&self.data[position + 1]) {
                self.position = position + 2;
                return Ok(());
            }
            if self.data[position] == 0xFF && !matches!(self.data[position + 1], 0x00 | 0xFF) {
                return Err(err("expected a restart marker"));
            }
            position += 1;
        }
        Err(err("expected a restart marker"))
    }
}

#[derive(Clone)]
struct Component {
    id: u8,
    h: usize,
    v: usize,
    tq: usize,
    width: usize,
    height: usize,
    /// Plane stride and height, padded to whole MCUs (DCT) or equal to the size (lossless).
    stride: usize,
    plane_height: usize,
    plane: Vec<u16>,
}

struct Frame {
    width: usize,
    height: usize,
    precision: u8,
    lossless: bool,
    components: Vec<Component>,
    hmax: usize,
    vmax: usize,
}

/// Decode a JPEG stream whose frame must measure `expected_width` × `expected_height`.
pub fn decode(data: &[u8], expected_width: usize, expected_height: usize) -> Result<Image> {
    if data.len() < 4 || data[0] != 0xFF || data[1] != 0xD8 {
        return Err(err("no SOI marker"));
    }
    let mut position = 2usize;
    let mut dc_tables: [Option<Huffman>; 4] = [None, None, None, None];
    let mut ac_tables: [Option<Huffman>; 4] = [None, None, None, None];
    let mut quant: [[u16; 64]; 4] = [[1; 64]; 4];
    let mut restart_interval = 0usize;
    let mut frame: Option<Frame> = None;
    let mut hints = ColorHints::default();
    let mut scans = 0usize;
    loop {
        // Find the next marker, skipping fill bytes (and garbage, leniently).
        while position < data.len() && data[position] != 0xFF {
            position += 1;
        }
        while position < data.len() && data[position] == 0xFF {
            position += 1;
        }
        let Some(&marker) = data.get(position) else {
            break;
        };
        position += 1;
        match marker {
            0xD8 | 0x01 | 0xD0..=0xD7 => continue,
            0xD9 => break,
            _ => {}
        }
        let length = match data.get(position..position + 2) {
            Some(b) => usize::from(u16::from_be_bytes([b[0], b[1]])),
            None => return Err(err("segment header truncated")),
        };
        if length < 2 || position + length > data.len() {
            return Err(err(format!("segment {marker:02X} overruns the stream")));
        }
        let segment = &data[position + 2..position + length];
        position += length;
        match marker {
            0xC0 | 0xC1 | 0xC3 => {
                if frame.is_some() {
                    return Err(err("more than one frame header"));
                }
                let parsed = parse_frame(segment, marker == 0xC3, expected_width, expected_height)?;
                hints.component_ids = parsed.components.iter().map(|c| c.id).collect();
                frame = Some(parsed);
            }
            0xC2 => return Err(PixelError::Unsupported("progressive JPEG".into())),
            0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                return Err(PixelError::Unsupported(format!("JPEG process of SOF marker FF{marker:02X}")));
            }
            0xC4 => parse_huffman(segment, &mut dc_tables, &mut ac_tables)?,
            0xDB => parse_quant(segment, &mut quant)?,
            0xDD => {
                let b = segment.get(..2).ok_or_else(|| err("DRI segment truncated"))?;
                restart_interval = usize::from(u16::from_be_bytes([b[0], b[1]]));
            }
            0xE0 => hints.jfif |= segment.starts_with(b"JFIF\0"),
            0xEE if segment.len() >= 12 && segment.starts_with(b"Adobe") => hints.adobe_transform = Some(segment[11]),
            0xDA => {
                let frame = frame.as_mut().ok_or_else(|| err("scan before frame header"))?;
                let scan = parse_scan(segment, frame)?;
                let mut reader = BitReader::new(data, position);
                if frame.lossless {
                    decode_lossless_scan(&mut reader, frame, &scan, &dc_tables, restart_interval)?;
                } else {
                    decode_dct_scan(&mut reader, frame, &scan, &dc_tables, &ac_tables, &quant, restart_interval)?;
                }
                scans += 1;
                position = reader.position;
            }
            _ => {}
        }
    }
    let frame = frame.ok_or_else(|| err("no frame header"))?;
    if scans == 0 {
        return Err(err("no scan"));
    }
    assemble(frame, hints)
}

fn parse_frame(segment: &[u8], lossless: bool, expected_width: usize, expected_height: usize) -> Result<Frame> {
    if segment.len() < 6 {
        return Err(err("frame header truncated"));
    }
    let precision = segment[0];
    let height = usize::from(u16::from_be_bytes([segment[1], segment[2]]));
    let width = usize::from(u16::from_be_bytes([segment[3], segment[4]]));
    let count = usize::from(segment[5]);
    if lossless {
        if !(2..=16).contains(&precision) {
            return Err(err(format!("lossless precision {precision}")));
        }
    } else if precision != 8 && precision != 12 {
        return Err(err(format!("DCT precision {precision}")));
    }
    if width != expected_width || height != expected_height {
        return Err(err(format!("frame is {width}x{height}, the data set says {expected_width}x{expected_height}")));
    }
    if !(1..=4).contains(&count) || segment.len() < 6 + 3 * count {
        return Err(err("bad component count"));
    }
    let mut components = Vec::with_capacity(count);
    for i in 0..count {
        let c = &segment[6 + 3 * i..9 + 3 * i];
        let (h, v) = (usize::from(c[1] >> 4), usize::from(c[1] & 15));
        if !(1..=4).contains(&h) || !(1..=4).contains(&v) || c[2] > 3 {
            return Err(err("bad component sampling or table"));
        }
        components.push(Component {
            id: c[0],
            h,
            v,
            tq: usize::from(c[2]),
            width: 0,
            height: 0,
            stride: 0,
            plane_height: 0,
            plane: Vec::new(),
        });
    }
    let hmax = components.iter().map(|c| c.h).max().unwrap_or(1);
    let vmax = components.iter().map(|c| c.v).max().unwrap_or(1);
    if lossless && (hmax != 1 || vmax != 1) {
        return Err(PixelError::Unsupported("subsampled lossless JPEG".into()));
    }
    let mcus_x = width.div_ceil(8 * hmax);
    let mcus_y = height.div_ceil(8 * vmax);
    for c in &mut components {
        if hmax % c.h != 0 || vmax % c.v != 0 {
            return Err(PixelError::Unsupported("non-integral JPEG sampling factors".into()));
        }
        c.width = (width * c.h).div_ceil(hmax);
        c.height = (height * c.v).div_ceil(vmax);
        if lossless {
            c.stride = c.width;
            c.plane_height = c.height;
        } else {
            c.stride = mcus_x * c.h * 8;
            c.plane_height = mcus_y * c.v * 8;
        }
        c.plane = vec![0; c.stride * c.plane_height];
    }
    Ok(Frame { width, height, precision, lossless, components, hmax, vmax })
}

fn parse_huffman(mut segment: &[u8], dc: &mut [Option<Huffman>; 4], ac: &mut [Option<Huffman>; 4]) -> Result<()> {
    while !segment.is_empty() {
        if segment.len() < 17 {
            return Err(err("Huffman table truncated"));
        }
        let class = segment[0] >> 4;
        let id = usize::from(segment[0] & 15);
        if class > 1 || id > 3 {
            return Err(err("bad Huffman table class or id"));
        }
        let mut counts = [0u8; 16];
        counts.copy_from_slice(&segment[1..17]);
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        let values = segment.get(17..17 + total).ok_or_else(|| err("Huffman table truncated"))?.to_vec();
        let table = Some(Huffman::new(&counts, values)?);
        if class == 0 {
            dc[id] = table;
        } else {
            ac[id] = table;
        }
        segment = &segment[17 + total..];
    }
    Ok(())
}

fn parse_quant(mut segment: &[u8], quant: &mut [[u16; 64]; 4]) -> Result<()> {
    while !segment.is_empty() {
        let precision = segment[0] >> 4;
        let id = usize::from(segment[0] & 15);
        if id > 3 || precision > 1 {
            return Err(err("bad quantization table"));
        }
        let size = if precision == 0 { 64 } else { 128 };
        let values = segment.get(1..1 + size).ok_or_else(|| err("quantization table truncated"))?;
        for k in 0..64 {
            quant[id][k] = if precision == 0 {
                u16::from(values[k])
            } else {
                u16::from_be_bytes([values[2 * k], values[2 * k + 1]])
            };
        }
        segment = &segment[1 + size..];
    }
    Ok(())
}

struct Scan {
    /// (index into the frame's components, DC table, AC table)
    components: Vec<(usize, usize, usize)>,
    /// Ss: the predictor for lossless scans (spectral start for DCT scans, not checked).
    ss: u8,
    /// Al: the point transform of lossless scans.
    al: u8,
}

fn parse_scan(segment: &[u8], frame: &Frame) -> Result<Scan> {
    let count = usize::from(*segment.first().ok_or_else(|| err("scan header truncated"))?);
    if !(1..=4).contains(&count) || segment.len() < 4 + 2 * count {
        return Err(err("bad scan header"));
    }
    let mut components = Vec::with_capacity(count);
    for i in 0..count {
        let id = segment[1 + 2 * i];
        let tables = segment[2 + 2 * i];
        let index =
            frame.components.iter().position(|c| c.id == id).ok_or_else(|| err("scan names an unknown component"))?;
        let (dc, ac) = (usize::from(tables >> 4), usize::from(tables & 15));
        if dc > 3 || ac > 3 {
            return Err(err("bad scan table selector"));
        }
        components.push((index, dc, ac));
    }
    let tail = &segment[1 + 2 * count..];
    Ok(Scan { components, ss: tail[0], al: tail[2] & 15 })
}

fn table<'t>(tables: &'t [Option<Huffman>; 4], id: usize, kind: &str) -> Result<&'t Huffman> {
    tables.get(id).and_then(Option::as_ref).ok_or_else(|| err(format!("missing {kind} Huffman table {id}")))
}

#[allow(clippy::too_many_arguments)]
fn decode_dct_scan(
    reader: &mut BitReader<'_>,
    frame: &mut Frame,
    scan: &Scan,
    dc_tables: &[Option<Huffman>; 4],
    ac_tables: &[Option<Huffman>; 4],
    quant: &[[u16; 64]; 4],
    restart_interval: usize,
) -> Result<()> {
    // Ss, Se, Ah and Al are fixed for sequential scans; like libjpeg, tolerate
    // encoders that write other values.
    let mut tables = Vec::with_capacity(scan.components.len());
    for &(index, dc, ac) in &scan.components {
        let component = &frame.components[index];
        tables.push((index, table(dc_tables, dc, "DC")?, table(ac_tables, ac, "AC")?, &quant[component.tq]));
    }
    let precision = frame.precision;
    let mut predictors = vec![0i32; scan.components.len()];
    let mut mcu_count = 0usize;
    let single = scan.components.len() == 1;
    let (mcus_x, mcus_y) = if single {
        let c = &frame.components[scan.components[0].0];
        (c.width.div_ceil(8), c.height.div_ceil(8))
    } else {
        (frame.width.div_ceil(8 * frame.hmax), frame.height.div_ceil(8 * frame.vmax))
    };
    let mut coefficients = [0i32; 64];
    for my in 0..mcus_y {
        for mx in 0..mcus_x {
            if restart_interval > 0 && mcu_count > 0 && mcu_count.is_multiple_of(restart_interval) {
                reader.restart()?;
                predictors.iter_mut().for_each(|p| *p = 0);
            }
            mcu_count += 1;
            for (slot, &(index, dc, ac, q)) in tables.iter().enumerate() {
                let (h, v) = if single { (1, 1) } else { (frame.components[index].h, frame.components[index].v) };
                for by in 0..v {
                    for bx in 0..h {
                        decode_block(reader, dc, ac, q, &mut predictors[slot], &mut coefficients)?;
                        let component = &mut frame.components[index];
                        let x = (mx * h + bx) * 8;
                        let y = (my * v + by) * 8;
                        if x + 8 <= component.stride && y + 8 <= component.plane_height {
                            idct_block(
                                &coefficients,
                                &mut component.plane,
                                y * component.stride + x,
                                component.stride,
                                precision,
                            );
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

fn decode_block(
    reader: &mut BitReader<'_>,
    dc: &Huffman,
    ac: &Huffman,
    q: &[u16; 64],
    predictor: &mut i32,
    out: &mut [i32; 64],
) -> Result<()> {
    *out = [0; 64];
    let size = reader.decode(dc)?;
    let diff = reader.receive_extend(size)?;
    *predictor = predictor.wrapping_add(diff);
    out[0] = predictor.wrapping_mul(i32::from(q[0]));
    let mut k = 1usize;
    while k < 64 {
        let rs = reader.decode(ac)?;
        let (run, size) = (usize::from(rs >> 4), rs & 15);
        if size == 0 {
            if run == 15 {
                k += 16;
                continue;
            }
            break;
        }
        k += run;
        if k > 63 {
            return Err(err("AC coefficients run past the block"));
        }
        out[ZIGZAG[k]] = reader.receive_extend(size)?.wrapping_mul(i32::from(q[k]));
        k += 1;
    }
    Ok(())
}

fn idct_table() -> &'static [[f32; 8]; 8] {
    static TABLE: std::sync::OnceLock<[[f32; 8]; 8]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = [[0f32; 8]; 8];
        for (x, row) in table.iter_mut().enumerate() {
            for (u, value) in row.iter_mut().enumerate() {
                let c = if u == 0 { std::f64::consts::FRAC_1_SQRT_2 } else { 1.0 };
                *value = (c / 2.0 * ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / 16.0).cos()) as f32;
            }
        }
        table
    })
}

/// Separable floating-point inverse DCT, level shift and clamp.
fn idct_block(coefficients: &[i32; 64], plane: &mut [u16], offset: usize, stride: usize, precision: u8) {
    let table = idct_table();
    let mut temp = [0f32; 64];
    // Rows: for each frequency row v, transform along u.
    for v in 0..8 {
        let row = &coefficients[v * 8..v * 8 + 8];
        if row[1..].iter().all(|&c| c == 0) {
            let dc = row[0] as f32 * table[0][0];
            temp[v * 8..v * 8 + 8].iter_mut().for_each(|t| *t = dc);
            continue;
        }
        for x in 0..8 {
            let mut sum = 0f32;
            for u in 0..8 {
                sum += table[x][u] * row[u] as f32;
            }
            temp[v * 8 + x] = sum;
        }
    }
    let shift = (1i32 << (precision - 1)) as f32;
    let max = ((1i32 << precision) - 1) as f32;
    for x in 0..8 {
        for y in 0..8 {
            let mut sum = 0f32;
            for v in 0..8 {
                sum += table[y][v] * temp[v * 8 + x];
            }
            let value = (sum + shift).round().clamp(0.0, max);
            plane[offset + y * stride + x] = value as u16;
        }
    }
}

fn decode_lossless_scan(
    reader: &mut BitReader<'_>,
    frame: &mut Frame,
    scan: &Scan,
    dc_tables: &[Option<Huffman>; 4],
    restart_interval: usize,
) -> Result<()> {
    let predictor = scan.ss;
    if !((1..=7).contains(&predictor) || (predictor == 0 && scan.components.len() == 1)) {
        return Err(err(format!("lossless predictor {predictor}")));
    }
    let point_transform = u32::from(scan.al);
    if point_transform >= u32::from(frame.precision) {
        return Err(err("point transform exceeds the precision"));
    }
    let mut tables = Vec::with_capacity(scan.components.len());
    for &(index, dc, _) in &scan.components {
        tables.push((index, table(dc_tables, dc, "DC")?));
    }
    let (width, height) = (frame.width, frame.height);
    let default = 1i32 << (u32::from(frame.precision) - point_transform - 1);
    let mask = 0xFFFFi32;
    let mut planes: Vec<Vec<u16>> = tables.iter().map(|_| vec![0u16; width * height]).collect();
    let mut mcu_count = 0usize;
    // The row at which the current restart interval began: it is predicted like a first line.
    let mut first_row = 0usize;
    let mut reset_next = true;
    for y in 0..height {
        for x in 0..width {
            if restart_interval > 0 && mcu_count > 0 && mcu_count.is_multiple_of(restart_interval) {
                reader.restart()?;
                first_row = y;
                reset_next = true;
            }
            mcu_count += 1;
            for (slot, &(_, huffman)) in tables.iter().enumerate() {
                let plane = &mut planes[slot];
                let at = |xx: usize, yy: usize| i32::from(plane[yy * width + xx]);
                let prediction = if reset_next {
                    default
                } else if y == first_row {
                    if x == 0 {
                        at(0, y.saturating_sub(1))
                    } else {
                        at(x - 1, y)
                    }
                } else if x == 0 {
                    at(0, y - 1)
                } else {
                    let (ra, rb, rc) = (at(x - 1, y), at(x, y - 1), at(x - 1, y - 1));
                    match predictor {
                        1 => ra,
                        2 => rb,
                        3 => rc,
                        4 => ra + rb - rc,
                        5 => ra + ((rb - rc) >> 1),
                        6 => rb + ((ra - rc) >> 1),
                        7 => (ra + rb) >> 1,
                        _ => 0,
                    }
                };
                let size = reader.decode(huffman)?;
                let diff = match size {
                    16 => 32768,
                    s => reader.receive_extend(s)?,
                };
                plane[y * width + x] = ((prediction + diff) & mask) as u16;
            }
            reset_next = false;
        }
    }
    for (slot, &(index, _)) in tables.iter().enumerate() {
        let component = &mut frame.components[index];
        for (out, &value) in component.plane.iter_mut().zip(planes[slot].iter()) {
            *out = ((u32::from(value) << point_transform) & 0xFFFF) as u16;
        }
    }
    Ok(())
}

/// Upsample every component to full size and interleave.
fn assemble(frame: Frame, hints: ColorHints) -> Result<Image> {
    let (width, height) = (frame.width, frame.height);
    let count = frame.components.len();
    let mut samples = vec![0u16; width * height * count];
    let mut subsampled = false;
    for (c, component) in frame.components.iter().enumerate() {
        let fx = frame.hmax / component.h;
        let fy = frame.vmax / component.v;
        let full = if fx == 1 && fy == 1 {
            None
        } else {
            subsampled = true;
            Some(upsample(component, fx, fy, width, height))
        };
        for y in 0..height {
            for x in 0..width {
                let value = match &full {
                    Some(plane) => plane[y * width + x],
                    None => component.plane[y * component.stride + x],
                };
                samples[(y * width + x) * count + c] = value;
            }
        }
    }
    Ok(Image {
        width,
        height,
        components: count,
        precision: frame.precision,
        lossless: frame.lossless,
        subsampled,
        samples,
        hints,
    })
}

/// libjpeg's "fancy" (triangle) upsampling for 2×1 and 2×2, replication otherwise.
fn upsample(component: &Component, fx: usize, fy: usize, width: usize, height: usize) -> Vec<u16> {
    let (cw, ch) = (component.width.max(1), component.height.max(1));
    let get = |x: usize, y: usize| i32::from(component.plane[y.min(ch - 1) * component.stride + x.min(cw - 1)]);
    let mut out = vec![0u16; width * height];
    if fx == 2 && (fy == 1 || fy == 2) && cw >= 2 {
        for y in 0..height {
            // Vertical weights: the nearer input row 3, the farther 1 (2×2); 4 and 0 (2×1).
            let sy = y / fy;
            let (near, far) = if fy == 1 {
                (sy, sy)
            } else if y % 2 == 0 {
                (sy, sy.saturating_sub(1))
            } else {
                (sy, (sy + 1).min(ch - 1))
            };
            let column = |x: usize| -> i32 {
                if fy == 1 {
                    get(x, near) * 4
                } else {
                    get(x, near) * 3 + get(x, far)
                }
            };
            for sx in 0..cw {
                let this = column(sx);
                let left = if sx == 0 { this } else { column(sx - 1) };
                let right = if sx + 1 >= cw { this } else { column(sx + 1) };
                // In sixteenths: `this` carries weight 3, the horizontal neighbour 1.
                let (a, b) = if fy == 1 {
                    ((this * 3 + left + 4) >> 4, (this * 3 + right + 8) >> 4)
                } else {
                    ((this * 3 + left + 8) >> 4, (this * 3 + right + 7) >> 4)
                };
                for (dx, value) in [(0usize, a), (1, b)] {
                    let x = sx * 2 + dx;
                    if x < width {
                        out[y * width + x] = value.max(0) as u16;
                    }
                }
            }
        }
        return out;
    }
    for y in 0..height {
        for x in 0..width {
            out[y * width + x] = get(x / fx, y / fy) as u16;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_garbage() {
        assert!(decode(b"not a jpeg", 1, 1).is_err());
        assert!(decode(&[0xFF, 0xD8, 0xFF, 0xD9], 1, 1).is_err());
    }

    /// A smooth colour test image, encoded with restart intervals and 4:2:0 chroma.
    #[test]
    fn restart_intervals_and_subsampling_round_trip() {
        let (w, h) = (61usize, 45usize);
        let mut rgb = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                rgb.extend_from_slice(&[(x * 4) as u8, (y * 5) as u8, ((x + y) * 2) as u8]);
            }
        }
        for (restart, sampling) in [
            (1u16, jpeg_encoder::SamplingFactor::F_2_2),
            (3, jpeg_encoder::SamplingFactor::F_2_1),
            (0, jpeg_encoder::SamplingFactor::F_1_1),
        ] {
            let mut out = Vec::new();
            let mut encoder = jpeg_encoder::Encoder::new(&mut out, 95);
            encoder.set_restart_interval(restart);
            encoder.set_sampling_factor(sampling);
            encoder.encode(&rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb).expect("encode");
            let image = decode(&out, w, h).expect("decode");
            assert_eq!((image.components, image.precision), (3, 8));
            assert!(image.hints.is_ycbcr("RGB"), "JFIF means YCbCr");
            let mut samples = image.samples.clone();
            crate::decode::ycbcr_to_rgb(&mut samples, 8);
            let total: u64 = samples.iter().zip(&rgb).map(|(&a, &b)| u64::from(a.abs_diff(u16::from(b)))).sum();
            let mean = total as f64 / rgb.len() as f64;
            assert!(mean < 3.0, "restart {restart}: mean difference {mean}");
        }
        // A progressive stream is refused cleanly.
        let mut out = Vec::new();
        let mut encoder = jpeg_encoder::Encoder::new(&mut out, 90);
        encoder.set_progressive(true);
        encoder.encode(&rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb).expect("encode");
        assert!(matches!(decode(&out, w, h), Err(PixelError::Unsupported(_))));
    }

    #[test]
    fn idct_of_dc_only_block_is_flat() {
        let mut coefficients = [0i32; 64];
        coefficients[0] = 80; // DC 80 → +10 after the 1/8 scaling
        let mut plane = vec![0u16; 64];
        idct_block(&coefficients, &mut plane, 0, 8, 8);
        assert!(plane.iter().all(|&v| v == 138), "{plane:?}");
    }
}
