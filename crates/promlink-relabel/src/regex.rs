//! Regexes as Prometheus compiles them: `^(?:pattern)$` in Go's RE2 dialect.
//!
//! Rust's `regex` crate reads RE2 syntax with a few differences that change results, and this
//! module removes them before compiling:
//! - `\d`, `\w`, `\s` and `\b` (and their negations) are ASCII in Go and Unicode in Rust: they
//!   are spelled out as ASCII classes (`\s` is Go's `[\t\n\f\r ]`);
//! - `\Q...\E` quotes a literal in Go and is unknown in Rust: the literal is escaped;
//! - inside a bracket class, `[`, `&&` and `~~` are literals in Go and nested classes or set
//!   operations in Rust: they are escaped;
//! - `(?<name>...)` is refused, as by the Go release Prometheus 2.42 was built with (Go added it
//!   in 1.22), and a repeat count above 1000 is refused as Go refuses it.

use regex_automata::dfa::{dense, Automaton, StartKind};
use regex_automata::Input;

/// The translated pattern compiled anchored at both ends, as Prometheus does; the error says
/// why it is not a valid RE2 regex (in Go's reading).
fn anchored(translated: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(&format!("^(?:{translated})$")).map_err(|e| match e {
        regex::Error::Syntax(s) => s.lines().last().unwrap_or_default().trim().to_string(),
        other => other.to_string(),
    })
}

/// A compiled pattern that answers "does the whole string match" without running the regex
/// engine when the pattern only matches a few fixed strings (`device|mountpoint`, `3`,
/// `(a|b)`): relabel rules test every label name against such patterns, and a comparison
/// costs a fraction of a regex search. Other patterns are answered by a fully built DFA when
/// one fits in 256 KiB (no cache to fetch per search, as the regex engine's lazy DFA
/// needs), else by the regex.
#[derive(Clone, Debug)]
pub struct Pattern {
    regex: regex::Regex,
    /// Every string the pattern matches, when there are at most [`MAX_LITERALS`].
    literals: Option<Box<[Box<str>]>>,
    /// The anchored pattern as a dense DFA, when it is not fixed strings and fits in
    /// [`DFA_BYTES`] (the usual `prefix_.*` or class patterns take a few KiB).
    dfa: Option<dense::DFA<Vec<u32>>>,
}

/// Largest dense DFA a pattern may build (and memory while building it).
const DFA_BYTES: usize = 256 << 10;

/// Most strings a pattern may match for [`Pattern`] to compare instead of searching.
const MAX_LITERALS: usize = 32;

impl Pattern {
    /// Compiles `pattern` anchored at both ends, as Prometheus does, with the fixed strings
    /// found when that is all the pattern matches, or else a dense DFA of the anchored pattern
    /// when one fits in 256 KiB.
    ///
    /// # Errors
    /// Why the pattern is not a valid RE2 regex (in Go's reading).
    pub fn new(pattern: &str) -> Result<Pattern, String> {
        let translated = translate(pattern)?;
        let regex = anchored(&translated)?;
        let literals: Option<Box<[Box<str>]>> = regex_syntax::parse(&translated)
            .ok()
            .and_then(|hir| fixed_strings(&hir))
            .map(|set| set.into_iter().map(String::into_boxed_str).collect());
        let dfa = if literals.is_some() {
            None
        } else {
            dense::Builder::new()
                .configure(
                    dense::Config::new()
                        // Searched as the regex searches: a pattern may close the anchoring
                        // group (`a)|(b`, as in Prometheus) and match away from the start.
                        .start_kind(StartKind::Unanchored)
                        .dfa_size_limit(Some(DFA_BYTES))
                        .determinize_size_limit(Some(DFA_BYTES)),
                )
                .build(&format!("^(?:{translated})$"))
                .ok()
        };
        Ok(Pattern {
            regex,
            literals,
            dfa,
        })
    }

    /// Whether all of `s` matches.
    #[inline]
    pub fn is_match(&self, s: &str) -> bool {
        if let Some(set) = &self.literals {
            return set.iter().any(|l| **l == *s);
        }
        if let Some(dfa) = &self.dfa {
            let input = Input::new(s).earliest(true);
            if let Ok(found) = dfa.try_search_fwd(&input) {
                return found.is_some();
            }
        }
        self.regex.is_match(s)
    }

    /// The anchored regex, for captures and replacements.
    pub fn regex(&self) -> &regex::Regex {
        &self.regex
    }

    /// Whether [`Pattern::is_match`] compares fixed strings instead of searching.
    #[cfg(test)]
    pub(crate) fn is_fixed(&self) -> bool {
        self.literals.is_some()
    }

    /// Whether [`Pattern::is_match`] searches with its own dense DFA.
    #[cfg(test)]
    pub(crate) fn has_dfa(&self) -> bool {
        self.dfa.is_some()
    }
}

/// Every string `hir` matches, when it is built only of literals, alternations, groups and
/// small character classes, and they are at most [`MAX_LITERALS`]; `None` otherwise (and for
/// anything with an assertion or a repetition).
fn fixed_strings(hir: &regex_syntax::hir::Hir) -> Option<Vec<String>> {
    use regex_syntax::hir::{Class, HirKind};
    let set = match hir.kind() {
        HirKind::Empty => vec![String::new()],
        HirKind::Literal(l) => vec![String::from_utf8(l.0.to_vec()).ok()?],
        HirKind::Capture(c) => fixed_strings(&c.sub)?,
        HirKind::Class(Class::Unicode(c)) => {
            let mut set = Vec::new();
            for r in c.ranges() {
                for ch in r.start()..=r.end() {
                    if set.len() == MAX_LITERALS {
                        return None;
                    }
                    set.push(ch.to_string());
                }
            }
            set
        }
        HirKind::Alternation(subs) => {
            let mut set = Vec::new();
            for sub in subs {
                set.extend(fixed_strings(sub)?);
                if set.len() > MAX_LITERALS {
                    return None;
                }
            }
            set
        }
        HirKind::Concat(parts) => {
            let mut set = vec![String::new()];
            for part in parts {
                let tails = fixed_strings(part)?;
                if set.len() * tails.len() > MAX_LITERALS {
                    return None;
                }
                set = set
                    .iter()
                    .flat_map(|head| tails.iter().map(move |t| format!("{head}{t}")))
                    .collect();
            }
            set
        }
        HirKind::Class(Class::Bytes(_)) | HirKind::Look(_) | HirKind::Repetition(_) => return None,
    };
    Some(set)
}

const WORD: &str = "0-9A-Za-z_";
const SPACE: &str = r"\t\n\x0C\r ";

/// `pattern` in the Rust crate's syntax with Go's meaning.
pub fn translate(pattern: &str) -> Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut in_class = false;
    // Position of the first character of the current class's items (a `]` there is literal).
    let mut class_start = 0;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' if i + 1 < chars.len() => {
                let e = chars[i + 1];
                i += 2;
                match (e, in_class) {
                    ('d', false) => out.push_str("[0-9]"),
                    ('d', true) => out.push_str("0-9"),
                    ('D', _) => out.push_str("[^0-9]"),
                    ('w', false) => out.push_str(&format!("[{WORD}]")),
                    ('w', true) => out.push_str(WORD),
                    ('W', _) => out.push_str(&format!("[^{WORD}]")),
                    ('s', false) => out.push_str(&format!("[{SPACE}]")),
                    ('s', true) => out.push_str(SPACE),
                    ('S', _) => out.push_str(&format!("[^{SPACE}]")),
                    ('b', false) => out.push_str(r"(?-u:\b)"),
                    ('B', false) => out.push_str(r"(?-u:\B)"),
                    ('Q', _) => {
                        let mut literal = String::new();
                        while i < chars.len()
                            && !(chars[i] == '\\' && chars.get(i + 1) == Some(&'E'))
                        {
                            literal.push(chars[i]);
                            i += 1;
                        }
                        if i < chars.len() {
                            i += 2; // the \E
                        }
                        for ch in literal.chars() {
                            push_literal(&mut out, ch);
                        }
                    }
                    (e, _) => {
                        out.push('\\');
                        out.push(e);
                    }
                }
                continue;
            }
            '[' if !in_class => {
                in_class = true;
                out.push('[');
                i += 1;
                if chars.get(i) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                class_start = i;
                continue;
            }
            ']' if in_class && i != class_start => {
                in_class = false;
                out.push(']');
            }
            '[' if in_class => {
                // A POSIX class (`[:alpha:]`) means the same in both; any other `[` is literal.
                if chars.get(i + 1) == Some(&':') {
                    let end = (i + 2..chars.len().saturating_sub(1))
                        .find(|&j| chars[j] == ':' && chars[j + 1] == ']');
                    if let Some(end) = end {
                        out.extend(&chars[i..end + 2]);
                        i = end + 2;
                        continue;
                    }
                }
                out.push_str(r"\[");
            }
            '&' | '~' if in_class => {
                out.push('\\');
                out.push(c);
            }
            '(' if !in_class
                && chars.get(i + 1) == Some(&'?')
                && chars.get(i + 2) == Some(&'<') =>
            {
                return Err("invalid or unsupported Perl syntax: `(?<`".into());
            }
            '{' if !in_class => {
                check_repeat(&chars[i..])?;
                out.push('{');
            }
            c => out.push(c),
        }
        i += 1;
    }
    Ok(out)
}

fn push_literal(out: &mut String, ch: char) {
    if regex_syntax_meta(ch) {
        out.push('\\');
    }
    out.push(ch);
}

fn regex_syntax_meta(ch: char) -> bool {
    matches!(
        ch,
        '\\' | '.'
            | '+'
            | '*'
            | '?'
            | '('
            | ')'
            | '|'
            | '['
            | ']'
            | '{'
            | '}'
            | '^'
            | '$'
            | '#'
            | '&'
            | '-'
            | '~'
    )
}

/// Go refuses a repeat `{n}`, `{n,}` or `{n,m}` with a count above 1000.
fn check_repeat(rest: &[char]) -> Result<(), String> {
    let Some(close) = rest.iter().position(|&c| c == '}') else {
        return Ok(());
    };
    let inner: String = rest[1..close].iter().collect();
    let mut parts = inner.splitn(2, ',');
    let (Some(min), max) = (parts.next(), parts.next()) else {
        return Ok(());
    };
    let is_count = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !is_count(min) || max.is_some_and(|m| !m.is_empty() && !is_count(m)) {
        return Ok(()); // not a repeat: a literal brace in Go
    }
    let too_big = |s: &str| s.parse::<u64>().map_or(true, |n| n > 1000);
    if too_big(min) || max.is_some_and(|m| !m.is_empty() && too_big(m)) {
        let text: String = rest[..=close].iter().collect();
        return Err(format!("invalid repeat count: `{text}`"));
    }
    Ok(())
}
