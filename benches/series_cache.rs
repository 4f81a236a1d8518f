//! The series cache (`series_cache_bytes`) on the receive path: CPU per series of
//! [`promlink::codec::decode_chunks`] over 100,000 series sent round after round in
//! 2,000-series requests, with the cache warm and without one, one after the other.
//!
//! Two series shapes: the relay load's (about nine labels, 250 bytes of labels, as
//! [`promlink::loadgen`] sends them) and a wide one (the same plus eight labels of the kind
//! kube-state-metrics and the Prometheus operator add: 17 labels, about 600 bytes), each
//! forwarded as sent and with `cluster` added. CPU is this thread's CPU clock; each figure is
//! the best of 8 alternating passes of 20 rounds, so that a noisy neighbour shows as a slower
//! pass, not as a slower figure.
//!
//! `cargo bench --bench series_cache` measures; without `--bench` (as `cargo test
//! --all-targets` runs it) one short pass checks that both ways give the same chunks.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use promlink::codec::{decode_chunks, BatchLimits, Options, Protocol, SeriesCache};
use promlink::loadgen::{encode as encode_request, series_labels};
use promlink::proto::v1::{Label, Sample, TimeSeries, WriteRequest};

const SERIES: usize = 100_000;
const PER_REQUEST: usize = 2_000;

/// Labels the wide shape adds (values vary with the series).
const WIDE: [(&str, &str); 8] = [
    ("app_kubernetes_io_name", "payments-api"),
    ("controller_revision_hash", "7d9f8b6c5"),
    ("endpoint", "http-metrics"),
    ("image", "registry.example.com/payments/api:v1.42.7"),
    ("service", "payments-api-headless"),
    ("topology_kubernetes_io_zone", "westeurope-2"),
    ("uid", "0f8e3c2a-5b7d-4e1f-9a6c-3d2b1e0f9a8c"),
    ("version", "v1.42.7"),
];

/// The requests of one round: every series once, without its own `cluster` label when one
/// is to be added.
fn round(wide: bool, cluster: bool) -> Vec<Bytes> {
    (0..SERIES / PER_REQUEST)
        .map(|r| {
            let timeseries = (r * PER_REQUEST..(r + 1) * PER_REQUEST)
                .map(|i| {
                    let mut labels: Vec<Label> = series_labels(i)
                        .into_iter()
                        .filter(|l| !cluster || l.name != "cluster")
                        .collect();
                    if wide {
                        labels.extend(WIDE.iter().map(|(n, v)| Label {
                            name: n.to_string(),
                            value: format!("{v}-{}", i % 97),
                        }));
                        labels.sort_by(|a, b| a.name.cmp(&b.name));
                    }
                    TimeSeries {
                        labels,
                        samples: vec![Sample {
                            value: i as f64,
                            timestamp: 1_700_000_000_000,
                        }],
                        ..Default::default()
                    }
                })
                .collect();
            Bytes::from(encode_request(&WriteRequest {
                timeseries,
                ..Default::default()
            }))
        })
        .collect()
}

fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn limits() -> BatchLimits {
    BatchLimits {
        max_samples: 5_000,
        max_bytes: 4 << 20,
        flush_interval: Duration::ZERO,
    }
}

/// Decodes every request of `bodies` `rounds` times; the CPU it took.
fn pass(bodies: &[Bytes], opts: &Options, rounds: usize) -> Duration {
    let start = thread_cpu();
    for _ in 0..rounds {
        for b in bodies {
            std::hint::black_box(decode_chunks(Protocol::V1, b, opts, &limits()).expect("decodes"));
        }
    }
    thread_cpu() - start
}

fn main() -> ExitCode {
    let bench = std::env::args().any(|a| a == "--bench");
    let (passes, rounds) = if bench { (8, 20) } else { (1, 1) };
    for (wide, cluster) in [(false, false), (false, true), (true, false), (true, true)] {
        let bodies = round(wide, cluster);
        let plain = Options {
            cluster: cluster.then(|| "aks-prod-westeurope".to_string()),
            ..Options::default()
        };
        let cache = SeriesCache::new(promlink::codec::DEFAULT_SERIES_CACHE_BYTES).map(Arc::new);
        let cached = Options {
            series_cache: cache.clone(),
            ..plain.clone()
        };
        // Warm: the first rounds grow the table and fill it.
        for _ in 0..3 {
            for b in &bodies {
                let (a, c) = (
                    decode_chunks(Protocol::V1, b, &plain, &limits()).expect("decodes"),
                    decode_chunks(Protocol::V1, b, &cached, &limits()).expect("decodes"),
                );
                let same = a.chunks.len() == c.chunks.len()
                    && a.chunks
                        .iter()
                        .zip(&c.chunks)
                        .all(|(x, y)| x.data == y.data && x.keys == y.keys && x.counts == y.counts);
                if !same {
                    eprintln!("series_cache: the cache changed a request's chunks");
                    return ExitCode::FAILURE;
                }
            }
        }
        let before = cache.as_ref().map(|c| c.stats()).unwrap_or_default();
        let (mut without, mut with) = (Duration::MAX, Duration::MAX);
        for _ in 0..passes {
            without = without.min(pass(&bodies, &plain, rounds));
            with = with.min(pass(&bodies, &cached, rounds));
        }
        let after = cache.as_ref().map(|c| c.stats()).unwrap_or_default();
        let per = |d: Duration| d.as_nanos() as f64 / (rounds * SERIES) as f64;
        let body_bytes = bodies[0].len();
        println!(
            "series_cache: {} series{}: {:.0} ns a series without the cache, {:.0} with it ({:+.0} %); {} hits, {} misses; table {:.1} MiB; request body {body_bytes} bytes",
            if wide { "wide (17 labels)" } else { "relay (9 labels)" },
            if cluster { ", cluster added" } else { "" },
            per(without),
            per(with),
            (per(with) / per(without) - 1.0) * 100.0,
            after.hits - before.hits,
            after.misses - before.misses,
            after.bytes as f64 / (1 << 20) as f64,
        );
    }
    ExitCode::SUCCESS
}
