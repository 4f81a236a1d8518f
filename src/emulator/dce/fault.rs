//! Scripted faults: answers served before normal handling, one per write request, in order,
//! then the outage answer while one is set.

use std::time::Duration;

use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::serve::ConnKill;
use super::stats::count_rejection;
use super::{azure_error, Shared};

/// A scripted answer, served before normal handling, one per `POST` request, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer `status` without looking at the request.
    Status {
        /// HTTP status code.
        status: u16,
        /// `Retry-After` header value, if any (seconds or an HTTP date).
        retry_after: Option<String>,
        /// Response body; a JSON error naming the fault when `None`.
        body: Option<String>,
    },
    /// Drop the connection without answering.
    Reset,
    /// Wait, then handle the request normally.
    Delay(Duration),
    /// Handle (and count) the request normally, then answer `status` instead of 200.
    AcceptThen(u16),
}

impl Fault {
    /// A bare status.
    pub fn status(status: u16) -> Self {
        Self::Status {
            status,
            retry_after: None,
            body: None,
        }
    }

    /// A status with `Retry-After: {seconds}`.
    pub fn retry_after(status: u16, seconds: u64) -> Self {
        Self::Status {
            status,
            retry_after: Some(seconds.to_string()),
            body: None,
        }
    }
}

/// Counts a request and serves the fault that answers it, if any (only writes consume faults:
/// probes and other methods do not). `Err` is the whole answer; `Ok(Some(status))` is the
/// status to answer after handling the request normally ([`Fault::AcceptThen`]).
pub(super) async fn serve(
    shared: &Shared,
    method: &Method,
    kill: Option<&ConnKill>,
) -> Result<Option<StatusCode>, Response> {
    let fault = {
        let mut data = shared.lock();
        data.stats.requests += 1;
        if method == Method::POST {
            if data.post_times.len() >= super::MAX_POST_TIMES {
                data.post_times.pop_front();
            }
            data.post_times.push_back(std::time::Instant::now());
        }
        let fault = if method == Method::POST {
            data.faults.pop_front().or_else(|| data.outage.clone())
        } else {
            None
        };
        if fault.is_some() {
            data.stats.faults += 1;
        }
        fault
    };
    match fault {
        Some(Fault::Status {
            status,
            retry_after,
            body,
        }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            count_rejection(shared, status);
            let mut response = match body {
                Some(body) => (status, body).into_response(),
                None => azure_error(status, "InjectedFault", "injected failure"),
            };
            if let Some(value) = retry_after.and_then(|v| header::HeaderValue::from_str(&v).ok()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            Err(response)
        }
        Some(Fault::Reset) => {
            if let Some(kill) = kill {
                kill.0.notify_one();
                // The connection task drops this future with the connection.
                std::future::pending::<()>().await;
            }
            Err(StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        Some(Fault::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            Ok(None)
        }
        Some(Fault::AcceptThen(status)) => Ok(Some(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        )),
        None => Ok(None),
    }
}
