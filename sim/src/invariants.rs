//! The checkers. Safety rules are checked at the step where they could break (an ack, a
//! term, a delivery, a reply reaching the server); liveness rules at the end of the run,
//! after the liveness phase. The first violation ends the run with verdict `fail`.
//!
//! Every rule is about one stream message (a stream sequence of the decide stream):
//!
//! - `ack_before_reply_confirmed`: the core acked a delivery of a message whose reply
//!   publish it had not been told was confirmed.
//! - `term_before_dlq_confirmed`: the core terminated a message without a confirmed DLQ
//!   record for it.
//! - `max_deliver_exceeded`: the server delivered a message more than `max_deliver` times
//!   (a check on the JetStream model itself).
//! - `replies_differ`: a message answered twice got two different replies. Identical
//!   duplicates are allowed (at-least-once) and counted.
//! - `reply_wrong`: a reply is not JSON, has no boolean `ok`, names another request, or
//!   its `ok` contradicts the request (valid -> true; no policy or invalid -> false).
//! - `duplicate_dlq_record`: two DLQ records stored for one message.
//! - `unanswered`: at the end, a message has neither a reply nor a DLQ record.
//! - `exhausted_unseen`: the same, for a message the server exhausted while the router
//!   never received its final delivery (it was lost in transit). The core cannot know
//!   about such a message until it is told of the server's `MAX_DELIVERIES` advisory,
//!   which the core interface has no input for yet. It is counted, and fails the run only
//!   with `SimOptions::strict_exhaustion`.
//! - `stuck`: at the end, a message is still pending or undelivered on the consumer.
//! - `invalid_not_dead_lettered`: at the end, a request refused at intake has no DLQ record.
//! - contract checks on the core's commands: `unknown_delivery`, `publish_id_reused`,
//!   `msg_id_mismatch`, `dlq_record_malformed`, `reply_for_unknown_request`.

use std::collections::BTreeMap;

use beamline_router::contracts::DlqRecord;
use beamline_router::core::{Publish, PublishId, PublishOutcome};
use serde::Serialize;
use serde_json::Value;

use crate::gateway::{Gateway, Invalid, RequestKind};
use crate::jetstream::MessageState;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub invariant: &'static str,
    pub message: String,
    /// Virtual time of the step that broke it.
    pub at: u64,
}

/// What a publish is, as far as the checker can tell from its subject and payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Reply,
    Dlq,
}

#[derive(Debug, Default)]
struct MessageRecord {
    request: usize,
    kind: Option<RequestKind>,
    reply_confirmed: bool,
    dlq_confirmed: bool,
    first_reply: Option<Vec<u8>>,
    replies: u64,
    dlq_records: u64,
    /// The highest delivery count the core itself received for this message.
    core_delivered: u64,
}

#[derive(Debug)]
pub struct Checker {
    max_deliver: u64,
    dlq_subject: String,
    default_reply_subject: String,
    messages: BTreeMap<u64, MessageRecord>,
    request_seq: BTreeMap<usize, u64>,
    publishes: BTreeMap<PublishId, (u64, Role)>,
    duplicate_replies: u64,
    strict_exhaustion: bool,
    exhausted_unseen: u64,
    violation: Option<Violation>,
}

impl Checker {
    pub fn new(
        max_deliver: u64,
        dlq_subject: &str,
        default_reply_subject: &str,
        strict_exhaustion: bool,
    ) -> Self {
        Checker {
            max_deliver,
            dlq_subject: dlq_subject.to_string(),
            default_reply_subject: default_reply_subject.to_string(),
            messages: BTreeMap::new(),
            request_seq: BTreeMap::new(),
            publishes: BTreeMap::new(),
            duplicate_replies: 0,
            strict_exhaustion,
            exhausted_unseen: 0,
            violation: None,
        }
    }

    pub fn violation(&self) -> Option<&Violation> {
        self.violation.as_ref()
    }

    pub fn into_violation(self) -> Option<Violation> {
        self.violation
    }

    /// Record a broken rule. Only the first one is kept: later ones are often its echo.
    pub fn fail(&mut self, at: u64, invariant: &'static str, message: String) {
        if self.violation.is_none() {
            self.violation = Some(Violation {
                invariant,
                message,
                at,
            });
        }
    }

    /// A gateway request was stored as stream message `seq` (an accepted request).
    pub fn on_stored(&mut self, seq: u64, request: usize, kind: RequestKind) {
        self.request_seq.insert(request, seq);
        self.messages.insert(
            seq,
            MessageRecord {
                request,
                kind: Some(kind),
                ..MessageRecord::default()
            },
        );
    }

    pub fn accepted(&self) -> usize {
        self.messages.len()
    }

    /// Stream messages with at least one reply at the server.
    pub fn answered(&self) -> usize {
        self.messages.values().filter(|m| m.replies > 0).count()
    }

    pub fn duplicate_replies(&self) -> u64 {
        self.duplicate_replies
    }

    /// Messages exhausted by the server without the router seeing their final delivery,
    /// left with neither reply nor DLQ record (see `exhausted_unseen` above).
    pub fn exhausted_unseen(&self) -> u64 {
        self.exhausted_unseen
    }

    /// The core received a delivery (it reached the router, unlike one lost in transit).
    pub fn on_core_delivery(&mut self, seq: u64, delivered: u64) {
        if let Some(m) = self.messages.get_mut(&seq) {
            m.core_delivered = m.core_delivered.max(delivered);
        }
    }

    pub fn on_delivery(&mut self, at: u64, seq: u64, delivered: u64) {
        if delivered > self.max_deliver {
            self.fail(
                at,
                "max_deliver_exceeded",
                format!(
                    "seq {seq} delivered {delivered} times, max_deliver {}",
                    self.max_deliver
                ),
            );
        }
    }

    /// The core emitted a publish: work out which message it belongs to.
    pub fn on_publish_sent(&mut self, at: u64, p: &Publish, gateway: &Gateway) {
        let attributed = if p.subject == self.dlq_subject {
            match serde_json::from_slice::<DlqRecord>(&p.payload) {
                Ok(record) => Some((record.stream_seq, Role::Dlq)),
                Err(e) => {
                    self.fail(at, "dlq_record_malformed", format!("publish {}: {e}", p.id));
                    None
                }
            }
        } else if let Some(request) = gateway.inbox_owner(&p.subject) {
            self.reply_seq(at, p, request)
        } else if p.subject == self.default_reply_subject {
            let request = request_id_of(&p.payload).and_then(|id| gateway.by_request_id(&id));
            match request {
                Some(request) => self.reply_seq(at, p, request),
                None => None,
            }
        } else {
            None
        };
        if let Some((seq, role)) = attributed {
            if !self.messages.contains_key(&seq) {
                self.fail(
                    at,
                    "reply_for_unknown_request",
                    format!("publish {} names seq {seq}, never stored", p.id),
                );
            }
            self.publishes.insert(p.id, (seq, role));
        }
    }

    fn reply_seq(&mut self, at: u64, p: &Publish, request: usize) -> Option<(u64, Role)> {
        match self.request_seq.get(&request) {
            Some(&seq) => Some((seq, Role::Reply)),
            None => {
                self.fail(
                    at,
                    "reply_for_unknown_request",
                    format!(
                        "publish {} to {} before its request was stored",
                        p.id, p.subject
                    ),
                );
                None
            }
        }
    }

    pub fn attribution(&self, id: PublishId) -> Option<(u64, Role)> {
        self.publishes.get(&id).copied()
    }

    /// The core is told how its publish ended.
    pub fn on_publish_done(&mut self, id: PublishId, outcome: &PublishOutcome) {
        if *outcome != PublishOutcome::Confirmed {
            return;
        }
        let Some(&(seq, role)) = self.publishes.get(&id) else {
            return;
        };
        if let Some(m) = self.messages.get_mut(&seq) {
            match role {
                Role::Reply => m.reply_confirmed = true,
                Role::Dlq => m.dlq_confirmed = true,
            }
        }
    }

    pub fn on_ack(&mut self, at: u64, seq: u64, delivery: u64) {
        let confirmed = self.messages.get(&seq).is_some_and(|m| m.reply_confirmed);
        if !confirmed {
            self.fail(
                at,
                "ack_before_reply_confirmed",
                format!(
                    "delivery {delivery} (seq {seq}) acked before any reply for it was confirmed"
                ),
            );
        }
    }

    pub fn on_term(&mut self, at: u64, seq: u64, delivery: u64) {
        let confirmed = self.messages.get(&seq).is_some_and(|m| m.dlq_confirmed);
        if !confirmed {
            self.fail(
                at,
                "term_before_dlq_confirmed",
                format!("delivery {delivery} (seq {seq}) terminated before its DLQ record was confirmed"),
            );
        }
    }

    /// A reply reached the server (and so the gateway's subscription).
    pub fn on_reply_at_server(
        &mut self,
        at: u64,
        id: PublishId,
        payload: &[u8],
        gateway: &Gateway,
    ) {
        let Some((seq, Role::Reply)) = self.attribution(id) else {
            return;
        };
        let Some(m) = self.messages.get_mut(&seq) else {
            return;
        };
        m.replies += 1;
        let request = gateway.request(m.request);
        let problem = reply_problem(payload, &request.request_id, request.kind);
        let differs = match &m.first_reply {
            None => {
                m.first_reply = Some(payload.to_vec());
                false
            }
            Some(first) => {
                self.duplicate_replies += 1;
                first.as_slice() != payload
            }
        };
        if let Some(problem) = problem {
            self.fail(
                at,
                "reply_wrong",
                format!("seq {seq} ({}): {problem}", request.request_id),
            );
        } else if differs {
            self.fail(
                at,
                "replies_differ",
                format!(
                    "seq {seq} ({}) answered twice with different replies: {} vs {}",
                    request.request_id,
                    String::from_utf8_lossy(
                        self.messages[&seq]
                            .first_reply
                            .as_deref()
                            .unwrap_or_default()
                    ),
                    String::from_utf8_lossy(payload)
                ),
            );
        }
    }

    /// A DLQ record for message `seq` was stored (or deduped) in the DLQ stream.
    pub fn on_dlq_stored(&mut self, at: u64, seq: u64, duplicate: bool) {
        if duplicate {
            return;
        }
        let Some(m) = self.messages.get_mut(&seq) else {
            return;
        };
        m.dlq_records += 1;
        let records = m.dlq_records;
        if records > 1 {
            self.fail(
                at,
                "duplicate_dlq_record",
                format!("seq {seq} has {records} DLQ records"),
            );
        }
    }

    /// Liveness, after the liveness phase: every accepted request reached a final state.
    pub fn finish(&mut self, at: u64, state_of: impl Fn(u64) -> MessageState, gateway: &Gateway) {
        let mut problems: Vec<(&'static str, String)> = Vec::new();
        for (&seq, m) in &self.messages {
            let request = &gateway.request(m.request).request_id;
            let state = state_of(seq);
            let missing = if m.replies == 0 && m.dlq_records == 0 {
                Some((
                    "unanswered",
                    format!("seq {seq} ({request}, {:?}) has neither a reply nor a DLQ record; consumer state {state:?}", m.kind),
                ))
            } else if matches!(m.kind, Some(RequestKind::Invalid(_))) && m.dlq_records == 0 {
                Some((
                    "invalid_not_dead_lettered",
                    format!("seq {seq} ({request}) was refused at intake but has no DLQ record; consumer state {state:?}"),
                ))
            } else {
                None
            };
            // The server gave up on it while its final delivery never reached the router:
            // nothing the core was shown could have dead-lettered it.
            let unseen_exhaustion =
                state == MessageState::Exhausted && m.core_delivered < self.max_deliver;
            match missing {
                Some((invariant, message)) if unseen_exhaustion => {
                    self.exhausted_unseen += 1;
                    if self.strict_exhaustion {
                        problems.push((
                            "exhausted_unseen",
                            format!(
                                "{message} ({invariant}): the server exhausted it after {} deliveries, the core saw up to delivery {}",
                                self.max_deliver, m.core_delivered
                            ),
                        ));
                    }
                }
                Some(problem) => problems.push(problem),
                None if matches!(
                    state,
                    MessageState::Pending { .. } | MessageState::Undelivered
                ) =>
                {
                    problems.push((
                        "stuck",
                        format!("seq {seq} ({request}) still {state:?} at the end"),
                    ));
                }
                None => {}
            }
        }
        if let Some((invariant, message)) = problems.into_iter().next() {
            self.fail(at, invariant, message);
        }
    }
}

fn request_id_of(payload: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    v.pointer("/context/request_id")?
        .as_str()
        .map(str::to_string)
}

/// What is wrong with `payload` as the reply to `request_id` of this kind, if anything.
fn reply_problem(payload: &[u8], request_id: &str, kind: RequestKind) -> Option<String> {
    let v: Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(e) => return Some(format!("reply is not JSON: {e}")),
    };
    let Some(ok) = v.get("ok").and_then(Value::as_bool) else {
        return Some("reply has no boolean `ok`".to_string());
    };
    // A request that did not parse has no request_id the router could echo.
    if kind != RequestKind::Invalid(Invalid::BadJson) {
        let echoed = v.pointer("/context/request_id").and_then(Value::as_str);
        if echoed != Some(request_id) {
            return Some(format!("reply names request {echoed:?}"));
        }
    }
    let want_ok = kind == RequestKind::Valid;
    (ok != want_ok).then(|| format!("reply ok={ok} for a {kind:?} request: {v}"))
}
