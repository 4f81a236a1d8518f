//! The managed identity endpoint, `GET /msi/token`: the App Service protocol (api-version
//! `2019-08-01`, the `X-IDENTITY-HEADER` secret) `azure_identity` uses when `IDENTITY_ENDPOINT`
//! and `IDENTITY_HEADER` are set.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::token::check_resource;
use super::{json_response, take_failure, Rejection, Shared, MI_API_VERSION};

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

/// The handler: an injected failure first, else the request, counting refusals.
pub(super) async fn managed_identity(
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
    let (access_token, claims) = match shared.issue(
        &identity.tenant_id,
        &identity.client_id,
        &identity.object_id,
        resource,
    ) {
        Ok(issued) => issued,
        Err(e) => return mi_error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
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
