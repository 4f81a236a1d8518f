//! Receiver metrics: what senders wrote and how each request was answered.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Labels of a receive request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `v1`, `v2` or `unknown`.
    pub protocol: &'static str,
    /// The HTTP status answered.
    pub code: u16,
}

/// Labels of a received-data counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabel {
    /// `v1` or `v2`.
    pub protocol: &'static str,
}

/// Labels of a rejection counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Closed set: `content_type`, `encoding`, `too_large`, `snappy`, `protobuf`, `invalid`,
    /// `too_many_series`, `limit`, `queue_full`, `queue_io`, `shutting_down`, `body`.
    pub reason: &'static str,
}

/// Metrics of the receive stage.
#[derive(Clone, Default)]
pub struct Metrics {
    /// Requests by protocol and answered status.
    pub requests: Family<RequestLabels, Counter>,
    /// Requests refused, by reason.
    pub rejected: Family<ReasonLabel, Counter>,
    /// Samples accepted into the queue.
    pub samples: Family<ProtocolLabel, Counter>,
    /// Native histogram samples accepted into the queue.
    pub histograms: Family<ProtocolLabel, Counter>,
    /// Exemplars accepted into the queue.
    pub exemplars: Family<ProtocolLabel, Counter>,
    /// Series entries accepted into the queue.
    pub series: Family<ProtocolLabel, Counter>,
    /// Metadata entries accepted into the queue.
    pub metadata: Family<ProtocolLabel, Counter>,
    /// Compressed request body bytes received.
    pub body_bytes: Counter,
    /// Series dropped at the edge for breaking a label limit (`label_limit_action: drop`).
    pub series_dropped: Counter,
}

impl Metrics {
    /// Creates the metrics and registers them.
    pub fn register(r: &mut Registry) -> Self {
        let m = Self::default();
        r.register(
            "receive_requests",
            "Remote-write requests received, by protocol and answered status.",
            m.requests.clone(),
        );
        r.register(
            "receive_rejected",
            "Remote-write requests refused, by reason.",
            m.rejected.clone(),
        );
        r.register(
            "samples_received",
            "Samples accepted into the queue.",
            m.samples.clone(),
        );
        r.register(
            "histograms_received",
            "Native histogram samples accepted into the queue.",
            m.histograms.clone(),
        );
        r.register(
            "exemplars_received",
            "Exemplars accepted into the queue.",
            m.exemplars.clone(),
        );
        r.register(
            "series_received",
            "Series entries accepted into the queue.",
            m.series.clone(),
        );
        r.register(
            "metadata_received",
            "Metadata entries accepted into the queue.",
            m.metadata.clone(),
        );
        r.register(
            "receive_series_dropped",
            "Series dropped on receipt for breaking a label limit (label_limit_action: drop).",
            m.series_dropped.clone(),
        );
        r.register(
            "receive_body_bytes",
            "Compressed remote-write body bytes received.",
            m.body_bytes.clone(),
        );
        m
    }
}
