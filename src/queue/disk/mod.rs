//! The durable queue: the same hand-off as the memory queue ([`super::Queue`]), kept in
//! append-only files so that what a sender saw acknowledged survives a crash or restart.
//!
//! [`DiskQueue::push`] takes the chunks of one request all at once, writes one record per
//! touched shard, and returns only when they are durable per the [`FsyncPolicy`]; the receiver
//! answers 2xx after that (ack after commit). Each shard's worker takes batches in order
//! ([`DiskQueue::pop_batch`], same batching as the memory queue) and acknowledges each one once
//! the upstream accepted or definitively dropped it ([`DiskQueue::ack`]); that advances the
//! shard's persisted read position, and fully consumed segments are deleted. On start,
//! [`DiskQueue::open`] replays everything committed and not acknowledged, in order per shard.
//!
//! Writes, fsyncs, position files and deletions happen on one committer thread, which groups
//! the pushes that arrive while it is busy into one write + fsync per touched file (group
//! commit). Readers stream records from the files through `spawn_blocking`, keeping at most
//! about one batch (plus the rest of the record it ends in) in memory.
//!
//! # On-disk format (version 2)
//!
//! ```text
//! <dir>/shard-<n>/                 one directory per shard (the chunk's shard)
//!     <seq:020>.log                segments, seq increasing from 0; the highest is written
//!     read.pos                     the shard's read position (below)
//!     read.pos.tmp                 only while read.pos is replaced; removed on open
//! ```
//!
//! A segment is a sequence of records and nothing else; a new segment is started when the
//! next record would take the current one past `segment_bytes` (a record bigger than that gets
//! a segment of its own). All integers are little-endian.
//!
//! ```text
//! record   := magic "PLQ2" (4) | payload_len u32 (4) | crc u32 (4) | payload
//!             crc = CRC-32 (IEEE 802.3 polynomial, as zlib/gzip; crc32fast) over the 4
//!             payload_len bytes followed by the payload. payload_len <= 512 MiB.
//! payload  := pushed_at_unix_ms u64 (8) | chunk_count varint | chunk * chunk_count
//! chunk    := series varint | samples varint | histograms varint | exemplars varint
//!             | metadata varint | raw_len varint | min_ts zigzag-varint | data_len varint
//!             | data
//!             (varint = unsigned LEB128, as protobuf; zigzag as protobuf's sint64; the
//!             fields are those of `codec::Chunk`: `data` is snappy block elements without
//!             the length preamble, decompressing to `raw_len` bytes of encoded remote write
//!             1.0 `WriteRequest` fields)
//! read.pos := magic "PLQP" (4) | seg u64 (8) | off u64 (8) | skip u32 (4) | crc u32 (4)
//!             crc = CRC-32 over the first 24 bytes. The next unconsumed chunk is chunk
//!             `skip` of the record at byte `off` of segment `seg`; every earlier record of
//!             the shard (and the first `skip` chunks of this one) was acknowledged.
//! ```
//!
//! One record holds the chunks of one request that fell into one shard, in request order
//! (usually one chunk; more when the request's share exceeds the batch limits).
//! `read.pos` is replaced atomically (write `read.pos.tmp`, fsync, rename, fsync directory).
//! A segment is deleted only once a durable `read.pos` points past its end.
//!
//! Version 1 records (magic "PLQ1", written by earlier versions: the payload held
//! `shard_key u64 | field | samples | histograms | exemplars | bytes_len | bytes` per message,
//! `skip` counted messages) are still read: the unconsumed messages of such a record are
//! compressed into one chunk when it is read back, so an upgrade replays the old queue.
//!
//! # Recovery
//!
//! On open each shard's records from `read.pos` to the end are checked (magic, length, CRC,
//! payload structure). A damaged record in the middle loses only itself: the scan resyncs on
//! the next offset holding the magic and a record with a valid CRC, and the damage is
//! reported with segment and offset ([`RecoveryReport::corrupt_records`]) and logged again
//! when the reader skips it. Damage with no valid record after it in the last segment is a torn
//! write: the file is truncated there ([`RecoveryReport::truncated_tail`]). A missing or
//! damaged `read.pos` restarts the shard at its oldest segment (duplicates, never loss).
//!
//! # Guarantees
//!
//! - [`FsyncPolicy::Always`]: `push` returns after the records are fsynced. Nothing whose push
//!   returned `Ok` is lost on process crash, kernel crash or power loss (barring damaged media,
//!   which loses only the damaged records).
//! - [`FsyncPolicy::Interval`]: `push` returns after `write()`. A process crash (`kill -9`)
//!   loses nothing (the page cache survives); a kernel crash or power loss may lose what was
//!   pushed in the last interval.
//! - Acknowledgements: `ack` updates the position in memory; the committer writes it at its
//!   next cycle (promptly, it is woken), fsynced under `Always`, and fsynced at the next
//!   interval under `Interval`. A crash before that replays the acknowledged batches again:
//!   duplicates, never loss. Batches must be acknowledged in the order they were popped.
//! - A failed write is undone (the push gets [`PushError::Io`], nothing of it stays). A failed
//!   fsync fails every push of its group with [`PushError::Io`], but their records stay in the
//!   log and are delivered: the senders' retries may duplicate them, nothing is lost.

mod commit;
mod reader;
mod segment;

#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{oneshot, Notify};

use super::BatchLimits;
use crate::codec::Chunk;
use commit::{CommitQueue, Committer, PendingPush, Writer};
use reader::{Poll, Reader};
use segment::Pos;

/// Durable queue settings.
#[derive(Clone, Debug)]
pub struct DiskQueueConfig {
    /// Directory holding the queue; created if missing. One process per directory.
    pub dir: PathBuf,
    /// Number of shards (at least 1). Changing it while the directory holds unacknowledged
    /// data is refused, since it would reorder series.
    pub shards: usize,
    /// Budget of unacknowledged record bytes (framing included); pushes beyond it are refused.
    pub max_bytes: u64,
    /// Size at which a shard starts a new segment, e.g. 16 MiB.
    pub segment_bytes: u64,
    /// When a push counts as durable.
    pub fsync: FsyncPolicy,
}

/// When [`DiskQueue::push`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After the records are fsynced; concurrent pushes share one fsync per touched segment
    /// (group commit). No loss on power loss.
    Always,
    /// After `write()`; files are fsynced every interval. Loss window: the interval, on power
    /// loss or kernel crash only; nothing is lost on a process crash.
    Interval(Duration),
}

/// Marks a push error whose records were nevertheless written and published (the fsync
/// failed): they will be delivered and acknowledged like any other.
#[derive(Debug)]
pub(crate) struct Published(pub(crate) String);

impl std::fmt::Display for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Published {}

/// Why the queue could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DiskQueueError {
    /// A file or directory operation failed.
    #[error("queue {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The settings cannot work.
    #[error("invalid disk queue settings: {0}")]
    Config(String),
    /// The directory holds unacknowledged data written with another shard count.
    #[error("queue directory {dir} holds unacknowledged data in {found} shards but {configured} are configured: start with {found} shards until it is drained")]
    ShardCountChanged {
        /// The queue directory.
        dir: PathBuf,
        /// Shard directories found.
        found: usize,
        /// Shards configured.
        configured: usize,
    },
}

/// Why a push was refused.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The byte budget cannot hold the request; nothing was written.
    #[error("disk queue is full: {used} of {max} bytes in use, request needs {needed}")]
    Full {
        /// Unacknowledged bytes (including pushes in progress).
        used: u64,
        /// The budget.
        max: u64,
        /// Bytes the refused request needed.
        needed: u64,
    },
    /// Writing or syncing failed; the request may or may not be replayed later, so the sender
    /// must retry (a duplicate at worst).
    #[error("disk queue write failed: {0}")]
    Io(#[source] io::Error),
}

/// A batch taken from one shard; hand it back to [`DiskQueue::ack`] when done with it.
#[derive(Debug)]
pub struct Batch {
    /// The chunks, in shard order.
    pub chunks: Vec<Chunk>,
    /// Position after the last chunk.
    end: Pos,
    /// Bytes of the records this batch completes (released on ack).
    release: u64,
    /// Records this batch completes.
    records: u64,
    /// Push time of the first chunk of the shard after this batch, if known at pop time.
    next_ms: Option<u64>,
    /// Push time (unix ms) of this batch's first chunk.
    pub first_ms: Option<u64>,
}

/// A damaged record found on open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorruptRecord {
    /// The segment (or position) file.
    pub segment: PathBuf,
    /// Byte offset of the damage in it.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

/// What [`DiskQueue::open`] found.
#[derive(Clone, Debug, Default)]
pub struct RecoveryReport {
    /// Unacknowledged chunks that will be sent again.
    pub replayed_chunks: u64,
    /// Their record bytes.
    pub replayed_bytes: u64,
    /// Damaged records (each lost) and damaged position files (each restarting its shard at
    /// its oldest segment).
    pub corrupt_records: Vec<CorruptRecord>,
    /// Whether a torn write at the end of a shard was cut off.
    pub truncated_tail: bool,
}

/// Counters and gauges of the queue.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DiskQueueStats {
    /// Unacknowledged records.
    pub records: u64,
    /// Unacknowledged record bytes (what the budget counts).
    pub bytes: u64,
    /// Segment files.
    pub segments: u64,
    /// Segment bytes on disk (acknowledged but not yet deleted bytes included).
    pub disk_bytes: u64,
    /// Damaged records skipped by readers plus torn tails cut on open.
    pub corrupt_records: u64,
    /// Group commits that wrote at least one push.
    pub commits: u64,
    /// fsync calls (segments, position files, directories).
    pub fsyncs: u64,
    /// Seconds spent in group-commit fsyncs of segments and directories.
    pub fsync_seconds: f64,
    /// Entries replayed on open.
    pub replayed: u64,
}

/// Millisecond timestamps for records: wall clock across restarts, tokio's clock (pausable in
/// tests) within a process.
struct Clock {
    base_ms: u64,
    base: tokio::time::Instant,
}

impl Clock {
    fn new() -> Self {
        Self {
            base_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            base: tokio::time::Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.base_ms + self.base.elapsed().as_millis() as u64
    }

    /// The instant of a timestamp, no earlier than the queue's opening.
    fn instant(&self, ms: u64) -> tokio::time::Instant {
        self.base + Duration::from_millis(ms.saturating_sub(self.base_ms))
    }
}

/// Per-shard state shared by pushes (through the committer), the reader and `ack`.
struct ShardState {
    /// Segments on disk, oldest first, with their published length; the last is written.
    segments: VecDeque<(u64, u64)>,
    /// Acknowledged up to here (in memory).
    ack: Pos,
    /// Written to `read.pos` (maybe not fsynced).
    persisted: Pos,
    /// Written to `read.pos` and fsynced.
    durable: Pos,
    /// Unacknowledged record bytes published to readers.
    bytes: u64,
    /// Push time of the oldest unacknowledged chunk (approximate after an ack whose successor
    /// was not read yet: then the age is overestimated until the next pop).
    front_ms: Option<u64>,
    /// Batches popped and not acknowledged.
    inflight: u32,
}

impl ShardState {
    /// Published end of segment `seq` and the sequence number of the next segment.
    fn extent(&self, seq: u64) -> (Option<u64>, Option<u64>) {
        let len = self
            .segments
            .iter()
            .find(|(s, _)| *s == seq)
            .map(|(_, l)| *l);
        let next = self.segments.iter().map(|(s, _)| *s).find(|&s| s > seq);
        (len, next)
    }
}

struct Shard {
    dir: PathBuf,
    state: Mutex<ShardState>,
    notify: Notify,
    reader: Mutex<Reader>,
    /// A batch cut by a blocking poll, until a `pop_batch` call returns it. If the call that
    /// started the poll was cancelled meanwhile, the next call returns it: nothing is skipped.
    handoff: Mutex<Option<reader::Popped>>,
}

#[derive(Default)]
struct Counters {
    records: AtomicU64,
    corrupt: AtomicU64,
    commits: AtomicU64,
    fsyncs: AtomicU64,
    /// Time spent in group-commit fsyncs, nanoseconds.
    fsync_nanos: AtomicU64,
    replayed: AtomicU64,
}

struct Inner {
    shards: Vec<Shard>,
    max_bytes: u64,
    used: AtomicU64,
    closed: AtomicBool,
    clock: Clock,
    counters: Counters,
    commit: Mutex<CommitQueue>,
    wake: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    fn wake_committer(&self, f: impl FnOnce(&mut CommitQueue)) {
        f(&mut lock(&self.commit));
        self.wake.notify_one();
    }
}

/// Durable, sharded, bounded queue. `Send + Sync`; share it behind an `Arc`.
pub struct DiskQueue {
    inner: Arc<Inner>,
    committer: Option<JoinHandle<()>>,
    /// An exclusive lock on `<dir>/lock`, held while the queue is open: two processes writing
    /// one queue directory would corrupt it.
    _lock: std::fs::File,
}

/// What recovering one shard directory found.
struct ShardRecovery {
    state: ShardState,
    writer: Writer,
    reader_pos: Pos,
    records: u64,
}

impl DiskQueue {
    /// Opens (or creates) the queue in `cfg.dir` and replays it: everything committed and not
    /// acknowledged becomes readable again, in order per shard. Blocking: call it before the
    /// runtime serves traffic or through `spawn_blocking`.
    ///
    /// # Errors
    /// [`DiskQueueError::Config`] for unusable settings, [`DiskQueueError::ShardCountChanged`]
    /// when the directory holds data of another shard count, [`DiskQueueError::Io`] when the
    /// directory cannot be used. Damaged files are not errors: they are reported.
    pub fn open(cfg: DiskQueueConfig) -> Result<(Self, RecoveryReport), DiskQueueError> {
        if cfg.shards == 0 {
            return Err(DiskQueueError::Config("shards must be at least 1".into()));
        }
        if cfg.max_bytes == 0 || cfg.segment_bytes < 1024 {
            return Err(DiskQueueError::Config(format!(
                "max_bytes must be positive and segment_bytes at least 1024, got {} and {}",
                cfg.max_bytes, cfg.segment_bytes
            )));
        }
        if cfg.fsync == FsyncPolicy::Interval(Duration::ZERO) {
            return Err(DiskQueueError::Config(
                "the fsync interval must be positive".into(),
            ));
        }
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DiskQueueError::Io { path, source }
        };
        std::fs::create_dir_all(&cfg.dir).map_err(io_err(&cfg.dir))?;
        let lock_path = cfg.dir.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(DiskQueueError::Config(format!(
                    "queue directory {} is in use by another promlink process",
                    cfg.dir.display()
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
        let found = existing_shard_dirs(&cfg.dir).map_err(io_err(&cfg.dir))?;
        let mut report = RecoveryReport::default();
        let mut recovered = Vec::new();
        // Existing shards first, so a refused shard count leaves the directory as it was.
        for i in 0..found {
            let dir = cfg.dir.join(format!("shard-{i}"));
            let r = recover_shard(&dir, i, &mut report).map_err(io_err(&dir))?;
            recovered.push((dir, r));
        }
        if found != cfg.shards && report.replayed_chunks > 0 {
            return Err(DiskQueueError::ShardCountChanged {
                dir: cfg.dir.clone(),
                found,
                configured: cfg.shards,
            });
        }
        for i in found..cfg.shards {
            let dir = cfg.dir.join(format!("shard-{i}"));
            let r = recover_shard(&dir, i, &mut report).map_err(io_err(&dir))?;
            recovered.push((dir, r));
        }
        for (dir, _) in recovered.drain(cfg.shards..) {
            std::fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
        }
        let counters = Counters::default();
        counters
            .replayed
            .store(report.replayed_chunks, Ordering::Relaxed);
        counters.corrupt.store(
            report
                .corrupt_records
                .iter()
                .filter(|c| c.reason.starts_with("torn tail"))
                .count() as u64,
            Ordering::Relaxed,
        );
        let mut shards = Vec::new();
        let mut writers = Vec::new();
        let mut used = 0;
        for (dir, r) in recovered {
            used += r.state.bytes;
            counters.records.fetch_add(r.records, Ordering::Relaxed);
            writers.push(r.writer);
            shards.push(Shard {
                dir,
                state: Mutex::new(r.state),
                notify: Notify::new(),
                reader: Mutex::new(Reader::new(r.reader_pos)),
                handoff: Mutex::new(None),
            });
        }
        let inner = Arc::new(Inner {
            shards,
            max_bytes: cfg.max_bytes,
            used: AtomicU64::new(used),
            closed: AtomicBool::new(false),
            clock: Clock::new(),
            counters,
            commit: Mutex::new(CommitQueue::default()),
            wake: Condvar::new(),
        });
        let committer = Committer::new(inner.clone(), writers, cfg.fsync, cfg.segment_bytes);
        let handle = std::thread::Builder::new()
            .name("promlink-queue-commit".into())
            .spawn(move || committer.run())
            .map_err(io_err(&cfg.dir))?;
        if report.replayed_chunks > 0 || !report.corrupt_records.is_empty() {
            tracing::info!(
                dir = %cfg.dir.display(),
                chunks = report.replayed_chunks,
                bytes = report.replayed_bytes,
                corrupt = report.corrupt_records.len(),
                truncated_tail = report.truncated_tail,
                "disk queue replays unacknowledged data"
            );
        }
        Ok((
            Self {
                inner,
                committer: Some(handle),
                _lock: lock,
            },
            report,
        ))
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.inner.shards.len()
    }

    /// The byte budget.
    pub fn max_bytes(&self) -> u64 {
        self.inner.max_bytes
    }

    /// Accepts all of `chunks` or none, and returns once they are durable per the
    /// [`FsyncPolicy`]. Concurrent pushes share writes and fsyncs.
    ///
    /// # Errors
    /// [`PushError::Full`] when the budget cannot hold them (nothing written);
    /// [`PushError::Io`] when writing or syncing failed.
    pub async fn push(&self, chunks: Vec<Chunk>) -> Result<(), PushError> {
        if chunks.is_empty() {
            return Ok(());
        }
        let n = self.inner.shards.len();
        let mut by_shard: Vec<Vec<Chunk>> = (0..n).map(|_| Vec::new()).collect();
        for c in chunks {
            by_shard[c.shard % n].push(c);
        }
        let at_ms = self.inner.clock.now_ms();
        let mut records = Vec::new();
        for (shard, list) in by_shard.into_iter().enumerate() {
            if list.is_empty() {
                continue;
            }
            let rec = segment::encode_record(at_ms, &list);
            if rec.len() as u64 - segment::HEADER_LEN > segment::MAX_PAYLOAD {
                return Err(PushError::Io(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} bytes for one shard exceed the record limit", rec.len()),
                )));
            }
            records.push((shard, rec));
        }
        let needed: u64 = records.iter().map(|(_, r)| r.len() as u64).sum();
        self.reserve(needed)?;
        let (tx, rx) = oneshot::channel();
        self.inner.wake_committer(|q| {
            q.pushes.push(PendingPush {
                records,
                at_ms,
                reply: tx,
            })
        });
        let result = match rx.await {
            Ok(r) => r,
            Err(_) => Err(io::Error::other("the disk queue committer stopped")),
        };
        result.map_err(|e| {
            // A push whose records were published (only the fsync failed) keeps its bytes:
            // they are released when the records are acknowledged. Only an undone push gives
            // its reservation back, so nothing is released twice.
            let published = e.get_ref().is_some_and(|inner| inner.is::<Published>());
            if !published {
                reader::sub(&self.inner.used, needed);
            }
            PushError::Io(e)
        })
    }

    fn reserve(&self, needed: u64) -> Result<(), PushError> {
        let max = self.inner.max_bytes;
        let mut used = self.inner.used.load(Ordering::Relaxed);
        loop {
            // A request bigger than the whole budget still enters an empty queue, so it cannot
            // be refused forever.
            if used > 0 && used + needed > max {
                return Err(PushError::Full { used, max, needed });
            }
            match self.inner.used.compare_exchange_weak(
                used,
                used + needed,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(now) => used = now,
            }
        }
    }

    /// Waits for the next batch of shard `shard`: returns when the batch is full, when its
    /// oldest chunk has waited `limits.flush_interval`, or (after `close`) with whatever is
    /// left. Returns `None` when closed and empty. Cancel-safe: a batch counts as taken only
    /// when a call returns it.
    pub async fn pop_batch(&self, shard: usize, limits: &BatchLimits) -> Option<Batch> {
        let s = &self.inner.shards[shard];
        let mut backoff = false;
        loop {
            let stashed = lock(&s.handoff).take();
            if let Some(popped) = stashed {
                let mut st = lock(&s.state);
                if st.inflight == 0 {
                    st.front_ms = popped.first_ms.or(st.front_ms);
                }
                st.inflight += 1;
                return Some(popped.batch);
            }
            let notified = s.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if backoff {
                // A read failed: do not spin on a failing disk.
                tokio::time::sleep(Duration::from_secs(1)).await;
                backoff = false;
            }
            let inner = self.inner.clone();
            let limits = *limits;
            let polled = tokio::task::spawn_blocking(move || {
                let s = &inner.shards[shard];
                let mut reader = lock(&s.reader);
                // Checked and filled under the reader lock: at most one batch waits there.
                if lock(&s.handoff).is_some() {
                    return Poll::Stashed;
                }
                match reader.poll(&inner, shard, &limits) {
                    Poll::Ready(popped) => {
                        *lock(&s.handoff) = Some(popped);
                        Poll::Stashed
                    }
                    other => other,
                }
            })
            .await;
            let wait_until = match polled {
                Ok(Poll::Ready(_) | Poll::Stashed) => continue,
                Ok(Poll::Closed) => return None,
                Ok(Poll::Empty) => None,
                Ok(Poll::Wait(ms)) => Some(self.inner.clock.instant(ms)),
                Ok(Poll::Failed) => {
                    backoff = true;
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, shard, "disk queue reader task failed");
                    backoff = true;
                    continue;
                }
            };
            match wait_until {
                Some(at) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Marks `batch` (popped from `shard`) as done: the upstream accepted or definitively
    /// dropped it. Frees its bytes and advances the shard's read position in memory; the
    /// committer persists it at its next cycle and deletes segments left behind. Acknowledging
    /// a batch twice, or one older than an acknowledged one, does nothing.
    pub fn ack(&self, shard: usize, batch: &Batch) {
        {
            let mut st = lock(&self.inner.shards[shard].state);
            if batch.end <= st.ack {
                return;
            }
            st.ack = batch.end;
            st.inflight = st.inflight.saturating_sub(1);
            st.bytes = st.bytes.saturating_sub(batch.release);
            if st.bytes == 0 {
                st.front_ms = None;
            } else if let Some(ms) = batch.next_ms {
                st.front_ms = Some(ms);
            }
        }
        reader::sub(&self.inner.used, batch.release);
        self.inner
            .counters
            .records
            .fetch_sub(batch.records, Ordering::Relaxed);
        self.inner.wake_committer(|q| q.acks = true);
    }

    /// Stops waiting: `pop_batch` then returns what is left without waiting for the flush
    /// interval, and `None` once a shard is empty. Pushes and acks keep working; the files
    /// are synced when the queue is dropped.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        for s in &self.inner.shards {
            s.notify.notify_one();
        }
    }

    /// Whether [`DiskQueue::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Makes everything pushed and acknowledged so far durable (fsync of data, positions and
    /// directories, deletion of consumed segments), whatever the policy. For shutdown.
    ///
    /// # Errors
    /// When an fsync failed.
    pub async fn sync(&self) -> Result<(), io::Error> {
        let (tx, rx) = oneshot::channel();
        self.inner.wake_committer(|q| q.syncs.push(tx));
        rx.await
            .unwrap_or_else(|_| Err(io::Error::other("the disk queue committer stopped")))
    }

    /// Unacknowledged bytes, including pushes in progress.
    pub fn used_bytes(&self) -> u64 {
        self.inner.used.load(Ordering::Relaxed)
    }

    /// Age of the oldest unacknowledged chunk (never underestimated).
    pub fn oldest_age(&self) -> Option<Duration> {
        let oldest = self
            .inner
            .shards
            .iter()
            .filter_map(|s| lock(&s.state).front_ms)
            .min()?;
        Some(Duration::from_millis(
            self.inner.clock.now_ms().saturating_sub(oldest),
        ))
    }

    /// Counters and gauges.
    pub fn stats(&self) -> DiskQueueStats {
        let c = &self.inner.counters;
        let (mut segments, mut disk_bytes) = (0, 0);
        for s in &self.inner.shards {
            let st = lock(&s.state);
            segments += st.segments.len() as u64;
            disk_bytes += st.segments.iter().map(|(_, l)| l).sum::<u64>();
        }
        DiskQueueStats {
            records: c.records.load(Ordering::Relaxed),
            bytes: self.used_bytes(),
            segments,
            disk_bytes,
            corrupt_records: c.corrupt.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            fsync_seconds: c.fsync_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            replayed: c.replayed.load(Ordering::Relaxed),
        }
    }

    /// Whether shard `shard` holds chunks a pop would return at once.
    #[cfg(test)]
    fn has_unread(&self, shard: usize) -> bool {
        let s = &self.inner.shards[shard];
        let reader = lock(&s.reader);
        let st = lock(&s.state);
        reader.has_unread(&st)
    }

    /// Stops the committer at once, without syncing or persisting positions: what a crash
    /// leaves behind (written data stays in the page cache, as after `kill -9`).
    #[cfg(test)]
    fn crash(mut self) {
        self.inner.wake_committer(|q| q.crash = true);
        if let Some(h) = self.committer.take() {
            let _ = h.join();
        }
    }
}

impl Drop for DiskQueue {
    /// Syncs data and positions and stops the committer (blocks for that final commit).
    fn drop(&mut self) {
        if let Some(h) = self.committer.take() {
            self.inner.wake_committer(|q| q.shutdown = true);
            let _ = h.join();
        }
    }
}

/// Number of `shard-<n>` directories, as one past the highest `n`.
fn existing_shard_dirs(dir: &Path) -> io::Result<usize> {
    let mut found = 0;
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name();
        if let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_prefix("shard-"))
            .and_then(|n| n.parse::<usize>().ok())
        {
            found = found.max(n + 1);
        }
    }
    Ok(found)
}

/// Checks one shard directory from its read position on, cuts a torn tail, and sets up its
/// writer.
fn recover_shard(
    dir: &Path,
    shard: usize,
    report: &mut RecoveryReport,
) -> io::Result<ShardRecovery> {
    std::fs::create_dir_all(dir)?;
    segment::remove_pos_tmp(dir)?;
    let mut seqs = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name();
        match name.to_str().and_then(segment::parse_segment_name) {
            Some(seq) => seqs.push(seq),
            None if name == segment::POS_FILE => {}
            None => {
                tracing::warn!(dir = %dir.display(), file = ?name, "unexpected file in queue shard directory")
            }
        }
    }
    seqs.sort_unstable();
    let first = seqs.first().copied().unwrap_or(0);
    let mut pos = match segment::read_pos(dir) {
        Ok(Some(p)) => p,
        Ok(None) => Pos::new(first, 0, 0),
        Err(reason) => {
            let path = dir.join(segment::POS_FILE);
            tracing::error!(file = %path.display(), %reason, "damaged read position: replaying the shard from its oldest segment");
            report.corrupt_records.push(CorruptRecord {
                segment: path,
                offset: 0,
                reason: format!(
                    "read position unusable, shard replayed from its oldest segment: {reason}"
                ),
            });
            Pos::new(first, 0, 0)
        }
    };
    // Segments before the position were consumed; a crash may have kept them from deletion.
    for &seq in seqs.iter().filter(|&&s| s < pos.seg) {
        std::fs::remove_file(segment::segment_path(dir, seq))?;
    }
    seqs.retain(|&s| s >= pos.seg);
    let created = seqs.is_empty();
    if created {
        // Never reuse the number of a deleted segment the position may still name.
        let seq = if pos == Pos::default() {
            0
        } else {
            pos.seg + 1
        };
        std::fs::File::create(segment::segment_path(dir, seq))?;
        segment::sync_dir(dir)?;
        seqs.push(seq);
    }
    if seqs[0] != pos.seg {
        pos = Pos::new(seqs[0], 0, 0);
    }
    let mut state = ShardState {
        segments: VecDeque::new(),
        ack: pos,
        persisted: pos,
        durable: pos,
        bytes: 0,
        front_ms: None,
        inflight: 0,
    };
    let mut records = 0;
    let last = *seqs.last().unwrap_or(&0);
    for &seq in &seqs {
        let path = segment::segment_path(dir, seq);
        let mut file = std::fs::File::open(&path)?;
        let mut end = file.metadata()?.len();
        let (mut off, mut skip) = if seq == pos.seg {
            (pos.off.min(end), pos.skip)
        } else {
            (0, 0)
        };
        if seq == pos.seg && pos.off > end {
            // The position outlived data lost with the page cache (power loss under `Interval`).
            pos = Pos::new(seq, end, 0);
            state.ack = pos;
            state.persisted = pos;
            state.durable = pos;
        }
        loop {
            match segment::step(&mut file, off, end, shard)? {
                segment::Step::Record {
                    off: at,
                    at_ms,
                    chunks: list,
                    next,
                } => {
                    let live = (list.len() as u64).saturating_sub(u64::from(skip));
                    if live > 0 {
                        records += 1;
                        state.bytes += next - at;
                        report.replayed_chunks += live;
                        report.replayed_bytes += next - at;
                        state.front_ms.get_or_insert(at_ms);
                    }
                    skip = 0;
                    off = next;
                }
                segment::Step::Corrupt {
                    off: at,
                    reason,
                    resume,
                } => {
                    skip = 0;
                    match resume {
                        None if seq == last => {
                            tracing::warn!(segment = %path.display(), offset = at, %reason, "torn write at the end of the queue cut off");
                            report.corrupt_records.push(CorruptRecord {
                                segment: path.clone(),
                                offset: at,
                                reason: format!(
                                    "torn tail of {} bytes cut off: {reason}",
                                    end - at
                                ),
                            });
                            report.truncated_tail = true;
                            let f = std::fs::OpenOptions::new().write(true).open(&path)?;
                            f.set_len(at)?;
                            f.sync_all()?;
                            end = at;
                            break;
                        }
                        resume => {
                            let resume = resume.unwrap_or(end);
                            tracing::error!(segment = %path.display(), offset = at, %reason, "damaged queue record: it is lost, the rest is kept");
                            report.corrupt_records.push(CorruptRecord {
                                segment: path.clone(),
                                offset: at,
                                reason,
                            });
                            // The reader skips (and releases) this region again.
                            records += 1;
                            state.bytes += resume - at;
                            off = resume;
                        }
                    }
                }
                segment::Step::End => break,
            }
        }
        state.segments.push_back((seq, end));
    }
    let writer = Writer::open(dir, last, state.segments.back().map_or(0, |s| s.1))?;
    Ok(ShardRecovery {
        state,
        writer,
        reader_pos: pos,
        records,
    })
}
