//! The limits promlink measures its sending against (see [`crate::workspace`]):
//! `workspace_active_series_limit`, `workspace_events_per_minute_limit` and
//! `dcr_requests_per_minute_limit`.

use super::problems::Problems;
use super::{defaults, Settings};

/// The limits of the workspace and the DCRs a route writes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkspaceLimits {
    /// Distinct series within 12 hours (`workspace_active_series_limit`).
    pub active_series: u64,
    /// Samples a minute (`workspace_events_per_minute_limit`).
    pub events_per_minute: u64,
    /// Requests a minute to one DCR (`dcr_requests_per_minute_limit`).
    pub dcr_requests_per_minute: u64,
}

impl Default for WorkspaceLimits {
    fn default() -> Self {
        Self {
            active_series: defaults::WORKSPACE_ACTIVE_SERIES_LIMIT,
            events_per_minute: defaults::WORKSPACE_EVENTS_PER_MINUTE_LIMIT,
            dcr_requests_per_minute: u64::from(defaults::AZURE_REQUESTS_PER_MINUTE),
        }
    }
}

/// The limits of `s`, each positive.
pub(super) fn resolve(s: &Settings, p: &mut Problems) -> WorkspaceLimits {
    let d = WorkspaceLimits::default();
    let mut positive = |key: &str, v: Option<u64>, default: u64| match v {
        Some(0) => {
            p.bad(
                key,
                0,
                "must be greater than zero (it is the limit the alert compares with)",
            );
            default
        }
        Some(v) => v,
        None => default,
    };
    WorkspaceLimits {
        active_series: positive(
            "workspace_active_series_limit",
            s.workspace_active_series_limit,
            d.active_series,
        ),
        events_per_minute: positive(
            "workspace_events_per_minute_limit",
            s.workspace_events_per_minute_limit,
            d.events_per_minute,
        ),
        dcr_requests_per_minute: positive(
            "dcr_requests_per_minute_limit",
            s.dcr_requests_per_minute_limit,
            d.dcr_requests_per_minute,
        ),
    }
}
