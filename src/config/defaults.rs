//! Every default, named once. The stage resolvers use these constants; the `[default: ...]` of
//! each key's `--help` text and the README's configuration table are checked against [`table`]
//! by `tests/cli.rs`, so the three cannot drift apart.

use std::net::SocketAddr;
use std::time::Duration;

/// `listen`: every interface, the Azure sidecar's port.
pub const LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 8081);
/// `reload_interval`.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(10);
/// `header_read_timeout`.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// `body_read_timeout`.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// `max_connections`.
pub const MAX_CONNECTIONS: usize = 1024;
/// Concurrent HTTP/2 streams per receiver connection (not a key).
pub const MAX_H2_STREAMS: u32 = 256;
/// `max_concurrent_requests`.
pub const MAX_CONCURRENT_REQUESTS: usize = 256;
/// `max_inflight_body_bytes`.
pub const MAX_INFLIGHT_BODY_BYTES: usize = 64 << 20;
/// `stream`: the stream Azure Monitor managed Prometheus ingests into.
pub const STREAM: &str = "Microsoft-PrometheusMetrics";
/// `api_version`: the ingestion API version in Azure's documentation.
pub const API_VERSION: &str = "2023-04-24";
/// `max_samples_per_request`.
pub const MAX_SAMPLES_PER_REQUEST: usize = 5000;
/// `max_bytes_per_request`.
pub const MAX_BYTES_PER_REQUEST: usize = 4 << 20;
/// `flush_interval`.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(2);
/// `shards`.
pub const SHARDS: usize = 4;
/// Most `shards`.
pub const MAX_SHARDS: usize = 256;
/// `commit_delay`: off until measured otherwise (BENCHMARKS.md, issue 17).
pub const COMMIT_DELAY: Duration = Duration::ZERO;
/// Longest `commit_delay`: every write may wait this long on top of its fsync.
pub const MAX_COMMIT_DELAY: Duration = Duration::from_millis(10);
/// Longest `fsync: interval:<d>`: the loss window on power loss (a larger value is refused, it
/// would also overflow the committer's clock).
pub const MAX_FSYNC_INTERVAL: Duration = Duration::from_secs(3600);
/// `queue_max_bytes`.
pub const QUEUE_MAX_BYTES: usize = 64 << 20;
/// `queue_memory_bytes`.
pub const QUEUE_MEMORY_BYTES: usize = 8 << 20;
/// `max_body_bytes`.
pub const MAX_BODY_BYTES: usize = 16 << 20;
/// `max_decoded_bytes`.
pub const MAX_DECODED_BYTES: usize = 64 << 20;
/// Smallest `series_cache_bytes` but 0 (off).
pub const MIN_SERIES_CACHE_BYTES: usize = 64 << 10;
/// Largest `series_cache_bytes`.
pub const MAX_SERIES_CACHE_BYTES: usize = 1 << 30;
/// `max_inflight_decode_bytes`.
pub const MAX_INFLIGHT_DECODE_BYTES: usize = 128 << 20;
/// `Retry-After` seconds sent with a retryable refusal (not a key).
pub const RETRY_AFTER_SECS: u64 = 5;
/// `request_timeout`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// `retry_min_backoff`.
pub const RETRY_MIN_BACKOFF: Duration = Duration::from_millis(500);
/// `retry_max_backoff`.
pub const RETRY_MAX_BACKOFF: Duration = Duration::from_secs(30);
/// First retry delay of a failed token fetch (not a key; capped by `retry_max_backoff`).
pub const TOKEN_RETRY_MIN: Duration = Duration::from_secs(1);
/// `token_refresh_before_expiry`.
pub const TOKEN_REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);
/// `ready_window`.
pub const READY_WINDOW: Duration = Duration::from_secs(120);
/// `shutdown_grace`.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// `shutdown_quiet_period`: Prometheus sends about every 5 s.
pub const SHUTDOWN_QUIET_PERIOD: Duration = Duration::from_secs(5);
/// `reverify_min`.
pub const REVERIFY_MIN: Duration = Duration::from_secs(10);
/// `reverify_max`.
pub const REVERIFY_MAX: Duration = Duration::from_secs(300);
/// `canary_interval`.
pub const CANARY_INTERVAL: Duration = Duration::from_secs(60);
/// `canary_timeout`.
pub const CANARY_TIMEOUT: Duration = Duration::from_secs(300);
/// `workspace_active_series_limit`: an Azure Monitor workspace's default.
pub const WORKSPACE_ACTIVE_SERIES_LIMIT: u64 = 1_000_000;
/// `workspace_events_per_minute_limit`: an Azure Monitor workspace's default.
pub const WORKSPACE_EVENTS_PER_MINUTE_LIMIT: u64 = 1_000_000;
/// `fallback_return_after`.
pub const FALLBACK_RETURN_AFTER: Duration = Duration::from_secs(60);
/// `probe_timeout`.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// `alert_resend_interval`.
pub const ALERT_RESEND_INTERVAL: Duration = Duration::from_secs(60);
/// `log_level`.
pub const LOG_LEVEL: &str = "info";
/// Longest `cluster` value: Azure's label value limit.
pub const MAX_CLUSTER_LEN: usize = 1023;

fn d(v: Duration) -> String {
    humantime::format_duration(v).to_string()
}

/// Every key with a plain default, and that default as `--help` and the README spell it.
pub fn table() -> Vec<(&'static str, String)> {
    let limits = crate::codec::Limits::default();
    vec![
        ("listen", LISTEN.to_string()),
        ("reload_interval", d(RELOAD_INTERVAL)),
        ("header_read_timeout", d(HEADER_READ_TIMEOUT)),
        ("body_read_timeout", d(BODY_READ_TIMEOUT)),
        ("max_connections", MAX_CONNECTIONS.to_string()),
        (
            "max_concurrent_requests",
            MAX_CONCURRENT_REQUESTS.to_string(),
        ),
        (
            "max_inflight_body_bytes",
            MAX_INFLIGHT_BODY_BYTES.to_string(),
        ),
        ("stream", STREAM.to_string()),
        ("api_version", API_VERSION.to_string()),
        ("identity", "system-assigned".to_string()),
        ("cloud", "public".to_string()),
        (
            "max_samples_per_request",
            MAX_SAMPLES_PER_REQUEST.to_string(),
        ),
        ("max_bytes_per_request", MAX_BYTES_PER_REQUEST.to_string()),
        ("flush_interval", d(FLUSH_INTERVAL)),
        ("shards", SHARDS.to_string()),
        ("active_series_window", d(ACTIVE_SERIES_WINDOW)),
        ("queue_max_bytes", QUEUE_MAX_BYTES.to_string()),
        ("queue_memory_bytes", QUEUE_MEMORY_BYTES.to_string()),
        ("fsync", "always".to_string()),
        ("commit_delay", d(COMMIT_DELAY)),
        ("queue_full_status", "503".to_string()),
        ("max_body_bytes", MAX_BODY_BYTES.to_string()),
        (
            "max_inflight_decode_bytes",
            MAX_INFLIGHT_DECODE_BYTES.to_string(),
        ),
        ("max_series_per_request", limits.max_series.to_string()),
        ("max_labels_per_series", limits.max_labels.to_string()),
        ("max_label_name_length", limits.max_name_len.to_string()),
        ("max_label_value_length", limits.max_value_len.to_string()),
        (
            "max_samples_per_series",
            limits.max_samples_per_series.to_string(),
        ),
        ("label_limit_action", "reject".to_string()),
        ("max_decoded_bytes", MAX_DECODED_BYTES.to_string()),
        (
            "series_cache_bytes",
            crate::codec::DEFAULT_SERIES_CACHE_BYTES.to_string(),
        ),
        ("request_timeout", d(REQUEST_TIMEOUT)),
        ("retry_min_backoff", d(RETRY_MIN_BACKOFF)),
        ("retry_max_backoff", d(RETRY_MAX_BACKOFF)),
        (
            "token_refresh_before_expiry",
            d(TOKEN_REFRESH_BEFORE_EXPIRY),
        ),
        ("ready_window", d(READY_WINDOW)),
        ("ready_requires_upstream", "false".to_string()),
        ("shutdown_grace", d(SHUTDOWN_GRACE)),
        ("shutdown_quiet_period", d(SHUTDOWN_QUIET_PERIOD)),
        ("reverify_min", d(REVERIFY_MIN)),
        ("reverify_max", d(REVERIFY_MAX)),
        ("fallback_return_after", d(FALLBACK_RETURN_AFTER)),
        ("probe_timeout", d(PROBE_TIMEOUT)),
        ("alert_resend_interval", d(ALERT_RESEND_INTERVAL)),
        ("canary_interval", d(CANARY_INTERVAL)),
        ("canary_timeout", d(CANARY_TIMEOUT)),
        (
            "workspace_active_series_limit",
            WORKSPACE_ACTIVE_SERIES_LIMIT.to_string(),
        ),
        (
            "workspace_events_per_minute_limit",
            WORKSPACE_EVENTS_PER_MINUTE_LIMIT.to_string(),
        ),
        (
            "dcr_requests_per_minute_limit",
            AZURE_REQUESTS_PER_MINUTE.to_string(),
        ),
        ("log_format", "text".to_string()),
        ("log_level", LOG_LEVEL.to_string()),
    ]
}

/// `max_requests_per_minute` for Azure ingestion hosts: Azure's limit per DCR, which cannot be
/// raised.
pub const AZURE_REQUESTS_PER_MINUTE: u32 = 15_000;

/// `active_series_window`: how Azure counts a series as active.
pub const ACTIVE_SERIES_WINDOW: Duration = Duration::from_secs(12 * 3600);
