use super::*;

struct NoChecks;

impl status::StatusSource for NoChecks {
    fn checks(&self) -> Vec<status::Check> {
        Vec::new()
    }
}

fn fixture() -> bytes::Bytes {
    bytes::Bytes::from(
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/prom242_rw1_500samples_a.snappy"
        ))
        .unwrap(),
    )
}

fn route(name: &str, selector: Option<&str>, queue_bytes: usize) -> ReceiveRoute {
    ReceiveRoute {
        name: name.into(),
        rule: codec::RouteRule {
            selector: selector.map(|s| codec::relabel_rules::Selector::parse(s).unwrap()),
            continue_: true,
            relabel: None,
            limits: codec::BatchLimits {
                max_samples: 5000,
                max_bytes: 4 << 20,
                flush_interval: std::time::Duration::from_secs(1),
            },
            spread: 1,
            budget: None,
        },
        queues: vec![Arc::new(crate::queue::Queue::Memory(
            crate::queue::MemoryQueue::new(queue_bytes),
        ))],
    }
}

fn receiver(routes: Vec<ReceiveRoute>) -> Receiver {
    receiver_with(codec::Options::default(), routes)
}

fn receiver_with(codec: codec::Options, routes: Vec<ReceiveRoute>) -> Receiver {
    let cfg = ReceiveConfig {
        max_body_bytes: 1 << 20,
        codec,
        full_status: FullStatus::ServiceUnavailable,
        retry_after_secs: 5,
        max_inflight_decode_bytes: 100_000,
        body_read_timeout: std::time::Duration::from_secs(5),
        max_concurrent_requests: 8,
        max_inflight_body_bytes: 1 << 20,
    };
    Receiver::new(
        cfg,
        routes,
        Metrics::default(),
        Box::new(NoChecks),
        Arc::new(Default::default()),
        Arc::new(auth::Auth::new(auth::AuthConfig::default(), Metrics::default()).unwrap()),
    )
}

/// A route whose queue is full does not hold back the others: its part is dropped and
/// counted for it. When no route can take anything, the write is refused (retryable).
#[tokio::test]
async fn a_full_route_queue_drops_its_part_only_when_another_route_took_its_own() {
    let body = fixture();
    let label = |reason| crate::telemetry::RouteReasonLabels {
        route: "b".into(),
        reason,
    };
    // Both routes take every series (continue); b's queue holds almost nothing, and is
    // full once it holds one write (an empty queue takes any one write).
    let rx = receiver(vec![route("a", None, 1 << 20), route("b", None, 100)]);
    assert_eq!(rx.accept(Protocol::V1, &body).await.unwrap().samples, 500);
    let held = rx.routing().routes[1].queues[0].used_bytes();
    assert_eq!(rx.accept(Protocol::V1, &body).await.unwrap().samples, 500);
    assert_eq!(rx.routing().routes[0].queues[0].used_bytes(), 2 * held);
    assert_eq!(rx.routing().routes[1].queues[0].used_bytes(), held);
    let m = &rx.metrics.routes;
    assert_eq!(
        m.samples_dropped.get_or_create(&label("queue_full")).get(),
        500
    );
    let took = |r: &str| {
        m.samples_received
            .get_or_create(&crate::telemetry::RouteLabel { route: r.into() })
            .get()
    };
    assert_eq!((took("a"), took("b")), (1000, 500));

    // Only b has series for this write, and it is full: refused, nothing counted as taken.
    let rx = receiver(vec![
        route("a", Some(r#"{__name__="no_such_metric"}"#), 1 << 20),
        route("b", None, 100),
    ]);
    rx.accept(Protocol::V1, &body).await.unwrap();
    let e = rx.accept(Protocol::V1, &body).await.unwrap_err();
    assert!(
        matches!(e, ReceiveError::Queue(PushError::Full { .. })),
        "{e}"
    );
    let m = &rx.metrics.routes;
    assert_eq!(
        m.samples_dropped.get_or_create(&label("queue_full")).get(),
        0
    );
}

#[tokio::test]
async fn decoding_budget_turns_excess_into_a_retryable_503() {
    let body = bytes::Bytes::from(
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/prom242_rw1_500samples_a.snappy"
        ))
        .unwrap(),
    );
    let rx = receiver(vec![route("default", None, 1 << 20)]);
    // Another request is decoding 50 kB: this one needs 64,945 more than the 100 kB budget has.
    let held = rx.decoding.try_acquire_many(50_000).unwrap();
    let e = rx.accept(Protocol::V1, &body).await.unwrap_err();
    assert!(matches!(e, ReceiveError::Busy { needed: 64_945 }), "{e}");
    assert_eq!(
        status_of(&e, FullStatus::TooManyRequests),
        StatusCode::SERVICE_UNAVAILABLE
    );
    drop(held);
    assert_eq!(rx.accept(Protocol::V1, &body).await.unwrap().samples, 500);
    assert_eq!(
        rx.decoding.available_permits(),
        100_000,
        "the budget is given back"
    );
}

/// A relabel rule set (every series gets a label).
fn relabel() -> Arc<codec::Relabel> {
    let configs: Vec<codec::relabel_rules::RelabelConfig> =
        serde_saphyr::from_str("- {target_label: team, replacement: infra}\n").unwrap();
    Arc::new(codec::Relabel::new(
        codec::relabel_rules::Rules::compile(&configs).unwrap(),
    ))
}

/// `promlink_relabel_cache_lookups_total` counts each series' first write as a miss and the
/// next as a hit, per rule set, and keeps counting up across a reload's new caches.
#[tokio::test]
async fn relabel_cache_lookups_are_counted_by_rule_set_and_survive_a_reload() {
    let body = fixture();
    let opts = || codec::Options {
        relabel: Some(relabel()),
        ..codec::Options::default()
    };
    let own = || {
        let mut r = route("a", None, 1 << 20);
        r.rule.relabel = Some(relabel());
        r
    };
    let rx = receiver_with(opts(), vec![own()]);
    let count = |route: &str, result| {
        rx.metrics
            .relabel_cache_lookups
            .get_or_create(&metrics::CacheLabels {
                route: route.into(),
                result,
            })
            .get()
    };
    rx.accept(Protocol::V1, &body).await.unwrap();
    rx.count_caches();
    let series = count("", "miss");
    assert!(series > 0);
    assert_eq!((count("", "hit"), count("a", "miss")), (0, series));
    rx.accept(Protocol::V1, &body).await.unwrap();
    rx.count_caches();
    rx.count_caches();
    assert_eq!((count("", "hit"), count("", "miss")), (series, series));
    assert_eq!((count("a", "hit"), count("a", "miss")), (series, series));
    // A reload: new rule sets, new caches; the counters go on from where they were.
    rx.set_routing(Routing::new(opts(), vec![own()]));
    rx.accept(Protocol::V1, &body).await.unwrap();
    rx.count_caches();
    assert_eq!((count("", "hit"), count("", "miss")), (series, 2 * series));
    assert_eq!(
        (count("a", "hit"), count("a", "miss")),
        (series, 2 * series)
    );
}

/// `promlink_series_cache_lookups_total` counts each series' first write as a miss and the
/// next as a hit; `promlink_series_cache_bytes` shows the table.
#[tokio::test]
async fn series_cache_lookups_and_size_are_counted() {
    let body = fixture();
    let cache = Arc::new(codec::SeriesCache::new(1 << 20).unwrap());
    let opts = codec::Options {
        series_cache: Some(cache.clone()),
        ..codec::Options::default()
    };
    let rx = receiver_with(opts, vec![route("a", None, 1 << 20)]);
    let count = |result| {
        rx.metrics
            .series_cache_lookups
            .get_or_create(&metrics::LookupLabel { result })
            .get()
    };
    rx.accept(Protocol::V1, &body).await.unwrap();
    rx.count_caches();
    let series = count("miss");
    assert!(series > 0);
    assert_eq!(count("hit"), 0);
    rx.accept(Protocol::V1, &body).await.unwrap();
    rx.count_caches();
    rx.count_caches();
    assert_eq!((count("hit"), count("miss")), (series, series));
    assert_eq!(rx.metrics.series_cache_bytes.get(), 1 << 20);
}
