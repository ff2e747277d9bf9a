//! Migration from a legacy PACS (`haneul migrate`) and the comparison of two
//! archives (`haneul diff`).
//!
//! `walk` lists what a DICOM node holds (studies by date range, split where
//! the node caps its answers; the instances of a study); `diff` compares two
//! nodes study by study on top of it. `get` fetches a study by C-GET.
//! `dicomweb` does the listing, fetching and instance listing of a DICOMweb
//! server as a source, with `multipart` reading its WADO-RS answers as they
//! stream in.

pub mod dicomweb;
pub mod diff;
pub mod folder;
pub mod get;
pub mod multipart;
pub mod report;
mod runner;
mod silence;
pub mod walk;
pub mod windows;

pub use runner::{Fetch, Migrations, Source};
