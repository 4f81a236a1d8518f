//! Recovery on open: checks the log from the read position on (magic, length, CRC, payload),
//! skips damaged records (reported with segment and offset), cuts a torn tail off the last
//! segment, deletes segments a crash kept from deletion, and rebuilds the in-memory [`Log`]
//! and the [`Writer`] at the end (see the parent module's "Recovery" section).

use std::collections::VecDeque;
use std::io;
use std::path::Path;
use std::sync::Arc;

use super::commit::Writer;
use super::files::Storage;
use super::segment::{self, Pos};
use super::{CorruptRecord, Log, RecoveryReport};
use crate::queue::dispatch::Dispatcher;

/// Checks the log from its read position on, cuts a torn tail, and sets up the writer.
pub(super) fn recover(
    storage: Arc<dyn Storage>,
    dir: &Path,
    report: &mut RecoveryReport,
) -> io::Result<(Log, Writer)> {
    segment::remove_pos_tmp(dir)?;
    let mut seqs = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name();
        match name.to_str().and_then(segment::parse_segment_name) {
            Some(seq) => seqs.push(seq),
            None if name == segment::POS_FILE => {}
            None => {
                tracing::warn!(dir = %dir.display(), file = ?name, "unexpected file in the queue's log directory")
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
            tracing::error!(file = %path.display(), %reason, "damaged read position: replaying the queue from its oldest segment");
            report.corrupt_records.push(CorruptRecord {
                segment: path,
                offset: 0,
                reason: format!(
                    "read position unusable, queue replayed from its oldest segment: {reason}"
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
    if seqs.is_empty() {
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
    let mut log = Log {
        dispatcher: Dispatcher::default(),
        window_bytes: 0,
        segments: VecDeque::new(),
        admitted: pos,
        ack: pos,
        persisted: pos,
        durable: pos,
        bytes: 0,
        records: 0,
        disk_front_ms: None,
        reading: false,
        read_backoff_until: 0,
    };
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
            log.admitted = pos;
            log.ack = pos;
            log.persisted = pos;
            log.durable = pos;
        }
        loop {
            match segment::step(&mut file, off, end)? {
                segment::Step::Record {
                    off: at,
                    at_ms,
                    chunks: list,
                    next,
                } => {
                    let live = (list.len() as u64).saturating_sub(u64::from(skip));
                    if live > 0 {
                        log.disk_front_ms.get_or_insert(at_ms);
                        log.records += 1;
                        log.bytes += next - at;
                        report.replayed_chunks += live;
                        report.replayed_bytes += next - at;
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
                            log.bytes += resume - at;
                            log.records += 1;
                            off = resume;
                        }
                    }
                }
                segment::Step::End => break,
            }
        }
        log.segments.push_back((seq, end));
    }
    let writer = Writer::open(storage, dir, last, log.segments.back().map_or(0, |s| s.1))?;
    Ok((log, writer))
}
