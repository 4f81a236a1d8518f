//! Relabeling through the whole forwarder: promlink with the relay bench's rule set
//! (`benches/relabel-rules.yaml`, every action) in front of the DCE emulator, a sender whose
//! acknowledged checksum is taken over each series as the rules forward it. Everything the
//! rules keep arrives, changed exactly as they say, in order, through upstream retries.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Rig, RigOptions};
use promlink::config::Settings;
use promlink::emulator::dce::Fault;
use promlink::loadgen::{self, LoadgenConfig};

const RULES: &str = include_str!("../benches/relabel-rules.yaml");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relabeled_series_arrive_as_the_rules_forward_them() {
    #[derive(serde::Deserialize)]
    struct File {
        write_relabel_configs: Vec<promlink_relabel::RelabelConfig>,
    }
    let file: File = serde_saphyr::from_str(RULES).unwrap();
    let rules = Arc::new(promlink_relabel::Rules::compile(&file.write_relabel_configs).unwrap());
    let rig = Rig::start(RigOptions {
        shards: 4,
        max_samples_per_request: 1000,
        flush_interval: Duration::from_millis(20),
        keep_accepted: 0,
        extra: Settings {
            write_relabel_configs: Some(file.write_relabel_configs.clone()),
            ..Settings::default()
        },
        ..RigOptions::default()
    })
    .await;
    for i in 0..20 {
        rig.dce.push_fault(if i % 2 == 0 {
            Fault::status(503)
        } else {
            Fault::Reset
        });
    }
    let report = loadgen::run(
        LoadgenConfig {
            url: rig.write_url(),
            series: 3000,
            rounds: 5,
            shards: 4,
            samples_per_request: 500,
            deadline: Duration::from_secs(60),
            expect_relabel: Some(rules),
            ..LoadgenConfig::default()
        },
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(report.samples_acked, 15_000, "{report:?}");
    let kept = report.checksum_acked.samples;
    assert!(
        kept > 10_000 && kept < 14_000,
        "the rules drop about one series in six: {kept} of 15000 kept"
    );
    rig.wait_for("every kept sample", Duration::from_secs(30), |s| {
        s.samples >= kept
    })
    .await;
    let stats = rig.dce.stats();
    assert_eq!(stats.samples, kept);
    assert_eq!(stats.out_of_order_samples, 0, "per-series order broken");
    assert_eq!(stats.repeated_timestamp_samples, 0, "duplicates");
    assert_eq!(
        stats.checksum, report.checksum_acked,
        "the series arrive as the rules forward them"
    );
    rig.stop().await;
}

/// `max_active_series: 100` under 1,000 new series, written by 10 concurrent requests of 100:
/// exactly 100 are admitted. A second round of the same 1,000 delivers the same 100 again and
/// drops the other 900 again, each counted (`reason="budget"`); the route reports 100 active
/// series out of 100.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_series_budget_admits_up_to_max_active_series() {
    let rig = Rig::start(RigOptions {
        extra: Settings {
            max_active_series: Some(100),
            ..Settings::default()
        },
        ..RigOptions::default()
    })
    .await;
    for round in 0..2i64 {
        let writes = (0..10).map(|part| {
            let body = common::one_sample_body(
                "budget_test",
                "b",
                part * 100..(part + 1) * 100,
                1_000 + round,
            );
            rig.post(body, "application/x-protobuf")
        });
        for resp in futures_util::future::join_all(writes).await {
            assert_eq!(resp.status(), 204);
        }
    }
    rig.wait_for(
        "the admitted series' samples",
        Duration::from_secs(10),
        |s| s.samples == 200,
    )
    .await;
    // The same 100 series in both rounds.
    let mut per_id = std::collections::BTreeMap::new();
    for req in rig.dce.accepted() {
        for ts in &req.timeseries {
            let id = ts.labels.iter().find(|l| l.name == "id").unwrap();
            *per_id.entry(id.value.clone()).or_insert(0) += ts.samples.len();
        }
    }
    assert_eq!(per_id.len(), 100, "exactly the budget");
    assert!(
        per_id.values().all(|n| *n == 2),
        "each admitted series in both rounds"
    );
    let dropped = |what: &str| {
        format!("promlink_route_{what}_dropped_total{{route=\"default\",reason=\"budget\"}}")
    };
    assert_eq!(rig.metric(&dropped("series")).await, 1800.0);
    assert_eq!(rig.metric(&dropped("samples")).await, 1800.0);
    assert_eq!(
        rig.metric("promlink_route_active_series{route=\"default\"}")
            .await,
        100.0
    );
    assert_eq!(
        rig.metric("promlink_route_max_active_series{route=\"default\"}")
            .await,
        100.0
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rig.dce.stats().samples, 200, "nothing over budget arrives");
    rig.stop().await;
}
