//! The one-pass scan: validates a series the way senders encode it in a single walk, without
//! allocating, and computes its shard key as it goes. Anything it does not accept goes to the
//! full path ([`super::check`]), which decides with a precise message.

use super::check::point_ok;
use crate::counts::ChunkCounts;
use crate::key::labels_key;
use crate::message::{timestamp_of, TS_EXEMPLARS, TS_HISTOGRAMS};
use crate::options::Options;
use crate::validate;
use crate::wire::{fast_label, len_at, varint_at};

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
pub(super) struct Scan {
    pub(super) key: u64,
    pub(super) counts: ChunkCounts,
    pub(super) min_ts: i64,
    /// Where the `cluster` label must be spliced in, when one is configured and missing.
    pub(super) cluster_at: Option<usize>,
    /// Where the labels end: every label is before, none after.
    pub(super) labels_end: usize,
}

/// Validates one series in a single walk without allocating and computes its shard key (the
/// same as [`check_series`]'s: a hash of the canonical label bytes, which the scan checks the
/// sender wrote). Returns `None` for anything it does not accept (a rule or limit broken, an
/// unusual encoding): [`check_series`] then decides, with the message. `cluster_field` is the
/// encoded `cluster` label to add when the series has none; `scratch` holds the label bytes
/// with it added, for the key.
pub(super) fn fast_scan(
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
    // Whether a label name has an upper-case letter: only then may two names differ only in
    // case, which Azure refuses (checked here unless relabel rules run, which may fix it).
    let mut upper = false;
    let (mut own_cluster, mut cluster_at) = (false, None);
    let mut labels_end = 0;
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
            let (ok, up) = names.short_label_name(count, key, n.len());
            upper |= up;
            ok
        } else {
            upper |= validate::word_has_upper(key) || n[8..].iter().any(u8::is_ascii_uppercase);
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
    let (counts, min_ts) = points(series, i, opts)?;
    if !has_name || count > lim.max_labels {
        return None;
    }
    if upper && crate::relabel::rules(opts).is_none() && case_collision_in(&series[..labels_end]) {
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
        labels_end,
    })
}

/// Walks the samples, exemplars and histograms of a series, from `i` (where its labels end)
/// to its end, as senders encode them: what it holds and its oldest timestamp. `None` for
/// anything else (a label after a sample, an unknown field, a point encoded otherwise, more
/// points than the limit): the full path judges.
#[inline(always)]
fn points(series: &[u8], mut i: usize, opts: &Options) -> Option<(ChunkCounts, i64)> {
    let mut counts = ChunkCounts {
        series: 1,
        ..ChunkCounts::default()
    };
    let mut min_ts = i64::MAX;
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
            _ => return None,
        }
    }
    (counts.points() <= opts.limits.max_samples_per_series).then_some((counts, min_ts))
}

/// The scan of a series whose label section (up to `labels_end`) the series cache knows
/// valid, with shard key `key`: only its points are walked, and with `cluster` set, its label
/// names compared with `cluster` to find where the label goes.
pub(super) fn known_scan(
    series: &[u8],
    labels_end: usize,
    key: u64,
    opts: &Options,
) -> Option<Scan> {
    let (counts, min_ts) = points(series, labels_end, opts)?;
    let cluster_at = match opts.cluster {
        Some(_) => cluster_position(&series[..labels_end])?,
        None => None,
    };
    Some(Scan {
        key,
        counts,
        min_ts,
        cluster_at,
        labels_end,
    })
}

/// Where a `cluster` label goes in a valid labels section (sorted, each label as the scan
/// accepts it): before the first name after `cluster`, or at the end; `Some(None)` when the
/// series has its own. `None` if a label does not parse (never for a section the scan
/// accepted).
fn cluster_position(section: &[u8]) -> Option<Option<usize>> {
    let mut i = 0;
    while i < section.len() {
        let at = i;
        i += 1;
        let data = len_at(section, &mut i)?;
        let (_, n, _) = fast_label(data)?;
        match n.cmp(&b"cluster"[..]) {
            std::cmp::Ordering::Less => {}
            std::cmp::Ordering::Equal => return Some(None),
            std::cmp::Ordering::Greater => return Some(Some(at)),
        }
    }
    Some(Some(section.len()))
}

/// The short label names found valid at each position of the previous series: series of one
/// request mostly share their label names, so most checks become one comparison.
#[derive(Default)]
pub(super) struct NameCache {
    /// (name prefix, length) per label position: valid names without an upper-case letter.
    names: [(u64, usize); 16],
}

impl NameCache {
    /// Whether the name of `len` (1 to 8) bytes whose prefix is `key`, at label position
    /// `at`, is a valid label name, and whether it has an upper-case letter. Only valid names
    /// without one are remembered, so a hit answers both in one comparison.
    #[inline(always)]
    fn short_label_name(&mut self, at: usize, key: u64, len: usize) -> (bool, bool) {
        match self.names.get_mut(at) {
            Some(seen) if *seen == (key, len) => (true, false),
            Some(seen) => {
                let ok = validate::is_short_label_name(key, len);
                let upper = validate::word_has_upper(key);
                if ok && !upper {
                    *seen = (key, len);
                }
                (ok, upper)
            }
            None => (
                validate::is_short_label_name(key, len),
                validate::word_has_upper(key),
            ),
        }
    }
}

/// Whether two label names of an encoded labels section differ only in case (or the section
/// does not parse: the full path then says why).
fn case_collision_in(labels_section: &[u8]) -> bool {
    crate::message::labels(labels_section).map_or(true, |pairs| {
        validate::case_collision(pairs.iter().map(|(n, _)| *n)).is_some()
    })
}
