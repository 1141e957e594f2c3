//! The decide path and the fate of each message.
//!
//! For every delivery the router decides one of three endings, and emits it only after
//! the publishes it depends on are confirmed:
//! - answered: reply published and confirmed -> `Ack`;
//! - refused or exhausted: DLQ record confirmed -> `Term`;
//! - not yet: a publish failed and the server's delivery count is below `max_deliver`
//!   -> `Nak` with a delay, and the server redelivers.
//!
//! State is kept per stream sequence, so a redelivery of a message still in flight (its
//! ack timer ran out while we waited on a publish) joins the message instead of being
//! decided twice.

use std::collections::BTreeMap;

use crate::contracts::subjects::{
    HEADER_DLQ_REASON, HEADER_MSG_ID, HEADER_ORIGINAL_MSG_ID, HEADER_REPLY_TO,
};
use crate::contracts::DlqReason;
use crate::intake::{self, IntakeRules};
use crate::policy::PolicyStore;

use super::answers::{AnswerBook, Fate};
use super::config::RouterConfig;
use super::decide;
use super::dlq;
use super::env::Env;
use super::io::{
    Command, ConnectionEvent, Delivery, DeliveryId, Input, Publish, PublishId, PublishKind,
    PublishOutcome, TimerKey,
};

/// Counters a shell or the simulator can read at any time.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub deliveries: u64,
    pub replies_ok: u64,
    pub replies_error: u64,
    pub rejected: u64,
    pub dlq_records: u64,
    pub acks: u64,
    pub naks: u64,
    pub terms: u64,
    pub publish_failures: u64,
    /// Redeliveries of a message already settled (its ack was lost): settled again,
    /// never answered twice.
    pub redelivered_after_settle: u64,
    /// Requests answered from the idempotency book instead of a new decision.
    pub idempotent_replays: u64,
    /// Deliveries refused because `max_in_flight` messages were already held.
    pub overload_naks: u64,
    pub disconnects: u64,
}

/// What a publish was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    Reply,
    Dlq,
}

/// One message (one stream sequence) between its delivery and its fate.
#[derive(Debug)]
struct InFlight {
    /// Every delivery of this sequence seen while in flight; the fate goes to each.
    deliveries: Vec<DeliveryId>,
    /// The highest server delivery count seen.
    delivered: u64,
    /// Publishes not yet confirmed or failed.
    pending: Vec<(PublishId, Purpose)>,
    reply_failed: bool,
    /// Set when the message must end in the DLQ (refused, or exhausted).
    dlq: Option<Publish>,
    dlq_confirmed: bool,
    origin: Origin,
}

/// What a DLQ record needs to know about the original message, kept instead of the
/// payload itself (which may be large and may hold personal data).
#[derive(Debug)]
pub(super) struct Origin {
    pub subject: String,
    pub payload_sha256: String,
    pub msg_id: Option<String>,
    /// Filled in once intake has read them.
    pub request_id: Option<String>,
    pub tenant_id: Option<String>,
}

impl Origin {
    fn of(d: &Delivery) -> Self {
        Origin {
            subject: d.subject.clone(),
            payload_sha256: dlq::sha256_hex(&d.payload),
            msg_id: header(&d.headers, HEADER_MSG_ID).map(str::to_string),
            request_id: None,
            tenant_id: None,
        }
    }
}

enum Next {
    Settle(Fate),
    Redeliver,
    DeadLetter,
    RetryDlqLater,
}

pub struct Router {
    config: RouterConfig,
    policies: PolicyStore,
    stats: Stats,
    in_flight: BTreeMap<u64, InFlight>,
    publishes: BTreeMap<PublishId, u64>,
    timers: BTreeMap<TimerKey, u64>,
    answers: AnswerBook,
    next_publish: PublishId,
    next_timer: TimerKey,
    connected: bool,
}

impl Router {
    pub fn new(config: RouterConfig, policies: PolicyStore) -> Self {
        let answers = AnswerBook::new(config.completed_capacity, config.idempotency_ttl_ms);
        Router {
            config,
            policies,
            stats: Stats::default(),
            in_flight: BTreeMap::new(),
            publishes: BTreeMap::new(),
            timers: BTreeMap::new(),
            answers,
            next_publish: 1,
            next_timer: 1,
            connected: true,
        }
    }

    pub fn handle(&mut self, input: Input, env: &mut impl Env) {
        match input {
            Input::Delivery(d) => self.on_delivery(d, env),
            Input::PublishDone { id, outcome } => self.on_publish_done(id, outcome, env),
            Input::Timer { key } => self.on_timer(key, env),
            Input::Connection(ConnectionEvent::Down) => {
                self.connected = false;
                self.stats.disconnects += 1;
            }
            Input::Connection(ConnectionEvent::Up) => self.connected = true,
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    pub fn policies(&self) -> &PolicyStore {
        &self.policies
    }

    /// Messages held, awaiting the confirmation of their publishes.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Sizes of the answer book: (by stream sequence, by idempotency key).
    pub fn answer_book_len(&self) -> (usize, usize) {
        self.answers.len()
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    fn on_delivery(&mut self, d: Delivery, env: &mut impl Env) {
        self.stats.deliveries += 1;
        let seq = d.stream_seq;

        if let Some(msg) = self.in_flight.get_mut(&seq) {
            // Redelivered while we still wait on its publishes: join, decide nothing new.
            msg.deliveries.push(d.id);
            msg.delivered = msg.delivered.max(d.delivered);
            return;
        }
        if let Some(fate) = self.answers.settled(seq) {
            // Settled before, but the server never saw our ack or term.
            self.stats.redelivered_after_settle += 1;
            self.settle(&[d.id], fate, env);
            return;
        }
        if self.in_flight.len() >= self.config.max_in_flight {
            self.stats.overload_naks += 1;
            self.stats.naks += 1;
            env.execute(Command::Nak {
                delivery: d.id,
                delay_ms: self.backoff(d.delivered),
            });
            return;
        }

        let reply_to = header(&d.headers, HEADER_REPLY_TO)
            .filter(|s| valid_subject(s))
            .unwrap_or(&self.config.default_reply_subject)
            .to_string();
        let mut msg = InFlight {
            deliveries: vec![d.id],
            delivered: d.delivered,
            pending: Vec::new(),
            reply_failed: false,
            dlq: None,
            dlq_confirmed: false,
            origin: Origin::of(&d),
        };

        let rules = IntakeRules {
            max_payload_bytes: self.config.max_payload_bytes,
            min_payload_bytes: self.config.min_payload_bytes,
            tenant_allowlist: self.config.tenant_allowlist.as_deref(),
        };
        match intake::validate_decide(&d.subject, &d.headers, &d.payload, &rules) {
            Err(rejection) => {
                self.stats.rejected += 1;
                self.stats.replies_error += 1;
                let reply = decide::rejection_reply(&rejection);
                let record =
                    dlq::refused(&msg.origin, &d, &rejection, env.now(), &self.config.node_id);
                let reply = self.publish_core(reply_to, reply);
                self.send(seq, &mut msg, reply, Purpose::Reply, env);
                let dlq = self.publish_dlq(seq, &msg.origin, record, DlqReason::ValidationFailed);
                msg.dlq = Some(dlq.clone());
                self.send(seq, &mut msg, dlq, Purpose::Dlq, env);
            }
            Ok(request) => {
                msg.origin.request_id = Some(request.request_id.clone());
                msg.origin.tenant_id = Some(request.tenant_id.clone());
                // Answered before, as an earlier delivery of this message whose reply
                // publish failed, or as another message with the same idempotency key:
                // the same bytes again. A request is never decided twice.
                let claim = request
                    .idempotency_key
                    .as_ref()
                    .map(|key| (request.tenant_id.clone(), key.clone()));
                let earlier = match self.answers.reply_for_seq(seq) {
                    Some(bytes) => Some(bytes.to_vec()),
                    None => claim
                        .as_ref()
                        .and_then(|c| self.answers.reply_for_key(c, env.now()).map(<[u8]>::to_vec)),
                };
                if let Some(bytes) = earlier {
                    self.stats.idempotent_replays += 1;
                    let publish = self.publish_core(reply_to, bytes);
                    self.send(seq, &mut msg, publish, Purpose::Reply, env);
                    self.in_flight.insert(seq, msg);
                    return;
                }
                let (reply, ok) = decide::decide(&request, &self.policies, env);
                if ok {
                    self.stats.replies_ok += 1;
                } else {
                    self.stats.replies_error += 1;
                }
                // Recorded before the publish: whatever happens to it, this is the answer.
                self.answers
                    .record_reply(seq, claim, reply.clone(), env.now());
                let publish = self.publish_core(reply_to, reply);
                self.send(seq, &mut msg, publish, Purpose::Reply, env);
            }
        }
        self.in_flight.insert(seq, msg);
    }

    fn on_publish_done(&mut self, id: PublishId, outcome: PublishOutcome, env: &mut impl Env) {
        let Some(seq) = self.publishes.remove(&id) else {
            return; // A late outcome for a message already settled.
        };
        let Some(msg) = self.in_flight.get_mut(&seq) else {
            return;
        };
        let Some(pos) = msg.pending.iter().position(|(p, _)| *p == id) else {
            return;
        };
        let (_, purpose) = msg.pending.remove(pos);
        let confirmed = outcome == PublishOutcome::Confirmed;
        if !confirmed {
            self.stats.publish_failures += 1;
        }
        match (purpose, confirmed) {
            (Purpose::Reply, false) => msg.reply_failed = true,
            (Purpose::Dlq, true) => {
                msg.dlq_confirmed = true;
                self.stats.dlq_records += 1;
            }
            _ => {}
        }
        if msg.pending.is_empty() {
            self.resolve(seq, env);
        }
    }

    fn on_timer(&mut self, key: TimerKey, env: &mut impl Env) {
        let Some(seq) = self.timers.remove(&key) else {
            return;
        };
        let Some(msg) = self.in_flight.get_mut(&seq) else {
            return;
        };
        // Retry the DLQ publish with the same message id: the stream drops a copy that
        // did arrive although its ack was lost.
        if let Some(mut dlq) = msg.dlq.clone() {
            let id = self.next_publish;
            self.next_publish += 1;
            dlq.id = id;
            self.publishes.insert(id, seq);
            msg.pending.push((id, Purpose::Dlq));
            env.execute(Command::Publish(dlq));
        }
    }

    /// All publishes of `seq` are resolved: choose its fate.
    fn resolve(&mut self, seq: u64, env: &mut impl Env) {
        let Some(mut msg) = self.in_flight.remove(&seq) else {
            return;
        };
        let last = msg.delivered >= self.config.max_deliver;
        let next = match (&msg.dlq, msg.reply_failed) {
            (Some(_), _) if msg.dlq_confirmed && (!msg.reply_failed || last) => {
                Next::Settle(Fate::Term)
            }
            // The last delivery: the server will not redeliver, so we keep the message
            // and retry the record ourselves.
            (Some(_), _) if !msg.dlq_confirmed && last => Next::RetryDlqLater,
            (Some(_), _) => Next::Redeliver,
            (None, false) => Next::Settle(Fate::Ack),
            (None, true) if !last => Next::Redeliver,
            // The last delivery allowed could not be answered.
            (None, true) => Next::DeadLetter,
        };
        match next {
            Next::RetryDlqLater => {
                let key = self.next_timer;
                self.next_timer += 1;
                self.timers.insert(key, seq);
                env.execute(Command::SetTimer {
                    key,
                    at: env.now().after(self.config.dlq_retry_ms).millis(),
                });
                self.in_flight.insert(seq, msg);
            }
            Next::DeadLetter => {
                let record = dlq::exhausted(
                    &msg.origin,
                    seq,
                    msg.delivered,
                    env.now(),
                    &self.config.node_id,
                );
                let publish =
                    self.publish_dlq(seq, &msg.origin, record, DlqReason::MaxdeliverExhausted);
                msg.dlq = Some(publish.clone());
                self.send(seq, &mut msg, publish, Purpose::Dlq, env);
                self.in_flight.insert(seq, msg);
            }
            Next::Settle(fate) => {
                self.answers.settle(seq, fate);
                self.settle(&msg.deliveries, fate, env);
            }
            Next::Redeliver => {
                let delay_ms = self.backoff(msg.delivered);
                for &delivery in &msg.deliveries {
                    self.stats.naks += 1;
                    env.execute(Command::Nak { delivery, delay_ms });
                }
            }
        }
    }

    fn settle(&mut self, deliveries: &[DeliveryId], fate: Fate, env: &mut impl Env) {
        for &delivery in deliveries {
            match fate {
                Fate::Ack => {
                    self.stats.acks += 1;
                    env.execute(Command::Ack { delivery });
                }
                Fate::Term => {
                    self.stats.terms += 1;
                    env.execute(Command::Term { delivery });
                }
            }
        }
    }

    fn send(
        &mut self,
        seq: u64,
        msg: &mut InFlight,
        publish: Publish,
        purpose: Purpose,
        env: &mut impl Env,
    ) {
        self.publishes.insert(publish.id, seq);
        msg.pending.push((publish.id, purpose));
        env.execute(Command::Publish(publish));
    }

    fn publish_core(&mut self, subject: String, payload: Vec<u8>) -> Publish {
        let id = self.next_publish;
        self.next_publish += 1;
        Publish {
            id,
            subject,
            headers: Vec::new(),
            payload,
            kind: PublishKind::Core,
            msg_id: None,
        }
    }

    /// A DLQ record as a JetStream publish. Its message id is derived from the stream
    /// sequence, so a retry (or a redelivery refused again) cannot store a second copy.
    fn publish_dlq(
        &mut self,
        seq: u64,
        origin: &Origin,
        record: Vec<u8>,
        reason: DlqReason,
    ) -> Publish {
        let id = self.next_publish;
        self.next_publish += 1;
        let msg_id = dlq::msg_id(seq);
        let mut headers = vec![
            (HEADER_MSG_ID.to_string(), msg_id.clone()),
            (
                HEADER_DLQ_REASON.to_string(),
                dlq::reason_str(reason).to_string(),
            ),
        ];
        if let Some(original) = &origin.msg_id {
            headers.push((HEADER_ORIGINAL_MSG_ID.to_string(), original.clone()));
        }
        Publish {
            id,
            subject: self.config.dlq_subject.clone(),
            headers,
            payload: record,
            kind: PublishKind::JetStream,
            msg_id: Some(msg_id),
        }
    }

    /// Nak delay for a delivery with server count `delivered` (1-based).
    fn backoff(&self, delivered: u64) -> u64 {
        let list = &self.config.nak_backoff_ms;
        let i = (delivered.saturating_sub(1) as usize).min(list.len().saturating_sub(1));
        list.get(i).copied().unwrap_or(1_000)
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A publishable NATS subject: non-empty tokens, no wildcards or whitespace.
fn valid_subject(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 512
        && s.split('.').all(|t| {
            !t.is_empty() && t != "*" && t != ">" && !t.bytes().any(|b| b.is_ascii_whitespace())
        })
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
