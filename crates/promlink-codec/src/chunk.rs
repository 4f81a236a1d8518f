//! Chunks: the messages of one request, compressed once, as the upstream will send them.
//!
//! A [`Chunk`] holds encoded remote write 1.0 `WriteRequest` fields (`timeseries` = 1 and
//! `metadata` = 3, each with its key and length) as one snappy raw block stored *without* the
//! block's length preamble, plus the [series keys](Chunk::keys) of the series in it. Snappy's
//! block format lets such element streams be concatenated: a copy element reaches back only
//! into the output of its own block, so the body of an upstream batch is the varint of the
//! summed uncompressed lengths followed by each chunk's bytes ([`write_body`];
//! <https://github.com/google/snappy/blob/main/format_description.txt>). Concatenated protobuf
//! fields form a valid message, so a batch needs neither decoding nor recompression.
//!
//! When a request is forwarded unchanged (every field kept, nothing added) and fits the batch
//! limits, its chunk *is* the sender's compressed body: nothing is copied or compressed. A
//! request that is changed (a `cluster` label added, a series dropped, 2.0 translated) or too
//! large is compressed once, cut at the batch limits.
//!
//! The rare paths that must look inside a batch (a 413 split of a single chunk, removing
//! repeated samples after a 422, dropping samples older than `max_sample_age`) decompress it
//! into [`Entry`]s ([`Chunk::entries`]) and build new chunks ([`Chunk::from_entries`]).

use std::cell::RefCell;
use std::sync::Arc;

use bytes::Bytes;

use super::counts::ChunkCounts;
use super::key::{series_key_of, SeriesKey};
use super::message::{min_timestamp, Entry, FIELD_METADATA, FIELD_TIMESERIES};
use super::wire::{self, Fields, WireType};

/// Encoded `WriteRequest` fields, snappy-compressed (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// What the chunk holds.
    pub counts: ChunkCounts,
    /// Length of the uncompressed fields, bytes.
    pub raw_len: u32,
    /// Oldest sample or histogram timestamp in the chunk (Unix ms); `i64::MAX` when it holds
    /// none. Lets `max_sample_age` skip chunks with nothing to drop without decompressing.
    pub min_ts: i64,
    /// Snappy raw-block elements, without the length preamble.
    pub data: Bytes,
    /// The key of each series in the chunk, in order (metadata has none). The queue keeps two
    /// batches sharing a key from being in flight together, which keeps every series in order.
    pub keys: Arc<[SeriesKey]>,
}

/// Fixed cost charged per chunk against queue budgets, on top of its data and keys: the struct
/// and its share of bookkeeping.
pub const CHUNK_OVERHEAD: usize = 64;

/// Why a chunk could not be opened (its bytes were damaged after they were written).
#[derive(Debug, thiserror::Error)]
#[error("chunk of {raw_len} bytes does not decompress: {reason}")]
pub struct ChunkError {
    /// The declared uncompressed length.
    pub raw_len: u32,
    /// What went wrong.
    pub reason: String,
}

/// Buffers reused by every compression on one thread: the encoder's hash table and an output
/// buffer of `max_compress_len`. Kept per thread so the receive path needs no lock; dropped
/// when a single input was unusually large so one huge request does not pin memory.
struct Scratch {
    encoder: snap::raw::Encoder,
    out: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        encoder: snap::raw::Encoder::new(),
        out: Vec::new(),
    });
}

/// Output buffers larger than this are not kept between compressions.
const KEEP_SCRATCH: usize = 8 << 20;

/// Compresses `raw` into the chunk format: snappy block elements without the preamble.
fn compress(raw: &[u8]) -> Bytes {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let s = &mut *s;
        let need = snap::raw::max_compress_len(raw.len());
        if s.out.len() < need {
            s.out.resize(need, 0);
        }
        // Compressing into a buffer of max_compress_len cannot fail for inputs under 4 GiB,
        // which every caller guarantees (request and batch limits are far smaller).
        let n = s.encoder.compress(raw, &mut s.out).unwrap_or(0);
        let data = Bytes::copy_from_slice(&s.out[preamble_len(&s.out[..n])..n]);
        if s.out.len() > KEEP_SCRATCH {
            s.out = Vec::new();
        }
        data
    })
}

/// Bytes of the varint length preamble at the start of a snappy block.
fn preamble_len(block: &[u8]) -> usize {
    block
        .iter()
        .position(|b| *b < 0x80)
        .map_or(block.len(), |i| i + 1)
}

impl Chunk {
    /// Bytes this chunk counts against a queue budget.
    pub fn queue_bytes(&self) -> usize {
        self.data.len() + 4 * self.keys.len() + CHUNK_OVERHEAD
    }

    /// Compresses `entries` (in order) into one chunk.
    pub fn from_entries(entries: &[Entry]) -> Chunk {
        let mut b = ChunkBuilder::new(&[], usize::MAX, usize::MAX);
        for e in entries {
            b.add_entry(e);
        }
        b.finish(None).pop().unwrap_or_else(|| Chunk {
            counts: ChunkCounts::default(),
            raw_len: 0,
            min_ts: i64::MAX,
            data: compress(&[]),
            keys: Arc::from([]),
        })
    }

    /// The chunk's uncompressed fields (`WriteRequest` fields 1 and 3, keys and lengths
    /// included), in order.
    ///
    /// # Errors
    /// When the data does not decompress.
    pub fn raw(&self) -> Result<Vec<u8>, ChunkError> {
        let mut block = Vec::with_capacity(10 + self.data.len());
        wire::put_varint(&mut block, u64::from(self.raw_len));
        block.extend_from_slice(&self.data);
        snap::raw::Decoder::new()
            .decompress_vec(&block)
            .map_err(|e| ChunkError {
                raw_len: self.raw_len,
                reason: e.to_string(),
            })
    }

    /// Decompresses the chunk into its messages, in order. Slow path: splits, de-duplication
    /// and pruning only.
    ///
    /// # Errors
    /// When the data does not decompress to `raw_len` bytes of well-formed fields.
    pub fn entries(&self) -> Result<Vec<Entry>, ChunkError> {
        let fail = |reason: String| ChunkError {
            raw_len: self.raw_len,
            reason,
        };
        let raw = Bytes::from(self.raw()?);
        let mut out = Vec::new();
        for f in Fields::new(&raw) {
            let f = f.map_err(|e| fail(e.to_string()))?;
            if f.wire != WireType::Len || !matches!(f.number, FIELD_TIMESERIES | FIELD_METADATA) {
                return Err(fail(format!("unexpected field {}", f.number)));
            }
            out.push(Entry::from_message(f.number, raw.slice_ref(f.data)));
        }
        Ok(out)
    }
}

/// Writes the upstream body for `chunks` into `out` (cleared first): one snappy block holding
/// the concatenation of their fields, i.e. an encoded remote write 1.0 `WriteRequest`.
pub fn write_body(chunks: &[Chunk], out: &mut Vec<u8>) {
    out.clear();
    let raw: u64 = chunks.iter().map(|c| u64::from(c.raw_len)).sum();
    out.reserve(10 + chunks.iter().map(|c| c.data.len()).sum::<usize>());
    wire::put_varint(out, raw);
    for c in chunks {
        out.extend_from_slice(&c.data);
    }
}

/// Collects the messages of one request and cuts them into chunks no larger than the batch
/// limits, so that a batch never has to cut a chunk.
///
/// Messages that are consecutive, unchanged pieces of the decoded body (`source`) are only
/// remembered as a range; bytes are copied only once a message differs from the body. So a
/// request forwarded unchanged costs no copy, and [`ChunkBuilder::finish`] can hand on the
/// sender's compressed body as it is.
pub struct ChunkBuilder<'a> {
    source: &'a [u8],
    max_points: usize,
    max_raw: usize,
    part: Part,
    chunks: Vec<Chunk>,
    /// Nothing was cut or copied yet.
    whole: bool,
}

/// The chunk being built.
struct Part {
    /// `Some((start, end))`: the part is `source[start..end]`; `None`: it is `raw`.
    borrowed: Option<(usize, usize)>,
    raw: Vec<u8>,
    counts: ChunkCounts,
    min_ts: i64,
    keys: Vec<SeriesKey>,
}

impl Part {
    fn new() -> Self {
        Part {
            borrowed: None,
            raw: Vec::new(),
            counts: ChunkCounts::default(),
            min_ts: i64::MAX,
            keys: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.borrowed.map_or(self.raw.len(), |(s, e)| e - s)
    }
}

/// Where `piece` starts inside `source`, if it lies wholly inside it.
fn offset_in(source: &[u8], piece: &[u8]) -> Option<usize> {
    let (s, p) = (source.as_ptr() as usize, piece.as_ptr() as usize);
    (p >= s && p + piece.len() <= s + source.len()).then(|| p - s)
}

impl<'a> ChunkBuilder<'a> {
    /// A builder over the decoded body `source`, cutting chunks at `max_points` samples plus
    /// histograms and `max_raw` uncompressed bytes.
    pub fn new(source: &'a [u8], max_points: usize, max_raw: usize) -> Self {
        Self {
            source,
            max_points: max_points.max(1),
            max_raw: max_raw.max(1),
            part: Part::new(),
            chunks: Vec::new(),
            whole: true,
        }
    }

    /// Adds one message (`field` 1 or 3) whose bytes are the concatenation of `pieces`;
    /// `key` is the series' shard key (`None` for metadata).
    pub fn add(
        &mut self,
        key: Option<u64>,
        field: u32,
        pieces: &[&[u8]],
        counts: ChunkCounts,
        min_ts: i64,
    ) {
        let len: usize = pieces.iter().map(|p| p.len()).sum();
        let size = wire::len_field_size(field, len);
        let p = &self.part;
        if p.len() > 0
            && (p.len() + size > self.max_raw
                || p.counts.points() + counts.points() > self.max_points)
        {
            self.cut();
        }
        // The field's key and length sit right before the message in the body when the
        // message is an unchanged piece of it, and the range can be borrowed only when they are
        // encoded as this builder would (a sender may pad its varints).
        let header = size - len;
        let at = match pieces {
            [one] => offset_in(self.source, one).filter(|&at| {
                at >= header && minimal_header(&self.source[at - header..at], field, len)
            }),
            _ => None,
        };
        let part = &mut self.part;
        let extends = match (part.borrowed, at) {
            // Right after the borrowed range.
            (Some((_, end)), Some(at)) => at - header == end,
            // The first message of an empty part.
            (None, Some(_)) => part.raw.is_empty(),
            _ => false,
        };
        if extends {
            let at = at.unwrap_or_default();
            let (start, _) = part.borrowed.unwrap_or((at - header, 0));
            part.borrowed = Some((start, at + len));
        } else {
            if let Some((start, end)) = part.borrowed.take() {
                part.raw.reserve(end - start + size);
                part.raw.extend_from_slice(&self.source[start..end]);
                self.whole = false;
            }
            wire::put_varint(&mut part.raw, u64::from(field) << 3 | 2);
            wire::put_varint(&mut part.raw, len as u64);
            for piece in pieces {
                part.raw.extend_from_slice(piece);
            }
        }
        part.counts.add(&counts);
        part.min_ts = part.min_ts.min(min_ts);
        if let Some(k) = key {
            part.keys.push(series_key_of(k));
        }
    }

    /// Adds a decoded entry.
    pub fn add_entry(&mut self, e: &Entry) {
        let (key, min_ts) = if e.field == FIELD_TIMESERIES {
            (Some(e.shard_key), min_timestamp(&e.bytes))
        } else {
            (None, i64::MAX)
        };
        self.add(key, e.field, &[&e.bytes], e.counts, min_ts);
    }

    /// Compresses the part so far into a chunk and starts a new one.
    fn cut(&mut self) {
        self.whole = false;
        let part = std::mem::replace(&mut self.part, Part::new());
        if part.len() == 0 {
            return;
        }
        let raw = match part.borrowed {
            Some((s, e)) => &self.source[s..e],
            None => &part.raw[..],
        };
        self.chunks.push(Chunk {
            counts: part.counts,
            raw_len: u32::try_from(raw.len()).unwrap_or(u32::MAX),
            min_ts: part.min_ts,
            data: compress(raw),
            keys: Arc::from(part.keys),
        });
    }

    /// Finishes: every message in order, in chunks. `body` is the snappy block `source` was
    /// decoded from; when every message was an unchanged, consecutive piece of it covering
    /// all of it, and within the limits, the one chunk is `body` itself (no compression).
    pub fn finish(mut self, body: Option<&Bytes>) -> Vec<Chunk> {
        let covers_all = self.whole && self.part.borrowed == Some((0, self.source.len()));
        match body {
            Some(body) if covers_all && !self.source.is_empty() => {
                let part = std::mem::replace(&mut self.part, Part::new());
                self.chunks.push(Chunk {
                    counts: part.counts,
                    raw_len: u32::try_from(self.source.len()).unwrap_or(u32::MAX),
                    min_ts: part.min_ts,
                    data: body.slice(preamble_len(body)..),
                    keys: Arc::from(part.keys),
                });
            }
            _ => self.cut(),
        }
        self.chunks
    }
}

/// Whether `bytes` (as long as the shortest encoding of the header) is exactly a
/// length-delimited `field` key and `len`; a padded header before the message fails this.
fn minimal_header(bytes: &[u8], field: u32, len: usize) -> bool {
    let mut i = 0;
    wire::varint_at(bytes, &mut i) == Some(u64::from(field) << 3 | 2)
        && wire::varint_at(bytes, &mut i) == Some(len as u64)
        && i == bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DecodeError;

    /// Decompresses an upstream body written by [`write_body`].
    fn decompress_body(body: &[u8]) -> Result<Vec<u8>, DecodeError> {
        snap::raw::Decoder::new()
            .decompress_vec(body)
            .map_err(|e| DecodeError::Snappy(e.to_string()))
    }

    fn entry(key: u64, name: &str, ts: i64) -> Entry {
        let mut label = Vec::new();
        wire::put_len_field(&mut label, 1, b"__name__");
        wire::put_len_field(&mut label, 2, name.as_bytes());
        let mut sample = vec![0x09];
        sample.extend_from_slice(&1.5f64.to_le_bytes());
        sample.push(0x10);
        wire::put_varint(&mut sample, ts as u64);
        let mut series = Vec::new();
        wire::put_len_field(&mut series, 1, &label);
        wire::put_len_field(&mut series, 2, &sample);
        Entry {
            shard_key: key,
            field: FIELD_TIMESERIES,
            bytes: Bytes::from(series),
            counts: ChunkCounts {
                series: 1,
                samples: 1,
                ..ChunkCounts::default()
            },
        }
    }

    fn encode(entries: &[Entry]) -> Vec<u8> {
        let mut raw = Vec::new();
        for e in entries {
            wire::put_len_field(&mut raw, e.field, &e.bytes);
        }
        raw
    }

    /// Chunks compressed separately concatenate into one valid block whose content is the
    /// concatenation of their fields, also across snappy's 64 KiB fragments.
    #[test]
    fn chunks_concatenate_into_one_block() {
        let all: Vec<Entry> = (0..20_000u64)
            .map(|i| entry(i, &format!("metric_{}", i % 977), 1_000 + i as i64))
            .collect();
        let groups: Vec<&[Entry]> = all.chunks(7_000).collect();
        let chunks: Vec<Chunk> = groups.iter().map(|g| Chunk::from_entries(g)).collect();
        assert!(chunks.iter().all(|c| c.raw_len > 70_000), "spans fragments");
        let mut body = Vec::new();
        write_body(&chunks, &mut body);
        assert_eq!(decompress_body(&body).unwrap(), encode(&all));
        for (c, es) in chunks.iter().zip(&groups) {
            assert_eq!(c.counts.samples as usize, es.len());
            assert_eq!(
                c.min_ts,
                es.iter().map(|e| 1_000 + e.shard_key as i64).min().unwrap()
            );
            let keys: Vec<SeriesKey> = es.iter().map(|e| series_key_of(e.shard_key)).collect();
            assert_eq!(&c.keys[..], &keys[..]);
            let back = c.entries().unwrap();
            assert_eq!(back.len(), es.len());
            assert!(back.iter().zip(es.iter()).all(|(a, b)| a.bytes == b.bytes
                && a.counts == b.counts
                && a.shard_key == crate::message::series_key(&b.bytes)));
        }
    }

    /// Unchanged consecutive messages covering the whole body hand on the body itself; a
    /// changed message, a gap, or a cut at the limits compresses instead, with the same content.
    #[test]
    fn unchanged_requests_are_handed_on_without_compression() {
        let entries: Vec<Entry> = (0..50).map(|i| entry(i, "up", i as i64)).collect();
        let raw = encode(&entries);
        let body = Bytes::from(snap::raw::Encoder::new().compress_vec(&raw).unwrap());
        let fields: Vec<&[u8]> = Fields::new(&raw).map(|f| f.unwrap().data).collect();
        let build = |max_points: usize, change: Option<usize>, skip: Option<usize>| {
            let mut b = ChunkBuilder::new(&raw, max_points, 1 << 20);
            let other = b"\x0a\x00".to_vec();
            for (i, (f, e)) in fields.iter().zip(&entries).enumerate() {
                if skip == Some(i) {
                    continue;
                }
                let piece: &[u8] = if change == Some(i) { &other } else { f };
                b.add(Some(e.shard_key), FIELD_TIMESERIES, &[piece], e.counts, 0);
            }
            b.finish(Some(&body))
        };
        let same = build(100, None, None);
        assert_eq!(same.len(), 1);
        let elements = body.slice(preamble_len(&body)..);
        assert_eq!(same[0].data, elements, "the sender's own bytes");
        assert_eq!(same[0].keys.len(), 50);
        for (what, chunks, want_len) in [
            ("changed", build(100, Some(3), None), 1),
            ("skipped", build(100, None, Some(0)), 1),
            ("cut", build(20, None, None), 3),
        ] {
            assert_eq!(chunks.len(), want_len, "{what}");
            assert!(chunks.iter().all(|c| c.data != elements), "{what}");
            let mut out = Vec::new();
            write_body(&chunks, &mut out);
            let got = decompress_body(&out).unwrap();
            let n = Fields::new(&got).count();
            assert_eq!(n, if what == "skipped" { 49 } else { 50 }, "{what}");
        }
        let cut = build(20, None, None);
        assert_eq!(
            cut.iter().map(|c| c.counts.samples).collect::<Vec<_>>(),
            [20, 20, 10]
        );
        let mut out = Vec::new();
        write_body(&cut, &mut out);
        assert_eq!(
            decompress_body(&out).unwrap(),
            raw,
            "cutting keeps every byte"
        );
    }

    #[test]
    fn damaged_data_is_an_error_not_a_panic() {
        let c = Chunk::from_entries(&[entry(1, "up", 5)]);
        let mut bad = c.clone();
        bad.raw_len += 3;
        assert!(bad.entries().is_err());
        let mut bad = c.clone();
        bad.data = Bytes::from_static(&[0xff, 0xff, 0xff]);
        assert!(bad.entries().is_err());
    }
}
