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
//!
//! It also serves the read-back side of an Azure Monitor workspace (`query`): instant queries
//! on `/api/v1/query` over the latest sample of each series it accepted (at most
//! `keep_series`), for a query-audience token of a *Monitoring Data Reader*. Real Azure serves
//! queries on the workspace's own host; here one server does both. A silent-loss mode
//! ([`DceHandle::set_silent_loss`]) answers writes 200 and keeps nothing, the failure the
//! canary read-back exists to catch.
//!
//! This file holds the configuration, the start and the handle; `ingest` is the request
//! handler, `query` the query API, `fault` the fault script, `checks` the request checks,
//! `wire` the body walker, `stats` the counters and `cli` the `promlink emulate-dce` command.
//!
//! [`Checksum`]: crate::loadgen::checksum::Checksum

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::http::StatusCode;
use axum::response::Response;
use axum::Router;

use super::entra::{json_response, TokenVerifier};
use super::serve::{self, Server};
use super::tls::{LeafCert, TestCa};
use crate::proto::v1::WriteRequest;

mod arrivals;
mod checks;
mod cli;
mod fault;
mod ingest;
mod query;
mod stats;
mod wire;

pub use arrivals::Arrivals;
pub use cli::{run_emulate_dce, EmulateDceArgs};
pub use fault::Fault;
pub use query::QUERY_AUDIENCES;
pub use stats::DceStats;

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
    /// How many series to keep the latest sample of, for the query API. Default 0 (queries
    /// answer nothing).
    pub keep_series: usize,
    /// Principals (client ids or object ids) holding Monitoring Data Reader on the workspace
    /// (allowed to query).
    pub readers: Vec<String>,
    /// Notes when chosen samples arrive (benchmarks' delivery latency).
    pub arrivals: Option<Arc<Arrivals>>,
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
            keep_series: 0,
            readers: Vec::new(),
            arrivals: None,
        }
    }
}

struct Data {
    stats: DceStats,
    faults: VecDeque<Fault>,
    outage: Option<Fault>,
    /// A content filter: a write whose decoded body holds these bytes gets this status.
    refuse_content: Option<(Vec<u8>, u16)>,
    granted: HashSet<String>,
    api_versions: Vec<String>,
    last_ts: rustc_hash::FxHashMap<u64, i64>,
    accepted: VecDeque<WriteRequest>,
    /// The latest sample of each series, for queries.
    latest: query::Latest,
    readers: HashSet<String>,
    /// Answer writes 200 and keep nothing.
    silent_loss: bool,
    /// When the latest writes (POSTs) arrived, at most [`MAX_POST_TIMES`], oldest first.
    post_times: VecDeque<std::time::Instant>,
}

/// Arrival times of writes kept (a rate test reads them).
const MAX_POST_TIMES: usize = 100_000;

struct Shared {
    data: Mutex<Data>,
    path: String,
    dcr_prefix: String,
    auth: Option<TokenVerifier>,
    max_body: usize,
    keep: usize,
    keep_series: usize,
    reject_repeated_series: bool,
    arrivals: Option<Arc<Arrivals>>,
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
                refuse_content: None,
                granted: config.granted.into_iter().collect(),
                api_versions: config.api_versions,
                last_ts: Default::default(),
                accepted: VecDeque::new(),
                latest: query::Latest::default(),
                readers: config.readers.into_iter().collect(),
                silent_loss: false,
                post_times: VecDeque::new(),
            }),
            path: format!(
                "/dataCollectionRules/{}/streams/{STREAM}/api/v1/write",
                config.dcr_id
            ),
            dcr_prefix: "/dataCollectionRules/".to_owned(),
            auth: config.auth,
            max_body: config.max_body_bytes,
            keep: config.keep_accepted,
            keep_series: config.keep_series,
            reject_repeated_series: config.reject_repeated_series,
            arrivals: config.arrivals,
        });
        if shared.auth.is_none() {
            tracing::warn!("EMULATOR dce: bearer tokens are not checked (auth disabled)");
        }
        let router = Router::new()
            .fallback(ingest::handle)
            .with_state(shared.clone());
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

    /// When the latest writes arrived (whatever the answer; at most 100,000, oldest first).
    pub fn post_times(&self) -> Vec<std::time::Instant> {
        self.shared.lock().post_times.iter().copied().collect()
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

    /// A content filter, as a proxy or WAF in front of the DCE might be: until cleared with
    /// `None`, a write whose decoded body holds `bytes` (a metric name, say) is answered
    /// `status` and not counted; other writes are handled normally.
    pub fn refuse_containing(&self, filter: Option<(&[u8], u16)>) {
        self.shared.lock().refuse_content = filter.map(|(b, s)| (b.to_vec(), s));
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

    /// Grants Monitoring Data Reader on the workspace (queries) to a client id or object id.
    pub fn grant_reader(&self, principal: &str) {
        self.shared.lock().readers.insert(principal.to_owned());
    }

    /// Revokes Monitoring Data Reader from a principal.
    pub fn revoke_reader(&self, principal: &str) {
        self.shared.lock().readers.remove(principal);
    }

    /// Silent loss: while on, writes that pass every check are answered 200 and nothing of
    /// them is kept or counted as accepted (counted in
    /// [`DceStats::silently_lost_requests`]). Off by default.
    pub fn set_silent_loss(&self, on: bool) {
        self.shared.lock().silent_loss = on;
    }

    /// The base URL of the query API (`/api/v1/query` below it): the same server, standing in
    /// for the workspace's query endpoint.
    pub fn query_url(&self) -> &str {
        &self.base_url
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
        data.latest.clear();
        data.post_times.clear();
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

#[cfg(test)]
mod tests;
