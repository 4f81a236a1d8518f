//! Model-based test: random pushes, pops, out-of-order finishes, syncs, crashes (with an
//! optional torn last record) and clean reopens, checked against a model of the log.
//!
//! The model is the list of every chunk pushed (id and series key), each with a state. Pops
//! must return chunks that wait, never one whose series has an earlier chunk waiting or in
//! flight (per-series order), and never one twice in a process's life. After a crash or
//! reopen, the queue resumes at a read position the model knows only within bounds: at least
//! where it was last made durable, at most where the finished prefix ends. Everything past
//! that upper bound must come back (finished or not: batches finish out of order, and the
//! position is a prefix); chunks between the bounds may come back, and if one does, so must
//! every later one (a replay is a suffix), without overtaking an earlier chunk of its series.
//! Only a torn last record may be lost, and only when the test tore it.

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

use super::tests::{entry, id};
use super::*;

#[derive(Clone, Debug)]
enum Op {
    /// One request: (series key, samples, byte length) per chunk.
    Push(Vec<(u64, u32, usize)>),
    /// Pop one batch with this sample limit; finish it at once or leave it in flight.
    Pop {
        max_samples: usize,
        finish: bool,
    },
    /// Finish the in-flight batch at this index (modulo their number).
    Finish(usize),
    Sync,
    /// Drop without syncing; optionally cut the last record by a fraction.
    Crash(Option<f64>),
    /// Clean close and reopen.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec((0u64..6, 1u32..4, 0usize..120), 1..4).prop_map(Op::Push),
        4 => (1usize..6, prop::bool::weighted(0.6))
            .prop_map(|(max_samples, finish)| Op::Pop { max_samples, finish }),
        2 => (0usize..8).prop_map(Op::Finish),
        1 => Just(Op::Sync),
        2 => prop::option::of(0.0f64..1.0).prop_map(Op::Crash),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Must come (again).
    Waiting,
    /// Before the unknown resume point or after it: may come once, or not at all.
    Maybe,
    /// Was `Maybe` when a later chunk of its series came: must not come any more.
    Forbidden,
    InFlight,
    Finished,
}

struct Harness {
    cfg: DiskQueueConfig,
    queue: Option<DiskQueue>,
    /// (id, key, state) per chunk, in log order.
    log: Vec<(u64, u64, State)>,
    /// Lower bound of the durable read position (an index in `log`).
    durable: usize,
    /// The last record: where its chunks start in `log`, how many, its size.
    last_record: Option<(usize, usize, u64)>,
    inflight: Vec<Batch>,
    next_id: u64,
}

impl Harness {
    fn queue(&self) -> &DiskQueue {
        self.queue.as_ref().expect("queue open")
    }

    fn index(&self, id: u64) -> Option<usize> {
        self.log.iter().position(|(i, _, _)| *i == id)
    }

    /// Where the finished prefix ends, counting uncertain chunks as finished (`upper`) or not.
    fn prefix(&self, upper: bool) -> usize {
        self.log
            .iter()
            .position(|(_, _, s)| match s {
                // A forbidden chunk lies before this life's resume point: finished.
                State::Finished | State::Forbidden => false,
                State::Maybe => !upper,
                _ => true,
            })
            .unwrap_or(self.log.len())
    }

    /// The model after the process stops: the queue resumes somewhere in `durable..=upper`.
    fn restart(&mut self) {
        let upper = self.prefix(true);
        for (i, (_, _, s)) in self.log.iter_mut().enumerate() {
            *s = if i >= upper {
                State::Waiting
            } else if i >= self.durable {
                State::Maybe
            } else {
                State::Finished
            };
        }
        self.inflight.clear();
    }

    fn reopen(&mut self, torn: bool) -> Result<(), TestCaseError> {
        let (q, report) = open_again(&self.cfg);
        self.queue = Some(q);
        let must = self.log.iter().filter(|e| e.2 == State::Waiting).count();
        let may = self.log.iter().filter(|e| e.2 == State::Maybe).count();
        let replayed = report.replayed_chunks as usize;
        prop_assert!(
            (must..=must + may).contains(&replayed),
            "replayed {replayed}, expected {must}..={}",
            must + may
        );
        prop_assert_eq!(report.truncated_tail, torn);
        prop_assert_eq!(report.corrupt_records.len(), usize::from(torn));
        Ok(())
    }

    async fn pop(&mut self, max_samples: usize) -> Result<Option<Batch>, TestCaseError> {
        let l = super::tests::limits(max_samples, Duration::ZERO);
        let Ok(Some(b)) =
            tokio::time::timeout(Duration::from_millis(100), self.queue().pop_batch(&l)).await
        else {
            return Ok(None);
        };
        let got: Vec<u64> = b.chunks.iter().map(id).collect();
        for (n, &c) in got.iter().enumerate() {
            let k = self.index(c);
            prop_assert!(k.is_some(), "unknown chunk {}", c);
            let k = k.unwrap_or_default();
            let (_, key, state) = self.log[k];
            prop_assert!(
                matches!(state, State::Waiting | State::Maybe),
                "chunk {} came while {:?}",
                c,
                state
            );
            if state == State::Maybe {
                // Replayed: so is every later chunk.
                for e in &mut self.log[k + 1..] {
                    prop_assert!(
                        e.2 != State::Forbidden,
                        "a replay overtook chunk {} of its series",
                        e.0
                    );
                    if e.2 == State::Maybe {
                        e.2 = State::Waiting;
                    }
                }
            }
            for e in 0..k {
                let (eid, ekey, estate) = self.log[e];
                if ekey != key || got[..n].contains(&eid) {
                    continue;
                }
                match estate {
                    State::Finished | State::Forbidden => {}
                    State::Maybe => self.log[e].2 = State::Forbidden,
                    other => prop_assert!(
                        false,
                        "chunk {} of series {} left before chunk {} ({:?})",
                        c,
                        key,
                        eid,
                        other
                    ),
                }
            }
            self.log[k].2 = State::InFlight;
        }
        Ok(Some(b))
    }

    fn finish(&mut self, b: Batch) {
        for c in &b.chunks {
            if let Some(k) = self.index(id(c)) {
                self.log[k].2 = State::Finished;
            }
        }
        self.queue().done(b);
    }

    async fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Push(spec) => {
                let start = self.log.len();
                let mut chunks = Vec::new();
                for (key, samples, len) in spec {
                    let i = self.next_id;
                    self.next_id += 1;
                    self.log.push((i, key, State::Waiting));
                    chunks.push(entry(key, i, samples, len));
                }
                let size = segment::encode_record(0, &chunks).len() as u64;
                self.last_record = Some((start, chunks.len(), size));
                self.queue().push(chunks).await.expect("push");
            }
            Op::Pop {
                max_samples,
                finish,
            } => {
                if let Some(b) = self.pop(max_samples).await? {
                    if finish {
                        self.finish(b);
                    } else {
                        self.inflight.push(b);
                    }
                }
            }
            Op::Finish(i) => {
                if !self.inflight.is_empty() {
                    let b = self.inflight.remove(i % self.inflight.len());
                    self.finish(b);
                }
            }
            Op::Sync => {
                self.queue().sync().await.expect("sync");
                self.durable = self.prefix(false);
            }
            Op::Crash(tear) => {
                for b in std::mem::take(&mut self.inflight) {
                    drop(b);
                }
                self.queue.take().expect("open").crash();
                let mut torn = false;
                if let (Some(frac), Some((start, count, size))) = (tear, self.last_record) {
                    // Only a record none of whose chunks finished, and the last one written.
                    let untouched = self.log[start..start + count]
                        .iter()
                        .all(|e| matches!(e.2, State::Waiting | State::InFlight));
                    if untouched && start + count == self.log.len() {
                        tear_last_segment(
                            &self.cfg.dir.join("log"),
                            1 + ((size - 1) as f64 * frac) as u64,
                        );
                        self.log.truncate(start);
                        torn = true;
                    }
                }
                self.last_record = None;
                self.restart();
                self.reopen(torn)?;
            }
            Op::Reopen => {
                for b in std::mem::take(&mut self.inflight) {
                    drop(b);
                }
                drop(self.queue.take());
                self.durable = self.prefix(false);
                self.last_record = None;
                self.restart();
                self.reopen(false)?;
            }
        }
        Ok(())
    }

    /// Finishes what is in flight, then drains the queue, checking every chunk that must come
    /// back does, exactly once more.
    async fn drain(&mut self) -> Result<(), TestCaseError> {
        for b in std::mem::take(&mut self.inflight) {
            self.finish(b);
        }
        while self.queue().has_unread() {
            let b = self.pop(5).await?;
            prop_assert!(b.is_some(), "nothing in flight, yet nothing to pop");
            if let Some(b) = b {
                self.finish(b);
            }
        }
        let missing: Vec<u64> = self
            .log
            .iter()
            .filter(|e| e.2 == State::Waiting)
            .map(|e| e.0)
            .collect();
        prop_assert!(missing.is_empty(), "lost: {:?}", missing);
        prop_assert_eq!(self.queue().used_bytes(), 0);
        prop_assert_eq!(self.queue().stats().records, 0);
        Ok(())
    }
}

/// Cuts `cut` bytes off the end of the newest segment.
/// Opens the queue the harness just closed. Under `cargo test`, other tests of this process
/// run in threads, and one that starts a program (`mount`, in the disk-full test) gives the
/// child a copy of every open descriptor until it execs: the closed queue's lock can stay held
/// for those moments, and the open is refused as "in use". That only is retried, for a second.
fn open_again(cfg: &DiskQueueConfig) -> (DiskQueue, super::RecoveryReport) {
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        match DiskQueue::open(cfg.clone()) {
            Err(DiskQueueError::Config(why))
                if why.contains("in use") && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other.expect("reopen"),
        }
    }
}

fn tear_last_segment(dir: &Path, cut: u64) {
    let last = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .max()
        .unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len - cut).unwrap();
}

proptest! {
    // Failing seeds are kept beside this file (`model.regressions`), not in a crate-wide folder.
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn recovered_content_matches_the_model(
        always in any::<bool>(),
        small_segments in any::<bool>(),
        small_window in any::<bool>(),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DiskQueueConfig {
            dir: dir.path().to_path_buf(),
            max_bytes: 1 << 30,
            segment_bytes: if small_segments { 1024 } else { 1 << 20 },
            fsync: if always { FsyncPolicy::Always } else { FsyncPolicy::Interval(Duration::from_secs(3600)) },
            // Under `always`, commits right after another wait a little (`commit_delay`).
            commit_delay: if always { Duration::from_micros(200) } else { Duration::ZERO },
            recent_commit: super::RECENT_COMMIT,
            window_bytes: if small_window { 200 } else { 1 << 20 },
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut h = Harness {
                queue: None,
                log: Vec::new(),
                durable: 0,
                last_record: None,
                inflight: Vec::new(),
                cfg,
                next_id: 0,
            };
            h.reopen(false)?;
            for op in ops {
                h.apply(op).await?;
            }
            // A final crash: everything unfinished must come back.
            h.apply(Op::Crash(None)).await?;
            h.drain().await
        })?;
    }
}
