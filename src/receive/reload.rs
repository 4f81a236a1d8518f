//! The loop that re-reads the receiver's files (TLS, sender tokens) while promlink runs.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::metrics::{Metrics, ReloadLabels};

/// Every `interval` until `stop`, runs `reload` on the blocking pool. `Ok(true)`: the files
/// changed and are in force; `Ok(false)`: unchanged; `Err`: changed but unusable, the previous
/// ones stay in force. Changes and failures are logged and counted under `what`.
pub(super) async fn every<E>(
    interval: Duration,
    stop: CancellationToken,
    metrics: Metrics,
    what: &'static str,
    reload: impl Fn() -> Result<bool, E> + Clone + Send + 'static,
) where
    E: std::fmt::Display + Send + 'static,
{
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
        let outcome = match tokio::task::spawn_blocking(reload.clone()).await {
            Ok(Ok(false)) => continue,
            Ok(Ok(true)) => {
                tracing::info!(
                    what,
                    "receiver files changed; new connections and requests use them"
                );
                "ok"
            }
            Ok(Err(e)) => {
                tracing::error!(what, error = %e, "receiver files changed but cannot be used; the previous ones stay in force");
                "error"
            }
            Err(e) => {
                tracing::error!(what, error = %e, "reloading receiver files panicked");
                "error"
            }
        };
        metrics
            .reloads
            .get_or_create(&ReloadLabels {
                what,
                result: outcome,
            })
            .inc();
    }
}
