//! Remote write 2.0: decode `io.prometheus.write.v2.Request` and translate it to 1.0 messages.
//!
//! Symbols become label strings; samples, native histograms and exemplars map field for field;
//! per-series metadata becomes one 1.0 `MetricMetadata` per metric family and request.
//! `Sample.start_timestamp`, `Histogram.start_timestamp` and the older
//! `TimeSeries.created_timestamp` have no place in 1.0 and are not forwarded.

use std::collections::HashSet;

use bytes::Bytes;
use prost::Message;

use super::counts::ChunkCounts;
use super::error::DecodeError;
use super::key::{hash_bytes, pairs_key};
use super::message::{Decoded, Entry, FIELD_METADATA, FIELD_TIMESERIES};
use super::options::Options;
use super::protocol::{wrong_version, Protocol};
use super::relabel::{self, relabel_pairs, Relabeled};
use super::validate;
use super::wire::{Fields, WireType};
use crate::proto::{v1, v2};

/// Decodes, validates and translates a 2.0 request.
pub(super) fn decode(raw: &[u8], opts: &Options) -> Result<Decoded, DecodeError> {
    // A 1.0 body under the 2.0 content type would otherwise be accepted as empty (fields 1
    // to 3 are reserved in 2.0).
    for f in Fields::new(raw) {
        if matches!(f, Ok(f) if matches!(f.number, 1 | 3) && f.wire == WireType::Len) {
            return Err(wrong_version(Protocol::V2));
        }
    }
    let req = v2::Request::decode(raw).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
    let sym = Symbols::new(&req.symbols)?;
    let mut out = Decoded::default();
    let mut metadata = Families::default();
    if req.timeseries.len() > opts.limits.max_series {
        return Err(DecodeError::TooManySeries {
            limit: opts.limits.max_series,
        });
    }
    for ts in &req.timeseries {
        let Some(pairs) = series_labels(ts, &sym, opts)? else {
            out.dropped_series += 1;
            continue;
        };
        let mut entry = series_entry(ts, &pairs, &sym)?;
        if let Some(rules) = relabel::rules(opts) {
            let as_bytes: Vec<_> = pairs
                .iter()
                .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
                .collect();
            match relabel_pairs(rules, opts, &as_bytes, &[&entry.bytes])? {
                Relabeled::Unchanged => {}
                Relabeled::Changed { bytes, key } => {
                    entry.bytes = Bytes::from(bytes);
                    entry.shard_key = key;
                }
                Relabeled::OverLimit => {
                    out.dropped_series += 1;
                    continue;
                }
                other => {
                    out.relabel.count(&other, entry.counts.points());
                    continue;
                }
            }
        }
        out.counts.add(&entry.counts);
        out.entries.push(entry);
        if let Some(md) = &ts.metadata {
            let name = pairs
                .iter()
                .find(|(n, _)| *n == "__name__")
                .map_or("", |(_, v)| *v);
            metadata.add(md, name, &sym)?;
        }
    }
    for md in metadata.list {
        out.entries.push(Entry {
            shard_key: hash_bytes(&[md.metric_family_name.as_bytes()]),
            field: FIELD_METADATA,
            bytes: Bytes::from(md.encode_to_vec()),
            counts: ChunkCounts::METADATA,
        });
        out.counts.metadata += 1;
    }
    Ok(out)
}

/// The request's symbol table.
struct Symbols<'a>(&'a [String]);

impl<'a> Symbols<'a> {
    fn new(symbols: &'a [String]) -> Result<Self, DecodeError> {
        if symbols.first().is_some_and(|s| !s.is_empty()) {
            return Err(DecodeError::Protobuf(
                "symbols[0] must be the empty string".into(),
            ));
        }
        Ok(Self(symbols))
    }

    fn get(&self, r: u32) -> Result<&'a str, DecodeError> {
        self.0.get(r as usize).map(String::as_str).ok_or_else(|| {
            DecodeError::Protobuf(format!(
                "symbol reference {r} is out of range ({} symbols)",
                self.0.len()
            ))
        })
    }

    /// The (name, value) pairs of a `labels_refs` list; `what` names the list in the error
    /// for an odd length.
    fn pairs(&self, refs: &[u32], what: &str) -> Result<Vec<(&'a str, &'a str)>, DecodeError> {
        if !refs.len().is_multiple_of(2) {
            return Err(DecodeError::Protobuf(format!(
                "{what} has an odd number of entries"
            )));
        }
        let mut pairs = Vec::with_capacity(refs.len() / 2 + 1);
        for pair in refs.chunks_exact(2) {
            pairs.push((self.get(pair[0])?, self.get(pair[1])?));
        }
        Ok(pairs)
    }
}

/// The labels of a series, checked against the rules and limits, with the `cluster` label added
/// when configured; `None` when the series breaks a label limit and such series are dropped.
fn series_labels<'a>(
    ts: &v2::TimeSeries,
    sym: &Symbols<'a>,
    opts: &'a Options,
) -> Result<Option<Vec<(&'a str, &'a str)>>, DecodeError> {
    let mut pairs = sym.pairs(&ts.labels_refs, "labels_refs")?;
    let as_bytes = || pairs.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
    validate::check_labels(as_bytes())?;
    if let Some(rule) = opts.limits.check_labels(as_bytes()) {
        if opts.limits.drop_over_limit {
            return Ok(None);
        }
        return Err(DecodeError::Limit {
            series: validate::render(as_bytes()),
            rule,
        });
    }
    if relabel::rules(opts).is_none() {
        if let Some((a, b)) = validate::case_collision(pairs.iter().map(|(n, _)| n.as_bytes())) {
            if opts.limits.drop_over_limit {
                return Ok(None);
            }
            return Err(DecodeError::Limit {
                series: validate::render(as_bytes()),
                rule: validate::case_rule(a, b),
            });
        }
    }
    let points = ts.samples.len() + ts.histograms.len();
    if points > opts.limits.max_samples_per_series {
        return Err(DecodeError::Limit {
            series: validate::render(as_bytes()),
            rule: format!(
                "{points} samples in one request, over the limit of {}",
                opts.limits.max_samples_per_series
            ),
        });
    }
    if let Some(cluster) = &opts.cluster {
        if !pairs.iter().any(|(n, _)| *n == "cluster") {
            let at = pairs.partition_point(|(n, _)| *n < "cluster");
            pairs.insert(at, ("cluster", cluster.as_str()));
        }
    }
    Ok(Some(pairs))
}

/// The 1.0 `TimeSeries` entry of a 2.0 series whose labels are `pairs`.
fn series_entry(
    ts: &v2::TimeSeries,
    pairs: &[(&str, &str)],
    sym: &Symbols<'_>,
) -> Result<Entry, DecodeError> {
    let labels: Vec<v1::Label> = pairs
        .iter()
        .map(|(n, v)| v1::Label {
            name: (*n).to_string(),
            value: (*v).to_string(),
        })
        .collect();
    let exemplars = ts
        .exemplars
        .iter()
        .map(|e| {
            let labels = sym
                .pairs(&e.labels_refs, "exemplar labels_refs")?
                .into_iter()
                .map(|(name, value)| v1::Label {
                    name: name.to_string(),
                    value: value.to_string(),
                })
                .collect();
            Ok(v1::Exemplar {
                labels,
                value: e.value,
                timestamp: e.timestamp,
            })
        })
        .collect::<Result<Vec<_>, DecodeError>>()?;
    let series = v1::TimeSeries {
        labels,
        samples: ts
            .samples
            .iter()
            .map(|s| v1::Sample {
                value: s.value,
                timestamp: s.timestamp,
            })
            .collect(),
        exemplars,
        histograms: ts.histograms.iter().map(histogram).collect(),
    };
    Ok(Entry {
        shard_key: pairs_key(pairs.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()))),
        field: FIELD_TIMESERIES,
        counts: ChunkCounts {
            series: 1,
            samples: count(series.samples.len()),
            histograms: count(series.histograms.len()),
            exemplars: count(series.exemplars.len()),
            metadata: 0,
        },
        bytes: Bytes::from(series.encode_to_vec()),
    })
}

/// The 1.0 metadata of a request: one `MetricMetadata` per metric family, in the order the
/// families first appear.
#[derive(Default)]
struct Families {
    seen: HashSet<String>,
    list: Vec<v1::MetricMetadata>,
}

impl Families {
    /// Adds the metadata of a series named `name`, unless it says nothing or its family has some.
    fn add(&mut self, md: &v2::Metadata, name: &str, sym: &Symbols<'_>) -> Result<(), DecodeError> {
        let (help, unit) = (sym.get(md.help_ref)?, sym.get(md.unit_ref)?);
        let unspecified = md.r#type == v2::metadata::MetricType::Unspecified as i32;
        if unspecified && help.is_empty() && unit.is_empty() {
            return Ok(());
        }
        let family = family_name(name, md.r#type);
        if self.seen.insert(family.to_string()) {
            self.list.push(v1::MetricMetadata {
                r#type: md.r#type,
                metric_family_name: family.to_string(),
                help: help.to_string(),
                unit: unit.to_string(),
            });
        }
        Ok(())
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The metric family a series belongs to: classic histogram and summary series carry a suffix.
fn family_name(series_name: &str, metric_type: i32) -> &str {
    use v2::metadata::MetricType;
    let suffixes: &[&str] = if metric_type == MetricType::Histogram as i32
        || metric_type == MetricType::Gaugehistogram as i32
    {
        &["_bucket", "_sum", "_count"]
    } else if metric_type == MetricType::Summary as i32 {
        &["_sum", "_count"]
    } else {
        &[]
    };
    suffixes
        .iter()
        .find_map(|s| series_name.strip_suffix(s))
        .unwrap_or(series_name)
}

fn histogram(h: &v2::Histogram) -> v1::Histogram {
    use v1::histogram::{Count, ZeroCount};
    use v2::histogram as h2;
    let spans = |s: &[v2::BucketSpan]| {
        s.iter()
            .map(|b| v1::BucketSpan {
                offset: b.offset,
                length: b.length,
            })
            .collect()
    };
    v1::Histogram {
        count: h.count.map(|c| match c {
            h2::Count::CountInt(n) => Count::CountInt(n),
            h2::Count::CountFloat(f) => Count::CountFloat(f),
        }),
        sum: h.sum,
        schema: h.schema,
        zero_threshold: h.zero_threshold,
        zero_count: h.zero_count.map(|c| match c {
            h2::ZeroCount::ZeroCountInt(n) => ZeroCount::ZeroCountInt(n),
            h2::ZeroCount::ZeroCountFloat(f) => ZeroCount::ZeroCountFloat(f),
        }),
        negative_spans: spans(&h.negative_spans),
        negative_deltas: h.negative_deltas.clone(),
        negative_counts: h.negative_counts.clone(),
        positive_spans: spans(&h.positive_spans),
        positive_deltas: h.positive_deltas.clone(),
        positive_counts: h.positive_counts.clone(),
        // The 1.0 and 2.0 enums share their numbering (unknown, yes, no, gauge).
        reset_hint: h.reset_hint,
        timestamp: h.timestamp,
        custom_values: h.custom_values.clone(),
    }
}
