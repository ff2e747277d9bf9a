//! The codecs written for this crate (JPEG, JPEG-LS, RLE) and the adapter to
//! the JPEG 2000 decoder.

pub mod j2k;
pub mod jpeg;
pub mod jpegls;
pub mod rle;
