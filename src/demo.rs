//! `promlink demo`: the whole real path on one machine, with Azure replaced by emulators.
//!
//! Starts a local Entra ID **emulator**, a DNS server answering the DCE name the way Azure
//! Private DNS does (CNAME into `privatelink.monitor.azure.com`, then the private endpoint's IP
//! 127.0.0.2), a DCE **emulator** on that "private endpoint" and another on 127.0.0.3 playing the
//! public endpoint (HTTPS with a throw-away CA, verifying tokens, path, api-version and headers).
//! Then `promlink serve` with its normal code (client-secret identity, `private_link: require`,
//! 127.0.0.2/32 counted as private), and a synthetic sender writing Kubernetes-shaped series
//! every second. On the way it injects upstream faults (503s, a 429 with `Retry-After`) and
//! breaks DNS for a few seconds (the private zone "unlinked": the name resolves to the public
//! endpoint), so retries, the held queue and the alert show. From second 15 to 18 the DCE
//! emulator loses data silently (200, nothing kept): the canary read-back, through the emulated
//! workspace query endpoint (its own private endpoint, verified), goes missing and
//! `PromlinkIngestionNotVisible` fires, then resolves. A live line per second shows what was
//! sent, received, forwarded, what the upstream answered, the canary and the token state; at
//! the end a summary compares what the sender had acknowledged with what the DCE emulator
//! accepted, plus what it lost on purpose (counts and a checksum over labels, timestamps and
//! value bits).

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::emulator::azure::{AzureOptions, EmulatedAzure, CLIENT, PUBLIC_ENDPOINT};
use crate::emulator::dce::Fault;
use crate::loadgen::{self, LoadgenConfig, Report};
use crate::serve::Running;

const HOST: &str = "promlink-demo-a1b2.eastus-1.metrics.ingest.monitor.azure.com";
/// The emulated workspace's query endpoint (on the same emulator, with its own private DNS).
const QUERY_HOST: &str = "promlink-demo-ws.eastus.prometheus.monitor.azure.com";
/// The seconds during which the DCE emulator loses data silently.
const SILENT_LOSS: std::ops::Range<u64> = 15..18;

/// `promlink demo` options.
#[derive(Clone, Debug, clap::Args)]
pub struct DemoArgs {
    /// How long to send before stopping (Ctrl-C stops earlier).
    #[arg(long, default_value = "24s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Distinct series the synthetic sender writes each second.
    #[arg(long, default_value_t = 2000)]
    pub series: usize,
    /// Lifetime of the emulated Entra tokens (short, so refreshes show).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub token_lifetime: Duration,
    /// Do not inject upstream faults.
    #[arg(long)]
    pub no_faults: bool,
    /// Address promlink listens on.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
}

/// Errors of the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A part could not start.
    #[error("demo: {0}")]
    Start(String),
}

fn start_err(e: impl std::error::Error) -> DemoError {
    DemoError::Start(crate::outbound::error_chain(&e))
}

/// Runs the demo; returns whether every acknowledged sample reached the DCE emulator intact.
///
/// # Errors
/// When a part cannot start.
pub async fn run(args: DemoArgs, stop: CancellationToken) -> Result<bool, DemoError> {
    let azure = EmulatedAzure::start(AzureOptions {
        host: HOST.into(),
        secret: format!("demo-{:016x}", rand::random::<u64>()),
        token_lifetime: args.token_lifetime,
        dns_ttl: 2,
        ca_name: "promlink demo EMULATOR CA".into(),
        extra_names: vec![QUERY_HOST.into()],
        ..AzureOptions::default()
    })
    .await
    .map_err(start_err)?;
    azure.private().grant_reader(CLIENT);
    let dir = tempfile_dir()?;
    let promlink = start_promlink(&args, &azure, &dir).await?;
    let write_url = format!("http://{}/api/v1/write", promlink.local_addr);
    print_setup(&args, &azure, &write_url);
    let (report, missing_before_loss) = send(&args, &azure, &promlink, &write_url, &stop).await?;
    let canary_missing = scrape(
        &loopback_client(),
        &format!("http://{}/metrics", promlink.local_addr),
    )
    .await
    .get("promlink_canary_missing_total{route=\"default\"}");

    // Let promlink deliver what it holds, then stop it the way SIGTERM would.
    println!("\nstopping the sender; promlink delivers what it holds and shuts down...");
    promlink.shutdown.cancel();
    promlink.wait().await;
    let ok = print_summary(
        &azure,
        &report,
        canary_missing.saturating_sub(missing_before_loss),
    );
    azure.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ok)
}

/// `promlink serve` against the emulated Azure, with short timers so the demo shows retries,
/// re-verification and token refreshes within seconds.
async fn start_promlink(
    args: &DemoArgs,
    azure: &EmulatedAzure,
    dir: &std::path::Path,
) -> Result<Running, DemoError> {
    let settings = Settings {
        listen: Some(args.listen),
        reverify_min: Some(Duration::from_millis(500)),
        reverify_max: Some(Duration::from_secs(2)),
        probe_timeout: Some(Duration::from_secs(1)),
        flush_interval: Some(Duration::from_millis(500)),
        token_refresh_before_expiry: Some(args.token_lifetime / 3),
        retry_min_backoff: Some(Duration::from_millis(200)),
        retry_max_backoff: Some(Duration::from_secs(5)),
        query_url: Some(
            format!("https://{QUERY_HOST}:{}", azure.port)
                .parse()
                .map_err(start_err)?,
        ),
        query_private_link: Some(crate::privatelink::Mode::Require),
        canary_interval: Some(Duration::from_secs(1)),
        canary_timeout: Some(Duration::from_secs(3)),
        ..azure
            .settings(dir, crate::privatelink::Mode::Require)
            .map_err(start_err)?
    };
    let cfg = settings.resolve().map_err(start_err)?;
    crate::serve::start(cfg).await.map_err(start_err)
}

/// What runs where.
fn print_setup(args: &DemoArgs, azure: &EmulatedAzure, write_url: &str) {
    let url = azure.ingestion_url();
    println!("promlink demo: everything below runs on this machine; Azure is EMULATED.");
    println!("  Entra ID EMULATOR  {}", azure.entra.authority_host());
    println!(
        "  DNS (private zone) {}  {HOST} -> CNAME {} -> 127.0.0.2",
        azure.dns.addr(),
        crate::emulator::dns::privatelink_name(HOST)
    );
    println!("  DCE EMULATOR       {url}");
    println!(
        "                     private endpoint 127.0.0.2:{port}, public endpoint 127.0.0.3:{port}; private_link: require",
        port = azure.port
    );
    println!("  promlink           {write_url}  (also /metrics, /health, /ready)");
    println!(
        "  sender             {} series every second for {}",
        args.series,
        humantime::format_duration(args.duration)
    );
    println!();
}

/// The synthetic sender: one round a second until the duration is up or the demo is stopped,
/// with the fault schedule and a live view; returns what promlink acknowledged to it, and the
/// canaries missing when the silent loss began.
async fn send(
    args: &DemoArgs,
    azure: &EmulatedAzure,
    promlink: &Running,
    write_url: &str,
    stop: &CancellationToken,
) -> Result<(Report, u64), DemoError> {
    let http = loopback_client();
    let metrics_url = format!("http://{}/metrics", promlink.local_addr);
    let started = Instant::now();
    let mut report = Report::default();
    let mut missing_before_loss = 0;
    let mut next_round = tokio::time::Instant::now();
    let mut second = 0u64;
    while started.elapsed() < args.duration && !stop.is_cancelled() {
        if !args.no_faults {
            inject_faults(azure, second);
        }
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let round = loadgen::run(
            LoadgenConfig {
                url: write_url.to_owned(),
                series: args.series,
                rounds: 1,
                shards: 4,
                samples_per_request: 500,
                start_ms: Some(now_ms),
                stale_every: Some(997),
                deadline: Duration::from_secs(5),
                ..LoadgenConfig::default()
            },
            stop.clone(),
        )
        .await
        .map_err(start_err)?;
        report.merge(round);
        let m = scrape(&http, &metrics_url).await;
        if second + 1 == SILENT_LOSS.start {
            missing_before_loss = m.get("promlink_canary_missing_total{route=\"default\"}");
        }
        print_second(azure, promlink, &m, started, &report);
        second += 1;
        next_round += Duration::from_secs(1);
        tokio::select! {
            _ = tokio::time::sleep_until(next_round) => {}
            _ = stop.cancelled() => {}
        }
    }
    Ok((report, missing_before_loss))
}

/// The fault schedule, by second: 503s, a 429 with `Retry-After`, the private DNS zone
/// unlinked and restored, silent loss at the DCE.
fn inject_faults(azure: &EmulatedAzure, second: u64) {
    match second {
        4 => (0..3).for_each(|_| azure.private().push_fault(Fault::status(503))),
        8 => {
            println!("  >> DNS breaks: the private zone is unlinked, {HOST} now resolves to the public endpoint");
            azure.dns.set_public(HOST, PUBLIC_ENDPOINT, 2);
        }
        12 => {
            println!("  >> DNS fixed");
            azure.private_dns_restored();
        }
        5 => azure.private().push_fault(Fault::retry_after(429, 2)),
        s if s == SILENT_LOSS.start => {
            println!("  >> the DCE accepts writes (200) but keeps nothing: silent loss");
            azure.private().set_silent_loss(true);
        }
        s if s == SILENT_LOSS.end => {
            println!("  >> the DCE keeps data again");
            azure.private().set_silent_loss(false);
        }
        _ => {}
    }
}

/// The live view of one second: Private Link state, queue and alerts, then the counts along
/// the path, the upstream's last answer and the token.
fn print_second(
    azure: &EmulatedAzure,
    promlink: &Running,
    m: &Scraped,
    started: Instant,
    report: &Report,
) {
    let token = promlink.identity.state();
    let status = promlink.health.last_status();
    let d = azure.private().stats();
    let pl = promlink.private_link.snapshot();
    let verdict = pl.resolution.as_ref().map_or("-", |r| r.verdict.as_str());
    let alerts: Vec<&str> = promlink.alerter.firing().iter().map(|a| a.name).collect();
    println!(
        "        dns {verdict:<8} path {:<7} queue {:>6} B  alerts {}",
        pl.path.as_str(),
        m.get("promlink_queue_bytes"),
        if alerts.is_empty() {
            "-".to_string()
        } else {
            alerts.join(",")
        },
    );
    let canaries = m.get("promlink_canary_latency_seconds_count{route=\"default\"}");
    let latency = m.value("promlink_canary_latency_seconds_sum{route=\"default\"}");
    println!(
        "        canary visible {canaries:>3} (mean latency {:.2}s)  missing {}",
        if canaries == 0 {
            0.0
        } else {
            latency / canaries as f64
        },
        m.get("promlink_canary_missing_total{route=\"default\"}"),
    );
    println!(
        "t={:>3}s  sent {:>7}  received {:>7}  forwarded {:>7}  DCE EMULATOR accepted {:>7}  upstream last {}  retries {:>2}  token {} (refreshes {})",
        started.elapsed().as_secs(),
        report.samples_acked,
        m.get("promlink_samples_received_total{protocol=\"v1\"}"),
        m.get("promlink_samples_forwarded_total"),
        d.samples,
        if status == 0 { "-".to_string() } else { status.to_string() },
        m.sum_prefix("promlink_upstream_retries_total"),
        if token.valid { "valid" } else { "INVALID" },
        token.refreshes_ok,
    );
}

/// The summary after promlink stopped; returns whether every acknowledged sample reached the
/// private DCE emulator once, in order, bit for bit, and nothing reached the public one.
/// `canary_missing`: canaries that went missing from the start of the silent loss on.
fn print_summary(azure: &EmulatedAzure, report: &Report, canary_missing: u64) -> bool {
    let d = azure.private().stats();
    let public_connections = azure.public.connections();
    let mut answered = d.checksum;
    answered.merge(&d.silently_lost_checksum);
    let lost = d.silently_lost_samples;
    let ok = public_connections == 0
        && d.samples + lost == report.samples_acked
        && answered == report.checksum_acked
        && d.out_of_order_samples == 0
        && (lost == 0 || canary_missing > 0);
    println!("\nsummary");
    println!(
        "  samples acknowledged to the sender   {}",
        report.samples_acked
    );
    println!("  samples accepted by the DCE EMULATOR {}", d.samples);
    println!("  samples it lost silently (injected)  {lost}");
    println!("  canaries missing since the silent loss began (PromlinkIngestionNotVisible) {canary_missing}");
    println!(
        "  checksum sender / DCE EMULATOR (kept + lost) {} / {}",
        report.checksum_acked, answered
    );
    println!(
        "  out-of-order samples at the DCE      {}",
        d.out_of_order_samples
    );
    println!(
        "  DCE EMULATOR answers other than 200  {:?} (404/405: promlink's TLS probes and idle checks)",
        d.rejected
    );
    println!(
        "  Entra tokens issued                  {}",
        azure.entra.issued(CLIENT)
    );
    println!("  connections to the PUBLIC endpoint   {public_connections} (private_link: require)");
    println!(
        "  result: {}",
        match (ok, lost) {
            (true, 0) => "every acknowledged sample arrived once, in order, bit for bit, only through the private endpoint".to_string(),
            (true, n) => format!("every acknowledged sample arrived once, in order, bit for bit, only through the private endpoint, except the {n} the DCE EMULATOR lost silently on purpose, which the canary detected"),
            (false, _) => "MISMATCH: see above".to_string(),
        }
    );
    ok
}

/// Loopback only: never through a proxy from the environment (reqwest would use one).
fn loopback_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap_or_default()
}

fn tempfile_dir() -> Result<std::path::PathBuf, DemoError> {
    let dir = std::env::temp_dir().join(format!("promlink-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(start_err)?;
    Ok(dir)
}

/// A few values from promlink's `/metrics`.
struct Scraped(String);

impl Scraped {
    fn get(&self, series: &str) -> u64 {
        self.value(series) as u64
    }

    fn value(&self, series: &str) -> f64 {
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    }

    fn sum_prefix(&self, name: &str) -> u64 {
        self.0
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

async fn scrape(http: &reqwest::Client, url: &str) -> Scraped {
    let text = match http.get(url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    Scraped(text)
}
