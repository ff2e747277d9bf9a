//! Passing corrections on to a peer: the registers a correction made here
//! recorded go to the peer's REST API (`POST /api/corrections`, DIMSE has no
//! way to say it), with `replicated_from` naming this node so that the peer
//! does not send them back. The peer keeps each register only if its clock
//! is later than the one it holds, so corrections made on both sides while
//! the link was down converge to the same values everywhere.

use std::time::Duration;

use haneul_core::corrections::CORRECTED;
use haneul_core::StoredEvent;

use crate::verify::{http_client, VerifyPeer};
use crate::Peer;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A correction recorded here that did not come from this peer.
pub(crate) fn to_pass_on(event: &StoredEvent, peer: &Peer) -> bool {
    event.kind == CORRECTED
        && event.detail.get("replicated_from").and_then(|from| from.as_str()) != Some(&peer.ae_title)
        && event.detail.get("corrections").is_some_and(|registers| registers.is_array())
}

/// Send the registers of `event` to the peer; done once it recorded them
/// (or held later ones already).
pub(crate) async fn pass_on(api: &VerifyPeer, event: &StoredEvent) -> Result<(), String> {
    let document = serde_json::json!({
        "replicated_from": api.peer.calling_ae,
        "registers": event.detail["corrections"],
    });
    let client = http_client(api).map_err(|error| error.to_string())?;
    let path = "/api/corrections";
    let (status, body) = client.post_json(path, &document, REQUEST_TIMEOUT).await?;
    if status.is_success() {
        tracing::info!(peer = %api.peer.name, seq = event.seq, "correction passed on");
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
