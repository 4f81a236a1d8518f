//! `promlink serve`: wires the stages together and runs them until shutdown.
//!
//! receive -> queue -> upstream shard workers, with the token provider beside them. On shutdown
//! the receiver refuses new writes (retryable 503), in-flight requests finish, the queue is
//! closed so partial batches leave at once, and the workers get `shutdown_grace` to deliver;
//! what is still undelivered then is dropped and counted (`samples_dropped{reason="shutdown"}`).

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
use crate::receive::{Readiness, Receiver};
use crate::upstream::{Health, Upstream};

/// Errors starting promlink.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The identity could not be set up.
    #[error("identity: {0}")]
    Identity(#[from] crate::identity::Error),
    /// The upstream client could not be set up.
    #[error(transparent)]
    Upstream(#[from] crate::upstream::UpstreamError),
    /// Private-link verification could not be set up.
    #[error("private link: {0}")]
    PrivateLink(#[from] crate::privatelink::path::PathError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

struct Ready {
    identity: TokenProvider,
    health: Arc<Health>,
    private_link: Arc<PrivateLink>,
    window: Duration,
}

impl Readiness for Ready {
    fn check(&self) -> Result<(), Vec<String>> {
        let mut why = Vec::new();
        let token = self.identity.state();
        if !token.valid {
            why.push(format!(
                "no valid token ({})",
                token
                    .last_error
                    .as_deref()
                    .unwrap_or("first token not obtained yet")
            ));
        }
        if let Err(e) = self.private_link.ready() {
            why.push(e);
        }
        if !self.health.answered_within(self.window) {
            why.push(format!(
                "the upstream has not answered in the last {}",
                humantime::format_duration(self.window)
            ));
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why)
        }
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
    /// The metrics registry.
    pub registry: Arc<Registry>,
    task: JoinHandle<()>,
}

impl Running {
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
    let upstream_metrics = crate::upstream::Metrics::register(&mut registry);
    let identity_metrics = crate::identity::Metrics::register(&mut registry);
    let private_link_metrics = crate::privatelink::Metrics::register(&mut registry);

    if cfg.upstream.url.scheme() == "http" {
        tracing::warn!(url = %cfg.upstream.url, "PLAIN HTTP UPSTREAM: tokens and metrics travel unencrypted (--allow-plain-http); never use this against Azure");
    }
    if !cfg.azure_upstream {
        tracing::info!(url = %cfg.upstream.url, "the upstream is not an Azure Monitor DCE URL; forwarding to it as a generic remote-write receiver");
    }
    if cfg.identity.kind == IdentityKind::SystemAssigned {
        tracing::info!("using the system-assigned managed identity");
    }

    let identity = TokenProvider::new(cfg.identity.clone(), identity_metrics)?;
    let host = cfg.upstream.url.host_str().unwrap_or_default().to_string();
    let port = cfg.upstream.url.port_or_known_default().unwrap_or(443);
    let private_link = Arc::new(PrivateLink::new(
        cfg.private_link.clone(),
        &host,
        port,
        cfg.upstream.ca_file.clone(),
        private_link_metrics,
    )?);
    tracing::info!(host = %host, policy = cfg.private_link.mode.as_str(), "private link policy");
    let upstream = Arc::new(Upstream::new(
        cfg.upstream.clone(),
        identity.clone(),
        upstream_metrics.clone(),
        Some(private_link.clone()),
    )?);
    let health = upstream.health();
    let queue = Arc::new(Queue::new(cfg.shards, cfg.queue_max_bytes));
    upstream_metrics
        .queue_max_bytes
        .set(cfg.queue_max_bytes as i64);

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: cfg.listen,
        source,
    })?;

    let shutdown = CancellationToken::new();
    let background = CancellationToken::new();
    let abort = CancellationToken::new();
    let refresher = identity.spawn_refresher(background.clone());
    let verifier = tokio::spawn(private_link.clone().run(background.clone()));
    let prober = tokio::spawn(
        upstream
            .clone()
            .probe_when_idle(cfg.ready_window, background.clone()),
    );
    let workers: Vec<JoinHandle<()>> = (0..queue.shards())
        .map(|i| tokio::spawn(upstream.clone().run_shard(queue.clone(), i, abort.clone())))
        .collect();

    let registry = Arc::new(registry);
    let readiness = Box::new(Ready {
        private_link: private_link.clone(),
        identity: identity.clone(),
        health: health.clone(),
        window: cfg.ready_window,
    });
    let receiver = Arc::new(Receiver::new(
        cfg.receive.clone(),
        queue.clone(),
        receive_metrics,
        upstream_metrics.queue_bytes.clone(),
        readiness,
        registry.clone(),
    ));
    let app = receiver.clone().router();
    tracing::info!(listen = %local_addr, upstream = %redacted_url(&cfg.upstream.url), shards = cfg.shards, "promlink is listening");

    let stop = shutdown.clone();
    let grace = cfg.shutdown_grace;
    let task = tokio::spawn(async move {
        let rx = receiver.clone();
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            stop.cancelled().await;
            rx.stop_accepting();
        });
        if let Err(e) = server.await {
            tracing::error!(error = %e, "receiver failed");
        }
        // No more writes can arrive: let partial batches leave at once.
        queue.close();
        let waiting = queue.used_bytes();
        tracing::info!(queued_bytes = waiting, grace = %humantime::format_duration(grace), "delivering what is queued before exiting");
        let all = futures_util::future::join_all(workers);
        tokio::pin!(all);
        if tokio::time::timeout(grace, &mut all).await.is_err() {
            tracing::error!("shutdown grace period ended with data undelivered; dropping it");
            abort.cancel();
            all.await;
        }
        background.cancel();
        let _ = refresher.await;
        let _ = prober.await;
        let _ = verifier.await;
        tracing::info!("promlink stopped");
    });
    Ok(Running {
        local_addr,
        shutdown,
        identity,
        health,
        private_link,
        registry,
        task,
    })
}

/// The URL without its query string (nothing secret is in it, but it keeps logs short).
fn redacted_url(url: &url::Url) -> String {
    format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.path()
    )
}
