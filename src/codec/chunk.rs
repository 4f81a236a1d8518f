//! Chunks: a request's share of one queue shard, compressed once, as the upstream will send it.
//!
//! A [`Chunk`] holds encoded remote write 1.0 `WriteRequest` fields (`timeseries` = 1 and
//! `metadata` = 3, each with its key and length) compressed at receipt as one snappy raw block,
//! stored *without* the block's length preamble. Snappy's block format lets such element
//! streams be concatenated: a copy element reaches back only into the output of its own block,
//! so the body of an upstream batch is the varint of the summed uncompressed lengths followed
//! by each chunk's bytes ([`write_body`];
//! <https://github.com/google/snappy/blob/main/format_description.txt>). Concatenated protobuf
//! fields form a valid message, so a batch needs neither decoding nor recompression: the queue
//! stores, and the upstream sends, what the receiver compressed.
//!
//! The rare paths that must look inside a batch (a 413 split of a single chunk, removing
//! repeated samples after a 422, dropping samples older than `max_sample_age`) decompress it
//! into [`Entry`]s ([`Chunk::entries`]) and build new chunks ([`Chunk::from_entries`]).

use std::cell::RefCell;

use bytes::Bytes;

use super::wire::{self, Fields, WireType};
use super::{DecodeError, Entry, FIELD_METADATA, FIELD_TIMESERIES};

/// What one chunk (or one message in it) holds, for batching limits and counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChunkCounts {
    /// `TimeSeries` messages.
    pub series: u32,
    /// Float samples.
    pub samples: u32,
    /// Native histogram samples.
    pub histograms: u32,
    /// Exemplars.
    pub exemplars: u32,
    /// `MetricMetadata` messages.
    pub metadata: u32,
}

impl ChunkCounts {
    /// Float samples plus histogram samples: what the per-request sample limit counts.
    pub fn points(&self) -> usize {
        self.samples as usize + self.histograms as usize
    }

    fn add(&mut self, o: &ChunkCounts) {
        self.series = self.series.saturating_add(o.series);
        self.samples = self.samples.saturating_add(o.samples);
        self.histograms = self.histograms.saturating_add(o.histograms);
        self.exemplars = self.exemplars.saturating_add(o.exemplars);
        self.metadata = self.metadata.saturating_add(o.metadata);
    }
}

/// Encoded `WriteRequest` fields for one shard, snappy-compressed (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// The queue shard; every message of one series always lands in the same one.
    pub shard: usize,
    /// What the chunk holds.
    pub counts: ChunkCounts,
    /// Length of the uncompressed fields, bytes.
    pub raw_len: u32,
    /// Oldest sample or histogram timestamp in the chunk (Unix ms); `i64::MAX` when it holds
    /// none. Lets `max_sample_age` skip chunks with nothing to drop without decompressing.
    pub min_ts: i64,
    /// Snappy raw-block elements, without the length preamble.
    pub data: Bytes,
}

/// Fixed cost charged per chunk against queue budgets, on top of its data: the struct and its
/// share of bookkeeping.
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
        let skip = preamble_len(raw.len());
        let data = Bytes::copy_from_slice(&s.out[skip.min(n)..n]);
        if s.out.len() > KEEP_SCRATCH {
            s.out = Vec::new();
        }
        data
    })
}

/// Bytes of the varint preamble of a snappy block of `raw_len` bytes.
fn preamble_len(raw_len: usize) -> usize {
    (64 - (raw_len as u64 | 1).leading_zeros() as usize).div_ceil(7)
}

impl Chunk {
    /// Bytes this chunk counts against a queue budget.
    pub fn queue_bytes(&self) -> usize {
        self.data.len() + CHUNK_OVERHEAD
    }

    /// A chunk whose data is the body of a sender's request as it came (a snappy block), used
    /// when that body is exactly what the upstream should get: no compression needed.
    pub(super) fn from_block(
        shard: usize,
        body: &Bytes,
        raw_len: usize,
        counts: ChunkCounts,
        min_ts: i64,
    ) -> Chunk {
        Chunk {
            shard,
            counts,
            raw_len: u32::try_from(raw_len).unwrap_or(u32::MAX),
            min_ts,
            // The sender's preamble, however it encoded the varint (decompression checked it).
            data: body.slice(
                body.iter()
                    .position(|b| *b < 0x80)
                    .map_or(body.len(), |i| i + 1)..,
            ),
        }
    }

    /// Compresses `entries` (in order) into one chunk for `shard`.
    pub fn from_entries(shard: usize, entries: &[Entry]) -> Chunk {
        let mut raw = Vec::with_capacity(entries.iter().map(Entry::encoded_len).sum());
        let mut counts = ChunkCounts::default();
        let mut min_ts = i64::MAX;
        for e in entries {
            wire::put_len_field(&mut raw, e.field, &e.bytes);
            counts.add(&e.counts());
            if e.field == FIELD_TIMESERIES {
                min_ts = min_ts.min(super::v1::min_timestamp(&e.bytes));
            }
        }
        Chunk {
            shard,
            counts,
            raw_len: u32::try_from(raw.len()).unwrap_or(u32::MAX),
            min_ts,
            data: compress(&raw),
        }
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
        let mut block = Vec::with_capacity(10 + self.data.len());
        wire::put_varint(&mut block, u64::from(self.raw_len));
        block.extend_from_slice(&self.data);
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&block)
            .map_err(|e| fail(e.to_string()))?;
        let raw = Bytes::from(raw);
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

/// Splits the messages of one request over shards and compresses each shard's share into
/// chunks no larger than the batch limits, so that a batch never has to cut a chunk.
pub struct ChunkBuilder {
    shards: usize,
    max_points: usize,
    max_raw: usize,
    parts: Vec<Part>,
    chunks: Vec<Chunk>,
}

#[derive(Default)]
struct Part {
    raw: Vec<u8>,
    counts: ChunkCounts,
    min_ts: i64,
}

impl ChunkBuilder {
    /// A builder for `shards` shards (at least 1) cutting chunks at `max_points` samples plus
    /// histograms and `max_raw` uncompressed bytes; `capacity` is a hint of the total size.
    pub fn new(shards: usize, max_points: usize, max_raw: usize, capacity: usize) -> Self {
        let shards = shards.max(1);
        let per = capacity / shards + capacity / (8 * shards);
        Self {
            shards,
            max_points: max_points.max(1),
            max_raw: max_raw.max(1),
            parts: (0..shards)
                .map(|_| Part {
                    raw: Vec::with_capacity(per.min(max_raw.saturating_add(1024))),
                    counts: ChunkCounts::default(),
                    min_ts: i64::MAX,
                })
                .collect(),
            chunks: Vec::new(),
        }
    }

    /// The shard of `shard_key`.
    pub fn shard_of(&self, shard_key: u64) -> usize {
        (shard_key % self.shards as u64) as usize
    }

    /// Adds one message (`field` 1 or 3) whose bytes are the concatenation of `pieces`.
    pub fn add(
        &mut self,
        shard_key: u64,
        field: u32,
        pieces: &[&[u8]],
        counts: ChunkCounts,
        min_ts: i64,
    ) {
        let shard = self.shard_of(shard_key);
        let len: usize = pieces.iter().map(|p| p.len()).sum();
        let size = wire::len_field_size(field, len);
        let part = &self.parts[shard];
        if !part.raw.is_empty()
            && (part.raw.len() + size > self.max_raw
                || part.counts.points() + counts.points() > self.max_points)
        {
            self.flush(shard);
        }
        let part = &mut self.parts[shard];
        wire::put_varint(&mut part.raw, u64::from(field) << 3 | 2);
        wire::put_varint(&mut part.raw, len as u64);
        for p in pieces {
            part.raw.extend_from_slice(p);
        }
        part.counts.add(&counts);
        part.min_ts = part.min_ts.min(min_ts);
    }

    /// Adds a decoded entry.
    pub fn add_entry(&mut self, e: &Entry) {
        let min_ts = if e.field == FIELD_TIMESERIES {
            super::v1::min_timestamp(&e.bytes)
        } else {
            i64::MAX
        };
        self.add(e.shard_key, e.field, &[&e.bytes], e.counts(), min_ts);
    }

    fn flush(&mut self, shard: usize) {
        let part = &mut self.parts[shard];
        if part.raw.is_empty() {
            return;
        }
        self.chunks.push(Chunk {
            shard,
            counts: part.counts,
            raw_len: u32::try_from(part.raw.len()).unwrap_or(u32::MAX),
            min_ts: part.min_ts,
            data: compress(&part.raw),
        });
        part.raw.clear();
        part.counts = ChunkCounts::default();
        part.min_ts = i64::MAX;
    }

    /// Compresses what is left and returns every chunk, in shard order and, within a shard,
    /// in the order the messages were added.
    pub fn finish(mut self) -> Vec<Chunk> {
        for shard in 0..self.shards {
            self.flush(shard);
        }
        // Chunks cut early (limits) come before the rest of their shard: a stable sort by
        // shard keeps each shard's order.
        self.chunks.sort_by_key(|c| c.shard);
        self.chunks
    }
}

impl Entry {
    /// An entry for an encoded message read back from a chunk; its counts and shard key are
    /// recomputed from the bytes.
    pub(super) fn from_message(field: u32, bytes: Bytes) -> Entry {
        if field == FIELD_METADATA {
            return super::v1::metadata_entry_of(bytes);
        }
        super::v1::series_entry_of(bytes)
    }

    /// This entry's counts.
    pub fn counts(&self) -> ChunkCounts {
        ChunkCounts {
            series: u32::from(self.field == FIELD_TIMESERIES),
            samples: self.samples,
            histograms: self.histograms,
            exemplars: self.exemplars,
            metadata: u32::from(self.field == FIELD_METADATA),
        }
    }
}

/// Decompresses an upstream body written by [`write_body`] (tests, the emulator).
///
/// # Errors
/// When the body is not a valid snappy block.
pub fn decompress_body(body: &[u8]) -> Result<Vec<u8>, DecodeError> {
    snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| DecodeError::Snappy(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            samples: 1,
            histograms: 0,
            exemplars: 0,
        }
    }

    /// Chunks compressed separately concatenate into one valid block whose content is the
    /// concatenation of their fields, also across snappy's 64 KiB fragments.
    #[test]
    fn chunks_concatenate_into_one_block() {
        let mut b = ChunkBuilder::new(3, 1_000_000, 1 << 30, 0);
        let mut all: Vec<Vec<Entry>> = vec![Vec::new(); 3];
        for i in 0..20_000u64 {
            let e = entry(i, &format!("metric_{}", i % 977), 1_000 + i as i64);
            all[(i % 3) as usize].push(e.clone());
            b.add_entry(&e);
        }
        let chunks = b.finish();
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|c| c.raw_len > 70_000), "spans fragments");
        let mut body = Vec::new();
        write_body(&chunks, &mut body);
        let raw = decompress_body(&body).unwrap();
        let mut want = Vec::new();
        for shard in &all {
            for e in shard {
                wire::put_len_field(&mut want, e.field, &e.bytes);
            }
        }
        assert_eq!(raw, want);
        for (c, es) in chunks.iter().zip(&all) {
            assert_eq!(c.counts.samples as usize, es.len());
            assert_eq!(
                c.min_ts,
                es.iter().map(|e| 1_000 + e.shard_key as i64).min().unwrap()
            );
            let back = c.entries().unwrap();
            assert_eq!(back.len(), es.len());
            assert!(back.iter().zip(es).all(|(a, b)| a.bytes == b.bytes
                && a.samples == b.samples
                && a.shard_key == super::super::v1::series_key(&b.bytes)));
        }
    }

    #[test]
    fn limits_cut_chunks_in_order() {
        let mut b = ChunkBuilder::new(1, 10, 1 << 20, 0);
        for i in 0..25 {
            b.add_entry(&entry(0, "up", i));
        }
        let chunks = b.finish();
        let sizes: Vec<u32> = chunks.iter().map(|c| c.counts.samples).collect();
        assert_eq!(sizes, [10, 10, 5]);
        let mins: Vec<i64> = chunks.iter().map(|c| c.min_ts).collect();
        assert_eq!(mins, [0, 10, 20]);
    }

    #[test]
    fn damaged_data_is_an_error_not_a_panic() {
        let c = Chunk::from_entries(0, &[entry(1, "up", 5)]);
        let mut bad = c.clone();
        bad.raw_len += 3;
        assert!(bad.entries().is_err());
        let mut bad = c.clone();
        bad.data = Bytes::from_static(&[0xff, 0xff, 0xff]);
        assert!(bad.entries().is_err());
    }
}
