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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::serve::{self, Server};
use super::tls::TestCa;

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
    /// Default: the public, US Government and China Azure Monitor audiences.
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
            ],
            token_lifetime: Duration::from_secs(3600),
            identity_header: "emulator-identity-header".to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls_names: Vec::new(),
        }
    }
}

/// The claims of an issued access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Audience: the resource asked for (scope without `/.default`).
    pub aud: String,
    /// Issuer: `https://sts.windows.net/{tid}/`.
    pub iss: String,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Not before, Unix seconds.
    pub nbf: u64,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// The application (client) id.
    pub appid: String,
    /// The service principal's object id.
    pub oid: String,
    /// Subject; the object id for app tokens.
    pub sub: String,
    /// Tenant id.
    pub tid: String,
    /// Identity type; always `app`.
    pub idtyp: String,
    /// Token version; always `1.0`.
    pub ver: String,
    /// Unique token id: two tokens issued in the same second still differ, as Entra's do.
    pub uti: String,
}

impl Claims {
    /// Claims for `client_id`/`object_id` in `tenant_id`, for `aud`, valid from `iat` for
    /// `lifetime_secs` (negative gives an already expired token, for tests).
    pub fn new(
        tenant_id: &str,
        client_id: &str,
        object_id: &str,
        aud: &str,
        iat: u64,
        lifetime_secs: i64,
    ) -> Self {
        Self {
            aud: aud.to_owned(),
            iss: format!("https://sts.windows.net/{tenant_id}/"),
            iat,
            nbf: iat,
            exp: iat.saturating_add_signed(lifetime_secs),
            appid: client_id.to_owned(),
            oid: object_id.to_owned(),
            sub: object_id.to_owned(),
            tid: tenant_id.to_owned(),
            idtyp: "app".to_owned(),
            ver: "1.0".to_owned(),
            uti: format!("{:022x}", rand::random::<u128>() >> 40),
        }
    }
}

/// Checks access tokens issued by one emulator instance; cheap to clone.
#[derive(Clone)]
pub struct TokenVerifier {
    inner: Arc<VerifierInner>,
}

struct VerifierInner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    audiences: Vec<String>,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("audiences", &self.inner.audiences)
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// A verifier with a fresh random signing key, accepting tokens for `resources` (each with
    /// or without a trailing slash).
    pub fn new(resources: &[String]) -> Self {
        let key: [u8; 32] = rand::random();
        let audiences = resources
            .iter()
            .flat_map(|r| {
                let r = r.trim_end_matches('/');
                [r.to_owned(), format!("{r}/")]
            })
            .collect();
        Self {
            inner: Arc::new(VerifierInner {
                encoding: EncodingKey::from_secret(&key),
                decoding: DecodingKey::from_secret(&key),
                audiences,
            }),
        }
    }

    /// Signs `claims` with this emulator's key: a token [`Self::verify`] accepts while the
    /// claims are valid. Tests use it for expired tokens or tokens of ungranted clients.
    ///
    /// # Errors
    /// When the claims cannot be serialized (does not happen for [`Claims`]).
    pub fn mint(&self, claims: &Claims) -> Result<String, String> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.inner.encoding)
            .map_err(|e| format!("signing token: {e}"))
    }

    /// Verifies signature, expiry (no leeway) and audience of `token`.
    ///
    /// # Errors
    /// A human-readable reason when the token is not acceptable.
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_audience(&self.inner.audiences);
        validation.set_required_spec_claims(&["exp", "aud", "nbf"]);
        validation.validate_nbf = true;
        jsonwebtoken::decode::<Claims>(token, &self.inner.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => "token is expired".to_owned(),
                jsonwebtoken::errors::ErrorKind::InvalidAudience => {
                    "token audience is not accepted".to_owned()
                }
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    "token signature is invalid".to_owned()
                }
                _ => format!("token is invalid: {e}"),
            })
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
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .route(MI_PATH, get(managed_identity))
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

struct Rejection(Box<Response>);

fn reject(status: StatusCode, error: &str, code: u32, message: &str) -> Rejection {
    Rejection(Box::new(entra_error(status, error, code, message)))
}

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

/// Normalizes and checks a `.default` scope; returns (audience to issue, normalized resource).
fn check_scope(shared: &Shared, scope: &str) -> Result<String, Rejection> {
    let parts: Vec<&str> = scope.split_whitespace().collect();
    let [single] = parts.as_slice() else {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            &format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
        ));
    };
    let Some(resource) = single.strip_suffix("/.default") else {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            &format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
        ));
    };
    check_resource(shared, resource)
}

fn check_resource(shared: &Shared, resource: &str) -> Result<String, Rejection> {
    let normalized = resource.trim_end_matches('/');
    if shared.resources.iter().any(|r| r == normalized) {
        Ok(resource.to_owned())
    } else {
        Err(reject(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            500011,
            &format!("The resource principal named {resource} was not found in the tenant."),
        ))
    }
}

async fn token(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(failure) = take_failure(&shared) {
        return failure;
    }
    match token_inner(&shared, &tenant, &uri, &headers, &body) {
        Ok(response) => response,
        Err(Rejection(response)) => {
            shared.lock().stats.rejected += 1;
            tracing::debug!(status = %response.status(), %tenant, "EMULATOR entra: token request refused");
            *response
        }
    }
}

fn token_inner(
    shared: &Shared,
    tenant: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, Rejection> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        ));
    }
    let mut form: HashMap<String, String> = HashMap::new();
    for (key, value) in url::form_urlencoded::parse(body) {
        if form.insert(key.to_string(), value.to_string()).is_some() {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                90015,
                &format!(
                    "Requested query string is too long or has a duplicate parameter: '{key}'."
                ),
            ));
        }
    }
    let param = |name: &str| -> Result<&str, Rejection> {
        form.get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                reject(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    900144,
                    &format!("The request body must contain the following parameter: '{name}'."),
                )
            })
    };
    let grant_type = param("grant_type")?;
    if grant_type != "client_credentials" {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{grant_type}'."),
        ));
    }
    let client_id = param("client_id")?;
    let scope = param("scope")?;

    let client = {
        let state = shared.lock();
        if !state.clients.iter().any(|c| c.tenant_id == tenant) {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                90002,
                &format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."),
            ));
        }
        state
            .clients
            .iter()
            .find(|c| c.tenant_id == tenant && c.client_id == client_id)
            .cloned()
    };
    let Some(client) = client else {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant."),
        ));
    };
    let audience = check_scope(shared, scope)?;

    let secret = form.get("client_secret").filter(|v| !v.is_empty());
    let assertion = form.get("client_assertion").filter(|v| !v.is_empty());
    match (secret, assertion) {
        (Some(_), Some(_)) => {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                7000219,
                "Only one client authentication method may be used: client_secret or client_assertion.",
            ))
        }
        (None, None) => {
            return Err(reject(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            ))
        }
        (Some(secret), None) => {
            let ok = client.credentials.iter().any(|c| matches!(c, ClientCredential::Secret(s) if s == secret));
            if !ok {
                return Err(reject(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    7000215,
                    &format!("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."),
                ));
            }
        }
        (None, Some(assertion)) => {
            let kind = form.get("client_assertion_type").map(String::as_str).unwrap_or("");
            if kind != JWT_BEARER {
                return Err(reject(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    50027,
                    &format!("client_assertion_type must be {JWT_BEARER}, got '{kind}'."),
                ));
            }
            let audiences = assertion_audiences(shared, tenant, uri, headers);
            check_assertion(&client, assertion, &audiences)?;
        }
    }

    let lifetime = i64::try_from(shared.lifetime.as_secs()).unwrap_or(i64::MAX);
    let claims = Claims::new(
        tenant,
        &client.client_id,
        &client.object_id,
        &audience,
        now_secs(),
        lifetime,
    );
    let access_token = shared
        .verifier
        .mint(&claims)
        .map_err(|e| reject(StatusCode::INTERNAL_SERVER_ERROR, "server_error", 50000, &e))?;
    *shared
        .lock()
        .stats
        .issued
        .entry(client.client_id.clone())
        .or_default() += 1;
    tracing::debug!(client_id = %client.client_id, aud = %audience, "EMULATOR entra: issued token");
    Ok(json_response(
        StatusCode::OK,
        serde_json::json!({
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": access_token,
        }),
    ))
}

/// The token endpoint URLs a client assertion may name as audience: the canonical one and the
/// one under the host the client actually used (e.g. `localhost` instead of `127.0.0.1`).
fn assertion_audiences(
    shared: &Shared,
    tenant: &str,
    uri: &Uri,
    headers: &HeaderMap,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(base) = shared.base_url.get() {
        out.push(format!("{base}/{tenant}/oauth2/v2.0/token"));
    }
    let host = uri.authority().map(|a| a.as_str().to_owned()).or_else(|| {
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
    });
    if let Some(host) = host {
        out.push(format!("https://{host}/{tenant}/oauth2/v2.0/token"));
    }
    out
}

#[derive(Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
}

fn check_assertion(
    client: &RegisteredClient,
    assertion: &str,
    audiences: &[String],
) -> Result<(), Rejection> {
    let federated: Vec<&String> = client
        .credentials
        .iter()
        .filter_map(|c| match c {
            ClientCredential::FederatedToken(t) => Some(t),
            _ => None,
        })
        .collect();
    if federated.iter().any(|t| t.as_str() == assertion) {
        return Ok(());
    }
    let certs: Vec<&String> = client
        .credentials
        .iter()
        .filter_map(|c| match c {
            ClientCredential::Certificate { cert_pem } => Some(cert_pem),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        let (code, message) = if federated.is_empty() {
            (700027, "Client assertion failed signature validation: no certificate is registered for the application.")
        } else {
            (
                70021,
                "No matching federated identity record found for presented assertion.",
            )
        };
        return Err(reject(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            code,
            message,
        ));
    }
    let invalid = |code: u32, message: &str| {
        reject(StatusCode::UNAUTHORIZED, "invalid_client", code, message)
    };
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| {
        invalid(
            50027,
            "Invalid JWT token. The client assertion is not a well-formed JWT.",
        )
    })?;
    if !matches!(header.alg, Algorithm::RS256 | Algorithm::PS256) {
        return Err(invalid(
            5002738,
            &format!(
                "Invalid JWT token. Unsupported signing algorithm {:?}; use RS256 or PS256.",
                header.alg
            ),
        ));
    }
    let mut validation = Validation::new(header.alg);
    validation.leeway = 0;
    validation.set_audience(audiences);
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    validation.validate_nbf = true;
    let mut last = invalid(700027, "Client assertion failed signature validation.");
    for cert in certs {
        let Ok(key) = DecodingKey::from_rsa_pem(cert.as_bytes()) else {
            continue;
        };
        match jsonwebtoken::decode::<AssertionClaims>(assertion, &key, &validation) {
            Ok(data) => {
                if data.claims.iss != client.client_id || data.claims.sub != client.client_id {
                    return Err(invalid(
                        700023,
                        "Client assertion contains an invalid issuer or subject: both must be the client id.",
                    ));
                }
                return Ok(());
            }
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind as K;
                let rejection = match e.kind() {
                    K::InvalidSignature => continue,
                    K::ExpiredSignature | K::ImmatureSignature => {
                        invalid(700024, "Client assertion is not within its valid time range.")
                    }
                    K::InvalidAudience => invalid(
                        700021,
                        &format!("Client assertion audience claim does not match Realm issuer; expected one of {}.", audiences.join(", ")),
                    ),
                    K::MissingRequiredClaim(claim) => {
                        invalid(50027, &format!("Invalid JWT token. The client assertion is missing the '{claim}' claim."))
                    }
                    _ => invalid(50027, &format!("Invalid JWT token: {e}.")),
                };
                last = rejection;
                // A claim error means the signature matched this certificate: report it.
                return Err(last);
            }
        }
    }
    Err(last)
}

/// The query parameters of a managed identity request.
#[derive(Default)]
struct MiQuery {
    api_version: Option<String>,
    resource: Option<String>,
    client_id: Option<String>,
    object_id: Option<String>,
    msi_res_id: Option<String>,
}

impl MiQuery {
    /// Parses the query; `None` when a parameter is repeated.
    fn parse(query: &str) -> Option<Self> {
        let mut out = Self::default();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let slot = match key.as_ref() {
                "api-version" => &mut out.api_version,
                "resource" => &mut out.resource,
                "client_id" => &mut out.client_id,
                "object_id" => &mut out.object_id,
                "msi_res_id" => &mut out.msi_res_id,
                _ => continue,
            };
            if slot.replace(value.into_owned()).is_some() {
                return None;
            }
        }
        Some(out)
    }
}

fn mi_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        json_response(
            StatusCode::OK,
            serde_json::json!({
                "statusCode": status.as_u16(),
                "message": format!("{message} (EMULATOR)"),
            }),
        ),
    )
        .into_response()
}

async fn managed_identity(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Some(failure) = take_failure(&shared) {
        return failure;
    }
    let response =
        managed_identity_inner(&shared, &headers, MiQuery::parse(uri.query().unwrap_or("")));
    if !response.status().is_success() {
        shared.lock().stats.rejected += 1;
    }
    response
}

fn managed_identity_inner(
    shared: &Shared,
    headers: &HeaderMap,
    query: Option<MiQuery>,
) -> Response {
    let secret = headers
        .get("x-identity-header")
        .and_then(|v| v.to_str().ok());
    if secret != Some(shared.identity_header.as_str()) {
        return mi_error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong X-IDENTITY-HEADER",
        );
    }
    let Some(query) = query else {
        return mi_error(StatusCode::BAD_REQUEST, "malformed query string");
    };
    match query.api_version.as_deref() {
        Some(MI_API_VERSION) => {}
        other => {
            return mi_error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "unsupported api-version {other:?}; this endpoint speaks {MI_API_VERSION}"
                ),
            )
        }
    }
    let Some(resource) = query.resource.as_deref().filter(|r| !r.is_empty()) else {
        return mi_error(
            StatusCode::BAD_REQUEST,
            "the 'resource' parameter is required",
        );
    };
    if let Err(Rejection(_)) = check_resource(shared, resource) {
        return mi_error(
            StatusCode::BAD_REQUEST,
            &format!("unknown resource '{resource}'"),
        );
    }
    let identity = {
        let state = shared.lock();
        let ids = &state.managed_identities;
        match (&query.client_id, &query.object_id, &query.msi_res_id) {
            (None, None, None) => ids.iter().find(|m| m.system_assigned).cloned(),
            (Some(id), None, None) => ids.iter().find(|m| &m.client_id == id).cloned(),
            (None, Some(id), None) => ids.iter().find(|m| &m.object_id == id).cloned(),
            (None, None, Some(id)) => ids
                .iter()
                .find(|m| m.resource_id.eq_ignore_ascii_case(id))
                .cloned(),
            _ => {
                return mi_error(
                    StatusCode::BAD_REQUEST,
                    "at most one of client_id, object_id and msi_res_id may be given",
                )
            }
        }
    };
    let Some(identity) = identity else {
        return mi_error(
            StatusCode::BAD_REQUEST,
            "the requested identity has not been assigned to this resource",
        );
    };
    let lifetime = i64::try_from(shared.lifetime.as_secs()).unwrap_or(i64::MAX);
    let now = now_secs();
    let claims = Claims::new(
        &identity.tenant_id,
        &identity.client_id,
        &identity.object_id,
        resource,
        now,
        lifetime,
    );
    let access_token = match shared.verifier.mint(&claims) {
        Ok(t) => t,
        Err(e) => return mi_error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    *shared
        .lock()
        .stats
        .issued
        .entry(identity.client_id.clone())
        .or_default() += 1;
    json_response(
        StatusCode::OK,
        serde_json::json!({
            "access_token": access_token,
            "expires_on": claims.exp.to_string(),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": identity.client_id,
        }),
    )
}

#[cfg(test)]
mod tests;
