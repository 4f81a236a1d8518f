//! Encoded remote write 1.0 messages: the [`Entry`] the decoders hand on, and what the rest
//! of the codec reads back out of an encoded `TimeSeries` or `MetricMetadata` (labels, shard
//! key, timestamps, counts) without decoding it into owned structs.

use bytes::Bytes;

use super::counts::{ChunkCounts, Counts};
use super::error::DecodeError;
use super::key::{hash_bytes, pairs_key};
use super::wire::{self, Fields, WireType};

/// Protobuf field number of `WriteRequest.timeseries`.
pub const FIELD_TIMESERIES: u32 = 1;
/// Protobuf field number of `WriteRequest.metadata`.
pub const FIELD_METADATA: u32 = 3;

/// Label, sample, exemplar and histogram field numbers of `TimeSeries`.
pub(crate) const TS_LABELS: u32 = 1;
pub(crate) const TS_SAMPLES: u32 = 2;
pub(crate) const TS_EXEMPLARS: u32 = 3;
pub(crate) const TS_HISTOGRAMS: u32 = 4;

/// One unit handed from the receiver to the queue: an encoded remote write 1.0 message.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Hash of the series' labels (or the metric family name for metadata); the dispatcher
    /// never has two batches holding the same key in flight, so each series stays in order.
    pub shard_key: u64,
    /// `FIELD_TIMESERIES` or `FIELD_METADATA`: which `WriteRequest` field the bytes belong in.
    pub field: u32,
    /// The encoded message, without its field key and length.
    pub bytes: Bytes,
    /// What the message holds.
    pub counts: ChunkCounts,
}

/// A decoded, validated request.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Entries in the order the sender wrote them.
    pub entries: Vec<Entry>,
    /// Totals over the entries.
    pub counts: Counts,
    /// Series dropped for breaking a label limit (with `drop_over_limit`), not in `entries`.
    pub dropped_series: u64,
    /// Series the relabel rules removed, not in `entries`.
    pub relabel: crate::relabel::RelabelDrops,
}

impl Entry {
    /// An entry for an encoded message read back from a chunk (or an older queue's record);
    /// its counts and shard key are recomputed from the bytes.
    pub fn from_message(field: u32, bytes: Bytes) -> Entry {
        if field == FIELD_METADATA {
            return metadata_entry_of(bytes);
        }
        series_entry_of(bytes)
    }
}

/// An entry for a series read back from a chunk (already validated on receipt).
fn series_entry_of(bytes: Bytes) -> Entry {
    let mut counts = ChunkCounts {
        series: 1,
        ..ChunkCounts::default()
    };
    for f in Fields::new(&bytes).filter_map(Result::ok) {
        match f.number {
            TS_SAMPLES => counts.samples += 1,
            TS_HISTOGRAMS => counts.histograms += 1,
            TS_EXEMPLARS => counts.exemplars += 1,
            _ => {}
        }
    }
    Entry {
        shard_key: series_key(&bytes),
        field: FIELD_TIMESERIES,
        bytes,
        counts,
    }
}

/// An entry for a metadata message read back from a chunk.
fn metadata_entry_of(bytes: Bytes) -> Entry {
    Entry {
        shard_key: metadata_key(&bytes),
        field: FIELD_METADATA,
        bytes,
        counts: ChunkCounts::METADATA,
    }
}

/// One label's name and value, borrowed from the series bytes.
pub(crate) fn label(data: &[u8]) -> Result<(&[u8], &[u8]), DecodeError> {
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
pub(crate) type LabelPair<'a> = (&'a [u8], &'a [u8]);

/// Inserts `cluster="<value>"` into sorted labels `pairs` in its sorted place (as every path
/// adds it, so one series has one key whichever way it came); returns where.
pub(crate) fn insert_cluster<'a>(pairs: &mut Vec<LabelPair<'a>>, value: &'a [u8]) -> usize {
    let at = pairs.partition_point(|(n, _)| *n < &b"cluster"[..]);
    pairs.insert(at, (b"cluster", value));
    at
}

/// Collects the labels of a series (typically 5-20, so a small vector).
pub(crate) fn labels(series: &[u8]) -> Result<Vec<LabelPair<'_>>, DecodeError> {
    labels_of_pieces(&[series])
}

/// The labels of a series given as pieces that each hold whole fields (the sender's bytes with
/// a `cluster` label spliced in between two fields), in order.
pub(crate) fn labels_of_pieces<'p>(pieces: &[&'p [u8]]) -> Result<Vec<LabelPair<'p>>, DecodeError> {
    let mut out = Vec::with_capacity(16);
    for piece in pieces {
        for f in Fields::new(piece) {
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
    }
    Ok(out)
}

/// The shard key of an encoded series (its labels, canonically encoded, as on receipt).
pub(crate) fn series_key(series: &[u8]) -> u64 {
    pairs_key(labels(series).unwrap_or_default().into_iter())
}

/// The oldest sample or histogram timestamp of an encoded series, `i64::MAX` when it has none.
pub(crate) fn min_timestamp(series: &[u8]) -> i64 {
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

/// Timestamp (ms) of an encoded `Sample` (field 2) or `Histogram` (field 15).
pub(crate) fn timestamp_of(msg: &[u8], field: u32) -> Option<i64> {
    Fields::new(msg)
        .filter_map(Result::ok)
        .find(|f| f.number == field && f.wire == WireType::Varint)
        .map(|f| f.varint as i64)
}

/// The shard key of a metadata message: its metric family name.
pub(crate) fn metadata_key(meta: &[u8]) -> u64 {
    let family = Fields::new(meta)
        .filter_map(Result::ok)
        .find(|f| f.number == 2 && f.wire == WireType::Len)
        .map_or(&[][..], |f| f.data);
    hash_bytes(&[family])
}

/// Re-encodes a series with one more label, inserted in name order; every other field is
/// copied as it was.
pub(crate) fn with_label(series: &[u8], name: &[u8], value: &[u8]) -> Result<Vec<u8>, DecodeError> {
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
