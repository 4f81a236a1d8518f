//! The HTTPS client that talks to the DCE, and the request it sends.
//!
//! The client is built by [`crate::outbound`] with the upstream's timeouts. Three ways to
//! connect: directly ([`build`]), only to the addresses Private Link approved
//! ([`build_pinned`]), or as the egress proxy settings say ([`build_proxied`]). The upstream
//! picks one per Private Link path (see [`super::Upstream`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};

use super::UpstreamError;
use crate::outbound::{Builder, ClientError};

/// Builds the upstream client: rustls with verified certificates (system roots plus `ca_file`),
/// no proxy, no redirects, the given per-request timeout.
///
/// # Errors
/// When the CA file is unusable or the TLS stack cannot be set up.
pub fn build(ca_file: Option<&Path>, timeout: Duration) -> Result<reqwest::Client, ClientError> {
    base(ca_file, timeout).build()
}

/// Like [`build`], resolving names only through `resolver` (Private Link pinning). Never
/// through a proxy: a proxy would resolve the name itself.
///
/// # Errors
/// When the CA file is unusable or the TLS stack cannot be set up.
pub fn build_pinned(
    ca_file: Option<&Path>,
    timeout: Duration,
    resolver: Arc<crate::privatelink::PinnedResolver>,
) -> Result<reqwest::Client, ClientError> {
    base(ca_file, timeout).resolver(resolver).build()
}

/// Like [`build`], with the system resolver and the egress proxy wherever `proxy` routes a
/// request through one ([`Builder::proxy`]): `private_link: off`, and `prefer`'s public
/// fallback.
///
/// # Errors
/// When the CA file is unusable or the TLS stack cannot be set up.
pub fn build_proxied(
    ca_file: Option<&Path>,
    timeout: Duration,
    proxy: &crate::proxy::ProxyConfig,
) -> Result<reqwest::Client, ClientError> {
    base(ca_file, timeout).proxy(proxy).build()
}

/// What every upstream client shares: the request timeout, connections within 10 s at most,
/// idle connections closed after a minute, trusted CAs.
fn base(ca_file: Option<&Path>, timeout: Duration) -> Builder<'_> {
    Builder::new(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .pool_idle_timeout(Duration::from_secs(60))
        .ca_file(ca_file)
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
    let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
        .map_err(|_| UpstreamError::TokenHeader)?;
    v.set_sensitive(true);
    Ok(v)
}

/// Re-exported for request building.
pub const AUTHORIZATION_HEADER: reqwest::header::HeaderName = AUTHORIZATION;
