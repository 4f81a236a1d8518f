//! The full path: validates one series with a precise error for anything wrong, for the
//! series the one-pass scan did not accept.

use crate::counts::ChunkCounts;
use crate::error::DecodeError;
use crate::key::pairs_key;
use crate::message::{labels, min_timestamp, with_label, TS_EXEMPLARS, TS_HISTOGRAMS, TS_SAMPLES};
use crate::options::Options;
use crate::validate;
use crate::wire::{Fields, WireType};

/// Whether an encoded `Sample` (`TS_SAMPLES`), `Exemplar` or `Histogram` is well-formed
/// protobuf with the wire types 1.0 gives its fields (a sample: `double value = 1`, `int64
/// timestamp = 2`). Checked on receipt so a malformed point is refused at the edge instead of
/// making the upstream refuse a whole batch shared with other senders' data.
pub(super) fn point_ok(kind: u32, msg: &[u8]) -> bool {
    Fields::new(msg).all(|f| match f {
        Err(_) => false,
        Ok(f) => match (kind, f.number) {
            (TS_SAMPLES, 1) => f.wire == WireType::Fixed64,
            (TS_SAMPLES, 2) => f.wire == WireType::Varint,
            _ => true,
        },
    })
}

/// What the full path decided about a series.
pub(super) enum Checked {
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
pub(super) fn check_series(series: &[u8], opts: &Options) -> Result<Checked, DecodeError> {
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

    if crate::relabel::rules(opts).is_none() {
        if let Some((a, b)) = validate::case_collision(labels.iter().map(|(n, _)| *n)) {
            if opts.limits.drop_over_limit {
                return Ok(Checked::Drop);
            }
            return Err(DecodeError::Limit {
                series: validate::render(labels.iter().copied()),
                rule: validate::case_rule(a, b),
            });
        }
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
            crate::message::insert_cluster(&mut final_labels, cluster.as_bytes());
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

/// Checks that the strings of a `MetricMetadata` are UTF-8.
pub(super) fn check_metadata(meta: &[u8]) -> Result<(), DecodeError> {
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
