//! Listing what a DICOM node holds through C-FIND (Study Root).
//!
//! Legacy archives often cap the answers of one C-FIND (Orthanc's
//! `LimitFindResults`), some silently, some with a final Cancel status. A
//! listing therefore goes slice by slice: the whole date range first, and a
//! slice whose answers reach the cap (or end in Cancel) is split — a date
//! range in halves, a single day into halves of the day by StudyTime, down to
//! one hour. What a one-hour slice still caps is kept as found and reported in
//! [`StudyListing::truncated`]. A slice with exactly `cap` answers counts as
//! capped (a silent cap cannot be told from a full answer). Studies of a
//! capped day that have no StudyTime match no hour: they are found only if
//! the day's own (capped) answers named them.
//!
//! A range is *open* when it starts at [`OPEN_FROM`] (or earlier): one more
//! query without a date key then finds studies that have no StudyDate (or one
//! that is not a plain YYYYMMDD date), which no date range matches.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use haneul_dicom::levels::InformationModel;
use haneul_dicom::{tags, ts, Dataset, Element, Tag, VR};
use haneul_dimse::command::status;
use haneul_dimse::{Client, ProposedContext, RequestParams};

use crate::silence::Heartbeat;

/// The first day of an open range: `from` at or before it also lists studies
/// without a StudyDate.
pub const OPEN_FROM: &str = "19000101";
/// The last day a range can name; the default end of an open range.
pub const LAST_DAY: &str = "99991231";

/// A DICOM node to query: its AE title and address, and ours as it knows us.
#[derive(Debug, Clone)]
pub struct DicomNode {
    pub ae_title: String,
    pub host: String,
    pub port: u16,
    /// Our AE title as the node knows us.
    pub calling_ae: String,
    pub max_pdu_length: u32,
    pub timeout: Duration,
}

impl DicomNode {
    /// A node written `AE@host:port` (an IPv6 host in brackets), with
    /// defaults for the PDU length (64 KiB) and the timeout (30 s).
    pub fn parse(spec: &str, calling_ae: &str) -> Result<DicomNode, String> {
        let invalid = |why: &str| format!("invalid DICOM node {spec:?} ({why}); expected AE@host:port");
        let (ae_title, address) = spec.split_once('@').ok_or_else(|| invalid("no @"))?;
        let (host, port) = address.rsplit_once(':').ok_or_else(|| invalid("no port"))?;
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let port: u16 = port.parse().map_err(|_| invalid("bad port"))?;
        if ae_title.is_empty() || ae_title.len() > 16 || ae_title.contains('\\') {
            return Err(invalid("the AE title must have 1 to 16 characters"));
        }
        if host.is_empty() || port == 0 {
            return Err(invalid("no host or port"));
        }
        Ok(DicomNode {
            ae_title: ae_title.to_string(),
            host: host.to_string(),
            port,
            calling_ae: calling_ae.to_string(),
            max_pdu_length: 65536,
            timeout: Duration::from_secs(30),
        })
    }

    /// `host:port` to connect to.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// How to open an association to the node (plain TCP).
    pub fn request_params(&self) -> RequestParams {
        RequestParams {
            calling_ae: self.calling_ae.clone(),
            called_ae: self.ae_title.clone(),
            max_pdu_length: self.max_pdu_length,
            timeout: self.timeout,
            tls: None,
        }
    }

    fn error(&self, detail: impl Into<String>) -> WalkError {
        WalkError::Node { node: self.to_string(), detail: detail.into() }
    }
}

/// `AE@host:port`, the form error messages and reports name nodes by.
impl fmt::Display for DicomNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.ae_title, self.address())
    }
}

/// Study dates to list, inclusive, as DICOM dates (YYYYMMDD).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateRange {
    pub from: String,
    pub to: String,
}

impl DateRange {
    /// A checked range: both ends valid dates, `from` not after `to`.
    pub fn new(from: &str, to: &str) -> Result<DateRange, String> {
        let range = DateRange { from: from.to_string(), to: to.to_string() };
        range.days()?;
        Ok(range)
    }

    /// Everything: every date, and studies without one.
    pub fn all() -> DateRange {
        DateRange { from: OPEN_FROM.to_string(), to: LAST_DAY.to_string() }
    }

    /// Whether studies without a StudyDate belong to the range (it starts at
    /// [`OPEN_FROM`] or earlier).
    pub fn is_open(&self) -> bool {
        self.from.as_str() <= OPEN_FROM
    }

    pub(crate) fn days(&self) -> Result<(time::Date, time::Date), String> {
        let from = parse_day(&self.from)?;
        let to = parse_day(&self.to)?;
        if from > to {
            return Err(format!("the date range {}-{} ends before it starts", self.from, self.to));
        }
        Ok((from, to))
    }
}

/// One study as the node describes it at STUDY level.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StudySummary {
    pub study_uid: String,
    pub patient_id: String,
    pub patient_name: String,
    pub study_date: String,
    /// Number of Study Related Instances, when the node gives it.
    pub instances: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("{node}: {detail}")]
    Node { node: String, detail: String },
}

/// A listing and how complete it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StudyListing {
    /// Deduplicated by Study Instance UID, sorted by date (undated first), then UID.
    pub studies: Vec<StudySummary>,
    /// Slices that still reached the cap and could not be split further:
    /// studies in them may be missing from `studies`.
    pub truncated: Vec<Truncated>,
    /// C-FIND requests sent.
    pub queries: usize,
}

/// A slice of the listing whose answers stayed capped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Truncated {
    /// What was asked, e.g. `20240105 10:00-10:59` or `undated`.
    pub slice: String,
    /// Answers the node gave to it.
    pub answers: usize,
}

/// Where a listing stands, after each C-FIND.
#[derive(Debug, Clone, Copy)]
pub struct WalkProgress<'a> {
    pub queries: usize,
    /// Distinct studies found so far.
    pub studies: usize,
    /// Slices still to query.
    pub pending: usize,
    /// The slice just queried.
    pub slice: &'a Slice,
}

/// Every study of `node` dated within `range`, plus studies without a date
/// when the range is open. A query whose answers reach `cap` (the node's
/// limit on C-FIND answers; `None`: no limit) is split into smaller date
/// ranges, down to single days and then times of day.
pub async fn list_studies(
    node: &DicomNode,
    range: &DateRange,
    cap: Option<usize>,
) -> Result<Vec<StudySummary>, WalkError> {
    Ok(list_studies_with(node, range, cap, &mut |_| {}).await?.studies)
}

/// [`list_studies`] with what stayed truncated and the number of queries,
/// calling `on_progress` after each C-FIND. Truncated slices are also logged
/// as warnings.
pub async fn list_studies_with(
    node: &DicomNode,
    range: &DateRange,
    cap: Option<usize>,
    on_progress: &mut (dyn FnMut(WalkProgress<'_>) + Send),
) -> Result<StudyListing, WalkError> {
    let (from, to) = range.days().map_err(|detail| node.error(detail))?;
    let mut pending = Vec::new();
    if range.is_open() {
        pending.push(Slice::Undated);
    }
    pending.push(Slice::Dates { from, to });
    let mut client = connect(node).await?;
    let mut found: BTreeMap<String, StudySummary> = BTreeMap::new();
    let mut listing = StudyListing::default();
    while let Some(slice) = pending.pop() {
        let (answers, code) = find(&mut client, node, &slice.identifier()).await?;
        listing.queries += 1;
        let count = answers.len();
        for answer in answers {
            let Some(study) = summary(&answer) else {
                tracing::debug!(node = %node, "a study answer without a Study Instance UID, skipped");
                continue;
            };
            if slice == Slice::Undated && parse_day(&study.study_date).is_ok() {
                // Dated studies come from the date slices, within the range.
                continue;
            }
            found.entry(study.study_uid.clone()).or_insert(study);
        }
        if is_capped(count, cap, code) {
            let parts = slice.split();
            if parts.is_empty() {
                tracing::warn!(
                    node = %node,
                    slice = %slice,
                    answers = count,
                    "answers still capped on a slice that cannot be split: studies of it may be missing"
                );
                listing.truncated.push(Truncated { slice: slice.to_string(), answers: count });
            }
            // Last pushed is queried first: keep the listing in date order.
            pending.extend(parts.into_iter().rev());
        }
        on_progress(WalkProgress {
            queries: listing.queries,
            studies: found.len(),
            pending: pending.len(),
            slice: &slice,
        });
    }
    release(client, node).await;
    let mut studies: Vec<StudySummary> = found.into_values().collect();
    studies.sort_by(|a, b| (&a.study_date, &a.study_uid).cmp(&(&b.study_date, &b.study_uid)));
    listing.studies = studies;
    Ok(listing)
}

/// SOP Instance UIDs of one study at `node` (C-FIND at IMAGE level).
pub async fn study_instances(node: &DicomNode, study_uid: &str) -> Result<Vec<String>, WalkError> {
    let mut client = connect(node).await?;
    let result = instances_of(&mut client, node, study_uid).await;
    release(client, node).await;
    result
}

/// The SOP classes of one study as `node` states them at STUDY level (SOP
/// Classes in Study, which a C-FIND SCP need not answer); `None` where it
/// gives none. Orthanc answers them from its database, where an IMAGE-level
/// listing with each instance's class makes it read every file.
pub(crate) async fn study_sop_classes(
    node: &DicomNode,
    study_uid: &str,
) -> Result<Option<BTreeSet<String>>, WalkError> {
    let mut identifier = retrieve_identifier(study_uid, None);
    identifier.put(Element::empty(tags::SOP_CLASSES_IN_STUDY, VR::UI));
    let mut client = connect(node).await?;
    let result = find(&mut client, node, &identifier).await;
    release(client, node).await;
    let (answers, _) = result?;
    Ok(stated_sop_classes(&answers, study_uid))
}

fn stated_sop_classes(answers: &[Dataset], study_uid: &str) -> Option<BTreeSet<String>> {
    let classes: BTreeSet<String> = answers
        .iter()
        .filter(|answer| text(answer, tags::STUDY_INSTANCE_UID).as_deref() == Some(study_uid))
        .flat_map(|answer| answer.strings(tags::SOP_CLASSES_IN_STUDY))
        .map(|class| class.trim_matches(|c: char| c == '\0' || c.is_whitespace()).to_string())
        .filter(|class| !class.is_empty())
        .collect();
    (!classes.is_empty()).then_some(classes)
}

/// What a listing at IMAGE level asks for besides the instances' UIDs. A
/// node may answer the UIDs from its database but read every instance's file
/// for more (Orthanc 1.10 does for SOP Class UID), so only a fetch that needs
/// the classes asks for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listing {
    UidsOnly,
    WithSopClasses,
}

/// One instance as a node lists it at IMAGE level.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct InstanceRef {
    pub series_uid: String,
    pub sop_uid: String,
    /// Empty where the node does not return it.
    pub sop_class: String,
}

/// The instances of one study at `node`, by series (C-FIND at IMAGE level).
pub async fn study_instance_refs(node: &DicomNode, study_uid: &str) -> Result<Vec<InstanceRef>, WalkError> {
    let mut client = connect(node).await?;
    let result = instance_refs_of(&mut client, node, study_uid, Listing::WithSopClasses).await;
    release(client, node).await;
    result
}

/// List a study just fetched on the association that fetched it (UIDs only),
/// then end the association before the caller's slot opens another: released,
/// or aborted where the listing failed (the node may have gone silent). `None`
/// then: the verification asks again on an association of its own.
pub(crate) async fn list_then_release(
    mut client: Client,
    node: &DicomNode,
    study_uid: &str,
) -> Option<BTreeSet<String>> {
    match instances_of(&mut client, node, study_uid).await {
        Ok(uids) => {
            release(client, node).await;
            Some(uids.into_iter().collect())
        }
        Err(error) => {
            tracing::debug!(node = %node, study_uid, %error, "listing the fetched study on its association failed");
            client.abort().await;
            None
        }
    }
}

pub(crate) async fn instances_of(
    client: &mut Client,
    node: &DicomNode,
    study_uid: &str,
) -> Result<Vec<String>, WalkError> {
    let refs = instance_refs_of(client, node, study_uid, Listing::UidsOnly).await?;
    let uids: BTreeSet<String> = refs.into_iter().map(|instance| instance.sop_uid).collect();
    Ok(uids.into_iter().collect())
}

async fn instance_refs_of(
    client: &mut Client,
    node: &DicomNode,
    study_uid: &str,
    listing: Listing,
) -> Result<Vec<InstanceRef>, WalkError> {
    let (answers, code) = find(client, node, &image_identifier(study_uid, "", listing)).await?;
    let mut refs: BTreeSet<InstanceRef> = answers.iter().filter_map(instance_ref).collect();
    if code == status::CANCEL {
        // The node capped the answers: ask series by series instead.
        let (series_answers, series_code) = find(client, node, &series_identifier(study_uid)).await?;
        if series_code == status::CANCEL {
            return Err(node.error(format!("the series of study {study_uid} are more than the node answers")));
        }
        for series_uid in series_answers.iter().filter_map(|a| text(a, tags::SERIES_INSTANCE_UID)) {
            let (answers, code) = find(client, node, &image_identifier(study_uid, &series_uid, listing)).await?;
            if code == status::CANCEL {
                return Err(node.error(format!("the instances of series {series_uid} are more than the node answers")));
            }
            refs.extend(answers.iter().filter_map(instance_ref));
        }
    }
    Ok(refs.into_iter().collect())
}

fn instance_ref(answer: &Dataset) -> Option<InstanceRef> {
    Some(InstanceRef {
        series_uid: text(answer, tags::SERIES_INSTANCE_UID).unwrap_or_default(),
        sop_uid: text(answer, tags::SOP_INSTANCE_UID)?,
        sop_class: text(answer, tags::SOP_CLASS_UID).unwrap_or_default(),
    })
}

/// One C-FIND at STUDY level, narrowed by StudyDate and StudyTime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slice {
    /// Studies dated `from` to `to`, inclusive.
    Dates { from: time::Date, to: time::Date },
    /// Studies of one day whose StudyTime falls in the hours `start..end`.
    Hours { day: time::Date, start: u8, end: u8 },
    /// Every study, whatever its date (for those that have none).
    Undated,
}

impl Slice {
    /// The smaller slices that cover this one; empty when it cannot be split.
    pub fn split(&self) -> Vec<Slice> {
        match *self {
            Slice::Dates { from, to } if from == to => {
                vec![Slice::Hours { day: from, start: 0, end: 12 }, Slice::Hours { day: from, start: 12, end: 24 }]
            }
            Slice::Dates { from, to } => {
                let half = (to.to_julian_day() - from.to_julian_day()) / 2;
                match time::Date::from_julian_day(from.to_julian_day() + half) {
                    Ok(middle) => vec![
                        Slice::Dates { from, to: middle },
                        Slice::Dates { from: middle.next_day().unwrap_or(to), to },
                    ],
                    Err(_) => Vec::new(),
                }
            }
            Slice::Hours { day, start, end } if end - start > 1 => {
                let middle = start + (end - start) / 2;
                vec![Slice::Hours { day, start, end: middle }, Slice::Hours { day, start: middle, end }]
            }
            Slice::Hours { .. } | Slice::Undated => Vec::new(),
        }
    }

    /// The StudyDate key: `from-to`, a day, or universal.
    pub fn study_date(&self) -> String {
        match *self {
            Slice::Dates { from, to } if from == to => dicom_date(from),
            Slice::Dates { from, to } => format!("{}-{}", dicom_date(from), dicom_date(to)),
            Slice::Hours { day, .. } => dicom_date(day),
            Slice::Undated => String::new(),
        }
    }

    /// The StudyTime key: universal, or `HH-HH5959.999999` for hours
    /// `start..end`. The lower bound is the bare hour so that archives
    /// comparing times as text (Orthanc) still take `HH` and `HHMM` values.
    pub fn study_time(&self) -> String {
        match *self {
            Slice::Hours { start, end, .. } => format!("{start:02}-{:02}5959.999999", end.saturating_sub(1)),
            _ => String::new(),
        }
    }

    fn identifier(&self) -> Dataset {
        let mut identifier = Dataset::new();
        identifier.put(Element::text(tags::QUERY_RETRIEVE_LEVEL, VR::CS, "STUDY"));
        identifier.put(Element::text(tags::STUDY_DATE, VR::DA, self.study_date()));
        identifier.put(Element::text(tags::STUDY_TIME, VR::TM, self.study_time()));
        for (tag, vr) in [
            (tags::STUDY_INSTANCE_UID, VR::UI),
            (tags::PATIENT_ID, VR::LO),
            (tags::PATIENT_NAME, VR::PN),
            (tags::NUMBER_OF_STUDY_RELATED_INSTANCES, VR::IS),
        ] {
            identifier.put(Element::empty(tag, vr));
        }
        identifier
    }
}

/// `20240101-20240131`, `20240105`, `20240105 10:00-10:59`, `undated`.
impl fmt::Display for Slice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Slice::Hours { day, start, end } => {
                write!(f, "{} {start:02}:00-{:02}:59", dicom_date(day), end.saturating_sub(1))
            }
            Slice::Undated => f.write_str("undated"),
            Slice::Dates { .. } => f.write_str(&self.study_date()),
        }
    }
}

/// Whether a C-FIND's answers may have been cut short: as many as the cap,
/// or a final Cancel status (Orthanc's answer when it crops them).
pub fn is_capped(answers: usize, cap: Option<usize>, final_status: u16) -> bool {
    final_status == status::CANCEL || cap.is_some_and(|cap| answers >= cap)
}

pub(crate) fn parse_day(text: &str) -> Result<time::Date, String> {
    let invalid = || format!("invalid date {text:?}; expected YYYYMMDD");
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let number = |range: std::ops::Range<usize>| text[range].parse::<u16>().map_err(|_| invalid());
    let month = time::Month::try_from(number(4..6)? as u8).map_err(|_| invalid())?;
    time::Date::from_calendar_date(i32::from(number(0..4)?), month, number(6..8)? as u8).map_err(|_| invalid())
}

fn dicom_date(date: time::Date) -> String {
    format!("{:04}{:02}{:02}", date.year(), u8::from(date.month()), date.day())
}

fn text(dataset: &Dataset, tag: Tag) -> Option<String> {
    dataset.string(tag).map(|value| value.trim().to_string()).filter(|value| !value.is_empty())
}

fn summary(answer: &Dataset) -> Option<StudySummary> {
    Some(StudySummary {
        study_uid: text(answer, tags::STUDY_INSTANCE_UID)?,
        patient_id: text(answer, tags::PATIENT_ID).unwrap_or_default(),
        patient_name: text(answer, tags::PATIENT_NAME).unwrap_or_default(),
        study_date: text(answer, tags::STUDY_DATE).unwrap_or_default(),
        instances: answer.int(tags::NUMBER_OF_STUDY_RELATED_INSTANCES).and_then(|n| u32::try_from(n).ok()),
    })
}

/// What a C-MOVE or C-GET asks for: a study, or one series of it.
pub(crate) fn retrieve_identifier(study_uid: &str, series_uid: Option<&str>) -> Dataset {
    let mut identifier = Dataset::new();
    let level = if series_uid.is_some() { "SERIES" } else { "STUDY" };
    identifier.put(Element::text(tags::QUERY_RETRIEVE_LEVEL, VR::CS, level));
    identifier.put(Element::text(tags::STUDY_INSTANCE_UID, VR::UI, study_uid));
    if let Some(series_uid) = series_uid {
        identifier.put(Element::text(tags::SERIES_INSTANCE_UID, VR::UI, series_uid));
    }
    identifier
}

fn series_identifier(study_uid: &str) -> Dataset {
    let mut identifier = Dataset::new();
    identifier.put(Element::text(tags::QUERY_RETRIEVE_LEVEL, VR::CS, "SERIES"));
    identifier.put(Element::text(tags::STUDY_INSTANCE_UID, VR::UI, study_uid));
    identifier.put(Element::empty(tags::SERIES_INSTANCE_UID, VR::UI));
    identifier
}

fn image_identifier(study_uid: &str, series_uid: &str, listing: Listing) -> Dataset {
    let mut identifier = Dataset::new();
    identifier.put(Element::text(tags::QUERY_RETRIEVE_LEVEL, VR::CS, "IMAGE"));
    identifier.put(Element::text(tags::STUDY_INSTANCE_UID, VR::UI, study_uid));
    identifier.put(Element::text(tags::SERIES_INSTANCE_UID, VR::UI, series_uid));
    identifier.put(Element::empty(tags::SOP_INSTANCE_UID, VR::UI));
    if listing == Listing::WithSopClasses {
        identifier.put(Element::empty(tags::SOP_CLASS_UID, VR::UI));
    }
    identifier
}

pub(crate) async fn connect(node: &DicomNode) -> Result<Client, WalkError> {
    let params = node.request_params();
    let proposed = [ProposedContext::new(
        haneul_dimse::sop::STUDY_ROOT_FIND,
        &[ts::EXPLICIT_VR_LITTLE_ENDIAN, ts::IMPLICIT_VR_LITTLE_ENDIAN],
    )];
    Client::connect(&node.address(), &params, &proposed)
        .await
        .map_err(|error| node.error(format!("association: {error}")))
}

/// Release an association, waiting at most the node's timeout for its answer.
pub(crate) async fn release(client: Client, node: &DicomNode) {
    match tokio::time::timeout(node.timeout, client.release()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(node = %node, %error, "association release failed"),
        Err(_) => tracing::debug!(node = %node, "association release not answered in time"),
    }
}

/// One C-FIND: its answers and final status (success or Cancel; any other
/// status is an error). The node must send each answer within its timeout.
async fn find(client: &mut Client, node: &DicomNode, identifier: &Dataset) -> Result<(Vec<Dataset>, u16), WalkError> {
    // Given up only when the node stays silent, however long the listing.
    let heartbeat = Heartbeat::new();
    let mut answers = Vec::new();
    let result = {
        let find = client.find(InformationModel::StudyRoot, identifier, |answer| {
            answers.push(answer);
            heartbeat.beat();
        });
        tokio::select! {
            result = find => result,
            () = heartbeat.silence(node.timeout, || false) => {
                return Err(node.error(format!("no C-FIND answer within {} s", node.timeout.as_secs_f32())));
            }
        }
    };
    let code = result.map_err(|error| node.error(format!("C-FIND: {error}")))?;
    if code != status::SUCCESS && code != status::CANCEL {
        return Err(node.error(format!("C-FIND failed with status {code:04X}H")));
    }
    Ok((answers, code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> time::Date {
        parse_day(text).expect("a valid date")
    }

    fn dates(from: &str, to: &str) -> Slice {
        Slice::Dates { from: day(from), to: day(to) }
    }

    /// Every day a slice tree covers, walking it down to single days.
    fn covered_days(slice: &Slice, out: &mut Vec<time::Date>) {
        match *slice {
            Slice::Dates { from, to } if from == to => out.push(from),
            Slice::Dates { .. } => slice.split().iter().for_each(|part| covered_days(part, out)),
            _ => panic!("not a date slice: {slice:?}"),
        }
    }

    #[test]
    fn a_date_range_splits_into_halves_that_cover_it_once() {
        assert_eq!(
            dates("20240101", "20240131").split(),
            vec![dates("20240101", "20240116"), dates("20240117", "20240131")]
        );
        assert_eq!(
            dates("20240228", "20240301").split(),
            vec![dates("20240228", "20240229"), dates("20240301", "20240301")]
        );
        assert_eq!(
            dates("20231231", "20240101").split(),
            vec![dates("20231231", "20231231"), dates("20240101", "20240101")]
        );
        let mut days = Vec::new();
        covered_days(&dates("20231120", "20240310"), &mut days);
        let expected: Vec<time::Date> = std::iter::successors(Some(day("20231120")), |d| d.next_day())
            .take_while(|d| *d <= day("20240310"))
            .collect();
        assert_eq!(days, expected);
    }

    #[test]
    fn the_open_range_splits_down_to_a_day_in_few_steps() {
        let mut slice = Slice::Dates { from: day(OPEN_FROM), to: day(LAST_DAY) };
        let mut depth = 0;
        while let Slice::Dates { from, to } = slice {
            if from == to {
                break;
            }
            slice = slice.split().remove(0);
            depth += 1;
        }
        assert_eq!(slice, dates(OPEN_FROM, OPEN_FROM));
        assert!(depth <= 22, "{depth} halvings");
    }

    #[test]
    fn a_day_splits_by_hours_down_to_one() {
        let first = dates("20240105", "20240105").split();
        let d = day("20240105");
        assert_eq!(
            first,
            vec![Slice::Hours { day: d, start: 0, end: 12 }, Slice::Hours { day: d, start: 12, end: 24 }]
        );
        // Halving the hours ends at single hours that together are the day.
        let mut hours = Vec::new();
        let mut queue = first;
        while let Some(slice) = queue.pop() {
            let parts = slice.split();
            if parts.is_empty() {
                let Slice::Hours { start, end, .. } = slice else { panic!("{slice:?}") };
                assert_eq!(end - start, 1, "{slice:?} cannot be split but is not one hour");
                hours.push(start);
            }
            queue.extend(parts);
        }
        hours.sort_unstable();
        assert_eq!(hours, (0..24).collect::<Vec<u8>>());
        assert!(Slice::Undated.split().is_empty());
    }

    #[test]
    fn slices_become_date_and_time_keys() {
        let d = day("20240105");
        assert_eq!(dates("20240101", "20240131").study_date(), "20240101-20240131");
        assert_eq!(dates("20240105", "20240105").study_date(), "20240105");
        assert_eq!(dates("20240105", "20240105").study_time(), "");
        let morning = Slice::Hours { day: d, start: 0, end: 12 };
        assert_eq!((morning.study_date(), morning.study_time()), ("20240105".into(), "00-115959.999999".into()));
        let hour = Slice::Hours { day: d, start: 23, end: 24 };
        assert_eq!(hour.study_time(), "23-235959.999999");
        assert_eq!(hour.to_string(), "20240105 23:00-23:59");
        assert_eq!(Slice::Undated.study_date(), "");
        assert_eq!(Slice::Undated.to_string(), "undated");
        let identifier = hour.identifier();
        assert_eq!(identifier.string(tags::QUERY_RETRIEVE_LEVEL), Some("STUDY"));
        assert_eq!(identifier.string(tags::STUDY_TIME), Some("23-235959.999999"));
        assert!(identifier.contains(tags::NUMBER_OF_STUDY_RELATED_INSTANCES));
    }

    #[test]
    fn every_time_of_day_falls_in_exactly_one_hour_slice() {
        use haneul_dicom::matching::{KeyMatch, Matcher};
        let d = day("20240105");
        let slices: Vec<Slice> = (0..24).map(|hour| Slice::Hours { day: d, start: hour, end: hour + 1 }).collect();
        for stored in ["00", "0000", "000000", "095959.999", "10", "1000", "100000", "100000.5", "1359", "235959"] {
            let element = Element::text(tags::STUDY_TIME, VR::TM, stored);
            let by_matcher: Vec<&Slice> = slices
                .iter()
                .filter(|slice| {
                    let key = Element::text(tags::STUDY_TIME, VR::TM, slice.study_time());
                    let matcher = Matcher::from_element(&key).expect("a valid range");
                    KeyMatch { tag: tags::STUDY_TIME, vr: VR::TM, matcher }.matches(Some(&element))
                })
                .collect();
            // Archives that compare the bounds as text (Orthanc) must agree.
            let by_text: Vec<&Slice> = slices
                .iter()
                .filter(|slice| {
                    let key = slice.study_time();
                    let (lower, upper) = key.split_once('-').expect("a range");
                    stored >= lower && stored <= upper
                })
                .collect();
            let hour: u8 = stored[..2].parse().expect("an hour");
            let expected = vec![&slices[usize::from(hour)]];
            assert_eq!(by_matcher, expected, "{stored} by Haneul's matcher");
            assert_eq!(by_text, expected, "{stored} compared as text");
        }
    }

    #[test]
    fn a_query_is_capped_at_the_cap_or_on_cancel() {
        assert!(!is_capped(0, None, status::SUCCESS));
        assert!(!is_capped(99, Some(100), status::SUCCESS));
        assert!(is_capped(100, Some(100), status::SUCCESS));
        assert!(is_capped(3, None, status::CANCEL));
    }

    #[test]
    fn ranges_and_nodes_are_checked() {
        assert!(DateRange::new("20240101", "20240131").is_ok());
        assert!(DateRange::new("20240131", "20240101").is_err());
        assert!(DateRange::new("20240230", "20240301").is_err());
        assert!(DateRange::new("2024-01-01", "20240301").is_err());
        assert!(DateRange::all().is_open());
        assert!(DateRange::new("18991231", "20240101").expect("valid").is_open());
        assert!(!DateRange::new("19000102", "20240101").expect("valid").is_open());

        let node = DicomNode::parse("LEGACY@pacs.example.org:104", "HANEUL").expect("valid");
        assert_eq!((node.ae_title.as_str(), node.host.as_str(), node.port), ("LEGACY", "pacs.example.org", 104));
        assert_eq!(node.to_string(), "LEGACY@pacs.example.org:104");
        let v6 = DicomNode::parse("PACS@[::1]:11112", "HANEUL").expect("valid");
        assert_eq!((v6.host.as_str(), v6.address()), ("::1", "[::1]:11112".to_string()));
        for bad in ["pacs:104", "@host:104", "PACS@host", "PACS@host:x", "PACS@:104", "A_TITLE_TOO_LONG_X@h:1"] {
            assert!(DicomNode::parse(bad, "HANEUL").is_err(), "{bad}");
        }
    }

    #[test]
    fn listings_can_run_on_spawned_tasks() {
        fn send<T: Send>(_: &T) {}
        let node = DicomNode::parse("PACS@127.0.0.1:104", "HANEUL").expect("valid");
        let range = DateRange::all();
        send(&list_studies(&node, &range, None));
        send(&list_studies_with(&node, &range, Some(10), &mut |_| {}));
        send(&study_instances(&node, "1.2.3"));
    }

    #[test]
    fn stated_sop_classes_are_those_of_the_study_asked_for() {
        let answer = |study: &str, classes: &[&str]| {
            let mut answer = Dataset::new();
            answer.put(Element::text(tags::STUDY_INSTANCE_UID, VR::UI, study));
            let values = classes.iter().map(|class| class.to_string()).collect();
            answer.put(Element::new(tags::SOP_CLASSES_IN_STUDY, VR::UI, haneul_dicom::Value::Strings(values)));
            answer
        };
        let answers =
            [answer("1.2", &["1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.7\0"]), answer("1.3", &["9.9"])];
        let classes = stated_sop_classes(&answers, "1.2").expect("stated");
        assert_eq!(classes.into_iter().collect::<Vec<_>>(), ["1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.7"]);
        assert_eq!(stated_sop_classes(&[answer("1.2", &[""])], "1.2"), None, "an empty value states nothing");
        assert_eq!(stated_sop_classes(&answers, "1.4"), None, "another study's classes are not this one's");
    }

    #[test]
    fn answers_become_summaries() {
        let mut answer = Dataset::new();
        answer.put(Element::text(tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3"));
        answer.put(Element::text(tags::PATIENT_NAME, VR::PN, "Hong^Gildong=洪^吉洞=홍^길동"));
        answer.put(Element::text(tags::STUDY_DATE, VR::DA, "20080504"));
        answer.put(Element::text(tags::NUMBER_OF_STUDY_RELATED_INSTANCES, VR::IS, "12 "));
        let study = summary(&answer).expect("a summary");
        assert_eq!(study.instances, Some(12));
        assert_eq!(study.patient_name, "Hong^Gildong=洪^吉洞=홍^길동");
        assert_eq!(study.patient_id, "");
        answer.remove(tags::STUDY_INSTANCE_UID);
        assert_eq!(summary(&answer), None);
    }
}
