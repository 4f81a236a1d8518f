//! The canary's metrics (`promlink_canary_*`), one series per route; the `reason` of a failed
//! query is a closed set ([`super::QueryError::reason`]).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label set of the per-route canary metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// The route's name (`default` without `routes`).
    pub route: String,
}

/// Label set of [`Metrics::query_errors`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryErrorLabels {
    /// The route's name.
    pub route: String,
    /// Why the query failed ([`super::QueryError::reason`]).
    pub reason: &'static str,
}

/// Label set of [`Metrics::query_verdict`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    /// The route's name.
    pub route: String,
    /// A Private Link verdict.
    pub verdict: &'static str,
}

type LatencyFamily = Family<RouteLabel, Histogram, fn() -> Histogram>;

/// Metrics of the canary. Cheap to clone: every field shares its value.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Seconds from a canary's write (into the route's queue) until a query saw it.
    pub latency: LatencyFamily,
    /// When a canary was last seen through the query endpoint, Unix seconds.
    pub last_visible: Family<RouteLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Canaries not visible within `canary_timeout`.
    pub missing: Family<RouteLabel, Counter>,
    /// Canaries written into the route's queue.
    pub written: Family<RouteLabel, Counter>,
    /// Canaries the route's queue refused (full or failing): never written.
    pub write_errors: Family<RouteLabel, Counter>,
    /// Queries that failed, by reason.
    pub query_errors: Family<QueryErrorLabels, Counter>,
    /// The query endpoint's last DNS verdict (1 for the current one), under
    /// `query_private_link` `require` or `prefer`.
    pub query_verdict: Family<VerdictLabels, Gauge>,
}

fn latency_histogram() -> Histogram {
    Histogram::new([1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0])
}

impl Metrics {
    /// Creates the metrics for `routes` (every series exported from the start, at zero) and
    /// registers them in `registry` (promlink's, prefixed `promlink_`).
    pub fn register(registry: &mut Registry, routes: &[String]) -> Self {
        let m = Self {
            latency: Family::new_with_constructor(latency_histogram),
            last_visible: Family::default(),
            missing: Family::default(),
            written: Family::default(),
            write_errors: Family::default(),
            query_errors: Family::default(),
            query_verdict: Family::default(),
        };
        for route in routes {
            let l = RouteLabel {
                route: route.clone(),
            };
            let _ = m.latency.get_or_create(&l);
            let _ = m.last_visible.get_or_create(&l);
            let _ = m.missing.get_or_create(&l);
            let _ = m.written.get_or_create(&l);
            let _ = m.write_errors.get_or_create(&l);
            for reason in super::QueryError::REASONS {
                let _ = m.query_errors.get_or_create(&QueryErrorLabels {
                    route: route.clone(),
                    reason,
                });
            }
        }
        registry.register(
            "canary_latency_seconds",
            "Seconds from writing a canary sample into a route's queue until the workspace's query endpoint returned it",
            m.latency.clone(),
        );
        registry.register(
            "canary_last_visible_timestamp_seconds",
            "When a route's canary was last seen through the query endpoint, Unix seconds (0: never)",
            m.last_visible.clone(),
        );
        registry.register(
            "canary_missing",
            "Canaries not visible through the query endpoint within canary_timeout",
            m.missing.clone(),
        );
        registry.register(
            "canary_written",
            "Canary samples written into a route's queue",
            m.written.clone(),
        );
        registry.register(
            "canary_write_errors",
            "Canary samples a route's queue refused (full or failing)",
            m.write_errors.clone(),
        );
        registry.register(
            "canary_query_errors",
            "Canary queries to the query endpoint that failed, by reason (unauthorized, forbidden, dns, tls, connect, timeout, token, status, answer, private_link)",
            m.query_errors.clone(),
        );
        registry.register(
            "canary_query_private_link_verdict",
            "The query endpoint's last Private Link DNS verdict, 1 for the current one (query_private_link require or prefer)",
            m.query_verdict.clone(),
        );
        m
    }

    pub(super) fn route(route: &str) -> RouteLabel {
        RouteLabel {
            route: route.to_owned(),
        }
    }
}
