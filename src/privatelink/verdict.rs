//! What a DNS answer for the DCE host means, in the terms of Azure's Private Link documentation.
//!
//! With an Azure Monitor Private Link Scope and a private endpoint, the DCE's public name has a
//! CNAME into a `privatelink` zone; a resolver with that private zone linked answers the private
//! endpoint's IP, one without it follows public DNS to a public IP, and one with the zone but no
//! record for this DCE answers NXDOMAIN
//! (<https://learn.microsoft.com/azure/azure-monitor/logs/private-link-configure>). Each outcome
//! gets a [`Verdict`] with a stable name used in metrics, logs, alerts and `promlink doctor`.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// The outcome of verifying the upstream's DNS answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// The chain passes through a privatelink zone and every address is private (and, when
    /// expected endpoint IPs are configured, one of them).
    Private,
    /// Public addresses: the private DNS zone is not linked, or a forwarder is missing.
    Public,
    /// The name does not exist (or has no address): the DCE is not in the AMPLS, or the private
    /// endpoint's DNS zone group is missing.
    Nxdomain,
    /// Private addresses, but not the configured endpoint IPs, or not reached through a
    /// privatelink zone.
    UnexpectedAddress,
    /// Some private and some public addresses.
    Mixed,
    /// The resolver could not answer (unreachable, timeout, SERVFAIL, REFUSED).
    DnsError,
}

impl Verdict {
    /// Every verdict, in a stable order (for state-set metrics).
    pub const ALL: [Verdict; 6] = [
        Verdict::Private,
        Verdict::Public,
        Verdict::Nxdomain,
        Verdict::UnexpectedAddress,
        Verdict::Mixed,
        Verdict::DnsError,
    ];

    /// The stable name, as used in metrics, logs, alerts and doctor output.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Private => "private",
            Verdict::Public => "public",
            Verdict::Nxdomain => "nxdomain",
            Verdict::UnexpectedAddress => "unexpected-address",
            Verdict::Mixed => "mixed",
            Verdict::DnsError => "dns-error",
        }
    }

    /// What the verdict means, one sentence.
    pub fn meaning(self) -> &'static str {
        match self {
            Verdict::Private => "the name resolves through the privatelink zone to private endpoint addresses",
            Verdict::Public => "the name resolves to public addresses: this resolver does not see the privatelink private DNS zone",
            Verdict::Nxdomain => "the name does not resolve: the private DNS zone has no record for this DCE",
            Verdict::UnexpectedAddress => "the name resolves to private addresses that are not the expected private endpoint",
            Verdict::Mixed => "the name resolves to both private and public addresses",
            Verdict::DnsError => "the DNS resolver did not answer (unreachable, timeout, SERVFAIL or REFUSED)",
        }
    }

    /// The documented fix, as an operator checklist.
    pub fn remediation(self) -> &'static str {
        match self {
            Verdict::Private => "nothing to do",
            Verdict::Public => "link the private DNS zone privatelink.monitor.azure.com to the VNet the cluster uses (private endpoint > DNS configuration > zone group); with custom DNS servers (on-premises, VPN/ExpressRoute) add a conditional forwarder for privatelink.monitor.azure.com (and monitor.azure.com) to Azure DNS 168.63.129.16 through a DNS forwarder or Azure DNS Private Resolver inside the VNet; check that an Azure Monitor Private Link Scope (AMPLS) with a private endpoint exists",
            Verdict::Nxdomain => "add the DCE to the Azure Monitor Private Link Scope (AMPLS > Azure Monitor Resources > Add), and make sure the private endpoint has its DNS zone group so the records are written into privatelink.monitor.azure.com; remember that linking an empty privatelink zone breaks resolution for every client of that DNS, and that one AMPLS per DNS is supported",
            Verdict::UnexpectedAddress => "compare the private endpoint's network interface IPs with the answer: another AMPLS may have overwritten the zone's records (one AMPLS per DNS), the zone may be stale, or a hosts file or custom A record bypasses the privatelink zone; fix the records or update --expected-endpoint-ip",
            Verdict::Mixed => "a record set holds both private and public addresses: remove the public records from the private zone, or check split-horizon DNS forwarding",
            Verdict::DnsError => "check that the DNS servers (--dns-server, or /etc/resolv.conf) are reachable from the cluster and that forwarders for privatelink.monitor.azure.com to 168.63.129.16 work",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Private Link DNS zones (metrics ingestion, configuration, Log Analytics), all clouds.
pub const PRIVATELINK_ZONES: [&str; 12] = [
    "privatelink.monitor.azure.com",
    "privatelink.monitor.azure.us",
    "privatelink.monitor.azure.cn",
    "privatelink.ods.opinsights.azure.com",
    "privatelink.ods.opinsights.azure.us",
    "privatelink.ods.opinsights.azure.cn",
    "privatelink.oms.opinsights.azure.com",
    "privatelink.oms.opinsights.azure.us",
    "privatelink.oms.opinsights.azure.cn",
    "privatelink.agentsvc.azure-automation.net",
    "privatelink.agentsvc.azure-automation.us",
    "privatelink.agentsvc.azure-automation.cn",
];

/// The public suffixes of the Azure Monitor workspaces' query endpoints, whose Private Link
/// zone is per region: `privatelink.<region>.prometheus.monitor.azure.com` (and `.us`, `.cn`).
pub const QUERY_ZONE_SUFFIXES: [&str; 3] = [
    "prometheus.monitor.azure.com",
    "prometheus.monitor.azure.us",
    "prometheus.monitor.azure.cn",
];

/// The privatelink zone `name` belongs to, if any, as written in `name` (`x.privatelink.monitor.azure.com.`
/// -> `privatelink.monitor.azure.com`; `ws.privatelink.eastus.prometheus.monitor.azure.com` ->
/// `privatelink.eastus.prometheus.monitor.azure.com`).
pub fn privatelink_zone(name: &str) -> Option<&str> {
    let name = name.trim_end_matches('.');
    let n = name.to_ascii_lowercase();
    // (Lowercasing ASCII keeps every byte offset, so `name[at..]` is the zone as written.)
    let zone_at = |z: &str| {
        if n == z {
            Some(0)
        } else {
            n.ends_with(&format!(".{z}")).then(|| n.len() - z.len())
        }
    };
    if let Some(at) = PRIVATELINK_ZONES.iter().find_map(|z| zone_at(z)) {
        return Some(&name[at..]);
    }
    // privatelink.<region>.prometheus.monitor.azure.<tld>
    QUERY_ZONE_SUFFIXES.iter().find_map(|suffix| {
        let rest = n.strip_suffix(suffix)?.strip_suffix('.')?;
        let (before, region) = rest.rsplit_once('.')?;
        let at = if before == "privatelink" {
            0
        } else {
            before
                .strip_suffix("privatelink")?
                .ends_with('.')
                .then(|| before.len() - "privatelink".len())?
        };
        (!region.is_empty()).then(|| &name[at..])
    })
}

/// Which addresses count as private.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressRules {
    /// Extra private ranges beyond RFC 1918, RFC 6598 and IPv6 ULA (e.g. `127.0.0.2/32` in tests).
    pub private_cidrs: Vec<IpNet>,
    /// When not empty, a private answer must lie in these (the private endpoint's IPs).
    pub expected_endpoints: Vec<IpNet>,
}

impl AddressRules {
    /// RFC 1918, RFC 6598 (100.64.0.0/10), IPv6 ULA (fc00::/7), or a configured private range.
    pub fn is_private(&self, ip: IpAddr) -> bool {
        let builtin = match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                v4.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64)
            }
            IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
        };
        builtin || self.private_cidrs.iter().any(|n| n.contains(&ip))
    }

    fn expected(&self, ip: IpAddr) -> bool {
        self.expected_endpoints.is_empty()
            || self.expected_endpoints.iter().any(|n| n.contains(&ip))
    }
}

/// Classifies a successful resolution: `chain` is the CNAME targets followed (in order) and
/// `addresses` the final A/AAAA answers. Returns the verdict and a one-line explanation.
pub fn classify(
    host: &str,
    chain: &[String],
    addresses: &[IpAddr],
    rules: &AddressRules,
) -> (Verdict, String) {
    if addresses.is_empty() {
        return (Verdict::Nxdomain, format!("{host} has no A or AAAA record"));
    }
    let zone = std::iter::once(host)
        .chain(chain.iter().map(String::as_str))
        .find_map(privatelink_zone);
    let private: Vec<IpAddr> = addresses
        .iter()
        .copied()
        .filter(|a| rules.is_private(*a))
        .collect();
    let list = |v: &[IpAddr]| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if private.is_empty() {
        let via = zone
            .map(|z| format!(" (the chain passes through {z}, but public DNS answered it)"))
            .unwrap_or_default();
        return (
            Verdict::Public,
            format!(
                "{host} resolves to public address(es) {}{via}",
                list(addresses)
            ),
        );
    }
    if private.len() != addresses.len() {
        let public: Vec<IpAddr> = addresses
            .iter()
            .copied()
            .filter(|a| !rules.is_private(*a))
            .collect();
        return (
            Verdict::Mixed,
            format!(
                "{host} resolves to private {} and public {}",
                list(&private),
                list(&public)
            ),
        );
    }
    let unexpected: Vec<IpAddr> = addresses
        .iter()
        .copied()
        .filter(|a| !rules.expected(*a))
        .collect();
    if !unexpected.is_empty() {
        return (
            Verdict::UnexpectedAddress,
            format!(
                "{host} resolves to {}, not the expected private endpoint address(es)",
                list(&unexpected)
            ),
        );
    }
    match zone {
        Some(z) => (Verdict::Private, format!("{host} resolves through {z} to private address(es) {}", list(addresses))),
        // A hosts file or custom A record: private, but not the Private Link DNS integration.
        None if !rules.expected_endpoints.is_empty() => (
            Verdict::Private,
            format!("{host} resolves to the expected private endpoint {} without a privatelink CNAME (hosts file or custom record)", list(addresses)),
        ),
        None => (
            Verdict::UnexpectedAddress,
            format!(
                "{host} resolves to private address(es) {} but not through a privatelink zone (a hosts file or custom A record?); set --expected-endpoint-ip to accept it",
                list(addresses)
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(s: &[&str]) -> Vec<IpAddr> {
        s.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn private_ranges() {
        let r = AddressRules {
            private_cidrs: vec!["127.0.0.2/32".parse().unwrap()],
            ..AddressRules::default()
        };
        for a in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "fd00::1",
            "fc00::1",
            "127.0.0.2",
        ] {
            assert!(r.is_private(a.parse().unwrap()), "{a}");
        }
        for a in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "20.42.0.1",
            "2001:db8::1",
            "127.0.0.3",
            "fe80::1",
        ] {
            assert!(!r.is_private(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn verdict_table() {
        let host = "mydce-ab12.eastus-1.metrics.ingest.monitor.azure.com";
        let pl =
            vec!["mydce-ab12.eastus-1.metrics.ingest.privatelink.monitor.azure.com".to_string()];
        let none = AddressRules::default();
        let expect = AddressRules {
            expected_endpoints: vec!["10.0.0.5/32".parse().unwrap()],
            ..AddressRules::default()
        };
        let cases: Vec<(&[String], Vec<IpAddr>, &AddressRules, Verdict)> = vec![
            (&pl, ips(&["10.0.0.5"]), &none, Verdict::Private),
            (&pl, ips(&["10.0.0.5"]), &expect, Verdict::Private),
            (&pl, ips(&["10.0.0.6"]), &expect, Verdict::UnexpectedAddress),
            (&pl, ips(&["20.42.1.1"]), &none, Verdict::Public),
            (&[], ips(&["20.42.1.1"]), &none, Verdict::Public),
            (&pl, ips(&["10.0.0.5", "20.42.1.1"]), &none, Verdict::Mixed),
            (&pl, vec![], &none, Verdict::Nxdomain),
            (&[], ips(&["10.0.0.5"]), &none, Verdict::UnexpectedAddress),
            (&[], ips(&["10.0.0.5"]), &expect, Verdict::Private),
        ];
        for (chain, addrs, rules, want) in cases {
            let (got, why) = classify(host, chain, &addrs, rules);
            assert_eq!(got, want, "{chain:?} {addrs:?}: {why}");
            assert!(why.contains(host), "{why}");
        }
    }

    #[test]
    fn sovereign_zones_are_recognized() {
        for n in [
            "x.eastus-1.metrics.ingest.privatelink.monitor.azure.us.",
            "X.PRIVATELINK.MONITOR.AZURE.CN",
            "ws.privatelink.ods.opinsights.azure.com",
        ] {
            assert!(privatelink_zone(n).is_some(), "{n}");
        }
        assert_eq!(privatelink_zone("notprivatelink.monitor.azure.com"), None);
        assert_eq!(privatelink_zone("x.ingest.monitor.azure.com"), None);
        // The workspaces' query endpoints: a zone per region.
        assert_eq!(
            privatelink_zone("ws-1.privatelink.eastus.prometheus.monitor.azure.com."),
            Some("privatelink.eastus.prometheus.monitor.azure.com")
        );
        assert_eq!(
            privatelink_zone("WS.PRIVATELINK.USGOVVIRGINIA.PROMETHEUS.MONITOR.AZURE.US"),
            Some("PRIVATELINK.USGOVVIRGINIA.PROMETHEUS.MONITOR.AZURE.US")
        );
        assert_eq!(
            privatelink_zone("ws-1.eastus.prometheus.monitor.azure.com"),
            None
        );
        assert_eq!(
            privatelink_zone("ws.notprivatelink.eastus.prometheus.monitor.azure.com"),
            None
        );
    }

    #[test]
    fn names_are_stable_and_distinct() {
        let names: std::collections::BTreeSet<&str> =
            Verdict::ALL.iter().map(|v| v.as_str()).collect();
        assert_eq!(names.len(), 6);
        assert_eq!(Verdict::UnexpectedAddress.to_string(), "unexpected-address");
    }
}
