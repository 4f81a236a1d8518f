//! What a message, a chunk or a request holds: [`ChunkCounts`] for one message or chunk (what
//! batching limits and the disk queue's records carry), [`Counts`] for a whole request (what
//! the receiver's counters and the 2.0 `X-Prometheus-Remote-Write-*-Written` headers report).

/// What one message or chunk holds, for batching limits and counters. Stored with each chunk
/// in the disk queue, hence 32 bits a field (a chunk is cut at the batch limits).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChunkCounts {
    /// `TimeSeries` messages.
    pub series: u32,
    /// Float samples.
    pub samples: u32,
    /// Native histogram samples.
    pub histograms: u32,
    /// Exemplars.
    pub exemplars: u32,
    /// `MetricMetadata` messages.
    pub metadata: u32,
}

impl ChunkCounts {
    /// What one metadata message holds.
    pub const METADATA: ChunkCounts = ChunkCounts {
        series: 0,
        samples: 0,
        histograms: 0,
        exemplars: 0,
        metadata: 1,
    };

    /// Float samples plus histogram samples: what the per-request sample limit counts.
    pub fn points(&self) -> usize {
        self.samples as usize + self.histograms as usize
    }

    /// Adds `o`, saturating.
    pub(crate) fn add(&mut self, o: &ChunkCounts) {
        self.series = self.series.saturating_add(o.series);
        self.samples = self.samples.saturating_add(o.samples);
        self.histograms = self.histograms.saturating_add(o.histograms);
        self.exemplars = self.exemplars.saturating_add(o.exemplars);
        self.metadata = self.metadata.saturating_add(o.metadata);
    }
}

/// What one request held, for counters and the 2.0 `X-Prometheus-Remote-Write-*-Written` headers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Series entries.
    pub series: u64,
    /// Float samples.
    pub samples: u64,
    /// Native histogram samples.
    pub histograms: u64,
    /// Exemplars.
    pub exemplars: u64,
    /// Metadata entries.
    pub metadata: u64,
}

impl Counts {
    /// Whether it counts nothing.
    pub fn is_empty(&self) -> bool {
        *self == Counts::default()
    }

    /// Adds what one message holds.
    pub fn add(&mut self, c: &ChunkCounts) {
        self.series += u64::from(c.series);
        self.samples += u64::from(c.samples);
        self.histograms += u64::from(c.histograms);
        self.exemplars += u64::from(c.exemplars);
        self.metadata += u64::from(c.metadata);
    }
}
