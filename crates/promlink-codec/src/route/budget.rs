//! [`SeriesBudget`]: a route's `max_active_series`. It counts the distinct series the route
//! admitted within `active_series_window` (Azure counts a series as active for 12 hours after
//! its last sample) and refuses a series not seen before once the count is at the budget.
//!
//! A series is known by its 64-bit label hash (the shard key of its final labels), kept with
//! the second it was last admitted: 12 bytes a slot, in open-addressed tables (linear probing)
//! at most 3/4 full, so 1,000,000 active series take 24 MiB. The tables are sharded by hash,
//! each behind its own lock; the count of active series is one atomic, raised before a new
//! series is inserted and only when it stays within the budget, so concurrent requests never
//! admit more than the budget. Two series whose hashes collide count as one.
//!
//! Expired series leave a shard when it is swept: on admission, at most once every 1/64 of the
//! window, or from [`SeriesBudget::expire`] (called by promlink's gauge refresh, so the count
//! falls while no write arrives).

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shards (a power of two): enough that concurrent requests rarely wait for one another.
const SHARDS: usize = 16;
/// The smallest table, in slots.
const MIN_SLOTS: usize = 16;

/// A route's series budget. Cheap to share (`Arc`): every request admits through it.
#[derive(Debug)]
pub struct SeriesBudget {
    /// The most distinct series admitted within the window.
    max: AtomicUsize,
    /// Seconds a series stays active after it was last admitted.
    window: AtomicU32,
    /// Seconds between sweeps of one shard.
    sweep_every: AtomicU32,
    /// Time 0 of the stamps.
    start: Instant,
    /// Distinct series admitted within the window (those expired but not yet swept included).
    active: AtomicUsize,
    shards: Box<[Mutex<Table>]>,
}

/// One shard: series hashes and the second each was last admitted (0: an empty slot).
#[derive(Debug, Default)]
struct Table {
    keys: Vec<u64>,
    stamps: Vec<u32>,
    len: usize,
    /// When this shard was last swept.
    swept: u32,
}

impl SeriesBudget {
    /// A budget of `max` distinct series within `window` (at least one second).
    pub fn new(max: usize, window: Duration) -> Self {
        let b = Self {
            max: AtomicUsize::new(0),
            window: AtomicU32::new(1),
            sweep_every: AtomicU32::new(1),
            start: Instant::now(),
            active: AtomicUsize::new(0),
            shards: (0..SHARDS).map(|_| Mutex::new(Table::default())).collect(),
        };
        b.set_limits(max, window);
        b
    }

    /// Applies a reloaded budget and window. The series counted so far stay counted (and keep
    /// flowing, even above a lowered budget); new ones are admitted while the count is below
    /// `max`.
    pub fn set_limits(&self, max: usize, window: Duration) {
        let window = window.as_secs().clamp(1, u64::from(u32::MAX / 2)) as u32;
        self.max.store(max, Ordering::Release);
        self.window.store(window, Ordering::Release);
        self.sweep_every
            .store((window / 64).max(1), Ordering::Release);
    }

    /// The budget.
    pub fn max(&self) -> usize {
        self.max.load(Ordering::Acquire)
    }

    /// The window.
    pub fn window(&self) -> Duration {
        Duration::from_secs(u64::from(self.window.load(Ordering::Acquire)))
    }

    /// Now, as the stamp [`SeriesBudget::admit`] takes (read it once per request).
    pub fn now(&self) -> u32 {
        // 1-based: 0 marks an empty slot.
        self.start.elapsed().as_secs().min(u64::from(u32::MAX - 1)) as u32 + 1
    }

    /// Whether the series with label hash `key` may pass at `now`: yes when it was admitted
    /// within the window (its time is renewed), or when it is new and the budget has room (it
    /// is counted from now on); no when it is new and the budget is full.
    pub fn admit(&self, key: u64, now: u32) -> bool {
        let mixed = mix(key);
        let shard = (mixed >> 60) as usize % SHARDS;
        let mut t = self.shards[shard]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if now.saturating_sub(t.swept) >= self.sweep_every.load(Ordering::Relaxed) {
            self.sweep(&mut t, now);
        }
        if let Some(i) = t.find(key, mixed) {
            t.stamps[i] = now;
            return true;
        }
        // New: count it first, and only within the budget.
        let max = self.max();
        let admitted = self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            t.insert(key, mixed, now);
        }
        admitted
    }

    /// Distinct series admitted within the window (up to one sweep interval stale).
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Sweeps every shard that is due: expired series leave the count.
    pub fn expire(&self) {
        self.expire_at(self.now());
    }

    fn expire_at(&self, now: u32) {
        for shard in self.shards.iter() {
            let mut t = shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if now.saturating_sub(t.swept) >= self.sweep_every.load(Ordering::Relaxed) {
                self.sweep(&mut t, now);
            }
        }
    }

    /// The bytes the tables hold (their slots, whether used or not).
    pub fn memory_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let t = s.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                t.keys.capacity() * 8 + t.stamps.capacity() * 4
            })
            .sum::<usize>()
            + std::mem::size_of::<Self>()
    }

    /// Drops the series of `t` last admitted a window or more before `now`.
    fn sweep(&self, t: &mut Table, now: u32) {
        t.swept = now;
        let window = self.window.load(Ordering::Relaxed);
        let live = |stamp: u32| stamp != 0 && now.saturating_sub(stamp) < window;
        let expired = t.len - t.stamps.iter().filter(|s| live(**s)).count();
        if expired == 0 {
            return;
        }
        let old = std::mem::take(t);
        *t = Table::with_slots(slots_for(old.len - expired));
        t.swept = now;
        for (key, stamp) in old.keys.into_iter().zip(old.stamps) {
            if live(stamp) {
                t.insert(key, mix(key), stamp);
            }
        }
        self.active.fetch_sub(expired, Ordering::AcqRel);
    }
}

impl Table {
    fn with_slots(n: usize) -> Self {
        Self {
            keys: vec![0; n],
            stamps: vec![0; n],
            len: 0,
            swept: 0,
        }
    }

    fn find(&self, key: u64, mixed: u64) -> Option<usize> {
        if self.keys.is_empty() {
            return None;
        }
        let mask = self.keys.len() - 1;
        let mut i = mixed as usize & mask;
        loop {
            if self.stamps[i] == 0 {
                return None;
            }
            if self.keys[i] == key {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Inserts a key [`Table::find`] did not find, growing the table to stay at most 3/4 full.
    fn insert(&mut self, key: u64, mixed: u64, stamp: u32) {
        if (self.len + 1) * 4 > self.keys.len() * 3 {
            let old = std::mem::replace(self, Self::with_slots(slots_for(self.len + 1)));
            self.swept = old.swept;
            for (k, s) in old.keys.into_iter().zip(old.stamps) {
                if s != 0 {
                    self.insert(k, mix(k), s);
                }
            }
        }
        let mask = self.keys.len() - 1;
        let mut i = mixed as usize & mask;
        while self.stamps[i] != 0 {
            i = (i + 1) & mask;
        }
        self.keys[i] = key;
        self.stamps[i] = stamp;
        self.len += 1;
    }
}

/// Slots for `n` series: a power of two at most 3/4 full, doubling room to grow.
fn slots_for(n: usize) -> usize {
    (n * 4 / 3 + 1).next_power_of_two().max(MIN_SLOTS)
}

/// The label hash mixed (splitmix64's finalizer): its top bits pick the shard, its low bits
/// the slot.
fn mix(key: u64) -> u64 {
    let mut z = key;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_budget_and_known_series_keep_flowing() {
        let b = SeriesBudget::new(100, Duration::from_secs(3600));
        let now = b.now();
        assert!((0..100u64).all(|k| b.admit(k, now)));
        assert_eq!(b.active(), 100);
        // Full: new series are refused, known ones pass.
        assert!(!b.admit(100, now));
        assert!(!b.admit(u64::MAX, now));
        assert!((0..100u64).all(|k| b.admit(k, now)));
        assert_eq!(b.active(), 100);
    }

    #[test]
    fn series_leave_the_count_a_window_after_they_were_last_admitted() {
        let b = SeriesBudget::new(10, Duration::from_secs(640));
        assert!((0..10u64).all(|k| b.admit(k, 1)));
        // 0..5 seen again at 400: they stay; 5..10 were last seen at 1 and expire at 641.
        assert!((0..5u64).all(|k| b.admit(k, 400)));
        b.expire_at(640);
        assert_eq!(b.active(), 10, "not yet expired at 640");
        assert!(!b.admit(99, 640), "full at 640");
        // A shard is swept at most every 1/64 of the window (10 s).
        b.expire_at(649);
        assert_eq!(b.active(), 10, "swept at 640, not again before 650");
        b.expire_at(650);
        assert_eq!(b.active(), 5);
        // The five that left made room for five new ones, and the five that stayed are known.
        assert_eq!((100..120u64).filter(|k| b.admit(*k, 650)).count(), 5);
        assert!((0..5u64).all(|k| b.admit(k, 650)));
        assert_eq!(b.active(), 10);
        // A series that expired counts as new when it comes back.
        assert!(!b.admit(7, 650));
    }

    #[test]
    fn a_reloaded_budget_keeps_what_it_counted() {
        let b = SeriesBudget::new(10, Duration::from_secs(3600));
        assert!((0..10u64).all(|k| b.admit(k, 1)));
        b.set_limits(5, Duration::from_secs(3600));
        // Above the lowered budget: the counted series flow, new ones wait for room.
        assert!((0..10u64).all(|k| b.admit(k, 2)));
        assert!(!b.admit(50, 2));
        b.set_limits(11, Duration::from_secs(3600));
        assert!(b.admit(50, 2));
        assert!(!b.admit(51, 2));
        assert_eq!((b.active(), b.max()), (11, 11));
    }

    #[test]
    fn concurrent_admission_never_exceeds_the_budget() {
        let b = std::sync::Arc::new(SeriesBudget::new(5_000, Duration::from_secs(3600)));
        let admitted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4u64)
                .map(|t| {
                    let b = b.clone();
                    s.spawn(move || {
                        let now = b.now();
                        (0..4_000u64)
                            .filter(|i| b.admit(t * 1_000_000 + i, now))
                            .count()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(admitted, 5_000);
        assert_eq!(b.active(), 5_000);
    }

    #[test]
    fn a_million_series_fit_in_32_mib() {
        let b = SeriesBudget::new(1_000_000, Duration::from_secs(43_200));
        let now = b.now();
        let admitted = (0..1_000_000u64)
            .filter(|k| b.admit(k.wrapping_mul(0x9e37_79b9_7f4a_7c15), now))
            .count();
        assert_eq!(admitted, 1_000_000);
        assert!(!b.admit(7, now), "full");
        let mib = b.memory_bytes() as f64 / (1 << 20) as f64;
        assert!(mib <= 32.0, "{mib} MiB");
    }
}
