//! The background task that keeps a token fresh.
//!
//! Entra kinds: fetch at once; after a success sleep until `refresh_before_expiry` before the
//! token expires (half its remaining life if it is shorter than that); after a failure sleep
//! `retry_min`, doubling per consecutive failure up to `retry_max`, each delay jittered down by
//! up to half so many instances do not retry in step ([`crate::outbound::Backoff`]). It never
//! gives up. `invalidate()` cuts a sleep short. While sleeping it also wakes when the current
//! token expires, so the `valid` gauge and waiting callers learn of it.
//!
//! Token-file: check the file every [`TOKEN_FILE_POLL`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::source::Entra;
use super::token_file::TokenFile;
use super::{Inner, Source};
use crate::outbound::Backoff;

/// How often the token file is checked for changes (a `stat`; re-read only when it changed).
pub(crate) const TOKEN_FILE_POLL: Duration = Duration::from_secs(1);

/// Runs until `shutdown` is cancelled.
pub(crate) async fn run(inner: Arc<Inner>, shutdown: CancellationToken) {
    match &inner.source {
        Source::None => {}
        Source::TokenFile(file) => poll_file(&inner, file, &shutdown).await,
        Source::Entra(entra) => refresh(&inner, entra, &shutdown).await,
    }
    tracing::debug!(kind = inner.kind.as_str(), "token refresher stopped");
}

async fn poll_file(inner: &Inner, file: &TokenFile, shutdown: &CancellationToken) {
    loop {
        inner.check_token_file(file, false);
        inner.publish();
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(TOKEN_FILE_POLL) => {}
        }
    }
}

async fn refresh(inner: &Inner, entra: &Entra, shutdown: &CancellationToken) {
    let mut backoff = Backoff::new(inner.retry_min, inner.retry_max);
    let mut next_attempt = Instant::now();
    loop {
        // Sleep until the next attempt; wake early at expiry (to publish) or on invalidate().
        loop {
            let now = Instant::now();
            if now >= next_attempt {
                break;
            }
            let expiry = inner.expires_at().map(instant_of);
            let wake = expiry
                .filter(|e| *e > now && *e < next_attempt)
                .unwrap_or(next_attempt);
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(wake) => inner.publish(),
                () = inner.refresh_now.notified() => break,
            }
        }
        let result = tokio::select! {
            () = shutdown.cancelled() => return,
            result = entra.fetch() => result,
        };
        match result {
            Ok(fetched) => {
                backoff.reset();
                let delay = refresh_delay(
                    fetched.expires_at,
                    inner.refresh_before_expiry,
                    inner.retry_min,
                );
                inner.store(fetched);
                next_attempt = Instant::now() + delay;
            }
            Err(err) => {
                let delay = backoff.next_delay();
                inner.fail(&err, Some(delay), false);
                next_attempt = Instant::now() + delay;
            }
        }
    }
}

/// The tokio instant at which the wall-clock time `t` arrives.
fn instant_of(t: SystemTime) -> Instant {
    Instant::now() + t.duration_since(SystemTime::now()).unwrap_or_default()
}

/// How long to keep a token before refreshing it: until `before` ahead of its expiry, or half
/// its remaining life when that is shorter than `before`, but at least `floor` so a token that
/// arrives (nearly) expired does not cause a busy loop.
pub(crate) fn refresh_delay(
    expires_at: Option<SystemTime>,
    before: Duration,
    floor: Duration,
) -> Duration {
    let Some(expires_at) = expires_at else {
        return Duration::from_secs(3600);
    };
    let remaining = expires_at
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let delay = if remaining > before {
        remaining - before
    } else {
        remaining / 2
    };
    delay.max(floor)
}
