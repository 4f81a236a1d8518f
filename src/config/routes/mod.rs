//! `routes`: several destinations, each with its own upstream, identity, Private Link policy,
//! batching and queue. Series are offered to the routes in order after the global
//! `write_relabel_configs`; the first route whose `match` selects a series takes it (and, with
//! `continue: true`, later routes are offered it too).
//!
//! A route inherits every key from the top level and overrides the ones it sets (the keys of
//! [`RouteSettings`]). Without `routes`, the top-level destination is the one route, named
//! `default`, and nothing changes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::destination::{self, Destination};
use super::problems::Problems;
use super::{Problem, Settings};
use crate::identity::{Cloud, IdentityKind};
use crate::privatelink::Mode;

/// The name of the route a configuration without `routes` has, and of the route an existing
/// single-route disk queue is migrated to.
pub const DEFAULT_ROUTE: &str = "default";

/// Names the disk queue uses inside a queue directory, which no route may take.
const RESERVED: [&str; 4] = ["log", "lock", "format", "log.migrating"];

/// One route as written in the YAML file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSettings {
    /// The route's name: a directory name under `queue_dir`, and the `route` label.
    pub name: Option<String>,
    /// A PromQL series selector; none: every series offered to this route.
    #[serde(rename = "match")]
    pub matches: Option<String>,
    /// Also offer the series to later routes.
    #[serde(rename = "continue")]
    pub continue_: Option<bool>,
    /// The route's own rules, run after the global ones on the series it takes.
    pub write_relabel_configs: Option<Vec<promlink_relabel::RelabelConfig>>,
    /// Where it sends.
    pub ingestion_url: Option<String>,
    /// Several DCRs it spreads its series over, each series always to the same one (instead
    /// of `ingestion_url`).
    pub ingestion_urls: Option<Vec<String>>,
    /// With `dcr_id`, instead of `ingestion_url`.
    pub dce_endpoint: Option<String>,
    /// With `dce_endpoint`.
    pub dcr_id: Option<String>,
    /// With `dce_endpoint`.
    pub stream: Option<String>,
    /// Overrides of the identity keys.
    pub identity: Option<IdentityKind>,
    /// See [`Settings::cloud`].
    pub cloud: Option<Cloud>,
    /// See [`Settings::tenant_id`].
    pub tenant_id: Option<String>,
    /// See [`Settings::client_id`].
    pub client_id: Option<String>,
    /// See [`Settings::client_secret_file`].
    pub client_secret_file: Option<PathBuf>,
    /// See [`Settings::client_certificate_path`].
    pub client_certificate_path: Option<PathBuf>,
    /// See [`Settings::federated_token_file`].
    pub federated_token_file: Option<PathBuf>,
    /// See [`Settings::token_file`].
    pub token_file: Option<PathBuf>,
    /// See [`Settings::authority_host`].
    pub authority_host: Option<String>,
    /// See [`Settings::token_scope`].
    pub token_scope: Option<String>,
    /// Overrides of the Private Link keys.
    pub private_link: Option<Mode>,
    /// See [`Settings::dns_server`].
    pub dns_server: Option<Vec<std::net::SocketAddr>>,
    /// See [`Settings::expected_endpoint_ip`].
    #[serde(default, deserialize_with = "super::settings::de_ip_or_nets")]
    pub expected_endpoint_ip: Option<Vec<ipnet::IpNet>>,
    /// Overrides of the batching keys.
    pub max_samples_per_request: Option<usize>,
    /// See [`Settings::max_bytes_per_request`].
    pub max_bytes_per_request: Option<usize>,
    /// See [`Settings::flush_interval`].
    #[serde(default, with = "humantime_serde")]
    pub flush_interval: Option<Duration>,
    /// See [`Settings::shards`].
    pub shards: Option<usize>,
    /// The route's queue budget.
    pub queue_max_bytes: Option<usize>,
    /// See [`Settings::max_requests_per_minute`].
    pub max_requests_per_minute: Option<u32>,
    /// The route's series budget.
    pub max_active_series: Option<usize>,
    /// See [`Settings::active_series_window`].
    #[serde(default, with = "humantime_serde")]
    pub active_series_window: Option<Duration>,
    /// The query endpoint of the workspace this route writes to (the canary reads back
    /// there); see [`Settings::query_url`].
    pub query_url: Option<url::Url>,
    /// See [`Settings::query_token_scope`].
    pub query_token_scope: Option<String>,
    /// See [`Settings::query_private_link`].
    pub query_private_link: Option<Mode>,
    /// The limits of the workspace this route writes to; see
    /// [`Settings::workspace_active_series_limit`].
    pub workspace_active_series_limit: Option<u64>,
    /// See [`Settings::workspace_events_per_minute_limit`].
    pub workspace_events_per_minute_limit: Option<u64>,
    /// See [`Settings::dcr_requests_per_minute_limit`].
    pub dcr_requests_per_minute_limit: Option<u64>,
}

/// One resolved route.
#[derive(Clone, Debug)]
pub struct Route {
    /// Its name.
    pub name: String,
    /// Which series it takes; `None`: all that reach it.
    pub selector: Option<promlink_relabel::Selector>,
    /// Whether later routes are offered the series it takes.
    pub continue_: bool,
    /// Its own rules (after the global ones); `None`: none.
    pub relabel: Option<Arc<promlink_codec::Relabel>>,
    /// Its series budget (`max_active_series`).
    pub budget: Option<Budget>,
    /// Where it sends, with a queue each: one, or one per URL of `ingestion_urls` (each
    /// series always goes to the same one).
    pub destinations: Vec<Destination>,
    /// Its canary read-back (its own `query_url`, or the top level's); `None`: no canary.
    pub canary: Option<super::CanarySettings>,
    /// The limits of the workspace and DCRs it writes to.
    pub workspace: super::WorkspaceLimits,
}

/// A route's series budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// The most distinct series admitted within `window`.
    pub max_active_series: usize,
    /// How long an admitted series counts after its last sample.
    pub window: Duration,
}

/// The series budget the settings `s` give (after a route's own keys), if any.
pub(super) fn budget(s: &Settings, p: &mut Problems) -> Option<Budget> {
    let window = p.duration(
        "active_series_window",
        s.active_series_window,
        super::defaults::ACTIVE_SERIES_WINDOW,
    );
    if window < Duration::from_secs(1) {
        p.bad(
            "active_series_window",
            humantime::format_duration(window),
            "must be at least 1s",
        );
    }
    match s.max_active_series? {
        0 => {
            p.bad(
                "max_active_series",
                0,
                "must be greater than zero (leave it unset for no budget)",
            );
            None
        }
        max_active_series => Some(Budget {
            max_active_series,
            window,
        }),
    }
}

impl Route {
    /// The first (usually the only) destination.
    pub fn destination(&self) -> &Destination {
        &self.destinations[0]
    }
}

/// Whether `name` can name a route: `[a-z0-9][a-z0-9_-]*`, so it is a safe directory name
/// and label value.
pub fn valid_route_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// The top-level keys that tell where data goes, which `routes` replaces.
fn top_level_destination(s: &Settings) -> Option<(&'static str, String)> {
    if let Some(u) = &s.ingestion_url {
        return Some(("ingestion_url", super::ingestion::redact_credentials(u)));
    }
    s.dce_endpoint.as_ref().map(|e| ("dce_endpoint", e.clone()))
}

/// The routes of `s` (checked), or `None` when `s` has no `routes` key and its one
/// destination is the route (the caller resolves it as before).
pub(super) fn resolve(
    s: &Settings,
    proxy: &crate::proxy::ProxyConfig,
    p: &mut Problems,
    notices: &mut Vec<String>,
) -> Option<Vec<Route>> {
    let list = s.routes.as_ref()?;
    if list.is_empty() {
        p.bad(
            "routes",
            "[]",
            "lists no route; remove the key to send everything to ingestion_url",
        );
        return Some(Vec::new());
    }
    if let Some((key, value)) = top_level_destination(s) {
        p.bad(key, value, "is given with routes: each route names its own ingestion_url (or dce_endpoint), so this one would be ignored; move it into a route (e.g. one named default without match, last)");
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut routes = Vec::with_capacity(list.len());
    for (i, r) in list.iter().enumerate() {
        let at = |key: &str| format!("routes[{i}].{key}");
        let name = match r.name.as_deref() {
            None => {
                p.bad(&at("name"), "", "required");
                None
            }
            Some(n) if !valid_route_name(n) => {
                p.bad(&at("name"), n, "must match [a-z0-9][a-z0-9_-]* (it becomes a directory under queue_dir and the route label)");
                None
            }
            Some(n) if RESERVED.contains(&n) || n.starts_with("shard-") => {
                p.bad(
                    &at("name"),
                    n,
                    "is reserved: the disk queue keeps its own files under queue_dir by this name",
                );
                None
            }
            Some(n) if !seen.insert(n.to_string()) => {
                p.bad(&at("name"), n, "another route has this name");
                None
            }
            Some(n) => Some(n.to_string()),
        };
        let selector = r.matches.as_deref().and_then(|m| {
            promlink_relabel::Selector::parse(m)
                .map_err(|e| p.bad(&at("match"), m, e.to_string()))
                .ok()
        });
        let relabel = compile_rules(
            r.write_relabel_configs.as_deref(),
            &at("write_relabel_configs"),
            p,
        );
        let urls: Vec<Option<String>> = match (&r.ingestion_urls, &r.ingestion_url, &r.dce_endpoint)
        {
            (Some(urls), None, None) if !urls.is_empty() => {
                urls.iter().cloned().map(Some).collect()
            }
            (Some(_), None, None) => {
                p.bad(
                    &at("ingestion_urls"),
                    "",
                    "is empty; list the ingestion URLs to spread over",
                );
                Vec::new()
            }
            (Some(urls), _, _) => {
                p.bad(
                    &at("ingestion_urls"),
                    urls.join(","),
                    "give either ingestion_urls or ingestion_url (or dce_endpoint), not both",
                );
                Vec::new()
            }
            (None, _, _) => vec![None],
        };
        let mut own = Problems::default();
        let budget = budget(&r.over(s, name.as_deref(), 0), &mut own);
        let canary = super::canary::resolve(&r.over(s, name.as_deref(), 0), &mut own);
        let workspace = super::workspace::resolve(&r.over(s, name.as_deref(), 0), &mut own);
        for problem in own.0 {
            rename(problem, r, &at, p);
        }
        let mut destinations = Vec::with_capacity(urls.len());
        for (part, url) in urls.iter().enumerate() {
            let mut merged = r.over(s, name.as_deref(), part);
            if let Some(u) = url {
                merged.ingestion_url = Some(u.clone());
            }
            let batch = destination::batch(&merged, &mut Problems::default());
            let mut own = Problems::default();
            let resolved = destination::resolve(&merged, batch, proxy, &mut own, notices);
            for problem in own.0 {
                let problem = if url.is_some() && problem.key == "ingestion_url" {
                    Problem {
                        key: format!("ingestion_urls[{part}]"),
                        ..problem
                    }
                } else {
                    problem
                };
                rename(problem, r, &at, p);
            }
            destinations.extend(resolved);
        }
        if let (Some(name), true) = (name, !urls.is_empty() && destinations.len() == urls.len()) {
            routes.push(Route {
                name,
                selector,
                continue_: r.continue_.unwrap_or(false),
                relabel,
                budget,
                destinations,
                canary,
                workspace,
            });
        }
    }
    if let Some(last) = list
        .iter()
        .rposition(|r| r.matches.is_none() && r.continue_ != Some(true))
    {
        if last + 1 < list.len() {
            p.bad(
                &format!("routes[{}].match", last + 1),
                list[last + 1].matches.clone().unwrap_or_default(),
                format!(
                    "is never reached: routes[{last}] has no match and takes every series (give it a match, set continue: true, or move it last)"
                ),
            );
        }
    }
    Some(routes)
}

/// Records a problem found in a route's merged settings: under the route's key when the route
/// set it, else under the top-level key (once).
fn rename(problem: Problem, r: &RouteSettings, at: &impl Fn(&str) -> String, p: &mut Problems) {
    let url_key = matches!(
        problem.key.as_str(),
        "ingestion_url" | "dce_endpoint" | "dcr_id" | "stream"
    ) || problem.key.starts_with("ingestion_urls");
    let problem = if url_key || r.sets(&problem.key) {
        Problem {
            key: at(&problem.key),
            ..problem
        }
    } else {
        problem
    };
    if !p.0.contains(&problem) {
        p.0.push(problem);
    }
}

/// `write_relabel_configs` at `key`, compiled, with the cache of their outcomes; `None` when
/// empty or invalid (problems say why).
pub(super) fn compile_rules(
    configs: Option<&[promlink_relabel::RelabelConfig]>,
    key: &str,
    p: &mut Problems,
) -> Option<Arc<promlink_codec::Relabel>> {
    match promlink_relabel::Rules::compile(configs.unwrap_or_default()) {
        Ok(rules) if rules.is_empty() => None,
        Ok(rules) => Some(Arc::new(promlink_codec::Relabel::new(rules))),
        Err(problems) => {
            for e in problems {
                p.bad(&format!("{key}{}", e.key), e.value, e.why);
            }
            None
        }
    }
}

impl RouteSettings {
    /// The top-level settings `s` with this route's keys over them; the route's queue is
    /// `queue_dir/<name>`, and that of its `part`-th URL of `ingestion_urls` after the first
    /// `queue_dir/<name>.<part>` (a name no route can have).
    fn over(&self, s: &Settings, name: Option<&str>, part: usize) -> Settings {
        let mut m = s.clone();
        macro_rules! set {
            ($($f:ident),* $(,)?) => { $( if let Some(v) = &self.$f { m.$f = Some(v.clone()); } )* };
        }
        set!(
            ingestion_url,
            dce_endpoint,
            dcr_id,
            stream,
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
            private_link,
            dns_server,
            expected_endpoint_ip,
            max_samples_per_request,
            max_bytes_per_request,
            flush_interval,
            shards,
            queue_max_bytes,
            max_requests_per_minute,
            max_active_series,
            active_series_window,
            query_url,
            query_token_scope,
            query_private_link,
            workspace_active_series_limit,
            workspace_events_per_minute_limit,
            dcr_requests_per_minute_limit,
        );
        let name = name.unwrap_or("invalid");
        m.queue_dir = s.queue_dir.as_ref().map(|d| match part {
            0 => d.join(name),
            n => d.join(format!("{name}.{n}")),
        });
        m
    }

    /// Whether the route sets the key `key` itself.
    fn sets(&self, key: &str) -> bool {
        match key {
            "ingestion_url" => self.ingestion_url.is_some(),
            "dce_endpoint" => self.dce_endpoint.is_some(),
            "dcr_id" => self.dcr_id.is_some(),
            "stream" => self.stream.is_some(),
            "identity" => self.identity.is_some(),
            "cloud" => self.cloud.is_some(),
            "tenant_id" => self.tenant_id.is_some(),
            "client_id" => self.client_id.is_some(),
            "client_secret_file" => self.client_secret_file.is_some(),
            "client_certificate_path" => self.client_certificate_path.is_some(),
            "federated_token_file" => self.federated_token_file.is_some(),
            "token_file" => self.token_file.is_some(),
            "authority_host" => self.authority_host.is_some(),
            "token_scope" => self.token_scope.is_some(),
            "private_link" => self.private_link.is_some(),
            "dns_server" => self.dns_server.is_some(),
            "expected_endpoint_ip" => self.expected_endpoint_ip.is_some(),
            "max_samples_per_request" => self.max_samples_per_request.is_some(),
            "max_bytes_per_request" => self.max_bytes_per_request.is_some(),
            "flush_interval" => self.flush_interval.is_some(),
            "shards" => self.shards.is_some(),
            "queue_max_bytes" => self.queue_max_bytes.is_some(),
            "max_requests_per_minute" => self.max_requests_per_minute.is_some(),
            "max_active_series" => self.max_active_series.is_some(),
            "active_series_window" => self.active_series_window.is_some(),
            "query_url" => self.query_url.is_some(),
            "query_token_scope" => self.query_token_scope.is_some(),
            "query_private_link" => self.query_private_link.is_some(),
            "workspace_active_series_limit" => self.workspace_active_series_limit.is_some(),
            "workspace_events_per_minute_limit" => self.workspace_events_per_minute_limit.is_some(),
            "dcr_requests_per_minute_limit" => self.dcr_requests_per_minute_limit.is_some(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests;
