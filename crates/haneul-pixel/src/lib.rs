//! Pixel data for Haneul's DICOMweb services: frames of native and
//! encapsulated pixel data, decompression of every common transfer syntax to
//! native Explicit VR Little Endian pixels, and rendering through the display
//! pipeline (modality LUT, VOI, presentation) to JPEG or PNG.
//!
//! The crate is pure: callers hand it image attributes and pixel bytes.
//!
//! - [`ImageInfo::from_dataset`] reads the image pixel and display attributes.
//! - [`native_frame`] slices one frame out of native Pixel Data;
//!   [`split_encapsulated`] and [`frames_of_fragments`] find the fragments of each
//!   frame of encapsulated Pixel Data.
//! - [`decode_frame`] decodes one frame of any supported transfer syntax
//!   ([`can_decode`] tells which).
//! - [`render_frame`] renders a frame as JPEG or PNG with DICOMweb's `window`,
//!   `viewport` and `quality` parameters ([`parse_window`], [`parse_viewport`]).
//! - [`decompress_frames`] / [`decompress_pixel_data`] decompress a whole instance.
//!
//! Codecs: RLE Lossless, JPEG (baseline, extended 8/12-bit and lossless) and
//! JPEG-LS are implemented here; JPEG 2000 and HTJ2K use `jpeg2k` over the
//! pure-Rust `openjp2` port of OpenJPEG. No system library is needed.

pub mod codec;
mod decode;
mod error;
mod frames;
mod info;
mod instance;
mod render;

pub use decode::{
    big_endian_value_to_little_endian, can_decode, decode_frame, is_lossy, swap_to_little_endian, Codec, DecodedFrame,
};
pub use error::{PixelError, Result};
pub use frames::{frames_of_fragment_bytes, frames_of_fragments, native_frame, split_encapsulated, Encapsulated};
pub use info::{
    expand_segmented, FrameDisplay, ImageInfo, Lut, ModalityTransform, Palette, VoiFunction, Window, WindowPreset,
};
pub use instance::{decompress_frames, decompress_pixel_data, DecompressedInstance};
pub use render::{
    apply_window, encode, parse_viewport, parse_window, render_decoded, render_frame, render_raster, ImageFormat,
    Raster, Region, RenderOptions, Viewport,
};
