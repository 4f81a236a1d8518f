//! A test rig: the Entra emulator, the DCE emulator (sharing one test CA, verifying tokens) and
//! promlink itself, all in-process on 127.0.0.1, promlink authenticating with a client secret.
#![allow(dead_code)]

pub mod faultproxy;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use promlink::config::Settings;
use promlink::emulator::dce::{DceConfig, DceEmulator, DceHandle, DceTls};
use promlink::emulator::entra::{EntraConfig, EntraEmulator, EntraHandle, RegisteredClient};
use promlink::emulator::tls::TestCa;
use promlink::identity::IdentityKind;
use promlink::loadgen::{self, Checksum, LoadgenConfig};
use promlink::serve::Running;
use tokio_util::sync::CancellationToken;

pub use promlink::emulator::azure::{CLIENT, SECRET, TENANT};
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

pub struct Rig {
    pub entra: EntraHandle,
    pub dce: DceHandle,
    /// With `spread` > 1: the further DCEs (DCRs) the default route spreads over, after `dce`.
    pub more_dces: Vec<DceHandle>,
    pub promlink: Running,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

/// Knobs a test may turn before promlink starts.
pub struct RigOptions {
    pub keep_accepted: usize,
    pub shards: usize,
    pub flush_interval: Duration,
    pub max_samples_per_request: usize,
    pub queue_max_bytes: Option<usize>,
    pub token_lifetime: Duration,
    pub grant: bool,
    pub max_sample_age: Option<Duration>,
    pub queue_max_age: Option<Duration>,
    /// Send to the DCE through this address (a [`faultproxy::FaultProxy`]) instead of
    /// directly: the ingestion URL gets its port.
    pub upstream_via: Option<SocketAddr>,
    /// Above 1: that many DCEs, each with its own DCR id, and promlink configured with one
    /// route, `default`, spreading over them with `ingestion_urls`.
    pub spread: usize,
    /// A configuration file (YAML) to start from, `dir/promlink.yaml`: promlink then loads
    /// it as `serve --config` does (so it can reload it), the rig's settings acting as flags.
    /// `{url}` in it stands for the DCE's URL; a file with `routes` names its URLs itself, so
    /// the rig then gives no `ingestion_url`.
    pub config_yaml: Option<String>,
    /// Further settings; they win over the rig's own.
    pub extra: Settings,
}

impl Default for RigOptions {
    fn default() -> Self {
        Self {
            keep_accepted: 10_000,
            shards: 4,
            flush_interval: Duration::from_millis(100),
            max_samples_per_request: 5000,
            queue_max_bytes: None,
            token_lifetime: Duration::from_secs(3600),
            grant: true,
            max_sample_age: None,
            queue_max_age: None,
            upstream_via: None,
            spread: 1,
            config_yaml: None,
            extra: Settings::default(),
        }
    }
}

impl Rig {
    pub async fn start(opts: RigOptions) -> Rig {
        let ca = TestCa::new("promlink test CA").unwrap();
        let entra = EntraEmulator::start_with_ca(
            EntraConfig {
                clients: vec![RegisteredClient::with_secret(TENANT, CLIENT, SECRET)],
                token_lifetime: opts.token_lifetime,
                ..EntraConfig::default()
            },
            &ca,
        )
        .await
        .unwrap();
        let start_dce = |dcr_id: String| {
            DceEmulator::start(DceConfig {
                tls: DceTls::from_ca(&ca).unwrap(),
                auth: Some(entra.verifier()),
                granted: if opts.grant {
                    vec![CLIENT.to_string()]
                } else {
                    vec![]
                },
                keep_accepted: opts.keep_accepted,
                dcr_id,
                ..DceConfig::default()
            })
        };
        let dce = start_dce(promlink::emulator::dce::DEFAULT_DCR_ID.into())
            .await
            .unwrap();
        let mut more_dces = Vec::new();
        for i in 1..opts.spread {
            more_dces.push(start_dce(format!("dcr-{i:032x}")).await.unwrap());
        }
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.cert_pem()).unwrap();
        let secret_file = dir.path().join("secret");
        std::fs::write(&secret_file, SECRET).unwrap();
        let settings = Settings {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            ingestion_url: Some(match opts.upstream_via {
                Some(via) => dce.url().replace(&dce.addr().to_string(), &via.to_string()),
                None => dce.url().to_string(),
            }),
            identity: Some(IdentityKind::ClientSecret),
            tenant_id: Some(TENANT.into()),
            client_id: Some(CLIENT.into()),
            client_secret_file: Some(secret_file),
            authority_host: Some(entra.authority_host().to_string()),
            ca_file: Some(ca_file),
            shards: Some(opts.shards),
            flush_interval: Some(opts.flush_interval),
            max_samples_per_request: Some(opts.max_samples_per_request),
            queue_max_bytes: opts.queue_max_bytes,
            retry_min_backoff: Some(Duration::from_millis(20)),
            retry_max_backoff: Some(Duration::from_millis(300)),
            token_refresh_before_expiry: Some(opts.token_lifetime / 3),
            shutdown_grace: Some(Duration::from_secs(5)),
            // Not a test of the shutdown handshake: stop accepting at once, so teardown is quick.
            shutdown_quiet_period: Some(Duration::ZERO),
            max_sample_age: opts.max_sample_age,
            queue_max_age: opts.queue_max_age,
            ..Settings::default()
        };
        let settings = if opts.spread > 1 {
            let urls = std::iter::once(&dce)
                .chain(&more_dces)
                .map(|d| d.url().to_string())
                .collect();
            Settings {
                ingestion_url: None,
                routes: Some(vec![promlink::config::RouteSettings {
                    name: Some(promlink::config::DEFAULT_ROUTE.into()),
                    ingestion_urls: Some(urls),
                    ..Default::default()
                }]),
                ..settings
            }
        } else {
            settings
        };
        let cfg = match &opts.config_yaml {
            None => opts.extra.or(settings).resolve().unwrap(),
            Some(yaml) => {
                let file = dir.path().join("promlink.yaml");
                std::fs::write(&file, yaml.replace("{url}", dce.url())).unwrap();
                let flags = Settings {
                    config: Some(file),
                    ingestion_url: settings.ingestion_url.filter(|_| !yaml.contains("routes:")),
                    ..settings
                };
                opts.extra.or(flags).load().unwrap()
            }
        };
        let promlink = promlink::serve::start(cfg).await.unwrap();
        Rig {
            entra,
            dce,
            more_dces,
            promlink,
            dir,
            http: reqwest::Client::new(),
        }
    }

    pub fn write_url(&self) -> String {
        format!("http://{}/api/v1/write", self.promlink.local_addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.promlink.local_addr)
    }

    /// POSTs a remote-write body with Prometheus' headers (or `content_type`).
    pub async fn post(&self, body: Vec<u8>, content_type: &str) -> reqwest::Response {
        self.http
            .post(self.write_url())
            .header("Content-Encoding", "snappy")
            .header("Content-Type", content_type)
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Waits until `cond` holds on the DCE emulator's stats, or panics after `timeout`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&promlink::emulator::dce::DceStats) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = self.dce.stats();
            if cond(&s) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("timed out waiting for {what}; DCE stats: {s:#?}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The value of a promlink metric line (exact series text before the value), 0 if absent.
    pub async fn metric(&self, series: &str) -> f64 {
        metric(&self.http, self.promlink.local_addr, series).await
    }

    pub async fn stop(self) {
        self.promlink.shutdown.cancel();
        self.promlink.wait().await;
        self.dce.shutdown().await;
        for d in self.more_dces {
            d.shutdown().await;
        }
        self.entra.shutdown().await;
    }
}

/// The value of one series in the `/metrics` of the promlink at `addr`, 0 if absent.
///
/// A GET on a pooled keep-alive connection can meet promlink closing it for idleness
/// (`header_read_timeout`) at the same moment; that transport error is retried, as the next
/// scrape would be. Any answer, and a third failure, is final.
pub async fn metric(http: &reqwest::Client, addr: std::net::SocketAddr, series: &str) -> f64 {
    let url = format!("http://{addr}/metrics");
    let mut attempt = 0;
    let response = loop {
        attempt += 1;
        match http.get(&url).send().await {
            Ok(r) => break r,
            Err(e) if attempt < 3 && e.is_request() => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("GET {url}: {e:?}"),
        }
    };
    let text = response.text().await.unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .map(|v| v.trim().parse::<f64>().unwrap())
        })
        .unwrap_or(0.0)
}

/// A snappy remote-write 1.0 body: one sample at `ts` (value `id`) for each series
/// `name{id="<id>", job="<job>"}` with `id` in `ids`.
pub fn one_sample_body(name: &str, job: &str, ids: std::ops::Range<usize>, ts: i64) -> Vec<u8> {
    use promlink::proto::v1::{Label, Sample, TimeSeries, WriteRequest};
    use prost::Message as _;
    let label = |name: &str, value: String| Label {
        name: name.into(),
        value,
    };
    let req = WriteRequest {
        timeseries: ids
            .map(|id| TimeSeries {
                labels: vec![
                    label("__name__", name.into()),
                    label("id", id.to_string()),
                    label("job", job.into()),
                ],
                samples: vec![Sample {
                    value: id as f64,
                    timestamp: ts,
                }],
                ..TimeSeries::default()
            })
            .collect(),
        metadata: vec![],
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap()
}

/// Peak resident memory of this process so far, MiB.
pub fn vm_hwm_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(PathBuf::from(FIXTURES).join(name)).unwrap()
}

/// Sends round `*round + 1` of 200 series (one sample each, later timestamps each round) to the
/// promlink at `addr`, asserts every sample was acknowledged and adds them to `acked`.
pub async fn send_round(addr: SocketAddr, round: &mut i64, acked: &mut Checksum) {
    *round += 1;
    let report = loadgen::run(
        LoadgenConfig {
            url: format!("http://{addr}/api/v1/write"),
            series: 200,
            rounds: 1,
            shards: 2,
            samples_per_request: 100,
            start_ms: Some(1_700_000_000_000 + *round * 15_000),
            deadline: Duration::from_secs(20),
            ..LoadgenConfig::default()
        },
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        report.samples_acked, 200,
        "promlink takes the data into its queue: {report:?}"
    );
    acked.merge(&report.checksum_acked);
}

/// Polls `cond` every 25 ms for up to 10 s; panics naming `what`.
pub async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..400 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Settings for promlink against the emulated Azure `azure` under Private Link `mode` (its DNS
/// server, 127.0.0.2/32 counted as private, its client secret and CA, the files in `dir`),
/// listening on a free loopback port. Timings are short so that verdict changes, fallbacks and
/// returns take a second or two.
pub fn private_link_settings(
    dir: &std::path::Path,
    azure: &promlink::emulator::azure::EmulatedAzure,
    mode: promlink::privatelink::Mode,
) -> Settings {
    Settings {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        reverify_min: Some(Duration::from_millis(200)),
        reverify_max: Some(Duration::from_secs(1)),
        fallback_return_after: Some(Duration::from_secs(1)),
        probe_timeout: Some(Duration::from_secs(1)),
        flush_interval: Some(Duration::from_millis(50)),
        retry_min_backoff: Some(Duration::from_millis(50)),
        retry_max_backoff: Some(Duration::from_millis(300)),
        ready_window: Some(Duration::from_secs(5)),
        // Not a test of the shutdown handshake: stop accepting at once, so teardown is quick.
        shutdown_quiet_period: Some(Duration::ZERO),
        ..azure.settings(dir, mode).unwrap()
    }
}

/// The emulated Azure for a canary read-back, and its query URL: the certificate also names
/// the private endpoint's address (which the URL names), and the client holds *Monitoring Data
/// Reader* on the workspace.
pub async fn azure_for_read_back() -> (promlink::emulator::azure::EmulatedAzure, url::Url) {
    use promlink::emulator::azure::{AzureOptions, EmulatedAzure, PRIVATE_ENDPOINT};
    let azure = EmulatedAzure::start(AzureOptions {
        cert_names: vec![PRIVATE_ENDPOINT.to_string()],
        ..AzureOptions::default()
    })
    .await
    .unwrap();
    azure.private().grant_reader(CLIENT);
    let url = format!("https://{PRIVATE_ENDPOINT}:{}", azure.port)
        .parse()
        .unwrap();
    (azure, url)
}
