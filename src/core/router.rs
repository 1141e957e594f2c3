//! The router state machine: dispatch of inputs, and the fate of each message.
//!
//! For every delivery the router decides one of three endings, and emits it only after
//! the publishes it depends on are confirmed:
//! - done: every publish (reply, assignment, usage) confirmed -> `Ack`;
//! - refused or exhausted: DLQ record confirmed -> `Term`;
//! - not yet: a publish failed and the server's delivery count is below `max_deliver`
//!   -> `Nak` with a delay, and the server redelivers.
//!
//! State is kept per stream sequence, so a redelivery of a message still in flight (its
//! ack timer ran out while we waited) joins the message instead of being handled twice.
//! The flows themselves live beside this file: `flow_decide.rs`, `flow_results.rs`,
//! `inbound.rs`; the choice of a fate, in `fate.rs`.

use crate::policy::PolicyStore;

use super::answers::SeqKey;
use super::config::RouterConfig;
use super::digest::PayloadDigest;
use super::dlq;
use super::env::{Env, Time};
use super::fate::{self, Fates};
use super::flight::{Flights, InFlight, Origin, Purpose, TimerPurpose, Work};
use super::flow_decide::{Advanced, DecideFlow};
use super::flow_results::ResultFlow;
use super::inbound::InboundFlow;
use super::io::{
    Command, ConnectionEvent, Delivery, DeliveryId, Exhausted, Input, PublishId, PublishOutcome,
    Settle, Source,
};
use super::outputs;
use super::services::Services;
pub use super::stats::{Stats, TableSizes};

pub struct Router {
    pub(super) config: RouterConfig,
    pub(super) policies: PolicyStore,
    pub(super) stats: Stats,
    /// The messages in flight, with their pending I/O, claims and timers.
    pub(super) flights: Flights,
    pub(super) services: Services,
    next_housekeeping: Time,
    connected: bool,
}

/// Rate buckets and sticky sessions are purged this often (lazily, on input).
const HOUSEKEEPING_MS: u64 = 60_000;

impl Router {
    pub fn new(config: RouterConfig, policies: PolicyStore) -> Self {
        Router {
            services: Services::new(&config),
            config,
            policies,
            stats: Stats::default(),
            flights: Flights::default(),
            next_housekeeping: Time(0),
            connected: true,
        }
    }

    pub fn handle(&mut self, input: Input, env: &mut impl Env) {
        self.housekeeping(env.now());
        self.services.backpressure.expire(env.now());
        match input {
            Input::Delivery(d) => self.on_delivery(d, env),
            Input::PublishDone { id, outcome } => self.on_publish_done(id, outcome, env),
            Input::RequestDone { id, outcome } => {
                let advanced = self.decide_flow().on_request_done(id, outcome, env);
                self.after_decide(advanced, env);
            }
            Input::Inbound(request) => {
                let tables = self.table_sizes();
                InboundFlow {
                    config: &self.config,
                    policies: &self.policies,
                    services: &self.services,
                    tables,
                    stats: &mut self.stats,
                }
                .handle(request, env)
            }
            Input::Timeout => self.on_timeout(env),
            Input::Connection(ConnectionEvent::Down) => {
                self.connected = false;
                self.stats.disconnects += 1;
                env.probe("connection.lost");
            }
            Input::Connection(ConnectionEvent::Up) => self.connected = true,
            Input::ConsumerPending { pending } => {
                self.services.backpressure.set_pending(pending, env.now())
            }
            Input::Exhausted(message) => self.on_exhausted(message, env),
            Input::KvDone { id, outcome } => {
                let advanced = self.decide_flow().on_kv_done(id, outcome, env);
                self.after_decide(advanced, env);
            }
        }
    }

    /// Replace the policy set (an operator reloaded the policy directory). Requests in
    /// flight finish under the policy they started with.
    pub fn replace_policies(&mut self, policies: PolicyStore) {
        self.policies = policies;
    }

    /// A new extension registry: a pipeline in progress uses it from its next step on.
    pub fn replace_extensions(&mut self, registry: super::extensions::ExtensionRegistry) {
        self.config.extensions = registry;
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

    /// Messages held, awaiting extension replies or the confirmation of their publishes.
    pub fn in_flight(&self) -> usize {
        self.flights.messages.len()
    }

    /// Whether message `stream_seq` of `source`'s stream is held: between its delivery (or
    /// `Input::Exhausted`) and its fate. The host releases a MAX_DELIVERIES advisory once
    /// the core no longer holds its message.
    pub fn holds(&self, source: Source, stream_seq: u64) -> bool {
        self.flights
            .messages
            .contains_key(&source_key(source, stream_seq))
    }

    /// Whether a delivery with this count is the last the server allows for `source`:
    /// handing it back (a nak) would leave its fate to the MAX_DELIVERIES advisory.
    pub fn is_last_delivery(&self, source: Source, delivered: u64) -> bool {
        delivered >= fate::max_deliver_for(&self.config, source)
    }

    /// When the core next needs `Input::Timeout`: its earliest timer (a DLQ or extension
    /// retry). The host asks after every input.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.flights.timers.next_deadline()
    }

    /// Timers set and not yet run, for a gauge.
    pub fn timers_pending(&self) -> usize {
        self.flights.timers.len()
    }

    /// Sizes of every bounded table, for gauges.
    pub fn table_sizes(&self) -> TableSizes {
        let (answers_by_seq, answers_by_key) = self.services.answers.len();
        TableSizes {
            in_flight: self.flights.messages.len(),
            answers_by_seq,
            answers_by_key,
            results: self.services.results.len(),
            breakers: self.services.breakers.len(),
            rate_buckets: self.services.rate_limiter.len(),
            sticky_sessions: self.services.sticky.len(),
            latency_samples: self.services.backpressure.latency_samples(),
        }
    }

    /// Every provider breaker and every extension breaker (tenant `""`), as the next call
    /// would meet them, for gauges. Bounded by `max_breakers` and the registry.
    pub fn breaker_views(&self, now: Time) -> BreakerViews {
        BreakerViews {
            providers: self.services.breakers.snapshot(now),
            extensions: self.services.extension_breakers.snapshot(now),
        }
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    fn housekeeping(&mut self, now: Time) {
        if now < self.next_housekeeping {
            return;
        }
        self.next_housekeeping = now.after(HOUSEKEEPING_MS);
        // Idle for an hour: the bucket has long refilled, so forgetting it changes nothing.
        self.services.rate_limiter.purge_idle(now, 3_600_000);
        self.services.sticky.purge_expired(now);
    }

    fn on_delivery(&mut self, d: Delivery, env: &mut impl Env) {
        self.stats.deliveries += 1;
        let source = d.source;
        let seq = source_key(source, d.stream_seq);
        if let Some(msg) = self.flights.messages.get_mut(&seq) {
            // Redelivered while we still work on it: join, decide nothing new.
            msg.deliveries.push(d.id);
            env.probe("delivery.joined_in_flight");
            msg.delivered = msg.delivered.max(d.delivered);
            msg.last_progress = env.now();
            return;
        }
        if let Some(fate) = self.services.answers.settled(seq) {
            // Settled before, but the server never saw our ack or term.
            self.stats.redelivered_after_settle += 1;
            env.probe("delivery.after_settle");
            fate::settle(&mut self.stats, &[d.id], fate, env);
            return;
        }
        let last = self.is_last_delivery(source, d.delivered);
        // BUGGIFY: an overload nak when not overloaded is legal, and exercises redelivery.
        if self.flights.messages.len() >= self.config.max_in_flight
            || env.buggify("router.spurious_overload_nak")
        {
            if last {
                return self.dead_letter_overloaded(d, env);
            }
            self.stats.overload_naks += 1;
            env.probe("router.overload_nak");
            let delay_ms = fate::backoff(&self.config, d.delivered);
            fate::nak(&mut self.stats, &[d.id], delay_ms, env);
            return;
        }
        let mut msg = self.in_flight_for(&d, source, vec![d.id], env.now());
        match source {
            Source::Decide => {
                let status = self
                    .services
                    .backpressure
                    .status(self.flights.messages.len() as u64);
                // BUGGIFY: backpressure that is on when the pending count alone would not
                // say so (production's status also weighs p95 latency, which the
                // simulated load rarely moves).
                if status.level == super::backpressure::Level::Active
                    || env.buggify("router.spurious_backpressure")
                {
                    if last {
                        return self.dead_letter_overloaded(d, env);
                    }
                    // Overloaded: give the message back unparsed, to be tried later.
                    self.stats.backpressure_naks += 1;
                    env.probe("router.backpressure_nak");
                    fate::nak(
                        &mut self.stats,
                        &[d.id],
                        status.retry_after_seconds.saturating_mul(1_000),
                        env,
                    );
                    return;
                }
                self.decide_flow().start_decide(seq, &d, &mut msg, env);
            }
            Source::Result => self.results_flow().start_result(seq, &d, &mut msg, env),
            Source::AssignmentAck => self
                .results_flow()
                .start_assignment_ack(seq, &d, &mut msg, env),
        }
        self.flights.messages.insert(seq, msg);
        self.maybe_resolve(seq, env);
    }

    /// The last delivery the server allows arrived while we are overloaded. A nak would
    /// leave its fate to the server's MAX_DELIVERIES advisory, and that advisory is lost
    /// when the advisory stream has no leader (a JetStream cluster election): dead-letter
    /// it now, as the advisory would have, with its delivery to term once the record is
    /// stored. One more message in flight beyond `max_in_flight` is bounded by the
    /// deliveries the server lets us hold (`max_ack_pending`).
    fn dead_letter_overloaded(&mut self, d: Delivery, env: &mut impl Env) {
        self.stats.overload_dead_letters += 1;
        env.probe("dlq.overloaded_last_delivery");
        let deliveries = vec![d.id];
        self.dead_letter_exhausted(d, deliveries, dlq::Exhaustion::Overloaded, env);
    }

    fn on_exhausted(&mut self, m: Exhausted, env: &mut impl Env) {
        let source = m.source;
        let seq = source_key(source, m.stream_seq);
        let limit = fate::max_deliver_for(&self.config, source);
        if let Some(msg) = self.flights.messages.get_mut(&seq) {
            // We hold it, but may have missed its later deliveries: whatever happens
            // next, the server will not deliver it again, so a failure must dead-letter.
            msg.delivered = msg.delivered.max(limit);
            env.probe("exhausted.while_held");
            return;
        }
        if self.services.answers.settled(seq).is_some() {
            return; // Already settled; the server just never saw our ack.
        }
        self.stats.exhausted_unseen += 1;
        env.probe("exhausted.unseen");
        let d = Delivery {
            id: 0,
            source,
            subject: m.subject,
            headers: m.headers,
            digest: PayloadDigest::of(&m.payload),
            payload: m.payload,
            stream_seq: m.stream_seq,
            delivered: m.deliveries,
        };
        // No delivery is left to ack or term: the record is the whole fate.
        self.dead_letter_exhausted(d, Vec::new(), dlq::Exhaustion::ServerGaveUp, env);
    }

    /// A message the server will not deliver again: its DLQ record and, for a decide
    /// request, the gateway's `delivery_exhausted` reply; `deliveries` are termed once
    /// the record is stored. `delivered` is forced to the limit so that a failed record
    /// is retried by timer, never nak'ed.
    fn dead_letter_exhausted(
        &mut self,
        d: Delivery,
        deliveries: Vec<DeliveryId>,
        why: dlq::Exhaustion,
        env: &mut impl Env,
    ) {
        let source = d.source;
        let seq = source_key(source, d.stream_seq);
        let mut msg = self.in_flight_for(&d, source, deliveries, env.now());
        msg.origin.request_id = request_id_of(&d.payload);
        msg.delivered = msg
            .delivered
            .max(fate::max_deliver_for(&self.config, source));
        let publish = outputs::exhausted_dlq(&self.config, &msg, seq, d.delivered, why, env.now());
        msg.dlq = Some(publish.clone());
        self.flights.send(seq, &mut msg, publish, Purpose::Dlq, env);
        if source == Source::Decide {
            msg.origin.reply_to = Some(outputs::reply_subject(&self.config, &d.headers));
            outputs::reply_exhausted(
                &mut self.stats,
                &mut self.flights,
                seq,
                &mut msg,
                d.delivered,
                env,
            );
        }
        self.flights.messages.insert(seq, msg);
    }

    fn in_flight_for(
        &self,
        d: &Delivery,
        source: Source,
        deliveries: Vec<DeliveryId>,
        now: Time,
    ) -> InFlight {
        InFlight {
            source,
            deliveries,
            delivered: d.delivered,
            received_at: now,
            last_progress: now,
            origin: Origin::of(d),
            work: Work::Publishing,
            pending: Vec::new(),
            failed: false,
            dlq: None,
            dlq_confirmed: false,
            replied: false,
        }
    }

    fn on_publish_done(&mut self, id: PublishId, outcome: PublishOutcome, env: &mut impl Env) {
        let Some(seq) = self.flights.publishes.remove(&id) else {
            return; // A late outcome for a message already settled.
        };
        let Some(msg) = self.flights.messages.get_mut(&seq) else {
            return;
        };
        let Some(pos) = msg.pending.iter().position(|(p, _)| *p == id) else {
            return;
        };
        let (_, purpose) = msg.pending.remove(pos);
        let confirmed = outcome == PublishOutcome::Confirmed;
        if !confirmed {
            self.stats.publish_failures += 1;
            env.probe("publish.failed");
        }
        match (purpose, confirmed) {
            (Purpose::Dlq, true) => {
                msg.dlq_confirmed = true;
                self.stats.dlq_records += 1;
            }
            (Purpose::Assignment, true) => {
                self.stats.assignments_published += 1;
                if msg.source == Source::Decide {
                    self.services.answers.assignment_stored(seq.1);
                }
            }
            (Purpose::Usage, true) => self.stats.usage_emitted += 1,
            (Purpose::Reply, true) => msg.replied = true,
            (Purpose::Dlq, false) => {}
            (_, false) => msg.failed = true,
            (Purpose::UsageCopy, true) => {}
        }
        self.maybe_resolve(seq, env);
    }

    fn on_timeout(&mut self, env: &mut impl Env) {
        for purpose in self.flights.timers.pop_due(env.now()) {
            match purpose {
                TimerPurpose::RetryDlq(seq) => {
                    let Some(mut msg) = self.flights.messages.remove(&seq) else {
                        continue;
                    };
                    // Retry with the same message id: the stream drops a copy that did
                    // arrive although its ack was lost.
                    if let Some(publish) = msg.dlq.clone() {
                        self.flights.send(seq, &mut msg, publish, Purpose::Dlq, env);
                    }
                    self.flights.messages.insert(seq, msg);
                }
                TimerPurpose::RetryExtension(seq) => {
                    let advanced = self.decide_flow().continue_decide(seq, env);
                    self.after_decide(advanced, env);
                }
            }
        }
    }

    /// What the decide flow leaves to the router for the message an input advanced: keep
    /// it alive if asked, then resolve it.
    fn after_decide(&mut self, advanced: Option<Advanced>, env: &mut impl Env) {
        let Some(Advanced { seq, keep_alive }) = advanced else {
            return;
        };
        if keep_alive {
            self.keep_alive(seq, env);
        }
        self.maybe_resolve(seq, env);
    }

    /// Keep the server from redelivering a message we are still working on.
    fn keep_alive(&mut self, seq: SeqKey, env: &mut impl Env) {
        let half = self.config.ack_wait_ms / 2;
        let now = env.now();
        if let Some(msg) = self.flights.messages.get_mut(&seq) {
            // BUGGIFY: an early `+WPI` is harmless and exercises the server's ack timer.
            let due = now.millis().saturating_sub(msg.last_progress.millis()) >= half;
            if due || env.buggify("router.eager_in_progress") {
                msg.last_progress = now;
                for &delivery in &msg.deliveries {
                    self.stats.in_progress += 1;
                    env.probe("progress.sent");
                    env.execute(Command::Settle {
                        delivery,
                        how: Settle::Progress,
                    });
                }
            }
        }
    }

    /// If nothing is pending for `seq` any more, choose its fate.
    fn maybe_resolve(&mut self, seq: SeqKey, env: &mut impl Env) {
        self.fates().maybe_resolve(seq, env);
    }

    fn fates(&mut self) -> Fates<'_> {
        Fates {
            config: &self.config,
            stats: &mut self.stats,
            services: &mut self.services,
            flights: &mut self.flights,
        }
    }

    fn decide_flow(&mut self) -> DecideFlow<'_> {
        DecideFlow {
            config: &self.config,
            policies: &self.policies,
            stats: &mut self.stats,
            services: &mut self.services,
            flights: &mut self.flights,
        }
    }

    fn results_flow(&mut self) -> ResultFlow<'_> {
        ResultFlow {
            config: &self.config,
            policies: &self.policies,
            stats: &mut self.stats,
            services: &mut self.services,
            flights: &mut self.flights,
        }
    }
}

/// The breakers, for gauges (`Router::breaker_views`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BreakerViews {
    pub providers: Vec<super::breaker::BreakerView>,
    pub extensions: Vec<super::breaker::BreakerView>,
}

/// Stream sequences are per stream; the answer book keys settled fates by stream too.
fn source_key(source: Source, seq: u64) -> SeqKey {
    let stream = match source {
        Source::Decide => 0,
        Source::Result => 1,
        Source::AssignmentAck => 2,
    };
    (stream, seq)
}

/// The `request_id` of a raw decide payload, for a DLQ record, if it can be read.
fn request_id_of(payload: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    v.get("request_id")?
        .as_str()
        .map(|s| s.chars().take(255).collect())
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "router_flow_tests.rs"]
mod flow_tests;
