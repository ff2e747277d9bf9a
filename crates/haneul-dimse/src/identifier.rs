//! Encoding of identifiers and other small data sets sent over DIMSE.

use haneul_dicom::charset::{choose_for_texts, SpecificCharacterSet};
use haneul_dicom::write::{write_dataset, Encoding, WriteError};
use haneul_dicom::{tags, Dataset, Element, Value, VR};

/// Encode a data set in a character set that can carry all its text: the
/// preferred one (e.g. the query's own) if possible, else the default
/// repertoire or UTF-8. Sets Specific Character Set accordingly.
pub fn encode_identifier(
    identifier: &mut Dataset,
    preferred: &SpecificCharacterSet,
    encoding: Encoding,
) -> Result<Vec<u8>, WriteError> {
    identifier.remove(tags::SPECIFIC_CHARACTER_SET);
    let charset = choose_for_texts(identifier.all_texts(), std::slice::from_ref(preferred));
    if !charset.is_default() {
        identifier.put(Element::new(tags::SPECIFIC_CHARACTER_SET, VR::CS, Value::Strings(charset.terms())));
    }
    let mut out = Vec::with_capacity(1024);
    write_dataset(&mut out, identifier, encoding, &charset)?;
    Ok(out)
}
