//! What the replicators report about each peer: how far the journal has been
//! shipped, how far behind they are, and the last failure. Kept here so the
//! status API and the metrics show it without knowing how shipping works.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

/// One peer's replication state.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PeerStatus {
    pub peer: String,
    /// `AE@host:port` of the peer.
    pub address: String,
    pub mode: String,
    /// Whether this node ships to the peer now: of the nodes sharing a
    /// catalog, the one holding the peer's lease does (a lone node always).
    pub active: bool,
    /// The node holding the lease, as last seen ("" for a lone node).
    pub lease_holder: Option<String>,
    /// Journal sequence number up to which everything is shipped.
    pub cursor: i64,
    /// Newest journal sequence number seen.
    pub head: i64,
    /// Instances stored here and not yet confirmed by the peer, among the
    /// journal events being shipped (at most a batch of 256 ahead).
    pub pending_instances: u64,
    /// Age of the oldest unconfirmed instance, in seconds (0 when none).
    pub lag_seconds: f64,
    /// Instances the peer confirmed since start.
    pub shipped: u64,
    /// Failed attempts (association or store) since start.
    pub failures: u64,
    /// Stores acknowledged without this synchronous peer's confirmation
    /// (`on_failure = "async"`); each one is an alarm.
    pub sync_fallbacks: u64,
    pub last_error: Option<String>,
    /// When the peer last confirmed an instance (Unix ms).
    pub last_shipped_ms: Option<i64>,
    /// The last anti-entropy comparison with the peer (kept across restarts).
    pub last_verify: Option<VerifyReport>,
    /// Differences remained after the last verify: an alarm for the PACS team.
    pub verify_alarm: bool,
}

/// The outcome of one anti-entropy run against a peer (`haneul replication verify`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
// Reports saved by older versions lack the newer counts.
#[serde(default)]
pub struct VerifyReport {
    pub peer: String,
    /// No difference remains: the archives compared equal, or every
    /// difference found was repaired (checked again after the repair).
    pub equal: bool,
    /// Whether the digest trees were equal at the first comparison.
    pub equal_at_start: bool,
    /// Whether differences were to be repaired.
    pub repair: bool,
    /// What each side held at the start (studies, instances).
    pub local_studies: u64,
    pub local_instances: u64,
    pub peer_studies: u64,
    pub peer_instances: u64,
    /// Studies whose digests were compared (in differing buckets).
    pub studies_compared: u64,
    /// Studies and instances found differing.
    pub differing_studies: u64,
    pub differing_instances: u64,
    /// Requests to the peer.
    pub round_trips: u64,
    /// Versions sent to the peer over DIMSE, and fetched from it over HTTP.
    pub pushed: u64,
    pub pulled: u64,
    /// Versions that could not be repaired (see `errors`).
    pub failures: u64,
    /// Instances still differing at the end.
    pub remaining: u64,
    /// Attribute correction registers (patient or study, attribute) held
    /// differently at the start, sent to the peer, taken from it, and still
    /// differing at the end.
    pub differing_registers: u64,
    pub registers_pushed: u64,
    pub registers_pulled: u64,
    pub registers_remaining: u64,
    /// The first failures, for the operator.
    pub errors: Vec<String>,
    pub duration_seconds: f64,
    /// When it finished: RFC 3339 (UTC) and Unix milliseconds.
    pub finished_at: String,
    pub finished_ms: i64,
}

/// Why a verify could not run or finish.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("no peer named {0:?} is configured")]
    UnknownPeer(String),
    /// A configuration key the verify needs is not set; names the key.
    #[error("peer {peer:?} cannot be verified: {detail}")]
    NotConfigured { peer: String, detail: String },
    /// The peer could not be reached or answered something unusable.
    #[error("verify of peer {peer:?} failed: {detail}")]
    Failed { peer: String, detail: String },
}

/// A future of [`PeerVerifier::verify`].
pub type VerifyFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<VerifyReport, VerifyError>> + Send + 'a>>;

/// Runs anti-entropy against a configured peer. Implemented by the
/// replication layer and registered with [`ReplicationStatus::set_verifier`],
/// so that the HTTP edge can start a verify without knowing how it works.
pub trait PeerVerifier: Send + Sync {
    fn verify<'a>(&'a self, peer: &'a str, repair: bool) -> VerifyFuture<'a>;
}

/// A metric: name, Prometheus type, help text and its value for a peer.
type Series = (&'static str, &'static str, &'static str, fn(&PeerStatus) -> f64);

/// Every peer's status, by name.
#[derive(Default)]
pub struct ReplicationStatus {
    peers: Mutex<BTreeMap<String, PeerStatus>>,
    verifier: RwLock<Option<Arc<dyn PeerVerifier>>>,
}

impl std::fmt::Debug for ReplicationStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationStatus").field("peers", &self.snapshot()).finish_non_exhaustive()
    }
}

impl ReplicationStatus {
    fn peers(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PeerStatus>> {
        self.peers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Change a peer's status (creating it).
    pub fn update(&self, peer: &str, change: impl FnOnce(&mut PeerStatus)) {
        let mut peers = self.peers();
        let status =
            peers.entry(peer.to_string()).or_insert_with(|| PeerStatus { peer: peer.into(), ..PeerStatus::default() });
        change(status);
    }

    pub fn snapshot(&self) -> Vec<PeerStatus> {
        self.peers().values().cloned().collect()
    }

    /// The setting that keeps a peer's last verify report across restarts.
    pub fn verify_setting_key(peer: &str) -> String {
        format!("replication.{peer}.verify")
    }

    /// Record a finished verify: in the peer's status, with the alarm raised
    /// when differences remained.
    pub fn record_verify(&self, report: &VerifyReport) {
        self.update(&report.peer, |status| {
            status.verify_alarm = !report.equal;
            status.last_verify = Some(report.clone());
        });
    }

    /// From now on, verify requests go to `verifier`.
    pub fn set_verifier(&self, verifier: Arc<dyn PeerVerifier>) {
        *self.verifier.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(verifier);
    }

    /// Compare with `peer` and, with `repair`, make both hold the same versions.
    pub async fn verify(&self, peer: &str, repair: bool) -> Result<VerifyReport, VerifyError> {
        let verifier = self.verifier.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        match verifier {
            Some(verifier) => verifier.verify(peer, repair).await,
            None => Err(VerifyError::UnknownPeer(peer.to_string())),
        }
    }

    /// Prometheus text for every peer.
    pub fn render_prometheus(&self, out: &mut String) {
        use std::fmt::Write;
        let peers = self.snapshot();
        if peers.is_empty() {
            return;
        }
        let series: [Series; 8] = [
            ("haneul_replication_pending_instances", "gauge", "Instances not yet confirmed by the peer", |p| {
                p.pending_instances as f64
            }),
            ("haneul_replication_lag_seconds", "gauge", "Age of the oldest unconfirmed instance", |p| p.lag_seconds),
            ("haneul_replication_shipped_total", "counter", "Instances the peer confirmed", |p| p.shipped as f64),
            ("haneul_replication_failures_total", "counter", "Failed replication attempts", |p| p.failures as f64),
            (
                "haneul_replication_sync_fallbacks_total",
                "counter",
                "Stores acknowledged without a synchronous peer",
                |p| p.sync_fallbacks as f64,
            ),
            (
                "haneul_replication_verify_differences",
                "gauge",
                "Instances that differed from the peer after the last verify (and its repair)",
                |p| p.last_verify.as_ref().map_or(0.0, |report| report.remaining as f64),
            ),
            (
                "haneul_replication_verify_alarm",
                "gauge",
                "1 when differences with the peer remained after the last verify",
                |p| if p.verify_alarm { 1.0 } else { 0.0 },
            ),
            (
                "haneul_replication_last_verify_timestamp_seconds",
                "gauge",
                "When the last verify with the peer finished (Unix time; 0: never)",
                |p| p.last_verify.as_ref().map_or(0.0, |report| report.finished_ms as f64 / 1000.0),
            ),
        ];
        for (name, kind, help, value) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for peer in &peers {
                let _ =
                    writeln!(out, "{name}{{peer=\"{}\"}} {}", peer.peer.replace(['"', '\\', '\n'], "_"), value(peer));
            }
        }
    }
}

/// What a store does when a synchronous replica cannot confirm it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncFailure {
    /// The store fails (the sender retries): nothing is acknowledged that the
    /// replica does not hold (RPO 0), at the price of refusing while it is away.
    Refuse,
    /// The store succeeds and the instance is shipped later; the fallback is
    /// counted and reported (an alarm for the PACS team).
    Async,
}

/// A future of a synchronous replica.
pub type ReplicaFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>>;

/// A node that must hold an instance durably before its store is acknowledged
/// here. Implemented by the replication layer, called by ingest.
pub trait SyncReplica: Send + Sync {
    fn name(&self) -> &str;
    fn on_failure(&self) -> SyncFailure;
    /// Make `instance` (stored and durable here) durable on the replica.
    fn confirm<'a>(&'a self, archive: &'a crate::Archive, instance: crate::StoredInstance) -> ReplicaFuture<'a>;
}
