//! The Grafana dashboard (`deploy/grafana/promlink-dashboard.json`) and the alert rules
//! (`deploy/prometheus-rule.yaml`) against a real Prometheus 2.42 that scrapes a running
//! promlink (issue 16): every panel query and alert expression parses and evaluates through
//! Prometheus' HTTP API, names only metric families promlink exports from its start (or
//! Prometheus' own `up` and kubelet's volume metrics), and every panel returns data in normal
//! operation (but the kubelet panel: no kubelet here). promlink runs against the emulated
//! Azure (Private Link `require`, disk queue, canary read-back) with a sender writing every
//! 200 ms. Everything listens on 127.0.0.x; the test fails under CI=true when Prometheus is
//! missing, and stops every process it started.

mod common;
mod e2e;

use std::collections::BTreeSet;
use std::time::Duration;

use promlink::config::Settings;
use promlink::privatelink::Mode;
use serde_json::Value;

/// Families with one series per open label value and nothing to say otherwise: a queue
/// directory no route uses (`directory`) exists only once found, so there is no zero series.
const OPEN_LABEL_ONLY: [&str; 1] = ["promlink_queue_stranded_bytes"];

/// The metric families `/metrics` declares (`# TYPE`), with the sample names each exposes
/// (`_total` of counters, `_bucket`/`_sum`/`_count` of histograms).
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for s in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{s}"));
                }
            }
            _ => {
                names.insert(name.to_string());
            }
        }
    }
    names
}

/// The metric names a PromQL expression mentions (promlink's, kubelet's and `up`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let word = &expr[start..i];
            let before = expr[..start].trim_end();
            // A label matcher's name or value, a `by (...)` list or a quoted string is not a
            // metric: promlink's and kubelet's names have their prefix, `up` is Prometheus'.
            let in_string = expr[..start].matches('"').count() % 2 == 1;
            if !in_string
                && (word.starts_with("promlink_")
                    || word.starts_with("kubelet_")
                    || (word == "up" && !before.ends_with(',') && !before.ends_with('(')))
            {
                out.insert(word.to_string());
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Every query of the dashboard: (panel title, expression).
fn dashboard_queries() -> Vec<(String, String)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/promlink-dashboard.json"
    );
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                p["title"].as_str().unwrap().to_string(),
                t["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            // label_values(<selector>, label): its selector.
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map(|(sel, _)| sel.to_string())
                .unwrap_or_else(|| panic!("variable query {q}"));
            out.push((format!("variable {}", v["name"]), inner));
        }
    }
    out
}

/// Grafana's variables, as the dashboard's "All" selects them.
fn grafana(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$job", ".*")
        .replace("$instance", ".*")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_and_alert_query_evaluates_against_a_real_prometheus() {
    let Some(bin) = e2e::prom::prometheus_bin("dashboard", "the dashboard and rules check") else {
        return;
    };
    let (azure, query_url) = common::azure_for_read_back().await;
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let settings = Settings {
        query_url: Some(query_url),
        canary_interval: Some(Duration::from_millis(500)),
        canary_timeout: Some(Duration::from_secs(5)),
        queue_dir: Some(dir.path().join("queue")),
        cluster: Some("c1".into()),
        ..common::private_link_settings(dir.path(), &azure, Mode::Require)
    };
    let promlink = promlink::serve::start(settings.resolve().unwrap())
        .await
        .unwrap();
    let addr = promlink.local_addr;
    // What /metrics declares from the start.
    let at_start = exported(
        &e2e::get_text(&http, &format!("http://{addr}/metrics"))
            .await
            .unwrap(),
    );

    let port = e2e::free_port();
    let config = dir.path().join("prometheus.yml");
    e2e::write(
        &config,
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: promlink\n    static_configs:\n      - targets: ['{addr}']\n"
        ),
    );
    let cmd = e2e::prom::prometheus_cmd(&bin, &config, &dir.path().join("prom-data"), port);
    let mut prometheus = e2e::Proc::spawn("prometheus", cmd, &dir.path().join("prometheus.log"));
    let base = format!("http://127.0.0.1:{port}");
    let ready = format!("{base}/-/ready");
    e2e::wait_for(
        "prometheus ready",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || e2e::get_text(&http, &ready),
    )
    .await;

    // A sender writing every 200 ms for the rest of the test (bounded: it stops with it).
    let stop = tokio_util::sync::CancellationToken::new();
    let sender = {
        let (http, stop) = (http.clone(), stop.clone());
        tokio::spawn(async move {
            for round in 0..600 {
                let body = common::one_sample_body("dash", "d", 0..200, e2e::now_ms());
                let _ = http
                    .post(format!("http://{addr}/api/v1/write"))
                    .header("Content-Encoding", "snappy")
                    .header("Content-Type", "application/x-protobuf")
                    .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                    .body(body)
                    .send()
                    .await;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = stop.cancelled() => return round,
                }
            }
            600
        })
    };
    // Scrapes for a while (rate() over 1m needs two), and canaries read back.
    let canary =
        format!("{base}/api/v1/query?query=promlink_canary_latency_seconds_count%20%3E%3D%202");
    e2e::prom::wait_for_result(
        &http,
        "canaries read back",
        Duration::from_secs(30),
        &canary,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;

    let mut problems = Vec::new();
    let check = |names: BTreeSet<String>, what: &str, problems: &mut Vec<String>| {
        for n in names {
            let ok = at_start.contains(&n)
                || n == "up"
                || n.starts_with("kubelet_volume_stats_")
                || OPEN_LABEL_ONLY.contains(&n.as_str());
            if !ok {
                problems.push(format!("{what}: {n} is not exported from the start"));
            }
        }
    };
    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "{queries:?}");
    for (title, expr) in &queries {
        let q = grafana(expr);
        check(metric_names(&q), title, &mut problems);
        let data = e2e::prom::api(&http, &base, "/api/v1/query", &[("query", &q)]).await;
        let empty = data["result"].as_array().is_none_or(Vec::is_empty);
        if empty && !q.contains("kubelet_") {
            problems.push(format!("{title}: no data for {q}"));
        }
    }
    let rules_path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus-rule.yaml");
    let rules: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(rules_path).unwrap()).unwrap();
    let mut alerts = 0;
    for group in rules["spec"]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            let expr = rule["expr"].as_str().unwrap();
            check(metric_names(expr), name, &mut problems);
            // Parses and evaluates (api() asserts status success).
            e2e::prom::api(&http, &base, "/api/v1/query", &[("query", expr)]).await;
            alerts += 1;
        }
    }
    assert!(alerts >= 20, "{alerts}");
    stop.cancel();
    let _ = sender.await;
    promlink.shutdown.cancel();
    promlink.wait().await;
    prometheus.terminate(Duration::from_secs(10));
    azure.shutdown().await;
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn metric_names_are_found_in_expressions() {
    let names = metric_names(
        r#"sum by (reason) (rate(promlink_samples_dropped_total{job=~"up", reason!="x"}[1m])) / up{job="a"} + max(kubelet_volume_stats_used_bytes)"#,
    );
    let want: BTreeSet<String> = [
        "promlink_samples_dropped_total",
        "up",
        "kubelet_volume_stats_used_bytes",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(names, want);
}
