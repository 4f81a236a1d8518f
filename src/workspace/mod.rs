//! How close a route's sending is to the Azure Monitor workspace's limits and to each DCR's:
//! active series (distinct series sent within 12 hours, estimated with hourly HyperLogLog
//! sketches, [`sketch`]), events (samples) per minute, and requests per minute to each DCR.
//!
//! A series counts from the moment the upstream accepted it (promlink's clock, not the samples'
//! timestamps): the upstream hands every delivered part to [`Workspace::observe`]. The alert
//! loop calls [`Workspace::refresh`] and [`DcrMeter::refresh`] every second, which set the
//! gauges and return the figures the alert rules compare with the limits.
//!
//! This memory is separate from a route's exact series budget (`max_active_series`): the
//! sketches take 208 KiB per route (13 hours of 16 KiB), whatever the
//! series count. The same delivered parts feed [`cardinality`], the view behind
//! `GET /api/v1/status/cardinality` and `promlink top` ([`top`]), shared by every route.

pub mod cardinality;
pub mod sketch;
pub mod top;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::codec::Chunk;
use crate::config::WorkspaceLimits;

type Ratio = Gauge<f64, AtomicU64>;

/// Label set of the workspace gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// The route's name (`default` without `routes`).
    pub route: String,
}

/// Label set of the DCR gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UrlLabel {
    /// The DCR's ingestion URL, without its query.
    pub url: String,
}

/// The workspace and DCR gauges (`promlink_workspace_*`, `promlink_dcr_*`), the request
/// counters shared by every destination with the same URL, and the cardinality view of every
/// route's sending. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    active_series: Family<RouteLabel, Gauge>,
    active_series_ratio: Family<RouteLabel, Ratio>,
    active_series_limit: Family<RouteLabel, Gauge>,
    events: Family<RouteLabel, Gauge>,
    events_ratio: Family<RouteLabel, Ratio>,
    events_limit: Family<RouteLabel, Gauge>,
    dcr_requests: Family<UrlLabel, Gauge>,
    dcr_requests_ratio: Family<UrlLabel, Ratio>,
    dcr_requests_limit: Family<UrlLabel, Gauge>,
    /// Requests sent to each URL, by every destination that sends there.
    sent: Arc<Mutex<HashMap<String, Arc<AtomicU64>>>>,
    /// What every route sent, for `GET /api/v1/status/cardinality`.
    cardinality: Arc<cardinality::Cardinality>,
}

impl Metrics {
    /// Creates the families and registers them in `registry` (promlink's, prefixed
    /// `promlink_`); each route and URL is exported from its start ([`Workspace::new`],
    /// [`DcrMeter::new`]).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry;
        r.register(
            "workspace_active_series",
            "Distinct series a route sent within the last 12 hours (estimated; HyperLogLog, about 1 % error), against the workspace's active series limit",
            m.active_series.clone(),
        );
        r.register(
            "workspace_active_series_ratio",
            "promlink_workspace_active_series divided by workspace_active_series_limit",
            m.active_series_ratio.clone(),
        );
        r.register(
            "workspace_active_series_limit",
            "workspace_active_series_limit: the workspace's active series limit (or this promlink's share)",
            m.active_series_limit.clone(),
        );
        r.register(
            "workspace_events_per_minute",
            "Samples and histograms a route sent in the last minute",
            m.events.clone(),
        );
        r.register(
            "workspace_events_per_minute_ratio",
            "promlink_workspace_events_per_minute divided by workspace_events_per_minute_limit",
            m.events_ratio.clone(),
        );
        r.register(
            "workspace_events_per_minute_limit",
            "workspace_events_per_minute_limit: the workspace's events per minute limit (or this promlink's share)",
            m.events_limit.clone(),
        );
        r.register(
            "dcr_requests_per_minute",
            "Requests sent to a DCR's ingestion URL in the last minute (retries included)",
            m.dcr_requests.clone(),
        );
        r.register(
            "dcr_requests_per_minute_ratio",
            "promlink_dcr_requests_per_minute divided by dcr_requests_per_minute_limit",
            m.dcr_requests_ratio.clone(),
        );
        r.register(
            "dcr_requests_per_minute_limit",
            "dcr_requests_per_minute_limit: requests a minute a DCR takes (Azure: 15,000, not raisable; or this promlink's share)",
            m.dcr_requests_limit.clone(),
        );
        m
    }

    /// The cardinality view every route's [`Workspace`] feeds.
    pub fn cardinality(&self) -> Arc<cardinality::Cardinality> {
        self.cardinality.clone()
    }

    /// The counter of requests sent to `url` (shared by every destination sending there).
    fn sent(&self, url: &str) -> Arc<AtomicU64> {
        self.sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(url.to_owned())
            .or_default()
            .clone()
    }
}

/// A counter's increase over the last minute, from readings taken by one task.
#[derive(Debug)]
struct MinuteWindow {
    /// Readings, oldest first; the first is at least a minute old once there is one.
    readings: VecDeque<(SystemTime, u64)>,
}

const MINUTE: Duration = Duration::from_secs(60);

impl MinuteWindow {
    fn new(now: SystemTime, total: u64) -> Self {
        Self {
            readings: VecDeque::from([(now, total)]),
        }
    }

    /// The increase of `total` since a minute ago (since the first reading, if younger).
    fn per_minute(&mut self, now: SystemTime, total: u64) -> u64 {
        self.readings.push_back((now, total));
        // Keep one reading at least a minute old as the base.
        while self.readings.len() > 2
            && now
                .duration_since(self.readings[1].0)
                .is_ok_and(|age| age >= MINUTE)
        {
            self.readings.pop_front();
        }
        let base = self.readings.front().map_or(total, |r| r.1);
        total.saturating_sub(base)
    }
}

/// A figure and its limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Level {
    /// The measured figure.
    pub value: u64,
    /// Its limit (> 0).
    pub limit: u64,
}

impl Level {
    /// `value / limit`.
    pub fn ratio(&self) -> f64 {
        self.value as f64 / self.limit.max(1) as f64
    }
}

/// One route's sending, measured against its workspace's limits.
#[derive(Debug)]
pub struct Workspace {
    route: RouteLabel,
    limits: WorkspaceLimits,
    series: sketch::HourlySketch,
    events: AtomicU64,
    window: Mutex<MinuteWindow>,
    metrics: Metrics,
}

impl Workspace {
    /// The workspace of `route`, with its limits, exported from now on (at zero).
    pub fn new(route: &str, limits: WorkspaceLimits, metrics: &Metrics) -> Self {
        let w = Self {
            route: RouteLabel {
                route: route.to_owned(),
            },
            limits,
            series: sketch::HourlySketch::default(),
            events: AtomicU64::new(0),
            window: Mutex::new(MinuteWindow::new(SystemTime::now(), 0)),
            metrics: metrics.clone(),
        };
        w.series.advance(hour(SystemTime::now()));
        let m = &w.metrics;
        m.active_series.get_or_create(&w.route).set(0);
        m.active_series_ratio.get_or_create(&w.route).set(0.0);
        m.active_series_limit
            .get_or_create(&w.route)
            .set(limits.active_series as i64);
        m.events.get_or_create(&w.route).set(0);
        m.events_ratio.get_or_create(&w.route).set(0.0);
        m.events_limit
            .get_or_create(&w.route)
            .set(limits.events_per_minute as i64);
        w
    }

    /// Counts a part the upstream accepted: its series into the current hour's sketch and the
    /// cardinality view, its samples and histograms into the events.
    pub fn observe(&self, part: &[Chunk]) {
        self.metrics.cardinality.observe(part);
        let mut events = 0u64;
        for c in part {
            events += c.counts.points() as u64;
            for &k in c.keys.iter() {
                self.series.insert(sketch::spread(k));
            }
        }
        self.events.fetch_add(events, Ordering::Relaxed);
    }

    /// Sets the gauges for `now` and returns (active series, events per minute).
    pub fn refresh(&self, now: SystemTime) -> (Level, Level) {
        let h = hour(now);
        self.series.advance(h);
        let series = Level {
            value: self.series.estimate(h),
            limit: self.limits.active_series,
        };
        let total = self.events.load(Ordering::Relaxed);
        let events = Level {
            value: self
                .window
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .per_minute(now, total),
            limit: self.limits.events_per_minute,
        };
        let m = &self.metrics;
        m.active_series
            .get_or_create(&self.route)
            .set(series.value as i64);
        m.active_series_ratio
            .get_or_create(&self.route)
            .set(series.ratio());
        m.events.get_or_create(&self.route).set(events.value as i64);
        m.events_ratio
            .get_or_create(&self.route)
            .set(events.ratio());
        (series, events)
    }
}

/// Requests to one DCR's URL, measured against `dcr_requests_per_minute_limit`.
#[derive(Debug)]
pub struct DcrMeter {
    url: UrlLabel,
    limit: u64,
    sent: Arc<AtomicU64>,
    window: Mutex<MinuteWindow>,
    metrics: Metrics,
}

impl DcrMeter {
    /// The meter of `url` (without query), exported from now on (at zero).
    pub fn new(url: &str, limit: u64, metrics: &Metrics) -> Self {
        let sent = metrics.sent(url);
        let m = Self {
            url: UrlLabel {
                url: url.to_owned(),
            },
            limit,
            window: Mutex::new(MinuteWindow::new(
                SystemTime::now(),
                sent.load(Ordering::Relaxed),
            )),
            sent,
            metrics: metrics.clone(),
        };
        m.metrics.dcr_requests.get_or_create(&m.url).set(0);
        m.metrics.dcr_requests_ratio.get_or_create(&m.url).set(0.0);
        m.metrics
            .dcr_requests_limit
            .get_or_create(&m.url)
            .set(limit as i64);
        m
    }

    /// The counter the upstream adds each request to (shared by the URL's destinations).
    pub fn counter(&self) -> Arc<AtomicU64> {
        self.sent.clone()
    }

    /// Sets the gauges for `now` and returns the requests of the last minute.
    pub fn refresh(&self, now: SystemTime) -> Level {
        let level = Level {
            value: self
                .window
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .per_minute(now, self.sent.load(Ordering::Relaxed)),
            limit: self.limit,
        };
        let m = &self.metrics;
        m.dcr_requests
            .get_or_create(&self.url)
            .set(level.value as i64);
        m.dcr_requests_ratio
            .get_or_create(&self.url)
            .set(level.ratio());
        level
    }
}

/// The hour of `t`: Unix seconds / 3600.
fn hour(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minute_window_counts_the_last_minute() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut w = MinuteWindow::new(t0, 0);
        assert_eq!(w.per_minute(at(1), 10), 10);
        assert_eq!(w.per_minute(at(30), 40), 40);
        // At 61 s the base is the reading of 1 s (at least a minute old, the newest such).
        assert_eq!(w.per_minute(at(61), 50), 40);
        assert_eq!(w.per_minute(at(95), 50), 10);
        // Nothing for over a minute.
        assert_eq!(w.per_minute(at(200), 50), 0);
    }
}
