//! The CPU path of one forwarded request: decode -> batch -> encode, on the real Prometheus 2.42
//! request bodies in `tests/fixtures/` (see its README).
//!
//! - `decode`: snappy-decompress, parse and validate one body into entries
//!   ([`promlink::codec::decode`]), what the receiver does per request.
//! - `encode`: concatenate entries into an upstream `WriteRequest` and snappy-compress it, what
//!   an upstream worker does per batch (mirrors `upstream::Scratch::encode`).
//! - `decode+encode`: both, per fixture and for all fixtures merged into one batch.
//!
//! Throughput is in samples (`elem/s` = samples/s); the metadata-only fixture, which carries no
//! samples, counts metadata entries instead and says so in its name.
//!
//! `cargo bench --bench pipeline` measures; `cargo test --all-targets` runs each case once, after
//! checking that encoding what was decoded decodes to the same entries.

use std::path::{Path, PathBuf};

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use promlink::codec::{decode, wire, Decoded, Entry, Options, Protocol};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn options() -> Options {
    Options {
        max_decoded_bytes: 64 << 20,
        ..Options::default()
    }
}

/// A fixture body with its decoded form.
struct Fixture {
    name: String,
    body: Vec<u8>,
    decoded: Decoded,
}

impl Fixture {
    /// Samples, or metadata entries for a body with no samples, with the bench id suffix.
    fn elements(&self) -> (u64, &'static str) {
        match self.decoded.counts.samples {
            0 => (self.decoded.counts.metadata, " (metadata entries)"),
            n => (n, ""),
        }
    }
}

fn load_fixtures() -> Vec<Fixture> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(FIXTURES)
        .expect("tests/fixtures")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "snappy"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no *.snappy fixtures in {FIXTURES}");
    paths.iter().map(|p| load(p)).collect()
}

fn load(path: &Path) -> Fixture {
    let body = std::fs::read(path).expect("read fixture");
    let decoded = decode(Protocol::V1, &body, &options())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("utf-8 file name")
        .to_string();
    // Encoding what was decoded must give a body that decodes to the same entries, so the
    // benchmark measures a correct path (and `cargo test` checks it).
    let round = decode(Protocol::V1, &encode(&decoded.entries), &options())
        .unwrap_or_else(|e| panic!("{name}: re-encoded body does not decode: {e}"));
    assert_eq!(round.counts, decoded.counts, "{name}: counts changed");
    assert!(
        round
            .entries
            .iter()
            .zip(&decoded.entries)
            .all(|(a, b)| a.field == b.field && a.bytes == b.bytes),
        "{name}: entries changed in the round trip"
    );
    Fixture {
        name,
        body,
        decoded,
    }
}

/// Concatenates entries into an encoded `WriteRequest` and snappy-compresses it, as the
/// upstream does per batch.
fn encode(entries: &[Entry]) -> Vec<u8> {
    let raw_len: usize = entries.iter().map(Entry::encoded_len).sum();
    let mut raw = Vec::with_capacity(raw_len);
    for e in entries {
        wire::put_len_field(&mut raw, e.field, &e.bytes);
    }
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .expect("snappy compression of an in-memory buffer")
}

fn benches(c: &mut Criterion) {
    let fixtures = load_fixtures();
    let opts = options();

    let mut group = c.benchmark_group("decode");
    for f in &fixtures {
        let (n, unit) = f.elements();
        group.throughput(Throughput::Elements(n));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{}{unit}", f.name)),
            &f.body,
            |b, body| b.iter(|| decode(Protocol::V1, black_box(body), &opts).unwrap()),
        );
    }
    group.finish();

    let mut group = c.benchmark_group("encode");
    for f in &fixtures {
        let (n, unit) = f.elements();
        group.throughput(Throughput::Elements(n));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{}{unit}", f.name)),
            &f.decoded.entries,
            |b, entries| b.iter(|| encode(black_box(entries))),
        );
    }
    group.finish();

    let mut group = c.benchmark_group("decode+encode");
    for f in &fixtures {
        let (n, unit) = f.elements();
        group.throughput(Throughput::Elements(n));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{}{unit}", f.name)),
            &f.body,
            |b, body| {
                b.iter(|| {
                    let d = decode(Protocol::V1, black_box(body), &opts).unwrap();
                    encode(&d.entries)
                })
            },
        );
    }
    // Every fixture decoded and merged into one upstream batch, as the batcher merges requests.
    // Throughput counts samples only, though the metadata fixture's work is included.
    let all_samples: u64 = fixtures.iter().map(|f| f.decoded.counts.samples).sum();
    group.throughput(Throughput::Elements(all_samples));
    group.bench_function(
        BenchmarkId::from_parameter("all fixtures, one batch"),
        |b| {
            b.iter(|| {
                let mut entries = Vec::new();
                for f in &fixtures {
                    entries.extend(
                        decode(Protocol::V1, black_box(&f.body), &opts)
                            .unwrap()
                            .entries,
                    );
                }
                encode(&entries)
            })
        },
    );
    group.finish();
}

criterion_group!(pipeline, benches);
criterion_main!(pipeline);
