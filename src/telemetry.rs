//! Logging setup, and the label set and entry counters the stages share. Metrics live with their stages
//! (`Metrics` structs registered in one prometheus-client `Registry` by [`crate::serve`]) and
//! are served on `/metrics` by the receiver.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Metric, Registry};

use crate::codec::Counts;

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

/// The kinds of entry a remote-write request carries, in the order their counters are
/// registered: the name's prefix and what the help calls them.
const ENTRY_KINDS: [(&str, &str); 5] = [
    ("samples", "Samples"),
    ("histograms", "Native histogram samples"),
    ("exemplars", "Exemplars"),
    ("series", "Series entries"),
    ("metadata", "Metadata entries"),
];

/// One counter (`M`: a [`Counter`], or a [`Family`] of them) per kind of entry, registered as
/// `<kind>_<stage>` (`samples_received`, `metadata_forwarded`, ...) with one help sentence.
#[derive(Clone, Debug, Default)]
pub struct EntryCounters<M> {
    /// Float samples.
    pub samples: M,
    /// Native histogram samples.
    pub histograms: M,
    /// Exemplars.
    pub exemplars: M,
    /// Series entries.
    pub series: M,
    /// Metadata entries.
    pub metadata: M,
}

impl<M: Metric + Clone> EntryCounters<M> {
    /// Registers each counter as `<kind>_<stage>`, with the help "<kind> <done>" (the registry
    /// ends it with a period).
    pub fn register(&self, registry: &mut Registry, stage: &str, done: &str) {
        let each = [
            &self.samples,
            &self.histograms,
            &self.exemplars,
            &self.series,
            &self.metadata,
        ];
        for ((kind, what), metric) in ENTRY_KINDS.into_iter().zip(each) {
            registry.register(
                format!("{kind}_{stage}"),
                format!("{what} {done}"),
                metric.clone(),
            );
        }
    }
}

impl EntryCounters<Counter> {
    /// Adds `n`.
    pub fn add(&self, n: &Counts) {
        self.samples.inc_by(n.samples);
        self.histograms.inc_by(n.histograms);
        self.exemplars.inc_by(n.exemplars);
        self.series.inc_by(n.series);
        self.metadata.inc_by(n.metadata);
    }
}

impl<L> EntryCounters<Family<L, Counter>>
where
    L: Clone + std::hash::Hash + Eq,
{
    /// Adds `n` under `labels`.
    pub fn add(&self, labels: &L, n: &Counts) {
        self.samples.get_or_create(labels).inc_by(n.samples);
        self.histograms.get_or_create(labels).inc_by(n.histograms);
        self.exemplars.get_or_create(labels).inc_by(n.exemplars);
        self.series.get_or_create(labels).inc_by(n.series);
        self.metadata.get_or_create(labels).inc_by(n.metadata);
    }
}
