//! [`Health`]: what the rest of promlink (readiness, `/status`, alerts, the demo's view) knows
//! of the upstream's answers.

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the rest of promlink (status, alerts, the demo's view) knows of the upstream.
pub struct Health {
    /// When this process started watching the upstream: "no answer for a window" counts from
    /// here until the first answer.
    since_ms: u64,
    last_answer_ms: AtomicU64,
    last_status: AtomicU16,
    rejection: Mutex<Option<(u16, String)>>,
    /// Why the last attempt got no HTTP answer (connection refused, DNS, TLS, timeout), until
    /// the next answer.
    last_error: Mutex<Option<String>>,
    /// Batches (or parts) the upstream accepted since the start.
    accepted: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            since_ms: Self::now_ms(),
            last_answer_ms: AtomicU64::new(0),
            last_status: AtomicU16::new(0),
            rejection: Mutex::new(None),
            last_error: Mutex::new(None),
            accepted: AtomicU64::new(0),
        }
    }
}

impl Health {
    pub(super) fn now_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    pub(super) fn answered(&self, status: u16) {
        self.last_answer_ms.store(Self::now_ms(), Ordering::Relaxed);
        self.last_status.store(status, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub(super) fn unanswered(&self, error: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }

    /// Why the last attempt got no HTTP answer, while no answer came since.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How long the upstream has given no HTTP answer, counted from the last answer or, before
    /// the first one, from the start; `None` while it answered within `window`.
    pub fn unavailable_for(&self, window: Duration) -> Option<Duration> {
        let last = self
            .last_answer_ms
            .load(Ordering::Relaxed)
            .max(self.since_ms);
        let silent = Duration::from_millis(Self::now_ms().saturating_sub(last));
        (silent > window).then_some(silent)
    }

    pub(super) fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        *self.rejection.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Batches (or parts of batches) the upstream accepted since the start.
    pub fn accepted_total(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    pub(super) fn rejected(&self, status: u16, message: &str) {
        *self.rejection.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((status, message.to_string()));
    }

    /// The upstream's last refusal (401, 403 or another 4xx) and its message, until a batch is
    /// accepted again.
    pub fn rejection(&self) -> Option<(u16, String)> {
        self.rejection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the upstream gave any HTTP answer within `window`.
    pub fn answered_within(&self, window: Duration) -> bool {
        let at = self.last_answer_ms.load(Ordering::Relaxed);
        at != 0 && Self::now_ms().saturating_sub(at) <= window.as_millis() as u64
    }

    /// The last HTTP status the upstream answered (0: none yet).
    pub fn last_status(&self) -> u16 {
        self.last_status.load(Ordering::Relaxed)
    }
}
