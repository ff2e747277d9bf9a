//! The first thing a hospital does: echo, store, find.

mod common;

use common::{dcmtk, pydicom_data, run, Server};

#[test]
fn echo_store_and_find_with_dcmtk() {
    let server = Server::start();
    let port = server.dicom_port.to_string();
    let echo = run(dcmtk("echoscu").args(["-aec", "HANEUL", "127.0.0.1", &port]));
    assert!(echo.status.success(), "C-ECHO failed");

    let ct = pydicom_data().join("test_files/CT_small.dcm");
    let store = run(dcmtk("storescu").args(["-aec", "HANEUL", "127.0.0.1", &port]).arg(&ct));
    assert!(store.status.success(), "C-STORE failed");

    let find = run(dcmtk("findscu").args([
        "-aec",
        "HANEUL",
        "-S",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "PatientName=CompressedSamples*",
        "-k",
        "StudyInstanceUID=",
        "-k",
        "NumberOfStudyRelatedInstances=",
        "127.0.0.1",
        &port,
    ]));
    assert!(find.status.success(), "C-FIND failed");
    let text = String::from_utf8_lossy(&find.stderr);
    assert!(text.contains("1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"), "study not found:\n{text}");
    assert!(text.contains("NumberOfStudyRelatedInstances"), "{text}");
}
