use std::collections::{BTreeMap, BTreeSet};

use prost::Message as _;

use super::*;
use crate::codec::{Chunk, Entry as CodecEntry, FIELD_TIMESERIES};
use crate::proto::v1::{Label, Sample, TimeSeries};

const HOUR: u32 = 500_000;

/// A chunk of one series per label set.
fn chunk(series: &[Vec<(String, String)>]) -> Chunk {
    let entries: Vec<CodecEntry> = series
        .iter()
        .map(|labels| {
            let ts = TimeSeries {
                labels: labels
                    .iter()
                    .map(|(n, v)| Label {
                        name: n.clone(),
                        value: v.clone(),
                    })
                    .collect(),
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: 1,
                }],
                ..TimeSeries::default()
            };
            CodecEntry::from_message(FIELD_TIMESERIES, ts.encode_to_vec().into())
        })
        .collect();
    Chunk::from_entries(&entries)
}

/// `n` series of `metrics` metric names: `m<i % metrics>{job="j<i % 3>", id="<i>"}`.
fn population(range: std::ops::Range<usize>, metrics: usize) -> Vec<Vec<(String, String)>> {
    range
        .map(|i| {
            vec![
                ("__name__".to_string(), format!("m{}", i % metrics)),
                ("id".to_string(), i.to_string()),
                ("job".to_string(), format!("j{}", i % 3)),
            ]
        })
        .collect()
}

/// The exact lists, computed directly from the label sets.
fn exact(series: &[Vec<(String, String)>]) -> Report {
    let mut metrics: BTreeMap<String, u64> = BTreeMap::new();
    let mut values: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut pairs: BTreeMap<String, u64> = BTreeMap::new();
    for s in series {
        for (n, v) in s {
            if n == "__name__" {
                *metrics.entry(v.clone()).or_default() += 1;
            }
            values.entry(n.clone()).or_default().insert(v.clone());
            *pairs.entry(format!("{n}={v}")).or_default() += 1;
        }
    }
    Report {
        total_series: series.len() as u64,
        estimated: false,
        sample_rate: 1.0,
        error_bound: String::new(),
        series_count_by_metric_name: top(metrics.into_iter(), usize::MAX),
        label_value_count_by_label_name: top(
            values.into_iter().map(|(n, v)| (n, v.len() as u64)),
            usize::MAX,
        ),
        series_count_by_label_value_pair: top(pairs.into_iter(), usize::MAX),
    }
}

#[test]
fn counts_are_exact_and_each_series_is_read_once_an_hour() {
    let c = Cardinality::default();
    let all = population(0..5000, 7);
    for part in all.chunks(500) {
        c.observe_at(&[chunk(part)], HOUR);
    }
    // The same series again, in other chunks: nothing changes.
    for part in all.chunks(300) {
        c.observe_at(&[chunk(part)], HOUR);
    }
    assert_eq!(c.report_at(usize::MAX, HOUR), exact(&all));
    let top3 = c.report_at(3, HOUR);
    assert_eq!(top3.series_count_by_metric_name.len(), 3);
    assert_eq!(
        top3.series_count_by_metric_name[0],
        Entry {
            name: "m0".into(),
            value: 715
        }
    );
    assert_eq!(
        top3.label_value_count_by_label_name[0],
        Entry {
            name: "id".into(),
            value: 5000
        }
    );
}

#[test]
fn series_leave_the_window_thirteen_hours_after_they_were_last_sent() {
    let c = Cardinality::default();
    let old = population(0..1000, 2);
    let new = population(1000..1500, 2);
    c.observe_at(&[chunk(&old)], HOUR);
    c.observe_at(&[chunk(&new)], HOUR + 5);
    assert_eq!(c.report_at(10, HOUR + 12).total_series, 1500);
    let later = c.report_at(usize::MAX, HOUR + 13);
    assert_eq!(later, exact(&new));
    // Sent again: counted again.
    c.observe_at(&[chunk(&old[..10])], HOUR + 14);
    assert_eq!(c.report_at(10, HOUR + 14).total_series, 510);
    assert_eq!(c.report_at(10, HOUR + 19).total_series, 10);
}

#[test]
fn above_the_exact_limit_counts_are_estimated_within_their_bounds() {
    let c = Cardinality::default();
    let n = 300_000usize;
    let all = population(0..n, 4);
    for part in all.chunks(2000) {
        c.observe_at(&[chunk(part)], HOUR);
    }
    let r = c.report_at(usize::MAX, HOUR);
    assert!(r.estimated);
    assert!(
        r.sample_rate <= 0.5 && r.sample_rate >= 0.125,
        "{}",
        r.sample_rate
    );
    assert!(r.error_bound.contains("95 %"), "{}", r.error_bound);
    // Distinct keys are counted exactly but for 32-bit collisions (about 10 here).
    assert!(r.total_series <= n as u64 && r.total_series > n as u64 - 100);
    let scale = 1.0 / r.sample_rate;
    let within = |got: u64, want: u64| {
        let bound = 2.0 * (want as f64 * (scale - 1.0)).sqrt() * 1.5;
        (got as f64 - want as f64).abs() <= bound
    };
    for e in &r.series_count_by_metric_name {
        assert!(within(e.value, (n / 4) as u64), "{e:?}");
    }
    let pair = |name: &str| {
        r.series_count_by_label_value_pair
            .iter()
            .find(|e| e.name == name)
            .map_or(0, |e| e.value)
    };
    assert!(within(pair("job=j0"), (n / 3) as u64), "{}", pair("job=j0"));
    let values = |name: &str| {
        r.label_value_count_by_label_name
            .iter()
            .find(|e| e.name == name)
            .unwrap()
            .value
    };
    assert_eq!(values("job"), 3);
    assert_eq!(values("__name__"), 4);
    let ids = values("id") as f64;
    assert!((ids - n as f64).abs() < 0.1 * n as f64, "{ids}");
    // The sample stays bounded.
    assert!(c.inner.lock().unwrap().series.len() <= EXACT_UP_TO);
}

#[test]
fn forgetting_series_compacts_their_storage_and_keeps_the_rest_exact() {
    let c = Cardinality::default();
    let old = population(0..40_000, 3);
    let new = population(40_000..60_000, 3);
    for part in old.chunks(2000) {
        c.observe_at(&[chunk(part)], HOUR);
    }
    for part in new.chunks(2000) {
        c.observe_at(&[chunk(part)], HOUR + 2);
    }
    // The old ones leave the window: their ids and values are garbage, then compacted.
    let got = c.report_at(usize::MAX, HOUR + 13);
    assert_eq!(got, exact(&new));
    let inner = c.inner.lock().unwrap();
    assert!(inner.ids.len() < 3 * 40_000, "{}", inner.ids.len());
    assert!(inner.ids_garbage * 2 <= inner.ids.len().max(1 << 17));
}
