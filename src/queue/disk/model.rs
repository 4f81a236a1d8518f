//! Model-based test: random pushes, pops, acknowledgements, syncs, crashes (with an optional
//! torn last record) and clean reopens, checked against a model of what each shard must hold.
//!
//! The model of a shard is the list of every entry pushed to it, the queue's acknowledged
//! position in it (`ack`), and a lower bound of the durable one (`durable`: set by `sync` or a
//! clean close). After a crash the queue may resume anywhere in `durable..=ack` (duplicates
//! of acknowledged batches are allowed, loss is not) and must then return every later entry,
//! in order; only a torn last record may be missing, and only when the test tore it. Until the
//! first pop after a crash shows where the shard resumed, its `ack` is only known to lie in
//! `durable..=ack_hi`.

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

use super::tests::{entry, id, limits};
use super::*;

#[derive(Clone, Debug)]
enum Op {
    /// One request: (shard_key, samples, byte length) per entry.
    Push(Vec<(u64, u32, usize)>),
    /// Pop one batch of `shard` with this sample limit; acknowledge it or leave it in flight.
    Pop {
        shard: usize,
        max_samples: usize,
        ack: bool,
    },
    Sync,
    /// Drop without syncing; optionally cut the last record of shard `.0` by a fraction `.1`.
    Crash(Option<(usize, f64)>),
    /// Clean close and reopen.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec((0u64..8, 1u32..4, 0usize..120), 1..6).prop_map(Op::Push),
        4 => (0usize..3, 1usize..6, prop::bool::weighted(0.8))
            .prop_map(|(shard, max_samples, ack)| Op::Pop { shard, max_samples, ack }),
        1 => Just(Op::Sync),
        2 => prop::option::of((0usize..3, 0.0f64..1.0)).prop_map(Op::Crash),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Default)]
struct ShardModel {
    /// Ids of every entry pushed to the shard and not torn away, in order.
    log: Vec<u64>,
    /// The queue's acknowledged position, when known.
    ack: Option<usize>,
    /// Upper bound of the acknowledged position while it is unknown.
    ack_hi: usize,
    durable: usize,
    /// Index in `log` of the next entry a pop returns; `None` after a crash until the first
    /// pop shows where the queue resumed.
    cursor: Option<usize>,
    /// The last record written: where its entries start in `log`, how many, its size.
    last_record: Option<(usize, usize, u64)>,
}

struct Harness {
    cfg: DiskQueueConfig,
    queue: Option<DiskQueue>,
    shards: Vec<ShardModel>,
    next_id: u64,
}

impl Harness {
    fn queue(&self) -> &DiskQueue {
        self.queue.as_ref().expect("queue open")
    }

    fn reopen(&mut self) -> RecoveryReport {
        let (q, report) = DiskQueue::open(self.cfg.clone()).expect("reopen");
        self.queue = Some(q);
        report
    }

    /// Checks a recovery report against the model, after `cursor`s were reset.
    fn check_report(&self, report: &RecoveryReport, torn: bool) -> Result<(), TestCaseError> {
        let most: usize = self.shards.iter().map(|s| s.log.len() - s.durable).sum();
        let least: usize = self.shards.iter().map(|s| s.log.len() - s.ack_hi).sum();
        let replayed = report.replayed_chunks as usize;
        prop_assert!(
            (least..=most).contains(&replayed),
            "replayed {replayed}, expected {least}..={most}"
        );
        prop_assert_eq!(report.truncated_tail, torn);
        prop_assert_eq!(report.corrupt_records.len(), usize::from(torn));
        Ok(())
    }

    async fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        let n = self.shards.len();
        match op {
            Op::Push(spec) => {
                let mut entries = Vec::new();
                let mut per_shard: Vec<Vec<u64>> = vec![Vec::new(); n];
                for (key, samples, len) in spec {
                    let i = self.next_id;
                    self.next_id += 1;
                    per_shard[(key % n as u64) as usize].push(i);
                    entries.push(entry(key, i, samples, len));
                }
                let sizes: Vec<u64> = (0..n)
                    .map(|s| {
                        let list: Vec<Chunk> = entries
                            .iter()
                            .filter(|e| e.shard % n == s)
                            .cloned()
                            .collect();
                        if list.is_empty() {
                            0
                        } else {
                            segment::encode_record(0, &list).len() as u64
                        }
                    })
                    .collect();
                self.queue()
                    .push(entries)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("push failed: {e}")))?;
                for (s, ids) in per_shard.into_iter().enumerate() {
                    if ids.is_empty() {
                        continue;
                    }
                    let m = &mut self.shards[s];
                    m.last_record = Some((m.log.len(), ids.len(), sizes[s]));
                    m.log.extend(ids);
                }
            }
            Op::Pop {
                shard,
                max_samples,
                ack,
            } => {
                let shard = shard % n;
                let has = self.queue().has_unread(shard);
                let m = &self.shards[shard];
                if let Some(c) = m.cursor {
                    prop_assert_eq!(has, c < m.log.len(), "shard {} unread", shard);
                }
                if !has {
                    return Ok(());
                }
                let b = self
                    .queue()
                    .pop_batch(shard, &limits(max_samples, Duration::ZERO))
                    .await
                    .expect("data waits");
                let got: Vec<u64> = b.chunks.iter().map(id).collect();
                prop_assert!(!got.is_empty());
                let m = &mut self.shards[shard];
                let start = match m.cursor {
                    Some(c) => c,
                    None => {
                        // First pop after a crash: where did the queue resume?
                        let at = m.log.iter().position(|&x| x == got[0]);
                        prop_assert!(at.is_some(), "unknown entry {} in shard {}", got[0], shard);
                        let at = at.unwrap_or_default();
                        prop_assert!(
                            (m.durable..=m.ack_hi).contains(&at),
                            "shard {} resumed at {}, expected {}..={} (loss or replay of durable acks)",
                            shard, at, m.durable, m.ack_hi
                        );
                        m.ack = Some(at);
                        at
                    }
                };
                prop_assert!(start + got.len() <= m.log.len());
                prop_assert_eq!(
                    &got[..],
                    &m.log[start..start + got.len()],
                    "shard {}",
                    shard
                );
                m.cursor = Some(start + got.len());
                if ack {
                    self.queue().ack(shard, &b);
                    let m = &mut self.shards[shard];
                    m.ack = Some(start + got.len());
                }
            }
            Op::Sync => {
                self.queue()
                    .sync()
                    .await
                    .map_err(|e| TestCaseError::fail(format!("sync failed: {e}")))?;
                for m in &mut self.shards {
                    // An unknown position was persisted as it is: the bound stays.
                    m.durable = m.ack.unwrap_or(m.durable);
                }
            }
            Op::Crash(tear) => {
                if let Some(q) = self.queue.take() {
                    q.crash();
                }
                let mut torn = false;
                if let Some((shard, frac)) = tear {
                    let shard = shard % n;
                    let m = &mut self.shards[shard];
                    // Only a record none of whose entries were acknowledged may be torn.
                    if let Some((start, count, size)) = m.last_record {
                        if start >= m.ack.unwrap_or(m.ack_hi) && start + count == m.log.len() {
                            let cut = 1 + ((size - 1) as f64 * frac) as u64;
                            tear_last_segment(&self.cfg.dir.join(format!("shard-{shard}")), cut);
                            m.log.truncate(start);
                            m.last_record = None;
                            torn = true;
                        }
                    }
                }
                for m in &mut self.shards {
                    m.ack_hi = m.ack.unwrap_or(m.ack_hi);
                    m.ack = (m.durable == m.ack_hi).then_some(m.durable);
                    m.cursor = m.ack;
                }
                let report = self.reopen();
                self.check_report(&report, torn)?;
            }
            Op::Reopen => {
                drop(self.queue.take());
                for m in &mut self.shards {
                    if let Some(a) = m.ack {
                        m.durable = a;
                        m.ack_hi = a;
                    }
                    m.cursor = m.ack;
                }
                let report = self.reopen();
                self.check_report(&report, false)?;
            }
        }
        Ok(())
    }

    /// Drains every shard (acknowledging), checking each entry comes back exactly once more.
    async fn drain(&mut self) -> Result<(), TestCaseError> {
        for shard in 0..self.shards.len() {
            while self.queue().has_unread(shard) {
                self.apply(Op::Pop {
                    shard,
                    max_samples: 5,
                    ack: true,
                })
                .await?;
            }
            let m = &self.shards[shard];
            prop_assert_eq!(
                m.cursor.unwrap_or(m.ack_hi),
                m.log.len(),
                "shard {} drained",
                shard
            );
        }
        Ok(())
    }
}

/// Cuts `cut` bytes off the end of the shard's newest segment.
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
        shards in 1usize..4,
        always in any::<bool>(),
        small_segments in any::<bool>(),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DiskQueueConfig {
            dir: dir.path().to_path_buf(),
            shards,
            max_bytes: 1 << 30,
            segment_bytes: if small_segments { 1024 } else { 1 << 20 },
            fsync: if always { FsyncPolicy::Always } else { FsyncPolicy::Interval(Duration::from_secs(3600)) },
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut h = Harness {
                queue: None,
                shards: (0..shards).map(|_| ShardModel { cursor: Some(0), ack: Some(0), ..ShardModel::default() }).collect(),
                cfg,
                next_id: 0,
            };
            h.reopen();
            for op in ops {
                h.apply(op).await?;
            }
            // A final crash: everything unacknowledged must come back.
            h.apply(Op::Crash(None)).await?;
            h.drain().await
        })?;
    }
}
