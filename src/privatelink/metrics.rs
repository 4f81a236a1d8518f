//! Private Link metrics: the verdict and active path as state sets, and what changed.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{ActivePath, Mode, Verdict};

/// `{upstream, verdict}`: the upstream is one configured host name, so the set stays bounded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    /// The upstream host.
    pub upstream: String,
    /// The verdict name.
    pub verdict: &'static str,
}

/// `{mode}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabel {
    /// `require`, `prefer` or `off`.
    pub mode: &'static str,
}

/// `{path}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabel {
    /// `private`, `public` or `none`.
    pub path: &'static str,
}

/// `{stage}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    /// `tcp` or `tls`.
    pub stage: &'static str,
}

/// Metrics of the private-link stage.
#[derive(Clone, Default)]
pub struct Metrics {
    /// 1 for the current verdict, 0 for the others.
    pub verdict: Family<VerdictLabels, Gauge>,
    /// 1 for the configured mode.
    pub mode: Family<ModeLabel, Gauge>,
    /// 1 for the path traffic takes now.
    pub active_path: Family<PathLabel, Gauge>,
    /// DNS verifications, by verdict.
    pub verifications: Family<VerdictLabels, Counter>,
    /// Changes of the DNS answer (chain or addresses).
    pub dns_changes: Counter,
    /// Changes of the verdict.
    pub verdict_changes: Counter,
    /// Moves between the private path and the public fallback (either way).
    pub fallback_transitions: Counter,
    /// Failed TCP/TLS probes of the chosen endpoint.
    pub probe_failures: Family<StageLabel, Counter>,
    /// Seconds spent on the public fallback.
    pub on_fallback_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    /// Unix time of the last verification.
    pub last_verification: Gauge,
}

impl Metrics {
    /// Creates and registers the metrics under `private_link_`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        // The probe's stages exist from the start, at zero.
        for stage in ["tcp", "tls"] {
            let _ = m.probe_failures.get_or_create(&StageLabel { stage });
        }
        let r = registry.sub_registry_with_prefix("private_link");
        r.register("verdict", "The DNS verdict for the upstream host: 1 for the current one (private, public, nxdomain, unexpected-address, mixed, dns-error)", m.verdict.clone());
        r.register(
            "mode",
            "The configured path policy: 1 for require, prefer or off",
            m.mode.clone(),
        );
        r.register(
            "active_path",
            "The path upstream traffic takes: 1 for private, public or none (held)",
            m.active_path.clone(),
        );
        r.register(
            "verifications",
            "DNS verifications of the upstream host, by verdict",
            m.verifications.clone(),
        );
        r.register(
            "dns_changes",
            "Changes of the upstream host's DNS answer (CNAME chain or addresses)",
            m.dns_changes.clone(),
        );
        r.register(
            "verdict_changes",
            "Changes of the DNS verdict",
            m.verdict_changes.clone(),
        );
        r.register(
            "fallback_transitions",
            "Moves between the private endpoint and the public fallback, either way",
            m.fallback_transitions.clone(),
        );
        r.register(
            "probe_failures",
            "Failed TCP or TLS probes of the upstream endpoint",
            m.probe_failures.clone(),
        );
        r.register(
            "on_fallback_seconds",
            "Seconds upstream traffic spent on the public fallback",
            m.on_fallback_seconds.clone(),
        );
        r.register(
            "last_verification_timestamp_seconds",
            "Unix time of the last DNS verification",
            m.last_verification.clone(),
        );
        m
    }

    pub(super) fn set_mode(&self, mode: Mode) {
        for m in [Mode::Require, Mode::Prefer, Mode::Off] {
            self.mode
                .get_or_create(&ModeLabel { mode: m.as_str() })
                .set(i64::from(m == mode));
        }
    }

    pub(super) fn set_verdict(&self, upstream: &str, verdict: Verdict) {
        for v in Verdict::ALL {
            self.verdict
                .get_or_create(&VerdictLabels {
                    upstream: upstream.to_string(),
                    verdict: v.as_str(),
                })
                .set(i64::from(v == verdict));
        }
        self.verifications
            .get_or_create(&VerdictLabels {
                upstream: upstream.to_string(),
                verdict: verdict.as_str(),
            })
            .inc();
    }

    pub(super) fn set_path(&self, path: ActivePath) {
        for p in [ActivePath::Private, ActivePath::Public, ActivePath::None] {
            self.active_path
                .get_or_create(&PathLabel { path: p.as_str() })
                .set(i64::from(p == path));
        }
    }
}
