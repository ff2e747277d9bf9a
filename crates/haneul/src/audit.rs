//! `haneul audit verify | search`: check the hash chain of the audit trail
//! and search it. Both only read the trail; they work while the server runs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use haneul_core::audit::{self, Action, Filter};

use crate::ArchiveOptions;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Recompute every record's hash and the chain; exit 1 at the first broken record.
    Verify(VerifyArgs),
    /// Show records by patient, study, actor, action and time (newest first).
    Search(SearchArgs),
}

#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    archive: ArchiveOptions,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct SearchArgs {
    #[command(flatten)]
    archive: ArchiveOptions,
    /// Records naming this Patient ID.
    #[arg(long)]
    patient: Option<String>,
    /// Records naming this Study Instance UID.
    #[arg(long)]
    study: Option<String>,
    /// Records of this actor (user or calling AE title) or source address.
    #[arg(long)]
    actor: Option<String>,
    /// Records of this action (query, retrieve, view, store, delete, ...).
    #[arg(long)]
    action: Option<String>,
    /// From this time: RFC 3339, or YYYY-MM-DD (UTC).
    #[arg(long)]
    from: Option<String>,
    /// Up to this time (exclusive); a YYYY-MM-DD includes that day.
    #[arg(long)]
    to: Option<String>,
    /// Most records shown.
    #[arg(long, default_value_t = 1000)]
    limit: usize,
    /// Print the records as a JSON array.
    #[arg(long)]
    json: bool,
}

pub fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify(args) => verify(args),
        AuditCommand::Search(args) => search(args),
    }
}

fn trail_dir(options: &ArchiveOptions) -> anyhow::Result<PathBuf> {
    Ok(options.load()?.storage.data_dir.join(audit::AUDIT_DIR))
}

fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let dir = trail_dir(&args.archive)?;
    let report = audit::verify(&dir).with_context(|| format!("reading the audit trail in {}", dir.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        if let Some(at) = &report.partial_tail {
            println!(
                "warning: {} line {} is a partial record (a crash, or a write in progress)",
                at.file.display(),
                at.line
            );
        }
        match &report.first_break {
            None => println!(
                "audit trail intact: {} records in {} files (last sequence number {})",
                report.records, report.files, report.last_seq
            ),
            Some(broken) => println!(
                "AUDIT TRAIL BROKEN at {} line {}: {}\n{} records before it are intact (last sequence number {})",
                broken.at.file.display(),
                broken.at.line,
                broken.reason,
                report.records,
                report.last_seq
            ),
        }
    }
    Ok(if report.intact() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn search(args: SearchArgs) -> anyhow::Result<ExitCode> {
    let dir = trail_dir(&args.archive)?;
    let bound = |text: &Option<String>, end| text.as_deref().map(|t| audit::parse_bound(t, end)).transpose();
    let action = match &args.action {
        Some(name) => Some(
            serde_json::from_value::<Action>(serde_json::Value::String(name.clone()))
                .map_err(|_| anyhow::anyhow!("{name:?} is not an audit action"))?,
        ),
        None => None,
    };
    let filter = Filter {
        patient: args.patient,
        study: args.study,
        actor: args.actor,
        action,
        from: bound(&args.from, false).map_err(anyhow::Error::msg)?,
        to: bound(&args.to, true).map_err(anyhow::Error::msg)?,
    };
    let records = audit::search(&dir, &filter, args.limit)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(ExitCode::SUCCESS);
    }
    for record in &records {
        let outcome = match record.outcome {
            audit::Outcome::Success => "ok",
            audit::Outcome::Failure => "FAILED",
        };
        println!(
            "{:>6} {} {:<9} {:<6} {} from {}  patients [{}]  studies [{}]  {}",
            record.seq,
            record.time,
            record.action.as_str(),
            outcome,
            record.actor,
            record.source,
            record.patients.join(", "),
            record.studies.join(", "),
            serde_json::Value::Object(record.detail.clone())
        );
    }
    eprintln!("{} records", records.len());
    Ok(ExitCode::SUCCESS)
}
