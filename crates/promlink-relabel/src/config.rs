//! A rule as written in YAML, and its check at start, as Prometheus 2.42 checks it.

use serde::Deserialize;

/// One relabeling rule as written in YAML, with Prometheus' keys. A key left out takes
/// Prometheus' default (`separator: ";"`, `regex: "(.*)"`, `replacement: "$1"`,
/// `action: replace`); an unknown key is refused.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RelabelConfig {
    /// Labels whose values are joined with `separator` into the value the rule looks at.
    pub source_labels: Option<Vec<String>>,
    /// Put between the source labels' values.
    pub separator: Option<String>,
    /// Matched against the joined value (or label names), anchored at both ends.
    pub regex: Option<String>,
    /// For `hashmod`.
    pub modulus: Option<u64>,
    /// The label the rule writes (for `replace`, `$1` and `${1}` expand in it too).
    pub target_label: Option<String>,
    /// The value written (`replace`) or the new name (`labelmap`); `$1` and `${1}` expand.
    pub replacement: Option<String>,
    /// What the rule does (case-insensitive, as in Prometheus).
    pub action: Option<String>,
}

/// What a rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Writes the expanded `replacement` into the expanded `target_label` when `regex` matches.
    Replace,
    /// Drops the series unless `regex` matches.
    Keep,
    /// Drops the series when `regex` matches.
    Drop,
    /// Drops the series unless `target_label`'s value equals the joined source values.
    KeepEqual,
    /// Drops the series when `target_label`'s value equals the joined source values.
    DropEqual,
    /// Writes the MD5 of the joined source values modulo `modulus` into `target_label`.
    HashMod,
    /// Copies each label whose name matches `regex` to the name `replacement` expands to.
    LabelMap,
    /// Removes each label whose name matches `regex`.
    LabelDrop,
    /// Removes each label whose name does not match `regex`.
    LabelKeep,
    /// Writes the joined source values in lower case into `target_label`.
    Lowercase,
    /// Writes the joined source values in upper case into `target_label`.
    Uppercase,
}

impl Action {
    /// Parses an action as Prometheus does: case-insensitively.
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s.to_lowercase().as_str() {
            "replace" => Action::Replace,
            "keep" => Action::Keep,
            "drop" => Action::Drop,
            "keepequal" => Action::KeepEqual,
            "dropequal" => Action::DropEqual,
            "hashmod" => Action::HashMod,
            "labelmap" => Action::LabelMap,
            "labeldrop" => Action::LabelDrop,
            "labelkeep" => Action::LabelKeep,
            "lowercase" => Action::Lowercase,
            "uppercase" => Action::Uppercase,
            _ => return None,
        })
    }

    /// Its name in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Action::Replace => "replace",
            Action::Keep => "keep",
            Action::Drop => "drop",
            Action::KeepEqual => "keepequal",
            Action::DropEqual => "dropequal",
            Action::HashMod => "hashmod",
            Action::LabelMap => "labelmap",
            Action::LabelDrop => "labeldrop",
            Action::LabelKeep => "labelkeep",
            Action::Lowercase => "lowercase",
            Action::Uppercase => "uppercase",
        }
    }
}

/// A rule Prometheus would refuse: the key (relative to the list, as `[2].target_label`), its
/// value, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The key, relative to the list of rules: `[index].field`.
    pub key: String,
    /// The value as given.
    pub value: String,
    /// Why it is refused (Prometheus' own message).
    pub why: String,
}

/// A checked rule, ready to apply.
#[derive(Clone, Debug)]
pub struct Rule {
    pub(crate) action: Action,
    pub(crate) source_labels: Vec<String>,
    pub(crate) separator: String,
    pub(crate) regex: crate::regex::Pattern,
    pub(crate) modulus: u64,
    pub(crate) target_label: String,
    pub(crate) replacement: String,
}

/// Checked rules, applied in order by [`Rules::apply`](crate::Rules::apply).
#[derive(Clone, Debug, Default)]
pub struct Rules {
    pub(crate) rules: Vec<Rule>,
}

pub(crate) const DEFAULT_SEPARATOR: &str = ";";
pub(crate) const DEFAULT_REGEX: &str = "(.*)";
pub(crate) const DEFAULT_REPLACEMENT: &str = "$1";

/// A label name as Prometheus 2.42 accepts it: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn valid_label_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Prometheus' `relabelTarget`: label names in which `$name` and `${name}` may stand for
/// characters, `^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$`.
fn valid_target(s: &str) -> bool {
    static TARGET: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    TARGET
        .get_or_init(|| {
            regex::Regex::new(
                r"^(?:(?:[a-zA-Z_]|\$(?:\{[0-9A-Za-z_]+\}|[0-9A-Za-z_]+))+[0-9A-Za-z_]*)+$",
            )
            .expect("a valid regex")
        })
        .is_match(s)
}

impl Rules {
    /// Checks `configs` as Prometheus 2.42 checks `write_relabel_configs`, reporting every
    /// rule it would refuse (the first problem of each rule, as Prometheus stops there).
    ///
    /// # Errors
    /// The problems, each with its key relative to the list (`[index].field`).
    pub fn compile(configs: &[RelabelConfig]) -> Result<Rules, Vec<ConfigError>> {
        let mut rules = Vec::with_capacity(configs.len());
        let mut problems = Vec::new();
        for (i, c) in configs.iter().enumerate() {
            match Rule::compile(c) {
                Ok(rule) => rules.push(rule),
                Err((field, value, why)) => problems.push(ConfigError {
                    key: format!("[{i}].{field}"),
                    value,
                    why,
                }),
            }
        }
        if problems.is_empty() {
            Ok(Rules { rules })
        } else {
            Err(problems)
        }
    }

    /// Whether there are no rules (every series is kept as it is).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }
}

/// The refused field (relative to the rule), its value and why.
type Refusal = (String, String, String);

impl Rule {
    /// Checks one rule, in the order Prometheus does (reading the YAML first: the action, the
    /// source label names, the regex; then its `Validate`).
    fn compile(c: &RelabelConfig) -> Result<Rule, Refusal> {
        let action = match &c.action {
            None => Action::Replace,
            Some(a) => Action::parse(a).ok_or_else(|| {
                (
                    "action".into(),
                    a.clone(),
                    format!("unknown relabel action {a:?}"),
                )
            })?,
        };
        for (j, name) in c.source_labels.iter().flatten().enumerate() {
            if !valid_label_name(name) {
                return Err((
                    format!("source_labels[{j}]"),
                    name.clone(),
                    format!("{name:?} is not a valid label name"),
                ));
            }
        }
        let regex_text = c.regex.as_deref().unwrap_or(DEFAULT_REGEX);
        let regex = crate::regex::Pattern::new(regex_text).map_err(|why| {
            (
                "regex".into(),
                regex_text.to_string(),
                format!("error parsing regexp: {why}"),
            )
        })?;
        let separator = c
            .separator
            .clone()
            .unwrap_or_else(|| DEFAULT_SEPARATOR.into());
        let modulus = c.modulus.unwrap_or(0);
        let target_label = c.target_label.clone().unwrap_or_default();
        let replacement = c
            .replacement
            .clone()
            .unwrap_or_else(|| DEFAULT_REPLACEMENT.into());
        let name = action.name();
        use Action::*;
        if modulus == 0 && action == HashMod {
            return Err((
                "modulus".into(),
                "0".into(),
                "relabel configuration for hashmod requires non-zero modulus".into(),
            ));
        }
        let writes = matches!(
            action,
            Replace | Lowercase | Uppercase | KeepEqual | DropEqual
        );
        if (writes || action == HashMod) && target_label.is_empty() {
            return Err((
                "target_label".into(),
                String::new(),
                format!("relabel configuration for {name} action requires 'target_label' value"),
            ));
        }
        if writes && !valid_target(&target_label) {
            return Err((
                "target_label".into(),
                target_label.clone(),
                format!("{target_label:?} is invalid 'target_label' for {name} action"),
            ));
        }
        if matches!(action, Lowercase | Uppercase | KeepEqual | DropEqual)
            && replacement != DEFAULT_REPLACEMENT
        {
            return Err((
                "replacement".into(),
                replacement.clone(),
                format!("'replacement' can not be set for {name} action"),
            ));
        }
        if action == LabelMap && !valid_target(&replacement) {
            return Err((
                "replacement".into(),
                replacement.clone(),
                format!("{replacement:?} is invalid 'replacement' for {name} action"),
            ));
        }
        if action == HashMod && !valid_label_name(&target_label) {
            return Err((
                "target_label".into(),
                target_label.clone(),
                format!("{target_label:?} is invalid 'target_label' for {name} action"),
            ));
        }
        if matches!(action, KeepEqual | DropEqual)
            && (c.regex.is_some()
                || modulus != 0
                || separator != DEFAULT_SEPARATOR
                || replacement != DEFAULT_REPLACEMENT)
        {
            return Err((
                "action".into(),
                name.into(),
                format!(
                    "{name} action requires only 'source_labels' and `target_label`, and no other fields"
                ),
            ));
        }
        if matches!(action, LabelDrop | LabelKeep)
            && (c.source_labels.is_some()
                || !target_label.is_empty()
                || modulus != 0
                || separator != DEFAULT_SEPARATOR
                || replacement != DEFAULT_REPLACEMENT)
        {
            return Err((
                "action".into(),
                name.into(),
                format!("{name} action requires only 'regex', and no other fields"),
            ));
        }
        Ok(Rule {
            action,
            source_labels: c.source_labels.clone().unwrap_or_default(),
            separator,
            regex,
            modulus,
            target_label,
            replacement,
        })
    }
}
