//! The proxy decision: variables, `NO_PROXY` semantics, the always-direct destinations, and
//! that credentials never show.

use std::collections::HashMap;

use url::Url;

use super::{Direct, ProxyConfig, ProxyUrl, Route};

const PROXY: &str = "http://proxy.corp:3128";

fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

/// What `route` says, as a short word: `proxy`, `notset`, `loopback`, `linklocal` or
/// `no_proxy:<entry>`.
fn decide(cfg: &ProxyConfig, url: &str) -> String {
    match cfg.route(&Url::parse(url).unwrap()) {
        Route::Proxy { var, .. } => format!("proxy:{var}"),
        Route::Direct(Direct::NotSet(_)) => "notset".into(),
        Route::Direct(Direct::Loopback) => "loopback".into(),
        Route::Direct(Direct::LinkLocal) => "linklocal".into(),
        Route::Direct(Direct::Excluded(e)) => format!("no_proxy:{e}"),
    }
}

#[test]
fn no_proxy_semantics() {
    let dce = "https://mydce-ab12.eastus-1.metrics.ingest.monitor.azure.com/x";
    // (NO_PROXY, destination, expected)
    #[rustfmt::skip]
    let table: &[(&str, &str, &str)] = &[
        ("", dce, "proxy:HTTPS_PROXY"),
        // A name matches itself and everything under it, with or without a leading dot or "*.".
        (".ingest.monitor.azure.com", dce, "no_proxy:.ingest.monitor.azure.com"),
        ("ingest.monitor.azure.com", dce, "no_proxy:ingest.monitor.azure.com"),
        ("*.monitor.azure.com", dce, "no_proxy:*.monitor.azure.com"),
        ("monitor.azure.com", "https://monitor.azure.com/", "no_proxy:monitor.azure.com"),
        (".monitor.azure.com", "https://monitor.azure.com/", "no_proxy:.monitor.azure.com"),
        // Whole labels only, ASCII case ignored, trailing dots ignored.
        ("azure.com", "https://notazure.com/", "proxy:HTTPS_PROXY"),
        ("zure.com", "https://login.azure.com/", "proxy:HTTPS_PROXY"),
        ("AZURE.com.", "https://Login.Azure.COM./", "no_proxy:AZURE.com."),
        // Several entries, whitespace ignored; the first match is reported.
        (" corp.local , .azure.com,", "https://a.azure.com/", "no_proxy:.azure.com"),
        // "*" alone: everything, IP literals included.
        ("*", dce, "no_proxy:*"),
        ("*", "https://10.1.2.3/", "no_proxy:*"),
        // IPs and CIDRs match IP literals only; names are never resolved to compare.
        ("10.0.0.0/8", "https://10.20.30.40/", "no_proxy:10.0.0.0/8"),
        ("10.0.0.0/8", "https://11.0.0.1/", "proxy:HTTPS_PROXY"),
        ("10.1.2.3", "https://10.1.2.3:8443/", "no_proxy:10.1.2.3"),
        ("10.0.0.0/8", "https://intranet.corp/", "proxy:HTTPS_PROXY"),
        ("fd00::/8", "https://[fd12::1]/", "no_proxy:fd00::/8"),
        ("[fd12::1]", "https://[fd12::1]/", "no_proxy:[fd12::1]"),
        ("fd12::1", "https://[fd12::1]/", "no_proxy:fd12::1"),
        // A port limits the entry to that port (the scheme's default counts).
        ("azure.com:443", "https://a.azure.com/", "no_proxy:azure.com:443"),
        ("azure.com:443", "https://a.azure.com:8443/", "proxy:HTTPS_PROXY"),
        ("[fd12::1]:443", "https://[fd12::1]/", "no_proxy:[fd12::1]:443"),
        ("10.1.2.3:8443", "https://10.1.2.3/", "proxy:HTTPS_PROXY"),
        // Unreadable entries never match.
        ("azure.com:notaport", "https://a.azure.com/", "proxy:HTTPS_PROXY"),
        ("http://azure.com/", "https://azure.com/", "proxy:HTTPS_PROXY"),
    ];
    for (no_proxy, url, want) in table {
        let cfg = ProxyConfig::new(Some(PROXY), None, no_proxy).unwrap();
        assert_eq!(decide(&cfg, url), *want, "NO_PROXY={no_proxy:?} url={url}");
    }
}

#[test]
fn loopback_and_link_local_are_never_proxied() {
    // Even NO_PROXY set to something else, and both proxies set.
    let cfg = ProxyConfig::new(Some(PROXY), Some(PROXY), "example.com").unwrap();
    for (url, want) in [
        ("https://localhost:8443/", "loopback"),
        ("http://localhost/", "loopback"),
        ("https://LOCALHOST./", "loopback"),
        ("https://promlink.localhost/", "loopback"),
        ("https://127.0.0.1:9/", "loopback"),
        ("https://127.8.9.10/", "loopback"),
        ("https://[::1]:443/", "loopback"),
        ("https://[::ffff:127.0.0.1]/", "loopback"),
        (
            "http://169.254.169.254/metadata/identity/oauth2/token",
            "linklocal",
        ),
        ("https://[fe80::1]/", "linklocal"),
        // Look-alikes are not loopback.
        ("https://localhost.example.org/", "proxy:HTTPS_PROXY"),
        ("https://128.0.0.1/", "proxy:HTTPS_PROXY"),
        ("https://[::2]/", "proxy:HTTPS_PROXY"),
    ] {
        assert_eq!(decide(&cfg, url), want, "{url}");
    }
}

#[test]
fn https_proxy_serves_https_and_http_proxy_serves_http() {
    let only_https = ProxyConfig::new(Some(PROXY), None, "").unwrap();
    assert_eq!(
        decide(&only_https, "https://am.corp:9093/"),
        "proxy:HTTPS_PROXY"
    );
    assert_eq!(decide(&only_https, "http://am.corp:9093/"), "notset");
    let only_http = ProxyConfig::new(None, Some(PROXY), "").unwrap();
    assert_eq!(decide(&only_http, "https://am.corp:9093/"), "notset");
    assert_eq!(
        decide(&only_http, "http://am.corp:9093/"),
        "proxy:HTTP_PROXY"
    );
    let none = ProxyConfig::default();
    assert!(!none.is_set());
    assert_eq!(decide(&none, "https://a.azure.com/"), "notset");
}

#[test]
fn variables_uppercase_wins_lowercase_honoured_empty_is_unset() {
    let url = "https://a.azure.com/";
    // Lowercase alone is honoured, and reported under its own name.
    let (cfg, notices) = ProxyConfig::from_vars(vars(&[("https_proxy", PROXY)])).unwrap();
    assert_eq!(decide(&cfg, url), "proxy:https_proxy");
    assert!(notices.is_empty(), "{notices:?}");
    // Both set: uppercase wins, with a notice when they differ.
    let (cfg, notices) = ProxyConfig::from_vars(vars(&[
        ("HTTPS_PROXY", PROXY),
        ("https_proxy", "http://other:1"),
    ]))
    .unwrap();
    assert_eq!(decide(&cfg, url), "proxy:HTTPS_PROXY");
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].contains("using HTTPS_PROXY"), "{notices:?}");
    // Empty uppercase counts as unset.
    let (cfg, _) =
        ProxyConfig::from_vars(vars(&[("HTTPS_PROXY", " "), ("https_proxy", PROXY)])).unwrap();
    assert_eq!(decide(&cfg, url), "proxy:https_proxy");
    // Lowercase no_proxy, http_proxy.
    let (cfg, _) = ProxyConfig::from_vars(vars(&[
        ("https_proxy", PROXY),
        ("http_proxy", PROXY),
        ("no_proxy", ".azure.com"),
    ]))
    .unwrap();
    assert_eq!(decide(&cfg, url), "no_proxy:.azure.com");
    assert_eq!(decide(&cfg, "http://am.corp/"), "proxy:http_proxy");
    // NO_PROXY wins over no_proxy.
    let (cfg, _) = ProxyConfig::from_vars(vars(&[
        ("HTTPS_PROXY", PROXY),
        ("NO_PROXY", "corp.local"),
        ("no_proxy", ".azure.com"),
    ]))
    .unwrap();
    assert_eq!(decide(&cfg, url), "proxy:HTTPS_PROXY");
    // Nothing set: nothing to do.
    let (cfg, notices) = ProxyConfig::from_vars(vars(&[])).unwrap();
    assert!(!cfg.is_set() && notices.is_empty());
    // ALL_PROXY is not read, and the operator is told.
    let (cfg, notices) = ProxyConfig::from_vars(vars(&[("ALL_PROXY", PROXY)])).unwrap();
    assert!(!cfg.is_set());
    assert!(notices[0].contains("ALL_PROXY"), "{notices:?}");
}

#[test]
fn proxy_urls_are_checked_and_default_to_http() {
    for (raw, shown) in [
        ("proxy.corp:3128", "http://proxy.corp:3128"),
        ("http://proxy.corp:3128/", "http://proxy.corp:3128"),
        ("http://proxy.corp", "http://proxy.corp:80"),
        ("https://proxy.corp", "https://proxy.corp:443"),
        ("http://[fd00::1]:3128", "http://[fd00::1]:3128"),
        (
            "http://u:p@proxy.corp:3128",
            "http://<redacted>@proxy.corp:3128",
        ),
        (
            "http://u@proxy.corp:3128",
            "http://<redacted>@proxy.corp:3128",
        ),
    ] {
        assert_eq!(ProxyUrl::parse(raw).unwrap().to_string(), shown, "{raw}");
    }
    for (raw, why) in [
        ("socks5://proxy:1080", "socks5 proxies are not supported"),
        ("ftp://proxy:21", "not supported"),
        ("http://", "not a URL"),
        ("http://:3128", "not a URL"),
    ] {
        let e = ProxyUrl::parse(raw).unwrap_err();
        assert!(e.contains(why), "{raw}: {e}");
    }
}

#[test]
fn credentials_never_show() {
    let secret = "s3cr3t-pw";
    let raw = format!("http://proxyuser:{secret}@proxy.corp:3128");
    let cfg = ProxyConfig::new(Some(&raw), Some(&raw), "corp.local").unwrap();
    let url = Url::parse("https://a.azure.com/").unwrap();
    for text in [
        format!("{cfg:?}"),
        format!("{cfg:#?}"),
        cfg.route(&url).to_string(),
        format!("{:?}", cfg.route(&url)),
    ] {
        assert!(!text.contains(secret), "{text}");
        assert!(!text.contains("proxyuser"), "{text}");
        assert!(text.contains("proxy.corp:3128"), "{text}");
    }
    assert_eq!(
        cfg.route(&url).to_string(),
        "through HTTPS_PROXY http://<redacted>@proxy.corp:3128"
    );
    // A value that does not parse is reported without its credentials, too.
    let errors = ProxyConfig::from_vars(vars(&[(
        "HTTPS_PROXY",
        &format!("socks5://proxyuser:{secret}@proxy.corp:1080"),
    )]))
    .unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].var, "HTTPS_PROXY");
    let text = errors[0].to_string();
    assert!(
        !text.contains(secret) && !text.contains("proxyuser"),
        "{text}"
    );
    assert!(
        text.contains("socks5://<redacted>@proxy.corp:1080"),
        "{text}"
    );
}

#[test]
fn bad_values_are_all_reported() {
    let errors = ProxyConfig::from_vars(vars(&[
        ("HTTPS_PROXY", "socks5://p:1080"),
        ("http_proxy", "ftp://p"),
    ]))
    .unwrap_err();
    let vars: Vec<&str> = errors.iter().map(|e| e.var).collect();
    assert_eq!(vars, ["HTTPS_PROXY", "http_proxy"]);
}
