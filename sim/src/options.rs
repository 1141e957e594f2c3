//! What a caller chooses about a run; everything else is drawn from the seed.

use serde::Serialize;

use crate::faults::RateFault;

/// A deliberately broken host, to prove that a checker can fail. Never on by default;
/// docs/INVARIANTS.md names the invariant each one breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Bug {
    /// The host acks every decide delivery as it arrives, before the core has replied.
    AckOnDelivery,
    /// The host swallows reply publishes but tells the core they were confirmed.
    DropReplies,
    /// The host swallows DLQ publishes but tells the core they were confirmed, so the
    /// core terminates messages with no DLQ record.
    SkipDlq,
    /// The host publishes every usage event twice, the second time under a fresh
    /// `Nats-Msg-Id`, so stream dedupe cannot absorb it.
    DoubleUsage,
    /// The host tells the core every delivery is the first (`delivered: 1`).
    IgnoreDelivered,
    /// The host ignores the server's MAX_DELIVERIES advisories.
    DropAdvisories,
    /// The host gives the core a fresh `Router` (an empty answer book) before each decide
    /// delivery that finds it idle, as if the process restarted between messages while
    /// keeping its incarnation.
    ForgetAnswers,
    /// The server confirms every create in the shared answer bucket without storing it,
    /// so no process ever sees another's answer (shared answers are on in about half of
    /// the seeds).
    BlindClaims,
    /// A graceful stop exits at once (a zero grace period): what the router held waits
    /// for the server's `ack_wait` before anyone else can answer it.
    SkipDrain,
    /// The routers never hear that a consumer's leader moved: neither its LEADER_ELECTED
    /// advisory nor the silence of the pull it lost reaches the host, so a lost pull is
    /// replaced only when it expires.
    IgnoreLeaderMoves,
    /// The routers' client reports a JetStream publish that got no PubAck (the stream
    /// was electing a leader) as confirmed, as if a time-out meant "stored".
    TimeoutConfirms,
    /// The host re-publishes an output whose publish failed under a fresh
    /// `Nats-Msg-Id`, so a first attempt that was stored after all (ambiguous) is not
    /// deduplicated.
    FreshMsgIdOnRetry,
    /// The host sends every nak without the delay the core asked for.
    NakWithoutDelay,
    /// Planted in the core: the delivery before the last is taken for the last, so a
    /// message whose publish failed is dead-lettered one delivery early.
    DlqOneEarly,
    /// Planted in the core: a rate-limit bucket never refills.
    BucketNeverRefills,
    /// Planted in the core: a rate-limit bucket refills ten times too fast.
    BucketRefillsFast,
    /// Planted in the core: a half-open breaker's successful probes are not counted, so
    /// it never closes.
    BreakerNeverCloses,
    /// Planted in the core: each result is fed to its provider's breaker twice.
    BreakerDoubleFeed,
    /// Planted in the core: sticky sessions never expire.
    StickyNeverExpires,
    /// Planted in the core: the weighted draw never picks the last provider.
    WeightedSkipsLast,
    /// Planted in the core: an extension call that failed is retried as if it timed out.
    ExtensionRetryErrors,
}

impl Bug {
    pub const ALL: [Bug; 21] = [
        Bug::AckOnDelivery,
        Bug::DropReplies,
        Bug::SkipDlq,
        Bug::DoubleUsage,
        Bug::IgnoreDelivered,
        Bug::DropAdvisories,
        Bug::ForgetAnswers,
        Bug::BlindClaims,
        Bug::SkipDrain,
        Bug::IgnoreLeaderMoves,
        Bug::TimeoutConfirms,
        Bug::FreshMsgIdOnRetry,
        Bug::NakWithoutDelay,
        Bug::DlqOneEarly,
        Bug::BucketNeverRefills,
        Bug::BucketRefillsFast,
        Bug::BreakerNeverCloses,
        Bug::BreakerDoubleFeed,
        Bug::StickyNeverExpires,
        Bug::WeightedSkipsLast,
        Bug::ExtensionRetryErrors,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bug::AckOnDelivery => "ack-on-delivery",
            Bug::DropReplies => "drop-replies",
            Bug::SkipDlq => "skip-dlq",
            Bug::DoubleUsage => "double-usage",
            Bug::IgnoreDelivered => "ignore-delivered",
            Bug::DropAdvisories => "drop-advisories",
            Bug::ForgetAnswers => "forget-answers",
            Bug::BlindClaims => "blind-claims",
            Bug::SkipDrain => "skip-drain",
            Bug::IgnoreLeaderMoves => "ignore-leader-moves",
            Bug::TimeoutConfirms => "timeout-confirms",
            Bug::FreshMsgIdOnRetry => "fresh-msg-id-on-retry",
            Bug::NakWithoutDelay => "nak-without-delay",
            Bug::DlqOneEarly => "dlq-one-early",
            Bug::BucketNeverRefills => "bucket-never-refills",
            Bug::BucketRefillsFast => "bucket-refills-fast",
            Bug::BreakerNeverCloses => "breaker-never-closes",
            Bug::BreakerDoubleFeed => "breaker-double-feed",
            Bug::StickyNeverExpires => "sticky-never-expires",
            Bug::WeightedSkipsLast => "weighted-skips-last",
            Bug::ExtensionRetryErrors => "extension-retry-errors",
        }
    }

    /// The core's name for a bug planted in the core (`Buggify::planted`), which is the
    /// bug's own name; `None` for a bug of the host or the world.
    pub fn planted_in_core(self) -> Option<&'static str> {
        match self {
            Bug::DlqOneEarly
            | Bug::BucketNeverRefills
            | Bug::BucketRefillsFast
            | Bug::BreakerNeverCloses
            | Bug::BreakerDoubleFeed
            | Bug::StickyNeverExpires
            | Bug::WeightedSkipsLast
            | Bug::ExtensionRetryErrors => Some(self.name()),
            _ => None,
        }
    }

    pub fn parse(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|b| b.name() == name)
    }
}

/// How a run was made smaller than its seed's full draw (by `shrink`, or by hand).
/// Empty means the full run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Reductions {
    /// End the chaos phase here instead of at the drawn time (and drop the scheduled
    /// faults after it).
    pub chaos_ms: Option<u64>,
    /// Indices into the drawn fault schedule of the entries removed.
    pub dropped_faults: Vec<usize>,
    /// Rate faults switched off.
    pub rates_off: Vec<RateFault>,
}

impl Reductions {
    pub fn is_empty(&self) -> bool {
        *self == Reductions::default()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimOptions {
    pub seed: u64,
    /// How many decide requests the gateways plan (overload bursts add more).
    pub requests: u64,
    /// Keep the trace lines in the report (the hash is always computed).
    pub keep_trace: bool,
    /// Draw a fault menu from the seed (swarm); `false` runs a healthy world.
    pub faults: bool,
    pub bug: Option<Bug>,
    /// Allow broker restarts to lose their unsynced tail (acknowledged writes). Off by
    /// default: it breaks what JetStream promises, and the checkers then only count
    /// what was lost.
    pub tail_loss: bool,
    /// Strict mode: a violation that is an instance of a known open core issue
    /// (`invariants::known`) fails the run instead of ending it with verdict `known`, and
    /// two router processes (or two incarnations of one) answering the same request
    /// differently fails it too (the core's answer book lives in memory, so by default
    /// idempotency is required per process incarnation only; docs/INVARIANTS.md).
    pub strict: bool,
    pub reductions: Reductions,
}

impl SimOptions {
    pub const DEFAULT_REQUESTS: u64 = 100;

    pub fn new(seed: u64) -> Self {
        SimOptions {
            seed,
            requests: Self::DEFAULT_REQUESTS,
            keep_trace: false,
            faults: true,
            bug: None,
            tail_loss: false,
            strict: false,
            reductions: Reductions::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bug_names_round_trip() {
        for b in Bug::ALL {
            assert_eq!(Bug::parse(b.name()), Some(b));
        }
        assert_eq!(Bug::parse("nope"), None);
    }
}
