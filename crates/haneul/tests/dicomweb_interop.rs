//! Interoperability with dicomweb-client (the Python DICOMweb client) as the
//! remote peer: STOW-RS, QIDO-RS, WADO-RS (instances, metadata, bulk data,
//! frames, rendered), WADO-URI, the REST API and error answers, against a real
//! `haneul serve`. The peers are the Python scripts in tests/peers/dw_*.py;
//! each takes a JSON spec, prints one JSON document and exits non-zero when a
//! check fails.

mod common;

use std::path::PathBuf;

use common::{parse_peer_output, pydicom_data, run_peer, Server};
use serde_json::{json, Value};

/// Malformed pydicom test files: truncated, or missing their transfer syntax.
const BAD_FILES: [&str; 3] = ["MR_truncated.dcm", "rtplan_truncated.dcm", "meta_missing_tsyntax.dcm"];

/// pydicom charset files that STOW-RS rightly refuses: their file meta names
/// another SOP Instance UID than the data set, or the data set has no SOP Class.
const INCONSISTENT_CHARSET_FILES: [&str; 4] =
    ["chrJapMulti.dcm", "chrJapMultiExplicitIR6.dcm", "chrSQEncoding.dcm", "chrSQEncoding1.dcm"];

/// The JSON document a peer printed, given its spec.
fn peer(script: &str, spec: &Value) -> Value {
    parse_peer_output(script, &run_peer(script, &[&spec.to_string()]))
}

/// The spec every peer gets: the DICOMweb root and the HTTP root.
fn spec(server: &Server) -> Value {
    json!({ "url": server.dicomweb_url(), "http": server.http_url(), "token": server.token })
}

fn with(mut spec: Value, extra: Value) -> Value {
    if let (Some(spec), Value::Object(extra)) = (spec.as_object_mut(), extra) {
        spec.extend(extra);
    }
    spec
}

fn count(output: &Value, key: &str) -> u64 {
    output[key].as_u64().unwrap_or_else(|| panic!("no count {key:?} in {output}"))
}

/// The number of files in the broad set the peers use (dw_util.BROAD_SET).
const BROAD_SET_LEN: u64 = 33;

#[test]
fn stow_rs_stores_refuses_and_reports_per_instance() {
    let server = Server::start();
    let out = peer("dw_stow.py", &with(spec(&server), json!({ "bad": BAD_FILES })));
    assert_eq!(count(&out, "stored"), BROAD_SET_LEN, "{out}");
    assert_eq!(count(&out, "retrieve_urls"), BROAD_SET_LEN, "{out}");
    assert_eq!(count(&out, "found"), BROAD_SET_LEN, "{out}");
    assert_eq!(out["bad"]["failed"].as_u64(), Some(BAD_FILES.len() as u64 + 1), "{out}");
    assert_eq!(out["all_bad"]["status"].as_u64(), Some(409), "{out}");
    assert_eq!(out["into_study"]["failed"].as_u64(), Some(1), "{out}");
}

#[test]
fn qido_rs_searches_match_the_stored_files() {
    let server = Server::start();
    let out = peer("dw_search.py", &spec(&server));
    assert_eq!(count(&out, "instances"), BROAD_SET_LEN, "{out}");
    assert!(count(&out, "studies") >= 5 && count(&out, "series") >= count(&out, "studies"), "{out}");
    let checks = out["checks"].as_object().expect("checks");
    assert!(checks.len() >= 15, "too few checks ran: {out}");
    assert_eq!(checks["paging"].as_u64(), Some(BROAD_SET_LEN), "{out}");
}

/// A server whose QIDO-RS answers are capped: dicomweb-client gets a first
/// page with PS3.18's warning, and pages through every instance by offset.
#[test]
fn capped_qido_rs_answers_page_through_everything_with_dicomweb_client() {
    let server = Server::start_with_http("qido_max_results = 10", "");
    let out = peer("dw_capped.py", &spec(&server));
    assert_eq!(count(&out, "stored"), BROAD_SET_LEN, "{out}");
    assert_eq!(count(&out, "first_page"), 10, "{out}");
    let warning = out["warning"].as_str().unwrap_or_default();
    assert!(warning.starts_with("299 ") && warning.contains("exceeded the maximum"), "{out}");
    assert_eq!((count(&out, "remaining"), count(&out, "remaining_distinct")), (BROAD_SET_LEN, BROAD_SET_LEN), "{out}");
    assert_eq!((count(&out, "within_limit"), out["within_limit_warning"].as_str()), (2, Some("")), "{out}");
}

#[test]
fn korean_and_other_character_sets_through_qido_and_metadata() {
    let server = Server::start();
    let mut files: Vec<String> = std::fs::read_dir(pydicom_data().join("charset_files"))
        .expect("pydicom charset_files")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "dcm"))
        .filter_map(|path: PathBuf| path.file_name().and_then(|n| n.to_str()).map(str::to_string))
        .filter(|name| !INCONSISTENT_CHARSET_FILES.contains(&name.as_str()))
        .collect();
    files.sort();
    let out = peer("dw_korean.py", &with(spec(&server), json!({ "files": files })));
    let korean = out["korean"].as_array().expect("korean");
    assert!(korean.len() >= 2, "{out}");
    let found = out["queries"]["김*"].as_array().expect("김* results");
    assert!(!found.is_empty() && found.iter().all(|name| korean.contains(name)), "{out}");
    assert!(count(&out, "names_checked") >= files.len() as u64, "{out}");
}

#[test]
fn wado_rs_metadata_matches_the_files_and_bulk_data_resolves() {
    let server = Server::start();
    let out = peer("dw_metadata.py", &spec(&server));
    assert_eq!(count(&out, "instances"), BROAD_SET_LEN, "{out}");
    assert!(count(&out, "attributes") > 1000, "{out}");
    assert!(count(&out, "bulk") >= 10 && count(&out, "ranges") >= 20, "{out}");
    assert!(count(&out, "big_endian") >= 3, "{out}");
    assert_eq!(out["etag"]["status_again"].as_u64(), Some(304), "{out}");
}

#[test]
fn wado_rs_retrieve_gives_back_the_bytes_stored() {
    let server = Server::start();
    let out = peer("dw_retrieve.py", &spec(&server));
    assert_eq!(count(&out, "instances"), BROAD_SET_LEN, "{out}");
    assert_eq!(count(&out, "study_parts"), BROAD_SET_LEN, "{out}");
    assert_eq!(count(&out, "series_parts"), BROAD_SET_LEN, "{out}");
    assert!(count(&out, "decompressed") >= 3, "{out}");
}

#[test]
fn wado_rs_frames_match_pydicom_decoding() {
    let server = Server::start();
    let out = peer("dw_frames.py", &spec(&server));
    assert!(count(&out, "frames") >= 20, "{out}");
    assert!(count(&out, "multi_frame_lists") >= 2, "{out}");
    assert!(count(&out, "compressed_as_stored") >= 2, "{out}");
}

#[test]
fn wado_rs_rendered_images_follow_viewport_and_window() {
    let server = Server::start();
    let out = peer("dw_rendered.py", &spec(&server));
    assert!(count(&out, "images") >= 8, "{out}");
    assert_eq!(out["viewport"].as_array().map(Vec::len), Some(2), "{out}");
    assert!(count(&out, "window_pixels") > 0 && count(&out, "frames") >= 2, "{out}");
}

#[test]
fn wado_uri_serves_files_and_images() {
    let server = Server::start();
    let out = peer("dw_wado_uri.py", &spec(&server));
    assert_eq!(count(&out, "identical"), BROAD_SET_LEN, "{out}");
    assert!(count(&out, "explicit_le") >= 10 && count(&out, "jpeg") >= 20, "{out}");
    assert_eq!(out["errors"].as_object().map(|e| e.len()), Some(7), "{out}");
}

#[test]
fn rest_api_status_aes_and_deletion() {
    let server = Server::start_with("[[known_ae]]\ntitle = \"DWPEER\"\nhost = \"127.0.0.1\"\nport = 11119\n");
    let extra = json!({ "ae_title": server.ae_title, "dicom_port": server.dicom_port, "known": "DWPEER" });
    let out = peer("dw_api.py", &with(spec(&server), extra));
    assert_eq!(count(&out, "studies_before"), count(&out, "studies_after"), "{out}");
    assert!(count(&out, "removed") >= 1, "{out}");
    assert_eq!(count(&out, "instances_after"), count(&out, "instances_before") - count(&out, "removed"), "{out}");
}

#[test]
fn client_mistakes_get_readable_4xx_answers() {
    let limit = 256 * 1024;
    let server = Server::start_with_http(&format!("max_upload_bytes = {limit}"), "");
    let out = peer("dw_errors.py", &with(spec(&server), json!({ "max_upload_bytes": limit })));
    let statuses = out["statuses"].as_object().expect("statuses");
    assert!(statuses.len() >= 15, "{out}");
    assert!(statuses.values().all(|s| (400..500).contains(&s.as_u64().unwrap_or(0))), "{out}");
    assert_eq!(statuses.get("stow too large").and_then(Value::as_u64), Some(413), "{out}");
    // A 500 is logged as "request failed"; none may have happened.
    assert!(!server.log().contains("request failed"), "the server logged an internal error:\n{}", server.log());
}
