use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::codec::{ChunkCounts, Entry, FIELD_TIMESERIES};

pub(super) use crate::queue::test_chunk as entry;

pub(super) fn id(c: &Chunk) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&c.data[..8]);
    u64::from_le_bytes(a)
}

fn ids(b: &Batch) -> Vec<u64> {
    b.chunks.iter().map(id).collect()
}

fn config(dir: &Path) -> DiskQueueConfig {
    DiskQueueConfig {
        dir: dir.to_path_buf(),
        max_bytes: 1 << 30,
        segment_bytes: 16 << 20,
        fsync: FsyncPolicy::Always,
        commit_delay: Duration::ZERO,
        recent_commit: super::RECENT_COMMIT,
        window_bytes: 1 << 20,
    }
}

pub(super) fn limits(max_samples: usize, flush: Duration) -> BatchLimits {
    BatchLimits {
        max_samples,
        max_bytes: 1 << 20,
        flush_interval: flush,
    }
}

fn open(cfg: &DiskQueueConfig) -> (DiskQueue, RecoveryReport) {
    DiskQueue::open(cfg.clone()).expect("open")
}

/// Size of the record one push of `chunks` writes.
fn record_len(chunks: &[Chunk]) -> u64 {
    segment::encode_record(0, chunks).len() as u64
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v
}

/// Pops and finishes batches until nothing is left, returning the ids in order.
async fn drain(q: &DiskQueue, l: &BatchLimits) -> Vec<u64> {
    let mut got = Vec::new();
    while q.has_unread() {
        let b = q.pop_batch(l).await.unwrap();
        got.extend(ids(&b));
        q.done(b);
    }
    got
}

#[tokio::test]
async fn chunks_leave_in_push_order() {
    let dir = tempfile::tempdir().unwrap();
    let (q, report) = open(&config(dir.path()));
    assert_eq!(report.replayed_chunks, 0);
    for ids in (0..12u64).collect::<Vec<_>>().chunks(3) {
        q.push(ids.iter().map(|&i| entry(i % 2, i, 1, 20)).collect())
            .await
            .unwrap();
    }
    let got = drain(&q, &limits(4, Duration::ZERO)).await;
    assert_eq!(got, (0..12).collect::<Vec<_>>());
    assert_eq!(q.used_bytes(), 0);
    assert_eq!(q.stats().records, 0);
    assert_eq!(q.oldest_age(), None);
}

/// Batches without common series are in flight together and may finish in any order; a
/// series' next chunk waits for its previous batch; the read position follows the oldest
/// unfinished chunk.
#[tokio::test]
async fn batches_without_common_series_go_together_and_finish_in_any_order() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (q, _) = open(&cfg);
    for (key, id) in [(1, 0), (2, 1), (1, 2), (3, 3)] {
        q.push(vec![entry(key, id, 1, 10)]).await.unwrap();
    }
    let l = limits(1, Duration::ZERO);
    let a = q.pop_batch(&l).await.unwrap();
    let b = q.pop_batch(&l).await.unwrap();
    let c = q.pop_batch(&l).await.unwrap();
    assert_eq!((ids(&a), ids(&b), ids(&c)), (vec![0], vec![1], vec![3]));
    assert!(q.has_unread(), "chunk 2 waits for chunk 0 (series 1)");
    q.done(c);
    q.done(b);
    q.sync().await.unwrap();
    // Chunk 0 is unfinished: everything from it on comes back after a restart.
    drop(a);
    q.crash();
    let (q, report) = open(&cfg);
    assert_eq!(
        report.replayed_chunks, 4,
        "finished out of order, sent again"
    );
    let got = drain(&q, &limits(10, Duration::ZERO)).await;
    assert_eq!(got, [0, 1, 2, 3]);
}

#[tokio::test]
async fn full_refuses_the_whole_request_and_done_frees_budget() {
    let dir = tempfile::tempdir().unwrap();
    let one = record_len(&[entry(0, 0, 1, 100), entry(1, 1, 1, 100)]);
    let mut cfg = config(dir.path());
    cfg.max_bytes = one + one / 2;
    let (q, _) = open(&cfg);
    q.push(vec![entry(0, 0, 1, 100), entry(1, 1, 1, 100)])
        .await
        .unwrap();
    assert_eq!(q.used_bytes(), one);
    match q.push(vec![entry(0, 2, 1, 100), entry(1, 3, 1, 100)]).await {
        Err(PushError::Full { used, max, needed }) => {
            assert_eq!((used, max, needed), (one, cfg.max_bytes, one));
        }
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(q.stats().records, 1, "a refused push leaves nothing behind");
    let b = q.pop_batch(&limits(10, Duration::ZERO)).await.unwrap();
    assert_eq!(ids(&b), [0, 1]);
    assert!(!q.has_unread(), "the refused chunks are nowhere");
    q.done(b);
    assert_eq!(q.used_bytes(), 0);
    q.push(vec![entry(0, 2, 1, 100), entry(1, 3, 1, 100)])
        .await
        .unwrap();
}

#[tokio::test]
async fn a_request_bigger_than_the_budget_enters_an_empty_queue() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_bytes = 10;
    let (q, _) = open(&cfg);
    q.push(vec![entry(0, 0, 1, 100)]).await.unwrap();
    assert!(matches!(
        q.push(vec![entry(0, 1, 1, 1)]).await,
        Err(PushError::Full { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn batches_fill_to_the_sample_limit_or_go_when_the_flow_stops() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = open(&config(dir.path()));
    q.push((0..10).map(|i| entry(i, i, 3, 8)).collect())
        .await
        .unwrap();
    let l = limits(7, Duration::from_secs(5));
    let start = tokio::time::Instant::now();
    let b = q.pop_batch(&l).await.unwrap();
    // 3 + 3 fits, a third chunk would make 9 > 7; a full batch does not wait.
    assert_eq!(ids(&b), [0, 1]);
    assert!(start.elapsed() < Duration::from_secs(5));
    q.done(b);
    let mut rest = Vec::new();
    for _ in 0..4 {
        let b = q.pop_batch(&l).await.unwrap();
        rest.extend(ids(&b));
        q.done(b);
    }
    assert_eq!(rest, [2, 3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(500),
        "the last, partial batch went a tenth of the flush interval after the last push"
    );
    // (That a steady flow keeps a partial batch open until the flush interval is the
    // dispatcher's rule for both queues, tested with the memory queue: here, awaiting the
    // committer thread lets tokio's paused clock jump ahead.)

    q.push(vec![entry(0, 11, 1, 8)]).await.unwrap();
    q.close();
    let t = tokio::time::Instant::now();
    let b = q.pop_batch(&l).await.unwrap();
    assert_eq!(ids(&b), [11]);
    assert!(t.elapsed() < Duration::from_secs(5));
    q.done(b);
    assert!(q.pop_batch(&l).await.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_waiting_pop_wakes_on_push() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = open(&config(dir.path()));
    let q = Arc::new(q);
    let popper = {
        let q = q.clone();
        tokio::spawn(async move { q.pop_batch(&limits(1, Duration::from_secs(60))).await })
    };
    tokio::task::yield_now().await;
    q.push(vec![entry(0, 7, 1, 8)]).await.unwrap();
    let b = popper.await.unwrap().unwrap();
    assert_eq!(ids(&b), [7]);
}

/// With a window smaller than the backlog, the rest is read back from the files as the window
/// empties, in order.
#[tokio::test]
async fn a_backlog_larger_than_the_window_is_read_back_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.window_bytes = 300;
    cfg.segment_bytes = 2048;
    let (q, _) = open(&cfg);
    for i in 0..60 {
        q.push(vec![entry(i % 5, i, 1, 100)]).await.unwrap();
    }
    let got = drain(&q, &limits(3, Duration::ZERO)).await;
    assert_eq!(got, (0..60).collect::<Vec<_>>());
    assert_eq!(q.used_bytes(), 0);
    q.sync().await.unwrap();
    assert_eq!(segments(dir.path()).len(), 1, "consumed segments deleted");
}

#[tokio::test]
async fn reopen_replays_only_unfinished_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    {
        let (q, _) = open(&cfg);
        // Two requests of five: a finished batch ends inside the first record.
        q.push((0..5).map(|i| entry(i, i, 1, 30)).collect())
            .await
            .unwrap();
        q.push((5..10).map(|i| entry(i, i, 1, 30)).collect())
            .await
            .unwrap();
        let l = limits(3, Duration::ZERO);
        let b = q.pop_batch(&l).await.unwrap();
        assert_eq!(ids(&b), [0, 1, 2]);
        q.done(b);
        // In flight, not finished: must come back.
        let b = q.pop_batch(&l).await.unwrap();
        assert_eq!(ids(&b), [3, 4, 5]);
        q.close();
    }
    let (q, report) = open(&cfg);
    assert_eq!(report.replayed_chunks, 7);
    assert!(report.corrupt_records.is_empty());
    assert_eq!(q.stats().replayed, 7);
    assert!(q.oldest_age().is_some());
    let b = q.pop_batch(&limits(100, Duration::ZERO)).await.unwrap();
    assert_eq!(ids(&b), [3, 4, 5, 6, 7, 8, 9]);
    q.done(b);
    drop(q);
    let (_, report) = open(&cfg);
    assert_eq!(report.replayed_chunks, 0);
}

#[tokio::test]
async fn finished_and_synced_data_is_not_replayed_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (q, _) = open(&cfg);
    q.push((0..4).map(|i| entry(i, i, 1, 30)).collect())
        .await
        .unwrap();
    let b = q.pop_batch(&limits(2, Duration::ZERO)).await.unwrap();
    q.done(b);
    q.sync().await.unwrap();
    q.crash();
    let (q, report) = open(&cfg);
    assert_eq!(report.replayed_chunks, 2);
    let b = q.pop_batch(&limits(10, Duration::ZERO)).await.unwrap();
    assert_eq!(ids(&b), [2, 3]);
}

#[tokio::test]
async fn a_finished_batch_moves_the_read_position_without_another_push() {
    for fsync in [
        FsyncPolicy::Always,
        FsyncPolicy::Interval(Duration::from_secs(3600)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.fsync = fsync;
        let (q, _) = open(&cfg);
        q.push((0..4).map(|i| entry(i, i, 1, 30)).collect())
            .await
            .unwrap();
        let pos = dir.path().join("log").join("read.pos");
        let before = std::fs::read(&pos).unwrap_or_default();
        let b = q.pop_batch(&limits(2, Duration::ZERO)).await.unwrap();
        q.done(b);
        // The committer sleeps until the next push (or the hour's tick): the ack must wake it.
        let deadline = std::time::Instant::now() + commit::ACK_LATENCY + Duration::from_secs(2);
        while std::fs::read(&pos).unwrap_or_default() == before {
            assert!(
                std::time::Instant::now() < deadline,
                "{fsync:?}: the read position was not written"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        q.crash();
        let (_, report) = open(&cfg);
        assert_eq!(report.replayed_chunks, 2, "{fsync:?}");
    }
}

#[test]
fn an_ack_wakes_the_committer_only_when_it_would_sleep_too_long() {
    use std::time::Instant;
    let mut q = commit::CommitQueue::default();
    assert!(q.ack(), "asleep until notified");
    assert!(q.acks);
    q.awake_by = Some(Instant::now());
    assert!(!q.ack(), "at work: it takes the ack in its next cycle");
    q.awake_by = Some(Instant::now() + commit::ACK_LATENCY / 2);
    assert!(!q.ack(), "its own tick comes soon enough");
    q.awake_by = Some(Instant::now() + commit::ACK_LATENCY + Duration::from_secs(60));
    assert!(q.ack(), "its tick is too far away");
}

#[tokio::test]
async fn interval_policy_survives_a_process_crash_without_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.fsync = FsyncPolicy::Interval(Duration::from_secs(3600));
    let (q, _) = open(&cfg);
    for i in 0..20 {
        q.push(vec![entry(i, i, 1, 30)]).await.unwrap();
    }
    assert_eq!(q.stats().fsyncs, 0, "no fsync before the interval");
    assert_eq!(q.stats().commits, 20);
    q.crash();
    let (_, report) = open(&cfg);
    assert_eq!(report.replayed_chunks, 20);
}

#[tokio::test]
async fn interval_policy_fsyncs_on_the_tick_and_on_sync_without_new_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    // Long enough that the push and the check below come before the first tick even on a
    // loaded machine; the wait for the tick after them allows 5 s.
    cfg.fsync = FsyncPolicy::Interval(Duration::from_secs(1));
    let (q, _) = open(&cfg);
    q.push(vec![entry(0, 0, 1, 30)]).await.unwrap();
    assert_eq!(q.stats().fsyncs, 0, "no fsync at the push");
    // The tick comes with no push pending: it must still make the write durable.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while q.stats().fsyncs == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the interval tick never fsynced"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after_tick = q.stats().fsyncs;
    q.push(vec![entry(1, 1, 1, 30)]).await.unwrap();
    q.sync().await.unwrap();
    assert!(
        q.stats().fsyncs > after_tick,
        "sync() fsynced the new write"
    );
}

#[tokio::test]
async fn consumed_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment_bytes = 1024;
    let (q, _) = open(&cfg);
    for i in 0..40 {
        q.push(vec![entry(0, i, 1, 200)]).await.unwrap();
    }
    let before = segments(dir.path()).len();
    assert!(before >= 8, "{before} segments");
    assert_eq!(q.stats().segments, before as u64);
    let got = drain(&q, &limits(7, Duration::ZERO)).await;
    assert_eq!(got, (0..40).collect::<Vec<_>>());
    q.sync().await.unwrap();
    assert_eq!(
        segments(dir.path()).len(),
        1,
        "only the active segment is left"
    );
    assert_eq!(q.stats().segments, 1);
    drop(q);
    let (q, report) = open(&cfg);
    assert_eq!(report.replayed_chunks, 0);
    q.push(vec![entry(0, 99, 1, 10)]).await.unwrap();
    let b = q.pop_batch(&limits(7, Duration::ZERO)).await.unwrap();
    assert_eq!(ids(&b), [99]);
}

#[tokio::test]
async fn a_torn_tail_loses_only_the_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (q, _) = open(&cfg);
    for i in 0..3 {
        q.push(vec![
            entry(2 * i, 2 * i, 1, 50),
            entry(2 * i + 1, 2 * i + 1, 1, 50),
        ])
        .await
        .unwrap();
    }
    q.crash();
    let seg = segments(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    let rec = record_len(&[entry(0, 0, 1, 50), entry(1, 1, 1, 50)]);
    assert_eq!(len, 3 * rec);
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 7).unwrap();
    drop(f);

    let (q, report) = open(&cfg);
    assert!(report.truncated_tail);
    assert_eq!(report.replayed_chunks, 4);
    assert_eq!(report.corrupt_records.len(), 1);
    assert_eq!(report.corrupt_records[0].segment, seg);
    assert_eq!(report.corrupt_records[0].offset, 2 * rec);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), 2 * rec);
    assert_eq!(q.stats().corrupt_records, 1);
    // Appends go on after the cut.
    q.push(vec![entry(6, 6, 1, 50)]).await.unwrap();
    let b = q.pop_batch(&limits(100, Duration::ZERO)).await.unwrap();
    assert_eq!(ids(&b), [0, 1, 2, 3, 6]);
}

#[tokio::test]
async fn a_damaged_middle_record_loses_only_itself() {
    for (what, at) in [("payload", 30u64), ("magic", 0), ("length", 5)] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let (q, _) = open(&cfg);
        for i in 0..5 {
            q.push(vec![entry(i, i, 1, 64)]).await.unwrap();
        }
        drop(q);
        let seg = segments(dir.path()).pop().unwrap();
        let rec = record_len(&[entry(0, 0, 1, 64)]);
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[(2 * rec + at) as usize] ^= 0x40;
        std::fs::write(&seg, &bytes).unwrap();

        let (q, report) = open(&cfg);
        assert!(!report.truncated_tail, "{what}");
        assert_eq!(report.replayed_chunks, 4, "{what}");
        assert_eq!(report.corrupt_records.len(), 1, "{what}");
        assert_eq!(report.corrupt_records[0].segment, seg, "{what}");
        assert_eq!(report.corrupt_records[0].offset, 2 * rec, "{what}");
        let got = drain(&q, &limits(100, Duration::ZERO)).await;
        assert_eq!(got, [0, 1, 3, 4], "{what}");
        assert_eq!(q.stats().corrupt_records, 1, "{what}");
        assert_eq!(q.used_bytes(), 0, "{what}: the damaged bytes are freed too");
        assert_eq!(q.stats().records, 0, "{what}");
    }
}

#[tokio::test]
async fn a_damaged_read_position_replays_from_the_oldest_segment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    {
        let (q, _) = open(&cfg);
        q.push((0..3).map(|i| entry(i, i, 1, 10)).collect())
            .await
            .unwrap();
        let b = q.pop_batch(&limits(1, Duration::ZERO)).await.unwrap();
        q.done(b);
    }
    let pos = dir.path().join("log").join(segment::POS_FILE);
    std::fs::write(&pos, b"garbage").unwrap();
    let (_, report) = open(&cfg);
    assert_eq!(report.replayed_chunks, 3, "duplicates, not loss");
    assert_eq!(report.corrupt_records.len(), 1);
    assert_eq!(report.corrupt_records[0].segment, pos);
}

/// One fsync per group, however many senders: concurrent pushes share it.
#[tokio::test]
async fn concurrent_pushes_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = open(&config(dir.path()));
    const N: u64 = 64;
    let pushes = (0..N).map(|i| q.push(vec![entry(i, i, 1, 100)]));
    for r in futures_util::future::join_all(pushes).await {
        r.unwrap();
    }
    let s = q.stats();
    assert_eq!(s.records, N);
    assert!(s.commits < N / 4, "{} commits for {N} pushes", s.commits);
    assert!(
        s.fsyncs <= s.commits + 1,
        "{} fsyncs for {} commits",
        s.fsyncs,
        s.commits
    );
    assert!(s.fsyncs > 0);
}

/// `commit_delay`: a push right after a group commit waits for it (and pushes arriving
/// meanwhile share its fsync); a push after a quiet moment does not wait.
///
/// "Right after" is `recent_commit`, 2 ms in production. A loaded test machine can take
/// longer than that between one push's answer and the next push, so the first queue gets a
/// window no scheduler delay reaches, and the quiet moment is tested on a second queue whose
/// window is short next to the pause.
#[tokio::test]
async fn commit_delay_makes_a_push_right_after_a_commit_wait_for_company() {
    // Long next to one commit's write and fsync, even on a disk other tests keep busy.
    let delay = Duration::from_secs(1);
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = open(&DiskQueueConfig {
        commit_delay: delay,
        recent_commit: Duration::from_secs(600),
        ..config(dir.path())
    });
    // A first commit, after nothing: no wait.
    let t = std::time::Instant::now();
    q.push(vec![entry(0, 0, 1, 100)]).await.unwrap();
    assert!(
        t.elapsed() < delay,
        "the first push waited {:?}",
        t.elapsed()
    );
    // Right after it: the next group waits; what arrives meanwhile joins it.
    let t = std::time::Instant::now();
    let late = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        q.push(vec![entry(2, 2, 1, 100)]).await
    };
    let (a, b) = tokio::join!(q.push(vec![entry(1, 1, 1, 100)]), late);
    a.unwrap();
    b.unwrap();
    assert!(t.elapsed() >= delay, "waited only {:?}", t.elapsed());
    let s = q.stats();
    assert_eq!((s.records, s.commits), (3, 2), "{s:?}");

    // After a quiet moment (longer than `recent_commit`): no wait.
    let dir = tempfile::tempdir().unwrap();
    let recent = Duration::from_millis(5);
    let (q, _) = open(&DiskQueueConfig {
        commit_delay: delay,
        recent_commit: recent,
        ..config(dir.path())
    });
    q.push(vec![entry(0, 0, 1, 100)]).await.unwrap();
    tokio::time::sleep(recent * 10).await;
    let t = std::time::Instant::now();
    q.push(vec![entry(1, 1, 1, 100)]).await.unwrap();
    assert!(
        t.elapsed() < delay,
        "waited {:?} after a quiet moment",
        t.elapsed()
    );
    assert_eq!(q.stats().commits, 2);
}

#[test]
fn records_round_trip_and_reject_damage() {
    let mut first = entry(3, 1, 7, 300);
    first.counts.histograms = 2;
    first.counts.exemplars = 4;
    first.min_ts = i64::MIN;
    let mut second = entry(3, 2, 0, 0);
    second.counts = ChunkCounts {
        metadata: 9,
        ..ChunkCounts::default()
    };
    second.min_ts = i64::MAX;
    let chunks = vec![first, second];
    let rec = segment::encode_record(1234, &chunks);
    let payload = Bytes::copy_from_slice(&rec[segment::HEADER_LEN as usize..]);
    let (at, back) = segment::decode_payload(&payload).unwrap();
    assert_eq!(at, 1234);
    assert_eq!(back, chunks, "every field survives");
    // Every truncation of the payload is refused, never a panic.
    for cut in 0..payload.len() {
        assert!(segment::decode_payload(&payload.slice(..cut)).is_err());
    }
    assert_eq!(
        segment::parse_segment_name(&segment::segment_name(42)),
        Some(42)
    );
    assert_eq!(segment::parse_segment_name("42.log"), None);
}

#[tokio::test]
async fn a_second_process_cannot_open_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (first, _) = DiskQueue::open(cfg.clone()).unwrap();
    let err = DiskQueue::open(cfg.clone()).err().expect("locked");
    assert!(
        err.to_string()
            .contains("in use by another promlink process"),
        "{err}"
    );
    drop(first);
    DiskQueue::open(cfg).expect("free again after the first closes");
}

/// A record in the version 1 layout (one entry per message), as earlier versions wrote it.
fn record_v1(at_ms: u64, entries: &[Entry]) -> Vec<u8> {
    fn varint(buf: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        buf.push(v as u8);
    }
    let mut payload = at_ms.to_le_bytes().to_vec();
    varint(&mut payload, entries.len() as u64);
    for e in entries {
        payload.extend_from_slice(&e.shard_key.to_le_bytes());
        for v in [
            e.field,
            e.counts.samples,
            e.counts.histograms,
            e.counts.exemplars,
        ] {
            varint(&mut payload, u64::from(v));
        }
        varint(&mut payload, e.bytes.len() as u64);
        payload.extend_from_slice(&e.bytes);
    }
    let len = (payload.len() as u32).to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(&payload);
    let mut rec = b"PLQ1".to_vec();
    rec.extend_from_slice(&len);
    rec.extend_from_slice(&h.finalize().to_le_bytes());
    rec.extend_from_slice(&payload);
    rec
}

/// A queue written by an earlier version (format 1: a log per shard, one entry per message,
/// `skip` counting messages) is migrated on open: the unconsumed messages come back, in order,
/// as chunks that decompress to the same bytes, and the old directories are gone.
#[tokio::test]
async fn version_1_queues_are_migrated_on_open() {
    let series = |name: &str, ts: i64| {
        let mut label = Vec::new();
        crate::codec::wire::put_len_field(&mut label, 1, b"__name__");
        crate::codec::wire::put_len_field(&mut label, 2, name.as_bytes());
        let mut sample = vec![0x09];
        sample.extend_from_slice(&2.5f64.to_le_bytes());
        sample.push(0x10);
        crate::codec::wire::put_varint(&mut sample, ts as u64);
        let mut s = Vec::new();
        crate::codec::wire::put_len_field(&mut s, 1, &label);
        crate::codec::wire::put_len_field(&mut s, 2, &sample);
        Entry {
            shard_key: 0,
            field: FIELD_TIMESERIES,
            bytes: Bytes::from(s),
            counts: ChunkCounts {
                series: 1,
                samples: 1,
                ..ChunkCounts::default()
            },
        }
    };
    let shard0 = [series("a", 1), series("b", 2), series("c", 3)];
    let shard0_more = [series("d", 4)];
    let shard1 = [series("e", 5)];
    let dir = tempfile::tempdir().unwrap();
    for (n, records) in [
        (0, vec![&shard0[..], &shard0_more[..]]),
        (1, vec![&shard1[..]]),
    ] {
        let shard = dir.path().join(format!("shard-{n}"));
        std::fs::create_dir_all(&shard).unwrap();
        let log: Vec<u8> = records
            .iter()
            .enumerate()
            .flat_map(|(i, r)| record_v1(1_000 * (i as u64 + 1), r))
            .collect();
        std::fs::write(shard.join(segment::segment_name(0)), &log).unwrap();
    }
    // The first message of shard 0's first record was delivered before the upgrade.
    segment::write_pos(
        &dir.path().join("shard-0"),
        segment::Pos::new(0, 0, 1),
        true,
    )
    .unwrap();

    let cfg = config(dir.path());
    let (q, report) = open(&cfg);
    assert_eq!(report.migrated_messages, 4, "b, c, d and e");
    assert_eq!(report.replayed_chunks, 3, "one chunk per old record");
    assert!(report.corrupt_records.is_empty());
    assert!(!dir.path().join("shard-0").exists() && !dir.path().join("shard-1").exists());
    let b = q.pop_batch(&limits(100, Duration::ZERO)).await.unwrap();
    let got: Vec<Bytes> = b
        .chunks
        .iter()
        .flat_map(|c| c.entries().unwrap())
        .map(|e| e.bytes)
        .collect();
    let want: Vec<Bytes> = shard0[1..]
        .iter()
        .chain(&shard0_more)
        .chain(&shard1)
        .map(|e| e.bytes.clone())
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        b.chunks.iter().map(|c| c.min_ts).collect::<Vec<_>>(),
        [2, 4, 5]
    );
    q.done(b);
    q.sync().await.unwrap();
    drop(q);
    let (_, report) = open(&cfg);
    assert_eq!(
        report.replayed_chunks, 0,
        "finished across the format change"
    );
    assert_eq!(report.migrated_messages, 0);
}

/// Polls `fut` once and drops it: true when it was still pending (dropped mid-way).
fn poll_once_and_drop<F: std::future::Future>(fut: F) -> bool {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    fut.as_mut().poll(&mut cx).is_pending()
}

/// Pushes dropped while the committer holds them (a sender that hung up mid-commit): each was
/// taken, so it is written and delivered, and its bytes come back when it is finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_cancelled_mid_commit_leak_no_budget() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = open(&config(dir.path()));
    let mut cancelled = 0;
    for i in 0..1000u64 {
        cancelled += u32::from(poll_once_and_drop(q.push(vec![entry(i, i, 1, 100)])));
    }
    assert!(
        cancelled >= 900,
        "only {cancelled} of 1000 were cancelled mid-commit"
    );
    q.sync().await.unwrap();
    let got = drain(&q, &limits(100, Duration::ZERO)).await;
    assert_eq!(
        got,
        (0..1000).collect::<Vec<_>>(),
        "every taken push is delivered"
    );
    assert_eq!(q.used_bytes(), 0);
    q.push(vec![entry(0, 1000, 1, 100)]).await.unwrap();
    assert_eq!(q.used_bytes(), record_len(&[entry(0, 1000, 1, 100)]));
}

/// Mounts a tmpfs of `bytes` on a new temporary directory (needs root); unmounted on drop.
/// `None`, with a loud notice, where mounting is not permitted, except under `CI=true`.
struct SmallFs(tempfile::TempDir);

impl SmallFs {
    fn mount(bytes: u64) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var_os("CI").is_none_or(|v| v != "true"),
                "CI=true: cannot mount a tmpfs for the full-filesystem test (run as root)"
            );
            eprintln!("SKIPPED: cannot mount a tmpfs here (not root?): the full-filesystem test did not run");
            return None;
        }
        Some(Self(dir))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

/// A real full filesystem (ENOSPC): the push that does not fit fails and is undone, its
/// budget comes back (also when its caller went away mid-commit), what fitted is delivered,
/// and once space is freed the queue takes writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_filesystem_refuses_pushes_without_leaking_budget() {
    let Some(fs) = SmallFs::mount(256 << 10) else {
        return;
    };
    let mut cfg = config(fs.0.path());
    cfg.segment_bytes = 64 << 10;
    let (q, _) = open(&cfg);
    let one = |i: u64| vec![entry(i, i, 1, 4000)];
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..200u64 {
        match q.push(one(i)).await {
            Ok(()) => accepted.push(i),
            Err(PushError::Io(e)) => {
                assert_eq!(e.kind(), io::ErrorKind::StorageFull, "{e}");
                refused += 1;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(
        refused > 0 && accepted.len() > 10,
        "{refused} refused, {accepted:?}"
    );
    let held = record_len(&one(0)) * accepted.len() as u64;
    assert_eq!(q.used_bytes(), held, "refused pushes hold no budget");
    assert_eq!(
        q.failed(),
        None,
        "a full disk is temporary, never the failed state"
    );
    // Callers that hang up while their failing push is committed leak nothing either.
    // (A failing write is answered within microseconds, so some pushes are answered before
    // they can be dropped: try until 100 were dropped mid-commit, within 5,000 attempts.)
    let mut gone = 0;
    for i in 200..5200u64 {
        gone += u32::from(poll_once_and_drop(q.push(one(i))));
        if gone == 100 {
            break;
        }
    }
    assert_eq!(gone, 100, "pushes dropped mid-commit");
    // Answered in order: once this one is, so were all before it.
    assert!(q.push(one(9999)).await.is_err(), "the disk is still full");
    assert_eq!(q.used_bytes(), held);
    // Delivering frees the budget, and the disk: consumed segments are deleted even when the
    // full disk refuses the read position's write.
    let got = drain(&q, &limits(10, Duration::ZERO)).await;
    assert_eq!(got, accepted);
    assert_eq!(q.used_bytes(), 0);
    let _ = q.sync().await;
    q.sync()
        .await
        .expect("the position is written once space is free");
    let mut later = Vec::new();
    for i in 300..310u64 {
        q.push(one(i)).await.unwrap();
        later.push(i);
    }
    assert_eq!(drain(&q, &limits(10, Duration::ZERO)).await, later);
}

/// How long a stalled fsync holds the committer: the pushes of a group start 100 ms in.
const STALL: Duration = Duration::from_secs(1);

fn open_faulty(cfg: &DiskQueueConfig) -> (DiskQueue, files::faults::Faulty) {
    let faults = files::faults::Faulty::default();
    let (q, _) = DiskQueue::open_on(cfg.clone(), Arc::new(faults.clone())).expect("open");
    (q, faults)
}

/// Whether a push error says its record was written and will be delivered anyway.
fn published(e: &PushError) -> bool {
    matches!(e, PushError::Io(e) if e.get_ref().is_some_and(|i| i.is::<Published>()))
}

/// Pushes `first`, then `ids` (one chunk each) at once while the committer is held up by
/// `first`'s slow fsync (armed by the caller), so that they form one commit group. Returns
/// each one's result.
async fn push_group(
    q: &Arc<DiskQueue>,
    faults: &files::faults::Faulty,
    first: u64,
    ids: std::ops::Range<u64>,
) -> (Result<(), PushError>, Vec<Result<(), PushError>>) {
    use files::faults::Op;
    let syncs = faults.calls(Op::SyncData);
    let lead = {
        let q = q.clone();
        tokio::spawn(async move { q.push(vec![entry(first, first, 1, 100)]).await })
    };
    // The group is pushed once the committer is inside the lead's stalled fsync.
    let deadline = std::time::Instant::now() + STALL;
    while faults.calls(Op::SyncData) == syncs {
        assert!(
            std::time::Instant::now() < deadline,
            "the lead's fsync never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let group: Vec<_> = ids
        .map(|i| {
            let q = q.clone();
            tokio::spawn(async move { q.push(vec![entry(i, i, 1, 100)]).await })
        })
        .collect();
    let lead = lead.await.unwrap();
    let mut results = Vec::new();
    for p in group {
        results.push(p.await.unwrap());
    }
    (lead, results)
}

/// A write that fails midway in a commit group (EIO after half the record) is undone, and
/// every push of the group is refused: the ones written before it are kept and delivered
/// (their senders' retries duplicate them), the rest never reach the log. Nothing is left
/// half-written: a reopened queue finds no damage.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_write_fails_every_push_of_its_group() {
    use files::faults::Op;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (q, faults) = open_faulty(&cfg);
    let q = Arc::new(q);
    // The lead's append is the first; the group's second append fails.
    faults.stall(Op::SyncData, 0, STALL);
    faults.fail(Op::Append, 2, io::ErrorKind::Other, 1);
    let (lead, group) = push_group(&q, &faults, 0, 1..5).await;
    lead.expect("the push before the group is durable");
    assert_eq!(faults.injected(), vec![Op::Append]);
    assert!(group.iter().all(Result::is_err), "{group:?}");
    let kept = group
        .iter()
        .filter(|r| r.as_ref().is_err_and(published))
        .count();
    assert_eq!(
        kept, 1,
        "the one written before the failure is kept: {group:?}"
    );
    assert_eq!(q.failed(), None, "an undone write is not the failed state");
    let got = drain(&q, &limits(100, Duration::ZERO)).await;
    assert_eq!(got.len(), 2, "the lead and the kept one: {got:?}");
    assert_eq!(got[0], 0);
    assert_eq!(q.used_bytes(), 0, "refused pushes hold no budget");
    q.push(vec![entry(9, 9, 1, 100)])
        .await
        .expect("writes go on");
    drop(got);
    let q = Arc::into_inner(q).unwrap();
    q.crash();
    let (q, report) = open(&cfg);
    assert!(
        report.corrupt_records.is_empty() && !report.truncated_tail,
        "{report:?}"
    );
    assert_eq!(drain(&q, &limits(100, Duration::ZERO)).await, vec![9]);
}

/// A failed group fsync fails every push of the group; their records stay in the log and are
/// delivered. The segment is never trusted again (Linux reports a writeback error once): the
/// next record starts a new segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_fsync_fails_the_group_and_starts_a_new_segment() {
    use files::faults::Op;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (q, faults) = open_faulty(&cfg);
    let q = Arc::new(q);
    q.push(vec![entry(0, 0, 1, 100)]).await.unwrap();
    // The lead's fsync stalls; the group's fsync fails.
    faults.stall(Op::SyncData, 0, STALL);
    faults.fail(Op::SyncData, 0, io::ErrorKind::Other, 1);
    let (lead, group) = push_group(&q, &faults, 1, 2..6).await;
    lead.expect("the push before the group is durable");
    assert_eq!(faults.injected(), vec![Op::SyncData]);
    assert!(
        group.iter().all(|r| r.as_ref().is_err_and(published)),
        "{group:?}"
    );
    assert_eq!(segments(dir.path()).len(), 1);
    q.push(vec![entry(6, 6, 1, 100)]).await.unwrap();
    assert_eq!(
        segments(dir.path()).len(),
        2,
        "a new segment after the failed fsync"
    );
    let mut got = drain(&q, &limits(100, Duration::ZERO)).await;
    got[2..6].sort_unstable();
    assert_eq!(
        got,
        (0..7).collect::<Vec<_>>(),
        "everything written is delivered"
    );
    assert_eq!(q.used_bytes(), 0);
}

/// The fsync of a full segment before the next one starts fails: the push that needed the new
/// segment fails (under `fsync: interval` the ones before it were answered at write, as that
/// policy allows), and the next push starts the new segment without fsyncing the old one again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_at_rollover_fails_the_push_and_is_not_retried() {
    use files::faults::Op;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment_bytes = 1024;
    cfg.fsync = FsyncPolicy::Interval(Duration::from_secs(3600));
    let (q, faults) = open_faulty(&cfg);
    faults.fail(Op::SyncData, 0, io::ErrorKind::Other, 1);
    let one = |i: u64| vec![entry(i, i, 1, 600)];
    q.push(one(0))
        .await
        .expect("written, answered under interval");
    let e = q
        .push(one(1))
        .await
        .expect_err("its segment could not be synced");
    assert!(!published(&e), "it was not written: {e}");
    assert_eq!(faults.injected(), vec![Op::SyncData]);
    assert_eq!(faults.calls(Op::SyncData), 1);
    q.push(one(2))
        .await
        .expect("the next push starts a new segment");
    assert_eq!(segments(dir.path()).len(), 2);
    assert_eq!(
        faults.calls(Op::SyncData),
        1,
        "the poisoned segment is not fsynced again"
    );
    assert_eq!(drain(&q, &limits(100, Duration::ZERO)).await, vec![0, 2]);
}

/// A failed write whose undo fails too leaves the segment's end unknown: the queue enters
/// its failed state (every push refused with the reason, nothing more written, `failed()` set
/// for /ready and the alert); what was committed before is still delivered, and a restart
/// recovers (the torn tail is cut off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_undo_puts_the_queue_in_its_failed_state() {
    use files::faults::Op;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (q, faults) = open_faulty(&cfg);
    q.push(vec![entry(0, 0, 1, 100)]).await.unwrap();
    faults.fail(Op::Append, 0, io::ErrorKind::Other, 1);
    faults.fail(Op::SetLen, 0, io::ErrorKind::Other, 1);
    assert!(q.push(vec![entry(1, 1, 1, 100)]).await.is_err());
    let why = q.failed().expect("the failed state");
    assert!(
        why.contains("could not be undone") && why.contains("restart"),
        "{why}"
    );
    assert!(
        q.failure(Duration::ZERO).is_some(),
        "/ready fails whatever the hold"
    );
    let size = std::fs::metadata(&segments(dir.path())[0]).unwrap().len();
    for i in 2..5 {
        let e = q
            .push(vec![entry(i, i, 1, 100)])
            .await
            .expect_err("refused");
        assert!(e.to_string().contains("could not be undone"), "{e}");
    }
    assert_eq!(
        std::fs::metadata(&segments(dir.path())[0]).unwrap().len(),
        size,
        "nothing more is written"
    );
    assert_eq!(faults.injected(), vec![Op::Append, Op::SetLen]);
    assert_eq!(drain(&q, &limits(100, Duration::ZERO)).await, vec![0]);
    assert_eq!(q.used_bytes(), 0);
    drop(q);
    let (q, report) = open(&cfg);
    assert!(report.truncated_tail, "{report:?}");
    assert_eq!(q.failed(), None);
    q.push(vec![entry(5, 5, 1, 100)]).await.unwrap();
    assert_eq!(drain(&q, &limits(100, Duration::ZERO)).await, vec![5]);
}

/// Finished chunks behind a batch that never finishes keep their places in the window (it
/// releases in order); the places count against `window_bytes`, so the window stops growing
/// (the rest waits on disk), and everything flows once the batch finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn places_behind_a_stuck_batch_bound_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.window_bytes = 16 << 10;
    let (q, _) = open(&cfg);
    let l = limits(1, Duration::ZERO);
    q.push(vec![entry(1, 0, 1, 100)]).await.unwrap();
    let stuck = q.pop_batch(&l).await.unwrap();
    for i in 1..2000u64 {
        q.push(vec![entry(10 + i, i, 1, 100)]).await.unwrap();
    }
    let mut finished = 0usize;
    while let Ok(Some(b)) = tokio::time::timeout(Duration::from_millis(500), q.pop_batch(&l)).await
    {
        q.done(b);
        finished += 1;
    }
    let places = lock(&q.inner.log).dispatcher.len();
    assert!(
        places * log::SLOT_BYTES <= cfg.window_bytes + log::SLOT_BYTES + 200,
        "{places} places of {} bytes in a window of {}",
        log::SLOT_BYTES,
        cfg.window_bytes
    );
    assert!(finished > 10 && finished < 1999, "{finished} went");
    q.done(stuck);
    let rest = drain(&q, &l).await;
    assert_eq!(rest.len() + finished, 1999, "the rest flows");
    assert_eq!(q.used_bytes(), 0);
}
