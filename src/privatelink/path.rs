//! The path policy and the pinned resolver: which addresses the upstream client may connect to.
//!
//! [`PrivateLink::run`] verifies the upstream host (see [`super::verify`]), probes TCP and TLS to
//! the answer (see [`super::probe`]), and decides the approved addresses:
//!
//! - `require` (firewall option b): only addresses of a `private` verdict. Anything else leaves
//!   nothing approved: the upstream client cannot connect, so data waits in the queue
//!   (backpressure reaches senders when it is full), `/ready` fails, and an alert fires.
//! - `prefer` (firewall option a): the private endpoint while it verifies and connects; otherwise
//!   the public answer (from the same resolver, or `public_dns_servers`), or, when an egress
//!   proxy applies to the host (`public_via_proxy`), the proxy, which resolves the name itself.
//!   Traffic returns to the private endpoint only after it has stayed healthy for `return_after`
//!   (hysteresis). The private endpoint is always reached directly.
//! - `off`: no verification; the client resolves normally.
//!
//! [`PinnedResolver`] is the upstream client's only resolver: it answers the upstream host with
//! the approved addresses and refuses every other name, so no code path can reach the upstream
//! host any other way. The DCE name stays in the URL, so TLS SNI, certificate verification and
//! `Host` use it. Whenever the approved set changes, [`PrivateLink::generation`] moves on and the
//! upstream rebuilds its client, dropping pooled connections to addresses no longer approved.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use super::metrics::{Metrics, StageLabel};
use super::probe::{probe, Probe};
use super::verify::{Resolution, Verifier, VerifierConfig};
use super::{Mode, PrivateLinkConfig, Verdict};

/// Where upstream traffic goes now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActivePath {
    /// The verified private endpoint.
    Private,
    /// The public endpoint (prefer's fallback, or `off`).
    Public,
    /// Nowhere: data is held.
    None,
}

impl ActivePath {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            ActivePath::Private => "private",
            ActivePath::Public => "public",
            ActivePath::None => "none",
        }
    }
}

/// What the rest of promlink (readiness, alerts, doctor, the demo) sees.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The configured policy.
    pub mode: Mode,
    /// The upstream host.
    pub host: String,
    /// The last verification of the main resolver (None before the first).
    pub resolution: Option<Resolution>,
    /// Where traffic goes.
    pub path: ActivePath,
    /// Addresses the upstream client may connect to.
    pub approved: Vec<IpAddr>,
    /// Since when traffic is on the public fallback.
    pub fallback_since: Option<SystemTime>,
    /// The last TCP/TLS probe failure of the private endpoint, while it lasts.
    pub probe_failure: Option<String>,
    /// The last change of the DNS answer: when, and `old -> new`.
    pub dns_changed: Option<(SystemTime, String)>,
}

/// Errors setting up private-link verification.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// The resolver could not be set up.
    #[error("dns resolver: {0}")]
    Verifier(String),
}

/// The private-link stage of one upstream.
pub struct PrivateLink {
    cfg: PrivateLinkConfig,
    host: String,
    port: u16,
    ca_file: Option<PathBuf>,
    verifier: Option<Verifier>,
    public_verifier: Option<Verifier>,
    state: RwLock<Snapshot>,
    generation: AtomicU64,
    /// The last public addresses seen, for `prefer`'s fallback.
    last_public: std::sync::Mutex<Vec<IpAddr>>,
    verified: watch::Sender<u64>,
    wake: Notify,
    metrics: Metrics,
}

impl PrivateLink {
    /// Sets up verification of `host` (`port` is the upstream's, for probes).
    ///
    /// # Errors
    /// When a resolver cannot be built (e.g. the system configuration is unreadable).
    pub fn new(
        cfg: PrivateLinkConfig,
        host: &str,
        port: u16,
        ca_file: Option<PathBuf>,
        metrics: Metrics,
    ) -> Result<Self, PathError> {
        let make = |servers: &[SocketAddr]| {
            Verifier::new(VerifierConfig {
                servers: servers.to_vec(),
                rules: cfg.rules.clone(),
                timeout: cfg.probe_timeout,
            })
            .map_err(|e| PathError::Verifier(e.to_string()))
        };
        let (verifier, public_verifier) = match cfg.mode {
            Mode::Off => (None, None),
            _ => (
                Some(make(&cfg.dns_servers)?),
                if cfg.public_dns_servers.is_empty() {
                    None
                } else {
                    Some(make(&cfg.public_dns_servers)?)
                },
            ),
        };
        metrics.set_mode(cfg.mode);
        let path = if cfg.mode == Mode::Off {
            ActivePath::Public
        } else {
            ActivePath::None
        };
        metrics.set_path(path);
        let state = Snapshot {
            mode: cfg.mode,
            host: host.to_string(),
            resolution: None,
            path,
            approved: Vec::new(),
            fallback_since: None,
            probe_failure: None,
            dns_changed: None,
        };
        Ok(Self {
            host: host.to_string(),
            port,
            ca_file,
            verifier,
            public_verifier,
            state: RwLock::new(state),
            generation: AtomicU64::new(0),
            last_public: std::sync::Mutex::new(Vec::new()),
            verified: watch::channel(0).0,
            wake: Notify::new(),
            metrics,
            cfg,
        })
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> Snapshot {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Moves on whenever the approved addresses change: the upstream then rebuilds its client.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The resolver for the upstream client, or `None` under `off` (normal resolution).
    pub fn resolver(self: &Arc<Self>) -> Option<Arc<PinnedResolver>> {
        (self.cfg.mode != Mode::Off).then(|| Arc::new(PinnedResolver { link: self.clone() }))
    }

    /// Whether traffic is now on `prefer`'s public fallback through the egress proxy: the
    /// upstream then connects through the proxy instead of to approved addresses.
    pub fn fallback_through_proxy(&self) -> bool {
        self.cfg.mode == Mode::Prefer
            && self.cfg.public_via_proxy
            && self.snapshot().path == ActivePath::Public
    }

    /// The upstream could not connect or lost the connection: verify again soon.
    pub fn connection_failed(&self) {
        self.wake.notify_one();
    }

    /// `Ok` when data can flow under the policy, else why not.
    pub fn ready(&self) -> Result<(), String> {
        let s = self.snapshot();
        match (s.mode, s.path) {
            (Mode::Off, _) => Ok(()),
            (_, ActivePath::None) => Err(match &s.resolution {
                None => format!("private link: {} not verified yet", s.host),
                Some(r) => format!(
                    "private link: {} verdict {} ({}), policy {}",
                    s.host,
                    r.verdict,
                    r.detail,
                    s.mode.as_str()
                ),
            }),
            (Mode::Require, ActivePath::Private) => match &s.probe_failure {
                Some(p) => Err(format!(
                    "private link: the private endpoint does not connect: {p}"
                )),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// Verifies, decides and sleeps, until `stop`. Re-verifies when the TTL expires (within
    /// `reverify_min..=reverify_max`), sooner while unhealthy or waiting to return, and after
    /// connection failures (at most once a second).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        if self.cfg.mode == Mode::Off {
            return;
        }
        let mut healthy_since: Option<Instant> = None;
        let mut last_tick = Instant::now();
        loop {
            let wait = self.verify_once(&mut healthy_since, &mut last_tick).await;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {
                    // Debounce bursts of failures from several shards.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn verify_once(
        &self,
        healthy_since: &mut Option<Instant>,
        last_tick: &mut Instant,
    ) -> Duration {
        let Some(verifier) = &self.verifier else {
            return self.cfg.reverify_max;
        };
        let res = verifier.resolve(&self.host).await;
        let prev = self.snapshot();
        self.metrics.set_verdict(&self.host, res.verdict);
        self.metrics.last_verification.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        );
        let dns_changed = self.note_answer(&prev, &res);
        let (private_ok, probe_failure) = self.probe_private(&res).await;
        let now = Instant::now();
        let (path, approved) = self
            .decide_path(&prev, &res, &private_ok, healthy_since, now)
            .await;
        let fallback_since = self.note_path(&prev, path, &approved, last_tick, now);
        {
            let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
            // The path too: prefer's fallback through a proxy approves no address, but needs a
            // client of its own.
            let changed = s.approved != approved || s.path != path;
            s.resolution = Some(res.clone());
            s.path = path;
            s.approved = approved;
            s.fallback_since = fallback_since;
            s.probe_failure = probe_failure;
            s.dns_changed = dns_changed;
            // Inside the lock: a request that sees the new approvals also sees the new
            // generation, so it cannot reuse a pooled connection to an address now refused.
            if changed {
                self.generation.fetch_add(1, Ordering::AcqRel);
            }
        }
        self.verified.send_modify(|g| *g += 1);

        // On a healthy private path, re-verify when the TTL expires (within the bounds);
        // unhealthy, held, on the fallback or waiting to return: look again soon.
        if path == ActivePath::Private && !private_ok.is_empty() {
            res.ttl
                .unwrap_or(self.cfg.reverify_min)
                .clamp(self.cfg.reverify_min, self.cfg.reverify_max)
        } else {
            self.cfg.reverify_min
        }
    }

    /// Logs and counts how the answer `res` differs from the previous one; returns the last
    /// change of the DNS answer (when and `old -> new`).
    fn note_answer(&self, prev: &Snapshot, res: &Resolution) -> Option<(SystemTime, String)> {
        let mut dns_changed = prev.dns_changed.clone();
        if let Some(old) = &prev.resolution {
            if !old.same_answer(res) {
                let change = format!("{} -> {}", describe(old), describe(res));
                tracing::warn!(host = %self.host, change = %change, verdict = %res.verdict, "the upstream's DNS answer changed");
                self.metrics.dns_changes.inc();
                dns_changed = Some((SystemTime::now(), change));
            }
            if old.verdict != res.verdict {
                self.metrics.verdict_changes.inc();
                let level_private = res.verdict == Verdict::Private;
                if level_private {
                    tracing::info!(host = %self.host, from = %old.verdict, to = %res.verdict, detail = %res.detail, "private link verdict changed");
                } else {
                    tracing::error!(host = %self.host, from = %old.verdict, to = %res.verdict, detail = %res.detail, remediation = res.verdict.remediation(), "private link verdict changed");
                }
            }
        } else if res.verdict != Verdict::Private {
            tracing::error!(host = %self.host, verdict = %res.verdict, detail = %res.detail, remediation = res.verdict.remediation(), "private link is not verified");
        } else {
            tracing::info!(host = %self.host, detail = %res.detail, "private link verified");
        }

        dns_changed
    }

    /// Probes every address of a private answer: the addresses that connect, and the last
    /// failure while none does.
    async fn probe_private(&self, res: &Resolution) -> (Vec<IpAddr>, Option<String>) {
        let mut probe_failure = None;
        let mut private_ok: Vec<IpAddr> = Vec::new();
        if res.verdict == Verdict::Private {
            for ip in &res.addresses {
                let p = probe(
                    &self.host,
                    SocketAddr::new(*ip, self.port),
                    self.ca_file.as_deref(),
                    self.cfg.probe_timeout,
                )
                .await;
                match probe_error(&p) {
                    None => private_ok.push(*ip),
                    Some((stage, why)) => {
                        self.metrics
                            .probe_failures
                            .get_or_create(&StageLabel { stage })
                            .inc();
                        probe_failure = Some(format!("{ip}:{}: {stage}: {why}", self.port));
                    }
                }
            }
            if !private_ok.is_empty() {
                probe_failure = None;
            } else if let Some(p) = &probe_failure {
                tracing::error!(host = %self.host, failure = %p, "DNS points at the private endpoint, but it does not connect: check firewalls and NSGs for port 443 to the private endpoint");
            }
        }

        (private_ok, probe_failure)
    }

    /// Where traffic goes under the policy, and the addresses the client may connect to.
    async fn decide_path(
        &self,
        prev: &Snapshot,
        res: &Resolution,
        private_ok: &[IpAddr],
        healthy_since: &mut Option<Instant>,
        now: Instant,
    ) -> (ActivePath, Vec<IpAddr>) {
        match self.cfg.mode {
            Mode::Off => (ActivePath::Public, res.addresses.clone()),
            Mode::Require => {
                if res.verdict == Verdict::Private {
                    // Private addresses stay approved even when a probe fails: nothing else is
                    // allowed, and retries reach the endpoint as soon as it answers again.
                    (
                        ActivePath::Private,
                        if private_ok.is_empty() {
                            res.addresses.clone()
                        } else {
                            private_ok.to_vec()
                        },
                    )
                } else {
                    (ActivePath::None, Vec::new())
                }
            }
            Mode::Prefer => {
                if private_ok.is_empty() {
                    *healthy_since = None;
                } else {
                    healthy_since.get_or_insert(now);
                }
                // The public path: this answer's public part or the public resolver's, else the
                // last public answer seen (a firewall blocking a correctly resolved private
                // endpoint leaves no public address in the current answer).
                // Through an egress proxy the fallback needs no address: the proxy resolves.
                let settled = prev.path == ActivePath::Private && !private_ok.is_empty();
                let public = if settled || self.cfg.public_via_proxy {
                    Vec::new()
                } else {
                    self.public_path(res).await
                };
                let fallback = self.cfg.public_via_proxy || !public.is_empty();
                let back = !private_ok.is_empty()
                    && match prev.path {
                        // Already private, or the first decision: no need to wait.
                        ActivePath::Private => true,
                        _ if prev.resolution.is_none() => true,
                        // No other path to stay on: waiting would only hold data.
                        _ if !fallback => true,
                        _ => healthy_since
                            .is_some_and(|t| now.duration_since(t) >= self.cfg.return_after),
                    };
                if back {
                    (ActivePath::Private, private_ok.to_vec())
                } else if fallback {
                    (ActivePath::Public, public)
                } else {
                    (ActivePath::None, Vec::new())
                }
            }
        }
    }

    /// Counts time on the fallback and path changes, logs them; returns since when traffic is
    /// on the public fallback, if it is.
    fn note_path(
        &self,
        prev: &Snapshot,
        path: ActivePath,
        approved: &[IpAddr],
        last_tick: &mut Instant,
        now: Instant,
    ) -> Option<SystemTime> {
        // Time on the fallback.
        let since_last = now.duration_since(*last_tick);
        *last_tick = now;
        if prev.path == ActivePath::Public && self.cfg.mode == Mode::Prefer {
            self.metrics
                .on_fallback_seconds
                .inc_by(since_last.as_secs_f64());
        }
        let fallback_since = match (path, self.cfg.mode) {
            (ActivePath::Public, Mode::Prefer) => prev.fallback_since.or(Some(SystemTime::now())),
            _ => None,
        };
        if path != prev.path {
            self.metrics.set_path(path);
            if self.cfg.mode == Mode::Prefer
                && (path == ActivePath::Public || prev.path == ActivePath::Public)
            {
                self.metrics.fallback_transitions.inc();
            }
            match path {
                ActivePath::Public
                    if self.cfg.mode == Mode::Prefer && self.cfg.public_via_proxy =>
                {
                    tracing::error!(host = %self.host, "ON PUBLIC FALLBACK: the private endpoint is not usable; sending through the egress proxy to the public endpoint (private-link prefer)")
                }
                ActivePath::Public if self.cfg.mode == Mode::Prefer => {
                    tracing::error!(host = %self.host, addresses = ?approved, "ON PUBLIC FALLBACK: the private endpoint is not usable; sending over the public endpoint (private-link prefer)")
                }
                ActivePath::Private => {
                    tracing::info!(host = %self.host, addresses = ?approved, "traffic uses the private endpoint")
                }
                ActivePath::None => {
                    tracing::error!(host = %self.host, "no usable upstream address: holding data in the queue")
                }
                ActivePath::Public => {}
            }
        }
        fallback_since
    }

    /// Public addresses for the fallback (see [`Self::public_addresses`]), remembered so a later
    /// answer without any still leaves the last known public endpoint.
    async fn public_path(&self, res: &Resolution) -> Vec<IpAddr> {
        let public = self.public_addresses(res).await;
        let mut last = self.last_public.lock().unwrap_or_else(|p| p.into_inner());
        if public.is_empty() {
            last.clone()
        } else {
            last.clone_from(&public);
            public
        }
    }

    /// Public addresses for the fallback: the public part of the main answer, else the public
    /// resolver's answer.
    async fn public_addresses(&self, res: &Resolution) -> Vec<IpAddr> {
        let public: Vec<IpAddr> = res
            .addresses
            .iter()
            .copied()
            .filter(|a| !self.cfg.rules.is_private(*a))
            .collect();
        if !public.is_empty() {
            return public;
        }
        match &self.public_verifier {
            Some(v) => {
                let r = v.resolve(&self.host).await;
                r.addresses
                    .into_iter()
                    .filter(|a| !self.cfg.rules.is_private(*a))
                    .collect()
            }
            None => Vec::new(),
        }
    }

    /// Waits (bounded) for the first verification, then returns the approved addresses.
    async fn approved(&self, wait: Duration) -> Vec<IpAddr> {
        let mut rx = self.verified.subscribe();
        let _ = tokio::time::timeout(wait, rx.wait_for(|g| *g > 0)).await;
        self.snapshot().approved
    }
}

fn probe_error(p: &Probe) -> Option<(&'static str, String)> {
    match &p.tcp {
        Err(e) => Some(("tcp", e.detail.clone())),
        Ok(_) => match &p.tls {
            Some(Err(e)) => Some(("tls", e.detail.clone())),
            _ => None,
        },
    }
}

fn describe(r: &Resolution) -> String {
    let chain: Vec<&str> = r.chain.iter().map(|h| h.target.as_str()).collect();
    let addrs: Vec<String> = r.addresses.iter().map(ToString::to_string).collect();
    format!(
        "[{}{}{}] ({})",
        chain.join(" > "),
        if chain.is_empty() { "" } else { " > " },
        addrs.join(", "),
        r.verdict
    )
}

/// The upstream client's resolver: only the upstream host, only approved addresses.
pub struct PinnedResolver {
    link: Arc<PrivateLink>,
}

impl reqwest::dns::Resolve for PinnedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let link = self.link.clone();
        let name = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        Box::pin(async move {
            if name != link.host.trim_end_matches('.').to_ascii_lowercase() {
                return Err(format!(
                    "promlink's upstream client connects only to {}, not {name}",
                    link.host
                )
                .into());
            }
            let approved = link.approved(link.cfg.probe_timeout * 3).await;
            if approved.is_empty() {
                let s = link.snapshot();
                let why = s.resolution.map_or_else(
                    || "not verified yet".to_string(),
                    |r| format!("verdict {}: {}", r.verdict, r.detail),
                );
                return Err(format!(
                    "no approved address for {name} under private-link {} ({why})",
                    s.mode.as_str()
                )
                .into());
            }
            let addrs: reqwest::dns::Addrs =
                Box::new(approved.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}
