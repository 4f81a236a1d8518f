//! Queue metrics: the bytes held and the budget, the disk queue's records, age, commits, fsyncs
//! and the time they took, replayed and damaged records, and the free space of its filesystem.
//!
//! `promlink_queue_bytes` is read from the queue whenever `/metrics` is scraped, so it is never
//! stale and nothing else sets it; the budget is set once, at registration; the disk figures
//! are copied once a second from the queue's own counters ([`Metrics::update`]).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::Queue;

/// `promlink_queue_bytes`: the queue's bytes in use, read when encoded. It holds the queue
/// weakly, so the registry does not keep a disk queue (and its directory lock) alive; once the
/// queue is gone it reads 0.
struct UsedBytes(Weak<Queue>);

impl std::fmt::Debug for UsedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UsedBytes")
    }
}

impl EncodeMetric for UsedBytes {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let used = self.0.upgrade().map_or(0, |q| q.used_bytes());
        encoder.encode_gauge(&i64::try_from(used).unwrap_or(i64::MAX))
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

/// Metrics of the queue stage.
#[derive(Clone, Default)]
pub struct Metrics {
    /// The queue's byte budget.
    pub max_bytes: Gauge,
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
    /// Bytes promlink may still write on the queue directory's filesystem (disk queue).
    pub disk_free: Gauge,
    /// Size of the queue directory's filesystem (disk queue).
    pub disk_capacity: Gauge,
    /// 1 while the disk queue takes no writes until a restart (its failed state).
    pub failed: Gauge,
}

impl Metrics {
    /// Creates and registers the metrics of `queue` under `queue_`; the filesystem gauges only
    /// for a durable queue.
    pub fn register(registry: &mut Registry, queue: &Arc<Queue>) -> Self {
        let m = Self::default();
        let durable = queue.is_durable();
        m.max_bytes
            .set(i64::try_from(queue.max_bytes()).unwrap_or(i64::MAX));
        let r = registry.sub_registry_with_prefix("queue");
        r.register(
            "bytes",
            "Bytes held by the queue, waiting or in flight",
            UsedBytes(Arc::downgrade(queue)),
        );
        r.register("max_bytes", "The queue's byte budget", m.max_bytes.clone());
        r.register(
            "records",
            "Unacknowledged records in the disk queue",
            m.records.clone(),
        );
        r.register(
            "oldest_age_seconds",
            "Age of the oldest chunk not yet acknowledged by the upstream (disk queue)",
            m.oldest_age.clone(),
        );
        r.register("commits", "Disk queue group commits", m.commits.clone());
        r.register("fsyncs", "Disk queue fsync calls", m.fsyncs.clone());
        r.register(
            "fsync_seconds",
            "Seconds the disk queue spent in group-commit fsyncs",
            m.fsync_seconds.clone(),
        );
        r.register(
            "corrupt_records",
            "Damaged disk queue records skipped; their data is lost",
            m.corrupt_records.clone(),
        );
        r.register(
            "replayed_chunks",
            "Chunks (requests, or parts of requests over the batch limits) replayed from the disk queue after a restart",
            m.replayed.clone(),
        );
        r.register(
            "durable",
            "1 when the queue is on disk, 0 when in memory",
            m.durable.clone(),
        );
        r.register(
            "failed",
            "1 while the disk queue takes no writes until promlink restarts (a write that could not be undone, or its commit thread stopped)",
            m.failed.clone(),
        );
        if durable {
            r.register(
                "disk_free_bytes",
                "Bytes an unprivileged process may still write on the filesystem of the queue directory (statvfs f_bavail x f_frsize)",
                m.disk_free.clone(),
            );
            r.register(
                "disk_capacity_bytes",
                "Size of the filesystem of the queue directory (statvfs f_blocks x f_frsize)",
                m.disk_capacity.clone(),
            );
        }
        m
    }

    /// Used share (0..1) of the disk queue's filesystem, as last updated; `None` for the memory
    /// queue or before a reading.
    pub fn disk_used(&self) -> Option<f64> {
        let capacity = self.disk_capacity.get();
        (capacity > 0).then(|| 1.0 - self.disk_free.get() as f64 / capacity as f64)
    }

    /// Copies the queue's current figures into the metrics.
    pub fn update(&self, queue: &Queue) {
        self.durable.set(i64::from(queue.is_durable()));
        self.failed.set(i64::from(queue.failed().is_some()));
        let Queue::Disk(q) = queue else { return };
        match q.disk_space() {
            Ok((free, capacity)) => {
                self.disk_free.set(i64::try_from(free).unwrap_or(i64::MAX));
                self.disk_capacity
                    .set(i64::try_from(capacity).unwrap_or(i64::MAX));
            }
            Err(e) => tracing::debug!(error = %e, "statvfs of the queue directory failed"),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    fn value(text: &str, name: &str) -> Option<i64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[tokio::test]
    async fn queue_bytes_are_read_at_every_scrape_and_the_budget_is_set_once() {
        let queue = Arc::new(Queue::Memory(super::super::MemoryQueue::new(1 << 20)));
        let mut registry = Registry::with_prefix("promlink");
        let _metrics = Metrics::register(&mut registry, &queue);
        let text = scrape(&registry);
        for line in [
            "# HELP promlink_queue_bytes Bytes held by the queue, waiting or in flight.\n",
            "# TYPE promlink_queue_bytes gauge\n",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
        assert_eq!(value(&text, "promlink_queue_bytes"), Some(0));
        assert_eq!(value(&text, "promlink_queue_max_bytes"), Some(1 << 20));

        let chunk = super::super::test_chunk(1, 1, 10, 1000);
        queue.push(vec![chunk]).await.unwrap();
        let used = i64::try_from(queue.used_bytes()).unwrap();
        assert!(used > 0);
        assert_eq!(
            value(&scrape(&registry), "promlink_queue_bytes"),
            Some(used)
        );

        // The registry does not keep the queue alive.
        drop(queue);
        assert_eq!(value(&scrape(&registry), "promlink_queue_bytes"), Some(0));
    }
}
