//! Client assertions signed with a PEM certificate and key, without openssl.
//!
//! azure_identity's `ClientCertificateCredential` needs the `client_certificate` feature (openssl)
//! and PKCS#12 bytes, while Azure's sidecar gets its certificate as PEM (certificate plus private
//! key) from the Key Vault CSI driver. So we build the assertion ourselves and hand it to
//! `ClientAssertionCredential`: a JWT signed PS256 (RSASSA-PSS, SHA-256) with aws-lc-rs, the
//! certificate's SHA-256 thumbprint in `x5t#S256` and its SHA-1 thumbprint in `x5t`, as described
//! in <https://learn.microsoft.com/entra/identity-platform/certificate-credentials>.
//!
//! The PEM file is re-read for every assertion: the CSI driver rotates it in place.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RsaKeyPair, RSA_PSS_SHA256};
use azure_core::error::ErrorKind;
use azure_core::http::ClientMethodOptions;
use azure_identity::ClientAssertion;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::Error;

/// How long a client assertion is valid; Entra ID only needs it for the one token request.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(600);

/// A certificate (DER) and the RSA key that signs for it.
pub(crate) struct CertificateKey {
    path: PathBuf,
    cert_der: Vec<u8>,
    key: RsaKeyPair,
}

impl std::fmt::Debug for CertificateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateKey")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl CertificateKey {
    /// Parses a PEM holding the first certificate (the leaf) and an unencrypted private key
    /// (PKCS#8 or PKCS#1), in any order.
    ///
    /// # Errors
    /// When there is no certificate or key, the key is encrypted or not RSA.
    pub(crate) fn from_pem(path: &Path, pem: &[u8]) -> Result<Self, Error> {
        let bad = |reason: &str| Error::Certificate {
            path: path.to_owned(),
            reason: reason.to_string(),
        };
        let cert_der = CertificateDer::pem_slice_iter(pem)
            .next()
            .ok_or_else(|| bad("no CERTIFICATE block in the PEM"))?
            .map_err(|_| bad("the CERTIFICATE block is not valid PEM"))?
            .to_vec();
        let key = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|_| bad("no unencrypted PRIVATE KEY or RSA PRIVATE KEY block in the PEM"))?;
        let key = match key {
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            _ => return Err(bad("the private key is an EC key, not an RSA key; Entra ID client assertions need RSA")),
        }
        .map_err(|_| bad("the private key is not an RSA key, or is malformed; Entra ID client assertions need RSA"))?;
        Ok(Self {
            path: path.to_owned(),
            cert_der,
            key,
        })
    }

    /// Builds and signs a client assertion for `client_id` at the token endpoint `audience`.
    ///
    /// # Errors
    /// When signing fails.
    pub(crate) fn assertion(
        &self,
        client_id: &str,
        audience: &str,
        now: SystemTime,
    ) -> Result<String, Error> {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let header = serde_json::json!({
            "alg": "PS256",
            "typ": "JWT",
            "x5t": b64(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &self.cert_der).as_ref()),
            "x5t#S256": b64(digest::digest(&digest::SHA256, &self.cert_der).as_ref()),
        });
        let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let claims = serde_json::json!({
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": jti(),
            "iat": iat,
            "nbf": iat,
            "exp": iat + ASSERTION_LIFETIME.as_secs(),
        });
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PSS_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| Error::Sign {
                path: self.path.clone(),
            })?;
        Ok(format!("{signing_input}.{}", b64(&signature)))
    }
}

/// A random JWT id, so Entra ID can reject a replayed assertion.
fn jti() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A [`ClientAssertion`] that reads the PEM file and signs a fresh assertion on every call.
#[derive(Debug)]
pub(crate) struct CertificateAssertion {
    pub(crate) path: PathBuf,
    pub(crate) client_id: String,
    /// The token endpoint, `{authority}/{tenant}/oauth2/v2.0/token`.
    pub(crate) audience: String,
}

#[async_trait::async_trait]
impl ClientAssertion for CertificateAssertion {
    async fn secret(&self, _: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        let to_azure = |e: Error| azure_core::Error::new(ErrorKind::Credential, e);
        let pem = tokio::fs::read(&self.path).await.map_err(|source| {
            to_azure(Error::ReadFile {
                what: "the client certificate",
                path: self.path.clone(),
                source,
            })
        })?;
        let key = CertificateKey::from_pem(&self.path, &pem).map_err(to_azure)?;
        key.assertion(&self.client_id, &self.audience, SystemTime::now())
            .map_err(to_azure)
    }
}

/// A [`ClientAssertion`] that reads the federated (Kubernetes service account) token file on
/// every exchange: kubelet rotates it, and azure_identity's `WorkloadIdentityCredential` would
/// keep a copy for ten minutes (and read it already at construction).
#[derive(Debug)]
pub(crate) struct FederatedTokenFile {
    pub(crate) path: PathBuf,
}

#[async_trait::async_trait]
impl ClientAssertion for FederatedTokenFile {
    async fn secret(&self, _: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        let to_azure = |e: Error| azure_core::Error::new(ErrorKind::Credential, e);
        let text = tokio::fs::read_to_string(&self.path)
            .await
            .map_err(|source| {
                to_azure(Error::ReadFile {
                    what: "the federated token file",
                    path: self.path.clone(),
                    source,
                })
            })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(to_azure(Error::EmptyFile {
                what: "the federated token file",
                path: self.path.clone(),
            }));
        }
        Ok(token.to_string())
    }
}
