//! The HTTP edge in process: the real router over a real archive in a
//! temporary directory, driven request by request. These tests pin the HTTP
//! details real clients depend on (status codes, headers, multipart framing,
//! negotiation); the suites in `crates/haneul/tests` drive the running binary
//! with dicomweb-client and OHIF.

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use haneul_core::{Archive, ArchiveConfig};
use haneul_dicom::charset::SpecificCharacterSet;
use haneul_dicom::json::read_array;
use haneul_dicom::meta::{encode_file_meta, NewFileMeta};
use haneul_dicom::write::{write_dataset, Encoding};
use haneul_dicom::{tags, Dataset, Element, Value, VR};
use haneul_dicomweb::{WebConfig, WebState};
use tower::ServiceExt;

const CT_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

mod support;

use support::{Harness, Reply};

impl Harness {
    fn new() -> Harness {
        Harness::with_config(WebConfig::default().with_anonymous_role(haneul_core::Role::Admin))
    }

    async fn get(&self, uri: &str, accept: &str) -> Reply {
        let request = Request::get(uri).header(header::ACCEPT, accept).body(Body::empty()).expect("request");
        self.send(request).await
    }

    async fn stow(&self, uri: &str, content_type: &str, body: Vec<u8>) -> Reply {
        let request = Request::post(uri)
            .header(header::CONTENT_TYPE, content_type)
            .header(header::ACCEPT, "application/dicom+json")
            .body(Body::from(body))
            .expect("request");
        self.send(request).await
    }

    /// STOW `instances` as one multipart request; panics unless all are stored.
    async fn store(&self, instances: &[Vec<u8>]) {
        let (content_type, body) = multipart(instances, true);
        let reply = self.stow("/dicom-web/studies", &content_type, body).await;
        assert_eq!(reply.status, StatusCode::OK, "STOW failed: {}", reply.text());
    }
}

impl Reply {
    /// The error body every refusal carries: `{"error": "...", "status": N}`.
    fn assert_error(&self, status: StatusCode) {
        assert_eq!(self.status, status, "{}", self.text());
        let body = self.json();
        assert_eq!(body["status"], status.as_u16(), "{body}");
        assert!(body["error"].as_str().is_some_and(|text| !text.is_empty()), "no readable error: {body}");
    }

    /// Parts of a multipart/related answer: (headers text, body).
    fn parts(&self) -> Vec<(String, Vec<u8>)> {
        let content_type = self.header(header::CONTENT_TYPE).to_string();
        let boundary = content_type
            .split(';')
            .find_map(|param| param.trim().strip_prefix("boundary="))
            .unwrap_or_else(|| panic!("no boundary in {content_type}"))
            .trim_matches('"')
            .to_string();
        split_multipart(&self.body, &boundary)
    }
}

fn split_multipart(body: &[u8], boundary: &str) -> Vec<(String, Vec<u8>)> {
    let delimiter = format!("--{boundary}").into_bytes();
    let positions: Vec<usize> =
        body.windows(delimiter.len()).enumerate().filter(|(_, w)| *w == delimiter).map(|(i, _)| i).collect();
    let mut parts = Vec::new();
    for pair in positions.windows(2) {
        let part = &body[pair[0] + delimiter.len()..pair[1]];
        let part = part.strip_prefix(b"\r\n").expect("CRLF after the delimiter");
        let split = part.windows(4).position(|w| w == b"\r\n\r\n").expect("end of part headers");
        let headers = String::from_utf8_lossy(&part[..split]).into_owned();
        let content = part[split + 4..].strip_suffix(b"\r\n").expect("CRLF before the next delimiter");
        parts.push((headers, content.to_vec()));
    }
    let last = *positions.last().expect("a closing delimiter");
    assert_eq!(
        &body[last + delimiter.len()..last + delimiter.len() + 2],
        b"--",
        "the body ends with the close delimiter"
    );
    parts
}

/// A multipart/related body of `application/dicom` parts, with a quoted or
/// unquoted `type` parameter.
fn multipart(instances: &[Vec<u8>], quoted_type: bool) -> (String, Vec<u8>) {
    let boundary = "test-boundary-7d3f";
    let mut body = Vec::new();
    for instance in instances {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes());
        body.extend_from_slice(instance);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let part_type = if quoted_type { "\"application/dicom\"" } else { "application/dicom" };
    (format!("multipart/related; type={part_type}; boundary={boundary}"), body)
}

/// UIDs and names of a synthetic CT instance.
#[derive(Clone)]
struct Spec {
    patient_name: &'static str,
    study: String,
    series: String,
    sop: String,
    /// Seed of the pixel values, so two instances can differ in content.
    seed: u16,
}

fn spec(study: u32, series: u32, instance: u32) -> Spec {
    Spec {
        patient_name: "Kim^Minji",
        study: format!("1.2.826.0.1.3680043.10.1.{study}"),
        series: format!("1.2.826.0.1.3680043.10.1.{study}.{series}"),
        sop: format!("1.2.826.0.1.3680043.10.1.{study}.{series}.{instance}"),
        seed: instance as u16,
    }
}

const ROWS: u16 = 16;
const COLUMNS: u16 = 32;

fn pixels(seed: u16) -> Vec<u8> {
    (0..ROWS as u32 * COLUMNS as u32)
        .flat_map(|i| ((i as u16).wrapping_mul(7).wrapping_add(seed * 131)).to_le_bytes())
        .collect()
}

fn dataset(spec: &Spec) -> Dataset {
    let mut ds = Dataset::new();
    let mut text = |tag, vr, value: &str| ds.put(Element::text(tag, vr, value));
    text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    text(tags::SOP_CLASS_UID, VR::UI, CT_IMAGE);
    text(tags::SOP_INSTANCE_UID, VR::UI, &spec.sop);
    text(tags::STUDY_DATE, VR::DA, "20261120");
    text(tags::STUDY_TIME, VR::TM, "101500");
    text(tags::ACCESSION_NUMBER, VR::SH, "A1");
    text(tags::MODALITY, VR::CS, "CT");
    text(tags::STUDY_DESCRIPTION, VR::LO, "흉부 CT");
    text(tags::PATIENT_NAME, VR::PN, spec.patient_name);
    text(tags::PATIENT_ID, VR::LO, "P-1");
    text(tags::STUDY_INSTANCE_UID, VR::UI, &spec.study);
    text(tags::SERIES_INSTANCE_UID, VR::UI, &spec.series);
    text(tags::STUDY_ID, VR::SH, "1");
    text(tags::SERIES_NUMBER, VR::IS, "1");
    text(tags::INSTANCE_NUMBER, VR::IS, &spec.seed.to_string());
    text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
    text(tags::RESCALE_INTERCEPT, VR::DS, "-1024");
    text(tags::RESCALE_SLOPE, VR::DS, "1");
    text(tags::WINDOW_CENTER, VR::DS, "40");
    text(tags::WINDOW_WIDTH, VR::DS, "400");
    for (tag, value) in [
        (tags::SAMPLES_PER_PIXEL, 1),
        (tags::ROWS, ROWS),
        (tags::COLUMNS, COLUMNS),
        (tags::BITS_ALLOCATED, 16),
        (tags::BITS_STORED, 12),
        (tags::HIGH_BIT, 11),
        (tags::PIXEL_REPRESENTATION, 0),
    ] {
        ds.put(Element::new(tag, VR::US, Value::U16(vec![value])));
    }
    ds.put(Element::new(tags::PIXEL_DATA, VR::OW, Value::Bytes(pixels(spec.seed))));
    ds
}

fn part10(spec: &Spec) -> Vec<u8> {
    let mut file = encode_file_meta(&NewFileMeta {
        sop_class_uid: CT_IMAGE,
        sop_instance_uid: &spec.sop,
        transfer_syntax_uid: EXPLICIT_LE,
        source_ae_title: None,
    });
    let charset = SpecificCharacterSet::from_raw(b"ISO_IR 192");
    write_dataset(&mut file, &dataset(spec), Encoding::EXPLICIT_LE, &charset).expect("encoding the data set");
    file
}

fn string_value(object: &serde_json::Value, tag: &str) -> String {
    object[tag]["Value"][0].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn stored_instances_come_back_byte_for_byte_and_as_metadata() {
    let harness = Harness::new();
    let specs = [spec(1, 1, 1), spec(1, 1, 2), spec(1, 2, 3)];
    let files: Vec<Vec<u8>> = specs.iter().map(part10).collect();
    // Unquoted `type`, as some clients send it.
    let (content_type, body) = multipart(&files, false);
    let reply = harness.stow("/dicom-web/studies", &content_type, body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let outcome = reply.json();
    assert_eq!(outcome["00081199"]["Value"].as_array().map(Vec::len), Some(3), "{outcome}");
    assert!(outcome.get("00081198").is_none(), "no failures expected: {outcome}");

    let study = &specs[0].study;
    let reply = harness.get(&format!("/dicom-web/studies?StudyInstanceUID={study}"), "application/dicom+json").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let studies = reply.json();
    assert_eq!(studies.as_array().map(Vec::len), Some(1), "{studies}");
    assert_eq!(studies[0]["00201208"]["Value"][0], 3, "NumberOfStudyRelatedInstances");
    assert_eq!(studies[0]["00201206"]["Value"][0], 2, "NumberOfStudyRelatedSeries");
    assert_eq!(string_value(&studies[0], "00081030"), "흉부 CT");

    // transfer-syntax=* sends the files exactly as stored.
    let reply = harness
        .get(&format!("/dicom-web/studies/{study}"), "multipart/related; type=\"application/dicom\"; transfer-syntax=*")
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let mut returned: Vec<Vec<u8>> = reply.parts().into_iter().map(|(_, body)| body).collect();
    returned.sort();
    let mut expected = files.clone();
    expected.sort();
    assert_eq!(returned, expected, "retrieved study differs from what was stored");

    // A single instance as application/dicom (not multipart).
    let first = &specs[0];
    let instance_uri = format!("/dicom-web/studies/{study}/series/{}/instances/{}", first.series, first.sop);
    let reply = harness.get(&instance_uri, "application/dicom; transfer-syntax=*").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, files[0]);

    // Metadata: every attribute of the stored data set, pixel data by URI.
    let reply = harness.get(&format!("{instance_uri}/metadata"), "application/dicom+json").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let metadata = reply.json();
    let pixel_uri = metadata[0]["7FE00010"]["BulkDataURI"].as_str().expect("pixel data as a BulkDataURI").to_string();
    let parsed = read_array(&reply.text(), &|_| None).expect("metadata reads back as DICOM JSON");
    let original = dataset(first);
    for element in original.iter() {
        if element.tag == tags::PIXEL_DATA || element.tag == tags::SPECIFIC_CHARACTER_SET {
            continue;
        }
        let got = parsed[0].get(element.tag).unwrap_or_else(|| panic!("{} missing from metadata", element.tag));
        assert_eq!(got.value.to_strings(), element.value.to_strings(), "{}", element.tag);
    }

    // The BulkDataURI resolves to the pixel bytes, whole or by range.
    let path = pixel_uri.split_once("/dicom-web").map(|(_, path)| format!("/dicom-web{path}")).expect("a service URL");
    let reply = harness.get(&path, "application/octet-stream").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.body, pixels(first.seed));
    let request = Request::get(&path).header(header::RANGE, "bytes=100-199").body(Body::empty()).expect("request");
    let reply = harness.send(request).await;
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(reply.header(header::CONTENT_RANGE), format!("bytes 100-199/{}", pixels(first.seed).len()));
    assert_eq!(reply.body, pixels(first.seed)[100..200]);

    // Frame 1 is the native pixel data.
    let reply = harness.get(&format!("{instance_uri}/frames/1"), "application/octet-stream").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.body, pixels(first.seed));
}

#[tokio::test]
async fn metadata_has_an_etag_and_answers_304_when_unchanged() {
    let harness = Harness::new();
    let first = spec(2, 1, 1);
    harness.store(&[part10(&first)]).await;
    let uri = format!("/dicom-web/studies/{}/series/{}/metadata", first.study, first.series);
    let reply = harness.get(&uri, "application/dicom+json").await;
    let etag = reply.header(header::ETAG).to_string();
    assert!(etag.starts_with('"') && etag.len() > 2, "no ETag: {etag:?}");
    let conditional =
        |tag: &str| Request::get(&uri).header(header::IF_NONE_MATCH, tag).body(Body::empty()).expect("request");
    let reply = harness.send(conditional(&etag)).await;
    assert_eq!(reply.status, StatusCode::NOT_MODIFIED);
    assert!(reply.body.is_empty());

    // A new instance in the series changes the metadata and its ETag.
    harness.store(&[part10(&spec(2, 1, 2))]).await;
    let reply = harness.send(conditional(&etag)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_ne!(reply.header(header::ETAG), etag);
    assert_eq!(reply.json().as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn metadata_is_answered_from_the_catalog_without_reading_files() {
    let harness = Harness::new();
    let specs = [spec(9, 1, 1), spec(9, 1, 2)];
    harness.store(&specs.iter().map(part10).collect::<Vec<_>>()).await;
    // Take the stored files away: metadata must not need them.
    let removed = remove_files_under(&harness.dir.path().join("data/blobs"));
    assert_eq!(removed, 2, "both instances' files were written");
    let uri = format!("/dicom-web/studies/{}/metadata", specs[0].study);
    let reply = harness.get(&uri, "application/dicom+json").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let metadata = reply.json();
    let mut sops: Vec<String> =
        metadata.as_array().expect("array").iter().map(|m| string_value(m, "00080018")).collect();
    sops.sort();
    assert_eq!(sops, vec![specs[0].sop.clone(), specs[1].sop.clone()]);
}

fn remove_files_under(dir: &std::path::Path) -> usize {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).expect("listing blobs").flatten() {
        let path = entry.path();
        if path.is_dir() {
            removed += remove_files_under(&path);
        } else if path.extension().is_some_and(|ext| ext == "dcm") {
            // The store keeps a pool of empty pre-created files; only written ones count.
            let written = entry.metadata().is_ok_and(|meta| meta.len() > 0);
            std::fs::remove_file(&path).expect("removing a blob");
            removed += usize::from(written);
        }
    }
    removed
}

#[tokio::test]
async fn json_is_compressed_when_the_client_asks() {
    let harness = Harness::new();
    let instances: Vec<Vec<u8>> = (1..=12).map(|n| part10(&spec(3, 1, n))).collect();
    harness.store(&instances).await;
    let request = Request::get("/dicom-web/instances?includefield=all")
        .header(header::ACCEPT_ENCODING, "gzip")
        .body(Body::empty())
        .expect("request");
    let reply = harness.send(request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header(header::CONTENT_ENCODING), "gzip");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&reply.body[..]), &mut text).expect("gunzip");
    let matches: serde_json::Value = serde_json::from_str(&text).expect("JSON inside");
    assert_eq!(matches.as_array().map(Vec::len), Some(12));

    // Instances themselves are never compressed: the stored bytes go out as they are.
    let first = spec(3, 1, 1);
    let request = Request::get(format!("/dicom-web/studies/{}", first.study))
        .header(header::ACCEPT, "multipart/related; type=application/dicom; transfer-syntax=*")
        .header(header::ACCEPT_ENCODING, "gzip")
        .body(Body::empty())
        .expect("request");
    let reply = harness.send(request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header(header::CONTENT_ENCODING), "");
}

#[tokio::test]
async fn viewer_text_is_compressed_and_images_are_not() {
    // The web viewer's assets come through `router_with`; its text compresses, images do not.
    let dir = tempfile::tempdir().expect("temporary directory");
    let archive = Archive::open(ArchiveConfig::new(dir.path().join("data"))).expect("opening the archive");
    let asset = |content_type: &'static str| {
        axum::routing::get(move || async move { ([(header::CONTENT_TYPE, content_type)], "let x = 1;\n".repeat(400)) })
    };
    let extra = Router::new()
        .route("/", asset("text/html; charset=utf-8"))
        .route("/viewer/app.js", asset("text/javascript; charset=utf-8"))
        .route("/viewer/viewer.css", asset("text/css; charset=utf-8"))
        .route("/viewer/favicon.svg", asset("image/svg+xml"))
        .route("/viewer/picture.jpg", asset("image/jpeg"));
    let router = haneul_dicomweb::router_with(
        WebState::new(Arc::clone(&archive), WebConfig::default().with_anonymous_role(haneul_core::Role::Admin)),
        extra,
    );
    let fetch = |path: &'static str, encoding: &'static str| {
        let router = router.clone();
        async move {
            let request =
                Request::get(path).header(header::ACCEPT_ENCODING, encoding).body(Body::empty()).expect("request");
            let response = router.oneshot(request).await.expect("the router answers");
            let encoding = response
                .headers()
                .get(header::CONTENT_ENCODING)
                .map(|v| v.to_str().expect("ASCII").to_string())
                .unwrap_or_default();
            let body = to_bytes(response.into_body(), usize::MAX).await.expect("reading the body").to_vec();
            (encoding, body)
        }
    };
    for path in ["/", "/viewer/app.js", "/viewer/viewer.css", "/viewer/favicon.svg"] {
        let (encoding, body) = fetch(path, "gzip").await;
        assert_eq!(encoding, "gzip", "{path}");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut text).expect("gunzip");
        assert_eq!(text, "let x = 1;\n".repeat(400), "{path}");
        assert_eq!(fetch(path, "br").await.0, "br", "{path}");
    }
    let (encoding, body) = fetch("/viewer/picture.jpg", "gzip, br").await;
    assert_eq!((encoding.as_str(), body.len()), ("", 4400));
}

#[tokio::test]
async fn cors_preflight_allows_the_headers_viewers_send() {
    let harness = Harness::new();
    let request = Request::builder()
        .method(Method::OPTIONS)
        .uri("/dicom-web/studies")
        .header(header::ORIGIN, "https://viewer.example.org")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "accept, authorization, content-type")
        .body(Body::empty())
        .expect("request");
    let reply = harness.send(request).await;
    assert!(reply.status.is_success(), "{}", reply.status);
    assert_eq!(reply.header(header::ACCESS_CONTROL_ALLOW_ORIGIN), "*");
    let allowed = reply.header(header::ACCESS_CONTROL_ALLOW_HEADERS).to_ascii_lowercase();
    for name in ["accept", "authorization", "content-type"] {
        assert!(allowed.contains(name), "{name} not allowed: {allowed}");
    }

    // With a configured list, other origins get no CORS grant.
    let config = WebConfig {
        cors_origins: vec!["https://viewer.example.org".into()],
        ..WebConfig::default().with_anonymous_role(haneul_core::Role::Admin)
    };
    let harness = Harness::with_config(config);
    let ask =
        |origin: &str| Request::get("/api/status").header(header::ORIGIN, origin).body(Body::empty()).expect("request");
    let reply = harness.send(ask("https://viewer.example.org")).await;
    assert_eq!(reply.header(header::ACCESS_CONTROL_ALLOW_ORIGIN), "https://viewer.example.org");
    let reply = harness.send(ask("https://elsewhere.example.com")).await;
    assert_eq!(reply.header(header::ACCESS_CONTROL_ALLOW_ORIGIN), "");
    assert_eq!(reply.header("cross-origin-resource-policy"), "cross-origin");
}

/// A search answers at most `qido_max_results` matches, whatever `limit`
/// asks, says so in a PS3.18 `Warning: 299`, and the rest is reached with
/// `offset`; a search within the maximum is answered whole, without the warning.
#[tokio::test]
async fn searches_beyond_the_servers_maximum_are_cut_with_a_warning_and_paged() {
    let config =
        WebConfig { qido_max_results: 3, ..WebConfig::default() }.with_anonymous_role(haneul_core::Role::Admin);
    let harness = Harness::with_config(config);
    let specs: Vec<Spec> = (1..=5).map(|study| spec(study, 1, 1)).collect();
    harness.store(&specs.iter().map(part10).collect::<Vec<_>>()).await;
    let study_uids = |reply: &Reply| -> Vec<String> {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let answer = reply.json();
        answer.as_array().expect("an array").iter().map(|study| string_value(study, "0020000D")).collect()
    };
    let cut = |reply: &Reply| {
        let warning = reply.header(header::WARNING);
        warning.starts_with("299 ") && warning.contains("exceeded the maximum supported by the server")
    };

    let mut seen = Vec::new();
    for (query, expected, warned) in [
        ("", 3, true),
        ("?limit=10", 3, true),
        ("?limit=2", 2, false),
        ("?limit=0", 0, false),
        ("?offset=18446744073709551615", 0, false),
        ("?limit=3", 3, false),
        ("?offset=3", 2, false),
        ("?offset=1&limit=5", 3, true),
        ("?offset=2&limit=5", 3, false),
    ] {
        let reply = harness.get(&format!("/dicom-web/studies{query}"), "application/dicom+json").await;
        let uids = study_uids(&reply);
        assert_eq!((uids.len(), cut(&reply)), (expected, warned), "studies{query}: {uids:?}");
        if query.is_empty() || query == "?offset=3" {
            seen.extend(uids);
        }
    }
    seen.sort();
    let mut stored: Vec<String> = specs.iter().map(|spec| spec.study.clone()).collect();
    stored.sort();
    assert_eq!(seen, stored, "the first page and the one after it hold every study once");

    // Within the maximum: whole, no warning.
    let reply = harness.get(&format!("/dicom-web/studies/{}/series", specs[0].study), "application/dicom+json").await;
    assert_eq!((reply.json().as_array().map(Vec::len), cut(&reply)), (Some(1), false), "{}", reply.text());
}

#[tokio::test]
async fn client_mistakes_get_4xx_with_a_readable_body() {
    let config =
        WebConfig { max_upload_bytes: 4096, ..WebConfig::default().with_anonymous_role(haneul_core::Role::Admin) };
    let harness = Harness::with_config(config);
    let first = spec(4, 1, 1);
    harness.store(&[part10(&first)]).await;
    let instance_uri = format!("/dicom-web/studies/{}/series/{}/instances/{}", first.study, first.series, first.sop);
    let json = "application/dicom+json";
    let cases: Vec<(String, &str, StatusCode)> = vec![
        ("/dicom-web/studies?limit=abc".into(), json, StatusCode::BAD_REQUEST),
        ("/dicom-web/studies?offset=-1".into(), json, StatusCode::BAD_REQUEST),
        ("/dicom-web/studies?StudyDate=yesterday".into(), json, StatusCode::BAD_REQUEST),
        ("/dicom-web/studies?NoSuchKeyword=1".into(), json, StatusCode::BAD_REQUEST),
        (format!("{instance_uri}/rendered?window=wide"), "image/jpeg", StatusCode::BAD_REQUEST),
        (format!("{instance_uri}/rendered?quality=0"), "image/jpeg", StatusCode::BAD_REQUEST),
        (format!("{instance_uri}/frames/0"), "application/octet-stream", StatusCode::BAD_REQUEST),
        (format!("{instance_uri}/frames/x"), "application/octet-stream", StatusCode::BAD_REQUEST),
        ("/wado?requestType=WADO&studyUID=1".into(), "*/*", StatusCode::BAD_REQUEST),
        ("/dicom-web/studies/1.2.3.999".into(), "multipart/related; type=application/dicom", StatusCode::NOT_FOUND),
        ("/dicom-web/studies/1.2.3.999/metadata".into(), json, StatusCode::NOT_FOUND),
        (format!("{instance_uri}/frames/2"), "application/octet-stream", StatusCode::NOT_FOUND),
        (format!("{instance_uri}/bulkdata/00100010"), "application/octet-stream", StatusCode::NOT_FOUND),
        ("/dicom-web/nothing-here".into(), json, StatusCode::NOT_FOUND),
        (format!("{instance_uri}/metadata"), "text/html", StatusCode::NOT_ACCEPTABLE),
        ("/dicom-web/studies".into(), "image/png", StatusCode::NOT_ACCEPTABLE),
        (format!("{instance_uri}/rendered"), "application/pdf", StatusCode::NOT_ACCEPTABLE),
        // A syntax nothing can turn uncompressed pixels into.
        (instance_uri.clone(), "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.50", StatusCode::NOT_ACCEPTABLE),
    ];
    for (uri, accept, status) in cases {
        let reply = harness.get(&uri, accept).await;
        assert_eq!(reply.status, status, "GET {uri} (Accept: {accept}): {}", reply.text());
        reply.assert_error(status);
    }

    let (content_type, body) = multipart(&[part10(&spec(4, 1, 2))], true);
    let reply = harness.stow("/dicom-web/studies", "text/plain", body.clone()).await;
    reply.assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let reply =
        harness.stow("/dicom-web/studies", "multipart/related; type=\"image/png\"; boundary=x", body.clone()).await;
    reply.assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let big: Vec<Vec<u8>> = (2..=4).map(|n| part10(&spec(4, 1, n))).collect();
    let (big_type, big_body) = multipart(&big, true);
    assert!(big_body.len() > 4096);
    let reply = harness.stow("/dicom-web/studies", &big_type, big_body).await;
    reply.assert_error(StatusCode::PAYLOAD_TOO_LARGE);
    let reply = harness.stow("/dicom-web/studies", &content_type, b"--test-boundary-7d3f--\r\n".to_vec()).await;
    reply.assert_error(StatusCode::BAD_REQUEST);

    let request = Request::put("/dicom-web/studies").body(Body::empty()).expect("request");
    harness.send(request).await.assert_error(StatusCode::METHOD_NOT_ALLOWED);
    let request = Request::delete("/api/studies/1.2.3.999").body(Body::empty()).expect("request");
    harness.send(request).await.assert_error(StatusCode::NOT_FOUND);

    // Nothing already stored was lost on the way.
    let reply = harness.get(&instance_uri, "application/dicom; transfer-syntax=*").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, part10(&first));
    let reply = harness.get("/api/status", "application/json").await;
    assert_eq!(reply.json()["statistics"]["instances"], 1);
}

#[tokio::test]
async fn stow_reports_each_instance_and_never_overwrites() {
    let harness = Harness::new();
    let first = spec(5, 1, 1);
    harness.store(&[part10(&first)]).await;

    // Same UID, different pixels: kept as first stored, answered with a warning.
    let mut changed = first.clone();
    changed.seed = 99;
    let fresh = spec(5, 1, 2);
    let garbage = b"this is not DICOM".to_vec();
    let (content_type, body) = multipart(&[part10(&changed), part10(&fresh), garbage], true);
    let reply = harness.stow("/dicom-web/studies", &content_type, body).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
    let outcome = reply.json();
    let referenced = outcome["00081199"]["Value"].as_array().expect("ReferencedSOPSequence").clone();
    let failed = outcome["00081198"]["Value"].as_array().expect("FailedSOPSequence").clone();
    assert_eq!(failed.len(), 1, "{outcome}");
    assert!(failed[0]["00081197"]["Value"][0].as_u64().is_some_and(|reason| reason != 0), "{outcome}");
    let warned: Vec<&serde_json::Value> = referenced.iter().filter(|item| item.get("00081196").is_some()).collect();
    assert_eq!(warned.len(), 1, "the duplicate carries a WarningReason: {outcome}");
    assert_eq!(string_value(warned[0], "00081155"), first.sop);
    for item in &referenced {
        assert!(string_value(item, "00081190").starts_with("http"), "RetrieveURL: {item}");
    }

    let uri = format!("/dicom-web/studies/{}/series/{}/instances/{}", first.study, first.series, first.sop);
    let reply = harness.get(&uri, "application/dicom; transfer-syntax=*").await;
    assert_eq!(reply.body, part10(&first), "the first instance must stay as it was");

    // Into a study URL, instances of another study are refused: 409 when none is stored.
    let other = spec(6, 1, 1);
    let (content_type, body) = multipart(&[part10(&other)], true);
    let reply = harness.stow(&format!("/dicom-web/studies/{}", first.study), &content_type, body).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text());
    assert_eq!(reply.json()["00081198"]["Value"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn deleting_a_series_removes_it_and_records_who_asked() {
    let harness = Harness::new();
    let kept = spec(7, 1, 1);
    let removed = [spec(7, 2, 2), spec(7, 2, 3)];
    harness.store(&[part10(&kept), part10(&removed[0]), part10(&removed[1])]).await;

    let admin = haneul_core::users::NewUser {
        name: "kim.admin".into(),
        role: haneul_core::Role::Admin,
        password: "a long enough password".into(),
        sites: vec![],
        must_change_password: false,
    };
    harness.archive.users().create_user(&admin).expect("creating the admin");
    let token = harness.archive.users().create_token("kim.admin", "console", None).expect("a token").secret;
    let request = Request::delete(format!("/api/series/{}", removed[0].series))
        .header(header::USER_AGENT, "pacs-admin-console")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .expect("request");
    let reply = harness.send(request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["removed_instances"], 2);

    let reply = harness.get(&format!("/dicom-web/studies/{}/instances", kept.study), "application/dicom+json").await;
    let left: Vec<String> =
        reply.json().as_array().expect("array").iter().map(|m| string_value(m, "00080018")).collect();
    assert_eq!(left, vec![kept.sop.clone()]);
    let uri = format!("/dicom-web/studies/{}/series/{}/metadata", removed[0].study, removed[0].series);
    harness.get(&uri, "application/dicom+json").await.assert_error(StatusCode::NOT_FOUND);

    harness.archive.flush_journal().await;
    let events = harness.archive.events_after(0, 1000).await.expect("journal");
    let removal = events.iter().find(|event| event.kind == "removed").expect("a removal event");
    assert_eq!(removal.series_uid.as_deref(), Some(removed[0].series.as_str()));
    assert_eq!(removal.origin.actor, "kim.admin", "the signed-in user, not the user agent");
}

#[tokio::test]
async fn rendered_images_honour_viewport_and_format() {
    let harness = Harness::new();
    let first = spec(8, 1, 1);
    harness.store(&[part10(&first)]).await;
    let instance_uri = format!("/dicom-web/studies/{}/series/{}/instances/{}", first.study, first.series, first.sop);

    let reply = harness.get(&format!("{instance_uri}/rendered?viewport=64,32"), "image/png").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header(header::CONTENT_TYPE), "image/png");
    assert_eq!(png_size(&reply.body), (64, 32));

    let reply = harness.get(&format!("/dicom-web/studies/{}/thumbnail", first.study), "image/jpeg").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header(header::CONTENT_TYPE), "image/jpeg");
    assert_eq!(&reply.body[..2], &[0xFF, 0xD8], "a JPEG stream");

    // A different window gives a different image.
    let narrow = harness.get(&format!("{instance_uri}/rendered?window=-900,50"), "image/png").await;
    let wide = harness.get(&format!("{instance_uri}/rendered?window=0,4000"), "image/png").await;
    assert_eq!((narrow.status, wide.status), (StatusCode::OK, StatusCode::OK));
    assert_ne!(narrow.body, wide.body);

    let reply = harness
        .get(
            &format!(
                "/wado?requestType=WADO&studyUID={}&seriesUID={}&objectUID={}&contentType=image/png&columns=40",
                first.study, first.series, first.sop
            ),
            "*/*",
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(png_size(&reply.body), (40, 20));
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[1..4], b"PNG", "not a PNG");
    let word = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().expect("four bytes"));
    (word(16), word(20))
}

#[tokio::test]
async fn the_openapi_document_is_served() {
    let harness = Harness::new();
    let reply = harness.get("/api/openapi.json", "application/json").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["openapi"], "3.0.3");
    assert_eq!(reply.text(), haneul_dicomweb::OPENAPI);
}

/// A user limited to sites stores into their site and sees only their
/// sites' studies, by search and by retrieve; an unlimited user sees all.
#[tokio::test]
async fn users_limited_to_sites_see_and_store_only_their_sites_data() {
    let harness = Harness::with_config(WebConfig::default());
    let users = harness.archive.users();
    let mut tokens = std::collections::HashMap::new();
    for (name, role, sites) in [
        ("seoul.tech", haneul_core::Role::Technologist, vec!["seoul".to_string()]),
        ("busan.tech", haneul_core::Role::Technologist, vec!["busan".to_string()]),
        ("network.admin", haneul_core::Role::Admin, vec![]),
    ] {
        let new = haneul_core::users::NewUser {
            name: name.into(),
            role,
            password: "a long enough password".into(),
            sites,
            must_change_password: false,
        };
        users.create_user(&new).expect("creating a user");
        let token = users.create_token(name, "tests", None).expect("a token").secret;
        tokens.insert(name, format!("Bearer {token}"));
    }
    let request = |method: &str, uri: String, user: &str| {
        Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, tokens[user].as_str())
            .header(header::ACCEPT, "application/dicom+json")
    };
    let (seoul, busan) = (spec(71, 1, 1), spec(72, 1, 1));
    for (user, instance) in [("seoul.tech", &seoul), ("busan.tech", &busan)] {
        let (content_type, body) = multipart(&[part10(instance)], true);
        let stow = request("POST", "/dicom-web/studies".into(), user)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .expect("request");
        let reply = harness.send(stow).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }

    let studies_seen = |user: &'static str, uri: &'static str| {
        let request = request("GET", uri.into(), user).body(Body::empty()).expect("request");
        let harness = &harness;
        async move {
            let reply = harness.send(request).await;
            assert_eq!(reply.status, StatusCode::OK, "{user} {uri}: {}", reply.text());
            let mut studies: Vec<String> =
                reply.json().as_array().expect("array").iter().map(|m| string_value(m, "0020000D")).collect();
            studies.sort();
            studies.dedup();
            studies
        }
    };
    for uri in ["/dicom-web/studies", "/dicom-web/series", "/dicom-web/instances"] {
        assert_eq!(studies_seen("seoul.tech", uri).await, vec![seoul.study.clone()], "{uri}");
        assert_eq!(studies_seen("busan.tech", uri).await, vec![busan.study.clone()], "{uri}");
        assert_eq!(studies_seen("network.admin", uri).await, vec![seoul.study.clone(), busan.study.clone()]);
    }
    let other_site = format!("/dicom-web/studies/{}/metadata", busan.study);
    let reply = harness.send(request("GET", other_site.clone(), "seoul.tech").body(Body::empty()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "another site's study is not there for seoul");
    let reply = harness.send(request("GET", other_site, "busan.tech").body(Body::empty()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::OK);
}
