//! `max_requests_per_minute`: a token bucket per ingestion URL in this process. Azure limits
//! each DCR to 15,000 requests a minute (across every sender; it cannot be raised), so promlink
//! spaces its own requests out instead of meeting 429s. A request waits for its token, which is
//! backpressure like any slow upstream: the batch stays queued, nothing is dropped.
//!
//! The bucket holds at most one second's worth of tokens (`rate / 60`, at least one), so no
//! window of a minute sees more than the rate plus that burst. Each waiter reserves the next
//! free slot under a short lock and sleeps outside it, so concurrent workers are served in
//! order and none is starved.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A token bucket of `per_minute` requests a minute.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Tokens at `at` (negative: slots reserved by waiters beyond what the bucket held).
    tokens: f64,
    at: Instant,
    /// When the requests of the last minute took their tokens (for the per-minute gauge).
    recent: VecDeque<Instant>,
}

impl RateLimiter {
    /// A bucket of `per_minute` (> 0) requests a minute, full at the start.
    pub fn new(per_minute: u32) -> Self {
        let per_minute = per_minute.max(1);
        Self {
            per_minute,
            state: Mutex::new(State {
                tokens: Self::burst_of(per_minute),
                at: Instant::now(),
                recent: VecDeque::new(),
            }),
        }
    }

    fn burst_of(per_minute: u32) -> f64 {
        (f64::from(per_minute) / 60.0).max(1.0)
    }

    /// The rate, requests a minute.
    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    /// Waits until a request may go; returns how long it waited.
    pub async fn acquire(&self) -> Duration {
        let wait = self.reserve(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        wait
    }

    /// Takes the next token at `now`: how long until it is due.
    fn reserve(&self, now: Instant) -> Duration {
        let per_sec = f64::from(self.per_minute) / 60.0;
        let burst = Self::burst_of(self.per_minute);
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(s.at).as_secs_f64();
        s.tokens = (s.tokens + elapsed * per_sec).min(burst);
        s.at = now;
        s.tokens -= 1.0;
        let wait = if s.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.tokens / per_sec)
        };
        let due = now + wait;
        s.recent.push_back(due);
        while s
            .recent
            .front()
            .is_some_and(|t| *t + Duration::from_secs(60) <= now)
        {
            s.recent.pop_front();
        }
        wait
    }

    /// Requests that took a token within the last minute (reserved ones included).
    pub fn last_minute(&self) -> usize {
        let now = Instant::now();
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while s
            .recent
            .front()
            .is_some_and(|t| *t + Duration::from_secs(60) <= now)
        {
            s.recent.pop_front();
        }
        s.recent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_spaces_requests_after_a_one_second_burst() {
        let r = RateLimiter::new(600);
        let t0 = Instant::now();
        // 10 tokens of burst (600 a minute = 10 a second), then one every 100 ms.
        let waits: Vec<Duration> = (0..30).map(|_| r.reserve(t0)).collect();
        assert!(waits[..10].iter().all(|w| w.is_zero()), "{waits:?}");
        for (i, w) in waits[10..].iter().enumerate() {
            let want = Duration::from_millis(100 * (i as u64 + 1));
            assert!(
                w.abs_diff(want) < Duration::from_millis(1),
                "request {}: {w:?}, want {want:?}",
                i + 10
            );
        }
        // A minute later the bucket is full again, never fuller.
        let later = t0 + Duration::from_secs(60);
        let waits: Vec<Duration> = (0..11).map(|_| r.reserve(later)).collect();
        assert!(waits[..10].iter().all(|w| w.is_zero()), "{waits:?}");
        assert!(!waits[10].is_zero());
    }

    #[test]
    fn a_slow_rate_still_lets_one_request_through_at_once() {
        let r = RateLimiter::new(6);
        let t0 = Instant::now();
        assert!(r.reserve(t0).is_zero());
        assert_eq!(r.reserve(t0), Duration::from_secs(10));
    }
}
