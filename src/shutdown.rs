//! The one shutdown path: SIGTERM or SIGINT (Ctrl-C) cancels a token that every stage watches,
//! and [`accept_until_quiet`] decides when, after it, writes stop being accepted.
//!
//! Kubernetes sends SIGTERM to every container of a pod at once, and to a gateway while its
//! endpoint is still being removed from Services. So promlink keeps accepting writes after
//! SIGTERM (a sidecar's Prometheus is flushing its last samples, a gateway's senders have not
//! moved yet) until they go quiet or the grace period runs short, then stops accepting and
//! delivers what it holds until `shutdown_grace` after SIGTERM.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGTERM or SIGINT.
pub fn on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term = match tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::terminate(),
            ) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C will stop promlink");
                    let _ = ctrl_c.await;
                    token.cancel();
                    return;
                }
            };
            tokio::select! {
                _ = ctrl_c => tracing::info!("SIGINT received; shutting down"),
                _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        token.cancel();
    });
}

/// Why [`accept_until_quiet`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quiet {
    /// No write arrived for the quiet period.
    Quiet,
    /// The grace period minus the drain reserve was reached first.
    OutOfTime,
}

/// The part of `shutdown_grace` kept for delivering what is queued once writes stop being
/// accepted: a third of it.
pub fn drain_reserve(grace: Duration) -> Duration {
    grace / 3
}

/// After SIGTERM at `since`: waits until no write has arrived for `quiet` (counted from `since`
/// or from the last write, whichever is later), or until `until`, whichever comes first.
/// `last_write` is asked again each time the quiet period would end.
///
/// Counting from the later of the two, not from the last write alone, matters for a sidecar:
/// Prometheus sends every few seconds, and its own shutdown flush comes after SIGTERM.
pub async fn accept_until_quiet(
    since: Instant,
    quiet: Duration,
    until: Instant,
    last_write: impl Fn() -> Option<Instant>,
) -> Quiet {
    loop {
        let last = last_write().map_or(since, |w| w.max(since));
        let due = last + quiet;
        let now = Instant::now();
        if due <= now {
            return Quiet::Quiet;
        }
        if until <= now {
            return Quiet::OutOfTime;
        }
        tokio::time::sleep_until(due.min(until)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test(start_paused = true)]
    async fn quiet_counts_from_sigterm_or_the_last_write_and_ends_at_the_reserve() {
        let quiet = Duration::from_secs(5);
        // No write at all: 5 s after SIGTERM.
        let t0 = Instant::now();
        let r = accept_until_quiet(t0, quiet, t0 + Duration::from_secs(20), || None).await;
        assert_eq!((r, t0.elapsed()), (Quiet::Quiet, quiet));

        // A write 3 s before SIGTERM does not shorten it: still 5 s after SIGTERM.
        let t0 = Instant::now();
        let before = t0 - Duration::from_secs(3);
        let r = accept_until_quiet(t0, quiet, t0 + Duration::from_secs(20), move || {
            Some(before)
        })
        .await;
        assert_eq!((r, t0.elapsed()), (Quiet::Quiet, quiet));

        // Writes every 2 s for 9 s after SIGTERM: 5 s after the last one (at 8 s).
        let t0 = Instant::now();
        let last = Arc::new(Mutex::new(None));
        let writer = {
            let last = last.clone();
            tokio::spawn(async move {
                for i in 1..=4u64 {
                    tokio::time::sleep_until(t0 + Duration::from_secs(2 * i)).await;
                    *last.lock().unwrap() = Some(Instant::now());
                }
            })
        };
        let r = accept_until_quiet(t0, quiet, t0 + Duration::from_secs(20), || {
            *last.lock().unwrap()
        })
        .await;
        assert_eq!((r, t0.elapsed()), (Quiet::Quiet, Duration::from_secs(13)));
        writer.await.unwrap();

        // Writes that never stop: out of time at `until`.
        let t0 = Instant::now();
        let r = accept_until_quiet(t0, quiet, t0 + Duration::from_secs(20), || {
            Some(Instant::now())
        })
        .await;
        assert_eq!(
            (r, t0.elapsed()),
            (Quiet::OutOfTime, Duration::from_secs(20))
        );

        // A zero quiet period stops at once (the behaviour before it existed).
        let t0 = Instant::now();
        let r = accept_until_quiet(t0, Duration::ZERO, t0 + Duration::from_secs(20), || None).await;
        assert_eq!((r, t0.elapsed()), (Quiet::Quiet, Duration::ZERO));
    }

    #[test]
    fn a_third_of_the_grace_is_kept_for_delivery() {
        assert_eq!(
            drain_reserve(Duration::from_secs(30)),
            Duration::from_secs(10)
        );
    }
}
