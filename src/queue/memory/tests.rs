use std::sync::Arc;

use std::time::Duration;

use super::*;
use crate::codec::CHUNK_OVERHEAD;

/// A chunk for shard `key` holding `samples` samples in `len` bytes.
fn entry(key: u64, samples: u32, len: usize) -> Chunk {
    crate::queue::test_chunk(key, 0, samples, len)
}

fn limits(max_samples: usize) -> BatchLimits {
    BatchLimits {
        max_samples,
        max_bytes: 1 << 20,
        flush_interval: Duration::from_secs(5),
    }
}

#[tokio::test(start_paused = true)]
async fn push_is_all_or_nothing_and_release_frees_budget() {
    let q = MemoryQueue::new(2, 1000);
    q.push(vec![entry(0, 1, 400), entry(1, 1, 400)]).unwrap();
    let used = q.used_bytes();
    assert_eq!(used, 2 * (400 + CHUNK_OVERHEAD));
    let err = q
        .push(vec![entry(0, 1, 100), entry(1, 1, 100)])
        .unwrap_err();
    assert_eq!((err.used, err.needed), (used, 2 * (100 + CHUNK_OVERHEAD)));
    assert_eq!(
        q.waiting_chunks(),
        2,
        "a refused push leaves nothing behind"
    );
    q.release(used);
    q.push(vec![entry(0, 1, 100)]).unwrap();
}

#[tokio::test(start_paused = true)]
async fn oversized_request_enters_an_empty_queue() {
    let q = MemoryQueue::new(1, 10);
    q.push(vec![entry(0, 1, 100)]).unwrap();
    assert!(q.push(vec![entry(0, 1, 1)]).is_err());
}

#[tokio::test(start_paused = true)]
async fn batches_fill_to_the_sample_limit_and_keep_order() {
    let q = MemoryQueue::new(1, 1 << 20);
    let entries: Vec<Chunk> = (0..10).map(|i| entry(i, 3, 8)).collect();
    q.push(entries).unwrap();
    let b = q.pop_batch(0, &limits(7)).await.unwrap();
    // 3 + 3 fits, a third entry would make 9 > 7.
    assert_eq!(b.iter().map(|e| e.shard).collect::<Vec<_>>(), [0, 1]);
    let b = q.pop_batch(0, &limits(7)).await.unwrap();
    assert_eq!(b.iter().map(|e| e.shard).collect::<Vec<_>>(), [2, 3]);
}

#[tokio::test(start_paused = true)]
async fn partial_batch_waits_for_the_flush_interval() {
    let q = Arc::new(MemoryQueue::new(1, 1 << 20));
    q.push(vec![entry(0, 1, 8)]).unwrap();
    let start = Instant::now();
    let b = q.pop_batch(0, &limits(100)).await.unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(start.elapsed(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn close_flushes_at_once_then_ends() {
    let q = Arc::new(MemoryQueue::new(1, 1 << 20));
    q.push(vec![entry(0, 1, 8)]).unwrap();
    q.close();
    let start = Instant::now();
    assert_eq!(q.pop_batch(0, &limits(100)).await.unwrap().len(), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(q.pop_batch(0, &limits(100)).await.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_waiting_worker_wakes_on_push() {
    let q = Arc::new(MemoryQueue::new(1, 1 << 20));
    let q2 = q.clone();
    let worker = tokio::spawn(async move { q2.pop_batch(0, &limits(2)).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    q.push(vec![entry(0, 1, 8), entry(0, 1, 8)]).unwrap();
    let b = worker.await.unwrap().unwrap();
    assert_eq!(b.len(), 2);
}

#[test]
fn one_series_always_maps_to_one_shard() {
    let q = MemoryQueue::new(4, 1 << 20);
    let mut entries = Vec::new();
    for ts in 0..50u32 {
        for key in [7u64, 8, 9, 10, 11] {
            entries.push(entry(key, ts + 1, 1));
        }
    }
    q.push(entries).unwrap();
    for (i, shard) in q.shards.iter().enumerate() {
        let list = shard.chunks.lock().unwrap();
        for key in [7u64, 8, 9, 10, 11] {
            let seen: Vec<u32> = list
                .iter()
                .filter(|x| x.chunk.shard as u64 == key)
                .map(|x| x.chunk.counts.samples)
                .collect();
            if !seen.is_empty() {
                assert_eq!(key as usize % 4, i);
                assert!(seen.windows(2).all(|w| w[0] < w[1]), "order kept for {key}");
                assert_eq!(seen.len(), 50);
            }
        }
    }
}
