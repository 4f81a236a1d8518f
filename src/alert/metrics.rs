//! Alerting metrics, registered in promlink's registry (so `promlink_alerts_firing` and
//! `promlink_alertmanager_posts_total`).
//!
//! Label values are closed sets: alert names from [`super::rules::ALL_ALERTS`] and the outcome of
//! a post. No Alertmanager URL ever becomes a label.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label set of [`Metrics::firing`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertnameLabel {
    /// One of [`super::rules::ALL_ALERTS`].
    pub alertname: &'static str,
}

/// Label set of [`Metrics::posts`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `success` (a 2xx answer) or `failure` (anything else, or no answer).
    pub outcome: &'static str,
}

/// Metrics of the alert stage. Cheap to clone: every field shares its value.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Alerts firing now, by alert name (0 for every known name that does not fire).
    pub firing: Family<AlertnameLabel, Gauge>,
    /// Posts to Alertmanager instances, by outcome (one per instance and attempt).
    pub posts: Family<OutcomeLabel, Counter>,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry` (promlink's, prefixed `promlink_`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        for name in super::rules::ALL_ALERTS {
            let _ = m.firing.get_or_create(&AlertnameLabel { alertname: name });
        }
        for outcome in ["success", "failure"] {
            let _ = m.posts.get_or_create(&OutcomeLabel { outcome });
        }
        registry.register(
            "alerts_firing",
            "Alerts promlink raises about itself that fire now, by alert name",
            m.firing.clone(),
        );
        registry.register(
            "alertmanager_posts",
            "Posts of alerts to Alertmanager instances, by outcome",
            m.posts.clone(),
        );
        m
    }

    pub(crate) fn posted(&self, ok: bool) {
        let outcome = if ok { "success" } else { "failure" };
        self.posts.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// The number of firing alerts called `alertname`.
    pub fn firing_count(&self, alertname: &'static str) -> i64 {
        self.firing
            .get_or_create(&AlertnameLabel { alertname })
            .get()
    }

    /// Posts so far with `outcome` (`success` or `failure`).
    pub fn post_count(&self, outcome: &'static str) -> u64 {
        self.posts.get_or_create(&OutcomeLabel { outcome }).get()
    }
}
