//! Token metrics, registered under `token_` in promlink's registry (so `promlink_token_*`).
//!
//! Label values are a closed enum ([`Outcome`]); no tenant, client id or URL ever becomes a label.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// How a token fetch (or token-file re-read) ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// A new token was stored.
    Success,
    /// The fetch failed; the refresher will retry.
    Failure,
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: Outcome,
}

/// The identity stage's metrics. Cheap to clone: every field shares its value.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    refreshes: Family<OutcomeLabels, Counter>,
    invalidations: Counter,
    expiry_timestamp_seconds: Gauge,
    valid: Gauge,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry` under `promlink_token_`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        for outcome in [Outcome::Success, Outcome::Failure] {
            let _ = metrics.refreshes.get_or_create(&OutcomeLabels { outcome });
        }
        let sub = registry.sub_registry_with_prefix("token");
        sub.register(
            "refreshes",
            "Token fetches from Entra ID or the managed identity endpoint, and token file re-reads, by outcome",
            metrics.refreshes.clone(),
        );
        sub.register(
            "invalidations",
            "Tokens the upstream rejected with 401 or 403, each forcing one early refresh",
            metrics.invalidations.clone(),
        );
        sub.register(
            "expiry_timestamp_seconds",
            "Unix time at which the current token expires, or 0 when there is none or it does not expire",
            metrics.expiry_timestamp_seconds.clone(),
        );
        sub.register(
            "valid",
            "Whether an unexpired token is ready to be sent upstream (1) or not (0)",
            metrics.valid.clone(),
        );
        metrics
    }

    pub(crate) fn refreshed(&self, outcome: Outcome) {
        self.refreshes
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub(crate) fn invalidated(&self) {
        self.invalidations.inc();
    }

    pub(crate) fn publish(&self, valid: bool, expires_at: Option<std::time::SystemTime>) {
        let secs = expires_at
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.expiry_timestamp_seconds.set(secs);
        self.valid.set(i64::from(valid));
    }
}
