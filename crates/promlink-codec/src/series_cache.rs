//! The series cache: the label sections of remote write 1.0 series that the one-pass scan
//! accepted, with their shard key.
//!
//! Prometheus sends the same series every scrape, so the scan's per-label work (name rules,
//! UTF-8, order, limits, case collisions, the shard key's hash) repeats on the same bytes. A
//! series whose label bytes are in the cache skips it: only its samples are walked (and, with
//! `cluster` set, its label names compared with `cluster` to find where the label goes).
//!
//! - **Key.** A 128-bit xxh3 hash of the series' label fields exactly as the sender wrote them,
//!   seeded at random per table (a sender cannot craft two label sections that share an
//!   entry) and mixed with the label limits and the configured `cluster` value: an answer is
//!   only reused under the options it was found under. The high half picks the set, 62 bits
//!   of the low half are kept in the slot. Only valid label sections are stored, and equal
//!   bytes always give the same answer, so a hit can never let an invalid series through
//!   (`v1::tests` checks this on generated input).
//! - **Slots.** Two words: the kept hash bits mixed with the shard key (through a random
//!   multiplier), and the shard key. A set is [`WAYS`] slots in two adjacent cache lines,
//!   fetched together, so a lookup waits for memory once. Readers take no lock on the table
//!   (a request takes a read lock once, to find the current table): a slot rewritten while it
//!   is read mixes two entries' words, which fails the mix and reads as a miss.
//! - **What the hash does not resist.** xxh3 is not a keyed PRF: for crafted pairs of 32 to
//!   240 bytes (two 8-byte words complemented) its seeded variants collide with about 2^-27
//!   probability per pair over the seed (<https://github.com/Cyan4973/xxHash/issues/1127>). A
//!   sender that sent on the order of 10^8 such pairs, one of each valid, could get one
//!   invalid label set past the checks (Azure then refuses it). The relabel cache shares this.
//!   A keyed universal hash would close it at a higher hashing cost.
//! - **Eviction.** A slot read since it was last passed carries a mark. A miss on a full set
//!   acts for one series in [`ACT_EVERY`], chosen by its hash (the others are not stored while
//!   that table lives): it passes one slot (picked by the hash too), which is spared if
//!   marked (the mark cleared, the newcomer turned away) and replaced if not. Entries read
//!   again between two passes stay, so a cyclic scan over more series than fit keeps hitting
//!   on the part that fits, where LRU would evict each entry just before its series came
//!   back.
//! - **Memory.** The table starts at [`START_BYTES`] and doubles when half its slots are
//!   used, up to the configured bound (`series_cache_bytes`, 16 MiB by default: 1,048,576
//!   slots, half a million series before entries are replaced). A new table starts empty (its
//!   series miss once more); until the requests that hold the old one end, both are in
//!   memory (at most one and a half times the bound).
//! - **Prefetch.** Between two scrapes of a series the request bytes streaming through the
//!   CPU's cache push its set out. A [`Session`] hashes every series of a request first and
//!   reads the sets of the next run of series together, so the memory is waited for once per
//!   run, not once per series.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

use crate::options::Options;
use crate::wire::{len_at, Fields, WireType};

/// The default bound of the cache's memory (`series_cache_bytes`).
pub const DEFAULT_SERIES_CACHE_BYTES: usize = 16 << 20;
/// The first table's size (or the bound, when smaller).
pub const START_BYTES: usize = 1 << 20;
/// Slots per set: two cache lines.
const WAYS: usize = 8;
/// Bytes per slot.
const SLOT_BYTES: usize = 16;
/// Misses on a full set act one time in this many.
const ACT_EVERY: u64 = 4;
/// Series whose sets are read together.
const RUN: usize = 32;
/// A slot's first word: bit 0 is the mark, bit 1 is always set (0: an empty slot).
const MARK: u64 = 1;
const FULL: u64 = 2;

/// What a cache did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeriesCacheStats {
    /// Series whose label section was found.
    pub hits: u64,
    /// Series looked up and not found.
    pub misses: u64,
    /// The current table's size, bytes.
    pub bytes: usize,
}

/// The series cache (see the module documentation), shared by every request.
pub struct SeriesCache {
    max_bytes: usize,
    table: RwLock<Arc<Table>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for SeriesCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // What configures it only: two caches of one bound are the same setting.
        f.debug_struct("SeriesCache")
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl SeriesCache {
    /// A cache of at most `max_bytes`; `None` when that is too small for one table (0: off).
    pub fn new(max_bytes: usize) -> Option<SeriesCache> {
        let table = Table::new(max_bytes.min(START_BYTES))?;
        Some(SeriesCache {
            max_bytes,
            table: RwLock::new(Arc::new(table)),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// Its memory bound.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Totals so far.
    pub fn stats(&self) -> SeriesCacheStats {
        SeriesCacheStats {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            bytes: self.current().bytes(),
        }
    }

    fn current(&self) -> Arc<Table> {
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Hashes the label section of every series of the 1.0 `WriteRequest` `raw` for the walk
    /// that follows (stopping at the first field that does not parse: the walk refuses the
    /// request there).
    pub(crate) fn session(&self, opts: &Options, raw: &[u8]) -> Session<'_> {
        let table = self.current();
        let seed = table.seed ^ options_fingerprint(opts);
        let mut ends = Vec::new();
        for field in Fields::new(raw) {
            let Ok(field) = field else { break };
            if field.number != crate::message::FIELD_TIMESERIES || field.wire != WireType::Len {
                continue;
            }
            // The walk refuses a request with more series: hashing them all first would only
            // let a small body of empty series take a large amount of memory.
            if ends.len() > opts.limits.max_series {
                break;
            }
            let series = field.data;
            let end = labels_end(series);
            let hash = xxhash_rust::xxh3::xxh3_128_with_seed(&series[..end], seed);
            ends.push((end, hash));
        }
        Session {
            cache: self,
            table,
            ends,
            warmed: 0,
            tally: SeriesCacheStats::default(),
            stored: false,
        }
    }

    /// Replaces a table half full by one twice its size, within the bound.
    fn grow(&self, full: &Arc<Table>) {
        let bytes = (full.bytes() * 2).min(self.max_bytes);
        if full.used.load(Relaxed) * 2 < full.slots() || Table::sets_for(bytes) <= full.sets.len() {
            return;
        }
        if !Arc::ptr_eq(&self.current(), full) {
            return;
        }
        // Allocated before the lock is taken: requests keep reading the old table meanwhile.
        let Some(bigger) = Table::new(bytes) else {
            return;
        };
        let mut current = self
            .table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if Arc::ptr_eq(&current, full) {
            *current = Arc::new(bigger);
        }
    }
}

/// Where the leading label fields of an encoded `TimeSeries` end (0 when it starts
/// otherwise; at the first one that does not parse).
fn labels_end(series: &[u8]) -> usize {
    let (mut i, mut end) = (0, 0);
    while series.get(i) == Some(&0x0a) {
        i += 1;
        if len_at(series, &mut i).is_none() {
            break;
        }
        end = i;
    }
    end
}

/// What the hash is mixed with: an answer holds only under the options it was found under.
fn options_fingerprint(opts: &Options) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    h.write_u64(opts.limits.fingerprint());
    match &opts.cluster {
        Some(c) => {
            h.write_u8(1);
            h.write(c.as_bytes());
        }
        None => h.write_u8(0),
    }
    h.finish()
}

/// The cache as one request's walk uses it: the request's hashes, one table throughout, and
/// counts added to the cache's once, at the end.
pub(crate) struct Session<'c> {
    cache: &'c SeriesCache,
    table: Arc<Table>,
    /// Per `TimeSeries` field, in order: where its label fields end, and their hash.
    ends: Vec<(usize, u128)>,
    /// Series before this one are warmed.
    warmed: usize,
    /// Lookups, added to the cache's totals at the end.
    tally: SeriesCacheStats,
    /// Whether a series was stored: only then may the table have filled up.
    stored: bool,
}

impl Session<'_> {
    /// Where the label section of the `index`th series ends, and its shard key when the cache
    /// knows it.
    pub(crate) fn get(&mut self, index: usize) -> Option<(usize, u64)> {
        if index >= self.warmed {
            let run = self.ends.get(index..).unwrap_or_default();
            let run = &run[..run.len().min(RUN)];
            let touched = run.iter().fold(0, |t, &(_, h)| t ^ self.table.warm(h));
            std::hint::black_box(touched);
            self.warmed = index + RUN;
        }
        let &(end, hash) = self.ends.get(index)?;
        match self.table.get(hash) {
            Some(key) => {
                self.tally.hits += 1;
                Some((end, key))
            }
            None => {
                self.tally.misses += 1;
                None
            }
        }
    }

    /// Counts the last hit as a miss: the series was scanned in full after all (its samples
    /// are not encoded as the scan takes them).
    pub(crate) fn scanned_anyway(&mut self) {
        self.tally.hits = self.tally.hits.saturating_sub(1);
        self.tally.misses += 1;
    }

    /// Remembers that the scan found the labels of the `index`th series valid (they end at
    /// `labels_end`), with their shard key.
    pub(crate) fn put(&mut self, index: usize, labels_end: usize, key: u64) {
        let Some(&(end, hash)) = self.ends.get(index) else {
            return;
        };
        if end != labels_end {
            return;
        }
        self.stored |= self.table.put(hash, key) == Put::Stored;
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let t = &self.tally;
        for (total, n) in [(&self.cache.hits, t.hits), (&self.cache.misses, t.misses)] {
            if n > 0 {
                total.fetch_add(n, Relaxed);
            }
        }
        if self.stored {
            self.cache.grow(&self.table);
        }
    }
}

/// What [`Table::put`] did.
#[derive(Debug, PartialEq, Eq)]
enum Put {
    Stored,
    TurnedAway,
    /// Already there (another request stored it meanwhile).
    Present,
}

/// One set: two cache lines, aligned so that they are fetched together.
#[repr(align(128))]
struct Set([AtomicU64; 2 * WAYS]);

/// A fixed-size table of sets.
struct Table {
    seed: u64,
    /// An odd multiplier drawn at random, mixing each slot's key into its first word: a
    /// sender cannot aim two keys at one mix.
    mix: u64,
    /// A power of two of them.
    sets: Box<[Set]>,
    /// Slots holding a series.
    used: AtomicUsize,
}

impl Table {
    /// Sets in a table of at most `bytes`: the largest power of two that fits (0: none).
    fn sets_for(bytes: usize) -> usize {
        let fit = bytes / (WAYS * SLOT_BYTES);
        if fit == 0 {
            return 0;
        }
        1 << (usize::BITS - 1 - fit.leading_zeros())
    }

    fn new(bytes: usize) -> Option<Table> {
        let sets = Self::sets_for(bytes);
        if sets < 2 {
            return None;
        }
        let random = || {
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        };
        Some(Table {
            seed: random(),
            mix: random() | 1,
            sets: (0..sets)
                .map(|_| Set(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
            used: AtomicUsize::new(0),
        })
    }

    fn slots(&self) -> usize {
        self.sets.len() * WAYS
    }

    fn bytes(&self) -> usize {
        self.slots() * SLOT_BYTES
    }

    /// The set a hash lives in.
    #[inline]
    fn set(&self, hash: u128) -> &Set {
        &self.sets[(hash >> 64) as usize & (self.sets.len() - 1)]
    }

    /// Reads the set a lookup of `hash` reads (its first line; the second comes with it).
    #[inline]
    fn warm(&self, hash: u128) -> u64 {
        self.set(hash).0[0].load(Relaxed)
    }

    /// The slot of `set` holding `hash`, and its shard key.
    #[inline]
    fn find(&self, set: &Set, hash: u128) -> Option<(usize, u64)> {
        for w in 0..WAYS {
            let head = set.0[2 * w].load(Relaxed);
            if head == 0 {
                continue;
            }
            let key = set.0[2 * w + 1].load(Relaxed);
            if head & !MARK == head_word(hash, key, self.mix) {
                return Some((w, key));
            }
        }
        None
    }

    fn get(&self, hash: u128) -> Option<u64> {
        let set = self.set(hash);
        let (way, key) = self.find(set, hash)?;
        let head = &set.0[2 * way];
        if head.load(Relaxed) & MARK == 0 {
            head.fetch_or(MARK, Relaxed);
        }
        Some(key)
    }

    fn put(&self, hash: u128, key: u64) -> Put {
        let set = self.set(hash);
        if self.find(set, hash).is_some() {
            return Put::Present;
        }
        let way = match (0..WAYS).find(|&w| set.0[2 * w].load(Relaxed) == 0) {
            Some(w) => {
                self.used.fetch_add(1, Relaxed);
                w
            }
            None => {
                // Bits that neither pick the set nor are kept decide.
                let pick = (hash >> 120) as u64;
                if !pick.is_multiple_of(ACT_EVERY) {
                    return Put::TurnedAway;
                }
                let w = (pick / ACT_EVERY) as usize % WAYS;
                let head = &set.0[2 * w];
                if head.load(Relaxed) & MARK != 0 {
                    head.fetch_and(!MARK, Relaxed);
                    return Put::TurnedAway;
                }
                w
            }
        };
        // Readers skip the slot while it changes; one that read its old first word before
        // fails the mix with the new key. Two writers on one slot leave one entry's words, or
        // a mix no lookup matches.
        set.0[2 * way].store(0, Relaxed);
        set.0[2 * way + 1].store(key, Relaxed);
        // A newcomer is marked: it is spared the first time it is passed.
        set.0[2 * way].store(head_word(hash, key, self.mix) | MARK, Relaxed);
        Put::Stored
    }
}

/// A slot's first word without its mark: 62 bits of the hash's low half mixed with the shard
/// key (times the table's random odd `mix`), and [`FULL`].
#[inline]
fn head_word(hash: u128, key: u64, mix: u64) -> u64 {
    ((hash as u64) ^ key.wrapping_mul(mix).rotate_left(31)) & !MARK | FULL
}

#[cfg(test)]
mod tests;
