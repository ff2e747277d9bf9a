//! Security of the DIMSE edge against real peers: DICOM TLS (`[dicom.tls]`)
//! with DCMTK's echoscu, storescu and findscu and a test PKI made with the
//! `openssl` CLI; AE roles from `[[known_ae]]`; association limits per
//! calling AE; and the rule that plain DICOM leaves loopback only with
//! `dicom.insecure`.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{
    audit_search, dcmtk, dimse_statuses, free_port, haneul_bin, parse_peer_output, pydicom_data, python, run, text,
    wait_for_port, wait_until, Pki, Server, TEST_CLIENT_CN,
};

const CT_SMALL_STUDY: &str = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322";
const CT_SMALL_INSTANCE: &str = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322";
const MR_SMALL_STUDY: &str = "1.3.6.1.4.1.5962.1.2.4.20040826185059.5457";
const MR_SMALL_INSTANCE: &str = "1.3.6.1.4.1.5962.1.1.4.1.1.20040826185059.5457";

/// pynetdicom as a C-GET SCU over TLS with a client certificate: argv is
/// port, CA, certificate, key, Study Instance UID and the server's blob
/// directory; prints the statuses and, per received instance, whether its
/// data set is the end of a stored file byte for byte.
const PYNETDICOM_TLS_GET: &str = r#"
import json, os, ssl, sys
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelGet
port, ca, cert, key, study, blobs = sys.argv[1:7]
stored = [open(os.path.join(d, f), "rb").read() for d, _, files in os.walk(blobs) for f in files]
received = []
def on_store(event):
    raw = event.request.DataSet.getvalue()
    received.append([event.request.AffectedSOPInstanceUID, any(blob.endswith(raw) for blob in stored)])
    return 0x0000
context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
context.load_cert_chain(certfile=cert, keyfile=key)
ae = AE(ae_title="PYTLS")
ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
assoc = ae.associate("127.0.0.1", int(port), ae_title="HANEUL", ext_neg=[build_role(CTImageStorage, scp_role=True)],
                     evt_handlers=[(evt.EVT_C_STORE, on_store)], tls_args=(context, "localhost"))
assert assoc.is_established, "association over TLS failed"
query = Dataset()
query.QueryRetrieveLevel = "STUDY"
query.StudyInstanceUID = study
statuses = [status.Status for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet) if status]
assoc.release()
print(json.dumps({"statuses": statuses, "received": received}))
"#;

/// DCMTK timeouts (connection, ACSE, DIMSE) so a refused peer fails fast.
const TIMEOUTS: [&str; 6] = ["-to", "10", "-ta", "10", "-td", "10"];

fn sample(name: &str) -> std::path::PathBuf {
    pydicom_data().join("test_files").join(name)
}

/// A DCMTK tool with `-aec HANEUL`, the timeouts, `args`, then the peer.
fn tool(name: &str, args: &[&str], port: u16) -> Output {
    let mut command = dcmtk(name);
    command.args(["-aec", "HANEUL"]).args(TIMEOUTS).args(args).arg("127.0.0.1").arg(port.to_string());
    run(&mut command)
}

/// The options of a DCMTK TLS client presenting `key`/`cert` and trusting `ca`.
fn tls_options<'a>(key: &'a str, cert: &'a str, ca: &'a str) -> Vec<&'a str> {
    vec!["+tls", key, cert, "+cf", ca]
}

/// The values of a DCMTK log's `(0020,000d) UI [...]` lines (Study Instance UIDs).
fn study_uids(log: &str) -> Vec<String> {
    log.lines()
        .filter(|line| line.contains("(0020,000d)"))
        .filter_map(|line| Some(line.split('[').nth(1)?.split(']').next()?.trim_end_matches(['\0', ' ']).to_string()))
        .collect()
}

/// Records of `action` in the server's audit trail, once `expected` of them
/// are there (the trail is written in batches).
fn audit_records(server: &Server, action: &str, expected: usize) -> Vec<serde_json::Value> {
    let mut records = Vec::new();
    let found = wait_until(Duration::from_secs(15), || {
        records = audit_search(&server.data_dir(), &["--action", action]);
        records.len() >= expected
    });
    assert!(found, "expected {expected} {action} records in the audit trail, found {records:#?}");
    records
}

#[test]
fn dicom_tls_serves_dcmtk_clients_with_certificates_and_refuses_the_rest() {
    let pki = Pki::new();
    let tls_port = free_port();
    let ca = pki.file("ca.pem");
    let tls_config =
        format!("listen = \"127.0.0.1:{tls_port}\"\nclient_auth = \"required\"\nclient_ca_file = {ca:?}\n");
    let mut server = Server::start_with(&pki.config("dicom.tls", &tls_config));
    server.wait_for_listener(tls_port);
    let (key, cert) = (pki.file("client.key"), pki.file("client.pem"));
    let tls = tls_options(&key, &cert, &ca);

    let output = tool("echoscu", &[&tls[..], &["-v", "-aet", "TLSSCU"]].concat(), tls_port);
    assert!(output.status.success(), "C-ECHO over TLS failed:\n{}\n{}", text(&output), server.log());

    let (ct, mr) = (sample("CT_small.dcm"), sample("MR_small.dcm"));
    let mut command = dcmtk("storescu");
    command.args(["-aec", "HANEUL", "-aet", "TLSSCU", "-v", "-R"]).args(TIMEOUTS).args(&tls);
    command.arg("127.0.0.1").arg(tls_port.to_string()).arg(&ct).arg(&mr);
    let output = run(&mut command);
    let log = text(&output);
    assert!(output.status.success(), "storescu over TLS failed:\n{log}");
    assert_eq!(log.matches("Received Store Response (Success)").count(), 2, "{log}");

    // findscu over TLS finds both studies; so does a plain findscu on the
    // plain port: one archive behind both listeners.
    let keys = ["-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID"];
    for (port, options) in [(tls_port, &tls[..]), (server.dicom_port, &[][..])] {
        let output = tool("findscu", &[options, &["-v", "-aet", "TLSSCU"], &keys[..]].concat(), port);
        let log = text(&output);
        assert!(output.status.success() && log.contains("Received Final Find Response (Success)"), "{log}");
        let mut found = study_uids(&log);
        found.sort();
        assert_eq!(found, [CT_SMALL_STUDY, MR_SMALL_STUDY], "C-FIND on port {port}:\n{log}");
    }

    // C-GET over TLS with pynetdicom: the stored bytes come back on the
    // encrypted association, byte for byte.
    let output = Command::new(python())
        .args(["-c", PYNETDICOM_TLS_GET, &tls_port.to_string(), &ca, &cert, &key, CT_SMALL_STUDY])
        .arg(server.data_dir().join("blobs"))
        .output()
        .expect("running python");
    let result = parse_peer_output("C-GET over TLS", &output);
    assert_eq!(result["statuses"].as_array().and_then(|s| s.last()), Some(&serde_json::json!(0)), "{result}");
    assert_eq!(result["received"], serde_json::json!([[CT_SMALL_INSTANCE, true]]), "{result}");

    // The audit trail names the client certificate of the stores over TLS.
    let stores = audit_records(&server, "store", 2);
    for record in &stores {
        assert_eq!(record["actor"], "TLSSCU", "{record}");
        assert_eq!(record["outcome"], "success", "{record}");
        assert_eq!(record["detail"]["tls_subject"], format!("CN={TEST_CLIENT_CN}"), "{record}");
    }
    let queries = audit_records(&server, "query", 2);
    assert_eq!(queries.iter().filter(|record| record["detail"].get("tls_subject").is_some()).count(), 1);

    // No certificate (anonymous TLS), or one from another CA: no handshake.
    let output = tool("echoscu", &["+tla", "+cf", &ca, "-v"], tls_port);
    assert!(!output.status.success(), "a client without a certificate got in:\n{}", text(&output));
    assert!(!text(&output).contains("Association Accepted"), "{}", text(&output));
    let stranger = Pki::new();
    let (other_key, other_cert) = (stranger.file("client.key"), stranger.file("client.pem"));
    let output = tool("echoscu", &[&tls_options(&other_key, &other_cert, &ca)[..], &["-v"]].concat(), tls_port);
    assert!(!output.status.success(), "a client of another CA got in:\n{}", text(&output));

    // Plain DICOM on the TLS port fails cleanly; the server goes on serving both.
    let output = tool("echoscu", &["-v"], tls_port);
    assert!(!output.status.success(), "plain DICOM was answered on the TLS port:\n{}", text(&output));
    assert!(!text(&output).contains("Association Accepted"), "{}", text(&output));
    let logged = wait_until(Duration::from_secs(10), || server.log().contains("DICOM TLS handshake failed"));
    assert!(logged, "failed handshakes are not logged:\n{}", server.log());
    let output = tool("echoscu", &tls, tls_port);
    assert!(output.status.success(), "C-ECHO over TLS after failed handshakes:\n{}", text(&output));
    let output = tool("echoscu", &[], server.dicom_port);
    assert!(output.status.success(), "plain C-ECHO on the plain port:\n{}", text(&output));
    assert!(!server.log().contains("panicked"), "{}", server.log());
    server.stop();
}

#[test]
fn known_ae_roles_decide_what_each_peer_may_do() {
    let known = |title: &str, role: &str| {
        format!("[[known_ae]]\ntitle = \"{title}\"\nhost = \"127.0.0.1\"\nport = 104\nrole = \"{role}\"\n")
    };
    let server = Server::start_with_dicom(
        "allow_any_loopback = false",
        &[known("MODALITY", "technologist"), known("VIEWER", "clinician"), known("RESEARCH", "researcher")].concat(),
    );
    let port = server.dicom_port;
    let (ct, mr) = (sample("CT_small.dcm"), sample("MR_small.dcm"));
    let store = |calling_ae: &str, file: &Path| {
        let mut command = dcmtk("storescu");
        command.args(["-aec", "HANEUL", "-d", "-R", "-aet", calling_ae]).args(TIMEOUTS);
        let output = run(command.arg("127.0.0.1").arg(port.to_string()).arg(file));
        let status = dimse_statuses(&text(&output)).first().copied();
        (output, status)
    };

    let (output, status) = store("MODALITY", &ct);
    assert!(output.status.success(), "the technologist's store failed:\n{}", text(&output));
    assert_eq!(status, Some(0x0000));

    // A clinician may not store: 0124 "refused: not authorized".
    let (output, status) = store("VIEWER", &mr);
    assert_eq!(status, Some(0x0124), "{}", text(&output));

    // ... but may query, and finds what the technologist stored, not what it was refused.
    let find = |calling_ae: &str| {
        let keys = ["-d", "-S", "-aet", calling_ae, "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID"];
        text(&tool("findscu", &keys, port))
    };
    let log = find("VIEWER");
    assert_eq!(dimse_statuses(&log).last(), Some(&0x0000), "{log}");
    assert_eq!(study_uids(&log), [CT_SMALL_STUDY], "{log}");
    // A researcher may not even query.
    let log = find("RESEARCH");
    assert_eq!(dimse_statuses(&log).last(), Some(&0x0124), "{log}");
    assert!(study_uids(&log).is_empty(), "{log}");

    // C-ECHO needs no permission; an unknown title is not let in at all.
    assert!(tool("echoscu", &["-aet", "RESEARCH"], port).status.success(), "C-ECHO needs no permission");
    let output = tool("echoscu", &["-v", "-aet", "STRANGER"], port);
    assert!(!output.status.success(), "an unknown AE associated with allow_any_loopback = false");
    assert!(text(&output).contains("Calling AE Title Not Recognized"), "{}", text(&output));

    // Both refusals are in the audit trail as permission-denied, with who asked.
    let denied = audit_records(&server, "permission-denied", 2);
    let mut seen: Vec<(String, String)> = denied
        .iter()
        .map(|record| {
            assert_eq!(record["outcome"], "failure", "{record}");
            assert_eq!(record["source"], "127.0.0.1", "{record}");
            (
                record["actor"].as_str().unwrap_or_default().into(),
                record["detail"]["service"].as_str().unwrap_or_default().into(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(seen, [("RESEARCH".to_string(), "C-FIND".to_string()), ("VIEWER".into(), "C-STORE".into())]);
    let refused_store = denied.iter().find(|record| record["actor"] == "VIEWER").expect("VIEWER's record");
    assert_eq!(refused_store["detail"]["sop_instance_uid"], MR_SMALL_INSTANCE);
    assert_eq!(refused_store["detail"]["role"], "clinician");
    let stored = audit_records(&server, "store", 1);
    assert_eq!(stored.len(), 1, "only the technologist's store happened: {stored:#?}");
    assert_eq!(stored[0]["detail"]["sop_instance_uid"], CT_SMALL_INSTANCE);
}

#[test]
fn associations_per_calling_ae_are_limited() {
    let server = Server::start_with_dicom("max_associations_per_ae = 2", "");
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let connect = |calling_ae: &str| {
        let params = haneul_dimse::RequestParams {
            calling_ae: calling_ae.into(),
            called_ae: "HANEUL".into(),
            max_pdu_length: 65_536,
            timeout: Duration::from_secs(10),
            tls: None,
        };
        let verification = [haneul_dimse::ProposedContext::new("1.2.840.10008.1.1", &["1.2.840.10008.1.2"])];
        runtime.block_on(haneul_dimse::Client::connect(&server.address(), &params, &verification))
    };
    // Two associations held open by HOLDER ...
    let first = connect("HOLDER").expect("first HOLDER association");
    let second = connect("HOLDER").expect("second HOLDER association");
    // ... so a third is rejected, transiently, as a local limit.
    let output = tool("echoscu", &["-v", "-aet", "HOLDER"], server.dicom_port);
    let log = text(&output);
    assert!(!output.status.success() && log.contains("Association Rejected"), "{log}");
    assert!(log.contains("Rejected Transient") && log.contains("Local Limit Exceeded"), "{log}");
    // Other calling AEs are not held back by HOLDER.
    let output = tool("echoscu", &["-aet", "OTHER"], server.dicom_port);
    assert!(output.status.success(), "another AE was refused:\n{}", text(&output));

    // Releasing one gives its place back once the server has closed it.
    runtime.block_on(first.release()).expect("release");
    let freed = wait_until(Duration::from_secs(10), || {
        tool("echoscu", &["-aet", "HOLDER"], server.dicom_port).status.success()
    });
    assert!(freed, "HOLDER stayed refused after releasing an association:\n{}", server.log());
    runtime.block_on(second.release()).expect("release");
    assert!(server.log().contains("max_associations_per_ae"), "the refusal names the limit:\n{}", server.log());
}

/// `haneul serve` with the given `[dicom]` lines and HTTP off; returns the
/// child once it listens on `port`, or its output if it exited first.
fn serve(dir: &Path, dicom: &str) -> Result<std::process::Child, Output> {
    let config = dir.join("haneul.toml");
    let text = format!(
        "[storage]\ndata_dir = {:?}\n\n[dicom]\n{dicom}\n\n[http]\nlisten = \"\"\n",
        dir.join("data").display().to_string()
    );
    std::fs::write(&config, text).expect("writing config");
    let log_path = dir.join("server.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = Command::new(haneul_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("starting haneul serve");
    let exited = wait_until(Duration::from_secs(60), || {
        !matches!(child.try_wait(), Ok(None))
            || std::fs::read_to_string(&log_path).unwrap_or_default().contains("DICOM listening")
    });
    assert!(
        exited,
        "haneul serve neither started nor stopped:\n{}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    match child.try_wait() {
        Ok(Some(status)) => {
            Err(Output { status, stdout: Vec::new(), stderr: std::fs::read(&log_path).unwrap_or_default() })
        }
        _ => Ok(child),
    }
}

#[test]
fn plain_dicom_leaves_loopback_only_with_insecure() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let port = free_port();
    let output = serve(dir.path(), &format!("listen = \"0.0.0.0:{port}\"")).expect_err("must refuse to start");
    let said = text(&output);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("dicom.insecure") && said.contains(&format!("0.0.0.0:{port}")), "{said}");

    let mut child = serve(dir.path(), &format!("listen = \"0.0.0.0:{port}\"\ninsecure = true"))
        .unwrap_or_else(|output| panic!("insecure = true must start: {}", text(&output)));
    wait_for_port(port, &mut child, &dir.path().join("server.log"));
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
    assert!(log.contains("not encrypted"), "no warning at start:\n{log}");
    assert!(tool("echoscu", &[], port).status.success(), "C-ECHO on the insecure listener");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn serve_without_a_configuration_file_listens_on_loopback() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let port = free_port();
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = Command::new(haneul_bin())
        .args(["serve", "--http", "", "--dicom-port", &port.to_string(), "--data"])
        .arg(dir.path().join("data"))
        .current_dir(dir.path())
        .env("HANEUL_ADMIN_PASSWORD", "not-used-by-this-test")
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("starting haneul serve");
    wait_for_port(port, &mut child, &log_path);
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(log.contains(&format!("127.0.0.1:{port}")), "the default DICOM address is not loopback:\n{log}");
    assert!(!log.contains("not encrypted"), "{log}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn optional_client_certificates_let_anonymous_tls_clients_in() {
    let pki = Pki::new();
    let tls_port = free_port();
    let ca = pki.file("ca.pem");
    let tls_config =
        format!("listen = \"127.0.0.1:{tls_port}\"\nclient_auth = \"optional\"\nclient_ca_file = {ca:?}\n");
    let mut server = Server::start_with(&pki.config("dicom.tls", &tls_config));
    server.wait_for_listener(tls_port);

    // Without a certificate: in (the same client is refused where one is required).
    let output = tool("echoscu", &["+tla", "+cf", &ca, "-v"], tls_port);
    assert!(output.status.success(), "anonymous TLS was refused:\n{}\n{}", text(&output), server.log());
    // A certificate that is sent must still verify.
    let stranger = Pki::new();
    let (key, cert) = (stranger.file("client.key"), stranger.file("client.pem"));
    let output = tool("echoscu", &[&tls_options(&key, &cert, &ca)[..], &["-v"]].concat(), tls_port);
    assert!(!output.status.success(), "a client of another CA got in:\n{}", text(&output));
    // The client must trust the server's CA too: one that does not refuses it.
    let output = tool("echoscu", &["+tla", "+cf", &stranger.file("ca.pem"), "-v"], tls_port);
    assert!(!output.status.success(), "the client accepted a server its CA did not sign:\n{}", text(&output));
    server.stop();
}
