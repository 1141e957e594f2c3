//! The world and its event loop: a virtual clock that jumps from event to event, the
//! simulated NATS server with JetStream, the actors (router processes, gateways, CAF
//! workers, extension services, the usage consumer, an operator), the network between
//! them and the server, the fault injector and the checkers. `World::run` plays one seed
//! to its verdict.
//!
//! A run has two phases. During the chaos phase (`[0, chaos_ms)`) the seed's faults are
//! on. Then everything heals and the liveness phase requires every accepted message to
//! reach its final state within a bounded time; the run ends as soon as the world is
//! quiet (or fails when a message misses its deadline).
//!
//! This file holds the loop, the event dispatch and the report; `net_io.rs` moves
//! messages between actors and the server, `broker.rs` is the server, `routers.rs` the
//! router processes around the core, `clients.rs` the other actors, `faults.rs` the
//! scheduled faults and the heal, `liveness.rs` the liveness phase.

mod broker;
mod clients;
mod cluster;
mod faults;
mod liveness;
mod net_io;
mod observe;
mod routers;

use std::collections::{BTreeMap, BTreeSet};

use beamline_router::contracts::subjects;
use beamline_router::core::RouterConfig;
use serde_json::json;

use crate::actors::caf::Caf;
use crate::actors::extension::Extension;
use crate::actors::gateway::{GatewayConfig, Workload};
use crate::actors::ops::{Ops, ADMIN_TOKEN};
use crate::actors::usage::UsageConsumer;
use crate::actors::ActorTimer;
use crate::buggify::Buggify;
use crate::faults::Schedule;
use crate::host::RouterHost;
use crate::invariants::{Checker, Proc};
use crate::jetstream::{Cluster, ConsumerConfig, JetStream, KvBucket, StreamConfig, KV_GROUP};
use crate::net::{Net, NodeId};
use crate::options::SimOptions;
use crate::profile::Profile;
use crate::queue::EventQueue;
use crate::report::{Counters, Observations, RunReport, Verdict};
use crate::rng::SimRng;
use crate::topology::Topology;
use crate::trace::Trace;
use crate::wire::{Cons, Down, Up};

/// nats-server's default duplicate window: the intake streams' (decide, results).
pub const DUPLICATE_WINDOW_MS: u64 = 120_000;
pub use beamline_router::host::advisories::MAX_DELIVERIES_PREFIX;
/// A caller's changes to what a seed draws: `crate::scenario` pins settings, the
/// workload and the fault menu, and adds timed faults. The world applies `profile`
/// right after drawing the profile (before anything is built from it) and `schedule`
/// right after drawing the schedule; it keeps the schedule in time order.
pub trait WorldSetup {
    fn profile(&self, profile: &mut Profile);
    fn schedule(&self, topo: &Topology, profile: &Profile, schedule: &mut Schedule);
}

/// A run that schedules more events than this at once is an event storm: fail loudly.
const QUEUE_CAPACITY: usize = 2_000_000;
/// The liveness phase checks for quiet and deadlines this often.
const LIVENESS_TICK_MS: u64 = 1_000;

#[derive(Debug)]
enum Event {
    /// A message from a client reaches the server.
    AtBroker {
        from: NodeId,
        epoch: u64,
        sent: u64,
        msg: Up,
    },
    /// A message from the server reaches a client (incarnation `inc` of it).
    AtClient {
        to: NodeId,
        epoch: u64,
        inc: u64,
        sent: u64,
        msg: Down,
    },
    Timer {
        node: NodeId,
        inc: u64,
        timer: ActorTimer,
    },
    ConsumerWake {
        cons: Cons,
    },
    /// Entry `index` of the fault schedule is due.
    Fault {
        index: usize,
    },
    /// A node's own outage is over; it reconnects if its process and the server are up.
    LinkUp {
        node: NodeId,
    },
    /// The client notices that connection `epoch` is gone.
    ClientNotices {
        node: NodeId,
        epoch: u64,
    },
    RouterRestart {
        router: usize,
    },
    BrokerUp,
    /// A cluster node is back.
    NodeBack {
        node: usize,
    },
    /// The election of a cluster group (a stream, a durable, the KV bucket) ends.
    ElectionDone {
        group: String,
    },
    ChaosEnd,
    LivenessTick,
    End,
}

/// A client's side of its connection, and its process.
#[derive(Clone, Debug)]
struct NodeState {
    /// What the client believes (it notices a drop late).
    connected: bool,
    /// The server noticed this client's connection is gone (no half-open).
    server_knows_down: bool,
    /// The node's own outage lasts until then.
    down_until: u64,
    /// Bumped when a router process restarts.
    incarnation: u64,
    alive: bool,
}

/// A router process slot: the process (when alive) and its clock.
struct RouterProc {
    host: Option<RouterHost>,
    clock_offset: i64,
    crashes: u64,
    /// The connection state the host was last told about.
    told_connected: bool,
    /// Stopping gracefully: how long the process stays down once its host exits.
    stop_down_ms: Option<u64>,
}

pub struct World {
    options: SimOptions,
    profile: Profile,
    topo: Topology,
    schedule: Schedule,
    now: u64,
    bound_ms: u64,
    hard_end_ms: u64,
    queue: EventQueue<Event>,
    js: JetStream,
    /// Who leads each stream, durable and the KV bucket, and which nodes are up.
    cluster: Cluster,
    /// The cluster node each client's connection is on.
    client_node: Vec<usize>,
    /// Pull requests a consumer's old leader held, for its new leader's 409.
    lost_pulls: BTreeMap<Cons, Vec<u64>>,
    /// Draws of the cluster's faults (ambiguous publishes, reconnects, elections).
    cluster_rng: SimRng,
    /// The shared answer bucket (used when `profile.shared_answers`).
    kv: KvBucket,
    net: Net,
    nodes: Vec<NodeState>,
    routers: Vec<RouterProc>,
    workload: Workload,
    gateway_ids: Vec<crate::actors::Ids>,
    cafs: Vec<Caf>,
    exts: Vec<Extension>,
    usage: UsageConsumer,
    ops: Ops,
    buggify: Buggify,
    /// Coverage probes the routers reached, with their counts (not part of the trace).
    probes: BTreeMap<&'static str, u64>,
    checker: Checker,
    trace: Trace,
    /// Per-message fault draws.
    faults_rng: SimRng,
    /// Which router answers an inbound request (a queue group).
    route_rng: SimRng,
    broker_up: bool,
    chaos_over: bool,
    wake_at: BTreeMap<Cons, u64>,
    /// pull id -> (node, incarnation) that made it.
    pull_owner: BTreeMap<u64, (NodeId, u64)>,
    /// Messages each consumer is done with (for `delivered_after_final`).
    finals: BTreeMap<Cons, BTreeSet<u64>>,
    counters: Counters,
    core_config: RouterConfig,
    /// A router nak'ed for backpressure after the heal (`known::BACKPRESSURE_LATCH`).
    backpressure_after_heal: bool,
    /// Core counters of crashed incarnations.
    crashed_stats: serde_json::Map<String, serde_json::Value>,
    /// What the gateways saw (for scenario expectations).
    obs: Observations,
    ended: bool,
}

impl World {
    pub fn new(options: SimOptions) -> World {
        World::build(options, None)
    }

    /// A world whose drawn profile and schedule `setup` changes (a scenario).
    pub fn with_setup(options: SimOptions, setup: &dyn WorldSetup) -> World {
        World::build(options, Some(setup))
    }

    fn build(options: SimOptions, setup: Option<&dyn WorldSetup>) -> World {
        let seed = options.seed;
        let mut profile = Profile::draw(
            &mut SimRng::stream(seed, "profile"),
            options.faults,
            options.tail_loss,
        );
        if let Some(setup) = setup {
            setup.profile(&mut profile);
        }
        for &kind in &options.reductions.rates_off {
            profile.faults.disable(kind);
        }
        let topo = Topology::new(profile.routers, profile.gateways, profile.caf_workers);
        let mut schedule = Schedule::draw(&mut SimRng::stream(seed, "schedule"), &profile, &topo);
        if let Some(setup) = setup {
            setup.schedule(&topo, &profile, &mut schedule);
            // Stable: drawn entries stay before added ones at equal times.
            schedule.entries.sort_by_key(|e| e.at);
        }
        if let Some(chaos) = options.reductions.chaos_ms {
            profile.chaos_ms = profile.chaos_ms.min(chaos.max(1));
        }
        schedule.reduce(&options.reductions.dropped_faults, profile.chaos_ms);
        let core_config = core_config(&profile);
        let bound_ms = profile.liveness_bound_ms();
        let hard_end_ms = profile.hard_end_ms();
        let js = build_jetstream(&profile);
        let mut groups = js.group_names();
        groups.push(KV_GROUP);
        let cluster = Cluster::new(
            profile.cluster_nodes,
            &groups,
            &mut SimRng::stream(seed, "cluster"),
        );

        let workload = Workload::plan(
            &mut SimRng::stream(seed, "gateway"),
            SimRng::stream(seed, "burst"),
            options.requests,
            profile.workload_ms,
            topo.gateways(),
            GatewayConfig {
                reply_timeout_ms: profile.reply_timeout_ms,
                max_attempts: profile.max_attempts,
                publish_timeout_ms: profile.publish_timeout_ms,
                status_poll_ms: profile.status_poll_ms,
                mix: profile.mix,
            },
        );
        let mut skew = SimRng::stream(seed, "skew");
        let routers = (0..topo.routers())
            .map(|_| {
                let max = profile.faults.clock_skew_ms;
                let offset = if max > 0 {
                    skew.between(0, 2 * max) as i64 - max as i64
                } else {
                    0
                };
                RouterProc {
                    host: None,
                    clock_offset: offset,
                    crashes: 0,
                    told_connected: false,
                    stop_down_ms: None,
                }
            })
            .collect();
        let cafs = (0..topo.cafs())
            .map(|i| {
                Caf::new(
                    topo.caf(i),
                    SimRng::stream(seed, &format!("caf-{i}")),
                    profile.pull_batch,
                    profile.pull_expires_ms,
                    profile.caf_latency_max_ms,
                    profile.publish_timeout_ms,
                    profile.caf_msg_id,
                )
            })
            .collect();
        let registry = profile.extension_registry();
        let exts = (0..crate::topology::EXTENSIONS.len())
            .map(|i| {
                let timeout = registry
                    .get(crate::topology::EXTENSIONS[i])
                    .map_or(100, |d| d.timeout_ms);
                Extension::new(
                    i,
                    profile.faults.extensions[i],
                    timeout,
                    SimRng::stream(seed, &format!("ext-{i}")),
                )
            })
            .collect();
        let nodes = vec![
            NodeState {
                connected: false,
                server_knows_down: false,
                down_until: 0,
                incarnation: 0,
                alive: true,
            };
            topo.len()
        ];
        let mut checker = Checker::new(profile.max_deliver, options.strict, profile.chaos_ms);
        if profile.shared_answers {
            checker.require_shared_answers();
        }
        checker.attach_models(crate::models::Models::new(
            &core_config,
            &crate::policies::world_policies(profile.shared_answers),
        ));
        checker.output_window_ms = profile.output_duplicate_window_ms();
        checker.set_settle(profile.settle_ms());
        World {
            checker,
            trace: Trace::new(options.keep_trace),
            counters: Counters {
                planned: options.requests,
                ..Counters::default()
            },
            now: 0,
            bound_ms,
            hard_end_ms,
            queue: EventQueue::new(QUEUE_CAPACITY),
            js,
            client_node: (0..topo.len()).map(|n| n % cluster.size()).collect(),
            cluster,
            lost_pulls: BTreeMap::new(),
            cluster_rng: SimRng::stream(seed, "cluster-faults"),
            kv: KvBucket::new(core_config.idempotency_ttl_ms),
            net: Net::new(topo.len(), SimRng::stream(seed, "net")),
            nodes,
            routers,
            gateway_ids: (0..topo.gateways())
                .map(|g| crate::actors::Ids::new(topo.gateway(g)))
                .collect(),
            workload,
            cafs,
            exts,
            usage: UsageConsumer::new(topo.usage(), profile.pull_batch, profile.pull_expires_ms),
            ops: Ops::new(
                topo.ops(),
                SimRng::stream(seed, "ops"),
                profile.ops_every_ms,
            ),
            buggify: {
                let mut b = Buggify::new(profile.faults.buggify, SimRng::stream(seed, "buggify"));
                b.plant(options.bug.and_then(crate::options::Bug::planted_in_core));
                b
            },
            probes: BTreeMap::new(),
            faults_rng: SimRng::stream(seed, "faults"),
            route_rng: SimRng::stream(seed, "route"),
            broker_up: true,
            chaos_over: false,
            wake_at: BTreeMap::new(),
            pull_owner: BTreeMap::new(),
            finals: BTreeMap::new(),
            core_config,
            crashed_stats: serde_json::Map::new(),
            backpressure_after_heal: false,
            obs: Observations::default(),
            ended: false,
            schedule,
            topo,
            profile,
            options,
        }
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Play the seed to the end and return the verdict.
    pub fn run(mut self) -> RunReport {
        self.start();
        while let Some((at, event)) = self.queue.pop() {
            self.now = at;
            self.counters.events += 1;
            self.handle(event);
            if self.ended || self.checker.violation().is_some() {
                break;
            }
        }
        self.report()
    }

    fn in_chaos(&self) -> bool {
        !self.chaos_over
    }

    fn schedule_at(&mut self, at: u64, event: Event) {
        if !self.queue.push(at.max(self.now), event) {
            self.checker.fail(
                self.now,
                "event_storm",
                format!("more than {QUEUE_CAPACITY} events pending at once"),
            );
        }
    }

    fn timer(&mut self, node: NodeId, at: u64, timer: ActorTimer) {
        let inc = self.nodes[node].incarnation;
        self.schedule_at(at, Event::Timer { node, inc, timer });
    }

    fn proc_of(&self, router: usize) -> Proc {
        Proc {
            router,
            incarnation: self.nodes[self.topo.router(router)].incarnation,
        }
    }

    fn start(&mut self) {
        self.trace
            .record(0, "world.profile", "world", &self.profile);
        self.trace
            .record(0, "world.schedule", "world", &self.schedule);
        self.trace.record(
            0,
            "world.topology",
            "world",
            &self
                .topo
                .nodes()
                .map(|n| self.topo.name(n))
                .collect::<Vec<_>>(),
        );
        for (i, f) in self.schedule.entries.clone().into_iter().enumerate() {
            self.schedule_at(f.at, Event::Fault { index: i });
        }
        self.schedule_at(self.profile.chaos_ms, Event::ChaosEnd);
        self.schedule_at(self.hard_end_ms, Event::End);
        for i in 0..self.workload.len() {
            let r = self.workload.request(i);
            let (node, at) = (self.topo.gateway(r.gateway), r.publish_at);
            self.timer(node, at, ActorTimer::GwStart { request: i });
        }
        for g in 0..self.topo.gateways() {
            let node = self.topo.gateway(g);
            let first = self.profile.status_poll_ms / 2;
            self.timer(node, first, ActorTimer::GwPoll);
        }
        for r in 0..self.topo.routers() {
            self.start_router(r);
        }
        for node in self.topo.nodes() {
            if !matches!(self.topo.role(node), crate::topology::Role::Router(_)) {
                self.connect_client(node);
            }
        }
        for i in 0..self.exts.len() {
            let mut out = crate::actors::Out::default();
            self.exts[i].start(self.now, &mut out);
            self.apply_out(self.topo.ext(i), out);
        }
        let mut out = crate::actors::Out::default();
        self.ops.start(self.now, &mut out);
        self.apply_out(self.topo.ops(), out);
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::AtBroker {
                from,
                epoch,
                sent,
                msg,
            } => self.at_broker(from, epoch, sent, msg),
            Event::AtClient {
                to,
                epoch,
                inc,
                sent,
                msg,
            } => self.at_client(to, epoch, inc, sent, msg),
            Event::Timer { node, inc, timer } => {
                if self.nodes[node].alive && self.nodes[node].incarnation == inc {
                    self.on_timer(node, timer);
                }
            }
            Event::ConsumerWake { cons } => {
                if self.wake_at.get(&cons).is_some_and(|&w| w <= self.now) {
                    self.wake_at.remove(&cons);
                }
                self.dispatch(cons);
            }
            Event::Fault { index } => self.apply_fault(index),
            Event::LinkUp { node } => self.try_reconnect(node),
            Event::ClientNotices { node, epoch } => self.client_notices(node, epoch),
            Event::RouterRestart { router } => self.restart_router(router),
            Event::BrokerUp => self.broker_back(),
            Event::NodeBack { node } => self.node_back(node),
            Event::ElectionDone { group } => self.election_done(group),
            Event::ChaosEnd => self.end_chaos(),
            Event::LivenessTick => self.liveness_tick(),
            Event::End => self.hard_end(),
        }
    }

    /// Is the violation an instance of a known open core issue whose trigger this run
    /// saw? (The checker classifies the ones it can see itself.)
    fn classify_known(&mut self) {
        use crate::invariants::known;
        let Some(v) = self.checker.violation() else {
            return;
        };
        if v.known.is_some() {
            return;
        }
        if self.checker.caused_by_tail_loss(v) {
            self.checker.classify(known::TAIL_LOSS);
            return;
        }
        let late = matches!(
            v.invariant,
            "stuck" | "exhausted_not_dead_lettered" | "unanswered"
        );
        if late && self.backpressure_after_heal {
            self.checker.classify(known::BACKPRESSURE_LATCH);
        }
    }

    fn count_fault(&mut self) {
        self.counters.faults += 1;
    }

    fn report(mut self) -> RunReport {
        let c = self.checker.counters().clone();
        self.counters.accepted = self.checker.accepted() as u64;
        self.counters.answered = self.checker.answered() as u64;
        self.counters.duplicate_replies = c.duplicate_replies;
        self.counters.cross_process_divergence = c.cross_process_divergence;
        self.counters.exhausted = c.exhausted;
        self.counters.dlq = self.checker.dlq_records();
        self.counters.buggify_fired = self.buggify.fired();
        self.counters.usage_events = c.usage_events;
        self.counters.lost_to_tail = c.lost_to_tail;
        self.counters.checks = c.checks;
        self.counters.planned = self.workload.len() as u64;
        self.obs.attempts = self.workload.attempts_total();
        self.classify_known();
        let violation = self.checker.violation().cloned();
        if let Some(v) = &violation {
            self.trace.record(self.now, "world.violation", "world", v);
        }
        let mut core_stats = std::mem::take(&mut self.crashed_stats);
        for r in &self.routers {
            if let Some(h) = &r.host {
                add_stats(&mut core_stats, h.router().stats());
            }
        }
        RunReport {
            seed: self.options.seed,
            verdict: match &violation {
                None => Verdict::Pass,
                Some(v) if v.known.is_some() && !self.options.strict => Verdict::Known,
                Some(_) => Verdict::Fail,
            },
            violation,
            trace_hash: self.trace.hash(),
            trace_len: self.trace.len(),
            core_stats,
            profile_summary: self.profile.summary(),
            schedule_summary: self.schedule.summary(),
            schedule_len: self.schedule.len(),
            sim_time_ms: self.now,
            chaos_ms: self.profile.chaos_ms,
            requests: self.options.requests,
            buggify_sites: self.buggify.sites(),
            probes: self.probes.iter().map(|(&n, &c)| (n, c)).collect(),
            models: self.checker.model_counters().cloned().unwrap_or_default(),
            counters: self.counters,
            observations: std::mem::take(&mut self.obs),
            trace: self.trace.into_lines(),
        }
    }
}

/// The core's settings for a profile: the consumer's, and the world's subjects.
fn core_config(profile: &Profile) -> RouterConfig {
    let mut c = RouterConfig {
        // The world gives the decide and results consumers the same `max_deliver`.
        max_deliver: profile.max_deliver,
        results_max_deliver: profile.max_deliver,
        // With a backoff list the server's ack timeout is backoff[0] after delivery 1.
        ack_wait_ms: profile
            .backoff_ms
            .first()
            .copied()
            .unwrap_or(profile.ack_wait_ms),
        nak_backoff_ms: profile.nak_backoff_ms.clone(),
        dlq_retry_ms: profile.dlq_retry_ms,
        max_in_flight: profile.max_in_flight,
        extensions: profile.extension_registry(),
        admin_token: Some(ADMIN_TOKEN.to_string()),
        shared_idempotency: profile.shared_answers,
        shared_sticky: profile.shared_answers,
        ..RouterConfig::default()
    };
    c.backpressure.queue_overload = profile.queue_overload;
    c.backpressure.inflight_overload = profile.inflight_overload;
    c.backpressure.latency_overload_ms = profile.latency_overload_ms;
    c.backpressure.retry_after_seconds = profile.retry_after_seconds;
    c
}

fn build_jetstream(profile: &Profile) -> JetStream {
    let mut js = JetStream::new();
    let streams: [(&str, Vec<String>); 7] = [
        ("DECIDE", vec![subjects::DECIDE.to_string()]),
        ("DECIDE_DLQ", vec![subjects::DECIDE_DLQ.to_string()]),
        ("RESULTS", vec![subjects::RESULT.to_string()]),
        ("RESULTS_DLQ", vec![subjects::RESULT_DLQ.to_string()]),
        ("ASSIGN", vec![subjects::ASSIGNMENT.to_string()]),
        ("USAGE", vec![subjects::USAGE.to_string()]),
        (
            "ADVISORIES",
            vec![
                format!("{MAX_DELIVERIES_PREFIX}.DECIDE.{}", Cons::Decide.durable()),
                format!(
                    "{MAX_DELIVERIES_PREFIX}.RESULTS.{}",
                    Cons::Results.durable()
                ),
            ],
        ),
    ];
    for (name, subjects) in streams {
        // The streams the routers write dedupe over their longest redelivery span.
        let output = matches!(name, "ASSIGN" | "USAGE" | "DECIDE_DLQ" | "RESULTS_DLQ");
        js.add_stream(StreamConfig {
            name: name.to_string(),
            subjects,
            duplicate_window_ms: if output {
                profile.output_duplicate_window_ms()
            } else {
                DUPLICATE_WINDOW_MS
            },
        });
    }
    for cons in Cons::ALL {
        let routed = matches!(cons, Cons::Decide | Cons::Results);
        js.add_consumer(
            cons.stream(),
            ConsumerConfig {
                ack_wait_ms: if routed { profile.ack_wait_ms } else { 30_000 },
                max_deliver: if routed { profile.max_deliver } else { 100 },
                max_ack_pending: if routed {
                    profile.max_ack_pending
                } else {
                    1_000
                },
                backoff_ms: if routed {
                    profile.backoff_ms.clone()
                } else {
                    Vec::new()
                },
                ..ConsumerConfig::with_defaults(cons.durable())
            },
        );
    }
    js
}

/// Add one process's core counters into a running total (counters of every incarnation,
/// crashed ones included, are reported summed).
fn add_stats(
    total: &mut serde_json::Map<String, serde_json::Value>,
    s: &beamline_router::core::Stats,
) {
    if let Some(v) = serde_json::to_value(s)
        .ok()
        .as_ref()
        .and_then(|v| v.as_object())
    {
        for (k, x) in v {
            let sum = total.get(k).and_then(|a| a.as_u64()).unwrap_or(0) + x.as_u64().unwrap_or(0);
            total.insert(k.clone(), json!(sum));
        }
    }
}

/// Run one seed.
pub fn run(options: SimOptions) -> RunReport {
    World::new(options).run()
}
