// The pixel pipeline: uncompressed little-endian samples → stored values →
// Modality LUT (rescale) → VOI window or VOI LUT → MONOCHROME1 / invert → RGBA;
// PALETTE COLOR indices → the Red/Green/Blue Palette Color LUTs → RGBA.
import { T, first, num, nums, text, values } from './dicom.js';

/**
 * A LUT's descriptor (entries, first mapped value, bits per entry) and its data
 * element, whose words `resolveLuts` fills in (`data`). `signed`: the first
 * mapped value is signed (VOI LUT input of signed pixels) even if sent as US.
 */
function lutOf(ds, descriptorTag, dataTag, signed, name) {
  const descriptor = ds && ds[descriptorTag];
  const element = ds && ds[dataTag];
  const d = nums(ds, descriptorTag);
  if (!descriptor || !element || d.length < 3) return null;
  let firstMapped = d[1];
  if (signed && firstMapped >= 32768) firstMapped -= 65536;
  if (!signed && firstMapped < 0) firstMapped += 65536;
  return { entries: d[0] || 65536, first: firstMapped, bits: Math.min(16, Math.max(1, d[2])), name, element, data: null };
}

const lutCache = new WeakMap(); // data element → Promise<Uint16Array>

function base64Bytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** LUT Data words from a DICOM JSON element: Value numbers, InlineBinary or BulkDataURI. */
async function lutWords(api, lut, signal) {
  const { element, entries, bits } = lut;
  let words;
  if (Array.isArray(element.Value)) {
    words = Uint16Array.from(element.Value.slice(0, entries), v => Number(v) & 0xffff);
  } else {
    const bytes = element.InlineBinary !== undefined ? base64Bytes(element.InlineBinary)
      : element.BulkDataURI ? await api.bulk(element.BulkDataURI, signal) : null;
    if (!bytes) throw new Error(`${lut.name} has no LUT data.`);
    if (bits <= 8 && (bytes.length === entries || bytes.length === entries + 1)) {
      words = Uint16Array.from(bytes.subarray(0, entries));
    } else {
      const n = Math.min(entries, bytes.length >> 1);
      words = new Uint16Array(n);
      const view = new DataView(bytes.buffer, bytes.byteOffset, n * 2);
      for (let i = 0; i < n; i++) words[i] = view.getUint16(i * 2, true);
    }
  }
  if (words.length === 0) throw new Error(`${lut.name} has no LUT data.`);
  return words;
}

/** Fetch or decode the data of every LUT of `info` (VOI LUTs, palette); cached per data element. */
export async function resolveLuts(api, info, signal) {
  const luts = [...info.voiLuts, ...(info.palette ? [info.palette.red, info.palette.green, info.palette.blue] : [])];
  await Promise.all(
    luts.filter(lut => !lut.data).map(async lut => {
      let promise = lutCache.get(lut.element);
      if (!promise) {
        promise = lutWords(api, lut, signal);
        lutCache.set(lut.element, promise);
        promise.catch(() => lutCache.delete(lut.element));
      }
      lut.data = await promise;
    }),
  );
}

/** A LUT's 8-bit output for an input value (inputs outside the table take its first or last entry). */
function lookup(lut, x) {
  const data = lut.data;
  const i = Math.max(0, Math.min(data.length - 1, Math.floor(x) - lut.first));
  return data[i];
}

/** The image attributes of one frame (attributes already merged with functional groups). */
export function imageInfo(ds) {
  const centers = nums(ds, T.WindowCenter);
  const widths = nums(ds, T.WindowWidth);
  const explanations = values(ds, T.WindowExplanation).map(String);
  const windows = [];
  for (let i = 0; i < Math.min(centers.length, widths.length); i++) {
    if (widths[i] > 0) windows.push({ center: centers[i], width: widths[i], name: explanations[i] || `File ${i + 1}` });
  }
  const signed = num(ds, T.PixelRepresentation, 0) === 1;
  const voiLuts = values(ds, T.VOILUTSequence)
    .map((item, i) => lutOf(item, T.LUTDescriptor, T.LUTData, signed, text(item, T.LUTExplanation) || `VOI LUT ${i + 1}`))
    .filter(Boolean);
  const photometric = String(first(ds, T.PhotometricInterpretation) || 'MONOCHROME2').trim();
  let palette = null;
  if (photometric === 'PALETTE COLOR') {
    const red = lutOf(ds, T.RedPaletteDescriptor, T.RedPaletteData, false, 'Red Palette Color LUT');
    const green = lutOf(ds, T.GreenPaletteDescriptor, T.GreenPaletteData, false, 'Green Palette Color LUT');
    const blue = lutOf(ds, T.BluePaletteDescriptor, T.BluePaletteData, false, 'Blue Palette Color LUT');
    if (red && green && blue) palette = { red, green, blue };
  }
  const spacing = nums(ds, T.PixelSpacing);
  const imager = nums(ds, T.ImagerPixelSpacing);
  const pixelSpacing = spacing.length >= 2 ? spacing : imager.length >= 2 ? imager : null;
  return {
    rows: num(ds, T.Rows, 0),
    columns: num(ds, T.Columns, 0),
    bitsAllocated: num(ds, T.BitsAllocated, 16),
    bitsStored: num(ds, T.BitsStored, num(ds, T.BitsAllocated, 16)),
    signed,
    samples: num(ds, T.SamplesPerPixel, 1),
    photometric,
    voiLuts,
    palette,
    planar: num(ds, T.PlanarConfiguration, 0),
    frames: num(ds, T.NumberOfFrames, 1),
    slope: num(ds, T.RescaleSlope, 1) || 1,
    intercept: num(ds, T.RescaleIntercept, 0),
    windows,
    voiFunction: text(ds, T.VOILUTFunction) || 'LINEAR',
    // [row spacing (vertical), column spacing (horizontal)] in mm
    pixelSpacing: pixelSpacing && pixelSpacing[0] > 0 && pixelSpacing[1] > 0 ? pixelSpacing.slice(0, 2) : null,
    spacingSource: spacing.length >= 2 ? 'PixelSpacing' : imager.length >= 2 ? 'ImagerPixelSpacing' : null,
  };
}

/** Why these pixels cannot be shown, or null. */
export function unsupported(info) {
  if (!info.rows || !info.columns) return 'The image has no Rows/Columns.';
  if (![1, 8, 16, 32].includes(info.bitsAllocated)) return `Bits Allocated ${info.bitsAllocated} is not supported.`;
  if (info.samples !== 1 && info.samples !== 3) return `Samples per Pixel ${info.samples} is not supported.`;
  if (info.samples === 1 && !/^MONOCHROME[12]$/.test(info.photometric) && info.photometric !== 'PALETTE COLOR') {
    return `Photometric Interpretation ${info.photometric} is not supported.`;
  }
  if (info.photometric === 'PALETTE COLOR') {
    if (!info.palette) return 'The palette colour image lacks its Red, Green or Blue Palette Color Lookup Table (segmented palettes are not supported).';
    if (info.bitsAllocated !== 8 && info.bitsAllocated !== 16) return `Palette colour with ${info.bitsAllocated} bits is not supported.`;
  }
  return null;
}

/**
 * Decode one frame's bytes. Grey: {gray: typed array of stored values, min, max};
 * colour: {rgba: Uint8ClampedArray}.
 */
export function decodeFrame(info, bytes) {
  const count = info.rows * info.columns;
  const problem = unsupported(info);
  if (problem) throw new Error(problem);
  if (info.samples === 3) return { rgba: decodeColor(info, bytes, count), width: info.columns, height: info.rows };
  let gray;
  const need = info.bitsAllocated === 1 ? Math.ceil(count / 8) : (count * info.bitsAllocated) / 8;
  if (bytes.byteLength < need) {
    throw new Error(`The frame has ${bytes.byteLength} bytes; ${info.columns}×${info.rows}×${info.bitsAllocated} bits need ${need}.`);
  }
  // A copy aligned for the typed array (the part may start at any offset).
  const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + need);
  if (info.bitsAllocated === 1) {
    gray = new Uint8Array(count);
    const packed = new Uint8Array(buffer);
    for (let i = 0; i < count; i++) gray[i] = (packed[i >> 3] >> (i & 7)) & 1;
  } else if (info.bitsAllocated === 8) {
    gray = info.signed ? new Int8Array(buffer) : new Uint8Array(buffer);
  } else if (info.bitsAllocated === 16) {
    gray = info.signed ? new Int16Array(buffer) : new Uint16Array(buffer);
  } else {
    gray = info.signed ? new Int32Array(buffer) : new Uint32Array(buffer);
  }
  // Bits above Bits Stored: sign-extend (signed) or mask (unsigned).
  const stored = info.bitsStored;
  if (info.bitsAllocated > 1 && stored < info.bitsAllocated && stored > 0) {
    if (info.signed) {
      const shift = 32 - stored;
      for (let i = 0; i < count; i++) gray[i] = (gray[i] << shift) >> shift;
    } else if (stored < 32) {
      const mask = stored === 31 ? 0x7fffffff : (1 << stored) - 1;
      for (let i = 0; i < count; i++) gray[i] = gray[i] & mask;
    }
  }
  if (info.palette) return { rgba: paletteColors(info.palette, gray, count), width: info.columns, height: info.rows };
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < count; i++) {
    const v = gray[i];
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return { gray, min, max, width: info.columns, height: info.rows };
}

/** Palette indices → RGBA; entries of 16 bits keep their high byte. */
function paletteColors(palette, indices, count) {
  const channels = [palette.red, palette.green, palette.blue];
  for (const lut of channels) if (!lut.data) throw new Error(`${lut.name}: its data were not loaded.`);
  // One table per channel over the index range of the frame.
  const rgba = new Uint8ClampedArray(count * 4);
  const tables = channels.map(lut => {
    const wide = lut.bits > 8 || lut.data.some(v => v > 255);
    return Uint8Array.from(lut.data, v => (wide ? v >> 8 : v));
  });
  for (let c = 0; c < 3; c++) {
    const lut = channels[c];
    const table = tables[c];
    const last = table.length - 1;
    for (let i = 0; i < count; i++) {
      const at = indices[i] - lut.first;
      rgba[i * 4 + c] = table[at < 0 ? 0 : at > last ? last : at];
    }
  }
  for (let i = 0; i < count; i++) rgba[i * 4 + 3] = 255;
  return rgba;
}

function decodeColor(info, bytes, count) {
  if (info.bitsAllocated !== 8) throw new Error(`Colour images with ${info.bitsAllocated} bits are not supported.`);
  const rgba = new Uint8ClampedArray(count * 4);
  const p = info.photometric;
  const subsampled = p === 'YBR_FULL_422' && bytes.byteLength < count * 3;
  if (subsampled) {
    // Y1 Y2 Cb Cr per pair of pixels.
    if (bytes.byteLength < count * 2) throw new Error('The YBR_FULL_422 frame is too short.');
    for (let i = 0, o = 0; i + 1 < count + 1 && o + 3 < bytes.length; i += 2, o += 4) {
      ybr(rgba, i, bytes[o], bytes[o + 2], bytes[o + 3]);
      if (i + 1 < count) ybr(rgba, i + 1, bytes[o + 1], bytes[o + 2], bytes[o + 3]);
    }
    return rgba;
  }
  if (bytes.byteLength < count * 3) throw new Error(`The colour frame has ${bytes.byteLength} bytes; ${count * 3} needed.`);
  const planar = info.planar === 1;
  // YBR_FULL_422 at full size comes from the server's decoding of a lossy JPEG,
  // which turns it into RGB (uncompressed YBR_FULL_422 arrives subsampled, above).
  const isYbr = p === 'YBR_FULL';
  for (let i = 0; i < count; i++) {
    const a = planar ? bytes[i] : bytes[i * 3];
    const b = planar ? bytes[count + i] : bytes[i * 3 + 1];
    const c = planar ? bytes[2 * count + i] : bytes[i * 3 + 2];
    if (isYbr) {
      ybr(rgba, i, a, b, c);
    } else {
      rgba[i * 4] = a;
      rgba[i * 4 + 1] = b;
      rgba[i * 4 + 2] = c;
      rgba[i * 4 + 3] = 255;
    }
  }
  return rgba;
}

function ybr(rgba, i, y, cb, cr) {
  rgba[i * 4] = y + 1.402 * (cr - 128);
  rgba[i * 4 + 1] = y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128);
  rgba[i * 4 + 2] = y + 1.772 * (cb - 128);
  rgba[i * 4 + 3] = 255;
}

/** A window that shows the whole range of modality values of a frame. */
export function fullRangeWindow(info, frame) {
  if (frame.rgba) return { center: 127.5, width: 256 };
  const a = frame.min * info.slope + info.intercept;
  const b = frame.max * info.slope + info.intercept;
  const lo = Math.min(a, b);
  const hi = Math.max(a, b);
  return { center: (lo + hi) / 2 + 0.5, width: Math.max(1, hi - lo + 1) };
}

/** Output level 0..255 of modality value x under a window (PS3.3 C.11.2.1.2). */
function windowed(x, center, width, fn) {
  if (fn === 'LINEAR_EXACT') {
    if (x <= center - width / 2) return 0;
    if (x > center + width / 2) return 255;
    return ((x - center) / width + 0.5) * 255;
  }
  if (fn === 'SIGMOID') return 255 / (1 + Math.exp((-4 * (x - center)) / width));
  const w = Math.max(1, width);
  const c = center - 0.5;
  if (x <= c - (w - 1) / 2) return 0;
  if (x > c + (w - 1) / 2) return 255;
  return ((x - c) / (w - 1) + 0.5) * 255;
}

/** Render a decoded frame into `image` (an ImageData of the same size). */
export function render(info, frame, view, image) {
  const out = new Uint32Array(image.data.buffer);
  const invert = (info.photometric === 'MONOCHROME1') !== !!view.invert;
  const { center, width } = view;
  if (frame.rgba) {
    const lut = new Uint8ClampedArray(256);
    for (let i = 0; i < 256; i++) {
      const y = windowed(i, center, width, 'LINEAR');
      lut[i] = view.invert ? 255 - y : y;
    }
    const src = frame.rgba;
    const dst = image.data;
    for (let i = 0; i < src.length; i += 4) {
      dst[i] = lut[src[i]];
      dst[i + 1] = lut[src[i + 1]];
      dst[i + 2] = lut[src[i + 2]];
      dst[i + 3] = 255;
    }
    return;
  }
  const { gray, min, max } = frame;
  const fn = info.voiFunction.toUpperCase();
  const span = max - min + 1;
  const voiLut = view.lut !== null && view.lut !== undefined ? info.voiLuts[view.lut] : null;
  const scale = voiLut?.data ? 255 / ((1 << voiLut.bits) - 1) : 0;
  const level = v => {
    const x = v * info.slope + info.intercept;
    let y = Math.round(voiLut?.data ? Math.min(255, lookup(voiLut, x) * scale) : windowed(x, center, width, fn));
    if (invert) y = 255 - y;
    return 0xff000000 | (y << 16) | (y << 8) | y;
  };
  if (span <= 1 << 20) {
    const lut = new Uint32Array(span);
    for (let i = 0; i < span; i++) lut[i] = level(i + min);
    for (let i = 0; i < gray.length; i++) out[i] = lut[gray[i] - min];
  } else {
    for (let i = 0; i < gray.length; i++) out[i] = level(gray[i]);
  }
}

/** Standard CT presets (window width / level in HU). */
export const CT_PRESETS = [
  { name: 'Brain', center: 40, width: 80 },
  { name: 'Abdomen (soft tissue)', center: 50, width: 400 },
  { name: 'Lung', center: -600, width: 1500 },
  { name: 'Bone', center: 300, width: 2000 },
];
