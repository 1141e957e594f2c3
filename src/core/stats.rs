//! What the core counts and how full its tables are: read by shells (metrics, logs), the
//! simulator's checkers and the admin `get_stats` answer.

/// Counters a shell or the simulator can read at any time.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub deliveries: u64,
    pub replies_ok: u64,
    pub replies_error: u64,
    pub rejected: u64,
    pub dlq_records: u64,
    pub acks: u64,
    pub naks: u64,
    pub terms: u64,
    pub in_progress: u64,
    pub publish_failures: u64,
    /// Redeliveries of a message already settled (its ack was lost): settled again,
    /// never answered twice.
    pub redelivered_after_settle: u64,
    /// Requests answered from the answer book instead of a new decision.
    pub idempotent_replays: u64,
    /// Deliveries refused because `max_in_flight` messages were already held.
    pub overload_naks: u64,
    /// Decide messages nak'ed unparsed because backpressure was active.
    pub backpressure_naks: u64,
    /// Last deliveries that arrived while overloaded: dead-lettered at once (a nak
    /// would have exhausted them, leaving their fate to the advisory).
    pub overload_dead_letters: u64,
    pub rate_limited: u64,
    /// Decide requests that took a token from their policy's rate limit.
    pub rate_admitted: u64,
    /// Results fed to a provider's circuit breaker (once per correlation key).
    pub breaker_records: u64,
    pub assignments_published: u64,
    pub assignments_skipped: u64,
    pub extension_calls: u64,
    pub extension_failures: u64,
    pub results: u64,
    pub results_duplicate: u64,
    pub usage_emitted: u64,
    pub assignment_acks: u64,
    pub inbound_requests: u64,
    pub admin_refused: u64,
    pub disconnects: u64,
    /// Messages the server gave up on whose last delivery never reached us: dead-lettered
    /// from the `MAX_DELIVERIES` advisory.
    pub exhausted_unseen: u64,
    /// Keyed answers claimed in the shared bucket (creates sent).
    pub shared_claims: u64,
    /// Answers found in the shared bucket: another instance (or an earlier delivery)
    /// had claimed the key first, and its bytes were published instead of ours.
    pub shared_adopted: u64,
    /// Claims the bucket did not confirm (timeout, refusal): the message was given back.
    pub shared_failures: u64,
    /// Bucket values this version could not read; our own answer was published.
    pub shared_unreadable: u64,
    /// Sticky sessions another instance had pinned, adopted from the bucket.
    pub shared_sessions_adopted: u64,
}

/// Sizes of the router's bounded tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TableSizes {
    pub in_flight: usize,
    pub answers_by_seq: usize,
    pub answers_by_key: usize,
    pub results: usize,
    pub breakers: usize,
    pub rate_buckets: usize,
    pub sticky_sessions: usize,
    pub latency_samples: usize,
}
