//! An order-independent checksum over remote-write samples, so loss and duplication both show.
//!
//! Every float sample contributes a 64-bit hash of (series labels, timestamp, value bits). The
//! checksum keeps the count, the wrapping sum and the xor of those hashes: order and request
//! boundaries do not matter, a lost sample changes all three, a duplicated one changes the count
//! and the sum (the xor alone would cancel it). Labels are hashed sorted by name, so a forwarder
//! that re-sorts labels keeps the checksum. Value bits are hashed as they are, so stale markers
//! (a NaN with bits `0x7ff0000000000002`) count as their own value. Native histograms and
//! exemplars are counted by the emulator separately, not hashed here.
//!
//! The series hash mixes the label bytes eight at a time (multiply-rotate, each string's length
//! mixed in so boundaries are unambiguous) and finishes with the splitmix64 mixer: defined here,
//! so stable across builds and platforms; fast enough that the emulator can hash every series
//! of a benchmark; not cryptographic (the emulator trusts its client).

use crate::proto::v1::{Label, Sample, WriteRequest};

/// An order-independent digest of a multiset of samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Checksum {
    /// Number of samples added.
    pub samples: u64,
    /// Wrapping sum of the per-sample hashes.
    pub sum: u64,
    /// Xor of the per-sample hashes.
    pub xor: u64,
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

/// Mixes one byte string (and its length) into `h`.
fn mix(mut h: u64, bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let mut a = [0u8; 8];
        a.copy_from_slice(w);
        h = (h ^ u64::from_le_bytes(a))
            .wrapping_mul(MIX)
            .rotate_left(31);
    }
    let mut tail = 0u64;
    for (i, &b) in words.remainder().iter().enumerate() {
        tail |= u64::from(b) << (8 * i);
    }
    h = (h ^ tail).wrapping_mul(MIX).rotate_left(31);
    (h ^ bytes.len() as u64).wrapping_mul(MIX)
}

/// A stable 64-bit hash of a label set, independent of label order.
pub fn series_hash(labels: &[Label]) -> u64 {
    let mut pairs: Vec<(&[u8], &[u8])> = labels
        .iter()
        .map(|l| (l.name.as_bytes(), l.value.as_bytes()))
        .collect();
    series_hash_pairs(&mut pairs)
}

/// [`series_hash`] of a label set given as (name, value) byte pairs, which are sorted in place
/// when they are not already (senders sort them, so usually nothing moves).
pub fn series_hash_pairs(pairs: &mut [(&[u8], &[u8])]) -> u64 {
    if !pairs.windows(2).all(|w| w[0] <= w[1]) {
        pairs.sort_unstable();
    }
    let mut h = 0xcbf2_9ce4_8422_2325;
    for (name, value) in pairs.iter() {
        h = mix(h, name);
        h = mix(h, value);
    }
    splitmix64(h)
}

/// The hash of one sample of the series whose [`series_hash`] is `series`.
pub fn sample_hash(series: u64, timestamp_ms: i64, value: f64) -> u64 {
    // The timestamp's two's-complement bits are what is hashed.
    let ts = splitmix64(series ^ (timestamp_ms as u64));
    splitmix64(ts ^ value.to_bits().rotate_left(17))
}

impl Checksum {
    /// An empty checksum.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one sample of the series with hash `series`.
    pub fn add(&mut self, series: u64, timestamp_ms: i64, value: f64) {
        let h = sample_hash(series, timestamp_ms, value);
        self.samples += 1;
        self.sum = self.sum.wrapping_add(h);
        self.xor ^= h;
    }

    /// Adds the samples of one series.
    pub fn add_series(&mut self, labels: &[Label], samples: &[Sample]) {
        let series = series_hash(labels);
        for s in samples {
            self.add(series, s.timestamp, s.value);
        }
    }

    /// Adds every float sample of a request.
    pub fn add_request(&mut self, request: &WriteRequest) {
        for ts in &request.timeseries {
            self.add_series(&ts.labels, &ts.samples);
        }
    }

    /// The checksum of a request's float samples.
    pub fn of_request(request: &WriteRequest) -> Self {
        let mut c = Self::new();
        c.add_request(request);
        c
    }

    /// Combines two checksums: the checksum of the union (with multiplicity) of their samples.
    pub fn merge(&mut self, other: &Checksum) {
        self.samples += other.samples;
        self.sum = self.sum.wrapping_add(other.sum);
        self.xor ^= other.xor;
    }
}

impl std::fmt::Display for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} samples, sum {:016x}, xor {:016x}",
            self.samples, self.sum, self.xor
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::TimeSeries;

    fn label(name: &str, value: &str) -> Label {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }

    fn series(name: &str, samples: &[(i64, f64)]) -> TimeSeries {
        TimeSeries {
            labels: vec![label("__name__", name), label("job", "x")],
            samples: samples
                .iter()
                .map(|&(timestamp, value)| Sample { value, timestamp })
                .collect(),
            ..Default::default()
        }
    }

    fn request(ts: Vec<TimeSeries>) -> WriteRequest {
        WriteRequest {
            timeseries: ts,
            ..Default::default()
        }
    }

    #[test]
    fn checksum_is_order_and_batch_independent() {
        let a = series("a", &[(1, 1.0), (2, 2.0)]);
        let b = series("b", &[(1, 1.0)]);
        let whole = Checksum::of_request(&request(vec![a.clone(), b.clone()]));
        let mut split = Checksum::of_request(&request(vec![b.clone()]));
        split.merge(&Checksum::of_request(&request(vec![
            series("a", &[(2, 2.0)]),
            series("a", &[(1, 1.0)]),
        ])));
        assert_eq!(whole, split);
        // Label order does not matter.
        let mut reversed = a.clone();
        reversed.labels.reverse();
        assert_eq!(
            Checksum::of_request(&request(vec![a])),
            Checksum::of_request(&request(vec![reversed]))
        );
    }

    #[test]
    fn checksum_shows_loss_duplication_and_changes() {
        let full =
            Checksum::of_request(&request(vec![series("a", &[(1, 1.0), (2, 2.0), (3, 3.0)])]));
        let cases = [
            ("lost sample", vec![series("a", &[(1, 1.0), (2, 2.0)])]),
            (
                "duplicated sample",
                vec![series("a", &[(1, 1.0), (2, 2.0), (3, 3.0), (3, 3.0)])],
            ),
            (
                "changed value",
                vec![series("a", &[(1, 1.0), (2, 2.5), (3, 3.0)])],
            ),
            (
                "changed timestamp",
                vec![series("a", &[(1, 1.0), (2, 2.0), (4, 3.0)])],
            ),
            (
                "other series",
                vec![series("b", &[(1, 1.0), (2, 2.0), (3, 3.0)])],
            ),
            (
                "stale marker",
                vec![series(
                    "a",
                    &[
                        (1, 1.0),
                        (2, 2.0),
                        (3, f64::from_bits(0x7ff0_0000_0000_0002)),
                    ],
                )],
            ),
        ];
        for (name, ts) in cases {
            assert_ne!(Checksum::of_request(&request(ts)), full, "{name}");
        }
        // A duplicated pair must not cancel out (xor alone would).
        let twice = Checksum::of_request(&request(vec![series("a", &[(1, 1.0), (1, 1.0)])]));
        let mut expected = Checksum::new();
        expected.add(series_hash(&series("a", &[]).labels), 1, 1.0);
        assert_ne!(twice.sum, expected.sum);
        assert_eq!(twice.samples, 2);
    }

    #[test]
    fn label_boundaries_are_unambiguous() {
        assert_ne!(
            series_hash(&[label("ab", "c")]),
            series_hash(&[label("a", "bc")])
        );
        assert_ne!(
            series_hash(&[label("a", "b"), label("c", "d")]),
            series_hash(&[label("a", "bcd")])
        );
    }
}
