//! What a run hands back: the verdict, the first violation, the trace hash (and the trace
//! itself when asked), and the counters the CLI prints.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::invariants::Violation;
use crate::trace::hash_hex;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Verdict {
    Pass,
    Fail,
    /// Failed with an instance of a known open core issue (`invariants::known`); only
    /// without `--strict`.
    Known,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Known => "known",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Requests the gateways planned (bursts included).
    pub planned: u64,
    /// Distinct decide messages stored (accepted requests and their retries).
    pub accepted: u64,
    /// Decide messages with at least one reply at the server.
    pub answered: u64,
    /// Reply publishes that reached the server, duplicates included.
    pub replies: u64,
    /// Replies beyond the first for a message (identical, or the run failed).
    pub duplicate_replies: u64,
    /// Requests answered differently by two processes or incarnations.
    pub cross_process_divergence: u64,
    /// DLQ records stored (deduped ones excluded), decide and results.
    pub dlq: u64,
    /// Decide messages the server exhausted (dead-lettered from its advisory).
    pub exhausted: u64,
    pub deliveries: u64,
    /// Deliveries with a server delivery count above 1.
    pub redeliveries: u64,
    pub usage_events: u64,
    /// Fault injections: scheduled faults and per-message ones.
    pub faults: u64,
    pub crashes: u64,
    /// Graceful stops begun, and how they ended: drained, or cut by the grace period.
    pub stops: u64,
    pub stops_drained: u64,
    pub stops_cut: u64,
    pub broker_restarts: u64,
    /// Cluster nodes crashed (`FaultKind::NodeCrash` that found a node to kill).
    pub node_crashes: u64,
    /// Publishes to a leaderless stream stored without a PubAck (ambiguous).
    pub ambiguous_stored: u64,
    /// `409 Leadership Change` statuses sent to waiting pull requests.
    pub pulls_terminated: u64,
    pub buggify_fired: u64,
    /// Messages lost in transit because the connection (or process) was gone.
    pub lost_in_transit: u64,
    pub lost_to_tail: u64,
    pub checks: u64,
    pub events: u64,
}

/// What the gateways saw, for scenario expectations (`crate::scenario`): measured from
/// the replies that reached them, in virtual time. Cheap enough to collect on every run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observations {
    /// Per replied request (bursts included): its first reply's arrival at the gateway
    /// minus the time the request was planned to be published, in request order.
    pub reply_latency_ms: Vec<u64>,
    /// Requests with at least one reply at their gateway.
    pub requests_replied: u64,
    /// Gateway attempts started (a request's first attempt counts too).
    pub attempts: u64,
    /// First replies that were decisions, by `decision.reason`.
    pub decisions: BTreeMap<String, u64>,
    /// First replies that were errors, by `error.code`.
    pub errors: BTreeMap<String, u64>,
    /// When the first reply showing an open breaker reached a gateway: a
    /// `circuit_breaker_fallback` decision, or `decision_failed` (every provider's breaker
    /// open: the world's policies have no fallback provider).
    pub first_breaker_effect_ms: Option<u64>,
    /// When the last first-reply reached a gateway.
    pub last_reply_ms: u64,
    /// The compact decision/fault log (one line per first reply and per scheduled
    /// fault), only when the run keeps its trace.
    pub log: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct RunReport {
    pub seed: u64,
    pub verdict: Verdict,
    pub violation: Option<Violation>,
    pub trace_hash: u64,
    pub trace_len: u64,
    /// The trace lines, when the run was asked to keep them.
    pub trace: Option<Vec<String>>,
    pub counters: Counters,
    /// Every router incarnation's core counters, summed.
    pub core_stats: serde_json::Map<String, serde_json::Value>,
    /// Virtual time at the end of the run, and when the chaos phase ended.
    pub sim_time_ms: u64,
    pub chaos_ms: u64,
    pub requests: u64,
    pub profile_summary: String,
    pub schedule_summary: String,
    pub schedule_len: usize,
    /// BUGGIFY sites asked, and whether each was active.
    pub buggify_sites: Vec<(&'static str, bool)>,
    /// Coverage probes reached in the run, with their counts, by name.
    pub probes: Vec<(&'static str, u64)>,
    /// How often the reference models judged (`crate::models`).
    pub models: crate::models::ModelCounters,
    pub observations: Observations,
}

impl RunReport {
    /// The machine-readable last line of `beamline-sim run`.
    pub fn verdict_line(&self) -> String {
        let c = &self.counters;
        format!(
            "seed={} verdict={} trace_hash={} requests={} replies={} dlq={} redeliveries={} faults={}",
            self.seed,
            self.verdict.as_str(),
            hash_hex(self.trace_hash),
            c.accepted,
            c.replies,
            c.dlq,
            c.redeliveries,
            c.faults
        )
    }

    pub fn invariant(&self) -> Option<&'static str> {
        self.violation.as_ref().map(|v| v.invariant)
    }
}
