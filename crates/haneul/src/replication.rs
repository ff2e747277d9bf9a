//! `haneul replication verify PEER`: ask the running server to compare its
//! archive with a peer's (anti-entropy) and repair the differences. The
//! server runs it: this command must not open the archive beside it (opening
//! runs start-up recovery, which removes files it does not know yet).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use haneul_core::replication::VerifyReport;

/// A verify with repair after a long outage takes a while.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

#[derive(Subcommand)]
pub enum ReplicationCommand {
    /// Compare with a peer through digest trees and repair the differences
    /// (exit 0: equal, 1: differences remain, 2: error).
    Verify(VerifyArgs),
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The peer's name in the server's [[peer]] blocks.
    peer: String,
    /// Only compare; leave differences as they are.
    #[arg(long)]
    no_repair: bool,
    #[command(flatten)]
    server: crate::server_api::ServerArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(command: ReplicationCommand) -> anyhow::Result<ExitCode> {
    match command {
        ReplicationCommand::Verify(args) => verify(args),
    }
}

fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let client = args.server.client()?;
    let path = format!("/api/replication/peers/{}/verify?repair={}", args.peer, !args.no_repair);
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    let report: VerifyReport = runtime.block_on(crate::server_api::call_json(
        &client,
        haneul_replication::http::Method::POST,
        &path,
        VERIFY_TIMEOUT,
    ))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", summary(&report));
    }
    Ok(if report.equal { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn plural(count: u64, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// What a person reads: the verdict first, then what was done.
fn summary(report: &VerifyReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let peer = &report.peer;
    let held = format!(
        "here {} and {}, on {peer} {} and {}",
        plural(report.local_studies, "study", "studies"),
        plural(report.local_instances, "instance", "instances"),
        plural(report.peer_studies, "study", "studies"),
        plural(report.peer_instances, "instance", "instances"),
    );
    let trips = plural(report.round_trips, "round trip", "round trips");
    if report.equal_at_start {
        let _ = writeln!(out, "{peer}: equal ({held}; {trips}, {:.2} s)", report.duration_seconds);
        return out;
    }
    let _ = writeln!(
        out,
        "{peer}: {} in {} differed ({} compared; {held})",
        plural(report.differing_instances, "instance", "instances"),
        plural(report.differing_studies, "study", "studies"),
        plural(report.studies_compared, "study", "studies"),
    );
    if report.differing_registers > 0 {
        let _ = writeln!(
            out,
            "{peer}: {} differed",
            plural(report.differing_registers, "attribute correction", "attribute corrections")
        );
    }
    if report.repair {
        let _ = writeln!(
            out,
            "repair: {} and {} sent to {peer}, {} and {} taken from it, {}",
            plural(report.pushed, "version", "versions"),
            plural(report.registers_pushed, "correction", "corrections"),
            plural(report.pulled, "version", "versions"),
            plural(report.registers_pulled, "correction", "corrections"),
            plural(report.failures, "failure", "failures"),
        );
    }
    for error in &report.errors {
        let _ = writeln!(out, "  {error}");
    }
    if report.equal {
        let _ = writeln!(out, "{peer}: equal now ({trips}, {:.2} s)", report.duration_seconds);
    } else {
        let _ = writeln!(
            out,
            "{peer}: {} and {} still differ ({trips}, {:.2} s){}",
            plural(report.remaining, "instance", "instances"),
            plural(report.registers_remaining, "correction", "corrections"),
            report.duration_seconds,
            if report.repair { "" } else { "; run without --no-repair to repair" }
        );
    }
    out
}
