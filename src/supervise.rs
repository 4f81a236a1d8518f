//! What a panic in one of promlink's tasks leads to, so that none becomes a silent stall, and
//! the test-only failpoints that provoke one.
//!
//! - An upstream worker catches a panic while it delivers a batch: the batch goes back to the
//!   queue (its unfinished chunks wait again, in order), `promlink_upstream_worker_panics_total`
//!   counts it, and the worker goes on with the next batch.
//! - A write handler's panic is answered 500, which senders retry (what the request had queued
//!   stays queued: the retry may duplicate it), counted in `promlink_receive_panics_total`;
//!   the connection and the other requests go on.
//! - The disk queue's committer thread and reader are not restarted: their state is the
//!   queue's. A panic there puts the queue in its failed state and is [`fatal`]: the `promlink`
//!   binary then exits with [`EXIT_FATAL`], so that Kubernetes restarts it and the queue is
//!   replayed from disk. (Used as a library, promlink stays up in the failed state: `/ready`
//!   fails and `PromlinkQueueFailed` fires.)
//!
//! Failpoints: [`arm`] makes the named point panic (tests in this process), as does
//! `PROMLINK_FAILPOINTS=<point>[@<skip>],...` read by the binary at start (tests that run the
//! binary). They exist for the supervision tests only; no setting or flag reaches them.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Exit code of the `promlink` binary after a [`fatal`] panic (`EX_SOFTWARE`).
pub const EXIT_FATAL: u8 = 70;

/// The points a test can make panic.
pub const POINTS: [&str; 4] = [
    UPSTREAM_WORKER,
    RECEIVE_HANDLER,
    QUEUE_COMMITTER,
    QUEUE_READER,
];
/// In an upstream worker, as it starts delivering a batch.
pub const UPSTREAM_WORKER: &str = "upstream_worker";
/// In the write handler, after the request's data is queued.
pub const RECEIVE_HANDLER: &str = "receive_handler";
/// In the disk queue's committer, as it starts a commit group with pushes.
pub const QUEUE_COMMITTER: &str = "queue_committer";
/// In the disk queue's reader, as it reads records back from the files.
pub const QUEUE_READER: &str = "queue_reader";

/// Whether any failpoint is armed (checked first, so that an unarmed point costs one load).
static ANY: AtomicBool = AtomicBool::new(false);
/// Armed points: (point, passes to let through first, panics left).
static ARMED: Mutex<Vec<(&'static str, u32, u32)>> = Mutex::new(Vec::new());
/// Whether [`fatal`] exits the process (set by the binary).
static EXIT_ON_FATAL: AtomicBool = AtomicBool::new(false);

/// Makes `point` (one of [`POINTS`]) panic `times` times, after letting `skip` passes through.
///
/// # Panics
/// When `point` is not one of [`POINTS`].
pub fn arm(point: &str, skip: u32, times: u32) {
    let point = POINTS
        .into_iter()
        .find(|p| *p == point)
        .unwrap_or_else(|| panic!("unknown failpoint {point:?}; known: {POINTS:?}"));
    ARMED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((point, skip, times));
    ANY.store(true, Ordering::Release);
}

/// Arms the failpoints named in `PROMLINK_FAILPOINTS` (`point[@skip]`, comma-separated; each
/// panics once). Returns an error naming an entry it cannot read.
///
/// # Errors
/// When an entry names no known point or its skip count is not a number.
pub fn arm_from_env() -> Result<(), String> {
    let Ok(spec) = std::env::var("PROMLINK_FAILPOINTS") else {
        return Ok(());
    };
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (point, skip) = entry.split_once('@').unwrap_or((entry, "0"));
        let skip: u32 = skip.parse().map_err(|_| {
            format!("PROMLINK_FAILPOINTS: {entry:?}: the skip count is not a number")
        })?;
        if !POINTS.contains(&point) {
            return Err(format!(
                "PROMLINK_FAILPOINTS: {point:?} is not a failpoint; known: {}",
                POINTS.join(", ")
            ));
        }
        arm(point, skip, 1);
    }
    Ok(())
}

/// Panics if `point` is armed (and its skip count used up).
pub(crate) fn hit(point: &'static str) {
    if !ANY.load(Ordering::Acquire) {
        return;
    }
    let fire = {
        let mut armed = ARMED.lock().unwrap_or_else(|p| p.into_inner());
        match armed
            .iter_mut()
            .find(|(p, _, left)| *p == point && *left > 0)
        {
            Some((_, skip, _)) if *skip > 0 => {
                *skip -= 1;
                false
            }
            Some((_, _, left)) => {
                *left -= 1;
                true
            }
            None => false,
        }
    };
    if fire {
        panic!("failpoint {point} (a test-only panic)");
    }
}

/// Makes [`fatal`] exit the process (the binary's choice; a library user keeps running).
pub fn exit_on_fatal() {
    EXIT_ON_FATAL.store(true, Ordering::Release);
}

/// A task whose state cannot be rebuilt in place panicked: logs it and, in the binary, exits
/// with [`EXIT_FATAL`] (the disk queue is replayed at the next start).
pub(crate) fn fatal(task: &str, why: &str) {
    tracing::error!(
        task,
        panic = why,
        "a promlink task panicked and cannot be restarted in place"
    );
    if EXIT_ON_FATAL.load(Ordering::Acquire) {
        eprintln!("promlink: the {task} panicked ({why}); exiting with code {EXIT_FATAL} so that it restarts and replays its disk queue");
        std::process::exit(i32::from(EXIT_FATAL));
    }
}

/// The message of a caught panic.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}
