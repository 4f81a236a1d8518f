//! End to end through promlink: sender -> promlink -> DCE emulator (HTTPS, Entra tokens).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{fixture, Rig, RigOptions};
use promlink::emulator::dce::Fault;
use promlink::proto::{v1, v2};
use prost::Message;

const V1: &str = "application/x-protobuf";
const V2: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";
const STALE: u64 = 0x7ff0_0000_0000_0002;

fn decode(body: &[u8]) -> v1::WriteRequest {
    v1::WriteRequest::decode(
        snap::raw::Decoder::new()
            .decompress_vec(body)
            .unwrap()
            .as_slice(),
    )
    .unwrap()
}

/// Each series (labels as text) with its samples as (timestamp, value bits).
fn series_map(reqs: &[v1::WriteRequest]) -> BTreeMap<String, Vec<(i64, u64)>> {
    let mut m: BTreeMap<String, Vec<(i64, u64)>> = BTreeMap::new();
    for r in reqs {
        for ts in &r.timeseries {
            let key = ts
                .labels
                .iter()
                .map(|l| format!("{}={:?}", l.name, l.value))
                .collect::<Vec<_>>()
                .join(",");
            m.entry(key)
                .or_default()
                .extend(ts.samples.iter().map(|s| (s.timestamp, s.value.to_bits())));
        }
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_arrives_bit_for_bit() {
    let rig = Rig::start(RigOptions::default()).await;
    let names = [
        "prom242_rw1_100_stale_markers.snappy",
        "prom242_rw1_500samples_a.snappy",
        "prom242_rw1_500samples_b.snappy",
        "prom242_rw1_metadata_only.snappy",
        "prom242_rw1_mixed_stale_and_up0.snappy",
    ];
    let mut sent = Vec::new();
    for n in names {
        let body = fixture(n);
        let resp = rig.post(body.clone(), V1).await;
        assert_eq!(resp.status(), 204, "{n}: {}", resp.text().await.unwrap());
        sent.push(decode(&body));
    }
    // Counts from the fixtures' README: 1200 series and samples, 158 stale markers, 23 other
    // NaNs, 449 metadata entries.
    rig.wait_for("all fixtures", Duration::from_secs(20), |s| {
        s.samples >= 1200 && s.metadata >= 449
    })
    .await;
    let stats = rig.dce.stats();
    assert_eq!(
        (stats.samples, stats.series, stats.metadata),
        (1200, 1200, 449)
    );
    let got = rig.dce.accepted();
    assert_eq!(
        series_map(&got),
        series_map(&sent),
        "series, labels, timestamps and value bits"
    );
    let bits: Vec<u64> = got
        .iter()
        .flat_map(|r| {
            r.timeseries
                .iter()
                .flat_map(|t| t.samples.iter().map(|s| s.value.to_bits()))
        })
        .collect();
    assert_eq!(bits.iter().filter(|b| **b == STALE).count(), 158);
    assert_eq!(
        bits.iter()
            .filter(|b| f64::from_bits(**b).is_nan() && **b != STALE)
            .count(),
        23
    );
    let mut md_sent: Vec<_> = sent
        .iter()
        .flat_map(|r| r.metadata.iter().map(|m| m.encode_to_vec()))
        .collect();
    let mut md_got: Vec<_> = got
        .iter()
        .flat_map(|r| r.metadata.iter().map(|m| m.encode_to_vec()))
        .collect();
    md_sent.sort();
    md_got.sort();
    assert!(md_sent == md_got, "metadata forwarded unchanged");
    assert_eq!(rig.metric("promlink_samples_forwarded_total").await, 1200.0);
    assert_eq!(
        rig.metric("promlink_samples_received_total{protocol=\"v1\"}")
            .await,
        1200.0
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_2_is_translated_and_counted_in_headers() {
    let rig = Rig::start(RigOptions::default()).await;
    let symbols: Vec<String> = ["", "__name__", "rpc_total", "job", "api", "Requests.", "le"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let req = v2::Request {
        symbols,
        timeseries: vec![
            v2::TimeSeries {
                labels_refs: vec![1, 2, 3, 4],
                samples: vec![
                    v2::Sample {
                        value: 1.0,
                        timestamp: 1_000,
                        start_timestamp: 10,
                    },
                    v2::Sample {
                        value: 2.0,
                        timestamp: 2_000,
                        start_timestamp: 10,
                    },
                ],
                exemplars: vec![v2::Exemplar {
                    labels_refs: vec![3, 4],
                    value: 1.0,
                    timestamp: 1_000,
                }],
                metadata: Some(v2::Metadata {
                    r#type: 1,
                    help_ref: 5,
                    unit_ref: 0,
                }),
                ..Default::default()
            },
            v2::TimeSeries {
                labels_refs: vec![1, 2, 3, 6],
                histograms: vec![v2::Histogram {
                    count: Some(v2::histogram::Count::CountInt(2)),
                    sum: 3.0,
                    schema: 0,
                    positive_spans: vec![v2::BucketSpan {
                        offset: 0,
                        length: 1,
                    }],
                    positive_deltas: vec![2],
                    timestamp: 1_000,
                    ..Default::default()
                }],
                ..Default::default()
            },
        ],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap();
    let resp = rig.post(body, V2).await;
    assert_eq!(resp.status(), 204);
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
    };
    assert_eq!(
        h("X-Prometheus-Remote-Write-Samples-Written").as_deref(),
        Some("2")
    );
    assert_eq!(
        h("X-Prometheus-Remote-Write-Histograms-Written").as_deref(),
        Some("1")
    );
    assert_eq!(
        h("X-Prometheus-Remote-Write-Exemplars-Written").as_deref(),
        Some("1")
    );
    rig.wait_for("translated request", Duration::from_secs(10), |s| {
        s.samples == 2 && s.histograms == 1
    })
    .await;
    let got = rig.dce.accepted();
    let md: Vec<_> = got.iter().flat_map(|r| r.metadata.clone()).collect();
    assert_eq!(md.len(), 1);
    assert_eq!(
        (md[0].metric_family_name.as_str(), md[0].help.as_str()),
        ("rpc_total", "Requests.")
    );
    let stats = rig.dce.stats();
    assert_eq!(stats.exemplars, 1);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_4xx() {
    let rig = Rig::start(RigOptions::default()).await;
    let good = fixture("prom242_rw1_500samples_a.snappy");
    let unsorted = v1::WriteRequest {
        timeseries: vec![v1::TimeSeries {
            labels: vec![
                v1::Label {
                    name: "__name__".into(),
                    value: "up".into(),
                },
                v1::Label {
                    name: "z".into(),
                    value: "1".into(),
                },
                v1::Label {
                    name: "a".into(),
                    value: "1".into(),
                },
            ],
            samples: vec![v1::Sample {
                value: 1.0,
                timestamp: 1,
            }],
            ..Default::default()
        }],
        metadata: vec![],
    };
    let mut wide_labels = vec![v1::Label {
        name: "__name__".into(),
        value: "wide".into(),
    }];
    wide_labels.extend((0..70).map(|i| v1::Label {
        name: format!("l{i:02}"),
        value: "v".into(),
    }));
    let wide = v1::WriteRequest {
        timeseries: vec![v1::TimeSeries {
            labels: wide_labels,
            samples: vec![v1::Sample {
                value: 1.0,
                timestamp: 1,
            }],
            ..Default::default()
        }],
        metadata: vec![],
    };
    let mut huge_decl = Vec::new();
    promlink::codec::wire::put_varint(&mut huge_decl, u64::from(u32::MAX));
    huge_decl.extend_from_slice(&[0u8; 10_000]);
    // (name, body, content type, content encoding, status, message)
    type Case<'a> = (&'a str, Vec<u8>, &'a str, Option<&'a str>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "json",
            good.clone(),
            "application/json",
            Some("snappy"),
            415,
            "unsupported content type",
        ),
        (
            "gzip",
            good.clone(),
            V1,
            Some("gzip"),
            415,
            "unsupported content encoding \"gzip\"",
        ),
        (
            "no encoding",
            good.clone(),
            V1,
            None,
            415,
            "unsupported content encoding \"<missing>\"",
        ),
        (
            "garbage",
            b"\x05garbage".to_vec(),
            V1,
            Some("snappy"),
            400,
            "invalid snappy",
        ),
        (
            "4 GiB declared",
            huge_decl,
            V1,
            Some("snappy"),
            413,
            "declares 4294967295 decoded bytes",
        ),
        (
            "unsorted",
            snap::raw::Encoder::new()
                .compress_vec(&unsorted.encode_to_vec())
                .unwrap(),
            V1,
            Some("snappy"),
            400,
            "labels are not sorted",
        ),
        (
            "70 labels",
            snap::raw::Encoder::new()
                .compress_vec(&wide.encode_to_vec())
                .unwrap(),
            V1,
            Some("snappy"),
            400,
            "71 labels, over the limit of 63",
        ),
    ];
    for (name, body, ct, enc, status, msg) in cases {
        let mut req = rig
            .http
            .post(rig.write_url())
            .header("Content-Type", ct)
            .body(body);
        if let Some(e) = enc {
            req = req.header("Content-Encoding", e);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{name}");
        let text = resp.text().await.unwrap();
        assert!(
            text.contains(msg),
            "{name}: {text:?} should contain {msg:?}"
        );
    }
    let resp = rig.http.get(rig.write_url()).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 405, "wrong method");
    let resp = rig
        .http
        .post(rig.url("/api/v2/write"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404, "unknown path");
    assert_eq!(rig.dce.stats().samples, 0, "nothing refused was forwarded");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_answers_503_with_retry_after_and_loses_nothing_acknowledged() {
    let rig = Rig::start(RigOptions {
        // The queue holds compressed chunks: about the size of the sender's body each.
        queue_max_bytes: Some(30_000),
        ..RigOptions::default()
    })
    .await;
    // Hold the upstream with retryable errors so the queue fills.
    rig.dce.set_outage(Some(Fault::retry_after(503, 0)));
    // Five distinct requests of 500 series (one round each), about 9 kB compressed.
    let body = |round: i64| {
        promlink::loadgen::encode(&v1::WriteRequest {
            timeseries: (0..500)
                .map(|i| v1::TimeSeries {
                    labels: promlink::loadgen::series_labels(i),
                    samples: vec![v1::Sample {
                        value: round as f64,
                        timestamp: 1_700_000_000_000 + round * 15_000,
                    }],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    };
    let mut accepted = 0u64;
    let mut refused = 0;
    for round in 0..5 {
        let resp = rig.post(body(round), V1).await;
        match resp.status().as_u16() {
            204 => accepted += 500,
            503 => {
                refused += 1;
                assert_eq!(resp.headers().get("retry-after").unwrap(), "5");
                assert!(resp.text().await.unwrap().contains("queue is full"));
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert!(
        refused > 0,
        "a 30 kB queue cannot take five requests of 9 kB compressed"
    );
    assert!(accepted > 0);
    rig.dce.set_outage(None);
    rig.wait_for("everything acknowledged", Duration::from_secs(30), |s| {
        s.samples >= accepted
    })
    .await;
    // Equality proves nothing refused slipped through.
    assert_eq!(rig.dce.stats().samples, accepted);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics_endpoints() {
    let rig = Rig::start(RigOptions::default()).await;
    let get = |p: &'static str| rig.http.get(rig.url(p)).send();
    assert_eq!(get("/health").await.unwrap().status(), 200);
    // Ready as soon as it can accept writes (upstream health is in /status).
    let mut ready = false;
    for _ in 0..100 {
        if get("/ready").await.unwrap().status() == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        ready,
        "never became ready: {}",
        get("/ready").await.unwrap().text().await.unwrap()
    );
    let status = get("/status").await.unwrap();
    assert_eq!(status.status(), 200);
    let v: serde_json::Value = serde_json::from_str(&status.text().await.unwrap()).unwrap();
    assert_eq!(v["ready"], true, "{v}");
    let names: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["private_link", "token", "upstream", "queue"], "{v}");
    let m = get("/metrics").await.unwrap().text().await.unwrap();
    for name in [
        "promlink_receive_body_bytes_total",
        "promlink_queue_max_bytes",
        "promlink_token_valid",
    ] {
        assert!(m.contains(name), "{name} missing from /metrics");
    }
    // Every metric has help, and it ends with one period (the registry adds it).
    let helps: Vec<&str> = m.lines().filter(|l| l.starts_with("# HELP ")).collect();
    assert!(helps.len() >= 40, "{m}");
    for help in helps {
        assert!(help.ends_with('.') && !help.ends_with(".."), "{help}");
    }
    rig.stop().await;
}
