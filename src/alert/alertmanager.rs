//! Sends promlink's own alerts to Alertmanager (`POST <base>/api/v2/alerts`, API v2).
//!
//! [`Alerter`] keeps the set of firing alerts that [`Alerter::update`] is given and, in a
//! background task per Alertmanager instance ([`Alerter::spawn`]), posts them like Prometheus
//! does (<https://prometheus.io/docs/alerting/latest/clients/>):
//!
//! - a newly firing alert is posted at once; all firing alerts are posted again every
//!   `resend_interval` with `endsAt = now + 4 * resend_interval`, so Alertmanager resolves them by
//!   itself if promlink dies (nothing is done on shutdown for that reason);
//! - `startsAt` is the time the alert started firing and stays the same on every resend;
//! - an alert that stops firing is posted with `endsAt` = the time it stopped (resolved), before
//!   any firing alert of the same batch, and again until an Alertmanager has accepted it;
//! - each Alertmanager is posted to independently: a failing one is retried with capped,
//!   jittered exponential backoff and never delays the others, nor the caller of `update`
//!   (which only takes a lock), nor the data path.
//!
//! Memory is bounded: at most [`MAX_FIRING`] firing alerts and [`MAX_PENDING_RESOLVED`] resolved
//! alerts waiting per Alertmanager (the oldest is forgotten first; its firing copy still ends by
//! its `endsAt`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::metrics::Metrics;
use super::rules::Alert;
use crate::outbound::{error_chain, Backoff, Builder, Jitter};

/// The most firing alerts kept; more are ignored (with a warning). The rules produce a handful.
pub const MAX_FIRING: usize = 64;
/// The most resolved alerts waiting for delivery, per Alertmanager.
pub const MAX_PENDING_RESOLVED: usize = 256;
/// `endsAt` of a firing alert is `now + ENDS_AT_FACTOR * resend_interval`.
pub const ENDS_AT_FACTOR: u32 = 4;
/// Timeout of one post.
pub const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// First retry delay after a failed post (or the resend interval, if shorter).
pub const RETRY_MIN: Duration = Duration::from_millis(500);
/// Longest retry delay after failed posts.
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// The `job` label of every alert.
pub const JOB: &str = "promlink";

/// Errors setting up the alerter.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// The HTTP client could not be built (e.g. an unusable CA file).
    #[error("building the alertmanager client")]
    Client(#[source] crate::outbound::ClientError),
    /// An Alertmanager URL is not usable.
    #[error("alertmanager url {url}: {why}")]
    Url {
        /// The URL, without credentials.
        url: String,
        /// Why.
        why: &'static str,
    },
    /// The resend interval is zero.
    #[error("alertmanager resend interval must be more than 0")]
    ResendInterval,
}

/// The full Alertmanager label set of an alert; it identifies the alert.
type LabelSet = BTreeMap<String, String>;

/// One `postableAlert` of Alertmanager's API v2.
#[derive(Debug, Serialize)]
struct PostableAlert<'a> {
    labels: &'a LabelSet,
    annotations: BTreeMap<&'static str, &'a str>,
    #[serde(rename = "startsAt")]
    starts_at: String,
    #[serde(rename = "endsAt")]
    ends_at: String,
    #[serde(rename = "generatorURL", skip_serializing_if = "Option::is_none")]
    generator_url: Option<&'a str>,
}

/// RFC 3339 in UTC with milliseconds, as Alertmanager prints times back.
fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The URL without user name and password, for logs and errors.
fn redacted(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// `<base>/api/v2/alerts` (kept as is when `base` already ends so).
///
/// # Errors
/// When the scheme is not http or https, or the URL cannot carry a path.
pub fn alerts_url(base: &Url) -> Result<Url, AlertError> {
    let bad = |why| AlertError::Url {
        url: redacted(base),
        why,
    };
    if !matches!(base.scheme(), "http" | "https") {
        return Err(bad("scheme must be http or https"));
    }
    if base.cannot_be_a_base() || base.host().is_none() {
        return Err(bad("needs a host"));
    }
    let mut u = base.clone();
    let path = base.path().trim_end_matches('/');
    if !path.ends_with("/api/v2/alerts") {
        u.set_path(&format!("{path}/api/v2/alerts"));
    }
    u.set_fragment(None);
    Ok(u)
}

#[derive(Clone, Debug)]
struct Firing {
    alert: Alert,
    starts_at: SystemTime,
}

#[derive(Clone, Debug)]
struct Resolved {
    alert: Alert,
    starts_at: SystemTime,
    ends_at: SystemTime,
}

/// What one Alertmanager has been told.
#[derive(Debug, Default)]
struct TargetState {
    /// Firing alerts (label set, start) this Alertmanager has accepted.
    delivered: BTreeSet<(LabelSet, SystemTime)>,
    /// When it last accepted a post of every firing alert.
    last_send: Option<Instant>,
    /// Resolved alerts it has not accepted yet.
    resolved: BTreeMap<LabelSet, Resolved>,
}

#[derive(Debug, Default)]
struct State {
    firing: BTreeMap<LabelSet, Firing>,
    targets: Vec<TargetState>,
}

/// A post prepared for one Alertmanager.
struct Batch {
    body: Vec<u8>,
    firing: Vec<(LabelSet, SystemTime)>,
    resolved: Vec<(LabelSet, SystemTime)>,
}

/// Sends promlink's alerts to zero or more Alertmanager instances; see the module docs.
pub struct Alerter {
    urls: Vec<Url>,
    client: reqwest::Client,
    resend_interval: Duration,
    instance: String,
    generator_url: Option<String>,
    metrics: Metrics,
    state: Mutex<State>,
    changed: watch::Sender<u64>,
}

impl std::fmt::Debug for Alerter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerter")
            .field("urls", &self.urls.iter().map(redacted).collect::<Vec<_>>())
            .field("resend_interval", &self.resend_interval)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Alerter {
    /// An alerter posting to each of `urls` (Alertmanager base URLs, e.g.
    /// `http://alertmanager:9093`; `/api/v2/alerts` is appended), re-sending firing alerts every
    /// `resend_interval`, labelling every alert `job="promlink"` and `instance=<instance>`,
    /// trusting the PEM certificates in `ca_file` besides the system roots, and connecting
    /// through the egress proxy where `proxy` routes a URL through one (`HTTP_PROXY` for
    /// `http://`, `HTTPS_PROXY` for `https://`; loopback never). With no URLs it only keeps
    /// state and metrics.
    ///
    /// # Errors
    /// A URL that is not http(s), a zero `resend_interval`, an unusable CA file.
    pub fn new(
        urls: Vec<Url>,
        resend_interval: Duration,
        instance: String,
        ca_file: Option<&Path>,
        proxy: &crate::proxy::ProxyConfig,
        metrics: Metrics,
    ) -> Result<Self, AlertError> {
        if resend_interval.is_zero() {
            return Err(AlertError::ResendInterval);
        }
        let urls = urls.iter().map(alerts_url).collect::<Result<Vec<_>, _>>()?;
        let client = Builder::new(POST_TIMEOUT)
            .connect_timeout(POST_TIMEOUT.min(Duration::from_secs(5)))
            .ca_file(ca_file)
            .proxy(proxy)
            .build()
            .map_err(AlertError::Client)?;
        let state = State {
            firing: BTreeMap::new(),
            targets: urls.iter().map(|_| TargetState::default()).collect(),
        };
        Ok(Self {
            urls,
            client,
            resend_interval,
            instance,
            generator_url: None,
            metrics,
            state: Mutex::new(state),
            changed: watch::Sender::new(0),
        })
    }

    /// Sets the `generatorURL` of every alert (e.g. promlink's `/metrics` or doctor page);
    /// without it the field is left out.
    #[must_use]
    pub fn with_generator_url(mut self, url: &Url) -> Self {
        self.generator_url = Some(url.to_string());
        self
    }

    /// The Alertmanager endpoints posted to (`.../api/v2/alerts`).
    pub fn urls(&self) -> &[Url] {
        &self.urls
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent maps behind: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The Alertmanager label set of `a`.
    fn label_set(&self, a: &Alert) -> LabelSet {
        let mut l = a.labels.clone();
        l.insert("alertname".into(), a.name.into());
        l.insert("severity".into(), a.severity.into());
        l.insert("job".into(), JOB.into());
        l.insert("instance".into(), self.instance.clone());
        l
    }

    /// Replaces the set of firing alerts with `alerts` (the current evaluation of
    /// [`super::rules::evaluate`]). New alerts are posted at once; alerts missing from `alerts`
    /// are posted as resolved. Never blocks on the network.
    pub fn update(&self, alerts: Vec<Alert>) {
        let now = SystemTime::now();
        let mut next: BTreeMap<LabelSet, Alert> = BTreeMap::new();
        for a in alerts {
            if next.len() >= MAX_FIRING {
                tracing::warn!(
                    alertname = a.name,
                    "too many firing alerts; ignoring the rest"
                );
                break;
            }
            next.insert(self.label_set(&a), a);
        }
        let mut changed = false;
        let mut st = self.lock();
        let gone: Vec<LabelSet> = st
            .firing
            .keys()
            .filter(|k| !next.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            let Some(f) = st.firing.remove(&key) else {
                continue;
            };
            tracing::info!(alertname = f.alert.name, "alert resolved");
            for t in &mut st.targets {
                t.delivered.remove(&(key.clone(), f.starts_at));
                if t.resolved.len() >= MAX_PENDING_RESOLVED && !t.resolved.contains_key(&key) {
                    let oldest = t
                        .resolved
                        .iter()
                        .min_by_key(|(_, r)| r.ends_at)
                        .map(|(k, _)| k.clone());
                    if let Some(k) = oldest {
                        t.resolved.remove(&k);
                    }
                }
                t.resolved.insert(
                    key.clone(),
                    Resolved {
                        alert: f.alert.clone(),
                        starts_at: f.starts_at,
                        ends_at: now,
                    },
                );
            }
            changed = true;
        }
        for (key, alert) in next {
            match st.firing.get_mut(&key) {
                Some(f) => f.alert = alert,
                None => {
                    if alert.severity == super::rules::CRITICAL {
                        tracing::error!(alertname = alert.name, summary = %alert.summary, "alert firing");
                    } else {
                        tracing::warn!(alertname = alert.name, summary = %alert.summary, "alert firing");
                    }
                    st.firing.insert(
                        key,
                        Firing {
                            alert,
                            starts_at: now,
                        },
                    );
                    changed = true;
                }
            }
        }
        self.publish_metrics(&st);
        drop(st);
        if changed {
            self.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    fn publish_metrics(&self, st: &State) {
        let mut counts: BTreeMap<&'static str, i64> =
            super::rules::ALL_ALERTS.iter().map(|n| (*n, 0)).collect();
        for f in st.firing.values() {
            *counts.entry(f.alert.name).or_default() += 1;
        }
        for (alertname, n) in counts {
            self.metrics
                .firing
                .get_or_create(&super::metrics::AlertnameLabel { alertname })
                .set(n);
        }
    }

    /// The alerts firing now, in label order (for `promlink doctor` and tests).
    pub fn firing(&self) -> Vec<Alert> {
        self.lock()
            .firing
            .values()
            .map(|f| f.alert.clone())
            .collect()
    }

    /// When each firing alert started firing, by alert name and extra labels.
    pub fn firing_since(&self) -> Vec<(Alert, SystemTime)> {
        self.lock()
            .firing
            .values()
            .map(|f| (f.alert.clone(), f.starts_at))
            .collect()
    }

    /// Starts one task per Alertmanager; the returned task ends after `shutdown` is cancelled
    /// and they have stopped (an in-flight post is abandoned: `endsAt` covers it).
    pub fn spawn(self: Arc<Self>, shutdown: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut set = JoinSet::new();
            for i in 0..self.urls.len() {
                set.spawn(self.clone().run_target(i, shutdown.clone()));
            }
            shutdown.cancelled().await;
            while set.join_next().await.is_some() {}
        })
    }

    /// The post due for target `i` now, or when to look again.
    fn batch_for(&self, i: usize) -> (Option<Batch>, Option<Instant>) {
        let now = SystemTime::now();
        let now_i = Instant::now();
        let st = self.lock();
        let t = &st.targets[i];
        let news = st
            .firing
            .iter()
            .any(|(k, f)| !t.delivered.contains(&(k.clone(), f.starts_at)));
        let next_resend = t.last_send.map(|s| s + self.resend_interval);
        let resend_due = next_resend.is_none_or(|at| at <= now_i);
        let due = news || !t.resolved.is_empty() || (resend_due && !st.firing.is_empty());
        if !due {
            return (None, next_resend.filter(|_| !st.firing.is_empty()));
        }
        let ends_at = rfc3339(now + self.resend_interval * ENDS_AT_FACTOR);
        let gen = self.generator_url.as_deref();
        let mut body = Vec::with_capacity(t.resolved.len() + st.firing.len());
        // Resolved first: a re-fired alert with the same labels then starts a new episode.
        for (labels, r) in &t.resolved {
            body.push(self.postable(labels, &r.alert, r.starts_at, rfc3339(r.ends_at), gen));
        }
        for (labels, f) in &st.firing {
            body.push(self.postable(labels, &f.alert, f.starts_at, ends_at.clone(), gen));
        }
        let body = serde_json::to_vec(&body).unwrap_or_else(|_| b"[]".to_vec());
        let batch = Batch {
            body,
            firing: st
                .firing
                .iter()
                .map(|(k, f)| (k.clone(), f.starts_at))
                .collect(),
            resolved: t
                .resolved
                .iter()
                .map(|(k, r)| (k.clone(), r.ends_at))
                .collect(),
        };
        (Some(batch), None)
    }

    fn postable<'a>(
        &self,
        labels: &'a LabelSet,
        a: &'a Alert,
        starts_at: SystemTime,
        ends_at: String,
        generator_url: Option<&'a str>,
    ) -> PostableAlert<'a> {
        PostableAlert {
            labels,
            annotations: BTreeMap::from([
                ("summary", a.summary.as_str()),
                ("description", a.description.as_str()),
                ("remediation", a.remediation.as_str()),
                ("runbook_url", a.runbook_url.as_str()),
            ]),
            starts_at: rfc3339(starts_at),
            ends_at,
            generator_url,
        }
    }

    /// Records that target `i` accepted `b`.
    fn delivered(&self, i: usize, b: Batch) {
        let now_i = Instant::now();
        let mut st = self.lock();
        let still: BTreeSet<(LabelSet, SystemTime)> = b
            .firing
            .into_iter()
            .filter(|(k, s)| st.firing.get(k).is_some_and(|f| f.starts_at == *s))
            .collect();
        let t = &mut st.targets[i];
        t.delivered = still;
        t.last_send = Some(now_i);
        for (k, ends_at) in b.resolved {
            if t.resolved.get(&k).is_some_and(|r| r.ends_at == ends_at) {
                t.resolved.remove(&k);
            }
        }
    }

    async fn post(&self, i: usize, body: Vec<u8>) -> Result<(), String> {
        let resp = self
            .client
            .post(self.urls[i].clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| error_chain(&e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        let text: String = text.chars().take(300).collect();
        Err(format!("HTTP {status}: {}", text.trim()))
    }

    async fn run_target(self: Arc<Self>, i: usize, shutdown: CancellationToken) {
        let mut changes = self.changed.subscribe();
        let mut backoff = Backoff::new(RETRY_MIN.min(self.resend_interval), RETRY_MAX)
            .with_jitter(Jitter::PLUS_MINUS_20_PERCENT);
        let url = redacted(&self.urls[i]);
        loop {
            changes.borrow_and_update();
            let (batch, wake_at) = self.batch_for(i);
            let Some(mut batch) = batch else {
                let sleep = async {
                    match wake_at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    r = changes.changed() => if r.is_err() { return },
                    () = sleep => {}
                }
                continue;
            };
            let result = tokio::select! {
                () = shutdown.cancelled() => return,
                r = self.post(i, std::mem::take(&mut batch.body)) => r,
            };
            self.metrics.posted(result.is_ok());
            match result {
                Ok(()) => {
                    if backoff.retries() > 0 {
                        tracing::info!(alertmanager = %url, "alertmanager accepts alerts again");
                    }
                    backoff.reset();
                    self.delivered(i, batch);
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(alertmanager = %url, error = %e, retry_in = ?delay, "posting alerts failed");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}
