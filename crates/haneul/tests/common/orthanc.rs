//! A "legacy PACS" for migration and diff tests: a real Orthanc (Debian's
//! `orthanc` package, 1.10; scripts/test.sh installs it with its DICOMweb
//! plugin) on free loopback ports, in a temporary directory, stopped on drop.
//!
//! ```ignore
//! let haneul = Server::start();
//! let legacy = LegacyPacs::start(LegacyOptions::new().knowing("HANEUL", "127.0.0.1", haneul.dicom_port));
//! legacy.store("HANEUL", &legacy_samples());  // C-STORE with DCMTK storescu
//! assert_eq!(legacy.instance_count(), legacy_samples().len());
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use haneul_dicom::meta::{read_layout, FileLayout, FileMeta};
use haneul_dicom::read::{read_dataset, ReadOptions, StreamSource};
use haneul_dicom::{tags, ts};

use super::{dcmtk, free_port, http_request, pydicom_data, run, text, HttpResponse, InstanceUids};

/// How the legacy PACS is configured.
#[derive(Debug, Clone)]
pub struct LegacyOptions {
    /// Its AE title (`DicomAet`).
    pub ae_title: String,
    /// `LimitFindResults`: most answers to a C-FIND at patient, study or
    /// series level (0: no limit). Orthanc ends a cropped answer with a
    /// Cancel status (FE00).
    pub limit_find_results: u32,
    /// `LimitFindInstances`: the same at instance level.
    pub limit_find_instances: u32,
    /// `DicomModalities`: AEs it knows as name → (AE title, host, port), the
    /// C-MOVE destinations (e.g. Haneul).
    pub modalities: BTreeMap<String, (String, String, u16)>,
    /// Load the DICOMweb plugin at `/dicom-web/` when it is installed.
    pub dicomweb: bool,
}

impl Default for LegacyOptions {
    fn default() -> Self {
        LegacyOptions {
            ae_title: "LEGACY".into(),
            limit_find_results: 0,
            limit_find_instances: 0,
            modalities: BTreeMap::new(),
            dicomweb: true,
        }
    }
}

impl LegacyOptions {
    pub fn new() -> Self {
        LegacyOptions::default()
    }

    /// Know an AE (a C-MOVE destination), named after its title in lower case.
    pub fn knowing(mut self, ae_title: &str, host: &str, port: u16) -> Self {
        self.modalities.insert(ae_title.to_ascii_lowercase(), (ae_title.into(), host.into(), port));
        self
    }

    pub fn limit_find_results(mut self, limit: u32) -> Self {
        self.limit_find_results = limit;
        self
    }
}

/// A running Orthanc.
pub struct LegacyPacs {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub ae_title: String,
    pub dicom_port: u16,
    pub http_port: u16,
    /// Whether the DICOMweb plugin is loaded (at [`LegacyPacs::dicomweb_url`]).
    pub dicomweb: bool,
}

/// Orthanc's binary: on PATH, else where Debian puts it (/usr/sbin is not on
/// every user's PATH).
pub fn orthanc_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|dir| dir.join("Orthanc")).find(|candidate| candidate.is_file())
    });
    on_path.or_else(|| Some(PathBuf::from("/usr/sbin/Orthanc")).filter(|path| path.is_file())).unwrap_or_else(|| {
        panic!("Orthanc is not installed; run scripts/test.sh, which installs Debian's orthanc package")
    })
}

/// The DICOMweb plugin of Debian's orthanc-dicomweb package, if installed.
pub fn dicomweb_plugin() -> Option<PathBuf> {
    let listed = Command::new("dpkg").args(["-L", "orthanc-dicomweb"]).output().ok()?;
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .find(|line| line.ends_with("/libOrthancDicomWeb.so"))
        .map(PathBuf::from)
        .filter(|path| path.is_file())
}

impl LegacyPacs {
    pub fn start(options: LegacyOptions) -> LegacyPacs {
        let dir = tempfile::tempdir().expect("temporary directory");
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).expect("storage directory");
        let plugin = if options.dicomweb { dicomweb_plugin() } else { None };
        let modalities: serde_json::Map<String, serde_json::Value> = options
            .modalities
            .iter()
            .map(|(name, (title, host, port))| (name.clone(), serde_json::json!([title, host, port])))
            .collect();
        let mut config = serde_json::json!({
            "Name": "legacy",
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "DicomAet": options.ae_title,
            "DicomPort": free_port(),
            "HttpServerEnabled": true,
            "HttpPort": free_port(),
            // Loopback only, and then without authentication (Orthanc's default there).
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "DicomCheckCalledAet": true,
            "DicomAlwaysAllowEcho": true,
            "DicomAlwaysAllowStore": true,
            "DicomAlwaysAllowFind": true,
            "DicomAlwaysAllowMove": true,
            "DicomAlwaysAllowGet": true,
            "DicomModalities": modalities,
            "LimitFindResults": options.limit_find_results,
            "LimitFindInstances": options.limit_find_instances,
            "SaveJobs": false,
            "StorageCompression": false,
            "Plugins": plugin.iter().collect::<Vec<_>>(),
        });
        if plugin.is_some() {
            config["DicomWeb"] = serde_json::json!({ "Enable": true, "Root": "/dicom-web/" });
        }
        let dicom_port = config["DicomPort"].as_u64().and_then(|p| u16::try_from(p).ok()).expect("a port");
        let http_port = config["HttpPort"].as_u64().and_then(|p| u16::try_from(p).ok()).expect("a port");
        let config_path = dir.path().join("orthanc.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).expect("JSON")).expect("writing the config");
        let log = std::fs::File::create(dir.path().join("orthanc.log")).expect("log file");
        let child = Command::new(orthanc_bin())
            .arg(&config_path)
            // Orthanc 1.10 networks through DCMTK, which disables Nagle only when told so.
            .env("TCP_NODELAY", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("starting Orthanc");
        let mut legacy = LegacyPacs {
            child: Some(child),
            dir,
            ae_title: options.ae_title,
            dicom_port,
            http_port,
            dicomweb: plugin.is_some(),
        };
        legacy.wait_until_ready();
        legacy
    }

    /// Orthanc opens its DICOM port before its REST API; wait for both.
    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let dicom = std::net::TcpStream::connect(("127.0.0.1", self.dicom_port)).is_ok();
            if dicom && std::net::TcpStream::connect(("127.0.0.1", self.http_port)).is_ok() {
                let answer = http_request(self.http_port, "GET", "/system", &[], b"");
                if answer.status == 200 {
                    return;
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("Orthanc exited with {status} before listening:\n{}", self.log());
                }
            }
            assert!(Instant::now() < deadline, "Orthanc did not start within 60 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("orthanc.log")).unwrap_or_default()
    }

    /// `127.0.0.1:port` of its DICOM listener.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.dicom_port)
    }

    /// `AE@127.0.0.1:port`, the way `haneul diff` and `haneul migrate` name nodes.
    pub fn node(&self) -> String {
        format!("{}@127.0.0.1:{}", self.ae_title, self.dicom_port)
    }

    /// Root of its REST API.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Root of its DICOMweb service, when the plugin is loaded.
    pub fn dicomweb_url(&self) -> Option<String> {
        self.dicomweb.then(|| format!("http://127.0.0.1:{}/dicom-web", self.http_port))
    }

    /// A REST call; the answer whatever its status.
    pub fn rest(&self, method: &str, path: &str, body: &[u8]) -> HttpResponse {
        http_request(self.http_port, method, path, &[("Accept", "application/json")], body)
    }

    /// A REST call that must succeed; its JSON answer.
    pub fn rest_json(&self, method: &str, path: &str, body: &[u8]) -> serde_json::Value {
        let answer = self.rest(method, path, body);
        assert_eq!(answer.status, 200, "{method} {path} on Orthanc: {}", answer.text());
        if answer.body.is_empty() {
            serde_json::Value::Null
        } else {
            answer.json()
        }
    }

    /// C-STORE files with DCMTK's storescu, calling as `calling_ae`, each in
    /// its own transfer syntax (storescu proposes one syntax family per run,
    /// so files go in groups by syntax; see [`storescu_syntax_option`]).
    /// Panics if a file is refused (storescu itself exits 0 then).
    pub fn store(&self, calling_ae: &str, files: &[PathBuf]) {
        store_with_storescu(calling_ae, &self.ae_title, self.dicom_port, files);
    }

    /// Upload files through the REST API (`POST /instances`), the bytes as
    /// they are; returns Orthanc's instance ids.
    pub fn upload(&self, files: &[PathBuf]) -> Vec<String> {
        files
            .iter()
            .map(|file| {
                let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
                let answer = self.rest_json("POST", "/instances", &bytes);
                assert!(
                    matches!(answer["Status"].as_str(), Some("Success" | "AlreadyStored")),
                    "Orthanc refused {}: {answer}",
                    file.display()
                );
                answer["ID"].as_str().expect("an instance id").to_string()
            })
            .collect()
    }

    fn statistics(&self) -> serde_json::Value {
        self.rest_json("GET", "/statistics", b"")
    }

    pub fn instance_count(&self) -> usize {
        self.statistics()["CountInstances"].as_u64().expect("CountInstances") as usize
    }

    pub fn study_count(&self) -> usize {
        self.statistics()["CountStudies"].as_u64().expect("CountStudies") as usize
    }

    /// Study Instance UIDs of every study it holds.
    pub fn study_uids(&self) -> BTreeSet<String> {
        self.main_tags("studies", "StudyInstanceUID")
    }

    /// SOP Instance UIDs of every instance it holds.
    pub fn sop_uids(&self) -> BTreeSet<String> {
        self.main_tags("instances", "SOPInstanceUID")
    }

    fn main_tags(&self, level: &str, tag: &str) -> BTreeSet<String> {
        let answer = self.rest_json("GET", &format!("/{level}?expand"), b"");
        answer
            .as_array()
            .expect("an array")
            .iter()
            .map(|resource| resource["MainDicomTags"][tag].as_str().expect("the UID").to_string())
            .collect()
    }

    /// The transfer syntax an instance is stored in.
    pub fn transfer_syntax(&self, sop_uid: &str) -> String {
        let id = self.orthanc_id("Instance", sop_uid);
        self.rest("GET", &format!("/instances/{id}/metadata/TransferSyntax"), b"").text()
    }

    /// Orthanc's id of the resource with this DICOM UID at `level`
    /// (`Study`, `Series` or `Instance`).
    pub fn orthanc_id(&self, level: &str, uid: &str) -> String {
        let found = self.rest_json("POST", "/tools/lookup", uid.as_bytes());
        found
            .as_array()
            .expect("an array")
            .iter()
            .find(|resource| resource["Type"] == level)
            .and_then(|resource| resource["ID"].as_str())
            .unwrap_or_else(|| panic!("Orthanc holds no {level} {uid}: {found}"))
            .to_string()
    }

    /// Delete one instance (by SOP Instance UID) through the REST API.
    pub fn delete_instance(&self, sop_uid: &str) {
        let id = self.orthanc_id("Instance", sop_uid);
        self.rest_json("DELETE", &format!("/instances/{id}"), b"");
    }

    /// Delete a whole study (by Study Instance UID) through the REST API.
    pub fn delete_study(&self, study_uid: &str) {
        let id = self.orthanc_id("Study", study_uid);
        self.rest_json("DELETE", &format!("/studies/{id}"), b"");
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stop Orthanc (SIGTERM, then wait).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }
}

impl Drop for LegacyPacs {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- Orthanc log ----\n{}", self.log());
        }
    }
}

/// The meta group of a Part 10 file.
pub fn file_meta(path: &Path) -> FileMeta {
    let mut file = std::fs::File::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    match read_layout(&mut file) {
        Ok(FileLayout::Part10(meta)) => meta,
        other => panic!("{} is not a Part 10 file: {other:?}", path.display()),
    }
}

/// The transfer syntax of a Part 10 file.
pub fn file_transfer_syntax(path: &Path) -> String {
    file_meta(path).transfer_syntax_uid
}

/// (Study, Series, SOP Instance) UIDs of a Part 10 file, from its data set
/// (some of pydicom's files name another instance in their meta group).
pub fn file_uids(path: &Path) -> InstanceUids {
    use std::io::{Seek, SeekFrom};
    let meta = file_meta(path);
    let syntax = ts::lookup(&meta.transfer_syntax_uid).expect("a known transfer syntax");
    let mut file = std::fs::File::open(path).expect("the file");
    file.seek(SeekFrom::Start(meta.dataset_offset)).expect("seeking to the data set");
    let parsed = read_dataset(StreamSource(file), syntax, &ReadOptions::default())
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let uid = |tag| parsed.dataset.string(tag).unwrap_or_else(|| panic!("{} lacks {tag}", path.display())).to_string();
    (uid(tags::STUDY_INSTANCE_UID), uid(tags::SERIES_INSTANCE_UID), uid(tags::SOP_INSTANCE_UID))
}

/// The SOP Instance UID of a Part 10 file.
pub fn file_sop_uid(path: &Path) -> String {
    file_uids(path).2
}

/// The storescu option that proposes a transfer syntax (storescu otherwise
/// proposes only uncompressed ones and converts what it can, or fails).
pub fn storescu_syntax_option(transfer_syntax: &str) -> &'static str {
    match transfer_syntax {
        "1.2.840.10008.1.2" => "--propose-implicit",
        "1.2.840.10008.1.2.1" => "--propose-little",
        "1.2.840.10008.1.2.2" => "--propose-big",
        "1.2.840.10008.1.2.1.99" => "--propose-deflated",
        "1.2.840.10008.1.2.5" => "--propose-rle",
        "1.2.840.10008.1.2.4.50" => "--propose-jpeg8",
        "1.2.840.10008.1.2.4.51" => "--propose-jpeg12",
        "1.2.840.10008.1.2.4.57" | "1.2.840.10008.1.2.4.70" => "--propose-lossless",
        "1.2.840.10008.1.2.4.80" => "--propose-jls-lossless",
        "1.2.840.10008.1.2.4.81" => "--propose-jls-lossy",
        "1.2.840.10008.1.2.4.90" => "--propose-j2k-lossless",
        "1.2.840.10008.1.2.4.91" => "--propose-j2k-lossy",
        other => panic!("no storescu option proposes {other}"),
    }
}

/// C-STORE `files` to `called_ae` at loopback `port` with storescu, grouped
/// by transfer syntax; panics on any failure (storescu exits 0 even when a
/// store is refused, so its error lines are checked).
pub fn store_with_storescu(calling_ae: &str, called_ae: &str, port: u16, files: &[PathBuf]) {
    let mut groups: BTreeMap<String, Vec<&PathBuf>> = BTreeMap::new();
    for file in files {
        groups.entry(file_transfer_syntax(file)).or_default().push(file);
    }
    for (syntax, group) in groups {
        let output = run(dcmtk("storescu")
            .args([storescu_syntax_option(&syntax), "-aet", calling_ae, "-aec", called_ae, "127.0.0.1"])
            .arg(port.to_string())
            .args(&group));
        let log = text(&output);
        assert!(
            output.status.success() && !log.lines().any(|line| line.starts_with("E:")),
            "C-STORE of {group:?} ({syntax}) to {called_ae} failed:\n{log}"
        );
    }
}

/// A file of the legacy data set.
#[derive(Debug, Clone)]
pub struct LegacySample {
    pub path: PathBuf,
    pub transfer_syntax: &'static str,
    /// Why it is in the set.
    pub about: &'static str,
}

/// A representative legacy data set from pydicom's test files, every one
/// accepted by Orthanc 1.10 and Haneul, one file per SOP Instance UID
/// (pydicom has several encodings of one instance): Korean names (ISO 2022
/// IR 149, dated and undated), other character sets, every native transfer
/// syntax (implicit and explicit little endian, big endian, deflated), and
/// JPEG baseline, extended and lossless, JPEG 2000 (lossless and lossy) and
/// RLE; a legacy `1997.04.24` study date; studies without a date. Left out:
/// files without a Study Instance UID (JPEG-LS near-lossless samples,
/// no_meta, the charset sequence files), truncated or broken ones
/// (MR_truncated, rtplan_truncated, badVR), Segmentation objects (Orthanc
/// 1.10 does not negotiate that SOP class), and other encodings of the
/// instances below.
pub fn legacy_samples() -> Vec<LegacySample> {
    const SAMPLES: [(&str, &str, &str); 16] = [
        ("charset_files/chrKoreanMulti.dcm", "1.2.840.10008.1.2.1", "Korean, IR 149, dated"),
        ("charset_files/chrI2.dcm", "1.2.840.10008.1.2.1", "Korean, IR 149, no study date"),
        ("charset_files/chrH31.dcm", "1.2.840.10008.1.2.1", "Japanese, IR 87, no study date"),
        ("charset_files/chrX1.dcm", "1.2.840.10008.1.2.1", "UTF-8, no study date"),
        ("test_files/CT_small.dcm", "1.2.840.10008.1.2.1", "explicit little endian"),
        ("test_files/rtplan.dcm", "1.2.840.10008.1.2", "implicit little endian, RT plan"),
        ("test_files/rtdose_1frame.dcm", "1.2.840.10008.1.2", "implicit little endian, RT dose"),
        ("test_files/SC_rgb_small_odd_big_endian.dcm", "1.2.840.10008.1.2.2", "explicit big endian"),
        ("test_files/ExplVR_BigEnd.dcm", "1.2.840.10008.1.2.2", "big endian, study date 1997.04.24"),
        ("test_files/image_dfl.dcm", "1.2.840.10008.1.2.1.99", "deflated, no study date"),
        ("test_files/examples_ybr_color.dcm", "1.2.840.10008.1.2.4.50", "JPEG baseline, multi-frame"),
        ("test_files/JPGExtended.dcm", "1.2.840.10008.1.2.4.51", "JPEG extended (12-bit)"),
        ("test_files/SC_rgb_jpeg_gdcm.dcm", "1.2.840.10008.1.2.4.70", "JPEG lossless"),
        ("test_files/GDCMJ2K_TextGBR.dcm", "1.2.840.10008.1.2.4.90", "JPEG 2000 lossless"),
        ("test_files/JPEG2000.dcm", "1.2.840.10008.1.2.4.91", "JPEG 2000"),
        ("test_files/MR_small_RLE.dcm", "1.2.840.10008.1.2.5", "RLE"),
    ];
    let data = pydicom_data();
    SAMPLES
        .iter()
        .map(|&(file, transfer_syntax, about)| LegacySample { path: data.join(file), transfer_syntax, about })
        .collect()
}

/// The paths of [`legacy_samples`].
pub fn legacy_sample_paths() -> Vec<PathBuf> {
    legacy_samples().into_iter().map(|sample| sample.path).collect()
}
