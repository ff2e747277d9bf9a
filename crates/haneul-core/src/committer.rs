//! Group commit of catalog writes.
//!
//! Ingest threads call [`Committer::commit_blocking`] once their blob is
//! durable. The first one to find no commit running becomes the *leader*: it
//! commits every instance queued at that moment (plus pending journal
//! events) in one transaction, then hands results back. Threads that arrive
//! while a commit runs wait and are taken by the next leader, so under load
//! many associations share each fsync of the catalog, and a lone association
//! commits on its own thread with no hand-off at all.
//!
//! Journal events that arrive while no instance is being stored are
//! committed by a background thread after a short linger.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use haneul_catalog::{Catalog, CommitBatch, CommitOutcome, DuplicatePolicy, Event, NewInstance, Watermark};
use haneul_storage::BlobStore;

use crate::metrics::Metrics;

/// Journal events wait at most this long for an instance commit to ride along with.
const EVENT_LINGER: Duration = Duration::from_millis(50);

type CommitResult = Result<CommitOutcome, String>;

pub(crate) struct Committer {
    shared: Arc<Shared>,
    /// Joined on drop: the thread holds the catalog, which must be closed
    /// when the archive is.
    journal_thread: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    catalog: Arc<dyn Catalog>,
    blobs: BlobStore,
    /// The setting holding this node's recovery watermark.
    scan_key: String,
    policy: DuplicatePolicy,
    max_batch: usize,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    /// Signalled when a commit finishes (results ready, leadership free).
    finished: Condvar,
    /// Signalled when journal events arrive.
    events_arrived: Condvar,
}

#[derive(Default)]
struct State {
    queue: Vec<(u64, NewInstance)>,
    events: Vec<Event>,
    /// Blobs committed as unsettled whose fsync has finished since.
    settled: Vec<String>,
    /// Blobs known durable whose settling is not yet committed.
    durable_unsettled: std::collections::HashSet<String>,
    results: HashMap<u64, CommitResult>,
    next_ticket: u64,
    leading: bool,
    /// Recovery watermark last written, to skip rewriting an unchanged value.
    last_scan_from: Option<String>,
    closed: bool,
}

impl State {
    /// Journal events or settled blobs wait to be committed.
    fn has_background_work(&self) -> bool {
        !self.events.is_empty() || !self.settled.is_empty()
    }
}

fn lock(mutex: &Mutex<State>) -> MutexGuard<'_, State> {
    // Leader code never panics while holding the lock; recover the guard anyway.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Committer {
    pub(crate) fn start(
        catalog: Arc<dyn Catalog>,
        blobs: BlobStore,
        policy: DuplicatePolicy,
        max_batch: usize,
        metrics: Arc<Metrics>,
    ) -> Committer {
        let shared = Arc::new(Shared {
            catalog,
            scan_key: crate::recovery::scan_from_key(&blobs),
            blobs,
            policy,
            max_batch: max_batch.max(1),
            metrics,
            state: Mutex::new(State::default()),
            finished: Condvar::new(),
            events_arrived: Condvar::new(),
        });
        let flusher = Arc::clone(&shared);
        let journal_thread = std::thread::Builder::new()
            .name("haneul-journal".into())
            .spawn(move || flusher.flush_events_forever())
            .expect("spawning the journal thread at start-up");
        Committer { shared, journal_thread: Some(journal_thread) }
    }

    /// Record one durably written instance; returns once the catalog commit
    /// holding it is durable. Blocks: call from a blocking thread.
    pub(crate) fn commit_blocking(&self, item: NewInstance) -> CommitResult {
        let shared = &self.shared;
        let mut state = lock(&shared.state);
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queue.push((ticket, item));
        loop {
            if let Some(result) = state.results.remove(&ticket) {
                return result;
            }
            if !state.leading {
                state = shared.lead(state);
                continue;
            }
            state = shared.finished.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// Queue journal events; they are committed with the next batch.
    pub(crate) fn append_events(&self, events: Vec<Event>) {
        let mut state = lock(&self.shared.state);
        state.events.extend(events);
        drop(state);
        self.shared.events_arrived.notify_one();
    }

    /// Note that a blob committed as unsettled is now durable; recorded with the next commit.
    pub(crate) fn settle(&self, path: String) {
        let mut state = lock(&self.shared.state);
        state.durable_unsettled.insert(path.clone());
        state.settled.push(path);
        drop(state);
        self.shared.events_arrived.notify_one();
    }

    /// Blobs that are durable although the catalog may still list them as unsettled.
    pub(crate) fn durable_unsettled(&self) -> std::collections::HashSet<String> {
        lock(&self.shared.state).durable_unsettled.clone()
    }

    /// Commit everything queued so far (used at shutdown and by tests).
    pub(crate) async fn flush(&self) {
        let shared = Arc::clone(&self.shared);
        let _ = tokio::task::spawn_blocking(move || shared.flush_now()).await;
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.shared.flush_now();
        lock(&self.shared.state).closed = true;
        self.shared.events_arrived.notify_all();
        if let Some(thread) = self.journal_thread.take() {
            let _ = thread.join();
        }
    }
}

impl Shared {
    /// Commit one batch as leader. Takes and returns the state lock.
    fn lead<'a>(&'a self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        state.leading = true;
        let take = state.queue.len().min(self.max_batch);
        let batch: Vec<(u64, NewInstance)> = state.queue.drain(..take).collect();
        let events = std::mem::take(&mut state.events);
        let settled = std::mem::take(&mut state.settled);
        let scan_from = self.blobs.oldest_unsettled_shard();
        let write_scan_from = state.last_scan_from.as_deref() != Some(scan_from.as_str());
        drop(state);

        let (tickets, items): (Vec<u64>, Vec<NewInstance>) = batch.into_iter().unzip();
        let nothing = items.is_empty() && events.is_empty() && settled.is_empty();
        let result = if nothing {
            Ok(Vec::new())
        } else {
            self.catalog.commit(&CommitBatch {
                instances: &items,
                policy: self.policy,
                events: &events,
                settled: &settled,
                scan_from: write_scan_from.then_some(Watermark { key: &self.scan_key, shard: &scan_from }),
            })
        };

        let mut state = lock(&self.state);
        match result {
            Ok(outcomes) => {
                for path in &settled {
                    state.durable_unsettled.remove(path);
                }
                if write_scan_from && !nothing {
                    state.last_scan_from = Some(scan_from);
                }
                if !items.is_empty() {
                    self.metrics.commit_batches.inc();
                    self.metrics.committed_instances.add(items.len() as u64);
                }
                for (ticket, outcome) in tickets.into_iter().zip(outcomes) {
                    state.results.insert(ticket, Ok(outcome));
                }
            }
            Err(error) => {
                tracing::error!(%error, batch = items.len(), events = events.len(), "catalog commit failed");
                // Settling is only bookkeeping; keep it for the next commit.
                state.settled.extend(settled);
                for ticket in tickets {
                    state.results.insert(ticket, Err(error.to_string()));
                }
            }
        }
        state.leading = false;
        self.finished.notify_all();
        state
    }

    /// Lead commits until nothing is queued.
    fn flush_now(&self) {
        let mut state = lock(&self.state);
        loop {
            if state.queue.is_empty() && state.events.is_empty() && state.settled.is_empty() && !state.leading {
                return;
            }
            if state.leading {
                state = self.finished.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
                continue;
            }
            state = self.lead(state);
        }
    }

    fn flush_events_forever(&self) {
        let mut state = lock(&self.state);
        loop {
            if state.closed {
                return;
            }
            if !state.has_background_work() {
                state = self.events_arrived.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
                continue;
            }
            // Give instance commits a chance to carry the events first.
            let deadline = Instant::now() + EVENT_LINGER;
            while state.has_background_work() && !state.closed {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                state =
                    self.events_arrived.wait_timeout(state, left).map(|(s, _)| s).unwrap_or_else(|p| p.into_inner().0);
            }
            if !state.has_background_work() || state.leading {
                continue;
            }
            state = self.lead(state);
        }
    }
}
