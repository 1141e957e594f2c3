//! How long decide messages take, from the host handing a delivery to the core to the
//! core acking it (after its reply, and any assignment, was confirmed): the SLI of the
//! decide latency SLO (docs/OPERATIONS.md, "Alerts"). Measured on the host's clock, so
//! the simulator runs the same bookkeeping on its virtual clock.
//!
//! A fixed-bucket histogram: bounded memory, Prometheus' cumulative shape on export.

use serde::Serialize;

/// Upper bounds of the buckets, in milliseconds; a last, unbounded one follows.
pub const DURATION_BUCKETS_MS: [u64; 14] = [
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000,
];

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DurationHistogram {
    /// Counts per bucket of `DURATION_BUCKETS_MS`, not cumulative; the last is `+Inf`.
    pub counts: [u64; DURATION_BUCKETS_MS.len() + 1],
    pub sum_ms: u64,
}

impl DurationHistogram {
    pub fn observe(&mut self, ms: u64) {
        let bucket = DURATION_BUCKETS_MS
            .iter()
            .position(|&le| ms <= le)
            .unwrap_or(DURATION_BUCKETS_MS.len());
        self.counts[bucket] += 1;
        self.sum_ms = self.sum_ms.saturating_add(ms);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_duration_lands_in_the_first_bucket_that_holds_it() {
        let mut h = DurationHistogram::default();
        for ms in [0, 1, 2, 3, 30_000, 30_001] {
            h.observe(ms);
        }
        assert_eq!(h.counts[0], 2, "0 and 1 ms");
        assert_eq!(h.counts[1], 1, "2 ms");
        assert_eq!(h.counts[2], 1, "3 ms goes to <= 5");
        assert_eq!(h.counts[13], 1, "30 s");
        assert_eq!(h.counts[14], 1, "beyond the last bound");
        assert_eq!((h.count(), h.sum_ms), (6, 60_007));
    }
}
