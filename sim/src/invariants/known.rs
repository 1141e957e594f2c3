//! Open core issues the simulator found, and how to recognise their instances.
//!
//! A violation that is an instance of one of these is reported with verdict `known`
//! instead of `fail` (and counts as a failure with `--strict`), so that a sweep stays
//! useful while the core fix is pending: every *other* violation still fails it. Each
//! issue names the trigger the world or the checker detects, not merely the invariant,
//! so that another bug breaking the same invariant is not hidden. docs/INVARIANTS.md
//! ("Open core issues") gives a seed for each. When the core is fixed, its instances
//! stop appearing and the entry goes.

/// The core records an answer under its idempotency key only when the decision is made,
/// so two messages with the same key in flight at once in one process (a gateway retry
/// delivered while the first attempt is still in its extension pipeline) are decided
/// twice: different replies, two assignments. Trigger: the second message reached the
/// process before its first decision for that request.
pub const CONCURRENT_SAME_KEY: &str = "concurrent_same_key";

/// While backpressure is active every decide message is nak'ed unparsed, so no latency
/// sample is recorded and the p95 cannot come down; with the queue above its threshold
/// the status stays active until the queue drains by exhaustion (every message
/// dead-lettered after `max_deliver x retry_after`). Trigger: a liveness deadline missed
/// by a run that was still nak'ing for backpressure after the heal.
pub const BACKPRESSURE_LATCH: &str = "backpressure_latch";

/// Dedupe of assignments, DLQ records and usage events rests on the streams' duplicate
/// window (120 s, as the production shell creates its streams); a message redelivered
/// after a longer span publishes the same id again and it is stored twice. Trigger: the
/// two stores are a duplicate window or more apart.
pub const DEDUPE_WINDOW: &str = "dedupe_window";

/// A result acked as a duplicate (its key's carrier still in flight) marks the key
/// settled in the result book although the carrier's usage event is not confirmed; when
/// the carrier's publish then fails, its redelivery is taken for a duplicate too and
/// acked: the usage event is never emitted. Trigger: a result acked as a duplicate
/// before its key's usage event was stored.
pub const DUPLICATE_SETTLES_KEY: &str = "duplicate_settles_key";

/// Not a core bug but what the opt-in lost-tail fault (`--tail-loss`) breaks: the core
/// keys its answer book and DLQ message ids by stream sequence, so after a broker loses
/// acknowledged writes and reuses their sequences, a new request can be taken for a
/// settled one (acked unanswered) and records can be deduped against vanished ones.
pub const TAIL_LOSS: &str = "tail_loss";

pub const ALL: [&str; 5] = [
    TAIL_LOSS,
    CONCURRENT_SAME_KEY,
    BACKPRESSURE_LATCH,
    DEDUPE_WINDOW,
    DUPLICATE_SETTLES_KEY,
];

/// Issues fixed in the core since the simulator found them (concurrent_same_key: a copy
/// now waits for the claim holder's answer; duplicate_settles_key: only the carrier of
/// a usage event settles its key; backpressure_latch: latency samples age out after
/// `latency_max_age_ms`; dedupe_window: the streams the router writes dedupe over twice
/// the longest redelivery span, and a replay skips an assignment already stored). Their
/// seeds stay in `seeds/` as regressions.
pub const FIXED: [&str; 4] = [
    CONCURRENT_SAME_KEY,
    DUPLICATE_SETTLES_KEY,
    BACKPRESSURE_LATCH,
    DEDUPE_WINDOW,
];
