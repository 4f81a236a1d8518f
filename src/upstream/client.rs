//! The HTTPS client that talks to the DCE, and the request it sends.
//!
//! Three ways to connect: directly ([`build`]), only to the addresses Private Link approved
//! ([`build_pinned`]), or as the egress proxy settings say ([`build_proxied`]). The upstream
//! picks one per Private Link path (see [`super::Upstream`]).

use std::path::Path;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};

use super::UpstreamError;

/// The `User-Agent` promlink sends.
pub fn user_agent() -> String {
    format!("promlink/{}", env!("CARGO_PKG_VERSION"))
}

/// Reads a PEM bundle of extra CA certificates.
///
/// # Errors
/// When the file cannot be read or holds no certificate.
pub fn load_ca_bundle(path: &Path) -> Result<Vec<reqwest::Certificate>, UpstreamError> {
    let pem = std::fs::read(path)
        .map_err(|e| UpstreamError::CaFile(path.display().to_string(), e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| UpstreamError::CaFile(path.display().to_string(), e.to_string()))?;
    if certs.is_empty() {
        return Err(UpstreamError::CaFile(
            path.display().to_string(),
            "no PEM certificate in the file".into(),
        ));
    }
    Ok(certs)
}

/// Builds the upstream client: rustls with verified certificates (system roots plus `ca_file`),
/// no proxy, no redirects, the given per-request timeout.
///
/// # Errors
/// When the CA file is unusable or the TLS stack cannot be set up.
pub fn build(ca_file: Option<&Path>, timeout: Duration) -> Result<reqwest::Client, UpstreamError> {
    build_pinned(ca_file, timeout, None)
}

/// Like [`build`], resolving names only through `resolver` when given (Private Link pinning).
/// Never through a proxy: a proxy would resolve the name itself.
///
/// # Errors
/// When the CA file is unusable or the TLS stack cannot be set up.
pub fn build_pinned(
    ca_file: Option<&Path>,
    timeout: Duration,
    resolver: Option<std::sync::Arc<crate::privatelink::PinnedResolver>>,
) -> Result<reqwest::Client, UpstreamError> {
    let mut b = base(ca_file, timeout)?.no_proxy();
    if let Some(r) = resolver {
        b = b.dns_resolver(r);
    }
    b.build().map_err(|e| UpstreamError::Client(e.to_string()))
}

/// Like [`build`], with the system resolver and the egress proxy wherever `proxy` routes a
/// request through one ([`crate::proxy::apply`]): `private_link: off`, and `prefer`'s public
/// fallback.
///
/// # Errors
/// When the CA file is unusable or the TLS stack cannot be set up.
pub fn build_proxied(
    ca_file: Option<&Path>,
    timeout: Duration,
    proxy: &crate::proxy::ProxyConfig,
) -> Result<reqwest::Client, UpstreamError> {
    crate::proxy::apply(base(ca_file, timeout)?, proxy)
        .build()
        .map_err(|e| UpstreamError::Client(e.to_string()))
}

/// What every upstream client shares: user agent, timeouts, no redirects, trusted CAs.
fn base(
    ca_file: Option<&Path>,
    timeout: Duration,
) -> Result<reqwest::ClientBuilder, UpstreamError> {
    let mut b = reqwest::Client::builder()
        .user_agent(user_agent())
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(60));
    if let Some(path) = ca_file {
        b = b.tls_certs_merge(load_ca_bundle(path)?);
    }
    Ok(b)
}

/// The fixed headers of every upstream write.
pub fn write_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_ENCODING, HeaderValue::from_static("snappy"));
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-protobuf"),
    );
    h.insert(
        "X-Prometheus-Remote-Write-Version",
        HeaderValue::from_static("0.1.0"),
    );
    h
}

/// The `Authorization` header for a token; marked sensitive so it is never logged by the stack.
pub fn bearer(token: &crate::secret::Secret) -> Result<HeaderValue, UpstreamError> {
    let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
        UpstreamError::Client("token holds characters not allowed in a header".into())
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// Re-exported for request building.
pub const AUTHORIZATION_HEADER: reqwest::header::HeaderName = AUTHORIZATION;
