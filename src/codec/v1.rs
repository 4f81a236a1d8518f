//! Remote write 1.0: validate `prometheus.WriteRequest` in place and hand on each `TimeSeries`
//! and `MetricMetadata` as the sender encoded it.

use bytes::Bytes;

use super::wire::{self, Fields, WireType};
use super::{
    hash_bytes, validate, Counts, DecodeError, Decoded, Entry, Options, FIELD_METADATA,
    FIELD_TIMESERIES,
};

/// Label, sample, exemplar and histogram field numbers of `TimeSeries`.
const TS_LABELS: u32 = 1;
const TS_SAMPLES: u32 = 2;
const TS_EXEMPLARS: u32 = 3;
const TS_HISTOGRAMS: u32 = 4;

pub(super) fn decode(raw: Bytes, opts: &Options) -> Result<Decoded, DecodeError> {
    let mut out = Decoded::default();
    for field in Fields::new(&raw) {
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
                // The one-pass scan handles every valid series; anything it does not accept
                // goes through the full path, which says exactly what is wrong.
                let entry = match fast_entry(&raw, field.data, opts) {
                    Some(e) => Some(e),
                    None => series_entry(&raw, field.data, opts)?,
                };
                match entry {
                    Some(entry) => {
                        out.counts.series += 1;
                        add_counts(&mut out.counts, &entry);
                        out.entries.push(entry);
                    }
                    None => out.dropped_series += 1,
                }
            }
            (FIELD_METADATA, WireType::Len) => {
                out.entries.push(metadata_entry(&raw, field.data)?);
                out.counts.metadata += 1;
            }
            (FIELD_TIMESERIES | FIELD_METADATA, _) => {
                return Err(DecodeError::Protobuf(format!(
                    "field {} has the wrong wire type",
                    field.number
                )))
            }
            // Unknown fields (including the reserved field 2) are ignored, as protobuf allows.
            _ => {}
        }
    }
    Ok(out)
}

fn add_counts(c: &mut Counts, e: &Entry) {
    c.samples += u64::from(e.samples);
    c.histograms += u64::from(e.histograms);
    c.exemplars += u64::from(e.exemplars);
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

/// Validates one series and makes its entry in a single walk without allocating (unless a
/// `cluster` label must be added). Returns `None` for anything it does not accept (a rule or
/// limit broken, an unexpected wire type): [`series_entry`] then decides, with the message.
/// The shard key is the same as [`series_entry`]'s.
fn fast_entry(raw: &Bytes, series: &[u8], opts: &Options) -> Option<Entry> {
    use std::hash::Hasher;
    let lim = &opts.limits;
    let cluster = opts.cluster.as_deref().map(str::as_bytes);
    let mut h = rustc_hash::FxHasher::default();
    let mut pair = |n: &[u8], v: &[u8]| {
        h.write(n);
        h.write_u8(0xff);
        h.write(v);
        h.write_u8(0xff);
    };
    let mut prev: Option<&[u8]> = None;
    let (mut count, mut has_name) = (0usize, false);
    // None: not decided yet; Some(false): the series has its own; Some(true): added.
    let mut add_cluster: Option<bool> = None;
    let (mut samples, mut histograms, mut exemplars) = (0u32, 0u32, 0u32);
    for f in Fields::new(series) {
        let f = f.ok()?;
        match f.number {
            TS_LABELS => {
                if f.wire != WireType::Len {
                    return None;
                }
                let (n, v) = label(f.data).ok()?;
                if n.len() > lim.max_name_len
                    || v.len() > lim.max_value_len
                    || !validate::is_label_name(n)
                    || std::str::from_utf8(v).is_err()
                    || prev.is_some_and(|p| n <= p)
                {
                    return None;
                }
                if n == b"__name__" {
                    if !validate::is_metric_name(v) {
                        return None;
                    }
                    has_name = true;
                }
                if let (Some(c), None) = (cluster, add_cluster) {
                    if n == b"cluster" {
                        add_cluster = Some(false);
                    } else if n > &b"cluster"[..] {
                        pair(b"cluster", c);
                        add_cluster = Some(true);
                    }
                }
                pair(n, v);
                prev = Some(n);
                count += 1;
            }
            TS_SAMPLES | TS_EXEMPLARS | TS_HISTOGRAMS => {
                if f.wire != WireType::Len || !point_ok(f.number, f.data) {
                    return None;
                }
                let c = match f.number {
                    TS_SAMPLES => &mut samples,
                    TS_EXEMPLARS => &mut exemplars,
                    _ => &mut histograms,
                };
                *c = c.saturating_add(1);
            }
            _ => {}
        }
    }
    if !has_name
        || count > lim.max_labels
        || samples as usize + histograms as usize > lim.max_samples_per_series
    {
        return None;
    }
    if let (Some(c), None) = (cluster, add_cluster) {
        pair(b"cluster", c);
        add_cluster = Some(true);
    }
    let bytes = match (add_cluster, cluster) {
        (Some(true), Some(c)) => Bytes::from(with_label(series, b"cluster", c).ok()?),
        _ => raw.slice_ref(series),
    };
    Some(Entry {
        shard_key: h.finish(),
        field: FIELD_TIMESERIES,
        bytes,
        samples,
        histograms,
        exemplars,
    })
}

/// Validates one series and makes its entry; `None` when it breaks a label limit and the
/// limits say to drop such series.
fn series_entry(raw: &Bytes, series: &[u8], opts: &Options) -> Result<Option<Entry>, DecodeError> {
    let labels = labels(series)?;
    validate::check_labels(labels.iter().copied())?;
    if let Some(rule) = opts.limits.check_labels(labels.iter().copied()) {
        if opts.limits.drop_over_limit {
            return Ok(None);
        }
        return Err(DecodeError::Limit {
            series: validate::render(labels.iter().copied()),
            rule,
        });
    }

    let (mut samples, mut histograms, mut exemplars) = (0u32, 0u32, 0u32);
    for f in Fields::new(series) {
        let f = f?;
        let counter = match f.number {
            TS_SAMPLES => &mut samples,
            TS_EXEMPLARS => &mut exemplars,
            TS_HISTOGRAMS => &mut histograms,
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
    let points = samples as usize + histograms as usize;
    if points > opts.limits.max_samples_per_series {
        return Err(DecodeError::Limit {
            series: validate::render(labels.iter().copied()),
            rule: format!(
                "{points} samples in one request, over the limit of {}",
                opts.limits.max_samples_per_series
            ),
        });
    }

    let mut key_parts: Vec<&[u8]> = Vec::with_capacity(labels.len() * 2 + 2);
    for (n, v) in &labels {
        key_parts.push(n);
        key_parts.push(v);
    }
    let bytes = match &opts.cluster {
        Some(cluster) if !labels.iter().any(|(n, _)| *n == b"cluster") => {
            // Hash in sorted position, as the 2.0 path does, so one series has one shard key
            // whichever protocol it arrived in.
            let at = 2 * labels.partition_point(|(n, _)| *n < &b"cluster"[..]);
            key_parts.insert(at, cluster.as_bytes());
            key_parts.insert(at, b"cluster");
            Bytes::from(with_label(series, b"cluster", cluster.as_bytes())?)
        }
        _ => raw.slice_ref(series),
    };
    // The shard key is over the labels as sent (plus the added cluster label): the same series
    // always lands in the same shard.
    let shard_key = hash_bytes(&key_parts);
    Ok(Some(Entry {
        shard_key,
        field: FIELD_TIMESERIES,
        bytes,
        samples,
        histograms,
        exemplars,
    }))
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

fn metadata_entry(raw: &Bytes, meta: &[u8]) -> Result<Entry, DecodeError> {
    let mut family: &[u8] = &[];
    for f in Fields::new(meta) {
        let f = f?;
        if f.wire == WireType::Len {
            // metric_family_name (2), help (4) and unit (5) are strings.
            if matches!(f.number, 2 | 4 | 5) && std::str::from_utf8(f.data).is_err() {
                return Err(DecodeError::Protobuf(format!(
                    "metadata field {} is not valid UTF-8",
                    f.number
                )));
            }
            if f.number == 2 {
                family = f.data;
            }
        }
    }
    Ok(Entry {
        shard_key: hash_bytes(&[family]),
        field: FIELD_METADATA,
        bytes: raw.slice_ref(meta),
        samples: 0,
        histograms: 0,
        exemplars: 0,
    })
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
    /// added cluster label: same shard key, same bytes, same counts.
    #[test]
    fn fast_and_full_paths_agree() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        for cluster in [None, Some("aks-1".to_string()), Some("zzz".to_string())] {
            let opts = Options {
                cluster: cluster.clone(),
                ..Options::default()
            };
            for name in [
                "prom242_rw1_500samples_a.snappy",
                "prom242_rw1_500samples_b.snappy",
                "prom242_rw1_100_stale_markers.snappy",
            ] {
                let body = std::fs::read(format!("{dir}/{name}")).unwrap();
                let raw = Bytes::from(super::super::decompress(&body, 1 << 26).unwrap());
                let mut n = 0;
                for f in Fields::new(&raw) {
                    let f = f.unwrap();
                    if f.number != FIELD_TIMESERIES {
                        continue;
                    }
                    let fast =
                        fast_entry(&raw, f.data, &opts).expect("fixture series take the fast path");
                    let full = series_entry(&raw, f.data, &opts).unwrap().unwrap();
                    assert_eq!(
                        (fast.shard_key, &fast.bytes, fast.samples),
                        (full.shard_key, &full.bytes, full.samples),
                        "{name} {cluster:?}"
                    );
                    n += 1;
                }
                assert!(n > 0);
            }
        }
    }
}
