//! The in-memory queue: bounded by bytes in RAM; what it holds is lost if the process dies.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::BatchLimits;
use crate::codec::Entry;

/// The queue refused a push because its byte budget is used up.
#[derive(Debug, thiserror::Error)]
#[error("queue is full: {used} of {max} bytes in use, request needs {needed}")]
pub struct Full {
    /// Bytes in use (waiting and in flight).
    pub used: usize,
    /// The budget.
    pub max: usize,
    /// Bytes the refused request needed.
    pub needed: usize,
}

/// An entry waiting in a shard, with the time it arrived.
struct Queued {
    entry: Entry,
    at: Instant,
}

struct Shard {
    entries: Mutex<VecDeque<Queued>>,
    notify: Notify,
}

/// Bounded, sharded, in-memory queue.
pub struct MemoryQueue {
    shards: Vec<Shard>,
    max_bytes: usize,
    used: AtomicUsize,
    entries_in: AtomicU64,
    entries_out: AtomicU64,
    closed: AtomicBool,
}

impl MemoryQueue {
    /// A queue with `shards` shards (at least 1) and a budget of `max_bytes`.
    pub fn new(shards: usize, max_bytes: usize) -> Self {
        Self {
            shards: (0..shards.max(1))
                .map(|_| Shard {
                    entries: Mutex::new(VecDeque::new()),
                    notify: Notify::new(),
                })
                .collect(),
            max_bytes,
            used: AtomicUsize::new(0),
            entries_in: AtomicU64::new(0),
            entries_out: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Bytes in use: waiting plus in flight.
    pub fn used_bytes(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The byte budget.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Entries waiting in shards (not yet taken into a batch).
    pub fn waiting_entries(&self) -> u64 {
        self.entries_in
            .load(Ordering::Relaxed)
            .saturating_sub(self.entries_out.load(Ordering::Relaxed))
    }

    /// Accepts all of `entries` or none.
    ///
    /// # Errors
    /// [`Full`] when the byte budget cannot hold them.
    pub fn push(&self, entries: Vec<Entry>) -> Result<(), Full> {
        let needed: usize = entries.iter().map(Entry::encoded_len).sum();
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            // A request bigger than the whole budget is still accepted into an empty queue, so it
            // cannot be refused forever.
            if used > 0 && used + needed > self.max_bytes {
                return Err(Full {
                    used,
                    max: self.max_bytes,
                    needed,
                });
            }
            match self.used.compare_exchange_weak(
                used,
                used + needed,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => used = now,
            }
        }
        let now = Instant::now();
        let n = self.shards.len() as u64;
        self.entries_in
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        let mut touched = vec![false; self.shards.len()];
        // Lock each shard once per request, not once per entry.
        let mut by_shard: Vec<Vec<Entry>> = (0..self.shards.len()).map(|_| Vec::new()).collect();
        for e in entries {
            let i = (e.shard_key % n) as usize;
            by_shard[i].push(e);
        }
        for (i, list) in by_shard.into_iter().enumerate() {
            if list.is_empty() {
                continue;
            }
            let mut q = self.shards[i]
                .entries
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            q.extend(list.into_iter().map(|entry| Queued { entry, at: now }));
            touched[i] = true;
        }
        for (i, t) in touched.into_iter().enumerate() {
            if t {
                self.shards[i].notify.notify_one();
            }
        }
        Ok(())
    }

    /// Returns bytes to the budget once the entries they belong to have left for good.
    pub fn release(&self, bytes: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(bytes))
            });
    }

    /// Stops waiting: `pop_batch` then returns what is left without waiting for the flush
    /// interval, and `None` once a shard is empty.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for s in &self.shards {
            s.notify.notify_one();
        }
    }

    /// Whether [`Queue::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Waits for the next batch of shard `shard`: returns when the batch is full, when its oldest
    /// entry has waited `limits.flush_interval`, or (after `close`) with whatever is left.
    /// Returns `None` when closed and empty.
    pub async fn pop_batch(&self, shard: usize, limits: &BatchLimits) -> Option<Vec<Entry>> {
        self.pop_batch_aged(shard, limits)
            .await
            .map(|(entries, _)| entries)
    }

    /// Like [`MemoryQueue::pop_batch`], also returning when the batch's first entry arrived.
    pub async fn pop_batch_aged(
        &self,
        shard: usize,
        limits: &BatchLimits,
    ) -> Option<(Vec<Entry>, Instant)> {
        let s = &self.shards[shard];
        loop {
            let notified = s.notify.notified();
            let (ready, oldest) = {
                let q = s.entries.lock().unwrap_or_else(|p| p.into_inner());
                match q.front() {
                    None => (false, None),
                    Some(first) => (
                        self.is_closed() || Self::full_batch_waiting(&q, limits),
                        Some(first.at),
                    ),
                }
            };
            if ready || oldest.is_some_and(|at| at.elapsed() >= limits.flush_interval) {
                let first = oldest.unwrap_or_else(Instant::now);
                return Some((self.take(shard, limits), first));
            }
            if oldest.is_none() && self.is_closed() {
                return None;
            }
            match oldest {
                Some(at) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at + limits.flush_interval) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Takes everything shard `shard` still holds (used when giving up at shutdown).
    pub fn drain_shard(&self, shard: usize) -> Vec<Entry> {
        let mut q = self.shards[shard]
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let out: Vec<Entry> = q.drain(..).map(|x| x.entry).collect();
        self.entries_out
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        out
    }

    fn full_batch_waiting(q: &VecDeque<Queued>, limits: &BatchLimits) -> bool {
        let (mut samples, mut bytes) = (0usize, 0usize);
        for item in q {
            samples += (item.entry.samples + item.entry.histograms) as usize;
            bytes += item.entry.encoded_len();
            if samples >= limits.max_samples || bytes >= limits.max_bytes {
                return true;
            }
        }
        false
    }

    fn take(&self, shard: usize, limits: &BatchLimits) -> Vec<Entry> {
        let mut q = self.shards[shard]
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let (mut samples, mut bytes) = (0usize, 0usize);
        let mut out = Vec::new();
        while let Some(front) = q.front() {
            let s = (front.entry.samples + front.entry.histograms) as usize;
            let b = front.entry.encoded_len();
            if !out.is_empty() && (samples + s > limits.max_samples || bytes + b > limits.max_bytes)
            {
                break;
            }
            samples += s;
            bytes += b;
            out.extend(q.pop_front().map(|qd| qd.entry));
        }
        self.entries_out
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        out
    }
}

#[cfg(test)]
mod tests;
