//! One definition of correct for a simulated run and a real one: the history a router's
//! clients can observe from outside, and the safety rules it must satisfy.
//!
//! A history is what a gateway sent (each request once, with the message ids of its
//! attempts), every reply that reached its inbox, and what the DLQ and usage streams hold
//! at the end. The simulator records one on every run (`Checker`) and judges it with
//! `check` at the end of a passing run; the integration tests against a real nats-server
//! (the server crash, two instances, the 3-node cluster) record theirs with real clients
//! and judge them with the same function. The rules are the simulator's own, under the
//! same invariant names and through the same functions (`reply_problem_as`,
//! `dlq_record_problem`), so a real run and a simulated run cannot disagree on what a
//! right reply or a right DLQ record is.
//!
//! What a history cannot show (which process answered, when a message was acked) stays
//! with the step checkers of the simulator: a real run is judged on less, never on other
//! rules.

use std::collections::{BTreeMap, BTreeSet};

use beamline_router::contracts::subjects::{DECIDE, HEADER_DLQ_REASON};
use beamline_router::contracts::{DlqReason, DlqRecord, UsageEvent};
use serde::Serialize;
use serde_json::Value;

use crate::actors::gateway::{Invalid, RequestKind};
use crate::invariants::{dlq_record_problem, reply_problem_as, sha256_hex, ExpectedReply};

/// One request as its gateway sent it (every attempt carries the same payload).
#[derive(Clone, Debug)]
pub struct SentRequest {
    pub request_id: String,
    pub kind: RequestKind,
    pub tenant: Option<String>,
    /// It carries an `idempotency_key`: every answer to it must be the same bytes when
    /// answers are shared.
    pub keyed: bool,
    pub pii: bool,
    /// The payload, when the recorder knows it (the DLQ record's hash is checked then).
    pub payload: Option<Vec<u8>>,
    /// The `Nats-Msg-Id` of each attempt, when known.
    pub msg_ids: Vec<String>,
}

impl SentRequest {
    /// A valid, keyed request for `tenant`'s default policy: what the tests' gateways send.
    pub fn valid(request_id: &str, tenant: &str) -> Self {
        SentRequest {
            request_id: request_id.to_string(),
            kind: RequestKind::Valid,
            tenant: Some(tenant.to_string()),
            keyed: true,
            pii: false,
            payload: None,
            msg_ids: Vec::new(),
        }
    }
}

/// A message read from a stream: its sequence, headers and payload.
#[derive(Clone, Debug)]
pub struct StoredMessage {
    pub seq: u64,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

#[derive(Clone, Debug, Default)]
pub struct History {
    pub requests: Vec<SentRequest>,
    /// (the request the inbox belonged to, the reply's bytes), in arrival order.
    pub replies: Vec<(String, Vec<u8>)>,
    /// What the decide DLQ stream holds.
    pub dlq: Vec<StoredMessage>,
    /// What the usage stream holds.
    pub usage: Vec<StoredMessage>,
}

/// The settings a history is judged under.
#[derive(Clone, Debug)]
pub struct Rules {
    /// The decide consumer's `max_deliver`.
    pub max_deliver: u64,
    /// Every answer to a keyed request must be the same bytes (answers shared across
    /// instances, or one process that never restarted). Without it, a request decided
    /// again by another process may be answered differently.
    pub identical_replies: bool,
    /// Every request must have a reply or a DLQ record (the run has settled).
    pub settled: bool,
    /// The providers a decision may name.
    pub providers: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HistoryViolation {
    pub invariant: &'static str,
    pub message: String,
}

/// What a judged history held, for the test's log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HistorySummary {
    pub requests: usize,
    pub replies: usize,
    pub duplicate_replies: usize,
    pub dlq_records: usize,
    pub usage_events: usize,
}

/// Judge `history` under `rules`: every violation found, and what was judged.
pub fn check(history: &History, rules: &Rules) -> (HistorySummary, Vec<HistoryViolation>) {
    let mut judge = Judge {
        rules,
        by_id: history
            .requests
            .iter()
            .map(|r| (r.request_id.as_str(), r))
            .collect(),
        violations: Vec::new(),
    };
    let summary = HistorySummary {
        requests: history.requests.len(),
        replies: history.replies.len(),
        duplicate_replies: judge.replies(&history.replies),
        dlq_records: history.dlq.len(),
        usage_events: history.usage.len(),
    };
    let dead_lettered = judge.dlq(&history.dlq);
    judge.usage(&history.usage);
    if rules.settled {
        let answered: BTreeSet<&str> = history.replies.iter().map(|(id, _)| id.as_str()).collect();
        for r in &history.requests {
            let id = r.request_id.as_str();
            if !answered.contains(id) && !dead_lettered.contains(id) {
                judge.fail(
                    "unanswered",
                    format!("{id}: neither a reply nor a DLQ record"),
                );
            }
        }
    }
    (summary, judge.violations)
}

struct Judge<'a> {
    rules: &'a Rules,
    by_id: BTreeMap<&'a str, &'a SentRequest>,
    violations: Vec<HistoryViolation>,
}

impl Judge<'_> {
    fn fail(&mut self, invariant: &'static str, message: String) {
        self.violations
            .push(HistoryViolation { invariant, message });
    }

    /// The reply rules; returns the count of replies beyond a request's first.
    fn replies(&mut self, replies: &[(String, Vec<u8>)]) -> usize {
        let providers: Vec<&str> = self.rules.providers.iter().map(String::as_str).collect();
        let mut first: BTreeMap<&str, &[u8]> = BTreeMap::new();
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (id, bytes) in replies {
            *seen.entry(id).or_default() += 1;
            let Some(r) = self.by_id.get(id.as_str()).copied() else {
                self.fail(
                    "reply_for_unknown_request",
                    format!("a reply for {id}, which nobody sent"),
                );
                continue;
            };
            let expected = ExpectedReply {
                kind: r.kind,
                request_id: &r.request_id,
                pii: r.pii,
                providers: &providers,
            };
            if let Some(problem) = reply_problem_as(bytes, &expected) {
                self.fail("reply_wrong", format!("{id}: {problem}"));
                continue;
            }
            // A refusal for the moment is not recorded under the key: a later attempt may
            // be decided (as in the simulator's rule).
            if matches!(
                error_code(bytes).as_deref(),
                Some("rate_limited" | "delivery_exhausted")
            ) || !(r.keyed && self.rules.identical_replies)
            {
                continue;
            }
            match first.get(id.as_str()) {
                Some(earlier) if *earlier != bytes.as_slice() => {
                    let earlier = String::from_utf8_lossy(earlier).into_owned();
                    self.fail(
                        "replies_differ_across_processes",
                        format!(
                            "{id} answered with different replies: {earlier} vs {}",
                            String::from_utf8_lossy(bytes)
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    first.insert(id, bytes);
                }
            }
        }
        seen.values().map(|n| n - 1).sum()
    }

    /// The DLQ rules; returns the requests a record names.
    fn dlq(&mut self, records: &[StoredMessage]) -> BTreeSet<String> {
        let mut named = BTreeSet::new();
        let mut first_for_seq: BTreeMap<u64, u64> = BTreeMap::new();
        for m in records {
            let record: DlqRecord = match serde_json::from_slice(&m.payload) {
                Ok(r) => r,
                Err(e) => {
                    self.fail(
                        "dlq_record_malformed",
                        format!("DLQ seq {}: not a DLQ record ({e})", m.seq),
                    );
                    continue;
                }
            };
            if record.original_subject != DECIDE {
                continue; // a result's record: not a decide request's fate
            }
            if let Some(first) = first_for_seq.insert(record.stream_seq, m.seq) {
                self.fail(
                    "duplicate_dlq_record",
                    format!(
                        "decide seq {} has DLQ records at DLQ seqs {first} and {}",
                        record.stream_seq, m.seq
                    ),
                );
            }
            let request = self.request_of(&record);
            // An invalid request is refused at intake, or exhausted before it was read
            // (the router overloaded at each delivery): either reason, as in the
            // simulator's step rule.
            let expected = request.and_then(|r| match r.kind {
                RequestKind::Invalid(_) => None,
                _ => Some(DlqReason::MaxdeliverExhausted),
            });
            let reason = header(&m.headers, HEADER_DLQ_REASON);
            let problem =
                dlq_record_problem(&record, reason, expected, None, self.rules.max_deliver)
                    .or_else(|| match request {
                        None => Some(format!(
                            "names request {:?} (payload hash {}), which nobody sent",
                            record.request_id, record.original_payload_hash
                        )),
                        Some(r) => original_problem(&record, r),
                    });
            if let Some(problem) = problem {
                self.fail(
                    "dlq_record_malformed",
                    format!("DLQ seq {}: {problem}", m.seq),
                );
                continue;
            }
            if let Some(r) = request {
                named.insert(r.request_id.clone());
            }
        }
        named
    }

    /// The request a DLQ record is about: by its payload hash, else by the id it names.
    fn request_of(&self, record: &DlqRecord) -> Option<&SentRequest> {
        let by_hash = self.by_id.values().copied().find(|r| {
            r.payload
                .as_ref()
                .is_some_and(|p| sha256_hex(p) == record.original_payload_hash)
        });
        by_hash.or_else(|| {
            let id = record.request_id.as_deref()?;
            let r = self.by_id.get(id).copied()?;
            // A payload that does not hash to the record's is another message.
            r.payload.is_none().then_some(r)
        })
    }

    fn usage(&mut self, events: &[StoredMessage]) {
        let mut first: BTreeMap<String, u64> = BTreeMap::new();
        for m in events {
            let event: UsageEvent = match serde_json::from_slice(&m.payload) {
                Ok(e) => e,
                Err(e) => {
                    self.fail("usage_malformed", format!("usage seq {}: {e}", m.seq));
                    continue;
                }
            };
            if let Some(earlier) = first.insert(event.usage_id.clone(), m.seq) {
                self.fail(
                    "usage_duplicate",
                    format!(
                        "{} stored twice: usage seqs {earlier} and {}",
                        event.usage_id, m.seq
                    ),
                );
            }
            let Some(id) = event.request_id.as_deref() else {
                self.fail("usage_wrong", format!("{}: no request_id", event.usage_id));
                continue;
            };
            match self.by_id.get(id) {
                None => self.fail(
                    "usage_wrong",
                    format!("{}: request {id}, which nobody sent", event.usage_id),
                ),
                Some(r) if r.tenant.as_deref() != Some(event.tenant_id.as_str()) => {
                    let message = format!(
                        "{}: tenant {} for a request of {:?}",
                        event.usage_id, event.tenant_id, r.tenant
                    );
                    self.fail("usage_wrong", message);
                }
                Some(_) => {}
            }
        }
    }
}

/// What ties a DLQ record to its original that the record rules cannot see without it.
fn original_problem(record: &DlqRecord, r: &SentRequest) -> Option<String> {
    if r.kind != RequestKind::Invalid(Invalid::BadJson)
        && record.request_id.as_deref() != Some(r.request_id.as_str())
    {
        return Some(format!(
            "request_id {:?} for a message of {}",
            record.request_id, r.request_id
        ));
    }
    if !r.msg_ids.is_empty()
        && !record
            .msg_id
            .as_ref()
            .is_some_and(|id| r.msg_ids.contains(id))
    {
        return Some(format!(
            "msg_id {:?}, none of {}'s attempts {:?}",
            record.msg_id, r.request_id, r.msg_ids
        ));
    }
    None
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn error_code(payload: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    v.pointer("/error/code")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            max_deliver: 3,
            identical_replies: true,
            settled: true,
            providers: vec!["openai".into(), "anthropic".into()],
        }
    }

    fn decision(id: &str, provider: &str) -> (String, Vec<u8>) {
        let v = serde_json::json!({"ok": true, "decision": {"provider_id": provider},
            "context": {"request_id": id}});
        (id.to_string(), v.to_string().into_bytes())
    }

    fn dlq_record(seq: u64, stream_seq: u64, request_id: &str, reason: &str) -> StoredMessage {
        let v = serde_json::json!({"reason": reason, "original_subject": DECIDE,
            "original_payload_hash": "00", "stream_seq": stream_seq, "delivered": 1,
            "request_id": request_id, "error": {"code": "invalid_request",
            "message": "no tenant", "severity": "error"}, "received_at": 1,
            "router_node_id": "router-1"});
        StoredMessage {
            seq,
            headers: vec![(HEADER_DLQ_REASON.to_string(), reason.to_string())],
            payload: v.to_string().into_bytes(),
        }
    }

    fn invalid(id: &str) -> SentRequest {
        SentRequest {
            kind: RequestKind::Invalid(Invalid::MissingTenant),
            tenant: None,
            ..SentRequest::valid(id, "acme")
        }
    }

    fn invariants(h: &History, rules: &Rules) -> Vec<&'static str> {
        check(h, rules).1.iter().map(|v| v.invariant).collect()
    }

    fn healthy() -> History {
        History {
            requests: vec![SentRequest::valid("r-1", "acme"), invalid("bad-1")],
            replies: vec![decision("r-1", "openai"), decision("r-1", "openai")],
            dlq: vec![dlq_record(1, 2, "bad-1", "validation_failed")],
            usage: Vec::new(),
        }
    }

    #[test]
    fn a_healthy_history_passes_and_is_summed_up() {
        let (summary, violations) = check(&healthy(), &rules());
        assert_eq!(violations, vec![]);
        assert_eq!(summary.duplicate_replies, 1);
        assert_eq!(summary.dlq_records, 1);
    }

    #[test]
    fn different_answers_to_one_key_fail_only_where_they_must_be_identical() {
        let mut h = healthy();
        h.replies.push(decision("r-1", "anthropic"));
        assert_eq!(
            invariants(&h, &rules()),
            ["replies_differ_across_processes"]
        );
        let lenient = Rules {
            identical_replies: false,
            ..rules()
        };
        assert!(invariants(&h, &lenient).is_empty());
    }

    #[test]
    fn wrong_unknown_and_missing_answers_fail() {
        let mut h = healthy();
        h.replies.push(decision("r-1", "mistral"));
        h.replies.push(decision("r-9", "openai"));
        h.requests.push(SentRequest::valid("r-2", "acme"));
        assert_eq!(
            invariants(&h, &rules()),
            ["reply_wrong", "reply_for_unknown_request", "unanswered"]
        );
    }

    #[test]
    fn dlq_records_are_held_to_the_record_rules_once_per_message() {
        let mut h = healthy();
        h.dlq.push(dlq_record(2, 2, "bad-1", "validation_failed"));
        h.dlq.push(dlq_record(3, 7, "r-1", "validation_failed"));
        h.dlq.push(dlq_record(4, 8, "ghost", "validation_failed"));
        assert_eq!(
            invariants(&h, &rules()),
            [
                "duplicate_dlq_record",
                "dlq_record_malformed",
                "dlq_record_malformed"
            ]
        );
    }

    #[test]
    fn a_usage_event_twice_or_for_nobody_fails() {
        let event = |seq: u64, request: &str| {
            let v = serde_json::json!({"version": "1", "usage_id": "usage-a1",
                "tenant_id": "acme", "provider_id": "openai", "event_type": "text.generate",
                "latency_ms": 1, "cost": 0.0, "status": "success", "timestamp": 1,
                "assignment_id": "a1", "request_id": request});
            StoredMessage {
                seq,
                headers: Vec::new(),
                payload: v.to_string().into_bytes(),
            }
        };
        let mut h = healthy();
        h.usage = vec![event(1, "r-1")];
        assert!(invariants(&h, &rules()).is_empty());
        h.usage.push(event(2, "r-7"));
        assert_eq!(invariants(&h, &rules()), ["usage_duplicate", "usage_wrong"]);
    }
}
