//! Interoperability with the DCMTK command-line tools, the reference DICOM
//! implementation most hospitals meet first: store every pydicom sample with
//! storescu, query with findscu at every level of both models, retrieve with
//! movescu (to a storescp) and getscu, and check that what comes back is
//! byte for byte what was stored.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{dcmtk, dimse_statuses, files_under, free_port, pydicom_data, python, run, text, wait_until, Server};

// ---------------------------------------------------------------------------
// The sample files
// ---------------------------------------------------------------------------

/// Sample files that storescu itself refuses to send (truncated, unparsable,
/// or without SOP Class/Instance UID): they never reach the archive.
const REFUSED_BY_STORESCU: &[&str] = &[
    "MR_truncated.dcm",
    "SC_rgb_jpeg.dcm",
    "UN_sequence.dcm",
    "empty_charset_LEI.dcm",
    "meta_missing_tsyntax.dcm",
    "nested_priv_SQ.dcm",
    "no_meta.dcm",
    "no_meta_group_length.dcm",
    "priv_SQ.dcm",
    "rtdose_rle.dcm",
    "rtdose_rle_1frame.dcm",
    "rtplan_truncated.dcm",
    "chrSQEncoding.dcm",
    "chrSQEncoding1.dcm",
];

/// The first stored of a pair sharing a SOP Instance UID with different bytes.
const FIRST_COPY: &str = "MR_small.dcm";
/// The second of that pair: must be answered with warning B006 and not replace the first.
const SECOND_COPY: &str = "MR_small_padded.dcm";

const LESTRADE_STUDY: &str = "1.2.826.0.1.3680043.8.498.12406831542731051035295345080039845114";
const CT_SMALL_STUDY: &str = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322";
const CT_SMALL_SERIES: &str = "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322";
const CT_SMALL_INSTANCE: &str = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322";
const MR_SMALL_STUDY: &str = "1.3.6.1.4.1.5962.1.2.4.20040826185059.5457";
const MR_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.4";
const SC_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.7";
const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";

/// One pydicom sample file, as pydicom reads it (`ts`: the transfer syntax of
/// the data set, from the meta header or, without one, as pydicom found it).
#[derive(Debug, Clone, serde::Deserialize)]
struct Sample {
    path: PathBuf,
    #[serde(default)]
    ts: String,
    #[serde(default)]
    sop_uid: String,
    #[serde(default)]
    study_uid: String,
    #[serde(default)]
    series_uid: String,
    #[serde(default)]
    patient_id: String,
    #[serde(default)]
    patient_name: String,
    #[serde(default)]
    modality: String,
    #[serde(default)]
    study_date: String,
}

impl Sample {
    fn name(&self) -> &str {
        self.path.file_name().and_then(|n| n.to_str()).unwrap_or_default()
    }
}

const CATALOGUE_SCRIPT: &str = r#"
import json, sys, warnings
warnings.simplefilter("ignore")
import pydicom
out = []
for path in sys.argv[1:]:
    record = {"path": path}
    try:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
        meta = getattr(ds, "file_meta", None)
        record["ts"] = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
        if not record["ts"]:
            # No meta: the encoding the data set was found in (storescu finds the same).
            implicit, little = ds.original_encoding
            record["ts"] = {(True, True): "1.2.840.10008.1.2", (False, True): "1.2.840.10008.1.2.1",
                            (False, False): "1.2.840.10008.1.2.2"}.get((implicit, little), "")
        for field, keyword in (("sop_uid", "SOPInstanceUID"),
                               ("study_uid", "StudyInstanceUID"), ("series_uid", "SeriesInstanceUID"),
                               ("patient_id", "PatientID"), ("patient_name", "PatientName"),
                               ("modality", "Modality"), ("study_date", "StudyDate")):
            value = ds.get(keyword)
            record[field] = "" if value is None else str(value)
    except Exception as error:
        record["error"] = str(error)
    out.append(record)
print(json.dumps(out))
"#;

/// Every `.dcm` file directly in pydicom's `test_files/` and `charset_files/`
/// (so not `dicomdirtests/`), sorted by name within each folder.
fn sample_paths() -> Vec<PathBuf> {
    let data = pydicom_data();
    let mut all = Vec::new();
    for folder in ["test_files", "charset_files"] {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(data.join(folder))
            .unwrap_or_else(|e| panic!("listing pydicom {folder}: {e}"))
            .map(|entry| entry.expect("directory entry").path())
            .filter(|path| path.is_file() && path.extension().is_some_and(|ext| ext == "dcm"))
            .collect();
        paths.sort();
        all.extend(paths);
    }
    assert!(all.len() > 60, "pydicom's sample files are missing: found only {}", all.len());
    all
}

fn catalogue() -> Vec<Sample> {
    let paths: Vec<String> = sample_paths().iter().map(|p| p.display().to_string()).collect();
    let json = python_eval(CATALOGUE_SCRIPT, &paths);
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("catalogue output is not JSON ({e}):\n{json}"))
}

fn sample<'a>(samples: &'a [Sample], name: &str) -> &'a Sample {
    samples.iter().find(|s| s.name() == name).unwrap_or_else(|| panic!("no pydicom sample {name}"))
}

/// The storescu option that proposes a file's own transfer syntax first, so
/// that it travels (and is stored) as it is in the file.
fn propose_option(ts: &str) -> &'static str {
    match ts {
        "1.2.840.10008.1.2" => "-xi",
        "" | "1.2.840.10008.1.2.1" => "-xe",
        "1.2.840.10008.1.2.2" => "-xb",
        "1.2.840.10008.1.2.1.99" => "-xd",
        "1.2.840.10008.1.2.4.50" => "-xy",
        "1.2.840.10008.1.2.4.51" => "-xx",
        "1.2.840.10008.1.2.4.70" => "-xs",
        "1.2.840.10008.1.2.4.80" => "-xt",
        "1.2.840.10008.1.2.4.81" => "-xu",
        "1.2.840.10008.1.2.4.90" => "-xv",
        "1.2.840.10008.1.2.4.91" => "-xw",
        "1.2.840.10008.1.2.5" => "-xr",
        other => panic!("no storescu option proposes transfer syntax {other:?}; extend propose_option"),
    }
}

// ---------------------------------------------------------------------------
// Running the tools
// ---------------------------------------------------------------------------

/// Run `python -c script args...` with pydicom available; returns stdout.
fn python_eval(script: &str, args: &[String]) -> String {
    let output = run(Command::new(python()).arg("-c").arg(script).args(args));
    assert!(output.status.success(), "python failed:\n{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("python prints UTF-8")
}

/// storescu proposing only the SOP classes of `files` (`-R`), with `options`.
fn storescu(server: &Server, options: &[&str], files: &[&Path]) -> Output {
    let mut command = dcmtk("storescu");
    command.args(["-R", "-aec", "HANEUL"]).args(options).arg("127.0.0.1").arg(server.dicom_port.to_string());
    command.args(files);
    run(&mut command)
}

/// Store one file, returning the DIMSE status of the C-STORE response (from storescu's debug log).
fn store_with_status(server: &Server, sample: &Sample) -> (Output, Option<u16>) {
    let output = storescu(server, &["-d", propose_option(&sample.ts)], &[&sample.path]);
    let status = dimse_statuses(&text(&output)).first().copied();
    (output, status)
}

/// Store every sample storescu is able to send, grouped by transfer syntax
/// (one storescu per group, each proposing the group's syntax first).
/// `FIRST_COPY` then `SECOND_COPY` go first, one at a time, so that the
/// first-copy-wins rule has a known winner. Returns the samples expected to
/// be in the archive (duplicates included) in the order they were sent, and
/// the statuses of the pair.
fn store_everything(server: &Server, samples: &[Sample]) -> (Vec<Sample>, u16, u16) {
    let (first_output, first_status) = store_with_status(server, sample(samples, FIRST_COPY));
    assert!(first_output.status.success(), "storing {FIRST_COPY} failed:\n{}", text(&first_output));
    let (second_output, second_status) = store_with_status(server, sample(samples, SECOND_COPY));
    assert!(
        second_output.status.success(),
        "a warning is not a failure: storescu must succeed for {SECOND_COPY}:\n{}",
        text(&second_output)
    );

    let mut groups: BTreeMap<&'static str, Vec<&Sample>> = BTreeMap::new();
    let mut expected = vec![sample(samples, FIRST_COPY).clone(), sample(samples, SECOND_COPY).clone()];
    for s in samples {
        if REFUSED_BY_STORESCU.contains(&s.name()) || s.name() == FIRST_COPY || s.name() == SECOND_COPY {
            continue;
        }
        if s.study_uid.is_empty() {
            continue; // refused by the archive: see stores_every_pydicom_sample
        }
        groups.entry(propose_option(&s.ts)).or_default().push(s);
    }
    for (option, group) in &groups {
        expected.extend(group.iter().map(|s| (*s).clone())); // in the order they are sent
        let files: Vec<&Path> = group.iter().map(|s| s.path.as_path()).collect();
        let output = storescu(server, &[option], &files);
        assert!(
            output.status.success(),
            "storescu {option} failed for {:?}:\n{}",
            group.iter().map(|s| s.name()).collect::<Vec<_>>(),
            text(&output)
        );
    }
    (expected, first_status.expect("no status for the first copy"), second_status.expect("no status for the second"))
}

/// The stored samples, one per SOP Instance UID (the first stored wins).
fn unique_by_uid(stored: &[Sample]) -> Vec<Sample> {
    let mut seen = BTreeSet::new();
    stored.iter().filter(|s| seen.insert(s.sop_uid.clone())).cloned().collect()
}

// ---------------------------------------------------------------------------
// C-FIND
// ---------------------------------------------------------------------------

type Response = BTreeMap<String, String>;

fn findscu_command<K: AsRef<OsStr>>(server: &Server, model: &str, keys: &[K]) -> Command {
    let mut command = dcmtk("findscu");
    command.args(["-v", model, "-aec", "HANEUL"]);
    for key in keys {
        command.arg("-k").arg(key);
    }
    command.arg("127.0.0.1").arg(server.dicom_port.to_string());
    command
}

/// C-FIND with findscu (`model` is `-P` or `-S`); the responses as DCMTK
/// prints them, keyed by attribute keyword. For ASCII values only: use
/// `findscu_extract` where the character set matters.
fn findscu(server: &Server, model: &str, keys: &[&str]) -> Vec<Response> {
    let output = run(&mut findscu_command(server, model, keys));
    let log = text(&output);
    assert!(output.status.success(), "findscu {keys:?} failed:\n{log}");
    assert!(log.contains("Received Final Find Response (Success)"), "C-FIND {keys:?} did not end in success:\n{log}");
    parse_find_log(&log)
}

/// Parse findscu's `I: (gggg,eeee) VR [value] # len, vm Keyword` lines, one map per pending response.
fn parse_find_log(log: &str) -> Vec<Response> {
    let mut responses = Vec::new();
    let mut current: Option<Response> = None;
    for line in log.lines() {
        let line = line.strip_prefix("I: ").unwrap_or(line);
        if line.starts_with("Find Response:") {
            responses.extend(current.take());
            current = Some(Response::new());
        } else if line.starts_with("Received Final Find Response") {
            responses.extend(current.take());
        } else if let (Some(response), true) = (current.as_mut(), line.starts_with('(')) {
            if let Some((keyword, value)) = parse_element_line(line) {
                response.insert(keyword, value);
            }
        }
    }
    responses.extend(current.take());
    responses
}

fn parse_element_line(line: &str) -> Option<(String, String)> {
    let hash = line.rfind('#')?;
    let keyword = line[hash..].split_whitespace().last()?.to_string();
    let body = line.get(14..hash)?.trim(); // after "(gggg,eeee) VR "
    let value = if body.starts_with('[') && body.ends_with(']') {
        &body[1..body.len() - 1]
    } else if body.starts_with("(no value") {
        ""
    } else {
        body
    };
    Some((keyword, value.trim_end_matches([' ', '\0']).to_string()))
}

const DUMP_SCRIPT: &str = r#"
import json, sys, warnings
warnings.simplefilter("ignore")
import pydicom
from pydicom.multival import MultiValue
out = []
for path in sys.argv[1:]:
    ds = pydicom.dcmread(path, force=True)
    ds.decode()
    record = {}
    for element in ds:
        if element.VR == "SQ":
            continue
        value = element.value
        if isinstance(value, (list, MultiValue)):
            value = "\\".join(str(v) for v in value)
        elif value is None:
            value = ""
        elif isinstance(value, bytes):
            value = value.hex()
        record[element.keyword or str(element.tag)] = str(value)
    out.append(record)
print(json.dumps(out))
"#;

/// Decode DICOM files with pydicom (honouring Specific Character Set): one map per file.
fn pydicom_dump(files: &[PathBuf]) -> Vec<Response> {
    if files.is_empty() {
        return Vec::new();
    }
    let args: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    let json = python_eval(DUMP_SCRIPT, &args);
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("dump output is not JSON ({e}):\n{json}"))
}

/// Several C-FINDs (Study Root) with findscu `--extract`, the response
/// files of all decoded by a single pydicom run: the responses of each query.
fn findscu_extract_all(server: &Server, queries: &[Vec<OsString>]) -> Vec<Vec<Response>> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut files_per_query = Vec::new();
    for (index, keys) in queries.iter().enumerate() {
        let out = dir.path().join(index.to_string());
        std::fs::create_dir(&out).expect("response directory");
        let mut command = findscu_command(server, "-S", keys);
        command.arg("-X").arg("-od").arg(&out);
        let output = run(&mut command);
        let log = text(&output);
        assert!(output.status.success(), "findscu {keys:?} failed:\n{log}");
        assert!(log.contains("Received Final Find Response (Success)"), "C-FIND {keys:?} did not succeed:\n{log}");
        let mut files: Vec<PathBuf> = files_under(&out)
            .into_iter()
            .filter(|path| path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("rsp")))
            .collect();
        files.sort();
        files_per_query.push(files);
    }
    let mut decoded = pydicom_dump(&files_per_query.concat()).into_iter();
    files_per_query.iter().map(|files| decoded.by_ref().take(files.len()).collect()).collect()
}

/// One C-FIND (Study Root) with findscu `--extract`, decoded by pydicom.
fn findscu_extract(server: &Server, keys: &[&str]) -> Vec<Response> {
    findscu_extract_all(server, &[keys.iter().map(OsString::from).collect()]).remove(0)
}

/// The values of `keyword` over all responses, as a set.
fn values(responses: &[Response], keyword: &str) -> BTreeSet<String> {
    responses
        .iter()
        .map(|r| r.get(keyword).unwrap_or_else(|| panic!("response without {keyword}: {r:?}")).clone())
        .collect()
}

fn set<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> BTreeSet<String> {
    items.into_iter().map(|s| s.as_ref().to_string()).collect()
}

fn assert_keys_present(responses: &[Response], keys: &[&str], what: &str) {
    for response in responses {
        for key in keys {
            assert!(response.contains_key(*key), "{what}: required return key {key} missing from {response:?}");
        }
    }
}

// ---------------------------------------------------------------------------
// Part 10 files: the archive's blobs and what the peers receive
// ---------------------------------------------------------------------------

/// A Part 10 file split into its meta group and the data set bytes that follow.
struct Part10 {
    meta: BTreeMap<u16, Vec<u8>>,
    bytes: Vec<u8>,
    dataset_offset: usize,
}

impl Part10 {
    fn read(path: &Path) -> Option<Part10> {
        let bytes = std::fs::read(path).ok()?;
        if bytes.get(128..132)? != b"DICM" {
            return None;
        }
        let mut meta = BTreeMap::new();
        let mut pos = 132;
        while bytes.len() >= pos + 8 && u16::from_le_bytes([bytes[pos], bytes[pos + 1]]) == 0x0002 {
            let element = u16::from_le_bytes([bytes[pos + 2], bytes[pos + 3]]);
            let vr = &bytes[pos + 4..pos + 6];
            let long =
                matches!(vr, b"OB" | b"OW" | b"OF" | b"OD" | b"OL" | b"OV" | b"SQ" | b"UT" | b"UN" | b"UC" | b"UR");
            let (header, length) = if long {
                (12, u32::from_le_bytes(bytes.get(pos + 8..pos + 12)?.try_into().ok()?) as usize)
            } else {
                (8, u16::from_le_bytes([bytes[pos + 6], bytes[pos + 7]]) as usize)
            };
            meta.insert(element, bytes.get(pos + header..pos + header + length)?.to_vec());
            pos += header + length;
        }
        Some(Part10 { meta, bytes, dataset_offset: pos })
    }

    fn meta_text(&self, element: u16) -> String {
        let raw = self.meta.get(&element).map(Vec::as_slice).unwrap_or_default();
        String::from_utf8_lossy(raw).trim_end_matches([' ', '\0']).to_string()
    }

    fn sop_uid(&self) -> String {
        self.meta_text(0x0003)
    }

    fn transfer_syntax(&self) -> String {
        self.meta_text(0x0010)
    }

    fn dataset(&self) -> &[u8] {
        &self.bytes[self.dataset_offset..]
    }
}

/// The archive's complete blobs (empty pre-created files are skipped), by
/// SOP Instance UID; blobs kept in a bucket are downloaded into `scratch`.
fn blobs_by_uid(server: &Server, scratch: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut blobs: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for path in server.blob_files(scratch) {
        if path.extension().is_some_and(|ext| ext == "dcm") {
            if let Some(file) = Part10::read(&path) {
                blobs.entry(file.sop_uid()).or_default().push(path);
            }
        }
    }
    blobs
}

fn the_blob(blobs: &BTreeMap<String, Vec<PathBuf>>, uid: &str) -> Part10 {
    let paths = blobs.get(uid).unwrap_or_else(|| panic!("no blob holds {uid}"));
    assert_eq!(paths.len(), 1, "one blob per instance expected for {uid}: {paths:?}");
    Part10::read(&paths[0]).expect("readable blob")
}

const EQUALITY_SCRIPT: &str = r#"
import json, sys, warnings
warnings.simplefilter("ignore")
import pydicom
bad = []
args = sys.argv[1:]
for a, b in zip(args[0::2], args[1::2]):
    x = pydicom.dcmread(a, force=True)
    y = pydicom.dcmread(b, force=True)
    # What DCMTK's storescu rewrites when it sends a file: group lengths are
    # recomputed or dropped, Data Set Trailing Padding is dropped, and
    # encapsulated Pixel Data is declared OB (so values, not VRs, are compared).
    for ds in (x, y):
        for tag in [t for t in ds.keys() if t.element == 0 or t == 0xFFFCFFFC]:
            del ds[tag]
    differing = sorted(str(t) for t in set(x.keys()) | set(y.keys())
                       if t not in x or t not in y or x[t].value != y[t].value)
    if differing:
        bad.append({"left": a, "right": b, "differing": differing})
print(json.dumps(bad))
"#;

/// Pairs of files whose data sets pydicom does not find equal, element by
/// element, leaving out what storescu itself rewrites (see the script).
fn pydicom_unequal(pairs: &[(PathBuf, PathBuf)]) -> Vec<serde_json::Value> {
    let args: Vec<String> =
        pairs.iter().flat_map(|(a, b)| [a.display().to_string(), b.display().to_string()]).collect();
    let json = python_eval(EQUALITY_SCRIPT, &args);
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("equality output is not JSON ({e}):\n{json}"))
}

/// Check the files a peer received: exactly the `expected` instances, each with
/// the data set bytes of the archive's blob (and its transfer syntax), and
/// equal (pydicom) to the original sample.
fn check_received(server: &Server, received_files: &[PathBuf], expected: &[Sample]) {
    let received: Vec<(PathBuf, Part10)> = received_files
        .iter()
        .map(|path| {
            let file = Part10::read(path).unwrap_or_else(|| panic!("{} is not a Part 10 file", path.display()));
            (path.clone(), file)
        })
        .collect();
    let received_uids: Vec<String> = received.iter().map(|(_, f)| f.sop_uid()).collect();
    let expected_uids: BTreeSet<String> = expected.iter().map(|s| s.sop_uid.clone()).collect();
    assert_eq!(received_uids.len(), expected_uids.len(), "received {received_uids:?}, expected {expected_uids:?}");
    assert_eq!(set(&received_uids), expected_uids, "received instances");

    let scratch = tempfile::tempdir().expect("tempdir");
    let blobs = blobs_by_uid(server, scratch.path());
    let mut pairs = Vec::new();
    for (path, file) in &received {
        let blob = the_blob(&blobs, &file.sop_uid());
        assert_eq!(file.transfer_syntax(), blob.transfer_syntax(), "transfer syntax of {}", path.display());
        assert!(
            file.dataset() == blob.dataset(),
            "{} ({} bytes) differs from the stored data set ({} bytes)",
            path.display(),
            file.dataset().len(),
            blob.dataset().len()
        );
        let original = expected.iter().find(|s| s.sop_uid == file.sop_uid()).expect("expected sample");
        pairs.push((path.clone(), original.path.clone()));
    }
    let unequal = pydicom_unequal(&pairs);
    assert!(unequal.is_empty(), "received data sets differ from the originals: {unequal:#?}");
}

// ---------------------------------------------------------------------------
// Peers
// ---------------------------------------------------------------------------

/// A child process killed (and reaped) when dropped.
struct Peer {
    child: Child,
    log: PathBuf,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- peer log ----\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
        }
    }
}

/// `storescp +xa +B +uf -od DIR -aet MOVEDEST PORT`, answering C-ECHO before this returns.
fn start_storescp(port: u16, out_dir: &Path, log_dir: &Path) -> Peer {
    let log = log_dir.join("storescp.log");
    let log_file = std::fs::File::create(&log).expect("storescp log");
    let child = dcmtk("storescp")
        .args(["+xa", "+B", "+uf", "-aet", "MOVEDEST", "-od"])
        .arg(out_dir)
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("log handle"))
        .stderr(log_file)
        .spawn()
        .expect("starting storescp");
    let mut peer = Peer { child, log };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let echo = dcmtk("echoscu").args(["-aec", "MOVEDEST", "127.0.0.1"]).arg(port.to_string()).output();
        if echo.is_ok_and(|o| o.status.success()) {
            return peer;
        }
        if let Ok(Some(status)) = peer.child.try_wait() {
            panic!("storescp exited with {status}:\n{}", std::fs::read_to_string(&peer.log).unwrap_or_default());
        }
        assert!(Instant::now() < deadline, "storescp did not answer C-ECHO on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn movescu(server: &Server, destination: &str, keys: &[&str], debug: bool) -> Output {
    let mut command = dcmtk("movescu");
    command.args([if debug { "-d" } else { "-v" }, "-S", "-aec", "HANEUL", "-aem", destination]);
    for key in keys {
        command.args(["-k", key]);
    }
    command.arg("127.0.0.1").arg(server.dicom_port.to_string());
    run(&mut command)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// Every pydicom sample storescu can send is stored and findable by SOP
/// Instance UID; a second copy of an instance with different bytes is
/// answered B006 and does not replace the first.
#[test]
fn stores_every_pydicom_sample() {
    let server = Server::start();
    let samples = catalogue();

    // What storescu refuses never reaches the network.
    for name in REFUSED_BY_STORESCU {
        let s = sample(&samples, name);
        let output = storescu(&server, &["-v", propose_option(&s.ts)], &[&s.path]);
        assert!(!output.status.success(), "storescu was expected to refuse {name}:\n{}", text(&output));
        assert!(!text(&output).contains("Association Accepted"), "{name} was not expected to be sent");
    }

    // Data sets without a Study Instance UID cannot be filed: refused with a failure status.
    let no_study: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.study_uid.is_empty() && !s.sop_uid.is_empty() && !REFUSED_BY_STORESCU.contains(&s.name()))
        .collect();
    assert!(!no_study.is_empty(), "pydicom has samples without Study Instance UID");
    for s in &no_study {
        let (output, status) = store_with_status(&server, s);
        assert!(!output.status.success(), "{} has no Study Instance UID and must be refused", s.name());
        let status = status.unwrap_or_else(|| panic!("no C-STORE response for {}:\n{}", s.name(), text(&output)));
        assert!((0xA000..=0xCFFF).contains(&status), "{}: expected a failure status, got {status:04X}", s.name());
    }

    let (stored, first_status, second_status) = store_everything(&server, &samples);
    assert_eq!(first_status, 0x0000, "{FIRST_COPY} is new: success expected");
    assert_eq!(second_status, 0xB006, "{SECOND_COPY} has {FIRST_COPY}'s SOP Instance UID with other bytes");
    let unique = unique_by_uid(&stored);
    assert!(unique.len() >= 40, "too few unique instances stored: {}", unique.len());

    // Each stored instance is found exactly once, where it belongs.
    for s in &unique {
        let responses = findscu(
            &server,
            "-S",
            &[
                "QueryRetrieveLevel=IMAGE",
                &format!("StudyInstanceUID={}", s.study_uid),
                &format!("SeriesInstanceUID={}", s.series_uid),
                &format!("SOPInstanceUID={}", s.sop_uid),
                "SOPClassUID=",
            ],
        );
        assert_eq!(responses.len(), 1, "{} ({}) should be found once: {responses:?}", s.name(), s.sop_uid);
        assert_eq!(responses[0].get("SOPInstanceUID"), Some(&s.sop_uid), "{}", s.name());
        assert_eq!(responses[0].get("StudyInstanceUID"), Some(&s.study_uid), "{}", s.name());
    }

    // Nothing else was stored: the archive holds exactly the unique instances.
    let studies =
        findscu(&server, "-S", &["QueryRetrieveLevel=STUDY", "StudyInstanceUID=", "NumberOfStudyRelatedInstances="]);
    let total: usize = studies
        .iter()
        .map(|r| r.get("NumberOfStudyRelatedInstances").and_then(|n| n.parse::<usize>().ok()).unwrap_or(0))
        .sum();
    assert_eq!(total, unique.len(), "instances in the archive");

    // Stored as received: one blob per instance, in the transfer syntax it was
    // sent in (the file's own), equal to the first copy sent.
    let scratch = tempfile::tempdir().expect("tempdir");
    let blobs = blobs_by_uid(&server, scratch.path());
    let mut pairs = Vec::new();
    for s in &unique {
        let blob = the_blob(&blobs, &s.sop_uid);
        assert_eq!(blob.transfer_syntax(), s.ts, "transfer syntax of the stored {}", s.name());
        pairs.push((blobs[&s.sop_uid][0].clone(), s.path.clone()));
    }
    let unequal = pydicom_unequal(&pairs);
    assert!(unequal.is_empty(), "stored data sets differ from the samples sent: {unequal:#?}");

    // The first copy was kept: the stored data set is FIRST_COPY's, not SECOND_COPY's.
    let first = sample(&samples, FIRST_COPY);
    let second = sample(&samples, SECOND_COPY);
    let blob_path = blobs[&first.sop_uid][0].clone();
    let unequal = pydicom_unequal(&[(blob_path.clone(), first.path.clone()), (blob_path, second.path.clone())]);
    assert_eq!(unequal.len(), 1, "the blob must equal {FIRST_COPY} and differ from {SECOND_COPY}: {unequal:?}");
    assert!(unequal[0]["right"].as_str().is_some_and(|p| p.ends_with(SECOND_COPY)), "{unequal:?}");
}

/// C-FIND at every level of both models, with the matching kinds and the computed keys.
#[test]
fn finds_at_every_level_in_both_models() {
    let server = Server::start();
    let samples = catalogue();
    let (stored, _, _) = store_everything(&server, &samples);
    let unique = unique_by_uid(&stored);

    // What the archive should compute, from the samples themselves.
    let mut study_series: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut study_instances: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut study_modalities: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for s in &unique {
        study_series.entry(&s.study_uid).or_default().insert(&s.series_uid);
        study_instances.entry(&s.study_uid).or_default().insert(&s.sop_uid);
        let modalities = study_modalities.entry(&s.study_uid).or_default();
        if !s.modality.is_empty() {
            modalities.insert(&s.modality);
        }
    }
    let studies_where = |keep: &dyn Fn(&Sample) -> bool| -> BTreeSet<String> {
        unique.iter().filter(|s| keep(s)).map(|s| s.study_uid.clone()).collect()
    };
    let plain_date = |s: &Sample| s.study_date.len() == 8 && s.study_date.bytes().all(|b| b.is_ascii_digit());

    // STUDY, Study Root, universal: every study with its required keys and correct counts.
    let study_keys = [
        "QueryRetrieveLevel=STUDY",
        "StudyDate=",
        "StudyTime=",
        "AccessionNumber=",
        "PatientName=",
        "PatientID=",
        "StudyID=",
        "StudyInstanceUID=",
        "ModalitiesInStudy=",
        "NumberOfStudyRelatedSeries=",
        "NumberOfStudyRelatedInstances=",
    ];
    let all_studies = findscu(&server, "-S", &study_keys);
    let required_study =
        ["StudyDate", "StudyTime", "AccessionNumber", "PatientName", "PatientID", "StudyID", "StudyInstanceUID"];
    assert_keys_present(&all_studies, &required_study, "STUDY level");
    assert_eq!(values(&all_studies, "StudyInstanceUID"), set(study_instances.keys()), "all studies");
    assert_eq!(all_studies.len(), study_instances.len(), "each study once");
    for response in &all_studies {
        let uid = response["StudyInstanceUID"].as_str();
        assert_eq!(
            response["NumberOfStudyRelatedInstances"],
            study_instances[uid].len().to_string(),
            "NumberOfStudyRelatedInstances of {uid}"
        );
        assert_eq!(
            response["NumberOfStudyRelatedSeries"],
            study_series[uid].len().to_string(),
            "NumberOfStudyRelatedSeries of {uid}"
        );
        let modalities: BTreeSet<&str> = response["ModalitiesInStudy"].split('\\').filter(|m| !m.is_empty()).collect();
        assert_eq!(modalities, study_modalities[uid], "ModalitiesInStudy of {uid}");
    }
    let lestrade = all_studies.iter().find(|r| r["StudyInstanceUID"] == LESTRADE_STUDY).expect("Lestrade study");
    assert_eq!(lestrade["NumberOfStudyRelatedInstances"], "12", "Lestrade^G has 12 distinct instances");

    // PATIENT, Patient Root, with a `*` wildcard.
    let patients = findscu(
        &server,
        "-P",
        &[
            "QueryRetrieveLevel=PATIENT",
            "PatientName=CompressedSamples*",
            "PatientID=",
            "PatientBirthDate=",
            "PatientSex=",
            "NumberOfPatientRelatedStudies=",
            "NumberOfPatientRelatedSeries=",
            "NumberOfPatientRelatedInstances=",
        ],
    );
    assert_keys_present(&patients, &["PatientName", "PatientID"], "PATIENT level");
    let compressed: Vec<&Sample> = unique.iter().filter(|s| s.patient_name.starts_with("CompressedSamples")).collect();
    assert_eq!(values(&patients, "PatientID"), set(compressed.iter().map(|s| &s.patient_id)), "patients");
    assert_eq!(patients.len(), values(&patients, "PatientID").len(), "each patient once");
    for response in &patients {
        let id = response["PatientID"].as_str();
        let mine: Vec<&&Sample> = compressed.iter().filter(|s| s.patient_id == id).collect();
        let count = |f: &dyn Fn(&Sample) -> &str| mine.iter().map(|s| f(s)).collect::<BTreeSet<_>>().len().to_string();
        assert_eq!(response["NumberOfPatientRelatedStudies"], count(&|s| &s.study_uid), "studies of {id}");
        assert_eq!(response["NumberOfPatientRelatedSeries"], count(&|s| &s.series_uid), "series of {id}");
        assert_eq!(response["NumberOfPatientRelatedInstances"], count(&|s| &s.sop_uid), "instances of {id}");
        assert!(response["PatientName"].starts_with("CompressedSamples^"), "{response:?}");
    }

    // STUDY, Patient Root (below a patient).
    let mr_studies =
        findscu(&server, "-P", &["QueryRetrieveLevel=STUDY", "PatientID=4MR1", "StudyInstanceUID=", "StudyDate="]);
    assert_eq!(values(&mr_studies, "StudyInstanceUID"), set([MR_SMALL_STUDY]), "studies of patient 4MR1");

    // SERIES, both roots.
    let series_keys = |root_keys: &[&str]| -> Vec<String> {
        let mut keys: Vec<String> = root_keys.iter().map(|k| k.to_string()).collect();
        keys.extend(
            [
                "QueryRetrieveLevel=SERIES",
                "SeriesInstanceUID=",
                "Modality=",
                "SeriesNumber=",
                "NumberOfSeriesRelatedInstances=",
            ]
            .map(String::from),
        );
        keys
    };
    let lestrade_series: BTreeSet<String> = set(&study_series[LESTRADE_STUDY]);
    for (model, root_keys) in [
        ("-S", vec![format!("StudyInstanceUID={LESTRADE_STUDY}")]),
        ("-P", vec!["PatientID=ID1".to_string(), format!("StudyInstanceUID={LESTRADE_STUDY}")]),
    ] {
        let root: Vec<&str> = root_keys.iter().map(String::as_str).collect();
        let keys = series_keys(&root);
        let series = findscu(&server, model, &keys.iter().map(String::as_str).collect::<Vec<_>>());
        assert_keys_present(&series, &["SeriesInstanceUID", "Modality", "SeriesNumber"], "SERIES level");
        assert_eq!(values(&series, "SeriesInstanceUID"), lestrade_series, "series of Lestrade ({model})");
        for response in &series {
            let uid = &response["SeriesInstanceUID"];
            let n = unique.iter().filter(|s| &s.series_uid == uid).count();
            assert_eq!(response["NumberOfSeriesRelatedInstances"], n.to_string(), "instances of series {uid}");
            assert_eq!(response["Modality"], "OT", "{response:?}");
        }
    }

    // IMAGE, both roots.
    let series_uid = lestrade_series.iter().next().expect("a series").clone();
    let lestrade_instances: BTreeSet<String> =
        unique.iter().filter(|s| s.series_uid == series_uid).map(|s| s.sop_uid.clone()).collect();
    for (model, mut keys) in [("-S", vec![]), ("-P", vec!["PatientID=ID1".to_string()])] {
        keys.extend([
            "QueryRetrieveLevel=IMAGE".to_string(),
            format!("StudyInstanceUID={LESTRADE_STUDY}"),
            format!("SeriesInstanceUID={series_uid}"),
            "SOPInstanceUID=".to_string(),
            "InstanceNumber=".to_string(),
        ]);
        let images = findscu(&server, model, &keys.iter().map(String::as_str).collect::<Vec<_>>());
        assert_keys_present(&images, &["SOPInstanceUID", "InstanceNumber"], "IMAGE level");
        assert_eq!(values(&images, "SOPInstanceUID"), lestrade_instances, "instances of Lestrade ({model})");
        assert_eq!(images.len(), lestrade_instances.len(), "each instance once ({model})");
    }

    let study_query = |matching: &[&str]| -> BTreeSet<String> {
        let mut keys = vec!["QueryRetrieveLevel=STUDY", "StudyInstanceUID=", "PatientName=", "StudyDate="];
        keys.extend_from_slice(matching);
        values(&findscu(&server, "-S", &keys), "StudyInstanceUID")
    };

    // `?` wildcard: exactly one character.
    assert_eq!(study_query(&["PatientName=CompressedSamples^?T1"]), set([CT_SMALL_STUDY]), "PatientName ?T1");
    assert_eq!(
        study_query(&["PatientName=CompressedSamples^??1"]),
        studies_where(&|s| s.patient_name.len() == "CompressedSamples^XX1".len()
            && s.patient_name.starts_with("CompressedSamples^")),
        "PatientName ??1"
    );
    assert!(study_query(&["PatientName=CompressedSamples^?"]).is_empty(), "? matches one character, not three");
    assert_eq!(study_query(&["PatientID=?MR1"]), set([MR_SMALL_STUDY]), "PatientID ?MR1");

    // Date ranges (the one sample with an ACR-NEMA "1997.04.24" date is left out of the comparison).
    let legacy = studies_where(&|s| !s.study_date.is_empty() && !plain_date(s));
    let dated = |query: &str| -> BTreeSet<String> { study_query(&[query]).difference(&legacy).cloned().collect() };
    let in_range = |from: &str, to: &str| {
        studies_where(&|s| plain_date(s) && s.study_date.as_str() >= from && s.study_date.as_str() <= to)
    };
    let range_2004 = in_range("20040101", "20041231");
    assert!(range_2004.contains(CT_SMALL_STUDY) && range_2004.contains(MR_SMALL_STUDY), "{range_2004:?}");
    assert_eq!(dated("StudyDate=20040101-20041231"), range_2004, "StudyDate 20040101-20041231");
    assert_eq!(dated("StudyDate=20170101-"), in_range("20170101", "99991231"), "StudyDate 20170101-");
    assert_eq!(dated("StudyDate=-20030430"), in_range("00000000", "20030430"), "StudyDate -20030430");
    assert_eq!(dated("StudyDate=20040826"), in_range("20040826", "20040826"), "StudyDate 20040826");
    let on_0826 = in_range("20040826", "20040826");
    assert_eq!(study_query(&["StudyDate=20040826", "StudyTime=180000-190000"]), on_0826, "StudyTime 180000-190000");
    assert!(study_query(&["StudyDate=20040826", "StudyTime=-120000"]).is_empty(), "StudyTime -120000");

    // UID list.
    assert_eq!(
        study_query(&[&format!("StudyInstanceUID={CT_SMALL_STUDY}\\{MR_SMALL_STUDY}")]),
        set([CT_SMALL_STUDY, MR_SMALL_STUDY]),
        "a list of two Study Instance UIDs"
    );

    // ModalitiesInStudy matching.
    let with_mr: BTreeSet<String> =
        study_modalities.iter().filter(|(_, m)| m.contains("MR")).map(|(uid, _)| uid.to_string()).collect();
    assert!(with_mr.len() >= 2, "{with_mr:?}");
    assert_eq!(study_query(&["ModalitiesInStudy=MR"]), with_mr, "ModalitiesInStudy=MR");

    // SOPClassesInStudy, RetrieveAETitle, InstanceAvailability (decoded by pydicom: DCMTK prints UIDs by name).
    let computed = findscu_extract(
        &server,
        &[
            "QueryRetrieveLevel=STUDY",
            &format!("StudyInstanceUID={MR_SMALL_STUDY}\\{LESTRADE_STUDY}"),
            "SOPClassesInStudy=",
            "RetrieveAETitle=",
            "InstanceAvailability=",
            "NumberOfStudyRelatedInstances=",
        ],
    );
    assert_eq!(computed.len(), 2, "{computed:?}");
    for response in &computed {
        let expected_class =
            if response["StudyInstanceUID"] == MR_SMALL_STUDY { MR_IMAGE_STORAGE } else { SC_IMAGE_STORAGE };
        assert_eq!(response.get("SOPClassesInStudy").map(String::as_str), Some(expected_class), "{response:?}");
        assert_eq!(response.get("RetrieveAETitle").map(String::as_str), Some("HANEUL"), "{response:?}");
        assert_eq!(response.get("InstanceAvailability").map(String::as_str), Some("ONLINE"), "{response:?}");
    }
}

/// Korean names: matching per component group, case-insensitively for
/// Latin letters, `?` as one character; answers in a character set that
/// carries them (the query's when it can).
#[test]
fn finds_korean_names() {
    finds_korean_names_on(Server::start());
}

/// The same answers from a PostgreSQL catalog: one set of rules whatever the engine.
#[test]
fn finds_korean_names_with_a_postgres_catalog() {
    let database = haneul_catalog::testing::TestDatabase::create();
    finds_korean_names_on(Server::start_with(&common::postgres_catalog(&database)));
}

fn finds_korean_names_on(server: Server) {
    let charsets = pydicom_data().join("charset_files");
    let files: Vec<PathBuf> =
        ["chrI2.dcm", "chrKoreanMulti.dcm", "chrH31.dcm", "chrX1.dcm", "chrFren.dcm"].map(|f| charsets.join(f)).into();
    let output = storescu(&server, &["-xe"], &files.iter().map(PathBuf::as_path).collect::<Vec<_>>());
    assert!(output.status.success(), "storing the charset samples failed:\n{}", text(&output));

    const HONG: &str = "Hong^Gildong=洪^吉洞=홍^길동";
    const KIM: &str = "김희중";
    const FREN: &str = "Buc^Jérôme";
    const UTF8: Option<&str> = Some("ISO_IR 192");
    const LATIN1: Option<&str> = Some("ISO_IR 100");
    const KOREAN: Option<&str> = Some("\\ISO 2022 IR 149");
    // 홍* and 김* in ISO 2022 IR 149: KS X 1001 after ESC $ ) C.
    let hong_149: &[u8] = b"\x1b$)C\xc8\xab*";
    let kim_149: &[u8] = b"\x1b$)C\xb1\xe8*";
    // (query character set, PatientName query, the name found or none, the answer's character set)
    type Case<'a> = (Option<&'a str>, &'a [u8], Option<&'a str>, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (UTF8, "홍*".as_bytes(), Some(HONG), UTF8),
        (UTF8, b"Hong*", Some(HONG), UTF8),
        (UTF8, b"hong*", Some(HONG), UTF8),
        (UTF8, b"HONG^GILDONG", Some(HONG), UTF8),
        (UTF8, "=洪*".as_bytes(), Some(HONG), UTF8),
        (UTF8, "김*".as_bytes(), Some(KIM), UTF8),
        // `?` is one character, however many bytes it takes.
        (UTF8, "홍^길?".as_bytes(), Some(HONG), UTF8),
        (UTF8, "洪^吉?".as_bytes(), Some(HONG), UTF8),
        (UTF8, "김희?".as_bytes(), Some(KIM), UTF8),
        (UTF8, "?희중".as_bytes(), Some(KIM), UTF8),
        (UTF8, "홍^?".as_bytes(), None, None),
        (UTF8, "김?".as_bytes(), None, None),
        (UTF8, "홍길*".as_bytes(), None, None),
        (UTF8, b"Kim*", None, None),
        // No character set in the query: the default repertoire cannot carry Hangul.
        (None, b"Hong*", Some(HONG), UTF8),
        // ISO_IR 100 carries Buc^Jérôme, not Hangul.
        (LATIN1, b"Buc*", Some(FREN), LATIN1),
        (LATIN1, b"Hong*", Some(HONG), UTF8),
        // The names' own ISO 2022 character set, for the query and the answer.
        (KOREAN, hong_149, Some(HONG), KOREAN),
        (KOREAN, kim_149, Some(KIM), KOREAN),
        (KOREAN, b"Hong*", Some(HONG), KOREAN),
    ];
    let queries: Vec<Vec<OsString>> = cases
        .iter()
        .map(|(charset, name, _, _)| {
            let mut keys = vec![
                OsString::from("QueryRetrieveLevel=STUDY"),
                OsString::from_vec([&b"PatientName="[..], name].concat()),
                OsString::from("StudyInstanceUID="),
            ];
            keys.extend(charset.map(|c| OsString::from(format!("SpecificCharacterSet={c}"))));
            keys
        })
        .collect();
    let answers = findscu_extract_all(&server, &queries);
    for ((charset, name, expected, answer_charset), responses) in cases.iter().zip(&answers) {
        let query = format!("PatientName={} in {charset:?}", String::from_utf8_lossy(name));
        let Some(expected) = expected else {
            assert!(responses.is_empty(), "{query} should match nothing: {responses:?}");
            continue;
        };
        assert_eq!(responses.len(), 1, "{query} should match one study: {responses:?}");
        assert_eq!(responses[0].get("PatientName").map(String::as_str), Some(*expected), "{query}");
        assert_eq!(
            responses[0].get("SpecificCharacterSet").map(String::as_str),
            *answer_charset,
            "{query}: the answer's character set"
        );
    }
}

/// C-MOVE to a storescp at IMAGE and STUDY level: the peer receives the
/// stored bytes; an unknown destination is refused with A801.
#[test]
fn moves_to_storescp() {
    let port = free_port();
    let server =
        Server::start_with(&format!("[[known_ae]]\ntitle = \"MOVEDEST\"\nhost = \"127.0.0.1\"\nport = {port}\n"));
    let samples = catalogue();
    // The Lestrade^G study: one file per instance (the last by name, which
    // gives the most transfer syntaxes: RLE, big endian, JPEG, JPEG 2000...).
    let mut study = unique_by_uid(
        &samples
            .iter()
            .rev()
            .filter(|s| s.study_uid == LESTRADE_STUDY && !REFUSED_BY_STORESCU.contains(&s.name()))
            .cloned()
            .collect::<Vec<_>>(),
    );
    study.reverse();
    assert_eq!(study.len(), 12);
    let syntaxes: BTreeSet<&str> = study.iter().map(|s| s.ts.as_str()).collect();
    assert!(syntaxes.len() >= 5, "{syntaxes:?}");
    for s in &study {
        let output = storescu(&server, &[propose_option(&s.ts)], &[&s.path]);
        assert!(output.status.success(), "storing {} failed:\n{}", s.name(), text(&output));
    }

    let peer_dir = tempfile::tempdir().expect("temporary directory");
    let received = peer_dir.path().join("received");
    std::fs::create_dir(&received).expect("output directory");
    let _storescp = start_storescp(port, &received, peer_dir.path());

    // IMAGE level: one instance of the series, nothing else.
    let one = study.iter().find(|s| s.ts == "1.2.840.10008.1.2.2").expect("a big endian instance");
    let output = movescu(
        &server,
        "MOVEDEST",
        &[
            "QueryRetrieveLevel=IMAGE",
            &format!("StudyInstanceUID={}", one.study_uid),
            &format!("SeriesInstanceUID={}", one.series_uid),
            &format!("SOPInstanceUID={}", one.sop_uid),
        ],
        false,
    );
    assert!(output.status.success(), "IMAGE-level C-MOVE failed:\n{}", text(&output));
    assert!(text(&output).contains("Received Final Move Response (Success)"), "{}", text(&output));
    check_received(&server, &files_under(&received), std::slice::from_ref(one));

    // STUDY level: all twelve, each in the transfer syntax it was stored in.
    let before: BTreeSet<PathBuf> = files_under(&received).into_iter().collect();
    let output = movescu(
        &server,
        "MOVEDEST",
        &["QueryRetrieveLevel=STUDY", &format!("StudyInstanceUID={LESTRADE_STUDY}")],
        false,
    );
    assert!(output.status.success(), "STUDY-level C-MOVE failed:\n{}", text(&output));
    assert!(text(&output).contains("Received Final Move Response (Success)"), "{}", text(&output));
    let new_files = || -> Vec<PathBuf> { files_under(&received).into_iter().filter(|p| !before.contains(p)).collect() };
    // storescp writes each file before answering its C-STORE; the poll only bounds a slow disk.
    let arrived = wait_until(Duration::from_secs(5), || new_files().len() >= study.len());
    assert!(arrived, "storescp received {} of {} files", new_files().len(), study.len());
    check_received(&server, &new_files(), &study);

    // An unknown destination: refused with A801, nothing sent.
    let output =
        movescu(&server, "NOWHERE", &["QueryRetrieveLevel=STUDY", &format!("StudyInstanceUID={LESTRADE_STUDY}")], true);
    assert!(!output.status.success(), "movescu must report the refusal:\n{}", text(&output));
    assert_eq!(dimse_statuses(&text(&output)), vec![0xA801], "C-MOVE to NOWHERE:\n{}", text(&output));
}

/// C-GET with getscu: the study comes back on the same association, byte for byte.
#[test]
fn gets_with_getscu() {
    let server = Server::start();
    let samples = catalogue();
    // getscu offers one transfer syntax per storage SOP class: a study stored in JPEG Baseline.
    let study: Vec<Sample> = unique_by_uid(
        &samples.iter().filter(|s| s.study_uid == LESTRADE_STUDY && s.ts == JPEG_BASELINE).cloned().collect::<Vec<_>>(),
    );
    assert!(study.len() >= 5, "{study:?}");
    let files: Vec<&Path> = study.iter().map(|s| s.path.as_path()).collect();
    let output = storescu(&server, &["-xy"], &files);
    assert!(output.status.success(), "storing the JPEG study failed:\n{}", text(&output));
    // Another study (not JPEG) that must not come back.
    let ct = pydicom_data().join("test_files/CT_small.dcm");
    assert!(storescu(&server, &[], &[&ct]).status.success());

    let dir = tempfile::tempdir().expect("temporary directory");
    let mut command = dcmtk("getscu");
    command
        .args(["-v", "-S", "+xy", "+B", "-aec", "HANEUL", "-od"])
        .arg(dir.path())
        .args(["-k", "QueryRetrieveLevel=STUDY", "-k", &format!("StudyInstanceUID={LESTRADE_STUDY}")])
        .arg("127.0.0.1")
        .arg(server.dicom_port.to_string());
    let output = run(&mut command);
    assert!(output.status.success(), "getscu failed:\n{}", text(&output));
    let log = text(&output);
    assert!(log.contains("Received C-GET Response (Success)"), "C-GET did not end in success:\n{log}");
    assert!(log.contains(&format!("Number of Completed Suboperations : {}", study.len())), "{log}");
    assert!(log.contains("Number of Failed Suboperations    : 0"), "{log}");
    check_received(&server, &files_under(dir.path()), &study);
}

/// A wrong called AE title is rejected at association time, and the archive says so.
#[test]
fn rejects_a_wrong_called_ae_title() {
    let server = Server::start();
    let port = server.dicom_port.to_string();
    let output = run(dcmtk("echoscu").args(["-v", "-aet", "INTRUDER", "-aec", "WRONG", "127.0.0.1", &port]));
    assert!(!output.status.success(), "C-ECHO to WRONG must fail");
    assert!(text(&output).contains("Association Rejected"), "{}", text(&output));
    assert!(text(&output).contains("Called AE Title Not Recognized"), "{}", text(&output));
    let logged = wait_until(Duration::from_secs(5), || {
        let log = server.log().to_lowercase();
        log.contains("reject") && log.contains("wrong")
    });
    assert!(logged, "the server log does not mention the rejection:\n{}", server.log());

    let output = run(dcmtk("echoscu").args(["-aec", "HANEUL", "127.0.0.1", &port]));
    assert!(output.status.success(), "the right called AE title is still accepted");
}

/// Storing the same file twice: two successes, one instance.
#[test]
fn storing_the_same_file_twice_is_idempotent() {
    let server = Server::start();
    let ct = pydicom_data().join("test_files/CT_small.dcm");
    for attempt in 1..=2 {
        let output = storescu(&server, &["-v"], &[&ct]);
        assert!(output.status.success(), "attempt {attempt} failed:\n{}", text(&output));
        assert!(text(&output).contains("Received Store Response (Success)"), "attempt {attempt}:\n{}", text(&output));
    }
    let images = findscu(
        &server,
        "-S",
        &[
            "QueryRetrieveLevel=IMAGE",
            &format!("StudyInstanceUID={CT_SMALL_STUDY}"),
            &format!("SeriesInstanceUID={CT_SMALL_SERIES}"),
            "SOPInstanceUID=",
        ],
    );
    assert_eq!(values(&images, "SOPInstanceUID"), set([CT_SMALL_INSTANCE]));
    assert_eq!(images.len(), 1, "{images:?}");
    let studies = findscu(
        &server,
        "-S",
        &["QueryRetrieveLevel=STUDY", &format!("StudyInstanceUID={CT_SMALL_STUDY}"), "NumberOfStudyRelatedInstances="],
    );
    assert_eq!(studies.len(), 1);
    assert_eq!(studies[0]["NumberOfStudyRelatedInstances"], "1");
    let scratch = tempfile::tempdir().expect("tempdir");
    let blobs = blobs_by_uid(&server, scratch.path());
    assert_eq!(blobs.get(CT_SMALL_INSTANCE).map(Vec::len), Some(1), "one blob for the instance: {blobs:?}");
}
