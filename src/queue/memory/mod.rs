//! The in-memory queue: bounded by bytes in RAM; what it holds is lost if the process dies.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::BatchLimits;
use crate::codec::Chunk;

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

/// A chunk waiting in a shard, with the time it arrived.
struct Queued {
    chunk: Chunk,
    at: Instant,
}

struct Shard {
    chunks: Mutex<VecDeque<Queued>>,
    notify: Notify,
}

/// Bounded, sharded, in-memory queue.
pub struct MemoryQueue {
    shards: Vec<Shard>,
    max_bytes: usize,
    used: AtomicUsize,
    chunks_in: AtomicU64,
    chunks_out: AtomicU64,
    closed: AtomicBool,
}

impl MemoryQueue {
    /// A queue with `shards` shards (at least 1) and a budget of `max_bytes`.
    pub fn new(shards: usize, max_bytes: usize) -> Self {
        Self {
            shards: (0..shards.max(1))
                .map(|_| Shard {
                    chunks: Mutex::new(VecDeque::new()),
                    notify: Notify::new(),
                })
                .collect(),
            max_bytes,
            used: AtomicUsize::new(0),
            chunks_in: AtomicU64::new(0),
            chunks_out: AtomicU64::new(0),
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

    /// Chunks waiting in shards (not yet taken into a batch).
    pub fn waiting_chunks(&self) -> u64 {
        self.chunks_in
            .load(Ordering::Relaxed)
            .saturating_sub(self.chunks_out.load(Ordering::Relaxed))
    }

    /// Accepts all of `chunks` or none.
    ///
    /// # Errors
    /// [`Full`] when the byte budget cannot hold them.
    pub fn push(&self, chunks: Vec<Chunk>) -> Result<(), Full> {
        let needed: usize = chunks.iter().map(Chunk::queue_bytes).sum();
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
        self.chunks_in
            .fetch_add(chunks.len() as u64, Ordering::Relaxed);
        let mut touched = vec![false; self.shards.len()];
        // Lock each shard once per request, not once per chunk.
        let mut by_shard: Vec<Vec<Chunk>> = (0..self.shards.len()).map(|_| Vec::new()).collect();
        for c in chunks {
            let i = (c.shard as u64 % n) as usize;
            by_shard[i].push(c);
        }
        for (i, list) in by_shard.into_iter().enumerate() {
            if list.is_empty() {
                continue;
            }
            let mut q = self.shards[i]
                .chunks
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            q.extend(list.into_iter().map(|chunk| Queued { chunk, at: now }));
            touched[i] = true;
        }
        for (i, t) in touched.into_iter().enumerate() {
            if t {
                self.shards[i].notify.notify_one();
            }
        }
        Ok(())
    }

    /// Returns bytes to the budget once the chunks they belong to have left for good.
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
    /// chunk has waited `limits.flush_interval`, or (after `close`) with whatever is left.
    /// Returns `None` when closed and empty.
    pub async fn pop_batch(&self, shard: usize, limits: &BatchLimits) -> Option<Vec<Chunk>> {
        self.pop_batch_aged(shard, limits)
            .await
            .map(|(chunks, _)| chunks)
    }

    /// Like [`MemoryQueue::pop_batch`], also returning when the batch's first chunk arrived.
    pub async fn pop_batch_aged(
        &self,
        shard: usize,
        limits: &BatchLimits,
    ) -> Option<(Vec<Chunk>, Instant)> {
        let s = &self.shards[shard];
        loop {
            let notified = s.notify.notified();
            let (ready, oldest) = {
                let q = s.chunks.lock().unwrap_or_else(|p| p.into_inner());
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
    pub fn drain_shard(&self, shard: usize) -> Vec<Chunk> {
        let mut q = self.shards[shard]
            .chunks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let out: Vec<Chunk> = q.drain(..).map(|x| x.chunk).collect();
        self.chunks_out
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        out
    }

    fn full_batch_waiting(q: &VecDeque<Queued>, limits: &BatchLimits) -> bool {
        let (mut samples, mut bytes) = (0usize, 0usize);
        for item in q {
            samples += item.chunk.counts.points();
            bytes += item.chunk.raw_len as usize;
            if samples >= limits.max_samples || bytes >= limits.max_bytes {
                return true;
            }
        }
        false
    }

    fn take(&self, shard: usize, limits: &BatchLimits) -> Vec<Chunk> {
        let mut q = self.shards[shard]
            .chunks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let (mut samples, mut bytes) = (0usize, 0usize);
        let mut out = Vec::new();
        while let Some(front) = q.front() {
            let s = front.chunk.counts.points();
            let b = front.chunk.raw_len as usize;
            if !out.is_empty() && (samples + s > limits.max_samples || bytes + b > limits.max_bytes)
            {
                break;
            }
            samples += s;
            bytes += b;
            out.extend(q.pop_front().map(|qd| qd.chunk));
        }
        self.chunks_out
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        out
    }
}

#[cfg(test)]
mod tests;
