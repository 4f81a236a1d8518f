//! `promlink emulate-dce`: the DCE EMULATOR (and an embedded Entra ID EMULATOR) as a command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{DceConfig, DceEmulator, DceError, DceStats, DceTls, API_VERSION, DEFAULT_DCR_ID};
use crate::emulator::entra::{EntraConfig, EntraEmulator, RegisteredClient};
use crate::emulator::tls::TestCa;

/// `promlink emulate-dce`: run the DCE EMULATOR (and an embedded Entra ID EMULATOR) locally.
#[derive(clap::Args, Clone, Debug)]
#[command(
    about = "Run a local EMULATOR of the Azure Monitor DCE metrics ingestion API (not Azure; for demos and tests)"
)]
pub struct EmulateDceArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9443")]
    pub listen: SocketAddr,
    /// DCR immutable id accepted in the path.
    #[arg(long, default_value = DEFAULT_DCR_ID)]
    pub dcr_id: String,
    /// Accepted api-version (repeatable).
    #[arg(long = "api-version", default_values_t = vec![API_VERSION.to_owned()])]
    pub api_versions: Vec<String>,
    /// Serve plain HTTP instead of HTTPS (benchmarks; the real service is HTTPS only).
    #[arg(long)]
    pub plain_http: bool,
    /// Server certificate chain (PEM); generated with a throw-away CA when absent.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Where to write the generated CA certificate (PEM) for clients to trust.
    #[arg(long)]
    pub write_ca: Option<PathBuf>,
    /// Do not check bearer tokens and do not start the Entra ID emulator.
    #[arg(long)]
    pub no_auth: bool,
    /// Tenant id of the emulated application.
    #[arg(long, default_value = "00000000-0000-0000-0000-000000000001")]
    pub tenant_id: String,
    /// Client id of the emulated application (granted the publisher role, and Monitoring
    /// Data Reader for the query API).
    #[arg(long, default_value = "promlink-demo")]
    pub client_id: String,
    /// Client secret of the emulated application.
    #[arg(
        long,
        env = "PROMLINK_EMULATOR_CLIENT_SECRET",
        default_value = "emulator-secret",
        hide_env_values = true
    )]
    pub client_secret: String,
    /// Seconds between count reports; 0 reports only at exit.
    #[arg(long, default_value_t = 10)]
    pub report_every: u64,
    /// Largest accepted body, bytes.
    #[arg(long, default_value_t = 32 << 20)]
    pub max_body_bytes: usize,
    /// How many series to keep the latest sample of for the query API (`GET
    /// /api/v1/query` on the same address, standing in for the workspace's query endpoint).
    #[arg(long, default_value_t = 10_000)]
    pub keep_series: usize,
}

/// Runs the emulator until SIGINT/SIGTERM, printing counts periodically and at exit.
///
/// # Errors
/// When a certificate file cannot be read or written, or a server cannot start.
pub async fn run_emulate_dce(args: EmulateDceArgs) -> Result<(), DceError> {
    let file_err = |path: &PathBuf| {
        let path = path.clone();
        move |source| DceError::File { path, source }
    };
    if !args.dcr_id.starts_with("dcr-") {
        return Err(DceError::Config(format!(
            "--dcr-id {} must start with dcr-",
            args.dcr_id
        )));
    }
    let ca = TestCa::new("promlink EMULATOR CA")?;
    let tls = if args.plain_http {
        DceTls::Plain
    } else if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        DceTls::Pem {
            cert_pem: std::fs::read_to_string(cert).map_err(file_err(cert))?,
            key_pem: std::fs::read_to_string(key).map_err(file_err(key))?,
            ca_pem: None,
        }
    } else {
        DceTls::from_ca(&ca)?
    };
    if let Some(path) = &args.write_ca {
        std::fs::write(path, ca.cert_pem()).map_err(file_err(path))?;
        println!("EMULATOR CA certificate written to {}", path.display());
    }
    let entra = if args.no_auth {
        None
    } else {
        let config = EntraConfig {
            clients: vec![RegisteredClient::with_secret(
                &args.tenant_id,
                &args.client_id,
                &args.client_secret,
            )],
            ..EntraConfig::default()
        };
        Some(EntraEmulator::start_with_ca(config, &ca).await?)
    };
    let config = DceConfig {
        listen: args.listen,
        dcr_id: args.dcr_id.clone(),
        api_versions: args.api_versions.clone(),
        tls,
        auth: entra.as_ref().map(|e| e.verifier()),
        granted: vec![args.client_id.clone()],
        readers: vec![args.client_id.clone()],
        keep_series: args.keep_series,
        max_body_bytes: args.max_body_bytes,
        ..DceConfig::default()
    };
    let dce = DceEmulator::start(config).await?;
    println!(
        "EMULATOR of an Azure Monitor DCE (not Azure). Ingestion URL: {}",
        dce.url()
    );
    println!(
        "EMULATOR of the workspace's query endpoint (not Azure). Query URL: {} (GET /api/v1/query)",
        dce.query_url()
    );
    if let Some(entra) = &entra {
        println!(
            "EMULATOR of Entra ID (not a real identity provider): AZURE_AUTHORITY_HOST={} AZURE_TENANT_ID={} AZURE_CLIENT_ID={} (secret from --client-secret)",
            entra.authority_host(),
            args.tenant_id,
            args.client_id
        );
    }
    let mut ticker = (args.report_every > 0)
        .then(|| tokio::time::interval(Duration::from_secs(args.report_every)));
    if let Some(t) = ticker.as_mut() {
        t.tick().await;
    }
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| DceError::File {
            path: PathBuf::from("<SIGTERM handler>"),
            source,
        })?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
            _ = async { match ticker.as_mut() { Some(t) => { t.tick().await; } None => std::future::pending().await } } => {
                print_stats("EMULATOR dce", &dce.stats());
            }
        }
    }
    print_stats("EMULATOR dce final", &dce.stats());
    dce.shutdown().await;
    if let Some(entra) = entra {
        println!("EMULATOR entra final: {:?}", entra.stats());
        entra.shutdown().await;
    }
    Ok(())
}

fn print_stats(prefix: &str, s: &DceStats) {
    println!(
        "{prefix}: requests={} accepted={} rejected={:?} series={} samples={} histograms={} exemplars={} metadata={} out_of_order={} repeated_ts={} queries={} silently_lost={} checksum=[{}]",
        s.requests,
        s.accepted_requests,
        s.rejected,
        s.series,
        s.samples,
        s.histograms,
        s.exemplars,
        s.metadata,
        s.out_of_order_samples,
        s.repeated_timestamp_samples,
        s.queries,
        s.silently_lost_requests,
        s.checksum
    );
}
