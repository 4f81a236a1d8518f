//! The once-a-second loop that reads every stage into an alert [`Signals`] snapshot, evaluates
//! the rules, hands the result to the alerter, and refreshes the gauges that are read rather
//! than counted (the disk queue's figures, upstream availability).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

use crate::alert::watch::{Observed, Watch};
use crate::alert::Signals;
use crate::identity::TokenProvider;
use crate::privatelink::{ActivePath, Mode, PrivateLink};
use crate::queue::Queue;
use crate::upstream::retry::DropReason;
use crate::upstream::Health;

/// What the alert rules read.
pub(super) struct AlertInputs {
    pub(super) host: String,
    pub(super) private_link: Arc<PrivateLink>,
    pub(super) health: Arc<Health>,
    pub(super) upstream: Arc<crate::upstream::Upstream>,
    pub(super) identity: TokenProvider,
    pub(super) queue: Arc<Queue>,
    pub(super) queue_metrics: crate::queue::Metrics,
    pub(super) upstream_metrics: crate::upstream::Metrics,
    /// The receiver's `promlink_receive_tls_cert_not_after_seconds` (0: no TLS).
    pub(super) cert_not_after: Gauge,
    /// Queues no configured route uses, found at start (given to one destination's rules).
    pub(super) stranded: Vec<(String, u64)>,
    /// Set while the destination's latest canary is missing.
    pub(super) canary: crate::canary::NotVisible,
    /// The route's workspace, for its first destination only (its alerts are the route's).
    pub(super) workspace: Option<Arc<crate::workspace::Workspace>>,
    /// Requests to the destination's DCR.
    pub(super) dcr: Arc<crate::workspace::DcrMeter>,
    pub(super) ready_window: Duration,
}

impl AlertInputs {
    /// The counters the loss and stall rules follow.
    fn observed(&self) -> Observed {
        let m = &self.upstream_metrics;
        let corrupt_records = match &*self.queue {
            Queue::Disk(q) => q.stats().corrupt_records,
            Queue::Memory(_) => 0,
        };
        Observed {
            dropped: DropReason::ALL
                .iter()
                .map(|r| {
                    let label = crate::telemetry::ReasonLabel { reason: r.as_str() };
                    (r.as_str(), m.samples_dropped.get_or_create(&label).get())
                })
                .collect(),
            corrupt_records,
            forwarded: m.forwarded.samples.get() + m.forwarded.histograms.get(),
            queue_bytes: self.queue.used_bytes(),
        }
    }

    fn signals(&self, watch: &Watch, now: SystemTime) -> Signals {
        let (workspace_series, workspace_events) = match &self.workspace {
            Some(w) => {
                let (series, events) = w.refresh(now);
                (Some(series), Some(events))
            }
            None => (None, None),
        };
        let pl = self.private_link.snapshot();
        let on = pl.mode != Mode::Off;
        let token = self.identity.state();
        let not_after = self.cert_not_after.get();
        Signals {
            upstream_host: self.host.clone(),
            mode: Some(pl.mode),
            verdict: pl.resolution.as_ref().filter(|_| on).map(|r| r.verdict),
            verdict_detail: pl
                .resolution
                .as_ref()
                .map(|r| r.detail.clone())
                .unwrap_or_default(),
            on_public_fallback: pl.mode == Mode::Prefer && pl.path == ActivePath::Public,
            fallback_since: pl.fallback_since,
            dns_answer_changed: pl.dns_changed,
            probe_failure: pl.probe_failure,
            upstream_rejecting: self.health.rejection(),
            queue_fill: self.queue.used_bytes() as f64 / self.queue.max_bytes().max(1) as f64,
            token_error: if token.valid { None } else { token.last_error },
            upstream_unavailable: self.health.unavailable_for(self.ready_window).map(|d| {
                (
                    d,
                    self.ready_window,
                    self.health
                        .last_error()
                        .unwrap_or_else(|| "no request has been answered yet".into()),
                )
            }),
            drops: watch.drops(),
            corrupt_records_at: watch.corrupt_records_at(),
            queue_holding_since: watch.queue_holding_since(),
            last_forward: Some(watch.last_forward()),
            receiver_cert_not_after: (not_after > 0)
                .then(|| SystemTime::UNIX_EPOCH + Duration::from_secs(not_after as u64)),
            queue_disk_used: self.queue_metrics.disk_used(),
            queue_failed: self.queue.failed(),
            queue_stranded: self.stranded.clone(),
            ingestion_not_visible: self.canary.get(),
            workspace_series,
            workspace_events,
            dcr_requests: Some(self.dcr.refresh(now)),
        }
    }
}

/// What the alert rules read of one route's destination, and its name when there are routes
/// (each of its alerts then carries `route="<name>"`, and `url="<its URL>"` when the route
/// spreads over several).
pub(super) struct RouteAlerts {
    pub(super) route: Option<String>,
    pub(super) url: Option<String>,
    pub(super) inputs: AlertInputs,
}

/// Every second: refreshes the read gauges, evaluates the alert rules of every route and hands
/// the result to the alerter.
/// `routes` grows when a reload adds a route (entries are never removed).
pub(super) async fn evaluate_alerts(
    routes: Arc<std::sync::RwLock<Vec<Arc<RouteAlerts>>>>,
    alerter: Arc<crate::alert::Alerter>,
    stop: CancellationToken,
) {
    let mut watches: Vec<Watch> = Vec::new();
    loop {
        let routes: Vec<Arc<RouteAlerts>> = routes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        while watches.len() < routes.len() {
            watches.push(Watch::new(SystemTime::now()));
        }
        let mut firing = Vec::new();
        for (r, watch) in routes.iter().zip(&mut watches) {
            let inputs = &r.inputs;
            inputs.queue_metrics.update(&inputs.queue);
            inputs.upstream_metrics.available.set(i64::from(
                inputs.health.unavailable_for(inputs.ready_window).is_none(),
            ));
            if let Some(n) = inputs.upstream.requests_last_minute() {
                inputs.upstream_metrics.requests_per_minute.set(n as i64);
            }
            let now = SystemTime::now();
            watch.observe(now, inputs.observed());
            firing.extend(
                crate::alert::evaluate_at(&inputs.signals(watch, now), now)
                    .into_iter()
                    .map(|mut a| {
                        if let Some(route) = &r.route {
                            a.labels.insert("route".into(), route.clone());
                        }
                        // A workspace alert is the route's, not one destination's.
                        if let (Some(url), false) =
                            (&r.url, crate::alert::rules::is_workspace_alert(a.name))
                        {
                            a.labels.insert("url".into(), url.clone());
                        }
                        a
                    }),
            );
        }
        alerter.update(firing);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.cancelled() => return,
        }
    }
}
