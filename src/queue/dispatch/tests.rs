//! The dispatcher against its rules: order, concurrency, parking, and a random model check.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::codec::ChunkCounts;

fn chunk(id: u8, keys: &[SeriesKey], samples: u32) -> Chunk {
    Chunk {
        counts: ChunkCounts {
            series: keys.len() as u32,
            samples,
            ..ChunkCounts::default()
        },
        raw_len: 100,
        min_ts: 0,
        data: bytes::Bytes::from(vec![id]),
        keys: Arc::from(keys),
    }
}

fn limits(max_samples: usize) -> BatchLimits {
    BatchLimits {
        max_samples,
        max_bytes: 1 << 20,
        flush_interval: Duration::from_millis(1000),
    }
}

fn ids(t: &Taken) -> Vec<u8> {
    t.chunks.iter().map(|c| c.data[0]).collect()
}

fn take(d: &mut Dispatcher<u8>, l: &BatchLimits) -> Taken {
    match d.cut(l, 0, true) {
        Cut::Take(t) => t,
        _ => panic!("no batch"),
    }
}

#[test]
fn batches_in_flight_never_share_a_series_and_order_is_kept() {
    let mut d = Dispatcher::default();
    // 1 and 3 share series 7; 2 is independent; 4 shares with 3 (skipped, so it waits).
    d.push(chunk(1, &[7, 8], 2), 0, 1);
    d.push(chunk(2, &[9], 2), 0, 2);
    d.push(chunk(3, &[7], 2), 0, 3);
    d.push(chunk(4, &[10, 7], 2), 0, 4);
    d.push(chunk(5, &[11], 2), 0, 5);
    let l = limits(2);
    let a = take(&mut d, &l);
    assert_eq!(ids(&a), [1]);
    let b = take(&mut d, &l);
    assert_eq!(ids(&b), [2], "independent series go out concurrently");
    let c = take(&mut d, &l);
    assert_eq!(ids(&c), [5], "3 waits for 1, and 4 for 3");
    assert!(matches!(d.cut(&l, 0, true), Cut::Blocked));
    assert_eq!(
        d.done(b),
        Vec::<u8>::new(),
        "1 is still unfinished at the front"
    );
    assert!(matches!(d.cut(&l, 0, true), Cut::Blocked));
    assert_eq!(d.done(a), [1, 2]);
    let e = take(&mut d, &l);
    assert_eq!(ids(&e), [3]);
    assert!(matches!(d.cut(&l, 0, true), Cut::Blocked), "4 follows 3");
    assert_eq!(d.done(e), [3]);
    let f = take(&mut d, &l);
    assert_eq!(ids(&f), [4]);
    assert_eq!(d.done(c), Vec::<u8>::new());
    assert_eq!(d.done(f), [4, 5]);
    assert!(matches!(d.cut(&l, 0, true), Cut::Empty));
    assert_eq!(d.len(), 0);
}

#[test]
fn a_batch_takes_chunks_of_one_series_in_order_and_waits_to_fill() {
    let mut d = Dispatcher::default();
    d.push(chunk(1, &[7], 1), 100, 1);
    d.push(chunk(2, &[7], 1), 200, 2);
    // A steady flow of metadata-only chunks (no samples) keeps the batch waiting.
    for t in (250..=1050).step_by(50) {
        d.push(chunk(9, &[], 0), t, 9);
    }
    let l = limits(3);
    assert!(matches!(d.cut(&l, 1050, false), Cut::Wait(1100)));
    match d.cut(&l, 1100, false) {
        Cut::Take(t) => {
            assert_eq!(
                ids(&t)[..2],
                [1, 2],
                "one batch may hold a series twice, in order"
            );
            assert_eq!(t.chunks.len(), 19, "with the metadata that came meanwhile");
            assert_eq!(t.first_ms, 100);
        }
        _ => panic!("due"),
    }
    d.push(chunk(3, &[8], 2), 1200, 3);
    d.push(chunk(4, &[9], 2), 1200, 4);
    match d.cut(&l, 1200, false) {
        Cut::Take(t) => assert_eq!(ids(&t), [3], "full: the next would pass the limit"),
        _ => panic!("full"),
    }
    // Then nothing more arrives: a tenth of the flush interval later it goes.
    assert!(matches!(d.cut(&l, 1250, false), Cut::Wait(1300)));
    assert!(matches!(d.cut(&l, 1300, false), Cut::Take(_)));
}

#[test]
fn a_finished_part_frees_its_series_while_the_rest_is_retried() {
    let mut d = Dispatcher::default();
    d.push(chunk(1, &[7], 1), 0, 1);
    d.push(chunk(2, &[8, 9], 1), 0, 2);
    d.push(chunk(3, &[10], 1), 0, 3);
    let l = limits(3);
    let a = take(&mut d, &l);
    assert_eq!(ids(&a), [1, 2, 3]);
    d.push(chunk(4, &[8], 1), 0, 4);
    d.push(chunk(5, &[7], 1), 0, 5);
    assert!(matches!(d.cut(&l, 0, true), Cut::Blocked));
    // Chunks 2 and 3 were delivered; chunk 1 is still being retried.
    let mut finished = Vec::new();
    let left = d.done_part(&a, &[1, 2], |t| finished.push(*t));
    assert_eq!(finished, [2, 3]);
    assert!(left.is_empty(), "1 is unfinished at the front");
    let b = take(&mut d, &l);
    assert_eq!(ids(&b), [4], "8 is free again; 7 is not");
    // Finishing a part twice, or the whole batch after a part, counts each chunk once.
    finished.clear();
    assert!(d.done_part(&a, &[1], |t| finished.push(*t)).is_empty());
    assert!(finished.is_empty());
    let left = d.done_with(a, |t| finished.push(*t));
    assert_eq!(finished, [1]);
    assert_eq!(left, [1, 2, 3]);
    assert_eq!(ids(&take(&mut d, &l)), [5]);
    assert_eq!(d.done(b), [4]);
}

#[test]
fn however_much_is_blocked_a_chunk_that_may_go_is_found() {
    let mut d = Dispatcher::default();
    d.push(chunk(1, &[7], 1), 0, 1);
    let l = limits(1000);
    let stuck = take(&mut d, &l);
    for _ in 0..500 {
        d.push(chunk(2, &[7], 1), 0, 2);
    }
    d.push(chunk(3, &[9], 1), 0, 3);
    let t = take(&mut d, &l);
    assert_eq!(ids(&t), [3], "behind 500 blocked chunks");
    assert!(matches!(d.cut(&l, 0, true), Cut::Blocked));
    d.done(t);
    d.done(stuck);
    assert_eq!(take(&mut d, &l).chunks.len(), 500);
}

#[test]
fn drain_takes_only_what_waits() {
    let mut d = Dispatcher::default();
    d.push(chunk(1, &[7], 1), 0, 1);
    d.push(chunk(2, &[7], 1), 0, 2);
    let a = take(&mut d, &limits(1));
    let rest: Vec<u8> = d.drain_waiting().0.into_iter().map(|(_, t)| t).collect();
    assert_eq!(rest, [2]);
    assert_eq!(d.done(a), [1], "a drained chunk's tag is handed over once");
    assert_eq!(d.len(), 0);
}

/// Behind a batch that never finishes, finished chunks keep their places (the window
/// releases in order), and blocked chunks pile up behind it; once parked, a blocked chunk
/// is not looked at again until what blocks it moves: scans visit the chunks that may go.
#[test]
fn a_scan_visits_only_chunks_that_may_go() {
    let mut d = Dispatcher::default();
    let l = limits(1);
    d.push(chunk(0, &[1], 1), 0, 0);
    let stuck = take(&mut d, &l);
    for i in 0..10_000u32 {
        d.push(chunk(1, &[2 + i], 1), 0, 1);
        let t = take(&mut d, &l);
        assert!(d.done(t).is_empty(), "the stuck batch holds the front");
    }
    for _ in 0..10_000 {
        d.push(chunk(2, &[1], 1), 0, 2);
    }
    assert!(matches!(d.cut(&l, 0, true), Cut::Blocked));
    assert_eq!(
        d.visited, 10_000,
        "each new chunk is looked at once, and parked"
    );
    assert_eq!(d.index_bytes(), 10_000 * PARKED_BYTES_PER_KEY);
    assert_eq!(d.len(), 20_001);
    d.push(chunk(3, &[99_999], 1), 0, 3);
    assert_eq!(
        ids(&take(&mut d, &l)),
        [3],
        "the blocked ones wait, the other goes"
    );
    assert_eq!(d.visited, 1, "the scan looked at the one chunk that may go");
    assert!(matches!(d.cut(&l, 0, true), Cut::Blocked));
    assert_eq!(d.visited, 0);
    // The stuck batch finishes: the 10,000 chunks of its series go, in one batch.
    assert_eq!(d.done(stuck).len(), 10_001);
    assert_eq!(d.index_bytes(), 0);
    let l = limits(100_000);
    assert_eq!(take(&mut d, &l).chunks.len(), 10_000);
    assert_eq!(d.visited, 10_000);
}

/// A chunk freed while a batch forms (its blocker taken into a batch that is not due yet)
/// stays dispatchable, and goes with that batch, in order, once it is due.
#[test]
fn a_chunk_freed_while_a_batch_forms_is_not_lost() {
    let mut d = Dispatcher::default();
    let l = limits(1000);
    d.push(chunk(1, &[7], 1), 0, 1);
    let x = take(&mut d, &l);
    d.push(chunk(2, &[7, 8], 1), 0, 2); // parked on the batch in flight (7)
    d.push(chunk(3, &[8], 1), 0, 3); // parked on 2 (8)
    assert!(matches!(d.cut(&l, 0, false), Cut::Blocked));
    assert_eq!(d.index_bytes(), 3 * PARKED_BYTES_PER_KEY);
    d.done(x);
    assert!(matches!(d.cut(&l, 0, false), Cut::Wait(100)));
    match d.cut(&l, 100, false) {
        Cut::Take(t) => assert_eq!(ids(&t), [2, 3]),
        _ => panic!("due at 100"),
    }
}

/// A later part of a batch finished before an earlier one holding the same series: the
/// chain passes over it when the earlier one finishes, not before.
#[test]
fn parts_finished_out_of_order_keep_the_series_order() {
    let mut d = Dispatcher::default();
    d.push(chunk(1, &[7, 8], 1), 0, 1);
    d.push(chunk(2, &[7], 1), 0, 2);
    let a = take(&mut d, &limits(2));
    assert_eq!(ids(&a), [1, 2]);
    d.push(chunk(3, &[7], 1), 0, 3);
    d.push(chunk(4, &[8], 1), 0, 4);
    assert!(d.done_part(&a, &[1], |_| {}).is_empty());
    assert!(
        matches!(d.cut(&limits(2), 0, true), Cut::Blocked),
        "1 still holds 7 and 8"
    );
    assert_eq!(d.done_part(&a, &[0], |_| {}), [1, 2]);
    assert_eq!(ids(&take(&mut d, &limits(2))), [3, 4]);
    assert!(d.index_bytes() == 0 && d.ready.is_empty());
}

/// A batch given back waits again in its places, in its chains: it goes again in order,
/// and what came behind it still waits for it.
#[test]
fn a_batch_given_back_goes_again_in_order() {
    let mut d = Dispatcher::default();
    d.push(chunk(1, &[7], 1), 0, 1);
    d.push(chunk(2, &[7, 8], 1), 0, 2);
    let a = take(&mut d, &limits(2));
    d.push(chunk(3, &[8], 1), 0, 3);
    let chunks = a.chunks.clone();
    assert_eq!(d.give_back(a, chunks), 2);
    assert_eq!(d.waiting(), 3);
    let b = take(&mut d, &limits(2));
    assert_eq!(ids(&b), [1, 2]);
    assert!(matches!(d.cut(&limits(2), 0, true), Cut::Blocked));
    d.done(b);
    assert_eq!(ids(&take(&mut d, &limits(2))), [3]);
}

/// Random pushes, cuts, finishes (whole or in parts, in any order), give-backs and a drain,
/// checked against the rule itself after every step: a chunk goes only when no earlier
/// unfinished chunk outside its batch shares a series with it; a scan finds the first
/// chunk that may go; nothing is left in the index once everything is finished.
#[test]
fn the_index_agrees_with_the_rule_on_random_runs() {
    struct Model {
        keys: Vec<Vec<SeriesKey>>,
        /// 0 waiting, 1 in flight, 2 finished.
        state: Vec<u8>,
    }
    impl Model {
        fn free(&self, s: usize, batch: &[usize]) -> bool {
            (0..s).all(|e| {
                self.state[e] == 2
                    || batch.contains(&e)
                    || !self.keys[e].iter().any(|k| self.keys[s].contains(k))
            })
        }
    }
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: u64| {
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    };
    for _round in 0..200 {
        let mut d: Dispatcher<usize> = Dispatcher::default();
        let mut m = Model {
            keys: Vec::new(),
            state: Vec::new(),
        };
        let mut out: Vec<Taken> = Vec::new();
        for _step in 0..120 {
            match next(10) {
                0..=2 => {
                    let n = next(4);
                    let mut keys: Vec<SeriesKey> = (0..n).map(|_| next(12) as SeriesKey).collect();
                    if next(5) == 0 {
                        keys.extend(keys.clone()); // a series twice in one request
                    }
                    d.push(chunk(0, &keys, 1 + next(3) as u32), 0, m.keys.len());
                    m.keys.push(keys);
                    m.state.push(0);
                }
                3 => {
                    // A scan while a batch forms (not due yet): nothing is handed out,
                    // and nothing may get lost either (checked by the next scans).
                    let wait = BatchLimits {
                        max_samples: 1000,
                        ..limits(1000)
                    };
                    assert!(matches!(
                        d.cut(&wait, 0, false),
                        Cut::Wait(_) | Cut::Blocked | Cut::Empty
                    ));
                }
                4..=6 => match d.cut(&limits(1 + next(6) as usize), 0, true) {
                    Cut::Take(t) => {
                        let seqs: Vec<usize> = t.seqs.iter().map(|&s| s as usize).collect();
                        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "push order");
                        let first_free =
                            (0..m.keys.len()).find(|&s| m.state[s] == 0 && m.free(s, &[]));
                        assert_eq!(first_free, Some(seqs[0]), "the first that may go");
                        for (i, &s) in seqs.iter().enumerate() {
                            assert_eq!(m.state[s], 0);
                            assert!(m.free(s, &seqs[..i]), "{s} overtakes a holder");
                        }
                        for &s in &seqs {
                            m.state[s] = 1;
                        }
                        out.push(t);
                    }
                    Cut::Blocked => assert!(
                        (0..m.keys.len()).all(|s| m.state[s] != 0 || !m.free(s, &[])),
                        "blocked while a chunk may go"
                    ),
                    Cut::Empty => assert!(m.state.iter().all(|&s| s != 0)),
                    Cut::Wait(_) => panic!("a flushing cut never waits"),
                },
                7 | 8 if !out.is_empty() => {
                    let t = out.swap_remove(next(out.len() as u64) as usize);
                    if next(2) == 0 {
                        let mut part: Vec<usize> =
                            (0..t.seqs.len()).filter(|_| next(2) == 0).collect();
                        part.reverse();
                        d.done_part(&t, &part, |&s| m.state[s] = 2);
                        out.push(t);
                    } else {
                        d.done_with(t, |&s| m.state[s] = 2);
                    }
                }
                9 if !out.is_empty() => {
                    let t = out.swap_remove(next(out.len() as u64) as usize);
                    let chunks = t.chunks.clone();
                    for &s in &t.seqs {
                        if m.state[s as usize] == 1 {
                            m.state[s as usize] = 0;
                        }
                    }
                    d.give_back(t, chunks);
                }
                _ => {}
            }
            let waiting = m.state.iter().filter(|&&s| s == 0).count();
            assert_eq!(d.waiting(), waiting);
            let parked: Vec<&Slot<usize>> = d.window.iter().filter(|s| s.parked).collect();
            let parked_keys: usize = parked
                .iter()
                .map(|s| match &s.state {
                    State::Waiting(c) => c
                        .keys
                        .iter()
                        .collect::<std::collections::HashSet<_>>()
                        .len(),
                    _ => panic!("a parked chunk that does not wait"),
                })
                .sum();
            assert_eq!(
                d.parked.keys, parked_keys,
                "the index holds the parked keys"
            );
            assert_eq!(d.ready.len() + parked.len(), waiting);
        }
        for t in out.drain(..) {
            d.done_with(t, |&s| m.state[s] = 2);
        }
        d.drain_waiting();
        assert!(d.parked.by_key.is_empty() && d.ready.is_empty() && d.waiting() == 0);
        assert_eq!(d.len(), 0);
    }
}
