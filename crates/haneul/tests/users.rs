//! User accounts and API tokens through the real binary: the first-start
//! administrator, `haneul user …` and `haneul token …`.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, haneul_bin, run, wait_for_port, Server};

const BANNER: &str = "Haneul first start: created the administrator account.";

fn haneul(data_dir: &Path, args: &[&str]) -> Output {
    run(Command::new(haneul_bin()).args(args).arg("--data").arg(data_dir).stdin(Stdio::null()))
}

fn haneul_with_stdin(data_dir: &Path, args: &[&str], input: &str) -> Output {
    eprintln!("$ haneul {args:?} < {input:?}");
    let mut child = Command::new(haneul_bin())
        .args(args)
        .arg("--data")
        .arg(data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting haneul");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("writing stdin");
    child.wait_with_output().expect("waiting for haneul")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn succeeds(output: Output) -> String {
    assert!(output.status.success(), "failed: {}{}", stdout(&output), stderr(&output));
    stdout(&output)
}

/// The command fails (exit 2) and says `message` on stderr.
fn fails_with(output: Output, message: &str) {
    assert_eq!(output.status.code(), Some(2), "should fail: {}{}", stdout(&output), stderr(&output));
    assert!(stderr(&output).contains(message), "expected {message:?} in:\n{}", stderr(&output));
}

fn users_json(data_dir: &Path) -> Vec<serde_json::Value> {
    let listed = succeeds(haneul(data_dir, &["user", "list", "--json"]));
    serde_json::from_str(&listed).unwrap_or_else(|e| panic!("user list --json is not JSON ({e}):\n{listed}"))
}

fn tokens_json(data_dir: &Path) -> Vec<serde_json::Value> {
    let listed = succeeds(haneul(data_dir, &["token", "list", "--json"]));
    serde_json::from_str(&listed).unwrap_or_else(|e| panic!("token list --json is not JSON ({e}):\n{listed}"))
}

fn user<'a>(users: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    users.iter().find(|user| user["name"] == name).unwrap_or_else(|| panic!("no user {name} in {users:?}"))
}

/// The generated password printed as `password for NAME: …`.
fn printed_password(output: &str, name: &str) -> String {
    let prefix = format!("password for {name}: ");
    let line =
        output.lines().find_map(|line| line.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no password in {output}"));
    assert_eq!(line.len(), 20, "{line:?}");
    assert!(line.chars().all(|c| c.is_ascii_alphanumeric()), "{line:?}");
    line.to_string()
}

/// The catalog files never hold a password or a token secret.
fn assert_not_stored(data_dir: &Path, secrets: &[&str]) {
    for file in ["catalog.sqlite", "catalog.sqlite-wal"] {
        let bytes = std::fs::read(data_dir.join(file)).unwrap_or_default();
        for secret in secrets {
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret:?} is stored in {file}");
        }
    }
}

#[test]
fn first_start_creates_the_admin_once_with_a_banner() {
    let mut server = Server::start_with_generated_admin_password();
    let log = server.log();
    assert_eq!(log.matches(BANNER).count(), 1, "one banner on first start:\n{log}");
    let password = log
        .lines()
        .find_map(|line| line.trim().strip_prefix("password: "))
        .unwrap_or_else(|| panic!("no password in the banner:\n{log}"))
        .to_string();
    assert_eq!(password.len(), 20);
    assert_eq!(log.matches(&password).count(), 1, "the password appears only in the banner");

    // The account exists while the server runs (the tools share the catalog).
    let users = users_json(&server.data_dir());
    assert_eq!(users.len(), 1);
    let admin = user(&users, "admin");
    assert_eq!(admin["role"], "admin");
    assert_eq!(admin["must_change_password"], true);
    assert_eq!(admin["disabled"], false);
    assert_not_stored(&server.data_dir(), &[&password]);

    server.restart();
    let log = server.log();
    assert_eq!(log.matches(BANNER).count(), 1, "no banner on the second start:\n{log}");
    assert_eq!(users_json(&server.data_dir()).len(), 1);
    server.stop();
}

/// Start `haneul serve` on a data directory with environment variables; returns
/// the running child, or its output when it exits within `wait`.
fn serve_with_env(data_dir: &Path, env: &[(&str, &str)]) -> Result<(std::process::Child, u16), Output> {
    let (dicom_port, http_port) = (free_port(), free_port());
    let log_path = data_dir.with_extension("log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut command = Command::new(haneul_bin());
    command
        .args(["serve", "--data"])
        .arg(data_dir)
        .args(["--dicom-port", &dicom_port.to_string(), "--http", &format!("127.0.0.1:{http_port}")])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("starting haneul serve");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read(&log_path).unwrap_or_default();
            return Err(Output { status, stdout: Vec::new(), stderr: text });
        }
        if std::net::TcpStream::connect(("127.0.0.1", http_port)).is_ok() {
            wait_for_port(dicom_port, &mut child, &log_path);
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            assert!(!text.contains(BANNER), "no banner when the password comes from the environment:\n{text}");
            return Ok((child, http_port));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("haneul serve neither listened nor exited:\n{}", std::fs::read_to_string(&log_path).unwrap_or_default());
}

fn stop(mut child: std::process::Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
}

#[test]
fn the_first_admin_password_can_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (child, _) = serve_with_env(&data_dir, &[("HANEUL_ADMIN_PASSWORD", "chosen before first start")])
        .unwrap_or_else(|output| panic!("serve exited:\n{}", stderr(&output)));
    stop(child);
    let users = users_json(&data_dir);
    assert_eq!(user(&users, "admin")["must_change_password"], true);
    assert_not_stored(&data_dir, &["chosen before first start"]);

    // A weak password from the environment stops the first start.
    let weak = dir.path().join("weak");
    match serve_with_env(&weak, &[("HANEUL_ADMIN_PASSWORD", "short")]) {
        Ok((child, _)) => {
            stop(child);
            panic!("serve started with a 5-character admin password");
        }
        Err(output) => fails_with(output, "password is too short"),
    }
}

#[test]
fn users_and_tokens_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.as_path();

    // Only `user add` may start an archive.
    fails_with(haneul(data, &["user", "list"]), "no archive in");
    fails_with(haneul(data, &["token", "list"]), "no archive in");

    let added = succeeds(haneul_with_stdin(
        data,
        &["user", "add", "kim.minji", "--role", "radiologist", "--password-stdin"],
        "a long enough password\n",
    ));
    assert!(added.contains("added user kim.minji (role radiologist)"), "{added}");
    assert!(!added.contains("password for"), "no password is printed when it came from stdin:\n{added}");

    let added =
        succeeds(haneul(data, &["user", "add", "lee", "--role", "Clinician", "--site", "seoul", "--site", "busan"]));
    let lee_password = printed_password(&added, "lee");

    // Errors: duplicate (in any case), bad role, weak password, bad name, empty stdin.
    fails_with(haneul(data, &["user", "add", "KIM.MINJI", "--role", "admin"]), "user \"KIM.MINJI\" already exists");
    fails_with(
        haneul(data, &["user", "add", "park", "--role", "doctor"]),
        "unknown role \"doctor\"; valid roles: admin, radiologist, clinician, technologist, researcher, service",
    );
    fails_with(
        haneul_with_stdin(data, &["user", "add", "park", "--role", "clinician", "--password-stdin"], "short\n"),
        "password is too short: use at least 12 characters",
    );
    fails_with(haneul(data, &["user", "add", "bad name", "--role", "clinician"]), "invalid user name \"bad name\"");
    fails_with(
        haneul_with_stdin(data, &["user", "add", "park", "--role", "clinician", "--password-stdin"], ""),
        "no password on standard input",
    );

    let users = users_json(data);
    assert_eq!(users.len(), 2, "{users:?}");
    let kim = user(&users, "kim.minji");
    assert_eq!((kim["role"].as_str(), kim["must_change_password"].as_bool()), (Some("radiologist"), Some(false)));
    assert_eq!(kim["sites"], serde_json::json!([]));
    let lee = user(&users, "lee");
    assert_eq!((lee["role"].as_str(), lee["must_change_password"].as_bool()), (Some("clinician"), Some(true)));
    assert_eq!(lee["sites"], serde_json::json!(["seoul", "busan"]));
    assert!(users.iter().all(|user| user.get("password_hash").is_none()), "{users:?}");

    let table = succeeds(haneul(data, &["user", "list"]));
    let header = table.lines().next().unwrap_or_default();
    assert!(header.starts_with("name") && header.contains("role") && header.contains("status"), "{table}");
    let lee_line = table.lines().find(|line| line.starts_with("lee ")).unwrap_or_else(|| panic!("{table}"));
    assert!(lee_line.contains("clinician") && lee_line.contains("must change") && lee_line.contains("seoul,busan"));

    // Disable and enable.
    assert!(succeeds(haneul(data, &["user", "disable", "kim.minji"])).contains("disabled user kim.minji"));
    assert_eq!(user(&users_json(data), "kim.minji")["disabled"], true);
    succeeds(haneul(data, &["user", "enable", "kim.minji"]));
    assert_eq!(user(&users_json(data), "kim.minji")["disabled"], false);
    fails_with(haneul(data, &["user", "disable", "nobody"]), "unknown user \"nobody\"");
    fails_with(haneul(data, &["user", "enable", "nobody"]), "unknown user \"nobody\"");

    // Passwords: from stdin (no change asked) or generated (change asked).
    succeeds(haneul_with_stdin(data, &["user", "passwd", "lee", "--password-stdin"], "lee's own password\r\n"));
    assert_eq!(user(&users_json(data), "lee")["must_change_password"], false);
    let changed = succeeds(haneul(data, &["user", "passwd", "kim.minji"]));
    let kim_password = printed_password(&changed, "kim.minji");
    assert_eq!(user(&users_json(data), "kim.minji")["must_change_password"], true);
    fails_with(
        haneul_with_stdin(data, &["user", "passwd", "nobody", "--password-stdin"], "whatever password\n"),
        "unknown user \"nobody\"",
    );

    // Tokens: printed once, listed without the secret, revoked for good.
    let created = haneul(data, &["token", "create", "kim.minji", "--name", "nightly export", "--expires-days", "30"]);
    assert!(stderr(&created).contains("shown only once"), "{}", stderr(&created));
    let token = succeeds(created).trim().to_string();
    assert!(token.starts_with("hnl_") && token.len() == 64, "{token:?}");
    let id = token[4..20].to_string();
    let secret = &token[21..];
    let forever = succeeds(haneul(data, &["token", "create", "lee", "--name", "viewer kiosk", "--expires-days", "0"]));
    fails_with(haneul(data, &["token", "create", "nobody", "--name", "x"]), "unknown user \"nobody\"");

    let listed_text = succeeds(haneul(data, &["token", "list", "--json"]));
    assert!(!listed_text.contains(secret), "token list shows a secret:\n{listed_text}");
    let tokens = tokens_json(data);
    assert_eq!(tokens.len(), 2, "{tokens:?}");
    let nightly = tokens.iter().find(|t| t["id"] == id.as_str()).unwrap_or_else(|| panic!("{tokens:?}"));
    assert_eq!((nightly["user"].as_str(), nightly["name"].as_str()), (Some("kim.minji"), Some("nightly export")));
    assert_eq!(nightly["state"], "active");
    let lifetime = nightly["expires_ms"].as_i64().unwrap() - nightly["created_ms"].as_i64().unwrap();
    assert_eq!(lifetime, 30 * 86_400_000);
    let kiosk = tokens.iter().find(|t| t["user"] == "lee").unwrap();
    assert_eq!(kiosk["expires_ms"], serde_json::Value::Null);

    assert!(succeeds(haneul(data, &["token", "revoke", &id])).contains(&format!("revoked token {id}")));
    let tokens = tokens_json(data);
    assert_eq!(tokens.iter().find(|t| t["id"] == id.as_str()).unwrap()["state"], "revoked");
    fails_with(haneul(data, &["token", "revoke", "0123456789abcdef"]), "unknown token \"0123456789abcdef\"");
    let table = succeeds(haneul(data, &["token", "list"]));
    assert!(table.lines().any(|line| line.starts_with(&id) && line.contains("revoked")), "{table}");

    assert_not_stored(
        data,
        &["a long enough password", "lee's own password", &lee_password, &kim_password, secret, forever.trim()],
    );

    // Accounts exist before the first start: no administrator is made.
    match serve_with_env(data, &[]) {
        Ok((child, _)) => stop(child),
        Err(output) => panic!("serve exited:\n{}", stderr(&output)),
    }
    assert!(users_json(data).iter().all(|user| user["name"] != "admin"));
}

/// Studies sent by a known AE belong to its site; a user limited to that site
/// finds only them over DICOMweb, an unlimited administrator finds all.
#[test]
fn a_known_aes_studies_belong_to_its_site() {
    let server =
        Server::start_with("[[known_ae]]\ntitle = \"SEOULCT\"\nhost = \"127.0.0.1\"\nport = 104\nsite = \"seoul\"\n");
    let port = server.dicom_port.to_string();
    let files = common::pydicom_data().join("test_files");
    for (calling, file) in [("SEOULCT", "CT_small.dcm"), ("OTHERMR", "MR_small.dcm")] {
        let store = run(common::dcmtk("storescu")
            .args(["-aet", calling, "-aec", "HANEUL", "127.0.0.1", &port])
            .arg(files.join(file)));
        assert!(store.status.success(), "C-STORE from {calling} failed");
    }
    let added = haneul_with_stdin(
        &server.data_dir(),
        &["user", "add", "seoul.doc", "--role", "clinician", "--site", "seoul", "--password-stdin"],
        "a long enough password\n",
    );
    assert!(added.status.success(), "{}", stderr(&added));
    let token = server.create_token("seoul.doc", "tests");
    let modalities = |authorization: &str| -> Vec<String> {
        let response = common::http_request(
            server.http_port,
            "GET",
            "/dicom-web/studies?includefield=00080061",
            &[("Accept", "application/dicom+json"), ("Authorization", authorization)],
            b"",
        );
        assert_eq!(response.status, 200, "{}", response.text());
        let mut found: Vec<String> = response
            .json()
            .as_array()
            .expect("an array")
            .iter()
            .map(|study| study["00080061"]["Value"][0].as_str().unwrap_or_default().to_string())
            .collect();
        found.sort();
        found
    };
    assert_eq!(modalities(&format!("Bearer {token}")), vec!["CT"], "seoul's user sees seoul's CT only");
    assert_eq!(modalities(&server.authorization()), vec!["CT", "MR"]);
}
