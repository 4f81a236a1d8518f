//! The one-pass scan against the full path.

use super::check::{check_series, Checked};
use super::scan::{fast_scan, NameCache};
use crate::message::{series_key, FIELD_TIMESERIES, TS_LABELS, TS_SAMPLES};
use crate::options::Options;
use crate::wire::{self, Fields};

/// The one-pass scan and the full path agree on every fixture series, with and without an
/// added cluster label: same shard key, same bytes, same counts, same oldest timestamp.
#[test]
fn fast_and_full_paths_agree() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");
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
            let raw = crate::decompress(&body, 1 << 26).unwrap();
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

/// Label names: valid and invalid, of up to 8 bytes (what the cache holds) and longer, with
/// and without upper case, some differing only in case or in one byte.
const NAMES: [&str; 16] = [
    "a",
    "job",
    "Job",
    "pod",
    "9lives",
    "x-y",
    "instance",
    "container",
    "containEr",
    "contai-er",
    "namespace",
    "namespace_",
    "namespace-",
    "long_label_namex",
    "long_label_name-",
    "a_label_name_longer_than_16",
];

/// Metric names: valid and invalid, short and long, some with the same length and ends as
/// others.
fn metric_names() -> Vec<String> {
    let mut v: Vec<String> = [
        "up",
        "u-p",
        "x",
        "1bad",
        "ok:recorded",
        "A_upper",
        "container_cpu_usage_seconds_total",
        "container_cpu_usage-seconds_total",
        "container_cpu_usage_seconds_tota√",
    ]
    .map(str::to_owned)
    .to_vec();
    for len in [55, 56, 57] {
        v.push(format!("m{}", "_".repeat(len - 1)));
        v.push(format!("m{}-", "_".repeat(len - 2)));
    }
    v
}

fn encode_series(metric: &str, labels: &[(usize, u8)]) -> Vec<u8> {
    let mut pairs: Vec<(&str, String)> = labels
        .iter()
        .map(|&(n, v)| (NAMES[n], format!("v{v}")))
        .collect();
    pairs.push(("__name__", metric.to_owned()));
    pairs.sort();
    pairs.dedup_by(|a, b| a.0 == b.0);
    let mut s = Vec::new();
    for (n, v) in pairs {
        let mut label = Vec::new();
        wire::put_len_field(&mut label, 1, n.as_bytes());
        wire::put_len_field(&mut label, 2, v.as_bytes());
        wire::put_len_field(&mut s, TS_LABELS, &label);
    }
    wire::put_len_field(&mut s, TS_SAMPLES, &[0x10, 0x01]);
    s
}

proptest::proptest! {
    /// The name cache (label names found valid at each position of earlier series) never
    /// changes an answer: every series of a sequence scanned with one warm cache gets exactly
    /// what it gets with a fresh one (accepted with the same key and labels, or refused).
    #[test]
    fn the_name_cache_never_changes_an_answer(
        series in proptest::collection::vec(
            (0usize..15, proptest::collection::vec((0usize..NAMES.len(), 0u8..3), 0..6)),
            1..40,
        )
    ) {
        let metrics = metric_names();
        let opts = Options::default();
        let mut warm = NameCache::default();
        let mut scratch = Vec::new();
        for (m, labels) in &series {
            let s = encode_series(&metrics[*m % metrics.len()], labels);
            let cached = fast_scan(&s, &opts, None, &mut scratch, &mut warm)
                .map(|x| (x.key, x.labels_end, x.counts));
            let fresh = fast_scan(&s, &opts, None, &mut scratch, &mut NameCache::default())
                .map(|x| (x.key, x.labels_end, x.counts));
            proptest::prop_assert_eq!(cached, fresh);
            // And the full path agrees on acceptance.
            let full = matches!(check_series(&s, &opts), Ok(Checked::Keep { .. }));
            if cached.is_some() {
                proptest::prop_assert!(full, "the scan accepted what the full path refuses");
            }
        }
    }
}

/// The property above sees both answers: its generator makes series the scan accepts and
/// series it refuses.
#[test]
fn the_name_cache_property_sees_accepted_and_refused_series() {
    let opts = Options::default();
    let scan = |metric: &str, labels: &[(usize, u8)]| {
        let s = encode_series(metric, labels);
        fast_scan(&s, &opts, None, &mut Vec::new(), &mut NameCache::default()).is_some()
    };
    assert!(scan("up", &[(1, 0), (3, 1), (7, 2)]));
    assert!(!scan("1bad", &[(1, 0)]));
    assert!(!scan("up", &[(4, 0)]), "a label name starting with a digit");
    assert!(
        !scan("up", &[(1, 0), (2, 0)]),
        "job and Job differ only in case"
    );
}

/// The options the series cache property decodes under, all sharing one cache: an answer
/// found under one must never be reused under another.
fn cache_options(i: usize, cache: Option<std::sync::Arc<crate::SeriesCache>>) -> Options {
    let mut o = Options {
        series_cache: cache,
        ..Options::default()
    };
    match i {
        1 => o.cluster = Some("c1".into()),
        2 => o.limits.max_labels = 3,
        3 => {
            o.limits.max_labels = 3;
            o.limits.drop_over_limit = true;
        }
        4 => o.limits.max_samples_per_series = 2,
        5 => o.cluster = Some("a".into()),
        _ => {}
    }
    o
}

/// A series of [`encode_series`]'s labels with points of kind `points`: one sample, three,
/// a sample with an unknown field (valid, the full path takes it) or a sample whose value
/// has the wrong wire type (refused).
fn series_with_points(metric: &str, labels: &[(usize, u8)], points: u8) -> Vec<u8> {
    let mut s = encode_series(metric, labels);
    let one = s.len() - 4;
    s.truncate(one);
    let sample: &[u8] = match points {
        1 => &[0x10, 0x02],
        2 => &[0x10, 0x03, 0x18, 0x01],
        3 => &[0x0d, 0, 0, 0, 0],
        _ => &[0x10, 0x01],
    };
    for _ in 0..if points == 1 { 3 } else { 1 } {
        wire::put_len_field(&mut s, TS_SAMPLES, sample);
    }
    s
}

proptest::proptest! {
    /// The series cache never changes an answer: every request of a sequence decoded with one
    /// shared cache (a tiny one, so entries are replaced all the time, or one they all fit),
    /// drawing its series from a small pool of label sets under options that change between
    /// requests, gets exactly what it gets without a cache: the same series,
    /// keys, bytes and counts, or the same refusal.
    #[test]
    fn the_series_cache_never_changes_an_answer(
        pool in proptest::collection::vec(
            (0usize..15, proptest::collection::vec((0usize..NAMES.len(), 0u8..3), 0..5)),
            1..8,
        ),
        requests in proptest::collection::vec(
            (0usize..6, proptest::collection::vec((0usize..8, 0u8..4), 1..12)),
            1..30,
        ),
        bytes in proptest::prop_oneof![proptest::strategy::Just(300usize), proptest::strategy::Just(1usize << 16)],
    ) {
        let metrics = metric_names();
        let cache = std::sync::Arc::new(crate::SeriesCache::new(bytes).expect("cache"));
        for (o, series) in &requests {
            let mut raw = Vec::new();
            for (p, points) in series {
                let (m, labels) = &pool[*p % pool.len()];
                let s = series_with_points(&metrics[*m % metrics.len()], labels, *points);
                wire::put_len_field(&mut raw, FIELD_TIMESERIES, &s);
            }
            let body = snap::raw::Encoder::new().compress_vec(&raw).expect("compress");
            let decode = |cache| {
                format!("{:?}", crate::decode(crate::Protocol::V1, &body, &cache_options(*o, cache)))
            };
            proptest::prop_assert_eq!(decode(Some(cache.clone())), decode(None));
        }
    }
}

/// The property above sees hits and answers of every kind.
#[test]
fn the_series_cache_property_sees_hits_and_every_answer() {
    let cache = std::sync::Arc::new(crate::SeriesCache::new(1 << 16).expect("cache"));
    let decode = |o: usize, points: u8, labels: &[(usize, u8)]| {
        let mut raw = Vec::new();
        let s = series_with_points("up", labels, points);
        wire::put_len_field(&mut raw, FIELD_TIMESERIES, &s);
        let body = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
        crate::decode(
            crate::Protocol::V1,
            &body,
            &cache_options(o, Some(cache.clone())),
        )
        .map(|d| (d.entries.len(), d.dropped_series))
    };
    let four = [(1, 0), (3, 1), (7, 2)];
    assert_eq!(decode(0, 0, &four).unwrap(), (1, 0));
    assert_eq!(decode(0, 1, &four).unwrap(), (1, 0), "a hit, other samples");
    assert_eq!(cache.stats().hits, 1);
    assert_eq!(
        decode(0, 2, &four).unwrap(),
        (1, 0),
        "the full path's sample"
    );
    assert!(decode(0, 3, &four).is_err(), "a bad sample after a hit");
    assert!(
        decode(2, 0, &four).is_err(),
        "over max_labels: not the cached answer"
    );
    assert_eq!(
        decode(3, 0, &four).unwrap(),
        (0, 1),
        "dropped over max_labels"
    );
    assert!(decode(4, 1, &four).is_err(), "over max_samples_per_series");
    assert!(decode(0, 0, &[(1, 0), (2, 0)]).is_err(), "job and Job");
}
