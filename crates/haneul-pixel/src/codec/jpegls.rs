//! JPEG-LS (ITU-T T.87) decoding, lossless and near-lossless, 2 to 16 bits,
//! one to four components, every interleave mode (sample interleaving for
//! three components), following the behaviour of CharLS, the reference that
//! DICOM toolkits use.
//!
//! Not supported: mapping tables (LSE types 2 and 3), restart intervals and
//! the HP colour transforms.

use crate::error::{PixelError, Result};

const CODEC: &str = "JPEG-LS";

fn err(detail: impl Into<String>) -> PixelError {
    PixelError::decode(CODEC, detail)
}

/// A decoded JPEG-LS image, samples interleaved by pixel.
#[derive(Debug, Clone)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub components: usize,
    pub precision: u8,
    pub samples: Vec<u16>,
}

const J: [u32; 32] =
    [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 9, 10, 11, 12, 13, 14, 15];

#[derive(Clone, Copy)]
struct Context {
    a: i32,
    b: i32,
    c: i32,
    n: i32,
}

#[derive(Clone, Copy)]
struct RunContext {
    a: i32,
    n: i32,
    nn: i32,
}

#[derive(Clone, Copy, Default)]
struct Preset {
    maxval: i32,
    t1: i32,
    t2: i32,
    t3: i32,
    reset: i32,
}

struct Coder {
    maxval: i32,
    near: i32,
    t1: i32,
    t2: i32,
    t3: i32,
    reset: i32,
    range: i32,
    qbpp: i32,
    limit: i32,
    contexts: Vec<Context>,
    runs: [RunContext; 2],
}

fn ceil_log2(value: i32) -> i32 {
    let mut bits = 0;
    while (1i64 << bits) < i64::from(value) {
        bits += 1;
    }
    bits
}

impl Coder {
    fn new(precision: u8, near: i32, preset: Preset) -> Result<Coder> {
        let maxval = if preset.maxval > 0 { preset.maxval } else { (1i32 << precision) - 1 };
        if near < 0 || near > (maxval / 2).min(255) {
            return Err(err(format!("NEAR {near} out of range")));
        }
        let (d1, d2, d3) = default_thresholds(maxval, near);
        let t1 = if preset.t1 > 0 { preset.t1 } else { d1 };
        let t2 = if preset.t2 > 0 { preset.t2 } else { d2 };
        let t3 = if preset.t3 > 0 { preset.t3 } else { d3 };
        if !(near < t1 && t1 <= t2 && t2 <= t3 && t3 <= maxval.max(near + 1)) {
            return Err(err("inconsistent thresholds"));
        }
        let reset = if preset.reset > 0 { preset.reset } else { 64 };
        if reset < 3 {
            return Err(err("RESET below 3"));
        }
        let range = (maxval + 2 * near) / (2 * near + 1) + 1;
        let qbpp = ceil_log2(range);
        let bpp = ceil_log2(maxval + 1).max(2);
        let limit = 2 * (bpp + bpp.max(8));
        let a = ((range + 32) / 64).max(2);
        Ok(Coder {
            maxval,
            near,
            t1,
            t2,
            t3,
            reset,
            range,
            qbpp,
            limit,
            contexts: vec![Context { a, b: 0, c: 0, n: 1 }; 365],
            runs: [RunContext { a, n: 1, nn: 0 }; 2],
        })
    }

    fn quantize(&self, d: i32) -> i32 {
        if d <= -self.t3 {
            -4
        } else if d <= -self.t2 {
            -3
        } else if d <= -self.t1 {
            -2
        } else if d < -self.near {
            -1
        } else if d <= self.near {
            0
        } else if d < self.t1 {
            1
        } else if d < self.t2 {
            2
        } else if d < self.t3 {
            3
        } else {
            4
        }
    }

    fn context_id(&self, ra: i32, rb: i32, rc: i32, rd: i32) -> i32 {
        (self.quantize(rd - rb) * 9 + self.quantize(rb - rc)) * 9 + self.quantize(rc - ra)
    }

    fn reconstruct(&self, predicted: i32, error: i32) -> i32 {
        let mut value = predicted + error * (2 * self.near + 1);
        if value < -self.near {
            value += self.range * (2 * self.near + 1);
        } else if value > self.maxval + self.near {
            value -= self.range * (2 * self.near + 1);
        }
        value.clamp(0, self.maxval)
    }

    fn decode_value(&self, reader: &mut Reader<'_>, k: i32, limit: i32) -> Result<i32> {
        let high = reader.high_bits(limit)?;
        if high >= limit - (self.qbpp + 1) {
            return Ok(reader.bits(self.qbpp as u32)? as i32 + 1);
        }
        if k == 0 {
            return Ok(high);
        }
        if k > 24 {
            return Err(err("Golomb parameter out of range"));
        }
        Ok((high << k) + reader.bits(k as u32)? as i32)
    }

    fn decode_regular(&mut self, reader: &mut Reader<'_>, qs: i32, predicted: i32) -> Result<i32> {
        let sign = if qs < 0 { -1 } else { 1 };
        let index = qs.unsigned_abs() as usize;
        let context = self.contexts[index];
        let mut k = 0;
        let mut n_test = context.n;
        while n_test < context.a && k < 24 {
            n_test <<= 1;
            k += 1;
        }
        let predicted = (predicted + sign * context.c).clamp(0, self.maxval);
        let mapped = self.decode_value(reader, k, self.limit)?;
        let mut error = (mapped >> 1) ^ -(mapped & 1);
        if k == 0 && self.near == 0 && 2 * context.b + context.n - 1 < 0 {
            error ^= -1;
        }
        if error.abs() > 65535 {
            return Err(err("prediction error out of range"));
        }
        self.update(index, error);
        Ok(self.reconstruct(predicted, error * sign))
    }

    fn update(&mut self, index: usize, error: i32) {
        let near = self.near;
        let reset = self.reset;
        let context = &mut self.contexts[index];
        context.a += error.abs();
        context.b += error * (2 * near + 1);
        if context.n == reset {
            context.a >>= 1;
            context.b >>= 1;
            context.n >>= 1;
        }
        context.n += 1;
        if context.b + context.n <= 0 {
            context.b += context.n;
            if context.b <= -context.n {
                context.b = -context.n + 1;
            }
            if context.c > -128 {
                context.c -= 1;
            }
        } else if context.b > 0 {
            context.b -= context.n;
            if context.b > 0 {
                context.b = 0;
            }
            if context.c < 127 {
                context.c += 1;
            }
        }
    }

    fn decode_ri_error(&mut self, reader: &mut Reader<'_>, which: usize, run_index: usize) -> Result<i32> {
        let ri_type = which as i32;
        let context = self.runs[which];
        let temp = context.a + (context.n >> 1) * ri_type;
        let mut k = 0;
        let mut n_test = context.n;
        while n_test < temp && k < 24 {
            n_test <<= 1;
            k += 1;
        }
        let mapped = self.decode_value(reader, k, self.limit - J[run_index] as i32 - 1)?;
        let temp = mapped + ri_type;
        let map = temp & 1 == 1;
        let magnitude = (temp + i32::from(map)) / 2;
        let error = if (k != 0 || 2 * context.nn >= context.n) == map { -magnitude } else { magnitude };
        let reset = self.reset;
        let context = &mut self.runs[which];
        if error < 0 {
            context.nn += 1;
        }
        context.a += (mapped + 1 - ri_type) >> 1;
        if context.n == reset {
            context.a >>= 1;
            context.n >>= 1;
            context.nn >>= 1;
        }
        context.n += 1;
        Ok(error)
    }

    /// Length of a run of `remaining` pixels at most (T.87 A.7.1).
    fn decode_run_length(&self, reader: &mut Reader<'_>, remaining: usize, run_index: &mut usize) -> Result<usize> {
        let mut index = 0usize;
        while reader.bits(1)? == 1 {
            let full = 1usize << J[*run_index];
            let count = full.min(remaining - index);
            index += count;
            if count == full {
                *run_index = (*run_index + 1).min(31);
            }
            if index == remaining {
                break;
            }
        }
        if index != remaining && J[*run_index] > 0 {
            index += reader.bits(J[*run_index])? as usize;
        }
        if index > remaining {
            return Err(err("run past the end of the line"));
        }
        Ok(index)
    }
}

fn default_thresholds(maxval: i32, near: i32) -> (i32, i32, i32) {
    let clamp = |value: i32, low: i32| if value > maxval || value < low { low } else { value };
    if maxval >= 128 {
        let factor = (maxval.min(4095) + 128) / 256;
        let t1 = clamp(factor + 2 + 3 * near, near + 1);
        let t2 = clamp(factor * (7 - 3) + 3 + 5 * near, t1);
        let t3 = clamp(factor * (21 - 4) + 4 + 7 * near, t2);
        (t1, t2, t3)
    } else {
        let factor = 256 / (maxval + 1);
        let t1 = clamp((3 / factor + 3 * near).max(2), near + 1);
        let t2 = clamp((7 / factor + 5 * near).max(3), t1);
        let t3 = clamp((21 / factor + 7 * near).max(4), t2);
        (t1, t2, t3)
    }
}

/// JPEG-LS entropy-coded data: after an 0xFF byte the next byte carries 7
/// bits; an 0xFF followed by a byte with its high bit set is a marker.
struct Reader<'a> {
    data: &'a [u8],
    position: usize,
    accumulator: u64,
    bits: u32,
    after_ff: bool,
    at_marker: bool,
    padding: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8], position: usize) -> Self {
        Reader { data, position, accumulator: 0, bits: 0, after_ff: false, at_marker: false, padding: 0 }
    }

    fn push(&mut self, value: u64, count: u32) {
        self.accumulator |= value << (64 - self.bits - count);
        self.bits += count;
    }

    fn fill(&mut self) -> Result<()> {
        while self.bits <= 56 {
            if self.at_marker || self.position >= self.data.len() {
                self.at_marker = true;
                self.push(0, 8);
                self.padding += 1;
                if self.padding > 1 << 16 {
                    return Err(err("entropy-coded data ends early"));
                }
                continue;
            }
            let byte = self.data[self.position];
            if byte == 0xFF && self.data.get(self.position + 1).is_none_or(|&next| next >= 0x80) {
                self.at_marker = true;
                continue;
            }
            if self.after_ff {
                self.push(u64::from(byte & 0x7F), 7);
            } else {
                self.push(u64::from(byte), 8);
            }
            self.after_ff = byte == 0xFF;
            self.position += 1;
        }
        Ok(())
    }

    fn bits(&mut self, count: u32) -> Result<u32> {
        if count == 0 {
            return Ok(0);
        }
        if self.bits < count {
            self.fill()?;
        }
        let value = (self.accumulator >> (64 - count)) as u32;
        self.accumulator <<= count;
        self.bits -= count;
        Ok(value)
    }

    /// Count zero bits up to the next one bit (consumed), at most `limit`.
    fn high_bits(&mut self, limit: i32) -> Result<i32> {
        let mut count = 0;
        loop {
            if self.bits == 0 {
                self.fill()?;
            }
            let zeros = (self.accumulator.leading_zeros()).min(self.bits);
            if zeros < self.bits {
                self.accumulator <<= zeros + 1;
                self.bits -= zeros + 1;
                return Ok(count + zeros as i32);
            }
            count += zeros as i32;
            self.accumulator = 0;
            self.bits = 0;
            if count > limit {
                return Err(err("invalid Golomb code"));
            }
        }
    }
}

struct Frame {
    width: usize,
    height: usize,
    precision: u8,
    ids: Vec<u8>,
}

/// Decode a JPEG-LS stream whose frame must measure `expected_width` × `expected_height`.
pub fn decode(data: &[u8], expected_width: usize, expected_height: usize) -> Result<Image> {
    if data.len() < 4 || data[0] != 0xFF || data[1] != 0xD8 {
        return Err(err("no SOI marker"));
    }
    let mut position = 2usize;
    let mut frame: Option<Frame> = None;
    let mut preset = Preset::default();
    let mut planes: Vec<Vec<u16>> = Vec::new();
    let mut decoded = Vec::<bool>::new();
    loop {
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
            0xF7 => {
                if frame.is_some() {
                    return Err(err("more than one frame header"));
                }
                if segment.len() < 6 {
                    return Err(err("frame header truncated"));
                }
                let precision = segment[0];
                let height = usize::from(u16::from_be_bytes([segment[1], segment[2]]));
                let width = usize::from(u16::from_be_bytes([segment[3], segment[4]]));
                let count = usize::from(segment[5]);
                if !(2..=16).contains(&precision) {
                    return Err(err(format!("precision {precision}")));
                }
                if width != expected_width || height != expected_height {
                    return Err(err(format!(
                        "frame is {width}x{height}, the data set says {expected_width}x{expected_height}"
                    )));
                }
                if !(1..=4).contains(&count) || segment.len() < 6 + 3 * count {
                    return Err(err("bad component count"));
                }
                let ids: Vec<u8> = (0..count).map(|i| segment[6 + 3 * i]).collect();
                if (0..count).any(|i| segment[7 + 3 * i] != 0x11) {
                    return Err(PixelError::Unsupported("subsampled JPEG-LS".into()));
                }
                planes = vec![vec![0u16; width * height]; count];
                decoded = vec![false; count];
                frame = Some(Frame { width, height, precision, ids });
            }
            0xF8 => {
                let id = *segment.first().ok_or_else(|| err("LSE segment truncated"))?;
                match id {
                    1 => {
                        if segment.len() < 11 {
                            return Err(err("LSE segment truncated"));
                        }
                        let word = |i: usize| i32::from(u16::from_be_bytes([segment[i], segment[i + 1]]));
                        preset = Preset { maxval: word(1), t1: word(3), t2: word(5), t3: word(7), reset: word(9) };
                    }
                    4 => {}
                    _ => return Err(PixelError::Unsupported("JPEG-LS mapping tables".into())),
                }
            }
            0xDD if segment.len() >= 2 && segment[..2] != [0, 0] => {
                return Err(PixelError::Unsupported("JPEG-LS restart intervals".into()));
            }
            0xE8 if segment.starts_with(b"mrfx") && segment.get(4).is_some_and(|&t| t != 0) => {
                return Err(PixelError::Unsupported("JPEG-LS HP colour transform".into()));
            }
            0xDA => {
                let frame = frame.as_ref().ok_or_else(|| err("scan before frame header"))?;
                let count = usize::from(*segment.first().ok_or_else(|| err("scan header truncated"))?);
                if count == 0 || segment.len() < 4 + 2 * count {
                    return Err(err("bad scan header"));
                }
                let mut indexes = Vec::with_capacity(count);
                for i in 0..count {
                    let id = segment[1 + 2 * i];
                    let index = frame.ids.iter().position(|&c| c == id).ok_or_else(|| err("unknown component"))?;
                    if segment[2 + 2 * i] != 0 {
                        return Err(PixelError::Unsupported("JPEG-LS mapping tables".into()));
                    }
                    indexes.push(index);
                }
                let tail = &segment[1 + 2 * count..];
                let near = i32::from(tail[0]);
                let interleave = tail[1];
                if tail[2] & 15 != 0 {
                    return Err(PixelError::Unsupported("JPEG-LS point transform".into()));
                }
                let mut coder = Coder::new(frame.precision, near, preset)?;
                let mut reader = Reader::new(data, position);
                match (interleave, count) {
                    (0, 1) => decode_lines(&mut coder, &mut reader, frame, &mut planes, &indexes)?,
                    (1, _) => decode_lines(&mut coder, &mut reader, frame, &mut planes, &indexes)?,
                    (2, 3) => decode_triplets(&mut coder, &mut reader, frame, &mut planes, &indexes)?,
                    (2, 1) => decode_lines(&mut coder, &mut reader, frame, &mut planes, &indexes)?,
                    _ => return Err(PixelError::Unsupported(format!("JPEG-LS interleave {interleave} of {count}"))),
                }
                for &index in &indexes {
                    decoded[index] = true;
                }
                position = reader.position;
            }
            _ => {}
        }
    }
    let frame = frame.ok_or_else(|| err("no frame header"))?;
    if decoded.iter().any(|d| !d) {
        return Err(err("a component has no scan"));
    }
    let count = planes.len();
    let mut samples = vec![0u16; frame.width * frame.height * count];
    for (c, plane) in planes.iter().enumerate() {
        for (i, &value) in plane.iter().enumerate() {
            samples[i * count + c] = value;
        }
    }
    Ok(Image { width: frame.width, height: frame.height, components: count, precision: frame.precision, samples })
}

fn predict(ra: i32, rb: i32, rc: i32) -> i32 {
    if rc >= ra.max(rb) {
        ra.min(rb)
    } else if rc <= ra.min(rb) {
        ra.max(rb)
    } else {
        ra + rb - rc
    }
}

/// Non-interleaved or line-interleaved scans: each line of each component in turn.
fn decode_lines(
    coder: &mut Coder,
    reader: &mut Reader<'_>,
    frame: &Frame,
    planes: &mut [Vec<u16>],
    indexes: &[usize],
) -> Result<()> {
    let width = frame.width;
    // Lines with one extra sample either side: index 0 is x = -1.
    let mut previous: Vec<Vec<i32>> = vec![vec![0; width + 2]; indexes.len()];
    let mut current: Vec<Vec<i32>> = vec![vec![0; width + 2]; indexes.len()];
    let mut run_indexes = vec![0usize; indexes.len()];
    for y in 0..frame.height {
        for (slot, &component) in indexes.iter().enumerate() {
            let prev = &mut previous[slot];
            let cur = &mut current[slot];
            prev[width + 1] = prev[width];
            cur[0] = prev[1];
            let run_index = &mut run_indexes[slot];
            let mut x = 0usize;
            while x < width {
                let (ra, rb, rc, rd) = (cur[x], prev[x + 1], prev[x], prev[x + 2]);
                let qs = coder.context_id(ra, rb, rc, rd);
                if qs != 0 {
                    cur[x + 1] = coder.decode_regular(reader, qs, predict(ra, rb, rc))?;
                    x += 1;
                    continue;
                }
                let run = coder.decode_run_length(reader, width - x, run_index)?;
                for value in &mut cur[x + 1..x + 1 + run] {
                    *value = ra;
                }
                x += run;
                if x == width {
                    break;
                }
                let rb = prev[x + 1];
                cur[x + 1] = if (ra - rb).abs() <= coder.near {
                    let error = coder.decode_ri_error(reader, 1, *run_index)?;
                    coder.reconstruct(ra, error)
                } else {
                    let error = coder.decode_ri_error(reader, 0, *run_index)?;
                    coder.reconstruct(rb, error * if rb - ra >= 0 { 1 } else { -1 })
                };
                *run_index = run_index.saturating_sub(1);
                x += 1;
            }
            let plane = &mut planes[component];
            for (out, &value) in plane[y * width..(y + 1) * width].iter_mut().zip(cur[1..=width].iter()) {
                *out = value as u16;
            }
            std::mem::swap(prev, cur);
        }
    }
    Ok(())
}

/// Sample-interleaved scans of three components.
fn decode_triplets(
    coder: &mut Coder,
    reader: &mut Reader<'_>,
    frame: &Frame,
    planes: &mut [Vec<u16>],
    indexes: &[usize],
) -> Result<()> {
    let width = frame.width;
    let mut prev = vec![[0i32; 3]; width + 2];
    let mut cur = vec![[0i32; 3]; width + 2];
    let mut run_index = 0usize;
    for y in 0..frame.height {
        prev[width + 1] = prev[width];
        cur[0] = prev[1];
        let mut x = 0usize;
        while x < width {
            let (ra, rb, rc, rd) = (cur[x], prev[x + 1], prev[x], prev[x + 2]);
            let qs: [i32; 3] = std::array::from_fn(|c| coder.context_id(ra[c], rb[c], rc[c], rd[c]));
            if qs != [0, 0, 0] {
                let mut value = [0i32; 3];
                for c in 0..3 {
                    value[c] = coder.decode_regular(reader, qs[c], predict(ra[c], rb[c], rc[c]))?;
                }
                cur[x + 1] = value;
                x += 1;
                continue;
            }
            let run = coder.decode_run_length(reader, width - x, &mut run_index)?;
            for value in &mut cur[x + 1..x + 1 + run] {
                *value = ra;
            }
            x += run;
            if x == width {
                break;
            }
            let rb = prev[x + 1];
            let mut value = [0i32; 3];
            for c in 0..3 {
                let error = coder.decode_ri_error(reader, 0, run_index)?;
                value[c] = coder.reconstruct(rb[c], error * if rb[c] - ra[c] >= 0 { 1 } else { -1 });
            }
            cur[x + 1] = value;
            run_index = run_index.saturating_sub(1);
            x += 1;
        }
        for (slot, &component) in indexes.iter().enumerate() {
            let plane = &mut planes[component];
            for (out, value) in plane[y * width..(y + 1) * width].iter_mut().zip(cur[1..=width].iter()) {
                *out = value[slot] as u16;
            }
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    Ok(())
}
