//! The bounded hand-off between the receiver and the upstream shards.
//!
//! The receiver pushes the [`Chunk`]s of one request all at once ([`Queue::push`]): either all
//! are accepted or none, so a sender's retry never duplicates half a request. Each chunk goes to
//! its shard, picked by the series' labels, so every sample of one series travels through one
//! shard in arrival order; a shard's worker takes chunks out in that order ([`Queue::pop_batch`])
//! and hands the batch back once the upstream accepted or definitively refused it
//! ([`Queue::done`]). Chunks are stored compressed, as the upstream will send them, so budgets
//! count compressed bytes. The byte budget therefore covers both waiting and in-flight data. When
//! full, `push` refuses and the receiver answers with a retryable status: the data stays in the
//! sender's own WAL instead of growing this process.
//!
//! Two backends keep that contract:
//! - [`memory`]: bounded by bytes in RAM; what it holds is lost if the process dies;
//! - [`disk`]: a durable log per shard under `queue_dir`; `push` returns only once the data is
//!   written (and fsynced, per the fsync policy), and everything not yet acknowledged by the
//!   upstream is replayed after a restart or crash.

pub mod disk;
pub mod memory;
pub mod metrics;

use std::time::Duration;

use crate::codec::Chunk;
pub use disk::{DiskQueue, DiskQueueConfig, DiskQueueError, FsyncPolicy, RecoveryReport};
pub use memory::MemoryQueue;
pub use metrics::Metrics;

/// Limits of one upstream batch.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    /// Most samples (float samples + histogram samples) in one batch; a chunk larger than this
    /// travels alone.
    pub max_samples: usize,
    /// Most encoded (uncompressed) bytes in one batch.
    pub max_bytes: usize,
    /// How long the oldest chunk may wait for the batch to fill.
    pub flush_interval: Duration,
}

/// Why a push was refused; nothing of the request was kept.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The byte budget cannot hold the request.
    #[error("queue is full: {used} of {max} bytes in use, request needs {needed}")]
    Full {
        /// Bytes in use (waiting and in flight).
        used: u64,
        /// The budget.
        max: u64,
        /// Bytes the refused request needed.
        needed: u64,
    },
    /// The disk queue could not write or sync.
    #[error("queue write failed: {0}")]
    Io(#[source] std::io::Error),
}

/// A batch taken from one shard; give it back with [`Queue::done`].
pub struct Batch {
    /// The chunks, in shard order.
    pub chunks: Vec<Chunk>,
    /// How long its first chunk has been queued (across restarts, for the disk queue).
    pub age: Duration,
    ticket: Ticket,
}

enum Ticket {
    Memory(usize),
    Disk(disk::Batch),
}

/// The queue: one of the two backends.
pub enum Queue {
    /// In memory.
    Memory(MemoryQueue),
    /// On disk.
    Disk(DiskQueue),
}

impl Queue {
    /// Number of shards.
    pub fn shards(&self) -> usize {
        match self {
            Queue::Memory(q) => q.shards(),
            Queue::Disk(q) => q.shards(),
        }
    }

    /// Whether data survives a crash.
    pub fn is_durable(&self) -> bool {
        matches!(self, Queue::Disk(_))
    }

    /// Bytes in use: waiting plus in flight.
    pub fn used_bytes(&self) -> u64 {
        match self {
            Queue::Memory(q) => q.used_bytes() as u64,
            Queue::Disk(q) => q.used_bytes(),
        }
    }

    /// The byte budget.
    pub fn max_bytes(&self) -> u64 {
        match self {
            Queue::Memory(q) => q.max_bytes() as u64,
            Queue::Disk(q) => q.max_bytes(),
        }
    }

    /// Age of the oldest chunk not yet acknowledged (disk queue only).
    pub fn oldest_age(&self) -> Option<Duration> {
        match self {
            Queue::Memory(_) => None,
            Queue::Disk(q) => q.oldest_age(),
        }
    }

    /// Accepts all of `chunks` or none; with the disk queue, returns once they are durable.
    ///
    /// # Errors
    /// [`PushError::Full`] when the budget cannot hold them, [`PushError::Io`] when the disk
    /// queue cannot write.
    pub async fn push(&self, chunks: Vec<Chunk>) -> Result<(), PushError> {
        match self {
            Queue::Memory(q) => q.push(chunks).map_err(|f| PushError::Full {
                used: f.used as u64,
                max: f.max as u64,
                needed: f.needed as u64,
            }),
            Queue::Disk(q) => q.push(chunks).await.map_err(|e| match e {
                disk::PushError::Full { used, max, needed } => {
                    PushError::Full { used, max, needed }
                }
                disk::PushError::Io(e) => PushError::Io(e),
            }),
        }
    }

    /// Waits for the next batch of `shard` (see [`BatchLimits`]); `None` once closed and empty.
    pub async fn pop_batch(&self, shard: usize, limits: &BatchLimits) -> Option<Batch> {
        match self {
            Queue::Memory(q) => {
                let (chunks, first) = q.pop_batch_aged(shard, limits).await?;
                let bytes = chunks.iter().map(Chunk::queue_bytes).sum();
                Some(Batch {
                    chunks,
                    age: first.elapsed(),
                    ticket: Ticket::Memory(bytes),
                })
            }
            Queue::Disk(q) => {
                let mut b = q.pop_batch(shard, limits).await?;
                let chunks = std::mem::take(&mut b.chunks);
                let pushed = b
                    .first_ms
                    .map(|ms| std::time::UNIX_EPOCH + Duration::from_millis(ms));
                let age = pushed.and_then(|t| t.elapsed().ok()).unwrap_or_default();
                Some(Batch {
                    chunks,
                    age,
                    ticket: Ticket::Disk(b),
                })
            }
        }
    }

    /// The upstream accepted, or definitively refused, `batch`: free its budget (and, on disk,
    /// advance the shard's read position so it is not replayed).
    pub fn done(&self, shard: usize, batch: Batch) {
        match (self, batch.ticket) {
            (Queue::Memory(q), Ticket::Memory(bytes)) => q.release(bytes),
            (Queue::Disk(q), Ticket::Disk(b)) => q.ack(shard, &b),
            _ => tracing::error!("a batch was handed back to the wrong queue"),
        }
    }

    /// What is left in `shard` when the shutdown grace period ends: the memory queue hands it
    /// over (to be counted as lost); the disk queue keeps it for the next start.
    pub fn abandon(&self, shard: usize) -> Vec<Chunk> {
        match self {
            Queue::Memory(q) => {
                let rest = q.drain_shard(shard);
                q.release(rest.iter().map(Chunk::queue_bytes).sum());
                rest
            }
            Queue::Disk(_) => Vec::new(),
        }
    }

    /// Makes everything written and acknowledged so far durable (disk queue; a no-op in memory).
    ///
    /// # Errors
    /// When the disk queue cannot sync.
    pub async fn sync(&self) -> std::io::Result<()> {
        match self {
            Queue::Memory(_) => Ok(()),
            Queue::Disk(q) => q.sync().await,
        }
    }

    /// Stops waiting: `pop_batch` returns what is left at once, then `None`.
    pub fn close(&self) {
        match self {
            Queue::Memory(q) => q.close(),
            Queue::Disk(q) => q.close(),
        }
    }
}

/// A chunk for tests of both backends: for shard `key` (the queues take it modulo their shard
/// count), holding `samples` samples in `len` bytes whose first eight are `id` (so order and
/// identity can be checked); the queues never decompress data.
#[cfg(test)]
pub(crate) fn test_chunk(key: u64, id: u64, samples: u32, len: usize) -> Chunk {
    let mut data = id.to_le_bytes().to_vec();
    data.resize(len.max(8), 0xab);
    Chunk {
        shard: key as usize,
        counts: crate::codec::ChunkCounts {
            series: 1,
            samples,
            ..Default::default()
        },
        raw_len: len as u32,
        min_ts: id as i64 - 5,
        data: bytes::Bytes::from(data),
    }
}
