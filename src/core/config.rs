//! Settings the core needs. The shell builds this from its config file and command line;
//! the simulator from its scenario.

use crate::contracts::subjects;

use super::assignment::AssignmentConfig;
use super::backpressure::BackpressureConfig;
use super::breaker::BreakerConfig;
use super::extensions::ExtensionRegistry;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterConfig {
    /// Must equal the durable consumer's `max_deliver`: the core compares the server's
    /// delivery count against it to know a delivery is the last one.
    pub max_deliver: u64,
    /// The same for the results consumer and the assignment-ack consumer.
    pub results_max_deliver: u64,
    pub acks_max_deliver: u64,
    /// The consumer's `ack_wait`. A message held longer than half of it (waiting on
    /// extensions) gets `+WPI` so the server does not redeliver it meanwhile.
    pub ack_wait_ms: u64,
    /// Nak delay after a failed publish, indexed by delivery count - 1 (the last entry
    /// repeats). Upstream's `js_backoff_decide`.
    pub nak_backoff_ms: Vec<u64>,
    /// Delay before retrying a DLQ publish that failed on the last delivery.
    pub dlq_retry_ms: u64,
    /// Reject larger payloads at intake (`nats_max_payload_size`).
    pub max_payload_bytes: usize,
    /// `task.payload` must encode to at least this many bytes (`min_payload_size`).
    pub min_payload_bytes: usize,
    pub decide_subject: String,
    pub result_subject: String,
    pub ack_subject: String,
    pub usage_subject: String,
    /// Where replies go when a request carries no `Reply-To` header.
    pub default_reply_subject: String,
    pub dlq_subject: String,
    /// Dead letters of results and assignment acks go to `<subject>.dlq`.
    pub dlq_suffix: String,
    /// Written into DLQ records so an operator knows which instance dead-lettered.
    pub node_id: String,
    /// At most this many messages are held in flight; more are nak'ed back.
    pub max_in_flight: usize,
    /// Entries of the answer book (by stream sequence and by idempotency key) and of the
    /// result book (by assignment id).
    pub completed_capacity: usize,
    /// How long a reply stays replayable for its (tenant, idempotency_key).
    pub idempotency_ttl_ms: u64,
    /// Tenants allowed to call; `None` allows every tenant.
    pub tenant_allowlist: Option<Vec<String>>,
    /// Breaker settings for policies that enable breakers without overriding them, and
    /// for extension breakers.
    pub breaker_defaults: BreakerConfig,
    pub max_breakers: usize,
    pub max_rate_buckets: usize,
    pub max_sticky_sessions: usize,
    pub backpressure: BackpressureConfig,
    pub assignment: AssignmentConfig,
    pub extensions: ExtensionRegistry,
    /// Claim keyed answers in the shared bucket (`KvOp::Create`) before publishing
    /// them, so that several instances answer a key alike (`shared.rs`). Off: the answer
    /// book in memory is the only record, which is enough for one instance.
    pub shared_idempotency: bool,
    /// Look sticky sessions up in the shared bucket when this instance has no live
    /// mapping, and write chosen mappings back (`KvOp::Get` / `KvOp::Put`).
    pub shared_sticky: bool,
    /// Admin requests must carry this token; `None` refuses every admin request.
    pub admin_token: Option<String>,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            max_deliver: 5,
            results_max_deliver: 10,
            acks_max_deliver: 3,
            ack_wait_ms: 30_000,
            nak_backoff_ms: vec![1_000, 5_000, 15_000],
            dlq_retry_ms: 2_000,
            max_payload_bytes: 1_048_576,
            min_payload_bytes: 10,
            decide_subject: subjects::DECIDE.to_string(),
            result_subject: subjects::RESULT.to_string(),
            ack_subject: subjects::ASSIGNMENT_ACK.to_string(),
            usage_subject: subjects::USAGE.to_string(),
            default_reply_subject: subjects::DECIDE_REPLY.to_string(),
            dlq_subject: subjects::DECIDE_DLQ.to_string(),
            dlq_suffix: ".dlq".to_string(),
            node_id: "router-1".to_string(),
            max_in_flight: 256,
            completed_capacity: 65_536,
            idempotency_ttl_ms: 3_600_000,
            tenant_allowlist: None,
            breaker_defaults: BreakerConfig::default(),
            max_breakers: 10_000,
            max_rate_buckets: 100_000,
            max_sticky_sessions: 100_000,
            backpressure: BackpressureConfig::default(),
            assignment: AssignmentConfig::default(),
            extensions: ExtensionRegistry::builtin(),
            shared_idempotency: false,
            shared_sticky: false,
            admin_token: None,
        }
    }
}
