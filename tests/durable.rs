//! Durable delivery through the real `promlink` binary with `--queue-dir` (issue 4, "Tests that
//! prove it"): `kill -9` under load, a long upstream outage (503, then 429 with Retry-After), a
//! full disk queue, and SIGTERM while the upstream is down.
//!
//! ```text
//! loadgen (in-process, retries until acked) --RW 1.0--> promlink (binary, disk queue)
//!     --RW 1.0, plain http--> DCE emulator (in-process, faults scripted by the test)
//! ```
//!
//! Loss and duplication are both measured with the loadgen's checksum over (series labels,
//! timestamp, value bits): the checksum of what the sender saw acknowledged is compared with
//! the emulator's (exactly, where no duplicate can occur) or with the checksum of the DISTINCT
//! samples the emulator accepted (after `kill -9`, where a bounded number of resends is allowed
//! and counted). Everything listens on 127.0.0.1 and every process is stopped by its pid.

mod e2e;
#[path = "durable/mod.rs"]
mod rig;

use std::time::{Duration, Instant};

use e2e::{free_port, now_ms, sum_of, value_of};
use promlink::emulator::dce::Fault;
use rig::{
    arrived, assert_all_acked, persistent_load, plain_dce, serve_args, spawn_paced_load,
    token_file, wait_until, with, Promlink,
};
use tokio_util::sync::CancellationToken;

/// promlink's upstream shards in these tests (its default).
const SHARDS: u64 = 4;
/// Loadgen shards: each has at most one request in flight.
const LOAD_SHARDS: u64 = 4;
/// Samples per loadgen request (see `rig::persistent_load`).
const LOAD_SAMPLES_PER_REQUEST: u64 = 250;
/// promlink's `--max-samples-per-request` in the kill test: the largest upstream batch.
const UPSTREAM_BATCH: u64 = 1000;

/// `kill -9` of promlink while a sender pushes, restart on the same port and queue directory:
/// every sample the sender saw acknowledged arrives upstream; resends are few and counted.
///
/// Just before the kill the upstream is put into a 503 outage, so the disk queue certainly
/// holds undelivered data at the kill (the restarted process must replay it), and no upstream
/// batch can be accepted in the instant of the kill.
///
/// Bound on duplicates (samples the emulator accepted twice):
/// - sender side: each loadgen shard has at most one request in flight; if the kill lands after
///   promlink committed it but before the 204 left, the sender resends it after the restart:
///   `LOAD_SHARDS x LOAD_SAMPLES_PER_REQUEST`. It is doubled as margin (a resend that itself
///   races the restart), which still keeps the bound well below what was delivered before the
///   kill, so a replay from the start of the queue could not pass;
/// - upstream side: batches the upstream accepted whose acknowledgement had not reached the
///   persisted read position when the process died; a worker acknowledges each batch before
///   taking the next, so at most one batch per shard: `SHARDS x UPSTREAM_BATCH`.
///
/// Every duplicate reaches the emulator with a timestamp not newer than the last one it
/// accepted for its series, so it counts as a repeated or out-of-order sample there; the test
/// checks that those counts add up to exactly the duplicates, i.e. no distinct sample arrived
/// out of order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_nothing_acknowledged() {
    let started = Instant::now();
    let dce = plain_dce(1_000_000).await;
    let dir = tempfile::tempdir().unwrap();
    let queue_dir = dir.path().join("queue");
    let log = dir.path().join("promlink.log");
    let args = with(
        serve_args(dce.url(), &queue_dir, &token_file(dir.path())),
        &[
            ("--flush-interval", "100ms"),
            ("--shards", &SHARDS.to_string()),
            ("--max-samples-per-request", &UPSTREAM_BATCH.to_string()),
            ("--retry-min-backoff", "50ms"),
            ("--retry-max-backoff", "500ms"),
        ],
    );
    let port = free_port();
    let mut promlink = Promlink::spawn(&args, port, &log);
    promlink.wait_healthy(Duration::from_secs(20)).await;

    // 3000 series x 20 rounds = 60000 samples in 240 requests.
    let cfg = persistent_load(promlink.write_url(), 3000, 20, now_ms() - 600_000);
    let total = (cfg.series * cfg.rounds) as u64;
    let load = tokio::spawn(promlink::loadgen::run(
        cfg.clone(),
        CancellationToken::new(),
    ));

    // Kill once twice the duplicate bound has been delivered: the bound is then far smaller
    // than what a replay from the start of the queue would resend. Not later: promlink
    // acknowledges faster than it delivers, and on a busy machine the sender could be done
    // before a larger share arrived upstream (the kill must land while it still sends).
    let bound = LOAD_SHARDS * LOAD_SAMPLES_PER_REQUEST * 2 + SHARDS * UPSTREAM_BATCH;
    assert!(2 * bound < total / 2, "the load is too small for the bound");
    wait_until(
        "twice the duplicate bound delivered",
        Duration::from_secs(30),
        || dce.stats().samples >= 2 * bound,
        || format!("{:?}", dce.stats()),
    )
    .await;
    dce.set_outage(Some(Fault::status(503)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let delivered_before_kill = dce.stats().samples;
    assert!(
        !load.is_finished(),
        "the load finished before the kill; make it larger"
    );
    let killed_at = Instant::now();
    let status = promlink.kill9();
    assert!(!status.success(), "SIGKILL: {status}");
    assert!(
        delivered_before_kill > bound,
        "too little delivered before the kill"
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut promlink = Promlink::spawn(&args, port, &log);
    promlink.wait_healthy(Duration::from_secs(20)).await;
    let restarted_after = killed_at.elapsed();
    promlink.wait_queue_metrics(Duration::from_secs(5)).await;
    let replayed = promlink
        .metric("promlink_queue_replayed_chunks_total")
        .await;
    dce.set_outage(None);

    let report = load.await.unwrap().unwrap();
    assert_all_acked(&report);
    assert!(
        report.transport_errors > 0,
        "the sender never noticed the kill: {report:#?}"
    );
    // Drained: everything was delivered or dropped, and the upstream saw nothing new for a
    // second.
    promlink.wait_drained(Duration::from_secs(30)).await;
    rig::wait_settled(&dce, Duration::from_secs(1), Duration::from_secs(20)).await;
    let dropped = e2e::series_of(&promlink.metrics().await, "promlink_samples_dropped_total");

    let stats = dce.stats();
    assert_eq!(stats.dropped_records, 0, "raise keep_accepted");
    let accepted = dce.accepted();
    let got = arrived(&accepted);
    assert_eq!(got.total, stats.samples);
    if got.distinct != report.checksum_acked {
        let missing = rig::missing(&cfg, &accepted);
        panic!(
            "the distinct samples upstream ({}) differ from what the sender saw acknowledged \
             ({}): {} samples missing, e.g. (series, round) {:?}; promlink after the restart \
             dropped {dropped:?}; upstream {stats:?}; promlink log (both lives, no retries):\n{}",
            got.distinct,
            report.checksum_acked,
            missing.len(),
            &missing[..missing.len().min(10)],
            promlink
                .log()
                .lines()
                .filter(|l| !l.contains("upstream asked to retry"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let dups = got.duplicates();
    println!(
        "kill -9: {} samples acked ({} attempts, {} transport errors, statuses {:?}); \
         {delivered_before_kill} delivered before the kill, restarted {restarted_after:?} after \
         it, {replayed} entries replayed; upstream accepted {} samples, {dups} duplicates \
         (bound {bound}), {} repeated-timestamp and {} out-of-order; took {:.1}s",
        report.samples_acked,
        report.attempts,
        report.transport_errors,
        report.statuses,
        stats.samples,
        stats.repeated_timestamp_samples,
        stats.out_of_order_samples,
        started.elapsed().as_secs_f64()
    );
    assert!(dups <= bound, "{dups} duplicates exceed the bound {bound}");
    assert_eq!(
        stats.repeated_timestamp_samples + stats.out_of_order_samples,
        dups,
        "a sample that is not a duplicate arrived out of order"
    );
    assert!(
        replayed > 0.0,
        "the upstream was down at the kill, yet the restart replayed nothing"
    );

    let (status, _, in_time) = promlink.sigterm(Duration::from_secs(15));
    assert!(in_time && status.success(), "SIGTERM: {status}");
    dce.shutdown().await;
}

/// The lower bound of the upstream retry delay after `attempt` failures: promlink waits
/// `d/2 + rand(0..=d/2)` with `d = min(min_backoff * 2^attempt, max_backoff)`
/// (`outbound::Backoff`).
fn min_delay(attempt: u32, min: Duration, max: Duration) -> Duration {
    min.saturating_mul(1u32 << attempt.min(20)).min(max) / 2
}

/// The most attempts one shard can make in `window` while every answer is a retryable
/// failure: one, plus each retry whose shortest delay still fits in the window.
fn max_attempts_in(window: Duration, min: Duration, max: Duration) -> u64 {
    let (mut attempts, mut elapsed, mut n) = (1, Duration::ZERO, 0);
    loop {
        elapsed += min_delay(n, min, max);
        if elapsed > window {
            return attempts;
        }
        attempts += 1;
        n += 1;
    }
}

/// The upstream answers 503 for a long while mid-load, then 429 with `Retry-After: 2`: nothing
/// acknowledged is lost, series keep their order, promlink does not retry in a hot loop, and
/// its memory stays bounded (the backlog is on disk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_outage_503_then_429_loses_nothing_and_stays_calm() {
    // The issue asks for 60 s of 503. 20 s keeps the whole suite within CI's time budget and
    // is still 10x retry_max_backoff: the backoff reaches its cap within the first ~2 s, so
    // the rest of the window exercises the capped retry rate the bound is about; a longer
    // window adds requests linearly at that same rate.
    const OUTAGE_503: Duration = Duration::from_secs(20);
    const OUTAGE_429: Duration = Duration::from_secs(6);
    const RETRY_AFTER_S: u64 = 2;
    let (min_backoff, max_backoff) = (Duration::from_millis(100), Duration::from_secs(2));
    let started = Instant::now();
    let dce = plain_dce(0).await;
    let dir = tempfile::tempdir().unwrap();
    let args = with(
        serve_args(
            dce.url(),
            &dir.path().join("queue"),
            &token_file(dir.path()),
        ),
        &[
            ("--flush-interval", "200ms"),
            ("--shards", &SHARDS.to_string()),
            ("--max-samples-per-request", "2000"),
            ("--retry-min-backoff", "100ms"),
            ("--retry-max-backoff", "2s"),
            // Far less than the backlog: the rest must wait on disk, not in memory.
            ("--queue-memory-bytes", "262144"),
        ],
    );
    let mut promlink = Promlink::spawn(&args, free_port(), &dir.path().join("promlink.log"));
    promlink.wait_healthy(Duration::from_secs(20)).await;

    // 3000 series every 250 ms: 12,000 samples/s, some 8 MiB of compressed queue by the end
    // of the 503.
    let stop = CancellationToken::new();
    let cfg = persistent_load(promlink.write_url(), 3000, 1, now_ms() - 600_000);
    let load = spawn_paced_load(cfg, Duration::from_millis(250), stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_before, _) = promlink.memory_kib();

    dce.set_outage(Some(Fault::status(503)));
    let faults_0 = dce.stats().faults;
    let mut peak_rss = 0;
    let outage_started = Instant::now();
    while outage_started.elapsed() < OUTAGE_503 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        promlink.assert_running();
        peak_rss = peak_rss.max(promlink.memory_kib().0);
    }
    let requests_503 = dce.stats().faults - faults_0;
    let queued = promlink.metrics().await;
    let queue_bytes = value_of(&queued, "promlink_queue_bytes").unwrap_or(0.0);

    dce.set_outage(Some(Fault::retry_after(429, RETRY_AFTER_S)));
    let faults_1 = dce.stats().faults;
    let throttle_started = Instant::now();
    while throttle_started.elapsed() < OUTAGE_429 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peak_rss = peak_rss.max(promlink.memory_kib().0);
    }
    let requests_429 = dce.stats().faults - faults_1;
    dce.set_outage(None);

    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let (report, slices) = load.await.unwrap();
    assert_all_acked(&report);
    wait_until(
        "the backlog delivered",
        Duration::from_secs(40),
        || dce.stats().samples >= report.samples_acked,
        || format!("{:?}", dce.stats()),
    )
    .await;
    promlink.wait_drained(Duration::from_secs(20)).await;
    let (rss_end, hwm) = promlink.memory_kib();
    let metrics = promlink.metrics().await;

    // A shard keeps retrying one batch for the whole outage, so its attempts follow one
    // backoff sequence: at most `max_attempts_in` during the 503 window; during the 429 window
    // each wait is at least Retry-After. One extra attempt per shard covers a window edge.
    let bound_503 = SHARDS * (max_attempts_in(OUTAGE_503, min_backoff, max_backoff) + 1);
    let bound_429 = SHARDS * (OUTAGE_429.as_secs() / RETRY_AFTER_S + 2);
    let stats = dce.stats();
    println!(
        "outage: {} samples in {slices} slices acked; upstream requests during {OUTAGE_503:?} \
         of 503: {requests_503} (bound {bound_503}, {:.2}/s; a hot loop makes hundreds per \
         second), during {OUTAGE_429:?} of 429 Retry-After {RETRY_AFTER_S}s: {requests_429} \
         (bound {bound_429}); queue {:.1} MiB at the end of the 503 window; promlink VmRSS \
         {:.1} MiB before, peak {:.1} MiB during, {:.1} MiB after, VmHWM {:.1} MiB; upstream \
         accepted {} samples, out of order {}, repeated {}; took {:.1}s",
        report.samples_acked,
        requests_503 as f64 / OUTAGE_503.as_secs_f64(),
        queue_bytes / 1048576.0,
        rss_before as f64 / 1024.0,
        peak_rss as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        hwm as f64 / 1024.0,
        stats.samples,
        stats.out_of_order_samples,
        stats.repeated_timestamp_samples,
        started.elapsed().as_secs_f64()
    );
    assert!(
        queue_bytes > 0.0,
        "nothing was queued during the outage: the test proves nothing"
    );
    assert!(
        (1..=bound_503).contains(&requests_503),
        "{requests_503} upstream requests during {OUTAGE_503:?} of 503 (bound {bound_503})"
    );
    assert!(
        (1..=bound_429).contains(&requests_429),
        "{requests_429} upstream requests during {OUTAGE_429:?} of 429 with Retry-After \
         {RETRY_AFTER_S}s (bound {bound_429})"
    );
    assert_eq!(
        stats.checksum,
        report.checksum_acked,
        "what arrived differs from what was acknowledged; log tail:\n{}",
        promlink.log_tail(30)
    );
    assert_eq!(stats.out_of_order_samples, 0, "per-series order broken");
    assert_eq!(stats.repeated_timestamp_samples, 0, "samples resent");
    assert!(
        hwm < 200 * 1024,
        "promlink's peak RSS {hwm} KiB exceeds 200 MiB"
    );
    // The backlog is on disk: a queue in RAM would have grown the RSS by about the queued
    // bytes (the compressed chunks themselves); only `--queue-memory-bytes` of it is held.
    let growth = peak_rss.saturating_sub(rss_before) as f64 * 1024.0;
    assert!(
        growth < queue_bytes / 2.0,
        "promlink's RSS grew by {growth} bytes while {queue_bytes} bytes were queued"
    );
    assert_eq!(
        sum_of(&metrics, "promlink_samples_dropped_total").unwrap_or(0.0),
        0.0,
        "promlink dropped samples"
    );
    let (status, _, in_time) = promlink.sigterm(Duration::from_secs(15));
    assert!(in_time && status.success(), "SIGTERM: {status}");
    dce.shutdown().await;
}

/// A small disk queue and a dead upstream: once the queue is full, writes get 503 with
/// `Retry-After`; after the upstream returns, everything that was acknowledged arrives, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_queue_pushes_back_and_loses_nothing() {
    let started = Instant::now();
    let dce = plain_dce(0).await;
    dce.set_outage(Some(Fault::status(503)));
    let dir = tempfile::tempdir().unwrap();
    let args = with(
        serve_args(
            dce.url(),
            &dir.path().join("queue"),
            &token_file(dir.path()),
        ),
        &[
            ("--flush-interval", "100ms"),
            // The queue holds compressed chunks: a few loadgen requests of 250 samples.
            ("--queue-max-bytes", "65536"),
            ("--retry-min-backoff", "50ms"),
            ("--retry-max-backoff", "500ms"),
        ],
    );
    let mut promlink = Promlink::spawn(&args, free_port(), &dir.path().join("promlink.log"));
    promlink.wait_healthy(Duration::from_secs(20)).await;

    // 1000 series x 10 rounds = 10000 samples, several times the budget.
    let cfg = persistent_load(promlink.write_url(), 1000, 10, now_ms() - 600_000);
    let load = tokio::spawn(promlink::loadgen::run(cfg, CancellationToken::new()));
    let full = r#"promlink_receive_rejected_total{reason="queue_full"}"#;
    let deadline = Instant::now() + Duration::from_secs(20);
    while promlink.metric(full).await == 0.0 {
        assert!(
            Instant::now() < deadline,
            "the queue never filled; log tail:\n{}",
            promlink.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // What a sender sees while full: 503 with Retry-After, and the data is not taken.
    let resp = reqwest::Client::new()
        .post(promlink.write_url())
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(
            std::fs::read(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/prom242_rw1_500samples_a.snappy"
            ))
            .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503, "a write to a full queue");
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(
        retry_after.is_some_and(|s| s > 0),
        "no usable Retry-After on the 503: {:?}",
        resp.headers()
    );
    let queue_bytes = promlink.metric("promlink_queue_bytes").await;
    assert!(
        queue_bytes <= 1048576.0,
        "queue_bytes {queue_bytes} over the budget"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(dce.stats().samples, 0, "the upstream is down");
    dce.set_outage(None);

    let report = load.await.unwrap().unwrap();
    assert_all_acked(&report);
    let refused = report.statuses.get(&503).copied().unwrap_or(0);
    assert!(refused > 0, "the sender never saw a 503: {report:#?}");
    // Every refusal was for a full queue (the loadgen's plus the one above), none for I/O.
    let metrics = promlink.metrics().await;
    assert_eq!(
        e2e::series_of(&metrics, "promlink_receive_rejected_total")
            .into_iter()
            .filter(|(_, v)| *v > 0.0)
            .collect::<Vec<_>>(),
        vec![(full.to_string(), (refused + 1) as f64)],
        "refusals by reason"
    );
    wait_until(
        "every acknowledged sample upstream",
        Duration::from_secs(30),
        || dce.stats().checksum == report.checksum_acked,
        || {
            format!(
                "{} vs acked {}",
                dce.stats().checksum,
                report.checksum_acked
            )
        },
    )
    .await;
    promlink.wait_drained(Duration::from_secs(10)).await;
    let stats = dce.stats();
    assert_eq!(stats.checksum, report.checksum_acked);
    assert_eq!(stats.out_of_order_samples, 0, "per-series order broken");
    println!(
        "queue full: {} samples acked after {refused} refusals with 503 (Retry-After \
         {retry_after:?}s, queue at {queue_bytes} of 1048576 bytes); upstream accepted {} \
         samples; took {:.1}s",
        report.samples_acked,
        stats.samples,
        started.elapsed().as_secs_f64()
    );
    let (status, _, in_time) = promlink.sigterm(Duration::from_secs(15));
    assert!(in_time && status.success(), "SIGTERM: {status}");
    dce.shutdown().await;
}

/// SIGTERM while the upstream is down: promlink exits within its grace period without
/// dropping anything (the data stays on disk), and the next start delivers it, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_upstream_down_keeps_data_for_the_next_start() {
    let started = Instant::now();
    let dce = plain_dce(0).await;
    dce.set_outage(Some(Fault::status(503)));
    let dir = tempfile::tempdir().unwrap();
    let args = with(
        serve_args(
            dce.url(),
            &dir.path().join("queue"),
            &token_file(dir.path()),
        ),
        &[
            ("--flush-interval", "100ms"),
            ("--retry-min-backoff", "50ms"),
            ("--retry-max-backoff", "500ms"),
            ("--shutdown-grace", "2s"),
            ("--log-format", "json"),
        ],
    );
    let port = free_port();
    let log = dir.path().join("promlink.log");
    let mut promlink = Promlink::spawn(&args, port, &log);
    promlink.wait_healthy(Duration::from_secs(20)).await;

    let cfg = persistent_load(promlink.write_url(), 500, 6, now_ms() - 600_000);
    let report = promlink::loadgen::run(cfg, CancellationToken::new())
        .await
        .unwrap();
    assert_all_acked(&report);
    // Let the shards take batches and start retrying them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dropped_before = promlink
        .metric(r#"promlink_samples_dropped_total{reason="shutdown"}"#)
        .await;
    assert_eq!(dropped_before, 0.0);
    let (status, took, in_time) = promlink.sigterm(Duration::from_secs(10));
    assert!(
        in_time && status.success(),
        "promlink did not exit 0 within 10s of SIGTERM ({status}); log tail:\n{}",
        promlink.log_tail(20)
    );
    assert_eq!(dce.stats().samples, 0, "the upstream was down");
    // `samples_dropped_total{reason="shutdown"}` cannot be scraped from a process that has
    // exited; the code that increments it logs this line in the same step.
    let first_life = promlink.log();
    assert!(
        !first_life.contains("it is lost"),
        "promlink dropped data at shutdown with a disk queue:\n{first_life}"
    );

    let mut promlink = Promlink::spawn(&args, port, &log);
    promlink.wait_healthy(Duration::from_secs(20)).await;
    promlink.wait_queue_metrics(Duration::from_secs(5)).await;
    let replayed = promlink
        .metric("promlink_queue_replayed_chunks_total")
        .await;
    let records = promlink.metric("promlink_queue_records").await;
    dce.set_outage(None);
    wait_until(
        "the data kept on disk delivered",
        Duration::from_secs(20),
        || dce.stats().checksum == report.checksum_acked,
        || {
            format!(
                "{} vs acked {}",
                dce.stats().checksum,
                report.checksum_acked
            )
        },
    )
    .await;
    promlink.wait_drained(Duration::from_secs(10)).await;
    let stats = dce.stats();
    assert_eq!(stats.checksum, report.checksum_acked, "loss or duplicates");
    assert_eq!(stats.out_of_order_samples, 0);
    assert!(replayed > 0.0, "nothing replayed after the restart");
    assert_eq!(
        promlink
            .metric(r#"promlink_samples_dropped_total{reason="shutdown"}"#)
            .await,
        0.0
    );
    println!(
        "sigterm: {} samples acked while the upstream was down; exit 0 after {took:?} \
         (grace 2s); restart replayed {replayed} entries ({records} records), upstream \
         accepted {} samples; took {:.1}s",
        report.samples_acked,
        stats.samples,
        started.elapsed().as_secs_f64()
    );
    let (status, _, in_time) = promlink.sigterm(Duration::from_secs(15));
    assert!(in_time && status.success(), "SIGTERM: {status}");
    dce.shutdown().await;
}

/// A sender resends a request promlink had already committed: what happens when `kill -9`
/// lands between the commit and the 204 (the first test), or when a sender's timeout fires
/// first. Both copies are queued, and when they share an upstream batch that batch repeats a
/// (series, timestamp); Azure answers such a request with 422 (the emulator too) and promlink
/// drops 422s. The duplicate may arrive twice or once, but the rest of the batch, acknowledged
/// to senders, must arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_request_costs_no_other_acknowledged_data() {
    use promlink::loadgen::{encode, series_labels, Checksum};
    use promlink::proto::v1::{Sample, TimeSeries, WriteRequest};

    let dce = plain_dce(1000).await;
    let dir = tempfile::tempdir().unwrap();
    let args = with(
        serve_args(
            dce.url(),
            &dir.path().join("queue"),
            &token_file(dir.path()),
        ),
        // Long enough for the three writes below to share each shard's batch.
        &[("--flush-interval", "1s")],
    );
    let mut promlink = Promlink::spawn(&args, free_port(), &dir.path().join("promlink.log"));
    promlink.wait_healthy(Duration::from_secs(20)).await;

    let t0 = now_ms() - 60_000;
    let request = |ts: i64| WriteRequest {
        timeseries: (0..100)
            .map(|i| TimeSeries {
                labels: series_labels(i),
                samples: vec![Sample {
                    value: i as f64,
                    timestamp: ts,
                }],
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let (x, y) = (request(t0), request(t0 + 1000));
    let mut acked = Checksum::new();
    let http = reqwest::Client::new();
    // x, its resend, then the next scrape y: each acknowledged.
    for (name, body) in [("x", &x), ("x again", &x), ("y", &y)] {
        let resp = http
            .post(promlink.write_url())
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(encode(body))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204, "{name}");
    }
    acked.add_request(&x);
    acked.add_request(&y);

    promlink.wait_drained(Duration::from_secs(20)).await;
    let stats = dce.stats();
    let got = arrived(&dce.accepted());
    let metrics = promlink.metrics().await;
    println!(
        "resend: upstream answers {:?} to {} requests; accepted {} samples, {} distinct of the \
         {} acknowledged; promlink dropped {:?}",
        stats.rejected,
        stats.requests,
        got.total,
        got.distinct.samples,
        acked.samples,
        e2e::series_of(&metrics, "promlink_samples_dropped_total")
    );
    assert_eq!(
        got.distinct, acked,
        "acknowledged samples were lost along with a resent duplicate; upstream {stats:?}"
    );
    let (status, _, in_time) = promlink.sigterm(Duration::from_secs(15));
    assert!(in_time && status.success(), "SIGTERM: {status}");
    dce.shutdown().await;
}

/// `promlink drain` of a queue directory stranded by a removed replica (issue 12): refused while
/// a live promlink holds it; once that replica is gone (`kill -9`: its lock dies with it), a
/// drain against a failing upstream gives up after `--timeout` with exit 1 and says what is
/// left (nothing lost, nothing sent), and a drain against a healthy upstream delivers every
/// acknowledged sample and exits 0; a second drain finds nothing and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_delivers_a_stranded_queue_directory() {
    let dce = plain_dce(100_000).await;
    dce.set_outage(Some(Fault::status(503)));
    let dir = tempfile::tempdir().unwrap();
    let queue_dir = dir.path().join("queue");
    let args = serve_args(dce.url(), &queue_dir, &token_file(dir.path()));
    let mut promlink = Promlink::spawn(
        &with(args.clone(), &[("--flush-interval", "100ms")]),
        free_port(),
        &dir.path().join("promlink.log"),
    );
    promlink.wait_healthy(Duration::from_secs(20)).await;
    let cfg = persistent_load(promlink.write_url(), 600, 4, now_ms() - 60_000);
    let report = promlink::loadgen::run(cfg, CancellationToken::new())
        .await
        .unwrap();
    assert_all_acked(&report);

    let drain = |timeout: &str| {
        let out = std::process::Command::new(rig::BIN)
            .arg("drain")
            .args(&args)
            .args(["--timeout", timeout, "--retry-max-backoff", "500ms"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, _, err) = drain("2s");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("in use by another promlink process"),
        "a live promlink's directory is refused: {err}"
    );

    // The replica is removed.
    promlink.kill9();
    let (code, out, err) = drain("2s");
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(out.contains("NOT drained"), "{out}\n{err}");
    assert_eq!(dce.stats().samples, 0, "the upstream refused everything");

    dce.set_outage(None);
    let (code, out, err) = drain("60s");
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        out.contains(&format!(
            "drained: {} samples delivered, 0 dropped",
            report.samples_acked
        )),
        "{out}"
    );
    let got = arrived(&dce.accepted());
    assert_eq!(
        got.distinct, report.checksum_acked,
        "every acknowledged sample arrived"
    );
    assert_eq!(got.duplicates(), 0);

    let (code, out, err) = drain("5s");
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("drained: 0 samples delivered"), "{out}");
    assert_eq!(dce.stats().samples, report.samples_acked);
    dce.shutdown().await;
}

/// A queue directory marked by a newer promlink is refused, by `serve` and `drain` alike, with
/// a message saying so; nothing in it is touched.
#[test]
fn a_queue_written_by_a_newer_promlink_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let queue_dir = dir.path().join("queue");
    std::fs::create_dir_all(queue_dir.join("log")).unwrap();
    std::fs::write(queue_dir.join("format"), "promlink-queue-format 3\n").unwrap();
    let segment = queue_dir.join("log").join(format!("{:020}.log", 0));
    std::fs::write(&segment, b"PLQ3 newer records").unwrap();
    let args = serve_args(
        "http://127.0.0.1:9/api/v1/write",
        &queue_dir,
        &token_file(dir.path()),
    );
    for cmd in ["serve", "drain"] {
        let out = std::process::Command::new(rig::BIN)
            .arg(cmd)
            .args(&args)
            .args(["--listen", "127.0.0.1:0"])
            .env_clear()
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {err}");
        assert!(
            err.contains("written by a newer promlink (queue format 3"),
            "{cmd}: {err}"
        );
        assert_eq!(
            std::fs::read(&segment).unwrap(),
            b"PLQ3 newer records",
            "{cmd} touched the newer queue"
        );
    }
}

/// The Azure sidecar drop-in (issue 12): from the sidecar's environment, promlink's memory
/// budgets fit the sidecar's documented 200 Mi limit. Worst case: the upstream refuses
/// everything (the queue fills to its budget) while 32 senders keep posting large requests
/// (each near 1 MiB compressed, 6 MiB decoded), so the body and decode budgets stay saturated
/// until the queue is full and a while after. Peak RSS (VmHWM) must stay under 200 MiB; the
/// figures are printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_budgets_hold_a_worst_case_burst_under_200_mi() {
    use promlink::loadgen::{encode, series_labels};
    use promlink::proto::v1::{Sample, TimeSeries, WriteRequest};

    const LIMIT_KIB: u64 = 200 * 1024;
    let dce = plain_dce(0).await;
    dce.set_outage(Some(Fault::status(503)));
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path());
    let args: Vec<String> = [
        "--allow-plain-http",
        "--identity",
        "token-file",
        "--token-file",
        token.to_str().unwrap(),
        // The memory queue's data is dropped at exit anyway (the upstream is down).
        "--shutdown-grace",
        "3s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut promlink = Promlink::spawn_with_env(
        &args,
        &[
            ("INGESTION_URL", dce.url()),
            ("CLUSTER", "aks-sidecar-test"),
        ],
        free_port(),
        &dir.path().join("promlink.log"),
    );
    promlink.wait_healthy(Duration::from_secs(20)).await;
    assert!(
        promlink
            .log()
            .contains("memory budgets sized for its 200 Mi limit"),
        "{}",
        promlink.log_tail(20)
    );
    assert_eq!(
        promlink.metric("promlink_queue_max_bytes").await,
        (32u64 << 20) as f64
    );

    // 16 distinct bodies of 20,000 series each.
    let t0 = now_ms() - 60_000;
    let bodies: Vec<bytes::Bytes> = (0..16)
        .map(|b| {
            let req = WriteRequest {
                timeseries: (0..20_000)
                    .map(|i| TimeSeries {
                        labels: series_labels(b * 20_000 + i),
                        samples: vec![Sample {
                            value: i as f64 * 1.25,
                            timestamp: t0 + b as i64,
                        }],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            bytes::Bytes::from(encode(&req))
        })
        .collect();
    let url = promlink.write_url();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // Until the queue refuses as full (bounded by a generous deadline: a debug build on a busy
    // machine decodes slowly), then 4 more attempts per sender with the queue full: the body
    // and decode budgets stay saturated the whole time.
    let full = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(180);
    let senders: Vec<_> = (0..32)
        .map(|s| {
            let (http, url, bodies, full) =
                (http.clone(), url.clone(), bodies.clone(), full.clone());
            tokio::spawn(async move {
                let (mut accepted, mut refused, mut after_full) = (0u64, 0u64, 0);
                let mut n = s;
                while after_full < 4 && Instant::now() < deadline {
                    if full.load(std::sync::atomic::Ordering::Relaxed) {
                        after_full += 1;
                    }
                    let r = http
                        .post(&url)
                        .header("Content-Encoding", "snappy")
                        .header("Content-Type", "application/x-protobuf")
                        .body(bodies[n % bodies.len()].clone())
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 204 => accepted += 1,
                        Ok(r) => {
                            refused += 1;
                            if r.text().await.unwrap_or_default().contains("queue is full") {
                                full.store(true, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                        Err(_) => refused += 1,
                    }
                    n += 1;
                }
                (accepted, refused)
            })
        })
        .collect();
    let (mut accepted, mut refused) = (0, 0);
    for s in senders {
        let (a, r) = s.await.unwrap();
        accepted += a;
        refused += r;
    }
    promlink.assert_running();
    let (rss, hwm) = promlink.memory_kib();
    let queue = promlink.metric("promlink_queue_bytes").await;
    println!(
        "sidecar burst: {accepted} requests accepted, {refused} refused (queue full or budgets \
         busy); queue {:.1} MiB of 32 MiB; VmRSS {:.1} MiB, VmHWM {:.1} MiB (limit 200 MiB); \
         body {} bytes compressed",
        queue / (1 << 20) as f64,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        bodies[0].len()
    );
    assert!(
        queue > (24u64 << 20) as f64,
        "the burst must fill the queue to mean anything: {queue} bytes"
    );
    assert!(refused > 0, "the budgets must have been saturated");
    assert!(
        hwm < LIMIT_KIB,
        "peak RSS {hwm} KiB is over the sidecar's 200 Mi limit"
    );
    let (status, _, _) = promlink.sigterm(Duration::from_secs(60));
    assert!(status.code().is_some(), "exited by itself: {status}");
    dce.shutdown().await;
}
