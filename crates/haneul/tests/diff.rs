//! The legacy PACS fixture (a real Orthanc, tests/common/orthanc.rs), and
//! `haneul diff` between it and Haneul: equal after storing one data set into
//! both, exactly the differences made afterwards, and complete listings from
//! an Orthanc that caps its C-FIND answers.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use common::orthanc::{
    file_sop_uid, file_transfer_syntax, file_uids, legacy_sample_paths, legacy_samples, store_with_storescu,
    LegacyOptions, LegacyPacs,
};
use common::{haneul_bin, parse_peer_output, pydicom_data, run, run_peer, text, Server};

/// `haneul diff A B ARGS --json`: its exit code and report.
fn diff_json(a: &str, b: &str, args: &[&str]) -> (i32, serde_json::Value) {
    let output = run(Command::new(haneul_bin()).args(["diff", a, b, "--json"]).args(args));
    let code = output.status.code().expect("an exit code");
    let report = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("haneul diff printed no JSON report ({e}):\n{}", text(&output)));
    (code, report)
}

fn haneul_node(server: &Server) -> String {
    format!("{}@127.0.0.1:{}", server.ae_title, server.dicom_port)
}

fn strings(value: &serde_json::Value) -> Vec<String> {
    value.as_array().expect("an array").iter().map(|v| v.as_str().expect("a string").to_string()).collect()
}

fn study_uids(value: &serde_json::Value) -> Vec<String> {
    value.as_array().expect("an array").iter().map(|s| s["study_uid"].as_str().expect("a UID").to_string()).collect()
}

/// Generated single-instance studies with these (StudyDate, StudyTime); their files.
fn generated_studies(dir: &std::path::Path, prefix: &str, times: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
    let spec = serde_json::json!({
        "outdir": dir, "count": times.len(), "prefix": prefix, "study_times": times,
        "patient_name": "Kim^Minjun", "patient_id": prefix,
    })
    .to_string();
    let generated = parse_peer_output("pn_gen.py", &run_peer("pn_gen.py", &[&spec]));
    generated["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|file| {
            let path = PathBuf::from(file["path"].as_str().expect("a path"));
            (path, file["study_uid"].as_str().expect("a study UID").to_string())
        })
        .collect()
}

#[test]
fn the_legacy_fixture_holds_the_samples_as_sent_deletes_and_moves_to_haneul() {
    let haneul = Server::start();
    let legacy = LegacyPacs::start(LegacyOptions::new().knowing("HANEUL", "127.0.0.1", haneul.dicom_port));
    let samples = legacy_samples();
    let sops: BTreeSet<String> = samples.iter().map(|sample| file_sop_uid(&sample.path)).collect();
    assert_eq!(sops.len(), samples.len(), "one file per SOP Instance UID");
    for sample in &samples {
        assert_eq!(file_transfer_syntax(&sample.path), sample.transfer_syntax, "{}", sample.about);
    }
    legacy.store("HANEUL", &legacy_sample_paths());
    assert_eq!(legacy.sop_uids(), sops);
    for sample in &samples {
        let sop = file_sop_uid(&sample.path);
        assert_eq!(legacy.transfer_syntax(&sop), sample.transfer_syntax, "{} kept as sent", sample.about);
    }

    let gone = file_sop_uid(&samples[0].path);
    legacy.delete_instance(&gone);
    assert_eq!(legacy.instance_count(), samples.len() - 1);
    assert!(!legacy.sop_uids().contains(&gone));
    let uploaded = legacy.upload(&[samples[0].path.clone()]);
    assert_eq!(uploaded.len(), 1);
    assert!(legacy.sop_uids().contains(&gone));

    // It knows Haneul as a C-MOVE destination: every study moves over.
    for study in legacy.study_uids() {
        let output = run(common::dcmtk("movescu")
            .args(["-S", "-aet", "HANEUL", "-aem", "HANEUL", "-aec", "LEGACY", "127.0.0.1"])
            .arg(legacy.dicom_port.to_string())
            .args(["-k", "QueryRetrieveLevel=STUDY", "-k"])
            .arg(format!("StudyInstanceUID={study}")));
        assert!(output.status.success(), "C-MOVE of {study}: {}", text(&output));
    }
    let moved: BTreeSet<String> = haneul.instances().into_iter().map(|(_, _, sop)| sop).collect();
    assert_eq!(moved, sops);

    if let Some(url) = legacy.dicomweb_url() {
        let answer = common::http_request(legacy.http_port, "GET", "/dicom-web/studies", &[], b"");
        assert_eq!(answer.status, 200, "QIDO-RS at {url}: {}", answer.text());
        assert_eq!(answer.json().as_array().expect("an array").len(), legacy.study_count());
    }
}

#[test]
fn diff_finds_equal_nodes_then_exactly_the_differences() {
    let haneul = Server::start();
    let legacy = LegacyPacs::start(LegacyOptions::new().knowing("HANEUL", "127.0.0.1", haneul.dicom_port));
    let paths = legacy_sample_paths();
    legacy.store("HANEUL", &paths);
    store_with_storescu("LEGACY", &haneul.ae_title, haneul.dicom_port, &paths);
    let (a, b) = (legacy.node(), haneul_node(&haneul));

    let (code, report) = diff_json(&a, &b, &["--deep"]);
    assert_eq!(code, 0, "{report:#}");
    let studies = legacy.study_count();
    assert_eq!(
        (report["studies_a"].as_u64(), report["studies_b"].as_u64()),
        (Some(studies as u64), Some(studies as u64))
    );
    // Every study compared instance by instance, undated ones included.
    assert_eq!(report["instance_comparisons"].as_u64(), Some(studies as u64));
    let human = run(Command::new(haneul_bin()).args(["diff", &a, &b]));
    assert_eq!(human.status.code(), Some(0), "{}", text(&human));
    assert!(String::from_utf8_lossy(&human.stdout).contains("result: equal"), "{}", text(&human));

    // One instance of a two-instance study gone from the legacy PACS, and a
    // study that only Haneul holds.
    let (jpeg_extended, jpeg_2000) =
        (pydicom_data().join("test_files/JPGExtended.dcm"), pydicom_data().join("test_files/JPEG2000.dcm"));
    assert!(paths.contains(&jpeg_extended) && paths.contains(&jpeg_2000));
    let deleted = file_sop_uid(&jpeg_extended);
    legacy.delete_instance(&deleted);
    let extra = pydicom_data().join("test_files/examples_palette.dcm");
    store_with_storescu("LEGACY", &haneul.ae_title, haneul.dicom_port, std::slice::from_ref(&extra));
    let (extra_study, _, extra_sop) = file_uids(&extra);
    assert!(haneul.instances().iter().any(|(_, _, sop)| *sop == extra_sop), "the extra study in Haneul");

    let csv = tempfile::NamedTempFile::new().expect("a temporary file");
    let csv_path = csv.path().to_str().expect("a UTF-8 path");
    let (code, report) = diff_json(&a, &b, &["--csv", csv_path]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(study_uids(&report["only_in_a"]), Vec::<String>::new());
    assert_eq!(study_uids(&report["only_in_b"]), vec![extra_study.clone()]);
    let different = report["different"].as_array().expect("an array");
    assert_eq!(different.len(), 1, "{report:#}");
    let study = &different[0];
    assert_eq!((study["instances_a"].as_u64(), study["instances_b"].as_u64()), (Some(1), Some(2)));
    assert_eq!(strings(&study["only_in_a"]), Vec::<String>::new());
    assert_eq!(strings(&study["only_in_b"]), vec![deleted.clone()]);
    assert!(strings(&study["only_in_b"]).iter().all(|sop| *sop != file_sop_uid(&jpeg_2000)));
    // Only the study whose counts differ needed its instances listed.
    assert_eq!(report["instance_comparisons"].as_u64(), Some(1));

    let csv_text = std::fs::read_to_string(csv.path()).expect("the CSV file");
    let rows: Vec<Vec<&str>> = csv_text.lines().skip(1).map(|line| line.split(',').collect()).collect();
    assert_eq!(rows.len(), 2, "{csv_text}");
    assert_eq!((rows[0][0], rows[0][1]), ("study_only_in_b", extra_study.as_str()));
    assert_eq!((rows[1][0], rows[1][7]), ("instance_only_in_b", deleted.as_str()));

    // The nodes swapped swap the sides.
    let (code, swapped) = diff_json(&b, &a, &[]);
    assert_eq!(code, 1);
    assert_eq!(study_uids(&swapped["only_in_a"]), vec![extra_study]);
    assert_eq!(strings(&swapped["different"][0]["only_in_a"]), vec![deleted]);
}

#[test]
fn diff_lists_every_study_of_a_node_that_caps_its_answers() {
    let haneul = Server::start();
    let legacy = LegacyPacs::start(LegacyOptions::new().limit_find_results(2));
    let dir = tempfile::tempdir().expect("a temporary directory");
    // Eleven studies: five on one day (at most one per hour, so splitting the
    // day by hours separates them), the rest over years.
    let times = [
        ("19991231", "235959"),
        ("20230301", "080000"),
        ("20230301", "093000"),
        ("20230301", "1300"),
        ("20230301", "141500.5"),
        ("20230301", "235959"),
        ("20230302", "120000"),
        ("20230415", "000000"),
        ("20231231", "101010"),
        ("20240101", "101010"),
        ("20240229", "070000"),
    ];
    let studies = generated_studies(dir.path(), "cap", &times);
    let files: Vec<PathBuf> = studies.iter().map(|(path, _)| path.clone()).collect();
    legacy.store("HANEUL", &files);
    store_with_storescu("LEGACY", &haneul.ae_title, haneul.dicom_port, &files);
    let (a, b) = (legacy.node(), haneul_node(&haneul));
    let range = ["--from", "19990101", "--to", "20241231"];

    let (code, report) = diff_json(&a, &b, &[&range[..], &["--cap-a", "2"]].concat());
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["studies_a"].as_u64(), Some(times.len() as u64), "{report:#}");
    assert_eq!(report["truncated_a"], serde_json::json!([]));
    // Orthanc's final Cancel status marks a cropped answer even without --cap.
    let (code, report) = diff_json(&a, &b, &range);
    assert_eq!((code, report["studies_a"].as_u64()), (0, Some(times.len() as u64)), "{report:#}");

    // Without a date, the universal query for undated studies is capped too,
    // and nothing smaller can be asked: reported as incomplete.
    let (code, report) = diff_json(&a, &b, &["--cap-a", "2"]);
    assert_eq!(code, 2, "{report:#}");
    assert_eq!(report["truncated_a"], serde_json::json!([{ "slice": "undated", "answers": 2 }]));
    assert_eq!(report["studies_a"].as_u64(), Some(times.len() as u64));

    // Three studies in one hour of one day are more than Orthanc answers to
    // the smallest query: the walk keeps what it got and names the hour.
    let crowded = generated_studies(
        dir.path(),
        "crowded",
        &[("20230415", "100000"), ("20230415", "101500"), ("20230415", "105959")],
    );
    let crowded_files: Vec<PathBuf> = crowded.iter().map(|(path, _)| path.clone()).collect();
    legacy.store("HANEUL", &crowded_files);
    store_with_storescu("LEGACY", &haneul.ae_title, haneul.dicom_port, &crowded_files);
    let (code, report) = diff_json(&a, &b, &[&range[..], &["--cap-a", "2"]].concat());
    assert_eq!(code, 2, "{report:#}");
    assert_eq!(report["truncated_a"], serde_json::json!([{ "slice": "20230415 10:00-10:59", "answers": 2 }]));
    assert_eq!(report["studies_b"].as_u64(), Some(times.len() as u64 + 3));
    // Every other study is found; of the crowded hour, at least the two
    // answers (the larger capped slices before it may have named the third).
    assert_eq!(study_uids(&report["only_in_a"]), Vec::<String>::new());
    let missing = study_uids(&report["only_in_b"]);
    let crowded_uids: Vec<&String> = crowded.iter().map(|(_, uid)| uid).collect();
    assert!(missing.len() <= 1 && missing.iter().all(|uid| crowded_uids.contains(&uid)), "{report:#}");
}

#[test]
fn a_haneul_that_caps_its_answers_ends_them_with_cancel_and_diff_still_lists_everything() {
    let capped = Server::start_with_dicom("max_find_answers = 2", "");
    let full = Server::start();
    let dir = tempfile::tempdir().expect("a temporary directory");
    // Five studies, on days far enough apart for the walk to split them.
    let times = [
        ("20230301", "080000"),
        ("20230301", "140000"),
        ("20230302", "120000"),
        ("20231231", "101010"),
        ("20240229", "070000"),
    ];
    let studies = generated_studies(dir.path(), "capped", &times);
    let files: Vec<PathBuf> = studies.iter().map(|(path, _)| path.clone()).collect();
    store_with_storescu("SENDER", &capped.ae_title, capped.dicom_port, &files);
    store_with_storescu("SENDER", &full.ae_title, full.dicom_port, &files);

    // Study Root C-FIND with findscu: its verbose log.
    let find = |key: &str| {
        text(&run(common::dcmtk("findscu")
            .args(["-v", "-S", "-aec", &capped.ae_title, "-k", "QueryRetrieveLevel=STUDY", "-k", key])
            .arg("127.0.0.1")
            .arg(capped.dicom_port.to_string())))
    };
    // What any DICOM client sees: the first two matches, then Cancel.
    let log = find("StudyInstanceUID");
    assert_eq!(log.matches("Find Response:").count(), 2, "pending answers of a capped C-FIND:\n{log}");
    assert!(log.contains("Received Final Find Response (Cancel: MatchingTerminatedDueToCancelRequest)"), "{log}");
    let server_log = capped.log();
    assert!(server_log.contains("C-FIND cut at max_find_answers"), "the cut is not logged:\n{server_log}");

    // A query that matches no more than the cap still ends in success.
    let log = find("StudyDate=20230301");
    assert_eq!(log.matches("Find Response:").count(), 2, "{log}");
    assert!(log.contains("Received Final Find Response (Success)"), "{log}");

    // Haneul's own walk splits the dates where it sees the Cancel, without being told the cap.
    let (code, report) =
        diff_json(&haneul_node(&capped), &haneul_node(&full), &["--from", "20230101", "--to", "20241231"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["studies_a"].as_u64(), Some(times.len() as u64), "{report:#}");
    assert_eq!(report["truncated_a"], serde_json::json!([]));
}
