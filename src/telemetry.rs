//! Logging setup, and the label set the stages share. Metrics live with their stages
//! (`Metrics` structs registered in one prometheus-client `Registry` by [`crate::serve`]) and
//! are served on `/metrics` by the receiver.

use prometheus_client::encoding::EncodeLabelSet;

use crate::config::LogFormat;

/// The label set `{reason="…"}` of every counter that says why something happened. The values
/// are a closed set, listed in each metric's help; no URL, tenant or client id is ever one.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why (a closed set per metric).
    pub reason: &'static str,
}

/// Installs the global tracing subscriber. Safe to call more than once (later calls are no-ops).
pub fn init_logging(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
