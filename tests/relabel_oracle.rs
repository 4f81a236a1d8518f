//! Real Prometheus 2.42 as the oracle of relabeling: one Prometheus scrapes itself and
//! node_exporter every second and remote-writes twice: straight to a "reference" Prometheus with
//! `write_relabel_configs` R, and unchanged to promlink, which has the same R in its YAML file and
//! forwards to a "via" Prometheus. R uses every action (`replace` with a separator, capture
//! groups and an expanding `target_label`, `keep`, `drop`, `keepequal`, `dropequal`, `hashmod`,
//! `labelmap`, `labeldrop`, `labelkeep`, `lowercase`, `uppercase`). After the sender stops and
//! promlink has drained, both receivers must hold the same series.
//!
//! The same rig checks routes: the sender writes once per route straight to the reference, each
//! with the global rules, the route's `match` as `keep`/`drop` rules and the route's own rules
//! (as Prometheus users do today with one `remote_write` per destination), and once unchanged
//! to promlink, which has the same routes (`match`, `continue`, a default route without match).
//! Each route's rules end by naming the route in a label, so one reference and one via
//! receiver hold all of them apart.
//!
//! Needs the Debian packages `prometheus` and `prometheus-node-exporter` (`scripts/test.sh`
//! installs them); without them the test is skipped loudly, except under `CI=true`, where it
//! fails.

mod e2e;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::prom::{
    api, away_from_scrapes, node_exporter_bin, prometheus_bin, series_key, spawn_node_exporter,
    start_receiver, start_sender,
};
use e2e::{free_ports, get_text, parse_text, start_promlink, value_of, write};

/// The rules, as YAML list items indented for `write_relabel_configs:` (6 spaces in the
/// sender's file; re-indented for promlink's).
const RULES: &str = r#"
- source_labels: [__name__]
  regex: 'go_(gc|memstats)_.*'
  action: drop
- source_labels: [__name__, job]
  separator: ';'
  regex: '(node_(cpu|filesystem|network|memory|load|disk)_.*|prometheus_.*|process_.*|go_.*|up|scrape_.*);(node|sender)'
  action: keep
- source_labels: [job, instance]
  separator: '@'
  regex: '(.+)@(.+):(\d+)'
  target_label: 'origin_${1}'
  replacement: '$2-$3'
- source_labels: [__name__]
  target_label: shard
  modulus: 4
  action: hashmod
- source_labels: [shard]
  regex: '3'
  action: drop
- regex: '(device|mountpoint|fstype)'
  replacement: 'fs_$1'
  action: labelmap
- regex: 'device|mountpoint'
  action: labeldrop
- source_labels: [job]
  target_label: job_upper
  action: uppercase
- source_labels: [job_upper]
  target_label: job_lower
  action: lowercase
- source_labels: [job_lower]
  target_label: job
  action: keepequal
- source_labels: [job_upper]
  target_label: job
  action: dropequal
- regex: 'job_upper|job_lower'
  action: labeldrop
- regex: '[^s].*|s[^h].*|s'
  action: labelkeep
"#;

fn indented(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.trim_matches('\n')
        .lines()
        .map(|l| format!("{pad}{l}\n"))
        .collect()
}

/// Every series a receiver holds.
async fn series_set(http: &reqwest::Client, base: &str) -> BTreeSet<String> {
    api(
        http,
        base,
        "/api/v1/series",
        &[("match[]", r#"{__name__=~".+"}"#)],
    )
    .await
    .as_array()
    .unwrap()
    .iter()
    .map(series_key)
    .collect()
}

/// What arrived at both receivers, and promlink's metrics once it had drained.
struct Outcome {
    want: BTreeSet<String>,
    metrics: String,
}

/// Runs the rig: promlink's YAML gets `promlink_keys(via_url)` after its listener keys; the
/// sender gets `reference_writes(reference_url)` (its `remote_write` items straight to the
/// reference) and one unchanged `remote_write` to promlink. `None` when a peer is missing
/// (outside CI).
async fn oracle(
    test: &str,
    promlink_keys: impl Fn(&str) -> String,
    reference_writes: impl Fn(&str) -> String,
) -> Option<Outcome> {
    let prometheus = prometheus_bin(test, "the relabel oracle test")?;
    let node_exporter = node_exporter_bin(test, "the relabel oracle test")?;
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
    let mut reference = start_receiver(&prometheus, d, "reference", ref_port, &http).await;
    let mut via = start_receiver(&prometheus, d, "via", via_port, &http).await;

    let promlink_yaml = d.join("promlink.yaml");
    write(
        &promlink_yaml,
        &format!(
            "listen: 127.0.0.1:{promlink_port}\nallow_plain_http: true\nidentity: none\nflush_interval: 500ms\n{}",
            promlink_keys(&format!("http://127.0.0.1:{via_port}/api/v1/write"))
        ),
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_promlink"));
    cmd.arg("serve")
        .arg("--config")
        .arg(&promlink_yaml)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    let mut promlink = start_promlink(cmd, d, promlink_port, &http).await;
    let promlink_base = format!("http://127.0.0.1:{promlink_port}");

    let config = format!(
        r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: node
    static_configs: [{{targets: ["127.0.0.1:{node_port}"]}}]
  - job_name: sender
    static_configs: [{{targets: ["127.0.0.1:{sender_port}"]}}]
remote_write:
{}  - url: {promlink_base}/api/v1/write
    name: promlink
    queue_config: {{batch_send_deadline: 1s}}
"#,
        reference_writes(&format!("http://127.0.0.1:{ref_port}/api/v1/write"))
    );
    let (mut sender, sender_base) = start_sender(&prometheus, d, sender_port, &config, &http).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    for p in [
        &mut node,
        &mut promlink,
        &mut sender,
        &mut reference,
        &mut via,
    ] {
        p.assert_running();
    }
    away_from_scrapes(&http, &sender_base).await;
    let (status, in_time) = sender.terminate(Duration::from_secs(30));
    assert!(in_time, "the sender did not stop within 30 s ({status})");

    // promlink drained: its queues empty and its forwarded count steady across a flush (summed
    // over the routes, whose series carry a route label).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = f64::NAN;
    let sum = |text: &str, name: &str| -> f64 {
        parse_text(text)
            .into_iter()
            .filter(|(s, _)| s == name || s.starts_with(&format!("{name}{{")))
            .map(|(_, v)| v)
            .sum()
    };
    let metrics = loop {
        let text = get_text(&http, &format!("{promlink_base}/metrics"))
            .await
            .expect("promlink /metrics");
        let forwarded = sum(&text, "promlink_samples_forwarded_total");
        if sum(&text, "promlink_queue_bytes") == 0.0 && forwarded == last {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "promlink did not drain; log:\n{}",
            promlink.log_tail(20)
        );
        last = forwarded;
        tokio::time::sleep(Duration::from_millis(700)).await;
    };

    let want = series_set(&http, &format!("http://127.0.0.1:{ref_port}")).await;
    let got = series_set(&http, &format!("http://127.0.0.1:{via_port}")).await;
    let only_ref: Vec<&String> = want.difference(&got).collect();
    let only_via: Vec<&String> = got.difference(&want).collect();
    assert!(
        only_ref.is_empty() && only_via.is_empty(),
        "series differ: {} only at the reference (Prometheus' relabeling), {} only through promlink\nreference only: {:#?}\npromlink only: {:#?}",
        only_ref.len(),
        only_via.len(),
        only_ref.iter().take(10).collect::<Vec<_>>(),
        only_via.iter().take(10).collect::<Vec<_>>()
    );
    for p in [&mut promlink, &mut node, &mut reference, &mut via] {
        p.terminate(Duration::from_secs(20));
    }
    Some(Outcome { want, metrics })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promlink_relabels_exactly_as_prometheus() {
    let Some(Outcome { want, metrics, .. }) = oracle(
        "relabel_oracle",
        |via| {
            format!(
                "ingestion_url: {via}\nwrite_relabel_configs:\n{}",
                indented(RULES, 2)
            )
        },
        |reference| {
            format!(
                "  - url: {reference}\n    name: reference\n    queue_config: {{batch_send_deadline: 1s}}\n    write_relabel_configs:\n{}",
                indented(RULES, 6)
            )
        },
    )
    .await
    else {
        return;
    };

    // The rules did something of each kind, so the agreement is not that of two no-ops.
    let has = |pred: &dyn Fn(&str) -> bool| want.iter().any(|s| pred(s));
    assert!(want.len() > 50, "only {} series arrived", want.len());
    assert!(
        has(&|s| s.contains("origin_node=\"127.0.0.1-")),
        "replace with an expanding target"
    );
    assert!(has(&|s| s.contains("fs_mountpoint=")), "labelmap");
    assert!(
        !has(&|s| s.contains("shard=") || s.contains("job_upper=")),
        "labelkeep, labeldrop"
    );
    assert!(
        !has(&|s| s.contains(" mountpoint=")
            || s.contains("{mountpoint=")
            || s.contains(",mountpoint=")),
        "labeldrop"
    );
    assert!(!has(&|s| s.starts_with("go_gc_")), "drop");
    assert!(!has(&|s| s.starts_with("node_time")), "keep");
    let dropped = value_of(
        &metrics,
        r#"promlink_relabel_series_dropped_total{reason="rule"}"#,
    )
    .unwrap_or(0.0);
    assert!(
        dropped > 0.0,
        "promlink counted no series dropped by a rule"
    );
    eprintln!(
        "relabel oracle: {} series identical at both receivers; promlink dropped {dropped} series by rule",
        want.len()
    );
}

/// The global rules of the routing check.
const GLOBAL: &str = r#"
- source_labels: [__name__]
  regex: 'go_(gc|memstats)_.*'
  action: drop
"#;

/// One route of the routing check: its name, its `match` for promlink, the same selection as
/// rules for a Prometheus `remote_write`, and its own rules.
struct RouteCase {
    name: &'static str,
    matches: Option<&'static str>,
    continues: bool,
    rules: &'static str,
}

const ROUTES: [RouteCase; 3] = [
    RouteCase {
        name: "infra",
        matches: Some(r#"node_load1{job="node"}"#),
        continues: true,
        rules: "- {target_label: team, replacement: infra}\n",
    },
    RouteCase {
        name: "platform",
        matches: Some(r#"{__name__=~"prometheus_(http|tsdb)_.*", job="sender"}"#),
        continues: false,
        rules:
            "- {source_labels: [handler], regex: '/(.*)', target_label: path, replacement: '$1'}\n",
    },
    RouteCase {
        name: "default",
        matches: None,
        continues: false,
        rules: "",
    },
];

/// What a `remote_write` straight to the reference keeps for route `i`, as Prometheus rules:
/// what the route's match selects, minus what an earlier route without `continue` took.
fn selection_rules(i: usize) -> String {
    let keep = |regex: &str| {
        format!("- {{source_labels: [__name__, job], separator: ';', regex: '{regex}', action: keep}}\n")
    };
    let drop = |regex: &str| {
        format!("- {{source_labels: [__name__, job], separator: ';', regex: '{regex}', action: drop}}\n")
    };
    match i {
        0 => keep("node_load1;node"),
        1 => keep("prometheus_(http|tsdb)_.*;sender"),
        // Everything route 1 did not take (route 0 continues, so its series reach here too).
        _ => drop("prometheus_(http|tsdb)_.*;sender"),
    }
}

/// The rule that names the route in a label, last in each route's rules.
fn route_label(name: &str) -> String {
    format!("- {{target_label: promlink_route, replacement: {name}}}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promlink_routes_as_one_prometheus_remote_write_per_route() {
    let Some(Outcome { want, metrics, .. }) = oracle(
        "relabel_oracle",
        |via| {
            let mut y = format!("write_relabel_configs:\n{}routes:\n", indented(GLOBAL, 2));
            for r in &ROUTES {
                y.push_str(&format!("  - name: {}\n    ingestion_url: {via}\n", r.name));
                if let Some(m) = r.matches {
                    y.push_str(&format!("    match: '{m}'\n"));
                }
                if r.continues {
                    y.push_str("    continue: true\n");
                }
                y.push_str(&format!(
                    "    write_relabel_configs:\n{}",
                    indented(&format!("{}{}", r.rules, route_label(r.name)), 6)
                ));
            }
            y
        },
        |reference| {
            ROUTES
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let rules = format!(
                        "{}{}{}{}",
                        GLOBAL.trim_start_matches('\n'),
                        selection_rules(i),
                        r.rules,
                        route_label(r.name)
                    );
                    format!(
                        "  - url: {reference}\n    name: {}\n    queue_config: {{batch_send_deadline: 1s}}\n    write_relabel_configs:\n{}",
                        r.name,
                        indented(&rules, 6)
                    )
                })
                .collect()
        },
    )
    .await
    else {
        return;
    };
    // Each route got something, and the routes overlap only where continue says so.
    let of = |route: &str| -> Vec<&String> {
        want.iter()
            .filter(|s| s.contains(&format!("promlink_route=\"{route}\"")))
            .collect()
    };
    let (infra, platform, default) = (of("infra"), of("platform"), of("default"));
    assert!(
        !infra.is_empty()
            && infra
                .iter()
                .all(|s| s.starts_with("node_load1{") && s.contains("team=\"infra\"")),
        "{infra:#?}"
    );
    assert!(
        platform.len() > 5 && platform.iter().all(|s| s.starts_with("prometheus_")),
        "{platform:?}"
    );
    assert!(
        platform.iter().any(|s| s.contains("path=\"metrics\"")),
        "the platform route's own rule"
    );
    assert!(
        default.iter().any(|s| s.starts_with("node_load1{")),
        "continue: infra's series reach the default route too"
    );
    assert!(
        !default.iter().any(|s| s.starts_with("prometheus_http_")),
        "platform took those without continue"
    );
    assert!(
        !want.iter().any(|s| s.starts_with("go_gc_")),
        "the global rules run first"
    );
    for route in ["infra", "platform", "default"] {
        let taken = value_of(
            &metrics,
            &format!("promlink_route_samples_received_total{{route=\"{route}\"}}"),
        )
        .unwrap_or(0.0);
        assert!(
            taken > 0.0,
            "promlink counted nothing taken by route {route}"
        );
    }
    eprintln!(
        "route oracle: {} series identical at both receivers ({} infra, {} platform, {} default)",
        want.len(),
        infra.len(),
        platform.len(),
        default.len()
    );
}
