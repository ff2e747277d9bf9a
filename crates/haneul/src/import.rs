//! `haneul import PATH…`: store files and folders into the archive, with a
//! progress bar and a summary of what was stored, already there, or refused.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use haneul_core::{Archive, ArchiveConfig, CommitOutcome, IngestError, Origin};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::LogConfig;
use crate::{logging, ArchiveOptions};

#[derive(Args)]
pub struct ImportArgs {
    #[command(flatten)]
    archive: ArchiveOptions,
    /// Files and folders; folders are walked recursively.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Files stored at once (they share catalog commits).
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// Exit with status 1 if any file was refused.
    #[arg(long)]
    strict: bool,
}

#[derive(Default)]
struct Summary {
    stored: usize,
    already_stored: usize,
    duplicates_kept_first: usize,
    /// Kept beside the current version (only when importing as a replication peer).
    conflicts: usize,
    replaced: usize,
    rejected: BTreeMap<String, Vec<PathBuf>>,
    failed: Vec<(PathBuf, String)>,
    bytes: u64,
}

pub fn run(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let config = args.archive.load()?;
    // Per-file log lines would fight the progress bar; warnings still show.
    logging::init(&LogConfig { level: "warn".into(), ..config.log.clone() });
    let files = collect_files(&args.paths)?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    let summary = runtime.block_on(async {
        let data_dir = config.storage.data_dir.clone();
        let archive_config = ArchiveConfig {
            duplicate_policy: config.storage.duplicate_policy,
            catalog: config.catalog.location()?,
            blobs: config.blob_config()?,
            write_ahead_max_bytes: config.storage.write_ahead_max_bytes,
            ..ArchiveConfig::new(&data_dir)
        };
        let archive = tokio::task::spawn_blocking(move || Archive::open(archive_config))
            .await?
            .with_context(|| format!("cannot open the archive in {}", config.storage.data_dir.display()))?;
        let summary = import_files(&archive, files, args.jobs.max(1)).await;
        archive.shutdown().await;
        anyhow::Ok(summary)
    })?;
    print_summary(&summary);
    let refused = !summary.rejected.is_empty() || !summary.failed.is_empty();
    Ok(if !summary.failed.is_empty() || (args.strict && refused) { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn collect_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if !path.exists() {
            anyhow::bail!("{}: no such file or directory", path.display());
        }
        for entry in walkdir::WalkDir::new(path).sort_by_file_name() {
            let entry = entry.with_context(|| format!("cannot read {}", path.display()))?;
            if entry.file_type().is_file() {
                files.push(entry.into_path());
            }
        }
    }
    Ok(files)
}

async fn import_files(archive: &Arc<Archive>, files: Vec<PathBuf>, jobs: usize) -> Summary {
    let progress = ProgressBar::new(files.len() as u64);
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} files ({per_sec}, eta {eta}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let origin = Origin {
        actor: "haneul-import".into(),
        address: "local".into(),
        session: haneul_dimse::association::new_association_id(),
        ..Origin::default()
    };
    let permits = Arc::new(tokio::sync::Semaphore::new(jobs));
    let mut tasks = tokio::task::JoinSet::new();
    for path in files {
        let archive = Arc::clone(archive);
        let origin = origin.clone();
        let permits = Arc::clone(&permits);
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let result = archive.ingest_file(&path, origin).await;
            (path, result)
        });
    }
    let mut summary = Summary::default();
    while let Some(joined) = tasks.join_next().await {
        progress.inc(1);
        let Ok((path, result)) = joined else {
            continue;
        };
        match result {
            Ok(report) => match report.outcome {
                CommitOutcome::Stored => {
                    summary.stored += 1;
                    summary.bytes += report.size;
                }
                CommitOutcome::Replaced { .. } => {
                    summary.replaced += 1;
                    summary.bytes += report.size;
                }
                CommitOutcome::AlreadyStored => summary.already_stored += 1,
                CommitOutcome::DuplicateIgnored => summary.duplicates_kept_first += 1,
                CommitOutcome::Conflict { .. } => summary.conflicts += 1,
                CommitOutcome::RemovedHere => summary.already_stored += 1,
                CommitOutcome::DuplicateRejected { reason } => summary.rejected.entry(reason).or_default().push(path),
            },
            Err(IngestError::Rejected { detail, .. }) => summary.rejected.entry(detail).or_default().push(path),
            Err(error) => summary.failed.push((path, error.to_string())),
        }
    }
    progress.finish_and_clear();
    summary
}

fn print_summary(summary: &Summary) {
    println!("stored:                    {} ({} bytes)", summary.stored, summary.bytes);
    println!("already stored (same):     {}", summary.already_stored);
    println!("duplicates, first kept:    {}", summary.duplicates_kept_first);
    if summary.conflicts > 0 {
        println!("conflicting versions kept: {}", summary.conflicts);
    }
    if summary.replaced > 0 {
        println!("replaced older copies:     {}", summary.replaced);
    }
    let rejected: usize = summary.rejected.values().map(Vec::len).sum();
    println!("rejected:                  {rejected}");
    for (reason, paths) in &summary.rejected {
        println!("  {} × {reason}", paths.len());
        for path in paths.iter().take(5) {
            println!("      {}", path.display());
        }
        if paths.len() > 5 {
            println!("      … and {} more", paths.len() - 5);
        }
    }
    if !summary.failed.is_empty() {
        println!("failed:                    {}", summary.failed.len());
        for (path, error) in &summary.failed {
            println!("  {}: {error}", path.display());
        }
    }
}
