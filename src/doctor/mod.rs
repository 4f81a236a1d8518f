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
//! 5. `canary` (with `--write-canary` or `--read-back`): one remote-write 1.0 request with one
//!    sample (`promlink_doctor_canary`, its value the write time), sent exactly as promlink
//!    sends, through an address that passed the checks (or the egress proxy, when it passed
//!    and no address did); 403, 404 and 401 are explained.
//! 6. With `--read-back` ([`read_back`]): the query endpoint's `query-dns` (graded by
//!    `query_private_link`), `query-connect` (TCP and TLS), `query-token` (a token for
//!    `query_token_scope`), and `read-back`: the canary read back through `query_url` within
//!    `canary_timeout`, or why not (403: Monitoring Data Reader).
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
mod canary;
mod host;
mod proxy;
mod read_back;
pub mod report;
mod token;

#[cfg(test)]
mod tests;

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, Problem, Settings};
use crate::privatelink::probe::probe;
use crate::privatelink::{Mode, Verdict, Verifier, VerifierConfig};

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

    /// Also send one remote-write request with one sample (promlink_doctor_canary, the write
    /// time) to prove the identity, the role assignment and the DCR
    #[arg(long)]
    pub write_canary: bool,

    /// Write the canary (as --write-canary) and wait up to canary_timeout to read it back
    /// through query_url; checks the query endpoint's DNS, TCP and TLS, and its token
    #[arg(long)]
    pub read_back: bool,

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
            read_back: false,
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
    if !cfg.routed {
        return Ok(Doctor::new(&cfg, args).run().await);
    }
    // With routes, every destination of every route, each checked as if it were the only one.
    let mut reports = Vec::new();
    for route in &cfg.routes {
        for d in &route.destinations {
            // Only this route: its own canary settings (query_url) for --read-back.
            let one = Config {
                destination: d.clone(),
                routes: vec![route.clone()],
                ..cfg.clone()
            };
            let mut report = Doctor::new(&one, args).run().await;
            report.route = Some(route.name.clone());
            reports.push(report);
        }
    }
    Ok(Report::of_routes(reports))
}

/// What [`Doctor::select`] chose for a host's connect check.
enum Selected {
    /// Probe these addresses, on this path (`private endpoint`, `public` or `direct`).
    Probe {
        addresses: Vec<IpAddr>,
        path: &'static str,
    },
    /// Probe nothing: this check says why.
    Skip(Check),
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
        let (canary, written) = self.canary_check(&usable, through_proxy, token).await;
        checks.push(canary);
        checks.extend(self.read_back_checks(written, &stop).await);
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
        let selected = self
            .select(t, &addresses, verdict, public, fallback_via_proxy)
            .await;
        let mut usable = Vec::new();
        match selected {
            Selected::Skip(why) => checks.push(why),
            Selected::Probe { addresses, path } => {
                let sockets: Vec<SocketAddr> = addresses
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
    ) -> Selected {
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
                return Selected::Skip(Check::new(
                    "connect",
                    &t.host,
                    Status::Skipped,
                    "not probed: the DNS answer is not verified private",
                    consequence,
                    "",
                ));
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
            return Selected::Skip(Check::new(
                "connect",
                &t.host,
                status,
                "no address to connect to",
                format!("{} cannot be reached: it has no usable address", t.host),
                fix,
            ));
        }
        Selected::Probe {
            addresses: picked,
            path,
        }
    }
}
