//! The durable queue's settings.

use std::path::PathBuf;
use std::time::Duration;

/// The default [`DiskQueueConfig::recent_commit`]: a group commit that ended less than this
/// ago makes the next wait `commit_delay`, since pushes are arriving back to back and waiting
/// lets more of them share one fsync.
pub const RECENT_COMMIT: Duration = Duration::from_millis(2);

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
    /// Under [`FsyncPolicy::Always`]: when the previous group commit ended less than
    /// `recent_commit` ago, how long the committer waits before taking the next group, so
    /// that more pushes share its fsync. Zero never waits.
    pub commit_delay: Duration,
    /// How recent the previous group commit must be for `commit_delay` to apply
    /// ([`RECENT_COMMIT`] unless a test needs a window it can hit on a loaded machine).
    pub recent_commit: Duration,
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
