//! Passing corrections on to a peer: the registers a correction made here
//! recorded go to the peer's REST API (`POST /api/corrections`, DIMSE has no
//! way to say it), with `replicated_from` naming this node so that the peer
//! does not send them back. The peer keeps each register only if its clock
//! is later than the one it holds, so corrections made on both sides while
//! the link was down converge to the same values everywhere.
//!
//! Registers apply whenever their study arrives and merge in any order, so a
//! correction the peer's API cannot take now is [`Held`] and retried on its
//! own schedule while the stores journaled after it go on.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use haneul_core::corrections::CORRECTED;
use haneul_core::{Archive, StoredEvent};

use crate::http::HttpClient;
use crate::verify::{http_client, VerifyPeer};
use crate::{Peer, MAX_BACKOFF};

/// A few registers: an API that answers at all answers this fast.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Corrections not passed on yet, by journal sequence number, with when to
/// try again. The replicator's saved cursor stays before the first, so a
/// restart reads them from the journal again.
#[derive(Debug)]
pub(crate) struct Held {
    events: BTreeMap<i64, StoredEvent>,
    retry_at: Instant,
    backoff: Duration,
}

impl Default for Held {
    fn default() -> Held {
        Held { events: BTreeMap::new(), retry_at: Instant::now(), backoff: Duration::from_secs(1) }
    }
}

impl Held {
    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    /// The sequence number of the oldest correction waiting.
    pub(crate) fn first_seq(&self) -> Option<i64> {
        self.events.keys().next().copied()
    }

    /// When the oldest correction waiting was made (Unix milliseconds).
    pub(crate) fn oldest_ms(&self) -> Option<i64> {
        self.events.values().next().map(|event| event.at_ms)
    }

    /// Pass `event` on now, unless earlier corrections wait (it queues
    /// behind them) or the peer's API fails (it is held).
    pub(crate) async fn pass_on_or_hold(&mut self, archive: &Archive, api: &VerifyPeer, event: &StoredEvent) {
        if self.events.is_empty() {
            match pass_on(api, event).await {
                Ok(()) => return,
                Err(error) => self.failed(archive, api, error),
            }
        }
        self.events.insert(event.seq, event.clone());
    }

    /// Try the held corrections again, oldest first, once their pause is
    /// over; stops at the first failure. Whether any was passed on.
    pub(crate) async fn retry_due(&mut self, archive: &Archive, api: &VerifyPeer) -> bool {
        if self.events.is_empty() || Instant::now() < self.retry_at {
            return false;
        }
        let mut passed = false;
        while let Some(entry) = self.events.first_entry() {
            if let Err(error) = pass_on(api, entry.get()).await {
                self.failed(archive, api, error);
                return passed;
            }
            entry.remove();
            passed = true;
        }
        self.backoff = Duration::from_secs(1);
        passed
    }

    fn failed(&mut self, archive: &Archive, api: &VerifyPeer, error: String) {
        tracing::warn!(peer = %api.peer.name, %error, retry_in_s = self.backoff.as_secs(), "cannot pass a correction on; the stores after it go on");
        archive.replication().update(&api.peer.name, |status| {
            status.failures += 1;
            status.last_error = Some(format!("correction not passed on: {error}"));
        });
        self.retry_at = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }
}

/// A correction recorded here that did not come from this peer.
pub(crate) fn to_pass_on(event: &StoredEvent, peer: &Peer) -> bool {
    event.kind == CORRECTED
        && event.detail.get("replicated_from").and_then(|from| from.as_str()) != Some(&peer.ae_title)
        && event.detail.get("corrections").is_some_and(|registers| registers.is_array())
}

/// Send the registers of `event` to the peer; done once it recorded them
/// (or held later ones already).
pub(crate) async fn pass_on(api: &VerifyPeer, event: &StoredEvent) -> Result<(), String> {
    let client = http_client(api).map_err(|error| error.to_string())?;
    send_registers(&client, &api.peer, &event.detail["corrections"], REQUEST_TIMEOUT).await?;
    tracing::info!(peer = %api.peer.name, seq = event.seq, "correction passed on");
    Ok(())
}

/// `POST /api/corrections` to the peer: `registers` (a JSON array of
/// registers) as coming from this node, so that the peer does not send them
/// back; done once the peer recorded them (or held later ones already).
pub(crate) async fn send_registers(
    client: &HttpClient,
    peer: &Peer,
    registers: &serde_json::Value,
    timeout: Duration,
) -> Result<(), String> {
    let document = serde_json::json!({ "replicated_from": peer.calling_ae, "registers": registers });
    let path = "/api/corrections";
    let (status, body) = client.post_json(path, &document, timeout).await?;
    if status.is_success() {
        return Ok(());
    }
    Err(crate::http::failure(&client.base_url(), path, status, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn correction(replicated_from: Option<&str>) -> StoredEvent {
        let mut detail = serde_json::json!({ "corrections": [] });
        if let Some(peer) = replicated_from {
            detail["replicated_from"] = peer.into();
        }
        crate::test_event(CORRECTED, detail)
    }

    #[test]
    fn corrections_the_peer_passed_on_are_not_sent_back() {
        let peer = crate::test_peer("SITEB");
        assert!(to_pass_on(&correction(None), &peer));
        assert!(to_pass_on(&correction(Some("SITEC")), &peer));
        assert!(!to_pass_on(&correction(Some("SITEB")), &peer));
    }
}
