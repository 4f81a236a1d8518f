//! `promlink drain`: delivers a disk-queue directory that no promlink serves any more (the
//! volume of a replica that was scaled away, mounted into a Job), then exits.
//!
//! It opens the queue like `serve` does (taking the directory lock: a live promlink on the same
//! directory makes it refuse; a lock left by a killed process is released by the kernel with
//! the process, so it never blocks), sends with the same upstream, identity and Private Link
//! settings, and binds no port. Exit status: 0 once the directory is empty, 1 when `--timeout`
//! passes first (what is left stays in the directory, in order, for another try), 64 for a
//! configuration problem. Batches the upstream refuses for good (4xx) are dropped and counted
//! as in `serve`; the summary says how many samples that was.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Problem, Settings};
use crate::queue::Queue;
use crate::serve::{Sending, ServeError};
use crate::upstream::retry::DropReason;

/// `promlink drain`: the flags of `serve` (only the upstream, identity, Private Link and queue
/// ones matter) plus a timeout.
#[derive(Clone, Debug, clap::Args)]
pub struct DrainArgs {
    /// Give up after this long, leaving what is undelivered in the directory (exit 1)
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    /// Every `serve` key; `--queue-dir` is required
    #[command(flatten)]
    pub settings: Settings,
}

impl DrainArgs {
    /// The resolved configuration, with `queue_dir` required.
    ///
    /// # Errors
    /// Every configuration problem, as `serve` reports them.
    pub fn load(self) -> Result<(Config, Duration), crate::config::ConfigError> {
        let missing_dir = self.settings.queue_dir.is_none();
        let cfg = self.settings.load();
        match (cfg, missing_dir) {
            (Ok(cfg), false) => Ok((cfg, self.timeout)),
            (Ok(_), true) => Err(crate::config::ConfigError(vec![queue_dir_required()])),
            (Err(mut e), true) => {
                e.0.insert(0, queue_dir_required());
                Err(e)
            }
            (Err(e), false) => Err(e),
        }
    }
}

fn queue_dir_required() -> Problem {
    Problem {
        key: "queue_dir".into(),
        value: String::new(),
        why: "promlink drain needs the queue directory to deliver (--queue-dir)".into(),
    }
}

/// What a drain did.
#[derive(Clone, Debug, PartialEq)]
pub struct DrainReport {
    /// The queue directory.
    pub dir: PathBuf,
    /// Whether everything was delivered or dropped (the directory holds nothing unfinished).
    pub empty: bool,
    /// Samples the upstream accepted.
    pub samples_forwarded: u64,
    /// Samples dropped (refused for good by the upstream, too old, expired).
    pub samples_dropped: u64,
    /// Unfinished record bytes left in the directory.
    pub bytes_left: u64,
    /// Age of the oldest data left.
    pub oldest_left: Option<Duration>,
}

impl std::fmt::Display for DrainReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dir = self.dir.display();
        if self.empty {
            write!(
                f,
                "{dir}: drained: {} samples delivered, {} dropped (see the log); nothing is left",
                self.samples_forwarded, self.samples_dropped
            )
        } else {
            write!(
                f,
                "{dir}: NOT drained: {} bytes of queued data are left{} after delivering {} samples ({} dropped); it stays in the directory, in order, for the next try",
                self.bytes_left,
                self.oldest_left
                    .map(|a| format!(
                        ", the oldest {} old",
                        humantime::format_duration(Duration::from_secs(a.as_secs()))
                    ))
                    .unwrap_or_default(),
                self.samples_forwarded,
                self.samples_dropped
            )
        }
    }
}

/// Delivers `cfg`'s queue directory until it is empty, `timeout` passes or `stop` is cancelled
/// (SIGTERM: what is undelivered stays).
///
/// # Errors
/// When the queue cannot be opened (in use by a running promlink, written by a newer one,
/// unreadable) or the sending side cannot be set up.
pub async fn run(
    cfg: Config,
    timeout: Duration,
    stop: CancellationToken,
) -> Result<DrainReport, ServeError> {
    if cfg.routed {
        return Err(ServeError::Queue(crate::queue::DiskQueueError::Config(
            "promlink drain delivers one queue directory to one upstream: run it without routes, with --queue-dir <queue_dir>/<route name> and that route's ingestion URL and identity".into(),
        )));
    }
    let Some(dir) = cfg.destination.queue.disk.as_ref().map(|d| d.dir.clone()) else {
        return Err(ServeError::Queue(crate::queue::DiskQueueError::Config(
            "promlink drain needs queue_dir".into(),
        )));
    };
    let mut registry = Registry::with_prefix("promlink");
    let sending = Sending::new(&cfg.destination, &mut registry)?;
    let queue = Arc::new(crate::queue::open(&cfg.destination.queue).await?);
    // Nothing will be pushed: partial batches may go at once, and workers end when it is empty.
    queue.close();
    let start_bytes = queue.used_bytes();
    tracing::info!(dir = %dir.display(), bytes = start_bytes, timeout = %humantime::format_duration(timeout), "draining the queue directory");

    let background = CancellationToken::new();
    let abort = CancellationToken::new();
    let tasks = vec![
        sending.identity.spawn_refresher(background.clone()),
        tokio::spawn(sending.private_link.clone().run(background.clone())),
        tokio::spawn(progress(queue.clone(), background.clone())),
    ];
    let workers: Vec<_> = (0..cfg.destination.shards)
        .map(|i| {
            tokio::spawn(
                sending
                    .upstream
                    .clone()
                    .run_worker(queue.clone(), i, abort.clone()),
            )
        })
        .collect();
    let all = futures_util::future::join_all(workers);
    tokio::pin!(all);
    tokio::select! {
        _ = &mut all => {}
        _ = tokio::time::sleep(timeout) => {
            tracing::error!(timeout = %humantime::format_duration(timeout), "the queue directory was not drained in time");
            abort.cancel();
            all.await;
        }
        _ = stop.cancelled() => {
            tracing::warn!("stopped before the queue directory was drained");
            abort.cancel();
            all.await;
        }
    }
    if let Err(e) = queue.sync().await {
        tracing::error!(error = %e, "syncing the disk queue failed");
    }
    background.cancel();
    for t in tasks {
        let _ = t.await;
    }
    let m = &sending.metrics;
    let dropped = DropReason::ALL
        .iter()
        .map(|r| {
            m.samples_dropped
                .get_or_create(&crate::telemetry::ReasonLabel { reason: r.as_str() })
                .get()
        })
        .sum();
    let left = queue.used_bytes();
    Ok(DrainReport {
        dir,
        empty: left == 0,
        samples_forwarded: m.forwarded.samples.get(),
        samples_dropped: dropped,
        bytes_left: left,
        oldest_left: queue.oldest_age().filter(|_| left > 0),
    })
}

/// Logs what is left every 10 s, so a Job's log shows progress.
async fn progress(queue: Arc<Queue>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            _ = stop.cancelled() => return,
        }
        tracing::info!(bytes_left = queue.used_bytes(), "draining");
    }
}
