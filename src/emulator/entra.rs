//! An EMULATOR of an Entra ID token issuer, for tests and `promlink demo`; never for production.
//!
//! It serves, over HTTPS on loopback, the two token protocols promlink's identity code speaks
//! through `azure_identity` 1.0:
//! - `POST /{tenant}/oauth2/v2.0/token`, the OAuth 2.0 client credentials grant
//!   (<https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow>)
//!   with a client secret, a certificate-signed client assertion
//!   (<https://learn.microsoft.com/entra/identity-platform/certificate-credentials>) or a
//!   federated (workload identity) assertion;
//! - `GET /msi/token`, the App Service managed identity protocol (api-version `2019-08-01`, the
//!   `X-IDENTITY-HEADER` secret) that `azure_identity` uses when `IDENTITY_ENDPOINT` and
//!   `IDENTITY_HEADER` are set, so managed identity is tested without touching IMDS.
//!
//! Requests are validated as strictly as Entra ID documents: unknown tenant or client, wrong
//! secret, bad assertion signature, audience or lifetime, and unknown scope are each refused
//! with Entra's JSON error shape (`error`, `error_description` starting with an `AADSTS` code,
//! `error_codes`). The AADSTS codes are the documented ones where Entra documents one. Issued
//! access tokens are HS256 JWTs signed with a per-emulator key; [`TokenVerifier`] checks them
//! (signature, expiry, audience) so the DCE emulator can authenticate bearer tokens.
//!
//! This file holds what the emulator knows, its start and its handle; `token` serves the token
//! endpoint, `credentials` checks secrets, client assertions and federated tokens, `managed`
//! serves the managed identity endpoint and `jwt` issues and verifies the access tokens.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::serve::{self, Server};
use super::tls::TestCa;

mod credentials;
mod jwt;
mod managed;
mod token;

pub use jwt::{Claims, TokenVerifier};

/// The assertion type of a JWT client assertion (RFC 7523).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The api-version of the App Service managed identity protocol `azure_identity` 1.0 speaks.
pub const MI_API_VERSION: &str = "2019-08-01";
/// The path of the managed identity endpoint, relative to the emulator's base URL.
pub const MI_PATH: &str = "/msi/token";

/// Errors starting the emulator.
#[derive(Debug, thiserror::Error)]
pub enum EntraError {
    /// The TLS certificate could not be generated.
    #[error("entra emulator: generating a certificate")]
    Tls(#[from] super::tls::TlsError),
    /// The TLS configuration was refused.
    #[error("entra emulator: tls configuration")]
    TlsConfig(#[source] std::io::Error),
    /// The listening socket could not be bound.
    #[error("entra emulator: binding {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// A credential registered for an application.
#[derive(Clone)]
pub enum ClientCredential {
    /// A client secret, compared exactly.
    Secret(String),
    /// A certificate (PEM): client assertions must be RS256/PS256 JWTs signed by its key.
    Certificate {
        /// The X.509 certificate, PEM (a `PUBLIC KEY` PEM is accepted too).
        cert_pem: String,
    },
    /// A federated identity credential: the assertion must equal this token exactly (the
    /// emulator does not fetch an issuer's OIDC keys).
    FederatedToken(String),
}

impl fmt::Debug for ClientCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Secret(_) => f.write_str("Secret(<redacted>)"),
            Self::Certificate { .. } => f.write_str("Certificate"),
            Self::FederatedToken(_) => f.write_str("FederatedToken(<redacted>)"),
        }
    }
}

/// An application registration (service principal) known to the emulator.
#[derive(Clone, Debug)]
pub struct RegisteredClient {
    /// The tenant the application lives in.
    pub tenant_id: String,
    /// The application (client) id.
    pub client_id: String,
    /// The service principal's object id, put in the `oid` claim.
    pub object_id: String,
    /// Credentials accepted for it (any one matches).
    pub credentials: Vec<ClientCredential>,
}

impl RegisteredClient {
    /// An application with no credential yet; its object id is `oid-{client_id}`.
    pub fn new(tenant_id: &str, client_id: &str) -> Self {
        Self {
            tenant_id: tenant_id.to_owned(),
            client_id: client_id.to_owned(),
            object_id: format!("oid-{client_id}"),
            credentials: Vec::new(),
        }
    }

    /// An application authenticating with a client secret.
    pub fn with_secret(tenant_id: &str, client_id: &str, secret: &str) -> Self {
        Self::new(tenant_id, client_id).credential(ClientCredential::Secret(secret.to_owned()))
    }

    /// An application authenticating with a certificate (PEM).
    pub fn with_certificate(tenant_id: &str, client_id: &str, cert_pem: &str) -> Self {
        Self::new(tenant_id, client_id).credential(ClientCredential::Certificate {
            cert_pem: cert_pem.to_owned(),
        })
    }

    /// An application trusting a federated token (workload identity).
    pub fn with_federated_token(tenant_id: &str, client_id: &str, token: &str) -> Self {
        Self::new(tenant_id, client_id)
            .credential(ClientCredential::FederatedToken(token.to_owned()))
    }

    /// Adds a credential.
    pub fn credential(mut self, credential: ClientCredential) -> Self {
        self.credentials.push(credential);
        self
    }
}

/// A managed identity reachable through the App Service style endpoint.
#[derive(Clone, Debug)]
pub struct ManagedIdentity {
    /// The tenant of the identity.
    pub tenant_id: String,
    /// Client id (`client_id` query parameter).
    pub client_id: String,
    /// Object id (`object_id` query parameter).
    pub object_id: String,
    /// ARM resource id (`msi_res_id` query parameter).
    pub resource_id: String,
    /// Whether a request naming no identity gets this one (the system-assigned identity).
    pub system_assigned: bool,
}

impl ManagedIdentity {
    /// A user-assigned identity; object id `oid-{client_id}`, a made-up resource id.
    pub fn user_assigned(tenant_id: &str, client_id: &str) -> Self {
        Self {
            tenant_id: tenant_id.to_owned(),
            client_id: client_id.to_owned(),
            object_id: format!("oid-{client_id}"),
            resource_id: format!(
                "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/emulator/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{client_id}"
            ),
            system_assigned: false,
        }
    }

    /// A system-assigned identity (answers requests that name no identity).
    pub fn system_assigned(tenant_id: &str, client_id: &str) -> Self {
        Self {
            system_assigned: true,
            ..Self::user_assigned(tenant_id, client_id)
        }
    }
}

/// What the emulator knows and how it behaves.
#[derive(Clone, Debug)]
pub struct EntraConfig {
    /// Application registrations.
    pub clients: Vec<RegisteredClient>,
    /// Managed identities served on [`MI_PATH`].
    pub managed_identities: Vec<ManagedIdentity>,
    /// Resources tokens may be asked for (no trailing slash, no `/.default`).
    /// Default: the public, US Government and China Azure Monitor audiences, for ingestion
    /// and for queries (`https://prometheus.monitor.azure.*`).
    pub resources: Vec<String>,
    /// Lifetime of issued access tokens. Default: one hour.
    pub token_lifetime: Duration,
    /// The value the managed identity endpoint expects in `X-IDENTITY-HEADER`
    /// (what `IDENTITY_HEADER` must hold).
    pub identity_header: String,
    /// Listen address. Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// Names the server certificate carries besides `127.0.0.1` and `localhost`, e.g. a name
    /// a test reaches only through the proxy emulator.
    pub tls_names: Vec<String>,
}

impl Default for EntraConfig {
    fn default() -> Self {
        Self {
            clients: Vec::new(),
            managed_identities: Vec::new(),
            resources: vec![
                "https://monitor.azure.com".to_owned(),
                "https://monitor.azure.us".to_owned(),
                "https://monitor.azure.cn".to_owned(),
                "https://prometheus.monitor.azure.com".to_owned(),
                "https://prometheus.monitor.azure.us".to_owned(),
                "https://prometheus.monitor.azure.cn".to_owned(),
            ],
            token_lifetime: Duration::from_secs(3600),
            identity_header: "emulator-identity-header".to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls_names: Vec::new(),
        }
    }
}

/// Counters of what the emulator did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntraStats {
    /// Requests received on both endpoints.
    pub requests: u64,
    /// Tokens issued, per client id (managed identities by their client id).
    pub issued: BTreeMap<String, u64>,
    /// Requests refused by validation.
    pub rejected: u64,
    /// Requests answered by an injected failure.
    pub injected: u64,
}

struct StateData {
    clients: Vec<RegisteredClient>,
    managed_identities: Vec<ManagedIdentity>,
    failures: VecDeque<u16>,
    stats: EntraStats,
}

struct Shared {
    state: Mutex<StateData>,
    verifier: TokenVerifier,
    resources: Vec<String>,
    lifetime: Duration,
    identity_header: String,
    base_url: OnceLock<String>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, StateData> {
        // A panic elsewhere while holding the lock leaves plain counters behind: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Entry point: starts an emulator.
#[derive(Debug)]
pub struct EntraEmulator;

impl EntraEmulator {
    /// Starts an emulator with its own throw-away CA.
    ///
    /// # Errors
    /// When the certificate cannot be made or the address bound.
    pub async fn start(config: EntraConfig) -> Result<EntraHandle, EntraError> {
        let ca = TestCa::new("promlink EMULATOR CA")?;
        Self::start_with_ca(config, &ca).await
    }

    /// Starts an emulator whose server certificate is issued by `ca` (share one CA between the
    /// Entra and DCE emulators so a client trusts a single file).
    ///
    /// # Errors
    /// When the certificate cannot be made or the address bound.
    pub async fn start_with_ca(
        config: EntraConfig,
        ca: &TestCa,
    ) -> Result<EntraHandle, EntraError> {
        let mut names = vec!["127.0.0.1", "localhost"];
        names.extend(config.tls_names.iter().map(String::as_str));
        let leaf = ca.issue(&names)?;
        let tls = super::tls::server_config(&leaf.cert_pem, &leaf.key_pem)
            .map_err(EntraError::TlsConfig)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(StateData {
                clients: config.clients,
                managed_identities: config.managed_identities,
                failures: VecDeque::new(),
                stats: EntraStats::default(),
            }),
            verifier: TokenVerifier::new(&config.resources),
            resources: config
                .resources
                .iter()
                .map(|r| r.trim_end_matches('/').to_owned())
                .collect(),
            lifetime: config.token_lifetime,
            identity_header: config.identity_header,
            base_url: OnceLock::new(),
        });
        let router = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token::token))
            .route(MI_PATH, get(managed::managed_identity))
            .with_state(shared.clone());
        let server = serve::spawn(config.listen, Some(Arc::new(tls)), router)
            .await
            .map_err(|source| EntraError::Bind {
                addr: config.listen,
                source,
            })?;
        let base_url = format!("https://{}", server.addr);
        let _ = shared.base_url.set(base_url.clone());
        tracing::info!(%base_url, "EMULATOR: Entra ID token issuer listening (not a real identity provider)");
        Ok(EntraHandle {
            shared,
            server,
            base_url,
            ca_pem: ca.cert_pem().to_owned(),
        })
    }
}

/// A running emulator. Dropping it stops the server; prefer [`EntraHandle::shutdown`].
#[derive(Debug)]
pub struct EntraHandle {
    shared: Arc<Shared>,
    server: Server,
    base_url: String,
    ca_pem: String,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl EntraHandle {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// The authority host, e.g. `https://127.0.0.1:4321` (for `AZURE_AUTHORITY_HOST` or
    /// `azure_identity`'s custom cloud configuration).
    pub fn authority_host(&self) -> &str {
        &self.base_url
    }

    /// The token endpoint of `tenant_id`: the audience a client assertion must carry.
    pub fn token_url(&self, tenant_id: &str) -> String {
        format!("{}/{tenant_id}/oauth2/v2.0/token", self.base_url)
    }

    /// The managed identity endpoint (what `IDENTITY_ENDPOINT` must hold).
    pub fn identity_endpoint(&self) -> String {
        format!("{}{MI_PATH}", self.base_url)
    }

    /// The secret the managed identity endpoint expects (what `IDENTITY_HEADER` must hold).
    pub fn identity_header(&self) -> &str {
        &self.shared.identity_header
    }

    /// The CA certificate (PEM) that issued the server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A verifier for the tokens this emulator issues (give it to the DCE emulator).
    pub fn verifier(&self) -> TokenVerifier {
        self.shared.verifier.clone()
    }

    /// Verifies a token this emulator issued: signature, expiry, audience.
    ///
    /// # Errors
    /// A human-readable reason when the token is not acceptable.
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        self.shared.verifier.verify(token)
    }

    /// Makes the next `n` token requests (either endpoint) fail with `status`.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.shared
            .lock()
            .failures
            .extend(std::iter::repeat_n(status, n));
    }

    /// Registers another application (or replaces one with the same tenant and client id).
    pub fn add_client(&self, client: RegisteredClient) {
        let mut state = self.shared.lock();
        state
            .clients
            .retain(|c| !(c.tenant_id == client.tenant_id && c.client_id == client.client_id));
        state.clients.push(client);
    }

    /// Removes an application: later requests for it fail as for an unknown client.
    pub fn remove_client(&self, tenant_id: &str, client_id: &str) {
        self.shared
            .lock()
            .clients
            .retain(|c| !(c.tenant_id == tenant_id && c.client_id == client_id));
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> EntraStats {
        self.shared.lock().stats.clone()
    }

    /// Tokens issued so far to `client_id`.
    pub fn issued(&self, client_id: &str) -> u64 {
        self.shared
            .lock()
            .stats
            .issued
            .get(client_id)
            .copied()
            .unwrap_or(0)
    }

    /// Stops the server, letting in-flight requests finish.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// A JSON response (axum's `json` feature is not enabled in this crate).
pub(crate) fn json_response(status: StatusCode, value: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        value.to_string(),
    )
        .into_response()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An Entra style error: `{"error", "error_description", "error_codes", ...}`.
///
/// The description never contains characters JSON must escape: `azure_identity` 1.0 reads it
/// as a borrowed `&str`, which fails on escapes.
fn entra_error(status: StatusCode, error: &str, code: u32, message: &str) -> Response {
    let now = time::OffsetDateTime::now_utc();
    let trace: u128 = rand::random();
    let message = message.replace(['"', '\\'], "'");
    let body = serde_json::json!({
        "error": error,
        "error_description": format!(
            "AADSTS{code}: {message} Trace ID: {trace:032x} Timestamp: {now} (EMULATOR)"
        ),
        "error_codes": [code],
        "timestamp": now.to_string(),
        "trace_id": format!("{trace:032x}"),
        "correlation_id": format!("{:032x}", rand::random::<u128>()),
    });
    json_response(status, body)
}

/// A refused token request: the Entra style error to answer with.
struct Rejection(Box<Response>);

fn reject(status: StatusCode, error: &str, code: u32, message: &str) -> Rejection {
    Rejection(Box::new(entra_error(status, error, code, message)))
}

/// Counts a request and answers it with the next injected failure, if one is queued.
fn take_failure(shared: &Shared) -> Option<Response> {
    let mut state = shared.lock();
    state.stats.requests += 1;
    let status = state.failures.pop_front()?;
    state.stats.injected += 1;
    drop(state);
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    Some(entra_error(
        status,
        "temporarily_unavailable",
        50196,
        "The server is temporarily unavailable (injected failure).",
    ))
}

#[cfg(test)]
mod tests;
