//! A bearer token kept in a file by someone else (a sidecar, a CSI driver, an operator).
//!
//! The file is re-read only when its modification time or length changes, so checking it on
//! every request costs one `stat`. Surrounding whitespace is trimmed. When the token is a JWT,
//! its `exp` claim is its expiry, so an expired token in the file is never sent; any other token
//! is taken as valid until the file changes. A file that vanishes or cannot be read keeps the
//! last good token in use (a writer swapping the file is briefly between two versions); the
//! failure shows in `last_error` until the file is readable again.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::source::Fetched;
use super::Error;
use crate::secret::Secret;

/// What a check of the file found.
pub(crate) enum Check {
    /// Same modification time and length as at the last successful read.
    Unchanged,
    /// The file was (re-)read.
    Read(Fetched),
    /// The file could not be read or holds no token.
    Failed(Error),
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

/// The token file and what we last saw of it.
pub(crate) struct TokenFile {
    path: PathBuf,
    /// Held while checking, so concurrent callers read the file once.
    seen: Mutex<Option<Stamp>>,
}

impl TokenFile {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            seen: Mutex::new(None),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Re-reads the file if it changed since the last read, or unconditionally with `force`.
    pub(crate) fn check(&self, force: bool) -> Check {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let read_err = |source| Error::ReadFile {
            what: "the token file",
            path: self.path.clone(),
            source,
        };
        let meta = match std::fs::metadata(&self.path) {
            Ok(meta) => meta,
            Err(e) => {
                *seen = None;
                return Check::Failed(read_err(e));
            }
        };
        let stamp = Stamp {
            modified: meta.modified().ok(),
            len: meta.len(),
        };
        if !force && *seen == Some(stamp) {
            return Check::Unchanged;
        }
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) => {
                *seen = None;
                return Check::Failed(read_err(e));
            }
        };
        *seen = Some(stamp);
        let token = text.trim();
        if token.is_empty() {
            return Check::Failed(Error::EmptyFile {
                what: "the token file",
                path: self.path.clone(),
            });
        }
        Check::Read(Fetched {
            expires_at: jwt_expiry(token),
            token: Secret::new(token),
        })
    }
}

/// The `exp` claim of a JWT, if `token` is one.
pub(crate) fn jwt_expiry(token: &str) -> Option<SystemTime> {
    let mut parts = token.split('.');
    let (_, claims, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let claims = URL_SAFE_NO_PAD.decode(claims.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&claims).ok()?;
    let exp = claims.get("exp")?.as_f64()?;
    UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(exp).ok()?)
}
