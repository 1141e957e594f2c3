//! The gateways and their workload. A gateway publishes decide requests into the stream
//! (JetStream publishes with a `Nats-Msg-Id`), and waits for the reply on the attempt's
//! inbox named in `Reply-To`:
//!
//! - a publish whose PubAck does not come (or is an error) is published again with the
//!   same `Nats-Msg-Id`, so stream dedupe absorbs the copy that did arrive;
//! - a request with an `idempotency_key` whose reply does not come in time is sent again
//!   as a new attempt: same `request_id` and `idempotency_key`, a new `Nats-Msg-Id` and a
//!   new inbox. All replies to one request must then be byte-identical.
//!
//! Gateways also poll the router's backpressure status (a core NATS request). Overload
//! bursts (a scheduled fault) add requests on the fly.

use std::collections::BTreeMap;

use beamline_router::contracts::subjects::{self, HEADER_MSG_ID, HEADER_REPLY_TO, HEADER_TRACE_ID};
use beamline_router::core::Headers;
use serde::Serialize;
use serde_json::json;

use super::{ActorTimer, Ids, Out};
use crate::policies::{EXT_POLICY, TENANT_RATE_LIMITED, TENANT_WITHOUT_POLICY, TENANT_WITH_POLICY};
use crate::rng::SimRng;
use crate::wire::Up;

/// Reply inboxes look like `_INBOX.gw.<request>.<attempt>`, as a NATS request's would.
pub const INBOX_PREFIX: &str = "_INBOX.gw.";
/// How many times one attempt's publish is tried before the attempt is given up.
const PUBLISH_TRIES: u64 = 4;
/// How long a backpressure poll waits for its answer.
const POLL_TIMEOUT_MS: u64 = 2_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum RequestKind {
    /// Tenant `acme`, policy `default`: expect a `DecideResponse`.
    Valid,
    /// Tenant `acme`, policy `ext` (three extensions): a decision, or an extension error;
    /// never a decision when the text holds PII.
    ValidExt,
    /// Tenant `initech`, rate limited: a decision or `rate_limited`.
    Limited,
    /// Tenant `globex`, no policy: `policy_not_found`.
    NoPolicy,
    /// Refused at intake: an `invalid_request` reply and a DLQ record.
    Invalid(Invalid),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Invalid {
    BadJson,
    MissingTenant,
    WrongVersion,
}

#[derive(Clone, Debug)]
pub struct PlannedRequest {
    pub index: usize,
    pub gateway: usize,
    pub kind: RequestKind,
    pub request_id: String,
    pub tenant: Option<&'static str>,
    pub has_key: bool,
    pub push_assignment: bool,
    pub pii: bool,
    /// A `trace_id` header (it wins over the payload's).
    pub trace_header: Option<String>,
    pub payload: Vec<u8>,
    pub publish_at: u64,
}

impl PlannedRequest {
    pub fn headers(&self, attempt: u64) -> Headers {
        let mut h = vec![
            (HEADER_MSG_ID.to_string(), msg_id(self.index, attempt)),
            (HEADER_REPLY_TO.to_string(), inbox(self.index, attempt)),
        ];
        if let Some(t) = &self.trace_header {
            h.push((HEADER_TRACE_ID.to_string(), t.clone()));
        }
        h
    }
}

pub fn msg_id(request: usize, attempt: u64) -> String {
    format!("gw-{request}-{attempt}")
}

pub fn inbox(request: usize, attempt: u64) -> String {
    format!("{INBOX_PREFIX}{request}.{attempt}")
}

/// (request, attempt) of an inbox subject.
pub fn parse_inbox(subject: &str) -> Option<(usize, u64)> {
    let (r, a) = subject.strip_prefix(INBOX_PREFIX)?.split_once('.')?;
    Some((r.parse().ok()?, a.parse().ok()?))
}

#[derive(Clone, Debug, Default)]
struct RequestState {
    /// The current attempt (1-based); 0 before the first.
    attempt: u64,
    tries: u64,
    stored: bool,
    replied: bool,
    /// Replied, or out of attempts and waiting for nothing more.
    done: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct GatewayConfig {
    pub reply_timeout_ms: u64,
    pub max_attempts: u64,
    pub publish_timeout_ms: u64,
    pub status_poll_ms: u64,
    pub mix: WorkloadMix,
}

/// What the gateways' requests are made of. The weights of the five request kinds are
/// relative (the default sums to 100: 55 valid, 17 with the extension policy, 8
/// rate-limited, 8 without a policy, 12 refused at intake); the `*_permille` fields are
/// the share of eligible requests that carry an `idempotency_key` (valid kinds), ask for
/// an assignment (`acme` kinds), hold PII text (extension policy) or a `trace_id` header
/// (valid kinds). The default is the swarm's workload; a scenario may set any of it
/// (`scenarios/*.toml`, `[workload]`). With the default, the draws are exactly those of
/// the swarm, so existing seeds keep their traces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct WorkloadMix {
    pub valid: u64,
    pub ext: u64,
    pub limited: u64,
    pub no_policy: u64,
    pub invalid: u64,
    pub idempotency_permille: u64,
    pub assignment_permille: u64,
    pub pii_permille: u64,
    pub trace_header_permille: u64,
}

impl Default for WorkloadMix {
    fn default() -> Self {
        WorkloadMix {
            valid: 55,
            ext: 17,
            limited: 8,
            no_policy: 8,
            invalid: 12,
            idempotency_permille: 900,
            assignment_permille: 500,
            pii_permille: 300,
            trace_header_permille: 300,
        }
    }
}

impl WorkloadMix {
    pub fn is_default(&self) -> bool {
        *self == WorkloadMix::default()
    }

    fn total(&self) -> u64 {
        self.valid + self.ext + self.limited + self.no_policy + self.invalid
    }
}

#[derive(Debug)]
pub struct Workload {
    requests: Vec<PlannedRequest>,
    states: Vec<RequestState>,
    config: GatewayConfig,
    /// publish id -> (request, attempt)
    publishes: BTreeMap<u64, (usize, u64)>,
    /// poll request id -> when sent
    polls: BTreeMap<u64, u64>,
    burst_rng: SimRng,
    gateways: usize,
}

impl Workload {
    /// Plan `count` requests spread over `window_ms`, shared among `gateways`.
    pub fn plan(
        rng: &mut SimRng,
        burst_rng: SimRng,
        count: u64,
        window_ms: u64,
        gateways: usize,
        config: GatewayConfig,
    ) -> Workload {
        let mut w = Workload {
            requests: Vec::new(),
            states: Vec::new(),
            config,
            publishes: BTreeMap::new(),
            polls: BTreeMap::new(),
            burst_rng,
            gateways: gateways.max(1),
        };
        for _ in 0..count {
            let at = rng.below(window_ms.max(1));
            let gateway = rng.below(w.gateways as u64) as usize;
            w.add(rng, gateway, at);
        }
        w
    }

    fn add(&mut self, rng: &mut SimRng, gateway: usize, publish_at: u64) -> usize {
        let index = self.requests.len();
        let mix = self.config.mix;
        // One draw in [0, total) split by the cumulative weights (the default mix draws
        // exactly as the swarm always has: below(100), 55/17/8/8/12).
        let x = rng.below(mix.total().max(1));
        let kind = if x < mix.valid {
            RequestKind::Valid
        } else if x < mix.valid + mix.ext {
            RequestKind::ValidExt
        } else if x < mix.valid + mix.ext + mix.limited {
            RequestKind::Limited
        } else if x < mix.valid + mix.ext + mix.limited + mix.no_policy {
            RequestKind::NoPolicy
        } else {
            RequestKind::Invalid(*rng.pick(&[
                Invalid::BadJson,
                Invalid::MissingTenant,
                Invalid::WrongVersion,
            ]))
        };
        let valid = !matches!(kind, RequestKind::Invalid(_));
        let request = PlannedRequest {
            index,
            gateway,
            kind,
            request_id: format!("r-{index}"),
            tenant: match kind {
                RequestKind::Valid | RequestKind::ValidExt => Some(TENANT_WITH_POLICY),
                RequestKind::Limited => Some(TENANT_RATE_LIMITED),
                RequestKind::NoPolicy => Some(TENANT_WITHOUT_POLICY),
                RequestKind::Invalid(Invalid::MissingTenant) => None,
                RequestKind::Invalid(_) => Some(TENANT_WITH_POLICY),
            },
            has_key: valid && rng.chance(mix.idempotency_permille),
            push_assignment: matches!(kind, RequestKind::Valid | RequestKind::ValidExt)
                && rng.chance(mix.assignment_permille),
            pii: kind == RequestKind::ValidExt && rng.chance(mix.pii_permille),
            trace_header: (valid && rng.chance(mix.trace_header_permille))
                .then(|| format!("hdr-trace-{index}")),
            payload: Vec::new(),
            publish_at,
        };
        let payload = payload(&request);
        self.requests.push(PlannedRequest { payload, ..request });
        self.states.push(RequestState::default());
        index
    }

    /// An overload burst: `count` more requests from `gateway`, within a second.
    pub fn add_burst(&mut self, gateway: usize, count: u64, now: u64) -> Vec<usize> {
        let mut rng = self.burst_rng.clone();
        let added = (0..count)
            .map(|_| {
                let at = now + rng.below(1_000);
                self.add(&mut rng, gateway, at)
            })
            .collect();
        self.burst_rng = rng;
        added
    }

    pub fn requests(&self) -> &[PlannedRequest] {
        &self.requests
    }

    pub fn request(&self, index: usize) -> &PlannedRequest {
        &self.requests[index]
    }

    pub fn len(&self) -> usize {
        self.requests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// The request with this `request_id`, if it is ours.
    pub fn by_request_id(&self, request_id: &str) -> Option<usize> {
        let index: usize = request_id.strip_prefix("r-")?.parse().ok()?;
        (index < self.requests.len()).then_some(index)
    }

    pub fn replied(&self, index: usize) -> bool {
        self.states[index].replied
    }

    /// Attempts started, over all requests (a retry is a new attempt).
    pub fn attempts_total(&self) -> u64 {
        self.states.iter().map(|s| s.attempt).sum()
    }

    /// Every request is replied to or out of attempts.
    pub fn quiet(&self) -> bool {
        self.states.iter().all(|s| s.done)
    }

    /// How many requests are still working, and the first of them.
    pub fn working(&self) -> (usize, Option<usize>) {
        let mut it = self.states.iter().enumerate().filter(|(_, s)| !s.done);
        let first = it.next().map(|(i, _)| i);
        (first.map_or(0, |_| 1 + it.count()), first)
    }

    /// Start a request: its first attempt.
    pub fn start(&mut self, index: usize, now: u64, ids: &mut Ids, out: &mut Out) {
        if self.states[index].attempt == 0 {
            self.new_attempt(index, now, ids, out);
        }
    }

    fn new_attempt(&mut self, index: usize, now: u64, ids: &mut Ids, out: &mut Out) {
        let s = &mut self.states[index];
        s.attempt += 1;
        s.tries = 0;
        s.stored = false;
        let attempt = s.attempt;
        self.publish(index, attempt, now, ids, out);
    }

    fn publish(&mut self, index: usize, attempt: u64, now: u64, ids: &mut Ids, out: &mut Out) {
        let id = ids.fresh();
        self.states[index].tries += 1;
        self.publishes.insert(id, (index, attempt));
        let r = &self.requests[index];
        out.send(Up::Publish {
            id,
            subject: subjects::DECIDE.to_string(),
            headers: r.headers(attempt),
            payload: r.payload.clone(),
            js: true,
        });
        out.timer(
            now + self.config.publish_timeout_ms,
            ActorTimer::GwPubAckTimeout {
                request: index,
                attempt,
                publish: id,
            },
        );
    }

    /// A PubAck (or its error) for one of our publishes.
    pub fn on_puback(&mut self, publish: u64, error: bool, now: u64, out: &mut Out) {
        let Some((index, attempt)) = self.publishes.remove(&publish) else {
            return; // late: the publish timed out already
        };
        if error {
            self.publish_failed(index, attempt, now, out);
            return;
        }
        let s = &mut self.states[index];
        if s.attempt != attempt || s.stored {
            return;
        }
        s.stored = true;
        if s.replied {
            return;
        }
        out.timer(
            now + self.config.reply_timeout_ms,
            ActorTimer::GwReplyTimeout {
                request: index,
                attempt,
            },
        );
    }

    fn publish_failed(&mut self, index: usize, attempt: u64, now: u64, out: &mut Out) {
        let s = &self.states[index];
        if s.attempt != attempt || s.stored || s.done {
            return;
        }
        // Retry the same message (same Nats-Msg-Id) a little later; after the last try,
        // treat the attempt as unanswered.
        let at = now + 200;
        if s.tries < PUBLISH_TRIES {
            out.timer(
                at,
                ActorTimer::GwRepublish {
                    request: index,
                    attempt,
                },
            );
        } else {
            out.timer(
                at,
                ActorTimer::GwReplyTimeout {
                    request: index,
                    attempt,
                },
            );
        }
    }

    pub fn on_timer(&mut self, timer: &ActorTimer, now: u64, ids: &mut Ids, out: &mut Out) {
        match *timer {
            ActorTimer::GwStart { request } => self.start(request, now, ids, out),
            ActorTimer::GwPubAckTimeout {
                request,
                attempt,
                publish,
            } if self.publishes.remove(&publish).is_some() => {
                self.publish_failed(request, attempt, now, out);
            }
            ActorTimer::GwRepublish { request, attempt } => {
                let s = &self.states[request];
                if s.attempt == attempt && !s.stored && !s.done {
                    self.publish(request, attempt, now, ids, out);
                }
            }
            ActorTimer::GwReplyTimeout { request, attempt } => {
                let r = &self.requests[request];
                let s = &mut self.states[request];
                if s.attempt != attempt || s.done {
                    return;
                }
                if r.has_key && s.attempt < self.config.max_attempts {
                    self.new_attempt(request, now, ids, out);
                } else {
                    s.done = true; // out of attempts (or nothing safe to retry)
                }
            }
            _ => {}
        }
    }

    /// A reply reached an inbox of ours: the (request, attempt) it answers.
    pub fn on_reply(&mut self, subject: &str) -> Option<(usize, u64)> {
        let (index, attempt) = parse_inbox(subject)?;
        let s = self.states.get_mut(index)?;
        s.replied = true;
        s.done = true;
        Some((index, attempt))
    }

    /// Poll the router's backpressure status.
    pub fn poll(&mut self, now: u64, ids: &mut Ids, out: &mut Out) {
        let id = ids.fresh();
        self.polls.insert(id, now);
        out.send(Up::Request {
            id,
            subject: subjects::BACKPRESSURE_STATUS.to_string(),
            headers: Vec::new(),
            payload: json!({"subject": subjects::DECIDE})
                .to_string()
                .into_bytes(),
        });
        out.timer(now + POLL_TIMEOUT_MS, ActorTimer::RequestGiveUp { id });
        out.timer(now + self.config.status_poll_ms, ActorTimer::GwPoll);
    }

    /// The answer to a poll (or its timeout): true if it was one of ours, still open.
    pub fn poll_done(&mut self, id: u64) -> bool {
        self.polls.remove(&id).is_some()
    }
}

fn payload(r: &PlannedRequest) -> Vec<u8> {
    let text = if r.pii {
        format!("Hello World {}, my SSN is 078-05-1120", r.index)
    } else {
        format!("Hello World {}", r.index)
    };
    let mut doc = json!({
        "version": "1",
        "request_id": r.request_id,
        "task": {"type": "text.generate", "payload": {"text": text}},
    });
    if let Some(t) = r.tenant {
        doc["tenant_id"] = t.into();
    }
    match r.kind {
        RequestKind::ValidExt => doc["policy_id"] = EXT_POLICY.into(),
        RequestKind::Invalid(Invalid::WrongVersion) => doc["version"] = "2".into(),
        RequestKind::Invalid(Invalid::BadJson) => {
            return format!(r#"{{"version":"1","request_id":"{}","task":"#, r.request_id)
                .into_bytes();
        }
        _ => {}
    }
    if r.has_key {
        doc["idempotency_key"] = format!("idem-{}", r.index).into();
    }
    if r.push_assignment {
        doc["push_assignment"] = true.into();
    }
    if r.trace_header.is_some() {
        // The header must win over this.
        doc["trace_id"] = format!("payload-trace-{}", r.index).into();
    }
    doc.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GatewayConfig {
        GatewayConfig {
            reply_timeout_ms: 5_000,
            max_attempts: 3,
            publish_timeout_ms: 1_000,
            status_poll_ms: 5_000,
            mix: WorkloadMix::default(),
        }
    }

    fn plan(seed: u64, n: u64) -> Workload {
        Workload::plan(
            &mut SimRng::stream(seed, "gateway"),
            SimRng::stream(seed, "burst"),
            n,
            60_000,
            2,
            config(),
        )
    }

    #[test]
    fn plans_are_a_function_of_the_seed() {
        let key = |w: &Workload| -> Vec<(u64, Vec<u8>)> {
            w.requests()
                .iter()
                .map(|r| (r.publish_at, r.payload.clone()))
                .collect()
        };
        assert_eq!(key(&plan(5, 50)), key(&plan(5, 50)));
        assert!(plan(5, 50)
            .requests()
            .iter()
            .any(|r| r.kind == RequestKind::Valid));
    }

    #[test]
    fn inboxes_map_back_to_attempts() {
        assert_eq!(parse_inbox(&inbox(12, 3)), Some((12, 3)));
        assert_eq!(parse_inbox("beamline.router.v1.decide.reply"), None);
        assert_eq!(plan(1, 3).by_request_id("r-1"), Some(1));
    }

    #[test]
    fn an_unanswered_request_is_retried_with_its_key_then_given_up() {
        let mut w = plan(3, 1);
        w.requests[0].has_key = true;
        let mut ids = Ids::new(0);
        let mut out = Out::default();
        w.start(0, 0, &mut ids, &mut out);
        let Up::Publish { id, headers, .. } = &out.sends[0] else {
            panic!()
        };
        assert_eq!(headers[0].1, "gw-0-1");
        let id = *id;
        let mut out = Out::default();
        w.on_puback(id, false, 10, &mut out);
        let timer = out.timers[0].1.clone();
        let mut out = Out::default();
        w.on_timer(&timer, 5_010, &mut ids, &mut out);
        let Up::Publish { headers, .. } = &out.sends[0] else {
            panic!()
        };
        assert_eq!(headers[0].1, "gw-0-2");
        assert_eq!(headers[1].1, "_INBOX.gw.0.2");
        assert_eq!(w.on_reply("_INBOX.gw.0.1"), Some((0, 1)));
        assert!(w.quiet());
    }
}
