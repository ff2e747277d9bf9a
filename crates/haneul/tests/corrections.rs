//! Attribute corrections on one node, with DCMTK as the client: a corrected
//! name and description are what C-FIND matches and answers, what getscu and
//! WADO-RS bring back (the previous values in an Original Attributes
//! Sequence item), while the stored files stay byte for byte as received.

mod common;

use common::{dcmtk, files_under, http_request, pydicom_data, run, text, Server};
use serde_json::Value;

const CT_STUDY: &str = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322";
const CT_NAME: &str = "CompressedSamples^CT1";

fn correct(server: &Server, study: &str, body: &Value) -> common::HttpResponse {
    let auth = server.authorization();
    let path = format!("/api/studies/{study}/corrections");
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    http_request(server.http_port, "POST", &path, &headers, body.to_string().as_bytes())
}

fn find_studies(server: &Server, keys: &[&str]) -> String {
    let mut command = dcmtk("findscu");
    command.args(["-v", "-S", "-aec", &server.ae_title, "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID"]);
    for key in keys {
        command.args(["-k", key]);
    }
    command.arg("127.0.0.1").arg(server.dicom_port.to_string());
    let output = run(&mut command);
    assert!(output.status.success(), "findscu failed:\n{}", text(&output));
    text(&output)
}

fn dump(path: &std::path::Path) -> String {
    let output = run(dcmtk("dcmdump").args(["+L", "-q"]).arg(path));
    assert!(output.status.success(), "dcmdump failed:\n{}", text(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// getscu of a whole study into `into`.
fn get_study(server: &Server, study: &str, into: &std::path::Path) -> std::process::Output {
    run(dcmtk("getscu")
        .args(["-v", "-S", "-aec", &server.ae_title, "-od"])
        .arg(into)
        .args(["-k", "QueryRetrieveLevel=STUDY", "-k", &format!("StudyInstanceUID={study}")])
        .arg("127.0.0.1")
        .arg(server.dicom_port.to_string()))
}

/// The header of the one instance of a study, as getscu brings it back.
fn dump_the_one_instance(server: &Server, study: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let output = get_study(server, study, dir.path());
    assert!(output.status.success(), "getscu failed:\n{}", text(&output));
    let received = files_under(dir.path());
    assert_eq!(received.len(), 1, "{}", text(&output));
    dump(&received[0])
}

#[test]
fn corrected_values_are_found_and_retrieved_and_the_stored_files_stay_as_received() {
    let server = Server::start();
    server.store_samples("MODALITY", &["CT_small.dcm"]);
    let stored_before: Vec<Vec<u8>> =
        files_under(&server.data_dir().join("blobs")).iter().map(|path| std::fs::read(path).unwrap()).collect();

    let answer = correct(
        &server,
        CT_STUDY,
        &serde_json::json!({
            "attributes": { "PatientName": "Kim^Minsu", "00081030": "CT CHEST", "AccessionNumber": "A-77" },
            "reason": "name misspelt at registration",
        }),
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    let recorded = answer.json()["recorded"].as_array().cloned().unwrap_or_default();
    assert_eq!(recorded.len(), 3, "{}", answer.text());
    assert!(recorded.iter().any(|r| r["level"] == "PATIENT" && r["keyword"] == "PatientName"));
    assert!(recorded.iter().any(|r| r["level"] == "STUDY" && r["value"] == "CT CHEST"));

    // C-FIND matches and answers the corrected values, not the received ones.
    let found = find_studies(&server, &["PatientName=Kim*", "StudyDescription", "AccessionNumber"]);
    assert!(found.contains("Kim^Minsu") && found.contains("CT CHEST") && found.contains("A-77"), "{found}");
    let old = find_studies(&server, &[&format!("PatientName={}", CT_NAME.replace("CT1", "*"))]);
    assert!(!old.contains(CT_STUDY), "the old name still matches:\n{old}");

    // getscu brings back a copy carrying them, the previous values kept.
    let header = dump_the_one_instance(&server, CT_STUDY);
    assert!(header.contains("(0010,0010) PN [Kim^Minsu]"), "{header}");
    assert!(header.contains("(0008,1030) LO [CT CHEST]"), "{header}");
    assert!(header.contains("(0400,0565) CS [CORRECT]"), "{header}");
    assert!(header.contains(&format!("(0010,0010) PN [{CT_NAME}]")), "the previous name is kept:\n{header}");
    assert!(header.contains(&format!("(0400,0563) LO [{}]", server.ae_title)), "{header}");

    // WADO-RS: the instance and the metadata say the same.
    let instance = server.instances().into_iter().next().expect("one instance");
    let file = server.data_set(&instance);
    assert!(file.windows(9).any(|w| w == b"Kim^Minsu"));
    let metadata = server.get(&format!("/dicom-web/studies/{CT_STUDY}/metadata"), "application/dicom+json").json();
    assert_eq!(metadata[0]["00100010"]["Value"][0]["Alphabetic"], "Kim^Minsu", "{metadata:#}");

    // The files on disk did not change.
    let stored_after: Vec<Vec<u8>> =
        files_under(&server.data_dir().join("blobs")).iter().map(|path| std::fs::read(path).unwrap()).collect();
    assert!(stored_before == stored_after, "a stored file changed");
    assert_eq!(server.metric("haneul_corrections_total"), 3.0);
    assert!(server.metric("haneul_corrected_deliveries_total") >= 2.0);

    // What may not be corrected, and what is not there, say so.
    let refused = [
        (
            serde_json::json!({ "attributes": { "StudyInstanceUID": "1.2" }, "reason": "r" }),
            400,
            "identifies the record",
        ),
        (serde_json::json!({ "attributes": { "PatientID": " " }, "reason": "r" }), 400, "patient with an ID"),
        (serde_json::json!({ "attributes": { "PatientID": "A\\B" }, "reason": "r" }), 400, "without a backslash"),
        (
            serde_json::json!({ "attributes": { "SeriesDescription": "X" }, "reason": "r" }),
            400,
            "is a series attribute",
        ),
        (serde_json::json!({ "attributes": { "PatientBirthDate": "19700230" }, "reason": "r" }), 400, "not a valid"),
        (serde_json::json!({ "attributes": { "PatientName": "X" }, "reason": " " }), 400, "say why"),
        // CT_small declares no character set: Hangul cannot be written in it.
        (serde_json::json!({ "attributes": { "PatientName": "김^민수" }, "reason": "r" }), 400, "character set"),
    ];
    for (body, status, message) in refused {
        let answer = correct(&server, CT_STUDY, &body);
        assert_eq!(answer.status, status, "{body}: {}", answer.text());
        assert!(answer.text().contains(message), "{body}: {}", answer.text());
    }
    let unknown =
        correct(&server, "1.2.3.4", &serde_json::json!({ "attributes": { "PatientName": "X" }, "reason": "r" }));
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    // A clinician may read the registers but not correct.
    let reader = server.add_user("reader", "clinician");
    let reader = format!("Bearer {}", server.create_token(&reader, "reads"));
    let headers = [("Authorization", reader.as_str()), ("Content-Type", "application/json")];
    let path = format!("/api/studies/{CT_STUDY}/corrections");
    let body = serde_json::json!({ "attributes": { "PatientName": "X" }, "reason": "r" }).to_string();
    assert_eq!(http_request(server.http_port, "POST", &path, &headers, body.as_bytes()).status, 403);
    let held = server.get(&path, "application/json").json();
    assert_eq!(held["registers"].as_array().map(Vec::len), Some(3), "{held:#}");

    // Attributable: the audit trail names who corrected what.
    let audited = common::audit_search(&server.data_dir(), &["--action", "correct"]);
    assert!(
        audited.iter().any(|record| record["outcome"] == "success" && record["studies"][0] == CT_STUDY),
        "{audited:#?}"
    );
}

/// A Korean name goes into a file that declares ISO 2022 IR 149, in all three
/// component groups, and is found by a Hangul query.
#[test]
fn a_korean_name_is_written_in_the_files_own_character_set() {
    let server = Server::start();
    let korean = pydicom_data().join("charset_files").join("chrI2.dcm");
    let output = run(dcmtk("storescu")
        .args(["-aec", &server.ae_title, "127.0.0.1"])
        .arg(server.dicom_port.to_string())
        .arg(&korean));
    assert!(output.status.success(), "{}", text(&output));
    let instance = server.instances().into_iter().next().expect("stored");
    let answer = correct(
        &server,
        &instance.0,
        &serde_json::json!({ "attributes": { "PatientName": "Kim^Minsu=金^民秀=김^민수" }, "reason": "wrong patient name" }),
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    let found = find_studies(&server, &["SpecificCharacterSet=ISO_IR 192", "PatientName=김*"]);
    assert!(found.contains(&instance.0), "{found}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("retrieved.dcm");
    std::fs::write(&path, common::stored_file(server.http_port, &server.authorization(), &instance)).unwrap();
    let script = r#"
import sys, pydicom
ds = pydicom.dcmread(sys.argv[1], force=True)
print(str(ds.PatientName))
item = ds.OriginalAttributesSequence[-1]
print(item.ReasonForTheAttributeModification)
print(str(item.ModifiedAttributesSequence[0].PatientName))
"#;
    let output = run(std::process::Command::new(common::python()).args(["-c", script]).arg(&path));
    assert!(output.status.success(), "{}", text(&output));
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(printed.contains("Kim^Minsu=金^民秀=김^민수") && printed.contains("CORRECT"), "{printed}");
    assert!(printed.contains("Hong^Gildong=洪^吉洞=홍^길동"), "the received name is kept: {printed}");
}

/// A study scanned under the wrong patient is moved to the right one: C-FIND
/// finds it there with that patient's name, the patient it left is gone, and
/// every retrieved copy names the new patient (the previous identity kept in
/// an Original Attributes Sequence item), while the stored file stays as
/// received. A patient not held yet is made from the one the study leaves.
#[test]
fn a_study_moved_to_another_patient_is_found_and_retrieved_as_that_patients() {
    const MR_STUDY: &str = "1.3.6.1.4.1.5962.1.2.4.20040826185059.5457";
    let server = Server::start();
    server.store_samples("MODALITY", &["CT_small.dcm", "MR_small.dcm"]);
    let stored_before: Vec<Vec<u8>> =
        files_under(&server.data_dir().join("blobs")).iter().map(|path| std::fs::read(path).unwrap()).collect();

    let body =
        serde_json::json!({ "attributes": { "PatientID": "4MR1" }, "reason": "scanned under the wrong patient" });
    let answer = correct(&server, CT_STUDY, &body);
    assert_eq!(answer.status, 200, "{}", answer.text());
    let recorded = answer.json()["recorded"].as_array().cloned().unwrap_or_default();
    let registers: Vec<(&str, &str, &str)> = recorded
        .iter()
        .map(|r| {
            (r["level"].as_str().unwrap_or(""), r["keyword"].as_str().unwrap_or(""), r["value"].as_str().unwrap_or(""))
        })
        .collect();
    // The move, and the patient it goes to as held here (for a peer that does not hold it yet).
    assert_eq!(
        registers,
        [
            ("STUDY", "PatientID", "4MR1"),
            ("STUDY", "IssuerOfPatientID", ""),
            ("PATIENT", "PatientName", "CompressedSamples^MR1"),
            ("PATIENT", "PatientBirthDate", ""),
            ("PATIENT", "PatientSex", "F"),
        ],
        "{}",
        answer.text()
    );

    let patients = |id: &str| {
        let mut command = dcmtk("findscu");
        command.args(["-v", "-P", "-aec", &server.ae_title, "-k", "QueryRetrieveLevel=PATIENT"]);
        command.args(["-k", &format!("PatientID={id}"), "-k", "PatientName", "-k", "NumberOfPatientRelatedStudies"]);
        let output = run(command.arg("127.0.0.1").arg(server.dicom_port.to_string()));
        assert!(output.status.success(), "findscu failed:\n{}", text(&output));
        text(&output)
    };
    assert!(!patients("1CT1").contains("1CT1 "), "the patient left without studies is gone:\n{}", patients("1CT1"));
    let moved = patients("4MR1");
    assert!(moved.contains("CompressedSamples^MR1") && moved.contains("[2 ]"), "{moved}");
    let found = find_studies(&server, &["PatientID=4MR1", "PatientName"]);
    assert!(found.contains(CT_STUDY) && found.contains(MR_STUDY), "{found}");
    assert!(!found.contains("CompressedSamples^CT1"), "{found}");

    let header = dump_the_one_instance(&server, CT_STUDY);
    assert!(header.contains("(0010,0020) LO [4MR1]"), "{header}");
    assert!(header.contains("(0010,0010) PN [CompressedSamples^MR1]"), "{header}");
    assert!(header.contains("(0010,0040) CS [F]"), "the new patient's sex:\n{header}");
    assert!(header.contains("(0010,0020) LO [1CT1]"), "the previous ID is kept:\n{header}");
    assert!(header.contains(&format!("(0010,0010) PN [{CT_NAME}]")), "the previous name is kept:\n{header}");
    assert!(header.contains("(0400,0565) CS [CORRECT]"), "{header}");
    // Nothing else of the patient it left: CT1's other IDs are only among the previous values.
    assert!(!header.lines().any(|line| line.starts_with("(0010,1002)")), "{header}");
    assert!(header.lines().any(|line| line.trim_start().starts_with("(0010,1002)")), "{header}");
    let metadata = server.get(&format!("/dicom-web/studies/{CT_STUDY}/metadata"), "application/dicom+json").json();
    assert_eq!(metadata[0]["00100020"]["Value"][0], "4MR1", "{metadata:#}");

    // To a patient not held yet: only with its name (nothing of the patient left behind is taken).
    let nameless = serde_json::json!({ "attributes": { "PatientID": "NEW-7" }, "reason": "r" });
    let refused = correct(&server, MR_STUDY, &nameless);
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(refused.text().contains("not held here"), "{}", refused.text());
    let body = serde_json::json!({ "attributes": { "PatientID": "NEW-7", "PatientName": "Kim^Minsu" }, "reason": "r" });
    let answer = correct(&server, MR_STUDY, &body);
    assert_eq!(answer.status, 200, "{}", answer.text());
    let new_patient = patients("NEW-7");
    assert!(new_patient.contains("Kim^Minsu") && new_patient.contains("[1 ]"), "{new_patient}");
    let left = find_studies(&server, &["PatientID=4MR1", "PatientName"]);
    assert!(left.contains(CT_STUDY) && !left.contains(MR_STUDY), "{left}");
    // Moving it where it is records nothing.
    let again =
        correct(&server, MR_STUDY, &serde_json::json!({ "attributes": { "PatientID": "NEW-7" }, "reason": "r" }));
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["recorded"].as_array().map(Vec::len), Some(0), "{}", again.text());

    let stored_after: Vec<Vec<u8>> =
        files_under(&server.data_dir().join("blobs")).iter().map(|path| std::fs::read(path).unwrap()).collect();
    assert!(stored_before == stored_after, "a stored file changed");
    let audited = common::audit_search(&server.data_dir(), &["--action", "correct"]);
    assert!(
        audited.iter().any(|record| record["outcome"] == "success"
            && record["studies"][0] == CT_STUDY
            && record["detail"]["moved_to_patient_id"] == "4MR1"
            && record["patients"] == serde_json::json!(["1CT1", "4MR1"])),
        "{audited:#?}"
    );
}

/// Two records of one patient (a duplicate registration, a temporary ID)
/// are merged: every study of the one that goes away is moved to the one
/// that stays, which C-FIND then finds with all of them.
#[test]
fn a_patient_merge_moves_every_study_to_the_patient_that_stays() {
    let server = Server::start();
    server.store_samples("MODALITY", &["CT_small.dcm", "MR_small.dcm"]);
    let merge = |authorization: &str, body: &Value| {
        let headers = [("Authorization", authorization), ("Content-Type", "application/json")];
        http_request(server.http_port, "POST", "/api/patients/merge", &headers, body.to_string().as_bytes())
    };
    let auth = server.authorization();
    let body = serde_json::json!({
        "from": { "PatientID": "1CT1" },
        "into": { "PatientID": "4MR1" },
        "reason": "duplicate registration",
    });
    let answer = merge(&auth, &body);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["moved"], serde_json::json!([CT_STUDY]), "{}", answer.text());

    let found = find_studies(&server, &["PatientID=4MR1", "PatientName"]);
    assert!(found.contains(CT_STUDY) && !found.contains(CT_NAME), "{found}");
    assert!(!find_studies(&server, &["PatientID=1CT1"]).contains(CT_STUDY));
    let patients = server.get("/dicom-web/studies?PatientID=4MR1", "application/dicom+json").json();
    assert_eq!(patients.as_array().map(Vec::len), Some(2), "{patients:#}");

    // Into a record not held yet (a temporary ID replaced): it takes the demographics of the one merged.
    let renamed =
        serde_json::json!({ "from": { "PatientID": "4MR1" }, "into": { "PatientID": "P-77" }, "reason": "r" });
    let answer = merge(&auth, &renamed);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["moved"].as_array().map(Vec::len), Some(2), "{}", answer.text());
    let found = find_studies(&server, &["PatientID=P-77", "PatientName"]);
    assert!(found.contains(CT_STUDY) && found.contains("CompressedSamples^MR1"), "{found}");
    let body = serde_json::json!({ "from": { "PatientID": "1CT1" }, "into": { "PatientID": "P-77" }, "reason": "r" });

    // Nothing left to merge, itself, no reason, no permission.
    assert_eq!(merge(&auth, &body).status, 404);
    let into_itself =
        serde_json::json!({ "from": { "PatientID": "4MR1" }, "into": { "PatientID": "4MR1" }, "reason": "r" });
    assert_eq!(merge(&auth, &into_itself).status, 400);
    let no_reason = serde_json::json!({ "from": { "PatientID": "4MR1" }, "into": { "PatientID": "X" }, "reason": " " });
    assert_eq!(merge(&auth, &no_reason).status, 400);
    let reader = server.add_user("reader", "clinician");
    let reader = format!("Bearer {}", server.create_token(&reader, "reads"));
    assert_eq!(merge(&reader, &body).status, 403);

    let audited = common::audit_search(&server.data_dir(), &["--action", "correct"]);
    assert!(
        audited.iter().any(|record| record["outcome"] == "success"
            && record["detail"]["merged_patient_id"] == "1CT1"
            && record["studies"][0] == CT_STUDY),
        "{audited:#?}"
    );
}

/// A study that arrives for a merged record (a modality whose worklist
/// still has the old ID) is filed under the record it was merged into:
/// found there, retrieved as that patient's, its later instances join it,
/// and no record is made for the merged ID. Studies are not moved into a
/// merged record by hand; undoing the merge ends the link.
#[test]
fn a_study_arriving_for_a_merged_record_is_filed_under_the_record_it_was_merged_into() {
    const MR_STUDY: &str = "1.3.6.1.4.1.5962.1.2.4.20040826185059.5457";
    let server = Server::start();
    server.store_samples("MODALITY", &["CT_small.dcm", "MR_small.dcm"]);
    let auth = server.authorization();
    let post = |path: &str, body: &Value| {
        let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
        http_request(server.http_port, "POST", path, &headers, body.to_string().as_bytes())
    };
    let merge = serde_json::json!({
        "from": { "PatientID": "1CT1" }, "into": { "PatientID": "4MR1" }, "reason": "temporary ID replaced",
    });
    let answer = post("/api/patients/merge", &merge);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["linked"], true, "{}", answer.text());

    // The modality sends a new study under the old ID, then another image of it.
    let dir = tempfile::tempdir().unwrap();
    let new_study_file = |name: &str, regenerate: &[&str]| {
        let path = dir.path().join(name);
        std::fs::copy(pydicom_data().join("test_files").join("CT_small.dcm"), &path).unwrap();
        let output = run(dcmtk("dcmodify").arg("-nb").args(regenerate).arg(&path));
        assert!(output.status.success(), "{}", text(&output));
        path
    };
    let store = |path: &std::path::Path| {
        let output = run(dcmtk("storescu")
            .args(["-aec", &server.ae_title, "-aet", "MODALITY", "127.0.0.1"])
            .arg(server.dicom_port.to_string())
            .arg(path));
        assert!(output.status.success(), "{}", text(&output));
    };
    let first = new_study_file("new.dcm", &["-gst", "-gse", "-gin"]);
    store(&first);
    let held_studies = || -> std::collections::BTreeSet<String> {
        server.instances().into_iter().map(|(study, _, _)| study).collect()
    };
    let new_study = held_studies().into_iter().find(|study| study != CT_STUDY && study != MR_STUDY).expect("stored");
    let second = dir.path().join("second.dcm");
    std::fs::copy(&first, &second).unwrap();
    let output = run(dcmtk("dcmodify").args(["-nb", "-gin"]).arg(&second));
    assert!(output.status.success(), "{}", text(&output));
    store(&second);

    let found = find_studies(&server, &["PatientID=4MR1", "PatientName"]);
    assert!(found.contains(&new_study) && found.contains(CT_STUDY) && found.contains(MR_STUDY), "{found}");
    let old_id = find_studies(&server, &["PatientID=1CT1"]);
    assert!(!old_id.contains(&new_study), "no record for the merged ID:\n{old_id}");
    let retrieved = tempfile::tempdir().unwrap();
    let output = get_study(&server, &new_study, retrieved.path());
    let received = files_under(retrieved.path());
    assert_eq!(received.len(), 2, "{}", text(&output));
    for file in received {
        let header = dump(&file);
        assert!(header.contains("(0010,0020) LO [4MR1]"), "{header}");
        assert!(header.contains("(0010,0010) PN [CompressedSamples^MR1]"), "{header}");
        assert!(header.contains("(0010,0020) LO [1CT1]"), "the ID the modality sent is kept:\n{header}");
    }

    // Nothing is moved or merged into the merged record by hand.
    let to_merged = serde_json::json!({ "attributes": { "PatientID": "1CT1" }, "reason": "r" });
    let refused = correct(&server, MR_STUDY, &to_merged);
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(refused.text().contains("merged into another"), "{}", refused.text());
    let into_merged =
        serde_json::json!({ "from": { "PatientID": "4MR1" }, "into": { "PatientID": "1CT1" }, "reason": "r" });
    assert_eq!(post("/api/patients/merge", &into_merged).status, 400);

    // Undone, by someone who may see every site: the next study for the old ID is filed under it again.
    let unmerge = serde_json::json!({ "patient": { "PatientID": "1CT1" }, "reason": "merged by mistake" });
    let limited = server.add_user_in_sites("seoul.tech", "technologist", &["seoul"]);
    let limited = format!("Bearer {}", server.create_token(&limited, "corrects"));
    let headers = [("Authorization", limited.as_str()), ("Content-Type", "application/json")];
    let refused =
        http_request(server.http_port, "POST", "/api/patients/unmerge", &headers, unmerge.to_string().as_bytes());
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(refused.text().contains("every site"), "{}", refused.text());
    let answer = post("/api/patients/unmerge", &unmerge);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(post("/api/patients/unmerge", &unmerge).status, 404, "no longer merged");
    let third = new_study_file("third.dcm", &["-gst", "-gse", "-gin"]);
    store(&third);
    let under_old_id = find_studies(&server, &["PatientID=1CT1"]);
    let third_study = held_studies()
        .into_iter()
        .find(|study| ![CT_STUDY, MR_STUDY, new_study.as_str()].contains(&study.as_str()))
        .expect("stored");
    assert!(under_old_id.contains(&third_study), "{under_old_id}");
    let audited = common::audit_search(&server.data_dir(), &["--action", "correct"]);
    assert!(
        audited.iter().any(|record| record["outcome"] == "success"
            && record["detail"]["merged_patient_id"] == "1CT1"
            && record["detail"]["linked"] == true),
        "{audited:#?}"
    );
    assert!(
        audited
            .iter()
            .any(|record| record["outcome"] == "success" && record["detail"]["unmerged_patient_id"] == "1CT1"),
        "{audited:#?}"
    );
}

/// A moved study's copy that cannot carry its patient (the patient renamed
/// in Hangul since, at another site, while this study's file declares
/// Latin-1) is not sent at all: sent as stored it would name the patient it
/// was taken from. Here, such a rename is refused.
#[test]
fn a_moved_instance_that_cannot_carry_its_patient_is_not_sent_as_stored() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let utf8 = dir.path().join("mr_utf8.dcm");
    std::fs::copy(pydicom_data().join("test_files").join("MR_small.dcm"), &utf8).unwrap();
    let output = run(dcmtk("dcmodify").args(["-nb", "-i", "(0008,0005)=ISO_IR 192"]).arg(&utf8));
    assert!(output.status.success(), "{}", text(&output));
    server.store_samples("MODALITY", &["CT_small.dcm"]);
    let output = run(dcmtk("storescu")
        .args(["-aec", &server.ae_title, "127.0.0.1"])
        .arg(server.dicom_port.to_string())
        .arg(&utf8));
    assert!(output.status.success(), "{}", text(&output));
    let ct = server.instances().into_iter().find(|instance| instance.0 == CT_STUDY).expect("CT stored");
    let mr_study = server.instances().into_iter().find(|instance| instance.0 != CT_STUDY).expect("MR stored").0;

    let moved =
        correct(&server, CT_STUDY, &serde_json::json!({ "attributes": { "PatientID": "4MR1" }, "reason": "r" }));
    assert_eq!(moved.status, 200, "{}", moved.text());
    assert!(server.data_set(&ct).windows(4).any(|window| window == b"4MR1"), "sent with its new patient");
    // Renaming the patient through its UTF-8 study is refused: the moved Latin-1 study could not carry it.
    let hangul = serde_json::json!({ "attributes": { "PatientName": "김^민수" }, "reason": "r" });
    let renamed = correct(&server, &mr_study, &hangul);
    assert_eq!(renamed.status, 400, "{}", renamed.text());
    assert!(renamed.text().contains("another study of this patient"), "{}", renamed.text());
    // A peer's register is not checked against this site's files: it is applied as it comes.
    let auth = server.authorization();
    let from_peer = serde_json::json!({
        "replicated_from": "SITEB",
        "registers": [{
            "level": "PATIENT", "key": "4MR1\\", "tag": 0x0010_0010, "vr": "PN", "value": "김^민수",
            "hlc": i64::MAX >> 1, "origin": "SITEB", "reason": "renamed at site b",
        }],
    });
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let merged = http_request(server.http_port, "POST", "/api/corrections", &headers, from_peer.to_string().as_bytes());
    assert_eq!(merged.status, 200, "{}", merged.text());
    assert_eq!(merged.json()["recorded"], 1, "{}", merged.text());

    let (study, series, sop) = &ct;
    let path = format!("/dicom-web/studies/{study}/series/{series}/instances/{sop}");
    let accept = "multipart/related; type=\"application/dicom\"; transfer-syntax=*";
    let answer = http_request(server.http_port, "GET", &path, &[("Accept", accept), ("Authorization", &auth)], b"");
    // The answer's parts stream after its status: the stream ends without the file.
    assert!(!answer.body.windows(4).any(|window| window == b"DICM"), "a file was sent: {}", answer.text());
    let received = tempfile::tempdir().unwrap();
    let output = get_study(&server, CT_STUDY, received.path());
    assert!(files_under(received.path()).is_empty(), "getscu received a file:\n{}", text(&output));
    assert!(text(&output).contains("Number of Failed Suboperations    : 1"), "{}", text(&output));
    assert!(server.metric("haneul_corrections_not_applied_total") >= 2.0);
}

/// A series attribute is corrected on its series: C-FIND at SERIES level
/// matches and answers the new value, and getscu brings it back in the
/// copy, the previous value kept.
#[test]
fn a_series_description_is_corrected_on_its_series() {
    let server = Server::start();
    server.store_samples("MODALITY", &["CT_small.dcm"]);
    let (study, series, _) = server.instances().into_iter().next().expect("stored");
    let correct_series = |series: &str, body: &Value| {
        let auth = server.authorization();
        let path = format!("/api/studies/{study}/series/{series}/corrections");
        let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
        http_request(server.http_port, "POST", &path, &headers, body.to_string().as_bytes())
    };
    let body = serde_json::json!({
        "attributes": { "SeriesDescription": "AXIAL 5MM", "BodyPartExamined": "CHEST" },
        "reason": "protocol renamed",
    });
    let answer = correct_series(&series, &body);
    assert_eq!(answer.status, 200, "{}", answer.text());
    let recorded = answer.json()["recorded"].as_array().cloned().unwrap_or_default();
    assert!(recorded.iter().all(|r| r["level"] == "SERIES" && r["key"] == series.as_str()), "{recorded:?}");

    let mut command = dcmtk("findscu");
    command.args(["-v", "-S", "-aec", &server.ae_title, "-k", "QueryRetrieveLevel=SERIES"]);
    command.args([
        "-k",
        &format!("StudyInstanceUID={study}"),
        "-k",
        "SeriesDescription=AXIAL*",
        "-k",
        "BodyPartExamined",
        "-k",
        "SeriesInstanceUID",
    ]);
    let output = run(command.arg("127.0.0.1").arg(server.dicom_port.to_string()));
    let found = text(&output);
    assert!(found.contains(&series) && found.contains("CHEST"), "{found}");

    let header = dump_the_one_instance(&server, &study);
    assert!(header.contains("(0008,103e) LO [AXIAL 5MM]") || header.contains("(0008,103E) LO [AXIAL 5MM]"), "{header}");
    assert!(header.contains("(0018,0015) CS [CHEST]"), "{header}");
    assert!(header.contains("(0400,0565) CS [CORRECT]"), "{header}");

    let refused = [
        (correct(&server, &study, &body), 400, "is a series attribute"),
        (
            correct_series(&series, &serde_json::json!({ "attributes": { "PatientName": "X" }, "reason": "r" })),
            400,
            "not a series attribute",
        ),
        (
            correct_series(&series, &serde_json::json!({ "attributes": { "Modality": "MR" }, "reason": "r" })),
            400,
            "cannot be corrected",
        ),
        (correct_series("1.2.3.4", &body), 404, "no series"),
    ];
    for (answer, status, message) in refused {
        assert_eq!(answer.status, status, "{}", answer.text());
        assert!(answer.text().contains(message), "{}", answer.text());
    }
}
