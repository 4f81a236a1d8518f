//! Resolves the DCE host name and classifies the answer: is it reached through Private Link?
//!
//! Azure's own check for a private endpoint is "resolve the name from a client; it must give the
//! private IP, not a public one"
//! (<https://learn.microsoft.com/azure/azure-monitor/logs/private-link-configure>). The
//! [`Verifier`] does that with a stub resolver (hickory) aimed at the configured DNS servers, or
//! the system's (`/etc/resolv.conf`), and hands a [`Resolution`] to the path policy, metrics and
//! `promlink doctor`: the CNAME chain exactly as answered, the A and AAAA addresses, the smallest
//! TTL and a [`Verdict`] from [`classify`].
//!
//! Decisions:
//! - **No caching.** promlink re-verifies on TTL expiry and after connection failures and must see
//!   a DNS change at once, so every [`Verifier::resolve`] builds a fresh name server pool (no
//!   response cache, no remembered server state) and sends real queries.
//! - **The name is always fully qualified**: no search domains or `ndots` games, hence no query
//!   for `<dce>.<cluster search domain>` that a misconfigured zone could answer.
//! - A and AAAA are queried concurrently; CNAMEs are followed when a server answers only part of
//!   the chain (at most [`MAX_CHASE`] queries per family). NXDOMAIN anywhere in the chain, or
//!   NOERROR without any address, is [`Verdict::Nxdomain`] naming the missing name. SERVFAIL,
//!   REFUSED, timeouts and unreachable servers are [`Verdict::DnsError`].
//! - Time is bounded: each query gets [`ATTEMPTS`] tries of `timeout` each (truncated UDP answers
//!   are retried over TCP by hickory), and an outer deadline guards every query.
//! - When one family has addresses and the other failed, the verdict is taken from the addresses
//!   found (promlink connects only to verified addresses) and the detail notes the failure.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolverOpts, ServerOrderingStrategy,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::xfer::{DnsHandle, FirstAnswer};
use hickory_resolver::net::{DnsError, NetError, NoRecords, RetryDnsHandle};
use hickory_resolver::proto::op::{DnsRequestOptions, Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::{NameServerPool, PoolContext, TlsConfig};

use super::verdict::{self, classify, AddressRules, Verdict};

/// Tries per query (the first one included); each try waits at most the configured timeout.
pub const ATTEMPTS: usize = 2;

/// Most queries per address family for one resolution (partial CNAME chains are followed).
pub const MAX_CHASE: usize = 8;

/// Most CNAME hops accepted in one chain (loops end here too).
const MAX_HOPS: usize = 16;

/// How the [`Verifier`] resolves.
#[derive(Clone, Debug)]
pub struct VerifierConfig {
    /// DNS servers, plain DNS over UDP with TCP fallback; empty means the system configuration
    /// (`/etc/resolv.conf`), e.g. `[10.0.0.4:53]`.
    pub servers: Vec<SocketAddr>,
    /// Which addresses count as private, and which are the expected endpoint.
    pub rules: AddressRules,
    /// Timeout of one query try, e.g. 2 s; a resolution takes at most about
    /// `timeout x ATTEMPTS` per query when a server does not answer.
    pub timeout: Duration,
}

/// One CNAME record of the chain, as answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CnameHop {
    /// The owner name (no trailing dot).
    pub name: String,
    /// The canonical name it points to (no trailing dot).
    pub target: String,
    /// The record's TTL, seconds.
    pub ttl: u32,
}

/// The outcome of one verification of the DCE host name.
#[derive(Clone, Debug)]
pub struct Resolution {
    /// The host name verified.
    pub host: String,
    /// The CNAME chain from `host`, in order, as answered.
    pub chain: Vec<CnameHop>,
    /// The A and AAAA answers for the end of the chain, sorted, without duplicates.
    pub addresses: Vec<IpAddr>,
    /// The smallest TTL over the chain and the address records; `None` when there is no
    /// address (errors and NXDOMAIN).
    pub ttl: Option<Duration>,
    /// What the answer means.
    pub verdict: Verdict,
    /// One line: why, from [`classify`] or the error.
    pub detail: String,
    /// Which resolver was asked, e.g. `127.0.0.1:5353` or
    /// `system (/etc/resolv.conf: 10.96.0.10:53)`.
    pub resolver: String,
    /// When the resolution started.
    pub at: SystemTime,
}

impl Resolution {
    /// Same chain targets and same address set, ignoring TTLs (and the time and detail).
    pub fn same_answer(&self, other: &Resolution) -> bool {
        let targets = |r: &Resolution| -> Vec<String> {
            r.chain
                .iter()
                .map(|h| h.target.trim_end_matches('.').to_ascii_lowercase())
                .collect()
        };
        targets(self) == targets(other) && self.addresses == other.addresses
    }

    /// The privatelink zone the host or its chain passes through, if any.
    pub fn privatelink_zone(&self) -> Option<&str> {
        std::iter::once(self.host.as_str())
            .chain(self.chain.iter().map(|h| h.target.as_str()))
            .find_map(verdict::privatelink_zone)
    }
}

/// Why a [`Verifier`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The system resolver configuration could not be read.
    #[error("cannot read the system DNS configuration (/etc/resolv.conf)")]
    SystemConfig(#[source] NetError),
    /// The system resolver configuration names no server.
    #[error("the system DNS configuration (/etc/resolv.conf) has no nameserver")]
    NoSystemServers,
    /// A zero query timeout would fail every query.
    #[error("the DNS query timeout must be greater than zero")]
    ZeroTimeout,
}

/// Resolves and classifies the DCE host name; cheap to clone, no caching between calls.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    servers: Vec<NameServerConfig>,
    label: String,
    rules: AddressRules,
    timeout: Duration,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("resolver", &self.inner.label)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Builds a verifier. With no servers configured, reads the system configuration once,
    /// now (its search domains and options are ignored: the DCE name is always fully qualified).
    ///
    /// # Errors
    /// When the system configuration is needed and cannot be read or names no server, or the
    /// timeout is zero.
    pub fn new(cfg: VerifierConfig) -> Result<Self, VerifyError> {
        if cfg.timeout.is_zero() {
            return Err(VerifyError::ZeroTimeout);
        }
        let (servers, label) = if cfg.servers.is_empty() {
            let (conf, _opts) = hickory_resolver::system_conf::read_system_conf()
                .map_err(VerifyError::SystemConfig)?;
            let servers = conf.name_servers().to_vec();
            if servers.is_empty() {
                return Err(VerifyError::NoSystemServers);
            }
            let list = servers
                .iter()
                .map(|s| {
                    let port = s.connections.first().map_or(53, |c| c.port);
                    SocketAddr::new(s.ip, port).to_string()
                })
                .collect::<Vec<_>>()
                .join(", ");
            (servers, format!("system (/etc/resolv.conf: {list})"))
        } else {
            let servers = cfg
                .servers
                .iter()
                .map(|a| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = a.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = a.port();
                    NameServerConfig::new(a.ip(), true, vec![udp, tcp])
                })
                .collect();
            let label = cfg
                .servers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            (servers, label)
        };
        Ok(Verifier {
            inner: Arc::new(Inner {
                servers,
                label,
                rules: cfg.rules,
                timeout: cfg.timeout,
            }),
        })
    }

    /// Which resolver this verifier asks, as shown in [`Resolution::resolver`].
    pub fn resolver(&self) -> &str {
        &self.inner.label
    }

    /// Resolves `host` (A and AAAA, following CNAMEs) and classifies the answer.
    ///
    /// Never fails and never panics: resolver failures become [`Verdict::DnsError`] and missing
    /// names [`Verdict::Nxdomain`], with the reason in [`Resolution::detail`].
    pub async fn resolve(&self, host: &str) -> Resolution {
        let at = SystemTime::now();
        let inner = &self.inner;
        let mut res = Resolution {
            host: host.to_string(),
            chain: Vec::new(),
            addresses: Vec::new(),
            ttl: None,
            verdict: Verdict::DnsError,
            detail: String::new(),
            resolver: inner.label.clone(),
            at,
        };
        let display = host.trim_end_matches('.');

        if let Ok(ip) = display.parse::<IpAddr>() {
            let (verdict, detail) = classify(display, &[], &[ip], &inner.rules);
            res.addresses = vec![ip];
            res.verdict = verdict;
            res.detail = detail;
            res.resolver = "none (address literal)".into();
            return res;
        }
        let name = match Name::from_ascii(display) {
            Ok(mut n) if !display.is_empty() => {
                n.set_fqdn(true);
                n
            }
            Ok(_) => {
                res.detail = "empty host name".into();
                return res;
            }
            Err(e) => {
                res.detail = format!("{display:?} is not a valid DNS name: {e}");
                return res;
            }
        };

        let handle = match self.handle() {
            Ok(h) => h,
            Err(e) => {
                res.detail = format!("cannot set up the DNS client: {e}");
                return res;
            }
        };
        let (v4, v6) = tokio::join!(
            chase(&handle, name.clone(), RecordType::A, inner.timeout),
            chase(&handle, name, RecordType::AAAA, inner.timeout),
        );
        combine(display, v4, v6, &inner.rules, &mut res);
        res
    }

    /// A fresh pool per resolution: nothing cached, no server state carried over.
    fn handle(&self) -> Result<RetryDnsHandle<NameServerPool<TokioRuntimeProvider>>, NetError> {
        let mut opts = ResolverOpts::default();
        opts.timeout = self.inner.timeout;
        opts.attempts = ATTEMPTS;
        opts.cache_size = 0;
        opts.ndots = 0;
        opts.server_ordering_strategy = ServerOrderingStrategy::UserProvidedOrder;
        let cx = Arc::new(PoolContext::new(opts, TlsConfig::new()?));
        let pool = NameServerPool::from_config(
            self.inner.servers.iter().cloned(),
            cx,
            TokioRuntimeProvider::default(),
        );
        // hickory's `attempts` counts retries after the first try.
        Ok(RetryDnsHandle::new(pool, ATTEMPTS - 1))
    }
}

/// How the queries for one address family ended.
#[derive(Debug)]
enum End {
    /// Addresses found.
    Addresses,
    /// The name exists but has no record of this type.
    NoData(String),
    /// The name does not exist.
    NxDomain(String),
    /// No usable answer.
    Error(String),
}

#[derive(Debug)]
struct Family {
    chain: Vec<CnameHop>,
    addrs: Vec<(IpAddr, u32)>,
    end: End,
}

fn show(name: &Name) -> String {
    let s = name.to_ascii();
    s.trim_end_matches('.').to_string()
}

/// Queries `name`/`qtype`, following CNAMEs a server left unanswered.
async fn chase<H: DnsHandle>(
    handle: &H,
    name: Name,
    qtype: RecordType,
    timeout: Duration,
) -> Family {
    let mut fam = Family {
        chain: Vec::new(),
        addrs: Vec::new(),
        end: End::Error(String::new()),
    };
    let mut cur = name;
    // Guards against a stuck query even if hickory's own deadlines misbehave.
    let deadline = timeout * (ATTEMPTS as u32 + 1);
    for _ in 0..MAX_CHASE {
        let query = Query::query(cur.clone(), qtype);
        let sent = handle
            .lookup(query, DnsRequestOptions::default())
            .first_answer();
        let response = match tokio::time::timeout(deadline, sent).await {
            Err(_) => {
                fam.end = End::Error(format!(
                    "{qtype} query for {} timed out after {deadline:?}",
                    show(&cur)
                ));
                return fam;
            }
            Ok(Err(e)) => {
                fam.end = from_error(e, &cur, qtype, timeout);
                return fam;
            }
            Ok(Ok(r)) => r,
        };
        let before = fam.chain.len();
        // Walk the chain from the queried name, in answer order or not.
        loop {
            let next = response.answers.iter().find_map(|r| match &r.data {
                RData::CNAME(c) if r.name == cur => Some((show(&r.name), c.0.clone(), r.ttl)),
                _ => None,
            });
            let Some((owner, target, ttl)) = next else {
                break;
            };
            if fam.chain.len() >= MAX_HOPS {
                fam.end = End::Error(format!(
                    "CNAME chain from {} is longer than {MAX_HOPS} hops (a loop?)",
                    show(&cur)
                ));
                return fam;
            }
            fam.chain.push(CnameHop {
                name: owner,
                target: show(&target),
                ttl,
            });
            cur = target;
        }
        for r in response.answers.iter().filter(|r| r.name == cur) {
            match (&r.data, qtype) {
                (RData::A(a), RecordType::A) => fam.addrs.push((IpAddr::V4(a.0), r.ttl)),
                (RData::AAAA(a), RecordType::AAAA) => fam.addrs.push((IpAddr::V6(a.0), r.ttl)),
                _ => {}
            }
        }
        if !fam.addrs.is_empty() {
            fam.end = End::Addresses;
            return fam;
        }
        if response.response_code == ResponseCode::NXDomain {
            fam.end = End::NxDomain(show(&cur));
            return fam;
        }
        if fam.chain.len() == before {
            fam.end = End::NoData(show(&cur));
            return fam;
        }
        // The answer stopped at a CNAME target: ask for the target itself.
    }
    fam.end = End::Error(format!(
        "gave up following the CNAME chain at {} after {MAX_CHASE} queries",
        show(&cur)
    ));
    fam
}

fn from_error(e: NetError, cur: &Name, qtype: RecordType, timeout: Duration) -> End {
    let name = show(cur);
    match e {
        NetError::Dns(DnsError::NoRecordsFound(NoRecords { response_code, .. })) => {
            match response_code {
                ResponseCode::NXDomain => End::NxDomain(name),
                ResponseCode::NoError => End::NoData(name),
                code => End::Error(format!(
                    "the resolver answered {} for {qtype} {name}",
                    rcode(code)
                )),
            }
        }
        NetError::Dns(DnsError::ResponseCode(code)) => End::Error(format!(
            "the resolver answered {} for {qtype} {name}",
            rcode(code)
        )),
        NetError::Timeout => End::Error(format!(
            "no answer for {qtype} {name} ({ATTEMPTS} tries of {timeout:?} timed out)"
        )),
        other => End::Error(format!(
            "{qtype} query for {name} failed: {}",
            one_line(&other.to_string())
        )),
    }
}

/// The mnemonic operators know from `dig`, e.g. `SERVFAIL`.
fn rcode(code: ResponseCode) -> String {
    let m = match code {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        other => return format!("rcode {} ({other})", u16::from(other)),
    };
    m.to_string()
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Merges the A and AAAA outcomes into `res`.
fn combine(host: &str, v4: Family, v6: Family, rules: &AddressRules, res: &mut Resolution) {
    let chain = if v4.chain.is_empty() {
        v6.chain.clone()
    } else {
        v4.chain.clone()
    };
    let mut addresses: Vec<IpAddr> = v4.addrs.iter().chain(&v6.addrs).map(|a| a.0).collect();
    addresses.sort();
    addresses.dedup();
    res.chain = chain;

    let via = |name: &str| {
        if name.eq_ignore_ascii_case(host) {
            String::new()
        } else {
            format!(" (reached from {host} through the CNAME chain)")
        }
    };
    let error = |f: &Family| match &f.end {
        End::Error(e) => Some(e.clone()),
        _ => None,
    };
    let nx = |f: &Family| match &f.end {
        End::NxDomain(n) => Some(n.clone()),
        _ => None,
    };

    if !addresses.is_empty() {
        let ttl = v4
            .chain
            .iter()
            .chain(&v6.chain)
            .map(|h| h.ttl)
            .chain(v4.addrs.iter().chain(&v6.addrs).map(|a| a.1))
            .min()
            .unwrap_or(0);
        let targets: Vec<String> = res.chain.iter().map(|h| h.target.clone()).collect();
        let (verdict, mut detail) = classify(host, &targets, &addresses, rules);
        if let Some(e) = error(&v4).or_else(|| error(&v6)) {
            detail.push_str(&format!("; note: {e}"));
        }
        res.addresses = addresses;
        res.ttl = Some(Duration::from_secs(u64::from(ttl)));
        res.verdict = verdict;
        res.detail = detail;
    } else if let Some(name) = nx(&v4).or_else(|| nx(&v6)) {
        res.verdict = Verdict::Nxdomain;
        res.detail = format!("{name} does not exist (NXDOMAIN){}", via(&name));
    } else if let Some(e) = error(&v4).or_else(|| error(&v6)) {
        res.verdict = Verdict::DnsError;
        res.detail = format!("{host}: {e}");
    } else {
        let name = match (&v4.end, &v6.end) {
            (End::NoData(n), _) | (_, End::NoData(n)) => n.clone(),
            _ => host.to_string(),
        };
        res.verdict = Verdict::Nxdomain;
        res.detail = format!(
            "{name} has no A or AAAA record (NOERROR without data){}",
            via(&name)
        );
    }
}

#[cfg(test)]
mod tests;
