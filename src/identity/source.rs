//! Where tokens come from: one fetch per call, no caching (the provider caches).
//!
//! Entra credentials are built afresh for every fetch from the shared client options: each
//! azure_identity credential keeps a private cache that returns the same token until five
//! minutes before it expires, which would hand an early refresh or an `invalidate()` the very
//! token being replaced. Building one is cheap (no I/O); the HTTP client and its connection pool
//! are shared.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use azure_core::credentials::TokenCredential;
use azure_core::http::ClientOptions;
use azure_identity::{
    ClientAssertionCredential, ClientAssertionCredentialOptions, ClientSecretCredential,
    ClientSecretCredentialOptions, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId,
};

use super::certificate::{CertificateAssertion, FederatedTokenFile};
use super::{Error, IdentityConfig, IdentityKind};
use crate::secret::Secret;

/// A token as fetched. `Debug` shows `<redacted>` for the token.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub(crate) token: Secret,
    /// `None` for a token file holding something that is not a JWT with `exp`.
    pub(crate) expires_at: Option<SystemTime>,
}

/// An Entra ID (or managed identity endpoint) credential recipe.
pub(crate) struct Entra {
    kind: IdentityKind,
    scope: String,
    options: ClientOptions,
    tenant_id: String,
    client_id: String,
    client_secret: Secret,
    certificate_path: PathBuf,
    federated_token_file: PathBuf,
    /// `{authority}/{tenant}/oauth2/v2.0/token`, the audience of our client assertions.
    token_endpoint: String,
}

impl Entra {
    /// Takes what `kind` needs from `cfg`; `cfg` has been validated.
    pub(crate) fn new(cfg: &IdentityConfig, options: ClientOptions) -> Result<Self, Error> {
        let tenant_id = cfg.tenant_id.clone().unwrap_or_default();
        let token_endpoint = cfg
            .authority_host
            .join(&format!("/{tenant_id}/oauth2/v2.0/token"))
            .map(String::from)
            .unwrap_or_default();
        let entra = Self {
            kind: cfg.kind,
            scope: cfg.scope.clone(),
            options,
            tenant_id,
            client_id: cfg.client_id.clone().unwrap_or_default(),
            client_secret: cfg.client_secret.clone().unwrap_or_default(),
            certificate_path: cfg.client_certificate_path.clone().unwrap_or_default(),
            federated_token_file: cfg.federated_token_file.clone().unwrap_or_default(),
            token_endpoint,
        };
        // Let azure_identity check what it checks (tenant id shape, ...) before any request.
        entra.credential()?;
        Ok(entra)
    }

    /// A new credential for one fetch.
    fn credential(&self) -> Result<Arc<dyn TokenCredential>, Error> {
        let err = |source| Error::Credential {
            kind: self.kind.as_str(),
            source,
        };
        let assertion_options = || ClientAssertionCredentialOptions {
            client_options: self.options.clone(),
        };
        let credential: Arc<dyn TokenCredential> = match self.kind {
            IdentityKind::SystemAssigned | IdentityKind::UserAssigned => {
                let user_assigned_id = (self.kind == IdentityKind::UserAssigned)
                    .then(|| UserAssignedId::ClientId(self.client_id.clone()));
                ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                    user_assigned_id,
                    client_options: self.options.clone(),
                }))
                .map_err(err)?
            }
            IdentityKind::ClientSecret => ClientSecretCredential::new(
                &self.tenant_id,
                self.client_id.clone(),
                azure_core::credentials::Secret::new(self.client_secret.expose().to_string()),
                Some(ClientSecretCredentialOptions {
                    client_options: self.options.clone(),
                }),
            )
            .map_err(err)?,
            IdentityKind::ClientCertificate => ClientAssertionCredential::new(
                self.tenant_id.clone(),
                self.client_id.clone(),
                CertificateAssertion {
                    path: self.certificate_path.clone(),
                    client_id: self.client_id.clone(),
                    audience: self.token_endpoint.clone(),
                },
                Some(assertion_options()),
            )
            .map_err(err)?,
            IdentityKind::Workload => ClientAssertionCredential::new(
                self.tenant_id.clone(),
                self.client_id.clone(),
                FederatedTokenFile {
                    path: self.federated_token_file.clone(),
                },
                Some(assertion_options()),
            )
            .map_err(err)?,
            IdentityKind::TokenFile | IdentityKind::None => {
                return Err(Error::InvalidConfig {
                    problems: vec![format!(
                        "identity kind {} has no Entra ID credential",
                        self.kind.as_str()
                    )],
                })
            }
        };
        Ok(credential)
    }

    /// Requests a new token for the configured scope.
    ///
    /// # Errors
    /// When the request fails; the error carries Entra's description.
    pub(crate) async fn fetch(&self) -> Result<Fetched, Error> {
        let credential = self.credential()?;
        let token = credential
            .get_token(&[self.scope.as_str()], None)
            .await
            .map_err(|source| Error::Request {
                kind: self.kind.as_str(),
                source,
            })?;
        Ok(Fetched {
            token: Secret::new(token.token.secret()),
            expires_at: Some(SystemTime::from(token.expires_on)),
        })
    }
}
