//! The host: the deterministic half of the shell, shared by the production driver and
//! the simulator. It sits between the core and a transport and keeps everything that is
//! neither a routing decision (the core's) nor I/O (the transport's):
//!
//! - the delivery and inbound tables and their bounds ([`tables`]);
//! - I/O in flight and its time-outs ([`io`]);
//! - MAX_DELIVERIES advisories, captured durably, turned into `Input::Exhausted`
//!   ([`advisories`]);
//! - the decide consumer's pending count (polled, and read off deliveries);
//! - the outbox bound: settles and answers queued while disconnected;
//! - the pull watchdog's decisions ([`pulls`]);
//! - the shutdown drain.
//!
//! Like the core it is a sans-I/O state machine in quinn's style: the transport hands it
//! events with the time (`handle`), asks when it next wants to be woken
//! (`poll_timeout`, then `handle_timeout(now)`), and performs the actions it drains
//! (`poll_action`). It never reads a clock, spawns, sleeps or iterates a hash map, so
//! the simulator runs exactly the code production runs.

pub mod advisories;
pub mod durations;
pub mod io;
pub mod pulls;
pub mod tables;

use std::collections::VecDeque;

pub use crate::core::Settle;
use crate::core::{
    Buggify, Command, ConnectionEvent, Delivery, DeliveryId, Entropy, Exhausted, Headers,
    InboundRequest, Input, KvOutcome, PayloadDigest, Probe, PublishOutcome, RequestOutcome, Router,
    Source, Stats, Time,
};

use advisories::{Advisories, MaxDeliveries};
use io::{IoKind, IoTable};
pub use pulls::PullEvent;
use pulls::Pulls;
use tables::HandleTable;

/// What a consumer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Role {
    Decide,
    Results,
    /// Workers' acks of assignments.
    Acks,
    /// The server's MAX_DELIVERIES advisories for the consumers above.
    Advisories,
}

impl Role {
    /// The `consumer` label of metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Role::Decide => "decide",
            Role::Results => "results",
            Role::Acks => "acks",
            Role::Advisories => "advisories",
        }
    }

    /// The core's name for messages of this consumer (advisories are the host's own).
    pub fn source(self) -> Option<Source> {
        match self {
            Role::Decide => Some(Source::Decide),
            Role::Results => Some(Source::Result),
            Role::Acks => Some(Source::AssignmentAck),
            Role::Advisories => None,
        }
    }
}

/// One durable consumer the host pulls from, by index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerRef {
    pub role: Role,
    pub stream: String,
    pub durable: String,
}

#[derive(Clone, Debug)]
pub struct HostConfig {
    /// The decide consumer first.
    pub consumers: Vec<ConsumerRef>,
    /// Deliveries handed to the core and not yet settled.
    pub delivery_bound: usize,
    /// Inbound requests awaiting the core's answer.
    pub inbound_bound: usize,
    /// Settles and answers queued while disconnected; beyond it they are dropped (a
    /// dropped settle means a redelivery after `ack_wait`, a dropped answer a caller
    /// that times out).
    pub outbox_bound: usize,
    /// How long a JetStream publish may wait for its PubAck, a core publish for its flush.
    pub publish_timeout_ms: u64,
    /// How long a shared-bucket operation may take.
    pub kv_timeout_ms: u64,
    /// How often the decide consumer's pending count is read (0: never).
    pub pending_every_ms: u64,
    /// Delay before pulling again after a pull ended or could not start.
    pub pull_retry_ms: u64,
    /// Nak delay of an advisory whose message could not be fetched.
    pub advisory_retry_ms: u64,
    /// Keep a record of every core step (`take_steps`), for the simulator's checkers.
    pub record_steps: bool,
}

impl HostConfig {
    /// Production's bounds for `consumers`: room for every unsettled delivery the server
    /// may hand out (`max_ack_pending` summed), several times over.
    pub fn new(consumers: Vec<ConsumerRef>, max_ack_pending_total: u64) -> Self {
        HostConfig {
            consumers,
            delivery_bound: usize::try_from(max_ack_pending_total.max(1).saturating_mul(4))
                .unwrap_or(usize::MAX),
            inbound_bound: 1024,
            outbox_bound: 4096,
            publish_timeout_ms: 5_000,
            kv_timeout_ms: 2_000,
            pending_every_ms: 1_000,
            pull_retry_ms: 1_000,
            advisory_retry_ms: 1_000,
            record_steps: false,
        }
    }
}

/// A delivery from one of the consumers, as the transport received it.
#[derive(Clone, Debug)]
pub struct Arrival<A> {
    /// Index into `HostConfig::consumers`.
    pub consumer: usize,
    /// What settles it.
    pub ack: A,
    pub subject: String,
    pub headers: Headers,
    pub payload: Vec<u8>,
    /// The payload's SHA-256: the receiver takes it (the production shell needs it for
    /// its log span before the host sees the message), once.
    pub digest: PayloadDigest,
    pub stream_seq: u64,
    /// The server's delivery count.
    pub delivered: u64,
    /// The consumer's pending count as the delivery's metadata gave it.
    pub pending: Option<u64>,
}

/// A message read back from its stream by sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetched {
    Found {
        subject: String,
        headers: Headers,
        payload: Vec<u8>,
    },
    /// Deleted or aged out: nothing left to dead-letter.
    Gone,
    /// The read failed (disconnected, time-out): try again later.
    Failed,
}

/// What the transport tells the host.
#[derive(Clone, Debug)]
pub enum Event<A, R> {
    Delivery(Arrival<A>),
    PublishDone {
        id: u64,
        outcome: PublishOutcome,
    },
    RequestDone {
        id: u64,
        outcome: RequestOutcome,
    },
    KvDone {
        id: u64,
        outcome: KvOutcome,
    },
    /// A request addressed to the router (status, admin); `reply` answers it.
    Inbound {
        reply: R,
        subject: String,
        headers: Headers,
        payload: Vec<u8>,
    },
    Connection(ConnectionEvent),
    /// The decide consumer's pending count, read from the server (`ReadPending`).
    Pending {
        pending: u64,
    },
    /// The outcome of `Action::Fetch`.
    Fetched {
        id: u64,
        message: Fetched,
    },
    Pull {
        consumer: usize,
        event: PullEvent,
    },
    /// Stop taking work and finish what is in flight within `grace_ms`.
    Shutdown {
        grace_ms: u64,
    },
    /// The policy set read again (SIGHUP, or `Action::LoadPolicies`), or why it could
    /// not be: put in force whole or refused whole, and `reply` answered with the outcome.
    PoliciesLoaded {
        reply: Option<R>,
        loaded: Result<Reload, String>,
    },
}

/// What the host asks the transport to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action<A, R> {
    Settle {
        ack: A,
        how: Settle,
    },
    Respond {
        reply: R,
        payload: Vec<u8>,
    },
    /// A publish, extension request or shared-bucket operation of the core
    /// (`Command::Publish`, `Request` or `Kv`; never another variant). The host times it
    /// out; the transport may give up at the same deadline.
    Io {
        command: Command,
        timeout_ms: u64,
    },
    /// Read message `seq` of `stream`; answer with `Event::Fetched { id }` (the host
    /// takes no answer within `kv_timeout_ms` for `Fetched::Failed`).
    Fetch {
        id: u64,
        stream: String,
        seq: u64,
    },
    /// Read the decide consumer's pending count; answer with `Event::Pending`.
    ReadPending,
    /// Start pulling consumer `consumer` afresh (retiring its current pull, if any);
    /// answer with `Event::Pull`.
    Pull {
        consumer: usize,
    },
    /// Read the policy directory (and the extension registry) again; answer with
    /// `Event::PoliciesLoaded` carrying `reply` back (an operator's request to answer, or
    /// none for a SIGHUP the transport heard itself).
    LoadPolicies {
        reply: Option<R>,
    },
    /// Shutting down: stop pulling and listening, and hand back what the pull buffered.
    StopIntake,
    /// Done (drained, or the grace period is over): flush and exit.
    Exit {
        drained: bool,
    },
}

/// The host's counters, for metrics and logs.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct HostCounters {
    pub deliveries_held: u64,
    pub deliveries_evicted: u64,
    pub inbound_held: u64,
    pub inbound_evicted: u64,
    /// Settles or answers for an id no longer in its table (evicted, or settled before).
    pub unknown_handles: u64,
    pub io_in_flight: u64,
    /// Operations the core started under an id already in flight (a core bug; the
    /// first operation keeps its deadline, the second is not performed).
    pub io_ids_reused: u64,
    /// Outcomes that arrived after the host had timed their operation out.
    pub late_outcomes: u64,
    pub io_timeouts: u64,
    /// The core's timers pending (it owns them; counted here for the gauge).
    pub timers: u64,
    pub outbox_dropped: u64,
    /// Deliveries that arrived after intake stopped (shutting down), nak'ed at once.
    pub handed_back: u64,
    pub advisories_held: u64,
    /// Decide messages from hand-over to the core to their ack, in milliseconds.
    pub decide_durations: durations::DurationHistogram,
    /// Policy sets (with their extension registry) put in force by `reload`.
    pub policy_reloads: u64,
    /// Reloads refused whole: the running set stayed in force.
    pub policy_reloads_refused: u64,
    pub advisories_ignored: u64,
    pub advisories_unreadable: u64,
    /// Pull restarts after a stall, per consumer (by index).
    pub pull_restarts: Vec<u64>,
    /// Pull restarts after the consumer's leader changed, per consumer (by index).
    pub pull_leader_moves: Vec<u64>,
}

/// A delivery handed to the core: what settles it, and what the decide duration needs.
#[derive(Clone, Debug)]
struct Held<A> {
    ack: A,
    since: Time,
    decide: bool,
}

/// A policy set to put in force (`Host::reload`).
#[derive(Clone, Debug)]
pub struct Reload {
    pub policies: crate::policy::PolicyStore,
    /// The extension registry too, when the deployment names one (else the running one
    /// stays).
    pub extensions: Option<crate::core::extensions::ExtensionRegistry>,
}

/// One input the core handled and what it emitted (`HostConfig::record_steps`).
#[derive(Clone, Debug)]
pub struct CoreStep<A> {
    pub input: Input,
    /// For a delivery: the consumer it came from.
    pub consumer: Option<usize>,
    pub commands: Vec<Command>,
    /// The handle of every delivery a settle command named, as it was at that moment.
    pub handles: Vec<(DeliveryId, A)>,
    pub before: Stats,
    pub after: Stats,
}

/// The randomness and fault points the core draws on; the host adds the time.
pub trait HostEnv: Entropy + Buggify + Probe {}
impl<T: Entropy + Buggify + Probe> HostEnv for T {}

pub struct Host<A, R> {
    router: Router,
    config: HostConfig,
    deliveries: HandleTable<Held<A>>,
    inbound: HandleTable<R>,
    io: IoTable,
    advisories: Advisories<A>,
    pulls: Pulls,
    connected: bool,
    /// Settles and answers emitted since the connection went down.
    queued_while_down: usize,
    next_pending_read: Option<Time>,
    last_pending: Option<u64>,
    /// Shutting down: the drain ends at this time at the latest.
    drain_until: Option<Time>,
    exited: bool,
    actions: VecDeque<Action<A, R>>,
    steps: Vec<CoreStep<A>>,
    counters: HostCounters,
}

impl<A: Clone, R> Host<A, R> {
    /// A host around `router`, connected (production connects before it builds one; the
    /// simulator reports `Connection(Down)` first when it starts disconnected).
    pub fn new(router: Router, config: HostConfig) -> Self {
        let consumers = config.consumers.len();
        Host {
            deliveries: HandleTable::new(config.delivery_bound),
            inbound: HandleTable::new(config.inbound_bound),
            io: IoTable::default(),
            advisories: Advisories::default(),
            pulls: Pulls::new(consumers, config.pull_retry_ms),
            connected: true,
            queued_while_down: 0,
            next_pending_read: None,
            last_pending: None,
            drain_until: None,
            exited: false,
            actions: VecDeque::new(),
            steps: Vec::new(),
            counters: HostCounters::default(),
            router,
            config,
        }
    }

    /// Begin: pull every consumer, and start reading the pending count.
    pub fn start(&mut self, now: Time) {
        self.pulls.start_all(now);
        if self.config.pending_every_ms > 0 {
            self.next_pending_read = Some(now);
        }
        self.run_due(now);
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The core itself, for the simulator's deliberately broken hosts (`--bug`).
    pub fn router_mut(&mut self) -> &mut Router {
        &mut self.router
    }

    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Shutting down (`Event::Shutdown` seen).
    pub fn is_draining(&self) -> bool {
        self.drain_until.is_some()
    }

    /// Nothing held by the core and no I/O it awaits.
    pub fn is_idle(&self) -> bool {
        self.router.in_flight() == 0 && self.io.is_empty()
    }

    pub fn counters(&self) -> HostCounters {
        HostCounters {
            deliveries_held: self.deliveries.len() as u64,
            deliveries_evicted: self.deliveries.evicted(),
            inbound_held: self.inbound.len() as u64,
            inbound_evicted: self.inbound.evicted(),
            io_in_flight: self.io.len() as u64,
            late_outcomes: self.io.late(),
            timers: self.router.timers_pending() as u64,
            advisories_held: self.advisories.len() as u64,
            pull_restarts: self.pulls.restarts().to_vec(),
            pull_leader_moves: self.pulls.leader_moves().to_vec(),
            ..self.counters.clone()
        }
    }

    /// A policy set read by the transport (SIGHUP, or an operator's request), or why it
    /// could not be read. All or nothing: a set is put in force whole, with its extension
    /// registry when one is given; a refused one leaves the running set in force.
    /// Returns the count of policies put in force, or why the set was refused.
    pub fn reload(
        &mut self,
        loaded: Result<Reload, String>,
        env: &mut impl HostEnv,
    ) -> Result<usize, String> {
        match loaded {
            Ok(reload) => {
                let count = reload.policies.len();
                self.router.replace_policies(reload.policies);
                if let Some(registry) = reload.extensions {
                    self.router.replace_extensions(registry);
                }
                self.counters.policy_reloads += 1;
                env.probe("host.policies_reloaded");
                Ok(count)
            }
            Err(error) => {
                self.counters.policy_reloads_refused += 1;
                env.probe("host.policy_reload_refused");
                Err(error)
            }
        }
    }

    /// The bound of the inbound table (a gauge's maximum).
    pub fn inbound_bound(&self) -> usize {
        self.inbound.capacity()
    }

    /// The next action for the transport.
    pub fn poll_action(&mut self) -> Option<Action<A, R>> {
        self.actions.pop_front()
    }

    /// The core steps recorded since the last call (`HostConfig::record_steps`).
    pub fn take_steps(&mut self) -> Vec<CoreStep<A>> {
        std::mem::take(&mut self.steps)
    }

    /// When the host next wants `handle_timeout`: the earliest core timer, I/O deadline,
    /// pending read, pull retry or the end of the drain.
    pub fn poll_timeout(&self) -> Option<Time> {
        if self.exited {
            return None;
        }
        [
            self.router.poll_timeout(),
            self.io.next_deadline(),
            self.next_pending_read,
            self.pulls.next_due(),
            self.drain_until,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Do whatever is due at `now`.
    pub fn handle_timeout(&mut self, now: Time, env: &mut impl HostEnv) {
        for (kind, id) in self.io.expire(now) {
            self.counters.io_timeouts += 1;
            env.probe(match kind {
                IoKind::Publish => "host.publish_timed_out",
                IoKind::Request => "host.request_timed_out",
                IoKind::Kv => "host.kv_timed_out",
                IoKind::Fetch => "host.fetch_timed_out",
            });
            let input = match kind {
                IoKind::Fetch => {
                    self.on_fetched(now, id, Fetched::Failed, env);
                    continue;
                }
                IoKind::Publish => Input::PublishDone {
                    id,
                    outcome: PublishOutcome::Failed {
                        reason: "timeout".to_string(),
                    },
                },
                IoKind::Request => Input::RequestDone {
                    id,
                    outcome: RequestOutcome::Timeout,
                },
                IoKind::Kv => Input::KvDone {
                    id,
                    outcome: KvOutcome::Failed {
                        reason: "timeout".to_string(),
                    },
                },
            };
            self.feed(now, input, None, env);
        }
        if self.router.poll_timeout().is_some_and(|at| at <= now) {
            self.feed(now, Input::Timeout, None, env);
        }
        self.run_due(now);
        self.check_drain(now, env);
    }

    /// Take in one transport event at `now`.
    pub fn handle(&mut self, now: Time, event: Event<A, R>, env: &mut impl HostEnv) {
        if self.exited {
            return;
        }
        match event {
            Event::Delivery(arrival) => self.on_arrival(now, arrival, env),
            Event::PublishDone { id, outcome } => {
                if self.finish_io(IoKind::Publish, id, env) {
                    self.feed(now, Input::PublishDone { id, outcome }, None, env);
                }
            }
            Event::RequestDone { id, outcome } => {
                if self.finish_io(IoKind::Request, id, env) {
                    self.feed(now, Input::RequestDone { id, outcome }, None, env);
                }
            }
            Event::KvDone { id, outcome } => {
                if self.finish_io(IoKind::Kv, id, env) {
                    self.feed(now, Input::KvDone { id, outcome }, None, env);
                }
            }
            Event::Inbound {
                reply,
                subject,
                headers,
                payload,
            } => {
                if self.is_draining() {
                    return; // Not listening any more; the caller times out.
                }
                let id = self.inbound.hold(reply);
                let request = InboundRequest {
                    id,
                    subject,
                    headers,
                    payload,
                };
                self.feed(now, Input::Inbound(request), None, env);
            }
            Event::Connection(event) => {
                let up = event == ConnectionEvent::Up;
                if up == self.connected {
                    return; // The core already knows.
                }
                self.connected = up;
                if up {
                    self.queued_while_down = 0;
                }
                self.feed(now, Input::Connection(event), None, env);
            }
            Event::Pending { pending } => self.pending(now, pending, env),
            Event::Fetched { id, message } => {
                if self.finish_io(IoKind::Fetch, id, env) {
                    self.on_fetched(now, id, message, env);
                }
            }
            Event::Pull { consumer, event } => {
                let probe = match event {
                    PullEvent::Started => None,
                    PullEvent::Stalled => Some("host.pull_stalled"),
                    PullEvent::LeaderElected => Some("host.pull_leader_elected"),
                    PullEvent::StartFailed | PullEvent::Ended => Some("host.pull_ended"),
                };
                if let Some(name) = probe {
                    env.probe(name);
                }
                self.pulls.on_event(consumer, event, now);
            }
            Event::PoliciesLoaded { reply, loaded } => {
                let outcome = self.reload(loaded, env);
                if let Some(reply) = reply {
                    let node_id = self.router.config().node_id.clone();
                    let payload = crate::core::reload_answer(
                        &node_id,
                        outcome.as_ref().copied().map_err(String::as_str),
                    );
                    if self.outbox_admits() {
                        self.actions.push_back(Action::Respond { reply, payload });
                    }
                }
            }
            Event::Shutdown { grace_ms } => {
                if self.drain_until.is_none() {
                    self.drain_until = Some(now.after(grace_ms));
                    self.pulls.stop();
                    self.next_pending_read = None;
                    self.actions.push_back(Action::StopIntake);
                }
            }
        }
        self.run_due(now);
        self.check_drain(now, env);
    }

    fn on_arrival(&mut self, now: Time, a: Arrival<A>, env: &mut impl HostEnv) {
        let Some(role) = self.config.consumers.get(a.consumer).map(|c| c.role) else {
            return;
        };
        let last = role
            .source()
            .is_some_and(|source| self.router.is_last_delivery(source, a.delivered));
        if self.is_draining() && last {
            env.probe("host.last_delivery_while_draining");
        }
        if self.is_draining() && !last {
            // Intake has stopped: a delivery still arriving (buffered by the pull, or on
            // the wire) is handed back at once for another instance, never started here.
            // Not the last one the server allows: that nak would leave its fate to the
            // MAX_DELIVERIES advisory, lost while the advisory stream elects a leader, so
            // it is started here and the drain waits for it.
            self.counters.handed_back += 1;
            env.probe("host.handed_back");
            self.settle_handle(a.ack, Settle::Nak { delay_ms: 0 });
            return;
        }
        let Some(source) = role.source() else {
            self.on_advisory(now, a, env);
            return;
        };
        if let (Role::Decide, Some(pending)) = (role, a.pending) {
            self.pending(now, pending, env);
        }
        let consumer = a.consumer;
        // BUGGIFY: the same message handed over twice with two ack handles, as JetStream
        // does when `ack_wait` runs out while the first delivery is still being handled
        // (or a pull's batch overlaps a redelivery).
        let twin_ack = env.buggify("host.delivery_twice").then(|| a.ack.clone());
        let decide = role == Role::Decide;
        let id = self.deliveries.hold(Held {
            ack: a.ack,
            since: now,
            decide,
        });
        let delivery = Delivery {
            id,
            source,
            subject: a.subject,
            headers: a.headers,
            payload: a.payload,
            digest: a.digest,
            stream_seq: a.stream_seq,
            delivered: a.delivered,
        };
        let twin = twin_ack.map(|ack| (ack, delivery.clone()));
        self.feed(now, Input::Delivery(delivery), Some(consumer), env);
        if let Some((ack, mut delivery)) = twin {
            delivery.id = self.deliveries.hold(Held {
                ack,
                since: now,
                decide,
            });
            self.feed(now, Input::Delivery(delivery), Some(consumer), env);
        }
    }

    fn pending(&mut self, now: Time, pending: u64, env: &mut impl HostEnv) {
        // BUGGIFY: a burst in the backlog (a publisher's spike, or a consumer that was
        // stalled): the core sees a pending count far above the real one.
        let pending = if env.buggify("host.pending_spike") {
            pending.saturating_mul(10).max(100_000)
        } else {
            pending
        };
        if self.last_pending != Some(pending) {
            self.last_pending = Some(pending);
            self.feed(now, Input::ConsumerPending { pending }, None, env);
        }
    }

    /// Step 1 of an advisory's journey (see `advisories`).
    fn on_advisory(&mut self, now: Time, a: Arrival<A>, env: &mut impl HostEnv) {
        let Some(advisory) = MaxDeliveries::parse(&a.payload) else {
            self.counters.advisories_unreadable += 1;
            env.probe("host.advisory_unreadable");
            self.settle_handle(a.ack, Settle::Term);
            return;
        };
        let ours = self
            .config
            .consumers
            .iter()
            .filter(|c| c.stream == advisory.stream && c.durable == advisory.consumer)
            .find_map(|c| c.role.source());
        let Some(source) = ours else {
            self.counters.advisories_ignored += 1;
            env.probe("host.advisory_not_ours");
            self.settle_handle(a.ack, Settle::Ack);
            return;
        };
        env.probe("host.advisory_fetched");
        let (stream, seq) = (advisory.stream.clone(), advisory.stream_seq);
        let id = self.advisories.fetch(a.ack, source, advisory);
        // Held to the shared-bucket time-out: a read lost on the wire would otherwise
        // hold its advisory until the server redelivers it.
        self.io
            .start(IoKind::Fetch, id, now.after(self.config.kv_timeout_ms));
        self.actions.push_back(Action::Fetch { id, stream, seq });
    }

    /// Step 2 of an advisory's journey.
    fn on_fetched(&mut self, now: Time, id: u64, message: Fetched, env: &mut impl HostEnv) {
        let Some(f) = self.advisories.fetched(id) else {
            return;
        };
        match message {
            Fetched::Gone => {
                env.probe("host.advisory_message_gone");
                self.settle_handle(f.ack, Settle::Ack);
            }
            Fetched::Failed => {
                let delay_ms = self.config.advisory_retry_ms;
                self.settle_handle(f.ack, Settle::Nak { delay_ms });
            }
            Fetched::Found {
                subject,
                headers,
                payload,
            } => {
                let (source, seq) = (f.source, f.advisory.stream_seq);
                let input = Input::Exhausted(Exhausted {
                    source,
                    subject,
                    headers,
                    payload,
                    stream_seq: seq,
                    deliveries: f.advisory.deliveries,
                });
                self.feed(now, input, None, env);
                if self.router.holds(source, seq) {
                    self.advisories.wait(source, seq, f.ack);
                } else {
                    self.settle_handle(f.ack, Settle::Ack);
                }
            }
        }
    }

    /// Hand one input to the core and route what it emitted.
    fn feed(&mut self, now: Time, input: Input, consumer: Option<usize>, env: &mut impl HostEnv) {
        let record = self.config.record_steps;
        let (before, recorded_input) = if record {
            (self.router.stats().clone(), Some(input.clone()))
        } else {
            (Stats::default(), None)
        };
        let mut core_env = CoreEnv {
            now,
            env,
            commands: Vec::new(),
        };
        self.router.handle(input, &mut core_env);
        let commands = core_env.commands;
        let mut handles = Vec::new();
        if record {
            for c in &commands {
                if let Some(d) = settled_delivery(c) {
                    if let Some(h) = self.deliveries.get(d) {
                        handles.push((d, h.ack.clone()));
                    }
                }
            }
        }
        // Production routes the commands themselves (no copy of a payload on the hot
        // path); only a recording host keeps copies for its step record.
        let kept = if record { commands.clone() } else { Vec::new() };
        for command in commands {
            self.route(now, command);
        }
        if let Some(input) = recorded_input {
            self.steps.push(CoreStep {
                input,
                consumer,
                commands: kept,
                handles,
                before,
                after: self.router.stats().clone(),
            });
        }
        self.release_advisories();
    }

    /// Step 3 of an advisory's journey: ack those whose message the core let go.
    fn release_advisories(&mut self) {
        let router = &self.router;
        for ack in self
            .advisories
            .settled(|source, seq| router.holds(source, seq))
        {
            self.settle_handle(ack, Settle::Ack);
        }
    }

    fn route(&mut self, now: Time, command: Command) {
        match command {
            Command::Settle { delivery, how } => self.settle(now, delivery, how),
            Command::Respond { id, payload } => match self.inbound.take(id) {
                Some(reply) => {
                    if self.outbox_admits() {
                        self.actions.push_back(Action::Respond { reply, payload });
                    }
                }
                None => self.counters.unknown_handles += 1,
            },
            Command::ReloadPolicies { id } => match self.inbound.take(id) {
                Some(reply) => self
                    .actions
                    .push_back(Action::LoadPolicies { reply: Some(reply) }),
                None => self.counters.unknown_handles += 1,
            },
            Command::Publish(ref p) => {
                let timeout_ms = self.config.publish_timeout_ms;
                self.start_io(now, IoKind::Publish, p.id, timeout_ms, command);
            }
            Command::Request { id, timeout_ms, .. } => {
                self.start_io(now, IoKind::Request, id, timeout_ms, command);
            }
            Command::Kv { id, .. } => {
                let timeout_ms = self.config.kv_timeout_ms;
                self.start_io(now, IoKind::Kv, id, timeout_ms, command);
            }
        }
    }

    /// An outcome arrived: whether the core still awaits it (a late one is dropped).
    fn finish_io(&mut self, kind: IoKind, id: u64, env: &mut impl HostEnv) -> bool {
        // BUGGIFY: the outcome arrives after its deadline (a slow PubAck, a KV answer or an
        // extension reply held up on the wire): dropped, the operation still awaited, so the
        // core hears `Failed` / `Timeout` at the deadline while the operation itself may
        // have succeeded: the ambiguous case every caller must survive.
        let site = match kind {
            IoKind::Publish => "host.publish_outcome_late",
            IoKind::Request => "host.request_outcome_late",
            IoKind::Kv => "host.kv_outcome_late",
            IoKind::Fetch => "host.fetch_outcome_late",
        };
        if env.buggify(site) {
            return false;
        }
        let awaited = self.io.finish(kind, id);
        if !awaited {
            env.probe("host.late_outcome");
        }
        awaited
    }

    fn start_io(&mut self, now: Time, kind: IoKind, id: u64, timeout_ms: u64, command: Command) {
        // The core numbers every operation afresh; a reused id would be a core bug
        // (counted; the simulator fails the run on it).
        if self.io.start(kind, id, now.after(timeout_ms)) {
            self.actions.push_back(Action::Io {
                command,
                timeout_ms,
            });
        } else {
            self.counters.io_ids_reused += 1;
        }
    }

    fn settle(&mut self, now: Time, delivery: DeliveryId, how: Settle) {
        let handle = if how.is_final() {
            let held = self.deliveries.take(delivery);
            if let Some(h) = held.as_ref().filter(|h| h.decide && how == Settle::Ack) {
                // Acked: its reply (and assignment) confirmed. The decide SLI.
                self.counters
                    .decide_durations
                    .observe(now.millis().saturating_sub(h.since.millis()));
            }
            held.map(|h| h.ack)
        } else {
            self.deliveries.get(delivery).map(|h| h.ack.clone())
        };
        match handle {
            Some(ack) => self.settle_handle(ack, how),
            None => self.counters.unknown_handles += 1,
        }
    }

    fn settle_handle(&mut self, ack: A, how: Settle) {
        if self.outbox_admits() {
            self.actions.push_back(Action::Settle { ack, how });
        }
    }

    /// Whether one more settle or answer may be queued: while connected always (the
    /// client writes at once); while disconnected up to `outbox_bound`.
    fn outbox_admits(&mut self) -> bool {
        if self.connected {
            return true;
        }
        if self.queued_while_down >= self.config.outbox_bound {
            self.counters.outbox_dropped += 1;
            return false;
        }
        self.queued_while_down += 1;
        true
    }

    /// Pull restarts and pending reads that are due.
    fn run_due(&mut self, now: Time) {
        for consumer in self.pulls.take_due(now) {
            self.actions.push_back(Action::Pull { consumer });
        }
        if let Some(at) = self.next_pending_read {
            if at <= now {
                self.next_pending_read = Some(now.after(self.config.pending_every_ms));
                if self.connected {
                    self.actions.push_back(Action::ReadPending);
                }
            }
        }
    }

    fn check_drain(&mut self, now: Time, env: &mut impl HostEnv) {
        let Some(until) = self.drain_until else {
            return;
        };
        if self.exited {
            return;
        }
        let drained = self.is_idle();
        if drained || now >= until {
            env.probe(if drained {
                "host.drained"
            } else {
                "host.drain_ended_with_work"
            });
            self.exited = true;
            self.actions.push_back(Action::Exit { drained });
        }
    }
}

/// The delivery a settle command names.
fn settled_delivery(c: &Command) -> Option<DeliveryId> {
    match c {
        Command::Settle { delivery, .. } => Some(*delivery),
        _ => None,
    }
}

/// The core's view of the world during one input: the host's time, the transport's
/// randomness and fault points, and a sink for its commands.
struct CoreEnv<'a, E> {
    now: Time,
    env: &'a mut E,
    commands: Vec<Command>,
}

impl<E> crate::core::Clock for CoreEnv<'_, E> {
    fn now(&self) -> Time {
        self.now
    }
}

impl<E: Entropy> Entropy for CoreEnv<'_, E> {
    fn next_u64(&mut self) -> u64 {
        self.env.next_u64()
    }
}

impl<E> crate::core::Broker for CoreEnv<'_, E> {
    fn execute(&mut self, command: Command) {
        self.commands.push(command);
    }
}

impl<E: Buggify> Buggify for CoreEnv<'_, E> {
    fn buggify(&mut self, site: &'static str) -> bool {
        self.env.buggify(site)
    }

    fn planted(&self, bug: &'static str) -> bool {
        self.env.planted(bug)
    }
}

impl<E: Probe> Probe for CoreEnv<'_, E> {
    fn probe(&mut self, name: &'static str) {
        self.env.probe(name);
    }
}

#[cfg(test)]
mod tests;
