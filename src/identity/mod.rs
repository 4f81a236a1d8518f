//! Entra ID token acquisition, caching and refresh: the `Authorization: Bearer` header of every
//! upstream request comes from here.
//!
//! A [`TokenProvider`] holds one credential, chosen by [`IdentityKind`], and the current token.
//! Its background refresher ([`TokenProvider::spawn_refresher`]) fetches a token at once,
//! refreshes it `refresh_before_expiry` ahead of expiry and retries failures for ever with capped,
//! jittered exponential backoff. It never gives up, unlike Azure's aad-auth-proxy, which stops
//! refreshing after one failure. The upstream client asks [`TokenProvider::bearer`] for the
//! token on every request (a lock and a clone; no I/O except a `stat` for token-file) and calls
//! [`TokenProvider::invalidate`] when the upstream answers 401 or 403, which forces one early
//! refresh per token. An expired token is never handed out.
//!
//! # Credentials
//! - system-/user-assigned managed identity: azure_identity's `ManagedIdentityCredential`, which
//!   uses the App Service style endpoint when `IDENTITY_ENDPOINT`/`IDENTITY_HEADER` are set and
//!   IMDS otherwise (the authority host does not apply to managed identity);
//! - workload identity: azure_identity's `ClientAssertionCredential` with an assertion that
//!   re-reads the federated token file on every exchange (kubelet rotates it; azure_identity's
//!   `WorkloadIdentityCredential` keeps it for ten minutes and insists on environment variables);
//! - client secret: azure_identity's `ClientSecretCredential`;
//! - client certificate: `ClientAssertionCredential` with a PS256 JWT we sign from the PEM file
//!   ([`certificate`]), since azure_identity's certificate credential needs openssl and PKCS#12;
//! - token-file: a bearer token read from a file when it changes ([`token_file`]);
//! - none: no header.
//!
//! Entra requests go through one reqwest client trusting `ca_file` ([`http`]), to
//! `authority_host`, with scope `scope`: the OAuth 2.0 client credentials grant,
//! <https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow>.

mod certificate;
pub mod config;
mod error;
mod http;
mod metrics;
mod refresher;
mod source;
mod token_file;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

pub use config::*;
pub use error::Error;
pub use metrics::Metrics;

use crate::secret::Secret;
use metrics::Outcome;
use source::{Entra, Fetched};
use token_file::{Check, TokenFile};

/// Gets, caches and refreshes the token for the upstream. Cheap to clone: clones share it all.
#[derive(Clone)]
pub struct TokenProvider {
    inner: Arc<Inner>,
}

/// A snapshot of the provider, for `/ready`, logs and the demo's live view. Holds no token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenState {
    /// The configured identity kind.
    pub kind: IdentityKind,
    /// Whether an unexpired token is ready (always true for kind `none`).
    pub valid: bool,
    /// When the current token expires; `None` without a token or for a non-JWT token file.
    pub expires_at: Option<SystemTime>,
    /// The last failure to get a token, cleared by the next success.
    pub last_error: Option<String>,
    /// Tokens obtained (fetches, or token file changes).
    pub refreshes_ok: u64,
    /// Failed fetches (for token-file: each new failure, not every check of a still-broken file).
    pub refreshes_failed: u64,
}

pub(crate) enum Source {
    None,
    TokenFile(TokenFile),
    Entra(Box<Entra>),
}

pub(crate) struct Inner {
    kind: IdentityKind,
    source: Source,
    refresh_before_expiry: Duration,
    retry_min: Duration,
    retry_max: Duration,
    metrics: Metrics,
    shared: Mutex<Shared>,
    /// Bumped whenever `shared` changes, to wake `bearer()` callers waiting for a token.
    changed: watch::Sender<u64>,
    /// Asks the refresher to fetch now (after `invalidate()`).
    refresh_now: Notify,
    refresher_started: AtomicBool,
}

#[derive(Default)]
struct Shared {
    current: Option<Current>,
    last_error: Option<String>,
    refreshes_ok: u64,
    refreshes_failed: u64,
}

struct Current {
    token: Secret,
    expires_at: Option<SystemTime>,
    /// The upstream rejected this token and a refresh was requested for it.
    invalidated: bool,
}

impl Current {
    fn is_valid(&self, now: SystemTime) -> bool {
        self.expires_at.is_none_or(|t| t > now)
    }
}

impl TokenProvider {
    /// Validates the config (e.g. a missing tenant for client-secret) and builds the credential.
    /// Reads `ca_file` when set, so a bad CA fails at startup; sends nothing anywhere.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] listing every problem, a CA file error, or azure_identity's
    /// refusal to build the credential (e.g. a malformed tenant id).
    pub fn new(cfg: IdentityConfig, metrics: Metrics) -> Result<Self, Error> {
        validate(&cfg)?;
        let source = match cfg.kind {
            IdentityKind::None => Source::None,
            IdentityKind::TokenFile => {
                Source::TokenFile(TokenFile::new(cfg.token_file.clone().unwrap_or_default()))
            }
            _ => {
                let client = http::client(cfg.ca_file.as_deref(), &cfg.proxy)?;
                let options = http::client_options(client, &cfg.authority_host);
                Source::Entra(Box::new(Entra::new(&cfg, options)?))
            }
        };
        let inner = Inner {
            kind: cfg.kind,
            source,
            refresh_before_expiry: cfg.refresh_before_expiry,
            retry_min: cfg.retry_min,
            retry_max: cfg.retry_max,
            metrics,
            shared: Mutex::new(Shared::default()),
            changed: watch::Sender::new(0),
            refresh_now: Notify::new(),
            refresher_started: AtomicBool::new(false),
        };
        inner.publish();
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Spawns the background refresher on the current tokio runtime. It fetches the first token
    /// at once, refreshes `refresh_before_expiry` before expiry, retries failures with capped
    /// exponential backoff and jitter for ever, and stops when `shutdown` is cancelled.
    ///
    /// Call it once; a second call returns a task that does nothing.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn_refresher(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        if self.inner.refresher_started.swap(true, Ordering::SeqCst) {
            tracing::warn!("the token refresher is already running; not starting a second one");
            return tokio::spawn(async {});
        }
        tokio::spawn(refresher::run(self.inner.clone(), shutdown))
    }

    /// The current valid bearer token, waiting up to `wait` for one while none has been fetched
    /// yet; `Ok(None)` for kind `none`.
    ///
    /// # Errors
    /// [`Error::Unavailable`] at once when there is no valid token and the last fetch failed,
    /// [`Error::Timeout`] when no token arrived within `wait`. The caller retries later.
    pub async fn bearer(&self, wait: Duration) -> Result<Option<Secret>, Error> {
        let inner = &self.inner;
        match &inner.source {
            Source::None => return Ok(None),
            Source::TokenFile(file) => inner.check_token_file(file, false),
            Source::Entra(_) => {}
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut changed = inner.changed.subscribe();
        loop {
            {
                let shared = inner.lock();
                // A token about to expire would expire in flight: hand out only one with a
                // margin left (half the refresh lead, at most 10 s).
                let margin = (inner.refresh_before_expiry / 2).min(Duration::from_secs(10));
                if let Some(current) = shared
                    .current
                    .as_ref()
                    .filter(|c| c.is_valid(SystemTime::now() + margin))
                {
                    return Ok(Some(current.token.clone()));
                }
                if let Some(last_error) = &shared.last_error {
                    return Err(Error::Unavailable {
                        last_error: last_error.clone(),
                    });
                }
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Err(Error::Timeout { waited: wait }),
            }
        }
    }

    /// The upstream answered 401 or 403 to a request sent with `token`: refresh now. Only the
    /// first call for the current token has an effect, however many requests failed with it;
    /// a stale token (already replaced) is ignored. The token stays in use until replaced.
    pub fn invalidate(&self, token: &Secret) {
        let inner = &self.inner;
        {
            let mut shared = inner.lock();
            match shared.current.as_mut() {
                Some(current) if !current.invalidated && current.token == *token => {
                    current.invalidated = true
                }
                _ => return,
            }
        }
        inner.metrics.invalidated();
        tracing::info!(
            kind = inner.kind.as_str(),
            "the upstream rejected the token; refreshing it now"
        );
        match &inner.source {
            Source::TokenFile(file) => inner.check_token_file(file, true),
            Source::Entra(_) => inner.refresh_now.notify_one(),
            Source::None => {}
        }
    }

    /// A snapshot of the provider's state. Holds no token.
    pub fn state(&self) -> TokenState {
        let inner = &self.inner;
        let shared = inner.lock();
        let valid = inner.kind == IdentityKind::None
            || shared
                .current
                .as_ref()
                .is_some_and(|c| c.is_valid(SystemTime::now()));
        TokenState {
            kind: inner.kind,
            valid,
            expires_at: shared.current.as_ref().and_then(|c| c.expires_at),
            last_error: shared.last_error.clone(),
            refreshes_ok: shared.refreshes_ok,
            refreshes_failed: shared.refreshes_failed,
        }
    }
}

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenProvider")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock leaves consistent data: every update is one assignment.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Updates the `valid` and expiry gauges and wakes waiters.
    fn publish(&self) {
        let (valid, expires_at) = {
            let shared = self.lock();
            let current = shared.current.as_ref();
            let valid = self.kind == IdentityKind::None
                || current.is_some_and(|c| c.is_valid(SystemTime::now()));
            (valid, current.and_then(|c| c.expires_at))
        };
        self.metrics.publish(valid, expires_at);
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// When the current token expires, if it does.
    fn expires_at(&self) -> Option<SystemTime> {
        self.lock().current.as_ref().and_then(|c| c.expires_at)
    }

    /// Stores a newly obtained token.
    fn store(&self, fetched: Fetched) {
        {
            let mut shared = self.lock();
            let invalidated = shared
                .current
                .as_ref()
                .is_some_and(|c| c.invalidated && c.token == fetched.token);
            shared.current = Some(Current {
                token: fetched.token,
                expires_at: fetched.expires_at,
                invalidated,
            });
            shared.last_error = None;
            shared.refreshes_ok += 1;
        }
        self.metrics.refreshed(Outcome::Success);
        let expires_in = fetched
            .expires_at
            .and_then(|t| t.duration_since(SystemTime::now()).ok());
        tracing::debug!(kind = self.kind.as_str(), ?expires_in, "got a new token");
        self.publish();
    }

    /// Records a failure to get a token; `retry_in` is when the refresher tries again. With
    /// `only_if_new` (token-file, checked every second) a repeat of the last failure is ignored.
    fn fail(&self, err: &Error, retry_in: Option<Duration>, only_if_new: bool) {
        let report = crate::outbound::error_chain(err);
        {
            let mut shared = self.lock();
            if only_if_new && shared.last_error.as_deref() == Some(report.as_str()) {
                return;
            }
            shared.last_error = Some(report.clone());
            shared.refreshes_failed += 1;
        }
        self.metrics.refreshed(Outcome::Failure);
        tracing::warn!(kind = self.kind.as_str(), error = %report, ?retry_in, "getting a token failed");
        self.publish();
    }

    /// Re-reads the token file if it changed (or always, with `force`) and records the result.
    fn check_token_file(&self, file: &TokenFile, force: bool) {
        match file.check(force) {
            Check::Unchanged => {}
            Check::Failed(err) => self.fail(&err, None, true),
            Check::Read(fetched) => {
                if fetched.expires_at.is_some_and(|t| t <= SystemTime::now()) {
                    self.lock().current = None;
                    self.fail(
                        &Error::FileTokenExpired {
                            path: file.path().to_owned(),
                        },
                        None,
                        true,
                    );
                    return;
                }
                let unchanged = {
                    let shared = self.lock();
                    shared.last_error.is_none()
                        && shared
                            .current
                            .as_ref()
                            .is_some_and(|c| c.token == fetched.token)
                };
                if !unchanged {
                    self.store(fetched);
                }
            }
        }
    }
}

/// Checks that `cfg` has what its kind needs; lists every problem.
fn validate(cfg: &IdentityConfig) -> Result<(), Error> {
    let kind = cfg.kind;
    let mut problems = Vec::new();
    let mut need = |present: bool, key: &str| {
        if !present {
            problems.push(format!("identity kind {} needs {key}", kind.as_str()));
        }
    };
    let text = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
    let entra = matches!(
        kind,
        IdentityKind::Workload | IdentityKind::ClientSecret | IdentityKind::ClientCertificate
    );
    if entra {
        need(text(&cfg.tenant_id), "tenant_id");
    }
    match kind {
        IdentityKind::UserAssigned
        | IdentityKind::Workload
        | IdentityKind::ClientSecret
        | IdentityKind::ClientCertificate => {
            need(text(&cfg.client_id), "client_id");
        }
        _ => {}
    }
    match kind {
        IdentityKind::Workload => need(cfg.federated_token_file.is_some(), "federated_token_file"),
        IdentityKind::ClientSecret => need(
            cfg.client_secret.as_ref().is_some_and(|s| !s.is_empty()),
            "client_secret",
        ),
        IdentityKind::ClientCertificate => need(
            cfg.client_certificate_path.is_some(),
            "client_certificate_path",
        ),
        IdentityKind::TokenFile => need(cfg.token_file.is_some(), "token_file"),
        _ => {}
    }
    let fetches = !matches!(kind, IdentityKind::TokenFile | IdentityKind::None);
    if fetches {
        if cfg.scope.trim().is_empty() {
            problems.push("scope is empty".to_string());
        }
        if cfg.retry_min.is_zero() {
            problems.push("retry_min must be more than 0".to_string());
        }
        if cfg.retry_max < cfg.retry_min {
            problems.push(format!(
                "retry_max ({:?}) must not be less than retry_min ({:?})",
                cfg.retry_max, cfg.retry_min
            ));
        }
    }
    if entra && cfg.authority_host.scheme() != "https" {
        problems.push(format!(
            "authority_host must use https, not {}",
            cfg.authority_host
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidConfig { problems })
    }
}
