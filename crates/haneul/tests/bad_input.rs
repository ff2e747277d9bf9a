//! Hostile and malformed input on the DICOM port: the server must refuse it
//! cleanly (A-ABORT or a closed connection, a failure status for a bad data
//! set), log it against the association, keep serving everyone else, and
//! leave nothing half-written in the archive. Peers that stall, on the DICOM
//! and the HTTP port, lose their connections instead of holding them.

mod common;

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{dcmtk, free_port, haneul_bin, python, run, wait_for_port, Server};
use haneul_dicom::meta::{read_layout, FileLayout};
use haneul_dimse::command::{field, status, tag, Command as DimseCommand};
use haneul_dimse::{Client, ProposedContext, RequestParams, StoreData};
use rand::{Rng, SeedableRng};

const VERIFICATION: &str = "1.2.840.10008.1.1";
const SECONDARY_CAPTURE: &str = "1.2.840.10008.5.1.4.1.1.7";
const PRIVATE_CLASS: &str = "1.2.826.0.1.3680043.9.9999.1.1";
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const APPLICATION_CONTEXT: &str = "1.2.840.10008.3.1.1.1";

const A_ASSOCIATE_RQ: u8 = 0x01;
const A_ASSOCIATE_AC: u8 = 0x02;
const A_ASSOCIATE_RJ: u8 = 0x03;
const P_DATA_TF: u8 = 0x04;
const A_ABORT: u8 = 0x07;
/// Message control header of a PDV holding a whole command.
const LAST_COMMAND_FRAGMENT: u8 = 0x03;

/// How long the server may take to answer bad input before the test calls it hung.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// PDU bytes, built by hand (PS3.8 9.3) so that they can be broken at will.

fn ae_title(title: &str) -> [u8; 16] {
    let mut field = [b' '; 16];
    field[..title.len()].copy_from_slice(title.as_bytes());
    field
}

/// An item or sub-item with a 16-bit length.
fn item(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind, 0];
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A PDU with a 32-bit length.
fn pdu(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind, 0];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn associate_rq(called: &str, calling: &str, contexts: &[(u8, &str, &[&str])]) -> Vec<u8> {
    let mut body = vec![0, 1, 0, 0];
    body.extend_from_slice(&ae_title(called));
    body.extend_from_slice(&ae_title(calling));
    body.extend_from_slice(&[0; 32]);
    body.extend(item(0x10, APPLICATION_CONTEXT.as_bytes()));
    for (id, abstract_syntax, transfer_syntaxes) in contexts {
        let mut context = vec![*id, 0, 0, 0];
        context.extend(item(0x30, abstract_syntax.as_bytes()));
        for syntax in *transfer_syntaxes {
            context.extend(item(0x40, syntax.as_bytes()));
        }
        body.extend(item(0x20, &context));
    }
    let mut user = item(0x51, &16_384u32.to_be_bytes());
    user.extend(item(0x52, b"1.2.826.0.1.3680043.9.9999.7"));
    body.extend(item(0x50, &user));
    pdu(A_ASSOCIATE_RQ, &body)
}

fn standard_rq(server: &dyn Node) -> Vec<u8> {
    associate_rq(
        &server.ae_title(),
        "BADPEER",
        &[(1, VERIFICATION, &[IMPLICIT_LE]), (3, SECONDARY_CAPTURE, &[EXPLICIT_LE, IMPLICIT_LE])],
    )
}

/// A P-DATA-TF PDU with one PDV.
fn p_data(context_id: u8, control: u8, data: &[u8]) -> Vec<u8> {
    let mut body = ((data.len() + 2) as u32).to_be_bytes().to_vec();
    body.push(context_id);
    body.push(control);
    body.extend_from_slice(data);
    pdu(P_DATA_TF, &body)
}

/// Presentation context results of an A-ASSOCIATE-AC body: (id, result).
fn context_results(ac_body: &[u8]) -> Vec<(u8, u8)> {
    let mut results = Vec::new();
    let mut position = 68;
    while position + 4 <= ac_body.len() {
        let kind = ac_body[position];
        let length = u16::from_be_bytes([ac_body[position + 2], ac_body[position + 3]]) as usize;
        let body = &ac_body[position + 4..(position + 4 + length).min(ac_body.len())];
        if kind == 0x21 && body.len() >= 3 {
            results.push((body[0], body[2]));
        }
        position += 4 + length;
    }
    results
}

// ---------------------------------------------------------------------------
// Reading the server's answer.

#[derive(Debug)]
enum Reply {
    Pdu(u8, Vec<u8>),
    Closed,
}

fn is_closed(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
    )
}

/// The next PDU from the server, or `Closed`; panics if nothing comes within `within`.
fn read_reply(stream: &mut TcpStream, within: Duration, what: &str) -> Reply {
    stream.set_read_timeout(Some(within)).expect("read timeout");
    let mut header = [0u8; 6];
    if let Err(error) = stream.read_exact(&mut header) {
        if is_closed(&error) {
            return Reply::Closed;
        }
        panic!("{what}: the server neither answered nor closed the connection within {within:?} ({error})");
    }
    let length = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as usize;
    assert!(length <= 1 << 20, "{what}: the server sent a PDU header claiming {length} bytes: {header:02X?}");
    let mut body = vec![0u8; length];
    if let Err(error) = stream.read_exact(&mut body) {
        if is_closed(&error) {
            panic!("{what}: the server closed the connection in the middle of a PDU of type {:02X}", header[0]);
        }
        panic!("{what}: a PDU of type {:02X} from the server was not completed ({error})", header[0]);
    }
    Reply::Pdu(header[0], body)
}

/// The server must end the connection: with an A-ABORT (always, when
/// `abort_required`), or by closing it. Anything else, or silence, fails.
fn expect_abort(stream: &mut TcpStream, abort_required: bool, what: &str) {
    match read_reply(stream, ANSWER_WITHIN, what) {
        Reply::Pdu(A_ABORT, body) => {
            assert_eq!(body.len(), 4, "{what}: A-ABORT body {body:02X?}");
            // After an A-ABORT the connection must close.
            match read_reply(stream, ANSWER_WITHIN, what) {
                Reply::Closed => {}
                other => panic!("{what}: after the A-ABORT the server sent {other:?} instead of closing"),
            }
        }
        Reply::Closed if !abort_required => {}
        Reply::Closed => panic!("{what}: the server closed an established association without an A-ABORT"),
        Reply::Pdu(kind, body) => {
            panic!("{what}: expected an A-ABORT, got a PDU of type {kind:02X} ({} bytes): {body:02X?}", body.len())
        }
    }
}

/// Send bytes, then close the sending side; the server hanging up first is not an error.
fn send_then_half_close(stream: &mut TcpStream, bytes: &[u8]) {
    for result in [stream.write_all(bytes), stream.shutdown(Shutdown::Write)] {
        if let Err(error) = result {
            assert!(is_closed(&error) || error.kind() == ErrorKind::NotConnected, "sending failed: {error}");
        }
    }
}

fn connect(server: &dyn Node) -> (TcpStream, String) {
    let stream = TcpStream::connect(server.address()).expect("connecting to the DICOM port");
    stream.set_nodelay(true).expect("nodelay");
    let local = stream.local_addr().expect("local address").to_string();
    (stream, local)
}

/// Open an association with raw bytes; checks the A-ASSOCIATE-AC accepted the echo context.
fn open_association(server: &dyn Node) -> (TcpStream, String) {
    let (mut stream, local) = connect(server);
    stream.write_all(&standard_rq(server)).expect("sending A-ASSOCIATE-RQ");
    match read_reply(&mut stream, ANSWER_WITHIN, "A-ASSOCIATE-RQ") {
        Reply::Pdu(A_ASSOCIATE_AC, body) => {
            let results = context_results(&body);
            assert!(results.contains(&(1, 0)) && results.contains(&(3, 0)), "contexts refused: {results:?}");
        }
        other => panic!("a valid A-ASSOCIATE-RQ was not accepted: {other:?}"),
    }
    (stream, local)
}

/// A C-ECHO on an association opened with [`open_association`]: proves the
/// hand-made association works before it is broken on purpose.
fn raw_echo(stream: &mut TcpStream) {
    let mut request = DimseCommand::new(field::C_ECHO_RQ);
    request.set_u16(tag::MESSAGE_ID, 7).set_text(tag::AFFECTED_SOP_CLASS_UID, VERIFICATION);
    request.set_has_data_set(false);
    stream.write_all(&p_data(1, LAST_COMMAND_FRAGMENT, &request.encode())).expect("sending C-ECHO-RQ");
    match read_reply(stream, ANSWER_WITHIN, "C-ECHO-RQ") {
        Reply::Pdu(P_DATA_TF, body) => {
            assert!(body.len() > 6 && body[5] & 0x03 == 0x03, "C-ECHO-RSP is not one whole command PDV: {body:02X?}");
            let response = DimseCommand::decode(&body[6..]).expect("C-ECHO-RSP decodes");
            assert_eq!(response.command_field(), Some(field::C_ECHO_RSP));
            assert_eq!(response.u16(tag::MESSAGE_ID_BEING_RESPONDED_TO), Some(7));
            assert_eq!(response.status(), Some(status::SUCCESS));
        }
        other => panic!("no C-ECHO-RSP: {other:?}"),
    }
}

/// What the checks below need of a running server.
trait Node {
    fn log(&self) -> String;
    fn data_dir(&self) -> PathBuf;
    fn address(&self) -> String;
    fn ae_title(&self) -> String;
    /// Stop cleanly (SIGTERM) and wait.
    fn stop(&mut self);
}

impl Node for Server {
    fn log(&self) -> String {
        Server::log(self)
    }
    fn data_dir(&self) -> PathBuf {
        Server::data_dir(self)
    }
    fn address(&self) -> String {
        Server::address(self)
    }
    fn ae_title(&self) -> String {
        self.ae_title.clone()
    }
    fn stop(&mut self) {
        Server::stop(self)
    }
}

/// A server with settings in its `[dicom]` section, which the harness's
/// `Server::start_with` cannot add (it appends after its own `[dicom]`).
struct TunedServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

impl TunedServer {
    fn start(dicom_settings: &str) -> TunedServer {
        let dir = tempfile::tempdir().expect("temporary directory");
        let port = free_port();
        let config = format!(
            "[storage]\ndata_dir = {:?}\n\n[dicom]\nae_title = \"HANEUL\"\nlisten = \"127.0.0.1:{port}\"\n{dicom_settings}\n\n[http]\nlisten = \"\"\n\n[log]\nlevel = \"info,haneul_dimse=debug\"\n",
            dir.path().join("data").display().to_string()
        );
        let config_path = dir.path().join("haneul.toml");
        std::fs::write(&config_path, config).expect("writing config");
        let log_path = dir.path().join("server.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut child = Command::new(haneul_bin())
            .args(["serve", "--config"])
            .arg(&config_path)
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("starting haneul serve");
        wait_for_port(port, &mut child, &log_path);
        TunedServer { child: Some(child), dir, port }
    }
}

impl Node for TunedServer {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    fn ae_title(&self) -> String {
        "HANEUL".into()
    }
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }
}

impl Drop for TunedServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- haneul server log ----\n{}", self.log());
        }
    }
}

/// Wait until a server log line contains every needle; returns it.
fn wait_for_log_line(server: &dyn Node, needles: &[&str]) -> String {
    let deadline = Instant::now() + ANSWER_WITHIN;
    loop {
        let log = server.log();
        if let Some(line) = log.lines().find(|line| needles.iter().all(|needle| line.contains(needle))) {
            return line.to_string();
        }
        if Instant::now() > deadline {
            panic!("no server log line contains all of {needles:?}; log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The log must tie a warning about this connection to its association id.
fn assert_logged_against_association(server: &dyn Node, local: &str) -> String {
    let peer = format!("peer={local}");
    let line = wait_for_log_line(server, &["WARN", "association{id=", &peer]);
    eprintln!("logged: {line}");
    line
}

fn assert_echo_works(server: &dyn Node) {
    let address = server.address();
    let (host, port) = address.rsplit_once(':').expect("host:port");
    let echo = run(dcmtk("echoscu").args(["-aec", &server.ae_title(), host, port]));
    assert!(echo.status.success(), "the server stopped answering C-ECHO after bad input");
}

// ---------------------------------------------------------------------------
// Before any association.

#[test]
fn garbage_before_association_is_refused_and_the_server_keeps_serving() {
    let server = Server::start();

    // Someone points a web browser at the DICOM port, and keeps the connection open.
    let (mut stream, local) = connect(&server);
    stream.write_all(b"GET / HTTP/1.1\r\nHost: pacs\r\nAccept: */*\r\n\r\n").expect("write");
    expect_abort(&mut stream, false, "an HTTP request");
    assert_logged_against_association(&server, &local);

    // Random bytes of various lengths, the sender then closing its side.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x4841_4e45_554c);
    for round in 0..6 {
        let length = [1usize, 5, 6, 7, 300, 70_000][round];
        let garbage: Vec<u8> = (0..length).map(|_| rng.gen()).collect();
        let (mut stream, local) = connect(&server);
        // The server may hang up before it has read everything: that is fine.
        send_then_half_close(&mut stream, &garbage);
        expect_abort(&mut stream, false, &format!("{length} random bytes"));
        assert_logged_against_association(&server, &local);
    }

    // Random bytes behind a plausible A-ASSOCIATE-RQ header of matching length:
    // the control PDU decoder gets the garbage.
    for length in [10usize, 68, 74, 200, 4000] {
        let garbage: Vec<u8> = (0..length).map(|_| rng.gen()).collect();
        let (mut stream, local) = connect(&server);
        stream.write_all(&pdu(A_ASSOCIATE_RQ, &garbage)).expect("write");
        expect_abort(&mut stream, false, &format!("A-ASSOCIATE-RQ of {length} random bytes"));
        assert_logged_against_association(&server, &local);
    }
    assert_echo_works(&server);
}

#[test]
fn p_data_before_association_is_refused() {
    let server = Server::start();
    let mut request = DimseCommand::new(field::C_ECHO_RQ);
    request.set_u16(tag::MESSAGE_ID, 1).set_text(tag::AFFECTED_SOP_CLASS_UID, VERIFICATION);
    let (mut stream, local) = connect(&server);
    stream.write_all(&p_data(1, LAST_COMMAND_FRAGMENT, &request.encode())).expect("write");
    expect_abort(&mut stream, false, "P-DATA-TF before association");
    assert_logged_against_association(&server, &local);
    assert_echo_works(&server);
}

#[test]
fn association_request_of_absurd_length_is_refused_at_once() {
    let server = Server::start();
    // 0xFFFFFFF0 bytes announced, a few sent, the connection left open: the
    // server must not wait for (or allocate) four gigabytes.
    let mut bytes = vec![A_ASSOCIATE_RQ, 0, 0xFF, 0xFF, 0xFF, 0xF0];
    bytes.extend_from_slice(&standard_rq(&server)[6..]);
    let (mut stream, local) = connect(&server);
    stream.write_all(&bytes).expect("write");
    expect_abort(&mut stream, false, "A-ASSOCIATE-RQ announcing 0xFFFFFFF0 bytes");
    assert_logged_against_association(&server, &local);
    let rss = resident_kib(&server);
    assert!(rss < 512 * 1024, "the server holds {rss} KiB after an absurd PDU length");
    assert_echo_works(&server);
}

fn resident_kib(server: &Server) -> u64 {
    let pid = server.pid().expect("server running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn truncated_association_requests_are_refused() {
    let server = Server::start();
    let full = standard_rq(&server);

    // Cut in the middle, then the peer closes.
    for cut in [3usize, 6, 40, full.len() / 2, full.len() - 1] {
        let (mut stream, local) = connect(&server);
        send_then_half_close(&mut stream, &full[..cut]);
        expect_abort(&mut stream, false, &format!("A-ASSOCIATE-RQ cut at {cut} of {} bytes, then closed", full.len()));
        assert_logged_against_association(&server, &local);
    }

    // Cut, with the PDU length fixed up to match: the PDU is complete but its
    // items overrun it. The connection stays open, so the server must decide.
    for cut in [20usize, 74, 80, full.len() - 30] {
        let mut bytes = full[..cut].to_vec();
        bytes[2..6].copy_from_slice(&((cut - 6) as u32).to_be_bytes());
        let (mut stream, local) = connect(&server);
        stream.write_all(&bytes).expect("write");
        expect_abort(&mut stream, false, &format!("A-ASSOCIATE-RQ whose items overrun its length {}", cut - 6));
        assert_logged_against_association(&server, &local);
    }
    assert_echo_works(&server);
}

#[test]
fn wrong_called_ae_title_is_rejected() {
    let server = Server::start();
    let (mut stream, _) = connect(&server);
    stream.write_all(&associate_rq("NOT_HANEUL", "BADPEER", &[(1, VERIFICATION, &[IMPLICIT_LE])])).expect("write");
    match read_reply(&mut stream, ANSWER_WITHIN, "A-ASSOCIATE-RQ to another AE title") {
        // Result 1 (permanent), source 1 (service user), reason 7 (called AE title not recognized).
        Reply::Pdu(A_ASSOCIATE_RJ, body) => assert_eq!(&body[1..], &[1, 1, 7], "A-ASSOCIATE-RJ {body:02X?}"),
        other => panic!("expected an A-ASSOCIATE-RJ, got {other:?}"),
    }
    let echo = run(dcmtk("echoscu").args(["-aec", "NOT_HANEUL", "127.0.0.1", &server.dicom_port.to_string()]));
    assert!(!echo.status.success(), "echoscu calling the wrong AE title succeeded");
    assert_echo_works(&server);
}

// ---------------------------------------------------------------------------
// Inside an established association.

#[test]
fn pdv_longer_than_its_pdu_aborts_the_association() {
    let server = Server::start();
    let mut request = DimseCommand::new(field::C_ECHO_RQ);
    request.set_u16(tag::MESSAGE_ID, 9).set_text(tag::AFFECTED_SOP_CLASS_UID, VERIFICATION);
    let command = request.encode();

    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    // PDV item length 1000 in a PDU whose body holds far fewer bytes.
    let mut body = 1000u32.to_be_bytes().to_vec();
    body.extend_from_slice(&[1, LAST_COMMAND_FRAGMENT]);
    body.extend_from_slice(&command);
    cases.push(("PDV item length beyond the PDU", pdu(P_DATA_TF, &body)));
    // PDV item length 0 and 1: shorter than its own header.
    for length in [0u32, 1] {
        let mut body = length.to_be_bytes().to_vec();
        body.extend_from_slice(&[1, LAST_COMMAND_FRAGMENT]);
        cases.push(("PDV item length below 2", pdu(P_DATA_TF, &body)));
    }
    // A P-DATA-TF without any PDV, and one ending in a partial PDV header.
    cases.push(("P-DATA-TF without PDVs", pdu(P_DATA_TF, &[])));
    let mut body = p_data(1, LAST_COMMAND_FRAGMENT, &command)[6..].to_vec();
    body.extend_from_slice(&[0, 0, 0]);
    cases.push(("P-DATA-TF ending in a partial PDV header", pdu(P_DATA_TF, &body)));

    for (what, bytes) in cases {
        let (mut stream, local) = open_association(&server);
        raw_echo(&mut stream);
        stream.write_all(&bytes).expect("write");
        expect_abort(&mut stream, true, what);
        assert_logged_against_association(&server, &local);
    }
    assert_echo_works(&server);
}

#[test]
fn p_data_pdu_beyond_the_announced_maximum_aborts_the_association() {
    let server = Server::start();
    let (mut stream, local) = open_association(&server);
    raw_echo(&mut stream);
    // The server announced 262144 (the default max_pdu_length); claim 16 MiB,
    // send only the beginning, keep the connection open.
    let mut bytes = vec![P_DATA_TF, 0];
    bytes.extend_from_slice(&(16u32 << 20).to_be_bytes());
    bytes.extend_from_slice(&((16u32 << 20) - 4).to_be_bytes());
    bytes.extend_from_slice(&[3, 0x02]);
    bytes.extend_from_slice(&[0u8; 1000]);
    stream.write_all(&bytes).expect("write");
    expect_abort(&mut stream, true, "P-DATA-TF of 16 MiB");
    assert_logged_against_association(&server, &local);
    assert_echo_works(&server);
}

#[test]
fn garbage_command_set_aborts_the_association() {
    let server = Server::start();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let random: Vec<u8> = (0..200).map(|_| rng.gen()).collect();
    let mut valid = DimseCommand::new(field::C_ECHO_RQ);
    valid.set_u16(tag::MESSAGE_ID, 11).set_text(tag::AFFECTED_SOP_CLASS_UID, VERIFICATION);
    let valid = valid.encode();
    // A command element claiming more bytes than the command set has.
    let mut overrun = valid.clone();
    overrun.extend_from_slice(&[0x00, 0x00, 0x00, 0x10, 0xFF, 0xFF, 0x00, 0x00, 1, 2]);
    // Well-formed group 0000 elements, but no Command Field.
    let no_field: Vec<u8> = [0u8, 0, 0x10, 0x01, 2, 0, 0, 0, 11, 0].to_vec();
    // Elements of group 0008 in a command set.
    let wrong_group: Vec<u8> = [8u8, 0, 0x16, 0, 4, 0, 0, 0, b'1', b'.', b'2', 0].to_vec();

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes as the command set", p_data(1, LAST_COMMAND_FRAGMENT, &random)),
        ("command element overrunning the command set", p_data(1, LAST_COMMAND_FRAGMENT, &overrun)),
        ("command set without a Command Field", p_data(1, LAST_COMMAND_FRAGMENT, &no_field)),
        ("command set with group 0008 elements", p_data(1, LAST_COMMAND_FRAGMENT, &wrong_group)),
        ("truncated command set", p_data(1, LAST_COMMAND_FRAGMENT, &valid[..valid.len() - 3])),
        ("command on a presentation context never proposed", p_data(99, LAST_COMMAND_FRAGMENT, &valid)),
        ("data fragment where a command is expected", p_data(1, 0x02, &random)),
    ];
    for (what, bytes) in cases {
        let (mut stream, local) = open_association(&server);
        raw_echo(&mut stream);
        stream.write_all(&bytes).expect("write");
        expect_abort(&mut stream, true, what);
        assert_logged_against_association(&server, &local);
    }
    assert_echo_works(&server);
}

// ---------------------------------------------------------------------------
// C-STORE of bad data sets through Haneul's own SCU.

/// Instances written by pydicom; returns name -> (path, SOP Instance UID).
const GENERATE: &str = r#"
import json, os, sys
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
made = {}

def make(name, rows, drop=(), sop_class="1.2.840.10008.5.1.4.1.1.7"):
    uid = generate_uid()
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uid
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Edge^Case"
    ds.PatientID = "EDGE-" + name
    ds.StudyDate = "20240101"
    ds.Modality = "OT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = 256
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(i % 251 for i in range(rows * 256))
    for keyword in drop:
        delattr(ds, keyword)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = os.path.join(out, name + ".dcm")
    ds.save_as(path, enforce_file_format=True)
    made[name] = [path, uid]

make("valid", 64)
make("valid2", 64)
make("big", 600)
make("no_study", 64, drop=["StudyInstanceUID"])
make("no_series", 64, drop=["SeriesInstanceUID"])
make("no_sop_instance", 64, drop=["SOPInstanceUID"])
make("private_class", 16, sop_class="1.2.826.0.1.3680043.9.9999.1.1")
print(json.dumps(made))
"#;

struct Generated {
    files: serde_json::Value,
}

impl Generated {
    fn new(dir: &Path) -> Generated {
        let output = run(Command::new(python()).arg("-c").arg(GENERATE).arg(dir));
        assert!(output.status.success(), "generating test instances failed");
        Generated { files: serde_json::from_slice(&output.stdout).expect("generator JSON") }
    }

    fn path(&self, name: &str) -> PathBuf {
        PathBuf::from(self.files[name][0].as_str().expect("path"))
    }

    fn uid(&self, name: &str) -> String {
        self.files[name][1].as_str().expect("uid").to_string()
    }

    /// The data set of a generated Part 10 file (what C-STORE carries).
    fn dataset(&self, name: &str) -> Vec<u8> {
        let bytes = std::fs::read(self.path(name)).expect("reading generated file");
        let FileLayout::Part10(meta) = read_layout(&mut std::io::Cursor::new(&bytes)).expect("layout") else {
            panic!("generated file has no meta group");
        };
        bytes[meta.dataset_offset as usize..].to_vec()
    }
}

fn request_params(server: &dyn Node) -> RequestParams {
    RequestParams {
        calling_ae: "EDGESCU".into(),
        called_ae: server.ae_title(),
        max_pdu_length: 65_536,
        timeout: Duration::from_secs(20),
        tls: None,
    }
}

async fn connect_client(server: &dyn Node) -> (Client, u8) {
    let proposed = [ProposedContext::new(SECONDARY_CAPTURE, &[EXPLICIT_LE])];
    let client = Client::connect(&server.address(), &request_params(server), &proposed).await.expect("association");
    let context_id = client.info().find_context(SECONDARY_CAPTURE, None).expect("SC context accepted").id;
    (client, context_id)
}

/// Store and return (status, error comment).
async fn store(client: &mut Client, context_id: u8, sop_uid: &str, data: &[u8]) -> (u16, String) {
    let response = client
        .store(context_id, SECONDARY_CAPTURE, sop_uid, StoreData::Bytes(data), None)
        .await
        .unwrap_or_else(|error| panic!("C-STORE of {sop_uid} got no response: {error}"));
    let comment = response.text(tag::ERROR_COMMENT).unwrap_or_default().to_string();
    (response.status().expect("C-STORE-RSP has a status"), comment)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

#[test]
fn bad_data_sets_get_failure_statuses_and_leave_nothing_behind() {
    let mut server = TunedServer::start("max_dataset_bytes = 100000");
    let work = tempfile::tempdir().expect("tempdir");
    let generated = Generated::new(work.path());
    let valid = generated.dataset("valid");
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let garbage: Vec<u8> = (0..3000).map(|_| rng.gen()).collect();

    runtime().block_on(async {
        let (mut client, context_id) = connect_client(&server).await;
        let valid_uid = generated.uid("valid");
        let cases: Vec<(&str, String, Vec<u8>, u16)> = vec![
            ("cut in the middle of Pixel Data", valid_uid.clone(), valid[..valid.len() - 5000].to_vec(), 0xC000),
            ("cut in the middle of the header", valid_uid.clone(), valid[..301].to_vec(), 0xC000),
            ("random bytes", valid_uid.clone(), garbage.clone(), 0xC000),
            ("no Study Instance UID", generated.uid("no_study"), generated.dataset("no_study"), 0xA900),
            ("no Series Instance UID", generated.uid("no_series"), generated.dataset("no_series"), 0xA900),
            ("no SOP Instance UID", generated.uid("no_sop_instance"), generated.dataset("no_sop_instance"), 0xA900),
            ("SOP Instance UID differing from the command", generated.uid("valid2"), valid.clone(), 0xA900),
        ];
        for (what, uid, data, expected) in &cases {
            let (code, comment) = store(&mut client, context_id, uid, data).await;
            assert_eq!(code, *expected, "{what}: status {code:04X} ({comment}), expected {expected:04X}");
            eprintln!("{what}: {code:04X} {comment}");
        }
        // The association is still usable, and a good instance is stored.
        let (code, comment) = store(&mut client, context_id, &valid_uid, &valid).await;
        assert_eq!(code, status::SUCCESS, "valid instance after bad ones: {comment}");

        // Over max_dataset_bytes: the association is aborted, no response.
        let big = generated.dataset("big");
        assert!(big.len() > 100_000);
        let result =
            client.store(context_id, SECONDARY_CAPTURE, &generated.uid("big"), StoreData::Bytes(&big), None).await;
        match result {
            Err(error) => eprintln!("oversized data set: {error}"),
            Ok(response) => panic!("an oversized data set was answered with {:04X?}", response.status()),
        }
        wait_for_log_line(&server, &["WARN", "association{id=", "data set exceeds the configured maximum"]);

        // Others are still served.
        let (mut client, context_id) = connect_client(&server).await;
        let (code, comment) =
            store(&mut client, context_id, &generated.uid("valid2"), &generated.dataset("valid2")).await;
        assert_eq!(code, status::SUCCESS, "valid instance after the abort: {comment}");
        client.release().await.expect("release");
    });

    let expected: BTreeSet<String> = [generated.uid("valid"), generated.uid("valid2")].into_iter().collect();
    assert_archive_holds_exactly(&mut server, &expected);
}

/// The catalog holds exactly `expected`; verify is clean; every blob file is
/// referenced and every reference has its file (checked while the server
/// runs, ignoring its empty pre-created files, and again after it stopped).
fn assert_archive_holds_exactly(server: &mut dyn Node, expected: &BTreeSet<String>) {
    let rows = catalog_rows(&server.data_dir());
    let uids: BTreeSet<String> = rows.iter().map(|(uid, _)| uid.clone()).collect();
    assert_eq!(&uids, expected, "catalogued instances");
    let referenced: BTreeSet<String> = rows.iter().map(|(_, path)| path.clone()).collect();
    let non_empty: BTreeSet<String> =
        blob_files(&server.data_dir()).into_iter().filter(|(_, size)| *size > 0).map(|(p, _)| p).collect();
    assert_eq!(non_empty, referenced, "blob files with content vs catalog references (server running)");
    let report = verify(&server.data_dir());
    assert_eq!(report["problems"], serde_json::json!([]), "verify: {report}");
    assert_eq!(report["instances_checked"], expected.len(), "verify: {report}");

    server.stop();
    let all: BTreeSet<String> = blob_files(&server.data_dir()).into_iter().map(|(path, _)| path).collect();
    assert_eq!(all, referenced, "blob files vs catalog references after a clean stop");
}

/// (SOP Instance UID, blob path) of every catalogued instance.
fn catalog_rows(data_dir: &Path) -> Vec<(String, String)> {
    let script = "import json, sqlite3, sys\n\
                  db = sqlite3.connect(sys.argv[1])\n\
                  print(json.dumps(db.execute('SELECT sop_uid, blob_path FROM instances').fetchall()))\n";
    let output = run(Command::new(python()).arg("-c").arg(script).arg(data_dir.join("catalog.sqlite")));
    assert!(output.status.success(), "reading the catalog failed");
    serde_json::from_slice(&output.stdout).expect("catalog rows")
}

/// Every file under blobs/, as (path relative to blobs/, size).
fn blob_files(data_dir: &Path) -> Vec<(String, u64)> {
    let root = data_dir.join("blobs");
    let mut found = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries {
            let entry = entry.expect("directory entry");
            let path = entry.path();
            let metadata = entry.metadata().expect("metadata");
            if metadata.is_dir() {
                stack.push(path);
            } else {
                let relative = path.strip_prefix(&root).expect("under blobs").to_string_lossy().into_owned();
                found.push((relative, metadata.len()));
            }
        }
    }
    found
}

fn verify(data_dir: &Path) -> serde_json::Value {
    let output = run(Command::new(haneul_bin()).arg("verify").arg("--data").arg(data_dir).arg("--json"));
    assert!(output.status.success(), "haneul verify reported problems");
    serde_json::from_slice(&output.stdout).expect("verify JSON")
}

// ---------------------------------------------------------------------------
// Unknown SOP classes.

#[test]
fn unknown_sop_class_is_not_accepted() {
    let mut server = Server::start();
    let work = tempfile::tempdir().expect("tempdir");
    let generated = Generated::new(work.path());
    let port = server.dicom_port.to_string();

    // Control: the same kind of file with a standard class goes through.
    let store =
        run(dcmtk("storescu").args(["-aec", &server.ae_title, "127.0.0.1", &port]).arg(generated.path("valid")));
    assert!(store.status.success(), "storescu could not store a standard instance");

    let store = run(dcmtk("storescu")
        .args(["-v", "-aec", &server.ae_title, "127.0.0.1", &port])
        .arg(generated.path("private_class")));
    let text = format!("{}{}", String::from_utf8_lossy(&store.stdout), String::from_utf8_lossy(&store.stderr));
    assert!(!store.status.success(), "storescu reported success for a private SOP class:\n{text}");
    assert!(!text.contains("Received Store Response (Success)"), "{text}");

    // DCMTK refuses such a file before proposing it, so propose it here:
    // the context must be rejected as "abstract syntax not supported" (3).
    let (mut stream, _) = connect(&server);
    stream
        .write_all(&associate_rq(
            &server.ae_title,
            "BADPEER",
            &[(1, PRIVATE_CLASS, &[EXPLICIT_LE, IMPLICIT_LE]), (3, VERIFICATION, &[IMPLICIT_LE])],
        ))
        .expect("write");
    match read_reply(&mut stream, ANSWER_WITHIN, "A-ASSOCIATE-RQ with a private abstract syntax") {
        Reply::Pdu(A_ASSOCIATE_AC, body) => {
            let results = context_results(&body);
            assert!(results.contains(&(1, 3)), "private abstract syntax not refused: {results:?}");
            assert!(results.contains(&(3, 0)), "verification refused: {results:?}");
        }
        other => panic!("expected an A-ASSOCIATE-AC, got {other:?}"),
    }
    drop(stream);

    // Haneul's SCU: the context is refused, and a C-STORE on it anyway ends the association.
    runtime().block_on(async {
        let proposed = [
            ProposedContext::new(PRIVATE_CLASS, &[EXPLICIT_LE]),
            ProposedContext::new(SECONDARY_CAPTURE, &[EXPLICIT_LE]),
        ];
        let mut client = Client::connect(&server.address(), &request_params(&server), &proposed).await.expect("assoc");
        assert!(client.info().find_context(PRIVATE_CLASS, None).is_none(), "private class accepted");
        let data = generated.dataset("private_class");
        let result =
            client.store(1, PRIVATE_CLASS, &generated.uid("private_class"), StoreData::Bytes(&data), None).await;
        if let Ok(response) = result {
            assert_ne!(response.status(), Some(status::SUCCESS), "stored on a refused presentation context");
        }
    });

    let expected: BTreeSet<String> = [generated.uid("valid")].into_iter().collect();
    assert_archive_holds_exactly(&mut server, &expected);
}

// ---------------------------------------------------------------------------
// Peers that stall, and the association limit.

/// A C-STORE-RQ command set for a Secondary Capture instance.
fn c_store_rq(message_id: u16, sop_uid: &str) -> Vec<u8> {
    let mut request = DimseCommand::new(field::C_STORE_RQ);
    request
        .set_u16(tag::MESSAGE_ID, message_id)
        .set_u16(tag::PRIORITY, 0)
        .set_text(tag::AFFECTED_SOP_CLASS_UID, SECONDARY_CAPTURE)
        .set_text(tag::AFFECTED_SOP_INSTANCE_UID, sop_uid);
    request.set_has_data_set(true);
    request.encode()
}

#[test]
fn stalled_associations_are_aborted_after_the_idle_timeout() {
    let mut server = TunedServer::start("idle_timeout_seconds = 2");
    let node: &dyn Node = &server;
    let work = tempfile::tempdir().expect("tempdir");
    let generated = Generated::new(work.path());
    let dataset = generated.dataset("valid");
    let started = Instant::now();

    // Silent after the association.
    let (mut silent, silent_peer) = open_association(node);
    // Half a PDU, then silence.
    let (mut half_pdu, half_pdu_peer) = open_association(node);
    half_pdu.write_all(&p_data(1, LAST_COMMAND_FRAGMENT, &c_store_rq(1, "1.2.3"))[..20]).expect("write");
    // Half a C-STORE data set, then silence.
    let (mut half_store, half_store_peer) = open_association(node);
    half_store.write_all(&p_data(3, LAST_COMMAND_FRAGMENT, &c_store_rq(1, &generated.uid("valid")))).expect("write");
    half_store.write_all(&p_data(3, 0x00, &dataset[..dataset.len() / 2])).expect("write");

    for (stream, peer, what) in [
        (&mut silent, &silent_peer, "an association with no request"),
        (&mut half_pdu, &half_pdu_peer, "an association stalled in the middle of a PDU"),
        (&mut half_store, &half_store_peer, "an association stalled in the middle of a C-STORE data set"),
    ] {
        // Two seconds of idle timeout, with generous slack for a loaded machine.
        let left = Duration::from_secs(15).saturating_sub(started.elapsed());
        match read_reply(stream, left.max(Duration::from_millis(1)), what) {
            Reply::Pdu(A_ABORT, _) => {}
            other => panic!("{what}: expected an A-ABORT after the idle timeout, got {other:?}"),
        }
        wait_for_log_line(node, &["association{id=", &format!("peer={peer}"), "idle"]);
    }
    let expected = BTreeSet::new();
    assert_archive_holds_exactly(&mut server, &expected);
}

/// Open an association, retrying while the server answers "busy" (a slot
/// is freed only once the session that held it has ended); panics after
/// [`ANSWER_WITHIN`].
fn open_association_when_free(node: &dyn Node) -> (TcpStream, String) {
    let deadline = Instant::now() + ANSWER_WITHIN;
    loop {
        let (mut stream, local) = connect(node);
        stream.write_all(&standard_rq(node)).expect("sending A-ASSOCIATE-RQ");
        match read_reply(&mut stream, ANSWER_WITHIN, "A-ASSOCIATE-RQ") {
            Reply::Pdu(A_ASSOCIATE_AC, _) => return (stream, local),
            Reply::Pdu(A_ASSOCIATE_RJ, body) if body[1] == 2 && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => panic!("no association slot came free within {ANSWER_WITHIN:?}: {other:?}"),
        }
    }
}

#[test]
fn association_slots_come_back_after_aborted_associations() {
    let server = TunedServer::start("max_associations = 2");
    let node: &dyn Node = &server;
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    // Associations that end in every abort path, and peers that just vanish.
    for round in 0..9 {
        let (mut stream, _) = open_association_when_free(node);
        let bytes = match round % 3 {
            0 => p_data(1, LAST_COMMAND_FRAGMENT, &(0..64).map(|_| rng.gen()).collect::<Vec<u8>>()),
            1 => pdu(P_DATA_TF, &[0, 0, 0, 0]),
            _ => vec![P_DATA_TF, 0, 0xFF, 0xFF, 0xFF, 0xFF],
        };
        stream.write_all(&bytes).expect("write");
        expect_abort(&mut stream, true, &format!("abort round {round}"));
        drop(open_association_when_free(node));
    }
    // Both slots are free again...
    let first = open_association_when_free(node);
    let second = open_association_when_free(node);
    // ...and a third association is refused as transient (temporary congestion or local limit exceeded).
    let (mut third, _) = connect(node);
    third.write_all(&standard_rq(node)).expect("write");
    match read_reply(&mut third, ANSWER_WITHIN, "third association") {
        Reply::Pdu(A_ASSOCIATE_RJ, body) => {
            assert_eq!(body[1], 2, "rejection of a third association is not transient: {body:02X?}");
            assert_eq!(body[2], 3, "rejection source is not the service provider (presentation): {body:02X?}");
        }
        other => panic!("a third association was not rejected: {other:?}"),
    }
    drop((first, second));
    // Released associations give their slots back too.
    drop(open_association_when_free(node));
}

#[test]
fn c_find_identifier_over_max_identifier_bytes_aborts_the_association() {
    const STUDY_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
    let server = TunedServer::start("max_identifier_bytes = 2048");
    let node: &dyn Node = &server;
    let (mut stream, local) = connect(node);
    stream
        .write_all(&associate_rq(&node.ae_title(), "BADPEER", &[(1, STUDY_ROOT_FIND, &[EXPLICIT_LE])]))
        .expect("write");
    match read_reply(&mut stream, ANSWER_WITHIN, "A-ASSOCIATE-RQ for C-FIND") {
        Reply::Pdu(A_ASSOCIATE_AC, body) => assert!(context_results(&body).contains(&(1, 0)), "C-FIND refused"),
        other => panic!("association for C-FIND not accepted: {other:?}"),
    }
    let mut request = DimseCommand::new(field::C_FIND_RQ);
    request
        .set_u16(tag::MESSAGE_ID, 1)
        .set_u16(tag::PRIORITY, 0)
        .set_text(tag::AFFECTED_SOP_CLASS_UID, STUDY_ROOT_FIND);
    request.set_has_data_set(true);
    stream.write_all(&p_data(1, LAST_COMMAND_FRAGMENT, &request.encode())).expect("write");
    // Query/Retrieve Level STUDY, then a Patient's Name of 4000 bytes, in two fragments.
    let mut identifier = vec![0x08, 0x00, 0x52, 0x00, b'C', b'S', 6, 0];
    identifier.extend_from_slice(b"STUDY ");
    identifier.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, b'P', b'N']);
    identifier.extend_from_slice(&4000u16.to_le_bytes());
    identifier.extend(std::iter::repeat_n(b'A', 4000));
    let (head, tail) = identifier.split_at(1500);
    stream.write_all(&p_data(1, 0x00, head)).expect("write");
    stream.write_all(&p_data(1, 0x02, tail)).expect("write");
    expect_abort(&mut stream, true, "a C-FIND identifier of 4000 bytes over a limit of 2048");
    assert_logged_against_association(node, &local);
    assert_echo_works(node);
}

/// A C-GET of `study_uid` from a client that then neither reads nor
/// answers anything: the server's only association slot must come free by
/// itself, after its 2 s idle timeout, for the reason logged as `why`.
fn c_get_then_silence(node: &dyn Node, study_uid: &str, why: &str) {
    use haneul_dicom::charset::SpecificCharacterSet;
    use haneul_dicom::{tags, write::Encoding, Dataset, Element, VR};
    use haneul_dimse::association::request;
    use haneul_dimse::identifier::encode_identifier;
    use haneul_dimse::sop::STUDY_ROOT_GET;

    let address = node.address();
    runtime().block_on(async {
        let proposed = [
            ProposedContext::new(STUDY_ROOT_GET, &[EXPLICIT_LE]),
            ProposedContext { scp_role: true, ..ProposedContext::new(SECONDARY_CAPTURE, &[EXPLICIT_LE]) },
        ];
        let mut silent = request(&address, &request_params(node), &proposed).await.expect("association for C-GET");
        let context_id = silent.info.find_context(STUDY_ROOT_GET, None).expect("C-GET context accepted").id;
        let mut identifier = Dataset::new();
        identifier.put(Element::text(tags::QUERY_RETRIEVE_LEVEL, VR::CS, "STUDY"));
        identifier.put(Element::text(tags::STUDY_INSTANCE_UID, VR::UI, study_uid));
        let encoded = encode_identifier(&mut identifier, &SpecificCharacterSet::utf8(), Encoding::EXPLICIT_LE)
            .expect("identifier");
        let mut get = DimseCommand::new(field::C_GET_RQ);
        get.set_u16(tag::MESSAGE_ID, 1).set_u16(tag::PRIORITY, 0).set_text(tag::AFFECTED_SOP_CLASS_UID, STUDY_ROOT_GET);
        silent.writer.send(context_id, &get, Some(&encoded)).await.expect("sending C-GET-RQ");
        let (replacement, _) = open_association_when_free(node);
        wait_for_log_line(node, &["association{id=", why]);
        drop((replacement, silent));
    });
    assert_echo_works(node);
}

#[test]
fn a_peer_that_stops_reading_a_c_get_is_dropped_and_its_slot_comes_back() {
    let server = TunedServer::start("idle_timeout_seconds = 2\nmax_associations = 1");
    let work = tempfile::tempdir().expect("tempdir");
    // Nothing of the first 16 MB instance is read: once the socket buffers
    // are full, the server's write waits, and gives up after 2 s.
    let (study_uid, _) = store_large_study(&server, work.path());
    c_get_then_silence(&server, &study_uid, "peer stopped reading");
}

#[test]
fn a_c_get_requester_that_never_answers_a_sub_operation_is_dropped() {
    let server = TunedServer::start("idle_timeout_seconds = 2\nmax_associations = 1");
    let work = tempfile::tempdir().expect("tempdir");
    // Small instances: the first one fits in the socket buffers, and the
    // server waits for its C-STORE answer, which never comes.
    let study = common::sending::generate_sized(work.path(), "small", 3, 64);
    store_generated(&server, &study);
    c_get_then_silence(&server, &study.study, "idle association aborted");
}

/// Store a study of three 16 MB instances with storescu; its Study Instance
/// UID and total size in bytes. One instance is more than loopback's socket
/// buffers hold, so that a peer that reads nothing stalls the first send.
fn store_large_study(node: &dyn Node, work: &Path) -> (String, u64) {
    let study = common::sending::generate_sized(work, "large", 3, 65_535);
    store_generated(node, &study);
    let size = study.files.keys().map(|file| std::fs::metadata(file).expect("generated file").len()).sum();
    (study.study, size)
}

/// C-STORE a generated study to `node` with storescu.
fn store_generated(node: &dyn Node, study: &common::sending::Round) {
    let files: Vec<PathBuf> = study.files.keys().map(PathBuf::from).collect();
    let address = node.address();
    let (_, port) = address.rsplit_once(':').expect("host:port");
    let port = port.parse().expect("a port");
    common::orthanc::store_with_storescu("EDGESCU", &node.ae_title(), port, &files);
}

/// Read until the server closes the connection; the bytes read. Panics if
/// it stays open with nothing to read for `within`.
fn read_until_closed(stream: &mut TcpStream, within: Duration, what: &str) -> u64 {
    stream.set_read_timeout(Some(within)).expect("read timeout");
    let mut total = 0u64;
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return total,
            Ok(read) => total += read as u64,
            Err(error) if is_closed(&error) => return total,
            Err(error) => panic!("{what}: the server kept the connection open ({error}) after {total} bytes"),
        }
    }
}

#[test]
fn http_clients_that_say_nothing_or_stop_reading_lose_their_connections() {
    let server = Server::start_with_http("idle_timeout_seconds = 2", "");
    let work = tempfile::tempdir().expect("tempdir");
    let (study_uid, study_bytes) = store_large_study(&server, work.path());
    let connect = || TcpStream::connect(("127.0.0.1", server.http_port)).expect("connecting to the HTTP port");
    let started = Instant::now();
    let mut silent = connect();
    let mut partial = connect();
    partial.write_all(b"GET /api/status HTTP/1.1\r\nHost: haneul\r\n").expect("half a request");
    // A whole request and its answer, then an idle keep-alive connection.
    let mut kept_alive = connect();
    let request =
        format!("GET /api/status HTTP/1.1\r\nHost: haneul\r\nAuthorization: {}\r\n\r\n", server.authorization());
    kept_alive.write_all(request.as_bytes()).expect("request");
    kept_alive.set_read_timeout(Some(ANSWER_WITHIN)).expect("read timeout");
    let mut answer = [0u8; 12];
    kept_alive.read_exact(&mut answer).expect("an answer to the whole request");
    assert_eq!(&answer, b"HTTP/1.1 200", "answer to GET /api/status");
    // A download of the whole study (about 48 MB) that the client does not read.
    let mut download = connect();
    let request = format!(
        "GET /dicom-web/studies/{study_uid} HTTP/1.1\r\nHost: haneul\r\nAuthorization: {}\r\n\
         Accept: multipart/related; type=\"application/dicom\"; transfer-syntax=*\r\n\r\n",
        server.authorization()
    );
    download.write_all(request.as_bytes()).expect("request");

    // Idle timeout 2 s (and so 2 s for a first request and for headers);
    // 10 s of slack each for a loaded machine.
    for (stream, what) in [
        (&mut silent, "a connection that sent nothing"),
        (&mut partial, "a connection that sent half its headers"),
        (&mut kept_alive, "an idle keep-alive connection"),
    ] {
        read_until_closed(stream, ANSWER_WITHIN, what);
    }
    // The download's client has read nothing for several idle timeouts: the
    // server gave up on it, so fewer bytes than the study's come before the end.
    while started.elapsed() < Duration::from_secs(6) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let received = read_until_closed(&mut download, ANSWER_WITHIN, "a download its client stopped reading");
    assert!(received < study_bytes, "the whole study came ({received} bytes) although the client stopped reading");
    let status = http_status(&server);
    assert_eq!(status, 200, "the server stopped answering after the stalled clients");
}

fn http_status(server: &Server) -> u16 {
    common::http_request(server.http_port, "GET", "/api/status", &[("Authorization", &server.authorization())], b"")
        .status
}
