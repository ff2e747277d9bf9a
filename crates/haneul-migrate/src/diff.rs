//! `haneul diff A B`: two archives compared study by study.
//!
//! Both nodes are listed with [`walk`](crate::walk) (concurrently); studies
//! held by one only are reported as such; for studies held by both whose
//! instance counts differ or are unknown (or every one, `deep`), the SOP
//! Instance UIDs of each side are listed and compared.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::walk::{self, DateRange, DicomNode, StudyListing, StudySummary, Truncated, WalkError};

/// What to compare.
#[derive(Debug, Clone)]
pub struct DiffOptions {
    pub range: DateRange,
    /// The cap on C-FIND answers of A and of B (see [`walk::list_studies`]).
    pub cap_a: Option<usize>,
    pub cap_b: Option<usize>,
    /// Compare the instances of every study held by both, not only of those
    /// whose counts differ or are unknown.
    pub deep: bool,
}

/// The outcome of a comparison.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffReport {
    /// `AE@host:port` of each side.
    pub a: String,
    pub b: String,
    pub from: String,
    pub to: String,
    pub studies_a: usize,
    pub studies_b: usize,
    /// Studies held by both whose instances were compared (SOP Instance UIDs).
    pub instance_comparisons: usize,
    pub only_in_a: Vec<StudySummary>,
    pub only_in_b: Vec<StudySummary>,
    /// Studies held by both with different instances.
    pub different: Vec<StudyDifference>,
    /// Slices of each listing that stayed capped: the comparison is incomplete.
    pub truncated_a: Vec<Truncated>,
    pub truncated_b: Vec<Truncated>,
}

/// A study both sides hold, with different instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StudyDifference {
    pub study_uid: String,
    pub patient_id: String,
    pub patient_name: String,
    pub study_date: String,
    /// Number of Study Related Instances as each side reported it.
    pub instances_a: Option<u32>,
    pub instances_b: Option<u32>,
    /// SOP Instance UIDs held by one side only.
    pub only_in_a: Vec<String>,
    pub only_in_b: Vec<String>,
}

impl DiffReport {
    /// No study or instance held by one side only (given complete listings).
    pub fn is_equal(&self) -> bool {
        self.only_in_a.is_empty() && self.only_in_b.is_empty() && self.different.is_empty()
    }

    /// Whether both listings were complete (nothing stayed capped).
    pub fn is_complete(&self) -> bool {
        self.truncated_a.is_empty() && self.truncated_b.is_empty()
    }

    /// Every difference as CSV, one line per study or instance held by one
    /// side only: `difference,study_uid,patient_id,patient_name,study_date,
    /// instances_a,instances_b,sop_instance_uid`.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "difference,study_uid,patient_id,patient_name,study_date,instances_a,instances_b,sop_instance_uid\n",
        );
        let count = |n: Option<u32>| n.map(|n| n.to_string()).unwrap_or_default();
        let mut line = |fields: [&str; 8]| {
            let escaped: Vec<String> = fields.iter().map(|field| csv_field(field)).collect();
            out.push_str(&escaped.join(","));
            out.push('\n');
        };
        for (kind, studies) in [("study_only_in_a", &self.only_in_a), ("study_only_in_b", &self.only_in_b)] {
            for study in studies {
                let instances = count(study.instances);
                let (a, b) =
                    if kind == "study_only_in_a" { (instances.as_str(), "") } else { ("", instances.as_str()) };
                line([kind, &study.study_uid, &study.patient_id, &study.patient_name, &study.study_date, a, b, ""]);
            }
        }
        for study in &self.different {
            let (a, b) = (count(study.instances_a), count(study.instances_b));
            for (kind, uids) in [("instance_only_in_a", &study.only_in_a), ("instance_only_in_b", &study.only_in_b)] {
                for uid in uids {
                    line([
                        kind,
                        &study.study_uid,
                        &study.patient_id,
                        &study.patient_name,
                        &study.study_date,
                        &a,
                        &b,
                        uid,
                    ]);
                }
            }
        }
        out
    }
}

/// A field quoted when it holds a separator, a quote or a line break.
fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// Where a comparison stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffProgress {
    /// Listing studies: queries sent and studies found so far on each side.
    Listing { queries: usize, studies_a: usize, studies_b: usize },
    /// Comparing the instances of studies held by both: `done` of `total`.
    Comparing { done: usize, total: usize },
}

/// Compare `a` and `b` over `options.range`.
pub async fn diff(
    a: &DicomNode,
    b: &DicomNode,
    options: &DiffOptions,
    on_progress: &mut (dyn FnMut(DiffProgress) + Send),
) -> Result<DiffReport, WalkError> {
    let (listing_a, listing_b) = list_both(a, b, options, on_progress).await?;
    let by_uid_b: BTreeMap<&str, &StudySummary> =
        listing_b.studies.iter().map(|study| (study.study_uid.as_str(), study)).collect();
    let uids_a: BTreeSet<&str> = listing_a.studies.iter().map(|study| study.study_uid.as_str()).collect();
    let only_in_a: Vec<StudySummary> =
        listing_a.studies.iter().filter(|study| !by_uid_b.contains_key(study.study_uid.as_str())).cloned().collect();
    let only_in_b: Vec<StudySummary> =
        listing_b.studies.iter().filter(|study| !uids_a.contains(study.study_uid.as_str())).cloned().collect();
    let to_compare: Vec<(&StudySummary, &StudySummary)> = listing_a
        .studies
        .iter()
        .filter_map(|study| by_uid_b.get(study.study_uid.as_str()).map(|other| (study, *other)))
        .filter(|(study_a, study_b)| options.deep || needs_instance_comparison(study_a, study_b))
        .collect();

    let mut different = Vec::new();
    if !to_compare.is_empty() {
        // One association per side for all the studies compared.
        let (client_a, client_b) = tokio::join!(walk::connect(a), walk::connect(b));
        let (mut client_a, mut client_b) = (client_a?, client_b?);
        on_progress(DiffProgress::Comparing { done: 0, total: to_compare.len() });
        for (done, (study_a, study_b)) in to_compare.iter().enumerate() {
            let (sops_a, sops_b) = tokio::join!(
                walk::instances_of(&mut client_a, a, &study_a.study_uid),
                walk::instances_of(&mut client_b, b, &study_a.study_uid)
            );
            let (sops_a, sops_b): (BTreeSet<String>, BTreeSet<String>) =
                (sops_a?.into_iter().collect(), sops_b?.into_iter().collect());
            if sops_a != sops_b {
                different.push(StudyDifference {
                    study_uid: study_a.study_uid.clone(),
                    patient_id: study_a.patient_id.clone(),
                    patient_name: study_a.patient_name.clone(),
                    study_date: study_a.study_date.clone(),
                    instances_a: study_a.instances,
                    instances_b: study_b.instances,
                    only_in_a: sops_a.difference(&sops_b).cloned().collect(),
                    only_in_b: sops_b.difference(&sops_a).cloned().collect(),
                });
            }
            on_progress(DiffProgress::Comparing { done: done + 1, total: to_compare.len() });
        }
        walk::release(client_a, a).await;
        walk::release(client_b, b).await;
    }

    Ok(DiffReport {
        a: a.to_string(),
        b: b.to_string(),
        from: options.range.from.clone(),
        to: options.range.to.clone(),
        studies_a: listing_a.studies.len(),
        studies_b: listing_b.studies.len(),
        instance_comparisons: to_compare.len(),
        only_in_a,
        only_in_b,
        different,
        truncated_a: listing_a.truncated,
        truncated_b: listing_b.truncated,
    })
}

/// Whether the counts leave the instances of a study in doubt.
pub fn needs_instance_comparison(a: &StudySummary, b: &StudySummary) -> bool {
    match (a.instances, b.instances) {
        (Some(count_a), Some(count_b)) => count_a != count_b,
        _ => true,
    }
}

async fn list_both(
    a: &DicomNode,
    b: &DicomNode,
    options: &DiffOptions,
    on_progress: &mut (dyn FnMut(DiffProgress) + Send),
) -> Result<(StudyListing, StudyListing), WalkError> {
    // Both listings report into one place; a mutex since they run side by side.
    let state = std::sync::Mutex::new((0usize, 0usize, 0usize, on_progress));
    let report = |side_a: bool, studies: usize| {
        let mut state = state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.0 += 1;
        if side_a {
            state.1 = studies;
        } else {
            state.2 = studies;
        }
        let progress = DiffProgress::Listing { queries: state.0, studies_a: state.1, studies_b: state.2 };
        (state.3)(progress);
    };
    let (mut report_a, mut report_b) =
        (|p: walk::WalkProgress| report(true, p.studies), |p: walk::WalkProgress| report(false, p.studies));
    let (listing_a, listing_b) = tokio::join!(
        walk::list_studies_with(a, &options.range, options.cap_a, &mut report_a),
        walk::list_studies_with(b, &options.range, options.cap_b, &mut report_b),
    );
    Ok((listing_a?, listing_b?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn study(uid: &str, instances: Option<u32>) -> StudySummary {
        StudySummary {
            study_uid: uid.into(),
            patient_id: "P1".into(),
            patient_name: "Hong^Gildong=洪^吉洞=홍^길동".into(),
            study_date: "20080504".into(),
            instances,
        }
    }

    #[test]
    fn instances_are_compared_when_counts_differ_or_are_unknown() {
        assert!(!needs_instance_comparison(&study("1", Some(3)), &study("1", Some(3))));
        assert!(needs_instance_comparison(&study("1", Some(3)), &study("1", Some(2))));
        assert!(needs_instance_comparison(&study("1", None), &study("1", Some(2))));
    }

    #[test]
    fn a_diff_can_run_on_a_spawned_task() {
        fn send<T: Send>(_: &T) {}
        let node = DicomNode::parse("PACS@127.0.0.1:104", "HANEUL").expect("valid");
        let options = DiffOptions { range: DateRange::all(), cap_a: Some(100), cap_b: None, deep: false };
        send(&diff(&node, &node, &options, &mut |_| {}));
    }

    #[test]
    fn csv_lists_each_difference_once_with_quoting() {
        let mut report = DiffReport {
            a: "A@h:1".into(),
            b: "B@h:2".into(),
            from: "19000101".into(),
            to: "99991231".into(),
            studies_a: 2,
            studies_b: 1,
            instance_comparisons: 1,
            only_in_a: vec![study("1.1", Some(2))],
            only_in_b: vec![],
            different: vec![StudyDifference {
                study_uid: "1.2".into(),
                patient_id: "P,2".into(),
                patient_name: "Say \"Hi\"".into(),
                study_date: String::new(),
                instances_a: Some(3),
                instances_b: None,
                only_in_a: vec!["1.2.1".into()],
                only_in_b: vec!["1.2.9".into()],
            }],
            truncated_a: vec![],
            truncated_b: vec![],
        };
        let csv = report.to_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 4, "{csv}");
        assert_eq!(lines[1], "study_only_in_a,1.1,P1,Hong^Gildong=洪^吉洞=홍^길동,20080504,2,,");
        assert_eq!(lines[2], "instance_only_in_a,1.2,\"P,2\",\"Say \"\"Hi\"\"\",,3,,1.2.1");
        assert_eq!(lines[3], "instance_only_in_b,1.2,\"P,2\",\"Say \"\"Hi\"\"\",,3,,1.2.9");
        assert!(!report.is_equal());
        report.only_in_a.clear();
        report.different.clear();
        assert!(report.is_equal() && report.is_complete());
        report.truncated_b.push(Truncated { slice: "undated".into(), answers: 100 });
        assert!(!report.is_complete());
    }
}
