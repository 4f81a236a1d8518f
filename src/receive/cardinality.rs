//! `GET /api/v1/status/cardinality?limit=N`: the metrics, label names and label pairs with the
//! most series among those promlink sent within the active window, in the shape of
//! Prometheus' TSDB status (`{"status": "success", "data": {...}}`, each list of
//! `{name, value}` top first), with `totalSeries`, `estimated`, `sampleRate` and `errorBound`
//! beside the lists (see [`crate::workspace::cardinality`]). No authentication, like `/metrics`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::Receiver;

/// `limit` when none is given.
pub const DEFAULT_LIMIT: usize = 10;
/// The largest `limit` accepted.
pub const MAX_LIMIT: usize = 10_000;

/// The `limit` of a query string, or why it cannot be used.
pub fn limit_of(query: &HashMap<String, String>) -> Result<usize, String> {
    match query.get("limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(format!(
                "limit={v:?}: must be a whole number from 1 to {MAX_LIMIT}"
            )),
        },
    }
}

pub(super) async fn handler(
    State(rx): State<Arc<Receiver>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let error = |status: StatusCode, why: String| {
        let body = serde_json::json!({"status": "error", "errorType": "bad_data", "error": why});
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            format!("{body}\n"),
        )
            .into_response()
    };
    let limit = match limit_of(&query) {
        Ok(n) => n,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let Some(cardinality) = rx.cardinality.get() else {
        return error(
            StatusCode::NOT_FOUND,
            "this promlink does not track cardinality".into(),
        );
    };
    let cardinality = cardinality.clone();
    // The report walks up to 100,000 series: off the async workers.
    let report = match tokio::task::spawn_blocking(move || cardinality.report(limit)).await {
        Ok(r) => r,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let body = serde_json::json!({"status": "success", "data": report});
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!("{body}\n"),
    )
        .into_response()
}
