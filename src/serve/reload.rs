//! Configuration reloads (`SIGHUP`, `POST /-/reload`): the file is loaded again with the flags
//! and variables promlink started with. A valid file swaps the global and per-route relabel
//! rules, the route matchers and order, the series budgets and the request rates, without
//! touching a queue; a write in progress finishes with the routing it began with. A route the
//! file adds is launched (its queue, workers, metrics, alerts and checks); a route it removes
//! takes no more writes and its workers deliver what it holds (it stays launched until
//! shutdown, and taking it back in a later reload resumes it). Anything else that changed (a
//! route's destination, the listener, the queue settings...) takes effect only at a restart,
//! so such a file is refused as a whole, saying which keys, and the running configuration
//! stays. An invalid file is refused the same way. Every outcome is counted in
//! `promlink_config_reloads_total{result}`.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::codec::SeriesBudget;
use crate::config::{Config, Route};
use crate::queue::Queue;
use crate::receive::{ReceiveRoute, Receiver, Routing};
use crate::upstream::Upstream;

/// One destination of a running route.
pub(super) struct Running {
    pub(super) upstream: Arc<Upstream>,
    pub(super) queue: Arc<Queue>,
}

/// Reloads the configuration of a running promlink.
pub(super) struct Reloader {
    state: tokio::sync::Mutex<State>,
    launcher: Arc<super::launch::Launcher>,
    receiver: std::sync::Weak<Receiver>,
    metrics: Metrics,
}

struct State {
    /// The configuration running now.
    config: Config,
    /// The destinations of every launched route (removed ones included), by route name.
    destinations: HashMap<String, Vec<Running>>,
    /// Every launched route as it was launched (removed ones included), by name.
    launched: HashMap<String, Route>,
    /// Each route's series budget, by route name: kept across reloads, so what a route
    /// counted stays counted.
    budgets: HashMap<String, Arc<SeriesBudget>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// The reload metrics.
#[derive(Clone, Default)]
pub(super) struct Metrics {
    reloads: Family<ResultLabel, Counter>,
    last_successful: Gauge,
    last_success: Gauge,
}

impl Metrics {
    /// Creates the metrics and registers them.
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = Metrics::default();
        registry.register(
            "config_reloads",
            "Configuration reloads (SIGHUP, POST /-/reload), by result: success, or error (the file was invalid or changed keys that need a restart; the running configuration stays)",
            metrics.reloads.clone(),
        );
        registry.register(
            "config_last_reload_successful",
            "Whether the last configuration reload was applied (1 before any)",
            metrics.last_successful.clone(),
        );
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded or reloaded successfully, Unix seconds",
            metrics.last_success.clone(),
        );
        for result in ["success", "error"] {
            let _ = metrics.reloads.get_or_create(&ResultLabel { result });
        }
        metrics.last_successful.set(1);
        metrics.last_success.set(unix_now());
        metrics
    }
}

impl Reloader {
    /// A reloader of `config`, whose routes run `destinations` (by name) and route writes
    /// through `receiver`.
    pub(super) fn new(
        config: Config,
        destinations: HashMap<String, Vec<Running>>,
        receiver: &Arc<Receiver>,
        launcher: Arc<super::launch::Launcher>,
        metrics: Metrics,
    ) -> Self {
        let budgets = receiver
            .routing()
            .routes
            .iter()
            .filter_map(|r| Some((r.name.clone(), r.rule.budget.clone()?)))
            .collect();
        let launched = config
            .routes
            .iter()
            .map(|r| (r.name.clone(), r.clone()))
            .collect();
        Self {
            launcher,
            state: tokio::sync::Mutex::new(State {
                config,
                destinations,
                launched,
                budgets,
            }),
            receiver: Arc::downgrade(receiver),
            metrics,
        }
    }

    /// Loads the file again and applies it, or says why not (then nothing changed).
    pub(super) async fn reload(&self) -> Result<String, String> {
        let result = self.try_reload().await;
        let label = ResultLabel {
            result: if result.is_ok() { "success" } else { "error" },
        };
        self.metrics.reloads.get_or_create(&label).inc();
        match &result {
            Ok(done) => {
                self.metrics.last_successful.set(1);
                self.metrics.last_success.set(unix_now());
                tracing::info!(changes = %done, "configuration reloaded");
            }
            Err(why) => {
                self.metrics.last_successful.set(0);
                tracing::error!(error = %why, "configuration reload refused; the running configuration stays");
            }
        }
        result
    }

    async fn try_reload(&self) -> Result<String, String> {
        let mut state = self.state.lock().await;
        let source = state.config.reload.source.clone().ok_or_else(|| {
            "promlink was started without a configuration file (--config): there is nothing to reload".to_string()
        })?;
        let mut new = tokio::task::spawn_blocking(move || source.load())
            .await
            .map_err(|e| format!("loading the configuration panicked: {e}"))?
            .map_err(|e| e.to_string())?;
        let restart = needs_restart(&state.config, &new, &state.launched);
        if !restart.is_empty() {
            return Err(format!(
                "the file changes what only a restart applies: {}; nothing was changed",
                restart.join("; ")
            ));
        }
        let receiver = self
            .receiver
            .upgrade()
            .filter(|r| !r.shutting_down())
            .ok_or_else(|| "promlink is shutting down".to_string())?;
        // Routes never launched: open them all first, so a failure leaves nothing half done.
        let mut added = Vec::new();
        for route in &new.routes {
            if state.destinations.contains_key(&route.name) {
                continue;
            }
            let mut registry = Registry::with_prefix("promlink");
            let stages =
                super::routes::open_route(&new, route, &mut registry, &self.launcher.limits)
                    .await
                    .map_err(|e| format!("route {}: {e}; nothing was changed", route.name))?;
            added.push((route, stages, registry));
        }
        for (route, stages, registry) in added {
            for st in &stages {
                self.launcher.launch(st);
            }
            receiver.add_registry(registry);
            let running = stages
                .iter()
                .map(|st| Running {
                    upstream: st.sending.upstream.clone(),
                    queue: st.queue.clone(),
                })
                .collect();
            state.destinations.insert(route.name.clone(), running);
            state.launched.insert(route.name.clone(), route.clone());
        }
        let changes = describe(&state.config, &new);
        let mut routes = Vec::with_capacity(new.routes.len());
        let mut budgets = HashMap::new();
        for route in &new.routes {
            let running = &state.destinations[&route.name];
            for (d, r) in route.destinations.iter().zip(running) {
                r.upstream
                    .set_max_requests_per_minute(d.upstream.max_requests_per_minute);
            }
            let budget = route.budget.map(|b| {
                let budget =
                    state.budgets.get(&route.name).cloned().unwrap_or_else(|| {
                        Arc::new(SeriesBudget::new(b.max_active_series, b.window))
                    });
                budget.set_limits(b.max_active_series, b.window);
                budgets.insert(route.name.clone(), budget.clone());
                budget
            });
            routes.push(ReceiveRoute {
                name: route.name.clone(),
                rule: super::routes::rule_of(route, budget),
                queues: running.iter().map(|r| r.queue.clone()).collect(),
            });
        }
        // The series cache stays warm (its bound needs a restart: the receiver's limits).
        new.receive.codec.series_cache = state.config.receive.codec.series_cache.clone();
        receiver.set_routing(Routing::new(new.receive.codec.clone(), routes));
        state.budgets = budgets;
        state.config = new;
        Ok(changes)
    }
}

#[async_trait::async_trait]
impl crate::receive::Reload for Reloader {
    async fn reload(&self) -> Result<String, String> {
        Reloader::reload(self).await
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// What `new` changes of `old` that a reload cannot apply, one entry per key group.
/// `launched`: every route launched so far (a route removed earlier still runs with its
/// destination, so taking it back must not change that).
fn needs_restart(old: &Config, new: &Config, launched: &HashMap<String, Route>) -> Vec<String> {
    let mut keys = Vec::new();
    let differ =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let without_rules = |c: &Config| {
        let mut r = c.receive.clone();
        r.codec.relabel = None;
        r
    };
    for (name, changed) in [
        ("listen", differ(&old.listen, &new.listen)),
        (
            "the receiver's TLS, authentication or connection limits",
            differ(&old.inbound, &new.inbound),
        ),
        (
            "the receiver's limits (body sizes, label limits, cluster, queue_full_status, series_cache_bytes)",
            differ(&without_rules(old), &without_rules(new)),
        ),
        ("readiness", differ(&old.readiness, &new.readiness)),
        ("shutdown", differ(&old.shutdown, &new.shutdown)),
        (
            "alertmanager_url or alert_resend_interval",
            differ(&old.alert, &new.alert),
        ),
        ("the egress proxy variables", differ(&old.proxy, &new.proxy)),
        (
            "log_format or log_level",
            old.log_format != new.log_format || old.log_level != new.log_level,
        ),
        (
            "enable_reload_endpoint",
            old.reload.endpoint != new.reload.endpoint,
        ),
        ("routes (with or without)", old.routed != new.routed),
        (
            "the canary (query_url, canary_interval, canary_timeout, query_token_scope)",
            differ(&old.canary, &new.canary)
                || new.routes.iter().any(|r| {
                    old.routes
                        .iter()
                        .find(|o| o.name == r.name)
                        .is_some_and(|o| differ(&o.canary, &r.canary))
                }),
        ),
        (
            "the workspace limits (workspace_active_series_limit, workspace_events_per_minute_limit, dcr_requests_per_minute_limit)",
            new.routes.iter().any(|r| {
                old.routes
                    .iter()
                    .find(|o| o.name == r.name)
                    .is_some_and(|o| o.workspace != r.workspace)
            }),
        ),
    ] {
        if changed {
            keys.push(name.to_string());
        }
    }
    for route in &new.routes {
        let (was, removed) = match old.routes.iter().find(|r| r.name == route.name) {
            Some(was) => (was, false),
            None => match launched.get(&route.name) {
                Some(was) => (was, true),
                None => continue,
            },
        };
        let how = if removed {
            " (removed by an earlier reload, it still delivers what it holds with its old destination)"
        } else {
            ""
        };
        keys.extend(
            destination_changes(was, route)
                .into_iter()
                .map(|what| format!("route {}: {what}{how}", route.name)),
        );
    }
    keys
}

/// How the destinations of a route changed, beyond its rates.
fn destination_changes(old: &Route, new: &Route) -> Vec<&'static str> {
    if old.destinations.len() != new.destinations.len() {
        return vec!["ingestion_urls (their number)"];
    }
    let mut what = Vec::new();
    for (a, b) in old.destinations.iter().zip(&new.destinations) {
        let mut a_up = a.upstream.clone();
        a_up.max_requests_per_minute = b.upstream.max_requests_per_minute;
        for (name, changed) in [
            (
                "its URL, TLS, batching or retry keys",
                format!("{a_up:?}") != format!("{:?}", b.upstream),
            ),
            (
                "its identity",
                format!("{:?}", a.identity) != format!("{:?}", b.identity),
            ),
            (
                "private_link, dns_server or expected_endpoint_ip",
                format!("{:?}", a.private_link) != format!("{:?}", b.private_link),
            ),
            (
                "its queue keys",
                format!("{:?}", a.queue) != format!("{:?}", b.queue),
            ),
            ("shards", a.shards != b.shards),
        ] {
            if changed && !what.contains(&name) {
                what.push(name);
            }
        }
    }
    what
}

/// What a reload from `old` to `new` changes, in words.
fn describe(old: &Config, new: &Config) -> String {
    let mut changes = Vec::new();
    let rules = |c: &Config| format!("{:?}", c.receive.codec.relabel);
    if rules(old) != rules(new) {
        changes.push("write_relabel_configs".to_string());
    }
    let order = |c: &Config| -> Vec<String> { c.routes.iter().map(|r| r.name.clone()).collect() };
    let (before, after) = (order(old), order(new));
    for name in after.iter().filter(|n| !before.contains(n)) {
        changes.push(format!("route {name} added"));
    }
    for name in before.iter().filter(|n| !after.contains(n)) {
        changes.push(format!("route {name} removed (it delivers what it holds)"));
    }
    let kept = |names: &[String], other: &[String]| -> Vec<String> {
        names
            .iter()
            .filter(|n| other.contains(n))
            .cloned()
            .collect()
    };
    if kept(&before, &after) != kept(&after, &before) {
        changes.push("the order of the routes".to_string());
    }
    for route in &new.routes {
        let Some(was) = old.routes.iter().find(|r| r.name == route.name) else {
            continue;
        };
        let mut what = Vec::new();
        if format!("{:?}", was.selector) != format!("{:?}", route.selector) {
            what.push("match");
        }
        if was.continue_ != route.continue_ {
            what.push("continue");
        }
        if format!("{:?}", was.relabel) != format!("{:?}", route.relabel) {
            what.push("write_relabel_configs");
        }
        if was.budget != route.budget {
            what.push("max_active_series or active_series_window");
        }
        let rate = |r: &Route| -> Vec<Option<u32>> {
            r.destinations
                .iter()
                .map(|d| d.upstream.max_requests_per_minute)
                .collect()
        };
        if rate(was) != rate(route) {
            what.push("max_requests_per_minute");
        }
        if !what.is_empty() {
            changes.push(format!("route {}: {}", route.name, what.join(", ")));
        }
    }
    if changes.is_empty() {
        "nothing changed".into()
    } else {
        changes.join("; ")
    }
}
