//! The durable queue: the same hand-off as the memory queue ([`super::Queue`]), kept in an
//! append-only log so that what a sender saw acknowledged survives a crash or restart.
//!
//! [`DiskQueue::push`] takes the chunks of one request all at once, appends them as one record,
//! and returns only when the record is durable per the [`FsyncPolicy`]; the receiver answers
//! 2xx after that (ack after commit). Upstream workers take batches from a window of the log
//! ([`DiskQueue::pop_batch`], with the [dispatcher](super::dispatch)'s order rules) and hand
//! each back once the upstream accepted or definitively dropped it ([`DiskQueue::done`]). The
//! read position, persisted, is the oldest chunk not yet finished; fully consumed segments are
//! deleted. On start, [`DiskQueue::open`] replays everything from the read position on.
//!
//! Writes, fsyncs, position files and deletions happen on one committer thread, which groups
//! the pushes that arrive while it is busy under one fsync (group commit; a write per push): one
//! log for everything means one fsync per group, however many senders and workers there are.
//! Records just written enter the window straight from memory when the window has room and
//! holds everything before them; otherwise (a backlog, or after a restart) they are read back
//! from the files, on the blocking pool, as the window empties. The window holds at most
//! `window_bytes` of chunk data and places (a finished chunk behind an unfinished one keeps its
//! place until the window's front passes it), so a long outage or a stuck batch keeps memory
//! flat: the backlog stays on disk.
//!
//! # On-disk format (version 2)
//!
//! ```text
//! <dir>/lock                       held (flock) while a process has the queue open
//! <dir>/format                     "promlink-queue-format 2\n": newer versions are refused
//!                                  ([`format`])
//! <dir>/log/<seq:020>.log          segments, seq increasing; the highest is written
//! <dir>/log/read.pos               the read position (below)
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
//!             | metadata varint | raw_len varint | min_ts zigzag-varint
//!             | key_count varint | key u32 * key_count | data_len varint | data
//!             (varint = unsigned LEB128, as protobuf; zigzag as protobuf's sint64; the
//!             fields are those of `codec::Chunk`: `data` is snappy block elements without
//!             the length preamble, decompressing to `raw_len` bytes of encoded remote write
//!             1.0 `WriteRequest` fields; the keys are its series' keys, which the dispatcher
//!             needs to keep each series in order after a restart too)
//! read.pos := magic "PLQP" (4) | seg u64 (8) | off u64 (8) | skip u32 (4) | crc u32 (4)
//!             crc = CRC-32 over the first 24 bytes. Every chunk before chunk `skip` of the
//!             record at byte `off` of segment `seg` is finished (delivered or dropped).
//! ```
//!
//! One record holds the chunks of one request in order (usually one chunk; more when the
//! request exceeds the batch limits). `read.pos` is overwritten in place: its 28 bytes sit in
//! one disk sector, and a torn write fails its CRC, which replays from the oldest segment.
//! Batches finish in any order, so chunks after the read position may already be delivered:
//! after a crash they are sent again (duplicates, never loss).
//!
//! Version 1 (promlink before 0.1: one log per shard in `<dir>/shard-<n>/`, records of magic
//! "PLQ1" holding one entry per message) is migrated on open ([`legacy`]): the unconsumed
//! messages are rewritten into a new log, in order, then the old directories are removed.
//!
//! # Recovery
//!
//! On open the records from `read.pos` to the end are checked (magic, length, CRC, payload
//! structure). A damaged record in the middle loses only itself: the scan resyncs on the next
//! offset holding the magic and a record with a valid CRC, and the damage is reported with
//! segment and offset ([`RecoveryReport::corrupt_records`]) and logged again when the reader
//! skips it. Damage with no valid record after it in the last segment is a torn write: the
//! file is truncated there ([`RecoveryReport::truncated_tail`]). A missing or damaged
//! `read.pos` restarts at the oldest segment (duplicates, never loss).
//!
//! # Guarantees
//!
//! - [`FsyncPolicy::Always`]: `push` returns after the record is fsynced. Nothing whose push
//!   returned `Ok` is lost on process crash, kernel crash or power loss (barring damaged media,
//!   which loses only the damaged records).
//! - [`FsyncPolicy::Interval`]: `push` returns after `write()`. A process crash (`kill -9`)
//!   loses nothing (the page cache survives); a kernel crash or power loss may lose what was
//!   pushed in the last interval.
//! - The read position: written at the committer's next cycle after a batch finishes (it is
//!   woken), fsynced at most once a second under `Always` and at each interval under
//!   `Interval`. A crash before that replays finished batches again: duplicates, never loss.
//!   Segments are deleted once the read position (in memory) has passed them: their chunks
//!   are all finished, so a replay from an older persisted position cannot miss anything.
//! - A failed write, fsync or segment creation fails every push of its commit group with
//!   [`PushError::Io`]; nothing more of the group is written. The failed write itself is undone
//!   (cut back); records written before it stay in the log and are delivered: the senders'
//!   retries may duplicate them, nothing is lost.
//! - A segment whose fsync failed is never fsynced again (Linux reports a writeback error
//!   once, so a later fsync could succeed without the lost pages): the next record starts a new
//!   segment.
//! - A failed write whose undo fails too leaves the segment's end unknown: the queue enters its
//!   failed state ([`DiskQueue::failed`]): every push is refused until a restart, which
//!   replays the log and cuts the torn tail. A full disk is never that: it is undone like any
//!   failed write.
//! - The committer's file writes go through [`files::Storage`]; the tests put one there that
//!   fails on command.

mod commit;
mod config;
mod error;
mod files;
mod format;
mod legacy;
mod log;
mod reader;
mod recover;
pub mod relocate;
mod segment;

#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{oneshot, Notify};

use super::dispatch::{Cut, Taken};
use super::BatchLimits;
use crate::codec::Chunk;
use commit::{CommitQueue, Committer, PendingPush};
use log::{Clock, Log};
use segment::Pos;

pub use config::{DiskQueueConfig, FsyncPolicy, RECENT_COMMIT, SEGMENT_BYTES};
pub(crate) use error::Published;
pub use error::{DiskQueueError, PushError};

/// Takes the lock of the queue directory `dir` (`dir/lock`), held while the file is open; a
/// lock left by a killed process is released by the kernel with it.
///
/// # Errors
/// [`DiskQueueError::Config`] when another process holds it, [`DiskQueueError::Io`] when the
/// file cannot be opened or locked.
pub(crate) fn lock_dir(dir: &Path) -> Result<std::fs::File, DiskQueueError> {
    let lock_path = dir.join("lock");
    let io_err = |source| DiskQueueError::Io {
        path: lock_path.clone(),
        source,
    };
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err)?;
    match lock_file.try_lock() {
        Ok(()) => Ok(lock_file),
        Err(std::fs::TryLockError::WouldBlock) => Err(DiskQueueError::Config(format!(
            "queue directory {} is in use by another promlink process",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(io_err(e)),
    }
}

/// A batch taken from the queue; hand it back to [`DiskQueue::done`] when done with it.
pub struct Batch {
    /// The chunks, in log order.
    pub chunks: Vec<Chunk>,
    /// Push time (unix ms) of the batch's first chunk.
    pub first_ms: u64,
    taken: Taken,
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
    /// Unfinished chunks that will be sent again.
    pub replayed_chunks: u64,
    /// Their record bytes.
    pub replayed_bytes: u64,
    /// Damaged records (each lost) and damaged position files (each restarting the log at its
    /// oldest segment).
    pub corrupt_records: Vec<CorruptRecord>,
    /// Whether a torn write at the end of the log was cut off.
    pub truncated_tail: bool,
    /// Messages carried over from a version 1 queue directory.
    pub migrated_messages: u64,
}

/// Counters and gauges of the queue.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DiskQueueStats {
    /// Unfinished records.
    pub records: u64,
    /// Unfinished record bytes (what the budget counts).
    pub bytes: u64,
    /// Segment files.
    pub segments: u64,
    /// Segment bytes on disk (finished but not yet deleted bytes included).
    pub disk_bytes: u64,
    /// Damaged records skipped by the reader plus torn tails cut on open.
    pub corrupt_records: u64,
    /// Group commits that wrote at least one push.
    pub commits: u64,
    /// fsync calls (segments, position files, directories).
    pub fsyncs: u64,
    /// Seconds spent in group-commit fsyncs of segments and directories.
    pub fsync_seconds: f64,
    /// Chunks replayed on open.
    pub replayed: u64,
}

#[derive(Default)]
struct Counters {
    corrupt: AtomicU64,
    commits: AtomicU64,
    fsyncs: AtomicU64,
    /// Time spent in group-commit fsyncs, nanoseconds.
    fsync_nanos: AtomicU64,
    replayed: AtomicU64,
}

struct Inner {
    /// The log directory (`<dir>/log`).
    dir: PathBuf,
    max_bytes: u64,
    window_max: usize,
    used: AtomicU64,
    closed: AtomicBool,
    clock: Clock,
    counters: Counters,
    commit: Mutex<CommitQueue>,
    wake: Condvar,
    log: Mutex<Log>,
    notify: Notify,
    reader: Mutex<reader::Reader>,
    /// Why the queue stopped writing for good (its failed state), if it did.
    failed: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    /// Enters the failed state: every later push is refused with `why` until a restart.
    fn fail(&self, why: String) {
        tracing::error!(dir = %self.dir.display(), "{why}");
        lock(&self.failed).get_or_insert(why);
    }

    fn failed(&self) -> Option<String> {
        lock(&self.failed).clone()
    }

    /// Hands the committer work: `f` adds it and says whether the committer must be woken.
    fn wake_committer(&self, f: impl FnOnce(&mut CommitQueue) -> bool) {
        if f(&mut lock(&self.commit)) {
            self.wake.notify_one();
        }
    }
}

/// Durable, bounded queue. `Send + Sync`; share it behind an `Arc`.
pub struct DiskQueue {
    inner: Arc<Inner>,
    committer: Option<JoinHandle<()>>,
    /// The last push that failed to write, while no push succeeded since: when and why.
    write_failure: Mutex<Option<(std::time::Instant, String)>>,
    /// An exclusive lock on `<dir>/lock`, held while the queue is open: two processes writing
    /// one queue directory would corrupt it.
    _lock: std::fs::File,
}

impl DiskQueue {
    /// Opens (or creates) the queue in `cfg.dir` and replays it: everything committed and not
    /// finished becomes readable again, in order. Blocking: call it before the runtime serves
    /// traffic or through `spawn_blocking`.
    ///
    /// # Errors
    /// [`DiskQueueError::Config`] for unusable settings, [`DiskQueueError::Io`] when the
    /// directory cannot be used. Damaged files are not errors: they are reported.
    pub fn open(cfg: DiskQueueConfig) -> Result<(Self, RecoveryReport), DiskQueueError> {
        Self::open_on(cfg, Arc::new(files::Disk))
    }

    /// [`DiskQueue::open`], writing through `storage`.
    fn open_on(
        cfg: DiskQueueConfig,
        storage: Arc<dyn files::Storage>,
    ) -> Result<(Self, RecoveryReport), DiskQueueError> {
        if cfg.max_bytes == 0 || cfg.segment_bytes < 1024 || cfg.window_bytes == 0 {
            return Err(DiskQueueError::Config(format!(
                "max_bytes and window_bytes must be positive and segment_bytes at least 1024, got {}, {} and {}",
                cfg.max_bytes, cfg.window_bytes, cfg.segment_bytes
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
        let lock_file = lock_dir(&cfg.dir)?;
        let mut report = RecoveryReport::default();
        let log_dir = cfg.dir.join("log");
        format::check_and_mark(&cfg.dir, &log_dir).map_err(|source| DiskQueueError::Format {
            path: cfg.dir.clone(),
            source,
        })?;
        legacy::migrate(&cfg.dir, &log_dir, &mut report).map_err(io_err(&cfg.dir))?;
        std::fs::create_dir_all(&log_dir).map_err(io_err(&log_dir))?;
        let (log, writer) =
            recover::recover(storage.clone(), &log_dir, &mut report).map_err(io_err(&log_dir))?;
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
        let inner = Arc::new(Inner {
            dir: log_dir.clone(),
            max_bytes: cfg.max_bytes,
            window_max: cfg.window_bytes,
            used: AtomicU64::new(log.bytes),
            closed: AtomicBool::new(false),
            clock: Clock::new(),
            counters,
            commit: Mutex::new(CommitQueue::default()),
            wake: Condvar::new(),
            log: Mutex::new(log),
            notify: Notify::new(),
            reader: Mutex::new(reader::Reader::default()),
            failed: Mutex::new(None),
        });
        let pos_file = segment::PosFile::open(&*storage, &log_dir).map_err(io_err(&log_dir))?;
        let committer = Committer::new(
            inner.clone(),
            writer,
            pos_file,
            cfg.fsync,
            cfg.commit_delay,
            cfg.recent_commit,
            cfg.segment_bytes,
        );
        let supervised = inner.clone();
        let handle = std::thread::Builder::new()
            .name("promlink-queue-commit".into())
            .spawn(move || {
                let run = std::panic::AssertUnwindSafe(|| committer.run());
                if let Err(panic) = std::panic::catch_unwind(run) {
                    let why = crate::supervise::panic_message(&*panic);
                    // Refuse what waits for it, and whatever comes later.
                    let orphans = {
                        let mut q = lock(&supervised.commit);
                        supervised.fail(format!("the disk queue's commit thread stopped: {why}; restart promlink to replay the queue"));
                        std::mem::take(&mut *q)
                    };
                    drop(orphans);
                    crate::supervise::fatal("disk queue committer", &why);
                }
            })
            .map_err(io_err(&cfg.dir))?;
        if report.replayed_chunks > 0 || !report.corrupt_records.is_empty() {
            tracing::info!(
                dir = %cfg.dir.display(),
                chunks = report.replayed_chunks,
                bytes = report.replayed_bytes,
                corrupt = report.corrupt_records.len(),
                truncated_tail = report.truncated_tail,
                "disk queue replays unfinished data"
            );
        }
        Ok((
            Self {
                inner,
                committer: Some(handle),
                write_failure: Mutex::new(None),
                _lock: lock_file,
            },
            report,
        ))
    }

    /// The byte budget.
    pub fn max_bytes(&self) -> u64 {
        self.inner.max_bytes
    }

    /// Free bytes (for an unprivileged writer) and size of the filesystem holding the queue.
    ///
    /// # Errors
    /// When `statvfs` fails.
    pub fn disk_space(&self) -> io::Result<(u64, u64)> {
        let st = rustix::fs::statvfs(&self.inner.dir)?;
        Ok((
            st.f_bavail.saturating_mul(st.f_frsize),
            st.f_blocks.saturating_mul(st.f_frsize),
        ))
    }

    /// Why the queue takes no writes until promlink restarts: its committer thread has
    /// stopped, or a failed write could not be undone (its failed state). Temporary
    /// conditions such as a full disk never put it there.
    pub fn failed(&self) -> Option<String> {
        self.inner.failed().or_else(|| {
            self.committer
                .as_ref()
                .is_none_or(|h| h.is_finished())
                .then(|| "the disk queue's commit thread has stopped".into())
        })
    }

    /// Why the queue cannot take writes now: [`DiskQueue::failed`], or the last push failed to
    /// write within `recent` and none succeeded since (a full disk, an I/O error). The latter
    /// is `None` once `recent` has passed, so a sender's retry finds out whether the disk
    /// recovered.
    pub fn failure(&self, recent: Duration) -> Option<String> {
        self.failed().or_else(|| {
            lock(&self.write_failure)
                .as_ref()
                .filter(|(at, _)| at.elapsed() < recent)
                .map(|(_, why)| format!("the last write to the disk queue failed: {why}"))
        })
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
        if let Some(why) = self.inner.failed() {
            return Err(PushError::Io(io::Error::other(why)));
        }
        let at_ms = self.inner.clock.now_ms();
        let record = segment::encode_record(at_ms, &chunks);
        if record.len() as u64 - segment::HEADER_LEN > segment::MAX_PAYLOAD {
            return Err(PushError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} bytes exceed the record limit", record.len()),
            )));
        }
        let needed = record.len() as u64;
        self.reserve(needed)?;
        let (tx, rx) = oneshot::channel();
        {
            let mut q = lock(&self.inner.commit);
            // Checked under the committer's lock: a committer that stopped refuses its queue
            // while holding it, so nothing pushed later waits for it forever.
            if let Some(why) = self.inner.failed() {
                drop(q);
                sub(&self.inner.used, needed);
                return Err(PushError::Io(io::Error::other(why)));
            }
            q.pushes.push(PendingPush {
                record,
                chunks,
                at_ms,
                reply: tx,
            });
        }
        self.inner.wake.notify_one();
        // Cancel-safe: once handed over, the push is the committer's. A published record keeps
        // its bytes until it is finished (also when only the fsync failed); the committer gives
        // back the reservation of a push it undid. Either way, a caller that goes away mid-commit
        // leaks nothing.
        let result = match rx.await {
            Ok(r) => r,
            Err(_) => {
                // The committer stopped without taking the push.
                sub(&self.inner.used, needed);
                Err(io::Error::other("the disk queue committer stopped"))
            }
        };
        *lock(&self.write_failure) = result
            .as_ref()
            .err()
            .map(|e| (std::time::Instant::now(), e.to_string()));
        result.map_err(PushError::Io)
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

    /// Waits for the next batch: returns when one is full, when its oldest chunk has waited
    /// `limits.flush_interval`, or (after `close`) with whatever may go. Returns `None` when
    /// closed and nothing is left. Several workers may wait at once; each gets its own batch.
    /// Cancel-safe: a batch counts as taken only when a call returns it.
    pub async fn pop_batch(&self, limits: &BatchLimits) -> Option<Batch> {
        let inner = &self.inner;
        loop {
            let notified = inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let closed = self.is_closed();
            let now = inner.clock.now_ms();
            let read = {
                let mut log = lock(&inner.log);
                let read = log.unadmitted()
                    && !log.reading
                    && lock(&inner.failed).is_none()
                    && log.window_used() < inner.window_max
                    && now >= log.read_backoff_until;
                log.reading |= read;
                read
            };
            if read {
                // Fill the window before cutting, so batches come out full. Cancel-safe: the
                // read finishes (and clears `reading`) even if this call is dropped.
                let reading = inner.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || reader::fill(&reading)).await {
                    // Its state is the queue's: not restarted in place.
                    let why = e
                        .try_into_panic()
                        .map(|p| crate::supervise::panic_message(&*p))
                        .unwrap_or_else(|e| e.to_string());
                    inner.fail(format!("the disk queue's reader stopped: {why}; restart promlink to replay the queue"));
                    lock(&inner.log).reading = false;
                    crate::supervise::fatal("disk queue reader", &why);
                }
                continue;
            }
            let (cut, more_on_disk) = {
                let mut log = lock(&inner.log);
                let cut = log.dispatcher.cut(limits, now, closed);
                if matches!(cut, Cut::Take(_)) && log.dispatcher.waiting() > 0 {
                    // More may go: let another worker look.
                    inner.notify.notify_one();
                }
                (cut, log.unadmitted())
            };
            match cut {
                Cut::Take(mut taken) => {
                    return Some(Batch {
                        chunks: std::mem::take(&mut taken.chunks),
                        first_ms: taken.first_ms,
                        taken,
                    })
                }
                Cut::Wait(due) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(inner.clock.instant(due)) => {}
                    }
                }
                Cut::Empty if closed && !more_on_disk => return None,
                Cut::Empty | Cut::Blocked if more_on_disk => {
                    // Another worker reads, or reading backs off after a failure: look again
                    // when woken, or soon.
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
                Cut::Empty | Cut::Blocked => notified.await,
            }
        }
    }

    /// Marks `batch` as finished: the upstream accepted or definitively dropped it. Its series
    /// may go again; once no earlier chunk is unfinished, the read position moves past it (the
    /// committer persists it at its next cycle and deletes segments left behind) and its
    /// records' bytes leave the budget.
    pub fn done(&self, batch: Batch) {
        self.finished(|log, freed| log.dispatcher.done_with(batch.taken, |t| *freed += t.data));
    }

    /// Chunks `indices` of `batch` are finished while the rest is still being sent: their
    /// series may go again and their memory leaves the window now; the read position moves
    /// once no earlier chunk is unfinished, as for [`DiskQueue::done`].
    pub fn done_part(&self, batch: &Batch, indices: &[usize]) {
        self.finished(|log, freed| {
            log.dispatcher
                .done_part(&batch.taken, indices, |t| *freed += t.data)
        });
    }

    /// `batch` comes back unfinished (its worker panicked): its chunks not finished yet wait
    /// again, in their places. `chunks` are the chunks it was handed out with.
    pub fn give_back(&self, batch: Batch, chunks: Vec<Chunk>) {
        lock(&self.inner.log)
            .dispatcher
            .give_back(batch.taken, chunks);
        self.inner.notify.notify_waiters();
    }

    /// Runs `finish` (which marks chunks finished, adding each one's data bytes to its second
    /// argument, and returns the tags leaving the window's front), then frees the window per
    /// chunk and moves the read position and the budget past the records left behind.
    fn finished(&self, finish: impl FnOnce(&mut log::Log, &mut usize) -> Vec<log::Tag>) {
        let released = {
            let mut log = lock(&self.inner.log);
            let mut freed = 0;
            let tags = finish(&mut log, &mut freed);
            // Data leaves at once; places leave with the window's front.
            log.window_bytes = log
                .window_bytes
                .saturating_sub(freed + tags.len() * log::SLOT_BYTES);
            let mut released = 0;
            for tag in tags {
                if tag.last {
                    log.ack = Pos::new(tag.seg, tag.off + tag.rec_len, 0);
                    log.bytes = log.bytes.saturating_sub(tag.rec_len);
                    log.records = log.records.saturating_sub(1);
                    released += tag.rec_len;
                } else {
                    log.ack = Pos::new(tag.seg, tag.off, tag.index + 1);
                }
            }
            released
        };
        sub(&self.inner.used, released);
        self.inner.notify.notify_one();
        self.inner.wake_committer(CommitQueue::ack);
    }

    /// Stops waiting: `pop_batch` then returns what may go without waiting for the flush
    /// interval, and `None` once nothing is left. Pushes and acks keep working; the files are
    /// synced when the queue is dropped.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.notify.notify_waiters();
    }

    /// Whether [`DiskQueue::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Makes everything pushed and finished so far durable (fsync of data, position and
    /// directory, deletion of consumed segments), whatever the policy. For shutdown.
    ///
    /// # Errors
    /// When an fsync failed.
    pub async fn sync(&self) -> Result<(), io::Error> {
        let (tx, rx) = oneshot::channel();
        {
            let mut q = lock(&self.inner.commit);
            if let Some(why) = self.inner.failed() {
                return Err(io::Error::other(why));
            }
            q.syncs.push(tx);
        }
        self.inner.wake.notify_one();
        rx.await
            .unwrap_or_else(|_| Err(io::Error::other("the disk queue committer stopped")))
    }

    /// Unfinished bytes, including pushes in progress.
    pub fn used_bytes(&self) -> u64 {
        self.inner.used.load(Ordering::Relaxed)
    }

    /// Age of the oldest unfinished chunk (never underestimated).
    pub fn oldest_age(&self) -> Option<Duration> {
        let log = lock(&self.inner.log);
        let on_disk = log.unadmitted().then_some(log.disk_front_ms).flatten();
        let oldest = [log.dispatcher.oldest_ms(), on_disk]
            .into_iter()
            .flatten()
            .min()?;
        Some(Duration::from_millis(
            self.inner.clock.now_ms().saturating_sub(oldest),
        ))
    }

    /// Counters and gauges.
    pub fn stats(&self) -> DiskQueueStats {
        let c = &self.inner.counters;
        let log = lock(&self.inner.log);
        DiskQueueStats {
            records: log.records,
            bytes: self.used_bytes(),
            segments: log.segments.len() as u64,
            disk_bytes: log.segments.iter().map(|(_, l)| l).sum(),
            corrupt_records: c.corrupt.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            fsync_seconds: c.fsync_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            replayed: c.replayed.load(Ordering::Relaxed),
        }
    }

    /// Whether chunks wait that a pop would return at once (no damaged records assumed).
    #[cfg(test)]
    fn has_unread(&self) -> bool {
        let log = lock(&self.inner.log);
        log.dispatcher.waiting() > 0 || log.unadmitted()
    }

    /// Stops the committer at once, without syncing or persisting positions: what a crash
    /// leaves behind (written data stays in the page cache, as after `kill -9`).
    #[cfg(test)]
    fn crash(mut self) {
        self.inner.wake_committer(|q| {
            q.crash = true;
            true
        });
        if let Some(h) = self.committer.take() {
            let _ = h.join();
        }
    }
}

impl Drop for DiskQueue {
    /// Syncs data and position and stops the committer (blocks for that final commit).
    fn drop(&mut self) {
        if let Some(h) = self.committer.take() {
            self.inner.wake_committer(|q| {
                q.shutdown = true;
                true
            });
            let _ = h.join();
        }
    }
}

pub(super) fn sub(a: &AtomicU64, v: u64) {
    let _ = a.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |x| {
        Some(x.saturating_sub(v))
    });
}
