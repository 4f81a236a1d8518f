//! [`Signals`]: the snapshot of promlink's running stages that the alert rules read.
//!
//! The lead's wiring fills one every few seconds from the Private Link verifier, the path policy,
//! the upstream's [`crate::upstream::Health`], the queue and the identity refresher, and hands it
//! to [`crate::alert::rules::evaluate`]. Every field describes the *current* state: a condition
//! that has cleared is reset to its empty value, and the alert it drove resolves.

use std::time::{Duration, SystemTime};

use crate::privatelink::{Mode, Verdict};

/// A snapshot of what the alert rules look at. `Default` is "nothing known, nothing wrong".
#[derive(Clone, Debug, Default)]
pub struct Signals {
    /// The DCE host name promlink forwards to (`<dce>.<region>-1.metrics.ingest.monitor.azure.com`);
    /// becomes the `upstream` label of every alert. Empty when not known yet.
    pub upstream_host: String,
    /// The configured Private Link path policy; `None` when Private Link handling is not set up
    /// (treated like [`Mode::Off`]: no Private Link alerts).
    pub mode: Option<Mode>,
    /// The latest DNS verdict for `upstream_host`; `None` until the first verification has
    /// finished (no alert is raised on no evidence).
    pub verdict: Option<Verdict>,
    /// The verifier's one-line explanation of `verdict` (names, chain and addresses seen).
    pub verdict_detail: String,
    /// Traffic currently goes to the public endpoint (mode `prefer` fell back).
    pub on_public_fallback: bool,
    /// When the current stay on the public fallback began; `None` when not on it.
    pub fallback_since: Option<SystemTime>,
    /// The last time the DNS answer for `upstream_host` changed and how (`"old -> new"`, e.g.
    /// `"10.0.0.5 -> 20.42.1.1"`). Kept after the change; the rule decides how long it alerts
    /// ([`crate::alert::rules::DNS_CHANGE_WINDOW`]).
    pub dns_answer_changed: Option<(SystemTime, String)>,
    /// DNS verifies, but the TCP connect or TLS handshake to the private endpoint fails (a
    /// firewall, NSG or network policy in the way): the probe's error, while it persists.
    pub probe_failure: Option<String>,
    /// The upstream's last refusal (401, 403 or another 4xx, or 429) and its message, while it
    /// persists; `None` once the upstream accepts again.
    pub upstream_rejecting: Option<(u16, String)>,
    /// Queue use, 0.0 (empty) to 1.0 (full). NaN counts as empty.
    pub queue_fill: f64,
    /// The last token fetch error (Entra ID or managed identity), while refreshes keep failing;
    /// `None` after a successful refresh. Must never hold a secret.
    pub token_error: Option<String>,
    /// The upstream has given no HTTP answer for this long (more than `ready_window`, the
    /// second field), with why the last attempt got none; `None` while it answers.
    pub upstream_unavailable: Option<(Duration, Duration, String)>,
    /// Reasons samples were dropped for (not the upstream's refusals, which are
    /// `upstream_rejecting`), with when each last happened ([`super::watch::Watch`]).
    pub drops: Vec<(&'static str, SystemTime)>,
    /// When the disk queue last skipped damaged records (damage found at start included).
    pub corrupt_records_at: Option<SystemTime>,
    /// Since when the queue has held data without a break; `None` while it is empty.
    pub queue_holding_since: Option<SystemTime>,
    /// When the upstream last accepted samples, or when promlink started if it has not yet.
    pub last_forward: Option<SystemTime>,
    /// When the receiver's serving certificate expires; `None` without TLS.
    pub receiver_cert_not_after: Option<SystemTime>,
    /// Used share (0..1) of the filesystem holding the disk queue; `None` for the memory queue
    /// or when it cannot be read.
    pub queue_disk_used: Option<f64>,
    /// Why the disk queue takes no writes until a restart (its failed state); `None` while it
    /// works, and always for the memory queue.
    pub queue_failed: Option<String>,
    /// Queues under `queue_dir` that no configured route uses, with their bytes on disk (found
    /// at start).
    pub queue_stranded: Vec<(String, u64)>,
    /// Why the destination's latest canary is not visible through the query endpoint (it went
    /// missing and none was seen since); `None` without a canary or once one is visible.
    pub ingestion_not_visible: Option<String>,
    /// The route's active series (estimated) against `workspace_active_series_limit`; `None`
    /// when another destination of the route watches the workspace.
    pub workspace_series: Option<crate::workspace::Level>,
    /// The route's samples of the last minute against `workspace_events_per_minute_limit`.
    pub workspace_events: Option<crate::workspace::Level>,
    /// Requests to the destination's DCR in the last minute against
    /// `dcr_requests_per_minute_limit`.
    pub dcr_requests: Option<crate::workspace::Level>,
}
