//! An EMULATOR of an Azure Monitor Data Collection Endpoint's metrics ingestion API, for tests,
//! benchmarks and `promlink demo`; it stores nothing durably and is not Azure.
//!
//! It accepts only what the real endpoint documents
//! (<https://learn.microsoft.com/azure/azure-monitor/essentials/prometheus-remote-write-virtual-machines>):
//! `POST /dataCollectionRules/{dcr immutable id}/streams/Microsoft-PrometheusMetrics/api/v1/write?api-version=2023-04-24`
//! with an Entra ID bearer token for a principal holding *Monitoring Metrics Publisher*, and a
//! remote write 1.0 body (snappy block + protobuf `WriteRequest`, the headers of the
//! [spec](https://prometheus.io/docs/specs/prw/remote_write_spec/)). Checks run in this order,
//! first failure wins: fault script, path (404) and method (405), api-version (400), token
//! (401), role (403), headers (415 content type, 400 encoding and version), body size (413),
//! snappy and protobuf (400), duplicate samples (422, documented by Azure). The status of
//! undocumented cases is this emulator's choice and is listed in the tests.
//!
//! What it accepts is counted ([`DceStats`], with a [`Checksum`] of every float sample), checked
//! for per-series timestamp order, and optionally kept (bounded) for inspection. A fault script
//! ([`Fault`]) answers requests before normal handling: a status with `Retry-After`, a dropped
//! connection, a delay, or "accept then fail" (the data is taken but the client sees an error,
//! which shows duplication downstream).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use prost::Message as _;

use super::entra::{json_response, EntraConfig, EntraEmulator, RegisteredClient, TokenVerifier};
use super::serve::{self, ConnKill, Server};
use super::tls::{LeafCert, TestCa};
use crate::loadgen::checksum::{series_hash_pairs, Checksum};
use crate::proto::v1::WriteRequest;

/// The only stream the metrics ingestion API accepts.
pub const STREAM: &str = "Microsoft-PrometheusMetrics";
/// The api-version Azure documents for metrics ingestion.
pub const API_VERSION: &str = "2023-04-24";
/// A DCR immutable id for demos and tests.
pub const DEFAULT_DCR_ID: &str = "dcr-00000000000000000000000000000000";

/// Errors starting or running the emulator.
#[derive(Debug, thiserror::Error)]
pub enum DceError {
    /// The TLS certificate could not be generated.
    #[error("dce emulator: generating a certificate")]
    Tls(#[from] super::tls::TlsError),
    /// The TLS configuration was refused.
    #[error("dce emulator: tls configuration")]
    TlsConfig(#[source] std::io::Error),
    /// The listening socket could not be bound.
    #[error("dce emulator: binding {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The embedded Entra ID emulator failed to start.
    #[error("dce emulator: starting the embedded entra emulator")]
    Entra(#[from] super::entra::EntraError),
    /// A file could not be read or written.
    #[error("dce emulator: {path}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A command-line value is unusable.
    #[error("dce emulator: {0}")]
    Config(String),
}

/// How the emulator serves.
#[derive(Clone, Debug, Default)]
pub enum DceTls {
    /// HTTPS with a certificate from a fresh throw-away CA ([`DceHandle::ca_pem`]).
    #[default]
    Generate,
    /// HTTPS with the given certificate.
    Pem {
        /// Server certificate chain, PEM.
        cert_pem: String,
        /// Private key, PEM.
        key_pem: String,
        /// The CA that issued it, if known (returned by [`DceHandle::ca_pem`]).
        ca_pem: Option<String>,
    },
    /// Plain HTTP (benchmarks; the real service is HTTPS only).
    Plain,
}

impl DceTls {
    /// HTTPS with a certificate for `127.0.0.1` and `localhost` issued by `ca`.
    ///
    /// # Errors
    /// When the certificate cannot be issued.
    pub fn from_ca(ca: &TestCa) -> Result<Self, DceError> {
        let LeafCert { cert_pem, key_pem } = ca.issue(&["127.0.0.1", "localhost"])?;
        Ok(Self::Pem {
            cert_pem,
            key_pem,
            ca_pem: Some(ca.cert_pem().to_owned()),
        })
    }
}

/// What the emulator accepts and how.
#[derive(Clone, Debug)]
pub struct DceConfig {
    /// Listen address. Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// The DCR immutable id in the path. Default [`DEFAULT_DCR_ID`].
    pub dcr_id: String,
    /// Accepted `api-version` values. Default `[2023-04-24]`.
    pub api_versions: Vec<String>,
    /// TLS or plain HTTP. Default: HTTPS with a generated CA.
    pub tls: DceTls,
    /// Checks bearer tokens; `None` accepts requests without one (benchmarks only).
    pub auth: Option<TokenVerifier>,
    /// Principals (client ids or object ids) holding Monitoring Metrics Publisher.
    pub granted: Vec<String>,
    /// Largest accepted body, compressed and decompressed, bytes. Default 32 MiB.
    pub max_body_bytes: usize,
    /// How many accepted requests to keep for [`DceHandle::accepted`]; the oldest go first.
    /// Default 0.
    pub keep_accepted: usize,
    /// Also answer 422 when a series appears twice in one request even at different timestamps
    /// (the default 422s only a repeated (series, timestamp) pair).
    pub reject_repeated_series: bool,
}

impl Default for DceConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            dcr_id: DEFAULT_DCR_ID.to_owned(),
            api_versions: vec![API_VERSION.to_owned()],
            tls: DceTls::Generate,
            auth: None,
            granted: Vec::new(),
            max_body_bytes: 32 << 20,
            keep_accepted: 0,
            reject_repeated_series: false,
        }
    }
}

/// A scripted answer, served before normal handling, one per `POST` request, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer `status` without looking at the request.
    Status {
        /// HTTP status code.
        status: u16,
        /// `Retry-After` header value, if any (seconds or an HTTP date).
        retry_after: Option<String>,
        /// Response body; a JSON error naming the fault when `None`.
        body: Option<String>,
    },
    /// Drop the connection without answering.
    Reset,
    /// Wait, then handle the request normally.
    Delay(Duration),
    /// Handle (and count) the request normally, then answer `status` instead of 200.
    AcceptThen(u16),
}

impl Fault {
    /// A bare status.
    pub fn status(status: u16) -> Self {
        Self::Status {
            status,
            retry_after: None,
            body: None,
        }
    }

    /// A status with `Retry-After: {seconds}`.
    pub fn retry_after(status: u16, seconds: u64) -> Self {
        Self::Status {
            status,
            retry_after: Some(seconds.to_string()),
            body: None,
        }
    }
}

/// Counters of what the emulator saw and accepted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DceStats {
    /// Requests received, whatever happened to them.
    pub requests: u64,
    /// Requests accepted (data counted below), including [`Fault::AcceptThen`] ones.
    pub accepted_requests: u64,
    /// Answers other than 200, by status (faults included).
    pub rejected: BTreeMap<u16, u64>,
    /// Faults served.
    pub faults: u64,
    /// Time series entries accepted.
    pub series: u64,
    /// Float samples accepted.
    pub samples: u64,
    /// Native histogram samples accepted.
    pub histograms: u64,
    /// Exemplars accepted.
    pub exemplars: u64,
    /// Metadata entries accepted.
    pub metadata: u64,
    /// Checksum of every accepted float sample.
    pub checksum: Checksum,
    /// Accepted samples older than the last one accepted for their series.
    pub out_of_order_samples: u64,
    /// Accepted samples with the same timestamp as the last one of their series (resends).
    pub repeated_timestamp_samples: u64,
    /// Distinct series seen.
    pub distinct_series: u64,
    /// Compressed body bytes of accepted requests.
    pub body_bytes: u64,
    /// Accepted requests dropped from the bounded store.
    pub dropped_records: u64,
}

struct Data {
    stats: DceStats,
    faults: VecDeque<Fault>,
    outage: Option<Fault>,
    granted: HashSet<String>,
    api_versions: Vec<String>,
    last_ts: rustc_hash::FxHashMap<u64, i64>,
    accepted: VecDeque<WriteRequest>,
}

struct Shared {
    data: Mutex<Data>,
    path: String,
    dcr_prefix: String,
    auth: Option<TokenVerifier>,
    max_body: usize,
    keep: usize,
    reject_repeated_series: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Data> {
        // Counters stay usable if a holder panicked.
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Entry point: starts an emulator.
#[derive(Debug)]
pub struct DceEmulator;

impl DceEmulator {
    /// Starts the emulator.
    ///
    /// # Errors
    /// When the certificate cannot be made or the address bound.
    pub async fn start(config: DceConfig) -> Result<DceHandle, DceError> {
        let (tls, ca_pem) = match config.tls {
            DceTls::Plain => (None, None),
            DceTls::Generate => {
                let ca = TestCa::new("promlink EMULATOR CA")?;
                let leaf = ca.issue(&["127.0.0.1", "localhost"])?;
                let tls = super::tls::server_config(&leaf.cert_pem, &leaf.key_pem)
                    .map_err(DceError::TlsConfig)?;
                (Some(Arc::new(tls)), Some(ca.cert_pem().to_owned()))
            }
            DceTls::Pem {
                cert_pem,
                key_pem,
                ca_pem,
            } => {
                let tls =
                    super::tls::server_config(&cert_pem, &key_pem).map_err(DceError::TlsConfig)?;
                (Some(Arc::new(tls)), ca_pem)
            }
        };
        let shared = Arc::new(Shared {
            data: Mutex::new(Data {
                stats: DceStats::default(),
                faults: VecDeque::new(),
                outage: None,
                granted: config.granted.into_iter().collect(),
                api_versions: config.api_versions,
                last_ts: Default::default(),
                accepted: VecDeque::new(),
            }),
            path: format!(
                "/dataCollectionRules/{}/streams/{STREAM}/api/v1/write",
                config.dcr_id
            ),
            dcr_prefix: "/dataCollectionRules/".to_owned(),
            auth: config.auth,
            max_body: config.max_body_bytes,
            keep: config.keep_accepted,
            reject_repeated_series: config.reject_repeated_series,
        });
        if shared.auth.is_none() {
            tracing::warn!("EMULATOR dce: bearer tokens are not checked (auth disabled)");
        }
        let router = Router::new().fallback(handle).with_state(shared.clone());
        let server = serve::spawn(config.listen, tls.clone(), router)
            .await
            .map_err(|source| DceError::Bind {
                addr: config.listen,
                source,
            })?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base_url = format!("{scheme}://{}", server.addr);
        let url = format!("{base_url}{}?api-version={API_VERSION}", shared.path);
        tracing::info!(%url, "EMULATOR: Azure Monitor DCE metrics ingestion emulator listening (not Azure)");
        Ok(DceHandle {
            shared,
            server,
            base_url,
            url,
            ca_pem,
        })
    }
}

/// A running emulator. Dropping it stops the server; prefer [`DceHandle::shutdown`].
pub struct DceHandle {
    shared: Arc<Shared>,
    server: Server,
    base_url: String,
    url: String,
    ca_pem: Option<String>,
}

impl fmt::Debug for DceHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DceHandle")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl DceHandle {
    /// The full ingestion URL, with `?api-version=2023-04-24`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `scheme://host:port`, for building wrong URLs in tests.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// The CA certificate (PEM) to trust, when serving HTTPS with a known CA.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> DceStats {
        self.shared.lock().stats.clone()
    }

    /// The accepted requests kept so far (at most `keep_accepted`, oldest first).
    pub fn accepted(&self) -> Vec<WriteRequest> {
        self.shared.lock().accepted.iter().cloned().collect()
    }

    /// TCP connections accepted so far (counted before any TLS or HTTP): proof that nothing
    /// at all reached this endpoint.
    pub fn connections(&self) -> u64 {
        self.server
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Queues a fault; faults are served one per write request, in order.
    pub fn push_fault(&self, fault: Fault) {
        self.shared.lock().faults.push_back(fault);
    }

    /// An outage: until cleared with `None`, every write gets `fault` (after any scripted
    /// faults), however many arrive.
    pub fn set_outage(&self, fault: Option<Fault>) {
        self.shared.lock().outage = fault;
    }

    /// Faults still queued.
    pub fn pending_faults(&self) -> usize {
        self.shared.lock().faults.len()
    }

    /// Grants Monitoring Metrics Publisher to a client id or object id (role propagation done).
    pub fn grant(&self, principal: &str) {
        self.shared.lock().granted.insert(principal.to_owned());
    }

    /// Revokes the role from a principal.
    pub fn revoke(&self, principal: &str) {
        self.shared.lock().granted.remove(principal);
    }

    /// Replaces the accepted api-versions.
    pub fn set_api_versions(&self, versions: &[&str]) {
        self.shared.lock().api_versions = versions.iter().map(|v| (*v).to_owned()).collect();
    }

    /// Clears counters, order tracking and kept requests (not faults or grants).
    pub fn reset(&self) {
        let mut data = self.shared.lock();
        data.stats = DceStats::default();
        data.last_ts.clear();
        data.accepted.clear();
    }

    /// Stops the server, letting in-flight requests finish.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }

    /// Stops the emulator like [`DceHandle::shutdown`] and returns what it accepted, counted
    /// after the last connection closed (so nothing is accepted after the figures).
    pub async fn shutdown_with_results(self) -> (DceStats, Vec<WriteRequest>) {
        let shared = self.shared.clone();
        self.server.shutdown().await;
        let s = shared.lock();
        (s.stats.clone(), s.accepted.iter().cloned().collect())
    }
}

/// An Azure style error body: `{"error":{"code","message"}}`.
fn azure_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(
        status,
        serde_json::json!({ "error": { "code": code, "message": format!("{message} (EMULATOR)") } }),
    )
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let fault = {
        let mut data = shared.lock();
        data.stats.requests += 1;
        // Faults script answers to writes: probes and other methods do not consume them.
        let fault = if request.method() == axum::http::Method::POST {
            data.faults.pop_front().or_else(|| data.outage.clone())
        } else {
            None
        };
        if fault.is_some() {
            data.stats.faults += 1;
        }
        fault
    };
    let mut accept_then = None;
    match fault {
        Some(Fault::Status {
            status,
            retry_after,
            body,
        }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            count_rejection(&shared, status);
            let mut response = match body {
                Some(body) => (status, body).into_response(),
                None => azure_error(status, "InjectedFault", "injected failure"),
            };
            if let Some(value) = retry_after.and_then(|v| header::HeaderValue::from_str(&v).ok()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            return response;
        }
        Some(Fault::Reset) => {
            if let Some(kill) = request.extensions().get::<ConnKill>() {
                kill.0.notify_one();
                // The connection task drops this future with the connection.
                std::future::pending::<()>().await;
            }
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::AcceptThen(status)) => {
            accept_then =
                Some(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
        }
        None => {}
    }
    let response = match ingest(&shared, request).await {
        Ok(()) => match accept_then {
            Some(status) => azure_error(status, "InjectedFault", "data accepted, failure injected"),
            None => StatusCode::OK.into_response(),
        },
        Err(response) => response,
    };
    if response.status() != StatusCode::OK {
        count_rejection(&shared, response.status());
        tracing::debug!(status = %response.status(), "EMULATOR dce: request refused");
    }
    response
}

fn count_rejection(shared: &Shared, status: StatusCode) {
    *shared
        .lock()
        .stats
        .rejected
        .entry(status.as_u16())
        .or_default() += 1;
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn ingest(shared: &Shared, request: Request) -> Result<(), Response> {
    let (parts, body) = request.into_parts();
    // Path, then method.
    if parts.uri.path() != shared.path {
        let message = if parts.uri.path().starts_with(&shared.dcr_prefix) {
            "no data collection rule or stream matches this path"
        } else {
            "resource not found"
        };
        return Err(azure_error(StatusCode::NOT_FOUND, "NotFound", message));
    }
    if parts.method != Method::POST {
        let mut response = azure_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "only POST is allowed",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return Err(response);
    }
    // api-version.
    let versions: Vec<String> =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .filter(|(k, _)| k == "api-version")
            .map(|(_, v)| v.into_owned())
            .collect();
    let supported = shared.lock().api_versions.clone();
    match versions.as_slice() {
        [] => {
            return Err(azure_error(
                StatusCode::BAD_REQUEST,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests",
            ))
        }
        [v] if supported.iter().any(|s| s == v) => {}
        _ => {
            return Err(azure_error(
                StatusCode::BAD_REQUEST,
                "UnsupportedApiVersion",
                &format!(
                    "The requested api-version {} is not supported; supported versions: {}",
                    versions.join(","),
                    supported.join(", ")
                ),
            ))
        }
    }
    // Token, then role.
    if let Some(verifier) = &shared.auth {
        let unauthorized = |message: &str| {
            let mut response = azure_error(StatusCode::UNAUTHORIZED, "InvalidToken", message);
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer authorization_uri=\"emulator\""),
            );
            response
        };
        let token = header_str(&parts.headers, header::AUTHORIZATION)
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err(unauthorized("an Authorization: Bearer token is required"));
        };
        let claims = verifier.verify(token).map_err(|e| unauthorized(&e))?;
        let granted = {
            let data = shared.lock();
            data.granted.contains(&claims.appid) || data.granted.contains(&claims.oid)
        };
        if !granted {
            return Err(azure_error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                &format!(
                    "The principal {} (appid {}) does not have Monitoring Metrics Publisher on this data collection rule, or the assignment has not propagated yet",
                    claims.oid, claims.appid
                ),
            ));
        }
    }
    // Headers.
    let content_type = header_str(&parts.headers, header::CONTENT_TYPE).unwrap_or("");
    if content_type.split(';').next().map(str::trim) != Some("application/x-protobuf") {
        return Err(azure_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            &format!("Content-Type must be application/x-protobuf, got '{content_type}'"),
        ));
    }
    let encoding = header_str(&parts.headers, header::CONTENT_ENCODING).unwrap_or("");
    if !encoding.eq_ignore_ascii_case("snappy") {
        return Err(azure_error(
            StatusCode::BAD_REQUEST,
            "InvalidContentEncoding",
            &format!("Content-Encoding must be snappy, got '{encoding}'"),
        ));
    }
    let version = header_str(&parts.headers, "x-prometheus-remote-write-version").unwrap_or("");
    if !version.starts_with("0.1.") {
        return Err(azure_error(
            StatusCode::BAD_REQUEST,
            "InvalidRemoteWriteVersion",
            &format!("X-Prometheus-Remote-Write-Version must be 0.1.0, got '{version}'"),
        ));
    }
    // Body.
    let too_large = || {
        azure_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            &format!("the body exceeds {} bytes", shared.max_body),
        )
    };
    let compressed = axum::body::to_bytes(Body::new(body), shared.max_body)
        .await
        .map_err(|_| too_large())?;
    let bad = |message: String| azure_error(StatusCode::BAD_REQUEST, "InvalidPayload", &message);
    let len = snap::raw::decompress_len(&compressed)
        .map_err(|e| bad(format!("body is not a snappy block: {e}")))?;
    if len > shared.max_body {
        return Err(too_large());
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&compressed)
        .map_err(|e| bad(format!("body is not a snappy block: {e}")))?;
    let parsed = parse_write_request(&raw).map_err(|e| match e {
        Refusal::Wire(e) => bad(format!("body is not a prometheus.WriteRequest: {e}")),
        Refusal::Content(m) => bad(m.to_owned()),
    })?;
    // Kept requests are decoded in full, for the tests that look at them.
    let kept = if shared.keep > 0 {
        Some(
            WriteRequest::decode(raw.as_slice())
                .map_err(|e| bad(format!("body is not a prometheus.WriteRequest: {e}")))?,
        )
    } else {
        None
    };
    // Content: a series and timestamp repeated within one request is Azure's documented 422.
    let points = parsed.samples.len() + parsed.histograms.len();
    let mut seen_pairs: rustc_hash::FxHashSet<(u64, i64)> =
        rustc_hash::FxHashSet::with_capacity_and_hasher(points, Default::default());
    let mut seen_series: rustc_hash::FxHashSet<u64> = Default::default();
    let duplicate = if shared.reject_repeated_series {
        parsed.series.iter().any(|h| !seen_series.insert(*h))
    } else {
        parsed
            .samples
            .iter()
            .map(|&(i, t, _)| (i, t))
            .chain(parsed.histograms.iter().copied())
            .any(|(i, t)| !seen_pairs.insert((parsed.series[i as usize], t)))
    };
    if duplicate {
        return Err(azure_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "DuplicateTimeSeries",
            "the request contains duplicate time series",
        ));
    }
    // Accept.
    let mut checksum = Checksum::new();
    for &(i, t, bits) in &parsed.samples {
        checksum.add(parsed.series[i as usize], t, f64::from_bits(bits));
    }
    let mut data = shared.lock();
    let stats_before = data.stats.distinct_series;
    let mut distinct_new = 0;
    let mut ooo = 0;
    let mut repeated = 0;
    let points = parsed
        .samples
        .iter()
        .map(|&(i, t, _)| (i, t))
        .chain(parsed.histograms.iter().copied());
    for (i, t) in points {
        let h = parsed.series[i as usize];
        match data.last_ts.entry(h) {
            std::collections::hash_map::Entry::Vacant(v) => {
                distinct_new += 1;
                v.insert(t);
            }
            std::collections::hash_map::Entry::Occupied(mut o) => {
                let last = *o.get();
                if t < last {
                    ooo += 1;
                } else if t == last {
                    repeated += 1;
                } else {
                    o.insert(t);
                }
            }
        }
    }
    let stats = &mut data.stats;
    stats.accepted_requests += 1;
    stats.series += parsed.series.len() as u64;
    stats.samples += parsed.samples.len() as u64;
    stats.histograms += parsed.histograms.len() as u64;
    stats.exemplars += parsed.exemplars;
    stats.metadata += parsed.metadata;
    stats.checksum.merge(&checksum);
    stats.out_of_order_samples += ooo;
    stats.repeated_timestamp_samples += repeated;
    stats.distinct_series = stats_before + distinct_new;
    stats.body_bytes += compressed.len() as u64;
    if let Some(request) = kept {
        if data.accepted.len() >= shared.keep {
            data.accepted.pop_front();
            data.stats.dropped_records += 1;
        }
        data.accepted.push_back(request);
    }
    Ok(())
}

/// What the emulator reads from a request body, straight off the wire (no owned strings, so
/// it can count a benchmark's load without becoming the bottleneck).
#[derive(Default)]
struct Parsed {
    /// Per series, its checksum hash ([`series_hash_pairs`]).
    series: Vec<u64>,
    /// Float samples: (series index, timestamp, value bits).
    samples: Vec<(u32, i64, u64)>,
    /// Histogram samples: (series index, timestamp).
    histograms: Vec<(u32, i64)>,
    exemplars: u64,
    metadata: u64,
}

/// Why a body was refused.
enum Refusal {
    /// Not a well-formed `prometheus.WriteRequest`.
    Wire(String),
    /// Well-formed, but a series breaks a rule.
    Content(&'static str),
}

impl From<crate::codec::DecodeError> for Refusal {
    fn from(e: crate::codec::DecodeError) -> Self {
        Refusal::Wire(e.to_string())
    }
}

/// Walks a `prometheus.WriteRequest` as strictly as a protobuf decoder (wire types of known
/// fields, UTF-8 strings, well-formed nested messages; unknown fields skipped) and checks the
/// rules the ingestion API enforces on series.
fn parse_write_request(raw: &[u8]) -> Result<Parsed, Refusal> {
    use crate::codec::wire::{Fields, WireType};
    use crate::proto::v1::{Exemplar, Histogram, MetricMetadata};
    let wire = |what: &str| Refusal::Wire(what.to_owned());
    let mut out = Parsed::default();
    let mut labels: Vec<(&[u8], &[u8])> = Vec::with_capacity(16);
    for f in Fields::new(raw) {
        let f = f?;
        match (f.number, f.wire) {
            (1, WireType::Len) => {}
            (3, WireType::Len) => {
                MetricMetadata::decode(f.data).map_err(|e| Refusal::Wire(e.to_string()))?;
                out.metadata += 1;
                continue;
            }
            (1 | 3, _) => return Err(wire("WriteRequest field has the wrong wire type")),
            _ => continue,
        }
        let index = u32::try_from(out.series.len()).map_err(|_| wire("too many series"))?;
        labels.clear();
        for t in Fields::new(f.data) {
            let t = t?;
            if matches!(t.number, 1..=4) && t.wire != WireType::Len {
                return Err(wire("TimeSeries field has the wrong wire type"));
            }
            match t.number {
                1 => {
                    let utf8 = |s: &[u8]| s.is_ascii() || std::str::from_utf8(s).is_ok();
                    // The canonical encoding every sender uses, else field by field.
                    if let Some((_, name, value)) = crate::codec::wire::fast_label(t.data) {
                        if !(utf8(name) && utf8(value)) {
                            return Err(wire("invalid string value: data is not UTF-8 encoded"));
                        }
                        labels.push((name, value));
                        continue;
                    }
                    let (mut name, mut value): (&[u8], &[u8]) = (&[], &[]);
                    for l in Fields::new(t.data) {
                        let l = l?;
                        let slot = match l.number {
                            1 => &mut name,
                            2 => &mut value,
                            _ => continue,
                        };
                        if l.wire != WireType::Len {
                            return Err(wire("Label field has the wrong wire type"));
                        }
                        if !utf8(l.data) {
                            return Err(wire("invalid string value: data is not UTF-8 encoded"));
                        }
                        *slot = l.data;
                    }
                    labels.push((name, value));
                }
                2 => {
                    let (mut value, mut ts) = (0u64, 0i64);
                    for x in Fields::new(t.data) {
                        let x = x?;
                        match (x.number, x.wire) {
                            (1, WireType::Fixed64) => {
                                let mut a = [0u8; 8];
                                a.copy_from_slice(x.data);
                                value = u64::from_le_bytes(a);
                            }
                            (2, WireType::Varint) => ts = x.varint as i64,
                            (1 | 2, _) => return Err(wire("Sample field has the wrong wire type")),
                            _ => {}
                        }
                    }
                    out.samples.push((index, ts, value));
                }
                3 => {
                    Exemplar::decode(t.data).map_err(|e| Refusal::Wire(e.to_string()))?;
                    out.exemplars += 1;
                }
                4 => {
                    let h = Histogram::decode(t.data).map_err(|e| Refusal::Wire(e.to_string()))?;
                    out.histograms.push((index, h.timestamp));
                }
                _ => {}
            }
        }
        if !labels
            .iter()
            .any(|(n, v)| *n == b"__name__" && !v.is_empty())
        {
            return Err(Refusal::Content(
                "every time series needs a non-empty __name__ label",
            ));
        }
        if labels.iter().any(|(n, _)| n.is_empty()) {
            return Err(Refusal::Content("label names must not be empty"));
        }
        let h = series_hash_pairs(&mut labels);
        // Sorted now: a repeated name sits next to itself.
        if labels.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(Refusal::Content("a time series repeats a label name"));
        }
        out.series.push(h);
    }
    Ok(out)
}

/// `promlink emulate-dce`: run the DCE EMULATOR (and an embedded Entra ID EMULATOR) locally.
#[derive(clap::Args, Clone, Debug)]
#[command(
    about = "Run a local EMULATOR of the Azure Monitor DCE metrics ingestion API (not Azure; for demos and tests)"
)]
pub struct EmulateDceArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9443")]
    pub listen: SocketAddr,
    /// DCR immutable id accepted in the path.
    #[arg(long, default_value = DEFAULT_DCR_ID)]
    pub dcr_id: String,
    /// Accepted api-version (repeatable).
    #[arg(long = "api-version", default_values_t = vec![API_VERSION.to_owned()])]
    pub api_versions: Vec<String>,
    /// Serve plain HTTP instead of HTTPS (benchmarks; the real service is HTTPS only).
    #[arg(long)]
    pub plain_http: bool,
    /// Server certificate chain (PEM); generated with a throw-away CA when absent.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Where to write the generated CA certificate (PEM) for clients to trust.
    #[arg(long)]
    pub write_ca: Option<PathBuf>,
    /// Do not check bearer tokens and do not start the Entra ID emulator.
    #[arg(long)]
    pub no_auth: bool,
    /// Tenant id of the emulated application.
    #[arg(long, default_value = "00000000-0000-0000-0000-000000000001")]
    pub tenant_id: String,
    /// Client id of the emulated application (granted the publisher role).
    #[arg(long, default_value = "promlink-demo")]
    pub client_id: String,
    /// Client secret of the emulated application.
    #[arg(
        long,
        env = "PROMLINK_EMULATOR_CLIENT_SECRET",
        default_value = "emulator-secret",
        hide_env_values = true
    )]
    pub client_secret: String,
    /// Seconds between count reports; 0 reports only at exit.
    #[arg(long, default_value_t = 10)]
    pub report_every: u64,
    /// Largest accepted body, bytes.
    #[arg(long, default_value_t = 32 << 20)]
    pub max_body_bytes: usize,
}

/// Runs the emulator until SIGINT/SIGTERM, printing counts periodically and at exit.
///
/// # Errors
/// When a certificate file cannot be read or written, or a server cannot start.
pub async fn run_emulate_dce(args: EmulateDceArgs) -> Result<(), DceError> {
    let file_err = |path: &PathBuf| {
        let path = path.clone();
        move |source| DceError::File { path, source }
    };
    if !args.dcr_id.starts_with("dcr-") {
        return Err(DceError::Config(format!(
            "--dcr-id {} must start with dcr-",
            args.dcr_id
        )));
    }
    let ca = TestCa::new("promlink EMULATOR CA")?;
    let tls = if args.plain_http {
        DceTls::Plain
    } else if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        DceTls::Pem {
            cert_pem: std::fs::read_to_string(cert).map_err(file_err(cert))?,
            key_pem: std::fs::read_to_string(key).map_err(file_err(key))?,
            ca_pem: None,
        }
    } else {
        DceTls::from_ca(&ca)?
    };
    if let Some(path) = &args.write_ca {
        std::fs::write(path, ca.cert_pem()).map_err(file_err(path))?;
        println!("EMULATOR CA certificate written to {}", path.display());
    }
    let entra = if args.no_auth {
        None
    } else {
        let config = EntraConfig {
            clients: vec![RegisteredClient::with_secret(
                &args.tenant_id,
                &args.client_id,
                &args.client_secret,
            )],
            ..EntraConfig::default()
        };
        Some(EntraEmulator::start_with_ca(config, &ca).await?)
    };
    let config = DceConfig {
        listen: args.listen,
        dcr_id: args.dcr_id.clone(),
        api_versions: args.api_versions.clone(),
        tls,
        auth: entra.as_ref().map(|e| e.verifier()),
        granted: vec![args.client_id.clone()],
        max_body_bytes: args.max_body_bytes,
        ..DceConfig::default()
    };
    let dce = DceEmulator::start(config).await?;
    println!(
        "EMULATOR of an Azure Monitor DCE (not Azure). Ingestion URL: {}",
        dce.url()
    );
    if let Some(entra) = &entra {
        println!(
            "EMULATOR of Entra ID (not a real identity provider): AZURE_AUTHORITY_HOST={} AZURE_TENANT_ID={} AZURE_CLIENT_ID={} (secret from --client-secret)",
            entra.authority_host(),
            args.tenant_id,
            args.client_id
        );
    }
    let mut ticker = (args.report_every > 0)
        .then(|| tokio::time::interval(Duration::from_secs(args.report_every)));
    if let Some(t) = ticker.as_mut() {
        t.tick().await;
    }
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| DceError::File {
            path: PathBuf::from("<SIGTERM handler>"),
            source,
        })?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
            _ = async { match ticker.as_mut() { Some(t) => { t.tick().await; } None => std::future::pending().await } } => {
                print_stats("EMULATOR dce", &dce.stats());
            }
        }
    }
    print_stats("EMULATOR dce final", &dce.stats());
    dce.shutdown().await;
    if let Some(entra) = entra {
        println!("EMULATOR entra final: {:?}", entra.stats());
        entra.shutdown().await;
    }
    Ok(())
}

fn print_stats(prefix: &str, s: &DceStats) {
    println!(
        "{prefix}: requests={} accepted={} rejected={:?} series={} samples={} histograms={} exemplars={} metadata={} out_of_order={} repeated_ts={} checksum=[{}]",
        s.requests,
        s.accepted_requests,
        s.rejected,
        s.series,
        s.samples,
        s.histograms,
        s.exemplars,
        s.metadata,
        s.out_of_order_samples,
        s.repeated_timestamp_samples,
        s.checksum
    );
}

#[cfg(test)]
mod tests;
