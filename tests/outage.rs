//! A two-minute upstream outage with the disk queue (issue 12, "Done when"): the upstream gives
//! no HTTP answer at all (its port refuses connections, as during a VPN, DNS or firewall
//! outage), while a sender keeps writing.
//!
//! ```text
//! loadgen --RW 1.0--> promlink (binary, --queue-dir) --x--> DCE emulator (stopped for 2 min)
//!                          \--alerts--> Alertmanager 0.25 (real)
//! ```
//!
//! Throughout, `/ready` stays 200 and every write is accepted into the queue (none refused);
//! once `ready_window` has passed, `/status` says the upstream is unavailable and why,
//! `promlink_upstream_available` is 0, and `PromlinkUpstreamUnavailable` fires in Alertmanager
//! with its runbook. When the upstream comes back on the same port, everything acknowledged
//! arrives and the alert resolves.
//!
//! Needs Debian's `prometheus-alertmanager` (scripts/test.sh installs it); skipped loudly
//! without it, failing under `CI=true`.

mod e2e;
#[path = "durable/mod.rs"]
mod rig;

use std::time::{Duration, Instant};

use e2e::{free_port, get_text, now_ms, start_alertmanager, sum_of, wait_for};
use promlink::emulator::dce::{DceConfig, DceEmulator, DceTls};
use rig::{persistent_load, serve_args, spawn_paced_load, token_file, with, Promlink};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// How long the upstream is gone.
const OUTAGE: Duration = Duration::from_secs(120);
/// `--ready-window`: short enough that the alert fires well inside the outage.
const READY_WINDOW: Duration = Duration::from_secs(20);
const ALERT: &str = "PromlinkUpstreamUnavailable";

async fn dce_on(port: u16) -> promlink::emulator::dce::DceHandle {
    DceEmulator::start(DceConfig {
        listen: format!("127.0.0.1:{port}").parse().unwrap(),
        tls: DceTls::Plain,
        keep_accepted: 100_000,
        ..DceConfig::default()
    })
    .await
    .unwrap()
}

/// The `/status` check `name` of the promlink at `base`, asserting that `/status` answers 200.
async fn status_check(http: &reqwest::Client, base: &str, name: &str) -> Value {
    let body = get_text(http, &format!("{base}/status"))
        .await
        .unwrap_or_else(|e| panic!("/status must always answer 200: {e}"));
    let v: Value = serde_json::from_str(&body).unwrap();
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {v}"))
        .clone()
}

/// Alertmanager's active alerts named [`ALERT`].
async fn firing_in_alertmanager(http: &reqwest::Client, am: &str) -> Vec<Value> {
    let url = url::Url::parse_with_params(
        &format!("{am}/api/v2/alerts"),
        &[("filter", format!("alertname=\"{ALERT}\""))],
    )
    .unwrap();
    let body = get_text(http, url.as_str()).await.unwrap();
    serde_json::from_str::<Vec<Value>>(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_minute_outage_keeps_ready_queues_reports_and_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let Some((mut am, am_base)) = start_alertmanager(dir.path(), "outage", &http).await else {
        return;
    };
    let dce_port = free_port();
    let dce = dce_on(dce_port).await;
    let args = with(
        serve_args(
            dce.url(),
            &dir.path().join("queue"),
            &token_file(dir.path()),
        ),
        &[
            ("--flush-interval", "200ms"),
            ("--retry-max-backoff", "2s"),
            ("--ready-window", &format!("{}s", READY_WINDOW.as_secs())),
            ("--alertmanager-url", &am_base),
            ("--alert-resend-interval", "5s"),
        ],
    );
    let mut promlink = Promlink::spawn(&args, free_port(), &dir.path().join("promlink.log"));
    promlink.wait_healthy(Duration::from_secs(20)).await;
    let base = promlink.base();

    // 200 series, one round a second, for the whole test.
    let stop_load = CancellationToken::new();
    let cfg = persistent_load(promlink.write_url(), 200, 1, now_ms() - 3_600_000);
    let load = spawn_paced_load(cfg, Duration::from_secs(1), stop_load.clone());
    wait_for(
        "data flowing before the outage",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let n = dce.stats().samples;
            async move { (n >= 400).then_some(()).ok_or(format!("{n} samples")) }
        },
    )
    .await;

    // The upstream goes away: its port refuses connections.
    let (_, before_outage) = dce.shutdown_with_results().await;
    let outage_started = Instant::now();
    let received_at_start =
        sum_of(&promlink.metrics().await, "promlink_samples_received_total").unwrap_or(0.0);
    let mut saw_unavailable = false;
    let mut saw_alert = None;
    while outage_started.elapsed() < OUTAGE {
        promlink.assert_running();
        let ready = http.get(format!("{base}/ready")).send().await.unwrap();
        assert_eq!(
            ready.status(),
            200,
            "{:?} into the outage /ready failed: {}",
            outage_started.elapsed(),
            ready.text().await.unwrap()
        );
        if outage_started.elapsed() > READY_WINDOW + Duration::from_secs(3) && !saw_unavailable {
            let check = status_check(&http, &base, "upstream").await;
            assert_eq!(check["ok"], false, "{check}");
            assert_eq!(check["state"], "unavailable", "{check}");
            let reason = check["reason"].as_str().unwrap().to_lowercase();
            assert!(reason.contains("connection refused"), "{check}");
            assert_eq!(
                promlink.metric("promlink_upstream_available").await,
                0.0,
                "the gauge the rule file reads"
            );
            saw_unavailable = true;
        }
        if saw_alert.is_none() {
            let firing = firing_in_alertmanager(&http, &am_base).await;
            if let Some(a) = firing.first() {
                saw_alert = Some((outage_started.elapsed(), a.clone()));
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        saw_unavailable,
        "/status never said the upstream was unavailable"
    );
    let (fired_after, alert) =
        saw_alert.expect("PromlinkUpstreamUnavailable never reached Alertmanager");
    // promlink counts the window from the DCE's last answer, which came a little before
    // `outage_started` (the emulator's shutdown and the poll in between): up to a second or
    // two on a loaded machine.
    assert!(
        fired_after + Duration::from_secs(2) >= READY_WINDOW,
        "fired {fired_after:?} into the outage, before ready_window"
    );
    assert_eq!(alert["labels"]["severity"], "critical", "{alert}");
    assert_eq!(
        alert["annotations"]["runbook_url"],
        promlink::alert::rules::runbook_url(ALERT),
        "{alert}"
    );
    assert!(
        alert["annotations"]["description"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("connection refused"),
        "{alert}"
    );

    // Everything written during the outage was accepted into the queue, nothing refused.
    let metrics = promlink.metrics().await;
    let received = sum_of(&metrics, "promlink_samples_received_total").unwrap_or(0.0);
    assert!(
        received - received_at_start >= 100.0 * 200.0,
        "only {} samples accepted during the outage",
        received - received_at_start
    );
    assert_eq!(
        sum_of(&metrics, "promlink_receive_rejected_total").unwrap_or(0.0),
        0.0,
        "writes were refused during the outage:\n{metrics}"
    );
    assert!(promlink.metric("promlink_queue_bytes").await > 0.0);

    // The upstream returns on the same port: the backlog and the rest arrive.
    let dce = dce_on(dce_port).await;
    stop_load.cancel();
    let (report, _) = load.await.unwrap();
    rig::assert_all_acked(&report);
    let all = || {
        let mut a = before_outage.clone();
        a.extend(dce.accepted());
        rig::arrived(&a)
    };
    wait_for(
        "the backlog delivered",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let got = all().distinct;
            let want = report.checksum_acked;
            async move {
                (got == want)
                    .then_some(())
                    .ok_or(format!("{} of {} samples", got.samples, want.samples))
            }
        },
    )
    .await;
    assert!(
        all().duplicates() <= 2 * 200,
        "resends beyond the batches in flight when the upstream went away"
    );
    wait_for(
        "the alert to resolve",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || {
            let (http, am_base) = (http.clone(), am_base.clone());
            async move {
                let n = firing_in_alertmanager(&http, &am_base).await.len();
                (n == 0).then_some(()).ok_or(format!("{n} still active"))
            }
        },
    )
    .await;
    assert_eq!(promlink.metric("promlink_upstream_available").await, 1.0);
    let (status, _, in_time) = promlink.sigterm(Duration::from_secs(40));
    assert!(in_time && status.success(), "SIGTERM: {status}");
    am.assert_running();
    dce.shutdown().await;
}
