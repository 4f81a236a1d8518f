use super::*;

const HOST: &str = "mydce-ab12.eastus-1.metrics.ingest.monitor.azure.com";

fn base() -> Signals {
    Signals {
        upstream_host: HOST.into(),
        mode: Some(Mode::Require),
        verdict: Some(Verdict::Private),
        verdict_detail: format!(
            "{HOST} resolves through privatelink.monitor.azure.com to 10.0.0.5"
        ),
        queue_fill: 0.1,
        ..Signals::default()
    }
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// (case, signals, expected (name, severity) pairs, text each remediation must contain).
#[allow(clippy::type_complexity)]
/// A case: its name, the signals, the alerts expected (name, severity), and texts the
/// remediation must contain.
type Case = (
    &'static str,
    Signals,
    Vec<(&'static str, &'static str)>,
    Vec<&'static str>,
);

/// Every case of the rule table.
fn cases() -> Vec<Case> {
    let mut all = private_link_cases();
    all.extend(upstream_cases());
    all
}

/// Cases of the Private Link and DNS rules.
fn private_link_cases() -> Vec<Case> {
    let t = now();
    vec![
        ("healthy", base(), vec![], vec![]),
        ("nothing known", Signals::default(), vec![], vec![]),
        (
            "verdict pending",
            Signals {
                verdict: None,
                ..base()
            },
            vec![],
            vec![],
        ),
        (
            "require + public",
            Signals {
                verdict: Some(Verdict::Public),
                ..base()
            },
            vec![(PRIVATE_LINK_NOT_VERIFIED, CRITICAL)],
            vec!["168.63.129.16"],
        ),
        (
            "prefer + nxdomain",
            Signals {
                mode: Some(Mode::Prefer),
                verdict: Some(Verdict::Nxdomain),
                ..base()
            },
            vec![(PRIVATE_LINK_NOT_VERIFIED, WARNING)],
            vec!["AMPLS"],
        ),
        (
            "off + public",
            Signals {
                mode: Some(Mode::Off),
                verdict: Some(Verdict::Public),
                ..base()
            },
            vec![],
            vec![],
        ),
        (
            "no mode + public",
            Signals {
                mode: None,
                verdict: Some(Verdict::Public),
                ..base()
            },
            vec![],
            vec![],
        ),
        (
            "require + probe failing",
            Signals {
                probe_failure: Some("tcp connect 10.0.0.5:443: timed out".into()),
                ..base()
            },
            vec![(PRIVATE_LINK_NOT_VERIFIED, CRITICAL)],
            vec!["allow outbound TCP 443", "private endpoint"],
        ),
        (
            "prefer fallback",
            Signals {
                mode: Some(Mode::Prefer),
                verdict: Some(Verdict::DnsError),
                on_public_fallback: true,
                fallback_since: Some(t - Duration::from_secs(90)),
                ..base()
            },
            vec![
                (PRIVATE_LINK_NOT_VERIFIED, WARNING),
                (ON_PUBLIC_FALLBACK, WARNING),
            ],
            vec!["168.63.129.16"],
        ),
        (
            "dns changed 1 min ago",
            Signals {
                dns_answer_changed: Some((
                    t - Duration::from_secs(60),
                    "10.0.0.5 -> 10.0.0.9".into(),
                )),
                ..base()
            },
            vec![(DNS_ANSWER_CHANGED, WARNING)],
            vec!["one AMPLS per DNS"],
        ),
        (
            "dns changed 16 min ago",
            Signals {
                dns_answer_changed: Some((t - Duration::from_secs(16 * 60), "a -> b".into())),
                ..base()
            },
            vec![],
            vec![],
        ),
        (
            "dns change stamped in the future",
            Signals {
                dns_answer_changed: Some((t + Duration::from_secs(5), "a -> b".into())),
                ..base()
            },
            vec![(DNS_ANSWER_CHANGED, WARNING)],
            vec![],
        ),
    ]
}

/// Cases of the upstream, queue and token rules.
fn upstream_cases() -> Vec<Case> {
    vec![
        (
            "403",
            Signals {
                upstream_rejecting: Some((403, "AuthorizationFailed".into())),
                ..base()
            },
            vec![(UPSTREAM_REJECTING, CRITICAL)],
            vec!["Monitoring Metrics Publisher", "30 minutes"],
        ),
        (
            "401",
            Signals {
                upstream_rejecting: Some((401, String::new())),
                ..base()
            },
            vec![(UPSTREAM_REJECTING, CRITICAL)],
            vec!["https://monitor.azure.com/.default"],
        ),
        (
            "404",
            Signals {
                upstream_rejecting: Some((404, "not found".into())),
                ..base()
            },
            vec![(UPSTREAM_REJECTING, CRITICAL)],
            vec!["immutable id", "Microsoft-PrometheusMetrics"],
        ),
        (
            "422",
            Signals {
                upstream_rejecting: Some((422, "duplicate".into())),
                ..base()
            },
            vec![(UPSTREAM_REJECTING, CRITICAL)],
            vec!["duplicate time series"],
        ),
        (
            "429",
            Signals {
                upstream_rejecting: Some((429, String::new())),
                ..base()
            },
            vec![(UPSTREAM_REJECTING, WARNING)],
            vec!["15,000 requests per minute"],
        ),
        (
            "queue 0.79",
            Signals {
                queue_fill: 0.79,
                ..base()
            },
            vec![],
            vec![],
        ),
        (
            "queue 0.8",
            Signals {
                queue_fill: 0.8,
                ..base()
            },
            vec![(QUEUE_NEARLY_FULL_ALERT, WARNING)],
            vec!["queue size"],
        ),
        (
            "queue NaN",
            Signals {
                queue_fill: f64::NAN,
                ..base()
            },
            vec![],
            vec![],
        ),
        (
            "token",
            Signals {
                token_error: Some(
                    "AADSTS7000222: The provided client secret keys are expired".into(),
                ),
                ..base()
            },
            vec![(TOKEN_REFRESH_FAILING, CRITICAL)],
            vec![
                "login.microsoftonline.com",
                "login.microsoftonline.us",
                "login.partner.microsoftonline.cn",
                "secret has expired",
            ],
        ),
    ]
}

#[test]
fn rule_table() {
    for (case, s, want, texts) in cases() {
        let got = evaluate_at(&s, now());
        let names: Vec<(&str, &str)> = got.iter().map(|a| (a.name, a.severity)).collect();
        assert_eq!(names, want, "{case}");
        for a in &got {
            assert!(ALL_ALERTS.contains(&a.name), "{case}: {}", a.name);
            assert!(!a.summary.is_empty() && !a.description.is_empty(), "{case}");
            assert!(!a.remediation.is_empty(), "{case}");
            assert_eq!(
                a.labels.get("upstream").map(String::as_str),
                Some(HOST),
                "{case}"
            );
            for k in a.labels.keys() {
                assert!(
                    !["alertname", "severity", "job", "instance"].contains(&k.as_str()),
                    "{case}: reserved label {k}"
                );
            }
        }
        for t in texts {
            assert!(
                got.iter().any(|a| a.remediation.contains(t)),
                "{case}: no remediation mentions {t:?}: {got:#?}"
            );
        }
    }
}

#[test]
fn not_verified_carries_the_verdict_remediation_and_labels() {
    for v in Verdict::ALL.into_iter().filter(|v| *v != Verdict::Private) {
        let s = Signals {
            verdict: Some(v),
            ..base()
        };
        let a = &evaluate_at(&s, now())[0];
        assert_eq!(a.name, PRIVATE_LINK_NOT_VERIFIED);
        assert_eq!(a.remediation, v.remediation());
        assert_eq!(a.labels["verdict"], v.as_str());
        assert_eq!(a.labels["mode"], "require");
        assert!(a.description.contains(v.meaning()), "{}", a.description);
        assert!(
            a.description.contains(&s.verdict_detail),
            "{}",
            a.description
        );
    }
    // Bad verdict and a failing probe: both fixes.
    let s = Signals {
        verdict: Some(Verdict::UnexpectedAddress),
        probe_failure: Some("tls handshake: reset".into()),
        ..base()
    };
    let a = &evaluate_at(&s, now())[0];
    assert!(a
        .remediation
        .contains(Verdict::UnexpectedAddress.remediation()));
    assert!(a.remediation.contains(REMEDIATION_PROBE));
}

#[test]
fn fallback_mentions_both_public_hosts_and_duration() {
    let s = Signals {
        mode: Some(Mode::Prefer),
        on_public_fallback: true,
        fallback_since: Some(now() - Duration::from_secs(125)),
        ..base()
    };
    let got = evaluate_at(&s, now());
    assert_eq!(got.len(), 1);
    let a = &got[0];
    assert!(a.remediation.contains("*.ingest.monitor.azure.com"));
    assert!(a
        .remediation
        .contains("*.handler.control.monitor.azure.com"));
    assert!(a.description.contains("2m 5s"), "{}", a.description);
    // Mode require on the public endpoint is a defect: critical.
    let s = Signals {
        mode: Some(Mode::Require),
        ..s
    };
    assert_eq!(evaluate_at(&s, now())[0].severity, CRITICAL);
}

#[test]
fn long_messages_are_clipped() {
    let s = Signals {
        upstream_rejecting: Some((400, "é".repeat(5000))),
        ..base()
    };
    let a = &evaluate_at(&s, now())[0];
    assert!(a.description.chars().count() < MAX_MESSAGE_CHARS + 200);
}

#[test]
fn remediation_by_status() {
    for (status, text) in [
        (401, REMEDIATION_401),
        (403, REMEDIATION_403),
        (404, REMEDIATION_404),
        (422, REMEDIATION_422),
        (400, REMEDIATION_400),
        (429, REMEDIATION_429),
        (413, REMEDIATION_413),
        (409, REMEDIATION_OTHER_4XX),
    ] {
        assert_eq!(rejection_remediation(status), text, "{status}");
    }
}
