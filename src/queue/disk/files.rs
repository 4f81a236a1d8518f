//! The file operations the committer makes, behind a small layer that tests replace with one
//! that fails on command ([`faults`]).
//!
//! Only writes go through it: creating and opening segments, appending, truncating a failed
//! append back, fsyncing segments and the directory, and overwriting the read position. Reads
//! (recovery and the reader) use `std::fs` directly: a failed read backs off and retries, it
//! cannot acknowledge anything that is not durable.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A file the committer writes.
pub(crate) trait WriteFile: Send {
    /// Appends all of `buf` (the file is opened for appending).
    fn append(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Writes all of `buf` at `off` (the read-position file).
    fn write_at(&mut self, buf: &[u8], off: u64) -> io::Result<()>;
    /// `fdatasync`.
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes (undoing a failed append).
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

/// Where the committer's files come from.
pub(crate) trait Storage: Send + Sync {
    /// Opens an existing segment for appending.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WriteFile>>;
    /// Creates a new segment for appending; fails if it exists.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WriteFile>>;
    /// Opens (creating it if missing) a file written in place.
    fn open_in_place(&self, path: &Path) -> io::Result<Box<dyn WriteFile>>;
    /// Makes the directory's entries (created, renamed files) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The real filesystem.
pub(crate) struct Disk;

impl WriteFile for File {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.write_all(buf)
    }

    fn write_at(&mut self, buf: &[u8], off: u64) -> io::Result<()> {
        self.write_all_at(buf, off)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
}

impl Storage for Disk {
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        Ok(Box::new(OpenOptions::new().append(true).open(path)?))
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        Ok(Box::new(
            OpenOptions::new()
                .append(true)
                .create_new(true)
                .open(path)?,
        ))
    }

    fn open_in_place(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        Ok(Box::new(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?,
        ))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// A [`Storage`] over the real filesystem that fails the operations a test arms, the way the
/// kernel reports them: a failed append may have written part of its bytes first, a failed
/// fsync is reported once.
#[cfg(test)]
pub(crate) mod faults {
    use std::io;
    use std::path::Path;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::{Disk, Storage, WriteFile};

    /// An operation that can be made to fail.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Op {
        /// Appending to a segment (after writing half of the bytes).
        Append,
        /// fsync of a segment.
        SyncData,
        /// Cutting a segment back after a failed append.
        SetLen,
        /// Creating the next segment.
        Create,
        /// Writing the read position.
        WriteAt,
    }

    /// What an armed operation does instead of its work.
    #[derive(Clone, Copy, Debug)]
    enum Effect {
        Fail(io::ErrorKind),
        /// Sleeps first, then does its work (a slow disk).
        Stall(Duration),
    }

    #[derive(Default)]
    struct Armed {
        /// (operation, calls of it to let through first, effect, times).
        rules: Vec<(Op, usize, Effect, usize)>,
        /// Every failure injected so far.
        injected: Vec<Op>,
        /// Calls made of each operation, failed ones included.
        calls: Vec<(Op, usize)>,
    }

    /// The fault-injecting storage; clones share the armed faults.
    #[derive(Clone, Default)]
    pub(crate) struct Faulty {
        armed: Arc<Mutex<Armed>>,
    }

    impl Faulty {
        /// Fails `op` `times` times with `kind`, after letting `skip` calls of it through. Rules
        /// for one operation apply one after the other, in the order they were armed.
        pub(crate) fn fail(&self, op: Op, skip: usize, kind: io::ErrorKind, times: usize) {
            self.lock()
                .rules
                .push((op, skip, Effect::Fail(kind), times));
        }

        /// Makes `op` take `pause` longer, once, after letting `skip` calls of it through.
        pub(crate) fn stall(&self, op: Op, skip: usize, pause: Duration) {
            self.lock().rules.push((op, skip, Effect::Stall(pause), 1));
        }

        /// The failures injected so far, in order.
        pub(crate) fn injected(&self) -> Vec<Op> {
            self.lock().injected.clone()
        }

        fn lock(&self) -> std::sync::MutexGuard<'_, Armed> {
            self.armed.lock().unwrap_or_else(|p| p.into_inner())
        }

        /// Calls made of `op` so far, failed ones included.
        pub(crate) fn calls(&self, op: Op) -> usize {
            self.lock()
                .calls
                .iter()
                .find(|(o, _)| *o == op)
                .map_or(0, |(_, n)| *n)
        }

        fn check(&self, op: Op) -> io::Result<()> {
            let mut a = self.lock();
            match a.calls.iter_mut().find(|(o, _)| *o == op) {
                Some((_, n)) => *n += 1,
                None => a.calls.push((op, 1)),
            }
            let Some(rule) = a.rules.iter_mut().find(|r| r.0 == op && r.3 > 0) else {
                return Ok(());
            };
            if rule.1 > 0 {
                rule.1 -= 1;
                return Ok(());
            }
            rule.3 -= 1;
            match rule.2 {
                Effect::Fail(kind) => {
                    a.injected.push(op);
                    Err(io::Error::new(kind, format!("injected {op:?} failure")))
                }
                Effect::Stall(pause) => {
                    drop(a);
                    std::thread::sleep(pause);
                    Ok(())
                }
            }
        }

        fn wrap(&self, file: Box<dyn WriteFile>) -> Box<dyn WriteFile> {
            Box::new(FaultyFile {
                faults: self.clone(),
                file,
            })
        }
    }

    struct FaultyFile {
        faults: Faulty,
        file: Box<dyn WriteFile>,
    }

    impl WriteFile for FaultyFile {
        fn append(&mut self, buf: &[u8]) -> io::Result<()> {
            if let Err(e) = self.faults.check(Op::Append) {
                // A write that fails midway leaves what it wrote (ENOSPC, EIO).
                self.file.append(&buf[..buf.len() / 2])?;
                return Err(e);
            }
            self.file.append(buf)
        }

        fn write_at(&mut self, buf: &[u8], off: u64) -> io::Result<()> {
            self.faults.check(Op::WriteAt)?;
            self.file.write_at(buf, off)
        }

        fn sync_data(&mut self) -> io::Result<()> {
            self.faults.check(Op::SyncData)?;
            self.file.sync_data()
        }

        fn set_len(&mut self, len: u64) -> io::Result<()> {
            self.faults.check(Op::SetLen)?;
            self.file.set_len(len)
        }
    }

    impl Storage for Faulty {
        fn open_append(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
            Ok(self.wrap(Disk.open_append(path)?))
        }

        fn create_new(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
            self.check(Op::Create)?;
            Ok(self.wrap(Disk.create_new(path)?))
        }

        fn open_in_place(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
            Ok(self.wrap(Disk.open_in_place(path)?))
        }

        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            Disk.sync_dir(dir)
        }
    }
}
