//! Configuration: one flat set of keys, from flags, environment, a YAML file and defaults.
//!
//! Every key can be given as a flag (`--flush-interval`), a `PROMLINK_*` environment variable
//! (`PROMLINK_FLUSH_INTERVAL`), or a key in the YAML file named by `--config`
//! (`flush_interval: 5s`), in that order of precedence. The environment variables of Azure's
//! remote-write sidecar (`INGESTION_URL`, `LISTENING_PORT`, `IDENTITY_TYPE`, `AZURE_CLIENT_ID`,
//! `AZURE_TENANT_ID`, `AZURE_CLIENT_CERTIFICATE_PATH`, `CLUSTER`, `INGESTION_AAD_AUDIENCE`) are
//! honoured too, ranking just below promlink's own, so swapping the image in an existing sidecar
//! manifest gives a working forwarder.
//!
//! [`Settings::resolve`] checks everything before any port is bound and reports every problem
//! at once (key, value, why); `main` exits with 64 (`EX_USAGE`) on any.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::identity::{Cloud, IdentityConfig, IdentityKind};
use crate::queue::BatchLimits;
use crate::receive::{FullStatus, ReceiveConfig};
use crate::secret::Secret;
use crate::upstream::UpstreamConfig;

/// The stream Azure Monitor managed Prometheus ingests into.
pub const DEFAULT_STREAM: &str = "Microsoft-PrometheusMetrics";
/// The ingestion API version in Azure's documentation.
pub const DEFAULT_API_VERSION: &str = "2023-04-24";
/// `shutdown_quiet_period`: Prometheus sends about every 5 s.
pub const DEFAULT_SHUTDOWN_QUIET_PERIOD: Duration = Duration::from_secs(5);

/// Memory budgets when promlink runs from the Azure sidecar's environment, whose documented
/// container limit is 200 Mi (request 150 Mi) for about 150,000 series: `(key, bytes)`. Their
/// sum (80 MiB) plus promlink's own footprint (~20 MiB) and the batches being sent leaves room
/// under the limit in a worst-case burst (`tests/durable.rs` measures it). 32 MiB of queue
/// holds about half an hour of 150,000 series scraped every 30 s (Prometheus' requests
/// compress to a few bytes per sample).
pub const SIDECAR_BUDGETS: [(&str, usize); 5] = [
    ("queue_max_bytes", 32 << 20),
    ("max_inflight_decode_bytes", 32 << 20),
    ("max_decoded_bytes", 16 << 20),
    ("max_inflight_body_bytes", 16 << 20),
    ("max_body_bytes", 4 << 20),
];

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// What to do with a series over a label limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LabelLimitAction {
    /// Refuse the whole request with 400 and the reason.
    Reject,
    /// Drop the series, count it, accept the rest.
    Drop,
}

/// Every configuration key. All optional here; defaults and checks are in [`Settings::resolve`].
#[derive(Clone, Debug, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// YAML configuration file; flags and environment variables override its keys.
    #[arg(long, env = "PROMLINK_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address for remote write, /health, /ready, /status and /metrics [default: 0.0.0.0:8081;
    /// Azure sidecar: LISTENING_PORT]
    #[arg(long, env = "PROMLINK_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// PEM certificate chain: the receiver serves HTTPS (TLS 1.2 and 1.3 only); re-read when
    /// the file changes (cert-manager rotation)
    #[arg(long, env = "PROMLINK_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of tls_cert
    #[arg(long, env = "PROMLINK_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA bundle for sender certificates (mutual TLS): a write then needs a client
    /// certificate signed by it, or an accepted bearer token
    #[arg(long, env = "PROMLINK_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,

    /// With client_ca: accept only client certificates carrying one of these names (subject
    /// CN, or a DNS, URI, e-mail or IP SAN; `*.example.com` matches one label) (repeatable)
    #[arg(
        long = "client-allowed-name",
        env = "PROMLINK_CLIENT_ALLOWED_NAME",
        value_delimiter = ','
    )]
    pub client_allowed_name: Option<Vec<String>>,

    /// File of accepted sender bearer tokens, one per line (several for rotation); re-read when
    /// it changes. Writes without an accepted token (or client certificate) get 401
    #[arg(long, env = "PROMLINK_BEARER_TOKEN_FILE")]
    pub bearer_token_file: Option<PathBuf>,

    /// Allow sender authentication over plain HTTP on a non-loopback address (only behind a
    /// TLS-terminating proxy: tokens would otherwise cross the network in clear text)
    #[arg(long, env = "PROMLINK_ALLOW_INSECURE_AUTH", num_args = 0..=1, default_missing_value = "true")]
    pub allow_insecure_auth: Option<bool>,

    /// How often tls_cert, tls_key, client_ca and bearer_token_file are checked for changes
    /// [default: 10s]
    #[arg(long, env = "PROMLINK_RELOAD_INTERVAL", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub reload_interval: Option<Duration>,

    /// Time a sender has to finish the TLS handshake and, over HTTP/1.1, to send a request's
    /// headers; idle keep-alive connections are closed after it too [default: 10s]
    #[arg(long, env = "PROMLINK_HEADER_READ_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub header_read_timeout: Option<Duration>,

    /// Time a sender has to send a request body; slower gets 408 [default: 60s]
    #[arg(long, env = "PROMLINK_BODY_READ_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub body_read_timeout: Option<Duration>,

    /// Most open receiver connections; more are closed at once and counted [default: 1024]
    #[arg(long, env = "PROMLINK_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Most write requests handled at once; more get the retryable queue_full_status [default: 256]
    #[arg(long, env = "PROMLINK_MAX_CONCURRENT_REQUESTS")]
    pub max_concurrent_requests: Option<usize>,

    /// Compressed bytes all request bodies together may hold while being read (a body without
    /// Content-Length counts as max_body_bytes); more gets the retryable queue_full_status
    /// [default: 67108864]
    #[arg(long, env = "PROMLINK_MAX_INFLIGHT_BODY_BYTES")]
    pub max_inflight_body_bytes: Option<usize>,

    /// Full DCE ingestion URL: https://<dce>.<region>-1.metrics.ingest.monitor.azure.com/dataCollectionRules/<dcr-id>/streams/Microsoft-PrometheusMetrics/api/v1/write?api-version=2023-04-24
    /// [Azure sidecar: INGESTION_URL]
    #[arg(long, env = "PROMLINK_INGESTION_URL")]
    pub ingestion_url: Option<String>,

    /// DCE metrics ingestion endpoint (instead of --ingestion-url), e.g. https://mydce-ab12.eastus-1.metrics.ingest.monitor.azure.com
    #[arg(long, env = "PROMLINK_DCE_ENDPOINT")]
    pub dce_endpoint: Option<String>,

    /// DCR immutable id (with --dce-endpoint), e.g. dcr-0123456789abcdef0123456789abcdef
    #[arg(long, env = "PROMLINK_DCR_ID")]
    pub dcr_id: Option<String>,

    /// Stream name (with --dce-endpoint) [default: Microsoft-PrometheusMetrics]
    #[arg(long, env = "PROMLINK_STREAM")]
    pub stream: Option<String>,

    /// Ingestion api-version (with --dce-endpoint) [default: 2023-04-24]
    #[arg(long, env = "PROMLINK_API_VERSION")]
    pub api_version: Option<String>,

    /// How to get the Entra ID token [default: system-assigned; Azure sidecar: IDENTITY_TYPE]
    #[arg(long, env = "PROMLINK_IDENTITY", value_enum)]
    pub identity: Option<IdentityKind>,

    /// Azure cloud, for the default authority host and token scope [default: public]
    #[arg(long, env = "PROMLINK_CLOUD", value_enum)]
    pub cloud: Option<Cloud>,

    /// Entra tenant id (client-secret, client-certificate, workload) [env: AZURE_TENANT_ID too]
    #[arg(long, env = "PROMLINK_TENANT_ID")]
    pub tenant_id: Option<String>,

    /// Application (client) id, or the user-assigned identity's client id [env: AZURE_CLIENT_ID too]
    #[arg(long, env = "PROMLINK_CLIENT_ID")]
    pub client_id: Option<String>,

    /// File holding the client secret (client-secret); the AZURE_CLIENT_SECRET variable also works
    #[arg(long, env = "PROMLINK_CLIENT_SECRET_FILE")]
    pub client_secret_file: Option<PathBuf>,

    /// PEM file with the client certificate and its private key (client-certificate)
    /// [env: AZURE_CLIENT_CERTIFICATE_PATH too]
    #[arg(long, env = "PROMLINK_CLIENT_CERTIFICATE_PATH")]
    pub client_certificate_path: Option<PathBuf>,

    /// Federated service-account token file (workload) [env: AZURE_FEDERATED_TOKEN_FILE too]
    #[arg(long, env = "PROMLINK_FEDERATED_TOKEN_FILE")]
    pub federated_token_file: Option<PathBuf>,

    /// File holding a bearer token, re-read when it changes (token-file)
    #[arg(long, env = "PROMLINK_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// Entra authority host [default: by --cloud; env: AZURE_AUTHORITY_HOST too]
    #[arg(long, env = "PROMLINK_AUTHORITY_HOST")]
    pub authority_host: Option<String>,

    /// Token scope or audience, e.g. https://monitor.azure.com/.default [default: by --cloud;
    /// Azure sidecar: INGESTION_AAD_AUDIENCE]
    #[arg(long, env = "PROMLINK_TOKEN_SCOPE")]
    pub token_scope: Option<String>,

    /// PEM file of extra CA certificates trusted for the upstream and the authority host
    #[arg(long, env = "PROMLINK_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    /// Adds cluster="<value>" to every series that has no cluster label [Azure sidecar: CLUSTER]
    #[arg(long, env = "PROMLINK_CLUSTER")]
    pub cluster: Option<String>,

    /// Most samples in one upstream request [default: 5000]
    #[arg(long, env = "PROMLINK_MAX_SAMPLES_PER_REQUEST")]
    pub max_samples_per_request: Option<usize>,

    /// Most uncompressed bytes in one upstream request [default: 4194304]
    #[arg(long, env = "PROMLINK_MAX_BYTES_PER_REQUEST")]
    pub max_bytes_per_request: Option<usize>,

    /// Longest time a sample waits for its batch to fill, e.g. 2s; a partial batch also goes
    /// when nothing new came for a tenth of it [default: 2s]
    #[arg(long, env = "PROMLINK_FLUSH_INTERVAL", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub flush_interval: Option<Duration>,

    /// Concurrent upstream requests; batches in flight never share a series, so every series
    /// stays in order [default: 4]
    #[arg(long, env = "PROMLINK_SHARDS")]
    pub shards: Option<usize>,

    /// Queue budget in bytes (waiting + in flight); when full, writes are refused [default: 67108864]
    #[arg(long, env = "PROMLINK_QUEUE_MAX_BYTES")]
    pub queue_max_bytes: Option<usize>,

    /// Directory of the durable disk queue; when unset the queue is in memory only (lost if the
    /// process dies)
    #[arg(long, env = "PROMLINK_QUEUE_DIR")]
    pub queue_dir: Option<PathBuf>,

    /// With queue_dir: most queued data (compressed bytes) held in memory for sending; a larger
    /// backlog waits on disk [default: 8388608]
    #[arg(long, env = "PROMLINK_QUEUE_MEMORY_BYTES")]
    pub queue_memory_bytes: Option<usize>,

    /// When a write counts as durable with queue_dir: always (fsync before answering, group
    /// commit) or interval:<duration> (fsync every interval) [default: always]
    #[arg(long, env = "PROMLINK_FSYNC", value_parser = parse_fsync)]
    #[serde(default, deserialize_with = "de_fsync")]
    pub fsync: Option<crate::queue::FsyncPolicy>,

    /// Drop data queued longer than this, counted as expired [default: no limit]
    #[arg(long, env = "PROMLINK_QUEUE_MAX_AGE", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub queue_max_age: Option<Duration>,

    /// Drop samples older than this before sending, counted as too_old (Azure reportedly
    /// rejects samples older than about 20 minutes; undocumented) [default: no limit]
    #[arg(long, env = "PROMLINK_MAX_SAMPLE_AGE", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub max_sample_age: Option<Duration>,

    /// Status answered when the queue is full: 503 (every Prometheus retries it) or 429
    /// (needs retry_on_http_429 in Prometheus) [default: 503]
    #[arg(long, env = "PROMLINK_QUEUE_FULL_STATUS", value_enum)]
    pub queue_full_status: Option<FullStatus>,

    /// Largest compressed request body accepted, bytes [default: 16777216]
    #[arg(long, env = "PROMLINK_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,

    /// Decoded bytes all requests together may hold while being decoded; more gets a retryable
    /// 503 [default: 134217728]
    #[arg(long, env = "PROMLINK_MAX_INFLIGHT_DECODE_BYTES")]
    pub max_inflight_decode_bytes: Option<usize>,

    /// Most series in one remote-write request [default: 200000]
    #[arg(long, env = "PROMLINK_MAX_SERIES_PER_REQUEST")]
    pub max_series_per_request: Option<usize>,

    /// Most labels in one series, the metric name included (Azure's documented limit) [default: 63]
    #[arg(long, env = "PROMLINK_MAX_LABELS_PER_SERIES")]
    pub max_labels_per_series: Option<usize>,

    /// Longest label name, bytes (Azure's documented limit) [default: 511]
    #[arg(long, env = "PROMLINK_MAX_LABEL_NAME_LENGTH")]
    pub max_label_name_length: Option<usize>,

    /// Longest label value, bytes (Azure's documented limit) [default: 1023]
    #[arg(long, env = "PROMLINK_MAX_LABEL_VALUE_LENGTH")]
    pub max_label_value_length: Option<usize>,

    /// Most samples of one series in one request [default: 100000]
    #[arg(long, env = "PROMLINK_MAX_SAMPLES_PER_SERIES")]
    pub max_samples_per_series: Option<usize>,

    /// What to do with a series over a label limit: reject the request (400) or drop the
    /// series and count it [default: reject]
    #[arg(long, env = "PROMLINK_LABEL_LIMIT_ACTION", value_enum)]
    pub label_limit_action: Option<LabelLimitAction>,

    /// Largest decoded request body accepted, bytes, checked before decompressing [default: 67108864]
    #[arg(long, env = "PROMLINK_MAX_DECODED_BYTES")]
    pub max_decoded_bytes: Option<usize>,

    /// Upstream request timeout [default: 30s]
    #[arg(long, env = "PROMLINK_REQUEST_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub request_timeout: Option<Duration>,

    /// First upstream retry delay [default: 500ms]
    #[arg(long, env = "PROMLINK_RETRY_MIN_BACKOFF", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub retry_min_backoff: Option<Duration>,

    /// Longest upstream retry delay [default: 30s]
    #[arg(long, env = "PROMLINK_RETRY_MAX_BACKOFF", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub retry_max_backoff: Option<Duration>,

    /// Refresh the token this long before it expires [default: 5m]
    #[arg(long, env = "PROMLINK_TOKEN_REFRESH_BEFORE_EXPIRY", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub token_refresh_before_expiry: Option<Duration>,

    /// The upstream counts as unavailable after this long without any HTTP answer (connection
    /// refused, DNS, TLS, timeout): GET /status, promlink_upstream_available, alert
    /// PromlinkUpstreamUnavailable [default: 2m]
    #[arg(long, env = "PROMLINK_READY_WINDOW", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub ready_window: Option<Duration>,

    /// /ready also fails without a valid token, a Private Link path data can take, or an
    /// upstream answer within ready_window (a replica then leaves its Service during an upstream
    /// outage instead of queueing) [default: false]
    #[arg(long, env = "PROMLINK_READY_REQUIRES_UPSTREAM", num_args = 0..=1, default_missing_value = "true")]
    pub ready_requires_upstream: Option<bool>,

    /// Time from SIGTERM until promlink exits; a third of it is kept for delivering what is
    /// queued after writes stop being accepted [default: 30s]
    #[arg(long, env = "PROMLINK_SHUTDOWN_GRACE", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub shutdown_grace: Option<Duration>,

    /// After SIGTERM writes are still accepted (answers say Connection: close, /ready fails)
    /// until none arrived for this long, counted from SIGTERM or the last write, whichever is
    /// later; 0s stops accepting at once [default: 5s]
    #[arg(long, env = "PROMLINK_SHUTDOWN_QUIET_PERIOD", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub shutdown_quiet_period: Option<Duration>,

    /// Allow a plain http:// upstream (benchmarks, local tests): metrics and tokens travel unencrypted
    #[arg(long, env = "PROMLINK_ALLOW_PLAIN_HTTP", num_args = 0..=1, default_missing_value = "true")]
    pub allow_plain_http: Option<bool>,

    /// Private Link path policy: require (only the verified private endpoint), prefer (fall back
    /// to the public endpoint and alert), off [default: require for Azure Monitor ingestion hosts,
    /// off otherwise]
    #[arg(long, env = "PROMLINK_PRIVATE_LINK", value_enum)]
    pub private_link: Option<crate::privatelink::Mode>,

    /// DNS server to verify the upstream name with, ADDR:PORT (repeatable) [default: the system
    /// resolver configuration]
    #[arg(long, env = "PROMLINK_DNS_SERVER", value_delimiter = ',')]
    pub dns_server: Option<Vec<SocketAddr>>,

    /// DNS server giving the public answer for prefer's fallback, ADDR:PORT (repeatable)
    #[arg(long, env = "PROMLINK_PUBLIC_DNS_SERVER", value_delimiter = ',')]
    pub public_dns_server: Option<Vec<SocketAddr>>,

    /// Extra CIDR counted as private besides RFC 1918, RFC 6598 and fc00::/7 (repeatable)
    #[arg(long, env = "PROMLINK_PRIVATE_CIDR", value_delimiter = ',')]
    pub private_cidr: Option<Vec<ipnet::IpNet>>,

    /// The private endpoint's IP or CIDR; a private answer must match one (repeatable)
    #[arg(long, env = "PROMLINK_EXPECTED_ENDPOINT_IP", value_delimiter = ',', value_parser = parse_ip_or_net)]
    #[serde(default, deserialize_with = "de_ip_or_nets")]
    pub expected_endpoint_ip: Option<Vec<ipnet::IpNet>>,

    /// Shortest time between DNS verifications, whatever the TTL [default: 10s]
    #[arg(long, env = "PROMLINK_REVERIFY_MIN", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub reverify_min: Option<Duration>,

    /// Longest time between DNS verifications, whatever the TTL [default: 5m]
    #[arg(long, env = "PROMLINK_REVERIFY_MAX", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub reverify_max: Option<Duration>,

    /// prefer: how long the private path must stay healthy before traffic returns to it [default: 1m]
    #[arg(long, env = "PROMLINK_FALLBACK_RETURN_AFTER", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub fallback_return_after: Option<Duration>,

    /// Timeout of each DNS query and TCP/TLS probe [default: 5s]
    #[arg(long, env = "PROMLINK_PROBE_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub probe_timeout: Option<Duration>,

    /// Alertmanager base URL to send alerts to, e.g. http://alertmanager:9093 (repeatable)
    #[arg(long, env = "PROMLINK_ALERTMANAGER_URL", value_delimiter = ',')]
    pub alertmanager_url: Option<Vec<Url>>,

    /// How often firing alerts are re-sent to Alertmanager [default: 1m]
    #[arg(long, env = "PROMLINK_ALERT_RESEND_INTERVAL", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub alert_resend_interval: Option<Duration>,

    /// Log format [default: text]
    #[arg(long, env = "PROMLINK_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Log filter, e.g. info or promlink=debug [default: info]
    #[arg(long, env = "PROMLINK_LOG_LEVEL")]
    pub log_level: Option<String>,
}

/// One configuration problem.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key} = {value:?}: {why}")]
pub struct Problem {
    /// The key, as spelled in the YAML file (flags use dashes).
    pub key: String,
    /// The offending value (redacted for secrets).
    pub value: String,
    /// Why it is wrong.
    pub why: String,
}

impl From<crate::proxy::ProxyError> for Problem {
    fn from(e: crate::proxy::ProxyError) -> Self {
        Problem {
            key: e.var.into(),
            value: e.value,
            why: e.why,
        }
    }
}

/// Every problem found; printed one per line.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError(pub Vec<Problem>);

/// The resolved, checked configuration of `promlink serve`.
#[derive(Clone, Debug)]
pub struct Config {
    /// Listen address.
    pub listen: SocketAddr,
    /// TLS, authentication and connection limits of the receiver.
    pub inbound: crate::receive::InboundConfig,
    /// Receiver settings.
    pub receive: ReceiveConfig,
    /// Upstream settings.
    pub upstream: UpstreamConfig,
    /// Identity settings.
    pub identity: IdentityConfig,
    /// Queue shards.
    pub shards: usize,
    /// Queue budget.
    pub queue_max_bytes: usize,
    /// Without an upstream answer for this long, the upstream counts as unavailable.
    pub ready_window: Duration,
    /// Whether `/ready` also needs a token, a Private Link path and an upstream answer.
    pub ready_requires_upstream: bool,
    /// Shutdown grace period.
    pub shutdown_grace: Duration,
    /// After SIGTERM, writes are accepted until none arrived for this long.
    pub shutdown_quiet_period: Duration,
    /// Whether the upstream is an Azure Monitor DCE URL (vs. a generic remote-write receiver).
    pub azure_upstream: bool,
    /// Private Link verification and path policy.
    pub private_link: crate::privatelink::PrivateLinkConfig,
    /// The durable queue's directory and fsync policy; `None`: memory queue.
    pub disk_queue: Option<(PathBuf, crate::queue::FsyncPolicy)>,
    /// With the disk queue: compressed bytes held in memory for sending.
    pub queue_memory_bytes: usize,
    /// Alertmanager targets.
    pub alert: AlertSettings,
    /// Egress proxy settings (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`), for the clients that
    /// cross the network; credentials never printed.
    pub proxy: crate::proxy::ProxyConfig,
    /// Things to tell the operator at start (e.g. defaults chosen for Azure sidecar
    /// compatibility).
    pub notices: Vec<String>,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_level: String,
}

/// Where alerts go.
#[derive(Clone, Debug, Default)]
pub struct AlertSettings {
    /// Alertmanager base URLs (alerts are POSTed to `<url>/api/v2/alerts`).
    pub alertmanager_urls: Vec<Url>,
    /// How often firing alerts are re-sent.
    pub resend_interval: Duration,
}

/// Reads an environment variable, treating empty as unset.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Settings {
    /// Fills every unset key from `lower` (lower precedence).
    pub fn or(self, lower: Settings) -> Settings {
        macro_rules! merge {
            ($($f:ident),* $(,)?) => { Settings { $($f: self.$f.or(lower.$f)),* } };
        }
        merge!(
            config,
            listen,
            tls_cert,
            tls_key,
            client_ca,
            client_allowed_name,
            bearer_token_file,
            allow_insecure_auth,
            reload_interval,
            header_read_timeout,
            body_read_timeout,
            max_connections,
            max_concurrent_requests,
            max_inflight_body_bytes,
            ingestion_url,
            dce_endpoint,
            dcr_id,
            stream,
            api_version,
            identity,
            cloud,
            tenant_id,
            client_id,
            client_secret_file,
            client_certificate_path,
            federated_token_file,
            token_file,
            authority_host,
            token_scope,
            ca_file,
            cluster,
            max_samples_per_request,
            max_bytes_per_request,
            flush_interval,
            shards,
            queue_max_bytes,
            queue_memory_bytes,
            queue_full_status,
            max_body_bytes,
            max_decoded_bytes,
            request_timeout,
            retry_min_backoff,
            retry_max_backoff,
            token_refresh_before_expiry,
            ready_window,
            ready_requires_upstream,
            shutdown_grace,
            shutdown_quiet_period,
            allow_plain_http,
            private_link,
            dns_server,
            public_dns_server,
            private_cidr,
            expected_endpoint_ip,
            reverify_min,
            reverify_max,
            fallback_return_after,
            probe_timeout,
            alertmanager_url,
            alert_resend_interval,
            queue_dir,
            max_inflight_decode_bytes,
            max_series_per_request,
            max_labels_per_series,
            max_label_name_length,
            max_label_value_length,
            max_samples_per_series,
            label_limit_action,
            fsync,
            queue_max_age,
            max_sample_age,
            log_format,
            log_level,
        )
    }

    /// Keys from the environment variables of Azure's remote-write sidecar and the Azure SDKs.
    /// Problems (an unknown IDENTITY_TYPE, a bad port) are added to `problems`.
    pub fn from_azure_env(problems: &mut Vec<Problem>) -> Settings {
        let mut s = Settings {
            ingestion_url: env("INGESTION_URL"),
            ..Settings::default()
        };
        if let Some(port) = env("LISTENING_PORT") {
            match port.trim().parse::<u16>() {
                Ok(p) => s.listen = Some(SocketAddr::from(([0, 0, 0, 0], p))),
                Err(_) => problems.push(Problem {
                    key: "LISTENING_PORT".into(),
                    value: port,
                    why: "not a port number".into(),
                }),
            }
        }
        if let Some(t) = env("IDENTITY_TYPE") {
            s.identity = match t.trim() {
                "userAssigned" => Some(IdentityKind::UserAssigned),
                "systemAssigned" => Some(IdentityKind::SystemAssigned),
                "aadApplication" => Some(IdentityKind::ClientCertificate),
                "workloadIdentity" => Some(IdentityKind::Workload),
                _ => {
                    problems.push(Problem {
                        key: "IDENTITY_TYPE".into(),
                        value: t,
                        why: "expected userAssigned, systemAssigned, aadApplication or workloadIdentity".into(),
                    });
                    None
                }
            };
        }
        s.client_id = env("AZURE_CLIENT_ID");
        s.tenant_id = env("AZURE_TENANT_ID");
        s.client_certificate_path = env("AZURE_CLIENT_CERTIFICATE_PATH").map(PathBuf::from);
        s.federated_token_file = env("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from);
        s.authority_host = env("AZURE_AUTHORITY_HOST");
        s.cluster = env("CLUSTER");
        s.token_scope = env("INGESTION_AAD_AUDIENCE").map(|a| audience_to_scope(&a));
        s
    }

    /// Reads the YAML file named by `config`, if any.
    ///
    /// # Errors
    /// A problem naming the file and the YAML error (which names the key and line).
    pub fn from_file(path: &std::path::Path) -> Result<Settings, Problem> {
        let text = std::fs::read_to_string(path).map_err(|e| Problem {
            key: "config".into(),
            value: path.display().to_string(),
            why: format!("cannot read the file: {e}"),
        })?;
        Settings::from_yaml(&text).map_err(|why| Problem {
            key: "config".into(),
            value: path.display().to_string(),
            why,
        })
    }

    /// Parses the YAML text of a configuration file.
    ///
    /// # Errors
    /// Why the text is not a valid configuration (unknown key, wrong type, not YAML).
    pub fn from_yaml(text: &str) -> Result<Settings, String> {
        serde_saphyr::from_str::<Settings>(text)
            .map_err(|e| format!("invalid YAML configuration: {e}"))
    }

    /// Merges flags/`PROMLINK_*` (self), the Azure sidecar environment and the config file, then
    /// checks and resolves everything.
    ///
    /// # Errors
    /// [`ConfigError`] with every problem found.
    pub fn load(self) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let (proxy, proxy_notices) = match crate::proxy::ProxyConfig::from_env() {
            Ok(found) => found,
            Err(errors) => {
                problems.extend(errors.into_iter().map(Problem::from));
                Default::default()
            }
        };
        let azure = Settings::from_azure_env(&mut problems);
        let file = match &self.config {
            Some(p) => Settings::from_file(p).unwrap_or_else(|e| {
                problems.push(e);
                Settings::default()
            }),
            None => Settings::default(),
        };
        let (merged, mut notices) = self.layered(azure, file);
        notices.extend(proxy_notices);
        match merged.resolve_with(proxy) {
            Ok(mut cfg) if problems.is_empty() => {
                cfg.notices.splice(0..0, notices);
                Ok(cfg)
            }
            Ok(_) => Err(ConfigError(problems)),
            Err(ConfigError(more)) => {
                problems.extend(more);
                Err(ConfigError(problems))
            }
        }
    }

    /// Merges the layers: flags and `PROMLINK_*` (self) over the Azure sidecar's variables over
    /// the file. When the ingestion URL comes from the sidecar's `INGESTION_URL` and nothing
    /// sets `private_link`, verification is off, as in the sidecar being replaced: an image
    /// swap must give a working forwarder whether or not the DCE is behind Private Link. The
    /// memory budgets nothing sets are then [`SIDECAR_BUDGETS`], to fit the sidecar's memory
    /// limit. The returned notices say so (logged at start).
    pub fn layered(self, azure: Settings, file: Settings) -> (Settings, Vec<String>) {
        let url_from_sidecar = self.ingestion_url.is_none()
            && self.dce_endpoint.is_none()
            && azure.ingestion_url.is_some();
        let mut merged = self.or(azure).or(file);
        let mut notices = Vec::new();
        if url_from_sidecar && merged.private_link.is_none() {
            merged.private_link = Some(crate::privatelink::Mode::Off);
            notices.push(
                "INGESTION_URL comes from the Azure sidecar environment: Private Link verification is off, as in Azure's sidecar; set PROMLINK_PRIVATE_LINK=require (or prefer) to verify the private endpoint".to_string(),
            );
        }
        if url_from_sidecar {
            let mut sized = Vec::new();
            // In the order of SIDECAR_BUDGETS.
            let slots = [
                &mut merged.queue_max_bytes,
                &mut merged.max_inflight_decode_bytes,
                &mut merged.max_decoded_bytes,
                &mut merged.max_inflight_body_bytes,
                &mut merged.max_body_bytes,
            ];
            for ((key, bytes), slot) in SIDECAR_BUDGETS.into_iter().zip(slots) {
                if slot.is_none() {
                    *slot = Some(bytes);
                    sized.push(format!("{key}={bytes}"));
                }
            }
            if !sized.is_empty() {
                notices.push(format!(
                    "INGESTION_URL comes from the Azure sidecar environment: memory budgets sized for its 200 Mi limit ({}); set them to override",
                    sized.join(", ")
                ));
            }
        }
        (merged, notices)
    }

    /// The receiver's TLS, authentication and connection settings, checked: the TLS files
    /// and the token file are loaded once here so a mistake stops promlink before it listens.
    fn inbound(&self, p: &mut Vec<Problem>) -> crate::receive::InboundConfig {
        use crate::receive::{auth, tls, InboundConfig, ListenerConfig};
        let listen = self.listen();
        let mut bad = |key: &str, value: String, why: String| {
            p.push(Problem {
                key: key.into(),
                value,
                why,
            })
        };
        let shown = |f: &Option<PathBuf>| {
            f.as_ref()
                .map(|f| f.display().to_string())
                .unwrap_or_default()
        };
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.client_ca.clone(),
            }),
            (Some(_), None) => {
                bad("tls_key", String::new(), "required with tls_cert".into());
                None
            }
            (None, Some(_)) => {
                bad("tls_cert", String::new(), "required with tls_key".into());
                None
            }
            (None, None) => None,
        };
        if let Some(files) = &tls {
            if let Err(e) = tls::check(files) {
                let (key, value, why) = match &e {
                    tls::TlsLoadError::Read { key, path, source } => (
                        *key,
                        path.display().to_string(),
                        format!("cannot read it: {source}"),
                    ),
                    tls::TlsLoadError::Content { key, path, why } => {
                        (*key, path.display().to_string(), why.clone())
                    }
                    tls::TlsLoadError::Rustls(why) => (
                        "tls_key",
                        shown(&self.tls_key),
                        format!("does not go with tls_cert: {why}"),
                    ),
                };
                bad(key, value, why);
            }
        }
        if self.client_ca.is_some() && tls.is_none() {
            bad(
                "client_ca",
                shown(&self.client_ca),
                "client certificates need TLS: set tls_cert and tls_key".into(),
            );
        }
        let allowed = self.client_allowed_name.clone().unwrap_or_default();
        if !allowed.is_empty() && self.client_ca.is_none() {
            bad(
                "client_allowed_name",
                allowed.join(","),
                "needs client_ca (names are read from verified client certificates)".into(),
            );
        }
        if let Some(f) = &self.bearer_token_file {
            if let Err(e) = auth::read_tokens(f) {
                let why = match e {
                    auth::TokenFileError::Read { source, .. } => {
                        format!("cannot read it: {source}")
                    }
                    auth::TokenFileError::Empty { .. } => {
                        "holds no token (one per line; blank lines and # comments are ignored)"
                            .into()
                    }
                };
                bad("bearer_token_file", f.display().to_string(), why);
            }
        }
        let auth = auth::AuthConfig {
            bearer_token_file: self.bearer_token_file.clone(),
            client_certificates: self.client_ca.is_some(),
            client_allowed_names: allowed,
        };
        if self.bearer_token_file.is_some()
            && self.tls_cert.is_none()
            && !listen.ip().is_loopback()
            && !self.allow_insecure_auth.unwrap_or(false)
        {
            bad(
                "bearer_token_file",
                shown(&self.bearer_token_file),
                format!("bearer tokens would cross the network in clear text: {listen} is not a loopback address and there is no TLS; set tls_cert and tls_key, or allow_insecure_auth: true only behind a TLS-terminating proxy"),
            );
        }
        let mut positive = |key: &str, v: Option<usize>, default: usize| match v {
            Some(0) => {
                bad(key, "0".into(), "must be greater than zero".into());
                default
            }
            Some(v) => v,
            None => default,
        };
        let max_connections = positive("max_connections", self.max_connections, 1024);
        let mut duration = |key: &str, v: Option<Duration>, default: Duration| match v {
            Some(d) if d.is_zero() => {
                bad(key, "0s".into(), "must be greater than zero".into());
                default
            }
            Some(d) => d,
            None => default,
        };
        let header_read_timeout = duration(
            "header_read_timeout",
            self.header_read_timeout,
            Duration::from_secs(10),
        );
        let reload_interval = duration(
            "reload_interval",
            self.reload_interval,
            Duration::from_secs(10),
        );
        InboundConfig {
            tls,
            auth,
            listener: ListenerConfig {
                max_connections,
                header_read_timeout,
                max_h2_streams: 256,
            },
            reload_interval,
        }
    }

    /// The listen address, defaulted.
    fn listen(&self) -> SocketAddr {
        self.listen
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 8081)))
    }

    /// Applies defaults and checks every key and cross-key rule, without an egress proxy.
    ///
    /// # Errors
    /// [`ConfigError`] with every problem found.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        self.resolve_with(crate::proxy::ProxyConfig::default())
    }

    /// Like [`Self::resolve`], with the egress proxy settings read from the environment by
    /// [`Self::load`] (or given by a test). `private_link: require` with a proxy that applies to
    /// the upstream host is a problem: the proxy would resolve the name, so the private endpoint
    /// could be neither verified nor pinned.
    ///
    /// # Errors
    /// [`ConfigError`] with every problem found.
    pub fn resolve_with(self, proxy: crate::proxy::ProxyConfig) -> Result<Config, ConfigError> {
        let mut p = Vec::new();
        let mut bad = |key: &str, value: &dyn std::fmt::Display, why: &str| {
            p.push(Problem {
                key: key.into(),
                value: value.to_string(),
                why: why.into(),
            })
        };
        let allow_plain_http = self.allow_plain_http.unwrap_or(false);
        let listen = self.listen();

        let url = match (&self.ingestion_url, &self.dce_endpoint) {
            (Some(_), Some(_)) => {
                bad(
                    "dce_endpoint",
                    &self.dce_endpoint.clone().unwrap_or_default(),
                    "give either ingestion_url or dce_endpoint + dcr_id, not both",
                );
                None
            }
            (Some(u), None) => Some(u.clone()),
            (None, Some(ep)) => match &self.dcr_id {
                None => {
                    bad("dcr_id", &"", "required with dce_endpoint");
                    None
                }
                Some(id) => Some(format!(
                    "{}/dataCollectionRules/{}/streams/{}/api/v1/write?api-version={}",
                    ep.trim_end_matches('/'),
                    id,
                    self.stream.as_deref().unwrap_or(DEFAULT_STREAM),
                    self.api_version.as_deref().unwrap_or(DEFAULT_API_VERSION)
                )),
            },
            (None, None) => {
                bad(
                    "ingestion_url",
                    &"",
                    "required (or dce_endpoint + dcr_id; Azure sidecar: INGESTION_URL)",
                );
                None
            }
        };
        let key = if self.ingestion_url.is_some() {
            "ingestion_url"
        } else {
            "dce_endpoint"
        };
        let mut azure_upstream = false;
        let url = url.and_then(|u| match check_ingestion_url(&u, allow_plain_http) {
            Ok((url, azure)) => {
                azure_upstream = azure;
                Some(url)
            }
            Err(why) => {
                bad(key, &redact_credentials(&u), &why);
                None
            }
        });

        let cloud = self.cloud.unwrap_or(Cloud::Public);
        let kind = self.identity.unwrap_or(IdentityKind::SystemAssigned);
        let authority = self
            .authority_host
            .clone()
            .unwrap_or_else(|| cloud.authority_host().to_string());
        let authority_host = match Url::parse(&authority) {
            Ok(u) if u.scheme() == "https" => Some(u),
            Ok(_) => {
                bad("authority_host", &authority, "must be an https:// URL");
                None
            }
            Err(e) => {
                bad("authority_host", &authority, &format!("not a URL: {e}"));
                None
            }
        };
        let need = |field: &Option<String>, name: &str, p: &mut Vec<Problem>| {
            if field.is_none() {
                p.push(Problem {
                    key: name.into(),
                    value: String::new(),
                    why: format!("required with identity {}", kind_name(kind)),
                });
            }
        };
        match kind {
            IdentityKind::UserAssigned => need(&self.client_id, "client_id", &mut p),
            IdentityKind::ClientSecret
            | IdentityKind::ClientCertificate
            | IdentityKind::Workload => {
                need(&self.client_id, "client_id", &mut p);
                need(&self.tenant_id, "tenant_id", &mut p);
            }
            _ => {}
        }
        let need_path = |field: &Option<PathBuf>, name: &str, p: &mut Vec<Problem>| match field {
            None => p.push(Problem {
                key: name.into(),
                value: String::new(),
                why: format!("required with identity {}", kind_name(kind)),
            }),
            Some(path) if !path.is_file() => p.push(Problem {
                key: name.into(),
                value: path.display().to_string(),
                why: "no such file".into(),
            }),
            Some(_) => {}
        };
        let mut client_secret = None;
        match kind {
            IdentityKind::ClientCertificate => need_path(
                &self.client_certificate_path,
                "client_certificate_path",
                &mut p,
            ),
            IdentityKind::Workload => {
                need_path(&self.federated_token_file, "federated_token_file", &mut p)
            }
            IdentityKind::TokenFile => need_path(&self.token_file, "token_file", &mut p),
            IdentityKind::ClientSecret => {
                match (&self.client_secret_file, env("AZURE_CLIENT_SECRET")) {
                    (Some(path), _) => match std::fs::read_to_string(path) {
                        Ok(s) if !s.trim().is_empty() => {
                            client_secret = Some(Secret::new(s.trim()))
                        }
                        Ok(_) => p.push(Problem {
                            key: "client_secret_file".into(),
                            value: path.display().to_string(),
                            why: "the file is empty".into(),
                        }),
                        Err(e) => p.push(Problem {
                            key: "client_secret_file".into(),
                            value: path.display().to_string(),
                            why: format!("cannot read: {e}"),
                        }),
                    },
                    (None, Some(s)) => client_secret = Some(Secret::new(s)),
                    (None, None) => p.push(Problem {
                        key: "client_secret_file".into(),
                        value: String::new(),
                        why: "required with identity client-secret (or set AZURE_CLIENT_SECRET)"
                            .into(),
                    }),
                }
            }
            _ => {}
        }
        // Files holding secrets: others must not be able to read them.
        let mut notices = Vec::new();
        let secret_files = [
            ("tls_key", &self.tls_key),
            ("bearer_token_file", &self.bearer_token_file),
            ("client_secret_file", &self.client_secret_file),
            ("client_certificate_path", &self.client_certificate_path),
        ];
        for (key, path) in secret_files {
            if let Some(w) = path
                .as_deref()
                .and_then(|f| crate::secret::loose_permissions(key, f))
            {
                notices.push(w);
            }
        }
        let inbound = self.inbound(&mut p);
        if let Some(ca) = &self.ca_file {
            if !ca.is_file() {
                p.push(Problem {
                    key: "ca_file".into(),
                    value: ca.display().to_string(),
                    why: "no such file".into(),
                });
            }
        }
        if azure_upstream && kind == IdentityKind::None {
            p.push(Problem {
                key: "identity".into(),
                value: "none".into(),
                why: "an Azure Monitor ingestion endpoint needs an Entra ID token; choose a managed, workload or application identity".into(),
            });
        }
        if let Some(c) = &self.cluster {
            if c.is_empty() || c.len() > 1023 {
                p.push(Problem {
                    key: "cluster".into(),
                    value: c.clone(),
                    why: "must be 1 to 1023 characters (Azure's label value limit)".into(),
                });
            }
        }

        let mut positive = |key: &str, v: Option<usize>, default: usize| -> usize {
            match v {
                Some(0) => {
                    p.push(Problem {
                        key: key.into(),
                        value: "0".into(),
                        why: "must be greater than zero".into(),
                    });
                    default
                }
                Some(v) => v,
                None => default,
            }
        };
        let max_samples = positive(
            "max_samples_per_request",
            self.max_samples_per_request,
            5000,
        );
        let max_bytes = positive("max_bytes_per_request", self.max_bytes_per_request, 4 << 20);
        let shards = positive("shards", self.shards, 4);
        let queue_max_bytes = positive("queue_max_bytes", self.queue_max_bytes, 64 << 20);
        let queue_memory_bytes = positive("queue_memory_bytes", self.queue_memory_bytes, 8 << 20);
        let max_body_bytes = positive("max_body_bytes", self.max_body_bytes, 16 << 20);
        let max_decoded_bytes = positive("max_decoded_bytes", self.max_decoded_bytes, 64 << 20);
        let max_concurrent_requests =
            positive("max_concurrent_requests", self.max_concurrent_requests, 256);
        let max_inflight_body_bytes = positive(
            "max_inflight_body_bytes",
            self.max_inflight_body_bytes,
            64 << 20,
        );
        let max_inflight_decode_bytes = positive(
            "max_inflight_decode_bytes",
            self.max_inflight_decode_bytes,
            128 << 20,
        );
        let limits = crate::codec::Limits::default();
        let max_series_per_request = positive(
            "max_series_per_request",
            self.max_series_per_request,
            limits.max_series,
        );
        let max_labels_per_series = positive(
            "max_labels_per_series",
            self.max_labels_per_series,
            limits.max_labels,
        );
        let max_label_name_length = positive(
            "max_label_name_length",
            self.max_label_name_length,
            limits.max_name_len,
        );
        let max_label_value_length = positive(
            "max_label_value_length",
            self.max_label_value_length,
            limits.max_value_len,
        );
        let max_samples_per_series = positive(
            "max_samples_per_series",
            self.max_samples_per_series,
            limits.max_samples_per_series,
        );
        if shards > 256 {
            p.push(Problem {
                key: "shards".into(),
                value: shards.to_string(),
                why: "at most 256".into(),
            });
        }
        let mut duration = |key: &str, v: Option<Duration>, default: Duration| -> Duration {
            match v {
                Some(d) if d.is_zero() => {
                    p.push(Problem {
                        key: key.into(),
                        value: "0s".into(),
                        why: "must be greater than zero".into(),
                    });
                    default
                }
                Some(d) => d,
                None => default,
            }
        };
        let flush_interval = duration(
            "flush_interval",
            self.flush_interval,
            Duration::from_secs(2),
        );
        let request_timeout = duration(
            "request_timeout",
            self.request_timeout,
            Duration::from_secs(30),
        );
        let retry_min = duration(
            "retry_min_backoff",
            self.retry_min_backoff,
            Duration::from_millis(500),
        );
        let retry_max = duration(
            "retry_max_backoff",
            self.retry_max_backoff,
            Duration::from_secs(30),
        );
        let refresh_before = duration(
            "token_refresh_before_expiry",
            self.token_refresh_before_expiry,
            Duration::from_secs(300),
        );
        let ready_window = duration("ready_window", self.ready_window, Duration::from_secs(120));
        let shutdown_grace = duration(
            "shutdown_grace",
            self.shutdown_grace,
            Duration::from_secs(30),
        );
        let reverify_min = duration("reverify_min", self.reverify_min, Duration::from_secs(10));
        let reverify_max = duration("reverify_max", self.reverify_max, Duration::from_secs(300));
        let return_after = duration(
            "fallback_return_after",
            self.fallback_return_after,
            Duration::from_secs(60),
        );
        let probe_timeout = duration("probe_timeout", self.probe_timeout, Duration::from_secs(5));
        let body_read_timeout = duration(
            "body_read_timeout",
            self.body_read_timeout,
            Duration::from_secs(60),
        );
        let resend_interval = duration(
            "alert_resend_interval",
            self.alert_resend_interval,
            Duration::from_secs(60),
        );
        if retry_min > retry_max {
            p.push(Problem {
                key: "retry_min_backoff".into(),
                value: humantime::format_duration(retry_min).to_string(),
                why: format!(
                    "must not exceed retry_max_backoff ({})",
                    humantime::format_duration(retry_max)
                ),
            });
        }
        for (key, v) in [
            ("max_sample_age", self.max_sample_age),
            ("queue_max_age", self.queue_max_age),
        ] {
            if v.is_some_and(|d| d.is_zero()) {
                p.push(Problem {
                    key: key.into(),
                    value: "0s".into(),
                    why: "must be greater than zero (leave it unset for no limit)".into(),
                });
            }
        }
        if reverify_min > reverify_max {
            p.push(Problem {
                key: "reverify_min".into(),
                value: humantime::format_duration(reverify_min).to_string(),
                why: format!(
                    "must not exceed reverify_max ({})",
                    humantime::format_duration(reverify_max)
                ),
            });
        }
        let azure_host = url
            .as_ref()
            .and_then(|u| u.host_str())
            .is_some_and(is_azure_ingest_host);
        let mode = self.private_link.unwrap_or(if azure_host {
            crate::privatelink::Mode::Require
        } else {
            crate::privatelink::Mode::Off
        });
        if mode != crate::privatelink::Mode::Off {
            if let Some(u) = &url {
                if matches!(u.host(), Some(url::Host::Ipv4(_) | url::Host::Ipv6(_))) {
                    p.push(Problem {
                        key: "private_link".into(),
                        value: mode.as_str().into(),
                        why: format!("verifying Private Link needs the upstream's DNS name, but the URL names an IP address ({}); use the DCE host name or private_link: off", u.host_str().unwrap_or_default()),
                    });
                }
            }
        }
        let upstream_route = url.as_ref().map(|u| proxy.route(u));
        if let (
            crate::privatelink::Mode::Require,
            Some(crate::proxy::Route::Proxy {
                var,
                url: proxy_url,
            }),
        ) = (mode, &upstream_route)
        {
            let host = url.as_ref().and_then(|u| u.host_str()).unwrap_or_default();
            let defaulted = if self.private_link.is_none() {
                " (require is the default for Azure ingestion hosts)"
            } else {
                ""
            };
            p.push(Problem {
                key: "private_link".into(),
                value: mode.as_str().into(),
                why: format!("{var} ({proxy_url}) applies to {host}{defaulted}; a proxy resolves the name itself, so promlink could neither verify nor pin the private endpoint; add {host} (or .ingest.monitor.azure.com) to NO_PROXY to reach the DCE directly (the Entra ID authority may stay behind the proxy), or use private_link: prefer (the proxy only for the public fallback) or off"),
            });
        }
        let public_via_proxy = mode == crate::privatelink::Mode::Prefer
            && upstream_route
                .as_ref()
                .is_some_and(crate::proxy::Route::is_proxy);
        if public_via_proxy {
            notices.push(format!(
                "private_link prefer: the private endpoint is reached directly; the public fallback goes {}",
                upstream_route.as_ref().map(ToString::to_string).unwrap_or_default()
            ));
        }
        for u in self.alertmanager_url.iter().flatten() {
            if !matches!(u.scheme(), "http" | "https") {
                p.push(Problem {
                    key: "alertmanager_url".into(),
                    value: u.to_string(),
                    why: "must be an http:// or https:// URL".into(),
                });
            }
        }
        let log_level = self.log_level.clone().unwrap_or_else(|| "info".into());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
            p.push(Problem {
                key: "log_level".into(),
                value: log_level.clone(),
                why: format!("not a log filter: {e}"),
            });
        }

        let (Some(url), Some(authority_host), true) = (url, authority_host, p.is_empty()) else {
            return Err(ConfigError(p));
        };
        let scope = self
            .token_scope
            .clone()
            .unwrap_or_else(|| cloud.monitor_scope().to_string());
        let batch = BatchLimits {
            max_samples,
            max_bytes,
            flush_interval,
        };
        Ok(Config {
            listen,
            inbound,
            receive: ReceiveConfig {
                max_body_bytes,
                codec: crate::codec::Options {
                    max_decoded_bytes,
                    cluster: self.cluster.clone(),
                    limits: crate::codec::Limits {
                        max_series: max_series_per_request,
                        max_labels: max_labels_per_series,
                        max_name_len: max_label_name_length,
                        max_value_len: max_label_value_length,
                        max_samples_per_series,
                        drop_over_limit: self.label_limit_action == Some(LabelLimitAction::Drop),
                    },
                },
                full_status: self
                    .queue_full_status
                    .unwrap_or(FullStatus::ServiceUnavailable),
                retry_after_secs: 5,
                max_inflight_decode_bytes,
                limits: batch,
                body_read_timeout,
                max_concurrent_requests,
                max_inflight_body_bytes,
            },
            upstream: UpstreamConfig {
                url,
                ca_file: self.ca_file.clone(),
                request_timeout,
                retry_min,
                retry_max,
                batch,
                max_sample_age: self.max_sample_age,
                queue_max_age: self.queue_max_age,
                proxy: proxy.clone(),
            },
            identity: IdentityConfig {
                kind,
                cloud,
                tenant_id: self.tenant_id.clone(),
                client_id: self.client_id.clone(),
                client_secret,
                client_certificate_path: self.client_certificate_path.clone(),
                federated_token_file: self.federated_token_file.clone(),
                token_file: self.token_file.clone(),
                authority_host,
                scope,
                ca_file: self.ca_file.clone(),
                proxy: proxy.clone(),
                refresh_before_expiry: refresh_before,
                retry_min: Duration::from_secs(1).min(retry_max),
                retry_max,
            },
            shards,
            queue_max_bytes,
            ready_window,
            ready_requires_upstream: self.ready_requires_upstream.unwrap_or(false),
            shutdown_grace,
            shutdown_quiet_period: self
                .shutdown_quiet_period
                .unwrap_or(DEFAULT_SHUTDOWN_QUIET_PERIOD),
            azure_upstream,
            private_link: crate::privatelink::PrivateLinkConfig {
                mode,
                dns_servers: self.dns_server.clone().unwrap_or_default(),
                public_dns_servers: self.public_dns_server.clone().unwrap_or_default(),
                rules: crate::privatelink::AddressRules {
                    private_cidrs: self.private_cidr.clone().unwrap_or_default(),
                    expected_endpoints: self.expected_endpoint_ip.clone().unwrap_or_default(),
                },
                reverify_min,
                reverify_max,
                return_after,
                probe_timeout,
                public_via_proxy,
            },
            disk_queue: self
                .queue_dir
                .clone()
                .map(|d| (d, self.fsync.unwrap_or(crate::queue::FsyncPolicy::Always))),
            queue_memory_bytes,
            notices,
            alert: AlertSettings {
                alertmanager_urls: self.alertmanager_url.clone().unwrap_or_default(),
                resend_interval,
            },
            log_format: self.log_format.unwrap_or(LogFormat::Text),
            log_level,
            proxy,
        })
    }
}

/// Parses `always` or `interval:<duration>`.
fn parse_fsync(s: &str) -> Result<crate::queue::FsyncPolicy, String> {
    let s = s.trim();
    if s == "always" {
        return Ok(crate::queue::FsyncPolicy::Always);
    }
    match s
        .strip_prefix("interval:")
        .map(|d| humantime::parse_duration(d.trim()))
    {
        Some(Ok(d)) if !d.is_zero() => Ok(crate::queue::FsyncPolicy::Interval(d)),
        Some(Ok(_)) => Err("the fsync interval must be greater than zero".into()),
        Some(Err(e)) => Err(format!("{s:?}: {e}")),
        None => Err(format!(
            "{s:?}: expected always or interval:<duration>, e.g. interval:1s"
        )),
    }
}

fn de_fsync<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<crate::queue::FsyncPolicy>, D::Error> {
    let v: Option<String> = Option::deserialize(d)?;
    v.map(|s| parse_fsync(&s).map_err(serde::de::Error::custom))
        .transpose()
}

fn de_ip_or_nets<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<ipnet::IpNet>>, D::Error> {
    let v: Option<Vec<String>> = Option::deserialize(d)?;
    v.map(|v| {
        v.iter()
            .map(|s| parse_ip_or_net(s).map_err(serde::de::Error::custom))
            .collect()
    })
    .transpose()
}

/// Parses `10.0.0.5` as `10.0.0.5/32` and `10.0.0.0/29` as itself.
fn parse_ip_or_net(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is neither an IP address nor a CIDR"))
}

fn kind_name(kind: IdentityKind) -> String {
    use clap::ValueEnum;
    kind.to_possible_value()
        .map_or_else(|| format!("{kind:?}"), |v| v.get_name().to_string())
}

/// Turns an audience (`https://monitor.azure.us`) into a scope (`https://monitor.azure.us/.default`).
pub fn audience_to_scope(audience: &str) -> String {
    let a = audience.trim();
    if a.ends_with("/.default") {
        a.to_string()
    } else {
        format!("{}/.default", a.trim_end_matches('/'))
    }
}

/// Host suffixes of Azure Monitor metrics ingestion endpoints, per cloud.
const AZURE_INGEST_SUFFIXES: [&str; 3] = [
    ".ingest.monitor.azure.com",
    ".ingest.monitor.azure.us",
    ".ingest.monitor.azure.cn",
];

/// The URL text with any user name and password replaced, for messages.
fn redact_credentials(raw: &str) -> String {
    match Url::parse(raw.trim()) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("<redacted>");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => raw.to_string(),
    }
}

/// Whether `host` is an Azure Monitor metrics ingestion host name (any cloud).
pub fn is_azure_ingest_host(host: &str) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    AZURE_INGEST_SUFFIXES.iter().any(|s| h.ends_with(s))
}

/// Checks an ingestion URL. Returns the URL and whether it is an Azure Monitor DCE URL.
///
/// A URL whose host is an Azure ingestion host, or whose path starts with
/// `/dataCollectionRules/`, must have the full DCE shape: `https`,
/// `/dataCollectionRules/dcr-<32 hex>/streams/<stream>/api/v1/write` and an `api-version`.
/// Any other URL is a generic remote-write receiver (a Prometheus, Mimir, ...).
///
/// # Errors
/// The reason, as a sentence fragment.
pub fn check_ingestion_url(raw: &str, allow_plain_http: bool) -> Result<(Url, bool), String> {
    let url = Url::parse(raw.trim()).map_err(|e| format!("not a URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        // Credentials in a URL end up in logs and error messages.
        return Err("credentials in the URL are not supported; use identity token-file (or an Entra identity) instead".into());
    }
    match url.scheme() {
        "https" => {}
        "http" if allow_plain_http => {}
        "http" => return Err("plain http:// sends tokens and metrics unencrypted; use https:// or pass --allow-plain-http (tests and benchmarks only)".into()),
        other => return Err(format!("scheme {other:?} is not supported; use https://")),
    }
    let host = url
        .host_str()
        .ok_or("the URL has no host")?
        .to_ascii_lowercase();
    let azure_host = AZURE_INGEST_SUFFIXES.iter().any(|s| host.ends_with(s));
    let segments: Vec<&str> = url.path().trim_matches('/').split('/').collect();
    let dce_path = segments
        .first()
        .is_some_and(|s| s.eq_ignore_ascii_case("dataCollectionRules"));
    if !azure_host && !dce_path {
        return Ok((url, false));
    }
    const SHAPE: &str = "/dataCollectionRules/<dcr-immutable-id>/streams/<stream>/api/v1/write";
    match segments.as_slice() {
        [dcr, id, streams, stream, api, v1, write]
            if dcr.eq_ignore_ascii_case("dataCollectionRules")
                && streams.eq_ignore_ascii_case("streams")
                && *api == "api"
                && *v1 == "v1"
                && *write == "write" =>
        {
            let hex = id.strip_prefix("dcr-").unwrap_or("");
            if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(format!("DCR immutable id {id:?} must be \"dcr-\" followed by 32 hex digits (the DCR's immutableId, not its name or resource id)"));
            }
            if stream.is_empty() {
                return Err(format!("the stream is empty; expected {DEFAULT_STREAM}"));
            }
        }
        _ => return Err(format!("the path must be {SHAPE}")),
    }
    match url.query_pairs().find(|(k, _)| k == "api-version") {
        Some((_, v)) if !v.is_empty() => {}
        _ => {
            return Err(format!(
            "the api-version query parameter is missing (e.g. ?api-version={DEFAULT_API_VERSION})"
        ))
        }
    }
    Ok((url, true))
}

#[cfg(test)]
mod tests;
