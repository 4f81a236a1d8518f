//! Relabeling with the syntax and semantics of Prometheus 2.42's `write_relabel_configs`
//! (`model/relabel/relabel.go`, read as a specification): the same actions, defaults,
//! validation and results, quirks included.
//!
//! - [`RelabelConfig`] is one rule as written in YAML; [`Rules::compile`] checks a list of them
//!   as Prometheus does at start and names the key of every problem.
//! - [`Rules::apply`] runs the rules over one series' labels, in order: the series is dropped,
//!   kept as it was (the caller can forward the sender's bytes), or kept changed.
//! - [`Selector`] is a PromQL series selector (`{namespace=~"team-a|team-b"}`), as routes
//!   match series.
//!
//! Regexes are fully anchored and use RE2 syntax, as Go's `regexp`; the few places where
//! Rust's `regex` crate reads a pattern differently from Go (`\d`, `\w`, `\s` and `\b` are
//! ASCII in Go, `\Q...\E` quoting) are translated first ([`regex`](mod@crate::regex)).

mod apply;
mod case;
mod config;
pub mod regex;
pub mod selector;
#[cfg(test)]
mod tests;

pub use apply::{Label, Verdict};
pub use config::{Action, ConfigError, RelabelConfig, Rule, Rules};
pub use selector::{MatchOp, Matcher, Selector, SelectorError};
