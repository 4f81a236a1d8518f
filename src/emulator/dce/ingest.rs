//! The ingestion handler: a scripted fault first, then the request checks in order, the body
//! (size, snappy, protobuf), duplicate samples, and the accepted data counted.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use prost::Message as _;

use super::checks::{check_api_version, check_duplicates, check_headers, check_route, check_token};
use super::serve::ConnKill;
use super::stats::{count_rejection, record_accepted};
use super::wire::{parse_write_request, Parsed, Refusal};
use super::{azure_error, fault, query, Shared};
use crate::proto::v1::WriteRequest;

/// The handler for every request the emulator receives.
pub(super) async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    if request.uri().path() == query::QUERY_PATH {
        let (parts, _) = request.into_parts();
        return query::handle(&shared, &parts);
    }
    let kill = request.extensions().get::<ConnKill>();
    let accept_then = match fault::serve(&shared, request.method(), kill).await {
        Ok(accept_then) => accept_then,
        Err(response) => return response,
    };
    let response = match ingest(&shared, request).await {
        Ok(()) => match accept_then {
            Some(status) => azure_error(status, "InjectedFault", "data accepted, failure injected"),
            None => StatusCode::OK.into_response(),
        },
        Err(response) => *response,
    };
    if response.status() != StatusCode::OK {
        count_rejection(&shared, response.status());
        tracing::debug!(status = %response.status(), "EMULATOR dce: request refused");
    }
    response
}

async fn ingest(shared: &Shared, request: Request) -> Result<(), Box<Response>> {
    let (parts, body) = request.into_parts();
    check_route(shared, &parts)?;
    check_api_version(shared, &parts.uri)?;
    check_token(shared, &parts.headers)?;
    check_headers(&parts.headers)?;
    let Decoded {
        compressed,
        parsed,
        kept,
    } = read_body(shared, body).await?;
    check_duplicates(shared, &parsed)?;
    {
        let mut data = shared.lock();
        if data.silent_loss {
            let mut lost = crate::loadgen::checksum::Checksum::new();
            for &(i, t, bits) in &parsed.samples {
                lost.add(parsed.series[i as usize], t, f64::from_bits(bits));
            }
            data.stats.silently_lost_requests += 1;
            data.stats.silently_lost_samples += parsed.samples.len() as u64;
            data.stats.silently_lost_checksum.merge(&lost);
            return Ok(());
        }
    }
    record_accepted(shared, &parsed, kept, compressed.len());
    Ok(())
}

/// A body read and walked.
struct Decoded {
    /// As received.
    compressed: Bytes,
    parsed: Parsed,
    /// Decoded in full when the emulator keeps accepted requests or series.
    kept: Option<WriteRequest>,
}

/// Reads the body (413 over the limit, compressed or not) and walks it (400 when it is not a
/// snappy block holding a valid `prometheus.WriteRequest`).
async fn read_body(shared: &Shared, body: Body) -> Result<Decoded, Response> {
    let too_large = || {
        azure_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            &format!("the body exceeds {} bytes", shared.max_body),
        )
    };
    let compressed = axum::body::to_bytes(Body::new(body), shared.max_body)
        .await
        .map_err(|_| too_large())?;
    let bad = |message: String| azure_error(StatusCode::BAD_REQUEST, "InvalidPayload", &message);
    let len = snap::raw::decompress_len(&compressed)
        .map_err(|e| bad(format!("body is not a snappy block: {e}")))?;
    if len > shared.max_body {
        return Err(too_large());
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&compressed)
        .map_err(|e| bad(format!("body is not a snappy block: {e}")))?;
    let filter = shared.lock().refuse_content.clone();
    if let Some((needle, status)) = filter {
        if !needle.is_empty() && raw.windows(needle.len()).any(|w| w == needle) {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return Err(azure_error(
                status,
                "InjectedFault",
                "EMULATOR content filter: the request holds refused content",
            ));
        }
    }
    let parsed = parse_write_request(&raw).map_err(|e| match e {
        Refusal::Wire(e) => bad(format!("body is not a prometheus.WriteRequest: {e}")),
        Refusal::Content(m) => bad(m.to_owned()),
    })?;
    // Kept requests are decoded in full, for the tests that look at them and for queries.
    let kept = if shared.keep > 0 || shared.keep_series > 0 {
        Some(
            WriteRequest::decode(raw.as_slice())
                .map_err(|e| bad(format!("body is not a prometheus.WriteRequest: {e}")))?,
        )
    } else {
        None
    };
    Ok(Decoded {
        compressed,
        parsed,
        kept,
    })
}
