//! What the decoders accept: the decoded size, the added `cluster` label and the per-request
//! and per-series limits.

/// Decoding options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Largest decoded (decompressed) body accepted, checked against the snappy header before
    /// anything is allocated.
    pub max_decoded_bytes: usize,
    /// When set, series without a `cluster` label get `cluster="<value>"` (what Azure's
    /// sidecar does with `CLUSTER`).
    pub cluster: Option<String>,
    /// Per-request and per-series limits.
    pub limits: Limits,
    /// `write_relabel_configs`: run over every series after validation (and after `cluster`
    /// is added); `None` or empty: every series goes as it came.
    pub relabel: Option<std::sync::Arc<crate::Relabel>>,
    /// The cache of label sections the scan found valid (`series_cache_bytes`): remote write
    /// 1.0 series found in it skip the per-label checks. Not used while `relabel` is set (its
    /// own cache holds every series then). `None`: every series is scanned in full.
    pub series_cache: Option<std::sync::Arc<crate::SeriesCache>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_decoded_bytes: 64 << 20,
            cluster: None,
            limits: Limits::default(),
            relabel: None,
            series_cache: None,
        }
    }
}

/// Limits on what one request may hold. Azure Monitor documents 63 labels per series, label
/// names up to 511 characters and values up to 1023 for its scraping pipeline; the defaults
/// follow them so a series Azure would refuse is caught at the edge, with a clear message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most series in one request.
    pub max_series: usize,
    /// Most labels in one series (the metric name included).
    pub max_labels: usize,
    /// Longest label name, bytes.
    pub max_name_len: usize,
    /// Longest label value, bytes.
    pub max_value_len: usize,
    /// Most samples plus histogram samples in one series of one request.
    pub max_samples_per_series: usize,
    /// Drop a series that breaks a label limit (counted) instead of refusing the request.
    pub drop_over_limit: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_series: 200_000,
            max_labels: 63,
            max_name_len: 511,
            max_value_len: 1023,
            max_samples_per_series: 100_000,
            drop_over_limit: false,
        }
    }
}

impl Limits {
    /// A hash of the label limits, which decide whether a label set is valid: the caches mix
    /// it into their keys, so that an answer is only reused under the limits it was found
    /// under.
    pub(crate) fn fingerprint(&self) -> u64 {
        use std::hash::Hasher;
        let mut h = rustc_hash::FxHasher::default();
        for v in [
            self.max_labels,
            self.max_name_len,
            self.max_value_len,
            usize::from(self.drop_over_limit),
        ] {
            h.write_usize(v);
        }
        h.finish()
    }

    /// The first label limit `labels` breaks, as a rule for an error message.
    pub(crate) fn check_labels<'a>(
        &self,
        labels: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Option<String> {
        if labels.len() > self.max_labels {
            return Some(format!(
                "{} labels, over the limit of {}",
                labels.len(),
                self.max_labels
            ));
        }
        for (n, v) in labels {
            if n.len() > self.max_name_len {
                return Some(format!(
                    "label name {:?}... is {} bytes, over the limit of {}",
                    String::from_utf8_lossy(&n[..32.min(n.len())]),
                    n.len(),
                    self.max_name_len
                ));
            }
            if v.len() > self.max_value_len {
                return Some(format!(
                    "value of label {:?} is {} bytes, over the limit of {}",
                    String::from_utf8_lossy(&n[..64.min(n.len())]),
                    v.len(),
                    self.max_value_len
                ));
            }
        }
        None
    }
}
