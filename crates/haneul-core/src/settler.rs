//! Settling write-ahead instances in batches.
//!
//! An instance acknowledged with its bytes in the catalog commit (see
//! [`crate::ArchiveConfig::write_ahead_max_bytes`]) still needs its own file
//! made durable before the catalog can drop that copy. Nobody waits for it,
//! so files are gathered for a moment and made durable together: one flush
//! of the file system per batch instead of one per file, which leaves the
//! disk to the catalog commits that acknowledgements do wait for.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use haneul_catalog::BlobInfo;
use haneul_storage::BlobWriter;

use crate::Archive;

/// How long the first file of a batch waits for others to join it.
const LINGER: Duration = Duration::from_millis(20);
/// A batch this large is settled at once.
const FULL_BATCH: usize = 256;
/// Files waiting beyond this many: new instances wait for their own fsync
/// instead, which bounds open files and the copies kept in the catalog.
const MAX_WAITING: usize = 2048;

/// A file whose instance is acknowledged, its bytes committed with it.
pub(crate) struct Unsettled {
    pub writer: BlobWriter,
    pub blob: BlobInfo,
    pub sop_instance_uid: String,
}

#[derive(Default)]
pub(crate) struct Settler {
    state: Mutex<State>,
    /// Signalled when files arrive and when a batch is done.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    waiting: Vec<Unsettled>,
    /// A batch runner is lingering or settling.
    running: bool,
}

impl Settler {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn wait_timeout<'a>(&self, state: MutexGuard<'a, State>, timeout: Duration) -> MutexGuard<'a, State> {
        self.changed.wait_timeout(state, timeout).map(|(state, _)| state).unwrap_or_else(|p| p.into_inner().0)
    }

    /// Whether another file may wait to be settled.
    pub(crate) fn has_room(&self) -> bool {
        self.lock().waiting.len() < MAX_WAITING
    }
}

impl Archive {
    /// Queue an acknowledged write-ahead instance's file to be made durable
    /// with others, then settled in the catalog.
    pub(crate) fn settle_later(self: &Arc<Self>, unsettled: Unsettled) {
        let mut state = self.settler().lock();
        state.waiting.push(unsettled);
        if state.waiting.len() >= FULL_BATCH {
            self.settler().changed.notify_all();
        }
        if state.running {
            return;
        }
        state.running = true;
        drop(state);
        let archive = Arc::clone(self);
        // Blocking-pool threads run inside the runtime, so they can spawn more blocking work.
        tokio::runtime::Handle::current().spawn_blocking(move || archive.run_settler());
    }

    /// Settle batches until nothing waits.
    fn run_settler(&self) {
        let settler = self.settler();
        let mut state = settler.lock();
        loop {
            let deadline = Instant::now() + LINGER;
            while state.waiting.len() < FULL_BATCH {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                state = settler.wait_timeout(state, left);
            }
            let batch = std::mem::take(&mut state.waiting);
            if batch.is_empty() {
                state.running = false;
                settler.changed.notify_all();
                return;
            }
            drop(state);
            self.settle_batch(batch);
            state = settler.lock();
        }
    }

    /// Settle everything waiting now, and wait for a batch in progress (at shutdown).
    pub(crate) fn settle_waiting_now(&self) {
        let settler = self.settler();
        let mut state = settler.lock();
        loop {
            if !state.waiting.is_empty() && !state.running {
                let batch = std::mem::take(&mut state.waiting);
                drop(state);
                self.settle_batch(batch);
                state = settler.lock();
                continue;
            }
            if !state.running {
                return;
            }
            // A runner holds a batch: hurry it along and wait for it.
            settler.changed.notify_all();
            state = settler.wait_timeout(state, LINGER);
        }
    }

    fn settle_batch(&self, batch: Vec<Unsettled>) {
        let started = Instant::now();
        let (writers, kept): (Vec<BlobWriter>, Vec<(BlobInfo, String)>) =
            batch.into_iter().map(|item| (item.writer, (item.blob, item.sop_instance_uid))).unzip();
        let results = BlobWriter::finish_together(writers);
        self.metrics().blob_settle_batch_seconds.observe(started.elapsed());
        for (result, (blob, sop_instance_uid)) in results.into_iter().zip(kept) {
            match result {
                Ok(written) => {
                    self.committer().settle(written.rel_path.clone());
                    drop(written.guard);
                }
                Err(error) => {
                    tracing::error!(%error, path = %blob.path, %sop_instance_uid, "fsync of an acknowledged instance's file failed; writing it again from the bytes committed with it");
                    self.rewrite_from_write_ahead(blob, &sop_instance_uid);
                }
            }
        }
    }

    /// Write a file again from the copy of its bytes in the catalog; should
    /// that fail too, start-up recovery tries once more.
    fn rewrite_from_write_ahead(&self, blob: BlobInfo, sop_instance_uid: &str) {
        match crate::recovery::restore_from_write_ahead(self.blobs(), self.catalog().as_ref(), &blob, sop_instance_uid)
        {
            Ok(true) => self.committer().settle(blob.path),
            Ok(false) => {
                tracing::error!(path = %blob.path, "no bytes to write the file again from; start-up recovery will check it")
            }
            Err(error) => {
                tracing::error!(%error, path = %blob.path, "writing the file again failed; start-up recovery will retry")
            }
        }
    }
}
