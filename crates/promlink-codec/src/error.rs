//! Why a request body was refused: one error type for every decoding stage, whose message is
//! what the receiver answers the sender with.

/// Why a request body was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// `Content-Type` is not a remote-write protobuf type.
    #[error("unsupported content type {0:?}: expected application/x-protobuf, optionally with proto=prometheus.WriteRequest or proto=io.prometheus.write.v2.Request")]
    UnsupportedContentType(String),
    /// `Content-Encoding` is not `snappy`.
    #[error("unsupported content encoding {0:?}: expected snappy (block format)")]
    UnsupportedEncoding(String),
    /// The compressed body is over the limit.
    #[error("body of {size} bytes exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// Bytes received (at least).
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// The snappy header declares a decoded size over the limit.
    #[error("snappy header declares {declared} decoded bytes, over the limit of {limit} bytes")]
    DecodedTooLarge {
        /// Declared decoded size.
        declared: usize,
        /// Configured limit.
        limit: usize,
    },
    /// The body is not valid snappy block data.
    #[error("invalid snappy block data: {0}")]
    Snappy(String),
    /// The decoded body is not a valid protobuf message of the expected type.
    #[error("invalid protobuf: {0}")]
    Protobuf(String),
    /// The request holds more series than allowed.
    #[error("request holds more than {limit} series")]
    TooManySeries {
        /// The limit.
        limit: usize,
    },
    /// A series breaks a configured limit (labels, lengths, samples).
    #[error("series {series}: {rule}")]
    Limit {
        /// The series, rendered like `up{job="x"}` (possibly shortened).
        series: String,
        /// The limit it breaks.
        rule: String,
    },
    /// A series breaks a rule of the specification.
    #[error("series {series}: {rule}")]
    Invalid {
        /// The series, rendered like `up{job="x"}` (possibly shortened).
        series: String,
        /// The rule it breaks.
        rule: String,
    },
}
