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

/// The label set `{route="…"}` of the per-route counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// The route's name.
    pub route: String,
}

/// The label set `{route="…",reason="…"}` of the per-route drop counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteReasonLabels {
    /// The route's name.
    pub route: String,
    /// Why (a closed set per metric).
    pub reason: &'static str,
}

/// The registry in the OpenMetrics text format, each metric family once.
///
/// With routes, each route registers its stages' metrics in a sub-registry labelled with its
/// name, and prometheus-client writes one family per sub-registry: the same name would appear
/// several times, which the format forbids. The families are merged here: the first
/// occurrence's `# HELP`/`# TYPE`/`# UNIT` lines, then the samples of every occurrence.
///
/// # Errors
/// When encoding fails.
pub fn encode_metrics(registry: &Registry) -> Result<String, std::fmt::Error> {
    encode_all([registry])
}

/// [`encode_metrics`] of several registries as one exposition (a route added by a reload
/// registers its metrics in a registry of its own).
///
/// # Errors
/// When encoding fails.
pub fn encode_all<'a>(
    registries: impl IntoIterator<Item = &'a Registry>,
) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    for registry in registries {
        prometheus_client::encoding::text::encode_registry(&mut text, registry)?;
    }
    Ok(merge_families(&text))
}

/// Merges repeated metric families of an OpenMetrics text (see [`encode_metrics`]).
fn merge_families(text: &str) -> String {
    // Families in first-seen order: (name, descriptor lines, sample lines).
    let mut families: Vec<(&str, Vec<&str>, Vec<&str>)> = Vec::new();
    let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut current: Option<usize> = None;
    for line in text.lines() {
        if line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let name = rest.split(' ').nth(1).unwrap_or_default();
            let at = *index.entry(name).or_insert_with(|| {
                families.push((name, Vec::new(), Vec::new()));
                families.len() - 1
            });
            // A repeated family repeats the same descriptor lines: keep them once.
            if !families[at].1.contains(&line) {
                families[at].1.push(line);
            }
            current = Some(at);
        } else if let Some(at) = current {
            families[at].2.push(line);
        }
    }
    let mut out = String::with_capacity(text.len());
    for (_, descriptor, samples) in families {
        for line in descriptor.iter().chain(&samples) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str("# EOF\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::gauge::Gauge;

    #[test]
    fn families_repeated_by_route_sub_registries_are_merged() {
        let mut registry = Registry::with_prefix("promlink");
        let total = Counter::<u64>::default();
        total.inc();
        registry.register("received", "Received", total);
        for (route, n) in [("a", 1), ("b", 2)] {
            let r = registry.sub_registry_with_label(("route".into(), route.into()));
            let sent = Counter::<u64>::default();
            sent.inc_by(n);
            r.register("sent", "Sent", sent);
            let g = Gauge::<i64>::default();
            g.set(n as i64);
            r.sub_registry_with_prefix("queue")
                .register("bytes", "Queued bytes", g);
        }
        let text = encode_metrics(&registry).unwrap();
        assert_eq!(
            text.matches("# TYPE promlink_sent counter").count(),
            1,
            "{text}"
        );
        assert_eq!(
            text.matches("# HELP promlink_queue_bytes").count(),
            1,
            "{text}"
        );
        let lines: Vec<&str> = text.lines().collect();
        let at = |s: &str| {
            lines
                .iter()
                .position(|l| *l == s)
                .unwrap_or_else(|| panic!("{s} missing from {text}"))
        };
        // The samples of a family follow its descriptor, together.
        let (t, a, b) = (
            at("# TYPE promlink_sent counter"),
            at("promlink_sent_total{route=\"a\"} 1"),
            at("promlink_sent_total{route=\"b\"} 2"),
        );
        assert!(t < a && a < b && b <= t + 3, "{text}");
        assert!(
            lines.contains(&"promlink_queue_bytes{route=\"b\"} 2"),
            "{text}"
        );
        assert!(lines.contains(&"promlink_received_total 1"), "{text}");
        assert_eq!(lines.last(), Some(&"# EOF"));
        // The merged text parses as OpenMetrics does: each family named once.
        let mut names: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "{text}");
    }
}
