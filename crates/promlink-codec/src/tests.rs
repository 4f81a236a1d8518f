use prost::Message;

use super::*;
use crate::proto::{v1, v2};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");
const STALE: u64 = 0x7ff0_0000_0000_0002;

pub(crate) fn opts() -> Options {
    Options {
        max_decoded_bytes: 32 << 20,
        ..Options::default()
    }
}

pub(crate) fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).expect("fixture")
}

fn reassemble(d: &Decoded) -> v1::WriteRequest {
    let mut buf = Vec::new();
    for e in &d.entries {
        wire::put_len_field(&mut buf, e.field, &e.bytes);
    }
    v1::WriteRequest::decode(buf.as_slice()).expect("entries form a valid WriteRequest")
}

#[test]
fn content_types_pick_the_protocol() {
    let ok = [
        ("application/x-protobuf", Protocol::V1),
        (
            "application/x-protobuf;proto=prometheus.WriteRequest",
            Protocol::V1,
        ),
        (
            "application/x-protobuf; proto=io.prometheus.write.v2.Request",
            Protocol::V2,
        ),
        ("Application/X-Protobuf; charset=utf-8", Protocol::V1),
    ];
    for (ct, want) in ok {
        assert_eq!(Protocol::from_content_type(Some(ct)).unwrap(), want, "{ct}");
    }
    for bad in [
        None,
        Some("application/json"),
        Some("application/x-protobuf;proto=foo.Bar"),
        Some("text/plain"),
    ] {
        assert!(
            matches!(
                Protocol::from_content_type(bad),
                Err(DecodeError::UnsupportedContentType(_))
            ),
            "{bad:?}"
        );
    }
}

/// Every fixture decodes to the counts its README states, and re-assembling the entries gives
/// back exactly the sender's series (labels, timestamps, value bits) and metadata.
#[test]
fn fixtures_pass_through_bit_for_bit() {
    // (file, series, samples, stale markers, other NaN, metadata)
    let table = [
        ("prom242_rw1_100_stale_markers.snappy", 100, 100, 100, 0, 0),
        ("prom242_rw1_500samples_a.snappy", 500, 500, 0, 0, 0),
        ("prom242_rw1_500samples_b.snappy", 500, 500, 0, 23, 0),
        ("prom242_rw1_metadata_only.snappy", 0, 0, 0, 0, 449),
        ("prom242_rw1_mixed_stale_and_up0.snappy", 100, 100, 58, 0, 0),
    ];
    for (name, series, samples, stale, nan, metadata) in table {
        let body = fixture(name);
        let d = decode(Protocol::V1, &body, &opts()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            (d.counts.series, d.counts.samples, d.counts.metadata),
            (series, samples, metadata),
            "{name}"
        );
        let original = v1::WriteRequest::decode(
            snap::raw::Decoder::new()
                .decompress_vec(&body)
                .unwrap()
                .as_slice(),
        )
        .unwrap();
        let got = reassemble(&d);
        // NaN != NaN, so compare encodings: same labels, timestamps and value bits.
        assert!(
            got.encode_to_vec() == original.encode_to_vec(),
            "{name}: re-assembled request differs"
        );
        let bits: Vec<u64> = got
            .timeseries
            .iter()
            .flat_map(|t| t.samples.iter().map(|s| s.value.to_bits()))
            .collect();
        let want: Vec<u64> = original
            .timeseries
            .iter()
            .flat_map(|t| t.samples.iter().map(|s| s.value.to_bits()))
            .collect();
        assert_eq!(bits, want, "{name}: value bits");
        assert_eq!(
            bits.iter().filter(|b| **b == STALE).count(),
            stale,
            "{name}: stale markers"
        );
        assert_eq!(
            bits.iter()
                .filter(|b| f64::from_bits(**b).is_nan() && **b != STALE)
                .count(),
            nan,
            "{name}: NaNs"
        );
    }
}

pub(crate) fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> v1::TimeSeries {
    v1::TimeSeries {
        labels: labels
            .iter()
            .map(|(n, v)| v1::Label {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
        samples: samples
            .iter()
            .map(|(t, v)| v1::Sample {
                timestamp: *t,
                value: *v,
            })
            .collect(),
        ..Default::default()
    }
}

pub(crate) fn snappy(msg: &impl Message) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(&msg.encode_to_vec())
        .unwrap()
}

#[test]
fn cluster_label_is_inserted_in_order_and_existing_one_kept() {
    let req = v1::WriteRequest {
        timeseries: vec![
            series(&[("__name__", "up"), ("job", "a")], &[(1, 1.0)]),
            series(
                &[("__name__", "up"), ("cluster", "mine"), ("job", "b")],
                &[(1, 1.0)],
            ),
            series(&[("__name__", "up"), ("a", "x")], &[(1, 1.0)]),
        ],
        metadata: vec![],
    };
    let o = Options {
        cluster: Some("aks-1".into()),
        ..opts()
    };
    let d = decode(Protocol::V1, &snappy(&req), &o).unwrap();
    let got = reassemble(&d);
    let names = |t: &v1::TimeSeries| {
        t.labels
            .iter()
            .map(|l| format!("{}={}", l.name, l.value))
            .collect::<Vec<_>>()
            .join(",")
    };
    assert_eq!(names(&got.timeseries[0]), "__name__=up,cluster=aks-1,job=a");
    assert_eq!(names(&got.timeseries[1]), "__name__=up,cluster=mine,job=b");
    assert_eq!(names(&got.timeseries[2]), "__name__=up,a=x,cluster=aks-1");
    // Same series, same shard, whatever request it came in.
    let d2 = decode(Protocol::V1, &snappy(&req), &o).unwrap();
    assert_eq!(d.entries[0].shard_key, d2.entries[0].shard_key);
    assert_ne!(d.entries[0].shard_key, d.entries[1].shard_key);
}

#[test]
fn declared_length_is_checked_before_allocating() {
    // A tiny body whose snappy header declares 4 GiB - 1.
    let mut body = Vec::new();
    wire::put_varint(&mut body, u64::from(u32::MAX));
    body.extend_from_slice(&[0u8; 16]);
    let e = decompress(&body, 1 << 20).unwrap_err();
    assert!(
        matches!(e, DecodeError::DecodedTooLarge { declared, .. } if declared == u32::MAX as usize),
        "{e}"
    );
    // Over snappy's own limit (4 GiB): still named as over ours, with the declared size.
    let mut body = Vec::new();
    wire::put_varint(&mut body, 1 << 32);
    body.extend_from_slice(&[0u8; 16]);
    let e = decompress(&body, 1 << 20).unwrap_err();
    assert!(
        matches!(e, DecodeError::DecodedTooLarge { declared, .. } if declared == 1 << 32),
        "{e}"
    );
}

#[test]
fn invalid_inputs_are_refused_with_reasons() {
    let unsorted = v1::WriteRequest {
        timeseries: vec![series(
            &[("__name__", "up"), ("z", "1"), ("a", "2")],
            &[(1, 1.0)],
        )],
        metadata: vec![],
    };
    let e = decode(Protocol::V1, &snappy(&unsorted), &opts())
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "series up{z=\"1\",a=\"2\"}: labels are not sorted by name: \"a\" comes after \"z\""
    );
    let e = decode(Protocol::V1, b"\x10garbage-not-snappy", &opts()).unwrap_err();
    assert!(matches!(e, DecodeError::Snappy(_)), "{e}");
    let garbage = snap::raw::Encoder::new()
        .compress_vec(&[0x0a, 0xff, 0xff, 0xff, 0x0f, 1])
        .unwrap();
    let e = decode(Protocol::V1, &garbage, &opts()).unwrap_err();
    assert!(matches!(e, DecodeError::Protobuf(_)), "{e}");
}

fn v2_request() -> v2::Request {
    let symbols: Vec<String> = [
        "",
        "__name__",
        "http_requests_total",
        "job",
        "api",
        "Requests served.",
        "trace_id",
        "abc",
        "rpc_seconds",
        "seconds",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v2::Request {
        symbols,
        timeseries: vec![
            v2::TimeSeries {
                labels_refs: vec![1, 2, 3, 4],
                samples: vec![
                    v2::Sample {
                        value: 1.0,
                        timestamp: 1000,
                        start_timestamp: 500,
                    },
                    v2::Sample {
                        value: f64::from_bits(STALE),
                        timestamp: 2000,
                        start_timestamp: 500,
                    },
                ],
                exemplars: vec![v2::Exemplar {
                    labels_refs: vec![6, 7],
                    value: 1.0,
                    timestamp: 1000,
                }],
                metadata: Some(v2::Metadata {
                    r#type: v2::metadata::MetricType::Counter as i32,
                    help_ref: 5,
                    unit_ref: 0,
                }),
                ..Default::default()
            },
            v2::TimeSeries {
                labels_refs: vec![1, 8, 3, 4],
                histograms: vec![v2::Histogram {
                    count: Some(v2::histogram::Count::CountInt(3)),
                    sum: 1.5,
                    schema: 3,
                    zero_threshold: 1e-128,
                    zero_count: Some(v2::histogram::ZeroCount::ZeroCountInt(1)),
                    positive_spans: vec![v2::BucketSpan {
                        offset: 0,
                        length: 2,
                    }],
                    positive_deltas: vec![1, 0],
                    timestamp: 1000,
                    start_timestamp: 10,
                    ..Default::default()
                }],
                metadata: Some(v2::Metadata {
                    r#type: v2::metadata::MetricType::Histogram as i32,
                    help_ref: 0,
                    unit_ref: 9,
                }),
                ..Default::default()
            },
        ],
    }
}

#[test]
fn v2_is_translated_to_v1() {
    let d = decode(Protocol::V2, &snappy(&v2_request()), &opts()).unwrap();
    assert_eq!(
        d.counts,
        Counts {
            series: 2,
            samples: 2,
            histograms: 1,
            exemplars: 1,
            metadata: 2
        }
    );
    let got = reassemble(&d);
    let t0 = &got.timeseries[0];
    assert_eq!(
        t0.labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect::<Vec<_>>(),
        [("__name__", "http_requests_total"), ("job", "api")]
    );
    assert_eq!(t0.samples[1].value.to_bits(), STALE);
    assert_eq!(
        t0.samples.iter().map(|s| s.timestamp).collect::<Vec<_>>(),
        [1000, 2000]
    );
    assert_eq!(t0.exemplars[0].labels[0].name, "trace_id");
    let h = &got.timeseries[1].histograms[0];
    assert_eq!(
        (h.schema, h.sum, h.timestamp, h.positive_deltas.clone()),
        (3, 1.5, 1000, vec![1, 0])
    );
    assert_eq!(h.count, Some(v1::histogram::Count::CountInt(3)));
    let md: Vec<_> = got
        .metadata
        .iter()
        .map(|m| {
            (
                m.metric_family_name.as_str(),
                m.r#type,
                m.help.as_str(),
                m.unit.as_str(),
            )
        })
        .collect();
    assert_eq!(
        md,
        [
            ("http_requests_total", 1, "Requests served.", ""),
            ("rpc_seconds", 3, "", "seconds")
        ]
    );
}

/// One series has one shard key whichever protocol it arrived in, with or without an added
/// cluster label, so its samples always travel through one shard, in order.
#[test]
fn shard_keys_match_across_protocols() {
    for cluster in [None, Some("aks-1".to_string())] {
        let o = Options {
            cluster: cluster.clone(),
            ..opts()
        };
        let from_v2 = decode(Protocol::V2, &snappy(&v2_request()), &o).unwrap();
        let via_v1 = decode(Protocol::V1, &snappy(&reassemble(&from_v2)), &o).unwrap();
        let keys = |d: &Decoded| {
            d.entries
                .iter()
                .filter(|e| e.field == FIELD_TIMESERIES)
                .map(|e| e.shard_key)
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&from_v2), keys(&via_v1), "{cluster:?}");
        assert_eq!(keys(&from_v2).len(), 2);
    }
}

#[test]
fn v2_bad_references_are_refused() {
    let mut r = v2_request();
    r.timeseries[0].labels_refs = vec![1, 99];
    let e = decode(Protocol::V2, &snappy(&r), &opts())
        .unwrap_err()
        .to_string();
    assert!(e.contains("symbol reference 99 is out of range"), "{e}");
    let mut r = v2_request();
    r.timeseries[0].labels_refs = vec![1, 2, 3];
    assert!(decode(Protocol::V2, &snappy(&r), &opts()).is_err());
}

#[test]
fn v2_body_sent_as_v1_is_refused_not_misread() {
    // A 2.0 request decoded as 1.0: its field 4/5 are unknown to 1.0, so nothing would be
    // forwarded; the receiver must not silently accept it as an empty request.
    for e in [
        decode(Protocol::V1, &snappy(&v2_request()), &opts()).unwrap_err(),
        decode_chunks(
            Protocol::V1,
            &bytes::Bytes::from(snappy(&v2_request())),
            &opts(),
            &BatchLimits {
                max_samples: 100,
                max_bytes: 1 << 20,
                flush_interval: std::time::Duration::ZERO,
            },
        )
        .unwrap_err(),
    ] {
        assert!(
            e.to_string()
                .contains("a remote write 2.0 body sent as 1.0"),
            "{e}"
        );
    }
}

#[test]
fn pruning_removes_only_old_samples_and_keeps_bits() {
    let ts = v1::TimeSeries {
        labels: vec![v1::Label {
            name: "__name__".into(),
            value: "up".into(),
        }],
        samples: vec![
            v1::Sample {
                value: 1.0,
                timestamp: 100,
            },
            v1::Sample {
                value: f64::from_bits(STALE),
                timestamp: 200,
            },
            v1::Sample {
                value: 3.0,
                timestamp: 300,
            },
        ],
        histograms: vec![v1::Histogram {
            timestamp: 150,
            sum: 2.0,
            ..Default::default()
        }],
        ..Default::default()
    };
    let bytes = ts.encode_to_vec();
    assert_eq!(
        prune_older(&bytes, 50),
        Pruned::default(),
        "nothing older than 50"
    );
    let p = prune_older(&bytes, 200);
    assert_eq!((p.samples, p.histograms, p.empty), (1, 1, false));
    let kept = v1::TimeSeries::decode(p.bytes.unwrap().as_slice()).unwrap();
    assert_eq!(kept.labels, ts.labels);
    assert_eq!(
        kept.samples
            .iter()
            .map(|s| (s.timestamp, s.value.to_bits()))
            .collect::<Vec<_>>(),
        [(200, STALE), (300, 3f64.to_bits())]
    );
    assert!(kept.histograms.is_empty());
    let p = prune_older(&bytes, 1000);
    assert_eq!((p.samples, p.histograms, p.empty), (3, 1, true));
}

#[test]
fn dedupe_keeps_the_first_copy_of_each_point() {
    let a = series(&[("__name__", "up"), ("job", "a")], &[(1, 1.0), (2, 2.0)]);
    let b = series(&[("__name__", "up"), ("job", "b")], &[(1, 5.0)]);
    let req = |ts: Vec<v1::TimeSeries>| v1::WriteRequest {
        timeseries: ts,
        metadata: vec![],
    };
    let first = decode(
        Protocol::V1,
        &snappy(&req(vec![a.clone(), b.clone()])),
        &opts(),
    )
    .unwrap();
    assert!(dedupe(&first.entries).is_none(), "nothing repeated");
    // The same request again, plus a new point of series a.
    let again = decode(Protocol::V1, &snappy(&req(vec![a.clone(), b])), &opts()).unwrap();
    let newer = decode(
        Protocol::V1,
        &snappy(&req(vec![series(
            &[("__name__", "up"), ("job", "a")],
            &[(2, 2.0), (3, 3.0)],
        )])),
        &opts(),
    )
    .unwrap();
    let batch: Vec<Entry> = first
        .entries
        .iter()
        .chain(&again.entries)
        .chain(&newer.entries)
        .cloned()
        .collect();
    let (kept, removed) = dedupe(&batch).unwrap();
    assert_eq!(
        removed, 4,
        "a@1, a@2, b@1 repeated, and a@2 in the newer request"
    );
    let d = Decoded {
        entries: kept,
        ..Decoded::default()
    };
    let got = reassemble(&d);
    let points: Vec<(String, i64)> = got
        .timeseries
        .iter()
        .flat_map(|t| {
            t.samples
                .iter()
                .map(move |s| (t.labels[1].value.clone(), s.timestamp))
        })
        .collect();
    assert_eq!(
        points,
        [
            ("a".to_string(), 1),
            ("a".to_string(), 2),
            ("b".to_string(), 1),
            ("a".to_string(), 3)
        ]
    );
    assert_eq!(d.entries.iter().map(|e| e.counts.samples).sum::<u32>(), 4);
}

#[test]
fn limits_refuse_or_drop_with_a_reason() {
    let many: Vec<(String, String)> = (0..70)
        .map(|i| (format!("l{i:02}"), "v".to_string()))
        .collect();
    let mut labels: Vec<(&str, &str)> = vec![("__name__", "wide")];
    labels.extend(many.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let long = "x".repeat(2000);
    let cases: Vec<(v1::TimeSeries, &str)> = vec![
        (
            series(&labels, &[(1, 1.0)]),
            "71 labels, over the limit of 63",
        ),
        (
            series(&[("__name__", "up"), ("job", &long)], &[(1, 1.0)]),
            "value of label \"job\" is 2000 bytes, over the limit of 1023",
        ),
        (
            series(&[("__name__", "up"), (&long[..600], "v")], &[(1, 1.0)]),
            "is 600 bytes, over the limit of 511",
        ),
    ];
    let ok = series(&[("__name__", "up")], &[(1, 1.0)]);
    for (bad, want) in cases {
        let req = v1::WriteRequest {
            timeseries: vec![ok.clone(), bad],
            metadata: vec![],
        };
        let e = decode(Protocol::V1, &snappy(&req), &opts()).unwrap_err();
        assert!(matches!(e, DecodeError::Limit { .. }), "{e}");
        assert!(e.to_string().contains(want), "{e} should contain {want}");
        let drop = Options {
            limits: Limits {
                drop_over_limit: true,
                ..Limits::default()
            },
            ..opts()
        };
        let d = decode(Protocol::V1, &snappy(&req), &drop).unwrap();
        assert_eq!(
            (d.counts.series, d.dropped_series),
            (1, 1),
            "the good series stays"
        );
    }
    let few = Options {
        limits: Limits {
            max_series: 1,
            max_samples_per_series: 2,
            ..Limits::default()
        },
        ..opts()
    };
    let two = v1::WriteRequest {
        timeseries: vec![ok.clone(), ok.clone()],
        metadata: vec![],
    };
    assert!(matches!(
        decode(Protocol::V1, &snappy(&two), &few),
        Err(DecodeError::TooManySeries { limit: 1 })
    ));
    let dense = v1::WriteRequest {
        timeseries: vec![series(
            &[("__name__", "up")],
            &[(1, 1.0), (2, 1.0), (3, 1.0)],
        )],
        metadata: vec![],
    };
    let e = decode(Protocol::V1, &snappy(&dense), &few)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("3 samples in one request, over the limit of 2"),
        "{e}"
    );
}

#[test]
fn malformed_points_are_refused_at_the_edge() {
    let ok = series(&[("__name__", "up")], &[(1, 1.0)]);
    let mut bytes = ok.encode_to_vec();
    // Append a sample whose value has the wrong wire type (varint instead of fixed64).
    wire::put_len_field(&mut bytes, 2, &[0x08, 0x01]);
    let mut req = Vec::new();
    wire::put_len_field(&mut req, FIELD_TIMESERIES, &bytes);
    let body = snap::raw::Encoder::new().compress_vec(&req).unwrap();
    let e = decode(Protocol::V1, &body, &opts())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("up{}: a sample is not a valid protobuf message"),
        "{e}"
    );
    // A truncated sample.
    let mut bytes = ok.encode_to_vec();
    wire::put_len_field(&mut bytes, 2, &[0x09, 0x00, 0x00]);
    let mut req = Vec::new();
    wire::put_len_field(&mut req, FIELD_TIMESERIES, &bytes);
    let body = snap::raw::Encoder::new().compress_vec(&req).unwrap();
    assert!(decode(Protocol::V1, &body, &opts()).is_err());
}

/// A sender may encode a series' key and length with padded varints (valid protobuf); the
/// chunk handed upstream must still be exactly the series, never a range starting inside the
/// sender's header.
#[test]
fn padded_series_headers_are_forwarded_as_valid_protobuf() {
    let req = v1::WriteRequest {
        timeseries: vec![
            series(&[("__name__", "up"), ("job", "a")], &[(1, 1.0)]),
            series(&[("__name__", "up"), ("job", "b")], &[(2, 2.0)]),
        ],
        metadata: vec![],
    };
    let mut raw = Vec::new();
    for ts in &req.timeseries {
        let body = ts.encode_to_vec();
        assert!(body.len() < 0x80);
        // Key 1/LEN, then the length as a two-byte varint padded with a zero continuation.
        raw.extend_from_slice(&[0x0a, body.len() as u8 | 0x80, 0x00]);
        raw.extend_from_slice(&body);
    }
    let body = bytes::Bytes::from(snap::raw::Encoder::new().compress_vec(&raw).unwrap());
    let chunked = decode_chunks(
        Protocol::V1,
        &body,
        &opts(),
        &BatchLimits {
            max_samples: 100,
            max_bytes: 1 << 20,
            flush_interval: std::time::Duration::ZERO,
        },
    )
    .unwrap();
    let mut out = Vec::new();
    write_body(&chunked.chunks, &mut out);
    let sent = v1::WriteRequest::decode(
        snap::raw::Decoder::new()
            .decompress_vec(&out)
            .unwrap()
            .as_slice(),
    )
    .expect("the upstream body is valid protobuf");
    assert_eq!(sent.encode_to_vec(), req.encode_to_vec());
}

fn relabel_opts(yaml: &str, cluster: Option<&str>) -> Options {
    let configs: Vec<promlink_relabel::RelabelConfig> =
        serde_saphyr::from_str(yaml).expect("rules YAML");
    Options {
        cluster: cluster.map(str::to_string),
        relabel: Some(std::sync::Arc::new(crate::Relabel::new(
            promlink_relabel::Rules::compile(&configs).expect("valid rules"),
        ))),
        ..opts()
    }
}

pub(crate) fn label_text(t: &v1::TimeSeries) -> String {
    t.labels
        .iter()
        .map(|l| format!("{}={}", l.name, l.value))
        .collect::<Vec<_>>()
        .join(",")
}

/// A 1.0 request with float samples as the equivalent 2.0 request.
pub(crate) fn v1_to_v2(req: &v1::WriteRequest) -> v2::Request {
    let mut symbols = vec![String::new()];
    let mut sym = |s: &str| -> u32 {
        let at = symbols.iter().position(|x| x == s).unwrap_or_else(|| {
            symbols.push(s.to_string());
            symbols.len() - 1
        });
        at as u32
    };
    let timeseries = req
        .timeseries
        .iter()
        .map(|t| v2::TimeSeries {
            labels_refs: t
                .labels
                .iter()
                .flat_map(|l| [sym(&l.name), sym(&l.value)])
                .collect(),
            samples: t
                .samples
                .iter()
                .map(|s| v2::Sample {
                    value: s.value,
                    timestamp: s.timestamp,
                    start_timestamp: 0,
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    v2::Request {
        symbols,
        timeseries,
    }
}

/// Relabeling on the receive path: dropped series are counted, changed ones re-encoded with
/// their samples and a shard key equal to that of the same labels sent as they are, and the
/// `cluster` label is there before the rules run (as Prometheus' external labels are).
#[test]
fn relabel_rules_drop_change_and_keep_series() {
    let req = v1::WriteRequest {
        timeseries: vec![
            series(
                &[("__name__", "go_gc_duration_seconds"), ("job", "a")],
                &[(1, 1.0)],
            ),
            series(
                &[("__name__", "up"), ("job", "a"), ("tmp", "x")],
                &[(1, 2.0), (2, 3.0)],
            ),
            series(&[("__name__", "up"), ("job", "b")], &[(1, 4.0)]),
            series(&[("__name__", "up"), ("job", "drop-me")], &[(1, 5.0)]),
        ],
        metadata: vec![],
    };
    let rules = r#"
- {source_labels: [__name__], regex: 'go_(gc|memstats)_.*', action: drop}
- {regex: tmp, action: labeldrop}
- {source_labels: [cluster, job], separator: '/', target_label: origin}
- {source_labels: [job], regex: 'drop-.*', action: drop}
"#;
    for protocol in [Protocol::V1, Protocol::V2] {
        let o = relabel_opts(rules, Some("c1"));
        let body = match protocol {
            Protocol::V1 => snappy(&req),
            // The same series as a 2.0 request, through the 2.0 path.
            Protocol::V2 => snappy(&v1_to_v2(&req)),
        };
        let d = decode(protocol, &body, &o).unwrap();
        let got = reassemble(&d);
        let texts: Vec<String> = got.timeseries.iter().map(label_text).collect();
        assert_eq!(
            texts,
            [
                "__name__=up,cluster=c1,job=a,origin=c1/a",
                "__name__=up,cluster=c1,job=b,origin=c1/b"
            ],
            "{protocol:?}"
        );
        assert_eq!(got.timeseries[0].samples.len(), 2, "samples kept");
        assert_eq!(
            d.relabel,
            RelabelDrops {
                series: 2,
                samples: 2,
                ..RelabelDrops::default()
            }
        );
        // The same labels sent as they are get the same shard key (per-series order holds
        // between relabeled and unrelabeled senders).
        let direct = decode(Protocol::V1, &snappy(&got), &opts()).unwrap();
        let keys = |d: &Decoded| d.entries.iter().map(|e| e.shard_key).collect::<Vec<_>>();
        assert_eq!(keys(&d), keys(&direct), "{protocol:?}");
    }
}

/// A series no rule changes is forwarded as the sender's bytes: the request stays one chunk
/// holding the sender's own compressed body.
#[test]
fn series_no_rule_changes_keep_the_zero_copy_path() {
    let body = fixture("prom242_rw1_500samples_a.snappy");
    let limits = BatchLimits {
        max_samples: 1 << 20,
        max_bytes: 64 << 20,
        flush_interval: std::time::Duration::ZERO,
    };
    let o = relabel_opts(
        "- {source_labels: [__name__], regex: 'nothing_matches', action: drop}",
        None,
    );
    let plain = decode_chunks(
        Protocol::V1,
        &bytes::Bytes::from(body.clone()),
        &opts(),
        &limits,
    )
    .unwrap();
    let ruled =
        decode_chunks(Protocol::V1, &bytes::Bytes::from(body.clone()), &o, &limits).unwrap();
    assert_eq!(ruled.chunks.len(), 1);
    assert_eq!(ruled.chunks[0].data, plain.chunks[0].data);
    assert_eq!(ruled.counts, plain.counts);
}

/// A rule that leaves a series without a metric name (or with an invalid label name) makes it
/// invalid: dropped and counted apart, never forwarded or a failed request.
#[test]
fn a_series_a_rule_makes_invalid_is_dropped_and_counted() {
    let req = v1::WriteRequest {
        timeseries: vec![series(
            &[("__name__", "up"), ("job", "a")],
            &[(1, 1.0), (2, 1.0)],
        )],
        metadata: vec![],
    };
    let o = relabel_opts("- {regex: __name__, action: labeldrop}", None);
    let d = decode(Protocol::V1, &snappy(&req), &o).unwrap();
    assert!(d.entries.is_empty());
    assert_eq!(
        (d.relabel.invalid_series, d.relabel.invalid_samples),
        (1, 2)
    );
}

/// Azure takes two label names that differ only in case for one label and drops the sample:
/// such a series is refused (400 naming it) or dropped, by `label_limit_action`, through every
/// path; relabel rules run first, so a rule can fix the collision (or make one).
#[test]
fn label_names_that_differ_only_in_case_are_caught_after_relabeling() {
    let clash = series(
        &[("Job", "b"), ("__name__", "up"), ("job", "a")],
        &[(1, 1.0)],
    );
    let ok = series(&[("__name__", "up"), ("job", "a")], &[(1, 1.0)]);
    let req = v1::WriteRequest {
        timeseries: vec![clash, ok],
        metadata: vec![],
    };
    let drop = |o: Options| Options {
        limits: Limits {
            drop_over_limit: true,
            ..o.limits
        },
        ..o
    };
    for protocol in [Protocol::V1, Protocol::V2] {
        let body = match protocol {
            Protocol::V1 => snappy(&req),
            Protocol::V2 => snappy(&v1_to_v2(&req)),
        };
        let e = decode(protocol, &body, &opts()).unwrap_err();
        assert!(
            e.to_string()
                .contains(r#"label names "Job" and "job" differ only in case"#),
            "{protocol:?}: {e}"
        );
        let d = decode(protocol, &body, &drop(opts())).unwrap();
        assert_eq!((d.counts.series, d.dropped_series), (1, 1), "{protocol:?}");
        // A rule fixes it: both series go.
        let fixed = relabel_opts("- {regex: Job, action: labeldrop}", None);
        let d = decode(protocol, &body, &fixed).unwrap();
        assert_eq!(d.counts.series, 2, "{protocol:?}");
        // A rule makes one: refused, or dropped.
        let made = relabel_opts("- {source_labels: [job], target_label: JOB}", None);
        let lone_req = v1::WriteRequest {
            timeseries: vec![series(&[("__name__", "up"), ("job", "a")], &[(1, 1.0)])],
            metadata: vec![],
        };
        let lone = match protocol {
            Protocol::V1 => snappy(&lone_req),
            Protocol::V2 => snappy(&v1_to_v2(&lone_req)),
        };
        let e = decode(protocol, &lone, &made).unwrap_err();
        assert!(
            e.to_string().contains("differ only in case"),
            "{protocol:?}: {e}"
        );
        let d = decode(protocol, &lone, &drop(made)).unwrap();
        assert_eq!((d.counts.series, d.dropped_series), (0, 1), "{protocol:?}");
    }
    // Upper-case names that do not collide pass the fast path untouched.
    let fine = v1::WriteRequest {
        timeseries: vec![series(
            &[("Zone", "z"), ("__name__", "up"), ("job", "a")],
            &[(1, 1.0)],
        )],
        metadata: vec![],
    };
    assert_eq!(
        decode(Protocol::V1, &snappy(&fine), &opts())
            .unwrap()
            .counts
            .series,
        1
    );
}
