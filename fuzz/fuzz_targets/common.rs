// Shared by the decoder targets: the first byte chooses whether the rest is a request body as
// sent (snappy block) or raw protobuf that the target compresses first, so the fuzzer explores
// the protobuf and validation layers and not only snappy's. Both decode paths run: the one-pass
// chunking of the receiver and the full decoder that explains refusals; they must agree on
// whether the body is acceptable.

use promlink_codec as codec;
use promlink_codec::{BatchLimits, Options, Protocol};

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
