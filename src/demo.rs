//! `promlink demo`: the whole real path on one machine, with Azure replaced by emulators.
//!
//! Starts a local Entra ID **emulator** and a DCE **emulator** (HTTPS with a throw-away CA,
//! verifying tokens, path, api-version and headers), then `promlink serve` with its normal code
//! (client-secret identity against the Entra emulator), and a synthetic sender writing
//! Kubernetes-shaped series every second. A few upstream faults (503s, a 429 with
//! `Retry-After`) are injected on the way so retries show. A live line per second shows what
//! was sent, received, forwarded, what the upstream answered, and the token state; at the end a
//! summary compares what the sender had acknowledged with what the DCE emulator accepted
//! (counts and a checksum over labels, timestamps and value bits).

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::emulator::dce::{DceConfig, DceEmulator, DceTls, Fault};
use crate::emulator::entra::{EntraConfig, EntraEmulator, RegisteredClient};
use crate::emulator::tls::TestCa;
use crate::identity::IdentityKind;
use crate::loadgen::{self, LoadgenConfig, Report};

const TENANT: &str = "00000000-0000-0000-0000-00000000d3m0";
const CLIENT: &str = "promlink-demo";

/// `promlink demo` options.
#[derive(Clone, Debug, clap::Args)]
pub struct DemoArgs {
    /// How long to send before stopping (Ctrl-C stops earlier).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
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

fn start_err(e: impl std::fmt::Display) -> DemoError {
    DemoError::Start(e.to_string())
}

/// Runs the demo; returns whether every acknowledged sample reached the DCE emulator intact.
///
/// # Errors
/// When a part cannot start.
pub async fn run(args: DemoArgs, stop: CancellationToken) -> Result<bool, DemoError> {
    let ca = TestCa::new("promlink demo EMULATOR CA").map_err(start_err)?;
    let secret = format!("demo-{:016x}", rand::random::<u64>());
    let entra = EntraEmulator::start_with_ca(
        EntraConfig {
            clients: vec![RegisteredClient::with_secret(TENANT, CLIENT, &secret)],
            token_lifetime: args.token_lifetime,
            ..EntraConfig::default()
        },
        &ca,
    )
    .await
    .map_err(start_err)?;
    let dce = DceEmulator::start(DceConfig {
        tls: DceTls::from_ca(&ca).map_err(start_err)?,
        auth: Some(entra.verifier()),
        granted: vec![CLIENT.to_string()],
        ..DceConfig::default()
    })
    .await
    .map_err(start_err)?;

    let dir = tempfile_dir()?;
    let ca_file = dir.join("ca.pem");
    let secret_file = dir.join("client-secret");
    std::fs::write(&ca_file, ca.cert_pem()).map_err(start_err)?;
    std::fs::write(&secret_file, &secret).map_err(start_err)?;
    let settings = Settings {
        listen: Some(args.listen),
        ingestion_url: Some(dce.url().to_string()),
        identity: Some(IdentityKind::ClientSecret),
        tenant_id: Some(TENANT.into()),
        client_id: Some(CLIENT.into()),
        client_secret_file: Some(secret_file),
        authority_host: Some(entra.authority_host().to_string()),
        ca_file: Some(ca_file),
        flush_interval: Some(Duration::from_millis(500)),
        token_refresh_before_expiry: Some(args.token_lifetime / 3),
        retry_min_backoff: Some(Duration::from_millis(200)),
        retry_max_backoff: Some(Duration::from_secs(5)),
        ..Settings::default()
    };
    let cfg = settings.resolve().map_err(start_err)?;
    let promlink = crate::serve::start(cfg).await.map_err(start_err)?;
    let write_url = format!("http://{}/api/v1/write", promlink.local_addr);

    println!("promlink demo: everything below runs on this machine; Azure is EMULATED.");
    println!("  Entra ID EMULATOR  {}", entra.authority_host());
    println!("  DCE EMULATOR       {}", dce.url());
    println!("  promlink           {write_url}  (also /metrics, /health, /ready)");
    println!(
        "  sender             {} series every second for {}",
        args.series,
        humantime::format_duration(args.duration)
    );
    println!();

    let http = reqwest::Client::new();
    let metrics_url = format!("http://{}/metrics", promlink.local_addr);
    let started = Instant::now();
    let mut report = Report::default();
    let mut next_round = tokio::time::Instant::now();
    let mut second = 0u64;
    while started.elapsed() < args.duration && !stop.is_cancelled() {
        if !args.no_faults {
            match second {
                6 => (0..3).for_each(|_| dce.push_fault(Fault::status(503))),
                12 => dce.push_fault(Fault::retry_after(429, 2)),
                _ => {}
            }
        }
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let round = loadgen::run(
            LoadgenConfig {
                url: write_url.clone(),
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
        let token = promlink.identity.state();
        let status = promlink.health.last_status();
        let d = dce.stats();
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
        second += 1;
        next_round += Duration::from_secs(1);
        tokio::select! {
            _ = tokio::time::sleep_until(next_round) => {}
            _ = stop.cancelled() => {}
        }
    }

    // Let promlink deliver what it holds, then stop it the way SIGTERM would.
    println!("\nstopping the sender; promlink delivers what it holds and shuts down...");
    promlink.shutdown.cancel();
    promlink.wait().await;
    let d = dce.stats();
    let ok = d.samples == report.samples_acked
        && d.checksum == report.checksum_acked
        && d.out_of_order_samples == 0;
    println!("\nsummary");
    println!(
        "  samples acknowledged to the sender   {}",
        report.samples_acked
    );
    println!("  samples accepted by the DCE EMULATOR {}", d.samples);
    println!(
        "  checksum sender / DCE EMULATOR       {} / {}",
        report.checksum_acked, d.checksum
    );
    println!(
        "  out-of-order samples at the DCE      {}",
        d.out_of_order_samples
    );
    println!("  upstream answers other than 200      {:?}", d.rejected);
    println!(
        "  Entra tokens issued                  {}",
        entra.issued(CLIENT)
    );
    println!(
        "  result: {}",
        if ok {
            "every acknowledged sample arrived once, in order, bit for bit"
        } else {
            "MISMATCH: see above"
        }
    );
    dce.shutdown().await;
    entra.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ok)
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
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
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
