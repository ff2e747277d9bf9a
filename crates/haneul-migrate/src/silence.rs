//! Operations whose pace is the old archive's (a C-FIND listing, a C-MOVE):
//! however long they take, they are given up only once the node has shown no
//! sign of life for its timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When the node last showed a sign of life.
pub(crate) struct Heartbeat {
    started: Instant,
    /// Milliseconds since `started` at the last sign.
    last: AtomicU64,
}

impl Heartbeat {
    pub(crate) fn new() -> Heartbeat {
        Heartbeat { started: Instant::now(), last: AtomicU64::new(0) }
    }

    /// A sign of life now (an answer, an instance received).
    pub(crate) fn beat(&self) {
        self.last.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn silent(&self) -> Duration {
        self.started.elapsed().saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }

    /// Resolves once no sign of life has come for `limit`. `elsewhere` is
    /// asked at each look whether a sign came by another way since the last
    /// look (instances a C-MOVE sends to another association).
    pub(crate) async fn silence(&self, limit: Duration, mut elsewhere: impl FnMut() -> bool) {
        let tick = (limit / 4).max(Duration::from_millis(10));
        loop {
            tokio::time::sleep(tick).await;
            if elsewhere() {
                self.beat();
            }
            if self.silent() >= limit {
                return;
            }
        }
    }
}
