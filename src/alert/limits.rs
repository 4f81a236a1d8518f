//! The rules about Azure's limits: a route's active series and samples a minute against its
//! workspace's limits, and a destination's requests a minute against its DCR's. Each fires as a
//! warning from [`NEAR_LIMIT_WARNING`] of its limit and as critical from
//! [`NEAR_LIMIT_CRITICAL`], as Azure's recommended alerts for a workspace do; the figures are
//! refreshed every second, and the rules add no delay of their own.

use std::collections::BTreeMap;

use super::rules::{
    alert, base_labels, host, Alert, CRITICAL, DCR_REQUESTS_NEAR_LIMIT, NEAR_LIMIT_CRITICAL,
    NEAR_LIMIT_WARNING, REMEDIATION_DCR_REQUESTS, REMEDIATION_WORKSPACE_EVENTS,
    REMEDIATION_WORKSPACE_SERIES, WARNING, WORKSPACE_EVENTS_NEAR_LIMIT,
    WORKSPACE_SERIES_NEAR_LIMIT,
};
use super::signals::Signals;
use crate::workspace::Level;

/// Every limit alert that fires for `s`.
pub(super) fn evaluate(s: &Signals) -> Vec<Alert> {
    let mut out = Vec::new();
    if let Some(l) = s.workspace_series {
        out.extend(near_limit(
            WORKSPACE_SERIES_NEAR_LIMIT,
            l,
            BTreeMap::new(),
            "the workspace's active series",
            "distinct series sent within the last 12 hours (estimated)",
            "workspace_active_series_limit",
            REMEDIATION_WORKSPACE_SERIES,
        ));
    }
    if let Some(l) = s.workspace_events {
        out.extend(near_limit(
            WORKSPACE_EVENTS_NEAR_LIMIT,
            l,
            BTreeMap::new(),
            "the workspace's events per minute",
            "samples sent in the last minute",
            "workspace_events_per_minute_limit",
            REMEDIATION_WORKSPACE_EVENTS,
        ));
    }
    if let Some(l) = s.dcr_requests {
        let what = format!("requests per minute to the DCR at {}", host(s));
        out.extend(near_limit(
            DCR_REQUESTS_NEAR_LIMIT,
            l,
            base_labels(s),
            &what,
            "requests sent in the last minute, retries included",
            "dcr_requests_per_minute_limit",
            REMEDIATION_DCR_REQUESTS,
        ));
    }
    out
}

fn near_limit(
    name: &'static str,
    level: Level,
    labels: BTreeMap<String, String>,
    what: &str,
    measured: &str,
    key: &str,
    remediation: &str,
) -> Option<Alert> {
    let ratio = level.ratio();
    let severity = if ratio >= NEAR_LIMIT_CRITICAL {
        CRITICAL
    } else if ratio >= NEAR_LIMIT_WARNING {
        WARNING
    } else {
        return None;
    };
    let pct = (ratio * 100.0).floor();
    Some(alert(
        name,
        severity,
        labels,
        format!("promlink is at {pct}% of {what}"),
        format!(
            "{} {measured} against a limit of {} ({key}): {pct}%; the alert is a warning from {}% and critical from {}%",
            level.value,
            level.limit,
            NEAR_LIMIT_WARNING * 100.0,
            NEAR_LIMIT_CRITICAL * 100.0
        ),
        remediation.to_string(),
    ))
}
