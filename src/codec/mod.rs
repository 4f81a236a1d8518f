//! Remote-write decoding: snappy, protobuf and the specification's validity rules.
//!
//! Input is a request body from the receiver: snappy **block** format around a remote write 1.0
//! `prometheus.WriteRequest` or a 2.0 `io.prometheus.write.v2.Request`
//! (<https://prometheus.io/docs/specs/prw/remote_write_spec/>,
//! <https://prometheus.io/docs/specs/prw/remote_write_spec_2_0/>). Output is a list of
//! [`Entry`]s: each one encoded remote write 1.0 `TimeSeries` or `MetricMetadata`, ready to be
//! concatenated into an upstream `WriteRequest` by the batcher, with the hash of its series
//! that the queue's dispatcher uses to keep each series in order.
//!
//! Remote write 1.0 series are validated in place and handed on as the very bytes the sender
//! wrote (no re-encoding; values, stale markers and NaN payloads keep every bit). Remote write
//! 2.0 requests are translated to 1.0, because the Azure Monitor ingestion API documents 1.0
//! only.
//!
//! The receiver uses [`decode_chunks`]: one walk validates each series and computes its key;
//! the request becomes a [`Chunk`] that the queue stores and the upstream sends as it is: the
//! sender's own compressed bytes when nothing changed, else compressed once (see [`chunk`]).
//! [`decode`] gives the same messages as a list of [`Entry`]s (tests, tools).

pub mod chunk;
mod v1;
pub use chunk::{
    series_key_of, write_body, Chunk, ChunkBuilder, ChunkCounts, ChunkError, SeriesKey,
    CHUNK_OVERHEAD,
};
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
    /// Hash of the series' labels (or the metric family name for metadata); the dispatcher
    /// never has two batches holding the same key in flight, so each series stays in order.
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
    let declared = declared_len(body, max_decoded_bytes)?;
    let mut out = vec![0u8; declared];
    let n = snap::raw::Decoder::new()
        .decompress(body, &mut out)
        .map_err(|e| snappy_error(body, &e))?;
    out.truncate(n);
    Ok(out)
}

/// The error for a body of the other remote-write version than its content type says.
fn wrong_version(declared: Protocol) -> DecodeError {
    DecodeError::Protobuf(match declared {
        Protocol::V1 => "the body holds fields 4/5 (symbols, timeseries) of io.prometheus.write.v2.Request: a remote write 2.0 body sent as 1.0; send Content-Type: application/x-protobuf;proto=io.prometheus.write.v2.Request".into(),
        Protocol::V2 => "the body holds fields 1/3 (timeseries, metadata) of prometheus.WriteRequest: a remote write 1.0 body sent as 2.0; send Content-Type: application/x-protobuf (or ;proto=prometheus.WriteRequest)".into(),
    })
}

/// A snappy error, with what the body looks like when it is a common mistake.
fn snappy_error(body: &[u8], e: &snap::Error) -> DecodeError {
    const FRAMED: &[u8] = b"\xff\x06\x00\x00sNaPpY";
    let hint = if body.is_empty() {
        "; the body is empty"
    } else if body.starts_with(FRAMED) {
        "; the body is framed (stream) snappy, remote write needs the block format"
    } else if body.starts_with(&[0x1f, 0x8b]) {
        "; the body is gzip, remote write needs snappy block format"
    } else {
        ""
    };
    DecodeError::Snappy(format!("{e}{hint}"))
}

/// The decoded length a snappy block declares, refused when over `max_decoded_bytes`.
fn declared_len(body: &[u8], max_decoded_bytes: usize) -> Result<usize, DecodeError> {
    // Read the declared length first: snap refuses lengths over 4 GiB with an error that
    // would hide the real reason (a size over the limit).
    let mut value: u64 = 0;
    for (i, b) in body.iter().take(10).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if value > max_decoded_bytes as u64 {
                return Err(DecodeError::DecodedTooLarge {
                    declared: usize::try_from(value).unwrap_or(usize::MAX),
                    limit: max_decoded_bytes,
                });
            }
            break;
        }
    }
    let declared = snap::raw::decompress_len(body).map_err(|e| snappy_error(body, &e))?;
    if declared > max_decoded_bytes {
        return Err(DecodeError::DecodedTooLarge {
            declared,
            limit: max_decoded_bytes,
        });
    }
    Ok(declared)
}

/// Decompresses, decodes and validates one request body into a list of entries.
///
/// # Errors
/// Any [`DecodeError`] except the header-level ones.
pub fn decode(protocol: Protocol, body: &[u8], opts: &Options) -> Result<Decoded, DecodeError> {
    let raw = decompress(body, opts.max_decoded_bytes)?;
    match protocol {
        Protocol::V1 => {
            let mut sink = EntrySink(Vec::new());
            let w = v1::walk(&raw, opts, &mut sink)?;
            Ok(Decoded {
                entries: sink.0,
                counts: w.counts,
                dropped_series: w.dropped_series,
            })
        }
        Protocol::V2 => v2::decode(&raw, opts),
    }
}

/// Collects what the 1.0 walk accepts as entries (copies).
struct EntrySink(Vec<Entry>);

impl v1::Sink for EntrySink {
    fn series(&mut self, key: u64, pieces: &[&[u8]], counts: ChunkCounts, _min_ts: i64) {
        self.0.push(Entry {
            shard_key: key,
            field: FIELD_TIMESERIES,
            bytes: Bytes::from(pieces.concat()),
            samples: counts.samples,
            histograms: counts.histograms,
            exemplars: counts.exemplars,
        });
    }

    fn metadata(&mut self, key: u64, bytes: &[u8]) {
        self.0.push(Entry {
            shard_key: key,
            field: FIELD_METADATA,
            bytes: Bytes::copy_from_slice(bytes),
            samples: 0,
            histograms: 0,
            exemplars: 0,
        });
    }
}

impl v1::Sink for ChunkBuilder<'_> {
    fn series(&mut self, key: u64, pieces: &[&[u8]], counts: ChunkCounts, min_ts: i64) {
        self.add(Some(key), FIELD_TIMESERIES, pieces, counts, min_ts);
    }

    fn metadata(&mut self, _key: u64, bytes: &[u8]) {
        let counts = ChunkCounts {
            metadata: 1,
            ..ChunkCounts::default()
        };
        self.add(None, FIELD_METADATA, &[bytes], counts, i64::MAX);
    }
}

/// Where [`decode_chunks`] cuts a request: the upstream batch limits, so that a batch never
/// has to cut a chunk.
#[derive(Clone, Copy, Debug)]
pub struct ChunkLimits {
    /// Most samples plus histogram samples in one chunk.
    pub max_points: usize,
    /// Most uncompressed bytes in one chunk.
    pub max_raw: usize,
}

/// A request decoded into chunks, ready for the queue.
#[derive(Debug, Default)]
pub struct Chunked {
    /// The request's messages in order, in one chunk unless it exceeds the limits.
    pub chunks: Vec<Chunk>,
    /// Totals over the request.
    pub counts: Counts,
    /// Series dropped for breaking a label limit (with `drop_over_limit`).
    pub dropped_series: u64,
}

thread_local! {
    /// The decompressed body of the request being decoded on this thread, reused so the hot
    /// path neither allocates nor zeroes a fresh buffer per request.
    static RAW: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Decoded bodies larger than this do not keep their buffer for the next request.
const KEEP_RAW: usize = 16 << 20;

/// Decompresses, decodes and validates one request body and cuts it into chunks. A 1.0 body
/// forwarded unchanged and within the limits becomes one chunk holding the sender's own
/// compressed bytes: nothing is copied or compressed again.
///
/// # Errors
/// Any [`DecodeError`] except the header-level ones.
pub fn decode_chunks(
    protocol: Protocol,
    body: &Bytes,
    opts: &Options,
    limits: &ChunkLimits,
) -> Result<Chunked, DecodeError> {
    let declared = declared_len(body, opts.max_decoded_bytes)?;
    RAW.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < declared {
            buf.resize(declared, 0);
        }
        let n = snap::raw::Decoder::new()
            .decompress(body, &mut buf[..declared])
            .map_err(|e| snappy_error(body, &e));
        let result = n.and_then(|n| chunk_raw(protocol, body, &buf[..n], opts, limits));
        if buf.len() > KEEP_RAW {
            *buf = Vec::new();
        }
        result
    })
}

fn chunk_raw(
    protocol: Protocol,
    body: &Bytes,
    raw: &[u8],
    opts: &Options,
    limits: &ChunkLimits,
) -> Result<Chunked, DecodeError> {
    match protocol {
        Protocol::V1 => {
            let mut builder = ChunkBuilder::new(raw, limits.max_points, limits.max_raw);
            let w = v1::walk(raw, opts, &mut builder)?;
            Ok(Chunked {
                chunks: builder.finish(Some(body)),
                counts: w.counts,
                dropped_series: w.dropped_series,
            })
        }
        Protocol::V2 => {
            let d = v2::decode(raw, opts)?;
            let mut builder = ChunkBuilder::new(&[], limits.max_points, limits.max_raw);
            for e in &d.entries {
                builder.add_entry(e);
            }
            Ok(Chunked {
                chunks: builder.finish(None),
                counts: d.counts,
                dropped_series: d.dropped_series,
            })
        }
    }
}

/// A fast, stable hash of byte strings (metadata: the family name).
fn hash_bytes(parts: &[&[u8]]) -> u64 {
    use std::hash::Hasher;
    let mut h = rustc_hash::FxHasher::default();
    for p in parts {
        h.write(p);
        h.write_u8(0xff);
    }
    h.finish()
}

/// The key of a series: a hash of its labels in their canonical remote write 1.0
/// encoding (each `Label` as field 1 of `TimeSeries`, name then value, the value omitted when
/// empty, minimal varints), which is exactly the bytes every sender writes. One series has one
/// key whichever protocol or encoder it came through, so its order is kept across both.
pub(crate) fn labels_key(canonical: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = rustc_hash::FxHasher::default();
    h.write(canonical);
    h.finish()
}

/// Appends the canonical encoding of one label (see [`labels_key`]) to `out`.
pub(crate) fn put_label(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    let mut len = wire::len_field_size(1, name.len());
    if !value.is_empty() {
        len += wire::len_field_size(2, value.len());
    }
    wire::put_varint(out, 0x0a);
    wire::put_varint(out, len as u64);
    wire::put_len_field(out, 1, name);
    if !value.is_empty() {
        wire::put_len_field(out, 2, value);
    }
}

/// The shard key of a label set given as pairs, in order.
pub(crate) fn pairs_key<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> u64 {
    let mut buf = Vec::with_capacity(256);
    for (n, v) in pairs {
        put_label(&mut buf, n, v);
    }
    labels_key(&buf)
}

#[cfg(test)]
mod tests;
