//! What one audit record holds and how it is written as a line.

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// At most this many patient IDs and study UIDs are kept in one record; the
/// rest are only counted (`patients_omitted`, `studies_omitted` in `detail`).
pub const MAX_IDS: usize = 100;

/// The digest that the first record of a trail follows.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Detail key of the subject (RFC 4514) of the certificate the requester
/// presented over TLS; the syslog forwarder reports it as the requester's
/// AlternativeUserID.
pub const TLS_SUBJECT: &str = "tls_subject";

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Query,
    Retrieve,
    View,
    Store,
    Delete,
    /// Attributes of a patient or study corrected.
    Correct,
    Export,
    Login,
    Logout,
    LoginFailed,
    PermissionDenied,
    ConfigChange,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Query => "query",
            Action::Retrieve => "retrieve",
            Action::View => "view",
            Action::Store => "store",
            Action::Delete => "delete",
            Action::Correct => "correct",
            Action::Export => "export",
            Action::Login => "login",
            Action::Logout => "logout",
            Action::LoginFailed => "login-failed",
            Action::PermissionDenied => "permission-denied",
            Action::ConfigChange => "config-change",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
}

/// A record being made: who did what to which patients and studies, and how
/// it ended. The time is taken when the entry is created; the sequence number
/// and the chain are added by the writer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub action: Action,
    /// User name, or the calling AE title over DIMSE.
    pub actor: String,
    /// Network address of the peer (and AE where it matters).
    pub source: String,
    /// Association or request id, to find the matching log lines.
    pub session: String,
    pub patients: Vec<String>,
    pub studies: Vec<String>,
    pub outcome: Outcome,
    /// Anything else worth keeping: query keys, counts, the failure.
    pub detail: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    patients_omitted: u64,
    #[serde(default)]
    studies_omitted: u64,
}

impl Entry {
    pub fn new(
        action: Action,
        actor: impl Into<String>,
        source: impl Into<String>,
        session: impl Into<String>,
    ) -> Entry {
        Entry {
            time: OffsetDateTime::now_utc(),
            action,
            actor: actor.into(),
            source: source.into(),
            session: session.into(),
            patients: Vec::new(),
            studies: Vec::new(),
            outcome: Outcome::Success,
            detail: serde_json::Map::new(),
            patients_omitted: 0,
            studies_omitted: 0,
        }
    }

    /// Add a patient ID (empty and repeated IDs are skipped, beyond
    /// [`MAX_IDS`] only counted).
    pub fn patient(mut self, id: &str) -> Entry {
        self.add_patient(id);
        self
    }

    pub fn add_patient(&mut self, id: &str) {
        add_capped(&mut self.patients, &mut self.patients_omitted, id);
    }

    pub fn patients<S: AsRef<str>>(mut self, ids: impl IntoIterator<Item = S>) -> Entry {
        for id in ids {
            self.add_patient(id.as_ref());
        }
        self
    }

    pub fn study(mut self, uid: &str) -> Entry {
        self.add_study(uid);
        self
    }

    pub fn add_study(&mut self, uid: &str) {
        add_capped(&mut self.studies, &mut self.studies_omitted, uid);
    }

    pub fn studies<S: AsRef<str>>(mut self, uids: impl IntoIterator<Item = S>) -> Entry {
        for uid in uids {
            self.add_study(uid.as_ref());
        }
        self
    }

    /// Add a detail (`key` replaces an earlier value).
    pub fn detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Entry {
        self.detail.insert(key.to_string(), value.into());
        self
    }

    /// Mark the entry failed, keeping why.
    pub fn failed(mut self, why: impl std::fmt::Display) -> Entry {
        self.outcome = Outcome::Failure;
        self.detail.insert("error".to_string(), why.to_string().into());
        self
    }

    /// Success or failure from a result, keeping the error's text.
    pub fn outcome_of<T, E: std::fmt::Display>(self, result: &Result<T, E>) -> Entry {
        match result {
            Ok(_) => self,
            Err(error) => self.failed(error),
        }
    }

    /// The line (without the newline) for this entry as record `seq`
    /// following the record whose line digest is `prev`; returns it with the
    /// record's own hash.
    pub(crate) fn to_line(&self, seq: u64, prev: &str) -> String {
        let mut detail = self.detail.clone();
        if self.patients_omitted > 0 {
            detail.insert("patients_omitted".into(), self.patients_omitted.into());
        }
        if self.studies_omitted > 0 {
            detail.insert("studies_omitted".into(), self.studies_omitted.into());
        }
        let content = Content {
            seq,
            time: self.time.format(&Rfc3339).unwrap_or_default(),
            actor: &self.actor,
            source: &self.source,
            action: self.action,
            patients: &self.patients,
            studies: &self.studies,
            outcome: self.outcome,
            detail: &detail,
            session: &self.session,
            prev,
        };
        let content = serde_json::to_string(&content).expect("audit records serialize");
        let hash = blake3::hash(content.as_bytes()).to_hex();
        let mut line = content;
        line.pop(); // the closing brace
        line.push_str(HASH_FIELD);
        line.push_str(hash.as_str());
        line.push_str("\"}");
        line
    }
}

fn add_capped(list: &mut Vec<String>, omitted: &mut u64, value: &str) {
    let value = value.trim();
    if value.is_empty() || list.iter().any(|known| known == value) {
        return;
    }
    if list.len() < MAX_IDS {
        list.push(value.to_string());
    } else {
        *omitted += 1;
    }
}

const HASH_FIELD: &str = ",\"hash\":\"";

#[derive(Serialize)]
struct Content<'a> {
    seq: u64,
    time: String,
    actor: &'a str,
    source: &'a str,
    action: Action,
    patients: &'a [String],
    studies: &'a [String],
    outcome: Outcome,
    detail: &'a serde_json::Map<String, serde_json::Value>,
    session: &'a str,
    prev: &'a str,
}

/// A record as read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    /// UTC, RFC 3339.
    pub time: String,
    pub actor: String,
    pub source: String,
    pub action: Action,
    pub patients: Vec<String>,
    pub studies: Vec<String>,
    pub outcome: Outcome,
    pub detail: serde_json::Map<String, serde_json::Value>,
    pub session: String,
    /// BLAKE3 (hex) of the previous record's line.
    pub prev: String,
    /// BLAKE3 (hex) of this record's content (the line without this field).
    pub hash: String,
}

impl Record {
    pub fn time(&self) -> Option<OffsetDateTime> {
        OffsetDateTime::parse(&self.time, &Rfc3339).ok()
    }
}

/// The digest the next record's `prev` must hold.
pub fn line_digest(line: &[u8]) -> String {
    blake3::hash(line).to_hex().to_string()
}

/// Why a line is not a sound record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineProblem {
    Malformed(String),
    HashMismatch,
}

/// Check a line's own hash and parse it.
pub fn check_line(line: &[u8]) -> Result<Record, LineProblem> {
    let text = std::str::from_utf8(line).map_err(|_| LineProblem::Malformed("not UTF-8".into()))?;
    let at = text.rfind(HASH_FIELD).ok_or_else(|| LineProblem::Malformed("no hash field".into()))?;
    let claimed = &text[at + HASH_FIELD.len()..];
    let claimed = claimed
        .strip_suffix("\"}")
        .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| LineProblem::Malformed("the hash field is not the last one".into()))?;
    let mut content = String::with_capacity(at + 1);
    content.push_str(&text[..at]);
    content.push('}');
    if blake3::hash(content.as_bytes()).to_hex().as_str() != claimed {
        return Err(LineProblem::HashMismatch);
    }
    serde_json::from_str(text).map_err(|error| LineProblem::Malformed(error.to_string()))
}
