//! The bounded hand-off between the receiver and the upstream workers.
//!
//! The receiver pushes the [`Chunk`]s of one request all at once ([`Queue::push`]): either all
//! are accepted or none, so a sender's retry never duplicates half a request. Upstream workers
//! take batches ([`Queue::pop_batch`]) and hand each back once the upstream accepted or
//! definitively refused it ([`Queue::done`]); the [dispatcher](dispatch) decides which chunks
//! may go together and when, so that two batches in flight never share a series: every
//! sample of a series leaves in the order it arrived, while batches of other series go out
//! concurrently. The byte budget covers waiting and in-flight data. When full, `push` refuses
//! and the receiver answers with a retryable status: the data stays in the sender's own WAL
//! instead of growing this process. Chunks are stored compressed, as the upstream will send
//! them, so budgets count compressed bytes.
//!
//! Two backends keep that contract:
//! - [`memory`]: bounded by bytes in RAM; what it holds is lost if the process dies;
//! - [`disk`]: a durable log under `queue_dir`; `push` returns only once the data is written
//!   (and fsynced, per the fsync policy), and everything not yet finished is replayed after a
//!   restart or crash.

pub mod disk;
mod dispatch;
pub mod memory;
pub mod metrics;

use std::path::PathBuf;
use std::time::Duration;

pub use crate::codec::BatchLimits;
use crate::codec::Chunk;
pub use disk::{DiskQueue, DiskQueueConfig, DiskQueueError, FsyncPolicy, RecoveryReport};
pub use memory::MemoryQueue;
pub use metrics::Metrics;

/// Where the queue keeps its data and how much it may hold.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    /// Budget of waiting and in-flight data, compressed bytes (`queue_max_bytes`).
    pub max_bytes: usize,
    /// The durable queue (`queue_dir`); `None`: in memory.
    pub disk: Option<DiskSettings>,
}

/// The durable queue's settings.
#[derive(Clone, Debug)]
pub struct DiskSettings {
    /// The queue directory (`queue_dir`).
    pub dir: PathBuf,
    /// When a push counts as durable (`fsync`).
    pub fsync: FsyncPolicy,
    /// How long a group commit waits for more pushes after a recent one (`commit_delay`).
    pub commit_delay: std::time::Duration,
    /// Compressed bytes held in memory for sending; the rest of a backlog waits on disk
    /// (`queue_memory_bytes`, at most `max_bytes`).
    pub memory_bytes: usize,
}

/// Opens the disk queue (replaying what was not acknowledged, with what recovery found logged)
/// or creates the memory queue.
///
/// # Errors
/// When the disk queue cannot be opened (in use, a newer format, unusable directory).
pub async fn open(cfg: &QueueConfig) -> Result<Queue, DiskQueueError> {
    let Some(disk) = cfg.disk.clone() else {
        return Ok(Queue::Memory(MemoryQueue::new(cfg.max_bytes)));
    };
    let dq = DiskQueueConfig {
        dir: disk.dir.clone(),
        max_bytes: cfg.max_bytes as u64,
        segment_bytes: disk::SEGMENT_BYTES,
        fsync: disk.fsync,
        commit_delay: disk.commit_delay,
        recent_commit: disk::RECENT_COMMIT,
        // What the workers see of a backlog; the rest stays on disk.
        window_bytes: disk.memory_bytes.min(cfg.max_bytes),
    };
    let (queue, report) = tokio::task::spawn_blocking(move || DiskQueue::open(dq))
        .await
        .map_err(|e| DiskQueueError::Config(format!("opening the queue panicked: {e}")))??;
    for c in &report.corrupt_records {
        tracing::error!(segment = %c.segment.display(), offset = c.offset, reason = %c.reason, "disk queue: a damaged record was skipped; its data is lost");
    }
    if report.truncated_tail {
        tracing::warn!("disk queue: a write interrupted by a crash was cut off the end of a segment (with fsync: always it had not been acknowledged to its sender)");
    }
    tracing::info!(
        dir = %disk.dir.display(),
        fsync = ?disk.fsync,
        replayed_chunks = report.replayed_chunks,
        replayed_bytes = report.replayed_bytes,
        "disk queue opened; unacknowledged data will be sent again"
    );
    Ok(Queue::Disk(queue))
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

/// A batch taken from the queue; give it back with [`Queue::done`].
pub struct Batch {
    /// The chunks, in push order.
    pub chunks: Vec<Chunk>,
    /// How long its first chunk has been queued (across restarts, for the disk queue).
    pub age: Duration,
    ticket: Ticket,
}

enum Ticket {
    Memory(memory::Batch),
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

    /// Why the queue cannot take writes now (see [`DiskQueue::failure`]); the memory queue
    /// cannot fail.
    pub fn failure(&self, recent: Duration) -> Option<String> {
        match self {
            Queue::Memory(_) => None,
            Queue::Disk(q) => q.failure(recent),
        }
    }

    /// Why the queue takes no writes until a restart (see [`DiskQueue::failed`]); the memory
    /// queue cannot fail.
    pub fn failed(&self) -> Option<String> {
        match self {
            Queue::Memory(_) => None,
            Queue::Disk(q) => q.failed(),
        }
    }

    /// Age of the oldest chunk not yet finished (disk queue only).
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

    /// Waits for the next batch (see [`BatchLimits`]); `None` once closed and empty. Several
    /// workers may wait at once.
    pub async fn pop_batch(&self, limits: &BatchLimits) -> Option<Batch> {
        match self {
            Queue::Memory(q) => {
                let mut b = q.pop_batch(limits).await?;
                Some(Batch {
                    chunks: std::mem::take(&mut b.chunks),
                    age: b.first.elapsed(),
                    ticket: Ticket::Memory(b),
                })
            }
            Queue::Disk(q) => {
                let mut b = q.pop_batch(limits).await?;
                let chunks = std::mem::take(&mut b.chunks);
                let pushed = std::time::UNIX_EPOCH + Duration::from_millis(b.first_ms);
                Some(Batch {
                    chunks,
                    age: pushed.elapsed().unwrap_or_default(),
                    ticket: Ticket::Disk(b),
                })
            }
        }
    }

    /// The upstream accepted, or definitively refused, `batch`: its series may go again, its
    /// budget is freed (and, on disk, the read position moves so it is not replayed).
    pub fn done(&self, batch: Batch) {
        match (self, batch.ticket) {
            (Queue::Memory(q), Ticket::Memory(b)) => q.done(b),
            (Queue::Disk(q), Ticket::Disk(b)) => q.done(b),
            _ => tracing::error!("a batch was handed back to the wrong queue"),
        }
    }

    /// Chunks `indices` of `batch` (positions in the chunks it was handed out with) are
    /// finished, delivered or dropped, while the rest is still being sent: their series may go
    /// again and their budget is freed at once. [`Queue::done`] finishes the rest.
    pub fn done_part(&self, batch: &Batch, indices: &[usize]) {
        match (self, &batch.ticket) {
            (Queue::Memory(q), Ticket::Memory(b)) => q.done_part(b, indices),
            (Queue::Disk(q), Ticket::Disk(b)) => q.done_part(b, indices),
            _ => tracing::error!("a batch was handed back to the wrong queue"),
        }
    }

    /// `batch` comes back unfinished (the worker sending it panicked): the chunks it was handed
    /// out with, `chunks`, that are not finished yet wait again, in their places, for the next
    /// worker.
    pub fn give_back(&self, batch: Batch, chunks: Vec<Chunk>) {
        match (self, batch.ticket) {
            (Queue::Memory(q), Ticket::Memory(b)) => q.give_back(b, chunks),
            (Queue::Disk(q), Ticket::Disk(b)) => q.give_back(b, chunks),
            _ => tracing::error!("a batch was handed back to the wrong queue"),
        }
    }

    /// What is left when the shutdown grace period ends: the memory queue hands over what no
    /// worker took (to be counted as lost); the disk queue keeps it for the next start.
    pub fn abandon(&self) -> Vec<Chunk> {
        match self {
            Queue::Memory(q) => q.drain(),
            Queue::Disk(_) => Vec::new(),
        }
    }

    /// Makes everything written and finished so far durable (disk queue; a no-op in memory).
    ///
    /// # Errors
    /// When the disk queue cannot sync.
    pub async fn sync(&self) -> std::io::Result<()> {
        match self {
            Queue::Memory(_) => Ok(()),
            Queue::Disk(q) => q.sync().await,
        }
    }

    /// Stops waiting: `pop_batch` returns what may go at once, then `None`.
    pub fn close(&self) {
        match self {
            Queue::Memory(q) => q.close(),
            Queue::Disk(q) => q.close(),
        }
    }
}

/// A chunk for tests of both backends: holding series `key` and `samples` samples in `len`
/// bytes whose first eight are `id` (so order and identity can be checked); the queues never
/// decompress data.
#[cfg(test)]
pub(crate) fn test_chunk(key: u64, id: u64, samples: u32, len: usize) -> Chunk {
    let mut data = id.to_le_bytes().to_vec();
    data.resize(len.max(8), 0xab);
    Chunk {
        keys: std::sync::Arc::from([key as crate::codec::SeriesKey]),
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
