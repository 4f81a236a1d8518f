//! The token endpoint, `POST /{tenant}/oauth2/v2.0/token`: the OAuth 2.0 client credentials
//! grant, checked in Entra ID's order (form, grant type, parameters, tenant and client, scope,
//! then the credential the client presents).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::Response;

use super::credentials::authenticate;
use super::{json_response, reject, take_failure, RegisteredClient, Rejection, Shared};

/// Normalizes and checks a `.default` scope; returns the audience to issue.
fn check_scope(shared: &Shared, scope: &str) -> Result<String, Rejection> {
    let parts: Vec<&str> = scope.split_whitespace().collect();
    let resource = match parts.as_slice() {
        [single] => single.strip_suffix("/.default"),
        _ => None,
    };
    let Some(resource) = resource else {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            &format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
        ));
    };
    check_resource(shared, resource)
}

/// Checks that `resource` (with or without a trailing slash) is one tokens are issued for.
pub(super) fn check_resource(shared: &Shared, resource: &str) -> Result<String, Rejection> {
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

/// The handler: an injected failure first, else the grant, counting refusals.
pub(super) async fn token(
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
    let form = parse_form(headers, body)?;
    let grant_type = param(&form, "grant_type")?;
    if grant_type != "client_credentials" {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{grant_type}'."),
        ));
    }
    let client_id = param(&form, "client_id")?;
    let scope = param(&form, "scope")?;
    let client = find_client(shared, tenant, client_id)?;
    let audience = check_scope(shared, scope)?;
    authenticate(shared, &client, &form, tenant, uri, headers)?;

    let (access_token, _) = shared
        .issue(tenant, &client.client_id, &client.object_id, &audience)
        .map_err(|e| reject(StatusCode::INTERNAL_SERVER_ERROR, "server_error", 50000, &e))?;
    let lifetime = shared.lifetime_secs();
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

/// The request's form: an `application/x-www-form-urlencoded` body, no parameter repeated.
fn parse_form(headers: &HeaderMap, body: &[u8]) -> Result<HashMap<String, String>, Rejection> {
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
    Ok(form)
}

/// A required, non-empty form parameter.
fn param<'a>(form: &'a HashMap<String, String>, name: &str) -> Result<&'a str, Rejection> {
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
}

/// The application `client_id` of `tenant`; an unknown tenant is refused before an unknown
/// client.
fn find_client(
    shared: &Shared,
    tenant: &str,
    client_id: &str,
) -> Result<RegisteredClient, Rejection> {
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
    client.ok_or_else(|| {
        reject(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant."),
        )
    })
}
