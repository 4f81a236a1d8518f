//! A synthetic remote-write 1.0 sender, shaped like Prometheus, for tests, benchmarks and the demo.
//!
//! It sends `rounds` timestamps of `series` distinct Kubernetes-shaped series (about nine
//! labels each) to one URL. Series are split over `shards`; like Prometheus' queue manager
//! (<https://github.com/prometheus/prometheus/blob/main/storage/remote/queue_manager.go>) each
//! shard sends one request at a time and waits for its answer before the next, so per-series
//! order holds end to end. A request carries up to `samples_per_request` samples, one
//! `TimeSeries` per sample as Prometheus does, snappy block compressed, with the headers of
//! Prometheus 2.42. 5xx, 429 and 408 answers and transport errors are retried with capped
//! exponential backoff and jitter, honouring `Retry-After`, within `max_attempts` and the overall
//! `deadline`; other answers drop the request. The [`Report`] carries the [`Checksum`] of the
//! acknowledged samples, to compare with what the receiving end counted.
//!
//! Requests are encoded directly on the wire format (each series' labels encoded once, then
//! one sample appended per request), which is what Prometheus' own encoder produces. For
//! benchmarks, [`prepare`] encodes every request ahead and [`run_prepared`] only sends, so the
//! sender's CPU does not compete with what is measured.
//!
//! With `rate` set the shards send on a fixed schedule instead (a paced sender, for comparing
//! relays at one input rate). The [`Report`] also times every acknowledged request and names
//! its first forwarded sample, so that a sink can tell when it arrived.
//!
//! The run is bounded: it stops after the last round, at the deadline, or on shutdown.

pub mod checksum;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use prost::Message as _;
use tokio_util::sync::CancellationToken;

use crate::proto::v1::{Label, WriteRequest};
pub use checksum::Checksum;

/// The bits of a Prometheus stale marker (a NaN).
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Errors preparing a run (sending failures are counted in the [`Report`] instead).
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// The CA certificate is not PEM.
    #[error("loadgen: ca certificate")]
    Ca(#[source] reqwest::Error),
    /// The HTTP client could not be built.
    #[error("loadgen: building the http client")]
    Client(#[source] reqwest::Error),
    /// A setting is out of range.
    #[error("loadgen: {0}")]
    Config(String),
}

/// What to send and how.
#[derive(Clone, Debug)]
pub struct LoadgenConfig {
    /// Target URL (e.g. the DCE emulator's or promlink's receive URL).
    pub url: String,
    /// Distinct series. Default 100.
    pub series: usize,
    /// Timestamps per series. Default 10.
    pub rounds: usize,
    /// Concurrent senders, each owning a disjoint set of series. Default 4.
    pub shards: usize,
    /// Samples per request. Default 500 (Prometheus' `max_samples_per_send` is 2000; smaller
    /// here to make more requests).
    pub samples_per_request: usize,
    /// Timestamp of the first round, Unix milliseconds; `None` uses now minus `rounds * interval`.
    pub start_ms: Option<i64>,
    /// Milliseconds between rounds. Default 15000.
    pub interval_ms: i64,
    /// Every n-th sample is a stale marker (`None`: none). Default `None`.
    pub stale_every: Option<u64>,
    /// CA certificate (PEM) to trust in addition to the built-in roots (the emulators' test CA).
    pub ca_pem: Option<String>,
    /// `Authorization: Bearer` token to send, if any.
    pub bearer_token: Option<String>,
    /// Attempts per request, first included. Default 5.
    pub max_attempts: u32,
    /// First backoff. Default 50 ms.
    pub min_backoff: Duration,
    /// Largest backoff (and largest honoured `Retry-After`). Default 2 s.
    pub max_backoff: Duration,
    /// Timeout of one HTTP attempt. Default 10 s.
    pub request_timeout: Duration,
    /// Bound on the whole run. Default 60 s.
    pub deadline: Duration,
    /// The relabel rules the receiver applies (its `write_relabel_configs`), if any: the
    /// checksum of acknowledged samples is then taken over each series as the receiver forwards
    /// it, and the series the rules drop are left out of it. What is sent does not change.
    pub expect_relabel: Option<std::sync::Arc<promlink_relabel::Rules>>,
    /// The `cluster` label the receiver adds to every series (promlink's `cluster`, vmagent's
    /// `-remoteWrite.label=cluster=...`): the series are then sent without their `cluster`
    /// label, and the checksum of acknowledged samples is taken with `cluster="<value>"` added
    /// (before `expect_relabel`'s rules, as promlink applies them).
    pub expect_cluster: Option<String>,
    /// Pacing: samples per second over all shards. Each shard sends its requests on a fixed
    /// schedule (request `j` of shard `s` at `(j * shards + s) * samples_per_request / rate`
    /// seconds after the start), sending at once when it is late. `None`: each shard sends as
    /// soon as its previous request is answered.
    pub rate: Option<f64>,
}

impl Default for LoadgenConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            series: 100,
            rounds: 10,
            shards: 4,
            samples_per_request: 500,
            start_ms: None,
            interval_ms: 15_000,
            stale_every: None,
            ca_pem: None,
            bearer_token: None,
            max_attempts: 5,
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            deadline: Duration::from_secs(60),
            expect_relabel: None,
            expect_cluster: None,
            rate: None,
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Requests built.
    pub requests: u64,
    /// Requests acknowledged with 2xx.
    pub requests_acked: u64,
    /// Requests given up (non-retryable answer, attempts or deadline exhausted).
    pub requests_failed: u64,
    /// HTTP attempts made (requests plus retries).
    pub attempts: u64,
    /// Samples generated.
    pub samples: u64,
    /// Samples in acknowledged requests.
    pub samples_acked: u64,
    /// Checksum of every generated sample.
    pub checksum_sent: Checksum,
    /// Checksum of the acknowledged samples.
    pub checksum_acked: Checksum,
    /// Answers by status code, every attempt.
    pub statuses: BTreeMap<u16, u64>,
    /// Attempts that got no HTTP answer (connect, reset, timeout).
    pub transport_errors: u64,
    /// The run stopped early (deadline or shutdown) before sending everything.
    pub incomplete: bool,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// One per acknowledged request, in no particular order.
    pub timings: Vec<Timing>,
}

/// When an acknowledged request was sent and answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// When its acknowledged attempt started (earlier attempts were refused or failed).
    pub sent: Instant,
    /// From then to its 2xx.
    pub acked: Duration,
    /// Its first sample the receiver forwards ([`Prepared::probe`]).
    pub probe: Option<Probe>,
}

/// One sample, as the receiving end sees it: its series' [`checksum::series_hash`] as forwarded,
/// and its timestamp.
pub type Probe = (u64, i64);

impl Report {
    /// Adds another run's figures to these.
    pub fn merge(&mut self, other: Report) {
        self.requests += other.requests;
        self.requests_acked += other.requests_acked;
        self.requests_failed += other.requests_failed;
        self.attempts += other.attempts;
        self.samples += other.samples;
        self.samples_acked += other.samples_acked;
        self.checksum_sent.merge(&other.checksum_sent);
        self.checksum_acked.merge(&other.checksum_acked);
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        self.transport_errors += other.transport_errors;
        self.incomplete |= other.incomplete;
        self.timings.extend(other.timings);
    }
}

const METRICS: [&str; 6] = [
    "container_cpu_usage_seconds_total",
    "container_memory_working_set_bytes",
    "container_network_receive_bytes_total",
    "kube_pod_container_status_restarts_total",
    "http_requests_total",
    "up",
];
const APPS: [&str; 5] = ["api", "web", "worker", "ingest", "cache"];

/// The labels of series `i`: distinct for each `i`, sorted by name like Prometheus sends them.
pub fn series_labels(i: usize) -> Vec<Label> {
    let metric = METRICS[i % METRICS.len()];
    let app = APPS[(i / METRICS.len()) % APPS.len()];
    let namespace = format!("team-{}", (i / 30) % 16);
    let node = format!("aks-nodepool1-31415926-vmss{:06}", (i / 7) % 40);
    let pod = format!("{app}-7f9c{:04x}-{:05x}", (i / 30) % 0xffff, i);
    let ip = format!("10.244.{}.{}:8080", (i / 250) % 250, i % 250);
    let mut labels = vec![
        ("__name__", metric.to_owned()),
        ("cluster", "promlink-emulated".to_owned()),
        ("container", app.to_owned()),
        ("instance", ip),
        ("job", "kubernetes-pods".to_owned()),
        ("namespace", namespace),
        ("node", node),
        ("pod", pod),
        ("region", "westeurope".to_owned()),
    ];
    labels.sort_by(|a, b| a.0.cmp(b.0));
    labels
        .into_iter()
        .map(|(name, value)| Label {
            name: name.to_owned(),
            value,
        })
        .collect()
}

/// Encodes a request like Prometheus: protobuf, then a snappy block.
pub fn encode(request: &WriteRequest) -> Vec<u8> {
    let raw = request.encode_to_vec();
    // Compressing a slice into a fresh Vec only fails for inputs over ~4 GiB.
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .unwrap_or_default()
}

/// One request ready to send.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The snappy-compressed `WriteRequest`.
    pub body: bytes::Bytes,
    /// Samples in it.
    pub samples: u64,
    /// Their checksum.
    pub checksum: Checksum,
    /// Its first sample the receiver forwards (none when the rules drop every series): the
    /// sink can say when it arrived ([`crate::emulator::dce::Arrivals`]).
    pub probe: Option<Probe>,
}

/// Every request of a run, encoded ahead, per shard ([`prepare`]).
#[derive(Clone, Debug)]
pub struct PreparedLoad {
    shards: Vec<Vec<Prepared>>,
}

impl PreparedLoad {
    /// Requests in all shards.
    pub fn requests(&self) -> usize {
        self.shards.iter().map(Vec::len).sum()
    }

    /// Compressed bytes of all requests.
    pub fn bytes(&self) -> usize {
        self.shards.iter().flatten().map(|p| p.body.len()).sum()
    }

    /// The probe of every request that has one.
    pub fn probes(&self) -> Vec<Probe> {
        self.shards
            .iter()
            .flatten()
            .filter_map(|p| p.probe)
            .collect()
    }
}

/// Checks the settings that do not need the network.
fn check(cfg: &LoadgenConfig) -> Result<(), LoadgenError> {
    if cfg.shards == 0 || cfg.samples_per_request == 0 || cfg.max_attempts == 0 {
        return Err(LoadgenError::Config(
            "shards, samples_per_request and max_attempts must be > 0".to_owned(),
        ));
    }
    Ok(())
}

fn start_ms(cfg: &LoadgenConfig) -> i64 {
    cfg.start_ms.unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        now.saturating_sub(cfg.interval_ms.saturating_mul(cfg.rounds as i64))
    })
}

/// Encodes every request of the run described by `cfg` ahead of time (its `url`, client and
/// retry settings are not used here). Holds all bodies in memory: for bounded benchmark loads.
///
/// # Errors
/// When the configuration is unusable.
pub fn prepare(cfg: &LoadgenConfig) -> Result<PreparedLoad, LoadgenError> {
    check(cfg)?;
    let start = start_ms(cfg);
    Ok(PreparedLoad {
        shards: (0..cfg.shards)
            .map(|shard| Requests::new(cfg, shard, start).collect())
            .collect(),
    })
}

/// Runs the load, bounded by rounds, `deadline` and `shutdown`, encoding requests as it goes.
///
/// # Errors
/// When the configuration is unusable or the HTTP client cannot be built.
pub async fn run(cfg: LoadgenConfig, shutdown: CancellationToken) -> Result<Report, LoadgenError> {
    check(&cfg)?;
    let start = start_ms(&cfg);
    let sources = (0..cfg.shards)
        .map(|shard| Requests::new(&cfg, shard, start))
        .collect();
    run_sources(cfg, sources, shutdown).await
}

/// Sends requests encoded by [`prepare`], with the sending settings of `cfg`.
///
/// # Errors
/// When the configuration is unusable or the HTTP client cannot be built.
pub async fn run_prepared(
    cfg: LoadgenConfig,
    load: PreparedLoad,
    shutdown: CancellationToken,
) -> Result<Report, LoadgenError> {
    check(&cfg)?;
    let sources = load.shards.into_iter().map(Vec::into_iter).collect();
    run_sources(cfg, sources, shutdown).await
}

async fn run_sources<I>(
    cfg: LoadgenConfig,
    sources: Vec<I>,
    shutdown: CancellationToken,
) -> Result<Report, LoadgenError>
where
    I: Iterator<Item = Prepared> + Send + 'static,
{
    let url = url::Url::parse(&cfg.url)
        .map_err(|e| LoadgenError::Config(format!("url {:?}: {e}", cfg.url)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(LoadgenError::Config(format!(
            "url {:?}: scheme must be http or https",
            cfg.url
        )));
    }
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(cfg.request_timeout)
        .user_agent(concat!("promlink-loadgen/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = &cfg.ca_pem {
        // reqwest parses lazily; check the PEM holds a certificate so a typo fails here.
        use rustls_pki_types::pem::PemObject as _;
        let certs = rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
            .filter(Result::is_ok)
            .count();
        if certs == 0 {
            return Err(LoadgenError::Config(
                "ca_pem holds no PEM certificate".to_owned(),
            ));
        }
        builder = builder.add_root_certificate(
            reqwest::Certificate::from_pem(pem.as_bytes()).map_err(LoadgenError::Ca)?,
        );
    }
    let client = builder.build().map_err(LoadgenError::Client)?;
    let started = Instant::now();
    let start = tokio::time::Instant::now();
    let deadline = start + cfg.deadline;
    // Pacing: the time between two requests of all shards together.
    let every = cfg
        .rate
        .filter(|r| r.is_finite() && *r > 0.0)
        .map(|r| Duration::from_secs_f64(cfg.samples_per_request as f64 / r));
    let mut tasks = Vec::new();
    for (shard, requests) in sources.into_iter().enumerate() {
        let sender = Shard {
            cfg: cfg.clone(),
            client: client.clone(),
            deadline,
            shutdown: shutdown.clone(),
            schedule: every.map(|every| (start, every, shard)),
        };
        tasks.push(tokio::spawn(sender.run(requests)));
    }
    let mut report = Report::default();
    for task in tasks {
        match task.await {
            Ok(r) => report.merge(r),
            Err(_) => report.incomplete = true,
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// The requests of one shard, encoded as they are taken: every round of the shard's series,
/// `samples_per_request` samples per request.
struct Requests {
    /// (series number, checksum hash of the series as forwarded (`None`: the receiver's rules
    /// drop it), encoded labels: the `TimeSeries.labels` fields).
    series: Vec<(usize, Option<u64>, Vec<u8>)>,
    rounds: usize,
    round: usize,
    next: usize,
    per_request: usize,
    interval_ms: i64,
    start_ms: i64,
    stale_every: Option<u64>,
    /// Samples generated so far (for `stale_every`).
    n: u64,
    raw: Vec<u8>,
    sample: Vec<u8>,
    snappy: snap::raw::Encoder,
}

impl Requests {
    fn new(cfg: &LoadgenConfig, shard: usize, start_ms: i64) -> Self {
        let series = (shard..cfg.series)
            .step_by(cfg.shards)
            .map(|i| {
                let mut labels = series_labels(i);
                if cfg.expect_cluster.is_some() {
                    labels.retain(|l| l.name != "cluster");
                }
                let mut encoded = Vec::with_capacity(256);
                for l in &labels {
                    crate::codec::put_label(&mut encoded, l.name.as_bytes(), l.value.as_bytes());
                }
                if let Some(cluster) = &cfg.expect_cluster {
                    labels.push(Label {
                        name: "cluster".to_owned(),
                        value: cluster.clone(),
                    });
                    labels.sort_by(|a, b| a.name.cmp(&b.name));
                }
                let hash = match &cfg.expect_relabel {
                    None => Some(checksum::series_hash(&labels)),
                    Some(rules) => forwarded_hash(rules, &labels),
                };
                (i, hash, encoded)
            })
            .collect();
        Self {
            series,
            rounds: cfg.rounds,
            round: 0,
            next: 0,
            per_request: cfg.samples_per_request,
            interval_ms: cfg.interval_ms,
            start_ms,
            stale_every: cfg.stale_every,
            n: 0,
            raw: Vec::new(),
            sample: Vec::with_capacity(20),
            snappy: snap::raw::Encoder::new(),
        }
    }
}

impl Iterator for Requests {
    type Item = Prepared;

    fn next(&mut self) -> Option<Prepared> {
        use crate::codec::wire::put_varint;
        self.raw.clear();
        let mut checksum = Checksum::new();
        let mut samples = 0u64;
        let mut probe = None;
        while samples < self.per_request as u64 && self.round < self.rounds {
            let (i, hash, labels) = &self.series[self.next];
            let ts = self
                .start_ms
                .saturating_add((self.round as i64).saturating_mul(self.interval_ms));
            self.n += 1;
            let value = match self.stale_every {
                Some(every) if every > 0 && self.n.is_multiple_of(every) => {
                    f64::from_bits(STALE_NAN_BITS)
                }
                _ => (*i as f64) * 10.0 + self.round as f64 * 1.5,
            };
            // Sample {value = 1 (fixed64), timestamp = 2 (varint)}, zero values omitted as
            // protobuf encoders do; at most 20 bytes, so its length is one byte.
            let sample = &mut self.sample;
            sample.clear();
            if value.to_bits() != 0 {
                sample.push(0x09);
                sample.extend_from_slice(&value.to_bits().to_le_bytes());
            }
            if ts != 0 {
                sample.push(0x10);
                put_varint(sample, ts as u64);
            }
            self.raw.push(0x0a);
            put_varint(&mut self.raw, (labels.len() + 2 + sample.len()) as u64);
            self.raw.extend_from_slice(labels);
            self.raw.push(0x12);
            self.raw.push(sample.len() as u8);
            self.raw.extend_from_slice(sample);
            if let Some(hash) = hash {
                checksum.add(*hash, ts, value);
                probe = probe.or(Some((*hash, ts)));
            }
            samples += 1;
            self.next += 1;
            if self.next == self.series.len() {
                self.next = 0;
                self.round += 1;
            }
        }
        if samples == 0 {
            return None;
        }
        let mut body = vec![0u8; snap::raw::max_compress_len(self.raw.len())];
        // Compressing an in-memory buffer into max_compress_len bytes cannot fail.
        let n = self.snappy.compress(&self.raw, &mut body).unwrap_or(0);
        body.truncate(n);
        Some(Prepared {
            body: bytes::Bytes::from(body),
            samples,
            checksum,
            probe,
        })
    }
}

/// The checksum hash of `labels` as a receiver applying `rules` forwards them; `None` when the
/// rules drop the series.
fn forwarded_hash(rules: &promlink_relabel::Rules, labels: &[Label]) -> Option<u64> {
    let mut ls: Vec<promlink_relabel::Label<'_>> = labels
        .iter()
        .map(|l| promlink_relabel::Label::borrowed(&l.name, &l.value))
        .collect();
    if rules.apply(&mut ls) == promlink_relabel::Verdict::Drop {
        return None;
    }
    let mut pairs: Vec<(&[u8], &[u8])> = ls
        .iter()
        .map(|l| (l.name.as_bytes(), l.value.as_bytes()))
        .collect();
    Some(checksum::series_hash_pairs(&mut pairs))
}

struct Shard {
    cfg: LoadgenConfig,
    client: reqwest::Client,
    deadline: tokio::time::Instant,
    shutdown: CancellationToken,
    /// Pacing: the run's start, the time between two requests of all shards, this shard's
    /// number.
    schedule: Option<(tokio::time::Instant, Duration, usize)>,
}

impl Shard {
    async fn run(self, requests: impl Iterator<Item = Prepared>) -> Report {
        let mut report = Report::default();
        for (j, request) in requests.enumerate() {
            report.samples += request.samples;
            report.checksum_sent.merge(&request.checksum);
            if let Some((start, every, shard)) = self.schedule {
                let slot = (j * self.cfg.shards + shard) as u32;
                let at = (start + every * slot).min(self.deadline);
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = self.shutdown.cancelled() => {}
                }
            }
            if self.stopped() {
                report.incomplete = true;
                break;
            }
            self.send(request, &mut report).await;
        }
        report
    }

    fn stopped(&self) -> bool {
        self.shutdown.is_cancelled() || tokio::time::Instant::now() >= self.deadline
    }

    async fn send(&self, request: Prepared, report: &mut Report) {
        let Prepared {
            body,
            samples,
            checksum: sum,
            probe,
        } = request;
        report.requests += 1;
        let mut backoff = self.cfg.min_backoff;
        for attempt in 1..=self.cfg.max_attempts {
            if self.stopped() {
                report.incomplete = true;
                break;
            }
            report.attempts += 1;
            let mut request = self
                .client
                .post(&self.cfg.url)
                .header("Content-Encoding", "snappy")
                .header("Content-Type", "application/x-protobuf")
                .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                .body(body.clone());
            if let Some(token) = &self.cfg.bearer_token {
                request = request.bearer_auth(token);
            }
            let mut wait = backoff;
            let sent = Instant::now();
            match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    *report.statuses.entry(status.as_u16()).or_default() += 1;
                    if status.is_success() {
                        report.timings.push(Timing {
                            sent,
                            acked: sent.elapsed(),
                            probe,
                        });
                        report.requests_acked += 1;
                        report.samples_acked += samples;
                        report.checksum_acked.merge(&sum);
                        return;
                    }
                    let retryable = status.is_server_error()
                        || status.as_u16() == 429
                        || status.as_u16() == 408;
                    if !retryable {
                        let text = response.text().await.unwrap_or_default();
                        tracing::debug!(%status, body = %text, "loadgen: request dropped");
                        break;
                    }
                    if let Some(after) = retry_after(response.headers()) {
                        wait = after;
                    }
                }
                Err(error) => {
                    report.transport_errors += 1;
                    tracing::debug!(%error, "loadgen: transport error");
                }
            }
            if attempt == self.cfg.max_attempts {
                break;
            }
            let jitter = wait.mul_f64(rand::random::<f64>() * 0.2);
            let sleep = (wait + jitter).min(self.cfg.max_backoff);
            tokio::select! {
                () = tokio::time::sleep_until((tokio::time::Instant::now() + sleep).min(self.deadline)) => {}
                () = self.shutdown.cancelled() => {}
            }
            backoff = (backoff * 2).min(self.cfg.max_backoff);
        }
        report.requests_failed += 1;
    }
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    if let Ok(secs) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests;
