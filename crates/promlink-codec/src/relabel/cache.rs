//! A bounded cache of what the relabel rules make of each series.
//!
//! Prometheus sends the same series every scrape, so running the rules over every series of
//! every request repeats the same work: parsing labels into strings, regex matches, MD5s. The
//! cache remembers, per label set, whether the rules kept it unchanged, dropped it, or changed
//! it, and for a changed one how to write its new labels from the old ones ([`ops`]). Only a
//! miss runs the rules.
//!
//! - **Key.** A 128-bit xxh3 hash of the labels as the rules see them: on the 1.0 fast path the
//!   sender's label fields as they came (an added `cluster` label mixed into the seed), else
//!   their canonical encoding. Equal bytes are equal labels, so two encodings of one label set
//!   only cost two entries. The hash is seeded at random per cache so that a sender cannot
//!   craft two label sets that share an entry, and the label limits are mixed in: an outcome
//!   is only reused under the limits it was checked against.
//! - **Memory.** Fixed: [`SLOT_BYTES`] a slot (hash, state and body) and one tag byte,
//!   allocated zeroed once (the pages are only resident once used), in sets of [`WAYS`],
//!   behind [`SHARDS`] locks. Each part of a slot lives in an array of its own: a lookup reads
//!   a set's tags (a byte of each hash) and, when one matches, a 16-byte hash; only a changed
//!   series reads its body (key and ops). Between two scrapes of a series the request bytes
//!   that stream through the CPU's cache push its entry out, so the receiver first reads the
//!   entries of the next few series together ([`OutcomeCache::warm`]): the memory is waited
//!   for once per run, not once per series. A series can live in one of two sets (two choices
//!   keep sets from overflowing well before the table is full). An outcome whose ops do not
//!   fit a slot is not cached (its series runs the rules each time).
//! - **Eviction.** Each set has a clock hand, which moves one slot every [`STEP_EVERY`]
//!   misses on a full set. A slot read (or stored) since the hand last passed is spared (its
//!   mark cleared) and the newcomer is turned away; an unread one is replaced. Entries that
//!   are read again within one turn of the hand stay; entries no series reads any more go
//!   within two turns. A cyclic scan over more series than fit (every scrape of targets too
//!   large for the cache, up to about four times its size) therefore keeps hitting on the part
//!   that fits, where LRU or plain CLOCK would evict each entry just before its series came
//!   back.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use crate::options::Limits;

/// Bytes per slot besides its tag: the hash, the state byte and the body.
pub(crate) const SLOT_BYTES: usize = 128;
/// Slots per set (a set's tags are one `u64`).
const WAYS: usize = 8;
/// Locks.
const SHARDS: usize = 64;
/// Misses on a full set per move of its clock hand.
const STEP_EVERY: u8 = 4;
/// A slot's body: a changed series' key, then the ops' length, then the ops.
const BODY: usize = SLOT_BYTES - 16 - 1;
const KEY: usize = 0;
const LEN: usize = 8;
const OPS: usize = 9;
/// Most ops bytes a slot holds.
pub(crate) const MAX_OPS: usize = BODY - OPS;
/// The state byte: the [`Kind`] in the low bits, and the clock's mark.
const KIND_BITS: u8 = 0b11;
const MARK: u8 = 0x80;

/// The default memory bound of one cache (one set of rules).
pub const DEFAULT_CACHE_BYTES: usize = 16 << 20;

/// A remembered outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Unchanged = 1,
    Dropped = 2,
    Changed = 3,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Unchanged),
            2 => Some(Kind::Dropped),
            3 => Some(Kind::Changed),
            _ => None,
        }
    }
}

/// An outcome read from the cache.
pub(crate) struct Hit {
    pub(crate) kind: Kind,
    /// The changed series' shard key.
    pub(crate) key: u64,
    len: usize,
    ops: [u8; MAX_OPS],
}

impl Hit {
    /// How to write the changed labels ([`ops`]).
    pub(crate) fn ops(&self) -> &[u8] {
        &self.ops[..self.len]
    }
}

/// What only the holder of a lock reads: each slot's state and body, and each set's clock.
/// Slot and set indices are the shard's own (from 0).
struct Shard {
    /// Each slot's kind and mark.
    states: Vec<u8>,
    /// Each slot's body (used by [`Kind::Changed`] only).
    bodies: Vec<[u8; BODY]>,
    /// Each set's clock hand.
    hands: Vec<u8>,
    /// Each set's misses since its hand last moved.
    waiting: Vec<u8>,
    stats: CacheStats,
}

/// What a cache did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups that found their series.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Outcomes stored (new or in place of another).
    pub stored: u64,
    /// Outcomes not stored: both sets were full and the hand spared the slot it passed (or
    /// did not move), or the ops did not fit a slot.
    pub turned_away: u64,
}

/// The cache of one set of rules (see the module documentation).
pub(crate) struct OutcomeCache {
    seed: u64,
    /// Sets per lock.
    sets: usize,
    shards: Box<[Mutex<Shard>]>,
    /// Each set's tags, a byte a slot ([`tag`]; 0: empty), over every lock (set `g` of lock
    /// `s` is `s * sets + g`). Written only by the holder of the set's lock, read by it and
    /// by [`OutcomeCache::warm`], which only brings memory into the CPU's cache.
    tags: Box<[AtomicU64]>,
    /// Each slot's full hash, two words a slot, over every lock like `tags`: a set's
    /// hashes are two whole cache lines (`2 * set` and `2 * set + 1`).
    hashes: Box<[Line]>,
}

/// Four slots' hashes: one cache line.
#[repr(align(64))]
struct Line([AtomicU64; 8]);

impl OutcomeCache {
    /// A cache of at most `bytes` of slots; `None` when that is less than one set per lock.
    pub(crate) fn new(bytes: usize) -> Option<OutcomeCache> {
        let sets = bytes / (SHARDS * WAYS * (SLOT_BYTES + 1));
        if sets < 2 {
            return None;
        }
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    states: vec![0; sets * WAYS],
                    bodies: vec![[0u8; BODY]; sets * WAYS],
                    hands: vec![0; sets],
                    waiting: vec![0; sets],
                    stats: CacheStats::default(),
                })
            })
            .collect();
        Some(OutcomeCache {
            seed: std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish(),
            sets,
            shards,
            tags: (0..SHARDS * sets).map(|_| AtomicU64::new(0)).collect(),
            hashes: (0..SHARDS * sets * 2)
                .map(|_| Line(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
        })
    }

    /// The memory its slots take once all are used.
    pub(crate) fn capacity_bytes(&self) -> usize {
        SHARDS * self.sets * WAYS * (SLOT_BYTES + 1)
    }

    /// The key of the labels `canonical` (canonically encoded), checked under `limits`.
    pub(crate) fn hash(&self, canonical: &[u8], limits: &Limits) -> u128 {
        self.hash_with(canonical, limits, None)
    }

    /// The key of the label fields `raw` as a sender wrote them, with the label
    /// `cluster="<cluster>"` added when given. Another encoding of the same labels has
    /// another key (and entry), which costs a miss, never a wrong answer.
    pub(crate) fn hash_with(&self, raw: &[u8], limits: &Limits, cluster: Option<&str>) -> u128 {
        let mut seed = self.seed ^ limits.fingerprint();
        if let Some(c) = cluster {
            let mut h = rustc_hash::FxHasher::default();
            h.write(b"cluster");
            h.write(c.as_bytes());
            seed ^= h.finish() | 1;
        }
        // 0 marks an empty slot.
        xxhash_rust::xxh3::xxh3_128_with_seed(raw, seed) | 1
    }

    /// The lock a hash lives under, and its two sets (the lock's own indices).
    fn place(&self, hash: u128) -> (usize, usize, usize) {
        // (Bit 0 is always set.)
        let shard = ((hash >> 8) as usize) % SHARDS;
        let a = ((hash >> 32) as u64 % self.sets as u64) as usize;
        let mut b = ((hash >> 64) as u64 % self.sets as u64) as usize;
        if b == a {
            b = (a + 1) % self.sets;
        }
        (shard, a, b)
    }

    /// The slot (the lock's own index) of set `set` of lock `shard` that holds `hash`. Under
    /// that lock, exact; without it ([`OutcomeCache::warm`]), a guess.
    #[inline]
    fn find(&self, shard: usize, set: usize, hash: u128) -> Option<usize> {
        let g = shard * self.sets + set;
        let tags = self.tags[g].load(Relaxed).to_le_bytes();
        let t = tag(hash);
        for (w, &x) in tags.iter().enumerate() {
            if x == t && self.hash_at(g * WAYS + w) == hash {
                return Some(set * WAYS + w);
            }
        }
        None
    }

    /// The two words of slot `slot`'s hash (an index over every lock).
    #[inline]
    fn hash_words(&self, slot: usize) -> [&AtomicU64; 2] {
        let line = &self.hashes[slot / 4].0;
        let w = (slot % 4) * 2;
        [&line[w], &line[w + 1]]
    }

    /// The hash in slot `slot` (an index over every lock).
    #[inline]
    fn hash_at(&self, slot: usize) -> u128 {
        let [lo, hi] = self.hash_words(slot);
        u128::from(lo.load(Relaxed)) | u128::from(hi.load(Relaxed)) << 64
    }

    /// Reads, without locking, the cache lines a lookup of `hash` will read (the tags and
    /// hashes of its two sets), with no branch on what they hold, so that the lookups of a run
    /// of series wait for memory together instead of one after another: call it for the next
    /// few series first. Changes nothing; the result only keeps the reads from being left out.
    pub(crate) fn warm(&self, hash: u128) -> u64 {
        let (shard, a, b) = self.place(hash);
        let mut touched = 0;
        for set in [shard * self.sets + a, shard * self.sets + b] {
            touched ^= self.tags[set].load(Relaxed);
            touched ^= self.hashes[2 * set].0[0].load(Relaxed);
            touched ^= self.hashes[2 * set + 1].0[0].load(Relaxed);
        }
        touched
    }

    /// The outcome stored for `hash`, marked as read.
    pub(crate) fn get(&self, hash: u128) -> Option<Hit> {
        let (shard, a, b) = self.place(hash);
        let mut s = lock(&self.shards[shard]);
        let found = self
            .find(shard, a, hash)
            .or_else(|| self.find(shard, b, hash));
        let Some(i) = found else {
            s.stats.misses += 1;
            return None;
        };
        s.stats.hits += 1;
        s.states[i] |= MARK;
        let kind = Kind::from_byte(s.states[i] & KIND_BITS)?;
        let mut hit = Hit {
            kind,
            key: 0,
            len: 0,
            ops: [0u8; MAX_OPS],
        };
        if kind == Kind::Changed {
            let body = &s.bodies[i];
            hit.key = read_u64(&body[KEY..KEY + 8]);
            hit.len = usize::from(body[LEN]).min(MAX_OPS);
            hit.ops[..hit.len].copy_from_slice(&body[OPS..OPS + hit.len]);
        }
        Some(hit)
    }

    /// Stores an outcome for `hash` (see the module documentation for when it is turned away).
    pub(crate) fn put(&self, hash: u128, kind: Kind, key: u64, ops: &[u8]) {
        let (shard, a, b) = self.place(hash);
        let mut s = lock(&self.shards[shard]);
        if ops.len() > MAX_OPS {
            s.stats.turned_away += 1;
            return;
        }
        if self
            .find(shard, a, hash)
            .or_else(|| self.find(shard, b, hash))
            .is_some()
        {
            // Another request stored it meanwhile.
            return;
        }
        let tags = |set: usize| {
            self.tags[shard * self.sets + set]
                .load(Relaxed)
                .to_le_bytes()
        };
        // An empty slot in the emptier set, else the hand of the first set decides.
        let used = |set: usize| tags(set).iter().filter(|&&t| t != 0).count();
        let set = if used(b) < used(a) { b } else { a };
        let at = match tags(set).iter().position(|&t| t == 0) {
            Some(w) => set * WAYS + w,
            None => {
                s.waiting[a] += 1;
                if s.waiting[a] < STEP_EVERY {
                    s.stats.turned_away += 1;
                    return;
                }
                s.waiting[a] = 0;
                let hand = usize::from(s.hands[a]);
                s.hands[a] = ((hand + 1) % WAYS) as u8;
                let i = a * WAYS + hand;
                if s.states[i] & MARK != 0 {
                    s.states[i] &= !MARK;
                    s.stats.turned_away += 1;
                    return;
                }
                i
            }
        };
        s.stats.stored += 1;
        if kind == Kind::Changed {
            let body = &mut s.bodies[at];
            body[KEY..KEY + 8].copy_from_slice(&key.to_le_bytes());
            body[LEN] = ops.len() as u8;
            body[OPS..OPS + ops.len()].copy_from_slice(ops);
        }
        // A newcomer gets one turn of the hand to be read again.
        s.states[at] = kind as u8 | MARK;
        let (set, way) = (at / WAYS, at % WAYS);
        let g = shard * self.sets + set;
        let [lo, hi] = self.hash_words(g * WAYS + way);
        lo.store(hash as u64, Relaxed);
        hi.store((hash >> 64) as u64, Relaxed);
        // Last: a slot is found by its tag only once it is whole.
        let mut t = tags(set);
        t[way] = tag(hash);
        self.tags[g].store(u64::from_le_bytes(t), Relaxed);
    }

    /// Totals over every lock.
    pub(crate) fn stats(&self) -> CacheStats {
        let mut t = CacheStats::default();
        for shard in self.shards.iter() {
            let s = lock(shard).stats;
            t.hits += s.hits;
            t.misses += s.misses;
            t.stored += s.stored;
            t.turned_away += s.turned_away;
        }
        t
    }
}

/// A lock whose holder panicked still guards consistent slots (a slot is found by its tag only
/// once it is whole, and an evicted one's tag still matches only its old hash): carry on with
/// it.
fn lock(m: &Mutex<Shard>) -> std::sync::MutexGuard<'_, Shard> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A slot's tag: the top byte of its hash, never 0 (an empty slot).
fn tag(hash: u128) -> u8 {
    ((hash >> 120) as u8).max(1)
}

fn read_u64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(b)
}

/// How a changed series' labels are written from the labels the rules were given: one entry
/// per output label, in order.
///
/// - `0..=0x7f`: input label `i` as it was (name and value).
/// - `0x80 | flags`, then the name, then the value, each either an input index (one byte) or
///   a literal (a length byte, then the bytes): flag `1` says the name is a literal, flag `2`
///   that the value is.
pub(crate) mod ops {
    use crate::message::LabelPair;

    const NAME_LITERAL: u8 = 1;
    const VALUE_LITERAL: u8 = 2;

    /// Appends the ops that write `output` from `input` to `out`; `false` when they cannot be
    /// written (more than 128 input labels, a literal over 255 bytes, or over `max` bytes).
    pub(crate) fn encode<'a>(
        input: &[LabelPair<'_>],
        output: impl Iterator<Item = (&'a [u8], &'a [u8])>,
        out: &mut Vec<u8>,
        max: usize,
    ) -> bool {
        if input.len() > 0x80 {
            return false;
        }
        for (name, value) in output {
            if let Some(i) = input.iter().position(|&(n, v)| n == name && v == value) {
                out.push(i as u8);
            } else {
                let n = input.iter().position(|&(n, _)| n == name);
                let v = input.iter().position(|&(_, v)| v == value);
                let flags =
                    u8::from(n.is_none()) * NAME_LITERAL + u8::from(v.is_none()) * VALUE_LITERAL;
                out.push(0x80 | flags);
                for (found, bytes) in [(n, name), (v, value)] {
                    match found {
                        Some(i) => out.push(i as u8),
                        None => {
                            let Ok(len) = u8::try_from(bytes.len()) else {
                                return false;
                            };
                            out.push(len);
                            out.extend_from_slice(bytes);
                        }
                    }
                }
            }
            if out.len() > max {
                return false;
            }
        }
        true
    }

    /// Calls `label` with each output label the ops write from `input` (with the index of
    /// the input label when it is kept whole); `false` when the ops do not fit `input` (never
    /// for the input they were made from).
    pub(crate) fn decode<'a>(
        ops: &'a [u8],
        input: &[LabelPair<'a>],
        mut label: impl FnMut(Option<usize>, &'a [u8], &'a [u8]),
    ) -> bool {
        let mut at = 0;
        // One name or value: an input index, or a literal.
        let part = |at: &mut usize, literal: bool, of_name: bool| -> Option<&'a [u8]> {
            let b = usize::from(*ops.get(*at)?);
            *at += 1;
            if literal {
                let s = ops.get(*at..*at + b)?;
                *at += b;
                Some(s)
            } else {
                let &(n, v) = input.get(b)?;
                Some(if of_name { n } else { v })
            }
        };
        while at < ops.len() {
            let tag = ops[at];
            at += 1;
            if tag < 0x80 {
                let Some(&(n, v)) = input.get(usize::from(tag)) else {
                    return false;
                };
                label(Some(usize::from(tag)), n, v);
                continue;
            }
            let Some(name) = part(&mut at, tag & NAME_LITERAL != 0, true) else {
                return false;
            };
            let Some(value) = part(&mut at, tag & VALUE_LITERAL != 0, false) else {
                return false;
            };
            label(None, name, value);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(sets_per_shard: usize) -> OutcomeCache {
        OutcomeCache::new(sets_per_shard * SHARDS * WAYS * (SLOT_BYTES + 1)).expect("large enough")
    }

    #[test]
    fn a_stored_outcome_is_found_with_its_key_and_ops() {
        let c = cache(2);
        let h = c.hash(b"labels", &Limits::default());
        assert!(c.get(h).is_none());
        c.put(h, Kind::Changed, 42, b"\x00\x01");
        let hit = c.get(h).expect("stored");
        assert_eq!(
            (hit.kind, hit.key, hit.ops()),
            (Kind::Changed, 42, &b"\x00\x01"[..])
        );
        let other = c.hash(
            b"labels",
            &Limits {
                max_labels: 10,
                ..Limits::default()
            },
        );
        assert_ne!(other, h, "other limits, other key");
        assert!(c.get(other).is_none());
        assert_eq!(
            c.stats(),
            CacheStats {
                hits: 1,
                misses: 2,
                stored: 1,
                turned_away: 0
            }
        );
    }

    #[test]
    fn too_small_a_bound_means_no_cache() {
        assert!(OutcomeCache::new(0).is_none());
        assert!(OutcomeCache::new(SHARDS * WAYS * (SLOT_BYTES + 1)).is_none());
    }

    #[test]
    fn ops_too_long_for_a_slot_are_turned_away() {
        let c = cache(2);
        let h = c.hash(b"x", &Limits::default());
        c.put(h, Kind::Changed, 1, &[0u8; MAX_OPS + 1]);
        assert!(c.get(h).is_none());
        assert_eq!(c.stats().turned_away, 1);
    }

    /// Scrapes of more series than fit: after a warm-up the part that fits keeps hitting
    /// (LRU and plain CLOCK would miss on every lookup).
    #[test]
    fn a_cyclic_scan_larger_than_the_cache_keeps_hitting() {
        let c = cache(2);
        let slots = SHARDS * 2 * WAYS;
        let series: Vec<u128> = (0..slots * 2)
            .map(|i| c.hash(&(i as u64).to_le_bytes(), &Limits::default()))
            .collect();
        let mut last_round = CacheStats::default();
        for round in 0..10 {
            let before = c.stats();
            for &h in &series {
                if c.get(h).is_none() {
                    c.put(h, Kind::Dropped, 0, &[]);
                }
            }
            if round == 9 {
                let after = c.stats();
                last_round.hits = after.hits - before.hits;
            }
        }
        // Up to half the scan fits; at least a third keeps hitting.
        assert!(
            last_round.hits as usize > series.len() / 3,
            "{} hits of {}",
            last_round.hits,
            series.len()
        );
    }

    #[test]
    fn a_working_set_that_fits_all_but_stops_missing() {
        // 64 sets a lock (a default cache has 256): 512 slots, 384 series a lock on average.
        let c = cache(64);
        let slots = SHARDS * 64 * WAYS;
        let series: Vec<u128> = (0..slots * 3 / 4)
            .map(|i| c.hash(&(i as u64).to_le_bytes(), &Limits::default()))
            .collect();
        for _ in 0..3 {
            for &h in &series {
                if c.get(h).is_none() {
                    c.put(h, Kind::Unchanged, 0, &[]);
                }
            }
        }
        let before = c.stats();
        for &h in &series {
            c.get(h);
        }
        // A series whose two sets both filled up first stays out (a few in ten thousand at
        // three quarters full).
        let hits = c.stats().hits - before.hits;
        assert!(
            hits * 1000 >= series.len() as u64 * 999,
            "{hits} of {}: {:?}",
            series.len(),
            c.stats()
        );
    }

    #[test]
    fn ops_write_the_output_back_from_the_input() {
        let input: Vec<(&[u8], &[u8])> =
            vec![(b"__name__", b"up"), (b"job", b"api"), (b"node", b"n1")];
        let output: Vec<(&[u8], &[u8])> = vec![
            (b"__name__", b"up"),
            (b"host", b"n1"),
            (b"job", b"API"),
            (b"owner", b"team-a"),
        ];
        let mut buf = Vec::new();
        assert!(ops::encode(
            &input,
            output.iter().copied(),
            &mut buf,
            MAX_OPS
        ));
        let mut back = Vec::new();
        assert!(ops::decode(&buf, &input, |_, n, v| back.push((n, v))));
        assert_eq!(back, output);
        // A label value longer than a literal can say is not encoded.
        let long = vec![b'x'; 300];
        let mut buf = Vec::new();
        assert!(!ops::encode(
            &input,
            [(&b"big"[..], &long[..])].into_iter(),
            &mut buf,
            usize::MAX
        ));
        // Ops that point past the input fail instead of panicking.
        assert!(!ops::decode(&[5], &input, |_, _, _| {}));
        assert!(!ops::decode(&[0x81, 3], &input, |_, _, _| {}));
    }
}
