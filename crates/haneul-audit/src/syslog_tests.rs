use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use super::*;
use crate::Auditor;

type Element = (String, Vec<(String, String)>);

/// A small XML check: the declaration, balanced elements, quoted attributes,
/// only known entities; returns the start tags with their unescaped attributes.
fn parse_xml(xml: &str) -> Result<Vec<Element>, String> {
    let mut rest = xml.strip_prefix("<?xml").and_then(|r| r.split_once("?>")).ok_or("no XML declaration")?.1;
    let mut stack: Vec<String> = Vec::new();
    let mut elements = Vec::new();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('<') {
            let end = after.find('>').ok_or("unclosed tag")?;
            let tag = &after[..end];
            rest = &after[end + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                if stack.pop().as_deref() != Some(name) {
                    return Err(format!("</{name}> closes nothing open"));
                }
                continue;
            }
            let (tag, empty) = tag.strip_suffix('/').map_or((tag, false), |t| (t, true));
            let (name, mut attributes) = tag.split_once(' ').unwrap_or((tag, ""));
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(format!("bad element name {name:?}"));
            }
            if stack.is_empty() && !elements.is_empty() {
                return Err("a second root element".into());
            }
            let mut parsed = Vec::new();
            loop {
                attributes = attributes.trim_start();
                if attributes.is_empty() {
                    break;
                }
                let (key, after) = attributes.split_once("=\"").ok_or("attribute without a quoted value")?;
                let (value, after) = after.split_once('"').ok_or("unterminated attribute value")?;
                parsed.push((key.to_string(), unescape(value)?));
                attributes = after;
            }
            elements.push((name.to_string(), parsed));
            if !empty {
                stack.push(name.to_string());
            }
        } else {
            let end = rest.find('<').unwrap_or(rest.len());
            unescape(&rest[..end])?;
            if stack.is_empty() {
                return Err("text outside the root element".into());
            }
            rest = &rest[end..];
        }
    }
    if !stack.is_empty() {
        return Err(format!("unclosed elements {stack:?}"));
    }
    Ok(elements)
}

fn unescape(text: &str) -> Result<String, String> {
    if text.contains(['<', '>', '"']) {
        return Err(format!("unescaped markup in {text:?}"));
    }
    let mut pieces = text.split('&');
    let mut out = pieces.next().unwrap_or_default().to_string();
    for piece in pieces {
        let (entity, after) = piece.split_once(';').ok_or("unterminated entity")?;
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            number => number
                .strip_prefix('#')
                .and_then(|n| n.parse::<u32>().ok())
                .and_then(char::from_u32)
                .ok_or_else(|| format!("unknown entity &{number};"))?,
        };
        out.push(c);
        out.push_str(after);
    }
    Ok(out)
}

fn attr<'a>(element: &'a Element, key: &str) -> Option<&'a str> {
    element.1.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn all<'a>(elements: &'a [Element], name: &str) -> Vec<&'a Element> {
    elements.iter().filter(|e| e.0 == name).collect()
}

/// The parts of an RFC 5424 message: PRI, the six header fields after the
/// version, and the message after the nil structured data and the BOM.
fn parse_rfc5424(message: &[u8]) -> (u8, Vec<String>, String) {
    let text = std::str::from_utf8(message).expect("UTF-8");
    let rest = text.strip_prefix('<').expect("<PRI>");
    let (pri, rest) = rest.split_once('>').expect("<PRI>");
    let mut fields = rest.splitn(8, ' ');
    assert_eq!(fields.next(), Some("1"), "version");
    let header: Vec<String> = fields.by_ref().take(5).map(str::to_string).collect();
    assert_eq!(fields.next(), Some("-"), "no structured data");
    let body = fields.next().expect("MSG");
    let xml = body.strip_prefix('\u{FEFF}').expect("BOM before the XML");
    (pri.parse().expect("PRI"), header, xml.to_string())
}

fn identity() -> Identity {
    Identity { source_id: "HANEUL".into(), hostname: "pacs-1".into(), pid: 4242 }
}

#[test]
fn targets_parse() {
    assert_eq!(
        Target::parse("udp://collector:514").unwrap(),
        Target { transport: Transport::Udp, host: "collector".into(), port: 514 }
    );
    let tls = Target::parse("tls://[::1]:6514").unwrap();
    assert_eq!((tls.transport, tls.host.as_str(), tls.port), (Transport::Tls, "::1", 6514));
    assert_eq!(tls.to_string(), "tls://[::1]:6514");
    assert_eq!(Target::parse("tcp://10.0.0.5:6514").unwrap().transport, Transport::Tcp);
    for bad in ["collector:514", "http://x:1", "udp://x", "udp://:514", "udp://x:0", "udp://x:99999"] {
        assert!(Target::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_store_becomes_an_instances_transferred_message() {
    let entry = Entry::new(Action::Store, "MODALITY1", "10.1.2.3", "assoc-7")
        .patient("P<1>&\"x\"")
        .study("1.2.3.4")
        .study("1.2.3.5");
    let xml = audit_message(&entry, &identity());
    let elements = parse_xml(&xml).unwrap_or_else(|e| panic!("{e}: {xml}"));
    assert_eq!(elements[0].0, "AuditMessage");
    let event = &all(&elements, "EventIdentification")[0];
    assert_eq!(attr(event, "EventActionCode"), Some("C"));
    assert_eq!(attr(event, "EventOutcomeIndicator"), Some("0"));
    assert_eq!(attr(event, "EventDateTime"), Some(timestamp(entry.time).as_str()));
    assert_eq!(attr(all(&elements, "EventID")[0], "csd-code"), Some("110104"));
    let participants = all(&elements, "ActiveParticipant");
    assert_eq!(participants.len(), 2);
    assert_eq!(attr(participants[0], "UserID"), Some("MODALITY1"));
    assert_eq!(attr(participants[0], "NetworkAccessPointID"), Some("10.1.2.3"));
    assert_eq!(attr(participants[0], "NetworkAccessPointTypeCode"), Some("2"));
    assert_eq!(attr(participants[1], "UserID"), Some("HANEUL"));
    assert_eq!(attr(participants[1], "UserIsRequestor"), Some("false"));
    let roles: Vec<_> = all(&elements, "RoleIDCode").iter().map(|e| attr(e, "csd-code").unwrap()).collect();
    assert_eq!(roles, ["110153", "110152"]);
    assert_eq!(attr(all(&elements, "AuditSourceIdentification")[0], "AuditSourceID"), Some("HANEUL"));
    let objects = all(&elements, "ParticipantObjectIdentification");
    assert_eq!(objects.len(), 3);
    assert_eq!(attr(objects[0], "ParticipantObjectID"), Some("P<1>&\"x\""), "escaped and read back");
    assert_eq!(attr(objects[0], "ParticipantObjectTypeCode"), Some("1"));
    assert_eq!(attr(objects[0], "ParticipantObjectTypeCodeRole"), Some("1"));
    assert_eq!(attr(objects[2], "ParticipantObjectID"), Some("1.2.3.5"));
    assert_eq!(attr(objects[2], "ParticipantObjectTypeCode"), Some("2"));
    assert_eq!(attr(objects[2], "ParticipantObjectTypeCodeRole"), Some("3"));
    let id_types: Vec<_> =
        all(&elements, "ParticipantObjectIDTypeCode").iter().map(|e| attr(e, "csd-code").unwrap()).collect();
    assert_eq!(id_types, ["2", "110180", "110180"]);
    assert!(!xml.contains("P<1>"), "raw markup must not reach the XML");
}

#[test]
fn failures_and_security_events_are_coded() {
    let denied = Entry::new(Action::PermissionDenied, "alice", "[::1]:443", "r1");
    let elements = parse_xml(&audit_message(&denied, &identity())).unwrap();
    assert_eq!(attr(all(&elements, "EventID")[0], "csd-code"), Some("110113"));
    assert_eq!(attr(all(&elements, "EventTypeCode")[0], "csd-code"), Some("110132"));
    assert_eq!(attr(all(&elements, "EventIdentification")[0], "EventOutcomeIndicator"), Some("4"));
    assert_eq!(attr(all(&elements, "ActiveParticipant")[0], "NetworkAccessPointID"), Some("::1"));

    assert_eq!(attr(all(&elements, "ActiveParticipant")[0], "AlternativeUserID"), None, "no TLS client certificate");
    let over_tls =
        Entry::new(Action::PermissionDenied, "CT1", "10.0.0.7", "a").detail(crate::TLS_SUBJECT, "CN=CT1,O=A&B");
    let elements = parse_xml(&audit_message(&over_tls, &identity())).unwrap();
    let requester = all(&elements, "ActiveParticipant")[0];
    assert_eq!((attr(requester, "UserID"), attr(requester, "AlternativeUserID")), (Some("CT1"), Some("CN=CT1,O=A&B")));

    let failed = Entry::new(Action::Query, "WS", "10.0.0.9", "a").failed("bad key </EventID>\u{1}\ttab");
    let xml = audit_message(&failed, &identity());
    let elements = parse_xml(&xml).unwrap_or_else(|e| panic!("{e}: {xml}"));
    assert_eq!(attr(all(&elements, "EventID")[0], "csd-code"), Some("110112"));
    assert_eq!(attr(all(&elements, "EventIdentification")[0], "EventActionCode"), Some("E"));
    assert_eq!(attr(all(&elements, "EventIdentification")[0], "EventOutcomeIndicator"), Some("4"));
    assert!(xml.contains("<EventOutcomeDescription>bad key &lt;/EventID&gt;\u{FFFD}&#9;tab</EventOutcomeDescription>"));

    let login = Entry::new(Action::Login, "bob", "10.0.0.1", "r2");
    let elements = parse_xml(&audit_message(&login, &identity())).unwrap();
    assert_eq!(attr(all(&elements, "EventID")[0], "csd-code"), Some("110114"));
    assert_eq!(attr(all(&elements, "EventTypeCode")[0], "csd-code"), Some("110122"));
    let deleted = Entry::new(Action::Delete, "admin", "10.0.0.1", "r3").study("1.2");
    let elements = parse_xml(&audit_message(&deleted, &identity())).unwrap();
    assert_eq!(attr(all(&elements, "EventID")[0], "csd-code"), Some("110105"));
    assert_eq!(attr(all(&elements, "EventIdentification")[0], "EventActionCode"), Some("D"));
    let viewed = Entry::new(Action::View, "anonymous", "127.0.0.1:5555", "r4");
    let elements = parse_xml(&audit_message(&viewed, &identity())).unwrap();
    assert_eq!(attr(all(&elements, "EventID")[0], "csd-code"), Some("110103"));
    assert_eq!(attr(all(&elements, "ActiveParticipant")[0], "NetworkAccessPointID"), Some("127.0.0.1"));
}

#[test]
fn rfc5424_framing() {
    let entry = Entry::new(Action::Query, "WS", "10.0.0.9", "a").patient("P1");
    let mut identity = identity();
    identity.hostname = "pacs one\u{7f}".into();
    let message = syslog_message(&entry, &identity);
    let (pri, header, xml) = parse_rfc5424(&message);
    assert_eq!(pri, 10 * 8 + 5, "authpriv.notice");
    assert_eq!(header[0], timestamp(entry.time));
    assert!(time::OffsetDateTime::parse(&header[0], &time::format_description::well_known::Rfc3339).is_ok());
    assert_eq!(header[0].len(), "2026-01-01T00:00:00.000000Z".len());
    assert_eq!(header[1], "pacsone", "no spaces or controls in HOSTNAME");
    assert_eq!(header[2], "haneul");
    assert_eq!(header[3], "4242");
    assert_eq!(header[4], "IHE+RFC-3881");
    assert!(parse_xml(&xml).is_ok());

    let failed = Entry::new(Action::Store, "M", "10.0.0.9", "a").failed("disk full");
    assert_eq!(parse_rfc5424(&syslog_message(&failed, &identity)).0, 10 * 8 + 4, "authpriv.warning");
    assert_eq!(octet_counted(b"<85>1 x"), b"7 <85>1 x");
}

fn settings(target: &str) -> SyslogSettings {
    SyslogSettings { target: Target::parse(target).unwrap(), ca_file: None, identity: identity() }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn records_reach_a_udp_collector_after_they_are_written() {
    let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
    collector.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (auditor, _) = Auditor::open(dir.path()).unwrap();
    auditor.forward_to_syslog(settings(&format!("udp://{}", collector.local_addr().unwrap()))).unwrap();
    assert!(auditor.forward_to_syslog(settings("udp://127.0.0.1:9")).is_err(), "only once");
    auditor.record(Entry::new(Action::Store, "MOD", "10.0.0.2", "a").patient("PAT-1"));
    let mut buffer = vec![0u8; 65_536];
    let length = collector.recv(&mut buffer).expect("a datagram");
    let (_, _, xml) = parse_rfc5424(&buffer[..length]);
    let elements = parse_xml(&xml).unwrap();
    assert_eq!(attr(all(&elements, "ParticipantObjectIdentification")[0], "ParticipantObjectID"), Some("PAT-1"));
    // Only after the record is on disk.
    assert_eq!(crate::verify(dir.path()).unwrap().records, 1);
    wait_for("the sent counter", || auditor.stats().syslog_sent == 1);
}

#[test]
fn tcp_reconnects_after_the_collector_drops_the_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (auditor, _) = Auditor::open(dir.path()).unwrap();
    auditor.forward_to_syslog(settings(&format!("tcp://{address}"))).unwrap();

    auditor.record(Entry::new(Action::Query, "ONE", "10.0.0.2", "a"));
    let (first, _) = listener.accept().unwrap();
    first.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(first);
    let message = read_octet_counted(&mut reader);
    assert!(parse_xml(&parse_rfc5424(&message).2).unwrap().iter().any(|e| attr(e, "UserID") == Some("ONE")));
    drop(reader);

    // A send on the closed connection fails (a write or two may still go
    // into the void first) and the forwarder connects again, keeping the
    // message that failed: keep recording until a second connection comes.
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut recorded = 0;
    let second = loop {
        if let Ok((stream, _)) = listener.accept() {
            break stream;
        }
        assert!(Instant::now() < deadline, "the forwarder did not reconnect");
        recorded += 1;
        auditor.record(Entry::new(Action::Query, format!("N{recorded}"), "10.0.0.2", "a"));
        auditor.flush();
        std::thread::sleep(Duration::from_millis(20));
    };
    second.set_nonblocking(false).unwrap();
    second.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(second);
    let message = read_octet_counted(&mut reader);
    let elements = parse_xml(&parse_rfc5424(&message).2).unwrap();
    let user = attr(all(&elements, "ActiveParticipant")[0], "UserID").unwrap();
    assert!(user.starts_with('N'), "a later record, not {user}");
    assert!(auditor.stats().syslog_errors >= 1);
    drop(auditor);
}

fn read_octet_counted(reader: &mut impl BufRead) -> Vec<u8> {
    let mut length = Vec::new();
    reader.read_until(b' ', &mut length).unwrap();
    let length: usize = std::str::from_utf8(&length).unwrap().trim().parse().expect("an octet count");
    let mut message = vec![0u8; length];
    reader.read_exact(&mut message).unwrap();
    message
}

#[test]
fn tls_needs_a_ca_file() {
    assert!(tls_config(&settings("tls://collector:6514")).is_err());
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let mut with_empty = settings("tls://collector:6514");
    with_empty.ca_file = Some(empty);
    assert!(tls_config(&with_empty).is_err());
}

#[test]
fn records_reach_a_tls_collector_that_the_ca_vouches_for() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let pki = haneul_tls::test_pki::Pki::new();
    let stranger = haneul_tls::test_pki::Pki::new();
    let certificates: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(pki.path("server.pem")).unwrap().collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(pki.path("server.key")).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .unwrap();
    let server = Arc::new(server);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let (sender, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let (server, sender) = (Arc::clone(&server), sender.clone());
            std::thread::spawn(move || {
                stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let connection = rustls::ServerConnection::new(server).unwrap();
                let mut reader = BufReader::new(rustls::StreamOwned::new(connection, stream));
                let mut length = Vec::new();
                while reader.read_until(b' ', &mut length).is_ok_and(|n| n > 0) {
                    let count: usize = std::str::from_utf8(&length).unwrap().trim().parse().unwrap();
                    let mut message = vec![0u8; count];
                    if reader.read_exact(&mut message).is_err() || sender.send(message).is_err() {
                        break;
                    }
                    length.clear();
                }
            });
        }
    });

    // A collector whose certificate the configured CA did not sign is refused.
    let audit_dir = tempfile::tempdir().unwrap();
    let (auditor, _) = Auditor::open(audit_dir.path()).unwrap();
    let mut wrong = settings(&format!("tls://{address}"));
    wrong.ca_file = Some(stranger.path("ca.pem"));
    auditor.forward_to_syslog(wrong).unwrap();
    auditor.record(Entry::new(Action::Query, "NOPE", "10.0.0.3", "a"));
    wait_for("a refused handshake", || auditor.stats().syslog_errors > 0);
    drop(auditor);

    let audit_dir = tempfile::tempdir().unwrap();
    let (auditor, _) = Auditor::open(audit_dir.path()).unwrap();
    let mut right = settings(&format!("tls://{address}"));
    right.ca_file = Some(pki.path("ca.pem"));
    auditor.forward_to_syslog(right).unwrap();
    auditor.record(Entry::new(Action::View, "alice", "10.0.0.4", "b").study("1.2.840.1"));
    let message = received.recv_timeout(Duration::from_secs(10)).expect("a message over TLS");
    let elements = parse_xml(&parse_rfc5424(&message).2).unwrap();
    assert_eq!(attr(all(&elements, "ActiveParticipant")[0], "UserID"), Some("alice"), "not the refused one");
    assert_eq!(attr(all(&elements, "ParticipantObjectIdentification")[0], "ParticipantObjectID"), Some("1.2.840.1"));
}
