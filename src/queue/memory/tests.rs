use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::codec::CHUNK_OVERHEAD;

/// A chunk holding series `key`, `samples` samples in `len` bytes, identified by `id`.
fn chunk(key: u64, id: u64, samples: u32, len: usize) -> Chunk {
    crate::queue::test_chunk(key, id, samples, len)
}

fn id(c: &Chunk) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&c.data[..8]);
    u64::from_le_bytes(a)
}

fn ids(b: &Batch) -> Vec<u64> {
    b.chunks.iter().map(id).collect()
}

fn limits(max_samples: usize) -> BatchLimits {
    BatchLimits {
        max_samples,
        max_bytes: 1 << 20,
        flush_interval: Duration::from_secs(5),
    }
}

#[tokio::test(start_paused = true)]
async fn push_is_all_or_nothing_and_done_frees_budget() {
    let per = 400 + 4 + CHUNK_OVERHEAD;
    let q = MemoryQueue::new(1000);
    q.push(vec![chunk(0, 0, 1, 400), chunk(1, 1, 1, 400)])
        .unwrap();
    let used = q.used_bytes();
    assert_eq!(used, 2 * per);
    let err = q
        .push(vec![chunk(0, 2, 1, 100), chunk(1, 3, 1, 100)])
        .unwrap_err();
    assert_eq!(
        (err.used, err.needed),
        (used, 2 * (100 + 4 + CHUNK_OVERHEAD))
    );
    assert_eq!(
        q.waiting_chunks(),
        2,
        "a refused push leaves nothing behind"
    );
    q.close();
    let b = q.pop_batch(&limits(100)).await.unwrap();
    assert_eq!(ids(&b), [0, 1]);
    assert_eq!(q.used_bytes(), used, "in flight still counts");
    q.done(b);
    assert_eq!(q.used_bytes(), 0);
    q.push(vec![chunk(0, 4, 1, 100)]).unwrap();
}

#[tokio::test(start_paused = true)]
async fn oversized_request_enters_an_empty_queue() {
    let q = MemoryQueue::new(10);
    q.push(vec![chunk(0, 0, 1, 100)]).unwrap();
    assert!(q.push(vec![chunk(0, 1, 1, 1)]).is_err());
}

#[tokio::test(start_paused = true)]
async fn batches_fill_to_the_sample_limit_and_keep_order() {
    let q = MemoryQueue::new(1 << 20);
    q.push((0..10).map(|i| chunk(i, i, 3, 8)).collect())
        .unwrap();
    let a = q.pop_batch(&limits(7)).await.unwrap();
    // 3 + 3 fits, a third chunk would make 9 > 7.
    assert_eq!(ids(&a), [0, 1]);
    let b = q.pop_batch(&limits(7)).await.unwrap();
    assert_eq!(
        ids(&b),
        [2, 3],
        "another worker gets the next batch at once"
    );
    q.done(a);
    q.done(b);
}

#[tokio::test(start_paused = true)]
async fn a_partial_batch_goes_when_the_flow_stops_or_the_interval_ends() {
    let q = Arc::new(MemoryQueue::new(1 << 20));
    q.push(vec![chunk(0, 0, 1, 8)]).unwrap();
    let start = Instant::now();
    let b = q.pop_batch(&limits(100)).await.unwrap();
    assert_eq!(b.chunks.len(), 1);
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(500),
        "nothing else came for a tenth of the flush interval"
    );
    q.done(b);
    // A steady trickle keeps the batch open until the flush interval.
    let feeder = {
        let q = q.clone();
        tokio::spawn(async move {
            for i in 1..=30 {
                q.push(vec![chunk(i, i, 1, 8)]).unwrap();
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let start = Instant::now();
    let b = q.pop_batch(&limits(100)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!(b.chunks.len(), 20);
    feeder.abort();
}

#[tokio::test(start_paused = true)]
async fn close_flushes_at_once_then_ends() {
    let q = Arc::new(MemoryQueue::new(1 << 20));
    q.push(vec![chunk(0, 0, 1, 8)]).unwrap();
    q.close();
    let start = Instant::now();
    let b = q.pop_batch(&limits(100)).await.unwrap();
    assert_eq!(b.chunks.len(), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
    q.done(b);
    assert!(q.pop_batch(&limits(100)).await.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_waiting_worker_wakes_on_push() {
    let q = Arc::new(MemoryQueue::new(1 << 20));
    let q2 = q.clone();
    let worker = tokio::spawn(async move { q2.pop_batch(&limits(2)).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    q.push(vec![chunk(0, 0, 1, 8), chunk(0, 1, 1, 8)]).unwrap();
    let b = worker.await.unwrap().unwrap();
    assert_eq!(b.chunks.len(), 2);
}

/// Two workers never hold one series at once: the second waits until the first is done,
/// then gets the series' next chunk, in order.
#[tokio::test(start_paused = true)]
async fn a_series_in_flight_holds_its_later_chunks_back() {
    let q = Arc::new(MemoryQueue::new(1 << 20));
    q.push(vec![chunk(7, 0, 1, 8)]).unwrap();
    q.push(vec![chunk(7, 1, 1, 8), chunk(8, 2, 1, 8)]).unwrap();
    q.close();
    let first = q.pop_batch(&limits(1)).await.unwrap();
    assert_eq!(ids(&first), [0]);
    let other = q.pop_batch(&limits(1)).await.unwrap();
    assert_eq!(ids(&other), [2], "series 8 goes; series 7 waits");
    let q2 = q.clone();
    let waiting = tokio::spawn(async move { q2.pop_batch(&limits(1)).await });
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        !waiting.is_finished(),
        "series 7 stays held while in flight"
    );
    q.done(first);
    let next = waiting.await.unwrap().unwrap();
    assert_eq!(ids(&next), [1]);
    q.done(other);
    q.done(next);
    assert!(q.pop_batch(&limits(1)).await.is_none());
    assert_eq!(q.used_bytes(), 0);
}

#[tokio::test(start_paused = true)]
async fn drain_hands_over_what_no_worker_took() {
    let q = MemoryQueue::new(1 << 20);
    q.push(vec![chunk(1, 0, 1, 8), chunk(2, 1, 1, 8)]).unwrap();
    q.close();
    let b = q.pop_batch(&limits(1)).await.unwrap();
    let rest = q.drain();
    assert_eq!(rest.iter().map(id).collect::<Vec<_>>(), [1]);
    q.done(b);
    assert_eq!(q.used_bytes(), 0);
}

/// A batch that finishes frees its budget at once, even while an older one is still in flight
/// (a long retry must not hold memory that is already delivered), but for its place in the
/// window, which is memory too until the older one finishes.
#[tokio::test(start_paused = true)]
async fn a_finished_batch_frees_its_budget_while_an_older_one_retries() {
    let per = 100 + 4 + CHUNK_OVERHEAD;
    let q = MemoryQueue::new(1 << 20);
    q.push(vec![chunk(1, 0, 1, 100), chunk(2, 1, 1, 100)])
        .unwrap();
    q.close();
    let old = q.pop_batch(&limits(1)).await.unwrap();
    let new = q.pop_batch(&limits(1)).await.unwrap();
    assert_eq!((ids(&old), ids(&new)), (vec![0], vec![1]));
    q.done(new);
    assert_eq!(q.used_bytes(), per + kept(per));
    assert!(kept(per) < per);
    q.done(old);
    assert_eq!(q.used_bytes(), 0);
}

/// A batch that never finishes keeps every later chunk's place in the window (the window
/// releases in order); those places count against the budget until the batch finishes, so
/// the window cannot grow without bound: pushes are refused once places fill the budget,
/// and everything comes back when the batch finishes.
#[tokio::test]
async fn places_behind_a_stuck_batch_count_against_the_budget() {
    let budget = 64 << 10;
    let q = MemoryQueue::new(budget);
    let flush_now = BatchLimits {
        flush_interval: Duration::ZERO,
        ..limits(1)
    };
    q.push(vec![chunk(1, 0, 1, 100)]).unwrap();
    let stuck = q.pop_batch(&flush_now).await.unwrap();
    let mut finished = 0u64;
    while q.push(vec![chunk(2 + finished, finished, 1, 100)]).is_ok() {
        let b = q.pop_batch(&flush_now).await.unwrap();
        q.done(b);
        finished += 1;
        assert!(
            finished < 100_000,
            "places behind the stuck batch are not counted"
        );
    }
    let per_place = kept(chunk(0, 0, 1, 100).queue_bytes());
    assert!(per_place >= 64, "a place is at least a slot: {per_place}");
    assert!(
        finished as usize * per_place <= budget,
        "{finished} places of {per_place} bytes"
    );
    assert!(finished > 100, "only {finished} chunks went");
    q.done(stuck);
    assert_eq!(q.used_bytes(), 0, "the places left with the batch");
    q.push(vec![chunk(1, 1, 1, 100)]).unwrap();
}

/// Chunks parked behind a stuck batch take memory in the dispatcher's index of parked chunks:
/// it counts against the budget while they are parked, and leaves with them.
#[tokio::test]
async fn the_parked_index_counts_against_the_budget() {
    let q = MemoryQueue::new(1 << 20);
    let flush_now = BatchLimits {
        flush_interval: Duration::ZERO,
        ..limits(1)
    };
    q.push(vec![chunk(1, 0, 1, 100)]).unwrap();
    let stuck = q.pop_batch(&flush_now).await.unwrap();
    let per = q.used_bytes();
    // 100 chunks of the stuck series, then one free chunk: the scan parks the 100.
    for i in 1..=100 {
        q.push(vec![chunk(1, i, 1, 100)]).unwrap();
    }
    q.push(vec![chunk(2, 101, 1, 100)]).unwrap();
    let free = q.pop_batch(&flush_now).await.unwrap();
    assert_eq!(ids(&free), [101]);
    let index = crate::queue::dispatch::PARKED_BYTES_PER_KEY * 100;
    assert_eq!(q.used_bytes(), 102 * per + index);
    q.done(free);
    q.done(stuck);
    // Unparked: the index is empty; the 100 chunks wait (and go, in order, in one batch),
    // the free chunk's place behind them stays until they finish.
    assert_eq!(q.used_bytes(), 100 * per + kept(per));
    q.close();
    let rest = q.pop_batch(&limits(1000)).await.unwrap();
    assert_eq!(ids(&rest), (1..=100).collect::<Vec<_>>());
    q.done(rest);
    assert_eq!(q.used_bytes(), 0);
}
