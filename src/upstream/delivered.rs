//! What an upstream counts of the parts it delivered and the requests it sent: the canary's
//! accepted chunks ([`CanaryAcks`]), and the workspace's and DCR's figures ([`Limits`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::codec::{self, Chunk};

/// What [`super::Upstream::attach_limits`] attaches: where delivered parts and sent requests
/// are counted against the workspace's and the DCR's limits.
#[derive(Debug)]
pub(super) struct Limits {
    pub(super) workspace: Arc<crate::workspace::Workspace>,
    pub(super) requests: Arc<AtomicU64>,
}

impl Limits {
    /// Counts one request sent to the DCR.
    pub(super) fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
}

/// How many of the canary's chunks this destination's upstream has accepted. The canary
/// ([`crate::canary`]) puts each of its samples into the queue as a chunk of its own, one
/// series whose key it registers here; the read-back polls a canary only once the upstream
/// accepted it. A user's one-series chunk with the same 32-bit key also counts: that only
/// starts a poll early, which finds an older value.
#[derive(Debug, Default)]
pub struct CanaryAcks {
    /// The canary series' key, plus one (0: no canary).
    key: AtomicU64,
    acked: AtomicU64,
}

impl CanaryAcks {
    /// Registers the canary series' key.
    pub fn watch(&self, key: codec::SeriesKey) {
        self.key.store(u64::from(key) + 1, Ordering::Relaxed);
    }

    /// Canary chunks accepted so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Acquire)
    }

    pub(super) fn count(&self, part: &[Chunk]) {
        let key = self.key.load(Ordering::Relaxed);
        if key == 0 {
            return;
        }
        let n = part
            .iter()
            .filter(|c| c.keys.len() == 1 && u64::from(c.keys[0]) + 1 == key)
            .count() as u64;
        if n > 0 {
            self.acked.fetch_add(n, Ordering::Release);
        }
    }
}
