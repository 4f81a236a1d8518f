//! Property: any bytes, under either content type, give a result and never a panic, and decoding
//! never holds more than a fixed multiple of `max_decoded_bytes`, whatever the body declares.
//! A counting global allocator measures the peak of live heap bytes during each decode.

use std::sync::atomic::Ordering;

use promlink::codec::{self, BatchLimits, Options, Protocol};
use proptest::prelude::*;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{LIVE, PEAK};

const MAX_DECODED: usize = 1 << 20;
/// What one decode may hold beyond what was live before it: the decompressed body, the
/// chunks (compressed copies), per-series keys, and the full decoder's owned entries.
const BOUND: usize = 12 * MAX_DECODED;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// Decodes `body` both ways and returns the peak extra heap bytes.
fn decode_both(protocol: Protocol, body: &[u8]) -> usize {
    let opts = Options {
        max_decoded_bytes: MAX_DECODED,
        ..Options::default()
    };
    let limits = BatchLimits {
        max_samples: 500,
        max_bytes: 64 << 10,
        flush_interval: std::time::Duration::ZERO,
    };
    let body = bytes::Bytes::copy_from_slice(body);
    // The two tests of this file measure one at a time.
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let chunked = codec::decode_chunks(protocol, &body, &opts, &limits);
    let full = codec::decode(protocol, &body, &opts);
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    assert_eq!(
        chunked.is_ok(),
        full.is_ok(),
        "{:?} vs {:?}",
        chunked.err(),
        full.err()
    );
    peak
}

/// Bodies: random bytes, random bytes behind a valid snappy header declaring up to 4 GiB,
/// snappy-compressed random protobuf-ish bytes, and real Prometheus bodies with bytes flipped.
fn bodies() -> impl Strategy<Value = Vec<u8>> {
    let fixtures: Vec<Vec<u8>> = [
        "prom242_rw1_500samples_a.snappy",
        "prom242_rw1_metadata_only.snappy",
        "prom242_rw1_mixed_stale_and_up0.snappy",
    ]
    .iter()
    .map(|f| fixture(f))
    .collect();
    let raw: Vec<Vec<u8>> = fixtures
        .iter()
        .map(|f| snap::raw::Decoder::new().decompress_vec(f).unwrap())
        .collect();
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..4096),
        (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..512)).prop_map(|(n, rest)| {
            let mut b = Vec::new();
            promlink::codec::wire::put_varint(&mut b, u64::from(n));
            b.extend(rest);
            b
        }),
        proptest::collection::vec(any::<u8>(), 0..4096)
            .prop_map(|r| snap::raw::Encoder::new().compress_vec(&r).unwrap()),
        (
            0..3usize,
            proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)
        )
            .prop_map(move |(i, flips)| {
                let mut r = raw[i].clone();
                for (at, b) in flips {
                    let n = r.len();
                    r[at % n] ^= b | 1;
                }
                snap::raw::Encoder::new().compress_vec(&r).unwrap()
            }),
        (0..3usize, any::<usize>()).prop_map(move |(i, cut)| {
            let f = &fixtures[i];
            f[..cut % f.len()].to_vec()
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_give_a_result_in_bounded_memory(body in bodies(), v2 in any::<bool>()) {
        let protocol = if v2 { Protocol::V2 } else { Protocol::V1 };
        let peak = decode_both(protocol, &body);
        prop_assert!(peak <= BOUND, "peak {peak} bytes for a {}-byte body", body.len());
    }
}

/// The bound is not vacuous: a real 1 MiB body does use a measurable share of it.
#[test]
fn the_measure_sees_real_decodes() {
    let peak = decode_both(Protocol::V1, &fixture("prom242_rw1_500samples_a.snappy"));
    assert!(peak > 10_000, "peak {peak}");
}
