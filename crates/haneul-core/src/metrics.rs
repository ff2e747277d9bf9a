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

/// Upper bounds of histogram buckets, in seconds.
const BUCKETS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: std::time::Duration) {
        let seconds = elapsed.as_secs_f64();
        let index = BUCKETS.iter().position(|&bound| seconds <= bound).unwrap_or(BUCKETS.len());
        self.counts[index].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (index, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.counts[index].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

/// The archive's metrics; protocol edges add their own counters here too so
/// one endpoint exposes everything.
#[derive(Debug, Default)]
pub struct Metrics {
    pub instances_stored: Counter,
    pub bytes_stored: Counter,
    pub duplicates: Counter,
    /// Versions a replication peer sent with other bytes than the current one.
    pub replication_conflicts: Counter,
    pub ingest_rejected: Counter,
    /// Instances rewritten by their sender's coercion rules.
    pub ingest_coerced: Counter,
    /// Instances acknowledged with their bytes in the catalog commit, before their file's fsync.
    pub ingest_write_ahead: Counter,
    pub commit_batches: Counter,
    pub committed_instances: Counter,
    pub queries: Counter,
    pub instances_sent: Counter,
    /// Correction registers recorded (made here or received from peers).
    pub corrections: Counter,
    /// Retrieved instances sent with corrected values.
    pub corrected_deliveries: Counter,
    /// Retrieved instances sent as stored because their corrections could not be applied.
    pub corrections_not_applied: Counter,
    pub associations: Counter,
    pub associations_rejected: Counter,
    /// Associations dropped because the peer went idle or stopped reading.
    pub associations_timed_out: Counter,
    /// Requests refused because the requester's role lacks the permission.
    pub permission_denied: Counter,
    pub active_associations: Gauge,
    /// Writing, parsing and validating a received instance.
    pub ingest_prepare_seconds: Histogram,
    /// Making an instance file durable (fdatasync).
    pub blob_fsync_seconds: Histogram,
    /// Making a batch of write-ahead instances' files durable together.
    pub blob_settle_batch_seconds: Histogram,
    /// Waiting for the group commit that records an instance.
    pub catalog_commit_seconds: Histogram,
    /// From the last received byte to a durable, catalogued instance.
    pub ingest_seconds: Histogram,
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn render_prometheus(&self) -> String {
        let counters: [(&str, &str, &Counter); 18] = [
            ("haneul_instances_stored_total", "Instances newly stored", &self.instances_stored),
            ("haneul_bytes_stored_total", "Bytes of newly stored instances", &self.bytes_stored),
            ("haneul_duplicates_total", "Instances received again (identical or not)", &self.duplicates),
            (
                "haneul_replication_conflicts_total",
                "Versions a replication peer sent with other bytes, kept for review",
                &self.replication_conflicts,
            ),
            ("haneul_ingest_rejected_total", "Instances refused at ingest", &self.ingest_rejected),
            (
                "haneul_ingest_coerced_total",
                "Instances rewritten by their sender's coercion rules at ingest",
                &self.ingest_coerced,
            ),
            (
                "haneul_ingest_write_ahead_total",
                "Instances acknowledged with their bytes in the catalog commit, before their own file's fsync",
                &self.ingest_write_ahead,
            ),
            ("haneul_commit_batches_total", "Catalog group commits", &self.commit_batches),
            ("haneul_committed_instances_total", "Instances recorded by group commits", &self.committed_instances),
            ("haneul_queries_total", "Queries run", &self.queries),
            ("haneul_instances_sent_total", "Instances sent by retrieves", &self.instances_sent),
            ("haneul_corrections_total", "Attribute corrections recorded (here or from peers)", &self.corrections),
            (
                "haneul_corrected_deliveries_total",
                "Retrieved instances sent with their corrected values",
                &self.corrected_deliveries,
            ),
            (
                "haneul_corrections_not_applied_total",
                "Retrieved instances sent as stored because their corrections could not be written in them",
                &self.corrections_not_applied,
            ),
            ("haneul_associations_total", "DICOM associations accepted", &self.associations),
            ("haneul_associations_rejected_total", "DICOM associations rejected", &self.associations_rejected),
            (
                "haneul_associations_timed_out_total",
                "DICOM associations dropped because the peer went idle or stopped reading",
                &self.associations_timed_out,
            ),
            (
                "haneul_permission_denied_total",
                "Requests refused because the role lacks the permission",
                &self.permission_denied,
            ),
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
        let histograms: [(&str, &str, &Histogram); 5] = [
            (
                "haneul_ingest_prepare_seconds",
                "Writing, parsing and validating a received instance",
                &self.ingest_prepare_seconds,
            ),
            ("haneul_blob_fsync_seconds", "Making an instance file durable", &self.blob_fsync_seconds),
            (
                "haneul_blob_settle_batch_seconds",
                "Making a batch of files acknowledged with their bytes in the catalog durable together",
                &self.blob_settle_batch_seconds,
            ),
            (
                "haneul_catalog_commit_seconds",
                "Waiting for the group commit recording an instance",
                &self.catalog_commit_seconds,
            ),
            (
                "haneul_ingest_seconds",
                "From the last received byte to a durable, catalogued instance",
                &self.ingest_seconds,
            ),
        ];
        for (name, help, histogram) in histograms {
            histogram.render(&mut out, name, help);
        }
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
        metrics.blob_fsync_seconds.observe(std::time::Duration::from_micros(300));
        metrics.blob_fsync_seconds.observe(std::time::Duration::from_millis(3));
        let text = metrics.render_prometheus();
        assert!(text.contains("haneul_blob_fsync_seconds_bucket{le=\"0.0005\"} 1\n"), "{text}");
        assert!(text.contains("haneul_blob_fsync_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("haneul_blob_fsync_seconds_count 2\n"));
    }
}
