//! The command-line tools: `haneul import`, `haneul verify`, `haneul
//! check-config`, `haneul serve` refusing a bad configuration, and what `haneul
//! bench find` reports.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{files_under, free_port, haneul_bin, pydicom_data, python, run, Server};

fn haneul() -> Command {
    Command::new(haneul_bin())
}

fn text(output: &Output) -> (String, String) {
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

fn import(data_dir: &Path, extra_args: &[&str], paths: &[&Path]) -> Output {
    run(haneul().arg("import").arg("--data").arg(data_dir).args(extra_args).args(paths))
}

/// The summary `haneul import` prints.
#[derive(Debug, Default)]
struct Summary {
    stored: usize,
    stored_bytes: u64,
    already_stored: usize,
    duplicates_kept_first: usize,
    replaced: usize,
    rejected: usize,
    failed: usize,
    /// (count, reason, paths listed, "… and N more")
    reasons: Vec<(usize, String, Vec<String>, usize)>,
}

impl Summary {
    fn total(&self) -> usize {
        self.stored + self.already_stored + self.duplicates_kept_first + self.replaced + self.rejected + self.failed
    }

    fn rejected_paths(&self) -> BTreeMap<String, String> {
        self.reasons
            .iter()
            .flat_map(|(_, reason, paths, _)| paths.iter().map(move |path| (path.clone(), reason.clone())))
            .collect()
    }
}

fn parse_summary(stdout: &str) -> Summary {
    let number = |line: &str| -> usize {
        let value = line.split_once(':').expect("a colon").1.split_whitespace().next().expect("a number");
        value.parse().unwrap_or_else(|_| panic!("not a count in {line:?}"))
    };
    let mut summary = Summary::default();
    let mut seen = BTreeSet::new();
    for line in stdout.lines() {
        if line.starts_with("stored:") {
            summary.stored = number(line);
            let bytes = line.split_once('(').and_then(|(_, rest)| rest.split_whitespace().next());
            summary.stored_bytes = bytes.and_then(|b| b.parse().ok()).unwrap_or_else(|| panic!("no bytes in {line:?}"));
        } else if line.starts_with("already stored (same):") {
            summary.already_stored = number(line);
        } else if line.starts_with("duplicates, first kept:") {
            summary.duplicates_kept_first = number(line);
        } else if line.starts_with("replaced older copies:") {
            summary.replaced = number(line);
        } else if line.starts_with("rejected:") {
            summary.rejected = number(line);
        } else if line.starts_with("failed:") {
            summary.failed = number(line);
        } else if let Some((count, reason)) = line.strip_prefix("  ").and_then(|rest| rest.split_once(" × ")) {
            let count = count.trim().parse().unwrap_or_else(|_| panic!("bad reason line {line:?}"));
            summary.reasons.push((count, reason.to_string(), Vec::new(), 0));
            continue;
        } else if let Some(item) = line.strip_prefix("      ") {
            let (_, _, paths, more) =
                summary.reasons.last_mut().unwrap_or_else(|| panic!("path before reason: {line:?}"));
            match item.strip_prefix("… and ").and_then(|rest| rest.strip_suffix(" more")) {
                Some(count) => *more = count.parse().expect("count of more"),
                None => paths.push(item.to_string()),
            }
            continue;
        } else {
            continue;
        }
        let key = line.split(':').next().unwrap_or_default().to_string();
        assert!(seen.insert(key.clone()), "summary line {key:?} printed twice:\n{stdout}");
    }
    for key in ["stored", "already stored (same)", "duplicates, first kept", "rejected"] {
        assert!(seen.contains(key), "summary has no {key:?} line:\n{stdout}");
    }
    summary
}

fn count_files(paths: &[&Path]) -> usize {
    paths.iter().map(|path| files_under(path).len()).sum()
}

/// Relative paths of the files under blobs/.
fn blob_files(data_dir: &Path) -> BTreeSet<String> {
    let root = data_dir.join("blobs");
    if !root.exists() {
        return BTreeSet::new();
    }
    files_under(&root)
        .into_iter()
        .map(|path| path.strip_prefix(&root).expect("under blobs").to_string_lossy().into_owned())
        .collect()
}

/// Relative paths of the non-empty files under blobs/: what stores wrote.
/// (Empty ones are files pre-created for stores that never came; see
/// `a_finished_import_leaves_only_referenced_files` for those.)
fn blob_files_with_content(data_dir: &Path) -> BTreeSet<String> {
    let root = data_dir.join("blobs");
    blob_files(data_dir)
        .into_iter()
        .filter(|path| std::fs::metadata(root.join(path)).map(|m| m.len() > 0).unwrap_or(false))
        .collect()
}

/// SOP Instance UID -> blob path.
fn catalog(data_dir: &Path) -> BTreeMap<String, String> {
    let script = "import json, sqlite3, sys\n\
                  db = sqlite3.connect(sys.argv[1])\n\
                  print(json.dumps(db.execute('SELECT sop_uid, blob_path FROM instances').fetchall()))\n";
    let output = run(Command::new(python()).arg("-c").arg(script).arg(data_dir.join("catalog.sqlite")));
    assert!(output.status.success(), "reading the catalog failed");
    let rows: Vec<(String, String)> = serde_json::from_slice(&output.stdout).expect("catalog rows");
    rows.into_iter().collect()
}

fn superseded(data_dir: &Path) -> Vec<(String, String)> {
    let script = "import json, sqlite3, sys\n\
                  db = sqlite3.connect(sys.argv[1])\n\
                  print(json.dumps(db.execute('SELECT sop_uid, blob_path FROM superseded').fetchall()))\n";
    let output = run(Command::new(python()).arg("-c").arg(script).arg(data_dir.join("catalog.sqlite")));
    assert!(output.status.success(), "reading the catalog failed");
    serde_json::from_slice(&output.stdout).expect("superseded rows")
}

fn verify_json(data_dir: &Path) -> (bool, serde_json::Value) {
    let output = run(haneul().arg("verify").arg("--data").arg(data_dir).arg("--json"));
    let report = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("verify --json printed no JSON ({error}): {:?}", text(&output)));
    (output.status.success(), report)
}

/// Instances written by pydicom: name -> (path, SOP Instance UID). "a" and
/// "a_changed" share their SOP Instance UID but differ in content.
const GENERATE: &str = r#"
import json, os, sys
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
made = {}

def make(name, uid, patient):
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = uid
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.9.9999.20.1"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.9.9999.20.1.1"
    ds.PatientName = patient
    ds.PatientID = "CLI"
    ds.Modality = "OT"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 32
    ds.Columns = 32
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(range(256)) * 4
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = os.path.join(out, name + ".dcm")
    ds.save_as(path, enforce_file_format=True)
    made[name] = [path, uid]

shared = generate_uid()
make("a", shared, "First^Copy")
make("a_changed", shared, "Second^Copy")
for n in range(4):
    make("other%d" % n, generate_uid(), "Other^%d" % n)
print(json.dumps(made))
"#;

struct Generated(serde_json::Value);

impl Generated {
    fn new(dir: &Path) -> Generated {
        let output = run(Command::new(python()).arg("-c").arg(GENERATE).arg(dir));
        assert!(output.status.success(), "generating instances failed");
        Generated(serde_json::from_slice(&output.stdout).expect("generator JSON"))
    }

    fn path(&self, name: &str) -> PathBuf {
        PathBuf::from(self.0[name][0].as_str().expect("path"))
    }

    fn uid(&self, name: &str) -> String {
        self.0[name][1].as_str().expect("uid").to_string()
    }
}

// ---------------------------------------------------------------------------
// import

#[test]
fn import_of_pydicom_samples_accounts_for_every_file() {
    let work = tempfile::tempdir().expect("tempdir");
    let data = work.path().join("data");
    let samples = pydicom_data();
    let extra = work.path().join("extra");
    std::fs::create_dir_all(&extra).expect("mkdir");
    std::fs::write(extra.join("README.txt"), "Not DICOM, just notes about the scans.\n").expect("write");
    let test_files = samples.join("test_files");
    let charset_files = samples.join("charset_files");
    let inputs: [&Path; 3] = [&test_files, &charset_files, &extra];
    let files = count_files(&inputs);

    let first = import(&data, &[], &inputs);
    let (stdout, stderr) = text(&first);
    assert!(first.status.success(), "import failed:\n{stdout}\n{stderr}");
    let summary = parse_summary(&stdout);
    assert_eq!(summary.total(), files, "summary does not add up to the {files} files given:\n{stdout}");
    assert_eq!(summary.failed, 0, "{stdout}");
    assert!(summary.stored > 100, "{stdout}");
    assert!(summary.rejected > 0, "{stdout}");
    let listed_count: usize = summary.reasons.iter().map(|(count, _, _, _)| count).sum();
    assert_eq!(listed_count, summary.rejected, "rejection reasons do not add up:\n{stdout}");
    for (count, reason, paths, more) in &summary.reasons {
        assert!(!reason.trim().is_empty(), "a rejection without a reason:\n{stdout}");
        assert_eq!(paths.len() + more, *count, "paths of {reason:?} do not add up:\n{stdout}");
        for path in paths {
            assert!(Path::new(path).is_file(), "{path} listed as rejected is not an input file");
        }
    }
    assert!(
        summary.reasons.iter().any(|(_, reason, _, _)| reason.contains("not a DICOM file")),
        "no non-DICOM file reported:\n{stdout}"
    );
    // Exactly the stored instances are on disk.
    let rows = catalog(&data);
    assert_eq!(rows.len(), summary.stored, "{stdout}");
    let referenced: BTreeSet<String> = rows.values().cloned().collect();
    assert_eq!(blob_files_with_content(&data), referenced, "blob files vs catalog after import");

    // Again, strict: nothing new, everything already there or a duplicate, exit 1 for the rejections.
    let second = import(&data, &["--strict"], &inputs);
    let (stdout2, _) = text(&second);
    assert_eq!(second.status.code(), Some(1), "--strict with rejected files must exit 1:\n{stdout2}");
    let again = parse_summary(&stdout2);
    assert_eq!(again.total(), files, "{stdout2}");
    assert_eq!(again.stored, 0, "second import stored something new:\n{stdout2}");
    assert_eq!(again.replaced, 0, "{stdout2}");
    assert_eq!(
        again.already_stored + again.duplicates_kept_first,
        summary.stored + summary.already_stored + summary.duplicates_kept_first,
        "{stdout2}"
    );
    assert_eq!(again.rejected, summary.rejected, "{stdout2}");
    assert_eq!(catalog(&data), rows, "the catalog changed on the second import");
    assert_eq!(blob_files_with_content(&data), referenced, "blob files changed on the second import");
    let (clean, report) = verify_json(&data);
    assert!(clean, "verify after import: {report}");
    assert_eq!(report["instances_checked"], rows.len());
}

#[test]
fn import_lists_each_rejected_file_with_its_reason() {
    let work = tempfile::tempdir().expect("tempdir");
    let data = work.path().join("data");
    let generated = Generated::new(&work.path().join("in"));
    let input = work.path().join("in");
    std::fs::write(input.join("README.txt"), "Not DICOM.\n").expect("write");
    let good = std::fs::read(generated.path("other0")).expect("read");
    std::fs::write(input.join("truncated.dcm"), &good[..good.len() - 100]).expect("write");
    std::fs::write(input.join("empty.dcm"), b"").expect("write");

    let output = import(&data, &[], &[&input]);
    let (stdout, _) = text(&output);
    assert!(output.status.success(), "{stdout}");
    let summary = parse_summary(&stdout);
    assert_eq!(summary.total(), 9, "{stdout}");
    assert_eq!(summary.rejected, 3, "{stdout}");
    let rejected = summary.rejected_paths();
    for name in ["README.txt", "truncated.dcm", "empty.dcm"] {
        let path = input.join(name).display().to_string();
        let reason = rejected.get(&path).unwrap_or_else(|| panic!("{path} not listed as rejected:\n{stdout}"));
        assert!(!reason.is_empty());
    }
    assert!(rejected[&input.join("truncated.dcm").display().to_string()].contains("truncated"), "{stdout}");

    let strict = import(&data, &["--strict"], &[&input.join("README.txt")]);
    assert_eq!(strict.status.code(), Some(1), "--strict with a rejected file must exit 1");
    let clean = import(&data, &["--strict"], &[&generated.path("other1")]);
    assert_eq!(clean.status.code(), Some(0), "--strict without rejections must exit 0");
}

#[test]
fn import_summary_counts_the_bytes_it_stored() {
    let work = tempfile::tempdir().expect("tempdir");
    let data = work.path().join("data");
    let generated = Generated::new(&work.path().join("in"));
    let input = work.path().join("in");
    // Six files: five instances and one same-UID, different-content copy.
    let first = parse_summary(&text(&import(&data, &[], &[&input])).0);
    assert_eq!((first.stored, first.duplicates_kept_first), (5, 1), "{first:?}");
    let (_, report) = verify_json(&data);
    assert_eq!(
        first.stored_bytes, report["bytes_checked"],
        "the stored line's byte count is not the size of what was stored ({report})"
    );
    let second = parse_summary(&text(&import(&data, &[], &[&generated.path("other0")])).0);
    assert_eq!((second.stored, second.already_stored), (0, 1));
    assert_eq!(second.stored_bytes, 0, "nothing was stored, yet the summary reports bytes stored");
}

/// Blob files are created ahead of use; a clean exit must delete the unused
/// ones. Left behind, they are reported by `haneul verify` as unreferenced
/// once their hour is over, and the next start removes them as "left by an
/// interrupted store".
#[test]
fn a_finished_import_leaves_only_referenced_files() {
    let work = tempfile::tempdir().expect("tempdir");
    let ct = pydicom_data().join("test_files/CT_small.dcm");
    let mut strays = Vec::new();
    for attempt in 0..10 {
        let data = work.path().join(format!("data{attempt}"));
        let output = import(&data, &[], &[&ct]);
        assert!(output.status.success());
        let referenced: BTreeSet<String> = catalog(&data).into_values().collect();
        assert_eq!(referenced.len(), 1);
        let left: Vec<String> = blob_files(&data).difference(&referenced).cloned().collect();
        if !left.is_empty() {
            strays.push(format!("import {attempt}: {} unreferenced files, e.g. {}", left.len(), left[0]));
        }
    }
    assert!(strays.is_empty(), "imports that exited 0 left unreferenced blob files:\n{}", strays.join("\n"));
}

#[test]
fn import_refuses_a_data_directory_in_use_by_a_server() {
    let mut server = Server::start();
    let ct = pydicom_data().join("test_files/CT_small.dcm");
    let output = import(&server.data_dir(), &[], &[&ct]);
    let (stdout, stderr) = text(&output);
    assert!(!output.status.success(), "import into a served data directory succeeded:\n{stdout}");
    let message = stderr.to_lowercase();
    assert!(
        message.contains("another") || message.contains("lock"),
        "the error does not say the directory is in use:\n{stderr}"
    );
    assert!(catalog(&server.data_dir()).is_empty(), "something was stored anyway");
    server.stop();
    let output = import(&server.data_dir(), &[], &[&ct]);
    assert!(output.status.success(), "import after the server stopped failed");
    assert_eq!(parse_summary(&text(&output).0).stored, 1);
}

// ---------------------------------------------------------------------------
// verify

#[test]
fn verify_reports_damaged_missing_and_stray_files() {
    let work = tempfile::tempdir().expect("tempdir");
    let data = work.path().join("data");
    let generated = Generated::new(&work.path().join("in"));
    let names = ["a", "other0", "other1", "other2", "other3"];
    let paths: Vec<PathBuf> = names.iter().map(|name| generated.path(name)).collect();
    let path_refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let output = import(&data, &[], &path_refs);
    assert_eq!(parse_summary(&text(&output).0).stored, 5);

    let (clean, report) = verify_json(&data);
    assert!(clean, "verify after import: {report}");
    assert_eq!(report["instances_checked"], 5);
    assert_eq!(report["problems"], serde_json::json!([]));
    let plain = run(haneul().arg("verify").arg("--data").arg(&data));
    assert!(plain.status.success());

    let rows = catalog(&data);
    let blobs = data.join("blobs");
    // One flipped byte.
    let flipped_uid = generated.uid("other0");
    let flipped = blobs.join(&rows[&flipped_uid]);
    let mut bytes = std::fs::read(&flipped).expect("read blob");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&flipped, &bytes).expect("write blob");
    // One truncated file.
    let truncated_uid = generated.uid("other1");
    let truncated = blobs.join(&rows[&truncated_uid]);
    let bytes = std::fs::read(&truncated).expect("read blob");
    std::fs::write(&truncated, &bytes[..bytes.len() - 1]).expect("write blob");
    // One deleted file.
    let deleted_uid = generated.uid("other2");
    std::fs::remove_file(blobs.join(&rows[&deleted_uid])).expect("delete blob");
    // One stray file in an old shard.
    std::fs::create_dir_all(blobs.join("2001/01/01/00")).expect("mkdir");
    std::fs::copy(generated.path("other3"), blobs.join("2001/01/01/00/x.dcm")).expect("stray file");

    let (clean, report) = verify_json(&data);
    assert!(!clean, "verify exited 0 with damage: {report}");
    let expected = serde_json::json!([
        {"problem": "digest-mismatch", "sop_instance_uid": flipped_uid, "path": rows[&flipped_uid]},
        {"problem": "digest-mismatch", "sop_instance_uid": truncated_uid, "path": rows[&truncated_uid]},
        {"problem": "missing-blob", "sop_instance_uid": deleted_uid, "path": rows[&deleted_uid]},
        {"problem": "unreferenced", "path": "2001/01/01/00/x.dcm"},
    ]);
    let mut problems = report["problems"].as_array().expect("problems").clone();
    problems.sort_by_key(|problem| (problem["problem"].to_string(), problem["sop_instance_uid"].to_string()));
    let mut expected = expected.as_array().expect("array").clone();
    expected.sort_by_key(|problem| (problem["problem"].to_string(), problem["sop_instance_uid"].to_string()));
    assert_eq!(problems, expected, "verify report: {report}");

    let plain = run(haneul().arg("verify").arg("--data").arg(&data));
    let (stdout, _) = text(&plain);
    assert_eq!(plain.status.code(), Some(1), "{stdout}");
    for needle in [flipped_uid.as_str(), truncated_uid.as_str(), deleted_uid.as_str(), "2001/01/01/00/x.dcm"] {
        assert!(stdout.contains(needle), "{needle} not in the verify report:\n{stdout}");
    }
}

#[test]
fn verify_without_an_archive_fails_clearly() {
    let work = tempfile::tempdir().expect("tempdir");
    let output = run(haneul().arg("verify").arg("--data").arg(work.path().join("nothing-here")));
    let (_, stderr) = text(&output);
    assert!(!output.status.success());
    assert!(stderr.contains("catalog"), "{stderr}");
}

// ---------------------------------------------------------------------------
// Duplicate policies

fn config_with_policy(dir: &Path, policy: &str) -> PathBuf {
    let path = dir.join(format!("{policy}.toml"));
    std::fs::write(&path, format!("[storage]\nduplicate_policy = \"{policy}\"\n")).expect("write config");
    path
}

fn import_with(config: &Path, data: &Path, extra_args: &[&str], path: &Path) -> (Output, Summary) {
    let output =
        run(haneul().arg("import").arg("--config").arg(config).arg("--data").arg(data).args(extra_args).arg(path));
    let summary = parse_summary(&text(&output).0);
    (output, summary)
}

#[test]
fn duplicate_policy_keep_first_keeps_the_first_copy() {
    let work = tempfile::tempdir().expect("tempdir");
    let generated = Generated::new(&work.path().join("in"));
    let data = work.path().join("data");
    let config = config_with_policy(work.path(), "keep-first");
    let uid = generated.uid("a");
    let (_, first) = import_with(&config, &data, &[], &generated.path("a"));
    assert_eq!(first.stored, 1);
    let before = catalog(&data);
    let (output, second) = import_with(&config, &data, &[], &generated.path("a_changed"));
    assert!(output.status.success());
    assert_eq!(second.duplicates_kept_first, 1, "{second:?}");
    assert_eq!(catalog(&data), before);
    let blob = std::fs::read(data.join("blobs").join(&before[&uid])).expect("read blob");
    assert_eq!(blob, std::fs::read(generated.path("a")).expect("read"), "the first copy was not kept");
    assert_eq!(blob_files_with_content(&data).len(), 1, "the refused copy left a file");
}

#[test]
fn duplicate_policy_reject_refuses_a_different_copy() {
    let work = tempfile::tempdir().expect("tempdir");
    let generated = Generated::new(&work.path().join("in"));
    let data = work.path().join("data");
    let config = config_with_policy(work.path(), "reject");
    let uid = generated.uid("a");
    let (_, first) = import_with(&config, &data, &[], &generated.path("a"));
    assert_eq!(first.stored, 1);
    let before = catalog(&data);

    let (output, second) = import_with(&config, &data, &[], &generated.path("a_changed"));
    assert!(output.status.success(), "without --strict a rejection is not a failure");
    assert_eq!((second.stored, second.rejected, second.duplicates_kept_first), (0, 1, 0), "{second:?}");
    let rejected = second.rejected_paths();
    assert!(
        rejected.contains_key(&generated.path("a_changed").display().to_string()),
        "the refused copy is not listed: {second:?}"
    );
    let (output, _) = import_with(&config, &data, &["--strict"], &generated.path("a_changed"));
    assert_eq!(output.status.code(), Some(1), "--strict must fail on a refused duplicate");

    // An identical copy is not a conflict.
    let (output, same) = import_with(&config, &data, &["--strict"], &generated.path("a"));
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(same.already_stored, 1);

    assert_eq!(catalog(&data), before, "the catalog changed");
    let blob = std::fs::read(data.join("blobs").join(&before[&uid])).expect("read blob");
    assert_eq!(blob, std::fs::read(generated.path("a")).expect("read"), "the stored copy changed");
    assert_eq!(blob_files_with_content(&data).len(), 1, "refused copies left files behind");
    let (clean, report) = verify_json(&data);
    assert!(clean, "{report}");
}

#[test]
fn duplicate_policy_replace_makes_the_new_copy_current_and_keeps_the_old_file() {
    let work = tempfile::tempdir().expect("tempdir");
    let generated = Generated::new(&work.path().join("in"));
    let data = work.path().join("data");
    let config = config_with_policy(work.path(), "replace");
    let uid = generated.uid("a");
    let (_, first) = import_with(&config, &data, &[], &generated.path("a"));
    assert_eq!(first.stored, 1);
    let old_path = catalog(&data)[&uid].clone();

    let (output, second) = import_with(&config, &data, &["--strict"], &generated.path("a_changed"));
    assert!(output.status.success(), "{second:?}");
    assert_eq!((second.replaced, second.stored, second.rejected), (1, 0, 0), "{second:?}");
    let new_path = catalog(&data)[&uid].clone();
    assert_ne!(new_path, old_path, "the catalog still points at the old copy");
    let blobs = data.join("blobs");
    assert_eq!(
        std::fs::read(blobs.join(&new_path)).expect("new blob"),
        std::fs::read(generated.path("a_changed")).unwrap()
    );
    assert_eq!(
        std::fs::read(blobs.join(&old_path)).expect("the old copy's file is gone"),
        std::fs::read(generated.path("a")).unwrap()
    );
    assert_eq!(superseded(&data), vec![(uid.clone(), old_path.clone())]);

    // Re-opening the archive (start-up recovery) keeps the superseded file, and verify is content.
    let (_, third) = import_with(&config, &data, &[], &generated.path("other0"));
    assert_eq!(third.stored, 1);
    assert!(blobs.join(&old_path).is_file(), "start-up recovery deleted the superseded copy");
    let (clean, report) = verify_json(&data);
    assert!(clean, "{report}");
    assert_eq!(
        blob_files_with_content(&data),
        [old_path, new_path, catalog(&data)[&generated.uid("other0")].clone()].into()
    );
}

// ---------------------------------------------------------------------------
// Configuration

/// Bad configurations and the key their error must name.
const BAD_CONFIGS: &[(&str, &str)] = &[
    ("[dicom]\nae_tittle = \"HANEUL\"\n", "ae_tittle"),
    ("colour = \"blue\"\n", "colour"),
    ("[storage]\ndata_dri = \"/tmp/x\"\n", "data_dri"),
    ("[[known_ae]]\ntitle = \"A\"\nhost = \"h\"\nport = 104\nportt = 105\n", "portt"),
    ("[dicom]\nae_title = \"THIS TITLE IS FAR TOO LONG\"\n", "dicom.ae_title"),
    ("[dicom]\nae_title = \"BAD\\\\AE\"\n", "dicom.ae_title"),
    ("[dicom]\nae_title = \"    \"\n", "dicom.ae_title"),
    ("[dicom]\nae_title = \"\"\n", "dicom.ae_title"),
    ("[dicom]\nlisten = \"nowhere\"\n", "dicom.listen"),
    ("[dicom]\nlisten = \"127.0.0.1:99999\"\n", "dicom.listen"),
    ("[dicom]\nlisten = \"11112\"\n", "dicom.listen"),
    ("[http]\nlisten = \"localhost\"\n", "http.listen"),
    ("[dicom]\nmax_pdu_length = 10\n", "dicom.max_pdu_length"),
    ("[dicom]\nmax_pdu_length = 100000000\n", "dicom.max_pdu_length"),
    ("[dicom]\nmax_pdu_length = \"large\"\n", "max_pdu_length"),
    ("[dicom]\nmax_dataset_bytes = 0\n", "dicom.max_dataset_bytes"),
    ("[dicom]\nidle_timeout_seconds = 0\n", "dicom.idle_timeout_seconds"),
    ("[dicom]\nmax_associations = 0\n", "dicom.max_associations"),
    ("[storage]\nduplicate_policy = \"overwrite\"\n", "duplicate_policy"),
    ("[storage]\ndata_dir = \"\"\n", "storage.data_dir"),
    ("[log]\nlevel = \"info,[\"\n", "log.level"),
    ("[[known_ae]]\ntitle = \"A\"\nhost = \"\"\nport = 104\n", "known_ae[0].host"),
    ("[dicom]\nae_title = \"HANEUL\"\n[dicom]\nlisten = \"0.0.0.0:104\"\n", "dicom"),
    ("[http]\nlisten = \"0.0.0.0:8080\"\n", "http.insecure"),
    ("[http]\nlisten = \"0.0.0.0:8080\"\ninsecure = true\nanonymous_role = \"admin\"\n", "http.anonymous_role"),
    ("[http]\nanonymous_role = \"doctor\"\n", "http.anonymous_role"),
    ("[http.sessions]\nidle_timeout_minutes = 0\n", "http.sessions.idle_timeout_minutes"),
    ("[http.oidc]\nissuer = \"https://idp\"\naudiences = [\"haneul\"]\n", "http.oidc.jwks_url"),
    (
        "[http.oidc]\nissuer = \"https://idp\"\naudiences = [\"h\"]\njwks_file = \"k.json\"\n[http.oidc.roles]\nx = \"boss\"\n",
        "http.oidc.roles.x",
    ),
    ("[[peer]]\nname = \"dr\"\nae_title = \"B\"\nhost = \"h\"\nport = 104\nmode = \"fast\"\n", "peer[0].mode"),
    ("[[peer]]\nname = \"d r\"\nae_title = \"B\"\nhost = \"h\"\nport = 104\n", "peer[0].name"),
];

#[test]
fn check_config_names_the_bad_key() {
    let work = tempfile::tempdir().expect("tempdir");
    for (index, (config, key)) in BAD_CONFIGS.iter().enumerate() {
        let path = work.path().join(format!("bad{index}.toml"));
        std::fs::write(&path, config).expect("write config");
        let output = run(haneul().arg("check-config").arg(&path));
        let (stdout, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(2), "check-config on {config:?}:\n{stdout}{stderr}");
        assert!(stderr.contains(key), "the error for {config:?} does not name {key:?}:\n{stderr}");
        assert!(!stdout.contains("valid"), "{stdout}");
    }
    let example = common::repo_root().join("haneul.example.toml");
    let output = run(haneul().arg("check-config").arg(&example));
    assert!(output.status.success(), "the documented example is refused: {:?}", text(&output));
    assert!(text(&output).0.contains("valid"));
    let output = run(haneul().arg("check-config").arg(work.path().join("missing.toml")));
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).1.contains("missing.toml"));
}

/// `haneul serve` with `args` must exit non-zero, naming `key`, without ever listening on `port`.
fn assert_serve_refuses(args: &[&str], config: &Path, port: u16, key: &str) {
    let mut child = haneul()
        .arg("serve")
        .arg("--config")
        .arg(config)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("starting haneul serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("status").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!("haneul serve kept running with {config:?} {args:?}: {:?}", text(&output));
        }
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "haneul serve listens despite the bad configuration"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    let (_, stderr) = text(&output);
    assert!(!output.status.success(), "serve exited 0");
    assert!(stderr.contains(key), "serve's error does not name {key:?}:\n{stderr}");
}

#[test]
fn serve_refuses_a_bad_configuration() {
    let work = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let base = format!(
        "[storage]\ndata_dir = {:?}\n\n[http]\nlisten = \"\"\n\n[dicom]\nlisten = \"127.0.0.1:{port}\"\n",
        work.path().join("data").display().to_string()
    );
    for (index, (extra, key)) in [
        ("ae_tittle = \"HANEUL\"\n", "ae_tittle"),
        ("ae_title = \"THIS TITLE IS FAR TOO LONG\"\n", "dicom.ae_title"),
        ("max_pdu_length = 1\n", "dicom.max_pdu_length"),
    ]
    .into_iter()
    .enumerate()
    {
        let config = work.path().join(format!("serve{index}.toml"));
        std::fs::write(&config, format!("{base}{extra}")).expect("write config");
        assert_serve_refuses(&[], &config, port, key);
    }
    // A valid file with a bad override on the command line.
    let config = work.path().join("good.toml");
    std::fs::write(&config, &base).expect("write config");
    assert_serve_refuses(&["--ae-title", "THIS TITLE IS FAR TOO LONG"], &config, port, "dicom.ae_title");
    assert!(!work.path().join("data").join("catalog.sqlite").exists(), "a refused serve created an archive");
}

/// `haneul bench find --each` writes what each query asked and how many
/// studies it got: the counts a DICOM client (DCMTK's findscu) gets for the same
/// date ranges, and the mean the summary reports.
#[test]
fn bench_find_writes_each_query_with_the_matches_a_dicom_client_gets() {
    let server = Server::start();
    let target = format!("127.0.0.1:{}", server.dicom_port);
    let stored =
        run(haneul().args(["bench", "store", "--target", &target, "--count", "200", "--per-study", "1", "--json"]));
    assert!(stored.status.success(), "bench store failed: {:?}", text(&stored));

    let each = server.dir.path().join("each.csv");
    let found = run(haneul()
        .args(["bench", "find", "--target", &target, "--pattern", "date-range", "--days", "28"])
        .args(["--queries", "24", "--json", "--each"])
        .arg(&each));
    let (stdout, stderr) = text(&found);
    assert!(found.status.success(), "bench find failed: {stderr}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    let csv = std::fs::read_to_string(&each).expect("the per-query file");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("query,matches,micros"));
    let queries: Vec<(String, usize)> = lines
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), 3, "{line}");
            assert!(fields[2].parse::<u64>().is_ok(), "{line}");
            (fields[0].to_string(), fields[1].parse().expect("a match count"))
        })
        .collect();
    assert_eq!(queries.len(), 24);
    let total: usize = queries.iter().map(|(_, matches)| matches).sum();
    assert!(total > 0, "no range matched a stored study, so nothing is compared: {queries:?}");
    assert_eq!(summary["mean_matches"].as_f64(), Some(total as f64 / 24.0));

    for (range, matches) in &queries {
        let (from, to) = range.split_once('-').expect("a date range");
        assert_eq!((&from[..6], &from[6..], &to[6..]), (&to[..6], "01", "28"), "28 days of one month: {range}");
        let output = run(common::dcmtk("findscu")
            .args(["-v", "-S", "-aec", "HANEUL", "-k", "QueryRetrieveLevel=STUDY"])
            .arg("-k")
            .arg(format!("StudyDate={range}"))
            .args(["-k", "StudyInstanceUID", "127.0.0.1"])
            .arg(server.dicom_port.to_string()));
        let (out, err) = text(&output);
        let log = format!("{out}{err}");
        assert!(log.contains("Received Final Find Response (Success)"), "{log}");
        let answered = log.lines().filter(|line| line.trim_start_matches("I: ").starts_with("Find Response:")).count();
        assert_eq!(answered, *matches, "StudyDate={range}");
    }
}
