//! Forwarding records to a syslog collector as DICOM audit messages
//! (PS3.15 Annex A.5, IHE ATNA) in RFC 5424 syslog messages, over UDP
//! (RFC 5426, one datagram each), TCP (RFC 6587 octet counting) or TLS
//! (RFC 5425, octet counting).
//!
//! The writer hands each record to the forwarder once it is on disk; the
//! forwarder runs on its own thread with a bounded queue, so a slow or absent
//! collector never holds up recording: a full queue drops the message
//! (counted), a failed send is counted and logged, and TCP and TLS reconnect
//! with a growing pause while keeping what waits.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::record::{Action, Entry, Outcome};

/// Messages waiting for the collector before new ones are dropped.
pub(crate) const QUEUE: usize = 8_192;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_PAUSE: Duration = Duration::from_millis(250);
const LONGEST_PAUSE: Duration = Duration::from_secs(30);

/// Facility authpriv (10), RFC 5424 §6.2.1.
const FACILITY: u8 = 10;
const SEVERITY_NOTICE: u8 = 5;
const SEVERITY_WARNING: u8 = 4;
pub const APP_NAME: &str = "haneul";
pub const MSG_ID: &str = "IHE+RFC-3881";

/// How messages travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

/// Where the collector is: `udp://host:514`, `tcp://host:6514`, `tls://host:6514`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub transport: Transport,
    pub host: String,
    pub port: u16,
}

impl Target {
    pub fn parse(text: &str) -> Result<Target, String> {
        let (scheme, rest) =
            text.split_once("://").ok_or_else(|| format!("{text:?} is not udp://, tcp:// or tls://host:port"))?;
        let transport = match scheme {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            "tls" => Transport::Tls,
            other => return Err(format!("unknown syslog transport {other:?} (udp, tcp or tls)")),
        };
        let (host, port) = match rest.strip_prefix('[') {
            Some(bracketed) => {
                let (host, port) = bracketed.split_once("]:").ok_or_else(|| format!("{text:?} has no port"))?;
                (host, port)
            }
            None => rest.rsplit_once(':').ok_or_else(|| format!("{text:?} has no port"))?,
        };
        let port: u16 = port.parse().map_err(|_| format!("{text:?}: {port:?} is not a port"))?;
        if host.is_empty() || port == 0 || host.contains(['/', ' ']) {
            return Err(format!("{text:?} is not a host and port"));
        }
        Ok(Target { transport, host: host.to_string(), port })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.transport {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Who sends: the audit source and the server's own active participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Our AE title: AuditSourceID and the server's UserID.
    pub source_id: String,
    /// The host name: the syslog HOSTNAME and the server's network access point.
    pub hostname: String,
    pub pid: u32,
}

impl Identity {
    pub fn new(source_id: impl Into<String>) -> Identity {
        Identity { source_id: source_id.into(), hostname: local_hostname(), pid: std::process::id() }
    }
}

/// The machine's name, or `localhost` when it cannot be read.
pub fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Settings of the forwarder.
#[derive(Debug, Clone)]
pub struct SyslogSettings {
    pub target: Target,
    /// PEM file of the certificate authorities the collector's certificate
    /// must chain to (TLS only; required there).
    pub ca_file: Option<PathBuf>,
    pub identity: Identity,
}

/// A coded value: csd-code, codeSystemName, originalText.
type Code = (&'static str, &'static str, &'static str);

const DCM: &str = "DCM";

/// EventID, EventActionCode and an optional EventTypeCode for an action.
fn event_codes(action: Action) -> (Code, char, Option<Code>) {
    match action {
        Action::Query => (("110112", DCM, "Query"), 'E', None),
        Action::Retrieve => (("110104", DCM, "DICOM Instances Transferred"), 'R', None),
        Action::View => (("110103", DCM, "DICOM Instances Accessed"), 'R', None),
        Action::Store => (("110104", DCM, "DICOM Instances Transferred"), 'C', None),
        Action::Delete => (("110105", DCM, "DICOM Study Deleted"), 'D', None),
        Action::Correct => (("110110", DCM, "Patient Record"), 'U', None),
        Action::Export => (("110106", DCM, "Export"), 'R', None),
        Action::Login | Action::LoginFailed => {
            (("110114", DCM, "User Authentication"), 'E', Some(("110122", DCM, "Login")))
        }
        Action::Logout => (("110114", DCM, "User Authentication"), 'E', Some(("110123", DCM, "Logout"))),
        Action::PermissionDenied => {
            (("110113", DCM, "Security Alert"), 'E', Some(("110132", DCM, "Use of Restricted Function")))
        }
        Action::ConfigChange => {
            (("110113", DCM, "Security Alert"), 'E', Some(("110131", DCM, "Software Configuration")))
        }
    }
}

/// EventOutcomeIndicator: 0 success, 4 minor failure (a refused or failed
/// request), 8 serious failure, 12 major failure.
fn outcome_indicator(entry: &Entry) -> u8 {
    match (entry.outcome, entry.action) {
        (Outcome::Success, Action::LoginFailed | Action::PermissionDenied) => 4,
        (Outcome::Success, _) => 0,
        (Outcome::Failure, _) => 4,
    }
}

/// Whether the peer sent the data to us (it is the source and we the
/// destination) or we sent it to the peer.
fn peer_is_source(action: Action) -> bool {
    !matches!(action, Action::Retrieve | Action::View | Action::Export)
}

/// Escape text for an XML attribute value or element content; characters
/// XML 1.0 does not allow become U+FFFD.
pub fn xml_escape(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

fn attribute(out: &mut String, name: &str, value: &str) {
    out.push(' ');
    out.push_str(name);
    out.push_str("=\"");
    xml_escape(value, out);
    out.push('"');
}

fn code(out: &mut String, element: &str, (value, system, text): Code) {
    out.push('<');
    out.push_str(element);
    attribute(out, "csd-code", value);
    attribute(out, "codeSystemName", system);
    attribute(out, "originalText", text);
    out.push_str("/>");
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC, microseconds), valid both as an
/// xs:dateTime and as an RFC 5424 TIMESTAMP.
pub fn timestamp(time: OffsetDateTime) -> String {
    let time = time.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        time.year(),
        u8::from(time.month()),
        time.day(),
        time.hour(),
        time.minute(),
        time.second(),
        time.microsecond()
    )
}

/// The DICOM audit message (PS3.15 A.5.1) for a record.
pub fn audit_message(entry: &Entry, identity: &Identity) -> String {
    let (event_id, action_code, type_code) = event_codes(entry.action);
    let mut out = String::with_capacity(1024 + 200 * (entry.patients.len() + entry.studies.len()));
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?><AuditMessage><EventIdentification");
    attribute(&mut out, "EventActionCode", &action_code.to_string());
    attribute(&mut out, "EventDateTime", &timestamp(entry.time));
    attribute(&mut out, "EventOutcomeIndicator", &outcome_indicator(entry).to_string());
    out.push('>');
    code(&mut out, "EventID", event_id);
    if let Some(type_code) = type_code {
        code(&mut out, "EventTypeCode", type_code);
    }
    if let Some(error) = entry.detail.get("error") {
        out.push_str("<EventOutcomeDescription>");
        match error {
            serde_json::Value::String(text) => xml_escape(text, &mut out),
            other => xml_escape(&other.to_string(), &mut out),
        }
        out.push_str("</EventOutcomeDescription>");
    }
    out.push_str("</EventIdentification>");

    let source_role: Code = ("110153", DCM, "Source Role ID");
    let destination_role: Code = ("110152", DCM, "Destination Role ID");
    let (peer_role, our_role) =
        if peer_is_source(entry.action) { (source_role, destination_role) } else { (destination_role, source_role) };
    // The peer: the user or calling AE that asked, from its IP address.
    out.push_str("<ActiveParticipant");
    attribute(&mut out, "UserID", if entry.actor.is_empty() { "unknown" } else { &entry.actor });
    // The identity its TLS client certificate vouched for, when it showed one.
    if let Some(serde_json::Value::String(subject)) = entry.detail.get(crate::TLS_SUBJECT) {
        attribute(&mut out, "AlternativeUserID", subject);
    }
    attribute(&mut out, "UserIsRequestor", "true");
    let host = crate::source_host(&entry.source);
    if !host.is_empty() {
        attribute(&mut out, "NetworkAccessPointID", host);
        let is_ip = host.parse::<std::net::IpAddr>().is_ok();
        attribute(&mut out, "NetworkAccessPointTypeCode", if is_ip { "2" } else { "1" });
    }
    out.push('>');
    code(&mut out, "RoleIDCode", peer_role);
    out.push_str("</ActiveParticipant>");
    // The server itself.
    out.push_str("<ActiveParticipant");
    attribute(&mut out, "UserID", &identity.source_id);
    attribute(&mut out, "AlternativeUserID", &identity.pid.to_string());
    attribute(&mut out, "UserIsRequestor", "false");
    attribute(&mut out, "NetworkAccessPointID", &identity.hostname);
    attribute(&mut out, "NetworkAccessPointTypeCode", "1");
    out.push('>');
    code(&mut out, "RoleIDCode", our_role);
    out.push_str("</ActiveParticipant>");

    out.push_str("<AuditSourceIdentification");
    attribute(&mut out, "AuditSourceID", &identity.source_id);
    out.push('>');
    code(&mut out, "AuditSourceTypeCode", ("4", DCM, "Application Server Process"));
    out.push_str("</AuditSourceIdentification>");

    for patient in &entry.patients {
        participant_object(&mut out, patient, "1", "1", ("2", "RFC-3881", "Patient Number"));
    }
    for study in &entry.studies {
        participant_object(&mut out, study, "2", "3", ("110180", DCM, "Study Instance UID"));
    }
    out.push_str("</AuditMessage>");
    out
}

fn participant_object(out: &mut String, id: &str, type_code: &str, role: &str, id_type: Code) {
    out.push_str("<ParticipantObjectIdentification");
    attribute(out, "ParticipantObjectID", id);
    attribute(out, "ParticipantObjectTypeCode", type_code);
    attribute(out, "ParticipantObjectTypeCodeRole", role);
    out.push('>');
    code(out, "ParticipantObjectIDTypeCode", id_type);
    out.push_str("</ParticipantObjectIdentification>");
}

/// A header field of RFC 5424: printable US-ASCII without spaces, at most
/// `max` characters, `-` when empty.
fn header_field(text: &str, max: usize) -> String {
    let field: String = text.chars().filter(|c| c.is_ascii_graphic()).take(max).collect();
    if field.is_empty() {
        "-".to_string()
    } else {
        field
    }
}

/// The RFC 5424 message for a record:
/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - BOM XML`.
pub fn syslog_message(entry: &Entry, identity: &Identity) -> Vec<u8> {
    let severity = if outcome_indicator(entry) == 0 { SEVERITY_NOTICE } else { SEVERITY_WARNING };
    let mut header = String::with_capacity(128);
    let _ = write!(
        header,
        "<{}>1 {} {} {} {} {} - ",
        FACILITY * 8 + severity,
        timestamp(entry.time),
        header_field(&identity.hostname, 255),
        APP_NAME,
        header_field(&identity.pid.to_string(), 128),
        MSG_ID
    );
    let xml = audit_message(entry, identity);
    let mut message = Vec::with_capacity(header.len() + 3 + xml.len());
    message.extend_from_slice(header.as_bytes());
    message.extend_from_slice(b"\xEF\xBB\xBF");
    message.extend_from_slice(xml.as_bytes());
    message
}

/// Octet-counting framing for stream transports (RFC 5425 §4.3, RFC 6587 §3.4.1).
pub fn octet_counted(message: &[u8]) -> Vec<u8> {
    let mut framed = format!("{} ", message.len()).into_bytes();
    framed.extend_from_slice(message);
    framed
}

#[derive(Default)]
pub(crate) struct SyslogCounters {
    pub sent: AtomicU64,
    /// Messages given up (after a failed UDP send, or at shutdown).
    pub failed: AtomicU64,
    /// Messages dropped because the forwarder's queue was full.
    pub dropped: AtomicU64,
    /// Failed sends and connection attempts.
    pub errors: AtomicU64,
}

/// A record on disk, on its way to the collector.
pub(crate) type Forwarded = Box<Entry>;

enum Connection {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

struct Sender {
    settings: SyslogSettings,
    tls: Option<Arc<rustls::ClientConfig>>,
    connection: Option<Connection>,
}

/// The TLS client settings: the collector's certificate must chain to the
/// authorities in `ca_file`.
pub fn tls_config(settings: &SyslogSettings) -> Result<Arc<rustls::ClientConfig>, String> {
    let path = settings.ca_file.as_ref().ok_or("a tls:// syslog target needs ca_file")?;
    haneul_tls::client_config(path).map_err(|error| error.to_string())
}

impl Sender {
    fn new(settings: SyslogSettings) -> Result<Sender, String> {
        let tls = match settings.target.transport {
            Transport::Tls => Some(tls_config(&settings)?),
            _ => None,
        };
        Ok(Sender { settings, tls, connection: None })
    }

    fn connect(&self) -> std::io::Result<Connection> {
        let target = &self.settings.target;
        let addresses: Vec<_> = (target.host.as_str(), target.port).to_socket_addrs()?.collect();
        let mut last_error = std::io::Error::new(std::io::ErrorKind::NotFound, "no address for the syslog host");
        if target.transport == Transport::Udp {
            for address in addresses {
                let local = if address.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
                match UdpSocket::bind(local).and_then(|socket| socket.connect(address).map(|()| socket)) {
                    Ok(socket) => return Ok(Connection::Udp(socket)),
                    Err(error) => last_error = error,
                }
            }
            return Err(last_error);
        }
        let mut stream = None;
        for address in addresses {
            match TcpStream::connect_timeout(&address, CONNECT_TIMEOUT) {
                Ok(connected) => {
                    stream = Some(connected);
                    break;
                }
                Err(error) => last_error = error,
            }
        }
        let stream = stream.ok_or(last_error)?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        stream.set_read_timeout(Some(WRITE_TIMEOUT))?;
        let _ = stream.set_nodelay(true);
        match &self.tls {
            None => Ok(Connection::Tcp(stream)),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                    .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
                let client = rustls::ClientConnection::new(Arc::clone(config), name).map_err(std::io::Error::other)?;
                let mut tls = rustls::StreamOwned::new(client, stream);
                // Finish the handshake now, so a refused certificate shows here.
                while tls.conn.is_handshaking() {
                    tls.conn.complete_io(&mut tls.sock)?;
                }
                Ok(Connection::Tls(Box::new(tls)))
            }
        }
    }

    fn send(&mut self, message: &[u8]) -> std::io::Result<()> {
        if self.connection.is_none() {
            self.connection = Some(self.connect()?);
        }
        let result = match self.connection.as_mut() {
            Some(Connection::Udp(socket)) => socket.send(message).map(|_| ()),
            Some(Connection::Tcp(stream)) => stream.write_all(&octet_counted(message)),
            Some(Connection::Tls(stream)) => stream.write_all(&octet_counted(message)).and_then(|()| stream.flush()),
            None => Ok(()),
        };
        if result.is_err() {
            self.connection = None;
        }
        result
    }
}

/// Start the forwarder thread reading `receiver`.
pub(crate) fn spawn(
    settings: SyslogSettings,
    receiver: Receiver<Forwarded>,
    counters: Arc<SyslogCounters>,
) -> Result<std::thread::JoinHandle<()>, String> {
    let sender = Sender::new(settings)?;
    std::thread::Builder::new()
        .name("haneul-syslog".into())
        .spawn(move || run(sender, receiver, &counters))
        .map_err(|error| error.to_string())
}

fn run(mut sender: Sender, receiver: Receiver<Forwarded>, counters: &SyslogCounters) {
    let target = sender.settings.target.to_string();
    let stream = sender.settings.target.transport != Transport::Udp;
    let mut waiting: VecDeque<Forwarded> = VecDeque::new();
    let mut closing = false;
    let mut pause = FIRST_PAUSE;
    let mut failing_since: Option<Instant> = None;
    loop {
        if waiting.is_empty() {
            if closing {
                break;
            }
            match receiver.recv() {
                Ok(entry) => waiting.push_back(entry),
                Err(_) => break,
            }
        }
        let Some(entry) = waiting.front() else { continue };
        let message = syslog_message(entry, &sender.settings.identity);
        match sender.send(&message) {
            Ok(()) => {
                waiting.pop_front();
                counters.sent.fetch_add(1, Ordering::Relaxed);
                if let Some(since) = failing_since.take() {
                    tracing::info!(%target, down_for = ?since.elapsed(), "syslog collector reachable again");
                }
                pause = FIRST_PAUSE;
            }
            Err(error) => {
                let errors = counters.errors.fetch_add(1, Ordering::Relaxed) + 1;
                if failing_since.is_none() || errors.is_power_of_two() {
                    tracing::warn!(%target, %error, errors, "cannot send an audit message to the syslog collector");
                }
                failing_since.get_or_insert_with(Instant::now);
                if !stream || closing {
                    waiting.pop_front();
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    if closing {
                        // Stopping: give up on what is left rather than wait.
                        counters.failed.fetch_add(waiting.len() as u64, Ordering::Relaxed);
                        waiting.clear();
                    }
                    continue;
                }
                // Pause before reconnecting, still taking in what arrives.
                let until = Instant::now() + pause;
                pause = (pause * 2).min(LONGEST_PAUSE);
                while let Some(left) = until.checked_duration_since(Instant::now()) {
                    match receiver.recv_timeout(left) {
                        Ok(entry) => keep(&mut waiting, entry, counters),
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => {
                            closing = true;
                            break;
                        }
                    }
                }
                continue;
            }
        }
        // Take in what arrived meanwhile without blocking.
        loop {
            match receiver.try_recv() {
                Ok(entry) => keep(&mut waiting, entry, counters),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    closing = true;
                    break;
                }
            }
        }
    }
}

fn keep(waiting: &mut VecDeque<Forwarded>, entry: Forwarded, counters: &SyslogCounters) {
    if waiting.len() < QUEUE {
        waiting.push_back(entry);
    } else {
        dropped(counters);
    }
}

pub(crate) fn dropped(counters: &SyslogCounters) {
    let dropped = counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
    if dropped.is_power_of_two() {
        tracing::warn!(dropped, "syslog forwarding queue full; audit message dropped (the trail keeps the record)");
    }
}

#[cfg(test)]
#[path = "syslog_tests.rs"]
mod tests;
