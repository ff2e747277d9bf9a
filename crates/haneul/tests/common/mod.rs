//! Test harness: start the real `haneul` binary from a generated config and
//! find the real peers (DCMTK tools, a Python with pydicom and pynetdicom).
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod migration;
pub mod orthanc;
pub mod sending;

/// A free port on loopback, never one this process handed out before: the
/// kernel may give the same ephemeral port to two binds in a row once the
/// first is closed, and a server given it for both DICOM and HTTP fails.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("binding an ephemeral port");
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// The `haneul` binary built for these tests.
pub fn haneul_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_haneul"))
}

/// Repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// Python helper scripts used as pynetdicom peers.
pub fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers")
}

/// A required external tool; the test command (scripts/test.sh) installs them.
pub fn require(tool: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|dir| dir.join(tool)).find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| panic!("{tool} is not installed; run scripts/test.sh, which installs DCMTK"))
}

/// The Python interpreter with pydicom and pynetdicom: $HANEUL_PYTHON, else .venv/bin/python.
pub fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("HANEUL_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = repo_root().join(".venv/bin/python");
    assert!(venv.is_file(), "no Python venv at {}; run scripts/test.sh, which creates it", venv.display());
    venv
}

/// pydicom's bundled test data (`test_files`, `charset_files`).
pub fn pydicom_data() -> PathBuf {
    let output = Command::new(python())
        .args(["-c", "import os, pydicom; print(os.path.join(os.path.dirname(pydicom.__file__), 'data'))"])
        .output()
        .expect("running python");
    assert!(output.status.success(), "pydicom is not importable: {}", String::from_utf8_lossy(&output.stderr));
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

/// Run a command, returning its output; the command line is logged for failures.
pub fn run(command: &mut Command) -> Output {
    eprintln!("$ {command:?}");
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    if !output.status.success() {
        eprintln!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output
}

/// The JSON document a peer script printed (its last line that starts with
/// `{`), after checking that it succeeded.
pub fn parse_peer_output(script: &str, output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{script} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .unwrap_or_else(|| panic!("{script} printed no JSON:\n{stdout}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{script} printed invalid JSON ({e}):\n{line}"))
}

/// Run a Python peer script from tests/peers with arguments; returns its output.
pub fn run_peer(script: &str, args: &[&str]) -> Output {
    run(Command::new(python()).arg(peers_dir().join(script)).args(args))
}

pub fn wait_for_port(port: u16, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "haneul exited with {status} before listening:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("haneul did not listen on {port} within 60 s:\n{}", std::fs::read_to_string(log).unwrap_or_default());
}

/// A running `haneul serve` with its own data directory and ports.
pub struct Server {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub dicom_port: u16,
    pub http_port: u16,
    pub ae_title: String,
    extra_config: String,
    /// Extra lines of the generated `[dicom]` table (e.g. `allow_any_loopback = false`).
    dicom_config: String,
    /// Extra lines of the generated `[http]` table (e.g. `max_upload_bytes = 65536`).
    http_config: String,
    /// Extra lines of the generated `[storage]` table (e.g. `node = "a"`).
    storage_config: String,
    /// The shared catalog and bucket of [`BACKEND_VARIABLE`], if it asks for them.
    backend: Option<SharedBackend>,
    log_index: u32,
    /// An API token of the first administrator (`Bearer` credentials), made at first start.
    pub token: String,
    /// Whether the first administrator's password comes from HANEUL_ADMIN_PASSWORD
    /// (else the server generates one and prints it).
    admin_password_from_env: bool,
}

/// The password of users made with [`Server::add_user`].
pub const USER_PASSWORD: &str = "test-user-password-1";

/// The first administrator's password in every test server (HANEUL_ADMIN_PASSWORD).
pub const ADMIN_PASSWORD: &str = "test-admin-password-1";

impl Server {
    /// Start with the default settings.
    pub fn start() -> Server {
        Server::start_with("")
    }

    /// Start with extra TOML appended to the generated config (e.g. `[[known_ae]]` blocks).
    pub fn start_with(extra_config: &str) -> Server {
        Server::start_with_http("", extra_config)
    }

    /// Start with extra lines in the `[http]` table and extra TOML appended.
    pub fn start_with_http(http_config: &str, extra_config: &str) -> Server {
        Server::launch("HANEUL", "", http_config, extra_config, true)
    }

    /// Start with extra lines in the `[dicom]` table and extra TOML appended.
    pub fn start_with_dicom(dicom_config: &str, extra_config: &str) -> Server {
        Server::launch("HANEUL", dicom_config, "", extra_config, true)
    }

    /// Start without HANEUL_ADMIN_PASSWORD: the server generates the first
    /// administrator's password and prints it once.
    pub fn start_with_generated_admin_password() -> Server {
        Server::launch("HANEUL", "", "", "", false)
    }

    /// Start with DICOM on a port chosen beforehand (a peer must know it first).
    pub fn start_with_dicom_port(dicom_port: u16, extra_config: &str) -> Server {
        let mut server = Server::unstarted("HANEUL", "", "", extra_config, true);
        server.dicom_port = dicom_port;
        server.started()
    }

    /// Start one node of several: extra lines in its `[storage]` table
    /// (node name, blob backend) and extra TOML.
    pub fn start_node(ae_title: &str, storage_config: &str, extra_config: &str) -> Server {
        Server::start_node_with_dicom(ae_title, "", storage_config, extra_config)
    }

    /// The same, with extra lines in its `[dicom]` table.
    pub fn start_node_with_dicom(
        ae_title: &str,
        dicom_config: &str,
        storage_config: &str,
        extra_config: &str,
    ) -> Server {
        let mut server = Server::unstarted(ae_title, dicom_config, "", extra_config, true);
        storage_config.clone_into(&mut server.storage_config);
        server.backend = None;
        server.started()
    }

    /// Start with another AE title (several nodes that talk to each other).
    pub fn start_as(ae_title: &str, extra_config: &str) -> Server {
        Server::launch(ae_title, "", "", extra_config, true)
    }

    /// Start on a data directory that `prepare` fills first (e.g. `haneul
    /// restore` into it); it is given the directory's path, not yet created.
    pub fn start_on(ae_title: &str, prepare: impl FnOnce(&Path)) -> Server {
        Server::launch_with(ae_title, "", "", "", true, prepare)
    }

    fn launch(
        ae_title: &str,
        dicom_config: &str,
        http_config: &str,
        extra_config: &str,
        admin_password_from_env: bool,
    ) -> Server {
        Server::launch_with(ae_title, dicom_config, http_config, extra_config, admin_password_from_env, |_| {})
    }

    fn launch_with(
        ae_title: &str,
        dicom_config: &str,
        http_config: &str,
        extra_config: &str,
        admin_password_from_env: bool,
        prepare: impl FnOnce(&Path),
    ) -> Server {
        let server = Server::unstarted(ae_title, dicom_config, http_config, extra_config, admin_password_from_env);
        prepare(&server.data_dir());
        server.started()
    }

    /// Start the process and make the administrator's token.
    fn started(mut self) -> Server {
        self.spawn();
        self.token = self.create_token("admin", "tests");
        self
    }

    fn unstarted(
        ae_title: &str,
        dicom_config: &str,
        http_config: &str,
        extra_config: &str,
        admin_password_from_env: bool,
    ) -> Server {
        let dir = tempfile::tempdir().expect("temporary directory");
        Server {
            child: None,
            dir,
            dicom_port: free_port(),
            http_port: free_port(),
            ae_title: ae_title.into(),
            extra_config: extra_config.to_string(),
            dicom_config: dicom_config.to_string(),
            http_config: http_config.to_string(),
            storage_config: String::new(),
            backend: SharedBackend::from_environment(),
            log_index: 0,
            token: String::new(),
            admin_password_from_env,
        }
    }

    /// A new API token for `user`, made with `haneul token create`.
    pub fn create_token(&self, user: &str, name: &str) -> String {
        let output = run(Command::new(haneul_bin())
            .args(["token", "create", user, "--name", name, "--config"])
            .arg(self.config_path()));
        assert!(output.status.success(), "haneul token create: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).expect("UTF-8 token").trim().to_string()
    }

    /// Add a user with `haneul user add` (password [`USER_PASSWORD`]); returns the name.
    pub fn add_user(&self, name: &str, role: &str) -> String {
        self.add_user_in_sites(name, role, &[])
    }

    /// [`Server::add_user`] limited to `sites`.
    pub fn add_user_in_sites(&self, name: &str, role: &str, sites: &[&str]) -> String {
        use std::io::Write;
        let mut command = Command::new(haneul_bin());
        command.args(["user", "add", name, "--role", role, "--password-stdin"]);
        for site in sites {
            command.args(["--site", site]);
        }
        let mut child = command
            .arg("--config")
            .arg(self.config_path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running haneul user add");
        child.stdin.take().expect("stdin").write_all(format!("{USER_PASSWORD}\n").as_bytes()).expect("password");
        let output = child.wait_with_output().expect("haneul user add");
        assert!(output.status.success(), "haneul user add: {}", String::from_utf8_lossy(&output.stderr));
        name.to_string()
    }

    /// The `Authorization` header value of the administrator's token.
    pub fn authorization(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// Wait until the server also listens on `port` (a listener of its own
    /// configuration, such as `[dicom.tls]`).
    pub fn wait_for_listener(&mut self, port: u16) {
        let log = self.log_path();
        let child = self.child.as_mut().expect("the server is running");
        wait_for_port(port, child, &log);
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("haneul.toml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("server-{}.log", self.log_index))
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.dicom_port)
    }

    /// Root URL of the DICOMweb service, e.g. `http://127.0.0.1:8080/dicom-web`.
    pub fn dicomweb_url(&self) -> String {
        format!("http://127.0.0.1:{}/dicom-web", self.http_port)
    }

    /// Root URL of the HTTP server (for `/api`, `/wado`, `/metrics`).
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The server's log so far (all runs).
    pub fn log(&self) -> String {
        (0..=self.log_index)
            .map(|i| std::fs::read_to_string(self.dir.path().join(format!("server-{i}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    fn write_config(&self) {
        let (backend_storage, backend_tables) = match &self.backend {
            // A test that names its own catalog keeps it.
            Some(backend) if self.extra_config.contains("[catalog]") => {
                (backend.storage_lines.clone(), s3_blobs(&backend.bucket))
            }
            Some(backend) => (backend.storage_lines.clone(), backend.tables.clone()),
            None => (String::new(), String::new()),
        };
        let config = format!(
            "[storage]\ndata_dir = {:?}\n{}{}\n\n[dicom]\nae_title = {:?}\nlisten = \"127.0.0.1:{}\"\n{}\n\n[http]\nlisten = \"127.0.0.1:{}\"\n{}\n\n[log]\nlevel = \"info,haneul_dimse=debug\"\n\n{}\n{}\n",
            self.data_dir().display().to_string(),
            self.storage_config,
            backend_storage,
            self.ae_title,
            self.dicom_port,
            self.dicom_config,
            self.http_port,
            self.http_config,
            self.extra_config,
            backend_tables
        );
        std::fs::write(self.config_path(), config).expect("writing config");
    }

    fn spawn(&mut self) {
        self.write_config();
        let log = std::fs::File::create(self.log_path()).expect("log file");
        let mut command = Command::new(haneul_bin());
        command
            .args(["serve", "--config"])
            .arg(self.config_path())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .stdin(Stdio::null())
            .env_remove("HANEUL_ADMIN_PASSWORD");
        if self.admin_password_from_env {
            command.env("HANEUL_ADMIN_PASSWORD", ADMIN_PASSWORD);
        }
        let mut child = command.spawn().expect("starting haneul serve");
        wait_for_port(self.dicom_port, &mut child, &self.log_path());
        wait_for_port(self.http_port, &mut child, &self.log_path());
        self.child = Some(child);
    }

    /// Stop with SIGTERM and wait (a clean shutdown).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// Kill with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stop, replace the extra TOML, and start again on the same data and ports.
    pub fn restart_with(&mut self, extra_config: &str) {
        extra_config.clone_into(&mut self.extra_config);
        self.restart();
    }

    /// Start again on the same data directory and ports.
    pub fn restart(&mut self) {
        self.stop();
        self.log_index += 1;
        self.spawn();
    }

    /// Start again after a crash (kill9) on the same data directory and ports.
    pub fn start_again(&mut self) {
        self.log_index += 1;
        self.spawn();
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("---- haneul server log ----\n{}", self.log());
        }
    }
}

/// DCMTK's Nagle setting costs 40 ms per message on loopback; tests set it off.
pub fn dcmtk(tool: &str) -> Command {
    let mut command = Command::new(require(tool));
    command.env("TCP_NODELAY", "1");
    command
}

/// An HTTP/1.1 response as [`http_request`] returns it.
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lower case, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// A plain HTTP/1.1 request to the server's HTTP port (one connection,
/// `Connection: close`); `headers` are added as given.
pub fn http_request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connecting to HTTP");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(body)).expect("sending the request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("reading the response");
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete response head");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|line| line.split(' ').nth(1)).and_then(|code| code.parse().ok()).unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let raw = &response[split + 4..];
    let chunked = headers.iter().any(|(name, value)| name == "transfer-encoding" && value.contains("chunked"));
    let body = if chunked { dechunk(raw) } else { raw.to_vec() };
    HttpResponse { status, headers, body }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..end]).ok().and_then(|size| usize::from_str_radix(size.trim(), 16).ok());
        let rest = &body[end + 2..];
        match size {
            Some(size) if size > 0 && rest.len() >= size => {
                out.extend_from_slice(&rest[..size]);
                body = rest[size..].strip_prefix(b"\r\n").unwrap_or(&rest[size..]);
            }
            _ => break,
        }
    }
    out
}

impl Server {
    /// A GET with the administrator's token.
    pub fn get(&self, path: &str, accept: &str) -> HttpResponse {
        let authorization = self.authorization();
        http_request(
            self.http_port,
            "GET",
            path,
            &[("Accept", accept), ("Authorization", &authorization), ("User-Agent", "haneul-tests")],
            b"",
        )
    }
}

/// (Study, Series, SOP Instance) UIDs of an instance.
pub type InstanceUids = (String, String, String);

/// The instances the node at `port` holds (QIDO-RS).
pub fn held_instances(port: u16, authorization: &str) -> BTreeSet<InstanceUids> {
    let response = http_request(
        port,
        "GET",
        "/dicom-web/instances?includefield=0020000D&includefield=0020000E",
        &[("Accept", "application/json"), ("Authorization", authorization)],
        b"",
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let text = |object: &serde_json::Value, tag: &str| object[tag]["Value"][0].as_str().unwrap_or_default().to_string();
    response
        .json()
        .as_array()
        .expect("an array")
        .iter()
        .map(|object| (text(object, "0020000D"), text(object, "0020000E"), text(object, "00080018")))
        .collect()
}

/// An instance's Part 10 file as the node at `port` stored it (WADO-RS,
/// `transfer-syntax=*`).
pub fn stored_file(port: u16, authorization: &str, (study, series, sop): &InstanceUids) -> Vec<u8> {
    let path = format!("/dicom-web/studies/{study}/series/{series}/instances/{sop}");
    let accept = "multipart/related; type=\"application/dicom\"; transfer-syntax=*";
    let response = http_request(port, "GET", &path, &[("Accept", accept), ("Authorization", authorization)], b"");
    assert_eq!(response.status, 200, "{path}: {}", response.text());
    let body = response.body;
    let magic = body.windows(4).position(|w| w == b"DICM").expect("a Part 10 file in the answer");
    let end = body.windows(4).rposition(|w| w == b"\r\n--").expect("the closing boundary");
    body[magic - 128..end].to_vec()
}

/// The data set of a Part 10 file: what follows its meta group, which each
/// node writes itself (naming the sender).
pub fn without_meta(file: &[u8]) -> Vec<u8> {
    let group_length = u32::from_le_bytes(file[140..144].try_into().expect("a file meta group")) as usize;
    file[144 + group_length..].to_vec()
}

/// The `[catalog]` table that puts a node's catalog in `database`.
pub fn postgres_catalog(database: &haneul_catalog::testing::TestDatabase) -> String {
    format!(
        "[catalog]\nengine = \"postgres\"\nurl = {:?}\npassword_file = {:?}\n",
        database.options.url, database.password_file
    )
}

/// Regular files under `dir`, recursively, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return files };
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
}

impl Server {
    /// Every blob file of this server as local paths: the files of its blob
    /// directory, or its bucket objects downloaded into `scratch`.
    pub fn blob_files(&self, scratch: &Path) -> Vec<PathBuf> {
        let Some(backend) = &self.backend else {
            return files_under(&self.data_dir().join("blobs"));
        };
        let config = haneul_storage::BlobConfig {
            backend: haneul_storage::BlobBackend::S3(backend.bucket.options.clone()),
            node: Some(SharedBackend::NODE.into()),
            read_cache_bytes: 0,
        };
        let store = haneul_storage::BlobStore::open_configured(
            scratch.join("unused"),
            scratch.join("downloads"),
            &config,
            false,
        )
        .expect("opening the test bucket");
        let mut files = Vec::new();
        for shard in store.shards_since("0000").expect("listing shards") {
            for rel_path in store.files_in_shard(&shard).expect("listing a shard") {
                let local = scratch.join(rel_path.replace('/', "_"));
                let mut object = store.open_blob(&rel_path).expect("downloading a blob");
                std::io::copy(&mut object, &mut std::fs::File::create(&local).expect("copy")).expect("copying a blob");
                files.push(local);
            }
        }
        files
    }
}

/// Set to `postgres+s3` to run every server of a test on its own fresh
/// PostgreSQL catalog and bucket prefix instead of the embedded default
/// (scripts/test.sh runs the interoperability suites this way too).
pub const BACKEND_VARIABLE: &str = "HANEUL_TEST_BACKEND";

/// A fresh catalog database and bucket prefix for one server.
struct SharedBackend {
    storage_lines: String,
    tables: String,
    _database: haneul_catalog::testing::TestDatabase,
    bucket: haneul_storage::testing::TestBucket,
}

impl SharedBackend {
    const NODE: &'static str = "node1";

    fn from_environment() -> Option<SharedBackend> {
        match std::env::var(BACKEND_VARIABLE).as_deref() {
            Err(_) | Ok("") | Ok("sqlite+disk") => None,
            Ok("postgres+s3") => {
                let database = haneul_catalog::testing::TestDatabase::create();
                let bucket = haneul_storage::testing::TestBucket::create();
                Some(SharedBackend {
                    storage_lines: format!("backend = \"s3\"\nnode = {:?}\n", SharedBackend::NODE),
                    tables: format!("{}\n{}", postgres_catalog(&database), s3_blobs(&bucket)),
                    _database: database,
                    bucket,
                })
            }
            Ok(other) => panic!("{BACKEND_VARIABLE}={other:?}: expected sqlite+disk or postgres+s3"),
        }
    }
}

/// The `[storage.s3]` table of a node keeping its blobs in `bucket`.
pub fn s3_blobs(bucket: &haneul_storage::testing::TestBucket) -> String {
    format!(
        "[storage.s3]\nendpoint = {:?}\nbucket = {:?}\nprefix = {:?}\naccess_key_id = {:?}\nsecret_access_key_file = {:?}\n",
        bucket.endpoint(),
        bucket.options.bucket,
        bucket.options.prefix,
        bucket.options.access_key_id.as_deref().unwrap_or_default(),
        bucket.secret_file
    )
}

/// Wait up to 60 s for `condition`; fail the test naming `what` otherwise.
pub fn eventually(what: &str, condition: impl FnMut() -> bool) {
    assert!(wait_until(Duration::from_secs(60), condition), "{what}: not within 60 s");
}

impl Server {
    /// The instances this node holds.
    pub fn instances(&self) -> BTreeSet<InstanceUids> {
        held_instances(self.http_port, &self.authorization())
    }

    /// An instance's data set as this node stored it.
    pub fn data_set(&self, instance: &InstanceUids) -> Vec<u8> {
        without_meta(&stored_file(self.http_port, &self.authorization(), instance))
    }

    /// C-STORE files of pydicom's test data with storescu, calling as `calling_ae`.
    pub fn store_samples(&self, calling_ae: &str, files: &[&str]) {
        let port = self.dicom_port.to_string();
        let paths = files.iter().map(|file| pydicom_data().join("test_files").join(file));
        let output =
            run(dcmtk("storescu").args(["-aet", calling_ae, "-aec", &self.ae_title, "127.0.0.1", &port]).args(paths));
        assert!(output.status.success(), "C-STORE of {files:?} to {} failed", self.ae_title);
    }

    /// The value of a series of `/metrics` (`name` or `name{labels}`); -1 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        let metrics = self.get("/metrics", "text/plain").text();
        let prefix = format!("{series} ");
        metrics.lines().find_map(|line| line.strip_prefix(&prefix)).and_then(|value| value.parse().ok()).unwrap_or(-1.0)
    }

    /// A replication metric of one peer.
    pub fn peer_metric(&self, name: &str, peer: &str) -> f64 {
        self.metric(&format!("{name}{{peer=\"{peer}\"}}"))
    }
}

/// stdout and stderr of a tool together (DCMTK logs on stderr).
pub fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stderr), String::from_utf8_lossy(&output.stdout))
}

/// Every `DIMSE Status : 0x....` in a DCMTK debug log, in order.
pub fn dimse_statuses(log: &str) -> Vec<u16> {
    log.lines()
        .filter(|line| line.contains("DIMSE Status"))
        .filter_map(|line| line.split("0x").nth(1))
        .filter_map(|hex| u16::from_str_radix(hex.get(..4)?, 16).ok())
        .collect()
}

/// Poll `condition` until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The audit records `haneul audit search --json` finds in a data
/// directory (newest first), narrowed by `args` (`--action`, `--actor`, …).
pub fn audit_search(data_dir: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let output = Command::new(haneul_bin())
        .args(["audit", "search", "--json", "--data"])
        .arg(data_dir)
        .args(args)
        .output()
        .expect("running haneul audit search");
    assert!(output.status.success(), "haneul audit search {args:?} failed: {}", text(&output));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("audit search printed no JSON array ({e})"))
}

/// The test PKI (`ca`, `server` for 127.0.0.1 and localhost, `client`), made with openssl.
#[allow(unused_imports)] // not every test binary has TLS tests
pub use haneul_tls::test_pki::{Pki, TEST_CLIENT_CN};
