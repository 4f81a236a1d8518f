//! The upstream retry matrix and per-series order, end to end against the DCE emulator.

mod common;

use std::time::Duration;

use common::{fixture, Rig, RigOptions, CLIENT};
use promlink::emulator::dce::Fault;
use promlink::loadgen::{self, LoadgenConfig};
use promlink::proto::v1;

const V1: &str = "application/x-protobuf";
const FIXTURE: &str = "prom242_rw1_500samples_a.snappy";

fn one_shard() -> RigOptions {
    // One shard and one batch per request, so each fault meets exactly one batch.
    RigOptions {
        shards: 1,
        ..RigOptions::default()
    }
}

/// Retryable answers: the batch is sent again and arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_answers_are_retried_until_delivered() {
    let table: Vec<(&str, Fault, &str)> = vec![
        ("500", Fault::status(500), "server_error"),
        ("503", Fault::status(503), "server_error"),
        ("408", Fault::status(408), "timeout"),
        ("429 Retry-After", Fault::retry_after(429, 1), "throttled"),
        ("connection reset", Fault::Reset, "connection"),
    ];
    let rig = Rig::start(one_shard()).await;
    let mut delivered = 0;
    for (name, fault, reason) in table {
        let before = rig
            .metric(&format!(
                "promlink_upstream_retries_total{{reason=\"{reason}\"}}"
            ))
            .await;
        rig.dce.push_fault(fault.clone());
        rig.dce.push_fault(fault);
        assert_eq!(rig.post(fixture(FIXTURE), V1).await.status(), 204, "{name}");
        delivered += 500;
        rig.wait_for(name, Duration::from_secs(15), |s| s.samples >= delivered)
            .await;
        assert_eq!(
            rig.dce.stats().samples,
            delivered,
            "{name}: delivered exactly once"
        );
        let after = rig
            .metric(&format!(
                "promlink_upstream_retries_total{{reason=\"{reason}\"}}"
            ))
            .await;
        assert_eq!(
            after - before,
            2.0,
            "{name}: two retries counted under {reason}"
        );
    }
    assert_eq!(
        rig.metric("promlink_samples_dropped_total{reason=\"rejected_400\"}")
            .await,
        0.0
    );
    rig.stop().await;
}

/// Permanent refusals drop the batch, count it by reason, and the next batch flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_refusals_drop_and_count_by_reason() {
    let rig = Rig::start(one_shard()).await;
    for (code, reason) in [
        (400, "rejected_400"),
        (404, "rejected_404"),
        (422, "rejected_422"),
        (409, "rejected_4xx"),
    ] {
        rig.dce.push_fault(Fault::status(code));
        assert_eq!(rig.post(fixture(FIXTURE), V1).await.status(), 204);
        let series = format!("promlink_samples_dropped_total{{reason=\"{reason}\"}}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while rig.metric(&series).await < 500.0 {
            assert!(tokio::time::Instant::now() < deadline, "{code} not dropped");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(rig.metric(&series).await, 500.0, "{code}");
    }
    assert_eq!(rig.dce.stats().samples, 0, "nothing dropped was delivered");
    // The pipeline still flows after drops.
    assert_eq!(rig.post(fixture(FIXTURE), V1).await.status(), 204);
    rig.wait_for("delivery after drops", Duration::from_secs(10), |s| {
        s.samples == 500
    })
    .await;
    rig.stop().await;
}

/// 413 splits the batch; both halves arrive, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_splits_the_batch() {
    // A long flush interval: both requests below end up in one batch (a partial batch goes
    // after a tenth of it without pushes, 500 ms, which the two back-to-back posts are well
    // within even on a loaded machine).
    let rig = Rig::start(RigOptions {
        flush_interval: Duration::from_secs(5),
        ..one_shard()
    })
    .await;
    rig.dce.push_fault(Fault::status(413));
    // The same 100 series twice, the second request one timestamp later: the batch's first
    // half holds the older samples, so sending the halves in the wrong order would show as
    // out-of-order samples at the DCE.
    let bodies = [1_000i64, 2_000].map(|ts| {
        let req = v1::WriteRequest {
            timeseries: (0..100)
                .map(|i| v1::TimeSeries {
                    labels: vec![
                        v1::Label {
                            name: "__name__".into(),
                            value: "split_test".into(),
                        },
                        v1::Label {
                            name: "i".into(),
                            value: i.to_string(),
                        },
                    ],
                    samples: vec![v1::Sample {
                        value: i as f64,
                        timestamp: ts,
                    }],
                    ..Default::default()
                })
                .collect(),
            metadata: vec![],
        };
        snap::raw::Encoder::new()
            .compress_vec(&prost::Message::encode_to_vec(&req))
            .unwrap()
    });
    for body in bodies {
        assert_eq!(rig.post(body, V1).await.status(), 204);
    }
    rig.wait_for("both halves", Duration::from_secs(10), |s| s.samples == 200)
        .await;
    let stats = rig.dce.stats();
    assert_eq!(stats.accepted_requests, 2, "one 413, then two halves");
    assert_eq!(stats.out_of_order_samples, 0, "the older half went first");
    rig.stop().await;
}

/// 401: the token is refreshed at once and the batch delivered. 403: held and retried (role
/// assignment still propagating) until the role is granted, then delivered; nothing dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_refreshes_the_token_and_forbidden_holds_data_until_granted() {
    let rig = Rig::start(RigOptions {
        grant: false,
        ..one_shard()
    })
    .await;
    // 403 until the role is granted.
    assert_eq!(rig.post(fixture(FIXTURE), V1).await.status(), 204);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while rig.dce.stats().rejected.get(&403).copied().unwrap_or(0) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no 403 retries: {:?}",
            rig.dce.stats()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(rig.dce.stats().samples, 0);
    rig.dce.grant(CLIENT);
    rig.wait_for("delivery after grant", Duration::from_secs(10), |s| {
        s.samples == 500
    })
    .await;
    assert_eq!(
        rig.metric("promlink_samples_dropped_total{reason=\"rejected_4xx\"}")
            .await,
        0.0
    );

    // 401: a fresh token is fetched.
    let issued = rig.entra.issued(CLIENT);
    rig.dce.push_fault(Fault::status(401));
    assert_eq!(rig.post(fixture(FIXTURE), V1).await.status(), 204);
    rig.wait_for("delivery after 401", Duration::from_secs(10), |s| {
        s.samples == 1000
    })
    .await;
    // The refresh runs beside the retry (the old token stays usable until the new one arrives).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while rig.entra.issued(CLIENT) == issued {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a 401 must trigger a token refresh"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    rig.stop().await;
}

/// Tokens are refreshed before they expire: a run longer than two token lifetimes sees no 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_refreshed_before_expiry() {
    let rig = Rig::start(RigOptions {
        token_lifetime: Duration::from_secs(3),
        ..one_shard()
    })
    .await;
    for i in 1..=14u64 {
        assert_eq!(rig.post(fixture(FIXTURE), V1).await.status(), 204);
        rig.wait_for("delivery", Duration::from_secs(10), |s| {
            s.samples == 500 * i
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let stats = rig.dce.stats();
    assert_eq!(
        stats.rejected.get(&401),
        None,
        "an expired token was sent: {stats:?}"
    );
    assert!(
        rig.entra.issued(CLIENT) >= 3,
        "only {} tokens in 7 s of 3 s tokens",
        rig.entra.issued(CLIENT)
    );
    rig.stop().await;
}

/// Per-series order under concurrency (4 senders, 4 upstream shards, small batches) and
/// retries (a burst of 5xx, 429 and resets): every sample arrives once, in order, and the
/// checksum over (labels, timestamp, value bits) matches what the sender had acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_series_order_survives_concurrency_and_retries() {
    let rig = Rig::start(RigOptions {
        shards: 4,
        max_samples_per_request: 300,
        flush_interval: Duration::from_millis(20),
        keep_accepted: 0,
        // A request the emulator never answers (seen once in CI: 200 series stalled for the
        // whole 30 s wait, cause not found) is given up after 5 s and retried, not after 30 s.
        extra: promlink::config::Settings {
            request_timeout: Some(Duration::from_secs(5)),
            ..Default::default()
        },
        ..RigOptions::default()
    })
    .await;
    for i in 0..60 {
        rig.dce.push_fault(match i % 4 {
            0 => Fault::status(503),
            1 => Fault::retry_after(429, 0),
            2 => Fault::Reset,
            _ => Fault::status(500),
        });
    }
    let report = send_20k(&rig, Some(97)).await;
    rig.wait_for("all samples", Duration::from_secs(60), |s| {
        s.samples >= 20_000
    })
    .await;
    let stats = rig.dce.stats();
    assert_eq!(rig.dce.pending_faults(), 0, "every fault was served");
    assert_eq!(stats.samples, 20_000);
    assert_eq!(stats.out_of_order_samples, 0, "per-series order broken");
    assert_eq!(stats.repeated_timestamp_samples, 0, "duplicates");
    assert_eq!(
        stats.checksum, report.checksum_acked,
        "checksum over labels, timestamps, value bits"
    );
    rig.stop().await;
}

/// Certificates are verified: without the emulator's CA the upstream is unreachable, and with it
/// the same request goes through. There is no switch to skip verification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_is_verified() {
    use promlink::emulator::dce::{DceConfig, DceEmulator};
    let dce = DceEmulator::start(DceConfig::default()).await.unwrap();
    let untrusting = promlink::upstream::client::build(None, Duration::from_secs(5)).unwrap();
    let err = untrusting.get(dce.url()).send().await.unwrap_err();
    let chain = promlink::outbound::error_chain(&err);
    assert!(chain.to_lowercase().contains("certificate"), "{chain}");

    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, dce.ca_pem().unwrap()).unwrap();
    let trusting = promlink::upstream::client::build(Some(&ca), Duration::from_secs(5)).unwrap();
    let resp = trusting.get(dce.url()).send().await.unwrap();
    assert_eq!(resp.status(), 405, "an HTTP answer over verified TLS");
    dce.shutdown().await;
}

/// `max_sample_age` drops old samples before sending (counted `too_old`) and keeps the rest;
/// `queue_max_age` drops what waited too long in the queue (counted `expired`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_samples_and_expired_batches_are_dropped_and_counted() {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let rig = Rig::start(RigOptions {
        max_sample_age: Some(Duration::from_secs(3600)),
        queue_max_age: Some(Duration::from_secs(2)),
        ..one_shard()
    })
    .await;
    let send = |start_ms: i64| {
        loadgen::run(
            LoadgenConfig {
                url: rig.write_url(),
                series: 100,
                rounds: 2,
                shards: 1,
                start_ms: Some(start_ms),
                interval_ms: 60_000,
                ..LoadgenConfig::default()
            },
            tokio_util::sync::CancellationToken::new(),
        )
    };
    // Two rounds two hours old: all too old. Two fresh rounds: delivered.
    assert_eq!(
        send(now_ms - 2 * 3600 * 1000).await.unwrap().samples_acked,
        200
    );
    let fresh = send(now_ms - 60_000).await.unwrap();
    assert_eq!(fresh.samples_acked, 200);
    rig.wait_for("fresh samples", Duration::from_secs(10), |s| {
        s.samples == 200
    })
    .await;
    assert_eq!(rig.dce.stats().checksum, fresh.checksum_acked);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while rig
        .metric("promlink_samples_dropped_total{reason=\"too_old\"}")
        .await
        < 200.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "old samples not counted"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // An outage longer than queue_max_age: the waiting batch expires.
    rig.dce.set_outage(Some(Fault::status(503)));
    assert_eq!(send(now_ms).await.unwrap().samples_acked, 200);
    tokio::time::sleep(Duration::from_secs(3)).await;
    rig.dce.set_outage(None);
    // Retried for more than 2 s: dropped as expired, never delivered.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while rig
        .metric("promlink_samples_dropped_total{reason=\"expired\"}")
        .await
        < 200.0
    {
        assert!(tokio::time::Instant::now() < deadline, "nothing expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        rig.dce.stats().samples,
        200,
        "expired data is not delivered"
    );
    rig.stop().await;
}

/// `max_requests_per_minute: 600` holds at the upstream: after the one-second burst (10
/// requests), requests arrive one per 100 ms, measured at the DCE emulator. Nothing is dropped:
/// the requests wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_per_minute_is_held_at_the_upstream() {
    let rig = Rig::start(RigOptions {
        // 10 samples a request: 400 samples make 40 requests.
        max_samples_per_request: 10,
        extra: promlink::config::Settings {
            max_requests_per_minute: Some(600),
            ..Default::default()
        },
        ..RigOptions::default()
    })
    .await;
    let body = common::one_sample_body("rate_test", "rate", 0..400, 1_000);
    let posted = std::time::Instant::now();
    assert_eq!(rig.post(body, V1).await.status(), 204);
    rig.wait_for("every sample delivered", Duration::from_secs(20), |s| {
        s.samples == 400
    })
    .await;
    let times = rig.dce.post_times();
    assert_eq!(times.len(), 40, "one request per 10 samples");
    let first = times[0];
    let at: Vec<Duration> = times.iter().map(|t| t.duration_since(first)).collect();
    // Any one-second window holds at most the burst plus one second's rate (10 + 10), and two
    // more for arrival jitter: a request reaches the DCE some time after it took its token (the
    // first ones after the connection's TLS handshake), so a late one can share a window with
    // later ones. Without the limit, all 40 would arrive within a few milliseconds.
    for (i, start) in at.iter().enumerate() {
        let within = at[i..]
            .iter()
            .take_while(|t| **t < *start + Duration::from_secs(1))
            .count();
        assert!(
            within <= 22,
            "{within} requests within 1 s of {start:?}: {at:?}"
        );
    }
    // From the burst on, requests are spaced by the rate: the 30 after it take 3 s from the
    // post at least (timed from before the post, which no request can precede, so a late
    // first arrival cannot shorten it).
    let last = times[39].duration_since(posted);
    assert!(
        last >= Duration::from_millis(2_950),
        "40 requests at 600 a minute took only {last:?}: {at:?}"
    );
    let waited = rig
        .metric("promlink_upstream_rate_limited_seconds_total")
        .await;
    assert!(waited > 1.0, "waited {waited} s in all");
    assert_eq!(
        rig.metric("promlink_upstream_requests_per_minute_limit")
            .await,
        600.0
    );
    eprintln!(
        "rate: 40 requests in {:?} at max_requests_per_minute 600 (waited {waited:.1} s in all)",
        at[39]
    );
    rig.stop().await;
}

/// A route with `ingestion_urls` spreads its series over several DCRs: every series goes to
/// exactly one of them, always the same one, in order, and each DCR gets a share. Each DCR has
/// its own queue and shard workers, and its metrics carry `url`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_spreads_its_series_over_several_dcrs_each_series_to_one() {
    let rig = Rig::start(RigOptions {
        spread: 3,
        max_samples_per_request: 300,
        flush_interval: Duration::from_millis(20),
        ..RigOptions::default()
    })
    .await;
    send_20k(&rig, None).await;
    let dces: Vec<_> = std::iter::once(&rig.dce).chain(&rig.more_dces).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while dces.iter().map(|d| d.stats().samples).sum::<u64>() < 20_000 {
        assert!(tokio::time::Instant::now() < deadline, "not all delivered");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut seen = std::collections::HashMap::new();
    for (i, d) in dces.iter().enumerate() {
        let stats = d.stats();
        assert_eq!(stats.out_of_order_samples, 0, "DCR {i}: order broken");
        assert_eq!(stats.repeated_timestamp_samples, 0, "DCR {i}: duplicates");
        let mut series = std::collections::HashSet::new();
        for req in d.accepted() {
            for ts in &req.timeseries {
                let key: Vec<(String, String)> = ts
                    .labels
                    .iter()
                    .map(|l| (l.name.clone(), l.value.clone()))
                    .collect();
                if let Some(other) = seen.insert(key.clone(), i) {
                    assert_eq!(other, i, "{key:?} went to DCR {other} and DCR {i}");
                }
                series.insert(key);
            }
        }
        // 2000 series over 3: each DCR gets a share, and every sample of its series.
        assert!(
            (400..1000).contains(&series.len()),
            "DCR {i} got {} series",
            series.len()
        );
        assert_eq!(stats.samples, 10 * series.len() as u64, "DCR {i}");
        eprintln!("spread: DCR {i} got {} series", series.len());
    }
    assert_eq!(seen.len(), 2000, "every series arrived");
    let url = dces[2].url().split('?').next().unwrap().to_string();
    let sent = rig
        .metric(&format!(
            "promlink_samples_forwarded_total{{route=\"default\",url=\"{url}\"}}"
        ))
        .await;
    assert_eq!(sent, dces[2].stats().samples as f64);
    rig.stop().await;
}

/// 2,000 series x 10 rounds from 4 concurrent sender shards, every sample acknowledged.
async fn send_20k(rig: &Rig, stale_every: Option<u64>) -> loadgen::Report {
    let report = loadgen::run(
        LoadgenConfig {
            url: rig.write_url(),
            series: 2000,
            rounds: 10,
            shards: 4,
            samples_per_request: 500,
            stale_every,
            deadline: Duration::from_secs(60),
            ..LoadgenConfig::default()
        },
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(report.samples_acked, 20_000, "{report:?}");
    report
}

/// A whole-upstream outage that begins while a batch is being isolated (it kept failing while
/// others were accepted) does not split that batch down to single messages, each sent at once:
/// the halves wait for evidence of their own (another batch accepted after the split) and
/// otherwise retry with backoff like any batch. Requests during the outage stay within what
/// backoff allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_during_isolation_does_not_burst_requests() {
    let rig = Rig::start(RigOptions {
        shards: 2,
        max_samples_per_request: 5000,
        flush_interval: Duration::from_millis(50),
        ..RigOptions::default()
    })
    .await;
    // One request of 1,000 series, one of them refused by a content filter: its batch fails
    // while the healthy writes below are accepted, so it is isolated.
    rig.dce
        .refuse_containing(Some((b"poison_metric".as_slice(), 503)));
    let mixed = {
        use prost::Message as _;
        let mut req = v1::WriteRequest::default();
        for (name, ids) in [("healthy_metric", 0..999), ("poison_metric", 0..1)] {
            let one = common::one_sample_body(name, "mixed", ids, 1_000);
            let raw = snap::raw::Decoder::new().decompress_vec(&one).unwrap();
            req.timeseries
                .extend(v1::WriteRequest::decode(raw.as_slice()).unwrap().timeseries);
        }
        snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            .unwrap()
    };
    assert_eq!(rig.post(mixed, V1).await.status(), 204);
    // Its batch is cut alone (flush interval 50 ms) before the healthy writes start; each of
    // those has series of its own, so none waits behind the failing batch.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut writes = 0usize;
    while rig.metric("promlink_upstream_isolations_total").await < 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "never isolated");
        let healthy =
            common::one_sample_body("other_metric", "ok", writes * 10..writes * 10 + 10, 2_000);
        assert_eq!(rig.post(healthy, V1).await.status(), 204);
        writes += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The whole upstream fails from now on, for 3 s.
    rig.dce.set_outage(Some(Fault::status(503)));
    let before = rig.dce.stats().requests;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = rig.dce.stats().requests - before;
    rig.dce.set_outage(None);
    rig.dce.refuse_containing(None);
    // Backoff 20 ms doubling to 300 ms: about 12 attempts in 3 s per retrying batch; a few
    // batches may be retrying (the halves, other writes). The burst this guards against sent
    // one request per message: hundreds.
    assert!(during <= 100, "{during} requests in 3 s of outage");
    rig.wait_for("everything", Duration::from_secs(20), |s| {
        s.samples == 1_000 + 10 * writes as u64
    })
    .await;
    eprintln!("outage during isolation: {during} requests in 3 s");
    rig.stop().await;
}

/// Per-series order holds through routing: route `teams` takes the series of half the
/// namespaces (a copy, relabelled, `continue: true`), `default` takes every series, each with
/// its own queue and workers, while the upstream answers 503, 429 and resets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_series_order_survives_routing_and_fan_out() {
    let rig = Rig::start(RigOptions {
        max_samples_per_request: 300,
        flush_interval: Duration::from_millis(20),
        keep_accepted: 0,
        config_yaml: Some(
            "routes:\n  - name: teams\n    match: '{namespace=~\"team-[0-7]\"}'\n    continue: true\n    ingestion_url: {url}\n    write_relabel_configs:\n      - {target_label: copy, replacement: teams}\n  - name: default\n    ingestion_url: {url}\n"
                .into(),
        ),
        ..RigOptions::default()
    })
    .await;
    for i in 0..40 {
        rig.dce.push_fault(match i % 3 {
            0 => Fault::status(503),
            1 => Fault::retry_after(429, 0),
            _ => Fault::Reset,
        });
    }
    send_20k(&rig, None).await;
    let teams = (0..2000)
        .filter(|i| {
            loadgen::series_labels(*i).iter().any(|l| {
                l.name == "namespace"
                    && l.value.trim_start_matches("team-").parse::<u32>().unwrap() < 8
            })
        })
        .count() as u64;
    assert!((500..1500).contains(&teams), "{teams}");
    let want = 20_000 + 10 * teams;
    rig.wait_for("both routes' samples", Duration::from_secs(30), |s| {
        s.samples >= want
    })
    .await;
    let stats = rig.dce.stats();
    assert_eq!(stats.samples, want);
    assert_eq!(stats.out_of_order_samples, 0, "per-series order broken");
    assert_eq!(stats.repeated_timestamp_samples, 0, "duplicates");
    assert_eq!(stats.distinct_series, 2000 + teams);
    rig.stop().await;
}
