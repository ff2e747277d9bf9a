//! HTTPS on the HTTP edge (`[http.tls]`): a test CA, server and client
//! certificates made with the `openssl` CLI; curl and dicomweb-client
//! (Python `requests`) as the clients, against a real `haneul serve`.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{audit_search, pydicom_data, python, require, text, Pki, Server};

fn https_url(server: &Server, path: &str) -> String {
    format!("https://127.0.0.1:{}{path}", server.http_port)
}

fn curl(args: &[&str]) -> Output {
    Command::new(require("curl")).args(["-sS", "--max-time", "20"]).args(args).output().expect("running curl")
}

/// The status line and headers curl printed with `-i`, lower-cased.
fn head(output: &Output) -> String {
    let all = String::from_utf8_lossy(&output.stdout).to_lowercase();
    all.split("\r\n\r\n").next().unwrap_or_default().to_string()
}

fn ca(pki: &Pki) -> String {
    pki.file("ca.pem")
}

#[test]
fn https_serves_http2_and_http1_with_hsts_and_refuses_plain_http() {
    let pki = Pki::new();
    let mut server = Server::start_with_http("", &pki.config("http.tls", ""));
    let url = https_url(&server, "/api/status");
    let ca = ca(&pki);
    let auth = format!("Authorization: {}", server.authorization());

    let output = curl(&["-i", "--http2", "--cacert", &ca, "-H", &auth, &url]);
    assert!(output.status.success(), "HTTPS over HTTP/2 failed: {}\n{}", text(&output), server.log());
    let head = head(&output);
    assert!(head.starts_with("http/2 200"), "ALPN must give HTTP/2: {head}");
    assert!(head.contains("strict-transport-security: max-age=31536000"), "no HSTS: {head}");

    let output = curl(&["-i", "--http1.1", "--cacert", &ca, "-H", &auth, &url]);
    assert!(output.status.success(), "HTTPS over HTTP/1.1 failed: {}", text(&output));
    let head = self::head(&output);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("strict-transport-security: max-age=31536000"), "no HSTS: {head}");

    // An untrusted server certificate is refused by the client.
    let output = curl(&["-i", &url]);
    assert!(!output.status.success(), "curl trusted the test CA without --cacert: {}", text(&output));

    // Plain HTTP to the TLS port gets no HTTP answer; the server goes on.
    let output = curl(&["-i", &format!("http://127.0.0.1:{}/api/status", server.http_port)]);
    assert!(!output.status.success() && !text(&output).contains("200 OK"), "plain HTTP answered: {}", text(&output));
    let output = curl(&["-i", "--cacert", &ca, "-H", &auth, &url]);
    assert!(output.status.success(), "HTTPS after a failed handshake: {}", text(&output));

    // A sign-in over TLS gets a Secure session cookie.
    let user = server.add_user("dr.tls", "clinician");
    let login = format!("{{\"user\": \"{user}\", \"password\": \"{}\"}}", common::USER_PASSWORD);
    let login_url = https_url(&server, "/api/login");
    let output = curl(&["-i", "--cacert", &ca, "-H", "Content-Type: application/json", "-d", &login, &login_url]);
    let head = self::head(&output);
    assert!(head.contains(" 200") && head.contains("set-cookie: haneul_session="), "{}", text(&output));
    assert!(head.contains("; secure"), "the cookie must be Secure under TLS: {head}");

    // dicomweb-client (requests) stores and searches over HTTPS, trusting the CA.
    let script = r#"
import sys, pydicom, requests
from dicomweb_client.api import DICOMwebClient
url, ca, path, token = sys.argv[1:5]
session = requests.Session()
session.verify = ca
client = DICOMwebClient(url=url, session=session, headers={"Authorization": "Bearer " + token})
dataset = pydicom.dcmread(path)
client.store_instances(datasets=[dataset])
studies = client.search_for_studies(search_filters={"StudyInstanceUID": dataset.StudyInstanceUID})
assert len(studies) == 1, studies
found = studies[0]["0020000D"]["Value"][0]
assert found == dataset.StudyInstanceUID, found
retrieve = studies[0].get("00081190", {}).get("Value", [""])[0]
assert retrieve.startswith("https://"), retrieve
print("ok", found, retrieve)
"#;
    let dicomweb = format!("https://127.0.0.1:{}/dicom-web", server.http_port);
    let ct = pydicom_data().join("test_files/CT_small.dcm");
    let output = Command::new(python())
        .args(["-c", script, &dicomweb, &ca])
        .arg(&ct)
        .arg(&server.token)
        // requests prefers these to the session's CA file.
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .output()
        .expect("running python");
    assert!(output.status.success(), "dicomweb-client over HTTPS: {}\n{}", text(&output), server.log());
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("ok "), "{}", text(&output));

    // The client address still reaches the request context: the audit
    // record of the query names it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let records = audit_search(&server.data_dir(), &["--action", "query"]);
        if let Some(query) = records.first() {
            assert_eq!(query["source"], "127.0.0.1", "{query}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no audit record of the query");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    server.stop();
}

#[test]
fn required_client_certificates_are_checked() {
    let pki = Pki::new();
    let client_ca = format!("client_auth = \"required\"\nclient_ca_file = {:?}\n", ca(&pki));
    let mut server = Server::start_with_http("", &pki.config("http.tls", &client_ca));
    let url = https_url(&server, "/api/status");
    let ca = ca(&pki);
    let auth = format!("Authorization: {}", server.authorization());

    let output = curl(&["-i", "--cacert", &ca, &url]);
    assert!(!output.status.success(), "a client without a certificate got in: {}", text(&output));

    // A certificate from another CA is refused too.
    let stranger = Pki::new();
    let (cert, key) = (stranger.path("client.pem"), stranger.path("client.key"));
    let output = curl(&["-i", "--cacert", &ca, "--cert", &display(&cert), "--key", &display(&key), &url]);
    assert!(!output.status.success(), "a client of another CA got in: {}", text(&output));

    let (cert, key) = (pki.path("client.pem"), pki.path("client.key"));
    let output = curl(&["-i", "--cacert", &ca, "--cert", &display(&cert), "--key", &display(&key), "-H", &auth, &url]);
    assert!(output.status.success(), "the client certificate was refused: {}\n{}", text(&output), server.log());
    assert!(head(&output).contains(" 200"), "{}", head(&output));
    server.stop();
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

#[test]
fn missing_or_wrong_certificate_files_stop_the_start_naming_key_and_file() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("temporary directory");
    let missing = dir.path().join("nowhere.pem");
    for (tls, key, file) in [
        (
            format!("cert_file = {:?}\nkey_file = {:?}\n", display(&missing), display(&pki.path("server.key"))),
            "http.tls.cert_file",
            display(&missing),
        ),
        (
            // The client's key does not go with the server's certificate.
            format!(
                "cert_file = {:?}\nkey_file = {:?}\n",
                display(&pki.path("server.pem")),
                display(&pki.path("client.key"))
            ),
            "http.tls.key_file",
            display(&pki.path("client.key")),
        ),
        (
            format!(
                "cert_file = {:?}\nkey_file = {:?}\nclient_auth = \"optional\"\nclient_ca_file = {:?}\n",
                display(&pki.path("server.pem")),
                display(&pki.path("server.key")),
                display(&pki.path("server.key"))
            ),
            "http.tls.client_ca_file",
            display(&pki.path("server.key")),
        ),
    ] {
        let config = dir.path().join("haneul.toml");
        let text = format!(
            "[storage]\ndata_dir = {:?}\n\n[dicom]\nlisten = \"127.0.0.1:{}\"\n\n[http]\nlisten = \"127.0.0.1:{}\"\n\n[http.tls]\n{tls}",
            display(&dir.path().join("data")),
            common::free_port(),
            common::free_port()
        );
        std::fs::write(&config, text).expect("writing config");
        let output = Command::new(common::haneul_bin())
            .args(["serve", "--config"])
            .arg(&config)
            .env("HANEUL_ADMIN_PASSWORD", "not-used-by-this-test")
            .output()
            .expect("running haneul serve");
        let said = self::text(&output);
        assert!(!output.status.success(), "haneul started with bad [http.tls]: {said}");
        assert!(said.contains(key) && said.contains(&file), "{key} and {file} not named in: {said}");
    }
}
