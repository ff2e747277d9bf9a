//! `haneul verify`: re-hash every blob and report what does not match.

use std::process::ExitCode;

use clap::Args;
use haneul_core::{verify_archive, VerifyProblem};
use indicatif::{ProgressBar, ProgressStyle};

use crate::ArchiveOptions;

#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    archive: ArchiveOptions,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let config = args.archive.load()?;
    let progress = ProgressBar::new(0);
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let location = config.catalog.location()?;
    let blobs = config.blob_config()?;
    let report = verify_archive(&config.storage.data_dir, &location, &blobs, &mut |done, total| {
        progress.set_length(total);
        progress.set_position(done);
    })?;
    progress.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("instances checked: {}", report.instances_checked);
        println!("bytes checked:     {}", report.bytes_checked);
        println!("problems:          {}", report.problems.len());
        for problem in &report.problems {
            match problem {
                VerifyProblem::DigestMismatch { sop_instance_uid, path } => {
                    println!("  digest mismatch: {sop_instance_uid} ({path})")
                }
                VerifyProblem::MissingBlob { sop_instance_uid, path } => {
                    println!("  missing file:    {sop_instance_uid} ({path})")
                }
                VerifyProblem::Unreferenced { path } => println!("  unreferenced:    {path}"),
            }
        }
    }
    Ok(if report.is_clean() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
