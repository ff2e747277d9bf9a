//! The DICOMweb source against a small fake server on loopback, which
//! answers as told and records what it was asked.

use std::sync::Mutex;

use haneul_core::ArchiveConfig;
use haneul_dicom::charset::SpecificCharacterSet;
use haneul_dicom::meta::{encode_file_meta, NewFileMeta};
use haneul_dicom::write::{write_dataset, Encoding};
use haneul_dicom::{tags, Dataset, Element, VR};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::*;

/// What the fake server was asked.
#[derive(Debug, Clone)]
struct Asked {
    /// Path and query below the service's root.
    target: String,
    accept: String,
    authorization: Option<String>,
}

impl Asked {
    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    fn param(&self, name: &str) -> Option<&str> {
        let query = self.target.split_once('?')?.1;
        query.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
    }
}

/// One answer of the fake server; its body goes out in the chunks given.
struct Reply {
    status: u16,
    content_type: String,
    warning: Option<String>,
    chunks: Vec<Vec<u8>>,
}

impl Reply {
    fn json(value: &Json) -> Reply {
        let body = serde_json::to_vec(value).expect("JSON");
        Reply { status: 200, content_type: "application/dicom+json".into(), warning: None, chunks: vec![body] }
    }

    fn status(status: u16) -> Reply {
        Reply { status, content_type: "text/plain".into(), warning: None, chunks: vec![b"no".to_vec()] }
    }
}

type Answer = dyn Fn(&Asked) -> Reply + Send + Sync;

struct FakeServer {
    url: String,
    asked: Arc<Mutex<Vec<Asked>>>,
}

impl FakeServer {
    async fn start(answer: impl Fn(&Asked) -> Reply + Send + Sync + 'static) -> FakeServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let url = format!("http://{}/dicom-web", listener.local_addr().expect("its address"));
        let asked = Arc::new(Mutex::new(Vec::new()));
        let answer: Arc<Answer> = Arc::new(answer);
        let log = Arc::clone(&asked);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, Arc::clone(&answer), Arc::clone(&log)));
            }
        });
        FakeServer { url, asked }
    }

    fn asked(&self) -> Vec<Asked> {
        self.asked.lock().expect("the log").clone()
    }

    fn source(&self, cap: Option<usize>) -> DicomWebSource {
        DicomWebSource {
            url: self.url.clone(),
            credentials: Credentials::None,
            ca_file: None,
            timeout: Duration::from_secs(10),
            cap,
        }
    }
}

/// One request, answered with a close-delimited body sent chunk by chunk.
async fn serve(stream: tokio::net::TcpStream, answer: Arc<Answer>, log: Arc<Mutex<Vec<Asked>>>) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).await.is_err() {
        return;
    }
    let target = line.split(' ').nth(1).unwrap_or_default();
    let mut asked = Asked {
        target: target.strip_prefix("/dicom-web").unwrap_or(target).to_string(),
        accept: String::new(),
        authorization: None,
    };
    loop {
        line.clear();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.trim_end().split_once(": ") {
            match name.to_ascii_lowercase().as_str() {
                "accept" => asked.accept = value.to_string(),
                "authorization" => asked.authorization = Some(value.to_string()),
                _ => {}
            }
        }
    }
    let reply = answer(&asked);
    log.lock().expect("the log").push(asked);
    let mut stream = reader.into_inner();
    let warning = reply.warning.map(|warning| format!("Warning: {warning}\r\n")).unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {} Fake\r\nContent-Type: {}\r\n{warning}Connection: close\r\n\r\n",
        reply.status, reply.content_type
    );
    let _ = stream.write_all(head.as_bytes()).await;
    for chunk in reply.chunks {
        if stream.write_all(&chunk).await.is_err() || stream.flush().await.is_err() {
            return;
        }
    }
    let _ = stream.shutdown().await;
}

/// A study as the fake QIDO-RS service holds it.
#[derive(Debug, Clone)]
struct FakeStudy {
    uid: String,
    date: String,
    time: String,
}

fn attribute(vr: &str, value: Json) -> Json {
    serde_json::json!({ "vr": vr, "Value": [value] })
}

fn study_object(study: &FakeStudy) -> Json {
    let mut object = serde_json::json!({
        "0020000D": attribute("UI", study.uid.clone().into()),
        "00100020": attribute("LO", format!("ID-{}", study.uid).into()),
        "00100010": attribute("PN", serde_json::json!({
            "Alphabetic": "Hong^Gildong", "Ideographic": "洪^吉洞", "Phonetic": "홍^길동"
        })),
        "00201208": attribute("IS", 3.into()),
        "00080020": { "vr": "DA" },
    });
    if !study.date.is_empty() {
        object["00080020"] = attribute("DA", study.date.clone().into());
    }
    object
}

/// Whether `value` matches a QIDO-RS range or single value, compared as text.
fn in_range(key: Option<&str>, value: &str) -> bool {
    let Some(key) = key else { return true };
    if value.is_empty() {
        return false;
    }
    match key.split_once('-') {
        Some((low, high)) => value >= low && value <= high,
        None => value == key,
    }
}

/// How the fake service caps and pages study listings.
#[derive(Clone, Copy)]
struct Paging {
    cap: usize,
    /// Whether `offset` is honoured.
    pages: bool,
}

fn studies_answer(studies: &[FakeStudy], asked: &Asked, paging: Paging) -> Reply {
    let mut matching: Vec<&FakeStudy> = studies
        .iter()
        .filter(|study| in_range(asked.param("StudyDate"), &study.date))
        .filter(|study| in_range(asked.param("StudyTime"), &study.time))
        .collect();
    matching.sort_by(|a, b| a.uid.cmp(&b.uid));
    let limit = asked.param("limit").and_then(|limit| limit.parse().ok()).unwrap_or(usize::MAX).min(paging.cap);
    let offset = if paging.pages { asked.param("offset").and_then(|n| n.parse().ok()).unwrap_or(0) } else { 0 };
    let page: Vec<Json> = matching.into_iter().skip(offset).take(limit).map(study_object).collect();
    Reply::json(&Json::Array(page))
}

/// 30 studies over 2020, six in one hour of 5 May, four without a date.
fn fake_studies() -> Vec<FakeStudy> {
    let mut studies = Vec::new();
    for index in 0..30 {
        let month = 1 + index % 12;
        let day = 1 + index % 28;
        studies.push(FakeStudy {
            uid: format!("1.2.3.{index}"),
            date: format!("2020{month:02}{day:02}"),
            time: "083000".into(),
        });
    }
    for minute in 0..6 {
        studies.push(FakeStudy {
            uid: format!("1.2.4.{minute}"),
            date: "20200505".into(),
            time: format!("10{minute:02}00"),
        });
    }
    for index in 0..4 {
        studies.push(FakeStudy { uid: format!("1.2.5.{index}"), date: String::new(), time: String::new() });
    }
    studies
}

#[tokio::test]
async fn studies_are_listed_by_dates_split_and_paged_where_capped() {
    let studies = fake_studies();
    let all = studies.clone();
    let server = FakeServer::start(move |asked| studies_answer(&all, asked, Paging { cap: 4, pages: true })).await;
    let listing = server.source(Some(4)).list_studies(&DateRange::all()).await.expect("a listing");
    let found: BTreeSet<&str> = listing.studies.iter().map(|study| study.study_uid.as_str()).collect();
    let expected: BTreeSet<&str> = studies.iter().map(|study| study.uid.as_str()).collect();
    assert_eq!(found, expected);
    assert!(listing.truncated.is_empty(), "{:?}", listing.truncated);
    let asked = server.asked();
    assert_eq!(listing.queries, asked.len());
    // The hour of six studies was paged; every request asked for at most the cap.
    assert!(asked.iter().any(|a| a.param("StudyTime") == Some("10-105959.999999") && a.param("offset") == Some("4")));
    assert!(asked.iter().all(|a| a.param("limit") == Some("4") && a.accept.contains("application/dicom+json")));
    assert!(asked.iter().all(|a| a.authorization.is_none()), "no credentials configured, none sent");

    let korean = &listing.studies[0];
    assert_eq!(korean.patient_name, "Hong^Gildong=洪^吉洞=홍^길동");
    assert_eq!(korean.instances, Some(3));
    assert_eq!(korean.study_date, "", "undated studies come first");

    // Only a period: nothing undated, nothing outside it.
    let may = DateRange::new("20200501", "20200531").expect("a range");
    let listing = server.source(Some(4)).list_studies(&may).await.expect("a listing");
    let in_may = studies.iter().filter(|study| study.date.starts_with("202005")).count();
    assert_eq!(listing.studies.len(), in_may);
}

#[tokio::test]
async fn a_server_that_does_not_page_leaves_the_capped_hour_reported_as_truncated() {
    let studies = fake_studies();
    let server = FakeServer::start(move |asked| studies_answer(&studies, asked, Paging { cap: 4, pages: false })).await;
    let listing = server.source(Some(4)).list_studies(&DateRange::all()).await.expect("a listing");
    let truncated: Vec<&str> = listing.truncated.iter().map(|slice| slice.slice.as_str()).collect();
    assert_eq!(truncated, vec!["20200505 10:00-10:59", "undated"]);
    assert_eq!(listing.studies.iter().filter(|study| study.study_uid.starts_with("1.2.4.")).count(), 4);
}

#[tokio::test]
async fn a_warning_299_splits_a_listing_even_without_a_known_cap() {
    let studies = fake_studies();
    let server = FakeServer::start(move |asked| {
        let mut reply = studies_answer(&studies, asked, Paging { cap: 5, pages: true });
        let count = serde_json::from_slice::<Vec<Json>>(&reply.chunks[0]).expect("JSON").len();
        if count == 5 {
            reply.warning = Some("299 fake: \"The number of results exceeded the maximum supported by the server. Additional results can be requested.\"".into());
        }
        reply
    })
    .await;
    let listing = server.source(None).list_studies(&DateRange::all()).await.expect("a listing");
    assert_eq!(listing.studies.len(), 40);
    assert!(listing.truncated.is_empty());
    assert!(server.asked().iter().all(|asked| asked.param("limit").is_none()));
}

fn series_uids(series_uid: &str, size: usize) -> impl Iterator<Item = String> + '_ {
    (0..size).map(move |n| format!("{series_uid}.{n}"))
}

/// Instances of study 1.2.9 as an Orthanc-like service lists them: at most
/// `cap` answers, nothing past the cap whatever the offset.
fn instances_answer(series: &[(&str, usize)], count: Option<usize>, cap: usize, asked: &Asked) -> Reply {
    let objects: Vec<Json> = match asked.path().split('/').collect::<Vec<_>>().as_slice() {
        ["", "studies"] => {
            let mut object = serde_json::json!({ "0020000D": attribute("UI", "1.2.9".into()) });
            if let Some(count) = count {
                object["00201208"] = attribute("IS", count.into());
            }
            vec![object]
        }
        ["", "studies", "1.2.9", "instances"] => series
            .iter()
            .flat_map(|&(series_uid, size)| series_uids(series_uid, size))
            .map(|uid| serde_json::json!({ "00080018": attribute("UI", uid.into()) }))
            .collect(),
        ["", "studies", "1.2.9", "series"] => series
            .iter()
            .map(|(series_uid, _)| serde_json::json!({ "0020000E": attribute("UI", (*series_uid).into()) }))
            .collect(),
        ["", "studies", "1.2.9", "series", series_uid, "instances"] => series
            .iter()
            .filter(|(uid, _)| uid == series_uid)
            .flat_map(|&(uid, size)| series_uids(uid, size))
            .map(|uid| serde_json::json!({ "00080018": attribute("UI", uid.into()) }))
            .collect(),
        _ => return Reply::status(404),
    };
    let offset: usize = asked.param("offset").and_then(|n| n.parse().ok()).unwrap_or(0);
    Reply::json(&Json::Array(objects.into_iter().take(cap).skip(offset).collect()))
}

#[tokio::test]
async fn a_capped_instance_listing_is_completed_series_by_series_or_refused() {
    let series = [("1.2.9.1", 3), ("1.2.9.2", 2)];
    let server = FakeServer::start(move |asked| instances_answer(&series, Some(5), 3, asked)).await;
    let uids = server.source(Some(3)).study_instances("1.2.9").await.expect("the instances");
    let expected: BTreeSet<String> =
        ["1.2.9.1.0", "1.2.9.1.1", "1.2.9.1.2", "1.2.9.2.0", "1.2.9.2.1"].map(String::from).into();
    assert_eq!(uids, expected);

    // Uncapped, one request answers.
    let server = FakeServer::start(move |asked| instances_answer(&series, Some(5), 100, asked)).await;
    assert_eq!(server.source(Some(50)).study_instances("1.2.9").await.expect("the instances"), expected);
    assert_eq!(server.asked().len(), 1);

    // A series larger than the cap: an error, never a shorter list taken for the truth.
    let big = [("1.2.9.1", 4), ("1.2.9.2", 2)];
    let server = FakeServer::start(move |asked| instances_answer(&big, Some(6), 3, asked)).await;
    let error = server.source(Some(3)).study_instances("1.2.9").await.expect_err("capped");
    assert!(error.contains("lists 5 of the 6 instances"), "{error}");
}

#[tokio::test]
async fn failures_of_the_server_are_errors_naming_the_request() {
    let server = FakeServer::start(|asked| match asked.path() {
        "/studies" => Reply::status(503),
        _ => Reply {
            status: 200,
            content_type: "application/dicom+json".into(),
            warning: None,
            chunks: vec![b"{".to_vec()],
        },
    })
    .await;
    let source = server.source(None);
    let error = source.list_studies(&DateRange::all()).await.expect_err("503");
    assert!(error.contains("/dicom-web/studies?") && error.contains("503"), "{error}");
    let error = source.study_instances("1.2.9").await.expect_err("not JSON");
    assert!(error.contains("/dicom-web/studies/1.2.9/instances: the answer is not JSON"), "{error}");
}

const CT_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.2";

/// A small Part 10 file of one instance.
fn part10(study: &str, sop: &str) -> Vec<u8> {
    let mut dataset = Dataset::new();
    for (tag, vr, value) in [
        (tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"),
        (tags::SOP_CLASS_UID, VR::UI, CT_IMAGE),
        (tags::SOP_INSTANCE_UID, VR::UI, sop),
        (tags::PATIENT_NAME, VR::PN, "홍^길동"),
        (tags::PATIENT_ID, VR::LO, "P-1"),
        (tags::STUDY_INSTANCE_UID, VR::UI, study),
        (tags::SERIES_INSTANCE_UID, VR::UI, &format!("{study}.1")),
        (tags::MODALITY, VR::CS, "CT"),
        (tags::STUDY_DATE, VR::DA, "20200505"),
    ] {
        dataset.put(Element::text(tag, vr, value));
    }
    let mut file = encode_file_meta(&NewFileMeta {
        sop_class_uid: CT_IMAGE,
        sop_instance_uid: sop,
        transfer_syntax_uid: "1.2.840.10008.1.2.1",
        source_ae_title: None,
    });
    let charset = SpecificCharacterSet::from_raw(b"ISO_IR 192");
    write_dataset(&mut file, &dataset, Encoding::EXPLICIT_LE, &charset).expect("encoding the data set");
    file
}

const BOUNDARY: &str = "fake-boundary-0123";

/// A WADO-RS answer: a preamble, then the parts (content type, body), then the final boundary.
fn multipart_body(parts: &[(&str, Vec<u8>)], close: bool) -> Vec<u8> {
    let mut body = b"preamble\r\n".to_vec();
    for (content_type, part) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\nContent-Type: {content_type}\r\n\r\n").as_bytes());
        body.extend_from_slice(part);
        body.extend_from_slice(b"\r\n");
    }
    if close {
        body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    }
    body
}

fn retrieve_reply(body: &[u8]) -> Reply {
    Reply {
        status: 200,
        content_type: format!("multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}"),
        warning: None,
        chunks: body.chunks(37).map(<[u8]>::to_vec).collect(),
    }
}

fn archive() -> (tempfile::TempDir, Arc<Archive>) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut config = ArchiveConfig::new(dir.path().join("data"));
    config.audit = false;
    let archive = Archive::open(config).expect("an archive");
    (dir, archive)
}

fn origin() -> Origin {
    Origin { actor: "migrate:web".into(), address: "local".into(), ..Origin::default() }
}

#[tokio::test]
async fn a_study_is_streamed_into_the_archive_and_refusals_are_reported() {
    let (_dir, archive) = archive();
    let dicom = "application/dicom; transfer-syntax=1.2.840.10008.1.2.1";
    let body = multipart_body(
        &[
            (dicom, part10("1.2.7", "1.2.7.1.1")),
            (dicom, b"not DICOM at all".to_vec()),
            (dicom, part10("1.2.8", "1.2.8.1.1")),
            ("application/json", b"{}".to_vec()),
            ("application/dicom", part10("1.2.7", "1.2.7.1.2")),
        ],
        true,
    );
    let server = FakeServer::start(move |_| retrieve_reply(&body)).await;
    let mut source = server.source(None);
    let password = tempfile::NamedTempFile::new().expect("a file");
    std::fs::write(password.path(), "pass word\n").expect("the password");
    source.credentials = Credentials::Basic { username: "user".into(), password_file: password.path().into() };

    let failure = source.fetch_study(&archive, "1.2.7", &origin()).await.expect_err("three parts refused");
    assert!(!failure.retriable, "refused data is not tried again by itself: {failure:?}");
    assert!(failure.detail.starts_with("3 of 5 instances refused: part 2: "), "{}", failure.detail);
    assert!(failure.detail.contains("part 4: application/json is not application/dicom"), "{}", failure.detail);
    let mut stored = archive.study_sop_uids("1.2.7", &origin()).await.expect("the study");
    stored.sort();
    assert_eq!(stored, vec!["1.2.7.1.1".to_string(), "1.2.7.1.2".to_string()]);
    assert!(archive.study_sop_uids("1.2.8", &origin()).await.expect("a query").is_empty());

    let asked = server.asked();
    assert_eq!(asked[0].target, "/studies/1.2.7");
    assert_eq!(asked[0].accept, ACCEPT_AS_STORED);
    // "user:pass word" in base64.
    assert_eq!(asked[0].authorization.as_deref(), Some("Basic dXNlcjpwYXNzIHdvcmQ="));
}

#[tokio::test]
async fn a_retrieve_is_counted_once_every_instance_is_stored() {
    let (_dir, archive) = archive();
    let files = [part10("1.2.7", "1.2.7.1.1"), part10("1.2.7", "1.2.7.1.2")];
    let body =
        multipart_body(&[("application/dicom", files[0].clone()), ("application/dicom", files[1].clone())], true);
    let server = FakeServer::start(move |_| retrieve_reply(&body)).await;
    let mut source = server.source(None);
    let token = tempfile::NamedTempFile::new().expect("a file");
    std::fs::write(token.path(), " secret-token \n").expect("the token");
    source.credentials = Credentials::Bearer { token_file: token.path().into() };
    assert_eq!(source.fetch_study(&archive, "1.2.7", &origin()).await, Ok(2));
    assert_eq!(server.asked()[0].authorization.as_deref(), Some("Bearer secret-token"));
    // Again: nothing twice.
    assert_eq!(source.fetch_study(&archive, "1.2.7", &origin()).await, Ok(2));
    assert_eq!(archive.study_sop_uids("1.2.7", &origin()).await.expect("the study").len(), 2);
}

#[tokio::test]
async fn a_cut_answer_is_retriable_and_a_missing_study_is_no_error() {
    let (_dir, archive) = archive();
    let files = [part10("1.2.7", "1.2.7.1.1"), part10("1.2.7", "1.2.7.1.2")];
    let mut cut =
        multipart_body(&[("application/dicom", files[0].clone()), ("application/dicom", files[1].clone())], false);
    cut.truncate(cut.len() - 100);
    let server = FakeServer::start(move |asked| match asked.path() {
        "/studies/1.2.7" => retrieve_reply(&cut),
        "/studies/1.2.6" => Reply { content_type: "text/html".into(), ..retrieve_reply(b"<html>") },
        _ => Reply::status(404),
    })
    .await;
    let source = server.source(None);
    let failure = source.fetch_study(&archive, "1.2.7", &origin()).await.expect_err("cut short");
    assert!(failure.retriable, "{failure:?}");
    assert!(failure.detail.contains("ended before its final boundary"), "{}", failure.detail);
    assert!(failure.detail.contains("(1 instances stored before)"), "{}", failure.detail);
    assert_eq!(archive.study_sop_uids("1.2.7", &origin()).await.expect("the study"), vec!["1.2.7.1.1".to_string()]);

    let failure = source.fetch_study(&archive, "1.2.6", &origin()).await.expect_err("not multipart");
    assert!(failure.retriable && failure.detail.contains("is not multipart"), "{failure:?}");
    assert_eq!(source.fetch_study(&archive, "1.2.5", &origin()).await, Ok(0));
}

#[tokio::test]
async fn a_server_without_transfer_syntax_star_is_asked_for_its_default() {
    let (_dir, archive) = archive();
    let body = multipart_body(&[("application/dicom", part10("1.2.7", "1.2.7.1.1"))], true);
    let server = FakeServer::start(move |asked| match asked.accept.contains("transfer-syntax=*") {
        true => Reply::status(406),
        false => retrieve_reply(&body),
    })
    .await;
    assert_eq!(server.source(None).fetch_study(&archive, "1.2.7", &origin()).await, Ok(1));
    let accepts: Vec<String> = server.asked().into_iter().map(|asked| asked.accept).collect();
    assert_eq!(accepts, vec![ACCEPT_AS_STORED.to_string(), ACCEPT_DEFAULT.to_string()]);
}

#[test]
fn urls_values_and_warnings_are_checked() {
    assert!(check_url("https://pacs.example.org/dicom-web").is_ok());
    assert!(check_url("http://10.1.2.3:8042/dicom-web/").is_ok());
    assert!(check_url("http://[::1]:8042").is_ok());
    for bad in ["ftp://pacs/dicom-web", "pacs/dicom-web", "http:///dicom-web", "http://h/x?y=1", "http://h/a b"] {
        assert!(check_url(bad).is_err(), "{bad}");
    }
    let error = check_url("https://user:secret@pacs/dicom-web").expect_err("credentials in the URL");
    assert!(!error.contains("secret"), "{error}");

    assert_eq!(escape("1.2.840.113619"), "1.2.840.113619");
    assert_eq!(escape("1.2/../x y"), "1.2%2F..%2Fx%20y");
    assert!(says_cut(
        "299 pacs: \"The number of results exceeded the maximum supported by the server. Additional results can be requested.\""
    ));
    assert!(!says_cut("299 pacs: \"The fuzzymatching parameter is not supported.\""));

    let object = serde_json::json!({
        "0020000D": { "vr": "UI", "Value": ["1.2.3 "] },
        "00100010": { "vr": "PN", "Value": [{ "Alphabetic": "Yamada^Tarou" }] },
        "00201208": { "vr": "IS", "Value": ["12"] },
        "00080020": { "vr": "DA" },
    });
    let study = summary(&object).expect("a study");
    assert_eq!((study.study_uid.as_str(), study.patient_name.as_str()), ("1.2.3", "Yamada^Tarou"));
    assert_eq!((study.instances, study.study_date.as_str()), (Some(12), ""));
    assert_eq!(summary(&serde_json::json!({ "00100010": { "vr": "PN" } })), None);

    let slice = Slice::Hours { day: walk::parse_day("20240105").expect("a day"), start: 0, end: 12 };
    assert_eq!(
        studies_path(&slice, Some(100), 200),
        "/studies?StudyDate=20240105&StudyTime=00-115959.999999&includefield=0020000D&includefield=00100020\
         &includefield=00100010&includefield=00080020&includefield=00201208&limit=100&offset=200"
    );
}
