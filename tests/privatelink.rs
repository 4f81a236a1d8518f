//! Private Link end to end: a real DNS server (in-process, real DNS wire format) answers the DCE
//! name with the Azure shapes; a "private endpoint" DCE emulator listens on 127.0.0.2 and a
//! "public endpoint" one on 127.0.0.3 (same port, certificates for the DCE name); promlink counts
//! 127.0.0.2/32 as private through `--private-cidr`, exactly as an operator would configure it.

mod common;

use std::time::Duration;

use promlink::config::Settings;
use promlink::emulator::azure::{
    AzureOptions, EmulatedAzure, DCE_HOST as HOST, PRIVATE_ENDPOINT as PRIVATE,
    PUBLIC_ENDPOINT as PUBLIC,
};
use promlink::emulator::dce::DceHandle;
use promlink::emulator::dns::TestDns;
use promlink::loadgen::Checksum;
use promlink::privatelink::{ActivePath, Mode};
use promlink::serve::Running;

struct PlRig {
    azure: EmulatedAzure,
    /// What a resolver outside the private zone answers (prefer's fallback resolver).
    public_dns: TestDns,
    promlink: Running,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
    round: i64,
    acked: Checksum,
}

impl PlRig {
    async fn start(mode: Mode) -> PlRig {
        Self::start_with(mode, false).await
    }

    /// `ready_requires_upstream` set as given.
    async fn start_with(mode: Mode, ready_requires_upstream: bool) -> PlRig {
        let azure = EmulatedAzure::start(AzureOptions {
            ca_name: "private link test CA".into(),
            ..AzureOptions::default()
        })
        .await
        .unwrap();
        let public_dns = TestDns::start().await.unwrap();
        public_dns.set_public(HOST, PUBLIC, 1);
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            public_dns_server: Some(vec![public_dns.addr()]),
            ready_requires_upstream: Some(ready_requires_upstream),
            ..common::private_link_settings(dir.path(), &azure, mode)
        };
        let promlink = promlink::serve::start(settings.resolve().unwrap())
            .await
            .unwrap();
        PlRig {
            azure,
            public_dns,
            promlink,
            _dir: dir,
            http: reqwest::Client::new(),
            round: 0,
            acked: Checksum::new(),
        }
    }

    fn private(&self) -> &DceHandle {
        self.azure.private()
    }

    /// Sends one round of 200 series (one sample each, later timestamps each round).
    async fn send_round(&mut self) {
        common::send_round(self.promlink.local_addr, &mut self.round, &mut self.acked).await;
    }

    async fn wait_path(&self, want: ActivePath) {
        wait(&format!("path {want:?}"), || {
            self.promlink.private_link.snapshot().path == want
        })
        .await;
    }

    async fn ready(&self) -> (u16, String) {
        let r = self
            .http
            .get(format!("http://{}/ready", self.promlink.local_addr))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Asserts that `/status` reports the Private Link check failing with `state`, its reason
    /// starting with `reason` (which names the verdict).
    async fn assert_private_link_status(&self, state: &str, reason: &str) {
        let check = self.status_check("private_link").await;
        assert_eq!(check["ok"], false, "{check}");
        assert_eq!(check["state"], state, "{check}");
        assert!(
            check["reason"].as_str().unwrap().starts_with(reason),
            "{check}"
        );
    }

    /// `GET /status`'s check `name` (it always answers 200).
    async fn status_check(&self, name: &str) -> serde_json::Value {
        let r = self
            .http
            .get(format!("http://{}/status", self.promlink.local_addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "/status is a report, not a probe");
        let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name} in {v}"))
            .clone()
    }

    fn firing(&self, name: &str) -> bool {
        self.promlink
            .alerter
            .firing()
            .iter()
            .any(|a| a.name == name)
    }

    async fn metric(&self, series: &str) -> f64 {
        common::metric(&self.http, self.promlink.local_addr, series).await
    }

    async fn stop(self) {
        self.promlink.shutdown.cancel();
        self.promlink.wait().await;
        self.azure.shutdown().await;
        self.public_dns.shutdown().await;
    }
}

async fn wait(what: &str, cond: impl Fn() -> bool) {
    common::wait_until(what, cond).await;
}

fn verdict_series(v: &str) -> String {
    format!("promlink_private_link_verdict{{upstream=\"{HOST}\",verdict=\"{v}\"}}")
}

/// `require`: a flip of DNS to the public answer mid-stream sends **zero** bytes to the public
/// endpoint; data is held (and still accepted: `/ready` stays 200, `/status` names the verdict),
/// and everything arrives once DNS is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_holds_data_and_never_touches_the_public_endpoint() {
    let mut rig = PlRig::start(Mode::Require).await;
    rig.wait_path(ActivePath::Private).await;
    rig.send_round().await;
    wait("first round at the private endpoint", || {
        rig.private().stats().samples == 200
    })
    .await;
    assert_eq!(rig.metric(&verdict_series("private")).await, 1.0);

    // The private zone is unlinked: the resolver now follows public DNS.
    rig.azure.dns.set_public(HOST, PUBLIC, 1);
    rig.wait_path(ActivePath::None).await;
    rig.send_round().await;
    rig.send_round().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        rig.private().stats().samples,
        200,
        "held, not delivered anywhere"
    );
    let (status, text) = rig.ready().await;
    assert_eq!(status, 200, "data is still accepted into the queue: {text}");
    rig.assert_private_link_status("blocked", "verdict public: ")
        .await;
    assert_eq!(rig.metric(&verdict_series("public")).await, 1.0);
    assert_eq!(
        rig.metric("promlink_private_link_active_path{path=\"none\"}")
            .await,
        1.0
    );

    // NXDOMAIN inside the private zone (DCE not in the AMPLS): still held.
    rig.azure.dce_leaves_the_private_zone();
    wait("nxdomain verdict", || {
        rig.promlink
            .private_link
            .snapshot()
            .resolution
            .is_some_and(|r| r.verdict == promlink::privatelink::Verdict::Nxdomain)
    })
    .await;

    // DNS fixed: everything held arrives at the private endpoint.
    rig.azure.private_dns_restored();
    wait("held rounds delivered", || {
        rig.private().stats().samples == 600
    })
    .await;
    let stats = rig.private().stats();
    assert_eq!(stats.checksum, rig.acked, "no loss, no duplicates");
    assert_eq!(stats.out_of_order_samples, 0);
    assert_eq!(
        rig.azure.public.connections(),
        0,
        "not even a TCP connection reached the public endpoint"
    );
    assert!(rig.metric("promlink_private_link_dns_changes_total").await >= 2.0);
    rig.stop().await;
}

/// `prefer`: falls back to the public endpoint while the private one is unusable, returns after
/// the hysteresis period, loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_falls_back_and_returns_without_loss() {
    let mut rig = PlRig::start(Mode::Prefer).await;
    rig.wait_path(ActivePath::Private).await;
    rig.send_round().await;
    wait("round 1 private", || rig.private().stats().samples == 200).await;

    rig.azure.dns.set_public(HOST, PUBLIC, 1);
    rig.wait_path(ActivePath::Public).await;
    rig.send_round().await;
    wait("round 2 public", || rig.azure.public.stats().samples == 200).await;
    assert!(rig
        .promlink
        .private_link
        .snapshot()
        .fallback_since
        .is_some());
    assert_eq!(rig.ready().await.0, 200, "prefer: data flows, so ready");
    rig.assert_private_link_status("public-fallback", "verdict public: ")
        .await;

    rig.azure.private_dns_restored();
    rig.wait_path(ActivePath::Private).await;
    rig.send_round().await;
    wait("round 3 private", || rig.private().stats().samples == 400).await;
    wait("fallback alert resolved", || {
        !rig.firing("PromlinkOnPublicFallback")
    })
    .await;

    let mut total = rig.private().stats().checksum;
    total.merge(&rig.azure.public.stats().checksum);
    assert_eq!(total, rig.acked, "no loss, no duplicates across the switch");
    assert_eq!(
        rig.metric("promlink_private_link_fallback_transitions_total")
            .await,
        2.0
    );
    rig.stop().await;
}

/// DNS is right but the private endpoint does not connect (a firewall): `require` holds and says
/// so (with `ready_requires_upstream`, `/ready` fails as well); `prefer` falls back to the
/// public answer of the public resolver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_endpoint_refusing_connections() {
    // require, with the readiness that also needs the upstream
    let mut rig = PlRig::start_with(Mode::Require, true).await;
    rig.wait_path(ActivePath::Private).await;
    rig.azure.private.take().unwrap().shutdown().await;
    wait("probe failure seen", || {
        rig.promlink.private_link.snapshot().probe_failure.is_some()
    })
    .await;
    rig.send_round().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (status, text) = rig.ready().await;
    assert_eq!(status, 503, "ready_requires_upstream: {text}");
    assert!(text.contains("does not connect"), "{text}");
    let check = rig.status_check("private_link").await;
    assert_eq!(check["state"], "private-unreachable", "{check}");
    assert_eq!(
        rig.azure.public.connections(),
        0,
        "require never falls back"
    );
    assert!(
        rig.metric("promlink_private_link_probe_failures_total{stage=\"tcp\"}")
            .await
            >= 1.0
    );
    // The endpoint comes back: the held round arrives.
    rig.azure.private = Some(rig.azure.start_dce(PRIVATE, rig.azure.port).await.unwrap());
    wait("held round delivered", || {
        rig.private().stats().samples == 200
    })
    .await;
    assert_eq!(rig.private().stats().checksum, rig.acked);
    rig.stop().await;

    // prefer
    let mut rig = PlRig::start(Mode::Prefer).await;
    rig.wait_path(ActivePath::Private).await;
    rig.azure.private.take().unwrap().shutdown().await;
    rig.wait_path(ActivePath::Public).await;
    rig.send_round().await;
    wait("fallback delivery", || {
        rig.azure.public.stats().samples == 200
    })
    .await;
    assert_eq!(rig.azure.public.stats().checksum, rig.acked);
    rig.stop().await;
}
