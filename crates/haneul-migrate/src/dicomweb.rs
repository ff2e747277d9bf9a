//! A DICOMweb server as a migration source (`method = "dicomweb"`).
//!
//! - **Listing**: QIDO-RS `GET {url}/studies` slice by slice, as the C-FIND
//!   walk ([`crate::walk`]) does: a slice whose answers reach the cap
//!   (`query_limit`, also sent as `limit`, or a `Warning: 299` saying that
//!   results were left out) is split into halves of its dates, then hours of
//!   a day; a slice that cannot be split further is paged with `offset`.
//!   Studies without a StudyDate come from one query without a date key
//!   when the range is open.
//! - **Fetching**: WADO-RS `GET {url}/studies/{uid}` as
//!   `multipart/related; type="application/dicom"; transfer-syntax=*` (the
//!   files as the server holds them), each part streamed into the archive's
//!   ingest as it arrives. An instance counts once it is durable.
//! - **Verifying**: the study's SOP Instance UIDs by QIDO-RS
//!   `GET {url}/studies/{uid}/instances`, paged; where the server caps that
//!   listing, series by series, checked against the study's Number of Study
//!   Related Instances.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use haneul_core::{Archive, Ingest, IngestError, IngestFormat, Origin, PlannedStudy};
use haneul_replication::http::{self, escape, HttpClient, Incoming, Method, StatusCode};
use serde_json::Value as Json;

use crate::multipart::{self, Event, MultipartReader};
use crate::walk::{self, DateRange, Slice, StudyListing, StudySummary, Truncated};

/// Asked of a retrieve: every instance as the server holds it.
const ACCEPT_AS_STORED: &str = "multipart/related; type=\"application/dicom\"; transfer-syntax=*";
/// Asked again of a server that does not know `transfer-syntax=*`.
const ACCEPT_DEFAULT: &str = "multipart/related; type=\"application/dicom\"";
const ACCEPT_JSON: &str = "application/dicom+json";
const STUDY_UID: &str = "0020000D";
const SERIES_UID: &str = "0020000E";
const SOP_UID: &str = "00080018";
const PATIENT_ID: &str = "00100020";
const PATIENT_NAME: &str = "00100010";
const STUDY_DATE: &str = "00080020";
const STUDY_INSTANCES: &str = "00201208";
/// Most UIDs one listing gathers, against a server that pages forever.
const MAX_LISTED: usize = 10_000_000;
/// Most bytes of an error answer kept for its message.
const MAX_ERROR_BODY: usize = 4096;

/// How the source knows us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    None,
    /// A Bearer token, read from the file at every use (a renewed token needs no restart).
    Bearer {
        token_file: PathBuf,
    },
    /// HTTP Basic; the password is read from the file at every use.
    Basic {
        username: String,
        password_file: PathBuf,
    },
}

/// A DICOMweb service to migrate from. Holds no secret, only where to read them.
#[derive(Debug, Clone)]
pub struct DicomWebSource {
    /// Base URL of the service, e.g. `https://pacs.example.org/dicom-web`.
    pub url: String,
    pub credentials: Credentials,
    /// PEM authorities of an https server's certificate; `None`: the system's.
    pub ca_file: Option<PathBuf>,
    /// Longest wait for an answer's head, and for each piece of its body.
    pub timeout: Duration,
    /// The most answers the server gives to one QIDO-RS request (also asked
    /// for as `limit`); `None`: not known, only a `Warning: 299` tells.
    pub cap: Option<usize>,
}

/// Why a study was not fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchFailure {
    pub detail: String,
    /// Whether trying again may help (the network, the server), or not (instances refused here).
    pub retriable: bool,
}

fn retriable(detail: String) -> FetchFailure {
    FetchFailure { detail, retriable: true }
}

/// Whether `url` can be a source's base URL: http or https, with a host, and
/// without credentials (which would be logged with it), query or fragment.
pub fn check_url(url: &str) -> Result<(), String> {
    let Some(rest) = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")) else {
        return Err("must start with http:// or https://".into());
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err("must not hold credentials: use token_file, or username and password_file".into());
    }
    if authority.is_empty() || authority.starts_with(':') {
        return Err(format!("{url:?} names no host"));
    }
    if url.contains(['?', '#']) || url.contains(char::is_whitespace) {
        return Err(format!("{url:?} must be a plain base URL, without query, fragment or spaces"));
    }
    Ok(())
}

/// Whether a Warning header says that the server left answers out
/// (PS3.18: `299 {service}: "The number of results exceeded the maximum
/// supported by the server. Additional results can be requested."`).
fn says_cut(warning: &str) -> bool {
    let warning = warning.trim_start().to_ascii_lowercase();
    warning.starts_with("299") && (warning.contains("exceed") || warning.contains("additional results"))
}

/// The first value of attribute `tag` of a DICOM JSON object as text (a
/// person name's groups joined by `=`); `None` when absent or empty.
fn first_value(object: &Json, tag: &str) -> Option<String> {
    let attribute = object.get(tag).or_else(|| object.get(tag.to_ascii_lowercase()))?;
    let text = match attribute.get("Value")?.get(0)? {
        Json::String(text) => text.trim().to_string(),
        Json::Number(number) => number.to_string(),
        Json::Object(groups) => {
            let group = |name: &str| groups.get(name).and_then(Json::as_str).unwrap_or_default();
            let joined = [group("Alphabetic"), group("Ideographic"), group("Phonetic")].join("=");
            joined.trim_end_matches('=').trim().to_string()
        }
        _ => return None,
    };
    (!text.is_empty()).then_some(text)
}

fn summary(object: &Json) -> Option<StudySummary> {
    Some(StudySummary {
        study_uid: first_value(object, STUDY_UID)?,
        patient_id: first_value(object, PATIENT_ID).unwrap_or_default(),
        patient_name: first_value(object, PATIENT_NAME).unwrap_or_default(),
        study_date: first_value(object, STUDY_DATE).unwrap_or_default(),
        instances: first_value(object, STUDY_INSTANCES).and_then(|count| count.parse().ok()),
    })
}

/// `limit` and `offset` for a query.
fn paging(query: &mut Vec<String>, limit: Option<usize>, offset: usize) {
    if let Some(limit) = limit {
        query.push(format!("limit={limit}"));
    }
    if offset > 0 {
        query.push(format!("offset={offset}"));
    }
}

/// The QIDO-RS request of one slice of the study listing.
fn studies_path(slice: &Slice, limit: Option<usize>, offset: usize) -> String {
    let mut query = Vec::new();
    let date = slice.study_date();
    if !date.is_empty() {
        query.push(format!("StudyDate={}", escape(&date)));
    }
    let time = slice.study_time();
    if !time.is_empty() {
        query.push(format!("StudyTime={}", escape(&time)));
    }
    for tag in [STUDY_UID, PATIENT_ID, PATIENT_NAME, STUDY_DATE, STUDY_INSTANCES] {
        query.push(format!("includefield={tag}"));
    }
    paging(&mut query, limit, offset);
    format!("/studies?{}", query.join("&"))
}

/// One QIDO-RS answer: its objects, and whether the server says it left some out.
struct Answer {
    objects: Vec<Json>,
    cut: bool,
}

async fn read_secret(path: &Path) -> Result<String, String> {
    tokio::fs::read_to_string(path).await.map_err(|error| format!("cannot read {}: {error}", path.display()))
}

impl DicomWebSource {
    /// A client with the credentials as they are now in their files.
    async fn client(&self) -> Result<HttpClient, String> {
        let authorization = match &self.credentials {
            Credentials::None => None,
            Credentials::Bearer { token_file } => {
                let token = read_secret(token_file).await?;
                if token.trim().is_empty() {
                    return Err(format!("{} holds no token", token_file.display()));
                }
                Some(format!("Bearer {}", token.trim()))
            }
            Credentials::Basic { username, password_file } => {
                let password = read_secret(password_file).await?;
                // Only the line end an editor adds: spaces may belong to the password.
                let password = password.trim_end_matches(['\r', '\n']);
                let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
                Some(format!("Basic {encoded}"))
            }
        };
        let (url, ca_file) = (self.url.clone(), self.ca_file.clone());
        // https reads and parses the authorities' file: off the async threads.
        let client = tokio::task::spawn_blocking(move || HttpClient::new(&url, "", ca_file.as_deref(), None))
            .await
            .map_err(|error| error.to_string())??;
        Ok(client.with_authorization(authorization))
    }

    fn capped(&self, answer: &Answer) -> bool {
        answer.cut || self.cap.is_some_and(|cap| answer.objects.len() >= cap)
    }

    async fn qido(&self, client: &HttpClient, path: &str) -> Result<Answer, String> {
        let (status, headers, body) = client.call_accepting(Method::GET, path, ACCEPT_JSON, self.timeout).await?;
        if status == StatusCode::NO_CONTENT {
            return Ok(Answer { objects: Vec::new(), cut: false });
        }
        if !status.is_success() {
            return Err(http::failure(&client.base_url(), path, status, &body));
        }
        let cut = headers.get_all("warning").iter().any(|value| value.to_str().is_ok_and(says_cut));
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Answer { objects: Vec::new(), cut });
        }
        match serde_json::from_slice::<Json>(&body) {
            Ok(Json::Array(objects)) => Ok(Answer { objects, cut }),
            Ok(_) => Err(format!("{}{path}: the answer is not a JSON array", client.base_url())),
            Err(error) => Err(format!("{}{path}: the answer is not JSON: {error}", client.base_url())),
        }
    }

    /// Every study dated within `range`, plus studies without a date when the range is open.
    pub async fn list_studies(&self, range: &DateRange) -> Result<StudyListing, String> {
        let (from, to) = range.days()?;
        let client = self.client().await?;
        let mut pending = Vec::new();
        if range.is_open() {
            pending.push(Slice::Undated);
        }
        pending.push(Slice::Dates { from, to });
        let mut found: BTreeMap<String, StudySummary> = BTreeMap::new();
        let mut listing = StudyListing::default();
        while let Some(slice) = pending.pop() {
            let mut offset = 0;
            // UIDs of this slice's pages, to tell a server that pages from one that repeats itself.
            let mut seen = BTreeSet::new();
            loop {
                let answer = self.qido(&client, &studies_path(&slice, self.cap, offset)).await?;
                listing.queries += 1;
                let mut new = 0;
                for object in &answer.objects {
                    let Some(study) = summary(object) else {
                        tracing::debug!(url = %self.url, "a study answer without a Study Instance UID, skipped");
                        continue;
                    };
                    new += usize::from(seen.insert(study.study_uid.clone()));
                    if slice == Slice::Undated && walk::parse_day(&study.study_date).is_ok() {
                        // Dated studies come from the date slices, within the range.
                        continue;
                    }
                    found.entry(study.study_uid.clone()).or_insert(study);
                }
                if !self.capped(&answer) {
                    if offset > 0 && answer.objects.is_empty() {
                        tracing::warn!(url = %self.url, slice = %slice, answers = offset,
                            "no more answers after a full page: if the server caps its answers without paging, studies of this slice may be missing");
                    }
                    break;
                }
                if offset == 0 {
                    let parts = slice.split();
                    if !parts.is_empty() {
                        // Last pushed is queried first: keep the listing in date order.
                        pending.extend(parts.into_iter().rev());
                        break;
                    }
                }
                if new == 0 || seen.len() > MAX_LISTED {
                    tracing::warn!(url = %self.url, slice = %slice, answers = seen.len(),
                        "answers still capped on a slice that cannot be split or paged: studies of it may be missing");
                    listing.truncated.push(Truncated { slice: slice.to_string(), answers: seen.len() });
                    break;
                }
                offset += answer.objects.len();
            }
        }
        let mut studies: Vec<StudySummary> = found.into_values().collect();
        studies.sort_by(|a, b| (&a.study_date, &a.study_uid).cmp(&(&b.study_date, &b.study_uid)));
        listing.studies = studies;
        Ok(listing)
    }

    /// [`DicomWebSource::list_studies`] as the migration plans them.
    pub async fn planned_studies(&self, range: &DateRange) -> Result<Vec<PlannedStudy>, String> {
        let listing = self.list_studies(range).await?;
        Ok(listing
            .studies
            .into_iter()
            .map(|study| PlannedStudy {
                study_uid: study.study_uid,
                patient_id: study.patient_id,
                patient_name: study.patient_name,
                study_date: study.study_date,
                expected_instances: study.instances.map(i64::from),
            })
            .collect())
    }

    /// The values of `tag` in every answer to `path` (a QIDO-RS request
    /// without paging), page by page; and whether the server capped a page.
    async fn list_all(&self, client: &HttpClient, path: &str, tag: &str) -> Result<(BTreeSet<String>, bool), String> {
        let mut values = BTreeSet::new();
        let mut capped = false;
        let mut offset = 0;
        loop {
            let mut query = Vec::new();
            paging(&mut query, self.cap, offset);
            let paged = match query.is_empty() {
                true => path.to_string(),
                false => format!("{path}?{}", query.join("&")),
            };
            let answer = self.qido(client, &paged).await?;
            let before = values.len();
            values.extend(answer.objects.iter().filter_map(|object| first_value(object, tag)));
            if !self.capped(&answer) {
                return Ok((values, capped));
            }
            capped = true;
            if values.len() == before || values.len() > MAX_LISTED {
                // The server does not page (it repeats itself).
                return Ok((values, capped));
            }
            offset += answer.objects.len();
        }
    }

    /// The source's count of a study's instances, when it gives one.
    async fn instance_count(&self, client: &HttpClient, study_uid: &str) -> Result<Option<usize>, String> {
        let path = format!("/studies?StudyInstanceUID={}&includefield={STUDY_INSTANCES}", escape(study_uid));
        let answer = self.qido(client, &path).await?;
        Ok(answer
            .objects
            .iter()
            .find(|object| first_value(object, STUDY_UID).as_deref() == Some(study_uid))
            .and_then(|object| first_value(object, STUDY_INSTANCES))
            .and_then(|count| count.parse().ok()))
    }

    /// SOP Instance UIDs of one study at the source.
    pub async fn study_instances(&self, study_uid: &str) -> Result<BTreeSet<String>, String> {
        let client = self.client().await?;
        let study = escape(study_uid);
        let (mut uids, capped) = self.list_all(&client, &format!("/studies/{study}/instances"), SOP_UID).await?;
        if !capped {
            return Ok(uids);
        }
        // A capped listing may have stopped short (some servers answer no
        // page past their cap): the study's own count tells.
        let Some(expected) = self.instance_count(&client, study_uid).await? else {
            return Ok(uids);
        };
        if uids.len() >= expected {
            return Ok(uids);
        }
        let (series, _) = self.list_all(&client, &format!("/studies/{study}/series"), SERIES_UID).await?;
        for series_uid in &series {
            let path = format!("/studies/{study}/series/{}/instances", escape(series_uid));
            uids.extend(self.list_all(&client, &path, SOP_UID).await?.0);
        }
        if uids.len() < expected {
            return Err(format!(
                "{}: the server lists {} of the {expected} instances of study {study_uid} (it caps its answers)",
                self.url,
                uids.len()
            ));
        }
        Ok(uids)
    }

    /// Retrieve one study (WADO-RS) into `archive`, each instance stored as
    /// its part arrives, as sent by `origin`; returns the instances stored.
    /// A study the server no longer has is no error (0 instances): its
    /// verification reports it.
    pub async fn fetch_study(
        &self,
        archive: &Arc<Archive>,
        study_uid: &str,
        origin: &Origin,
    ) -> Result<u64, FetchFailure> {
        let client = self.client().await.map_err(retriable)?;
        let path = format!("/studies/{}", escape(study_uid));
        let url = format!("{}{path}", client.base_url());
        let mut response =
            client.send_accepting(Method::GET, &path, ACCEPT_AS_STORED, self.timeout).await.map_err(retriable)?;
        if response.status() == StatusCode::NOT_ACCEPTABLE {
            tracing::warn!(url = %url, "the server does not send instances as it holds them (transfer-syntax=*): taking its default transfer syntax");
            response =
                client.send_accepting(Method::GET, &path, ACCEPT_DEFAULT, self.timeout).await.map_err(retriable)?;
        }
        match response.status() {
            StatusCode::NOT_FOUND | StatusCode::NO_CONTENT => {
                tracing::info!(url = %url, "the source no longer has the study");
                return Ok(0);
            }
            status if status.is_success() => {}
            status => {
                let body = error_body(response.body_mut(), self.timeout).await;
                return Err(retriable(http::failure(&client.base_url(), &path, status, &body)));
            }
        }
        let content_type = response.headers().get("content-type").and_then(|value| value.to_str().ok());
        let boundary = multipart::boundary_of(content_type.unwrap_or_default())
            .map_err(|error| retriable(format!("{url}: {error}")))?;
        let mut reader = MultipartReader::new(&boundary).map_err(|error| retriable(format!("{url}: {error}")))?;
        let mut study = StudyIngest::new(archive, origin, study_uid);
        let body = response.body_mut();
        'body: loop {
            let chunk = match tokio::time::timeout(self.timeout, http::next_chunk(body)).await {
                Ok(Some(Ok(chunk))) => chunk,
                Ok(None) => break,
                Ok(Some(Err(error))) => return Err(retriable(format!("{url}: {error}{}", study.so_far()))),
                Err(_) => {
                    let detail = format!("{url}: no data within {} s{}", self.timeout.as_secs(), study.so_far());
                    return Err(retriable(detail));
                }
            };
            reader.push(&chunk);
            loop {
                match reader.next_event() {
                    Ok(Some(Event::End)) => break 'body,
                    Ok(Some(event)) => study.take(event).await,
                    Ok(None) => break,
                    Err(error) => return Err(retriable(format!("{url}: {error}{}", study.so_far()))),
                }
            }
        }
        reader.finish().map_err(|error| retriable(format!("{url}: {error}{}", study.so_far())))?;
        study.outcome()
    }
}

/// The start of an error answer's body, for its message.
async fn error_body(body: &mut Incoming, timeout: Duration) -> Vec<u8> {
    let mut kept = Vec::new();
    let read = async {
        while let Some(Ok(chunk)) = http::next_chunk(body).await {
            kept.extend_from_slice(&chunk[..chunk.len().min(MAX_ERROR_BODY - kept.len())]);
            if kept.len() >= MAX_ERROR_BODY {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(timeout, read).await;
    kept
}

/// The parts of one retrieve on their way into the archive.
struct StudyIngest<'a> {
    archive: &'a Arc<Archive>,
    origin: &'a Origin,
    study_uid: &'a str,
    /// The instance being received; `None` while a refused part goes by.
    current: Option<Ingest>,
    parts: usize,
    stored: u64,
    refused: Vec<String>,
    /// Whether a refusal may pass (storage), rather than being the data's.
    retriable: bool,
}

impl<'a> StudyIngest<'a> {
    fn new(archive: &'a Arc<Archive>, origin: &'a Origin, study_uid: &'a str) -> StudyIngest<'a> {
        StudyIngest {
            archive,
            origin,
            study_uid,
            current: None,
            parts: 0,
            stored: 0,
            refused: Vec::new(),
            retriable: false,
        }
    }

    async fn take(&mut self, event: Event) {
        match event {
            Event::Part(headers) => {
                self.parts += 1;
                self.current = None;
                match headers.media_type() {
                    Some(media_type) if media_type != "application/dicom" => {
                        self.refused.push(format!("part {}: {media_type} is not application/dicom", self.parts));
                    }
                    _ => {
                        let format = IngestFormat::Part10 { expected_study_uid: Some(self.study_uid.to_string()) };
                        match self.archive.begin_ingest(format, self.origin.clone()) {
                            Ok(ingest) => self.current = Some(ingest),
                            Err(error) => self.refuse(error),
                        }
                    }
                }
            }
            Event::Data(data) => {
                if let Some(ingest) = &mut self.current {
                    if let Err(error) = ingest.write(&data).await {
                        self.current = None;
                        self.refuse(error);
                    }
                }
            }
            Event::PartEnd => {
                if let Some(ingest) = self.current.take() {
                    match self.archive.finish_ingest(ingest).await {
                        Ok(_) => self.stored += 1,
                        Err(error) => self.refuse(error),
                    }
                }
            }
            Event::End => {}
        }
    }

    fn refuse(&mut self, error: IngestError) {
        // A refused instance stays refused; a storage failure may pass.
        self.retriable |= !matches!(error, IngestError::Rejected { .. });
        self.refused.push(format!("part {}: {error}", self.parts));
    }

    /// What was stored before a failure, for its message.
    fn so_far(&self) -> String {
        format!(" ({} instances stored before)", self.stored)
    }

    fn outcome(self) -> Result<u64, FetchFailure> {
        if self.refused.is_empty() {
            return Ok(self.stored);
        }
        let detail = format!("{} of {} instances refused: {}", self.refused.len(), self.parts, self.refused.join("; "));
        Err(FetchFailure { detail, retriable: self.retriable })
    }
}

#[cfg(test)]
mod tests;
