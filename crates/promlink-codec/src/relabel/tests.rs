use proptest::prelude::*;

use super::*;
use crate::options::Limits;

/// Every action, on the labels the generator makes, so that series are kept, changed,
/// dropped, made invalid (an empty `__name__`) and made to collide by case.
const RULES: &str = r#"
- source_labels: [__name__, namespace]
  regex: 'up;team-(1.)'
  action: drop
- source_labels: [namespace, pod]
  separator: '/'
  regex: 'team-(\d+)/(.+)'
  target_label: owner
  replacement: 'team${1}-$2'
- source_labels: [pod]
  target_label: shard
  modulus: 4
  action: hashmod
- source_labels: [shard]
  regex: '3'
  action: drop
- regex: '(region|zone)'
  replacement: 'k8s_$1'
  action: labelmap
- regex: 'node|zone'
  action: labeldrop
- source_labels: [job]
  target_label: Job
  action: uppercase
- source_labels: [Job]
  target_label: job
  action: lowercase
- source_labels: [job]
  regex: 'web'
  target_label: __name__
  replacement: ''
- source_labels: [pod]
  target_label: namespace
  action: dropequal
- source_labels: [k8s_region]
  target_label: region
  action: keepequal
- regex: 'shard|node|k8s_zone'
  action: labeldrop
"#;

fn rules() -> Rules {
    let configs: Vec<promlink_relabel::RelabelConfig> =
        serde_saphyr::from_str(RULES).expect("rules YAML");
    Rules::compile(&configs).expect("valid rules")
}

const NAMES: [&str; 9] = [
    "Job",
    "__name__",
    "job",
    "namespace",
    "node",
    "pod",
    "region",
    "x",
    "zone",
];
const VALUES: [&str; 8] = [
    "up",
    "api",
    "web",
    "team-1",
    "team-12",
    "team-3",
    "westeurope",
    "n1",
];

/// A series: labels (sorted, unique names, non-empty values) and one sample field.
fn series(picks: &[(usize, usize)]) -> (Vec<LabelPair<'static>>, Vec<u8>) {
    let mut pairs: Vec<LabelPair<'static>> = Vec::new();
    for &(n, v) in picks {
        let name = NAMES[n % NAMES.len()].as_bytes();
        if !pairs.iter().any(|(p, _)| *p == name) {
            pairs.push((name, VALUES[v % VALUES.len()].as_bytes()));
        }
    }
    pairs.sort();
    let mut bytes = Vec::new();
    for (n, v) in &pairs {
        put_label(&mut bytes, n, v);
    }
    // TimeSeries.samples: value 1.0 at timestamp 1.
    bytes.extend_from_slice(&[0x12, 0x0b, 0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x10, 0x01]);
    (pairs, bytes)
}

fn outcome(r: Result<Relabeled, DecodeError>) -> String {
    match r {
        Ok(Relabeled::Unchanged) => "unchanged".into(),
        Ok(Relabeled::Dropped) => "dropped".into(),
        Ok(Relabeled::Invalid) => "invalid".into(),
        Ok(Relabeled::OverLimit) => "over limit".into(),
        Ok(Relabeled::Changed { bytes, key }) => format!("changed {bytes:?} key {key}"),
        Err(e) => format!("refused: {e}"),
    }
}

fn opts(max_labels: usize, drop_over_limit: bool) -> Options {
    Options {
        limits: Limits {
            max_labels,
            drop_over_limit,
            ..Limits::default()
        },
        ..Options::default()
    }
}

proptest! {
    /// On any series, under any limits, the cache never changes what the rules give: not on
    /// the miss that fills it, not on the hits after, not beside other series sharing it.
    #[test]
    fn the_cache_never_changes_the_outcome(
        batch in proptest::collection::vec(
            proptest::collection::vec((0usize..9, 0usize..8), 1..9), 1..12),
        max_labels in 3usize..10,
        drop_over_limit in any::<bool>(),
        cluster in proptest::option::of(0usize..8),
    ) {
        let cached = Relabel::new(rules());
        let scanned = Relabel::new(rules());
        let hashed_ahead = Relabel::new(rules());
        let uncached = Relabel::with_cache_bytes(rules(), 0);
        assert_eq!(uncached.cache_capacity_bytes(), 0);
        let opts = opts(max_labels, drop_over_limit);
        let cluster = cluster.map(|v| VALUES[v]);
        // The batch as one request, its keys hashed before the walk as the receiver does.
        let mut request = Vec::new();
        for picks in &batch {
            crate::wire::put_len_field(&mut request, 1, &series(picks).1);
        }
        for round in 0..3 {
            let mut ahead = Ahead::new(&hashed_ahead, &opts, &request, cluster);
            for (index, picks) in batch.iter().enumerate() {
                let (mut pairs, bytes) = series(picks);
                let labels_end = bytes.len() - 13;
                let got_scanned =
                    outcome(relabel_scanned(&scanned, &opts, &bytes, labels_end, cluster, None));
                let key = ahead.key(index, labels_end, cluster.is_some());
                let cache = hashed_ahead.cache.as_ref().expect("a cache");
                let want_key = cache.hash_with(&bytes[..labels_end], &opts.limits, cluster);
                prop_assert_eq!(key, Some(want_key));
                let got_ahead = outcome(relabel_scanned(
                    &hashed_ahead, &opts, &bytes, labels_end, cluster, key,
                ));
                if let Some(c) = cluster {
                    crate::message::insert_cluster(&mut pairs, c.as_bytes());
                }
                let want = outcome(relabel_pairs(&uncached, &opts, &pairs, &[&bytes]));
                let got = outcome(relabel_pairs(&cached, &opts, &pairs, &[&bytes]));
                prop_assert_eq!(&got, &want, "round {}, labels {:?}", round, pairs);
                prop_assert_eq!(&got_scanned, &want, "scanned, round {}, labels {:?}", round, pairs);
                prop_assert_eq!(&got_ahead, &want, "hashed ahead, round {}, labels {:?}", round, pairs);
            }
        }
        // Everything stored was read back in the later rounds.
        for c in [&cached, &scanned, &hashed_ahead] {
            let s = c.cache_stats();
            prop_assert!(s.hits >= 2 * s.stored, "{:?}", s);
        }
    }
}

#[test]
fn a_series_seen_before_is_answered_from_the_cache() {
    let relabel = Relabel::new(rules());
    let capacity = relabel.cache_capacity_bytes();
    assert!(capacity <= DEFAULT_CACHE_BYTES && capacity > DEFAULT_CACHE_BYTES / 100 * 99);
    let opts = opts(63, false);
    // Changed (an owner label, the region mapped), unchanged, dropped.
    for picks in [
        vec![(1, 1), (3, 3), (5, 1), (6, 6)],
        vec![(1, 0), (7, 1)],
        vec![(1, 0), (3, 4)],
    ] {
        let (pairs, bytes) = series(&picks);
        let first = outcome(relabel_pairs(&relabel, &opts, &pairs, &[&bytes]));
        let again = outcome(relabel_pairs(&relabel, &opts, &pairs, &[&bytes]));
        assert_eq!(first, again);
    }
    let s = relabel.cache_stats();
    assert_eq!((s.hits, s.misses, s.stored), (3, 3, 3), "{s:?}");
    // The series pieces may split anywhere between fields.
    let (pairs, bytes) = series(&[(1, 1), (3, 3), (5, 1), (6, 6)]);
    let whole = outcome(relabel_pairs(&relabel, &opts, &pairs, &[&bytes]));
    let split = bytes.len() - 13;
    let pieces = outcome(relabel_pairs(
        &relabel,
        &opts,
        &pairs,
        &[&bytes[..split], &bytes[split..]],
    ));
    assert!(whole.starts_with("changed"), "{whole}");
    assert_eq!(whole, pieces);
}

#[test]
fn rules_that_change_a_series_back_leave_it_unchanged() {
    let configs: Vec<promlink_relabel::RelabelConfig> = serde_saphyr::from_str(
        "- {source_labels: [job], target_label: tmp}\n- {regex: tmp, action: labeldrop}\n",
    )
    .expect("rules YAML");
    let relabel = Relabel::new(Rules::compile(&configs).expect("valid rules"));
    let (pairs, bytes) = series(&[(1, 0), (2, 1)]);
    for _ in 0..2 {
        let r = outcome(relabel_pairs(&relabel, &opts(63, false), &pairs, &[&bytes]));
        assert_eq!(r, "unchanged");
    }
}

#[test]
fn refusals_are_never_cached() {
    let relabel = Relabel::new(rules());
    // 3 labels at most: the owner label makes a fourth.
    let opts = opts(3, false);
    let (pairs, bytes) = series(&[(1, 1), (3, 3), (5, 1)]);
    for _ in 0..2 {
        let r = outcome(relabel_pairs(&relabel, &opts, &pairs, &[&bytes]));
        assert!(r.starts_with("refused"), "{r}");
    }
    assert_eq!(relabel.cache_stats().stored, 0);
}

#[test]
fn debug_shows_only_the_rules() {
    let a = Relabel::new(rules());
    let b = Relabel::with_cache_bytes(rules(), 1 << 20);
    let (pairs, bytes) = series(&[(1, 0)]);
    let _ = relabel_pairs(&a, &opts(63, false), &pairs, &[&bytes]);
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}
