//! The specification's rules for label sets, shared by 1.0 and 2.0 decoding.
//!
//! Names use the classic Prometheus character sets (metric names `[a-zA-Z_:][a-zA-Z0-9_:]*`,
//! label names `[a-zA-Z_][a-zA-Z0-9_]*`), which is what Azure Monitor accepts; labels are
//! sorted by name with no duplicates and no empty names; every string is UTF-8.

use std::fmt::Write;

use super::error::DecodeError;

/// Checks a label set given as `(name, value)` byte pairs in wire order.
///
/// # Errors
/// [`DecodeError::Invalid`] naming the series and the broken rule.
pub fn check_labels<'a>(
    labels: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
) -> Result<(), DecodeError> {
    let mut prev: Option<&[u8]> = None;
    let mut has_name = false;
    for (name, value) in labels.clone() {
        let fail = |rule: String| {
            Err(DecodeError::Invalid {
                series: render(labels.clone()),
                rule,
            })
        };
        if name.is_empty() {
            return fail("empty label name".into());
        }
        let Ok(name_str) = std::str::from_utf8(name) else {
            return fail("label name is not valid UTF-8".into());
        };
        if std::str::from_utf8(value).is_err() {
            return fail(format!("value of label {name_str:?} is not valid UTF-8"));
        }
        if !is_label_name(name) {
            return fail(format!(
                "label name {name_str:?} must match [a-zA-Z_][a-zA-Z0-9_]*"
            ));
        }
        if let Some(p) = prev {
            match name.cmp(p) {
                std::cmp::Ordering::Equal => {
                    return fail(format!("duplicate label name {name_str:?}"))
                }
                std::cmp::Ordering::Less => {
                    return fail(format!(
                        "labels are not sorted by name: {name_str:?} comes after {:?}",
                        String::from_utf8_lossy(p)
                    ))
                }
                std::cmp::Ordering::Greater => {}
            }
        }
        if name == b"__name__" {
            has_name = true;
            if !is_metric_name(value) {
                return fail(format!(
                    "metric name {:?} must match [a-zA-Z_:][a-zA-Z0-9_:]*",
                    String::from_utf8_lossy(value)
                ));
            }
        }
        prev = Some(name);
    }
    if !has_name {
        return Err(DecodeError::Invalid {
            series: render(labels),
            rule: "no __name__ label".into(),
        });
    }
    Ok(())
}

/// `b` repeated in every byte of a word.
const fn rep(b: u8) -> u64 {
    0x0101_0101_0101_0101 * b as u64
}

/// The high bit of each byte of `w` that lies in `lo..=hi`; every byte of `w` must be ASCII
/// (below 0x80), so the per-byte additions never carry into the next byte.
#[inline(always)]
fn in_range(w: u64, lo: u8, hi: u8) -> u64 {
    let at_least_lo = w.wrapping_add(rep(0x80 - lo));
    let above_hi = w.wrapping_add(rep(0x7f - hi));
    at_least_lo & !above_hi & rep(0x80)
}

/// Whether all eight bytes of `w` are name characters: `[a-zA-Z0-9_]`, plus `:` for metric
/// names. Eight bytes per step instead of one: names are most of a series' bytes.
#[inline(always)]
fn word_is_name(w: u64, metric: bool) -> bool {
    if w & rep(0x80) != 0 {
        return false;
    }
    let digits = in_range(w, b'0', if metric { b':' } else { b'9' });
    let ok = digits | in_range(w, b'A', b'Z') | in_range(w, b'a', b'z') | in_range(w, b'_', b'_');
    ok == rep(0x80)
}

/// Whether the word `w` (ASCII bytes, such as a label name's prefix) holds an upper-case
/// letter: only then can the name meet another that differs from it only in case.
#[inline(always)]
pub(super) fn word_has_upper(w: u64) -> bool {
    in_range(w, b'A', b'Z') != 0
}

/// Two label names that differ only in case, if a label set has such a pair: Azure Monitor
/// takes them for one label and drops the sample. Names are compared ASCII-case-insensitively
/// (valid label names are ASCII).
pub fn case_collision<'a>(
    names: impl Iterator<Item = &'a [u8]> + Clone,
) -> Option<(&'a [u8], &'a [u8])> {
    // Two names that differ only in case: at least one of them has an upper-case letter.
    if !names.clone().any(|n| n.iter().any(u8::is_ascii_uppercase)) {
        return None;
    }
    let mut rest = names.clone();
    for a in names {
        rest.next();
        if let Some(b) = rest.clone().find(|b| b.eq_ignore_ascii_case(a)) {
            return Some((a, b));
        }
    }
    None
}

/// The limit a case collision of `a` and `b` breaks, as a rule for an error message.
pub fn case_rule(a: &[u8], b: &[u8]) -> String {
    format!(
        "label names {:?} and {:?} differ only in case (Azure Monitor takes them for one label and drops the sample)",
        String::from_utf8_lossy(a),
        String::from_utf8_lossy(b)
    )
}

/// Which single bytes are name characters: bit 0 for label names, bit 1 for metric names.
const NAME_BYTES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        if b.is_ascii_alphanumeric() || b == b'_' {
            t[c] = 0b11;
        } else if b == b':' {
            t[c] = 0b10;
        }
        c += 1;
    }
    t
};

#[inline]
fn is_name(b: &[u8], metric: bool) -> bool {
    match b.first() {
        Some(c) if !c.is_ascii_digit() => {}
        _ => return false,
    }
    if b.len() < 8 {
        let bit = if metric { 0b10 } else { 0b01 };
        return b.iter().all(|&c| NAME_BYTES[c as usize] & bit != 0);
    }
    let word = |w: &[u8]| {
        let mut a = [0u8; 8];
        a.copy_from_slice(w);
        word_is_name(u64::from_le_bytes(a), metric)
    };
    // Whole words, then the last eight bytes (overlapping the previous word when the length
    // is not a multiple of eight): fixed-size loads only.
    b.chunks_exact(8).all(word) && word(&b[b.len() - 8..])
}

/// `[a-zA-Z_][a-zA-Z0-9_]*` for a name of 1 to 8 bytes given as its big-endian, zero-padded
/// first eight bytes: one word check, no loop.
#[inline]
pub(super) fn is_short_label_name(prefix: u64, len: usize) -> bool {
    if len == 0 || (prefix >> 56) as u8 >= b'0' && (prefix >> 56) as u8 <= b'9' {
        return false;
    }
    // Fill the padding with a name character.
    let pad = if len >= 8 { 0 } else { rep(b'a') >> (8 * len) };
    word_is_name(prefix | pad, false)
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`.
pub(super) fn is_label_name(b: &[u8]) -> bool {
    is_name(b, false)
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub(super) fn is_metric_name(b: &[u8]) -> bool {
    is_name(b, true)
}

/// Renders a label set like `up{instance="a",job="b"}` for error messages, at most ~200 chars.
pub fn render<'a>(labels: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> String {
    const MAX: usize = 200;
    let mut name = String::new();
    let mut rest = String::new();
    for (n, v) in labels {
        if n == b"__name__" && name.is_empty() {
            name = String::from_utf8_lossy(v).into_owned();
            continue;
        }
        if rest.len() > MAX {
            rest.push_str(",...");
            break;
        }
        if !rest.is_empty() {
            rest.push(',');
        }
        let v = String::from_utf8_lossy(v);
        let v: String = v.chars().take(64).collect();
        let _ = write!(rest, "{}={:?}", String::from_utf8_lossy(n), v);
    }
    format!("{name}{{{rest}}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pairs: &[(&str, &str)]) -> Result<(), String> {
        let v: Vec<(&[u8], &[u8])> = pairs
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        check_labels(v.iter().copied()).map_err(|e| e.to_string())
    }

    #[test]
    fn rules_table() {
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
        let cases: &[Case] = &[
            (&[("__name__", "up"), ("job", "x")], None),
            (&[("__name__", "ns:rule_rate5m"), ("a_1", "ü")], None),
            (&[("job", "x")], Some("up{} ... no __name__")),
            (
                &[("__name__", "up"), ("b", "1"), ("a", "2")],
                Some("labels are not sorted by name: \"a\" comes after \"b\""),
            ),
            (
                &[("__name__", "up"), ("a", "1"), ("a", "2")],
                Some("duplicate label name \"a\""),
            ),
            (&[("", "x"), ("__name__", "up")], Some("empty label name")),
            (
                &[("__name__", "up"), ("a-b", "1")],
                Some("label name \"a-b\" must match"),
            ),
            (
                &[("__name__", "9up")],
                Some("metric name \"9up\" must match"),
            ),
            (
                &[("1a", "x"), ("__name__", "up")],
                Some("label name \"1a\" must match"),
            ),
        ];
        for (labels, want) in cases {
            let got = check(labels);
            match want {
                None => assert!(got.is_ok(), "{labels:?}: {got:?}"),
                Some(w) => {
                    let e = got.expect_err(&format!("{labels:?} should fail"));
                    let w = w.trim_start_matches("up{} ... ");
                    assert!(e.contains(w), "{labels:?}: {e} does not contain {w}");
                    assert!(e.starts_with("series "), "{e}");
                }
            }
        }
    }

    #[test]
    fn name_tables_match_the_patterns() {
        let reference = |b: &[u8], metric: bool| {
            let first = |c: u8| c.is_ascii_alphabetic() || c == b'_' || (metric && c == b':');
            let rest = |c: u8| first(c) || c.is_ascii_digit();
            matches!(b.first(), Some(&c) if first(c)) && b.iter().all(|&c| rest(c))
        };
        let mut cases: Vec<Vec<u8>> =
            vec![b"".to_vec(), b"9a".to_vec(), b"a9".to_vec(), b":x".to_vec()];
        // Every byte alone, and at every position of names from 2 to 20 bytes (so in both
        // the eight-byte words and the padded tail).
        for c in 0..=255u8 {
            cases.push(vec![c]);
            for len in 2..=20 {
                for at in 1..len {
                    let mut n = vec![b'a'; len];
                    n[at] = c;
                    cases.push(n);
                }
            }
        }
        for c in &cases {
            assert_eq!(is_label_name(c), reference(c, false), "{c:?}");
            if (1..=8).contains(&c.len()) {
                let mut a = [0u8; 8];
                a[..c.len()].copy_from_slice(c);
                assert_eq!(
                    is_short_label_name(u64::from_be_bytes(a), c.len()),
                    reference(c, false),
                    "{c:?}"
                );
            }
            assert_eq!(is_metric_name(c), reference(c, true), "{c:?}");
        }
    }

    #[test]
    fn invalid_utf8_is_named() {
        let v: Vec<(&[u8], &[u8])> = vec![(b"__name__", b"up"), (b"job", &[0xff, 0xfe])];
        let e = check_labels(v.iter().copied()).unwrap_err().to_string();
        assert!(
            e.contains("value of label \"job\" is not valid UTF-8"),
            "{e}"
        );
    }

    #[test]
    fn render_is_bounded() {
        let long = "x".repeat(10_000);
        let v: Vec<(String, String)> = (0..100)
            .map(|i| (format!("l{i:03}"), long.clone()))
            .collect();
        let s = render(v.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
        assert!(s.len() < 400, "{}", s.len());
    }
}
