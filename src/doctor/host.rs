//! The `dns` and `connect` checks of one host: the DNS verdict graded by what the host is to
//! promlink and the Private Link policy, and the TCP and TLS probes of its addresses.

use std::net::SocketAddr;
use std::time::Duration;

use super::azure::{self, Role, Target};
use super::report::{Check, Status};
use super::Doctor;
use crate::privatelink::probe::{FailureKind, Probe};
use crate::privatelink::{Mode, Resolution, Verdict};

impl Doctor<'_> {
    pub(super) fn dns_check(&self, t: &Target, r: &Resolution) -> Check {
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

    pub(super) fn connect_check(
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
