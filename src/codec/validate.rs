//! The specification's rules for label sets, shared by 1.0 and 2.0 decoding.
//!
//! Names use the classic Prometheus character sets (metric names `[a-zA-Z_:][a-zA-Z0-9_:]*`,
//! label names `[a-zA-Z_][a-zA-Z0-9_]*`), which is what Azure Monitor accepts; labels are
//! sorted by name with no duplicates and no empty names; every string is UTF-8.

use std::fmt::Write;

use super::DecodeError;

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

pub(super) fn is_label_name(b: &[u8]) -> bool {
    matches!(b.first(), Some(c) if c.is_ascii_alphabetic() || *c == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

pub(super) fn is_metric_name(b: &[u8]) -> bool {
    matches!(b.first(), Some(c) if c.is_ascii_alphabetic() || *c == b'_' || *c == b':')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b':')
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
