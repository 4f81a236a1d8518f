use prost::Message;

use super::*;
use crate::proto::v1;
use crate::tests::{fixture, label_text, opts, series, snappy, v1_to_v2};
use crate::{decode_chunks, decode_routed, Protocol};

fn limits() -> BatchLimits {
    BatchLimits {
        max_samples: 1 << 20,
        max_bytes: 64 << 20,
        flush_interval: std::time::Duration::ZERO,
    }
}

fn route(selector: Option<&str>, continue_: bool, rules: Option<&str>) -> RouteRule {
    RouteRule {
        selector: selector.map(|s| Selector::parse(s).unwrap()),
        continue_,
        relabel: rules.map(|yaml| {
            let configs: Vec<promlink_relabel::RelabelConfig> =
                serde_saphyr::from_str(yaml).unwrap();
            Arc::new(crate::Relabel::new(
                promlink_relabel::Rules::compile(&configs).unwrap(),
            ))
        }),
        limits: limits(),
        spread: 1,
        budget: None,
    }
}

/// The series (as `name=value,...`) and metadata count a route's chunks hold.
fn contents(out: &RouteOutput) -> (Vec<String>, usize) {
    let mut series = Vec::new();
    let mut metadata = 0;
    for c in &out.chunks {
        let mut body = Vec::new();
        crate::write_body(std::slice::from_ref(c), &mut body);
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let req = v1::WriteRequest::decode(raw.as_slice()).unwrap();
        series.extend(req.timeseries.iter().map(label_text));
        metadata += req.metadata.len();
    }
    (series, metadata)
}

fn request() -> v1::WriteRequest {
    let s = |ns: &str, job: &str| {
        series(
            &[("__name__", "up"), ("job", job), ("namespace", ns)],
            &[(1_000, 1.0)],
        )
    };
    v1::WriteRequest {
        timeseries: vec![s("team-a", "x"), s("team-b", "y"), s("other", "z")],
        metadata: vec![v1::MetricMetadata {
            r#type: 1,
            metric_family_name: "up".into(),
            help: "h".into(),
            unit: String::new(),
        }],
    }
}

#[test]
fn the_first_matching_route_takes_a_series_and_metadata_goes_to_every_route() {
    let body = bytes::Bytes::from(snappy(&request()));
    let routes = [
        route(Some(r#"{namespace=~"team-a|team-b"}"#), false, None),
        route(Some(r#"up{job="z"}"#), false, None),
        route(None, false, None),
    ];
    let r = decode_routed(Protocol::V1, &body, &opts(), &routes).unwrap();
    let (a, ma) = contents(&r.routes[0]);
    let (b, mb) = contents(&r.routes[1]);
    let (c, mc) = contents(&r.routes[2]);
    assert_eq!(
        a,
        [
            "__name__=up,job=x,namespace=team-a",
            "__name__=up,job=y,namespace=team-b"
        ]
    );
    assert_eq!(b, ["__name__=up,job=z,namespace=other"]);
    assert!(c.is_empty());
    assert_eq!((ma, mb, mc), (1, 1, 1));
    assert_eq!(r.routes[0].counts.samples, 2);
    assert_eq!(r.routes[2].counts.metadata, 1);
    assert_eq!(r.unrouted.series, 0);
    // Each series keeps its key, so its order holds within its route.
    let keys: Vec<_> = r.routes[0].chunks[0].keys.to_vec();
    assert_eq!(keys.len(), 2);
}

#[test]
fn continue_offers_a_series_to_later_routes_and_unmatched_ones_are_counted() {
    let body = bytes::Bytes::from(snappy(&request()));
    let routes = [
        route(Some(r#"{job="x"}"#), true, None),
        route(Some(r#"{namespace=~"team-.+"}"#), false, None),
    ];
    let r = decode_routed(Protocol::V1, &body, &opts(), &routes).unwrap();
    assert_eq!(
        contents(&r.routes[0]).0,
        ["__name__=up,job=x,namespace=team-a"]
    );
    assert_eq!(
        contents(&r.routes[1]).0,
        [
            "__name__=up,job=x,namespace=team-a",
            "__name__=up,job=y,namespace=team-b"
        ]
    );
    assert_eq!(r.unrouted.series, 1);
    assert_eq!(r.unrouted.samples, 1);
    // What was received is counted once, whatever the routes did.
    assert_eq!(r.counts.series, 3);
}

#[test]
fn a_routes_rules_apply_to_its_series_only() {
    let body = bytes::Bytes::from(snappy(&request()));
    let routes = [
        route(
            Some(r#"{namespace="team-a"}"#),
            true,
            Some("- {regex: job, action: labeldrop}"),
        ),
        route(
            None,
            false,
            Some("- {source_labels: [namespace], regex: team-b, action: drop}"),
        ),
    ];
    let r = decode_routed(Protocol::V1, &body, &opts(), &routes).unwrap();
    assert_eq!(contents(&r.routes[0]).0, ["__name__=up,namespace=team-a"]);
    assert_eq!(
        contents(&r.routes[1]).0,
        [
            "__name__=up,job=x,namespace=team-a",
            "__name__=up,job=z,namespace=other"
        ]
    );
    assert_eq!(r.routes[1].relabel.series, 1);
    assert_eq!(r.routes[1].relabel.samples, 1);
}

#[test]
fn a_route_that_takes_everything_unchanged_forwards_the_senders_bytes() {
    let body = bytes::Bytes::from(fixture("prom242_rw1_500samples_a.snappy"));
    let plain = decode_chunks(Protocol::V1, &body, &opts(), &limits()).unwrap();
    let routes = [
        route(Some(r#"{__name__="nothing_has_this_name"}"#), false, None),
        route(None, false, None),
    ];
    let r = decode_routed(Protocol::V1, &body, &opts(), &routes).unwrap();
    assert!(r.routes[0].chunks.iter().all(|c| c.counts.series == 0));
    assert_eq!(r.routes[1].chunks.len(), 1);
    assert_eq!(r.routes[1].chunks[0].data, plain.chunks[0].data);
    // ... the very bytes of the body, not a copy compressed again.
    assert_eq!(
        r.routes[1].chunks[0].data.as_ptr(),
        body.slice(body.len() - r.routes[1].chunks[0].data.len()..)
            .as_ptr()
    );
}

#[test]
fn remote_write_2_is_routed_the_same_way() {
    let req = request();
    let v2 = v1_to_v2(&req);
    let routes = [
        route(Some(r#"{namespace=~"team-.*"}"#), false, None),
        route(None, false, None),
    ];
    let one = decode_routed(
        Protocol::V1,
        &bytes::Bytes::from(snappy(&req)),
        &opts(),
        &routes,
    )
    .unwrap();
    let two = decode_routed(
        Protocol::V2,
        &bytes::Bytes::from(snappy(&v2)),
        &opts(),
        &routes,
    )
    .unwrap();
    for i in 0..2 {
        assert_eq!(contents(&one.routes[i]).0, contents(&two.routes[i]).0);
        assert_eq!(
            one.routes[i].chunks[0].keys.to_vec(),
            two.routes[i].chunks[0].keys.to_vec()
        );
    }
}

#[test]
fn a_spread_route_sends_each_series_to_one_destination_always_the_same() {
    // 300 series, spread over three destinations.
    let many = v1::WriteRequest {
        timeseries: (0..300)
            .map(|i| {
                series(
                    &[("__name__", "up"), ("instance", &format!("host-{i}"))],
                    &[(1_000, 1.0)],
                )
            })
            .collect(),
        metadata: Vec::new(),
    };
    let body = bytes::Bytes::from(snappy(&many));
    let mut spread = route(None, false, Some("[{target_label: team, replacement: a}]"));
    spread.spread = 3;
    // A route before it, so the spread route's outputs do not start at 0.
    let routes = [route(Some(r#"{instance="host-7"}"#), false, None), spread];
    let split =
        |r: &Routed| -> Vec<Vec<String>> { r.routes.iter().map(|o| contents(o).0).collect() };
    let r = decode_routed(Protocol::V1, &body, &opts(), &routes).unwrap();
    assert_eq!(
        r.routes.len(),
        4,
        "one output for the first route, three for the spread one"
    );
    let parts = split(&r);
    assert_eq!(parts[0], ["__name__=up,instance=host-7"]);
    let mut all: Vec<&String> = parts[1..].iter().flatten().collect();
    // Every series the spread route took went to exactly one of its destinations, relabelled.
    assert_eq!(all.len(), 299);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 299);
    assert!(all.iter().all(|s| s.ends_with(",team=a")));
    // Each destination gets a share (300 series over 3: far from 0 or all).
    for (i, p) in parts[1..].iter().enumerate() {
        assert!(
            (50..150).contains(&p.len()),
            "destination {i} got {} series",
            p.len()
        );
        assert_eq!(r.routes[1 + i].counts.series, p.len() as u64);
    }
    // The same series always go to the same destination.
    let again = split(&decode_routed(Protocol::V1, &body, &opts(), &routes).unwrap());
    assert_eq!(again, parts);
}

#[test]
fn spread_part_is_stable_and_in_range() {
    assert_eq!(spread_part(12345, 1), 0);
    assert_eq!(spread_part(12345, 0), 0);
    let mut seen = [0usize; 5];
    for key in 0..10_000u64 {
        let p = spread_part(key.wrapping_mul(0x9e37_79b9_7f4a_7c15), 5);
        assert_eq!(p, spread_part(key.wrapping_mul(0x9e37_79b9_7f4a_7c15), 5));
        seen[p] += 1;
    }
    assert!(seen.iter().all(|&n| (1500..2500).contains(&n)), "{seen:?}");
}

#[test]
fn a_full_budget_drops_new_series_and_does_not_pass_them_on() {
    let body = bytes::Bytes::from(snappy(&request()));
    // team-a and team-b go to the budgeted route (room for one series), the rest to default.
    let mut budgeted = route(Some(r#"{namespace=~"team-.+"}"#), false, None);
    let budget = Arc::new(SeriesBudget::new(1, std::time::Duration::from_secs(3600)));
    budgeted.budget = Some(budget.clone());
    let routes = [budgeted, route(None, false, None)];
    let r = decode_routed(Protocol::V1, &body, &opts(), &routes).unwrap();
    assert_eq!(
        contents(&r.routes[0]).0,
        ["__name__=up,job=x,namespace=team-a"]
    );
    assert_eq!(r.routes[0].over_budget.series, 1);
    assert_eq!(r.routes[0].over_budget.samples, 1);
    // The series over budget is not handed to the catch-all route.
    assert_eq!(
        contents(&r.routes[1]).0,
        ["__name__=up,job=z,namespace=other"]
    );
    assert_eq!(budget.active(), 1);
    // The admitted series keeps flowing; the refused one stays refused.
    let again = decode_routed(Protocol::V1, &body, &opts(), &routes).unwrap();
    assert_eq!(contents(&again.routes[0]).0, contents(&r.routes[0]).0);
    assert_eq!(again.routes[0].over_budget.series, 1);
    // With continue, a later route still gets what the budget refused.
    let mut budgeted = route(Some(r#"{namespace=~"team-.+"}"#), true, None);
    budgeted.budget = Some(Arc::new(SeriesBudget::new(
        1,
        std::time::Duration::from_secs(3600),
    )));
    let routes = [budgeted, route(None, false, None)];
    let r = decode_routed(Protocol::V1, &body, &opts(), &routes).unwrap();
    assert_eq!(contents(&r.routes[1]).0.len(), 3);
}

#[test]
fn a_budget_counts_the_series_as_the_routes_rules_leave_them() {
    // The rule folds every job into one value: three series become two distinct ones.
    let body = bytes::Bytes::from(snappy(&request()));
    let mut r0 = route(
        None,
        false,
        Some("[{regex: job, action: labeldrop}, {source_labels: [namespace], regex: 'team-.+', target_label: namespace, replacement: teams}]"),
    );
    let budget = Arc::new(SeriesBudget::new(2, std::time::Duration::from_secs(3600)));
    r0.budget = Some(budget.clone());
    let r = decode_routed(Protocol::V1, &body, &opts(), &[r0]).unwrap();
    assert_eq!(r.routes[0].over_budget.series, 0);
    assert_eq!(budget.active(), 2);
    assert_eq!(
        contents(&r.routes[0]).0.len(),
        3,
        "two samples of one series, one of another"
    );
}
