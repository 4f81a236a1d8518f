//! One sending side and one queue per destination of a route: its identity, Private Link
//! verification, upstream client, queue and shard workers. Without `routes` there is one,
//! named `default`, and its metrics carry no `route` label (as before routes existed); with
//! `routes`, each route's stage metrics are registered under `route="<name>"`, and those of a
//! route spreading over `ingestion_urls` also under `url="<its URL without query>"`.

use std::sync::Arc;

use prometheus_client::registry::Registry;

use super::{Sending, ServeError};
use crate::config::{Config, Route};
use crate::queue::Queue;

/// The stages of one destination of a route.
pub(super) struct RouteStage {
    /// The route's name.
    pub(super) name: String,
    /// Its URL (without query) when the route spreads over several: what tells its
    /// destinations apart in metrics, alerts and `/status`.
    pub(super) url: Option<String>,
    /// Its identity, Private Link stage and upstream client.
    pub(super) sending: Sending,
    /// Its queue.
    pub(super) queue: Arc<Queue>,
    /// Its queue's metrics.
    pub(super) queue_metrics: crate::queue::Metrics,
    /// Its shard count.
    pub(super) shards: usize,
    /// Set by the canary while its latest canary is missing (read by the alert rules).
    pub(super) canary: crate::canary::NotVisible,
    /// The route's workspace (shared by its destinations), and whether this destination's
    /// alert rules watch it (the route's first destination).
    pub(super) workspace: (Arc<crate::workspace::Workspace>, bool),
    /// Requests to this destination's URL against the DCR's limit.
    pub(super) dcr: Arc<crate::workspace::DcrMeter>,
}

/// Sets up every route of `cfg`, each with its own registry scope, and opens their queues.
/// A queue written without routes is moved to the `default` route's directory first (or the
/// start is refused, saying what to do).
/// Also returns the queues under `queue_dir` that no configured route uses (see
/// [`report_stranded_queues`]).
pub(super) async fn open(
    cfg: &Config,
    registry: &mut Registry,
    limits: &crate::workspace::Metrics,
) -> Result<(Vec<RouteStage>, Vec<(String, u64)>), ServeError> {
    let mut stranded = Vec::new();
    if cfg.routed {
        adopt_single_route_queue(cfg).await?;
        stranded = report_stranded_queues(cfg, registry);
    }
    let mut stages = Vec::with_capacity(cfg.routes.len());
    for route in &cfg.routes {
        stages.extend(open_route(cfg, route, registry, limits).await?);
    }
    Ok((stages, stranded))
}

/// Sets up the stages of `route`'s destinations (at start, or when a reload adds it), their
/// metrics registered in `registry` (its workspace's and DCRs' in `limits`).
pub(super) async fn open_route(
    cfg: &Config,
    route: &Route,
    registry: &mut Registry,
    limits: &crate::workspace::Metrics,
) -> Result<Vec<RouteStage>, ServeError> {
    let spread = route.destinations.len() > 1;
    let mut stages = Vec::with_capacity(route.destinations.len());
    let workspace = Arc::new(crate::workspace::Workspace::new(
        &route.name,
        route.workspace,
        limits,
    ));
    for (i, d) in route.destinations.iter().enumerate() {
        let url = spread.then(|| super::redacted_url(&d.upstream.url));
        let scope = match (cfg.routed, &url) {
            (false, _) => &mut *registry,
            (true, None) => {
                registry.sub_registry_with_label(("route".into(), route.name.clone().into()))
            }
            (true, Some(url)) => registry
                .sub_registry_with_label(("route".into(), route.name.clone().into()))
                .sub_registry_with_label(("url".into(), url.clone().into())),
        };
        let dcr = Arc::new(crate::workspace::DcrMeter::new(
            &super::redacted_url(&d.upstream.url),
            route.workspace.dcr_requests_per_minute,
            limits,
        ));
        let limits = (workspace.clone(), i == 0, dcr);
        stages.push(open_one(cfg, route, d, url, scope, limits).await?);
    }
    Ok(stages)
}

/// What the receiver needs of the routes: each route's rule, and the queues of its
/// destinations (`stages`, as [`open`] made them, in order).
pub(super) fn receive_routes(
    cfg: &Config,
    stages: &[RouteStage],
) -> Vec<crate::receive::ReceiveRoute> {
    let mut stages = stages.iter();
    cfg.routes
        .iter()
        .map(|route| crate::receive::ReceiveRoute {
            name: route.name.clone(),
            rule: rule_of(
                route,
                route.budget.map(|b| {
                    Arc::new(crate::codec::SeriesBudget::new(
                        b.max_active_series,
                        b.window,
                    ))
                }),
            ),
            queues: stages
                .by_ref()
                .take(route.destinations.len())
                .map(|st| st.queue.clone())
                .collect(),
        })
        .collect()
}

/// What the decoder needs of `route`, with its series budget.
pub(super) fn rule_of(
    route: &Route,
    budget: Option<Arc<crate::codec::SeriesBudget>>,
) -> crate::codec::RouteRule {
    crate::codec::RouteRule {
        selector: route.selector.clone(),
        continue_: route.continue_,
        relabel: route.relabel.clone(),
        limits: route.destination().upstream.batch,
        spread: route.destinations.len(),
        budget,
    }
}

async fn open_one(
    cfg: &Config,
    route: &Route,
    d: &crate::config::Destination,
    url: Option<String>,
    registry: &mut Registry,
    (workspace, lead, dcr): (
        Arc<crate::workspace::Workspace>,
        bool,
        Arc<crate::workspace::DcrMeter>,
    ),
) -> Result<RouteStage, ServeError> {
    if cfg.routed {
        tracing::info!(
            route = %route.name,
            r#match = %route.selector.as_ref().map(ToString::to_string).unwrap_or_else(|| "(every series)".into()),
            r#continue = route.continue_,
            rules = route.relabel.as_ref().map_or(0, |r| r.len()),
            upstream = %super::redacted_url(&d.upstream.url),
            "route"
        );
    }
    let sending = Sending::new(d, registry)?;
    sending
        .upstream
        .attach_limits(workspace.clone(), dcr.counter());
    let queue = Arc::new(crate::queue::open(&d.queue).await?);
    let queue_metrics = crate::queue::Metrics::register(registry, &queue);
    Ok(RouteStage {
        name: route.name.clone(),
        url,
        sending,
        queue,
        queue_metrics,
        shards: d.shards,
        canary: crate::canary::NotVisible::default(),
        workspace: (workspace, lead),
        dcr,
    })
}

/// Moves a queue left in `queue_dir` by a promlink without routes to the `default` route.
async fn adopt_single_route_queue(cfg: &Config) -> Result<(), ServeError> {
    let Some(top) = cfg
        .routes
        .first()
        .and_then(|r| r.destination().queue.disk.as_ref())
        .and_then(|d| d.dir.parent())
        .map(std::path::Path::to_path_buf)
    else {
        return Ok(());
    };
    let names: Vec<String> = cfg.routes.iter().map(|r| r.name.clone()).collect();
    tokio::task::spawn_blocking(move || {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        crate::queue::disk::relocate::adopt_single_route_queue(
            &top,
            crate::config::DEFAULT_ROUTE,
            &names,
        )
    })
    .await
    .map_err(|e| {
        ServeError::Queue(crate::queue::DiskQueueError::Config(format!(
            "moving the queue panicked: {e}"
        )))
    })??;
    Ok(())
}

/// Logs every queue under `queue_dir` that no configured destination uses (a route, or an
/// `ingestion_urls` entry, removed from the configuration): nothing delivers it now. Each is
/// also exported as `promlink_queue_stranded_bytes{directory}`, and returned for
/// `PromlinkQueueStranded`.
fn report_stranded_queues(cfg: &Config, registry: &mut Registry) -> Vec<(String, u64)> {
    let dirs: Vec<&std::path::Path> = cfg
        .routes
        .iter()
        .flat_map(|r| &r.destinations)
        .filter_map(|d| d.queue.disk.as_ref().map(|q| q.dir.as_path()))
        .collect();
    let Some(top) = dirs.first().and_then(|d| d.parent()) else {
        return Vec::new();
    };
    let in_use: Vec<String> = dirs
        .iter()
        .filter_map(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    let stranded = match crate::queue::disk::relocate::stranded_queues(top, &in_use) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(queue_dir = %top.display(), error = %e, "cannot look for queues of removed routes");
            return Vec::new();
        }
    };
    let gauge = prometheus_client::metrics::family::Family::<
        Vec<(String, String)>,
        prometheus_client::metrics::gauge::Gauge,
    >::default();
    registry.register(
        "queue_stranded_bytes",
        "Bytes on disk of a queue under queue_dir that no configured route uses (a removed route or ingestion_urls entry): nothing delivers it; deliver it with promlink drain",
        gauge.clone(),
    );
    let mut found = Vec::with_capacity(stranded.len());
    for (dir, bytes) in stranded {
        tracing::error!(
            directory = %dir.display(),
            bytes,
            "a queue of a route no longer configured (or of a URL removed from ingestion_urls) is not delivered: add the route back, or deliver it with `promlink drain --queue-dir {} --ingestion-url <the URL it was for>`",
            dir.display()
        );
        gauge
            .get_or_create(&vec![("directory".to_string(), dir.display().to_string())])
            .set(bytes as i64);
        found.push((dir.display().to_string(), bytes));
    }
    found
}
