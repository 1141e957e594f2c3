//! The router host: the simulated process that owns the core `Router`. It implements the
//! core's `Env` over the virtual clock, the "core" RNG stream and BUGGIFY; it maps
//! delivery ids to the server's stream sequences, keeps the publishes awaiting a
//! confirmation, the armed timers and the current pull request. The world moves messages
//! between it and the server; the host itself never schedules anything.

use std::collections::BTreeMap;

use beamline_router::core::{
    Broker, Buggify as CoreBuggify, Clock, Command, Delivery, DeliveryId, Entropy, Input,
    PublishId, RequestId, Router, RouterConfig, Time, TimerKey,
};
use beamline_router::policy::PolicyStore;

use crate::buggify::Buggify;
use crate::jetstream::Delivered;
use crate::rng::SimRng;

/// What a delivery id stands for on the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliveryRef {
    pub stream_seq: u64,
    pub delivered: u64,
}

/// The outcome of feeding one input to the core.
#[derive(Debug, Default)]
pub struct Step {
    pub commands: Vec<Command>,
    /// BUGGIFY sites that fired while the core handled the input.
    pub fired: Vec<&'static str>,
}

pub struct RouterHost {
    router: Router,
    entropy: SimRng,
    buggify: Buggify,
    /// The connection state the core was last told about.
    connected: bool,
    deliveries: BTreeMap<DeliveryId, DeliveryRef>,
    next_delivery_id: DeliveryId,
    /// Publishes sent and not yet confirmed, failed or timed out.
    publishes: BTreeMap<PublishId, ()>,
    /// Core NATS requests sent and not yet answered or timed out.
    requests: BTreeMap<RequestId, ()>,
    timers: BTreeMap<TimerKey, u64>,
    pull_id: u64,
    pull_received: u64,
}

impl RouterHost {
    pub fn new(
        config: RouterConfig,
        policies: PolicyStore,
        entropy: SimRng,
        buggify: Buggify,
    ) -> Self {
        RouterHost {
            router: Router::new(config, policies),
            entropy,
            buggify,
            connected: false,
            deliveries: BTreeMap::new(),
            next_delivery_id: 1,
            publishes: BTreeMap::new(),
            requests: BTreeMap::new(),
            timers: BTreeMap::new(),
            pull_id: 0,
            pull_received: 0,
        }
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    pub fn buggify_fired(&self) -> u64 {
        self.buggify.fired()
    }

    /// Hand one input to the core and collect what it asked for.
    pub fn handle(&mut self, now: u64, in_chaos: bool, input: Input) -> Step {
        if let Input::Connection(event) = &input {
            self.connected = matches!(event, beamline_router::core::ConnectionEvent::Up);
        }
        let mut env = HostEnv {
            now: Time(now),
            entropy: &mut self.entropy,
            buggify: &mut self.buggify,
            in_chaos,
            step: Step::default(),
        };
        self.router.handle(input, &mut env);
        env.step
    }

    pub fn connected(&self) -> bool {
        self.connected
    }

    /// Give a server delivery its id, as the production shell does for its ack handles.
    pub fn register_delivery(&mut self, d: &Delivered) -> Delivery {
        let id = self.next_delivery_id;
        self.next_delivery_id += 1;
        self.deliveries.insert(
            id,
            DeliveryRef {
                stream_seq: d.stream_seq,
                delivered: d.delivered,
            },
        );
        Delivery {
            id,
            subject: d.subject.clone(),
            headers: d.headers.clone(),
            payload: d.payload.clone(),
            stream_seq: d.stream_seq,
            delivered: d.delivered,
        }
    }

    pub fn delivery(&self, id: DeliveryId) -> Option<DeliveryRef> {
        self.deliveries.get(&id).copied()
    }

    /// Start waiting for a publish's outcome. False if that id is already waiting.
    pub fn track_publish(&mut self, id: PublishId) -> bool {
        self.publishes.insert(id, ()).is_none()
    }

    /// Stop waiting for a publish's outcome. False if it was settled already (a late
    /// confirmation after the timeout, say).
    pub fn settle_publish(&mut self, id: PublishId) -> bool {
        self.publishes.remove(&id).is_some()
    }

    /// Start waiting for a request's outcome. False if that id is already waiting.
    pub fn track_request(&mut self, id: RequestId) -> bool {
        self.requests.insert(id, ()).is_none()
    }

    /// Stop waiting for a request's outcome; false if it was settled already.
    pub fn settle_request(&mut self, id: RequestId) -> bool {
        self.requests.remove(&id).is_some()
    }

    pub fn publishes_waiting(&self) -> usize {
        self.publishes.len()
    }

    /// Arm (or re-arm) timer `key`. A later `SetTimer` for the same key replaces the
    /// earlier deadline, like a keyed timer wheel.
    pub fn arm_timer(&mut self, key: TimerKey, at: u64) {
        self.timers.insert(key, at);
    }

    /// Whether timer `key` armed for `at` is still armed; disarms it if so.
    pub fn fire_timer(&mut self, key: TimerKey, at: u64) -> bool {
        if self.timers.get(&key) == Some(&at) {
            self.timers.remove(&key);
            true
        } else {
            false
        }
    }

    /// Start a new pull request; returns its id.
    pub fn new_pull(&mut self) -> u64 {
        self.pull_id += 1;
        self.pull_received = 0;
        self.pull_id
    }

    pub fn current_pull(&self) -> u64 {
        self.pull_id
    }

    /// Count a delivery against its pull. True when the current pull's batch is used up
    /// and the client should pull again.
    pub fn on_pull_delivery(&mut self, pull: u64, batch: u64) -> bool {
        if pull != self.pull_id {
            return false;
        }
        self.pull_received += 1;
        self.pull_received >= batch
    }
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
        let fire = self.buggify.decide(site, self.in_chaos);
        if fire {
            self.step.fired.push(site);
        }
        fire
    }
}
