//! Record framing, record reading with resynchronisation, and the read-position file.
//!
//! The byte layouts are documented at the top of the parent module; this file is the only code
//! that reads or writes them (earlier layouts: [`super::legacy`]). Nothing here panics on bad
//! input: a damaged record is reported as [`Step::Corrupt`] with a reason, and the caller
//! decides what that costs.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::files::{Storage, WriteFile};
use crate::codec::{Chunk, ChunkCounts, SeriesKey};

/// First four bytes of every record.
pub(super) const MAGIC: [u8; 4] = *b"PLQ2";
/// Magic, payload length, CRC.
pub(super) const HEADER_LEN: u64 = 12;
/// Largest payload accepted when reading (and written): far above any request body limit, low
/// enough that a damaged length field cannot make a reader allocate gigabytes.
pub(super) const MAX_PAYLOAD: u64 = 512 << 20;

const POS_MAGIC: [u8; 4] = *b"PLQP";
const POS_LEN: usize = 28;
/// Name of the read-position file inside the log directory.
pub(super) const POS_FILE: &str = "read.pos";
const POS_TMP: &str = "read.pos.tmp";

/// A place in the log: the record starting at byte `off` of segment `seg`, of which the first
/// `skip` chunks are already consumed. Ordered like the log. The end of a segment and the
/// start of the next one name the same place (see [`super::Log::normalize`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Pos {
    pub(crate) seg: u64,
    pub(crate) off: u64,
    pub(crate) skip: u32,
}

impl Pos {
    pub(super) fn new(seg: u64, off: u64, skip: u32) -> Self {
        Self { seg, off, skip }
    }
}

/// File name of segment `seq`.
pub(super) fn segment_name(seq: u64) -> String {
    format!("{seq:020}.log")
}

/// The sequence number of a segment file name, if `name` is one.
pub(super) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The path of segment `seq` in `dir`.
pub(super) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(segment_name(seq))
}

/// Encodes one record: the chunks of one request, pushed at `at_ms`.
pub(super) fn encode_record(at_ms: u64, chunks: &[Chunk]) -> Vec<u8> {
    let payload_len: usize = 8
        + 10
        + chunks
            .iter()
            .map(|c| 9 * 10 + 4 * c.keys.len() + c.data.len())
            .sum::<usize>();
    let mut buf = Vec::with_capacity(HEADER_LEN as usize + payload_len);
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&[0; 8]);
    buf.extend_from_slice(&at_ms.to_le_bytes());
    put_varint(&mut buf, chunks.len() as u64);
    for c in chunks {
        let n = &c.counts;
        for v in [
            n.series,
            n.samples,
            n.histograms,
            n.exemplars,
            n.metadata,
            c.raw_len,
        ] {
            put_varint(&mut buf, u64::from(v));
        }
        put_varint(&mut buf, ((c.min_ts << 1) ^ (c.min_ts >> 63)) as u64);
        put_varint(&mut buf, c.keys.len() as u64);
        for k in c.keys.iter() {
            buf.extend_from_slice(&k.to_le_bytes());
        }
        put_varint(&mut buf, c.data.len() as u64);
        buf.extend_from_slice(&c.data);
    }
    // A payload over u32 is refused by the caller (`MAX_PAYLOAD`); saturate rather than wrap.
    let len = u32::try_from(buf.len() - HEADER_LEN as usize).unwrap_or(u32::MAX);
    buf[4..8].copy_from_slice(&len.to_le_bytes());
    let crc = checksum(&buf[4..8], &buf[HEADER_LEN as usize..]);
    buf[8..12].copy_from_slice(&crc.to_le_bytes());
    buf
}

pub(super) fn checksum(len: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len);
    h.update(payload);
    h.finalize()
}

pub(super) fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Cursor over a payload; every read is bounds-checked.
pub(super) struct Cursor<'a> {
    pub(super) buf: &'a [u8],
    pub(super) at: usize,
}

impl Cursor<'_> {
    pub(super) fn u64_le(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    pub(super) fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.at)
                .ok_or_else(|| "payload ends inside a varint".to_string())?;
            self.at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".to_string())
    }

    pub(super) fn u32_varint(&mut self, what: &str) -> Result<u32, String> {
        u32::try_from(self.varint()?).map_err(|_| format!("{what} does not fit in 32 bits"))
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| "payload shorter than its fields".to_string())?;
        let out = &self.buf[self.at..end];
        self.at = end;
        Ok(out)
    }
}

/// Decodes a payload whose CRC already matched. Chunk data shares the payload's allocation.
pub(super) fn decode_payload(payload: &Bytes) -> Result<(u64, Vec<Chunk>), String> {
    let mut c = Cursor {
        buf: payload,
        at: 0,
    };
    let at_ms = c.u64_le()?;
    let n = c.varint()?;
    // Each chunk takes at least 10 bytes: a count beyond that is damage, not a reason to
    // allocate.
    if n > payload.len() as u64 / 10 {
        return Err(format!("chunk count {n} exceeds what the payload can hold"));
    }
    let mut chunks = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let counts = ChunkCounts {
            series: c.u32_varint("series")?,
            samples: c.u32_varint("samples")?,
            histograms: c.u32_varint("histograms")?,
            exemplars: c.u32_varint("exemplars")?,
            metadata: c.u32_varint("metadata")?,
        };
        let raw_len = c.u32_varint("raw_len")?;
        let z = c.varint()?;
        let min_ts = ((z >> 1) as i64) ^ -((z & 1) as i64);
        let n_keys = usize::try_from(c.varint()?).map_err(|_| "key count too large")?;
        let keys = c.take(n_keys.checked_mul(4).ok_or("key count too large")?)?;
        let keys: Arc<[SeriesKey]> = keys
            .chunks_exact(4)
            .map(|k| SeriesKey::from_le_bytes([k[0], k[1], k[2], k[3]]))
            .collect();
        let len = usize::try_from(c.varint()?).map_err(|_| "chunk length too large")?;
        let start = c.at;
        c.take(len)?;
        chunks.push(Chunk {
            counts,
            raw_len,
            min_ts,
            data: payload.slice(start..start + len),
            keys,
        });
    }
    if c.at != payload.len() {
        return Err(format!(
            "{} bytes after the last chunk",
            payload.len() - c.at
        ));
    }
    Ok((at_ms, chunks))
}

/// Reads exactly `buf.len()` bytes at `off`.
fn read_at(file: &mut File, off: u64, buf: &mut [u8]) -> io::Result<()> {
    file.seek(SeekFrom::Start(off))?;
    file.read_exact(buf)
}

/// What one record read found.
enum Rec {
    Valid {
        at_ms: u64,
        chunks: Vec<Chunk>,
        next: u64,
    },
    Bad(String),
}

/// Reads and checks the record at `off`, which must lie wholly before `end`.
fn read_record(file: &mut File, off: u64, end: u64) -> io::Result<Rec> {
    if end.saturating_sub(off) < HEADER_LEN {
        return Ok(Rec::Bad(format!(
            "{} bytes left, too few for a record header (torn write?)",
            end.saturating_sub(off)
        )));
    }
    let mut header = [0u8; HEADER_LEN as usize];
    match read_at(file, off, &mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Ok(Rec::Bad("file shorter than expected".to_string()))
        }
        Err(e) => return Err(e),
    }
    if header[0..4] != MAGIC {
        return Ok(Rec::Bad("bad magic".to_string()));
    }
    let len = u64::from(u32::from_le_bytes([
        header[4], header[5], header[6], header[7],
    ]));
    let crc = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if len > MAX_PAYLOAD {
        return Ok(Rec::Bad(format!("payload length {len} over the limit")));
    }
    let next = off + HEADER_LEN + len;
    if next > end {
        return Ok(Rec::Bad(format!(
            "record of {len} payload bytes runs {} bytes past the end of the segment (torn write?)",
            next - end
        )));
    }
    let mut payload = vec![0u8; len as usize];
    match read_at(file, off + HEADER_LEN, &mut payload) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Ok(Rec::Bad("file shorter than expected".to_string()))
        }
        Err(e) => return Err(e),
    }
    let actual = checksum(&header[4..8], &payload);
    if actual != crc {
        return Ok(Rec::Bad(format!(
            "crc mismatch: stored {crc:08x}, computed {actual:08x}"
        )));
    }
    let payload = Bytes::from(payload);
    Ok(match decode_payload(&payload) {
        Ok((at_ms, chunks)) => Rec::Valid {
            at_ms,
            chunks,
            next,
        },
        Err(reason) => Rec::Bad(format!("undecodable payload: {reason}")),
    })
}

/// The first offset in `[from, end)` where a valid record starts.
fn resync(file: &mut File, from: u64, end: u64) -> io::Result<Option<u64>> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = from;
    while pos + HEADER_LEN <= end {
        let n = (end - pos).min(buf.len() as u64) as usize;
        match read_at(file, pos, &mut buf[..n]) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        for i in 0..n.saturating_sub(MAGIC.len() - 1) {
            if buf[i..i + MAGIC.len()] == MAGIC {
                let candidate = pos + i as u64;
                if let Rec::Valid { .. } = read_record(file, candidate, end)? {
                    return Ok(Some(candidate));
                }
            }
        }
        if n < MAGIC.len() {
            break;
        }
        // Overlap so a magic split across two chunks is still seen.
        pos += (n - (MAGIC.len() - 1)) as u64;
    }
    Ok(None)
}

/// One step through a segment.
pub(super) enum Step {
    /// A valid record at `off`; the next one starts at `next`.
    Record {
        off: u64,
        at_ms: u64,
        chunks: Vec<Chunk>,
        next: u64,
    },
    /// The bytes from `off` are damaged; the next valid record starts at `resume`, or none
    /// does before `end`.
    Corrupt {
        off: u64,
        reason: String,
        resume: Option<u64>,
    },
    /// `off` reached `end`.
    End,
}

/// Reads the record at `off` or, when it is damaged, finds where the next valid one starts.
///
/// # Errors
/// Only real I/O errors; damage is a [`Step::Corrupt`].
pub(super) fn step(file: &mut File, off: u64, end: u64) -> io::Result<Step> {
    if off >= end {
        return Ok(Step::End);
    }
    Ok(match read_record(file, off, end)? {
        Rec::Valid {
            at_ms,
            chunks,
            next,
        } => Step::Record {
            off,
            at_ms,
            chunks,
            next,
        },
        Rec::Bad(reason) => Step::Corrupt {
            off,
            reason,
            resume: resync(file, off + 1, end)?,
        },
    })
}

fn encode_pos(pos: Pos) -> [u8; POS_LEN] {
    let mut b = [0u8; POS_LEN];
    b[0..4].copy_from_slice(&POS_MAGIC);
    b[4..12].copy_from_slice(&pos.seg.to_le_bytes());
    b[12..20].copy_from_slice(&pos.off.to_le_bytes());
    b[20..24].copy_from_slice(&pos.skip.to_le_bytes());
    let crc = crc32fast::hash(&b[0..24]);
    b[24..28].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes a position file's bytes (also the layout of version 1's per-shard files).
pub(super) fn decode_pos(b: &[u8]) -> Result<Pos, String> {
    if b.len() != POS_LEN {
        return Err(format!("{} bytes, expected {POS_LEN}", b.len()));
    }
    if b[0..4] != POS_MAGIC {
        return Err("bad magic".to_string());
    }
    let crc = u32::from_le_bytes([b[24], b[25], b[26], b[27]]);
    if crc32fast::hash(&b[0..24]) != crc {
        return Err("crc mismatch".to_string());
    }
    let u64_at = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(a)
    };
    Ok(Pos::new(
        u64_at(4),
        u64_at(12),
        u32::from_le_bytes([b[20], b[21], b[22], b[23]]),
    ))
}

/// The persisted read position in `dir`: `Ok(None)` when there is none yet (no file, or one
/// created but never written), `Err(reason)` when the file is unreadable or damaged.
pub(super) fn read_pos(dir: &Path) -> Result<Option<Pos>, String> {
    match std::fs::read(dir.join(POS_FILE)) {
        Ok(b) if b.is_empty() => Ok(None),
        Ok(b) => decode_pos(&b).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Removes a temporary position file a crash may have left.
pub(super) fn remove_pos_tmp(dir: &Path) -> io::Result<()> {
    match std::fs::remove_file(dir.join(POS_TMP)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The read-position file, kept open by the committer and overwritten in place: its 28 bytes
/// sit in one disk sector, and the CRC catches a torn write anyway (which replays the queue
/// from its oldest segment: duplicates, never loss). Cheaper than a rename per update.
pub(super) struct PosFile {
    file: Box<dyn WriteFile>,
}

impl PosFile {
    /// Opens (or creates, durably) the position file in `dir`.
    pub(super) fn open(storage: &dyn Storage, dir: &Path) -> io::Result<Self> {
        let path = dir.join(POS_FILE);
        let existed = path.exists();
        let file = storage.open_in_place(&path)?;
        if !existed {
            storage.sync_dir(dir)?;
        }
        Ok(Self { file })
    }

    /// Writes `pos`; with `durable`, fsyncs it. Returns the number of fsyncs made.
    pub(super) fn write(&mut self, pos: Pos, durable: bool) -> io::Result<u64> {
        self.file.write_at(&encode_pos(pos), 0)?;
        if durable {
            self.file.sync_data()?;
            return Ok(1);
        }
        Ok(0)
    }
}

/// Replaces the position file atomically (temporary file, rename). With `durable`, the new
/// content is fsynced before the rename and the directory after it, so it survives power loss;
/// without, it survives a process crash only. Returns the number of fsyncs made.
pub(super) fn write_pos(dir: &Path, pos: Pos, durable: bool) -> io::Result<u64> {
    let tmp = dir.join(POS_TMP);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(&encode_pos(pos))?;
    if durable {
        f.sync_all()?;
    }
    drop(f);
    std::fs::rename(&tmp, dir.join(POS_FILE))?;
    if durable {
        sync_dir(dir)?;
        return Ok(2);
    }
    Ok(0)
}

/// Makes the directory's entries (created, renamed files) durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
