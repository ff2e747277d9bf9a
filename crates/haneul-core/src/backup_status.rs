//! The outcome of the last `haneul backup` runs of a node, which the backup
//! command leaves in the data directory and the server shows in its status
//! API and metrics, so that a monitoring system alerts when backups stop
//! (a cron job's exit status is seen by nobody once mail goes astray).
//!
//! A small file beside the catalog, not a catalog row: a backup only reads
//! the archive it backs up.

use std::fmt::Write as _;
use std::io::{self, Write};
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

/// The last run of a node, and its last run that wrote a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupStatus {
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
    /// temporary file renamed over it), so a reader never sees half of one.
    pub fn record(data_dir: &Path, run: BackupRun) -> io::Result<BackupStatus> {
        // An unreadable old status only loses the last success; the new run is still said.
        let mut status = BackupStatus::read(data_dir).unwrap_or_default();
        if run.outcome != BackupOutcome::Failed {
            status.last_success = Some(run.clone());
        }
        status.last_run = Some(run);
        let bytes = serde_json::to_vec_pretty(&status).map_err(io::Error::other)?;
        let mut file = tempfile::Builder::new().prefix(".backup-status-").tempfile_in(data_dir)?;
        file.write_all(&bytes)?;
        file.as_file().sync_all()?;
        file.persist(data_dir.join(BACKUP_STATUS_FILE)).map_err(|error| error.error)?;
        std::fs::File::open(data_dir)?.sync_all()?;
        Ok(status)
    }

    /// The status for the REST API, with the age of the last success.
    pub fn to_json(&self, now_unix: i64) -> serde_json::Value {
        let age = self.last_success.as_ref().map(|run| (now_unix - run.finished_unix).max(0));
        serde_json::json!({
            "last_run": self.last_run,
            "last_success": self.last_success,
            "seconds_since_success": age,
        })
    }

    /// Append the backup gauges in the Prometheus text format.
    pub fn render_prometheus(&self, out: &mut String) {
        let last = self.last_run.as_ref();
        let gauges = [
            (
                "haneul_backup_last_success_timestamp_seconds",
                "When the last backup that wrote a snapshot ended (Unix time; 0: never)",
                self.last_success.as_ref().map_or(0, |run| run.finished_unix),
            ),
            (
                "haneul_backup_last_run_failed",
                "1 when the last backup wrote no snapshot",
                i64::from(last.is_some_and(|run| run.outcome == BackupOutcome::Failed)),
            ),
            (
                "haneul_backup_last_run_replaced",
                "1 when the last backup found objects someone else had replaced in the backup",
                i64::from(last.is_some_and(|run| run.outcome == BackupOutcome::Replaced)),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
    }
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
        assert_eq!(status.last_success.as_ref().map(|run| run.finished_unix), Some(1_000));
        assert_eq!(status.last_run.as_ref().map(|run| run.outcome), Some(BackupOutcome::Failed));
        assert_eq!(status.to_json(1_600)["seconds_since_success"], 600);

        let mut metrics = String::new();
        status.render_prometheus(&mut metrics);
        assert!(metrics.contains("\nhaneul_backup_last_success_timestamp_seconds 1000\n"), "{metrics}");
        assert!(metrics.contains("\nhaneul_backup_last_run_failed 1\n"), "{metrics}");
        assert!(metrics.contains("\nhaneul_backup_last_run_replaced 0\n"), "{metrics}");

        let status = BackupStatus::record(dir.path(), run(3_000, BackupOutcome::Replaced)).expect("record");
        assert_eq!(status.last_success.as_ref().map(|run| run.finished_unix), Some(3_000));
        let leftovers = std::fs::read_dir(dir.path()).expect("dir").count();
        assert_eq!(leftovers, 1, "only the status file, no temporary one");
    }
}
