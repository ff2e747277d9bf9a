//! `haneul migrate` from a DICOMweb service (`method = "dicomweb"`): Orthanc
//! with its DICOMweb plugin as the legacy PACS (scripts/test.sh installs
//! orthanc-dicomweb), and another Haneul, which wants a Bearer token.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::migration::{
    assert_verify_reports_deleted_at_source, migrate, migration_report as report, migration_status as status,
};
use common::orthanc::{file_meta, file_sop_uid, legacy_sample_paths, LegacyOptions, LegacyPacs};
use common::*;

/// Orthanc with its DICOMweb plugin, empty.
fn legacy_web() -> LegacyPacs {
    let legacy = LegacyPacs::start(LegacyOptions::new());
    assert!(
        legacy.dicomweb_url().is_some(),
        "Orthanc's DICOMweb plugin is not installed; run scripts/test.sh, which installs orthanc-dicomweb"
    );
    legacy
}

/// Whether a file's meta group names the instance its data set holds (some
/// of pydicom's files name another one, and ingest refuses such a file).
fn consistent(path: &Path) -> bool {
    file_meta(path).media_storage_sop_instance_uid == file_sop_uid(path)
}

/// A `[[migration.source]]` named "web" at `url`, with `extra` lines.
fn web_source(url: &str, extra: &str) -> String {
    format!("[[migration.source]]\nname = \"web\"\nmethod = \"dicomweb\"\nurl = \"{url}\"\n{extra}\n")
}

/// The instances a server holds, by SOP Instance UID.
fn by_sop(server: &Server) -> BTreeMap<String, InstanceUids> {
    server.instances().into_iter().map(|uids| (uids.2.clone(), uids)).collect()
}

#[test]
fn everything_migrates_byte_for_byte_from_orthancs_dicomweb_and_a_deletion_there_is_reported() {
    let samples = legacy_sample_paths();
    let (uploaded, stored): (Vec<PathBuf>, Vec<PathBuf>) = samples.iter().cloned().partition(|path| consistent(path));
    assert_eq!(stored.len(), 2, "{stored:?}");
    let legacy = legacy_web();
    // Uploaded through the REST API, Orthanc keeps a file byte for byte; the
    // two files whose meta group is wrong go by C-STORE, which gets them one
    // written by Orthanc.
    legacy.upload(&uploaded);
    legacy.store("MODALITY", &stored);
    let url = legacy.dicomweb_url().expect("the plugin");
    // A small query_limit: the listing is split by dates and the undated studies are paged.
    let server = Server::start_with(&web_source(&url, "query_limit = 3\nparallel = 3"));
    let reports = tempfile::tempdir().unwrap();

    let output = migrate(&server, &["start", "web", "--report-dir", reports.path().to_str().unwrap()]);
    assert!(output.status.success(), "{}\n{}", text(&output), server.log());
    let first = report(reports.path(), "web");
    assert!(first["discrepancies"].as_array().unwrap().is_empty(), "{first:#}");
    let studies = first["studies"].as_array().unwrap();
    assert_eq!(studies.len(), legacy.study_count(), "{first:#}");
    assert!(studies.iter().all(|study| study["state"] == "verified"), "{first:#}");
    assert_eq!(status(&server, "web")["method"], "dicomweb");

    // The same instances, each stored exactly as Orthanc holds it; an uploaded one is the original file.
    let held = by_sop(&server);
    assert_eq!(held.keys().cloned().collect::<std::collections::BTreeSet<_>>(), legacy.sop_uids());
    assert_eq!(held.len(), samples.len());
    for path in &samples {
        let sop = file_sop_uid(path);
        let id = legacy.orthanc_id("Instance", &sop);
        let at_legacy = legacy.rest("GET", &format!("/instances/{id}/file"), b"").body;
        let here = stored_file(server.http_port, &server.authorization(), &held[&sop]);
        assert!(here == at_legacy, "{} is not stored as Orthanc holds it", path.display());
        if uploaded.contains(path) {
            assert!(here == std::fs::read(path).unwrap(), "{} is not the original file", path.display());
        }
    }

    // Korean names are found here by a Korean query.
    let korean = server.get("/dicom-web/studies?PatientName=%ED%99%8D*", "application/json");
    assert_eq!(korean.status, 200, "{}", korean.text());
    assert!(!korean.json().as_array().unwrap().is_empty(), "no study of 홍* after the migration");

    // An instance deleted at the source is reported by the next verify; nothing here is removed.
    let gone = file_sop_uid(&samples[4]);
    legacy.delete_instance(&gone);
    assert_verify_reports_deleted_at_source(&server, "web", &gone);
    assert!(by_sop(&server).contains_key(&gone));
}

#[test]
fn a_dicomweb_sources_coercion_rules_apply_to_what_it_sends() {
    let samples: Vec<PathBuf> = legacy_sample_paths()
        .into_iter()
        .filter(|path| path.ends_with("chrKoreanMulti.dcm") || path.ends_with("CT_small.dcm"))
        .collect();
    assert_eq!(samples.len(), 2);
    let legacy = legacy_web();
    legacy.upload(&samples);
    let coerce = "[migration.source.coerce]\nissuer_of_patient_id = \"HOSP_W\"\npatient_id_prefix = \"W-\"";
    let server = Server::start_with(&web_source(&legacy.dicomweb_url().expect("the plugin"), coerce));

    let output = migrate(&server, &["start", "web"]);
    assert!(output.status.success(), "{}\n{}", text(&output), server.log());
    let held = by_sop(&server);
    assert_eq!(held.len(), 2);
    for path in &samples {
        let (study, _, sop) = &held[&file_sop_uid(path)];
        let metadata = server.get(&format!("/dicom-web/studies/{study}/metadata"), "application/dicom+json").json();
        let instance = metadata
            .as_array()
            .unwrap()
            .iter()
            .find(|instance| instance["00080018"]["Value"][0] == sop.as_str())
            .expect("the instance's metadata");
        assert_eq!(instance["00100021"]["Value"][0], "HOSP_W", "{instance:#}");
        assert!(instance["00100020"]["Value"][0].as_str().unwrap().starts_with("W-"), "{instance:#}");
        assert_eq!(instance["04000561"]["Value"][0]["04000565"]["Value"][0], "COERCE", "{instance:#}");
        // Coerced here, so no longer the source's bytes.
        let here = stored_file(server.http_port, &server.authorization(), &held[sop]);
        assert!(here != std::fs::read(path).unwrap());
    }
}

#[test]
fn a_file_whose_meta_group_names_another_instance_is_refused_with_the_reason() {
    let samples: Vec<PathBuf> = legacy_sample_paths().into_iter().filter(|path| !consistent(path)).collect();
    let legacy = legacy_web();
    legacy.upload(&samples);
    let server = Server::start_with(&web_source(&legacy.dicomweb_url().expect("the plugin"), ""));
    let reports = tempfile::tempdir().unwrap();

    let output = migrate(&server, &["start", "web", "--report-dir", reports.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let first = report(reports.path(), "web");
    let studies = first["studies"].as_array().unwrap();
    assert_eq!(studies.len(), samples.len(), "{first:#}");
    for study in studies {
        assert_eq!(study["state"], "failed", "{first:#}");
        assert!(study["detail"].as_str().unwrap().contains("differs"), "{first:#}");
        assert_eq!(study["attempts"], 1, "a refused instance is not tried again by itself");
    }
    assert!(server.instances().is_empty());
}

#[test]
fn another_haneul_is_a_dicomweb_source_reached_with_a_bearer_token() {
    let old = Server::start();
    old.store_samples("MODALITY", &["CT_small.dcm", "MR_small.dcm"]);
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("old.token");
    std::fs::write(&token_file, format!("{}\n", old.token)).unwrap();
    let source = web_source(&old.dicomweb_url(), &format!("token_file = \"{}\"", token_file.display()));
    let new = Server::start_with(&source);

    let output = migrate(&new, &["start", "web"]);
    assert!(output.status.success(), "{}\n{}", text(&output), new.log());
    let instances = old.instances();
    assert_eq!(new.instances(), instances);
    for instance in &instances {
        assert_eq!(new.data_set(instance), old.data_set(instance), "{instance:?}");
    }
    assert!(!new.log().contains(&old.token), "the token is never logged");

    // A wrong token: the listing is refused and the run waits, saying why.
    std::fs::write(&token_file, "hnl_not-a-token\n").unwrap();
    let output = migrate(&new, &["start", "web", "--detach"]);
    assert!(output.status.success(), "{}", text(&output));
    eventually("the refused listing reported", || {
        status(&new, "web")["last_error"].as_str().is_some_and(|error| error.contains("401"))
    });
    assert!(!new.log().contains("hnl_not-a-token"), "the token is never logged");
}
