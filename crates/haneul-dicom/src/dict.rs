//! Thin wrappers over the dicom-rs standard data dictionary.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, UidDictionary, UidDictionaryEntry, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::{StandardDataDictionary, StandardSopClassDictionary};

/// The VR to assume for an element read in Implicit VR Little Endian.
///
/// Context-dependent VRs (pixel data, LUT data, US or SS) resolve to the
/// form that keeps the bytes unchanged; unknown and private tags are UN,
/// except private creators, which PS3.5 7.8.1 makes LO.
pub fn implicit_vr(tag: Tag) -> VR {
    if tag.element() == 0x0000 {
        return VR::UL;
    }
    if tag.group() % 2 == 1 && (0x0010..=0x00FF).contains(&tag.element()) {
        return VR::LO;
    }
    match StandardDataDictionary.by_tag(tag).map(|entry| entry.vr()) {
        Some(VirtualVr::Exact(vr)) => vr,
        Some(VirtualVr::Xs) => VR::US,
        Some(VirtualVr::Ox) | Some(VirtualVr::Px) | Some(VirtualVr::Lt) => VR::OW,
        Some(_) => VR::UN,
        None => VR::UN,
    }
}

/// The keyword of a standard attribute, e.g. `PatientName`.
pub fn keyword(tag: Tag) -> Option<&'static str> {
    if tag.group() % 2 == 1 {
        return None;
    }
    StandardDataDictionary.by_tag(tag).map(|entry| entry.alias)
}

/// Resolve a keyword (`PatientName`) or a hex tag (`00100010`, `(0010,0010)`, `0010,0010`).
pub fn parse_tag(text: &str) -> Option<Tag> {
    let trimmed = text.trim();
    let hex: String = trimmed.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    let looks_hex =
        hex.len() == 8 && trimmed.chars().all(|c| c.is_ascii_hexdigit() || matches!(c, '(' | ')' | ',' | ' '));
    if looks_hex {
        let value = u32::from_str_radix(&hex, 16).ok()?;
        return Some(Tag((value >> 16) as u16, (value & 0xFFFF) as u16));
    }
    StandardDataDictionary.by_name(trimmed).map(|entry| entry.tag())
}

/// Whether a SOP class UID is one of the standard's storage SOP classes.
///
/// dicom-rs does not expose its SOP class table for iteration, so a class is
/// recognised by its dictionary name: storage classes are named "... Storage"
/// (with an optional qualifier such as "- For Presentation" or "(Retired)").
pub fn is_storage_sop_class(uid: &str) -> bool {
    let uid = uid.trim_end_matches(['\0', ' ']);
    let Some(entry) = StandardSopClassDictionary.by_uid(uid) else {
        return false;
    };
    let name = entry.name();
    name.contains("Storage")
        && !name.contains("Storage Commitment")
        && !name.contains("Media Storage Directory")
        && !name.contains("Storage Management")
}

/// The dictionary name of a SOP class or other well-known UID.
pub fn uid_name(uid: &str) -> Option<&'static str> {
    StandardSopClassDictionary.by_uid(uid.trim_end_matches(['\0', ' '])).map(|entry| entry.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implicit_vr_resolves_context_dependent_and_private_tags() {
        assert_eq!(implicit_vr(Tag(0x0010, 0x0010)), VR::PN);
        assert_eq!(implicit_vr(Tag(0x7FE0, 0x0010)), VR::OW);
        assert_eq!(implicit_vr(Tag(0x0009, 0x0010)), VR::LO);
        assert_eq!(implicit_vr(Tag(0x0009, 0x1001)), VR::UN);
        assert_eq!(implicit_vr(Tag(0x0020, 0x0000)), VR::UL);
    }

    #[test]
    fn parse_tag_accepts_keywords_and_hex() {
        assert_eq!(parse_tag("PatientName"), Some(Tag(0x0010, 0x0010)));
        assert_eq!(parse_tag("00100020"), Some(Tag(0x0010, 0x0020)));
        assert_eq!(parse_tag("(0020,000D)"), Some(Tag(0x0020, 0x000D)));
        assert_eq!(parse_tag("NoSuchKeyword"), None);
    }

    #[test]
    fn storage_classes_are_recognised() {
        assert!(is_storage_sop_class("1.2.840.10008.5.1.4.1.1.2"));
        assert!(is_storage_sop_class("1.2.840.10008.5.1.4.1.1.104.1"));
        assert!(is_storage_sop_class("1.2.840.10008.5.1.4.1.1.1.1"));
        assert!(!is_storage_sop_class("1.2.840.10008.1.20.1"));
        assert!(!is_storage_sop_class("1.2.840.10008.1.1"));
        assert!(!is_storage_sop_class("1.2.3.4"));
    }
}
