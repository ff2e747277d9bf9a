//! `haneul backup`, `haneul backup list`, `haneul backup drill` and
//! `haneul restore`: write-once backups of the catalog and the instance
//! files, point-in-time restore into an empty node, and a drill that proves
//! a backup restores completely.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use haneul_backup::{
    BackupError, BucketTarget, Chosen, DirTarget, Layout, Manifest, PassedOver, RestoreProblem, SigningKey,
    SnapshotState, Source, Target, VerifyKey,
};
use haneul_core::backup_status::{without_userinfo, BackupOutcome, BackupRun, BackupStatus};
use haneul_core::{
    audit, open_blob_store, verify_archive, Archive, ArchiveConfig, BlobBackend, BlobConfig, CatalogLocation,
    S3Options, VerifyProblem, BLOB_DIR, CATALOG_FILE,
};
use indicatif::{ProgressBar, ProgressStyle};

use crate::users::{command_line_entry, record_command};
use crate::ArchiveOptions;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BackupArgs {
    #[command(subcommand)]
    command: Option<BackupCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    archive: ArchiveOptions,
    /// The backup: a directory (created if needed; files in it are never changed once written)
    /// or s3://BUCKET[/PREFIX], a bucket with Object Lock.
    #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX", required = true)]
    to: Option<String>,
    /// Where the catalog copy is made before it is stored (default: the backup directory, or the
    /// system's temporary directory for a bucket).
    #[arg(long, value_name = "DIR")]
    scratch: Option<PathBuf>,
    /// Sign the snapshot with the signing key in FILE (made by `haneul backup keygen`), so that
    /// restores given its verify key take no snapshot written by anyone else.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    #[command(flatten)]
    bucket: BucketArgs,
}

/// Read a signing key file named on the command line.
fn read_signing_key(path: Option<&Path>) -> anyhow::Result<Option<SigningKey>> {
    let Some(path) = path else { return Ok(None) };
    let key = SigningKey::read_file(path)
        .with_context(|| format!("cannot read the backup signing key {}", path.display()))?;
    Ok(Some(key))
}

/// Read a verify key file (or the public half of a signing key file) named on the command line.
fn read_verify_key(path: Option<&Path>) -> anyhow::Result<Option<VerifyKey>> {
    let Some(path) = path else { return Ok(None) };
    let key = VerifyKey::read_file(path).with_context(|| format!("cannot read the backup key {}", path.display()))?;
    Ok(Some(key))
}

/// How to reach a backup in a bucket. Credentials come from the environment
/// (`AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, or a role), so that
/// backups can run with keys of their own rather than the archive's.
#[derive(Args)]
struct BucketArgs {
    /// The S3-compatible server of an s3:// backup (default: AWS, by region).
    #[arg(long, value_name = "URL")]
    s3_endpoint: Option<String>,
    /// The region of an s3:// backup (default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1).
    #[arg(long, value_name = "REGION")]
    s3_region: Option<String>,
}

impl BucketArgs {
    fn region(&self) -> String {
        let from_environment = || {
            ["AWS_REGION", "AWS_DEFAULT_REGION"]
                .iter()
                .find_map(|name| std::env::var(name).ok().filter(|region| !region.is_empty()))
        };
        self.s3_region.clone().or_else(from_environment).unwrap_or_else(|| "us-east-1".into())
    }
}

/// Where a backup is: a directory, or a bucket and key prefix.
enum BackupLocation {
    Dir(PathBuf),
    Bucket(S3Options),
}

impl BackupLocation {
    fn parse(location: &str, bucket: &BucketArgs) -> anyhow::Result<BackupLocation> {
        let Some(rest) = location.strip_prefix("s3://") else {
            return Ok(BackupLocation::Dir(PathBuf::from(location)));
        };
        let (name, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if name.is_empty() {
            anyhow::bail!("{location:?}: expected s3://BUCKET or s3://BUCKET/PREFIX");
        }
        Ok(BackupLocation::Bucket(S3Options {
            endpoint: bucket.s3_endpoint.clone(),
            region: bucket.region(),
            bucket: name.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            access_key_id: None,
            secret_access_key: None,
        }))
    }

    /// The target; a directory is created for a new backup (`create`), and
    /// must exist otherwise. Temporary files of a bucket go under `staging`.
    fn open(&self, create: bool, staging: &Path) -> anyhow::Result<Box<dyn Target>> {
        match self {
            BackupLocation::Dir(dir) if create => Ok(Box::new(
                DirTarget::open(dir).with_context(|| format!("cannot use the backup directory {}", dir.display()))?,
            )),
            BackupLocation::Dir(dir) => Ok(Box::new(DirTarget::existing(dir)?)),
            BackupLocation::Bucket(options) => {
                let target = BucketTarget::connect(options, staging)
                    .with_context(|| format!("cannot use the backup bucket {}", options.bucket))?;
                Ok(Box::new(target))
            }
        }
    }
}

/// Open an existing backup for reading.
fn existing_target(from: &str, bucket: &BucketArgs) -> anyhow::Result<Box<dyn Target>> {
    BackupLocation::parse(from, bucket)?.open(false, &std::env::temp_dir())
}

#[derive(Subcommand)]
enum BackupCommand {
    /// List the snapshots of a backup.
    List(ListArgs),
    /// Restore a snapshot into a temporary directory, verify everything, and report.
    /// Exit status: 0 complete, 1 incomplete, 2 could not run, 3 complete only
    /// from the versions Haneul wrote, or (with --key) newer snapshots not
    /// signed with the key were passed over: someone else has written to the backup.
    Drill(DrillArgs),
    /// Make a new key pair for signed backups: FILE signs (`haneul backup --key FILE`, on the
    /// archive node) and FILE.pub checks (`restore`, `drill`, `list --key FILE.pub`).
    Keygen(KeygenArgs),
}

#[derive(Args)]
struct KeygenArgs {
    /// The new signing key file (written once, readable by its owner only); the verify key goes
    /// beside it as FILE.pub. Neither may exist.
    file: PathBuf,
}

/// Take only snapshots signed with a key.
#[derive(Args)]
struct VerifyKeyArgs {
    /// Take only snapshots signed with this key pair (its verify key FILE.pub, or the signing key
    /// file); newer ones that are not signed with it are named and passed over (exit 3).
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
}

#[derive(Args)]
struct ListArgs {
    /// The backup: a directory or s3://BUCKET[/PREFIX].
    #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
    from: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Judge snapshots as a restore with this key pair would (FILE.pub, or the signing key).
    /// Exit 3 when a snapshot would be passed over (malformed, unreadable, or not signed with it).
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    #[command(flatten)]
    bucket: BucketArgs,
}

#[derive(Args)]
struct DrillArgs {
    /// The backup: a directory or s3://BUCKET[/PREFIX].
    #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
    from: String,
    /// The newest snapshot at or before this time (RFC 3339 or a snapshot name); default: the newest.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// Where the temporary restore goes (default: the system's temporary directory).
    #[arg(long, value_name = "DIR")]
    scratch: Option<PathBuf>,
    #[command(flatten)]
    signed: VerifyKeyArgs,
    #[command(flatten)]
    bucket: BucketArgs,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The backup: a directory or s3://BUCKET[/PREFIX].
    #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
    from: String,
    /// The newest snapshot at or before this time (RFC 3339 or a snapshot name); default: the newest.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// The new node's data directory (--data, or storage.data_dir of --config): absent or empty.
    #[command(flatten)]
    archive: ArchiveOptions,
    #[command(flatten)]
    signed: VerifyKeyArgs,
    #[command(flatten)]
    bucket: BucketArgs,
}

fn byte_progress() -> ProgressBar {
    let progress = ProgressBar::new(0);
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    progress
}

/// Progress of a byte count towards a total, shown on `progress`.
fn show_bytes(progress: &ProgressBar) -> impl FnMut(u64, u64) + '_ {
    |done, total| {
        progress.set_length(total);
        progress.set_position(done);
    }
}

fn layout(data_dir: &Path) -> Layout {
    Layout {
        data_dir: data_dir.to_path_buf(),
        catalog_file: CATALOG_FILE.into(),
        blob_dir: BLOB_DIR.into(),
        audit_dir: audit::AUDIT_DIR.into(),
    }
}

pub fn run_backup(args: BackupArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(BackupCommand::List(list)) => run_list(list),
        Some(BackupCommand::Drill(drill)) => run_drill(drill),
        Some(BackupCommand::Keygen(keygen)) => run_keygen(keygen),
        None => run_once(args.run),
    }
}

fn run_once(args: RunArgs) -> anyhow::Result<ExitCode> {
    let Some(to) = args.to.clone() else {
        anyhow::bail!("--to DIR or --to s3://BUCKET/PREFIX is required");
    };
    let config = args.archive.load()?;
    let written = write_snapshot(&args, &to, &config);
    // Whatever happened, for the server's status API and metrics.
    record_status(&config, &to, &written, args.key.is_some());
    let (report, recorded, signing_key) = written?;
    recorded?;
    let counts = &report.counts;
    println!("snapshot:                {}", report.snapshot);
    println!("objects written:         {} ({} bytes)", report.objects_written, report.bytes_written);
    println!("objects already present: {}", report.objects_present);
    println!(
        "audit trail:             {} files ({} read, {} copied)",
        report.audit_files, report.audit_read, report.audit_written
    );
    match &signing_key {
        Some(key_id) => println!("signed:                  with key {key_id}"),
        None => println!("signed:                  no (--key FILE signs snapshots)"),
    }
    println!(
        "catalog:                 {} instances, {} studies, {} patients, {} blobs ({} bytes)",
        counts.instances, counts.studies, counts.patients, counts.blobs, counts.bytes
    );
    if report.replaced.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    // The snapshot is complete, but someone else has written to the backup.
    println!(
        "replaced:                {} (changed in the backup since Haneul wrote them; their versions as written are kept and used)",
        report.replaced.len()
    );
    for object in &report.replaced {
        println!("  {object}");
    }
    Ok(ExitCode::from(TAMPERED))
}

/// What a run that wrote a snapshot gives: its report, whether its audit
/// record could be made, and the id of the key pair that signed it.
type Written = (haneul_backup::BackupReport, anyhow::Result<()>, Option<String>);

/// Write one snapshot of the archive `config` describes to `to`, signed
/// with the key of `--key`, and record the run in the node's audit trail.
fn write_snapshot(args: &RunArgs, to: &str, config: &crate::config::Config) -> anyhow::Result<Written> {
    let signing_key = read_signing_key(args.key.as_deref())?;
    let signing_key = signing_key.as_ref();
    let data_dir = config.storage.data_dir.clone();
    let location = BackupLocation::parse(to, &args.bucket)?;
    let scratch = match (&args.scratch, &location) {
        (Some(scratch), _) => scratch.clone(),
        (None, BackupLocation::Dir(dir)) => dir.clone(),
        (None, BackupLocation::Bucket(_)) => std::env::temp_dir(),
    };
    let target = location.open(true, &scratch)?;
    let target = target.as_ref();
    let progress = byte_progress();
    let mut show = show_bytes(&progress);
    let blob_config = config.blob_config()?;
    if blob_config.backend == BlobBackend::Local && !data_dir.join(BLOB_DIR).is_dir() {
        anyhow::bail!("no archive at {}: no blob directory", data_dir.display());
    }
    let blobs = open_blob_store(&data_dir, &blob_config, false).context("cannot open the blob store")?;
    // This node's audit trail goes with the archive: it says who saw and changed what.
    let audit_dir = data_dir.join(audit::AUDIT_DIR);
    // The snapshot of a PostgreSQL catalog is a SQLite catalog, so a
    // restore gives an archive on the embedded default.
    let catalog = match config.catalog.location()? {
        CatalogLocation::Embedded => {
            haneul_backup::open_embedded_catalog(&data_dir.join(CATALOG_FILE)).map_err(anyhow::Error::from)
        }
        location => location.open(&data_dir).context("cannot open the catalog"),
    };
    let report = catalog.and_then(|catalog| {
        let source = Source { catalog: catalog.as_ref(), blobs: &blobs, audit_dir: Some(&audit_dir), signing_key };
        Ok(haneul_backup::backup(&source, target, &scratch, &mut show)?)
    });
    progress.finish_and_clear();
    // A backup reads every patient's data: an export, attributed to whoever ran it.
    let entry = match &report {
        Ok(report) => audit_entry(audit::Action::Export, "backup", target)
            .detail("snapshot", report.snapshot.as_str())
            .detail("instances", report.counts.instances)
            .detail("studies", report.counts.studies)
            .detail("patients", report.counts.patients)
            .detail("replaced", report.replaced.len())
            .detail("signed", signing_key.map(|key| key.verify_key().id())),
        Err(error) => audit_entry(audit::Action::Export, "backup", target).failed(error),
    };
    let done = match &report {
        Ok(report) => format!("snapshot {} was written", report.snapshot),
        Err(_) => "the backup failed".to_string(),
    };
    let recorded = record_command(config, &done, entry);
    Ok((report?, recorded, signing_key.map(|key| key.verify_key().id())))
}

/// Leave the outcome of a run in the data directory (`BackupStatus`), with
/// no user information of a URL in it; a status that cannot be written is
/// said, not fatal. Nothing is left where there is no archive yet (a node
/// waiting for its restore, whose directory must stay empty).
fn record_status(config: &crate::config::Config, to: &str, written: &anyhow::Result<Written>, signed: bool) {
    let data_dir = &config.storage.data_dir;
    let embedded = config.catalog.engine == crate::config::CatalogEngine::Sqlite;
    if !data_dir.is_dir() || (embedded && !data_dir.join(CATALOG_FILE).is_file()) {
        return;
    }
    let finished_unix = time::OffsetDateTime::now_utc().unix_timestamp();
    let target = without_userinfo(to);
    let run = match written {
        Ok((report, _, _)) => BackupRun {
            finished_unix,
            outcome: if report.replaced.is_empty() { BackupOutcome::Complete } else { BackupOutcome::Replaced },
            target,
            snapshot: Some(report.snapshot.clone()),
            instances: report.counts.instances,
            signed,
            error: None,
        },
        Err(error) => BackupRun {
            finished_unix,
            outcome: BackupOutcome::Failed,
            target,
            snapshot: None,
            instances: 0,
            signed,
            error: Some(without_userinfo(&format!("{error:#}"))),
        },
    };
    if let Err(error) = BackupStatus::record(data_dir, run) {
        eprintln!("haneul: cannot record the backup's outcome in {}: {error}", data_dir.display());
    }
}

fn run_list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let key = read_verify_key(args.key.as_deref())?;
    let target = existing_target(&args.from, &args.bucket)?;
    let snapshots = haneul_backup::list_snapshots(target.as_ref(), key.as_ref())?;
    let passed_over =
        snapshots.iter().filter(|snapshot| matches!(snapshot.state, SnapshotState::PassedOver(_))).count();
    let status = if passed_over == 0 { ExitCode::SUCCESS } else { ExitCode::from(TAMPERED) };
    if args.json {
        let listing: Vec<serde_json::Value> = snapshots
            .iter()
            .map(|snapshot| match &snapshot.state {
                SnapshotState::Complete(manifest) => serde_json::json!({
                    "snapshot": snapshot.name,
                    "state": "complete",
                    "complete": true,
                    "signed": key.is_some(),
                    "created": manifest.created,
                    "haneul_version": manifest.haneul_version,
                    "counts": manifest.counts,
                }),
                SnapshotState::Incomplete => serde_json::json!({
                    "snapshot": snapshot.name,
                    "state": "incomplete",
                    "complete": false,
                    "reason": "no manifest",
                }),
                SnapshotState::PassedOver(reason) => serde_json::json!({
                    "snapshot": snapshot.name,
                    "state": "passed-over",
                    "complete": false,
                    "reason": reason,
                }),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&listing)?);
        return Ok(status);
    }
    if snapshots.is_empty() {
        println!("no snapshots in {}", args.from);
    }
    for snapshot in &snapshots {
        match &snapshot.state {
            SnapshotState::Complete(manifest) => println!(
                "{}  complete     {} instances, {} studies, {} objects, {} bytes{}",
                snapshot.name,
                manifest.counts.instances,
                manifest.counts.studies,
                manifest.counts.objects,
                manifest.counts.bytes,
                if key.is_some() { "; signed with the key" } else { "" }
            ),
            SnapshotState::Incomplete => println!("{}  incomplete   no manifest", snapshot.name),
            SnapshotState::PassedOver(reason) => {
                println!("{}  passed over  {}", snapshot.name, haneul_backup::printable(reason))
            }
        }
    }
    Ok(status)
}

pub fn run_restore(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    use crate::config::{BlobBackendKind, CatalogEngine};
    let config = args.archive.load()?;
    // A restore fills either an empty node of the embedded default (files on
    // local disk, a SQLite catalog) or the empty bucket and PostgreSQL
    // database of nodes that share them; not half of each.
    match (config.storage.backend, config.catalog.engine) {
        (BlobBackendKind::Local, CatalogEngine::Sqlite) => {}
        (BlobBackendKind::S3, CatalogEngine::Postgres) => return restore_shared(&args, &config),
        _ => anyhow::bail!(
            "haneul restore fills a node on local disk with a SQLite catalog, or a bucket \
             (storage.backend = \"s3\") with a PostgreSQL catalog (catalog.engine = \"postgres\"), not one of each"
        ),
    }
    let data_dir = config.storage.data_dir.clone();
    let target = existing_target(&args.from, &args.bucket)?;
    let Chosen { manifest, passed_over } = choose(target.as_ref(), args.at.as_deref(), &args.signed)?;
    let progress = byte_progress();
    let report = haneul_backup::restore(target.as_ref(), &manifest, &layout(&data_dir), &mut show_bytes(&progress));
    progress.finish_and_clear();
    let report = report?;
    // The new node's trail (the restored one, continued) says where its data came from.
    let done = format!("snapshot {} was restored into {}", report.snapshot, data_dir.display());
    record_command(&config, &done, restore_entry(target.as_ref(), &report))?;
    println!("restored snapshot {} (created {})", report.snapshot, manifest.created);
    println!("into:      {}", data_dir.display());
    println!("instances: {}", manifest.counts.instances);
    println!("blobs:     {} ({} bytes, every one verified)", report.blobs_restored, report.bytes);
    println!("audit:     {} trail files (every one verified)", report.audit_files);
    print_replaced(&report.replaced);
    println!("start it with: haneul serve --data {}", data_dir.display());
    Ok(restore_status(&passed_over, &report.replaced))
}

/// Restore into the bucket and the PostgreSQL database of nodes that share
/// them (both empty); the nodes start on them afterwards.
fn restore_shared(args: &RestoreArgs, config: &crate::config::Config) -> anyhow::Result<ExitCode> {
    let CatalogLocation::Postgres(options) = config.catalog.location()? else {
        anyhow::bail!("catalog.engine = \"postgres\" needs catalog.url");
    };
    let target = existing_target(&args.from, &args.bucket)?;
    let Chosen { manifest, passed_over } = choose(target.as_ref(), args.at.as_deref(), &args.signed)?;
    let data_dir = &config.storage.data_dir;
    let blobs = open_blob_store(data_dir, &config.blob_config()?, false).context("cannot open the bucket")?;
    let scratch = data_dir.join("restoring");
    let progress = byte_progress();
    let report = haneul_backup::restore_shared(
        target.as_ref(),
        &manifest,
        &options,
        &blobs,
        &data_dir.join(audit::AUDIT_DIR),
        &scratch,
        &mut show_bytes(&progress),
    );
    progress.finish_and_clear();
    let _ = std::fs::remove_dir(&scratch);
    let report = report?;
    let done = format!("snapshot {} was restored", report.snapshot);
    record_command(config, &done, restore_entry(target.as_ref(), &report))?;
    println!("restored snapshot {} (created {})", report.snapshot, manifest.created);
    println!("into:      {} and the PostgreSQL catalog", blobs.describe());
    println!("instances: {}", manifest.counts.instances);
    println!("blobs:     {} ({} bytes, every one verified)", report.blobs_restored, report.bytes);
    println!("audit:     {} trail files, into {}", report.audit_files, data_dir.join(audit::AUDIT_DIR).display());
    print_replaced(&report.replaced);
    println!("start the nodes with their configuration (haneul serve --config FILE)");
    Ok(restore_status(&passed_over, &report.replaced))
}

/// The snapshot to restore: at or before `at`, signed with the key if one
/// is given; what was passed over is printed at once, so that it is seen
/// even when the restore then fails.
fn choose(target: &dyn Target, at: Option<&str>, signed: &VerifyKeyArgs) -> anyhow::Result<Chosen> {
    let key = read_verify_key(signed.key.as_deref())?;
    let chosen = haneul_backup::choose_snapshot(target, at, key.as_ref())?;
    if let Some(key) = &key {
        println!("signature: snapshot {} is signed with key {}", chosen.manifest.snapshot, key.id());
    }
    if !chosen.passed_over.is_empty() {
        println!(
            "passed over: {} newer snapshots a restore may not take (look into each: someone else may have written to the backup)",
            chosen.passed_over.len()
        );
        for passed in &chosen.passed_over {
            println!("  {passed}");
        }
    }
    Ok(chosen)
}

/// A restore that took objects from earlier versions, or passed over newer
/// snapshots (older data than the backup seems to hold), says so in its
/// exit status as the drill does.
fn restore_status(passed_over: &[PassedOver], replaced: &[haneul_backup::Replaced]) -> ExitCode {
    match passed_over.is_empty() && replaced.is_empty() {
        true => ExitCode::SUCCESS,
        false => ExitCode::from(TAMPERED),
    }
}

fn run_keygen(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    let key = SigningKey::create_files(&args.file)
        .with_context(|| format!("cannot make a new key pair at {}", args.file.display()))?;
    let verify = haneul_backup::verify_key_path(&args.file);
    println!("key pair {} written", key.verify_key().id());
    println!(
        "signing key: {} (on the archive node: haneul backup --key {} ...)",
        args.file.display(),
        args.file.display()
    );
    println!("verify key:  {} (for restores and drills: --key {})", verify.display(), verify.display());
    println!(
        "keep a copy of the verify key away from the archive and the backup; anyone with the signing key can sign"
    );
    Ok(ExitCode::SUCCESS)
}

/// An audit record of a backup command, with where the backup is.
fn audit_entry(action: audit::Action, operation: &str, target: &dyn Target) -> audit::Entry {
    command_line_entry(action).detail("operation", operation).detail("backup", target.describe())
}

/// A restore writes every patient's data of a snapshot into a node: a store.
fn restore_entry(target: &dyn Target, report: &haneul_backup::RestoreReport) -> audit::Entry {
    let counts = &report.manifest.counts;
    audit_entry(audit::Action::Store, "restore", target)
        .detail("snapshot", report.snapshot.as_str())
        .detail("instances", counts.instances)
        .detail("studies", counts.studies)
        .detail("patients", counts.patients)
        .detail("replaced", report.replaced.len())
}

/// Objects a restore read from the version Haneul wrote: someone else
/// writes to the backup, which its owner must look into.
fn print_replaced(replaced: &[haneul_backup::Replaced]) {
    if replaced.is_empty() {
        return;
    }
    println!(
        "replaced:  {} (restored from the version Haneul wrote; someone else has written to this backup)",
        replaced.len()
    );
    for object in replaced {
        println!("  {object}");
    }
}

/// The exit status of a backup or drill that is complete only thanks to the
/// versions the bucket kept: someone else has written to the backup.
const TAMPERED: u8 = 3;

/// What a drill found.
#[derive(Default)]
struct Drill {
    objects_verified: u64,
    /// Objects restored from the version Haneul wrote.
    replaced: Vec<haneul_backup::Replaced>,
    restore_problems: Vec<RestoreProblem>,
    verify_problems: Vec<VerifyProblem>,
    /// Differences between the restored node and the manifest.
    count_problems: Vec<String>,
    instances: u64,
    studies: u64,
    /// Bytes restored and verified against their digests.
    bytes: u64,
    /// The restored audit trail: files, and records whose chain holds.
    audit_files: u64,
    audit_records: u64,
}

impl Drill {
    fn complete(&self) -> bool {
        self.restore_problems.is_empty() && self.verify_problems.is_empty() && self.count_problems.is_empty()
    }
}

fn run_drill(args: DrillArgs) -> anyhow::Result<ExitCode> {
    let target = existing_target(&args.from, &args.bucket)?;
    let Chosen { manifest, passed_over } = choose(target.as_ref(), args.at.as_deref(), &args.signed)?;
    let scratch = args.scratch.unwrap_or_else(std::env::temp_dir);
    let work = tempfile::Builder::new()
        .prefix("haneul-drill-")
        .tempdir_in(&scratch)
        .with_context(|| format!("cannot make a temporary directory in {}", scratch.display()))?;
    let data_dir = work.path().join("data");
    let drill = drill(target.as_ref(), &manifest, &data_dir)?;
    // Removed before the report, so a drill leaves nothing behind either way.
    work.close().with_context(|| format!("cannot remove the drill's directory in {}", scratch.display()))?;

    let counts = &manifest.counts;
    println!(
        "snapshot:          {} (created {}, haneul {})",
        manifest.snapshot, manifest.created, manifest.haneul_version
    );
    println!("instances:         {} (manifest {})", drill.instances, counts.instances);
    println!("studies:           {} (manifest {})", drill.studies, counts.studies);
    println!("bytes:             {} (manifest {})", drill.bytes, counts.bytes);
    println!("objects verified:  {} of {} blobs", drill.objects_verified, counts.blobs);
    println!("audit trail:       {} records in {} files", drill.audit_records, drill.audit_files);
    let missing = drill.restore_problems.iter().filter(|p| matches!(p, RestoreProblem::Missing { .. })).count();
    println!("missing:           {missing}");
    println!("mismatched:        {}", drill.restore_problems.len() - missing);
    for problem in &drill.restore_problems {
        println!("  {problem}");
    }
    if !drill.verify_problems.is_empty() {
        println!("verify problems:   {}", drill.verify_problems.len());
        for problem in &drill.verify_problems {
            println!("  {}", serde_json::to_string(problem)?);
        }
    }
    for problem in &drill.count_problems {
        println!("  {problem}");
    }
    println!("replaced:          {}", drill.replaced.len());
    for object in &drill.replaced {
        println!("  {object}");
    }
    if drill.complete() && !drill.replaced.is_empty() {
        println!("result:            complete from the versions Haneul wrote; the objects above were changed since");
        return Ok(ExitCode::from(TAMPERED));
    }
    if drill.complete() && !passed_over.is_empty() {
        println!("result:            complete; newer snapshots that the key did not sign were passed over");
        return Ok(ExitCode::from(TAMPERED));
    }
    if drill.complete() {
        println!("result:            complete");
        return Ok(ExitCode::SUCCESS);
    }
    println!("result:            INCOMPLETE");
    Ok(ExitCode::FAILURE)
}

/// Restore into `data_dir`, start the archive there (start-up recovery
/// included), then verify every blob and compare with the manifest.
fn drill(target: &dyn Target, manifest: &Manifest, data_dir: &Path) -> anyhow::Result<Drill> {
    let mut drill = Drill::default();
    let progress = byte_progress();
    let restored = haneul_backup::restore(target, manifest, &layout(data_dir), &mut show_bytes(&progress));
    progress.finish_and_clear();
    match restored {
        Ok(report) => {
            drill.objects_verified = report.blobs_restored;
            drill.bytes = report.bytes;
            drill.replaced = report.replaced;
            drill.audit_files = report.audit_files;
        }
        Err(BackupError::Incomplete { problems, .. }) => {
            // Problems name blob paths, or audit trail files.
            let blob_paths: std::collections::HashSet<&str> =
                manifest.blobs.iter().map(|blob| blob.path.as_str()).collect();
            let blob_problems = problems.iter().filter(|problem| blob_paths.contains(problem.path())).count();
            drill.objects_verified = manifest.counts.blobs.saturating_sub(blob_problems as u64);
            drill.restore_problems = problems;
            return Ok(drill);
        }
        Err(error) => return Err(error.into()),
    }

    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    let statistics = runtime.block_on(async {
        let config = ArchiveConfig { audit: false, ..ArchiveConfig::new(data_dir) };
        let archive = tokio::task::spawn_blocking(move || Archive::open(config))
            .await?
            .context("the restored archive does not open")?;
        let statistics = archive.statistics().await;
        archive.shutdown().await;
        anyhow::Ok(statistics?)
    })?;
    drop(runtime);
    drill.instances = statistics.instances;
    drill.studies = statistics.studies;

    let audit_dir = data_dir.join(audit::AUDIT_DIR);
    let trail = audit::verify(&audit_dir)
        .with_context(|| format!("reading the restored audit trail in {}", audit_dir.display()))?;
    drill.audit_records = trail.records;
    if let Some(broken) = &trail.first_break {
        drill.count_problems.push(format!(
            "audit trail: {} line {}: {}",
            broken.at.file.file_name().unwrap_or_default().to_string_lossy(),
            broken.at.line,
            broken.reason
        ));
    }
    if trail.files != manifest.audit.len() {
        drill.count_problems.push(format!(
            "audit trail files: {} in the restored node, {} in the manifest",
            trail.files,
            manifest.audit.len()
        ));
    }

    let report = verify_archive(data_dir, &CatalogLocation::Embedded, &BlobConfig::default(), &mut |_, _| {})?;
    drill.verify_problems = report.problems;
    let counts = &manifest.counts;
    let expected_instance_bytes: u64 =
        manifest.blobs.iter().filter(|blob| blob.kind == "instance").map(|blob| blob.size).sum();
    let comparisons = [
        ("patients", statistics.patients, counts.patients),
        ("studies", statistics.studies, counts.studies),
        ("series", statistics.series, counts.series),
        ("instances", statistics.instances, counts.instances),
        ("instances verified", report.instances_checked, counts.instances),
        ("instance bytes", statistics.stored_bytes, expected_instance_bytes),
    ];
    for (what, found, expected) in comparisons {
        if found != expected {
            drill.count_problems.push(format!("{what}: {found} in the restored node, {expected} in the manifest"));
        }
    }
    Ok(drill)
}
