//! [`Cardinality`]: which metrics, labels and label pairs carry the most series among those
//! promlink sent within the active window (12 to 13 hours, as the workspace sketch), for
//! `GET /api/v1/status/cardinality` and `promlink top`.
//!
//! The upstream hands every delivered part to [`Cardinality::observe`]. Each series' 32-bit key
//! is looked up in a table of every key sent within the window, with the hour it was last sent;
//! a chunk is decompressed and its series' labels read only when it holds a key not yet sent
//! in the current hour. Each series is therefore read at most once an hour, and a steady
//! stream of the same series costs one table lookup per series.
//!
//! Decompressing and reading happen outside the lock; only recording the read series takes it.
//!
//! - **Up to [`EXACT_UP_TO`] series** every series is kept with its label pairs (interned), and
//!   the counts are exact (but for series whose 32-bit keys collide, which count once:
//!   `n^2 / 2^33` expected among `n` series, about one at 100,000).
//! - **Above,** only a fixed sample of series is kept: those whose (spread) key has its top
//!   `level` bits zero, one in `2^level`; the level rises by one each time the sample would
//!   exceed [`EXACT_UP_TO`] again. Series counts are the sample's times `2^level`. The values per
//!   label name come from one HyperLogLog sketch per label name and hour (1,024 registers,
//!   about 3.3 % standard error), fed as series are read. The answer says it is estimated and
//!   gives the error bounds.
//!
//! Memory at 1,000,000 active series: the key table (16 MiB), a sample of at most
//! 100,000 series with their interned pairs, and at most [`MAX_LABEL_NAMES`] sketches of 13 KiB;
//! `benches/cardinality.rs` measures it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use rustc_hash::FxBuildHasher;

use super::sketch::{self, HourlySketch};
use crate::codec::{wire, Chunk, FIELD_TIMESERIES};

/// Counts are exact up to this many series in the window.
pub const EXACT_UP_TO: usize = 100_000;
/// Label names whose values are sketched; further names are still counted in the sample
/// (exact mode) but have no estimate above [`EXACT_UP_TO`].
pub const MAX_LABEL_NAMES: usize = 512;
/// Register bits of the per-label-name sketches.
const NAME_PRECISION: u32 = 10;
/// Relative standard error of those sketches.
const NAME_SKETCH_ERROR: f64 = 1.04 / 32.0;

/// The cardinality view of everything promlink sent within the window.
#[derive(Debug, Default)]
pub struct Cardinality {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The current hour (Unix seconds / 3600).
    hour: u32,
    /// Every series key sent within the window, with the hour it was last sent.
    seen: seen::Seen,
    /// Kept series: those with the top `level` bits of their 64-bit key zero.
    level: u32,
    series: HashMap<u32, Kept, FxBuildHasher>,
    /// The kept series' pair ids, one run each, and how many of them belong to forgotten
    /// series (compacted away once they are half).
    ids: Vec<u32>,
    ids_garbage: usize,
    /// Label pairs of the kept series, interned.
    pairs: Pairs,
    /// Per label name (by name id): its values' hourly sketch.
    sketches: Vec<HourlySketch>,
}

#[derive(Debug)]
struct Kept {
    hour: u32,
    /// Its pair ids: `Inner::ids[start..start + len]`.
    start: u32,
    len: u32,
}

/// Label names and (name, value) pairs, interned with a count of the kept series using each.
#[derive(Debug, Default)]
struct Pairs {
    names: Vec<Box<str>>,
    name_ids: HashMap<Box<str>, u32, FxBuildHasher>,
    pairs: Vec<Pair>,
    /// The values of the pairs, one after the other, and how many bytes of it belong to freed
    /// pairs (compacted away once they are half).
    text: String,
    text_garbage: usize,
    /// Per name id: its values' pair ids, by a 64-bit hash of the value (the value itself is
    /// kept once, in its [`Pair`]; two values with one hash are told apart by probing on).
    ids: Vec<HashMap<u64, u32, FxBuildHasher>>,
    free: Vec<u32>,
}

#[derive(Debug)]
struct Pair {
    name: u32,
    /// Its value: `Pairs::text[start..start + len]`.
    start: u32,
    len: u32,
    /// Its key in `ids[name]`.
    hash: u64,
    /// Kept series with this pair (0: free).
    series: u32,
}

impl Pairs {
    fn name_id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.name_ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.into());
        self.name_ids.insert(name.into(), id);
        self.ids.push(HashMap::default());
        id
    }

    /// The id of the pair `name`=`value` (`h`: the value's hash), used by one more series.
    fn acquire(&mut self, name: u32, value: &str, mut h: u64) -> u32 {
        loop {
            match self.ids[name as usize].get(&h) {
                Some(&id) if self.value(&self.pairs[id as usize]) == value => {
                    self.pairs[id as usize].series += 1;
                    return id;
                }
                Some(_) => h = h.wrapping_add(1),
                None => break,
            }
        }
        let pair = Pair {
            name,
            start: self.text.len() as u32,
            len: value.len() as u32,
            hash: h,
            series: 1,
        };
        self.text.push_str(value);
        let id = match self.free.pop() {
            Some(id) => {
                self.pairs[id as usize] = pair;
                id
            }
            None => {
                self.pairs.push(pair);
                (self.pairs.len() - 1) as u32
            }
        };
        self.ids[name as usize].insert(h, id);
        id
    }

    fn release(&mut self, id: u32) {
        let p = &mut self.pairs[id as usize];
        p.series -= 1;
        if p.series == 0 {
            self.text_garbage += p.len as usize;
            self.ids[p.name as usize].remove(&p.hash);
            self.free.push(id);
            if self.text_garbage > (1 << 16) && self.text_garbage * 2 > self.text.len() {
                self.compact();
            }
        }
    }

    /// The value of `p`.
    fn value(&self, p: &Pair) -> &str {
        &self.text[p.start as usize..(p.start + p.len) as usize]
    }

    /// Drops the values of freed pairs from `text`.
    fn compact(&mut self) {
        let mut text = String::with_capacity(self.text.len() - self.text_garbage);
        for p in self.pairs.iter_mut().filter(|p| p.series > 0) {
            let start = text.len() as u32;
            text.push_str(&self.text[p.start as usize..(p.start + p.len) as usize]);
            p.start = start;
        }
        self.text = text;
        self.text_garbage = 0;
    }
}

/// One `{name, value}` entry of a list, as Prometheus' TSDB status gives it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// A metric name, a label name, or `name=value`.
    pub name: String,
    /// Its count.
    pub value: u64,
}

/// The answer of `GET /api/v1/status/cardinality` (under `data`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Distinct series sent within the window (exact: kept series; estimated: distinct keys).
    pub total_series: u64,
    /// Whether the counts are estimated (more than 100,000 series).
    pub estimated: bool,
    /// The share of series the counts were taken from (1: all).
    pub sample_rate: f64,
    /// How far an estimated count may be off, in words (empty when exact).
    pub error_bound: String,
    /// Series per metric name, top first.
    pub series_count_by_metric_name: Vec<Entry>,
    /// Distinct values per label name, top first.
    pub label_value_count_by_label_name: Vec<Entry>,
    /// Series per `name=value` pair, top first.
    pub series_count_by_label_value_pair: Vec<Entry>,
}

impl Cardinality {
    /// Counts the series of a part the upstream accepted.
    pub fn observe(&self, part: &[Chunk]) {
        self.observe_at(part, hour_of(SystemTime::now()));
    }

    /// [`Self::observe`] in `hour` (Unix seconds / 3600).
    fn observe_at(&self, part: &[Chunk], hour: u32) {
        // Which series (by position) of which chunk are sent for the first time this hour.
        let mut fresh: Vec<(&Chunk, Vec<u32>)> = Vec::new();
        {
            let mut inner = self.lock();
            inner.advance(hour);
            for chunk in part {
                let mut new = Vec::new();
                inner
                    .seen
                    .mark_all(&chunk.keys, hour, |i| new.push(i as u32));
                if !new.is_empty() {
                    fresh.push((chunk, new));
                }
            }
        }
        // One chunk at a time: decompressed outside the lock, its new series read under it.
        for (chunk, new) in &fresh {
            let raw = match chunk.raw() {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "cardinality: a delivered chunk does not decompress");
                    continue;
                }
            };
            let mut new = new.iter().peekable();
            let series = wire::Fields::new(&raw)
                .filter_map(Result::ok)
                .filter(|f| f.number == FIELD_TIMESERIES);
            let mut labels = Vec::with_capacity(16);
            let mut inner = self.lock();
            for (i, (f, key)) in series.zip(chunk.keys.iter()).enumerate() {
                if new.next_if(|n| **n as usize == i).is_some() {
                    labels.clear();
                    labels_of(f.data, &mut labels);
                    inner.record(*key, &labels);
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The top `limit` of each list, for the window that ends now.
    pub fn report(&self, limit: usize) -> Report {
        self.report_at(limit, hour_of(SystemTime::now()))
    }

    /// [`Self::report`] in `hour`.
    fn report_at(&self, limit: usize, hour: u32) -> Report {
        let mut inner = self.lock();
        inner.advance(hour);
        inner.report(limit)
    }
}

impl Inner {
    /// Makes `hour` current: forgets series not sent within the window, and clears the
    /// sketches' slot the hour reuses.
    fn advance(&mut self, hour: u32) {
        if hour == self.hour {
            return;
        }
        self.hour = hour;
        let first = hour.saturating_sub(sketch::HOURS as u32);
        self.seen.expire(first);
        let expired: Vec<u32> = self
            .series
            .iter()
            .filter(|(_, s)| s.hour < first)
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            self.forget(k);
        }
        for s in &self.sketches {
            s.advance(u64::from(hour));
        }
    }

    fn forget(&mut self, key: u32) {
        if let Some(s) = self.series.remove(&key) {
            let run = s.start as usize..(s.start + s.len) as usize;
            for i in run {
                self.pairs.release(self.ids[i]);
            }
            self.ids_garbage += s.len as usize;
            if self.ids_garbage > (1 << 16) && self.ids_garbage * 2 > self.ids.len() {
                let mut ids = Vec::with_capacity(self.ids.len() - self.ids_garbage);
                for k in self.series.values_mut() {
                    let start = ids.len() as u32;
                    ids.extend_from_slice(&self.ids[k.start as usize..(k.start + k.len) as usize]);
                    k.start = start;
                }
                self.ids = ids;
                self.ids_garbage = 0;
            }
        }
    }

    /// Records the series `key` with `labels`, read at its first sending this hour.
    fn record(&mut self, key: u32, labels: &[(&str, &str)]) {
        let hour = self.hour;
        let kept = self.kept(key);
        let known = kept
            && match self.series.get_mut(&key) {
                Some(s) => {
                    s.hour = hour;
                    true
                }
                None => false,
            };
        // Exact: the kept series are every series, and the values per name are counted from
        // them; the sketches start when the level first rises.
        let sketch = self.level > 0;
        if known && !sketch {
            return;
        }
        let add = kept && !known;
        let start = self.ids.len() as u32;
        for (name, value) in labels {
            let id = self.pairs.name_id(name);
            let h = value_hash(value);
            if sketch {
                self.sketch(id, h);
            }
            if add {
                let pair = self.pairs.acquire(id, value, h);
                self.ids.push(pair);
            }
        }
        if add {
            self.series.insert(
                key,
                Kept {
                    hour,
                    start,
                    len: labels.len() as u32,
                },
            );
            if self.series.len() > EXACT_UP_TO {
                self.raise_level();
            }
        }
    }

    /// Counts the value with hash `h` of label name `name` in the current hour.
    fn sketch(&mut self, name: u32, h: u64) {
        let id = name as usize;
        if id >= MAX_LABEL_NAMES {
            return;
        }
        while self.sketches.len() <= id {
            let s = HourlySketch::new(NAME_PRECISION);
            s.advance(u64::from(self.hour));
            self.sketches.push(s);
        }
        self.sketches[id].insert(h);
    }

    /// Keeps one in two of the kept series, until they are at most [`EXACT_UP_TO`]; leaving
    /// exact counting, the values of every kept series seed the sketches first.
    fn raise_level(&mut self) {
        if self.level == 0 {
            let live: Vec<(u32, u64)> = self
                .pairs
                .pairs
                .iter()
                .filter(|p| p.series > 0)
                .map(|p| (p.name, value_hash(self.pairs.value(p))))
                .collect();
            for (name, h) in live {
                self.sketch(name, h);
            }
        }
        while self.series.len() > EXACT_UP_TO {
            self.level += 1;
            let dropped: Vec<u32> = self
                .series
                .keys()
                .filter(|k| !self.kept(**k))
                .copied()
                .collect();
            for k in dropped {
                self.forget(k);
            }
        }
    }

    /// Whether `key` belongs to the sample of the current level.
    fn kept(&self, key: u32) -> bool {
        self.level == 0 || sketch::spread(key).rotate_left(32) >> (64 - self.level) == 0
    }

    fn report(&self, limit: usize) -> Report {
        let scale = 1u64 << self.level;
        let estimated = self.level > 0;
        let mut by_metric: HashMap<u32, u64, FxBuildHasher> = HashMap::default();
        let metric_name = self.pairs.name_ids.get("__name__").copied();
        for s in self.series.values() {
            if let Some(p) = self.ids[s.start as usize..(s.start + s.len) as usize]
                .iter()
                .find(|p| Some(self.pairs.pairs[**p as usize].name) == metric_name)
            {
                *by_metric.entry(*p).or_default() += scale;
            }
        }
        let pair_name = |id: u32| {
            let p = &self.pairs.pairs[id as usize];
            (&*self.pairs.names[p.name as usize], self.pairs.value(p))
        };
        let series_count_by_metric_name = top(
            by_metric
                .into_iter()
                .map(|(id, n)| (pair_name(id).1.to_string(), n)),
            limit,
        );
        let live = || self.pairs.pairs.iter().filter(|p| p.series > 0);
        let series_count_by_label_value_pair = top(
            live().map(|p| {
                (
                    format!(
                        "{}={}",
                        self.pairs.names[p.name as usize],
                        self.pairs.value(p)
                    ),
                    u64::from(p.series) * scale,
                )
            }),
            limit,
        );
        let label_value_count_by_label_name = if estimated {
            top(
                self.pairs
                    .names
                    .iter()
                    .zip(&self.sketches)
                    .map(|(n, s)| (n.to_string(), s.estimate(u64::from(self.hour))))
                    .filter(|(_, n)| *n > 0),
                limit,
            )
        } else {
            let mut values: HashMap<u32, u64, FxBuildHasher> = HashMap::default();
            for p in live() {
                *values.entry(p.name).or_default() += 1;
            }
            top(
                values
                    .into_iter()
                    .map(|(n, c)| (self.pairs.names[n as usize].to_string(), c)),
                limit,
            )
        };
        let error_bound = if estimated {
            format!(
                "series counts are taken from 1 in {scale} series and multiplied by {scale}: each is within ±2·sqrt(count·{}) of the true count with 95 % probability; values per label name are HyperLogLog estimates within ±{:.1} % with 95 % probability (only the first {MAX_LABEL_NAMES} label names are sketched)",
                scale - 1,
                2.0 * NAME_SKETCH_ERROR * 100.0
            )
        } else {
            String::new()
        };
        Report {
            total_series: if estimated {
                self.seen.len() as u64
            } else {
                self.series.len() as u64
            },
            estimated,
            sample_rate: 1.0 / scale as f64,
            error_bound,
            series_count_by_metric_name,
            label_value_count_by_label_name,
            series_count_by_label_value_pair,
        }
    }
}

/// The `limit` largest of `items`, largest first (ties by name).
fn top(items: impl Iterator<Item = (String, u64)>, limit: usize) -> Vec<Entry> {
    let mut v: Vec<Entry> = items.map(|(name, value)| Entry { name, value }).collect();
    v.sort_unstable_by(|a, b| b.value.cmp(&a.value).then_with(|| a.name.cmp(&b.name)));
    v.truncate(limit);
    v
}

/// The labels of an encoded `TimeSeries` (validated on receipt: UTF-8 names and values).
fn labels_of<'a>(series: &'a [u8], out: &mut Vec<(&'a str, &'a str)>) {
    for f in wire::Fields::new(series).filter_map(Result::ok) {
        if f.number != 1 {
            continue;
        }
        let (name, value) = match wire::fast_label(f.data) {
            Some((_, n, v)) => (n, v),
            None => {
                let (mut n, mut v): (&[u8], &[u8]) = (&[], &[]);
                for g in wire::Fields::new(f.data).filter_map(Result::ok) {
                    match g.number {
                        1 => n = g.data,
                        2 => v = g.data,
                        _ => {}
                    }
                }
                (n, v)
            }
        };
        if let (Ok(n), Ok(v)) = (std::str::from_utf8(name), std::str::from_utf8(value)) {
            out.push((n, v));
        }
    }
}

fn value_hash(v: &str) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = FxBuildHasher.build_hasher();
    h.write(v.as_bytes());
    sketch::spread64(h.finish())
}

fn hour_of(t: SystemTime) -> u32 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| (d.as_secs() / 3600) as u32)
}

mod seen;
#[cfg(test)]
mod tests;
