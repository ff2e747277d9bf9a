//! Driving `haneul migrate` against a test server.

use std::path::Path;
use std::process::{Command, Output};

use super::{haneul_bin, run, Server};

/// `haneul migrate ARGS…` against `server`, with its administrator's token.
pub fn migrate(server: &Server, args: &[&str]) -> Output {
    run(Command::new(haneul_bin())
        .arg("migrate")
        .args(args)
        .args(["--server", &server.http_url()])
        .env("HANEUL_TOKEN", &server.token))
}

/// `GET /api/migrations/{source}`.
pub fn migration_status(server: &Server, source: &str) -> serde_json::Value {
    let response = server.get(&format!("/api/migrations/{source}"), "application/json");
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

/// The JSON report `--report-dir DIR` wrote for `source`.
pub fn migration_report(dir: &Path, source: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join(format!("{source}-report.json"))).expect("the JSON report");
    serde_json::from_str(&text).expect("a JSON report")
}

/// `haneul migrate verify SOURCE` after `gone` was deleted at the source:
/// it exits 1 and reports exactly that instance, as missing at the source.
pub fn assert_verify_reports_deleted_at_source(server: &Server, source: &str, gone: &str) {
    let output = migrate(server, &["verify", source, "--json"]);
    assert_eq!(output.status.code(), Some(1), "{}", super::text(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    let discrepancies = report["discrepancies"].as_array().expect("discrepancies");
    assert_eq!(discrepancies.len(), 1, "{report:#}");
    assert_eq!(discrepancies[0]["sop_uid"], gone);
    assert_eq!(discrepancies[0]["kind"], "missing-at-source");
}
