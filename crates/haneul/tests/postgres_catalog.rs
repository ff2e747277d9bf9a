//! A node whose catalog is in PostgreSQL, started as a hospital would run
//! it: real binary, DCMTK and DICOMweb clients, restarts, the tools, and a
//! second node on the same catalog.

mod common;

use std::process::Command;

use common::{dcmtk, haneul_bin, run, text, Pki, Server};
use haneul_catalog::testing::TestDatabase;

const SAMPLES: [&str; 3] = ["CT_small.dcm", "MR_small.dcm", "rtdose.dcm"];

fn find_study_uids(server: &Server, patient_name: &str) -> Vec<String> {
    let port = server.dicom_port.to_string();
    let output = run(dcmtk("findscu").args([
        "-aec",
        &server.ae_title,
        "-S",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        &format!("PatientName={patient_name}"),
        "-k",
        "StudyInstanceUID=",
        "127.0.0.1",
        &port,
    ]));
    assert!(output.status.success(), "C-FIND failed:\n{}", text(&output));
    let log = String::from_utf8_lossy(&output.stderr);
    let mut uids: Vec<String> = log
        .lines()
        .filter(|line| line.contains("(0020,000d)"))
        .filter_map(|line| line.split('[').nth(1)?.split(']').next().map(|uid| uid.trim_end_matches('\0').to_string()))
        .collect();
    uids.sort();
    uids
}

#[test]
fn a_node_on_postgres_stores_finds_retrieves_restarts_and_shares_its_catalog() {
    let database = TestDatabase::create();
    let catalog = common::postgres_catalog(&database);
    let mut server = Server::start_with(&catalog);
    server.store_samples("MODALITY", &SAMPLES);
    assert!(!server.data_dir().join("catalog.sqlite").exists(), "the catalog is in PostgreSQL, not on disk");

    let held = server.instances();
    assert_eq!(held.len(), SAMPLES.len(), "QIDO-RS lists every stored instance: {held:?}");
    // WADO-RS finds each instance's file through the catalog.
    for instance in &held {
        let data_set = server.data_set(instance);
        let sop_uid = instance.2.as_bytes();
        assert!(data_set.windows(sop_uid.len()).any(|window| window == sop_uid), "{instance:?} is not what came back");
    }
    let ct_study = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322".to_string();
    assert_eq!(find_study_uids(&server, "CompressedSamples^CT1"), std::slice::from_ref(&ct_study));
    assert!(find_study_uids(&server, "Nobody*").is_empty());

    // The catalog outlives the process.
    server.restart();
    assert_eq!(server.instances(), held, "the same instances after a restart");

    // The tools read the same catalog.
    let verify = run(Command::new(haneul_bin()).arg("verify").arg("--config").arg(server.config_path()));
    assert!(verify.status.success(), "haneul verify:\n{}", text(&verify));

    // A second node on the same catalog answers queries about what the
    // first one stored (its blobs stay on the first node's disk).
    let second = Server::start_as("HANEUL2", &catalog);
    assert_eq!(find_study_uids(&second, "CompressedSamples^CT1"), [ct_study]);
    second.store_samples("MODALITY", &["rtplan.dcm"]);
    assert_eq!(server.instances().len(), SAMPLES.len() + 1, "the first node sees what the second stored");
}

/// A wrong `[catalog]` table stops the start with a message naming the key.
#[test]
fn a_bad_catalog_configuration_is_refused_at_start() {
    for (catalog, expected) in [
        ("[catalog]\nengine = \"postgres\"\n", "catalog.url"),
        (
            "[catalog]\nengine = \"postgres\"\nurl = \"postgresql://haneul:secret@127.0.0.1/db\"\n",
            "catalog.password_file",
        ),
        ("[catalog]\nurl = \"postgresql://127.0.0.1/db\"\n", "only used with engine"),
        ("[catalog]\nengine = \"oracle\"\n", "engine"),
    ] {
        assert_refused_at_start(catalog, expected);
    }
}

/// `haneul serve` with this `[catalog]` table stops, naming `expected`.
fn assert_refused_at_start(catalog: &str, expected: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("haneul.toml");
    std::fs::write(&config, format!("[storage]\ndata_dir = {:?}\n\n{catalog}", dir.path().join("data"))).unwrap();
    let output = run(Command::new(haneul_bin()).arg("serve").arg("--config").arg(&config));
    assert!(!output.status.success(), "started with {catalog:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(expected), "{catalog:?}: the error does not name {expected:?}:\n{stderr}");
}

/// The catalog over TLS: with `catalog.ca_file`, every connection is
/// encrypted and the server's certificate verified; a CA that did not sign
/// it stops the start, as do contradicting settings.
#[test]
fn a_catalog_over_tls_is_encrypted_and_its_server_verified() {
    let database = TestDatabase::create();
    let catalog = |url: &str, ca_file: Option<&std::path::Path>| {
        let mut table =
            format!("[catalog]\nengine = \"postgres\"\nurl = {url:?}\npassword_file = {:?}\n", database.password_file);
        if let Some(ca_file) = ca_file {
            table += &format!("ca_file = {ca_file:?}\n");
        }
        table
    };
    let ca = haneul_catalog::testing::postgres_ca();
    let server = Server::start_with(&catalog(&database.options.url, Some(&ca)));
    server.store_samples("MODALITY", &["CT_small.dcm"]);
    assert_eq!(server.instances().len(), 1);
    let (connections, all_encrypted) = database.haneul_connections_tls();
    assert!(connections >= 1, "the node has connections to its catalog");
    assert!(all_encrypted, "every connection of the node to its catalog is TLS");
    drop(server);

    // Without ca_file, the same server is reached in plain text (the
    // check above can tell the difference).
    let plain = Server::start_with(&catalog(&database.options.url, None));
    assert_eq!(plain.instances().len(), 1);
    assert!(!database.haneul_connections_tls().1, "no TLS without ca_file");
    drop(plain);

    let pki = Pki::new();
    let require = format!("{}?sslmode=require", database.options.url);
    let disable = format!("{}?sslmode=disable", database.options.url);
    let wrong_ca = pki.path("ca.pem");
    for (table, expected) in [
        (catalog(&database.options.url, Some(&wrong_ca)), "certificate"),
        (catalog(&require, None), "catalog.ca_file"),
        (catalog(&disable, Some(&ca)), "sslmode=disable"),
        (catalog(&database.options.url, Some(std::path::Path::new("/nonexistent/ca.pem"))), "catalog.ca_file"),
    ] {
        assert_refused_at_start(&table, expected);
    }
}

/// Certificate authentication: with `catalog.cert_file` and `key_file`, a
/// node signs in as the certificate's user with no password at all (the
/// server's `hostssl ... cert` line for that user), and the server records
/// the certificate; without them, the same node is refused.
#[test]
fn a_node_signs_in_to_its_catalog_with_a_client_certificate() {
    use haneul_catalog::testing::{postgres_client_identity, CERTIFICATE_USER};
    let database = TestDatabase::create();
    let ca = haneul_catalog::testing::postgres_ca();
    let (certificate, key) = postgres_client_identity();
    let url = database.url_for(CERTIFICATE_USER);
    let base = format!("[catalog]\nengine = \"postgres\"\nurl = {url:?}\nca_file = {ca:?}\n");

    let server = Server::start_with(&format!("{base}cert_file = {certificate:?}\nkey_file = {key:?}\n"));
    server.store_samples("MODALITY", &["CT_small.dcm"]);
    assert_eq!(server.instances().len(), 1);
    let connections = database.haneul_client_certificates();
    assert!(!connections.is_empty(), "the node has connections to its catalog");
    for (user, subject) in &connections {
        assert_eq!(user, CERTIFICATE_USER, "signed in as the certificate's user");
        assert!(subject.contains(&format!("CN={CERTIFICATE_USER}")), "the server saw the certificate: {subject:?}");
    }
    drop(server);

    // No certificate, no way in: that user has no password.
    assert_refused_at_start(&base, "requires a valid client certificate");
    // The certificate with a key that is not its own.
    let pki = Pki::new();
    let wrong_key = pki.path("server.key");
    assert_refused_at_start(
        &format!("{base}cert_file = {certificate:?}\nkey_file = {wrong_key:?}\n"),
        "catalog.key_file",
    );
}
