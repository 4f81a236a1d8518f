//! Remote-write decoding: snappy, protobuf and the specification's validity rules.
//!
//! Input is a request body from the receiver: snappy **block** format around a remote write 1.0
//! `prometheus.WriteRequest` or a 2.0 `io.prometheus.write.v2.Request`
//! (<https://prometheus.io/docs/specs/prw/remote_write_spec/>,
//! <https://prometheus.io/docs/specs/prw/remote_write_spec_2_0/>). Output is a list of
//! [`Entry`]s: each one encoded remote write 1.0 `TimeSeries` or `MetricMetadata`, ready to be
//! concatenated into an upstream `WriteRequest` by the batcher, with the hash that picks its
//! shard.
//!
//! Remote write 1.0 series are validated in place and handed on as the very bytes the sender
//! wrote (no re-encoding; values, stale markers and NaN payloads keep every bit). Remote write
//! 2.0 requests are translated to 1.0, because the Azure Monitor ingestion API documents 1.0
//! only.

mod v1;
pub use v1::{dedupe, prune_older, Pruned};
mod v2;
mod validate;
pub mod wire;

use bytes::Bytes;

/// Protobuf field number of `WriteRequest.timeseries`.
pub const FIELD_TIMESERIES: u32 = 1;
/// Protobuf field number of `WriteRequest.metadata`.
pub const FIELD_METADATA: u32 = 3;

/// Which remote-write message a body holds, chosen by its `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `prometheus.WriteRequest` (remote write 1.0).
    V1,
    /// `io.prometheus.write.v2.Request` (remote write 2.0).
    V2,
}

impl Protocol {
    /// Picks the protocol from a `Content-Type` header value, per the 2.0 specification:
    /// `application/x-protobuf` alone means 1.0.
    ///
    /// # Errors
    /// [`DecodeError::UnsupportedContentType`] for anything else.
    pub fn from_content_type(value: Option<&str>) -> Result<Self, DecodeError> {
        let unsupported =
            || DecodeError::UnsupportedContentType(value.unwrap_or("<missing>").to_string());
        let value = value.ok_or_else(unsupported)?;
        let mut parts = value.split(';').map(str::trim);
        if !parts
            .next()
            .is_some_and(|m| m.eq_ignore_ascii_case("application/x-protobuf"))
        {
            return Err(unsupported());
        }
        let mut proto = Protocol::V1;
        for param in parts.filter(|p| !p.is_empty()) {
            let (k, v) = param.split_once('=').ok_or_else(unsupported)?;
            if !k.trim().eq_ignore_ascii_case("proto") {
                continue;
            }
            proto = match v.trim().trim_matches('"') {
                "prometheus.WriteRequest" => Protocol::V1,
                "io.prometheus.write.v2.Request" => Protocol::V2,
                _ => return Err(unsupported()),
            };
        }
        Ok(proto)
    }
}

/// One unit handed from the receiver to the queue: an encoded remote write 1.0 message.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Hash of the series' labels (or the metric family name for metadata); picks the shard,
    /// so one series always travels through one shard, in order.
    pub shard_key: u64,
    /// `FIELD_TIMESERIES` or `FIELD_METADATA`: which `WriteRequest` field the bytes belong in.
    pub field: u32,
    /// The encoded message, without its field key and length.
    pub bytes: Bytes,
    /// Float samples in this entry.
    pub samples: u32,
    /// Native histogram samples in this entry.
    pub histograms: u32,
    /// Exemplars in this entry.
    pub exemplars: u32,
}

impl Entry {
    /// Size of this entry inside an encoded `WriteRequest`.
    pub fn encoded_len(&self) -> usize {
        wire::len_field_size(self.field, self.bytes.len())
    }
}

/// What one request held, for counters and the 2.0 `X-Prometheus-Remote-Write-*-Written` headers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Series entries.
    pub series: u64,
    /// Float samples.
    pub samples: u64,
    /// Native histogram samples.
    pub histograms: u64,
    /// Exemplars.
    pub exemplars: u64,
    /// Metadata entries.
    pub metadata: u64,
}

/// A decoded, validated request.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Entries in the order the sender wrote them.
    pub entries: Vec<Entry>,
    /// Totals over the entries.
    pub counts: Counts,
    /// Series dropped for breaking a label limit (with `drop_over_limit`), not in `entries`.
    pub dropped_series: u64,
}

/// Decoding options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Largest decoded (decompressed) body accepted, checked against the snappy header before
    /// anything is allocated.
    pub max_decoded_bytes: usize,
    /// When set, series without a `cluster` label get `cluster="<value>"` (what Azure's
    /// sidecar does with `CLUSTER`).
    pub cluster: Option<String>,
    /// Per-request and per-series limits.
    pub limits: Limits,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_decoded_bytes: 64 << 20,
            cluster: None,
            limits: Limits::default(),
        }
    }
}

/// Limits on what one request may hold. Azure Monitor documents 63 labels per series, label
/// names up to 511 characters and values up to 1023 for its scraping pipeline; the defaults
/// follow them so a series Azure would refuse is caught at the edge, with a clear message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most series in one request.
    pub max_series: usize,
    /// Most labels in one series (the metric name included).
    pub max_labels: usize,
    /// Longest label name, bytes.
    pub max_name_len: usize,
    /// Longest label value, bytes.
    pub max_value_len: usize,
    /// Most samples plus histogram samples in one series of one request.
    pub max_samples_per_series: usize,
    /// Drop a series that breaks a label limit (counted) instead of refusing the request.
    pub drop_over_limit: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_series: 200_000,
            max_labels: 63,
            max_name_len: 511,
            max_value_len: 1023,
            max_samples_per_series: 100_000,
            drop_over_limit: false,
        }
    }
}

impl Limits {
    /// The first label limit `labels` breaks, as a rule for an error message.
    fn check_labels<'a>(
        &self,
        labels: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Option<String> {
        if labels.len() > self.max_labels {
            return Some(format!(
                "{} labels, over the limit of {}",
                labels.len(),
                self.max_labels
            ));
        }
        for (n, v) in labels {
            if n.len() > self.max_name_len {
                return Some(format!(
                    "label name {:?}... is {} bytes, over the limit of {}",
                    String::from_utf8_lossy(&n[..32.min(n.len())]),
                    n.len(),
                    self.max_name_len
                ));
            }
            if v.len() > self.max_value_len {
                return Some(format!(
                    "value of label {:?} is {} bytes, over the limit of {}",
                    String::from_utf8_lossy(&n[..64.min(n.len())]),
                    v.len(),
                    self.max_value_len
                ));
            }
        }
        None
    }
}

/// Why a request body was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// `Content-Type` is not a remote-write protobuf type.
    #[error("unsupported content type {0:?}: expected application/x-protobuf, optionally with proto=prometheus.WriteRequest or proto=io.prometheus.write.v2.Request")]
    UnsupportedContentType(String),
    /// `Content-Encoding` is not `snappy`.
    #[error("unsupported content encoding {0:?}: expected snappy (block format)")]
    UnsupportedEncoding(String),
    /// The compressed body is over the limit.
    #[error("body of {size} bytes exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// Bytes received (at least).
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// The snappy header declares a decoded size over the limit.
    #[error("snappy header declares {declared} decoded bytes, over the limit of {limit} bytes")]
    DecodedTooLarge {
        /// Declared decoded size.
        declared: usize,
        /// Configured limit.
        limit: usize,
    },
    /// The body is not valid snappy block data.
    #[error("invalid snappy block data: {0}")]
    Snappy(String),
    /// The decoded body is not a valid protobuf message of the expected type.
    #[error("invalid protobuf: {0}")]
    Protobuf(String),
    /// The request holds more series than allowed.
    #[error("request holds more than {limit} series")]
    TooManySeries {
        /// The limit.
        limit: usize,
    },
    /// A series breaks a configured limit (labels, lengths, samples).
    #[error("series {series}: {rule}")]
    Limit {
        /// The series, rendered like `up{job="x"}` (possibly shortened).
        series: String,
        /// The limit it breaks.
        rule: String,
    },
    /// A series breaks a rule of the specification.
    #[error("series {series}: {rule}")]
    Invalid {
        /// The series, rendered like `up{job="x"}` (possibly shortened).
        series: String,
        /// The rule it breaks.
        rule: String,
    },
}

/// Decompresses a snappy block body, refusing before allocation when the declared decoded
/// length is over `max_decoded_bytes`.
///
/// # Errors
/// [`DecodeError::DecodedTooLarge`] or [`DecodeError::Snappy`].
pub fn decompress(body: &[u8], max_decoded_bytes: usize) -> Result<Vec<u8>, DecodeError> {
    let declared =
        snap::raw::decompress_len(body).map_err(|e| DecodeError::Snappy(e.to_string()))?;
    if declared > max_decoded_bytes {
        return Err(DecodeError::DecodedTooLarge {
            declared,
            limit: max_decoded_bytes,
        });
    }
    let mut out = vec![0u8; declared];
    let n = snap::raw::Decoder::new()
        .decompress(body, &mut out)
        .map_err(|e| DecodeError::Snappy(e.to_string()))?;
    out.truncate(n);
    Ok(out)
}

/// Decompresses, decodes and validates one request body.
///
/// # Errors
/// Any [`DecodeError`] except the header-level ones.
pub fn decode(protocol: Protocol, body: &[u8], opts: &Options) -> Result<Decoded, DecodeError> {
    let raw = Bytes::from(decompress(body, opts.max_decoded_bytes)?);
    match protocol {
        Protocol::V1 => v1::decode(raw, opts),
        Protocol::V2 => v2::decode(&raw, opts),
    }
}

/// A fast, stable hash of a series' label bytes.
fn hash_bytes(parts: &[&[u8]]) -> u64 {
    use std::hash::Hasher;
    let mut h = rustc_hash::FxHasher::default();
    for p in parts {
        h.write(p);
        h.write_u8(0xff);
    }
    h.finish()
}

#[cfg(test)]
mod tests;
