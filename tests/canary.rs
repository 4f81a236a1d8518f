//! The canary read-back end to end (issue 16): promlink writes `promlink_canary` through the
//! route into the emulated DCE (Private Link `require`, Entra client secret, TLS), and reads it
//! back through the emulated workspace query endpoint with a token for the query scope. Then
//! the reader role is revoked (403: counted by reason), and the DCE loses data silently (200,
//! nothing kept: the canary goes missing within `canary_timeout` and `PromlinkIngestionNotVisible`
//! fires until the loss ends, reaching a real Alertmanager). Everything listens on
//! 127.0.0.x; the emulators run in-process and stop with the test.

mod common;
mod e2e;

use std::time::Duration;

use promlink::config::Settings;
use promlink::emulator::azure::{AzureOptions, EmulatedAzure, CLIENT, PUBLIC_ENDPOINT};
use promlink::privatelink::Mode;

/// Polls `/metrics` until `series` reaches `at_least`, for up to `timeout`.
async fn wait_metric(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    series: &str,
    at_least: f64,
    timeout: Duration,
) -> f64 {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let v = common::metric(http, addr, series).await;
        if v >= at_least {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} stayed at {v}, below {at_least}, for {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `cond` every 100 ms for up to 15 s; panics naming `what`.
async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..150 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_is_read_back_and_missing_or_refused_reads_are_counted() {
    let (azure, query_url) = common::azure_for_read_back().await;
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    // A real Alertmanager 0.25 (the test fails under CI=true when it is missing).
    let alertmanager = e2e::start_alertmanager(dir.path(), "canary", &http).await;
    let settings = Settings {
        query_url: Some(query_url),
        canary_interval: Some(Duration::from_millis(500)),
        canary_timeout: Some(Duration::from_secs(3)),
        cluster: Some("c1".into()),
        alertmanager_url: alertmanager
            .as_ref()
            .map(|(_, base)| vec![base.parse().unwrap()]),
        alert_resend_interval: Some(Duration::from_millis(500)),
        ..common::private_link_settings(dir.path(), &azure, Mode::Require)
    };
    let promlink = promlink::serve::start(settings.resolve().unwrap())
        .await
        .unwrap();
    let addr = promlink.local_addr;
    let series = |name: &str| format!("promlink_canary_{name}{{route=\"default\"}}");

    // Visible: the latency is recorded, nothing is missing.
    wait_metric(
        &http,
        addr,
        &series("latency_seconds_count"),
        2.0,
        Duration::from_secs(20),
    )
    .await;
    assert!(common::metric(&http, addr, &series("last_visible_timestamp_seconds")).await > 1.7e9);
    assert_eq!(
        common::metric(&http, addr, &series("missing_total")).await,
        0.0
    );
    let stats = azure.private().stats();
    assert!(
        stats.accepted_requests >= 2 && stats.queries >= 2,
        "{stats:?}"
    );
    assert_eq!(azure.public.stats().requests, 0, "require: nothing public");

    // Without Monitoring Data Reader: 403, counted with its reason.
    azure.private().revoke_reader(CLIENT);
    let forbidden = "promlink_canary_query_errors_total{route=\"default\",reason=\"forbidden\"}";
    wait_metric(&http, addr, forbidden, 1.0, Duration::from_secs(10)).await;
    azure.private().grant_reader(CLIENT);
    let visible_before = common::metric(&http, addr, &series("latency_seconds_count")).await;
    wait_metric(
        &http,
        addr,
        &series("latency_seconds_count"),
        visible_before + 1.0,
        Duration::from_secs(10),
    )
    .await;

    // Silent loss: the DCE answers 200 and keeps nothing; each canary goes missing after
    // canary_timeout.
    azure.private().set_silent_loss(true);
    wait_metric(
        &http,
        addr,
        &series("missing_total"),
        1.0,
        Duration::from_secs(15),
    )
    .await;
    assert!(azure.private().stats().silently_lost_requests >= 1);
    // The alert fires in-process at the first missing canary, and resolves once one is
    // visible again.
    let firing = |promlink: &promlink::serve::Running| {
        promlink
            .alerter
            .firing()
            .iter()
            .any(|a| a.name == "PromlinkIngestionNotVisible")
    };
    wait_for("PromlinkIngestionNotVisible to fire", || firing(&promlink)).await;
    if let Some((_, base)) = &alertmanager {
        let url =
            format!("{base}/api/v2/alerts?filter=alertname%3D%22PromlinkIngestionNotVisible%22");
        let listed = e2e::wait_for(
            "PromlinkIngestionNotVisible in Alertmanager",
            Duration::from_secs(15),
            Duration::from_millis(200),
            || async {
                let v: serde_json::Value = serde_json::from_str(&e2e::get_text(&http, &url).await?)
                    .map_err(|e| e.to_string())?;
                match v.as_array() {
                    Some(a) if !a.is_empty() => Ok(a[0].clone()),
                    _ => Err(format!("not listed yet: {v}")),
                }
            },
        )
        .await;
        assert_eq!(listed["labels"]["severity"], "critical", "{listed}");
        assert!(
            listed["annotations"]["description"]
                .as_str()
                .is_some_and(|d| d.contains("promlink_canary") && d.contains("not visible")),
            "{listed}"
        );
    }
    azure.private().set_silent_loss(false);
    wait_for("PromlinkIngestionNotVisible to resolve", || {
        !firing(&promlink)
    })
    .await;

    // While the DCE refuses writes, the canaries wait in the queue, not accepted upstream: the
    // read-back sends no query for them.
    azure
        .private()
        .set_outage(Some(promlink::emulator::dce::Fault::status(503)));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let queries = azure.private().stats().queries;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        azure.private().stats().queries,
        queries,
        "no query while no canary was accepted upstream"
    );
    azure.private().set_outage(None);
    let visible = common::metric(&http, addr, &series("latency_seconds_count")).await;
    wait_metric(
        &http,
        addr,
        &series("latency_seconds_count"),
        visible + 1.0,
        Duration::from_secs(10),
    )
    .await;

    promlink.shutdown.cancel();
    promlink.wait().await;
    azure.shutdown().await;
    if let Some((mut am, _)) = alertmanager {
        am.terminate(Duration::from_secs(10));
    }
}

/// Any PromQL endpoint answers the read-back: a real Prometheus 2.42 receives promlink's remote
/// write (the canary with the rest) and answers its query. The test fails under CI=true when
/// Prometheus is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_answers_the_read_back() {
    let Some(bin) = e2e::prom::prometheus_bin("canary", "the canary read back from Prometheus")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let port = e2e::free_port();
    let mut prometheus = e2e::prom::start_receiver(&bin, dir.path(), "receiver", port, &http).await;
    let base = format!("http://127.0.0.1:{port}");
    let settings = Settings {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        ingestion_url: Some(format!("{base}/api/v1/write")),
        identity: Some(promlink::identity::IdentityKind::None),
        allow_plain_http: Some(true),
        flush_interval: Some(Duration::from_millis(50)),
        query_url: Some(base.parse().unwrap()),
        canary_interval: Some(Duration::from_millis(500)),
        canary_timeout: Some(Duration::from_secs(10)),
        cluster: Some("c1".into()),
        shutdown_quiet_period: Some(Duration::ZERO),
        ..Settings::default()
    };
    let promlink = promlink::serve::start(settings.resolve().unwrap())
        .await
        .unwrap();
    wait_metric(
        &http,
        promlink.local_addr,
        "promlink_canary_latency_seconds_count{route=\"default\"}",
        2.0,
        Duration::from_secs(20),
    )
    .await;
    // The canary as Prometheus stores it: the route, the instance and the cluster label.
    let data = e2e::prom::api(
        &http,
        &base,
        "/api/v1/query",
        &[("query", "promlink_canary")],
    )
    .await;
    let metric = &data["result"][0]["metric"];
    assert_eq!(metric["promlink_route"], "default", "{data}");
    assert_eq!(metric["cluster"], "c1", "{data}");
    assert!(metric["promlink_instance"].is_string(), "{data}");
    assert_eq!(
        common::metric(
            &http,
            promlink.local_addr,
            "promlink_canary_missing_total{route=\"default\"}"
        )
        .await,
        0.0
    );
    promlink.shutdown.cancel();
    promlink.wait().await;
    prometheus.terminate(Duration::from_secs(10));
}

/// The query endpoint has its own private endpoint. Under `query_private_link: require` the
/// query goes only to an address its DNS verified as private (here the name resolves through
/// `privatelink.eastus.prometheus.monitor.azure.com` to 127.0.0.2); once DNS answers the public
/// shape (127.0.0.3), no query is sent there, the refusal is counted with reason
/// `private_link` and the verdict is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_private_link_require_queries_only_a_verified_private_endpoint() {
    const QUERY_HOST: &str = "ws-1.eastus.prometheus.monitor.azure.com";
    let azure = EmulatedAzure::start(AzureOptions {
        extra_names: vec![QUERY_HOST.into()],
        ..AzureOptions::default()
    })
    .await
    .unwrap();
    azure.private().grant_reader(CLIENT);
    azure.public.grant_reader(CLIENT);
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        query_url: Some(
            format!("https://{QUERY_HOST}:{}", azure.port)
                .parse()
                .unwrap(),
        ),
        query_private_link: Some(Mode::Require),
        canary_interval: Some(Duration::from_millis(500)),
        canary_timeout: Some(Duration::from_secs(30)),
        ..common::private_link_settings(dir.path(), &azure, Mode::Require)
    };
    let promlink = promlink::serve::start(settings.resolve().unwrap())
        .await
        .unwrap();
    let (http, addr) = (reqwest::Client::new(), promlink.local_addr);
    let verdict = |v: &str| {
        format!("promlink_canary_query_private_link_verdict{{route=\"default\",verdict=\"{v}\"}}")
    };
    wait_metric(
        &http,
        addr,
        "promlink_canary_latency_seconds_count{route=\"default\"}",
        1.0,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(common::metric(&http, addr, &verdict("private")).await, 1.0);
    assert!(azure.private().stats().queries >= 1);

    // The query endpoint's name now answers publicly.
    azure.dns.set_public(QUERY_HOST, PUBLIC_ENDPOINT, 1);
    wait_metric(
        &http,
        addr,
        &verdict("public"),
        1.0,
        Duration::from_secs(10),
    )
    .await;
    let refused = "promlink_canary_query_errors_total{route=\"default\",reason=\"private_link\"}";
    wait_metric(&http, addr, refused, 2.0, Duration::from_secs(10)).await;
    assert_eq!(common::metric(&http, addr, &verdict("private")).await, 0.0);
    assert_eq!(
        azure.public.stats().requests,
        0,
        "nothing reaches the public endpoint under require"
    );
    promlink.shutdown.cancel();
    promlink.wait().await;
    azure.shutdown().await;
}
