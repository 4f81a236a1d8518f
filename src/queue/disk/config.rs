//! The durable queue's settings.

use std::path::PathBuf;
use std::time::Duration;

/// Size at which a new segment file is started.
pub const SEGMENT_BYTES: u64 = 16 << 20;

/// Durable queue settings.
#[derive(Clone, Debug)]
pub struct DiskQueueConfig {
    /// Directory holding the queue; created if missing. One process per directory.
    pub dir: PathBuf,
    /// Budget of unacknowledged record bytes (framing included); pushes beyond it are refused.
    pub max_bytes: u64,
    /// Size at which a new segment is started, e.g. 16 MiB.
    pub segment_bytes: u64,
    /// When a push counts as durable.
    pub fsync: FsyncPolicy,
    /// Most chunk data held in memory for the upstream workers (the rest waits on disk).
    pub window_bytes: usize,
}

/// When [`DiskQueue::push`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After the record is fsynced; concurrent pushes share one fsync (group commit). No loss
    /// on power loss.
    Always,
    /// After `write()`; the log is fsynced every interval. Loss window: the interval, on power
    /// loss or kernel crash only; nothing is lost on a process crash.
    Interval(Duration),
}
