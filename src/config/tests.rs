use super::*;
use crate::identity::IdentityKind;
use crate::receive::FullStatus;

const DCR: &str = "dcr-0123456789abcdef0123456789abcdef";

fn url() -> String {
    format!("https://mydce-ab12.eastus-1.metrics.ingest.monitor.azure.com/dataCollectionRules/{DCR}/streams/Microsoft-PrometheusMetrics/api/v1/write?api-version=2023-04-24")
}

fn base() -> Settings {
    Settings {
        ingestion_url: Some(url()),
        ..Settings::default()
    }
}

#[test]
fn defaults_resolve() {
    let c = base().resolve().unwrap();
    assert_eq!(c.listen.to_string(), "0.0.0.0:8081");
    assert!(c.destination.azure);
    assert_eq!(c.destination.identity.kind, IdentityKind::SystemAssigned);
    assert_eq!(
        c.destination.identity.scope,
        "https://monitor.azure.com/.default"
    );
    assert_eq!(
        c.destination.identity.authority_host.as_str(),
        "https://login.microsoftonline.com/"
    );
    assert_eq!(c.destination.upstream.batch.max_samples, 5000);
    assert_eq!(c.receive.full_status, FullStatus::ServiceUnavailable);
}

#[test]
fn url_from_parts_matches_the_documented_shape() {
    let s = Settings {
        dce_endpoint: Some("https://mydce-ab12.eastus-1.metrics.ingest.monitor.azure.com/".into()),
        dcr_id: Some(DCR.into()),
        ..Settings::default()
    };
    assert_eq!(
        s.resolve().unwrap().destination.upstream.url.as_str(),
        url()
    );
}

#[test]
fn ingestion_url_rules() {
    let table: &[(&str, bool, Result<bool, &str>)] = &[
        (&url(), false, Ok(true)),
        ("https://prom.example:9090/api/v1/write", false, Ok(false)),
        ("http://127.0.0.1:9090/api/v1/write", false, Err("plain http://")),
        ("http://127.0.0.1:9090/api/v1/write", true, Ok(false)),
        ("ftp://x/y", false, Err("scheme \"ftp\"")),
        ("https://d.eastus-1.metrics.ingest.monitor.azure.com/api/v1/write", false, Err("the path must be /dataCollectionRules/")),
        ("https://d.eastus-1.metrics.ingest.monitor.azure.com/dataCollectionRules/my-dcr/streams/Microsoft-PrometheusMetrics/api/v1/write?api-version=2023-04-24", false, Err("must be \"dcr-\" followed by 32 hex digits")),
        (&url().replace("?api-version=2023-04-24", ""), false, Err("api-version query parameter is missing")),
        ("https://127.0.0.1:8443/dataCollectionRules/dcr-0123456789abcdef0123456789abcdef/streams/Microsoft-PrometheusMetrics/api/v1/write?api-version=2023-04-24", false, Ok(true)),
        ("not a url", false, Err("not a URL")),
        ("https://user:s3cret@mimir.example/api/v1/push", false, Err("credentials in the URL are not supported")),
    ];
    for (u, plain, want) in table {
        match (check_ingestion_url(u, *plain), want) {
            (Ok((_, azure)), Ok(w)) => assert_eq!(azure, *w, "{u}"),
            (Err(e), Err(w)) => assert!(e.contains(w), "{u}: {e} should contain {w}"),
            (got, want) => panic!("{u}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn every_problem_is_reported_at_once_with_key_and_value() {
    let s = Settings {
        ingestion_url: Some("http://x/api/v1/write".into()),
        identity: Some(IdentityKind::ClientSecret),
        shards: Some(0),
        flush_interval: Some(Duration::ZERO),
        retry_min_backoff: Some(Duration::from_secs(60)),
        retry_max_backoff: Some(Duration::from_secs(1)),
        ca_file: Some("/nonexistent/ca.pem".into()),
        log_level: Some("info,[".into()),
        ..Settings::default()
    };
    let ConfigError(problems) = s.resolve().unwrap_err();
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    for k in [
        "ingestion_url",
        "client_id",
        "tenant_id",
        "client_secret_file",
        "ca_file",
        "shards",
        "flush_interval",
        "retry_min_backoff",
        "log_level",
    ] {
        assert!(keys.contains(&k), "missing problem for {k}: {problems:#?}");
    }
    let shards = problems.iter().find(|p| p.key == "shards").unwrap();
    assert_eq!(
        shards.to_string(),
        "shards = \"0\": must be greater than zero"
    );
}

#[test]
fn azure_upstream_refuses_identity_none() {
    let s = Settings {
        identity: Some(IdentityKind::None),
        ..base()
    };
    let ConfigError(p) = s.resolve().unwrap_err();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].key, "identity");
}

#[test]
fn yaml_file_keys_and_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, format!("ingestion_url: {}\nflush_interval: 750ms\nshards: 2\nidentity: none\nallow_plain_http: true\n", "http://127.0.0.1:1/api/v1/write")).unwrap();
    let s = Settings::from_file(&good).unwrap();
    assert_eq!(s.flush_interval, Some(Duration::from_millis(750)));
    assert_eq!(s.shards, Some(2));
    assert_eq!(s.identity, Some(IdentityKind::None));
    // Flags win over the file.
    let merged = Settings {
        shards: Some(8),
        ..Settings::default()
    }
    .or(s);
    assert_eq!(merged.shards, Some(8));
    assert_eq!(merged.resolve().unwrap().destination.shards, 8);

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "ingestion_urll: https://x\n").unwrap();
    let e = Settings::from_file(&bad).unwrap_err();
    assert!(e.why.contains("ingestion_urll"), "{e}");
}

#[test]
fn audiences_become_scopes() {
    assert_eq!(
        audience_to_scope("https://monitor.azure.us"),
        "https://monitor.azure.us/.default"
    );
    assert_eq!(
        audience_to_scope("https://monitor.azure.cn/"),
        "https://monitor.azure.cn/.default"
    );
    assert_eq!(
        audience_to_scope("https://monitor.azure.com//.default"),
        "https://monitor.azure.com//.default"
    );
}

#[test]
fn secrets_never_print() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("secret");
    std::fs::write(&f, "s3cr3t-value\n").unwrap();
    let s = Settings {
        identity: Some(IdentityKind::ClientSecret),
        client_id: Some("app".into()),
        tenant_id: Some("tenant".into()),
        client_secret_file: Some(f),
        ..base()
    };
    let c = s.resolve().unwrap();
    assert_eq!(
        c.destination
            .identity
            .client_secret
            .as_ref()
            .map(|s| s.expose()),
        Some("s3cr3t-value")
    );
    assert!(!format!("{c:?}").contains("s3cr3t"));
}

#[test]
fn credentials_in_the_url_never_reach_the_error() {
    let s = Settings {
        ingestion_url: Some("https://user:s3cret@mimir.example/api/v1/push".into()),
        ..Settings::default()
    };
    let e = s.resolve().unwrap_err().to_string();
    assert!(e.contains("credentials in the URL"), "{e}");
    assert!(!e.contains("s3cret") && !e.contains("user:"), "{e}");
}

#[test]
fn sidecar_ingestion_url_keeps_private_link_off_unless_asked() {
    let sidecar = Settings {
        ingestion_url: Some(url()),
        ..Settings::default()
    };
    let (merged, notices) = Settings::default().layered(sidecar.clone(), Settings::default());
    assert_eq!(
        merged.resolve().unwrap().destination.private_link.mode,
        crate::privatelink::Mode::Off
    );
    assert_eq!(notices.len(), 2, "{notices:?}");
    // Asked for explicitly: honoured.
    let flags = Settings {
        private_link: Some(crate::privatelink::Mode::Require),
        ..Settings::default()
    };
    let (merged, notices) = flags.layered(sidecar, Settings::default());
    assert_eq!(
        merged.resolve().unwrap().destination.private_link.mode,
        crate::privatelink::Mode::Require
    );
    assert!(
        notices.iter().all(|n| !n.contains("Private Link")),
        "{notices:?}"
    );
    // promlink's own configuration of an Azure host: require by default.
    let (merged, _) = base().layered(Settings::default(), Settings::default());
    assert_eq!(
        merged.resolve().unwrap().destination.private_link.mode,
        crate::privatelink::Mode::Require
    );
}

/// `private_link: require` with a proxy for the DCE host is refused (naming the key, the value
/// and why, never the proxy's password); excluding the DCE host with `NO_PROXY` is accepted
/// even when the authority stays behind the proxy; `prefer` sends only its fallback through
/// the proxy; `off` has nothing to refuse.
#[test]
fn private_link_and_egress_proxy() {
    use crate::privatelink::Mode;
    use crate::proxy::ProxyConfig;
    let proxy = |no_proxy: &str| {
        ProxyConfig::new(
            Some("http://promlink:pr0xy-pw@proxy.corp:3128"),
            None,
            no_proxy,
        )
        .unwrap()
    };
    let with = |mode: Option<Mode>| Settings {
        private_link: mode,
        ..base()
    };
    for mode in [Some(Mode::Require), None] {
        let e = with(mode).resolve_with(proxy("corp.local")).unwrap_err();
        let p =
            e.0.iter()
                .find(|p| p.key == "private_link")
                .unwrap_or_else(|| panic!("{e}"));
        assert_eq!(p.value, "require");
        let text = e.to_string();
        for want in [
            "HTTPS_PROXY (http://<redacted>@proxy.corp:3128) applies to",
            "mydce-ab12.eastus-1.metrics.ingest.monitor.azure.com",
            "resolves the name itself",
            "NO_PROXY",
        ] {
            assert!(text.contains(want), "{text} should contain {want}");
        }
        assert!(
            !text.contains("pr0xy-pw") && !text.contains("promlink:"),
            "{text}"
        );
        assert_eq!(
            mode.is_none(),
            text.contains("require is the default for Azure ingestion hosts"),
            "{text}"
        );
    }
    // Every problem at once: the proxy problem comes with the others.
    let e = Settings {
        shards: Some(0),
        ..with(Some(Mode::Require))
    }
    .resolve_with(proxy(""))
    .unwrap_err();
    let keys: Vec<&str> = e.0.iter().map(|p| p.key.as_str()).collect();
    assert!(
        keys.contains(&"shards") && keys.contains(&"private_link"),
        "{keys:?}"
    );

    // The DCE host excluded (a suffix entry): require is fine; Entra may use the proxy.
    let c = with(Some(Mode::Require))
        .resolve_with(proxy(".ingest.monitor.azure.com"))
        .unwrap();
    assert!(!c.destination.private_link.public_via_proxy);
    assert!(c
        .proxy
        .route(&c.destination.identity.authority_host)
        .is_proxy());
    assert!(!c
        .destination
        .upstream
        .proxy
        .route(&c.destination.upstream.url)
        .is_proxy());
    assert!(c
        .destination
        .identity
        .proxy
        .route(&c.destination.identity.authority_host)
        .is_proxy());

    // prefer: the public fallback through the proxy, said at start.
    let c = with(Some(Mode::Prefer)).resolve_with(proxy("")).unwrap();
    assert!(c.destination.private_link.public_via_proxy);
    assert!(
        c.notices
            .iter()
            .any(|n| n.contains("public fallback goes through HTTPS_PROXY")),
        "{:?}",
        c.notices
    );
    let c = with(Some(Mode::Prefer))
        .resolve_with(proxy("monitor.azure.com"))
        .unwrap();
    assert!(!c.destination.private_link.public_via_proxy);

    // off: everything to the DCE through the proxy; nothing to refuse.
    let c = with(Some(Mode::Off)).resolve_with(proxy("")).unwrap();
    assert!(!c.destination.private_link.public_via_proxy);
    assert!(c
        .destination
        .upstream
        .proxy
        .route(&c.destination.upstream.url)
        .is_proxy());

    // check-config prints the resolved configuration: no proxy password in it.
    let printed = format!("{c:#?}");
    assert!(
        printed.contains("http://<redacted>@proxy.corp:3128"),
        "{printed}"
    );
    assert!(!printed.contains("pr0xy-pw"), "{printed}");
}

#[test]
fn proxy_variable_problems_name_the_variable() {
    let e = crate::proxy::ProxyConfig::from_vars(|n| {
        (n == "https_proxy").then(|| "socks5://u:pw@proxy:1080".to_string())
    })
    .unwrap_err();
    let p = Problem::from(e[0].clone());
    assert_eq!(p.key, "https_proxy");
    assert_eq!(p.value, "socks5://<redacted>@proxy:1080");
    assert!(p.why.contains("not supported"), "{p}");
}

/// From the Azure sidecar's environment, the memory budgets nothing sets fit its 200 Mi limit;
/// those set anywhere win; promlink's own configuration keeps the gateway defaults.
#[test]
fn sidecar_environment_sizes_the_memory_budgets() {
    let sidecar = Settings {
        ingestion_url: Some(url()),
        ..Settings::default()
    };
    let (merged, notices) = Settings::default().layered(sidecar.clone(), Settings::default());
    let cfg = merged.resolve().unwrap();
    assert_eq!(cfg.destination.queue.max_bytes, 32 << 20);
    assert_eq!(cfg.receive.max_inflight_decode_bytes, 32 << 20);
    assert_eq!(cfg.receive.codec.max_decoded_bytes, 16 << 20);
    assert_eq!(cfg.receive.max_inflight_body_bytes, 16 << 20);
    assert_eq!(cfg.receive.max_body_bytes, 4 << 20);
    assert!(
        notices
            .iter()
            .any(|n| n.contains("queue_max_bytes=33554432")),
        "{notices:?}"
    );
    let total: usize = SIDECAR_BUDGETS.iter().map(|(_, b)| b).sum();
    assert!(total <= 100 << 20, "budgets leave half of 200 Mi: {total}");

    let file = Settings {
        queue_max_bytes: Some(1 << 20),
        ..Settings::default()
    };
    let (merged, _) = Settings::default().layered(sidecar, file);
    assert_eq!(
        merged.resolve().unwrap().destination.queue.max_bytes,
        1 << 20,
        "set: wins"
    );

    let (merged, notices) = base().layered(Settings::default(), Settings::default());
    let cfg = merged.resolve().unwrap();
    assert_eq!(cfg.destination.queue.max_bytes, 64 << 20, "gateway default");
    assert_eq!(cfg.receive.max_inflight_decode_bytes, 128 << 20);
    assert!(notices.is_empty(), "{notices:?}");
}

#[test]
fn fsync_policy_is_parsed_and_a_huge_interval_refused() {
    use super::settings::parse_fsync;
    use crate::queue::FsyncPolicy;
    assert_eq!(parse_fsync("always"), Ok(FsyncPolicy::Always));
    assert_eq!(
        parse_fsync("interval:1h"),
        Ok(FsyncPolicy::Interval(Duration::from_secs(3600)))
    );
    let e = parse_fsync("interval:1000000000000000000s").unwrap_err();
    assert!(e.contains("at most 1h"), "{e}");
    assert!(parse_fsync("interval:0s").is_err());
    // From a YAML file, the error names the key.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.yaml");
    std::fs::write(&file, "fsync: interval:100y\n").unwrap();
    let e = Settings::from_file(&file).unwrap_err();
    assert!(
        e.why.contains("fsync") && e.why.contains("at most 1h"),
        "{e}"
    );
}

#[test]
fn write_relabel_configs_from_yaml_are_checked_with_their_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relabel.yaml");
    std::fs::write(
        &file,
        format!(
            "ingestion_url: {}\nwrite_relabel_configs:\n  - source_labels: [__name__]\n    regex: 'go_(gc|memstats)_.*'\n    action: drop\n  - source_labels: [job]\n    target_label: 'bad-name'\n  - action: hashmod\n    source_labels: [job]\n    target_label: shard\n",
            url()
        ),
    )
    .unwrap();
    let s = Settings::from_file(&file).unwrap();
    assert_eq!(s.write_relabel_configs.as_ref().map(Vec::len), Some(3));
    let ConfigError(problems) = s.resolve().unwrap_err();
    let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "write_relabel_configs[1].target_label = \"bad-name\": \"bad-name\" is invalid 'target_label' for replace action",
            "write_relabel_configs[2].modulus = \"0\": relabel configuration for hashmod requires non-zero modulus",
        ]
    );
    // Valid rules reach the decoder.
    std::fs::write(
        &file,
        format!(
            "ingestion_url: {}\nwrite_relabel_configs:\n  - {{regex: tmp_.*, action: labeldrop}}\n",
            url()
        ),
    )
    .unwrap();
    let c = Settings::from_file(&file).unwrap().resolve().unwrap();
    assert_eq!(c.receive.codec.relabel.as_ref().map(|r| r.len()), Some(1));
    assert!(base().resolve().unwrap().receive.codec.relabel.is_none());
}

#[test]
fn max_requests_per_minute_defaults_to_azures_limit_for_azure_hosts_only() {
    let c = base().resolve().unwrap();
    assert_eq!(c.destination.upstream.max_requests_per_minute, Some(15_000));
    let generic = Settings {
        ingestion_url: Some("http://127.0.0.1:9090/api/v1/write".into()),
        allow_plain_http: Some(true),
        identity: Some(IdentityKind::None),
        ..Settings::default()
    };
    let c = generic.clone().resolve().unwrap();
    assert_eq!(c.destination.upstream.max_requests_per_minute, None);
    let c = Settings {
        max_requests_per_minute: Some(600),
        ..generic.clone()
    }
    .resolve()
    .unwrap();
    assert_eq!(c.destination.upstream.max_requests_per_minute, Some(600));
    let e = Settings {
        max_requests_per_minute: Some(0),
        ..generic
    }
    .resolve()
    .unwrap_err();
    assert!(
        e.to_string().contains("max_requests_per_minute = \"0\""),
        "{e}"
    );
}

#[test]
fn commit_delay_reaches_the_disk_queue_and_a_long_one_is_refused() {
    let s = Settings {
        queue_dir: Some("/var/lib/promlink".into()),
        commit_delay: Some(Duration::from_micros(300)),
        ..base()
    };
    let c = s.resolve().unwrap();
    let disk = c.destination.queue.disk.expect("disk queue");
    assert_eq!(disk.commit_delay, Duration::from_micros(300));
    let s = Settings {
        queue_dir: Some("/var/lib/promlink".into()),
        commit_delay: Some(Duration::from_millis(50)),
        ..base()
    };
    let e = s.resolve().unwrap_err().to_string();
    assert!(
        e.contains("commit_delay") && e.contains("50ms") && e.contains("at most 10ms"),
        "{e}"
    );
}

#[test]
fn series_cache_bytes_bounds_the_cache_and_zero_turns_it_off() {
    let c = base().resolve().unwrap();
    let cache = c.receive.codec.series_cache.expect("on by default");
    assert_eq!(cache.max_bytes(), crate::codec::DEFAULT_SERIES_CACHE_BYTES);
    let c = Settings {
        series_cache_bytes: Some(4 << 20),
        ..base()
    }
    .resolve()
    .unwrap();
    assert_eq!(c.receive.codec.series_cache.unwrap().max_bytes(), 4 << 20);
    let c = Settings {
        series_cache_bytes: Some(0),
        ..base()
    }
    .resolve()
    .unwrap();
    assert!(c.receive.codec.series_cache.is_none());
    let e = Settings {
        series_cache_bytes: Some(1000),
        ..base()
    }
    .resolve()
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("series_cache_bytes") && e.contains("1000") && e.contains("from 65536"),
        "{e}"
    );
    let e = Settings {
        series_cache_bytes: Some(16 << 30),
        ..base()
    }
    .resolve()
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("series_cache_bytes") && e.contains("to 1073741824"),
        "{e}"
    );
}
