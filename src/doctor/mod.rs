//! `promlink doctor`: a one-shot preflight report, run from the cluster or as a Kubernetes Job.
//!
//! It reads the same configuration as `promlink serve` (flags, `PROMLINK_*` and Azure sidecar
//! environment, YAML file) and answers one question: would data flow under the chosen Private
//! Link policy, and if not, what exactly must change? Each finding is a [`Check`] (status, what
//! was seen, what it means, the fix), in this order:
//!
//! 1. `ingestion-url`: the URL's shape and the DCE's region
//!    (`<name>.<region>-1.metrics.ingest.monitor.azure.com`).
//! 2. `region` (with `--cluster-region`): the cluster's region against the DCE's.
//! 3. `dns`, `connect` and (with an egress proxy set) `proxy`, per host: the DCE ingestion
//!    host; the configuration endpoints `<region>.handler.control.monitor.azure.com` and
//!    `global.handler.control...`; with `--workspace-id` the Log Analytics endpoints of
//!    Container insights; and the Entra ID authority. DNS goes through
//!    [`crate::privatelink::Verifier`] (the configured DNS servers and address rules), giving a
//!    [`Verdict`] with its documented meaning and remediation; then each address is probed
//!    (TCP, then verified TLS, [`crate::privatelink::probe`]). A host the egress proxy serves
//!    is probed through the proxy instead ([`proxy`]); under `prefer` the DCE's private
//!    endpoint is still probed directly and the proxy is its public fallback.
//! 4. `token`: a token from the configured identity, with Entra's `AADSTS` error and its fix.
//! 5. `canary` (with `--write-canary`): one remote-write 1.0 request with one sample
//!    (`promlink_doctor_canary` = 1), sent exactly as promlink sends, through an address that
//!    passed the checks (or the egress proxy, when it passed and no address did); 403, 404 and
//!    401 are explained.
//!
//! # Grading
//! A check fails only when data would not flow under the policy; the exit code is 1 then, 0
//! otherwise, 64 for configuration errors. The hosts are graded by what they are to promlink:
//! - the DCE ingestion host carries every sample: under `require` a verdict other than
//!   `private` fails (promlink sends nothing), under `prefer` it warns (promlink falls back to
//!   the public endpoint, firewall option (a)), under `off` it is informational; a host with
//!   no reachable address fails;
//! - the `handler.control` and Log Analytics hosts are not on promlink's path (the Azure
//!   Monitor agent, the managed Prometheus add-on and Container insights use them, through
//!   the same AMPLS and DNS), so they warn at worst;
//! - the Entra authority is never behind the AMPLS, so a public answer is expected; failing
//!   to resolve or reach it fails for identities that talk to it (workload, client secret,
//!   client certificate) and warns for managed identity (which asks IMDS instead).
//!
//! Azure Monitor hosts are probed on port 443, or on the ingestion URL's port when it names one
//! (which only happens against emulators). Doctor prints no token and no secret.

mod azure;
mod proxy;
pub mod report;

#[cfg(test)]
mod tests;

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, Problem, Settings};
use crate::identity::{IdentityKind, TokenProvider};
use crate::privatelink::probe::{probe, FailureKind, Probe};
use crate::privatelink::{Mode, Resolution, Verdict, Verifier, VerifierConfig};
use crate::secret::Secret;

pub use azure::{dce_region, Role, Target};
pub use report::{Check, Report, Status};

/// How the report is printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// A readable report: one block per check.
    #[default]
    Human,
    /// One JSON object: `{ok, mode, upstream, checks: [{name, target, status, seen, meaning,
    /// fix, verdict?}]}`.
    Json,
}

/// `promlink doctor`: the serve configuration plus doctor's own flags.
#[derive(Clone, Debug, clap::Args)]
pub struct DoctorArgs {
    /// The same configuration keys as `promlink serve` (only the upstream and identity matter).
    #[command(flatten)]
    pub settings: Settings,

    /// Report format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,

    /// Also send one remote-write request with one sample (promlink_doctor_canary = 1) to prove
    /// the identity, the role assignment and the DCR
    #[arg(long)]
    pub write_canary: bool,

    /// The cluster's Azure region (e.g. eastus), compared with the DCE's region
    #[arg(long)]
    pub cluster_region: Option<String>,

    /// Log Analytics workspace id (GUID) of Container insights: also check
    /// <id>.ods.opinsights.azure.com and <id>.oms.opinsights.azure.com
    #[arg(long)]
    pub workspace_id: Option<String>,

    /// How long to wait for a token from the identity, e.g. 30s
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub token_timeout: Duration,
}

impl DoctorArgs {
    /// Doctor's defaults around the given settings (for tests and embedding).
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            output: OutputFormat::Human,
            write_canary: false,
            cluster_region: None,
            workspace_id: None,
            token_timeout: Duration::from_secs(30),
        }
    }
}

/// What can stop doctor from reporting at all (configuration errors are reported, exit 64).
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    /// The report could not be written.
    #[error("writing the doctor report")]
    Output(#[source] std::io::Error),
}

/// Exit code for configuration errors (`EX_USAGE`).
pub const EXIT_CONFIG: i32 = 64;

/// Runs doctor and prints the report (or the configuration errors) to stdout. Returns the exit
/// code: 0 when data would flow under the chosen policy, 1 when it would not, 64 for
/// configuration errors.
///
/// # Errors
/// [`DoctorError::Output`] when stdout cannot be written.
pub async fn run(args: DoctorArgs) -> Result<i32, DoctorError> {
    let (text, code) = render(&args).await;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(DoctorError::Output)?;
    Ok(code)
}

/// Runs doctor and renders its output as [`run`] prints it: the report in the chosen format,
/// or the configuration errors; with the exit code.
pub async fn render(args: &DoctorArgs) -> (String, i32) {
    match diagnose(args).await {
        Ok(report) => {
            let text = match args.output {
                OutputFormat::Human => report.to_human(),
                OutputFormat::Json => report.to_json() + "\n",
            };
            (text, report.exit_code())
        }
        Err(e) => {
            let text = match args.output {
                OutputFormat::Human => format!("promlink doctor: {e}\n"),
                OutputFormat::Json => {
                    let problems: Vec<String> = e.0.iter().map(ToString::to_string).collect();
                    let v = serde_json::json!({
                        "ok": false,
                        "config_errors": problems,
                        "checks": [],
                    });
                    format!("{v:#}\n")
                }
            };
            (text, EXIT_CONFIG)
        }
    }
}

/// Loads the configuration and runs every check.
///
/// # Errors
/// [`ConfigError`] when the configuration (or a doctor flag) is invalid.
pub async fn diagnose(args: &DoctorArgs) -> Result<Report, ConfigError> {
    let cfg = args.settings.clone().load()?;
    let mut problems = Vec::new();
    if let Some(id) = &args.workspace_id {
        if !azure::is_guid(id) {
            problems.push(Problem {
                key: "workspace_id".into(),
                value: id.clone(),
                why: "must be the Log Analytics workspace id, a GUID (Workspace > Overview > Workspace ID)".into(),
            });
        }
    }
    if let Some(r) = &args.cluster_region {
        if azure::normalize_region(r).is_empty() {
            problems.push(Problem {
                key: "cluster_region".into(),
                value: r.clone(),
                why: "must be an Azure region name, e.g. eastus".into(),
            });
        }
    }
    if !problems.is_empty() {
        return Err(ConfigError(problems));
    }
    Ok(Doctor::new(&cfg, args).run().await)
}

/// One run's context.
struct Doctor<'a> {
    cfg: &'a Config,
    args: &'a DoctorArgs,
    mode: Mode,
    /// The DCE host (or generic receiver host) and its port.
    host: String,
    port: u16,
    region: Option<String>,
    timeout: Duration,
}

/// What checking one host found.
struct HostOutcome {
    checks: Vec<Check>,
    /// Addresses that passed DNS policy and TCP + TLS.
    usable: Vec<SocketAddr>,
    /// The egress proxy let promlink through to the host.
    through_proxy: bool,
}

impl HostOutcome {
    fn stop(checks: Vec<Check>) -> Self {
        Self {
            checks,
            usable: Vec::new(),
            through_proxy: false,
        }
    }
}

impl<'a> Doctor<'a> {
    fn new(cfg: &'a Config, args: &'a DoctorArgs) -> Self {
        let url = &cfg.destination.upstream.url;
        let host = url.host_str().unwrap_or_default().to_string();
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Self {
            cfg,
            args,
            mode: cfg.destination.private_link.mode,
            port: url.port_or_known_default().unwrap_or(443),
            region: dce_region(&host),
            host,
            timeout: cfg.destination.private_link.probe_timeout,
        }
    }

    async fn run(&self) -> Report {
        let mut checks = vec![self.url_check()];
        if let Some(r) = &self.args.cluster_region {
            checks.push(self.region_check(r));
        }
        let targets = self.targets();
        let verifier = Verifier::new(VerifierConfig {
            servers: self.cfg.destination.private_link.dns_servers.clone(),
            rules: self.cfg.destination.private_link.rules.clone(),
            timeout: self.timeout,
        })
        .map_err(|e| crate::outbound::error_chain(&e));
        let public = (self.mode == Mode::Prefer
            && !self
                .cfg
                .destination
                .private_link
                .public_dns_servers
                .is_empty())
        .then(|| {
            Verifier::new(VerifierConfig {
                servers: self.cfg.destination.private_link.public_dns_servers.clone(),
                rules: self.cfg.destination.private_link.rules.clone(),
                timeout: self.timeout,
            })
            .ok()
        })
        .flatten();
        let outcomes = join_all(
            targets
                .iter()
                .map(|t| self.check_host(t, verifier.as_ref(), public.as_ref())),
        )
        .await;
        let mut usable = Vec::new();
        let mut through_proxy = false;
        for (t, o) in targets.iter().zip(outcomes) {
            if t.role == Role::Ingestion {
                usable = o.usable;
                through_proxy = o.through_proxy;
            }
            checks.extend(o.checks);
        }
        let stop = CancellationToken::new();
        let (token_check, token) = self.token_check(&stop).await;
        checks.push(token_check);
        checks.push(self.canary_check(&usable, through_proxy, token).await);
        stop.cancel();
        let mut url = self.cfg.destination.upstream.url.clone();
        let _ = url.set_password(None);
        let _ = url.set_username("");
        Report::new(self.mode.as_str(), url.to_string(), checks)
    }

    /// Every host to check, the ingestion host first.
    fn targets(&self) -> Vec<Target> {
        let cloud = self.cfg.destination.identity.cloud;
        // Azure Monitor hosts listen on 443; an explicit URL port means an emulator.
        let az_port = self.cfg.destination.upstream.url.port().unwrap_or(443);
        let mut t = vec![Target {
            host: self.host.clone(),
            port: self.port,
            role: Role::Ingestion,
        }];
        if self.cfg.destination.azure {
            if let Some(region) = &self.region {
                t.push(Target {
                    host: azure::control_host(region, cloud),
                    port: az_port,
                    role: Role::Control,
                });
            }
            t.push(Target {
                host: azure::global_control_host(cloud),
                port: az_port,
                role: Role::Control,
            });
        }
        if let Some(id) = &self.args.workspace_id {
            for host in azure::workspace_hosts(id, cloud) {
                t.push(Target {
                    host,
                    port: az_port,
                    role: Role::LogAnalytics,
                });
            }
        }
        if azure::uses_entra(self.cfg.destination.identity.kind) {
            let a = &self.cfg.destination.identity.authority_host;
            t.push(Target {
                host: a
                    .host_str()
                    .unwrap_or_default()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
                port: a.port_or_known_default().unwrap_or(443),
                role: Role::Authority,
            });
        }
        let mut seen = std::collections::HashSet::new();
        t.retain(|x| seen.insert(x.host.to_ascii_lowercase()));
        t
    }

    fn url_check(&self) -> Check {
        let url = self.cfg.destination.upstream.url.as_str();
        let host = &self.host;
        if !self.cfg.destination.azure {
            return Check::new(
                "ingestion-url",
                url,
                Status::Ok,
                format!("{host} is not an Azure Monitor ingestion host"),
                "a generic remote-write receiver: the Azure checks (region, configuration endpoints, role assignment) do not apply",
                "",
            );
        }
        let labels: Vec<&str> = host.split('.').collect();
        if labels.get(2).is_some_and(|l| *l == "ingest") {
            return Check::new(
                "ingestion-url",
                url,
                Status::Fail,
                format!("{host} is a logs ingestion endpoint (<dce>.<region>-1.ingest.monitor.azure.com)"),
                "Prometheus remote write goes to the DCE's metrics ingestion endpoint; the logs ingestion endpoint does not accept it",
                "use the DCE's metrics ingestion endpoint (DCE > JSON view > properties.metricsIngestion.endpoint, <dce>.<region>-1.metrics.ingest.monitor.azure.com), not properties.logsIngestion.endpoint",
            );
        }
        let path = self.cfg.destination.upstream.url.path();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let dcr = segments.get(1).copied().unwrap_or_default();
        let stream = segments.get(3).copied().unwrap_or_default();
        let api = self
            .cfg
            .destination
            .upstream
            .url
            .query_pairs()
            .find(|(k, _)| k == "api-version")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        match &self.region {
            Some(region) => {
                let mut c = Check::new(
                    "ingestion-url",
                    url,
                    Status::Ok,
                    format!("DCE host {host} (region {region}), DCR {dcr}, stream {stream}, api-version {api}"),
                    "the URL has the shape of a DCE metrics ingestion endpoint",
                    "",
                );
                if stream != crate::config::DEFAULT_STREAM {
                    c.status = Status::Warn;
                    c.meaning = format!(
                        "managed Prometheus ingests the stream {}; {stream} will likely answer 404",
                        crate::config::DEFAULT_STREAM
                    );
                    c.fix = format!(
                        "use the stream {} in the URL",
                        crate::config::DEFAULT_STREAM
                    );
                }
                c
            }
            None => Check::new(
                "ingestion-url",
                url,
                Status::Warn,
                format!("DCR {dcr}, stream {stream}, api-version {api}; the host {host} does not carry a region"),
                "the host is not of the DCE shape <name>.<region>-1.metrics.ingest.monitor.azure.com, so the region and configuration endpoints cannot be derived",
                "use the DCE's metrics ingestion endpoint (DCE > JSON view > properties.metricsIngestion.endpoint)",
            ),
        }
    }

    fn region_check(&self, cluster: &str) -> Check {
        let want = azure::normalize_region(cluster);
        let target = format!("cluster {want}");
        let Some(dce) = &self.region else {
            return Check::new(
                "region",
                target,
                Status::Skipped,
                "the DCE host does not carry a region",
                "cannot compare regions",
                "",
            );
        };
        if *dce == want {
            return Check::new(
                "region",
                target,
                Status::Ok,
                format!("the DCE and the cluster are both in {dce}"),
                "same region: the DCE can serve both the configuration and the ingestion of this cluster",
                "",
            );
        }
        Check::new(
            "region",
            target,
            Status::Warn,
            format!("the DCE is in {dce}, the cluster in {want}"),
            "Azure's rules: the metrics ingestion endpoint must be in the same region as the destination Azure Monitor workspace, and the configuration (handler.control) endpoint in the region of the monitored cluster; with Private Link, a cluster in another region than its workspace needs a DCE in the cluster's region associated through the DCR (with a single private-linked DCE in another region, managed Prometheus does not work)",
            format!("make sure the workspace is in {dce}; for the cluster in {want}, create a DCE in {want}, add it to the AMPLS and associate it with the cluster through the DCR (data collection rule association)"),
        )
    }

    /// How promlink reaches `t`: its URL (scheme, host, port) and the egress route for it.
    fn route(&self, t: &Target) -> (Option<url::Url>, crate::proxy::Route<'_>) {
        let scheme = match t.role {
            Role::Ingestion => self.cfg.destination.upstream.url.scheme(),
            _ => "https",
        };
        let url = proxy::target_url(scheme, &t.host, t.port);
        let route = url.as_ref().map_or(
            crate::proxy::Route::Direct(crate::proxy::Direct::NotSet("HTTPS_PROXY")),
            |u| self.cfg.proxy.route(u),
        );
        (url, route)
    }

    /// What losing `t` costs: `Fail` for the ingestion host and an authority the identity
    /// needs, `Warn` for the rest.
    fn loss(&self, t: &Target) -> Status {
        match t.role {
            Role::Ingestion => Status::Fail,
            Role::Authority if azure::uses_authority(self.cfg.destination.identity.kind) => {
                Status::Fail
            }
            _ => Status::Warn,
        }
    }

    /// DNS, then TCP + TLS to the addresses the policy would use, or the egress proxy for a
    /// host it serves.
    async fn check_host(
        &self,
        t: &Target,
        verifier: Result<&Verifier, &String>,
        public: Option<&Verifier>,
    ) -> HostOutcome {
        let mut checks = Vec::new();
        let (url, route) = self.route(t);
        // prefer keeps the DCE's private endpoint direct; only its fallback uses the proxy.
        let fallback_via_proxy =
            route.is_proxy() && t.role == Role::Ingestion && self.mode == Mode::Prefer;
        let via_proxy = route.is_proxy() && !fallback_via_proxy;
        // An IP literal has nothing to resolve (config refuses it unless private_link is off).
        let (addresses, verdict) = if let Ok(ip) = t.host.parse::<IpAddr>() {
            let meaning = if t.role.private_link() {
                "Private Link cannot be verified without a DNS name"
            } else {
                "the host is given as an IP address"
            };
            checks.push(Check::new(
                "dns",
                &t.host,
                Status::Skipped,
                "an IP address: nothing to resolve",
                meaning,
                "",
            ));
            (vec![ip], None)
        } else {
            match verifier {
                Ok(v) => {
                    let r = v.resolve(&t.host).await;
                    let mut c = self.dns_check(t, &r);
                    if via_proxy {
                        proxy::resolves(&mut c, t, r.verdict);
                    }
                    checks.push(c);
                    (r.addresses.clone(), Some(r.verdict))
                }
                Err(e) => {
                    checks.push(Check::new(
                        "dns",
                        &t.host,
                        Status::Fail,
                        format!("cannot set up the resolver: {e}"),
                        Verdict::DnsError.meaning(),
                        Verdict::DnsError.remediation(),
                    ));
                    return HostOutcome::stop(checks);
                }
            }
        };
        if let (true, Some(url)) = (via_proxy, &url) {
            checks.push(Check::new(
                "connect",
                &t.host,
                Status::Skipped,
                "not probed directly",
                format!(
                    "promlink reaches {} through the egress proxy: see the proxy check",
                    t.host
                ),
                "",
            ));
            let (c, ok) = proxy::through(self.cfg, url, &route, self.loss(t), self.timeout).await;
            checks.push(c);
            return HostOutcome {
                checks,
                usable: Vec::new(),
                through_proxy: ok,
            };
        }
        let (probe_addrs, path, skip) = self
            .select(t, &addresses, verdict, public, fallback_via_proxy)
            .await;
        let mut usable = Vec::new();
        match skip {
            Some(why) => checks.push(why),
            None => {
                let sockets: Vec<SocketAddr> = probe_addrs
                    .iter()
                    .take(4)
                    .map(|ip| SocketAddr::new(*ip, t.port))
                    .collect();
                let ca = self.cfg.destination.upstream.ca_file.as_deref();
                let probes =
                    join_all(sockets.iter().map(|a| probe(&t.host, *a, ca, self.timeout))).await;
                usable = sockets
                    .iter()
                    .zip(&probes)
                    .filter(|(_, p)| p.ok())
                    .map(|(a, _)| *a)
                    .collect();
                checks.push(self.connect_check(t, &sockets, &probes, path));
            }
        }
        let mut through_proxy = false;
        if let (true, Some(url)) = (fallback_via_proxy, &url) {
            // The public fallback: losing it costs data only when the private path is down too.
            let loss = if usable.is_empty() {
                Status::Fail
            } else {
                Status::Warn
            };
            let (mut c, ok) = proxy::through(self.cfg, url, &route, loss, self.timeout).await;
            c.meaning = format!("private_link prefer's public fallback: {}", c.meaning);
            checks.push(c);
            through_proxy = ok;
        } else if self.cfg.proxy.is_set() {
            checks.push(proxy::direct(&t.host, &route));
        }
        HostOutcome {
            checks,
            usable,
            through_proxy,
        }
    }

    /// Which addresses the policy would connect to (and over which path), or why none.
    async fn select(
        &self,
        t: &Target,
        addresses: &[IpAddr],
        verdict: Option<Verdict>,
        public: Option<&Verifier>,
        fallback_via_proxy: bool,
    ) -> (Vec<IpAddr>, &'static str, Option<Check>) {
        let rules = &self.cfg.destination.private_link.rules;
        let private = verdict.is_none_or(|v| v == Verdict::Private);
        let path = match (verdict, t.role) {
            (Some(Verdict::Private), _) => "private endpoint",
            (_, Role::Authority) => "direct",
            (None, _) => "direct",
            _ => "public",
        };
        let mut picked: Vec<IpAddr> = addresses.to_vec();
        if t.role.private_link() && !private && self.mode != Mode::Off {
            // require: nothing but the private path; prefer: the public fallback, through the
            // egress proxy when one serves the host.
            let not_probed = match (self.mode, t.role) {
                (Mode::Require, Role::Ingestion) => Some("under private_link require promlink sends nothing to an address that is not verified private; data is held"),
                (Mode::Require, _) => Some("under private_link require only verified private endpoints are probed"),
                _ if fallback_via_proxy => Some("under private_link prefer the public fallback goes through the egress proxy: see the proxy check"),
                _ => None,
            };
            if let Some(consequence) = not_probed {
                return (
                    Vec::new(),
                    path,
                    Some(Check::new(
                        "connect",
                        &t.host,
                        Status::Skipped,
                        "not probed: the DNS answer is not verified private",
                        consequence,
                        "",
                    )),
                );
            }
            picked.retain(|ip| !rules.is_private(*ip));
            if picked.is_empty() && t.role == Role::Ingestion {
                if let Some(v) = public {
                    let r = v.resolve(&t.host).await;
                    picked = r
                        .addresses
                        .into_iter()
                        .filter(|ip| !rules.is_private(*ip))
                        .collect();
                }
            }
        }
        if picked.is_empty() {
            let status = if t.role == Role::Ingestion
                || (t.role == Role::Authority
                    && azure::uses_authority(self.cfg.destination.identity.kind))
            {
                Status::Fail
            } else {
                Status::Warn
            };
            let fix = if t.role == Role::Ingestion && self.mode == Mode::Prefer {
                "prefer has no public answer to fall back to: fix the DNS check above, or give --public-dns-server a resolver that answers the public name"
            } else {
                "fix the DNS check above"
            };
            return (
                Vec::new(),
                path,
                Some(Check::new(
                    "connect",
                    &t.host,
                    status,
                    "no address to connect to",
                    format!("{} cannot be reached: it has no usable address", t.host),
                    fix,
                )),
            );
        }
        (picked, path, None)
    }

    fn dns_check(&self, t: &Target, r: &Resolution) -> Check {
        let v = r.verdict;
        let seen = describe(r);
        let mut c = Check::new("dns", &t.host, Status::Ok, seen, v.meaning(), "");
        c.verdict = Some(v.as_str().to_string());
        let unresolved = matches!(v, Verdict::Nxdomain | Verdict::DnsError);
        match t.role {
            Role::Authority => {
                if unresolved {
                    c.status = if azure::uses_authority(self.cfg.destination.identity.kind) {
                        Status::Fail
                    } else {
                        Status::Warn
                    };
                    c.meaning = format!(
                        "{}; the Entra ID authority must resolve through public DNS (it is never behind the AMPLS)",
                        v.meaning()
                    );
                    c.fix = format!("let the cluster's DNS resolve {} (custom DNS servers must forward public names, e.g. to 168.63.129.16), and allow egress to it on TCP 443 (service tag AzureActiveDirectory)", t.host);
                } else {
                    c.meaning = format!("verdict {v}: the Entra ID authority is never reached through the AMPLS, so a public answer is expected and fine");
                }
            }
            Role::Ingestion | Role::Control | Role::LogAnalytics => {
                if v == Verdict::Private {
                    return c;
                }
                c.fix = v.remediation().to_string();
                if t.role == Role::LogAnalytics {
                    c.fix.push_str("; for this host the zones are privatelink.ods.opinsights.azure.com and privatelink.oms.opinsights.azure.com (Container insights: az aks enable-addons --addon monitoring --ampls-resource-id <AMPLS id>)");
                }
                let (status, consequence) = match (t.role, self.mode) {
                    (_, Mode::Off) if unresolved => (
                        if t.role == Role::Ingestion { Status::Fail } else { Status::Warn },
                        "the name must resolve for data to flow, whatever the policy".to_string(),
                    ),
                    (_, Mode::Off) => (
                        Status::Ok,
                        "private_link is off: informational, not enforced".to_string(),
                    ),
                    (Role::Ingestion, Mode::Require) => (
                        Status::Fail,
                        "under private_link require (firewall option (b): the private path only) promlink sends nothing until the answer is verified private; data is held and an alert fires".to_string(),
                    ),
                    (Role::Ingestion, Mode::Prefer) => {
                        c.fix.push_str(&format!("; {PUBLIC_FALLBACK}"));
                        (
                            Status::Warn,
                            "under private_link prefer promlink falls back to the public endpoint (and alerts) until the private path verifies".to_string(),
                        )
                    }
                    (_, _) => (
                        Status::Warn,
                        format!("promlink itself does not use this host, but {} do, through the same AMPLS and private DNS", if t.role == Role::Control { "the Azure Monitor agent and the managed Prometheus add-on" } else { "Container insights agents" }),
                    ),
                };
                c.status = status;
                c.meaning = format!("{}; {consequence}", v.meaning());
            }
        }
        c
    }

    fn connect_check(
        &self,
        t: &Target,
        sockets: &[SocketAddr],
        probes: &[Probe],
        path: &str,
    ) -> Check {
        let seen = sockets
            .iter()
            .zip(probes)
            .map(|(a, p)| describe_probe(*a, p))
            .collect::<Vec<_>>()
            .join("\n");
        let ok = probes.iter().filter(|p| p.ok()).count();
        if ok == probes.len() {
            return Check::new(
                "connect",
                &t.host,
                Status::Ok,
                seen,
                format!(
                    "TCP and verified TLS to {} work over the {path} path",
                    t.host
                ),
                "",
            );
        }
        let essential = match t.role {
            Role::Ingestion => true,
            Role::Authority => azure::uses_authority(self.cfg.destination.identity.kind),
            Role::Control | Role::LogAnalytics => false,
        };
        let status = if ok > 0 || !essential {
            Status::Warn
        } else {
            Status::Fail
        };
        let first = probes
            .iter()
            .find_map(Probe::failure)
            .map_or(FailureKind::Other, |f| f.kind);
        let mut meaning = if ok > 0 {
            format!(
                "{ok} of {} addresses work; connections to the others fail",
                probes.len()
            )
        } else {
            format!(
                "no address of {} can be reached over the {path} path",
                t.host
            )
        };
        meaning.push_str(&format!("; {}", failure_meaning(first)));
        if t.role == Role::Authority {
            meaning.push_str("; Entra ID is never reached through the AMPLS");
            if !essential {
                meaning.push_str(" (managed identity asks IMDS instead, so promlink does not need this host itself)");
            }
        } else if !essential {
            meaning.push_str("; promlink itself does not use this host");
        }
        let fix = match t.role {
            Role::Authority => format!(
                "allow egress from the cluster to {} on TCP {} (service tag AzureActiveDirectory); {}",
                t.host,
                t.port,
                failure_fix(first, &t.host, t.port, path)
            ),
            _ => failure_fix(first, &t.host, t.port, path),
        };
        Check::new("connect", &t.host, status, seen, meaning, fix)
    }

    async fn token_check(&self, stop: &CancellationToken) -> (Check, Option<Option<Secret>>) {
        let id = &self.cfg.destination.identity;
        let kind = id.kind;
        let target = format!("identity {}", kind.as_str());
        if kind == IdentityKind::None {
            return (
                Check::new(
                    "token",
                    target,
                    Status::Skipped,
                    "identity none: no Authorization header is sent",
                    "fine for a generic receiver without authentication",
                    "",
                ),
                Some(None),
            );
        }
        let provider = match TokenProvider::new(id.clone(), crate::identity::Metrics::default()) {
            Ok(p) => p,
            Err(e) => {
                let err = crate::outbound::error_chain(&e);
                return (
                    Check::new(
                        "token",
                        target,
                        Status::Fail,
                        err,
                        "the identity cannot be set up",
                        "fix the identity settings named above",
                    ),
                    None,
                );
            }
        };
        let _refresher = provider.spawn_refresher(stop.clone());
        match provider.bearer(self.args.token_timeout).await {
            Ok(token) => {
                let expires = provider
                    .state()
                    .expires_at
                    .and_then(|t| t.duration_since(SystemTime::now()).ok())
                    .map(|d| {
                        format!(
                            ", valid for {}",
                            humantime::format_duration(Duration::from_secs(d.as_secs()))
                        )
                    })
                    .unwrap_or_default();
                let source = if azure::uses_entra(kind) {
                    format!(" for scope {}", id.scope)
                } else {
                    String::new()
                };
                (
                    Check::new(
                        "token",
                        target,
                        Status::Ok,
                        format!("got a token{source}{expires}"),
                        "the identity works",
                        "",
                    ),
                    Some(token),
                )
            }
            Err(e) => {
                let err = crate::outbound::error_chain(&e);
                let (meaning, fix) = token_fix(&err, kind, id.authority_host.as_str(), &id.scope);
                (
                    Check::new("token", target, Status::Fail, err, meaning, fix),
                    None,
                )
            }
        }
    }

    async fn canary_check(
        &self,
        usable: &[SocketAddr],
        through_proxy: bool,
        token: Option<Option<Secret>>,
    ) -> Check {
        let target = self.host.clone();
        if !self.args.write_canary {
            return Check::new(
                "canary",
                target,
                Status::Skipped,
                "not sent",
                "pass --write-canary to send one sample (promlink_doctor_canary = 1) and prove the role assignment and the DCR",
                "",
            );
        }
        let Some(token) = token else {
            return Check::new(
                "canary",
                target,
                Status::Skipped,
                "not sent: no token",
                "the canary needs a token; fix the token check",
                "",
            );
        };
        // A verified address directly, else the egress proxy that passed its check.
        let (client, via) = match (usable.first().copied(), through_proxy) {
            (Some(addr), _) => (
                crate::privatelink::probe::pinned_client(
                    &self.host,
                    addr,
                    self.cfg.destination.upstream.ca_file.as_deref(),
                    self.cfg.destination.upstream.request_timeout,
                )
                .map_err(|e| crate::outbound::error_chain(&e)),
                addr.to_string(),
            ),
            (None, true) => (
                crate::upstream::client::build_proxied(
                    self.cfg.destination.upstream.ca_file.as_deref(),
                    self.cfg.destination.upstream.request_timeout,
                    &self.cfg.proxy,
                )
                .map_err(|e| crate::outbound::error_chain(&e)),
                "the egress proxy".to_string(),
            ),
            (None, false) => {
                return Check::new(
                    "canary",
                    target,
                    Status::Skipped,
                    format!("not sent: no address of {} passed the checks under private_link {}", self.host, self.mode.as_str()),
                    "the canary only goes through an address (or egress proxy) that passed the checks; fix the checks above",
                    "",
                )
            }
        };
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                return Check::new(
                    "canary",
                    target,
                    Status::Fail,
                    e,
                    "the upstream client cannot be built",
                    "check --ca-file",
                )
            }
        };
        let mut req = client
            .post(self.cfg.destination.upstream.url.clone())
            .headers(crate::upstream::client::write_headers())
            .body(canary_body(self.cfg.receive.codec.cluster.as_deref()));
        if let Some(t) = &token {
            match crate::upstream::client::bearer(t) {
                Ok(v) => req = req.header(crate::upstream::client::AUTHORIZATION_HEADER, v),
                Err(e) => {
                    return Check::new(
                        "canary",
                        target,
                        Status::Fail,
                        crate::outbound::error_chain(&e),
                        "the token cannot be sent",
                        "check the identity",
                    )
                }
            }
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return Check::new(
                    "canary",
                    target,
                    Status::Fail,
                    format!("through {via}: {}", crate::outbound::error_chain(&e)),
                    "the request failed although the connect check passed: the connection broke mid-request or timed out",
                    "retry; if it persists, look for a proxy or firewall that inspects or limits HTTPS to the DCE",
                )
            }
        };
        let status = resp.status().as_u16();
        let message = body_text(resp).await;
        let seen = if message.is_empty() {
            format!("HTTP {status} through {via}")
        } else {
            format!("HTTP {status} through {via}: {message}")
        };
        let (status_of, meaning, fix) =
            canary_meaning(status, &self.cfg.destination.identity.scope);
        Check::new("canary", target, status_of, seen, meaning, fix)
    }
}

const PUBLIC_FALLBACK: &str = "while on the public fallback the firewall must allow *.ingest.monitor.azure.com and *.handler.control.monitor.azure.com on TCP 443 (firewall option (a)), and the AMPLS ingestion access mode must be Open";

/// One line per DNS answer: resolver, chain, addresses, TTL, and the classifier's reason.
fn describe(r: &Resolution) -> String {
    let mut s = r.host.clone();
    for hop in &r.chain {
        s.push_str(&format!(" -> CNAME {}", hop.target.trim_end_matches('.')));
    }
    if r.addresses.is_empty() {
        s.push_str(" -> (no address)");
    } else {
        let a: Vec<String> = r.addresses.iter().map(ToString::to_string).collect();
        s.push_str(&format!(" -> {}", a.join(", ")));
    }
    if let Some(ttl) = r.ttl {
        s.push_str(&format!(" (ttl {}s)", ttl.as_secs()));
    }
    format!(
        "{s}\nverdict {} from resolver {}: {}",
        r.verdict, r.resolver, r.detail
    )
}

fn describe_probe(addr: SocketAddr, p: &Probe) -> String {
    let ms = |d: &Duration| format!("{:.1}ms", d.as_secs_f64() * 1000.0);
    match (&p.tcp, &p.tls) {
        (Err(f), _) => format!("{addr}: tcp failed ({}): {}", f.kind, f.detail),
        (Ok(t), None) => format!("{addr}: tcp ok {}", ms(t)),
        (Ok(t), Some(Err(f))) => {
            format!(
                "{addr}: tcp ok {}, tls failed ({}): {}",
                ms(t),
                f.kind,
                f.detail
            )
        }
        (Ok(t), Some(Ok(l))) => format!(
            "{addr}: tcp ok {}, tls ok {}{}",
            ms(t),
            ms(l),
            p.http_status
                .map(|s| format!(" (HTTP {s} to GET /)"))
                .unwrap_or_default()
        ),
    }
}

fn failure_meaning(kind: FailureKind) -> &'static str {
    match kind {
        FailureKind::Refused => "the connection was refused: the address answers but nothing accepts the port there, or a firewall rejects it actively",
        FailureKind::Timeout => "no answer: packets are dropped silently, which is what a firewall without an allow rule looks like",
        FailureKind::Unreachable => "no route to the address",
        FailureKind::TlsCertificate => "the server's certificate is not valid for this name with the trusted CAs: a TLS-inspecting proxy or firewall is in the path, or the address is not Azure Monitor",
        FailureKind::TlsOther => "TCP works but the TLS handshake fails: a proxy or firewall that inspects or blocks TLS, or not a TLS service",
        FailureKind::Other => "the connection failed",
    }
}

fn failure_fix(kind: FailureKind, host: &str, port: u16, path: &str) -> String {
    let rule = if path == "private endpoint" {
        format!("allow TCP {port} from the cluster's subnet to the private endpoint's IP (firewall option (b): NSG, Azure Firewall, route tables/UDR)")
    } else {
        format!("allow TCP {port} to {host} (firewall option (a): *.ingest.monitor.azure.com and *.handler.control.monitor.azure.com; Entra ID: service tag AzureActiveDirectory)")
    };
    match kind {
        FailureKind::Refused | FailureKind::Timeout | FailureKind::Other => {
            format!("{rule}; check that the private endpoint connection is Approved")
        }
        FailureKind::Unreachable => format!(
            "check the routes (VNet peering, UDRs, VPN/ExpressRoute) from the cluster to the address; {rule}"
        ),
        FailureKind::TlsCertificate => format!(
            "exempt {host} from TLS inspection, or trust the inspecting proxy's CA with --ca-file; check that the name resolves to Azure Monitor"
        ),
        FailureKind::TlsOther => format!(
            "exempt {host} from TLS inspection or proxying; {rule}"
        ),
    }
}

/// What a token failure means and how to fix it, from Entra's AADSTS code when there is one.
fn token_fix(err: &str, kind: IdentityKind, authority: &str, scope: &str) -> (String, String) {
    let code = err
        .find("AADSTS")
        .map(|i| {
            err[i + 6..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .unwrap_or_default();
    let pair = |m: &str, f: String| (m.to_string(), f);
    match code.as_str() {
        "7000215" | "7000222" => pair(
            "Entra ID rejected the client secret (wrong or expired)",
            "create a new client secret for the app registration and put its value (not its id) in --client-secret-file or AZURE_CLIENT_SECRET".into(),
        ),
        "700016" => pair(
            "the application (client) id is not found in the tenant",
            "check --client-id and --tenant-id against the app registration's Overview page (or the managed identity's client id)".into(),
        ),
        "90002" | "90023" => pair(
            "the tenant is not found",
            "check --tenant-id (the directory id) and --cloud / --authority-host".into(),
        ),
        "70021" | "700211" | "700212" | "700213" | "700024" => pair(
            "no federated identity credential matches the service account token",
            "on the identity, add a federated credential with the cluster's OIDC issuer URL, subject system:serviceaccount:<namespace>:<service-account> and audience api://AzureADTokenExchange; label the pod azure.workload.identity/use: \"true\" and annotate the service account with azure.workload.identity/client-id".into(),
        ),
        "700027" | "700023" | "50012" | "700021" => pair(
            "Entra ID rejected the client assertion (certificate)",
            "upload the certificate's public part to the app registration (Certificates & secrets) and make sure the PEM file holds that certificate and its private key".into(),
        ),
        "500011" | "70011" | "1002012" => pair(
            "the requested scope or resource is wrong",
            format!("request {scope} as https://monitor.azure.com/.default (US Government https://monitor.azure.us/.default, China https://monitor.azure.cn/.default): check --token-scope / INGESTION_AAD_AUDIENCE and --cloud"),
        ),
        "" if !azure::uses_entra(kind) => pair(
            "the token file cannot be used",
            "check --token-file: it must exist, hold a token and not be expired".into(),
        ),
        "" if matches!(kind, IdentityKind::SystemAssigned | IdentityKind::UserAssigned) => pair(
            "no token from the managed identity endpoint",
            "the pod must reach IMDS (169.254.169.254:80; not blocked by a network policy) and the identity must be assigned to the node pool (or use workload identity); for user-assigned, check --client-id".into(),
        ),
        "" => pair(
            "no answer from Entra ID",
            format!("allow egress from the cluster to {authority} on TCP 443 (service tag AzureActiveDirectory; Entra ID is never reached through the AMPLS), and check --authority-host / --cloud"),
        ),
        _ => pair(
            "Entra ID refused the token request",
            format!("look up AADSTS{code} (https://learn.microsoft.com/entra/identity-platform/reference-error-codes) and fix the identity settings"),
        ),
    }
}

/// Status, meaning and fix of the canary's answer.
fn canary_meaning(status: u16, scope: &str) -> (Status, String, String) {
    let s = |st: Status, m: &str, f: &str| (st, m.to_string(), f.to_string());
    match status {
        200..=299 => s(
            Status::Ok,
            "the DCE accepted the sample: identity, role assignment, DCR and path work, so data flows",
            "",
        ),
        401 => (
            Status::Fail,
            "the DCE rejected the token: wrong audience or scope, wrong tenant, or expired".into(),
            format!("request the token for the Azure Monitor audience (now {scope}; public https://monitor.azure.com/.default, US Government https://monitor.azure.us/.default, China https://monitor.azure.cn/.default): check --token-scope / INGESTION_AAD_AUDIENCE and --cloud"),
        ),
        403 => s(
            Status::Fail,
            "the identity does not hold the Monitoring Metrics Publisher role on the DCR, or the assignment has not applied yet",
            "assign Monitoring Metrics Publisher on the data collection rule (DCR) to the identity promlink uses (az role assignment create --assignee <client-id> --role \"Monitoring Metrics Publisher\" --scope <DCR resource id>); a new assignment takes about 30 minutes to apply and answers 403 meanwhile; a network-isolated DCE also refuses requests from public networks",
        ),
        404 => s(
            Status::Fail,
            "the DCE does not know this DCR or stream: wrong DCR immutable id, stream, or DCE",
            "use the DCR's immutableId (dcr- and 32 hex digits, from the DCR's JSON view, not its name), the stream Microsoft-PrometheusMetrics, and the metrics ingestion endpoint of the DCE the DCR is associated with",
        ),
        422 => s(
            Status::Warn,
            "the DCE refused the sample as a duplicate series; the path and authorization work",
            "",
        ),
        408 | 429 | 500..=599 => s(
            Status::Warn,
            "the DCE is reachable but busy or failing; promlink retries these answers",
            "retry later; if it persists, check Azure Monitor service health and the DCR's limits",
        ),
        _ => s(
            Status::Fail,
            "the DCE refused the request",
            "see the DCE's message; check the api-version in the ingestion URL",
        ),
    }
}

/// One remote-write 1.0 request (snappy block) with `promlink_doctor_canary{job="promlink-doctor"}
/// = 1` at the current time.
fn canary_body(cluster: Option<&str>) -> Vec<u8> {
    use crate::proto::v1::{Label, Sample, TimeSeries, WriteRequest};
    let label = |n: &str, v: &str| Label {
        name: n.to_string(),
        value: v.to_string(),
    };
    let mut labels = vec![label("__name__", "promlink_doctor_canary")];
    if let Some(c) = cluster {
        labels.push(label("cluster", c));
    }
    labels.push(label("job", "promlink-doctor"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let req = WriteRequest {
        timeseries: vec![TimeSeries {
            labels,
            samples: vec![Sample {
                value: 1.0,
                timestamp: now,
            }],
            ..TimeSeries::default()
        }],
        ..WriteRequest::default()
    };
    let raw = req.encode_to_vec();
    // Compressing an in-memory buffer cannot fail.
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .unwrap_or_default()
}

/// The start of a response body, one line.
async fn body_text(resp: reqwest::Response) -> String {
    let text = resp.text().await.unwrap_or_default();
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().count() > 400 {
        format!("{}...", text.chars().take(400).collect::<String>())
    } else {
        text
    }
}
