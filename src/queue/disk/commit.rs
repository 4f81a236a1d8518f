//! The committer thread: the only writer of segments and position files.
//!
//! It sleeps until there is work, takes every push queued meanwhile, appends their records,
//! fsyncs each touched segment once for the whole group (under [`FsyncPolicy::Always`]), then
//! publishes the new data to the readers and answers the pushes. In the same cycle it writes
//! the read positions that acknowledgements moved and deletes segments a durable position has
//! left behind. Doing this on one thread keeps file I/O off the async reactor and makes group
//! commit fall out of the queueing: the longer an fsync takes, the more pushes share the next.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::segment;
use super::{lock, FsyncPolicy, Inner};

/// A push waiting for the committer.
pub(super) struct PendingPush {
    /// (shard, encoded record), at most one per shard.
    pub(super) records: Vec<(usize, Vec<u8>)>,
    pub(super) at_ms: u64,
    pub(super) reply: oneshot::Sender<io::Result<()>>,
}

/// Work handed to the committer.
#[derive(Default)]
pub(super) struct CommitQueue {
    pub(super) pushes: Vec<PendingPush>,
    /// Some read position moved.
    pub(super) acks: bool,
    pub(super) syncs: Vec<oneshot::Sender<io::Result<()>>>,
    /// Sync everything, then stop.
    pub(super) shutdown: bool,
    /// Stop at once (tests: simulates a crash).
    pub(super) crash: bool,
}

impl CommitQueue {
    fn has_work(&self) -> bool {
        !self.pushes.is_empty() || self.acks || !self.syncs.is_empty() || self.shutdown
    }
}

/// The segment a shard appends to.
pub(super) struct Writer {
    dir: PathBuf,
    seq: u64,
    file: File,
    off: u64,
    /// Written since the last fsync.
    unsynced: bool,
    /// A segment was created since the directory was last fsynced.
    dir_unsynced: bool,
}

impl Writer {
    pub(super) fn open(dir: &Path, seq: u64, off: u64) -> io::Result<Self> {
        let file = OpenOptions::new()
            .append(true)
            .open(segment::segment_path(dir, seq))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            seq,
            file,
            off,
            unsynced: false,
            dir_unsynced: false,
        })
    }
}

/// What one group wrote to one shard, published to its state after the group's fsync.
#[derive(Default)]
struct Published {
    /// Segments sealed by this group: (seq, final length).
    sealed: Vec<(u64, u64)>,
    bytes: u64,
    records: u64,
    first_ms: Option<u64>,
}

pub(super) struct Committer {
    inner: Arc<Inner>,
    writers: Vec<Writer>,
    policy: FsyncPolicy,
    segment_bytes: u64,
    last_sync: Instant,
}

impl Committer {
    pub(super) fn new(
        inner: Arc<Inner>,
        writers: Vec<Writer>,
        policy: FsyncPolicy,
        segment_bytes: u64,
    ) -> Self {
        Self {
            inner,
            writers,
            policy,
            segment_bytes,
            last_sync: Instant::now(),
        }
    }

    fn fsynced(&self, n: u64) {
        self.inner.counters.fsyncs.fetch_add(n, Ordering::Relaxed);
    }

    /// Whether something written is not fsynced yet (only possible under `Interval`).
    fn unsynced(&self) -> bool {
        self.writers.iter().any(|w| w.unsynced || w.dir_unsynced)
            || self.inner.shards.iter().any(|s| {
                let st = lock(&s.state);
                st.persisted != st.durable || st.ack != st.durable
            })
    }

    pub(super) fn run(mut self) {
        loop {
            let (work, tick) = {
                let mut q = lock(&self.inner.commit);
                let tick = loop {
                    if q.crash {
                        return;
                    }
                    let due = match self.policy {
                        FsyncPolicy::Interval(every) if self.unsynced() => {
                            Some(self.last_sync + every)
                        }
                        _ => None,
                    };
                    let now = Instant::now();
                    if due.is_some_and(|d| now >= d) {
                        break true;
                    }
                    if q.has_work() {
                        break false;
                    }
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
                };
                (std::mem::take(&mut *q), tick)
            };
            let durable = tick
                || self.policy == FsyncPolicy::Always
                || !work.syncs.is_empty()
                || work.shutdown;
            self.cycle(work.pushes, durable);
            let sync_result = self.sync_positions(durable);
            for tx in work.syncs {
                let _ = tx.send(match &sync_result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                });
            }
            if durable {
                self.last_sync = Instant::now();
            }
            if work.shutdown {
                return;
            }
        }
    }

    /// Appends the pushes, fsyncs when `durable`, publishes and answers them.
    fn cycle(&mut self, pushes: Vec<PendingPush>, durable: bool) {
        let mut published: Vec<Published> = (0..self.writers.len())
            .map(|_| Published::default())
            .collect();
        let mut answers = Vec::with_capacity(pushes.len());
        let wrote = !pushes.is_empty();
        for push in pushes {
            let result = self.append(&push, &mut published);
            answers.push((push.reply, result));
        }
        if durable {
            if let Err(e) = self.sync_data() {
                tracing::error!(error = %e, "fsync of the disk queue failed");
                // The data may or may not be on disk: the senders must retry (duplicates at
                // worst, since what was written is still published and replayed).
                for (_, r) in &mut answers {
                    if r.is_ok() {
                        *r = Err(io::Error::new(
                            e.kind(),
                            super::Published(format!("fsync failed: {e}")),
                        ));
                    }
                }
            }
        }
        for (i, p) in published.into_iter().enumerate() {
            self.publish(i, p);
        }
        if wrote {
            self.inner.counters.commits.fetch_add(1, Ordering::Relaxed);
        }
        for (tx, r) in answers {
            let _ = tx.send(r);
        }
    }

    /// Writes one push's records; on failure removes those already written for it, so a push
    /// is all or nothing.
    fn append(&mut self, push: &PendingPush, published: &mut [Published]) -> io::Result<()> {
        let mut undo: Vec<(usize, u64)> = Vec::new();
        for (shard, rec) in &push.records {
            let r = self.append_one(*shard, rec, &mut published[*shard]);
            match r {
                Ok(start) => undo.push((*shard, start)),
                Err((start, e)) => {
                    undo.push((*shard, start));
                    for (s, start) in undo {
                        let w = &mut self.writers[s];
                        if let Err(e) = w.file.set_len(start) {
                            tracing::error!(error = %e, segment = w.seq, "cannot undo a failed queue write");
                        }
                        w.off = start;
                    }
                    return Err(e);
                }
            }
        }
        for (shard, rec) in &push.records {
            let p = &mut published[*shard];
            p.bytes += rec.len() as u64;
            p.records += 1;
            p.first_ms.get_or_insert(push.at_ms);
        }
        Ok(())
    }

    /// Appends one record, starting a new segment first when it would not fit. Returns where
    /// it starts in the current segment.
    fn append_one(
        &mut self,
        shard: usize,
        rec: &[u8],
        published: &mut Published,
    ) -> Result<u64, (u64, io::Error)> {
        let len = rec.len() as u64;
        let w = &mut self.writers[shard];
        if w.off > 0 && w.off + len > self.segment_bytes {
            let start = w.off;
            if w.unsynced {
                w.file.sync_data().map_err(|e| (start, e))?;
                w.unsynced = false;
                self.inner.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
            }
            let seq = w.seq + 1;
            let file = OpenOptions::new()
                .append(true)
                .create_new(true)
                .open(segment::segment_path(&w.dir, seq))
                .map_err(|e| (start, e))?;
            published.sealed.push((w.seq, w.off));
            w.seq = seq;
            w.file = file;
            w.off = 0;
            w.dir_unsynced = true;
        }
        let start = w.off;
        w.unsynced = true;
        w.file.write_all(rec).map_err(|e| (start, e))?;
        w.off += len;
        Ok(start)
    }

    /// fsyncs every segment and directory written since the last fsync.
    fn sync_data(&mut self) -> io::Result<()> {
        let started = std::time::Instant::now();
        let mut n = 0;
        let mut result = Ok(());
        for w in &mut self.writers {
            if w.unsynced {
                match w.file.sync_data() {
                    Ok(()) => w.unsynced = false,
                    Err(e) => result = Err(e),
                }
                n += 1;
            }
            if w.dir_unsynced {
                match segment::sync_dir(&w.dir) {
                    Ok(()) => w.dir_unsynced = false,
                    Err(e) => result = Err(e),
                }
                n += 1;
            }
        }
        self.fsynced(n);
        self.inner
            .counters
            .fsync_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        result
    }

    /// Makes a group's records visible to the shard's reader.
    fn publish(&self, shard: usize, p: Published) {
        let w = &self.writers[shard];
        let s = &self.inner.shards[shard];
        let grew = {
            let mut st = lock(&s.state);
            for (seq, len) in p.sealed {
                match st.segments.iter_mut().find(|(s, _)| *s == seq) {
                    Some(entry) => entry.1 = len,
                    None => st.segments.push_back((seq, len)),
                }
            }
            let grew = match st.segments.iter_mut().find(|(s, _)| *s == w.seq) {
                Some(entry) => {
                    let grew = entry.1 != w.off;
                    entry.1 = w.off;
                    grew
                }
                None => {
                    st.segments.push_back((w.seq, w.off));
                    true
                }
            };
            if p.records > 0 {
                if st.bytes == 0 {
                    st.front_ms = p.first_ms;
                }
                st.bytes += p.bytes;
            }
            grew
        };
        self.inner
            .counters
            .records
            .fetch_add(p.records, Ordering::Relaxed);
        if grew {
            s.notify.notify_one();
        }
    }

    /// Writes moved read positions (fsynced when `durable`) and deletes the segments a durable
    /// position has passed.
    fn sync_positions(&mut self, durable: bool) -> io::Result<()> {
        let mut result = Ok(());
        for (i, s) in self.inner.shards.iter().enumerate() {
            let (ack, persisted, was_durable) = {
                let st = lock(&s.state);
                (st.ack, st.persisted, st.durable)
            };
            let needed = if durable {
                ack != was_durable
            } else {
                ack != persisted
            };
            if needed {
                match segment::write_pos(&s.dir, ack, durable) {
                    Ok(n) => {
                        self.fsynced(n);
                        let mut st = lock(&s.state);
                        st.persisted = ack;
                        if durable {
                            st.durable = ack;
                        }
                    }
                    Err(e) => {
                        tracing::error!(dir = %s.dir.display(), error = %e, "cannot persist the queue read position");
                        result = Err(e);
                        continue;
                    }
                }
            }
            if durable {
                self.delete_consumed(i);
            }
        }
        result
    }

    /// Deletes the shard's segments that lie wholly before its durable read position.
    fn delete_consumed(&self, shard: usize) {
        let s = &self.inner.shards[shard];
        let active = self.writers[shard].seq;
        let doomed: Vec<u64> = {
            let mut st = lock(&s.state);
            let d = st.durable;
            let doomed: Vec<u64> = st
                .segments
                .iter()
                .filter(|&&(seq, len)| {
                    seq != active && (seq < d.seg || (seq == d.seg && d.off >= len && d.skip == 0))
                })
                .map(|&(seq, _)| seq)
                .collect();
            st.segments.retain(|(seq, _)| !doomed.contains(seq));
            doomed
        };
        for seq in doomed {
            let path = segment::segment_path(&s.dir, seq);
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(segment = %path.display(), error = %e, "cannot delete a consumed queue segment");
            }
        }
    }
}
