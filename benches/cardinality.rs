//! The cardinality view and the workspace sketch at 1,000,000 active series: the heap they
//! hold (counted by a wrapping allocator, peak and after), and the CPU of observing a delivered
//! part, for series not seen before (each one read) and for series already seen this hour (a
//! table lookup each; the steady state of a Prometheus sending the same series every scrape).
//!
//! The series look like a busy cluster's: 200 metric names, `job`, `instance` (50 values),
//! `namespace` (20), `pod` (one per 40 series) and a unique `id`. The parts are built before
//! measuring, so their own memory is not counted.
//!
//! `cargo bench --bench cardinality` measures; without `--bench` (as `cargo test --all-targets`
//! runs it) it only says it was skipped.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Instant;

use promlink::codec::{Chunk, Entry, FIELD_TIMESERIES};
use promlink::proto::v1::{Label, Sample, TimeSeries};
use promlink::workspace::cardinality::Cardinality;
use promlink::workspace::sketch::{spread, HourlySketch};
use prost::Message as _;

#[path = "../tests/support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{LIVE, PEAK};

const SERIES: usize = 1_000_000;
const PER_CHUNK: usize = 2000;

fn part(range: std::ops::Range<usize>) -> Chunk {
    let label = |name: &str, value: String| Label {
        name: name.into(),
        value,
    };
    let entries: Vec<Entry> = range
        .map(|i| {
            let ts = TimeSeries {
                labels: vec![
                    label("__name__", format!("metric_{}", i % 200)),
                    label("id", i.to_string()),
                    label("instance", format!("10.0.{}.1:9100", i % 50)),
                    label("job", "node".into()),
                    label("namespace", format!("ns-{}", i % 20)),
                    label("pod", format!("pod-{}", i / 40)),
                ],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: 1,
                }],
                ..TimeSeries::default()
            };
            Entry::from_message(FIELD_TIMESERIES, ts.encode_to_vec().into())
        })
        .collect();
    Chunk::from_entries(&entries)
}

fn mib(b: usize) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "cardinality: skipped (not run with --bench; use `cargo bench --bench cardinality`)"
        );
        return ExitCode::SUCCESS;
    }
    let parts: Vec<Chunk> = (0..SERIES / PER_CHUNK)
        .map(|i| part(i * PER_CHUNK..(i + 1) * PER_CHUNK))
        .collect();

    // Exact: the first 100,000 series.
    let exact_parts = &parts[..promlink::workspace::cardinality::EXACT_UP_TO / PER_CHUNK];
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let exact = Cardinality::default();
    let t = Instant::now();
    for p in exact_parts {
        exact.observe(std::slice::from_ref(p));
    }
    let exact_first = t.elapsed();
    let exact_held = LIVE.load(Ordering::Relaxed) - base;
    let exact_peak = PEAK.load(Ordering::Relaxed) - base;
    let t = Instant::now();
    for p in exact_parts {
        exact.observe(std::slice::from_ref(p));
    }
    let exact_again = t.elapsed();
    let n = promlink::workspace::cardinality::EXACT_UP_TO as f64;
    println!(
        "cardinality at {} active series (exact): heap held {:.1} MiB (peak {:.1} MiB); first sending {:.0} ns per series, again in the hour {:.1} ns per series; estimated: {}",
        n,
        mib(exact_held),
        mib(exact_peak),
        exact_first.as_nanos() as f64 / n,
        exact_again.as_nanos() as f64 / n,
        exact.report(1).estimated
    );
    drop(exact);

    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);

    let hour = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 3600;
    let cardinality = Cardinality::default();
    let sketch = HourlySketch::default();
    sketch.advance(hour);
    let t = Instant::now();
    for p in &parts {
        cardinality.observe(std::slice::from_ref(p));
        for &k in p.keys.iter() {
            sketch.insert(spread(k));
        }
    }
    let first = t.elapsed();
    let held = LIVE.load(Ordering::Relaxed) - base;
    let peak = PEAK.load(Ordering::Relaxed) - base;

    let t = Instant::now();
    for p in &parts {
        cardinality.observe(std::slice::from_ref(p));
        for &k in p.keys.iter() {
            sketch.insert(spread(k));
        }
    }
    let again = t.elapsed();
    let t = Instant::now();
    let report = cardinality.report(10);
    let report_time = t.elapsed();
    let estimate = sketch.estimate(hour);

    println!(
        "cardinality at {SERIES} active series ({} parts of {PER_CHUNK}):",
        parts.len()
    );
    println!(
        "  heap held: {:.1} MiB (peak {:.1} MiB; target: at most 64 MiB)",
        mib(held),
        mib(peak)
    );
    println!(
        "  first sending (every series read): {:.0} ns per series",
        first.as_nanos() as f64 / SERIES as f64
    );
    println!(
        "  same series again in the hour (lookup only): {:.1} ns per series",
        again.as_nanos() as f64 / SERIES as f64
    );
    println!(
        "  report (top 10): {:.1} ms",
        report_time.as_secs_f64() * 1e3
    );
    println!(
        "  estimated: {} (1 in {:.0} series kept), total {}; workspace sketch: {estimate} ({:+.2} %)",
        report.estimated,
        1.0 / report.sample_rate,
        report.total_series,
        (estimate as f64 / SERIES as f64 - 1.0) * 100.0
    );
    for e in report.series_count_by_metric_name.iter().take(3) {
        println!("    {} {} (true: {})", e.name, e.value, SERIES / 200);
    }
    for e in report.label_value_count_by_label_name.iter() {
        println!("    values of {}: {}", e.name, e.value);
    }
    if mib(peak) > 64.0 {
        println!("  OVER the 64 MiB target");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
