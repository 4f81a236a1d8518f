//! The request checks, in the order the real endpoint applies them: path, then method,
//! api-version, bearer token, then role, headers; and, once the body is read, duplicate
//! samples. Each returns the answer refusing the request, boxed (a `Response` is large).

use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;

use super::wire::Parsed;
use super::{azure_error, Shared};

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The ingestion path (404), then the method (405).
pub(super) fn check_route(shared: &Shared, parts: &Parts) -> Result<(), Box<Response>> {
    if parts.uri.path() != shared.path {
        let message = if parts.uri.path().starts_with(&shared.dcr_prefix) {
            "no data collection rule or stream matches this path"
        } else {
            "resource not found"
        };
        return Err(azure_error(StatusCode::NOT_FOUND, "NotFound", message).into());
    }
    if parts.method != Method::POST {
        let mut response = azure_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "only POST is allowed",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return Err(response.into());
    }
    Ok(())
}

/// Exactly one `api-version`, and a supported one (400).
pub(super) fn check_api_version(shared: &Shared, uri: &Uri) -> Result<(), Box<Response>> {
    let versions: Vec<String> = url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .filter(|(k, _)| k == "api-version")
        .map(|(_, v)| v.into_owned())
        .collect();
    let supported = shared.lock().api_versions.clone();
    match versions.as_slice() {
        [] => Err(azure_error(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests",
        )
        .into()),
        [v] if supported.iter().any(|s| s == v) => Ok(()),
        _ => Err(azure_error(
            StatusCode::BAD_REQUEST,
            "UnsupportedApiVersion",
            &format!(
                "The requested api-version {} is not supported; supported versions: {}",
                versions.join(","),
                supported.join(", ")
            ),
        )
        .into()),
    }
}

/// A valid bearer token (401) for a principal holding Monitoring Metrics Publisher (403);
/// nothing to check when auth is off.
pub(super) fn check_token(shared: &Shared, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(verifier) = &shared.auth else {
        return Ok(());
    };
    let unauthorized = |message: &str| {
        let mut response = azure_error(StatusCode::UNAUTHORIZED, "InvalidToken", message);
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer authorization_uri=\"emulator\""),
        );
        response
    };
    let Some(token) = bearer_token(headers) else {
        return Err(unauthorized("an Authorization: Bearer token is required").into());
    };
    let claims = verifier.verify(token).map_err(|e| unauthorized(&e))?;
    if super::QUERY_AUDIENCES.contains(&claims.aud.trim_end_matches('/')) {
        return Err(unauthorized(&format!(
            "the token's audience {} is for queries; writing needs a token for https://monitor.azure.com",
            claims.aud
        ))
        .into());
    }
    let granted = {
        let data = shared.lock();
        data.granted.contains(&claims.appid) || data.granted.contains(&claims.oid)
    };
    if !granted {
        return Err(azure_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "The principal {} (appid {}) does not have Monitoring Metrics Publisher on this data collection rule, or the assignment has not propagated yet",
                claims.oid, claims.appid
            ),
        ).into());
    }
    Ok(())
}

/// The bearer token of `Authorization: Bearer <token>`, if any.
pub(super) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    header_str(headers, header::AUTHORIZATION)
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// `Content-Type` (415), `Content-Encoding` and the remote write version (400).
pub(super) fn check_headers(headers: &HeaderMap) -> Result<(), Box<Response>> {
    let content_type = header_str(headers, header::CONTENT_TYPE).unwrap_or("");
    if content_type.split(';').next().map(str::trim) != Some("application/x-protobuf") {
        return Err(azure_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            &format!("Content-Type must be application/x-protobuf, got '{content_type}'"),
        )
        .into());
    }
    let encoding = header_str(headers, header::CONTENT_ENCODING).unwrap_or("");
    if !encoding.eq_ignore_ascii_case("snappy") {
        return Err(azure_error(
            StatusCode::BAD_REQUEST,
            "InvalidContentEncoding",
            &format!("Content-Encoding must be snappy, got '{encoding}'"),
        )
        .into());
    }
    let version = header_str(headers, "x-prometheus-remote-write-version").unwrap_or("");
    if !version.starts_with("0.1.") {
        return Err(azure_error(
            StatusCode::BAD_REQUEST,
            "InvalidRemoteWriteVersion",
            &format!("X-Prometheus-Remote-Write-Version must be 0.1.0, got '{version}'"),
        )
        .into());
    }
    Ok(())
}

/// A series and timestamp repeated within one request is Azure's documented 422 (in strict
/// mode, any repeated series).
pub(super) fn check_duplicates(shared: &Shared, parsed: &Parsed) -> Result<(), Box<Response>> {
    let points = parsed.samples.len() + parsed.histograms.len();
    let mut seen_pairs: rustc_hash::FxHashSet<(u64, i64)> =
        rustc_hash::FxHashSet::with_capacity_and_hasher(points, Default::default());
    let mut seen_series: rustc_hash::FxHashSet<u64> = Default::default();
    let duplicate = if shared.reject_repeated_series {
        parsed.series.iter().any(|h| !seen_series.insert(*h))
    } else {
        parsed
            .points()
            .any(|(i, t)| !seen_pairs.insert((parsed.series[i as usize], t)))
    };
    if duplicate {
        return Err(azure_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "DuplicateTimeSeries",
            "the request contains duplicate time series",
        )
        .into());
    }
    Ok(())
}
