//! A migration's final report as CSV (one row per study, then one per
//! discrepancy) and as a summary a person reads.

use std::fmt::Write;

use haneul_core::migration::MigrationReport;
use haneul_core::MigrationState;

const CSV_HEADER: &str =
    "study_uid,patient_id,patient_name,study_date,state,attempts,expected_instances,migrated_instances,sop_uid,problem,detail";

/// Quote a CSV field when it needs it (RFC 4180).
fn field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

pub fn to_csv(report: &MigrationReport) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    for study in &report.studies {
        let expected = study.expected_instances.map(|count| count.to_string()).unwrap_or_default();
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},,,{}",
            field(&study.study_uid),
            field(&study.patient_id),
            field(&study.patient_name),
            field(&study.study_date),
            study.state.as_str(),
            study.attempts,
            expected,
            study.migrated_instances,
            field(&study.detail),
        );
    }
    for discrepancy in &report.discrepancies {
        let study = report.studies.iter().find(|study| study.study_uid == discrepancy.study_uid);
        let _ = writeln!(
            out,
            "{},{},{},{},{},,,,{},{},{}",
            field(&discrepancy.study_uid),
            field(study.map_or("", |study| &study.patient_id)),
            field(study.map_or("", |study| &study.patient_name)),
            field(study.map_or("", |study| &study.study_date)),
            study.map_or("", |study| study.state.as_str()),
            field(&discrepancy.sop_uid),
            field(&discrepancy.kind),
            field(&discrepancy.detail),
        );
    }
    out
}

/// Whether everything listed at the source is here and verified.
pub fn is_complete(report: &MigrationReport) -> bool {
    report.discrepancies.is_empty() && report.studies.iter().all(|study| study.state == MigrationState::Verified)
}

pub fn summary(report: &MigrationReport) -> String {
    let counts = &report.status.counts;
    let mut out = String::new();
    let verdict = if is_complete(report) { "complete" } else { "NOT complete" };
    let _ = writeln!(
        out,
        "migration from {}: {verdict}: {} of {} studies verified, {} instances migrated ({} expected)",
        report.status.source, counts.verified, counts.total, counts.migrated_instances, counts.expected_instances
    );
    if counts.pending + counts.running + counts.done > 0 {
        let _ = writeln!(
            out,
            "  still to do: {} pending, {} running, {} fetched but not verified",
            counts.pending, counts.running, counts.done
        );
    }
    for study in report.studies.iter().filter(|study| study.state == MigrationState::Failed) {
        let _ = writeln!(out, "  failed: study {} ({} tries): {}", study.study_uid, study.attempts, study.detail);
    }
    if !report.discrepancies.is_empty() {
        let _ = writeln!(
            out,
            "  {} discrepancies in {} studies:",
            report.discrepancies.len(),
            counts.discrepant + counts.failed
        );
        for discrepancy in report.discrepancies.iter().take(20) {
            let _ = writeln!(
                out,
                "    {} study {} instance {}: {}",
                discrepancy.kind, discrepancy.study_uid, discrepancy.sop_uid, discrepancy.detail
            );
        }
        if report.discrepancies.len() > 20 {
            let _ = writeln!(out, "    … and {} more (see the CSV or JSON report)", report.discrepancies.len() - 20);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use haneul_core::migration::{MigrationPhase, MigrationStatus};
    use haneul_core::{Discrepancy, MigrationCounts, MigrationStudy};

    fn study(uid: &str, state: MigrationState) -> MigrationStudy {
        MigrationStudy {
            source: "legacy".into(),
            study_uid: uid.into(),
            patient_id: "P1".into(),
            patient_name: "Hong^Gildong=洪^吉洞".into(),
            study_date: "20240102".into(),
            expected_instances: Some(2),
            state,
            attempts: 1,
            migrated_instances: 2,
            detail: "said \"ok\", twice".into(),
            updated_ms: 0,
            next_attempt_ms: 0,
        }
    }

    fn report(studies: Vec<MigrationStudy>, discrepancies: Vec<Discrepancy>) -> MigrationReport {
        MigrationReport {
            status: MigrationStatus {
                source: "legacy".into(),
                method: "c-move".into(),
                phase: MigrationPhase::Finished,
                counts: MigrationCounts::default(),
                parallel_now: 0,
                instances_per_second: 0.0,
                eta_seconds: None,
                started_ms: None,
                finished_ms: None,
                last_error: None,
            },
            studies,
            discrepancies,
        }
    }

    #[test]
    fn csv_quotes_what_needs_quoting_and_lists_discrepancies_after_studies() {
        let gone = Discrepancy {
            study_uid: "1.2.3".into(),
            sop_uid: "1.2.3.4".into(),
            kind: "missing-at-source".into(),
            detail: "stored here, no longer held by the source".into(),
        };
        let csv = to_csv(&report(vec![study("1.2.3", MigrationState::Discrepant)], vec![gone]));
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], CSV_HEADER);
        assert!(lines[1].ends_with(",,,\"said \"\"ok\"\", twice\""), "{}", lines[1]);
        assert!(lines[2].contains(",1.2.3.4,missing-at-source,"), "{}", lines[2]);
        assert_eq!(lines[1].split(',').nth(4), Some("discrepant"));
    }

    #[test]
    fn complete_only_when_every_study_is_verified_without_discrepancies() {
        assert!(is_complete(&report(vec![study("1", MigrationState::Verified)], Vec::new())));
        assert!(!is_complete(&report(vec![study("1", MigrationState::Failed)], Vec::new())));
        assert!(summary(&report(vec![study("1", MigrationState::Failed)], Vec::new())).contains("failed: study 1"));
    }
}
