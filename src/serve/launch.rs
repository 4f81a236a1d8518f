//! [`Launcher`]: starts the tasks of a route's destination (token refresher, Private Link
//! verification, idle probe, shard workers) and enters it in the alert rules and the `/status`
//! checks. `serve` launches every route at start; a configuration reload launches the routes
//! it adds. Launched destinations run until shutdown, also when a reload removes their route:
//! their workers deliver what the queue holds, and shutdown waits for every one of them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use prometheus_client::metrics::gauge::Gauge;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::alerts::{AlertInputs, RouteAlerts};
use super::routes::RouteStage;
use crate::config::Readiness;
use crate::health::RouteCheck;
use crate::queue::Queue;

/// The launched destinations and what shutdown needs of them.
pub(super) struct Launcher {
    /// Stops the background tasks (after the workers).
    background: CancellationToken,
    /// Stops the workers at once (after the grace period).
    abort: CancellationToken,
    readiness: Readiness,
    routed: bool,
    /// The receiver's certificate expiry: watched by the first destination's alert rules
    /// only (there is one certificate, whatever the routes).
    cert_not_after: Gauge,
    cert_watched: AtomicBool,
    /// Queues under `queue_dir` no configured route uses (found at start): alerted on by the
    /// first destination's rules, as the certificate.
    stranded: Vec<(String, u64)>,
    /// The workspace and DCR gauges, for the routes a reload adds.
    pub(super) limits: crate::workspace::Metrics,
    /// What the alert rules read, one entry per destination (only ever appended to).
    pub(super) alerts: Arc<RwLock<Vec<Arc<RouteAlerts>>>>,
    /// What `/status` and `/ready` check, one entry per destination.
    pub(super) checks: Arc<RwLock<Vec<RouteCheck>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    queues: Mutex<Vec<Arc<Queue>>>,
}

impl Launcher {
    pub(super) fn new(
        background: CancellationToken,
        abort: CancellationToken,
        readiness: Readiness,
        routed: bool,
        cert_not_after: Gauge,
        stranded: Vec<(String, u64)>,
        limits: crate::workspace::Metrics,
    ) -> Self {
        Self {
            background,
            abort,
            readiness,
            routed,
            cert_not_after,
            cert_watched: AtomicBool::new(false),
            stranded,
            limits,
            alerts: Arc::default(),
            checks: Arc::default(),
            workers: Mutex::default(),
            tasks: Mutex::default(),
            queues: Mutex::default(),
        }
    }

    /// Starts `st`'s tasks and enters it in the alert rules and checks.
    pub(super) fn launch(&self, st: &RouteStage) {
        let sending = &st.sending;
        let (background, window) = (&self.background, self.readiness.window);
        lock(&self.tasks).extend([
            sending.identity.spawn_refresher(background.clone()),
            tokio::spawn(sending.private_link.clone().run(background.clone())),
            tokio::spawn(
                sending
                    .upstream
                    .clone()
                    .probe_when_idle(window, background.clone()),
            ),
        ]);
        lock(&self.workers).extend((0..st.shards).map(|i| {
            tokio::spawn(sending.upstream.clone().run_worker(
                st.queue.clone(),
                i,
                self.abort.clone(),
            ))
        }));
        lock(&self.queues).push(st.queue.clone());
        let route = self.routed.then(|| st.name.clone());
        let first = !self.cert_watched.swap(true, Ordering::AcqRel);
        write(&self.alerts).push(Arc::new(RouteAlerts {
            route: route.clone(),
            url: st.url.clone(),
            inputs: AlertInputs {
                host: sending.host.clone(),
                private_link: sending.private_link.clone(),
                health: sending.upstream.health(),
                upstream: sending.upstream.clone(),
                identity: sending.identity.clone(),
                queue: st.queue.clone(),
                queue_metrics: st.queue_metrics.clone(),
                upstream_metrics: sending.metrics.clone(),
                cert_not_after: if first {
                    self.cert_not_after.clone()
                } else {
                    Gauge::default()
                },
                stranded: if first {
                    self.stranded.clone()
                } else {
                    Vec::new()
                },
                ready_window: window,
                canary: st.canary.clone(),
                workspace: st.workspace.1.then(|| st.workspace.0.clone()),
                dcr: st.dcr.clone(),
            },
        }));
        write(&self.checks).push(RouteCheck {
            route,
            url: st.url.clone(),
            checks: crate::health::Checks {
                identity: sending.identity.clone(),
                health: sending.upstream.health(),
                private_link: sending.private_link.clone(),
                queue: st.queue.clone(),
                window,
                requires_upstream: self.readiness.requires_upstream,
            },
        });
    }

    /// For shutdown: every launched queue, the workers, and the other tasks.
    pub(super) fn take(&self) -> Launched {
        Launched {
            queues: std::mem::take(&mut *lock(&self.queues)),
            workers: std::mem::take(&mut *lock(&self.workers)),
            tasks: std::mem::take(&mut *lock(&self.tasks)),
        }
    }
}

/// What shutdown waits for (see [`Launcher::take`]).
pub(super) struct Launched {
    /// Every launched queue.
    pub(super) queues: Vec<Arc<Queue>>,
    /// Their shard workers.
    pub(super) workers: Vec<JoinHandle<()>>,
    /// The other tasks of the launched destinations.
    pub(super) tasks: Vec<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}
