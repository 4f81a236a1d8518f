//! The committer thread: the only writer of segments and the position file.
//!
//! It sleeps until there is work, takes every push queued meanwhile, appends their records to
//! the log, fsyncs it once for the whole group (under [`FsyncPolicy::Always`]), then publishes
//! the new records (straight into the window when it is caught up and has room) and answers
//! the pushes. In the same cycle it writes the read position that finished batches moved and
//! deletes segments it has left behind; a finished batch wakes it for that only when it would
//! otherwise sleep longer than [`ACK_LATENCY`]. Doing this on one thread keeps file I/O off the
//! async reactor and makes group commit fall out of the queueing: the longer an fsync takes,
//! the more pushes share the next.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::files::{Storage, WriteFile};
use super::segment::{self, Pos};
use super::{lock, FsyncPolicy, Inner};
use crate::codec::Chunk;

/// Under [`FsyncPolicy::Always`], how often a moved read position is fsynced: losing the last
/// second of positions to a power cut only sends finished batches again.
const POSITION_SYNC: Duration = Duration::from_secs(1);

/// How long a moved read position may wait for the committer: a finished batch wakes it only
/// when it would otherwise sleep longer than this. Until then the position is written by the
/// next group commit or tick (at the paced relay load, one wake in three was an ack's).
/// Losing it to a crash only sends finished batches again.
pub(super) const ACK_LATENCY: Duration = POSITION_SYNC;

/// A push waiting for the committer.
pub(super) struct PendingPush {
    /// The encoded record.
    pub(super) record: Vec<u8>,
    /// Its chunks, for the window.
    pub(super) chunks: Vec<Chunk>,
    pub(super) at_ms: u64,
    pub(super) reply: oneshot::Sender<io::Result<()>>,
}

/// Work handed to the committer.
#[derive(Default)]
pub(super) struct CommitQueue {
    pub(super) pushes: Vec<PendingPush>,
    /// The read position moved.
    pub(super) acks: bool,
    pub(super) syncs: Vec<oneshot::Sender<io::Result<()>>>,
    /// Sync everything, then stop.
    pub(super) shutdown: bool,
    /// Stop at once (tests: simulates a crash).
    pub(super) crash: bool,
    /// When the committer wakes by itself: `Some(now)` while it works, `None` while it
    /// sleeps until notified.
    pub(super) awake_by: Option<Instant>,
}

impl CommitQueue {
    /// Notes that the read position moved; returns whether the committer must be woken for
    /// it (it sleeps longer than [`ACK_LATENCY`]).
    pub(super) fn ack(&mut self) -> bool {
        self.acks = true;
        self.awake_by
            .is_none_or(|t| t.saturating_duration_since(Instant::now()) > ACK_LATENCY)
    }

    fn has_work(&self) -> bool {
        !self.pushes.is_empty() || self.acks || !self.syncs.is_empty() || self.shutdown
    }
}

/// The segment being appended to.
pub(super) struct Writer {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    seq: u64,
    file: Box<dyn WriteFile>,
    off: u64,
    /// Written since the last fsync.
    unsynced: bool,
    /// A segment was created since the directory was last fsynced.
    dir_unsynced: bool,
    /// An fsync of this segment failed. Linux reports a writeback error once: a later fsync
    /// of the same file may succeed without the lost pages, so this file is never fsynced
    /// again and the next record starts a new segment.
    poisoned: bool,
}

impl Writer {
    pub(super) fn open(
        storage: Arc<dyn Storage>,
        dir: &Path,
        seq: u64,
        off: u64,
    ) -> io::Result<Self> {
        let file = storage.open_append(&segment::segment_path(dir, seq))?;
        Ok(Self {
            storage,
            dir: dir.to_path_buf(),
            seq,
            file,
            off,
            unsynced: false,
            dir_unsynced: false,
            poisoned: false,
        })
    }

    /// fsyncs the segment. A failure poisons it, and what it held unsynced is given up on:
    /// the pushes of the failing group are refused; under `fsync: interval` the error is
    /// logged (those pushes were answered already, as that policy allows).
    fn sync_file(&mut self) -> io::Result<()> {
        self.unsynced = false;
        match self.file.sync_data() {
            Ok(()) => Ok(()),
            Err(e) => {
                self.poisoned = true;
                tracing::error!(segment = self.seq, error = %e, "fsync of a queue segment failed: the next record starts a new segment");
                Err(e)
            }
        }
    }
}

/// Where one push's record went.
struct Written {
    seg: u64,
    off: u64,
    len: u64,
}

pub(super) struct Committer {
    inner: Arc<Inner>,
    writer: Writer,
    pos_file: segment::PosFile,
    policy: FsyncPolicy,
    /// See [`super::DiskQueueConfig::commit_delay`].
    commit_delay: Duration,
    /// See [`super::DiskQueueConfig::recent_commit`].
    recent_commit: Duration,
    /// When the last group commit with pushes ended.
    last_commit: Option<Instant>,
    segment_bytes: u64,
    /// Last fsync of data (under `Interval`) or of the position (under `Always`).
    last_sync: Instant,
}

impl Committer {
    pub(super) fn new(
        inner: Arc<Inner>,
        writer: Writer,
        pos_file: segment::PosFile,
        policy: FsyncPolicy,
        commit_delay: Duration,
        recent_commit: Duration,
        segment_bytes: u64,
    ) -> Self {
        Self {
            inner,
            writer,
            pos_file,
            policy,
            commit_delay,
            recent_commit,
            last_commit: None,
            segment_bytes,
            last_sync: Instant::now(),
        }
    }

    fn fsynced(&self, n: u64) {
        self.inner.counters.fsyncs.fetch_add(n, Ordering::Relaxed);
    }

    /// Whether something written is not durable yet, and how often that is fixed.
    fn unsynced(&self) -> Option<Duration> {
        let log = lock(&self.inner.log);
        let positions = log.persisted != log.durable || log.ack != log.durable;
        match self.policy {
            FsyncPolicy::Interval(every)
                if positions || self.writer.unsynced || self.writer.dir_unsynced =>
            {
                Some(every)
            }
            FsyncPolicy::Always if positions => Some(POSITION_SYNC),
            _ => None,
        }
    }

    pub(super) fn run(mut self) {
        loop {
            let (work, tick) = {
                let mut q = lock(&self.inner.commit);
                let tick = loop {
                    if q.crash {
                        return;
                    }
                    let due = self.unsynced().map(|every| self.last_sync + every);
                    let now = Instant::now();
                    if due.is_some_and(|d| now >= d) {
                        break true;
                    }
                    if q.has_work() {
                        break false;
                    }
                    q.awake_by = due;
                    q = match due {
                        Some(d) => {
                            self.inner
                                .wake
                                .wait_timeout(q, d - now)
                                .unwrap_or_else(|p| p.into_inner())
                                .0
                        }
                        None => self.inner.wake.wait(q).unwrap_or_else(|p| p.into_inner()),
                    };
                    q.awake_by = Some(Instant::now());
                };
                if !tick && self.wait_for_more(&q) {
                    drop(q);
                    std::thread::sleep(self.commit_delay);
                    q = lock(&self.inner.commit);
                    if q.crash {
                        return;
                    }
                }
                let work = std::mem::take(&mut *q);
                q.awake_by = work.awake_by;
                (work, tick)
            };
            let pushed = !work.pushes.is_empty();
            let everything = tick || !work.syncs.is_empty() || work.shutdown;
            let durable_data = everything || self.policy == FsyncPolicy::Always;
            let data_result = self.cycle(work.pushes, durable_data);
            let sync_result = data_result.and(self.sync_position(everything));
            for tx in work.syncs {
                let _ = tx.send(match &sync_result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                });
            }
            if everything {
                self.last_sync = Instant::now();
            }
            if pushed {
                self.last_commit = Some(Instant::now());
            }
            if work.shutdown {
                return;
            }
        }
    }

    /// Whether to wait `commit_delay` before taking `q`'s pushes: only pushes wait (not a
    /// `sync()`, shutdown or crash), only under `fsync: always`, and only right after another
    /// group commit, when more pushes are likely to arrive meanwhile.
    fn wait_for_more(&self, q: &CommitQueue) -> bool {
        !self.commit_delay.is_zero()
            && self.policy == FsyncPolicy::Always
            && !q.pushes.is_empty()
            && q.syncs.is_empty()
            && !q.shutdown
            && !q.crash
            && self
                .last_commit
                .is_some_and(|t| t.elapsed() < self.recent_commit)
    }

    /// Appends the pushes, fsyncs when `durable` (also with no pushes: an interval tick, a
    /// `sync()` or shutdown must make earlier writes durable), publishes and answers them.
    /// Returns the fsync's result.
    ///
    /// The group stands or falls together: after its first failed write, fsync or segment
    /// creation nothing more of it is written, and none of its pushes is answered `Ok`. Those
    /// written before the failure stay in the log ([`super::Published`]: they are delivered,
    /// the senders' retries duplicate them); the others are undone and their reservations
    /// given back here, not by the pushers, which may have gone (a sender that hung up
    /// mid-commit) and would never release them.
    fn cycle(&mut self, pushes: Vec<PendingPush>, durable: bool) -> io::Result<()> {
        if pushes.is_empty() {
            if !durable {
                return Ok(());
            }
            return self.sync_data().inspect_err(|e| {
                tracing::error!(error = %e, "fsync of the disk queue failed");
            });
        }
        crate::supervise::hit(crate::supervise::QUEUE_COMMITTER);
        let mut done = Vec::with_capacity(pushes.len());
        let mut sealed = Vec::new();
        let mut failure: Option<io::Error> = None;
        for push in pushes {
            let result = match (&failure, self.inner.failed()) {
                (_, Some(why)) => Err(io::Error::other(why)),
                (Some(e), None) => Err(io::Error::new(
                    e.kind(),
                    format!("another write of its commit group failed: {e}"),
                )),
                (None, None) => self.append(&push.record, &mut sealed),
            };
            if let (Err(e), None) = (&result, &failure) {
                failure = Some(io::Error::new(e.kind(), e.to_string()));
            }
            done.push((push, result));
        }
        if durable {
            if let Err(e) = self.sync_data() {
                tracing::error!(error = %e, "fsync of the disk queue failed");
                failure.get_or_insert(e);
            }
        }
        self.publish(&sealed, &mut done);
        self.inner.counters.commits.fetch_add(1, Ordering::Relaxed);
        for (push, written) in done {
            let r = match (written, &failure) {
                (Err(e), _) => {
                    super::sub(&self.inner.used, push.record.len() as u64);
                    Err(e)
                }
                // The data may or may not be on disk: the senders must retry (duplicates at
                // worst, since what was written is published and replayed).
                (Ok(_), Some(e)) => Err(io::Error::new(
                    e.kind(),
                    super::Published(format!("its commit group failed: {e}")),
                )),
                (Ok(_), None) => Ok(()),
            };
            let _ = push.reply.send(r);
        }
        self.inner.notify.notify_one();
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Appends one record, starting a new segment first when it would not fit or the current
    /// one is poisoned; on failure the segment is cut back, so a push is all or nothing. A cut
    /// that fails too leaves the segment's end unknown: the queue enters its failed state
    /// rather than ever write at a wrong offset.
    fn append(&mut self, rec: &[u8], sealed: &mut Vec<(u64, u64)>) -> io::Result<Written> {
        let len = rec.len() as u64;
        let w = &mut self.writer;
        if w.poisoned || (w.off > 0 && w.off + len > self.segment_bytes) {
            if w.unsynced {
                self.inner.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
                w.sync_file()?;
            }
            let seq = w.seq + 1;
            let file = w.storage.create_new(&segment::segment_path(&w.dir, seq))?;
            sealed.push((w.seq, w.off));
            w.seq = seq;
            w.file = file;
            w.off = 0;
            w.poisoned = false;
            w.dir_unsynced = true;
        }
        let start = w.off;
        w.unsynced = true;
        if let Err(e) = w.file.append(rec) {
            if let Err(undo) = w.file.set_len(start) {
                self.inner.fail(format!(
                    "a failed write to queue segment {} at byte {start} ({e}) could not be undone ({undo}): the segment's end is unknown, so the queue writes nothing more; restart promlink to replay it from disk",
                    w.seq
                ));
            }
            return Err(e);
        }
        w.off += len;
        Ok(Written {
            seg: w.seq,
            off: start,
            len,
        })
    }

    /// fsyncs the segment and directory if written since the last fsync.
    fn sync_data(&mut self) -> io::Result<()> {
        let started = Instant::now();
        let mut n = 0;
        let mut result = Ok(());
        let w = &mut self.writer;
        if w.unsynced {
            result = w.sync_file();
            n += 1;
        }
        if w.dir_unsynced {
            match w.storage.sync_dir(&w.dir) {
                Ok(()) => w.dir_unsynced = false,
                Err(e) => result = Err(e),
            }
            n += 1;
        }
        self.fsynced(n);
        self.inner
            .counters
            .fsync_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        result
    }

    /// Makes a group's records visible: segment lengths, budget accounting, and the window
    /// (straight from memory while the window holds everything before them and has room).
    fn publish(&self, sealed: &[(u64, u64)], done: &mut [(PendingPush, io::Result<Written>)]) {
        let w = &self.writer;
        let mut log = lock(&self.inner.log);
        for &(seq, len) in sealed {
            match log.segments.iter_mut().find(|(s, _)| *s == seq) {
                Some(entry) => entry.1 = len,
                None => log.segments.push_back((seq, len)),
            }
        }
        match log.segments.iter_mut().find(|(s, _)| *s == w.seq) {
            Some(entry) => entry.1 = w.off,
            None => log.segments.push_back((w.seq, w.off)),
        }
        for (push, written) in done.iter_mut() {
            let Ok(at) = written else { continue };
            log.records += 1;
            log.bytes += at.len;
            let next = log.normalize(log.admitted);
            let caught_up = (next.seg, next.off) == (at.seg, at.off);
            if caught_up && log.window_used() < self.inner.window_max {
                let chunks = std::mem::take(&mut push.chunks);
                log.admit(at.seg, at.off, at.off + at.len, push.at_ms, chunks, 0);
            } else if log.disk_front_ms.is_none() || caught_up {
                log.disk_front_ms = Some(push.at_ms);
            }
        }
    }

    /// Writes a moved read position (fsynced when `durable`, or once a second under
    /// `Always`) and deletes the segments it has passed.
    fn sync_position(&mut self, durable: bool) -> io::Result<()> {
        let (ack, persisted, was_durable) = {
            let log = lock(&self.inner.log);
            (log.normalize(log.ack), log.persisted, log.durable)
        };
        let durable = durable
            || (self.policy == FsyncPolicy::Always && self.last_sync.elapsed() >= POSITION_SYNC);
        let needed = if durable {
            ack != was_durable
        } else {
            ack != persisted
        };
        if needed {
            match self.pos_file.write(ack, durable) {
                Ok(n) => {
                    self.fsynced(n);
                    let mut log = lock(&self.inner.log);
                    log.persisted = ack;
                    if durable {
                        log.durable = ack;
                        if self.policy == FsyncPolicy::Always {
                            self.last_sync = Instant::now();
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(dir = %self.inner.dir.display(), error = %e, "cannot persist the queue read position");
                    // Still delete what is wholly finished: on a full disk that is what frees
                    // the space the next write needs. A restart from the older position on disk
                    // starts at the first segment left: duplicates at worst, never loss.
                    self.delete_consumed(ack);
                    return Err(e);
                }
            }
        }
        self.delete_consumed(ack);
        Ok(())
    }

    /// Deletes the segments that lie wholly before the read position `ack`: every chunk in
    /// them is finished, so even a replay from an older persisted position misses nothing.
    fn delete_consumed(&self, ack: Pos) {
        let active = self.writer.seq;
        let doomed: Vec<u64> = {
            let mut log = lock(&self.inner.log);
            let doomed: Vec<u64> = log
                .segments
                .iter()
                .map(|&(seq, _)| seq)
                .filter(|&seq| seq != active && seq < ack.seg)
                .collect();
            log.segments.retain(|(seq, _)| !doomed.contains(seq));
            doomed
        };
        for seq in doomed {
            let path = segment::segment_path(&self.inner.dir, seq);
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(segment = %path.display(), error = %e, "cannot delete a consumed queue segment");
            }
        }
    }
}
