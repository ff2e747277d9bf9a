//! Anti-entropy between two real nodes on loopback: `haneul replication
//! verify` (through the server's API) compares digest trees — equal archives
//! in one round trip —, finds what one side lacks, repairs it in both
//! directions (C-STORE to the peer, the peer's stored bytes fetched over
//! HTTP), and reports in the status API, the metrics and its exit code.

mod common;

use std::process::Command;

use common::{dcmtk, eventually, haneul_bin, http_request, run, HttpResponse, Server};
use serde_json::Value;

const FILES: [&str; 5] = ["CT_small.dcm", "MR_small.dcm", "rtdose.dcm", "SC_rgb_small_odd.dcm", "rtplan.dcm"];

/// `[[peer]]` with the peer's HTTP API, its token in a file in `dir`; no periodic verify.
fn peer_with_api(name: &str, node: &Server, dir: &std::path::Path) -> String {
    let token_file = dir.join(format!("{name}.token"));
    std::fs::write(&token_file, format!("{}\n", node.token)).expect("writing the token file");
    format!(
        "[[peer]]\nname = \"{name}\"\nae_title = \"{}\"\nhost = \"127.0.0.1\"\nport = {}\nurl = \"{}\"\ntoken_file = {:?}\n\n\
         [replication]\nverify_interval_minutes = 0\n",
        node.ae_title,
        node.dicom_port,
        node.http_url(),
        token_file.display().to_string()
    )
}

fn assert_same_archives(a: &Server, b: &Server) {
    let held = a.instances();
    assert_eq!(held, b.instances());
    for instance in &held {
        assert_eq!(a.data_set(instance), b.data_set(instance), "{instance:?} differs");
    }
}

fn request(node: &Server, method: &str, path: &str) -> HttpResponse {
    let authorization = node.authorization();
    http_request(
        node.http_port,
        method,
        path,
        &[("Authorization", &authorization), ("Accept", "application/json")],
        b"",
    )
}

/// `POST /api/replication/peers/{peer}/verify`: the report.
fn verify(node: &Server, peer: &str, repair: bool) -> Value {
    let response = request(node, "POST", &format!("/api/replication/peers/{peer}/verify?repair={repair}"));
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

/// The replication status of `peer` in `/api/status`.
fn peer_status(node: &Server, peer: &str) -> Value {
    let status = node.get("/api/status", "application/json").json();
    status["replication"]
        .as_array()
        .and_then(|peers| peers.iter().find(|entry| entry["peer"] == peer).cloned())
        .unwrap_or_else(|| panic!("no status of {peer}: {status:#}"))
}

/// `haneul replication verify` against `node`, with `token` in HANEUL_TOKEN.
fn cli_verify(node: &Server, token: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(haneul_bin());
    command.args(["replication", "verify", "--config"]).arg(node.config_path()).args(args).env_remove("HANEUL_TOKEN");
    if let Some(token) = token {
        command.env("HANEUL_TOKEN", token);
    }
    run(&mut command)
}

#[test]
fn a_peer_that_was_down_catches_up_and_verify_finds_the_archives_equal_in_one_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Server::start_as("NODEB", "");
    let mut a = Server::start_as("NODEA", &peer_with_api("b", &b, dir.path()));
    a.store_samples("MODALITY", &FILES[..2]);
    eventually("b holding the first instances", || b.instances().len() == 2);

    b.kill9();
    a.store_samples("MODALITY", &FILES[2..]);
    b.start_again();
    eventually("b catching up", || b.instances() == a.instances());

    let report = verify(&a, "b", true);
    assert_eq!(report["equal"], true, "{report:#}");
    assert_eq!(report["equal_at_start"], true, "{report:#}");
    assert_eq!(report["round_trips"], 1, "equal archives compare by their roots: {report:#}");
    assert_eq!((report["local_instances"].as_u64(), report["peer_instances"].as_u64()), (Some(5), Some(5)));
    assert_eq!((report["pushed"].as_u64(), report["pulled"].as_u64()), (Some(0), Some(0)));
    assert_same_archives(&a, &b);

    // The status API and the metrics show it, also after a restart.
    let status = peer_status(&a, "b");
    assert_eq!(status["last_verify"]["equal"], true, "{status:#}");
    assert_eq!(status["verify_alarm"], false, "{status:#}");
    assert!(status["last_verify"]["finished_at"].as_str().is_some_and(|at| at.ends_with('Z')), "{status:#}");
    assert!(a.peer_metric("haneul_replication_last_verify_timestamp_seconds", "b") > 1.7e9);
    assert_eq!(a.peer_metric("haneul_replication_verify_differences", "b"), 0.0);
    a.restart();
    let status = peer_status(&a, "b");
    assert_eq!(status["last_verify"], report, "the last report survives a restart");

    // The tree answers: 256 buckets, and the counts.
    let tree = a.get("/api/replication/tree", "application/json").json();
    assert_eq!(tree["buckets"].as_array().map(Vec::len), Some(256), "{tree:#}");
    assert_eq!(tree["instances"], 5);
    assert_eq!(tree, b.get("/api/replication/tree", "application/json").json(), "both nodes' trees are the same");
}

#[test]
fn verify_repairs_differences_in_both_directions_and_the_cli_says_so_in_its_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let b = Server::start_as("NODEB", "");
    let a = Server::start_as("NODEA", &peer_with_api("b", &b, dir.path()));
    a.store_samples("MODALITY", &FILES[..3]);
    eventually("b holding a's instances", || b.instances().len() == 3);
    // B loses one instance (removals are not replicated), and gets one that
    // A never sees (B replicates to nobody), with the letters in its UIDs
    // that images from legacy archives carry: verify must name it to B.
    let lost = b.instances().into_iter().next().expect("an instance");
    let removed = request(&b, "DELETE", &format!("/api/instances/{}", lost.2));
    assert_eq!(removed.status, 200, "{}", removed.text());
    // A blank UID names nothing (it would match every study).
    let blank = request(&b, "DELETE", "/api/studies/%20");
    assert_eq!(blank.status, 400, "{}", blank.text());
    assert_eq!(b.instances().len(), 2, "nothing else removed");
    let legacy = dir.path().join("legacy.dcm");
    std::fs::copy(common::pydicom_data().join("test_files").join(FILES[3]), &legacy).expect("copying a sample");
    let modified = run(dcmtk("dcmodify")
        .args(["-nb", "-m", "(0020,000d)=1.2.840.LEGACY.7", "-m"])
        .args(["(0008,0018)=1.2.840.LEGACY.7.1", legacy.to_str().expect("a UTF-8 path")]));
    assert!(modified.status.success(), "{}", common::text(&modified));
    let stored =
        run(dcmtk("storescu").args(["-aec", &b.ae_title, "127.0.0.1", &b.dicom_port.to_string()]).arg(&legacy));
    assert!(stored.status.success(), "{}", common::text(&stored));
    assert!(b.instances().iter().any(|(study, _, _)| study == "1.2.840.LEGACY.7"), "B holds the legacy study");
    assert_eq!((a.instances().len(), b.instances().len()), (3, 3));
    assert_ne!(a.instances(), b.instances());

    // Compare only: differences found and left, exit code 1, alarm raised.
    let output = cli_verify(&a, Some(&a.token), &["b", "--no-repair"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("2 instances in 2 studies differed") && stdout.contains("still differ"), "{stdout}");
    let status = peer_status(&a, "b");
    assert_eq!(status["verify_alarm"], true, "{status:#}");
    assert_eq!(status["last_verify"]["differing_instances"], 2, "{status:#}");
    assert_eq!(a.peer_metric("haneul_replication_verify_differences", "b"), 2.0);
    assert_eq!(a.peer_metric("haneul_replication_verify_alarm", "b"), 1.0);
    assert_ne!(a.instances(), b.instances(), "nothing repaired");

    // Repair: the lost instance goes to B by C-STORE, B's own comes over HTTP.
    let output = cli_verify(&a, Some(&a.token), &["b", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    assert_eq!((report["pushed"].as_u64(), report["pulled"].as_u64()), (Some(1), Some(1)), "{report:#}");
    assert_eq!((report["equal"].as_bool(), report["remaining"].as_u64()), (Some(true), Some(0)), "{report:#}");
    assert_eq!(report["failures"], 0, "{report:#}");
    assert_same_archives(&a, &b);
    assert_eq!(a.instances().len(), 4);
    assert_eq!(peer_status(&a, "b")["verify_alarm"], false);

    // Equal again, in one round trip; the pulled instance, which came from
    // B, is not shipped back to it by the journal.
    let again = cli_verify(&a, Some(&a.token), &["b"]);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert_eq!(again.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("b: equal") && stdout.contains("1 round trip,"), "{stdout}");
    eventually("a's journal shipped", || a.peer_metric("haneul_replication_pending_instances", "b") == 0.0);
    assert_eq!(a.peer_metric("haneul_replication_shipped_total", "b"), 3.0, "only what was stored on A was shipped");

    // Without credentials: exit code 2 with a message.
    let no_token = cli_verify(&a, None, &["b"]);
    assert_eq!(no_token.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("HANEUL_TOKEN"));
}

#[test]
fn verify_needs_the_peers_url_and_token_and_names_the_missing_key() {
    let b = Server::start_as("NODEB", "");
    let peer = format!(
        "[[peer]]\nname = \"b\"\nae_title = \"NODEB\"\nhost = \"127.0.0.1\"\nport = {}\n\n[replication]\nverify_interval_minutes = 0\n",
        b.dicom_port
    );
    let a = Server::start_as("NODEA", &peer);
    let response = request(&a, "POST", "/api/replication/peers/b/verify");
    assert_eq!(response.status, 409, "{}", response.text());
    assert!(
        response.json()["error"].as_str().is_some_and(|error| error.contains("peer[0].url")),
        "{}",
        response.text()
    );
    let unknown = request(&a, "POST", "/api/replication/peers/nobody/verify");
    assert_eq!(unknown.status, 404, "{}", unknown.text());

    let output = cli_verify(&a, Some(&a.token), &["b"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("peer[0].url"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = cli_verify(&a, Some(&a.token), &["nobody"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("nobody"));

    // Client mistakes are 4xx with a JSON error.
    let unknown_version = format!("/api/replication/instances/1.2.3/versions/{}", "0".repeat(64));
    let too_long = format!("/api/replication/studies/{}/digests", "1".repeat(65));
    for (path, status) in [
        ("/api/replication/tree/256", 400),
        ("/api/replication/studies/1.2.3/digests", 404),
        // Letters are a UID ingest takes (legacy archives hold them): not found, not refused.
        ("/api/replication/studies/1.2.LEGACY/digests", 404),
        (too_long.as_str(), 400),
        ("/api/replication/studies/1.2%5C3/digests", 400),
        ("/api/replication/studies/%20/digests", 400),
        ("/api/replication/instances/1.2.3/versions/abc", 400),
        (unknown_version.as_str(), 404),
    ] {
        let response = request(&a, "GET", path);
        assert_eq!(response.status, status, "{path}: {}", response.text());
        assert!(response.json()["error"].is_string(), "{path}");
    }
    let response = request(&a, "POST", "/api/replication/peers/b/verify?repair=maybe");
    assert_eq!(response.status, 400, "{}", response.text());
}

#[test]
fn two_nodes_replicating_to_each_other_converge_to_identical_digests() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Server::start_as("NODEB", "");
    let a = Server::start_as("NODEA", &peer_with_api("b", &b, dir.path()));
    b.restart_with(&peer_with_api("a", &a, dir.path()));
    a.store_samples("MODALITY", &FILES[..2]);
    b.store_samples("MODALITY", &FILES[2..4]);
    eventually("both nodes holding all four", || a.instances().len() == 4 && b.instances().len() == 4);
    for (node, peer) in [(&a, "b"), (&b, "a")] {
        let report = verify(node, peer, true);
        assert_eq!(
            (report["equal_at_start"].as_bool(), report["round_trips"].as_u64()),
            (Some(true), Some(1)),
            "{report:#}"
        );
    }
    assert_eq!(
        a.get("/api/replication/tree", "application/json").json(),
        b.get("/api/replication/tree", "application/json").json()
    );
    assert_same_archives(&a, &b);
}
