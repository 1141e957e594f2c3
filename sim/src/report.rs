//! What a run hands back: the verdict, the first violation, the trace hash (and the trace
//! itself when asked), and the counters the CLI prints.

use beamline_router::core::Stats;
use serde::Serialize;

use crate::invariants::Violation;
use crate::trace::hash_hex;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Verdict {
    Pass,
    Fail,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Requests the gateway planned.
    pub planned: u64,
    /// Distinct stream messages stored in the decide stream (accepted requests).
    pub accepted: u64,
    /// Stream messages with at least one reply at the server.
    pub answered: u64,
    /// Reply publishes that reached the server, duplicates included.
    pub replies: u64,
    /// Replies beyond the first for a message (identical, or the run failed).
    pub duplicate_replies: u64,
    /// DLQ records stored (deduped ones excluded).
    pub dlq: u64,
    pub deliveries: u64,
    /// Deliveries with a server delivery count above 1.
    pub redeliveries: u64,
    /// Fault injections: connection drops, lost acks, refused publishes, slow messages.
    pub faults: u64,
    pub buggify_fired: u64,
    /// Messages lost in transit because the connection they were sent on was gone.
    pub lost_in_transit: u64,
    /// Messages the server exhausted without the router seeing their final delivery and
    /// that so ended with neither reply nor DLQ record (a known gap; see invariants).
    pub exhausted_unseen: u64,
    pub events: u64,
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
    pub core_stats: Stats,
    /// Virtual time at the end of the run.
    pub sim_time_ms: u64,
    pub profile_summary: String,
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
}
