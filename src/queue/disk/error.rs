//! Why the durable queue could not be opened, or refused a push.

use std::io;
use std::path::PathBuf;

use super::format;

/// Marks a push error whose records were nevertheless written and published (the fsync
/// failed): they will be delivered and acknowledged like any other.
#[derive(Debug)]
pub(crate) struct Published(pub(crate) String);

impl std::fmt::Display for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Published {}

/// Why the queue could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DiskQueueError {
    /// A file or directory operation failed.
    #[error("queue {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The settings cannot work.
    #[error("invalid disk queue settings: {0}")]
    Config(String),
    /// A queue written without routes cannot be moved to its route's directory.
    #[error("queue directory {0}")]
    Relocate(String),
    /// The directory holds a queue this promlink must not read.
    #[error("queue directory {path}: {source}")]
    Format {
        /// The queue directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: format::FormatError,
    },
}

/// Why a push was refused.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The byte budget cannot hold the request; nothing was written.
    #[error("disk queue is full: {used} of {max} bytes in use, request needs {needed}")]
    Full {
        /// Unacknowledged bytes (including pushes in progress).
        used: u64,
        /// The budget.
        max: u64,
        /// Bytes the refused request needed.
        needed: u64,
    },
    /// Writing or syncing failed; the request may or may not be replayed later, so the sender
    /// must retry (a duplicate at worst).
    #[error("disk queue write failed: {0}")]
    Io(#[source] io::Error),
}
