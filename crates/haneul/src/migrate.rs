//! `haneul migrate`: start, follow, pause and report migrations from legacy
//! archives. The running server does the work (the C-MOVEs arrive at its
//! DICOM port, the study list is in its catalog): this command asks it over
//! its REST API and shows the progress.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use haneul_core::migration::{MigrationPhase, MigrationReport, MigrationStatus};
use haneul_replication::http::{HttpClient, Method};
use indicatif::{ProgressBar, ProgressStyle};

use crate::server_api::{call_json, ServerArgs};

const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// How often a followed migration's status is asked for.
const POLL: Duration = Duration::from_millis(500);

#[derive(Subcommand)]
pub enum MigrateCommand {
    /// Plan (list the source's studies), fetch and verify every study; continues a
    /// stopped migration. Follows the progress until it ends (exit 0: every study
    /// verified, 1: failures or discrepancies, 2: error).
    Start(StartArgs),
    /// Verify again every study already migrated (an instance gone from either side is reported).
    Verify(FollowArgs),
    /// Stop fetching (studies under way finish); `start` continues.
    Pause(SourceArgs),
    /// Every source's progress (or one's).
    Status(StatusArgs),
    /// Write the report (JSON and CSV) and print its summary.
    Report(FollowArgs),
}

#[derive(Args)]
pub struct SourceArgs {
    /// The source's name in the server's [[migration.source]] blocks.
    source: String,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Args)]
pub struct FollowArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Return at once instead of following the progress.
    #[arg(long)]
    detach: bool,
    /// Write SOURCE-report.json and SOURCE-report.csv into this folder at the end.
    #[arg(long)]
    report_dir: Option<PathBuf>,
    /// Print the final report as JSON instead of the summary.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct StartArgs {
    #[command(flatten)]
    follow: FollowArgs,
    /// First study date to migrate (YYYYMMDD).
    #[arg(long)]
    since: Option<String>,
    /// Last study date to migrate (YYYYMMDD).
    #[arg(long)]
    until: Option<String>,
}

#[derive(Args)]
pub struct StatusArgs {
    source: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
    #[arg(long)]
    json: bool,
}

pub fn run(command: MigrateCommand) -> anyhow::Result<ExitCode> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(async move {
        match command {
            MigrateCommand::Start(args) => {
                let mut query = Vec::new();
                if let Some(since) = &args.since {
                    query.push(format!("since={since}"));
                }
                if let Some(until) = &args.until {
                    query.push(format!("until={until}"));
                }
                let action = match query.is_empty() {
                    true => "start".to_string(),
                    false => format!("start?{}", query.join("&")),
                };
                act_and_follow(&args.follow, &action).await
            }
            MigrateCommand::Verify(args) => act_and_follow(&args, "verify").await,
            MigrateCommand::Report(args) => {
                let client = args.source.server.client()?;
                finish(&client, &args).await
            }
            MigrateCommand::Pause(args) => {
                let client = args.server.client()?;
                let path = format!("/api/migrations/{}/pause", args.source);
                let status: MigrationStatus = call_json(&client, Method::POST, &path, CALL_TIMEOUT).await?;
                println!("{}", status_line(&status));
                Ok(ExitCode::SUCCESS)
            }
            MigrateCommand::Status(args) => {
                let client = args.server.client()?;
                let statuses: Vec<MigrationStatus> = match &args.source {
                    Some(source) => {
                        let path = format!("/api/migrations/{source}");
                        vec![call_json(&client, Method::GET, &path, CALL_TIMEOUT).await?]
                    }
                    None => call_json(&client, Method::GET, "/api/migrations", CALL_TIMEOUT).await?,
                };
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&statuses)?);
                } else if statuses.is_empty() {
                    println!("no migration source is configured ([[migration.source]])");
                } else {
                    for status in &statuses {
                        println!("{}", status_line(status));
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

async fn act_and_follow(args: &FollowArgs, action: &str) -> anyhow::Result<ExitCode> {
    let client = args.source.server.client()?;
    let path = format!("/api/migrations/{}/{action}", args.source.source);
    let status: MigrationStatus = call_json(&client, Method::POST, &path, CALL_TIMEOUT).await?;
    if args.detach {
        println!("{}", status_line(&status));
        return Ok(ExitCode::SUCCESS);
    }
    follow(&client, &args.source.source).await?;
    finish(&client, args).await
}

fn is_over(phase: MigrationPhase) -> bool {
    matches!(phase, MigrationPhase::Finished | MigrationPhase::Paused | MigrationPhase::Idle)
}

/// Show the progress until the run ends.
async fn follow(client: &HttpClient, source: &str) -> anyhow::Result<()> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} instances {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let path = format!("/api/migrations/{source}");
    loop {
        let status: MigrationStatus = call_json(client, Method::GET, &path, CALL_TIMEOUT).await?;
        let counts = &status.counts;
        bar.set_length(counts.expected_instances.max(counts.migrated_instances).max(0) as u64);
        bar.set_position(counts.migrated_instances.max(0) as u64);
        let eta = status.eta_seconds.map(|seconds| format!(", eta {}", eta_text(seconds))).unwrap_or_default();
        bar.set_message(format!(
            "({:.1}/s{eta}) {:?}, {} of {} studies verified, {} failed, {} discrepant, {} parallel",
            status.instances_per_second,
            status.phase,
            counts.verified,
            counts.total,
            counts.failed,
            counts.discrepant,
            status.parallel_now
        ));
        if is_over(status.phase) {
            bar.finish();
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

fn eta_text(seconds: u64) -> String {
    match seconds {
        0..=119 => format!("{seconds} s"),
        120..=7199 => format!("{} min", seconds / 60),
        _ => format!("{:.1} h", seconds as f64 / 3600.0),
    }
}

/// Fetch the report, write it where asked, print it; the exit code tells whether it is complete.
async fn finish(client: &HttpClient, args: &FollowArgs) -> anyhow::Result<ExitCode> {
    let source = &args.source.source;
    let path = format!("/api/migrations/{source}/report");
    let report: MigrationReport = call_json(client, Method::GET, &path, CALL_TIMEOUT).await?;
    if let Some(dir) = &args.report_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let json = dir.join(format!("{source}-report.json"));
        let csv = dir.join(format!("{source}-report.csv"));
        std::fs::write(&json, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", json.display()))?;
        std::fs::write(&csv, haneul_migrate::report::to_csv(&report))
            .with_context(|| format!("cannot write {}", csv.display()))?;
        eprintln!("report written to {} and {}", json.display(), csv.display());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", haneul_migrate::report::summary(&report));
    }
    Ok(if haneul_migrate::report::is_complete(&report) { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn status_line(status: &MigrationStatus) -> String {
    let counts = &status.counts;
    let mut line = format!(
        "{} ({}): {:?}; {} studies: {} verified, {} pending, {} running, {} failed, {} discrepant; {}/{} instances",
        status.source,
        status.method,
        status.phase,
        counts.total,
        counts.verified,
        counts.pending,
        counts.running,
        counts.failed,
        counts.discrepant,
        counts.migrated_instances,
        counts.expected_instances
    );
    if let Some(error) = &status.last_error {
        line.push_str(&format!("; last error: {error}"));
    }
    line
}
