//! `haneul diff A B`: compare two DICOM nodes study by study over C-FIND
//! (e.g. a legacy PACS and Haneul after a migration).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::Args;
use haneul_migrate::diff::{self, DiffOptions, DiffProgress, DiffReport};
use haneul_migrate::walk::{DateRange, DicomNode, StudySummary, LAST_DAY, OPEN_FROM};
use indicatif::{ProgressBar, ProgressStyle};

/// How many entries of each list the human summary prints.
const SHOWN: usize = 50;

#[derive(Args)]
pub struct DiffArgs {
    /// The first node, AE@host:port.
    a: String,
    /// The second node, AE@host:port.
    b: String,
    /// Our AE title, as both nodes know us.
    #[arg(long, default_value = "HANEUL")]
    calling_ae: String,
    /// First study date (YYYYMMDD); without it, every date and studies without one.
    #[arg(long)]
    from: Option<String>,
    /// Last study date (YYYYMMDD); default: no end.
    #[arg(long)]
    to: Option<String>,
    /// Most C-FIND answers either node gives to one query (e.g. Orthanc's
    /// LimitFindResults); a query reaching it is split into smaller date and time ranges.
    #[arg(long)]
    cap: Option<usize>,
    /// The cap of A only (overrides --cap).
    #[arg(long)]
    cap_a: Option<usize>,
    /// The cap of B only (overrides --cap).
    #[arg(long)]
    cap_b: Option<usize>,
    /// Compare the SOP Instance UIDs of every study both hold, not only of
    /// those whose instance counts differ or are unknown.
    #[arg(long)]
    deep: bool,
    /// Seconds to wait for each answer of a node.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Also write every difference to this CSV file.
    #[arg(long)]
    csv: Option<PathBuf>,
}

/// Exit 0: equal; 1: differences; 2: error, or a listing that stayed
/// truncated (a node capped its answers where no smaller query was possible).
pub fn run(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let node = |spec: &str| -> anyhow::Result<DicomNode> {
        let mut node = DicomNode::parse(spec, &args.calling_ae).map_err(|error| anyhow!(error))?;
        node.timeout = Duration::from_secs(args.timeout.max(1));
        Ok(node)
    };
    let (a, b) = (node(&args.a)?, node(&args.b)?);
    let range = DateRange::new(args.from.as_deref().unwrap_or(OPEN_FROM), args.to.as_deref().unwrap_or(LAST_DAY))
        .map_err(|error| anyhow!(error))?;
    let options =
        DiffOptions { range, cap_a: args.cap_a.or(args.cap), cap_b: args.cap_b.or(args.cap), deep: args.deep };

    let progress = ProgressBar::new_spinner();
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    progress.enable_steady_tick(Duration::from_millis(200));
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    let mut on_progress = |event: DiffProgress| match event {
        DiffProgress::Listing { queries, studies_a, studies_b } => progress.set_message(format!(
            "listing studies: {studies_a} on {}, {studies_b} on {} ({queries} queries)",
            args.a, args.b
        )),
        DiffProgress::Comparing { done, total } => {
            progress.set_message(format!("comparing instances: {done}/{total} studies"))
        }
    };
    let result = runtime.block_on(diff::diff(&a, &b, &options, &mut on_progress));
    progress.finish_and_clear();
    let report = result?;

    if let Some(path) = &args.csv {
        std::fs::write(path, report.to_csv()).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&report, args.from.is_none());
    }
    Ok(if !report.is_complete() {
        ExitCode::from(2)
    } else if report.is_equal() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_summary(report: &DiffReport, open: bool) {
    let both = report.studies_a - report.only_in_a.len();
    println!("A: {} ({} studies)", report.a, report.studies_a);
    println!("B: {} ({} studies)", report.b, report.studies_b);
    println!("study dates {}-{}{}", report.from, report.to, if open { ", and studies without a date" } else { "" });
    println!(
        "{both} studies on both, {} with instances compared, {} with different instances",
        report.instance_comparisons,
        report.different.len()
    );
    for (side, studies) in [("A", &report.only_in_a), ("B", &report.only_in_b)] {
        println!("{} studies only on {side}", studies.len());
        for study in studies.iter().take(SHOWN) {
            println!("  {}", describe(study));
        }
        more(studies.len());
    }
    for study in report.different.iter().take(SHOWN) {
        let count = |n: Option<u32>| n.map(|n| n.to_string()).unwrap_or_else(|| "?".into());
        println!(
            "different instances: {} {} {} (A: {}, B: {} instances)",
            if study.study_date.is_empty() { "--------" } else { &study.study_date },
            study.study_uid,
            study.patient_id,
            count(study.instances_a),
            count(study.instances_b)
        );
        for (side, uids) in [("A", &study.only_in_a), ("B", &study.only_in_b)] {
            for uid in uids.iter().take(SHOWN) {
                println!("  only on {side}: {uid}");
            }
            more(uids.len());
        }
    }
    more(report.different.len());
    for (side, truncated) in [("A", &report.truncated_a), ("B", &report.truncated_b)] {
        for slice in truncated {
            println!(
                "incomplete: {side} capped its {} answers for {}; studies of it may be missing",
                slice.answers, slice.slice
            );
        }
    }
    println!(
        "{}",
        if !report.is_complete() {
            "result: incomplete"
        } else if report.is_equal() {
            "result: equal"
        } else {
            "result: different"
        }
    );
}

fn describe(study: &StudySummary) -> String {
    let instances = study.instances.map(|n| format!(", {n} instances")).unwrap_or_default();
    let date = if study.study_date.is_empty() { "--------" } else { &study.study_date };
    format!("{date} {} {} {}{instances}", study.study_uid, study.patient_id, study.patient_name)
}

fn more(count: usize) {
    if count > SHOWN {
        println!("  … and {} more (see --json or --csv)", count - SHOWN);
    }
}
