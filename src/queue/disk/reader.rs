//! A shard's reader: streams records from its segments into a read-ahead of about one batch,
//! and cuts batches from it with the memory queue's rules. Runs on the blocking pool.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::atomic::Ordering;

use super::segment::{self, Pos, Step};
use super::{lock, Batch, Inner};
use crate::codec::Chunk;
use crate::queue::BatchLimits;

/// A chunk read ahead, with what acknowledging it means.
struct Ahead {
    chunk: Chunk,
    at_ms: u64,
    /// Position after this chunk.
    next: Pos,
    /// Record bytes freed when this chunk is acknowledged (non-zero for a record's last chunk).
    release: u64,
}

/// A batch handed out, and the push time of its first entry.
pub(super) struct Popped {
    pub(super) batch: Batch,
    pub(super) first_ms: Option<u64>,
}

/// What a poll of the reader found.
pub(super) enum Poll {
    /// A batch to hand out.
    Ready(Popped),
    /// Nothing waiting, not closed.
    Empty,
    /// Nothing waiting and closed.
    Closed,
    /// Entries wait for the batch to fill; the oldest is due at this push time + flush.
    Wait(u64),
    /// Reading failed (logged); try again later.
    Failed,
    /// A batch waits in the shard's hand-off slot.
    Stashed,
}

pub(super) struct Reader {
    /// Next record to read (its first `skip` entries already consumed).
    pos: Pos,
    file: Option<(u64, File)>,
    ahead: VecDeque<Ahead>,
    samples: usize,
    bytes: usize,
}

fn weight(c: &Chunk) -> (usize, usize) {
    (c.counts.points(), c.raw_len as usize)
}

impl Reader {
    pub(super) fn new(pos: Pos) -> Self {
        Self {
            pos,
            file: None,
            ahead: VecDeque::new(),
            samples: 0,
            bytes: 0,
        }
    }

    fn full(&self, limits: &BatchLimits) -> bool {
        self.samples >= limits.max_samples || self.bytes >= limits.max_bytes
    }

    pub(super) fn poll(&mut self, inner: &Inner, shard: usize, limits: &BatchLimits) -> Poll {
        if let Err(e) = self.refill(inner, shard, limits) {
            tracing::error!(shard, segment = self.pos.seg, offset = self.pos.off, error = %e, "reading the disk queue failed");
            if self.ahead.is_empty() {
                return Poll::Failed;
            }
        }
        let closed = inner.closed.load(Ordering::Acquire);
        let Some(front) = self.ahead.front() else {
            return if closed { Poll::Closed } else { Poll::Empty };
        };
        let due = front
            .at_ms
            .saturating_add(limits.flush_interval.as_millis() as u64);
        if closed || self.full(limits) || inner.clock.now_ms() >= due {
            return Poll::Ready(self.take(limits));
        }
        Poll::Wait(due)
    }

    /// Reads records until the read-ahead holds a full batch or the published data ends.
    fn refill(&mut self, inner: &Inner, shard: usize, limits: &BatchLimits) -> std::io::Result<()> {
        let s = &inner.shards[shard];
        while !self.full(limits) {
            let (len, next_seg) = lock(&s.state).extent(self.pos.seg);
            let end = match (len, next_seg) {
                (Some(len), _) if self.pos.off < len => len,
                (_, Some(next)) => {
                    // This segment is done (or was deleted): go on with the next one.
                    self.pos = Pos::new(next, 0, 0);
                    self.file = None;
                    continue;
                }
                _ => return Ok(()),
            };
            let file = match &mut self.file {
                Some((seq, f)) if *seq == self.pos.seg => f,
                slot => {
                    let f = File::open(segment::segment_path(&s.dir, self.pos.seg))?;
                    &mut slot.insert((self.pos.seg, f)).1
                }
            };
            match segment::step(file, self.pos.off, end, shard)? {
                Step::Record {
                    off,
                    at_ms,
                    chunks,
                    next,
                } => {
                    let n = chunks.len();
                    let seg = self.pos.seg;
                    let skip = self.pos.skip as usize;
                    for (i, chunk) in chunks.into_iter().enumerate().skip(skip) {
                        let last = i + 1 == n;
                        let (samples, bytes) = weight(&chunk);
                        self.samples += samples;
                        self.bytes += bytes;
                        self.ahead.push_back(Ahead {
                            chunk,
                            at_ms,
                            next: if last {
                                Pos::new(seg, next, 0)
                            } else {
                                Pos::new(seg, off, (i + 1) as u32)
                            },
                            release: if last { next - off } else { 0 },
                        });
                    }
                    self.pos = Pos::new(seg, next, 0);
                }
                Step::Corrupt {
                    off,
                    reason,
                    resume,
                } => {
                    let resume = resume.unwrap_or(end);
                    let path = segment::segment_path(&s.dir, self.pos.seg);
                    tracing::error!(segment = %path.display(), offset = off, %reason, "damaged queue record skipped: its chunks are lost");
                    inner.counters.corrupt.fetch_add(1, Ordering::Relaxed);
                    // The damaged bytes will never be acknowledged: free them now.
                    let lost = resume - off;
                    {
                        let mut st = lock(&s.state);
                        st.bytes = st.bytes.saturating_sub(lost);
                    }
                    sub(&inner.used, lost);
                    sub(&inner.counters.records, 1);
                    self.pos = Pos::new(self.pos.seg, resume, 0);
                }
                Step::End => return Ok(()),
            }
        }
        Ok(())
    }

    /// Cuts a batch from the front of the read-ahead: chunks while they fit, at least one.
    fn take(&mut self, limits: &BatchLimits) -> Popped {
        let (mut samples, mut bytes) = (0usize, 0usize);
        let mut chunks = Vec::new();
        let (mut end, mut release, mut records) = (Pos::default(), 0, 0);
        let first_ms = self.ahead.front().map(|a| a.at_ms);
        while let Some(front) = self.ahead.front() {
            let (s, b) = weight(&front.chunk);
            if !chunks.is_empty()
                && (samples + s > limits.max_samples || bytes + b > limits.max_bytes)
            {
                break;
            }
            samples += s;
            bytes += b;
            let Some(a) = self.ahead.pop_front() else {
                break;
            };
            end = a.next;
            release += a.release;
            records += u64::from(a.release > 0);
            chunks.push(a.chunk);
        }
        self.samples -= samples;
        self.bytes -= bytes;
        Popped {
            batch: Batch {
                chunks,
                end,
                release,
                records,
                next_ms: self.ahead.front().map(|a| a.at_ms),
                first_ms,
            },
            first_ms,
        }
    }
}

pub(super) fn sub(a: &std::sync::atomic::AtomicU64, v: u64) {
    let _ = a.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |x| {
        Some(x.saturating_sub(v))
    });
}

#[cfg(test)]
impl Reader {
    /// Whether entries wait that a pop would return (no damaged records assumed).
    pub(super) fn has_unread(&self, st: &super::ShardState) -> bool {
        !self.ahead.is_empty()
            || st.segments.iter().any(|&(seq, len)| {
                (seq == self.pos.seg && len > self.pos.off) || (seq > self.pos.seg && len > 0)
            })
    }
}
