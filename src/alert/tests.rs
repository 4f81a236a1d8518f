//! The alerter against a loopback receiver that records every post (and fails on request), and
//! the `PrometheusRule` file against the rules.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::alertmanager::alerts_url;
use super::rules::{self, Alert, ALL_ALERTS, RULE_FILE_ONLY};
use super::{Alerter, Metrics};

/// Every post received: when, and the JSON array.
#[derive(Default)]
struct Recorder {
    posts: Mutex<Vec<(SystemTime, Vec<Value>)>>,
    /// Answer 500 to this many coming posts.
    fail_next: AtomicU32,
}

impl Recorder {
    fn posts(&self) -> Vec<(SystemTime, Vec<Value>)> {
        self.posts.lock().unwrap().clone()
    }
}

async fn receive(State(r): State<Arc<Recorder>>, body: String) -> StatusCode {
    if r.fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let v: Vec<Value> = serde_json::from_str(&body).expect("a JSON array");
    r.posts.lock().unwrap().push((SystemTime::now(), v));
    StatusCode::OK
}

/// A recording Alertmanager stand-in on 127.0.0.1; returns its base URL.
async fn recorder(stop: CancellationToken) -> (Url, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let app = axum::Router::new()
        .route("/am/api/v2/alerts", post(receive))
        .with_state(rec.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(l, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .unwrap();
    });
    (format!("http://{addr}/am/").parse().unwrap(), rec)
}

fn not_verified() -> Alert {
    let s = super::Signals {
        upstream_host: "mydce-ab12.eastus-1.metrics.ingest.monitor.azure.com".into(),
        mode: Some(crate::privatelink::Mode::Require),
        verdict: Some(crate::privatelink::Verdict::Public),
        ..Default::default()
    };
    rules::evaluate(&s).remove(0)
}

fn time(v: &Value) -> SystemTime {
    humantime::parse_rfc3339_weak(v.as_str().expect("a time string")).expect("RFC 3339")
}

/// Polls `f` every 20 ms for up to 10 s.
async fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn alerts_named<'a>(
    posts: &'a [(SystemTime, Vec<Value>)],
    name: &str,
) -> Vec<(SystemTime, &'a Value)> {
    posts
        .iter()
        .flat_map(|(t, v)| v.iter().map(move |a| (*t, a)))
        .filter(|(_, a)| a["labels"]["alertname"] == name)
        .collect()
}

/// An alerter posting to `urls` as `instance`, directly (no egress proxy).
fn alerter(urls: Vec<Url>, resend: Duration, instance: &str, metrics: Metrics) -> Arc<Alerter> {
    Arc::new(
        Alerter::new(
            urls,
            resend,
            instance.into(),
            None,
            &Default::default(),
            metrics,
        )
        .unwrap(),
    )
}

/// Cancels `stop` and checks that `task` ends, without a panic, within 5 s.
async fn stopped(stop: &CancellationToken, task: tokio::task::JoinHandle<()>) {
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops on cancel")
        .expect("no panic");
}

#[tokio::test]
async fn fires_at_once_resends_with_stable_start_and_resolves_once() {
    let stop = CancellationToken::new();
    let (base, rec) = recorder(stop.clone()).await;
    let resend = Duration::from_millis(200);
    let metrics = Metrics::default();
    let alerter = alerter(vec![base], resend, "promlink-0", metrics.clone());
    let task = alerter.clone().spawn(stop.clone());

    let a = not_verified();
    alerter.update(vec![a.clone()]);
    assert_eq!(metrics.firing_count(rules::PRIVATE_LINK_NOT_VERIFIED), 1);
    assert_eq!(alerter.firing(), vec![a.clone()]);

    // At least three posts of the firing alert.
    let posts = until("three posts", || {
        let p = rec.posts();
        (alerts_named(&p, a.name).len() >= 3).then_some(p)
    })
    .await;
    let sent = alerts_named(&posts, a.name);
    let first = sent[0].1;
    assert_eq!(first["labels"]["alertname"], a.name);
    assert_eq!(first["labels"]["severity"], "critical");
    assert_eq!(first["labels"]["job"], "promlink");
    assert_eq!(first["labels"]["instance"], "promlink-0");
    assert_eq!(first["labels"]["verdict"], "public");
    assert_eq!(first["labels"]["upstream"], a.labels["upstream"].as_str());
    assert_eq!(first["annotations"]["summary"], a.summary.as_str());
    assert_eq!(first["annotations"]["description"], a.description.as_str());
    assert_eq!(first["annotations"]["remediation"], a.remediation.as_str());
    assert!(first.get("generatorURL").is_none());
    let starts = time(&first["startsAt"]);
    for (received, alert) in &sent {
        assert_eq!(
            time(&alert["startsAt"]),
            starts,
            "startsAt must not move on resend"
        );
        let ends = time(&alert["endsAt"]);
        // endsAt = send time + 4 * resend; the send was shortly before `received`.
        let ahead = ends.duration_since(*received).unwrap_or_default();
        assert!(
            ahead > Duration::from_millis(300) && ahead <= resend * 4,
            "endsAt {ahead:?} ahead"
        );
    }

    // Clear it: one post with endsAt at the time it stopped, then no more.
    let cleared = SystemTime::now();
    alerter.update(vec![]);
    assert_eq!(metrics.firing_count(rules::PRIVATE_LINK_NOT_VERIFIED), 0);
    assert!(alerter.firing().is_empty());
    let resolved = until("the resolved post", || {
        let p = rec.posts();
        alerts_named(&p, a.name)
            .into_iter()
            .find(|(received, v)| time(&v["endsAt"]) <= *received)
            .map(|(r, v)| (r, v.clone()))
    })
    .await;
    assert_eq!(time(&resolved.1["startsAt"]), starts);
    let ends = time(&resolved.1["endsAt"]);
    assert!(
        ends >= cleared - Duration::from_millis(2) && ends <= resolved.0,
        "{ends:?}"
    );
    tokio::time::sleep(resend * 4).await;
    let after = rec.posts();
    let resolved_posts = alerts_named(&after, a.name)
        .into_iter()
        .filter(|(r, v)| time(&v["endsAt"]) <= *r)
        .count();
    assert_eq!(resolved_posts, 1, "a resolution is posted once");
    let last = after.last().unwrap();
    assert!(
        last.1.iter().all(|v| time(&v["endsAt"]) <= last.0),
        "nothing fires after the resolution"
    );
    assert!(metrics.post_count("success") >= 4);
    assert_eq!(metrics.post_count("failure"), 0);

    stopped(&stop, task).await;
}

#[tokio::test]
async fn failed_posts_are_retried_and_a_failing_instance_does_not_hold_back_the_other() {
    let stop = CancellationToken::new();
    let (base, rec) = recorder(stop.clone()).await;
    // A port nobody listens on: connection refused, every time.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        Url::parse(&format!("http://127.0.0.1:{port}")).unwrap()
    };
    rec.fail_next.store(2, Ordering::SeqCst);
    let metrics = Metrics::default();
    let alerter = alerter(
        vec![dead, base],
        Duration::from_secs(60),
        "i",
        metrics.clone(),
    );
    let task = alerter.clone().spawn(stop.clone());
    let a = not_verified();
    alerter.update(vec![a.clone()]);
    // Two 500s, then delivered (the resend interval is a minute: this is the retry).
    until("the firing alert after two failures", || {
        (!alerts_named(&rec.posts(), a.name).is_empty()).then_some(())
    })
    .await;
    assert!(metrics.post_count("failure") >= 2);

    // The resolution is retried too.
    rec.fail_next.store(1, Ordering::SeqCst);
    alerter.update(vec![]);
    until("the resolution after a failure", || {
        alerts_named(&rec.posts(), a.name)
            .iter()
            .any(|(r, v)| time(&v["endsAt"]) <= *r)
            .then_some(())
    })
    .await;
    assert_eq!(rec.fail_next.load(Ordering::SeqCst), 0);

    stopped(&stop, task).await;
}

#[tokio::test]
async fn refiring_starts_a_new_episode_after_the_resolution() {
    let stop = CancellationToken::new();
    let (base, rec) = recorder(stop.clone()).await;
    // The task starts after both changes: its first post carries both.
    let alerter = alerter(vec![base], Duration::from_secs(60), "i", Metrics::default());
    let a = not_verified();
    alerter.update(vec![a.clone()]);
    let first_start = alerter.firing_since()[0].1;
    tokio::time::sleep(Duration::from_millis(20)).await;
    alerter.update(vec![]);
    tokio::time::sleep(Duration::from_millis(20)).await;
    alerter.update(vec![a.clone()]);
    let second_start = alerter.firing_since()[0].1;
    assert!(second_start > first_start);
    let task = alerter.clone().spawn(stop.clone());
    let posts = until("a post", || {
        let p = rec.posts();
        (!p.is_empty()).then_some(p)
    })
    .await;
    let batch = &posts[0].1;
    assert_eq!(batch.len(), 2, "{batch:?}");
    // The resolved episode first, then the new one.
    let ms = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    };
    assert_eq!(ms(time(&batch[0]["startsAt"])), ms(first_start));
    assert_eq!(ms(time(&batch[1]["startsAt"])), ms(second_start));
    assert!(time(&batch[0]["endsAt"]) <= posts[0].0);
    assert!(time(&batch[1]["endsAt"]) > posts[0].0);
    assert!(time(&batch[1]["startsAt"]) > time(&batch[0]["startsAt"]));
    stopped(&stop, task).await;
}

#[tokio::test]
async fn zero_urls_keeps_state_and_metrics() {
    let mut registry = prometheus_client::registry::Registry::with_prefix("promlink");
    let metrics = Metrics::register(&mut registry);
    let alerter = alerter(vec![], Duration::from_secs(30), "x", metrics.clone());
    let stop = CancellationToken::new();
    let task = alerter.clone().spawn(stop.clone());
    let s = super::Signals {
        queue_fill: 0.9,
        token_error: Some("connection refused".into()),
        ..Default::default()
    };
    alerter.update(rules::evaluate(&s));
    assert_eq!(alerter.firing().len(), 2);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains(r#"promlink_alerts_firing{alertname="PromlinkQueueNearlyFull"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"promlink_alerts_firing{alertname="PromlinkOnPublicFallback"} 0"#));
    assert!(text.contains(r#"promlink_alertmanager_posts_total{outcome="success"} 0"#));
    assert!(!task.is_finished());
    stopped(&stop, task).await;
}

#[test]
fn alertmanager_urls() {
    for (base, want) in [
        ("http://am:9093", "http://am:9093/api/v2/alerts"),
        ("http://am:9093/", "http://am:9093/api/v2/alerts"),
        (
            "https://x/alertmanager/",
            "https://x/alertmanager/api/v2/alerts",
        ),
        (
            "http://am:9093/api/v2/alerts",
            "http://am:9093/api/v2/alerts",
        ),
    ] {
        assert_eq!(alerts_url(&base.parse().unwrap()).unwrap().as_str(), want);
    }
    let err = alerts_url(&"ftp://user:secret@am/".parse().unwrap()).unwrap_err();
    assert!(!err.to_string().contains("secret"), "{err}");
    assert!(Alerter::new(
        vec![],
        Duration::ZERO,
        "x".into(),
        None,
        &Default::default(),
        Metrics::default()
    )
    .is_err());
}

/// Every alert the rule file may hold: those promlink evaluates, then the rule-file-only ones.
fn rule_file_alerts() -> impl Iterator<Item = &'static str> {
    ALL_ALERTS.into_iter().chain(RULE_FILE_ONLY)
}

/// `deploy/prometheus-rule.yaml`, parsed.
fn rule_file() -> (String, Value) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus-rule.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let doc: Value = serde_saphyr::from_str(&text).expect("valid YAML");
    (text, doc)
}

/// A duration as PromQL writes it in a range or `offset` (whole minutes, as the rules use).
fn promql_minutes(d: Duration) -> String {
    assert_eq!(d.as_secs() % 60, 0, "{d:?}");
    format!("{}m", d.as_secs() / 60)
}

/// The remediation an alert of the rule file must render for the alert `labels`: the texts of
/// [`rules`], chosen by the same labels the file's templates look at.
fn rule_file_remediation(name: &str, labels: &serde_json::Map<String, Value>) -> String {
    use crate::privatelink::Verdict;
    let label = |k: &str| labels.get(k).and_then(Value::as_str).unwrap_or_default();
    let text = match name {
        rules::PRIVATE_LINK_NOT_VERIFIED if label("probe") == "failing" => rules::REMEDIATION_PROBE,
        rules::PRIVATE_LINK_NOT_VERIFIED => Verdict::ALL
            .into_iter()
            .find(|v| v.as_str() == label("verdict"))
            .unwrap_or_else(|| panic!("unknown verdict in {labels:?}"))
            .remediation(),
        rules::ON_PUBLIC_FALLBACK => rules::REMEDIATION_FALLBACK,
        rules::DNS_ANSWER_CHANGED => rules::REMEDIATION_DNS_CHANGED,
        // 401 and 403 are both retried as `unauthorized`: the rule gives both fixes.
        rules::UPSTREAM_REJECTING if label("status") == "401/403" => {
            return format!("{}\n{}", rules::REMEDIATION_403, rules::REMEDIATION_401)
        }
        rules::UPSTREAM_REJECTING if label("status") == "429" => rules::REMEDIATION_429,
        rules::UPSTREAM_REJECTING => label("reason")
            .strip_prefix("rejected_")
            .and_then(|s| s.parse().ok())
            .map_or(rules::REMEDIATION_OTHER_4XX, rules::rejection_remediation),
        rules::QUEUE_NEARLY_FULL_ALERT => rules::REMEDIATION_QUEUE,
        rules::TOKEN_REFRESH_FAILING => rules::REMEDIATION_TOKEN,
        rules::UPSTREAM_UNAVAILABLE => rules::REMEDIATION_UPSTREAM_UNAVAILABLE,
        rules::DOWN => rules::REMEDIATION_DOWN,
        rules::SAMPLES_DROPPED => rules::drop_remediation(label("reason")),
        rules::QUEUE_CORRUPT_RECORDS => rules::REMEDIATION_QUEUE_CORRUPT,
        rules::DELIVERY_STALLED => rules::REMEDIATION_DELIVERY_STALLED,
        rules::RECEIVER_CERTIFICATE_EXPIRING => rules::REMEDIATION_CERTIFICATE,
        rules::QUEUE_DISK_FILLING => rules::REMEDIATION_QUEUE_DISK,
        rules::QUEUE_FAILED => rules::REMEDIATION_QUEUE_FAILED,
        rules::QUEUE_STRANDED => rules::REMEDIATION_QUEUE_STRANDED,
        rules::INGESTION_NOT_VISIBLE => rules::REMEDIATION_INGESTION_NOT_VISIBLE,
        rules::WORKSPACE_SERIES_NEAR_LIMIT => rules::REMEDIATION_WORKSPACE_SERIES,
        rules::WORKSPACE_EVENTS_NEAR_LIMIT => rules::REMEDIATION_WORKSPACE_EVENTS,
        rules::DCR_REQUESTS_NEAR_LIMIT => rules::REMEDIATION_DCR_REQUESTS,
        _ => panic!("no remediation known for {name}"),
    };
    text.to_string()
}

#[test]
fn runbook_urls() {
    assert_eq!(
        rules::runbook_url(rules::UPSTREAM_UNAVAILABLE),
        "https://github.com/promlink/promlink/blob/main/docs/runbooks.md#promlinkupstreamunavailable"
    );
    let mut seen = std::collections::BTreeSet::new();
    for name in rule_file_alerts() {
        assert!(seen.insert(name), "{name} listed twice");
        assert!(name.starts_with("Promlink") && name.chars().all(|c| c.is_ascii_alphanumeric()));
    }
    for reason in ["too_large", "shutdown", "too_old", "expired"] {
        assert_ne!(
            rules::drop_remediation(reason),
            rules::REMEDIATION_DROPPED_OTHER,
            "{reason}"
        );
    }
    assert_eq!(
        rules::drop_remediation("x"),
        rules::REMEDIATION_DROPPED_OTHER
    );
}

/// The rule file: valid YAML, a `PrometheusRule` with the label kube-prometheus-stack selects,
/// one rule (or more) per alert of [`rules`] and nothing else but [`RULE_FILE_ONLY`], the same
/// remediation texts and thresholds, and a runbook section behind every `runbook_url`.
#[test]
fn prometheus_rule_file_matches_the_rules() {
    let (text, doc) = rule_file();
    assert_eq!(doc["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(doc["kind"], "PrometheusRule");
    assert!(doc["metadata"]["name"].is_string());
    assert!(doc["metadata"]["labels"]["release"].is_string());
    let mut by_name: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for group in doc["spec"]["groups"].as_array().expect("spec.groups") {
        assert!(group["name"].is_string());
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .expect("alert rules only")
                .to_string();
            assert!(
                rule["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                "{name}"
            );
            let sev = rule["labels"]["severity"].as_str().expect("severity");
            assert!(
                sev == "critical" || sev == "warning" || sev.contains("{{"),
                "{name}: {sev}"
            );
            for k in ["summary", "description", "remediation", "runbook_url"] {
                assert!(rule["annotations"][k].is_string(), "{name}: {k}");
            }
            assert_eq!(
                rule["annotations"]["runbook_url"],
                rules::runbook_url(&name),
                "{name}"
            );
            by_name.entry(name).or_default().push(rule.clone());
        }
    }
    for name in rule_file_alerts() {
        assert!(by_name.contains_key(name), "no rule for {name}");
    }
    for name in by_name.keys() {
        assert!(
            rule_file_alerts().any(|a| a == name),
            "{name} is neither in ALL_ALERTS nor in RULE_FILE_ONLY"
        );
    }
    for name in RULE_FILE_ONLY {
        assert!(!ALL_ALERTS.contains(&name), "{name} in both lists");
    }
    let remediation = |name: &str| -> String {
        by_name[name]
            .iter()
            .map(|r| {
                r["annotations"]["remediation"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let expect: Vec<(&str, Vec<&str>)> = vec![
        (
            rules::PRIVATE_LINK_NOT_VERIFIED,
            crate::privatelink::Verdict::ALL
                .iter()
                .filter(|v| **v != crate::privatelink::Verdict::Private)
                .map(|v| v.remediation())
                .chain([rules::REMEDIATION_PROBE])
                .collect(),
        ),
        (rules::ON_PUBLIC_FALLBACK, vec![rules::REMEDIATION_FALLBACK]),
        (
            rules::DNS_ANSWER_CHANGED,
            vec![rules::REMEDIATION_DNS_CHANGED],
        ),
        (
            rules::UPSTREAM_REJECTING,
            vec![
                rules::REMEDIATION_401,
                rules::REMEDIATION_403,
                rules::REMEDIATION_404,
                rules::REMEDIATION_422,
                rules::REMEDIATION_400,
                rules::REMEDIATION_429,
                rules::REMEDIATION_OTHER_4XX,
            ],
        ),
        (
            rules::QUEUE_NEARLY_FULL_ALERT,
            vec![rules::REMEDIATION_QUEUE],
        ),
        (rules::TOKEN_REFRESH_FAILING, vec![rules::REMEDIATION_TOKEN]),
        (
            rules::UPSTREAM_UNAVAILABLE,
            vec![rules::REMEDIATION_UPSTREAM_UNAVAILABLE],
        ),
        (rules::DOWN, vec![rules::REMEDIATION_DOWN]),
        (
            rules::SAMPLES_DROPPED,
            vec![
                rules::REMEDIATION_DROPPED_TOO_LARGE,
                rules::REMEDIATION_DROPPED_SHUTDOWN,
                rules::REMEDIATION_DROPPED_TOO_OLD,
                rules::REMEDIATION_DROPPED_EXPIRED,
                rules::REMEDIATION_DROPPED_OTHER,
            ],
        ),
        (
            rules::QUEUE_CORRUPT_RECORDS,
            vec![rules::REMEDIATION_QUEUE_CORRUPT],
        ),
        (
            rules::DELIVERY_STALLED,
            vec![rules::REMEDIATION_DELIVERY_STALLED],
        ),
        (
            rules::RECEIVER_CERTIFICATE_EXPIRING,
            vec![rules::REMEDIATION_CERTIFICATE],
        ),
        (
            rules::QUEUE_DISK_FILLING,
            vec![rules::REMEDIATION_QUEUE_DISK],
        ),
        (rules::QUEUE_FAILED, vec![rules::REMEDIATION_QUEUE_FAILED]),
        (
            rules::QUEUE_STRANDED,
            vec![rules::REMEDIATION_QUEUE_STRANDED],
        ),
        (
            rules::INGESTION_NOT_VISIBLE,
            vec![rules::REMEDIATION_INGESTION_NOT_VISIBLE],
        ),
        (
            rules::WORKSPACE_SERIES_NEAR_LIMIT,
            vec![rules::REMEDIATION_WORKSPACE_SERIES],
        ),
        (
            rules::WORKSPACE_EVENTS_NEAR_LIMIT,
            vec![rules::REMEDIATION_WORKSPACE_EVENTS],
        ),
        (
            rules::DCR_REQUESTS_NEAR_LIMIT,
            vec![rules::REMEDIATION_DCR_REQUESTS],
        ),
    ];
    for name in rule_file_alerts() {
        assert!(
            expect.iter().any(|(n, _)| *n == name),
            "{name}: no remediation expected"
        );
    }
    for (name, texts) in expect {
        let got = remediation(name);
        for t in texts {
            assert!(got.contains(t), "{name}: remediation lacks {t:?}");
        }
    }
    // The thresholds of rules.rs, in the expressions.
    let exprs = |name: &str| -> String {
        by_name[name]
            .iter()
            .map(|r| r["expr"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let stalled = promql_minutes(rules::DELIVERY_STALLED_AFTER);
    for part in [format!("[{stalled}]"), format!("offset {stalled}")] {
        assert!(exprs(rules::DELIVERY_STALLED).contains(&part), "{part}");
    }
    let loss = promql_minutes(rules::LOSS_ALERT_WINDOW);
    for name in [rules::SAMPLES_DROPPED, rules::QUEUE_CORRUPT_RECORDS] {
        for part in [format!("[{loss}]"), format!("offset {loss}")] {
            assert!(exprs(name).contains(&part), "{name}: {part}");
        }
    }
    for name in [
        rules::WORKSPACE_SERIES_NEAR_LIMIT,
        rules::WORKSPACE_EVENTS_NEAR_LIMIT,
        rules::DCR_REQUESTS_NEAR_LIMIT,
    ] {
        let warn = format!(
            ">= {} < {}",
            rules::NEAR_LIMIT_WARNING,
            rules::NEAR_LIMIT_CRITICAL
        );
        let crit = format!(">= {}\n", rules::NEAR_LIMIT_CRITICAL);
        assert!(exprs(name).contains(&warn), "{name}: {warn}");
        assert!(
            format!("{}\n", exprs(name)).contains(&crit),
            "{name}: {crit}"
        );
    }
    let days = rules::CERTIFICATE_EXPIRY_WARNING.as_secs() / 86400;
    assert_eq!(rules::CERTIFICATE_EXPIRY_WARNING.as_secs() % 86400, 0);
    assert!(exprs(rules::RECEIVER_CERTIFICATE_EXPIRING).contains(&format!("< {days} * 86400")));
    assert!(
        exprs(rules::QUEUE_DISK_FILLING).contains(&format!("> {}", rules::QUEUE_DISK_FILLING_USED))
    );
    assert!(
        exprs(rules::QUEUE_NEARLY_FULL_ALERT).contains(&format!(">= {}", rules::QUEUE_NEARLY_FULL))
    );
    // Metrics the rules read exist under these names (a typo would never fire).
    for m in [
        "promlink_private_link_verdict",
        "promlink_private_link_mode",
        "promlink_private_link_active_path",
        "promlink_private_link_dns_changes_total",
        "promlink_private_link_probe_failures_total",
        "promlink_upstream_retries_total",
        "promlink_samples_dropped_total",
        "promlink_queue_bytes",
        "promlink_queue_max_bytes",
        "promlink_token_refreshes_total",
        "promlink_token_valid",
        "promlink_upstream_available",
        "promlink_samples_forwarded_total",
        "promlink_histograms_forwarded_total",
        "promlink_queue_corrupt_records_total",
        "promlink_receive_tls_cert_not_after_seconds",
        "promlink_queue_disk_free_bytes",
        "promlink_queue_disk_capacity_bytes",
    ] {
        assert!(text.contains(m), "the rule file does not use {m}");
    }
    // A runbook section per alert, with its cause, checks and fix, and none for unknown alerts.
    let runbooks =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/runbooks.md")).unwrap();
    let mut sections: BTreeMap<&str, &str> = BTreeMap::new();
    for part in runbooks.split("\n## ").skip(1) {
        let (title, body) = part.split_once('\n').unwrap_or((part, ""));
        assert!(
            sections.insert(title.trim(), body).is_none(),
            "two sections {title}"
        );
    }
    for name in rule_file_alerts() {
        // GitHub's anchor for "## PromlinkXxx" is "#promlinkxxx", as runbook_url() writes it.
        let body = sections
            .get(name)
            .unwrap_or_else(|| panic!("docs/runbooks.md has no section ## {name}"));
        for sub in ["### Cause", "### Checks", "### Fix"] {
            assert!(body.contains(sub), "docs/runbooks.md, {name}: no {sub}");
        }
    }
    for title in sections.keys().filter(|t| t.starts_with("Promlink")) {
        assert!(
            rule_file_alerts().any(|a| a == *title),
            "docs/runbooks.md: {title} is no alert"
        );
    }
}

/// The promtool binary (Debian package `prometheus`), or `None` after saying why the caller
/// skips; under `CI=true` a missing promtool fails instead.
fn promtool(what: &str) -> Option<std::path::PathBuf> {
    let promtool = std::env::var_os("PROMLINK_E2E_PROMTOOL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/promtool".into());
    if promtool.is_file() {
        return Some(promtool);
    }
    let msg = format!(
        "{} not found (Debian package `prometheus`, installed by scripts/test.sh)",
        promtool.display()
    );
    assert!(
        !std::env::var("CI").is_ok_and(|v| v == "true"),
        "CI=true and {msg}"
    );
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "!!! SKIPPED {what}: {msg}");
    None
}

fn run_promtool(promtool: &std::path::Path, args: &[&str], file: &std::path::Path) {
    let out = std::process::Command::new(promtool)
        .args(args)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool {} failed:\n{}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `promtool check rules --lint=all` (from the Debian package `prometheus`) on the rule file's
/// `spec`: every expression parses as PromQL, every template parses, no duplicate rules.
#[test]
fn prometheus_rule_file_passes_promtool() {
    let Some(promtool) = promtool("promtool check of deploy/prometheus-rule.yaml") else {
        return;
    };
    let (_, doc) = rule_file();
    let dir = tempfile::tempdir().unwrap();
    // JSON is YAML: promtool reads the `spec` (a rule file's shape) as is.
    let rules = dir.path().join("rules.json");
    std::fs::write(&rules, serde_json::to_vec(&doc["spec"]).unwrap()).unwrap();
    run_promtool(
        &promtool,
        &["check", "rules", "--lint=all", "--lint-fatal"],
        &rules,
    );
}

/// `promtool test rules` with `tests/promtool/prometheus-rule.test.yaml`: every alert of the rule
/// file fires in one case and stays quiet in another, and each firing alert carries its
/// `runbook_url` and the remediation of [`rules`] for its labels, as the templates render it.
#[test]
fn prometheus_rule_unit_tests() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/promtool/prometheus-rule.test.yaml"
    );
    let mut tests: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).expect("valid YAML");
    assert_eq!(tests["rule_files"], serde_json::json!(["rules.json"]));
    // Coverage first (it needs no promtool): (alert, fires) pairs seen.
    let mut seen = std::collections::BTreeSet::new();
    for case in tests["tests"].as_array_mut().expect("tests") {
        for t in case["alert_rule_test"]
            .as_array_mut()
            .expect("alert_rule_test")
        {
            let name = t["alertname"].as_str().expect("alertname").to_string();
            assert!(rule_file_alerts().any(|a| a == name), "unknown {name}");
            let exp = t["exp_alerts"].as_array_mut().expect("exp_alerts");
            seen.insert((name.clone(), !exp.is_empty()));
            for a in exp {
                assert!(a.get("exp_annotations").is_none(), "{name}: added here");
                let labels = a["exp_labels"].as_object().expect("exp_labels").clone();
                a["exp_annotations"] = serde_json::json!({
                    "runbook_url": rules::runbook_url(&name),
                    "remediation": rule_file_remediation(&name, &labels),
                });
            }
        }
    }
    for name in rule_file_alerts() {
        for fires in [true, false] {
            assert!(
                seen.contains(&(name.to_string(), fires)),
                "no promtool test where {name} {}",
                if fires { "fires" } else { "stays quiet" }
            );
        }
    }
    let Some(promtool) = promtool("promtool unit tests of deploy/prometheus-rule.yaml") else {
        return;
    };
    // The rules without their free-text annotations (promtool compares annotations whole).
    let (_, doc) = rule_file();
    let mut spec = doc["spec"].clone();
    for group in spec["groups"].as_array_mut().unwrap() {
        for rule in group["rules"].as_array_mut().unwrap() {
            let ann = rule["annotations"].as_object_mut().unwrap();
            ann.remove("summary");
            ann.remove("description");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.json"),
        serde_json::to_vec(&spec).unwrap(),
    )
    .unwrap();
    let file = dir.path().join("prometheus-rule.test.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&tests).unwrap()).unwrap();
    run_promtool(&promtool, &["test", "rules"], &file);
}

/// Alertmanager through `HTTP_PROXY`: its name is known only to the proxy emulator, so a
/// delivered alert proves the post went through the proxy. Loopback Alertmanagers (by address
/// and as `localhost`) are posted to directly even with both proxies set and refusing.
#[tokio::test]
async fn alertmanager_through_the_egress_proxy_and_loopback_direct() {
    use crate::emulator::proxy::{ProxyEmulator, ProxyEmulatorConfig};
    const NAME: &str = "am.proxy.test";
    let stop = CancellationToken::new();
    let proxy = ProxyEmulator::start(ProxyEmulatorConfig {
        routes: vec![(NAME.into(), [127, 0, 0, 1].into())],
        ..ProxyEmulatorConfig::default()
    })
    .await
    .unwrap();
    let egress =
        crate::proxy::ProxyConfig::new(Some(&proxy.url()), Some(&proxy.url()), "").unwrap();
    // One alerter per URL, firing one alert, until `stop`.
    let fire = |url: Url| {
        let alerter = Arc::new(
            Alerter::new(
                vec![url],
                Duration::from_millis(200),
                "promlink-0".into(),
                None,
                &egress,
                Metrics::default(),
            )
            .unwrap(),
        );
        alerter.update(vec![not_verified()]);
        alerter.spawn(stop.clone())
    };
    let posted = |rec: Arc<Recorder>, what: &'static str| {
        until(what, move || (!rec.posts().is_empty()).then_some(()))
    };

    let (base, rec) = recorder(stop.clone()).await;
    let port = base.port().unwrap();
    let through: Url = format!("http://{NAME}:{port}/am/").parse().unwrap();
    // The name is resolvable only by the proxy: never let a wrong decision look it up here.
    assert!(egress.route(&through).is_proxy());
    let mut tasks = vec![fire(through)];
    posted(rec, "a post through the proxy").await;
    let seen = proxy.targets();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|t| *t == format!("{NAME}:{port}")),
        "{seen:?}"
    );

    // Loopback: direct, although the proxy now refuses everything.
    proxy.set_refuse(true);
    let (by_ip, by_ip_rec) = recorder(stop.clone()).await;
    let (other, by_name_rec) = recorder(stop.clone()).await;
    let by_name: Url = format!("http://localhost:{}/am/", other.port().unwrap())
        .parse()
        .unwrap();
    tasks.push(fire(by_ip));
    tasks.push(fire(by_name));
    posted(by_ip_rec, "a post to 127.0.0.1").await;
    posted(by_name_rec, "a post to localhost").await;
    assert_eq!(
        proxy.targets().len(),
        seen.len(),
        "nothing to a loopback Alertmanager went through the proxy: {:?}",
        proxy.targets()
    );
    assert_eq!(proxy.refused(), 0);
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    proxy.shutdown().await;
}
