//! Attribute matching of PS3.4 C.2.2.2, shared by C-FIND and QIDO-RS.
//!
//! A query is a list of keys; each key becomes a [`Matcher`]. The catalog may
//! use [`Matcher::hint`] to narrow candidates with its indexes, but the final
//! decision is always [`Query::matches`] on the candidate's attributes, so
//! there is exactly one definition of what matches.

use dicom_core::{Tag, VR};
use haneul_charset::SpecificCharacterSet;

use crate::levels::{level_of, InformationModel, Level};
use crate::model::{Dataset, Element, Value};
use crate::tags;

/// How one key matches.
#[derive(Debug, Clone, PartialEq)]
pub enum Matcher {
    /// Zero-length value or `*`: everything matches.
    Universal,
    /// Exact value (case-insensitive for Latin letters in person names).
    Single(String),
    /// Value with `*` and/or `?`.
    Wildcard(String),
    /// List of UIDs (backslash-separated UI value).
    UidList(Vec<String>),
    /// Date, time or date-time range; bounds are normalised comparable strings.
    Range { lower: Option<String>, upper: Option<String> },
    /// Sequence matching: an item of the candidate must match every key.
    Sequence(Vec<KeyMatch>),
}

/// A key of a query together with its matcher.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyMatch {
    pub tag: Tag,
    pub vr: VR,
    pub matcher: Matcher,
}

/// What an index can do for a key, derived from its matcher.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexHint<'a> {
    Equals(&'a str),
    /// A glob pattern with DICOM wildcards (`*`, `?`), already normalised.
    Pattern(&'a str),
    AnyOf(&'a [String]),
    Between {
        lower: Option<&'a str>,
        upper: Option<&'a str>,
    },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    #[error("identifier has no Query/Retrieve Level (0008,0052)")]
    MissingLevel,
    #[error("unknown Query/Retrieve Level {0:?}")]
    UnknownLevel(String),
    #[error("level {0} is not part of the Study Root information model")]
    LevelNotInModel(&'static str),
    #[error("invalid range {value:?} for {tag}")]
    InvalidRange { tag: Tag, value: String },
}

/// A parsed C-FIND / QIDO query.
#[derive(Debug, Clone)]
pub struct Query {
    pub level: Level,
    pub model: InformationModel,
    /// Keys that constrain the result (universal keys left out), at or above `level`.
    pub constraints: Vec<KeyMatch>,
    /// Every attribute a response must carry, with its VR.
    pub return_keys: Vec<(Tag, VR)>,
    /// The identifier's own character set, preferred for responses.
    pub charset: SpecificCharacterSet,
    /// Only studies of these sites (and what lies under them), empty: every
    /// site. Set by the archive from the requester's scope, never from the
    /// identifier; the catalog applies it exactly, not as a narrowing.
    pub sites: Vec<String>,
}

/// Keys that steer the query itself rather than match attributes.
fn is_control_key(tag: Tag) -> bool {
    tag == tags::QUERY_RETRIEVE_LEVEL || tag == tags::SPECIFIC_CHARACTER_SET || tag.group() == 0x0002
}

impl Query {
    /// Build a query from a C-FIND identifier.
    pub fn from_identifier(identifier: &Dataset, model: InformationModel) -> Result<Query, QueryError> {
        let level_text = identifier.string(tags::QUERY_RETRIEVE_LEVEL).ok_or(QueryError::MissingLevel)?;
        let level = Level::parse(level_text).ok_or_else(|| QueryError::UnknownLevel(level_text.to_string()))?;
        if !model.allows(level) {
            return Err(QueryError::LevelNotInModel(level.as_str()));
        }
        let charset = SpecificCharacterSet::from_terms(identifier.strings(tags::SPECIFIC_CHARACTER_SET));
        let mut constraints = Vec::new();
        let mut return_keys = Vec::new();
        for element in identifier.iter() {
            if is_control_key(element.tag) {
                continue;
            }
            return_keys.push((element.tag, element.vr));
            // Keys below the query level cannot constrain a hierarchical query;
            // they are returned empty instead of failing the whole query.
            if level_of(element.tag) > level && !is_computed_key(element.tag) {
                continue;
            }
            let matcher = Matcher::from_element(element)?;
            if matcher != Matcher::Universal {
                constraints.push(KeyMatch { tag: element.tag, vr: element.vr, matcher });
            }
        }
        Ok(Query { level, model, constraints, return_keys, charset, sites: Vec::new() })
    }

    /// The constraint on one attribute, if the query has one.
    pub fn constraint(&self, tag: Tag) -> Option<&KeyMatch> {
        self.constraints.iter().find(|key| key.tag == tag)
    }

    /// Whether a candidate's attributes (all levels at and above the query
    /// level merged, computed attributes included) satisfy every key.
    pub fn matches(&self, candidate: &Dataset) -> bool {
        self.constraints.iter().all(|key| key.matches(candidate.get(key.tag)))
    }

    /// The response identifier for a matching candidate: every return key,
    /// empty when the candidate lacks it.
    pub fn response(&self, candidate: &Dataset) -> Dataset {
        let mut response = Dataset::new();
        response.put(Element::text(tags::QUERY_RETRIEVE_LEVEL, VR::CS, self.level.as_str()));
        for &(tag, vr) in &self.return_keys {
            let visible = level_of(tag) <= self.level || is_computed_key(tag);
            match candidate.get(tag) {
                Some(found) if visible => response.put(found.clone()),
                _ => response.put(Element::empty(tag, vr)),
            }
        }
        response
    }
}

fn is_computed_key(tag: Tag) -> bool {
    use crate::levels::computed::*;
    [
        MODALITIES_IN_STUDY,
        SOP_CLASSES_IN_STUDY,
        RETRIEVE_AE_TITLE,
        INSTANCE_AVAILABILITY,
        NUMBER_OF_PATIENT_RELATED_STUDIES,
        NUMBER_OF_PATIENT_RELATED_SERIES,
        NUMBER_OF_PATIENT_RELATED_INSTANCES,
        NUMBER_OF_STUDY_RELATED_SERIES,
        NUMBER_OF_STUDY_RELATED_INSTANCES,
        NUMBER_OF_SERIES_RELATED_INSTANCES,
    ]
    .contains(&tag)
}

impl Matcher {
    /// The matcher a query element asks for.
    pub fn from_element(element: &Element) -> Result<Matcher, QueryError> {
        if let Value::Sequence(items) = &element.value {
            let Some(item) = items.first() else {
                return Ok(Matcher::Universal);
            };
            let mut keys = Vec::new();
            for sub in item.iter() {
                let matcher = Matcher::from_element(sub)?;
                if matcher != Matcher::Universal {
                    keys.push(KeyMatch { tag: sub.tag, vr: sub.vr, matcher });
                }
            }
            return Ok(if keys.is_empty() { Matcher::Universal } else { Matcher::Sequence(keys) });
        }
        let values = element.value.to_strings();
        let values: Vec<&str> = values.iter().map(|v| v.trim()).filter(|v| !v.is_empty()).collect();
        let Some(&first) = values.first() else {
            return Ok(Matcher::Universal);
        };
        if element.vr == VR::UI {
            if values.len() > 1 {
                return Ok(Matcher::UidList(values.iter().map(|v| v.to_string()).collect()));
            }
            return Ok(Matcher::Single(first.to_string()));
        }
        if matches!(element.vr, VR::DA | VR::TM | VR::DT) {
            return range_matcher(element.tag, element.vr, first);
        }
        if first == "*" {
            return Ok(Matcher::Universal);
        }
        let value = if element.vr == VR::PN { normalize_person_name(first) } else { first.to_string() };
        if allows_wildcards(element.vr) && value.contains(['*', '?']) {
            return Ok(Matcher::Wildcard(value));
        }
        Ok(Matcher::Single(value))
    }

    /// What an index could use to narrow candidates for this matcher.
    pub fn hint(&self) -> Option<IndexHint<'_>> {
        match self {
            Matcher::Single(value) => Some(IndexHint::Equals(value)),
            Matcher::Wildcard(pattern) => Some(IndexHint::Pattern(pattern)),
            Matcher::UidList(values) => Some(IndexHint::AnyOf(values)),
            Matcher::Range { lower, upper } => {
                Some(IndexHint::Between { lower: lower.as_deref(), upper: upper.as_deref() })
            }
            Matcher::Universal | Matcher::Sequence(_) => None,
        }
    }
}

impl KeyMatch {
    /// Whether a candidate's element (absent = `None`) satisfies this key.
    pub fn matches(&self, candidate: Option<&Element>) -> bool {
        if self.matcher == Matcher::Universal {
            return true;
        }
        let Some(candidate) = candidate else {
            return false;
        };
        if let Matcher::Sequence(keys) = &self.matcher {
            let Value::Sequence(items) = &candidate.value else {
                return false;
            };
            return items.iter().any(|item| keys.iter().all(|key| key.matches(item.get(key.tag))));
        }
        let values = candidate.value.to_strings();
        values.iter().any(|value| self.matches_value(value))
    }

    fn matches_value(&self, value: &str) -> bool {
        let is_person_name = self.vr == VR::PN;
        match &self.matcher {
            Matcher::Universal => true,
            Matcher::Single(expected) if is_person_name => match_person_name(expected, value),
            Matcher::Wildcard(pattern) if is_person_name => match_person_name(pattern, value),
            Matcher::Single(expected) => expected == value.trim(),
            Matcher::Wildcard(pattern) => glob_match(pattern, value.trim()),
            Matcher::UidList(uids) => uids.iter().any(|uid| uid == value.trim()),
            Matcher::Range { lower, upper } => {
                let Some(normalized) = normalize_temporal(self.vr, value) else {
                    return false;
                };
                // A value stands for the moment it starts, at the bounds' precision:
                // `120000` is `120000.000000`, not before it.
                let normalized = pad_bound(&normalized, self.vr, false);
                lower.as_ref().is_none_or(|lower| normalized.as_str() >= lower.as_str())
                    && upper.as_ref().is_none_or(|upper| normalized.as_str() <= upper.as_str())
            }
            Matcher::Sequence(_) => false,
        }
    }
}

fn allows_wildcards(vr: VR) -> bool {
    matches!(vr, VR::AE | VR::CS | VR::LO | VR::LT | VR::PN | VR::SH | VR::ST | VR::UC | VR::UR | VR::UT)
}

/// Build a range (or single-value) matcher for DA, TM and DT keys.
fn range_matcher(tag: Tag, vr: VR, text: &str) -> Result<Matcher, QueryError> {
    let invalid = || QueryError::InvalidRange { tag, value: text.to_string() };
    let Some((lower, upper)) = text.split_once('-').filter(|_| vr != VR::DT || !looks_like_utc_offset(text)) else {
        let value = normalize_temporal(vr, text).ok_or_else(invalid)?;
        // A single date or time matches the whole period it names.
        return Ok(Matcher::Range {
            lower: Some(pad_bound(&value, vr, false)),
            upper: Some(pad_bound(&value, vr, true)),
        });
    };
    let lower = lower.trim();
    let upper = upper.trim();
    if lower.is_empty() && upper.is_empty() {
        return Err(invalid());
    }
    let bound = |part: &str, is_upper: bool| -> Result<Option<String>, QueryError> {
        if part.is_empty() {
            return Ok(None);
        }
        let normalized = normalize_temporal(vr, part).ok_or_else(invalid)?;
        Ok(Some(pad_bound(&normalized, vr, is_upper)))
    };
    Ok(Matcher::Range { lower: bound(lower, false)?, upper: bound(upper, true)? })
}

/// A DT value like `20200101120000+0900` contains '-' only as a UTC offset sign.
fn looks_like_utc_offset(text: &str) -> bool {
    text.rfind(['-', '+']).is_some_and(|pos| pos >= 8 && text.len() - pos == 5)
}

/// Normalise a DA/TM/DT value to a digits-and-dot form that sorts in time order:
/// legacy `YYYY.MM.DD` dates and `HH:MM:SS` times lose their separators, and
/// a DT's UTC offset is dropped.
pub fn normalize_temporal(vr: VR, text: &str) -> Option<String> {
    let text = text.trim();
    let text = if vr == VR::DT {
        match text.rfind(['+', '-']) {
            Some(pos) if pos >= 4 => &text[..pos],
            _ => text,
        }
    } else {
        text
    };
    let is_separator = |c: &char| matches!(c, ':' | ' ') || (vr == VR::DA && *c == '.');
    let cleaned: String = text.chars().filter(|c| !is_separator(c)).collect();
    let valid = !cleaned.is_empty()
        && cleaned.chars().all(|c| c.is_ascii_digit() || c == '.')
        && cleaned.chars().filter(|&c| c == '.').count() <= 1;
    valid.then_some(cleaned)
}

/// Extend a partial bound to full precision: lower bounds with zeros, upper
/// bounds with nines, so `-1200` includes 12:00:59 and `2020` covers the year.
fn pad_bound(value: &str, vr: VR, upper: bool) -> String {
    let full = match vr {
        VR::DA => 8,
        VR::TM => 13, // HHMMSS.FFFFFF
        _ => 21,      // YYYYMMDDHHMMSS.FFFFFF
    };
    let mut out = value.to_string();
    let dot_at = if vr == VR::TM { 6 } else { 14 };
    while out.len() < full {
        if vr != VR::DA && out.len() == dot_at && !out.contains('.') {
            out.push('.');
            continue;
        }
        out.push(if upper { '9' } else { '0' });
    }
    out
}

/// Canonical form of a person name for matching and indexing: Latin letters
/// upper-cased, empty trailing components and groups removed.
pub fn normalize_person_name(name: &str) -> String {
    let groups: Vec<String> = name.split('=').map(normalize_name_group).collect();
    let mut groups = groups;
    while groups.len() > 1 && groups.last().is_some_and(String::is_empty) {
        groups.pop();
    }
    groups.join("=")
}

/// One component group in canonical form (see [`normalize_person_name`]).
pub fn normalize_name_group(group: &str) -> String {
    let trimmed = group.trim().trim_end_matches(['^', ' ']);
    trimmed.split('^').map(|component| component.trim().to_uppercase()).collect::<Vec<_>>().join("^")
}

/// The component groups of a stored person name (alphabetic, ideographic,
/// phonetic), canonical and possibly empty.
pub fn person_name_groups(name: &str) -> [String; 3] {
    let mut groups = name.split('=').map(normalize_name_group);
    [groups.next().unwrap_or_default(), groups.next().unwrap_or_default(), groups.next().unwrap_or_default()]
}

/// Person name matching per component group: a pattern without `=` matches
/// if any group of the name matches it, so `홍*` and `Hong*` both find
/// `Hong^Gildong=洪^吉洞=홍^길동`; a pattern with groups must match group by group.
pub fn match_person_name(pattern: &str, name: &str) -> bool {
    let pattern = normalize_person_name(pattern);
    let groups = person_name_groups(name);
    if !pattern.contains('=') {
        return groups.iter().any(|group| !group.is_empty() && glob_match(&pattern, group));
    }
    pattern
        .split('=')
        .enumerate()
        .all(|(index, wanted)| wanted.is_empty() || groups.get(index).is_some_and(|group| glob_match(wanted, group)))
}

/// DICOM wildcard matching: `*` any run of characters, `?` exactly one.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0usize, 0usize);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            backtrack = Some((p, t));
            p += 1;
        } else if let Some((star, matched)) = backtrack {
            p = star + 1;
            t = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tag: Tag, vr: VR, value: &str) -> KeyMatch {
        let element = Element::text(tag, vr, value);
        KeyMatch { tag, vr, matcher: Matcher::from_element(&element).expect("valid key") }
    }

    fn pn(value: &str) -> Element {
        Element::text(tags::PATIENT_NAME, VR::PN, value)
    }

    #[test]
    fn korean_and_latin_prefixes_find_the_same_name() {
        let name = pn("Hong^Gildong=洪^吉洞=홍^길동");
        for query in ["홍*", "Hong*", "hong^gil*", "洪*", "HONG^GILDONG", "*길동", "=洪*", "Hong*=洪*"] {
            assert!(key(tags::PATIENT_NAME, VR::PN, query).matches(Some(&name)), "{query}");
        }
        for query in ["Kim*", "홍", "=홍*", "Hong^Gildong=김*"] {
            assert!(!key(tags::PATIENT_NAME, VR::PN, query).matches(Some(&name)), "{query}");
        }
    }

    #[test]
    fn single_values_ignore_trailing_empty_components() {
        assert!(key(tags::PATIENT_NAME, VR::PN, "Doe^John").matches(Some(&pn("DOE^JOHN^^^"))));
        assert!(!key(tags::PATIENT_NAME, VR::PN, "Doe").matches(Some(&pn("Doe^John"))));
    }

    #[test]
    fn wildcards_and_case_sensitivity_outside_names() {
        let modality = Element::new(tags::MODALITIES_IN_STUDY, VR::CS, Value::Strings(vec!["CT".into(), "MR".into()]));
        assert!(key(tags::MODALITIES_IN_STUDY, VR::CS, "MR").matches(Some(&modality)));
        assert!(!key(tags::MODALITIES_IN_STUDY, VR::CS, "mr").matches(Some(&modality)));
        let description = Element::text(tags::STUDY_DESCRIPTION, VR::LO, "CHEST PA");
        assert!(key(tags::STUDY_DESCRIPTION, VR::LO, "CHE?T*").matches(Some(&description)));
        assert!(!key(tags::STUDY_DESCRIPTION, VR::LO, "ABD*").matches(Some(&description)));
        assert!(!key(tags::STUDY_DESCRIPTION, VR::LO, "CHEST").matches(Some(&description)));
    }

    #[test]
    fn universal_keys_match_absent_attributes_but_others_do_not() {
        assert!(key(tags::ACCESSION_NUMBER, VR::SH, "").matches(None));
        assert!(key(tags::ACCESSION_NUMBER, VR::SH, "*").matches(None));
        assert!(!key(tags::ACCESSION_NUMBER, VR::SH, "A1").matches(None));
    }

    #[test]
    fn date_and_time_ranges() {
        let date = Element::text(tags::STUDY_DATE, VR::DA, "20240315");
        for (query, expected) in [
            ("20240315", true),
            ("20240101-20241231", true),
            ("-20240314", false),
            ("20240316-", false),
            ("20240315-", true),
            ("2024-2024", true),
        ] {
            assert_eq!(key(tags::STUDY_DATE, VR::DA, query).matches(Some(&date)), expected, "{query}");
        }
        let time = Element::text(tags::STUDY_TIME, VR::TM, "120059.5");
        assert!(key(tags::STUDY_TIME, VR::TM, "-1200").matches(Some(&time)));
        assert!(!key(tags::STUDY_TIME, VR::TM, "1201-").matches(Some(&time)));
        assert!(key(tags::STUDY_TIME, VR::TM, "1100-1300").matches(Some(&time)));
        let legacy = Element::text(tags::STUDY_DATE, VR::DA, "2024.03.15");
        assert!(key(tags::STUDY_DATE, VR::DA, "20240315").matches(Some(&legacy)));
    }

    #[test]
    fn times_on_a_bound_match_whatever_their_precision() {
        for stored in ["120000", "1200", "12", "120000.000"] {
            let time = Element::text(tags::STUDY_TIME, VR::TM, stored);
            for query in ["120000", "1200", "12-125959.999999", "120000-1300", "-120000", "1100-1200"] {
                assert!(key(tags::STUDY_TIME, VR::TM, query).matches(Some(&time)), "{stored} against {query}");
            }
            assert!(!key(tags::STUDY_TIME, VR::TM, "1201-").matches(Some(&time)), "{stored}");
            assert!(!key(tags::STUDY_TIME, VR::TM, "-115959.999999").matches(Some(&time)), "{stored}");
        }
        let moment = Element::text(tags::ACQUISITION_DATE_TIME, VR::DT, "20240315120000");
        assert!(key(tags::ACQUISITION_DATE_TIME, VR::DT, "20240315120000-20240315130000").matches(Some(&moment)));
        assert!(key(tags::ACQUISITION_DATE_TIME, VR::DT, "20240315120000").matches(Some(&moment)));
    }

    #[test]
    fn uid_lists() {
        let uid = Element::text(tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3");
        let list = Element::new(tags::STUDY_INSTANCE_UID, VR::UI, Value::Strings(vec!["1.2.4".into(), "1.2.3".into()]));
        let matcher = Matcher::from_element(&list).expect("valid");
        assert!(KeyMatch { tag: list.tag, vr: VR::UI, matcher: matcher.clone() }.matches(Some(&uid)));
        let other = Element::text(tags::STUDY_INSTANCE_UID, VR::UI, "1.2.5");
        assert!(!KeyMatch { tag: list.tag, vr: VR::UI, matcher }.matches(Some(&other)));
    }

    #[test]
    fn sequence_matching() {
        let mut item = Dataset::new();
        item.put(Element::text(Tag(0x0008, 0x0100), VR::SH, "T-04000"));
        let stored = Element::new(Tag(0x0008, 0x2218), VR::SQ, Value::Sequence(vec![item]));
        let mut wanted = Dataset::new();
        wanted.put(Element::text(Tag(0x0008, 0x0100), VR::SH, "T-04*"));
        let query = Element::new(Tag(0x0008, 0x2218), VR::SQ, Value::Sequence(vec![wanted]));
        let matcher = Matcher::from_element(&query).expect("valid");
        assert!(KeyMatch { tag: query.tag, vr: VR::SQ, matcher }.matches(Some(&stored)));
    }

    #[test]
    fn glob_matching_edge_cases() {
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("??", "홍길"));
        assert!(!glob_match("?", ""));
    }

    #[test]
    fn query_from_identifier_splits_constraints_and_return_keys() {
        let mut identifier = Dataset::new();
        identifier.put(Element::text(tags::QUERY_RETRIEVE_LEVEL, VR::CS, "STUDY"));
        identifier.put(Element::text(tags::PATIENT_NAME, VR::PN, "홍*"));
        identifier.put(Element::empty(tags::STUDY_INSTANCE_UID, VR::UI));
        identifier.put(Element::text(tags::SOP_INSTANCE_UID, VR::UI, "1.2"));
        let query = Query::from_identifier(&identifier, InformationModel::StudyRoot).expect("valid");
        assert_eq!(query.level, Level::Study);
        assert_eq!(query.constraints.len(), 1, "image-level key is not a study-level constraint");
        assert_eq!(query.return_keys.len(), 3);

        identifier.put(Element::text(tags::QUERY_RETRIEVE_LEVEL, VR::CS, "PATIENT"));
        assert_eq!(
            Query::from_identifier(&identifier, InformationModel::StudyRoot).expect_err("not in model"),
            QueryError::LevelNotInModel("PATIENT")
        );
    }
}
