//! Moving a single-route queue under its route's directory when `routes` is configured, and
//! finding the queues of routes no longer configured.
//!
//! Without `routes`, the queue lives in `queue_dir` itself (`format`, `log/`, and a version 1
//! queue's `shard-*`). With `routes`, each route has `queue_dir/<route>/`. A queue left in
//! `queue_dir` by a promlink without routes belongs to the route named `default`, which takes
//! it over: its entries are renamed into `queue_dir/default/` (each rename atomic, `format`
//! last, so a crash part-way leaves a state the next start completes). Without a `default`
//! route the start is refused, with what to do, rather than leaving data behind unseen.

use std::io;
use std::path::{Path, PathBuf};

use super::DiskQueueError;

/// The entries of a queue directory that hold its data, data first, the marker last.
fn queue_entries(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    let listing = match std::fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(names),
        Err(e) => return Err(e),
    };
    for e in listing {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name == "log" || name.starts_with("shard-") || name == "log.migrating" {
            names.push(name);
        }
    }
    names.sort();
    if dir.join(super::format::FILE).exists() {
        names.push(super::format::FILE.to_string());
    }
    Ok(names)
}

/// When `dir` (the top-level `queue_dir`) holds a queue written without routes, moves it to
/// `dir/<default_route>/`, or refuses when `routes` has no route of that name. Returns where it
/// moved the queue, if it did.
///
/// # Errors
/// [`DiskQueueError::Relocate`] when the queue cannot be moved (and says what to do),
/// [`DiskQueueError::Io`] when a file operation fails.
pub fn adopt_single_route_queue(
    dir: &Path,
    default_route: &str,
    routes: &[&str],
) -> Result<Option<PathBuf>, DiskQueueError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DiskQueueError::Io { path, source }
    };
    let entries = queue_entries(dir).map_err(io_err(dir))?;
    if entries.is_empty() {
        return Ok(None);
    }
    if !routes.contains(&default_route) {
        return Err(DiskQueueError::Relocate(format!(
            "{} holds a queue written by promlink without routes ({}); with routes each route queues under {}/<route>/, and a route named {default_route:?} takes that queue over: name one route {default_route:?} (normally the last, without match), or first deliver the queue with `promlink drain --queue-dir {} --ingestion-url <the URL it was for>` and start again",
            dir.display(),
            entries.join(", "),
            dir.display(),
            dir.display(),
        )));
    }
    // A promlink without routes still running on this directory holds its lock.
    let _lock = super::lock_dir(dir)?;
    let target = dir.join(default_route);
    std::fs::create_dir_all(&target).map_err(io_err(&target))?;
    for name in &entries {
        let (from, to) = (dir.join(name), target.join(name));
        if to.exists() {
            if name == super::format::FILE {
                // The marker of the same format is already there (a crash after moving it).
                std::fs::remove_file(&from).map_err(io_err(&from))?;
                continue;
            }
            return Err(DiskQueueError::Relocate(format!(
                "both {} and {} exist: two queues for the route {default_route:?}; deliver one of them with `promlink drain --queue-dir <that directory>` and remove it",
                from.display(),
                to.display()
            )));
        }
        std::fs::rename(&from, &to).map_err(io_err(&from))?;
    }
    for d in [&target, dir] {
        std::fs::File::open(d)
            .and_then(|f| f.sync_all())
            .map_err(io_err(d))?;
    }
    tracing::warn!(from = %dir.display(), to = %target.display(), moved = entries.join(", "), "moved the queue written without routes to the default route's directory");
    Ok(Some(target))
}

/// The queue directories under `dir` (the top-level `queue_dir`) that no configured
/// destination uses (`in_use`: their directory names), with the bytes their files hold on
/// disk: a queue left by a route (or an `ingestion_urls` entry) that was removed from the
/// configuration, which nothing delivers now.
///
/// # Errors
/// When `dir` or one of its subdirectories cannot be read.
pub fn stranded_queues(dir: &Path, in_use: &[String]) -> io::Result<Vec<(PathBuf, u64)>> {
    let listing = match std::fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut stranded = Vec::new();
    for e in listing {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !e.file_type()?.is_dir() || in_use.contains(&name) {
            continue;
        }
        let path = e.path();
        let entries = queue_entries(&path)?;
        if entries.is_empty() {
            continue;
        }
        let bytes = entries
            .iter()
            .map(|n| disk_bytes(&path.join(n)))
            .sum::<io::Result<u64>>()?;
        stranded.push((path, bytes));
    }
    stranded.sort();
    Ok(stranded)
}

/// The bytes the files under `path` hold.
fn disk_bytes(path: &Path) -> io::Result<u64> {
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.is_dir() {
        return Ok(meta.len());
    }
    let mut total = 0;
    for e in std::fs::read_dir(path)? {
        total += disk_bytes(&e?.path())?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    #[test]
    fn a_queue_without_routes_moves_to_the_default_route() {
        let dir = tempfile::tempdir().unwrap();
        touch(&dir.path().join("log/00000000000000000001.seg"));
        touch(&dir.path().join("format"));
        let moved = adopt_single_route_queue(dir.path(), "default", &["a", "default"]).unwrap();
        assert_eq!(moved, Some(dir.path().join("default")));
        assert!(dir
            .path()
            .join("default/log/00000000000000000001.seg")
            .exists());
        assert!(dir.path().join("default/format").exists());
        assert!(!dir.path().join("log").exists() && !dir.path().join("format").exists());
        // Nothing left to move the next time.
        assert_eq!(
            adopt_single_route_queue(dir.path(), "default", &["default"]).unwrap(),
            None
        );
    }

    #[test]
    fn without_a_default_route_the_start_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        touch(&dir.path().join("log/00000000000000000001.seg"));
        let e = adopt_single_route_queue(dir.path(), "default", &["team-a"]).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("promlink drain") && msg.contains("\"default\""),
            "{msg}"
        );
        assert!(dir.path().join("log/00000000000000000001.seg").exists());
    }

    #[test]
    fn a_crash_after_moving_the_log_is_completed_and_two_logs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        touch(&dir.path().join("default/log/1.seg"));
        touch(&dir.path().join("default/format"));
        touch(&dir.path().join("format"));
        adopt_single_route_queue(dir.path(), "default", &["default"]).unwrap();
        assert!(!dir.path().join("format").exists());
        touch(&dir.path().join("log/2.seg"));
        let e = adopt_single_route_queue(dir.path(), "default", &["default"]).unwrap_err();
        assert!(e.to_string().contains("two queues"), "{e}");
    }

    #[test]
    fn queues_no_destination_uses_are_found_with_their_size() {
        let top = tempfile::tempdir().unwrap();
        for (dir, bytes) in [("default", 10), ("gone", 300), ("gone.1", 7)] {
            let log = top.path().join(dir).join("log");
            std::fs::create_dir_all(&log).unwrap();
            std::fs::write(log.join("00000001.seg"), vec![0u8; bytes]).unwrap();
        }
        // Not a queue: no log, no format marker.
        std::fs::create_dir_all(top.path().join("lost+found")).unwrap();
        let found = stranded_queues(top.path(), &["default".to_string()]).unwrap();
        assert_eq!(
            found,
            [
                (top.path().join("gone"), 300),
                (top.path().join("gone.1"), 7)
            ]
        );
    }
}
