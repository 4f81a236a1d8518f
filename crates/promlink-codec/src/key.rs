//! Series keys: the hash that identifies a series whichever protocol or encoder it came
//! through, so the queue can keep each series in order.

use super::wire;

/// The series key kept with a chunk: 32 bits of the series' shard key (`labels_key`).
/// Two series sharing one only make the queue more careful than needed (it keeps their
/// batches apart), never less.
pub type SeriesKey = u32;

/// The 32-bit series key of a 64-bit label hash.
pub fn series_key_of(key: u64) -> SeriesKey {
    (key ^ (key >> 32)) as u32
}

/// A fast, stable hash of byte strings (metadata: the family name).
pub(crate) fn hash_bytes(parts: &[&[u8]]) -> u64 {
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

/// Appends the canonical encoding of one label (see `labels_key`) to `out`.
pub fn put_label(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
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
