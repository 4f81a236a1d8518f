//! The canary read-back's keys: `query_url`, `canary_interval`, `canary_timeout` and
//! `query_token_scope` (see [`crate::canary`]).

use std::net::SocketAddr;
use std::time::Duration;

use url::Url;

use super::problems::Problems;
use super::{defaults, Settings};
use crate::identity::Cloud;
use crate::privatelink::{AddressRules, Mode};

/// How the canary is written and read back; configured by `query_url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanarySettings {
    /// The workspace's query endpoint (`/api/v1/query` is appended to its path).
    pub query_url: Url,
    /// Between two canaries of a route (`canary_interval`).
    pub interval: Duration,
    /// A canary not visible this long after its write is missing (`canary_timeout`).
    pub timeout: Duration,
    /// The token scope of the queries (`query_token_scope`; by cloud).
    pub token_scope: String,
    /// The Private Link policy of `query_url` (`query_private_link`).
    pub private_link: Mode,
    /// The DNS servers that verify it (`dns_server`; empty: the system's).
    pub dns_servers: Vec<SocketAddr>,
    /// Which addresses count as private (`private_cidr`; the DCE's `expected_endpoint_ip`
    /// does not apply: the workspace's private endpoint has its own address).
    pub rules: AddressRules,
    /// Timeout of one DNS query (`probe_timeout`).
    pub dns_timeout: Duration,
}

/// Whether `host` is an Azure Monitor workspace's query endpoint
/// (`<workspace>.<region>.prometheus.monitor.azure.com`, `.us`, `.cn`).
pub fn is_azure_query_host(host: &str) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    crate::privatelink::verdict::QUERY_ZONE_SUFFIXES
        .iter()
        .any(|s| h.ends_with(&format!(".{s}")))
}

/// The canary settings, when `query_url` is set.
pub(super) fn resolve(s: &Settings, p: &mut Problems) -> Option<CanarySettings> {
    let interval = p.duration(
        "canary_interval",
        s.canary_interval,
        defaults::CANARY_INTERVAL,
    );
    let timeout = p.duration("canary_timeout", s.canary_timeout, defaults::CANARY_TIMEOUT);
    let url = s.query_url.clone()?;
    let plain_ok = s.allow_plain_http.unwrap_or(false);
    match url.scheme() {
        "https" => {}
        "http" if plain_ok => {}
        "http" => p.bad(
            "query_url",
            &url,
            "plain http would send the query token in clear; use https (allow_plain_http: true for tests only)",
        ),
        _ => p.bad("query_url", &url, "must be an https:// URL"),
    }
    if url.query().is_some() || url.fragment().is_some() {
        p.bad(
            "query_url",
            &url,
            "give the endpoint only, e.g. https://<workspace>.<region>.prometheus.monitor.azure.com (promlink adds /api/v1/query)",
        );
    }
    let token_scope = s
        .query_token_scope
        .clone()
        .unwrap_or_else(|| s.cloud.unwrap_or(Cloud::Public).query_scope().to_string());
    let azure = url.host_str().is_some_and(is_azure_query_host);
    let private_link = s
        .query_private_link
        .unwrap_or(if azure { Mode::Prefer } else { Mode::Off });
    if private_link != Mode::Off
        && matches!(url.host(), Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)))
    {
        p.bad(
            "query_private_link",
            private_link.as_str(),
            format!("verifying Private Link needs the query endpoint's DNS name, but query_url names an IP address ({}); use the workspace's host name or query_private_link: off", url.host_str().unwrap_or_default()),
        );
    }
    Some(CanarySettings {
        query_url: url,
        interval,
        timeout,
        token_scope,
        private_link,
        dns_servers: s.dns_server.clone().unwrap_or_default(),
        rules: AddressRules {
            private_cidrs: s.private_cidr.clone().unwrap_or_default(),
            expected_endpoints: Vec::new(),
        },
        dns_timeout: s.probe_timeout.unwrap_or(defaults::PROBE_TIMEOUT),
    })
}
