//! Alerts about promlink itself: rules over its internal state, and an Alertmanager client.
//!
//! - [`signals`]: [`Signals`], the snapshot of the running stages the rules read (Private Link
//!   verdict and path, DNS changes, probe failures, upstream refusals, queue fill, token errors).
//! - [`rules`]: [`evaluate`] turns a snapshot into firing [`Alert`]s, each with what was seen, what
//!   it means, the documented fix in Azure's terms and its runbook; the delivery and storage
//!   rules (no upstream answer, drops, damaged records, stalls, certificate, disk) are in
//!   `delivery`, those about Azure's workspace and DCR limits in `limits`.
//! - [`watch`]: turns counters into the times things last happened, for those rules.
//! - [`alertmanager`]: [`Alerter`] posts them to Alertmanager's API v2 (`/api/v2/alerts`), re-sends
//!   while they fire and resolves them when they stop.
//! - [`metrics`]: `promlink_alerts_firing{alertname}` and
//!   `promlink_alertmanager_posts_total{outcome}`.
//!
//! The same alerts over promlink's metrics, for users who alert from Prometheus, are in
//! `deploy/prometheus-rule.yaml` (a `PrometheusRule`); unit tests keep its alert names,
//! remediation texts, thresholds and runbook links (`docs/runbooks.md`) in step with [`rules`],
//! and run `promtool test rules` with `tests/promtool/prometheus-rule.test.yaml`.

pub mod alertmanager;
mod delivery;
mod limits;
pub mod metrics;
pub mod rules;
pub mod signals;
pub mod watch;

pub use alertmanager::{AlertError, Alerter};
pub use metrics::Metrics;
pub use rules::{evaluate, evaluate_at, Alert};
pub use signals::Signals;

#[cfg(test)]
mod tests;
