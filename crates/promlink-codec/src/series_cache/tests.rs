use super::*;

fn table(sets: usize) -> Table {
    Table::new(sets * WAYS * SLOT_BYTES).expect("large enough")
}

fn hash(t: &Table, i: u64) -> u128 {
    xxhash_rust::xxh3::xxh3_128_with_seed(&i.to_le_bytes(), t.seed)
}

/// What the tests store for hash `h`: a key that depends on the hash only, so a torn or
/// mixed-up read shows as a wrong value.
fn key_of(h: u128) -> u64 {
    (h >> 17) as u64
}

#[test]
fn a_stored_series_is_found_with_its_key() {
    let t = table(16);
    let h = hash(&t, 1);
    assert_eq!(t.get(h), None);
    assert_eq!(t.put(h, 42), Put::Stored);
    assert_eq!(t.get(h), Some(42));
    assert_eq!(t.put(h, 42), Put::Present);
    let other = hash(&t, 2);
    t.put(other, 0);
    assert_eq!(t.get(other), Some(0), "a key of 0 is a key");
    assert_eq!(t.get(h), Some(42));
    assert_eq!(t.used.load(Relaxed), 2);
}

#[test]
fn a_slot_whose_words_do_not_belong_together_reads_as_a_miss() {
    let t = table(4);
    let h = hash(&t, 9);
    t.put(h, key_of(h));
    let (way, _) = t.find(t.set(h), h).expect("stored");
    // A writer halfway through another entry: its key written, not yet its first word.
    t.set(h).0[2 * way + 1].store(12345, Relaxed);
    assert_eq!(t.get(h), None);
}

#[test]
fn too_small_a_bound_means_no_cache() {
    assert!(SeriesCache::new(0).is_none());
    assert!(SeriesCache::new(WAYS * SLOT_BYTES).is_none());
    assert!(SeriesCache::new(2 * WAYS * SLOT_BYTES).is_some());
    // A power of two of sets, within the bound.
    let t = Table::new(3 * 1024 * WAYS * SLOT_BYTES).expect("table");
    assert_eq!(t.sets.len(), 2048);
}

/// Scrapes of more series than fit: after a warm-up the part that fits keeps hitting (LRU
/// and plain CLOCK would miss on every lookup).
#[test]
fn a_cyclic_scan_larger_than_the_cache_keeps_hitting() {
    let t = table(256);
    let series: Vec<u128> = (0..t.slots() as u64 * 2).map(|i| hash(&t, i)).collect();
    let mut hits = 0;
    for round in 0..10 {
        hits = 0;
        for &h in &series {
            if t.get(h).is_some() {
                hits += 1;
            } else {
                t.put(h, key_of(h));
            }
        }
        assert!(round > 0 || hits == 0);
    }
    // Up to half the scan fits; at least a third keeps hitting.
    assert!(hits > series.len() / 3, "{hits} hits of {}", series.len());
}

#[test]
fn a_working_set_that_fits_stops_missing() {
    // 3/8 of the slots: the relay load's 100,000 series in the 4 MiB table they grow it to.
    let t = table(1024);
    let series: Vec<u128> = (0..t.slots() as u64 * 3 / 8).map(|i| hash(&t, i)).collect();
    for _ in 0..5 {
        for &h in &series {
            if t.get(h).is_none() {
                t.put(h, key_of(h));
            }
        }
    }
    let hits = series.iter().filter(|&&h| t.get(h).is_some()).count();
    // Every series stays but those for which their set has no room: a set that more than
    // WAYS of them map to (a few, at random: the table's seed is) keeps WAYS of them. Counted
    // exactly, so the answer does not depend on the seed.
    let mut per_set = vec![0usize; t.sets.len()];
    for &h in &series {
        per_set[(h >> 64) as usize & (t.sets.len() - 1)] += 1;
    }
    let room: usize = per_set.iter().map(|&n| n.min(WAYS)).sum();
    assert_eq!(hits, room, "{hits} of {} found", series.len());
    for &h in &series {
        if let Some(k) = t.get(h) {
            assert_eq!(k, key_of(h));
        }
    }
}

#[test]
fn the_table_doubles_when_half_full_and_stays_within_the_bound() {
    let bound = 3 * START_BYTES;
    let cache = SeriesCache::new(bound).expect("cache");
    assert_eq!(cache.stats().bytes, START_BYTES);
    let mut sizes = vec![cache.stats().bytes];
    for round in 0..6u64 {
        let t = cache.current();
        for i in 0..t.slots() as u64 {
            let h = hash(&t, round << 32 | i);
            t.put(h, key_of(h));
        }
        cache.grow(&t);
        sizes.push(cache.stats().bytes);
    }
    assert_eq!(sizes[1], 2 * START_BYTES, "{sizes:?}");
    // 3 MiB holds 2 MiB of sets (a power of two): it stays there.
    assert!(
        sizes[2..].iter().all(|&s| s == 2 * START_BYTES),
        "{sizes:?}"
    );
}

/// Readers and writers at once on a table too small for them (slots rewritten all the time):
/// a hit always gives what was stored for that hash.
#[test]
fn concurrent_readers_never_see_another_series_answer() {
    let t = Arc::new(table(8));
    let series: Arc<Vec<u128>> = Arc::new((0..400).map(|i| hash(&t, i)).collect());
    let threads: Vec<_> = (0..4)
        .map(|n| {
            let (t, series) = (t.clone(), series.clone());
            std::thread::spawn(move || {
                let mut hits = 0;
                for round in 0..200 {
                    for (i, &h) in series.iter().enumerate() {
                        if (i + round + n) % 3 == 0 {
                            t.put(h, key_of(h));
                        } else if let Some(k) = t.get(h) {
                            assert_eq!(k, key_of(h));
                            hits += 1;
                        }
                    }
                }
                hits
            })
        })
        .collect();
    let hits: usize = threads.into_iter().map(|h| h.join().expect("thread")).sum();
    assert!(hits > 0);
}

/// A request of more series than `max_series` is refused by the walk; hashing its series first
/// stops there too, so a small body of many empty series cannot take much memory.
#[test]
fn a_session_hashes_no_more_series_than_a_request_may_hold() {
    let cache = SeriesCache::new(START_BYTES).expect("cache");
    let opts = Options {
        limits: crate::Limits {
            max_series: 10,
            ..crate::Limits::default()
        },
        ..Options::default()
    };
    let raw = [0x0a, 0x00].repeat(1000);
    assert_eq!(cache.session(&opts, &raw).ends.len(), 11);
    assert_eq!(cache.session(&Options::default(), &raw).ends.len(), 1000);
}
