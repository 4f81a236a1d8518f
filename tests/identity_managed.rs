//! Managed identity against the Entra ID EMULATOR's App Service style endpoint on 127.0.0.1.
//!
//! azure_identity picks the App Service protocol from the process environment
//! (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`), so this binary holds exactly one test: nothing else
//! can race on the environment, and with the variables set nothing goes to IMDS
//! (169.254.169.254).

use std::time::{Duration, Instant};

use promlink::emulator::entra::{EntraConfig, EntraEmulator, ManagedIdentity};
use promlink::identity::{Cloud, IdentityConfig, IdentityKind, Metrics, TokenProvider};
use tokio_util::sync::CancellationToken;

use promlink::emulator::azure::TENANT;

#[tokio::test]
async fn managed_identity_system_and_user_assigned_via_app_service_endpoint() {
    let entra = EntraEmulator::start(EntraConfig {
        managed_identities: vec![
            ManagedIdentity::system_assigned(TENANT, "system-client"),
            ManagedIdentity::user_assigned(TENANT, "user-client"),
        ],
        ..EntraConfig::default()
    })
    .await
    .expect("emulator starts");
    let endpoint = entra.identity_endpoint();
    assert!(
        endpoint.starts_with("https://127.0.0.1:"),
        "loopback only: {endpoint}"
    );
    // Single test in this binary: no other thread reads or writes the environment.
    std::env::set_var("IDENTITY_ENDPOINT", &endpoint);
    std::env::set_var("IDENTITY_HEADER", entra.identity_header());
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, entra.ca_pem()).expect("write CA");
    let config = |kind, client_id: Option<&str>| IdentityConfig {
        kind,
        cloud: Cloud::Public,
        tenant_id: None,
        client_id: client_id.map(str::to_string),
        client_secret: None,
        client_certificate_path: None,
        federated_token_file: None,
        token_file: None,
        authority_host: Cloud::Public.authority_host().parse().expect("url"),
        scope: Cloud::Public.monitor_scope().to_string(),
        ca_file: Some(ca.clone()),
        proxy: Default::default(),
        refresh_before_expiry: Duration::from_secs(300),
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
    };
    let shutdown = CancellationToken::new();

    for (kind, client_id, expected) in [
        (IdentityKind::SystemAssigned, None, "system-client"),
        (
            IdentityKind::UserAssigned,
            Some("user-client"),
            "user-client",
        ),
    ] {
        let provider =
            TokenProvider::new(config(kind, client_id), Metrics::default()).expect("provider");
        let _task = provider.spawn_refresher(shutdown.clone());
        let token = provider
            .bearer(Duration::from_secs(10))
            .await
            .expect("token")
            .expect("some token");
        let claims = entra
            .verify(token.expose())
            .expect("emulator accepts its token");
        assert_eq!(
            (claims.appid.as_str(), claims.aud.as_str()),
            (expected, "https://monitor.azure.com")
        );

        // invalidate() gets a new token although the old one has an hour left: azure_identity's
        // per-credential cache is not in the way.
        provider.invalidate(&token);
        let deadline = Instant::now() + Duration::from_secs(5);
        while provider.state().refreshes_ok < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(provider.state().refreshes_ok, 2, "{kind:?}");
        assert_eq!(entra.issued(expected), 2, "{kind:?}");
    }

    // A user-assigned identity that is not assigned: the endpoint's message, retried.
    let provider = TokenProvider::new(
        config(IdentityKind::UserAssigned, Some("not-assigned")),
        Metrics::default(),
    )
    .expect("provider");
    let _task = provider.spawn_refresher(shutdown.clone());
    let deadline = Instant::now() + Duration::from_secs(5);
    while provider.state().refreshes_failed < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let state = provider.state();
    assert!(state.refreshes_failed >= 2 && !state.valid, "{state:?}");
    let last_error = state.last_error.expect("last error");
    assert!(last_error.contains("not been assigned"), "{last_error}");
    assert!(
        !last_error.contains(entra.identity_header()),
        "{last_error}"
    );
    shutdown.cancel();
}
