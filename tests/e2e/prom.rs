//! A real Prometheus server as a peer: the binary (Debian package `prometheus`), its command
//! line, and reading it back over its HTTP API (raw samples per series, canonically keyed, and
//! a readable difference between two such reads).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::{debian_peer, get_text, now_ms, wait_for, write, Proc};

/// Where Debian installs Prometheus.
pub const DEFAULT_PROMETHEUS: &str = "/usr/bin/prometheus";

/// The Prometheus binary (`PROMLINK_E2E_PROMETHEUS` or [`DEFAULT_PROMETHEUS`]), or `None`
/// after a loud notice naming `test` when it is missing outside CI (see [`debian_peer`]).
pub fn prometheus_bin(test: &str, what: &str) -> Option<PathBuf> {
    debian_peer(
        "PROMLINK_E2E_PROMETHEUS",
        DEFAULT_PROMETHEUS,
        "prometheus",
        "prometheus",
        test,
        what,
    )
}

/// Prometheus with `config`, its TSDB in `data`, listening on `127.0.0.1:<port>`.
pub fn prometheus_cmd(bin: &Path, config: &Path, data: &Path, port: u16) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=info");
    cmd
}

/// Starts the "sender" Prometheus on `127.0.0.1:<port>` with `config` (written to
/// `<d>/sender.yml`; TSDB in `<d>/sender-data`, log `<d>/sender.log`) and waits until it is
/// ready. Returns the process and its base URL.
pub async fn start_sender(
    bin: &Path,
    d: &Path,
    port: u16,
    config: &str,
    http: &reqwest::Client,
) -> (Proc, String) {
    write(&d.join("sender.yml"), config);
    let mut cmd = prometheus_cmd(bin, &d.join("sender.yml"), &d.join("sender-data"), port);
    // Without this, SIGTERM can hang about a minute when the remote end is slow (RIG.md).
    cmd.arg("--storage.remote.flush-deadline=5s");
    let sender = Proc::spawn("sender prometheus", cmd, &d.join("sender.log"));
    let sender_base = format!("http://127.0.0.1:{port}");
    let ready = format!("{sender_base}/-/ready");
    wait_for(
        "the sender to be ready",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || get_text(http, &ready),
    )
    .await;
    (sender, sender_base)
}

/// Polls the instant query `url` (a full `/api/v1/query?query=...` URL) every 200 ms until its
/// result is not empty; panics with `what` after `timeout`.
pub async fn wait_for_result(http: &reqwest::Client, what: &str, timeout: Duration, url: &str) {
    wait_for(what, timeout, Duration::from_millis(200), || async {
        let body = get_text(http, url).await?;
        let v: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        match v["data"]["result"].as_array() {
            Some(r) if !r.is_empty() => Ok(()),
            _ => Err(body),
        }
    })
    .await;
}

/// GETs a Prometheus API endpoint and returns its `data`.
pub async fn api(http: &reqwest::Client, base: &str, path: &str, params: &[(&str, &str)]) -> Value {
    let url = url::Url::parse_with_params(&format!("{base}{path}"), params).unwrap();
    let body = get_text(http, url.as_str())
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "success", "GET {url}: {body}");
    v["data"].clone()
}

/// A label set rendered canonically: `name{a="1",b="2"}`, labels sorted.
pub fn series_key(metric: &Value) -> String {
    let labels: BTreeMap<&str, &str> = metric
        .as_object()
        .expect("metric is an object")
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().expect("label value is a string")))
        .collect();
    let name = labels.get("__name__").copied().unwrap_or("");
    let rest: Vec<String> = labels
        .iter()
        .filter(|(k, _)| **k != "__name__")
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    format!("{name}{{{}}}", rest.join(","))
}

/// Raw samples per series: `(timestamp ms, value as Prometheus formats it)`.
pub type Samples = BTreeMap<String, Vec<(i64, String)>>;

/// Every raw sample of `selector` in the `range` (e.g. `1h`) up to `at_ms`, as stored (stale
/// markers are not returned by range selectors, on either side).
pub async fn raw_samples(
    http: &reqwest::Client,
    base: &str,
    selector: &str,
    range: &str,
    at_ms: i64,
) -> Samples {
    let at = format!("{}.{:03}", at_ms / 1000, at_ms % 1000);
    let query = format!("{selector}[{range}]");
    let data = api(
        http,
        base,
        "/api/v1/query",
        &[("query", &query), ("time", &at)],
    )
    .await;
    assert_eq!(data["resultType"], "matrix");
    data["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let values = s["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    let ts = (p[0].as_f64().unwrap() * 1000.0).round() as i64;
                    (ts, p[1].as_str().unwrap().to_string())
                })
                .collect();
            (series_key(&s["metric"]), values)
        })
        .collect()
}

/// Describes how `got` differs from `want`: series missing or extra (a few of each named),
/// and per differing series (at most 8) the timestamps missing from `got` (the gap) and the
/// samples it has in excess.
pub fn describe_diff(want: &Samples, got: &Samples) -> String {
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    let differ: Vec<_> = want
        .iter()
        .filter_map(|(k, w)| got.get(k).filter(|g| *g != w).map(|g| (k, w, g)))
        .collect();
    let mut out = format!(
        "{} series missing, {} extra, {} with different samples\n",
        missing.len(),
        extra.len(),
        differ.len()
    );
    for k in missing.iter().take(5) {
        out += &format!("  missing series: {k}\n");
    }
    for k in extra.iter().take(5) {
        out += &format!("  extra series: {k}\n");
    }
    for (k, w, g) in differ.iter().take(8) {
        let ws: BTreeSet<_> = w.iter().collect();
        let gs: BTreeSet<_> = g.iter().collect();
        let lost: Vec<_> = ws.difference(&gs).map(|(t, _)| *t).collect();
        let excess: Vec<_> = gs.difference(&ws).collect();
        out += &format!(
            "  {k}: {} samples missing at {:?}, {} unexpected {:?}\n",
            lost.len(),
            &lost[..lost.len().min(12)],
            excess.len(),
            &excess[..excess.len().min(4)]
        );
    }
    out
}

/// The node_exporter binary (Debian package `prometheus-node-exporter`, or
/// `PROMLINK_E2E_NODE_EXPORTER`), or `None` after a loud notice naming `test` (see
/// [`debian_peer`]).
pub fn node_exporter_bin(test: &str, what: &str) -> Option<PathBuf> {
    debian_peer(
        "PROMLINK_E2E_NODE_EXPORTER",
        "/usr/bin/prometheus-node-exporter",
        "prometheus-node-exporter",
        "prometheus-node-exporter",
        test,
        what,
    )
}

/// Starts node_exporter on `127.0.0.1:<port>`, its log in `d/node_exporter.log`.
pub fn spawn_node_exporter(bin: &Path, d: &Path, port: u16) -> Proc {
    let mut c = Command::new(bin);
    c.arg(format!("--web.listen-address=127.0.0.1:{port}"));
    Proc::spawn("node_exporter", c, &d.join("node_exporter.log"))
}

/// A Prometheus that only receives remote write, on `port`, its TSDB under `d/<name>-data`.
pub async fn start_receiver(
    bin: &Path,
    d: &Path,
    name: &str,
    port: u16,
    http: &reqwest::Client,
) -> Proc {
    let config = d.join(format!("{name}.yml"));
    write(&config, "scrape_configs: []\n");
    let mut cmd = prometheus_cmd(bin, &config, &d.join(format!("{name}-data")), port);
    cmd.arg("--web.enable-remote-write-receiver");
    let p = Proc::spawn(name, cmd, &d.join(format!("{name}.log")));
    let ready = format!("http://127.0.0.1:{port}/-/ready");
    wait_for(
        &format!("{name} to be ready"),
        Duration::from_secs(20),
        Duration::from_millis(100),
        || get_text(http, &ready),
    )
    .await;
    p
}

/// Waits for the instant of the second that is furthest from the sender's scrapes (both jobs
/// scrape every second, at a fixed offset each). Each of the sender's remote-write queues reads
/// the WAL on its own, every few milliseconds, and stops reading at SIGTERM: a scrape appended a
/// few milliseconds before SIGTERM can reach one queue and not the other (seen under load: the
/// last scrape, 10 ms before SIGTERM, at the reference and never sent to promlink). That race is
/// inside Prometheus; away from the scrapes, both queues hold the same samples at SIGTERM and
/// what they flush afterwards is the tail this test is about.
pub async fn away_from_scrapes(http: &reqwest::Client, sender_base: &str) {
    let data = api(
        http,
        sender_base,
        "/api/v1/query",
        &[("query", "timestamp(up)")],
    )
    .await;
    let mut phases: Vec<i64> = data["result"]
        .as_array()
        .expect("a vector")
        .iter()
        .map(|s| {
            let secs: f64 = s["value"][1].as_str().unwrap().parse().unwrap();
            ((secs * 1000.0).round() as i64).rem_euclid(1000)
        })
        .collect();
    assert!(!phases.is_empty(), "the sender has scraped: {data}");
    phases.sort_unstable();
    // The middle of the widest gap between two consecutive scrape offsets (on a 1 s circle).
    let (gap, after) = phases
        .iter()
        .zip(phases.iter().cycle().skip(1))
        .map(|(a, b)| {
            (
                (b - a).rem_euclid(1000).max(if a == b { 1000 } else { 0 }),
                *a,
            )
        })
        .max()
        .unwrap();
    let target = (after + gap / 2).rem_euclid(1000);
    let wait = (target - now_ms().rem_euclid(1000)).rem_euclid(1000);
    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
}
