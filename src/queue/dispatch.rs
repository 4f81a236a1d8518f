//! Which queued chunks may leave now, and together: the order keeper shared by both queues.
//!
//! Chunks wait in a window in push order. Upstream workers (up to `shards` at a time) each take
//! a batch: the chunks in order, skipping any chunk that holds a series ([`Chunk::keys`]) also
//! held by a batch in flight or by an earlier chunk that was skipped. So two batches in flight
//! never share a series, and a series' samples leave, and arrive, in the order they came in,
//! whatever the upstream's latency or retries; batches without common series go out
//! concurrently. A Prometheus shard's consecutive requests hold mostly different series, so
//! even a single sender gets the concurrency, and the only waits are real conflicts.
//!
//! A batch is handed out when it is full (samples or bytes), when its oldest chunk has waited
//! the flush interval, when nothing new has arrived for a tenth of the flush interval (the
//! sender's burst is over: waiting longer would not fill it, only delay it), or at shutdown.
//! A scan looks at every waiting chunk (no cut-off: however much waits behind a long retry,
//! a chunk that may go is found). Batches, and parts of batches ([`Dispatcher::done_part`]),
//! may finish in any order; the window releases finished chunks from its front only, so a
//! backend learns the oldest unfinished position (what the disk queue persists and replays
//! from).

use std::collections::{BTreeSet, VecDeque};

use rustc_hash::FxHashSet;

use super::BatchLimits;
use crate::codec::{Chunk, SeriesKey};

/// Keys the scratch set of a scan keeps room for between scans.
const SKIPPED_KEEP: usize = 1 << 15;

/// Memory a chunk's place in the window takes (with a tag of type `T`) while it is there,
/// waiting, in flight, or finished behind an unfinished chunk: the queues count it against their
/// budgets until it leaves, so a stuck batch cannot grow the window without bound.
pub(crate) const fn slot_bytes<T>() -> usize {
    std::mem::size_of::<Slot<T>>()
}

/// Bits of the in-flight filter: a key whose bit is clear is not in flight, without looking at
/// the batches' key sets. With 20,000 keys in flight (4 batches of 5000 series) 2% of checks
/// still look; the filter is 128 KiB.
const FILTER_BITS: usize = 1 << 20;

enum State {
    /// Queued, not handed out.
    Waiting(Chunk),
    /// In a batch that is being sent.
    InFlight,
    /// Delivered or definitively dropped.
    Done,
    /// Taken out by [`Dispatcher::drain_waiting`], which handed its tag over already.
    Drained,
}

struct Slot<T> {
    state: State,
    /// Push time, ms on the queue's clock.
    at_ms: u64,
    /// The backend's data about the chunk, handed back when it leaves the window.
    tag: T,
    /// The in-flight generation at which the chunk was found to share no series with a batch
    /// in flight (`u64::MAX`: not checked since it last could have).
    clear_at: u64,
}

/// A batch handed out; give it back with [`Dispatcher::done`].
pub(crate) struct Taken {
    /// The chunks, in push order.
    pub(crate) chunks: Vec<Chunk>,
    /// Push time of the first chunk, ms.
    pub(crate) first_ms: u64,
    id: u64,
    seqs: Vec<u64>,
}

/// A batch in flight: its id, the keys of its series, and those of each of its chunks (to
/// recompute the keys when part of it finishes).
struct InFlight {
    id: u64,
    keys: FxHashSet<SeriesKey>,
    /// Each chunk's keys, `None` once that chunk finished.
    chunks: Vec<Option<std::sync::Arc<[SeriesKey]>>>,
}

/// What a scan of the window found.
pub(crate) enum Cut {
    /// A batch to send.
    Take(Taken),
    /// A batch is forming; it is due at this time (ms) unless more arrives first.
    Wait(u64),
    /// Chunks wait, but each shares a series with a batch in flight: wait for one to finish.
    Blocked,
    /// Nothing waits.
    Empty,
}

/// The window and the series in flight. Not synchronised: the queues keep it under a lock.
pub(crate) struct Dispatcher<T> {
    window: VecDeque<Slot<T>>,
    /// Sequence number of `window[0]`.
    front: u64,
    /// The batches in flight (at most one per worker), each with a small set of its keys:
    /// built once per batch, dropped when it finishes, so nothing grows with the number of
    /// series ever seen.
    in_flight: Vec<InFlight>,
    /// One bit per key hash: set for every key in flight (and some others, by collision).
    filter: Vec<u64>,
    next_batch: u64,
    /// Bumped whenever keys are handed out.
    generation: u64,
    /// The sequence numbers of the waiting chunks: a scan visits only these, however many
    /// places in flight or finished the window holds (behind a stuck batch, up to the budget).
    waiting: BTreeSet<u64>,
    /// When the last chunk was pushed, ms.
    last_push_ms: u64,
    /// Scratch set of [`Dispatcher::cut`]: the keys of the chunks a scan skipped.
    skipped: FxHashSet<SeriesKey>,
    /// Places the last scan looked at.
    #[cfg(test)]
    visited: usize,
}

impl<T> Default for Dispatcher<T> {
    fn default() -> Self {
        Self {
            window: VecDeque::new(),
            front: 0,
            in_flight: Vec::new(),
            filter: vec![0; FILTER_BITS / 64],
            next_batch: 0,
            generation: 0,
            waiting: BTreeSet::new(),
            last_push_ms: 0,
            skipped: FxHashSet::default(),
            #[cfg(test)]
            visited: 0,
        }
    }
}

impl<T> Dispatcher<T> {
    /// Queues a chunk pushed at `at_ms`.
    pub(crate) fn push(&mut self, chunk: Chunk, at_ms: u64, tag: T) {
        self.window.push_back(Slot {
            state: State::Waiting(chunk),
            at_ms,
            tag,
            clear_at: u64::MAX,
        });
        self.waiting
            .insert(self.front + self.window.len() as u64 - 1);
        self.last_push_ms = self.last_push_ms.max(at_ms);
    }

    /// Chunks not handed out yet.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Chunks in the window (waiting, in flight, or finished behind an unfinished one).
    pub(crate) fn len(&self) -> usize {
        self.window.len()
    }

    /// Push time of the oldest chunk not finished, ms.
    pub(crate) fn oldest_ms(&self) -> Option<u64> {
        self.window
            .iter()
            .find(|s| !matches!(s.state, State::Done | State::Drained))
            .map(|s| s.at_ms)
    }

    fn filter_bit(k: SeriesKey) -> (usize, u64) {
        let h = k as usize & (FILTER_BITS - 1);
        (h / 64, 1 << (h % 64))
    }

    fn key_in_flight(&self, k: &SeriesKey) -> bool {
        let (word, bit) = Self::filter_bit(*k);
        self.filter[word] & bit != 0 && self.in_flight.iter().any(|b| b.keys.contains(k))
    }

    fn clear(&self, slot: &Slot<T>, chunk: &Chunk, skipped: &FxHashSet<SeriesKey>) -> bool {
        let in_flight_ok = slot.clear_at == self.generation
            || self.in_flight.is_empty()
            || !chunk.keys.iter().any(|k| self.key_in_flight(k));
        in_flight_ok && (skipped.is_empty() || !chunk.keys.iter().any(|k| skipped.contains(k)))
    }

    /// Looks for a batch within `limits`; hands it out when it is full, when its first chunk
    /// was pushed `flush_interval` before `now_ms`, when nothing was pushed for a tenth of
    /// that, or when `flush` is set (shutdown).
    pub(crate) fn cut(&mut self, limits: &BatchLimits, now_ms: u64, flush: bool) -> Cut {
        let mut take: Vec<usize> = Vec::new();
        let (mut samples, mut bytes) = (0usize, 0usize);
        // The keys of the chunks skipped so far (kept between scans for its allocation).
        let mut skipped = std::mem::take(&mut self.skipped);
        if skipped.capacity() > SKIPPED_KEEP {
            // Clearing costs its capacity: after a long stall, start small again.
            skipped = FxHashSet::default();
        } else if !skipped.is_empty() {
            skipped.clear();
        }
        let mut full = false;
        #[cfg(test)]
        {
            self.visited = 0;
        }
        for &seq in &self.waiting {
            #[cfg(test)]
            {
                self.visited += 1;
            }
            let i = (seq - self.front) as usize;
            let State::Waiting(chunk) = &self.window[i].state else {
                continue;
            };
            let slot = &self.window[i];
            if !self.clear(slot, chunk, &skipped) {
                // Later chunks must not overtake this one on a series they share.
                skipped.extend(chunk.keys.iter().copied());
                continue;
            }
            let (s, b) = (chunk.counts.points(), chunk.raw_len as usize);
            if !take.is_empty()
                && (samples + s > limits.max_samples || bytes + b > limits.max_bytes)
            {
                full = true;
                break;
            }
            take.push(i);
            samples += s;
            bytes += b;
            if samples >= limits.max_samples || bytes >= limits.max_bytes {
                full = true;
                break;
            }
        }
        self.skipped = skipped;
        // Remember what was found clear of the batches in flight, so the next scan (at the
        // next push, with nothing new in flight) need not look up its keys again.
        let generation = self.generation;
        for &i in &take {
            self.window[i].clear_at = generation;
        }
        let Some(&first) = take.first() else {
            return if !self.waiting.is_empty() {
                Cut::Blocked
            } else {
                Cut::Empty
            };
        };
        let first_ms = self.window[first].at_ms;
        let interval = limits.flush_interval.as_millis() as u64;
        let due = first_ms
            .saturating_add(interval)
            .min(self.last_push_ms.saturating_add(interval / 10));
        if !(full || flush || now_ms >= due) {
            return Cut::Wait(due);
        }
        self.generation += 1;
        let id = self.next_batch;
        self.next_batch += 1;
        let mut taken = Taken {
            chunks: Vec::with_capacity(take.len()),
            first_ms,
            id,
            seqs: Vec::with_capacity(take.len()),
        };
        let n_keys = take
            .iter()
            .map(|&i| match &self.window[i].state {
                State::Waiting(c) => c.keys.len(),
                _ => 0,
            })
            .sum();
        let mut keys = FxHashSet::with_capacity_and_hasher(n_keys, Default::default());
        let mut chunk_keys = Vec::with_capacity(take.len());
        for i in take {
            let slot = &mut self.window[i];
            let State::Waiting(chunk) = std::mem::replace(&mut slot.state, State::InFlight) else {
                continue;
            };
            for k in chunk.keys.iter() {
                keys.insert(*k);
                let (word, bit) = Self::filter_bit(*k);
                self.filter[word] |= bit;
            }
            taken.seqs.push(self.front + i as u64);
            chunk_keys.push(Some(chunk.keys.clone()));
            taken.chunks.push(chunk);
        }
        self.in_flight.push(InFlight {
            id,
            keys,
            chunks: chunk_keys,
        });
        for seq in &taken.seqs {
            self.waiting.remove(seq);
        }
        Cut::Take(taken)
    }

    /// A batch handed out by [`Dispatcher::cut`] is finished (delivered, or dropped for good).
    /// Returns the tags of the chunks that leave the window: the finished ones at its front,
    /// in push order. (Finished chunks behind an unfinished one stay until it finishes: the
    /// disk queue's read position cannot pass it.)
    #[cfg(test)]
    pub(crate) fn done(&mut self, taken: Taken) -> Vec<T> {
        self.done_with(taken, |_| {})
    }

    /// Like [`Dispatcher::done`], also calling `finished` with the tag of each chunk of the
    /// batch as it finishes (once per chunk: not again for those [`Dispatcher::done_part`]
    /// finished already).
    pub(crate) fn done_with(&mut self, taken: Taken, finished: impl FnMut(&T)) -> Vec<T> {
        self.in_flight.retain(|b| b.id != taken.id);
        self.rebuild_filter();
        self.finish(&taken.seqs, finished);
        self.release_front()
    }

    /// Chunks `indices` (positions in [`Taken::chunks`]) of a batch still in flight are
    /// finished: their series may go again at once, while the rest of the batch stays in
    /// flight (a failing part being retried). Calls `finished` with each one's tag, and
    /// returns the tags that leave the window, as [`Dispatcher::done`] does.
    pub(crate) fn done_part(
        &mut self,
        taken: &Taken,
        indices: &[usize],
        finished: impl FnMut(&T),
    ) -> Vec<T> {
        let Some(b) = self.in_flight.iter_mut().find(|b| b.id == taken.id) else {
            return Vec::new();
        };
        if indices.is_empty() {
            return Vec::new();
        }
        let mut seqs = Vec::with_capacity(indices.len());
        for &i in indices {
            if b.chunks.get_mut(i).and_then(Option::take).is_some() {
                seqs.push(taken.seqs[i]);
            }
        }
        b.keys = b
            .chunks
            .iter()
            .flatten()
            .flat_map(|k| k.iter().copied())
            .collect();
        self.rebuild_filter();
        // What was found clear of the batches in flight may be clear of fewer now: no change.
        // What was blocked may be free now: the next scan looks again (it always does).
        self.finish(&seqs, finished);
        self.release_front()
    }

    /// A batch handed out by [`Dispatcher::cut`] comes back unfinished (its worker panicked):
    /// each of its chunks not finished meanwhile ([`Dispatcher::done_part`]) waits again in its
    /// place, so the next scan hands it out in order. `chunks` are [`Taken::chunks`] as handed
    /// out. Returns how many wait again.
    pub(crate) fn give_back(&mut self, taken: Taken, chunks: Vec<Chunk>) -> usize {
        let Some(at) = self.in_flight.iter().position(|b| b.id == taken.id) else {
            return 0;
        };
        let batch = self.in_flight.remove(at);
        let mut n = 0;
        for ((seq, chunk), open) in taken.seqs.iter().zip(chunks).zip(batch.chunks) {
            if open.is_none() {
                continue;
            }
            let slot = seq
                .checked_sub(self.front)
                .and_then(|i| self.window.get_mut(i as usize));
            if let Some(slot) = slot.filter(|s| matches!(s.state, State::InFlight)) {
                slot.state = State::Waiting(chunk);
                slot.clear_at = u64::MAX;
                self.waiting.insert(*seq);
                n += 1;
            }
        }

        self.rebuild_filter();
        n
    }

    /// The filter from the batches still in flight (a few thousand bits each).
    fn rebuild_filter(&mut self) {
        self.filter.fill(0);
        for k in self.in_flight.iter().flat_map(|b| b.keys.iter()) {
            let (word, bit) = Self::filter_bit(*k);
            self.filter[word] |= bit;
        }
    }

    /// Marks the chunks `seqs` finished, calling `finished` for each that was in flight.
    fn finish(&mut self, seqs: &[u64], mut finished: impl FnMut(&T)) {
        for &seq in seqs {
            if let Some(slot) = seq
                .checked_sub(self.front)
                .and_then(|i| self.window.get_mut(i as usize))
            {
                if matches!(slot.state, State::InFlight) {
                    slot.state = State::Done;
                    finished(&slot.tag);
                }
            }
        }
    }

    /// Pops the finished chunks at the front, returning their tags in push order.
    fn release_front(&mut self) -> Vec<T> {
        let mut out = Vec::new();
        while self
            .window
            .front()
            .is_some_and(|s| matches!(s.state, State::Done | State::Drained))
        {
            if let Some(slot) = self.window.pop_front() {
                if matches!(slot.state, State::Done) {
                    out.push(slot.tag);
                }
            }
            self.front += 1;
        }
        out
    }

    /// Takes every waiting chunk out (shutdown of the memory queue, to count what is lost),
    /// with its tag; also returns the tags of the finished chunks that leave the window with
    /// them, as [`Dispatcher::done`] does.
    pub(crate) fn drain_waiting(&mut self) -> (Vec<(Chunk, T)>, Vec<T>)
    where
        T: Clone,
    {
        let mut out = Vec::new();
        for slot in &mut self.window {
            if matches!(slot.state, State::Waiting(_)) {
                if let State::Waiting(c) = std::mem::replace(&mut slot.state, State::Drained) {
                    out.push((c, slot.tag.clone()));
                }
            }
        }
        self.waiting.clear();
        let left = self.release_front();
        (out, left)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::codec::ChunkCounts;

    fn chunk(id: u8, keys: &[SeriesKey], samples: u32) -> Chunk {
        Chunk {
            counts: ChunkCounts {
                series: keys.len() as u32,
                samples,
                ..ChunkCounts::default()
            },
            raw_len: 100,
            min_ts: 0,
            data: bytes::Bytes::from(vec![id]),
            keys: Arc::from(keys),
        }
    }

    fn limits(max_samples: usize) -> BatchLimits {
        BatchLimits {
            max_samples,
            max_bytes: 1 << 20,
            flush_interval: Duration::from_millis(1000),
        }
    }

    fn ids(t: &Taken) -> Vec<u8> {
        t.chunks.iter().map(|c| c.data[0]).collect()
    }

    fn take(d: &mut Dispatcher<u8>, l: &BatchLimits) -> Taken {
        match d.cut(l, 0, true) {
            Cut::Take(t) => t,
            _ => panic!("no batch"),
        }
    }

    #[test]
    fn batches_in_flight_never_share_a_series_and_order_is_kept() {
        let mut d = Dispatcher::default();
        // 1 and 3 share series 7; 2 is independent; 4 shares with 3 (skipped, so it waits).
        d.push(chunk(1, &[7, 8], 2), 0, 1);
        d.push(chunk(2, &[9], 2), 0, 2);
        d.push(chunk(3, &[7], 2), 0, 3);
        d.push(chunk(4, &[10, 7], 2), 0, 4);
        d.push(chunk(5, &[11], 2), 0, 5);
        let l = limits(2);
        let a = take(&mut d, &l);
        assert_eq!(ids(&a), [1]);
        let b = take(&mut d, &l);
        assert_eq!(ids(&b), [2], "independent series go out concurrently");
        let c = take(&mut d, &l);
        assert_eq!(ids(&c), [5], "3 waits for 1, and 4 for 3");
        assert!(matches!(d.cut(&l, 0, true), Cut::Blocked));
        assert_eq!(
            d.done(b),
            Vec::<u8>::new(),
            "1 is still unfinished at the front"
        );
        assert!(matches!(d.cut(&l, 0, true), Cut::Blocked));
        assert_eq!(d.done(a), [1, 2]);
        let e = take(&mut d, &l);
        assert_eq!(ids(&e), [3]);
        assert!(matches!(d.cut(&l, 0, true), Cut::Blocked), "4 follows 3");
        assert_eq!(d.done(e), [3]);
        let f = take(&mut d, &l);
        assert_eq!(ids(&f), [4]);
        assert_eq!(d.done(c), Vec::<u8>::new());
        assert_eq!(d.done(f), [4, 5]);
        assert!(matches!(d.cut(&l, 0, true), Cut::Empty));
        assert_eq!(d.len(), 0);
    }

    #[test]
    fn a_batch_takes_chunks_of_one_series_in_order_and_waits_to_fill() {
        let mut d = Dispatcher::default();
        d.push(chunk(1, &[7], 1), 100, 1);
        d.push(chunk(2, &[7], 1), 200, 2);
        // A steady flow of metadata-only chunks (no samples) keeps the batch waiting.
        for t in (250..=1050).step_by(50) {
            d.push(chunk(9, &[], 0), t, 9);
        }
        let l = limits(3);
        assert!(matches!(d.cut(&l, 1050, false), Cut::Wait(1100)));
        match d.cut(&l, 1100, false) {
            Cut::Take(t) => {
                assert_eq!(
                    ids(&t)[..2],
                    [1, 2],
                    "one batch may hold a series twice, in order"
                );
                assert_eq!(t.chunks.len(), 19, "with the metadata that came meanwhile");
                assert_eq!(t.first_ms, 100);
            }
            _ => panic!("due"),
        }
        d.push(chunk(3, &[8], 2), 1200, 3);
        d.push(chunk(4, &[9], 2), 1200, 4);
        match d.cut(&l, 1200, false) {
            Cut::Take(t) => assert_eq!(ids(&t), [3], "full: the next would pass the limit"),
            _ => panic!("full"),
        }
        // Then nothing more arrives: a tenth of the flush interval later it goes.
        assert!(matches!(d.cut(&l, 1250, false), Cut::Wait(1300)));
        assert!(matches!(d.cut(&l, 1300, false), Cut::Take(_)));
    }

    #[test]
    fn a_finished_part_frees_its_series_while_the_rest_is_retried() {
        let mut d = Dispatcher::default();
        d.push(chunk(1, &[7], 1), 0, 1);
        d.push(chunk(2, &[8, 9], 1), 0, 2);
        d.push(chunk(3, &[10], 1), 0, 3);
        let l = limits(3);
        let a = take(&mut d, &l);
        assert_eq!(ids(&a), [1, 2, 3]);
        d.push(chunk(4, &[8], 1), 0, 4);
        d.push(chunk(5, &[7], 1), 0, 5);
        assert!(matches!(d.cut(&l, 0, true), Cut::Blocked));
        // Chunks 2 and 3 were delivered; chunk 1 is still being retried.
        let mut finished = Vec::new();
        let left = d.done_part(&a, &[1, 2], |t| finished.push(*t));
        assert_eq!(finished, [2, 3]);
        assert!(left.is_empty(), "1 is unfinished at the front");
        let b = take(&mut d, &l);
        assert_eq!(ids(&b), [4], "8 is free again; 7 is not");
        // Finishing a part twice, or the whole batch after a part, counts each chunk once.
        finished.clear();
        assert!(d.done_part(&a, &[1], |t| finished.push(*t)).is_empty());
        assert!(finished.is_empty());
        let left = d.done_with(a, |t| finished.push(*t));
        assert_eq!(finished, [1]);
        assert_eq!(left, [1, 2, 3]);
        assert_eq!(ids(&take(&mut d, &l)), [5]);
        assert_eq!(d.done(b), [4]);
    }

    #[test]
    fn however_much_is_blocked_a_chunk_that_may_go_is_found() {
        let mut d = Dispatcher::default();
        d.push(chunk(1, &[7], 1), 0, 1);
        let l = limits(1000);
        let stuck = take(&mut d, &l);
        for _ in 0..500 {
            d.push(chunk(2, &[7], 1), 0, 2);
        }
        d.push(chunk(3, &[9], 1), 0, 3);
        let t = take(&mut d, &l);
        assert_eq!(ids(&t), [3], "behind 500 blocked chunks");
        assert!(matches!(d.cut(&l, 0, true), Cut::Blocked));
        d.done(t);
        d.done(stuck);
        assert_eq!(take(&mut d, &l).chunks.len(), 500);
    }

    #[test]
    fn drain_takes_only_what_waits() {
        let mut d = Dispatcher::default();
        d.push(chunk(1, &[7], 1), 0, 1);
        d.push(chunk(2, &[7], 1), 0, 2);
        let a = take(&mut d, &limits(1));
        let rest: Vec<u8> = d.drain_waiting().0.into_iter().map(|(_, t)| t).collect();
        assert_eq!(rest, [2]);
        assert_eq!(d.done(a), [1], "a drained chunk's tag is handed over once");
        assert_eq!(d.len(), 0);
    }

    /// Behind a batch that never finishes, finished chunks keep their places (the window
    /// releases in order); a scan looks only at the waiting chunks, not at those places.
    #[test]
    fn a_scan_visits_only_waiting_chunks() {
        let mut d = Dispatcher::default();
        let l = limits(1);
        d.push(chunk(0, &[1], 1), 0, 0);
        let _stuck = take(&mut d, &l);
        for i in 0..10_000u32 {
            d.push(chunk(1, &[2 + i], 1), 0, 1);
            let t = take(&mut d, &l);
            assert!(d.done(t).is_empty(), "the stuck batch holds the front");
        }
        assert_eq!(d.len(), 10_001);
        d.push(chunk(2, &[1], 1), 0, 2);
        d.push(chunk(3, &[99_999], 1), 0, 3);
        assert_eq!(
            ids(&take(&mut d, &l)),
            [3],
            "the blocked one waits, the other goes"
        );
        assert_eq!(
            d.visited, 2,
            "the scan looked at the two waiting chunks only"
        );
    }
}
