//! What to do with each upstream answer, and how long to wait before trying again.
//!
//! Azure documents 403 (role missing or not yet applied) and 422 (duplicate series) for the
//! ingestion API and says nothing of the others, so the rules follow the remote-write
//! specification and Prometheus: 5xx, 429, 408 and connection errors are retried with capped
//! exponential backoff and jitter ([`crate::outbound::Backoff`]); 401/403 refresh the token
//! and keep retrying (a new role assignment takes about 30 minutes to apply, and dropping
//! meanwhile would lose everything); 413 splits the batch; any other 4xx drops the batch,
//! counted by reason.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;

/// The longest `Retry-After` that is honoured as given; longer values are capped here so one
/// odd header cannot park a shard for hours.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// The decision for one upstream answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Accepted.
    Delivered,
    /// Try the same batch again later.
    Retry(RetryReason),
    /// The token was refused: refresh it and try again later.
    Reauthenticate,
    /// Too large: split the batch and send the halves.
    Split,
    /// Refused for good: drop the batch, count it under this reason.
    Drop(DropReason),
}

/// Why a batch is retried (a closed set: used as a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RetryReason {
    /// 5xx.
    ServerError,
    /// 429.
    Throttled,
    /// 408.
    Timeout,
    /// 401 or 403.
    Unauthorized,
    /// Connection refused, reset, TLS failure, or no answer in time.
    Connection,
    /// No valid token to send.
    NoToken,
}

impl RetryReason {
    /// Every reason.
    pub const ALL: [RetryReason; 6] = [
        RetryReason::ServerError,
        RetryReason::Throttled,
        RetryReason::Timeout,
        RetryReason::Unauthorized,
        RetryReason::Connection,
        RetryReason::NoToken,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::ServerError => "server_error",
            RetryReason::Throttled => "throttled",
            RetryReason::Timeout => "timeout",
            RetryReason::Unauthorized => "unauthorized",
            RetryReason::Connection => "connection",
            RetryReason::NoToken => "no_token",
        }
    }
}

/// Why data was dropped (a closed set: used as a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// 400: the upstream says the data is invalid.
    BadRequest,
    /// 404: wrong DCE, DCR or stream.
    NotFound,
    /// 422: duplicate series (documented by Azure).
    Unprocessable,
    /// Any other 4xx.
    OtherClientError,
    /// A single entry the upstream still calls too large after splitting.
    TooLarge,
    /// The shutdown grace period ended before the upstream accepted it.
    Shutdown,
    /// Older than `max_sample_age` when its turn to be sent came.
    TooOld,
    /// Queued longer than `queue_max_age`.
    Expired,
}

impl DropReason {
    /// Every reason, in a stable order.
    pub const ALL: [DropReason; 8] = [
        DropReason::BadRequest,
        DropReason::NotFound,
        DropReason::Unprocessable,
        DropReason::OtherClientError,
        DropReason::TooLarge,
        DropReason::Shutdown,
        DropReason::TooOld,
        DropReason::Expired,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::BadRequest => "rejected_400",
            DropReason::NotFound => "rejected_404",
            DropReason::Unprocessable => "rejected_422",
            DropReason::OtherClientError => "rejected_4xx",
            DropReason::TooLarge => "too_large",
            DropReason::Shutdown => "shutdown",
            DropReason::TooOld => "too_old",
            DropReason::Expired => "expired",
        }
    }
}

/// Classifies an HTTP status.
pub fn classify(status: StatusCode) -> Action {
    match status.as_u16() {
        200..=299 => Action::Delivered,
        401 | 403 => Action::Reauthenticate,
        408 => Action::Retry(RetryReason::Timeout),
        413 => Action::Split,
        429 => Action::Retry(RetryReason::Throttled),
        400 => Action::Drop(DropReason::BadRequest),
        404 => Action::Drop(DropReason::NotFound),
        422 => Action::Drop(DropReason::Unprocessable),
        500..=599 => Action::Retry(RetryReason::ServerError),
        // 1xx/3xx never reach here (redirects are not followed); treat as a server fault.
        100..=199 | 300..=399 => Action::Retry(RetryReason::ServerError),
        _ => Action::Drop(DropReason::OtherClientError),
    }
}

/// Parses `Retry-After` (delay in seconds, or an HTTP date) into a delay from `now`, capped at
/// [`MAX_RETRY_AFTER`]. Unparseable values are ignored.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_matrix() {
        let table = [
            (200, Action::Delivered),
            (204, Action::Delivered),
            (400, Action::Drop(DropReason::BadRequest)),
            (401, Action::Reauthenticate),
            (403, Action::Reauthenticate),
            (404, Action::Drop(DropReason::NotFound)),
            (408, Action::Retry(RetryReason::Timeout)),
            (409, Action::Drop(DropReason::OtherClientError)),
            (413, Action::Split),
            (422, Action::Drop(DropReason::Unprocessable)),
            (429, Action::Retry(RetryReason::Throttled)),
            (500, Action::Retry(RetryReason::ServerError)),
            (503, Action::Retry(RetryReason::ServerError)),
        ];
        for (code, want) in table {
            assert_eq!(
                classify(StatusCode::from_u16(code).unwrap()),
                want,
                "{code}"
            );
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(30)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("86400", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
