//! Can this address of the upstream be reached, and does it present the right certificate?
//!
//! [`probe`] connects to one address of a host in two steps, so a report can say *where* the
//! path breaks:
//! 1. TCP: a plain connect under a timeout. A refusal (RST) means something answered but nothing
//!    listens there; a timeout means the packets vanish, which is what a firewall that drops
//!    traffic (NSG, Azure Firewall, an appliance without a rule) looks like.
//! 2. TLS: a `GET https://host:port/` through a reqwest client built like the upstream client
//!    (rustls, system roots plus `ca_file`, no proxy, no redirects) but pinned to this address
//!    with [`reqwest::ClientBuilder::resolve`], so SNI and certificate name checks use the host
//!    name while the bytes go to the address under test. Any HTTP status counts as success:
//!    the handshake and certificate verification are what is probed.
//!
//! Used by `promlink doctor`; nothing here retries.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::outbound::{error_chain, Builder, ClientError};

/// Why one step of a probe failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The peer refused the connection (nothing listens, or a firewall rejects actively).
    Refused,
    /// No answer within the timeout: typically a firewall silently dropping packets.
    Timeout,
    /// No route to the host or network.
    Unreachable,
    /// The server's certificate was not accepted (unknown issuer, wrong name, expired).
    TlsCertificate,
    /// The TLS handshake failed for another reason (the peer closed, not TLS, protocol error).
    TlsOther,
    /// Anything else.
    Other,
}

impl FailureKind {
    /// The stable name used in doctor output.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Refused => "refused",
            FailureKind::Timeout => "timeout",
            FailureKind::Unreachable => "unreachable",
            FailureKind::TlsCertificate => "tls-certificate",
            FailureKind::TlsOther => "tls-other",
            FailureKind::Other => "other",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed probe step: its kind and the error chain, one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeFailure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// The underlying error, with its causes.
    pub detail: String,
}

impl std::fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

/// The outcome of probing one address.
#[derive(Clone, Debug)]
pub struct Probe {
    /// TCP connect: how long it took, or why it failed.
    pub tcp: Result<Duration, ProbeFailure>,
    /// TLS handshake with certificate verification (and one HTTP exchange); only tried when TCP
    /// worked.
    pub tls: Option<Result<Duration, ProbeFailure>>,
    /// The HTTP status answered to `GET /`, when the exchange got that far.
    pub http_status: Option<u16>,
}

impl Probe {
    /// Whether both TCP and TLS succeeded.
    pub fn ok(&self) -> bool {
        self.tcp.is_ok() && matches!(self.tls, Some(Ok(_)))
    }

    /// The first failure, if any.
    pub fn failure(&self) -> Option<&ProbeFailure> {
        match (&self.tcp, &self.tls) {
            (Err(f), _) => Some(f),
            (Ok(_), Some(Err(f))) => Some(f),
            _ => None,
        }
    }
}

/// Probes `addr` as `host`: TCP connect, then a verified TLS handshake with SNI `host`, trusting
/// the system roots plus `ca_file` (the upstream client's trust). `timeout` bounds each step.
/// Never fails: failures are in the returned [`Probe`].
pub async fn probe(
    host: &str,
    addr: SocketAddr,
    ca_file: Option<&Path>,
    timeout: Duration,
) -> Probe {
    let started = Instant::now();
    let tcp = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            drop(stream);
            Ok(started.elapsed())
        }
        Ok(Err(e)) => Err(ProbeFailure {
            kind: io_kind(&e),
            detail: format!("connecting to {addr}: {e}"),
        }),
        Err(_) => Err(ProbeFailure {
            kind: FailureKind::Timeout,
            detail: format!(
                "connecting to {addr}: no answer within {}",
                humantime::format_duration(timeout)
            ),
        }),
    };
    if tcp.is_err() {
        return Probe {
            tcp,
            tls: None,
            http_status: None,
        };
    }
    let (tls, http_status) = tls_probe(host, addr, ca_file, timeout).await;
    Probe {
        tcp,
        tls: Some(tls),
        http_status,
    }
}

async fn tls_probe(
    host: &str,
    addr: SocketAddr,
    ca_file: Option<&Path>,
    timeout: Duration,
) -> (Result<Duration, ProbeFailure>, Option<u16>) {
    let client = match pinned_client(host, addr, ca_file, timeout) {
        Ok(c) => c,
        Err(e) => {
            return (
                Err(ProbeFailure {
                    kind: FailureKind::Other,
                    detail: error_chain(&e),
                }),
                None,
            )
        }
    };
    let url = url_for(host, addr.port());
    let started = Instant::now();
    match client.get(url).send().await {
        Ok(resp) => (Ok(started.elapsed()), Some(resp.status().as_u16())),
        Err(e) => (Err(classify_reqwest(&e, timeout)), None),
    }
}

/// A client with the upstream client's trust and settings (rustls, system roots plus `ca_file`,
/// no proxy, no redirects, `timeout` per request, [`crate::outbound::Builder`]) that connects
/// to `addr` whenever a URL names `host`, keeping no idle connection. URLs must carry the port
/// explicitly: reqwest ignores the port of `addr`.
///
/// # Errors
/// When the CA file is unusable or the TLS stack cannot be set up.
pub fn pinned_client(
    host: &str,
    addr: SocketAddr,
    ca_file: Option<&Path>,
    timeout: Duration,
) -> Result<reqwest::Client, ClientError> {
    Builder::new(timeout)
        .no_idle_connections()
        .pin(host, addr)
        .ca_file(ca_file)
        .build()
}

/// `https://host:port/`, bracketing an IPv6 literal. reqwest ignores the port of a `resolve`
/// override and uses the URL's, so the port is always explicit.
fn url_for(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("https://[{v6}]:{port}/"),
        _ => format!("https://{host}:{port}/"),
    }
}

fn io_kind(e: &std::io::Error) -> FailureKind {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => FailureKind::Refused,
        K::TimedOut => FailureKind::Timeout,
        K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable => {
            FailureKind::Unreachable
        }
        _ => FailureKind::Other,
    }
}

/// Classifies a reqwest error from its kind and its error chain (rustls says "invalid peer
/// certificate: UnknownIssuer", "...NotValidForName", ...).
fn classify_reqwest(e: &reqwest::Error, timeout: Duration) -> ProbeFailure {
    let chain = error_chain(e);
    let lower = chain.to_ascii_lowercase();
    let kind = if lower.contains("certificate") {
        FailureKind::TlsCertificate
    } else if e.is_timeout() || lower.contains("timed out") || lower.contains("deadline") {
        FailureKind::Timeout
    } else if lower.contains("connection refused") {
        FailureKind::Refused
    } else if lower.contains("unreachable") || lower.contains("no route to host") {
        FailureKind::Unreachable
    } else if e.is_connect() {
        // TCP worked a moment ago: a connect-phase failure now is the TLS handshake.
        FailureKind::TlsOther
    } else {
        FailureKind::Other
    };
    let detail = if kind == FailureKind::Timeout {
        format!(
            "no TLS answer within {}: {chain}",
            humantime::format_duration(timeout)
        )
    } else {
        chain
    };
    ProbeFailure { kind, detail }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::dce::{DceConfig, DceEmulator};

    const DCE_HOST: &str = "mydce-ab12.eastus-1.metrics.ingest.monitor.azure.com";
    const T: Duration = Duration::from_secs(5);

    fn ca_file(pem: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), pem).unwrap();
        f
    }

    #[tokio::test]
    async fn refused_on_a_closed_port() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let p = probe(DCE_HOST, addr, None, T).await;
        let f = p.tcp.as_ref().unwrap_err();
        assert_eq!(f.kind, FailureKind::Refused, "{f}");
        assert!(p.tls.is_none());
        assert!(!p.ok());
    }

    #[tokio::test]
    async fn tls_ok_against_the_emulator_with_its_ca() {
        let dce = DceEmulator::start(DceConfig::default()).await.unwrap();
        let ca = ca_file(dce.ca_pem().unwrap());
        // The emulator's certificate names 127.0.0.1 and localhost.
        let p = probe("localhost", dce.addr(), Some(ca.path()), T).await;
        assert!(p.ok(), "{p:?}");
        assert!(p.http_status.is_some());
        let p = probe("127.0.0.1", dce.addr(), Some(ca.path()), T).await;
        assert!(p.ok(), "{p:?}");
        dce.shutdown().await;
    }

    #[tokio::test]
    async fn unknown_issuer_without_the_ca() {
        let dce = DceEmulator::start(DceConfig::default()).await.unwrap();
        let p = probe("localhost", dce.addr(), None, T).await;
        assert!(p.tcp.is_ok());
        let f = p.failure().unwrap();
        assert_eq!(f.kind, FailureKind::TlsCertificate, "{f}");
        assert!(p.http_status.is_none());
        dce.shutdown().await;
    }

    #[tokio::test]
    async fn wrong_name_certificate() {
        let dce = DceEmulator::start(DceConfig::default()).await.unwrap();
        let ca = ca_file(dce.ca_pem().unwrap());
        // Pinned to the emulator, whose certificate does not name the DCE host.
        let p = probe(DCE_HOST, dce.addr(), Some(ca.path()), T).await;
        let f = p.failure().unwrap();
        assert_eq!(f.kind, FailureKind::TlsCertificate, "{f}");
        assert!(
            f.detail.to_ascii_lowercase().contains("name"),
            "{}",
            f.detail
        );
        dce.shutdown().await;
    }

    #[tokio::test]
    async fn silent_server_times_out_in_tls() {
        // Accepts TCP (the kernel completes the handshake) and never speaks: a TLS black hole.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut keep = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                keep.push(s);
            }
        });
        let p = probe(DCE_HOST, addr, None, Duration::from_millis(300)).await;
        assert!(p.tcp.is_ok());
        let f = p.failure().unwrap();
        assert_eq!(f.kind, FailureKind::Timeout, "{f}");
        held.abort();
    }

    #[tokio::test]
    async fn plain_tcp_server_is_a_tls_failure() {
        // Answers with plain text and closes: not TLS.
        use tokio::io::AsyncWriteExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        let p = probe(DCE_HOST, addr, None, T).await;
        let f = p.failure().unwrap();
        assert!(
            matches!(f.kind, FailureKind::TlsOther | FailureKind::Other),
            "{f}"
        );
        server.abort();
    }

    #[test]
    fn urls_bracket_ipv6() {
        assert_eq!(url_for("::1", 443), "https://[::1]:443/");
        assert_eq!(url_for("a.example", 8443), "https://a.example:8443/");
    }
}
