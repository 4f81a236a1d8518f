//! A table of hostile and broken requests, each with the status and message promlink must
//! answer, through the real HTTP listener; none may reach the upstream, none may stop promlink
//! from serving the next, and each is counted by reason.

mod common;

use std::time::Duration;

use common::{fixture, Rig, RigOptions};
use promlink::proto::{v1, v2};
use prost::Message;

const V1: &str = "application/x-protobuf";
const V2: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";

fn snappy(raw: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(raw).unwrap()
}

fn series(labels: &[(&[u8], &[u8])]) -> Vec<u8> {
    // Built at the wire level so invalid UTF-8 and odd shapes can be expressed.
    let mut ts = Vec::new();
    for (n, v) in labels {
        let mut l = Vec::new();
        put_bytes(&mut l, 1, n);
        put_bytes(&mut l, 2, v);
        put_bytes(&mut ts, 1, &l);
    }
    let sample = v1::Sample {
        value: 1.0,
        timestamp: 1_700_000_000_000,
    }
    .encode_to_vec();
    put_bytes(&mut ts, 2, &sample);
    let mut req = Vec::new();
    put_bytes(&mut req, 1, &ts);
    req
}

fn put_bytes(out: &mut Vec<u8>, field: u64, data: &[u8]) {
    promlink::codec::wire::put_varint(out, field << 3 | 2);
    promlink::codec::wire::put_varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

struct Case {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    body: Vec<u8>,
    content_type: Option<&'static str>,
    encoding: Option<&'static str>,
    status: u16,
    message: &'static str,
}

fn case(name: &'static str, body: Vec<u8>, status: u16, message: &'static str) -> Case {
    Case {
        name,
        method: "POST",
        path: "/api/v1/write",
        body,
        content_type: Some(V1),
        encoding: Some("snappy"),
        status,
        message,
    }
}

fn cases() -> Vec<Case> {
    let good = fixture("prom242_rw1_500samples_a.snappy");
    let raw = snap::raw::Decoder::new().decompress_vec(&good).unwrap();
    let mut declares_4gib = Vec::new();
    promlink::codec::wire::put_varint(&mut declares_4gib, 4 << 30);
    declares_4gib.extend_from_slice(&[0u8; 1000]);
    let mut framed = Vec::new();
    {
        use std::io::Write;
        let mut w = snap::write::FrameEncoder::new(&mut framed);
        w.write_all(&raw).unwrap();
    }
    let gzip_magic = [&[0x1f, 0x8b, 0x08, 0x00][..], &[0u8; 64]].concat();
    let name: &[u8] = b"__name__";
    let many: Vec<(Vec<u8>, Vec<u8>)> = (0..10_000)
        .map(|i| (format!("l{i:05}").into_bytes(), b"v".to_vec()))
        .collect();
    let mut many_refs: Vec<(&[u8], &[u8])> = vec![(name, b"wide")];
    many_refs.extend(many.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
    let mib = vec![b'x'; 1 << 20];
    let v2_body = v2::Request {
        symbols: vec!["".into(), "__name__".into(), "up".into()],
        timeseries: vec![v2::TimeSeries {
            labels_refs: vec![1, 2],
            samples: vec![v2::Sample {
                value: 1.0,
                timestamp: 1_700_000_000_000,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec();

    let mut cases = vec![
        case(
            "truncated snappy",
            good[..good.len() / 2].to_vec(),
            400,
            "invalid snappy",
        ),
        case(
            "snappy declaring 4 GiB",
            declares_4gib,
            413,
            "declares 4294967296 decoded bytes",
        ),
        case("framed snappy", framed, 400, "framed (stream) snappy"),
        case(
            "gzip bytes labelled snappy",
            gzip_magic,
            400,
            "invalid snappy",
        ),
        case("plain protobuf", raw.clone(), 400, "invalid"),
        case(
            "garbage",
            b"\x05garbage that is not snappy".to_vec(),
            400,
            "invalid snappy",
        ),
        case("empty body", Vec::new(), 400, "the body is empty"),
        case(
            "unsorted labels",
            snappy(&series(&[(name, b"up"), (b"z", b"1"), (b"a", b"1")])),
            400,
            "labels are not sorted",
        ),
        case(
            "duplicate label names",
            snappy(&series(&[(name, b"up"), (b"job", b"a"), (b"job", b"b")])),
            400,
            "duplicate label name",
        ),
        case(
            "empty label name",
            snappy(&series(&[(b"", b"x"), (name, b"up")])),
            400,
            "empty label name",
        ),
        case(
            "invalid UTF-8",
            snappy(&series(&[(name, b"up"), (b"job", b"\xff\xfe")])),
            400,
            "UTF-8",
        ),
        case(
            "10,000 labels",
            snappy(&series(&many_refs)),
            400,
            "10001 labels, over the limit of 63",
        ),
        case(
            "1 MiB label value",
            snappy(&series(&[(name, b"up"), (b"job", &mib)])),
            400,
            "over the limit of 1023",
        ),
        case(
            "v2 body sent as v1",
            snappy(&v2_body),
            400,
            "remote write 2.0",
        ),
    ];
    let mut gzip = case(
        "gzip",
        good.clone(),
        415,
        "unsupported content encoding \"gzip\"",
    );
    gzip.encoding = Some("gzip");
    let mut json = case(
        "wrong content type",
        good.clone(),
        415,
        "unsupported content type \"application/json\"",
    );
    json.content_type = Some("application/json");
    let mut no_type = case(
        "missing content type",
        good.clone(),
        415,
        "unsupported content type \"<missing>\"",
    );
    no_type.content_type = None;
    let mut no_encoding = case(
        "missing content encoding",
        good.clone(),
        415,
        "\"<missing>\"",
    );
    no_encoding.encoding = None;
    let mut unknown = case("unknown path", good.clone(), 404, "");
    unknown.path = "/api/v1/push";
    let mut get = case("wrong method", Vec::new(), 405, "");
    get.method = "GET";
    let mut v1_as_v2 = case("v1 body sent as v2", good, 400, "");
    v1_as_v2.content_type = Some(V2);
    cases.extend([gzip, json, no_type, no_encoding, unknown, get, v1_as_v2]);
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_their_status_and_reason() {
    let rig = Rig::start(RigOptions::default()).await;
    let mut failures = Vec::new();
    for c in cases() {
        let mut req = rig
            .http
            .request(c.method.parse().unwrap(), rig.url(c.path))
            .body(c.body);
        if let Some(t) = c.content_type {
            req = req.header("Content-Type", t);
        }
        if let Some(e) = c.encoding {
            req = req.header("Content-Encoding", e);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        if status != c.status || !text.contains(c.message) {
            failures.push(format!(
                "{}: got {status} {text:?}, want {} containing {:?}",
                c.name, c.status, c.message
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    // Still serving, nothing refused went upstream, refusals counted.
    let ok = rig
        .post(fixture("prom242_rw1_500samples_b.snappy"), V1)
        .await;
    assert_eq!(ok.status().as_u16(), 204);
    rig.wait_for("the good write", Duration::from_secs(10), |s| {
        s.samples == 500
    })
    .await;
    assert_eq!(rig.dce.stats().samples, 500);
    assert!(
        rig.metric("promlink_receive_rejected_total{reason=\"snappy\"}")
            .await
            >= 5.0
    );
    assert!(
        rig.metric("promlink_receive_rejected_total{reason=\"invalid\"}")
            .await
            >= 4.0
    );
    rig.stop().await;
}
