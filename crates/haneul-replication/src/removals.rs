//! Passing removals on to a peer: a study, series or instance removed here is
//! removed there too, through the peer's REST API (`DELETE /api/studies/…`,
//! DIMSE has no removal), with `replicated_from` naming this node so that the
//! peer does not send the removal back. The peer remembers what it removed,
//! so a copy still on its way from elsewhere does not bring it back.

use std::time::Duration;

use haneul_core::StoredEvent;

use crate::http::{escape, Method, StatusCode};
use crate::verify::{http_client, VerifyPeer};
use crate::Peer;

/// The journal kind of a removal.
pub(crate) const REMOVED: &str = "removed";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A removal made here (not one this peer passed on to us).
pub(crate) fn to_remove(event: &StoredEvent, peer: &Peer) -> bool {
    event.kind == REMOVED && event.detail.get("replicated_from").and_then(|from| from.as_str()) != Some(&peer.ae_title)
}

/// The REST path that removes what `event` removed here; `None` for a level
/// the API does not remove at (patients).
fn removal_path(event: &StoredEvent, calling_ae: &str) -> Option<String> {
    let level = event.detail.get("level")?.as_str()?;
    let uid = event.detail.get("uid")?.as_str().filter(|uid| haneul_dicom::uid::is_acceptable(uid))?;
    let resource = match level {
        "STUDY" => "studies",
        "SERIES" => "series",
        "IMAGE" => "instances",
        _ => return None,
    };
    Some(format!("/api/{resource}/{}?replicated_from={}", escape(uid), escape(calling_ae)))
}

/// Remove at the peer what `event` removed here. Done when the peer removed
/// it or holds none of it (404).
pub(crate) async fn pass_on(api: &VerifyPeer, event: &StoredEvent) -> Result<(), String> {
    let Some(path) = removal_path(event, &api.peer.calling_ae) else {
        tracing::warn!(peer = %api.peer.name, seq = event.seq, "a removal at this level is not passed on");
        return Ok(());
    };
    let client = http_client(api).map_err(|error| error.to_string())?;
    let (status, body) = client.call(Method::DELETE, &path, REQUEST_TIMEOUT).await?;
    if status.is_success() || status == StatusCode::NOT_FOUND {
        tracing::info!(peer = %api.peer.name, %path, status = status.as_u16(), "removal passed on");
        return Ok(());
    }
    Err(crate::http::failure(&client.base_url(), &path, status, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn removal(level: &str, replicated_from: Option<&str>) -> StoredEvent {
        let mut detail = serde_json::json!({ "level": level, "uid": "1.2.3", "instances": 2 });
        if let Some(peer) = replicated_from {
            detail["replicated_from"] = peer.into();
        }
        crate::test_event(REMOVED, detail)
    }

    fn peer() -> Peer {
        crate::test_peer("SITEB")
    }

    #[test]
    fn removals_the_peer_passed_on_are_not_sent_back() {
        assert!(to_remove(&removal("STUDY", None), &peer()));
        assert!(to_remove(&removal("STUDY", Some("SITEC")), &peer()));
        assert!(!to_remove(&removal("STUDY", Some("SITEB")), &peer()));
    }

    #[test]
    fn each_level_has_its_resource() {
        assert_eq!(
            removal_path(&removal("STUDY", None), "SITEA").as_deref(),
            Some("/api/studies/1.2.3?replicated_from=SITEA")
        );
        assert_eq!(removal_path(&removal("SERIES", None), "A").as_deref(), Some("/api/series/1.2.3?replicated_from=A"));
        assert_eq!(
            removal_path(&removal("IMAGE", None), "A").as_deref(),
            Some("/api/instances/1.2.3?replicated_from=A")
        );
        assert_eq!(removal_path(&removal("PATIENT", None), "A"), None);
        assert_eq!(
            removal_path(&removal("IMAGE", None), "MY AE").as_deref(),
            Some("/api/instances/1.2.3?replicated_from=MY%20AE")
        );
    }

    #[test]
    fn a_legacy_uid_is_passed_on_whole() {
        let mut event = removal("STUDY", None);
        event.detail["uid"] = "1.2.840.LEGACY 7#a".into();
        assert_eq!(
            removal_path(&event, "A").as_deref(),
            Some("/api/studies/1.2.840.LEGACY%207%23a?replicated_from=A"),
            "letters, spaces and '#' reach the peer as they were stored"
        );
        event.detail["uid"] = " ".into();
        assert_eq!(removal_path(&event, "A"), None, "a blank UID is never passed on");
    }
}
