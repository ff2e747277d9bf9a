//! QIDO-RS query parameters (PS3.18 8.3.4) turned into the same [`Query`]
//! C-FIND uses, so both are answered by one matcher.

use dicom_core::{Tag, VR};

use crate::dict;
use crate::levels::{computed, InformationModel, Level};
use crate::matching::{Query, QueryError};
use crate::model::{Dataset, Element, Value};
use crate::tags;

/// A parsed QIDO-RS request.
#[derive(Debug, Clone)]
pub struct QidoRequest {
    pub query: Query,
    /// `includefield=all`: every attribute the archive holds for a match.
    pub include_all: bool,
    pub limit: Option<usize>,
    pub offset: usize,
    pub fuzzy: bool,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QidoError {
    #[error("unknown query parameter or attribute {0:?}")]
    UnknownAttribute(String),
    #[error("invalid value {value:?} for {name}")]
    InvalidValue { name: String, value: String },
    #[error(transparent)]
    Query(#[from] QueryError),
}

/// Attributes every response at a level carries (PS3.18 Table 6.7.1-2, with
/// the identifying UIDs of the levels above, which clients need to navigate).
pub fn default_return_keys(level: Level) -> &'static [(Tag, VR)] {
    match level {
        Level::Patient => &[
            (tags::PATIENT_NAME, VR::PN),
            (tags::PATIENT_ID, VR::LO),
            (tags::PATIENT_BIRTH_DATE, VR::DA),
            (tags::PATIENT_SEX, VR::CS),
            (computed::NUMBER_OF_PATIENT_RELATED_STUDIES, VR::IS),
        ],
        Level::Study => &[
            (tags::STUDY_DATE, VR::DA),
            (tags::STUDY_TIME, VR::TM),
            (tags::ACCESSION_NUMBER, VR::SH),
            (computed::INSTANCE_AVAILABILITY, VR::CS),
            (computed::MODALITIES_IN_STUDY, VR::CS),
            (tags::REFERRING_PHYSICIAN_NAME, VR::PN),
            (tags::TIMEZONE_OFFSET_FROM_UTC, VR::SH),
            (tags::STUDY_DESCRIPTION, VR::LO),
            (tags::PATIENT_NAME, VR::PN),
            (tags::PATIENT_ID, VR::LO),
            (tags::PATIENT_BIRTH_DATE, VR::DA),
            (tags::PATIENT_SEX, VR::CS),
            (tags::STUDY_INSTANCE_UID, VR::UI),
            (tags::STUDY_ID, VR::SH),
            (computed::NUMBER_OF_STUDY_RELATED_SERIES, VR::IS),
            (computed::NUMBER_OF_STUDY_RELATED_INSTANCES, VR::IS),
        ],
        Level::Series => &[
            (tags::MODALITY, VR::CS),
            (tags::TIMEZONE_OFFSET_FROM_UTC, VR::SH),
            (tags::SERIES_DESCRIPTION, VR::LO),
            (tags::STUDY_INSTANCE_UID, VR::UI),
            (tags::SERIES_INSTANCE_UID, VR::UI),
            (tags::SERIES_NUMBER, VR::IS),
            (computed::NUMBER_OF_SERIES_RELATED_INSTANCES, VR::IS),
            (tags::PERFORMED_PROCEDURE_STEP_START_DATE, VR::DA),
            (tags::PERFORMED_PROCEDURE_STEP_START_TIME, VR::TM),
            (tags::REQUEST_ATTRIBUTES_SEQUENCE, VR::SQ),
            (tags::BODY_PART_EXAMINED, VR::CS),
        ],
        Level::Image => &[
            (tags::SOP_CLASS_UID, VR::UI),
            (tags::SOP_INSTANCE_UID, VR::UI),
            (computed::INSTANCE_AVAILABILITY, VR::CS),
            (tags::TIMEZONE_OFFSET_FROM_UTC, VR::SH),
            (tags::INSTANCE_NUMBER, VR::IS),
            (tags::ROWS, VR::US),
            (tags::COLUMNS, VR::US),
            (tags::BITS_ALLOCATED, VR::US),
            (tags::NUMBER_OF_FRAMES, VR::IS),
            (tags::STUDY_INSTANCE_UID, VR::UI),
            (tags::SERIES_INSTANCE_UID, VR::UI),
        ],
    }
}

/// Parse QIDO-RS parameters at `level`. `scope` holds the UIDs of the
/// resource path (e.g. the study of `/studies/{uid}/series`).
pub fn parse(level: Level, scope: &[(Tag, &str)], params: &[(String, String)]) -> Result<QidoRequest, QidoError> {
    let mut identifier = Dataset::new();
    identifier.put(Element::text(tags::QUERY_RETRIEVE_LEVEL, VR::CS, level.as_str()));
    for &(tag, vr) in default_return_keys(level) {
        identifier.put(Element::empty(tag, vr));
    }
    let mut include_all = false;
    let mut limit = None;
    let mut offset = 0;
    let mut fuzzy = false;
    let mut matches: Vec<(Tag, String)> = Vec::new();
    for (name, value) in params {
        match name.as_str() {
            "limit" => limit = Some(parse_count(name, value)?),
            "offset" => offset = parse_count(name, value)?,
            "fuzzymatching" => fuzzy = parse_bool(name, value)?,
            "includefield" => {
                for field in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                    if field == "all" {
                        include_all = true;
                        continue;
                    }
                    let tag = dict::parse_tag(field).ok_or_else(|| QidoError::UnknownAttribute(field.to_string()))?;
                    if !identifier.contains(tag) {
                        identifier.put(Element::empty(tag, dict::implicit_vr(tag)));
                    }
                }
            }
            // Standard parameters that change nothing in a JSON answer.
            "charset" | "accept" => {}
            _ => {
                let tag = dict::parse_tag(name).ok_or_else(|| QidoError::UnknownAttribute(name.clone()))?;
                matches.push((tag, value.clone()));
            }
        }
    }
    for (tag, value) in scope {
        matches.push((*tag, value.to_string()));
    }
    for (tag, value) in matches {
        let vr = dict::implicit_vr(tag);
        let value = if fuzzy && vr == VR::PN { fuzzy_person_name(&value) } else { value };
        identifier.put(element_for(tag, vr, &value));
    }
    // The Patient Root model holds every level, which QIDO's /series and
    // /instances across studies need.
    let query = Query::from_identifier(&identifier, InformationModel::PatientRoot)?;
    Ok(QidoRequest { query, include_all, limit, offset, fuzzy })
}

/// A matching value as an element: UID lists may be separated by commas
/// (QIDO) or backslashes (DICOM).
fn element_for(tag: Tag, vr: VR, value: &str) -> Element {
    if value.is_empty() {
        return Element::empty(tag, vr);
    }
    if vr == VR::UI {
        let uids: Vec<String> =
            value.split([',', '\\']).map(|uid| uid.trim().to_string()).filter(|uid| !uid.is_empty()).collect();
        return Element::new(tag, vr, Value::Strings(uids));
    }
    Element::new(tag, vr, Value::Strings(vec![value.to_string()]))
}

/// Fuzzy matching of names is implementation-defined (PS3.18 8.3.4.1): here
/// a value matches any name group that starts with it, ignoring case.
fn fuzzy_person_name(value: &str) -> String {
    if value.contains(['*', '?', '=']) {
        return value.to_string();
    }
    format!("{value}*")
}

fn parse_count(name: &str, value: &str) -> Result<usize, QidoError> {
    value.trim().parse().map_err(|_| QidoError::InvalidValue { name: name.to_string(), value: value.to_string() })
}

fn parse_bool(name: &str, value: &str) -> Result<bool, QidoError> {
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(QidoError::InvalidValue { name: name.to_string(), value: value.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn keywords_tags_and_control_parameters() {
        let request = parse(
            Level::Study,
            &[],
            &params(&[
                ("PatientName", "김*"),
                ("00080020", "20240101-20241231"),
                ("includefield", "00081030,PatientAge"),
                ("limit", "10"),
                ("offset", "20"),
            ]),
        )
        .expect("valid");
        assert_eq!(request.limit, Some(10));
        assert_eq!(request.offset, 20);
        assert_eq!(request.query.constraints.len(), 2);
        assert!(request.query.return_keys.iter().any(|(tag, _)| *tag == tags::PATIENT_AGE));
        assert!(request.query.return_keys.iter().any(|(tag, _)| *tag == computed::MODALITIES_IN_STUDY));
    }

    #[test]
    fn scope_and_uid_lists() {
        let request =
            parse(Level::Series, &[(tags::STUDY_INSTANCE_UID, "1.2.3")], &params(&[("SeriesInstanceUID", "1.2,1.3")]))
                .expect("valid");
        let series = request.query.constraint(tags::SERIES_INSTANCE_UID).expect("constraint");
        assert!(matches!(&series.matcher, crate::matching::Matcher::UidList(uids) if uids.len() == 2));
        assert!(request.query.constraint(tags::STUDY_INSTANCE_UID).is_some());
    }

    #[test]
    fn bad_parameters_are_errors() {
        assert!(matches!(
            parse(Level::Study, &[], &params(&[("NoSuchKey", "x")])),
            Err(QidoError::UnknownAttribute(_))
        ));
        assert!(matches!(parse(Level::Study, &[], &params(&[("limit", "ten")])), Err(QidoError::InvalidValue { .. })));
        assert!(matches!(
            parse(Level::Study, &[], &params(&[("fuzzymatching", "yes")])),
            Err(QidoError::InvalidValue { .. })
        ));
        assert!(parse(Level::Study, &[], &params(&[("StudyDate", "2024-01-01-2")])).is_err());
    }

    #[test]
    fn fuzzy_names_match_by_prefix() {
        let request =
            parse(Level::Study, &[], &params(&[("PatientName", "hong"), ("fuzzymatching", "true")])).expect("valid");
        let mut view = Dataset::new();
        view.put(Element::text(tags::PATIENT_NAME, VR::PN, "Hong^Gildong=洪^吉洞=홍^길동"));
        assert!(request.query.matches(&view));
    }
}
