//! The audit trail on a real server: DCMTK stores and finds, an HTTP client
//! reads metadata, and every access is in the hash-chained trail with the
//! right actor, address and patient; `haneul audit verify` passes on the real
//! trail and fails once one byte of it is changed.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{dcmtk, haneul_bin, pydicom_data, run, Server};
use serde_json::Value;

const PATIENT: &str = "1CT1";
const STUDY: &str = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322";

/// Wait until the trail holds records that `done` accepts; returns them all.
fn wait_for_records(data: &Path, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let records = search(data);
        if done(&records) {
            return records;
        }
        assert!(Instant::now() < deadline, "{what}: not in the audit trail: {records:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sign-ins, sign-outs, refusals and changes of accounts are recorded with
/// who, from where and the outcome; a change made with the command-line tools
/// while the server runs reaches the trail through its inbox.
#[test]
fn sign_ins_refusals_and_account_changes_are_recorded() {
    let server = Server::start();
    let data = server.data_dir();
    let clinician = server.add_user("dr.audit", "clinician");
    let port = server.http_port;
    let login = |password: &str| {
        let body = serde_json::json!({ "user": clinician, "password": password }).to_string();
        common::http_request(port, "POST", "/api/login", &[("Content-Type", "application/json")], body.as_bytes())
    };
    assert_eq!(login("not the password").status, 401);
    let signed_in = login(common::USER_PASSWORD);
    assert_eq!(signed_in.status, 200, "{}", signed_in.text());
    let cookie = signed_in.header("set-cookie").and_then(|c| c.split(';').next()).expect("a cookie").to_string();
    let csrf = signed_in.json()["csrf_token"].as_str().expect("a CSRF token").to_string();
    let with_session = [("Cookie", cookie.as_str()), ("X-CSRF-Token", csrf.as_str())];
    let denied = common::http_request(port, "DELETE", &format!("/api/studies/{STUDY}"), &with_session, b"");
    assert_eq!(denied.status, 403, "clinicians do not delete: {}", denied.text());
    assert_eq!(common::http_request(port, "POST", "/api/logout", &with_session, b"").status, 204);

    let records = wait_for_records(&data, "sign-in records", |records| {
        ["login", "login-failed", "permission-denied", "logout"]
            .iter()
            .all(|action| records.iter().any(|r| r["action"] == *action && r["actor"] == clinician.as_str()))
    });
    let of = |action: &str| records.iter().find(|r| r["action"] == action && r["actor"] == clinician.as_str()).unwrap();
    assert_eq!(of("login")["outcome"], "success");
    assert_eq!(of("login")["source"], "127.0.0.1");
    assert_eq!(of("login-failed")["outcome"], "failure");
    assert_eq!(of("login-failed")["detail"]["error"], "wrong password", "{}", of("login-failed"));
    assert_eq!(of("permission-denied")["detail"]["permission"], "delete");
    assert_eq!(of("logout")["detail"]["reason"], "logout");

    // The harness made a token and a user with the command-line tools while
    // the server ran; each start records the configuration file's digest.
    let records = wait_for_records(&data, "configuration changes", |records| {
        let change =
            |name: &str| records.iter().any(|r| r["action"] == "config-change" && r["detail"]["change"] == name);
        change("token create") && change("user add") && change("server start")
    });
    let added = records.iter().find(|r| r["detail"]["change"] == "user add").unwrap();
    assert_eq!(added["detail"]["user"], clinician.as_str());
    assert_eq!(added["detail"]["role"], "clinician");
    assert!(added["actor"].as_str().is_some_and(|actor| actor.ends_with("(command line)")), "{added}");
    let start = records.iter().find(|r| r["detail"]["change"] == "server start").unwrap();
    assert_eq!(start["detail"]["config_blake3"].as_str().map(str::len), Some(64), "{start}");
    let verify = haneul_audit(&data, &["verify"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
}

/// A GET with the administrator's token; returns the status and the body.
fn http_get(server: &Server, path: &str, accept: &str) -> (u16, String) {
    let response = server.get(path, accept);
    (response.status, response.text())
}

fn haneul_audit(data: &Path, args: &[&str]) -> std::process::Output {
    run(Command::new(haneul_bin()).arg("audit").args(args).arg("--data").arg(data))
}

fn search(data: &Path) -> Vec<Value> {
    let output = haneul_audit(data, &["search", "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice::<Vec<Value>>(&output.stdout).expect("search --json prints a JSON array")
}

fn find<'a>(records: &'a [Value], action: &str, actor: &str) -> Option<&'a Value> {
    records.iter().find(|r| r["action"] == action && r["actor"] == actor)
}

fn names(record: &Value, key: &str) -> Vec<String> {
    record[key].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

#[test]
fn accesses_are_recorded_and_the_trail_verifies() {
    let mut server = Server::start();
    let port = server.dicom_port.to_string();
    let data = server.data_dir();

    let ct = pydicom_data().join("test_files/CT_small.dcm");
    let store = run(dcmtk("storescu").args(["-aet", "MODALITY1", "-aec", "HANEUL", "127.0.0.1", &port]).arg(&ct));
    assert!(store.status.success(), "C-STORE failed");
    let find_output = run(dcmtk("findscu").args([
        "-aet",
        "READER7",
        "-aec",
        "HANEUL",
        "-S",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        &format!("PatientID={PATIENT}"),
        "-k",
        "StudyInstanceUID=",
        "127.0.0.1",
        &port,
    ]));
    assert!(find_output.status.success(), "C-FIND failed");
    let (status, body) = http_get(&server, &format!("/dicom-web/studies/{STUDY}/metadata"), "application/dicom+json");
    assert_eq!(status, 200, "{body}");
    let (status, _) = http_get(&server, "/dicom-web/studies/1.2.3.4.404/metadata", "application/dicom+json");
    assert_eq!(status, 404);

    // Records are written in the background; wait for them.
    let deadline = Instant::now() + Duration::from_secs(15);
    let records = loop {
        let records = search(&data);
        let done = find(&records, "store", "MODALITY1").is_some()
            && find(&records, "query", "READER7").is_some()
            && records.iter().filter(|r| r["action"] == "retrieve" && r["actor"] == "admin").count() >= 2;
        if done {
            break records;
        }
        assert!(Instant::now() < deadline, "audit records did not appear: {records:#?}");
        std::thread::sleep(Duration::from_millis(100));
    };

    let store = find(&records, "store", "MODALITY1").unwrap();
    assert_eq!(store["source"], "127.0.0.1");
    assert_eq!(store["outcome"], "success");
    assert_eq!(names(store, "patients"), vec![PATIENT]);
    assert_eq!(names(store, "studies"), vec![STUDY]);
    assert!(store["session"].as_str().is_some_and(|s| !s.is_empty()));

    let query = find(&records, "query", "READER7").unwrap();
    assert_eq!(query["source"], "127.0.0.1");
    assert_eq!(query["detail"]["matches"], 1);
    assert!(query["detail"]["query"]["keys"]["PatientID"].is_string(), "{query}");
    assert_eq!(names(query, "patients"), vec![PATIENT]);

    let retrieves: Vec<&Value> =
        records.iter().filter(|r| r["action"] == "retrieve" && r["actor"] == "admin").collect();
    let metadata = retrieves.iter().find(|r| r["outcome"] == "success").expect("a successful retrieve");
    assert_eq!(metadata["source"], "127.0.0.1");
    assert_eq!(metadata["detail"]["resource"], "metadata");
    assert_eq!(names(metadata, "patients"), vec![PATIENT]);
    assert_eq!(names(metadata, "studies"), vec![STUDY]);
    let missing = retrieves.iter().find(|r| r["outcome"] == "failure").expect("the failed retrieve");
    assert_eq!(names(missing, "studies"), vec!["1.2.3.4.404"]);

    // The REST search finds the same records by patient.
    let (status, body) = http_get(&server, &format!("/api/audit?patient={PATIENT}&limit=50"), "application/json");
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    let actions: Vec<&str> =
        answer["records"].as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
    for action in ["store", "query", "retrieve"] {
        assert!(actions.contains(&action), "{action} missing from {answer:#}");
    }
    let (status, _) = http_get(&server, "/api/audit?from=yesterday", "application/json");
    assert_eq!(status, 400);
    let (_, body) = http_get(&server, "/api/audit?actor=READER7&action=query", "application/json");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["count"], 1, "{answer:#}");

    // The writer's counters are in the metrics: the records found above were
    // written (counted just after their append reaches the disk).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, metrics) = http_get(&server, "/metrics", "text/plain");
        assert_eq!(status, 200);
        assert!(metrics.contains("\nhaneul_audit_records_lost_total 0\n"), "{metrics}");
        let written = metrics
            .lines()
            .find_map(|line| line.strip_prefix("haneul_audit_records_written_total "))
            .and_then(|value| value.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("no audit counter in the metrics:\n{metrics}"));
        if written >= records.len() {
            break;
        }
        assert!(Instant::now() < deadline, "{written} audit records counted, {} on disk", records.len());
        std::thread::sleep(Duration::from_millis(50));
    }

    // Stopped cleanly, everything is on disk: the real trail verifies.
    server.stop();
    let verify = haneul_audit(&data, &["verify"]);
    let text = String::from_utf8_lossy(&verify.stdout).into_owned();
    assert_eq!(verify.status.code(), Some(0), "{text}");
    assert!(text.contains("intact"), "{text}");
    let verify = haneul_audit(&data, &["verify", "--json"]);
    let report: Value = serde_json::from_slice(&verify.stdout).unwrap();
    assert!(report["records"].as_u64().unwrap() >= 5, "{report:#}");

    // One byte changed: the actor of the first record.
    let files: Vec<_> = std::fs::read_dir(data.join("audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let at = bytes.windows(9).position(|w| w == b"MODALITY1").expect("the store record");
    let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
    bytes[at + 8] = b'2';
    std::fs::write(&files[0], bytes).unwrap();
    let verify = haneul_audit(&data, &["verify"]);
    let text = String::from_utf8_lossy(&verify.stdout).into_owned();
    assert_eq!(verify.status.code(), Some(1), "{text}");
    assert!(text.contains("BROKEN") && text.contains(&format!("line {line}:")), "{text}");
    assert!(text.contains("altered"), "{text}");
}
