//! Every configuration key, as one flat set: the flags and `PROMLINK_*` variables (clap), the
//! YAML file's keys (serde), and the merge of those layers. Nothing here has a default or a
//! check: [`super::defaults`] holds the defaults and the stage resolvers check the values.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::identity::{Cloud, IdentityKind};
use crate::receive::FullStatus;

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

/// Every configuration key. All optional here; defaults and checks are in [`Settings::resolve`]
/// (the defaults are named in [`super::defaults`]).
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

    /// Time a sender has to send a request body; slower gets 408 [default: 1m]
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

    /// Most upstream requests a minute to one ingestion URL, from this process; requests wait
    /// for their turn, nothing is dropped (Azure allows 15,000 a minute per DCR across every
    /// sender) [default: 15000 for Azure ingestion hosts, no limit otherwise]
    #[arg(long, env = "PROMLINK_MAX_REQUESTS_PER_MINUTE")]
    pub max_requests_per_minute: Option<u32>,

    /// Series budget: the most distinct series admitted within active_series_window; a series
    /// not seen before is dropped once the budget is full (per route) [default: no budget]
    #[arg(long, env = "PROMLINK_MAX_ACTIVE_SERIES")]
    pub max_active_series: Option<usize>,

    /// How long an admitted series counts against max_active_series after its last sample
    /// (Azure counts a series as active for 12 hours) [default: 12h]
    #[arg(long, env = "PROMLINK_ACTIVE_SERIES_WINDOW", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub active_series_window: Option<Duration>,

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
    /// commit) or interval:<duration> (fsync every interval, at most 1h) [default: always]
    #[arg(long, env = "PROMLINK_FSYNC", value_parser = parse_fsync)]
    #[serde(default, deserialize_with = "de_fsync")]
    pub fsync: Option<crate::queue::FsyncPolicy>,

    /// With queue_dir and fsync always: when the previous group commit ended less than 2ms
    /// ago, wait this long before the next so that more writes share its fsync; 0s never
    /// waits; at most 10ms [default: 0s]
    #[arg(long, env = "PROMLINK_COMMIT_DELAY", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub commit_delay: Option<Duration>,

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

    /// Relabeling rules run over every series before it is queued, with the syntax and
    /// semantics of Prometheus' `write_relabel_configs` (YAML file only)
    #[arg(skip)]
    pub write_relabel_configs: Option<Vec<promlink_relabel::RelabelConfig>>,

    /// Several destinations, tried in order after write_relabel_configs; each has its own
    /// upstream, queue (queue_dir/<name>) and overrides (YAML file only; see README "Routes")
    #[arg(skip)]
    pub routes: Option<Vec<super::routes::RouteSettings>>,

    /// Largest decoded request body accepted, bytes, checked before decompressing [default: 67108864]
    #[arg(long, env = "PROMLINK_MAX_DECODED_BYTES")]
    pub max_decoded_bytes: Option<usize>,

    /// Memory bound of the cache of label sets found valid, bytes; 0: no cache [default: 16777216]
    #[arg(long, env = "PROMLINK_SERIES_CACHE_BYTES")]
    pub series_cache_bytes: Option<usize>,

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

    /// Serve POST /-/reload, which reloads the configuration file as SIGHUP does (with the
    /// writes' authentication when that is configured) [default: false]
    #[arg(long, env = "PROMLINK_ENABLE_RELOAD_ENDPOINT", num_args = 0..=1, default_missing_value = "true")]
    pub enable_reload_endpoint: Option<bool>,

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

    /// The Azure Monitor workspace's query endpoint,
    /// https://<workspace>.<region>.prometheus.monitor.azure.com: every canary_interval promlink
    /// writes a canary sample through each route and reads it back here (promlink_canary_*
    /// metrics); unset: no canary
    #[arg(long, env = "PROMLINK_QUERY_URL")]
    pub query_url: Option<Url>,

    /// How often the canary is written through each route [default: 1m]
    #[arg(long, env = "PROMLINK_CANARY_INTERVAL", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub canary_interval: Option<Duration>,

    /// A canary not visible through query_url this long after its write counts as missing
    /// (promlink_canary_missing_total) [default: 5m]
    #[arg(long, env = "PROMLINK_CANARY_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub canary_timeout: Option<Duration>,

    /// Token scope of the canary's queries, e.g. https://prometheus.monitor.azure.com/.default
    /// [default: by --cloud]
    #[arg(long, env = "PROMLINK_QUERY_TOKEN_SCOPE")]
    pub query_token_scope: Option<String>,

    /// Private Link policy of query_url, verified with the same DNS servers and verdicts as the
    /// DCE: require (query only a verified private endpoint), prefer (else the public path),
    /// off [default: prefer for Azure Monitor query hosts, off otherwise]
    #[arg(long, env = "PROMLINK_QUERY_PRIVATE_LINK", value_enum)]
    pub query_private_link: Option<crate::privatelink::Mode>,

    /// The Azure Monitor workspace's active series limit (Azure's default; raised by a support
    /// request): PromlinkWorkspaceSeriesNearLimit fires at 75 % and 95 % of it; several promlinks
    /// writing to one workspace should each get their share [default: 1000000]
    #[arg(long, env = "PROMLINK_WORKSPACE_ACTIVE_SERIES_LIMIT")]
    pub workspace_active_series_limit: Option<u64>,

    /// The workspace's events (samples) per minute limit: PromlinkWorkspaceEventsNearLimit fires
    /// at 75 % and 95 % of it [default: 1000000]
    #[arg(long, env = "PROMLINK_WORKSPACE_EVENTS_PER_MINUTE_LIMIT")]
    pub workspace_events_per_minute_limit: Option<u64>,

    /// Requests per minute a DCR takes (Azure's limit, not raisable; lower it to this promlink's
    /// share when several write to one DCR): PromlinkDcrRequestsNearLimit fires at 75 % and 95 %
    /// of it [default: 15000]
    #[arg(long, env = "PROMLINK_DCR_REQUESTS_PER_MINUTE_LIMIT")]
    pub dcr_requests_per_minute_limit: Option<u64>,

    /// Log format [default: text]
    #[arg(long, env = "PROMLINK_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Log filter, e.g. info or promlink=debug [default: info]
    #[arg(long, env = "PROMLINK_LOG_LEVEL")]
    pub log_level: Option<String>,
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
            max_requests_per_minute,
            max_active_series,
            active_series_window,
            queue_max_bytes,
            queue_memory_bytes,
            queue_full_status,
            max_body_bytes,
            max_decoded_bytes,
            series_cache_bytes,
            request_timeout,
            retry_min_backoff,
            retry_max_backoff,
            token_refresh_before_expiry,
            ready_window,
            ready_requires_upstream,
            enable_reload_endpoint,
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
            query_url,
            canary_interval,
            canary_timeout,
            query_token_scope,
            query_private_link,
            workspace_active_series_limit,
            workspace_events_per_minute_limit,
            dcr_requests_per_minute_limit,
            queue_dir,
            max_inflight_decode_bytes,
            max_series_per_request,
            max_labels_per_series,
            max_label_name_length,
            max_label_value_length,
            max_samples_per_series,
            label_limit_action,
            write_relabel_configs,
            routes,
            fsync,
            commit_delay,
            queue_max_age,
            max_sample_age,
            log_format,
            log_level,
        )
    }
}

/// Parses `always` or `interval:<duration>`.
pub(super) fn parse_fsync(s: &str) -> Result<crate::queue::FsyncPolicy, String> {
    let s = s.trim();
    if s == "always" {
        return Ok(crate::queue::FsyncPolicy::Always);
    }
    match s
        .strip_prefix("interval:")
        .map(|d| humantime::parse_duration(d.trim()))
    {
        Some(Ok(d)) if d > super::defaults::MAX_FSYNC_INTERVAL => Err(format!(
            "{s:?}: the fsync interval is the loss window on power loss; at most {}",
            humantime::format_duration(super::defaults::MAX_FSYNC_INTERVAL)
        )),
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

pub(super) fn de_ip_or_nets<'de, D: serde::Deserializer<'de>>(
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
pub(super) fn parse_ip_or_net(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is neither an IP address nor a CIDR"))
}
