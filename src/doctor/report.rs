//! The doctor's findings and their two renderings: a readable report and JSON.

use std::fmt::Write as _;

use serde::Serialize;

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Data flows, but something is degraded or will bite later.
    Warn,
    /// Data would not flow under the chosen policy.
    Fail,
    /// Not checked (not applicable, or a prerequisite failed).
    Skipped,
}

impl Status {
    /// The mark shown in the human report.
    pub fn mark(self) -> &'static str {
        match self {
            Status::Ok => "✓",
            Status::Warn => "!",
            Status::Fail => "✗",
            Status::Skipped => "-",
        }
    }

    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skipped => "skipped",
        }
    }
}

/// One finding.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// What was checked: `ingestion-url`, `region`, `dns`, `connect`, `token`, `canary`.
    pub name: String,
    /// What it was checked on: a host, a URL, an identity kind.
    pub target: String,
    /// The outcome.
    pub status: Status,
    /// What doctor observed.
    pub seen: String,
    /// What that means.
    pub meaning: String,
    /// What to do; empty when nothing.
    pub fix: String,
    /// For `dns` checks: the Private Link verdict (`private`, `public`, `nxdomain`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
}

impl Check {
    /// A check without a verdict.
    pub fn new(
        name: &str,
        target: impl Into<String>,
        status: Status,
        seen: impl Into<String>,
        meaning: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            name: name.to_string(),
            target: target.into(),
            status,
            seen: seen.into(),
            meaning: meaning.into(),
            fix: fix.into(),
            verdict: None,
        }
    }
}

/// Everything doctor found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Whether data would flow under the chosen policy: no check failed.
    pub ok: bool,
    /// The Private Link policy checked against (`require`, `prefer`, `off`).
    pub mode: String,
    /// The upstream URL (no credentials).
    pub upstream: String,
    /// The findings, in the order they were made.
    pub checks: Vec<Check>,
    /// The route whose destination this report checked (with `routes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// With `routes`: one report per destination of every route (and no checks of its own).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Report>,
}

impl Report {
    /// Builds a report; `ok` follows from the checks.
    pub fn new(mode: &str, upstream: String, checks: Vec<Check>) -> Self {
        Self {
            ok: !checks.iter().any(|c| c.status == Status::Fail),
            mode: mode.to_string(),
            upstream,
            checks,
            route: None,
            routes: Vec::new(),
        }
    }

    /// The report of a configuration with `routes`: one report per destination; data flows
    /// when it flows to every one.
    pub fn of_routes(routes: Vec<Report>) -> Self {
        Self {
            ok: routes.iter().all(|r| r.ok),
            mode: "per route".into(),
            upstream: format!("{} route destinations", routes.len()),
            checks: Vec::new(),
            route: None,
            routes,
        }
    }

    /// 0 when data would flow under the chosen policy, 1 when it would not.
    pub fn exit_code(&self) -> i32 {
        if self.ok {
            0
        } else {
            1
        }
    }

    /// The checks with this name.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Check> + 'a {
        self.checks.iter().filter(move |c| c.name == name)
    }

    /// The report as one JSON object: `{ok, mode, upstream, checks: [...]}`.
    pub fn to_json(&self) -> String {
        // Serializing plain strings, bools and enums cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into())
    }

    /// The readable report: one block per check (mark, name, target; seen, meaning, fix), then
    /// a summary line.
    pub fn to_human(&self) -> String {
        let mut out = String::new();
        if !self.routes.is_empty() {
            for r in &self.routes {
                let _ = writeln!(out, "== route {} ==", r.route.as_deref().unwrap_or("?"));
                out.push_str(&r.to_human());
                let _ = writeln!(out);
            }
            let failing: Vec<String> = self
                .routes
                .iter()
                .filter(|r| !r.ok)
                .map(|r| format!("{} ({})", r.route.as_deref().unwrap_or("?"), r.upstream))
                .collect();
            let _ = if failing.is_empty() {
                writeln!(out, "every route: data would flow")
            } else {
                writeln!(out, "data would NOT flow for: {}", failing.join(", "))
            };
            return out;
        }
        let _ = writeln!(out, "promlink doctor (private link mode: {})", self.mode);
        let _ = writeln!(out, "upstream: {}", self.upstream);
        for c in &self.checks {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "{} {} {}  [{}]",
                c.status.mark(),
                c.name,
                c.target,
                c.status.as_str()
            );
            for (label, text) in [("seen", &c.seen), ("meaning", &c.meaning), ("fix", &c.fix)] {
                if !text.is_empty() {
                    let _ = writeln!(out, "    {label:<8} {}", indent(text));
                }
            }
        }
        let count = |s: Status| self.checks.iter().filter(|c| c.status == s).count();
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{} ok, {} warning{}, {} failed, {} skipped: {}",
            count(Status::Ok),
            count(Status::Warn),
            if count(Status::Warn) == 1 { "" } else { "s" },
            count(Status::Fail),
            count(Status::Skipped),
            if self.ok {
                format!("data would flow under private link mode {}", self.mode)
            } else {
                format!("data would NOT flow under private link mode {}", self.mode)
            }
        );
        out
    }
}

/// Indents continuation lines under the label column.
fn indent(text: &str) -> String {
    text.replace('\n', "\n             ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_and_ok_follow_failures() {
        let ok = Check::new("dns", "h", Status::Ok, "s", "m", "");
        let warn = Check::new("dns", "h", Status::Warn, "s", "m", "f");
        let fail = Check::new("connect", "h", Status::Fail, "s", "m", "f");
        let r = Report::new("require", "u".into(), vec![ok.clone(), warn.clone()]);
        assert!(r.ok);
        assert_eq!(r.exit_code(), 0);
        let r = Report::new("require", "u".into(), vec![ok, warn, fail]);
        assert!(!r.ok);
        assert_eq!(r.exit_code(), 1);
        let human = r.to_human();
        assert!(human.contains("✗ connect h"), "{human}");
        assert!(human.contains("! dns h"), "{human}");
        assert!(human.contains("data would NOT flow"), "{human}");
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["checks"][2]["status"], "fail");
        assert!(v["checks"][0].get("verdict").is_none());
    }
}
