//! Turns promlink's counters into the times things last happened, which is what the alert
//! rules about losses and stalls need ("samples were dropped within the last 10 minutes", "the
//! queue has held data for 10 minutes and nothing was forwarded meanwhile").
//!
//! [`Watch::observe`] is fed the counters every second; the first observation sets the
//! baseline, except that damage the disk queue found when it opened counts as happening then.

use std::collections::BTreeMap;
use std::time::SystemTime;

/// The counters read at one moment.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Samples dropped so far, by reason (the `reason` label of
    /// `promlink_samples_dropped_total`).
    pub dropped: Vec<(&'static str, u64)>,
    /// Damaged disk-queue records skipped so far.
    pub corrupt_records: u64,
    /// Samples and histogram samples the upstream accepted so far.
    pub forwarded: u64,
    /// Queue bytes in use now.
    pub queue_bytes: u64,
}

/// When each watched thing last happened.
#[derive(Debug)]
pub struct Watch {
    started: SystemTime,
    seen: Option<Observed>,
    drops: BTreeMap<&'static str, SystemTime>,
    corrupt_at: Option<SystemTime>,
    forwarded_at: SystemTime,
    holding_since: Option<SystemTime>,
}

impl Watch {
    /// A watch started at `now` (the process's start, for "nothing forwarded since").
    pub fn new(now: SystemTime) -> Self {
        Self {
            started: now,
            seen: None,
            drops: BTreeMap::new(),
            corrupt_at: None,
            forwarded_at: now,
            holding_since: None,
        }
    }

    /// Takes the counters read at `now`.
    pub fn observe(&mut self, now: SystemTime, o: Observed) {
        let before = self.seen.take();
        let prev_drop = |reason: &str| {
            before.as_ref().map_or(0, |b| {
                b.dropped
                    .iter()
                    .find(|(r, _)| *r == reason)
                    .map_or(0, |(_, n)| *n)
            })
        };
        for &(reason, n) in &o.dropped {
            if n > prev_drop(reason) {
                self.drops.insert(reason, now);
            }
        }
        // Damage found when the queue opened was found at start, not at the first look.
        let prev_corrupt = before.as_ref().map_or(0, |b| b.corrupt_records);
        if o.corrupt_records > prev_corrupt {
            self.corrupt_at = Some(if before.is_none() { self.started } else { now });
        }
        if before.as_ref().is_some_and(|b| o.forwarded > b.forwarded) {
            self.forwarded_at = now;
        }
        self.holding_since = match (o.queue_bytes, self.holding_since) {
            (0, _) => None,
            (_, Some(since)) => Some(since),
            (_, None) => Some(now),
        };
        self.seen = Some(o);
    }

    /// Reasons samples were dropped for, with when each last happened.
    pub fn drops(&self) -> Vec<(&'static str, SystemTime)> {
        self.drops.iter().map(|(r, t)| (*r, *t)).collect()
    }

    /// When damaged records were last skipped.
    pub fn corrupt_records_at(&self) -> Option<SystemTime> {
        self.corrupt_at
    }

    /// When the upstream last accepted samples (the start, before the first).
    pub fn last_forward(&self) -> SystemTime {
        self.forwarded_at
    }

    /// Since when the queue has held data without a break.
    pub fn queue_holding_since(&self) -> Option<SystemTime> {
        self.holding_since
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    fn obs(dropped: &[(&'static str, u64)], corrupt: u64, fwd: u64, bytes: u64) -> Observed {
        Observed {
            dropped: dropped.to_vec(),
            corrupt_records: corrupt,
            forwarded: fwd,
            queue_bytes: bytes,
        }
    }

    #[test]
    fn times_of_the_last_change() {
        let mut w = Watch::new(at(0));
        // Damage found on open counts from the start; drops already counted do not (a restart
        // starts counters at zero, so a first reading above zero is damage found at open only).
        w.observe(at(1), obs(&[("too_old", 0)], 2, 0, 0));
        assert_eq!(w.corrupt_records_at(), Some(at(0)));
        assert!(w.drops().is_empty());
        assert_eq!(w.last_forward(), at(0));
        assert_eq!(w.queue_holding_since(), None);

        w.observe(at(2), obs(&[("too_old", 5)], 2, 100, 10));
        assert_eq!(w.drops(), vec![("too_old", at(2))]);
        assert_eq!(w.last_forward(), at(2));
        assert_eq!(w.queue_holding_since(), Some(at(2)));

        w.observe(at(3), obs(&[("too_old", 5), ("expired", 1)], 3, 100, 20));
        assert_eq!(w.drops(), vec![("expired", at(3)), ("too_old", at(2))]);
        assert_eq!(w.corrupt_records_at(), Some(at(3)));
        assert_eq!(w.last_forward(), at(2), "nothing forwarded since");
        assert_eq!(w.queue_holding_since(), Some(at(2)), "held without a break");

        w.observe(at(4), obs(&[("too_old", 5), ("expired", 1)], 3, 100, 0));
        assert_eq!(w.queue_holding_since(), None, "emptied");
        w.observe(at(5), obs(&[("too_old", 5), ("expired", 1)], 3, 100, 7));
        assert_eq!(w.queue_holding_since(), Some(at(5)));
    }
}
