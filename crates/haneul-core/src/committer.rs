//! Group commit: one thread owns catalog writes and commits whatever has
//! queued up while the previous commit was being made durable. Under load,
//! many associations share each fsync of the catalog; alone, an instance
//! pays one commit.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use haneul_catalog::{Catalog, CatalogError, CommitOutcome, DuplicatePolicy, Event, NewInstance};
use haneul_storage::BlobStore;
use tokio::sync::oneshot;

use crate::metrics::Metrics;

type CommitReply = oneshot::Sender<Result<CommitOutcome, String>>;

enum Job {
    Instance { item: Box<NewInstance>, reply: CommitReply },
    Events(Vec<Event>),
    Flush(oneshot::Sender<()>),
}

pub(crate) struct Committer {
    sender: Sender<Job>,
}

/// Journal events wait at most this long for an instance commit to ride along with.
const EVENT_LINGER: Duration = Duration::from_millis(50);

impl Committer {
    pub(crate) fn start(
        catalog: Arc<dyn Catalog>,
        blobs: BlobStore,
        policy: DuplicatePolicy,
        max_batch: usize,
        metrics: Arc<Metrics>,
    ) -> Committer {
        let (sender, receiver) = mpsc::channel();
        let worker = Worker { catalog, blobs, policy, max_batch: max_batch.max(1), metrics };
        std::thread::Builder::new()
            .name("haneul-committer".into())
            .spawn(move || worker.run(receiver))
            .expect("spawning the committer thread at start-up");
        Committer { sender }
    }

    /// Record one durably written instance; resolves once the catalog commit is durable.
    pub(crate) async fn commit(&self, item: NewInstance) -> Result<CommitOutcome, String> {
        let (reply, response) = oneshot::channel();
        self.sender
            .send(Job::Instance { item: Box::new(item), reply })
            .map_err(|_| "committer has stopped".to_string())?;
        response.await.map_err(|_| "committer dropped the request".to_string())?
    }

    pub(crate) fn append_events(&self, events: Vec<Event>) {
        if self.sender.send(Job::Events(events)).is_err() {
            tracing::error!("committer has stopped; journal events lost");
        }
    }

    pub(crate) async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.sender.send(Job::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

struct Worker {
    catalog: Arc<dyn Catalog>,
    blobs: BlobStore,
    policy: DuplicatePolicy,
    max_batch: usize,
    metrics: Arc<Metrics>,
}

impl Worker {
    fn run(self, receiver: Receiver<Job>) {
        let mut batch = Batch::default();
        // When only journal events wait, they linger until this deadline for
        // an instance commit to share a transaction with.
        let mut events_deadline: Option<Instant> = None;
        loop {
            let received = match events_deadline {
                None => receiver.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(deadline) => receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())),
            };
            let linger_over = match received {
                Ok(job) => {
                    batch.absorb(job);
                    events_deadline.is_some_and(|deadline| Instant::now() >= deadline)
                }
                Err(RecvTimeoutError::Timeout) => true,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            while batch.items.len() < self.max_batch {
                let Ok(job) = receiver.try_recv() else { break };
                batch.absorb(job);
            }
            let due = !batch.items.is_empty() || !batch.flushes.is_empty() || batch.events.len() >= 1024 || linger_over;
            if due {
                self.commit(&mut batch);
                events_deadline = None;
            } else if !batch.events.is_empty() && events_deadline.is_none() {
                events_deadline = Some(Instant::now() + EVENT_LINGER);
            }
        }
        // Channel closed: commit what is left so no acknowledged work is lost.
        self.commit(&mut batch);
    }

    fn commit(&self, batch: &mut Batch) {
        if !batch.items.is_empty() || !batch.events.is_empty() {
            let scan_from = self.blobs.oldest_unsettled_shard();
            let result: Result<Vec<CommitOutcome>, CatalogError> =
                self.catalog.commit_instances(&batch.items, self.policy, &batch.events, &scan_from);
            match result {
                Ok(outcomes) => {
                    self.metrics.commit_batches.inc();
                    self.metrics.committed_instances.add(batch.items.len() as u64);
                    for (reply, outcome) in batch.replies.drain(..).zip(outcomes) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Err(error) => {
                    tracing::error!(%error, batch = batch.items.len(), events = batch.events.len(), "catalog commit failed");
                    for reply in batch.replies.drain(..) {
                        let _ = reply.send(Err(error.to_string()));
                    }
                }
            }
            batch.items.clear();
            batch.events.clear();
        }
        for done in batch.flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

#[derive(Default)]
struct Batch {
    items: Vec<NewInstance>,
    replies: Vec<CommitReply>,
    events: Vec<Event>,
    flushes: Vec<oneshot::Sender<()>>,
}

impl Batch {
    fn absorb(&mut self, job: Job) {
        match job {
            Job::Instance { item, reply } => {
                self.items.push(*item);
                self.replies.push(reply);
            }
            Job::Events(mut events) => self.events.append(&mut events),
            Job::Flush(done) => self.flushes.push(done),
        }
    }
}
