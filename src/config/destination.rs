//! A destination: where data goes and everything that belongs to that one place, the upstream
//! URL and its client settings, the identity that authenticates to it, its Private Link policy,
//! and the queue that holds data for it. One today; routes will each carry their own.

use super::defaults as d;
use super::problems::Problems;
use super::Settings;
use crate::privatelink::{AddressRules, Mode, PrivateLinkConfig};
use crate::proxy::{ProxyConfig, Route};
use crate::queue::{BatchLimits, DiskSettings, FsyncPolicy, QueueConfig};
use crate::upstream::UpstreamConfig;

/// Everything about one place data goes.
#[derive(Clone, Debug)]
pub struct Destination {
    /// The upstream URL and client settings.
    pub upstream: UpstreamConfig,
    /// Whether the upstream is an Azure Monitor DCE URL (vs. a generic remote-write receiver).
    pub azure: bool,
    /// How promlink authenticates to it.
    pub identity: crate::identity::IdentityConfig,
    /// Private Link verification and path policy for its host.
    pub private_link: PrivateLinkConfig,
    /// The queue holding its data.
    pub queue: QueueConfig,
    /// Concurrent upstream requests (`shards`).
    pub shards: usize,
}

/// The batch limits of `s` (the receiver cuts requests at them too).
pub(super) fn batch(s: &Settings, p: &mut Problems) -> BatchLimits {
    BatchLimits {
        max_samples: p.positive(
            "max_samples_per_request",
            s.max_samples_per_request,
            d::MAX_SAMPLES_PER_REQUEST,
        ),
        max_bytes: p.positive(
            "max_bytes_per_request",
            s.max_bytes_per_request,
            d::MAX_BYTES_PER_REQUEST,
        ),
        flush_interval: p.duration("flush_interval", s.flush_interval, d::FLUSH_INTERVAL),
    }
}

/// The destination of `s`; `None` when the URL or the identity cannot be used (problems say
/// why). `notices` gets what the operator should know at start.
pub(super) fn resolve(
    s: &Settings,
    batch: BatchLimits,
    proxy: &ProxyConfig,
    p: &mut Problems,
    notices: &mut Vec<String>,
) -> Option<Destination> {
    let url = super::ingestion::resolve(s, p);
    let request_timeout = p.duration("request_timeout", s.request_timeout, d::REQUEST_TIMEOUT);
    let retry_min = p.duration(
        "retry_min_backoff",
        s.retry_min_backoff,
        d::RETRY_MIN_BACKOFF,
    );
    let retry_max = p.duration(
        "retry_max_backoff",
        s.retry_max_backoff,
        d::RETRY_MAX_BACKOFF,
    );
    p.ordered(
        "retry_min_backoff",
        retry_min,
        "retry_max_backoff",
        retry_max,
    );
    let identity = super::identity::resolve(s, retry_max, proxy, p);
    if let Some(ca) = &s.ca_file {
        if !ca.is_file() {
            p.bad("ca_file", ca.display(), "no such file");
        }
    }
    let azure = url.as_ref().is_some_and(|(_, azure)| *azure);
    if azure && s.identity == Some(crate::identity::IdentityKind::None) {
        p.bad(
            "identity",
            "none",
            "an Azure Monitor ingestion endpoint needs an Entra ID token; choose a managed, workload or application identity",
        );
    }
    let shards = p.positive("shards", s.shards, d::SHARDS);
    if shards > d::MAX_SHARDS {
        p.bad("shards", shards, format!("at most {}", d::MAX_SHARDS));
    }
    for (key, v) in [
        ("max_sample_age", s.max_sample_age),
        ("queue_max_age", s.queue_max_age),
    ] {
        if v.is_some_and(|d| d.is_zero()) {
            p.bad(
                key,
                "0s",
                "must be greater than zero (leave it unset for no limit)",
            );
        }
    }
    let max_requests_per_minute = match s.max_requests_per_minute {
        Some(0) => {
            p.bad(
                "max_requests_per_minute",
                0,
                "must be greater than zero (leave it unset for no limit on a non-Azure upstream)",
            );
            None
        }
        Some(n) => Some(n),
        None => azure.then_some(d::AZURE_REQUESTS_PER_MINUTE),
    };
    let queue = queue(s, p);
    let url = url.map(|(u, _)| u);
    let private_link = private_link(s, url.as_ref(), proxy, p, notices);
    Some(Destination {
        upstream: UpstreamConfig {
            url: url?,
            ca_file: s.ca_file.clone(),
            request_timeout,
            retry_min,
            retry_max,
            batch,
            max_sample_age: s.max_sample_age,
            queue_max_age: s.queue_max_age,
            proxy: proxy.clone(),
            max_requests_per_minute,
        },
        azure,
        identity: identity?,
        private_link,
        queue,
        shards,
    })
}

/// The queue of `s`: in memory, or on disk under `queue_dir`.
fn queue(s: &Settings, p: &mut Problems) -> QueueConfig {
    let max_bytes = p.positive("queue_max_bytes", s.queue_max_bytes, d::QUEUE_MAX_BYTES);
    let memory_bytes = p.positive(
        "queue_memory_bytes",
        s.queue_memory_bytes,
        d::QUEUE_MEMORY_BYTES,
    );
    let commit_delay = match s.commit_delay.unwrap_or(d::COMMIT_DELAY) {
        delay if delay > d::MAX_COMMIT_DELAY => {
            p.bad(
                "commit_delay",
                humantime::format_duration(delay),
                format!(
                    "every write waits up to this long for its fsync; at most {}",
                    humantime::format_duration(d::MAX_COMMIT_DELAY)
                ),
            );
            d::COMMIT_DELAY
        }
        delay => delay,
    };
    QueueConfig {
        max_bytes,
        disk: s.queue_dir.clone().map(|dir| DiskSettings {
            dir,
            fsync: s.fsync.unwrap_or(FsyncPolicy::Always),
            commit_delay,
            memory_bytes,
        }),
    }
}

/// The Private Link policy for `url`'s host: `require` by default for Azure ingestion hosts.
/// A policy other than `off` needs a host name, and `require` cannot work through a proxy.
fn private_link(
    s: &Settings,
    url: Option<&url::Url>,
    proxy: &ProxyConfig,
    p: &mut Problems,
    notices: &mut Vec<String>,
) -> PrivateLinkConfig {
    let reverify_min = p.duration("reverify_min", s.reverify_min, d::REVERIFY_MIN);
    let reverify_max = p.duration("reverify_max", s.reverify_max, d::REVERIFY_MAX);
    p.ordered("reverify_min", reverify_min, "reverify_max", reverify_max);
    let return_after = p.duration(
        "fallback_return_after",
        s.fallback_return_after,
        d::FALLBACK_RETURN_AFTER,
    );
    let probe_timeout = p.duration("probe_timeout", s.probe_timeout, d::PROBE_TIMEOUT);
    let azure_host = url
        .and_then(|u| u.host_str())
        .is_some_and(super::ingestion::is_azure_ingest_host);
    let mode = s
        .private_link
        .unwrap_or(if azure_host { Mode::Require } else { Mode::Off });
    if let Some(u) = url.filter(|_| mode != Mode::Off) {
        if matches!(u.host(), Some(url::Host::Ipv4(_) | url::Host::Ipv6(_))) {
            p.bad("private_link", mode.as_str(), format!("verifying Private Link needs the upstream's DNS name, but the URL names an IP address ({}); use the DCE host name or private_link: off", u.host_str().unwrap_or_default()));
        }
    }
    let route = url.map(|u| proxy.route(u));
    if let (
        Mode::Require,
        Some(Route::Proxy {
            var,
            url: proxy_url,
        }),
    ) = (mode, &route)
    {
        let host = url.and_then(|u| u.host_str()).unwrap_or_default();
        let defaulted = if s.private_link.is_none() {
            " (require is the default for Azure ingestion hosts)"
        } else {
            ""
        };
        p.bad("private_link", mode.as_str(), format!("{var} ({proxy_url}) applies to {host}{defaulted}; a proxy resolves the name itself, so promlink could neither verify nor pin the private endpoint; add {host} (or .ingest.monitor.azure.com) to NO_PROXY to reach the DCE directly (the Entra ID authority may stay behind the proxy), or use private_link: prefer (the proxy only for the public fallback) or off"));
    }
    let public_via_proxy = mode == Mode::Prefer && route.as_ref().is_some_and(Route::is_proxy);
    if public_via_proxy {
        notices.push(format!(
            "private_link prefer: the private endpoint is reached directly; the public fallback goes {}",
            route.as_ref().map(ToString::to_string).unwrap_or_default()
        ));
    }
    PrivateLinkConfig {
        mode,
        dns_servers: s.dns_server.clone().unwrap_or_default(),
        public_dns_servers: s.public_dns_server.clone().unwrap_or_default(),
        rules: AddressRules {
            private_cidrs: s.private_cidr.clone().unwrap_or_default(),
            expected_endpoints: s.expected_endpoint_ip.clone().unwrap_or_default(),
        },
        reverify_min,
        reverify_max,
        return_after,
        probe_timeout,
        public_via_proxy,
    }
}
