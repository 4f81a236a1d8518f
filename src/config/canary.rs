//! The canary read-back's keys: `query_url`, `canary_interval`, `canary_timeout` and
//! `query_token_scope` (see [`crate::canary`]).

use std::time::Duration;

use url::Url;

use super::problems::Problems;
use super::{defaults, Settings};
use crate::identity::Cloud;

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
    Some(CanarySettings {
        query_url: url,
        interval,
        timeout,
        token_scope,
    })
}
