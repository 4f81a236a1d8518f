//! Issuing and checking the emulator's access tokens: HS256 JWTs signed with a per-emulator
//! key, with the claims Entra ID puts in app tokens.

use std::fmt;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{now_secs, Shared};

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

impl Shared {
    /// The lifetime of issued access tokens, whole seconds (what `expires_in` says).
    pub(super) fn lifetime_secs(&self) -> i64 {
        i64::try_from(self.lifetime.as_secs()).unwrap_or(i64::MAX)
    }

    /// Mints an access token for a principal of `tenant_id`, valid for `aud` from now, and
    /// counts it as issued to `client_id`; returns the token and its claims.
    pub(super) fn issue(
        &self,
        tenant_id: &str,
        client_id: &str,
        object_id: &str,
        aud: &str,
    ) -> Result<(String, Claims), String> {
        let claims = Claims::new(
            tenant_id,
            client_id,
            object_id,
            aud,
            now_secs(),
            self.lifetime_secs(),
        );
        let access_token = self.verifier.mint(&claims)?;
        *self
            .lock()
            .stats
            .issued
            .entry(client_id.to_owned())
            .or_default() += 1;
        Ok((access_token, claims))
    }
}
