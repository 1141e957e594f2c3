//! A router process: the simulated production shell around one core `Router`. It
//! implements the core's `Env` (the process's own clock, the core's RNG stream, BUGGIFY,
//! a command sink), gives deliveries their ids, keeps the publishes and requests awaiting
//! an outcome, the armed timers, the inbound requests awaiting an answer, and the
//! server's MAX_DELIVERIES advisories being turned into `Input::Exhausted`.
//!
//! A process can crash: the world then drops its `RouterHost` (memory lost) and builds a
//! new one on restart (a new incarnation). The durable consumers live on at the server.
//!
//! The host never schedules anything; the world carries out what it asks for.

use std::collections::BTreeMap;

use beamline_router::core::{
    Broker, Buggify as CoreBuggify, Clock, Command, Delivery, DeliveryId, Entropy, Input,
    PublishId, RequestId, Router, RouterConfig, Time, TimerKey,
};
use beamline_router::policy::PolicyStore;
use serde_json::Value;

use crate::actors::{Ids, Out, Puller};
use crate::buggify::Buggify;
use crate::jetstream::Delivered;
use crate::net::NodeId;
use crate::rng::SimRng;
use crate::wire::Cons;

/// Virtual time 0 is this on every process's clock, before skew: a plausible epoch in
/// milliseconds, so that a clock behind the world's does not go below zero.
pub const EPOCH_MS: u64 = 1_700_000_000_000;

/// What a delivery id stands for on the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliveryRef {
    pub cons: Cons,
    pub stream_seq: u64,
    pub delivered: u64,
}

/// The outcome of feeding one input to the core.
#[derive(Debug, Default)]
pub struct Step {
    pub commands: Vec<Command>,
    /// BUGGIFY sites that fired while the core handled the input.
    pub fired: Vec<&'static str>,
    /// BUGGIFY sites asked for the first time (activated or not) during this input.
    pub activated: Vec<(&'static str, bool)>,
}

/// A MAX_DELIVERIES advisory on its way to becoming `Input::Exhausted`.
#[derive(Clone, Debug)]
pub struct Advisory {
    /// Its own sequence in the advisory stream (acked when done).
    pub advisory_seq: u64,
    pub stream: String,
    pub stream_seq: u64,
    pub deliveries: u64,
}

pub struct RouterHost {
    router: Router,
    entropy: SimRng,
    pub ids: Ids,
    pub decide: Puller,
    pub results: Puller,
    pub advisories: Puller,
    /// The connection state the core was last told about.
    connected: bool,
    /// Offset of this process's clock from the world's, in ms.
    pub clock_offset: i64,
    deliveries: BTreeMap<DeliveryId, DeliveryRef>,
    next_delivery_id: DeliveryId,
    /// Messages (consumer, seq) with a delivery the core has not settled yet.
    held: BTreeMap<(Cons, u64), u32>,
    publishes: BTreeMap<PublishId, Option<String>>,
    requests: BTreeMap<RequestId, ()>,
    timers: BTreeMap<TimerKey, u64>,
    inbound: BTreeMap<u64, (NodeId, u64)>,
    next_inbound: u64,
    last_pending: Option<u64>,
    /// Direct gets in flight: get id -> advisory.
    gets: BTreeMap<u64, Advisory>,
    /// Advisories fed to the core, waiting for the message's fate: the DLQ record's
    /// msg id -> advisory sequence.
    watching: BTreeMap<String, u64>,
    /// (consumer, seq) -> advisory sequence, for messages the core still held when the
    /// advisory came: its ack or term settles the advisory.
    watching_held: BTreeMap<(Cons, u64), u64>,
    /// Publish ids carrying a watched DLQ record.
    watched_publishes: BTreeMap<PublishId, String>,
    /// Advisories whose message's fate is settled: ready to ack.
    advisories_done: Vec<u64>,
    /// Messages the core holds from an `Exhausted` input (no delivery), until their DLQ
    /// record is confirmed: advisory sequence -> (consumer, seq).
    exhausted_held: BTreeMap<u64, (Cons, u64)>,
}

impl RouterHost {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node: NodeId,
        config: RouterConfig,
        policies: PolicyStore,
        entropy: SimRng,
        clock_offset: i64,
        batch: u64,
        expires_ms: u64,
    ) -> Self {
        RouterHost {
            router: Router::new(config, policies),
            entropy,
            ids: Ids::new(node),
            decide: Puller::new(Cons::Decide, batch, expires_ms),
            results: Puller::new(Cons::Results, batch, expires_ms),
            advisories: Puller::new(Cons::Advisories, batch.min(8), expires_ms),
            connected: false,
            clock_offset,
            deliveries: BTreeMap::new(),
            next_delivery_id: 1,
            held: BTreeMap::new(),
            publishes: BTreeMap::new(),
            requests: BTreeMap::new(),
            timers: BTreeMap::new(),
            inbound: BTreeMap::new(),
            next_inbound: 1,
            last_pending: None,
            gets: BTreeMap::new(),
            watching: BTreeMap::new(),
            watching_held: BTreeMap::new(),
            watched_publishes: BTreeMap::new(),
            advisories_done: Vec::new(),
            exhausted_held: BTreeMap::new(),
        }
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Replace the core with a fresh one (the `forget-answers` bug), keeping the host.
    pub fn reset_core(&mut self) {
        let config = self.router.config().clone();
        let policies = self.router.policies().clone();
        self.router = Router::new(config, policies);
    }

    /// This process's clock at world time `now`.
    pub fn core_now(&self, now: u64) -> u64 {
        let t = i128::from(EPOCH_MS) + i128::from(now) + i128::from(self.clock_offset);
        u64::try_from(t.max(0)).unwrap_or(u64::MAX)
    }

    /// World time at which this process's clock reads `at` (not before `now`).
    pub fn world_time_of(&self, at: u64, now: u64) -> u64 {
        now + at.saturating_sub(self.core_now(now))
    }

    pub fn puller(&mut self, cons: Cons) -> Option<&mut Puller> {
        match cons {
            Cons::Decide => Some(&mut self.decide),
            Cons::Results => Some(&mut self.results),
            Cons::Advisories => Some(&mut self.advisories),
            Cons::Assign | Cons::Usage => None,
        }
    }

    /// Pull the next batch on `cons`.
    pub fn pull(&mut self, cons: Cons, now: u64, out: &mut Out) {
        let puller = match cons {
            Cons::Decide => &mut self.decide,
            Cons::Results => &mut self.results,
            Cons::Advisories => &mut self.advisories,
            Cons::Assign | Cons::Usage => return,
        };
        puller.pull(now, &mut self.ids, out);
    }

    /// Hand one input to the core and collect what it asked for.
    pub fn handle(
        &mut self,
        now: u64,
        in_chaos: bool,
        buggify: &mut Buggify,
        input: Input,
    ) -> Step {
        if let Input::Connection(event) = &input {
            self.connected = matches!(event, beamline_router::core::ConnectionEvent::Up);
        }
        let mut env = HostEnv {
            now: Time(self.core_now(now)),
            entropy: &mut self.entropy,
            buggify,
            in_chaos,
            step: Step::default(),
        };
        self.router.handle(input, &mut env);
        let step = env.step;
        self.observe(&step.commands);
        step
    }

    /// Follow the core's commands for the advisory bookkeeping.
    fn observe(&mut self, commands: &[Command]) {
        for c in commands {
            match c {
                Command::Ack { delivery } | Command::Term { delivery } => {
                    if let Some(r) = self.deliveries.get(delivery).copied() {
                        self.held.remove(&(r.cons, r.stream_seq));
                        if let Some(adv) = self.watching_held.remove(&(r.cons, r.stream_seq)) {
                            self.advisories_done.push(adv);
                        }
                    }
                }
                Command::Nak { delivery, .. } => {
                    if let Some(r) = self.deliveries.get(delivery).copied() {
                        self.held.remove(&(r.cons, r.stream_seq));
                    }
                }
                Command::Publish(p) => {
                    if let Some(m) = &p.msg_id {
                        if self.watching.contains_key(m) {
                            self.watched_publishes.insert(p.id, m.clone());
                        }
                    }
                }
                _ => {}
            }
        }
    }

    pub fn connected(&self) -> bool {
        self.connected
    }

    /// Give a server delivery its id, as the production shell does for its ack handles.
    pub fn register_delivery(&mut self, cons: Cons, d: &Delivered, delivered: u64) -> Delivery {
        let id = self.next_delivery_id;
        self.next_delivery_id += 1;
        self.deliveries.insert(
            id,
            DeliveryRef {
                cons,
                stream_seq: d.stream_seq,
                delivered: d.delivered,
            },
        );
        *self.held.entry((cons, d.stream_seq)).or_default() += 1;
        Delivery {
            id,
            subject: d.subject.clone(),
            headers: d.headers.clone(),
            payload: d.payload.clone(),
            stream_seq: d.stream_seq,
            delivered,
        }
    }

    /// Whether the core holds an unsettled delivery of (consumer, seq).
    pub fn holds(&self, cons: Cons, seq: u64) -> bool {
        self.held.contains_key(&(cons, seq))
            || self.exhausted_held.values().any(|&h| h == (cons, seq))
    }

    pub fn delivery(&self, id: DeliveryId) -> Option<DeliveryRef> {
        self.deliveries.get(&id).copied()
    }

    /// The decide consumer's pending count from a delivery's metadata, if it changed
    /// since the core was last told (the production shell reads it the same way).
    pub fn pending_changed(&mut self, pending: u64) -> bool {
        let changed = self.last_pending != Some(pending);
        self.last_pending = Some(pending);
        changed
    }

    /// Start waiting for a publish's outcome. False if that id is already waiting.
    pub fn track_publish(&mut self, id: PublishId, msg_id: Option<String>) -> bool {
        self.publishes.insert(id, msg_id).is_none()
    }

    /// Stop waiting for a publish's outcome. False if it was settled already (a late
    /// confirmation after the timeout, say).
    pub fn settle_publish(&mut self, id: PublishId, confirmed: bool) -> bool {
        let known = self.publishes.remove(&id).is_some();
        if let Some(msg_id) = self.watched_publishes.remove(&id) {
            if confirmed && known {
                if let Some(adv) = self.watching.remove(&msg_id) {
                    self.advisories_done.push(adv);
                }
            }
        }
        known
    }

    pub fn publishes_waiting(&self) -> usize {
        self.publishes.len()
    }

    pub fn track_request(&mut self, id: RequestId) -> bool {
        self.requests.insert(id, ()).is_none()
    }

    pub fn settle_request(&mut self, id: RequestId) -> bool {
        self.requests.remove(&id).is_some()
    }

    /// Arm (or re-arm) timer `key` for core time `at`.
    pub fn arm_timer(&mut self, key: TimerKey, at: u64) {
        self.timers.insert(key, at);
    }

    /// Every armed timer (to reschedule after a clock jump).
    pub fn armed_timers(&self) -> Vec<(TimerKey, u64)> {
        self.timers.iter().map(|(&k, &a)| (k, a)).collect()
    }

    /// Timer `key` armed for `at` is due at world time `now`: fire it (true), or it was
    /// re-armed or already fired (false). A timer not yet due on this clock (it jumped
    /// back) stays armed.
    pub fn fire_timer(&mut self, key: TimerKey, at: u64, now: u64) -> bool {
        if self.timers.get(&key) != Some(&at) || self.core_now(now) < at {
            return false;
        }
        self.timers.remove(&key);
        true
    }

    pub fn timer_armed(&self, key: TimerKey, at: u64) -> bool {
        self.timers.get(&key) == Some(&at)
    }

    /// An inbound request arrived: its id for the core.
    pub fn register_inbound(&mut self, from: NodeId, request: u64) -> u64 {
        let id = self.next_inbound;
        self.next_inbound += 1;
        self.inbound.insert(id, (from, request));
        id
    }

    /// Who asked inbound request `id`, forgetting it.
    pub fn take_inbound(&mut self, id: u64) -> Option<(NodeId, u64)> {
        self.inbound.remove(&id)
    }

    /// An advisory was delivered: remember it while its message is fetched.
    pub fn start_get(&mut self, get_id: u64, advisory: Advisory) {
        self.gets.insert(get_id, advisory);
    }

    pub fn take_get(&mut self, get_id: u64) -> Option<Advisory> {
        self.gets.remove(&get_id)
    }

    /// After `Input::Exhausted` for `advisory`: decide when the advisory may be acked.
    /// `dlq_msg_id` is the DLQ record's message id for that message; `commands` what the
    /// core did with the input.
    pub fn after_exhausted(
        &mut self,
        advisory: &Advisory,
        cons: Cons,
        dlq_msg_id: String,
        commands: &[Command],
    ) {
        let published = commands.iter().any(|c| {
            matches!(c, Command::Publish(p) if p.msg_id.as_deref() == Some(dlq_msg_id.as_str()))
        });
        if published {
            // The core dead-letters it now: done when that record is confirmed.
            self.exhausted_held
                .insert(advisory.advisory_seq, (cons, advisory.stream_seq));
            self.watching
                .insert(dlq_msg_id.clone(), advisory.advisory_seq);
            for c in commands {
                if let Command::Publish(p) = c {
                    if p.msg_id.as_deref() == Some(dlq_msg_id.as_str()) {
                        self.watched_publishes.insert(p.id, dlq_msg_id.clone());
                    }
                }
            }
        } else if self.holds(cons, advisory.stream_seq) {
            // The core holds it: done when it settles it (term after its DLQ record) or
            // when it publishes the record itself.
            self.watching_held
                .insert((cons, advisory.stream_seq), advisory.advisory_seq);
            self.watching.insert(dlq_msg_id, advisory.advisory_seq);
        } else {
            // Settled before: nothing more to do.
            self.advisories_done.push(advisory.advisory_seq);
        }
    }

    /// Advisories whose message is dealt with: ack them now.
    pub fn take_advisories_done(&mut self) -> Vec<u64> {
        let mut done = std::mem::take(&mut self.advisories_done);
        done.sort_unstable();
        done.dedup();
        for seq in &done {
            self.watching.retain(|_, a| a != seq);
            self.watching_held.retain(|_, a| a != seq);
            self.exhausted_held.remove(seq);
        }
        done
    }
}

/// The DLQ record's `Nats-Msg-Id` the core uses for message `seq` of `subject`'s DLQ
/// (docs/API_CONTRACTS.md: `dlq-<seq>` for decide, `dlq-<dlq subject>-<seq>` otherwise).
pub fn dlq_msg_id(dlq_subject: &str, seq: u64) -> String {
    if dlq_subject.contains("decide") {
        format!("dlq-{seq}")
    } else {
        format!("dlq-{dlq_subject}-{seq}")
    }
}

/// Parse a MAX_DELIVERIES advisory payload.
pub fn parse_advisory(advisory_seq: u64, payload: &[u8]) -> Option<Advisory> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    Some(Advisory {
        advisory_seq,
        stream: v.get("stream")?.as_str()?.to_string(),
        stream_seq: v.get("stream_seq")?.as_u64()?,
        deliveries: v.get("deliveries")?.as_u64()?,
    })
}

/// The core's view of the world during one `handle` call.
struct HostEnv<'a> {
    now: Time,
    entropy: &'a mut SimRng,
    buggify: &'a mut Buggify,
    in_chaos: bool,
    step: Step,
}

impl Clock for HostEnv<'_> {
    fn now(&self) -> Time {
        self.now
    }
}

impl Entropy for HostEnv<'_> {
    fn next_u64(&mut self) -> u64 {
        self.entropy.next_u64()
    }
}

impl Broker for HostEnv<'_> {
    fn execute(&mut self, command: Command) {
        self.step.commands.push(command);
    }
}

impl CoreBuggify for HostEnv<'_> {
    fn buggify(&mut self, site: &'static str) -> bool {
        let (fire, first) = self.buggify.decide(site, self.in_chaos);
        if let Some(active) = first {
            self.step.activated.push((site, active));
        }
        if fire {
            self.step.fired.push(site);
        }
        fire
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dlq_msg_ids_follow_the_contract() {
        assert_eq!(dlq_msg_id("beamline.router.v1.decide.dlq", 7), "dlq-7");
        assert_eq!(
            dlq_msg_id("caf.exec.result.v1.dlq", 7),
            "dlq-caf.exec.result.v1.dlq-7"
        );
    }

    #[test]
    fn skewed_clocks_map_back_to_world_time() {
        let host = RouterHost::new(
            0,
            RouterConfig::default(),
            PolicyStore::new(),
            SimRng::stream(1, "core"),
            -5_000,
            1,
            1_000,
        );
        assert_eq!(host.core_now(10_000), EPOCH_MS + 5_000);
        let at = host.core_now(10_000) + 300;
        assert_eq!(host.world_time_of(at, 10_000), 10_300);
        assert_eq!(host.world_time_of(0, 10_000), 10_000);
    }
}
