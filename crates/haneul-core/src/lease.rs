//! Background jobs that one node of a shared catalog runs at a time
//! (shipping the journal to a replication peer, and verifying it). A node
//! runs such a job while it holds the job's lease in the catalog. It renews
//! the lease every third of its term; once a lease is not renewed in time
//! (its node died, or lost the catalog), the next node asking takes the job
//! over. A lone node always gets its own leases.
//!
//! A node that cannot renew considers the lease lost after two thirds of
//! the term, before any other node may take it: the last third absorbs
//! clock differences between nodes. The jobs guarded this way are
//! idempotent, so a brief overlap would cost work, never data.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::Archive;

/// The liveness lease a node keeps while it runs where nodes share a
/// bucket: once it lapses, another node judges the unsettled instances the
/// node left (see [`Archive::adopt_dead_nodes`]).
pub fn node_lease_name(node: &str) -> String {
    format!("node.{node}")
}

/// Whether this node holds a lease, and who does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseState {
    pub held: bool,
    /// The node holding it as last seen ("" for a lone node; `None` before
    /// the first answer, or while the catalog does not answer).
    pub holder: Option<String>,
}

/// Keep asking for the lease `name` (taking it when free, renewing it while
/// held) until `stop` turns true, then give it up. The receiver tells
/// whether this node holds it.
pub fn keep(
    archive: Arc<Archive>,
    name: String,
    term: Duration,
    mut stop: watch::Receiver<bool>,
) -> watch::Receiver<LeaseState> {
    let (state, receiver) = watch::channel(LeaseState::default());
    let node = archive.node_name().to_string();
    tokio::spawn(async move {
        let mut renewed_at: Option<Instant> = None;
        loop {
            let asked_at = Instant::now();
            match archive.acquire_lease(&name, term).await {
                Ok(lease) => {
                    let held = lease.holder == node;
                    let was_held = state.borrow().held;
                    if held && !was_held {
                        tracing::info!(lease = %name, node = %node, "lease taken: this node runs the job");
                    } else if !held && was_held {
                        tracing::warn!(lease = %name, holder = %lease.holder, "lease lost to another node");
                    }
                    renewed_at = held.then_some(asked_at);
                    state.send_replace(LeaseState { held, holder: Some(lease.holder) });
                }
                Err(error) => {
                    let lapsed = renewed_at.is_none_or(|at| at.elapsed() >= term * 2 / 3);
                    tracing::warn!(lease = %name, %error, lapsed, "cannot renew the lease");
                    if lapsed {
                        renewed_at = None;
                        state.send_replace(LeaseState { held: false, holder: None });
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(term / 3) => {}
                _ = stop.wait_for(|stopped| *stopped) => break,
            }
        }
        if state.borrow().held {
            state.send_replace(LeaseState::default());
            if let Err(error) = archive.release_lease(&name).await {
                tracing::warn!(lease = %name, %error, "cannot give the lease up; it lapses on its own");
            }
        }
    });
    receiver
}
