//! `promlink doctor` end to end, in-process, all on 127.0.0.0/8.
//!
//! A [`TestDns`] answers the Azure names: the DCE host, the `handler.control` hosts (and the Log
//! Analytics hosts) resolve to 127.0.0.2, the "private endpoint" (`--private-cidr 127.0.0.2/32`),
//! or in the public shape to 127.0.0.3. Two DCE emulators listen on 127.0.0.2:<port> and
//! 127.0.0.3:<port> with a certificate for those names; the ingestion URL names <port>. The
//! Entra emulator is the authority on 127.0.0.1 (its certificate names the IP), and promlink
//! authenticates with a client secret. Nothing goes to 169.254.169.254 or off the host.

use std::time::Duration;

use promlink::config::Settings;
use promlink::doctor::{self, DoctorArgs, OutputFormat, Report, Status};
use promlink::emulator::azure::{
    AzureOptions, EmulatedAzure, DCE_HOST, PRIVATE_ENDPOINT as PRIVATE, PUBLIC_ENDPOINT as PUBLIC,
    SECRET,
};
use promlink::emulator::dns::privatelink_name;
use promlink::emulator::dns::TestDns;
use promlink::privatelink::{Mode, Verdict};

const CONTROL: &str = "eastus.handler.control.monitor.azure.com";
const GLOBAL: &str = "global.handler.control.monitor.azure.com";
const WORKSPACE: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

/// Puts one DNS shape in place.
type Setup<'a> = dyn Fn(&TestDns) + 'a;

struct Env {
    azure: EmulatedAzure,
    dir: tempfile::TempDir,
}

impl Env {
    /// Everything private-linked and healthy; the role granted when `grant`.
    async fn start(grant: bool) -> Env {
        let azure = EmulatedAzure::start(AzureOptions {
            extra_names: vec![CONTROL.into(), GLOBAL.into()],
            cert_names: vec![
                format!("{WORKSPACE}.ods.opinsights.azure.com"),
                format!("{WORKSPACE}.oms.opinsights.azure.com"),
            ],
            granted: grant,
            dns_ttl: 60,
            ca_name: "doctor test CA".into(),
            ..AzureOptions::default()
        })
        .await
        .unwrap();
        Env {
            azure,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn url(&self) -> String {
        self.azure.ingestion_url()
    }

    fn args(&self, mode: Mode) -> DoctorArgs {
        let mut args = DoctorArgs::new(Settings {
            probe_timeout: Some(Duration::from_secs(2)),
            request_timeout: Some(Duration::from_secs(10)),
            ..self.azure.settings(self.dir.path(), mode).unwrap()
        });
        args.token_timeout = Duration::from_secs(10);
        args
    }

    async fn stop(self) {
        self.azure.shutdown().await;
    }
}

async fn report(args: &DoctorArgs) -> Report {
    doctor::diagnose(args).await.expect("valid configuration")
}

fn one<'a>(r: &'a Report, name: &str, target: &str) -> &'a doctor::Check {
    r.checks
        .iter()
        .find(|c| c.name == name && c.target == target)
        .unwrap_or_else(|| panic!("no {name} check for {target}: {r:#?}"))
}

#[tokio::test]
async fn private_path_passes_under_require() {
    let env = Env::start(true).await;
    let args = env.args(Mode::Require);
    let r = report(&args).await;
    assert!(r.ok, "{}", r.to_human());
    assert_eq!(r.exit_code(), 0);
    assert_eq!(r.mode, "require");
    let dns = one(&r, "dns", DCE_HOST);
    assert_eq!(dns.status, Status::Ok);
    assert_eq!(dns.verdict.as_deref(), Some("private"));
    assert!(
        dns.seen.contains(&privatelink_name(DCE_HOST)),
        "{}",
        dns.seen
    );
    let connect = one(&r, "connect", DCE_HOST);
    assert_eq!(connect.status, Status::Ok, "{connect:?}");
    assert!(connect.seen.contains("127.0.0.2"), "{}", connect.seen);
    for host in [CONTROL, GLOBAL] {
        assert_eq!(one(&r, "dns", host).status, Status::Ok);
        assert_eq!(one(&r, "connect", host).status, Status::Ok);
    }
    // The authority is an IP literal here: nothing to resolve, but reachable.
    assert_eq!(one(&r, "connect", "127.0.0.1").status, Status::Ok);
    let token = r.checks.iter().find(|c| c.name == "token").unwrap();
    assert_eq!(token.status, Status::Ok, "{token:?}");
    let canary = r.checks.iter().find(|c| c.name == "canary").unwrap();
    assert_eq!(canary.status, Status::Skipped);
    // Never a byte to the public address under require.
    assert_eq!(env.azure.public.stats().requests, 0);

    let (text, code) = doctor::render(&args).await;
    assert_eq!(code, 0);
    assert!(text.contains(&format!("✓ dns {DCE_HOST}")), "{text}");
    assert!(
        text.contains("data would flow under private link mode require"),
        "{text}"
    );
    assert!(!text.contains(SECRET), "the client secret leaked: {text}");
    env.stop().await;
}

#[tokio::test]
async fn every_verdict_gives_its_remediation_and_fails_under_require() {
    let env = Env::start(true).await;
    let mut args = env.args(Mode::Require);
    let pl = privatelink_name(DCE_HOST);
    let cases: [(Verdict, &Setup<'_>); 5] = [
        (Verdict::Public, &|d| d.set_public(DCE_HOST, PUBLIC, 60)),
        (Verdict::Nxdomain, &|d| {
            d.remove(&pl);
            d.set_cname(DCE_HOST, &pl, 60);
            d.set_nxdomain_zone("privatelink.monitor.azure.com");
        }),
        // Private, but not through a privatelink zone (a hosts-file style A record).
        (Verdict::UnexpectedAddress, &|d| {
            d.set_a(DCE_HOST, &[PRIVATE], 60)
        }),
        (Verdict::Mixed, &|d| {
            d.set_cname(DCE_HOST, &pl, 60);
            d.set_a(&pl, &[PRIVATE, PUBLIC], 60);
        }),
        (Verdict::DnsError, &|d| d.set_servfail(DCE_HOST, true)),
    ];
    for (verdict, setup) in cases {
        env.azure.dns.remove(DCE_HOST);
        setup(&env.azure.dns);
        args.output = OutputFormat::Human;
        let (text, code) = doctor::render(&args).await;
        assert_eq!(code, 1, "{verdict}: {text}");
        assert!(text.contains(verdict.remediation()), "{verdict}: {text}");
        assert!(text.contains(verdict.meaning()), "{verdict}: {text}");
        assert!(
            text.contains(&format!("✗ dns {DCE_HOST}")),
            "{verdict}: {text}"
        );
        let r = report(&args).await;
        let dns = one(&r, "dns", DCE_HOST);
        assert_eq!(dns.verdict.as_deref(), Some(verdict.as_str()), "{dns:?}");
        assert_eq!(dns.status, Status::Fail);
        // require probes nothing that is not verified private, and the canary has no path.
        assert_ne!(one(&r, "connect", DCE_HOST).status, Status::Ok);
    }
    assert_eq!(env.azure.public.stats().requests, 0);
    env.stop().await;
}

#[tokio::test]
async fn prefer_turns_public_into_a_warning_and_probes_the_fallback() {
    let env = Env::start(true).await;
    env.azure.dns.set_public(DCE_HOST, PUBLIC, 60);
    let mut args = env.args(Mode::Prefer);
    args.write_canary = true;
    let r = report(&args).await;
    assert!(r.ok, "{}", r.to_human());
    let dns = one(&r, "dns", DCE_HOST);
    assert_eq!(dns.status, Status::Warn);
    assert_eq!(dns.verdict.as_deref(), Some("public"));
    assert!(dns.fix.contains(Verdict::Public.remediation()));
    assert!(
        dns.fix.contains("*.ingest.monitor.azure.com")
            && dns.fix.contains("*.handler.control.monitor.azure.com"),
        "{}",
        dns.fix
    );
    let connect = one(&r, "connect", DCE_HOST);
    assert_eq!(connect.status, Status::Ok, "{connect:?}");
    assert!(connect.seen.contains("127.0.0.3"), "{}", connect.seen);
    // The canary went over the public fallback.
    let canary = r.checks.iter().find(|c| c.name == "canary").unwrap();
    assert_eq!(canary.status, Status::Ok, "{canary:?}");
    assert_eq!(env.azure.public.stats().accepted_requests, 1);
    assert_eq!(env.azure.private().stats().accepted_requests, 0);
    let (_, code) = doctor::render(&args).await;
    assert_eq!(code, 0);
    env.stop().await;
}

#[tokio::test]
async fn json_output_parses_and_lists_checks() {
    let env = Env::start(true).await;
    let mut args = env.args(Mode::Require);
    args.output = OutputFormat::Json;
    args.workspace_id = Some(WORKSPACE.into());
    let (text, code) = doctor::render(&args).await;
    let v: serde_json::Value = serde_json::from_str(&text).expect("doctor JSON parses");
    assert_eq!(code, 0, "{text}");
    assert_eq!(v["ok"], true);
    assert_eq!(v["mode"], "require");
    let checks = v["checks"].as_array().unwrap();
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    for want in ["ingestion-url", "dns", "connect", "token", "canary"] {
        assert!(names.contains(&want), "{want} missing: {names:?}");
    }
    for c in checks {
        for key in ["target", "status", "seen", "meaning", "fix"] {
            assert!(c[key].is_string(), "{key} in {c}");
        }
    }
    let dce = checks
        .iter()
        .find(|c| c["name"] == "dns" && c["target"] == DCE_HOST)
        .unwrap();
    assert_eq!(dce["verdict"], "private");
    assert_eq!(dce["status"], "ok");
    // The Log Analytics hosts have no record: checked, graded as warnings (not promlink's path).
    for host in [
        format!("{WORKSPACE}.ods.opinsights.azure.com"),
        format!("{WORKSPACE}.oms.opinsights.azure.com"),
    ] {
        let c = checks
            .iter()
            .find(|c| c["name"] == "dns" && c["target"] == host.as_str())
            .unwrap_or_else(|| panic!("no dns check for {host}"));
        assert_eq!(c["status"], "warn", "{c}");
    }
    env.stop().await;
}

#[tokio::test]
async fn canary_is_accepted_through_the_private_endpoint() {
    let env = Env::start(true).await;
    let mut args = env.args(Mode::Require);
    args.write_canary = true;
    let r = report(&args).await;
    let canary = r.checks.iter().find(|c| c.name == "canary").unwrap();
    assert_eq!(canary.status, Status::Ok, "{canary:?}");
    assert!(canary.seen.contains("HTTP 2"), "{}", canary.seen);
    assert!(canary.seen.contains("127.0.0.2"), "{}", canary.seen);
    let stats = env.azure.private().stats();
    assert_eq!(stats.accepted_requests, 1);
    assert_eq!(stats.samples, 1);
    assert_eq!(env.azure.public.stats().requests, 0);
    assert_eq!(r.exit_code(), 0);
    env.stop().await;
}

#[tokio::test]
async fn canary_403_explains_the_role_assignment() {
    let env = Env::start(false).await;
    let mut args = env.args(Mode::Require);
    args.write_canary = true;
    let (text, code) = doctor::render(&args).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("HTTP 403"), "{text}");
    assert!(text.contains("Monitoring Metrics Publisher"), "{text}");
    assert!(text.contains("30 minutes"), "{text}");
    assert!(text.contains("✗ canary"), "{text}");
    assert_eq!(env.azure.private().stats().accepted_requests, 0);
    env.stop().await;
}

#[tokio::test]
async fn wrong_client_secret_reports_the_aadsts_error_and_fix() {
    let env = Env::start(true).await;
    let mut args = env.args(Mode::Require);
    // After args(), which writes the rig's files.
    std::fs::write(env.dir.path().join("client-secret"), "not-the-secret").unwrap();
    args.write_canary = true;
    let r = report(&args).await;
    assert_eq!(r.exit_code(), 1);
    let token = r.checks.iter().find(|c| c.name == "token").unwrap();
    assert_eq!(token.status, Status::Fail);
    assert!(token.seen.contains("AADSTS"), "{}", token.seen);
    assert!(token.fix.contains("client secret"), "{}", token.fix);
    assert!(!r.to_json().contains("not-the-secret"));
    let canary = r.checks.iter().find(|c| c.name == "canary").unwrap();
    assert_eq!(canary.status, Status::Skipped);
    env.stop().await;
}

#[tokio::test]
async fn region_mismatch_warns_with_azures_rule() {
    let env = Env::start(true).await;
    let mut args = env.args(Mode::Require);
    args.cluster_region = Some("West Europe".into());
    let r = report(&args).await;
    let region = r.checks.iter().find(|c| c.name == "region").unwrap();
    assert_eq!(region.status, Status::Warn);
    assert!(region.seen.contains("eastus") && region.seen.contains("westeurope"));
    assert!(
        region.meaning.contains("DCE in the cluster's region"),
        "{}",
        region.meaning
    );
    assert_eq!(r.exit_code(), 0, "a warning does not stop data");

    args.cluster_region = Some("eastus".into());
    let r = report(&args).await;
    let region = r.checks.iter().find(|c| c.name == "region").unwrap();
    assert_eq!(region.status, Status::Ok);
    env.stop().await;
}

#[tokio::test]
async fn a_black_holed_private_endpoint_fails_connect() {
    let env = Env::start(true).await;
    // A TCP listener that accepts and never speaks TLS, on another private address.
    let hole = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let hole_port = hole.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut keep = Vec::new();
        while let Ok((s, _)) = hole.accept().await {
            keep.push(s);
        }
    });
    let mut args = env.args(Mode::Require);
    args.settings.ingestion_url = Some(
        env.url()
            .replace(&format!(":{}/", env.azure.port), &format!(":{hole_port}/")),
    );
    args.settings.probe_timeout = Some(Duration::from_millis(500));
    let r = report(&args).await;
    let connect = one(&r, "connect", DCE_HOST);
    assert_eq!(connect.status, Status::Fail, "{connect:?}");
    assert!(connect.seen.contains("timeout"), "{}", connect.seen);
    assert!(connect.fix.contains("private endpoint"), "{}", connect.fix);
    assert_eq!(r.exit_code(), 1);
    held.abort();
    env.stop().await;
}

/// With `routes`, doctor checks every route's destination on its own: a private-linked one
/// passes, one whose name has no DNS answer fails, and the whole report fails naming it.
#[tokio::test]
async fn every_route_is_checked_and_a_failing_one_fails_the_report() {
    let env = Env::start(true).await;
    let mut args = env.args(Mode::Require);
    let url = args.settings.ingestion_url.take().unwrap();
    let missing = url.replace("mydce", "nowhere");
    assert_ne!(missing, url, "{url}");
    let route = |name: &str, url: &str| promlink::config::RouteSettings {
        name: Some(name.into()),
        ingestion_url: Some(url.into()),
        ..Default::default()
    };
    args.settings.routes = Some(vec![route("teams", &missing), route("default", &url)]);
    let r = report(&args).await;
    assert!(!r.ok);
    assert_eq!(r.exit_code(), 1);
    let names: Vec<_> = r.routes.iter().map(|r| r.route.clone().unwrap()).collect();
    assert_eq!(names, ["teams", "default"]);
    let (teams, default) = (&r.routes[0], &r.routes[1]);
    assert!(default.ok, "{}", default.to_human());
    assert!(!teams.ok);
    let host = DCE_HOST.replace("mydce", "nowhere");
    assert_eq!(
        one(teams, "dns", &host).status,
        Status::Fail,
        "{}",
        teams.to_human()
    );
    let (text, code) = doctor::render(&args).await;
    assert_eq!(code, 1);
    assert!(text.contains("== route teams =="), "{text}");
    assert!(text.contains("data would NOT flow for: teams"), "{text}");
    env.stop().await;
}

/// `--read-back`: the canary written through the DCE is read back through the workspace's
/// query endpoint, itself private-linked (`privatelink.eastus.prometheus.monitor.azure.com` ->
/// 127.0.0.2) and verified under `query_private_link: require`; without Monitoring Data Reader
/// the read-back fails and names the role.
#[tokio::test]
async fn read_back_finds_the_canary_through_the_query_endpoint_and_explains_a_403() {
    const QUERY: &str = "ws-1.eastus.prometheus.monitor.azure.com";
    let azure = EmulatedAzure::start(AzureOptions {
        extra_names: vec![CONTROL.into(), GLOBAL.into(), QUERY.into()],
        dns_ttl: 60,
        ca_name: "doctor test CA".into(),
        ..AzureOptions::default()
    })
    .await
    .unwrap();
    azure
        .private()
        .grant_reader(promlink::emulator::azure::CLIENT);
    let env = Env {
        azure,
        dir: tempfile::tempdir().unwrap(),
    };
    let mut args = env.args(Mode::Require);
    args.settings.query_url = Some(
        format!("https://{QUERY}:{}", env.azure.port)
            .parse()
            .unwrap(),
    );
    args.settings.query_private_link = Some(Mode::Require);
    args.settings.canary_timeout = Some(Duration::from_secs(10));
    args.read_back = true;
    let r = report(&args).await;
    for name in ["query-dns", "query-connect", "read-back"] {
        let c = one(&r, name, QUERY);
        assert_eq!(c.status, Status::Ok, "{c:?}");
    }
    assert_eq!(
        one(&r, "query-dns", QUERY).verdict.as_deref(),
        Some("private")
    );
    let token = r.checks.iter().find(|c| c.name == "query-token").unwrap();
    assert_eq!(token.status, Status::Ok, "{token:?}");
    assert!(token
        .target
        .contains("https://prometheus.monitor.azure.com/.default"));
    assert_eq!(r.exit_code(), 0);
    assert_eq!(env.azure.public.stats().requests, 0);

    env.azure
        .private()
        .revoke_reader(promlink::emulator::azure::CLIENT);
    let r = report(&args).await;
    let c = one(&r, "read-back", QUERY);
    assert_eq!(c.status, Status::Fail, "{c:?}");
    assert!(c.seen.contains("HTTP 403"), "{c:?}");
    assert!(c.fix.contains("Monitoring Data Reader"), "{c:?}");
    assert_eq!(r.exit_code(), 1);
    env.stop().await;
}
