use std::collections::BTreeMap;
use std::time::Duration;

use prost::Message as _;

use super::*;
use crate::emulator::entra::Claims;
use crate::loadgen::checksum::Checksum;
use crate::loadgen::encode;
use crate::proto::v1::{Label, MetricMetadata, Sample, TimeSeries};

use crate::emulator::azure::TENANT;

fn series(name: &str, samples: &[(i64, f64)]) -> TimeSeries {
    TimeSeries {
        labels: vec![
            Label {
                name: "__name__".into(),
                value: name.into(),
            },
            Label {
                name: "job".into(),
                value: "t".into(),
            },
        ],
        samples: samples
            .iter()
            .map(|&(timestamp, value)| Sample { value, timestamp })
            .collect(),
        ..Default::default()
    }
}

fn body(ts: Vec<TimeSeries>) -> Vec<u8> {
    encode(&WriteRequest {
        timeseries: ts,
        ..Default::default()
    })
}

struct Fixture {
    dce: DceHandle,
    verifier: TokenVerifier,
    http: reqwest::Client,
    token: String,
}

fn mint(verifier: &TokenVerifier, client: &str, aud: &str, lifetime: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    verifier
        .mint(&Claims::new(
            TENANT,
            client,
            &format!("oid-{client}"),
            aud,
            now,
            lifetime,
        ))
        .expect("mint")
}

/// A client trusting `dce`'s CA.
fn client_trusting(dce: &DceHandle) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(dce.ca_pem().expect("ca").as_bytes()).expect("ca pem");
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .no_proxy()
        .build()
        .expect("client")
}

async fn fixture(keep: usize) -> Fixture {
    let verifier = TokenVerifier::new(&["https://monitor.azure.com".to_owned()]);
    let dce = DceEmulator::start(DceConfig {
        auth: Some(verifier.clone()),
        granted: vec!["publisher".to_owned()],
        keep_accepted: keep,
        max_body_bytes: 64 << 10,
        ..DceConfig::default()
    })
    .await
    .expect("start dce emulator");
    let http = client_trusting(&dce);
    let token = mint(&verifier, "publisher", "https://monitor.azure.com", 600);
    Fixture {
        dce,
        verifier,
        http,
        token,
    }
}

impl Fixture {
    fn good(&self) -> reqwest::RequestBuilder {
        self.unauthenticated().bearer_auth(&self.token)
    }

    fn unauthenticated(&self) -> reqwest::RequestBuilder {
        self.headers("application/x-protobuf", "snappy", "0.1.0")
    }

    /// An authenticated request with the given headers (reqwest appends, so no overriding).
    fn headers(
        &self,
        content_type: &str,
        encoding: &str,
        version: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .post(self.dce.url())
            .header("Content-Encoding", encoding)
            .header("Content-Type", content_type)
            .header("X-Prometheus-Remote-Write-Version", version)
    }

    async fn status(&self, req: reqwest::RequestBuilder) -> (u16, String) {
        match req.send().await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        }
    }
}

#[tokio::test]
async fn emulator_dce_accepts_and_counts() {
    let f = fixture(10).await;
    let mut request = WriteRequest {
        timeseries: vec![
            series("a", &[(1000, 1.0), (2000, 2.0)]),
            series("b", &[(1000, f64::from_bits(0x7ff0_0000_0000_0002))]),
        ],
        metadata: vec![MetricMetadata {
            metric_family_name: "a".into(),
            ..Default::default()
        }],
    };
    request.timeseries[0].exemplars.push(Default::default());
    let (status, text) = f.status(f.good().body(encode(&request))).await;
    assert_eq!(status, 200, "{text}");
    let stats = f.dce.stats();
    assert_eq!(stats.accepted_requests, 1);
    assert_eq!(stats.series, 2);
    assert_eq!(stats.samples, 3);
    assert_eq!(stats.exemplars, 1);
    assert_eq!(stats.metadata, 1);
    assert_eq!(stats.distinct_series, 2);
    assert_eq!(stats.checksum, Checksum::of_request(&request));
    // NaN != NaN, so compare the encodings.
    let kept: Vec<Vec<u8>> = f.dce.accepted().iter().map(|r| r.encode_to_vec()).collect();
    assert_eq!(kept, vec![request.encode_to_vec()]);
    f.dce.shutdown().await;
}

#[tokio::test]
async fn emulator_dce_rejections_have_their_status() {
    let f = fixture(0).await;
    let ok = body(vec![series("a", &[(1, 1.0)])]);
    let base = f.dce.base_url().to_owned();
    let path = format!("/dataCollectionRules/{DEFAULT_DCR_ID}/streams/{STREAM}/api/v1/write");
    let expired = mint(&f.verifier, "publisher", "https://monitor.azure.com", -10);
    let wrong_aud = mint(&f.verifier, "publisher", "https://monitor.azure.us", 600);
    let ungranted = mint(&f.verifier, "stranger", "https://monitor.azure.com", 600);
    let foreign = mint(
        &TokenVerifier::new(&["https://monitor.azure.com".to_owned()]),
        "publisher",
        "https://monitor.azure.com",
        600,
    );
    let mut big = Vec::new();
    for i in 0..4000 {
        big.push(series(
            &format!("metric_{i}_{}", "x".repeat(20)),
            &[(1, i as f64)],
        ));
    }
    let raw_big = WriteRequest {
        timeseries: big,
        ..Default::default()
    }
    .encode_to_vec();
    let cases: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
        ("wrong dcr", f.http.post(format!("{base}/dataCollectionRules/dcr-11111111111111111111111111111111/streams/{STREAM}/api/v1/write?api-version={API_VERSION}")).bearer_auth(&f.token).body(ok.clone()), 404),
        ("wrong stream", f.http.post(format!("{base}/dataCollectionRules/{DEFAULT_DCR_ID}/streams/Custom-Foo/api/v1/write?api-version={API_VERSION}")).body(ok.clone()), 404),
        ("root", f.http.post(format!("{base}/api/v1/write")).body(ok.clone()), 404),
        ("get", f.http.get(f.dce.url()), 405),
        ("no api-version", f.http.post(format!("{base}{path}")).body(ok.clone()), 400),
        ("old api-version", f.http.post(format!("{base}{path}?api-version=2021-11-01-preview")).body(ok.clone()), 400),
        ("no token", f.unauthenticated().body(ok.clone()), 401),
        ("basic auth", f.unauthenticated().body(ok.clone()).basic_auth("u", Some("p")), 401),
        ("expired token", f.unauthenticated().bearer_auth(&expired).body(ok.clone()), 401),
        ("wrong audience", f.unauthenticated().bearer_auth(&wrong_aud).body(ok.clone()), 401),
        ("foreign signer", f.unauthenticated().bearer_auth(&foreign).body(ok.clone()), 401),
        ("not granted", f.unauthenticated().bearer_auth(&ungranted).body(ok.clone()), 403),
        ("json content type", f.headers("application/json", "snappy", "0.1.0").bearer_auth(&f.token).body(ok.clone()), 415),
        ("no content encoding", f.headers("application/x-protobuf", "identity", "0.1.0").bearer_auth(&f.token).body(ok.clone()), 400),
        ("rw 2.0 version", f.headers("application/x-protobuf", "snappy", "2.0.0").bearer_auth(&f.token).body(ok.clone()), 400),
        ("not snappy", f.good().body(b"definitely not snappy".to_vec()), 400),
        ("uncompressed protobuf", f.good().body(WriteRequest { timeseries: vec![series("a", &[(1, 1.0)])], ..Default::default() }.encode_to_vec()), 400),
        ("snappy garbage", f.good().body(snap::raw::Encoder::new().compress_vec(&[0xff; 64]).unwrap_or_default()), 400),
        ("no metric name", f.good().body(encode(&WriteRequest { timeseries: vec![TimeSeries { labels: vec![Label { name: "job".into(), value: "x".into() }], samples: vec![Sample { value: 1.0, timestamp: 1 }], ..Default::default() }], ..Default::default() })), 400),
        ("duplicate sample", f.good().body(body(vec![series("a", &[(1, 1.0)]), series("a", &[(1, 2.0)])])), 422),
        ("too large compressed", f.good().body(vec![0u8; 70 << 10]), 413),
        ("too large decompressed", f.good().body(snap::raw::Encoder::new().compress_vec(&raw_big).unwrap_or_default()), 413),
    ];
    let mut expected = BTreeMap::new();
    for (name, req, status) in cases {
        let (got, text) = f.status(req).await;
        assert_eq!(got, status, "{name}: {text}");
        if got != 405 {
            assert!(text.contains("EMULATOR"), "{name}: {text}");
        }
        *expected.entry(status).or_insert(0u64) += 1;
    }
    let stats = f.dce.stats();
    assert_eq!(stats.accepted_requests, 0);
    assert_eq!(stats.samples, 0);
    assert_eq!(stats.rejected, expected);
    // The same series at two timestamps is fine by default.
    let (got, text) = f
        .status(f.good().body(body(vec![
            series("a", &[(1, 1.0)]),
            series("a", &[(2, 2.0)]),
        ])))
        .await;
    assert_eq!(got, 200, "{text}");
    f.dce.shutdown().await;
}

#[tokio::test]
async fn emulator_dce_role_can_be_granted_later_and_api_versions_changed() {
    let f = fixture(0).await;
    let late = mint(&f.verifier, "late", "https://monitor.azure.com/", 600);
    let ok = body(vec![series("a", &[(1, 1.0)])]);
    assert_eq!(
        f.status(f.unauthenticated().bearer_auth(&late).body(ok.clone()))
            .await
            .0,
        403
    );
    f.dce.grant("oid-late");
    assert_eq!(
        f.status(f.unauthenticated().bearer_auth(&late).body(ok.clone()))
            .await
            .0,
        200
    );
    f.dce.revoke("oid-late");
    assert_eq!(
        f.status(f.unauthenticated().bearer_auth(&late).body(ok.clone()))
            .await
            .0,
        403
    );
    f.dce.set_api_versions(&["2021-11-01-preview"]);
    assert_eq!(f.status(f.good().body(ok.clone())).await.0, 400);
    f.dce.shutdown().await;
}

#[tokio::test]
async fn emulator_dce_fault_script_is_served_in_order() {
    let f = fixture(0).await;
    let ok = body(vec![series("a", &[(1, 1.0)])]);
    f.dce.push_fault(Fault::retry_after(429, 7));
    f.dce.push_fault(Fault::Status {
        status: 503,
        retry_after: None,
        body: Some("busy".into()),
    });
    f.dce.push_fault(Fault::Reset);
    f.dce.push_fault(Fault::AcceptThen(500));
    f.dce.push_fault(Fault::Delay(Duration::from_millis(20)));
    let r = f.good().body(ok.clone()).send().await.expect("429");
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("7")
    );
    let r = f.good().body(ok.clone()).send().await.expect("503");
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.text().await.unwrap_or_default(), "busy");
    assert!(
        f.good().body(ok.clone()).send().await.is_err(),
        "reset must give no answer"
    );
    assert_eq!(f.status(f.good().body(ok.clone())).await.0, 500);
    assert_eq!(f.dce.stats().samples, 1, "accept-then-fail keeps the data");
    assert_eq!(
        f.status(f.good().body(body(vec![series("a", &[(2, 1.0)])])))
            .await
            .0,
        200
    );
    // Faults go before validation: even a bad write gets the scripted answer.
    f.dce.push_fault(Fault::status(502));
    assert_eq!(
        f.status(f.http.post(format!("{}/nowhere", f.dce.base_url())))
            .await
            .0,
        502
    );
    assert_eq!(f.dce.pending_faults(), 0);
    let stats = f.dce.stats();
    assert_eq!(stats.faults, 6);
    assert_eq!(stats.accepted_requests, 2);
    assert_eq!(stats.samples, 2);
    f.dce.shutdown().await;
}

#[tokio::test]
async fn emulator_dce_tracks_order_and_bounds_the_store() {
    let f = fixture(2).await;
    for (t, v) in [(10, 1.0), (20, 2.0), (15, 3.0), (20, 4.0)] {
        assert_eq!(
            f.status(f.good().body(body(vec![series("a", &[(t, v)])])))
                .await
                .0,
            200
        );
    }
    let stats = f.dce.stats();
    assert_eq!(stats.out_of_order_samples, 1);
    assert_eq!(stats.repeated_timestamp_samples, 1);
    assert_eq!(stats.distinct_series, 1);
    assert_eq!(f.dce.accepted().len(), 2);
    assert_eq!(stats.dropped_records, 2);
    f.dce.reset();
    assert_eq!(f.dce.stats(), DceStats::default());
    f.dce.shutdown().await;
}

#[tokio::test]
async fn emulator_dce_strict_series_mode_and_plain_http() {
    let dce = DceEmulator::start(DceConfig {
        tls: DceTls::Plain,
        reject_repeated_series: true,
        ..DceConfig::default()
    })
    .await
    .expect("start");
    assert!(dce.url().starts_with("http://127.0.0.1:"));
    assert!(dce.ca_pem().is_none());
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let send = |b: Vec<u8>| {
        http.post(dce.url())
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(b)
            .send()
    };
    let r = send(body(vec![
        series("a", &[(1, 1.0)]),
        series("a", &[(2, 2.0)]),
    ]))
    .await
    .expect("send");
    assert_eq!(r.status().as_u16(), 422);
    let r = send(body(vec![series("a", &[(1, 1.0), (2, 2.0)])]))
        .await
        .expect("send");
    assert_eq!(
        r.status().as_u16(),
        200,
        "no auth configured: no token needed"
    );
    dce.shutdown().await;
}

#[test]
fn emulator_dce_cli_args_parse_with_defaults() {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: EmulateDceArgs,
    }
    let cli = Cli::try_parse_from(["emulate-dce"]).expect("defaults parse");
    assert_eq!(cli.args.listen, SocketAddr::from(([127, 0, 0, 1], 9443)));
    assert_eq!(cli.args.dcr_id, DEFAULT_DCR_ID);
    assert_eq!(cli.args.api_versions, vec![API_VERSION.to_owned()]);
    assert!(!cli.args.plain_http && !cli.args.no_auth);
    let cli = Cli::try_parse_from([
        "emulate-dce",
        "--plain-http",
        "--api-version",
        "a",
        "--api-version",
        "b",
    ])
    .expect("parse");
    assert_eq!(cli.args.api_versions, vec!["a".to_owned(), "b".to_owned()]);
    assert!(
        Cli::try_parse_from(["emulate-dce", "--tls-cert", "x.pem"]).is_err(),
        "cert needs a key"
    );
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The query API: what was accepted is read back, for a Monitoring Data Reader holding a
/// query-audience token only; silent loss answers 200 and keeps nothing.
#[tokio::test]
async fn accepted_series_are_read_back_through_the_query_api() {
    let verifier = TokenVerifier::new(&[
        "https://monitor.azure.com".to_owned(),
        "https://prometheus.monitor.azure.com".to_owned(),
    ]);
    let dce = DceEmulator::start(DceConfig {
        auth: Some(verifier.clone()),
        granted: vec!["publisher".to_owned()],
        readers: vec!["reader".to_owned()],
        keep_series: 2,
        ..DceConfig::default()
    })
    .await
    .expect("start dce emulator");
    let http = client_trusting(&dce);
    let write_token = mint(&verifier, "publisher", "https://monitor.azure.com", 600);
    let query_token = mint(
        &verifier,
        "reader",
        "https://prometheus.monitor.azure.com",
        600,
    );
    let write = |token: &str, ts: Vec<TimeSeries>| {
        http.post(dce.url())
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .bearer_auth(token)
            .body(body(ts))
            .send()
    };
    let query = |token: &str, q: &str| {
        let q: String = url::form_urlencoded::byte_serialize(q.as_bytes()).collect();
        http.get(format!("{}/api/v1/query?query={q}", dce.query_url()))
            .bearer_auth(token)
            .send()
    };
    let now = now_ms();
    let r = write(
        &write_token,
        vec![
            series("canary", &[(now - 2000, 1.0), (now - 1000, 2.5)]),
            series("stale", &[(now - 6 * 60 * 1000, 7.0)]),
            series("third", &[(now, 3.0)]),
        ],
    )
    .await
    .expect("write");
    assert_eq!(r.status(), 200);

    let r = query(&query_token, r#"canary{job="t"}"#)
        .await
        .expect("query");
    assert_eq!(r.status(), 200);
    let v = json(r).await;
    assert_eq!(v["status"], "success");
    let result = v["data"]["result"].as_array().expect("result");
    assert_eq!(result.len(), 1, "{v}");
    assert_eq!(result[0]["metric"]["__name__"], "canary");
    assert_eq!(result[0]["value"][1], "2.5");
    // Older than the five-minute lookback: no answer.
    let v = json(query(&query_token, "stale").await.expect("query")).await;
    assert_eq!(v["data"]["result"].as_array().map(Vec::len), Some(0));
    // Only two series are kept.
    assert_eq!(dce.stats().query_series_refused, 1);

    // The write token is not a query token, and a query token cannot write.
    let r = query(&write_token, "canary").await.expect("query");
    assert_eq!(r.status(), 401);
    let r = write(&query_token, vec![series("canary", &[(now, 9.0)])])
        .await
        .expect("write");
    assert_eq!(r.status(), 401);
    // A query token without the reader role.
    let stranger = mint(
        &verifier,
        "stranger",
        "https://prometheus.monitor.azure.com",
        600,
    );
    let r = query(&stranger, "canary").await.expect("query");
    assert_eq!(r.status(), 403);
    let text = r.text().await.expect("body");
    assert!(text.contains("Monitoring Data Reader"), "{text}");
    // Every query names its metric.
    let r = query(&query_token, r#"{job="t"}"#).await.expect("query");
    assert_eq!(r.status(), 400);

    // Silent loss: 200, and the newer value never shows.
    dce.set_silent_loss(true);
    let r = write(&write_token, vec![series("canary", &[(now_ms(), 4.0)])])
        .await
        .expect("write");
    assert_eq!(r.status(), 200);
    let v = json(query(&query_token, "canary").await.expect("query")).await;
    assert_eq!(v["data"]["result"][0]["value"][1], "2.5");
    let stats = dce.stats();
    assert_eq!(stats.silently_lost_requests, 1);
    assert_eq!(stats.accepted_requests, 1);
    assert_eq!(stats.queries, 6);
    dce.shutdown().await;
}

async fn json(r: reqwest::Response) -> serde_json::Value {
    serde_json::from_slice(&r.bytes().await.expect("body")).expect("json")
}
