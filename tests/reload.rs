//! Configuration reloads against the DCE emulator: under load (an invalid file, then a valid
//! one: no acknowledged sample lost, the new rules applied from the reload on), the
//! `POST /-/reload` endpoint (off by default, authenticated as writes), a change that only a
//! restart applies (refused as a whole), and routes whose matchers, budgets and rates change.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Rig, RigOptions};
use promlink::config::Settings;

const V1: &str = "application/x-protobuf";
/// Series per round of the load.
const SERIES: usize = 100;

/// Every series the DCE accepted, as (job, first timestamp, via), sorted.
fn arrived(rig: &Rig) -> Vec<(String, i64, Option<String>)> {
    let mut arrived = Vec::new();
    for req in rig.dce.accepted() {
        for ts in &req.timeseries {
            let get = |name: &str| {
                ts.labels
                    .iter()
                    .find(|l| l.name == name)
                    .map(|l| l.value.clone())
            };
            arrived.push((get("job").unwrap(), ts.samples[0].timestamp, get("via")));
        }
    }
    arrived.sort();
    arrived
}

/// Writes one series `routed{job}` with one sample at `ts`: the answer's status.
async fn send_one(rig: &Rig, job: &str, ts: i64) -> reqwest::StatusCode {
    let body = common::one_sample_body("routed", job, 0..1, ts);
    rig.post(body, V1).await.status()
}

fn rewrite(rig: &Rig, yaml: &str) {
    std::fs::write(rig.dir.path().join("promlink.yaml"), yaml).unwrap();
}

/// The `promlink_config_reloads_total` of `result`.
async fn reloads(rig: &Rig, result: &str) -> f64 {
    rig.metric(&format!(
        "promlink_config_reloads_total{{result=\"{result}\"}}"
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_load_loses_nothing_and_applies_the_new_rules() {
    let rig = Arc::new(
        Rig::start(RigOptions {
            config_yaml: Some(
                "write_relabel_configs:\n  - {source_labels: [job], regex: nobody, action: drop}\n"
                    .into(),
            ),
            ..RigOptions::default()
        })
        .await,
    );
    // A sender: 80 rounds of 100 series, 10 ms apart, each round acknowledged before the next.
    let rounds = Arc::new(AtomicUsize::new(0));
    let sender = {
        let (rig, rounds) = (rig.clone(), rounds.clone());
        tokio::spawn(async move {
            for round in 0..80i64 {
                let body = common::one_sample_body("reload_test", "r", 0..SERIES, 1_000 + round);
                let status = rig.post(body, V1).await.status();
                assert_eq!(status, 204, "round {round}");
                rounds.fetch_add(1, Ordering::AcqRel);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let wait_round = |n: usize| {
        let rounds = rounds.clone();
        async move {
            while rounds.load(Ordering::Acquire) < n {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    wait_round(20).await;
    rewrite(&rig, "write_relabel_configs:\n  - {action: nonsense}\n");
    let refused = rig.promlink.reload().await.unwrap_err();
    assert!(refused.contains("nonsense"), "{refused}");
    wait_round(40).await;
    rewrite(
        &rig,
        "write_relabel_configs:\n  - {target_label: reloaded, replacement: 'yes'}\n",
    );
    let done = rig.promlink.reload().await.unwrap();
    assert!(done.contains("write_relabel_configs"), "{done}");
    let reloaded_at = rounds.load(Ordering::Acquire) as i64;
    sender.await.unwrap();
    rig.wait_for("every round", Duration::from_secs(10), |s| {
        s.samples == 80 * SERIES as u64
    })
    .await;
    let stats = rig.dce.stats();
    assert_eq!(stats.out_of_order_samples, 0);
    assert_eq!(stats.repeated_timestamp_samples, 0);
    // Before the reload no series has the label; from the round after it, every series has.
    let (mut with, mut without) = (0, 0);
    for req in rig.dce.accepted() {
        for ts in &req.timeseries {
            let round = ts.samples[0].timestamp - 1_000;
            let labelled = ts.labels.iter().any(|l| l.name == "reloaded");
            if round < 40 {
                assert!(!labelled, "round {round} relabelled before the reload");
            }
            if round > reloaded_at {
                assert!(labelled, "round {round} not relabelled after the reload");
            }
            if labelled {
                with += 1;
            } else {
                without += 1;
            }
        }
    }
    assert!(with >= SERIES && without >= 40 * SERIES, "{with} {without}");
    assert_eq!(reloads(&rig, "error").await, 1.0);
    assert_eq!(reloads(&rig, "success").await, 1.0);
    assert_eq!(
        rig.metric("promlink_config_last_reload_successful").await,
        1.0
    );
    Arc::into_inner(rig).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reload_endpoint_is_off_by_default_and_authenticated_when_on() {
    let rig = Rig::start(RigOptions::default()).await;
    let resp = rig.http.post(rig.url("/-/reload")).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("enable_reload_endpoint"));
    rig.stop().await;

    let tokens = tempfile::tempdir().unwrap();
    let token_file = tokens.path().join("tokens");
    std::fs::write(&token_file, "sender-token\n").unwrap();
    let rig = Rig::start(RigOptions {
        config_yaml: Some("enable_reload_endpoint: true\n".into()),
        extra: Settings {
            bearer_token_file: Some(token_file),
            ..Settings::default()
        },
        ..RigOptions::default()
    })
    .await;
    let reload = |token: Option<&str>| {
        let mut req = rig.http.post(rig.url("/-/reload"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    assert_eq!(reload(None).await.unwrap().status(), 401);
    assert_eq!(reload(Some("wrong")).await.unwrap().status(), 401);
    let ok = reload(Some("sender-token")).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap().trim(), "nothing changed");
    // A change only a restart applies: refused whole, saying which key.
    rewrite(
        &rig,
        "enable_reload_endpoint: true\nalert_resend_interval: 5m\nwrite_relabel_configs:\n  - {target_label: x, replacement: y}\n",
    );
    let refused = reload(Some("sender-token")).await.unwrap();
    assert_eq!(refused.status(), 400);
    let why = refused.text().await.unwrap();
    assert!(
        why.contains("alert_resend_interval") && why.contains("restart"),
        "{why}"
    );
    assert_eq!(reloads(&rig, "error").await, 1.0);
    assert_eq!(
        rig.metric("promlink_config_last_reload_successful").await,
        0.0
    );
    // The running rules did not change: a write arrives without x.
    let body = common::one_sample_body("after", "a", 0..1, 5_000);
    let resp = rig
        .http
        .post(rig.write_url())
        .bearer_auth("sender-token")
        .header("Content-Encoding", "snappy")
        .header("Content-Type", V1)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    rig.wait_for("the write", Duration::from_secs(5), |s| s.samples == 1)
        .await;
    let labels = &rig.dce.accepted()[0].timeseries[0].labels;
    assert!(labels.iter().all(|l| l.name != "x"), "{labels:?}");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_route_matchers_budgets_and_rates() {
    let routes = |a_match: &str, extra: &str| {
        format!(
            "routes:\n  - name: a\n    match: '{a_match}'\n    ingestion_url: {{url}}\n    write_relabel_configs:\n      - {{target_label: via, replacement: a}}\n{extra}  - name: default\n    ingestion_url: {{url}}\n"
        )
    };
    let rig = Rig::start(RigOptions {
        config_yaml: Some(routes(r#"{job="one"}"#, "")),
        ..RigOptions::default()
    })
    .await;
    let send = |job: &'static str, ts: i64| send_one(&rig, job, ts);
    assert_eq!(send("one", 1_000).await, 204);
    assert_eq!(send("two", 1_000).await, 204);
    rewrite(
        &rig,
        &routes(
            r#"{job="two"}"#,
            "    max_active_series: 7\n    max_requests_per_minute: 1200\n",
        )
        .replace("{url}", rig.dce.url()),
    );
    let done = rig.promlink.reload().await.unwrap();
    assert!(
        done.contains(
            "route a: match, max_active_series or active_series_window, max_requests_per_minute"
        ),
        "{done}"
    );
    assert_eq!(send("one", 2_000).await, 204);
    assert_eq!(send("two", 2_000).await, 204);
    rig.wait_for("four samples", Duration::from_secs(5), |s| s.samples == 4)
        .await;
    let mut via_a: Vec<(String, i64)> = arrived(&rig)
        .into_iter()
        .filter(|(_, _, via)| via.is_some())
        .map(|(job, ts, _)| (job, ts))
        .collect();
    via_a.sort();
    assert_eq!(
        via_a,
        [("one".to_string(), 1_000), ("two".to_string(), 2_000)]
    );
    assert_eq!(
        rig.metric("promlink_route_max_active_series{route=\"a\"}")
            .await,
        7.0
    );
    assert_eq!(
        rig.metric("promlink_upstream_requests_per_minute_limit{route=\"a\"}")
            .await,
        1200.0
    );
    rig.stop().await;
}

/// A reload adds route `b` and removes route `a`: `b` is launched (its own queue, workers,
/// metrics and checks) and takes its series from then on; `a` takes no more writes but still
/// delivers what it held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_and_removes_routes_and_a_removed_route_delivers_what_it_holds() {
    let route = |name: &str, job: &str, extra: &str| {
        format!(
            "  - name: {name}\n    match: '{{job=\"{job}\"}}'\n    ingestion_url: {{url}}\n    write_relabel_configs:\n      - {{target_label: via, replacement: {name}}}\n{extra}"
        )
    };
    let default = "  - name: default\n    ingestion_url: {url}\n";
    let queue_dir = tempfile::tempdir().unwrap();
    let top = format!("queue_dir: {}\nroutes:\n", queue_dir.path().display());
    let rig = Rig::start(RigOptions {
        // Route a holds its batch for a second: still queued when the reload removes it.
        config_yaml: Some(format!(
            "{top}{}{default}",
            route("a", "one", "    flush_interval: 1s\n")
        )),
        ..RigOptions::default()
    })
    .await;
    let send = |job: &'static str, ts: i64| send_one(&rig, job, ts);
    assert_eq!(send("one", 1_000).await, 204);
    rewrite(
        &rig,
        &format!("{top}{}{default}", route("b", "two", "")).replace("{url}", rig.dce.url()),
    );
    let done = rig.promlink.reload().await.unwrap();
    assert!(
        done.contains("route b added") && done.contains("route a removed"),
        "{done}"
    );
    assert_eq!(send("one", 2_000).await, 204);
    assert_eq!(send("two", 2_000).await, 204);
    rig.wait_for("three samples", Duration::from_secs(10), |s| s.samples == 3)
        .await;
    let arrived = arrived(&rig);
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        arrived,
        [
            ("one".to_string(), 1_000, s("a")),
            ("one".to_string(), 2_000, None),
            ("two".to_string(), 2_000, s("b")),
        ]
    );
    // The DCE counts a sample before it answers, promlink after it reads the answer.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let forwarded = rig
            .metric("promlink_samples_forwarded_total{route=\"b\"}")
            .await;
        if forwarded == 1.0 {
            break;
        }
        assert!(
            forwarded < 1.0 && std::time::Instant::now() < deadline,
            "samples forwarded on route b: {forwarded}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = rig.http.get(rig.url("/status")).send().await.unwrap();
    let status = status.text().await.unwrap();
    assert!(status.contains("\"route\": \"b\""), "{status}");
    assert!(queue_dir.path().join("b").is_dir());
    rig.stop().await;
}

/// At start, a queue under `queue_dir` that no configured route uses (its route was removed
/// while it held data) is reported: it is not delivered by anyone now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_of_a_removed_route_is_reported_at_start() {
    let queue_dir = tempfile::tempdir().unwrap();
    let gone = queue_dir.path().join("gone").join("log");
    std::fs::create_dir_all(&gone).unwrap();
    std::fs::write(gone.join("00000001.seg"), vec![1u8; 4096]).unwrap();
    let rig = Rig::start(RigOptions {
        config_yaml: Some(format!(
            "queue_dir: {}\nroutes:\n  - name: default\n    ingestion_url: {{url}}\n",
            queue_dir.path().display()
        )),
        ..RigOptions::default()
    })
    .await;
    let series = format!(
        "promlink_queue_stranded_bytes{{directory=\"{}\"}}",
        queue_dir.path().join("gone").display()
    );
    assert_eq!(rig.metric(&series).await, 4096.0);
    // The in-process alert fires (rules are evaluated every second).
    let firing = "promlink_alerts_firing{alertname=\"PromlinkQueueStranded\"}";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while rig.metric(firing).await != 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "PromlinkQueueStranded never fired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rig.stop().await;
}
