//! Intake backpressure (spec §8.7), computed from real measurements.
//!
//! Three overload signals, each compared with its threshold (strictly greater is
//! overloaded):
//! - `pending`: messages waiting in the JetStream consumer, as last reported by the shell;
//! - `latency_p95_ms`: the 95th percentile of the last `latency_window` processing times
//!   that are younger than `latency_max_age_ms`;
//! - `inflight`: messages the router holds right now, passed in by the caller.
//!
//! Two or more overloaded signals make the status `Active` (the gateway answers 429 with
//! `Retry-After`, and decide deliveries are NAKed unprocessed); exactly one is `Warning`;
//! none is `Inactive`. Upstream never fed these inputs, so its status was always
//! inactive (spec §15.29).
//!
//! The status is a pure function of the current measurements, with no hysteresis: the
//! gateway already caches it for 5 s and opens its own breaker only after more than
//! three consecutive `active` answers, and a p95 over 1000 samples moves slowly. A second
//! smoothing layer here would only delay recovery.
//!
//! Samples age out. While the status is `Active` every decide message is nak'ed unparsed,
//! so no new sample is recorded: without an age limit a p95 above the threshold would be
//! frozen, and with a second overloaded signal (a deep queue) the router would stay
//! active until every queued message was exhausted (the simulator's `backpressure_latch`,
//! `seeds/391.seed`). With the limit the p95 falls back to 0 once the slow samples are
//! `latency_max_age_ms` old, the level drops, messages are taken again and measured anew.
//!
//! The p95 is exact (nearest rank: the value at rank ceil(0.95 n) in ascending order).
//! Beside the ring of samples the module keeps a count per distinct value in a BTreeMap,
//! so a sample costs O(log n) and the p95 is read by walking down from the largest value
//! through the top 5 % only.

use std::collections::{BTreeMap, VecDeque};

use super::env::Time;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackpressureConfig {
    /// Pending messages above which the consumer is overloaded.
    pub queue_overload: u64,
    /// p95 processing latency above which the router is overloaded.
    pub latency_overload_ms: u64,
    /// In-flight messages above which the router is overloaded.
    pub inflight_overload: u64,
    /// What an `Active` status tells callers to wait (at least 1).
    pub retry_after_seconds: u64,
    /// Processing-time samples the p95 is taken over (at least 1).
    pub latency_window: usize,
    /// Samples older than this no longer count (at least 1).
    pub latency_max_age_ms: u64,
}

impl Default for BackpressureConfig {
    fn default() -> Self {
        BackpressureConfig {
            queue_overload: 1_000,
            latency_overload_ms: 5_000,
            inflight_overload: 500,
            retry_after_seconds: 30,
            latency_window: 1_000,
            latency_max_age_ms: 60_000,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Inactive,
    Warning,
    Active,
}

impl Level {
    /// The `status` field of the gateway protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Inactive => "inactive",
            Level::Warning => "warning",
            Level::Active => "active",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackpressureStatus {
    pub level: Level,
    pub pending: u64,
    pub inflight: u64,
    pub latency_p95_ms: u64,
    pub retry_after_seconds: u64,
    /// When `pending` was last reported; `None` if never (then `pending` is 0). Lets the
    /// shell see a stale figure instead of trusting it.
    pub pending_observed_at: Option<Time>,
}

#[derive(Clone, Debug)]
pub struct Backpressure {
    cfg: BackpressureConfig,
    /// The last `latency_window` processing times with when they were taken, oldest
    /// first.
    samples: VecDeque<(Time, u64)>,
    /// The same samples as value -> how many times it occurs.
    counts: BTreeMap<u64, u32>,
    pending: u64,
    pending_observed_at: Option<Time>,
}

impl Backpressure {
    pub fn new(cfg: BackpressureConfig) -> Self {
        let cfg = BackpressureConfig {
            retry_after_seconds: cfg.retry_after_seconds.max(1),
            latency_window: cfg.latency_window.max(1),
            latency_max_age_ms: cfg.latency_max_age_ms.max(1),
            ..cfg
        };
        Backpressure {
            samples: VecDeque::with_capacity(cfg.latency_window),
            counts: BTreeMap::new(),
            pending: 0,
            pending_observed_at: None,
            cfg,
        }
    }

    /// The thresholds in force (the gateway protocol reports them).
    pub fn config(&self) -> &BackpressureConfig {
        &self.cfg
    }

    /// Latency samples held (for a gauge; never more than `latency_window`).
    pub fn latency_samples(&self) -> usize {
        self.samples.len()
    }

    /// One message's processing time, taken `at`; the oldest sample leaves once the
    /// window is full.
    pub fn record_latency(&mut self, ms: u64, at: Time) {
        if self.samples.len() == self.cfg.latency_window {
            if let Some((_, oldest)) = self.samples.pop_front() {
                self.forget(oldest);
            }
        }
        self.samples.push_back((at, ms));
        *self.counts.entry(ms).or_insert(0) += 1;
    }

    /// Drop the samples `latency_max_age_ms` old or older. Cheap when there is nothing
    /// to drop: the router calls it on every input.
    pub fn expire(&mut self, now: Time) {
        while let Some(&(at, ms)) = self.samples.front() {
            if now.millis().saturating_sub(at.millis()) < self.cfg.latency_max_age_ms {
                break;
            }
            self.samples.pop_front();
            self.forget(ms);
        }
    }

    /// The consumer's pending count, as the shell last read it from the server.
    pub fn set_pending(&mut self, pending: u64, now: Time) {
        self.pending = pending;
        self.pending_observed_at = Some(now);
    }

    /// The nearest-rank 95th percentile of the window; 0 with no samples.
    pub fn latency_p95_ms(&self) -> u64 {
        let n = self.samples.len();
        if n == 0 {
            return 0;
        }
        let rank = (95 * n).div_ceil(100); // 1-based, ascending
        let mut from_top = n - rank + 1; // the same sample counted from the largest
        for (&value, &count) in self.counts.iter().rev() {
            if from_top <= count as usize {
                return value;
            }
            from_top -= count as usize;
        }
        0 // unreachable while `counts` mirrors `samples`
    }

    pub fn status(&self, in_flight: u64) -> BackpressureStatus {
        let latency_p95_ms = self.latency_p95_ms();
        let overloaded = [
            self.pending > self.cfg.queue_overload,
            latency_p95_ms > self.cfg.latency_overload_ms,
            in_flight > self.cfg.inflight_overload,
        ]
        .into_iter()
        .filter(|&flag| flag)
        .count();
        let level = match overloaded {
            0 => Level::Inactive,
            1 => Level::Warning,
            _ => Level::Active,
        };
        BackpressureStatus {
            level,
            pending: self.pending,
            inflight: in_flight,
            latency_p95_ms,
            retry_after_seconds: self.cfg.retry_after_seconds,
            pending_observed_at: self.pending_observed_at,
        }
    }

    fn forget(&mut self, ms: u64) {
        if let Some(count) = self.counts.get_mut(&ms) {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(&ms);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bp() -> Backpressure {
        Backpressure::new(BackpressureConfig::default())
    }

    #[test]
    fn quiet_router_is_inactive() {
        let b = bp();
        let s = b.status(0);
        assert_eq!(s.level, Level::Inactive);
        assert_eq!((s.pending, s.inflight, s.latency_p95_ms), (0, 0, 0));
        assert_eq!(s.retry_after_seconds, 30);
        assert_eq!(s.pending_observed_at, None);
    }

    #[test]
    fn one_signal_warns_and_thresholds_are_strict() {
        let mut b = bp();
        b.set_pending(1_000, Time(5));
        assert_eq!(
            b.status(500).level,
            Level::Inactive,
            "at the thresholds is fine"
        );
        b.set_pending(1_001, Time(6));
        let s = b.status(500);
        assert_eq!(
            (s.level, s.pending, s.pending_observed_at),
            (Level::Warning, 1_001, Some(Time(6)))
        );

        let b = bp();
        assert_eq!(b.status(501).level, Level::Warning);

        let mut b = bp();
        b.record_latency(5_001, Time(0));
        assert_eq!(b.status(0).level, Level::Warning);
        assert_eq!(b.status(0).latency_p95_ms, 5_001);
    }

    #[test]
    fn two_or_more_signals_are_active() {
        let mut b = bp();
        b.set_pending(1_200, Time(0));
        assert_eq!(b.status(501).level, Level::Active);
        for _ in 0..10 {
            b.record_latency(5_500, Time(0));
        }
        assert_eq!(b.status(0).level, Level::Active);
        assert_eq!(b.status(501).level, Level::Active);
        b.set_pending(0, Time(1));
        assert_eq!(b.status(0).level, Level::Warning);
        assert_eq!(b.status(501).level, Level::Active);
    }

    #[test]
    fn p95_is_nearest_rank() {
        let mut b = bp();
        for ms in 1..=100 {
            b.record_latency(ms, Time(0));
        }
        assert_eq!(b.latency_p95_ms(), 95);

        let mut b = bp();
        for ms in (1..=20).rev() {
            b.record_latency(ms * 10, Time(0));
        }
        assert_eq!(b.latency_p95_ms(), 190, "rank ceil(19) = 19");

        let mut b = bp();
        b.record_latency(7, Time(0));
        assert_eq!(b.latency_p95_ms(), 7);

        // 21 samples: rank ceil(19.95) = 20, the second largest.
        let mut b = bp();
        for ms in 1..=21 {
            b.record_latency(ms, Time(0));
        }
        assert_eq!(b.latency_p95_ms(), 20);

        // Duplicates: 90 fast, 10 slow -> rank 95 is slow.
        let mut b = bp();
        for i in 0..100 {
            b.record_latency(if i % 10 == 0 { 9_000 } else { 10 }, Time(0));
        }
        assert_eq!(b.latency_p95_ms(), 9_000);
    }

    #[test]
    fn the_window_rolls() {
        let mut b = Backpressure::new(BackpressureConfig {
            latency_window: 3,
            ..BackpressureConfig::default()
        });
        for ms in [9_000, 9_000, 9_000] {
            b.record_latency(ms, Time(0));
        }
        assert_eq!(b.status(0).level, Level::Warning);
        for ms in [1, 2, 3] {
            b.record_latency(ms, Time(0));
        }
        assert_eq!(b.latency_samples(), 3);
        assert_eq!(b.latency_p95_ms(), 3);
        assert_eq!(b.status(0).level, Level::Inactive);
        assert_eq!(b.counts.len(), 3, "old values are forgotten");
    }

    #[test]
    fn degenerate_config_is_clamped() {
        let b = Backpressure::new(BackpressureConfig {
            latency_window: 0,
            retry_after_seconds: 0,
            ..BackpressureConfig::default()
        });
        assert_eq!(b.config().latency_window, 1);
        assert_eq!(b.status(0).retry_after_seconds, 1);
        let mut b = b;
        b.record_latency(4, Time(0));
        b.record_latency(8, Time(0));
        assert_eq!((b.latency_samples(), b.latency_p95_ms()), (1, 8));
    }

    #[test]
    fn old_samples_stop_counting() {
        let mut b = bp();
        b.set_pending(1_200, Time(0));
        for _ in 0..10 {
            b.record_latency(9_000, Time(1_000));
        }
        assert_eq!(b.status(0).level, Level::Active);
        b.expire(Time(60_999));
        assert_eq!(b.status(0).level, Level::Active, "not yet a minute old");
        b.expire(Time(61_000));
        let s = b.status(0);
        assert_eq!((s.level, s.latency_p95_ms), (Level::Warning, 0));
        assert_eq!(b.latency_samples(), 0);
        assert!(b.counts.is_empty());
        b.record_latency(10, Time(61_000));
        b.record_latency(20, Time(90_000));
        b.expire(Time(121_000));
        assert_eq!((b.latency_samples(), b.latency_p95_ms()), (1, 20));
    }

    #[test]
    fn level_labels() {
        assert_eq!(Level::Active.as_str(), "active");
        assert_eq!(Level::Warning.as_str(), "warning");
        assert_eq!(Level::Inactive.as_str(), "inactive");
    }

    proptest! {
        /// The p95 equals the nearest-rank value of a sorted copy of the last samples.
        #[test]
        fn p95_matches_sorting(
            window in 1usize..50,
            samples in proptest::collection::vec(0u64..200, 0..300),
        ) {
            let mut b = Backpressure::new(BackpressureConfig { latency_window: window, ..BackpressureConfig::default() });
            for (i, &ms) in samples.iter().enumerate() {
                b.record_latency(ms, Time(0));
                let start = (i + 1).saturating_sub(window);
                let mut last: Vec<u64> = samples[start..=i].to_vec();
                last.sort_unstable();
                let rank = (95 * last.len()).div_ceil(100);
                prop_assert_eq!(b.latency_p95_ms(), last[rank - 1]);
                prop_assert_eq!(b.counts.values().map(|&c| c as usize).sum::<usize>(), last.len());
            }
        }
    }
}
