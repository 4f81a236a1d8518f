//! The one backoff of promlink's retries: upstream requests, token refreshes and Alertmanager
//! posts.
//!
//! Capped exponential backoff with jitter: the delay before retry `n` (0 for the first) is
//! `d = min(max, min * 2^n)` scaled by a random factor drawn from the [`Jitter`] range, so that
//! many instances that failed together do not retry in step.

use std::time::Duration;

use rand::Rng as _;

/// The range of the random factor a nominal delay is scaled by, in percent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Jitter {
    low_percent: u32,
    high_percent: u32,
}

impl Jitter {
    /// Down by up to half: a delay is drawn from `[d/2, d]`, never longer than nominal.
    pub const DOWN_TO_HALF: Jitter = Jitter {
        low_percent: 50,
        high_percent: 100,
    };

    /// Within 20 % either way: a delay is drawn from `[0.8 d, 1.2 d]`.
    pub const PLUS_MINUS_20_PERCENT: Jitter = Jitter {
        low_percent: 80,
        high_percent: 120,
    };

    fn apply(self, d: Duration) -> Duration {
        let low = d.saturating_mul(self.low_percent) / 100;
        let high = d.saturating_mul(self.high_percent) / 100;
        rand::rng().random_range(low..=high)
    }
}

/// Capped exponential backoff with jitter (see the module docs).
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    jitter: Jitter,
    retries: u32,
}

impl Backoff {
    /// A backoff starting at `min`, doubling up to `max` (never below `min`), with
    /// [`Jitter::DOWN_TO_HALF`].
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            jitter: Jitter::DOWN_TO_HALF,
            retries: 0,
        }
    }

    /// The same backoff with another jitter range.
    #[must_use]
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The delay before retry `n` (0 for the first), jittered; it does not count as a retry.
    pub fn delay(&self, n: u32) -> Duration {
        // 2^31 is past any cap that matters; the shift cannot overflow.
        let nominal = self.min.saturating_mul(1 << n.min(31)).min(self.max);
        self.jitter.apply(nominal)
    }

    /// The delay before the next retry; counts it.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.delay(self.retries);
        self.retries = self.retries.saturating_add(1);
        d
    }

    /// The delay before the next retry when the server asked for `retry_after`: never less
    /// than asked, and at most `min` more than asked.
    pub fn next_delay_honouring(&mut self, retry_after: Option<Duration>) -> Duration {
        let own = self.next_delay();
        match retry_after {
            Some(ra) => ra.max(own.min(ra + self.min)),
            None => own,
        }
    }

    /// How many delays were handed out since the start or the last [`Backoff::reset`].
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Starts again from `min` (after a success).
    pub fn reset(&mut self) {
        self.retries = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let delays: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        for (i, d) in delays.iter().enumerate() {
            let cap = Duration::from_millis(100 * (1 << i)).min(Duration::from_secs(2));
            assert!(
                *d >= cap / 2 && *d <= cap,
                "attempt {i}: {d:?} not in [{:?}, {cap:?}]",
                cap / 2
            );
        }
        // Never sooner than the server asked.
        assert!(b.next_delay_honouring(Some(Duration::from_secs(5))) >= Duration::from_secs(5));
    }

    #[test]
    fn backoff_doubles_from_min_to_max_with_jitter() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        for (failures, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (5, 1600),
            (6, 2000),
            (60, 2000),
            (u32::MAX, 2000),
        ] {
            let full = Duration::from_millis(full);
            for _ in 0..50 {
                let d = Backoff::new(min, max).delay(failures - 1);
                assert!(
                    d >= full / 2 && d <= full,
                    "failure {failures}: {d:?} not in [{:?}, {full:?}]",
                    full / 2
                );
            }
        }
    }

    #[test]
    fn plus_minus_20_percent_jitter_and_reset() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30))
            .with_jitter(Jitter::PLUS_MINUS_20_PERCENT);
        for full in [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000] {
            let full = Duration::from_millis(full);
            let d = b.next_delay();
            assert!(
                d >= full * 4 / 5 && d <= full * 6 / 5,
                "{d:?} not within 20 % of {full:?}"
            );
        }
        assert_eq!(b.retries(), 8);
        b.reset();
        assert_eq!(b.retries(), 0);
        assert!(b.next_delay() <= Duration::from_millis(600));
    }

    #[test]
    fn a_retry_after_is_honoured_and_bounded() {
        let min = Duration::from_millis(100);
        let mut b = Backoff::new(min, Duration::from_secs(60));
        for _ in 0..8 {
            b.next_delay();
        }
        let ra = Duration::from_secs(2);
        let d = b.next_delay_honouring(Some(ra));
        assert!(d >= ra && d <= ra + min, "{d:?}");
    }
}
