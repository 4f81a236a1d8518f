//! When chosen samples arrived: the benchmarks' delivery latency (from a request's receipt by
//! a relay to the sink's acceptance of its first sample).

use std::sync::Mutex;
use std::time::Instant;

use rustc_hash::FxHashMap;

use crate::loadgen::Probe;

/// The samples to watch for ([`crate::loadgen::PreparedLoad::probes`]) and when each first
/// arrived in an accepted request.
#[derive(Debug)]
pub struct Arrivals {
    index: FxHashMap<Probe, usize>,
    at: Mutex<Vec<Option<Instant>>>,
}

impl Arrivals {
    /// Watches for `probes`.
    pub fn new(probes: &[Probe]) -> Self {
        let index: FxHashMap<Probe, usize> =
            probes.iter().enumerate().map(|(i, p)| (*p, i)).collect();
        Self {
            at: Mutex::new(vec![None; probes.len()]),
            index,
        }
    }

    /// When `probe` first arrived, if it did and is watched.
    pub fn get(&self, probe: Probe) -> Option<Instant> {
        let i = *self.index.get(&probe)?;
        self.lock()[i]
    }

    /// Notes the arrival, at `now`, of every watched sample among `samples`.
    pub(super) fn record(&self, samples: impl Iterator<Item = Probe>, now: Instant) {
        let found: Vec<usize> = samples
            .filter_map(|p| self.index.get(&p).copied())
            .collect();
        if found.is_empty() {
            return;
        }
        let mut at = self.lock();
        for i in found {
            at[i].get_or_insert(now);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<Instant>>> {
        self.at.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_only_watched_samples_and_keeps_the_first_arrival() {
        let a = Arrivals::new(&[(1, 10), (2, 20)]);
        let t0 = Instant::now();
        a.record([(1, 10), (3, 30)].into_iter(), t0);
        let t1 = t0 + std::time::Duration::from_millis(5);
        a.record([(1, 10), (2, 20)].into_iter(), t1);
        assert_eq!(a.get((1, 10)), Some(t0));
        assert_eq!(a.get((2, 20)), Some(t1));
        assert_eq!(a.get((3, 30)), None);
    }
}
