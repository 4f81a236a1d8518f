//! Walking a request body straight off the wire: what the emulator counts, and the rules the
//! ingestion API enforces on series.

use prost::Message as _;

use crate::loadgen::checksum::series_hash_pairs;

/// What the emulator reads from a request body, straight off the wire (no owned strings, so
/// it can count a benchmark's load without becoming the bottleneck).
#[derive(Default)]
pub(super) struct Parsed {
    /// Per series, its checksum hash ([`series_hash_pairs`]).
    pub(super) series: Vec<u64>,
    /// Float samples: (series index, timestamp, value bits).
    pub(super) samples: Vec<(u32, i64, u64)>,
    /// Histogram samples: (series index, timestamp).
    pub(super) histograms: Vec<(u32, i64)>,
    pub(super) exemplars: u64,
    pub(super) metadata: u64,
    /// Float samples of promlink's canary (`promlink_canary`), left out of `samples` so that
    /// the counts and checksum are the sender's data alone.
    pub(super) canary_samples: u64,
}

impl Parsed {
    /// Every sample, float then histogram, as (series index, timestamp).
    pub(super) fn points(&self) -> impl Iterator<Item = (u32, i64)> + '_ {
        self.samples
            .iter()
            .map(|&(i, t, _)| (i, t))
            .chain(self.histograms.iter().copied())
    }
}

/// Why a body was refused.
pub(super) enum Refusal {
    /// Not a well-formed `prometheus.WriteRequest`.
    Wire(String),
    /// Well-formed, but a series breaks a rule.
    Content(&'static str),
}

impl From<crate::codec::DecodeError> for Refusal {
    fn from(e: crate::codec::DecodeError) -> Self {
        Refusal::Wire(e.to_string())
    }
}

/// Walks a `prometheus.WriteRequest` as strictly as a protobuf decoder (wire types of known
/// fields, UTF-8 strings, well-formed nested messages; unknown fields skipped) and checks the
/// rules the ingestion API enforces on series.
pub(super) fn parse_write_request(raw: &[u8]) -> Result<Parsed, Refusal> {
    use crate::codec::wire::{Fields, WireType};
    use crate::proto::v1::{Exemplar, Histogram, MetricMetadata};
    let wire = |what: &str| Refusal::Wire(what.to_owned());
    let mut out = Parsed::default();
    let mut labels: Vec<(&[u8], &[u8])> = Vec::with_capacity(16);
    for f in Fields::new(raw) {
        let f = f?;
        match (f.number, f.wire) {
            (1, WireType::Len) => {}
            (3, WireType::Len) => {
                MetricMetadata::decode(f.data).map_err(|e| Refusal::Wire(e.to_string()))?;
                out.metadata += 1;
                continue;
            }
            (1 | 3, _) => return Err(wire("WriteRequest field has the wrong wire type")),
            _ => continue,
        }
        let index = u32::try_from(out.series.len()).map_err(|_| wire("too many series"))?;
        labels.clear();
        for t in Fields::new(f.data) {
            let t = t?;
            if matches!(t.number, 1..=4) && t.wire != WireType::Len {
                return Err(wire("TimeSeries field has the wrong wire type"));
            }
            match t.number {
                1 => {
                    let utf8 = |s: &[u8]| s.is_ascii() || std::str::from_utf8(s).is_ok();
                    // The canonical encoding every sender uses, else field by field.
                    if let Some((_, name, value)) = crate::codec::wire::fast_label(t.data) {
                        if !(utf8(name) && utf8(value)) {
                            return Err(wire("invalid string value: data is not UTF-8 encoded"));
                        }
                        labels.push((name, value));
                        continue;
                    }
                    let (mut name, mut value): (&[u8], &[u8]) = (&[], &[]);
                    for l in Fields::new(t.data) {
                        let l = l?;
                        let slot = match l.number {
                            1 => &mut name,
                            2 => &mut value,
                            _ => continue,
                        };
                        if l.wire != WireType::Len {
                            return Err(wire("Label field has the wrong wire type"));
                        }
                        if !utf8(l.data) {
                            return Err(wire("invalid string value: data is not UTF-8 encoded"));
                        }
                        *slot = l.data;
                    }
                    labels.push((name, value));
                }
                2 => {
                    let (mut value, mut ts) = (0u64, 0i64);
                    for x in Fields::new(t.data) {
                        let x = x?;
                        match (x.number, x.wire) {
                            (1, WireType::Fixed64) => {
                                let mut a = [0u8; 8];
                                a.copy_from_slice(x.data);
                                value = u64::from_le_bytes(a);
                            }
                            (2, WireType::Varint) => ts = x.varint as i64,
                            (1 | 2, _) => return Err(wire("Sample field has the wrong wire type")),
                            _ => {}
                        }
                    }
                    out.samples.push((index, ts, value));
                }
                3 => {
                    Exemplar::decode(t.data).map_err(|e| Refusal::Wire(e.to_string()))?;
                    out.exemplars += 1;
                }
                4 => {
                    let h = Histogram::decode(t.data).map_err(|e| Refusal::Wire(e.to_string()))?;
                    out.histograms.push((index, h.timestamp));
                }
                _ => {}
            }
        }
        if !labels
            .iter()
            .any(|(n, v)| *n == b"__name__" && !v.is_empty())
        {
            return Err(Refusal::Content(
                "every time series needs a non-empty __name__ label",
            ));
        }
        if labels.iter().any(|(n, _)| n.is_empty()) {
            return Err(Refusal::Content("label names must not be empty"));
        }
        let h = series_hash_pairs(&mut labels);
        // Sorted now: a repeated name sits next to itself.
        if labels.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(Refusal::Content("a time series repeats a label name"));
        }
        if labels
            .iter()
            .any(|(n, v)| *n == b"__name__" && *v == crate::canary::METRIC.as_bytes())
        {
            let before = out.samples.len();
            out.samples.retain(|s| s.0 != index);
            out.canary_samples += (before - out.samples.len()) as u64;
        }
        out.series.push(h);
    }
    Ok(out)
}
