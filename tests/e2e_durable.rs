//! Durable delivery end to end with real Prometheus 2.42 peers (Debian package `prometheus`):
//!
//! ```text
//! Prometheus "sender" --RW 1.0--> promlink (binary, --queue-dir) --RW 1.0--> Prometheus "receiver"
//!   scrapes itself every 1s                                      --web.enable-remote-write-receiver
//! ```
//!
//! While the data flows, the receiver is stopped for ~10 s (by pid, its data directory kept);
//! in the middle of that outage promlink is killed with SIGKILL and restarted on the same port
//! and queue directory; then the receiver comes back on the same data directory and port and
//! promlink catches up. Afterwards every raw sample of `{job="sender"}` the sender stored up to
//! a cut-off must be in the receiver, same timestamp and value: no gap across the outage or the
//! crash. The receiver scrapes nothing, so everything in its TSDB came through promlink.
//!
//! Plain HTTP between promlink and the receiver (`--allow-plain-http`); `e2e_prometheus` covers
//! TLS. Needs `/usr/bin/prometheus` (or `PROMLINK_E2E_PROMETHEUS=/path/to/prometheus`); without
//! it the test is skipped loudly, except under `CI=true`, where it fails.

mod e2e;
#[path = "durable/mod.rs"]
mod rig;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::prom::{
    describe_diff, prometheus_bin, prometheus_cmd, start_sender, wait_for_result, Samples,
};
use e2e::{free_ports, get_text, now_ms, sum_of, wait_for, write, Proc};
use rig::Promlink;

/// The series compared between the two Prometheus servers.
const SELECTOR: &str = r#"{job="sender"}"#;
/// How long the receiver is down.
const OUTAGE: Duration = Duration::from_secs(10);
/// When, into the outage, promlink is killed.
const KILL_AFTER: Duration = Duration::from_secs(4);

fn receiver_cmd(bin: &Path, d: &Path, port: u16) -> Command {
    let mut cmd = prometheus_cmd(bin, &d.join("receiver.yml"), &d.join("receiver-data"), port);
    cmd.arg("--web.enable-remote-write-receiver");
    cmd
}

/// Every raw sample of [`SELECTOR`] in the 10 minutes up to `at_ms`, as stored.
async fn raw_samples(http: &reqwest::Client, base: &str, at_ms: i64) -> Samples {
    e2e::prom::raw_samples(http, base, SELECTOR, "10m", at_ms).await
}

/// The largest distance between consecutive timestamps, ms.
fn largest_gap(samples: &[(i64, String)]) -> i64 {
    samples
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_outage_and_promlink_kill_leave_no_gap() {
    let Some(prometheus) = prometheus_bin("e2e_durable", "the durable end-to-end test") else {
        return;
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ports = free_ports(3);
    let (receiver_port, promlink_port, sender_port) = (ports[0], ports[1], ports[2]);
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // Receiver: scrapes nothing, so everything in its TSDB came through promlink.
    write(&d.join("receiver.yml"), "scrape_configs: []\n");
    let receiver_base = format!("http://127.0.0.1:{receiver_port}");
    let receiver_ready = format!("{receiver_base}/-/ready");
    let mut receiver = Proc::spawn(
        "receiver prometheus",
        receiver_cmd(&prometheus, d, receiver_port),
        &d.join("receiver-1.log"),
    );
    wait_for(
        "the receiver to be ready",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || get_text(&http, &receiver_ready),
    )
    .await;

    // promlink, the real binary, with the disk queue.
    let queue_dir = d.join("queue");
    let args: Vec<String> = [
        "--ingestion-url",
        &format!("{receiver_base}/api/v1/write"),
        "--allow-plain-http",
        "--identity",
        "none",
        "--queue-dir",
        queue_dir.to_str().unwrap(),
        "--fsync",
        "always",
        "--flush-interval",
        "500ms",
        "--retry-min-backoff",
        "100ms",
        "--retry-max-backoff",
        "1s",
        "--shutdown-grace",
        "5s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let promlink_log = d.join("promlink.log");
    let mut promlink = Promlink::spawn(&args, promlink_port, &promlink_log);
    promlink.wait_healthy(Duration::from_secs(20)).await;

    // Sender: scrapes itself every second and remote-writes to promlink.
    let (mut sender, sender_base) = start_sender(
        &prometheus,
        d,
        sender_port,
        &format!(
            r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: sender
    static_configs: [{{targets: ["127.0.0.1:{sender_port}"]}}]
remote_write:
  - url: http://127.0.0.1:{promlink_port}/api/v1/write
    name: promlink
    queue_config:
      batch_send_deadline: 1s
      min_backoff: 100ms
      max_backoff: 1s
"#
        ),
        &http,
    )
    .await;

    // Flowing: the sender's `up` has reached the receiver through promlink.
    let up_query = format!(r#"{receiver_base}/api/v1/query?query=up{SELECTOR}"#);
    wait_for_result(
        &http,
        "the sender's first samples at the receiver",
        Duration::from_secs(20),
        &up_query,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The outage: the receiver stops; its data directory stays.
    let down_ms = now_ms();
    let down_at = Instant::now();
    let (status, in_time) = receiver.terminate(Duration::from_secs(15));
    assert!(
        in_time,
        "the receiver did not stop on SIGTERM ({status}); log tail:\n{}",
        receiver.log_tail(20)
    );

    // In the middle of it, promlink dies with SIGKILL and comes back on the same queue.
    tokio::time::sleep(KILL_AFTER).await;
    let queued_at_kill = promlink.metric("promlink_queue_records").await;
    promlink.kill9();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut promlink = Promlink::spawn(&args, promlink_port, &promlink_log);
    promlink.wait_healthy(Duration::from_secs(20)).await;
    promlink.wait_queue_metrics(Duration::from_secs(5)).await;
    let replayed = promlink
        .metric("promlink_queue_replayed_chunks_total")
        .await;

    // The receiver comes back on the same data directory and port.
    tokio::time::sleep(OUTAGE.saturating_sub(down_at.elapsed())).await;
    let up_ms = now_ms();
    let mut receiver = Proc::spawn(
        "receiver prometheus (restarted)",
        receiver_cmd(&prometheus, d, receiver_port),
        &d.join("receiver-2.log"),
    );
    wait_for(
        "the restarted receiver to be ready",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || get_text(&http, &receiver_ready),
    )
    .await;

    // Catching up: promlink's backlog delivered (new data keeps arriving, so the queue is
    // rarely empty; the age of its oldest entry says whether the backlog is gone).
    promlink
        .wait_caught_up(Duration::from_secs(3), Duration::from_secs(30))
        .await;
    let caught_up_after = down_at.elapsed().saturating_sub(OUTAGE);
    tokio::time::sleep(Duration::from_secs(1)).await;
    receiver.assert_running();
    sender.assert_running();
    promlink.assert_running();

    // The reference: what the sender stored up to a cut-off 2 s ago (every scrape with an
    // earlier timestamp has been appended by now: scrape_timeout is 1 s).
    let cut_ms = now_ms() - 2000;
    let sent = raw_samples(&http, &sender_base, cut_ms).await;
    // Lets the sender's WAL watcher pick up everything appended before the query above.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sender_metrics = get_text(&http, &format!("{sender_base}/metrics"))
        .await
        .expect("sender /metrics");
    let (status, in_time) = sender.terminate(Duration::from_secs(20));
    assert!(
        in_time && status.success(),
        "the sender did not stop cleanly on SIGTERM ({status}); log tail:\n{}",
        sender.log_tail(30)
    );
    promlink.wait_drained(Duration::from_secs(20)).await;
    let promlink_metrics = promlink.metrics().await;
    let arrived = raw_samples(&http, &receiver_base, cut_ms).await;
    let receiver_metrics = get_text(&http, &format!("{receiver_base}/metrics"))
        .await
        .expect("receiver /metrics");

    // The window of the outage, as seen on both sides for the sender's `up`.
    let up_key = format!(r#"up{{instance="127.0.0.1:{sender_port}",job="sender"}}"#);
    let in_outage = |s: &Samples| -> Vec<(i64, String)> {
        s.get(&up_key)
            .map(|v| {
                v.iter()
                    .filter(|(t, _)| (down_ms..=up_ms).contains(t))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    };
    let (sent_up, arrived_up) = (in_outage(&sent), in_outage(&arrived));
    let sent_samples: usize = sent.values().map(Vec::len).sum();
    let arrived_samples: usize = arrived.values().map(Vec::len).sum();
    let full_up = |s: &Samples| s.get(&up_key).cloned().unwrap_or_default();
    println!(
        "e2e_durable: receiver down {:.1}s, promlink SIGKILLed {KILL_AFTER:?} into it with \
         {queued_at_kill} queue records, restart replayed {replayed} entries, caught up \
         {caught_up_after:?} after the receiver's restart; {} series, \
         {sent_samples} samples at the sender vs {arrived_samples} at the receiver up to the \
         cut-off; up{{job=sender}} in the outage window: {} sent, {} arrived; largest gap of \
         up{{job=sender}}: sender {} ms, receiver {} ms; receiver out-of-order {}, \
         promlink forwarded {}; took {:.1}s",
        (up_ms - down_ms) as f64 / 1000.0,
        sent.len(),
        sent_up.len(),
        arrived_up.len(),
        largest_gap(&full_up(&sent)),
        largest_gap(&full_up(&arrived)),
        sum_of(
            &receiver_metrics,
            "prometheus_tsdb_out_of_order_samples_total"
        )
        .unwrap_or(0.0),
        sum_of(&promlink_metrics, "promlink_samples_forwarded_total").unwrap_or(0.0),
        started.elapsed().as_secs_f64()
    );

    // --- the sender: every sample went to promlink in the end, none given up ---
    for name in [
        "prometheus_remote_storage_samples_failed_total",
        "prometheus_remote_storage_samples_dropped_total",
    ] {
        assert_eq!(
            sum_of(&sender_metrics, name).unwrap_or(0.0),
            0.0,
            "sender {name} should be 0; sender log tail:\n{}",
            sender.log_tail(30)
        );
    }
    // --- promlink: the kill left data queued, the restart replayed it, nothing dropped ---
    assert!(
        replayed > 0.0,
        "promlink was killed while the receiver was down, yet the restart replayed nothing; \
         log:\n{}",
        promlink.log_tail(30)
    );
    assert_eq!(
        sum_of(&promlink_metrics, "promlink_samples_dropped_total").unwrap_or(0.0),
        0.0,
        "promlink dropped samples after the restart:\n{}",
        promlink.log_tail(30)
    );
    // --- the data: no gap ---
    assert!(
        sent_up.len() as f64 >= (up_ms - down_ms) as f64 / 1000.0 * 0.8,
        "the sender itself scraped too rarely during the outage: {sent_up:?}"
    );
    assert_eq!(
        arrived_up, sent_up,
        "up{{job=\"sender\"}} during the outage differs between receiver and sender"
    );
    assert!(
        arrived == sent,
        "the receiver's samples up to the cut-off differ from the sender's: {}promlink log \
         tail:\n{}",
        describe_diff(&sent, &arrived),
        promlink.log_tail(20)
    );

    let (status, in_time) = {
        let (status, _, in_time) = promlink.sigterm(Duration::from_secs(15));
        (status, in_time)
    };
    assert!(
        in_time && status.success(),
        "promlink did not stop cleanly on SIGTERM ({status})"
    );
    receiver.terminate(Duration::from_secs(10));
}
