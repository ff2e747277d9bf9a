//! The tamper-evident audit trail.
//!
//! Records are JSON lines in `audit-YYYY-MM-DD.jsonl` (UTC day) under one
//! directory, appended only. Each holds a sequence number, the BLAKE3 digest
//! of the previous record's exact line (`prev`, all zeros for the first) and
//! the digest of its own content (`hash`, the line without that field), so
//! an edited, removed, reordered or inserted record breaks the chain, also
//! across files. [`Auditor`] writes on a background thread in batches with
//! one `fdatasync` each; [`verify`] re-reads everything; [`search`] filters.
//!
//! This crate knows nothing of the archive: callers say who, from where, what
//! and which patients and studies.

mod record;
pub mod syslog;
mod writer;

pub use record::{check_line, line_digest, Action, Entry, LineProblem, Outcome, Record, GENESIS, MAX_IDS, TLS_SUBJECT};
pub use writer::{submit, AuditStats, Auditor, OpenReport, Submitted};

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, Time};

/// The trail's directory under a data directory.
pub const AUDIT_DIR: &str = "audit";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("audit trail is damaged: {0}")]
    Corrupt(String),
    /// Another process (the running server) writes this trail.
    #[error("{0}: another process is writing this audit trail")]
    Busy(PathBuf),
}

impl AuditError {
    fn io(path: &Path, source: std::io::Error) -> AuditError {
        AuditError::Io { path: path.to_path_buf(), source }
    }
}

fn file_name(date: Date) -> String {
    format!("audit-{:04}-{:02}-{:02}.jsonl", date.year(), u8::from(date.month()), date.day())
}

/// The day of a trail file, from its name.
fn file_date(path: &Path) -> Option<Date> {
    let name = path.file_name()?.to_str()?;
    let day = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    parse_day(day)
}

fn parse_day(text: &str) -> Option<Date> {
    let mut parts = text.splitn(3, '-');
    let year: i32 = parts.next()?.parse().ok()?;
    let month: u8 = parts.next()?.parse().ok()?;
    let day: u8 = parts.next()?.parse().ok()?;
    if text.len() != 10 {
        return None;
    }
    Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()
}

/// The trail's files, oldest first.
pub fn trail_files(dir: &Path) -> Result<Vec<PathBuf>, AuditError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(AuditError::io(dir, source)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|source| AuditError::io(dir, source))?.path();
        if file_date(&path).is_some() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Where a record is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    pub file: PathBuf,
    /// 1-based line number.
    pub line: u64,
}

/// The first place the chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    #[serde(flatten)]
    pub at: Location,
    pub reason: String,
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub files: usize,
    pub records: u64,
    /// Sequence number of the last sound record.
    pub last_seq: u64,
    pub first_break: Option<Break>,
    /// A partial final line (a crash, or a write in progress); the server
    /// cuts it off at its next start.
    pub partial_tail: Option<Location>,
}

impl Report {
    pub fn intact(&self) -> bool {
        self.first_break.is_none()
    }
}

/// Re-read every file in order, recompute every record's hash and the chain,
/// and report the first record that does not hold.
pub fn verify(dir: &Path) -> Result<Report, AuditError> {
    let files = trail_files(dir)?;
    let mut report = Report { files: files.len(), ..Report::default() };
    let mut prev = GENESIS.to_string();
    let mut seq = 0u64;
    for (index, path) in files.iter().enumerate() {
        let last_file = index + 1 == files.len();
        let mut reader = BufReader::new(File::open(path).map_err(|e| AuditError::io(path, e))?);
        let mut line = Vec::new();
        let mut number = 0u64;
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line).map_err(|e| AuditError::io(path, e))? == 0 {
                break;
            }
            number += 1;
            let at = Location { file: path.clone(), line: number };
            if line.pop() != Some(b'\n') {
                if last_file {
                    report.partial_tail = Some(at);
                } else {
                    report.first_break =
                        Some(Break { at, reason: "incomplete line in the middle of the trail".into() });
                }
                return Ok(report);
            }
            let problem = match check_line(&line) {
                Err(LineProblem::HashMismatch) => {
                    Some("record was altered: its content does not match its hash".to_string())
                }
                Err(LineProblem::Malformed(why)) => Some(format!("not a sound audit record ({why})")),
                Ok(record) if record.prev != prev => Some(format!(
                    "record {} does not follow the record before it: a record was removed, reordered or inserted here",
                    record.seq
                )),
                Ok(record) if record.seq != seq + 1 => {
                    Some(format!("sequence number {} where {} was expected", record.seq, seq + 1))
                }
                Ok(_) => None,
            };
            if let Some(reason) = problem {
                report.first_break = Some(Break { at, reason });
                return Ok(report);
            }
            seq += 1;
            prev = line_digest(&line);
            report.records += 1;
            report.last_seq = seq;
        }
    }
    Ok(report)
}

/// Which records [`search`] returns; every given field must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub patient: Option<String>,
    pub study: Option<String>,
    /// The actor (user or AE title) or the source address.
    pub actor: Option<String>,
    pub action: Option<Action>,
    pub from: Option<OffsetDateTime>,
    /// Exclusive.
    pub to: Option<OffsetDateTime>,
}

impl Filter {
    pub fn matches(&self, record: &Record) -> bool {
        if self.patient.as_ref().is_some_and(|id| !record.patients.iter().any(|p| p == id)) {
            return false;
        }
        if self.study.as_ref().is_some_and(|uid| !record.studies.iter().any(|s| s == uid)) {
            return false;
        }
        if self.actor.as_ref().is_some_and(|actor| {
            record.actor != *actor && record.source != *actor && !source_host(&record.source).eq(actor)
        }) {
            return false;
        }
        if self.action.is_some_and(|action| action != record.action) {
            return false;
        }
        if self.from.is_some() || self.to.is_some() {
            let Some(time) = record.time() else { return false };
            if self.from.is_some_and(|from| time < from) || self.to.is_some_and(|to| time >= to) {
                return false;
            }
        }
        true
    }
}

/// The address without its port (`10.0.0.1:4242` → `10.0.0.1`, `[::1]:80` → `::1`).
pub fn source_host(source: &str) -> &str {
    if let Some(rest) = source.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match source.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => source,
    }
}

/// A time bound from a command line or query string: RFC 3339, or a day
/// (`YYYY-MM-DD`, UTC) meaning its start, or with `end` the start of the next day.
pub fn parse_bound(text: &str, end: bool) -> Result<OffsetDateTime, String> {
    let text = text.trim();
    if let Ok(time) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(time);
    }
    let day = parse_day(text).ok_or_else(|| format!("{text:?} is neither an RFC 3339 time nor a YYYY-MM-DD day"))?;
    let day = if end { day.next_day().ok_or("day out of range")? } else { day };
    Ok(day.with_time(Time::MIDNIGHT).assume_utc())
}

/// Records matching `filter`, newest first, at most `limit`. Lines that are
/// not sound records are skipped (that is for [`verify`] to report).
pub fn search(dir: &Path, filter: &Filter, limit: usize) -> Result<Vec<Record>, AuditError> {
    let mut found = Vec::new();
    for path in trail_files(dir)?.iter().rev() {
        if found.len() >= limit {
            break;
        }
        // A file holds records of its day, and around midnight a few late
        // ones of the day before; never later ones.
        if let Some(day) = file_date(path) {
            let next = day.next_day().map(|d| d.with_time(Time::MIDNIGHT).assume_utc());
            let before = day.previous_day().map(|d| d.with_time(Time::MIDNIGHT).assume_utc());
            if filter.from.zip(next).is_some_and(|(from, next)| next <= from)
                || filter.to.zip(before).is_some_and(|(to, before)| before >= to)
            {
                continue;
            }
        }
        let reader = BufReader::new(File::open(path).map_err(|e| AuditError::io(path, e))?);
        let mut in_file = Vec::new();
        for line in reader.split(b'\n') {
            let line = line.map_err(|e| AuditError::io(path, e))?;
            if let Ok(record) = serde_json::from_slice::<Record>(&line) {
                if filter.matches(&record) {
                    in_file.push(record);
                }
            }
        }
        found.extend(in_file.into_iter().rev().take(limit - found.len()));
    }
    Ok(found)
}

#[cfg(test)]
mod tests;
