//! Outbound HTTP: every HTTP client promlink opens towards another service is built here.
//!
//! The upstream (the DCE, `upstream`), Entra ID and the managed identity endpoint
//! (azure_identity's transport, `identity`), the Private Link probes and `promlink doctor`
//! (`privatelink::probe`, `doctor`) and Alertmanager (`alert`) each describe what they need to
//! a [`Builder`] and get a [`reqwest::Client`] that shares the rest; this module sits below
//! them all and imports none of them:
//!
//! - TLS by rustls, trusting the platform's roots plus the PEM certificates of the operator's
//!   `ca_file` ([`load_ca_bundle`]); verification cannot be switched off;
//! - `User-Agent: promlink/<version>` ([`user_agent`]);
//! - the caller's request and connect timeouts;
//! - no redirects: a 3xx is an answer, never followed;
//! - one way to reach the destination: the egress proxy as [`crate::proxy`] routes each URL
//!   ([`Builder::proxy`]), only the addresses a resolver hands out ([`Builder::resolver`], the
//!   hook for Private Link's pinned resolver), one fixed address ([`Builder::pin`]), or
//!   directly with the system resolver. reqwest's own reading of the proxy variables is always
//!   off: it would apply `ALL_PROXY` and proxy loopback.
//!
//! A client that cannot be built is a [`ClientError`]. Errors are put on one line for logs and
//! reports by [`error_chain`]; waits between retries come from [`Backoff`].

mod backoff;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use backoff::{Backoff, Jitter};

use crate::proxy::{ProxyConfig, Route};

/// The `User-Agent` of every outbound request: `promlink/<version>`.
pub fn user_agent() -> String {
    format!("promlink/{}", env!("CARGO_PKG_VERSION"))
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The CA file could not be read.
    #[error("reading the CA file {path}")]
    CaRead {
        /// The configured `ca_file`.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
    /// The CA file holds no usable PEM certificate.
    #[error("the CA file {path} holds no usable PEM certificate")]
    CaPem {
        /// The configured `ca_file`.
        path: PathBuf,
        /// Why parsing failed, when it did.
        #[source]
        source: Option<reqwest::Error>,
    },
    /// The TLS stack or the client could not be set up.
    #[error("setting up the HTTP client")]
    Build(#[source] reqwest::Error),
}

/// Reads a PEM bundle of extra CA certificates.
///
/// # Errors
/// When the file cannot be read or holds no certificate.
pub fn load_ca_bundle(path: &Path) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let pem = std::fs::read(path).map_err(|source| ClientError::CaRead {
        path: path.to_owned(),
        source,
    })?;
    let certs =
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| ClientError::CaPem {
            path: path.to_owned(),
            source: Some(source),
        })?;
    if certs.is_empty() {
        return Err(ClientError::CaPem {
            path: path.to_owned(),
            source: None,
        });
    }
    Ok(certs)
}

/// How a client reaches its destinations.
#[derive(Clone)]
enum Egress {
    /// Directly, names resolved by the system.
    Direct,
    /// Through the egress proxy wherever it routes a URL through one, else directly.
    Proxy(ProxyConfig),
    /// Directly, names resolved only by this resolver.
    Resolver(Arc<dyn reqwest::dns::Resolve>),
    /// Directly, `host` connecting to `addr`.
    Pinned(String, SocketAddr),
}

/// Describes one outbound client; [`Builder::build`] makes it.
///
/// Unless told otherwise the client connects directly with the system resolver, waits
/// `timeout` for a connection and for a whole request, keeps idle connections as long as
/// reqwest does (90 s), and trusts the platform's roots only.
#[derive(Clone)]
pub struct Builder<'a> {
    timeout: Duration,
    connect_timeout: Duration,
    pool_idle_timeout: Option<Duration>,
    keep_idle: bool,
    ca_file: Option<&'a Path>,
    egress: Egress,
}

impl<'a> Builder<'a> {
    /// A client whose requests may take `timeout` from start to the end of the answer.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            connect_timeout: timeout,
            pool_idle_timeout: None,
            keep_idle: true,
            ca_file: None,
            egress: Egress::Direct,
        }
    }

    /// The longest wait for a TCP connection and TLS handshake (default: the request timeout).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long an idle pooled connection is kept.
    #[must_use]
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = Some(timeout);
        self
    }

    /// Keeps no idle connection: every request opens its own (probes, which must test the path
    /// each time).
    #[must_use]
    pub fn no_idle_connections(mut self) -> Self {
        self.keep_idle = false;
        self
    }

    /// Trusts the PEM certificates in `ca_file` besides the platform's roots (none: roots only).
    #[must_use]
    pub fn ca_file(mut self, ca_file: Option<&'a Path>) -> Self {
        self.ca_file = ca_file;
        self
    }

    /// Connects through the egress proxy wherever `proxy` routes a URL through one
    /// ([`ProxyConfig::route`]: reqwest then opens the CONNECT tunnel, or forwards plain HTTP,
    /// and sends the credentials), directly elsewhere.
    #[must_use]
    pub fn proxy(mut self, proxy: &ProxyConfig) -> Self {
        self.egress = Egress::Proxy(proxy.clone());
        self
    }

    /// Resolves every name only through `resolver`, never through a proxy (a proxy would
    /// resolve the name itself): the hook for Private Link's pinned resolver.
    #[must_use]
    pub fn resolver(mut self, resolver: Arc<dyn reqwest::dns::Resolve>) -> Self {
        self.egress = Egress::Resolver(resolver);
        self
    }

    /// Connects to `addr` whenever a URL names `host`, never through a proxy; SNI and the
    /// certificate check still use `host`. reqwest ignores the port of `addr`: URLs must carry
    /// the port.
    #[must_use]
    pub fn pin(mut self, host: &str, addr: SocketAddr) -> Self {
        self.egress = Egress::Pinned(host.to_owned(), addr);
        self
    }

    /// Builds the client.
    ///
    /// # Errors
    /// When the CA file is unusable or the TLS stack cannot be set up.
    pub fn build(self) -> Result<reqwest::Client, ClientError> {
        let mut b = reqwest::Client::builder()
            .user_agent(user_agent())
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if let Some(idle) = self.pool_idle_timeout {
            b = b.pool_idle_timeout(idle);
        }
        if !self.keep_idle {
            b = b.pool_max_idle_per_host(0);
        }
        b = match self.egress {
            Egress::Direct => b,
            Egress::Proxy(proxy) if proxy.is_set() => {
                b.proxy(reqwest::Proxy::custom(move |url| match proxy.route(url) {
                    Route::Proxy { url, .. } => Some(url.expose().clone()),
                    Route::Direct(_) => None,
                }))
            }
            Egress::Proxy(_) => b,
            Egress::Resolver(resolver) => b.dns_resolver(resolver),
            Egress::Pinned(host, addr) => b.resolve(&host, addr),
        };
        if let Some(path) = self.ca_file {
            b = b.tls_certs_merge(load_ca_bundle(path)?);
        }
        b.build().map_err(ClientError::Build)
    }
}

/// An error and its causes on one line, `outer: cause: cause`, for logs, status and reports.
///
/// Each message is folded onto one line without a trailing period. A cause whose text is
/// already on the line is left out (many errors repeat their cause in their own message), and so
/// is the troubleshooting link azure_core appends on a line of its own, so that an Entra
/// `AADSTS` description appears once.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        let text = text.split("\nTo troubleshoot").next().unwrap_or_default();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let text = text.trim_end_matches('.').to_string();
        let repeated = parts.iter().any(|p| p.contains(&text));
        if !text.is_empty() && !repeated {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}
