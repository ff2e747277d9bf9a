//! Interoperability with pynetdicom as the remote application entity: byte-exact
//! storage and retrieval, Korean C-FIND, C-CANCEL, C-MOVE, storage commitment
//! and duplicates. The peers are the Python scripts in tests/peers/pn_*.py; each
//! takes host, port and a JSON spec and prints one JSON document.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{free_port, haneul_bin, parse_peer_output, pydicom_data, run, run_peer, Server};
use serde_json::{json, Value};

const SUCCESS: u64 = 0x0000;
const CANCEL: u64 = 0xFE00;
const DUPLICATE_KEPT_FIRST: u64 = 0xB006;
const NO_SUCH_OBJECT_INSTANCE: u64 = 0x0112;
const COMMITMENT_INSTANCE: &str = "1.2.840.10008.1.20.1.1";
const SECONDARY_CAPTURE: &str = "1.2.840.10008.5.1.4.1.1.7";
const IR149: [&str; 2] = ["", "ISO 2022 IR 149"];
const UTF8: [&str; 1] = ["ISO_IR 192"];

/// Run a peer against the server: `script 127.0.0.1 PORT SPEC`.
fn peer(script: &str, server: &Server, spec: &Value) -> Value {
    let port = server.dicom_port.to_string();
    let spec = spec.to_string();
    parse_peer_output(script, &run_peer(script, &["127.0.0.1", &port, &spec]))
}

fn array(value: &Value) -> &Vec<Value> {
    value.as_array().unwrap_or_else(|| panic!("expected a JSON array, got {value}"))
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

fn hex(status: Option<u64>) -> String {
    status.map_or_else(|| "none".to_string(), |code| format!("{code:04X}"))
}

/// A Specific Character Set as pydicom returns it (a string or a list), as a list.
fn charset(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items.iter().map(|v| text(v).trim().to_string()).collect(),
        Value::String(s) => vec![s.trim().to_string()],
        _ => Vec::new(),
    }
}

/// Generated Secondary Capture instances (see pn_gen.py); returns the file records.
fn generate(dir: &Path, count: usize, options: Value) -> Vec<Value> {
    let mut spec = json!({ "outdir": dir, "count": count });
    if let (Some(spec), Value::Object(options)) = (spec.as_object_mut(), options) {
        spec.extend(options);
    }
    let spec = spec.to_string();
    let output = parse_peer_output("pn_gen.py", &run_peer("pn_gen.py", &[&spec]));
    array(&output["files"]).clone()
}

fn paths(files: &[Value]) -> Vec<String> {
    files.iter().map(|file| text(&file["path"]).to_string()).collect()
}

/// C-STORE files unchanged with pynetdicom; one result per file (see pn_store.py).
fn store(server: &Server, files: &[String]) -> Vec<Value> {
    let output = peer("pn_store.py", server, &json!({ "calling_ae": "PNSTORE", "files": files }));
    array(&output["results"]).clone()
}

fn assert_all_stored(results: &[Value]) {
    for result in results {
        assert_eq!(result["status"].as_u64(), Some(SUCCESS), "C-STORE of {} failed: {result}", result["path"]);
    }
}

/// The data set bytes pynetdicom sent for a stored file: everything after its file meta group.
fn sent_bytes(result: &Value) -> Vec<u8> {
    let path = text(&result["path"]);
    let offset = result["offset"].as_u64().unwrap_or_else(|| panic!("no data set offset for {path}"));
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    bytes[usize::try_from(offset).expect("offset")..].to_vec()
}

/// Where two byte strings first differ, for failure messages.
fn first_difference(expected: &[u8], actual: &[u8]) -> String {
    let at = expected.iter().zip(actual).position(|(a, b)| a != b).unwrap_or(expected.len().min(actual.len()));
    format!("lengths {} vs {}, first difference at byte {at}", expected.len(), actual.len())
}

/// C-GET studies back (see pn_get.py), proposing each (SOP class, transfer syntax) pair.
fn get_studies(server: &Server, outdir: &Path, pairs: &BTreeSet<(String, String)>, studies: &[String]) -> Value {
    let pairs: Vec<[&str; 2]> = pairs.iter().map(|(class, syntax)| [class.as_str(), syntax.as_str()]).collect();
    peer("pn_get.py", server, &json!({ "calling_ae": "PNGET", "outdir": outdir, "pairs": pairs, "studies": studies }))
}

fn known_ae(title: &str, port: u16) -> String {
    format!("[[known_ae]]\ntitle = {title:?}\nhost = \"127.0.0.1\"\nport = {port}\n")
}

fn file_name(path: &str) -> &str {
    Path::new(path).file_name().and_then(|n| n.to_str()).unwrap_or(path)
}

#[test]
fn every_pydicom_test_file_comes_back_byte_identical() {
    let server = Server::start();
    let mut files: Vec<PathBuf> = std::fs::read_dir(pydicom_data().join("test_files"))
        .expect("pydicom test_files")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "dcm"))
        .collect();
    files.sort();
    let files: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    let stored = peer("pn_store.py", &server, &json!({ "calling_ae": "PNSTORE", "select": true, "files": files }));
    let results = array(&stored["results"]);

    // What the server must keep: per SOP Instance UID, the first copy it accepted.
    let mut problems: Vec<String> = Vec::new();
    let mut rows: Vec<(usize, String)> = Vec::new();
    let mut kept: HashMap<String, usize> = HashMap::new();
    for (index, result) in results.iter().enumerate() {
        let name = file_name(text(&result["path"]));
        if let Some(reason) = result["skipped"].as_str() {
            rows.push((index, format!("skipped ({reason})")));
            continue;
        }
        let uid = text(&result["sop_uid"]).to_string();
        let status = result["status"].as_u64();
        let bytes = sent_bytes(result);
        let doubts: Vec<&str> = array(&result["doubts"]).iter().map(text).collect();
        let first = kept.get(&uid).copied();
        let expected = match first {
            Some(first) if sent_bytes(&results[first]) == bytes => SUCCESS,
            Some(_) => DUPLICATE_KEPT_FIRST,
            None => SUCCESS,
        };
        if !result["error"].is_null() {
            problems.push(format!("{name}: pynetdicom could not send it: {}", result["error"]));
        } else if doubts.is_empty() && status != Some(expected) {
            problems.push(format!(
                "{name}: well-formed data set answered {} (expected {}): {}",
                hex(status),
                hex(Some(expected)),
                text(&result["comment"])
            ));
        } else if status == Some(SUCCESS) && expected == DUPLICATE_KEPT_FIRST {
            problems.push(format!("{name}: other content under an already stored UID answered 0000, not B006"));
        }
        let accepted = matches!(status, Some(SUCCESS | DUPLICATE_KEPT_FIRST));
        if accepted && first.is_none() {
            if status == Some(DUPLICATE_KEPT_FIRST) {
                problems.push(format!("{name}: B006 but no earlier copy of {uid} was stored"));
            }
            kept.insert(uid.clone(), index);
        }
        let mut note = if doubts.is_empty() { String::new() } else { format!(" [{}]", doubts.join("; ")) };
        if let Some(first) = first {
            note.push_str(&format!(" (UID of {})", file_name(text(&results[first]["path"]))));
        }
        rows.push((index, format!("C-STORE {}{note}", hex(status))));
    }
    assert!(kept.len() >= 30, "only {} distinct instances were stored; problems: {problems:#?}", kept.len());

    // C-GET every study that holds a kept instance, proposing every accepted (class, syntax).
    let pairs: BTreeSet<(String, String)> = results
        .iter()
        .filter(|r| matches!(r["status"].as_u64(), Some(SUCCESS | DUPLICATE_KEPT_FIRST)))
        .map(|r| (text(&r["sop_class"]).to_string(), text(&r["transfer_syntax"]).to_string()))
        .collect();
    let mut per_study: BTreeMap<String, usize> = BTreeMap::new();
    for &index in kept.values() {
        *per_study.entry(text(&results[index]["study_uid"]).to_string()).or_default() += 1;
    }
    let studies: Vec<String> = per_study.keys().cloned().collect();
    let outdir = tempfile::tempdir().expect("temporary directory");
    let got = get_studies(&server, outdir.path(), &pairs, &studies);
    for study in array(&got["studies"]) {
        let uid = text(&study["study_uid"]);
        let completed = study["counts"]["completed"].as_u64();
        let expected = per_study.get(uid).copied().unwrap_or(0) as u64;
        if study["status"].as_u64() != Some(SUCCESS) || completed != Some(expected) {
            problems.push(format!("C-GET of study {uid}: {study} (expected {expected} completed)"));
        }
    }
    let mut received: HashMap<String, &Value> = HashMap::new();
    for item in array(&got["received"]) {
        let uid = text(&item["sop_uid"]).to_string();
        if !kept.contains_key(&uid) {
            problems.push(format!("C-GET sent {uid}, which was never stored"));
        }
        if received.insert(uid.clone(), item).is_some() {
            problems.push(format!("C-GET sent {uid} twice"));
        }
    }
    let mut identical = 0;
    for (uid, &index) in &kept {
        let original = &results[index];
        let name = file_name(text(&original["path"]));
        let verdict = match received.get(uid) {
            None => format!("NOT RETRIEVED ({uid})"),
            Some(item) => {
                let bytes = std::fs::read(text(&item["file"])).expect("received data set");
                let expected = sent_bytes(original);
                if text(&item["transfer_syntax"]) != text(&original["transfer_syntax"]) {
                    format!(
                        "retrieved in {} instead of {}",
                        text(&item["transfer_syntax"]),
                        original["transfer_syntax"]
                    )
                } else if bytes != expected {
                    format!("BYTES DIFFER ({})", first_difference(&expected, &bytes))
                } else {
                    identical += 1;
                    format!("identical {} bytes", bytes.len())
                }
            }
        };
        if !verdict.starts_with("identical") {
            problems.push(format!("{name}: {verdict}"));
        }
        if let Some(row) = rows.iter_mut().find(|(i, _)| *i == index) {
            row.1 = format!("{}, C-GET {verdict}", row.1);
        }
    }

    println!("{:<44} {:<24} result", "file", "transfer syntax");
    for (index, row) in &rows {
        let result = &results[*index];
        println!("{:<44} {:<24} {row}", file_name(text(&result["path"])), text(&result["transfer_syntax"]));
    }
    println!("{identical} of {} kept instances came back byte-identical", kept.len());
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

/// One C-FIND query for pn_find.py.
fn find_query(level: &str, charset: Option<&[&str]>, keys: Value) -> Value {
    json!({ "model": "study", "level": level, "charset": charset, "keys": keys })
}

/// A PATIENT-level query in the Patient Root model.
fn patient_query(charset: Option<&[&str]>, name: &str) -> Value {
    let mut query = find_query("PATIENT", charset, json!({ "PatientName": name, "PatientID": "" }));
    query["model"] = json!("patient");
    query
}

#[test]
fn find_korean_names_at_patient_study_and_image_level() {
    let server = Server::start();
    let dir = pydicom_data().join("charset_files");
    let files: Vec<String> =
        ["chrI2.dcm", "chrKoreanMulti.dcm"].iter().map(|name| dir.join(name).display().to_string()).collect();
    let stored = store(&server, &files);
    assert_all_stored(&stored);
    let (hong, kim) = (&stored[0], &stored[1]);
    let hong_study = text(&hong["study_uid"]);
    let kim_study = text(&kim["study_uid"]);
    // The series UIDs, for the hierarchical IMAGE-level queries.
    let series = |study: &str| {
        let output = peer(
            "pn_find.py",
            &server,
            &json!({ "queries": [find_query("SERIES", None, json!({"StudyInstanceUID": study, "SeriesInstanceUID": ""}))] }),
        );
        text(&output["queries"][0]["matches"][0]["SeriesInstanceUID"]).to_string()
    };
    let (hong_series, kim_series) = (series(hong_study), series(kim_study));
    assert!(!hong_series.is_empty() && !kim_series.is_empty(), "SERIES-level C-FIND found no series");

    let study_keys = |name: &str| json!({ "PatientName": name, "PatientID": "", "StudyInstanceUID": "" });
    let image_keys = |name: &str, study: &str, series: &str| json!({ "PatientName": name, "StudyInstanceUID": study, "SeriesInstanceUID": series, "SOPInstanceUID": "" });
    let hong_name = ("Hong^Gildong=洪^吉洞=홍^길동", "Hong^Gildong", "洪^吉洞", "홍^길동");
    let kim_name = ("김희중", "김희중", "", "");
    // (query, expected charset of the responses, expected matches as (unique key value, name))
    type Expected<'a> = (Value, &'a [&'a str], Vec<(&'a str, (&'a str, &'a str, &'a str, &'a str))>);
    let cases: Vec<Expected> = vec![
        (find_query("STUDY", Some(&IR149), study_keys("홍*")), &IR149, vec![(hong_study, hong_name)]),
        (find_query("STUDY", Some(&UTF8), study_keys("김*")), &UTF8, vec![(kim_study, kim_name)]),
        (find_query("STUDY", Some(&IR149), study_keys("김*")), &IR149, vec![(kim_study, kim_name)]),
        (find_query("STUDY", Some(&IR149), study_keys("洪*")), &IR149, vec![(hong_study, hong_name)]),
        (find_query("STUDY", Some(&UTF8), study_keys("홍^길*")), &UTF8, vec![(hong_study, hong_name)]),
        // The default repertoire cannot carry the names: the responses say ISO_IR 192.
        (find_query("STUDY", None, study_keys("hong*")), &UTF8, vec![(hong_study, hong_name)]),
        (find_query("STUDY", Some(&["ISO_IR 100"]), study_keys("HONG*")), &UTF8, vec![(hong_study, hong_name)]),
        (find_query("STUDY", Some(&UTF8), study_keys("이*")), &UTF8, vec![]),
        (patient_query(Some(&IR149), "홍*"), &IR149, vec![("I2EXAMPLE", hong_name)]),
        (patient_query(Some(&UTF8), "김*"), &UTF8, vec![("2008-3", kim_name)]),
        (
            find_query("IMAGE", Some(&IR149), image_keys("홍*", hong_study, &hong_series)),
            &IR149,
            vec![(text(&hong["sop_uid"]), hong_name)],
        ),
        (
            find_query("IMAGE", Some(&UTF8), image_keys("김*", kim_study, &kim_series)),
            &UTF8,
            vec![(text(&kim["sop_uid"]), kim_name)],
        ),
        (find_query("IMAGE", Some(&UTF8), image_keys("홍*", kim_study, &kim_series)), &UTF8, vec![]),
    ];
    let queries: Vec<Value> = cases.iter().map(|(query, _, _)| query.clone()).collect();
    let output = peer("pn_find.py", &server, &json!({ "calling_ae": "PNFIND", "queries": queries }));
    let mut problems = Vec::new();
    for ((query, expected_charset, expected), result) in cases.iter().zip(array(&output["queries"])) {
        let level = text(&query["level"]);
        let unique = match level {
            "IMAGE" => "SOPInstanceUID",
            "PATIENT" => "PatientID",
            _ => "StudyInstanceUID",
        };
        let label = format!("{} {level} {} {}", query["model"], query["charset"], query["keys"]["PatientName"]);
        if result["status"].as_u64() != Some(SUCCESS) {
            problems.push(format!("{label}: final status {}: {}", hex(result["status"].as_u64()), result["comment"]));
        }
        let matches = array(&result["matches"]);
        let found: BTreeSet<&str> = matches.iter().map(|m| text(&m[unique])).collect();
        let wanted: BTreeSet<&str> = expected.iter().map(|(uid, _)| *uid).collect();
        if found != wanted || matches.len() != expected.len() {
            problems.push(format!("{label}: matched {found:?}, expected {wanted:?}"));
            continue;
        }
        for (uid, (full, alphabetic, ideographic, phonetic)) in expected {
            let response = matches.iter().find(|m| text(&m[unique]) == *uid).expect("match");
            let name = &response["PatientName"];
            let got =
                (text(&name["str"]), text(&name["alphabetic"]), text(&name["ideographic"]), text(&name["phonetic"]));
            if got != (*full, *alphabetic, *ideographic, *phonetic) {
                problems.push(format!("{label}: PatientName decoded as {got:?}, expected {full:?}"));
            }
            let got_charset = charset(&response["SpecificCharacterSet"]);
            if got_charset != expected_charset.iter().map(|s| s.to_string()).collect::<Vec<_>>() {
                problems.push(format!(
                    "{label}: response Specific Character Set {got_charset:?}, expected {expected_charset:?}"
                ));
            }
            // ISO 2022 IR 149 text is announced with ESC $ ) C.
            let raw = text(&name["raw_hex"]);
            if *expected_charset == IR149 && !raw.contains("1b242943") {
                problems.push(format!("{label}: PatientName bytes {raw} lack the IR 149 escape sequence"));
            }
        }
    }
    assert!(problems.is_empty(), "{} problems:\n{}\nresponses: {output:#}", problems.len(), problems.join("\n"));
}

#[test]
fn cancel_during_find_stops_it_and_the_association_goes_on() {
    // A pending C-FIND response costs the server microseconds: with a few dozen
    // matches it has sent them all (and its final status) before any client can
    // react to the first. Thousands of studies make the cancel land mid-stream;
    // they are imported from files (`haneul import`) to keep this test short.
    const STUDIES: u64 = 2000;
    let mut server = Server::start();
    let dir = tempfile::tempdir().expect("temporary directory");
    let files = generate(dir.path(), STUDIES as usize, json!({ "patient_name": "Cancel^Find" }));
    server.stop();
    let import = run(Command::new(haneul_bin())
        .args(["import", "--strict", "--jobs", "8", "--config"])
        .arg(server.config_path())
        .arg(dir.path()));
    assert!(import.status.success(), "haneul import failed");
    server.start_again();

    let probe = text(&files[7]["study_uid"]);
    let output = peer(
        "pn_find.py",
        &server,
        &json!({ "calling_ae": "PNCANCEL", "echo": true, "queries": [
            { "level": "STUDY", "keys": { "StudyInstanceUID": "", "PatientName": "" }, "cancel_after": 1 },
            { "level": "STUDY", "keys": { "StudyInstanceUID": probe, "PatientName": "" } },
        ]}),
    );
    let cancelled = &output["queries"][0];
    let pending = cancelled["pending"].as_u64().unwrap_or(0);
    println!("cancelled C-FIND: {pending} of {STUDIES} pending responses, final {}", hex(cancelled["status"].as_u64()));
    assert_eq!(cancelled["cancel_sent"], json!(true), "no pending response came to cancel: {cancelled}");
    assert_eq!(
        cancelled["status"].as_u64(),
        Some(CANCEL),
        "final status after C-CANCEL ({pending} of {STUDIES} matches sent): {}",
        cancelled["comment"]
    );
    assert!((1..STUDIES).contains(&pending), "{pending} of {STUDIES} matches were sent despite the C-CANCEL");

    let after = &output["queries"][1];
    assert_eq!(after["status"].as_u64(), Some(SUCCESS), "C-FIND after the cancelled one: {after}");
    let found: Vec<&str> = array(&after["matches"]).iter().map(|m| text(&m["StudyInstanceUID"])).collect();
    assert_eq!(found, vec![probe], "C-FIND after the cancelled one");
    assert_eq!(output["echo_status"].as_u64(), Some(SUCCESS), "C-ECHO after the cancelled C-FIND");
}

#[test]
fn move_to_a_pynetdicom_scp_and_cancel_a_move() {
    const LARGE: usize = 60;
    let dest_port = free_port();
    let server = Server::start_with(&known_ae("PNDEST", dest_port));
    let dir = tempfile::tempdir().expect("temporary directory");
    let small = generate(&dir.path().join("small"), 3, json!({ "one_study": true, "patient_name": "Move^Small" }));
    let large = generate(&dir.path().join("large"), LARGE, json!({ "one_study": true, "patient_name": "Move^Large" }));
    let all: Vec<String> = paths(&small).into_iter().chain(paths(&large)).collect();
    assert_all_stored(&store(&server, &all));

    let small_study = text(&small[0]["study_uid"]);
    let large_study = text(&large[0]["study_uid"]);
    // The destination takes 50 ms per instance, so the C-MOVE of the large study
    // is still running when the C-CANCEL arrives.
    let output = peer(
        "pn_move.py",
        &server,
        &json!({
            "calling_ae": "PNMOVE", "dest_ae": "PNDEST", "dest_port": dest_port, "store_delay": 0.05,
            "moves": [
                { "study_uid": small_study, "cancel_after": null },
                { "study_uid": large_study, "cancel_after": 1 },
            ],
        }),
    );
    let callers: Vec<&str> = array(&output["destination_callers"]).iter().map(text).collect();
    assert!(callers.iter().all(|&caller| caller == "HANEUL"), "destination associations came from {callers:?}");

    let whole = &output["moves"][0];
    assert_eq!(whole["status"].as_u64(), Some(SUCCESS), "C-MOVE of the small study: {whole}");
    assert_eq!(whole["counts"]["completed"].as_u64(), Some(3), "C-MOVE of the small study: {whole}");
    let received: BTreeSet<&str> = array(&whole["received"]).iter().map(text).collect();
    let sent: BTreeSet<&str> = small.iter().map(|f| text(&f["sop_uid"])).collect();
    assert_eq!(received, sent, "instances the destination received from the small study");
    assert_eq!(array(&whole["received"]).len(), 3, "each instance once");

    let cancelled = &output["moves"][1];
    let counts = &cancelled["counts"];
    println!("cancelled C-MOVE: {cancelled}");
    assert_eq!(cancelled["cancel_sent"], json!(true), "no pending response came to cancel: {cancelled}");
    assert_eq!(cancelled["status"].as_u64(), Some(CANCEL), "final status of the cancelled C-MOVE: {cancelled}");
    let completed = counts["completed"].as_u64().expect("completed sub-operations in the final response");
    let failed = counts["failed"].as_u64().unwrap_or(0);
    let warning = counts["warning"].as_u64().unwrap_or(0);
    let remaining = counts["remaining"].as_u64().expect("remaining sub-operations in the cancel response");
    assert!(completed < LARGE as u64, "all {completed} sub-operations completed despite the C-CANCEL");
    assert_eq!((failed, warning), (0, 0), "failed/warning sub-operations: {cancelled}");
    assert_eq!(completed + remaining, LARGE as u64, "completed + remaining in the final response: {cancelled}");
    let received: Vec<&str> = array(&cancelled["received"]).iter().map(text).collect();
    let large_uids: BTreeSet<&str> = large.iter().map(|f| text(&f["sop_uid"])).collect();
    assert_eq!(received.len() as u64, completed, "instances received vs completed sub-operations");
    assert!(received.iter().all(|uid| large_uids.contains(uid)), "received instances outside the study");
}

#[test]
fn a_move_destination_that_stops_answering_fails_the_move_instead_of_holding_it() {
    const INSTANCES: usize = 3;
    let dest_port = free_port();
    let server = Server::start_with_dicom("outbound_timeout_seconds = 2", &known_ae("PNDEST", dest_port));
    let dir = tempfile::tempdir().expect("temporary directory");
    let study = generate(dir.path(), INSTANCES, json!({ "one_study": true, "patient_name": "Move^Hang" }));
    assert_all_stored(&store(&server, &paths(&study)));

    // The destination receives the first instance and then holds its answer
    // back for 60 s: without a limit the move would wait that long, then
    // complete. With a 2 s limit, the first sub-operation fails, and the
    // others are not sent on an association whose answers can no longer be
    // told apart.
    let started = std::time::Instant::now();
    let output = peer(
        "pn_move.py",
        &server,
        &json!({
            "calling_ae": "PNMOVE", "dest_ae": "PNDEST", "dest_port": dest_port, "store_hang": 60,
            "moves": [{ "study_uid": text(&study[0]["study_uid"]), "cancel_after": null }],
        }),
    );
    let moved = &output["moves"][0];
    println!("C-MOVE to a destination that stopped answering: {moved} in {:?}", started.elapsed());
    assert_eq!(moved["status"].as_u64(), Some(0xA702), "final status: {moved}");
    assert_eq!(moved["counts"]["failed"].as_u64(), Some(INSTANCES as u64), "failed sub-operations: {moved}");
    assert_eq!(moved["counts"]["completed"].as_u64().unwrap_or(0), 0, "completed sub-operations: {moved}");
    assert!(started.elapsed() < std::time::Duration::from_secs(45), "the move waited for the destination");
    let log = server.log();
    assert!(log.contains("move destination lost"), "the lost destination is not logged:\n{log}");
}

/// A storage commitment request for pn_commit.py.
fn commitment_request(transaction: &str, references: &[(&str, &str)]) -> Value {
    json!({ "transaction_uid": transaction, "references": references.iter().map(|(c, i)| [c, i]).collect::<Vec<_>>() })
}

fn referenced(report: &Value) -> BTreeSet<(String, String)> {
    array(&report["referenced"]).iter().map(|r| (text(&r[0]).to_string(), text(&r[1]).to_string())).collect()
}

fn failed(report: &Value) -> Vec<(String, String, Option<u64>)> {
    array(&report["failed"]).iter().map(|r| (text(&r[0]).to_string(), text(&r[1]).to_string(), r[2].as_u64())).collect()
}

fn report_for<'a>(output: &'a Value, transaction: &str) -> &'a Value {
    array(&output["reports"])
        .iter()
        .find(|r| r["transaction_uid"] == transaction)
        .unwrap_or_else(|| panic!("no N-EVENT-REPORT for transaction {transaction}: {output:#}"))
}

/// Check a report: event type, committed references and failed ones (all 0x0112).
fn check_report(report: &Value, event_type: u64, committed: &[(&str, &str)], unknown: &[(&str, &str)]) {
    assert_eq!(report["event_type"].as_u64(), Some(event_type), "event type: {report:#}");
    assert_eq!(report["affected_sop_class"], "1.2.840.10008.1.20.1", "{report:#}");
    assert_eq!(report["affected_sop_instance"], COMMITMENT_INSTANCE, "{report:#}");
    let expected: BTreeSet<(String, String)> = committed.iter().map(|(c, i)| (c.to_string(), i.to_string())).collect();
    assert_eq!(referenced(report), expected, "Referenced SOP Sequence: {report:#}");
    let expected: Vec<(String, String, Option<u64>)> =
        unknown.iter().map(|(c, i)| (c.to_string(), i.to_string(), Some(NO_SUCH_OBJECT_INSTANCE))).collect();
    assert_eq!(failed(report), expected, "Failed SOP Sequence: {report:#}");
}

fn stored_references(files: &[Value]) -> Vec<(&str, &str)> {
    files.iter().map(|f| (text(&f["sop_class"]), text(&f["sop_uid"]))).collect()
}

#[test]
fn storage_commitment_reported_on_the_same_association() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("temporary directory");
    let files = generate(dir.path(), 3, json!({ "one_study": true, "patient_name": "Commit^Same" }));
    assert_all_stored(&store(&server, &paths(&files)));
    let stored = stored_references(&files);
    let unknown = [(SECONDARY_CAPTURE, "2.25.1234567890123456789012345678901")];
    let with_unknown: Vec<(&str, &str)> = stored.iter().chain(&unknown).copied().collect();
    let (partial, complete) = ("2.25.111111111111111111111", "2.25.222222222222222222222");

    let output = peer(
        "pn_commit.py",
        &server,
        &json!({ "calling_ae": "PNCOMMIT", "mode": "same", "requests": [
            commitment_request(partial, &with_unknown),
            commitment_request(complete, &stored),
        ]}),
    );
    for action in array(&output["actions"]) {
        assert_eq!(action["status"].as_u64(), Some(SUCCESS), "N-ACTION: {action}");
    }
    assert_eq!(array(&output["reports"]).len(), 2, "one N-EVENT-REPORT per request: {output:#}");
    for report in array(&output["reports"]) {
        assert_eq!(report["on_requesting_association"], json!(true), "report on another association: {report:#}");
    }
    check_report(report_for(&output, partial), 2, &stored, &unknown);
    check_report(report_for(&output, complete), 1, &stored, &[]);
}

#[test]
fn storage_commitment_reported_on_a_new_association() {
    let listen_port = free_port();
    let config =
        format!("{}\n[dicom.storage_commitment]\ndelivery = \"new-association\"\n", known_ae("PNCOMMIT", listen_port));
    let server = Server::start_with(&config);
    let dir = tempfile::tempdir().expect("temporary directory");
    let files = generate(dir.path(), 2, json!({ "one_study": true, "patient_name": "Commit^New" }));
    assert_all_stored(&store(&server, &paths(&files)));
    let stored = stored_references(&files);
    let unknown = [(SECONDARY_CAPTURE, "2.25.9876543210987654321098765432109")];
    let with_unknown: Vec<(&str, &str)> = stored.iter().chain(&unknown).copied().collect();
    let (partial, complete) = ("2.25.333333333333333333333", "2.25.444444444444444444444");

    let output = peer(
        "pn_commit.py",
        &server,
        &json!({ "calling_ae": "PNCOMMIT", "mode": "new", "listen_port": listen_port, "requests": [
            commitment_request(partial, &with_unknown),
            commitment_request(complete, &stored),
        ]}),
    );
    for action in array(&output["actions"]) {
        assert_eq!(action["status"].as_u64(), Some(SUCCESS), "N-ACTION: {action}");
    }
    assert_eq!(array(&output["reports"]).len(), 2, "one N-EVENT-REPORT per request: {output:#}");
    for report in array(&output["reports"]) {
        assert_eq!(report["on_requesting_association"], json!(false), "report on the requesting association");
        assert_eq!(report["caller"], "HANEUL", "calling AE of the report association: {report:#}");
    }
    check_report(report_for(&output, partial), 2, &stored, &unknown);
    check_report(report_for(&output, complete), 1, &stored, &[]);
}

#[test]
fn duplicate_with_other_bytes_is_a_warning_and_the_first_copy_stays() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("temporary directory");
    let first = generate(&dir.path().join("first"), 1, json!({ "description": "first copy" }));
    let uids = json!({
        "sop_uid": first[0]["sop_uid"], "study_uid": first[0]["study_uid"], "series_uid": first[0]["series_uid"],
    });
    let mut options = uids.as_object().expect("object").clone();
    options.insert("description".into(), json!("second copy, other bytes"));
    let second = generate(&dir.path().join("second"), 1, Value::Object(options));

    let stored_first = store(&server, &paths(&first));
    assert_all_stored(&stored_first);
    let again = store(&server, &[paths(&second)[0].clone(), paths(&first)[0].clone()]);
    assert_ne!(sent_bytes(&again[0]), sent_bytes(&stored_first[0]), "the second copy must differ");
    assert_eq!(again[0]["status"].as_u64(), Some(DUPLICATE_KEPT_FIRST), "other bytes under a stored UID: {}", again[0]);
    assert_eq!(again[1]["status"].as_u64(), Some(SUCCESS), "the same bytes again: {}", again[1]);

    let pairs: BTreeSet<(String, String)> =
        [(SECONDARY_CAPTURE.to_string(), text(&stored_first[0]["transfer_syntax"]).to_string())].into();
    let outdir = tempfile::tempdir().expect("temporary directory");
    let got = get_studies(&server, outdir.path(), &pairs, &[text(&first[0]["study_uid"]).to_string()]);
    assert_eq!(got["studies"][0]["status"].as_u64(), Some(SUCCESS), "C-GET: {got}");
    let received = array(&got["received"]);
    assert_eq!(received.len(), 1, "C-GET sent {} instances: {got}", received.len());
    let bytes = std::fs::read(text(&received[0]["file"])).expect("received data set");
    let expected = sent_bytes(&stored_first[0]);
    assert!(bytes == expected, "the stored copy is not the first one: {}", first_difference(&expected, &bytes));
}
