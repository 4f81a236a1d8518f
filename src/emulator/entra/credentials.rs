//! The credential a token request presents: a client secret, a certificate-signed client
//! assertion (RS256/PS256, audience the token endpoint, issuer and subject the client id) or a
//! federated (workload identity) token.

use std::collections::HashMap;

use axum::http::{header, HeaderMap, StatusCode, Uri};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::{reject, ClientCredential, RegisteredClient, Rejection, Shared, JWT_BEARER};

/// Checks the one credential the form presents for `client`: `client_secret`, or
/// `client_assertion` with the JWT bearer assertion type.
pub(super) fn authenticate(
    shared: &Shared,
    client: &RegisteredClient,
    form: &HashMap<String, String>,
    tenant: &str,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<(), Rejection> {
    let secret = form.get("client_secret").filter(|v| !v.is_empty());
    let assertion = form.get("client_assertion").filter(|v| !v.is_empty());
    match (secret, assertion) {
        (Some(_), Some(_)) => Err(reject(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            7000219,
            "Only one client authentication method may be used: client_secret or client_assertion.",
        )),
        (None, None) => Err(reject(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )),
        (Some(secret), None) => {
            let ok = client.credentials.iter().any(|c| matches!(c, ClientCredential::Secret(s) if s == secret));
            if !ok {
                let client_id = &client.client_id;
                return Err(reject(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    7000215,
                    &format!("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."),
                ));
            }
            Ok(())
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
            check_assertion(client, assertion, &audiences)
        }
    }
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
