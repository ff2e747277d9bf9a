//! Replication between two real nodes on loopback. Asynchronous: what DCMTK
//! stores on one arrives on the other with the same data set bytes; a peer
//! that was down catches up from the journal; two nodes replicating to each
//! other do not send back what they received. Synchronous: a store is
//! acknowledged only once the peer holds it, also when the receiving node is
//! killed mid-stream; an unreachable peer refuses stores or, by choice, lets
//! them through with an alarm.

mod common;

use std::collections::BTreeSet;

use common::{
    dcmtk, dimse_statuses, eventually, http_request, parse_peer_output, pydicom_data, run_peer, without_meta, Pki,
    Server,
};
use serde_json::Value;

const FILES: [&str; 5] = ["CT_small.dcm", "MR_small.dcm", "rtdose.dcm", "SC_rgb_small_odd.dcm", "rtplan.dcm"];

fn peer(name: &str, node: &Server) -> String {
    format!(
        "[[peer]]\nname = \"{name}\"\nae_title = \"{}\"\nhost = \"127.0.0.1\"\nport = {}\n",
        node.ae_title, node.dicom_port
    )
}

fn sync_peer(name: &str, node: &Server, on_failure: &str) -> String {
    format!("{}mode = \"sync\"\non_failure = \"{on_failure}\"\n", peer(name, node))
}

/// DIMSE statuses storescu received, one per file, in order.
fn store_statuses(node: &Server, files: &[String]) -> Vec<u16> {
    let port = node.dicom_port.to_string();
    let output = dcmtk("storescu")
        .args(["-d", "-aet", "MODALITY", "-aec", &node.ae_title, "127.0.0.1", &port])
        .args(files)
        .output()
        .expect("running storescu");
    dimse_statuses(&format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
}

#[test]
fn instances_reach_the_peer_byte_for_byte_and_a_stopped_peer_catches_up() {
    let mut b = Server::start_as("NODEB", "");
    let a = Server::start_as("NODEA", &peer("b", &b));

    a.store_samples("MODALITY", &FILES[..3]);
    let stored = a.instances();
    assert_eq!(stored.len(), 3);
    eventually("the first instances on b", || b.instances() == stored);
    for instance in &stored {
        assert_eq!(a.data_set(instance), b.data_set(instance), "{instance:?} differs");
    }
    eventually("the shipped count", || a.peer_metric("haneul_replication_shipped_total", "b") == 3.0);

    // B goes down; A keeps storing (enough for several associations to
    // ship the backlog at once), fails to ship and says so.
    b.kill9();
    a.store_samples("MODALITY", &FILES[3..]);
    let dir = tempfile::tempdir().unwrap();
    let spec = serde_json::json!({ "outdir": dir.path(), "count": 60, "prefix": "backlog" }).to_string();
    let generated = parse_peer_output("pn_gen.py", &run_peer("pn_gen.py", &[&spec]));
    let backlog: Vec<String> = generated["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|file| file["path"].as_str().unwrap().to_string())
        .collect();
    assert!(store_statuses(&a, &backlog).iter().all(|status| *status == 0), "the backlog is stored on A");
    eventually("a failure to reach b", || a.peer_metric("haneul_replication_failures_total", "b") >= 1.0);
    let status = a.get("/api/status", "application/json").json();
    let replication = &status["replication"][0];
    assert_eq!(replication["peer"], "b", "{status:#}");
    assert!(replication["last_error"].is_string(), "{status:#}");

    b.start_again();
    let all = a.instances();
    assert_eq!(all.len(), 65);
    eventually("b catching up", || b.instances() == all);
    for instance in &all {
        assert_eq!(a.data_set(instance), b.data_set(instance), "{instance:?} differs");
    }
    eventually("nothing pending", || a.peer_metric("haneul_replication_pending_instances", "b") == 0.0);
    assert_eq!(a.peer_metric("haneul_replication_shipped_total", "b"), 65.0, "each instance shipped once");
}

#[test]
fn two_nodes_replicating_to_each_other_do_not_echo() {
    let mut b = Server::start_as("NODEB", "");
    let a = Server::start_as("NODEA", &peer("b", &b));
    b.restart_with(&peer("a", &a));

    a.store_samples("MODALITY", &FILES[..2]);
    b.store_samples("MODALITY", &FILES[2..3]);
    eventually("both nodes holding all three", || a.instances().len() == 3 && b.instances().len() == 3);
    assert_eq!(a.instances(), b.instances());
    eventually("a's shipments counted", || a.peer_metric("haneul_replication_shipped_total", "b") == 2.0);
    eventually("b's shipment counted", || b.peer_metric("haneul_replication_shipped_total", "a") == 1.0);
    // Both journals are fully shipped: what came from the peer was never sent back.
    eventually("a idle", || a.peer_metric("haneul_replication_pending_instances", "b") == 0.0);
    eventually("b idle", || b.peer_metric("haneul_replication_pending_instances", "a") == 0.0);
    assert_eq!(a.peer_metric("haneul_replication_shipped_total", "b"), 2.0);
    assert_eq!(b.peer_metric("haneul_replication_shipped_total", "a"), 1.0);
}

/// A network link between two nodes that the test can cut and heal: a TCP
/// relay to `target`; while cut, open connections are broken and new ones
/// are closed at once, as when a WAN link or a firewall drops.
struct Link {
    port: u16,
    state: std::sync::Arc<LinkState>,
}

#[derive(Default)]
struct LinkState {
    target: std::sync::Mutex<Option<u16>>,
    open: std::sync::Mutex<Vec<std::net::TcpStream>>,
}

impl Link {
    fn new() -> Link {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a link");
        let port = listener.local_addr().unwrap().port();
        let state = std::sync::Arc::new(LinkState::default());
        let shared = std::sync::Arc::clone(&state);
        std::thread::spawn(move || {
            for inbound in listener.incoming().flatten() {
                let target = *shared.target.lock().unwrap();
                let Some(outbound) = target.and_then(|port| std::net::TcpStream::connect(("127.0.0.1", port)).ok())
                else {
                    continue;
                };
                let mut open = shared.open.lock().unwrap();
                for stream in [&inbound, &outbound] {
                    open.push(stream.try_clone().expect("cloning a socket"));
                }
                for (mut from, mut to) in
                    [(inbound.try_clone().unwrap(), outbound.try_clone().unwrap()), (outbound, inbound)]
                {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Link { port, state }
    }

    fn connect(&self, node: &Server) {
        self.connect_port(node.dicom_port);
    }

    fn connect_port(&self, port: u16) {
        *self.state.target.lock().unwrap() = Some(port);
    }

    fn cut(&self) {
        *self.state.target.lock().unwrap() = None;
        for stream in self.state.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    /// A `[[peer]]` block reaching `node` through this link.
    fn peer(&self, name: &str, node_ae: &str) -> String {
        format!("[[peer]]\nname = \"{name}\"\nae_title = \"{node_ae}\"\nhost = \"127.0.0.1\"\nport = {}\n", self.port)
    }

    /// The same, with the peer's HTTP API (for verify) through `http`, and
    /// its token in `token_file` (written once the peer runs).
    fn peer_with_api(&self, name: &str, node_ae: &str, http: &Link, token_file: &std::path::Path) -> String {
        format!(
            "{}url = \"http://127.0.0.1:{}\"\ntoken_file = {:?}\n",
            self.peer(name, node_ae),
            http.port,
            token_file.display().to_string()
        )
    }
}

/// Sites A and B replicating to each other through links the test can cut:
/// DICOM both ways, and each one's REST API (verify, removals) for the other.
struct TwoSites {
    a: Server,
    b: Server,
    /// Links towards A's and B's DICOM ports.
    to_a: Link,
    to_b: Link,
    /// Links towards A's and B's HTTP ports (verify, removals, corrections).
    to_a_api: Link,
    to_b_api: Link,
    /// The files holding each site's token for the other.
    tokens: tempfile::TempDir,
}

impl TwoSites {
    fn start() -> TwoSites {
        let (to_a, to_b, to_a_api, to_b_api) = (Link::new(), Link::new(), Link::new(), Link::new());
        let tokens = tempfile::tempdir().unwrap();
        let (token_of_a, token_of_b) = (tokens.path().join("a.token"), tokens.path().join("b.token"));
        let a = Server::start_as("SITEA", &to_b.peer_with_api("b", "SITEB", &to_b_api, &token_of_b));
        let b = Server::start_as("SITEB", &to_a.peer_with_api("a", "SITEA", &to_a_api, &token_of_a));
        std::fs::write(&token_of_a, &a.token).unwrap();
        std::fs::write(&token_of_b, &b.token).unwrap();
        for (link, port) in
            [(&to_a, a.dicom_port), (&to_b, b.dicom_port), (&to_a_api, a.http_port), (&to_b_api, b.http_port)]
        {
            link.connect_port(port);
        }
        TwoSites { a, b, to_a, to_b, to_a_api, to_b_api, tokens }
    }
}

/// (SOP Instance UID, BLAKE3 of the kept version) of a node's replication
/// conflicts.
fn conflicts(node: &Server) -> BTreeSet<(String, String, String)> {
    let response = node.get("/api/replication/conflicts", "application/json");
    assert_eq!(response.status, 200, "{}", response.text());
    let field = |conflict: &Value, name: &str| conflict[name].as_str().unwrap_or_default().to_string();
    response
        .json()
        .as_array()
        .expect("an array")
        .iter()
        .map(|c| (field(c, "sop_instance_uid"), field(c, "digest"), field(c, "current_digest")))
        .collect()
}

/// Active-active: both sites take stores while the link between them is
/// down, then converge once it is back; an instance stored at both sites with
/// different bytes is kept in both versions at both sites, and reported.
#[test]
fn active_active_sites_converge_after_a_partition_and_keep_both_versions_of_a_conflict() {
    let TwoSites { a, b, to_a, to_b, tokens: _tokens, .. } = TwoSites::start();

    a.store_samples("MODALITY", &FILES[..1]);
    b.store_samples("MODALITY", &FILES[1..2]);
    eventually("both sites holding both studies", || a.instances().len() == 2 && b.instances().len() == 2);

    to_a.cut();
    to_b.cut();
    a.store_samples("MODALITY", &FILES[2..3]);
    b.store_samples("MODALITY", &FILES[3..4]);
    // A modality with a secondary destination sends one instance to both
    // sites: the same data set, not a conflict, once the sites exchange it
    // (each copy's meta group names its sender).
    b.store_samples("MODALITY", &FILES[2..3]);
    // The same SOP Instance UID with other bytes at each site.
    let original = pydicom_data().join("test_files").join(FILES[4]);
    let mut bytes = std::fs::read(&original).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (at_a, at_b) = (dir.path().join("at-a.dcm"), dir.path().join("at-b.dcm"));
    std::fs::write(&at_a, &bytes).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF;
    std::fs::write(&at_b, &bytes).unwrap();
    let paths = |path: &std::path::Path| vec![path.display().to_string()];
    assert_eq!(store_statuses(&a, &paths(&at_a)), vec![0]);
    assert_eq!(store_statuses(&b, &paths(&at_b)), vec![0]);
    eventually("a failing to reach b", || a.peer_metric("haneul_replication_failures_total", "b") >= 1.0);
    eventually("b failing to reach a", || b.peer_metric("haneul_replication_failures_total", "a") >= 1.0);
    assert_eq!((a.instances().len(), b.instances().len()), (4, 5), "each site kept serving its own stores");

    to_a.connect(&a);
    to_b.connect(&b);
    eventually("both sites holding the same five instances", || {
        let held = a.instances();
        held.len() == 5 && held == b.instances()
    });
    eventually("the conflict reported at both sites", || !conflicts(&a).is_empty() && !conflicts(&b).is_empty());
    let sop = a.instances().into_iter().find(|(_, _, sop)| bytes_hold(&at_a, sop)).expect("the conflicting instance").2;
    // Each site keeps showing its own version and holds the other for review.
    // (Digests are of each site's file, whose meta group names who sent it;
    // the data sets are compared below.)
    for node in [&a, &b] {
        let listed = conflicts(node);
        assert_eq!(listed.len(), 1, "{listed:?}");
        let (listed_sop, version, current) = listed.first().cloned().unwrap();
        assert_eq!(listed_sop, sop);
        assert_ne!(version, current);
    }
    let instance = a.instances().into_iter().find(|(_, _, uid)| *uid == sop).unwrap();
    let (current_at_a, current_at_b) = (a.data_set(&instance), b.data_set(&instance));
    assert_ne!(current_at_a, current_at_b, "each site still shows its own version");
    for (node, other_sites_version) in [(&a, &current_at_b), (&b, &current_at_a)] {
        let listed = node.get("/api/replication/conflicts", "application/json").json();
        let id = listed[0]["id"].as_i64().expect("an id");
        let file = node.get(&format!("/api/replication/conflicts/{id}"), "application/dicom");
        assert_eq!(file.status, 200);
        assert!(without_meta(&file.body) == *other_sites_version, "the other site's version, byte for byte");
    }
    assert_eq!(a.metric("haneul_replication_conflicts_total"), 1.0);
    assert_eq!(b.metric("haneul_replication_conflicts_total"), 1.0);

    // Both sites hold the same versions of everything: identical digest
    // trees, and verify (both ways) finds nothing to repair.
    let tree = |node: &Server| node.get("/api/replication/tree", "application/json").json();
    assert_eq!(tree(&a), tree(&b));
    assert_eq!(tree(&a)["instances"], 5, "{:#}", tree(&a));
    for (node, peer) in [(&a, "b"), (&b, "a")] {
        let path = format!("/api/replication/peers/{peer}/verify?repair=true");
        let auth = node.authorization();
        let report = http_request(node.http_port, "POST", &path, &[("Authorization", &auth)], b"");
        assert_eq!(report.status, 200, "{}", report.text());
        let report = report.json();
        assert_eq!(
            (report["equal_at_start"].as_bool(), report["pushed"].as_u64(), report["pulled"].as_u64()),
            (Some(true), Some(0), Some(0)),
            "{report:#}"
        );
    }
}

/// Sign in over HTTP at `port` as a user made with `add_user`; the session cookie.
fn sign_in(port: u16, user: &str) -> String {
    let body = serde_json::json!({ "user": user, "password": common::USER_PASSWORD }).to_string();
    let response = http_request(port, "POST", "/api/login", &[("Content-Type", "application/json")], body.as_bytes());
    assert_eq!(response.status, 200, "{}", response.text());
    let cookie = response.header("set-cookie").expect("a session cookie");
    cookie.split(';').next().unwrap().to_string()
}

/// The Study Instance UIDs QIDO-RS finds at `port` for a session.
fn study_list(port: u16, cookie: &str) -> Result<BTreeSet<String>, u16> {
    let response = http_request(port, "GET", "/dicom-web/studies", &[("Cookie", cookie)], b"");
    if response.status != 200 {
        return Err(response.status);
    }
    let studies = response.json();
    Ok(studies
        .as_array()
        .expect("an array")
        .iter()
        .map(|study| study["0020000D"]["Value"][0].as_str().unwrap_or_default().to_string())
        .collect())
}

/// Failover as hospitals arrange it with two active sites: the modality has
/// the second site as its secondary destination, and the viewer reaches the
/// archive through a virtual IP (or DNS name) that moves to the surviving
/// site. Nothing stored before the failure is missing there, new stores go
/// on, and the failed site catches up when it returns.
#[test]
fn modalities_and_viewers_keep_working_against_the_surviving_site() {
    let TwoSites { mut a, b, tokens: _tokens, .. } = TwoSites::start();
    let virtual_ip = Link::new();
    virtual_ip.connect_port(a.http_port);
    for node in [&a, &b] {
        node.add_user("reader", "clinician");
    }

    a.store_samples("MODALITY", &FILES[..2]);
    eventually("site b holding site a's instances", || b.instances() == a.instances());
    let session = sign_in(virtual_ip.port, "reader");
    let before = study_list(virtual_ip.port, &session).expect("the study list at site a");
    assert_eq!(before.len(), 2);

    a.kill9();
    // The modality's primary destination fails; it sends to the secondary.
    let port = a.dicom_port.to_string();
    let file = pydicom_data().join("test_files").join(FILES[2]);
    let refused = dcmtk("storescu").args(["-aet", "MODALITY", "-aec", "SITEA", "127.0.0.1", &port]).arg(&file).output();
    assert!(!refused.expect("running storescu").status.success(), "site a is down");
    b.store_samples("MODALITY", &FILES[2..3]);

    // The virtual IP moves to site b. Sessions are per site: the viewer is
    // sent back to its sign-in page (401), and after signing in at site b
    // finds every study, those stored at site a before it failed included.
    virtual_ip.cut();
    virtual_ip.connect_port(b.http_port);
    assert_eq!(study_list(virtual_ip.port, &session), Err(401));
    let session = sign_in(virtual_ip.port, "reader");
    let after = study_list(virtual_ip.port, &session).expect("the study list at site b");
    assert!(after.is_superset(&before), "{after:?} lacks some of {before:?}");
    assert_eq!(after.len(), 3);

    a.start_again();
    eventually("site a catching up with what site b took meanwhile", || a.instances() == b.instances());
}

/// Removals flow both ways through the peers' REST API, and what a site
/// removed stays removed when the other site, not yet told, sends it back.
#[test]
fn removals_reach_the_other_site_and_are_not_undone_by_its_copies() {
    let TwoSites { a, b, to_b_api, tokens: _tokens, .. } = TwoSites::start();
    a.store_samples("MODALITY", &FILES[..4]);
    eventually("b holding a's four instances", || b.instances().len() == 4);
    let held = a.instances();
    let remove = |node: &Server, resource: &str, uid: &str| {
        let auth = node.authorization();
        let path = format!("/api/{resource}/{uid}");
        let answer = http_request(node.http_port, "DELETE", &path, &[("Authorization", &auth)], b"");
        assert_eq!(answer.status, 200, "{path}: {}", answer.text());
    };
    let uids: Vec<&(String, String, String)> = held.iter().collect();

    // A study removed at A goes at B; an instance removed at B goes at A.
    remove(&a, "studies", &uids[0].0);
    remove(&b, "instances", &uids[1].2);
    eventually("both sites without either", || {
        let at_a = a.instances();
        at_a.len() == 2 && at_a == b.instances()
    });

    // A removes a study while it cannot tell B; B's verify sends the study
    // back to A, which keeps it removed; once A can tell B, B removes it too.
    to_b_api.cut();
    remove(&a, "studies", &uids[2].0);
    let auth = b.authorization();
    let verify = http_request(
        b.http_port,
        "POST",
        "/api/replication/peers/a/verify?repair=true",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(verify.status, 200, "{}", verify.text());
    assert!(verify.json()["pushed"].as_u64() >= Some(1), "b sent the study back: {}", verify.text());
    assert!(!a.instances().contains(uids[2]), "the study stays removed at a");
    to_b_api.connect_port(b.http_port);
    eventually("b removing the study too", || b.instances() == a.instances());
    assert_eq!(a.instances().len(), 1);
    let tree = |node: &Server| node.get("/api/replication/tree", "application/json").json();
    assert_eq!(tree(&a), tree(&b));
}

/// The corrections of a study held at a site, as `(keyword, value, origin)`.
fn corrections_held(node: &Server, study: &str) -> BTreeSet<(String, String, String)> {
    let held = node.get(&format!("/api/studies/{study}/corrections"), "application/json").json();
    let field = |register: &Value, name: &str| register[name].as_str().unwrap_or_default().to_string();
    held["registers"]
        .as_array()
        .map(|registers| {
            registers.iter().map(|r| (field(r, "keyword"), field(r, "value"), field(r, "origin"))).collect()
        })
        .unwrap_or_default()
}

fn correct(node: &Server, study: &str, attributes: Value) {
    let auth = node.authorization();
    let body = serde_json::json!({ "attributes": attributes, "reason": "registration error" }).to_string();
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let path = format!("/api/studies/{study}/corrections");
    let answer = http_request(node.http_port, "POST", &path, &headers, body.as_bytes());
    assert_eq!(answer.status, 200, "{path}: {}", answer.text());
}

/// Corrections reach the other site; made at both sites while they cannot
/// talk, they converge on the later one (hybrid logical clock) at both once
/// the link heals, and retrieves at both sites carry it.
#[test]
fn corrections_made_at_both_sites_during_a_partition_converge_on_the_later_one() {
    let TwoSites { a, b, to_a_api, to_b_api, tokens: _tokens, .. } = TwoSites::start();
    a.store_samples("MODALITY", &FILES[..1]);
    eventually("b holding a's instance", || b.instances().len() == 1);
    let instance = a.instances().into_iter().next().unwrap();
    let study = instance.0.clone();
    correct(&a, &study, serde_json::json!({ "StudyDescription": "CT CHEST" }));
    let description = ("StudyDescription".to_string(), "CT CHEST".to_string(), "SITEA".to_string());
    eventually("b holding a's correction", || corrections_held(&b, &study).contains(&description));

    to_a_api.cut();
    to_b_api.cut();
    correct(&a, &study, serde_json::json!({ "PatientName": "Kim^Minsu" }));
    correct(&b, &study, serde_json::json!({ "PatientName": "Lee^Jiwoo", "AccessionNumber": "B-1" }));
    eventually("a failing to reach b's API", || a.peer_metric("haneul_replication_failures_total", "b") >= 1.0);
    eventually("b failing to reach a's API", || b.peer_metric("haneul_replication_failures_total", "a") >= 1.0);
    let name_at = |node: &Server| {
        corrections_held(node, &study).into_iter().find(|(keyword, _, _)| keyword == "PatientName").map(|held| held.1)
    };
    assert_eq!((name_at(&a).as_deref(), name_at(&b).as_deref()), (Some("Kim^Minsu"), Some("Lee^Jiwoo")));

    to_a_api.connect_port(a.http_port);
    to_b_api.connect_port(b.http_port);
    eventually("both sites holding the same corrections", || {
        let at_a = corrections_held(&a, &study);
        at_a.len() == 3 && at_a == corrections_held(&b, &study)
    });
    assert_eq!(name_at(&a).as_deref(), Some("Lee^Jiwoo"), "b corrected later");
    for node in [&a, &b] {
        let retrieved = node.data_set(&instance);
        let holds = |text: &[u8]| retrieved.windows(text.len()).any(|window| window == text);
        assert!(holds(b"Lee^Jiwoo") && holds(b"B-1") && holds(b"CT CHEST"), "{}", node.ae_title);
        assert!(!holds(b"Kim^Minsu"), "{}: the overruled value is gone", node.ae_title);
    }
    // The stored bytes are the same at both sites: the digest trees agree.
    let tree = |node: &Server| node.get("/api/replication/tree", "application/json").json();
    assert_eq!(tree(&a), tree(&b));

    // A study moved to another patient at one site is moved at the other.
    correct(&a, &study, serde_json::json!({ "PatientID": "MOVED-1", "PatientName": "Moved^Patient" }));
    eventually("b filing the study under the patient it was moved to", || {
        b.get("/dicom-web/studies?PatientID=MOVED-1", "application/dicom+json").text().contains(&study)
    });
    for node in [&a, &b] {
        let found = node.get("/dicom-web/studies?PatientID=MOVED-1", "application/dicom+json").text();
        assert!(found.contains("Moved^Patient"), "{}: {found}", node.ae_title);
        let retrieved = node.data_set(&instance);
        let holds = |text: &[u8]| retrieved.windows(text.len()).any(|window| window == text);
        assert!(holds(b"MOVED-1") && holds(b"Moved^Patient"), "{}: the copy names the new patient", node.ae_title);
    }

    // A series correction reaches the other site and its copies.
    let auth = a.authorization();
    let body = serde_json::json!({ "attributes": { "SeriesDescription": "AXIAL 5MM" }, "reason": "protocol renamed" });
    let path = format!("/api/studies/{study}/series/{}/corrections", instance.1);
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let answer = http_request(a.http_port, "POST", &path, &headers, body.to_string().as_bytes());
    assert_eq!(answer.status, 200, "{}", answer.text());
    let series_description = ("SeriesDescription".to_string(), "AXIAL 5MM".to_string(), "SITEA".to_string());
    eventually("b holding a's series correction", || corrections_held(&b, &study).contains(&series_description));
    assert!(b.data_set(&instance).windows(9).any(|window| window == b"AXIAL 5MM"));
}

/// A new study of patient 1CT1 (a copy of CT_small with new UIDs) written to `dir`.
fn new_ct_study(dir: &std::path::Path, name: &str) -> String {
    let path = dir.join(name);
    std::fs::copy(pydicom_data().join("test_files").join("CT_small.dcm"), &path).unwrap();
    let output = dcmtk("dcmodify").args(["-nb", "-gst", "-gse", "-gin"]).arg(&path).output().expect("dcmodify");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    path.display().to_string()
}

/// Studies QIDO-RS finds at `node` for a Patient ID.
fn studies_of(node: &Server, patient_id: &str) -> BTreeSet<String> {
    let found = node.get(&format!("/dicom-web/studies?PatientID={patient_id}"), "application/dicom+json").json();
    found
        .as_array()
        .map(|studies| {
            studies.iter().filter_map(|study| study["0020000D"]["Value"][0].as_str().map(str::to_string)).collect()
        })
        .unwrap_or_default()
}

/// A patient merge at one site reaches the other: a study the other site
/// took for the merged record before the merge reached it follows there,
/// and studies that arrive later for the merged record, at either site, are
/// filed under the record it was merged into at both.
#[test]
fn a_merge_reaches_the_other_site_with_studies_that_arrive_for_the_merged_record() {
    let TwoSites { a, b, to_b_api, tokens: _tokens, .. } = TwoSites::start();
    a.store_samples("MODALITY", &FILES[..2]);
    eventually("b holding a's instances", || b.instances().len() == 2);
    let files = tempfile::tempdir().unwrap();

    // The merge is made at A while B's API cannot be reached; meanwhile B takes a study for the old ID.
    to_b_api.cut();
    let auth = a.authorization();
    let merge = serde_json::json!({
        "from": { "PatientID": "1CT1" }, "into": { "PatientID": "4MR1" }, "reason": "temporary ID replaced",
    });
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let answer = http_request(a.http_port, "POST", "/api/patients/merge", &headers, merge.to_string().as_bytes());
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["linked"], true, "{}", answer.text());
    assert_eq!(store_statuses(&b, &[new_ct_study(files.path(), "at_b.dcm")]), [0x0000]);
    eventually("a holding b's study, under the record 1CT1 was merged into", || {
        a.instances().len() == 3 && studies_of(&a, "1CT1").is_empty()
    });
    assert_eq!(studies_of(&b, "1CT1").len(), 2, "b has not heard of the merge yet");

    to_b_api.connect_port(b.http_port);
    eventually("b filing every study of 1CT1 under 4MR1", || studies_of(&b, "1CT1").is_empty());
    assert_eq!(studies_of(&b, "4MR1").len(), 3);

    // Later studies for 1CT1, at either site, go to 4MR1 at both.
    assert_eq!(store_statuses(&b, &[new_ct_study(files.path(), "later_b.dcm")]), [0x0000]);
    assert_eq!(store_statuses(&a, &[new_ct_study(files.path(), "later_a.dcm")]), [0x0000]);
    for node in [&a, &b] {
        eventually("both later studies held", || node.instances().len() == 5);
        assert!(studies_of(node, "1CT1").is_empty(), "{}", node.ae_title);
        assert_eq!(studies_of(node, "4MR1").len(), 5, "{}", node.ae_title);
    }
    let registers = |node: &Server| node.get("/api/replication/corrections", "application/json").text();
    eventually("both sites holding the same registers", || registers(&a) == registers(&b));
}

/// A correction the peer's API cannot take (a revoked token, a proxy down)
/// is held and retried on its own: the stores journaled after it still
/// reach the peer over DICOM. Held across a restart, it arrives once the API
/// answers again.
#[test]
fn a_correction_the_peer_api_cannot_take_does_not_hold_back_later_stores() {
    let TwoSites { mut a, b, to_b_api, tokens: _tokens, .. } = TwoSites::start();
    a.store_samples("MODALITY", &FILES[..1]);
    eventually("b holding a's instance", || b.instances().len() == 1);
    let study = a.instances().into_iter().next().unwrap().0;
    to_b_api.cut();
    correct(&a, &study, serde_json::json!({ "StudyDescription": "CT CHEST" }));
    eventually("a failing to pass the correction on", || {
        a.peer_metric("haneul_replication_failures_total", "b") >= 1.0
    });
    a.store_samples("MODALITY", &FILES[1..2]);
    eventually("b holding the instance stored after the correction", || b.instances().len() == 2);
    assert!(corrections_held(&b, &study).is_empty());
    assert_eq!(a.peer_metric("haneul_replication_pending_instances", "b"), 1.0, "the correction waits");

    a.restart();
    a.store_samples("MODALITY", &FILES[2..3]);
    eventually("b holding the instance stored after the restart", || b.instances().len() == 3);
    to_b_api.connect_port(b.http_port);
    let description = ("StudyDescription".to_string(), "CT CHEST".to_string(), "SITEA".to_string());
    eventually("b holding the correction", || corrections_held(&b, &study).contains(&description));
    eventually("nothing pending", || a.peer_metric("haneul_replication_pending_instances", "b") == 0.0);
    assert_eq!(a.instances(), b.instances());
}

/// A correction one site lost (restored from an older backup, say) never
/// comes back through the journal, which passed it on long ago: verify finds
/// the registers digests differ and gives each site the later register of
/// every attribute, both ways.
#[test]
fn verify_repairs_correction_registers_the_journal_did_not_pass_on() {
    let TwoSites { a, b, tokens: _tokens, .. } = TwoSites::start();
    a.store_samples("MODALITY", &FILES[..1]);
    eventually("b holding a's instance", || b.instances().len() == 1);
    let study = a.instances().into_iter().next().unwrap().0;
    // Registers each site holds as if the other had passed them on, so
    // neither journal sends them: the state a lost message leaves.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let plant = |node: &Server, from: &str, tag: u32, vr: &str, value: &str| {
        let register = serde_json::json!({
            "level": "STUDY", "key": study, "tag": tag, "vr": vr, "value": value,
            "hlc": now << 16, "origin": from, "reason": "CORRECT",
        });
        let body = serde_json::json!({ "replicated_from": from, "registers": [register] }).to_string();
        let auth = node.authorization();
        let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
        let answer = http_request(node.http_port, "POST", "/api/corrections", &headers, body.as_bytes());
        assert_eq!(answer.status, 200, "{}", answer.text());
    };
    plant(&a, "SITEB", 0x0008_1030, "LO", "CT CHEST");
    plant(&b, "SITEA", 0x0008_0050, "SH", "ACC-7");
    let verify = |repair: bool| {
        let path = format!("/api/replication/peers/b/verify?repair={repair}");
        let auth = a.authorization();
        let report = http_request(a.http_port, "POST", &path, &[("Authorization", &auth)], b"");
        assert_eq!(report.status, 200, "{}", report.text());
        report.json()
    };
    let counts = |report: &Value| {
        ["differing_registers", "registers_pushed", "registers_pulled", "registers_remaining"]
            .map(|field| report[field].as_u64().unwrap_or(u64::MAX))
    };
    let compared = verify(false);
    assert_eq!((compared["equal"].as_bool(), counts(&compared)), (Some(false), [2, 0, 0, 2]), "{compared:#}");
    assert_eq!(compared["differing_instances"], 0, "the instances are the same: {compared:#}");

    let repaired = verify(true);
    assert_eq!((repaired["equal"].as_bool(), counts(&repaired)), (Some(true), [2, 1, 1, 0]), "{repaired:#}");
    let held = corrections_held(&a, &study);
    assert_eq!(held.len(), 2, "{held:?}");
    assert_eq!(held, corrections_held(&b, &study));
    let tree = |node: &Server| node.get("/api/replication/tree", "application/json").json();
    assert_eq!(tree(&a), tree(&b));
    assert_eq!(tree(&a)["register_count"], 2);
    let again = verify(true);
    assert_eq!((again["equal_at_start"].as_bool(), counts(&again)), (Some(true), [0, 0, 0, 0]), "{again:#}");
}

/// Between sites, replication runs over DICOM TLS with client certificates:
/// the peer's TLS listener checks ours (its audit trail names it), and a node
/// without one does not get in.
#[test]
fn replication_goes_over_dicom_tls_with_a_client_certificate() {
    let pki = Pki::new();
    let tls_port = common::free_port();
    let ca = pki.file("ca.pem");
    let listener = format!("listen = \"127.0.0.1:{tls_port}\"\nclient_auth = \"required\"\nclient_ca_file = {ca:?}\n");
    let mut b = Server::start_as("NODEB", &pki.config("dicom.tls", &listener));
    b.wait_for_listener(tls_port);
    let tls_peer = |client_certificate: bool| {
        let mut block = format!(
            "[[peer]]\nname = \"b\"\nae_title = \"NODEB\"\nhost = \"127.0.0.1\"\nport = {tls_port}\ntls = true\nca_file = {ca:?}\n"
        );
        if client_certificate {
            block += &format!("cert_file = {:?}\nkey_file = {:?}\n", pki.file("client.pem"), pki.file("client.key"));
        }
        block
    };

    let a = Server::start_as("NODEA", &tls_peer(true));
    a.store_samples("MODALITY", &FILES[..2]);
    let stored = a.instances();
    eventually("b holding a's instances", || b.instances() == stored);
    for instance in &stored {
        assert_eq!(a.data_set(instance), b.data_set(instance), "{instance:?} differs");
    }
    let mut stores = Vec::new();
    eventually("b's audit trail", || {
        stores = common::audit_search(&b.data_dir(), &["--action", "store", "--actor", "NODEA"]);
        stores.len() >= 2
    });
    let subject = stores[0]["detail"]["tls_subject"].as_str().unwrap_or_default().to_string();
    assert!(subject.contains(common::TEST_CLIENT_CN), "the peer's certificate in b's audit trail: {stores:#?}");

    // Without a client certificate the handshake fails; the node says so and keeps the instances.
    let without = Server::start_as("NODEC", &tls_peer(false));
    without.store_samples("MODALITY", &FILES[2..3]);
    eventually("c failing to reach b", || without.peer_metric("haneul_replication_failures_total", "b") >= 1.0);
    let status = without.get("/api/status", "application/json").json();
    let error = status["replication"][0]["last_error"].as_str().unwrap_or_default().to_string();
    // (With TLS 1.3 the server's refusal arrives as an alert on the first read.)
    assert!(error.contains("CertificateRequired") || error.contains("TLS"), "{status:#}");
    assert_eq!(without.peer_metric("haneul_replication_pending_instances", "b"), 1.0);
}

/// Whether a Part 10 file carries this SOP Instance UID.
fn bytes_hold(path: &std::path::Path, sop: &str) -> bool {
    let bytes = std::fs::read(path).unwrap();
    bytes.windows(sop.len()).any(|window| window == sop.as_bytes())
}

#[test]
fn a_synchronous_peer_holds_every_acknowledged_instance() {
    let mut b = Server::start_as("NODEB", "");
    let a = Server::start_as("NODEA", &sync_peer("b", &b, "refuse"));

    a.store_samples("MODALITY", &FILES[..3]);
    // No waiting: the acknowledgement itself means the peer has them.
    let stored = a.instances();
    assert_eq!(stored.len(), 3);
    assert_eq!(b.instances(), stored);
    for instance in &stored {
        assert_eq!(a.data_set(instance), b.data_set(instance), "{instance:?} differs");
    }

    // The peer is away: stores are refused (out of resources), so the
    // modality keeps them and sends them again later.
    b.kill9();
    let file = pydicom_data().join("test_files").join(FILES[3]).display().to_string();
    assert_eq!(store_statuses(&a, std::slice::from_ref(&file)), vec![0xA700], "refused while the peer is away");
    b.start_again();
    assert_eq!(store_statuses(&a, std::slice::from_ref(&file)), vec![0x0000], "accepted again once it is back");
    assert_eq!(b.instances(), a.instances());
    assert_eq!(b.instances().len(), 4);
}

#[test]
fn a_synchronous_peer_may_be_bypassed_with_an_alarm() {
    let mut b = Server::start_as("NODEB", "");
    let a = Server::start_as("NODEA", &sync_peer("b", &b, "async"));
    b.kill9();
    a.store_samples("MODALITY", &FILES[..2]);
    assert_eq!(a.peer_metric("haneul_replication_sync_fallbacks_total", "b"), 2.0);
    b.start_again();
    let stored = a.instances();
    eventually("b catching up from the journal", || b.instances() == stored);
}

/// kill -9 of the receiving node while a modality sends: whatever it
/// acknowledged is on the peer.
#[test]
fn acknowledged_instances_survive_a_crash_of_the_receiving_node() {
    let b = Server::start_as("NODEB", "");
    let mut a = Server::start_as("NODEA", &sync_peer("b", &b, "refuse"));
    let dir = tempfile::tempdir().unwrap();
    let spec = serde_json::json!({ "outdir": dir.path(), "count": 300, "prefix": "crash" }).to_string();
    let generated = parse_peer_output("pn_gen.py", &run_peer("pn_gen.py", &[&spec]));
    let files: Vec<(String, String)> = generated["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|file| (file["path"].as_str().unwrap().to_string(), file["sop_uid"].as_str().unwrap().to_string()))
        .collect();
    let log = dir.path().join("storescu.log");
    let port = a.dicom_port.to_string();
    let mut sender = dcmtk("storescu")
        .args(["-d", "-aet", "MODALITY", "-aec", "NODEA", "127.0.0.1", &port])
        .args(files.iter().map(|(path, _)| path))
        // DCMTK logs on stderr.
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("starting storescu");
    // Kill once some stores were answered, in the middle of the stream.
    let answered = || dimse_statuses(&std::fs::read_to_string(&log).unwrap_or_default()).len();
    eventually("the first answers", || answered() >= 20);
    a.kill9();
    let _ = sender.wait();
    let statuses = dimse_statuses(&std::fs::read_to_string(&log).unwrap_or_default());
    let acknowledged: BTreeSet<&str> = files
        .iter()
        .zip(&statuses)
        .filter(|(_, status)| **status == 0x0000)
        .map(|((_, sop), _)| sop.as_str())
        .collect();
    assert!(acknowledged.len() >= 20 && acknowledged.len() < files.len(), "{} acknowledged", acknowledged.len());
    let on_b: BTreeSet<String> = b.instances().into_iter().map(|(_, _, sop)| sop).collect();
    let missing: Vec<&&str> = acknowledged.iter().filter(|sop| !on_b.contains(**sop)).collect();
    assert!(missing.is_empty(), "acknowledged but not on the peer: {missing:?}");
}
