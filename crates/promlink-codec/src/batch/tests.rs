//! The slow paths on chunks built from hand-encoded series: what each keeps, removes and counts.

use super::*;
use crate::chunk::write_body;
use crate::counts::ChunkCounts;
use crate::key::series_key_of;
use crate::message::FIELD_METADATA;
use crate::wire::{put_len_field, put_varint};

/// A series `name` with one float sample (value 1.5) at each of `ts`, as senders encode it.
fn series(name: &str, ts: &[i64]) -> Entry {
    let mut label = Vec::new();
    put_len_field(&mut label, 1, b"__name__");
    put_len_field(&mut label, 2, name.as_bytes());
    let mut s = Vec::new();
    put_len_field(&mut s, 1, &label);
    for t in ts {
        let mut sample = vec![0x09];
        sample.extend_from_slice(&1.5f64.to_le_bytes());
        sample.push(0x10);
        put_varint(&mut sample, *t as u64);
        put_len_field(&mut s, 2, &sample);
    }
    Entry::from_message(FIELD_TIMESERIES, Bytes::from(s))
}

/// A metadata message for family `name`.
fn metadata(name: &str) -> Entry {
    let mut m = Vec::new();
    put_len_field(&mut m, 2, name.as_bytes());
    Entry::from_message(FIELD_METADATA, Bytes::from(m))
}

/// The messages of `chunks` as (field, bytes), in order.
fn messages(chunks: &[Chunk]) -> Vec<(u32, Bytes)> {
    chunks
        .iter()
        .flat_map(|c| c.entries().unwrap())
        .map(|e| (e.field, e.bytes))
        .collect()
}

/// (series name, timestamps) of each series message in `chunks`, in order.
fn points(chunks: &[Chunk]) -> Vec<(String, Vec<i64>)> {
    chunks
        .iter()
        .flat_map(|c| c.entries().unwrap())
        .filter(|e| e.field == FIELD_TIMESERIES)
        .map(|e| {
            let name = crate::message::labels(&e.bytes).unwrap()[0].1.to_vec();
            let ts = Fields::new(&e.bytes)
                .filter_map(Result::ok)
                .filter(|f| f.number == TS_SAMPLES)
                .map(|f| timestamp_of(f.data, 2).unwrap())
                .collect();
            (String::from_utf8(name).unwrap(), ts)
        })
        .collect()
}

fn sum(chunks: &[Chunk]) -> ChunkCounts {
    let mut total = ChunkCounts::default();
    for c in chunks {
        total.add(&c.counts);
    }
    total
}

/// A chunk whose data is not snappy: it cannot be opened.
fn damaged(min_ts: i64) -> Chunk {
    let mut c = Chunk::from_entries(&[series("bad", &[min_ts])]);
    c.data = Bytes::from_static(&[0xff, 0xff, 0xff]);
    c
}

#[test]
fn split_chunk_halves_a_chunk_in_order() {
    let entries: Vec<Entry> = ["a", "b", "c", "d", "e"]
        .iter()
        .enumerate()
        .map(|(i, n)| series(n, &[i as i64, 10 + i as i64]))
        .collect();
    let chunk = Chunk::from_entries(&entries);
    let (first, second) = split_chunk(&chunk).unwrap().expect("five messages split");
    assert_eq!(points(std::slice::from_ref(&first)).len(), 2);
    assert_eq!(points(std::slice::from_ref(&second)).len(), 3);
    let halves = [first, second];
    assert_eq!(messages(&halves), messages(std::slice::from_ref(&chunk)));
    assert_eq!(sum(&halves), chunk.counts);
    let keys: Vec<_> = halves.iter().flat_map(|c| c.keys.iter().copied()).collect();
    assert_eq!(&keys[..], &chunk.keys[..], "series keys kept, in order");
    assert_eq!(halves[0].min_ts, 0);
    assert_eq!(halves[1].min_ts, 2);
    // The upstream body of the halves is the body of the whole.
    let (mut whole, mut parts) = (Vec::new(), Vec::new());
    write_body(std::slice::from_ref(&chunk), &mut whole);
    write_body(&halves, &mut parts);
    assert_eq!(
        crate::decompress(&whole, 1 << 20).unwrap(),
        crate::decompress(&parts, 1 << 20).unwrap()
    );
}

#[test]
fn split_chunk_leaves_a_single_message_and_reports_damage() {
    let one = Chunk::from_entries(&[series("a", &[1, 2, 3])]);
    assert!(split_chunk(&one).unwrap().is_none());
    assert!(split_chunk(&damaged(1)).is_err());
}

#[test]
fn dedupe_chunks_keeps_the_first_copy_across_chunks() {
    let first = Chunk::from_entries(&[series("a", &[1, 2]), metadata("a"), series("b", &[1])]);
    let resent = Chunk::from_entries(&[series("a", &[1, 2]), series("b", &[1, 2])]);
    assert!(
        dedupe_chunks(std::slice::from_ref(&first))
            .unwrap()
            .is_none(),
        "nothing repeated"
    );
    let (kept, removed) = dedupe_chunks(&[first.clone(), resent])
        .unwrap()
        .expect("repeats removed");
    assert_eq!(removed, 3, "a@1, a@2 and b@1 again");
    let kept = kept.expect("something is left");
    assert_eq!(
        points(std::slice::from_ref(&kept)),
        [
            ("a".to_string(), vec![1, 2]),
            ("b".to_string(), vec![1]),
            ("b".to_string(), vec![2]),
        ]
    );
    assert_eq!(
        kept.counts,
        ChunkCounts {
            series: 3,
            samples: 4,
            metadata: 1,
            ..ChunkCounts::default()
        }
    );
    let b = series_key_of(series("b", &[]).shard_key);
    assert_eq!(kept.keys.iter().filter(|k| **k == b).count(), 2);
}

#[test]
fn dedupe_chunks_reports_a_chunk_it_cannot_open() {
    let good = Chunk::from_entries(&[series("a", &[1])]);
    assert!(dedupe_chunks(&[good.clone(), damaged(1), good]).is_err());
}

#[test]
fn drop_older_opens_only_chunks_with_old_samples() {
    let new = Chunk::from_entries(&[series("new", &[100, 200])]);
    let mixed = Chunk::from_entries(&[
        series("old", &[10, 20]),
        metadata("m"),
        series("half", &[50, 150]),
    ]);
    let old = Chunk::from_entries(&[series("older", &[1, 2, 3])]);
    let aged = drop_older(vec![new.clone(), mixed, old], 100);
    assert_eq!(aged.dropped, 2 + 1 + 3);
    assert!(aged.damaged.is_empty());
    assert_eq!(aged.chunks.len(), 2, "the chunk left empty is gone");
    assert_eq!(
        aged.chunks[0], new,
        "a chunk with nothing old is handed on as it is"
    );
    assert_eq!(points(&aged.chunks[1..]), [("half".to_string(), vec![150])]);
    assert_eq!(
        aged.chunks[1].counts,
        ChunkCounts {
            series: 1,
            samples: 1,
            metadata: 1,
            ..ChunkCounts::default()
        }
    );
    assert_eq!(aged.chunks[1].min_ts, 150);
    assert_eq!(aged.chunks[1].keys.len(), 1);
}

#[test]
fn drop_older_hands_on_a_chunk_it_cannot_open() {
    let bad = damaged(1);
    let aged = drop_older(vec![bad.clone()], 100);
    assert_eq!(aged.chunks, [bad]);
    assert_eq!(aged.dropped, 0);
    assert_eq!(aged.damaged.len(), 1);
    // Not opened when nothing in it is old.
    let aged = drop_older(vec![damaged(500)], 100);
    assert!(aged.damaged.is_empty());
}
