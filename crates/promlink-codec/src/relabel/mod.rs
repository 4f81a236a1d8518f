//! `write_relabel_configs` on the receive path: the rules run over each validated series (with
//! the `cluster` label already added, as Prometheus applies its external labels before its
//! write relabeling). A series no rule changes keeps the zero-copy path; a changed one is
//! re-encoded with its new labels and checked again; a dropped one is counted.
//!
//! What the rules make of a label set is remembered in a bounded [`cache`], so a series seen
//! before (every scrape sends the same ones) skips the rules and the checks.

mod cache;

use std::borrow::Cow;
use std::cell::RefCell;

use promlink_relabel::{Label, Rules, Verdict};

pub use cache::{CacheStats, DEFAULT_CACHE_BYTES};

use crate::error::DecodeError;
use crate::key::{labels_key, put_label};
use crate::message::{LabelPair, TS_LABELS};
use crate::options::Options;
use crate::validate;
use crate::wire::Fields;
use cache::{ops, Kind, OutcomeCache};

/// What the rules made of one series.
pub(crate) enum Relabeled {
    /// No rule changed it (or the rules changed it back): forward it as it came.
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

/// Rules, with the cache of what they make of each label set.
pub struct Relabel {
    rules: Rules,
    cache: Option<OutcomeCache>,
}

impl Relabel {
    /// `rules` with a cache of at most [`DEFAULT_CACHE_BYTES`].
    pub fn new(rules: Rules) -> Self {
        Self::with_cache_bytes(rules, DEFAULT_CACHE_BYTES)
    }

    /// `rules` with a cache of at most `bytes` (none when `bytes` is under the smallest table,
    /// about 129 KiB: two sets of eight slots per lock).
    pub fn with_cache_bytes(rules: Rules, bytes: usize) -> Self {
        let cache = if rules.is_empty() {
            None
        } else {
            OutcomeCache::new(bytes)
        };
        Self { rules, cache }
    }

    /// The rules.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The most memory the cache takes (0: no cache).
    pub fn cache_capacity_bytes(&self) -> usize {
        self.cache.as_ref().map_or(0, OutcomeCache::capacity_bytes)
    }

    /// What the cache did so far.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache
            .as_ref()
            .map_or_else(CacheStats::default, OutcomeCache::stats)
    }
}

impl std::ops::Deref for Relabel {
    type Target = Rules;

    fn deref(&self) -> &Rules {
        &self.rules
    }
}

/// Only the rules: two `Relabel`s with the same rules print the same (the configuration
/// reload compares them so).
impl std::fmt::Debug for Relabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.rules.fmt(f)
    }
}

/// The rules to run, if any.
pub(crate) fn rules(opts: &Options) -> Option<&Relabel> {
    opts.relabel.as_deref().filter(|r| !r.is_empty())
}

thread_local! {
    /// The canonical label bytes a cache key is hashed from, reused.
    static CANONICAL: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs the rules of `relabel` over a series' labels `pairs` (validated, so UTF-8; `cluster`
/// included), or reuses what they made of the same labels before. `series` is the series
/// encoded as a 1.0 `TimeSeries`, in pieces that each hold whole fields: its other fields
/// (samples, exemplars, histograms) are copied after the new labels when the series changed.
/// A changed series meets the label limits of `opts` like any series.
///
/// # Errors
/// [`DecodeError::Limit`] when the changed labels break a limit and such series are refused.
pub(crate) fn relabel_pairs(
    relabel: &Relabel,
    opts: &Options,
    pairs: &[LabelPair<'_>],
    series: &[&[u8]],
) -> Result<Relabeled, DecodeError> {
    let Some(cache) = &relabel.cache else {
        return run_rules(&relabel.rules, opts, pairs, series).map(|(r, _)| r);
    };
    let hash = CANONICAL.with_borrow_mut(|buf| {
        buf.clear();
        for (n, v) in pairs {
            put_label(buf, n, v);
        }
        cache.hash(buf, &opts.limits)
    });
    let other_fields = |bytes: &mut Vec<u8>| append_other_fields(bytes, series);
    if let Some(hit) = cache.get(hash) {
        if let Some(r) = answer(&hit, pairs, &[], series_len(series), other_fields) {
            return Ok(r);
        }
    }
    let (outcome, ops) = run_rules(&relabel.rules, opts, pairs, series)?;
    remember(cache, hash, &outcome, ops);
    Ok(outcome)
}

/// [`relabel_pairs`] for a series the one-pass scan accepted, whose labels are all in
/// `series[..labels_end]` and nothing else is: the cache key is hashed from those bytes as
/// they came (with `cluster`, added when given), so a series seen before is answered without
/// reading its labels, unless it changes. `ahead` is that key when [`Ahead`] already hashed it.
///
/// # Errors
/// As [`relabel_pairs`], or [`DecodeError::Protobuf`] when the labels do not parse (never for
/// a series the scan accepted).
pub(crate) fn relabel_scanned(
    relabel: &Relabel,
    opts: &Options,
    series: &[u8],
    labels_end: usize,
    cluster: Option<&str>,
    ahead: Option<u128>,
) -> Result<Relabeled, DecodeError> {
    let (labels, rest) = series.split_at(labels_end.min(series.len()));
    // The labels, with each one's field as the sender encoded it (none for `cluster`).
    let pairs = || -> Result<Scanned<'_>, DecodeError> {
        let (mut pairs, mut raw) = scanned_labels(labels)?;
        if let Some(c) = cluster {
            let at = crate::message::insert_cluster(&mut pairs, c.as_bytes());
            if at <= raw.len() {
                raw.insert(at, None);
            }
        }
        Ok((pairs, raw))
    };
    let Some(cache) = &relabel.cache else {
        return run_rules(&relabel.rules, opts, &pairs()?.0, &[series]).map(|(r, _)| r);
    };
    let hash = ahead.unwrap_or_else(|| cache.hash_with(labels, &opts.limits, cluster));
    if let Some(hit) = cache.get(hash) {
        let (pairs, raw) = match hit.kind {
            Kind::Changed => pairs()?,
            Kind::Unchanged | Kind::Dropped => (Vec::new(), Vec::new()),
        };
        let other_fields = |bytes: &mut Vec<u8>| bytes.extend_from_slice(rest);
        if let Some(r) = answer(&hit, &pairs, &raw, series.len(), other_fields) {
            return Ok(r);
        }
    }
    let (outcome, ops) = run_rules(&relabel.rules, opts, &pairs()?.0, &[series])?;
    remember(cache, hash, &outcome, ops);
    Ok(outcome)
}

/// The cache keys of a request's series, hashed before the walk; the walk takes each series'
/// key from here instead of hashing it again, and each time it reaches a new run of
/// [`Ahead::RUN`] series, the cache's memory for the whole run is read at once
/// ([`OutcomeCache::warm`]).
pub(crate) struct Ahead<'r> {
    cache: Option<&'r OutcomeCache>,
    /// Per `TimeSeries` field of the request, in order: where its leading label fields end,
    /// and the key of those bytes.
    keys: Vec<(usize, u128)>,
    /// Whether the keys were hashed with the `cluster` label added.
    cluster: bool,
    /// Keys before this one are warmed.
    warmed: usize,
}

impl<'r> Ahead<'r> {
    /// Series warmed at once: their cache lines (six each) stay well within the CPU's cache.
    const RUN: usize = 32;

    /// Hashes the leading label fields of each series in the 1.0 `WriteRequest` `raw` as
    /// [`relabel_scanned`] would with `cluster` added. Empty without a cache; stops at the
    /// first field that does not parse (the walk refuses the request there).
    pub(crate) fn new(
        relabel: &'r Relabel,
        opts: &Options,
        raw: &[u8],
        cluster: Option<&str>,
    ) -> Ahead<'r> {
        let mut ahead = Ahead {
            cache: relabel.cache.as_ref(),
            keys: Vec::new(),
            cluster: cluster.is_some(),
            warmed: 0,
        };
        let Some(cache) = ahead.cache else {
            return ahead;
        };
        for field in Fields::new(raw) {
            let Ok(field) = field else { break };
            if field.number != crate::message::FIELD_TIMESERIES
                || field.wire != crate::wire::WireType::Len
            {
                continue;
            }
            // The walk refuses a request with more series (see `SeriesCache::session`).
            if ahead.keys.len() > opts.limits.max_series {
                break;
            }
            let series = field.data;
            let mut i = 0;
            let mut end = 0;
            while series.get(i) == Some(&0x0a) {
                i += 1;
                if crate::wire::len_at(series, &mut i).is_none() {
                    break;
                }
                end = i;
            }
            let key = cache.hash_with(&series[..end], &opts.limits, cluster);
            ahead.keys.push((end, key));
        }
        ahead
    }

    /// The key of the `index`th series, when it was hashed as [`relabel_scanned`] will hash
    /// it: the same label bytes (`labels_end`) and the same `cluster` choice.
    pub(crate) fn key(&mut self, index: usize, labels_end: usize, cluster: bool) -> Option<u128> {
        if index >= self.warmed {
            if let Some(cache) = self.cache {
                let run = self.keys.get(index..).unwrap_or_default();
                let run = &run[..run.len().min(Self::RUN)];
                let touched = run.iter().fold(0, |t, &(_, key)| t ^ cache.warm(key));
                std::hint::black_box(touched);
                self.warmed = index + Self::RUN;
            }
        }
        let &(end, key) = self.keys.get(index)?;
        (end == labels_end && cluster == self.cluster).then_some(key)
    }
}

/// A series' labels, and each one's field as the sender encoded it (`None`: not known, or
/// added by promlink).
type Scanned<'a> = (Vec<LabelPair<'a>>, Vec<Option<&'a [u8]>>);

/// The labels of a labels section the one-pass scan accepted (each label canonically
/// encoded, one after another), with each label's field as encoded; anything else takes the
/// full parse (and gives no fields).
fn scanned_labels(section: &[u8]) -> Result<Scanned<'_>, DecodeError> {
    let mut pairs = Vec::with_capacity(16);
    let mut raw = Vec::with_capacity(16);
    let mut i = 0;
    while i < section.len() {
        let start = i;
        let label = (section[i] == 0x0a)
            .then(|| {
                i += 1;
                crate::wire::len_at(section, &mut i)
            })
            .flatten()
            .and_then(crate::wire::fast_label);
        match label {
            Some((_, n, v)) => {
                pairs.push((n, v));
                raw.push(section.get(start..i));
            }
            None => return Ok((crate::message::labels(section)?, Vec::new())),
        }
    }
    Ok((pairs, raw))
}

fn series_len(series: &[&[u8]]) -> usize {
    series.iter().map(|s| s.len()).sum()
}

/// The outcome a cache hit gives: for a changed series, its new labels written from `pairs`
/// by the hit's ops (a label kept whole copied from its field in `raw`, when there is one),
/// then `other_fields`. `None` when the ops do not fit `pairs`, which would
/// mean two label sets share a hash: the caller runs the rules instead.
fn answer(
    hit: &cache::Hit,
    pairs: &[LabelPair<'_>],
    raw: &[Option<&[u8]>],
    len: usize,
    other_fields: impl FnOnce(&mut Vec<u8>),
) -> Option<Relabeled> {
    match hit.kind {
        Kind::Unchanged => Some(Relabeled::Unchanged),
        Kind::Dropped => Some(Relabeled::Dropped),
        Kind::Changed => {
            let mut bytes = Vec::with_capacity(len + 64);
            let write = |i: Option<usize>, n: &[u8], v: &[u8]| match i
                .and_then(|i| raw.get(i).copied().flatten())
            {
                Some(field) => bytes.extend_from_slice(field),
                None => put_label(&mut bytes, n, v),
            };
            if !ops::decode(hit.ops(), pairs, write) {
                return None;
            }
            other_fields(&mut bytes);
            Some(Relabeled::Changed {
                bytes,
                key: hit.key,
            })
        }
    }
}

/// Stores what the rules made of a label set. Invalid and over-limit series are rare: they
/// run the rules each time, so the error or count they give is always made afresh.
fn remember(cache: &OutcomeCache, hash: u128, outcome: &Relabeled, ops: Option<Vec<u8>>) {
    match (outcome, ops) {
        (Relabeled::Unchanged, _) => cache.put(hash, Kind::Unchanged, 0, &[]),
        (Relabeled::Dropped, _) => cache.put(hash, Kind::Dropped, 0, &[]),
        (Relabeled::Changed { key, .. }, Some(ops)) => cache.put(hash, Kind::Changed, *key, &ops),
        _ => {}
    }
}

/// Runs `rules` over `pairs` (see [`relabel_pairs`]); for a changed series, also the ops that
/// write its new labels from `pairs` (`None` when they do not fit a cache slot).
fn run_rules(
    rules: &Rules,
    opts: &Options,
    pairs: &[LabelPair<'_>],
    series: &[&[u8]],
) -> Result<(Relabeled, Option<Vec<u8>>), DecodeError> {
    // Validated, so UTF-8: `from_utf8` checks that at word speed (the lossy reading goes byte
    // by byte), and the lossy reading only stands behind it.
    fn text(b: &[u8]) -> Cow<'_, str> {
        std::str::from_utf8(b).map_or_else(|_| String::from_utf8_lossy(b), Cow::Borrowed)
    }
    let mut labels: Vec<Label<'_>> = pairs
        .iter()
        .map(|(n, v)| Label {
            name: text(n),
            value: text(v),
        })
        .collect();
    let mut verdict = rules.apply(&mut labels);
    // Rules that change a series and change it back (a label added, then dropped) leave the
    // sender's bytes right: they are forwarded as they came.
    if verdict == Verdict::Changed
        && labels.len() == pairs.len()
        && labels
            .iter()
            .zip(pairs)
            .all(|(l, (n, v))| l.name.as_bytes() == *n && l.value.as_bytes() == *v)
    {
        verdict = Verdict::Unchanged;
    }
    let as_bytes = || {
        labels
            .iter()
            .map(|l| (l.name.as_bytes(), l.value.as_bytes()))
    };
    let over_limit = |rule: String| {
        if opts.limits.drop_over_limit {
            Ok((Relabeled::OverLimit, None))
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
        Verdict::Unchanged => (Relabeled::Unchanged, None),
        Verdict::Drop => (Relabeled::Dropped, None),
        Verdict::Changed => {
            if validate::check_labels(as_bytes()).is_err() {
                return Ok((Relabeled::Invalid, None));
            }
            if let Some(rule) = opts.limits.check_labels(as_bytes()) {
                return over_limit(rule);
            }
            let mut bytes = Vec::with_capacity(
                series.iter().map(|s| s.len()).sum::<usize>() + 16 * labels.len(),
            );
            for (n, v) in as_bytes() {
                put_label(&mut bytes, n, v);
            }
            let key = labels_key(&bytes);
            append_other_fields(&mut bytes, series);
            let mut ops = Vec::with_capacity(cache::MAX_OPS);
            let ops = ops::encode(pairs, as_bytes(), &mut ops, cache::MAX_OPS).then_some(ops);
            (Relabeled::Changed { bytes, key }, ops)
        }
    })
}

/// Appends every field of `series` (in pieces of whole fields) but its labels.
fn append_other_fields(bytes: &mut Vec<u8>, series: &[&[u8]]) {
    for piece in series {
        for f in Fields::new(piece).flatten() {
            if f.number != TS_LABELS {
                bytes.extend_from_slice(f.raw);
            }
        }
    }
}

#[cfg(test)]
mod tests;
