//! `haneul migrate`: studies taken from a legacy archive into a running
//! server, followed, verified and reported. The folder source here (a folder
//! tree of files, as on DICOMDIR media); the DICOM source against Orthanc
//! playing the legacy PACS is in the second half.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

const FILES: [&str; 5] = ["CT_small.dcm", "MR_small.dcm", "rtdose.dcm", "SC_rgb_small_odd.dcm", "rtplan.dcm"];

/// `haneul migrate ARGS…` against `server`, with its administrator's token.
fn migrate(server: &Server, args: &[&str]) -> Output {
    run(Command::new(haneul_bin())
        .arg("migrate")
        .args(args)
        .args(["--server", &server.http_url()])
        .env("HANEUL_TOKEN", &server.token))
}

fn status(server: &Server, source: &str) -> serde_json::Value {
    let response = server.get(&format!("/api/migrations/{source}"), "application/json");
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

fn report(dir: &Path, source: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join(format!("{source}-report.json"))).expect("the JSON report");
    serde_json::from_str(&text).expect("a JSON report")
}

/// A media folder: the sample files in sub-folders, a DICOMDIR-named file and a file that is not DICOM.
fn media_folder(root: &Path, files: &[&str]) {
    for (index, file) in files.iter().enumerate() {
        let dir = root.join(format!("DIR{index:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(pydicom_data().join("test_files").join(file), dir.join(format!("IM{index:05}"))).unwrap();
    }
    std::fs::write(root.join("DICOMDIR"), b"not read: the files are walked").unwrap();
    std::fs::write(root.join("README.TXT"), b"patient media").unwrap();
}

fn folder_source(name: &str, path: &Path, extra: &str) -> String {
    format!("[[migration.source]]\nname = \"{name}\"\nmethod = \"folder\"\npath = \"{}\"\n{extra}\n", path.display())
}

#[test]
fn folder_migration_is_verified_reported_and_reverified() {
    let media = tempfile::tempdir().unwrap();
    media_folder(media.path(), &FILES);
    let server = Server::start_with(&folder_source("media", media.path(), ""));
    let reports = tempfile::tempdir().unwrap();
    let reports_dir = reports.path().to_str().unwrap();

    let output = migrate(&server, &["start", "media", "--report-dir", reports_dir]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("complete"), "{}", text(&output));
    let first = report(reports.path(), "media");
    let studies = first["studies"].as_array().unwrap();
    assert!(!studies.is_empty());
    assert!(studies.iter().all(|study| study["state"] == "verified"), "{first:#}");
    let migrated: i64 = studies.iter().map(|study| study["migrated_instances"].as_i64().unwrap()).sum();
    assert_eq!(migrated, FILES.len() as i64);
    assert_eq!(server.instances().len(), FILES.len(), "every file is stored once");
    assert!(first["discrepancies"].as_array().unwrap().is_empty());
    let csv = std::fs::read_to_string(reports.path().join("media-report.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + studies.len(), "{csv}");

    // Starting again changes nothing: every study is verified already.
    let output = migrate(&server, &["start", "media"]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(server.instances().len(), FILES.len());

    // A file gone from the source since: the new verify reports it, by SOP Instance UID.
    let gone_file = media.path().join("DIR000").join("IM00000");
    let gone = sop_uid_of(&gone_file);
    std::fs::remove_file(&gone_file).unwrap();
    let output = migrate(&server, &["verify", "media", "--report-dir", reports_dir]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let second = report(reports.path(), "media");
    let discrepancies = second["discrepancies"].as_array().unwrap();
    assert_eq!(discrepancies.len(), 1, "{second:#}");
    assert_eq!(discrepancies[0]["sop_uid"], gone.as_str());
    assert_eq!(discrepancies[0]["kind"], "missing-at-source");
    assert_eq!(status(&server, "media")["counts"]["discrepant"], 1);
}

/// The SOP Instance UID of a file (DCMTK's dcmdump).
fn sop_uid_of(file: &Path) -> String {
    let output = run(dcmtk("dcmdump").args(["+P", "SOPInstanceUID"]).arg(file));
    let dump = String::from_utf8_lossy(&output.stdout).to_string();
    let start = dump.find('[').expect("a SOP Instance UID") + 1;
    let end = dump[start..].find(']').expect("the end of the UID") + start;
    dump[start..end].to_string()
}

#[test]
fn a_closed_time_window_holds_the_migration_until_the_server_restarts_without_it() {
    let media = tempfile::tempdir().unwrap();
    media_folder(media.path(), &FILES[..2]);
    let closed = "windows = [{ time = \"00:00-24:00\", parallel = 0 }]";
    let mut server = Server::start_with(&folder_source("media", media.path(), closed));
    let output = migrate(&server, &["start", "media", "--detach"]);
    assert!(output.status.success(), "{}", text(&output));
    // Planned (the listing is not throttled), but nothing fetched while the window allows no association.
    eventually("the migration planned and waiting", || {
        let status = status(&server, "media");
        status["phase"] == "waiting" && status["counts"]["total"].as_i64() == Some(2)
    });
    let status_now = status(&server, "media");
    assert_eq!(status_now["counts"]["pending"], 2, "{status_now:#}");
    assert_eq!(status_now["parallel_now"], 0);
    assert!(server.instances().is_empty());

    // Restarted with the window gone, the server resumes the migration by itself.
    server.restart_with(&folder_source("media", media.path(), ""));
    eventually("the resumed migration finished", || status(&server, "media")["phase"] == "finished");
    assert_eq!(status(&server, "media")["counts"]["verified"], 2);
    assert_eq!(server.instances().len(), 2);
}
