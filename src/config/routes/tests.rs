use crate::config::Settings;

const DCR_A: &str = "dcr-0123456789abcdef0123456789abcdef";
const DCR_B: &str = "dcr-fedcba9876543210fedcba9876543210";

fn url(dce: &str, dcr: &str) -> String {
    format!("https://{dce}.eastus-1.metrics.ingest.monitor.azure.com/dataCollectionRules/{dcr}/streams/Microsoft-PrometheusMetrics/api/v1/write?api-version=2023-04-24")
}

/// Settings from a YAML text.
fn yaml(text: &str) -> Settings {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("promlink.yaml");
    std::fs::write(&file, text).unwrap();
    Settings::from_file(&file).unwrap()
}

/// The problems of a configuration, one `key = "value": why` per line.
fn problems(s: Settings) -> Vec<String> {
    match s.resolve() {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn routes_inherit_the_top_level_and_override_their_own_keys() {
    let s = yaml(&format!(
        r#"
identity: user-assigned
client_id: 11111111-1111-1111-1111-111111111111
queue_dir: /var/lib/promlink
max_samples_per_request: 4000
write_relabel_configs:
  - {{source_labels: [__name__], regex: 'go_.*', action: drop}}
routes:
  - name: team-a
    match: '{{namespace=~"team-a|team-b"}}'
    ingestion_url: {a}
    client_id: 33333333-3333-3333-3333-333333333333
    private_link: prefer
    max_samples_per_request: 1000
    queue_max_bytes: 1048576
    write_relabel_configs:
      - {{regex: pod_template_hash, action: labeldrop}}
  - name: default
    ingestion_url: {b}
"#,
        a = url("dce-a", DCR_A),
        b = url("dce-b", DCR_B)
    ));
    let c = s.resolve().unwrap();
    assert!(c.routed);
    let names: Vec<&str> = c.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["team-a", "default"]);
    let (a, d) = (&c.routes[0], &c.routes[1]);
    assert_eq!(
        a.selector.as_ref().map(ToString::to_string).as_deref(),
        Some(r#"{namespace=~"team-a|team-b"}"#)
    );
    assert!(d.selector.is_none() && !a.continue_);
    assert_eq!(a.relabel.as_ref().map(|r| r.len()), Some(1));
    assert!(d.relabel.is_none());
    // Overridden by the route, inherited by the other.
    assert_eq!(
        a.destination().identity.client_id.as_deref(),
        Some("33333333-3333-3333-3333-333333333333")
    );
    assert_eq!(
        d.destination().identity.client_id.as_deref(),
        Some("11111111-1111-1111-1111-111111111111")
    );
    assert_eq!(a.destination().private_link.mode.as_str(), "prefer");
    assert_eq!(d.destination().private_link.mode.as_str(), "require");
    assert_eq!(a.destination().upstream.batch.max_samples, 1000);
    assert_eq!(d.destination().upstream.batch.max_samples, 4000);
    assert_eq!(a.destination().queue.max_bytes, 1 << 20);
    // Each route queues in its own directory.
    let dir = |r: &crate::config::Route| r.destination().queue.disk.as_ref().unwrap().dir.clone();
    assert_eq!(dir(a), std::path::Path::new("/var/lib/promlink/team-a"));
    assert_eq!(dir(d), std::path::Path::new("/var/lib/promlink/default"));
    assert!(a.destination().upstream.url.as_str().contains("dce-a"));
    // The global rules stay on the receive path.
    assert_eq!(c.receive.codec.relabel.as_ref().map(|r| r.len()), Some(1));
}

#[test]
fn without_routes_the_one_destination_is_the_default_route() {
    let c = yaml(&format!(
        "ingestion_url: {}\nqueue_dir: /q\n",
        url("d", DCR_A)
    ))
    .resolve()
    .unwrap();
    assert!(!c.routed);
    assert_eq!(c.routes.len(), 1);
    assert_eq!(c.routes[0].name, "default");
    // The queue stays where it always was.
    assert_eq!(
        c.routes[0].destination().queue.disk.as_ref().unwrap().dir,
        std::path::Path::new("/q")
    );
}

#[test]
fn ingestion_url_and_routes_together_are_refused() {
    let p = problems(yaml(&format!(
        "ingestion_url: {}\nroutes:\n  - name: default\n    ingestion_url: {}\n",
        url("d", DCR_A),
        url("e", DCR_B)
    )));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("ingestion_url = ") && p[0].contains("is given with routes"),
        "{p:?}"
    );
}

#[test]
fn route_problems_name_the_route_key() {
    let p = problems(yaml(&format!(
        r#"
shards: 0
routes:
  - name: Team_A
    match: '{{namespace=~"("}}'
    ingestion_url: {a}
    write_relabel_configs:
      - {{action: hashmod, source_labels: [job], target_label: s}}
  - name: log
    ingestion_url: {a}
  - name: b
  - name: c
    ingestion_url: {a}
  - name: c
    match: '{{job="x"}}'
    ingestion_url: {a}
"#,
        a = url("d", DCR_A)
    )));
    let has = |prefix: &str| p.iter().any(|l| l.starts_with(prefix));
    assert!(has("routes[0].name = \"Team_A\": must match"), "{p:#?}");
    assert!(has("routes[0].match = "), "{p:#?}");
    assert!(has("routes[0].write_relabel_configs[0].modulus"), "{p:#?}");
    assert!(has("routes[1].name = \"log\": is reserved"), "{p:#?}");
    assert!(has("routes[2].ingestion_url = \"\": required"), "{p:#?}");
    assert!(has("routes[4].name = \"c\": another route"), "{p:#?}");
    assert!(has("routes[4].match = "), "{p:#?}");
    // An inherited problem is reported once, under its own key.
    assert_eq!(
        p.iter().filter(|l| l.starts_with("shards = ")).count(),
        1,
        "{p:#?}"
    );
}

#[test]
fn unknown_route_keys_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("promlink.yaml");
    std::fs::write(&file, "routes:\n  - name: a\n    ingestion_ur: x\n").unwrap();
    let e = Settings::from_file(&file).unwrap_err();
    assert!(e.to_string().contains("ingestion_ur"), "{e}");
}

#[test]
fn ingestion_urls_give_a_route_one_destination_and_queue_per_url() {
    let s = yaml(&format!(
        "queue_dir: /q\nroutes:\n  - name: one\n    match: '{{job=\"x\"}}'\n    ingestion_urls: [{a}]\n  - name: default\n    max_requests_per_minute: 1000\n    ingestion_urls: [{a}, {b}, {c}]\n",
        a = url("dce-a", DCR_A),
        b = url("dce-b", DCR_B),
        c = url("dce-c", DCR_A),
    ));
    let c = s.resolve().unwrap();
    assert_eq!(c.routes.len(), 2);
    // A list of one is the same as ingestion_url.
    assert_eq!(c.routes[0].destinations.len(), 1);
    let d = &c.routes[1].destinations;
    assert_eq!(d.len(), 3);
    let hosts: Vec<&str> = d
        .iter()
        .map(|d| d.upstream.url.host_str().unwrap())
        .collect();
    assert!(
        hosts[0].starts_with("dce-a.")
            && hosts[1].starts_with("dce-b.")
            && hosts[2].starts_with("dce-c.")
    );
    let dirs: Vec<_> = d
        .iter()
        .map(|d| d.queue.disk.as_ref().unwrap().dir.clone())
        .collect();
    assert_eq!(
        dirs,
        ["/q/default", "/q/default.1", "/q/default.2"].map(std::path::PathBuf::from)
    );
    // The route's keys hold for each URL (the rate is per URL).
    assert!(d
        .iter()
        .all(|d| d.upstream.max_requests_per_minute == Some(1000)));
}

#[test]
fn ingestion_urls_problems_name_the_url() {
    let p = problems(yaml(&format!(
        "routes:\n  - name: one\n    ingestion_urls: []\n  - name: both\n    ingestion_url: {a}\n    ingestion_urls: [{a}, {a}]\n  - name: bad\n    ingestion_urls: [{a}, 'ftp://x']\n",
        a = url("dce-a", DCR_A),
    )));
    let has = |prefix: &str| p.iter().any(|l| l.starts_with(prefix));
    assert!(has("routes[0].ingestion_urls = \"\": is empty"), "{p:#?}");
    assert!(
        p.iter()
            .any(|l| l.starts_with("routes[1].ingestion_urls = ") && l.contains("not both")),
        "{p:#?}"
    );
    assert!(has("routes[2].ingestion_urls[1] = \"ftp://x\""), "{p:#?}");
    assert_eq!(p.len(), 3, "{p:#?}");
}

#[test]
fn series_budgets_are_per_route_inherited_and_checked() {
    let s = yaml(&format!(
        "max_active_series: 1000\nroutes:\n  - name: a\n    match: '{{job=\"x\"}}'\n    ingestion_url: {a}\n    max_active_series: 200000\n    active_series_window: 1h\n  - name: default\n    ingestion_url: {a}\n",
        a = url("dce-a", DCR_A),
    ));
    let c = s.resolve().unwrap();
    let b: Vec<_> = c.routes.iter().map(|r| r.budget).collect();
    assert_eq!(
        b,
        [
            Some(crate::config::Budget {
                max_active_series: 200_000,
                window: std::time::Duration::from_secs(3600)
            }),
            Some(crate::config::Budget {
                max_active_series: 1000,
                window: std::time::Duration::from_secs(12 * 3600)
            }),
        ]
    );
    let p = problems(yaml(&format!(
        "routes:\n  - name: a\n    ingestion_url: {a}\n    max_active_series: 0\n    active_series_window: 500ms\n",
        a = url("dce-a", DCR_A),
    )));
    assert!(
        p.iter().any(
            |l| l.starts_with("routes[0].max_active_series = \"0\": must be greater than zero")
        ),
        "{p:#?}"
    );
    assert!(
        p.iter()
            .any(|l| l
                .starts_with("routes[0].active_series_window = \"500ms\": must be at least 1s")),
        "{p:#?}"
    );
}

#[test]
fn without_routes_the_top_level_budget_is_the_default_routes() {
    let c = yaml(&format!(
        "ingestion_url: {}\nmax_active_series: 5\n",
        url("d", DCR_A)
    ))
    .resolve()
    .unwrap();
    assert_eq!(c.routes[0].budget.map(|b| b.max_active_series), Some(5));
    let c = yaml(&format!("ingestion_url: {}\n", url("d", DCR_A)))
        .resolve()
        .unwrap();
    assert_eq!(c.routes[0].budget, None);
}

/// Each route reads its canary back at its own `query_url` (different routes usually mean
/// different workspaces), or at the top level's; a bad one is named under the route.
#[test]
fn each_route_has_its_own_or_the_inherited_query_url() {
    let text = |top: &str| {
        format!(
            r#"
identity: user-assigned
client_id: 11111111-1111-1111-1111-111111111111
canary_interval: 30s
{top}
routes:
  - name: team-a
    match: '{{namespace="team-a"}}'
    ingestion_url: {a}
    query_url: https://ws-a.eastus.prometheus.monitor.azure.com
  - name: default
    ingestion_url: {b}
"#,
            a = url("dce-a", DCR_A),
            b = url("dce-b", DCR_B)
        )
    };
    let c = yaml(&text("")).resolve().unwrap();
    let a = c.routes[0].canary.as_ref().expect("team-a has a canary");
    assert_eq!(
        a.query_url.as_str(),
        "https://ws-a.eastus.prometheus.monitor.azure.com/"
    );
    assert_eq!(a.interval, std::time::Duration::from_secs(30));
    assert_eq!(
        a.token_scope,
        "https://prometheus.monitor.azure.com/.default"
    );
    assert!(c.routes[1].canary.is_none(), "no query_url for default");

    let c = yaml(&text(
        "query_url: https://ws-main.eastus.prometheus.monitor.azure.com",
    ))
    .resolve()
    .unwrap();
    let inherited = c.routes[1].canary.as_ref().expect("inherited");
    assert_eq!(
        inherited.query_url.host_str(),
        Some("ws-main.eastus.prometheus.monitor.azure.com")
    );
    assert_eq!(
        c.routes[0]
            .canary
            .as_ref()
            .and_then(|c| c.query_url.host_str()),
        Some("ws-a.eastus.prometheus.monitor.azure.com")
    );

    let bad = problems(yaml(
        &text("").replace("https://ws-a.eastus", "http://ws-a.eastus"),
    ));
    assert!(
        bad.iter().any(|p| p.starts_with("routes[0].query_url")),
        "{bad:?}"
    );
}

/// The workspace limits: Azure's defaults, the top level's, or a route's own (a route usually
/// writes to its own workspace); zero is refused, named under the route.
#[test]
fn each_route_has_its_own_or_the_inherited_workspace_limits() {
    let text = |own: &str| {
        format!(
            r#"
identity: user-assigned
client_id: 11111111-1111-1111-1111-111111111111
workspace_events_per_minute_limit: 400000
routes:
  - name: team-a
    match: '{{namespace="team-a"}}'
    ingestion_url: {a}
    {own}
  - name: default
    ingestion_url: {b}
"#,
            a = url("dce-a", DCR_A),
            b = url("dce-b", DCR_B)
        )
    };
    let c = yaml(&text(
        "workspace_active_series_limit: 250000\n    dcr_requests_per_minute_limit: 5000",
    ))
    .resolve()
    .unwrap();
    let a = c.routes[0].workspace;
    assert_eq!(
        (
            a.active_series,
            a.events_per_minute,
            a.dcr_requests_per_minute
        ),
        (250_000, 400_000, 5000)
    );
    let d = c.routes[1].workspace;
    assert_eq!(
        (
            d.active_series,
            d.events_per_minute,
            d.dcr_requests_per_minute
        ),
        (1_000_000, 400_000, 15_000)
    );
    let p = problems(yaml(&text("workspace_active_series_limit: 0")));
    assert!(
        p.iter()
            .any(|p| p.starts_with("routes[0].workspace_active_series_limit")
                && p.contains("greater than zero")),
        "{p:?}"
    );
}
