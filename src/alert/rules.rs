//! Alert rules over a [`Signals`] snapshot: what is wrong, what it means, and the documented fix
//! in Azure's terms.
//!
//! [`evaluate`] is a pure function of the snapshot (and the clock, for [`DNS_CHANGE_WINDOW`]); it
//! returns every alert that fires now. The same alerts, written over promlink's metrics for
//! users who alert from Prometheus, are in `deploy/prometheus-rule.yaml`, whose annotations carry
//! the remediation texts below word for word (a unit test holds the two together), with
//! [`RULE_FILE_ONLY`] alerts that only Prometheus can raise. Every alert's runbook, a section of
//! `docs/runbooks.md`, is at [`runbook_url`].
//!
//! Sources: Azure Monitor Private Link
//! (<https://learn.microsoft.com/azure/azure-monitor/logs/private-link-configure>), the metrics
//! ingestion API's documented answers (403: Monitoring Metrics Publisher role missing or not yet
//! applied; 422: duplicate series), and the firewall options of the project's design: (a) a path
//! to the public ingestion endpoints, (b) only the AMPLS / DCE private path.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::signals::Signals;
use crate::privatelink::{Mode, Verdict};

/// Critical: data is held or lost, or soon will be; an operator must act.
pub const CRITICAL: &str = "critical";
/// Warning: data flows, but not as configured or not for long.
pub const WARNING: &str = "warning";

/// Private Link is required or preferred, but the DCE does not verify as reached privately.
pub const PRIVATE_LINK_NOT_VERIFIED: &str = "PromlinkPrivateLinkNotVerified";
/// Traffic is on the public endpoint (mode `prefer` fell back).
pub const ON_PUBLIC_FALLBACK: &str = "PromlinkOnPublicFallback";
/// The DNS answer for the DCE changed recently.
pub const DNS_ANSWER_CHANGED: &str = "PromlinkDnsAnswerChanged";
/// The upstream refuses requests (4xx).
pub const UPSTREAM_REJECTING: &str = "PromlinkUpstreamRejecting";
/// The queue is at least [`QUEUE_NEARLY_FULL`] full.
pub const QUEUE_NEARLY_FULL_ALERT: &str = "PromlinkQueueNearlyFull";
/// Token refreshes fail.
pub const TOKEN_REFRESH_FAILING: &str = "PromlinkTokenRefreshFailing";
/// The upstream has given no HTTP answer (connection refused, DNS, TLS, timeout) for
/// `ready_window`.
pub const UPSTREAM_UNAVAILABLE: &str = "PromlinkUpstreamUnavailable";
/// Prometheus cannot scrape promlink, or has no promlink target (rule file only: a process that
/// is down cannot say so).
pub const DOWN: &str = "PromlinkDown";
/// Samples were dropped, by reason (other than the upstream's refusals, which are
/// [`UPSTREAM_REJECTING`]).
pub const SAMPLES_DROPPED: &str = "PromlinkSamplesDropped";
/// The disk queue skipped damaged records.
pub const QUEUE_CORRUPT_RECORDS: &str = "PromlinkQueueCorruptRecords";
/// The queue has held data for [`DELIVERY_STALLED_AFTER`] and nothing was forwarded meanwhile.
pub const DELIVERY_STALLED: &str = "PromlinkDeliveryStalled";
/// The receiver's serving certificate expires within [`CERTIFICATE_EXPIRY_WARNING`].
pub const RECEIVER_CERTIFICATE_EXPIRING: &str = "PromlinkReceiverCertificateExpiring";
/// The filesystem of the queue directory is more than [`QUEUE_DISK_FILLING_USED`] used.
pub const QUEUE_DISK_FILLING: &str = "PromlinkQueueDiskFilling";
/// The disk queue stopped writing until a restart (its failed state).
pub const QUEUE_FAILED: &str = "PromlinkQueueFailed";
/// A queue under `queue_dir` belongs to no configured route: nothing delivers it.
pub const QUEUE_STRANDED: &str = "PromlinkQueueStranded";
/// A canary written through a route was not visible through the workspace's query endpoint
/// within `canary_timeout` (and none was seen since).
pub const INGESTION_NOT_VISIBLE: &str = "PromlinkIngestionNotVisible";
/// A route's active series (estimated) near `workspace_active_series_limit`.
pub const WORKSPACE_SERIES_NEAR_LIMIT: &str = "PromlinkWorkspaceSeriesNearLimit";
/// A route's samples a minute near `workspace_events_per_minute_limit`.
pub const WORKSPACE_EVENTS_NEAR_LIMIT: &str = "PromlinkWorkspaceEventsNearLimit";
/// Requests a minute to a DCR near `dcr_requests_per_minute_limit`.
pub const DCR_REQUESTS_NEAR_LIMIT: &str = "PromlinkDcrRequestsNearLimit";

/// Every alert name [`evaluate`] can return, in a stable order (for metrics and the rule file).
pub const ALL_ALERTS: [&str; 18] = [
    PRIVATE_LINK_NOT_VERIFIED,
    ON_PUBLIC_FALLBACK,
    DNS_ANSWER_CHANGED,
    UPSTREAM_REJECTING,
    QUEUE_NEARLY_FULL_ALERT,
    TOKEN_REFRESH_FAILING,
    UPSTREAM_UNAVAILABLE,
    SAMPLES_DROPPED,
    QUEUE_CORRUPT_RECORDS,
    DELIVERY_STALLED,
    RECEIVER_CERTIFICATE_EXPIRING,
    QUEUE_DISK_FILLING,
    QUEUE_FAILED,
    QUEUE_STRANDED,
    INGESTION_NOT_VISIBLE,
    WORKSPACE_SERIES_NEAR_LIMIT,
    WORKSPACE_EVENTS_NEAR_LIMIT,
    DCR_REQUESTS_NEAR_LIMIT,
];

/// Whether `alert` is about a route's workspace (not one of its destinations).
pub fn is_workspace_alert(alert: &str) -> bool {
    alert == WORKSPACE_SERIES_NEAR_LIMIT || alert == WORKSPACE_EVENTS_NEAR_LIMIT
}

/// Alerts that exist only in `deploy/prometheus-rule.yaml`: they need a view from outside the
/// process (Prometheus' `up`), so promlink never evaluates them itself.
pub const RULE_FILE_ONLY: [&str; 1] = [DOWN];

/// Where the runbooks live; every alert's `runbook_url` is this plus `#` and its anchor
/// ([`runbook_url`]).
pub const RUNBOOK_BASE: &str = "https://github.com/promlink/promlink/blob/main/docs/runbooks.md";

/// The runbook of `alert`: [`RUNBOOK_BASE`] with the lowercase alert name as anchor (GitHub's
/// anchor for the heading `## <alert>` in `docs/runbooks.md`).
pub fn runbook_url(alert: &str) -> String {
    format!("{RUNBOOK_BASE}#{}", alert.to_ascii_lowercase())
}

/// How long [`DNS_ANSWER_CHANGED`] fires after a change.
pub const DNS_CHANGE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Queue fill (0..1) from which [`QUEUE_NEARLY_FULL_ALERT`] fires.
pub const QUEUE_NEARLY_FULL: f64 = 0.8;
/// How long the queue must have held data, with nothing forwarded, before [`DELIVERY_STALLED`]
/// fires.
pub const DELIVERY_STALLED_AFTER: Duration = Duration::from_secs(10 * 60);
/// How long before the receiver certificate's expiry [`RECEIVER_CERTIFICATE_EXPIRING`] fires.
pub const CERTIFICATE_EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 60 * 60);
/// How long [`SAMPLES_DROPPED`] and [`QUEUE_CORRUPT_RECORDS`] fire after the last loss.
pub const LOSS_ALERT_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Used share (0..1) of the queue directory's filesystem above which [`QUEUE_DISK_FILLING`]
/// fires.
pub const QUEUE_DISK_FILLING_USED: f64 = 0.8;
/// Share (0..1) of a workspace or DCR limit from which its near-limit alert fires as a
/// [`WARNING`] (as Azure's recommended alerts do).
pub const NEAR_LIMIT_WARNING: f64 = 0.75;
/// Share (0..1) of a limit from which its near-limit alert is [`CRITICAL`].
pub const NEAR_LIMIT_CRITICAL: f64 = 0.95;
/// Longest upstream or token error message copied into an alert (Alertmanager keeps them, and
/// notifications have size limits).
pub const MAX_MESSAGE_CHARS: usize = 512;

/// Remediation when DNS verifies but TCP or TLS to the private endpoint fails.
pub const REMEDIATION_PROBE: &str = "DNS gives the private endpoint, but a TCP connection or TLS handshake to it on port 443 fails: allow outbound TCP 443 from the cluster's nodes and pods to the private endpoint's IP address(es) in network security groups, Azure Firewall or NVA rules and Kubernetes network policies; check that the private endpoint connection is Approved and that its VNet is the cluster's or peered with it, and that no TLS-inspecting proxy sits in the path";
/// Remediation while on the public fallback (firewall option (a)).
pub const REMEDIATION_FALLBACK: &str = "promlink is sending to the public ingestion endpoint (mode prefer, firewall option (a)): while it does, the firewall must allow TCP 443 to *.ingest.monitor.azure.com and *.handler.control.monitor.azure.com; traffic returns to the private endpoint by itself once the private path verifies and connects for return_after; to keep data off the public path entirely use mode require (firewall option (b): only the AMPLS / DCE private path); fix the private path as the PromlinkPrivateLinkNotVerified alert says";
/// Remediation after a change of the DNS answer.
pub const REMEDIATION_DNS_CHANGED: &str = "expected after the private endpoint was re-created or the DCE moved between Azure Monitor Private Link Scopes; otherwise compare the answer with the private endpoint's network interface IPs: a second AMPLS on the same DNS overwrites the first one's records (one AMPLS per DNS), the privatelink.monitor.azure.com zone link or a conditional forwarder may have changed, or a hosts file or custom record may bypass the zone";
/// Remediation for 401: the token itself is refused.
pub const REMEDIATION_401: &str = "the upstream refused the token (401): check that the token is for the right cloud and audience (scope https://monitor.azure.com/.default; US Government https://monitor.azure.us/.default, China https://monitor.azure.cn/.default), that the tenant is the DCR's, and that the node clock is correct";
/// Remediation for 403: the role is missing or not applied yet.
pub const REMEDIATION_403: &str = "the identity lacks the Monitoring Metrics Publisher role on the data collection rule (DCR) (403): assign it on the DCR (az role assignment create --role \"Monitoring Metrics Publisher\" --assignee <client id> --scope <DCR resource id>); a new assignment takes about 30 minutes to apply and the upstream answers 403 meanwhile; promlink keeps retrying and holds the data; if promlink is on the public fallback and the DCE disables public network access, a 403 can also mean the public path is refused (undocumented): fix the private path";
/// Remediation for 404.
pub const REMEDIATION_404: &str = "the upstream does not know the URL (404): check the DCE's metrics ingestion endpoint (properties.metricsIngestion.endpoint), the DCR immutable id (dcr- followed by 32 hex digits, not the resource name), the stream Microsoft-PrometheusMetrics and api-version 2023-04-24, and that the DCR is associated with the DCE in the same region as the Azure Monitor workspace; promlink drops these batches";
/// Remediation for 422.
pub const REMEDIATION_422: &str = "the upstream refused duplicate time series in one request (422): two senders (e.g. HA Prometheus replicas without a distinguishing external label) or relabeling that collapses label sets write the same series and timestamp; names that differ only by case collide; promlink drops these batches";
/// Remediation for 400.
pub const REMEDIATION_400: &str = "the upstream says the data is invalid (400): check the label limits (63 labels per series, names up to 511 characters, values up to 1023) and that samples are recent (samples older than about 20 minutes may be rejected); promlink drops these batches";
/// Remediation for 429.
pub const REMEDIATION_429: &str = "the upstream throttles (429): per DCR 15,000 requests per minute and 50 GB per minute (not raisable), per Azure Monitor workspace 1,000,000 active series and 1,000,000 events per minute by default (raise with a support request); send larger batches or fewer series; promlink retries, honouring Retry-After";
/// Remediation for 413.
pub const REMEDIATION_413: &str = "the upstream says a request is too large (413): promlink splits batches by itself; lower the batch size limits if this persists";
/// Remediation for any other 4xx.
pub const REMEDIATION_OTHER_4XX: &str = "the upstream refused the request for good: read the upstream's message, check the ingestion URL, DCR and identity; promlink drops these batches";
/// Remediation for a nearly full queue.
pub const REMEDIATION_QUEUE: &str = "the upstream takes data slower than senders write it, or not at all: look at the other promlink alerts (a refusing upstream, a missing token, or mode require holding data while Private Link does not verify); if the upstream is healthy, raise the queue size or spread the load; when the queue is full promlink answers senders with 429/503 and they retry";
/// Remediation for failing token refreshes.
pub const REMEDIATION_TOKEN: &str = "Entra ID is never reached through the Azure Monitor Private Link Scope: allow outbound TCP 443 to the authority host (login.microsoftonline.com; US Government login.microsoftonline.us; China login.partner.microsoftonline.cn), e.g. with the service tag AzureActiveDirectory; for managed identity the instance metadata endpoint must be reachable from the pod; for workload identity check the service account annotation azure.workload.identity/client-id, the pod label azure.workload.identity/use=true and a federated credential with audience api://AzureADTokenExchange; for a client secret or certificate check that it has not expired and belongs to the application in that tenant";

/// Remediation when the upstream gives no HTTP answer.
pub const REMEDIATION_UPSTREAM_UNAVAILABLE: &str = "promlink gets no HTTP answer from the DCE (connection refused or reset, DNS failure, TLS failure or timeout), so nothing is delivered: the queue keeps the data (/ready stays 200, so the pod stays in its Service) until it is full, then senders get 503 and keep the data in their WAL; GET /status names the failing check and promlink doctor (helm test, or the doctor Job) shows which step fails from the pod's network: DNS of the DCE name (the privatelink.monitor.azure.com zone link, or a conditional forwarder to 168.63.129.16), outbound TCP 443 to the private endpoint IP(s) (with mode prefer also *.ingest.monitor.azure.com) in network security groups, Azure Firewall or NVA rules and Kubernetes network policies, the VPN or ExpressRoute link of an on-premises gateway, an HTTPS_PROXY that refuses the DCE host or inspects TLS (then its CA belongs in ca_file), and that the DCE still exists (az monitor data-collection endpoint show)";
/// Remediation when Prometheus cannot scrape promlink (rule file only).
pub const REMEDIATION_DOWN: &str = "Prometheus cannot scrape promlink or has no promlink target: while it is down, its senders cannot write to it (a sidecar's Prometheus keeps the data in its WAL for about 2 hours; a gateway's senders move to other replicas, if any are up) and a durable queue waits on its volume; check kubectl get pods -l app.kubernetes.io/name=promlink and kubectl describe pod for CrashLoopBackOff, OOMKilled (the memory limit must exceed queue_max_bytes of a memory queue plus the decode budgets), Pending (an unbound PersistentVolumeClaim, no node in the PVC's zone) or exit code 64 (a configuration error: kubectl logs --previous names the key); if the pods run, check that the ServiceMonitor or PodMonitor carries the label the Prometheus Operator's selector wants (release: <kube-prometheus-stack release>), that its port, scheme and tlsConfig match the receiver (HTTPS with inbound TLS), that a NetworkPolicy admits Prometheus on port 8081, and that the job label still matches this rule's job selector";
/// Remediation for samples dropped as `too_large`.
pub const REMEDIATION_DROPPED_TOO_LARGE: &str = "the upstream refused a single series' data as too large (413) even after promlink split the batch down to it, and promlink dropped it: find the series with very long label values or very large native histograms at the sender and drop or shorten them with metric_relabel_configs or write_relabel_configs (Azure's label limits: 63 labels per series, names up to 511 characters, values up to 1023); lowering max_bytes_per_request does not help a single series";
/// Remediation for samples dropped as `shutdown`.
pub const REMEDIATION_DROPPED_SHUTDOWN: &str = "the memory queue still held data when shutdown_grace ran out after SIGTERM, and it was dropped: give the drain more time (shutdown_grace, with the pod's terminationGracePeriodSeconds above it; the chart derives it), make sure the upstream is healthy before rollouts, scale-downs and node drains, or use the disk queue (queue_dir on a PersistentVolumeClaim), which keeps undelivered data for the next start";
/// Remediation for samples dropped as `too_old`.
pub const REMEDIATION_DROPPED_TOO_OLD: &str = "samples older than max_sample_age were dropped before sending (Azure reportedly refuses samples older than about 20 minutes; undocumented): they aged in the queue during an upstream outage or a backlog, or arrived old (a Prometheus replaying its WAL after an outage, a sender with a wrong clock); fix the outage the other promlink alerts name, check the nodes' clock synchronisation, and raise max_sample_age only if the upstream accepts older data";
/// Remediation for samples dropped as `expired`.
pub const REMEDIATION_DROPPED_EXPIRED: &str = "data waited in the queue longer than queue_max_age and was dropped: the upstream accepted nothing for that long; fix the cause the other promlink alerts name (PromlinkUpstreamUnavailable, PromlinkUpstreamRejecting, PromlinkTokenRefreshFailing, PromlinkPrivateLinkNotVerified), or raise queue_max_age, with queue_max_bytes and the volume size, to ride out longer outages";
/// Remediation for samples dropped for a reason without its own text.
pub const REMEDIATION_DROPPED_OTHER: &str = "promlink dropped samples for a reason without a specific remediation here: promlink's log has an ERROR line for each dropped batch with the reason and the upstream's message";
/// Remediation for damaged disk queue records.
pub const REMEDIATION_QUEUE_CORRUPT: &str = "promlink skipped damaged records of its disk queue, each one lost (logged with segment and offset): a torn write at the end of the last segment after a crash or power loss (logged as a warning) loses a record no sender was told was stored under fsync always, and at most the last interval's records under fsync interval; damage elsewhere, or again and again, points at the storage: look for I/O errors in kubectl describe pvc and pv and in the node's kernel log, use a block volume (an Azure Disk CSI storage class) rather than a network share or a node's emptyDir, keep fsync always, and never let anything else write, copy or restore into queue_dir while promlink runs (promlink holds a lock; promlink drain takes the same lock)";
/// Remediation when nothing has been forwarded while the queue holds data.
pub const REMEDIATION_DELIVERY_STALLED: &str = "the queue holds data but the upstream has accepted nothing for 10 minutes: the other promlink alerts usually name the cause (PromlinkUpstreamUnavailable, PromlinkUpstreamRejecting with 401/403, PromlinkTokenRefreshFailing, PromlinkPrivateLinkNotVerified with mode require); read the checks of GET /status (private_link, token, upstream, queue) and promlink's log; the queue keeps the data until queue_max_bytes, then senders get 503 and keep it in their WAL; if /status shows every check ok while nothing is forwarded, save kubectl logs and report it as a defect: restarting loses a memory queue's data after shutdown_grace, a disk queue is replayed";
/// Remediation when the receiver's serving certificate expires soon.
pub const REMEDIATION_CERTIFICATE: &str = "the receiver's serving certificate (tls_cert) expires soon, and senders that verify it (Prometheus remote_write with tls_config) fail once it has expired and keep their data in their WAL: with cert-manager, kubectl describe certificate and kubectl get certificaterequest,order,challenge show why the renewal failed (it renews at two thirds of the lifetime by default, so this alert means it did not: issuer not ready, CA or ACME errors); otherwise renew the certificate and replace the Secret (kubectl create secret tls <name> --cert=tls.crt --key=tls.key --dry-run=client -o yaml | kubectl apply -f -); promlink reloads changed files without a restart (promlink_receive_reloads_total{what=\"tls\"}): if the Secret is new but the expiry did not move, check that the Secret is not mounted with subPath (such mounts never see updates) and that the new key matches the certificate (result=\"error\" keeps the old one)";
/// Remediation when the queue directory's filesystem fills.
pub const REMEDIATION_QUEUE_DISK: &str = "the filesystem of queue_dir is filling: when it is full, queue writes fail (ENOSPC), senders get 503 (promlink_receive_rejected_total{reason=\"queue_io\"}) and nothing new is kept; keep queue_max_bytes below the volume size with room for a 16 MiB segment and the filesystem's own overhead, so that the queue refuses writes at its own budget (PromlinkQueueNearlyFull) before the disk fills; if promlink_queue_bytes is large, the upstream is stuck: see PromlinkDeliveryStalled and the other promlink alerts; to add room, expand the PersistentVolumeClaim (its storage class needs allowVolumeExpansion: true, as the Azure Disk CSI classes have: kubectl patch pvc <name> -p '{\"spec\":{\"resources\":{\"requests\":{\"storage\":\"<size>\"}}}}'; a StatefulSet's volumeClaimTemplates are immutable, so patch each replica's PVC); files other than the queue on the volume count too";
/// Remediation when the disk queue is in its failed state.
pub const REMEDIATION_QUEUE_FAILED: &str = "the disk queue takes no writes until promlink restarts (senders get 503 and keep their data in their WAL; /ready fails, so a gateway's Service sends to other replicas): a write to a segment failed and could not be undone, so the end of the segment is unknown, or its commit thread or reader stopped (a panic: the promlink binary exits with code 70 and is restarted instead); what was stored before is still delivered; restart the pod (kubectl delete pod <name>): the queue is replayed from disk and a torn tail is cut off; look for I/O errors in the node's kernel log and in kubectl describe pvc and pv, and move queue_dir to a healthy block volume (an Azure Disk CSI storage class) if they repeat";
/// What to do about [`QUEUE_STRANDED`].
pub const REMEDIATION_QUEUE_STRANDED: &str = "a disk queue under queue_dir belongs to no configured route (its route, or its URL in a route's ingestion_urls, was removed from the configuration while it held data), so nothing delivers it: if the route was removed by mistake, add it back with the same name and URL and promlink delivers the queue; otherwise deliver it with promlink drain --queue-dir <the directory> --ingestion-url <the URL it was for> (as a Kubernetes Job on the same volume: deploy/examples/drain-job.example.yaml), which exits 0 once it is empty, then delete the directory; promlink never deletes it itself";

pub const REMEDIATION_INGESTION_NOT_VISIBLE: &str = "the DCE accepted the data but the canary cannot be read back from the workspace: check the workspace's limits (Azure Monitor workspace, Metrics: active time series and events per minute against their quota; raise them with a support request), that the DCR sends to the workspace behind query_url (its destination in the Azure portal), and promlink_canary_query_errors_total for refused queries (403: grant Monitoring Data Reader on the workspace to promlink's identity)";
/// What to do about [`WORKSPACE_SERIES_NEAR_LIMIT`].
pub const REMEDIATION_WORKSPACE_SERIES: &str = "the workspace counts a series as active for 12 hours after its last sample and, past its limit (1,000,000 by default), throttles ingestion silently: find the costly metrics with promlink top or GET /api/v1/status/cardinality and drop or aggregate them with write_relabel_configs (labeldrop of per-request or per-pod labels, drop of unused metrics), cap a route with max_active_series, or ask Azure support to raise the workspace's active time series limit (Azure Monitor workspace, Metrics: Active Time Series % Utilization) and set workspace_active_series_limit to the new limit; when several promlinks write to one workspace, give each its share";
/// What to do about [`WORKSPACE_EVENTS_NEAR_LIMIT`].
pub const REMEDIATION_WORKSPACE_EVENTS: &str = "the workspace takes 1,000,000 events (samples) per minute by default and throttles ingestion past it: scrape less often (scrape_interval), drop unused metrics with write_relabel_configs, or ask Azure support to raise the workspace's events per minute limit (Azure Monitor workspace, Metrics: Events Per Minute Ingested % Utilization) and set workspace_events_per_minute_limit to the new limit; when several promlinks write to one workspace, give each its share";
/// What to do about [`DCR_REQUESTS_NEAR_LIMIT`].
pub const REMEDIATION_DCR_REQUESTS: &str = "a DCR takes 15,000 requests per minute and this limit cannot be raised; past it the DCE answers 429: send fewer, larger requests (raise max_samples_per_request and max_bytes_per_request, lower shards), or spread the route over more DCRs with ingestion_urls (each series always goes to the same one); max_requests_per_minute makes promlink wait instead of meeting 429s; when several promlinks write to one DCR, set dcr_requests_per_minute_limit and max_requests_per_minute to each one's share";

/// One firing alert, before it is given Alertmanager's shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    /// The alert name (`alertname`), one of [`ALL_ALERTS`].
    pub name: &'static str,
    /// [`CRITICAL`] or [`WARNING`].
    pub severity: &'static str,
    /// Extra labels (e.g. `upstream`, `verdict`, `mode`, `status`): values stay the same while
    /// the condition lasts, since Alertmanager tells alerts apart by their labels.
    pub labels: BTreeMap<String, String>,
    /// One line.
    pub summary: String,
    /// What was seen and what it means.
    pub description: String,
    /// The documented fix, in Azure's terms.
    pub remediation: String,
    /// Its runbook, a section of `docs/runbooks.md` ([`runbook_url`]).
    pub runbook_url: String,
}

/// The remediation text for an upstream refusal with HTTP status `status`.
pub fn rejection_remediation(status: u16) -> &'static str {
    match status {
        401 => REMEDIATION_401,
        403 => REMEDIATION_403,
        404 => REMEDIATION_404,
        422 => REMEDIATION_422,
        400 => REMEDIATION_400,
        429 => REMEDIATION_429,
        413 => REMEDIATION_413,
        _ => REMEDIATION_OTHER_4XX,
    }
}

/// The remediation text for samples dropped with `reason` (the `reason` label of
/// `promlink_samples_dropped_total`). The upstream's refusals (`rejected_*`) are
/// [`UPSTREAM_REJECTING`]'s, with [`rejection_remediation`].
pub fn drop_remediation(reason: &str) -> &'static str {
    match reason {
        "too_large" => REMEDIATION_DROPPED_TOO_LARGE,
        "shutdown" => REMEDIATION_DROPPED_SHUTDOWN,
        "too_old" => REMEDIATION_DROPPED_TOO_OLD,
        "expired" => REMEDIATION_DROPPED_EXPIRED,
        _ => REMEDIATION_DROPPED_OTHER,
    }
}

/// Every alert that fires for `s` now.
pub fn evaluate(s: &Signals) -> Vec<Alert> {
    evaluate_at(s, SystemTime::now())
}

/// Every alert that fires for `s` at time `now` (for tests and replays).
pub fn evaluate_at(s: &Signals, now: SystemTime) -> Vec<Alert> {
    let mut out = Vec::new();
    out.extend(private_link_not_verified(s));
    out.extend(on_public_fallback(s, now));
    out.extend(dns_answer_changed(s, now));
    out.extend(upstream_rejecting(s));
    out.extend(queue_nearly_full(s));
    out.extend(token_refresh_failing(s));
    out.extend(super::delivery::evaluate_at(s, now));
    out.extend(super::limits::evaluate(s));
    out
}

pub(super) fn host(s: &Signals) -> &str {
    if s.upstream_host.is_empty() {
        "the upstream"
    } else {
        &s.upstream_host
    }
}

pub(super) fn base_labels(s: &Signals) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    if !s.upstream_host.is_empty() {
        l.insert("upstream".to_string(), s.upstream_host.clone());
    }
    l
}

/// Cuts `msg` to [`MAX_MESSAGE_CHARS`] characters, on a character boundary.
pub(super) fn clip(msg: &str) -> String {
    let msg = msg.trim();
    match msg.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((i, _)) => format!("{}...", &msg[..i]),
        None => msg.to_string(),
    }
}

pub(super) fn alert(
    name: &'static str,
    severity: &'static str,
    labels: BTreeMap<String, String>,
    summary: String,
    description: String,
    remediation: String,
) -> Alert {
    Alert {
        name,
        severity,
        labels,
        summary,
        description,
        remediation,
        runbook_url: runbook_url(name),
    }
}

fn private_link_not_verified(s: &Signals) -> Option<Alert> {
    let mode = s
        .mode
        .filter(|m| matches!(m, Mode::Require | Mode::Prefer))?;
    let bad_verdict = s.verdict.filter(|v| *v != Verdict::Private);
    if bad_verdict.is_none() && s.probe_failure.is_none() {
        return None;
    }
    let mut labels = base_labels(s);
    labels.insert("mode".into(), mode.as_str().into());
    if let Some(v) = s.verdict {
        labels.insert("verdict".into(), v.as_str().into());
    }
    let mut seen = Vec::new();
    let mut fix = Vec::new();
    if let Some(v) = bad_verdict {
        let detail = if s.verdict_detail.is_empty() {
            String::new()
        } else {
            format!(" ({})", clip(&s.verdict_detail))
        };
        seen.push(format!("DNS verdict {v}: {}{detail}", v.meaning()));
        fix.push(v.remediation().to_string());
    }
    if let Some(p) = &s.probe_failure {
        labels.insert("probe".into(), "failing".into());
        seen.push(format!(
            "the TCP/TLS probe of the private endpoint fails: {}",
            clip(p)
        ));
        fix.push(REMEDIATION_PROBE.to_string());
    }
    let (severity, meaning) = match mode {
        Mode::Require => (
            CRITICAL,
            "mode require sends nothing to an endpoint that is not verified private: data is held in the queue and will be refused once it is full",
        ),
        _ => (
            WARNING,
            "mode prefer falls back to the public endpoint while the private path does not verify",
        ),
    };
    Some(alert(
        PRIVATE_LINK_NOT_VERIFIED,
        severity,
        labels,
        format!(
            "{} is not verified as reached through Private Link",
            host(s)
        ),
        format!("{}; {meaning}", seen.join("; ")),
        fix.join("; "),
    ))
}

fn on_public_fallback(s: &Signals, now: SystemTime) -> Option<Alert> {
    if !s.on_public_fallback {
        return None;
    }
    let mode = s.mode.unwrap_or(Mode::Prefer);
    let mut labels = base_labels(s);
    labels.insert("mode".into(), mode.as_str().into());
    let since = s
        .fallback_since
        .map(|t| {
            let d = now.duration_since(t).unwrap_or_default();
            format!(
                " for {}",
                humantime::format_duration(Duration::from_secs(d.as_secs()))
            )
        })
        .unwrap_or_default();
    let why = match s.verdict {
        Some(v) if v != Verdict::Private => format!(" (DNS verdict {v}: {})", v.meaning()),
        _ => match &s.probe_failure {
            Some(p) => format!(" (private endpoint probe fails: {})", clip(p)),
            None => String::new(),
        },
    };
    // Mode require must never reach the public endpoint: if it does, that is a defect.
    let severity = if mode == Mode::Require {
        CRITICAL
    } else {
        WARNING
    };
    let mut remediation = REMEDIATION_FALLBACK.to_string();
    if let Some(v) = s.verdict.filter(|v| *v != Verdict::Private) {
        remediation.push_str("; ");
        remediation.push_str(v.remediation());
    }
    Some(alert(
        ON_PUBLIC_FALLBACK,
        severity,
        labels,
        format!("promlink sends to the public endpoint of {}", host(s)),
        format!(
            "traffic to {} has been on the public ingestion endpoint{since}{why}: data crosses the public path instead of the private endpoint",
            host(s)
        ),
        remediation,
    ))
}

fn dns_answer_changed(s: &Signals, now: SystemTime) -> Option<Alert> {
    let (at, change) = s.dns_answer_changed.as_ref()?;
    // A change stamped in the future (clock step) still counts as recent.
    let age = now.duration_since(*at).unwrap_or_default();
    if age >= DNS_CHANGE_WINDOW {
        return None;
    }
    Some(alert(
        DNS_ANSWER_CHANGED,
        WARNING,
        base_labels(s),
        format!("the DNS answer for {} changed", host(s)),
        format!(
            "the DNS answer for {} changed {} ago: {}; this alert clears {} after the change",
            host(s),
            humantime::format_duration(Duration::from_secs(age.as_secs())),
            clip(change),
            humantime::format_duration(DNS_CHANGE_WINDOW)
        ),
        REMEDIATION_DNS_CHANGED.to_string(),
    ))
}

fn upstream_rejecting(s: &Signals) -> Option<Alert> {
    let (status, message) = s.upstream_rejecting.as_ref()?;
    let mut labels = base_labels(s);
    labels.insert("status".into(), status.to_string());
    // 401/403 and 429 are retried (data held); other 4xx drop data.
    let (severity, what) = match status {
        401 | 403 => (
            CRITICAL,
            "promlink keeps retrying and holds the data; nothing is delivered",
        ),
        429 => (WARNING, "promlink retries; delivery is delayed"),
        413 => (WARNING, "promlink splits the batches and retries"),
        _ => (CRITICAL, "the refused batches are dropped"),
    };
    let message = if message.trim().is_empty() {
        "(no message)".to_string()
    } else {
        clip(message)
    };
    Some(alert(
        UPSTREAM_REJECTING,
        severity,
        labels,
        format!("{} refuses writes with HTTP {status}", host(s)),
        format!("{} answers HTTP {status}: {message}; {what}", host(s)),
        rejection_remediation(*status).to_string(),
    ))
}

fn queue_nearly_full(s: &Signals) -> Option<Alert> {
    if s.queue_fill.is_nan() || s.queue_fill < QUEUE_NEARLY_FULL {
        return None;
    }
    let pct = (s.queue_fill.min(1.0) * 100.0).round();
    Some(alert(
        QUEUE_NEARLY_FULL_ALERT,
        WARNING,
        base_labels(s),
        format!("promlink's queue is {pct}% full"),
        format!(
            "the queue holds {pct}% of its budget (alert from {}%): data is arriving faster than {} accepts it; when full, senders get 429/503 and retry, and nothing new is accepted",
            QUEUE_NEARLY_FULL * 100.0,
            host(s)
        ),
        REMEDIATION_QUEUE.to_string(),
    ))
}

fn token_refresh_failing(s: &Signals) -> Option<Alert> {
    let err = s.token_error.as_ref()?;
    let hint = aadsts_hint(err)
        .map(|h| format!("{h}; "))
        .unwrap_or_default();
    Some(alert(
        TOKEN_REFRESH_FAILING,
        CRITICAL,
        base_labels(s),
        "promlink cannot refresh its Entra ID token".to_string(),
        format!(
            "token refreshes fail: {}; once the current token expires nothing is delivered",
            clip(err)
        ),
        format!("{hint}{REMEDIATION_TOKEN}"),
    ))
}

/// A specific hint for well-known Entra ID error codes in `err`.
fn aadsts_hint(err: &str) -> Option<&'static str> {
    const HINTS: [(&str, &str); 6] = [
        ("AADSTS7000215", "AADSTS7000215: the client secret is wrong"),
        ("AADSTS7000222", "AADSTS7000222: the client secret has expired: create a new one"),
        ("AADSTS700016", "AADSTS700016: no application with this client id in the tenant: check AZURE_CLIENT_ID and AZURE_TENANT_ID"),
        ("AADSTS90002", "AADSTS90002: the tenant does not exist: check AZURE_TENANT_ID and the authority host (sovereign clouds)"),
        ("AADSTS700024", "AADSTS700024: the client assertion is outside its validity: check the node clock"),
        ("AADSTS70021", "AADSTS70021: no federated credential matches the service account token: check issuer, subject (system:serviceaccount:<namespace>:<name>) and audience api://AzureADTokenExchange"),
    ];
    HINTS.iter().find(|(c, _)| err.contains(c)).map(|(_, h)| *h)
}

#[cfg(test)]
mod tests;
