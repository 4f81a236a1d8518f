//! Queue metrics beyond `promlink_queue_bytes`: the disk queue's records, age, commits, fsyncs
//! and the time they took,
//! replayed and damaged records. Updated once a second from the queue's own counters.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Queue;

/// Metrics of the queue stage.
#[derive(Clone, Default)]
pub struct Metrics {
    /// Unacknowledged records on disk.
    pub records: Gauge,
    /// Age of the oldest unacknowledged entry.
    pub oldest_age: Gauge<f64, AtomicU64>,
    /// Group commits.
    pub commits: Counter,
    /// fsync calls.
    pub fsyncs: Counter,
    /// Seconds spent in group-commit fsyncs.
    pub fsync_seconds: Counter<f64, AtomicU64>,
    /// Damaged records skipped (each lost).
    pub corrupt_records: Counter,
    /// Chunks replayed after a restart.
    pub replayed: Counter,
    /// Whether the queue is durable (1) or in memory (0).
    pub durable: Gauge,
}

impl Metrics {
    /// Creates and registers the metrics under `queue_`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("queue");
        r.register(
            "records",
            "Unacknowledged records in the disk queue.",
            m.records.clone(),
        );
        r.register(
            "oldest_age_seconds",
            "Age of the oldest chunk not yet acknowledged by the upstream (disk queue).",
            m.oldest_age.clone(),
        );
        r.register("commits", "Disk queue group commits.", m.commits.clone());
        r.register("fsyncs", "Disk queue fsync calls.", m.fsyncs.clone());
        r.register(
            "fsync_seconds",
            "Seconds the disk queue spent in group-commit fsyncs.",
            m.fsync_seconds.clone(),
        );
        r.register(
            "corrupt_records",
            "Damaged disk queue records skipped; their data is lost.",
            m.corrupt_records.clone(),
        );
        r.register(
            "replayed_chunks",
            "Chunks (requests, or parts of requests over the batch limits) replayed from the disk queue after a restart.",
            m.replayed.clone(),
        );
        r.register(
            "durable",
            "1 when the queue is on disk, 0 when in memory.",
            m.durable.clone(),
        );
        m
    }

    /// Copies the queue's current figures into the metrics.
    pub fn update(&self, queue: &Queue) {
        self.durable.set(i64::from(queue.is_durable()));
        let Queue::Disk(q) = queue else { return };
        let s = q.stats();
        self.records.set(s.records as i64);
        self.oldest_age
            .set(q.oldest_age().map_or(0.0, |d| d.as_secs_f64()));
        let catch_up = |c: &Counter, now: u64| c.inc_by(now.saturating_sub(c.get()));
        catch_up(&self.commits, s.commits);
        catch_up(&self.fsyncs, s.fsyncs);
        let spent = s.fsync_seconds - self.fsync_seconds.get();
        if spent > 0.0 {
            self.fsync_seconds.inc_by(spent);
        }
        catch_up(&self.corrupt_records, s.corrupt_records);
        catch_up(&self.replayed, s.replayed);
    }
}
