//! The checkers. Safety rules are checked at the step where they could break (a core
//! command, a message stored or delivered, an answer received); liveness rules during
//! the liveness phase (a message past its deadline) and at its end. The first violation
//! ends the run with verdict `fail`. docs/INVARIANTS.md lists every rule, where it is
//! checked, and what shows that the check can fail.
//!
//! - `mod.rs`: the checker's state, the violation, counters, the world's hooks that are
//!   not about one flow;
//! - `decide.rs`: decide messages, replies, idempotency, DLQ records, acks and terms;
//! - `results.rs`: assignments, results and usage events;
//! - `inbound.rs`: the backpressure status and admin answers;
//! - `liveness.rs`: deadlines and the end-of-run rules.
//!
//! The checker only sees what the world shows it; it keeps no state the world could
//! not have observed from outside the core, except the core's public `Stats`.

pub(crate) mod decide;
mod inbound;
pub mod known;
mod liveness;
mod observed;
mod results;

pub use decide::{dlq_record_problem, reply_problem, reply_problem_as, sha256_hex, ExpectedReply};
pub use inbound::{admin_problem, status_problem};
pub use liveness::{Finality, StuckInfo};

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::wire::Cons;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub invariant: &'static str,
    pub message: String,
    /// Virtual time of the step that broke it.
    pub at: u64,
    /// The stream sequence it is about, when it is about one message.
    pub seq: Option<u64>,
    /// An open core issue this violation is an instance of (`known.rs`), if any.
    pub known: Option<&'static str>,
}

/// A router process incarnation: which router, and how many times it restarted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Proc {
    pub router: usize,
    pub incarnation: u64,
}

/// What a router publish is, as the checker worked it out from subject and payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attr {
    Reply {
        seq: u64,
    },
    Dlq {
        cons: Cons,
        seq: u64,
    },
    Assignment {
        seq: Option<u64>,
        assignment_id: String,
    },
    Usage {
        seq: Option<u64>,
        key: String,
    },
    Other,
}

/// What the checker knows of one decide message (one stream sequence).
#[derive(Clone, Debug)]
pub(crate) struct DecideMsg {
    pub request: usize,
    pub attempt: u64,
    /// Replies that reached the server (duplicates included).
    pub replies: u64,
    /// DLQ records stored for it (deduped copies excluded).
    pub dlq_records: u64,
    pub dlq_first_at: Option<u64>,
    /// A DLQ record or an ack of it vanished with a broker's unsynced tail.
    pub tail_affected: bool,
    pub last: (u64, String),
}

/// What the checker knows of one result message.
#[derive(Clone, Debug)]
pub(crate) struct ResultMsg {
    /// The correlation key (assignment id, else request id), if intake would accept it.
    pub key: Option<String>,
    pub dlq_records: u64,
    pub dlq_first_at: Option<u64>,
    pub tail_affected: bool,
    pub last: (u64, String),
}

/// A reply as seen at the server, for the idempotency rules.
#[derive(Clone, Debug)]
pub(crate) struct SeenReply {
    pub proc: Proc,
    pub bytes: Vec<u8>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckCounters {
    /// Replies beyond the first for a decide message (identical, or the run failed).
    pub duplicate_replies: u64,
    /// Requests answered differently by two processes (or incarnations): allowed unless
    /// `strict_idempotency`, and counted.
    pub cross_process_divergence: u64,
    /// Requests that got assignments with different ids from different processes.
    pub cross_process_assignments: u64,
    pub status_answers: u64,
    pub admin_answers: u64,
    pub usage_events: u64,
    /// Messages (or their DLQ records, acks or usage events) lost with a broker's
    /// unsynced tail (`--tail-loss`).
    pub lost_to_tail: u64,
    /// Messages dead-lettered from the server's MAX_DELIVERIES advisory.
    pub exhausted: u64,
    pub checks: u64,
}

#[derive(Debug)]
pub struct Checker {
    pub(crate) max_deliver: u64,
    pub(crate) strict_idempotency: bool,
    /// The routers share answers through the KV bucket: keyed requests must then be
    /// answered alike by every process, strict or not.
    pub(crate) shared_answers: bool,
    /// The duplicate window of the assignment, usage and DLQ streams.
    pub(crate) output_window_ms: u64,
    pub(crate) chaos_end: u64,
    /// How long after the heal the network takes to drain what the chaos left in it.
    pub(crate) settle_ms: u64,
    pub(crate) decide: BTreeMap<u64, DecideMsg>,
    pub(crate) attempts: BTreeMap<(usize, u64), u64>,
    pub(crate) results: BTreeMap<u64, ResultMsg>,
    pub(crate) replies: BTreeMap<usize, Vec<SeenReply>>,
    pub(crate) publishes: BTreeMap<(Proc, u64), Attr>,
    /// When each router publish was sent (for failures after the heal).
    pub(crate) publish_sent_at: BTreeMap<(Proc, u64), u64>,
    /// assignment id -> (request, stored copies, first stored at)
    pub(crate) assignments: BTreeMap<String, (usize, u64, u64)>,
    /// (request, proc) -> assignment ids it published
    pub(crate) assignments_by_request: BTreeMap<(usize, Proc), BTreeSet<String>>,
    /// usage ids stored in the usage stream
    pub(crate) usage_stored: BTreeSet<String>,
    /// usage id -> when first stored
    pub(crate) usage_first_stored: BTreeMap<String, u64>,
    /// usage id -> the usage stream sequence first consumed
    pub(crate) usage_consumed: BTreeMap<String, u64>,
    /// (proc, result seq) -> usage id that process published for it
    pub(crate) usage_for_result: BTreeMap<(Proc, u64), String>,
    /// (proc, decide seq) -> assignment ids that process published for it
    pub(crate) assignments_for_seq: BTreeMap<(Proc, u64), BTreeSet<String>>,
    /// When each process first got each decide message (for the concurrency test).
    pub(crate) first_delivery: BTreeMap<(Proc, u64), u64>,
    /// When each process first published a reply for each request, and for which message.
    pub(crate) first_decision: BTreeMap<(usize, Proc), (u64, u64)>,
    /// (request, process) pairs decided concurrently.
    pub(crate) concurrent_requests: BTreeSet<(usize, Proc)>,
    /// Result keys a duplicate was acked for before their usage event was stored.
    pub(crate) duplicate_acked_keys: BTreeSet<String>,
    /// Decide and results sequences a broker crash lost (and the stream may reuse).
    pub(crate) lost_seqs: BTreeSet<u64>,
    pub(crate) tail_lost: bool,
    pub(crate) counters: CheckCounters,
    /// The reference models of the routing semantics (`crate::models`).
    pub(crate) models: Option<crate::models::Models>,
    /// What the run's clients saw (`observed.rs`), and where each request is in it.
    pub(crate) history: crate::history::History,
    pub(crate) history_index: BTreeMap<usize, usize>,
    violation: Option<Violation>,
}

impl Checker {
    pub fn new(max_deliver: u64, strict_idempotency: bool, chaos_end: u64) -> Self {
        Checker {
            max_deliver,
            strict_idempotency,
            shared_answers: false,
            output_window_ms: crate::world::DUPLICATE_WINDOW_MS,
            chaos_end,
            settle_ms: 1_000,
            decide: BTreeMap::new(),
            attempts: BTreeMap::new(),
            results: BTreeMap::new(),
            replies: BTreeMap::new(),
            publishes: BTreeMap::new(),
            publish_sent_at: BTreeMap::new(),
            assignments: BTreeMap::new(),
            assignments_by_request: BTreeMap::new(),
            usage_stored: BTreeSet::new(),
            usage_first_stored: BTreeMap::new(),
            usage_consumed: BTreeMap::new(),
            usage_for_result: BTreeMap::new(),
            assignments_for_seq: BTreeMap::new(),
            first_delivery: BTreeMap::new(),
            first_decision: BTreeMap::new(),
            concurrent_requests: BTreeSet::new(),
            duplicate_acked_keys: BTreeSet::new(),
            lost_seqs: BTreeSet::new(),
            tail_lost: false,
            counters: CheckCounters::default(),
            models: None,
            history: crate::history::History::default(),
            history_index: BTreeMap::new(),
            violation: None,
        }
    }

    /// Hold the run to the reference models too.
    pub fn attach_models(&mut self, models: crate::models::Models) {
        self.models = Some(models);
    }

    /// One core step, for the reference models.
    pub fn on_model_step(
        &mut self,
        step: &crate::models::StepView,
        workload: &crate::actors::gateway::Workload,
    ) {
        if let Some(m) = self.models.as_mut() {
            m.on_step(step, workload);
        }
        self.take_model_findings(step.at);
    }

    /// The host put a nak on the wire.
    pub fn on_wire_nak(&mut self, at: u64, proc: Proc, d: crate::host::DeliveryRef, delay_ms: u64) {
        if let Some(m) = self.models.as_mut() {
            m.on_wire_nak(proc, d, delay_ms);
        }
        self.take_model_findings(at);
    }

    /// A router process ended: the models forget its memory.
    pub fn on_process_end(&mut self, proc: Proc) {
        if let Some(m) = self.models.as_mut() {
            m.on_process_end(proc);
        }
    }

    /// The models' end-of-run rules.
    pub fn finish_models(&mut self, at: u64) {
        if let Some(m) = self.models.as_mut() {
            m.finish();
        }
        self.take_model_findings(at);
    }

    pub fn model_counters(&self) -> Option<&crate::models::ModelCounters> {
        self.models.as_ref().map(|m| &m.counters)
    }

    fn take_model_findings(&mut self, at: u64) {
        let found = self
            .models
            .as_mut()
            .map(|m| m.take_findings())
            .unwrap_or_default();
        for f in found {
            self.fail_about(at, f.invariant, f.seq, f.message);
        }
    }

    /// Require cross-process idempotency of keyed requests (answers shared via KV).
    pub fn require_shared_answers(&mut self) {
        self.shared_answers = true;
    }

    pub fn violation(&self) -> Option<&Violation> {
        self.violation.as_ref()
    }

    pub fn counters(&self) -> &CheckCounters {
        &self.counters
    }

    /// Record a broken rule. Only the first one is kept: later ones are often its echo.
    pub fn fail(&mut self, at: u64, invariant: &'static str, message: String) {
        self.fail_about(at, invariant, None, message);
    }

    /// Record a broken rule about message `seq`.
    pub fn fail_about(
        &mut self,
        at: u64,
        invariant: &'static str,
        seq: Option<u64>,
        message: String,
    ) {
        if self.violation.is_none() {
            self.violation = Some(Violation {
                invariant,
                message,
                at,
                seq,
                known: None,
            });
        }
    }

    /// Record a broken rule that is an instance of a known open core issue.
    pub fn fail_known(
        &mut self,
        at: u64,
        invariant: &'static str,
        known: &'static str,
        message: String,
    ) {
        if self.violation.is_none() {
            self.violation = Some(Violation {
                invariant,
                message,
                at,
                seq: None,
                known: Some(known),
            });
        }
    }

    /// Whether a violation is a consequence of the opt-in lost-tail fault: about a
    /// sequence the broker lost (and reused), or a duplicate whose first copy vanished.
    pub fn caused_by_tail_loss(&self, v: &Violation) -> bool {
        self.tail_lost
            && (v.seq.is_some_and(|s| self.lost_seqs.contains(&s))
                || matches!(
                    v.invariant,
                    "usage_duplicate"
                        | "assignment_duplicate"
                        | "duplicate_dlq_record"
                        | "delivered_after_final"
                        // The answer bucket is a stream too: a lost tail loses claims.
                        | "replies_differ_across_processes"
                ))
    }

    /// Mark the violation as an instance of a known open core issue.
    pub fn classify(&mut self, known: &'static str) {
        // A fixed issue is no longer an excuse: its instances fail like any violation.
        if known::FIXED.contains(&known) {
            return;
        }
        if let Some(v) = &mut self.violation {
            v.known = Some(known);
        }
    }

    pub fn set_settle(&mut self, settle_ms: u64) {
        self.settle_ms = settle_ms;
    }

    pub fn accepted(&self) -> usize {
        self.decide.len()
    }

    /// Decide messages with at least one reply at the server.
    pub fn answered(&self) -> usize {
        self.decide.values().filter(|m| m.replies > 0).count()
    }

    pub fn dlq_records(&self) -> u64 {
        self.decide.values().map(|m| m.dlq_records).sum::<u64>()
            + self.results.values().map(|m| m.dlq_records).sum::<u64>()
    }

    /// The stream sequence of a decide message, by its gateway attempt.
    pub fn seq_of_attempt(&self, request: usize, attempt: u64) -> Option<u64> {
        self.attempts.get(&(request, attempt)).copied()
    }

    /// The request a decide sequence carries, if known.
    pub fn request_of(&self, seq: u64) -> Option<usize> {
        self.decide.get(&seq).map(|m| m.request)
    }

    /// Note something that happened to a message, for the "last event" of a liveness
    /// failure.
    pub fn note(&mut self, cons: Cons, seq: u64, at: u64, what: impl FnOnce() -> String) {
        match cons {
            Cons::Decide => {
                if let Some(m) = self.decide.get_mut(&seq) {
                    m.last = (at, what());
                }
            }
            Cons::Results => {
                if let Some(m) = self.results.get_mut(&seq) {
                    m.last = (at, what());
                }
            }
            _ => {}
        }
    }

    /// The server delivered a message (model checks, INV-01).
    pub fn on_server_delivery(
        &mut self,
        at: u64,
        cons: Cons,
        seq: u64,
        delivered: u64,
        max_deliver: u64,
        was_final: bool,
    ) {
        self.counters.checks += 1;
        if delivered > max_deliver {
            self.fail(
                at,
                "max_deliver_exceeded",
                format!(
                    "{} seq {seq} delivered {delivered} times, max_deliver {max_deliver}",
                    cons.durable()
                ),
            );
        }
        if was_final {
            self.fail(
                at,
                "delivered_after_final",
                format!(
                    "{} seq {seq} delivered again (count {delivered}) after the server acked, terminated or exhausted it",
                    cons.durable()
                ),
            );
        }
    }

    /// A broker crash lost its unsynced tail: these sequences of `stream` are gone.
    pub fn on_tail_lost(&mut self, stream: &str, seqs: &[u64]) {
        self.counters.lost_to_tail += seqs.len() as u64;
        self.tail_lost = true;
        if matches!(stream, "DECIDE" | "RESULTS") {
            self.lost_seqs.extend(seqs.iter().copied());
        }
        match stream {
            "DECIDE" => {
                for seq in seqs {
                    self.decide.remove(seq);
                }
                self.attempts.retain(|_, s| !seqs.contains(s));
            }
            "RESULTS" => {
                for seq in seqs {
                    self.results.remove(seq);
                }
            }
            _ => {}
        }
    }

    /// A DLQ record, ack or usage event of these messages may have vanished: their
    /// end-of-run rules are relaxed to counting.
    pub fn mark_tail_affected(&mut self) {
        for m in self.decide.values_mut() {
            m.tail_affected = true;
        }
        for m in self.results.values_mut() {
            m.tail_affected = true;
        }
    }

    /// A router publish or request failed or timed out.
    pub fn on_failure(&mut self, at: u64, proc: Proc, what: &str, sent_at: u64, detail: &str) {
        // Once the heal has settled (queues drained, clients reconnected) nothing may
        // fail any more: no error storm after recovery (INV-31).
        if sent_at >= self.chaos_end + self.settle_ms {
            self.fail(
                at,
                "failure_after_heal",
                format!(
                    "router-{} {what} sent at {sent_at}ms, after every fault healed at {}ms, failed: {detail}",
                    proc.router + 1,
                    self.chaos_end
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests;
