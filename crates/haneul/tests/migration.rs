//! `haneul migrate`: studies taken from a legacy archive into a running
//! server, followed, verified and reported. The folder source here (a folder
//! tree of files, as on DICOMDIR media); the DICOM source against Orthanc
//! playing the legacy PACS is in the second half, and at the end against a
//! pynetdicom legacy PACS that counts the operations it serves at once.

mod common;

use std::path::Path;
use std::process::Command;

use common::migration::{
    assert_verify_reports_deleted_at_source, migrate, migration_report as report, migration_status as status,
};
use common::orthanc::{file_sop_uid, legacy_sample_paths, LegacyOptions, LegacyPacs};
use common::*;

/// Five studies; rtdose.dcm's file meta names another SOP Instance UID than its data set, so it is refused.
const FILES: [&str; 5] = ["CT_small.dcm", "MR_small.dcm", "SC_rgb_small_odd.dcm", "image_dfl.dcm", "rtdose.dcm"];

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

    // Four studies come over and are verified; the refused file's study is reported failed, with the reason.
    let output = migrate(&server, &["start", "media", "--report-dir", reports_dir]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("NOT complete"), "{}", text(&output));
    let first = report(reports.path(), "media");
    let studies = first["studies"].as_array().unwrap();
    assert_eq!(studies.len(), FILES.len(), "{first:#}");
    let failed: Vec<_> = studies.iter().filter(|study| study["state"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{first:#}");
    assert!(failed[0]["detail"].as_str().unwrap().contains("differs"), "{first:#}");
    assert_eq!(failed[0]["attempts"], 1, "a refused file is not tried again by itself");
    let verified = studies.iter().filter(|study| study["state"] == "verified").count();
    assert_eq!(verified, FILES.len() - 1, "{first:#}");
    assert_eq!(server.instances().len(), FILES.len() - 1, "every readable file is stored once");
    assert!(first["discrepancies"].as_array().unwrap().is_empty());
    let csv = std::fs::read_to_string(reports.path().join("media-report.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + studies.len(), "{csv}");
    assert!(csv.lines().any(|line| line.contains(",failed,") && line.contains("differs")), "{csv}");

    // Starting again tries the failed study once more and stores nothing twice.
    let output = migrate(&server, &["start", "media"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert_eq!(status(&server, "media")["counts"]["verified"], FILES.len() - 1);
    assert_eq!(server.instances().len(), FILES.len() - 1);

    // A file gone from the source since: the new verify reports it, by SOP Instance UID.
    let gone_file = media.path().join("DIR000").join("IM00000");
    let gone = file_sop_uid(&gone_file);
    std::fs::remove_file(&gone_file).unwrap();
    let output = migrate(&server, &["verify", "media", "--report-dir", reports_dir]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let second = report(reports.path(), "media");
    let discrepancies = second["discrepancies"].as_array().unwrap();
    assert_eq!(discrepancies.len(), 1, "{second:#}");
    assert_eq!(discrepancies[0]["sop_uid"], gone.as_str());
    assert_eq!(discrepancies[0]["kind"], "missing-at-source");
    assert_eq!(status(&server, "media")["counts"]["discrepant"], 1);

    // A file whose bytes changed since: the folder offers its bytes, so the digests tell.
    let changed_file = media.path().join("DIR001").join("IM00001");
    let changed = file_sop_uid(&changed_file);
    let mut bytes = std::fs::read(&changed_file).unwrap();
    *bytes.last_mut().unwrap() ^= 0xFF;
    std::fs::write(&changed_file, bytes).unwrap();
    let output = migrate(&server, &["verify", "media", "--report-dir", reports_dir]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let third = report(reports.path(), "media");
    let mismatches: Vec<_> =
        third["discrepancies"].as_array().unwrap().iter().filter(|d| d["kind"] == "digest-mismatch").collect();
    assert_eq!(mismatches.len(), 1, "{third:#}");
    assert_eq!(mismatches[0]["sop_uid"], changed.as_str());
    assert_eq!(status(&server, "media")["counts"]["discrepant"], 2);
    // The same figures for the monitoring.
    let series =
        |state: &str| server.metric(&format!("haneul_migration_studies{{source=\"media\",state=\"{state}\"}}"));
    assert_eq!((series("verified"), series("discrepant")), (FILES.len() as f64 - 3.0, 2.0));
    assert_eq!(server.metric("haneul_migration_discrepancies{source=\"media\"}"), 2.0);
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

/// Haneul configured to migrate from `legacy` (C-MOVE to itself), with `extra` lines in the source block.
fn start_haneul_for(legacy: &LegacyPacs, extra: &str) -> String {
    let port = legacy.address().rsplit(':').next().unwrap().to_string();
    format!(
        "[[migration.source]]\nname = \"legacy\"\nae_title = \"LEGACY\"\nhost = \"127.0.0.1\"\nport = {port}\n{extra}\n"
    )
}

/// Orthanc as the legacy PACS, filled with the samples (Korean names, eleven transfer syntaxes),
/// knowing Haneul (on a port chosen now) as a move destination.
fn legacy_with_samples(haneul_port: u16) -> LegacyPacs {
    let legacy = LegacyPacs::start(LegacyOptions::new().knowing("HANEUL", "127.0.0.1", haneul_port));
    legacy.store("MODALITY", &legacy_sample_paths());
    legacy
}

fn sop_uids(server: &Server) -> std::collections::BTreeSet<String> {
    server.instances().into_iter().map(|(_, _, sop)| sop).collect()
}

#[test]
fn everything_migrates_from_orthanc_verified_and_an_instance_deleted_there_is_reported() {
    let haneul_port = free_port();
    let legacy = legacy_with_samples(haneul_port);
    let coerced =
        "parallel = 4\n[migration.source.coerce]\nissuer_of_patient_id = \"HOSP_A\"\npatient_id_prefix = \"A-\"";
    let server = Server::start_with_dicom_port(haneul_port, &start_haneul_for(&legacy, coerced));
    let reports = tempfile::tempdir().unwrap();

    let output = migrate(&server, &["start", "legacy", "--report-dir", reports.path().to_str().unwrap()]);
    assert!(output.status.success(), "{}\n{}", text(&output), server.log());
    let first = report(reports.path(), "legacy");
    assert!(first["discrepancies"].as_array().unwrap().is_empty(), "{first:#}");
    assert_eq!(first["studies"].as_array().unwrap().len(), legacy.study_count(), "{first:#}");
    assert_eq!(sop_uids(&server), legacy.sop_uids(), "the same instances on both sides");

    // Coerced on the way in: the hospital as issuer, prefixed IDs, the originals kept.
    let study = first["studies"][0]["study_uid"].as_str().unwrap().to_string();
    let original_id = first["studies"][0]["patient_id"].as_str().unwrap().to_string();
    let metadata = server.get(&format!("/dicom-web/studies/{study}/metadata"), "application/dicom+json").json();
    let instance = &metadata[0];
    assert_eq!(instance["00100021"]["Value"][0], "HOSP_A", "{instance:#}");
    assert_eq!(instance["00100020"]["Value"][0].as_str(), Some(format!("A-{original_id}").as_str()), "{instance:#}");
    let original = &instance["04000561"]["Value"][0];
    assert_eq!(original["04000565"]["Value"][0], "COERCE", "{instance:#}");
    let previous = &original["04000550"]["Value"][0];
    assert_eq!(previous["00100020"]["Value"][0].as_str(), Some(original_id.as_str()), "{instance:#}");

    // Korean names were decoded at the source and are found here by a Korean query.
    let korean = server.get("/dicom-web/studies?PatientName=%ED%99%8D*", "application/json");
    assert_eq!(korean.status, 200, "{}", korean.text());
    assert!(!korean.json().as_array().unwrap().is_empty(), "no study of 홍* after the migration");

    // An independent comparison agrees.
    let diff = run(Command::new(haneul_bin()).args(["diff", &legacy.node(), &format!("HANEUL@{}", server.address())]));
    assert_eq!(diff.status.code(), Some(0), "{}", text(&diff));

    // An instance deleted at the source during verification is reported, nothing here is removed.
    let gone = legacy.sop_uids().into_iter().next().unwrap();
    legacy.delete_instance(&gone);
    assert_verify_reports_deleted_at_source(&server, "legacy", &gone);
    assert!(sop_uids(&server).contains(&gone));
}

#[test]
fn a_migration_killed_half_way_resumes_without_duplicates_or_gaps() {
    let haneul_port = free_port();
    let legacy = legacy_with_samples(haneul_port);
    // One association and a few instances a second, so that the kill lands half-way.
    let throttled = "parallel = 1\nrate_limit = 3";
    let mut server = Server::start_with_dicom_port(haneul_port, &start_haneul_for(&legacy, throttled));
    let output = migrate(&server, &["start", "legacy", "--detach"]);
    assert!(output.status.success(), "{}", text(&output));
    eventually("a few studies verified", || status(&server, "legacy")["counts"]["verified"].as_i64() >= Some(3));
    let before = status(&server, "legacy");
    server.kill9();
    let total = legacy.study_count() as i64;
    assert!(before["counts"]["verified"].as_i64() < Some(total), "killed half-way, not at the end: {before:#}");

    // Started again, the server resumes the migration by itself.
    server.start_again();
    eventually("the resumed migration finished", || status(&server, "legacy")["phase"] == "finished");
    let after = status(&server, "legacy");
    assert_eq!(after["counts"]["verified"], total, "{after:#}");
    assert_eq!(after["counts"]["discrepancies"], 0, "{after:#}");
    assert_eq!(sop_uids(&server), legacy.sop_uids(), "no gap");
    assert_eq!(server.instances().len(), legacy.instance_count(), "no duplicate");
}

#[test]
fn a_c_get_migration_brings_every_instance_byte_for_byte_without_a_route_back_to_haneul() {
    // Orthanc does not know Haneul: no move destination, the instances come back on our association.
    let legacy = LegacyPacs::start(LegacyOptions::new());
    legacy.store("MODALITY", &legacy_sample_paths());
    let config = start_haneul_for(&legacy, "method = \"c-get\"\nparallel = 2");
    let server = Server::start_with(&config);
    let reports = tempfile::tempdir().unwrap();

    let output = migrate(&server, &["start", "legacy", "--report-dir", reports.path().to_str().unwrap()]);
    assert!(output.status.success(), "{}\n{}\n{}", text(&output), server.log(), legacy.log());
    let report = report(reports.path(), "legacy");
    assert!(report["discrepancies"].as_array().unwrap().is_empty(), "{report:#}");
    assert_eq!(report["status"]["method"], "c-get", "{report:#}");
    assert_eq!(sop_uids(&server), legacy.sop_uids(), "the same instances on both sides");

    // Each instance kept in the transfer syntax the old archive held it in, data set unchanged
    // (a deflated one compared inflated: the sender deflates it anew, with its own encoder).
    for instance in server.instances() {
        let id = legacy.orthanc_id("Instance", &instance.2);
        let at_source = legacy.rest("GET", &format!("/instances/{id}/file"), b"");
        assert_eq!(at_source.status, 200);
        let (here, there) = (server.data_set(&instance), without_meta(&at_source.body));
        let deflated = legacy.transfer_syntax(&instance.2) == "1.2.840.10008.1.2.1.99";
        let same = match deflated {
            true => inflate(&here) == inflate(&there),
            false => here == there,
        };
        assert!(same, "instance {} differs from the source's copy", instance.2);
    }

    // Fetched again (a new start after a reset would do this): nothing stored twice.
    let again = migrate(&server, &["verify", "legacy"]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(server.instances().len(), legacy.instance_count());
}

fn inflate(deflated: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut inflated = Vec::new();
    flate2::read::DeflateDecoder::new(deflated).read_to_end(&mut inflated).expect("deflated data");
    inflated
}

/// A pynetdicom Query/Retrieve SCP playing a legacy PACS (`peers/pn_legacy.py`):
/// generated studies, and a count of the C-FINDs, C-MOVEs and C-GETs it serves at once.
struct CountingPacs {
    child: std::process::Child,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    port: u16,
}

impl CountingPacs {
    /// `options`: more of the peer's spec (see `pn_legacy.py`).
    fn start(studies: usize, per_study: usize, haneul_port: u16, options: serde_json::Value) -> CountingPacs {
        use std::io::BufRead;
        let port = free_port();
        let mut spec = serde_json::json!({
            "ae_title": "LEGACY", "studies": studies, "per_study": per_study, "send_delay": 0.02,
            "destinations": { "HANEUL": ["127.0.0.1", haneul_port] },
        });
        if let (Some(spec), Some(options)) = (spec.as_object_mut(), options.as_object()) {
            spec.extend(options.clone());
        }
        let mut child = Command::new(python())
            .arg(peers_dir().join("pn_legacy.py"))
            .args(["127.0.0.1", &port.to_string(), &spec.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start pn_legacy.py");
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("peer stdout"));
        let mut ready = String::new();
        stdout.read_line(&mut ready).expect("read the peer's first line");
        assert!(ready.contains("\"ready\": true"), "pn_legacy.py did not start: {ready:?}");
        CountingPacs { child, stdout, port }
    }

    /// A `[[migration.source]]` named `legacy` for this peer, `parallel = 2`.
    fn source(&self, method: &str) -> String {
        format!(
            "[[migration.source]]\nname = \"legacy\"\nmethod = \"{method}\"\nae_title = \"LEGACY\"\n\
             host = \"127.0.0.1\"\nport = {}\nparallel = 2\n",
            self.port
        )
    }

    /// Stop the peer; what it counted.
    fn finish(&mut self) -> serde_json::Value {
        use std::io::BufRead;
        drop(self.child.stdin.take());
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read the peer's counts");
        assert!(self.child.wait().expect("wait for pn_legacy.py").success(), "pn_legacy.py failed");
        serde_json::from_str(&line).unwrap_or_else(|error| panic!("counts {line:?}: {error}"))
    }
}

impl Drop for CountingPacs {
    /// A test that failed half-way leaves no peer running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first retrieve (`method`) of a migration stays silent for a minute:
/// it is given up after the source's 2 s timeout and tried again, and
/// `reported` is in the log.
fn a_silent_retrieve_is_given_up_and_tried_again(method: &str, reported: &str) {
    const STUDIES: usize = 3;
    let haneul_port = free_port();
    let mut legacy = CountingPacs::start(STUDIES, 2, haneul_port, serde_json::json!({ "hang_first_retrieve": 60 }));
    let source = format!("{}timeout_seconds = 2\nretry_seconds = 1\n", legacy.source(method));
    let server = Server::start_with_dicom_port(haneul_port, &source);
    let started = std::time::Instant::now();
    let output = migrate(&server, &["start", "legacy"]);
    assert!(output.status.success(), "{}", text(&output));
    let status_now = status(&server, "legacy");
    assert_eq!(status_now["counts"]["verified"], STUDIES, "{status_now:#}");
    assert_eq!(server.instances().len(), STUDIES * 2);
    assert!(started.elapsed() < std::time::Duration::from_secs(40), "took {:?}", started.elapsed());
    let log = server.log();
    assert!(log.contains(reported), "the silent {method} is not reported as {reported:?}:\n{log}");
    legacy.finish();
}

#[test]
fn a_c_move_the_legacy_pacs_never_serves_is_given_up_and_tried_again() {
    // No answer, and no instance arriving on another association.
    a_silent_retrieve_is_given_up_and_tried_again("c-move", "no answer and no instance for 2 s");
}

#[test]
fn a_c_get_the_legacy_pacs_never_serves_is_given_up_and_tried_again() {
    a_silent_retrieve_is_given_up_and_tried_again("c-get", "C-GET from LEGACY: peer idle for 2s");
}

#[test]
fn a_migration_queries_the_legacy_pacs_over_no_more_associations_than_allowed() {
    const STUDIES: usize = 6;
    let haneul_port = free_port();
    let mut legacy = CountingPacs::start(STUDIES, 5, haneul_port, serde_json::json!({}));
    let server = Server::start_with_dicom_port(haneul_port, &legacy.source("c-move"));
    let output = migrate(&server, &["start", "legacy"]);
    assert!(output.status.success(), "{}", text(&output));
    let status_now = status(&server, "legacy");
    assert_eq!(status_now["counts"]["verified"], STUDIES, "{status_now:#}");
    assert_eq!(server.instances().len(), STUDIES * 5);

    // Each study's verification lists it (C-FIND at IMAGE level) within the
    // two associations allowed, not beside two moves.
    let counts = legacy.finish();
    assert_eq!(counts["moves"], STUDIES, "{counts}");
    assert!(counts["finds"].as_u64() > Some(STUDIES as u64), "a listing per study and the plan: {counts}");
    assert_eq!(counts["most_operations_at_once"], 2, "{counts}");
}

#[test]
fn a_c_get_migration_lists_instances_with_their_classes_only_where_the_source_does_not_state_them() {
    const STUDIES: usize = 4;
    // What the peer answers for SOP Classes in Study at STUDY level (its
    // studies hold two classes each), and how many studies must then be
    // listed with each instance's class, listed UIDs only, and fetched.
    for (stated, class_listings, uid_listings, gets) in
        [(Some("true"), 0, STUDIES, STUDIES), (None, STUDIES, 0, STUDIES), (Some("partial"), STUDIES, 0, 2 * STUDIES)]
    {
        let haneul_port = free_port();
        let mut options = serde_json::json!({ "second_class": true });
        if let Some(stated) = stated {
            options["sop_classes_in_study"] = stated.into();
        }
        let mut legacy = CountingPacs::start(STUDIES, 5, haneul_port, options);
        let server = Server::start_with_dicom_port(haneul_port, &legacy.source("c-get"));
        let output = migrate(&server, &["start", "legacy"]);
        assert!(output.status.success(), "stated {stated:?}: {}\n{}", text(&output), server.log());
        let status_now = status(&server, "legacy");
        assert_eq!(status_now["counts"]["verified"], STUDIES, "stated {stated:?}: {status_now:#}");
        assert_eq!(status_now["counts"]["discrepancies"], 0, "stated {stated:?}: {status_now:#}");
        // Classes stated in part: the study is fetched again whole, nothing stored twice.
        assert_eq!(server.instances().len(), STUDIES * 5, "stated {stated:?}");

        let counts = legacy.finish();
        assert_eq!(counts["class_listings"], class_listings, "stated {stated:?}: {counts}");
        // Listed on the C-GET's association: the verification asks nothing more.
        assert_eq!(counts["uid_listings"], uid_listings, "stated {stated:?}: {counts}");
        assert_eq!(counts["gets"], gets, "stated {stated:?}: {counts}");
        assert!(counts["most_operations_at_once"].as_u64() <= Some(2), "stated {stated:?}: {counts}");
    }
}
