//! The `token` check: a token from the configured identity, with Entra's `AADSTS` error
//! explained and its fix.

use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::azure;
use super::report::{Check, Status};
use super::Doctor;
use crate::identity::{IdentityKind, TokenProvider};
use crate::secret::Secret;

impl Doctor<'_> {
    pub(super) async fn token_check(
        &self,
        stop: &CancellationToken,
    ) -> (Check, Option<Option<Secret>>) {
        let id = &self.cfg.destination.identity;
        let target = format!("identity {}", id.kind.as_str());
        self.token_check_of("token", target, id, stop).await
    }

    /// The check `name` of a token from `id` (for its scope), and the token (`Some(None)`:
    /// identity `none`, no token is sent).
    pub(super) async fn token_check_of(
        &self,
        name: &'static str,
        target: String,
        id: &crate::identity::IdentityConfig,
        stop: &CancellationToken,
    ) -> (Check, Option<Option<Secret>>) {
        let kind = id.kind;
        if kind == IdentityKind::None {
            return (
                Check::new(
                    name,
                    target,
                    Status::Skipped,
                    "identity none: no Authorization header is sent",
                    "fine for an endpoint without authentication",
                    "",
                ),
                Some(None),
            );
        }
        let provider = match TokenProvider::new(id.clone(), crate::identity::Metrics::default()) {
            Ok(p) => p,
            Err(e) => {
                let err = crate::outbound::error_chain(&e);
                return (
                    Check::new(
                        name,
                        target,
                        Status::Fail,
                        err,
                        "the identity cannot be set up",
                        "fix the identity settings named above",
                    ),
                    None,
                );
            }
        };
        let _refresher = provider.spawn_refresher(stop.clone());
        match provider.bearer(self.args.token_timeout).await {
            Ok(token) => {
                let expires = provider
                    .state()
                    .expires_at
                    .and_then(|t| t.duration_since(SystemTime::now()).ok())
                    .map(|d| {
                        format!(
                            ", valid for {}",
                            humantime::format_duration(Duration::from_secs(d.as_secs()))
                        )
                    })
                    .unwrap_or_default();
                let source = if azure::uses_entra(kind) {
                    format!(" for scope {}", id.scope)
                } else {
                    String::new()
                };
                (
                    Check::new(
                        name,
                        target,
                        Status::Ok,
                        format!("got a token{source}{expires}"),
                        "the identity works",
                        "",
                    ),
                    Some(token),
                )
            }
            Err(e) => {
                let err = crate::outbound::error_chain(&e);
                let (meaning, fix) = token_fix(&err, kind, id.authority_host.as_str(), &id.scope);
                (
                    Check::new(name, target, Status::Fail, err, meaning, fix),
                    None,
                )
            }
        }
    }
}

/// What a token failure means and how to fix it, from Entra's AADSTS code when there is one.
pub(super) fn token_fix(
    err: &str,
    kind: IdentityKind,
    authority: &str,
    scope: &str,
) -> (String, String) {
    let code = err
        .find("AADSTS")
        .map(|i| {
            err[i + 6..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .unwrap_or_default();
    let pair = |m: &str, f: String| (m.to_string(), f);
    match code.as_str() {
        "7000215" | "7000222" => pair(
            "Entra ID rejected the client secret (wrong or expired)",
            "create a new client secret for the app registration and put its value (not its id) in --client-secret-file or AZURE_CLIENT_SECRET".into(),
        ),
        "700016" => pair(
            "the application (client) id is not found in the tenant",
            "check --client-id and --tenant-id against the app registration's Overview page (or the managed identity's client id)".into(),
        ),
        "90002" | "90023" => pair(
            "the tenant is not found",
            "check --tenant-id (the directory id) and --cloud / --authority-host".into(),
        ),
        "70021" | "700211" | "700212" | "700213" | "700024" => pair(
            "no federated identity credential matches the service account token",
            "on the identity, add a federated credential with the cluster's OIDC issuer URL, subject system:serviceaccount:<namespace>:<service-account> and audience api://AzureADTokenExchange; label the pod azure.workload.identity/use: \"true\" and annotate the service account with azure.workload.identity/client-id".into(),
        ),
        "700027" | "700023" | "50012" | "700021" => pair(
            "Entra ID rejected the client assertion (certificate)",
            "upload the certificate's public part to the app registration (Certificates & secrets) and make sure the PEM file holds that certificate and its private key".into(),
        ),
        "500011" | "70011" | "1002012" => pair(
            "the requested scope or resource is wrong",
            format!("request {scope} as https://monitor.azure.com/.default (US Government https://monitor.azure.us/.default, China https://monitor.azure.cn/.default): check --token-scope / INGESTION_AAD_AUDIENCE and --cloud"),
        ),
        "" if !azure::uses_entra(kind) => pair(
            "the token file cannot be used",
            "check --token-file: it must exist, hold a token and not be expired".into(),
        ),
        "" if matches!(kind, IdentityKind::SystemAssigned | IdentityKind::UserAssigned) => pair(
            "no token from the managed identity endpoint",
            "the pod must reach IMDS (169.254.169.254:80; not blocked by a network policy) and the identity must be assigned to the node pool (or use workload identity); for user-assigned, check --client-id".into(),
        ),
        "" => pair(
            "no answer from Entra ID",
            format!("allow egress from the cluster to {authority} on TCP 443 (service tag AzureActiveDirectory; Entra ID is never reached through the AMPLS), and check --authority-host / --cloud"),
        ),
        _ => pair(
            "Entra ID refused the token request",
            format!("look up AADSTS{code} (https://learn.microsoft.com/entra/identity-platform/reference-error-codes) and fix the identity settings"),
        ),
    }
}
