//! Tests of the identity stage against the Entra ID EMULATOR (`crate::emulator::entra`), over
//! verified TLS on loopback. Managed identity needs process environment variables and lives in
//! its own test binary, `tests/identity_managed.rs`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use tokio_util::sync::CancellationToken;

use super::refresher::refresh_delay;
use super::*;
use crate::emulator::entra::{EntraConfig, EntraEmulator, EntraHandle, RegisteredClient};
use crate::outbound::ClientError;
use crate::proxy::ProxyConfig;

use crate::emulator::azure::{CLIENT, TENANT};
/// Checked for leaks: it must never appear in errors or logs.
const SECRET: &str = "s3cr3t~Value.That-Must-Never-Leak";
const SCOPE: &str = "https://monitor.azure.com/.default";

/// A running emulator and a directory holding its CA (and whatever files a test writes).
struct Env {
    entra: EntraHandle,
    dir: tempfile::TempDir,
}

impl Env {
    async fn start(config: EntraConfig) -> Self {
        let entra = EntraEmulator::start(config).await.expect("emulator starts");
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("ca.pem"), entra.ca_pem()).expect("write CA");
        Self { entra, dir }
    }

    /// An emulator that knows the client-secret application only.
    async fn secret_client() -> Self {
        Self::start(EntraConfig {
            clients: vec![secret_client()],
            ..EntraConfig::default()
        })
        .await
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A config for `kind` against this emulator: short retries, 2 s refresh margin.
    fn config(&self, kind: IdentityKind) -> IdentityConfig {
        IdentityConfig {
            kind,
            cloud: Cloud::Public,
            tenant_id: Some(TENANT.to_string()),
            client_id: Some(CLIENT.to_string()),
            client_secret: None,
            client_certificate_path: None,
            federated_token_file: None,
            token_file: None,
            authority_host: self.entra.authority_host().parse().expect("authority url"),
            scope: SCOPE.to_string(),
            ca_file: Some(self.path("ca.pem")),
            proxy: ProxyConfig::default(),
            refresh_before_expiry: Duration::from_secs(2),
            retry_min: Duration::from_millis(50),
            retry_max: Duration::from_millis(400),
        }
    }

    fn secret_config(&self) -> IdentityConfig {
        IdentityConfig {
            client_secret: Some(Secret::new(SECRET)),
            ..self.config(IdentityKind::ClientSecret)
        }
    }
}

fn lifetime(secs: u64) -> EntraConfig {
    EntraConfig {
        token_lifetime: Duration::from_secs(secs),
        ..EntraConfig::default()
    }
}

fn secret_client() -> RegisteredClient {
    RegisteredClient::with_secret(TENANT, CLIENT, SECRET)
}

/// Polls `cond` every 20 ms until it holds or `limit` passes.
async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// A provider with its refresher running. The refresher stops when this is dropped, or
/// checked-stopped with [`Running::stop`].
struct Running {
    provider: TokenProvider,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    fn start(cfg: IdentityConfig) -> Self {
        Self::with_metrics(cfg, Metrics::default())
    }

    fn with_metrics(cfg: IdentityConfig, metrics: Metrics) -> Self {
        let provider = TokenProvider::new(cfg, metrics).expect("provider");
        Self::refresh(provider)
    }

    /// Starts the refresher of an existing provider.
    fn refresh(provider: TokenProvider) -> Self {
        let shutdown = CancellationToken::new();
        let task = provider.spawn_refresher(shutdown.clone());
        Self {
            provider,
            shutdown,
            task: Some(task),
        }
    }

    /// Waits up to `limit` for the provider's state to satisfy `cond`.
    async fn until(&self, limit: Duration, cond: impl Fn(&TokenState) -> bool) -> bool {
        eventually(limit, || cond(&self.provider.state())).await
    }

    /// The current token, waiting up to 10 s for one.
    async fn token(&self) -> Secret {
        self.provider
            .bearer(Duration::from_secs(10))
            .await
            .expect("token")
            .expect("some token")
    }

    /// Waits (up to 5 s) until `failures` fetches have failed, then returns the error a caller
    /// waiting `wait` for a token gets.
    async fn error_after(&self, failures: u64, wait: Duration) -> Error {
        assert!(
            self.until(Duration::from_secs(5), |s| s.refreshes_failed >= failures)
                .await,
            "{:?}",
            self.state()
        );
        self.provider
            .bearer(wait)
            .await
            .expect_err("no token while fetches fail")
    }

    /// Stops the refresher and checks that it ends, without a panic, within 2 s.
    async fn stop(mut self) {
        self.shutdown.cancel();
        let task = self.task.take().expect("running");
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("the refresher stops on shutdown")
            .expect("no panic");
    }
}

impl std::ops::Deref for Running {
    type Target = TokenProvider;
    fn deref(&self) -> &TokenProvider {
        &self.provider
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A config with no emulator behind it, for validation tests.
fn offline_config(kind: IdentityKind) -> IdentityConfig {
    IdentityConfig {
        kind,
        cloud: Cloud::Public,
        tenant_id: None,
        client_id: None,
        client_secret: None,
        client_certificate_path: None,
        federated_token_file: None,
        token_file: None,
        authority_host: Cloud::Public.authority_host().parse().expect("url"),
        scope: SCOPE.to_string(),
        ca_file: None,
        proxy: ProxyConfig::default(),
        refresh_before_expiry: Duration::from_secs(300),
        retry_min: Duration::from_secs(1),
        retry_max: Duration::from_secs(60),
    }
}

/// An RSA certificate and key as one PEM (key first, as the Key Vault CSI driver writes it),
/// and the certificate alone.
fn rsa_certificate() -> (String, String) {
    use aws_lc_rs::encoding::AsDer;
    let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa key");
    let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&key).expect("pkcs8");
    let pkcs8 = rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec());
    let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256)
        .expect("rcgen key");
    let cert = rcgen::CertificateParams::new(vec!["promlink-test-app".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("self-signed");
    (format!("{}{}", key.serialize_pem(), cert.pem()), cert.pem())
}

fn jwt_part(token: &str, index: usize) -> serde_json::Value {
    let part = token.split('.').nth(index).expect("jwt part");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("json")
}

#[tokio::test]
async fn client_secret_gets_a_token_for_the_scope_from_the_authority() {
    let env = Env::secret_client().await;
    for (scope, audience) in [
        (
            "https://monitor.azure.com/.default",
            "https://monitor.azure.com",
        ),
        (
            "https://monitor.azure.us/.default",
            "https://monitor.azure.us",
        ),
    ] {
        let provider = Running::start(IdentityConfig {
            scope: scope.to_string(),
            ..env.secret_config()
        });
        let token = provider.token().await;
        let claims = env
            .entra
            .verify(token.expose())
            .expect("emulator accepts its token");
        assert_eq!(claims.aud, audience);
        assert_eq!(claims.appid, CLIENT);
        assert_eq!(claims.tid, TENANT);
        let state = provider.state();
        assert!(state.valid);
        assert_eq!((state.refreshes_ok, state.refreshes_failed), (1, 0));
        assert!(state
            .expires_at
            .is_some_and(|t| t > SystemTime::now() + Duration::from_secs(3000)));
        provider.stop().await;
    }
}

#[tokio::test]
async fn wrong_scope_fails_with_the_entra_description_and_keeps_retrying() {
    let env = Env::secret_client().await;
    let cfg = IdentityConfig {
        scope: "https://storage.azure.com/.default".to_string(),
        ..env.secret_config()
    };
    let provider = Running::start(cfg);
    let err = provider.error_after(3, Duration::from_secs(1)).await;
    assert!(err.to_string().contains("AADSTS500011"), "{err}");
    let state = provider.state();
    assert!(!state.valid);
    assert!(
        state
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("AADSTS500011")),
        "{state:?}"
    );
}

#[tokio::test]
async fn client_certificate_gets_a_token_with_a_signed_assertion() {
    let (pem, cert_pem) = rsa_certificate();
    let env = Env::start(EntraConfig {
        clients: vec![RegisteredClient::with_certificate(
            TENANT, CLIENT, &cert_pem,
        )],
        ..EntraConfig::default()
    })
    .await;
    std::fs::write(env.path("app.pem"), &pem).expect("write pem");
    let cfg = IdentityConfig {
        client_certificate_path: Some(env.path("app.pem")),
        ..env.config(IdentityKind::ClientCertificate)
    };
    let provider = Running::start(cfg);
    let token = provider.token().await;
    let claims = env
        .entra
        .verify(token.expose())
        .expect("emulator accepts its token");
    assert_eq!(
        (claims.appid.as_str(), claims.aud.as_str()),
        (CLIENT, "https://monitor.azure.com")
    );
}

#[test]
fn client_assertion_has_the_documented_header_and_claims() {
    use aws_lc_rs::digest;
    let (pem, cert_pem) = rsa_certificate();
    let key =
        certificate::CertificateKey::from_pem(Path::new("app.pem"), pem.as_bytes()).expect("key");
    let audience = format!("https://login.example/{TENANT}/oauth2/v2.0/token");
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let jwt = key.assertion(CLIENT, &audience, now).expect("assertion");
    let header = jwt_part(&jwt, 0);
    let claims = jwt_part(&jwt, 1);
    use rustls_pki_types::pem::PemObject as _;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .expect("der")
        .to_vec();
    let thumb = |alg| URL_SAFE_NO_PAD.encode(digest::digest(alg, &der).as_ref());
    assert_eq!(header["alg"], "PS256");
    assert_eq!(header["x5t#S256"], thumb(&digest::SHA256));
    assert_eq!(header["x5t"], thumb(&digest::SHA1_FOR_LEGACY_USE_ONLY));
    assert_eq!(claims["aud"], audience.as_str());
    assert_eq!(
        (claims["iss"].as_str(), claims["sub"].as_str()),
        (Some(CLIENT), Some(CLIENT))
    );
    assert_eq!(
        (claims["nbf"].as_u64(), claims["exp"].as_u64()),
        (Some(1_700_000_000), Some(1_700_000_600))
    );
    let jti = claims["jti"].as_str().expect("jti");
    let other = key.assertion(CLIENT, &audience, now).expect("assertion");
    assert_ne!(
        jwt_part(&other, 1)["jti"].as_str(),
        Some(jti),
        "jti is unique per assertion"
    );
}

#[test]
fn certificate_files_that_cannot_sign_are_refused_with_a_reason() {
    let ec = rcgen::KeyPair::generate().expect("ec key");
    let ec_cert = rcgen::CertificateParams::new(vec!["x".to_string()])
        .expect("params")
        .self_signed(&ec)
        .expect("cert");
    let (rsa_pem, rsa_cert) = rsa_certificate();
    let key_only = rsa_pem.replace(&rsa_cert, "");
    for (pem, expected) in [
        (
            format!("{}{}", ec.serialize_pem(), ec_cert.pem()),
            "not an RSA key",
        ),
        (rsa_cert.clone(), "no unencrypted PRIVATE KEY"),
        (key_only, "no CERTIFICATE"),
        (String::new(), "no CERTIFICATE"),
    ] {
        let err = certificate::CertificateKey::from_pem(Path::new("app.pem"), pem.as_bytes())
            .expect_err("refused");
        assert!(
            err.to_string().contains(expected),
            "{err} should say {expected}"
        );
    }
}

#[tokio::test]
async fn workload_identity_rereads_the_federated_token_file_on_every_exchange() {
    let env = Env::start(EntraConfig {
        clients: vec![RegisteredClient::with_federated_token(
            TENANT,
            CLIENT,
            "sa-token-1",
        )],
        ..EntraConfig::default()
    })
    .await;
    let file = env.path("azure-identity-token");
    std::fs::write(&file, "sa-token-1\n").expect("write token");
    let cfg = IdentityConfig {
        federated_token_file: Some(file.clone()),
        ..env.config(IdentityKind::Workload)
    };
    let provider = Running::start(cfg);
    let first = provider.token().await;
    assert_eq!(
        env.entra.verify(first.expose()).expect("valid").appid,
        CLIENT
    );

    // kubelet rotates the projected token; Entra now only accepts the new one.
    env.entra.add_client(RegisteredClient::with_federated_token(
        TENANT,
        CLIENT,
        "sa-token-2",
    ));
    std::fs::write(&file, "sa-token-2").expect("rotate token");
    provider.invalidate(&first);
    assert!(
        provider
            .until(Duration::from_secs(5), |s| s.refreshes_ok == 2)
            .await,
        "{:?}",
        provider.state()
    );
    assert_eq!(
        provider.state().refreshes_failed,
        0,
        "the rotated file was read, not a stale copy"
    );
}

#[tokio::test]
async fn refreshes_before_expiry_and_never_hands_out_an_expired_token() {
    let env = Env::start(EntraConfig {
        clients: vec![secret_client()],
        ..lifetime(3)
    })
    .await;
    let provider = Running::start(env.secret_config());
    let first = provider.token().await;
    let first_expiry = provider.state().expires_at.expect("expiry");
    // Lifetime 3 s, refresh 2 s ahead: a new token about 1 s later, well before the first expires.
    assert!(
        provider
            .until(Duration::from_secs(3), |s| s.refreshes_ok >= 2)
            .await
    );
    let refreshed_at = SystemTime::now();
    assert!(refreshed_at < first_expiry, "refreshed before expiry");
    assert!(provider.state().expires_at.expect("expiry") > first_expiry);
    // Every token handed out over a few refresh cycles is unexpired when handed out.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let token = provider
            .bearer(Duration::from_secs(1))
            .await
            .expect("token")
            .expect("some token");
        env.entra.verify(token.expose()).expect("unexpired token");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(provider.state().refreshes_ok >= 3, "{:?}", provider.state());
    assert_eq!(provider.state().refreshes_failed, 0);
    drop(first);
}

#[tokio::test]
async fn retries_injected_failures_with_backoff_and_recovers() {
    let env = Env::secret_client().await;
    env.entra.fail_next(4, 503);
    let mut registry = prometheus_client::registry::Registry::with_prefix("promlink");
    let metrics = Metrics::register(&mut registry);
    let started = Instant::now();
    let provider = Running::with_metrics(env.secret_config(), metrics);
    let err = provider.error_after(1, Duration::from_secs(1)).await;
    assert!(err.to_string().contains("AADSTS50196"), "{err}");
    let token = loop {
        match provider.bearer(Duration::from_secs(1)).await {
            Ok(token) => break token.expect("some token"),
            Err(_) if started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("did not recover: {e}"),
        }
    };
    // Four failures wait at least half of 50, 100, 200 and 400 ms (jitter scales by 0.5..1).
    assert!(
        started.elapsed() >= Duration::from_millis(375),
        "backed off: {:?}",
        started.elapsed()
    );
    env.entra.verify(token.expose()).expect("valid token");
    let state = provider.state();
    assert_eq!(
        (state.refreshes_ok, state.refreshes_failed, state.last_error),
        (1, 4, None)
    );
    assert_eq!(env.entra.stats().injected, 4);

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    assert!(
        text.contains("promlink_token_refreshes_total{outcome=\"failure\"} 4"),
        "{text}"
    );
    assert!(
        text.contains("promlink_token_refreshes_total{outcome=\"success\"} 1"),
        "{text}"
    );
    assert!(text.contains("promlink_token_valid 1"), "{text}");
    assert!(
        !text.contains("promlink_token_expiry_timestamp_seconds 0"),
        "{text}"
    );
}

#[tokio::test]
async fn invalidate_forces_exactly_one_refresh_per_token() {
    let env = Env::secret_client().await;
    let provider = Running::start(env.secret_config());
    let token = provider.token().await;
    assert_eq!(env.entra.issued(CLIENT), 1);

    // A burst of requests all rejected with the same token: one refresh.
    for _ in 0..20 {
        provider.invalidate(&token);
    }
    assert!(
        provider
            .until(Duration::from_secs(5), |s| s.refreshes_ok == 2)
            .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.entra.issued(CLIENT), 2);
    assert_eq!(provider.state().refreshes_ok, 2);

    // A token that is not the current one (stale, or never ours) changes nothing.
    provider.invalidate(&Secret::new("not-the-current-token"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.entra.issued(CLIENT), 2);
}

#[tokio::test]
async fn token_file_is_reread_when_it_changes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("token");
    std::fs::write(&file, "  first-token\n").expect("write");
    let cfg = IdentityConfig {
        token_file: Some(file.clone()),
        ..offline_config(IdentityKind::TokenFile)
    };
    let provider = TokenProvider::new(cfg, Metrics::default()).expect("provider");
    let wait = Duration::from_millis(200);
    let read = |provider: &TokenProvider| {
        let provider = provider.clone();
        async move {
            let token = provider.bearer(wait).await.expect("token").expect("some");
            token.expose().to_string()
        }
    };
    assert_eq!(read(&provider).await, "first-token");
    assert_eq!(read(&provider).await, "first-token");
    assert_eq!(
        provider.state().refreshes_ok,
        1,
        "an unchanged file is not re-read"
    );

    std::fs::write(&file, "second-token-longer\n").expect("rewrite");
    assert_eq!(read(&provider).await, "second-token-longer");
    assert_eq!(provider.state().refreshes_ok, 2);

    // A JWT whose exp has passed is never handed out.
    let claims = URL_SAFE_NO_PAD.encode(br#"{"exp":1000000000}"#);
    std::fs::write(&file, format!("eyJhbGciOiJub25lIn0.{claims}.sig")).expect("rewrite");
    let err = provider
        .bearer(wait)
        .await
        .expect_err("expired token refused");
    assert!(err.to_string().contains("expired"), "{err}");
    assert!(!provider.state().valid);

    // A JWT with a future exp is used, with that expiry.
    let exp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("now")
        .as_secs()
        + 3600;
    let claims = URL_SAFE_NO_PAD.encode(format!(r#"{{"exp":{exp}}}"#));
    std::fs::write(&file, format!("eyJhbGciOiJub25lIn0.{claims}.sig")).expect("rewrite");
    assert!(provider.bearer(wait).await.expect("token").is_some());
    assert_eq!(
        provider.state().expires_at,
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(exp))
    );

    std::fs::remove_file(&file).expect("remove");
    assert!(
        provider.bearer(wait).await.is_ok(),
        "a vanished file keeps the last good token"
    );
    assert!(provider.state().last_error.is_some());
}

#[tokio::test]
async fn token_file_refresher_notices_changes_without_requests() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("token");
    std::fs::write(&file, "one").expect("write");
    let cfg = IdentityConfig {
        token_file: Some(file.clone()),
        ..offline_config(IdentityKind::TokenFile)
    };
    let provider = Running::start(cfg);
    assert!(
        provider
            .until(Duration::from_secs(3), |s| s.refreshes_ok == 1)
            .await
    );
    std::fs::write(&file, "two!").expect("rewrite");
    assert!(
        provider
            .until(Duration::from_secs(3), |s| s.refreshes_ok == 2)
            .await
    );
    provider.stop().await;
}

#[tokio::test]
async fn secrets_and_tokens_never_appear_in_debug_display_or_errors() {
    let env = Env::secret_client().await;

    // A wrong secret: the error carries Entra's description, not the secret sent.
    let wrong = "Wr0ng~Secret.Value-Also-Secret";
    let cfg = IdentityConfig {
        client_secret: Some(Secret::new(wrong)),
        ..env.secret_config()
    };
    assert!(!format!("{cfg:?}").contains(wrong));
    let provider = Running::start(cfg);
    let err = provider.error_after(1, Duration::from_millis(100)).await;
    let last_error = provider.state().last_error.expect("last error");
    assert!(last_error.contains("AADSTS7000215"), "{last_error}");
    for text in [
        format!("{err}"),
        format!("{err:?}"),
        last_error,
        format!("{:?}", *provider),
    ] {
        assert!(!text.contains(wrong), "secret leaked: {text}");
    }
    drop(provider);

    // The right secret: the token appears in no Debug output.
    let provider = Running::start(env.secret_config());
    let token = provider.token().await;
    for text in [
        format!("{:?}", *provider),
        format!("{:?}", provider.state()),
        format!("{token:?} {token}"),
    ] {
        assert!(
            !text.contains(token.expose()) && !text.contains(SECRET),
            "leaked: {text}"
        );
    }
    drop(provider);

    // Errors from the request path (fetch of a token directly, not through the provider).
    let source = source::Entra::new(
        &IdentityConfig {
            client_secret: Some(Secret::new(wrong)),
            ..env.secret_config()
        },
        http::client_options(
            http::client(Some(env.path("ca.pem").as_path()), &ProxyConfig::default())
                .expect("client"),
            &env.entra.authority_host().parse().expect("url"),
        ),
    )
    .expect("source");
    let err = source.fetch().await.expect_err("refused");
    for text in [
        format!("{err}"),
        format!("{err:?}"),
        crate::outbound::error_chain(&err),
    ] {
        assert!(!text.contains(wrong), "secret leaked: {text}");
    }
}

#[test]
fn config_validation_lists_every_problem() {
    let cases: Vec<(IdentityConfig, &[&str])> = vec![
        (
            offline_config(IdentityKind::ClientSecret),
            &["needs tenant_id", "needs client_id", "needs client_secret"],
        ),
        (
            offline_config(IdentityKind::ClientCertificate),
            &["needs tenant_id", "needs client_certificate_path"],
        ),
        (
            offline_config(IdentityKind::Workload),
            &["needs tenant_id", "needs federated_token_file"],
        ),
        (
            offline_config(IdentityKind::UserAssigned),
            &["needs client_id"],
        ),
        (
            offline_config(IdentityKind::TokenFile),
            &["needs token_file"],
        ),
        (
            IdentityConfig {
                tenant_id: Some(TENANT.into()),
                client_id: Some(CLIENT.into()),
                client_secret: Some(Secret::new(SECRET)),
                authority_host: "http://login.example".parse().expect("url"),
                scope: " ".into(),
                retry_min: Duration::from_secs(10),
                retry_max: Duration::from_secs(1),
                ..offline_config(IdentityKind::ClientSecret)
            },
            &["must use https", "scope is empty", "retry_max"],
        ),
    ];
    for (cfg, expected) in cases {
        let kind = cfg.kind;
        let err = TokenProvider::new(cfg, Metrics::default()).expect_err("refused");
        let text = err.to_string();
        assert!(
            matches!(err, Error::InvalidConfig { .. }),
            "{kind:?}: {err:?}"
        );
        for needle in expected {
            assert!(
                text.contains(needle),
                "{kind:?}: {text} should contain {needle}"
            );
        }
        assert!(!text.contains(SECRET));
    }
    // Valid without I/O: no file is read and nothing is contacted.
    let ok = IdentityConfig {
        tenant_id: Some(TENANT.into()),
        client_id: Some(CLIENT.into()),
        client_certificate_path: Some("/nonexistent/app.pem".into()),
        ..offline_config(IdentityKind::ClientCertificate)
    };
    TokenProvider::new(ok, Metrics::default()).expect("valid config");
    // azure_identity's own checks surface at construction, e.g. a malformed tenant id.
    let bad_tenant = IdentityConfig {
        tenant_id: Some("not a tenant/../".into()),
        client_id: Some(CLIENT.into()),
        client_secret: Some(Secret::new(SECRET)),
        ..offline_config(IdentityKind::ClientSecret)
    };
    let err = TokenProvider::new(bad_tenant, Metrics::default()).expect_err("refused");
    assert!(matches!(err, Error::Credential { .. }), "{err:?}");
}

#[test]
fn a_ca_file_without_certificates_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate").expect("write");
    let cfg = IdentityConfig {
        tenant_id: Some(TENANT.into()),
        client_id: Some(CLIENT.into()),
        client_secret: Some(Secret::new(SECRET)),
        ca_file: Some(ca),
        ..offline_config(IdentityKind::ClientSecret)
    };
    let err = TokenProvider::new(cfg.clone(), Metrics::default()).expect_err("refused");
    assert!(
        matches!(err, Error::HttpClient(ClientError::CaPem { .. })),
        "{err:?}"
    );
    let cfg = IdentityConfig {
        ca_file: Some(dir.path().join("missing.pem")),
        ..cfg
    };
    let err = TokenProvider::new(cfg, Metrics::default()).expect_err("refused");
    assert!(
        matches!(err, Error::HttpClient(ClientError::CaRead { .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn kind_none_has_no_token_and_is_always_ready() {
    let provider = TokenProvider::new(offline_config(IdentityKind::None), Metrics::default())
        .expect("provider");
    let task = provider.spawn_refresher(CancellationToken::new());
    assert!(provider.bearer(Duration::ZERO).await.expect("ok").is_none());
    assert!(provider.state().valid);
    task.await.expect("returns at once");
}

#[tokio::test]
async fn bearer_waits_at_most_the_given_time_for_a_first_token() {
    let env = Env::secret_client().await;
    let provider = TokenProvider::new(env.secret_config(), Metrics::default()).expect("provider");
    // No refresher: nothing will arrive.
    let err = provider
        .bearer(Duration::from_millis(100))
        .await
        .expect_err("times out");
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    // With a refresher started after the caller began waiting, the caller gets the first token.
    let waiter = {
        let provider = provider.clone();
        tokio::spawn(async move { provider.bearer(Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _provider = Running::refresh(provider);
    let token = waiter.await.expect("join").expect("token").expect("some");
    env.entra.verify(token.expose()).expect("valid");
}

#[test]
fn refresh_delay_keeps_the_margin_or_half_the_life() {
    let now = SystemTime::now();
    let floor = Duration::from_millis(100);
    let m = Duration::from_secs(300);
    let about = |d: Duration, secs: u64| {
        d.as_secs_f64() > secs as f64 - 2.0 && d.as_secs_f64() <= secs as f64
    };
    assert!(about(
        refresh_delay(Some(now + Duration::from_secs(3600)), m, floor),
        3300
    ));
    assert!(about(
        refresh_delay(Some(now + Duration::from_secs(200)), m, floor),
        100
    ));
    assert_eq!(
        refresh_delay(Some(now - Duration::from_secs(5)), m, floor),
        floor
    );
}

/// Runs a client-secret provider against `authority` with `proxy` until it has a token or its
/// first fetch failed; returns the token's outcome and the provider's last error.
async fn token_via(
    env: &Env,
    authority: &str,
    proxy: ProxyConfig,
) -> (Result<Secret, String>, Option<String>) {
    let provider = Running::start(IdentityConfig {
        authority_host: authority.parse().expect("authority url"),
        proxy,
        ..env.secret_config()
    });
    let token = provider
        .bearer(Duration::from_secs(10))
        .await
        .map(|t| t.expect("some token"))
        .map_err(|e| e.to_string());
    let last_error = provider.state().last_error;
    provider.stop().await;
    (token, last_error)
}

/// Entra ID through the egress proxy: the authority's name is known only to the proxy
/// emulator, so a token proves the request went through it, authenticated with the
/// credentials from the proxy URL. Wrong credentials fail without the password appearing
/// anywhere; a loopback authority never goes through the proxy.
#[tokio::test]
async fn authority_through_the_egress_proxy() {
    use crate::emulator::proxy::{ProxyEmulator, ProxyEmulatorConfig};
    const NAME: &str = "login.proxy.test";
    const PASSWORD: &str = "pr0xy-Pa55word";
    let env = Env::start(EntraConfig {
        clients: vec![secret_client()],
        tls_names: vec![NAME.into()],
        ..EntraConfig::default()
    })
    .await;
    let proxy = ProxyEmulator::start(ProxyEmulatorConfig {
        routes: vec![(NAME.into(), [127, 0, 0, 1].into())],
        credentials: Some(("promlink".into(), PASSWORD.into())),
        ..ProxyEmulatorConfig::default()
    })
    .await
    .unwrap();
    let port = env.entra.addr().port();
    let authority = format!("https://{NAME}:{port}");
    let egress = |password: &str| {
        ProxyConfig::new(Some(&proxy.url_with("promlink", password)), None, "").unwrap()
    };
    // The name is resolvable only by the proxy: never let a wrong decision look it up here.
    assert!(egress(PASSWORD)
        .route(&authority.parse().unwrap())
        .is_proxy());

    let (token, _) = token_via(&env, &authority, egress(PASSWORD)).await;
    let token = token.expect("a token through the proxy");
    assert!(env.entra.verify(token.expose()).is_ok());
    assert!(proxy.count_host(NAME) >= 1, "{:?}", proxy.targets());
    assert_eq!(proxy.auth_failures(), 0);

    let (token, last_error) = token_via(&env, &authority, egress("wrong-password")).await;
    let err = token.expect_err("wrong proxy credentials");
    assert!(proxy.auth_failures() >= 1);
    let last_error = last_error.unwrap_or_default();
    for text in [&err, &last_error] {
        assert!(
            !text.contains("wrong-password") && !text.contains(PASSWORD),
            "{text}"
        );
    }
    assert!(
        last_error.contains("proxy authorization required"),
        "{last_error}"
    );

    // A loopback authority is reached directly, even with the proxy refusing everything.
    proxy.set_refuse(true);
    let before = proxy.targets().len();
    let (token, _) = token_via(&env, env.entra.authority_host(), egress(PASSWORD)).await;
    assert!(token.is_ok(), "{token:?}");
    assert_eq!(proxy.targets().len(), before, "{:?}", proxy.targets());
    proxy.shutdown().await;
}
