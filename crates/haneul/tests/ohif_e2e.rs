//! End to end with the real OHIF viewer: the built `@ohif/app`, pointed at
//! Haneul's DICOMweb, driven by headless Chromium (Debian `chromium` through
//! `playwright-core`). The study list must show the stored studies, a Korean
//! patient name among them rendered correctly, and a CT series must open and
//! its image appear. The browser side is `tests/ohif/e2e.mjs`; scripts/test.sh
//! installs Chromium, a Korean font and the Node packages (`npm ci` in
//! `tests/ohif`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{dcmtk, python, run, Server};

fn ohif_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ohif")
}

/// Everything the browser side needs, or a panic that says how to get it.
fn require_browser_tools() -> PathBuf {
    let dir = ohif_dir();
    let how = "run scripts/test.sh, which installs it (npm ci in crates/haneul/tests/ohif)";
    let node = common::require("node");
    assert!(dir.join("node_modules/playwright-core/package.json").is_file(), "playwright-core is not installed; {how}");
    let pinned: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("package.json")).expect("reading package.json"))
            .expect("package.json is JSON");
    let installed = std::fs::read_to_string(dir.join("node_modules/@ohif/app/package.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
    let want = &pinned["ohifApp"]["version"];
    assert!(
        installed.as_ref().map(|package| &package["version"]) == Some(want),
        "the OHIF viewer @ohif/app {want} is not installed (found {:?}); {how}",
        installed.map(|package| package["version"].clone())
    );
    assert!(dir.join("node_modules/@ohif/app/dist/index.html").is_file(), "the OHIF build is incomplete; {how}");
    let chromium = std::env::var_os("HANEUL_CHROMIUM").map(PathBuf::from).unwrap_or_else(|| "/usr/bin/chromium".into());
    assert!(
        chromium.is_file(),
        "no Chromium at {}; run scripts/test.sh, which installs Debian's chromium",
        chromium.display()
    );
    node
}

#[test]
fn ohif_lists_studies_and_shows_a_ct_image() {
    let node = require_browser_tools();
    // Screenshots stay after the test, for a human to look at.
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ohif_e2e");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).expect("creating the output directory");

    let server = Server::start();
    let data = server.dir.path().join("ohif-data");
    let made = run(Command::new(python()).arg(ohif_dir().join("make_data.py")).arg(&data));
    assert!(made.status.success(), "making the test data failed");

    // Load the studies over DIMSE, as a modality would.
    let mut files: Vec<PathBuf> = ["ct", "other"]
        .iter()
        .flat_map(|sub| std::fs::read_dir(data.join(sub)).expect("test data directory"))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    files.sort();
    let port = server.dicom_port.to_string();
    let store = run(dcmtk("storescu").args(["-aec", &server.ae_title, "127.0.0.1", &port]).args(&files));
    assert!(store.status.success(), "C-STORE of the test data failed");

    let dicomweb = server.dicomweb_url();
    let wado = format!("{}/wado", server.http_url());
    let mut browser = Command::new(node);
    browser.current_dir(ohif_dir()).arg("e2e.mjs").arg(&dicomweb).arg(&wado).arg(data.join("expected.json")).arg(&out);
    // Read-only credentials, as a clinician's viewer has them.
    let clinician = server.add_user("dr.ohif", "clinician");
    browser.env("HANEUL_AUTHORIZATION", format!("Bearer {}", server.create_token(&clinician, "ohif")));
    let result = run(&mut browser);
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(
        result.status.success(),
        "the OHIF end-to-end check failed ({}); its output is above, screenshots are in {}",
        stdout.lines().find(|line| line.starts_with("OHIF E2E FAILED")).unwrap_or("no result line"),
        out.display()
    );
    eprintln!("OHIF screenshots: {}", out.display());
}
