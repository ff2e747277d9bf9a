//! Audit records forwarded to a syslog collector: a listener in the test
//! receives, over UDP and over TCP, RFC 5424 messages with DICOM audit
//! messages (PS3.15 A.5) inside, for a DCMTK C-STORE and a QIDO-RS query.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{dcmtk, pydicom_data, run, Server};

const PATIENT: &str = "1CT1";
const STUDY: &str = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322";

type Element = (String, Vec<(String, String)>);

/// A small XML check (declaration, balanced elements, quoted attributes,
/// known entities); returns the start tags with their unescaped attributes.
fn parse_xml(xml: &str) -> Result<Vec<Element>, String> {
    let mut rest = xml.strip_prefix("<?xml").and_then(|r| r.split_once("?>")).ok_or("no XML declaration")?.1;
    let mut open: Vec<String> = Vec::new();
    let mut elements = Vec::new();
    while let Some(start) = rest.find('<') {
        if open.is_empty() && !rest[..start].trim().is_empty() {
            return Err("text outside the root element".into());
        }
        check_text(&rest[..start])?;
        let after = &rest[start + 1..];
        let end = after.find('>').ok_or("unclosed tag")?;
        let tag = &after[..end];
        rest = &after[end + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            if open.pop().as_deref() != Some(name) {
                return Err(format!("</{name}> closes nothing open"));
            }
            continue;
        }
        let (tag, empty) = tag.strip_suffix('/').map_or((tag, false), |t| (t, true));
        let (name, mut text) = tag.split_once(' ').unwrap_or((tag, ""));
        let mut attributes = Vec::new();
        while !text.trim_start().is_empty() {
            let (key, after) = text.trim_start().split_once("=\"").ok_or("attribute without a quoted value")?;
            let (value, after) = after.split_once('"').ok_or("unterminated attribute value")?;
            check_text(value)?;
            let value = value
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&");
            attributes.push((key.to_string(), value));
            text = after;
        }
        elements.push((name.to_string(), attributes));
        if !empty {
            open.push(name.to_string());
        }
    }
    if !open.is_empty() || !rest.trim().is_empty() {
        return Err(format!("unclosed elements {open:?}"));
    }
    Ok(elements)
}

fn check_text(text: &str) -> Result<(), String> {
    for piece in text.split('&').skip(1) {
        let entity = piece.split(';').next().unwrap_or_default();
        let known = ["amp", "lt", "gt", "quot", "apos"].contains(&entity)
            || entity.strip_prefix('#').is_some_and(|n| n.parse::<u32>().is_ok());
        if !known || !piece.contains(';') {
            return Err(format!("bad entity in {text:?}"));
        }
    }
    Ok(())
}

fn attribute<'a>(element: &'a Element, key: &str) -> Option<&'a str> {
    element.1.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// One received message, checked as RFC 5424 with a DICOM audit message inside.
struct Message {
    elements: Vec<Element>,
}

impl Message {
    fn parse(bytes: &[u8]) -> Message {
        let text = std::str::from_utf8(bytes).expect("UTF-8");
        let (pri, rest) = text.strip_prefix('<').and_then(|t| t.split_once('>')).expect("<PRI>");
        let pri: u8 = pri.parse().expect("a numeric PRI");
        assert!(pri == 85 || pri == 84, "authpriv.notice or authpriv.warning, not {pri}");
        let fields: Vec<&str> = rest.splitn(8, ' ').collect();
        assert_eq!(fields.len(), 8, "{text}");
        assert_eq!(fields[0], "1", "RFC 5424 version");
        assert!(fields[1].ends_with('Z') && fields[1].contains('T'), "timestamp {}", fields[1]);
        assert_eq!(fields[3], "haneul", "APP-NAME");
        assert!(fields[4].parse::<u32>().is_ok(), "PROCID");
        assert_eq!(fields[5], "IHE+RFC-3881", "MSGID");
        assert_eq!(fields[6], "-", "no structured data");
        let xml = fields[7].strip_prefix('\u{FEFF}').expect("BOM before the XML");
        let elements = parse_xml(xml).unwrap_or_else(|e| panic!("{e}: {xml}"));
        assert_eq!(elements[0].0, "AuditMessage");
        Message { elements }
    }

    fn all(&self, name: &str) -> Vec<&Element> {
        self.elements.iter().filter(|e| e.0 == name).collect()
    }

    fn first(&self, name: &str, key: &str) -> Option<&str> {
        self.all(name).first().and_then(|e| attribute(e, key))
    }

    fn event_id(&self) -> &str {
        self.first("EventID", "csd-code").unwrap_or_default()
    }

    fn requestor(&self) -> (&str, &str) {
        let peer = self.all("ActiveParticipant").into_iter().find(|e| attribute(e, "UserIsRequestor") == Some("true"));
        let peer = peer.expect("a requesting participant");
        (attribute(peer, "UserID").unwrap_or_default(), attribute(peer, "NetworkAccessPointID").unwrap_or_default())
    }

    fn objects(&self, type_code: &str) -> Vec<String> {
        self.all("ParticipantObjectIdentification")
            .into_iter()
            .filter(|e| attribute(e, "ParticipantObjectTypeCode") == Some(type_code))
            .map(|e| attribute(e, "ParticipantObjectID").unwrap_or_default().to_string())
            .collect()
    }
}

fn http_get(server: &Server, path: &str) -> u16 {
    server.get(path, "application/dicom+json").status
}

/// Store with DCMTK, query with QIDO-RS, and check what the collector got.
fn store_query_and_check(target: &str, received: mpsc::Receiver<Vec<u8>>) {
    let server = Server::start_with(&format!("[audit.syslog]\ntarget = \"{target}\"\n"));
    let port = server.dicom_port.to_string();
    let ct = pydicom_data().join("test_files/CT_small.dcm");
    let store = run(dcmtk("storescu").args(["-aet", "MODALITY1", "-aec", "HANEUL", "127.0.0.1", &port]).arg(&ct));
    assert!(store.status.success(), "C-STORE failed");
    assert_eq!(http_get(&server, &format!("/dicom-web/studies?PatientID={PATIENT}")), 200);

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut messages = Vec::new();
    let done = |messages: &[Message]| {
        messages.iter().any(|m| m.event_id() == "110104") && messages.iter().any(|m| m.event_id() == "110112")
    };
    while !done(&messages) {
        let left = deadline.checked_duration_since(Instant::now()).unwrap_or_default();
        match received.recv_timeout(left) {
            Ok(bytes) => messages.push(Message::parse(&bytes)),
            Err(_) => panic!("no store and query messages within 20 s; got {}", messages.len()),
        }
    }

    let store = messages.iter().find(|m| m.event_id() == "110104").unwrap();
    assert_eq!(store.first("EventIdentification", "EventActionCode"), Some("C"));
    assert_eq!(store.first("EventIdentification", "EventOutcomeIndicator"), Some("0"));
    assert_eq!(store.requestor(), ("MODALITY1", "127.0.0.1"));
    assert_eq!(store.first("AuditSourceIdentification", "AuditSourceID"), Some(server.ae_title.as_str()));
    assert_eq!(store.objects("1"), vec![PATIENT]);
    assert_eq!(store.objects("2"), vec![STUDY]);
    let id_types: Vec<&str> =
        store.all("ParticipantObjectIDTypeCode").iter().filter_map(|e| attribute(e, "csd-code")).collect();
    assert_eq!(id_types, ["2", "110180"]);

    let query = messages.iter().find(|m| m.event_id() == "110112").unwrap();
    assert_eq!(query.first("EventIdentification", "EventActionCode"), Some("E"));
    assert_eq!(query.requestor(), ("admin", "127.0.0.1"));
    assert_eq!(query.objects("1"), vec![PATIENT]);
}

#[test]
fn audit_messages_reach_a_udp_collector() {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = format!("udp://{}", socket.local_addr().unwrap());
    let (sender, received) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 65_536];
        while let Ok(length) = socket.recv(&mut buffer) {
            if sender.send(buffer[..length].to_vec()).is_err() {
                break;
            }
        }
    });
    store_query_and_check(&target, received);
}

#[test]
fn audit_messages_reach_a_tcp_collector() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("tcp://{}", listener.local_addr().unwrap());
    let (sender, received) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let sender = sender.clone();
            std::thread::spawn(move || {
                // RFC 6587 octet counting: "LEN SP MSG".
                let mut reader = BufReader::new(stream);
                loop {
                    let mut length = Vec::new();
                    if reader.read_until(b' ', &mut length).unwrap_or(0) == 0 {
                        break;
                    }
                    let length: usize = String::from_utf8_lossy(&length).trim().parse().expect("an octet count");
                    let mut message = vec![0u8; length];
                    if reader.read_exact(&mut message).is_err() || sender.send(message).is_err() {
                        break;
                    }
                }
            });
        }
    });
    store_query_and_check(&target, received);
}
