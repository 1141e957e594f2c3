//! Liveness (Part C INV-02, 03, 04, 05, 09, 30): once every fault has healed, every
//! accepted message must reach its final state within a bounded time, and the run ends
//! when the whole world is quiet. A message past its deadline fails the run with what a
//! person debugging it needs: its consumer state, delivery count and last event.

use serde::Serialize;

use super::Checker;
use crate::actors::gateway::{RequestKind, Workload};
use crate::jetstream::MessageState;
use crate::wire::Cons;

/// Where one message stands for liveness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finality {
    Final,
    /// Not final yet: the invariant it breaks if it stays so, and why.
    Open(&'static str, String),
}

/// A message that missed its deadline, as reported.
#[derive(Clone, Debug, Serialize)]
pub struct StuckInfo {
    pub cons: Cons,
    pub seq: u64,
    pub state: MessageState,
    pub stored_at: u64,
    pub deadline: u64,
}

impl Checker {
    /// Whether message `seq` of `cons` is in its final state, given where the server
    /// has it.
    pub fn finality(
        &self,
        cons: Cons,
        seq: u64,
        state: MessageState,
        workload: &Workload,
    ) -> Finality {
        let server_done = matches!(
            state,
            MessageState::Acked | MessageState::Terminated | MessageState::Exhausted
        );
        match cons {
            Cons::Decide => {
                let Some(m) = self.decide.get(&seq) else {
                    return if server_done {
                        Finality::Final
                    } else {
                        Finality::Open("stuck", "not acked, terminated or exhausted".into())
                    };
                };
                let invalid = matches!(workload.request(m.request).kind, RequestKind::Invalid(_));
                if !server_done {
                    Finality::Open(
                        "stuck",
                        "the server still has it pending or undelivered".into(),
                    )
                } else if m.tail_affected {
                    Finality::Final
                } else if state == MessageState::Exhausted && m.dlq_records == 0 && m.replies == 0 {
                    // (Exhausted with a reply is fine: the core settled it, and the server
                    // never saw the ack.)
                    Finality::Open(
                        "exhausted_not_dead_lettered",
                        "the server exhausted it and there is neither a DLQ record nor a reply"
                            .into(),
                    )
                } else if m.replies == 0 && m.dlq_records == 0 {
                    Finality::Open("unanswered", "neither a reply nor a DLQ record".into())
                } else if invalid && m.dlq_records == 0 {
                    Finality::Open(
                        "invalid_not_dead_lettered",
                        "refused at intake but no DLQ record".into(),
                    )
                } else {
                    Finality::Final
                }
            }
            Cons::Results => {
                let Some(m) = self.results.get(&seq) else {
                    return if server_done {
                        Finality::Final
                    } else {
                        Finality::Open("stuck", "not acked, terminated or exhausted".into())
                    };
                };
                if !server_done {
                    Finality::Open(
                        "stuck",
                        "the server still has it pending or undelivered".into(),
                    )
                } else if m.tail_affected || state == MessageState::Acked || m.dlq_records > 0 {
                    Finality::Final
                } else if !m.key.as_ref().is_some_and(|k| self.key_settled(k)) {
                    Finality::Open(
                        "exhausted_not_dead_lettered",
                        "terminated or exhausted with neither a DLQ record nor a usage event for its key".into(),
                    )
                } else {
                    Finality::Final
                }
            }
            Cons::Assign | Cons::Usage | Cons::Advisories => {
                if server_done {
                    Finality::Final
                } else {
                    Finality::Open(
                        "stuck",
                        "the server still has it pending or undelivered".into(),
                    )
                }
            }
        }
    }

    /// A result key whose usage event is stored, or one of whose messages was
    /// dead-lettered: a result carrying it needs nothing more.
    fn key_settled(&self, key: &str) -> bool {
        self.usage_stored.contains(&format!("usage-{key}"))
            || self
                .results
                .values()
                .any(|o| o.key.as_deref() == Some(key) && o.dlq_records > 0)
    }

    /// The deadline of a message stored at `stored_at`: the liveness bound after the
    /// later of its storing and the heal.
    pub fn deadline(&self, stored_at: u64, bound: u64) -> u64 {
        stored_at.max(self.chaos_end) + bound
    }

    /// Fail the run for a message past its deadline.
    pub fn stuck(
        &mut self,
        at: u64,
        invariant: &'static str,
        why: &str,
        info: &StuckInfo,
        workload: &Workload,
    ) {
        let about = match info.cons {
            Cons::Decide => self.decide.get(&info.seq).map(|m| {
                let r = workload.request(m.request);
                (
                    format!(" ({} attempt {}, {:?})", r.request_id, m.attempt, r.kind),
                    m.last.clone(),
                )
            }),
            Cons::Results => self
                .results
                .get(&info.seq)
                .map(|m| (format!(" (result for {:?})", m.key), m.last.clone())),
            _ => None,
        };
        let (what, last) = about.unwrap_or_default();
        self.fail_about(
            at,
            invariant,
            Some(info.seq),
            format!(
                "{} seq {}{what}: {why}; consumer state {:?}; stored at {}ms, deadline {}ms; last event at {}ms: {}",
                info.cons.durable(),
                info.seq,
                info.state,
                info.stored_at,
                info.deadline,
                last.0,
                if last.1.is_empty() { "none recorded" } else { &last.1 },
            ),
        );
    }

    /// End-of-run rules, once the world is quiet: every result acked has its usage event
    /// (or was dead-lettered as another message with the same key).
    pub fn finish(&mut self, at: u64, state_of: impl Fn(Cons, u64) -> MessageState) {
        let mut missing = None;
        for (&seq, m) in &self.results {
            let Some(key) = &m.key else { continue };
            if m.tail_affected || state_of(Cons::Results, seq) != MessageState::Acked {
                continue;
            }
            if !self.key_settled(key) {
                missing = Some((seq, format!("usage-{key}")));
                break;
            }
        }
        if let Some((seq, usage)) = missing {
            self.fail_about(
                at,
                "result_without_usage",
                Some(seq),
                format!("result seq {seq} was acked but {usage} was never stored"),
            );
            if self
                .duplicate_acked_keys
                .contains(usage.trim_start_matches("usage-"))
            {
                self.classify(super::known::DUPLICATE_SETTLES_KEY);
            }
        }
        self.counters.exhausted = self
            .decide
            .keys()
            .filter(|&&s| state_of(Cons::Decide, s) == MessageState::Exhausted)
            .count() as u64;
    }
}
