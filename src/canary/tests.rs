use super::*;

fn target(destination: Option<usize>) -> Target {
    Target {
        route: "team-a".into(),
        destination,
        queue: Arc::new(Queue::Memory(crate::queue::MemoryQueue::new(1 << 20))),
        identity: crate::config::Settings {
            ingestion_url: Some("http://127.0.0.1:1/api/v1/write".into()),
            identity: Some(IdentityKind::None),
            allow_plain_http: Some(true),
            ..crate::config::Settings::default()
        }
        .resolve()
        .expect("valid")
        .destination
        .identity,
        not_visible: NotVisible::default(),
        settings: settings(),
        acks: Arc::default(),
    }
}

fn settings() -> CanarySettings {
    CanarySettings {
        query_url: "https://ws-1.eastus.prometheus.monitor.azure.com"
            .parse()
            .expect("url"),
        interval: Duration::from_secs(60),
        timeout: Duration::from_secs(300),
        token_scope: "https://monitor.azure.com/.default".into(),
        private_link: crate::privatelink::Mode::Off,
        dns_servers: Vec::new(),
        rules: crate::privatelink::AddressRules::default(),
        dns_timeout: Duration::from_secs(1),
    }
}

#[test]
fn the_query_names_route_and_instance_with_equality_matchers_only() {
    assert_eq!(
        selector(&target(None), "pod-1"),
        r#"promlink_canary{promlink_route="team-a",promlink_instance="pod-1"}"#
    );
    assert_eq!(
        selector(&target(Some(2)), r#"we"ird\"#),
        r#"promlink_canary{promlink_route="team-a",promlink_instance="we\"ird\\",promlink_destination="2"}"#
    );
}

#[test]
fn the_canary_series_has_sorted_labels_and_the_write_time_as_value() {
    let s = series(&target(Some(0)), "pod-1", 1_700_000_000.5);
    let names: Vec<&str> = s.labels.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "__name__",
            "promlink_destination",
            "promlink_instance",
            "promlink_route"
        ]
    );
    assert_eq!(s.labels[0].value, METRIC);
    assert_eq!(s.samples.len(), 1);
    assert_eq!(s.samples[0].value, 1_700_000_000.5);
}

#[test]
fn answers_are_read_for_their_highest_value() {
    let answer = br#"{"status":"success","data":{"resultType":"vector","result":[
        {"metric":{"__name__":"promlink_canary"},"value":[1700000001.0,"1700000000.25"]},
        {"metric":{"__name__":"promlink_canary","cluster":"c1"},"value":[1700000001.0,"1700000000.5"]}]}}"#;
    assert_eq!(
        read_answer(answer).expect("an answer"),
        Some(1_700_000_000.5)
    );
    let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
    assert_eq!(read_answer(empty).expect("an answer"), None);
    for bad in [
        &br#"{"status":"error","errorType":"bad_data","error":"x"}"#[..],
        b"<html>proxy login</html>",
        br#"{"status":"success","data":{"result":[{"metric":{}}]}}"#,
    ] {
        let e = read_answer(bad).expect_err("not an answer");
        assert_eq!(e.reason(), "answer", "{e}");
    }
}

#[test]
fn each_refusal_has_its_reason_and_fix() {
    let settings = settings();
    let mut identity = target(None).identity;
    identity.kind = IdentityKind::ClientSecret;
    identity.client_id = Some("app-1".into());
    let forbidden = QueryError::Status {
        status: 403,
        body: String::new(),
    };
    assert_eq!(forbidden.reason(), "forbidden");
    let fix = forbidden.fix(&settings, &identity);
    assert!(
        fix.contains("Monitoring Data Reader") && fix.contains("app-1"),
        "{fix}"
    );
    let unauthorized = QueryError::Status {
        status: 401,
        body: String::new(),
    };
    let fix = unauthorized.fix(&settings, &identity);
    assert!(
        fix.contains("https://prometheus.monitor.azure.com/.default")
            && fix.contains("now https://monitor.azure.com/.default"),
        "{fix}"
    );
    let dns = QueryError::Transport("dns error".into(), "dns");
    assert!(dns
        .fix(&settings, &identity)
        .contains("ws-1.eastus.prometheus.monitor.azure.com"));
    assert_eq!(
        QueryError::Status {
            status: 500,
            body: String::new()
        }
        .reason(),
        "status"
    );
}
