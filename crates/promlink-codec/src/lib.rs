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
//!
//! Batching starts here too: requests are cut into chunks at the upstream [`BatchLimits`], and
//! the slow paths that open a queued batch again (a 413 split, removing repeats after a 422,
//! dropping samples older than `max_sample_age`) live in the `batch` module, next to the
//! chunk type.
//!
//! This is its own crate so that the fuzz targets (`fuzz/`) build only it and its few
//! dependencies; `promlink` re-exports it as `promlink::codec`.
//!
//! # Layout
//!
//! - `lib.rs`: [`decode`] and [`decode_chunks`], the snappy layer, the re-exports.
//! - `protocol.rs`, `options.rs`, `error.rs`: [`Protocol`] from the content type, [`Options`]
//!   and [`Limits`], [`DecodeError`].
//! - [`wire`]: an allocation-free protobuf wire walker; `validate.rs`: the specification's
//!   label rules.
//! - `v1/`: remote write 1.0 validated in place: the walk (`mod.rs`), the one-pass scan
//!   (`scan.rs`), the full path with its messages (`check.rs`).
//! - `v2.rs`: remote write 2.0 decoded and translated to 1.0 messages.
//! - `message.rs`: [`Entry`], one encoded 1.0 message, and what is read back out of one;
//!   `key.rs`: series keys; `counts.rs`: [`ChunkCounts`] and [`Counts`].
//! - [`chunk`]: [`Chunk`], compressed once, and the body of an upstream batch
//!   ([`write_body`]).
//! - `batch.rs`: [`BatchLimits`], [`split_chunk`], [`dedupe_chunks`], [`drop_older`].
//! - `series_cache.rs`: [`SeriesCache`], the label sections the 1.0 scan found valid, so that
//!   a series sent again skips the per-label checks.
//! - `relabel/`: `write_relabel_configs` on the receive path ([`Relabel`]: the rules and the
//!   bounded cache of what they make of each label set, `cache.rs`).
//! - `route/`: routing each series to its routes ([`RouteRule`], [`Routed`]), and each
//!   route's series budget (`budget.rs`, [`SeriesBudget`]).
//! - [`proto`]: the generated remote-write messages (`proto/` at the workspace's top level).
#![forbid(unsafe_code)]

/// Generated remote-write messages (see `proto/` at the workspace's top level).
pub mod proto {
    /// Remote write 1.0: `prometheus.WriteRequest`.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/prometheus.rs"));
    }
    /// Remote write 2.0: `io.prometheus.write.v2.Request`.
    pub mod v2 {
        include!(concat!(env!("OUT_DIR"), "/io.prometheus.write.v2.rs"));
    }
}

mod batch;
pub mod chunk;
mod counts;
mod error;
mod key;
mod message;
mod options;
mod protocol;
mod relabel;
mod route;
mod series_cache;
mod v1;
mod v2;
mod validate;
pub mod wire;

pub use batch::{
    dedupe, dedupe_chunks, drop_older, prune_older, split_chunk, Aged, BatchLimits, Pruned,
};
pub use chunk::{write_body, Chunk, ChunkBuilder, ChunkError, CHUNK_OVERHEAD};
pub use counts::{ChunkCounts, Counts};
pub use error::DecodeError;
pub use key::{put_label, series_key_of, SeriesKey};
pub use message::{Decoded, Entry, FIELD_METADATA, FIELD_TIMESERIES};
pub use options::{Limits, Options};
pub use promlink_relabel as relabel_rules;
pub use protocol::Protocol;
pub use relabel::{CacheStats, Relabel, RelabelDrops, DEFAULT_CACHE_BYTES};
pub use route::budget::SeriesBudget;
pub use route::{spread_part, RouteOutput, RouteRule, Routed};
pub use series_cache::{SeriesCache, SeriesCacheStats, DEFAULT_SERIES_CACHE_BYTES};

use bytes::Bytes;

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
    let too_large = |declared: u64| DecodeError::DecodedTooLarge {
        declared: usize::try_from(declared).unwrap_or(usize::MAX),
        limit: max_decoded_bytes,
    };
    match snap::raw::decompress_len(body) {
        Ok(declared) if declared > max_decoded_bytes => Err(too_large(declared as u64)),
        Ok(declared) => Ok(declared),
        // Over snappy's own 4 GiB limit: the real reason is our (smaller) limit.
        Err(snap::Error::TooBig { given, .. }) => Err(too_large(given)),
        Err(e) => Err(snappy_error(body, &e)),
    }
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
                relabel: w.relabel,
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
            counts,
        });
    }

    fn metadata(&mut self, key: u64, bytes: &[u8]) {
        self.0.push(Entry {
            shard_key: key,
            field: FIELD_METADATA,
            bytes: Bytes::copy_from_slice(bytes),
            counts: ChunkCounts::METADATA,
        });
    }
}

impl v1::Sink for route::RouteSink<'_> {
    fn series(&mut self, key: u64, pieces: &[&[u8]], counts: ChunkCounts, min_ts: i64) {
        route::RouteSink::series(self, key, pieces, counts, min_ts);
    }

    fn metadata(&mut self, _key: u64, bytes: &[u8]) {
        route::RouteSink::metadata(self, bytes);
    }
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
    /// Series the relabel rules removed.
    pub relabel: RelabelDrops,
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
    limits: &BatchLimits,
) -> Result<Chunked, DecodeError> {
    let mut routed = decode_routed(protocol, body, opts, &[RouteRule::all(*limits)])?;
    Ok(Chunked {
        chunks: routed.routes.pop().map(|r| r.chunks).unwrap_or_default(),
        counts: routed.counts,
        dropped_series: routed.dropped_series,
        relabel: routed.relabel,
    })
}

/// Decompresses, decodes and validates one request body, then routes each series to `routes`
/// (see the `route` module) and cuts each route's messages into chunks at its limits.
///
/// # Errors
/// Any [`DecodeError`] except the header-level ones.
pub fn decode_routed(
    protocol: Protocol,
    body: &Bytes,
    opts: &Options,
    routes: &[RouteRule],
) -> Result<Routed, DecodeError> {
    let declared = declared_len(body, opts.max_decoded_bytes)?;
    RAW.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < declared {
            buf.resize(declared, 0);
        }
        let n = snap::raw::Decoder::new()
            .decompress(body, &mut buf[..declared])
            .map_err(|e| snappy_error(body, &e));
        let result = n.and_then(|n| route_raw(protocol, body, &buf[..n], opts, routes));
        if buf.len() > KEEP_RAW {
            *buf = Vec::new();
        }
        result
    })
}

fn route_raw(
    protocol: Protocol,
    body: &Bytes,
    raw: &[u8],
    opts: &Options,
    routes: &[RouteRule],
) -> Result<Routed, DecodeError> {
    match protocol {
        Protocol::V1 => {
            let mut sink = route::RouteSink::new(routes, opts, raw);
            let w = v1::walk(raw, opts, &mut sink)?;
            let (routes, unrouted) = sink.finish(Some(body))?;
            Ok(Routed {
                routes,
                counts: w.counts,
                dropped_series: w.dropped_series,
                relabel: w.relabel,
                unrouted,
            })
        }
        Protocol::V2 => {
            let d = v2::decode(raw, opts)?;
            let mut sink = route::RouteSink::new(routes, opts, &[]);
            for e in &d.entries {
                if e.field == FIELD_TIMESERIES {
                    let min_ts = message::min_timestamp(&e.bytes);
                    sink.series(e.shard_key, &[&e.bytes], e.counts, min_ts);
                } else {
                    sink.metadata(&e.bytes);
                }
            }
            let (routes, unrouted) = sink.finish(None)?;
            Ok(Routed {
                routes,
                counts: d.counts,
                dropped_series: d.dropped_series,
                relabel: d.relabel,
                unrouted,
            })
        }
    }
}

#[cfg(test)]
mod tests;
