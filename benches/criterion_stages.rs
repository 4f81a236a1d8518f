//! The hot stages of the relay on the load of `benches/relay.rs`: one request of 2000
//! Kubernetes-shaped series (about nine labels, one sample each, as [`promlink::loadgen`] and
//! Prometheus send them), measured stage by stage so the relay's CPU per sample can be split.
//!
//! - `decode`: snappy-decompress, parse and validate the body into entries
//!   ([`promlink::codec::decode`]), what the receiver does per request;
//! - `rebatch+encode`: concatenate 5000 entries (promlink's default batch) into an upstream
//!   `WriteRequest` and snappy-compress it with a reused encoder (mirrors
//!   `upstream::Scratch::encode`);
//! - `snappy`: decompress + compress of the same bytes alone, the floor of any relay that
//!   cannot forward the sender's compressed bytes as they are;
//! - `queue`: one request through the durable queue: push (record encoding, CRC, write; fsync
//!   every hour, so the figure is CPU, not disk latency), pop the batches and acknowledge them.
//!
//! Throughput is in samples (`elem/s`). `cargo bench --bench criterion_stages` measures;
//! `cargo test --all-targets` runs each case once.

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use promlink::codec::{decode, wire, Entry, Options, Protocol};
use promlink::loadgen::{encode as encode_request, series_labels};
use promlink::proto::v1::{Sample, TimeSeries, WriteRequest};
use promlink::queue::{BatchLimits, DiskQueue, DiskQueueConfig, FsyncPolicy};

const SAMPLES_PER_REQUEST: usize = 2000;
const BATCH_SAMPLES: usize = 5000;

fn options() -> Options {
    Options {
        max_decoded_bytes: 64 << 20,
        ..Options::default()
    }
}

/// A request body like the loadgen's: `n` distinct series starting at `first`, one sample each.
fn body(first: usize, n: usize) -> Vec<u8> {
    let timeseries = (first..first + n)
        .map(|i| TimeSeries {
            labels: series_labels(i),
            samples: vec![Sample {
                value: i as f64 * 10.0,
                timestamp: 1_700_000_000_000,
            }],
            ..Default::default()
        })
        .collect();
    encode_request(&WriteRequest {
        timeseries,
        ..Default::default()
    })
}

struct Scratch {
    raw: Vec<u8>,
    out: Vec<u8>,
    encoder: snap::raw::Encoder,
}

impl Scratch {
    fn encode(&mut self, entries: &[Entry]) -> usize {
        self.raw.clear();
        for e in entries {
            wire::put_len_field(&mut self.raw, e.field, &e.bytes);
        }
        self.out
            .resize(snap::raw::max_compress_len(self.raw.len()), 0);
        self.encoder
            .compress(&self.raw, &mut self.out)
            .expect("snappy compression of an in-memory buffer")
    }
}

fn stages(c: &mut Criterion) {
    let opts = options();
    let request = body(0, SAMPLES_PER_REQUEST);
    let decoded = decode(Protocol::V1, &request, &opts).expect("loadgen body decodes");
    assert_eq!(decoded.counts.samples, SAMPLES_PER_REQUEST as u64);
    let mut batch: Vec<Entry> = Vec::with_capacity(BATCH_SAMPLES);
    let mut first = 0;
    while batch.len() < BATCH_SAMPLES {
        batch.extend(
            decode(Protocol::V1, &body(first, SAMPLES_PER_REQUEST), &opts)
                .expect("decodes")
                .entries,
        );
        first += SAMPLES_PER_REQUEST;
    }
    batch.truncate(BATCH_SAMPLES);

    let mut group = c.benchmark_group("stages");
    group.throughput(Throughput::Elements(SAMPLES_PER_REQUEST as u64));
    group.bench_function("decode (2000-sample request)", |b| {
        b.iter(|| decode(Protocol::V1, black_box(&request), &opts).expect("decodes"))
    });

    group.throughput(Throughput::Elements(BATCH_SAMPLES as u64));
    let mut scratch = Scratch {
        raw: Vec::new(),
        out: Vec::new(),
        encoder: snap::raw::Encoder::new(),
    };
    group.bench_function("rebatch+encode (5000-sample batch)", |b| {
        b.iter(|| scratch.encode(black_box(&batch)))
    });

    group.throughput(Throughput::Elements(SAMPLES_PER_REQUEST as u64));
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&request)
        .expect("snappy");
    let mut dec = snap::raw::Decoder::new();
    let mut enc = snap::raw::Encoder::new();
    let mut plain = vec![0u8; raw.len()];
    let mut packed = vec![0u8; snap::raw::max_compress_len(raw.len())];
    group.bench_function("snappy decompress+compress (2000 samples)", |b| {
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
        shards: 4,
        max_bytes: 1 << 30,
        segment_bytes: 16 << 20,
        fsync: FsyncPolicy::Interval(Duration::from_secs(3600)),
    })
    .expect("disk queue");
    let limits = BatchLimits {
        max_samples: BATCH_SAMPLES,
        max_bytes: 4 << 20,
        flush_interval: Duration::ZERO,
    };
    let mut per_shard = vec![0usize; queue.shards()];
    for e in &decoded.entries {
        per_shard[(e.shard_key % queue.shards() as u64) as usize] += 1;
    }
    group.bench_function("queue push+pop+ack (2000-sample request, disk)", |b| {
        b.iter(|| {
            runtime.block_on(async {
                queue
                    .push(black_box(decoded.entries.clone()))
                    .await
                    .expect("push");
                for (shard, &want) in per_shard.iter().enumerate() {
                    let mut left = want;
                    while left > 0 {
                        let b = queue.pop_batch(shard, &limits).await.expect("batch");
                        left = left.saturating_sub(b.entries.len());
                        queue.ack(shard, &b);
                    }
                }
            })
        })
    });
    group.finish();
    queue.close();
}

criterion_group!(benches, stages);
criterion_main!(benches);
