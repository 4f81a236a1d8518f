//! Remote write 1.0: validate `prometheus.WriteRequest` in place and hand on each `TimeSeries`
//! and `MetricMetadata` as the sender encoded it.

use bytes::Bytes;

use super::chunk::ChunkCounts;
use super::wire::{self, fast_label, len_at, varint_at, Fields, WireType};
use super::{
    hash_bytes, labels_key, pairs_key, validate, Counts, DecodeError, Entry, Options,
    FIELD_METADATA, FIELD_TIMESERIES,
};

/// Label, sample, exemplar and histogram field numbers of `TimeSeries`.
const TS_LABELS: u32 = 1;
const TS_SAMPLES: u32 = 2;
const TS_EXEMPLARS: u32 = 3;
const TS_HISTOGRAMS: u32 = 4;

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
    /// Oldest sample or histogram timestamp, `i64::MAX` when none.
    pub(super) min_ts: i64,
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
    let mut out = Walked {
        min_ts: i64::MAX,
        ..Walked::default()
    };
    let mut scratch = Vec::new();
    let mut names = NameCache::default();
    for field in Fields::new(raw) {
        let field = field?;
        match (field.number, field.wire) {
            (FIELD_TIMESERIES, WireType::Len) => {
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
                let checked = match fast_scan(
                    series,
                    opts,
                    cluster_field.as_deref(),
                    &mut scratch,
                    &mut names,
                ) {
                    Some(scan) => {
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
            (4 | 5, WireType::Len) => return Err(super::wrong_version(super::Protocol::V1)),
            // Other unknown fields (including the reserved field 2) are ignored, as protobuf
            // allows.
            _ => {}
        }
    }
    Ok(out)
}

fn emit(
    out: &mut Walked,
    sink: &mut impl Sink,
    key: u64,
    pieces: &[&[u8]],
    counts: ChunkCounts,
    min_ts: i64,
) {
    out.counts.series += 1;
    out.counts.samples += u64::from(counts.samples);
    out.counts.histograms += u64::from(counts.histograms);
    out.counts.exemplars += u64::from(counts.exemplars);
    out.min_ts = out.min_ts.min(min_ts);
    sink.series(key, pieces, counts, min_ts);
}

/// One label's name and value, borrowed from the series bytes.
fn label(data: &[u8]) -> Result<(&[u8], &[u8]), DecodeError> {
    let (mut name, mut value) = (&[][..], &[][..]);
    for f in Fields::new(data) {
        let f = f?;
        match (f.number, f.wire) {
            (1, WireType::Len) => name = f.data,
            (2, WireType::Len) => value = f.data,
            (1 | 2, _) => {
                return Err(DecodeError::Protobuf(
                    "label field has the wrong wire type".into(),
                ))
            }
            _ => {}
        }
    }
    Ok((name, value))
}

/// A label's name and value bytes.
type LabelPair<'a> = (&'a [u8], &'a [u8]);

/// Collects the labels of a series (typically 5-20, so a small vector).
fn labels(series: &[u8]) -> Result<Vec<LabelPair<'_>>, DecodeError> {
    let mut out = Vec::with_capacity(16);
    for f in Fields::new(series) {
        let f = f?;
        if f.number == TS_LABELS {
            if f.wire != WireType::Len {
                return Err(DecodeError::Protobuf(
                    "TimeSeries.labels has the wrong wire type".into(),
                ));
            }
            out.push(label(f.data)?);
        }
    }
    Ok(out)
}

/// Whether an encoded `Sample` (`TS_SAMPLES`), `Exemplar` or `Histogram` is well-formed
/// protobuf with the wire types 1.0 gives its fields (a sample: `double value = 1`, `int64
/// timestamp = 2`). Checked on receipt so a malformed point is refused at the edge instead of
/// making the upstream refuse a whole batch shared with other senders' data.
fn point_ok(kind: u32, msg: &[u8]) -> bool {
    Fields::new(msg).all(|f| match f {
        Err(_) => false,
        Ok(f) => match (kind, f.number) {
            (TS_SAMPLES, 1) => f.wire == WireType::Fixed64,
            (TS_SAMPLES, 2) => f.wire == WireType::Varint,
            _ => true,
        },
    })
}

/// The timestamp of a sample encoded as senders do (`value = 1` fixed64, `timestamp = 2`
/// varint, either omitted when zero); anything else goes to the full path.
#[inline(always)]
fn fast_sample_ts(s: &[u8]) -> Option<i64> {
    let (mut i, mut ts) = (0, 0i64);
    while i < s.len() {
        match s[i] {
            0x09 => {
                i += 9;
                if i > s.len() {
                    return None;
                }
            }
            0x10 => {
                i += 1;
                ts = varint_at(s, &mut i)? as i64;
            }
            _ => return None,
        }
    }
    Some(ts)
}

/// The first eight bytes of the name at `start..start + len` of `l`, big-endian, zero-padded:
/// comparing these orders names by their first eight bytes, and a name of up to eight bytes is
/// all in it. One fixed-size load when `l` has eight bytes from `start` (the value usually
/// follows the name), else byte by byte.
#[inline(always)]
fn name_prefix(l: &[u8], start: usize, len: usize) -> u64 {
    if let Some(w) = l.get(start..).and_then(<[u8]>::first_chunk::<8>) {
        let w = u64::from_be_bytes(*w);
        return match len {
            0 => 0,
            1..=7 => w & !(u64::MAX >> (8 * len)),
            _ => w,
        };
    }
    let mut v = 0u64;
    for (i, &c) in l[start..start + len.min(8)].iter().enumerate() {
        v |= u64::from(c) << (56 - 8 * i);
    }
    v
}

/// `"__name__"` as a name prefix.
const METRIC_NAME_LABEL: u64 = u64::from_be_bytes(*b"__name__");

/// What the one-pass scan learned about a valid series.
struct Scan {
    key: u64,
    counts: ChunkCounts,
    min_ts: i64,
    /// Where the `cluster` label must be spliced in, when one is configured and missing.
    cluster_at: Option<usize>,
}

/// Validates one series in a single walk without allocating and computes its shard key (the
/// same as [`check_series`]'s: a hash of the canonical label bytes, which the scan checks the
/// sender wrote). Returns `None` for anything it does not accept (a rule or limit broken, an
/// unusual encoding): [`check_series`] then decides, with the message. `cluster_field` is the
/// encoded `cluster` label to add when the series has none; `scratch` holds the label bytes
/// with it added, for the key.
fn fast_scan(
    series: &[u8],
    opts: &Options,
    cluster_field: Option<&[u8]>,
    scratch: &mut Vec<u8>,
    names: &mut NameCache,
) -> Option<Scan> {
    let lim = &opts.limits;
    // The previous label's name and its prefix; a valid name's prefix is never zero.
    let (mut prev, mut prev_name): (u64, &[u8]) = (0, &[]);
    let (mut count, mut has_name) = (0usize, false);
    let (mut own_cluster, mut cluster_at) = (false, None);
    let mut labels_end = 0;
    let mut counts = ChunkCounts {
        series: 1,
        ..ChunkCounts::default()
    };
    let mut min_ts = i64::MAX;
    let mut i = 0;
    // Labels come first, as every encoder writes them: a loop of their own.
    while i < series.len() && series[i] == 0x0a {
        let at = i;
        i += 1;
        let data = len_at(series, &mut i)?;
        let (start, n, v) = fast_label(data)?;
        let key = name_prefix(data, start, n.len());
        let sorted = key > prev || (key == prev && prev != 0 && n > prev_name);
        let name_ok = if n.len() <= 8 {
            names.short_label_name(count, key, n.len())
        } else {
            validate::is_label_name(n)
        };
        if !sorted
            || !name_ok
            || n.len() > lim.max_name_len
            || v.len() > lim.max_value_len
            || !(v.is_ascii() || std::str::from_utf8(v).is_ok())
        {
            return None;
        }
        if key == METRIC_NAME_LABEL && n.len() == 8 {
            if !validate::is_metric_name(v) {
                return None;
            }
            has_name = true;
        }
        if cluster_field.is_some() && !own_cluster && cluster_at.is_none() {
            if n == b"cluster" {
                own_cluster = true;
            } else if n > &b"cluster"[..] {
                cluster_at = Some(at);
            }
        }
        prev = key;
        prev_name = n;
        count += 1;
        labels_end = i;
    }
    while i < series.len() {
        let tag = series[i];
        i += 1;
        let data = len_at(series, &mut i)?;
        match tag {
            0x12 => {
                min_ts = min_ts.min(fast_sample_ts(data)?);
                counts.samples += 1;
            }
            0x1a => {
                if !point_ok(TS_EXEMPLARS, data) {
                    return None;
                }
                counts.exemplars += 1;
            }
            0x22 => {
                if !point_ok(TS_HISTOGRAMS, data) {
                    return None;
                }
                min_ts = min_ts.min(timestamp_of(data, 15).unwrap_or(0));
                counts.histograms += 1;
            }
            // A label after a sample, or an unknown field: the full path judges.
            _ => return None,
        }
    }
    if !has_name || count > lim.max_labels || counts.points() > lim.max_samples_per_series {
        return None;
    }
    let key = match cluster_field {
        Some(c) if !own_cluster => {
            let at = *cluster_at.get_or_insert(labels_end);
            scratch.clear();
            scratch.extend_from_slice(&series[..at]);
            scratch.extend_from_slice(c);
            scratch.extend_from_slice(&series[at..labels_end]);
            labels_key(scratch)
        }
        _ => labels_key(&series[..labels_end]),
    };
    Some(Scan {
        key,
        counts,
        min_ts,
        cluster_at,
    })
}

/// The short label names found valid at each position of the previous series: series of one
/// request mostly share their label names, so most checks become one comparison.
#[derive(Default)]
pub(super) struct NameCache {
    /// (name prefix, length) per label position.
    names: [(u64, usize); 16],
}

impl NameCache {
    /// Whether the name of `len` (1 to 8) bytes whose prefix is `key`, at label position
    /// `at`, is a valid label name.
    #[inline(always)]
    fn short_label_name(&mut self, at: usize, key: u64, len: usize) -> bool {
        match self.names.get_mut(at) {
            Some(seen) if *seen == (key, len) => true,
            Some(seen) => {
                let ok = validate::is_short_label_name(key, len);
                if ok {
                    *seen = (key, len);
                }
                ok
            }
            None => validate::is_short_label_name(key, len),
        }
    }
}

/// What the full path decided about a series.
enum Checked {
    Keep {
        key: u64,
        counts: ChunkCounts,
        min_ts: i64,
        /// The series re-encoded with an added `cluster` label.
        rewritten: Option<Vec<u8>>,
    },
    /// It breaks a label limit and the limits say to drop such series.
    Drop,
}

/// Validates one series with a precise error for anything wrong.
fn check_series(series: &[u8], opts: &Options) -> Result<Checked, DecodeError> {
    let labels = labels(series)?;
    validate::check_labels(labels.iter().copied())?;
    if let Some(rule) = opts.limits.check_labels(labels.iter().copied()) {
        if opts.limits.drop_over_limit {
            return Ok(Checked::Drop);
        }
        return Err(DecodeError::Limit {
            series: validate::render(labels.iter().copied()),
            rule,
        });
    }

    let mut counts = ChunkCounts {
        series: 1,
        ..ChunkCounts::default()
    };
    for f in Fields::new(series) {
        let f = f?;
        let counter = match f.number {
            TS_SAMPLES => &mut counts.samples,
            TS_EXEMPLARS => &mut counts.exemplars,
            TS_HISTOGRAMS => &mut counts.histograms,
            _ => continue,
        };
        if f.wire != WireType::Len {
            return Err(DecodeError::Protobuf(format!(
                "TimeSeries field {} has the wrong wire type",
                f.number
            )));
        }
        if !point_ok(f.number, f.data) {
            let what = match f.number {
                TS_SAMPLES => "sample",
                TS_EXEMPLARS => "exemplar",
                _ => "histogram",
            };
            return Err(DecodeError::Protobuf(format!(
                "series {}: a {what} is not a valid protobuf message",
                validate::render(labels.iter().copied())
            )));
        }
        *counter = counter.saturating_add(1);
    }
    let points = counts.points();
    if points > opts.limits.max_samples_per_series {
        return Err(DecodeError::Limit {
            series: validate::render(labels.iter().copied()),
            rule: format!(
                "{points} samples in one request, over the limit of {}",
                opts.limits.max_samples_per_series
            ),
        });
    }

    let mut final_labels = labels.clone();
    let rewritten = match &opts.cluster {
        Some(cluster) if !labels.iter().any(|(n, _)| *n == b"cluster") => {
            // In sorted position, as the fast path and the 2.0 path do, so one series has one
            // shard key whichever way it arrived.
            let at = labels.partition_point(|(n, _)| *n < &b"cluster"[..]);
            final_labels.insert(at, (b"cluster", cluster.as_bytes()));
            Some(with_label(series, b"cluster", cluster.as_bytes())?)
        }
        _ => None,
    };
    Ok(Checked::Keep {
        key: pairs_key(final_labels.into_iter()),
        counts,
        min_ts: min_timestamp(series),
        rewritten,
    })
}

/// The shard key of an encoded series (its labels, canonically encoded, as on receipt).
pub(super) fn series_key(series: &[u8]) -> u64 {
    pairs_key(labels(series).unwrap_or_default().into_iter())
}

/// The oldest sample or histogram timestamp of an encoded series, `i64::MAX` when it has none.
pub(super) fn min_timestamp(series: &[u8]) -> i64 {
    Fields::new(series)
        .filter_map(Result::ok)
        .filter_map(|f| match f.number {
            TS_SAMPLES => Some(timestamp_of(f.data, 2).unwrap_or(0)),
            TS_HISTOGRAMS => Some(timestamp_of(f.data, 15).unwrap_or(0)),
            _ => None,
        })
        .min()
        .unwrap_or(i64::MAX)
}

/// An entry for a series read back from a chunk (already validated on receipt).
pub(super) fn series_entry_of(bytes: Bytes) -> Entry {
    let (mut samples, mut histograms, mut exemplars) = (0u32, 0u32, 0u32);
    for f in Fields::new(&bytes).filter_map(Result::ok) {
        match f.number {
            TS_SAMPLES => samples += 1,
            TS_HISTOGRAMS => histograms += 1,
            TS_EXEMPLARS => exemplars += 1,
            _ => {}
        }
    }
    Entry {
        shard_key: series_key(&bytes),
        field: FIELD_TIMESERIES,
        bytes,
        samples,
        histograms,
        exemplars,
    }
}

/// An entry for a metadata message read back from a chunk.
pub(super) fn metadata_entry_of(bytes: Bytes) -> Entry {
    Entry {
        shard_key: metadata_key(&bytes),
        field: FIELD_METADATA,
        bytes,
        samples: 0,
        histograms: 0,
        exemplars: 0,
    }
}

/// Re-encodes a series with one more label, inserted in name order; every other field is
/// copied as it was.
fn with_label(series: &[u8], name: &[u8], value: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut label_msg = Vec::with_capacity(name.len() + value.len() + 4);
    wire::put_len_field(&mut label_msg, 1, name);
    wire::put_len_field(&mut label_msg, 2, value);
    // Insert before the first label whose name sorts after `name`, else after the last label.
    let fields = Fields::new(series).collect::<Result<Vec<_>, _>>()?;
    let mut at = fields
        .iter()
        .rposition(|f| f.number == TS_LABELS)
        .map_or(0, |i| i + 1);
    for (i, f) in fields.iter().enumerate() {
        if f.number == TS_LABELS && label(f.data)?.0 > name {
            at = i;
            break;
        }
    }
    let mut out = Vec::with_capacity(series.len() + label_msg.len() + 4);
    for (i, f) in fields.iter().enumerate() {
        if i == at {
            wire::put_len_field(&mut out, TS_LABELS, &label_msg);
        }
        out.extend_from_slice(f.raw);
    }
    if at == fields.len() {
        wire::put_len_field(&mut out, TS_LABELS, &label_msg);
    }
    Ok(out)
}

/// Checks that the strings of a `MetricMetadata` are UTF-8.
fn check_metadata(meta: &[u8]) -> Result<(), DecodeError> {
    for f in Fields::new(meta) {
        let f = f?;
        // metric_family_name (2), help (4) and unit (5) are strings.
        if f.wire == WireType::Len
            && matches!(f.number, 2 | 4 | 5)
            && std::str::from_utf8(f.data).is_err()
        {
            return Err(DecodeError::Protobuf(format!(
                "metadata field {} is not valid UTF-8",
                f.number
            )));
        }
    }
    Ok(())
}

/// The shard key of a metadata message: its metric family name.
fn metadata_key(meta: &[u8]) -> u64 {
    let family = Fields::new(meta)
        .filter_map(Result::ok)
        .find(|f| f.number == 2 && f.wire == WireType::Len)
        .map_or(&[][..], |f| f.data);
    hash_bytes(&[family])
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

/// Timestamp (ms) of an encoded `Sample` (field 2) or `Histogram` (field 15).
fn timestamp_of(msg: &[u8], field: u32) -> Option<i64> {
    Fields::new(msg)
        .filter_map(Result::ok)
        .find(|f| f.number == field && f.wire == WireType::Varint)
        .map(|f| f.varint as i64)
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

/// Removes repeated (series, timestamp) points from a batch, keeping the first copy: a sender
/// that resends a request promlink had already committed (its answer was lost, or promlink
/// crashed before answering) puts the same samples twice into one upstream request, which the
/// DCE refuses whole with 422. Returns `None` when there is nothing to remove, else the
/// remaining entries and the number of points removed.
pub fn dedupe(entries: &[super::Entry]) -> Option<(Vec<super::Entry>, u64)> {
    use std::collections::HashSet;
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
        let p = retain_points(&e.bytes, |hist, t| seen.insert((labels.clone(), hist, t)));
        match p.bytes {
            None => out.push(e.clone()),
            Some(bytes) => {
                removed += u64::from(p.samples + p.histograms);
                if !p.empty {
                    let mut kept = e.clone();
                    kept.samples -= p.samples;
                    kept.histograms -= p.histograms;
                    kept.bytes = Bytes::from(bytes);
                    out.push(kept);
                }
            }
        }
    }
    (removed > 0).then_some((out, removed))
}

#[cfg(test)]
mod fast_path_tests {
    use super::*;

    /// The one-pass scan and the full path agree on every fixture series, with and without an
    /// added cluster label: same shard key, same bytes, same counts, same oldest timestamp.
    #[test]
    fn fast_and_full_paths_agree() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        for cluster in [None, Some("aks-1"), Some("zzz"), Some("a")] {
            let opts = Options {
                cluster: cluster.map(str::to_string),
                ..Options::default()
            };
            let cluster_field = cluster.map(|c| {
                let mut label = Vec::new();
                wire::put_len_field(&mut label, 1, b"cluster");
                wire::put_len_field(&mut label, 2, c.as_bytes());
                let mut f = Vec::new();
                wire::put_len_field(&mut f, TS_LABELS, &label);
                f
            });
            for name in [
                "prom242_rw1_500samples_a.snappy",
                "prom242_rw1_500samples_b.snappy",
                "prom242_rw1_100_stale_markers.snappy",
            ] {
                let body = std::fs::read(format!("{dir}/{name}")).unwrap();
                let raw = super::super::decompress(&body, 1 << 26).unwrap();
                let mut scratch = Vec::new();
                let mut n = 0;
                for f in Fields::new(&raw) {
                    let f = f.unwrap();
                    if f.number != FIELD_TIMESERIES {
                        continue;
                    }
                    let fast = fast_scan(
                        f.data,
                        &opts,
                        cluster_field.as_deref(),
                        &mut scratch,
                        &mut NameCache::default(),
                    )
                    .expect("fixture series take the fast path");
                    let Checked::Keep {
                        key,
                        counts,
                        min_ts,
                        rewritten,
                    } = check_series(f.data, &opts).unwrap()
                    else {
                        panic!("kept");
                    };
                    assert_eq!(
                        (fast.key, fast.counts, fast.min_ts),
                        (key, counts, min_ts),
                        "{name} {cluster:?}"
                    );
                    let fast_bytes = match (fast.cluster_at, &cluster_field) {
                        (Some(at), Some(c)) => [&f.data[..at], c, &f.data[at..]].concat(),
                        _ => f.data.to_vec(),
                    };
                    assert_eq!(
                        fast_bytes,
                        rewritten.unwrap_or_else(|| f.data.to_vec()),
                        "{name} {cluster:?}"
                    );
                    assert_eq!(series_key(&fast_bytes), key, "key of the bytes sent on");
                    n += 1;
                }
                assert!(n > 0);
            }
        }
    }

    /// Encodings a sender may legally use but the scan does not take (value field present but
    /// empty, a padded varint, labels after samples) go through the full path and keep the
    /// series' shard key.
    #[test]
    fn unusual_encodings_take_the_full_path_with_the_same_key() {
        let label = |n: &[u8], v: &[u8], empty_value_field: bool| {
            let mut m = Vec::new();
            wire::put_len_field(&mut m, 1, n);
            if !v.is_empty() || empty_value_field {
                wire::put_len_field(&mut m, 2, v);
            }
            let mut f = Vec::new();
            wire::put_len_field(&mut f, TS_LABELS, &m);
            f
        };
        let sample = {
            let mut s = vec![0x09];
            s.extend_from_slice(&1.0f64.to_le_bytes());
            s.extend_from_slice(&[0x10, 0x05]);
            let mut f = Vec::new();
            wire::put_len_field(&mut f, TS_SAMPLES, &s);
            f
        };
        let canonical = [
            label(b"__name__", b"up", false),
            label(b"job", b"", false),
            sample.clone(),
        ]
        .concat();
        let opts = Options::default();
        let mut scratch = Vec::new();
        let mut names = NameCache::default();
        let want = fast_scan(&canonical, &opts, None, &mut scratch, &mut names)
            .unwrap()
            .key;
        let empty_value = [
            label(b"__name__", b"up", false),
            label(b"job", b"", true),
            sample.clone(),
        ]
        .concat();
        let mut padded = canonical.clone();
        // The sample's length varint, padded to two bytes.
        let at = padded.len() - sample.len() + 1;
        padded[at] |= 0x80;
        padded.insert(at + 1, 0);
        let late_label = [
            label(b"__name__", b"up", false),
            sample.clone(),
            label(b"job", b"", false),
        ]
        .concat();
        for (what, series) in [
            ("empty value field", empty_value),
            ("padded varint", padded),
            ("label after sample", late_label),
        ] {
            assert!(
                fast_scan(&series, &opts, None, &mut scratch, &mut names).is_none(),
                "{what}"
            );
            let Checked::Keep { key, .. } = check_series(&series, &opts).unwrap() else {
                panic!("{what}: kept");
            };
            assert_eq!(key, want, "{what}");
        }
    }
}
