//! Sending generated instances with storescu and reading what it was told:
//! the crash tests kill servers while this runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{dcmtk, python, run, Server};

/// One study of generated instances, each `rows` × 256 bytes of pixels; prints
/// {"study": uid, "series": uid, "files": {path: sop_uid}}.
const GENERATE: &str = r#"
import json, os, sys
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

out, count, tag, rows = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
os.makedirs(out, exist_ok=True)
study, series = generate_uid(), generate_uid()
files = {}
for n in range(count):
    uid = generate_uid()
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = uid
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.PatientName = "Crash^" + tag
    ds.PatientID = "CRASH-" + tag
    ds.StudyDate = "20240101"
    ds.Modality = "OT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = n + 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = 256
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes([n % 256]) * (rows * 256)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = os.path.join(out, "%s-%04d.dcm" % (tag, n))
    ds.save_as(path, enforce_file_format=True)
    files[path] = uid
print(json.dumps({"study": study, "series": series, "files": files}))
"#;

pub struct Round {
    pub dir: PathBuf,
    pub study: String,
    pub series: String,
    /// File path -> SOP Instance UID.
    pub files: BTreeMap<String, String>,
}

pub fn generate(dir: &Path, tag: &str, count: usize) -> Round {
    generate_sized(dir, tag, count, 128)
}

/// [`generate`] with instances of `rows` × 256 bytes of pixels (at most 65,535 rows).
pub fn generate_sized(dir: &Path, tag: &str, count: usize, rows: u16) -> Round {
    let output = run(Command::new(python())
        .arg("-c")
        .arg(GENERATE)
        .arg(dir)
        .arg(count.to_string())
        .arg(tag)
        .arg(rows.to_string()));
    assert!(output.status.success(), "generating instances failed");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("generator JSON");
    let files = json["files"]
        .as_object()
        .expect("files")
        .iter()
        .map(|(path, uid)| (path.clone(), uid.as_str().expect("uid").to_string()))
        .collect();
    Round {
        dir: dir.to_path_buf(),
        study: json["study"].as_str().expect("study").to_string(),
        series: json["series"].as_str().expect("series").to_string(),
        files,
    }
}

/// storescu sending a whole folder, its verbose log going to `log`.
pub fn start_storescu(server: &Server, dir: &Path, log: &Path) -> Child {
    let file = std::fs::File::create(log).expect("storescu log");
    dcmtk("storescu")
        .args(["-v", "+sd", "--max-send-pdu", "16384", "-aec", &server.ae_title, "127.0.0.1"])
        .arg(server.dicom_port.to_string())
        .arg(dir)
        .stdout(file.try_clone().expect("log handle"))
        .stderr(file)
        .stdin(Stdio::null())
        .spawn()
        .expect("starting storescu")
}

/// Files storescu reported as stored with status Success, in order.
pub fn acknowledged(log: &str) -> Vec<String> {
    let mut current: Option<String> = None;
    let mut stored = Vec::new();
    for line in log.lines() {
        if let Some(path) = line.strip_prefix("I: Sending file: ") {
            current = Some(path.trim().to_string());
        } else if line.contains("Received Store Response (Success)") {
            stored.push(current.take().unwrap_or_else(|| panic!("a store response without a file in:\n{log}")));
        }
    }
    stored
}

pub fn wait_for_exit(child: &mut Child, within: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("waiting") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
