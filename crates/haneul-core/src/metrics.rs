//! Process-wide counters, rendered in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The archive's metrics; protocol edges add their own counters here too so
/// one endpoint exposes everything.
#[derive(Debug, Default)]
pub struct Metrics {
    pub instances_stored: Counter,
    pub bytes_stored: Counter,
    pub duplicates: Counter,
    pub ingest_rejected: Counter,
    pub commit_batches: Counter,
    pub committed_instances: Counter,
    pub queries: Counter,
    pub instances_sent: Counter,
    pub associations: Counter,
    pub associations_rejected: Counter,
    pub active_associations: Gauge,
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn render_prometheus(&self) -> String {
        let counters: [(&str, &str, &Counter); 10] = [
            ("haneul_instances_stored_total", "Instances newly stored", &self.instances_stored),
            ("haneul_bytes_stored_total", "Bytes of newly stored instances", &self.bytes_stored),
            ("haneul_duplicates_total", "Instances received again (identical or not)", &self.duplicates),
            ("haneul_ingest_rejected_total", "Instances refused at ingest", &self.ingest_rejected),
            ("haneul_commit_batches_total", "Catalog group commits", &self.commit_batches),
            ("haneul_committed_instances_total", "Instances recorded by group commits", &self.committed_instances),
            ("haneul_queries_total", "Queries run", &self.queries),
            ("haneul_instances_sent_total", "Instances sent by retrieves", &self.instances_sent),
            ("haneul_associations_total", "DICOM associations accepted", &self.associations),
            ("haneul_associations_rejected_total", "DICOM associations rejected", &self.associations_rejected),
        ];
        let mut out = String::new();
        for (name, help, counter) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", counter.get());
        }
        let _ = writeln!(
            out,
            "# HELP haneul_active_associations DICOM associations open now\n# TYPE haneul_active_associations gauge\nhaneul_active_associations {}",
            self.active_associations.get()
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges() {
        let metrics = Metrics::default();
        metrics.instances_stored.add(3);
        metrics.active_associations.inc();
        let text = metrics.render_prometheus();
        assert!(text.contains("haneul_instances_stored_total 3\n"));
        assert!(text.contains("haneul_active_associations 1\n"));
        assert!(text.contains("# TYPE haneul_queries_total counter"));
    }
}
