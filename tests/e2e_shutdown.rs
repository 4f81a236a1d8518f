//! The Kubernetes pod shutdown with real peers (issue 12): Kubernetes sends SIGTERM to every
//! container of a pod at the same moment, so in the AKS sidecar Prometheus and promlink stop
//! together, and Prometheus flushes the tail of its remote-write queues *after* SIGTERM.
//!
//! ```text
//! node_exporter <--scrape 1s-- Prometheus "sender" --RW 1.0--> Prometheus "reference"
//!   (and the sender itself)                        \--RW 1.0--> promlink --RW 1.0--> Prometheus "via"
//! ```
//!
//! Both receivers scrape nothing: the reference holds what the sender delivered directly, "via"
//! what came through promlink. After ~12 s of traffic the sender and promlink get SIGTERM at
//! the same instant; once both have exited, every raw sample the reference holds must be in
//! "via" too, the shutdown tail included. Run with the memory queue and with the disk queue.
//! Before the quiet period existed, promlink closed its listener at SIGTERM and the tail met
//! `connection refused` (measured: 7,168 samples at the reference, 7,000 through promlink).
//!
//! Needs the Debian packages `prometheus` and `prometheus-node-exporter` (scripts/test.sh
//! installs them); without them the test is skipped loudly, except under `CI=true`, where it
//! fails.

mod e2e;

use std::process::Command;
use std::time::{Duration, Instant};

use e2e::prom::{
    away_from_scrapes, describe_diff, node_exporter_bin, prometheus_bin, raw_samples,
    spawn_node_exporter, start_receiver, start_sender,
};
use e2e::{free_ports, now_ms, start_promlink, Proc};

const BIN: &str = env!("CARGO_BIN_EXE_promlink");
/// How long the sender scrapes and writes before the pod "stops".
const TRAFFIC: Duration = Duration::from_secs(12);

/// SIGTERM to both pids, back to back, as the kubelet does to a pod's containers.
fn sigterm_both(a: &Proc, b: &Proc) {
    for pid in [a.pid(), b.pid()] {
        let ok = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -TERM {pid}");
    }
}

async fn simultaneous_sigterm_loses_nothing(queue: &str) {
    let test = format!("e2e_shutdown ({queue} queue)");
    let Some(prometheus) = prometheus_bin(&test, "the simultaneous-SIGTERM test") else {
        return;
    };
    let Some(node_exporter) = node_exporter_bin(&test, "the simultaneous-SIGTERM test") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ports = free_ports(5);
    let (ref_port, via_port, promlink_port, sender_port, node_port) =
        (ports[0], ports[1], ports[2], ports[3], ports[4]);
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    let mut node = spawn_node_exporter(&node_exporter, d, node_port);
    let reference = start_receiver(&prometheus, d, "reference", ref_port, &http).await;
    let via = start_receiver(&prometheus, d, "via", via_port, &http).await;

    // promlink with its default shutdown settings (quiet period 5 s, grace 30 s).
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .args(["--listen", &format!("127.0.0.1:{promlink_port}")])
        .args([
            "--ingestion-url",
            &format!("http://127.0.0.1:{via_port}/api/v1/write"),
        ])
        .args(["--allow-plain-http", "--identity", "none"])
        .args(["--flush-interval", "500ms"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    if queue == "disk" {
        cmd.args(["--queue-dir", d.join("queue").to_str().unwrap()]);
    }
    let mut promlink = start_promlink(cmd, d, promlink_port, &http).await;

    let config = format!(
        r#"global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: node
    static_configs: [{{targets: ["127.0.0.1:{node_port}"]}}]
  - job_name: sender
    static_configs: [{{targets: ["127.0.0.1:{sender_port}"]}}]
remote_write:
  - url: http://127.0.0.1:{ref_port}/api/v1/write
    name: reference
  - url: http://127.0.0.1:{promlink_port}/api/v1/write
    name: promlink
"#
    );
    let (mut sender, sender_base) = start_sender(&prometheus, d, sender_port, &config, &http).await;
    tokio::time::sleep(TRAFFIC).await;
    node.assert_running();
    promlink.assert_running();
    sender.assert_running();
    away_from_scrapes(&http, &sender_base).await;

    let sigterm = Instant::now();
    sigterm_both(&sender, &promlink);
    let (sender_exit, sender_in_time) = sender.terminate(Duration::from_secs(40));
    let (promlink_exit, promlink_in_time) = promlink.terminate(Duration::from_secs(40));
    let took = sigterm.elapsed();
    assert!(
        sender_in_time && promlink_in_time && promlink_exit.success(),
        "sender {sender_exit} (in time: {sender_in_time}), promlink {promlink_exit} (in time: \
         {promlink_in_time}) after {took:?}; promlink log:\n{}",
        promlink.log_tail(30)
    );
    assert!(
        took < Duration::from_secs(30),
        "promlink must exit within shutdown_grace (30 s): took {took:?}"
    );
    let sender_log = sender.log();
    let refused = sender_log.matches("connection refused").count();

    let at = now_ms();
    let want = raw_samples(
        &http,
        &format!("http://127.0.0.1:{ref_port}"),
        r#"{__name__=~".+"}"#,
        "10m",
        at,
    )
    .await;
    let got = raw_samples(
        &http,
        &format!("http://127.0.0.1:{via_port}"),
        r#"{__name__=~".+"}"#,
        "10m",
        at,
    )
    .await;
    let want_samples: usize = want.values().map(Vec::len).sum();
    let got_samples: usize = got.values().map(Vec::len).sum();
    println!(
        "{queue} queue: reference {} series / {want_samples} samples, through promlink {} series / \
         {got_samples} samples; shutdown took {took:?}; `connection refused` in the sender's log: \
         {refused}",
        want.len(),
        got.len(),
    );
    assert!(
        want.keys().any(|k| k.contains("job=\"node\"")) && want_samples > 1000,
        "the reference received too little to mean anything: {want_samples} samples"
    );
    let missing: usize = want
        .iter()
        .map(|(k, w)| {
            w.iter()
                .filter(|s| !got.get(k).is_some_and(|g| g.contains(s)))
                .count()
        })
        .sum();
    assert_eq!(
        missing,
        0,
        "{missing} samples reached the reference but not promlink's upstream:\n{}\nsender log \
         tail:\n{}\npromlink log tail:\n{}",
        describe_diff(&want, &got),
        e2e::last_lines(&sender_log, 20),
        promlink.log_tail(20)
    );
    drop(reference);
    drop(via);
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_sigterm_memory_queue() {
    simultaneous_sigterm_loses_nothing("memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_sigterm_disk_queue() {
    simultaneous_sigterm_loses_nothing("disk").await;
}
