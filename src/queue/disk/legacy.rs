//! Migration of a version 1 queue directory (earlier promlink) to the current log.
//!
//! Version 1 kept one log per shard, `<dir>/shard-<n>/<seq:020>.log`, with records
//!
//! ```text
//! record   := magic "PLQ1" (4) | payload_len u32 (4) | crc u32 (4) | payload
//!             (crc as in version 2: CRC-32 over the length bytes and the payload)
//! payload  := pushed_at_unix_ms u64 (8) | entry_count varint | entry * entry_count
//! entry    := shard_key u64 (8) | field varint | samples varint | histograms varint
//!             | exemplars varint | bytes_len varint | bytes
//! ```
//!
//! and a `read.pos` per shard (same layout as today's, `skip` counting entries). On open, the
//! unconsumed entries of every shard are written, in order, as records of a new log built in
//! `<dir>/log.migrating/`, which is fsynced and renamed to `<dir>/log/` in one step; only then
//! are the shard directories removed. A crash in between leaves either the old directories
//! alone (the migration runs again) or both (the old ones are removed). Shards held disjoint
//! series, so writing them one after the other keeps every series in order.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::segment::{self, checksum, Cursor, Pos};
use super::{CorruptRecord, RecoveryReport};
use crate::codec::{Chunk, Entry};

const MAGIC_V1: [u8; 4] = *b"PLQ1";

/// Migrates `<dir>/shard-*` into `log_dir`, if there is anything to migrate.
pub(super) fn migrate(dir: &Path, log_dir: &Path, report: &mut RecoveryReport) -> io::Result<()> {
    let mut shards: Vec<(usize, PathBuf)> = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if let Some(n) = e
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("shard-"))
            .and_then(|n| n.parse::<usize>().ok())
        {
            shards.push((n, e.path()));
        }
    }
    if shards.is_empty() {
        return Ok(());
    }
    shards.sort();
    if !log_dir.exists() {
        let tmp = dir.join("log.migrating");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        let mut out = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(segment::segment_path(&tmp, 0))?;
        for (_, shard) in &shards {
            for (at_ms, entries) in unconsumed(shard, report)? {
                report.migrated_messages += entries.len() as u64;
                let chunk = Chunk::from_entries(&entries);
                out.write_all(&segment::encode_record(at_ms, &[chunk]))?;
            }
        }
        out.sync_all()?;
        segment::write_pos(&tmp, Pos::new(0, 0, 0), true)?;
        std::fs::rename(&tmp, log_dir)?;
        segment::sync_dir(dir)?;
        tracing::info!(
            dir = %dir.display(),
            messages = report.migrated_messages,
            "disk queue migrated from format 1 (one log per shard) to format 2"
        );
    }
    for (_, shard) in shards {
        std::fs::remove_dir_all(&shard)?;
    }
    segment::sync_dir(dir)
}

/// The unconsumed records of one version 1 shard, in order: (push time, messages).
fn unconsumed(shard: &Path, report: &mut RecoveryReport) -> io::Result<Vec<(u64, Vec<Entry>)>> {
    let pos = std::fs::read(shard.join(segment::POS_FILE))
        .ok()
        .and_then(|b| segment::decode_pos(&b).ok());
    let mut seqs: Vec<u64> = std::fs::read_dir(shard)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(segment::parse_segment_name))
        .collect();
    seqs.sort_unstable();
    let pos = pos.unwrap_or(Pos::new(seqs.first().copied().unwrap_or(0), 0, 0));
    let mut out = Vec::new();
    for seq in seqs.into_iter().filter(|&s| s >= pos.seg) {
        let path = segment::segment_path(shard, seq);
        let data = std::fs::read(&path)?;
        let mut off = if seq == pos.seg { pos.off as usize } else { 0 };
        let mut skip = if seq == pos.seg { pos.skip as usize } else { 0 };
        while off < data.len() {
            match record_at(&data, off) {
                Ok((at_ms, entries, next)) => {
                    out.push((at_ms, entries.into_iter().skip(skip).collect::<Vec<_>>()));
                    off = next;
                }
                Err(reason) => {
                    report.corrupt_records.push(CorruptRecord {
                        segment: path.clone(),
                        offset: off as u64,
                        reason: format!("format 1 record lost in migration: {reason}"),
                    });
                    // Resynchronise on the next offset where a valid record starts.
                    off = (off + 1..data.len())
                        .find(|&o| data[o..].starts_with(&MAGIC_V1) && record_at(&data, o).is_ok())
                        .unwrap_or(data.len());
                }
            }
            skip = 0;
        }
    }
    out.retain(|(_, e)| !e.is_empty());
    Ok(out)
}

/// Parses the version 1 record at `off` of a segment's bytes.
fn record_at(data: &[u8], off: usize) -> Result<(u64, Vec<Entry>, usize), String> {
    let header = data.get(off..off + 12).ok_or("torn header")?;
    if header[0..4] != MAGIC_V1 {
        return Err("bad magic".into());
    }
    let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let crc = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    let payload = data.get(off + 12..off + 12 + len).ok_or("torn record")?;
    if checksum(&header[4..8], payload) != crc {
        return Err("crc mismatch".into());
    }
    let payload = Bytes::copy_from_slice(payload);
    let mut c = Cursor {
        buf: &payload,
        at: 0,
    };
    let at_ms = c.u64_le()?;
    let n = c.varint()?;
    if n > payload.len() as u64 / 14 {
        return Err(format!("entry count {n} exceeds what the payload can hold"));
    }
    let mut entries = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let _old_key = c.u64_le()?;
        let field = c.u32_varint("field")?;
        for what in ["samples", "histograms", "exemplars"] {
            c.u32_varint(what)?;
        }
        let len = usize::try_from(c.varint()?).map_err(|_| "entry length too large")?;
        let start = c.at;
        c.take(len)?;
        // Counts and the series key are recomputed: the key function changed since.
        entries.push(Entry::from_message(
            field,
            payload.slice(start..start + len),
        ));
    }
    if c.at != payload.len() {
        return Err("bytes after the last entry".into());
    }
    Ok((at_ms, entries, off + 12 + len))
}
