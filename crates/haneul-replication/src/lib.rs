//! Asynchronous replication: each peer gets every instance stored here, in
//! journal order, over DIMSE C-STORE, exactly as stored.
//!
//! A replicator per peer reads the change journal after its cursor (kept in
//! the catalog, so a restart resumes where it stopped), sends the instances
//! of `instance-stored` events whose bytes are durable here, and moves the
//! cursor only past instances the peer confirmed. The peer answers a C-STORE
//! only once the instance is durable on its side, and takes the same bytes
//! again without a second copy, so a retry after a lost answer is harmless
//! (idempotent by SOP Instance UID and content). Instances that came from the
//! peer itself are not sent back, so two nodes replicating to each other do
//! not echo. Failures are retried with a pause doubling up to a minute, and
//! the peer's lag is reported through [`haneul_core::replication`].
//!
//! [`Verifier`] compares digest trees with a peer and repairs what differs
//! (anti-entropy, `haneul replication verify`).

mod corrections;
pub mod http;
mod removals;
mod verify;

pub use verify::{verify_periodically, Verifier, VerifyPeer};

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use haneul_core::corrections::CORRECTED;
use haneul_core::lease::LeaseState;
use haneul_core::replication::{ReplicaFuture, SyncFailure, SyncReplica};
use haneul_core::{Archive, StoredEvent, StoredInstance};
use haneul_dicom::ts;
use haneul_dimse::command::status;
use haneul_dimse::{Client, ProposedContext, RequestParams, StoreData};
use tokio::sync::watch;

/// The journal kind of a newly stored instance.
const STORED: &str = "instance-stored";
/// Events read from the journal per round.
const BATCH: usize = 256;
/// How often an idle replicator looks at the journal.
const POLL: Duration = Duration::from_millis(200);
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Associations shipping a backlog at once.
const LANES: usize = 4;
/// Instances per lane before another lane is opened.
const LANE_MIN_EVENTS: usize = 16;
/// Journal events skipped (queries, other kinds) between two saves of the cursor.
const SAVE_EVERY: i64 = 10_000;

/// A node the archive replicates to.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Name in the configuration, status and metrics.
    pub name: String,
    /// The peer's AE title and address.
    pub ae_title: String,
    pub host: String,
    pub port: u16,
    /// Our AE title, as the peer knows us.
    pub calling_ae: String,
    pub max_pdu_length: u32,
    pub timeout: Duration,
    /// DICOM TLS to the peer (its CA, and our certificate for mutual TLS).
    pub tls: Option<PeerTls>,
}

/// DICOM TLS to a peer, from the configuration's files, read when first
/// needed (`haneul serve` asks at start, so a bad file stops it there).
#[derive(Debug, Clone)]
pub struct PeerTls {
    /// The peer's certificate authorities (PEM).
    pub ca_file: std::path::PathBuf,
    /// Our certificate, for a peer that requires client certificates.
    pub identity: Option<haneul_tls::ClientIdentity>,
    /// The name the peer's certificate must carry.
    pub server_name: String,
    /// How the configuration names the peer (`peer[0]`), for errors.
    pub config_key: String,
    loaded: Arc<std::sync::OnceLock<Result<haneul_dimse::ClientTls, String>>>,
}

impl PeerTls {
    pub fn new(
        ca_file: std::path::PathBuf,
        identity: Option<haneul_tls::ClientIdentity>,
        server_name: String,
        config_key: String,
    ) -> PeerTls {
        PeerTls { ca_file, identity, server_name, config_key, loaded: Arc::default() }
    }

    /// The client side of DICOM TLS, or why the files are unusable.
    pub fn client_tls(&self) -> Result<haneul_dimse::ClientTls, String> {
        self.loaded
            .get_or_init(|| {
                haneul_tls::client_config_with_identity(&self.ca_file, self.identity.as_ref())
                    .map(|config| haneul_dimse::ClientTls { config, server_name: self.server_name.clone() })
                    .map_err(|error| format!("{}: {error}", self.config_key))
            })
            .clone()
    }
}

/// The lease of a peer's replication: on nodes sharing a catalog, the node
/// holding it ships the journal to the peer and verifies it periodically.
pub fn lease_name(peer: &str) -> String {
    format!("replication.{peer}")
}

impl Peer {
    fn cursor_key(&self) -> String {
        format!("replication.{}.cursor", self.name)
    }

    fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Instances a synchronous peer already confirmed (see [`SyncPeer::confirmed`]).
pub type Confirmed = Arc<std::sync::Mutex<HashSet<String>>>;

/// Ship the journal to `peer` until `stop` turns true, while this node holds
/// the peer's `lease` (see [`lease_name`]). For a synchronous peer,
/// `confirmed` holds what this node's stores already delivered; the journal
/// then only catches up on what they did not. Removals are passed on through
/// the peer's REST API when `api` gives one (else they stay local).
pub async fn run(
    archive: Arc<Archive>,
    peer: Peer,
    confirmed: Option<Confirmed>,
    api: Option<VerifyPeer>,
    mut lease: watch::Receiver<LeaseState>,
    mut stop: watch::Receiver<bool>,
) {
    let status = archive.replication();
    status.update(&peer.name, |s| {
        s.address = format!("{}@{}", peer.ae_title, peer.address());
        s.mode = if confirmed.is_some() { "sync" } else { "async" }.into();
    });
    let mut backoff = Duration::from_secs(1);
    let mut cursor = None;
    loop {
        let state = lease.borrow_and_update().clone();
        status.update(&peer.name, |s| {
            s.active = state.held;
            s.lease_holder = state.holder.clone();
        });
        if !state.held {
            // Another node ships meanwhile and moves the saved cursor: read
            // it again when this node's turn comes.
            cursor = None;
            tokio::select! {
                // The lease keeper ends only when the server stops.
                changed = lease.changed() => if changed.is_err() { return },
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
            continue;
        }
        let pause = match round(&archive, &peer, confirmed.as_ref(), api.as_ref(), &lease, &mut cursor).await {
            Ok(()) => {
                backoff = Duration::from_secs(1);
                POLL
            }
            Err(error) => {
                tracing::warn!(peer = %peer.name, %error, retry_in_s = backoff.as_secs(), "replication failed");
                status.update(&peer.name, |s| {
                    s.failures += 1;
                    s.last_error = Some(error);
                });
                let pause = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                pause
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

/// Where shipping stands: in memory, and as last saved in the catalog.
struct Cursor {
    seq: i64,
    saved: i64,
    /// Events after `seq` the peer already confirmed (a lane got further
    /// than another that failed), or corrections now `held`: not sent again
    /// when the round is retried.
    beyond: HashSet<i64>,
    /// Corrections the peer's API has not taken yet.
    held: corrections::Held,
}

impl Cursor {
    /// What may be saved: the cursor, but never past a held correction.
    fn savable(&self) -> i64 {
        self.held.first_seq().map_or(self.seq, |first| self.seq.min(first - 1))
    }

    async fn save(&mut self, archive: &Archive, key: &str) -> Result<(), String> {
        let savable = self.savable();
        if savable != self.saved {
            archive.set_setting(key, &savable.to_string()).await.map_err(|e| e.to_string())?;
            self.saved = savable;
        }
        Ok(())
    }
}

/// Ship what the journal holds after the cursor, until it is all confirmed
/// (`Ok`) or something fails.
async fn round(
    archive: &Archive,
    peer: &Peer,
    confirmed: Option<&Confirmed>,
    api: Option<&VerifyPeer>,
    lease: &watch::Receiver<LeaseState>,
    state: &mut Option<Cursor>,
) -> Result<(), String> {
    let cursor_key = peer.cursor_key();
    if state.is_none() {
        let saved = match archive.setting(&cursor_key).await.map_err(|e| e.to_string())? {
            Some(value) => value.parse().map_err(|_| format!("{cursor_key} holds {value:?}, not a number"))?,
            None => 0,
        };
        *state = Some(Cursor { seq: saved, saved, beyond: HashSet::new(), held: corrections::Held::default() });
    }
    let Some(position) = state.as_mut() else { return Ok(()) };
    if let Some(api) = api {
        if position.held.retry_due(archive, api).await {
            position.save(archive, &cursor_key).await?;
        }
    }
    let mut cursor = position.seq;
    loop {
        if !lease.borrow().held {
            return Ok(());
        }
        let events = archive.events_after(cursor, BATCH).await.map_err(|e| e.to_string())?;
        let held = position.held.len() as u64;
        let held_since_ms = position.held.oldest_ms();
        let lag_since = |oldest_ms: Option<i64>| {
            held_since_ms.into_iter().chain(oldest_ms).min().map_or(0.0, |at| (now_ms() - at).max(0) as f64 / 1000.0)
        };
        let Some(last) = events.last().map(|event| event.seq) else {
            archive.replication().update(&peer.name, |s| {
                s.cursor = cursor;
                s.head = s.head.max(cursor);
                s.pending_instances = held;
                s.lag_seconds = lag_since(None);
            });
            return Ok(());
        };
        let wanted: Vec<&StoredEvent> = events
            .iter()
            .filter(|event| to_ship(event, peer) || (api.is_some() && is_api_event(event, peer)))
            .filter(|event| !already_confirmed(confirmed, event) && !position.beyond.contains(&event.seq))
            .collect();
        let oldest_ms = wanted.first().map(|event| event.at_ms);
        archive.replication().update(&peer.name, |s| {
            s.head = s.head.max(last);
            s.pending_instances = wanted.len() as u64 + held;
            s.lag_seconds = lag_since(oldest_ms);
        });
        let (shipped_to, outcome) = ship_in_order(archive, peer, api, &wanted, position).await;
        // Everything before the first instance not confirmed is done.
        let done = match (&outcome, shipped_to) {
            (Ok(()), _) => last,
            (Err(_), Some(seq)) => seq,
            (Err(_), None) => wanted.first().map_or(last, |event| event.seq - 1),
        };
        if done > cursor {
            cursor = done;
            position.seq = cursor;
            position.beyond.retain(|seq| *seq > cursor);
            // Saved when something was shipped, and otherwise now and then:
            // the journal also holds queries, and skipping them again after
            // a restart costs less than a catalog write per round.
            if shipped_to.is_some() || cursor - position.saved >= SAVE_EVERY {
                position.save(archive, &cursor_key).await?;
            }
            archive.replication().update(&peer.name, |s| s.cursor = cursor);
        }
        outcome?;
        if events.len() < BATCH {
            return Ok(());
        }
    }
}

/// Whether a synchronous store already delivered this event's instance
/// (forgotten once seen: the journal holds each store once).
fn already_confirmed(confirmed: Option<&Confirmed>, event: &StoredEvent) -> bool {
    let (Some(confirmed), Some(uid)) = (confirmed, event.sop_uid.as_deref()) else { return false };
    confirmed.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(uid)
}

/// An instance stored here that the peer did not send us.
fn to_ship(event: &StoredEvent, peer: &Peer) -> bool {
    event.kind == STORED && event.sop_uid.is_some() && event.origin.actor != peer.ae_title
}

/// A change passed on through the peer's REST API: a removal or a correction made here.
fn is_api_event(event: &StoredEvent, peer: &Peer) -> bool {
    removals::to_remove(event, peer) || corrections::to_pass_on(event, peer)
}

/// Ship `events` in journal order: the stores between two removals with
/// [`ship`], each removal once everything before it is confirmed (a study
/// stored, then removed, must not be stored there after its removal).
/// Corrections need no order: each is passed on, or held for a later retry,
/// without holding back what follows it.
/// Returns the sequence number up to which every event is confirmed.
async fn ship_in_order(
    archive: &Archive,
    peer: &Peer,
    api: Option<&VerifyPeer>,
    events: &[&StoredEvent],
    position: &mut Cursor,
) -> (Option<i64>, Result<(), String>) {
    let mut outcome = Ok(());
    for segment in events.split_inclusive(|event| event.kind == removals::REMOVED) {
        let (corrections, stores): (Vec<&StoredEvent>, Vec<&StoredEvent>) =
            segment.iter().partition(|event| event.kind == CORRECTED);
        if let Some(api) = api {
            for correction in corrections {
                position.held.pass_on_or_hold(archive, api, correction).await;
                position.beyond.insert(correction.seq);
                archive
                    .replication()
                    .update(&peer.name, |s| s.pending_instances = s.pending_instances.saturating_sub(1));
            }
        }
        let (removal, stores) = match stores.split_last() {
            Some((last, stores)) if last.kind == removals::REMOVED => (Some(*last), stores),
            _ => (None, &stores[..]),
        };
        let (_, shipped) = ship(archive, peer, stores, &mut position.beyond).await;
        if shipped.is_err() {
            outcome = shipped;
            break;
        }
        let (Some(removal), Some(api)) = (removal, api) else { continue };
        if let Err(error) = removals::pass_on(api, removal).await {
            outcome = Err(error);
            break;
        }
        position.beyond.insert(removal.seq);
        archive.replication().update(&peer.name, |s| s.pending_instances = s.pending_instances.saturating_sub(1));
    }
    let done = events.iter().take_while(|event| position.beyond.contains(&event.seq)).last().map(|event| event.seq);
    (done, outcome)
}

/// Send the instances of `events` over up to [`LANES`] associations at once
/// (the peer's group commit then shares its disk flushes between them), each
/// lane in journal order. Returns the sequence number up to which every
/// event is confirmed (or needs nothing), and how it ended; adds every
/// confirmed event to `all_confirmed`.
async fn ship(
    archive: &Archive,
    peer: &Peer,
    events: &[&StoredEvent],
    all_confirmed: &mut HashSet<i64>,
) -> (Option<i64>, Result<(), String>) {
    if events.is_empty() {
        return (None, Ok(()));
    }
    let uids: Vec<String> = events.iter().filter_map(|event| event.sop_uid.clone()).collect();
    let instances = match archive.instances_by_sop_uid(uids).await {
        Ok(instances) => instances,
        Err(error) => return (None, Err(error.to_string())),
    };
    let by_uid: HashMap<&str, &StoredInstance> =
        instances.iter().map(|instance| (instance.sop_uid.as_str(), instance)).collect();
    // Small batches go over one association; a backlog over several.
    let lanes = events.len().div_ceil(LANE_MIN_EVENTS).clamp(1, LANES);
    let lane_events: Vec<Vec<&StoredEvent>> =
        (0..lanes).map(|lane| events.iter().skip(lane).step_by(lanes).copied().collect()).collect();
    let outcomes =
        futures_util::future::join_all(lane_events.iter().map(|lane| ship_lane(archive, peer, lane, &by_uid))).await;
    let mut confirmed = HashSet::new();
    let mut result = Ok(());
    for (lane_confirmed, lane_result) in outcomes {
        confirmed.extend(lane_confirmed);
        if result.is_ok() {
            result = lane_result;
        }
    }
    // The cursor may move only over a prefix with nothing missing.
    let done = events.iter().take_while(|event| confirmed.contains(&event.seq)).last().map(|event| event.seq);
    all_confirmed.extend(confirmed);
    (done, result)
}

/// One lane of [`ship`]: its events in order over one association; returns
/// the sequence numbers confirmed and how it ended.
async fn ship_lane(
    archive: &Archive,
    peer: &Peer,
    events: &[&StoredEvent],
    by_uid: &HashMap<&str, &StoredInstance>,
) -> (Vec<i64>, Result<(), String>) {
    let mut confirmed = Vec::new();
    let lane_instances: Vec<StoredInstance> = events
        .iter()
        .filter_map(|event| {
            event.sop_uid.as_deref().and_then(|uid| by_uid.get(uid)).map(|instance| (*instance).clone())
        })
        .collect();
    if lane_instances.is_empty() {
        // Removed since: nothing to send.
        return (events.iter().map(|event| event.seq).collect(), Ok(()));
    }
    let mut client = match connect(peer, &lane_instances).await {
        Ok(client) => client,
        Err(error) => return (confirmed, Err(error)),
    };
    let mut result = Ok(());
    for event in events {
        let Some(instance) = event.sop_uid.as_deref().and_then(|uid| by_uid.get(uid)) else {
            confirmed.push(event.seq);
            continue;
        };
        if !instance.settled {
            result = Err(format!("{} is not yet durable here", instance.sop_uid));
            break;
        }
        match send(archive, &mut client, instance).await {
            Ok(answer) => {
                if answer == status::WARNING_ELEMENTS_DISCARDED {
                    // The peer holds other bytes under this UID and kept them.
                    tracing::warn!(peer = %peer.name, sop = %instance.sop_uid, "peer kept a different instance with this UID");
                    archive.replication().update(&peer.name, |s| {
                        s.last_error = Some(format!("conflict: the peer keeps other bytes for {}", instance.sop_uid));
                    });
                }
                confirmed.push(event.seq);
                archive.replication().update(&peer.name, |s| {
                    s.shipped += 1;
                    s.last_shipped_ms = Some(now_ms());
                    s.pending_instances = s.pending_instances.saturating_sub(1);
                });
            }
            Err(error) => {
                result = Err(error);
                break;
            }
        }
    }
    match result {
        Ok(()) => {
            let _ = client.release().await;
        }
        Err(_) => client.abort().await,
    }
    (confirmed, result)
}

/// Propose every (SOP class, stored transfer syntax) pair of the batch.
async fn connect(peer: &Peer, instances: &[StoredInstance]) -> Result<Client, String> {
    let pairs: BTreeSet<(String, String)> =
        instances.iter().map(|instance| (instance.sop_class.clone(), instance.transfer_syntax.clone())).collect();
    connect_pairs(peer, &pairs).await
}

async fn connect_pairs(peer: &Peer, pairs: &BTreeSet<(String, String)>) -> Result<Client, String> {
    let mut proposed: Vec<ProposedContext> =
        pairs.iter().map(|(class, syntax)| ProposedContext::new(class, &[syntax])).collect();
    proposed.truncate(128);
    if proposed.is_empty() {
        proposed.push(ProposedContext::new(haneul_dimse::sop::VERIFICATION, &[ts::IMPLICIT_VR_LITTLE_ENDIAN]));
    }
    let params = RequestParams {
        calling_ae: peer.calling_ae.clone(),
        called_ae: peer.ae_title.clone(),
        max_pdu_length: peer.max_pdu_length,
        timeout: peer.timeout,
        tls: peer.tls.as_ref().map(PeerTls::client_tls).transpose()?,
    };
    Client::connect(&peer.address(), &params, &proposed).await.map_err(|error| format!("association: {error}"))
}

/// C-STORE one instance as stored; returns the peer's success or warning status.
async fn send(archive: &Archive, client: &mut Client, instance: &StoredInstance) -> Result<u16, String> {
    let context = client
        .info()
        .find_context(&instance.sop_class, Some(&instance.transfer_syntax))
        .map(|context| context.id)
        .ok_or_else(|| {
            format!("the peer accepts {} in {} for no context", instance.sop_class, instance.transfer_syntax)
        })?;
    let file = archive.open_instance(instance).await.map_err(|error| error.to_string())?;
    let offset = instance.dataset_offset;
    let length = instance.blob.size.saturating_sub(offset);
    let response = client
        .store(context, &instance.sop_class, &instance.sop_uid, StoreData::File { file, offset, length }, None)
        .await
        .map_err(|error| format!("C-STORE of {}: {error}", instance.sop_uid))?;
    let answer = response.status().unwrap_or(status::PROCESSING_FAILURE);
    if status::is_success_or_warning(answer) {
        Ok(answer)
    } else {
        Err(format!("the peer refused {} with status {answer:04X}", instance.sop_uid))
    }
}

/// A peer in synchronous mode: every store here waits for it
/// ([`haneul_core::replication::SyncReplica`]). One association is kept open
/// and reused; stores to the peer go one at a time.
pub struct SyncPeer {
    peer: Peer,
    on_failure: SyncFailure,
    association: tokio::sync::Mutex<Option<Open>>,
    /// Instances this peer confirmed synchronously, so that the journal
    /// shipper (which catches up after fallbacks) does not send them again.
    confirmed: Arc<std::sync::Mutex<HashSet<String>>>,
}

/// An open association and the (SOP class, transfer syntax) pairs it was proposed.
struct Open {
    client: Client,
    pairs: BTreeSet<(String, String)>,
}

/// Most confirmations remembered for the journal shipper.
const MAX_CONFIRMED: usize = 100_000;

impl SyncPeer {
    pub fn new(peer: Peer, on_failure: SyncFailure) -> SyncPeer {
        SyncPeer { peer, on_failure, association: tokio::sync::Mutex::new(None), confirmed: Arc::default() }
    }

    /// What the journal shipper of this peer may skip.
    pub fn confirmed(&self) -> Arc<std::sync::Mutex<HashSet<String>>> {
        Arc::clone(&self.confirmed)
    }

    async fn store(&self, archive: &Archive, instance: &StoredInstance) -> Result<u16, String> {
        let mut open = self.association.lock().await;
        let pair = (instance.sop_class.clone(), instance.transfer_syntax.clone());
        // Reuse the association unless it lacks a context for this pair; a
        // failure on a reused one (the peer closed it when idle) gets one
        // more try on a fresh association.
        for attempt in 0..2 {
            let usable = open.as_ref().is_some_and(|open| open.pairs.contains(&pair));
            if !usable {
                let mut pairs = open.take().map(|old| old.pairs).unwrap_or_default();
                pairs.insert(pair.clone());
                let client = connect_pairs(&self.peer, &pairs).await?;
                *open = Some(Open { client, pairs });
            }
            let Some(current) = open.as_mut() else { continue };
            let sent = tokio::time::timeout(self.peer.timeout, send(archive, &mut current.client, instance)).await;
            match sent {
                Ok(Ok(status)) => return Ok(status),
                Ok(Err(error)) if error.starts_with("the peer refused") => return Err(error),
                Ok(Err(error)) if attempt == 1 => {
                    *open = None;
                    return Err(error);
                }
                Err(_) => {
                    *open = None;
                    return Err(format!("no answer within {} s", self.peer.timeout.as_secs()));
                }
                Ok(Err(_)) => *open = None,
            }
        }
        Err("could not store on the peer".into())
    }
}

impl SyncReplica for SyncPeer {
    fn name(&self) -> &str {
        &self.peer.name
    }

    fn on_failure(&self) -> SyncFailure {
        self.on_failure
    }

    fn confirm<'a>(&'a self, archive: &'a Archive, instance: StoredInstance) -> ReplicaFuture<'a> {
        Box::pin(async move {
            let result = self.store(archive, &instance).await;
            match &result {
                Ok(_) => {
                    let mut confirmed = self.confirmed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    if confirmed.len() < MAX_CONFIRMED {
                        confirmed.insert(instance.sop_uid.clone());
                    }
                    drop(confirmed);
                    archive.replication().update(&self.peer.name, |s| {
                        s.shipped += 1;
                        s.last_shipped_ms = Some(now_ms());
                    });
                }
                Err(error) => archive.replication().update(&self.peer.name, |s| {
                    s.failures += 1;
                    s.last_error = Some(error.clone());
                }),
            }
            result.map(|_| ())
        })
    }
}

/// A peer named `b` with this AE title, which this node (`SITEA`) calls; nothing listens at its address.
#[cfg(test)]
pub(crate) fn test_peer(ae_title: &str) -> Peer {
    Peer {
        name: "b".into(),
        ae_title: ae_title.into(),
        host: "127.0.0.1".into(),
        port: 1,
        calling_ae: "SITEA".into(),
        max_pdu_length: 16384,
        timeout: Duration::from_secs(1),
        tls: None,
    }
}

/// A journal event of this kind with this detail, as the replicator reads it.
#[cfg(test)]
pub(crate) fn test_event(kind: &str, detail: serde_json::Value) -> StoredEvent {
    StoredEvent {
        seq: 7,
        at_ms: 0,
        kind: kind.into(),
        origin: Default::default(),
        patient_id: None,
        study_uid: None,
        series_uid: None,
        sop_uid: None,
        detail,
    }
}
