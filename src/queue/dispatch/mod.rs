//! Which queued chunks may leave now, and together: the order keeper shared by both queues.
//!
//! Chunks wait in a window in push order. Upstream workers (up to `shards` at a time) each take
//! a batch: the chunks in order, skipping any chunk that holds a series ([`Chunk::keys`]) also
//! held by a batch in flight or by an earlier chunk that waits. So two batches in flight never
//! share a series, and a series' samples leave, and arrive, in the order they came in, whatever
//! the upstream's latency or retries; batches without common series go out concurrently. A
//! Prometheus shard's consecutive requests hold mostly different series, so even a single
//! sender gets the concurrency, and the only waits are real conflicts.
//!
//! A scan visits only the chunks that may go, so its cost does not grow with what waits behind
//! a slow or failing batch. A chunk found blocked is *parked* on what blocks it (the batch in
//! flight, or the nearest earlier parked chunk, holding one of its series) and its keys go into
//! an index of parked chunks by series key. Scans pass over it until what blocks it finishes,
//! comes back, or is taken into a batch; then it is looked at again, once. A chunk that may go
//! is checked against the batches in flight (a bit filter, then their key sets) and the parked
//! index; in the steady state nothing is parked and the index is empty.
//!
//! A batch is handed out when it is full (samples or bytes), when its oldest chunk has waited
//! the flush interval, when nothing new has arrived for a tenth of the flush interval (the
//! sender's burst is over: waiting longer would not fill it, only delay it), or at shutdown.
//! Batches, and parts of batches ([`Dispatcher::done_part`]), may finish in any order; the
//! window releases finished chunks from its front only, so a backend learns the oldest
//! unfinished position (what the disk queue persists and replays from).

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use super::BatchLimits;
use crate::codec::{Chunk, SeriesKey};

/// Memory a chunk's place in the window takes (with a tag of type `T`) while it is there,
/// waiting, in flight, or finished behind an unfinished chunk: the queues count it against their
/// budgets until it leaves, so a stuck batch cannot grow the window without bound.
pub(crate) const fn slot_bytes<T>() -> usize {
    std::mem::size_of::<Slot<T>>()
}

/// Memory the parked index takes per key of a parked chunk, counted in
/// [`Dispatcher::index_bytes`]: the key's map entry (32 B, about 37 B with the map's spare
/// room) and its list's allocation (about 40 B while it holds one chunk).
pub(crate) const PARKED_BYTES_PER_KEY: usize = 80;

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
    /// Whether it is parked (waiting, and not in the ready set).
    parked: bool,
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
/// recompute the keys when part of it finishes), and the chunks parked on it.
struct InFlight {
    id: u64,
    keys: FxHashSet<SeriesKey>,
    /// Each chunk's keys, `None` once that chunk finished.
    chunks: Vec<Option<Arc<[SeriesKey]>>>,
    parked: Vec<u64>,
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

/// What a parked chunk waits for.
enum Blocker {
    /// The batch in flight at this index of `in_flight`.
    Batch(usize),
    /// The parked chunk with this sequence number.
    Chunk(u64),
}

/// The parked chunks, by key and by what they are parked on.
#[derive(Default)]
struct Parked {
    /// For each key of a parked chunk, the parked chunks holding it, in push order.
    by_key: FxHashMap<SeriesKey, Vec<u64>>,
    /// For each parked chunk that others are parked on, those others.
    on: FxHashMap<u64, Vec<u64>>,
    /// Keys in `by_key`'s lists.
    keys: usize,
    /// Chunks a scan's batch freed (their blocker went into it), visited in order with the
    /// ready ones; kept between scans for its allocation.
    freed: BinaryHeap<Reverse<u64>>,
}

/// The window, the series in flight and the parked index. Not synchronised: the queues keep it
/// under a lock.
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
    /// The waiting chunks that are not parked, by sequence number: what a scan visits.
    ready: BTreeSet<u64>,
    /// Chunks waiting (ready or parked).
    waiting: usize,
    /// The index of parked chunks (boxed: it is empty in the steady state).
    parked: Box<Parked>,
    /// When the last chunk was pushed, ms.
    last_push_ms: u64,
    /// Chunks the last scan looked at.
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
            ready: BTreeSet::new(),
            waiting: 0,
            parked: Box::default(),
            last_push_ms: 0,
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
            parked: false,
        });
        self.ready.insert(self.front + self.window.len() as u64 - 1);
        self.waiting += 1;
        self.last_push_ms = self.last_push_ms.max(at_ms);
    }

    /// Chunks not handed out yet.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting
    }

    /// Chunks in the window (waiting, in flight, or finished behind an unfinished one).
    pub(crate) fn len(&self) -> usize {
        self.window.len()
    }

    /// Memory of the parked index (see [`PARKED_BYTES_PER_KEY`]): the queues count it against
    /// their budgets while chunks are parked.
    pub(crate) fn index_bytes(&self) -> usize {
        self.parked.keys * PARKED_BYTES_PER_KEY
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

    fn slot_mut(&mut self, seq: u64) -> Option<&mut Slot<T>> {
        seq.checked_sub(self.front)
            .and_then(|i| self.window.get_mut(i as usize))
    }

    /// What keeps the waiting chunk at `seq` from going now: a batch in flight holding one of
    /// its series, or the nearest earlier parked chunk holding one. (Earlier chunks of the
    /// scan's own batch do not: a batch may hold a series more than once, in order.)
    fn blocker(&self, seq: u64) -> Option<Blocker> {
        let slot = &self.window[(seq - self.front) as usize];
        let State::Waiting(chunk) = &slot.state else {
            return None;
        };
        if slot.clear_at != self.generation && !self.in_flight.is_empty() {
            for k in chunk.keys.iter() {
                let (word, bit) = Self::filter_bit(*k);
                if self.filter[word] & bit == 0 {
                    continue;
                }
                if let Some(b) = self.in_flight.iter().position(|b| b.keys.contains(k)) {
                    return Some(Blocker::Batch(b));
                }
            }
        }
        if self.parked.by_key.is_empty() {
            return None;
        }
        chunk
            .keys
            .iter()
            .filter_map(|k| {
                let list = self.parked.by_key.get(k)?;
                let earlier = list.partition_point(|&p| p < seq);
                earlier.checked_sub(1).map(|i| list[i])
            })
            .max()
            .map(Blocker::Chunk)
    }

    /// Parks the waiting chunk `seq` on `blocker`: scans pass over it until `blocker` moves.
    fn park(&mut self, seq: u64, blocker: Blocker) {
        self.ready.remove(&seq);
        match blocker {
            Blocker::Batch(b) => self.in_flight[b].parked.push(seq),
            Blocker::Chunk(p) => self.parked.on.entry(p).or_default().push(seq),
        }
        let i = (seq - self.front) as usize;
        let slot = &mut self.window[i];
        slot.parked = true;
        let State::Waiting(chunk) = &slot.state else {
            return;
        };
        for &k in chunk.keys.iter() {
            let list = self.parked.by_key.entry(k).or_default();
            let at = list.partition_point(|&p| p < seq);
            if list.get(at) != Some(&seq) {
                list.insert(at, seq);
                self.parked.keys += 1;
            }
        }
    }

    /// Unparks the chunks `seqs` (those still parked): their keys leave the parked index and
    /// they are looked at again, through the ready set, or through `freed` during a scan.
    fn unpark(&mut self, seqs: Vec<u64>, during_scan: bool) {
        for seq in seqs {
            let Some(i) = seq.checked_sub(self.front).map(|i| i as usize) else {
                continue;
            };
            let Some(slot) = self.window.get_mut(i) else {
                continue;
            };
            if !slot.parked {
                continue;
            }
            slot.parked = false;
            if let State::Waiting(chunk) = &slot.state {
                for k in chunk.keys.iter() {
                    if let Some(list) = self.parked.by_key.get_mut(k) {
                        if let Ok(at) = list.binary_search(&seq) {
                            list.remove(at);
                            self.parked.keys -= 1;
                        }
                        if list.is_empty() {
                            self.parked.by_key.remove(k);
                        }
                    }
                }
            }
            if during_scan {
                self.parked.freed.push(Reverse(seq));
            } else {
                self.ready.insert(seq);
            }
        }
    }

    /// Looks for a batch within `limits`; hands it out when it is full, when its first chunk
    /// was pushed `flush_interval` before `now_ms`, when nothing was pushed for a tenth of
    /// that, or when `flush` is set (shutdown).
    pub(crate) fn cut(&mut self, limits: &BatchLimits, now_ms: u64, flush: bool) -> Cut {
        let mut take: Vec<u64> = Vec::new();
        let (mut samples, mut bytes) = (0usize, 0usize);
        let mut full = false;
        self.parked.freed.clear();
        #[cfg(test)]
        {
            self.visited = 0;
        }
        // The ready chunks, and those freed by chunks taken into this batch, in push order.
        let mut cursor = 0u64;
        loop {
            let next_ready = self.ready.range(cursor..).next().copied();
            let next_freed = self.parked.freed.peek().map(|r| r.0);
            let seq = match (next_ready, next_freed) {
                (Some(r), Some(f)) if f < r => {
                    self.parked.freed.pop();
                    f
                }
                (Some(r), _) => {
                    cursor = r + 1;
                    r
                }
                (None, Some(f)) => {
                    self.parked.freed.pop();
                    f
                }
                (None, None) => break,
            };
            #[cfg(test)]
            {
                self.visited += 1;
            }
            if let Some(blocker) = self.blocker(seq) {
                self.park(seq, blocker);
                continue;
            }
            let slot = &self.window[(seq - self.front) as usize];
            let State::Waiting(chunk) = &slot.state else {
                continue;
            };
            let (s, b) = (chunk.counts.points(), chunk.raw_len as usize);
            if !take.is_empty()
                && (samples + s > limits.max_samples || bytes + b > limits.max_bytes)
            {
                // Not in this batch: it waits in the ready set (it may have come from `freed`).
                self.ready.insert(seq);
                full = true;
                break;
            }
            take.push(seq);
            samples += s;
            bytes += b;
            // What was parked on it may follow it in this batch (or, when the batch is full,
            // is looked at again by the next scan, and parked on this batch if need be).
            if let Some(waiters) = self.parked.on.remove(&seq) {
                self.unpark(waiters, true);
            }
            if samples >= limits.max_samples || bytes >= limits.max_bytes {
                full = true;
                break;
            }
        }
        // Freed chunks not reached wait in the ready set.
        while let Some(Reverse(seq)) = self.parked.freed.pop() {
            self.ready.insert(seq);
        }
        // Remember what was found clear of the batches in flight, so the next scan (at the
        // next push, with nothing new in flight) need not look up its keys again.
        let generation = self.generation;
        for &seq in &take {
            self.window[(seq - self.front) as usize].clear_at = generation;
        }
        let Some(&first) = take.first() else {
            return if self.waiting > 0 {
                Cut::Blocked
            } else {
                Cut::Empty
            };
        };
        let first_ms = self.window[(first - self.front) as usize].at_ms;
        let interval = limits.flush_interval.as_millis() as u64;
        let due = first_ms
            .saturating_add(interval)
            .min(self.last_push_ms.saturating_add(interval / 10));
        if !(full || flush || now_ms >= due) {
            // The batch is not handed out: what it took from `freed` waits in the ready set.
            self.ready.extend(take);
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
            .map(
                |&seq| match &self.window[(seq - self.front) as usize].state {
                    State::Waiting(c) => c.keys.len(),
                    _ => 0,
                },
            )
            .sum();
        let mut keys = FxHashSet::with_capacity_and_hasher(n_keys, Default::default());
        let mut chunk_keys = Vec::with_capacity(take.len());
        for seq in take {
            let i = (seq - self.front) as usize;
            let slot = &mut self.window[i];
            let State::Waiting(chunk) = std::mem::replace(&mut slot.state, State::InFlight) else {
                continue;
            };
            for k in chunk.keys.iter() {
                keys.insert(*k);
                let (word, bit) = Self::filter_bit(*k);
                self.filter[word] |= bit;
            }
            self.ready.remove(&seq);
            self.waiting -= 1;
            taken.seqs.push(seq);
            chunk_keys.push(Some(chunk.keys.clone()));
            taken.chunks.push(chunk);
        }
        self.in_flight.push(InFlight {
            id,
            keys,
            chunks: chunk_keys,
            parked: Vec::new(),
        });
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
        if let Some(at) = self.in_flight.iter().position(|b| b.id == taken.id) {
            let batch = self.in_flight.remove(at);
            self.unpark(batch.parked, false);
        }
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
        // What was parked on the batch is looked at again: it may be free now.
        let parked = std::mem::take(&mut b.parked);
        self.unpark(parked, false);
        self.rebuild_filter();
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
        for ((&seq, chunk), open) in taken.seqs.iter().zip(chunks).zip(batch.chunks) {
            if open.is_none() {
                continue;
            }
            if let Some(slot) = self
                .slot_mut(seq)
                .filter(|s| matches!(s.state, State::InFlight))
            {
                slot.state = State::Waiting(chunk);
                slot.clear_at = u64::MAX;
                self.ready.insert(seq);
                self.waiting += 1;
                n += 1;
            }
        }
        self.unpark(batch.parked, false);
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
            if let Some(slot) = self.slot_mut(seq) {
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
                slot.parked = false;
            }
        }
        self.ready.clear();
        self.waiting = 0;
        self.parked.by_key.clear();
        self.parked.on.clear();
        self.parked.keys = 0;
        for b in &mut self.in_flight {
            b.parked.clear();
        }
        let left = self.release_front();
        (out, left)
    }
}

#[cfg(test)]
mod tests;
