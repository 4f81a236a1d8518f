//! The in-memory queue: bounded by bytes in RAM; what it holds is lost if the process dies.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::dispatch::{Cut, Dispatcher, Taken};
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

/// A batch taken from the queue; give it back with [`MemoryQueue::done`].
pub struct Batch {
    /// The chunks, in push order.
    pub chunks: Vec<Chunk>,
    /// When the first chunk was pushed.
    pub first: Instant,
    taken: Taken,
}

/// Bounded in-memory queue; its chunks leave in the order the [dispatcher](super::dispatch)
/// allows.
pub struct MemoryQueue {
    /// The window (everything queued); tags are each chunk's budget bytes.
    state: Mutex<Dispatcher<usize>>,
    notify: Notify,
    max_bytes: usize,
    used: AtomicUsize,
    closed: AtomicBool,
    base: Instant,
}

impl MemoryQueue {
    /// A queue with a budget of `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            state: Mutex::new(Dispatcher::default()),
            notify: Notify::new(),
            max_bytes,
            used: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            base: Instant::now(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Dispatcher<usize>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the window under its lock, and counts the change in the memory of the
    /// dispatcher's index of parked chunks (it grows and shrinks as chunks park and unpark)
    /// in the budget.
    fn with_window<R>(&self, f: impl FnOnce(&mut Dispatcher<usize>) -> R) -> R {
        let mut d = self.lock();
        let before = d.index_bytes();
        let r = f(&mut d);
        let after = d.index_bytes();
        drop(d);
        if after > before {
            self.used.fetch_add(after - before, Ordering::AcqRel);
        } else {
            self.release(before - after);
        }
        r
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    /// Bytes in use: waiting plus in flight.
    pub fn used_bytes(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The byte budget.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Chunks waiting (not yet taken into a batch).
    pub fn waiting_chunks(&self) -> usize {
        self.lock().waiting()
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
        let now = self.now_ms();
        {
            let mut d = self.lock();
            for c in chunks {
                let bytes = c.queue_bytes();
                d.push(c, now, bytes);
            }
        }
        self.notify.notify_one();
        Ok(())
    }

    fn release(&self, bytes: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(bytes))
            });
    }

    /// Stops waiting: `pop_batch` then returns what is left without waiting for the flush
    /// interval, and `None` once nothing waits.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Whether [`MemoryQueue::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Waits for the next batch: returns when one is full, when its oldest chunk has waited
    /// `limits.flush_interval`, or (after `close`) with whatever may go. Returns `None` when
    /// closed and nothing waits. Several workers may wait at once; each gets its own batch.
    pub async fn pop_batch(&self, limits: &BatchLimits) -> Option<Batch> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let closed = self.is_closed();
            let cut = self.with_window(|d| {
                let cut = d.cut(limits, self.now_ms(), closed);
                if matches!(cut, Cut::Take(_)) && d.waiting() > 0 {
                    // More may go: let another worker look.
                    self.notify.notify_one();
                }
                cut
            });
            match cut {
                Cut::Take(mut taken) => {
                    return Some(Batch {
                        chunks: std::mem::take(&mut taken.chunks),
                        first: self.base + std::time::Duration::from_millis(taken.first_ms),
                        taken,
                    })
                }
                Cut::Wait(due) => {
                    let at = self.base + std::time::Duration::from_millis(due);
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                Cut::Empty if closed => return None,
                Cut::Empty | Cut::Blocked => notified.await,
            }
        }
    }

    /// The upstream accepted, or definitively refused, `batch`: its series may go again and
    /// its bytes leave the budget.
    pub fn done(&self, batch: Batch) {
        let mut freed = 0;
        let left =
            self.with_window(|d| d.done_with(batch.taken, |bytes| freed += bytes - kept(*bytes)));
        self.release(freed + left.iter().map(|b| kept(*b)).sum::<usize>());
        self.notify.notify_one();
    }

    /// Chunks `indices` of `batch` are finished while the rest is still being sent: their
    /// series may go again and their bytes leave the budget now (but for their place in the
    /// window, which leaves with it).
    pub fn done_part(&self, batch: &Batch, indices: &[usize]) {
        let mut freed = 0;
        let left = self.with_window(|d| {
            d.done_part(&batch.taken, indices, |bytes| freed += bytes - kept(*bytes))
        });
        self.release(freed + left.iter().map(|b| kept(*b)).sum::<usize>());
        self.notify.notify_one();
    }

    /// `batch` comes back unfinished (its worker panicked): its chunks not finished yet wait
    /// again, in their places, still counted in the budget. `chunks` are the chunks it was
    /// handed out with.
    pub fn give_back(&self, batch: Batch, chunks: Vec<Chunk>) {
        self.with_window(|d| d.give_back(batch.taken, chunks));
        self.notify.notify_waiters();
    }

    /// Takes every chunk not yet handed out, freeing its budget (used when giving up at
    /// shutdown, to count what is lost).
    pub fn drain(&self) -> Vec<Chunk> {
        let (rest, left) = self.with_window(|d| d.drain_waiting());
        // A drained chunk's place is gone for good (never handed back by the window).
        self.release(
            rest.iter().map(|(_, b)| b).sum::<usize>()
                + left.iter().map(|b| kept(*b)).sum::<usize>(),
        );
        rest.into_iter().map(|(c, _)| c).collect()
    }
}

/// Of a chunk's budget `bytes`, what stays counted after it is finished, until its place leaves
/// the window (behind an unfinished chunk, places pile up: a stuck batch must not grow them
/// without bound outside the budget).
fn kept(bytes: usize) -> usize {
    bytes.min(super::dispatch::slot_bytes::<usize>())
}

#[cfg(test)]
mod tests;
