//! End to end with real Prometheus 2.42 peers (Debian package `prometheus`):
//!
//! ```text
//! Prometheus "sender" --RW 1.0, http--> promlink (the binary) --RW 1.0, TLS--> Prometheus "receiver"
//!   scrapes itself and promlink every 1s                       --web.enable-remote-write-receiver
//! ```
//!
//! The receiver trusts nothing but what arrives through promlink (it scrapes nothing), so its
//! TSDB holds exactly what promlink delivered. After the sender has stopped and promlink's queue
//! has drained, the test reads both Prometheus servers back over their HTTP APIs and checks:
//! every raw sample the sender stored up to a cut-off time is in the receiver, bit for bit in
//! value and millisecond in time; every series the sender knew is in the receiver; the
//! receiver appended exactly as many samples as promlink says it forwarded and received; and no
//! one dropped, retried, refused or logged a warning.
//!
//! Needs `/usr/bin/prometheus` (or `PROMLINK_E2E_PROMETHEUS=/path/to/prometheus`). Without it the
//! test is skipped loudly, except under `CI=true`, where it fails: `scripts/test.sh` installs it.

mod e2e;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::prom::{
    api, describe_diff, prometheus_bin, prometheus_cmd, series_key, start_sender, wait_for_result,
    Samples,
};
use e2e::{free_ports, get_text, now_ms, sum_of, value_of, wait_for, write, Proc};
use promlink::emulator::tls::TestCa;
use serde_json::Value;

/// How long the sender scrapes and writes, counted from its first scrape (Prometheus 2.42 applies
/// scrape targets on a 5 s tick, so the first scrape comes up to ~5 s after it is ready).
const RUN_FOR: Duration = Duration::from_secs(13);
/// Jobs the sender scrapes; both are forwarded.
const JOBS: &str = r#"{job=~"sender|promlink"}"#;

/// Every raw sample of `JOBS` in the hour up to `at_ms`, as stored.
async fn raw_samples(http: &reqwest::Client, base: &str, at_ms: i64) -> Samples {
    e2e::prom::raw_samples(http, base, JOBS, "1h", at_ms).await
}

/// Every series of `JOBS` the server knows, over all time.
async fn series_set(http: &reqwest::Client, base: &str) -> BTreeSet<String> {
    api(http, base, "/api/v1/series", &[("match[]", JOBS)])
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(series_key)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_through_promlink_to_prometheus_over_tls() {
    let Some(prometheus) = prometheus_bin(
        "e2e_prometheus",
        "the end-to-end test against real Prometheus",
    ) else {
        return;
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ports = free_ports(3);
    let (receiver_port, promlink_port, sender_port) = (ports[0], ports[1], ports[2]);

    // TLS for the receiver: a fresh CA that promlink and this test trust, nothing else.
    let ca = TestCa::new("promlink e2e CA").unwrap();
    let leaf = ca.issue(&["127.0.0.1", "localhost"]).unwrap();
    write(&d.join("ca.pem"), ca.cert_pem());
    write(&d.join("receiver.crt"), &leaf.cert_pem);
    write(&d.join("receiver.key"), &leaf.key_pem);
    write(
        &d.join("web.yml"),
        &format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
            d.join("receiver.crt").display(),
            d.join("receiver.key").display()
        ),
    );
    let https = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.cert_pem().as_bytes()).unwrap()])
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // Receiver: scrapes nothing, so everything in its TSDB came through promlink.
    write(&d.join("receiver.yml"), "scrape_configs: []\n");
    let mut cmd = prometheus_cmd(
        &prometheus,
        &d.join("receiver.yml"),
        &d.join("receiver-data"),
        receiver_port,
    );
    cmd.arg(format!("--web.config.file={}", d.join("web.yml").display()))
        .arg("--web.enable-remote-write-receiver");
    let mut receiver = Proc::spawn("receiver prometheus", cmd, &d.join("receiver.log"));
    let receiver_base = format!("https://127.0.0.1:{receiver_port}");
    let ready = format!("{receiver_base}/-/ready");
    wait_for(
        "the receiver to be ready over TLS",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || get_text(&https, &ready),
    )
    .await;

    // promlink, the real binary, forwarding over TLS to the receiver.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_promlink"));
    cmd.arg("serve")
        .args(["--listen", &format!("127.0.0.1:{promlink_port}")])
        .args(["--ingestion-url", &format!("{receiver_base}/api/v1/write")])
        .args(["--identity", "none"])
        .args(["--ca-file", &d.join("ca.pem").display().to_string()])
        .args(["--flush-interval", "500ms"])
        .args(["--shutdown-grace", "10s"])
        .args(["--log-format", "json", "--log-level", "info"]);
    let mut promlink = Proc::spawn("promlink", cmd, &d.join("promlink.log"));
    let promlink_base = format!("http://127.0.0.1:{promlink_port}");
    let ready = format!("{promlink_base}/health");
    wait_for(
        "promlink /health",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || get_text(&http, &ready),
    )
    .await;

    // Sender: scrapes itself and promlink every second, remote-writes to promlink.
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
  - job_name: promlink
    static_configs: [{{targets: ["127.0.0.1:{promlink_port}"]}}]
remote_write:
  - url: {promlink_base}/api/v1/write
    name: promlink
    queue_config:
      batch_send_deadline: 1s
      min_backoff: 100ms
      max_backoff: 1s
    metadata_config:
      send_interval: 3s
"#
        ),
        &http,
    )
    .await;

    let first_scrape = format!(r#"{sender_base}/api/v1/query?query=up{{job="sender"}}"#);
    wait_for_result(
        &http,
        "the sender's first scrape",
        Duration::from_secs(15),
        &first_scrape,
    )
    .await;
    let run_until = Instant::now() + RUN_FOR;
    while Instant::now() < run_until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        receiver.assert_running();
        promlink.assert_running();
        sender.assert_running();
    }

    // The reference: what the sender stored up to a cut-off 2 s ago (every scrape with an
    // earlier timestamp has been appended by now: scrape_timeout is 1 s), and every series it
    // knows.
    let cut_ms = now_ms() - 2000;
    let sent = raw_samples(&http, &sender_base, cut_ms).await;
    let sent_series = series_set(&http, &sender_base).await;
    let sent_samples: usize = sent.values().map(Vec::len).sum();
    // Lets the sender's WAL watcher pick up everything appended before the queries above.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sender_metrics = get_text(&http, &format!("{sender_base}/metrics"))
        .await
        .expect("sender /metrics");

    let (status, in_time) = sender.terminate(Duration::from_secs(20));
    assert!(
        in_time && status.success(),
        "the sender did not stop cleanly on SIGTERM within 20s ({status}); log tail:\n{}",
        sender.log_tail(30)
    );

    // Drained: queue empty and the forwarded count unchanged across a poll a flush interval
    // apart.
    let drain_deadline = Instant::now() + Duration::from_secs(20);
    let mut last_forwarded = f64::NAN;
    let promlink_metrics = loop {
        let text = get_text(&http, &format!("{promlink_base}/metrics"))
            .await
            .expect("promlink /metrics");
        let queue = value_of(&text, "promlink_queue_bytes");
        let forwarded = value_of(&text, "promlink_samples_forwarded_total").unwrap_or(0.0);
        if queue == Some(0.0) && forwarded == last_forwarded {
            break text;
        }
        assert!(
            Instant::now() < drain_deadline,
            "promlink did not drain within 20s: queue_bytes={queue:?}, forwarded={forwarded}; \
             log tail:\n{}",
            promlink.log_tail(30)
        );
        last_forwarded = forwarded;
        tokio::time::sleep(Duration::from_millis(600)).await;
    };

    // --- the sender: everything it sent was accepted on the first try ---
    let sender_sum = |name: &str| sum_of(&sender_metrics, name).unwrap_or(0.0);
    assert!(
        sender_sum("prometheus_remote_storage_samples_total") > 0.0,
        "the sender sent nothing to promlink; sender log tail:\n{}",
        sender.log_tail(30)
    );
    for name in [
        "prometheus_remote_storage_samples_failed_total",
        "prometheus_remote_storage_samples_retried_total",
        "prometheus_remote_storage_samples_dropped_total",
        "prometheus_remote_storage_metadata_failed_total",
        "prometheus_remote_storage_metadata_retried_total",
    ] {
        assert_eq!(
            sender_sum(name),
            0.0,
            "sender {name} should be 0; sender log tail:\n{}",
            sender.log_tail(30)
        );
    }

    // --- promlink: received == forwarded, nothing dropped, refused or answered non-2xx ---
    let received = value_of(
        &promlink_metrics,
        r#"promlink_samples_received_total{protocol="v1"}"#,
    )
    .expect("promlink_samples_received_total{protocol=\"v1\"} missing");
    let forwarded = value_of(&promlink_metrics, "promlink_samples_forwarded_total").unwrap();
    assert!(received > 0.0, "promlink received no samples");
    assert_eq!(
        received, forwarded,
        "promlink forwarded a different number of samples than it received"
    );
    for name in [
        "promlink_samples_dropped_total",
        "promlink_batches_dropped_total",
        "promlink_receive_rejected_total",
    ] {
        assert_eq!(
            sum_of(&promlink_metrics, name).unwrap_or(0.0),
            0.0,
            "promlink {name} should be absent or 0:\n{}",
            e2e::series_of(&promlink_metrics, name)
                .iter()
                .map(|(s, v)| format!("  {s} {v}\n"))
                .collect::<String>()
        );
    }
    let upstream = e2e::series_of(&promlink_metrics, "promlink_upstream_requests_total");
    assert!(
        upstream
            .iter()
            .all(|(s, v)| s.contains(r#"class="2xx""#) || *v == 0.0),
        "promlink had non-2xx upstream answers: {upstream:?}"
    );
    assert!(
        value_of(&promlink_metrics, "promlink_metadata_forwarded_total").unwrap_or(0.0) > 0.0,
        "the sender's metadata requests were not forwarded"
    );

    // --- the receiver: appended exactly what promlink forwarded, refused nothing ---
    let receiver_metrics = get_text(&https, &format!("{receiver_base}/metrics"))
        .await
        .expect("receiver /metrics over TLS");
    let appended = sum_of(
        &receiver_metrics,
        "prometheus_tsdb_head_samples_appended_total",
    )
    .expect("receiver has no prometheus_tsdb_head_samples_appended_total");
    assert_eq!(
        appended, forwarded,
        "the receiver appended {appended} samples but promlink reports {forwarded} forwarded"
    );
    // Counter vectors: absent until the first rejection.
    for name in [
        "prometheus_tsdb_out_of_order_samples_total",
        "prometheus_tsdb_out_of_bound_samples_total",
        "prometheus_tsdb_too_old_samples_total",
    ] {
        assert_eq!(
            sum_of(&receiver_metrics, name).unwrap_or(0.0),
            0.0,
            "the receiver rejected samples: {name}"
        );
    }
    let writes = e2e::series_of(&receiver_metrics, "prometheus_http_requests_total");
    let writes: Vec<_> = writes
        .iter()
        .filter(|(s, _)| s.contains(r#"handler="/api/v1/write""#))
        .collect();
    assert!(
        writes
            .iter()
            .any(|(s, v)| s.contains(r#"code="204""#) && **v > 0.0),
        "the receiver shows no successful writes: {writes:?}"
    );
    assert!(
        writes
            .iter()
            .all(|(s, v)| s.contains(r#"code="204""#) || **v == 0.0),
        "the receiver answered writes with something other than 204: {writes:?}"
    );

    // --- the data: every raw sample up to the cut-off arrived intact ---
    assert!(
        sent.len() > 100 && sent_samples > 5 * sent.len(),
        "the reference is too small to prove anything: {} series, {sent_samples} samples",
        sent.len()
    );
    for job in ["sender", "promlink"] {
        let up = format!(
            r#"up{{instance="127.0.0.1:{}",job="{job}"}}"#,
            match job {
                "sender" => sender_port,
                _ => promlink_port,
            }
        );
        let ups = sent.get(&up).map(|v| v.as_slice()).unwrap_or_default();
        assert!(
            ups.len() >= 10 && ups.iter().all(|(_, v)| v == "1"),
            "the sender did not scrape job {job} successfully: {up} = {ups:?}"
        );
    }
    let arrived = raw_samples(&https, &receiver_base, cut_ms).await;
    assert!(
        arrived == sent,
        "the receiver's samples up to the cut-off differ from the sender's: {}",
        describe_diff(&sent, &arrived)
    );
    let arrived_series = series_set(&https, &receiver_base).await;
    let lost: Vec<_> = sent_series.difference(&arrived_series).collect();
    assert!(
        lost.is_empty(),
        "{} of the sender's {} series never reached the receiver, e.g. {:?}",
        lost.len(),
        sent_series.len(),
        &lost[..lost.len().min(5)]
    );

    // --- promlink stops cleanly and logged nothing worse than INFO ---
    let (status, in_time) = promlink.terminate(Duration::from_secs(15));
    assert!(
        in_time && status.success(),
        "promlink did not stop cleanly on SIGTERM ({status}); log tail:\n{}",
        promlink.log_tail(30)
    );
    let log = promlink.log();
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| {
            serde_json::from_str::<Value>(l)
                .map(|v| matches!(v["level"].as_str(), Some("WARN" | "ERROR")))
                .unwrap_or(true)
        })
        .collect();
    assert!(
        bad.is_empty(),
        "promlink logged warnings, errors or non-JSON lines:\n{}",
        bad.join("\n")
    );
    receiver.terminate(Duration::from_secs(10));
    eprintln!(
        "e2e_prometheus: {} series, {sent_samples} samples compared up to the cut-off; \
         promlink forwarded {forwarded} samples; took {:.1}s",
        sent.len(),
        started.elapsed().as_secs_f64()
    );
}
