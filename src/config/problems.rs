//! The problems a resolver collects: every one is reported at once, each naming the key, the
//! value and why it cannot be used. The helpers apply a default and record a problem in one go.

use std::time::Duration;

use super::Problem;

/// Problems found so far.
#[derive(Debug, Default)]
pub(super) struct Problems(pub(super) Vec<Problem>);

impl Problems {
    /// Records that `key` = `value` cannot be used, and why.
    pub(super) fn bad(&mut self, key: &str, value: impl std::fmt::Display, why: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            value: value.to_string(),
            why: why.into(),
        });
    }

    /// `v`, or `default` when unset; zero is a problem (and gives the default).
    pub(super) fn positive(&mut self, key: &str, v: Option<usize>, default: usize) -> usize {
        match v {
            Some(0) => {
                self.bad(key, 0, "must be greater than zero");
                default
            }
            Some(v) => v,
            None => default,
        }
    }

    /// `v`, or `default` when unset; a zero duration is a problem (and gives the default).
    pub(super) fn duration(
        &mut self,
        key: &str,
        v: Option<Duration>,
        default: Duration,
    ) -> Duration {
        match v {
            Some(d) if d.is_zero() => {
                self.bad(key, "0s", "must be greater than zero");
                default
            }
            Some(d) => d,
            None => default,
        }
    }

    /// A problem when `lower` exceeds `upper` (two durations named `lower_key` and `upper_key`).
    pub(super) fn ordered(
        &mut self,
        lower_key: &str,
        lower: Duration,
        upper_key: &str,
        upper: Duration,
    ) {
        if lower > upper {
            self.bad(
                lower_key,
                humantime::format_duration(lower),
                format!(
                    "must not exceed {upper_key} ({})",
                    humantime::format_duration(upper)
                ),
            );
        }
    }

    /// Whether nothing was found.
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
