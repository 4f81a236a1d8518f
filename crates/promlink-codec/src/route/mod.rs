//! Routing on the receive path: after validation and the global rules, each series is offered
//! to the routes in order. The first route whose selector matches it takes it (a route without
//! a selector takes everything that reaches it); with `continue`, the later routes are offered
//! it too. A route's own rules then run on it, and it goes into that route's chunks, cut at that
//! route's batch limits. Metadata goes to every route, as Prometheus sends it to every
//! `remote_write`.
//!
//! A route that takes every series of a 1.0 request unchanged gets the sender's compressed
//! body as its one chunk, as without routes: the chunk builders borrow unchanged pieces of the
//! decoded body and copy nothing until a message differs.

use std::sync::Arc;

pub mod budget;

use budget::SeriesBudget;

use bytes::Bytes;
use promlink_relabel::Selector;

use crate::batch::BatchLimits;
use crate::chunk::{Chunk, ChunkBuilder};
use crate::counts::{ChunkCounts, Counts};
use crate::error::DecodeError;
use crate::message::{labels_of_pieces, FIELD_METADATA, FIELD_TIMESERIES};
use crate::options::Options;
use crate::relabel::{relabel_pairs, Relabel, RelabelDrops, Relabeled};

/// One route, as the decoder sees it.
#[derive(Clone, Debug)]
pub struct RouteRule {
    /// Which series it takes; `None`: every series offered to it.
    pub selector: Option<Selector>,
    /// Whether the series it takes are offered to later routes too.
    pub continue_: bool,
    /// Its own rules, run on the series it takes.
    pub relabel: Option<Arc<Relabel>>,
    /// Where its chunks are cut (its upstream's batch limits).
    pub limits: BatchLimits,
    /// Over how many destinations (`ingestion_urls`) it spreads its series, each series
    /// always to the same one ([`spread_part`]); 1: one destination.
    pub spread: usize,
    /// Its series budget (`max_active_series`): a series it takes that the budget refuses is
    /// dropped and counted, and not offered to later routes (unless `continue_`).
    pub budget: Option<Arc<SeriesBudget>>,
}

/// Which of `n` destinations a series with shard key `key` goes to: always the same one for
/// the same labels.
pub fn spread_part(key: u64, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    // The key's high bits, mixed: the dispatcher uses its low bits for other choices.
    let mixed = (key ^ (key >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    ((mixed >> 32) % n as u64) as usize
}

impl RouteRule {
    /// A route that takes every series as it is.
    pub fn all(limits: BatchLimits) -> Self {
        Self {
            selector: None,
            continue_: false,
            relabel: None,
            limits,
            spread: 1,
            budget: None,
        }
    }
}

/// What one route got from a request.
#[derive(Debug, Default)]
pub struct RouteOutput {
    /// Its messages, in request order, in chunks.
    pub chunks: Vec<Chunk>,
    /// What they hold.
    pub counts: Counts,
    /// Series its own rules dropped.
    pub relabel: RelabelDrops,
    /// Series its own rules changed so that they break a label limit, dropped (with
    /// `drop_over_limit`).
    pub dropped_series: u64,
    /// Series (and their samples) its budget refused.
    pub over_budget: RelabelDrops,
}

/// A request decoded and routed.
#[derive(Debug, Default)]
pub struct Routed {
    /// One output per destination, in the order of the routes (a route spreading over `n`
    /// destinations has `n` outputs in a row).
    pub routes: Vec<RouteOutput>,
    /// What the request held after validation and the global rules.
    pub counts: Counts,
    /// Series dropped for breaking a label limit (with `drop_over_limit`).
    pub dropped_series: u64,
    /// Series the global rules removed.
    pub relabel: RelabelDrops,
    /// Series no route took, and their samples.
    pub unrouted: RelabelDrops,
}

/// Hands each message the walk accepts to the routes' builders.
pub(crate) struct RouteSink<'a> {
    rules: &'a [RouteRule],
    /// Where each route's outputs start in `builders` and `outputs`.
    first: Vec<usize>,
    /// Each route's budget time for this request (see [`SeriesBudget::now`]).
    now: Vec<u32>,
    /// Whether a route has a selector or rules, so each series' labels must be read.
    needs_labels: bool,
    opts: &'a Options,
    builders: Vec<ChunkBuilder<'a>>,
    outputs: Vec<RouteOutput>,
    unrouted: RelabelDrops,
    /// The first error of a route's rules (a label limit that refuses the request).
    error: Option<DecodeError>,
}

impl<'a> RouteSink<'a> {
    /// A sink for `rules` over the decoded body `source`.
    pub(crate) fn new(rules: &'a [RouteRule], opts: &'a Options, source: &'a [u8]) -> Self {
        let mut first = Vec::with_capacity(rules.len());
        let mut builders = Vec::with_capacity(rules.len());
        for r in rules {
            first.push(builders.len());
            builders.extend(
                (0..r.spread.max(1))
                    .map(|_| ChunkBuilder::new(source, r.limits.max_samples, r.limits.max_bytes)),
            );
        }
        Self {
            needs_labels: rules
                .iter()
                .any(|r| r.selector.is_some() || r.relabel.is_some()),
            now: rules
                .iter()
                .map(|r| r.budget.as_ref().map_or(0, |b| b.now()))
                .collect(),
            rules,
            opts,
            outputs: builders.iter().map(|_| RouteOutput::default()).collect(),
            builders,
            first,
            unrouted: RelabelDrops::default(),
            error: None,
        }
    }

    /// Finishes every route's chunks (`body`: the compressed 1.0 body `source` came from).
    pub(crate) fn finish(
        self,
        body: Option<&Bytes>,
    ) -> Result<(Vec<RouteOutput>, RelabelDrops), DecodeError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let mut outputs = self.outputs;
        for (b, out) in self.builders.into_iter().zip(&mut outputs) {
            out.chunks = b.finish(body);
        }
        Ok((outputs, self.unrouted))
    }

    /// One valid series, offered to the routes.
    pub(crate) fn series(&mut self, key: u64, pieces: &[&[u8]], counts: ChunkCounts, min_ts: i64) {
        if self.error.is_some() {
            return;
        }
        let labels = if self.needs_labels {
            match labels_of_pieces(pieces) {
                Ok(l) => l,
                Err(e) => {
                    self.error = Some(e);
                    return;
                }
            }
        } else {
            Vec::new()
        };
        let mut taken = false;
        for (i, rule) in self.rules.iter().enumerate() {
            if let Some(sel) = &rule.selector {
                let matched = sel.matches(|name| {
                    labels
                        .iter()
                        .find(|(n, _)| *n == name.as_bytes())
                        .and_then(|(_, v)| std::str::from_utf8(v).ok())
                });
                if !matched {
                    continue;
                }
            }
            taken = true;
            let (first, now) = (self.first[i], self.now[i]);
            // Within its budget, the series goes to one destination of the route, chosen by
            // its (final) key.
            let mut add = |key: u64, pieces: &[&[u8]]| {
                if let Some(budget) = &rule.budget {
                    if !budget.admit(key, now) {
                        let over = &mut self.outputs[first].over_budget;
                        over.series += 1;
                        over.samples += counts.points() as u64;
                        return;
                    }
                }
                let at = first + spread_part(key, rule.spread);
                self.builders[at].add(Some(key), FIELD_TIMESERIES, pieces, counts, min_ts);
                self.outputs[at].counts.add(&counts);
            };
            match &rule.relabel {
                None => add(key, pieces),
                Some(rules) => match relabel_pairs(rules, self.opts, &labels, pieces) {
                    Ok(Relabeled::Unchanged) => add(key, pieces),
                    Ok(Relabeled::Changed { bytes, key }) => add(key, &[&bytes]),
                    Ok(Relabeled::OverLimit) => self.outputs[first].dropped_series += 1,
                    Ok(other) => self.outputs[first].relabel.count(&other, counts.points()),
                    Err(e) => {
                        self.error = Some(e);
                        return;
                    }
                },
            }
            if !rule.continue_ {
                break;
            }
        }
        if !taken {
            self.unrouted.series += 1;
            self.unrouted.samples += counts.points() as u64;
        }
    }

    /// One metadata message: to every route.
    pub(crate) fn metadata(&mut self, bytes: &[u8]) {
        for (b, out) in self.builders.iter_mut().zip(&mut self.outputs) {
            b.add(
                None,
                FIELD_METADATA,
                &[bytes],
                ChunkCounts::METADATA,
                i64::MAX,
            );
            out.counts.metadata += 1;
        }
    }
}

#[cfg(test)]
mod tests;
