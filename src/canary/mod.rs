//! The canary read-back: proof, continuously and end to end, that what promlink sends can be
//! queried. A 2xx from the DCE does not prove it: the workspace may throttle silently, or drop
//! samples for label problems.
//!
//! Every `canary_interval`, for each destination of each route, promlink writes one sample of
//! `promlink_canary{promlink_route="<route>", promlink_instance="<pod or host name>"}` (plus
//! `promlink_destination="<n>"` on a route spreading over several ingestion URLs, so that each
//! destination's canary is its own series) into that destination's queue: it travels the path
//! of the user's data, with `cluster` added as for every series, but without relabeling or
//! series budgets. Its value is the write time in Unix seconds (millisecond precision).
//!
//! Then `GET <query_url>/api/v1/query?query=promlink_canary{...}` (equality matchers only, so
//! that any PromQL endpoint answers) runs every min(`canary_interval`, 5s) while a canary the
//! upstream accepted is outstanding, with a token for `query_token_scope` on the destination's identity (the same
//! token with `token-file`, none with `none`). A canary is visible once the value read back is
//! at least the value written: its write-to-visible time goes into
//! `promlink_canary_latency_seconds`. One not visible within `canary_timeout` counts in
//! `promlink_canary_missing_total`; a failed query in `promlink_canary_query_errors_total`
//! with its reason, and the log says what to fix.
//!
//! Polling starts once the upstream accepted the batch holding the canary
//! ([`crate::upstream::CanaryAcks`]); the latency is counted from the write.
//!
//! The query endpoint has its own private endpoint (sub-resource `prometheusMetrics`, zone
//! `privatelink.<region>.prometheus.monitor.azure.com`). Under `query_private_link` `require`
//! or `prefer`, each query first resolves its host with the same verifier and verdicts as the
//! DCE: a private verdict sends the query to the verified addresses only; any other verdict
//! sends nothing under `require` (counted with reason `private_link`, the verdict logged and in
//! `promlink_canary_query_private_link_verdict`) and takes the public path under `prefer`.

mod metrics;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::codec;
use crate::config::CanarySettings;
use crate::identity::{IdentityConfig, IdentityKind, TokenProvider};
use crate::privatelink::{Mode, Verdict, Verifier, VerifierConfig};
use crate::proto::v1::{Label, Sample, TimeSeries, WriteRequest};
use crate::queue::Queue;

pub use metrics::Metrics;

/// The canary's metric name.
pub const METRIC: &str = "promlink_canary";
/// Queries run at least this often while a canary is outstanding.
const MAX_POLL: Duration = Duration::from_secs(5);
/// Longest wait for a query answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often an outstanding canary's acknowledgement by the upstream is looked for.
const ACK_CHECK: Duration = Duration::from_millis(100);

/// Why the canary could not start.
#[derive(Debug, thiserror::Error)]
pub enum CanaryError {
    /// The query token's provider could not be built.
    #[error("canary: the query token for route {route}")]
    Identity {
        /// The route.
        route: String,
        /// Why.
        #[source]
        source: Box<crate::identity::Error>,
    },
    /// The query client could not be built.
    #[error("canary: the query client")]
    Client(#[from] crate::outbound::ClientError),
    /// The query endpoint's DNS verifier could not be built.
    #[error("canary: verifying query_url's DNS for route {route}")]
    Verifier {
        /// The route.
        route: String,
        /// Why.
        #[source]
        source: crate::privatelink::VerifyError,
    },
}

/// Why a destination's latest canary is not visible (it went missing, and none was seen
/// since), shared with the alert rules (`PromlinkIngestionNotVisible`). Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct NotVisible(Arc<std::sync::Mutex<Option<String>>>);

impl NotVisible {
    /// The detail while the latest canary is missing; `None` once one is visible again.
    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, v: Option<String>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = v;
    }
}

/// One destination of a route: where its canary goes.
pub struct Target {
    /// The route's name.
    pub route: String,
    /// The destination's index, when its route spreads over several ingestion URLs.
    pub destination: Option<usize>,
    /// Its queue.
    pub queue: Arc<Queue>,
    /// Its identity (the query token is asked for on it, for `query_token_scope`).
    pub identity: IdentityConfig,
    /// Set while its latest canary is missing.
    pub not_visible: NotVisible,
    /// Its route's query endpoint and token scope (its own `query_url`, or the top level's).
    pub settings: CanarySettings,
    /// The canary chunks its upstream accepted.
    pub acks: Arc<crate::upstream::CanaryAcks>,
}

/// A canary written and not yet seen or given up.
#[derive(Clone, Copy, Debug)]
struct Pending {
    value: f64,
    written: Instant,
    /// Its number among the destination's canaries (from 1): accepted by the upstream once
    /// [`crate::upstream::CanaryAcks::acked`] reaches it.
    seq: u64,
}

struct State {
    target: Target,
    token: TokenProvider,
    /// The query, URL-encoded.
    query: String,
    pending: VecDeque<Pending>,
    /// Canaries written so far.
    written: u64,
    next_poll: Instant,
    /// The reason of the last failed query, until one succeeds (logged once per change).
    failing: Option<&'static str>,
    /// Verifies the query host's DNS (`None` under `query_private_link: off`).
    verifier: Option<Verifier>,
    /// The last verdict, and the client pinned to the verified addresses it was built for.
    verdict: Option<Verdict>,
    pinned: Option<(Vec<std::net::IpAddr>, reqwest::Client)>,
}

impl State {
    /// Whether its oldest outstanding canary was accepted by the upstream (the read-back
    /// polls only then).
    fn pollable(&self) -> bool {
        self.pending
            .front()
            .is_some_and(|p| p.seq <= self.target.acks.acked())
    }
}

/// The canary of every destination; [`Canary::run`] writes and reads back until stopped.
pub struct Canary {
    settings: CanarySettings,
    instance: String,
    codec: codec::Options,
    /// The query client without pinning (`query_private_link: off`, and `prefer`'s public
    /// path): the system resolver, the egress proxy where it applies.
    http: reqwest::Client,
    ca_file: Option<std::path::PathBuf>,
    states: Vec<State>,
    metrics: Metrics,
}

impl Canary {
    /// The canary of `targets`, written every `settings.interval` (given up on after
    /// `settings.timeout`; each target reads back at its own query endpoint) by the instance
    /// `instance` with the `cluster` label `cluster` (when set). The query client trusts `ca_file` besides the system roots and
    /// takes the egress proxy where `proxy` says so.
    ///
    /// # Errors
    /// When a query token provider or the client cannot be built.
    pub fn new(
        settings: CanarySettings,
        instance: String,
        cluster: Option<String>,
        ca_file: Option<&std::path::Path>,
        proxy: &crate::proxy::ProxyConfig,
        targets: Vec<Target>,
        metrics: Metrics,
    ) -> Result<Canary, CanaryError> {
        let http = crate::upstream::client::build_proxied(ca_file, QUERY_TIMEOUT, proxy)?;
        // The query tokens' own metrics stay out of promlink's registry: the ingestion
        // token's are there, and a failing query token shows in the canary's query errors.
        let mut unexported = prometheus_client::registry::Registry::default();
        let mut states = Vec::with_capacity(targets.len());
        for target in targets {
            let mut identity = target.identity.clone();
            identity.scope.clone_from(&target.settings.token_scope);
            let token = TokenProvider::new(
                identity,
                crate::identity::Metrics::register(&mut unexported),
            )
            .map_err(|source| CanaryError::Identity {
                route: target.route.clone(),
                source: Box::new(source),
            })?;
            let query = selector(&target, &instance);
            let verifier = match target.settings.private_link {
                Mode::Off => None,
                Mode::Require | Mode::Prefer => Some(
                    Verifier::new(VerifierConfig {
                        servers: target.settings.dns_servers.clone(),
                        rules: target.settings.rules.clone(),
                        timeout: target.settings.dns_timeout,
                    })
                    .map_err(|source| CanaryError::Verifier {
                        route: target.route.clone(),
                        source,
                    })?,
                ),
            };
            states.push(State {
                written: 0,
                verifier,
                verdict: None,
                pinned: None,
                target,
                token,
                query: url::form_urlencoded::byte_serialize(query.as_bytes()).collect(),
                pending: VecDeque::new(),
                next_poll: Instant::now(),
                failing: None,
            });
        }
        Ok(Canary {
            settings,
            instance,
            codec: codec::Options {
                cluster,
                ..codec::Options::default()
            },
            http,
            ca_file: ca_file.map(std::path::Path::to_path_buf),
            states,
            metrics,
        })
    }

    /// Writes a canary through every destination each `canary_interval` until `stop_writing`
    /// is cancelled (shutdown begins), and reads back until `stop` is cancelled.
    pub async fn run(mut self, stop_writing: CancellationToken, stop: CancellationToken) {
        let refreshers: Vec<_> = self
            .states
            .iter()
            .map(|s| s.token.spawn_refresher(stop.clone()))
            .collect();
        let poll_every = self.settings.interval.min(MAX_POLL);
        let mut next_write = Instant::now();
        loop {
            let writing = !stop_writing.is_cancelled();
            let next_poll = self
                .states
                .iter()
                .filter(|s| s.pollable())
                .map(|s| s.next_poll)
                .min();
            // An outstanding canary not yet accepted upstream: look again soon.
            let waiting = self
                .states
                .iter()
                .any(|s| !s.pending.is_empty() && !s.pollable());
            let next_poll = match (next_poll, waiting) {
                (p, false) => p,
                (Some(p), true) => Some(p.min(Instant::now() + ACK_CHECK)),
                (None, true) => Some(Instant::now() + ACK_CHECK),
            };
            let wake = match (writing, next_poll) {
                (true, Some(p)) => p.min(next_write),
                (true, None) => next_write,
                (false, Some(p)) => p,
                (false, None) => Instant::now() + poll_every,
            };
            tokio::select! {
                () = stop.cancelled() => break,
                () = stop_writing.cancelled(), if writing => continue,
                () = tokio::time::sleep_until(wake.into()) => {}
            }
            let now = Instant::now();
            if writing && now >= next_write {
                for i in 0..self.states.len() {
                    self.write(i).await;
                }
                next_write = now + self.settings.interval;
            }
            for i in 0..self.states.len() {
                let s = &self.states[i];
                if s.pollable() && Instant::now() >= s.next_poll {
                    self.poll(i).await;
                    self.states[i].next_poll = Instant::now() + poll_every;
                }
                self.expire(i);
            }
        }
        for r in refreshers {
            let _ = r.await;
        }
    }

    /// Writes one canary into destination `i`'s queue.
    async fn write(&mut self, i: usize) {
        let state = &mut self.states[i];
        let route = Metrics::route(&state.target.route);
        let value = unix_ms() as f64 / 1000.0;
        let body = Bytes::from(crate::loadgen::encode(&WriteRequest {
            timeseries: vec![series(&state.target, &self.instance, value)],
            ..WriteRequest::default()
        }));
        let limits = codec::BatchLimits {
            max_samples: 1,
            max_bytes: 1 << 20,
            flush_interval: Duration::ZERO,
        };
        let pushed = match codec::decode_chunks(codec::Protocol::V1, &body, &self.codec, &limits) {
            Ok(chunked) => {
                if let Some(&key) = chunked.chunks.first().and_then(|c| c.keys.first()) {
                    state.target.acks.watch(key);
                }
                state
                    .target
                    .queue
                    .push(chunked.chunks)
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        match pushed {
            Ok(()) => {
                self.metrics.written.get_or_create(&route).inc();
                state.written += 1;
                state.pending.push_back(Pending {
                    value,
                    written: Instant::now(),
                    seq: state.written,
                });
            }
            Err(e) => {
                self.metrics.write_errors.get_or_create(&route).inc();
                tracing::warn!(route = %state.target.route, error = %e, "canary: the route's queue refused the canary sample; it was not written");
            }
        }
    }

    /// The client for destination `i`'s next query, after verifying the query host's DNS
    /// under `query_private_link`: pinned to the verified private addresses, the public path
    /// (`prefer`), or none (`require` without a private verdict: the error says why).
    async fn client(&mut self, i: usize) -> Result<reqwest::Client, QueryError> {
        let state = &mut self.states[i];
        let Some(verifier) = &state.verifier else {
            return Ok(self.http.clone());
        };
        let host = state
            .target
            .settings
            .query_url
            .host_str()
            .unwrap_or_default()
            .to_owned();
        let resolution = verifier.resolve(&host).await;
        let route = &state.target.route;
        if state.verdict != Some(resolution.verdict) {
            state.verdict = Some(resolution.verdict);
            tracing::info!(route = %route, host = %host, verdict = %resolution.verdict, detail = %resolution.detail, mode = state.target.settings.private_link.as_str(), "canary: query endpoint DNS verified");
            for v in Verdict::ALL {
                self.metrics
                    .query_verdict
                    .get_or_create(&metrics::VerdictLabels {
                        route: route.clone(),
                        verdict: v.as_str(),
                    })
                    .set(i64::from(v == resolution.verdict));
            }
        }
        if resolution.verdict != Verdict::Private {
            return match state.target.settings.private_link {
                Mode::Prefer => Ok(self.http.clone()),
                _ => Err(QueryError::PrivateLink(format!(
                    "{host}: verdict {} ({}); query_private_link require sends no query",
                    resolution.verdict, resolution.detail
                ))),
            };
        }
        match &state.pinned {
            Some((addrs, client)) if *addrs == resolution.addresses => Ok(client.clone()),
            _ => {
                let resolver = Arc::new(Pinned {
                    host: host.to_ascii_lowercase(),
                    addrs: resolution.addresses.clone(),
                });
                let client = crate::outbound::Builder::new(QUERY_TIMEOUT)
                    .connect_timeout(Duration::from_secs(10))
                    .ca_file(self.ca_file.as_deref())
                    .resolver(resolver)
                    .build()
                    .map_err(|e| QueryError::Transport(e.to_string(), "tls"))?;
                state.pinned = Some((resolution.addresses, client.clone()));
                Ok(client)
            }
        }
    }

    /// Queries destination `i`'s canary and marks the canaries it shows as visible.
    async fn poll(&mut self, i: usize) {
        let route = self.states[i].target.route.clone();
        let result = match self.client(i).await {
            Ok(http) => query(&http, &self.states[i]).await,
            Err(e) => Err(e),
        };
        let state = &mut self.states[i];
        match result {
            Ok(read) => {
                if state.failing.take().is_some() {
                    tracing::info!(route = %route, "canary: queries succeed again");
                }
                let Some(read) = read else { return };
                let label = Metrics::route(&route);
                while let Some(p) = state.pending.front().copied() {
                    if read < p.value {
                        break;
                    }
                    state.pending.pop_front();
                    let latency = p.written.elapsed().as_secs_f64();
                    self.metrics.latency.get_or_create(&label).observe(latency);
                    self.metrics
                        .last_visible
                        .get_or_create(&label)
                        .set(unix_ms() as f64 / 1000.0);
                    tracing::debug!(route = %route, latency_seconds = latency, "canary: visible");
                    if state.target.not_visible.get().is_some() {
                        tracing::info!(route = %route, "canary: visible again");
                        state.target.not_visible.set(None);
                    }
                }
            }
            Err(e) => {
                let reason = e.reason();
                self.metrics
                    .query_errors
                    .get_or_create(&metrics::QueryErrorLabels {
                        route: route.clone(),
                        reason,
                    })
                    .inc();
                if state.failing != Some(reason) {
                    state.failing = Some(reason);
                    tracing::warn!(route = %route, reason, error = %e, fix = e.fix(&state.target.settings, &state.target.identity), "canary: the query endpoint did not answer the read-back");
                }
            }
        }
    }

    /// Gives up on destination `i`'s canaries older than `canary_timeout`.
    fn expire(&mut self, i: usize) {
        let timeout = self.settings.timeout;
        let state = &mut self.states[i];
        while let Some(p) = state.pending.front().copied() {
            if p.written.elapsed() < timeout {
                break;
            }
            state.pending.pop_front();
            self.metrics
                .missing
                .get_or_create(&Metrics::route(&state.target.route))
                .inc();
            let written = SystemTime::now()
                .checked_sub(p.written.elapsed())
                .unwrap_or(UNIX_EPOCH);
            state.target.not_visible.set(Some(format!(
                "the canary {METRIC} written at {} into route {} is not visible through {} after {}{}",
                humantime::format_rfc3339_seconds(written),
                state.target.route,
                state.target.settings.query_url,
                humantime::format_duration(timeout),
                state
                    .failing
                    .map(|r| format!(" (its queries fail: {r})"))
                    .unwrap_or_default()
            )));
            tracing::warn!(
                route = %state.target.route,
                timeout = %humantime::format_duration(timeout),
                "canary: a sample written into this route was not visible through query_url within canary_timeout: data the DCE accepted may not be queryable (silent throttling at the workspace's limits, dropped samples, or a DCR sending to another workspace)"
            );
        }
    }
}

/// The canary series of `target` written by `instance`, with `value` now.
fn series(target: &Target, instance: &str, value: f64) -> TimeSeries {
    let mut labels = vec![
        label("__name__", METRIC),
        label("promlink_instance", instance),
        label("promlink_route", &target.route),
    ];
    if let Some(d) = target.destination {
        labels.push(label("promlink_destination", &d.to_string()));
    }
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    TimeSeries {
        labels,
        samples: vec![Sample {
            value,
            timestamp: unix_ms(),
        }],
        ..TimeSeries::default()
    }
}

fn label(name: &str, value: &str) -> Label {
    Label {
        name: name.to_owned(),
        value: value.to_owned(),
    }
}

/// The query for `target`'s canary: equality matchers only.
fn selector(target: &Target, instance: &str) -> String {
    let quoted = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
    let mut q = format!(
        "{METRIC}{{promlink_route=\"{}\",promlink_instance=\"{}\"",
        quoted(&target.route),
        quoted(instance)
    );
    if let Some(d) = target.destination {
        q.push_str(&format!(",promlink_destination=\"{d}\""));
    }
    q.push('}');
    q
}

/// Resolves only the query host, to the addresses its DNS verification approved.
struct Pinned {
    host: String,
    addrs: Vec<std::net::IpAddr>,
}

impl reqwest::dns::Resolve for Pinned {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let name = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        let answer: Result<reqwest::dns::Addrs, Box<dyn std::error::Error + Send + Sync>> =
            if name == self.host {
                let addrs: Vec<std::net::SocketAddr> = self
                    .addrs
                    .iter()
                    .map(|ip| std::net::SocketAddr::new(*ip, 0))
                    .collect();
                Ok(Box::new(addrs.into_iter()))
            } else {
                Err(format!(
                    "the canary's query client connects only to {}, not {name}",
                    self.host
                )
                .into())
            };
        Box::pin(std::future::ready(answer))
    }
}

/// Why a read-back query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// `query_private_link: require`, and the query host does not verify as private.
    #[error("{0}")]
    PrivateLink(String),
    /// No query token.
    #[error("no query token: {0}")]
    Token(String),
    /// No answer.
    #[error("{0}")]
    Transport(String, &'static str),
    /// An answer other than 2xx.
    #[error("HTTP {status}: {body}")]
    Status {
        /// The status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// A 2xx that is not a Prometheus API answer.
    #[error("not a Prometheus query answer: {0}")]
    Answer(String),
}

impl QueryError {
    /// Every value of [`Self::reason`].
    pub const REASONS: [&'static str; 10] = [
        "token",
        "private_link",
        "tls",
        "timeout",
        "dns",
        "connect",
        "unauthorized",
        "forbidden",
        "status",
        "answer",
    ];

    /// The `reason` label of `promlink_canary_query_errors_total` (one of [`Self::REASONS`]).
    pub fn reason(&self) -> &'static str {
        match self {
            QueryError::Token(_) => "token",
            QueryError::PrivateLink(_) => "private_link",
            QueryError::Transport(_, reason) => reason,
            QueryError::Status { status: 401, .. } => "unauthorized",
            QueryError::Status { status: 403, .. } => "forbidden",
            QueryError::Status { .. } => "status",
            QueryError::Answer(_) => "answer",
        }
    }

    /// What the operator should do about it.
    pub(crate) fn fix(&self, settings: &CanarySettings, identity: &IdentityConfig) -> String {
        let who = match (identity.kind, &identity.client_id) {
            (IdentityKind::TokenFile | IdentityKind::None, _) => {
                "the identity whose token promlink sends".to_owned()
            }
            (_, Some(id)) => format!("the identity with client id {id}"),
            (_, None) => "promlink's managed identity".to_owned(),
        };
        match self.reason() {
            "forbidden" => format!("grant {who} the Monitoring Data Reader role on the Azure Monitor workspace behind query_url (role assignments can take minutes to apply)"),
            "unauthorized" => format!("the query endpoint refused the token: query_token_scope must be {} (now {}), and {who} must belong to the workspace's tenant; with token-file the file's token must be valid for queries", "https://prometheus.monitor.azure.com/.default", settings.token_scope),
            "token" => "no token for query_token_scope: see the identity errors in the log (the same identity writes)".to_owned(),
            "private_link" => format!("{} does not resolve to a private endpoint: create a private endpoint on the Azure Monitor workspace (sub-resource prometheusMetrics) and link the privatelink.<region>.prometheus.monitor.azure.com zone to the resolver promlink uses (dns_server), or set query_private_link: prefer (the public path when no private endpoint verifies) if your firewall allows it", settings.query_url.host_str().unwrap_or_default()),
            "dns" => format!("{} does not resolve: check query_url (the workspace's query endpoint from its Overview page); with a query private endpoint, link the privatelink.<region>.prometheus.monitor.azure.com zone", settings.query_url.host_str().unwrap_or_default()),
            "tls" => "the query endpoint's certificate is not trusted: check query_url names the workspace's endpoint, and ca_file when a TLS-inspecting proxy is in the way".to_owned(),
            "connect" | "timeout" => format!("no connection to {}: allow it on port 443 in the firewall or egress proxy", settings.query_url.host_str().unwrap_or_default()),
            _ => "check query_url points at the Azure Monitor workspace's query endpoint".to_owned(),
        }
    }
}

/// Queries `state`'s canary: the highest value returned (`None`: no sample yet).
async fn query(http: &reqwest::Client, state: &State) -> Result<Option<f64>, QueryError> {
    let token = state
        .token
        .bearer(Duration::from_secs(5))
        .await
        .map_err(|e| QueryError::Token(e.to_string()))?;
    let base = state
        .target
        .settings
        .query_url
        .as_str()
        .trim_end_matches('/');
    let url = format!("{base}/api/v1/query?query={}", state.query);
    let mut request = http.get(url);
    if let Some(token) = &token {
        let header =
            crate::upstream::client::bearer(token).map_err(|e| QueryError::Token(e.to_string()))?;
        request = request.header(crate::upstream::client::AUTHORIZATION_HEADER, header);
    }
    let response = request.send().await.map_err(transport)?;
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(transport)?;
    if !(200..300).contains(&status) {
        let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
        return Err(QueryError::Status { status, body: text });
    }
    read_answer(&body)
}

/// The highest sample value of a Prometheus instant-query answer (`None` when it is empty).
pub(crate) fn read_answer(body: &[u8]) -> Result<Option<f64>, QueryError> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| QueryError::Answer(e.to_string()))?;
    if v["status"] != "success" {
        return Err(QueryError::Answer(format!("status {}", v["status"])));
    }
    let result = v["data"]["result"]
        .as_array()
        .ok_or_else(|| QueryError::Answer("no data.result list".into()))?;
    let mut highest: Option<f64> = None;
    for r in result {
        let value = r["value"][1]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .ok_or_else(|| QueryError::Answer(format!("a result without a value: {r}")))?;
        highest = Some(highest.map_or(value, |h| h.max(value)));
    }
    Ok(highest)
}

/// The reason a request got no answer.
fn transport(e: reqwest::Error) -> QueryError {
    let chain = crate::outbound::error_chain(&e);
    let lower = chain.to_ascii_lowercase();
    let reason = if e.is_timeout() {
        "timeout"
    } else if lower.contains("dns") || lower.contains("failed to lookup") {
        "dns"
    } else if lower.contains("certificate") || lower.contains("tls") {
        "tls"
    } else {
        "connect"
    };
    QueryError::Transport(chain, reason)
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
