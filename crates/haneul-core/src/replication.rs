//! What the replicators report about each peer: how far the journal has been
//! shipped, how far behind they are, and the last failure. Kept here so the
//! status API and the metrics show it without knowing how shipping works.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

/// One peer's replication state.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PeerStatus {
    pub peer: String,
    /// `AE@host:port` of the peer.
    pub address: String,
    pub mode: String,
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
}

/// A metric: name, Prometheus type, help text and its value for a peer.
type Series = (&'static str, &'static str, &'static str, fn(&PeerStatus) -> f64);

/// Every peer's status, by name.
#[derive(Debug, Default)]
pub struct ReplicationStatus {
    peers: Mutex<BTreeMap<String, PeerStatus>>,
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

    /// Prometheus text for every peer.
    pub fn render_prometheus(&self, out: &mut String) {
        use std::fmt::Write;
        let peers = self.snapshot();
        if peers.is_empty() {
            return;
        }
        let series: [Series; 5] = [
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
