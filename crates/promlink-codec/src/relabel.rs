//! `write_relabel_configs` on the receive path: the rules run over each validated series (with
//! the `cluster` label already added, as Prometheus applies its external labels before its
//! write relabeling). A series no rule changes keeps the zero-copy path; a changed one is
//! re-encoded with its new labels and checked again; a dropped one is counted.

use promlink_relabel::{Label, Rules, Verdict};

use crate::error::DecodeError;
use crate::key::{labels_key, put_label};
use crate::message::TS_LABELS;
use crate::options::Options;
use crate::validate;
use crate::wire::Fields;

/// What the rules made of one series.
pub(crate) enum Relabeled {
    /// No rule changed it: forward it as it came.
    Unchanged,
    /// A rule dropped it, or no label was left.
    Dropped,
    /// Its labels break the label rules (a rule made an invalid name, or removed the metric
    /// name): dropped, counted apart.
    Invalid,
    /// Its labels (changed or not) break a label limit, or have two names that differ only in
    /// case, and the limits say to drop such series (counted with the other series dropped for
    /// a limit).
    OverLimit,
    /// Changed: the series re-encoded, with its shard key.
    Changed { bytes: Vec<u8>, key: u64 },
}

/// Series and samples the rules removed from a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelabelDrops {
    /// Series dropped by a rule (`drop`, `keep`, `dropequal`, `keepequal`, no label left).
    pub series: u64,
    /// Samples (and histogram samples) of those series.
    pub samples: u64,
    /// Series whose relabeled labels break the label rules, dropped.
    pub invalid_series: u64,
    /// Samples of those series.
    pub invalid_samples: u64,
}

impl RelabelDrops {
    pub(crate) fn count(&mut self, r: &Relabeled, points: usize) {
        match r {
            Relabeled::Dropped => {
                self.series += 1;
                self.samples += points as u64;
            }
            Relabeled::Invalid => {
                self.invalid_series += 1;
                self.invalid_samples += points as u64;
            }
            _ => {}
        }
    }
}

/// The rules to run, if any.
pub(crate) fn rules(opts: &Options) -> Option<&Rules> {
    opts.relabel.as_deref().filter(|r| !r.is_empty())
}

/// Runs `rules` over a series' labels `pairs` (validated, so UTF-8; `cluster` included).
/// `series` is the series encoded as a 1.0 `TimeSeries`: its other fields (samples, exemplars,
/// histograms) are copied after the new labels when the series changed. A changed series meets
/// the label limits of `opts` like any series.
///
/// # Errors
/// [`DecodeError::Limit`] when the changed labels break a limit and such series are refused.
pub(crate) fn relabel_pairs<'p>(
    rules: &Rules,
    opts: &Options,
    pairs: impl Iterator<Item = (&'p [u8], &'p [u8])>,
    series: &[u8],
) -> Result<Relabeled, DecodeError> {
    let mut labels: Vec<Label<'p>> = pairs
        .map(|(n, v)| Label {
            name: String::from_utf8_lossy(n),
            value: String::from_utf8_lossy(v),
        })
        .collect();
    let verdict = rules.apply(&mut labels);
    let as_bytes = || {
        labels
            .iter()
            .map(|l| (l.name.as_bytes(), l.value.as_bytes()))
    };
    let over_limit = |rule: String| {
        if opts.limits.drop_over_limit {
            Ok(Relabeled::OverLimit)
        } else {
            Err(DecodeError::Limit {
                series: validate::render(as_bytes()),
                rule,
            })
        }
    };
    if verdict != Verdict::Drop {
        // Azure's rule on names that differ only in case, on the labels as they now are (a
        // rule may have fixed a collision, or made one).
        if let Some((a, b)) = validate::case_collision(as_bytes().map(|(n, _)| n)) {
            return over_limit(validate::case_rule(a, b));
        }
    }
    Ok(match verdict {
        Verdict::Unchanged => Relabeled::Unchanged,
        Verdict::Drop => Relabeled::Dropped,
        Verdict::Changed => {
            if validate::check_labels(as_bytes()).is_err() {
                return Ok(Relabeled::Invalid);
            }
            if let Some(rule) = opts.limits.check_labels(as_bytes()) {
                return over_limit(rule);
            }
            let mut bytes = Vec::with_capacity(series.len() + 16 * labels.len());
            for (n, v) in as_bytes() {
                put_label(&mut bytes, n, v);
            }
            let key = labels_key(&bytes);
            for f in Fields::new(series).flatten() {
                if f.number != TS_LABELS {
                    bytes.extend_from_slice(f.raw);
                }
            }
            Relabeled::Changed { bytes, key }
        }
    })
}
