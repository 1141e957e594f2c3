//! Settings the core needs. The shell builds this from its command line (and later a
//! config file); the simulator from its scenario.

use crate::contracts::subjects;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterConfig {
    /// Must equal the durable consumer's `max_deliver`: the core compares the server's
    /// delivery count against it to know a delivery is the last one.
    pub max_deliver: u64,
    /// Nak delay after a failed reply publish, indexed by delivery count - 1 (the last
    /// entry repeats). Upstream's `js_backoff_decide`.
    pub nak_backoff_ms: Vec<u64>,
    /// Delay before retrying a DLQ publish that failed on the last delivery.
    pub dlq_retry_ms: u64,
    /// Reject larger payloads at intake (`nats_max_payload_size`).
    pub max_payload_bytes: usize,
    /// `task.payload` must encode to at least this many bytes (`min_payload_size`).
    pub min_payload_bytes: usize,
    /// Where replies go when a request carries no `Reply-To` header.
    pub default_reply_subject: String,
    pub dlq_subject: String,
    /// Written into DLQ records so an operator knows which instance dead-lettered.
    pub node_id: String,
    /// At most this many messages are held in flight; more are nak'ed back.
    pub max_in_flight: usize,
    /// How many completed stream sequences are remembered, so that a redelivery after a
    /// lost ack is acked again without a second reply.
    pub completed_capacity: usize,
    /// How long a reply stays replayable for its (tenant, idempotency_key).
    pub idempotency_ttl_ms: u64,
    /// Tenants allowed to call; `None` allows every tenant.
    pub tenant_allowlist: Option<Vec<String>>,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            max_deliver: 5,
            nak_backoff_ms: vec![1_000, 5_000, 15_000],
            dlq_retry_ms: 2_000,
            max_payload_bytes: 1_048_576,
            min_payload_bytes: 10,
            default_reply_subject: subjects::DECIDE_REPLY.to_string(),
            dlq_subject: subjects::DECIDE_DLQ.to_string(),
            node_id: "router-1".to_string(),
            max_in_flight: 256,
            completed_capacity: 65_536,
            idempotency_ttl_ms: 3_600_000,
            tenant_allowlist: None,
        }
    }
}
