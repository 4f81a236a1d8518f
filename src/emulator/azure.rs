//! The whole emulated Azure side in one piece, for the demo and the tests: a throw-away CA, the
//! Entra ID **emulator**, a DCE **emulator** on the "private endpoint" 127.0.0.2 and another on
//! the "public endpoint" 127.0.0.3 (the same port, certificates for the DCE name and any extra
//! names), and a DNS server answering the DCE name the way Azure Private DNS does (a CNAME into
//! `privatelink.monitor.azure.com`, then 127.0.0.2). promlink is configured against it like an
//! operator would: a client secret, `--dns-server`, and `--private-cidr 127.0.0.2/32`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use super::dce::{DceConfig, DceEmulator, DceHandle, DceTls, DEFAULT_DCR_ID};
use super::dns::TestDns;
use super::entra::{EntraConfig, EntraEmulator, EntraHandle, RegisteredClient};
use super::tls::TestCa;
use crate::config::Settings;
use crate::identity::IdentityKind;
use crate::privatelink::Mode;

/// The Entra tenant the emulator serves.
pub const TENANT: &str = "11111111-2222-3333-4444-555555555555";
/// The application registered in it.
pub const CLIENT: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
/// The application's client secret.
pub const SECRET: &str = "emulated-client-secret";
/// The DCE name the rig serves by default.
pub const DCE_HOST: &str = "mydce-ab12.eastus-1.metrics.ingest.monitor.azure.com";
/// The "private endpoint" (counted as private with `--private-cidr 127.0.0.2/32`).
pub const PRIVATE_ENDPOINT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// The "public endpoint".
pub const PUBLIC_ENDPOINT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

/// Why the emulated Azure could not start.
#[derive(Debug, thiserror::Error)]
#[error("emulated azure: {0}")]
pub struct AzureError(String);

fn err(e: impl std::fmt::Display) -> AzureError {
    AzureError(e.to_string())
}

/// What to start.
#[derive(Clone, Debug)]
pub struct AzureOptions {
    /// The DCE's host name.
    pub host: String,
    /// More names the DCE certificates carry and the DNS server answers privately (e.g. the
    /// `handler.control` hosts doctor checks).
    pub extra_names: Vec<String>,
    /// Names only the DCE certificates carry (no DNS record), e.g. an IP written as text.
    pub cert_names: Vec<String>,
    /// Names the Entra emulator's certificate carries besides `127.0.0.1` and `localhost`.
    pub entra_names: Vec<String>,
    /// The client secret of [`CLIENT`].
    pub secret: String,
    /// Whether [`CLIENT`] holds the Monitoring Metrics Publisher role (403 otherwise).
    pub granted: bool,
    /// Lifetime of the Entra tokens.
    pub token_lifetime: Duration,
    /// TTL of the DNS answers, seconds.
    pub dns_ttl: u32,
    /// The CA's name (it shows in certificate errors).
    pub ca_name: String,
}

impl Default for AzureOptions {
    fn default() -> Self {
        Self {
            host: DCE_HOST.into(),
            extra_names: Vec::new(),
            cert_names: Vec::new(),
            entra_names: Vec::new(),
            secret: SECRET.into(),
            granted: true,
            token_lifetime: Duration::from_secs(3600),
            dns_ttl: 1,
            ca_name: "promlink EMULATOR CA".into(),
        }
    }
}

/// The running emulated Azure.
pub struct EmulatedAzure {
    /// The CA that signed every certificate (promlink's `ca_file`).
    pub ca: TestCa,
    /// The Entra ID emulator.
    pub entra: EntraHandle,
    /// The DCE emulator on [`PRIVATE_ENDPOINT`]; `None` once a test stopped it.
    pub private: Option<DceHandle>,
    /// The DCE emulator on [`PUBLIC_ENDPOINT`], same port.
    pub public: DceHandle,
    /// The DNS server (Azure Private DNS, linked).
    pub dns: TestDns,
    /// The port both DCE emulators listen on.
    pub port: u16,
    /// Every name the DCE certificates carry.
    names: Vec<String>,
    opts: AzureOptions,
}

impl EmulatedAzure {
    /// Starts everything, the DCE name (and the extra names) answering privately.
    ///
    /// # Errors
    /// When a part cannot start.
    pub async fn start(opts: AzureOptions) -> Result<EmulatedAzure, AzureError> {
        let ca = TestCa::new(&opts.ca_name).map_err(err)?;
        let entra = EntraEmulator::start_with_ca(
            EntraConfig {
                clients: vec![RegisteredClient::with_secret(TENANT, CLIENT, &opts.secret)],
                token_lifetime: opts.token_lifetime,
                tls_names: opts.entra_names.clone(),
                ..EntraConfig::default()
            },
            &ca,
        )
        .await
        .map_err(err)?;
        let dns_names: Vec<String> = std::iter::once(opts.host.clone())
            .chain(opts.extra_names.iter().cloned())
            .collect();
        let names: Vec<String> = dns_names.iter().chain(&opts.cert_names).cloned().collect();
        // The same port on both addresses (the URL names one port): retry if the public
        // address has it taken.
        let (private, public) = loop {
            let private = start_dce(&ca, &entra, &names, opts.granted, PRIVATE_ENDPOINT, 0).await?;
            let port = private.addr().port();
            match start_dce(&ca, &entra, &names, opts.granted, PUBLIC_ENDPOINT, port).await {
                Ok(public) => break (private, public),
                Err(_) => private.shutdown().await,
            }
        };
        let dns = TestDns::start().await.map_err(err)?;
        for name in &dns_names {
            dns.set_private_link(name, PRIVATE_ENDPOINT, opts.dns_ttl);
        }
        Ok(EmulatedAzure {
            port: private.addr().port(),
            ca,
            entra,
            private: Some(private),
            public,
            dns,
            names,
            opts,
        })
    }

    /// Starts a DCE emulator on `ip:port` with this rig's certificate, token check and grant.
    ///
    /// # Errors
    /// When it cannot listen there.
    pub async fn start_dce(&self, ip: IpAddr, port: u16) -> Result<DceHandle, AzureError> {
        start_dce(
            &self.ca,
            &self.entra,
            &self.names,
            self.opts.granted,
            ip,
            port,
        )
        .await
    }

    /// The private endpoint's emulator (panics when a test stopped it).
    pub fn private(&self) -> &DceHandle {
        self.private
            .as_ref()
            .expect("the private DCE emulator runs")
    }

    /// The DCE's host name.
    pub fn host(&self) -> &str {
        &self.opts.host
    }

    /// The ingestion URL of the DCE.
    pub fn ingestion_url(&self) -> String {
        format!(
            "https://{}:{}/dataCollectionRules/{DEFAULT_DCR_ID}/streams/Microsoft-PrometheusMetrics/api/v1/write?api-version=2023-04-24",
            self.opts.host, self.port
        )
    }

    /// promlink's settings against this rig under Private Link `mode`, as an operator would
    /// write them: client secret, the CA file, the DNS server, 127.0.0.2/32 as private. The CA
    /// and secret files go to `dir`.
    ///
    /// # Errors
    /// When the files cannot be written.
    pub fn settings(&self, dir: &Path, mode: Mode) -> Result<Settings, AzureError> {
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, self.ca.cert_pem()).map_err(err)?;
        let secret_file = dir.join("client-secret");
        std::fs::write(&secret_file, &self.opts.secret).map_err(err)?;
        Ok(Settings {
            ingestion_url: Some(self.ingestion_url()),
            identity: Some(IdentityKind::ClientSecret),
            tenant_id: Some(TENANT.into()),
            client_id: Some(CLIENT.into()),
            client_secret_file: Some(secret_file),
            authority_host: Some(self.entra.authority_host().to_string()),
            ca_file: Some(ca_file),
            private_link: Some(mode),
            dns_server: Some(vec![self.dns.addr()]),
            private_cidr: Some(vec![ipnet::IpNet::from(PRIVATE_ENDPOINT)]),
            ..Settings::default()
        })
    }

    /// The DCE leaves the AMPLS: its name still points into the private zone, which now answers
    /// NXDOMAIN (no public address anywhere). Returns the privatelink name.
    pub fn dce_leaves_the_private_zone(&self) -> String {
        let host = &self.opts.host;
        let pl_name = super::dns::privatelink_name(host);
        self.dns.remove(host);
        self.dns.remove(&pl_name);
        self.dns.set_nxdomain_zone("privatelink.monitor.azure.com");
        self.dns.set_cname(host, &pl_name, self.opts.dns_ttl);
        pl_name
    }

    /// The DCE's name answers privately again (the CNAME into the private zone, then the
    /// private endpoint), whatever it answered before.
    pub fn private_dns_restored(&self) {
        let host = &self.opts.host;
        self.dns.remove(&super::dns::privatelink_name(host));
        self.dns
            .set_private_link(host, PRIVATE_ENDPOINT, self.opts.dns_ttl);
    }

    /// Stops every part.
    pub async fn shutdown(self) {
        if let Some(p) = self.private {
            p.shutdown().await;
        }
        self.public.shutdown().await;
        self.entra.shutdown().await;
        self.dns.shutdown().await;
    }
}

/// A DCE emulator on `ip:port` with a certificate for `names`, checking tokens against
/// `entra`, [`CLIENT`] granted the role when `granted`.
async fn start_dce(
    ca: &TestCa,
    entra: &EntraHandle,
    names: &[String],
    granted: bool,
    ip: IpAddr,
    port: u16,
) -> Result<DceHandle, AzureError> {
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let leaf = ca.issue(&names).map_err(err)?;
    DceEmulator::start(DceConfig {
        listen: SocketAddr::new(ip, port),
        tls: DceTls::Pem {
            cert_pem: leaf.cert_pem,
            key_pem: leaf.key_pem,
            ca_pem: Some(ca.cert_pem().to_owned()),
        },
        auth: Some(entra.verifier()),
        granted: if granted {
            vec![CLIENT.to_string()]
        } else {
            Vec::new()
        },
        // The query API answers reads back (Monitoring Data Reader is granted by each test
        // that reads, with `grant_reader`).
        keep_series: 10_000,
        ..DceConfig::default()
    })
    .await
    .map_err(err)
}
