//! Running the rules over one series' labels.

use std::borrow::Cow;

use md5::{Digest, Md5};

use crate::config::{valid_label_name, Action, Rule, Rules};

/// One label, borrowed from the request while it is unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label<'a> {
    /// The label's name.
    pub name: Cow<'a, str>,
    /// The label's value (never empty: an empty value is a missing label).
    pub value: Cow<'a, str>,
}

impl<'a> Label<'a> {
    /// A label borrowing `name` and `value`.
    pub fn borrowed(name: &'a str, value: &'a str) -> Self {
        Label {
            name: Cow::Borrowed(name),
            value: Cow::Borrowed(value),
        }
    }
}

/// What the rules did with a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Dropped (by `drop`, `keep`, `dropequal`, `keepequal`, or no label left).
    Drop,
    /// Kept exactly as it was: its encoded bytes can be forwarded as they came.
    Unchanged,
    /// Kept with other labels (sorted by name).
    Changed,
}

/// Labels sorted by name, as Prometheus keeps them, with the edits a rule makes.
struct Set<'s, 'a> {
    labels: &'s mut Vec<Label<'a>>,
    changed: bool,
}

impl<'a> Set<'_, 'a> {
    fn find(&self, name: &str) -> Result<usize, usize> {
        self.labels
            .binary_search_by(|l| cmp_names(l.name.as_bytes(), name.as_bytes()))
    }

    fn get(&self, name: &str) -> &str {
        self.find(name).map_or("", |i| &self.labels[i].value)
    }

    /// Prometheus' `Builder.Set`: an empty value removes the label.
    fn set(&mut self, name: &str, value: Cow<'a, str>) {
        if value.is_empty() {
            return self.del(name);
        }
        match self.find(name) {
            Ok(i) if self.labels[i].value == value => {}
            Ok(i) => {
                self.labels[i].value = value;
                self.changed = true;
            }
            Err(i) => {
                self.labels.insert(
                    i,
                    Label {
                        name: Cow::Owned(name.to_string()),
                        value,
                    },
                );
                self.changed = true;
            }
        }
    }

    fn del(&mut self, name: &str) {
        if let Ok(i) = self.find(name) {
            self.labels.remove(i);
            self.changed = true;
        }
    }
}

/// Byte order of two label names, as `str`'s `Ord`. Names are a few bytes long: a loop over
/// them costs less than a call to `memcmp`, which the rules' lookups made a tenth of their time.
#[inline]
pub(crate) fn cmp_names(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}

impl Rules {
    /// Runs the rules in order over `labels` (sorted by name first if they are not), as
    /// Prometheus' `relabel.Process` does for `write_relabel_configs`; a series left with no
    /// label is dropped, as Prometheus' remote write drops it.
    pub fn apply<'a>(&self, labels: &mut Vec<Label<'a>>) -> Verdict {
        if self.rules.is_empty() {
            return Verdict::Unchanged;
        }
        if !labels.is_sorted_by(|a, b| a.name <= b.name) {
            labels.sort_by(|a, b| a.name.cmp(&b.name));
        }
        let mut set = Set {
            labels,
            changed: false,
        };
        for rule in &self.rules {
            if !rule.apply(&mut set) {
                return Verdict::Drop;
            }
        }
        if set.labels.is_empty() {
            Verdict::Drop
        } else if set.changed {
            Verdict::Changed
        } else {
            Verdict::Unchanged
        }
    }
}

impl Rule {
    /// The source labels' values joined by the separator.
    fn value<'v>(&self, set: &'v Set<'_, '_>) -> Cow<'v, str> {
        match self.source_labels.as_slice() {
            [] => Cow::Borrowed(""),
            [one] => Cow::Borrowed(set.get(one)),
            many => {
                let mut joined = String::new();
                for (i, name) in many.iter().enumerate() {
                    if i > 0 {
                        joined.push_str(&self.separator);
                    }
                    joined.push_str(set.get(name));
                }
                Cow::Owned(joined)
            }
        }
    }

    /// Applies the rule; `false` drops the series.
    fn apply(&self, set: &mut Set<'_, '_>) -> bool {
        match self.action {
            Action::Drop => !self.regex.is_match(&self.value(set)),
            Action::Keep => self.regex.is_match(&self.value(set)),
            Action::DropEqual => set.get(&self.target_label) != self.value(set),
            Action::KeepEqual => set.get(&self.target_label) == self.value(set),
            Action::Replace => {
                let val = self.value(set).into_owned();
                let Some(caps) = self.regex.regex().captures(&val) else {
                    return true;
                };
                let mut target = String::new();
                caps.expand(&self.target_label, &mut target);
                if !valid_label_name(&target) {
                    // Prometheus 2.42 removes the label named as written (unexpanded).
                    set.del(&self.target_label);
                    return true;
                }
                let mut res = String::new();
                caps.expand(&self.replacement, &mut res);
                if res.is_empty() {
                    // Here too: the unexpanded name.
                    set.del(&self.target_label);
                    return true;
                }
                set.set(&target, Cow::Owned(res));
                true
            }
            Action::Lowercase => {
                let v = crate::case::lower(&self.value(set));
                set.set(&self.target_label, Cow::Owned(v));
                true
            }
            Action::Uppercase => {
                let v = crate::case::upper(&self.value(set));
                set.set(&self.target_label, Cow::Owned(v));
                true
            }
            Action::HashMod => {
                let hash = Md5::digest(self.value(set).as_bytes());
                let mut last = [0u8; 8];
                last.copy_from_slice(&hash[8..16]);
                let m = u64::from_be_bytes(last) % self.modulus;
                set.set(&self.target_label, Cow::Owned(m.to_string()));
                true
            }
            Action::LabelMap => {
                // Over the labels as they were before this rule, in name order (most series
                // have no matching name, and need no copy).
                let Some(first) = set.labels.iter().position(|l| self.regex.is_match(&l.name))
                else {
                    return true;
                };
                let before = set.labels[first..].to_vec();
                for l in &before {
                    if self.regex.is_match(&l.name) {
                        let name = self
                            .regex
                            .regex()
                            .replace_all(&l.name, self.replacement.as_str());
                        set.set(&name, l.value.clone());
                    }
                }
                true
            }
            Action::LabelDrop | Action::LabelKeep => {
                let drop_matching = self.action == Action::LabelDrop;
                let before = set.labels.len();
                set.labels
                    .retain(|l| self.regex.is_match(&l.name) != drop_matching);
                set.changed |= set.labels.len() != before;
                true
            }
        }
    }
}
