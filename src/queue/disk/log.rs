//! The in-memory side of the log: the window of chunks the dispatcher hands out (with where each
//! came from on disk), the read and persisted positions, the segments and their published
//! lengths, and the clock records are stamped with.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::segment::Pos;
use crate::codec::Chunk;
use crate::queue::dispatch::Dispatcher;

/// Millisecond timestamps for records: wall clock across restarts, tokio's clock (pausable in
/// tests) within a process.
pub(super) struct Clock {
    pub(super) base_ms: u64,
    pub(super) base: tokio::time::Instant,
}

impl Clock {
    pub(super) fn new() -> Self {
        Self {
            base_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            base: tokio::time::Instant::now(),
        }
    }

    pub(super) fn now_ms(&self) -> u64 {
        self.base_ms + self.base.elapsed().as_millis() as u64
    }

    /// The instant of a timestamp, no earlier than the queue's opening.
    pub(super) fn instant(&self, ms: u64) -> tokio::time::Instant {
        self.base + Duration::from_millis(ms.saturating_sub(self.base_ms))
    }
}

/// Where a chunk in the window came from, handed back when it leaves the window.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tag {
    /// Its record's segment and offset.
    pub(super) seg: u64,
    pub(super) off: u64,
    /// Its place in the record.
    pub(super) index: u32,
    /// Whether it is the record's last chunk, and the record's length.
    pub(super) last: bool,
    pub(super) rec_len: u64,
    /// Its data and keys (window accounting, freed when it is finished).
    pub(super) data: usize,
}

/// Window bytes a chunk's place takes until it leaves the window, beside its data (freed when
/// it is finished): finished chunks behind an unfinished one keep their places.
pub(super) const SLOT_BYTES: usize = crate::queue::dispatch::slot_bytes::<Tag>();

/// The log's state shared by pushes (through the committer), the reader and the workers.
pub(super) struct Log {
    pub(super) dispatcher: Dispatcher<Tag>,
    /// Chunk data in the window.
    pub(super) window_bytes: usize,
    /// Segments on disk, oldest first, with their published length; the last is written.
    pub(super) segments: VecDeque<(u64, u64)>,
    /// The next record to take into the window starts here (its first `skip` chunks are
    /// finished).
    pub(super) admitted: Pos,
    /// Every chunk before this is finished (in memory).
    pub(super) ack: Pos,
    /// Written to `read.pos` (maybe not fsynced).
    pub(super) persisted: Pos,
    /// Written to `read.pos` and fsynced.
    pub(super) durable: Pos,
    /// Unfinished record bytes published (damaged regions included until skipped).
    pub(super) bytes: u64,
    /// Unfinished records published.
    pub(super) records: u64,
    /// Push time of the first record outside the window, or an older time (so ages are never
    /// underestimated); meaningful while records wait outside the window.
    pub(super) disk_front_ms: Option<u64>,
    /// A reader is reading records into the window.
    pub(super) reading: bool,
    /// The last read failed: do not retry before this time (ms).
    pub(super) read_backoff_until: u64,
}

impl Log {
    /// Window memory in use: the chunks' data, keys and places, and the dispatcher's index
    /// of parked chunks (what `queue_memory_bytes` bounds).
    pub(super) fn window_used(&self) -> usize {
        self.window_bytes + self.dispatcher.index_bytes()
    }

    /// `p`, or the start of the next segment when `p` is at (or past) the end of its own and a
    /// later segment exists: both name the same place in the log.
    pub(super) fn normalize(&self, p: Pos) -> Pos {
        let len = self.segments.iter().find(|(s, _)| *s == p.seg).map(|s| s.1);
        let next = self.segments.iter().map(|s| s.0).find(|&s| s > p.seg);
        match (len, next) {
            (Some(len), Some(next)) if p.off >= len => Pos::new(next, 0, 0),
            (None, Some(next)) => Pos::new(next, 0, 0),
            _ => p,
        }
    }

    /// Whether published records wait outside the window.
    pub(super) fn unadmitted(&self) -> bool {
        let p = self.normalize(self.admitted);
        self.segments
            .iter()
            .find(|(s, _)| *s == p.seg)
            .is_some_and(|&(_, len)| p.off < len)
    }

    /// Takes a record's chunks into the window (the first `skip` are finished already).
    pub(super) fn admit(
        &mut self,
        seg: u64,
        off: u64,
        next: u64,
        at_ms: u64,
        chunks: Vec<Chunk>,
        skip: u32,
    ) {
        let n = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate().skip(skip as usize) {
            let tag = Tag {
                seg,
                off,
                index: i as u32,
                last: i + 1 == n,
                rec_len: next - off,
                data: chunk.queue_bytes(),
            };
            self.window_bytes += tag.data + SLOT_BYTES;
            self.dispatcher.push(chunk, at_ms, tag);
        }
        self.admitted = Pos::new(seg, next, 0);
    }
}
