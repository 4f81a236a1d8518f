//! Upstream metrics: what was forwarded, retried and dropped, and how the DCE answered.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::telemetry::EntryCounters;
pub use crate::telemetry::ReasonLabel;

/// Label set with the HTTP status class of an upstream answer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    /// `2xx`, `4xx`, `5xx` or `error` (no HTTP answer).
    pub class: &'static str,
}

/// Metrics of the upstream stage.
#[derive(Clone)]
pub struct Metrics {
    /// Upstream requests by status class.
    pub requests: Family<ClassLabel, Counter>,
    /// Upstream request duration.
    pub request_duration: Histogram,
    /// Entries the upstream accepted (`<kind>_forwarded`).
    pub forwarded: EntryCounters<Counter>,
    /// Retries by reason.
    pub retries: Family<ReasonLabel, Counter>,
    /// Samples dropped by reason.
    pub samples_dropped: Family<ReasonLabel, Counter>,
    /// Batches dropped by reason.
    pub batches_dropped: Family<ReasonLabel, Counter>,
    /// Repeated samples removed from a batch after a 422.
    pub duplicates_removed: Counter,
    /// Batches split because they kept failing while others were accepted.
    pub isolations: Counter,
    /// Panics caught in an upstream worker (its batch went back to the queue).
    pub worker_panics: Counter,
    /// Samples per upstream batch.
    pub batch_samples: Histogram,
    /// Uncompressed bytes per upstream batch.
    pub batch_bytes: Histogram,
    /// Unix time of the last upstream acceptance.
    pub last_success: Gauge,
    /// 1 while the upstream gave an HTTP answer within `ready_window`, 0 when it has not.
    pub available: Gauge,
    /// Seconds requests waited for `max_requests_per_minute`.
    pub rate_limited: Counter<f64, AtomicU64>,
    /// Requests sent in the last minute (with `max_requests_per_minute`).
    pub requests_per_minute: Gauge,
    /// `max_requests_per_minute` (0: no limit).
    pub requests_per_minute_limit: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            request_duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            forwarded: EntryCounters::default(),
            retries: Family::default(),
            samples_dropped: Family::default(),
            batches_dropped: Family::default(),
            duplicates_removed: Counter::default(),
            isolations: Counter::default(),
            worker_panics: Counter::default(),
            batch_samples: Histogram::new(exponential_buckets(10.0, 2.0, 14)),
            batch_bytes: Histogram::new(exponential_buckets(1024.0, 2.0, 14)),
            last_success: Gauge::default(),
            available: Gauge::default(),
            rate_limited: Counter::default(),
            requests_per_minute: Gauge::default(),
            requests_per_minute_limit: Gauge::default(),
        }
    }
}

impl Metrics {
    /// Creates the metrics and registers them under `promlink_`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        // Every series of the closed label sets exists from the start, at zero.
        for class in ["2xx", "4xx", "5xx", "error", "other"] {
            let _ = m.requests.get_or_create(&ClassLabel { class });
        }
        for r in super::retry::RetryReason::ALL {
            let _ = m.retries.get_or_create(&ReasonLabel { reason: r.as_str() });
        }
        for r in super::retry::DropReason::ALL {
            let _ = m
                .samples_dropped
                .get_or_create(&ReasonLabel { reason: r.as_str() });
            let _ = m
                .batches_dropped
                .get_or_create(&ReasonLabel { reason: r.as_str() });
        }
        let r = registry;
        r.register(
            "upstream_rate_limited_seconds",
            "Time upstream requests waited for a token of max_requests_per_minute (backpressure; nothing is dropped)",
            m.rate_limited.clone(),
        );
        r.register(
            "upstream_requests_per_minute",
            "Upstream requests sent in the last minute, when max_requests_per_minute applies",
            m.requests_per_minute.clone(),
        );
        r.register(
            "upstream_requests_per_minute_limit",
            "max_requests_per_minute of the upstream URL (0: no limit)",
            m.requests_per_minute_limit.clone(),
        );
        r.register(
            "upstream_requests",
            "Requests sent to the upstream, by status class of the answer",
            m.requests.clone(),
        );
        r.register(
            "upstream_request_duration_seconds",
            "Time from sending a request to the upstream's answer",
            m.request_duration.clone(),
        );
        m.forwarded
            .register(r, "forwarded", "the upstream accepted");
        r.register(
            "upstream_retries",
            "Upstream requests that will be retried, by reason",
            m.retries.clone(),
        );
        r.register(
            "samples_dropped",
            "Samples dropped and never delivered, by reason",
            m.samples_dropped.clone(),
        );
        r.register(
            "batches_dropped",
            "Upstream batches dropped, by reason",
            m.batches_dropped.clone(),
        );
        r.register(
            "upstream_duplicates_removed",
            "Repeated samples (same series and timestamp) removed from a batch the upstream refused with 422",
            m.duplicates_removed.clone(),
        );
        r.register(
            "upstream_isolations",
            "Batches split because they kept failing (5xx, timeout, lost connection) while other batches were accepted: the healthy parts go, the failing part waits",
            m.isolations.clone(),
        );
        r.register(
            "upstream_worker_panics",
            "Panics caught in an upstream worker: the batch it was sending went back to the queue and the worker went on (a defect: report it with the log)",
            m.worker_panics.clone(),
        );
        r.register(
            "batch_samples",
            "Samples per upstream batch",
            m.batch_samples.clone(),
        );
        r.register(
            "batch_bytes",
            "Uncompressed bytes per upstream batch",
            m.batch_bytes.clone(),
        );
        r.register(
            "upstream_last_success_timestamp_seconds",
            "Unix time the upstream last accepted a batch",
            m.last_success.clone(),
        );
        // Every drop reason exists from the start at 0, so that rate() and increase() see the
        // first drop (a series that appears already counted has no increase).
        for reason in super::retry::DropReason::ALL {
            let l = ReasonLabel {
                reason: reason.as_str(),
            };
            drop(m.samples_dropped.get_or_create(&l));
            drop(m.batches_dropped.get_or_create(&l));
        }
        r.register(
            "upstream_available",
            "1 while the upstream gave an HTTP answer (any status) within ready_window, 0 after ready_window without one (connection refused, DNS, TLS, timeout), counted from the start until the first answer",
            m.available.clone(),
        );
        m
    }
}
