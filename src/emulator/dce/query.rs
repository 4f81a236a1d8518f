//! The EMULATOR's read-back side: the part of an Azure Monitor workspace's query API that
//! promlink's canary uses, `GET /api/v1/query?query=<series selector>` (an instant query),
//! answered from the latest sample of each series the emulator accepted. Not Azure.
//!
//! As the workspace's endpoint does, it needs a bearer token for the query audience
//! (`https://prometheus.monitor.azure.com`, 401 otherwise) held by a principal with
//! *Monitoring Data Reader* (403), and a `__name__` matcher in every query (400). A series'
//! latest sample answers when it is at most five minutes old (Prometheus' lookback). At most
//! `keep_series` series are kept; a new series beyond that is not (counted in
//! [`DceStats::query_series_refused`](super::DceStats::query_series_refused)).

use std::collections::HashMap;

use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;

use super::super::entra::json_response;
use super::Shared;
use crate::proto::v1::WriteRequest;

/// The path of instant queries.
pub(super) const QUERY_PATH: &str = "/api/v1/query";
/// The audiences of query tokens (public, US Government and China clouds).
pub const QUERY_AUDIENCES: [&str; 3] = [
    "https://prometheus.monitor.azure.com",
    "https://prometheus.monitor.azure.us",
    "https://prometheus.monitor.azure.cn",
];
/// How old a series' latest sample may be and still answer (Prometheus' default lookback).
const LOOKBACK_MS: i64 = 5 * 60 * 1000;

/// Labels sorted by name.
type Labels = Vec<(String, String)>;

/// The latest sample (timestamp ms, value) of each series kept for queries.
#[derive(Debug, Default)]
pub(super) struct Latest {
    series: HashMap<Labels, (i64, f64)>,
}

impl Latest {
    /// Keeps the latest float sample of each series of `request`; returns how many new series
    /// did not fit under `max`.
    pub(super) fn record(&mut self, request: &WriteRequest, max: usize) -> u64 {
        let mut refused = 0;
        for ts in &request.timeseries {
            let Some(newest) = ts.samples.iter().max_by_key(|s| s.timestamp) else {
                continue;
            };
            let mut labels: Labels = ts
                .labels
                .iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect();
            labels.sort();
            let full = self.series.len() >= max;
            match self.series.get_mut(&labels) {
                Some(latest) => {
                    if newest.timestamp >= latest.0 {
                        *latest = (newest.timestamp, newest.value);
                    }
                }
                None if !full => {
                    self.series.insert(labels, (newest.timestamp, newest.value));
                }
                None => refused += 1,
            }
        }
        refused
    }

    pub(super) fn clear(&mut self) {
        self.series.clear();
    }
}

/// Answers a request on [`QUERY_PATH`].
pub(super) fn handle(shared: &Shared, parts: &Parts) -> Response {
    shared.lock().stats.queries += 1;
    if parts.method != Method::GET && parts.method != Method::POST {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "bad_data",
            "only GET and POST",
        );
    }
    if let Err(response) = check_query_token(shared, &parts.headers) {
        return *response;
    }
    let query = url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "query")
        .map(|(_, v)| v.into_owned());
    let Some(query) = query.filter(|q| !q.trim().is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_data",
            "the query parameter is required",
        );
    };
    let selector = match promlink_relabel::Selector::parse(&query) {
        Ok(s) => s,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_data",
                &format!("this emulator answers one series selector only: {e}"),
            )
        }
    };
    if !selector.matchers().iter().any(|m| m.name == "__name__") {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_data",
            "every query must name its metric (a __name__ matcher)",
        );
    }
    let now_ms = unix_ms();
    let data = shared.lock();
    let result: Vec<serde_json::Value> = data
        .latest
        .series
        .iter()
        .filter(|(_, &(ts, _))| ts <= now_ms && now_ms - ts <= LOOKBACK_MS)
        .filter(|(labels, _)| {
            selector.matches(|name| {
                labels
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.as_str())
            })
        })
        .map(|(labels, &(_, value))| {
            let metric: serde_json::Map<String, serde_json::Value> = labels
                .iter()
                .map(|(n, v)| (n.clone(), serde_json::Value::String(v.clone())))
                .collect();
            serde_json::json!({
                "metric": metric,
                "value": [now_ms as f64 / 1000.0, format_value(value)],
            })
        })
        .collect();
    drop(data);
    json_response(
        StatusCode::OK,
        serde_json::json!({
            "status": "success",
            "data": { "resultType": "vector", "result": result },
        }),
    )
}

/// A valid token for the query audience (401) of a principal holding Monitoring Data Reader
/// (403); nothing to check when auth is off.
fn check_query_token(shared: &Shared, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(verifier) = &shared.auth else {
        return Ok(());
    };
    let Some(token) = super::checks::bearer_token(headers) else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "an Authorization: Bearer token for https://prometheus.monitor.azure.com is required",
        )
        .into());
    };
    let claims = verifier
        .verify(token)
        .map_err(|e| Box::new(error(StatusCode::UNAUTHORIZED, "unauthorized", &e)))?;
    if !QUERY_AUDIENCES.contains(&claims.aud.trim_end_matches('/')) {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            &format!(
                "the token's audience {} is not the query audience https://prometheus.monitor.azure.com",
                claims.aud
            ),
        )
        .into());
    }
    let granted = {
        let data = shared.lock();
        data.readers.contains(&claims.appid) || data.readers.contains(&claims.oid)
    };
    if !granted {
        return Err(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            &format!(
                "The principal {} (appid {}) does not have Monitoring Data Reader on this Azure Monitor workspace",
                claims.oid, claims.appid
            ),
        )
        .into());
    }
    Ok(())
}

/// A sample value as the Prometheus API writes it.
fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        v.to_string()
    }
}

/// A Prometheus API error body.
fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    json_response(
        status,
        serde_json::json!({
            "status": "error",
            "errorType": kind,
            "error": format!("{message} (EMULATOR)"),
        }),
    )
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
