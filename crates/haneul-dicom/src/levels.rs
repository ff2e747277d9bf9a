//! The query/retrieve information model: which level (patient, study, series,
//! instance) owns each attribute, and the keys PS3.4 C.6 defines per level.

use dicom_core::{Tag, VR};

use crate::tags;

/// A level of the query/retrieve information model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Patient,
    Study,
    Series,
    Image,
}

impl Level {
    /// Parse a Query/Retrieve Level (0008,0052) value.
    pub fn parse(text: &str) -> Option<Level> {
        match text.trim().to_ascii_uppercase().as_str() {
            "PATIENT" => Some(Level::Patient),
            "STUDY" => Some(Level::Study),
            "SERIES" => Some(Level::Series),
            "IMAGE" | "INSTANCE" => Some(Level::Image),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Patient => "PATIENT",
            Level::Study => "STUDY",
            Level::Series => "SERIES",
            Level::Image => "IMAGE",
        }
    }

    /// The unique key of this level.
    pub fn unique_key(self) -> Tag {
        match self {
            Level::Patient => tags::PATIENT_ID,
            Level::Study => tags::STUDY_INSTANCE_UID,
            Level::Series => tags::SERIES_INSTANCE_UID,
            Level::Image => tags::SOP_INSTANCE_UID,
        }
    }
}

/// The two information models Haneul serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InformationModel {
    PatientRoot,
    StudyRoot,
}

impl InformationModel {
    /// Levels a query may ask for in this model.
    pub fn allows(self, level: Level) -> bool {
        match self {
            InformationModel::PatientRoot => true,
            InformationModel::StudyRoot => level != Level::Patient,
        }
    }
}

/// Attributes of the Patient Study module: they describe the patient at the
/// time of one study, so they belong to the study even though they sit in group 0010.
const PATIENT_STUDY_IN_GROUP_0010: &[u16] = &[
    0x1010, // Patient's Age
    0x1020, // Patient's Size
    0x1021, // Patient's Size Code Sequence
    0x1022, // Patient's Body Mass Index
    0x1023, // Measured AP Dimension
    0x1024, // Measured Lateral Dimension
    0x1030, // Patient's Weight
    0x2180, // Occupation
    0x21A0, // Smoking Status
    0x21B0, // Additional Patient History
    0x21C0, // Pregnancy Status
    0x21D0, // Last Menstrual Date
];

const STUDY_ATTRIBUTES: &[Tag] = &[
    Tag(0x0008, 0x0020), // Study Date
    Tag(0x0008, 0x0030), // Study Time
    Tag(0x0008, 0x0050), // Accession Number
    Tag(0x0008, 0x0051), // Issuer of Accession Number Sequence
    Tag(0x0008, 0x0061), // Modalities in Study
    Tag(0x0008, 0x0062), // SOP Classes in Study
    Tag(0x0008, 0x0063), // Anatomic Regions in Study Code Sequence
    Tag(0x0008, 0x0090), // Referring Physician's Name
    Tag(0x0008, 0x0096), // Referring Physician Identification Sequence
    Tag(0x0008, 0x009C), // Consulting Physician's Name
    Tag(0x0008, 0x009D), // Consulting Physician Identification Sequence
    Tag(0x0008, 0x1030), // Study Description
    Tag(0x0008, 0x1032), // Procedure Code Sequence
    Tag(0x0008, 0x1048), // Physician(s) of Record
    Tag(0x0008, 0x1049), // Physician(s) of Record Identification Sequence
    Tag(0x0008, 0x1060), // Name of Physician(s) Reading Study
    Tag(0x0008, 0x1062), // Physician(s) Reading Study Identification Sequence
    Tag(0x0008, 0x1080), // Admitting Diagnoses Description
    Tag(0x0008, 0x1084), // Admitting Diagnoses Code Sequence
    Tag(0x0008, 0x1110), // Referenced Study Sequence
    Tag(0x0020, 0x000D), // Study Instance UID
    Tag(0x0020, 0x0010), // Study ID
    Tag(0x0020, 0x1070), // Other Study Numbers
    Tag(0x0040, 0x1012), // Reason For Performed Procedure Code Sequence
];

const SERIES_ATTRIBUTES: &[Tag] = &[
    Tag(0x0008, 0x0021), // Series Date
    Tag(0x0008, 0x0031), // Series Time
    Tag(0x0008, 0x0060), // Modality
    Tag(0x0008, 0x0068), // Presentation Intent Type
    Tag(0x0008, 0x0070), // Manufacturer
    Tag(0x0008, 0x0080), // Institution Name
    Tag(0x0008, 0x0081), // Institution Address
    Tag(0x0008, 0x1010), // Station Name
    Tag(0x0008, 0x103E), // Series Description
    Tag(0x0008, 0x103F), // Series Description Code Sequence
    Tag(0x0008, 0x1040), // Institutional Department Name
    Tag(0x0008, 0x1041), // Institutional Department Type Code Sequence
    Tag(0x0008, 0x1050), // Performing Physician's Name
    Tag(0x0008, 0x1052), // Performing Physician Identification Sequence
    Tag(0x0008, 0x1070), // Operators' Name
    Tag(0x0008, 0x1072), // Operator Identification Sequence
    Tag(0x0008, 0x1090), // Manufacturer's Model Name
    Tag(0x0008, 0x1111), // Referenced Performed Procedure Step Sequence
    Tag(0x0008, 0x1250), // Related Series Sequence
    Tag(0x0018, 0x0015), // Body Part Examined
    Tag(0x0018, 0x1000), // Device Serial Number
    Tag(0x0018, 0x1020), // Software Versions
    Tag(0x0018, 0x1030), // Protocol Name
    Tag(0x0018, 0x5100), // Patient Position
    Tag(0x0020, 0x000E), // Series Instance UID
    Tag(0x0020, 0x0011), // Series Number
    Tag(0x0020, 0x0052), // Frame of Reference UID
    Tag(0x0020, 0x0060), // Laterality
    Tag(0x0020, 0x1040), // Position Reference Indicator
    Tag(0x0028, 0x0108), // Smallest Pixel Value in Series
    Tag(0x0028, 0x0109), // Largest Pixel Value in Series
    Tag(0x0040, 0x0244), // Performed Procedure Step Start Date
    Tag(0x0040, 0x0245), // Performed Procedure Step Start Time
    Tag(0x0040, 0x0250), // Performed Procedure Step End Date
    Tag(0x0040, 0x0251), // Performed Procedure Step End Time
    Tag(0x0040, 0x0253), // Performed Procedure Step ID
    Tag(0x0040, 0x0254), // Performed Procedure Step Description
    Tag(0x0040, 0x0260), // Performed Protocol Code Sequence
    Tag(0x0040, 0x0275), // Request Attributes Sequence
];

/// The level whose entity an attribute describes, used to split an
/// instance's header into patient, study, series and instance records.
pub fn level_of(tag: Tag) -> Level {
    match tag.group() {
        0x0010 if PATIENT_STUDY_IN_GROUP_0010.contains(&tag.element()) => Level::Study,
        0x0010 => Level::Patient,
        0x0012 if matches!(tag.element(), 0x0062..=0x0064) => Level::Patient,
        0x0032 | 0x0038 => Level::Study,
        _ if tag == Tag(0x0008, 0x1120) => Level::Patient,
        _ if STUDY_ATTRIBUTES.contains(&tag) => Level::Study,
        _ if SERIES_ATTRIBUTES.contains(&tag) => Level::Series,
        _ => Level::Image,
    }
}

/// Attributes the archive computes rather than copies from instances.
pub mod computed {
    use dicom_core::Tag;

    pub const MODALITIES_IN_STUDY: Tag = Tag(0x0008, 0x0061);
    pub const SOP_CLASSES_IN_STUDY: Tag = Tag(0x0008, 0x0062);
    pub const RETRIEVE_AE_TITLE: Tag = Tag(0x0008, 0x0054);
    pub const INSTANCE_AVAILABILITY: Tag = Tag(0x0008, 0x0056);
    pub const NUMBER_OF_PATIENT_RELATED_STUDIES: Tag = Tag(0x0020, 0x1200);
    pub const NUMBER_OF_PATIENT_RELATED_SERIES: Tag = Tag(0x0020, 0x1202);
    pub const NUMBER_OF_PATIENT_RELATED_INSTANCES: Tag = Tag(0x0020, 0x1204);
    pub const NUMBER_OF_STUDY_RELATED_SERIES: Tag = Tag(0x0020, 0x1206);
    pub const NUMBER_OF_STUDY_RELATED_INSTANCES: Tag = Tag(0x0020, 0x1208);
    pub const NUMBER_OF_SERIES_RELATED_INSTANCES: Tag = Tag(0x0020, 0x1209);
}

/// The keys of PS3.4 C.6 for one level (required, unique and the listed
/// optional ones), with their VRs. Any other attribute of the level is an
/// optional key too; these are the ones a default response template holds.
pub fn standard_keys(level: Level) -> &'static [(Tag, VR)] {
    match level {
        Level::Patient => &[
            (Tag(0x0010, 0x0010), VR::PN), // Patient's Name (R)
            (Tag(0x0010, 0x0020), VR::LO), // Patient ID (U)
            (Tag(0x0010, 0x0021), VR::LO), // Issuer of Patient ID
            (Tag(0x0010, 0x0030), VR::DA), // Patient's Birth Date
            (Tag(0x0010, 0x0032), VR::TM), // Patient's Birth Time
            (Tag(0x0010, 0x0040), VR::CS), // Patient's Sex
            (Tag(0x0010, 0x1001), VR::PN), // Other Patient Names
            (Tag(0x0010, 0x2160), VR::SH), // Ethnic Group
            (Tag(0x0010, 0x4000), VR::LT), // Patient Comments
            (Tag(0x0020, 0x1200), VR::IS), // Number of Patient Related Studies
            (Tag(0x0020, 0x1202), VR::IS), // Number of Patient Related Series
            (Tag(0x0020, 0x1204), VR::IS), // Number of Patient Related Instances
        ],
        Level::Study => &[
            (Tag(0x0008, 0x0020), VR::DA), // Study Date (R)
            (Tag(0x0008, 0x0030), VR::TM), // Study Time (R)
            (Tag(0x0008, 0x0050), VR::SH), // Accession Number (R)
            (Tag(0x0008, 0x0061), VR::CS), // Modalities in Study
            (Tag(0x0008, 0x0062), VR::UI), // SOP Classes in Study
            (Tag(0x0008, 0x0090), VR::PN), // Referring Physician's Name
            (Tag(0x0008, 0x1030), VR::LO), // Study Description
            (Tag(0x0008, 0x1060), VR::PN), // Name of Physician(s) Reading Study
            (Tag(0x0008, 0x1080), VR::LO), // Admitting Diagnoses Description
            (Tag(0x0010, 0x1010), VR::AS), // Patient's Age
            (Tag(0x0010, 0x1020), VR::DS), // Patient's Size
            (Tag(0x0010, 0x1030), VR::DS), // Patient's Weight
            (Tag(0x0010, 0x2180), VR::SH), // Occupation
            (Tag(0x0010, 0x21B0), VR::LT), // Additional Patient History
            (Tag(0x0020, 0x000D), VR::UI), // Study Instance UID (U)
            (Tag(0x0020, 0x0010), VR::SH), // Study ID (R)
            (Tag(0x0020, 0x1206), VR::IS), // Number of Study Related Series
            (Tag(0x0020, 0x1208), VR::IS), // Number of Study Related Instances
        ],
        Level::Series => &[
            (Tag(0x0008, 0x0021), VR::DA), // Series Date
            (Tag(0x0008, 0x0031), VR::TM), // Series Time
            (Tag(0x0008, 0x0060), VR::CS), // Modality (R)
            (Tag(0x0008, 0x103E), VR::LO), // Series Description
            (Tag(0x0018, 0x0015), VR::CS), // Body Part Examined
            (Tag(0x0020, 0x000E), VR::UI), // Series Instance UID (U)
            (Tag(0x0020, 0x0011), VR::IS), // Series Number (R)
            (Tag(0x0020, 0x1209), VR::IS), // Number of Series Related Instances
            (Tag(0x0040, 0x0244), VR::DA), // Performed Procedure Step Start Date
            (Tag(0x0040, 0x0245), VR::TM), // Performed Procedure Step Start Time
        ],
        Level::Image => &[
            (Tag(0x0008, 0x0016), VR::UI), // SOP Class UID
            (Tag(0x0008, 0x0018), VR::UI), // SOP Instance UID (U)
            (Tag(0x0020, 0x0013), VR::IS), // Instance Number (R)
            (Tag(0x0008, 0x0023), VR::DA), // Content Date
            (Tag(0x0008, 0x0033), VR::TM), // Content Time
            (Tag(0x0028, 0x0008), VR::IS), // Number of Frames
            (Tag(0x0028, 0x0010), VR::US), // Rows
            (Tag(0x0028, 0x0011), VR::US), // Columns
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_land_on_the_right_level() {
        assert_eq!(level_of(tags::PATIENT_NAME), Level::Patient);
        assert_eq!(level_of(tags::PATIENT_AGE), Level::Study);
        assert_eq!(level_of(tags::STUDY_DATE), Level::Study);
        assert_eq!(level_of(tags::MODALITY), Level::Series);
        assert_eq!(level_of(tags::SOP_INSTANCE_UID), Level::Image);
        assert_eq!(level_of(tags::ROWS), Level::Image);
    }

    #[test]
    fn every_standard_key_belongs_to_its_level_or_is_computed() {
        for level in [Level::Patient, Level::Study, Level::Series, Level::Image] {
            for &(tag, vr) in standard_keys(level) {
                let computed = tag.group() == 0x0020 && (0x1200..=0x1209).contains(&tag.element())
                    || tag == computed::MODALITIES_IN_STUDY
                    || tag == computed::SOP_CLASSES_IN_STUDY;
                assert!(computed || level_of(tag) == level, "{tag} is not at {level:?}");
                assert_eq!(crate::dict::implicit_vr(tag), vr, "VR of {tag}");
            }
        }
    }

    #[test]
    fn level_names_parse() {
        assert_eq!(Level::parse("STUDY "), Some(Level::Study));
        assert_eq!(Level::parse("image"), Some(Level::Image));
        assert_eq!(Level::parse("FRAME"), None);
    }
}
