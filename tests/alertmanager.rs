//! promlink's [`Alerter`] against a real Alertmanager 0.25 (Debian `prometheus-alertmanager`),
//! started as a child process on 127.0.0.1 with a null receiver and no cluster port.
//!
//! The test fires `PromlinkPrivateLinkNotVerified` (mode require, DNS verdict public) through the
//! alerter with a 300 ms resend interval and reads it back over `GET /api/v2/alerts`: active, with
//! promlink's labels (`alertname`, `severity`, `job`, `instance`, `upstream`, `verdict`, `mode`)
//! and annotations (summary, description, and the verdict's remediation text), and with the same
//! `startsAt` after several resends while `endsAt` moves forward. Then it clears the alert and
//! checks that Alertmanager received it as resolved (its own
//! `alertmanager_alerts_received_total{status="resolved"}`) and no longer lists it under any
//! filter: Alertmanager's API drops alerts whose `endsAt` has passed from every view, whatever
//! `active`/`silenced`/`inhibited`/`unprocessed` say, so absence plus the resolved count is what
//! "resolved" looks like from outside.
//!
//! Needs `/usr/bin/prometheus-alertmanager` (or `PROMLINK_E2E_ALERTMANAGER=/path`). Without it the
//! test is skipped loudly, except under `CI=true`, where it fails: `scripts/test.sh` installs it.

mod e2e;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use e2e::{get_text as get, start_alertmanager, wait_for};
use promlink::alert::rules::{self, Alert};
use promlink::alert::{Alerter, Metrics, Signals};
use promlink::privatelink::{Mode, Verdict};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const NAME: &str = "PromlinkPrivateLinkNotVerified";
const HOST: &str = "mydce-ab12.eastus-1.metrics.ingest.monitor.azure.com";
const RESEND: Duration = Duration::from_millis(300);
/// Generous for a loaded 2-core machine; the happy path takes a few seconds.
const WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

/// `GET /api/v2/alerts` for our alert name, with extra query parameters.
async fn alerts(http: &reqwest::Client, base: &str, params: &[(&str, &str)]) -> Vec<Value> {
    let filter = format!("alertname=\"{NAME}\"");
    let mut all = vec![("filter", filter.as_str())];
    all.extend_from_slice(params);
    let url = url::Url::parse_with_params(&format!("{base}/api/v2/alerts"), &all).unwrap();
    let body = get(http, url.as_str())
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    serde_json::from_str::<Vec<Value>>(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}"))
}

/// Alertmanager's own count of alerts received with `status` (`firing` or `resolved`).
async fn received(http: &reqwest::Client, base: &str, status: &str) -> f64 {
    let text = get(http, &format!("{base}/metrics")).await.unwrap();
    let want = format!("status=\"{status}\"");
    text.lines()
        .filter(|l| l.starts_with("alertmanager_alerts_received_total{") && l.contains(&want))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn time(v: &Value) -> SystemTime {
    let s = v.as_str().expect("a time string");
    humantime::parse_rfc3339_weak(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn millis(t: SystemTime) -> u128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

fn the_alert() -> Alert {
    let s = Signals {
        upstream_host: HOST.into(),
        mode: Some(Mode::Require),
        verdict: Some(Verdict::Public),
        verdict_detail: format!("{HOST} resolves to public address(es) 20.42.1.1"),
        ..Signals::default()
    };
    let alerts = rules::evaluate(&s);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].name, NAME);
    alerts.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_fire_resend_and_resolve_in_a_real_alertmanager() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let Some((mut am, base)) = start_alertmanager(dir.path(), "alertmanager", &http).await else {
        return;
    };
    am.assert_running();

    let metrics = Metrics::default();
    let alerter = Arc::new(
        Alerter::new(
            vec![base.parse().unwrap()],
            RESEND,
            "promlink-e2e".into(),
            None,
            &Default::default(),
            metrics.clone(),
        )
        .unwrap(),
    );
    let stop = CancellationToken::new();
    let task = alerter.clone().spawn(stop.clone());

    // Fire.
    let alert = the_alert();
    alerter.update(vec![alert.clone()]);
    let started = alerter.firing_since()[0].1;
    let first = wait_for("the alert in alertmanager", WAIT, POLL, || {
        let http = http.clone();
        let base = base.clone();
        async move {
            let got = alerts(&http, &base, &[]).await;
            match got.as_slice() {
                [one] => Ok(one.clone()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    assert_eq!(first["status"]["state"], "active", "{first:#}");
    let labels = &first["labels"];
    for (k, v) in [
        ("alertname", NAME),
        ("severity", "critical"),
        ("job", "promlink"),
        ("instance", "promlink-e2e"),
        ("upstream", HOST),
        ("verdict", "public"),
        ("mode", "require"),
    ] {
        assert_eq!(labels[k], v, "label {k}: {first:#}");
    }
    let ann = &first["annotations"];
    assert_eq!(ann["summary"], alert.summary.as_str());
    assert_eq!(ann["description"], alert.description.as_str());
    assert_eq!(ann["remediation"], Verdict::Public.remediation());
    assert!(ann["remediation"]
        .as_str()
        .unwrap()
        .contains("privatelink.monitor.azure.com"));
    assert_eq!(millis(time(&first["startsAt"])), millis(started));
    let first_end = time(&first["endsAt"]);

    // Resends: wait for three more accepted posts; startsAt stays, endsAt moves on.
    let posts = metrics.post_count("success");
    wait_for("three resends", WAIT, POLL, || {
        let n = metrics.post_count("success");
        async move {
            if n >= posts + 3 {
                Ok(())
            } else {
                Err(format!("{n} posts"))
            }
        }
    })
    .await;
    let later = alerts(&http, &base, &[]).await;
    assert_eq!(later.len(), 1, "{later:#?}");
    assert_eq!(later[0]["status"]["state"], "active");
    assert_eq!(
        time(&later[0]["startsAt"]),
        time(&first["startsAt"]),
        "startsAt must not move on resend"
    );
    let later_end = time(&later[0]["endsAt"]);
    assert!(later_end > first_end, "endsAt must move forward on resend");
    let ahead = later_end
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    assert!(
        ahead <= RESEND * 4,
        "endsAt is {ahead:?} ahead, more than 4 resends"
    );
    assert_eq!(received(&http, &base, "resolved").await, 0.0);

    // Clear: Alertmanager gets it resolved and lists it nowhere.
    alerter.update(vec![]);
    assert!(alerter.firing().is_empty());
    wait_for("the resolved alert in alertmanager", WAIT, POLL, || {
        let http = http.clone();
        let base = base.clone();
        async move {
            let n = received(&http, &base, "resolved").await;
            if n >= 1.0 {
                Ok(())
            } else {
                Err(format!("resolved received: {n}"))
            }
        }
    })
    .await;
    for params in [
        &[][..],
        &[
            ("active", "true"),
            ("silenced", "true"),
            ("inhibited", "true"),
            ("unprocessed", "true"),
        ][..],
        &[("active", "false")][..],
    ] {
        let got = alerts(&http, &base, params).await;
        assert!(got.is_empty(), "{params:?}: still listed: {got:#?}");
    }
    assert_eq!(metrics.post_count("failure"), 0);

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("alerter stops on shutdown")
        .unwrap();
    am.assert_running();
}
