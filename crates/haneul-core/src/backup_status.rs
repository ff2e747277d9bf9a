//! The outcome of the last `haneul backup` runs of a node, which the backup
//! command leaves in the data directory and the server shows in its status
//! API and metrics, so that a monitoring system alerts when backups stop
//! (a cron job's exit status is seen by nobody once mail goes astray).
//!
//! A small file beside the catalog, not a catalog row: a backup only reads
//! the archive it backs up.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The status file's name in the data directory.
pub const BACKUP_STATUS_FILE: &str = "backup-status.json";

/// How a backup run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackupOutcome {
    /// A snapshot was written.
    Complete,
    /// A snapshot was written, but objects in the backup had been replaced
    /// by someone else (the versions Haneul wrote were used).
    Replaced,
    /// No snapshot was written.
    Failed,
}

/// One backup run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRun {
    /// When it ended (Unix seconds).
    pub finished_unix: i64,
    pub outcome: BackupOutcome,
    /// Where the backup went.
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    #[serde(default)]
    pub instances: u64,
    /// Whether the snapshot was signed.
    #[serde(default)]
    pub signed: bool,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A node's backups, per target (a node may back up to a directory hourly
/// and to a bucket nightly: one failing must not hide behind the other).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupStatus {
    #[serde(default)]
    pub targets: std::collections::BTreeMap<String, TargetStatus>,
}

/// The last run to one target, and its last run that wrote a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetStatus {
    pub last_run: Option<BackupRun>,
    pub last_success: Option<BackupRun>,
}

impl BackupStatus {
    /// The status in `data_dir`: empty when no backup ran there yet.
    pub fn read(data_dir: &Path) -> io::Result<BackupStatus> {
        let bytes = match std::fs::read(data_dir.join(BACKUP_STATUS_FILE)) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(BackupStatus::default()),
            Err(error) => return Err(error),
        };
        serde_json::from_slice(&bytes).map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
    }

    /// Add a run to the status in `data_dir`, replacing the file whole (a
    /// temporary file renamed over it), so a reader never sees half of one;
    /// readable by all, as the server may run as another user than backups.
    pub fn record(data_dir: &Path, run: BackupRun) -> io::Result<BackupStatus> {
        // An unreadable old status only loses earlier runs; this one is still said.
        let mut status = BackupStatus::read(data_dir).unwrap_or_default();
        let target = status.targets.entry(run.target.clone()).or_default();
        let newer = |held: &Option<BackupRun>| held.as_ref().is_none_or(|held| held.finished_unix <= run.finished_unix);
        if run.outcome != BackupOutcome::Failed && newer(&target.last_success) {
            target.last_success = Some(run.clone());
        }
        if newer(&target.last_run) {
            target.last_run = Some(run);
        }
        let bytes = serde_json::to_vec_pretty(&status).map_err(io::Error::other)?;
        let mut file = tempfile::Builder::new().prefix(".backup-status-").tempfile_in(data_dir)?;
        file.write_all(&bytes)?;
        file.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
        file.as_file().sync_all()?;
        file.persist(data_dir.join(BACKUP_STATUS_FILE)).map_err(|error| error.error)?;
        if let Err(error) = std::fs::File::open(data_dir).and_then(|dir| dir.sync_all()) {
            tracing::warn!(dir = %data_dir.display(), %error, "cannot sync the directory of the backup status");
        }
        Ok(status)
    }

    /// The status for the REST API: one entry per target, with the age of its last success.
    pub fn to_json(&self, now_unix: i64) -> serde_json::Value {
        let targets: Vec<serde_json::Value> = self
            .targets
            .iter()
            .map(|(target, status)| {
                let age = status.last_success.as_ref().map(|run| (now_unix - run.finished_unix).max(0));
                serde_json::json!({
                    "target": target,
                    "last_run": status.last_run,
                    "last_success": status.last_success,
                    "seconds_since_success": age,
                })
            })
            .collect();
        serde_json::json!({ "targets": targets })
    }

    /// Append the backup gauges, one series per target, in the Prometheus text format.
    pub fn render_prometheus(&self, out: &mut String) {
        type Gauge = fn(&TargetStatus) -> i64;
        let gauges: [(&str, &str, Gauge); 3] = [
            (
                "haneul_backup_last_success_timestamp_seconds",
                "When the last backup to the target that wrote a snapshot ended (Unix time; 0: never)",
                |status| status.last_success.as_ref().map_or(0, |run| run.finished_unix),
            ),
            ("haneul_backup_last_run_failed", "1 when the last backup to the target wrote no snapshot", |status| {
                i64::from(status.last_run.as_ref().is_some_and(|run| run.outcome == BackupOutcome::Failed))
            }),
            (
                "haneul_backup_last_run_replaced",
                "1 when the last backup found objects someone else had replaced in the target",
                |status| i64::from(status.last_run.as_ref().is_some_and(|run| run.outcome == BackupOutcome::Replaced)),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (target, status) in &self.targets {
                let label = target.replace(['"', '\\', '\n'], "_");
                let _ = writeln!(out, "{name}{{target=\"{label}\"}} {}", value(status));
            }
        }
    }
}

/// `text` with the user information of any URL in it removed
/// (`http://key:secret@host` → `http://host`): error messages and targets
/// kept in the status are shown to every user who may monitor.
pub fn without_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let authority_end = tail.find(|c: char| c == '/' || c.is_whitespace()).unwrap_or(tail.len());
        match tail[..authority_end].rfind('@') {
            Some(userinfo_end) => rest = &tail[userinfo_end + 1..],
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(finished_unix: i64, outcome: BackupOutcome) -> BackupRun {
        BackupRun {
            finished_unix,
            outcome,
            target: "/backup/haneul".into(),
            snapshot: (outcome != BackupOutcome::Failed).then(|| format!("snapshot-{finished_unix}")),
            instances: 3,
            signed: false,
            error: (outcome == BackupOutcome::Failed).then(|| "the disk is full".into()),
        }
    }

    #[test]
    fn a_failed_run_keeps_the_last_success_and_the_gauges_say_both() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(BackupStatus::read(dir.path()).expect("none yet"), BackupStatus::default());
        BackupStatus::record(dir.path(), run(1_000, BackupOutcome::Complete)).expect("record");
        let status = BackupStatus::record(dir.path(), run(2_000, BackupOutcome::Failed)).expect("record");
        assert_eq!(BackupStatus::read(dir.path()).expect("read"), status);
        let target = &status.targets["/backup/haneul"];
        assert_eq!(target.last_success.as_ref().map(|run| run.finished_unix), Some(1_000));
        assert_eq!(target.last_run.as_ref().map(|run| run.outcome), Some(BackupOutcome::Failed));
        assert_eq!(status.to_json(1_600)["targets"][0]["seconds_since_success"], 600);
        let mode = std::fs::metadata(dir.path().join(BACKUP_STATUS_FILE)).expect("file").permissions().mode();
        assert_eq!(mode & 0o044, 0o044, "readable by a server running as another user");

        let mut metrics = String::new();
        status.render_prometheus(&mut metrics);
        let series = |name: &str| format!("\n{name}{{target=\"/backup/haneul\"}} ");
        assert!(
            metrics.contains(&format!("{}1000\n", series("haneul_backup_last_success_timestamp_seconds"))),
            "{metrics}"
        );
        assert!(metrics.contains(&format!("{}1\n", series("haneul_backup_last_run_failed"))), "{metrics}");
        assert!(metrics.contains(&format!("{}0\n", series("haneul_backup_last_run_replaced"))), "{metrics}");

        // Another target has a status of its own; an older run reported late changes nothing.
        let mut elsewhere = run(2_500, BackupOutcome::Complete);
        elsewhere.target = "s3://haneul-backup/site1".into();
        BackupStatus::record(dir.path(), elsewhere).expect("record");
        let status = BackupStatus::record(dir.path(), run(500, BackupOutcome::Complete)).expect("record");
        assert_eq!(status.targets.len(), 2);
        assert_eq!(status.targets["/backup/haneul"].last_success.as_ref().map(|run| run.finished_unix), Some(1_000));

        let status = BackupStatus::record(dir.path(), run(3_000, BackupOutcome::Replaced)).expect("record");
        assert_eq!(status.targets["/backup/haneul"].last_success.as_ref().map(|run| run.finished_unix), Some(3_000));
        let leftovers = std::fs::read_dir(dir.path()).expect("dir").count();
        assert_eq!(leftovers, 1, "only the status file, no temporary one");
    }

    #[test]
    fn urls_lose_their_user_information() {
        assert_eq!(
            without_userinfo("s3 bucket b at http://key:secret@minio:9000/x: denied; see https://h/p@q"),
            "s3 bucket b at http://minio:9000/x: denied; see https://h/p@q"
        );
        assert_eq!(without_userinfo("/backup/haneul: no space"), "/backup/haneul: no space");
    }
}
