//! The receiver's settings: where it listens, its TLS files and sender authentication (loaded
//! once here, so a mistake stops promlink before it binds a port), connection limits, and the
//! limits and budgets of each write.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::defaults;
use super::problems::Problems;
use super::settings::LabelLimitAction;
use super::Settings;
use crate::receive::{auth, tls, FullStatus, InboundConfig, ListenerConfig, ReceiveConfig};

/// The receiver of `s`: its address, its connections, and its writes (each route cuts them
/// into chunks at its own batch limits).
pub(super) fn resolve(
    s: &Settings,
    p: &mut Problems,
) -> (SocketAddr, InboundConfig, ReceiveConfig) {
    let listen = s.listen.unwrap_or(defaults::LISTEN);
    let inbound = inbound(s, listen, p);
    (listen, inbound, writes(s, p))
}

fn shown(f: &Option<PathBuf>) -> String {
    f.as_ref()
        .map(|f| f.display().to_string())
        .unwrap_or_default()
}

/// TLS, sender authentication and connection limits.
fn inbound(s: &Settings, listen: SocketAddr, p: &mut Problems) -> InboundConfig {
    let tls = match (&s.tls_cert, &s.tls_key) {
        (Some(cert), Some(key)) => Some(tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: s.client_ca.clone(),
        }),
        (Some(_), None) => {
            p.bad("tls_key", "", "required with tls_cert");
            None
        }
        (None, Some(_)) => {
            p.bad("tls_cert", "", "required with tls_key");
            None
        }
        (None, None) => None,
    };
    if let Some(Err(e)) = tls.as_ref().map(tls::check) {
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
                shown(&s.tls_key),
                format!("does not go with tls_cert: {why}"),
            ),
        };
        p.bad(key, value, why);
    }
    if s.client_ca.is_some() && tls.is_none() {
        p.bad(
            "client_ca",
            shown(&s.client_ca),
            "client certificates need TLS: set tls_cert and tls_key",
        );
    }
    let allowed = s.client_allowed_name.clone().unwrap_or_default();
    if !allowed.is_empty() && s.client_ca.is_none() {
        p.bad(
            "client_allowed_name",
            allowed.join(","),
            "needs client_ca (names are read from verified client certificates)",
        );
    }
    if let Some(Err(e)) = s.bearer_token_file.as_deref().map(auth::read_tokens) {
        let why = match e {
            auth::TokenFileError::Read { source, .. } => format!("cannot read it: {source}"),
            auth::TokenFileError::Empty { .. } => {
                "holds no token (one per line; blank lines and # comments are ignored)".into()
            }
        };
        p.bad("bearer_token_file", shown(&s.bearer_token_file), why);
    }
    if s.bearer_token_file.is_some()
        && s.tls_cert.is_none()
        && !listen.ip().is_loopback()
        && !s.allow_insecure_auth.unwrap_or(false)
    {
        p.bad(
            "bearer_token_file",
            shown(&s.bearer_token_file),
            format!("bearer tokens would cross the network in clear text: {listen} is not a loopback address and there is no TLS; set tls_cert and tls_key, or allow_insecure_auth: true only behind a TLS-terminating proxy"),
        );
    }
    InboundConfig {
        tls,
        auth: auth::AuthConfig {
            bearer_token_file: s.bearer_token_file.clone(),
            client_certificates: s.client_ca.is_some(),
            client_allowed_names: allowed,
        },
        listener: ListenerConfig {
            max_connections: p.positive(
                "max_connections",
                s.max_connections,
                defaults::MAX_CONNECTIONS,
            ),
            header_read_timeout: p.duration(
                "header_read_timeout",
                s.header_read_timeout,
                defaults::HEADER_READ_TIMEOUT,
            ),
            max_h2_streams: defaults::MAX_H2_STREAMS,
        },
        reload_interval: p.duration(
            "reload_interval",
            s.reload_interval,
            defaults::RELOAD_INTERVAL,
        ),
    }
}

/// The series cache of `series_cache_bytes` (0: none).
fn series_cache(
    s: &Settings,
    p: &mut Problems,
) -> Option<std::sync::Arc<crate::codec::SeriesCache>> {
    let bytes = s
        .series_cache_bytes
        .unwrap_or(crate::codec::DEFAULT_SERIES_CACHE_BYTES);
    if bytes == 0 {
        return None;
    }
    if !(defaults::MIN_SERIES_CACHE_BYTES..=defaults::MAX_SERIES_CACHE_BYTES).contains(&bytes) {
        p.bad(
            "series_cache_bytes",
            bytes.to_string(),
            format!(
                "must be 0 (no cache) or from {} to {} (1 GiB holds 30 million series)",
                defaults::MIN_SERIES_CACHE_BYTES,
                defaults::MAX_SERIES_CACHE_BYTES
            ),
        );
        return None;
    }
    crate::codec::SeriesCache::new(bytes).map(std::sync::Arc::new)
}

/// The limits and budgets of each write, and what the decoder adds (`cluster`).
fn writes(s: &Settings, p: &mut Problems) -> ReceiveConfig {
    if let Some(c) = &s.cluster {
        if c.is_empty() || c.len() > defaults::MAX_CLUSTER_LEN {
            p.bad(
                "cluster",
                c,
                "must be 1 to 1023 characters (Azure's label value limit)",
            );
        }
    }
    let limits = crate::codec::Limits::default();
    let relabel = super::routes::compile_rules(
        s.write_relabel_configs.as_deref(),
        "write_relabel_configs",
        p,
    );
    ReceiveConfig {
        max_body_bytes: p.positive("max_body_bytes", s.max_body_bytes, defaults::MAX_BODY_BYTES),
        codec: crate::codec::Options {
            max_decoded_bytes: p.positive(
                "max_decoded_bytes",
                s.max_decoded_bytes,
                defaults::MAX_DECODED_BYTES,
            ),
            cluster: s.cluster.clone(),
            limits: crate::codec::Limits {
                max_series: p.positive(
                    "max_series_per_request",
                    s.max_series_per_request,
                    limits.max_series,
                ),
                max_labels: p.positive(
                    "max_labels_per_series",
                    s.max_labels_per_series,
                    limits.max_labels,
                ),
                max_name_len: p.positive(
                    "max_label_name_length",
                    s.max_label_name_length,
                    limits.max_name_len,
                ),
                max_value_len: p.positive(
                    "max_label_value_length",
                    s.max_label_value_length,
                    limits.max_value_len,
                ),
                max_samples_per_series: p.positive(
                    "max_samples_per_series",
                    s.max_samples_per_series,
                    limits.max_samples_per_series,
                ),
                drop_over_limit: s.label_limit_action == Some(LabelLimitAction::Drop),
            },
            relabel,
            series_cache: series_cache(s, p),
        },
        full_status: s
            .queue_full_status
            .unwrap_or(FullStatus::ServiceUnavailable),
        retry_after_secs: defaults::RETRY_AFTER_SECS,
        max_inflight_decode_bytes: p.positive(
            "max_inflight_decode_bytes",
            s.max_inflight_decode_bytes,
            defaults::MAX_INFLIGHT_DECODE_BYTES,
        ),
        body_read_timeout: p.duration(
            "body_read_timeout",
            s.body_read_timeout,
            defaults::BODY_READ_TIMEOUT,
        ),
        max_concurrent_requests: p.positive(
            "max_concurrent_requests",
            s.max_concurrent_requests,
            defaults::MAX_CONCURRENT_REQUESTS,
        ),
        max_inflight_body_bytes: p.positive(
            "max_inflight_body_bytes",
            s.max_inflight_body_bytes,
            defaults::MAX_INFLIGHT_BODY_BYTES,
        ),
    }
}
