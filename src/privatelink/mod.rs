//! Private Link awareness: is the upstream really reached through the Azure private endpoint?
//!
//! - [`verdict`]: what a DNS answer means ([`Verdict`]), private address rules, privatelink zones.
//! - [`verify`]: resolves the DCE host with a configurable resolver (hickory), recording the
//!   CNAME chain, addresses and TTLs, and classifies the answer.

pub mod metrics;
pub mod path;
pub mod probe;
pub mod verdict;
pub mod verify;

pub use metrics::Metrics;
pub use path::{ActivePath, PinnedResolver, PrivateLink, Snapshot};
pub use verdict::{AddressRules, Verdict};
pub use verify::{CnameHop, Resolution, Verifier, VerifierConfig, VerifyError};

/// The path policy, after the firewall options Azure documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Firewall option (b): only the private path. Never send a byte to an address that is not
    /// verified private; hold data and alert instead.
    Require,
    /// Firewall option (a): the private path when it verifies and connects, else fall back to
    /// the public endpoint (alerting while on it), and return automatically.
    Prefer,
    /// No verification (still reported by metrics and doctor).
    Off,
}

impl Mode {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Require => "require",
            Mode::Prefer => "prefer",
            Mode::Off => "off",
        }
    }
}

/// Private Link settings, resolved by `crate::config`.
#[derive(Clone, Debug)]
pub struct PrivateLinkConfig {
    /// The path policy.
    pub mode: Mode,
    /// DNS servers to verify with; empty means the system configuration (`/etc/resolv.conf`).
    pub dns_servers: Vec<std::net::SocketAddr>,
    /// DNS servers that give the public answer, for `prefer`'s fallback when the main resolver
    /// has no usable answer (e.g. NXDOMAIN in the private zone); empty: use only the main answer.
    pub public_dns_servers: Vec<std::net::SocketAddr>,
    /// Which addresses count as private, and which are the expected endpoint.
    pub rules: AddressRules,
    /// Shortest time between verifications (a TTL of 0 or 5 s still waits this long).
    pub reverify_min: std::time::Duration,
    /// Longest time between verifications (a TTL of a day still re-verifies this often).
    pub reverify_max: std::time::Duration,
    /// `prefer` only: how long the private path must verify and connect without a failure before
    /// traffic returns to it from the public fallback (hysteresis against flapping).
    pub return_after: std::time::Duration,
    /// Timeout of one DNS query, TCP connect or TLS handshake probe.
    pub probe_timeout: std::time::Duration,
    /// `prefer` only: an egress proxy applies to the upstream host, so the public fallback goes
    /// through it (the proxy resolves the name) and needs no public DNS answer here.
    pub public_via_proxy: bool,
}
