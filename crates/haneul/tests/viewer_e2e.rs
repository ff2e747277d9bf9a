//! The built-in web viewer (crate `haneul-viewer`, served at `/` by `haneul
//! serve`) in a real browser: Debian's headless Chromium driven by
//! `playwright-core` (`tests/viewer/viewer.mjs`) against the real binary,
//! filled over DIMSE with a synthetic CT phantom (`tests/viewer/make_data.py`).
//! Every scenario signs in through the viewer's sign-in form as users made
//! with `haneul user add` (names and password in the environment of the
//! script). scripts/test.sh installs Chromium and the Node package (`npm ci`
//! in `tests/viewer`). Screenshots stay in `$CARGO_TARGET_TMPDIR/viewer_e2e`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use common::{dcmtk, http_request, python, run, Server, ADMIN_PASSWORD, USER_PASSWORD};

/// The clinician every scenario signs in as.
const CLINICIAN: &str = "dr.lee";

/// One browser at a time: the benchmark's timings must not share the CPU.
static BROWSER: Mutex<()> = Mutex::new(());

fn viewer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/viewer")
}

fn require_browser_tools() -> PathBuf {
    let dir = viewer_dir();
    let node = common::require("node");
    assert!(
        dir.join("node_modules/playwright-core/package.json").is_file(),
        "playwright-core is not installed; run scripts/test.sh (npm ci in crates/haneul/tests/viewer)"
    );
    let chromium = std::env::var_os("HANEUL_CHROMIUM").map(PathBuf::from).unwrap_or_else(|| "/usr/bin/chromium".into());
    assert!(chromium.is_file(), "no Chromium at {}; run scripts/test.sh, which installs it", chromium.display());
    node
}

fn out_dir(name: &str) -> PathBuf {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("viewer_e2e").join(name);
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).expect("creating the output directory");
    out
}

/// Make the test data and store `subdir` of it over DIMSE.
fn load(server: &Server, bench: Option<usize>) -> PathBuf {
    let data = server.dir.path().join("viewer-data");
    let mut make = Command::new(python());
    make.arg(viewer_dir().join("make_data.py")).arg(&data);
    if let Some(slices) = bench {
        make.args(["--bench", &slices.to_string()]);
    }
    assert!(run(&mut make).status.success(), "making the test data failed");
    let subdir = if bench.is_some() { "bench" } else { "main" };
    let mut files: Vec<PathBuf> = std::fs::read_dir(data.join(subdir))
        .expect("test data directory")
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    files.sort();
    let started = Instant::now();
    let port = server.dicom_port.to_string();
    // JPEG Baseline files (jpeg*.dcm) go in an association of their own that proposes it.
    let (jpeg, files): (Vec<PathBuf>, Vec<PathBuf>) = files
        .into_iter()
        .partition(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("jpeg")));
    let store = run(dcmtk("storescu").args(["-aec", &server.ae_title, "127.0.0.1", &port]).args(&files));
    assert!(store.status.success(), "C-STORE of the test data failed");
    if !jpeg.is_empty() {
        let store = run(dcmtk("storescu").args(["-xy", "-aec", &server.ae_title, "127.0.0.1", &port]).args(&jpeg));
        assert!(store.status.success(), "C-STORE of the JPEG test data failed");
    }
    eprintln!("stored {} files in {:.1} s", files.len() + jpeg.len(), started.elapsed().as_secs_f64());
    data
}

fn browser(node: &Path, mode: &str, server: &Server, data: &Path, out: &Path, users: &[(&str, &str)]) -> String {
    let mut command = Command::new(node);
    command
        .current_dir(viewer_dir())
        .arg("viewer.mjs")
        .arg(mode)
        .arg(server.http_url())
        .arg(data.join("expected.json"))
        .arg(out)
        .env("HANEUL_E2E_USER", server.add_user(CLINICIAN, "clinician"))
        .env("HANEUL_E2E_PASSWORD", USER_PASSWORD);
    for (variable, value) in users {
        command.env(variable, value);
    }
    let result = run(&mut command);
    let stdout = String::from_utf8_lossy(&result.stdout).to_string();
    eprintln!("{stdout}{}", String::from_utf8_lossy(&result.stderr));
    assert!(
        result.status.success(),
        "the viewer check ({mode}) failed: {}; its output is above, screenshots are in {}",
        stdout.lines().find(|line| line.starts_with("VIEWER E2E FAILED")).unwrap_or("no result line"),
        out.display()
    );
    stdout
}

/// Desktop and tablet, signed in as a clinician through the form: search a
/// Korean name, open a CT, scroll, window by
/// preset and drag (pixels checked), measure the phantom's disc within 1 %,
/// angle, attribute browser, 1×2 with the prior, invert/rotate/reset,
/// low-bandwidth mode, RGB pixels, SR and failed-frame messages, no storage;
/// the tablet by touch (swipe, drag, pinch) in landscape and portrait.
#[test]
fn viewer_flows_on_desktop_and_tablet() {
    let node = require_browser_tools();
    let _one = BROWSER.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let out = out_dir("flows");
    let server = Server::start();
    let data = load(&server, None);
    browser(&node, "flows", &server, &data, &out, &[]);
    eprintln!("viewer screenshots: {}", out.display());
}

/// Time to first image and to the full stack of a 500-slice 512×512 CT
/// (printed, not asserted; HANEUL_VIEWER_BENCH_SLICES changes the size).
#[test]
fn viewer_benchmark_500_slice_ct() {
    let node = require_browser_tools();
    let _one = BROWSER.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let slices = std::env::var("HANEUL_VIEWER_BENCH_SLICES").ok().and_then(|v| v.parse().ok()).unwrap_or(500);
    let out = out_dir("bench");
    let server = Server::start();
    let data = load(&server, Some(slices));
    let stdout = browser(&node, "bench", &server, &data, &out, &[]);
    let line = stdout.lines().find(|line| line.starts_with("BENCH")).expect("a BENCH line");
    println!("{line}");
}

/// Signing in and out, in Korean locale and Seoul time: a wrong password
/// (message, no data, no cookie), a lockout with its wait, the clinician's
/// sign-in (HttpOnly cookie, CSRF token in memory only), sign-out (CSRF header
/// sent, every trace of the patient gone, the old cookie refused — checked
/// here too), a session ended elsewhere ("session ended"), a researcher's
/// readable 403, a forced password change, and an administrator's audit page
/// finding the clinician's sign-ins, queries and failures, which the clinician
/// never sees, and its replication page showing an unreachable peer's alarm
/// and a failed backup.
#[test]
fn viewer_sign_in_sign_out_and_audit() {
    let node = require_browser_tools();
    let _one = BROWSER.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let out = out_dir("auth");
    // A replication peer that never answers: the administrator's replication page shows the alarm.
    let unreachable_peer = format!(
        "[[peer]]\nname = \"dr-site\"\nae_title = \"DRSITE\"\nhost = \"127.0.0.1\"\nport = {}\n",
        common::free_port()
    );
    let server = Server::start_with(&unreachable_peer);
    // A backup that writes nothing (its target is a file): the page shows it failed.
    let not_a_directory = out.join("not-a-directory");
    std::fs::write(&not_a_directory, b"a file").expect("file");
    let failed = run(Command::new(common::haneul_bin())
        .arg("backup")
        .arg("--config")
        .arg(server.config_path())
        .arg("--to")
        .arg(&not_a_directory));
    assert_eq!(failed.status.code(), Some(2), "a backup into a file succeeded");
    let data = load(&server, None);
    let admin = server.add_user("kim.admin", "admin");
    let researcher = server.add_user("yoon.research", "researcher");
    let locked = server.add_user("park.tech", "technologist");
    let users = [
        ("HANEUL_E2E_ADMIN", admin.as_str()),
        ("HANEUL_E2E_RESEARCHER", researcher.as_str()),
        ("HANEUL_E2E_LOCKED", locked.as_str()),
        ("HANEUL_E2E_FIRST_ADMIN", "admin"),
        ("HANEUL_E2E_FIRST_ADMIN_PASSWORD", ADMIN_PASSWORD),
    ];
    let stdout = browser(&node, "auth", &server, &data, &out, &users);
    // The cookie of the session the clinician signed out of: refused from here too.
    let old = stdout
        .lines()
        .find_map(|line| line.strip_prefix("OLD_COOKIE "))
        .expect("the scenario prints the signed-out session's cookie");
    let cookie = format!("haneul_session={}", old.trim());
    for path in ["/api/session", "/dicom-web/studies", "/api/audit"] {
        let answer =
            http_request(server.http_port, "GET", path, &[("Cookie", &cookie), ("Accept", "application/json")], b"");
        assert_eq!(answer.status, 401, "{path} with the signed-out cookie: {}", answer.text());
        assert_eq!(answer.json()["status"], 401, "{path}: {}", answer.text());
    }
    // The same request with a live session works: the refusal above is about the cookie.
    let login = http_request(
        server.http_port,
        "POST",
        "/api/login",
        &[("Content-Type", "application/json")],
        format!("{{\"user\":\"{CLINICIAN}\",\"password\":\"{USER_PASSWORD}\"}}").as_bytes(),
    );
    assert_eq!(login.status, 200, "{}", login.text());
    let fresh =
        login.header("set-cookie").and_then(|value| value.split(';').next()).expect("a session cookie").to_string();
    let answer = http_request(server.http_port, "GET", "/api/session", &[("Cookie", &fresh)], b"");
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["user"], CLINICIAN);
    eprintln!("viewer screenshots: {}", out.display());
}
