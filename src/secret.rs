//! A string that must never be printed: Entra client secrets, bearer tokens, private keys.
//!
//! `Debug` and `Display` print `<redacted>`; the value is reachable only through
//! [`Secret::expose`], so every place that reveals it is easy to find.

use std::fmt;

/// A secret string whose formatting never shows its value.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value itself. Call only where it is sent or compared.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// A warning when the file at `path` (the value of configuration key `key`) can be read by
/// every user of the machine. `None` when it cannot, or when its mode cannot be read (the read
/// itself then reports the problem).
pub fn loose_permissions(key: &str, path: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o004 != 0).then(|| {
        format!(
            "{key} = {:?} is readable by every user (mode {mode:04o}); it holds a secret: chmod 600 it, or set defaultMode: 0400 (or 0440 with fsGroup) on the Kubernetes secret volume",
            path.display().to_string()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn world_readable_secret_files_are_named() {
        use std::os::unix::fs::PermissionsExt;
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        let w = loose_permissions("tls_key", f.path()).unwrap();
        assert!(
            w.starts_with("tls_key = ") && w.contains("mode 0644"),
            "{w}"
        );
        std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(loose_permissions("tls_key", f.path()), None);
        std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(loose_permissions("tls_key", f.path()), None);
    }

    #[test]
    fn formatting_never_shows_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(
            format!("{s:?} {s} {:?}", Some(&s)),
            "<redacted> <redacted> Some(<redacted>)"
        );
        assert_eq!(s.expose(), "hunter2");
    }
}
