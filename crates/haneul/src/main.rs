//! The `haneul` command: the archive server and its tools.

mod aes;
mod audit;
mod backup;
mod bench;
mod config;
mod diff;
mod import;
mod logging;
mod migrate;
mod migration_config;
mod replication;
mod serve;
mod server_api;
mod users;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use config::Config;

#[derive(Parser)]
#[command(name = "haneul", version, about = "Haneul medical imaging archive (PACS)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options shared by every command that opens an archive.
#[derive(Args, Clone)]
struct ArchiveOptions {
    /// Configuration file (TOML); without it the built-in defaults apply.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Data directory (overrides storage.data_dir).
    #[arg(long)]
    data: Option<PathBuf>,
}

impl ArchiveOptions {
    fn load(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(data) = &self.data {
            config.storage.data_dir = data.clone();
        }
        Ok(config)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the archive: DICOM (DIMSE) on port 11112 and HTTP on 8080 by default.
    Serve(serve::ServeArgs),
    /// Store DICOM files and folders (recursively) into the archive.
    Import(import::ImportArgs),
    /// Re-read every stored instance and compare it with its recorded digest.
    Verify(verify::VerifyArgs),
    /// Generate synthetic studies and measure a DICOM node.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Manage user accounts (add, passwd, disable, enable, list).
    #[command(subcommand)]
    User(users::UserCommand),
    /// Manage API tokens for scripts and services (create, revoke, list).
    #[command(subcommand)]
    Token(users::TokenCommand),
    /// Manage the remote AEs every node of the catalog knows (add, remove, list).
    #[command(subcommand)]
    Ae(aes::AeCommand),
    /// Anti-entropy with replication peers: `verify PEER` asks the running server to compare and repair.
    #[command(subcommand)]
    Replication(replication::ReplicationCommand),
    /// Migrate from a legacy PACS ([[migration.source]]): start, verify, pause, status, report.
    #[command(subcommand)]
    Migrate(migrate::MigrateCommand),
    /// Check (verify) and search the tamper-evident audit trail.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Back up the catalog and instance files to a write-once directory or an S3
    /// bucket with Object Lock (beside a running server); `backup list` and
    /// `backup drill` check backups. Exit 3: the snapshot was written, but
    /// objects in the backup were replaced since Haneul wrote them.
    Backup(backup::BackupArgs),
    /// Restore a backup snapshot into an empty data directory. Exit 3: restored, but objects
    /// came from earlier versions or newer snapshots were passed over (someone else has
    /// written to the backup).
    Restore(backup::RestoreArgs),
    /// Compare two DICOM nodes (AE@host:port) study by study over C-FIND
    /// (exit 0: equal, 1: differences, 2: error or incomplete).
    Diff(diff::DiffArgs),
    /// Check a configuration file and exit.
    CheckConfig {
        /// The file to check.
        path: PathBuf,
    },
}

fn main() -> ExitCode {
    // Read while the process has a single thread (migration time windows are in local time).
    haneul_migrate::windows::capture_local_offset();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Import(args) => import::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Bench(command) => bench::run(command),
        Command::User(command) => users::run_user(command),
        Command::Token(command) => users::run_token(command),
        Command::Ae(command) => aes::run(command),
        Command::Audit(command) => audit::run(command),
        Command::Backup(args) => backup::run_backup(args),
        Command::Restore(args) => backup::run_restore(args),
        Command::Replication(command) => replication::run(command),
        Command::Migrate(command) => migrate::run(command),
        Command::Diff(args) => diff::run(args),
        Command::CheckConfig { path } => Config::load(&path).map(|_| {
            println!("{}: valid", path.display());
            ExitCode::SUCCESS
        }),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("haneul: {error:#}");
            ExitCode::from(2)
        }
    }
}
