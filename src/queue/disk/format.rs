//! The queue directory's format marker, so that a promlink never misreads a queue written by a
//! newer one (after a rollback, or when `promlink drain` of an older image is pointed at a
//! retained volume).
//!
//! ```text
//! <dir>/format := "promlink-queue-format " version "\n"     (ASCII; version a decimal integer)
//! ```
//!
//! Written (and fsynced with its directory) on open when missing; version 2 is the layout of
//! the parent module. A directory whose marker names a higher version, or is unreadable, is
//! refused before anything in it is touched: the recovery of an older promlink would take
//! newer records for damage, skip them and cut them off as a torn tail. Segments are checked
//! too, because a newer promlink that did not know about this file would not have written
//! it: a record magic `PLQ` followed by a digit above this version refuses the directory.

use std::io;
use std::path::Path;

/// The version this promlink writes and reads (older ones are migrated).
pub(super) const VERSION: u32 = 2;
/// File name of the marker inside the queue directory.
pub(super) const FILE: &str = "format";
const PREFIX: &str = "promlink-queue-format ";

/// Why a directory is refused.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Written by a newer promlink.
    #[error("written by a newer promlink (queue format {found}; this promlink reads format {VERSION} and older): run a promlink at least as new as the one that wrote it (its queue is kept as it is), or drain it with `promlink drain` of that version")]
    Newer {
        /// The version found.
        found: u32,
    },
    /// The marker is not one this promlink can read.
    #[error("unreadable format marker {FILE:?} ({0:?}): not touching the queue; restore the file or move the directory aside")]
    Unreadable(String),
    /// A file operation failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Checks the marker of `dir` (and the magic of the segments in `log_dir`), and writes the
/// marker when it is missing.
///
/// # Errors
/// [`FormatError::Newer`] or [`FormatError::Unreadable`] when the directory must not be read;
/// [`FormatError::Io`] when it cannot be.
pub(super) fn check_and_mark(dir: &Path, log_dir: &Path) -> Result<(), FormatError> {
    let path = dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let found = parse(&bytes)?;
            if found > VERSION {
                return Err(FormatError::Newer { found });
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    if let Some(found) = newest_segment_magic(log_dir)? {
        if found > VERSION {
            return Err(FormatError::Newer { found });
        }
    }
    if !path.exists() {
        let tmp = dir.join("format.tmp");
        std::fs::write(&tmp, format!("{PREFIX}{VERSION}\n"))?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn parse(bytes: &[u8]) -> Result<u32, FormatError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| FormatError::Unreadable(String::from_utf8_lossy(bytes).into_owned()))?;
    text.trim_end()
        .strip_prefix(PREFIX)
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or_else(|| FormatError::Unreadable(text.to_string()))
}

/// The highest record version named by the first bytes of a segment in `log_dir` (`PLQ<d>`),
/// if any segment starts with a record magic.
fn newest_segment_magic(log_dir: &Path) -> io::Result<Option<u32>> {
    let entries = match std::fs::read_dir(log_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut newest = None;
    for e in entries {
        let e = e?;
        let is_segment = e
            .file_name()
            .to_str()
            .and_then(super::segment::parse_segment_name)
            .is_some();
        if !is_segment {
            continue;
        }
        let mut head = [0u8; 4];
        let n = io::Read::read(&mut std::fs::File::open(e.path())?, &mut head)?;
        if n == 4 && head[..3] == *b"PLQ" && head[3].is_ascii_digit() {
            let v = u32::from(head[3] - b'0');
            newest = newest.max(Some(v));
        }
    }
    Ok(newest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_a_new_directory_and_accepts_its_own_version() {
        let d = tempfile::tempdir().unwrap();
        check_and_mark(d.path(), &d.path().join("log")).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join(FILE)).unwrap(),
            "promlink-queue-format 2\n"
        );
        check_and_mark(d.path(), &d.path().join("log")).unwrap();
    }

    #[test]
    fn refuses_a_newer_marker_or_segment_and_an_unreadable_marker() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(FILE), "promlink-queue-format 3\n").unwrap();
        let e = check_and_mark(d.path(), &d.path().join("log")).unwrap_err();
        assert!(matches!(e, FormatError::Newer { found: 3 }), "{e}");
        assert!(e.to_string().contains("format 3"), "{e}");

        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(FILE), "something else\n").unwrap();
        let e = check_and_mark(d.path(), &d.path().join("log")).unwrap_err();
        assert!(matches!(e, FormatError::Unreadable(_)), "{e}");

        // A newer promlink that did not write a marker: its segments say so.
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        std::fs::create_dir(&log).unwrap();
        std::fs::write(
            log.join(super::super::segment::segment_name(7)),
            b"PLQ3\0\0\0\0\0\0\0\0",
        )
        .unwrap();
        let e = check_and_mark(d.path(), &log).unwrap_err();
        assert!(matches!(e, FormatError::Newer { found: 3 }), "{e}");
        assert!(!d.path().join(FILE).exists(), "nothing written");
    }
}
