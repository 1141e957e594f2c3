//! The catalogue of coverage probes (`Probe::probe`): every name the core and the host
//! report, what reaching it means, and whether the simulator's CI sweep must reach it.
//! A test (`tests/probe_catalogue.rs`) holds this list and the code to each other: a
//! probe called but not listed, or listed but called nowhere, fails it.

/// One probe.
#[derive(Clone, Copy, Debug)]
pub struct ProbeSpec {
    pub name: &'static str,
    /// The rare path, in a few words.
    pub what: &'static str,
    /// The CI sweep (`.ci/run`, seeds 1..300) fails if no seed reaches it.
    pub required: bool,
}

const fn p(name: &'static str, required: bool, what: &'static str) -> ProbeSpec {
    ProbeSpec {
        name,
        what,
        required,
    }
}

/// Every probe, grouped by where it sits.
pub const PROBES: &[ProbeSpec] = &[
    // Deliveries and their fates (router.rs, fate.rs, outputs.rs).
    p(
        "connection.lost",
        true,
        "the core heard that the connection dropped",
    ),
    p(
        "delivery.joined_in_flight",
        true,
        "a redelivery joined the same message still in flight",
    ),
    p(
        "delivery.after_settle",
        true,
        "a delivery of a message already settled (the ack was lost)",
    ),
    p(
        "router.overload_nak",
        true,
        "a delivery nak'ed because max_in_flight was reached",
    ),
    p(
        "router.backpressure_nak",
        false,
        "a decide delivery nak'ed unparsed while backpressure is active",
    ),
    p(
        "dlq.overloaded_last_delivery",
        false,
        "the last allowed delivery arrived while overloaded: dead-lettered at once",
    ),
    p(
        "exhausted.while_held",
        false,
        "the server gave up on a message the core still holds",
    ),
    p(
        "exhausted.unseen",
        true,
        "the server gave up on a message the core never completed: DLQ from the advisory",
    ),
    p(
        "publish.failed",
        true,
        "a publish the fate depends on failed or timed out",
    ),
    p(
        "progress.sent",
        true,
        "a long-running message got an in-progress ack",
    ),
    p("fate.nak_delayed", true, "a nak with a back-off delay"),
    p(
        "intake.refused",
        true,
        "intake refused a message: DLQ record, typed error reply, term",
    ),
    // Decisions (flow_decide.rs).
    p(
        "answer.replayed_for_seq",
        true,
        "a redelivered request answered with the bytes decided before",
    ),
    p(
        "answer.replayed_for_key",
        true,
        "a request answered from its idempotency key's earlier reply",
    ),
    p(
        "claim.waiter_released",
        false,
        "a duplicate waited for the first of its key and got its bytes",
    ),
    p(
        "limit.reached",
        true,
        "a tenant's rate limit refused a request",
    ),
    p(
        "extension.failed",
        true,
        "an extension call failed (error, garbage or time-out)",
    ),
    p(
        "extension.retry_scheduled",
        true,
        "an extension call timed out and a retry was scheduled",
    ),
    p(
        "assignment.skipped",
        false,
        "an assignment was asked for but could not be built",
    ),
    p(
        "decision.sticky_hit",
        true,
        "a sticky session kept its provider",
    ),
    p(
        "decision.weighted",
        true,
        "a weighted draw chose the provider",
    ),
    p(
        "decision.fallback",
        false,
        "a fallback rule chose the provider",
    ),
    p(
        "decision.breaker_fallback",
        false,
        "an open breaker sent the request to a fallback",
    ),
    p(
        "decision.no_provider",
        false,
        "no provider could take the request",
    ),
    // Shared state in the KV bucket (flow_decide.rs).
    p(
        "shared.claim_sent",
        false,
        "an idempotency key claimed in the shared bucket",
    ),
    p(
        "shared.answer_adopted",
        false,
        "another instance's answer adopted from the bucket",
    ),
    p(
        "shared.session_adopted",
        false,
        "another instance's sticky session adopted",
    ),
    p(
        "shared.unreadable",
        false,
        "a bucket entry in a foreign format: answered here instead",
    ),
    p(
        "shared.failed",
        false,
        "a bucket operation failed or timed out",
    ),
    // Results and breakers (flow_results.rs).
    p(
        "results.duplicate",
        true,
        "a result for a correlation key already settled",
    ),
    p(
        "breaker.opened",
        true,
        "a provider's breaker opened from closed",
    ),
    p(
        "breaker.closed_after_probes",
        false,
        "a half-open breaker closed after its probes succeeded",
    ),
    p(
        "breaker.reopened_from_half_open",
        false,
        "a half-open breaker's probe failed: open again",
    ),
    // Admin (inbound.rs).
    p(
        "admin.refused",
        true,
        "an admin call without the right token",
    ),
    // The host (host/mod.rs).
    p(
        "host.publish_timed_out",
        true,
        "a publish got no confirmation before its deadline",
    ),
    p(
        "host.request_timed_out",
        true,
        "an extension request got no reply before its deadline",
    ),
    p(
        "host.kv_timed_out",
        false,
        "a bucket operation got no answer before its deadline",
    ),
    p(
        "host.fetch_timed_out",
        false,
        "a read of a given-up message got no answer before its deadline",
    ),
    p(
        "host.late_outcome",
        true,
        "an outcome arrived after its deadline and was dropped",
    ),
    p(
        "host.pull_stalled",
        true,
        "a pull heard nothing for two heartbeats and was replaced",
    ),
    p(
        "host.pull_leader_elected",
        true,
        "a consumer's new leader was announced: pulled afresh",
    ),
    p(
        "host.pull_ended",
        false,
        "a pull stream ended or could not start",
    ),
    p(
        "host.policies_reloaded",
        false,
        "a reloaded policy set was put in force",
    ),
    p(
        "host.policy_reload_refused",
        false,
        "a reloaded policy set was refused whole; the running one stayed",
    ),
    p(
        "host.handed_back",
        false,
        "a delivery arrived during the drain and was handed back",
    ),
    p(
        "host.last_delivery_while_draining",
        false,
        "the last allowed delivery arrived during the drain: decided here, not handed back",
    ),
    p(
        "host.advisory_fetched",
        true,
        "a MAX_DELIVERIES advisory for our consumer: its message read back",
    ),
    p(
        "host.advisory_message_gone",
        false,
        "an advisory's message was already gone from its stream",
    ),
    p(
        "host.advisory_not_ours",
        false,
        "an advisory about a consumer that is not ours",
    ),
    p(
        "host.advisory_unreadable",
        false,
        "an advisory that does not parse",
    ),
    p(
        "host.drained",
        true,
        "a graceful stop finished all its work before the grace ended",
    ),
    p(
        "host.drain_ended_with_work",
        false,
        "a graceful stop's grace ended with work in flight",
    ),
];

/// The catalogue entry of `name`.
pub fn spec(name: &str) -> Option<&'static ProbeSpec> {
    PROBES.iter().find(|p| p.name == name)
}
