//! The upstream stage: `shards` workers send batches to the DCE, each series in order.
//!
//! `shards` workers each take a batch from the queue ([`crate::queue::Queue::pop_batch`]), join
//! its chunks into one snappy-compressed remote write 1.0 `WriteRequest` (they are the
//! senders' compressed bodies or were compressed on receipt, and are concatenated as they are,
//! see [`crate::codec::chunk`]), and POST it with the headers the ingestion API expects
//! (<https://learn.microsoft.com/azure/azure-monitor/essentials/prometheus-remote-write>). A
//! worker does not take its next batch before this one is accepted or dropped, and the queue
//! never has two batches sharing a series in flight, so samples of one series leave in the
//! order they arrived, retries and 413 splits included. How each answer is handled is in
//! [`retry`].

pub mod client;
mod delivered;
mod health;
pub mod metrics;
mod pieces;
pub mod rate;
pub mod retry;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::FutureExt as _;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::codec::{self, Chunk};
use crate::identity::TokenProvider;
use crate::outbound::{error_chain, Backoff};
use crate::privatelink::PrivateLink;
use crate::queue::{BatchLimits, Queue};
pub use delivered::CanaryAcks;
use delivered::Limits;
pub use health::Health;
pub use metrics::Metrics;
use pieces::{part_splittable, Pieces, Turn};
use retry::{Action, DropReason, RetryReason};

/// Upstream settings, resolved by `crate::config`.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// The full ingestion URL.
    pub url: Url,
    /// Extra CA certificates (PEM) to trust.
    pub ca_file: Option<PathBuf>,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// First retry delay.
    pub retry_min: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Batch limits.
    pub batch: BatchLimits,
    /// Samples older than this are dropped before sending (`None`: no limit).
    pub max_sample_age: Option<Duration>,
    /// Batches queued longer than this are dropped (`None`: no limit).
    pub queue_max_age: Option<Duration>,
    /// Egress proxy settings: used under `private_link: off` and for `prefer`'s public fallback,
    /// never for the verified private path.
    pub proxy: crate::proxy::ProxyConfig,
    /// Most requests a minute to this URL (`max_requests_per_minute`); `None`: no limit.
    pub max_requests_per_minute: Option<u32>,
}

/// Errors setting up the upstream or a request to it.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The HTTP client could not be built.
    #[error("building the upstream client")]
    Client(#[from] crate::outbound::ClientError),
    /// The token cannot travel in an `Authorization` header.
    #[error("the token holds characters not allowed in a header")]
    TokenHeader,
}

/// The upstream sender shared by all workers.
pub struct Upstream {
    cfg: UpstreamConfig,
    /// The client and the private-link generation it was built for.
    client: RwLock<(u64, reqwest::Client)>,
    private_link: Option<Arc<PrivateLink>>,
    identity: TokenProvider,
    metrics: Metrics,
    health: Arc<Health>,
    /// `max_requests_per_minute`'s bucket; swapped by a configuration reload.
    rate: RwLock<Option<Arc<rate::RateLimiter>>>,
    /// Acknowledged canary chunks (see [`CanaryAcks`]).
    canary: Arc<CanaryAcks>,
    /// Where delivered parts and sent requests are counted against the workspace's and the
    /// DCR's limits (`serve` attaches it; `drain` does not).
    limits: std::sync::OnceLock<Limits>,
}

/// Failed attempts (5xx, timeout, connection) before a part that keeps failing while others
/// get through is split. A half of a part split that way is split again at its first failure:
/// the failing part is found in as many requests as halvings, then only it backs off.
const ISOLATE_AFTER: u32 = 3;

/// How [`Upstream::send`] treats a retryable failure (5xx, timeout, lost connection).
#[derive(Clone, Copy)]
enum OnFailure {
    /// Retry with backoff until delivered.
    Retry,
    /// Retry with backoff, but come back as [`Outcome::Isolate`] after this many failures
    /// if another batch was accepted since the first of them (or since the given count).
    Isolate(u32, Option<u64>),
    /// Come back as [`Outcome::Failed`] at the first failure.
    Once,
}

/// How sending one part of a batch ended.
enum Outcome {
    Delivered,
    Split,
    /// It keeps failing while other batches get through: split it, so that only the part
    /// that fails waits.
    Isolate,
    /// It failed, and was to be tried once ([`OnFailure::Once`]).
    Failed,
    Dropped(DropReason),
    Aborted,
}

impl Upstream {
    /// Builds the client.
    ///
    /// # Errors
    /// When the CA file is unusable or TLS cannot be set up.
    pub fn new(
        cfg: UpstreamConfig,
        identity: TokenProvider,
        metrics: Metrics,
        private_link: Option<Arc<PrivateLink>>,
    ) -> Result<Self, UpstreamError> {
        let generation = private_link.as_ref().map_or(0, |p| p.generation());
        let client = Self::build_client(&cfg, private_link.as_ref())?;
        Ok(Self {
            rate: RwLock::new(
                cfg.max_requests_per_minute
                    .map(|n| Arc::new(rate::RateLimiter::new(n))),
            ),
            cfg,
            client: RwLock::new((generation, client)),
            private_link,
            identity,
            metrics,
            health: Arc::default(),
            canary: Arc::default(),
            limits: std::sync::OnceLock::new(),
        })
    }

    /// Counts every part this upstream delivers into `workspace`, and every request it sends
    /// into `requests` (the DCR's counter). Only the first call has an effect.
    pub fn attach_limits(
        &self,
        workspace: Arc<crate::workspace::Workspace>,
        requests: Arc<std::sync::atomic::AtomicU64>,
    ) {
        let _ = self.limits.set(Limits {
            workspace,
            requests,
        });
    }

    /// The canary chunks this upstream accepted.
    pub fn canary_acks(&self) -> Arc<CanaryAcks> {
        self.canary.clone()
    }

    /// The client for the current Private Link path: under `off`, normal DNS and the egress
    /// proxy where one applies; on `prefer`'s public fallback with a proxy for the DCE host,
    /// through that proxy (it resolves the name); otherwise only the approved addresses, never
    /// through a proxy.
    fn build_client(
        cfg: &UpstreamConfig,
        private_link: Option<&Arc<PrivateLink>>,
    ) -> Result<reqwest::Client, UpstreamError> {
        let ca = cfg.ca_file.as_deref();
        let client = match private_link.and_then(|p| p.resolver().map(|r| (p, r))) {
            None => client::build_proxied(ca, cfg.request_timeout, &cfg.proxy),
            Some((p, _)) if p.fallback_through_proxy() => {
                client::build_proxied(ca, cfg.request_timeout, &cfg.proxy)
            }
            Some((_, resolver)) => client::build_pinned(ca, cfg.request_timeout, resolver),
        };
        Ok(client?)
    }

    /// The client for the current private-link generation: when the approved addresses change,
    /// a new client (with an empty connection pool) replaces the old one, so no pooled
    /// connection outlives its approval.
    fn client(&self) -> reqwest::Client {
        let Some(pl) = &self.private_link else {
            return self
                .client
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .1
                .clone();
        };
        let generation = pl.generation();
        {
            let c = self.client.read().unwrap_or_else(|p| p.into_inner());
            if c.0 == generation {
                return c.1.clone();
            }
        }
        let mut c = self.client.write().unwrap_or_else(|p| p.into_inner());
        if c.0 != generation {
            match Self::build_client(&self.cfg, Some(pl)) {
                Ok(new) => *c = (generation, new),
                // It was built at start with the same settings; keep the old one if not now.
                Err(e) => {
                    tracing::error!(error = %error_chain(&e), "cannot rebuild the upstream client")
                }
            }
        }
        c.1.clone()
    }

    /// Requests sent within the last minute, when `max_requests_per_minute` applies.
    pub fn requests_last_minute(&self) -> Option<usize> {
        self.limiter().map(|r| r.last_minute())
    }

    /// Applies a reloaded `max_requests_per_minute` (`None`: no limit). An unchanged rate
    /// keeps its bucket; a new one starts with a full bucket.
    pub fn set_max_requests_per_minute(&self, per_minute: Option<u32>) {
        let mut rate = self.rate.write().unwrap_or_else(|e| e.into_inner());
        if rate.as_ref().map(|r| r.per_minute()) != per_minute {
            *rate = per_minute.map(|n| Arc::new(rate::RateLimiter::new(n)));
            self.metrics
                .requests_per_minute_limit
                .set(per_minute.map_or(0, i64::from));
        }
    }

    fn limiter(&self) -> Option<Arc<rate::RateLimiter>> {
        self.rate.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Readiness and status information.
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// Runs upstream worker `worker` (one of `shards`, each sending one batch at a time) until
    /// the queue is closed and drained, or `abort` is cancelled (the shutdown grace period
    /// ended). After an abort, the memory queue's undelivered chunks are dropped and counted
    /// under `shutdown`; the disk queue keeps them for the next start.
    pub async fn run_worker(
        self: Arc<Self>,
        queue: Arc<Queue>,
        worker: usize,
        abort: CancellationToken,
    ) {
        loop {
            let batch = tokio::select! {
                b = queue.pop_batch(&self.cfg.batch) => b,
                _ = abort.cancelled() => None,
            };
            let Some(mut batch) = batch else { break };
            // Kept (cheap clones: shared bytes) to give the batch back if the worker panics.
            let chunks = batch.chunks.clone();
            let queued_since = std::time::Instant::now()
                .checked_sub(batch.age)
                .unwrap_or_else(std::time::Instant::now);
            let delivery = std::panic::AssertUnwindSafe(self.deliver(
                chunks,
                queued_since,
                &abort,
                |finished| queue.done_part(&batch, finished),
            ))
            .catch_unwind()
            .await;
            let undelivered = match delivery {
                Ok(undelivered) => undelivered,
                Err(panic) => {
                    self.metrics.worker_panics.inc();
                    tracing::error!(
                        worker,
                        panic = %crate::supervise::panic_message(&*panic),
                        "an upstream worker panicked: its batch goes back to the queue and the worker goes on"
                    );
                    let chunks = std::mem::take(&mut batch.chunks);
                    queue.give_back(batch, chunks);
                    // Not a hot loop if the same batch panics again.
                    tokio::select! {
                        _ = tokio::time::sleep(self.cfg.retry_min) => {}
                        _ = abort.cancelled() => {}
                    }
                    continue;
                }
            };
            if undelivered.is_empty() {
                queue.done(batch);
            } else if queue.is_durable() {
                // Not acknowledged: replayed after the restart.
                tracing::info!(
                    worker,
                    chunks = undelivered.len(),
                    "shutdown: undelivered batch stays in the disk queue"
                );
                break;
            } else {
                self.count_drop(&undelivered, DropReason::Shutdown);
                queue.done(batch);
            }
        }
        if abort.is_cancelled() {
            let rest = queue.abandon();
            if !rest.is_empty() {
                self.count_drop(&rest, DropReason::Shutdown);
            }
        }
    }

    /// Keeps readiness honest when no data flows: while the upstream has not answered within
    /// half of `window`, sends an unauthenticated `GET` to the ingestion URL every few seconds.
    /// Any HTTP answer proves DNS, routing and TLS; no data or token is sent.
    pub async fn probe_when_idle(self: Arc<Self>, window: Duration, stop: CancellationToken) {
        let every = (window / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
        loop {
            if !self.health.answered_within(window / 2) {
                match self.client().get(self.cfg.url.clone()).send().await {
                    Ok(resp) => self.health.answered(resp.status().as_u16()),
                    Err(e) => {
                        let error = error_chain(&e);
                        tracing::debug!(error = %error, "upstream probe failed");
                        self.health.unanswered(error);
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Sends one batch, splitting on 413 (and isolating a part that keeps failing while
    /// others get through), until every part is delivered or dropped. Each chunk of the batch
    /// whose every piece is delivered or dropped is handed to `finished` (by its position in
    /// `batch`) at once, so its series are free to go again while a failing part is retried.
    /// Returns what was left undelivered because `abort` fired (empty otherwise).
    async fn deliver(
        &self,
        batch: Vec<Chunk>,
        queued_since: std::time::Instant,
        abort: &CancellationToken,
        mut finished: impl FnMut(&[usize]) + Send,
    ) -> Vec<Chunk> {
        crate::supervise::hit(crate::supervise::UPSTREAM_WORKER);
        let n = batch.len();
        let batch = self.drop_too_old(batch);
        if batch.is_empty() {
            return Vec::new();
        }
        if batch.len() != n {
            // Pruning dropped whole chunks: positions no longer match; finish only at the end.
            return self
                .deliver_parts(Pieces::untracked(batch), queued_since, abort, &mut |_| {})
                .await;
        }
        self.deliver_parts(Pieces::tracked(batch), queued_since, abort, &mut finished)
            .await
    }

    /// Sends the parts of `pieces` in order. When isolation comes down to a failing part, the
    /// parts after it that share no series with it (nor with any part held back behind it)
    /// are sent first; then the failing part is retried with backoff, and the parts held back
    /// follow it. Each series' data still goes in order.
    async fn deliver_parts(
        &self,
        mut pieces: Pieces,
        queued_since: std::time::Instant,
        abort: &CancellationToken,
        finished: &mut (dyn FnMut(&[usize]) + Send),
    ) -> Vec<Chunk> {
        while let Some((part, turn)) = pieces.next() {
            if pieces.behind_held(&part) {
                pieces.hold(part, turn);
                continue;
            }
            let chunks: Vec<Chunk> = part.iter().map(|(_, c)| c.clone()).collect();
            let splittable = part_splittable(&part);
            let on_failure = match turn {
                Turn::Fresh if splittable => OnFailure::Isolate(ISOLATE_AFTER, None),
                Turn::Suspect(since) if splittable => OnFailure::Isolate(1, Some(since)),
                Turn::Suspect(_) => OnFailure::Once,
                Turn::Fresh | Turn::Failing => OnFailure::Retry,
            };
            match self.send(&chunks, queued_since, abort, on_failure).await {
                Outcome::Delivered => {
                    self.count_delivered(&chunks);
                    pieces.settle(&part, finished);
                }
                Outcome::Failed => pieces.hold(part, Turn::Failing),
                // The halves need evidence of their own: another batch accepted after this
                // split. With the count at the parent's first failure instead, a whole-upstream
                // outage that began just after another batch got through would split the batch
                // down to single messages, each tried at once, a burst of requests at a
                // failing upstream.
                Outcome::Isolate if part.len() > 1 => {
                    pieces.halve(part, Turn::Suspect(self.health.accepted_total()));
                }
                Outcome::Split if part.len() > 1 => pieces.halve(part, turn),
                outcome @ (Outcome::Split | Outcome::Isolate) => {
                    match codec::split_chunk(&part[0].1) {
                        Ok(Some((first, second))) => {
                            let positions = part.into_iter().next().map(|(p, _)| p);
                            let turn = match outcome {
                                Outcome::Isolate => Turn::Suspect(self.health.accepted_total()),
                                _ => turn,
                            };
                            pieces.split_piece(positions.unwrap_or_default(), first, second, turn);
                        }
                        // A part that cannot be split never comes back as `Isolate` (see
                        // `send`): this is a 413 for a single message.
                        Ok(None) => {
                            self.count_drop(&chunks, DropReason::TooLarge);
                            pieces.settle(&part, finished);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "cannot open a chunk to split it");
                            self.count_drop(&chunks, DropReason::TooLarge);
                            pieces.settle(&part, finished);
                        }
                    }
                }
                Outcome::Dropped(DropReason::Unprocessable) => {
                    match codec::dedupe_chunks(&chunks) {
                        // 422 is Azure's answer to a repeated series and timestamp in one request:
                        // a sender's resend of a request promlink had committed. Send the batch
                        // again without the repeats instead of dropping everything in it.
                        Ok(Some((kept, removed))) => {
                            tracing::warn!(removed, "upstream answered 422: removed repeated samples from the batch and sending it again");
                            self.metrics.duplicates_removed.inc_by(removed);
                            match kept {
                                Some(kept) => pieces.merge(part, kept),
                                None => pieces.settle(&part, finished),
                            }
                        }
                        Ok(None) => {
                            self.count_drop(&chunks, DropReason::Unprocessable);
                            pieces.settle(&part, finished);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "cannot open a chunk to remove repeated samples");
                            self.count_drop(&chunks, DropReason::Unprocessable);
                            pieces.settle(&part, finished);
                        }
                    }
                }
                Outcome::Dropped(reason) => {
                    self.count_drop(&chunks, reason);
                    pieces.settle(&part, finished);
                }
                Outcome::Aborted => return pieces.take_rest(chunks),
            }
        }
        Vec::new()
    }

    /// Sends one part, retrying as [`retry`] says, until it is delivered, must be split, is
    /// dropped (refused, or queued longer than `queue_max_age`), or `abort` fires.
    ///
    /// With [`OnFailure::Isolate`], a part that keeps failing with a 5xx, a timeout or a lost
    /// connection, that many attempts or more, while another batch was accepted since its
    /// first failure, comes back as [`Outcome::Isolate`]. A 429, 401/403 or a missing token
    /// never isolates, and neither does a failure every batch meets (nothing else gets
    /// through): then it retries as always, with one backoff. With [`OnFailure::Once`], any
    /// retryable failure comes back as [`Outcome::Failed`].
    async fn send(
        &self,
        part: &[Chunk],
        queued_since: std::time::Instant,
        abort: &CancellationToken,
        on_failure: OnFailure,
    ) -> Outcome {
        let mut body = Vec::new();
        codec::write_body(part, &mut body);
        let body = Bytes::from(body);
        let samples: u64 = part.iter().map(|c| c.counts.points() as u64).sum();
        let raw: u64 = part.iter().map(|c| u64::from(c.raw_len)).sum();
        self.metrics.batch_samples.observe(samples as f64);
        self.metrics.batch_bytes.observe(raw as f64);
        let mut backoff = Backoff::new(self.cfg.retry_min, self.cfg.retry_max);
        // Accepted batches at this part's first isolating failure, and such failures since.
        let mut failing: Option<(u64, u32)> = None;
        loop {
            if abort.is_cancelled() {
                return Outcome::Aborted;
            }
            if let Some(max) = self
                .cfg
                .queue_max_age
                .filter(|m| queued_since.elapsed() > *m)
            {
                tracing::warn!(
                    age = %humantime::format_duration(queued_since.elapsed()),
                    max = %humantime::format_duration(max),
                    "dropping data queued longer than queue_max_age"
                );
                return Outcome::Dropped(DropReason::Expired);
            }
            let attempt = tokio::select! {
                a = self.attempt(&body) => a,
                _ = abort.cancelled() => return Outcome::Aborted,
            };
            let (reason, retry_after) = match attempt {
                Attempt::Done(Action::Delivered) => {
                    self.health.accepted();
                    return Outcome::Delivered;
                }
                Attempt::Done(Action::Split) => return Outcome::Split,
                Attempt::Done(Action::Drop(reason)) => return Outcome::Dropped(reason),
                Attempt::Done(Action::Retry(reason)) => (reason, None),
                Attempt::Done(Action::Reauthenticate) => (RetryReason::Unauthorized, None),
                Attempt::RetryAfter(reason, after) => (reason, after),
            };
            if let (
                OnFailure::Isolate(after, baseline),
                RetryReason::ServerError | RetryReason::Timeout | RetryReason::Connection,
            ) = (on_failure, reason)
            {
                let (since, n) = failing
                    .get_or_insert((baseline.unwrap_or_else(|| self.health.accepted_total()), 0));
                *n += 1;
                if *n >= after && self.health.accepted_total() > *since {
                    self.metrics.isolations.inc();
                    tracing::warn!(
                        chunks = part.len(),
                        samples,
                        attempts = *n,
                        reason = reason.as_str(),
                        "a batch keeps failing while others are accepted: splitting it so that only the failing part waits"
                    );
                    return Outcome::Isolate;
                }
            }
            self.metrics
                .retries
                .get_or_create(&metrics::ReasonLabel {
                    reason: reason.as_str(),
                })
                .inc();
            if matches!(on_failure, OnFailure::Once) {
                return Outcome::Failed;
            }
            let delay = backoff.next_delay_honouring(retry_after);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = abort.cancelled() => return Outcome::Aborted,
            }
        }
    }

    async fn attempt(&self, body: &Bytes) -> Attempt {
        let token = match self.identity.bearer(Duration::from_secs(5)).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "no valid token for the upstream; holding data and retrying");
                return Attempt::RetryAfter(RetryReason::NoToken, None);
            }
        };
        let mut req = self
            .client()
            .post(self.cfg.url.clone())
            .headers(client::write_headers())
            .body(body.clone());
        if let Some(t) = &token {
            match client::bearer(t) {
                Ok(v) => req = req.header(client::AUTHORIZATION_HEADER, v),
                Err(e) => {
                    tracing::error!(error = %e, "cannot send the token");
                    return Attempt::RetryAfter(RetryReason::NoToken, None);
                }
            }
        }
        if let Some(rate) = self.limiter() {
            let waited = rate.acquire().await;
            self.metrics.rate_limited.inc_by(waited.as_secs_f64());
        }
        if let Some(l) = self.limits.get() {
            l.count_request();
        }
        let started = std::time::Instant::now();
        let resp = req.send().await;
        self.metrics
            .request_duration
            .observe(started.elapsed().as_secs_f64());
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                self.metrics
                    .requests
                    .get_or_create(&metrics::ClassLabel { class: "error" })
                    .inc();
                let error = error_chain(&e);
                tracing::warn!(error = %error, "upstream request failed; will retry");
                self.health.unanswered(error);
                if let Some(pl) = &self.private_link {
                    pl.connection_failed();
                }
                return Attempt::RetryAfter(RetryReason::Connection, None);
            }
        };
        let status = resp.status();
        self.health.answered(status.as_u16());
        let class = match status.as_u16() {
            200..=299 => "2xx",
            400..=499 => "4xx",
            500..=599 => "5xx",
            _ => "other",
        };
        self.metrics
            .requests
            .get_or_create(&metrics::ClassLabel { class })
            .inc();
        let action = retry::classify(status);
        if action == Action::Delivered {
            return Attempt::Done(action);
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry::parse_retry_after(v, SystemTime::now()));
        let message = upstream_message(resp).await;
        if matches!(action, Action::Reauthenticate | Action::Drop(_)) {
            self.health.rejected(status.as_u16(), &message);
        }
        match action {
            Action::Reauthenticate => {
                if let Some(t) = &token {
                    self.identity.invalidate(t);
                }
                tracing::error!(
                    status = status.as_u16(),
                    upstream_message = %message,
                    "upstream refused the token; refreshing it and retrying (a new Monitoring Metrics Publisher role assignment takes about 30 minutes to apply)"
                );
                Attempt::RetryAfter(RetryReason::Unauthorized, retry_after)
            }
            Action::Retry(reason) => {
                tracing::warn!(status = status.as_u16(), upstream_message = %message, retry_after = ?retry_after, "upstream asked to retry");
                Attempt::RetryAfter(reason, retry_after)
            }
            Action::Split => {
                tracing::warn!(upstream_message = %message, "upstream says the batch is too large; splitting it");
                Attempt::Done(action)
            }
            Action::Drop(reason) => {
                tracing::error!(
                    status = status.as_u16(),
                    reason = reason.as_str(),
                    upstream_message = %message,
                    "upstream refused the batch; dropping it"
                );
                Attempt::Done(action)
            }
            Action::Delivered => Attempt::Done(action),
        }
    }

    /// Removes samples older than `max_sample_age` ([`codec::drop_older`]), counting them as
    /// `too_old`.
    fn drop_too_old(&self, batch: Vec<Chunk>) -> Vec<Chunk> {
        let Some(age) = self.cfg.max_sample_age else {
            return batch;
        };
        let cutoff = (Health::now_ms() as i64).saturating_sub(age.as_millis() as i64);
        let aged = codec::drop_older(batch, cutoff);
        for e in &aged.damaged {
            // Damaged since receipt (cannot happen short of memory or disk faults): sent as it
            // is, for the upstream to judge.
            tracing::error!(error = %e, "cannot open a chunk to drop old samples; sending it unchanged");
        }
        if aged.dropped > 0 {
            let label = metrics::ReasonLabel {
                reason: DropReason::TooOld.as_str(),
            };
            self.metrics
                .samples_dropped
                .get_or_create(&label)
                .inc_by(aged.dropped);
            tracing::warn!(samples = aged.dropped, max_age = %humantime::format_duration(age), "dropped samples older than max_sample_age");
        }
        aged.chunks
    }

    fn count_delivered(&self, part: &[Chunk]) {
        let m = &self.metrics;
        let mut n = codec::Counts::default();
        for c in part {
            n.add(&c.counts);
        }
        m.forwarded.add(&n);
        m.last_success.set(Health::now_ms() as i64 / 1000);
        self.canary.count(part);
        if let Some(l) = self.limits.get() {
            l.workspace.observe(part);
        }
    }

    fn count_drop(&self, part: &[Chunk], reason: DropReason) {
        let samples: u64 = part.iter().map(|c| c.counts.points() as u64).sum();
        let label = metrics::ReasonLabel {
            reason: reason.as_str(),
        };
        self.metrics
            .samples_dropped
            .get_or_create(&label)
            .inc_by(samples);
        self.metrics.batches_dropped.get_or_create(&label).inc();
        if reason == DropReason::Shutdown {
            tracing::error!(
                samples,
                "shutdown grace period ended before the upstream accepted this data; it is lost"
            );
        }
    }
}

enum Attempt {
    Done(Action),
    RetryAfter(RetryReason, Option<Duration>),
}

/// The upstream's error text, for logs: at most 1 KiB is read, however large the body.
async fn upstream_message(mut resp: reqwest::Response) -> String {
    const MAX: usize = 1024;
    let mut buf = Vec::new();
    let mut truncated = false;
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX - buf.len();
                buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if chunk.len() > room {
                    truncated = true;
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => return format!("<body unreadable: {e}>"),
        }
    }
    let text = String::from_utf8_lossy(&buf).trim().to_string();
    if truncated {
        format!("{text}...")
    } else {
        text
    }
}

#[cfg(test)]
mod tests;
