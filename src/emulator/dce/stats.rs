//! What the emulator counts: every answer, and of accepted requests their data, per-series
//! timestamp order and (bounded) the requests themselves.

use std::collections::BTreeMap;

use axum::http::StatusCode;

use super::wire::Parsed;
use super::Shared;
use crate::loadgen::checksum::Checksum;
use crate::proto::v1::WriteRequest;

/// Counters of what the emulator saw and accepted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DceStats {
    /// Requests received, whatever happened to them.
    pub requests: u64,
    /// Requests accepted (data counted below), including
    /// [`Fault::AcceptThen`](super::Fault::AcceptThen) ones.
    pub accepted_requests: u64,
    /// Answers other than 200, by status (faults included).
    pub rejected: BTreeMap<u16, u64>,
    /// Faults served.
    pub faults: u64,
    /// Time series entries accepted.
    pub series: u64,
    /// Float samples accepted.
    pub samples: u64,
    /// Native histogram samples accepted.
    pub histograms: u64,
    /// Exemplars accepted.
    pub exemplars: u64,
    /// Metadata entries accepted.
    pub metadata: u64,
    /// Checksum of every accepted float sample.
    pub checksum: Checksum,
    /// Accepted samples older than the last one accepted for their series.
    pub out_of_order_samples: u64,
    /// Accepted samples with the same timestamp as the last one of their series (resends).
    pub repeated_timestamp_samples: u64,
    /// Distinct series seen.
    pub distinct_series: u64,
    /// Compressed body bytes of accepted requests.
    pub body_bytes: u64,
    /// Accepted requests dropped from the bounded store.
    pub dropped_records: u64,
    /// Writes answered 200 and dropped in silent-loss mode.
    pub silently_lost_requests: u64,
    /// Float samples of those writes.
    pub silently_lost_samples: u64,
    /// Checksum of those samples (with [`DceStats::checksum`], everything answered 200).
    pub silently_lost_checksum: Checksum,
    /// New series not kept for queries (the store held `keep_series`).
    pub query_series_refused: u64,
    /// Requests to the query API, whatever the answer.
    pub queries: u64,
    /// Samples of promlink's canary (`promlink_canary`) accepted: counted here only, not in
    /// `samples` or `checksum`.
    pub canary_samples: u64,
}

/// Counts an answer other than 200.
pub(super) fn count_rejection(shared: &Shared, status: StatusCode) {
    *shared
        .lock()
        .stats
        .rejected
        .entry(status.as_u16())
        .or_default() += 1;
}

/// Counts an accepted request of `body_bytes` compressed bytes, tracks the order of its
/// samples per series, keeps the latest sample of its series for queries, and keeps `kept`
/// (dropping the oldest kept request when full). `kept` is the request decoded in full, when
/// the emulator keeps requests or series.
pub(super) fn record_accepted(
    shared: &Shared,
    parsed: &Parsed,
    kept: Option<WriteRequest>,
    body_bytes: usize,
) {
    let mut checksum = Checksum::new();
    for &(i, t, bits) in &parsed.samples {
        checksum.add(parsed.series[i as usize], t, f64::from_bits(bits));
    }
    if let Some(arrivals) = &shared.arrivals {
        let samples = parsed.samples.iter();
        arrivals.record(
            samples.map(|&(i, t, _)| (parsed.series[i as usize], t)),
            std::time::Instant::now(),
        );
    }
    let mut data = shared.lock();
    let stats_before = data.stats.distinct_series;
    let mut distinct_new = 0;
    let mut ooo = 0;
    let mut repeated = 0;
    for (i, t) in parsed.points() {
        let h = parsed.series[i as usize];
        match data.last_ts.entry(h) {
            std::collections::hash_map::Entry::Vacant(v) => {
                distinct_new += 1;
                v.insert(t);
            }
            std::collections::hash_map::Entry::Occupied(mut o) => {
                let last = *o.get();
                if t < last {
                    ooo += 1;
                } else if t == last {
                    repeated += 1;
                } else {
                    o.insert(t);
                }
            }
        }
    }
    let stats = &mut data.stats;
    stats.accepted_requests += 1;
    stats.canary_samples += parsed.canary_samples;
    stats.series += parsed.series.len() as u64;
    stats.samples += parsed.samples.len() as u64;
    stats.histograms += parsed.histograms.len() as u64;
    stats.exemplars += parsed.exemplars;
    stats.metadata += parsed.metadata;
    stats.checksum.merge(&checksum);
    stats.out_of_order_samples += ooo;
    stats.repeated_timestamp_samples += repeated;
    stats.distinct_series = stats_before + distinct_new;
    stats.body_bytes += body_bytes as u64;
    if let Some(request) = kept {
        if shared.keep_series > 0 {
            let refused = data.latest.record(&request, shared.keep_series);
            data.stats.query_series_refused += refused;
        }
        if shared.keep == 0 {
            return;
        }
        if data.accepted.len() >= shared.keep {
            data.accepted.pop_front();
            data.stats.dropped_records += 1;
        }
        data.accepted.push_back(request);
    }
}
