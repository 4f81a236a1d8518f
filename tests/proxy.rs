//! Egress proxies end to end: promlink behind an on-premises HTTP proxy (the proxy emulator,
//! loopback only) under each Private Link policy, and the refusal of `require` with a proxy.
//!
//! The DCE and the Entra ID authority are given names that only the proxy emulator maps to
//! addresses (the DCE name to the "public endpoint" 127.0.0.3, `login.proxy.test` to the Entra
//! emulator), so data or a token arriving proves the way it took. The "private endpoint"
//! 127.0.0.2 is reached only through the test DNS server and the pinned resolver, as in
//! `tests/privatelink.rs`. The proxy settings are passed to the configuration explicitly
//! (`Settings::resolve_with`), never through this process's environment; the CLI tests set the
//! variables on the child process only.

mod common;

use std::process::Command;

use common::{wait_until, CLIENT, TENANT};
use promlink::emulator::azure::{
    AzureOptions, EmulatedAzure, DCE_HOST as HOST, PUBLIC_ENDPOINT as PUBLIC,
};
use promlink::emulator::dce::DEFAULT_DCR_ID;
use promlink::emulator::proxy::{ProxyEmulator, ProxyEmulatorConfig, ProxyHandle};
use promlink::loadgen::Checksum;
use promlink::privatelink::{ActivePath, Mode};
use promlink::proxy::ProxyConfig;
use promlink::serve::Running;

const LOGIN: &str = "login.proxy.test";
const PROXY_USER: &str = "promlink";
const PROXY_PASSWORD: &str = "pr0xy-Pa55word";

/// Where promlink is told the DCE and the authority are.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Names {
    /// The DCE name and `login.proxy.test`: only the proxy (or, for the DCE, the test DNS
    /// server under require/prefer) can turn them into addresses.
    Proxied,
    /// The public endpoint by address (127.0.0.3) and the authority as `localhost`: loopback.
    Loopback,
}

struct Rig {
    azure: EmulatedAzure,
    proxy: ProxyHandle,
    promlink: Running,
    dir: tempfile::TempDir,
    round: i64,
    acked: Checksum,
}

impl Rig {
    /// promlink under `mode` with `HTTPS_PROXY` pointing at the proxy emulator (which wants
    /// credentials) and `NO_PROXY` = `no_proxy`.
    async fn start(mode: Mode, no_proxy: &str, names: Names) -> Rig {
        let azure = EmulatedAzure::start(AzureOptions {
            cert_names: vec!["127.0.0.3".into()],
            entra_names: vec![LOGIN.into()],
            ca_name: "egress proxy test CA".into(),
            ..AzureOptions::default()
        })
        .await
        .unwrap();
        let (entra, port) = (&azure.entra, azure.port);
        let proxy = ProxyEmulator::start(ProxyEmulatorConfig {
            routes: vec![(HOST.into(), PUBLIC), (LOGIN.into(), entra.addr().ip())],
            credentials: Some((PROXY_USER.into(), PROXY_PASSWORD.into())),
            ..ProxyEmulatorConfig::default()
        })
        .await
        .unwrap();
        let (dce_host, authority) = match names {
            Names::Proxied => (
                HOST.to_string(),
                format!("https://{LOGIN}:{}", entra.addr().port()),
            ),
            Names::Loopback => (
                PUBLIC.to_string(),
                format!("https://localhost:{}", entra.addr().port()),
            ),
        };
        let dir = tempfile::tempdir().unwrap();
        let settings = promlink::config::Settings {
            ingestion_url: Some(format!("https://{dce_host}:{port}/dataCollectionRules/{DEFAULT_DCR_ID}/streams/Microsoft-PrometheusMetrics/api/v1/write?api-version=2023-04-24")),
            authority_host: Some(authority),
            ..common::private_link_settings(dir.path(), &azure, mode)
        };
        let egress = ProxyConfig::new(
            Some(&proxy.url_with(PROXY_USER, PROXY_PASSWORD)),
            None,
            no_proxy,
        )
        .unwrap();
        let cfg = settings.resolve_with(egress).unwrap();
        // The proxied names resolve nowhere but at the proxy (or the test DNS server): make
        // sure no wrong decision sends promlink to look them up itself.
        if names == Names::Proxied {
            assert!(cfg
                .proxy
                .route(&cfg.destination.identity.authority_host)
                .is_proxy());
            assert!(mode != Mode::Off || cfg.proxy.route(&cfg.destination.upstream.url).is_proxy());
        }
        let promlink = promlink::serve::start(cfg).await.unwrap();
        Rig {
            azure,
            proxy,
            promlink,
            dir,
            round: 0,
            acked: Checksum::new(),
        }
    }

    async fn send_round(&mut self) {
        common::send_round(self.promlink.local_addr, &mut self.round, &mut self.acked).await;
    }

    async fn wait_path(&self, want: ActivePath) {
        wait_until(&format!("path {want:?}"), || {
            self.promlink.private_link.snapshot().path == want
        })
        .await;
    }

    /// Tunnels the proxy opened to the DCE name and to the authority.
    fn through_proxy(&self) -> (usize, usize) {
        (self.proxy.count_host(HOST), self.proxy.count_host(LOGIN))
    }

    async fn stop(self) {
        self.promlink.shutdown.cancel();
        self.promlink.wait().await;
        self.azure.shutdown().await;
        self.proxy.shutdown().await;
    }
}

/// `off`: everything to the DCE and the token requests go through the proxy, which is the only
/// one that knows where either name is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_sends_the_upstream_and_entra_through_the_proxy() {
    let mut rig = Rig::start(Mode::Off, "", Names::Proxied).await;
    rig.send_round().await;
    wait_until("the round at the DCE, through the proxy", || {
        rig.azure.public.stats().samples == 200
    })
    .await;
    assert_eq!(rig.azure.public.stats().checksum, rig.acked);
    let (dce, login) = rig.through_proxy();
    assert!(dce >= 1 && login >= 1, "{:?}", rig.proxy.targets());
    let port = rig.azure.public.addr().port();
    let entra_port = rig.azure.entra.addr().port();
    for t in rig.proxy.targets() {
        assert!(
            t == format!("{HOST}:{port}") || t == format!("{LOGIN}:{entra_port}"),
            "unexpected CONNECT {t}"
        );
    }
    assert_eq!(rig.proxy.auth_failures(), 0, "credentials from the URL");
    assert_eq!(rig.azure.private().connections(), 0);
    rig.stop().await;
}

/// `require` with the DCE host excluded by a `NO_PROXY` suffix: accepted at start; data goes
/// straight to the verified private endpoint (the proxy never sees the DCE name), the token
/// requests through the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_with_the_dce_in_no_proxy_goes_direct_and_entra_through_the_proxy() {
    let mut rig = Rig::start(Mode::Require, ".ingest.monitor.azure.com", Names::Proxied).await;
    rig.wait_path(ActivePath::Private).await;
    rig.send_round().await;
    wait_until("the round at the private endpoint", || {
        rig.azure.private().stats().samples == 200
    })
    .await;
    assert_eq!(rig.azure.private().stats().checksum, rig.acked);
    let (dce, login) = rig.through_proxy();
    assert_eq!(dce, 0, "{:?}", rig.proxy.targets());
    assert!(login >= 1, "{:?}", rig.proxy.targets());
    assert_eq!(rig.azure.public.connections(), 0);
    rig.stop().await;
}

/// `prefer`: the private endpoint directly while it verifies (the proxy sees nothing for the
/// DCE); when the private zone answers NXDOMAIN, the public fallback goes through the proxy,
/// with no public DNS answer at all (the proxy resolves the name); back to the private endpoint
/// afterwards, with nothing more through the proxy, and nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_private_path_direct_public_fallback_through_the_proxy() {
    let mut rig = Rig::start(Mode::Prefer, "", Names::Proxied).await;
    rig.wait_path(ActivePath::Private).await;
    rig.send_round().await;
    wait_until("round 1 at the private endpoint", || {
        rig.azure.private().stats().samples == 200
    })
    .await;
    assert_eq!(rig.through_proxy().0, 0, "{:?}", rig.proxy.targets());

    // The DCE leaves the AMPLS: NXDOMAIN inside the private zone, no public address anywhere.
    rig.azure.dce_leaves_the_private_zone();
    rig.wait_path(ActivePath::Public).await;
    rig.send_round().await;
    wait_until("round 2 at the public endpoint, through the proxy", || {
        rig.azure.public.stats().samples == 200
    })
    .await;
    assert!(rig.through_proxy().0 >= 1, "{:?}", rig.proxy.targets());
    assert!(rig.promlink.private_link.snapshot().approved.is_empty());
    wait_until("the fallback alert", || {
        rig.promlink
            .alerter
            .firing()
            .iter()
            .any(|a| a.name == "PromlinkOnPublicFallback")
    })
    .await;

    // The private zone is fixed: back to the private endpoint, directly.
    rig.azure.private_dns_restored();
    rig.wait_path(ActivePath::Private).await;
    let back = rig.through_proxy().0;
    rig.send_round().await;
    wait_until("round 3 at the private endpoint", || {
        rig.azure.private().stats().samples == 400
    })
    .await;
    assert_eq!(
        rig.through_proxy().0,
        back,
        "no tunnel to the DCE once back on the private path: {:?}",
        rig.proxy.targets()
    );
    let mut total = rig.azure.private().stats().checksum;
    total.merge(&rig.azure.public.stats().checksum);
    assert_eq!(total, rig.acked, "no loss, no duplicates across the switch");
    rig.stop().await;
}

/// Loopback destinations never go through the proxy: the upstream at 127.0.0.3 and the
/// authority as `localhost` are reached directly while the proxy refuses everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_destinations_are_never_proxied() {
    let mut rig = Rig::start(Mode::Off, "", Names::Loopback).await;
    rig.proxy.set_refuse(true);
    rig.send_round().await;
    wait_until("the round at the DCE", || {
        rig.azure.public.stats().samples == 200
    })
    .await;
    assert_eq!(rig.azure.public.stats().checksum, rig.acked);
    assert!(rig.proxy.targets().is_empty(), "{:?}", rig.proxy.targets());
    rig.stop().await;
}

const BIN: &str = env!("CARGO_BIN_EXE_promlink");

/// `promlink <args>` with only PATH and `vars` in its environment; (exit code, stdout, stderr).
fn run(args: &[&str], vars: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `require` (explicit or the Azure default) with a proxy for the DCE host stops `serve`,
/// `check-config` and `doctor` with exit 64, naming the key, the value, the variable and why,
/// never the proxy's password; the lowercase variable counts too; with the DCE host in
/// `NO_PROXY` the same configuration is valid, and `check-config` prints it redacted.
#[test]
fn require_with_a_proxy_for_the_dce_is_refused_at_start() {
    let url = format!(
        "https://{HOST}/dataCollectionRules/{DEFAULT_DCR_ID}/streams/Microsoft-PrometheusMetrics/api/v1/write?api-version=2023-04-24"
    );
    // Port 9 on loopback: nothing is ever sent to it (the configuration stops first).
    let proxy = format!("http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:9");
    let common = ["--ingestion-url", url.as_str(), "--listen", "127.0.0.1:0"];
    for (command, explicit, var) in [
        ("serve", true, "HTTPS_PROXY"),
        ("serve", false, "https_proxy"),
        ("check-config", false, "HTTPS_PROXY"),
        ("doctor", true, "https_proxy"),
    ] {
        let mut args = vec![command];
        args.extend(common);
        if explicit {
            args.extend(["--private-link", "require"]);
        }
        let (code, out, err) = run(&args, &[(var, &proxy)]);
        assert_eq!(code, Some(64), "{command} {var}: {out}{err}");
        let text = format!("{out}{err}");
        for want in [
            "private_link = \"require\"",
            &format!("{var} (http://<redacted>@127.0.0.1:9) applies to {HOST}"),
            "a proxy resolves the name itself",
            "NO_PROXY",
        ] {
            assert!(
                text.contains(want),
                "{command} {var}: {want:?} missing:\n{text}"
            );
        }
        assert!(!text.contains(PROXY_PASSWORD), "{command}: {text}");
    }

    let (code, out, err) = run(
        &["check-config", "--ingestion-url", &url],
        &[
            ("HTTPS_PROXY", &proxy),
            ("NO_PROXY", "localhost,.ingest.monitor.azure.com"),
        ],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("http://<redacted>@127.0.0.1:9"), "{out}");
    assert!(!out.contains(PROXY_PASSWORD) && !err.contains(PROXY_PASSWORD));

    // A proxy URL promlink cannot use is a configuration problem, too.
    let (code, _, err) = run(
        &["check-config", "--ingestion-url", &url],
        &[("HTTPS_PROXY", "socks5://u:secretsocks@127.0.0.1:9")],
    );
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains(
            "HTTPS_PROXY = \"socks5://<redacted>@127.0.0.1:9\": socks5 proxies are not supported"
        ),
        "{err}"
    );
    assert!(!err.contains("secretsocks"), "{err}");

    // --help says which variables count.
    for command in ["serve", "check-config", "doctor"] {
        let (_, help, _) = run(&[command, "--help"], &[]);
        for want in ["HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "IMDS"] {
            assert!(
                help.contains(want),
                "{command} --help lacks {want}:\n{help}"
            );
        }
    }
}

/// Runs `promlink doctor --output json` against the rig (under `mode`, the DCE and the
/// authority by their proxied names, the test DNS server, 127.0.0.2 private) with
/// `HTTPS_PROXY` and `NO_PROXY=.handler.control.monitor.azure.com` set on the child only;
/// (exit code, report, stdout).
async fn doctor(rig: &Rig, mode: &str) -> (Option<i32>, serde_json::Value, String) {
    let url = format!(
        "https://{HOST}:{}/dataCollectionRules/{DEFAULT_DCR_ID}/streams/Microsoft-PrometheusMetrics/api/v1/write?api-version=2023-04-24",
        rig.azure.public.addr().port()
    );
    let authority = format!("https://{LOGIN}:{}", rig.azure.entra.addr().port());
    let dir = rig.dir.path();
    let out = tokio::process::Command::new(BIN)
        .args(["doctor", "--output", "json", "--write-canary"])
        .args(["--ingestion-url", &url, "--private-link", mode])
        .args(["--private-cidr", "127.0.0.2/32"])
        .args(["--identity", "client-secret", "--tenant-id", TENANT])
        .args(["--client-id", CLIENT, "--authority-host", &authority])
        .arg("--client-secret-file")
        .arg(dir.join("client-secret"))
        .arg("--ca-file")
        .arg(dir.join("ca.pem"))
        .args(["--dns-server", &rig.azure.dns.addr().to_string()])
        .args(["--probe-timeout", "2s", "--token-timeout", "10s"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "HTTPS_PROXY",
            rig.proxy.url_with(PROXY_USER, PROXY_PASSWORD),
        )
        .env("NO_PROXY", ".handler.control.monitor.azure.com")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let report = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (out.status.code(), report, text)
}

/// The check named `name` for `target`.
fn check<'a>(report: &'a serde_json::Value, name: &str, target: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name && c["target"] == target)
        .unwrap_or_else(|| panic!("no {name} check for {target}: {report:#}"))
}

/// The report's canary went through the proxy and is the one sample at the public endpoint.
fn canary_through_the_proxy(rig: &Rig, report: &serde_json::Value) {
    let canary = check(report, "canary", HOST);
    assert_eq!(canary["status"], "ok", "{canary:#}");
    let seen = canary["seen"].as_str().unwrap();
    assert!(seen.contains("through the egress proxy"), "{canary:#}");
    assert_eq!(rig.azure.public.stats().samples, 1, "{canary:#}");
}

/// `promlink doctor` says how each host is reached, probes the DCE and the authority through
/// the proxy (whose names it cannot resolve itself), sends the canary through it, and explains
/// a proxy that refuses; the proxy's password never appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_the_route_and_probes_through_the_proxy() {
    let rig = Rig::start(Mode::Off, "", Names::Proxied).await;
    let (code, report, text) = doctor(&rig, "off").await;
    assert_eq!(code, Some(0), "{report:#}");
    assert!(!text.contains(PROXY_PASSWORD), "{text}");
    let proxy_url = format!("http://<redacted>@{}", rig.proxy.addr());
    for host in [HOST, LOGIN] {
        let c = check(&report, "proxy", host);
        assert_eq!(c["status"], "ok", "{c:#}");
        let seen = c["seen"].as_str().unwrap();
        assert!(
            seen.starts_with(&format!(
                "through HTTPS_PROXY {proxy_url}: tunnel to {host}:"
            )) && seen.contains("verified TLS, HTTP "),
            "{seen}"
        );
        // The names resolve nowhere here: fine, the proxy resolves them.
        assert_eq!(check(&report, "dns", host)["status"], "ok", "{report:#}");
        assert_eq!(check(&report, "connect", host)["status"], "skipped");
    }
    let control = check(&report, "proxy", "eastus.handler.control.monitor.azure.com");
    assert_eq!(
        control["seen"],
        "direct (NO_PROXY entry .handler.control.monitor.azure.com)"
    );
    assert_eq!(
        check(&report, "token", "identity client-secret")["status"],
        "ok"
    );
    canary_through_the_proxy(&rig, &report);
    assert_eq!(rig.azure.private().connections(), 0);

    // A proxy whose allow-list lacks the hosts: doctor fails and says why.
    rig.proxy.set_refuse(true);
    let (code, report, _) = doctor(&rig, "off").await;
    assert_eq!(code, Some(1), "{report:#}");
    let c = check(&report, "proxy", HOST);
    assert_eq!(c["status"], "fail", "{c:#}");
    assert!(
        c["meaning"]
            .as_str()
            .unwrap()
            .contains("refused to open a tunnel"),
        "{c:#}"
    );
    assert!(c["fix"].as_str().unwrap().contains("NO_PROXY"), "{c:#}");
    assert_eq!(check(&report, "proxy", LOGIN)["status"], "fail");
    rig.stop().await;
}

/// Under `prefer`, doctor probes the private endpoint directly and the public fallback through
/// the proxy, grading the proxy by what is left when it fails: a warning while the private path
/// works, a failure when it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_under_prefer_probes_the_private_endpoint_directly() {
    let rig = Rig::start(Mode::Prefer, "", Names::Proxied).await;
    let (code, report, _) = doctor(&rig, "prefer").await;
    assert_eq!(code, Some(0), "{report:#}");
    let connect = check(&report, "connect", HOST);
    assert_eq!(connect["status"], "ok", "{connect:#}");
    assert!(
        connect["seen"].as_str().unwrap().starts_with("127.0.0.2:"),
        "{connect:#}"
    );
    let fallback = check(&report, "proxy", HOST);
    assert_eq!(fallback["status"], "ok", "{fallback:#}");
    assert!(
        fallback["meaning"]
            .as_str()
            .unwrap()
            .starts_with("private_link prefer's public fallback"),
        "{fallback:#}"
    );
    assert_eq!(rig.azure.private().stats().samples, 1, "the canary, direct");

    // The fallback refused while the private path works: a warning.
    rig.proxy.set_refuse(true);
    let (code, report, _) = doctor(&rig, "prefer").await;
    assert_eq!(check(&report, "proxy", HOST)["status"], "warn");
    assert_eq!(check(&report, "proxy", LOGIN)["status"], "fail");
    assert_eq!(code, Some(1), "the authority is lost: {report:#}");

    // The private zone answers NXDOMAIN: the fallback through the proxy is all there is.
    rig.azure.dce_leaves_the_private_zone();
    let (_, report, _) = doctor(&rig, "prefer").await;
    assert_eq!(check(&report, "connect", HOST)["status"], "skipped");
    assert_eq!(check(&report, "proxy", HOST)["status"], "fail");
    rig.proxy.set_refuse(false);
    let (code, report, _) = doctor(&rig, "prefer").await;
    assert_eq!(code, Some(0), "{report:#}");
    canary_through_the_proxy(&rig, &report);
    rig.stop().await;
}
