//! Receiver metrics: what senders wrote and how each request was answered.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::codec::CacheStats;

pub use crate::telemetry::ReasonLabel;
use crate::telemetry::{EntryCounters, RouteLabel, RouteReasonLabels};

/// Labels of a receive request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `v1`, `v2` or `unknown`.
    pub protocol: &'static str,
    /// The HTTP status answered.
    pub code: u16,
}

/// Labels of a received-data counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabel {
    /// `v1` or `v2`.
    pub protocol: &'static str,
}

/// Labels of a reload counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `tls` or `bearer_tokens`.
    pub what: &'static str,
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Labels of a relabel cache counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// The route whose own rules the cache serves; empty (no label) for the global rules.
    pub route: String,
    /// `hit` (the rules did not run) or `miss` (they ran).
    pub result: &'static str,
}

/// Labels of the series cache counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabel {
    /// `hit` (the per-label checks were skipped) or `miss` (the series was scanned in full).
    pub result: &'static str,
}

/// Metrics of the receive stage.
#[derive(Clone, Default)]
pub struct Metrics {
    /// Requests by protocol and answered status.
    pub requests: Family<RequestLabels, Counter>,
    /// Requests refused, by reason: `content_type`, `encoding`, `too_large`, `snappy`,
    /// `protobuf`, `invalid`, `too_many_series`, `limit`, `queue_full`, `queue_io`,
    /// `shutting_down`, `body`, `body_timeout`, `decode_busy`, `body_busy`,
    /// `too_many_requests`, `unauthorized`, `panic`.
    pub rejected: Family<ReasonLabel, Counter>,
    /// Entries accepted into the queue, by protocol (`<kind>_received`).
    pub received: EntryCounters<Family<ProtocolLabel, Counter>>,
    /// Compressed request body bytes received.
    pub body_bytes: Counter,
    /// Series dropped at the edge for breaking a label limit (`label_limit_action: drop`).
    pub series_dropped: Counter,
    /// Series removed by `write_relabel_configs`, by reason: `rule` (a `drop`, `keep`,
    /// `dropequal` or `keepequal` rule, or no label left), `invalid` (the rules left labels
    /// that break the label rules, e.g. no metric name).
    pub relabel_series_dropped: Family<ReasonLabel, Counter>,
    /// Samples (and histogram samples) of those series, by the same reasons.
    pub relabel_samples_dropped: Family<ReasonLabel, Counter>,
    /// Write requests whose handling panicked (answered 500, which senders retry).
    pub panics: Counter,
    /// Open receiver connections.
    pub connections: Gauge,
    /// Connections closed by promlink before a request was served, by reason.
    pub connections_closed: Family<ReasonLabel, Counter>,
    /// Write requests refused with 401, by reason.
    pub unauthorized: Family<ReasonLabel, Counter>,
    /// Reloads of the TLS files and the bearer token file, by result.
    pub reloads: Family<ReloadLabels, Counter>,
    /// Expiry of the receiver's serving certificate, Unix seconds (0 without TLS).
    pub tls_cert_not_after: Gauge,
    /// What each route took and dropped.
    pub routes: RouteMetrics,
    /// Series no route took.
    pub unrouted_series: Counter,
    /// Samples (and histogram samples) of those series.
    pub unrouted_samples: Counter,
    /// Lookups in the relabel caches, by route (empty: the global rules) and result.
    pub relabel_cache_lookups: Family<CacheLabels, Counter>,
    /// What each relabel cache had counted at the last scrape, by route (`""`: global), with
    /// its identity (a reload builds new caches, which count from zero).
    relabel_cache_seen: Arc<Mutex<HashMap<String, (usize, CacheStats)>>>,
    /// Lookups in the series cache, by result.
    pub series_cache_lookups: Family<LookupLabel, Counter>,
    /// The series cache's current table, bytes (0 without one).
    pub series_cache_bytes: Gauge,
    /// What the series cache had counted at the last scrape.
    series_cache_seen: Arc<Mutex<crate::codec::SeriesCacheStats>>,
}

impl Metrics {
    /// Counts the lookups the series cache made since the last call, and sets its size.
    pub fn count_series_cache(&self, cache: Option<&crate::codec::SeriesCache>) {
        let Some(cache) = cache else {
            self.series_cache_bytes.set(0);
            return;
        };
        let now = cache.stats();
        let mut last = self
            .series_cache_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (result, n) in [
            ("hit", now.hits.saturating_sub(last.hits)),
            ("miss", now.misses.saturating_sub(last.misses)),
        ] {
            self.series_cache_lookups
                .get_or_create(&LookupLabel { result })
                .inc_by(n);
        }
        self.series_cache_bytes.set(now.bytes as i64);
        *last = now;
    }

    /// Counts the lookups `relabel`'s cache made since the last call for `route` (`""`: the
    /// global rules).
    pub fn count_relabel_cache(&self, route: &str, relabel: &Arc<crate::codec::Relabel>) {
        let now = relabel.cache_stats();
        let id = Arc::as_ptr(relabel) as usize;
        let mut seen = self
            .relabel_cache_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let last = seen
            .entry(route.to_string())
            .or_insert((id, CacheStats::default()));
        if last.0 != id || now.hits < last.1.hits || now.misses < last.1.misses {
            *last = (id, CacheStats::default());
        }
        for (result, n) in [
            ("hit", now.hits - last.1.hits),
            ("miss", now.misses - last.1.misses),
        ] {
            self.relabel_cache_lookups
                .get_or_create(&CacheLabels {
                    route: route.to_string(),
                    result,
                })
                .inc_by(n);
        }
        last.1 = now;
    }
}

/// What each route took from the writes and dropped, by route.
#[derive(Clone, Default)]
pub struct RouteMetrics {
    /// Samples (and histogram samples) the route took into its queue.
    pub samples_received: Family<RouteLabel, Counter>,
    /// Series the route dropped, by route and reason.
    pub series_dropped: Family<RouteReasonLabels, Counter>,
    /// Samples (and histogram samples) the route dropped, by route and reason.
    pub samples_dropped: Family<RouteReasonLabels, Counter>,
    /// Distinct series the route admitted within its `active_series_window`, by route (routes
    /// with `max_active_series`).
    pub active_series: Family<RouteLabel, Gauge>,
    /// The route's `max_active_series`.
    pub max_active_series: Family<RouteLabel, Gauge>,
}

impl RouteMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "route_samples_received",
            "Samples (and histogram samples) a route took into its queue, by route",
            self.samples_received.clone(),
        );
        r.register(
            "route_series_dropped",
            "Series a route dropped, by route and reason: rule (its own write_relabel_configs), invalid (its rules left labels Azure would refuse), limit (its rules broke a label limit, label_limit_action: drop), budget (a new series beyond max_active_series), queue_full and queue_io (its queue refused a write other routes took)",
            self.series_dropped.clone(),
        );
        r.register(
            "route_samples_dropped",
            "Samples (and histogram samples) a route dropped, by route and the reasons of promlink_route_series_dropped_total",
            self.samples_dropped.clone(),
        );
        r.register(
            "route_active_series",
            "Distinct series a route admitted within its active_series_window, by route (routes with max_active_series)",
            self.active_series.clone(),
        );
        r.register(
            "route_max_active_series",
            "A route's max_active_series: new series beyond it are dropped (reason budget)",
            self.max_active_series.clone(),
        );
    }

    /// Sets the series budget gauges of `route`.
    pub fn set_budget(&self, route: &str, budget: &crate::codec::SeriesBudget) {
        let l = RouteLabel {
            route: route.into(),
        };
        self.active_series
            .get_or_create(&l)
            .set(budget.active() as i64);
        self.max_active_series
            .get_or_create(&l)
            .set(budget.max() as i64);
    }

    /// Counts what `route` got of one write: its rules' drops, and what it took into its
    /// queue (`queued`) or dropped for `Some(reason)` its queue gave.
    pub fn count_in(
        &self,
        route: &str,
        out: &crate::codec::RouteOutput,
        refused: Option<&'static str>,
    ) {
        let points = out.counts.samples + out.counts.histograms;
        if let Some(reason) = refused {
            self.count(route, reason, out.counts.series, points);
        } else if points > 0 {
            self.samples_received
                .get_or_create(&RouteLabel {
                    route: route.into(),
                })
                .inc_by(points);
        }
        let r = &out.relabel;
        for (reason, series, samples) in [
            ("rule", r.series, r.samples),
            ("invalid", r.invalid_series, r.invalid_samples),
            ("limit", out.dropped_series, 0),
            ("budget", out.over_budget.series, out.over_budget.samples),
        ] {
            self.count(route, reason, series, samples);
        }
    }

    fn count(&self, route: &str, reason: &'static str, series: u64, samples: u64) {
        if series == 0 {
            return;
        }
        let l = RouteReasonLabels {
            route: route.into(),
            reason,
        };
        self.series_dropped.get_or_create(&l).inc_by(series);
        self.samples_dropped.get_or_create(&l).inc_by(samples);
    }
}

impl Metrics {
    /// Creates the metrics and registers them.
    pub fn register(r: &mut Registry) -> Self {
        let m = Self::default();
        // Every series of the closed label sets exists from the start, at zero.
        for protocol in ["v1", "v2"] {
            m.received.add(
                &ProtocolLabel { protocol },
                &crate::codec::Counts::default(),
            );
            let _ = m.requests.get_or_create(&RequestLabels {
                protocol,
                code: 204,
            });
        }
        for reason in super::ReceiveError::REASONS {
            let _ = m.rejected.get_or_create(&ReasonLabel { reason });
        }
        for reason in ["rule", "invalid"] {
            let _ = m
                .relabel_series_dropped
                .get_or_create(&ReasonLabel { reason });
            let _ = m
                .relabel_samples_dropped
                .get_or_create(&ReasonLabel { reason });
        }
        r.register(
            "receive_requests",
            "Remote-write requests received, by protocol and answered status",
            m.requests.clone(),
        );
        r.register(
            "receive_rejected",
            "Remote-write requests refused, by reason",
            m.rejected.clone(),
        );
        m.received
            .register(r, "received", "accepted into the queue");
        r.register(
            "receive_series_dropped",
            "Series dropped on receipt for breaking a label limit (label_limit_action: drop)",
            m.series_dropped.clone(),
        );
        r.register(
            "relabel_series_dropped",
            "Series removed by write_relabel_configs, by reason: rule (dropped by a rule, or no label left), invalid (the rules left labels Azure would refuse, e.g. no metric name)",
            m.relabel_series_dropped.clone(),
        );
        r.register(
            "relabel_samples_dropped",
            "Samples of the series removed by write_relabel_configs, by reason (rule, invalid)",
            m.relabel_samples_dropped.clone(),
        );
        r.register(
            "relabel_cache_lookups",
            "Lookups in the cache of what write_relabel_configs make of each label set, by result (hit: the rules did not run for the series; miss: they ran) and, for a route's own rules, by route; counted at each scrape",
            m.relabel_cache_lookups.clone(),
        );
        r.register(
            "series_cache_lookups",
            "Remote write 1.0 series looked up in the series cache, by result (hit: its labels were found valid before and their checks were skipped; miss: scanned in full); counted at each scrape",
            m.series_cache_lookups.clone(),
        );
        r.register(
            "series_cache_bytes",
            "Size of the series cache's current table, bytes (it doubles as it fills, up to series_cache_bytes; 0: no cache)",
            m.series_cache_bytes.clone(),
        );
        r.register(
            "receive_panics",
            "Write requests whose handling panicked, answered 500 so that the sender retries (a defect: report it with the log)",
            m.panics.clone(),
        );
        r.register(
            "receive_body_bytes",
            "Compressed remote-write body bytes received",
            m.body_bytes.clone(),
        );
        r.register(
            "receive_connections",
            "Open receiver connections",
            m.connections.clone(),
        );
        r.register(
            "receive_connections_closed",
            "Receiver connections closed by promlink, by reason: max_connections, tls_handshake, handshake_timeout, header_timeout (no complete headers within header_read_timeout, idle keep-alive connections included)",
            m.connections_closed.clone(),
        );
        r.register(
            "receive_unauthorized",
            "Write requests refused with 401, by reason: missing_credentials, bad_token, no_client_certificate, name_not_allowed",
            m.unauthorized.clone(),
        );
        r.register(
            "receive_reloads",
            "Reloads of the receiver's TLS files and bearer token file after they changed, by result",
            m.reloads.clone(),
        );
        r.register(
            "receive_tls_cert_not_after_seconds",
            "Expiry of the receiver's serving certificate, Unix seconds (0 without TLS)",
            m.tls_cert_not_after.clone(),
        );
        m.routes.register(r);
        r.register(
            "route_unmatched_series",
            "Series no route took (no route's match selected them)",
            m.unrouted_series.clone(),
        );
        r.register(
            "route_unmatched_samples",
            "Samples (and histogram samples) of series no route took",
            m.unrouted_samples.clone(),
        );
        m
    }
}
