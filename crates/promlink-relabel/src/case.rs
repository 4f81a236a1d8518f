//! Go's `strings.ToLower` and `strings.ToUpper`: each character mapped on its own by Unicode's
//! simple case mapping (one character to one), unlike Rust's `str::to_lowercase`, which uses
//! the full mapping (`ß` to `SS`, `İ` to `i̇`) and the final-sigma rule.

/// `s` in lower case, as Go's `strings.ToLower`.
pub(crate) fn lower(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    s.chars()
        .map(|c| match c {
            // The one character whose full lower-case mapping (i + combining dot) differs from
            // its simple one.
            '\u{130}' => 'i',
            c => single(c.to_lowercase()).unwrap_or(c),
        })
        .collect()
}

/// `s` in upper case, as Go's `strings.ToUpper`.
pub(crate) fn upper(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_uppercase();
    }
    s.chars()
        .map(|c| single(c.to_uppercase()).unwrap_or(c))
        .collect()
}

/// The mapping when it is one character (a simple mapping); `None` when the full mapping has
/// several, which have no simple mapping and stay as they are.
fn single(mut it: impl Iterator<Item = char>) -> Option<char> {
    let c = it.next()?;
    it.next().is_none().then_some(c)
}
