//! Which remote-write protocol a request speaks, from its `Content-Type`.

use super::error::DecodeError;

/// Which remote-write message a body holds, chosen by its `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `prometheus.WriteRequest` (remote write 1.0).
    V1,
    /// `io.prometheus.write.v2.Request` (remote write 2.0).
    V2,
}

impl Protocol {
    /// Picks the protocol from a `Content-Type` header value, per the 2.0 specification:
    /// `application/x-protobuf` alone means 1.0.
    ///
    /// # Errors
    /// [`DecodeError::UnsupportedContentType`] for anything else.
    pub fn from_content_type(value: Option<&str>) -> Result<Self, DecodeError> {
        let unsupported =
            || DecodeError::UnsupportedContentType(value.unwrap_or("<missing>").to_string());
        let value = value.ok_or_else(unsupported)?;
        let mut parts = value.split(';').map(str::trim);
        if !parts
            .next()
            .is_some_and(|m| m.eq_ignore_ascii_case("application/x-protobuf"))
        {
            return Err(unsupported());
        }
        let mut proto = Protocol::V1;
        for param in parts.filter(|p| !p.is_empty()) {
            let (k, v) = param.split_once('=').ok_or_else(unsupported)?;
            if !k.trim().eq_ignore_ascii_case("proto") {
                continue;
            }
            proto = match v.trim().trim_matches('"') {
                "prometheus.WriteRequest" => Protocol::V1,
                "io.prometheus.write.v2.Request" => Protocol::V2,
                _ => return Err(unsupported()),
            };
        }
        Ok(proto)
    }
}

/// The error for a body of the other remote-write version than its content type says.
pub(crate) fn wrong_version(declared: Protocol) -> DecodeError {
    DecodeError::Protobuf(match declared {
        Protocol::V1 => "the body holds fields 4/5 (symbols, timeseries) of io.prometheus.write.v2.Request: a remote write 2.0 body sent as 1.0; send Content-Type: application/x-protobuf;proto=io.prometheus.write.v2.Request".into(),
        Protocol::V2 => "the body holds fields 1/3 (timeseries, metadata) of prometheus.WriteRequest: a remote write 1.0 body sent as 2.0; send Content-Type: application/x-protobuf (or ;proto=prometheus.WriteRequest)".into(),
    })
}
