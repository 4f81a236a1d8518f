// Shared by the decoder targets: the first byte chooses whether the rest is a request body as
// sent (snappy block) or raw protobuf that the target compresses first, so the fuzzer explores
// the protobuf and validation layers and not only snappy's. Both decode paths run: the one-pass
// chunking of the receiver and the full decoder that explains refusals; they must agree on
// whether the body is acceptable. The receiver's path runs again with a series cache shared by
// every input, which must not change its answer.

use promlink_codec as codec;
use promlink_codec::{BatchLimits, Options, Protocol, SeriesCache};
use std::sync::{Arc, OnceLock};

/// One small cache for every input, so that inputs meet the entries of earlier ones.
fn cache() -> Arc<SeriesCache> {
    static CACHE: OnceLock<Arc<SeriesCache>> = OnceLock::new();
    CACHE
        .get_or_init(|| Arc::new(SeriesCache::new(64 << 10).expect("cache")))
        .clone()
}

pub fn run(protocol: Protocol, data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let body = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        match snap::raw::Encoder::new().compress_vec(rest) {
            Ok(b) => b,
            Err(_) => return,
        }
    };
    let mut opts = Options {
        max_decoded_bytes: 1 << 20,
        ..Options::default()
    };
    if mode & 2 != 0 {
        opts.cluster = Some("fuzz".into());
    }
    opts.limits.drop_over_limit = mode & 4 != 0;
    let limits = BatchLimits {
        max_samples: 1 + usize::from(mode >> 3) * 37,
        max_bytes: 4 << 10,
        flush_interval: std::time::Duration::ZERO,
    };
    let body = bytes::Bytes::from(body);
    let chunked = codec::decode_chunks(protocol, &body, &opts, &limits);
    let full = codec::decode(protocol, &body, &opts);
    let cached_opts = Options {
        series_cache: Some(cache()),
        ..opts.clone()
    };
    let cached = codec::decode_chunks(protocol, &body, &cached_opts, &limits);
    match (&chunked, &cached) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.counts, b.counts, "the series cache changed the counts");
            assert_eq!(a.chunks.len(), b.chunks.len(), "the series cache changed the chunks");
            for (x, y) in a.chunks.iter().zip(&b.chunks) {
                assert!(x.data == y.data && x.keys == y.keys, "the series cache changed a chunk");
            }
        }
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "the series cache changed the refusal"),
        (a, b) => panic!("the series cache changed the answer: {:?} vs {:?}", a.as_ref().err(), b.as_ref().err()),
    }
    assert_eq!(
        chunked.is_ok(),
        full.is_ok(),
        "the receiver's path and the full decoder disagree: {:?} vs {:?}",
        chunked.as_ref().err(),
        full.as_ref().err()
    );
    if let (Ok(c), Ok(f)) = (&chunked, &full) {
        assert_eq!(c.counts, f.counts, "counts differ between the two paths");
        let points: u64 = c.chunks.iter().map(|ch| u64::from(ch.counts.samples) + u64::from(ch.counts.histograms)).sum();
        assert_eq!(points, c.counts.samples + c.counts.histograms);
    }
}
