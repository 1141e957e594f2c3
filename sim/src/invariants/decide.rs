//! Decide messages: what each core step may do with them, what a reply must say, and
//! idempotency (docs/BACKGROUND.md "Where we differ"; Part C INV-01, 03, 04, 05, 06, 11, 12, 13, 22).

use beamline_router::contracts::subjects::{self, HEADER_DLQ_REASON, HEADER_MSG_ID};
use beamline_router::contracts::{DlqReason, DlqRecord, ExecAssignment, UsageEvent};
use beamline_router::core::{Command, Publish, PublishKind, Settle, Stats};
use serde_json::Value;

use super::{Attr, Checker, DecideMsg, Proc, ResultMsg, SeenReply};
use crate::actors::gateway::{parse_inbox, Invalid, PlannedRequest, RequestKind, Workload};
use crate::host::DeliveryRef;
use crate::wire::Cons;

/// Error codes an extension pipeline may end with (docs/API_CONTRACTS.md, "Replies").
const EXTENSION_CODES: [&str; 7] = [
    "extension_not_found",
    "extension_timeout",
    "validator_blocked",
    "post_processor_failed",
    "extension_unavailable",
    "extension_error",
    "internal",
];

/// A stored message, as the DLQ record rules need it.
pub struct Original<'a> {
    pub subject: &'a str,
    pub headers: &'a [(String, String)],
    pub payload: &'a [u8],
}

/// What one core step is about.
#[derive(Clone, Copy, Debug)]
pub struct StepInput {
    /// The message of a `Delivery` or `Exhausted` input.
    pub message: Option<(Cons, u64)>,
}

impl Checker {
    /// A gateway attempt was stored as decide message `seq` (an accepted request).
    pub fn on_decide_stored(&mut self, at: u64, seq: u64, request: usize, attempt: u64) {
        self.attempts.insert((request, attempt), seq);
        self.decide.insert(
            seq,
            DecideMsg {
                request,
                attempt,
                replies: 0,
                dlq_records: 0,
                dlq_first_at: None,
                tail_affected: false,
                last: (at, "stored".to_string()),
            },
        );
    }

    /// A process handed its core a delivery of decide message `seq`.
    pub fn on_core_delivery(&mut self, at: u64, proc: Proc, seq: u64) {
        self.first_delivery.entry((proc, seq)).or_insert(at);
    }

    /// Whether `proc` ever held two messages of `request` at once, the second arriving
    /// before its first decision for the request (`known::CONCURRENT_SAME_KEY`).
    fn concurrent(&self, request: usize, proc: Proc) -> bool {
        self.concurrent_requests.contains(&(request, proc))
    }

    /// A reply for decide message `seq` of `request`: note the process's first decision
    /// for the request, and whether this message was already there when it was made.
    fn note_decision(&mut self, at: u64, proc: Proc, request: usize, seq: u64) {
        match self.first_decision.get(&(request, proc)) {
            None => {
                self.first_decision.insert((request, proc), (at, seq));
            }
            Some(&(decided, first_seq)) => {
                let got = self.first_delivery.get(&(proc, seq)).copied();
                if first_seq != seq && got.is_some_and(|got| got <= decided) {
                    self.concurrent_requests.insert((request, proc));
                }
            }
        }
    }

    /// A CAF result was stored as result message `seq`.
    pub fn on_result_stored(&mut self, at: u64, seq: u64, payload: &[u8]) {
        let key = result_key(payload);
        self.results.insert(
            seq,
            ResultMsg {
                key,
                dlq_records: 0,
                dlq_first_at: None,
                tail_affected: false,
                last: (at, "stored".to_string()),
            },
        );
    }

    /// Everything a router process did in one step. `delivery` maps the core's delivery
    /// ids to what the server delivered; `original` reads a stored message back.
    #[allow(clippy::too_many_arguments)]
    pub fn on_core_step<'o>(
        &mut self,
        at: u64,
        proc: Proc,
        input: StepInput,
        commands: &[Command],
        delivery: impl Fn(u64) -> Option<DeliveryRef>,
        original: impl Fn(Cons, u64) -> Option<Original<'o>>,
        pending: &dyn Fn(Cons, u64) -> bool,
        workload: &Workload,
        before: &Stats,
        after: &Stats,
    ) {
        self.counters.checks += 1;
        let mut reply_seq = None;
        for c in commands {
            if let Command::Publish(p) = c {
                let attr = self.attribute(at, proc, input, p, reply_seq, &original, workload);
                if let Attr::Reply { seq } = attr {
                    reply_seq = Some(seq);
                    if let Some(request) = self.decide.get(&seq).map(|m| m.request) {
                        self.note_decision(at, proc, request, seq);
                    }
                }
                self.publish_sent_at.insert((proc, p.id), at);
                self.publishes.insert((proc, p.id), attr);
            }
        }
        // INV-22: a backpressure nak is the whole handling of the message.
        if after.backpressure_naks > before.backpressure_naks
            && commands.iter().any(|c| matches!(c, Command::Publish(_)))
        {
            self.fail(
                at,
                "backpressure_side_effect",
                format!(
                    "router-{} nak'ed a message for backpressure and published in the same step",
                    proc.router + 1
                ),
            );
        }
        for c in commands {
            let (id, what) = match c {
                Command::Settle { delivery, how } => match how {
                    Settle::Ack => (*delivery, "ack"),
                    Settle::Term => (*delivery, "term"),
                    Settle::Nak { .. } => (*delivery, "nak"),
                    Settle::Progress => continue,
                },
                _ => continue,
            };
            let Some(d) = delivery(id) else {
                continue; // the world reports unknown deliveries itself
            };
            self.note(d.cons, d.stream_seq, at, || {
                format!(
                    "router-{} {what} of delivery {}",
                    proc.router + 1,
                    d.delivered
                )
            });
            match (what, d.cons) {
                ("ack", Cons::Decide) => self.check_decide_ack(at, proc, d),
                ("ack", Cons::Results) => self.check_result_ack(at, proc, d, pending),
                ("term", Cons::Decide | Cons::Results) => self.check_term(at, proc, d),
                ("nak", Cons::Decide | Cons::Results) if d.delivered >= self.max_deliver => {
                    // INV-04: the core trusts the server's count; at the limit it
                    // dead-letters instead of giving the message back, overloaded or
                    // not (a nak there would leave the message to the MAX_DELIVERIES
                    // advisory, which a leaderless advisory stream loses).
                    self.fail(
                        at,
                        "nak_at_last_delivery",
                        format!(
                            "router-{} nak'ed {} seq {} at delivery {} of max_deliver {}",
                            proc.router + 1,
                            d.cons.durable(),
                            d.stream_seq,
                            d.delivered,
                            self.max_deliver
                        ),
                    );
                }
                _ => {}
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn attribute<'o>(
        &mut self,
        at: u64,
        proc: Proc,
        input: StepInput,
        p: &Publish,
        reply_seq: Option<u64>,
        original: &impl Fn(Cons, u64) -> Option<Original<'o>>,
        workload: &Workload,
    ) -> Attr {
        let header_id = p
            .headers
            .iter()
            .find(|(k, _)| k == HEADER_MSG_ID)
            .map(|(_, v)| v.as_str());
        if let (Some(h), Some(m)) = (header_id, &p.msg_id) {
            if h != m {
                self.fail(
                    at,
                    "msg_id_mismatch",
                    format!("publish {}: header {h} vs msg_id {m}", p.id),
                );
            }
        }
        if p.kind == PublishKind::Core {
            if let Some((request, attempt)) = parse_inbox(&p.subject) {
                return match self.seq_of_attempt(request, attempt) {
                    Some(seq) => Attr::Reply { seq },
                    // Its message vanished with the broker's unsynced tail after the
                    // router got it (`--tail-loss`).
                    None if self.tail_lost => Attr::Other,
                    None => {
                        self.fail(
                            at,
                            "reply_for_unknown_request",
                            format!(
                                "publish {} to {} before its request was stored",
                                p.id, p.subject
                            ),
                        );
                        Attr::Other
                    }
                };
            }
            if p.subject == subjects::DECIDE_REPLY {
                self.fail(
                    at,
                    "reply_misrouted",
                    format!(
                        "reply published to {} although the request named its Reply-To",
                        p.subject
                    ),
                );
            }
            return Attr::Other;
        }
        let dlq_cons = match p.subject.as_str() {
            subjects::DECIDE_DLQ => Some(Cons::Decide),
            subjects::RESULT_DLQ => Some(Cons::Results),
            _ => None,
        };
        if let Some(cons) = dlq_cons {
            return self.attribute_dlq(at, cons, p, original, workload);
        }
        if p.subject == subjects::USAGE {
            let Ok(event) = serde_json::from_slice::<UsageEvent>(&p.payload) else {
                self.fail(
                    at,
                    "usage_malformed",
                    format!("publish {} is not a UsageEvent", p.id),
                );
                return Attr::Other;
            };
            let key = event
                .assignment_id
                .clone()
                .or(event.request_id.clone())
                .unwrap_or_default();
            let want = format!("usage-{key}");
            if p.msg_id.as_deref() != Some(want.as_str()) || event.usage_id != want {
                self.fail(
                    at,
                    "msg_id_unstable",
                    format!(
                        "usage event for {key} has msg id {:?} and usage_id {}, want {want}",
                        p.msg_id, event.usage_id
                    ),
                );
            }
            let seq = match input.message {
                Some((Cons::Results, seq)) => Some(seq),
                _ => None,
            };
            if let Some(seq) = seq {
                self.usage_for_result.insert((proc, seq), want);
            }
            return Attr::Usage { seq, key };
        }
        if let Ok(a) = serde_json::from_slice::<ExecAssignment>(&p.payload) {
            return self.attribute_assignment(at, proc, p, a, reply_seq, workload);
        }
        Attr::Other
    }

    fn attribute_dlq<'o>(
        &mut self,
        at: u64,
        cons: Cons,
        p: &Publish,
        original: &impl Fn(Cons, u64) -> Option<Original<'o>>,
        workload: &Workload,
    ) -> Attr {
        let record = match serde_json::from_slice::<DlqRecord>(&p.payload) {
            Ok(r) => r,
            Err(e) => {
                self.fail(at, "dlq_record_malformed", format!("publish {}: {e}", p.id));
                return Attr::Other;
            }
        };
        let seq = record.stream_seq;
        let want = dlq_msg_id(cons, seq);
        if p.msg_id.as_deref() != Some(want.as_str()) {
            self.fail(
                at,
                "msg_id_unstable",
                format!(
                    "DLQ record for seq {seq} has msg id {:?}, want {want}",
                    p.msg_id
                ),
            );
        }
        let expected_reason = match cons {
            Cons::Decide => match self.decide.get(&seq) {
                None if self.lost_seqs.contains(&seq) => return Attr::Other,
                None => {
                    self.fail(
                        at,
                        "reply_for_unknown_request",
                        format!("DLQ record names decide seq {seq}, never stored"),
                    );
                    return Attr::Other;
                }
                Some(m) => match workload.request(m.request).kind {
                    // Refused at intake, or exhausted before the core ever read it.
                    RequestKind::Invalid(_) => None,
                    _ => Some(DlqReason::MaxdeliverExhausted),
                },
            },
            _ => self
                .results
                .get(&seq)
                .and_then(|m| m.key.as_ref().map(|_| DlqReason::MaxdeliverExhausted)),
        };
        let header_reason = p
            .headers
            .iter()
            .find(|(k, _)| k == HEADER_DLQ_REASON)
            .map(|(_, v)| v.as_str());
        let problem = dlq_record_problem(
            &record,
            header_reason,
            expected_reason,
            original(cons, seq).as_ref(),
            self.max_deliver,
        );
        if let Some(problem) = problem {
            self.fail_about(
                at,
                "dlq_record_malformed",
                Some(seq),
                format!("DLQ record for {} seq {seq}: {problem}", cons.durable()),
            );
        }
        Attr::Dlq { cons, seq }
    }

    fn attribute_assignment(
        &mut self,
        at: u64,
        proc: Proc,
        p: &Publish,
        a: ExecAssignment,
        reply_seq: Option<u64>,
        workload: &Workload,
    ) -> Attr {
        if p.msg_id.as_deref() != Some(a.assignment_id.as_str()) {
            self.fail(
                at,
                "msg_id_unstable",
                format!(
                    "assignment {} published with msg id {:?}",
                    a.assignment_id, p.msg_id
                ),
            );
        }
        let Some(request) = workload.by_request_id(&a.request_id) else {
            self.fail(
                at,
                "assignment_wrong",
                format!("assignment for unknown request {}", a.request_id),
            );
            return Attr::Other;
        };
        if let Some(problem) = assignment_problem(&a, workload.request(request)) {
            self.fail(
                at,
                "assignment_wrong",
                format!("{}: {problem}", a.request_id),
            );
        }
        if let Some(seq) = reply_seq {
            self.assignments_for_seq
                .entry((proc, seq))
                .or_default()
                .insert(a.assignment_id.clone());
        }
        let mine = self
            .assignments_by_request
            .entry((request, proc))
            .or_default();
        mine.insert(a.assignment_id.clone());
        let mine = mine.clone();
        if mine.len() > 1 {
            // INV-05/12: one decision, so at most one assignment, per request.
            let concurrent = self.concurrent(request, proc);
            self.fail_about(
                at,
                "second_assignment",
                reply_seq,
                format!(
                    "router-{} (incarnation {}) published assignments {:?} for {}",
                    proc.router + 1,
                    proc.incarnation,
                    mine,
                    a.request_id
                ),
            );
            if concurrent {
                self.classify(super::known::CONCURRENT_SAME_KEY);
            }
        }
        let others = self
            .assignments_by_request
            .iter()
            .filter(|((r, q), ids)| *r == request && *q != proc && !ids.contains(&a.assignment_id))
            .count();
        if others > 0 && mine.len() == 1 {
            self.counters.cross_process_assignments += 1;
        }
        Attr::Assignment {
            seq: reply_seq,
            assignment_id: a.assignment_id,
        }
    }

    fn check_decide_ack(&mut self, at: u64, proc: Proc, d: DeliveryRef) {
        let seq = d.stream_seq;
        let Some(m) = self.decide.get(&seq) else {
            return;
        };
        if m.replies == 0 {
            self.fail_about(
                at,
                "ack_before_reply_confirmed",
                Some(seq),
                format!("router-{} acked decide seq {seq} (delivery {}) before any reply for it reached the server", proc.router + 1, d.delivered),
            );
        }
        if let Some(ids) = self.assignments_for_seq.get(&(proc, seq)) {
            if let Some(missing) = ids.iter().find(|id| !self.assignments.contains_key(*id)) {
                let missing = missing.clone();
                self.fail_about(
                    at,
                    "ack_before_assignment_confirmed",
                    Some(seq),
                    format!("router-{} acked decide seq {seq} before its assignment {missing} was stored", proc.router + 1),
                );
            }
        }
    }

    /// A result may be acked once its usage event is stored, or as a duplicate while
    /// another message with the same key (its carrier) is still pending at the server.
    fn check_result_ack(
        &mut self,
        at: u64,
        proc: Proc,
        d: DeliveryRef,
        pending: &dyn Fn(Cons, u64) -> bool,
    ) {
        let seq = d.stream_seq;
        let Some(key) = self.results.get(&seq).and_then(|m| m.key.clone()) else {
            return;
        };
        if self.usage_stored.contains(&format!("usage-{key}")) {
            return;
        }
        let carrier = self
            .results
            .iter()
            .any(|(&s, m)| s != seq && m.key.as_ref() == Some(&key) && pending(Cons::Results, s));
        if carrier {
            // Acked as a duplicate of the carrier: the core marks the key settled now
            // (`known::DUPLICATE_SETTLES_KEY`).
            self.duplicate_acked_keys.insert(key);
        } else {
            self.fail_about(
                at,
                "ack_before_usage_confirmed",
                Some(seq),
                format!("router-{} acked result seq {seq} before usage-{key} was stored, with no other message carrying it", proc.router + 1),
            );
            if self.duplicate_acked_keys.contains(&key) {
                self.classify(super::known::DUPLICATE_SETTLES_KEY);
            }
        }
    }

    fn check_term(&mut self, at: u64, proc: Proc, d: DeliveryRef) {
        let seq = d.stream_seq;
        let records = match d.cons {
            Cons::Decide => self.decide.get(&seq).map(|m| m.dlq_records),
            _ => self.results.get(&seq).map(|m| m.dlq_records),
        };
        if records == Some(0) {
            self.fail_about(
                at,
                "term_before_dlq_confirmed",
                Some(seq),
                format!(
                    "router-{} terminated {} seq {seq} before a DLQ record for it was stored",
                    proc.router + 1,
                    d.cons.durable()
                ),
            );
        }
    }

    /// A router's reply reached the server (and so the gateway's subscription).
    pub fn on_reply_at_server(
        &mut self,
        at: u64,
        proc: Proc,
        seq: u64,
        payload: &[u8],
        workload: &Workload,
    ) {
        self.counters.checks += 1;
        let Some(m) = self.decide.get_mut(&seq) else {
            return;
        };
        m.replies += 1;
        if m.replies > 1 {
            self.counters.duplicate_replies += 1;
        }
        m.last = (
            at,
            format!("router-{} reply reached the server", proc.router + 1),
        );
        let request = m.request;
        let r = workload.request(request);
        self.history
            .replies
            .push((r.request_id.clone(), payload.to_vec()));
        if let Some(problem) = reply_problem(payload, r) {
            self.fail_about(
                at,
                "reply_wrong",
                Some(seq),
                format!("seq {seq} ({}): {problem}", r.request_id),
            );
            return;
        }
        if matches!(
            error_code(payload).as_deref(),
            Some("rate_limited" | "delivery_exhausted")
        ) {
            return; // not recorded under the key: a later attempt may be decided
        }
        let same_proc_differs = self.replies.get(&request).and_then(|seen| {
            seen.iter()
                .find(|s| s.proc == proc && s.bytes != payload)
                .map(|s| s.bytes.clone())
        });
        if let Some(first) = same_proc_differs {
            let first = String::from_utf8_lossy(&first).into_owned();
            let concurrent = self.concurrent(request, proc);
            self.fail_about(
                at,
                "replies_differ",
                Some(seq),
                format!(
                    "{} answered twice by router-{} (incarnation {}) with different replies: {first} vs {}",
                    r.request_id,
                    proc.router + 1,
                    proc.incarnation,
                    String::from_utf8_lossy(payload)
                ),
            );
            if concurrent {
                self.classify(super::known::CONCURRENT_SAME_KEY);
            }
            return;
        }
        let seen = self.replies.entry(request).or_default();
        let other = seen
            .iter()
            .find(|s| s.proc != proc && s.bytes != payload)
            .cloned();
        if !seen.iter().any(|s| s.proc == proc) {
            seen.push(SeenReply {
                proc,
                bytes: payload.to_vec(),
            });
        }
        if let Some(other) = other {
            self.counters.cross_process_divergence += 1;
            // Shared answers promise this for keyed requests; without them only
            // `--strict` asks it (the book is per process).
            if self.strict_idempotency || (self.shared_answers && r.has_key) {
                self.fail(
                    at,
                    "replies_differ_across_processes",
                    format!(
                        "{} answered by router-{} (incarnation {}) and router-{} (incarnation {}) with different replies: {} vs {}",
                        r.request_id,
                        other.proc.router + 1,
                        other.proc.incarnation,
                        proc.router + 1,
                        proc.incarnation,
                        String::from_utf8_lossy(&other.bytes),
                        String::from_utf8_lossy(payload)
                    ),
                );
            }
        }
    }

    /// A DLQ record for (consumer, seq) was stored, or deduped.
    pub fn on_dlq_stored(&mut self, at: u64, cons: Cons, seq: u64, duplicate: bool) {
        if duplicate {
            return;
        }
        let record = |dlq_records: &mut u64, first: &mut Option<u64>, last: &mut (u64, String)| {
            *dlq_records += 1;
            *last = (at, "DLQ record stored".to_string());
            let first_at = *first.get_or_insert(at);
            (*dlq_records, first_at)
        };
        let records = match cons {
            Cons::Decide => self
                .decide
                .get_mut(&seq)
                .map(|m| record(&mut m.dlq_records, &mut m.dlq_first_at, &mut m.last)),
            _ => self
                .results
                .get_mut(&seq)
                .map(|m| record(&mut m.dlq_records, &mut m.dlq_first_at, &mut m.last)),
        };
        if let Some((n, first_at)) = records.filter(|&(n, _)| n > 1) {
            self.fail_about(
                at,
                "duplicate_dlq_record",
                Some(seq),
                format!(
                    "{} seq {seq} has {n} DLQ records, the first stored at {first_at}ms",
                    cons.durable()
                ),
            );
            if at >= first_at + self.output_window_ms {
                self.classify(super::known::DEDUPE_WINDOW);
            }
        }
    }
}

/// The correlation key of a result payload intake would accept, if it would.
fn result_key(payload: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    v.get("tenant_id")?.as_str()?;
    v.get("assignment_id")
        .or(v.get("request_id"))?
        .as_str()
        .map(str::to_string)
}

fn error_code(payload: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    v.pointer("/error/code")?.as_str().map(str::to_string)
}

/// What is wrong with `payload` as the reply to request `r`, if anything.
pub fn reply_problem(payload: &[u8], r: &PlannedRequest) -> Option<String> {
    let expected = ExpectedReply {
        kind: r.kind,
        request_id: &r.request_id,
        pii: r.pii,
        providers: &crate::policies::PROVIDERS,
    };
    reply_problem_as(payload, &expected)
}

/// What a reply must be, from what its request was: the simulated world's requests and a
/// real-server test's (`crate::history`) are held to one rule.
#[derive(Clone, Copy, Debug)]
pub struct ExpectedReply<'a> {
    pub kind: RequestKind,
    pub request_id: &'a str,
    /// The request's text holds PII (the validator must refuse it).
    pub pii: bool,
    /// The providers a decision may name.
    pub providers: &'a [&'a str],
}

/// What is wrong with `payload` as the reply `r` describes, if anything.
pub fn reply_problem_as(payload: &[u8], r: &ExpectedReply<'_>) -> Option<String> {
    let v: Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(e) => return Some(format!("reply is not JSON: {e}")),
    };
    let Some(ok) = v.get("ok").and_then(Value::as_bool) else {
        return Some("reply has no boolean `ok`".to_string());
    };
    // A request that did not parse has no request_id the router could echo.
    if r.kind != RequestKind::Invalid(Invalid::BadJson) {
        let echoed = v.pointer("/context/request_id").and_then(Value::as_str);
        if echoed != Some(r.request_id) {
            return Some(format!("reply names request {echoed:?}"));
        }
    }
    let code = v.pointer("/error/code").and_then(Value::as_str);
    if !ok && code == Some("delivery_exhausted") {
        // Any request the server gave up on before it was answered (it was dead-lettered).
        return None;
    }
    if ok {
        let provider = v.pointer("/decision/provider_id").and_then(Value::as_str);
        if !provider.is_some_and(|p| r.providers.contains(&p)) {
            return Some(format!("a success names provider {provider:?}"));
        }
    }
    let fine = match (r.kind, ok) {
        (RequestKind::Valid, true) | (RequestKind::Limited, true) => true,
        (RequestKind::Valid, false) => code == Some("decision_failed"),
        (RequestKind::Limited, false) => matches!(code, Some("rate_limited" | "decision_failed")),
        (RequestKind::ValidExt, true) => {
            // The validator must really have passed the request, and never with PII.
            let passed = v
                .pointer("/decision/metadata/executed_extensions")
                .and_then(Value::as_array)
                .is_some_and(|items| {
                    items.iter().any(|i| {
                        i.get("id").and_then(Value::as_str) == Some("pii_guard")
                            && i.get("status").and_then(Value::as_str) == Some("ok")
                    })
                });
            passed && !r.pii
        }
        (RequestKind::ValidExt, false) => {
            code.is_some_and(|c| EXTENSION_CODES.contains(&c) || c == "decision_failed")
        }
        (RequestKind::NoPolicy, false) => code == Some("policy_not_found"),
        (RequestKind::Invalid(_), false) => code == Some("invalid_request"),
        _ => false,
    };
    (!fine).then(|| {
        format!(
            "reply ok={ok} code={code:?} for a {:?} request (pii={}): {v}",
            r.kind, r.pii
        )
    })
}

/// What is wrong with a DLQ record, if anything (INV-03).
pub fn dlq_record_problem(
    record: &DlqRecord,
    header_reason: Option<&str>,
    expected: Option<DlqReason>,
    original: Option<&Original<'_>>,
    max_deliver: u64,
) -> Option<String> {
    if let Some(want) = expected {
        if record.reason != want {
            return Some(format!("reason {:?}, want {want:?}", record.reason));
        }
    }
    let reason_str = match record.reason {
        DlqReason::ValidationFailed => "validation_failed",
        DlqReason::MaxdeliverExhausted => "maxdeliver_exhausted",
    };
    if header_reason != Some(reason_str) {
        return Some(format!(
            "header {HEADER_DLQ_REASON} {header_reason:?}, record says {reason_str}"
        ));
    }
    if record.error.code.is_empty()
        || record.error.message.is_empty()
        || record.error.severity.is_empty()
    {
        return Some("error code, message and severity are required".to_string());
    }
    if record.router_node_id.is_empty() {
        return Some("no router_node_id".to_string());
    }
    if record.delivered == 0 || record.delivered > max_deliver {
        return Some(format!(
            "delivered {} outside 1..={max_deliver}",
            record.delivered
        ));
    }
    if let Some(o) = original {
        if record.original_subject != o.subject {
            return Some(format!(
                "original_subject {}, stored under {}",
                record.original_subject, o.subject
            ));
        }
        let hash = sha256_hex(o.payload);
        if record.original_payload_hash != hash {
            return Some(format!(
                "payload hash {} but the stored payload hashes to {hash}",
                record.original_payload_hash
            ));
        }
        let msg_id = o
            .headers
            .iter()
            .find(|(k, _)| k == HEADER_MSG_ID)
            .map(|(_, v)| v.as_str());
        if record.msg_id.as_deref() != msg_id {
            return Some(format!(
                "msg_id {:?}, the original's is {msg_id:?}",
                record.msg_id
            ));
        }
    }
    None
}

/// What is wrong with an assignment for request `r`, if anything (INV-05, INV-32).
pub fn assignment_problem(a: &ExecAssignment, r: &PlannedRequest) -> Option<String> {
    if !r.push_assignment || !matches!(r.kind, RequestKind::Valid | RequestKind::ValidExt) {
        return Some(format!(
            "the request ({:?}) did not ask for an assignment",
            r.kind
        ));
    }
    if Some(a.tenant_id.as_str()) != r.tenant {
        return Some(format!(
            "tenant {} for a request of {:?}",
            a.tenant_id, r.tenant
        ));
    }
    if let Some(h) = &r.trace_header {
        if a.correlation.trace_id.as_ref() != Some(h) {
            return Some(format!(
                "trace_id {:?}, but the request's header said {h} (headers win)",
                a.correlation.trace_id
            ));
        }
    }
    if !crate::policies::PROVIDERS.contains(&a.executor.provider_id.as_str()) {
        return Some(format!("executor {}", a.executor.provider_id));
    }
    None
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::gateway::GatewayConfig;
    use crate::rng::SimRng;

    fn workload() -> Workload {
        Workload::plan(
            &mut SimRng::stream(9, "gateway"),
            SimRng::stream(9, "burst"),
            40,
            1_000,
            1,
            GatewayConfig {
                reply_timeout_ms: 1,
                max_attempts: 1,
                publish_timeout_ms: 1,
                status_poll_ms: 1,
                mix: Default::default(),
            },
        )
    }

    fn of_kind(w: &Workload, kind: RequestKind) -> PlannedRequest {
        w.requests()
            .iter()
            .find(|r| r.kind == kind)
            .cloned()
            .unwrap()
    }

    #[test]
    fn reply_rules_catch_wrong_answers() {
        let w = workload();
        let valid = of_kind(&w, RequestKind::Valid);
        let ok = format!(
            r#"{{"ok":true,"decision":{{"provider_id":"openai"}},"context":{{"request_id":"{}"}}}}"#,
            valid.request_id
        );
        assert_eq!(reply_problem(ok.as_bytes(), &valid), None);
        let wrong_id =
            r#"{"ok":true,"decision":{"provider_id":"openai"},"context":{"request_id":"r-x"}}"#;
        assert!(reply_problem(wrong_id.as_bytes(), &valid).is_some());
        let refused = format!(
            r#"{{"ok":false,"error":{{"code":"policy_not_found"}},"context":{{"request_id":"{}"}}}}"#,
            valid.request_id
        );
        assert!(reply_problem(refused.as_bytes(), &valid).is_some());
        assert!(reply_problem(b"not json", &valid).is_some());
        let no_policy = of_kind(&w, RequestKind::NoPolicy);
        let nf = format!(
            r#"{{"ok":false,"error":{{"code":"policy_not_found"}},"context":{{"request_id":"{}"}}}}"#,
            no_policy.request_id
        );
        assert_eq!(reply_problem(nf.as_bytes(), &no_policy), None);
    }

    #[test]
    fn an_extension_success_must_show_the_validator_passed() {
        let w = workload();
        let mut ext = of_kind(&w, RequestKind::ValidExt);
        ext.pii = false;
        let with = |status: &str| {
            format!(
                r#"{{"ok":true,"decision":{{"provider_id":"openai","metadata":{{"executed_extensions":[{{"type":"validator","id":"pii_guard","status":"{status}"}}]}}}},"context":{{"request_id":"{}"}}}}"#,
                ext.request_id
            )
        };
        assert_eq!(reply_problem(with("ok").as_bytes(), &ext), None);
        assert!(reply_problem(with("warn").as_bytes(), &ext).is_some());
        ext.pii = true;
        assert!(reply_problem(with("ok").as_bytes(), &ext).is_some());
    }

    #[test]
    fn dlq_record_rules_catch_a_bad_hash_and_reason() {
        let payload = b"{\"x\":1}";
        let headers = vec![(HEADER_MSG_ID.to_string(), "gw-1-1".to_string())];
        let original = Original {
            subject: subjects::DECIDE,
            headers: &headers,
            payload,
        };
        let mut record = DlqRecord {
            reason: DlqReason::ValidationFailed,
            original_subject: subjects::DECIDE.to_string(),
            original_payload_hash: sha256_hex(payload),
            stream_seq: 1,
            delivered: 1,
            msg_id: Some("gw-1-1".to_string()),
            request_id: None,
            tenant_id: None,
            trace_id: None,
            error: beamline_router::contracts::DlqError {
                code: "X".into(),
                message: "m".into(),
                severity: "error".into(),
            },
            received_at: 0,
            router_node_id: "router-1".into(),
        };
        let ok = dlq_record_problem(
            &record,
            Some("validation_failed"),
            Some(DlqReason::ValidationFailed),
            Some(&original),
            3,
        );
        assert_eq!(ok, None);
        assert!(dlq_record_problem(
            &record,
            Some("validation_failed"),
            Some(DlqReason::MaxdeliverExhausted),
            Some(&original),
            3
        )
        .is_some());
        assert!(dlq_record_problem(
            &record,
            Some("maxdeliver_exhausted"),
            None,
            Some(&original),
            3
        )
        .is_some());
        record.original_payload_hash = "00".into();
        assert!(
            dlq_record_problem(&record, Some("validation_failed"), None, Some(&original), 3)
                .is_some()
        );
    }
}

/// The DLQ record's `Nats-Msg-Id` the contract gives message `seq` of `dlq_subject`'s
/// DLQ (docs/API_CONTRACTS.md: `dlq-<seq>` for decide, `dlq-<dlq subject>-<seq>`
/// otherwise). Written from the contract, not borrowed from the core: it is what the
/// checker holds the core to.
pub fn dlq_msg_id(cons: Cons, seq: u64) -> String {
    match cons {
        Cons::Decide => format!("dlq-{seq}"),
        _ => format!("dlq-results-{seq}"),
    }
}

#[cfg(test)]
mod msg_id_tests {
    use super::*;

    #[test]
    fn dlq_msg_ids_follow_the_contract() {
        assert_eq!(dlq_msg_id(Cons::Decide, 7), "dlq-7");
        assert_eq!(dlq_msg_id(Cons::Results, 7), "dlq-results-7");
    }
}
