//! A PromQL series selector, as a route's `match` writes it: `{namespace=~"team-a|team-b"}`,
//! `up{job!="x"}`, matchers `=`, `!=`, `=~` and `!~`, the metric name written in front or as
//! `__name__`. Regexes are anchored and read as Prometheus reads them ([`crate::regex`]). As in
//! Prometheus, a label a series does not have reads as the empty string, and a selector must
//! have a matcher that does not match the empty string (`{}` or `{a=""}` alone select
//! everything). Parse errors were compared by hand with `promtool check rules` (Prometheus
//! 2.42). Not used by the forwarder yet: routes (issue 15) will match series with it.

use std::fmt;

/// How a matcher compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`
    Regex,
    /// `!~`
    NotRegex,
}

/// One matcher of a selector.
#[derive(Clone, Debug)]
pub struct Matcher {
    /// The label name.
    pub name: String,
    /// The comparison.
    pub op: MatchOp,
    /// The value as written (unescaped).
    pub value: String,
    regex: Option<crate::regex::Pattern>,
}

impl Matcher {
    /// Whether `value` (the series' value of the label, empty when it has none) matches.
    pub fn matches(&self, value: &str) -> bool {
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => value == self.value,
            (MatchOp::NotEqual, _) => value != self.value,
            (MatchOp::Regex, Some(r)) => r.is_match(value),
            (MatchOp::NotRegex, Some(r)) => !r.is_match(value),
            // A regex matcher always has its regex.
            (_, None) => false,
        }
    }
}

/// A parsed selector: every matcher must match.
#[derive(Clone, Debug)]
pub struct Selector {
    matchers: Vec<Matcher>,
    text: String,
}

/// Why a selector cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectorError(pub String);

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SelectorError {}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Selector {
    /// Parses `text`.
    ///
    /// # Errors
    /// Where and why it is not a series selector.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        let mut matchers = Vec::new();
        p.skip_ws();
        let name_start = p.i;
        while p.i < p.s.len() && is_metric_char(p.s[p.i], p.i == name_start) {
            p.i += 1;
        }
        let name_in_front = p.i > name_start;
        if name_in_front {
            matchers.push(Matcher {
                name: "__name__".into(),
                op: MatchOp::Equal,
                value: text[name_start..p.i].to_string(),
                regex: None,
            });
        }
        p.skip_ws();
        if p.peek() == Some(b'{') {
            p.i += 1;
            loop {
                p.skip_ws();
                if p.peek() == Some(b'}') {
                    p.i += 1;
                    break;
                }
                matchers.push(p.matcher()?);
                p.skip_ws();
                match p.peek() {
                    Some(b',') => p.i += 1,
                    Some(b'}') => {}
                    _ => return Err(p.error("expected , or } after a matcher")),
                }
            }
        } else if matchers.is_empty() {
            return Err(p.error("expected a metric name or {"));
        }
        p.skip_ws();
        if p.i != p.s.len() {
            return Err(p.error("unexpected text after the selector"));
        }
        if name_in_front && matchers.iter().skip(1).any(|m| m.name == "__name__") {
            return Err(SelectorError(format!(
                "{text:?}: the metric name is given twice (in front and as __name__)"
            )));
        }
        if matchers.iter().all(|m| m.matches("")) {
            return Err(SelectorError(format!(
                "{text:?}: a selector needs at least one matcher that does not match the empty string (it would select every series)"
            )));
        }
        Ok(Selector {
            matchers,
            text: text.to_string(),
        })
    }

    /// Whether a series with labels `get` (name to value, `None` when it has no such label)
    /// is selected.
    pub fn matches<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.matchers
            .iter()
            .all(|m| m.matches(get(&m.name).unwrap_or("")))
    }

    /// The matchers.
    pub fn matchers(&self) -> &[Matcher] {
        &self.matchers
    }
}

fn is_metric_char(b: u8, first: bool) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':' || (!first && b.is_ascii_digit())
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn error(&self, why: &str) -> SelectorError {
        SelectorError(format!(
            "{:?}: {why} at character {}",
            String::from_utf8_lossy(self.s),
            self.i + 1
        ))
    }

    /// `name op "value"`.
    fn matcher(&mut self) -> Result<Matcher, SelectorError> {
        let start = self.i;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            self.i += 1;
        }
        let name = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
        if !crate::config::valid_label_name(&name) {
            self.i = start;
            return Err(self.error("expected a label name"));
        }
        self.skip_ws();
        let op = match (self.peek(), self.s.get(self.i + 1).copied()) {
            (Some(b'='), Some(b'~')) => MatchOp::Regex,
            (Some(b'!'), Some(b'=')) => MatchOp::NotEqual,
            (Some(b'!'), Some(b'~')) => MatchOp::NotRegex,
            (Some(b'='), _) => MatchOp::Equal,
            _ => return Err(self.error("expected =, !=, =~ or !~")),
        };
        self.i += if op == MatchOp::Equal { 1 } else { 2 };
        self.skip_ws();
        let value = self.string()?;
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => {
                Some(crate::regex::Pattern::new(&value).map_err(|why| {
                    SelectorError(format!("regex {value:?} of label {name}: {why}"))
                })?)
            }
            _ => None,
        };
        Ok(Matcher {
            name,
            op,
            value,
            regex,
        })
    }

    /// A string in double or single quotes or in backticks (raw). Of Go's escapes, `\n`, `\t`,
    /// `\r`, `\\`, `\"` and `\'` are read; the rarer ones PromQL also reads (`\a`, `\b`,
    /// `\f`, `\v`, `\xNN`, `\uNNNN`, octal) are refused as unknown, not misread.
    fn string(&mut self) -> Result<String, SelectorError> {
        let Some(quote) = self.peek().filter(|q| matches!(q, b'"' | b'\'' | b'`')) else {
            return Err(self.error("expected a quoted value"));
        };
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                return Err(self.error("unterminated string"));
            };
            self.i += 1;
            if b == quote {
                break;
            }
            if b == b'\\' && quote != b'`' {
                let Some(e) = self.peek() else {
                    return Err(self.error("unterminated string"));
                };
                self.i += 1;
                out.push(match e {
                    b'n' => b'\n',
                    b't' => b'\t',
                    b'r' => b'\r',
                    b'\\' | b'"' | b'\'' => e,
                    _ => {
                        self.i -= 1;
                        return Err(self.error("unknown escape sequence"));
                    }
                });
                continue;
            }
            out.push(b);
        }
        String::from_utf8(out).map_err(|_| self.error("the value is not valid UTF-8"))
    }
}
