//! A running summary of an assignment stream: counts per cluster, outlier rate and the most
//! recent outliers. Its memory is fixed when it is created (`k` counters and a ring of `R`
//! events), so a device can keep one for as long as it runs and report it upstream.

use alloc::{string::String, vec, vec::Vec};

use heapless::HistoryBuf;
use serde::{Deserialize, Serialize};

use crate::Assignment;

/// One flagged sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierEvent {
    /// Position of the sample in the stream.
    pub index: u64,
    /// Nearest cluster.
    pub cluster: u32,
    /// Its outlier score (the model's score: distance, Mahalanobis distance or neighbour distance).
    pub score: f32,
}

/// Counts of an assignment stream, with the last `R` outliers.
#[derive(Debug, Clone)]
pub struct Summary<const R: usize = 16> {
    counts: Vec<u64>,
    outliers: Vec<u64>,
    rejected: u64,
    recent: HistoryBuf<OutlierEvent, R>,
}

impl<const R: usize> Summary<R> {
    /// An empty summary for `k` clusters.
    pub fn new(k: usize) -> Self {
        Self {
            counts: vec![0; k],
            outliers: vec![0; k],
            rejected: 0,
            recent: HistoryBuf::new(),
        }
    }

    /// Records the assignment of sample `index`. A cluster id beyond `k` (a model swapped for
    /// a larger one without a new summary) is counted as rejected rather than dropped silently.
    pub fn record(&mut self, index: u64, a: &Assignment) {
        let c = a.cluster as usize;
        let (Some(count), Some(out)) = (self.counts.get_mut(c), self.outliers.get_mut(c)) else {
            self.rejected += 1;
            return;
        };
        *count += 1;
        if a.outlier {
            *out += 1;
            self.recent.write(OutlierEvent {
                index,
                cluster: a.cluster,
                score: a.score,
            });
        }
    }

    /// Records a sample that could not be assigned (bad row, wrong length, NaN).
    pub fn record_rejected(&mut self) {
        self.rejected += 1;
    }

    /// Samples assigned to each cluster.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// Outliers per cluster.
    pub fn outlier_counts(&self) -> &[u64] {
        &self.outliers
    }

    /// Samples assigned.
    pub fn assigned(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Samples rejected.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Fraction of assigned samples flagged as outliers (0 when none were assigned).
    pub fn outlier_rate(&self) -> f64 {
        let n = self.assigned();
        if n == 0 {
            0.0
        } else {
            self.outliers.iter().sum::<u64>() as f64 / n as f64
        }
    }

    /// The counters, tagged with the model they were counted with: what a device reports to
    /// the server (`dekm-edge assign --stats-out` writes it as JSON, `dekm-edge sync --stats`
    /// sends it).
    pub fn counters(&self, model_id: &str) -> Counters {
        Counters {
            model_id: model_id.into(),
            counts: self.counts.clone(),
            outliers: self.outliers.clone(),
            rejected: self.rejected,
        }
    }

    /// The last (up to `R`) outliers, oldest first.
    pub fn recent_outliers(&self) -> impl Iterator<Item = &OutlierEvent> {
        self.recent.oldest_ordered()
    }
}

/// Cumulative counters of one device with one model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// The model (bundle id) that assigned the samples.
    pub model_id: String,
    /// Samples per cluster.
    pub counts: Vec<u64>,
    /// Outliers per cluster.
    pub outliers: Vec<u64>,
    /// Samples that could not be assigned.
    pub rejected: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(cluster: u32, outlier: bool) -> Assignment {
        Assignment {
            cluster,
            distance: cluster as f32,
            margin: 1.0,
            score: cluster as f32,
            outlier,
        }
    }

    #[test]
    fn counts_rates_and_a_bounded_ring_of_recent_outliers() {
        let mut s = Summary::<2>::new(3);
        assert_eq!(s.outlier_rate(), 0.0);
        for (i, (c, o)) in [(0, false), (1, true), (1, false), (2, true), (0, true)]
            .into_iter()
            .enumerate()
        {
            s.record(i as u64, &a(c, o));
        }
        s.record(5, &a(7, false));
        s.record_rejected();
        assert_eq!(s.counts(), [2, 2, 1]);
        assert_eq!(s.outlier_counts(), [1, 1, 1]);
        assert_eq!((s.assigned(), s.rejected()), (5, 2));
        assert!((s.outlier_rate() - 0.6).abs() < 1e-12);
        let recent: Vec<u64> = s.recent_outliers().map(|e| e.index).collect();
        assert_eq!(recent, [3, 4], "ring keeps the last R, oldest first");
    }
}
