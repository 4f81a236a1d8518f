//! Reads records that are on disk but not yet in the window (a backlog, or a replay after a
//! restart) back into it, in log order, as the window empties. Runs on the blocking pool, one
//! at a time.

use std::fs::File;
use std::sync::atomic::Ordering;

use super::segment::{self, Pos, Step};
use super::{lock, sub, Inner};

/// The reader's open segment, kept between reads.
#[derive(Default)]
pub(super) struct Reader {
    file: Option<(u64, File)>,
}

/// After a failed read, how long before the next attempt (a failing disk is not spun on).
const READ_BACKOFF_MS: u64 = 1000;

/// Reads records into the window until it is full or everything published is in it, then
/// wakes the workers. The caller set `Log::reading`; this clears it.
pub(super) fn fill(inner: &Inner) {
    let mut reader = lock(&inner.reader);
    let result = fill_locked(inner, &mut reader);
    let mut log = lock(&inner.log);
    log.reading = false;
    if let Err(e) = result {
        tracing::error!(dir = %inner.dir.display(), error = %e, "reading the disk queue failed; retrying in a second");
        log.read_backoff_until = inner.clock.now_ms() + READ_BACKOFF_MS;
        reader.file = None;
    }
    if !log.unadmitted() {
        log.disk_front_ms = None;
    }
    drop(log);
    inner.notify.notify_waiters();
}

fn fill_locked(inner: &Inner, reader: &mut Reader) -> std::io::Result<()> {
    crate::supervise::hit(crate::supervise::QUEUE_READER);
    loop {
        let (pos, end) = {
            let log = lock(&inner.log);
            if log.window_used() >= inner.window_max || !log.unadmitted() {
                return Ok(());
            }
            let pos = log.normalize(log.admitted);
            let end = log
                .segments
                .iter()
                .find(|(s, _)| *s == pos.seg)
                .map_or(0, |s| s.1);
            (pos, end)
        };
        let file = match &mut reader.file {
            Some((seq, f)) if *seq == pos.seg => f,
            slot => {
                let f = File::open(segment::segment_path(&inner.dir, pos.seg))?;
                &mut slot.insert((pos.seg, f)).1
            }
        };
        let step = segment::step(file, pos.off, end)?;
        let mut log = lock(&inner.log);
        if log.normalize(log.admitted) != pos {
            // Cannot happen (one reader at a time, and the committer only takes records in
            // when nothing waits on disk); read again from where the log says.
            continue;
        }
        match step {
            Step::Record {
                off,
                at_ms,
                chunks,
                next,
            } => {
                log.admit(pos.seg, off, next, at_ms, chunks, pos.skip);
                log.disk_front_ms = Some(at_ms);
            }
            Step::Corrupt {
                off,
                reason,
                resume,
            } => {
                let resume = resume.unwrap_or(end);
                let path = segment::segment_path(&inner.dir, pos.seg);
                tracing::error!(segment = %path.display(), offset = off, %reason, "damaged queue record skipped: its chunks are lost");
                inner.counters.corrupt.fetch_add(1, Ordering::Relaxed);
                // The damaged bytes will never be finished: free them now.
                let lost = resume - off;
                log.bytes = log.bytes.saturating_sub(lost);
                log.records = log.records.saturating_sub(1);
                sub(&inner.used, lost);
                log.admitted = Pos::new(pos.seg, resume, 0);
                // Nothing before the damage is unfinished in the window: the read position may
                // pass it at once.
                if log.dispatcher.len() == 0 {
                    log.ack = log.admitted;
                }
            }
            Step::End => {
                // The published length promised more than the file holds.
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "segment {} ends before its published length {end}",
                        path_str(inner, pos.seg)
                    ),
                ));
            }
        }
    }
}

fn path_str(inner: &Inner, seq: u64) -> String {
    segment::segment_path(&inner.dir, seq).display().to_string()
}
