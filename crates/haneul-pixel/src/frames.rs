//! Finding frames: slices of native pixel data, and the grouping of
//! encapsulated fragments into frames.

use crate::error::{PixelError, Result};
use crate::info::ImageInfo;

/// The bytes of frame `index` (0-based) of native pixel data `pixel_data` (the
/// whole Pixel Data value, in the byte order it was stored in).
pub fn native_frame<'a>(info: &ImageInfo, pixel_data: &'a [u8], index: u32) -> Result<&'a [u8]> {
    if index >= info.number_of_frames {
        return Err(PixelError::FrameOutOfRange { index, frames: info.number_of_frames });
    }
    let length = info.frame_length();
    if info.bits_allocated == 1
        && info.number_of_frames > 1
        && !(info.pixel_count() * usize::from(info.samples_per_pixel)).is_multiple_of(8)
    {
        return Err(PixelError::Unsupported("1-bit frames that do not start on a byte boundary".into()));
    }
    let start = length.checked_mul(index as usize).ok_or(PixelError::Truncated { needed: u64::MAX, available: 0 })?;
    let end = start + length;
    pixel_data.get(start..end).ok_or(PixelError::Truncated { needed: end as u64, available: pixel_data.len() as u64 })
}

/// Encapsulated pixel data split into its items (PS3.5 A.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encapsulated<'a> {
    /// The Basic Offset Table item's value (often empty).
    pub offset_table: &'a [u8],
    /// Every fragment after the offset table.
    pub fragments: Vec<&'a [u8]>,
}

/// Split an encapsulated Pixel Data value (the bytes after the element header,
/// from the first item tag up to the Sequence Delimitation Item) into items.
pub fn split_encapsulated(value: &[u8]) -> Result<Encapsulated<'_>> {
    let mut position = 0usize;
    let mut items: Vec<&[u8]> = Vec::new();
    let mut delimited = false;
    while position + 8 <= value.len() {
        let header = &value[position..position + 8];
        let group = u16::from_le_bytes([header[0], header[1]]);
        let element = u16::from_le_bytes([header[2], header[3]]);
        let length = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        position += 8;
        match (group, element) {
            (0xFFFE, 0xE0DD) => {
                delimited = true;
                break;
            }
            (0xFFFE, 0xE000) => {
                let item = value.get(position..position.saturating_add(length)).ok_or_else(|| {
                    PixelError::Fragments(format!("item at byte {} overruns the value", position - 8))
                })?;
                items.push(item);
                position += length;
            }
            _ => return Err(PixelError::Fragments(format!("expected an item tag at byte {}", position - 8))),
        }
    }
    if !delimited && position != value.len() {
        return Err(PixelError::Fragments(format!("{} stray bytes after the last item", value.len() - position)));
    }
    if items.is_empty() {
        return Err(PixelError::Fragments("no Basic Offset Table item".into()));
    }
    let offset_table = items.remove(0);
    Ok(Encapsulated { offset_table, fragments: items })
}

/// Group the fragments of encapsulated pixel data into frames; returns, for
/// each frame in order, the indexes of its fragments.
///
/// Tried in order: one frame takes every fragment; the Extended Offset Table
/// (`extended_offset_table`: the value of (7FE0,0001), 64-bit little-endian
/// offsets); the Basic Offset Table (`basic_offset_table`: the first item's
/// value, 32-bit little-endian offsets); one fragment per frame when the counts
/// agree; and finally the frame start markers at the start of fragments (JPEG
/// and JPEG-LS SOI, JPEG 2000 SOC or JP2 signature, RLE header), read through
/// `fragment_head`, which returns (at least the first 8) leading bytes of a fragment.
pub fn frames_of_fragments(
    number_of_frames: u32,
    fragment_lengths: &[u64],
    basic_offset_table: &[u8],
    extended_offset_table: Option<&[u8]>,
    fragment_head: Option<&mut dyn FnMut(usize) -> Vec<u8>>,
) -> Result<Vec<Vec<usize>>> {
    let frames = number_of_frames as usize;
    let count = fragment_lengths.len();
    if frames == 0 {
        return Err(PixelError::Fragments("no frames".into()));
    }
    if count < frames {
        return Err(PixelError::Fragments(format!("{frames} frames but only {count} fragments")));
    }
    if frames == 1 {
        return Ok(vec![(0..count).collect()]);
    }
    if let Some(table) = extended_offset_table.filter(|t| !t.is_empty()) {
        let offsets: Vec<u64> =
            table.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect();
        if let Some(grouped) = group_by_offsets(fragment_lengths, &offsets, frames) {
            return Ok(grouped);
        }
    }
    if !basic_offset_table.is_empty() {
        let offsets: Vec<u64> = basic_offset_table
            .chunks_exact(4)
            .map(|c| u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect();
        if let Some(grouped) = group_by_offsets(fragment_lengths, &offsets, frames) {
            return Ok(grouped);
        }
    }
    if count == frames {
        return Ok((0..count).map(|i| vec![i]).collect());
    }
    let Some(head) = fragment_head else {
        return Err(PixelError::Fragments(format!(
            "{frames} frames in {count} fragments without an offset table to tell them apart"
        )));
    };
    let starts: Vec<usize> = (0..count).filter(|&i| is_frame_start(&head(i))).collect();
    if starts.len() != frames || starts.first() != Some(&0) {
        return Err(PixelError::Fragments(format!(
            "{frames} frames but {} fragments start with a frame marker",
            starts.len()
        )));
    }
    Ok(starts
        .iter()
        .enumerate()
        .map(|(i, &start)| {
            let end = starts.get(i + 1).copied().unwrap_or(count);
            (start..end).collect()
        })
        .collect())
}

/// [`frames_of_fragments`] for fragments held in memory.
pub fn frames_of_fragment_bytes(
    number_of_frames: u32,
    encapsulated: &Encapsulated<'_>,
    extended_offset_table: Option<&[u8]>,
) -> Result<Vec<Vec<usize>>> {
    let lengths: Vec<u64> = encapsulated.fragments.iter().map(|f| f.len() as u64).collect();
    let mut head = |i: usize| encapsulated.fragments.get(i).map(|f| f[..f.len().min(16)].to_vec()).unwrap_or_default();
    frames_of_fragments(number_of_frames, &lengths, encapsulated.offset_table, extended_offset_table, Some(&mut head))
}

/// Map frame offsets (relative to the first fragment's item tag) to fragment groups.
fn group_by_offsets(lengths: &[u64], offsets: &[u64], frames: usize) -> Option<Vec<Vec<usize>>> {
    if offsets.len() != frames || offsets.first() != Some(&0) {
        return None;
    }
    let mut item_starts = Vec::with_capacity(lengths.len());
    let mut position = 0u64;
    for &length in lengths {
        item_starts.push(position);
        position = position.checked_add(8)?.checked_add(length)?;
    }
    let mut first_fragments = Vec::with_capacity(frames);
    for &offset in offsets {
        let index = item_starts.binary_search(&offset).ok()?;
        if first_fragments.last().is_some_and(|&last| index <= last) {
            return None;
        }
        first_fragments.push(index);
    }
    Some(
        first_fragments
            .iter()
            .enumerate()
            .map(|(i, &start)| {
                let end = first_fragments.get(i + 1).copied().unwrap_or(lengths.len());
                (start..end).collect()
            })
            .collect(),
    )
}

/// Whether a fragment's leading bytes begin a compressed frame.
fn is_frame_start(head: &[u8]) -> bool {
    match head {
        // JPEG / JPEG-LS SOI, JPEG 2000 codestream SOC + SIZ
        [0xFF, 0xD8, 0xFF, ..] | [0xFF, 0x4F, 0xFF, 0x51, ..] => true,
        // JP2 signature box
        [0x00, 0x00, 0x00, 0x0C, 0x6A, 0x50, 0x20, 0x20, ..] => true,
        // RLE header: 1 to 15 segments, the first at offset 64
        [a, b, c, d, 64, 0, 0, 0, ..] => (1..=15).contains(&u32::from_le_bytes([*a, *b, *c, *d])),
        _ => false,
    }
}
