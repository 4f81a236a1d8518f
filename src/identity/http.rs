//! The HTTP client every credential sends its token requests through.
//!
//! One reqwest client (built by [`crate::outbound`]: rustls, the platform's roots plus the
//! operator's `ca_file`) is handed to azure_identity as its transport, so a corporate CA or a
//! local test issuer is trusted the same way for Entra ID and for the managed identity
//! endpoint, and connections are pooled across refreshes. azure_identity's own retry policy is
//! switched off: the refresher retries, with promlink's one backoff, and counts every failure.
//! The egress proxy applies as [`crate::proxy`] decides: the authority through `HTTPS_PROXY`
//! unless `NO_PROXY` excludes it, the managed identity endpoints (IMDS, link-local; App
//! Service style, loopback) never.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::http::{ClientOptions, RetryOptions, Transport};

use super::Error;

/// Longest wait for a TCP + TLS connection to the token endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a whole token request, so a hung endpoint cannot stall the refresher.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds the reqwest client ([`crate::outbound::Builder`]), trusting the certificates in
/// `ca_file` in addition to the roots, connecting through the egress proxy where `proxy` routes
/// a request through one.
///
/// # Errors
/// When the CA file cannot be read or holds no certificate, or the TLS setup fails.
pub(crate) fn client(
    ca_file: Option<&Path>,
    proxy: &crate::proxy::ProxyConfig,
) -> Result<reqwest::Client, Error> {
    crate::outbound::Builder::new(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .ca_file(ca_file)
        .proxy(proxy)
        .build()
        .map_err(Error::HttpClient)
}

/// azure_identity client options: our transport, no retries, and `authority_host` as a custom
/// cloud so every credential talks to the configured authority (public, sovereign or a test one).
pub(crate) fn client_options(client: reqwest::Client, authority_host: &url::Url) -> ClientOptions {
    let mut cloud = CustomConfiguration::default();
    cloud.authority_host = authority_host.as_str().trim_end_matches('/').to_string();
    ClientOptions {
        transport: Some(Transport::new(Arc::new(client))),
        retry: RetryOptions::none(),
        cloud: Some(Arc::new(CloudConfiguration::Custom(cloud))),
        ..ClientOptions::default()
    }
}
