//! Pure DICOM helpers for Haneul: the data set model, a streaming reader and
//! a writer, file meta information, transfer syntaxes, the attribute levels of
//! the query/retrieve model, and the matching rules shared by C-FIND and QIDO.
//!
//! Nothing here does network or catalog I/O; the only files touched are the
//! ones a caller hands to [`header::read_instance_header`].

pub mod coerce;
pub mod dict;
pub mod header;
pub mod json;
pub mod levels;
pub mod matching;
pub mod meta;
pub mod model;
pub mod qido;
pub mod read;
pub mod transcode;
pub mod ts;
pub mod uid;
pub mod write;

pub use dicom_core::{Tag, VR};
pub use dicom_dictionary_std::tags;
pub use haneul_charset as charset;
pub use model::{BulkRef, Dataset, Element, Value};
