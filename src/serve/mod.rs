//! `promlink serve`: wires the stages together and runs them until shutdown.
//!
//! receive -> queue -> upstream shard workers, with the token provider, private-link verifier
//! and alert rules beside them. On shutdown ([`crate::shutdown`]) the receiver first keeps
//! accepting writes while telling senders to move on (`/ready` fails, `Connection: close`,
//! GOAWAY), until writes go quiet for `shutdown_quiet_period` or two thirds of `shutdown_grace`
//! have passed; then it refuses new writes (retryable 503), in-flight requests get until the
//! deadline (`shutdown_grace` from the signal) to finish, the queue is closed so partial batches
//! leave at once, and the workers deliver until the same deadline. What is still undelivered
//! then stays in the disk queue for the next start, or, with the memory queue, is dropped and
//! counted (`samples_dropped{reason="shutdown"}`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::identity::{IdentityKind, TokenProvider};
use crate::privatelink::PrivateLink;
use crate::queue::Queue;
use crate::receive::Receiver;
use crate::upstream::{Health, Upstream};

mod alerts;
mod launch;
mod reload;
mod routes;
use alerts::evaluate_alerts;

/// Errors starting promlink. Each names the part that failed; the cause is its `source()`, so
/// print the whole chain (`{:#}` through anyhow, or [`crate::outbound::error_chain`]).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The identity could not be set up.
    #[error("identity")]
    Identity(#[from] crate::identity::Error),
    /// The upstream client could not be set up.
    #[error(transparent)]
    Upstream(#[from] crate::upstream::UpstreamError),
    /// The Alertmanager client could not be set up.
    #[error("alerting")]
    Alert(#[from] crate::alert::AlertError),
    /// The canary read-back could not be set up.
    #[error(transparent)]
    Canary(#[from] crate::canary::CanaryError),
    /// The disk queue could not be opened.
    #[error(transparent)]
    Queue(#[from] crate::queue::DiskQueueError),
    /// Private-link verification could not be set up.
    #[error("private link")]
    PrivateLink(#[from] crate::privatelink::path::PathError),
    /// The receiver's TLS files could not be loaded.
    #[error("receiver TLS")]
    Tls(#[from] crate::receive::tls::TlsLoadError),
    /// The sender token file could not be loaded.
    #[error("receiver authentication")]
    Auth(#[from] crate::receive::auth::TokenFileError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Says, once at start, how each outbound destination is reached when an egress proxy is set.
fn log_egress_routes(cfg: &Config) {
    if !cfg.proxy.is_set() {
        return;
    }
    let mut targets = vec![("upstream", &cfg.destination.upstream.url)];
    if !matches!(
        cfg.destination.identity.kind,
        IdentityKind::None | IdentityKind::TokenFile
    ) {
        targets.push(("entra authority", &cfg.destination.identity.authority_host));
    }
    targets.extend(
        cfg.alert
            .alertmanager_urls
            .iter()
            .map(|u| ("alertmanager", u)),
    );
    for (what, url) in targets {
        let route = cfg.proxy.route(url);
        tracing::info!(target_kind = what, host = url.host_str().unwrap_or_default(), route = %route, "egress route");
    }
}

/// A running promlink.
pub struct Running {
    /// The address the receiver listens on.
    pub local_addr: SocketAddr,
    /// Cancel to start a graceful shutdown.
    pub shutdown: CancellationToken,
    /// The token provider (state for the demo's view and tests).
    pub identity: TokenProvider,
    /// Upstream health (for the demo's view and tests).
    pub health: Arc<Health>,
    /// Private-link state (for the demo's view and tests).
    pub private_link: Arc<PrivateLink>,
    /// Alert state (for the demo's view and tests).
    pub alerter: Arc<crate::alert::Alerter>,
    /// The metrics registry.
    pub registry: Arc<Registry>,
    reloader: Arc<reload::Reloader>,
    task: JoinHandle<()>,
}

impl Running {
    /// Reloads the configuration file (what `SIGHUP` does): what changed, or why nothing did.
    ///
    /// # Errors
    /// Why the file was not applied (invalid, or changing what only a restart applies).
    pub async fn reload(&self) -> Result<String, String> {
        self.reloader.reload().await
    }

    /// Reloads the configuration file at every `SIGHUP`, as Prometheus does (for the
    /// `promlink serve` process: a test calls [`Running::reload`] instead).
    pub fn reload_on_sighup(&self) {
        let reloader = self.reloader.clone();
        tokio::spawn(async move {
            let kind = tokio::signal::unix::SignalKind::hangup();
            let mut hup = match tokio::signal::unix::signal(kind) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGHUP: reload with POST /-/reload instead");
                    return;
                }
            };
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the configuration");
                // The outcome is logged and counted by the reloader.
                let _ = reloader.reload().await;
            }
        });
    }

    /// Waits until promlink has shut down.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Starts every stage and returns once the receiver listens.
///
/// # Errors
/// When the identity or upstream cannot be set up, or the address cannot be bound.
pub async fn start(cfg: Config) -> Result<Running, ServeError> {
    let mut registry = Registry::with_prefix("promlink");
    let receive_metrics = crate::receive::Metrics::register(&mut registry);
    log_start(&cfg);
    let limits = crate::workspace::Metrics::register(&mut registry);
    let (stages, stranded) = routes::open(&cfg, &mut registry, &limits).await?;
    let alert_metrics = crate::alert::Metrics::register(&mut registry);

    let inbound = &cfg.inbound;
    let tls = match &inbound.tls {
        Some(files) => Some(Arc::new(crate::receive::tls::Reloader::new(
            files.clone(),
            receive_metrics.clone(),
        )?)),
        None => None,
    };
    let auth = Arc::new(crate::receive::auth::Auth::new(
        inbound.auth.clone(),
        receive_metrics.clone(),
    )?);
    let (listener, local_addr) = bind(cfg.listen).await?;

    let shutdown = CancellationToken::new();
    let background = CancellationToken::new();
    let abort = CancellationToken::new();
    let launcher = Arc::new(launch::Launcher::new(
        background.clone(),
        abort.clone(),
        cfg.readiness,
        cfg.routed,
        receive_metrics.tls_cert_not_after.clone(),
        stranded,
        limits,
    ));
    for st in &stages {
        launcher.launch(st);
    }
    let mut reloaders = vec![tokio::spawn(
        auth.clone()
            .run(inbound.reload_interval, background.clone()),
    )];
    if let Some(tls) = &tls {
        reloaders.push(tokio::spawn(
            tls.clone().run(inbound.reload_interval, background.clone()),
        ));
    }
    let instance = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| local_addr.to_string());
    let canary = match cfg.routes.iter().find_map(|r| r.canary.as_ref()) {
        Some(settings) => Some(tokio::spawn(
            canary(&cfg, settings, &stages, instance.clone(), &mut registry)?
                .run(shutdown.clone(), background.clone()),
        )),
        None => None,
    };
    let alerter = Arc::new(crate::alert::Alerter::new(
        cfg.alert.alertmanager_urls.clone(),
        cfg.alert.resend_interval,
        instance,
        cfg.destination.upstream.ca_file.as_deref(),
        &cfg.proxy,
        alert_metrics,
    )?);
    let alert_poster = alerter.clone().spawn(background.clone());
    let alert_rules = tokio::spawn(evaluate_alerts(
        launcher.alerts.clone(),
        alerter.clone(),
        background.clone(),
    ));

    let reload_metrics = reload::Metrics::register(&mut registry);
    let registry = Arc::new(registry);
    let checks = Box::new(crate::health::RouteChecks(launcher.checks.clone()));
    let receiver = Arc::new(Receiver::new(
        cfg.receive.clone(),
        routes::receive_routes(&cfg, &stages),
        receive_metrics.clone(),
        checks,
        registry.clone(),
        auth.clone(),
    ));
    receiver.set_cardinality(launcher.limits.cardinality());
    let mut destinations: std::collections::HashMap<String, Vec<reload::Running>> =
        std::collections::HashMap::new();
    for st in &stages {
        destinations
            .entry(st.name.clone())
            .or_default()
            .push(reload::Running {
                upstream: st.sending.upstream.clone(),
                queue: st.queue.clone(),
            });
    }
    let reloader = Arc::new(reload::Reloader::new(
        cfg.clone(),
        destinations,
        &receiver,
        launcher.clone(),
        reload_metrics,
    ));
    if cfg.reload.endpoint {
        receiver.enable_reload(reloader.clone());
    }
    let app = receiver.clone().router();
    log_listening(&cfg, local_addr);
    let listener_cfg = inbound.listener.clone();

    let first = &stages[0];
    let (identity, health, private_link) = (
        first.sending.identity.clone(),
        first.sending.upstream.health(),
        first.sending.private_link.clone(),
    );
    // Stopped, in this order, once the workers are done: everything that runs beside them.
    let mut background_tasks = reloaders;
    background_tasks.extend([alert_rules, alert_poster]);
    background_tasks.extend(canary);
    let signal = shutdown.clone();
    let grace = cfg.shutdown.grace;
    let quiet = cfg.shutdown.quiet_period;
    let task = tokio::spawn(async move {
        let close = CancellationToken::new();
        let server = crate::receive::listener::serve(
            listener,
            app,
            tls,
            listener_cfg,
            receive_metrics,
            signal.clone(),
            close.clone(),
        );
        let deadline =
            receive_until_stopped(server, &signal, &close, &receiver, grace, quiet).await;
        let launched = launcher.take();
        deliver_until(&launched.queues, launched.workers, deadline, grace, &abort).await;
        background.cancel();
        for t in launched.tasks.into_iter().chain(background_tasks) {
            let _ = t.await;
        }
        tracing::info!("promlink stopped");
    });
    Ok(Running {
        local_addr,
        shutdown,
        identity,
        health,
        private_link,
        alerter,
        registry,
        reloader,
        task,
    })
}

/// The canary of every destination of every route with a `query_url` (`stages`, in the order
/// [`routes::open`] made them), written every `settings.interval` (the top level's), its
/// metrics registered in `registry`.
fn canary(
    cfg: &Config,
    settings: &crate::config::CanarySettings,
    stages: &[routes::RouteStage],
    instance: String,
    registry: &mut Registry,
) -> Result<crate::canary::Canary, ServeError> {
    let mut targets = Vec::with_capacity(stages.len());
    let mut stage = stages.iter();
    for route in &cfg.routes {
        let spread = route.destinations.len() > 1;
        for (i, d) in route.destinations.iter().enumerate() {
            let Some(st) = stage.next() else { break };
            let Some(route_settings) = &route.canary else {
                continue;
            };
            targets.push(crate::canary::Target {
                settings: route_settings.clone(),
                route: route.name.clone(),
                destination: spread.then_some(i),
                queue: st.queue.clone(),
                identity: d.identity.clone(),
                not_visible: st.canary.clone(),
                acks: st.sending.upstream.canary_acks(),
            });
        }
    }
    let names: Vec<String> = cfg
        .routes
        .iter()
        .filter(|r| r.canary.is_some())
        .map(|r| r.name.clone())
        .collect();
    let metrics = crate::canary::Metrics::register(registry, &names);
    tracing::info!(routes = ?names, interval = %humantime::format_duration(settings.interval), "canary: writing a sample through each route with a query_url and reading it back there");
    Ok(crate::canary::Canary::new(
        settings.clone(),
        instance,
        cfg.receive.codec.cluster.clone(),
        cfg.destination.upstream.ca_file.as_deref(),
        &cfg.proxy,
        targets,
        metrics,
    )?)
}

/// What the operator should know at start, once whatever the routes.
fn log_start(cfg: &Config) {
    for notice in &cfg.notices {
        tracing::warn!("{notice}");
    }
    log_egress_routes(cfg);
    if cfg.routed {
        tracing::info!(
            routes = cfg.routes.len(),
            "routes: each series goes to the first route whose match selects it"
        );
    }
}

/// Binds the receiver's address.
async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), ServeError> {
    let bind_error = |source| ServeError::Bind { addr, source };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local_addr))
}

/// Says that promlink listens, and warns when anyone who can reach it may write.
fn log_listening(cfg: &Config, local_addr: SocketAddr) {
    let inbound = &cfg.inbound;
    tracing::info!(
        listen = %local_addr,
        tls = inbound.tls.is_some(),
        client_certificates = inbound.auth.client_certificates,
        bearer_tokens = inbound.auth.bearer_token_file.is_some(),
        upstream = %redacted_url(&cfg.destination.upstream.url),
        shards = cfg.destination.shards,
        "promlink is listening"
    );
    if !inbound.auth.enabled() && !local_addr.ip().is_loopback() {
        tracing::warn!(listen = %local_addr, "no sender authentication: anyone who can reach this address can write into the workspace; set bearer_token_file or client_ca (with tls_cert/tls_key), or restrict who can connect (NetworkPolicy, firewall)");
    }
}

/// Serves writes until `signal`, then shuts the receiver down as [`crate::shutdown`] says: it
/// keeps accepting while telling senders to move on until writes go quiet (or the grace period
/// runs short), then refuses new writes (`close`) and lets in-flight ones finish until the
/// deadline. Returns the deadline of the whole shutdown, `grace` from the signal.
async fn receive_until_stopped(
    server: impl std::future::Future<Output = ()>,
    signal: &CancellationToken,
    close: &CancellationToken,
    receiver: &Receiver,
    grace: Duration,
    quiet: Duration,
) -> tokio::time::Instant {
    let mut server = std::pin::pin!(server);
    let mut server_done = false;
    // One deadline for the whole shutdown, fixed when it starts.
    tokio::select! {
        // The listener ended on its own (it does not, short of a bug): deliver and stop.
        () = &mut server => tokio::time::Instant::now() + grace,
        _ = signal.cancelled() => {
            let since = tokio::time::Instant::now();
            let deadline = since + grace;
            receiver.begin_draining();
            tracing::info!(quiet_period = %humantime::format_duration(quiet), "shutting down: still accepting writes until they go quiet; senders are told to move on");
            let until = deadline - crate::shutdown::drain_reserve(grace);
            let why = tokio::select! {
                why = crate::shutdown::accept_until_quiet(since, quiet, until, || receiver.last_write()) => Some(why),
                () = &mut server => {
                    server_done = true;
                    None
                }
            };
            receiver.stop_accepting();
            close.cancel();
            match why {
                Some(crate::shutdown::Quiet::Quiet) => tracing::info!("writes went quiet; no longer accepting writes"),
                Some(crate::shutdown::Quiet::OutOfTime) => tracing::warn!("writes kept arriving until the grace period ran short; no longer accepting writes (new ones get 503)"),
                None => {}
            }
            // In-flight writes may finish, but a stuck or trickling upload cannot hold the
            // shutdown past the grace period (dropping the server closes its connections).
            if !server_done && tokio::time::timeout_at(deadline, &mut server).await.is_err() {
                tracing::warn!("in-flight writes did not finish within the grace period; closing their connections");
            }
            deadline
        }
    }
}

/// No more writes can arrive: closes the queues so partial batches leave at once, lets the
/// workers deliver until `deadline`, then aborts them (what is undelivered stays in the disk
/// queues, or is dropped and counted from the memory queues) and syncs the disk queues.
async fn deliver_until(
    queues: &[Arc<Queue>],
    workers: Vec<JoinHandle<()>>,
    deadline: tokio::time::Instant,
    grace: Duration,
    abort: &CancellationToken,
) {
    for q in queues {
        q.close();
    }
    let waiting: u64 = queues.iter().map(|q| q.used_bytes()).sum();
    tracing::info!(queued_bytes = waiting, grace = %humantime::format_duration(grace), "delivering what is queued before exiting");
    let all = futures_util::future::join_all(workers);
    tokio::pin!(all);
    if tokio::time::timeout_at(deadline, &mut all).await.is_err() {
        if queues.iter().all(|q| q.is_durable()) {
            tracing::warn!("shutdown grace period ended with data undelivered; it stays in the disk queue for the next start");
        } else {
            tracing::error!("shutdown grace period ended with data undelivered; dropping what the memory queue holds");
        }
        abort.cancel();
        all.await;
    }
    for q in queues {
        if let Err(e) = q.sync().await {
            tracing::error!(error = %e, "syncing the disk queue at shutdown failed");
        }
    }
}

/// The sending side that `serve` and `drain` share: the identity, the Private Link stage and
/// the upstream client, with their metrics registered.
pub(crate) struct Sending {
    /// The token provider.
    pub(crate) identity: TokenProvider,
    /// Private Link verification and path policy for the upstream host.
    pub(crate) private_link: Arc<PrivateLink>,
    /// The upstream client.
    pub(crate) upstream: Arc<Upstream>,
    /// The upstream host.
    pub(crate) host: String,
    /// The upstream's metrics.
    pub(crate) metrics: crate::upstream::Metrics,
}

impl Sending {
    /// Sets up the sending side of the destination `d` (its own host verified, pinned and
    /// named in alerts and `/status`), logging what an operator should know about it.
    pub(crate) fn new(
        d: &crate::config::Destination,
        registry: &mut Registry,
    ) -> Result<Self, ServeError> {
        let metrics = crate::upstream::Metrics::register(registry);
        let identity_metrics = crate::identity::Metrics::register(registry);
        let private_link_metrics = crate::privatelink::Metrics::register(registry);
        if d.upstream.url.scheme() == "http" {
            tracing::warn!(url = %d.upstream.url, "PLAIN HTTP UPSTREAM: tokens and metrics travel unencrypted (--allow-plain-http); never use this against Azure");
        }
        if !d.azure {
            tracing::info!(url = %d.upstream.url, "the upstream is not an Azure Monitor DCE URL; forwarding to it as a generic remote-write receiver");
        }
        if d.identity.kind == IdentityKind::SystemAssigned {
            tracing::info!("using the system-assigned managed identity");
        }
        let identity = TokenProvider::new(d.identity.clone(), identity_metrics)?;
        let host = d.upstream.url.host_str().unwrap_or_default().to_string();
        let port = d.upstream.url.port_or_known_default().unwrap_or(443);
        let private_link = Arc::new(PrivateLink::new(
            d.private_link.clone(),
            &host,
            port,
            d.upstream.ca_file.clone(),
            private_link_metrics,
        )?);
        tracing::info!(host = %host, policy = d.private_link.mode.as_str(), "private link policy");
        metrics
            .requests_per_minute_limit
            .set(d.upstream.max_requests_per_minute.map_or(0, i64::from));
        let upstream = Arc::new(Upstream::new(
            d.upstream.clone(),
            identity.clone(),
            metrics.clone(),
            Some(private_link.clone()),
        )?);
        Ok(Self {
            identity,
            private_link,
            upstream,
            host,
            metrics,
        })
    }
}

/// The URL without its query string (nothing secret is in it, but it keeps logs short).
fn redacted_url(url: &url::Url) -> String {
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!(
        "{}://{}{port}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.path()
    )
}

#[cfg(test)]
mod tests;
