//! The receiver: an HTTP server taking Prometheus remote write on `POST /api/v1/write`.
//!
//! It checks headers and sizes before doing work, decodes and validates with [`crate::codec`],
//! and answers 2xx only once the whole request is in the [`crate::queue`]. Every status code is
//! chosen in [`status_of`]: 400 bad input (never retried by senders), 413 too large, 415 wrong
//! content type or encoding, and a retryable status with `Retry-After` when the queue is full or
//! promlink has stopped accepting. The same listener serves `/health`, `/ready`, `/status` and
//! `/metrics`, like Azure's remote-write sidecar does on its port ([`status`] says what `/ready`
//! and `/status` mean), and `/api/v1/status/cardinality` ([`cardinality`]).
//!
//! Shutdown has two phases. While *draining* (from SIGTERM until writes go quiet), writes are
//! still accepted, `/ready` fails, and every answer tells the sender to move on: HTTP/1.1
//! answers carry `Connection: close`, and an HTTP/2 connection gets GOAWAY after its current
//! streams. Once *stopped*, writes get a retryable 503.
//!
//! Hostile senders are bounded at every step: [`listener`] caps connections and the time to
//! send headers (and to finish TLS), [`auth`] lets in only authenticated writers when
//! configured, and the write handler caps concurrent requests, the compressed bytes being read
//! (with a body read timeout) and the decoded bytes being decoded, before any work is done.

pub mod auth;
pub mod cardinality;
pub mod listener;
pub mod metrics;
mod reload;
mod routing;
pub mod status;
pub mod tls;

pub use routing::{ReceiveRoute, Routing};

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Version};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::FutureExt as _;

use crate::codec::{self, Counts, DecodeError, Protocol};
use crate::queue::PushError;
pub use metrics::Metrics;

/// What the receiver answers when the queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
pub enum FullStatus {
    /// 503 Service Unavailable: every Prometheus version retries it.
    #[serde(rename = "503")]
    #[value(name = "503")]
    ServiceUnavailable,
    /// 429 Too Many Requests: Prometheus retries it only with `retry_on_http_429: true`
    /// (before 2.x it dropped the data); vmagent retries it.
    #[serde(rename = "429")]
    #[value(name = "429")]
    TooManyRequests,
}

/// Receiver settings.
#[derive(Clone, Debug)]
pub struct ReceiveConfig {
    /// Largest compressed body accepted.
    pub max_body_bytes: usize,
    /// Decoding options (decoded size limit, cluster label).
    pub codec: codec::Options,
    /// Status when the queue is full.
    pub full_status: FullStatus,
    /// `Retry-After` seconds sent with that status.
    pub retry_after_secs: u64,
    /// Decoded bytes all requests together may hold while being decoded; a request that would
    /// go over waits for nothing and gets a retryable 503, so concurrent senders cannot push
    /// memory past it.
    pub max_inflight_decode_bytes: usize,
    /// Time a sender has to send a request body.
    pub body_read_timeout: std::time::Duration,
    /// Most write requests handled at once; more get the retryable `full_status`.
    pub max_concurrent_requests: usize,
    /// Compressed body bytes all requests together may hold while being read.
    pub max_inflight_body_bytes: usize,
}

/// TLS, authentication and connection settings of the receiver.
#[derive(Clone, Debug)]
pub struct InboundConfig {
    /// Serve HTTPS with these files; `None`: plain HTTP.
    pub tls: Option<tls::TlsFiles>,
    /// Sender authentication.
    pub auth: auth::AuthConfig,
    /// Connection limits and timeouts.
    pub listener: ListenerConfig,
    /// How often the TLS files and the token file are checked for changes.
    pub reload_interval: std::time::Duration,
}

pub use listener::ListenerConfig;

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// The body or its headers are unacceptable.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The queue is full, or the disk queue cannot write.
    #[error(transparent)]
    Queue(#[from] PushError),
    /// Too many bytes are being decoded at once.
    #[error("too much data is being decoded right now ({needed} bytes needed); retry shortly")]
    Busy {
        /// Decoded bytes the request needs.
        needed: usize,
    },
    /// promlink has stopped accepting data (shutdown).
    #[error("promlink is shutting down and accepts no new data; retry against another instance or later")]
    ShuttingDown,
    /// Reading the body failed (client went away).
    #[error("reading the request body: {0}")]
    Body(String),
    /// The body did not arrive within `body_read_timeout`.
    #[error("the request body did not arrive within {0:?} (body_read_timeout)")]
    BodyTimeout(std::time::Duration),
    /// Too many compressed bodies are being read at once.
    #[error(
        "too many request bodies are being read right now ({needed} bytes needed); retry shortly"
    )]
    BodyBusy {
        /// Compressed bytes the request needs.
        needed: usize,
    },
    /// `max_concurrent_requests` writes are already being handled.
    #[error("too many concurrent write requests (max_concurrent_requests = {0}); retry shortly")]
    TooManyRequests(usize),
    /// The sender is not authenticated.
    #[error("{}", .0.message())]
    Unauthorized(auth::Denied),
    /// Handling the write panicked (a defect, logged); the sender should retry.
    #[error("promlink failed while handling this write (a defect, logged); retry")]
    Panicked,
}

impl ReceiveError {
    /// Every value [`Self::reason`] gives (the `reason` label of `promlink_receive_rejected_total`).
    pub const REASONS: [&'static str; 18] = [
        "content_type",
        "encoding",
        "too_large",
        "snappy",
        "protobuf",
        "invalid",
        "too_many_series",
        "limit",
        "queue_full",
        "queue_io",
        "decode_busy",
        "shutting_down",
        "body",
        "body_timeout",
        "body_busy",
        "too_many_requests",
        "unauthorized",
        "panic",
    ];

    fn reason(&self) -> &'static str {
        match self {
            ReceiveError::Decode(DecodeError::UnsupportedContentType(_)) => "content_type",
            ReceiveError::Decode(DecodeError::UnsupportedEncoding(_)) => "encoding",
            ReceiveError::Decode(
                DecodeError::BodyTooLarge { .. } | DecodeError::DecodedTooLarge { .. },
            ) => "too_large",
            ReceiveError::Decode(DecodeError::Snappy(_)) => "snappy",
            ReceiveError::Decode(DecodeError::Protobuf(_)) => "protobuf",
            ReceiveError::Decode(DecodeError::Invalid { .. }) => "invalid",
            ReceiveError::Decode(DecodeError::TooManySeries { .. }) => "too_many_series",
            ReceiveError::Decode(DecodeError::Limit { .. }) => "limit",
            ReceiveError::Queue(PushError::Full { .. }) => "queue_full",
            ReceiveError::Queue(PushError::Io(_)) => "queue_io",
            ReceiveError::Busy { .. } => "decode_busy",
            ReceiveError::ShuttingDown => "shutting_down",
            ReceiveError::Body(_) => "body",
            ReceiveError::BodyTimeout(_) => "body_timeout",
            ReceiveError::BodyBusy { .. } => "body_busy",
            ReceiveError::TooManyRequests(_) => "too_many_requests",
            ReceiveError::Unauthorized(_) => "unauthorized",
            ReceiveError::Panicked => "panic",
        }
    }
}

/// The one place that maps refusals to HTTP statuses.
pub fn status_of(e: &ReceiveError, full: FullStatus) -> StatusCode {
    match e {
        ReceiveError::Decode(d) => match d {
            DecodeError::UnsupportedContentType(_) | DecodeError::UnsupportedEncoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            DecodeError::BodyTooLarge { .. }
            | DecodeError::DecodedTooLarge { .. }
            | DecodeError::TooManySeries { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            DecodeError::Snappy(_)
            | DecodeError::Protobuf(_)
            | DecodeError::Invalid { .. }
            | DecodeError::Limit { .. } => StatusCode::BAD_REQUEST,
        },
        ReceiveError::Queue(PushError::Io(_)) => StatusCode::SERVICE_UNAVAILABLE,
        ReceiveError::Queue(PushError::Full { .. })
        | ReceiveError::TooManyRequests(_)
        | ReceiveError::BodyBusy { .. } => match full {
            FullStatus::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            FullStatus::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        },
        ReceiveError::ShuttingDown | ReceiveError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
        ReceiveError::Body(_) => StatusCode::BAD_REQUEST,
        ReceiveError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
        ReceiveError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        ReceiveError::Panicked => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Where the receiver is in its life.
const ACCEPTING: u8 = 0;
/// Shutdown began: writes still accepted, senders told to move on.
const DRAINING: u8 = 1;
/// Writes refused.
const STOPPED: u8 = 2;

/// What `POST /-/reload` runs: a configuration reload (see `crate::serve`).
#[async_trait::async_trait]
pub trait Reload: Send + Sync {
    /// Reloads the configuration file: what changed, or why nothing did.
    async fn reload(&self) -> Result<String, String>;
}

/// Shared receiver state.
pub struct Receiver {
    /// The metrics of routes a reload added, each in a registry of its own.
    added_registries: std::sync::RwLock<Vec<prometheus_client::registry::Registry>>,
    /// Set when `enable_reload_endpoint` is: what `POST /-/reload` runs.
    reloader: std::sync::OnceLock<Arc<dyn Reload>>,
    cfg: ReceiveConfig,
    routing: std::sync::RwLock<Arc<Routing>>,
    metrics: Metrics,
    phase: AtomicU8,
    /// When the receiver was created, and the last write's arrival in ms after it (0: none).
    created: tokio::time::Instant,
    last_write_ms: AtomicU64,
    decoding: tokio::sync::Semaphore,
    reading: tokio::sync::Semaphore,
    requests: tokio::sync::Semaphore,
    auth: Arc<auth::Auth>,
    status: Box<dyn status::StatusSource>,
    registry: Arc<prometheus_client::registry::Registry>,
    /// What `GET /api/v1/status/cardinality` reports (set by `serve`).
    cardinality: std::sync::OnceLock<Arc<crate::workspace::cardinality::Cardinality>>,
}

impl Receiver {
    /// Creates the receiver state.
    pub fn new(
        cfg: ReceiveConfig,
        routes: Vec<ReceiveRoute>,
        metrics: Metrics,
        status: Box<dyn status::StatusSource>,
        registry: Arc<prometheus_client::registry::Registry>,
        auth: Arc<auth::Auth>,
    ) -> Self {
        let permits = |n: usize| n.min(tokio::sync::Semaphore::MAX_PERMITS);
        Self {
            decoding: tokio::sync::Semaphore::new(permits(cfg.max_inflight_decode_bytes)),
            reading: tokio::sync::Semaphore::new(permits(cfg.max_inflight_body_bytes)),
            requests: tokio::sync::Semaphore::new(permits(cfg.max_concurrent_requests)),
            auth,
            routing: std::sync::RwLock::new(Arc::new(Routing::new(cfg.codec.clone(), routes))),
            reloader: std::sync::OnceLock::new(),
            added_registries: std::sync::RwLock::default(),
            cfg,
            metrics,
            phase: AtomicU8::new(ACCEPTING),
            created: tokio::time::Instant::now(),
            last_write_ms: AtomicU64::new(0),
            status,
            registry,
            cardinality: std::sync::OnceLock::new(),
        }
    }

    /// Serves `c` at `GET /api/v1/status/cardinality` (only the first call has an effect).
    pub fn set_cardinality(&self, c: Arc<crate::workspace::cardinality::Cardinality>) {
        let _ = self.cardinality.set(c);
    }

    /// Shutdown has begun: `/ready` fails and answers tell senders to move on, but writes are
    /// still accepted until [`Receiver::stop_accepting`].
    pub fn begin_draining(&self) {
        let _ =
            self.phase
                .compare_exchange(ACCEPTING, DRAINING, Ordering::AcqRel, Ordering::Acquire);
    }

    /// From now on, writes get a retryable refusal.
    pub fn stop_accepting(&self) {
        self.phase.store(STOPPED, Ordering::Release);
    }

    /// Whether shutdown has begun.
    pub fn shutting_down(&self) -> bool {
        self.phase.load(Ordering::Acquire) != ACCEPTING
    }

    /// When the last write request arrived (after authentication), if any did.
    pub fn last_write(&self) -> Option<tokio::time::Instant> {
        match self.last_write_ms.load(Ordering::Acquire) {
            0 => None,
            ms => Some(self.created + std::time::Duration::from_millis(ms)),
        }
    }

    fn note_write(&self) {
        // Rounded up, so the quiet period never ends sooner than `quiet` after a write arrived
        // (rounded down it could end up to a millisecond early); never 0, which means "none".
        let ms = (self.created.elapsed().as_micros().div_ceil(1000) as u64).max(1);
        self.last_write_ms.fetch_max(ms, Ordering::AcqRel);
    }

    /// Lets the series that left the routes' budget windows go, and sets the budget gauges.
    pub fn refresh_budgets(&self) {
        for r in &self.routing().routes {
            if let Some(b) = &r.rule.budget {
                b.expire();
                self.metrics.routes.set_budget(&r.name, b);
            }
        }
    }

    /// Counts the series cache's and the relabel caches' lookups since the last scrape.
    pub fn count_caches(&self) {
        let routing = self.routing();
        self.metrics
            .count_series_cache(routing.codec.series_cache.as_deref());
        if let Some(r) = &routing.codec.relabel {
            self.metrics.count_relabel_cache("", r);
        }
        for route in &routing.routes {
            if let Some(r) = &route.rule.relabel {
                self.metrics.count_relabel_cache(&route.name, r);
            }
        }
    }

    /// Exposes the metrics of `registry` on `/metrics` too (a route a reload added).
    pub fn add_registry(&self, registry: prometheus_client::registry::Registry) {
        self.added_registries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(registry);
    }

    /// Serves `POST /-/reload` with `reloader` (`enable_reload_endpoint`).
    pub fn enable_reload(&self, reloader: Arc<dyn Reload>) {
        let _ = self.reloader.set(reloader);
    }

    /// The routing writes go through now.
    pub fn routing(&self) -> Arc<Routing> {
        self.routing
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Swaps the routing (a configuration reload); writes that began before finish with the
    /// old one.
    pub fn set_routing(&self, routing: Routing) {
        *self
            .routing
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(routing);
    }

    /// The status report: every check, and whether `/ready` answers 200.
    pub fn report(&self) -> status::Report {
        status::Report::new(self.status.checks(), self.shutting_down())
    }

    /// The axum router.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/api/v1/write", post(write))
            .route("/health", get(|| async { "ok\n" }))
            .route("/ready", get(ready))
            .route("/status", get(status_handler))
            .route("/metrics", get(metrics_handler))
            .route("/api/v1/status/cardinality", get(cardinality::handler))
            .route("/-/reload", post(reload_handler))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                move_senders_on,
            ))
            .with_state(self)
    }

    async fn accept(
        &self,
        protocol: Protocol,
        body: &bytes::Bytes,
    ) -> Result<Counts, ReceiveError> {
        if self.phase.load(Ordering::Acquire) == STOPPED {
            return Err(ReceiveError::ShuttingDown);
        }
        // Reserve the declared decoded size (bounded by the per-request limit, which decode
        // enforces) until the entries are handed to the queue.
        let declared = snap::raw::decompress_len(body)
            .unwrap_or(0)
            .min(self.cfg.codec.max_decoded_bytes);
        let needed = declared.min(self.cfg.max_inflight_decode_bytes);
        let _permit = self
            .decoding
            .try_acquire_many(u32::try_from(needed).unwrap_or(u32::MAX))
            .map_err(|_| ReceiveError::Busy { needed })?;
        let routing = self.routing();
        let decoded = codec::decode_routed(protocol, body, &routing.codec, &routing.rules)?;
        let counts = decoded.counts;
        if decoded.dropped_series > 0 {
            self.metrics.series_dropped.inc_by(decoded.dropped_series);
        }
        self.count_relabel_drops(&decoded.relabel);
        if decoded.unrouted.series > 0 {
            let m = &self.metrics;
            m.unrouted_series.inc_by(decoded.unrouted.series);
            m.unrouted_samples.inc_by(decoded.unrouted.samples);
        }
        self.push_routed(&routing, decoded.routes).await?;
        crate::supervise::hit(crate::supervise::RECEIVE_HANDLER);
        Ok(counts)
    }

    fn count_relabel_drops(&self, r: &codec::RelabelDrops) {
        for (reason, series, samples) in [
            ("rule", r.series, r.samples),
            ("invalid", r.invalid_series, r.invalid_samples),
        ] {
            if series > 0 {
                let l = metrics::ReasonLabel { reason };
                self.metrics
                    .relabel_series_dropped
                    .get_or_create(&l)
                    .inc_by(series);
                self.metrics
                    .relabel_samples_dropped
                    .get_or_create(&l)
                    .inc_by(samples);
            }
        }
    }

    fn count_accepted(&self, protocol: &'static str, c: &Counts) {
        let l = metrics::ProtocolLabel { protocol };
        self.metrics.received.add(&l, c);
    }
}

async fn write(
    State(rx): State<Arc<Receiver>>,
    conn: Option<Extension<Arc<auth::ConnInfo>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let protocol = Protocol::from_content_type(content_type);
    let label = match protocol {
        Ok(Protocol::V1) => "v1",
        Ok(Protocol::V2) => "v2",
        Err(_) => "unknown",
    };
    let handled = std::panic::AssertUnwindSafe(rx.handle(
        protocol,
        conn.as_ref().map(|c| c.0.as_ref()),
        &headers,
        body,
    ))
    .catch_unwind()
    .await;
    let result = match handled {
        Ok(result) => result,
        Err(panic) => {
            // What the request had queued stays queued: the sender's retry may duplicate it.
            rx.metrics.panics.inc();
            let why = crate::supervise::panic_message(&*panic);
            tracing::error!(panic = %why, "handling a write panicked; answering 500 so that the sender retries");
            Err(ReceiveError::Panicked)
        }
    };
    let response = match result {
        Ok((p, counts)) => {
            rx.count_accepted(label, &counts);
            let mut resp = StatusCode::NO_CONTENT.into_response();
            if p == Protocol::V2 {
                let h = resp.headers_mut();
                h.insert(
                    "X-Prometheus-Remote-Write-Samples-Written",
                    HeaderValue::from(counts.samples),
                );
                h.insert(
                    "X-Prometheus-Remote-Write-Histograms-Written",
                    HeaderValue::from(counts.histograms),
                );
                h.insert(
                    "X-Prometheus-Remote-Write-Exemplars-Written",
                    HeaderValue::from(counts.exemplars),
                );
            }
            resp
        }
        Err(e) => {
            let status = status_of(&e, rx.cfg.full_status);
            rx.metrics
                .rejected
                .get_or_create(&metrics::ReasonLabel { reason: e.reason() })
                .inc();
            if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                tracing::warn!(error = %e, status = status.as_u16(), "write refused; the sender will retry");
            } else {
                tracing::info!(error = %e, status = status.as_u16(), "write refused");
            }
            let mut resp = (status, format!("{e}\n")).into_response();
            if let ReceiveError::Unauthorized(_) = e {
                if rx.auth.accepts_bearer() {
                    resp.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"promlink\""),
                    );
                }
            }
            if matches!(
                e,
                ReceiveError::Queue(_)
                    | ReceiveError::ShuttingDown
                    | ReceiveError::Busy { .. }
                    | ReceiveError::BodyBusy { .. }
                    | ReceiveError::TooManyRequests(_)
            ) {
                resp.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(rx.cfg.retry_after_secs),
                );
            }
            resp
        }
    };
    rx.metrics
        .requests
        .get_or_create(&metrics::RequestLabels {
            protocol: label,
            code: response.status().as_u16(),
        })
        .inc();
    response
}

/// Whether `Content-Encoding` says snappy.
fn snappy_encoded(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|e| e.trim().eq_ignore_ascii_case("snappy"))
}

impl Receiver {
    /// Authenticates, takes a request slot, checks the headers, reads and accepts the body.
    async fn handle(
        &self,
        protocol: Result<Protocol, DecodeError>,
        conn: Option<&auth::ConnInfo>,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<(Protocol, Counts), ReceiveError> {
        if let Err(d) = self.auth.check(headers, conn) {
            self.metrics
                .unauthorized
                .get_or_create(&metrics::ReasonLabel { reason: d.reason() })
                .inc();
            return Err(ReceiveError::Unauthorized(d));
        }
        self.note_write();
        // Held until the answer is ready; unauthenticated writes never take one.
        let Ok(_slot) = self.requests.try_acquire() else {
            return Err(ReceiveError::TooManyRequests(
                self.cfg.max_concurrent_requests,
            ));
        };
        let protocol = protocol?;
        // Refuse a wrong encoding before reading up to max_body_bytes of it.
        if !snappy_encoded(headers) {
            return Err(DecodeError::UnsupportedEncoding(
                headers
                    .get(header::CONTENT_ENCODING)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("<missing>")
                    .to_string(),
            )
            .into());
        }
        let bytes = self.read_body(headers, body).await?;
        self.metrics.body_bytes.inc_by(bytes.len() as u64);
        self.accept(protocol, &bytes).await.map(|c| (protocol, c))
    }

    /// Reads the body up to `max_body_bytes`, within `body_read_timeout`, holding its size
    /// (the declared `Content-Length`, else the limit) of the shared read budget; refuses early
    /// on a larger `Content-Length`.
    async fn read_body(
        &self,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<bytes::Bytes, ReceiveError> {
        let limit = self.cfg.max_body_bytes;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if let Some(len) = declared.filter(|l| *l > limit) {
            return Err(DecodeError::BodyTooLarge { size: len, limit }.into());
        }
        let needed = declared
            .unwrap_or(limit)
            .min(self.cfg.max_inflight_body_bytes);
        let _budget = self
            .reading
            .try_acquire_many(u32::try_from(needed).unwrap_or(u32::MAX))
            .map_err(|_| ReceiveError::BodyBusy { needed })?;
        let timeout = self.cfg.body_read_timeout;
        tokio::time::timeout(timeout, read_limited(body, limit))
            .await
            .map_err(|_| ReceiveError::BodyTimeout(timeout))?
    }
}

/// Reads at most `limit` bytes of `body`.
async fn read_limited(body: Body, limit: usize) -> Result<bytes::Bytes, ReceiveError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
        {
            ReceiveError::Decode(DecodeError::BodyTooLarge {
                size: limit + 1,
                limit,
            })
        } else {
            ReceiveError::Body(e.to_string())
        }
    })
}

/// While shutting down, tells every sender to take its next request elsewhere: HTTP/1.1
/// answers carry `Connection: close`; an HTTP/2 connection is asked to send GOAWAY once this
/// answer is out (in-flight streams finish first).
async fn move_senders_on(State(rx): State<Arc<Receiver>>, req: Request, next: Next) -> Response {
    let version = req.version();
    let conn = req
        .extensions()
        .get::<Arc<listener::ConnControl>>()
        .cloned();
    let mut resp = next.run(req).await;
    if rx.shutting_down() {
        if version < Version::HTTP_2 {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        } else if let Some(conn) = conn {
            conn.close_after_response();
        }
    }
    resp
}

async fn ready(State(rx): State<Arc<Receiver>>) -> Response {
    let report = rx.report();
    if report.ready {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", report.not_ready_because().join("; ")),
        )
            .into_response()
    }
}

async fn status_handler(State(rx): State<Arc<Receiver>>) -> Response {
    let report = rx.report();
    match serde_json::to_string_pretty(&report) {
        Ok(mut json) => {
            json.push('\n');
            ([(header::CONTENT_TYPE, "application/json")], json).into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the status: {e}\n"),
        )
            .into_response(),
    }
}

/// `POST /-/reload`: off (403) unless `enable_reload_endpoint`; then authenticated as writes
/// are, and answered 200 with what changed or 400 with why the file was not applied.
async fn reload_handler(
    State(rx): State<Arc<Receiver>>,
    conn: Option<Extension<Arc<auth::ConnInfo>>>,
    headers: HeaderMap,
) -> Response {
    let Some(reloader) = rx.reloader.get() else {
        return (
            StatusCode::FORBIDDEN,
            "POST /-/reload is off: set enable_reload_endpoint: true, or send SIGHUP\n",
        )
            .into_response();
    };
    if let Err(d) = rx.auth.check(&headers, conn.as_ref().map(|c| c.0.as_ref())) {
        rx.metrics
            .unauthorized
            .get_or_create(&metrics::ReasonLabel { reason: d.reason() })
            .inc();
        return (StatusCode::UNAUTHORIZED, format!("{}\n", d.message())).into_response();
    }
    match reloader.reload().await {
        Ok(done) => (StatusCode::OK, format!("{done}\n")).into_response(),
        Err(why) => (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response(),
    }
}

async fn metrics_handler(State(rx): State<Arc<Receiver>>) -> Response {
    rx.refresh_budgets();
    rx.count_caches();
    let added = rx
        .added_registries
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match crate::telemetry::encode_all(std::iter::once(&*rx.registry).chain(added.iter())) {
        Ok(out) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests;
