//! What the receiver answers on `GET /ready` and `GET /status`.
//!
//! `/ready` is the Kubernetes readiness probe and means "this replica can accept writes": the
//! listener is up, shutdown has not begun and the queue can write. Upstream trouble (no token,
//! an unverified Private Link path, an upstream that does not answer) is exactly what the queue
//! is there to ride out, so it does not take a replica out of its Service; it is reported by
//! `/status`, the metrics and the alerts instead (unless `ready_requires_upstream` asks for
//! the old behaviour, where those checks gate `/ready` too).
//!
//! `/status` always answers 200 with a JSON report: it is for people and dashboards, not a probe.

use serde::Serialize;

/// One check of the status report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `private_link`, `token`, `upstream` or `queue`.
    pub name: &'static str,
    /// Whether this part is healthy.
    pub ok: bool,
    /// A short machine-friendly state, e.g. `private`, `valid`, `unavailable`, `failed`.
    pub state: String,
    /// What was seen, in words (empty when there is nothing to add).
    pub reason: String,
    /// The route whose stage this is (absent without routes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The route's destination (its URL without query) when the route spreads over several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Whether this check makes `/ready` fail now (the queue when it cannot write; with
    /// `ready_requires_upstream` also the upstream checks, by their pre-`/status` rules).
    #[serde(skip)]
    pub fails_ready: bool,
}

/// The whole report of `GET /status`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// What `GET /ready` answers now (200: true).
    pub ready: bool,
    /// Shutdown has begun: writes may still be accepted for a while, but `/ready` fails.
    pub shutting_down: bool,
    /// Every check, in a stable order.
    pub checks: Vec<Check>,
}

/// The checks of the stages behind the receiver (see [`crate::health`]).
pub trait StatusSource: Send + Sync + 'static {
    /// Every check, in a stable order.
    fn checks(&self) -> Vec<Check>;
}

impl Report {
    /// The report for `checks`, given whether shutdown has begun.
    pub fn new(checks: Vec<Check>, shutting_down: bool) -> Self {
        let ready = !shutting_down && !checks.iter().any(|c| c.fails_ready);
        Self {
            ready,
            shutting_down,
            checks,
        }
    }

    /// Why `/ready` fails, one reason per failing gate (empty when ready).
    pub fn not_ready_because(&self) -> Vec<String> {
        let mut why: Vec<String> = self
            .checks
            .iter()
            .filter(|c| c.fails_ready)
            .map(|c| match (&c.route, &c.url) {
                (Some(route), Some(url)) => {
                    format!("route {route} ({url}): {}: {}", c.name, c.reason)
                }
                (Some(route), None) => format!("route {route}: {}: {}", c.name, c.reason),
                (None, _) => format!("{}: {}", c.name, c.reason),
            })
            .collect();
        if self.shutting_down {
            why.insert(0, "shutting down".into());
        }
        why
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &'static str, ok: bool, fails_ready: bool) -> Check {
        Check {
            name,
            ok,
            state: if ok { "ok" } else { "failed" }.into(),
            reason: format!("{name} reason"),
            route: None,
            url: None,
            fails_ready,
        }
    }

    #[test]
    fn only_checks_that_fail_ready_and_shutdown_make_it_not_ready() {
        let r = Report::new(
            vec![check("upstream", false, false), check("queue", true, false)],
            false,
        );
        assert!(
            r.ready,
            "a failing check that does not fail ready leaves it ready"
        );
        assert!(r.not_ready_because().is_empty());

        let r = Report::new(
            vec![check("upstream", false, true), check("queue", false, true)],
            false,
        );
        assert!(!r.ready);
        assert_eq!(
            r.not_ready_because(),
            vec!["upstream: upstream reason", "queue: queue reason"]
        );

        let r = Report::new(vec![check("queue", true, false)], true);
        assert!(!r.ready);
        assert_eq!(r.not_ready_because(), vec!["shutting down"]);
    }

    #[test]
    fn json_has_the_documented_shape() {
        let r = Report::new(vec![check("private_link", false, false)], false);
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["ready"], true);
        assert_eq!(v["checks"][0]["name"], "private_link");
        assert_eq!(v["checks"][0]["ok"], false);
        assert_eq!(v["checks"][0]["state"], "failed");
        assert_eq!(v["checks"][0]["reason"], "private_link reason");
        assert!(
            v["checks"][0].get("fails_ready").is_none(),
            "internal field leaked: {v}"
        );
    }
}
