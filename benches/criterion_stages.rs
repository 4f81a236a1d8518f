//! The hot stages of the relay, measured one by one so the relay's CPU per sample can be split.
//!
//! Load shape of `benches/relay.rs`: one request of 2000 Kubernetes-shaped series (about nine
//! labels, one sample each, as [`promlink::loadgen`] and Prometheus send them). Stages:
//!
//! - `receive`: what the receiver does per request ([`promlink::codec::decode_chunks`]):
//!   snappy-decompress, walk and validate every series and compute its key; the request is
//!   forwarded as it came, so its chunk is the sender's compressed body; and with a `cluster`
//!   label to add, where every series changes and the request is compressed once; and with
//!   the relay bench's relabel rules (`benches/relabel-rules.yaml`: every kept series changes),
//!   the cache warm (the same series again, as every scrape sends them) and without a cache
//!   (every series runs the rules); and with the relabel oracle's rule set aimed at the load
//!   (`benches/relabel-oracle-rules.yaml`) without a cache: what a series seen for the first
//!   time costs;
//! - `receive: 100,000 series in turn`: the relay load's series in 50 requests walked in
//!   turn, with the series cache warm (label sets found valid before skip their checks) and
//!   without one, forwarded as sent and with `cluster` added;
//! - `batch body`: the upstream body of a batch from its chunks
//!   ([`promlink::codec::write_body`]: a concatenation, no compression);
//! - `snappy`: decompress + compress of the same bytes alone, what a relay that re-encodes
//!   pays on top of the walk;
//! - `queue`: one request's chunk through the durable queue: push (record encoding, CRC, write;
//!   fsync every hour, so the figure is CPU, not disk latency), pop the batch, finish it;
//! - `fixture receive`: `receive` on each real Prometheus 2.42 body in `tests/fixtures/`.
//!
//! Throughput is in samples (`elem/s`). `cargo bench --bench criterion_stages` measures;
//! `cargo test --all-targets` runs each case once.

use std::time::Duration;

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use promlink::codec::{decode_chunks, write_body, BatchLimits, Chunk, Options, Protocol};
use promlink::loadgen::{encode as encode_request, series_labels};
use promlink::proto::v1::{Sample, TimeSeries, WriteRequest};
use promlink::queue::{DiskQueue, DiskQueueConfig, FsyncPolicy};

const SAMPLES_PER_REQUEST: usize = 2000;
const BATCH_SAMPLES: usize = 5000;
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn options() -> Options {
    Options {
        max_decoded_bytes: 64 << 20,
        ..Options::default()
    }
}

fn limits() -> BatchLimits {
    BatchLimits {
        max_samples: BATCH_SAMPLES,
        max_bytes: 4 << 20,
        flush_interval: Duration::ZERO,
    }
}

/// A request body like the loadgen's: `n` distinct series starting at `first`, one sample each.
fn body(first: usize, n: usize) -> Bytes {
    body_with(first, n, |_| true)
}

/// The same, keeping only the labels `keep` accepts.
fn body_with(first: usize, n: usize, keep: impl Fn(&str) -> bool) -> Bytes {
    let timeseries = (first..first + n)
        .map(|i| TimeSeries {
            labels: series_labels(i)
                .into_iter()
                .filter(|l| keep(&l.name))
                .collect(),
            samples: vec![Sample {
                value: i as f64 * 10.0,
                timestamp: 1_700_000_000_000,
            }],
            ..Default::default()
        })
        .collect();
    Bytes::from(encode_request(&WriteRequest {
        timeseries,
        ..Default::default()
    }))
}

/// A rule set of the relay bench, from `benches/<file>`.
fn relabel_rules(file: &str) -> promlink::codec::relabel_rules::Rules {
    #[derive(serde::Deserialize)]
    struct File {
        write_relabel_configs: Vec<promlink::codec::relabel_rules::RelabelConfig>,
    }
    let path = format!("{}/benches/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let file: File = serde_saphyr::from_str(&text).expect("rules YAML");
    promlink::codec::relabel_rules::Rules::compile(&file.write_relabel_configs)
        .expect("valid rules")
}

fn chunks(body: &Bytes) -> Vec<Chunk> {
    decode_chunks(Protocol::V1, body, &options(), &limits())
        .expect("loadgen body decodes")
        .chunks
}

fn stages(c: &mut Criterion) {
    let opts = options();
    let request = body(0, SAMPLES_PER_REQUEST);
    let decoded = decode_chunks(Protocol::V1, &request, &opts, &limits()).expect("decodes");
    assert_eq!(decoded.counts.samples, SAMPLES_PER_REQUEST as u64);
    // The loadgen's series carry a cluster label of their own; without it, every series gets
    // one added and the request is compressed on receipt.
    let no_cluster = body_with(0, SAMPLES_PER_REQUEST, |name| name != "cluster");
    let with_cluster = Options {
        cluster: Some("aks-prod-westeurope".into()),
        ..options()
    };

    let relabel = |file: &str, cache_bytes: usize| Options {
        relabel: Some(std::sync::Arc::new(
            promlink::codec::Relabel::with_cache_bytes(relabel_rules(file), cache_bytes),
        )),
        ..options()
    };
    let worst = "relabel-rules.yaml";
    let (warm, uncached) = (
        relabel(worst, promlink::codec::DEFAULT_CACHE_BYTES),
        relabel(worst, 0),
    );
    let oracle_uncached = relabel("relabel-oracle-rules.yaml", 0);

    let mut group = c.benchmark_group("stages");
    group.throughput(Throughput::Elements(SAMPLES_PER_REQUEST as u64));
    group.bench_function("receive: 2000-sample request, forwarded as sent", |b| {
        b.iter(|| {
            decode_chunks(Protocol::V1, black_box(&request), &opts, &limits()).expect("decodes")
        })
    });
    group.bench_function("receive: 2000-sample request, cluster label added", |b| {
        b.iter(|| {
            decode_chunks(
                Protocol::V1,
                black_box(&no_cluster),
                &with_cluster,
                &limits(),
            )
            .expect("decodes")
        })
    });

    group.bench_function(
        "receive: 2000-sample request, relabel rules, cache warm",
        |b| {
            b.iter(|| {
                decode_chunks(Protocol::V1, black_box(&request), &warm, &limits()).expect("decodes")
            })
        },
    );
    group.bench_function(
        "receive: 2000-sample request, relabel rules, no cache",
        |b| {
            b.iter(|| {
                decode_chunks(Protocol::V1, black_box(&request), &uncached, &limits())
                    .expect("decodes")
            })
        },
    );
    group.bench_function(
        "receive: 2000-sample request, the oracle's relabel rules, no cache",
        |b| {
            b.iter(|| {
                decode_chunks(
                    Protocol::V1,
                    black_box(&request),
                    &oracle_uncached,
                    &limits(),
                )
                .expect("decodes")
            })
        },
    );

    // The relay load's 100,000 series in 50 requests, sent round after round: with the
    // series cache warm (every label set found valid before), and without one. Both walk the
    // same requests in turn, so the cache's table and the bodies come from memory as in the
    // relay, not from the CPU's cache.
    let series_cache = || {
        promlink::codec::SeriesCache::new(promlink::codec::DEFAULT_SERIES_CACHE_BYTES)
            .map(std::sync::Arc::new)
    };
    let cached = Options {
        series_cache: series_cache(),
        ..options()
    };
    let cached_cluster = Options {
        series_cache: series_cache(),
        ..with_cluster.clone()
    };
    let round: Vec<Bytes> = (0..50)
        .map(|r| body(r * SAMPLES_PER_REQUEST, SAMPLES_PER_REQUEST))
        .collect();
    let round_no_cluster: Vec<Bytes> = (0..50)
        .map(|r| {
            body_with(r * SAMPLES_PER_REQUEST, SAMPLES_PER_REQUEST, |n| {
                n != "cluster"
            })
        })
        .collect();
    for (bodies, o) in [(&round, &cached), (&round_no_cluster, &cached_cluster)] {
        for _ in 0..3 {
            for b in bodies {
                decode_chunks(Protocol::V1, b, o, &limits()).expect("decodes");
            }
        }
    }
    let hits = cached.series_cache.as_ref().map(|c| c.stats());
    for (name, bodies, o) in [
        ("forwarded as sent, series cache warm", &round, &cached),
        ("forwarded as sent, no series cache", &round, &opts),
        (
            "cluster label added, series cache warm",
            &round_no_cluster,
            &cached_cluster,
        ),
        (
            "cluster label added, no series cache",
            &round_no_cluster,
            &with_cluster,
        ),
    ] {
        let mut next = 0;
        group.bench_function(format!("receive: 100,000 series in turn, {name}"), |b| {
            b.iter(|| {
                next = (next + 1) % bodies.len();
                decode_chunks(Protocol::V1, black_box(&bodies[next]), o, &limits())
                    .expect("decodes")
            })
        });
    }
    if let (Some(before), Some(after)) = (hits, cached.series_cache.as_ref().map(|c| c.stats())) {
        println!(
            "series cache during the warm cases: {} hits, {} misses, table {} bytes",
            after.hits - before.hits,
            after.misses - before.misses,
            after.bytes
        );
    }

    // A batch of 5000 samples: the chunks of 2.5 requests.
    let mut batch: Vec<Chunk> = Vec::new();
    let mut first = 0;
    while batch.iter().map(|c| c.counts.points()).sum::<usize>() < BATCH_SAMPLES {
        batch.extend(chunks(&body(first, SAMPLES_PER_REQUEST / 2)));
        first += SAMPLES_PER_REQUEST / 2;
    }
    let batch_samples: usize = batch.iter().map(|c| c.counts.points()).sum();
    group.throughput(Throughput::Elements(batch_samples as u64));
    let mut out = Vec::new();
    group.bench_function("batch body: 5000 samples from chunks", |b| {
        b.iter(|| {
            write_body(black_box(&batch), &mut out);
            out.len()
        })
    });

    group.throughput(Throughput::Elements(SAMPLES_PER_REQUEST as u64));
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&request)
        .expect("snappy");
    let mut dec = snap::raw::Decoder::new();
    let mut enc = snap::raw::Encoder::new();
    let mut plain = vec![0u8; raw.len()];
    let mut packed = vec![0u8; snap::raw::max_compress_len(raw.len())];
    group.bench_function("snappy decompress+compress alone (2000 samples)", |b| {
        b.iter(|| {
            let n = dec
                .decompress(black_box(&request), &mut plain)
                .expect("snappy");
            enc.compress(&plain[..n], &mut packed).expect("snappy")
        })
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temporary directory");
    let (queue, _) = DiskQueue::open(DiskQueueConfig {
        dir: dir.path().to_owned(),
        max_bytes: 1 << 30,
        segment_bytes: 16 << 20,
        fsync: FsyncPolicy::Interval(Duration::from_secs(3600)),
        commit_delay: Duration::ZERO,
        recent_commit: promlink::queue::disk::RECENT_COMMIT,
        window_bytes: 8 << 20,
    })
    .expect("disk queue");
    let batch_limits = limits();
    group.bench_function("queue push+pop+done (2000-sample request, disk)", |b| {
        b.iter(|| {
            runtime.block_on(async {
                queue
                    .push(black_box(decoded.chunks.clone()))
                    .await
                    .expect("push");
                let b = queue.pop_batch(&batch_limits).await.expect("batch");
                queue.done(b);
            })
        })
    });
    group.finish();
    queue.close();

    let mut group = c.benchmark_group("fixture receive");
    let mut paths: Vec<_> = std::fs::read_dir(FIXTURES)
        .expect("tests/fixtures")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "snappy"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no *.snappy fixtures in {FIXTURES}");
    for path in paths {
        let body = Bytes::from(std::fs::read(&path).expect("fixture"));
        let d = decode_chunks(Protocol::V1, &body, &opts, &limits()).expect("fixture decodes");
        let elements = d.counts.samples.max(d.counts.metadata);
        group.throughput(Throughput::Elements(elements));
        let name = path.file_stem().and_then(|n| n.to_str()).unwrap_or("?");
        group.bench_function(name.to_string(), |b| {
            b.iter(|| {
                decode_chunks(Protocol::V1, black_box(&body), &opts, &limits()).expect("decodes")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
