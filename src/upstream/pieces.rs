//! The parts of a batch while it is sent: a batch starts as one part; a part is halved when
//! it is too large (413) or keeps failing while others get through (isolation), and held back
//! behind a failing part it shares a series with, so every series stays in order. Each batch
//! position is finished once every piece standing for it is delivered or dropped.

use std::collections::VecDeque;

use rustc_hash::FxHashSet;

use crate::codec::{Chunk, SeriesKey};

/// Whether `part` can be split: more than one piece, or one holding several messages.
pub(super) fn part_splittable(part: &[Piece]) -> bool {
    part.len() > 1
        || part
            .first()
            .is_some_and(|(_, c)| c.counts.series + c.counts.metadata > 1)
}

/// A chunk of a batch, or a piece of one, with the positions in the batch it stands for.
pub(super) type Piece = (Vec<usize>, Chunk);

/// Where a part of a batch stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Turn {
    /// A batch as taken, or a part split off for size or merged after a 422.
    Fresh,
    /// A half of a part isolated for failing while others were accepted: split again at its
    /// first failure if another batch was accepted since the split (the number is the
    /// accepted-batch count at the split), else retried with backoff like any batch (the
    /// whole upstream fails, not this half).
    Suspect(u64),
    /// The failing part that isolation came down to, sent again with backoff until delivered.
    Failing,
}

/// The parts of a batch still to send, and how many unsettled pieces stand for each position
/// of the batch.
pub(super) struct Pieces {
    /// Parts still to send, first first.
    parts: VecDeque<(Vec<Piece>, Turn)>,
    /// The failing part isolation came down to and the parts held back behind it (sharing a
    /// series with it or with each other), in order; sent once `parts` is empty.
    held: Vec<(Vec<Piece>, Turn)>,
    /// The series of `held`.
    held_keys: FxHashSet<SeriesKey>,
    /// Unsettled pieces per position; empty when positions are not tracked.
    open: Vec<u32>,
}

impl Pieces {
    pub(super) fn tracked(batch: Vec<Chunk>) -> Self {
        let open = vec![1; batch.len()];
        Self {
            parts: VecDeque::from([(
                batch
                    .into_iter()
                    .enumerate()
                    .map(|(i, c)| (vec![i], c))
                    .collect(),
                Turn::Fresh,
            )]),
            held: Vec::new(),
            held_keys: FxHashSet::default(),
            open,
        }
    }

    pub(super) fn untracked(batch: Vec<Chunk>) -> Self {
        Self {
            parts: VecDeque::from([(
                batch.into_iter().map(|c| (Vec::new(), c)).collect(),
                Turn::Fresh,
            )]),
            held: Vec::new(),
            held_keys: FxHashSet::default(),
            open: Vec::new(),
        }
    }

    /// Splits `part` in two halves, first half first: the order within a series is kept.
    pub(super) fn halve(&mut self, mut part: Vec<Piece>, turn: Turn) {
        let second = part.split_off(part.len() / 2);
        self.parts.push_front((second, turn));
        self.parts.push_front((part, turn));
    }

    /// Replaces a piece (a part of its own) by its two halves.
    pub(super) fn split_piece(
        &mut self,
        positions: Vec<usize>,
        first: Chunk,
        second: Chunk,
        turn: Turn,
    ) {
        for &i in &positions {
            if let Some(n) = self.open.get_mut(i) {
                *n += 1;
            }
        }
        self.parts
            .push_front((vec![(positions.clone(), second)], turn));
        self.parts.push_front((vec![(positions, first)], turn));
    }

    /// Replaces `part` by one chunk standing for all of it.
    pub(super) fn merge(&mut self, part: Vec<Piece>, kept: Chunk) {
        let mut positions: Vec<usize> = Vec::new();
        for (p, _) in part {
            for i in p {
                if positions.contains(&i) {
                    // Two pieces of one position become one: one fewer to settle.
                    if let Some(n) = self.open.get_mut(i) {
                        *n -= 1;
                    }
                } else {
                    positions.push(i);
                }
            }
        }
        self.parts
            .push_front((vec![(positions, kept)], Turn::Fresh));
    }

    /// Holds `part` back until the parts before it are sent (see [`Pieces::held`]).
    pub(super) fn hold(&mut self, part: Vec<Piece>, turn: Turn) {
        self.held_keys
            .extend(part.iter().flat_map(|(_, c)| c.keys.iter().copied()));
        self.held.push((part, turn));
    }

    /// Whether `part` shares a series with a part held back, so it must wait behind it.
    pub(super) fn behind_held(&self, part: &[Piece]) -> bool {
        !self.held.is_empty()
            && part
                .iter()
                .flat_map(|(_, c)| c.keys.iter())
                .any(|k| self.held_keys.contains(k))
    }

    /// The next part to send: from `parts`, then, once it is empty, what was held back.
    pub(super) fn next(&mut self) -> Option<(Vec<Piece>, Turn)> {
        if self.parts.is_empty() && !self.held.is_empty() {
            self.parts.extend(self.held.drain(..));
            self.held_keys.clear();
        }
        self.parts.pop_front()
    }

    /// Everything not sent yet with `current` (the part in hand, which shares no series with
    /// what was held back), in an order that keeps each series' data in order: what was held
    /// back is older than the later parts it shares series with.
    pub(super) fn take_rest(&mut self, current: Vec<Chunk>) -> Vec<Chunk> {
        let held = self.held.drain(..).flat_map(|(p, _)| p).map(|(_, c)| c);
        let mut rest: Vec<Chunk> = held.collect();
        rest.extend(current);
        rest.extend(self.parts.drain(..).flat_map(|(p, _)| p).map(|(_, c)| c));
        rest
    }

    /// Settles the pieces of `part`, handing the positions with no piece left to `finished`
    /// while other parts remain, held back ones included (the last part's positions finish
    /// with the batch).
    pub(super) fn settle(&mut self, part: &[Piece], finished: &mut (dyn FnMut(&[usize]) + Send)) {
        let mut done = Vec::new();
        for i in part.iter().flat_map(|(p, _)| p) {
            if let Some(n) = self.open.get_mut(*i) {
                *n -= 1;
                if *n == 0 {
                    done.push(*i);
                }
            }
        }
        let others_left = !self.parts.is_empty() || !self.held.is_empty();
        if others_left && !done.is_empty() {
            finished(&done);
        }
    }
}
