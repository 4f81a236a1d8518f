use super::*;
use crate::emulator::dce::{DceConfig, DceEmulator, DceTls, Fault};
use crate::emulator::entra::{EntraConfig, EntraEmulator, RegisteredClient};
use crate::emulator::tls::TestCa;
use std::sync::Arc;

fn small(url: &str) -> LoadgenConfig {
    LoadgenConfig {
        url: url.to_owned(),
        series: 50,
        rounds: 6,
        shards: 3,
        samples_per_request: 40,
        min_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        deadline: Duration::from_secs(30),
        ..LoadgenConfig::default()
    }
}

#[test]
fn loadgen_series_labels_are_distinct_sorted_and_kubernetes_shaped() {
    let mut seen = std::collections::HashSet::new();
    for i in 0..5000 {
        let labels = series_labels(i);
        assert_eq!(labels.len(), 9);
        assert!(labels.windows(2).all(|w| w[0].name < w[1].name), "sorted");
        assert!(
            seen.insert(checksum::series_hash(&labels)),
            "series {i} collides"
        );
    }
    let labels = series_labels(0);
    let names: Vec<&str> = labels.iter().map(|l| l.name.as_str()).collect();
    for expected in [
        "__name__",
        "namespace",
        "pod",
        "container",
        "instance",
        "job",
        "node",
    ] {
        assert!(names.contains(&expected), "{expected}");
    }
}

#[tokio::test]
async fn loadgen_plain_http_end_to_end_checksums_match() {
    let dce = DceEmulator::start(DceConfig {
        tls: DceTls::Plain,
        ..DceConfig::default()
    })
    .await
    .expect("dce");
    let mut cfg = small(dce.url());
    cfg.stale_every = Some(7);
    let report = run(cfg, CancellationToken::new()).await.expect("run");
    assert!(!report.incomplete);
    assert_eq!(report.samples, 300);
    assert_eq!(report.samples_acked, 300);
    assert_eq!(report.requests_failed, 0);
    assert_eq!(report.checksum_acked, report.checksum_sent);
    let stats = dce.stats();
    assert_eq!(stats.checksum, report.checksum_acked);
    assert_eq!(stats.samples, 300);
    assert_eq!(stats.distinct_series, 50);
    assert_eq!(
        stats.out_of_order_samples, 0,
        "shards keep per-series order"
    );
    assert_eq!(stats.accepted_requests, report.requests_acked);
    dce.shutdown().await;
}

#[tokio::test]
async fn loadgen_https_with_entra_token_and_retries() {
    let ca = TestCa::new("loadgen test CA").expect("ca");
    let entra = EntraEmulator::start_with_ca(
        EntraConfig {
            clients: vec![RegisteredClient::with_secret("t", "app", "pw")],
            ..EntraConfig::default()
        },
        &ca,
    )
    .await
    .expect("entra");
    let dce = DceEmulator::start(DceConfig {
        tls: DceTls::from_ca(&ca).expect("tls"),
        auth: Some(entra.verifier()),
        granted: vec!["app".to_owned()],
        ..DceConfig::default()
    })
    .await
    .expect("dce");
    // Get a token over the wire, like promlink would.
    let http = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(ca.cert_pem().as_bytes()).expect("pem"),
        )
        .no_proxy()
        .build()
        .expect("client");
    let resp = http
        .post(entra.token_url("t"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&client_id=app&client_secret=pw&scope=https%3A%2F%2Fmonitor.azure.com%2F.default")
        .send()
        .await
        .expect("token");
    let json: serde_json::Value =
        serde_json::from_slice(&resp.bytes().await.expect("body")).expect("json");
    let token = json["access_token"].as_str().expect("token").to_owned();

    dce.push_fault(Fault::retry_after(429, 0));
    dce.push_fault(Fault::status(503));
    dce.push_fault(Fault::Reset);
    let mut cfg = small(dce.url());
    // One sender: over HTTP/2 all senders share one connection, and the scripted reset would
    // also cut a concurrent request's 429 answer, making the counts below a race.
    cfg.shards = 1;
    cfg.ca_pem = Some(ca.cert_pem().to_owned());
    cfg.bearer_token = Some(token);
    let report = run(cfg, CancellationToken::new()).await.expect("run");
    assert_eq!(report.requests_failed, 0, "{report:?}");
    assert_eq!(report.samples_acked, 300);
    assert_eq!(report.attempts, report.requests + 3);
    assert_eq!(report.statuses.get(&429), Some(&1));
    assert_eq!(report.statuses.get(&503), Some(&1));
    assert_eq!(report.transport_errors, 1);
    assert_eq!(dce.stats().checksum, report.checksum_acked);
    assert_eq!(report.checksum_acked, report.checksum_sent);
    dce.shutdown().await;
    entra.shutdown().await;
}

#[tokio::test]
async fn loadgen_checksum_shows_loss_and_duplication() {
    let dce = DceEmulator::start(DceConfig {
        tls: DceTls::Plain,
        ..DceConfig::default()
    })
    .await
    .expect("dce");
    // Accepted but answered 500: the sender retries, the receiver gets the data twice.
    dce.push_fault(Fault::AcceptThen(500));
    let report = run(small(dce.url()), CancellationToken::new())
        .await
        .expect("run");
    assert_eq!(report.checksum_acked, report.checksum_sent);
    let stats = dce.stats();
    assert_ne!(
        stats.checksum, report.checksum_acked,
        "duplication must show"
    );
    assert!(stats.checksum.samples > report.samples_acked);
    assert!(stats.repeated_timestamp_samples > 0);
    dce.reset();

    // A 400 drops a request: loss shows on both sides.
    dce.push_fault(Fault::status(400));
    let report = run(small(dce.url()), CancellationToken::new())
        .await
        .expect("run");
    assert_eq!(report.requests_failed, 1);
    assert_ne!(
        report.checksum_acked, report.checksum_sent,
        "loss must show"
    );
    assert_eq!(dce.stats().checksum, report.checksum_acked);
    dce.shutdown().await;
}

#[tokio::test]
async fn loadgen_is_bounded_by_attempts_deadline_and_shutdown() {
    let dce = DceEmulator::start(DceConfig {
        tls: DceTls::Plain,
        ..DceConfig::default()
    })
    .await
    .expect("dce");
    for _ in 0..100 {
        dce.push_fault(Fault::status(503));
    }
    let mut cfg = small(dce.url());
    cfg.series = 3;
    cfg.rounds = 1;
    cfg.shards = 1;
    cfg.max_attempts = 3;
    let report = run(cfg.clone(), CancellationToken::new())
        .await
        .expect("run");
    assert_eq!(report.attempts, 3);
    assert_eq!(report.requests_failed, 1);
    assert_eq!(report.samples_acked, 0);

    cfg.max_attempts = 1000;
    cfg.deadline = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let report = run(cfg.clone(), CancellationToken::new())
        .await
        .expect("run");
    assert!(report.incomplete);
    assert!(started.elapsed() < Duration::from_secs(5));

    let shutdown = CancellationToken::new();
    shutdown.cancel();
    cfg.deadline = Duration::from_secs(30);
    let report = run(cfg, shutdown).await.expect("run");
    assert!(report.incomplete);
    assert_eq!(report.samples_acked, 0);
    dce.shutdown().await;
}

#[tokio::test]
async fn loadgen_rejects_unusable_config() {
    let cfg = LoadgenConfig {
        shards: 0,
        ..LoadgenConfig::default()
    };
    assert!(matches!(
        run(cfg, CancellationToken::new()).await,
        Err(LoadgenError::Config(_))
    ));
    let cfg = LoadgenConfig {
        ca_pem: Some("not pem".into()),
        ..LoadgenConfig::default()
    };
    assert!(run(cfg, CancellationToken::new()).await.is_err());
}

#[tokio::test]
async fn loadgen_paced_run_keeps_its_schedule_and_times_each_request() {
    let mut cfg = small("http://127.0.0.1:1/");
    cfg.rate = Some(1000.0);
    let load = prepare(&cfg).expect("prepare");
    let arrivals = Arc::new(crate::emulator::dce::Arrivals::new(&load.probes()));
    let dce = DceEmulator::start(DceConfig {
        tls: DceTls::Plain,
        arrivals: Some(arrivals.clone()),
        ..DceConfig::default()
    })
    .await
    .expect("dce");
    cfg.url = dce.url().to_owned();
    let before = Instant::now();
    let report = run_prepared(cfg, load, CancellationToken::new())
        .await
        .expect("run");
    assert_eq!(report.samples_acked, 300);
    // 3 shards x 3 requests of at most 40 samples at 1000 samples/s: the last request (slot 8)
    // is due 8 x 40 ms after the start.
    assert_eq!(report.requests_acked, 9);
    assert!(
        report.elapsed >= Duration::from_millis(320),
        "paced: {:?}",
        report.elapsed
    );
    assert_eq!(report.timings.len(), 9);
    let mut sent: Vec<Instant> = report.timings.iter().map(|t| t.sent).collect();
    sent.sort();
    for (k, at) in sent.iter().enumerate() {
        // Slot k is due k x 40 ms after the schedule's start (which is after `before`), and
        // each request goes no earlier than its slot, so the k-th to go went at least that
        // late. A late wake-up only makes it later, so this holds on a loaded machine too.
        let due = Duration::from_millis(40) * k as u32;
        assert!(
            *at - before >= due,
            "request {k} went after {:?}",
            *at - before
        );
    }
    for t in &report.timings {
        let arrived = arrivals.get(t.probe.expect("probe")).expect("arrived");
        assert!(arrived >= t.sent && arrived <= t.sent + t.acked, "{t:?}");
    }
    dce.shutdown().await;
}

#[test]
fn loadgen_expect_cluster_sends_without_it_and_checksums_with_it() {
    let mut cfg = small("http://127.0.0.1:1/");
    cfg.expect_cluster = Some("c1".to_owned());
    let load = prepare(&cfg).expect("prepare");
    let mut total = Checksum::new();
    let mut expected = Checksum::new();
    for p in load.shards.iter().flatten() {
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&p.body)
            .expect("snappy");
        let mut request = WriteRequest::decode(raw.as_slice()).expect("protobuf");
        for ts in &mut request.timeseries {
            assert!(ts.labels.iter().all(|l| l.name != "cluster"));
            ts.labels.push(Label {
                name: "cluster".to_owned(),
                value: "c1".to_owned(),
            });
            ts.labels.sort_by(|a, b| a.name.cmp(&b.name));
        }
        expected.merge(&Checksum::of_request(&request));
        total.merge(&p.checksum);
    }
    assert_eq!(total.samples, 300);
    assert_eq!(total, expected);
}
