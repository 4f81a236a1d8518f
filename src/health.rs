//! The checks behind `GET /ready` and `GET /status`: Private Link, token, upstream and queue,
//! read from the stages that own them (see [`crate::receive::status`] for what each endpoint
//! means).
//!
//! Only a queue that cannot write fails `/ready` by default. With `ready_requires_upstream`,
//! `/ready` also fails by the rules it had before `/status` existed: no valid token, a Private
//! Link path that does not let data flow under the policy, or no upstream answer within
//! `ready_window`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::identity::{IdentityKind, TokenProvider};
use crate::privatelink::{ActivePath, Mode, PrivateLink};
use crate::queue::Queue;
use crate::receive::status::{Check, StatusSource};
use crate::upstream::Health;

/// How long a failed disk-queue write keeps the queue check failed: long enough for a probe
/// to see it, short enough that a recovered disk is found again by the senders' retries.
pub const QUEUE_FAILURE_HOLD: Duration = Duration::from_secs(10);

/// The stages the checks read.
pub struct Checks {
    /// The token provider.
    pub identity: TokenProvider,
    /// The upstream's answers.
    pub health: Arc<Health>,
    /// The Private Link state.
    pub private_link: Arc<PrivateLink>,
    /// The queue.
    pub queue: Arc<Queue>,
    /// `ready_window`: the upstream is unavailable after this long without an HTTP answer.
    pub window: Duration,
    /// `ready_requires_upstream`.
    pub requires_upstream: bool,
}

impl StatusSource for Checks {
    fn checks(&self) -> Vec<Check> {
        vec![
            self.private_link_check(),
            self.token_check(),
            self.upstream_check(),
            self.queue_check(),
        ]
    }
}

/// The checks of one route's destination.
pub struct RouteCheck {
    /// The route's name (`None` without routes).
    pub route: Option<String>,
    /// The destination's URL when the route spreads over several.
    pub url: Option<String>,
    /// Its checks.
    pub checks: Checks,
}

/// The checks of every route, each naming its route when there are routes. `/ready` fails when
/// any route's check fails it. The list grows when a reload adds a route.
pub struct RouteChecks(pub std::sync::Arc<std::sync::RwLock<Vec<RouteCheck>>>);

impl StatusSource for RouteChecks {
    fn checks(&self) -> Vec<Check> {
        let mut all = Vec::new();
        let routes = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for r in routes.iter() {
            all.extend(r.checks.checks().into_iter().map(|mut c| {
                c.route = r.route.clone();
                c.url = r.url.clone();
                c
            }));
        }
        all
    }
}

impl Checks {
    fn private_link_check(&self) -> Check {
        let s = self.private_link.snapshot();
        let flows = self.private_link.ready();
        let verdict = s.resolution.as_ref().map(|r| {
            format!(
                "verdict {}: {} (policy {}, host {})",
                r.verdict,
                r.detail,
                s.mode.as_str(),
                s.host
            )
        });
        let (state, reason) = match (s.mode, s.path) {
            (Mode::Off, _) => ("off", "Private Link verification is off".to_string()),
            (_, ActivePath::None) => (
                if s.resolution.is_none() {
                    "unverified"
                } else {
                    "blocked"
                },
                format!(
                    "{}; nothing is sent to an address that is not verified private: data waits in the queue",
                    verdict.unwrap_or_else(|| format!("{} not verified yet", s.host))
                ),
            ),
            (_, ActivePath::Public) => (
                "public-fallback",
                format!(
                    "{}; sending over the public endpoint (policy prefer)",
                    verdict.unwrap_or_default()
                ),
            ),
            (_, ActivePath::Private) => match &s.probe_failure {
                Some(p) => (
                    "private-unreachable",
                    format!(
                        "{}; the private endpoint does not connect: {p}",
                        verdict.unwrap_or_default()
                    ),
                ),
                None => ("private", verdict.unwrap_or_default()),
            },
        };
        Check {
            name: "private_link",
            ok: flows.is_ok() && s.path != ActivePath::Public,
            state: state.into(),
            reason,
            route: None,
            url: None,
            fails_ready: self.requires_upstream && flows.is_err(),
        }
    }

    fn token_check(&self) -> Check {
        let t = self.identity.state();
        let (state, reason) = if t.kind == IdentityKind::None {
            ("none", "identity none: no token is sent".to_string())
        } else if t.valid {
            let left = t
                .expires_at
                .and_then(|at| at.duration_since(SystemTime::now()).ok())
                .map(|d| {
                    format!(
                        "expires in {}",
                        humantime::format_duration(Duration::from_secs(d.as_secs()))
                    )
                })
                .unwrap_or_default();
            ("valid", left)
        } else {
            (
                "missing",
                t.last_error
                    .unwrap_or_else(|| "the first token has not been obtained yet".into()),
            )
        };
        Check {
            name: "token",
            ok: t.valid,
            state: state.into(),
            reason,
            route: None,
            url: None,
            fails_ready: self.requires_upstream && !t.valid,
        }
    }

    fn upstream_check(&self) -> Check {
        let h = &self.health;
        let (ok, state, reason) = if let Some(silent) = h.unavailable_for(self.window) {
            let why = h
                .last_error()
                .unwrap_or_else(|| "no request has been sent yet".into());
            (
                false,
                "unavailable",
                format!(
                    "no HTTP answer for {} (ready_window {}): {why}",
                    humantime::format_duration(Duration::from_secs(silent.as_secs())),
                    humantime::format_duration(self.window)
                ),
            )
        } else if let Some((status, message)) = h.rejection() {
            (
                false,
                "rejecting",
                format!("the upstream refuses batches with HTTP {status}: {message}"),
            )
        } else if h.last_status() == 0 {
            (
                true,
                "waiting",
                "no answer yet; data is queued meanwhile".into(),
            )
        } else {
            (
                true,
                "answering",
                format!("last answer HTTP {}", h.last_status()),
            )
        };
        Check {
            name: "upstream",
            ok,
            state: state.into(),
            reason,
            // The rule /ready had before /status: an HTTP answer within the window, counted
            // from the first answer (not from the start).
            route: None,
            url: None,
            fails_ready: self.requires_upstream && !h.answered_within(self.window),
        }
    }

    fn queue_check(&self) -> Check {
        let q = &self.queue;
        let (used, max) = (q.used_bytes(), q.max_bytes().max(1));
        let kind = if q.is_durable() { "disk" } else { "memory" };
        let mut fill = format!(
            "{kind} queue: {used} of {max} bytes used ({:.0} %)",
            used as f64 * 100.0 / max as f64
        );
        if let Some(age) = q.oldest_age().filter(|_| used > 0) {
            fill.push_str(&format!(
                ", oldest data {} old",
                humantime::format_duration(Duration::from_secs(age.as_secs()))
            ));
        }
        match q.failure(QUEUE_FAILURE_HOLD) {
            Some(why) => Check {
                name: "queue",
                ok: false,
                state: "failed".into(),
                reason: format!("{why}; {fill}"),
                route: None,
                url: None,
                fails_ready: true,
            },
            None => Check {
                name: "queue",
                ok: true,
                state: if used >= max { "full" } else { "ok" }.into(),
                reason: fill,
                route: None,
                url: None,
                fails_ready: false,
            },
        }
    }
}
