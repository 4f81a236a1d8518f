//! Remote write 1.0: validate `prometheus.WriteRequest` in place and hand on each `TimeSeries`
//! and `MetricMetadata` as the sender encoded it.
//!
//! Each series goes through the one-pass [`scan`] first, which accepts every valid series the
//! way senders encode them without allocating; anything it does not accept goes through the
//! full path in [`check`], which says exactly what is wrong (or accepts an unusual but valid
//! encoding).

mod check;
mod scan;
#[cfg(test)]
mod tests;

use super::counts::{ChunkCounts, Counts};
use super::error::DecodeError;
use super::message::{labels, metadata_key, FIELD_METADATA, FIELD_TIMESERIES, TS_LABELS};
use super::options::Options;
use super::protocol::{wrong_version, Protocol};
use super::relabel::{self, relabel_pairs, relabel_scanned, Ahead, RelabelDrops, Relabeled};
use super::wire::{self, Fields, WireType};
use check::{check_metadata, check_series, Checked};
use scan::{fast_scan, known_scan, NameCache};

/// Receives what [`walk`] accepts, in request order.
pub(super) trait Sink {
    /// One valid series: its shard key, its encoded bytes as the concatenation of `pieces`
    /// (the sender's bytes, with an added `cluster` label spliced in when configured), what
    /// it holds and its oldest timestamp.
    fn series(&mut self, key: u64, pieces: &[&[u8]], counts: ChunkCounts, min_ts: i64);
    /// One metadata message.
    fn metadata(&mut self, key: u64, bytes: &[u8]);
}

/// What [`walk`] found besides the messages it handed on.
#[derive(Debug, Default)]
pub(super) struct Walked {
    /// Totals over the messages handed on.
    pub(super) counts: Counts,
    /// Series dropped for breaking a label limit (with `drop_over_limit`).
    pub(super) dropped_series: u64,
    /// Series the relabel rules removed.
    pub(super) relabel: RelabelDrops,
}

/// Validates a `prometheus.WriteRequest` and hands each series and metadata message to `sink`.
pub(super) fn walk(
    raw: &[u8],
    opts: &Options,
    sink: &mut impl Sink,
) -> Result<Walked, DecodeError> {
    let cluster_field = opts.cluster.as_deref().map(|c| {
        let mut label = Vec::with_capacity(c.len() + 12);
        wire::put_len_field(&mut label, 1, b"cluster");
        wire::put_len_field(&mut label, 2, c.as_bytes());
        let mut field = Vec::with_capacity(label.len() + 4);
        wire::put_len_field(&mut field, TS_LABELS, &label);
        field
    });
    let mut out = Walked::default();
    let mut scratch = Vec::new();
    let mut names = NameCache::default();
    let mut ahead = relabel::rules(opts).map(|r| Ahead::new(r, opts, raw, opts.cluster.as_deref()));
    let mut known = match (&opts.series_cache, &ahead) {
        (Some(cache), None) => Some(cache.session(opts, raw)),
        _ => None,
    };
    let mut index = 0;
    for field in Fields::new(raw) {
        let field = field?;
        match (field.number, field.wire) {
            (FIELD_TIMESERIES, WireType::Len) => {
                index += 1;
                if out.counts.series as usize + out.dropped_series as usize
                    >= opts.limits.max_series
                {
                    return Err(DecodeError::TooManySeries {
                        limit: opts.limits.max_series,
                    });
                }
                let series = field.data;
                // The one-pass scan handles every valid series the way senders encode them;
                // anything it does not accept goes through the full path, which says exactly
                // what is wrong (or accepts an unusual but valid encoding).
                // A label section the cache knows skips the per-label checks; one it does
                // not is scanned in full, and remembered when valid.
                let cached = known.as_mut().and_then(|k| {
                    let (end, key) = k.get(index - 1)?;
                    let scan = known_scan(series, end, key, opts);
                    if scan.is_none() {
                        k.scanned_anyway();
                    }
                    scan
                });
                let scanned = cached.or_else(|| {
                    let scan = fast_scan(
                        series,
                        opts,
                        cluster_field.as_deref(),
                        &mut scratch,
                        &mut names,
                    )?;
                    if let Some(k) = known.as_mut() {
                        k.put(index - 1, scan.labels_end, scan.key);
                    }
                    Some(scan)
                });
                let checked = match scanned {
                    Some(scan) => {
                        if let Some(rules) = relabel::rules(opts) {
                            let cluster = scan.cluster_at.and(opts.cluster.as_deref());
                            let key = ahead
                                .as_mut()
                                .and_then(|a| a.key(index - 1, scan.labels_end, cluster.is_some()));
                            let r = relabel_scanned(
                                rules,
                                opts,
                                series,
                                scan.labels_end,
                                cluster,
                                key,
                            )?;
                            if relabeled(&mut out, sink, r, scan.counts, scan.min_ts) {
                                continue;
                            }
                        }
                        let (pieces_buf, n): ([&[u8]; 3], usize) =
                            match (scan.cluster_at, &cluster_field) {
                                (Some(at), Some(c)) => {
                                    ([&series[..at], c.as_slice(), &series[at..]], 3)
                                }
                                _ => ([series, &[], &[]], 1),
                            };
                        emit(
                            &mut out,
                            sink,
                            scan.key,
                            &pieces_buf[..n],
                            scan.counts,
                            scan.min_ts,
                        );
                        continue;
                    }
                    None => check_series(series, opts)?,
                };
                match checked {
                    Checked::Keep {
                        key,
                        counts,
                        min_ts,
                        rewritten,
                    } => {
                        if let Some(rules) = relabel::rules(opts) {
                            let cluster = rewritten.as_ref().and(opts.cluster.as_deref());
                            let r = relabel_series(rules, opts, series, cluster)?;
                            if relabeled(&mut out, sink, r, counts, min_ts) {
                                continue;
                            }
                        }
                        let bytes = rewritten.as_deref().unwrap_or(series);
                        emit(&mut out, sink, key, &[bytes], counts, min_ts);
                    }
                    Checked::Drop => out.dropped_series += 1,
                }
            }
            (FIELD_METADATA, WireType::Len) => {
                check_metadata(field.data)?;
                sink.metadata(metadata_key(field.data), field.data);
                out.counts.metadata += 1;
            }
            (FIELD_TIMESERIES | FIELD_METADATA, _) => {
                return Err(DecodeError::Protobuf(format!(
                    "field {} has the wrong wire type",
                    field.number
                )))
            }
            // A 2.0 body under the 1.0 content type would otherwise be accepted as empty.
            (4 | 5, WireType::Len) => return Err(wrong_version(Protocol::V1)),
            // Other unknown fields (including the reserved field 2) are ignored, as protobuf
            // allows.
            _ => {}
        }
    }
    Ok(out)
}

/// Runs the relabel rules over a valid series, with the `cluster` label `add_cluster` added
/// first when it is missing.
fn relabel_series(
    rules: &relabel::Relabel,
    opts: &Options,
    series: &[u8],
    add_cluster: Option<&str>,
) -> Result<Relabeled, DecodeError> {
    let mut pairs = labels(series)?;
    if let Some(c) = add_cluster {
        super::message::insert_cluster(&mut pairs, c.as_bytes());
    }
    relabel_pairs(rules, opts, &pairs, &[series])
}

/// Hands on or counts what the rules made of a series; `false` when they left it unchanged
/// (the caller forwards it as without rules).
fn relabeled(
    out: &mut Walked,
    sink: &mut impl Sink,
    r: Relabeled,
    counts: ChunkCounts,
    min_ts: i64,
) -> bool {
    match r {
        Relabeled::Unchanged => return false,
        Relabeled::Changed { bytes, key } => emit(out, sink, key, &[&bytes], counts, min_ts),
        Relabeled::OverLimit => out.dropped_series += 1,
        other => out.relabel.count(&other, counts.points()),
    }
    true
}

fn emit(
    out: &mut Walked,
    sink: &mut impl Sink,
    key: u64,
    pieces: &[&[u8]],
    counts: ChunkCounts,
    min_ts: i64,
) {
    out.counts.add(&counts);
    sink.series(key, pieces, counts, min_ts);
}
