//! Logging setup. Metrics live with their stages (`Metrics` structs registered in one
//! prometheus-client `Registry` by [`crate::serve`]) and are served on `/metrics` by the receiver.

use crate::config::LogFormat;

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
