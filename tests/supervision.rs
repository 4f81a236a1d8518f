//! A panic in one of promlink's tasks never becomes a silent stall (issue 14, part 5). Each
//! task's response, provoked by the test-only failpoints of `promlink::supervise`:
//!
//! - upstream worker: the worker goes on, its batch goes back to the queue (counted), and
//!   everything arrives once, in order (memory and disk queue);
//! - write handler: that request is answered 500 (counted), which senders retry; nothing is
//!   lost (what it had queued arrives too: a duplicate of the retry);
//! - disk queue reader (in process): the queue enters its failed state: `/ready` fails and
//!   `promlink_queue_failed` is 1;
//! - disk queue committer (the binary): the process exits with code 70, and the restarted
//!   process delivers everything it had acknowledged.
//!
//! Failpoints are process-wide: the in-process tests here hold [`SERIAL`] so that `cargo test`
//! (threads in one process) runs them one at a time; nextest runs each in its own process.

mod common;
mod e2e;
#[path = "durable/mod.rs"]
mod rig;

use std::time::Duration;

use common::{Rig, RigOptions};
use promlink::config::Settings;
use promlink::emulator::dce::Fault;
use promlink::supervise;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const V1: &str = "application/x-protobuf";

/// A body of `series` series named `name`, one sample each at `ts`.
fn body(name: &str, series: usize, ts: i64) -> Vec<u8> {
    common::one_sample_body(name, "supervision", 0..series, ts)
}

/// Timestamp of the `n`th request: recent, strictly increasing.
fn ts(n: usize) -> i64 {
    e2e::now_ms() - 60_000 + n as i64 * 1000
}

async fn worker_panic(queue_dir: Option<&std::path::Path>) {
    let _serial = SERIAL.lock().await;
    let rig = Rig::start(RigOptions {
        shards: 1,
        extra: Settings {
            queue_dir: queue_dir.map(|d| d.to_path_buf()),
            ..Settings::default()
        },
        ..RigOptions::default()
    })
    .await;
    // The second batch's worker panics as it starts sending it.
    supervise::arm(supervise::UPSTREAM_WORKER, 1, 1);
    for n in 0..5 {
        assert_eq!(rig.post(body("m", 100, ts(n)), V1).await.status(), 204);
        // One batch per request.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    rig.wait_for("every sample", Duration::from_secs(20), |s| {
        s.samples >= 500
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = rig.dce.stats();
    let panics = rig.metric("promlink_upstream_worker_panics_total").await;
    assert_eq!(panics, 1.0, "the panic is counted");
    assert_eq!(s.samples, 500, "each sample once: {s:?}");
    assert_eq!(s.out_of_order_samples, 0);
    assert_eq!(s.repeated_timestamp_samples, 0);
    assert_eq!(rig.metric("promlink_queue_bytes").await, 0.0);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_worker_gives_its_batch_back_memory_queue() {
    worker_panic(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_worker_gives_its_batch_back_disk_queue() {
    let dir = tempfile::tempdir().unwrap();
    worker_panic(Some(&dir.path().join("queue"))).await;
}

/// The handler panics after the request's data is queued: the request gets 500 (a sender
/// retries it), the panic is counted, the next request is served, and the data arrives
/// (twice, the retry's copy being the duplicate Azure keeps one of).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_write_handler_answers_500_and_keeps_the_data() {
    let _serial = SERIAL.lock().await;
    let rig = Rig::start(RigOptions::default()).await;
    supervise::arm(supervise::RECEIVE_HANDLER, 0, 1);
    let first = rig.post(body("m", 100, ts(0)), V1).await;
    assert_eq!(first.status(), 500);
    assert!(first.text().await.unwrap().contains("retry"));
    assert_eq!(rig.metric("promlink_receive_panics_total").await, 1.0);
    assert_eq!(
        rig.metric("promlink_receive_rejected_total{reason=\"panic\"}")
            .await,
        1.0
    );
    // The sender's retry, then a new request.
    assert_eq!(rig.post(body("m", 100, ts(0)), V1).await.status(), 204);
    assert_eq!(rig.post(body("m", 100, ts(1)), V1).await.status(), 204);
    rig.wait_for("every copy", Duration::from_secs(10), |s| s.samples >= 300)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = rig.dce.stats();
    assert_eq!(
        s.samples, 300,
        "the first copy, the retry's and the new request: {s:?}"
    );
    assert_eq!(s.distinct_series, 100, "{s:?}");
    rig.stop().await;
}

/// The disk queue's reader panics while it replays a backlog after a restart: the queue enters
/// its failed state (no silent stall): `/ready` fails with the reason, `promlink_queue_failed`
/// is 1, and writes are refused with 503. (The binary exits instead: see the committer test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_queue_reader_fails_the_queue_and_ready() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let queue_dir = dir.path().join("queue");
    let options = || RigOptions {
        extra: Settings {
            queue_dir: Some(queue_dir.clone()),
            ..Settings::default()
        },
        ..RigOptions::default()
    };
    let rig = Rig::start(options()).await;
    rig.dce.set_outage(Some(Fault::status(503)));
    for n in 0..3 {
        assert_eq!(rig.post(body("m", 100, ts(n)), V1).await.status(), 204);
    }
    rig.stop().await;

    supervise::arm(supervise::QUEUE_READER, 0, 1);
    let rig = Rig::start(options()).await;
    let http = reqwest::Client::new();
    let mut ready = None;
    for _ in 0..200 {
        let r = http.get(rig.url("/ready")).send().await.unwrap();
        if r.status() == 503 {
            ready = Some(r.text().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let ready = ready.expect("/ready never failed");
    assert!(ready.contains("reader stopped"), "{ready}");
    // The gauge is refreshed every second.
    let mut failed = 0.0;
    for _ in 0..40 {
        failed = rig.metric("promlink_queue_failed").await;
        if failed == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(failed, 1.0, "promlink_queue_failed");
    let refused = rig.post(body("m", 100, ts(9)), V1).await;
    assert_eq!(refused.status(), 503);
    rig.stop().await;
}

/// The disk queue's committer panics in the binary: promlink exits with code 70 instead of
/// stalling, and the restarted process delivers everything it had acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_committer_exits_70_and_the_restart_delivers_everything() {
    let dce = rig::plain_dce(1000).await;
    dce.set_outage(Some(Fault::status(503)));
    let dir = tempfile::tempdir().unwrap();
    let queue_dir = dir.path().join("queue");
    let log = dir.path().join("promlink.log");
    let args = rig::serve_args(dce.url(), &queue_dir, &rig::token_file(dir.path()));
    let port = e2e::free_port();
    // Five commit groups pass; the sixth panics.
    let mut promlink = rig::Promlink::spawn_with_env(
        &args,
        &[("PROMLINK_FAILPOINTS", "queue_committer@5")],
        port,
        &log,
    );
    promlink.wait_healthy(Duration::from_secs(20)).await;
    let http = reqwest::Client::new();
    let post = |n: usize| {
        http.post(promlink.write_url())
            .header("Content-Encoding", "snappy")
            .header("Content-Type", V1)
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(body("m", 100, ts(n)))
            .send()
    };
    for n in 0..5 {
        assert_eq!(post(n).await.unwrap().status(), 204, "request {n}");
    }
    let sixth = post(5).await;
    assert!(
        sixth.as_ref().map_or(true, |r| !r.status().is_success()),
        "the request whose commit panicked was acknowledged: {sixth:?}"
    );
    let status = promlink
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("promlink kept running after its committer panicked");
    assert_eq!(
        status.code(),
        Some(i32::from(supervise::EXIT_FATAL)),
        "{status}"
    );
    let log_text = promlink.log();
    assert!(
        log_text.contains("queue_committer") && log_text.contains("exiting with code 70"),
        "{}",
        promlink.log_tail(20)
    );

    dce.set_outage(None);
    let mut promlink = rig::Promlink::spawn(&args, port, &log);
    promlink.wait_healthy(Duration::from_secs(20)).await;
    rig::wait_until(
        "the five acknowledged requests",
        Duration::from_secs(20),
        || dce.stats().samples >= 500,
        || format!("{:?}", dce.stats()),
    )
    .await;
    promlink.wait_drained(Duration::from_secs(10)).await;
    let s = dce.stats();
    assert_eq!(s.samples, 500, "{s:?}");
    assert_eq!(s.out_of_order_samples, 0);
}
