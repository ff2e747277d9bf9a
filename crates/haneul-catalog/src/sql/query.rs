//! Reading the catalog: narrowing candidates with indexes, building the
//! merged attribute views the shared matcher decides on.

use std::collections::HashMap;

use haneul_dicom::levels::{computed, Level};
use haneul_dicom::matching::{normalize_person_name, IndexHint, KeyMatch, Query};
use haneul_dicom::{tags, Dataset, Element, Tag, Value, VR};

use super::db::{Dialect, Param, Row};
use super::write::decode_attrs;
use crate::records::*;
use crate::Result;

/// SQL conditions derived from a query's constraints. They may only narrow
/// to a superset of the true matches; the shared matcher decides.
pub(super) struct Narrowing {
    dialect: Dialect,
    clauses: Vec<String>,
    params: Vec<String>,
}

impl Narrowing {
    fn new(dialect: Dialect) -> Narrowing {
        Narrowing { dialect, clauses: Vec::new(), params: Vec::new() }
    }

    pub(super) fn params(&self) -> Vec<Param<'_>> {
        self.params.iter().map(|value| Param::Text(value)).collect()
    }

    fn param(&mut self, value: impl Into<String>) -> String {
        self.params.push(value.into());
        format!("?{}", self.params.len())
    }

    /// `column` matching a DICOM wildcard pattern (`*`, `?`), case-sensitively.
    fn pattern(&mut self, column: &str, pattern: &str) -> String {
        match self.dialect {
            // `*` and `?` mean in GLOB what they mean in DICOM.
            Dialect::Sqlite => format!("{column} GLOB {}", self.param(pattern.replace('[', "[[]"))),
            Dialect::Postgres => format!("{column} LIKE {}", self.param(like_pattern(pattern))),
        }
    }

    /// A condition on a text column for a key compared as plain text.
    fn text_column(&mut self, column: &str, key: &KeyMatch) {
        let clause = match key.matcher.hint() {
            Some(IndexHint::Equals(value)) => format!("{column} = {}", self.param(value)),
            Some(IndexHint::Pattern(pattern)) => self.pattern(column, pattern),
            Some(IndexHint::AnyOf(values)) => {
                let placeholders: Vec<String> = values.iter().map(|v| self.param(v.as_str())).collect();
                format!("{column} IN ({})", placeholders.join(", "))
            }
            Some(IndexHint::Between { lower, upper }) => {
                let mut parts = Vec::new();
                if let Some(lower) = lower {
                    parts.push(format!("{column} >= {}", self.param(lower)));
                }
                if let Some(upper) = upper {
                    parts.push(format!("{column} <= {}", self.param(upper)));
                }
                if parts.is_empty() {
                    return;
                }
                parts.join(" AND ")
            }
            None => return,
        };
        self.clauses.push(clause);
    }

    /// Person names: normalised component-group columns, as the matcher compares them.
    fn person_name(&mut self, alias: &str, key: &KeyMatch) {
        let pattern = match key.matcher.hint() {
            Some(IndexHint::Equals(value) | IndexHint::Pattern(value)) => normalize_person_name(value),
            _ => return,
        };
        let columns =
            [format!("{alias}.name_alphabetic"), format!("{alias}.name_ideographic"), format!("{alias}.name_phonetic")];
        if !pattern.contains('=') {
            let any: Vec<String> = columns.iter().map(|column| self.pattern(column, &pattern)).collect();
            self.clauses.push(format!("({})", any.join(" OR ")));
            return;
        }
        for (column, group) in columns.iter().zip(pattern.split('=')) {
            if !group.is_empty() {
                let clause = self.pattern(column, group);
                self.clauses.push(clause);
            }
        }
    }

    fn where_clause(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.clauses.join(" AND "))
        }
    }
}

/// A DICOM wildcard pattern as a LIKE pattern (backslash escapes).
fn like_pattern(pattern: &str) -> String {
    let mut like = String::with_capacity(pattern.len() + 4);
    for c in pattern.chars() {
        match c {
            '*' => like.push('%'),
            '?' => like.push('_'),
            '%' | '_' | '\\' => {
                like.push('\\');
                like.push(c);
            }
            c => like.push(c),
        }
    }
    like
}

/// `available` is the deepest level joined in the SQL, so whose columns exist.
pub(super) fn narrowing_for(dialect: Dialect, query: &Query, available: Level) -> Narrowing {
    let mut narrowing = Narrowing::new(dialect);
    // Patient keys first, as a subquery at lower levels: SQLite then starts
    // from the patient indexes even before it has statistics, instead of
    // scanning studies in key order.
    for key in &query.constraints {
        match key.tag {
            t if t == tags::PATIENT_NAME => narrowing.person_name("p", key),
            t if t == tags::PATIENT_ID => narrowing.text_column("p.patient_id", key),
            t if t == tags::PATIENT_BIRTH_DATE => narrowing.text_column("p.birth_date", key),
            t if t == tags::PATIENT_SEX => narrowing.text_column("p.sex", key),
            _ => {}
        }
    }
    if available > Level::Patient && !narrowing.clauses.is_empty() {
        let patient_clauses = std::mem::take(&mut narrowing.clauses);
        narrowing
            .clauses
            .push(format!("p.pk IN (SELECT p.pk FROM patients p WHERE {})", patient_clauses.join(" AND ")));
    }
    if !query.sites.is_empty() {
        // Exact, unlike the narrowing clauses: the matcher never sees the site.
        let placeholders: Vec<String> = query.sites.iter().map(|site| narrowing.param(site.as_str())).collect();
        let sites = placeholders.join(", ");
        narrowing.clauses.push(if available >= Level::Study {
            format!("s.site IN ({sites})")
        } else {
            format!("EXISTS (SELECT 1 FROM studies ss WHERE ss.patient_pk = p.pk AND ss.site IN ({sites}))")
        });
    }
    for key in &query.constraints {
        let tag = key.tag;
        match tag {
            t if t == tags::STUDY_INSTANCE_UID && available >= Level::Study => {
                narrowing.text_column("s.study_uid", key)
            }
            t if t == tags::STUDY_DATE && available >= Level::Study => narrowing.text_column("s.study_date", key),
            t if t == tags::ACCESSION_NUMBER && available >= Level::Study => narrowing.text_column("s.accession", key),
            t if t == tags::STUDY_ID && available >= Level::Study => narrowing.text_column("s.study_id", key),
            t if t == computed::MODALITIES_IN_STUDY && available >= Level::Study => {
                let mut inner =
                    Narrowing { dialect, clauses: Vec::new(), params: std::mem::take(&mut narrowing.params) };
                inner.text_column("m.modality", key);
                narrowing.params = inner.params;
                if let Some(clause) = inner.clauses.pop() {
                    narrowing
                        .clauses
                        .push(format!("EXISTS (SELECT 1 FROM series m WHERE m.study_pk = s.pk AND {clause})"));
                }
            }
            t if t == tags::SERIES_INSTANCE_UID && available >= Level::Series => {
                narrowing.text_column("se.series_uid", key)
            }
            t if t == tags::MODALITY && available >= Level::Series => narrowing.text_column("se.modality", key),
            t if t == tags::SOP_INSTANCE_UID && available == Level::Image => narrowing.text_column("i.sop_uid", key),
            t if t == tags::SOP_CLASS_UID && available == Level::Image => narrowing.text_column("i.sop_class", key),
            _ => {}
        }
    }
    narrowing
}

// A patient's Patient ID and issuer registers (0x00100020, 0x00100021) are a
// merge link, which changes nothing in copies.
pub(super) const INSTANCE_COLUMNS: &str = "i.pk, i.sop_uid, i.sop_class, i.transfer_syntax, i.blob_path, i.blob_size, \
     i.blob_digest, i.dataset_offset, s.study_uid, se.series_uid, \
     NOT EXISTS (SELECT 1 FROM unsettled u WHERE u.blob_path = i.blob_path AND u.write_ahead IS NULL), \
     (EXISTS (SELECT 1 FROM corrections c WHERE c.level = 'STUDY' AND c.key = s.study_uid) \
      OR EXISTS (SELECT 1 FROM corrections c WHERE c.level = 'SERIES' AND c.key = se.series_uid) \
      OR EXISTS (SELECT 1 FROM patients p JOIN corrections c ON c.level = 'PATIENT' AND c.key = p.identity \
                 WHERE p.pk = s.patient_pk AND c.tag NOT IN (1048608, 1048609)))";
/// How many columns [`INSTANCE_COLUMNS`] selects.
pub(super) const INSTANCE_COLUMN_COUNT: usize = 12;

/// Which computed counts a query's responses or constraints use.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct CountNeeds {
    patient: bool,
    study: bool,
    series: bool,
}

impl CountNeeds {
    pub(super) fn of(query: &Query) -> CountNeeds {
        let tags = query.return_keys.iter().map(|(tag, _)| *tag).chain(query.constraints.iter().map(|key| key.tag));
        let mut needs = CountNeeds::default();
        for tag in tags {
            match tag {
                t if t == computed::NUMBER_OF_PATIENT_RELATED_STUDIES
                    || t == computed::NUMBER_OF_PATIENT_RELATED_SERIES
                    || t == computed::NUMBER_OF_PATIENT_RELATED_INSTANCES =>
                {
                    needs.patient = true
                }
                t if t == computed::NUMBER_OF_STUDY_RELATED_SERIES
                    || t == computed::NUMBER_OF_STUDY_RELATED_INSTANCES =>
                {
                    needs.study = true
                }
                t if t == computed::NUMBER_OF_SERIES_RELATED_INSTANCES => needs.series = true,
                _ => {}
            }
        }
        needs
    }
}

/// The view columns of a query at `level`: per level, its primary key, its
/// attributes and its counts (NULL unless needed), in a fixed layout that
/// [`row_to_view`] reads.
pub(super) fn view_columns(level: Level, needs: CountNeeds) -> String {
    // A typed NULL: PostgreSQL reads a bare NULL column as text.
    let count = |needed: bool, sql: &str| if needed { format!("({sql})") } else { "CAST(NULL AS BIGINT)".to_string() };
    let mut columns = vec![format!(
        "p.pk, p.attrs, {}, {}, {}",
        count(needs.patient, "SELECT COUNT(*) FROM studies c WHERE c.patient_pk = p.pk"),
        count(
            needs.patient,
            "SELECT COUNT(*) FROM series c JOIN studies d ON d.pk = c.study_pk WHERE d.patient_pk = p.pk"
        ),
        count(
            needs.patient,
            "SELECT COUNT(*) FROM instances c JOIN series d ON d.pk = c.series_pk JOIN studies e ON e.pk = d.study_pk \
             WHERE e.patient_pk = p.pk"
        ),
    )];
    if level >= Level::Study {
        columns.push(format!(
            "s.pk, s.attrs, {}, {}, s.modalities, s.sop_classes",
            count(needs.study, "SELECT COUNT(*) FROM series c WHERE c.study_pk = s.pk"),
            count(
                needs.study,
                "SELECT COUNT(*) FROM instances c JOIN series d ON d.pk = c.series_pk WHERE d.study_pk = s.pk"
            ),
        ));
    }
    if level >= Level::Series {
        columns.push(format!(
            "se.pk, se.attrs, {}",
            count(needs.series, "SELECT COUNT(*) FROM instances c WHERE c.series_pk = se.pk")
        ));
    }
    if level == Level::Image {
        columns.push("i.pk, i.attrs, i.transfer_syntax".to_string());
    }
    columns.join(", ")
}

pub(super) fn select_for(level: Level, columns: &str, narrowing: &Narrowing) -> String {
    let from = match level {
        Level::Patient => "patients p",
        Level::Study => "studies s JOIN patients p ON p.pk = s.patient_pk",
        Level::Series => "series se JOIN studies s ON s.pk = se.study_pk JOIN patients p ON p.pk = s.patient_pk",
        Level::Image => {
            "instances i JOIN series se ON se.pk = i.series_pk JOIN studies s ON s.pk = se.study_pk \
             JOIN patients p ON p.pk = s.patient_pk"
        }
    };
    let order = match level {
        Level::Patient => "p.pk",
        Level::Study => "s.pk",
        Level::Series => "se.pk",
        Level::Image => "i.pk",
    };
    format!("SELECT {columns} FROM {from} {} ORDER BY {order}", narrowing.where_clause())
}

fn put_count(view: &mut Dataset, tag: Tag, count: Option<i64>) {
    if let Some(count) = count {
        view.put(Element::new(tag, VR::IS, Value::Strings(vec![count.to_string()])));
    }
}

fn set_element(tag: Tag, vr: VR, joined: &str) -> Element {
    if joined.is_empty() {
        return Element::empty(tag, vr);
    }
    Element::new(tag, vr, Value::Strings(joined.split('\\').map(str::to_string).collect()))
}

fn merge_into(target: &mut Dataset, source: &Dataset) {
    for element in source.iter() {
        target.put(element.clone());
    }
}

/// Decoded level attributes, cached per query since many rows share parents.
#[derive(Default)]
pub(super) struct AttrCache {
    by_level_pk: HashMap<(u8, i64), Dataset>,
}

impl AttrCache {
    fn get(&mut self, level: u8, pk: i64, bytes: &[u8]) -> Result<&Dataset> {
        if !self.by_level_pk.contains_key(&(level, pk)) {
            let decoded = decode_attrs(bytes, || format!("level {level} row {pk}"))?;
            if self.by_level_pk.len() > 10_000 {
                self.by_level_pk.clear();
            }
            self.by_level_pk.insert((level, pk), decoded);
        }
        Ok(&self.by_level_pk[&(level, pk)])
    }
}

/// Build the merged view of one result row. The view columns start at
/// `offset` and follow [`view_columns`]: patient, then study, series, instance.
pub(super) fn row_to_view(row: &dyn Row, offset: usize, level: Level, cache: &mut AttrCache) -> Result<Dataset> {
    let get_i64 = |index: usize| row.int(index + offset);
    let get_count = |index: usize| row.opt_int(index + offset);
    let get_bytes = |index: usize| row.bytes(index + offset);
    let get_text = |index: usize| row.text(index + offset);
    let mut view = Dataset::new();
    let patient_pk = get_i64(0)?;
    merge_into(&mut view, cache.get(0, patient_pk, &get_bytes(1)?)?);
    put_count(&mut view, computed::NUMBER_OF_PATIENT_RELATED_STUDIES, get_count(2)?);
    put_count(&mut view, computed::NUMBER_OF_PATIENT_RELATED_SERIES, get_count(3)?);
    put_count(&mut view, computed::NUMBER_OF_PATIENT_RELATED_INSTANCES, get_count(4)?);
    if level == Level::Patient {
        return Ok(view);
    }
    let study_pk = get_i64(5)?;
    merge_into(&mut view, cache.get(1, study_pk, &get_bytes(6)?)?);
    put_count(&mut view, computed::NUMBER_OF_STUDY_RELATED_SERIES, get_count(7)?);
    put_count(&mut view, computed::NUMBER_OF_STUDY_RELATED_INSTANCES, get_count(8)?);
    view.put(set_element(computed::MODALITIES_IN_STUDY, VR::CS, &get_text(9)?));
    view.put(set_element(computed::SOP_CLASSES_IN_STUDY, VR::UI, &get_text(10)?));
    if level == Level::Study {
        return Ok(view);
    }
    let series_pk = get_i64(11)?;
    merge_into(&mut view, cache.get(2, series_pk, &get_bytes(12)?)?);
    put_count(&mut view, computed::NUMBER_OF_SERIES_RELATED_INSTANCES, get_count(13)?);
    if level == Level::Series {
        return Ok(view);
    }
    let instance_pk = get_i64(14)?;
    let instance = decode_attrs(&get_bytes(15)?, || format!("instance row {instance_pk}"))?;
    merge_into(&mut view, &instance);
    // The stored transfer syntax, as WADO-RS metadata reports it.
    view.put(Element::text(tags::TRANSFER_SYNTAX_UID, VR::UI, get_text(16)?));
    Ok(view)
}

/// A stored digest as an array (zeros if the column holds something else,
/// which `haneul verify` then reports as a mismatch).
pub(super) fn digest_array(bytes: &[u8]) -> [u8; 32] {
    let mut digest = [0u8; 32];
    if bytes.len() == 32 {
        digest.copy_from_slice(bytes);
    }
    digest
}

pub(super) fn stored_instance(row: &dyn Row) -> Result<StoredInstance> {
    let digest_array = digest_array(&row.bytes(6)?);
    Ok(StoredInstance {
        pk: row.int(0)?,
        sop_uid: row.text(1)?,
        sop_class: row.text(2)?,
        transfer_syntax: row.text(3)?,
        blob: BlobInfo { path: row.text(4)?, size: row.int(5)?.max(0) as u64, digest: digest_array },
        dataset_offset: row.int(7)?.max(0) as u64,
        study_uid: row.text(8)?,
        series_uid: row.text(9)?,
        settled: row.flag(10)?,
        corrected: row.flag(11)?,
    })
}
