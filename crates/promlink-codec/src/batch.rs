//! Batching: the limits that cut requests into chunks on receipt and chunks into upstream
//! batches, and the slow paths that open a batch again before it is sent.
//!
//! The receiver cuts each request into chunks at the [`BatchLimits`] (see [`super::chunk`]), so
//! the queue builds a batch from whole chunks and never has to open one. Only three answers or
//! settings make a batch change after it was queued, and each has its function here:
//! - the upstream answers 413 for a batch of one chunk: [`split_chunk`] halves it;
//! - the upstream answers 422, Azure's answer to a repeated series and timestamp in one
//!   request (a sender resent a request promlink had committed): [`dedupe_chunks`] removes
//!   the repeats;
//! - `max_sample_age` is set: [`drop_older`] removes the samples older than the cutoff,
//!   opening only the chunks whose oldest timestamp is before it.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;

use super::chunk::{Chunk, ChunkError};
use super::message::{timestamp_of, Entry, FIELD_TIMESERIES, TS_HISTOGRAMS, TS_LABELS, TS_SAMPLES};
use super::wire::Fields;

/// Limits of one upstream batch. The receiver cuts requests into chunks at the same sizes, so
/// that a batch never has to cut a chunk.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    /// Most samples (float samples + histogram samples) in one batch; a chunk larger than this
    /// (a single series with more samples) travels alone.
    pub max_samples: usize,
    /// Most encoded (uncompressed) bytes in one batch.
    pub max_bytes: usize,
    /// How long the oldest chunk may wait for the batch to fill.
    pub flush_interval: Duration,
}

/// Splits a chunk holding more than one message into two halves, first half first, so the
/// order within each series is kept. `Ok(None)` when it holds a single message, which cannot
/// be split.
///
/// # Errors
/// When the chunk cannot be opened (damaged since receipt).
pub fn split_chunk(chunk: &Chunk) -> Result<Option<(Chunk, Chunk)>, ChunkError> {
    let mut entries = chunk.entries()?;
    if entries.len() < 2 {
        return Ok(None);
    }
    let second = entries.split_off(entries.len() / 2);
    Ok(Some((
        Chunk::from_entries(&entries),
        Chunk::from_entries(&second),
    )))
}

/// Removes repeated (series, timestamp) points from a batch (see [`dedupe`]). `Ok(None)` when
/// nothing was repeated; else what is left (if anything) as one chunk, and the number of
/// points removed.
///
/// # Errors
/// When a chunk cannot be opened (damaged since receipt).
pub fn dedupe_chunks(part: &[Chunk]) -> Result<Option<(Option<Chunk>, u64)>, ChunkError> {
    let mut entries = Vec::new();
    for c in part {
        entries.extend(c.entries()?);
    }
    Ok(dedupe(&entries).map(|(kept, removed)| {
        let kept = (!kept.is_empty()).then(|| Chunk::from_entries(&kept));
        (kept, removed)
    }))
}

/// What [`drop_older`] left of a batch.
#[derive(Debug, Default)]
pub struct Aged {
    /// The chunks, in order, without the old samples; a chunk left empty is gone.
    pub chunks: Vec<Chunk>,
    /// Samples and histogram samples removed.
    pub dropped: u64,
    /// Chunks that had old samples but could not be opened (damaged since receipt); they are in
    /// `chunks` as they were, for the upstream to judge.
    pub damaged: Vec<ChunkError>,
}

/// Removes the samples and histograms older than `cutoff_ms` (Unix ms) from a batch. Only
/// chunks whose oldest timestamp is before the cutoff are opened; the others are handed on as
/// they are.
pub fn drop_older(batch: Vec<Chunk>, cutoff_ms: i64) -> Aged {
    let mut out = Aged {
        chunks: Vec::with_capacity(batch.len()),
        ..Aged::default()
    };
    for chunk in batch {
        if chunk.min_ts >= cutoff_ms {
            out.chunks.push(chunk);
            continue;
        }
        let entries = match chunk.entries() {
            Ok(e) => e,
            Err(e) => {
                out.damaged.push(e);
                out.chunks.push(chunk);
                continue;
            }
        };
        let mut kept: Vec<Entry> = Vec::with_capacity(entries.len());
        for e in entries {
            match retain(&e, |_, t| t >= cutoff_ms) {
                None => kept.push(e),
                Some((left, removed)) => {
                    out.dropped += removed;
                    kept.extend(left);
                }
            }
        }
        if !kept.is_empty() {
            out.chunks.push(Chunk::from_entries(&kept));
        }
    }
    out
}

/// Removes repeated (series, timestamp) points from a batch, keeping the first copy: a sender
/// that resends a request promlink had already committed (its answer was lost, or promlink
/// crashed before answering) puts the same samples twice into one upstream request, which the
/// DCE refuses whole with 422. Returns `None` when there is nothing to remove, else the
/// remaining entries and the number of points removed.
pub fn dedupe(entries: &[Entry]) -> Option<(Vec<Entry>, u64)> {
    let mut seen: HashSet<(Vec<u8>, bool, i64)> = HashSet::new();
    let mut out = Vec::with_capacity(entries.len());
    let mut removed = 0u64;
    for e in entries {
        if e.field != FIELD_TIMESERIES {
            out.push(e.clone());
            continue;
        }
        let labels: Vec<u8> = Fields::new(&e.bytes)
            .filter_map(Result::ok)
            .filter(|f| f.number == TS_LABELS)
            .flat_map(|f| f.raw.iter().copied())
            .collect();
        match retain(e, |hist, t| seen.insert((labels.clone(), hist, t))) {
            None => out.push(e.clone()),
            Some((left, n)) => {
                removed += n;
                out.extend(left);
            }
        }
    }
    (removed > 0).then_some((out, removed))
}

/// Keeps the points of a series entry for which `keep(is_histogram, timestamp_ms)` holds (see
/// [`retain_points`]). `None` when every point is kept or `e` is not a series; else what is left
/// of it (`None` when no point is) and the number of points removed.
fn retain(e: &Entry, keep: impl FnMut(bool, i64) -> bool) -> Option<(Option<Entry>, u64)> {
    if e.field != FIELD_TIMESERIES {
        return None;
    }
    let p = retain_points(&e.bytes, keep);
    let bytes = p.bytes?;
    let removed = u64::from(p.samples + p.histograms);
    let left = (!p.empty).then(|| {
        let mut left = e.clone();
        left.counts.samples -= p.samples;
        left.counts.histograms -= p.histograms;
        left.bytes = Bytes::from(bytes);
        left
    });
    Some((left, removed))
}

/// What [`prune_older`] removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// The series without the old samples; `None` when nothing was old.
    pub bytes: Option<Vec<u8>>,
    /// Float samples removed.
    pub samples: u32,
    /// Histogram samples removed.
    pub histograms: u32,
    /// Whether no sample or histogram is left.
    pub empty: bool,
}

/// Removes the samples and histograms of an encoded `TimeSeries` older than `cutoff_ms`,
/// copying every other field as it is.
pub fn prune_older(series: &[u8], cutoff_ms: i64) -> Pruned {
    retain_points(series, |_, t| t >= cutoff_ms)
}

/// Keeps the samples (`is_histogram == false`) and histograms of an encoded `TimeSeries` for
/// which `keep(is_histogram, timestamp_ms)` holds, copying every other field as it is. `keep`
/// is called once per point, in order. Series bytes were validated on receipt, so a field that
/// does not parse is kept as it is.
fn retain_points(series: &[u8], mut keep: impl FnMut(bool, i64) -> bool) -> Pruned {
    let mut out = Pruned::default();
    let mut kept_points = 0u32;
    // One decision per field, in order: true = keep.
    let mut decisions = Vec::new();
    for f in Fields::new(series).filter_map(Result::ok) {
        let point = match f.number {
            TS_SAMPLES => timestamp_of(f.data, 2).map(|t| (false, t)),
            TS_HISTOGRAMS => timestamp_of(f.data, 15).map(|t| (true, t)),
            _ => None,
        };
        let kept = match point {
            Some((hist, t)) if !keep(hist, t) => {
                if hist {
                    out.histograms += 1;
                } else {
                    out.samples += 1;
                }
                false
            }
            Some(_) => {
                kept_points += 1;
                true
            }
            None => {
                kept_points += u32::from(matches!(f.number, TS_SAMPLES | TS_HISTOGRAMS));
                true
            }
        };
        decisions.push(kept);
    }
    if out.samples + out.histograms == 0 {
        return out;
    }
    out.empty = kept_points == 0;
    let mut bytes = Vec::with_capacity(series.len());
    for (f, kept) in Fields::new(series).filter_map(Result::ok).zip(decisions) {
        if kept {
            bytes.extend_from_slice(f.raw);
        }
    }
    out.bytes = Some(bytes);
    out
}

#[cfg(test)]
mod tests;
