//! Anti-entropy: compare what this node and a peer hold through their digest
//! trees ([`haneul_core::digest_tree`]), and repair the differences.
//!
//! The roots first (one request: equal archives are done), then the
//! differing buckets' study listings, then the differing studies' instance
//! versions. Repair sends the versions the peer lacks by C-STORE, as the
//! shipper does (same calling AE, so the peer takes them as coming from its
//! peer and does not send them back), and takes the versions this node lacks
//! from the peer's API, ingesting them with the peer's AE title as origin
//! (so the journal shipper does not send them back either, and a different
//! version of an instance held here is handled as one from the peer). The
//! repaired studies are then compared again: what still differs is counted
//! and raises the peer's alarm. The last report per peer is in its status and
//! kept as the catalog setting `replication.<name>.verify`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use haneul_core::digest_tree::{BucketListing, DigestTree, Hex, StudyVersions, BUCKETS};
use haneul_core::replication::{PeerVerifier, ReplicationStatus, VerifyError, VerifyFuture, VerifyReport};
use haneul_core::{Archive, CorrectionLevel, CorrectionRecord, HeldVersion, IngestFormat, Origin, StoredInstance};
use http_body_util::BodyExt;
use tokio::sync::watch;

use crate::http::HttpClient;
use crate::{connect_pairs, now_ms, send, Peer};

/// Failure messages kept in a report.
const MAX_ERRORS: usize = 20;
/// Registers sent to the peer per request (it takes up to 10,000).
const REGISTERS_PER_REQUEST: usize = 1_000;
/// Longest wait for one answer of the peer's API.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A peer as verify needs it: its DIMSE side, and its HTTP API.
#[derive(Debug, Clone)]
pub struct VerifyPeer {
    pub peer: Peer,
    /// The peer's HTTP base URL (`[[peer]] url`).
    pub url: Option<String>,
    /// A file holding an API token of the peer (`[[peer]] token_file`).
    pub token_file: Option<PathBuf>,
    /// CA certificates for an https `url` (`[[peer]] ca_file`).
    pub ca_file: Option<PathBuf>,
    /// Our client certificate, for peers that ask for one (`[[peer]] cert_file`, `key_file`).
    pub identity: Option<haneul_tls::ClientIdentity>,
    /// How the configuration names this peer's table, for errors (`peer[0]`).
    pub config_key: String,
}

/// Runs verifies, one at a time per peer.
pub struct Verifier {
    archive: Arc<Archive>,
    peers: BTreeMap<String, (VerifyPeer, tokio::sync::Mutex<()>)>,
}

impl Verifier {
    pub fn new(archive: Arc<Archive>, peers: Vec<VerifyPeer>) -> Arc<Verifier> {
        let peers =
            peers.into_iter().map(|peer| (peer.peer.name.clone(), (peer, tokio::sync::Mutex::new(())))).collect();
        Arc::new(Verifier { archive, peers })
    }

    /// Put the last saved report of every peer back into its status.
    pub async fn restore_reports(&self) {
        for name in self.peers.keys() {
            let key = ReplicationStatus::verify_setting_key(name);
            match self.archive.setting(&key).await {
                Ok(Some(text)) => match serde_json::from_str::<VerifyReport>(&text) {
                    Ok(report) => self.archive.replication().record_verify(&report),
                    Err(error) => tracing::warn!(peer = %name, %error, "the saved verify report is unreadable"),
                },
                Ok(None) => {}
                Err(error) => tracing::warn!(peer = %name, %error, "cannot read the saved verify report"),
            }
        }
    }

    /// Compare with the peer `name` and, with `repair`, make both hold the same versions.
    pub async fn verify(&self, name: &str, repair: bool) -> Result<VerifyReport, VerifyError> {
        let Some((peer, running)) = self.peers.get(name) else {
            return Err(VerifyError::UnknownPeer(name.to_string()));
        };
        let client = http_client(peer)?;
        // One at a time per peer: a periodic run and a requested one would
        // otherwise repair the same differences twice.
        let _running = running.lock().await;
        let started = Instant::now();
        let mut run =
            Run { archive: &self.archive, peer: &peer.peer, client: &client, report: VerifyReport::default() };
        run.report.peer = name.to_string();
        run.report.repair = repair;
        let failed = |detail: String| VerifyError::Failed { peer: name.to_string(), detail };
        let outcome = run.compare_and_repair(repair).await;
        let mut report = run.report;
        if let Err(detail) = outcome {
            tracing::warn!(peer = %name, error = %detail, "verify failed");
            self.archive.replication().update(name, |status| status.last_error = Some(format!("verify: {detail}")));
            return Err(failed(detail));
        }
        report.duration_seconds = started.elapsed().as_secs_f64();
        report.finished_ms = now_ms();
        report.finished_at =
            time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        self.archive.replication().record_verify(&report);
        let saved = serde_json::to_string(&report).unwrap_or_default();
        if let Err(error) = self.archive.set_setting(&ReplicationStatus::verify_setting_key(name), &saved).await {
            tracing::warn!(peer = %name, %error, "cannot save the verify report");
        }
        if report.equal {
            tracing::info!(peer = %name, round_trips = report.round_trips, pushed = report.pushed, pulled = report.pulled, "verify: the archives hold the same instances");
        } else {
            tracing::error!(peer = %name, remaining = report.remaining, failures = report.failures, "verify: differences with the peer remain");
        }
        Ok(report)
    }
}

impl PeerVerifier for Verifier {
    fn verify<'a>(&'a self, peer: &'a str, repair: bool) -> VerifyFuture<'a> {
        Box::pin(Verifier::verify(self, peer, repair))
    }
}

/// Verify `name` every `interval` (the first time one interval after start,
/// once the journal had time to catch up) while this node holds the peer's
/// `lease`, until `stop` turns true.
pub async fn verify_periodically(
    verifier: Arc<Verifier>,
    name: String,
    interval: Duration,
    lease: watch::Receiver<haneul_core::lease::LeaseState>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        if !lease.borrow().held {
            tracing::debug!(peer = %name, "periodic verify left to the node holding the peer's lease");
            continue;
        }
        // Logged and kept in the status by `verify` itself.
        let _ = verifier.verify(&name, true).await;
    }
}

pub(crate) fn http_client(peer: &VerifyPeer) -> Result<HttpClient, VerifyError> {
    let not_configured = |detail: String| VerifyError::NotConfigured { peer: peer.peer.name.clone(), detail };
    let key = &peer.config_key;
    let Some(url) = &peer.url else {
        return Err(not_configured(format!("set {key}.url, the peer's HTTP address (http:// or https://)")));
    };
    let Some(token_file) = &peer.token_file else {
        return Err(not_configured(format!("set {key}.token_file, a file holding an API token of the peer")));
    };
    // Read at every run, so that a replaced token needs no restart.
    let token = std::fs::read_to_string(token_file)
        .map_err(|error| not_configured(format!("{key}.token_file: cannot read {}: {error}", token_file.display())))?;
    let token = token.trim();
    if !token.starts_with("hnl_") {
        return Err(not_configured(format!("{key}.token_file: {} holds no hnl_ API token", token_file.display())));
    }
    HttpClient::new(url, token, peer.ca_file.as_deref(), peer.identity.as_ref())
        .map_err(|error| not_configured(format!("{key}.url: {error}")))
}

/// One verify under way.
struct Run<'a> {
    archive: &'a Arc<Archive>,
    peer: &'a Peer,
    client: &'a HttpClient,
    report: VerifyReport,
}

/// `GET /api/replication/corrections`.
#[derive(Debug, serde::Deserialize)]
struct RegisterListing {
    registers: Vec<CorrectionRecord>,
}

/// How the correction registers of two nodes differ.
#[derive(Debug, Default)]
struct RegisterDifferences {
    /// Only we hold them, or ours are later.
    push: Vec<CorrectionRecord>,
    /// Only the peer holds them, or its are later.
    pull: Vec<CorrectionRecord>,
    /// Held on both sides with the same clock, origin and value, yet
    /// otherwise different: no rule says which to keep, so they stay (ours listed).
    unordered: Vec<CorrectionRecord>,
}

/// What differs in one study: versions only we hold, versions only the peer holds.
#[derive(Debug, Default)]
struct StudyDifference {
    push: Vec<(String, Hex)>,
    pull: Vec<(String, Hex)>,
    instances: u64,
}

impl Run<'_> {
    async fn get<T: serde::de::DeserializeOwned>(&mut self, path: &str) -> Result<Option<T>, String> {
        self.report.round_trips += 1;
        self.client.get_json(path, REQUEST_TIMEOUT).await
    }

    fn failure(&mut self, error: String) {
        tracing::warn!(peer = %self.peer.name, %error, "verify could not repair a difference");
        self.report.failures += 1;
        if self.report.errors.len() < MAX_ERRORS {
            self.report.errors.push(error);
        }
    }

    async fn compare_and_repair(&mut self, repair: bool) -> Result<(), String> {
        let (local, _) = self.archive.digest_tree(Vec::new()).await.map_err(|error| error.to_string())?;
        let remote: DigestTree =
            self.get("/api/replication/tree").await?.ok_or("the peer has no /api/replication/tree")?;
        if remote.buckets.len() != BUCKETS {
            return Err(format!("the peer sent {} bucket digests, not {BUCKETS}", remote.buckets.len()));
        }
        self.report.local_studies = local.studies;
        self.report.local_instances = local.instances;
        self.report.peer_studies = remote.studies;
        self.report.peer_instances = remote.instances;
        // Nodes older than corrections send no registers digest: only their instances compare.
        let registers_differ = remote.registers.is_some_and(|theirs| local.registers != Some(theirs));
        if local.root == remote.root && !registers_differ {
            self.report.equal = true;
            self.report.equal_at_start = true;
            return Ok(());
        }
        if registers_differ {
            self.reconcile_registers(repair).await?;
        }
        if local.root != remote.root {
            self.compare_instances(repair, &local, &remote).await?;
        }
        self.report.equal = self.report.remaining == 0 && self.report.registers_remaining == 0;
        Ok(())
    }

    /// Make both nodes hold, for every corrected attribute, the later of
    /// their two registers (what the journal would have passed on, had no
    /// event been lost): ours go to the peer's `POST /api/corrections`, its
    /// are merged here, each as coming from the other so that neither sends
    /// them back. Then both lists are compared again.
    async fn reconcile_registers(&mut self, repair: bool) -> Result<(), String> {
        let RegisterDifferences { push, pull, unordered } = self.register_differences().await?;
        self.report.differing_registers = (push.len() + pull.len() + unordered.len()) as u64;
        self.report.registers_remaining = self.report.differing_registers;
        for register in unordered {
            let (level, key, attribute) = (register.level, &register.key, register.attribute());
            self.failure(format!("{level:?} {key}: neither node's register of {attribute} is later than the other's"));
        }
        if !repair {
            return Ok(());
        }
        for chunk in push.chunks(REGISTERS_PER_REQUEST) {
            self.report.round_trips += 1;
            let registers = serde_json::to_value(chunk).unwrap_or_default();
            match crate::corrections::send_registers(self.client, self.peer, &registers, REQUEST_TIMEOUT).await {
                Ok(()) => self.report.registers_pushed += chunk.len() as u64,
                Err(error) => self.failure(error),
            }
        }
        if !pull.is_empty() {
            let count = pull.len() as u64;
            let origin = self.peer_origin();
            match self.archive.merge_corrections(pull, &self.peer.ae_title, &origin).await {
                Ok(_) => self.report.registers_pulled += count,
                Err(error) => self.failure(format!("correction registers of the peer: {error}")),
            }
        }
        let left = self.register_differences().await?;
        self.report.registers_remaining = (left.push.len() + left.pull.len() + left.unordered.len()) as u64;
        Ok(())
    }

    async fn register_differences(&mut self) -> Result<RegisterDifferences, String> {
        let listing: RegisterListing =
            self.get("/api/replication/corrections").await?.ok_or("the peer has no /api/replication/corrections")?;
        let local = self.archive.correction_registers().await.map_err(|error| error.to_string())?;
        let keyed = |registers: Vec<CorrectionRecord>| -> BTreeMap<(CorrectionLevel, String, u32), CorrectionRecord> {
            registers
                .into_iter()
                .map(|register| ((register.level, register.key.clone(), register.tag), register))
                .collect()
        };
        let (mut ours, mut theirs) = (keyed(local), keyed(listing.registers));
        let mut differences = RegisterDifferences::default();
        let keys: BTreeSet<_> = ours.keys().chain(theirs.keys()).cloned().collect();
        for key in keys {
            match (ours.remove(&key), theirs.remove(&key)) {
                (Some(mine), Some(peers)) if mine.supersedes(&peers) => differences.push.push(mine),
                (Some(mine), Some(peers)) if peers.supersedes(&mine) => differences.pull.push(peers),
                (Some(mine), Some(peers)) if mine != peers => differences.unordered.push(mine),
                (Some(mine), None) => differences.push.push(mine),
                (None, Some(peers)) => differences.pull.push(peers),
                _ => {}
            }
        }
        Ok(differences)
    }

    /// Compare the instance versions of the buckets whose digests differ,
    /// and repair the differences with `repair`.
    async fn compare_instances(&mut self, repair: bool, local: &DigestTree, remote: &DigestTree) -> Result<(), String> {
        let buckets: Vec<u8> =
            (0..BUCKETS).filter(|b| local.buckets[*b] != remote.buckets[*b]).map(|b| b as u8).collect();
        let (_, local_listings) = self.archive.digest_tree(buckets.clone()).await.map_err(|error| error.to_string())?;
        let mut studies = BTreeSet::new();
        for (bucket, local_listing) in buckets.iter().zip(local_listings) {
            let remote_listing: BucketListing = self
                .get(&format!("/api/replication/tree/{bucket}"))
                .await?
                .ok_or_else(|| format!("the peer has no bucket {bucket}"))?;
            let ours: BTreeMap<&str, Hex> =
                local_listing.studies.iter().map(|study| (study.study_uid.as_str(), study.digest)).collect();
            let theirs: BTreeMap<&str, Hex> =
                remote_listing.studies.iter().map(|study| (study.study_uid.as_str(), study.digest)).collect();
            let all: BTreeSet<&str> = ours.keys().chain(theirs.keys()).copied().collect();
            self.report.studies_compared += all.len() as u64;
            studies.extend(all.into_iter().filter(|uid| ours.get(uid) != theirs.get(uid)).map(str::to_string));
        }
        let mut differences = Vec::new();
        for study in &studies {
            let difference = self.study_difference(study).await?;
            if difference.instances > 0 {
                self.report.differing_studies += 1;
                self.report.differing_instances += difference.instances;
                differences.push((study.clone(), difference));
            }
        }
        if !repair || differences.is_empty() {
            self.report.remaining = self.report.differing_instances;
            return Ok(());
        }
        let push: Vec<(String, Hex)> = differences.iter().flat_map(|(_, d)| d.push.iter().cloned()).collect();
        self.push(&push).await;
        for (study, difference) in &differences {
            for (sop, digest) in &difference.pull {
                match self.pull(study, sop, *digest).await {
                    Ok(()) => self.report.pulled += 1,
                    Err(error) => self.failure(error),
                }
            }
        }
        // What the repair left: the repaired studies compared again.
        for (study, _) in &differences {
            self.report.remaining += self.study_difference(study).await?.instances;
        }
        Ok(())
    }

    /// Compare one study's instance versions on both sides.
    async fn study_difference(&mut self, study: &str) -> Result<StudyDifference, String> {
        let local = self.archive.study_versions(study).await.map_err(|error| error.to_string())?;
        let remote: Option<StudyVersions> =
            self.get(&format!("/api/replication/studies/{}/digests", crate::http::escape(study))).await?;
        let empty = BTreeMap::new();
        let ours = local.as_ref().map_or(&empty, |versions| &versions.instances);
        let theirs = remote.as_ref().map_or(&empty, |versions| &versions.instances);
        let mut difference = StudyDifference::default();
        let sops: BTreeSet<&String> = ours.keys().chain(theirs.keys()).collect();
        for sop in sops {
            let mine: BTreeSet<Hex> = ours.get(sop).into_iter().flatten().copied().collect();
            let peers: BTreeSet<Hex> = theirs.get(sop).into_iter().flatten().copied().collect();
            if mine == peers {
                continue;
            }
            difference.instances += 1;
            difference.push.extend(mine.difference(&peers).map(|digest| (sop.clone(), *digest)));
            difference.pull.extend(peers.difference(&mine).map(|digest| (sop.clone(), *digest)));
        }
        Ok(difference)
    }

    /// Send versions the peer lacks over one association, as the shipper does.
    async fn push(&mut self, versions: &[(String, Hex)]) {
        let mut held: Vec<HeldVersion> = Vec::new();
        for (sop, digest) in versions {
            match self.archive.held_version(sop, digest.0).await {
                Ok(Some(version)) if !version.sop_class.is_empty() => held.push(version),
                Ok(Some(_)) => self.failure(format!("{sop}: the SOP class of version {digest} is not known here")),
                Ok(None) => self.failure(format!("{sop}: version {digest} is no longer held here")),
                Err(error) => self.failure(format!("{sop}: {error}")),
            }
        }
        if held.is_empty() {
            return;
        }
        let pairs: BTreeSet<(String, String)> =
            held.iter().map(|version| (version.sop_class.clone(), version.transfer_syntax.clone())).collect();
        let mut client = None;
        for version in &held {
            if client.is_none() {
                match connect_pairs(self.peer, &pairs).await {
                    Ok(connected) => client = Some(connected),
                    Err(error) => {
                        self.failure(format!("{}: {error}", version.sop_uid));
                        continue;
                    }
                }
            }
            let Some(association) = client.as_mut() else { continue };
            let instance = StoredInstance {
                pk: 0,
                sop_uid: version.sop_uid.clone(),
                sop_class: version.sop_class.clone(),
                transfer_syntax: version.transfer_syntax.clone(),
                study_uid: version.study_uid.clone(),
                series_uid: String::new(),
                blob: version.blob.clone(),
                dataset_offset: version.dataset_offset,
                settled: true,
                corrected: false,
            };
            match send(self.archive, association, &instance).await {
                Ok(_) => self.report.pushed += 1,
                Err(error) => {
                    // A refusal leaves the association usable; anything else
                    // gets a fresh one for the next instance.
                    if !error.starts_with("the peer refused") {
                        if let Some(broken) = client.take() {
                            broken.abort().await;
                        }
                    }
                    self.failure(error);
                }
            }
        }
        if let Some(association) = client {
            let _ = association.release().await;
        }
    }

    /// What is taken from the peer is recorded as coming from it: with its
    /// AE title, so that the journal shipper does not send it back.
    fn peer_origin(&self) -> Origin {
        Origin {
            actor: self.peer.ae_title.clone(),
            address: self.client.base_url(),
            session: format!("verify-{}", now_ms()),
            ..Origin::default()
        }
    }

    /// Take one version from the peer and ingest it here, as from the peer.
    async fn pull(&mut self, study: &str, sop: &str, digest: Hex) -> Result<(), String> {
        let path = format!("/api/replication/instances/{}/versions/{digest}", crate::http::escape(sop));
        self.report.round_trips += 1;
        let response = self.client.send(hyper::Method::GET, &path, REQUEST_TIMEOUT).await?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.into_body().collect().await.map(|body| body.to_bytes()).unwrap_or_default();
            return Err(crate::http::failure(&self.client.base_url(), &path, status, &body));
        }
        let origin = self.peer_origin();
        let format = IngestFormat::Part10 { expected_study_uid: Some(study.to_string()) };
        let mut ingest = self.archive.begin_ingest(format, origin).map_err(|error| format!("{sop}: {error}"))?;
        let mut body = response.into_body();
        loop {
            let frame = tokio::time::timeout(self.peer.timeout, body.frame())
                .await
                .map_err(|_| format!("{sop}: the peer stopped sending version {digest}"))?;
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|error| format!("{sop}: reading version {digest} failed: {error}"))?;
            if let Some(data) = frame.data_ref() {
                ingest.write(data).await.map_err(|error| format!("{sop}: {error}"))?;
            }
        }
        let stored = self.archive.finish_ingest(ingest).await.map_err(|error| format!("{sop}: {error}"))?;
        if !stored.outcome.keeps_new_blob() {
            return Err(format!(
                "{sop}: the peer's version {digest} was not kept here ({:?}); this node keeps its own",
                stored.outcome
            ));
        }
        Ok(())
    }
}
