//! Helpers for the durable-delivery tests (`tests/durable.rs`, `tests/e2e_durable.rs`): the
//! promlink binary as a child process that a test can SIGKILL or SIGTERM by pid and restart on
//! the same port and queue directory, its metrics and memory figures, a plain-HTTP DCE
//! emulator, a load that never gives up, and the checksum of the DISTINCT samples the emulator
//! accepted (so duplicates after a crash are told apart from loss).
//!
//! Needs the crate root to declare `mod e2e;` (free ports and the metrics text reader).
#![allow(dead_code)]

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use promlink::emulator::dce::{DceConfig, DceEmulator, DceHandle, DceTls};
use promlink::loadgen::checksum::{series_hash, Checksum};
use promlink::loadgen::{LoadgenConfig, Report};
use promlink::proto::v1::WriteRequest;
use tokio_util::sync::CancellationToken;

use crate::e2e::{last_lines, value_of};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_promlink");

/// `promlink serve` as a child process on `127.0.0.1:<port>`, stopped (SIGKILL, then reaped)
/// when dropped unless it already exited. Only ever signals its own pid, which cannot be reused
/// before it is reaped here.
pub struct Promlink {
    child: Child,
    /// The port it listens on (kept across restarts by the tests).
    pub port: u16,
    log: PathBuf,
    status: Option<ExitStatus>,
    http: reqwest::Client,
}

impl Promlink {
    /// Starts `promlink serve --listen 127.0.0.1:<port> <args>`, appending stdout and stderr to
    /// `log` (so one log shows every life of a restarted instance). The environment is cleared
    /// (but `PATH`) so no `PROMLINK_*` or sidecar variable of the test's environment leaks in.
    pub fn spawn(args: &[String], port: u16, log: &Path) -> Promlink {
        Self::spawn_with_env(args, &[], port, log)
    }

    /// [`Promlink::spawn`] with `env` set (after clearing the rest), e.g. the variables of
    /// Azure's sidecar.
    pub fn spawn_with_env(
        args: &[String],
        env: &[(&str, &str)],
        port: u16,
        log: &Path,
    ) -> Promlink {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        let err = out.try_clone().expect("clone log handle");
        let child = Command::new(BIN)
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {BIN}: {e}"));
        Promlink {
            child,
            port,
            log: log.to_path_buf(),
            status: None,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.base())
    }

    /// The whole log file (every life so far).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self, n: usize) -> String {
        last_lines(&self.log(), n)
    }

    /// Panics with the log tail if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            self.status = Some(status);
            panic!(
                "promlink exited early with {status}; log tail:\n{}",
                self.log_tail(40)
            );
        }
    }

    /// Waits until `/health` answers 200.
    pub async fn wait_healthy(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let url = format!("{}/health", self.base());
        loop {
            self.assert_running();
            if let Ok(r) = self.http.get(&url).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "promlink /health not 200 within {timeout:?}; log tail:\n{}",
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let resp = self
            .http
            .get(format!("{}/metrics", self.base()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /metrics: {e}; log tail:\n{}", self.log_tail(20)));
        resp.text().await.expect("/metrics body")
    }

    /// One exact series of `/metrics`, 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        value_of(&self.metrics().await, series).unwrap_or(0.0)
    }

    /// Waits until the queue metrics (refreshed once a second) have been published once, so
    /// `promlink_queue_*` values read afterwards are the queue's, not defaults.
    pub async fn wait_queue_metrics(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if value_of(&self.metrics().await, "promlink_queue_durable") == Some(1.0) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "promlink_queue_durable never became 1 (is --queue-dir honoured?); log tail:\n{}",
                self.log_tail(20)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the disk queue holds nothing (records and bytes 0 in two reads a second
    /// apart, the metrics' refresh period).
    pub async fn wait_drained(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut empty_reads = 0;
        loop {
            let text = self.metrics().await;
            let records = value_of(&text, "promlink_queue_records");
            let bytes = value_of(&text, "promlink_queue_bytes");
            if records == Some(0.0) && bytes == Some(0.0) {
                empty_reads += 1;
                if empty_reads >= 2 {
                    return;
                }
            } else {
                empty_reads = 0;
            }
            assert!(
                Instant::now() < deadline,
                "promlink's queue did not drain within {timeout:?}: records={records:?} \
                 bytes={bytes:?}; log tail:\n{}",
                self.log_tail(20)
            );
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
    }

    /// Waits until the oldest unacknowledged entry is younger than `max_age`: the backlog is
    /// delivered while new data keeps flowing (so the queue is rarely empty).
    pub async fn wait_caught_up(&self, max_age: Duration, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.metrics().await;
            let age = value_of(&text, "promlink_queue_oldest_age_seconds");
            if age.is_some_and(|a| a < max_age.as_secs_f64()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "promlink did not catch up within {timeout:?}: oldest entry {age:?}s old, \
                 records={:?}; log tail:\n{}",
                value_of(&text, "promlink_queue_records"),
                self.log_tail(20)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits up to `timeout` for the process to exit by itself; `None` if it still runs.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.status = Some(status);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGKILL (`kill -KILL <pid>`), then reaps the process.
    pub fn kill9(&mut self) -> ExitStatus {
        assert!(self.status.is_none(), "promlink already exited");
        let sent = Command::new("kill")
            .args(["-KILL", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -KILL {} failed", self.pid());
        let status = self.child.wait().expect("wait");
        self.status = Some(status);
        status
    }

    /// SIGTERM (`kill -TERM <pid>`) and waits up to `timeout` for the exit (SIGKILL after
    /// that). Returns the status, how long the exit took, and whether it came in time.
    pub fn sigterm(&mut self, timeout: Duration) -> (ExitStatus, Duration, bool) {
        assert!(self.status.is_none(), "promlink already exited");
        let started = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {} failed", self.pid());
        while started.elapsed() < timeout {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.status = Some(status);
                return (status, started.elapsed(), true);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait");
        self.status = Some(status);
        (status, started.elapsed(), false)
    }

    /// Resident memory now and its peak so far (`VmRSS`, `VmHWM` of /proc/<pid>/status), KiB.
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<pid>/status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{name} missing from /proc/<pid>/status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for Promlink {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The arguments every durable test passes: the upstream over plain HTTP with a bearer token
/// from a file (the emulator checks none), the disk queue with `--fsync always`.
pub fn serve_args(upstream: &str, queue_dir: &Path, token_file: &Path) -> Vec<String> {
    [
        "--ingestion-url",
        upstream,
        "--allow-plain-http",
        "--identity",
        "token-file",
        "--token-file",
        token_file.to_str().unwrap(),
        "--queue-dir",
        queue_dir.to_str().unwrap(),
        "--fsync",
        "always",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Appends `--flag value` pairs to `args`.
pub fn with(mut args: Vec<String>, more: &[(&str, &str)]) -> Vec<String> {
    for (k, v) in more {
        args.push((*k).to_string());
        args.push((*v).to_string());
    }
    args
}

/// A DCE emulator on plain HTTP without token checks, keeping up to `keep_accepted` accepted
/// requests for [`arrived`].
pub async fn plain_dce(keep_accepted: usize) -> DceHandle {
    DceEmulator::start(DceConfig {
        tls: DceTls::Plain,
        keep_accepted,
        ..DceConfig::default()
    })
    .await
    .unwrap()
}

/// A token file for `--identity token-file`.
pub fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("token");
    std::fs::write(&path, "opaque-durable-test-token\n").unwrap();
    path
}

/// Load that is acknowledged eventually whatever happens in between: every request is retried
/// (5xx, 429, connection refused) every few hundred milliseconds until the deadline.
pub fn persistent_load(url: String, series: usize, rounds: usize, start_ms: i64) -> LoadgenConfig {
    LoadgenConfig {
        url,
        series,
        rounds,
        shards: 4,
        samples_per_request: 250,
        start_ms: Some(start_ms),
        interval_ms: 1000,
        max_attempts: 100_000,
        min_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(300),
        request_timeout: Duration::from_secs(5),
        deadline: Duration::from_secs(90),
        ..LoadgenConfig::default()
    }
}

/// Runs `cfg` in slices of one round every `every` until `stop` fires (then finishes the
/// slice in progress), timestamps one `interval_ms` apart and increasing across slices, so the
/// per-series order holds end to end. Returns the merged report and the number of slices.
pub fn spawn_paced_load(
    cfg: LoadgenConfig,
    every: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<(Report, u64)> {
    tokio::spawn(async move {
        let start = cfg.start_ms.expect("paced load needs start_ms");
        let mut total = Report::default();
        let mut slice = 0u64;
        let started = Instant::now();
        while !stop.is_cancelled() {
            let next = tokio::time::Instant::now() + every;
            let one = LoadgenConfig {
                rounds: 1,
                start_ms: Some(start + slice as i64 * cfg.interval_ms),
                ..cfg.clone()
            };
            // Its own token: stopping the pace must not cut a slice short.
            let r = promlink::loadgen::run(one, CancellationToken::new())
                .await
                .expect("loadgen config");
            total.merge(r);
            slice += 1;
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                () = stop.cancelled() => {}
            }
        }
        total.elapsed = started.elapsed();
        (total, slice)
    })
}

/// Panics unless the load was acknowledged in full.
pub fn assert_all_acked(report: &Report) {
    assert!(
        !report.incomplete && report.requests_failed == 0 && report.samples_acked == report.samples,
        "the load was not acknowledged in full: {report:#?}"
    );
    assert_eq!(report.checksum_acked, report.checksum_sent);
}

/// What the emulator kept: every accepted float sample counted, and the checksum of the
/// distinct (series, timestamp, value bits) among them.
#[derive(Debug)]
pub struct Arrived {
    /// Samples accepted, duplicates included.
    pub total: u64,
    /// Checksum of the distinct samples.
    pub distinct: Checksum,
}

impl Arrived {
    /// Samples accepted more than once.
    pub fn duplicates(&self) -> u64 {
        self.total - self.distinct.samples
    }
}

/// Reduces accepted requests to [`Arrived`].
pub fn arrived(accepted: &[WriteRequest]) -> Arrived {
    let mut seen: HashSet<(u64, i64, u64)> = HashSet::new();
    let mut total = 0;
    let mut distinct = Checksum::new();
    for ts in accepted.iter().flat_map(|r| &r.timeseries) {
        let h = series_hash(&ts.labels);
        for s in &ts.samples {
            total += 1;
            if seen.insert((h, s.timestamp, s.value.to_bits())) {
                distinct.add(h, s.timestamp, s.value);
            }
        }
    }
    Arrived { total, distinct }
}

/// Polls `cond` every 50 ms until it holds; panics with `what` and `detail()` after `timeout`.
pub async fn wait_until(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
    detail: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}: {}",
            detail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The samples of a loadgen run with `cfg` (series `i`, round `r`) that are not among
/// `accepted`, for failure messages: the loadgen's samples are a function of (i, r).
pub fn missing(cfg: &LoadgenConfig, accepted: &[WriteRequest]) -> Vec<(usize, usize)> {
    let seen: HashSet<(u64, i64, u64)> = accepted
        .iter()
        .flat_map(|r| &r.timeseries)
        .flat_map(|ts| {
            let h = series_hash(&ts.labels);
            ts.samples
                .iter()
                .map(move |s| (h, s.timestamp, s.value.to_bits()))
        })
        .collect();
    let start = cfg.start_ms.expect("missing() needs start_ms");
    let mut out = Vec::new();
    for i in 0..cfg.series {
        let h = series_hash(&promlink::loadgen::series_labels(i));
        for r in 0..cfg.rounds {
            let ts = start + r as i64 * cfg.interval_ms;
            let v = (i as f64) * 10.0 + r as f64 * 1.5;
            if !seen.contains(&(h, ts, v.to_bits())) {
                out.push((i, r));
            }
        }
    }
    out
}

/// Waits until the emulator's counters stay unchanged for `quiet` (or panics after `timeout`).
pub async fn wait_settled(dce: &DceHandle, quiet: Duration, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut last = dce.stats();
    let mut since = Instant::now();
    while since.elapsed() < quiet {
        assert!(
            Instant::now() < deadline,
            "the upstream kept receiving for {timeout:?}: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = dce.stats();
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
}
