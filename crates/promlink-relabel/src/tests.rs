use std::borrow::Cow;

use super::*;

fn rules(yaml: &str) -> Rules {
    let configs: Vec<RelabelConfig> = serde_saphyr::from_str(yaml).expect("YAML");
    Rules::compile(&configs).expect("valid rules")
}

fn refusal(yaml: &str) -> ConfigError {
    let configs: Vec<RelabelConfig> = serde_saphyr::from_str(yaml).expect("YAML");
    let mut errs = Rules::compile(&configs).expect_err("refused");
    assert_eq!(errs.len(), 1, "{errs:?}");
    errs.remove(0)
}

fn labels(pairs: &[(&'static str, &'static str)]) -> Vec<Label<'static>> {
    pairs.iter().map(|(n, v)| Label::borrowed(n, v)).collect()
}

/// Applies `yaml` to `input`; `None` when dropped, else the labels and whether they changed.
fn run(
    yaml: &str,
    input: &[(&'static str, &'static str)],
) -> Option<(Vec<(String, String)>, bool)> {
    let mut ls = labels(input);
    match rules(yaml).apply(&mut ls) {
        Verdict::Drop => None,
        v => Some((
            ls.iter()
                .map(|l| (l.name.to_string(), l.value.to_string()))
                .collect(),
            v == Verdict::Changed,
        )),
    }
}

fn out(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

const ABC: &[(&str, &str)] = &[("a", "foo"), ("b", "bar"), ("c", "baz")];

#[test]
fn replace_with_defaults_copies_a_value_and_expands_groups() {
    let r = run("- {source_labels: [a], target_label: d}", ABC).unwrap();
    assert_eq!(
        r.0,
        out(&[("a", "foo"), ("b", "bar"), ("c", "baz"), ("d", "foo")])
    );
    assert!(r.1);
    let r = run(
        r#"- {source_labels: [a, b], regex: "f(.*);(.*)r", target_label: "a", replacement: "${1}-$2x$$"}"#,
        ABC,
    )
    .unwrap();
    // `$2x` is the group named "2x", which does not exist: empty; `$$` is a dollar.
    assert_eq!(r.0[0], ("a".to_string(), "oo-$".to_string()));
}

#[test]
fn replace_without_a_match_changes_nothing() {
    let r = run(
        r#"- {source_labels: [a], regex: "nomatch", target_label: d}"#,
        ABC,
    )
    .unwrap();
    assert_eq!(r, (out(ABC), false));
}

#[test]
fn replace_expands_the_target_label_and_removes_on_empty_results() {
    let r = run(
        r#"- {source_labels: [a], regex: "(f)(o+)", target_label: "x_${1}", replacement: "$2"}"#,
        ABC,
    )
    .unwrap();
    assert_eq!(r.0.last().unwrap(), &("x_f".to_string(), "oo".to_string()));
    // An empty replacement removes the label named as written.
    let r = run(
        r#"- {source_labels: [c], regex: "baz", target_label: "b", replacement: ""}"#,
        ABC,
    )
    .unwrap();
    assert_eq!(r.0, out(&[("a", "foo"), ("c", "baz")]));
    // Quirk kept from Prometheus 2.42: with a target that expands, the unexpanded name is
    // removed (so nothing is), and an expanded target that is not a label name also removes
    // the unexpanded one.
    let r = run(
        r#"- {source_labels: [a], regex: "(b)?(.*)", target_label: "${2}", replacement: "$1"}"#,
        ABC,
    )
    .unwrap();
    assert_eq!(r, (out(ABC), false));
    let r = run(
        r#"- {source_labels: [a], regex: "(.*)", target_label: "${1}", replacement: "v"}"#,
        &[("a", "9x")],
    )
    .unwrap();
    assert_eq!(r, (out(&[("a", "9x")]), false), "9x is not a label name");
}

#[test]
fn setting_a_label_to_its_own_value_is_no_change() {
    let r = run("- {source_labels: [a], target_label: a}", ABC).unwrap();
    assert_eq!(r, (out(ABC), false));
}

#[test]
fn keep_and_drop_match_the_joined_value_anchored() {
    assert!(run(r#"- {source_labels: [a], regex: "fo", action: drop}"#, ABC).is_some());
    assert!(run(r#"- {source_labels: [a], regex: "fo+", action: drop}"#, ABC).is_none());
    assert!(run(
        r#"- {source_labels: [a, b], regex: "foo;bar", action: keep}"#,
        ABC
    )
    .is_some());
    assert!(run(
        r#"- {source_labels: [a, b], separator: "|", regex: "foo;bar", action: Keep}"#,
        ABC
    )
    .is_none());
    // A missing label reads as empty.
    assert!(run(r#"- {source_labels: [zz], regex: "", action: keep}"#, ABC).is_some());
}

#[test]
fn keepequal_and_dropequal_compare_with_the_target_label() {
    let same = &[("a", "x"), ("b", "x")];
    assert!(run(
        "- {source_labels: [a], target_label: b, action: keepequal}",
        same
    )
    .is_some());
    assert!(run(
        "- {source_labels: [a], target_label: b, action: dropequal}",
        same
    )
    .is_none());
    assert!(run(
        "- {source_labels: [a], target_label: b, action: keepequal}",
        ABC
    )
    .is_none());
    assert!(run(
        "- {source_labels: [a], target_label: b, action: dropequal}",
        ABC
    )
    .is_some());
}

#[test]
fn hashmod_is_md5_of_the_value_last_8_bytes_big_endian() {
    // md5("baz") ends in e44cf984c85f6e88; that modulo 1000 is 976.
    let r = run(
        "- {source_labels: [c], target_label: d, modulus: 1000, action: hashmod}",
        ABC,
    )
    .unwrap();
    assert_eq!(r.0.last().unwrap(), &("d".to_string(), "976".to_string()));
}

#[test]
fn labelmap_copies_matching_names_in_name_order() {
    let input = &[("__meta_x", "1"), ("__meta_y", "2"), ("b", "3")];
    let r = run(r#"- {regex: "__meta_(.+)", action: labelmap}"#, input).unwrap();
    assert_eq!(
        r.0,
        out(&[
            ("__meta_x", "1"),
            ("__meta_y", "2"),
            ("b", "3"),
            ("x", "1"),
            ("y", "2")
        ])
    );
    // Two names mapping to one: the later (in name order) wins.
    let r = run(
        r#"- {regex: "__meta_.", replacement: "z", action: labelmap}"#,
        input,
    )
    .unwrap();
    assert_eq!(r.0.last().unwrap(), &("z".to_string(), "2".to_string()));
}

#[test]
fn labeldrop_and_labelkeep_match_names() {
    let r = run(r#"- {regex: "[ab]", action: labeldrop}"#, ABC).unwrap();
    assert_eq!(r, (out(&[("c", "baz")]), true));
    let r = run(r#"- {regex: "[ab]", action: labelkeep}"#, ABC).unwrap();
    assert_eq!(r, (out(&[("a", "foo"), ("b", "bar")]), true));
    // No label left: the series is dropped.
    assert!(run(r#"- {regex: ".*", action: labeldrop}"#, ABC).is_none());
}

#[test]
fn lowercase_and_uppercase_map_each_character_simply() {
    let input = &[("a", "FoO-İ-ß-Σ")];
    let r = run(
        "- {source_labels: [a], target_label: l, action: lowercase}",
        input,
    )
    .unwrap();
    // Go's strings.ToLower: İ to i, and Σ to σ even at the end of a word.
    assert_eq!(r.0[1], ("l".to_string(), "foo-i-ß-σ".to_string()));
    let r = run(
        "- {source_labels: [a], target_label: u, action: uppercase}",
        input,
    )
    .unwrap();
    // Go's strings.ToUpper: ß has no simple upper case and stays.
    assert_eq!(r.0[1], ("u".to_string(), "FOO-İ-ß-Σ".to_string()));
}

#[test]
fn rules_run_in_order_and_output_is_sorted() {
    let r = run(
        "- {source_labels: [a], target_label: _first}\n- {source_labels: [_first], regex: foo, action: drop}",
        ABC,
    );
    assert!(r.is_none(), "the second rule sees the first one's label");
    let mut ls = vec![Label::borrowed("z", "1"), Label::borrowed("a", "2")];
    let v = rules("- {source_labels: [a], target_label: m}").apply(&mut ls);
    assert_eq!(v, Verdict::Changed);
    let names: Vec<&str> = ls.iter().map(|l| l.name.as_ref()).collect();
    assert_eq!(names, ["a", "m", "z"]);
}

#[test]
fn unchanged_series_keep_borrowed_labels() {
    let mut ls = labels(ABC);
    let v = rules(r#"- {source_labels: [a], regex: "x", action: drop}"#).apply(&mut ls);
    assert_eq!(v, Verdict::Unchanged);
    assert!(ls.iter().all(|l| matches!(l.name, Cow::Borrowed(_))));
}

#[test]
fn go_regex_classes_are_ascii() {
    let input = &[("a", "٣")]; // an Arabic-Indic digit: \d in Rust, not in Go
    assert!(run(
        r#"- {source_labels: [a], regex: '\d', action: keep}"#,
        input
    )
    .is_none());
    assert!(run(
        r#"- {source_labels: [a], regex: '\D', action: keep}"#,
        input
    )
    .is_some());
    assert!(run(
        r#"- {source_labels: [a], regex: '[\w]', action: keep}"#,
        &[("a", "é")]
    )
    .is_none());
    assert!(run(
        r#"- {source_labels: [a], regex: '\Qa.b\E', action: keep}"#,
        &[("a", "a.b")]
    )
    .is_some());
    assert!(run(
        r#"- {source_labels: [a], regex: '\Qa.b\E', action: keep}"#,
        &[("a", "axb")]
    )
    .is_none());
    assert!(run(
        r#"- {source_labels: [a], regex: '[[]+', action: keep}"#,
        &[("a", "[[")]
    )
    .is_some());
    assert!(run(
        r#"- {source_labels: [a], regex: '[a&&b]+', action: keep}"#,
        &[("a", "a&b")]
    )
    .is_some());
}

mod fixed_patterns {
    use crate::regex::Pattern;
    use proptest::prelude::*;

    /// Patterns that match only a few fixed strings are answered by comparing; the others by
    /// the regex.
    #[test]
    fn only_patterns_of_a_few_fixed_strings_skip_the_regex() {
        for fixed in [
            "device|mountpoint",
            "3",
            "(device|mountpoint|fstype)",
            "job_(upper|lower)",
            "(?i)ab",
            "a|",
            r"\d",
            r"\Qa.b\E",
            "",
            "[a-z]",
        ] {
            assert!(Pattern::new(fixed).unwrap().is_fixed(), "{fixed:?}");
        }
        for searched in [
            "(.*)",
            "a.*",
            "[^s].*|s[^h].*|s",
            r"\bfoo",
            "a+",
            "a?",
            // More than 32 strings.
            "[a-z0-9]",
            "(a|b|c|d|e|f)(a|b|c|d|e|f)",
        ] {
            let p = Pattern::new(searched).unwrap();
            assert!(!p.is_fixed(), "{searched:?}");
            assert!(p.has_dfa(), "{searched:?} searches with its own DFA");
        }
    }

    #[test]
    fn fixed_strings_answer_as_the_anchored_regex() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "device|mountpoint",
                &["device", "mountpoint"],
                &[
                    "",
                    "devic",
                    "devicemountpoint",
                    "device|mountpoint",
                    "Device",
                ],
            ),
            (
                "job_(upper|lower)",
                &["job_upper", "job_lower"],
                &["job_", "upper", "job_upperlower"],
            ),
            ("(?i)ab", &["ab", "AB", "aB", "Ab"], &["a", "abab"]),
            ("a|", &["a", ""], &["aa"]),
            (r"\d", &["0", "9"], &["٣", "00", ""]),
            ("é|ü", &["é", "ü"], &["e", "u"]),
        ];
        for (pattern, yes, no) in cases {
            let p = Pattern::new(pattern).unwrap();
            assert!(p.is_fixed(), "{pattern:?}");
            for s in *yes {
                assert!(p.is_match(s), "{pattern:?} must match {s:?}");
                assert!(p.regex().is_match(s), "{pattern:?} regex on {s:?}");
            }
            for s in *no {
                assert!(!p.is_match(s), "{pattern:?} must not match {s:?}");
                assert!(!p.regex().is_match(s), "{pattern:?} regex on {s:?}");
            }
        }
    }

    /// A pattern that closes the anchoring group, as Prometheus' string concatenation allows:
    /// `^(?:)(?i)a|()$` matches any string at its end, and so does its DFA.
    #[test]
    fn a_pattern_that_breaks_out_of_its_anchors_answers_as_its_regex() {
        let p = Pattern::new(")(?i)a|(").unwrap();
        assert!(p.has_dfa());
        for s in ["é", "", "a", "xyz"] {
            assert!(p.regex().is_match(s), "{s:?}");
            assert!(p.is_match(s), "{s:?}");
        }
    }

    fn token() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "a", "b", "A", "é", "|", "(", ")", "(?:", "(?i)", "[ab]", "[^a]", ".", "*", "?", "+",
            r"\d", "{2}", "", "_", r"\b", "$", "^",
        ])
    }

    proptest! {
        /// Label lookups order names as `str` does.
        #[test]
        fn names_compare_as_str(a in "[a-c_é]{0,6}", b in "[a-c_é]{0,6}") {
            prop_assert_eq!(crate::apply::cmp_names(a.as_bytes(), b.as_bytes()), a.cmp(&b));
        }

        /// On any pattern built of these pieces and any string, the pattern answers as the
        /// regex it compiles to.
        #[test]
        fn a_pattern_answers_as_its_regex(
            tokens in prop::collection::vec(token(), 0..8),
            inputs in prop::collection::vec("[abAé_0-9|]{0,4}", 1..16),
        ) {
            let text: String = tokens.concat();
            let Ok(p) = Pattern::new(&text) else { return Ok(()) };
            for s in &inputs {
                prop_assert_eq!(p.is_match(s), p.regex().is_match(s), "{:?} on {:?}", text, s);
            }
        }
    }
}

#[test]
fn each_refusal_names_its_key_and_prometheus_reason() {
    let cases: &[(&str, &str, &str)] = &[
        ("- {action: nope}", "[0].action", "unknown relabel action \"nope\""),
        ("- {source_labels: [a, 'b-c'], target_label: x}", "[0].source_labels[1]", "\"b-c\" is not a valid label name"),
        ("- {regex: '(', target_label: x}", "[0].regex", "error parsing regexp"),
        ("- {regex: '(?<n>a)', target_label: x}", "[0].regex", "(?<"),
        ("- {regex: 'a{1001}', target_label: x}", "[0].regex", "invalid repeat count"),
        ("- {source_labels: [a]}", "[0].target_label", "relabel configuration for replace action requires 'target_label' value"),
        ("- {source_labels: [a], target_label: 'a-b'}", "[0].target_label", "\"a-b\" is invalid 'target_label' for replace action"),
        ("- {source_labels: [a], target_label: x, action: hashmod}", "[0].modulus", "relabel configuration for hashmod requires non-zero modulus"),
        ("- {source_labels: [a], modulus: 2, action: hashmod}", "[0].target_label", "requires 'target_label' value"),
        ("- {source_labels: [a], modulus: 2, target_label: '$1', action: hashmod}", "[0].target_label", "\"$1\" is invalid 'target_label' for hashmod action"),
        ("- {source_labels: [a], target_label: x, replacement: y, action: lowercase}", "[0].replacement", "'replacement' can not be set for lowercase action"),
        ("- {source_labels: [a], target_label: x, replacement: y, action: uppercase}", "[0].replacement", "'replacement' can not be set for uppercase action"),
        ("- {regex: 'a', replacement: 'b-c', action: labelmap}", "[0].replacement", "\"b-c\" is invalid 'replacement' for labelmap action"),
        ("- {source_labels: [a], target_label: x, regex: '(.*)', action: keepequal}", "[0].action", "keepequal action requires only 'source_labels' and `target_label`, and no other fields"),
        ("- {source_labels: [a], target_label: x, separator: ',', action: dropequal}", "[0].action", "dropequal action requires only"),
        ("- {source_labels: [a], regex: x, action: labeldrop}", "[0].action", "labeldrop action requires only 'regex', and no other fields"),
        ("- {target_label: x, regex: x, action: labelkeep}", "[0].action", "labelkeep action requires only 'regex'"),
    ];
    for (yaml, key, why) in cases {
        let e = refusal(yaml);
        assert_eq!(&e.key, key, "{yaml}: {e:?}");
        assert!(e.why.contains(why), "{yaml}: {e:?}");
    }
    // Every rule's problem is reported, each under its index.
    let configs: Vec<RelabelConfig> = serde_saphyr::from_str(
        "- {action: a}\n- {source_labels: [x], target_label: y}\n- {action: b}",
    )
    .unwrap();
    let keys: Vec<String> = Rules::compile(&configs)
        .unwrap_err()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys, ["[0].action", "[2].action"]);
    // An unknown key is refused when the YAML is read.
    assert!(serde_saphyr::from_str::<Vec<RelabelConfig>>("- {sourcelabels: [a]}").is_err());
}

mod selector {
    use crate::Selector;

    fn sel(text: &str) -> Selector {
        Selector::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn matches(text: &str, labels: &[(&'static str, &'static str)]) -> bool {
        sel(text).matches(|n| labels.iter().find(|(k, _)| *k == n).map(|(_, v)| *v))
    }

    const S: &[(&str, &str)] = &[("__name__", "up"), ("job", "api"), ("namespace", "team-a")];

    #[test]
    fn each_operator_and_the_name_in_front() {
        assert!(matches(r#"{namespace=~"team-a|team-b"}"#, S));
        assert!(!matches(r#"{namespace=~"team"}"#, S), "anchored");
        assert!(matches(r#"up{job="api"}"#, S));
        assert!(!matches(r#"down{job="api"}"#, S));
        assert!(matches(r#"{__name__="up", job!="web"}"#, S));
        assert!(!matches(r#"up{job!="api"}"#, S));
        assert!(matches(r#"up{job!~"w.*"}"#, S));
        assert!(!matches(r#"up{job!~"a.*"}"#, S));
        assert!(matches("up", S));
        assert!(
            matches(r#" up { job = 'api' , } "#, S),
            "spaces, single quotes, trailing comma"
        );
        assert!(matches(r#"{job=~`a\w+`}"#, S), "a raw string");
        // A missing label reads as empty.
        assert!(matches(r#"up{zone=""}"#, S));
        assert!(matches(r#"up{zone!~".+"}"#, S));
        assert!(!matches(r#"{zone=~".+"}"#, S));
        assert_eq!(sel(r#"{a="x\"y\\z"}"#).matchers()[0].value, "x\"y\\z");
    }

    #[test]
    fn bad_selectors_say_why() {
        for (text, why) in [
            ("", "expected a metric name or {"),
            ("{}", "does not match the empty string"),
            (r#"{a=""}"#, "does not match the empty string"),
            (r#"{a=~".*"}"#, "does not match the empty string"),
            (r#"up{__name__="x"}"#, "metric name is given twice"),
            (r#"{a-b="x"}"#, "expected =, !=, =~ or !~"),
            (r#"{job!="api"}"#, "does not match the empty string"),
            (r#"{1a="x"}"#, "expected a label name"),
            (r#"{a=="x"}"#, "expected a quoted value"),
            (r#"{a="x}"#, "unterminated string"),
            (r#"{a="x" b="y"}"#, "expected , or }"),
            (r#"{a=~"("}"#, "regex \"(\" of label a"),
            (r#"{a="\q"}"#, "unknown escape"),
            (r#"up extra"#, "unexpected text"),
        ] {
            let e = Selector::parse(text).expect_err(text);
            assert!(e.0.contains(why), "{text}: {e}");
        }
    }
}
