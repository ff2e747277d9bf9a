//! Several stateless nodes on one PostgreSQL catalog and one S3 bucket
//! (SeaweedFS), started as a hospital would run them behind a load
//! balancer: any node stores, finds and retrieves anything, and a node
//! killed in the middle of an ingest loses nothing it acknowledged.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::migration::{migrate, migration_status};
use common::orthanc::{legacy_sample_paths, LegacyOptions, LegacyPacs};
use common::sending::{acknowledged, generate, start_storescu, wait_for_exit};
use common::{dcmtk, eventually, files_under, haneul_bin, http_request, run, text, without_meta, HttpResponse, Server};
use haneul_catalog::testing::TestDatabase;
use haneul_storage::testing::TestBucket;

/// One node named `name` on the shared catalog and bucket.
fn node(name: &str, database: &TestDatabase, bucket: &TestBucket) -> Server {
    node_with(name, database, bucket, "")
}

/// The same with `extra` TOML (a migration source, say).
fn node_with(name: &str, database: &TestDatabase, bucket: &TestBucket, extra: &str) -> Server {
    let storage = format!("backend = \"s3\"\nnode = {name:?}\n");
    let shared = format!("{}\n{}\n{extra}", common::postgres_catalog(database), common::s3_blobs(bucket));
    Server::start_node(&format!("HANEUL_{}", name.to_uppercase()), &storage, &shared)
}

fn verify(server: &Server) -> String {
    let output = run(Command::new(haneul_bin()).arg("verify").arg("--config").arg(server.config_path()));
    assert!(output.status.success(), "haneul verify on {} found problems:\n{}", server.ae_title, text(&output));
    text(&output)
}

#[test]
fn three_nodes_on_one_catalog_and_bucket_each_store_find_and_retrieve_everything() {
    let database = TestDatabase::create();
    let bucket = TestBucket::create();
    let nodes: Vec<Server> = ["a", "b", "c"].iter().map(|name| node(name, &database, &bucket)).collect();
    let samples =
        [["CT_small.dcm", "MR_small.dcm"], ["rtdose.dcm", "rtplan.dcm"], ["rtstruct.dcm", "SC_rgb_small_odd.dcm"]];
    for (server, files) in nodes.iter().zip(&samples) {
        server.store_samples("MODALITY", files);
    }
    let everything = nodes[0].instances();
    assert_eq!(everything.len(), 6, "{everything:?}");
    for server in &nodes {
        assert_eq!(server.instances(), everything, "{} lists what every node stored", server.ae_title);
        // The instance files are in the bucket, not on the node's disk.
        assert_eq!(files_under(&server.data_dir().join("blobs")).len(), 0, "{} kept files locally", server.ae_title);
        assert_eq!(files_under(&server.data_dir().join("staging")).len(), 0, "{} left staging files", server.ae_title);
    }
    // Every node retrieves every instance, whoever stored it, with the same bytes.
    for instance in &everything {
        let from_a = nodes[0].data_set(instance);
        let sop_uid = instance.2.as_bytes();
        assert!(from_a.windows(sop_uid.len()).any(|window| window == sop_uid), "{instance:?} is not what came back");
        for server in &nodes[1..] {
            assert!(server.data_set(instance) == from_a, "{} returns other bytes for {instance:?}", server.ae_title);
        }
    }
    // Read again, an instance comes from the node's read cache, not the bucket.
    let misses = nodes[0].metric("haneul_blob_cache_misses_total");
    assert!(misses >= 6.0, "every instance downloaded once by node a: {misses}");
    let hits = nodes[0].metric("haneul_blob_cache_hits_total");
    let instance = everything.iter().next().expect("an instance");
    assert!(nodes[0].data_set(instance) == nodes[1].data_set(instance));
    assert_eq!(nodes[0].metric("haneul_blob_cache_hits_total"), hits + 1.0, "read from the cache");
    assert_eq!(nodes[0].metric("haneul_blob_cache_misses_total"), misses, "not downloaded again");
    // Each node's verify reads every catalogued object back from the bucket.
    assert!(verify(&nodes[2]).contains("instances checked: 6"));
}

#[test]
fn a_node_killed_mid_ingest_loses_nothing_it_acknowledged() {
    const INSTANCES: usize = 240;
    let database = TestDatabase::create();
    let bucket = TestBucket::create();
    // A short liveness lease, so that the survivor soon judges what the victim left unsettled.
    let fast = "[replication]\nlease_seconds = 3\n";
    let survivor = node_with("a", &database, &bucket, fast);
    let mut victim = node_with("b", &database, &bucket, fast);
    let work = tempfile::tempdir().expect("tempdir");
    let round = generate(&work.path().join("study"), "cluster", INSTANCES);

    let log_path = work.path().join("storescu.log");
    let mut storescu = start_storescu(&victim, &round.dir, &log_path);
    let deadline = Instant::now() + Duration::from_secs(120);
    while acknowledged(&std::fs::read_to_string(&log_path).unwrap_or_default()).len() < 60 {
        assert!(Instant::now() < deadline, "storescu did not get 60 stores acknowledged");
        assert!(storescu.try_wait().expect("storescu").is_none(), "storescu finished before the kill");
        std::thread::sleep(Duration::from_millis(5));
    }
    victim.kill9();
    wait_for_exit(&mut storescu, Duration::from_secs(30), "storescu after the kill");
    let stored = acknowledged(&std::fs::read_to_string(&log_path).expect("storescu log"));
    assert!(stored.len() < INSTANCES, "the node died before the end of the study");
    let acknowledged_uids: BTreeSet<String> = stored.iter().map(|path| round.files[path].clone()).collect();

    // The surviving node holds every acknowledged instance, intact.
    let held: BTreeSet<(String, String, String)> = survivor.instances();
    let held_uids: BTreeSet<String> = held.iter().map(|(_, _, sop)| sop.clone()).collect();
    let lost: Vec<&String> = acknowledged_uids.difference(&held_uids).collect();
    assert!(lost.is_empty(), "acknowledged by the killed node but not in the archive: {lost:?}");
    for path in stored.iter().step_by(10) {
        let instance = (round.study.clone(), round.series.clone(), round.files[path].clone());
        let original = without_meta(&std::fs::read(path).expect("generated file"));
        assert!(survivor.data_set(&instance) == original, "{path} came back changed");
    }
    verify(&survivor);

    // The modality sends the whole study again through the surviving node
    // (the load balancer's next choice). Instances the victim committed
    // while their upload ran are refused for now (a retryable failure),
    // until the survivor has judged them; the modality's next attempt then
    // brings everything, nothing twice.
    let unjudged = || database.column("SELECT count(*) FROM unsettled WHERE blob_path LIKE 'b/%'");
    let log_again = work.path().join("storescu-again.log");
    let mut again = start_storescu(&survivor, &round.dir, &log_again);
    wait_for_exit(&mut again, Duration::from_secs(300), "storescu to the surviving node");
    let log = std::fs::read_to_string(&log_again).unwrap_or_default();
    let refused: Vec<&str> =
        log.lines().filter(|line| line.contains("Received Store Response") && !line.contains("Success")).collect();
    assert!(
        refused.iter().all(|line| line.to_lowercase().replace(' ', "").contains("refused:outofresources")),
        "only retryable refusals: {refused:?}"
    );
    eprintln!("resent: {} refused for now", refused.len());
    eventually("the survivor judging the victim's unsettled instances", || unjudged() == ["0"]);
    let log_last = work.path().join("storescu-last.log");
    let mut last = start_storescu(&survivor, &round.dir, &log_last);
    let exit = wait_for_exit(&mut last, Duration::from_secs(120), "storescu to the surviving node again");
    let log = std::fs::read_to_string(&log_last).unwrap_or_default();
    assert!(exit.success(), "resending failed:\n{log}");
    assert_eq!(acknowledged(&log).len(), INSTANCES, "every instance acknowledged:\n{log}");
    assert_eq!(survivor.instances().len(), INSTANCES, "each instance once");

    // The killed node comes back: its recovery deletes the objects of stores
    // it never acknowledged and leaves the others' alone.
    victim.start_again();
    assert_eq!(victim.instances().len(), INSTANCES);
    let report = verify(&victim);
    assert!(report.contains("problems:          0"), "{report}");
    verify(&survivor);
}

/// A wrong `[storage]` blob setting stops the start with a message naming the key.
#[test]
fn a_bad_blob_storage_configuration_is_refused_at_start() {
    let bucket = TestBucket::create();
    let wrong_secret = bucket.secret_file.with_extension("wrong");
    std::fs::write(&wrong_secret, "not-the-secret").expect("wrong secret file");
    let s3 = common::s3_blobs(&bucket);
    let cases = [
        ("backend = \"s3\"\n".to_string(), String::new(), "storage.s3"),
        (String::new(), s3.clone(), "only used with storage.backend"),
        ("backend = \"s3\"\nnode = \"../up\"\n".to_string(), s3.clone(), "storage.node"),
        ("backend = \"tape\"\n".to_string(), String::new(), "backend"),
        ("backend = \"s3\"\n".to_string(), "[storage.s3]\nbucket = \"\"\n".to_string(), "storage.s3.bucket"),
        (
            "backend = \"s3\"\n".to_string(),
            "[storage.s3]\nbucket = \"b\"\naccess_key_id = \"k\"\n".to_string(),
            "secret_access_key_file",
        ),
        (
            "backend = \"s3\"\n".to_string(),
            "[storage.s3]\nbucket = \"b\"\nendpoint = \"ftp://x\"\n".to_string(),
            "storage.s3.endpoint",
        ),
        (
            "backend = \"s3\"\n".to_string(),
            "[storage.s3]\nbucket = \"b\"\nregion = \"r\"\nsize = 1\n".to_string(),
            "size",
        ),
        (
            "backend = \"s3\"\nnode = \"a\"\n".to_string(),
            s3.replace(&format!("{:?}", bucket.secret_file), &format!("{wrong_secret:?}")),
            &format!("s3 bucket {}", bucket.options.bucket),
        ),
    ];
    for (storage, tables, expected) in &cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("haneul.toml");
        let data_dir = dir.path().join("data");
        std::fs::write(&config, format!("[storage]\ndata_dir = {data_dir:?}\n{storage}\n{tables}")).expect("config");
        let output = run(Command::new(haneul_bin()).arg("serve").arg("--config").arg(&config));
        assert!(!output.status.success(), "started with {storage:?} {tables:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{storage:?} {tables:?}: the error does not name {expected:?}:\n{stderr}");
    }
    let _ = std::fs::remove_file(wrong_secret);
}

/// Background work claimed by a node that dies is finished by another: a
/// migration started on one node, killed half-way, completed by the other
/// once the dead node's claims have lapsed, without gaps or duplicates.
#[test]
fn a_migration_outlives_the_node_running_it() {
    let database = TestDatabase::create();
    let bucket = TestBucket::create();
    let legacy = LegacyPacs::start(LegacyOptions::new());
    legacy.store("MODALITY", &legacy_sample_paths());
    let port = legacy.address().rsplit(':').next().expect("port").to_string();
    // C-GET (no route back needed to either node), slowly, so that the kill lands half-way.
    let source = format!(
        "[[migration.source]]\nname = \"legacy\"\nmethod = \"c-get\"\nae_title = \"LEGACY\"\nhost = \"127.0.0.1\"\n\
         port = {port}\nparallel = 1\nrate_limit = 3\nclaim_lease_seconds = 3\n"
    );
    let mut first = node_with("a", &database, &bucket, &source);
    let second = node_with("b", &database, &bucket, &source);
    let total = legacy.study_count() as i64;

    let started = migrate(&first, &["start", "legacy", "--detach"]);
    assert!(started.status.success(), "{}", text(&started));
    eventually("a few studies verified and one running", || {
        let counts = &migration_status(&first, "legacy")["counts"];
        counts["verified"].as_i64() >= Some(2) && counts["running"].as_i64() >= Some(1)
    });
    first.kill9();
    let left = migration_status(&second, "legacy");
    assert!(left["counts"]["verified"].as_i64() < Some(total), "killed half-way, not at the end: {left:#}");

    // The other node takes the migration up, the dead node's running study included.
    let resumed = migrate(&second, &["start", "legacy", "--detach"]);
    assert!(resumed.status.success(), "{}", text(&resumed));
    eventually("the migration finished on the other node", || {
        migration_status(&second, "legacy")["phase"] == "finished"
    });
    let after = migration_status(&second, "legacy");
    assert_eq!(after["counts"]["verified"], total, "{after:#}");
    assert_eq!(after["counts"]["discrepancies"], 0, "{after:#}");
    let held: BTreeSet<String> = second.instances().into_iter().map(|(_, _, sop)| sop).collect();
    assert_eq!(held, legacy.sop_uids(), "no gap");
    assert_eq!(second.instances().len(), legacy.instance_count(), "no duplicate");
    assert!(second.log().contains("taking over a migration study"), "the dead node's running study was taken over");
}

/// A backup of nodes on PostgreSQL and a bucket restores into a new, empty
/// database and bucket (the disaster-recovery site's): a node started on
/// them holds every instance byte for byte, verifies clean and goes on
/// storing; a second restore into the now filled database is refused, and
/// so is a configuration that mixes a bucket with the embedded catalog.
#[test]
fn a_cluster_backup_restores_into_an_empty_database_and_bucket() {
    let database = TestDatabase::create();
    let bucket = TestBucket::create();
    let source = node("a", &database, &bucket);
    source.store_samples("MODALITY", &["CT_small.dcm", "MR_small.dcm", "rtdose.dcm"]);
    let held = source.instances();
    let originals: Vec<Vec<u8>> = held.iter().map(|instance| source.data_set(instance)).collect();
    let work = tempfile::tempdir().expect("tempdir");
    let backup_dir = work.path().join("backup");
    let backup = run(Command::new(haneul_bin())
        .arg("backup")
        .arg("--to")
        .arg(&backup_dir)
        .arg("--config")
        .arg(source.config_path()));
    assert!(backup.status.success(), "{}", text(&backup));

    let new_database = TestDatabase::create();
    let new_bucket = TestBucket::create();
    let restore = |storage: &str, catalog: &str| {
        let config = work.path().join("restore.toml");
        let data_dir = work.path().join("restore-data");
        let table = format!("[storage]\ndata_dir = {data_dir:?}\n{storage}\n{catalog}\n");
        std::fs::write(&config, table).expect("config");
        run(Command::new(haneul_bin()).args(["restore", "--from"]).arg(&backup_dir).arg("--config").arg(&config))
    };
    let shared = format!("backend = \"s3\"\nnode = \"r\"\n\n{}", common::s3_blobs(&new_bucket));
    let restored = restore(&shared, &common::postgres_catalog(&new_database));
    assert!(restored.status.success(), "{}", text(&restored));
    assert!(text(&restored).contains("every one verified"), "{}", text(&restored));
    // The source node's audit trail comes back in the restoring node's data directory, chain intact.
    let restored_trail = work.path().join("restore-data");
    assert!(std::fs::read_dir(restored_trail.join("audit")).is_ok_and(|mut files| files.next().is_some()));
    let trail = run(Command::new(haneul_bin()).args(["audit", "verify", "--data"]).arg(&restored_trail));
    assert!(trail.status.success(), "{}", text(&trail));
    let again = restore(&shared, &common::postgres_catalog(&new_database));
    assert!(!again.status.success());
    assert!(text(&again).contains("already holds an archive"), "{}", text(&again));
    let mixed = restore(&shared, "");
    assert!(!mixed.status.success());
    assert!(text(&mixed).contains("not one of each"), "{}", text(&mixed));

    let node_b = node("b", &new_database, &new_bucket);
    assert_eq!(node_b.instances(), held, "the restored node holds what the source held");
    for (instance, original) in held.iter().zip(&originals) {
        assert!(node_b.data_set(instance) == *original, "{instance:?} came back changed");
    }
    verify(&node_b);
    // Identities continue after the restored rows: new stores and their journal entries fit in.
    node_b.store_samples("MODALITY", &["rtplan.dcm"]);
    assert_eq!(node_b.instances().len(), held.len() + 1);
    verify(&node_b);
}

/// `echoscu` calling as `calling_ae`: whether the node accepted the association.
fn echo_accepted(server: &Server, calling_ae: &str) -> bool {
    let port = server.dicom_port.to_string();
    run(dcmtk("echoscu").args(["-aet", calling_ae, "-aec", &server.ae_title, "127.0.0.1", &port])).status.success()
}

fn request(server: &Server, method: &str, path: &str, body: &str) -> HttpResponse {
    let authorization = server.authorization();
    let headers = [("Authorization", authorization.as_str()), ("Content-Type", "application/json")];
    http_request(server.http_port, method, path, &headers, body.as_bytes())
}

/// A storescp answering as `ae_title` on `port`, writing into `dir`; killed on drop.
struct StoreScp(std::process::Child);

impl StoreScp {
    fn start(ae_title: &str, port: u16, dir: &std::path::Path) -> StoreScp {
        let child = dcmtk("storescp")
            .args(["+xa", "-aet", ae_title, "-od"])
            .arg(dir)
            .arg(port.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting storescp");
        let scp = StoreScp(child);
        eventually("storescp answering C-ECHO", || {
            run(dcmtk("echoscu").args(["-aec", ae_title, "127.0.0.1", &port.to_string()])).status.success()
        });
        scp
    }
}

impl Drop for StoreScp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An AE added once (at the command line of one node, or through the REST
/// API of another) is known to every node of the catalog within seconds,
/// without a restart: its associations are accepted, and it is a C-MOVE
/// destination; removed, it is refused again everywhere.
#[test]
fn an_ae_added_on_one_node_is_known_to_every_node() {
    let database = TestDatabase::create();
    let bucket = TestBucket::create();
    // Only known AEs are accepted, even from loopback; the test's own
    // client is in each node's configuration file.
    let start = |name: &str| {
        let storage = format!("backend = \"s3\"\nnode = {name:?}\n");
        let shared = format!(
            "{}\n{}\n[[known_ae]]\ntitle = \"MODALITY\"\nhost = \"127.0.0.1\"\nport = 104\n",
            common::postgres_catalog(&database),
            common::s3_blobs(&bucket)
        );
        Server::start_node_with_dicom(
            &format!("HANEUL_{}", name.to_uppercase()),
            "allow_any_loopback = false\n",
            &storage,
            &shared,
        )
    };
    let (a, b) = (start("a"), start("b"));
    assert!(echo_accepted(&b, "MODALITY"), "the configured AE is accepted");
    assert!(!echo_accepted(&b, "CT9"), "an unknown AE is refused");

    // Added at the command line of node a (a running server beside it).
    let work = tempfile::tempdir().expect("tempdir");
    let destination_port = common::free_port();
    let output = run(Command::new(haneul_bin())
        .args(["ae", "add", "CT9", "--host", "127.0.0.1", "--port", &destination_port.to_string()])
        .args(["--role", "technologist", "--description", "CT 3층", "--config"])
        .arg(a.config_path()));
    assert!(output.status.success(), "haneul ae add: {}", text(&output));
    eventually("node b accepting CT9", || echo_accepted(&b, "CT9"));
    eventually("node a accepting CT9", || echo_accepted(&a, "CT9"));
    b.store_samples("CT9", &["CT_small.dcm"]);
    let listed = run(Command::new(haneul_bin()).args(["ae", "list", "--json", "--config"]).arg(b.config_path()));
    let listed: serde_json::Value = serde_json::from_str(&text(&listed)).expect("ae list --json");
    assert_eq!(listed[0]["title"], "CT9");
    assert_eq!(listed[0]["description"], "CT 3층");
    assert!(listed[0]["updated_by"].as_str().is_some_and(|by| by.ends_with("(command line)")), "{listed}");

    // CT9 is a C-MOVE destination on node b, which never read a file naming it.
    let received = work.path().join("received");
    std::fs::create_dir(&received).expect("received dir");
    let _storescp = StoreScp::start("CT9", destination_port, &received);
    let study = a.instances().into_iter().next().expect("the stored instance").0;
    let moved = run(dcmtk("movescu")
        .args(["-v", "-S", "-aet", "MODALITY", "-aec", &b.ae_title, "-aem", "CT9"])
        .args(["-k", "QueryRetrieveLevel=STUDY", "-k", &format!("StudyInstanceUID={study}")])
        .args(["127.0.0.1", &b.dicom_port.to_string()]));
    assert!(text(&moved).contains("Received Final Move Response (Success)"), "{}", text(&moved));
    assert_eq!(files_under(&received).len(), 1, "the study reached CT9");

    // Through the REST API of node b: added, listed by node a as shared, removed.
    let body = r#"{"host": "127.0.0.1", "port": 11113, "role": "clinician", "site": ""}"#;
    assert_eq!(request(&b, "PUT", "/api/aes/VIEWER2", body).status, 201);
    assert_eq!(request(&b, "PUT", "/api/aes/VIEWER2", body).status, 200, "a second PUT changes it");
    let bad = request(&b, "PUT", "/api/aes/VIEWER2", r#"{"host": "bad host!", "port": 104, "role": "service"}"#);
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert_eq!(request(&b, "PUT", "/api/aes/V2", r#"{"host": "h", "port": 1, "role": "boss"}"#).status, 400);
    eventually("node a listing VIEWER2 as shared", || {
        let known = request(&a, "GET", "/api/aes", "").json();
        known["known"].as_array().is_some_and(|aes| {
            aes.iter().any(|ae| ae["title"] == "VIEWER2" && ae["source"] == "shared" && ae["role"] == "clinician")
        })
    });
    assert_eq!(request(&a, "DELETE", "/api/aes/VIEWER2", "").status, 204);
    assert_eq!(request(&a, "DELETE", "/api/aes/VIEWER2", "").status, 404);
    assert_eq!(request(&a, "DELETE", "/api/aes/MODALITY", "").status, 404, "a configured AE is not the API's");

    // Removed at the command line: refused again on every node.
    let removed = run(Command::new(haneul_bin()).args(["ae", "remove", "CT9", "--config"]).arg(b.config_path()));
    assert!(removed.status.success(), "haneul ae remove: {}", text(&removed));
    eventually("node a refusing CT9 again", || !echo_accepted(&a, "CT9"));
    eventually("node b refusing CT9 again", || !echo_accepted(&b, "CT9"));
    assert!(echo_accepted(&a, "MODALITY"));
    // Each change is in the audit trail of the node it was made on.
    let changes = common::audit_search(&b.data_dir(), &["--action", "config-change"]);
    let details: Vec<String> = changes.iter().map(|entry| entry.to_string()).collect();
    assert!(details.iter().any(|entry| entry.contains("VIEWER2")), "{details:?}");
    assert!(details.iter().any(|entry| entry.contains("shared AE removed")), "{details:?}");
}

/// Two nodes of one catalog replicate to a DR site: only the node holding
/// the peer's lease ships; killed, the other takes over and the DR site gets
/// everything stored before and after.
#[test]
fn replication_to_a_peer_runs_on_one_node_and_moves_when_it_dies() {
    let database = TestDatabase::create();
    let bucket = TestBucket::create();
    let dr = Server::start_as("HANEUL_DR", "");
    let peer = format!(
        "[replication]\nlease_seconds = 3\n[[peer]]\nname = \"dr\"\nae_title = \"HANEUL_DR\"\nhost = \"127.0.0.1\"\nport = {}\n",
        dr.dicom_port
    );
    let mut nodes = [node_with("a", &database, &bucket, &peer), node_with("b", &database, &bucket, &peer)];
    let active = |server: &Server| -> Option<bool> {
        let status = server.get("/api/status", "application/json").json();
        status["replication"].as_array()?.iter().find(|peer| peer["peer"] == "dr")?["active"].as_bool()
    };
    eventually("one node shipping to dr", || {
        matches!((active(&nodes[0]), active(&nodes[1])), (Some(true), Some(false)) | (Some(false), Some(true)))
    });
    nodes[0].store_samples("MODALITY", &["CT_small.dcm", "MR_small.dcm"]);
    nodes[1].store_samples("MODALITY", &["rtdose.dcm", "rtplan.dcm"]);
    eventually("dr holding the four instances", || dr.instances().len() == 4);
    let holder = usize::from(active(&nodes[1]) == Some(true));
    let shipped = |server: &Server| server.peer_metric("haneul_replication_shipped_total", "dr");
    assert_eq!(shipped(&nodes[holder]), 4.0, "the lease holder shipped everything");
    assert_eq!(shipped(&nodes[1 - holder]), 0.0, "the other node shipped nothing");

    // The holder dies; what is stored through the survivor reaches dr once
    // the lease has lapsed (3 s).
    nodes[holder].kill9();
    let survivor = &nodes[1 - holder];
    survivor.store_samples("MODALITY", &["rtstruct.dcm", "SC_rgb_small_odd.dcm"]);
    eventually("the survivor taking the lease over", || active(survivor) == Some(true));
    eventually("dr holding all six instances", || dr.instances().len() == 6);
    assert_eq!(dr.instances(), survivor.instances(), "dr holds what the cluster holds");
    assert!(shipped(survivor) >= 2.0);
}

/// A node that dies in the middle of stores leaves instances committed
/// while their upload ran. Should it never come back, the node that finds
/// its liveness lease lapsed judges them as the dead node's own recovery
/// would: kept where the bucket holds their bytes, rolled back (never
/// acknowledged) where it does not. Until then, the same instance sent
/// through another node is not acknowledged on the strength of a first
/// copy that may not exist.
#[test]
fn a_dead_nodes_unfinished_stores_are_judged_by_a_surviving_node() {
    const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
    const MR: &str = "1.2.840.10008.5.1.4.1.1.4";
    let database = TestDatabase::create();
    let bucket = TestBucket::create();
    let fast = "[replication]\nlease_seconds = 3\n";
    let survivor = node_with("a", &database, &bucket, fast);
    let mut dead = node_with("b", &database, &bucket, fast);
    dead.store_samples("MODALITY", &["CT_small.dcm", "MR_small.dcm"]);
    eventually("node b keeping its liveness lease", || {
        database.column("SELECT holder FROM leases WHERE name = 'node.b'") == ["b"]
    });

    // What a crash in the middle of both uploads leaves: both entries
    // committed as unsettled, the CT's object complete, the MR's missing
    // (set up while b still runs, so that a cannot judge anything before
    // the MR is sent again; b itself never looks at them).
    let path_of = |class: &str| {
        database.column(&format!("SELECT blob_path FROM instances WHERE sop_class = '{class}'")).remove(0)
    };
    let (ct_path, mr_path) = (path_of(CT), path_of(MR));
    assert!(ct_path.starts_with("b/") && mr_path.starts_with("b/"), "{ct_path} {mr_path}");
    database.execute(&format!("INSERT INTO unsettled (blob_path) VALUES ('{ct_path}'), ('{mr_path}')"));
    let work = tempfile::tempdir().expect("tempdir");
    let config = haneul_storage::BlobConfig {
        backend: haneul_storage::BlobBackend::S3(bucket.options.clone()),
        node: Some("b".into()),
        read_cache_bytes: 0,
    };
    let blobs = haneul_storage::BlobStore::open_configured(work.path().into(), work.path().into(), &config, false)
        .expect("the bucket");
    blobs.delete(&mr_path).expect("deleting the MR's object");
    dead.kill9();

    // The modality sends the MR again, through node a, before a has judged
    // b's stores: refused for now (a retryable failure), not acknowledged.
    let mr_file = common::pydicom_data().join("test_files").join("MR_small.dcm");
    let early = run(dcmtk("storescu")
        .args(["-d", "-aet", "MODALITY", "-aec", &survivor.ae_title, "127.0.0.1", &survivor.dicom_port.to_string()])
        .arg(&mr_file));
    let statuses = common::dimse_statuses(&text(&early));
    assert_eq!(statuses, [0xA700], "the MR sent again while its first copy is unsettled:\n{}", text(&early));

    eventually("node a judging node b's unfinished stores", || {
        database.column("SELECT count(*) FROM unsettled") == ["0"]
    });
    let held = survivor.instances();
    let classes = database.column("SELECT sop_class FROM instances ORDER BY sop_class");
    assert_eq!(classes, [CT], "the CT kept, the MR rolled back: {held:?}");
    assert!(survivor.log().contains("adopting the unsettled instances of a node whose lease lapsed"));
    let rolled_back = database.column("SELECT detail FROM events WHERE kind = 'recovery-rolled-back'");
    assert_eq!(rolled_back.len(), 1, "{rolled_back:?}");
    assert!(rolled_back[0].contains("1.3.6.1.4.1.5962.1.1.4.1.1.20040826185059.5457"), "{rolled_back:?}");

    // Sent again now, the MR is stored; both come back whole.
    survivor.store_samples("MODALITY", &["MR_small.dcm"]);
    let held = survivor.instances();
    assert_eq!(held.len(), 2, "{held:?}");
    for instance in &held {
        assert!(!survivor.data_set(instance).is_empty(), "{instance:?} does not come back");
    }
    verify(&survivor);
}
